//! The launcher behind `bazaar run`: the whole market on this machine, one
//! child process per node, and the report at the end.
//!
//! Ports without races: every child binds 127.0.0.1:0 itself and reports the
//! port the OS gave it (`ready <addr>` on stdout); once all have, the launcher
//! hands every child the address book (`start <json>` on stdin). `stop` on
//! stdin ends a buyer's or seller's trading (it answers `done` once its history
//! is on disk); closing stdin stops a node. Children run in their own process
//! group (a Ctrl-C reaches only the launcher, which stops them in order) and
//! die with the launcher: its death closes their stdin, and on Linux the kernel
//! also sends them SIGKILL (`PR_SET_PDEATHSIG`).
//!
//! Roles come from the peers' election: each peer prints `traders <ids>`
//! whenever its trader list changes, so the launcher always knows the current
//! traders. At the end it stops every live peer (`stop`, answered `done`).
//!
//! Faults (`[[faults]]`): at its time the launcher picks the victim (a named
//! peer, or a random current trader drawn from the seeded RNG), asks it for
//! its Lamport time (`clock` → `clock <n>`), then SIGKILLs its process (`kill`)
//! or stops its trader worker (`wedge`). Each fault is a `failover` line in
//! `history/launcher.jsonl`.
//!
//! Network faults (`partition`, `delay`, `loss`, each undone by its `heal`):
//! the launcher keeps the set in force and, at each change, hands it to
//! every node (`net <rules>`, for the transport's fault layer,
//! [`crate::net::Faulty`]); in `--netns` mode ([`crate::netns`]) partitions
//! and loss are nftables rules in the nodes' namespaces instead, and only
//! delays go to the fault layer. Each change is a `network` failover line.
//!
//! The door: unless the config sets `[network] key` or `key_file`, the
//! launcher makes a fresh key for the run (`RUN_DIR/key`, mode 0600, named
//! by `key_file` in the run's `config.toml`), so only the run's own nodes
//! can connect to them ([`crate::auth`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Lamport;
use crate::config::{Config, Fault, FaultKind, NetFault, Role, Target};
use crate::history;
pub use crate::rundir::{LATEST, NodeInfo, RunDir, read_nodes, read_unflushed, timestamp};

use crate::launch::Line;
use crate::membership::{Happening, Record};
use crate::net::NetRules;
use crate::netns::Netns;
use crate::node::AddressBook;
use crate::report::{Report, Trading};
use crate::wire::{NodeId, View};

/// How long a child may take to bind and say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped node may take to exit before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fault's victim may take to tell its Lamport time.
const CLOCK_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a fault on "a trader" waits for the first election.
const ELECTION_WAIT: Duration = Duration::from_secs(5);
/// Longer than any run (24 h is the most a config allows).
const FOREVER: Duration = Duration::from_secs(48 * 3600);
/// Lines from children that may wait for the launcher to read them.
const LINES: usize = 4096;

struct Launched {
    node: NodeId,
    role: Role,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// Killed by a fault: not stopped, not waited for.
    killed: bool,
}

impl Launched {
    async fn say(&mut self, line: &Line) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next line the child prints, or why there is none (before its
    /// lines go to [`forward`]).
    async fn hear(&mut self, within: Duration) -> anyhow::Result<String> {
        let stdout = self.stdout.as_mut().context("stdout already forwarded")?;
        match tokio::time::timeout(within, stdout.next_line()).await {
            Err(_) => bail!("{} said nothing for {within:?}", self.node),
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("{} exited early", self.node),
            Ok(Err(e)) => bail!("{}: {e}", self.node),
        }
    }
}

/// Where the launcher runs the nodes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Every node on 127.0.0.1 (no root needed); network faults through the
    /// transport's fault layer.
    #[default]
    Loopback,
    /// Every node in a network namespace of its own (root); partitions and
    /// loss as nftables rules.
    Netns,
}

