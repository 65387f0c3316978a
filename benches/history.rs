//! What writing the history costs the hot path.
//!
//! - `history_append`: building N request events (invoke + completion) and
//!   appending them to a history file, against building them and writing
//!   nothing: the cost of one event; and the message trace of N requests
//!   on one end (the buy sent, the reply received): the cost of a trace line.
//! - `request_round_trip`: N buys over loopback TCP through a real [`Link`]
//!   to a node that grants them at once, with the client's invoke and
//!   completion appended to a history file per request, against the same
//!   requests without history: what the history adds to a request; and
//!   with the message trace on too, on both ends (four more lines per
//!   request: the buy sent and received, the reply sent and received):
//!   what the trace adds (see [`bazaar::trace`]).
//!
//! Run: `cargo bench --bench history`. The README quotes the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;

use bazaar::clock::{Clock, Lamport};
use bazaar::history::{self, Complete, Event, Invoke, Outcome, Writer};
use bazaar::link::Link;
use bazaar::net::{BoxFuture, Tcp, Transport};
use bazaar::node::{Handler, ServeOptions, serve};
use bazaar::trace::Trace;
use bazaar::wire::{Body, Envelope, NodeId, Order, ProductId, Qty, RequestId, Side};

const N: u64 = 1000;
const TIMEOUT: Duration = Duration::from_secs(2);

fn invoke(id: RequestId) -> Event {
    Event::Invoke(Invoke {
        id,
        side: Side::Buy,
        product: ProductId(0),
        asked: Qty(3),
        trader: NodeId(6),
        wall_us: history::wall_us(),
        lamport: Lamport(id.seq * 2),
    })
}

fn complete(id: RequestId, latency_us: u64) -> Event {
    Event::Complete(Complete {
        id,
        side: Side::Buy,
        product: ProductId(0),
        asked: Qty(3),
        granted: Qty(3),
        trader: NodeId(6),
        outcome: Outcome::Ok,
        wall_us: history::wall_us(),
        lamport: Lamport(id.seq * 2 + 1),
        latency_us,
    })
}

fn id(seq: u64) -> RequestId {
    RequestId {
        node: NodeId(1),
        seq,
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let writer = Writer::for_node(dir.path(), NodeId(1)).expect("history file");
    let mut g = c.benchmark_group("history_append");
    g.throughput(Throughput::Elements(2 * N));
    g.bench_function(BenchmarkId::new("build only", N), |b| {
        b.iter(|| {
            for seq in 0..N {
                black_box(invoke(id(seq)));
                black_box(complete(id(seq), 700));
            }
        })
    });
    g.bench_function(BenchmarkId::new("build and append", N), |b| {
        b.iter(|| {
            for seq in 0..N {
                writer.append(&invoke(id(seq))).expect("append");
                writer.append(&complete(id(seq), 700)).expect("append");
            }
        })
    });
    // The trace of the same 1000 requests on one node: each request's buy
    // sent and its reply received (a client's two lines; the server writes
    // two more into its own history).
    let trace = Trace::to(Arc::new(
        Writer::for_node(dir.path(), NodeId(2)).expect("history file"),
    ));
    g.bench_function(BenchmarkId::new("trace a send and a receive", N), |b| {
        b.iter(|| {
            for seq in 0..N {
                let buy = Envelope {
                    from: NodeId(1),
                    clock: Lamport(2 * seq),
                    body: Body::Buy(Order {
                        id: id(seq),
                        product: ProductId(0),
                        qty: Qty(3),
                    }),
                };
                trace.sent(NodeId(6), &buy);
                let reply = Envelope {
                    from: NodeId(6),
                    clock: Lamport(2 * seq + 1),
                    body: Body::Granted {
                        id: id(seq),
                        qty: Qty(3),
                    },
                };
                trace.received(&reply, Lamport(2 * seq + 2));
            }
        })
    });
    g.finish();
}

/// A node that grants every buy at once.
struct Grant;

impl Handler for Grant {
    fn handle(&self, _from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            match body {
                Body::Buy(o) => Some(Body::Granted {
                    id: o.id,
                    qty: o.qty,
                }),
                _ => None,
            }
        })
    }
}

/// A node on loopback that grants every buy at once, recording its messages
/// in `trace`; returns its address.
fn grant_node(
    rt: &tokio::runtime::Runtime,
    transport: &Arc<dyn Transport>,
    trace: Trace,
    stop: &CancellationToken,
) -> std::net::SocketAddr {
    rt.block_on(async {
        let listener = transport
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(
            listener,
            NodeId(6),
            Arc::new(Clock::new()),
            trace,
            Arc::new(Grant),
            ServeOptions::default(),
            stop.clone(),
        ));
        addr
    })
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stop = CancellationToken::new();
    let transport = Tcp::shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let writer = Arc::new(Writer::for_node(dir.path(), NodeId(1)).expect("history file"));
    let server_history = Arc::new(Writer::for_node(dir.path(), NodeId(6)).expect("history file"));
    // Two servers and two links, alike but for the trace.
    let plain = grant_node(&rt, &transport, Trace::off(), &stop);
    let traced = grant_node(&rt, &transport, Trace::to(server_history), &stop);
    let link = Link::new(
        NodeId(1),
        NodeId(6),
        plain,
        transport.clone(),
        Arc::new(Clock::new()),
    );
    let traced_link = Link::new(
        NodeId(1),
        NodeId(6),
        traced,
        transport.clone(),
        Arc::new(Clock::new()),
    )
    .traced(Trace::to(writer.clone()));
    let mut seq = 0u64;
    let mut buy = |link: &Link, history: Option<&Writer>| {
        seq += 1;
        let id = id(seq);
        let started = std::time::Instant::now();
        if let Some(w) = history {
            w.append(&invoke(id)).expect("append");
        }
        let order = Order {
            id,
            product: ProductId(0),
            qty: Qty(3),
        };
        let reply = rt.block_on(link.call(Body::Buy(order), TIMEOUT));
        assert!(matches!(reply, Ok(Body::Granted { .. })), "{reply:?}");
        if let Some(w) = history {
            let latency = started.elapsed().as_micros() as u64;
            w.append(&complete(id, latency)).expect("append");
        }
    };
    let mut g = c.benchmark_group("request_round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("without history", |b| b.iter(|| buy(&link, None)));
    g.bench_function("with history", |b| b.iter(|| buy(&link, Some(&writer))));
    // The message trace on both ends: the client's buy sent and its reply
    // received, the server's buy received and its reply sent (four lines).
    g.bench_function("with history and trace", |b| {
        b.iter(|| buy(&traced_link, Some(&writer)))
    });
    g.finish();
    stop.cancel();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = append, round_trip
}
criterion_main!(benches);
