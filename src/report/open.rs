//! Opening a run directory to judge it again (`bazaar check`, `bazaar report`):
//! what is missing, what is still running and what is too big to be a run's
//! is said plainly, as a [`RunDirError`], before anything is judged. Every
//! file read from the directory is bounded ([`crate::history::read_bounded`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Report, Trading};
use crate::config::{Config, ConfigError};
use crate::history::read_bounded;
use crate::rundir::{MAX_NODES, NodeInfo, RunDir};

/// The largest config file read (a config with every field set is 3 KiB).
pub const MAX_CONFIG: u64 = 1 << 20;
/// The largest `report.json` read back (it lists every oversold buy).
pub const MAX_REPORT: u64 = 256 << 20;

/// A run directory that cannot be judged: missing, not a run directory,
/// still running, or unreadable. The command line exits with 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunDirError(pub String);

/// Loads a config file, bounded; a bad one is a [`ConfigError`].
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let bytes = read_bounded(path, MAX_CONFIG, "a config file")
        .map_err(|e| ConfigError(format!("{e:#}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError(format!("{} is not UTF-8 text", path.display())))?;
    Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
}

/// A run directory opened for judging: its config, how its trading went, and
/// the run directory its report names (kept as it was when rebuilt).
pub struct Opened {
    pub cfg: Config,
    pub dir: RunDir,
    pub trading: Trading,
    pub named: PathBuf,
}

/// Opens `root` as a finished run directory.
pub fn open(root: &Path) -> Result<Opened, RunDirError> {
    let bad = |why: String| Err(RunDirError(why));
    let shown = root.display();
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return bad(format!(
                "no run directory at {shown} (`bazaar run` makes them under runs/; runs/latest is the newest)"
            ));
        }
        Err(e) => return bad(format!("cannot read {shown}: {e}")),
        Ok(m) if !m.is_dir() => return bad(format!("{shown} is not a directory")),
        Ok(_) => {}
    }
    let dir = RunDir {
        root: root.to_path_buf(),
    };
    if !dir.config().exists() {
        return bad(format!(
            "{shown} is not a run directory: it has no config.toml (a run directory is what `bazaar run` makes under runs/)"
        ));
    }
    let cfg = load_config(&dir.config()).map_err(|e| RunDirError(e.0))?;
    let previous = if dir.report().exists() {
        let bytes = read_bounded(&dir.report(), MAX_REPORT, "a report.json")
            .map_err(|e| RunDirError(format!("{e:#}")))?;
        // An old or damaged report only loses what it recorded of the trading.
        serde_json::from_slice::<Report>(&bytes).ok()
    } else {
        if let Some((node, pid)) = running_node(&dir)? {
            return bad(format!(
                "the run in {shown} is still in progress ({node} is running as pid {pid}): judge it once `bazaar run` has finished"
            ));
        }
        // `bazaar node --run-dir` (a hand-started market) writes histories
        // and no nodes.json; a launcher that stopped early writes neither.
        let has_history = std::fs::read_dir(dir.history())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !dir.root.join("nodes.json").exists() && !has_history {
            return bad(format!(
                "the run in {shown} never started trading (no nodes.json): its launcher stopped before every node was ready; see {}",
                dir.logs().display()
            ));
        }
        None
    };
    let trading = previous.as_ref().map_or_else(
        || Trading {
            elapsed: cfg.market.duration,
            ..Trading::default()
        },
        |r| Trading {
            elapsed: Duration::from_secs_f64(r.duration_s.max(0.0)),
            began_us: r.began_us,
            stopped_us: r.stopped_us,
            final_traders: r.failover.final_traders.clone(),
            interrupted: r.interrupted,
            degraded: r.degraded.clone(),
        },
    );
    Ok(Opened {
        named: previous.map_or_else(|| root.to_path_buf(), |r| r.run_dir),
        cfg,
        dir,
        trading,
    })
}

/// A node of the run whose process still runs `bazaar`, if any.
fn running_node(dir: &RunDir) -> Result<Option<(String, u32)>, RunDirError> {
    let path = dir.root.join("nodes.json");
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_bounded(&path, MAX_NODES, "a nodes.json")
        .map_err(|e| RunDirError(format!("{e:#}")))?;
    let nodes: Vec<NodeInfo> = serde_json::from_slice(&bytes)
        .map_err(|e| RunDirError(format!("{}: {e}", path.display())))?;
    Ok(nodes
        .into_iter()
        .find(|n| runs_bazaar(n.pid))
        .map(|n| (n.node.to_string(), n.pid)))
}

/// Whether process `pid` exists and runs bazaar (a pid is reused once its
/// process is gone, so the command line is checked too).
fn runs_bazaar(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("bazaar"),
        // No /proc (not Linux): whether the process exists at all.
        Err(_) if !Path::new("/proc/self").exists() => {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(root: &Path) -> String {
        match open(root) {
            Ok(_) => panic!("{} opened", root.display()),
            Err(e) => e.0,
        }
    }

    #[test]
    fn a_missing_or_foreign_directory_is_named_plainly() {
        let tmp = tempfile::tempdir().unwrap();
        let e = err(&tmp.path().join("nope"));
        assert!(e.starts_with("no run directory at"), "{e}");
        let e = err(tmp.path());
        assert!(e.contains("is not a run directory"), "{e}");
    }

    #[test]
    fn a_run_whose_node_still_runs_is_in_progress() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.toml"), "").unwrap();
        let e = err(tmp.path());
        assert!(e.contains("never started trading"), "{e}");
        // This test's own process runs a binary named after bazaar.
        let me = NodeInfo {
            node: crate::wire::NodeId(3),
            role: crate::config::Role::Buyer,
            pid: std::process::id(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        std::fs::write(
            tmp.path().join("nodes.json"),
            serde_json::to_string(&[me]).unwrap(),
        )
        .unwrap();
        let e = err(tmp.path());
        assert!(
            e.contains("still in progress (peer3 is running as pid"),
            "{e}"
        );
    }

    #[test]
    fn a_config_too_big_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.toml");
        std::fs::write(&path, vec![b'#'; MAX_CONFIG as usize + 1]).unwrap();
        let e = load_config(&path).unwrap_err().0;
        assert!(
            e.contains("over the 1048576-byte limit for a config file"),
            "{e}"
        );
    }
}
