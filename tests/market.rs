//! Whole markets through `bazaar run`: real processes on loopback, read back
//! through report.json and the run directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Runs `bazaar run` with `config` in a fresh runs dir; returns exit code, stdout, stderr.
fn run_market(dir: &Path, config: &str, extra: &[&str]) -> (i32, String, String) {
    let cfg = write_config(dir, config);
    let out = std::process::Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .args(extra)
        .output()
        .expect("run bazaar");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `report.json` as raw JSON: these tests also pin its field names.
fn report(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
}

fn assert_checks_pass(r: &Value) {
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{} failed: {}", c["invariant"], c["detail"]);
    }
}

#[test]
fn a_strong_market_ships_never_oversells_and_conserves_stock() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        run_market(dir.path(), "[market]\nduration = \"2s\"\nseed = 7\n", &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Oversell 0 times!"), "{stdout}");
    let run = the_run(&dir.path().join("runs"));
    let r = report(&run);
    assert_checks_pass(&r);
    assert!(r["shipped"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["oversells"], 0);
    assert_eq!(r["conserved"], true);
    assert_eq!(r["mode"], "strong");
    assert_eq!(r["requests"]["buy"]["failed"], 0, "{r}");
    // The run directory holds the config used, every node's log and history.
    assert!(run.join("config.toml").is_file());
    let logs = std::fs::read_dir(run.join("logs")).unwrap().count();
    assert_eq!(logs, 7, "a log per node (warehouse + 6 peers)");
    for peer in 1..=4 {
        assert!(run.join(format!("history/peer{peer}.jsonl")).is_file());
    }
    // `bazaar check` agrees.
    common::assert_check_passes(&run);
}

#[test]
fn buyers_asking_more_than_the_stock_are_answered_and_nothing_is_oversold() {
    // Only buyers, 3 items in all: nearly every buy is larger than the stock.
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_market(
        dir.path(),
        "[market]\nduration = \"1s\"\n[[products]]\nname = \"salt\"\nstock = 3\n[roles]\nbuyers = 4\nsellers = 0\n",
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = report(&the_run(&dir.path().join("runs")));
    assert_checks_pass(&r);
    assert_eq!(r["shipped"], 3);
    assert_eq!(r["products"][0]["final_stock"], 0);
    assert!(r["products"][0]["refused"].as_u64().unwrap() > 0);
    assert!(r["requests"]["buy"]["ok"].as_u64().unwrap() > 4, "{r}");
    assert_eq!(r["requests"]["buy"]["failed"], 0, "no buyer blocked");
}

#[test]
fn a_bad_config_is_a_clear_error_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_market(dir.path(), "[market]\ntraders = 9\n", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("traders = 9 but 6 peers"), "{stderr}");
    let (code, _, stderr) = run_market(dir.path(), "", &["--mode", "eventual"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("[possible values: strong, cached, escrow]"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("runs").exists(),
        "no run directory for a bad config"
    );
}

/// Waits until process `pid` has exited, for at most `TIMEOUT`.
fn wait_exit(pid: u32) -> bool {
    // SAFETY: plain syscalls on a pid and the fd they return.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as libc::c_int;
        if fd < 0 {
            return true; // already gone
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = libc::poll(&mut p, 1, TIMEOUT.as_millis() as libc::c_int);
        libc::close(fd);
        ready == 1
    }
}

#[tokio::test]
async fn killing_the_launcher_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[market]\nduration = \"60s\"\n");
    let mut launcher = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--runs-dir")
        .arg(dir.path().join("runs"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(launcher.stderr.take().unwrap()).lines();
    let mut run_dir = None;
    while let Some(line) = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("launcher progress")
        .unwrap()
    {
        if let Some(d) = line.strip_prefix("run dir ") {
            run_dir = Some(PathBuf::from(d));
        }
        if line.starts_with("market open") {
            break;
        }
    }
    let nodes = bazaar::market::read_nodes(&run_dir.expect("run dir printed")).unwrap();
    assert_eq!(nodes.len(), 7);
    launcher.kill().await.unwrap(); // SIGKILL: no chance to clean up
    launcher.wait().await.unwrap();
    for (node, info) in nodes {
        assert!(
            wait_exit(info.pid),
            "{node} (pid {}) outlived its launcher",
            info.pid
        );
    }
}
