//! The document's cache experiment, with real processes on loopback.
//!
//! - 2 traders in cached mode, 1 seller and 3 buyers: the market oversells,
//!   and conservation holds with the oversells accounted.
//! - The same market in strong mode: zero oversells.
//! - A cached trader killed (SIGKILL) and restarted on its data directory in
//!   the middle of a run: nothing it had acknowledged is lost.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use bazaar::check;
use bazaar::clock::Clock;
use bazaar::config::Config;
use bazaar::history::{self, Complete, Event, History, Invoke, Outcome, Request};
use bazaar::launch::Line;
use bazaar::link::Link;
use bazaar::market::{RunDir, read_unflushed};
use bazaar::net::Tcp;
use bazaar::node::AddressBook;
use bazaar::report::Report;
use bazaar::warehouse::store::Store;
use bazaar::wire::{Body, NodeId, Order, ProductId, Qty, RequestId, Side};

const BAZAAR: &str = env!("CARGO_BIN_EXE_bazaar");
/// How long a child may take to say a line we wait for.
const HEAR: Duration = Duration::from_secs(20);

/// 1 seller, 3 buyers, 2 traders, scarce stock: the document's 1:3 market.
fn one_seller_three_buyers(mode: &str, seed: u64) -> String {
    format!(
        r#"
[market]
name = "s1b3-{mode}"
peers = 6
traders = 2
mode = "{mode}"
duration = "2s"
seed = {seed}
[[products]]
name = "salt"
stock = 10
[roles]
buyers = 3
sellers = 1
[workload.seller]
quantity = 5
interval = "200ms"
[workload.buyer]
max_quantity = 5
pause = "20ms"
[cache]
ttl = "1s"
flush_every = 5
flush_interval = "250ms"
"#
    )
}

/// Runs `bazaar run` with `config` and returns its report.
fn bazaar_run(config: &str) -> Report {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("market.toml");
    std::fs::write(&cfg, config).unwrap();
    let runs = tmp.path().join("runs");
    let out = Command::new(BAZAAR)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bazaar run failed\n{stdout}\n{stderr}"
    );
    common::read_report(&common::the_run(&runs))
}

fn assert_all_checks_ok(report: &Report) {
    for v in &report.checks {
        assert!(v.ok, "{}: {} (seed {})", v.invariant, v.detail, report.seed);
    }
}

#[test]
fn cached_market_of_one_seller_and_three_buyers_oversells_and_conserves_stock() {
    let seed = 7;
    let r = bazaar_run(&one_seller_three_buyers("cached", seed));
    assert_all_checks_ok(&r);
    assert!(r.oversells > 0, "no oversell (seed {seed}): {r:#?}");
    assert!(r.conserved);
    // Conservation with shipped = what the warehouse really delivered: the
    // oversold items are not in `shipped`.
    for p in &r.products {
        assert_eq!(p.initial + p.sold - p.shipped, p.final_stock);
    }
    // Every oversell is named, per request and per trader.
    assert_eq!(r.oversold_buys.len() as u64, r.oversells);
    let per_trader: u64 = r.per_trader.iter().map(|t| t.book.oversells).sum();
    assert_eq!(per_trader, r.oversells);
    assert!(r.oversell_rate > 0.0 && r.oversell_rate <= 1.0);
    // Acknowledged = shipped + oversold, request by request: the checker's
    // "no lost acknowledged request" verdict, which passed above.
    assert!(r.unflushed.is_empty());
}

#[test]
fn strong_market_of_one_seller_and_three_buyers_never_oversells() {
    let r = bazaar_run(&one_seller_three_buyers("strong", 7));
    assert_all_checks_ok(&r);
    assert_eq!(r.oversells, 0);
    assert_eq!(r.undersells, 0);
    assert!(r.oversold_buys.is_empty());
    // Traders answered, and flushed nothing: there is no cache in strong mode.
    assert!(!r.per_trader.is_empty());
    assert!(
        r.per_trader
            .iter()
            .all(|t| t.book.flushed == 0 && t.answered > 0)
    );
    assert!(r.conserved);
    assert!(r.requests.buy.ok > 0);
}

/// One node of a market this test launches itself, speaking the launcher's
/// protocol (`ready <addr>` on stdout, `start <book>` / `stop` on stdin).
struct Node {
    id: NodeId,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    addr: SocketAddr,
}

