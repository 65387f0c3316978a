//! The in-process launcher behind `bazaar run --in-process` (and `bazaar
//! bench --in-process`): the whole market in this one process, every node a
//! task tree of its own.
//!
//! **Thread per core.** The nodes are dealt out over one single-thread
//! runtime per core ([`Shards`]), each on a thread of its own, rather than
//! run on one work-stealing runtime: a node's tasks, its sockets and its
//! timers then stay on one thread, and a message between two of its tasks
//! wakes nobody else. Measured with `bazaar bench --quick --in-process` on
//! 2 cores, two runs each: strong did 20,671–23,267 requests/s before and
//! 32,765–33,213 after at 32 clients, with CPU per request at 128 clients
//! 45–50 µs before and 40–41 µs after (see the README's performance
//! section). Each node binds its listener on its own runtime, so its
//! connections are driven by that runtime's reactor.
//!
//! The node code is the very code `bazaar node` runs ([`crate::role::run`]),
//! on the same transport seam and the real network: every node binds its own
//! listener on `127.0.0.1:0` through [`Tcp`] and the nodes talk over loopback
//! TCP, frames and hellos included. Real sockets rather than an in-memory
//! transport, so that a market measured in-process pays what a market of
//! processes pays per message (the kernel's loopback, the frame codec) and the
//! two can be compared; what it saves is a process, a runtime and a copy of
//! every static thing per node. The run directory, the histories, the checker
//! and the report are those of [`crate::market::run`].
//!
//! The stop is the launcher's: once `duration` has passed, every buyer and
//! seller stops trading and writes its history, then the peers stop (cached
//! traders flush as they stop), then the warehouse. Logs go to this process's
//! stderr (`BAZAAR_LOG`), not to one file per node.
//!
//! With `--memory` ([`Network::Memory`]) the nodes talk over in-memory
//! pipes instead, behind the same seam: a connection holds no file
//! descriptor, so a market of 1,000 peers (about 40,000 descriptors on
//! loopback, both ends of every connection being in this process) runs
//! where the open-file limit is 20,000.
//!
//! Faults: a `wedge` is carried out (the victim's trader worker stops, its
//! socket lives on). A `kill`, a `pause` and a restart are refused before the
//! market starts: the tasks of one node cannot be SIGKILLed, SIGSTOPped or
//! restarted apart from the others' in one process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FaultKind, Role, Target};
use crate::history;
use crate::membership::{Happening, Membership, Record};
use crate::net::{Memory, Tcp, Transport};
use crate::node::{AddressBook, IoMode, NodeContext, ServeOptions};
use crate::report::{Report, Trading};
use crate::rundir::{NodeInfo, RunDir};
use crate::wire::{NodeId, View};

/// How long a stopped node may take to finish before the run goes on without it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's task tree, as the in-process launcher holds it.
struct Running {
    node: NodeId,
    /// Its view of the traders (to pick a fault's victim, and the final list).
    traders: Arc<Membership>,
    wedge: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Refuses, before anything starts, the faults one process cannot inject.
pub fn refuse_faults(cfg: &Config) -> anyhow::Result<()> {
    for (i, f) in cfg.faults.iter().enumerate() {
        let (kind, _) = f.action();
        if kind != FaultKind::Wedge {
            bail!(crate::config::ConfigError(format!(
                "[[faults]] #{i}: {kind:?} cannot be injected in-process (one process cannot SIGKILL, SIGSTOP or restart one node's tasks apart from the others'); run without --in-process, or use wedge = ..."
            )));
        }
    }
    Ok(())
}

/// About how many file descriptors a market of `cfg` holds open in one
/// process, where both ends of every connection count: a listener and a
/// history file per node; each peer's links to the warehouse; each client's
/// to every trader (it picks one at random per request, as the document's
/// do); and each trader's to every peer (messages 1 and 8 go to all).
pub fn descriptors_needed(cfg: &Config) -> u64 {
    let peers = u64::from(cfg.market.peers);
    let traders = u64::from(cfg.market.traders);
    let clients = peers.saturating_sub(traders);
    let ends = 2;
    (peers + 1) * 2 + peers * 2 * ends + clients * traders * ends + traders * peers * ends + 1024
}

/// Raises this process's limit on open files to what a market of `cfg`
/// needs ([`descriptors_needed`]): the soft limit up to the hard one, and
/// the hard one too where the process may (root). Warns, with the command
/// that fixes it, where it cannot: the market runs, and connections beyond
/// the limit are refused ("Too many open files").
pub fn make_room_for(cfg: &Config) {
    use rlimit::Resource;
    let need = descriptors_needed(cfg);
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return;
    };
    if soft >= need {
        return;
    }
    // Raising the hard limit needs the privilege; the soft one up to the
    // hard one does not.
    if Resource::NOFILE.set(need, hard.max(need)).is_err() {
        let _ = Resource::NOFILE.set(need.min(hard), hard);
    }
    let now = Resource::NOFILE.get().map_or(soft, |(now, _)| now);
    if now < need {
        eprintln!(
            "warning: a market of {} peers in one process needs about {need} open files, and this \
             process may open {now}: connections beyond that are refused. Run it with --memory \
             (in-memory pipes, no descriptors), or raise the hard limit where you may (`ulimit -Hn \
             {need}` as root, outside a container that caps it)",
            cfg.market.peers
        );
    }
}

