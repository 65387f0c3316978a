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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Lamport;
use crate::config::{Config, FaultKind, Role, Target};
use crate::history::{self, Event};
use crate::membership::{Happening, Record};
use crate::node::AddressBook;
use crate::report::{Report, Trading};
use crate::trader::journal::Journal;
use crate::wire::{FlushEntry, NodeId};

/// How long a child may take to bind and say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped node may take to exit before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fault's victim may take to tell its Lamport time.
const CLOCK_TIMEOUT: Duration = Duration::from_millis(200);
/// Longer than any run (24 h is the most a config allows).
const FOREVER: Duration = Duration::from_secs(48 * 3600);
/// Lines from children that may wait for the launcher to read them.
const LINES: usize = 4096;

/// The directories of one run.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Makes `runs_root/<timestamp>-<name>/` (with a suffix if taken).
    pub fn create(runs_root: &Path, name: &str) -> anyhow::Result<RunDir> {
        let stamp = timestamp();
        for n in 0..1000 {
            let dir = match n {
                0 => runs_root.join(format!("{stamp}-{name}")),
                n => runs_root.join(format!("{stamp}-{name}-{n}")),
            };
            std::fs::create_dir_all(runs_root)
                .with_context(|| format!("cannot create {}", runs_root.display()))?;
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let rd = RunDir { root: dir };
                    for sub in [rd.logs(), rd.history(), rd.root.join("data")] {
                        std::fs::create_dir_all(&sub)?;
                    }
                    return Ok(rd);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", dir.display()));
                }
            }
        }
        bail!(
            "too many runs named {name} this second in {}",
            runs_root.display()
        )
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn history(&self) -> PathBuf {
        self.root.join("history")
    }
    pub fn data_of(&self, node: NodeId) -> PathBuf {
        self.root.join("data").join(node.to_string())
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
}

/// Now as the run directories name it: `20261125-035153` (UTC).
pub fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string()
}

/// One launched node, as written to `nodes.json` in the run directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: NodeId,
    pub role: Role,
    pub pid: u32,
    pub addr: SocketAddr,
}

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
    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
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

/// Runs a whole market and returns its report (also written to the run dir).
/// `exe` is the `bazaar` binary that children run.
pub async fn run(cfg: &Config, runs_root: &Path, exe: &Path) -> anyhow::Result<Report> {
    let dir = RunDir::create(runs_root, &cfg.market.name)?;
    std::fs::write(dir.config(), cfg.to_toml())?;
    eprintln!("run dir {}", dir.root.display());

    let mut nodes = Vec::new();
    for (node, role) in cfg.roles_of_peers()? {
        nodes.push(spawn(exe, &dir, node, role)?);
    }
    let pids: Vec<u32> = nodes.iter().filter_map(|n| n.child.id()).collect();
    let interrupt = watch_interrupts(pids);
    let result = drive(cfg, &dir, &mut nodes, &interrupt).await;
    // Whatever happened, no child outlives the run. The warehouse stops last,
    // so that cached traders can flush their queues to it as they stop.
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
                let _ = n.child.kill().await;
            }
        }
    }
    let trading = result?;

    crate::report::finish(cfg, &dir, &trading)
}

/// What cached traders left in their journals, unflushed, when they stopped
/// (a trader that died for good, or could not reach the warehouse as it
/// stopped). Read after every node has exited.
pub fn read_unflushed(cfg: &Config, dir: &RunDir) -> anyhow::Result<Vec<(NodeId, FlushEntry)>> {
    let mut out = Vec::new();
    for node in (1..=cfg.market.peers).map(NodeId) {
        let entries = Journal::read(&dir.data_of(node))
            .with_context(|| format!("cannot read {node}'s journal"))?;
        out.extend(entries.into_iter().map(|(_, e)| (node, e)));
    }
    Ok(out)
}

