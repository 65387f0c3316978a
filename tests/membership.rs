//! Membership under the faults that split the first wave's markets, with
//! real processes on loopback: peers started by hand in a random order
//! seconds apart, a trader paused (SIGSTOP) past the heartbeat timeout and
//! resumed, the warehouse killed and restarted, a market of 100 peers. Each
//! run is judged by the checker, whose agreement, fencing and final
//! agreement invariants would fail a split.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bazaar::config::FaultKind;
use bazaar::history::History;
use bazaar::membership::Happening;
use bazaar::warehouse::store::Store;
use bazaar::wire::{Epoch, NodeId};
use common::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// How long a hand-started node may take to stop once asked.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// Addresses the OS picked for `n` nodes on 127.0.0.1 (bound, then freed
/// for the nodes to take).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Waits for `child` to exit by itself, at most `within`.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ctrl-C for a hand-started node: it stops in order.
fn interrupt(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
}

/// `bazaar check RUN_DIR`'s exit code and output.
fn check_dir(run: &Path) -> (i32, String) {
    let out = Command::new(bin()).arg("check").arg(run).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn peers_started_by_hand_in_a_random_order_seconds_apart_converge_and_trade() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(5);
    let peers: Vec<String> = addrs[1..].iter().map(|a| format!("\"{a}\"")).collect();
    let config = write_config(
        dir.path(),
        &format!(
            "[market]\npeers = 4\ntraders = 2\nduration = \"3s\"\n[roles]\nbuyers = 1\nsellers = 1\n\
             [network]\nwarehouse = \"{}\"\npeers = [{}]\n",
            addrs[0],
            peers.join(", ")
        ),
    );
    let run = dir.path().join("run");
    // Seeded: the warehouse is as likely to come late as any peer.
    let mut order: Vec<u32> = (0..=4).collect();
    order.shuffle(&mut StdRng::seed_from_u64(9));
    let mut nodes: Vec<(u32, Child)> = Vec::new();
    for (i, id) in order.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        let log = std::fs::File::create(dir.path().join(format!("{id}.log"))).unwrap();
        let child = Command::new(bin())
            .args(["node", "--id", &id.to_string(), "--config"])
            .arg(&config)
            .arg("--run-dir")
            .arg(&run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        nodes.push((*id, child));
    }
    // The buyer (1) and the seller (2) stop on their own after trading.
    for (id, child) in nodes.iter_mut().filter(|(id, _)| *id == 1 || *id == 2) {
        let status = wait_exit(child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("peer {id} (order {order:?}) did not finish trading"));
        assert!(status.success(), "peer {id} exited with {status}");
    }
    // Then the traders, then the warehouse, as Ctrl-C would.
    for last in [false, true] {
        for (_, child) in nodes.iter_mut().filter(|(id, _)| (*id == 0) == last) {
            interrupt(child);
            assert!(wait_exit(child, STOP_WITHIN).is_some());
        }
    }
    let (code, text) = check_dir(&run);
    assert_eq!(code, 0, "start order {order:?}\n{text}");
    let store = Store::snapshot(&run.join("data").join("warehouse")).unwrap();
    assert_eq!(
        store.views.len(),
        1,
        "one election, no split: {:?}",
        store.views
    );
    assert_eq!(store.views[0].epoch, Epoch(1));
    assert_eq!(store.views[0].traders, vec![NodeId(3), NodeId(4)]);
    let history = History::read_dir(&run.join("history")).unwrap();
    assert!(
        history
            .requests
            .iter()
            .filter(|r| r.outcome == bazaar::history::Outcome::Ok)
            .count()
            > 10,
        "the market traded: {} requests",
        history.requests.len()
    );
}

