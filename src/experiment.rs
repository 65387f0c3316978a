//! `bazaar experiment NAME`: the document's three experiments, one command
//! each, at the document's own timings (or sped up by `--time-scale`).
//!
//! - `ratio`: buyer:seller 1:3, 2:2, 3:1 (or `--ratios`) in every mode that
//!   exists: items shipped, oversells, undersells, buys answered with
//!   nothing, rates, throughput, latency. The document's figure (oversells
//!   and items shipped against the ratio, a line per mode) and the rates.
//! - `cache`: cached against strong on the 2:2 market, side by side.
//! - `failover`: one of two traders is SIGKILLed part way: detection time,
//!   items shipped per second before and after, requests retried and lost,
//!   and throughput over time with the kill and its detection marked.
//!
//! Each *cell* (a ratio, a mode, a seed) is a plain market run: its config
//! is written to `cells/<cell>/config.toml` and run by `bazaar run` (the
//! binary itself, as a child process) into a run directory of its own under
//! `cells/<cell>/`, so `bazaar check` and `bazaar report` work on it. The
//! experiment reads each cell's `report.json` and history, and writes
//! `results.json`, `results.csv`, `table.md` and the plots beside the cells,
//! in `runs/experiment-<name>-<timestamp>/`.
//!
//! The document's timings are those of its program (`peer.py` in
//! SeleneXX/cs677_lab3): initial stock 0; a seller deposits 5 items every
//! 5 s; a buyer waits 0.5 s between requests and, like its buyer, asks for
//! what is still missing of its goal before it draws a new one
//! ([`BuyerGoal::UntilMet`]); about 66 s of trading; heartbeats every 2 s.
//! `--time-scale F` divides every one of those, the trader cache's `ttl` and
//! `flush_interval` and the fault's time by F (the heartbeat never below
//! bazaar's default, 200 ms, so that a loaded machine does not declare a live
//! trader dead).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{
    BuyerGoal, BuyerLoad, Config, ConfigError, Fault, MAX_PEERS, Mode, PeerSet, Product,
    SellerLoad, Target,
};
use crate::history::{History, Outcome};
use crate::report::Report;
use crate::report::plots::{self, CategoryPlot, Line, Series};
use crate::wire::NodeId;

/// Traders in every experiment's market (the document's two).
pub const TRADERS: u32 = 2;
/// The document's seller: `SELL_QUANTITY` items every `SELL_EVERY`.
const SELL_QUANTITY: u32 = 5;
const SELL_EVERY: Duration = Duration::from_secs(5);
/// The document's buyer: a goal of 1..=5 items, 0.5 s between requests.
const BUY_MAX: u32 = 5;
const BUY_PAUSE: Duration = Duration::from_millis(500);
/// The document's runs: about 71 s after start, 5 s of which before trading.
const TRADING: Duration = Duration::from_secs(66);
/// The document's fault experiment: a trader shut down at about 24 s, the
/// market measured again at 48 s.
const KILL_AT: Duration = Duration::from_secs(24);
const FAILOVER_TRADING: Duration = Duration::from_secs(48);
/// The document's heartbeat period; a trader silent for
/// `HEARTBEAT_TIMEOUTS` periods is dead (a killed one refuses at once).
const HEARTBEAT: Duration = Duration::from_secs(2);
const HEARTBEAT_TIMEOUTS: u32 = 3;

/// The numbers the document reports (its "Test" section), per market:
/// (buyers, sellers, mode, oversells, items shipped), after about 66 s of
/// trading.
pub const DOCUMENT: [(u32, u32, Mode, u64, u64); 4] = [
    (1, 3, Mode::Cached, 13, 176),
    (2, 2, Mode::Cached, 75, 111),
    (3, 1, Mode::Cached, 133, 60),
    (2, 2, Mode::Strong, 0, 122),
];

/// The experiments `bazaar experiment` runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Experiment {
    /// Buyer:seller ratio against oversells and items shipped, every mode.
    Ratio,
    /// Cached against strong on the 2:2 market.
    Cache,
    /// A trader killed part way: detection, throughput before and after.
    Failover,
}

impl std::fmt::Display for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Experiment::Ratio => "ratio",
            Experiment::Cache => "cache",
            Experiment::Failover => "failover",
        })
    }
}

/// Buyers to sellers, as the document writes it (`1:3`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ratio {
    pub buyers: u32,
    pub sellers: u32,
}

impl Ratio {
    pub const fn new(buyers: u32, sellers: u32) -> Ratio {
        Ratio { buyers, sellers }
    }

    /// Sellers per buyer: the supply each buyer has.
    pub fn supply(&self) -> f64 {
        f64::from(self.sellers) / f64::from(self.buyers)
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.buyers, self.sellers)
    }
}

impl std::str::FromStr for Ratio {
    type Err = String;
    fn from_str(s: &str) -> Result<Ratio, String> {
        let (b, sl) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("\"{s}\" is not a ratio (write buyers:sellers, e.g. 1:3)"))?;
        let count = |t: &str, what: &str| {
            t.trim().parse::<u32>().map_err(|_| {
                format!(
                    "\"{s}\": {what} \"{t}\" is not a whole number (write buyers:sellers, e.g. 1:3)"
                )
            })
        };
        let r = Ratio::new(count(b, "buyers")?, count(sl, "sellers")?);
        if r.buyers == 0 || r.sellers == 0 {
            return Err(format!(
                "\"{s}\": a market needs at least one buyer and one seller"
            ));
        }
        if u64::from(r.buyers) + u64::from(r.sellers) + u64::from(TRADERS) > u64::from(MAX_PEERS) {
            return Err(format!(
                "\"{s}\": {} buyers + {} sellers + {TRADERS} traders is over {MAX_PEERS} peers",
                r.buyers, r.sellers
            ));
        }
        Ok(r)
    }
}

/// The document's three markets.
pub const DOCUMENT_RATIOS: [Ratio; 3] = [Ratio::new(1, 3), Ratio::new(2, 2), Ratio::new(3, 1)];

