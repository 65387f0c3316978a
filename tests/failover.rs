//! Failover, in the document's terms: a trader dies mid-run and no request is
//! lost or applied twice.
//!
//! 1. A whole market of real processes (the `bazaar` binary): 2 traders, one
//!    SIGKILLed at 1.5 s. The checker must pass (conservation, no lost ack, no
//!    double apply from the warehouse's applied-id table against every
//!    client's history, liveness) and the death must be detected within
//!    `heartbeat.timeout + heartbeat.interval`.
//! 2. On loopback tasks: a trader dies after the warehouse applied a buy and
//!    before it answered; the client retries at the other trader with the same
//!    id and the warehouse answers from its record, applying it once.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bazaar::config::{Config, Role};
use bazaar::history::{self, Outcome};
use bazaar::link::Link;
use bazaar::membership::{Happening, Membership};
use bazaar::net::{BoxFuture, Tcp, Transport};
use bazaar::node::{self, AddressBook, Handler, IoMode, NodeContext, ServeOptions};
use bazaar::peer::client::Client;
use bazaar::trader::Trader;
use bazaar::warehouse::store::Store;
use bazaar::wire::{Body, Epoch, NodeId, ProductId, Qty, Side, View};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bounds every wait in these tests.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn a_sigkilled_trader_loses_no_request_and_is_detected_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kill.toml");
    std::fs::write(
        &config,
        r#"
[market]
name = "kill-a-trader"
duration = "4s"
seed = 7
traders = 2

[heartbeat]
interval = "200ms"
timeout = "600ms"

[[faults]]
at = "1500ms"
kill = "trader"
"#,
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let out = Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed 7\n{stdout}\n{stderr}");
    let report = common::read_report(&common::the_run(&runs));

    for check in &report.checks {
        assert!(check.ok, "seed 7: {check:?}\n{stdout}");
    }
    let f = &report.failover;
    assert_eq!(f.elected.len(), 2, "{f:?}");
    assert_eq!(f.faults.len(), 1, "{f:?}");
    let fault = &f.faults[0];
    assert!(
        f.elected.contains(&fault.victim),
        "a trader was killed: {f:?}"
    );
    let detected = fault.detected.as_ref().expect("the death was detected");
    assert!(
        detected.after_ms < 800.0,
        "detected after {} ms, not under timeout + interval = 800 ms",
        detected.after_ms
    );
    assert_ne!(detected.by, fault.victim);
    // The warehouse commits the set without it once its lease is over.
    assert!(
        detected.committed_after_ms >= detected.after_ms
            && detected.committed_after_ms < 800.0 + 350.0,
        "{detected:?}"
    );
    assert_eq!(f.lost, 0, "{f:?}");
    assert_eq!(f.final_traders.len(), 1, "{f:?}");
    assert!(!f.final_traders.contains(&fault.victim));
    // Trading went on after the death.
    assert!(fault.shipped_after > 0, "{fault:?}");
}

/// A trader that forwards a buy to the warehouse, reports the warehouse's
/// answer to the test, and dies before answering its client.
struct DyingTrader {
    warehouse: Link,
    applied: mpsc::Sender<Body>,
    dead: CancellationToken,
}

impl Handler for DyingTrader {
    fn handle(&self, _from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            let Body::Buy(order) = body else { return None };
            let answer = bazaar::trader::strong::settle(
                &self.warehouse,
                Epoch(1),
                Side::Buy,
                order,
                Duration::from_secs(5),
            )
            .await;
            let _ = self.applied.send(answer).await;
            // Dies here: its listener and connections close, nobody is answered.
            self.dead.cancel();
            std::future::pending::<()>().await;
            None
        })
    }
}

fn ctx(
    me: NodeId,
    role: Role,
    cfg: &Arc<Config>,
    book: &AddressBook,
    dir: &Path,
    traders: Vec<NodeId>,
) -> NodeContext {
    let mut ctx = NodeContext::new(
        me,
        role,
        cfg.clone(),
        book.clone(),
        Tcp::shared(),
        IoMode::Threaded,
        dir.join(me.to_string()),
        dir.join("history"),
    )
    .unwrap();
    let view = View {
        epoch: Epoch(1),
        traders,
    };
    ctx.traders = Arc::new(Membership::with_view(me, view));
    ctx
}

