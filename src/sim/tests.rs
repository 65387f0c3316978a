//! The simulator's own tests: many seeds hold every invariant, a seed
//! replays byte for byte, and a broken warehouse is caught.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::nemesis::{Fault, Kind, Schedule, What, parse_kinds};
use super::*;
use crate::check;
use crate::config::{Config, Mode};
use crate::history::{self, History};
use crate::membership::Happening;
use crate::rundir::RunDir;
use crate::wire::NodeId;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("SIMLOG").unwrap_or("off".into()))
        .with_test_writer()
        .try_init();
}

fn opts(mode: Mode, nemesis: &str) -> Options {
    Options {
        mode,
        nemesis: parse_kinds(nemesis).unwrap(),
        peers: None,
        traders: None,
        broken: Broken::No,
    }
}

fn scratch() -> PathBuf {
    tempfile::tempdir().unwrap().keep()
}

/// Runs `seeds` seeds from `from` on two threads; panics naming every
/// failed seed, its schedule and its verdicts.
fn sweep_ok(opts: Options, from: u64, seeds: u64) -> Tally {
    init_logs();
    let s = Sweep {
        opts,
        from,
        seeds,
        jobs: 2,
        keep_going: true,
        scratch: scratch(),
    };
    let t = sweep(&s, |_| {}).unwrap();
    let mut why = String::new();
    for (o, dir) in &t.failures {
        why += &format!(
            "seed {} ({}):\n{}{:?}\n{:#?}\n",
            o.seed,
            dir.display(),
            o.schedule,
            o.error,
            o.verdicts.iter().filter(|v| !v.ok).collect::<Vec<_>>()
        );
    }
    assert!(t.ok(), "{t}\n{why}{:?}", t.shape_errors);
    std::fs::remove_dir_all(&s.scratch).ok();
    eprintln!("{t}");
    t
}

#[test]
fn a_hundred_strong_seeds_hold_every_invariant_under_the_full_nemesis() {
    let t = sweep_ok(opts(Mode::Strong, "all"), 0, 100);
    assert!(t.faults.values().sum::<u64>() > 100, "{t}");
    assert!(t.requests > 2_000, "{t}");
}

#[test]
fn a_hundred_cached_seeds_hold_every_invariant_under_the_full_nemesis() {
    let t = sweep_ok(opts(Mode::Cached, "all"), 0, 100);
    assert!(t.faults.values().sum::<u64>() > 100, "{t}");
}

/// Every file under `dir` (relative name, bytes), sorted by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_same_seed_writes_the_same_histories_byte_for_byte_on_any_thread() {
    init_logs();
    let o = opts(Mode::Cached, "all");
    let run = |seed: u64| {
        let o = o.clone();
        std::thread::spawn(move || {
            let dir = scratch();
            let out = run_seed(seed, &o, &dir).unwrap();
            assert!(
                !out.failed(),
                "seed {seed}: {:?} {:#?}",
                out.error,
                out.verdicts
            );
            let h = files(&dir.join("history"));
            std::fs::remove_dir_all(&dir).ok();
            h
        })
    };
    // Two threads at once, and a third after: one history.
    let (a, b) = (run(11), run(11));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let c = run(11).join().unwrap();
    assert!(a.len() > 3, "{} history files", a.len());
    assert!(a == b && b == c, "seed 11 wrote different histories");
    let other = run(12).join().unwrap();
    assert!(a != other, "seed 12 wrote seed 11's histories");
}