/// Some ratios. (An alias, so that clap takes `--ratios 1:3,2:2` as one
/// value rather than a list of values.)
pub type Ratios = Vec<Ratio>;

/// `--ratios 1:5,1:1,5:1`: at least one, none twice.
pub fn parse_ratios(text: &str) -> Result<Ratios, String> {
    let mut out: Vec<Ratio> = Vec::new();
    for part in text.split(',') {
        let r: Ratio = part.parse()?;
        if out.contains(&r) {
            return Err(format!("ratio {r} is given twice"));
        }
        out.push(r);
    }
    Ok(out)
}

/// `--time-scale F`: a finite number above 0.
pub fn parse_time_scale(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!(
            "\"{text}\" is not a time scale (need a number above 0: 10 divides every interval and the duration by 10)"
        )),
    }
}

/// `d` divided by the time scale, at least 1 ms.
fn scaled(d: Duration, scale: f64) -> Duration {
    Duration::from_secs_f64(d.as_secs_f64() / scale).max(Duration::from_millis(1))
}

/// What `bazaar experiment` was asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub experiment: Experiment,
    pub time_scale: f64,
    /// Seeds per cell: `seed`, `seed + 1`, ...
    pub repeat: u32,
    pub ratios: Vec<Ratio>,
    pub seed: u64,
    /// Cells run at once.
    pub jobs: usize,
}

impl Plan {
    /// The plan with the experiment's own ratios unless `ratios` are given:
    /// the document's three for `ratio`, its 2:2 market for the others.
    pub fn new(
        experiment: Experiment,
        time_scale: f64,
        repeat: u32,
        ratios: Option<Vec<Ratio>>,
        seed: u64,
        jobs: usize,
    ) -> Plan {
        let ratios = ratios.unwrap_or_else(|| match experiment {
            Experiment::Ratio => DOCUMENT_RATIOS.to_vec(),
            Experiment::Cache | Experiment::Failover => vec![Ratio::new(2, 2)],
        });
        Plan {
            experiment,
            time_scale,
            repeat: repeat.max(1),
            ratios,
            seed,
            jobs: jobs.max(1),
        }
    }

    pub fn seeds(&self) -> Vec<u64> {
        (0..u64::from(self.repeat))
            .map(|k| self.seed.wrapping_add(k))
            .collect()
    }

    /// Every consistency mode a market can run in today (escrow joins when
    /// its config validates).
    pub fn modes() -> Vec<Mode> {
        [Mode::Strong, Mode::Cached, Mode::Escrow]
            .into_iter()
            .filter(|&m| {
                let mut c = Config::default();
                c.market.mode = m;
                c.validate().is_ok()
            })
            .collect()
    }

    /// The cells, ratio by ratio, mode by mode, seed by seed.
    pub fn cells(&self) -> Result<Vec<Cell>, ConfigError> {
        let mut cells = Vec::new();
        for &ratio in &self.ratios {
            for mode in Self::modes() {
                for seed in self.seeds() {
                    let name = format!(
                        "{}-{}b{}s-{mode}-seed{seed}",
                        self.experiment, ratio.buyers, ratio.sellers
                    );
                    let config = self.config(&name, ratio, mode, seed)?;
                    cells.push(Cell {
                        name,
                        ratio,
                        mode,
                        seed,
                        config,
                    });
                }
            }
        }
        Ok(cells)
    }

    /// One cell's market: the document's, sped up by the time scale.
    pub fn config(
        &self,
        name: &str,
        ratio: Ratio,
        mode: Mode,
        seed: u64,
    ) -> Result<Config, ConfigError> {
        let f = self.time_scale;
        let mut c = Config::default();
        let defaults = c.clone();
        c.market.name = name.to_string();
        c.market.peers = ratio.buyers + ratio.sellers + TRADERS;
        c.market.traders = TRADERS;
        c.market.mode = mode;
        c.market.seed = seed;
        c.products = vec![Product {
            name: "product0".into(),
            stock: 0,
        }];
        c.roles.buyers = PeerSet::Count(ratio.buyers);
        c.roles.sellers = PeerSet::Count(ratio.sellers);
        c.workload.seller = SellerLoad {
            quantity: SELL_QUANTITY,
            interval: scaled(SELL_EVERY, f),
        };
        c.workload.buyer = BuyerLoad {
            max_quantity: BUY_MAX,
            pause: scaled(BUY_PAUSE, f),
            goal: BuyerGoal::UntilMet,
        };
        c.cache.ttl = scaled(defaults.cache.ttl, f);
        c.cache.flush_interval = scaled(defaults.cache.flush_interval, f);
        c.heartbeat.interval = scaled(HEARTBEAT, f).max(defaults.heartbeat.interval);
        c.heartbeat.timeout = c.heartbeat.interval * HEARTBEAT_TIMEOUTS;
        // Renewed every interval; over before the others can declare the
        // trader dead (see [heartbeat] lease).
        c.heartbeat.lease = c.heartbeat.interval * 3 / 2;
        match self.experiment {
            Experiment::Ratio | Experiment::Cache => c.market.duration = scaled(TRADING, f),
            Experiment::Failover => {
                c.market.duration = scaled(FAILOVER_TRADING, f);
                c.faults = vec![Fault {
                    at: scaled(KILL_AT, f),
                    kill: Some(Target::Trader),
                    wedge: None,
                    pause: None,
                    lasting: None,
                    restart_after: None,
                    ..Fault::default()
                }];
            }
        }
        c.validate()?;
        Ok(c)
    }
}

/// One market of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub name: String,
    pub ratio: Ratio,
    pub mode: Mode,
    pub seed: u64,
    pub config: Config,
}

/// What the failover experiment measures in one cell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    pub victim: NodeId,
    /// Seconds after trading began.
    pub killed_at_s: f64,
    /// From the kill to the first detection; `None`: never detected.
    pub detected_after_ms: Option<f64>,
    pub shipped_per_s_before: f64,
    pub shipped_per_s_after: f64,
    /// Requests the other traders answered after the kill.
    pub answered_after: u64,
}

