//! A warehouse process killed with SIGKILL and restarted on its data directory
//! keeps every change it acknowledged, and still recognises every request id
//! it applied (a retry after the restart is answered from the record).

mod common;

use std::process::Stdio;

use bazaar::warehouse::store::Store;
use bazaar::wire::{Body, Epoch, NodeId, Order, ProductId, Qty, RequestId};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `bazaar node` as the warehouse on an OS-chosen port; returns it and its address.
async fn start_warehouse(
    config: &std::path::Path,
    data: &std::path::Path,
) -> (Child, std::net::SocketAddr) {
    // Trader 5 (of the default market's first view) plays the trader.
    let cfg = bazaar::config::Config::load(config).unwrap();
    seat_first_view(&cfg, data);
    let mut child = Command::new(bin())
        .args(["node", "--id", "0", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start warehouse");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("warehouse ready in time")
        .unwrap()
        .expect("a ready line");
    let addr = line
        .strip_prefix("ready ")
        .expect("ready <addr>")
        .parse()
        .unwrap();
    (child, addr)
}

/// Request `n` comes from client `n`: every client has one request in flight
/// at a time, as the warehouse's per-client dedupe expects.
fn order(n: u64, qty: u32) -> Order {
    Order {
        id: RequestId {
            node: NodeId(n as u32),
            seq: 1,
        },
        product: ProductId(0),
        qty: Qty(qty),
    }
}

#[tokio::test]
async fn a_killed_warehouse_keeps_every_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[[products]]\nname = \"salt\"\nstock = 20\n");
    let data = dir.path().join("warehouse");
    let (mut child, addr) = start_warehouse(&config, &data).await;

    // Play a trader serving 200 clients at once (their requests share commits).
    let wh = std::sync::Arc::new(link_to(NodeId(5), NodeId::WAREHOUSE, addr));
    let mut tasks = Vec::new();
    for seq in 1..=200u64 {
        let wh = wh.clone();
        tasks.push(tokio::spawn(async move {
            let body = if seq % 2 == 0 {
                Body::WarehouseSell {
                    order: order(seq, 3),
                    epoch: Epoch(1),
                }
            } else {
                Body::WarehouseBuy {
                    order: order(seq, 4),
                    epoch: Epoch(1),
                }
            };
            (seq, wh.call(body, TIMEOUT).await.expect("answered"))
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let (mut sold, mut shipped) = (0u64, 0u64);
    for (_, reply) in &acked {
        match reply {
            Body::Deposited { .. } => sold += 3,
            Body::Granted { qty, .. } => shipped += u64::from(qty.0),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected = 20 + sold - shipped;
    assert_eq!(lookup(&wh, 1).await, vec![expected]);

    child.kill().await.expect("SIGKILL the warehouse");
    child.wait().await.unwrap();

    // Restarted on the same data directory: every acknowledged change is there.
    let (mut child, addr) = start_warehouse(&config, &data).await;
    let wh = link_to(NodeId(5), NodeId::WAREHOUSE, addr);
    assert_eq!(lookup(&wh, 2).await, vec![expected]);

    // A retry of an acknowledged request is answered from the record, not applied again.
    let (seq, first) = acked.iter().find(|(s, _)| s % 2 == 1).unwrap();
    let again = wh
        .call(
            Body::WarehouseBuy {
                order: order(*seq, 4),
                epoch: Epoch(1),
            },
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(&again, first);
    assert_eq!(lookup(&wh, 3).await, vec![expected]);

    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let snap = Store::snapshot(&data).unwrap();
    assert_eq!(snap.applied.len(), 200);
    let b = snap.books[0];
    assert_eq!((b.sold, b.shipped, b.stock), (sold, shipped, expected));
    assert!(b.conserved());
}