/// Runs a whole market and returns its report (also written to the run dir).
/// `exe` is the `bazaar` binary that children run.
pub async fn run(
    cfg: &Config,
    runs_root: &Path,
    exe: &Path,
    placement: Placement,
) -> anyhow::Result<Report> {
    if placement == Placement::Netns {
        let needs_nft = cfg
            .faults
            .iter()
            .any(|f| f.partition.is_some() || f.loss.is_some());
        crate::netns::preflight(needs_nft)?;
    }
    // A `key_file` of the user's is read now: a bad one stops the run
    // before anything is made.
    cfg.network.key()?;
    let dir = RunDir::create(runs_root, &cfg.market.name)?;
    let mut cfg = cfg.clone();
    // The nodes read the key from a file only their owner can read, never
    // from the run's config.toml: a fresh one, or the config's `key` moved
    // there.
    if cfg.network.key_file.is_none() {
        let path = std::path::absolute(dir.root.join("key"))?;
        let secret = match cfg.network.key.take() {
            Some(k) => k,
            None => crate::auth::Key::generate()?,
        };
        write_secret(&path, &secret)?;
        cfg.network.key_file = Some(path);
    }
    let cfg = &cfg;
    std::fs::write(dir.config(), cfg.to_toml())?;
    eprintln!("run dir {}", dir.root.display());

    let peers = cfg.roles_of_peers()?;
    let net = match placement {
        Placement::Loopback => None,
        Placement::Netns => {
            let ids: Vec<NodeId> = peers.iter().map(|(n, _)| *n).collect();
            Some(Netns::create(&ids)?)
        }
    };
    let mut nodes = Vec::new();
    for (node, role) in peers {
        let listen = net
            .as_ref()
            .map(|_| SocketAddr::new(crate::netns::address(node), 0));
        nodes.push(spawn(exe, &dir, node, role, listen, net.as_ref())?);
    }
    let pids: Vec<u32> = nodes.iter().filter_map(|n| n.child.id()).collect();
    let interrupt = watch_interrupts(pids);
    let result = drive(cfg, &dir, exe, &mut nodes, &interrupt, net.as_ref()).await;
    // Whatever happened, no child outlives the run. The warehouse stops last,
    // so that cached traders can flush their queues to it as they stop.
    let mut late = Vec::new();
    for last in [false, true] {
        for n in nodes.iter_mut().filter(|n| n.node.is_warehouse() == last) {
            n.stdin.take();
        }
        for n in nodes.iter_mut().filter(|n| n.node.is_warehouse() == last) {
            if tokio::time::timeout(EXIT_TIMEOUT, n.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "{} did not exit within {EXIT_TIMEOUT:?}; killing it",
                    n.node
                );
                late.push(format!(
                    "{} did not exit within {EXIT_TIMEOUT:?} of its stop and was killed",
                    n.node
                ));
                let _ = n.child.kill().await;
            }
        }
    }
    // The namespaces, links and rules go before the report is written.
    drop(net);
    let mut trading = result?;
    trading.degraded.extend(late);

    crate::report::finish(cfg, &dir, &trading)
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    Ok(())
}

/// Starts `node`'s process listening on `listen` (default 127.0.0.1:0), in
/// its namespace if `net`; `again` restarts a killed one on its old address
/// (its log goes on where the first life's ended).
fn spawn(
    exe: &Path,
    dir: &RunDir,
    node: NodeId,
    role: Role,
    listen: Option<SocketAddr>,
    net: Option<&Netns>,
) -> anyhow::Result<Launched> {
    spawn_again(exe, dir, node, role, listen, net, false)
}

fn spawn_again(
    exe: &Path,
    dir: &RunDir,
    node: NodeId,
    role: Role,
    listen: Option<SocketAddr>,
    net: Option<&Netns>,
    again: bool,
) -> anyhow::Result<Launched> {
    let again_at = listen;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(again)
        .write(true)
        .truncate(!again)
        .open(dir.logs().join(format!("{node}.log")))?;
    let mut cmd = match net {
        Some(net) => net.command(node, exe),
        None => Command::new(exe),
    };
    if let Some(addr) = again_at {
        cmd.arg("node").arg("--listen").arg(addr.to_string());
    } else {
        cmd.arg("node");
    }
    cmd.arg("--id")
        .arg(node.0.to_string())
        .arg("--config")
        .arg(dir.config())
        .arg("--run-dir")
        .arg(&dir.root)
        .arg("--launched")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} for {node}", exe.display()))?;
    let stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    Ok(Launched {
        node,
        role,
        child,
        stdin,
        stdout: Some(stdout),
        killed: false,
    })
}