/// The numbers of one cell, from its report (and history).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub checks_ok: bool,
    pub duration_s: f64,
    /// From the market's opening to its first request (start-up and the
    /// election): the trading time is `duration_s - first_request_s`.
    pub first_request_s: f64,
    pub sold: u64,
    pub shipped: u64,
    pub oversells: u64,
    pub undersells: u64,
    /// Buys answered, and of those: every item, fewer, none.
    pub buys_answered: u64,
    pub buys_full: u64,
    pub buys_cut_short: u64,
    pub buys_empty: u64,
    pub buys_refused: u64,
    pub buys_failed: u64,
    pub oversell_rate: f64,
    pub undersell_rate: f64,
    pub shipped_per_s: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub retried: u64,
    pub lost: u64,
    pub failover: Option<Failover>,
}

impl Measured {
    pub fn of(report: &Report, history: &History) -> Measured {
        let r = &report.requests;
        let failover = report.failover.faults.first().map(|f| Failover {
            victim: f.victim,
            killed_at_s: f.at_s,
            detected_after_ms: f.detected.as_ref().map(|d| d.after_ms),
            shipped_per_s_before: f.shipped_per_s_before,
            shipped_per_s_after: f.shipped_per_s_after,
            answered_after: history
                .requests
                .iter()
                .filter(|q| !matches!(q.outcome, Outcome::Failed(_)))
                .filter(|q| q.completed_us >= f.wall_us && q.trader != f.victim)
                .count() as u64,
        });
        let first_us = history.invokes.iter().map(|i| i.wall_us).min();
        Measured {
            checks_ok: crate::check::all_ok(&report.checks),
            duration_s: report.duration_s,
            first_request_s: first_us.map_or(report.duration_s, |us| {
                us.saturating_sub(report.began_us) as f64 / 1e6
            }),
            sold: report.products.iter().map(|p| p.sold).sum(),
            shipped: report.shipped,
            oversells: report.oversells,
            undersells: report.undersells,
            buys_answered: r.buy.ok,
            buys_full: r.buy.full,
            buys_cut_short: r.buy.cut_short,
            buys_empty: r.buy.empty,
            buys_refused: r.buy.refused,
            buys_failed: r.buy.failed,
            oversell_rate: report.oversell_rate,
            undersell_rate: report.undersell_rate,
            shipped_per_s: report.throughput.shipped_per_s,
            requests_per_s: report.throughput.requests_per_s,
            p50_ms: report.latency.p50_ms,
            p90_ms: report.latency.p90_ms,
            p99_ms: report.latency.p99_ms,
            retried: r.retried,
            lost: r.lost,
            failover,
        }
    }
}

/// One cell's result: where it ran and what it measured, or why it did not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: String,
    pub ratio: Ratio,
    pub mode: Mode,
    pub seed: u64,
    /// The cell's run directory, relative to the experiment's.
    pub run_dir: Option<PathBuf>,
    pub measured: Option<Measured>,
    pub error: Option<String>,
}

/// How a number is written in tables.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// A fraction, written as a percentage.
    Rate,
    PerSecond,
    Ms,
}

/// One number an experiment reports per cell.
#[derive(Copy, Clone)]
pub struct Metric {
    /// Its key in `results.json` rows and its column in `results.csv`.
    pub key: &'static str,
    /// Its heading in tables and plots.
    pub title: &'static str,
    pub unit: Unit,
    pub get: fn(&Measured) -> Option<f64>,
}

macro_rules! metric {
    ($key:literal, $title:literal, $unit:ident, |$m:ident| $e:expr) => {
        Metric {
            key: $key,
            title: $title,
            unit: Unit::$unit,
            get: |$m: &Measured| $e,
        }
    };
}

pub const SOLD: Metric = metric!("sold", "sold", Count, |m| Some(m.sold as f64));
pub const SHIPPED: Metric = metric!("shipped", "shipped", Count, |m| Some(m.shipped as f64));
pub const OVERSELLS: Metric = metric!("oversells", "oversells", Count, |m| Some(
    m.oversells as f64
));
pub const UNDERSELLS: Metric = metric!("undersells", "undersells", Count, |m| Some(
    m.undersells as f64
));
pub const ANSWERED: Metric = metric!("buys_answered", "buys answered", Count, |m| Some(
    m.buys_answered as f64
));
pub const FULL: Metric = metric!("buys_full", "granted in full", Count, |m| Some(
    m.buys_full as f64
));
pub const CUT_SHORT: Metric = metric!("buys_cut_short", "cut short", Count, |m| Some(
    m.buys_cut_short as f64
));
pub const EMPTY: Metric = metric!("buys_empty", "empty buys", Count, |m| Some(
    m.buys_empty as f64
));
pub const OVERSELL_RATE: Metric = metric!("oversell_rate", "oversell rate", Rate, |m| Some(
    m.oversell_rate
));
pub const UNDERSELL_RATE: Metric = metric!("undersell_rate", "undersell rate", Rate, |m| Some(
    m.undersell_rate
));
pub const SHIPPED_PER_S: Metric = metric!("shipped_per_s", "shipped/s", PerSecond, |m| Some(
    m.shipped_per_s
));
pub const REQUESTS_PER_S: Metric = metric!("requests_per_s", "requests/s", PerSecond, |m| {
    Some(m.requests_per_s)
});
pub const P50: Metric = metric!("p50_ms", "p50 ms", Ms, |m| Some(m.p50_ms));
pub const P90: Metric = metric!("p90_ms", "p90 ms", Ms, |m| Some(m.p90_ms));
pub const P99: Metric = metric!("p99_ms", "p99 ms", Ms, |m| Some(m.p99_ms));
pub const RETRIED: Metric = metric!("retried", "retried", Count, |m| Some(m.retried as f64));
pub const LOST: Metric = metric!("lost", "acknowledged and lost", Count, |m| Some(
    m.lost as f64
));
pub const KILLED_AT: Metric = metric!("killed_at_s", "killed at (s)", PerSecond, |m| m
    .failover
    .as_ref()
    .map(|f| f.killed_at_s));
