//! `bazaar bench`: the market against the physical limit, measured in one
//! invocation.
//!
//! **The baseline.** A one-hop echo over bazaar's own transport, hello,
//! frame codec, connection machinery ([`crate::node::serve`] on one side,
//! [`crate::link::Link`] on the other) and nothing else: `C` clients, each
//! with its own connection and request ids, send a buy (message 6) and the
//! echo answers it at once. The server runs on a thread and a single-thread
//! runtime of its own, the clients on another, so that the two of them can
//! use two cores as a market's processes can.
//!
//! **The disk.** The other baseline: a small write and its `fdatasync`,
//! back to back, in the runs directory ([`Disk`]), which every durable
//! answer waits for at least once.
//!
//! **The market.** A real market in each mode, run by [`crate::market::run`]
//! (one process per node) or [`crate::inprocess::run`] (`--in-process`):
//! two traders and `C` buyers, each buyer one client in a closed loop (no
//! pause, one request in flight), against one product whose stock never runs
//! out (every buy is a full grant: the costly path). The numbers are read
//! back from the run's histories, so they are what the clients saw; the
//! checker judges every run as it judges any other.
//!
//! **Half load.** Each mode again at about half its saturating rate: `C`
//! sellers, each depositing on a fixed period (`[workload.seller] interval`),
//! and the echo paced to the same rate. Its p99 is set against the echo's
//! p99 at that rate.
//!
//! **What is reported**, per run: requests/s and its ratio to the echo's;
//! p50, p99 and p99.9 latency (hdrhistogram); CPU time per answered request
//! at each kind of node (warehouse, the traders together, the clients
//! together; in-process, the whole process, then the share of the threads
//! that carry the market: runtimes, ledger, syncs). Everything is taken over the
//! steady part of a run: the first second (a fifth of a short run) and the
//! last half second are left out. CPU is sampled every [`SAMPLE_EVERY`] from
//! `/proc` (Linux; elsewhere the CPU columns are empty).
//!
//! The machine's other load makes absolute numbers noisy; the ratios to the
//! echo, measured in the same invocation, are what to compare.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, Mode, Role};
use crate::history::{History, Outcome};
use crate::link::Link;
use crate::net::{BoxFuture, Tcp, Transport};
use crate::node::{Handler, ServeOptions};
use crate::trace::Message;
use crate::wire::{Body, NodeId, Order, ProductId, Qty, RequestId};

/// How often CPU time is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The longest latency told apart (µs); longer ones count as this.
const LATENCY_MAX_US: u64 = 60_000_000;
/// The echo's deadline per call: far above any latency it has.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// Ramp-up left out at the start of a measured run (at most).
const WARM: Duration = Duration::from_secs(1);
/// Wind-down left out at the end of a measured run (at most).
const COOL: Duration = Duration::from_millis(500);
/// The traders of every benched market.
const TRADERS: u32 = 2;

/// How much each run measures.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Load {
    /// Each run trades this long.
    Duration(#[serde(with = "humantime_serde_secs")] Duration),
    /// Each run measures at least this many answered requests: the echo
    /// stops at once; a market trades for as long as this many take at a
    /// quarter of the echo's rate (at least 2 s, at most 60 s).
    Requests(u64),
}

mod humantime_serde_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// What `bazaar bench` was asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub modes: Vec<Mode>,
    pub clients: u32,
    pub load: Load,
    pub in_process: bool,
    /// Skip the half-load runs (`--quick` keeps them, shorter).
    pub half_load: bool,
    /// Where the markets' run directories go (a fresh temporary one by default).
    pub runs_dir: PathBuf,
    /// The `bazaar` binary whose processes a market runs.
    pub exe: PathBuf,
}

impl Plan {
    /// `--quick`: 2 s runs, for CI (the whole bench in under a minute).
    pub const QUICK: Duration = Duration::from_secs(2);
    /// The default length of each run.
    pub const DEFAULT: Duration = Duration::from_secs(10);
}

/// One measured run, as the clients saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Answered requests in the steady window.
    pub requests: u64,
    /// Requests that failed or were refused in the steady window.
    pub failed: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU µs per answered request, by kind of node (`warehouse`, `traders`,
    /// `clients`; in-process the whole `process`, and within it `runtimes`,
    /// `ledger` and `syncs`; `server`, `clients` for the echo).
    pub cpu_us_per_request: BTreeMap<String, f64>,
    /// Where a request's time went, hop by hop, from the message trace:
    /// the median µs of each segment ([`hops`]); empty for the echo.
    #[serde(default)]
    pub hops_p50_us: Vec<(String, f64)>,
}

/// One mode's runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeResult {
    pub mode: Mode,
    pub saturated: Measure,
    /// Saturated requests/s over the echo's.
    pub ratio: f64,
    /// Every invariant held in the saturated run (and the half-load one).
    pub checks_ok: bool,
    pub half: Option<Half>,
    pub run_dirs: Vec<PathBuf>,
}

/// A mode at about half its saturating load, and the echo at the same rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Half {
    /// The rate asked for: half the saturated requests/s.
    pub target_per_s: f64,
    pub market: Measure,
    pub echo: Measure,
    /// The market's p99 over the echo's.
    pub p99_ratio: f64,
}

/// What a `bazaar bench` found (`--json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub command: String,
    pub clients: u32,
    pub load: Load,
    pub in_process: bool,
    pub cpus: usize,
    /// The machine's 1-minute load average as the bench began.
    pub load_avg: Option<f64>,
    pub echo: Measure,
    /// The disk's baseline, measured before the markets (absent from the
    /// JSON of a bench older than it).
    #[serde(default)]
    pub disk: Option<Disk>,
    pub modes: Vec<ModeResult>,
}

