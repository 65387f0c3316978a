//! Bad input at the warehouse and at a trader: every case gets a clear error or
//! a closed connection, never a panic, a hang, or a change to the stock; and the
//! node goes on serving everyone else.

mod common;

use std::time::Duration;

use bazaar::clock::Lamport;
use bazaar::config::Config;
use bazaar::node::ServeOptions;
use bazaar::wire::frame::{encode, read_frame};
use bazaar::wire::{
    Body, Envelope, Epoch, MAX_ORDER_QTY, NodeId, Order, PROTOCOL_VERSION, ProductId, Qty, Refusal,
    RequestId, View,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short limits so the slow-peer cases end quickly.
fn opts() -> ServeOptions {
    ServeOptions {
        hello_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    }
}

/// A market whose one trader (peer 2) is elected at once, alone: it is the
/// highest peer and the only one running.
const LONE_TRADER: &str = "[market]\npeers = 2\ntraders = 1\n[roles]\nbuyers = 1\nsellers = 0\n";

fn lone_trader() -> Config {
    Config::from_toml(LONE_TRADER).unwrap()
}

fn env(body: Body) -> Envelope {
    Envelope {
        from: NodeId(1),
        clock: Lamport(1),
        body,
    }
}

fn hello(version: u16) -> Vec<u8> {
    encode(&env(Body::Hello { version })).unwrap()
}

fn id(seq: u64) -> RequestId {
    RequestId {
        node: NodeId(1),
        seq,
    }
}

fn order(seq: u64, product: u32, qty: u32) -> Order {
    Order {
        id: id(seq),
        product: ProductId(product),
        qty: Qty(qty),
    }
}

/// Reads until the server closes the connection; fails if it stays open.
async fn assert_closed(mut s: TcpStream) {
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a bad connection open");
}

/// A raw connection that has said a correct hello.
async fn greeted(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello(PROTOCOL_VERSION)).await.unwrap();
    let welcome = read_frame(&mut s).await.unwrap();
    assert!(matches!(welcome.body, Body::Welcome { .. }));
    s
}