pub const DETECTED: Metric = metric!("detected_after_ms", "detected after ms", Ms, |m| m
    .failover
    .as_ref()
    .and_then(|f| f.detected_after_ms));
pub const BEFORE: Metric = metric!("shipped_per_s_before", "shipped/s before", PerSecond, |m| m
    .failover
    .as_ref()
    .map(|f| f.shipped_per_s_before));
pub const AFTER: Metric = metric!("shipped_per_s_after", "shipped/s after", PerSecond, |m| m
    .failover
    .as_ref()
    .map(|f| f.shipped_per_s_after));
pub const ANSWERED_AFTER: Metric = metric!(
    "answered_after_kill",
    "answered after the kill",
    Count,
    |m| m.failover.as_ref().map(|f| f.answered_after as f64)
);

pub const FIRST_REQUEST: Metric =
    metric!("first_request_s", "first request at s", PerSecond, |m| {
        Some(m.first_request_s)
    });
/// Items shipped per second of trading (from the first request on).
pub const SHIPPED_PER_TRADING_S: Metric = metric!(
    "shipped_per_trading_s",
    "shipped/s of trading",
    PerSecond,
    |m| {
        let trading = m.duration_s - m.first_request_s;
        (trading > 0.0).then(|| m.shipped as f64 / trading)
    }
);

/// Every metric, in the order of `results.csv`'s columns.
pub const METRICS: [Metric; 24] = [
    FIRST_REQUEST,
    SOLD,
    SHIPPED,
    OVERSELLS,
    UNDERSELLS,
    ANSWERED,
    FULL,
    CUT_SHORT,
    EMPTY,
    metric!("buys_refused", "refused", Count, |m| Some(
        m.buys_refused as f64
    )),
    metric!("buys_failed", "failed", Count, |m| Some(
        m.buys_failed as f64
    )),
    OVERSELL_RATE,
    UNDERSELL_RATE,
    SHIPPED_PER_S,
    SHIPPED_PER_TRADING_S,
    REQUESTS_PER_S,
    P50,
    P90,
    P99,
    RETRIED,
    LOST,
    DETECTED,
    BEFORE,
    AFTER,
];

/// A mean over a cell's seeds and its spread (the sample standard
/// deviation; 0 for one seed).
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub spread: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let spread = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, spread, n })
    }

    /// As a table writes it: `75`, `75 ± 4`, `1.5%`, `2.18/s`...
    pub fn show(&self, unit: Unit) -> String {
        let one = |v: f64| match unit {
            Unit::Count if self.n == 1 => format!("{v:.0}"),
            Unit::Count => format!("{v:.1}"),
            Unit::Rate => format!("{:.1}%", 100.0 * v),
            Unit::PerSecond => format!("{v:.2}"),
            Unit::Ms => format!("{v:.2}"),
        };
        // A spread below what the table shows (a kill's time, to the µs) is none.
        if one(self.spread) != one(0.0) {
            format!("{} ± {}", one(self.mean), one(self.spread))
        } else {
            one(self.mean)
        }
    }
}

/// The cells of one ratio and mode, summed up over their seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub ratio: Ratio,
    pub mode: Mode,
    /// Seeds that gave numbers.
    pub seeds: usize,
    /// Cells whose checker verdicts all held.
    pub checks_ok: usize,
    pub values: BTreeMap<String, Stat>,
}

impl Row {
    pub fn get(&self, m: &Metric) -> Option<Stat> {
        self.values.get(m.key).copied()
    }

    fn show(&self, m: &Metric) -> String {
        self.get(m).map_or_else(|| "–".into(), |s| s.show(m.unit))
    }
}

/// The rows of some cells: one per ratio and mode, in the cells' order.
pub fn rows(cells: &[CellResult]) -> Vec<Row> {
    let mut keys: Vec<(Ratio, Mode)> = Vec::new();
    for c in cells {
        if !keys.contains(&(c.ratio, c.mode)) {
            keys.push((c.ratio, c.mode));
        }
    }
    keys.into_iter()
        .map(|(ratio, mode)| {
            let measured: Vec<&Measured> = cells
                .iter()
                .filter(|c| c.ratio == ratio && c.mode == mode)
                .filter_map(|c| c.measured.as_ref())
                .collect();
            let values = METRICS
                .iter()
                .chain([&KILLED_AT, &ANSWERED_AFTER])
                .filter_map(|m| {
                    let v: Vec<f64> = measured.iter().filter_map(|x| (m.get)(x)).collect();
                    Stat::of(&v).map(|s| (m.key.to_string(), s))
                })
                .collect();
            Row {
                ratio,
                mode,
                seeds: measured.len(),
                checks_ok: measured.iter().filter(|m| m.checks_ok).count(),
                values,
            }
        })
        .collect()
}

/// The document's numbers for a market, if it reports them: (oversells, shipped).
pub fn document_numbers(ratio: Ratio, mode: Mode) -> Option<(u64, u64)> {
    DOCUMENT
        .iter()
        .find(|(b, s, m, ..)| Ratio::new(*b, *s) == ratio && *m == mode)
        .map(|&(.., o, s)| (o, s))
}

