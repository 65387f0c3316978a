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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::{Config, Role};
use crate::node::AddressBook;
use crate::report::Report;
use crate::wire::NodeId;

/// How long a child may take to bind and say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped node may take to exit before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The directories of one run.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Makes `runs_root/<timestamp>-<name>/` (with a suffix if taken).
    pub fn create(runs_root: &Path, name: &str) -> anyhow::Result<RunDir> {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "")
            .replace('T', "-")
            .trim_end_matches('Z')
            .to_string();
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
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Launched {
    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next line the child prints, or why there is none.
    async fn hear(&mut self, within: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(within, self.stdout.next_line()).await {
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
    let result = drive(cfg, &dir, &mut nodes).await;
    // Whatever happened, no child outlives the run.
    for n in &mut nodes {
        n.stdin.take();
    }
    for n in &mut nodes {
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
    let trading = result?;

    let report = crate::report::finish(cfg, &dir, trading)?;
    Ok(report)
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
        stdout,
    })
}

/// Starts the market, lets it trade, stops it; returns how long it traded.
async fn drive(cfg: &Config, dir: &RunDir, nodes: &mut [Launched]) -> anyhow::Result<Duration> {
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
    let start = format!("start {}", serde_json::to_string(&book)?);
    for n in nodes.iter_mut() {
        n.say(&start).await?;
    }
    let began = tokio::time::Instant::now();
    eprintln!(
        "market open: {} nodes, trading for {}",
        nodes.len(),
        humantime::format_duration(cfg.market.duration)
    );

    tokio::select! {
        _ = tokio::time::sleep(cfg.market.duration) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping the market"),
        _ = crate::report::progress::show(dir.history(), cfg.market.duration, cfg.initial_traders()) => {}
    }

    // Stop every buyer and seller at once, then wait for each one's history.
    let is_trading = |n: &Launched| matches!(n.role, Role::Buyer | Role::Seller);
    for n in nodes.iter_mut().filter(|n| is_trading(n)) {
        n.say("stop").await?;
    }
    let wait = cfg.market.request_timeout + EXIT_TIMEOUT;
    for n in nodes.iter_mut().filter(|n| is_trading(n)) {
        let line = n.hear(wait).await?;
        if line != "done" {
            bail!("{} said {line:?} instead of done", n.node);
        }
    }
    Ok(began.elapsed())
}

/// The nodes of a run directory, as its launcher wrote them.
pub fn read_nodes(run_dir: &Path) -> anyhow::Result<BTreeMap<NodeId, NodeInfo>> {
    let text = std::fs::read_to_string(run_dir.join("nodes.json"))?;
    let infos: Vec<NodeInfo> = serde_json::from_str(&text)?;
    Ok(infos.into_iter().map(|i| (i.node, i)).collect())
}