/// Hands every line a child prints to the launcher's one queue.
fn forward(
    node: NodeId,
    mut lines: Lines<BufReader<ChildStdout>>,
    to: mpsc::Sender<(NodeId, String)>,
) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if to.send((node, line)).await.is_err() {
                return;
            }
        }
    });
}

/// The launcher's view of the market while it trades.
struct Watcher {
    lines: mpsc::Receiver<(NodeId, String)>,
    /// The newest view any node reported.
    view: View,
    done: std::collections::BTreeSet<NodeId>,
    clocks: BTreeMap<NodeId, Lamport>,
}

impl Watcher {
    fn take(&mut self, node: NodeId, line: &str) {
        match line.parse::<Line>() {
            Ok(Line::Traders(view)) => {
                if view.epoch > self.view.epoch {
                    self.view = view;
                }
            }
            Ok(Line::Done) => {
                self.done.insert(node);
            }
            Ok(Line::Clock(n)) => {
                self.clocks.insert(node, n);
            }
            _ => tracing::warn!("{node} said {line:?}"),
        }
    }

    /// Reads lines until `until` says stop or `within` passes; false on timeout.
    async fn until(&mut self, within: Duration, mut stop: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !stop(self) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((node, line))) => self.take(node, &line),
                Ok(None) | Err(_) => return stop(self),
            }
        }
        true
    }
}

/// A fault due at a time after the market opened, what undoes it, and its
/// index in the config's (sorted) faults.
type Scheduled = (
    Duration,
    FaultKind,
    Target,
    Option<(FaultKind, Duration)>,
    usize,
);

/// What the launcher needs to start a killed node again.
struct Respawn<'a> {
    exe: &'a Path,
    dir: &'a RunDir,
    book: AddressBook,
    lines: mpsc::Sender<(NodeId, String)>,
    net: Option<&'a Netns>,
}

/// The node a fault on `target` strikes: the peer named, or a random live
/// trader. A fault on "a trader" due before the first election has ended (a
/// loaded machine, a short run) waits for it, a bounded while.
async fn victim_of(
    target: Target,
    nodes: &[Launched],
    watcher: &mut Watcher,
    rng: &mut StdRng,
) -> Option<NodeId> {
    if target == Target::Trader && watcher.view.traders.is_empty() {
        watcher
            .until(ELECTION_WAIT, |w| !w.view.traders.is_empty())
            .await;
    }
    match target {
        Target::Peer(n) => Some(n),
        Target::Trader => live_trader(nodes, watcher, rng),
    }
}

/// A random current trader the launcher knows to be running (seeded).
fn live_trader(nodes: &[Launched], watcher: &Watcher, rng: &mut StdRng) -> Option<NodeId> {
    let live: Vec<NodeId> = watcher
        .view
        .traders
        .iter()
        .copied()
        .filter(|t| nodes.iter().any(|n| n.node == *t && !n.killed))
        .collect();
    (!live.is_empty()).then(|| live[rng.random_range(0..live.len())])
}

/// The network faults in force, by their index in the schedule.
type InForce = BTreeMap<usize, NetFault>;

/// Puts network fault `index` (`fault`, aimed at `target`) in force, or
/// heals it (`kind` = heal), and hands the new set to the nodes (the
/// fault layer) and, in netns mode, to nftables; returns its history line.
#[allow(clippy::too_many_arguments)]
async fn strike_network(
    kind: FaultKind,
    index: usize,
    fault: &Fault,
    target: Target,
    in_force: &mut InForce,
    nodes: &mut [Launched],
    watcher: &mut Watcher,
    rng: &mut StdRng,
    net: Option<&Netns>,
) -> anyhow::Result<Option<Record>> {
    let wall_us = history::wall_us();
    let change = if kind == FaultKind::Heal {
        let Some(change) = in_force.remove(&index) else {
            return Ok(None);
        };
        change
    } else {
        let victim = victim_of(target, nodes, watcher, rng).await;
        let Some(change) = fault.network(victim) else {
            eprintln!("fault {kind:?}: no live trader to strike; skipped");
            return Ok(None);
        };
        in_force.insert(index, change.clone());
        change
    };
    tell_network(in_force, nodes, net).await?;
    eprintln!(
        "fault: {} {change}",
        if kind == FaultKind::Heal {
            "heal"
        } else {
            "network"
        }
    );
    Ok(Some(Record {
        wall_us,
        lamport: None,
        by: None,
        what: Happening::Network {
            fault: kind,
            change,
        },
    }))
}