fn markdown(head: &[String], body: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", head.join(" | "));
    let _ = writeln!(
        s,
        "|{}",
        head.iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for row in body {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s
}

/// The experiment's table, in markdown.
pub fn table(experiment: Experiment, rows: &[Row]) -> String {
    let checks = |r: &Row| format!("{}/{}", r.checks_ok, r.seeds);
    match experiment {
        Experiment::Ratio => {
            let metrics = [
                SHIPPED,
                OVERSELLS,
                UNDERSELLS,
                EMPTY,
                CUT_SHORT,
                OVERSELL_RATE,
                UNDERSELL_RATE,
                SHIPPED_PER_S,
                REQUESTS_PER_S,
                P99,
            ];
            let mut head: Vec<String> = vec!["buyers:sellers".into(), "mode".into()];
            head.extend(metrics.iter().map(|m| m.title.to_string()));
            head.extend([
                "document: oversells".into(),
                "document: shipped".into(),
                "checks ok".into(),
            ]);
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut line = vec![r.ratio.to_string(), r.mode.to_string()];
                    line.extend(metrics.iter().map(|m| r.show(m)));
                    let doc = document_numbers(r.ratio, r.mode);
                    line.push(doc.map_or("–".into(), |d| d.0.to_string()));
                    line.push(doc.map_or("–".into(), |d| d.1.to_string()));
                    line.push(checks(r));
                    line
                })
                .collect();
            markdown(&head, &body)
        }
        Experiment::Cache => {
            let metrics = [
                SHIPPED_PER_S,
                SHIPPED_PER_TRADING_S,
                FIRST_REQUEST,
                REQUESTS_PER_S,
                SHIPPED,
                OVERSELLS,
                UNDERSELLS,
                EMPTY,
                P50,
                P90,
                P99,
            ];
            let mut head = vec!["".to_string()];
            head.extend(rows.iter().map(|r| format!("{} ({})", r.mode, r.ratio)));
            let mut body: Vec<Vec<String>> = metrics
                .iter()
                .map(|m| {
                    let mut line = vec![m.title.to_string()];
                    line.extend(rows.iter().map(|r| r.show(m)));
                    line
                })
                .collect();
            let mut line = vec!["checks ok".to_string()];
            line.extend(rows.iter().map(checks));
            body.push(line);
            markdown(&head, &body)
        }
        Experiment::Failover => {
            let metrics = [
                KILLED_AT,
                DETECTED,
                BEFORE,
                AFTER,
                ANSWERED_AFTER,
                RETRIED,
                LOST,
                SHIPPED,
                OVERSELLS,
            ];
            let mut head: Vec<String> = vec!["buyers:sellers".into(), "mode".into()];
            head.extend(metrics.iter().map(|m| m.title.to_string()));
            head.push("checks ok".into());
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut line = vec![r.ratio.to_string(), r.mode.to_string()];
                    line.extend(metrics.iter().map(|m| r.show(m)));
                    line.push(checks(r));
                    line
                })
                .collect();
            markdown(&head, &body)
        }
    }
}

/// `results.csv`: one line per cell, every metric (empty where it has none).
pub fn csv(cells: &[CellResult]) -> String {
    let mut s = String::from("cell,buyers,sellers,mode,seed,checks_ok,run_dir,error");
    for m in METRICS.iter().chain([&KILLED_AT, &ANSWERED_AFTER]) {
        s.push(',');
        s.push_str(m.key);
    }
    s.push('\n');
    let quote = |t: &str| format!("\"{}\"", t.replace('"', "\"\""));
    for c in cells {
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{}",
            c.cell,
            c.ratio.buyers,
            c.ratio.sellers,
            c.mode,
            c.seed,
            c.measured.as_ref().is_some_and(|m| m.checks_ok),
            c.run_dir
                .as_ref()
                .map_or(String::new(), |p| quote(&p.display().to_string())),
            c.error.as_deref().map_or(String::new(), quote)
        );
        for m in METRICS.iter().chain([&KILLED_AT, &ANSWERED_AFTER]) {
            s.push(',');
            if let Some(v) = c.measured.as_ref().and_then(|x| (m.get)(x)) {
                let _ = write!(s, "{v}");
            }
        }
        s.push('\n');
    }
    s
}

/// Everything an experiment wrote: `results.json` is this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub experiment: Experiment,
    pub time_scale: f64,
    pub repeat: u32,
    pub seeds: Vec<u64>,
    pub jobs: usize,
    pub dir: PathBuf,
    /// Cells planned; fewer in `cells` if the experiment was interrupted.
    pub planned: usize,
    pub cells: Vec<CellResult>,
    pub rows: Vec<Row>,
    /// The markdown table (also `table.md`).
    pub table: String,
    /// Plot files, relative to `dir`.
    pub plots: Vec<PathBuf>,
}

impl Results {
    /// Every cell ran and every checker verdict held.
    pub fn all_ok(&self) -> bool {
        self.cells.len() == self.planned
            && self
                .cells
                .iter()
                .all(|c| c.error.is_none() && c.measured.as_ref().is_some_and(|m| m.checks_ok))
    }
}