/// The disk's baseline: a small write and its `fdatasync`, back to back, in
/// the runs directory (the file system the markets' stores and journals are
/// on). Every durable answer waits for at least one: the warehouse's commit
/// in strong mode, the trader's journal in cached mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub syncs: u64,
    pub syncs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Syncs the disk's baseline takes for short runs (`--quick`): about 50 ms
/// on a quiet disk, enough for a p99.
const DISK_SYNCS_QUICK: u64 = 300;
/// Syncs it takes otherwise, for a p99.9.
const DISK_SYNCS: u64 = 1_000;
/// The longest the baseline may take, whatever the disk.
const DISK_TIME: Duration = Duration::from_secs(5);
/// What the baseline writes before each sync: about one step of a cached
/// trader's journal, over zeros laid down first as the journal lays them
/// ([`crate::trader::journal::PREALLOCATE`] of them).
const DISK_RECORD: usize = 256;

/// The targets, as ratios to the echo.
pub const STRONG_TARGET: f64 = 0.35;
pub const CACHED_TARGET: f64 = 0.7;
pub const HALF_P99_TARGET: f64 = 5.0;

/// Runs the bench.
pub async fn run(plan: &Plan, command: String) -> anyhow::Result<Results> {
    if plan.clients == 0 || plan.clients > crate::config::MAX_PEERS - TRADERS {
        bail!(crate::config::ConfigError(format!(
            "--clients {} (need 1..={})",
            plan.clients,
            crate::config::MAX_PEERS - TRADERS
        )));
    }
    let load_avg = load_avg();
    eprintln!("echo: {} clients, saturated", plan.clients);
    let echo = echo(plan.clients, plan.load, None).await?;
    let syncs = match plan.load {
        Load::Duration(d) if d <= Plan::QUICK => DISK_SYNCS_QUICK,
        _ => DISK_SYNCS,
    };
    eprintln!(
        "disk: {syncs} writes and fdatasyncs in {}",
        plan.runs_dir.display()
    );
    let dir = plan.runs_dir.clone();
    // Only a baseline: the markets are measured without it.
    let disk = match tokio::task::spawn_blocking(move || disk(&dir, syncs, DISK_TIME)).await? {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("disk: not measured: {e}");
            None
        }
    };
    let mut modes = Vec::new();
    for &mode in &plan.modes {
        let duration = match plan.load {
            Load::Duration(d) => d,
            Load::Requests(n) => market_time(n, echo.requests_per_s),
        };
        eprintln!("{mode}: {} buyers, saturated", plan.clients);
        let cfg = saturating(mode, plan.clients, duration)?;
        let (saturated, ok, dir) = market(plan, &cfg).await?;
        let mut checks_ok = ok;
        let mut run_dirs = vec![dir];
        let half = if plan.half_load && saturated.requests_per_s > 0.0 {
            let target = saturated.requests_per_s / 2.0;
            eprintln!("{mode}: {} sellers at {target:.0} requests/s", plan.clients);
            let period = period_for(plan.clients, target);
            let cfg = paced(mode, plan.clients, period, duration)?;
            let (market, ok, dir) = market(plan, &cfg).await?;
            checks_ok &= ok;
            run_dirs.push(dir);
            eprintln!("echo: {} clients at {target:.0} requests/s", plan.clients);
            let echo = echo_paced(plan.clients, duration, period).await?;
            let p99_ratio = ratio(market.p99_ms, echo.p99_ms);
            Some(Half {
                target_per_s: target,
                market,
                echo,
                p99_ratio,
            })
        } else {
            None
        };
        modes.push(ModeResult {
            mode,
            ratio: ratio(saturated.requests_per_s, echo.requests_per_s),
            saturated,
            checks_ok,
            half,
            run_dirs,
        });
    }
    Ok(Results {
        command,
        clients: plan.clients,
        load: plan.load,
        in_process: plan.in_process,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_avg,
        echo,
        disk,
        modes,
    })
}

/// Writes [`DISK_RECORD`] bytes and `fdatasync`s them, `syncs` times in a
/// row (fewer if `max_time` runs out), in a file of its own in `dir`,
/// removed after, whatever happened.
fn disk(dir: &Path, syncs: u64, max_time: Duration) -> std::io::Result<Disk> {
    /// Removes the probe's file when dropped.
    struct Probe(PathBuf);
    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    std::fs::create_dir_all(dir)?;
    let probe = Probe(dir.join(format!("bench-disk-{}", std::process::id())));
    // Truncated if a killed bench left it: nothing in it is kept.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&probe.0)?;
    syncs_of(&file, syncs, max_time)
}

fn syncs_of(f: &std::fs::File, syncs: u64, max_time: Duration) -> std::io::Result<Disk> {
    use crate::trader::journal::PREALLOCATE;
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0; PREALLOCATE as usize], 0)?;
    f.sync_all()?;
    let record = [b'r'; DISK_RECORD];
    let mut h = latencies();
    let began = Instant::now();
    let mut at = 0;
    while h.len() < syncs && began.elapsed() < max_time {
        let t = Instant::now();
        f.write_all_at(&record, at)?;
        f.sync_data()?;
        h.saturating_record((t.elapsed().as_micros() as u64).max(1));
        at = (at + DISK_RECORD as u64) % PREALLOCATE;
    }
    let seconds = began.elapsed().as_secs_f64();
    let ms = |q: f64| ms_at(&h, q);
    Ok(Disk {
        syncs: h.len(),
        syncs_per_s: h.len() as f64 / seconds.max(1e-9),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    })
}

/// A histogram of latencies in µs, as every latency of the bench is kept.
fn latencies() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds")
}