/// Hands the network faults in force to whoever makes them.
async fn tell_network(
    in_force: &InForce,
    nodes: &mut [Launched],
    net: Option<&Netns>,
) -> anyhow::Result<()> {
    let all: Vec<NetFault> = in_force.values().cloned().collect();
    let layer = match net {
        Some(net) => {
            net.apply(&all)?;
            // nftables cannot delay: the fault layer does.
            all.into_iter()
                .filter(|f| matches!(f, NetFault::Delay { .. }))
                .collect()
        }
        None => all,
    };
    let line = Line::Net(NetRules { faults: layer });
    for n in nodes.iter_mut().filter(|n| !n.killed) {
        if let Err(e) = n.say(&line).await {
            tracing::warn!("cannot tell {} the network faults: {e:#}", n.node);
        }
    }
    Ok(())
}

/// Carries out one fault; returns its history line (whose `victim` an undo
/// of it, a resume or a restart, targets).
async fn strike(
    kind: FaultKind,
    target: Target,
    nodes: &mut [Launched],
    watcher: &mut Watcher,
    rng: &mut StdRng,
    respawn: &Respawn<'_>,
) -> anyhow::Result<Option<Record>> {
    let victim = victim_of(target, nodes, watcher, rng).await;
    let Some(victim) = victim else {
        eprintln!("fault {kind:?}: no live trader to strike; skipped");
        return Ok(None);
    };
    // A restart wants the killed node; every other fault a running one.
    let restart = kind == FaultKind::Restart;
    let Some(i) = nodes
        .iter()
        .position(|n| n.node == victim && n.killed == restart)
    else {
        eprintln!("fault {kind:?}: {victim} is not in a state to take it; skipped");
        return Ok(None);
    };
    // The victim's Lamport time just before the fault (a stopped or dead
    // node cannot say).
    let mut lamport = None;
    if matches!(kind, FaultKind::Kill | FaultKind::Wedge | FaultKind::Pause) {
        watcher.clocks.remove(&victim);
        let _ = nodes[i].say(&Line::AskClock).await;
        watcher
            .until(CLOCK_TIMEOUT, |w| w.clocks.contains_key(&victim))
            .await;
        lamport = watcher.clocks.get(&victim).copied();
    }
    let wall_us = history::wall_us();
    let n = &mut nodes[i];
    let signal = |n: &Launched, sig| -> anyhow::Result<()> {
        let pid = n.child.id().context("the process is gone")?;
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    };
    match kind {
        FaultKind::Kill => {
            n.child.start_kill().context("cannot SIGKILL")?;
            n.killed = true;
            n.stdin.take();
        }
        FaultKind::Wedge => n.say(&Line::Wedge).await?,
        FaultKind::Pause => signal(n, libc::SIGSTOP).context("cannot SIGSTOP")?,
        FaultKind::Resume => signal(n, libc::SIGCONT).context("cannot SIGCONT")?,
        FaultKind::Partition | FaultKind::Delay | FaultKind::Loss | FaultKind::Heal => {
            bail!("{kind:?} is a network fault (see strike_network)")
        }
        FaultKind::Restart => {
            let _ = n.child.wait().await;
            let addr = respawn
                .book
                .get(victim)
                .context("no address to restart on")?;
            let mut again = spawn_again(
                respawn.exe,
                respawn.dir,
                victim,
                n.role,
                Some(addr),
                respawn.net,
                true,
            )?;
            let line = again.hear(READY_TIMEOUT).await?;
            if line.parse::<Line>() != Ok(Line::Ready(addr)) {
                bail!("{victim} restarted and said {line:?} instead of ready {addr}");
            }
            again.say(&Line::Start(respawn.book.clone())).await?;
            if let Some(lines) = again.stdout.take() {
                forward(victim, lines, respawn.lines.clone());
            }
            *n = again;
        }
    }
    eprintln!("fault: {kind:?} {victim}");
    Ok(Some(Record {
        wall_us,
        lamport,
        by: None,
        what: Happening::Fault {
            fault: kind,
            victim,
        },
    }))
}