/// Commits `traders` as epoch 1 in the warehouse's data directory under `dir`.
fn seat(cfg: &Config, dir: &Path, traders: &[u32]) {
    let (store, _) = Store::open(
        &dir.join(NodeId::WAREHOUSE.to_string()),
        &cfg.initial_stock(),
    )
    .unwrap();
    let view = View {
        epoch: Epoch(1),
        traders: traders.iter().copied().map(NodeId).collect(),
    };
    store.commit_view(&view).unwrap();
}

async fn bind() -> (Box<dyn bazaar::net::Listener>, SocketAddr) {
    let l = Tcp.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn a_retry_after_the_trader_died_is_answered_from_the_warehouse_record() {
    tokio::time::timeout(PATIENCE, retry_is_answered_from_the_record())
        .await
        .expect("the scenario finishes");
}

async fn retry_is_answered_from_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Arc::new(
        Config::from_toml("[market]\npeers = 3\ntraders = 2\nrequest_timeout = \"3s\"\n[roles]\nbuyers = 1\nsellers = 0\n[[products]]\nname = \"salt\"\nstock = 10\n")
            .unwrap(),
    );
    let (w_listener, w_addr) = bind().await;
    let (dying_listener, dying_addr) = bind().await;
    let (live_listener, live_addr) = bind().await;
    let mut book = AddressBook::default();
    book.nodes.insert(NodeId::WAREHOUSE, w_addr);
    book.nodes.insert(NodeId(1), "127.0.0.1:9".parse().unwrap());
    book.nodes.insert(NodeId(2), dying_addr);
    book.nodes.insert(NodeId(3), live_addr);

    // The warehouse, a real node.
    seat(&cfg, dir.path(), &[2, 3]);
    let stop_warehouse = CancellationToken::new();
    let w_ctx = ctx(
        NodeId::WAREHOUSE,
        Role::Warehouse,
        &cfg,
        &book,
        dir.path(),
        vec![],
    );
    let warehouse = tokio::spawn(bazaar::role::run(
        w_ctx,
        w_listener,
        ServeOptions::default(),
        CancellationToken::new(),
        stop_warehouse.clone(),
        || {},
    ));

    // Trader 2 dies after the warehouse applied; trader 3 is a real trader.
    let dying_ctx = ctx(NodeId(2), Role::Trader, &cfg, &book, dir.path(), vec![]);
    let (applied_tx, mut applied_rx) = mpsc::channel(1);
    let dead = CancellationToken::new();
    let dying = DyingTrader {
        warehouse: Link::new(
            NodeId(2),
            NodeId::WAREHOUSE,
            w_addr,
            Tcp::shared(),
            dying_ctx.clock.clone(),
        ),
        applied: applied_tx,
        dead: dead.clone(),
    };
    tokio::spawn(node::serve(
        dying_listener,
        NodeId(2),
        dying_ctx.clock.clone(),
        dying_ctx.trace(),
        Arc::new(dying),
        ServeOptions::default(),
        dead.clone(),
    ));
    let live_ctx = ctx(NodeId(3), Role::Trader, &cfg, &book, dir.path(), vec![]);
    let stop_live = CancellationToken::new();
    tokio::spawn(node::serve(
        live_listener,
        NodeId(3),
        live_ctx.clock.clone(),
        live_ctx.trace(),
        Arc::new(Trader::start(&live_ctx).unwrap()),
        ServeOptions::default(),
        stop_live.clone(),
    ));

    // The buyer knows only trader 2 until message 8 names trader 3.
    let buyer_ctx = ctx(
        NodeId(1),
        Role::Buyer,
        &cfg,
        &book,
        dir.path(),
        vec![NodeId(2)],
    );
    let membership = buyer_ctx.traders.clone();
    let mut client = Client::new(&buyer_ctx).await.unwrap();
    let buy = tokio::spawn(async move {
        let req = client
            .request(Side::Buy, ProductId(0), Qty(4))
            .await
            .unwrap();
        client.finish().unwrap();
        req
    });
    let first = applied_rx
        .recv()
        .await
        .expect("the warehouse applied the buy");
    let Body::Granted { qty: first_qty, .. } = first else {
        panic!("the warehouse answered {first:?}");
    };
    assert_eq!(first_qty, Qty(4));
    // Trader 3 detects the death and sends message 8; the buyer applies it.
    dead.cancelled().await;
    membership.adopt(&View {
        epoch: Epoch(2),
        traders: vec![NodeId(3)],
    });
    let req = buy.await.unwrap();

    assert_eq!(req.outcome, Outcome::Ok, "{req:?}");
    assert_eq!(req.granted, first_qty, "the retry got the first result");
    assert_eq!(req.trader, NodeId(3));

    stop_live.cancel();
    stop_warehouse.cancel();
    warehouse.await.unwrap().unwrap();
    let store = Store::snapshot(&dir.path().join(NodeId::WAREHOUSE.to_string())).unwrap();
    assert_eq!(store.books[0].stock, 6, "applied once: 10 − 4");
    assert_eq!(store.books[0].shipped, 4);
    assert_eq!(store.applied.len(), 1);
    assert_eq!(store.applied[0].0, req.id);

    let history = history::History::read_dir(&dir.path().join("history")).unwrap();
    let retried = history.retries().any(|(id, r)| {
        id == req.id && matches!(&r.what, Happening::Retried { from, .. } if *from == NodeId(2))
    });
    assert!(
        retried,
        "the retry is in the buyer's history: {:?}",
        history.failover
    );
}