/// Quantile `q` of `h` (µs), in ms.
fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// How long a market trades to answer `n` requests at a quarter of the echo's rate.
fn market_time(n: u64, echo_per_s: f64) -> Duration {
    let secs = n as f64 / (echo_per_s / 4.0).max(1.0);
    Duration::from_secs_f64(secs.clamp(2.0, 60.0)) + WARM + COOL
}

/// Each client's period for `clients` to make `per_s` requests a second
/// (at least 1 ms, the config's shortest seller interval).
fn period_for(clients: u32, per_s: f64) -> Duration {
    Duration::from_secs_f64(f64::from(clients) / per_s.max(1.0)).max(Duration::from_millis(1))
}

/// A market of two traders and `clients` buyers that never pause, against
/// a stock that never runs out.
pub fn saturating(mode: Mode, clients: u32, duration: Duration) -> anyhow::Result<Config> {
    market_config(mode, clients, duration, Role::Buyer, Duration::ZERO)
}

/// A market of two traders and `clients` sellers, each depositing every `period`.
pub fn paced(
    mode: Mode,
    clients: u32,
    period: Duration,
    duration: Duration,
) -> anyhow::Result<Config> {
    market_config(mode, clients, duration, Role::Seller, period)
}

fn market_config(
    mode: Mode,
    clients: u32,
    duration: Duration,
    role: Role,
    period: Duration,
) -> anyhow::Result<Config> {
    let (buyers, sellers) = match role {
        Role::Buyer => (clients, 0),
        _ => (0, clients),
    };
    let toml = format!(
        "[market]\nname = \"bench-{mode}\"\npeers = {peers}\ntraders = {TRADERS}\nmode = \"{mode}\"\n\
         duration = \"{ms}ms\"\n\n[[products]]\nname = \"salt\"\nstock = {stock}\n\n\
         [roles]\nbuyers = {buyers}\nsellers = {sellers}\n\n\
         [workload.buyer]\nmax_quantity = 5\npause = \"0ms\"\n\n\
         [workload.seller]\nquantity = 1\ninterval = \"{period_us}us\"\n",
        peers = clients + TRADERS,
        ms = duration.as_millis(),
        stock = crate::config::MAX_STOCK,
        period_us = period.as_micros().max(1000),
    );
    let cfg = Config::from_toml(&toml)?;
    cfg.validate()?;
    Ok(cfg)
}

/// Runs one market and measures it from its histories: the measure,
/// whether every invariant held, and its run directory.
async fn market(plan: &Plan, cfg: &Config) -> anyhow::Result<(Measure, bool, PathBuf)> {
    // Each market in a directory of its own, so the sampler finds its nodes.
    let root = plan.runs_dir.join(format!(
        "{}-{}",
        cfg.market.name,
        crate::rundir::timestamp()
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample(root.clone(), plan.in_process, stop.clone()));
    let report = if plan.in_process {
        crate::inprocess::run(cfg, &root, crate::inprocess::Network::Loopback).await
    } else {
        crate::market::run(cfg, &root, &plan.exe, crate::market::Placement::Loopback).await
    };
    stop.cancel();
    let samples = sampler.await.unwrap_or_default();
    let report = report?;
    let ok = report.status() == crate::report::Status::Ok;
    if !ok {
        eprintln!(
            "warning: {} did not hold every invariant; see {}",
            cfg.market.name,
            report.run_dir.display()
        );
    }
    let history = History::read_dir(&report.run_dir.join("history"))?;
    let m = measure_history(&history, &samples);
    Ok((m, ok, report.run_dir))
}

/// CPU time by kind of node, sampled over a run.
#[derive(Clone, Debug, Default)]
struct Samples {
    /// Wall time (µs since the epoch), then CPU µs by kind so far: by
    /// process, or in-process by thread as `kind#tid` ([`threads_cpu_us`]).
    rows: Vec<(u64, BTreeMap<String, u64>)>,
}

impl Samples {
    /// CPU µs by kind between the first sample at or after `from` and the
    /// last at or before `to`, with those samples' times.
    fn between(&self, from: u64, to: u64) -> Option<(u64, u64, BTreeMap<String, u64>)> {
        let a = self.rows.iter().find(|(t, _)| *t >= from)?;
        let b = self.rows.iter().rev().find(|(t, _)| *t <= to)?;
        if b.0 <= a.0 {
            return None;
        }
        // Thread by thread, then summed by kind: a thread that starts within
        // the window adds all it ran, and one that ends within it takes
        // nothing away from the others.
        let mut used = BTreeMap::new();
        for (k, v) in &b.1 {
            let kind = k.split_once('#').map_or(k.as_str(), |(kind, _)| kind);
            *used.entry(kind.to_string()).or_default() +=
                v.saturating_sub(*a.1.get(k).unwrap_or(&0));
        }
        Some((a.0, b.0, used))
    }
}

/// Samples the CPU time of a market's nodes until `stop`: in-process, this
/// process's; else each node's process, found in `nodes.json` under `root`.
async fn sample(root: PathBuf, in_process: bool, stop: CancellationToken) -> Samples {
    let mut samples = Samples::default();
    let mut nodes: Option<Vec<(u32, String)>> = None;
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return samples,
        }
        let now = crate::history::wall_us();
        if in_process {
            if let Some(cpu) = self_cpu_us() {
                let mut row = threads_cpu_us();
                row.insert(PROCESS.to_string(), cpu);
                samples.rows.push((now, row));
            }
            continue;
        }
        if nodes.is_none() {
            nodes = find_nodes(&root);
        }
        let Some(nodes) = &nodes else { continue };
        let mut row: BTreeMap<String, u64> = BTreeMap::new();
        let mut all = true;
        for (pid, kind) in nodes {
            match proc_cpu_us(*pid) {
                Some(cpu) => *row.entry(kind.clone()).or_default() += cpu,
                None => all = false,
            }
        }
        // A row missing a node that has exited would look like a drop.
        if all {
            samples.rows.push((now, row));
        }
    }
}

