//! A large market: 100 peers, 8 traders, unpaced, every node its own
//! process on this machine. It runs alone in its test binary (100 processes
//! on 2 cores leave no room for another market beside it).

mod common;

use bazaar::check;
use bazaar::history::History;
use bazaar::wire::{Epoch, NodeId};
use common::*;

#[test]
fn a_hundred_peers_unpaced_elect_the_eight_highest_and_agree_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, out) = run_market(
        dir.path(),
        "[market]\npeers = 100\ntraders = 8\nduration = \"3s\"\n[roles]\nbuyers = 46\nsellers = 46\n\
         [workload.buyer]\npause = \"0ms\"\n[workload.seller]\ninterval = \"1ms\"\n",
    );
    let run = the_run(&runs);
    let report = read_report(&run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Agreement, fencing and final agreement among them.
    assert!(check::all_ok(&report.checks), "{stdout}");
    let views = &report.failover.views;
    assert_eq!(views[0].view.epoch, Epoch(1));
    assert_eq!(
        views[0].view.traders,
        (93..=100).map(NodeId).collect::<Vec<_>>(),
        "{views:?}"
    );
    // On a loaded 2-core machine a trader may miss its heartbeats and be
    // removed: still one set at a time, and every peer ends on the last.
    let last = &views.last().unwrap().view;
    assert_eq!(report.failover.final_traders, last.traders);
    let history = History::read_dir(&run.join("history")).unwrap();
    let peers = history
        .finals
        .iter()
        .filter(|f| !f.node.is_warehouse())
        .count();
    assert_eq!(peers, 100);
    eprintln!(
        "100 peers: {} epochs, {} requests, {}",
        views.len(),
        history.requests.len(),
        report
            .summary()
            .lines()
            .find(|l| l.contains("throughput"))
            .unwrap_or("")
    );
}
