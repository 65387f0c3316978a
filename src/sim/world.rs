//! One simulated run: every node of the market as a turmoil host running
//! the same code as `bazaar node` ([`crate::role::run`]), on turmoil's
//! network and clock behind the transport seam, with the nemesis striking
//! from outside the hosts between simulation steps.
//!
//! How each fault is made:
//! - kill: the host crashes (its tasks are dropped, its durable files stay);
//!   restart: the host is started again on the same data directory;
//! - pause: every link of the node is held (nothing it sends leaves, nothing
//!   sent to it arrives) and released after, so the world sees what it sees
//!   of a paused process: silence, then everything at once. turmoil cannot
//!   stop one host's clock, so the node's own timers run on while it is held;
//! - partition: the links between the node and the group are cut (messages
//!   on them are lost; new connections are refused) and repaired after;
//! - delay: the node's links get a fixed latency plus a random jitter;
//! - loss: the node's links fail at random and come back at random while
//!   the fault lasts (turmoil's message loss), and are repaired after;
//! - late start: the host waits before it binds its port.
//!
//! A run ends as `bazaar run` ends one: once every client has traded for the
//! market's duration (or a deadline passed), every fault still in force is
//! undone (in cached mode a trader killed for good is started once more on
//! its data directory, as an operator recovers a dead machine's disk, so the
//! requests it acknowledged from its journal reach the warehouse as it
//! stops), the peers are stopped in order (cached traders flush as they
//! stop), then the warehouse. Histories get simulated wall times (from a
//! fixed epoch) so that a seed replays byte for byte.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FaultKind, Mode, Role};
use crate::history;
use crate::membership::{Happening, Record};
use crate::net::{BoxFuture, BoxStream, Listener, Transport};
use crate::node::{AddressBook, IoMode, NodeContext, ServeOptions};
use crate::rundir::{NodeInfo, RunDir};
use crate::sim::nemesis::{Fault, Schedule, What};
use crate::wire::NodeId;

/// Every node listens on this port of its own simulated host.
const PORT: u16 = 7000;
/// The simulated wall clock starts at 2026-01-01T00:00:00Z, whenever the
/// run is made.
const EPOCH: Duration = Duration::from_secs(1_767_225_600);
/// turmoil's default link latency (0..=100 ms, exponentially distributed),
/// named so a delay fault can put it back.
const MIN_LATENCY: Duration = Duration::ZERO;
const MAX_LATENCY: Duration = Duration::from_millis(100);
/// A loss fault's links come back at random with this chance per message.
const REPAIR_RATE: f64 = 0.3;
/// After the last client's trading time, how long the market may take to
/// open, settle and stop before the run counts as hung.
const STOP_ALLOWANCE: Duration = Duration::from_secs(60);
/// How long past its trading time a client may take to say it is done
/// (a request in flight, the market opening late) before it is stopped.
const DONE_ALLOWANCE: Duration = Duration::from_secs(8);