/// The nodes (pid, kind) of the one run directory under `root`, once its
/// launcher has written `nodes.json`.
fn find_nodes(root: &Path) -> Option<Vec<(u32, String)>> {
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || dir.is_symlink() {
            continue;
        }
        if let Ok(nodes) = crate::rundir::read_nodes(&dir) {
            return Some(
                nodes
                    .values()
                    .map(|i| (i.pid, kind_of(i.role).to_string()))
                    .collect(),
            );
        }
    }
    None
}

fn kind_of(role: Role) -> &'static str {
    match role {
        Role::Warehouse => "warehouse",
        Role::Trader => "traders",
        _ => "clients",
    }
}

/// The steady window of a run: its answered requests, their latency and
/// the CPU spent meanwhile.
fn measure_history(history: &History, samples: &Samples) -> Measure {
    let Some(first) = history.requests.iter().map(|r| r.invoked_us).min() else {
        return Measure::default();
    };
    let last = history
        .requests
        .iter()
        .map(|r| r.completed_us)
        .max()
        .unwrap_or(first);
    let (from, to) = steady(first, last);
    let done: Vec<(u64, u64, bool)> = history
        .requests
        .iter()
        .map(|r| (r.completed_us, r.latency_us, r.outcome == Outcome::Ok))
        .collect();
    Measure {
        hops_p50_us: hops(&history.trace.messages(), from, to),
        ..measure(&done, from, to, samples)
    }
}

/// The segments of a request's path, in the order it takes them.
const HOPS: [&str; 6] = [
    "to trader",
    "at trader",
    "to warehouse",
    "at warehouse",
    "from warehouse",
    "to client",
];

/// Where a request's time goes: the median µs of each segment of its path
/// (client to trader, at the trader, to and at and from the warehouse in
/// strong mode, trader to client), over the requests answered within
/// `from..=to` (µs) whose every message was traced once, at both ends. A
/// retried request (two attempts) is left out. At the trader is its whole
/// stay less the warehouse's round trip. Segments no request took (the
/// warehouse, in cached mode) are left out.
fn hops(messages: &[Message], from: u64, to: u64) -> Vec<(String, f64)> {
    use crate::trace::Kind;
    let mut by_id: HashMap<RequestId, Vec<&Message>> = HashMap::new();
    for m in messages {
        if let (Some(id), Some(_), Some(_)) = (m.id, m.sent, m.received) {
            by_id.entry(id).or_default().push(m);
        }
    }
    let mut spans: Vec<Vec<u64>> = vec![Vec::new(); HOPS.len()];
    let between = |a: u64, b: u64| b.saturating_sub(a);
    for (id, ms) in &by_id {
        let one = |f: &dyn Fn(&Message) -> bool| {
            let mut it = ms.iter().filter(|m| f(m));
            match (it.next(), it.next()) {
                (Some(m), None) => Some(*m),
                _ => None,
            }
        };
        let (Some(ask), Some(answer)) = (
            one(&|m| m.from == id.node && matches!(m.kind, Kind::Buy | Kind::Sell)),
            one(&|m| m.to == id.node),
        ) else {
            continue;
        };
        let end = |m: &Message| {
            (
                m.sent.map_or(0, |e| e.wall_us),
                m.received.map_or(0, |e| e.wall_us),
            )
        };
        let (ask_sent, ask_in) = end(ask);
        let (answer_sent, answer_in) = end(answer);
        if !(from..=to).contains(&answer_in) {
            continue;
        }
        let at_trader = between(ask_in, answer_sent);
        spans[0].push(between(ask_sent, ask_in));
        spans[5].push(between(answer_sent, answer_in));
        let there = one(&|m| m.to == NodeId::WAREHOUSE);
        let back = one(&|m| m.from == NodeId::WAREHOUSE);
        match (there, back) {
            (Some(there), Some(back)) => {
                let (there_sent, there_in) = end(there);
                let (back_sent, back_in) = end(back);
                spans[1].push(at_trader.saturating_sub(between(there_sent, back_in)));
                spans[2].push(between(there_sent, there_in));
                spans[3].push(between(there_in, back_sent));
                spans[4].push(between(back_sent, back_in));
            }
            _ => spans[1].push(at_trader),
        }
    }
    HOPS.iter()
        .zip(spans)
        .filter(|(_, s)| !s.is_empty())
        .map(|(name, mut s)| {
            s.sort_unstable();
            (name.to_string(), s[s.len() / 2] as f64)
        })
        .collect()
}

/// The steady part of a run from `first` to `last` (µs).
fn steady(first: u64, last: u64) -> (u64, u64) {
    let span = last.saturating_sub(first);
    let warm = (WARM.as_micros() as u64).min(span / 5);
    let cool = (COOL.as_micros() as u64).min(span / 10);
    (first + warm, last - cool)
}