/// Starts the market, lets it trade (injecting the faults), stops it.
/// Ctrl-C: the first press cancels the returned token (the market stops in
/// order and is reported); a second kills every node at once and exits.
/// SIGTERM is taken as Ctrl-C is.
fn watch_interrupts(pids: Vec<u32>) -> CancellationToken {
    let first = CancellationToken::new();
    let interrupt = first.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        let mut either = async || {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = term.recv() => r.is_some(),
            }
        };
        if !either().await {
            return;
        }
        eprintln!("interrupted: stopping the market (Ctrl-C again to kill it)");
        first.cancel();
        if !either().await {
            return;
        }
        eprintln!("interrupted again: killing every node");
        for pid in pids {
            // SAFETY: kill(2) on our own children's pids; a gone one is ESRCH.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        // No unwinding past this point: the namespaces go now.
        crate::netns::clean_registered();
        std::process::exit(130);
    });
    interrupt
}

async fn drive(
    cfg: &Config,
    dir: &RunDir,
    exe: &Path,
    nodes: &mut [Launched],
    interrupt: &CancellationToken,
    net: Option<&Netns>,
) -> anyhow::Result<Trading> {
    let mut book = AddressBook::default();
    let mut infos = Vec::new();
    for n in nodes.iter_mut() {
        let line = n.hear(READY_TIMEOUT).await.with_context(|| {
            format!(
                "{} did not start; see {}",
                n.node,
                dir.logs().join(format!("{}.log", n.node)).display()
            )
        })?;
        let Ok(Line::Ready(addr)) = line.parse::<Line>() else {
            bail!("{} said {line:?} instead of ready <addr>", n.node);
        };
        book.nodes.insert(n.node, addr);
        infos.push(NodeInfo {
            node: n.node,
            role: n.role,
            pid: n.child.id().unwrap_or_default(),
            addr,
        });
    }
    std::fs::write(
        dir.root.join("nodes.json"),
        serde_json::to_string_pretty(&infos)?,
    )?;
    let (tx, rx) = mpsc::channel(LINES);
    for n in nodes.iter_mut() {
        if let Some(lines) = n.stdout.take() {
            forward(n.node, lines, tx.clone());
        }
    }
    let respawn = Respawn {
        exe,
        dir,
        book: book.clone(),
        lines: tx,
        net,
    };
    let mut watcher = Watcher {
        lines: rx,
        view: View::default(),
        done: Default::default(),
        clocks: BTreeMap::new(),
    };
    let start = Line::Start(book);
    for n in nodes.iter_mut() {
        n.say(&start).await?;
    }
    let began = tokio::time::Instant::now();
    let began_us = history::wall_us();
    eprintln!(
        "market open: {} nodes, trading for {}",
        nodes.len(),
        humantime::format_duration(cfg.market.duration)
    );

    let mut faults = cfg.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut rng = StdRng::seed_from_u64(cfg.market.seed ^ 0xFA17);
    let mut records = Vec::new();
    let mut interrupted = false;
    // The progress line (a terminal only) until trading ends; dropping it clears it.
    let progress = tokio::spawn(crate::report::progress::show(
        dir.history(),
        cfg.market.duration,
        cfg.initial_traders(),
    ));
    // The schedule: each fault at its time, and what undoes it (a resume, a
    // restart) once it has struck, on the same victim.
    let mut schedule: Vec<Scheduled> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (kind, target) = f.action();
            (f.at, kind, target, f.undo(), i)
        })
        .collect();
    let mut in_force = InForce::new();
    while !schedule.is_empty() {
        schedule.sort_by_key(|(at, ..)| std::cmp::Reverse(*at));
        let Some((at, kind, target, undo, index)) = schedule.pop() else {
            break;
        };
        tokio::select! {
            _ = watcher.until(FOREVER, |_| false) => {}
            _ = tokio::time::sleep_until(began + at) => {}
            _ = interrupt.cancelled() => { interrupted = true; break; }
        }
        if faults[index].is_network() {
            let struck = strike_network(
                kind,
                index,
                &faults[index],
                target,
                &mut in_force,
                nodes,
                &mut watcher,
                &mut rng,
                net,
            )
            .await?;
            if let (Some(_), Some((undo, after))) = (&struck, undo) {
                schedule.push((at + after, undo, target, None, index));
            }
            records.extend(struck);
            continue;
        }
        let struck = strike(kind, target, nodes, &mut watcher, &mut rng, &respawn).await?;
        if kind == FaultKind::Restart && !in_force.is_empty() {
            // The restarted node starts with no faults: tell it those in force.
            tell_network(&in_force, nodes, net).await?;
        }
        if let (Some(r), Some((undo, after))) = (&struck, undo)
            && let Happening::Fault { victim, .. } = r.what
        {
            schedule.push((at + after, undo, Target::Peer(victim), None, index));
        }
        records.extend(struck);
    }
    // A node still paused (an interrupted run) is let go, so it can stop.
    for r in &records {
        if let Happening::Fault {
            fault: FaultKind::Pause,
            victim,
        } = r.what
            && let Some(n) = nodes.iter().find(|n| n.node == victim && !n.killed)
            && let Some(pid) = n.child.id()
        {
            // SAFETY: kill(2) on our own child's pid; a running one ignores it.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGCONT);
            }
        }
    }
    drop(respawn);
    dir.write_launcher_history(&records)?;
    if !interrupted {
        tokio::select! {
            _ = watcher.until(FOREVER, |_| false) => {}
            _ = tokio::time::sleep_until(began + cfg.market.duration) => {}
            _ = interrupt.cancelled() => interrupted = true,
        }
    }
    // Network faults without a heal last until trading ends: healed now,
    // so the stop (a cached trader's last flush) crosses a whole network.
    for change in std::mem::take(&mut in_force).into_values() {
        records.push(Record {
            wall_us: history::wall_us(),
            lamport: None,
            by: None,
            what: Happening::Network {
                fault: FaultKind::Heal,
                change,
            },
        });
    }
    if records
        .iter()
        .any(|r| matches!(r.what, Happening::Network { .. }))
    {
        tell_network(&in_force, nodes, net).await?;
        dir.write_launcher_history(&records)?;
    }
    progress.abort();
    let _ = progress.await; // the line is cleared before anything else prints

    let stopped_us = history::wall_us();
    // Stop every live peer at once, then wait for each one's history. A node
    // that died on its own, or does not finish in time, is reported and the
    // run goes on to its report: that run is the one worth reading.
    let mut degraded = Vec::new();
    for n in nodes.iter_mut().filter(|n| !n.killed) {
        if let Ok(Some(status)) = n.child.try_wait() {
            let why = format!(
                "{} exited on its own while the market traded ({status}; see logs/{}.log)",
                n.node, n.node
            );
            eprintln!("warning: {why}");
            degraded.push(why);
        }
    }
    let mut live: Vec<NodeId> = Vec::new();
    for n in nodes
        .iter_mut()
        .filter(|n| !n.node.is_warehouse() && !n.killed)
    {
        match n.say(&Line::Stop).await {
            Ok(()) => live.push(n.node),
            Err(e) => eprintln!("warning: {} is gone (it died on its own?): {e:#}", n.node),
        }
    }
    let wait = cfg.market.request_timeout + EXIT_TIMEOUT;
    let all_done = watcher
        .until(wait, |w| live.iter().all(|n| w.done.contains(n)))
        .await;
    if !all_done {
        let missing: Vec<String> = live
            .iter()
            .filter(|n| !watcher.done.contains(n))
            .map(|n| n.to_string())
            .collect();
        let why = format!(
            "{} did not finish within {wait:?} of the stop",
            missing.join(", ")
        );
        eprintln!("warning: {why}; stopping it anyway");
        degraded.push(why);
    }
    Ok(Trading {
        began_us,
        elapsed: began.elapsed(),
        stopped_us,
        final_traders: watcher.view.traders.clone(),
        interrupted,
        degraded,
    })
}