/// The first seed (of 200) of `o` whose run breaks one of `invariants`.
fn first_caught(o: &Options, invariants: &[&str]) -> Option<u64> {
    init_logs();
    let scratch = scratch();
    let found = (0..200).find(|&seed| {
        let dir = scratch.join(seed.to_string());
        let out = run_seed(seed, o, &dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        out.violations()
            .iter()
            .any(|v| invariants.contains(&v.as_str()))
    });
    std::fs::remove_dir_all(&scratch).ok();
    found
}

#[test]
fn a_warehouse_that_forgets_what_it_applied_is_caught_as_a_double_apply() {
    let mut o = opts(Mode::Strong, "all");
    o.broken = Broken::Dedupe;
    let seed = first_caught(&o, &[check::NO_DOUBLE_APPLY]);
    assert!(seed.is_some(), "200 seeds and no double apply named");
    eprintln!("dedupe off: caught at seed {seed:?}");
}

#[test]
fn a_warehouse_that_fences_nothing_is_caught_as_a_split() {
    // Traders cut off from one another: each side removes the other, and
    // without compare-and-set both removals are committed; without fencing
    // the deposed side is served on.
    let mut o = opts(Mode::Strong, "partition");
    o.broken = Broken::Fencing;
    o.peers = Some(7);
    o.traders = Some(3);
    let split = [check::FENCING, check::AGREEMENT, check::FINAL_AGREEMENT];
    let seed = first_caught(&o, &split);
    assert!(seed.is_some(), "200 seeds and no split named");
    eprintln!("fencing off: caught at seed {seed:?}");
    // The same seeds with the warehouse whole hold.
    o.broken = Broken::No;
    let dir = scratch();
    let out = run_seed(seed.unwrap(), &o, &dir).unwrap();
    assert!(!out.failed(), "{}", out.explain(&o, &dir));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_seed_without_a_nemesis_runs_no_fault() {
    let o = opts(Mode::Strong, "none");
    let dir = scratch();
    let out = run_seed(5, &o, &dir).unwrap();
    assert!(!out.failed(), "{:?} {:#?}", out.error, out.verdicts);
    assert_eq!(out.schedule, nemesis::Schedule::default());
    assert!(out.ran.records.is_empty());
    assert!(Kind::ALL.iter().all(|k| out.schedule.count(*k) == 0));
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `cfg` under the scripted `faults` with turmoil seeded by `seed`;
/// returns the verdicts and the history.
fn scripted(cfg: &Config, seed: u64, faults: Vec<Fault>) -> (Vec<check::Verdict>, History) {
    init_logs();
    let dir = RunDir { root: scratch() };
    let schedule = Schedule {
        late: Vec::new(),
        faults,
    };
    world::run(seed, cfg, &schedule, &dir).unwrap();
    let judged = super::run::judge(cfg, &dir).unwrap();
    std::fs::remove_dir_all(&dir.root).ok();
    judged
}

fn cut(alone: u32, from: &[u32], at_s: u64, lasting_s: u64) -> Fault {
    Fault {
        at: Duration::from_secs(at_s),
        lasting: Duration::from_secs(lasting_s),
        what: What::Partition {
            alone: NodeId(alone),
            from: from.iter().copied().map(NodeId).collect(),
        },
    }
}

#[test]
fn a_strong_market_in_simulated_time_holds_every_invariant() {
    let cfg = Config::from_toml("[market]\nduration = \"20s\"\n").unwrap();
    let (verdicts, history) = scripted(&cfg, 1, Vec::new());
    assert!(check::all_ok(&verdicts), "{verdicts:#?}");
    // 20 simulated seconds of the default workload: 2 sellers x 10 sells/s,
    // less the ticks a slow answer (up to 4 simulated hops) pushed back.
    let sells = history
        .requests
        .iter()
        .filter(|r| r.side == crate::wire::Side::Sell)
        .count();
    assert!(sells >= 300, "only {sells} sells in 20 simulated seconds");
}

#[test]
fn a_trader_cut_off_from_the_warehouse_fails_over_and_loses_no_ack() {
    // Trader 6 loses the warehouse from 2 s to 6 s: its open connection goes
    // silent (nothing arrives, nothing closes) and new ones are refused. It
    // still heartbeats trader 5, so nobody declares it dead: its clients hear
    // "warehouse unavailable" and retry at trader 5 with the same request id.
    let cfg = Config::from_toml("[market]\nduration = \"10s\"\n").unwrap();
    let (verdicts, history) = scripted(&cfg, 2, vec![cut(6, &[0], 2, 4)]);
    assert!(check::all_ok(&verdicts), "{verdicts:#?}");
    // The last request each client moved away from trader 6.
    let mut last_retried: BTreeMap<NodeId, u64> = BTreeMap::new();
    for (id, r) in history.retries() {
        if matches!(&r.what, Happening::Retried { from, .. } if *from == NodeId(6)) {
            let last = last_retried.entry(id.node).or_default();
            *last = (*last).max(id.seq);
        }
    }
    assert!(
        !last_retried.is_empty(),
        "the partition made no client fail over"
    );
    // After the repair trader 6 reconnects to the warehouse and trades again.
    let recovered = history.requests.iter().any(|r| {
        r.trader == NodeId(6)
            && r.outcome == history::Outcome::Ok
            && last_retried.get(&r.id.node).is_some_and(|&s| r.id.seq > s)
    });
    assert!(recovered, "trader 6 never traded again after the repair");
}

/// Both traders lose the warehouse from 2 s to 5 s; the market trades for 8 s.
/// Returns the verdicts and how many requests were answered ok.
fn traders_cut_off_from_the_warehouse(mode: &str) -> (Vec<check::Verdict>, usize) {
    let cfg =
        Config::from_toml(&format!("[market]\nduration = \"8s\"\nmode = \"{mode}\"\n")).unwrap();
    let (verdicts, history) = scripted(&cfg, 5, vec![cut(5, &[0], 2, 3), cut(6, &[0], 2, 3)]);
    let ok = history
        .requests
        .iter()
        .filter(|r| r.outcome == history::Outcome::Ok)
        .count();
    (verdicts, ok)
}

#[test]
fn cached_traders_serve_through_a_warehouse_partition_and_settle_every_ack_after_it() {
    // The document's trade-off, under a fault: cached traders answer from
    // their caches while the warehouse is unreachable and flush what they
    // accepted once it is back (nothing acknowledged is lost, every oversell
    // is counted); strong traders can only fail requests, within their
    // deadlines, until it is back.
    let (verdicts, cached_ok) = traders_cut_off_from_the_warehouse("cached");
    assert!(check::all_ok(&verdicts), "{verdicts:#?}");
    let (verdicts, strong_ok) = traders_cut_off_from_the_warehouse("strong");
    assert!(check::all_ok(&verdicts), "{verdicts:#?}");
    // A cached trader answers from its copy until the copy expires (ttl 1 s)
    // and only then needs the warehouse; a strong one needs it every time, so
    // its clients sit out their deadlines.
    assert!(
        cached_ok > strong_ok + strong_ok / 5,
        "cached: {cached_ok} answered, strong: {strong_ok} answered"
    );
}

/// Runs one seed of the full nemesis and asserts every invariant held.
fn seed_holds(seed: u64, mode: Mode) -> Outcome {
    init_logs();
    let dir = scratch();
    let out = run_seed(seed, &opts(mode, "all"), &dir).unwrap();
    assert!(!out.failed(), "{}", out.explain(&opts(mode, "all"), &dir));
    std::fs::remove_dir_all(&dir).ok();
    out
}

#[test]
fn seed_1184_cached_a_retry_after_a_trader_died_is_answered_as_the_warehouse_applied_it() {
    // A buy was journaled (granted 1) by a trader that was then declared
    // dead; the client retried at the other trader, which granted 3 from its
    // own cache: the client held 3, the warehouse applied the first trader's
    // 1. A retry is now settled at the warehouse (`Body::Retry`).
    seed_holds(1184, Mode::Cached);
}

#[test]
fn seed_283_cached_a_deposed_trader_acknowledges_nothing_more() {
    // A trader lost packets, was deposed (epoch 2 left it out) and went on
    // acknowledging requests as of epoch 2, an epoch it was not in. The
    // warehouse refused each of its flushes for those entries, and two
    // requests it had acknowledged in epoch 1, in the same flush, never
    // reached the books (the checker: "acknowledged but stranded unflushed
    // in peer6's journal"). A cache the view leaves out now accepts nothing.
    let out = seed_holds(283, Mode::Cached);
    assert!(
        out.schedule
            .faults
            .iter()
            .any(|f| matches!(f.what, What::Loss { .. })),
        "seed 283 no longer drops a trader's packets:\n{}",
        out.schedule
    );
}

#[test]
fn seed_111_cached_a_restarted_trader_acknowledges_in_its_epoch_not_in_none() {
    // The only trader, killed and restarted, took requests before its
    // driver had seen the view it rejoined with: it journaled them as of
    // epoch 0, which the warehouse refused at every flush for ever, so 24
    // acknowledged requests never reached the books. The driver now takes
    // the epoch as each request arrives, and a cache of no epoch turns
    // requests away.
    let out = seed_holds(111, Mode::Cached);
    let restarted = out
        .schedule
        .faults
        .iter()
        .any(|f| matches!(f.what, What::Restart(_)));
    assert!(
        restarted,
        "seed 111 no longer restarts a trader:\n{}",
        out.schedule
    );
}

#[test]
fn cached_traders_killed_for_good_hand_their_journals_over_at_the_end() {
    // Without the recovery at the end, a cached trader killed for good
    // strands what it acknowledged from its journal (found in 2000 seeds).
    let o = opts(Mode::Cached, "kill");
    let seed = (0..100)
        .find(|&s| {
            let cfg = shape::draw(s, o.fixed()).unwrap();
            nemesis::draw(s, &cfg, &o.nemesis)
                .faults
                .iter()
                .any(|f| matches!(f.what, What::Kill(_)))
        })
        .expect("a seed that kills a trader for good");
    let dir = scratch();
    let out = run_seed(seed, &o, &dir).unwrap();
    assert!(!out.failed(), "{}", out.explain(&o, &dir));
    std::fs::remove_dir_all(&dir).ok();
    let recovered = out.ran.records.iter().any(|r| {
        matches!(
            r.what,
            Happening::Fault {
                fault: crate::config::FaultKind::Restart,
                ..
            }
        )
    });
    assert!(recovered, "seed {seed}: no recovery restart recorded");
}