/// Makes `runs_root/experiment-<name>-<timestamp>/` (with a suffix if taken).
fn create_dir(runs_root: &Path, experiment: Experiment) -> anyhow::Result<PathBuf> {
    let base = format!("experiment-{experiment}-{}", crate::market::timestamp());
    std::fs::create_dir_all(runs_root)
        .with_context(|| format!("cannot create {}", runs_root.display()))?;
    for n in 0..1000 {
        let dir = match n {
            0 => runs_root.join(&base),
            n => runs_root.join(format!("{base}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!(
        "too many experiments this second in {}",
        runs_root.display()
    )
}

/// Runs the plan's cells (`jobs` at a time, with a progress bar), then
/// writes the results, the table and the plots. `exe` is the `bazaar`
/// binary that runs each cell.
pub async fn run(plan: &Plan, runs_root: &Path, exe: &Path) -> anyhow::Result<Results> {
    let cells = plan.cells()?;
    let dir = create_dir(runs_root, plan.experiment)?;
    let bar = indicatif::ProgressBar::new(cells.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} cells · {elapsed} · eta {eta} · {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_secs(1));
    bar.suspend(|| {
        eprintln!(
            "experiment {}: {} cells ({} at a time), time scale {}, results in {}",
            plan.experiment,
            cells.len(),
            plan.jobs,
            plan.time_scale,
            dir.display()
        )
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(plan.jobs));
    let mut tasks = tokio::task::JoinSet::new();
    let interrupted = watch_interrupts();
    for (i, cell) in cells.iter().cloned().enumerate() {
        // A slot is taken before the cell's task starts, so cells start in order.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            _ = interrupted.cancelled() => break,
        };
        let (dir, exe, bar) = (dir.clone(), exe.to_path_buf(), bar.clone());
        tasks.spawn(async move {
            let _slot = slot;
            bar.set_message(cell.name.clone());
            let result = run_cell(&exe, &dir, &cell).await;
            bar.suspend(|| eprintln!("{}", one_line(&result)));
            bar.inc(1);
            (i, result)
        });
    }
    let mut results: Vec<Option<CellResult>> = vec![None; cells.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, r) = done.context("a cell's task panicked")?;
        results[i] = Some(r);
    }
    bar.finish_and_clear();
    let planned = results.len();
    let cells: Vec<CellResult> = results.into_iter().flatten().collect();
    let rows = rows(&cells);
    let table = table(plan.experiment, &rows);
    let mut results = Results {
        experiment: plan.experiment,
        time_scale: plan.time_scale,
        repeat: plan.repeat,
        seeds: plan.seeds(),
        jobs: plan.jobs,
        dir: dir.clone(),
        planned,
        cells,
        rows,
        table,
        plots: Vec::new(),
    };
    match draw(&dir, &results) {
        Ok(files) => {
            results.plots = files
                .iter()
                .map(|f| f.strip_prefix(&dir).unwrap_or(f).to_path_buf())
                .collect()
        }
        Err(e) => eprintln!("warning: no plots: {e:#}"),
    }
    std::fs::write(dir.join("table.md"), &results.table)?;
    std::fs::write(dir.join("results.csv"), csv(&results.cells))?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    Ok(results)
}

/// Ctrl-C: the first press stops launching cells (the running ones, in the
/// same process group, stop in order as `bazaar run` does, and are reported
/// with the cells done so far); a second one exits at once.
fn watch_interrupts() -> tokio_util::sync::CancellationToken {
    let first = tokio_util::sync::CancellationToken::new();
    let token = first.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("interrupted: no more cells; writing the results of those done");
        first.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    token
}

/// A finished cell in one line, for the log above the progress bar.
fn one_line(r: &CellResult) -> String {
    match (&r.measured, &r.error) {
        (Some(m), _) => {
            let mut s = format!(
                "{}: shipped {}, oversells {}, undersells {}, buys {} answered ({} empty), {:.2} shipped/s, p99 {:.2} ms{}",
                r.cell,
                m.shipped,
                m.oversells,
                m.undersells,
                m.buys_answered,
                m.buys_empty,
                m.shipped_per_s,
                m.p99_ms,
                if m.checks_ok { "" } else { ", A CHECK FAILED" }
            );
            if let Some(f) = &m.failover {
                let _ = write!(
                    s,
                    "; {} killed at {:.1} s, detected after {}, {} answered after",
                    f.victim,
                    f.killed_at_s,
                    f.detected_after_ms
                        .map_or("never".into(), |d| format!("{d:.0} ms")),
                    f.answered_after
                );
            }
            s
        }
        (None, e) => format!(
            "{}: FAILED: {}",
            r.cell,
            e.as_deref().unwrap_or("no result")
        ),
    }
}

/// Runs one cell: `bazaar run --config cells/<cell>/config.toml --runs-dir
/// cells/<cell>`, its output into `cells/<cell>/run.log`.
async fn run_cell(exe: &Path, dir: &Path, cell: &Cell) -> CellResult {
    let mut result = CellResult {
        cell: cell.name.clone(),
        ratio: cell.ratio,
        mode: cell.mode,
        seed: cell.seed,
        run_dir: None,
        measured: None,
        error: None,
    };
    match launch(exe, dir, cell).await {
        Ok((run_dir, measured)) => {
            result.run_dir = Some(run_dir.strip_prefix(dir).unwrap_or(&run_dir).into());
            result.measured = Some(measured);
        }
        Err(e) => result.error = Some(format!("{e:#}")),
    }
    result
}

async fn launch(exe: &Path, dir: &Path, cell: &Cell) -> anyhow::Result<(PathBuf, Measured)> {
    let home = dir.join("cells").join(&cell.name);
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    let config = home.join("config.toml");
    std::fs::write(&config, cell.config.to_toml())?;
    let log_path = home.join("run.log");
    let log = std::fs::File::create(&log_path)?;
    let status = tokio::process::Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--runs-dir")
        .arg(&home)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("cannot start {}", exe.display()))?;
    // Exit 1 is a run whose checker found a broken invariant: still a
    // result, with `checks_ok` false. Anything else left no report.
    let run_dir = std::fs::read_dir(&home)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .with_context(|| {
            format!(
                "`bazaar run` ({status}) made no run directory; see {}",
                log_path.display()
            )
        })?;
    let report: Report = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("report.json")).with_context(|| {
            format!(
                "`bazaar run` ({status}) wrote no report; see {}",
                log_path.display()
            )
        })?,
    )?;
    let history = History::read_dir(&run_dir.join("history"))?;
    Ok((run_dir, Measured::of(&report, &history)))
}

/// Per ratio (the categories), one series per mode of `metric`.
fn by_ratio(rows: &[Row], metric: &Metric, dashed: bool, scale: f64) -> Vec<Series> {
    let ratios = categories(rows, |r| r.ratio);
    categories(rows, |r| r.mode)
        .into_iter()
        .enumerate()
        .map(|(color, mode)| Series {
            label: format!("{mode}: {}", metric.title),
            points: ratios
                .iter()
                .map(|&ratio| {
                    rows.iter()
                        .find(|r| r.ratio == ratio && r.mode == mode)
                        .and_then(|r| r.get(metric))
                        .map(|s| (scale * s.mean, scale * s.spread))
                })
                .collect(),
            dashed,
            color,
        })
        .collect()
}

/// Per mode (the categories), one series per metric.
fn by_mode(rows: &[Row], metrics: &[Metric]) -> Vec<Series> {
    metrics
        .iter()
        .enumerate()
        .map(|(color, m)| Series {
            label: m.title.to_string(),
            points: rows
                .iter()
                .map(|r| r.get(m).map(|s| (s.mean, s.spread)))
                .collect(),
            dashed: false,
            color,
        })
        .collect()
}

