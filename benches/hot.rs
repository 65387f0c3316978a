//! The hot pure parts of a request's path, each alone (no sockets, no disk):
//!
//! - `frame`: encoding an envelope as a frame and decoding it back (every
//!   message, both ways, on every hop).
//! - `ledger_apply`: the warehouse applying a buy, and a flushed entry (every
//!   strong request; every cached request once flushed).
//! - `cache_admission`: a cached trader admitting buys from its copy of the
//!   stock, with its flush every `flush_every` requests answered (every
//!   cached request).
//!
//! The history's append is measured by `benches/history.rs`. Run:
//! `cargo bench --bench hot`; `bazaar bench` measures the whole market.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use bazaar::clock::Lamport;
use bazaar::config::Config;
use bazaar::trader::cached::{Action, Cache, Settings};
use bazaar::warehouse::ledger::Ledger;
use bazaar::wire::frame::{decode, encode};
use bazaar::wire::{
    Body, Envelope, Epoch, FlushEntry, NodeId, Order, ProductId, Qty, RequestId, Side, View,
};

fn order(seq: u64, qty: u32) -> Order {
    Order {
        id: RequestId {
            node: NodeId(7),
            seq,
        },
        product: ProductId(0),
        qty: Qty(qty),
    }
}

fn frame(c: &mut Criterion) {
    let env = Envelope {
        from: NodeId(7),
        clock: Lamport(123_456),
        body: Body::Buy(order(99_999, 3)),
    };
    let bytes = encode(&env).expect("encodes");
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_buy", |b| b.iter(|| encode(black_box(&env))));
    g.bench_function("decode_buy", |b| b.iter(|| decode(black_box(&bytes[4..]))));
    let flush = Envelope {
        from: NodeId(5),
        clock: Lamport(77),
        body: Body::Flush {
            id: RequestId {
                node: NodeId(5),
                seq: 1,
            },
            entries: (0..5)
                .map(|i| FlushEntry {
                    order: order(i, 2),
                    side: Side::Buy,
                    clock: Lamport(i),
                    granted: Qty(2),
                    epoch: Epoch(1),
                })
                .collect(),
        },
    };
    let bytes = encode(&flush).expect("encodes");
    g.bench_function("encode_flush_of_5", |b| {
        b.iter(|| encode(black_box(&flush)))
    });
    g.bench_function("decode_flush_of_5", |b| {
        b.iter(|| decode(black_box(&bytes[4..])))
    });
    g.finish();
}

fn ledger_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_apply");
    g.throughput(Throughput::Elements(1));
    let mut ledger = Ledger::new(&[bazaar::config::MAX_STOCK]);
    let mut seq = 0;
    g.bench_function("buy", |b| {
        b.iter(|| {
            seq += 1;
            ledger.apply(Side::Buy, black_box(&order(seq, 3)))
        })
    });
    let mut ledger = Ledger::new(&[bazaar::config::MAX_STOCK]);
    g.bench_function("flushed_buy", |b| {
        b.iter(|| {
            seq += 1;
            let e = FlushEntry {
                order: order(seq, 3),
                side: Side::Buy,
                clock: Lamport(seq),
                granted: Qty(3),
                epoch: Epoch(1),
            };
            ledger.apply_flushed(NodeId(5), black_box(&e))
        })
    });
    g.finish();
}

/// A cache filled by its first lookup with a stock that never runs out.
fn filled(now: Instant) -> Cache {
    let settings = Settings::from_config(&Config::default());
    let mut cache = Cache::new(NodeId(5), 1, settings, Vec::new(), now);
    cache.set_view(&View {
        epoch: Epoch(1),
        traders: vec![NodeId(5)],
    });
    for a in cache.start() {
        if let Action::Call(Body::Lookup { id, .. }) = a {
            cache.on_answer(
                now,
                id,
                Ok(Body::Stock {
                    id,
                    stock: vec![bazaar::config::MAX_STOCK],
                }),
            );
        }
    }
    cache
}

fn cache_admission(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_admission");
    g.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let mut cache = filled(now);
    let mut seq = 0u64;
    g.bench_function("buy_with_flush_every_5", |b| {
        b.iter(|| {
            seq += 1;
            let out = cache.on_request(now, seq, Side::Buy, order(seq, 1), Lamport(seq));
            // The flush the fifth request sends is confirmed at once, as a
            // warehouse would: the queue stays short, as in a market.
            for a in &out {
                if let Action::Call(Body::Flush { id, .. }) = a {
                    black_box(cache.on_answer(
                        now,
                        *id,
                        Ok(Body::Flushed {
                            id: *id,
                            stock: vec![bazaar::config::MAX_STOCK],
                        }),
                    ));
                }
            }
            out
        })
    });
    g.finish();
}

criterion_group!(benches, frame, ledger_apply, cache_admission);
criterion_main!(benches);
