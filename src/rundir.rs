//! A run directory: where `bazaar run` (or hand-started `bazaar node
//! --run-dir`) puts a run's config, logs, histories, data and report, and
//! what is read back from it after the run. Shared by the launcher
//! ([`crate::market`]) and the report ([`crate::report`]), below both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Role};
use crate::history::Event;
use crate::membership::Record;
use crate::trader::journal::Journal;
use crate::wire::{FlushEntry, NodeId};

/// The largest `nodes.json` read (one line per node, at most 1000 peers).
pub const MAX_NODES: u64 = 1 << 20;

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
                    point_latest(runs_root, &rd.root);
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
    pub fn html(&self) -> PathBuf {
        self.root.join("report.html")
    }

    /// Writes the launcher's own history (the faults it injected) beside the
    /// nodes' histories.
    pub fn write_launcher_history(&self, records: &[Record]) -> anyhow::Result<()> {
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(&Event::Failover(r.clone()))?);
            text.push('\n');
        }
        let path = self
            .history()
            .join(format!("{}.jsonl", crate::history::LAUNCHER));
        std::fs::write(path, text)?;
        Ok(())
    }
}

/// The name of the link to the newest run directory, beside the run directories.
pub const LATEST: &str = "latest";

/// Points `runs_root/latest` at `run` (relative, so the runs directory can
/// move), replacing the old link in one rename. A failure is a warning: the
/// run itself is fine.
fn point_latest(runs_root: &Path, run: &Path) {
    #[cfg(unix)]
    {
        let Some(name) = run.file_name() else { return };
        let tmp = runs_root.join(format!(".{LATEST}-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let made = std::os::unix::fs::symlink(name, &tmp)
            .and_then(|()| std::fs::rename(&tmp, runs_root.join(LATEST)));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            eprintln!(
                "warning: cannot point {} at the new run: {e}",
                runs_root.join(LATEST).display()
            );
        }
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

/// The nodes of a run directory, as its launcher wrote them.
pub fn read_nodes(run_dir: &Path) -> anyhow::Result<BTreeMap<NodeId, NodeInfo>> {
    let path = run_dir.join("nodes.json");
    let bytes = crate::history::read_bounded(&path, MAX_NODES, "a nodes.json")?;
    let infos: Vec<NodeInfo> = serde_json::from_slice(&bytes)?;
    Ok(infos.into_iter().map(|i| (i.node, i)).collect())
}
