//! What a cached trader's journal costs a step of its driver.
//!
//! - `journal/append_step_of_3`: appending one step's record (three
//!   accepted requests, the bench market's average step, and the three a
//!   flush confirmed before them), with no sync: what the driver itself
//!   spends, on its runtime's thread, before it takes the next requests.
//! - `journal/commit_step_of_3`: the same record and its `fdatasync`, what
//!   the sync thread waits for (the disk's time, not the driver's).
//!
//! The forgotten keys keep the live entries few, and the log is compacted
//! when due, as the driver does: the append's time includes its share of
//! the compactions. Run: `cargo bench --bench journal`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use bazaar::clock::Lamport;
use bazaar::trader::journal::Journal;
use bazaar::wire::{Epoch, FlushEntry, NodeId, Order, ProductId, Qty, RequestId, Side};

/// The three entries of step `n`, keyed `3n..3n+3`.
fn step(n: u64) -> Vec<(u64, FlushEntry)> {
    (3 * n..3 * n + 3)
        .map(|key| {
            let entry = FlushEntry {
                order: Order {
                    id: RequestId {
                        node: NodeId(7),
                        seq: key,
                    },
                    product: ProductId(0),
                    qty: Qty(3),
                },
                side: Side::Buy,
                clock: Lamport(key),
                granted: Qty(3),
                epoch: Epoch(1),
            };
            (key, entry)
        })
        .collect()
}

/// As the driver does after each step.
fn compact_if_due(journal: &Journal) {
    if journal.wants_compaction() {
        journal.compact().expect("compact");
    }
}

fn journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (journal, _) = Journal::open(dir.path()).expect("journal");
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(3));
    let mut n = 1;
    for synced in [false, true] {
        let name = if synced {
            "commit_step_of_3"
        } else {
            "append_step_of_3"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let forget: Vec<u64> = (3 * (n - 1)..3 * n).collect();
                let ticket = journal
                    .append(black_box(&step(n)), &forget)
                    .expect("append");
                if synced {
                    journal.sync(ticket).expect("sync");
                }
                compact_if_due(&journal);
                n += 1;
            })
        });
    }
    g.finish();
}

criterion_group!(benches, journal);
criterion_main!(benches);