/// A trader's handler that the test can still stop (a cached trader flushes).
struct Serving(Arc<Trader>);

impl Handler for Serving {
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        self.0.handle(from, body)
    }
}

/// A seller restarted on its data directory (a second `bazaar node` session,
/// a crashed process brought back) must not reuse its request numbers: the
/// warehouse remembers them and would answer its new sells from the old
/// records without applying them.
async fn a_restarted_client_has_every_request_applied(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Arc::new(
        Config::from_toml(&format!(
            "[market]\npeers = 2\ntraders = 1\nmode = \"{mode}\"\n[roles]\nbuyers = 0\nsellers = 1\n\
             [cache]\nflush_every = 1\n[[products]]\nname = \"salt\"\nstock = 10\n"
        ))
        .unwrap(),
    );
    let (w_listener, w_addr) = bind().await;
    let (t_listener, t_addr) = bind().await;
    let mut book = AddressBook::default();
    book.nodes.insert(NodeId::WAREHOUSE, w_addr);
    book.nodes.insert(NodeId(2), t_addr);
    seat(&cfg, dir.path(), &[2]);
    let stop_warehouse = CancellationToken::new();
    let warehouse = tokio::spawn(bazaar::role::run(
        ctx(
            NodeId::WAREHOUSE,
            Role::Warehouse,
            &cfg,
            &book,
            dir.path(),
            vec![],
        ),
        w_listener,
        ServeOptions::default(),
        CancellationToken::new(),
        stop_warehouse.clone(),
        || {},
    ));
    let t_ctx = ctx(
        NodeId(2),
        Role::Trader,
        &cfg,
        &book,
        dir.path(),
        vec![NodeId(2)],
    );
    let trader = Arc::new(Trader::start(&t_ctx).unwrap());
    let stop_trader = CancellationToken::new();
    let server = tokio::spawn(node::serve(
        t_listener,
        NodeId(2),
        t_ctx.clock.clone(),
        t_ctx.trace(),
        Arc::new(Serving(trader.clone())),
        ServeOptions::default(),
        stop_trader.clone(),
    ));

    let mut acknowledged = 0;
    for _life in 0..2 {
        let seller = ctx(
            NodeId(1),
            Role::Seller,
            &cfg,
            &book,
            dir.path(),
            vec![NodeId(2)],
        );
        let mut client = Client::new(&seller).await.unwrap();
        for _ in 0..3 {
            let r = client
                .request(Side::Sell, ProductId(0), Qty(5))
                .await
                .unwrap();
            assert_eq!(r.outcome, Outcome::Ok, "{mode}: {r:?}");
            acknowledged += 5;
        }
        client.finish().unwrap();
    }

    stop_trader.cancel();
    server.await.unwrap();
    trader.stop().await;
    stop_warehouse.cancel();
    warehouse.await.unwrap().unwrap();
    let store = Store::snapshot(&dir.path().join(NodeId::WAREHOUSE.to_string())).unwrap();
    assert_eq!(store.books[0].sold, acknowledged, "{mode}");
    assert_eq!(store.applied.len(), 6, "{mode}: six distinct requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_strong_client_never_reuses_a_request_id() {
    tokio::time::timeout(
        PATIENCE,
        a_restarted_client_has_every_request_applied("strong"),
    )
    .await
    .expect("the scenario finishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cached_client_never_reuses_a_request_id() {
    tokio::time::timeout(
        PATIENCE,
        a_restarted_client_has_every_request_applied("cached"),
    )
    .await
    .expect("the scenario finishes");
}