#[tokio::test]
async fn bad_frames_close_only_their_connection_and_never_touch_the_stock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lone_trader();
    let (warehouse, trader, _) = start_warehouse_and_trader(&cfg, dir.path(), opts()).await;
    let wh = link_to(NodeId(2), NodeId::WAREHOUSE, warehouse.addr);
    let initial = lookup(&wh, 1).await;

    // Malformed payload after a good hello.
    let mut s = greeted(warehouse.addr).await;
    s.write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    assert_closed(s).await;

    // Garbage instead of a hello.
    let mut s = TcpStream::connect(warehouse.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_closed(s).await;

    // An oversized length: refused from the prefix alone, nothing allocated.
    let mut s = greeted(warehouse.addr).await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_closed(s).await;

    // A truncated frame whose sender then goes quiet: closed after frame_timeout.
    let mut s = greeted(warehouse.addr).await;
    let sell = encode(&env(Body::WarehouseSell {
        order: order(2, 0, 5),
        epoch: Epoch(1),
    }))
    .unwrap();
    s.write_all(&sell[..sell.len() - 2]).await.unwrap();
    assert_closed(s).await;

    // A truncated frame whose sender hangs up.
    let mut s = greeted(warehouse.addr).await;
    s.write_all(&sell[..6]).await.unwrap();
    s.shutdown().await.unwrap();
    assert_closed(s).await;

    // A quantity that does not fit the type (a varint past u32): malformed.
    let mut bytes = encode(&env(Body::WarehouseSell {
        order: order(3, 0, 1),
        epoch: Epoch(1),
    }))
    .unwrap();
    let qty_at = bytes.len() - 1;
    bytes.truncate(qty_at);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    let mut s = greeted(warehouse.addr).await;
    s.write_all(&bytes).await.unwrap();
    assert_closed(s).await;

    // A peer that connects and says nothing: closed after hello_timeout.
    assert_closed(TcpStream::connect(warehouse.addr).await.unwrap()).await;
    // Same at the trader.
    assert_closed(TcpStream::connect(trader.addr).await.unwrap()).await;

    assert_eq!(
        lookup(&wh, 4).await,
        initial,
        "bad frames changed the stock"
    );
    // And the warehouse still serves a good request.
    let ok = wh
        .call(
            Body::WarehouseSell {
                order: order(5, 0, 5),
                epoch: Epoch(1),
            },
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(ok, Body::Deposited { id: id(5) });
    assert_eq!(lookup(&wh, 6).await, vec![initial[0] + 5]);
    warehouse.shutdown().await;
    trader.shutdown().await;
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lone_trader();
    let (warehouse, trader, _) = start_warehouse_and_trader(&cfg, dir.path(), opts()).await;
    let mut s = TcpStream::connect(warehouse.addr).await.unwrap();
    s.write_all(&hello(PROTOCOL_VERSION + 7)).await.unwrap();
    let answer = read_frame(&mut s).await.unwrap();
    match answer.body {
        Body::Refused {
            reason: Refusal::VersionMismatch { ours, theirs },
            ..
        } => assert_eq!((ours, theirs), (PROTOCOL_VERSION, PROTOCOL_VERSION + 7)),
        other => panic!("expected a version refusal, got {other:?}"),
    }
    assert_closed(s).await;
    warehouse.shutdown().await;
    trader.shutdown().await;
}

/// Which refusal a case expects.
type Expect = fn(&Refusal) -> bool;

/// Sends each request and checks it is refused for the expected reason.
async fn expect_refusals(link: &bazaar::link::Link, cases: Vec<(Body, Expect)>) {
    for (body, expected) in cases {
        let what = body.name();
        match link.call(body, TIMEOUT).await.unwrap() {
            Body::Refused { reason, .. } => assert!(expected(&reason), "{what}: {reason}"),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_requests_are_refused_at_warehouse_and_trader_without_changing_stock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lone_trader();
    let (warehouse, trader, trader_id) = start_warehouse_and_trader(&cfg, dir.path(), opts()).await;
    let wh = link_to(NodeId(2), NodeId::WAREHOUSE, warehouse.addr);
    let tr = link_to(NodeId(1), trader_id, trader.addr);
    let initial = lookup(&wh, 1).await;

    let cases: Vec<(Body, Expect)> = vec![
        (
            Body::WarehouseBuy {
                order: order(10, 7, 1),
                epoch: Epoch(1),
            },
            |r| matches!(r, Refusal::UnknownProduct { known: 1, .. }),
        ),
        (
            Body::WarehouseSell {
                order: order(11, 0, 0),
                epoch: Epoch(1),
            },
            |r| *r == Refusal::ZeroQuantity,
        ),
        (
            Body::WarehouseSell {
                order: order(12, 0, MAX_ORDER_QTY + 1),
                epoch: Epoch(1),
            },
            |r| matches!(r, Refusal::QuantityTooLarge { .. }),
        ),
        (
            Body::WarehouseBuy {
                order: order(13, 0, u32::MAX),
                epoch: Epoch(1),
            },
            |r| matches!(r, Refusal::QuantityTooLarge { .. }),
        ),
        // Messages the warehouse's role does not take.
        (
            Body::Buy(order(14, 0, 1)),
            |r| matches!(r, Refusal::NotForRole { role, .. } if role == "warehouse"),
        ),
        (
            Body::Heartbeat {
                id: id(15),
                view: View::default(),
            },
            |r| matches!(r, Refusal::NotForRole { .. }),
        ),
    ];
    expect_refusals(&wh, cases).await;
    let cases: Vec<(Body, Expect)> = vec![
        (Body::Buy(order(20, 3, 1)), |r| {
            matches!(r, Refusal::UnknownProduct { .. })
        }),
        (Body::Sell(order(21, 0, 0)), |r| *r == Refusal::ZeroQuantity),
        (Body::Buy(order(22, 0, u32::MAX)), |r| {
            matches!(r, Refusal::QuantityTooLarge { .. })
        }),
        (
            Body::WarehouseBuy {
                order: order(23, 0, 1),
                epoch: Epoch(1),
            },
            |r| matches!(r, Refusal::NotForRole { role, .. } if role == "trader"),
        ),
        (
            Body::Lookup {
                id: id(24),
                epoch: Epoch(1),
            },
            |r| matches!(r, Refusal::NotForRole { .. }),
        ),
    ];
    expect_refusals(&tr, cases).await;
    // A one-way message that means nothing here (a result of no epoch) is
    // logged and dropped; the connection stays usable.
    tr.send(
        Body::Elected {
            view: View::default(),
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    let good = tr.call(Body::Buy(order(30, 0, 2)), TIMEOUT).await.unwrap();
    assert_eq!(
        good,
        Body::Granted {
            id: id(30),
            qty: Qty(2)
        }
    );
    assert_eq!(lookup(&wh, 2).await, vec![initial[0] - 2]);
    warehouse.shutdown().await;
    trader.shutdown().await;
}

#[tokio::test]
async fn a_buy_larger_than_the_stock_gets_what_there_is_and_the_warehouse_lives_on() {
    // The document's warehouse crashed on this in cache-less mode, and then every
    // buyer blocked forever.
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "{LONE_TRADER}[[products]]\nname = \"salt\"\nstock = 3"
    ))
    .unwrap();
    let (warehouse, trader, trader_id) = start_warehouse_and_trader(&cfg, dir.path(), opts()).await;
    let tr = link_to(NodeId(1), trader_id, trader.addr);
    let got = tr.call(Body::Buy(order(1, 0, 5)), TIMEOUT).await.unwrap();
    assert_eq!(
        got,
        Body::Granted {
            id: id(1),
            qty: Qty(3)
        }
    );
    let got = tr.call(Body::Buy(order(2, 0, 5)), TIMEOUT).await.unwrap();
    assert_eq!(
        got,
        Body::Granted {
            id: id(2),
            qty: Qty(0)
        }
    );
    let got = tr.call(Body::Sell(order(3, 0, 4)), TIMEOUT).await.unwrap();
    assert_eq!(got, Body::Deposited { id: id(3) });
    let got = tr.call(Body::Buy(order(4, 0, 1)), TIMEOUT).await.unwrap();
    assert_eq!(
        got,
        Body::Granted {
            id: id(4),
            qty: Qty(1)
        }
    );
    warehouse.shutdown().await;
    trader.shutdown().await;
    let snap = bazaar::warehouse::store::Store::snapshot(&dir.path().join("warehouse")).unwrap();
    let b = snap.books[0];
    assert_eq!((b.stock, b.shipped, b.refused, b.sold), (3, 4, 7, 4));
    assert_eq!(b.oversells, 0);
}