/// Throughput, latency and CPU of the requests `(completed_us, latency_us,
/// answered)` that completed within `from..=to`.
fn measure(done: &[(u64, u64, bool)], from: u64, to: u64, samples: &Samples) -> Measure {
    let mut h = latencies();
    let mut failed = 0;
    for &(at, lat, ok) in done.iter().filter(|(at, ..)| (from..=to).contains(at)) {
        let _ = at;
        if ok {
            h.saturating_record(lat.max(1));
        } else {
            failed += 1;
        }
    }
    let seconds = to.saturating_sub(from) as f64 / 1e6;
    let ms = |q: f64| ms_at(&h, q);
    let mut cpu = BTreeMap::new();
    if let Some((a, b, used)) = samples.between(from, to) {
        let n = done
            .iter()
            .filter(|(at, _, ok)| *ok && (a..=b).contains(at))
            .count() as f64;
        if n > 0.0 {
            cpu = used.into_iter().map(|(k, v)| (k, v as f64 / n)).collect();
        }
    }
    Measure {
        requests: h.len(),
        failed,
        seconds,
        requests_per_s: if seconds > 0.0 {
            h.len() as f64 / seconds
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        cpu_us_per_request: cpu,
        hops_p50_us: Vec::new(),
    }
}

/// The echo: answers every buy at once with all of it.
struct Echo;

impl Handler for Echo {
    fn handle(&self, _from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            match body {
                Body::Buy(o) => Some(Body::Granted {
                    id: o.id,
                    qty: o.qty,
                }),
                other => other.request_id().map(|id| Body::Refused {
                    id,
                    reason: crate::wire::Refusal::NotForRole {
                        role: "echo".into(),
                        message: other.name().into(),
                    },
                }),
            }
        })
    }
}

/// The echo at saturation.
async fn echo(clients: u32, load: Load, period: Option<Duration>) -> anyhow::Result<Measure> {
    let (run_for, stop_after) = match load {
        Load::Duration(d) => (d, u64::MAX),
        Load::Requests(n) => (Duration::from_secs(600), n),
    };
    run_echo(clients, run_for, stop_after, period).await
}

/// The echo paced: each client one request every `period`.
async fn echo_paced(clients: u32, run_for: Duration, period: Duration) -> anyhow::Result<Measure> {
    run_echo(clients, run_for, u64::MAX, Some(period)).await
}

/// A thread with a single-thread runtime of its own, and its kernel thread id.
fn runtime_thread<F, T>(name: &str, f: F) -> anyhow::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce(i64) -> BoxFuture<'static, T> + Send + 'static,
    T: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the echo's runtime")?;
    Ok(std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(f(gettid())))?)
}