/// The distinct values of `key` over the rows, in order of appearance.
fn categories<T: PartialEq + Copy>(rows: &[Row], key: impl Fn(&Row) -> T) -> Vec<T> {
    let mut out = Vec::new();
    for r in rows {
        if !out.contains(&key(r)) {
            out.push(key(r));
        }
    }
    out
}

/// Draws the experiment's plots into `dir/plots/`.
fn draw(dir: &Path, results: &Results) -> anyhow::Result<Vec<PathBuf>> {
    let out = dir.join("plots");
    let rows = &results.rows;
    let seeds = format!(
        "{} seed{} per cell (error bars: ± one standard deviation); time scale {}",
        results.repeat,
        if results.repeat == 1 { "" } else { "s" },
        results.time_scale
    );
    let mut files = Vec::new();
    match results.experiment {
        Experiment::Ratio => {
            let ratios: Vec<String> = categories(rows, |r| r.ratio)
                .iter()
                .map(|r| r.to_string())
                .collect();
            let mut series = by_ratio(rows, &SHIPPED, false, 1.0);
            series.extend(by_ratio(rows, &OVERSELLS, true, 1.0));
            files.extend(plots::write_category(
                &out,
                &CategoryPlot {
                    stem: "ratio".into(),
                    title: "Oversells and items shipped against the buyer:seller ratio".into(),
                    x_desc: "buyers : sellers".into(),
                    y_desc: "items shipped; oversells (dashed)".into(),
                    categories: ratios.clone(),
                    series,
                    notes: vec![seeds.clone()],
                },
            )?);
            let mut series = by_ratio(rows, &OVERSELL_RATE, false, 100.0);
            series.extend(by_ratio(rows, &UNDERSELL_RATE, true, 100.0));
            files.extend(plots::write_category(
                &out,
                &CategoryPlot {
                    stem: "ratio-rates".into(),
                    title: "Oversell and undersell rates against the buyer:seller ratio".into(),
                    x_desc: "buyers : sellers".into(),
                    y_desc: "% of buys; undersells dashed".into(),
                    categories: ratios,
                    series,
                    notes: vec![seeds],
                },
            )?);
        }
        Experiment::Cache => {
            let modes: Vec<String> = rows
                .iter()
                .map(|r| format!("{} ({})", r.mode, r.ratio))
                .collect();
            for (stem, title, y, metrics) in [
                (
                    "cache-throughput",
                    "Throughput, cached against strong",
                    "per second",
                    vec![SHIPPED_PER_S, REQUESTS_PER_S],
                ),
                (
                    "cache-latency",
                    "Latency of answered requests, cached against strong",
                    "ms",
                    vec![P50, P90, P99],
                ),
                (
                    "cache-consistency",
                    "Oversells, undersells and empty buys, cached against strong",
                    "buys",
                    vec![OVERSELLS, UNDERSELLS, EMPTY],
                ),
            ] {
                files.extend(plots::write_category(
                    &out,
                    &CategoryPlot {
                        stem: stem.into(),
                        title: title.into(),
                        x_desc: "mode (buyers:sellers)".into(),
                        y_desc: y.into(),
                        categories: modes.clone(),
                        series: by_mode(rows, &metrics),
                        notes: vec![seeds.clone()],
                    },
                )?);
            }
        }
        Experiment::Failover => {
            let modes: Vec<String> = rows
                .iter()
                .map(|r| format!("{} ({})", r.mode, r.ratio))
                .collect();
            files.extend(plots::write_category(
                &out,
                &CategoryPlot {
                    stem: "failover".into(),
                    title: "Items shipped per second before and after a trader's death".into(),
                    x_desc: "mode (buyers:sellers)".into(),
                    y_desc: "items shipped / s".into(),
                    categories: modes,
                    series: by_mode(rows, &[BEFORE, AFTER]),
                    notes: vec![seeds],
                },
            )?);
            // Throughput over time of each mode's first cell that ran.
            for mode in categories(rows, |r| r.mode) {
                let Some((cell, run_dir)) = results
                    .cells
                    .iter()
                    .filter(|c| c.mode == mode)
                    .find_map(|c| Some((c, c.run_dir.as_ref()?)))
                else {
                    continue;
                };
                let run = dir.join(run_dir);
                files.extend(failover_over_time(&out, &run, &cell.cell)?);
            }
        }
    }
    Ok(files)
}