/// turmoil's network behind bazaar's transport seam.
struct Simulated;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (s, a) = self.0.accept().await?;
            Ok((Box::new(s) as BoxStream, a))
        })
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Transport for Simulated {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let l = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(l)) as Box<dyn Listener>)
        })
    }
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<BoxStream>> {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// The host name of a node.
fn host(node: NodeId) -> String {
    node.to_string()
}

/// The simulated wall clock, µs since the Unix epoch (for histories).
fn wall_us() -> u64 {
    let since = turmoil::since_epoch().unwrap_or(EPOCH);
    since.as_micros() as u64
}

/// How a run went, beside its run directory.
#[derive(Clone, Debug, Default)]
pub struct Ran {
    /// Wall µs (simulated) when the hosts started and when the stop began.
    pub began_us: u64,
    pub stopped_us: u64,
    /// The faults as they struck and were undone (also written to the run
    /// directory's launcher history).
    pub records: Vec<Record>,
}

/// What the nemesis does next: strike a fault, or undo it.
#[derive(Clone, Debug)]
enum Step {
    Strike(Fault),
    Undo(Fault),
}

/// Runs the market `cfg` under `schedule` with turmoil seeded by `seed`,
/// into `dir` (config, nodes, histories, data). Errs if the simulation
/// itself failed: a node's code returned an error, or the market did not
/// stop within the allowance (a hang).
pub fn run(seed: u64, cfg: &Config, schedule: &Schedule, dir: &RunDir) -> Result<Ran, String> {
    let _clock = history::simulated_wall_clock(wall_us);
    for d in [dir.history(), dir.logs(), dir.root.join("data")] {
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(dir.config(), cfg.to_toml()).map_err(|e| e.to_string())?;
    let trading_ends = schedule.last_start() + cfg.market.duration;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + EPOCH)
        .min_message_latency(MIN_LATENCY)
        .max_message_latency(MAX_LATENCY)
        .repair_rate(REPAIR_RATE)
        .simulation_duration(trading_ends + DONE_ALLOWANCE + STOP_ALLOWANCE)
        .build();
    let roles = cfg.roles_of_peers().map_err(|e| e.to_string())?;
    let clients = roles
        .iter()
        .filter(|(_, r)| matches!(r, Role::Buyer | Role::Seller))
        .count() as u32;
    let nodes: Vec<NodeId> = roles.iter().map(|(n, _)| *n).collect();

    let done = Arc::new(Semaphore::new(0));
    let peers_stopped = Arc::new(Semaphore::new(0));
    let warehouse_stopped = Arc::new(Semaphore::new(0));
    let stop_peers = CancellationToken::new();
    let stop_warehouse = CancellationToken::new();
    for &(me, role) in &roles {
        let cfg = Arc::new(cfg.clone());
        let (dir, nodes) = (dir.clone(), nodes.clone());
        let (done, stopped) = if me.is_warehouse() {
            (None, warehouse_stopped.clone())
        } else {
            (Some(done.clone()), peers_stopped.clone())
        };
        let stop_all = if me.is_warehouse() {
            stop_warehouse.clone()
        } else {
            stop_peers.clone()
        };
        let late = schedule.start_of(me);
        let lives = Rc::new(Cell::new(0u32));
        sim.host(host(me), move || {
            let (cfg, dir, nodes) = (cfg.clone(), dir.clone(), nodes.clone());
            let (done, stopped, stop_all) = (done.clone(), stopped.clone(), stop_all.clone());
            // Only the first life starts late; a restart is at once.
            let wait = if lives.get() == 0 {
                late
            } else {
                Duration::ZERO
            };
            lives.set(lives.get() + 1);
            async move {
                tokio::time::sleep(wait).await;
                let book = AddressBook {
                    nodes: nodes
                        .iter()
                        .map(|&n| (n, SocketAddr::new(turmoil::lookup(host(n)), PORT)))
                        .collect(),
                };
                let transport: Arc<dyn Transport> = Arc::new(Simulated);
                let listener = transport
                    .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT))
                    .await?;
                let mut ctx = NodeContext::new(
                    me,
                    role,
                    cfg.clone(),
                    book,
                    transport,
                    IoMode::Inline,
                    dir.data_of(me),
                    dir.history(),
                )
                .map_err(|e| e.to_string())?;
                // A client trades for the market's duration from when the
                // market opened for it, however late it started.
                ctx.trade_for = Some(cfg.market.duration);
                let stop_work = stop_all.child_token();
                crate::role::run(
                    ctx,
                    listener,
                    ServeOptions::default(),
                    stop_work,
                    stop_all,
                    move || {
                        if let Some(done) = done {
                            done.add_permits(1);
                        }
                    },
                )
                .await
                .map_err(|e| format!("{me}: {e:#}"))?;
                stopped.add_permits(1);
                Ok(())
            }
        });
    }
    write_nodes(dir, &sim, &roles)?;

    // The conductor: waits for the clients, has the nemesis undo what is in
    // force, and stops the market in order.
    let stopping = Rc::new(Cell::new(false));
    // Set (and told to the conductor) once the nemesis has undone its faults.
    let healed = Rc::new(Cell::new(false));
    let healed_told = Rc::new(tokio::sync::Notify::new());
    let killed_for_good = Rc::new(Cell::new(0u32));
    let peers = roles.len() as u32 - 1;
    {
        let (stopping, healed, killed) = (
            stopping.clone(),
            healed_told.clone(),
            killed_for_good.clone(),
        );
        sim.client("conductor", async move {
            let deadline = trading_ends + DONE_ALLOWANCE;
            tokio::select! {
                _ = done.acquire_many(clients) => {}
                _ = tokio::time::sleep(deadline) => {}
            }
            stopping.set(true);
            // A permit stored if the nemesis was quicker than this wait.
            healed.notified().await;
            stop_peers.cancel();
            let _ = peers_stopped.acquire_many(peers - killed.get()).await;
            stop_warehouse.cancel();
            let _ = warehouse_stopped.acquire_many(1).await;
            Ok(())
        });
    }

    let mut steps: Vec<(Duration, Step)> = Vec::new();
    for f in &schedule.faults {
        steps.push((f.at, Step::Strike(f.clone())));
        if !matches!(f.what, What::Kill(_)) {
            steps.push((f.at + f.lasting, Step::Undo(f.clone())));
        }
    }
    steps.sort_by_key(|(at, _)| *at);
    steps.reverse(); // popped from the back, earliest first
    let mut in_force: Vec<Fault> = Vec::new();
    let mut dead: Vec<NodeId> = Vec::new();
    let mut ran = Ran {
        began_us: (EPOCH + sim.elapsed()).as_micros() as u64,
        ..Ran::default()
    };
    loop {
        if stopping.get() && !healed.get() {
            for f in std::mem::take(&mut in_force) {
                ran.records.extend(undo(&mut sim, &f, &nodes));
            }
            // A cached trader killed for good acknowledged requests it has
            // only in its journal: its disk is recovered, as an operator
            // recovers a dead machine's, by starting it once more to hand
            // the journal over as it stops.
            if cfg.market.mode == Mode::Cached {
                for n in std::mem::take(&mut dead) {
                    sim.bounce(host(n));
                    ran.records.push(record(&sim, FaultKind::Restart, n));
                    killed_for_good.set(killed_for_good.get() - 1);
                }
            }
            steps.clear();
            ran.stopped_us = (EPOCH + sim.elapsed()).as_micros() as u64;
            healed.set(true);
            healed_told.notify_one();
        }
        while steps.last().is_some_and(|(at, _)| *at <= sim.elapsed()) {
            let Some((_, step)) = steps.pop() else { break };
            match step {
                Step::Strike(f) => {
                    ran.records.extend(strike(&mut sim, &f, &nodes));
                    match f.what {
                        What::Kill(n) => {
                            dead.push(n);
                            killed_for_good.set(killed_for_good.get() + 1);
                        }
                        _ => in_force.push(f),
                    }
                }
                Step::Undo(f) => {
                    in_force.retain(|g| *g != f);
                    ran.records.extend(undo(&mut sim, &f, &nodes));
                }
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                dir.write_launcher_history(&ran.records)
                    .map_err(|e| e.to_string())?;
                return Err(format!("the simulation failed: {e}"));
            }
        }
    }
    dir.write_launcher_history(&ran.records)
        .map_err(|e| e.to_string())?;
    Ok(ran)
}