/// What the nodes of an in-process market talk over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// Real loopback TCP: a message costs what it costs between processes.
    #[default]
    Loopback,
    /// In-memory pipes ([`Memory`]): no file descriptor per connection, for
    /// markets larger than the process's open-file limit allows.
    Memory,
}

/// Runs a whole market in this process and returns its report (also
/// written to the run directory under `runs_root`).
pub async fn run(cfg: &Config, runs_root: &Path, network: Network) -> anyhow::Result<Report> {
    refuse_faults(cfg)?;
    let transport: Arc<dyn Transport> = match network {
        Network::Loopback => {
            make_room_for(cfg);
            Tcp::shared()
        }
        Network::Memory => Memory::shared(),
    };
    let dir = RunDir::create(runs_root, &cfg.market.name)?;
    std::fs::write(dir.config(), cfg.to_toml())?;
    eprintln!("run dir {} (in-process)", dir.root.display());

    // Every node binds first, on the runtime it will run on; the address
    // book is then complete before any node starts (no port races, as with
    // the launcher's `ready` lines).
    let shards = Shards::start(std::thread::available_parallelism().map_or(1, |n| n.get()))?;
    let roles = cfg.roles_of_peers()?;
    let mut listeners = Vec::with_capacity(roles.len());
    let mut book = AddressBook::default();
    let mut infos = Vec::with_capacity(roles.len());
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    for (i, &(node, role)) in roles.iter().enumerate() {
        let t = transport.clone();
        let l = shards
            .of(i)
            .spawn(async move { t.bind(any).await })
            .await?
            .with_context(|| format!("{node} cannot listen on {any}"))?;
        let addr = l.local_addr()?;
        book.nodes.insert(node, addr);
        infos.push(NodeInfo {
            node,
            role,
            pid: std::process::id(),
            addr,
        });
        listeners.push(l);
    }
    std::fs::write(
        dir.root.join("nodes.json"),
        serde_json::to_string_pretty(&infos)?,
    )?;

    let cfg_arc = Arc::new(cfg.clone());
    let stop_work = CancellationToken::new();
    let stop_peers = CancellationToken::new();
    let stop_warehouse = CancellationToken::new();
    let done = Arc::new(Semaphore::new(0));
    let mut nodes = Vec::with_capacity(roles.len());
    let mut trading = 0u32;
    for (i, (&(me, role), listener)) in roles.iter().zip(listeners).enumerate() {
        let ctx = NodeContext::new(
            me,
            role,
            cfg_arc.clone(),
            book.clone(),
            transport.clone(),
            IoMode::Threaded,
            dir.data_of(me),
            dir.history(),
        )?;
        let stop_all = if me.is_warehouse() {
            stop_warehouse.clone()
        } else {
            stop_peers.clone()
        };
        let trades = matches!(role, Role::Buyer | Role::Seller);
        trading += u32::from(trades);
        let on_done = {
            let done = done.clone();
            move || {
                if trades {
                    done.add_permits(1);
                }
            }
        };
        let (traders, wedge) = (ctx.traders.clone(), ctx.wedge.clone());
        let task = shards.of(i).spawn(crate::role::run(
            ctx,
            listener,
            ServeOptions::default(),
            stop_work.child_token(),
            stop_all,
            on_done,
        ));
        nodes.push(Running {
            node: me,
            traders,
            wedge,
            task,
        });
    }
    let began = tokio::time::Instant::now();
    let began_us = history::wall_us();
    eprintln!(
        "market open: {} nodes in this process, trading for {}",
        nodes.len(),
        humantime::format_duration(cfg.market.duration)
    );
    let progress = tokio::spawn(crate::report::progress::show(
        dir.history(),
        cfg.market.duration,
        cfg.initial_traders(),
    ));

    let interrupt = CancellationToken::new();
    {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping the market");
                interrupt.cancel();
            }
        });
    }
    let mut interrupted = false;
    let mut records = Vec::new();
    let mut faults = cfg.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut rng = StdRng::seed_from_u64(cfg.market.seed ^ 0xFA17);
    for f in &faults {
        tokio::select! {
            _ = tokio::time::sleep_until(began + f.at) => {}
            _ = interrupt.cancelled() => { interrupted = true; break; }
        }
        let (kind, target) = f.action();
        if let Some(r) = wedge(kind, target, &nodes, &mut rng) {
            records.push(r);
        }
    }
    dir.write_launcher_history(&records)?;
    if !interrupted {
        tokio::select! {
            _ = tokio::time::sleep_until(began + cfg.market.duration) => {}
            _ = interrupt.cancelled() => interrupted = true,
        }
    }
    progress.abort();
    let _ = progress.await;

    let stopped_us = history::wall_us();
    let mut degraded = Vec::new();
    for n in nodes.iter().filter(|n| n.task.is_finished()) {
        let why = format!("{} stopped on its own while the market traded", n.node);
        eprintln!("warning: {why}");
        degraded.push(why);
    }
    // Buyers and sellers stop and write their histories; then the peers
    // stop (cached traders flush as they stop), then the warehouse.
    stop_work.cancel();
    let wait = cfg.market.request_timeout + EXIT_TIMEOUT;
    if tokio::time::timeout(wait, done.acquire_many(trading))
        .await
        .is_err()
    {
        let why = format!("some buyer or seller did not finish within {wait:?} of the stop");
        eprintln!("warning: {why}; stopping it anyway");
        degraded.push(why);
    }
    let final_traders = newest_view(&nodes).traders;
    stop_peers.cancel();
    let (warehouse, peers): (Vec<Running>, Vec<Running>) =
        nodes.into_iter().partition(|n| n.node.is_warehouse());
    for group in [peers, warehouse] {
        if group.iter().any(|n| n.node.is_warehouse()) {
            stop_warehouse.cancel();
        }
        for n in group {
            let node = n.node;
            let abort = n.task.abort_handle();
            match tokio::time::timeout(EXIT_TIMEOUT + cfg.market.request_timeout, n.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => degraded.push(format!("{node} failed: {e:#}")),
                Ok(Err(e)) => degraded.push(format!("{node} panicked or was cancelled: {e}")),
                Err(_) => {
                    abort.abort();
                    degraded.push(format!("{node} did not stop in time and was aborted"));
                }
            }
        }
    }
    let trading = Trading {
        began_us,
        elapsed: began.elapsed(),
        stopped_us,
        final_traders,
        interrupted,
        degraded,
    };
    crate::report::finish(cfg, &dir, &trading)
}