impl Node {
    fn spawn(cfg: &Path, run: &Path, id: NodeId, listen: Option<SocketAddr>) -> Node {
        let mut cmd = Command::new(BAZAAR);
        cmd.arg("node")
            .arg("--id")
            .arg(id.0.to_string())
            .arg("--config")
            .arg(cfg)
            .arg("--run-dir")
            .arg(run)
            .arg("--launched")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(run.join("logs").join(format!("{id}.log")))
                    .unwrap(),
            ));
        if let Some(a) = listen {
            cmd.arg("--listen").arg(a.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Node {
            id,
            child,
            stdin,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let ready = node.hear();
        let Ok(Line::Ready(addr)) = ready.parse::<Line>() else {
            panic!("{id} said {ready:?}");
        };
        node.addr = addr;
        node
    }

    fn hear(&self) -> String {
        self.lines
            .recv_timeout(HEAR)
            .unwrap_or_else(|e| panic!("{} said nothing: {e}", self.id))
    }

    /// Waits until this node says it is a trader (a launched peer prints
    /// every view it adopts: `traders 1 6,7`).
    fn await_trader(&self) {
        loop {
            if let Ok(Line::Traders(view)) = self.hear().parse::<Line>()
                && view.contains(self.id)
            {
                return;
            }
        }
    }

    /// Waits for `done`, passing over the views it prints meanwhile.
    fn await_done(&self) {
        loop {
            match self.hear().parse::<Line>() {
                Ok(Line::Done) => return,
                Ok(Line::Traders(_)) => continue,
                other => panic!("{} said {other:?} instead of done", self.id),
            }
        }
    }

    fn say(&mut self, line: &Line) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (the launcher's "stop everything") and waits for the exit:
    /// its stdout closing says it has gone.
    fn close(mut self) {
        self.stdin.take();
        while self.lines.recv_timeout(HEAR).is_ok() {}
        self.child.wait().unwrap();
    }
}

/// A client of the test itself, as peer `me`, recorded in the history like a buyer's.
struct Probe {
    me: NodeId,
    clock: Arc<Clock>,
    seq: u64,
    done: Vec<Request>,
}

impl Probe {
    async fn request(&mut self, link: &Link, side: Side, qty: u32) -> Request {
        self.seq += 1;
        let id = RequestId {
            node: self.me,
            seq: self.seq,
        };
        let order = Order {
            id,
            product: ProductId(0),
            qty: Qty(qty),
        };
        let body = match side {
            Side::Buy => Body::Buy(order),
            Side::Sell => Body::Sell(order),
        };
        let lamport_invoked = self.clock.tick();
        let reply = link.call(body, Duration::from_secs(5)).await;
        let (outcome, granted) = match reply {
            Ok(Body::Granted { qty, .. }) => (Outcome::Ok, qty),
            Ok(Body::Deposited { .. }) => (Outcome::Ok, Qty(qty)),
            other => (Outcome::Failed(format!("{other:?}")), Qty(0)),
        };
        let r = Request {
            id,
            side,
            product: ProductId(0),
            asked: Qty(qty),
            granted,
            trader: link.peer(),
            outcome,
            invoked_us: history::wall_us(),
            completed_us: history::wall_us(),
            latency_us: 0,
            lamport_invoked,
            lamport_completed: self.clock.tick(),
        };
        self.done.push(r.clone());
        r
    }

    fn write_history(&self, dir: &Path) {
        let w = history::Writer::for_node(dir, self.me).unwrap();
        for r in &self.done {
            w.append(&Event::Invoke(Invoke {
                id: r.id,
                side: r.side,
                product: r.product,
                asked: r.asked,
                trader: r.trader,
                wall_us: r.invoked_us,
                lamport: r.lamport_invoked,
            }))
            .unwrap();
            w.append(&Event::Complete(Complete {
                id: r.id,
                side: r.side,
                product: r.product,
                asked: r.asked,
                granted: r.granted,
                trader: r.trader,
                outcome: r.outcome.clone(),
                wall_us: r.completed_us,
                lamport: r.lamport_completed,
                latency_us: r.latency_us,
            }))
            .unwrap();
        }
        w.close(self.me).unwrap();
    }
}

/// What a market with a killed trader came to.
struct AfterKill {
    cfg: Config,
    /// What the victim acknowledged before it died.
    acked: Vec<Request>,
    store: bazaar::warehouse::store::Snapshot,
    unflushed: Vec<(NodeId, bazaar::wire::FlushEntry)>,
    verdicts: Vec<check::Verdict>,
}

/// Runs a cached market in which trader 7 is SIGKILLed mid-run after it has
/// acknowledged requests, and (if `restart`) restarted on its port and data
/// directory.
async fn kill_trader_mid_run(restart: bool) -> AfterKill {
    // 7 peers: traders 6 and 7, buyers 1-3, seller 4; peer 5 is idle (it
    // takes part in the election) and this test's probe speaks under its id. Flushes only on stop, so everything trader 7 acknowledges before
    // the kill exists only in its journal when it dies.
    let cfg: Config = Config::from_toml(
        r#"
[market]
name = "kill-trader"
peers = 7
traders = 2
mode = "cached"
seed = 11
[[products]]
name = "salt"
stock = 30
[roles]
buyers = [1, 2, 3]
sellers = [4]
[cache]
ttl = "1h"
flush_every = 1000
flush_interval = "1h"
"#,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::create(tmp.path(), &cfg.market.name).unwrap();
    std::fs::write(run.config(), cfg.to_toml()).unwrap();
    let spawn = |id: NodeId, listen| Node::spawn(&run.config(), &run.root, id, listen);

    let mut nodes: Vec<Node> = cfg
        .roles_of_peers()
        .unwrap()
        .into_iter()
        .map(|(id, _)| spawn(id, None))
        .collect();
    let mut book = AddressBook::default();
    for n in &nodes {
        book.nodes.insert(n.id, n.addr);
    }
    let start = Line::Start(book.clone());
    for n in nodes.iter_mut() {
        n.say(&start);
    }

    let victim = NodeId(7);
    let victim_addr = book.get(victim).unwrap();
    let mut probe = Probe {
        me: NodeId(5),
        clock: Arc::new(Clock::new()),
        seq: 0,
        done: Vec::new(),
    };
    let link = |probe: &Probe| {
        Link::new(
            probe.me,
            victim,
            victim_addr,
            Tcp::shared(),
            probe.clock.clone(),
        )
    };

    // Trader 7 acknowledges sells and buys, while the market trades around it.
    nodes
        .iter()
        .find(|n| n.id == victim)
        .unwrap()
        .await_trader();
    let before = link(&probe);
    let mut acked = Vec::new();
    for i in 0..12 {
        let side = if i % 3 == 0 { Side::Sell } else { Side::Buy };
        let r = probe.request(&before, side, 1 + i % 4).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        acked.push(r);
    }

    // SIGKILL, then maybe a restart on the same port and data directory.
    let i = nodes.iter().position(|n| n.id == victim).unwrap();
    let mut dead = nodes.remove(i);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    drop(dead);
    if restart {
        // It flushes its journal at once. It does not serve as a trader again:
        // trader 6 declared it dead, and a death is final (see membership.rs).
        let mut reborn = spawn(victim, Some(victim_addr));
        reborn.say(&start);
        nodes.push(reborn);
    }

    // Stop the workload, then the traders (they flush as they stop), then the warehouse.
    for n in nodes.iter_mut().filter(|n| [1, 2, 3, 4].contains(&n.id.0)) {
        n.say(&Line::Stop);
        n.await_done();
    }
    let (warehouse, others): (Vec<Node>, Vec<Node>) =
        nodes.into_iter().partition(|n| n.id.is_warehouse());
    for n in others {
        n.close();
    }
    for n in warehouse {
        n.close();
    }
    probe.write_history(&run.history());

    let store = Store::snapshot(&run.data_of(NodeId::WAREHOUSE)).unwrap();
    let unflushed = read_unflushed(&cfg, &run).unwrap();
    let history = History::read_dir(&run.history()).unwrap();
    let verdicts = check::check(&cfg, &history, &store, &unflushed);
    AfterKill {
        cfg,
        acked,
        store,
        unflushed,
        verdicts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_trader_killed_and_restarted_loses_nothing_it_acknowledged() {
    let k = kill_trader_mid_run(true).await;
    // Everything trader 7 acknowledged before it died is at the warehouse,
    // as acknowledged (shipped + oversold = granted). Its flushing was off,
    // so all of it came through the journal.
    for r in &k.acked {
        let (_, a) = k
            .store
            .applied
            .iter()
            .find(|(id, _)| *id == r.id)
            .unwrap_or_else(|| panic!("{} acknowledged before the kill and lost", r.id));
        assert_eq!((a.side, a.acknowledged()), (r.side, r.granted), "{}", r.id);
    }
    let t7 = k
        .store
        .traders
        .iter()
        .find(|(t, _)| *t == NodeId(7))
        .map(|(_, b)| *b)
        .expect("trader 7 flushed");
    assert!(t7.flushed >= k.acked.len() as u64, "{t7:?}");
    // And the whole run passes the checker, with nothing left unflushed.
    assert!(k.unflushed.is_empty(), "{:?}", k.unflushed);
    assert!(check::all_ok(&k.verdicts), "{:#?}", k.verdicts);
    assert_eq!(k.cfg.market.mode, bazaar::config::Mode::Cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_trader_dead_for_good_leaves_its_queue_counted_not_dropped() {
    let k = kill_trader_mid_run(false).await;
    // What it acknowledged is in its journal, reported as unflushed...
    for r in &k.acked {
        assert!(
            k.unflushed
                .iter()
                .any(|(t, e)| *t == NodeId(7) && e.order.id == r.id && e.granted == r.granted),
            "{} missing from trader 7's journal",
            r.id
        );
        assert!(!k.store.applied.iter().any(|(id, _)| *id == r.id));
    }
    // ...and the checker names it stranded: acknowledged, not at the warehouse.
    let lost = k
        .verdicts
        .iter()
        .find(|v| v.invariant == check::NO_LOST_ACK)
        .unwrap();
    assert!(
        !lost.ok && lost.detail.contains("stranded unflushed in peer7"),
        "{lost:?}"
    );
    // The rest of the books still add up.
    let conserved = k
        .verdicts
        .iter()
        .find(|v| v.invariant == check::CONSERVATION)
        .unwrap();
    assert!(conserved.ok, "{conserved:?}");
}