/// Writes `nodes.json` as the launcher does (simulated addresses, no pids).
fn write_nodes(dir: &RunDir, sim: &turmoil::Sim, roles: &[(NodeId, Role)]) -> Result<(), String> {
    let infos: Vec<NodeInfo> = roles
        .iter()
        .map(|&(node, role)| NodeInfo {
            node,
            role,
            pid: 0,
            addr: SocketAddr::new(sim.lookup(host(node)), PORT),
        })
        .collect();
    let text = serde_json::to_string_pretty(&infos).map_err(|e| e.to_string())?;
    std::fs::write(dir.root.join("nodes.json"), text).map_err(|e| e.to_string())
}

/// The record of fault `fault` on `victim`, stamped with simulated time.
fn record(sim: &turmoil::Sim, fault: FaultKind, victim: NodeId) -> Record {
    Record {
        wall_us: sim.since_epoch().as_micros() as u64,
        lamport: None,
        by: None,
        what: Happening::Fault { fault, victim },
    }
}

/// Every other node's host (the links a pause, delay or loss acts on).
fn others(nodes: &[NodeId], me: NodeId) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| **n != me)
        .map(|n| host(*n))
        .collect()
}

/// Strikes `f`; returns its record.
fn strike(sim: &mut turmoil::Sim, f: &Fault, nodes: &[NodeId]) -> Vec<Record> {
    let victim = f.what.victim();
    let me = host(victim);
    let kind = match &f.what {
        What::Kill(_) | What::Restart(_) => {
            sim.crash(me);
            FaultKind::Kill
        }
        What::Pause(_) => {
            for o in others(nodes, victim) {
                sim.hold(me.as_str(), o);
            }
            FaultKind::Pause
        }
        What::Partition { from, .. } => {
            for o in from {
                sim.partition(me.as_str(), host(*o));
            }
            FaultKind::Partition
        }
        What::Delay {
            delay_ms,
            jitter_ms,
            ..
        } => {
            let delay = Duration::from_millis(*delay_ms);
            for o in others(nodes, victim) {
                sim.set_link_latency(me.as_str(), o.as_str(), delay);
                let most = delay + Duration::from_millis(*jitter_ms);
                sim.set_link_max_message_latency(me.as_str(), o, most);
            }
            FaultKind::Delay
        }
        What::Loss { percent, .. } => {
            for o in others(nodes, victim) {
                sim.set_link_fail_rate(me.as_str(), o, f64::from(*percent) / 100.0);
            }
            FaultKind::Loss
        }
    };
    vec![record(sim, kind, victim)]
}

/// Undoes `f`; returns the record of the undoing.
fn undo(sim: &mut turmoil::Sim, f: &Fault, nodes: &[NodeId]) -> Vec<Record> {
    let victim = f.what.victim();
    let me = host(victim);
    let kind = match &f.what {
        What::Kill(_) => return Vec::new(),
        What::Restart(_) => {
            sim.bounce(me);
            FaultKind::Restart
        }
        What::Pause(_) => {
            for o in others(nodes, victim) {
                sim.release(me.as_str(), o);
            }
            FaultKind::Resume
        }
        What::Partition { from, .. } => {
            for o in from {
                sim.repair(me.as_str(), host(*o));
            }
            FaultKind::Heal
        }
        What::Delay { .. } => {
            for o in others(nodes, victim) {
                sim.set_link_latency(me.as_str(), o.as_str(), MIN_LATENCY);
                sim.set_link_max_message_latency(me.as_str(), o, MAX_LATENCY);
            }
            FaultKind::Heal
        }
        What::Loss { .. } => {
            for o in others(nodes, victim) {
                sim.set_link_fail_rate(me.as_str(), o.as_str(), 0.0);
                sim.repair(me.as_str(), o);
            }
            FaultKind::Heal
        }
    };
    vec![record(sim, kind, victim)]
}
