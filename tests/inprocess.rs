//! The market in one process (`bazaar run --in-process`) and `bazaar bench`:
//!
//! - A cached market of 2 traders, 2 buyers and 2 sellers runs in-process;
//!   every invariant holds and the run directory is the one a market of
//!   processes leaves (histories, report, nodes.json).
//! - A fault one process cannot inject (kill) is refused before anything
//!   starts, with exit code 2 and the reason.
//! - `bazaar bench` on 2 clients: its JSON has the echo and the mode, the
//!   mode's throughput as a ratio to the echo's, its run passed the checker;
//!   `--compare` against that JSON prints the change.

mod common;

use std::process::Command;

fn bazaar(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

#[test]
fn a_cached_market_runs_in_one_process_and_holds_every_invariant() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("market.toml");
    std::fs::write(&cfg, "[market]\nmode = \"cached\"\nduration = \"3s\"\n").unwrap();
    let runs = tmp.path().join("runs");
    let out = bazaar(&[
        "run",
        "--in-process",
        "--config",
        cfg.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let run = common::the_run(&runs);
    for f in [
        "config.toml",
        "nodes.json",
        "report.json",
        "history",
        "data/warehouse",
    ] {
        assert!(run.join(f).exists(), "no {f} in {}", run.display());
    }
    let report = common::read_report(&run);
    for v in &report.checks {
        assert!(v.ok, "{}: {}", v.invariant, v.detail);
    }
    assert!(report.degraded.is_empty(), "{:?}", report.degraded);
    let answered = report.requests.buy.ok + report.requests.sell.ok;
    assert!(answered > 0, "no request answered in 3 s");
    // Every node of the market is this one process.
    let nodes = bazaar::market::read_nodes(&run).unwrap();
    assert_eq!(nodes.len(), 7);
    let pids: std::collections::BTreeSet<u32> = nodes.values().map(|n| n.pid).collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
}

#[test]
fn a_kill_in_process_is_refused_before_the_market_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("market.toml");
    std::fs::write(
        &cfg,
        "[market]\nduration = \"2s\"\n\n[[faults]]\nat = \"1s\"\nkill = \"trader\"\n",
    )
    .unwrap();
    let runs = tmp.path().join("runs");
    let out = bazaar(&[
        "run",
        "--in-process",
        "--config",
        cfg.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be injected in-process"), "{stderr}");
    assert!(!runs.exists(), "a refused run made {}", runs.display());
}

#[test]
fn bench_reports_each_mode_as_a_ratio_to_the_echo_and_compares() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let args = [
        "bench",
        "--mode",
        "strong",
        "--clients",
        "2",
        "--duration",
        "3s",
        "--no-half-load",
        "--in-process",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = bazaar(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("echo (one hop)"), "{stdout}");
    let r: bazaar::bench::Results =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r.echo.requests_per_s > 0.0, "{r:?}");
    assert_eq!(r.modes.len(), 1);
    let m = &r.modes[0];
    assert!(m.checks_ok, "{m:?}");
    assert!(m.saturated.requests > 0, "{m:?}");
    let ratio = m.saturated.requests_per_s / r.echo.requests_per_s;
    assert!((m.ratio - ratio).abs() < 1e-9, "{m:?}");
    assert!(m.saturated.p50_ms <= m.saturated.p99_ms);

    let mut again: Vec<&str> = args[..args.len() - 2].to_vec();
    again.extend(["--compare", json.to_str().unwrap()]);
    let out = bazaar(&again);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("against:"), "{stdout}");

    // A file that is not a bench's JSON is bad input, found before any run.
    let out = bazaar(&["bench", "--compare", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