/// The report of a launched market on `toml`, with every check held, its
/// history, its run directory and `bazaar run`'s exit code.
fn launched(toml: &str) -> (bazaar::report::Report, History, std::path::PathBuf, i32) {
    let dir = tempfile::tempdir().unwrap().keep();
    let (runs, out) = run_market(&dir, toml);
    let run = the_run(&runs);
    let report = read_report(&run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for c in &report.checks {
        assert!(
            c.ok,
            "{c:?}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let history = History::read_dir(&run.join("history")).unwrap();
    (report, history, run, out.status.code().unwrap_or(-1))
}

#[test]
fn a_trader_paused_past_the_heartbeat_timeout_is_deposed_and_answers_nothing_after() {
    // Trader 6 stops for 2 s (timeout 600 ms): trader 5 takes over alone.
    let (report, history, _, _) = launched(
        "[market]\nduration = \"5s\"\nseed = 3\n[[faults]]\nat = \"1s\"\npause = 6\nlasting = \"2s\"\n",
    );
    let f = &report.failover;
    let views: Vec<_> = f.views.iter().map(|v| v.view.clone()).collect();
    assert_eq!(views.len(), 2, "{views:?}");
    assert_eq!(views[1].traders, vec![NodeId(5)], "{views:?}");
    assert_eq!(f.final_traders, vec![NodeId(5)]);
    let pause = &f.faults[0];
    assert_eq!(pause.fault, FaultKind::Pause);
    let detected = pause.detected.as_ref().expect("the pause was detected");
    assert!(detected.after_ms < 1500.0, "{detected:?}");
    // Once resumed, 6 learns it is deposed; it answers no request after.
    let resumed = history
        .faults()
        .find(|(_, r)| {
            matches!(
                r.what,
                Happening::Fault {
                    fault: FaultKind::Resume,
                    ..
                }
            )
        })
        .map(|(_, r)| r.wall_us)
        .expect("resumed");
    let deposed = history
        .failover
        .iter()
        .find(|r| r.by == Some(NodeId(6)) && matches!(r.what, Happening::Deposed { .. }))
        .map(|r| r.wall_us)
        .expect("6 recorded that it was deposed");
    assert!(deposed >= resumed);
    eprintln!(
        "pause→detection {:.0} ms, resume→deposed {:.0} ms",
        detected.after_ms,
        (deposed - resumed) as f64 / 1000.0
    );
    let late = history
        .requests
        .iter()
        .filter(|r| r.trader == NodeId(6) && r.invoked_us > resumed)
        .filter(|r| r.outcome == bazaar::history::Outcome::Ok)
        .count();
    assert_eq!(late, 0, "6 answered requests after it resumed");
}

#[test]
fn a_warehouse_killed_and_restarted_is_reported_and_the_run_degrades_never_hangs() {
    let (report, _, run, code) = launched(
        "[market]\nduration = \"6s\"\n[[faults]]\nat = \"1s\"\nkill = \"warehouse\"\nrestart_after = \"2s\"\n",
    );
    let outages = &report.failover.warehouse_outages;
    assert!(
        !outages.is_empty(),
        "the outage is reported: {:?}",
        report.failover
    );
    let o = &outages[0];
    assert!(o.until_us.is_some(), "and its end: {o:?}");
    assert!(
        !report.degraded.is_empty(),
        "a run whose warehouse went away is degraded"
    );
    // The market traded again after the restart, on the same epoch.
    assert_eq!(
        report.failover.views.len(),
        1,
        "{:?}",
        report.failover.views
    );
    let history = History::read_dir(&run.join("history")).unwrap();
    let after = history
        .requests
        .iter()
        .filter(|r| r.invoked_us > o.until_us.unwrap())
        .filter(|r| r.outcome == bazaar::history::Outcome::Ok)
        .count();
    assert!(after > 0, "nothing answered after the warehouse came back");
    // The exit code says degraded (3), not ok, not failed; every invariant
    // holds.
    assert_eq!(code, 3, "{:?}", report.degraded);
    let (code, text) = check_dir(&run);
    assert_eq!(code, 3, "{text}");
    assert!(!text.contains("FAILED"), "{text}");
}