/// The cell's throughput over time (per trader, in all, and items shipped
/// per second), with the kill and its detection marked.
fn failover_over_time(out: &Path, run: &Path, cell: &str) -> anyhow::Result<Vec<PathBuf>> {
    let report: Report = serde_json::from_str(&std::fs::read_to_string(run.join("report.json"))?)?;
    let history = History::read_dir(&run.join("history"))?;
    let mut plot = plots::throughput(&report, &history);
    // Items shipped per second in the same buckets: granted buys' items.
    let width = plot
        .lines
        .first()
        .and_then(|l| l.points.get(1).zip(l.points.first()))
        .map_or(1.0, |(b, a)| b.0 - a.0);
    if let Some(all) = plot.lines.last() {
        let points = all
            .points
            .iter()
            .map(|&(x, _)| {
                let (from, to) = (x - width / 2.0, x + width / 2.0);
                let items: u64 = history
                    .requests
                    .iter()
                    .filter(|r| r.side == crate::wire::Side::Buy && r.outcome == Outcome::Ok)
                    .filter(|r| {
                        let t = r.completed_us.saturating_sub(history.first_us) as f64 / 1e6;
                        t >= from && t < to
                    })
                    .map(|r| u64::from(r.granted.0))
                    .sum();
                (x, items as f64 / width)
            })
            .collect();
        plot.lines.push(Line {
            label: "items shipped / s".into(),
            points,
            total: false,
        });
    }
    plot.stem = match report.mode {
        Mode::Strong => "failover-strong",
        Mode::Cached => "failover-cached",
        Mode::Escrow => "failover-escrow",
    };
    plot.title = format!("Throughput across a trader's death ({} mode)", report.mode);
    plot.y_desc = "per second".into();
    plot.notes.push(format!("cell {cell}"));
    plots::write_time(out, &plot, &plots::markers(&history, report.stopped_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_ratios("1:5, 1:1,5:1").unwrap(),
            [Ratio::new(1, 5), Ratio::new(1, 1), Ratio::new(5, 1)]
        );
        for (bad, says) in [
            ("3:0", "at least one buyer"),
            ("0:3", "at least one buyer"),
            ("x", "not a ratio"),
            ("", "not a ratio"),
            ("a:b", "not a whole number"),
            ("1:-1", "not a whole number"),
            ("1:3,1:3", "twice"),
            ("999:999", "over 1000 peers"),
        ] {
            let e = parse_ratios(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn time_scales_are_numbers_above_zero() {
        assert_eq!(parse_time_scale("20").unwrap(), 20.0);
        assert_eq!(parse_time_scale("0.5").unwrap(), 0.5);
        for bad in ["0", "-1", "x", "inf", "NaN", ""] {
            assert!(parse_time_scale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cell_is_the_documents_market_sped_up() {
        let plan = Plan::new(Experiment::Failover, 10.0, 1, None, 42, 1);
        let cells = plan.cells().unwrap();
        assert_eq!(cells.len(), Plan::modes().len());
        let c = &cells[0].config;
        assert_eq!(cells[0].name, "failover-2b2s-strong-seed42");
        assert_eq!(c.market.peers, 6);
        assert_eq!(c.products[0].stock, 0);
        assert_eq!(c.workload.seller.interval, Duration::from_millis(500));
        assert_eq!(c.workload.buyer.pause, Duration::from_millis(50));
        assert_eq!(c.workload.buyer.goal, BuyerGoal::UntilMet);
        assert_eq!(c.market.duration, Duration::from_millis(4800));
        assert_eq!(c.faults[0].at, Duration::from_millis(2400));
        assert_eq!(c.heartbeat.interval, Duration::from_millis(200));
        assert_eq!(c.heartbeat.timeout, Duration::from_millis(600));
        // At the document's own timings:
        let doc = Plan::new(Experiment::Ratio, 1.0, 2, None, 7, 1);
        let cells = doc.cells().unwrap();
        assert_eq!(cells.len(), 3 * Plan::modes().len() * 2);
        let c = &cells[0].config;
        assert_eq!(c.market.duration, TRADING);
        assert_eq!(c.heartbeat.interval, HEARTBEAT);
        assert_eq!((c.market.seed, cells[1].config.market.seed), (7, 8));
        assert!(c.faults.is_empty());
        assert_eq!(cells[0].ratio, Ratio::new(1, 3));
    }

    #[test]
    fn every_mode_that_validates_is_in_the_experiments() {
        let modes = Plan::modes();
        assert!(modes.contains(&Mode::Strong) && modes.contains(&Mode::Cached));
    }

    fn cell(ratio: Ratio, mode: Mode, seed: u64, shipped: u64) -> CellResult {
        CellResult {
            cell: format!("c{seed}"),
            ratio,
            mode,
            seed,
            run_dir: Some(PathBuf::from("cells/c")),
            measured: Some(Measured {
                checks_ok: true,
                shipped,
                oversells: 2,
                oversell_rate: 0.015,
                ..Measured::default()
            }),
            error: None,
        }
    }

    #[test]
    fn rows_take_the_mean_and_spread_over_seeds() {
        let r = Ratio::new(2, 2);
        let cells = [
            cell(r, Mode::Strong, 1, 100),
            cell(r, Mode::Strong, 2, 110),
            cell(r, Mode::Cached, 1, 90),
        ];
        let rows = rows(&cells);
        assert_eq!(rows.len(), 2);
        let s = rows[0].get(&SHIPPED).unwrap();
        assert_eq!((s.mean, s.n), (105.0, 2));
        assert!((s.spread - 7.0710678).abs() < 1e-6);
        assert_eq!(s.show(Unit::Count), "105.0 ± 7.1");
        assert_eq!(rows[1].get(&SHIPPED).unwrap().show(Unit::Count), "90");
        let tiny = Stat::of(&[24.0, 24.000001]).unwrap();
        assert_eq!(tiny.show(Unit::PerSecond), "24.00");
        assert_eq!(
            rows[1].get(&OVERSELL_RATE).unwrap().show(Unit::Rate),
            "1.5%"
        );
        assert!(rows[0].get(&DETECTED).is_none(), "no fault, no detection");
    }

    #[test]
    fn the_table_puts_the_documents_numbers_beside_ours() {
        let cells = [
            cell(Ratio::new(2, 2), Mode::Cached, 1, 140),
            cell(Ratio::new(1, 5), Mode::Cached, 1, 200),
        ];
        let t = table(Experiment::Ratio, &rows(&cells));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[2].starts_with("| 2:2 | cached | 140 |"), "{t}");
        assert!(lines[2].ends_with("| 75 | 111 | 1/1 |"), "{t}");
        assert!(lines[3].ends_with("| – | – | 1/1 |"), "{t}");
    }

    #[test]
    fn the_csv_has_a_column_per_metric_and_a_line_per_cell() {
        let mut failed = cell(Ratio::new(1, 3), Mode::Strong, 3, 0);
        failed.measured = None;
        failed.error = Some("no \"report\"".into());
        let text = csv(&[cell(Ratio::new(1, 3), Mode::Strong, 1, 70), failed]);
        let lines: Vec<&str> = text.lines().collect();
        let columns = lines[0].split(',').count();
        assert_eq!(columns, 8 + METRICS.len() + 2);
        assert!(lines[1].starts_with("c1,1,3,strong,1,true,\"cells/c\",,0,0,70,2,"));
        assert!(lines[2].contains(",\"no \"\"report\"\"\","));
    }
}
