//! Helpers shared by the integration tests: nodes in this process on loopback,
//! the `bazaar` binary, raw connections for speaking bad protocol.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bazaar::clock::Clock;
use bazaar::config::{Config, Role};
use bazaar::link::Link;
use bazaar::membership::Membership;
use bazaar::net::{Tcp, Transport};
use bazaar::node::{AddressBook, IoMode, NodeContext, ServeOptions};
use bazaar::warehouse::store::Store;
use bazaar::wire::{Body, Epoch, NodeId, RequestId, View};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The `bazaar` binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bazaar"))
}

/// The one run directory `bazaar run --runs-dir runs` made (beside the
/// `latest` link to it).
pub fn the_run(runs: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(bazaar::market::LATEST))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// A run directory's `report.json`.
pub fn read_report(run: &Path) -> bazaar::report::Report {
    let text = std::fs::read_to_string(run.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs `bazaar run` on `toml` (written into `dir`) with its run
/// directories under `dir/runs`; returns that directory and what it printed.
pub fn run_market(dir: &Path, toml: &str) -> (PathBuf, std::process::Output) {
    let config = write_config(dir, toml);
    let runs = dir.join("runs");
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .expect("run bazaar");
    (runs, out)
}

/// `bazaar check RUN_DIR` passes on a run directory.
pub fn assert_check_passes(run: &Path) {
    let check = std::process::Command::new(bin())
        .arg("check")
        .arg(run)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("market.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// A node running in this process on 127.0.0.1 with an OS-chosen port.
pub struct LocalNode {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl LocalNode {
    /// Stops the node and waits until it has closed its storage.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.expect("node task").expect("node ran");
    }
}

/// Starts `me` in its configured role; `book` must hold the nodes it talks to.
pub async fn start_node(
    cfg: &Config,
    me: NodeId,
    book: &AddressBook,
    data_dir: &Path,
    opts: ServeOptions,
) -> LocalNode {
    let transport: Arc<dyn Transport> = Tcp::shared();
    let listener = transport
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    if me.is_warehouse() {
        seat_first_view(cfg, data_dir);
    }
    let mut ctx = NodeContext::new(
        me,
        cfg.role_of(me).expect("node in config"),
        Arc::new(cfg.clone()),
        book.clone(),
        transport,
        IoMode::Threaded,
        data_dir.to_path_buf(),
        data_dir.join("history"),
    )
    .expect("node context");
    // The election is not under test here: start with the configured traders.
    ctx.traders = Arc::new(Membership::with_view(me, first_view(cfg)));
    let stop = CancellationToken::new();
    let task = tokio::spawn(bazaar::role::run(
        ctx,
        listener,
        opts,
        stop.clone(),
        stop.clone(),
        || {},
    ));
    LocalNode { addr, stop, task }
}

/// The view a test market starts with: the configured traders, epoch 1.
pub fn first_view(cfg: &Config) -> View {
    View {
        epoch: Epoch(1),
        traders: cfg.initial_traders(),
    }
}

/// Commits [`first_view`] in a warehouse's data directory before it starts,
/// as if the peers had elected it (the election is not under test here).
pub fn seat_first_view(cfg: &Config, data_dir: &Path) {
    let (store, _) = Store::open(data_dir, &cfg.initial_stock()).expect("warehouse store");
    if store.read_views().expect("views").is_empty() {
        store.commit_view(&first_view(cfg)).expect("commit view");
    }
}

/// A warehouse and the first trader of `cfg`, in this process.
pub async fn start_warehouse_and_trader(
    cfg: &Config,
    dir: &Path,
    opts: ServeOptions,
) -> (LocalNode, LocalNode, NodeId) {
    let mut book = AddressBook::default();
    let warehouse = start_node(cfg, NodeId::WAREHOUSE, &book, &dir.join("warehouse"), opts).await;
    book.nodes.insert(NodeId::WAREHOUSE, warehouse.addr);
    let trader_id = *cfg.initial_traders().first().unwrap();
    assert_eq!(cfg.role_of(trader_id).unwrap(), Role::Trader);
    let trader = start_node(cfg, trader_id, &book, &dir.join("trader"), opts).await;
    (warehouse, trader, trader_id)
}

/// A client link from a made-up node to `addr`.
pub fn link_to(me: NodeId, peer: NodeId, addr: SocketAddr) -> Link {
    Link::new(me, peer, addr, Tcp::shared(), Arc::new(Clock::new()))
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The warehouse's stock, by lookup (message 4); `warehouse` must be a link
/// from a trader of [`first_view`].
pub async fn lookup(warehouse: &Link, seq: u64) -> Vec<u64> {
    let id = RequestId {
        node: NodeId(99),
        seq,
    };
    match warehouse
        .call(
            Body::Lookup {
                id,
                epoch: Epoch(1),
            },
            TIMEOUT,
        )
        .await
        .expect("lookup")
    {
        Body::Stock { stock, .. } => stock,
        other => panic!("lookup answered {other:?}"),
    }
}