/// The runtimes an in-process market's nodes run on: one single-thread
/// runtime per core, each driven by a thread of its own until the shards
/// are dropped.
struct Shards {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: CancellationToken,
}

impl Shards {
    /// How long a shard's runtime waits, as it shuts down, for disk work
    /// still running on its blocking threads.
    const SHUTDOWN: Duration = Duration::from_secs(1);

    fn start(count: usize) -> anyhow::Result<Shards> {
        let done = CancellationToken::new();
        let mut shards = Shards {
            handles: Vec::new(),
            threads: Vec::new(),
            done: done.clone(),
        };
        for i in 0..count.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a runtime for the nodes")?;
            shards.handles.push(rt.handle().clone());
            let done = done.clone();
            let thread = std::thread::Builder::new()
                .name(format!("shard{i}"))
                .spawn(move || {
                    rt.block_on(done.cancelled());
                    rt.shutdown_timeout(Self::SHUTDOWN);
                })
                .context("cannot start a thread for the nodes")?;
            shards.threads.push(thread);
        }
        Ok(shards)
    }

    /// The runtime of the `i`th node.
    fn of(&self, i: usize) -> &tokio::runtime::Handle {
        &self.handles[i % self.handles.len()]
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.done.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The newest view any node holds.
fn newest_view(nodes: &[Running]) -> View {
    nodes
        .iter()
        .map(|n| n.traders.view())
        .max_by_key(|v| v.epoch)
        .unwrap_or_default()
}

/// Carries out a wedge (the one fault [`refuse_faults`] lets through).
fn wedge(kind: FaultKind, target: Target, nodes: &[Running], rng: &mut StdRng) -> Option<Record> {
    let victim = match target {
        Target::Peer(n) => n,
        Target::Trader => {
            let live = newest_view(nodes).traders;
            if live.is_empty() {
                eprintln!("fault {kind:?}: no trader to strike; skipped");
                return None;
            }
            live[rng.random_range(0..live.len())]
        }
    };
    let n = nodes.iter().find(|n| n.node == victim)?;
    n.wedge.cancel();
    eprintln!("fault: {kind:?} {victim}");
    Some(Record {
        wall_us: history::wall_us(),
        lamport: None,
        by: None,
        what: Happening::Fault {
            fault: kind,
            victim,
        },
    })
}