/// Runs the echo: `clients` closed-loop clients (or each paced to one
/// request every `period`) for `run_for` after a ramp-up, or until
/// `stop_after` answers were measured.
async fn run_echo(
    clients: u32,
    run_for: Duration,
    stop_after: u64,
    period: Option<Duration>,
) -> anyhow::Result<Measure> {
    let warm = WARM.min(run_for / 5);
    let stop = CancellationToken::new();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let server_stop = stop.clone();
    let server = runtime_thread("echo-server", move |tid| {
        Box::pin(async move {
            let _ = tid_tx.send(tid);
            let listener = match Tcp.bind(([127, 0, 0, 1], 0).into()).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
            crate::node::serve(
                listener,
                NodeId::WAREHOUSE,
                Arc::new(Clock::new()),
                // The baseline is the transport alone: no history, no trace.
                crate::trace::Trace::off(),
                Arc::new(Echo),
                ServeOptions::default(),
                server_stop,
            )
            .await;
        })
    })?;
    let addr = addr_rx
        .recv()
        .context("the echo server did not start")?
        .map_err(|e| anyhow::anyhow!("the echo server cannot listen: {e}"))?;
    let server_tid = tid_rx.recv().context("the echo server did not start")?;

    // Completions: (completed at, µs from start; latency µs).
    let measured = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (cstop, m2, meas2) = (stop.clone(), measured.clone(), measuring.clone());
    let client_thread = runtime_thread("echo-clients", move |tid| {
        Box::pin(async move {
            let _ = tid_tx.send(tid);
            let transport = Tcp::shared();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let node = NodeId(c + 1);
                let link = Link::new(
                    node,
                    NodeId::WAREHOUSE,
                    addr,
                    transport.clone(),
                    Arc::new(Clock::new()),
                );
                let (stop, measured, measuring) = (cstop.clone(), m2.clone(), meas2.clone());
                tasks.push(tokio::spawn(async move {
                    let mut done: Vec<(u64, u64, bool)> = Vec::new();
                    let mut tick = period.map(|p| {
                        let mut t = tokio::time::interval(p);
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        t
                    });
                    for seq in 1u64.. {
                        if let Some(t) = tick.as_mut() {
                            tokio::select! {
                                _ = t.tick() => {}
                                _ = stop.cancelled() => break,
                            }
                        }
                        if stop.is_cancelled() {
                            break;
                        }
                        let order = Order {
                            id: RequestId { node, seq },
                            product: ProductId(0),
                            qty: Qty(1),
                        };
                        let sent = Instant::now();
                        let answer = link.call(Body::Buy(order), ECHO_TIMEOUT).await;
                        let at = started.elapsed().as_micros() as u64;
                        let lat = sent.elapsed().as_micros() as u64;
                        let ok = matches!(answer, Ok(Body::Granted { .. }));
                        done.push((at, lat, ok));
                        if ok && measuring.load(Ordering::Relaxed) {
                            measured.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap_or_default());
            }
            all
        })
    })?;
    let client_tid = tid_rx.recv().context("the echo clients did not start")?;

    // The CPU of both threads, sampled as the market's nodes are.
    let cpu = |tid| thread_cpu_us(tid).unwrap_or(0);
    let mut samples = Samples::default();
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    let deadline = started + warm + run_for;
    loop {
        every.tick().await;
        let el = started.elapsed();
        if el >= warm {
            measuring.store(true, Ordering::Relaxed);
        }
        samples.rows.push((
            el.as_micros() as u64,
            BTreeMap::from([
                ("server".to_string(), cpu(server_tid)),
                ("clients".to_string(), cpu(client_tid)),
            ]),
        ));
        if Instant::now() >= deadline || measured.load(Ordering::Relaxed) >= stop_after {
            break;
        }
    }
    let to = started.elapsed().as_micros() as u64;
    stop.cancel();
    let done = client_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the echo clients panicked"))?;
    let _ = server.join();
    let from = warm.as_micros() as u64;
    Ok(measure(&done, from, to, &samples))
}

/// The calling thread's kernel id.
fn gettid() -> i64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid(2) has no preconditions.
        unsafe { libc::gettid() as i64 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// A thread of this process's CPU time so far (µs), from its schedstat (ns).
fn thread_cpu_us(tid: i64) -> Option<u64> {
    schedstat_us(Path::new(&format!("/proc/self/task/{tid}/schedstat")))
}

/// What an in-process market's CPU is reported under: the whole process.
const PROCESS: &str = "process";

/// This process's CPU time so far (µs) in each thread that carries a
/// market in-process, as `kind#tid`, the kind being what it runs:
/// `runtimes` (the shards' single-thread runtimes, every node's tasks),
/// `ledger` (the warehouse's ledger thread, its commits included) or
/// `syncs` (the cached traders' journal sync threads). Read from each
/// thread's schedstat (ns). The rest of the process (the bench itself,
/// tokio's blocking pool) is only in the total.
fn threads_cpu_us() -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by;
    };
    for task in tasks.flatten() {
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let kind = match comm.trim() {
            c if c.starts_with("shard") => "runtimes",
            "ledger" => "ledger",
            "sync" => "syncs",
            _ => continue,
        };
        if let Some(us) = schedstat_us(&task.path().join("schedstat")) {
            let tid = task.file_name().to_string_lossy().into_owned();
            by.insert(format!("{kind}#{tid}"), us);
        }
    }
    by
}

/// A thread's CPU time so far (µs), from its `schedstat` (ns run so far first).
fn schedstat_us(path: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1000)
}

/// This process's CPU time so far (µs), every thread.
fn self_cpu_us() -> Option<u64> {
    // SAFETY: getrusage(2) fills the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(us(ru.ru_utime) + us(ru.ru_stime))
}

/// Another process's CPU time so far (µs), every thread, from `/proc/PID/stat`.
fn proc_cpu_us(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from the 3rd: utime
    // and stime are the 14th and 15th.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some((utime + stime) * 1_000_000 / hz)
}

/// The 1-minute load average, if the machine says.
fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Results {
    /// The table `bazaar bench` prints.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let how = if self.in_process {
            "in-process (one process, a single-thread runtime per core)"
        } else {
            "one process per node"
        };
        let load = match self.load {
            Load::Duration(d) => format!("{:.1} s per run", d.as_secs_f64()),
            Load::Requests(n) => format!("{n} requests per run"),
        };
        let _ = writeln!(t, "$ {}", self.command);
        let _ = writeln!(
            t,
            "{} clients, {load}, {how}; {} cpus, load average {} as it began",
            self.clients,
            self.cpus,
            self.load_avg.map_or("?".into(), |l| format!("{l:.2}"))
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<16} {:>10} {:>7} {:>8} {:>8} {:>9}   CPU µs per request",
            "saturated", "requests/s", "x echo", "p50 ms", "p99 ms", "p99.9 ms"
        );
        let row = |t: &mut String, name: &str, m: &Measure, ratio: Option<f64>| {
            // In-process, the whole process first, then its threads' share.
            let cpu: Vec<String> = (m.cpu_us_per_request.get_key_value(PROCESS).into_iter())
                .chain(m.cpu_us_per_request.iter().filter(|(k, _)| *k != PROCESS))
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect();
            let _ = writeln!(
                t,
                "{name:<16} {:>10.0} {:>7} {:>8.3} {:>8.3} {:>9.3}   {}{}",
                m.requests_per_s,
                ratio.map_or("1".into(), |r| format!("{r:.3}")),
                m.p50_ms,
                m.p99_ms,
                m.p999_ms,
                cpu.join(", "),
                if m.failed > 0 {
                    format!("  ({} failed or refused)", m.failed)
                } else {
                    String::new()
                }
            );
        };
        row(&mut t, "echo (one hop)", &self.echo, None);
        for m in &self.modes {
            row(&mut t, &m.mode.to_string(), &m.saturated, Some(m.ratio));
        }
        if let Some(d) = &self.disk {
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "disk: a {DISK_RECORD}-byte write and its fdatasync, {} in a row: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({:.0} a second)",
                d.syncs, d.p50_ms, d.p99_ms, d.p999_ms, d.syncs_per_s
            );
        }
        if self
            .modes
            .iter()
            .any(|m| !m.saturated.hops_p50_us.is_empty())
        {
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "where a saturated request's time goes (p50 µs, from the message trace)"
            );
            for m in &self.modes {
                let hops: Vec<String> = m
                    .saturated
                    .hops_p50_us
                    .iter()
                    .map(|(hop, us)| format!("{hop} {us:.0}"))
                    .collect();
                let _ = writeln!(t, "{:<16} {}", m.mode.to_string(), hops.join(" · "));
            }
        }
        if self.modes.iter().any(|m| m.half.is_some()) {
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "{:<16} {:>10} {:>10} {:>8} {:>11} {:>10}",
                "half load", "target/s", "requests/s", "p99 ms", "echo p99 ms", "x echo p99"
            );
            for m in &self.modes {
                if let Some(h) = &m.half {
                    let _ = writeln!(
                        t,
                        "{:<16} {:>10.0} {:>10.0} {:>8.3} {:>11.3} {:>10.2}",
                        m.mode.to_string(),
                        h.target_per_s,
                        h.market.requests_per_s,
                        h.market.p99_ms,
                        h.echo.p99_ms,
                        h.p99_ratio
                    );
                }
            }
        }
        let _ = writeln!(t);
        for m in &self.modes {
            let target = match m.mode {
                Mode::Cached => CACHED_TARGET,
                _ => STRONG_TARGET,
            };
            let verdict = |met: bool| if met { "met" } else { "NOT met" };
            let _ = writeln!(
                t,
                "target {:<7} throughput >= {target}x echo: {:.3}x, {}; invariants {}",
                m.mode.to_string(),
                m.ratio,
                verdict(m.ratio >= target),
                if m.checks_ok { "held" } else { "FAILED" }
            );
            if let Some(h) = &m.half {
                let _ = writeln!(
                    t,
                    "target {:<7} p99 at half load <= {HALF_P99_TARGET}x echo's: {:.2}x, {}",
                    m.mode.to_string(),
                    h.p99_ratio,
                    verdict(h.p99_ratio <= HALF_P99_TARGET)
                );
            }
        }
        t
    }

    /// The change from an earlier bench (`--compare`).
    pub fn compare(&self, before: &Results) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(t, "against: $ {}", before.command);
        let _ = writeln!(
            t,
            "{:<16} {:>12} {:>12} {:>8} {:>9} {:>9}",
            "", "requests/s", "before", "change", "x echo", "before"
        );
        let pct = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:+.1}%", (a / b - 1.0) * 100.0)
            } else {
                "–".into()
            }
        };
        let _ = writeln!(
            t,
            "{:<16} {:>12.0} {:>12.0} {:>8} {:>9} {:>9}",
            "echo (one hop)",
            self.echo.requests_per_s,
            before.echo.requests_per_s,
            pct(self.echo.requests_per_s, before.echo.requests_per_s),
            "1",
            "1"
        );
        match (&self.disk, &before.disk) {
            (Some(d), Some(db)) => {
                let _ = writeln!(
                    t,
                    "{:<16} fdatasync p50 {:.3} ms (was {:.3}), p99 {:.3} ms (was {:.3})",
                    "disk", d.p50_ms, db.p50_ms, d.p99_ms, db.p99_ms
                );
            }
            (Some(_), None) => {
                let _ = writeln!(t, "{:<16} (not measured by the earlier bench)", "disk");
            }
            _ => {}
        }
        for m in &self.modes {
            let Some(b) = before.modes.iter().find(|b| b.mode == m.mode) else {
                continue;
            };
            let _ = writeln!(
                t,
                "{:<16} {:>12.0} {:>12.0} {:>8} {:>9.3} {:>9.3}",
                m.mode.to_string(),
                m.saturated.requests_per_s,
                b.saturated.requests_per_s,
                pct(m.saturated.requests_per_s, b.saturated.requests_per_s),
                m.ratio,
                b.ratio
            );
            if let (Some(h), Some(hb)) = (&m.half, &b.half) {
                let _ = writeln!(
                    t,
                    "{:<16} p99 {:.3} ms (was {:.3}), {:.2}x echo's (was {:.2}x)",
                    format!("{} half", m.mode),
                    h.market.p99_ms,
                    hb.market.p99_ms,
                    h.p99_ratio,
                    hb.p99_ratio
                );
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::trace::{End, Kind};

    /// A message of request `client#seq` from `from` to `to`, sent and
    /// received at those wall times (µs).
    fn msg(client: u32, seq: u64, from: u32, to: u32, kind: Kind, at: (u64, u64)) -> Message {
        let end = |wall_us| {
            Some(End {
                wall_us,
                lamport: Lamport(0),
            })
        };
        Message {
            from: NodeId(from),
            to: NodeId(to),
            kind,
            id: Some(RequestId {
                node: NodeId(client),
                seq,
            }),
            stamp: Lamport(0),
            sent: end(at.0),
            received: end(at.1),
        }
    }

    #[test]
    fn a_requests_time_is_split_by_hop_and_retries_are_left_out() {
        let strong = [
            msg(1, 1, 1, 9, Kind::Buy, (100, 110)),
            msg(1, 1, 9, 0, Kind::WarehouseBuy, (115, 135)),
            msg(1, 1, 0, 9, Kind::Granted, (435, 445)),
            msg(1, 1, 9, 1, Kind::Granted, (450, 470)),
        ];
        let hops_of = |ms: &[Message]| hops(ms, 0, 1_000);
        let want = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
            v.iter().map(|(h, us)| (h.to_string(), *us)).collect()
        };
        assert_eq!(
            hops_of(&strong),
            want(&[
                ("to trader", 10.0),
                // 340 µs at the trader, 330 of them the warehouse's round trip.
                ("at trader", 10.0),
                ("to warehouse", 20.0),
                ("at warehouse", 300.0),
                ("from warehouse", 10.0),
                ("to client", 20.0),
            ])
        );
        // Cached: answered at the trader; no warehouse segment.
        let cached = [
            msg(2, 7, 2, 9, Kind::Sell, (100, 150)),
            msg(2, 7, 9, 2, Kind::Deposited, (950, 960)),
        ];
        assert_eq!(
            hops_of(&cached),
            want(&[
                ("to trader", 50.0),
                ("at trader", 800.0),
                ("to client", 10.0)
            ])
        );
        // A request sent twice (failed over), or answered after the
        // window, tells nothing about one path.
        let retried = [
            msg(3, 1, 3, 9, Kind::Buy, (0, 5)),
            msg(3, 1, 3, 8, Kind::Buy, (600, 605)),
            msg(3, 1, 8, 3, Kind::Granted, (700, 705)),
            msg(4, 1, 4, 9, Kind::Buy, (900, 905)),
            msg(4, 1, 9, 4, Kind::Granted, (1_200, 1_205)),
        ];
        assert!(hops_of(&retried).is_empty());
    }

    fn samples(rows: &[(u64, u64)]) -> Samples {
        Samples {
            rows: rows
                .iter()
                .map(|&(t, c)| (t, BTreeMap::from([("p".to_string(), c)])))
                .collect(),
        }
    }

    #[test]
    fn the_steady_window_leaves_out_the_ramp_and_the_wind_down() {
        // 10 s: the first second and the last half second go.
        assert_eq!(steady(0, 10_000_000), (1_000_000, 9_500_000));
        // 1 s: a fifth and a tenth.
        assert_eq!(steady(0, 1_000_000), (200_000, 900_000));
        assert_eq!(steady(5, 5), (5, 5));
    }

    #[test]
    fn a_measure_counts_only_the_window_and_keeps_failures_apart() {
        let done = [
            (50, 9_000, true),   // before the window
            (100, 1_000, true),  // in it
            (150, 2_000, false), // failed: not a latency
            (200, 3_000, true),
            (300, 4_000, true), // after it
        ];
        let s = samples(&[(90, 10), (210, 70)]);
        let m = measure(&done, 100, 200, &s);
        assert_eq!(m.requests, 2);
        assert_eq!(m.failed, 1);
        assert!((m.requests_per_s - 2.0 / 0.0001).abs() < 1.0);
        assert!((m.max_ms - 3.0).abs() < 0.01, "{}", m.max_ms);
        // CPU between the samples inside the window only: none is both at
        // or after 100 and at or before 200, so no CPU figure.
        assert!(m.cpu_us_per_request.is_empty());
        let s = samples(&[(100, 10), (200, 70)]);
        let m = measure(&done, 100, 200, &s);
        assert_eq!(m.cpu_us_per_request["p"], 30.0); // 60 µs over 2 answers
    }

    #[test]
    fn threads_are_counted_apart_so_one_that_ends_takes_nothing_away() {
        let row = |t: u64, threads: &[(&str, u64)]| {
            let cpu = threads.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            (t, cpu)
        };
        let s = Samples {
            rows: vec![
                row(100, &[("syncs#1", 100), ("ledger#3", 10)]),
                // Sync thread 1 ended, 2 started; summed by kind first, the
                // syncs would have gone from 100 to 50: nothing.
                row(200, &[("syncs#2", 50), ("ledger#3", 40)]),
            ],
        };
        let (_, _, used) = s.between(100, 200).unwrap();
        assert_eq!(used["syncs"], 50);
        assert_eq!(used["ledger"], 30);
    }

    #[test]
    fn a_half_load_period_is_never_below_the_configs_shortest() {
        assert_eq!(period_for(32, 1000.0), Duration::from_millis(32));
        assert_eq!(period_for(4, 1e9), Duration::from_millis(1));
        assert_eq!(period_for(1, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn bench_markets_are_valid_configs() {
        let cfg = saturating(Mode::Cached, 32, Duration::from_secs(2)).unwrap();
        assert_eq!(cfg.market.peers, 34);
        assert_eq!(cfg.workload.buyer.pause, Duration::ZERO);
        let cfg = paced(
            Mode::Strong,
            8,
            Duration::from_micros(1500),
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(cfg.workload.seller.interval, Duration::from_micros(1500));
    }

    #[test]
    fn proc_stat_is_read_past_a_command_with_spaces() {
        // Our own process: it has used some CPU by now.
        assert!(proc_cpu_us(std::process::id()).is_some());
        assert!(self_cpu_us().is_some());
    }

    #[test]
    fn the_disks_baseline_counts_each_sync_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 20, Duration::from_secs(60)).unwrap();
        assert_eq!(d.syncs, 20);
        assert!(d.p50_ms > 0.0 && d.p50_ms <= d.p99_ms && d.p99_ms <= d.max_ms);
        assert!(d.syncs_per_s > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Bounded in time as well as in count.
        assert_eq!(disk(dir.path(), u64::MAX, Duration::ZERO).unwrap().syncs, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_bench_json_from_before_the_disks_baseline_is_still_read() {
        let r = Results {
            command: "bazaar bench".into(),
            clients: 32,
            load: Load::Duration(Plan::QUICK),
            in_process: false,
            cpus: 2,
            load_avg: None,
            echo: Measure::default(),
            disk: None,
            modes: Vec::new(),
        };
        let mut json: serde_json::Value = serde_json::to_value(&r).unwrap();
        json.as_object_mut().unwrap().remove("disk");
        assert_eq!(serde_json::from_value::<Results>(json).unwrap(), r);
    }

    #[test]
    fn an_in_process_markets_cpu_is_split_by_the_threads_that_carry_it() {
        // A thread named as the warehouse's is, which has run 2 ms of CPU
        // and stays alive until it has been counted.
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let (counted_tx, counted_rx) = std::sync::mpsc::channel::<()>();
        let ledger = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                let tid = gettid();
                let mut x = 0u64;
                for i in 0..u64::MAX {
                    x = x.wrapping_mul(31).wrapping_add(i);
                    if i % 4096 == 0 && thread_cpu_us(tid).is_none_or(|us| us >= 2_000) {
                        break;
                    }
                }
                std::hint::black_box(x);
                ran_tx.send(tid).unwrap();
                let _ = counted_rx.recv();
            })
            .unwrap();
        let tid = ran_rx.recv().unwrap();
        let by = threads_cpu_us();
        counted_tx.send(()).unwrap();
        ledger.join().unwrap();
        let ours = by.get(&format!("ledger#{tid}"));
        assert!(ours.is_some_and(|us| *us >= 2_000), "{by:?}");
        assert!(by.keys().all(|k| k.starts_with("ledger#")
            || k.starts_with("runtimes#")
            || k.starts_with("syncs#")));
    }
}