fn spawn(exe: &Path, dir: &RunDir, node: NodeId, role: Role) -> anyhow::Result<Launched> {
    let log = std::fs::File::create(dir.logs().join(format!("{node}.log")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node")
        .arg("--id")
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
    traders: Vec<NodeId>,
    done: std::collections::BTreeSet<NodeId>,
    clocks: BTreeMap<NodeId, Lamport>,
}

impl Watcher {
    fn take(&mut self, node: NodeId, line: &str) {
        if let Some(ids) = line.strip_prefix("traders ") {
            let ids: Vec<NodeId> = ids
                .split(',')
                .filter_map(|i| i.trim().parse().ok().map(NodeId))
                .collect();
            self.traders = ids;
        } else if line == "done" {
            self.done.insert(node);
        } else if let Some(n) = line.strip_prefix("clock ").and_then(|n| n.parse().ok()) {
            self.clocks.insert(node, Lamport(n));
        } else {
            tracing::warn!("{node} said {line:?}");
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

/// Carries out one fault; returns its history line.
async fn strike(
    kind: FaultKind,
    target: Target,
    nodes: &mut [Launched],
    watcher: &mut Watcher,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Record>> {
    let victim = match target {
        Target::Peer(n) => Some(n),
        Target::Trader => {
            let live: Vec<NodeId> = watcher
                .traders
                .iter()
                .copied()
                .filter(|t| nodes.iter().any(|n| n.node == *t && !n.killed))
                .collect();
            (!live.is_empty()).then(|| live[rng.random_range(0..live.len())])
        }
    };
    let Some(victim) = victim else {
        eprintln!("fault {kind:?}: no live trader to strike; skipped");
        return Ok(None);
    };
    let Some(n) = nodes.iter_mut().find(|n| n.node == victim && !n.killed) else {
        eprintln!("fault {kind:?}: {victim} is not running; skipped");
        return Ok(None);
    };
    watcher.clocks.remove(&victim);
    let _ = n.say("clock").await;
    watcher
        .until(CLOCK_TIMEOUT, |w| w.clocks.contains_key(&victim))
        .await;
    let lamport = watcher.clocks.get(&victim).copied();
    let wall_us = history::wall_us();
    match kind {
        FaultKind::Kill => {
            n.child.start_kill().context("cannot SIGKILL")?;
            n.killed = true;
            n.stdin.take();
        }
        FaultKind::Wedge => n.say("wedge").await?,
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

/// Appends the launcher's own history lines (faults).
fn write_launcher_history(dir: &RunDir, records: &[Record]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(&Event::Failover(r.clone()))?);
        text.push('\n');
    }
    std::fs::write(dir.history().join("launcher.jsonl"), text)?;
    Ok(())
}

/// Starts the market, lets it trade (injecting the faults), stops it.
/// Ctrl-C: the first press cancels the returned token (the market stops in
/// order and is reported); a second kills every node at once and exits.
fn watch_interrupts(pids: Vec<u32>) -> CancellationToken {
    let first = CancellationToken::new();
    let interrupt = first.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("interrupted: stopping the market (Ctrl-C again to kill it)");
        first.cancel();
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("interrupted again: killing every node");
        for pid in pids {
            // SAFETY: kill(2) on our own children's pids; a gone one is ESRCH.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        std::process::exit(130);
    });
    interrupt
}

async fn drive(
    cfg: &Config,
    dir: &RunDir,
    nodes: &mut [Launched],
    interrupt: &CancellationToken,
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
        let addr: SocketAddr = line
            .strip_prefix("ready ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{} said {line:?} instead of ready <addr>", n.node))?;
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
    drop(tx);
    let mut watcher = Watcher {
        lines: rx,
        traders: Vec::new(),
        done: Default::default(),
        clocks: BTreeMap::new(),
    };
    let start = format!("start {}", serde_json::to_string(&book)?);
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
    for f in &faults {
        let at = began + f.at;
        tokio::select! {
            _ = watcher.until(FOREVER, |_| false) => {}
            _ = tokio::time::sleep_until(at) => {}
            _ = interrupt.cancelled() => { interrupted = true; break; }
        }
        let (kind, target) = f.action();
        records.extend(strike(kind, target, nodes, &mut watcher, &mut rng).await?);
    }
    write_launcher_history(dir, &records)?;
    if !interrupted {
        tokio::select! {
            _ = watcher.until(FOREVER, |_| false) => {}
            _ = tokio::time::sleep_until(began + cfg.market.duration) => {}
            _ = interrupt.cancelled() => {}
        }
    }
    progress.abort();
    let _ = progress.await; // the line is cleared before anything else prints

    // Stop every live peer at once, then wait for each one's history. A node
    // that died on its own, or does not finish in time, is reported and the
    // run goes on to its report: that run is the one worth reading.
    let mut live: Vec<NodeId> = Vec::new();
    for n in nodes
        .iter_mut()
        .filter(|n| !n.node.is_warehouse() && !n.killed)
    {
        match n.say("stop").await {
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
        eprintln!(
            "warning: {} did not finish within {wait:?} of the stop; stopping it anyway",
            missing.join(", ")
        );
    }
    Ok(Trading {
        began_us,
        elapsed: began.elapsed(),
        final_traders: watcher.traders.clone(),
    })
}

/// The nodes of a run directory, as its launcher wrote them.
pub fn read_nodes(run_dir: &Path) -> anyhow::Result<BTreeMap<NodeId, NodeInfo>> {
    let text = std::fs::read_to_string(run_dir.join("nodes.json"))?;
    let infos: Vec<NodeInfo> = serde_json::from_str(&text)?;
    Ok(infos.into_iter().map(|i| (i.node, i)).collect())
}
