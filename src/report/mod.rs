//! The run's report: `report.json`, the terminal summary and the plots, all
//! built from the same [`Report`], which is built from the histories, the
//! warehouse's final store, what cached traders left in their journals and
//! the checker's verdicts. The README's section "The report" documents
//! `report.json` field by field; keep them together.

pub mod html;
pub mod open;
pub mod plots;
pub mod progress;
pub mod summary;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::check::{self, Verdict};
use crate::config::{Config, Mode, Role};
use crate::failover::FailoverReport;
use crate::history::{History, Outcome};
use crate::membership::Happening;
use crate::rundir::RunDir;
use crate::warehouse::ledger::{Applied, TraderBook};
use crate::warehouse::store::{Snapshot, Store};
use crate::wire::{FlushEntry, NodeId, Qty, RequestId, Side};

/// A list of node ids for people to read, each written by `name`, with runs
/// of three or more consecutive ids written as a range (`1–496`): a
/// 1,000-peer market's roles fit on a line. "none" for an empty list.
pub fn id_list(nodes: &[NodeId], name: impl Fn(NodeId) -> String) -> String {
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut rest = sorted.as_slice();
    while let Some(&first) = rest.first() {
        let len = rest
            .iter()
            .zip(first.0..)
            .take_while(|(n, want)| n.0 == *want)
            .count();
        let last = rest[len - 1];
        match len {
            1 => parts.push(name(first)),
            2 => parts.extend([name(first), name(last)]),
            _ => parts.push(format!("{}–{}", name(first), name(last))),
        }
        rest = &rest[len..];
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// How the trading went, as the launcher saw it: what the report needs
/// beyond the run directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trading {
    /// From the start of trading to its end.
    pub elapsed: Duration,
    /// Wall time trading began, µs since the Unix epoch.
    pub began_us: u64,
    /// Wall time the launcher began to stop the market in order (µs since
    /// the Unix epoch; 0 if unknown): deaths detected from then on are the
    /// stop, not failures.
    pub stopped_us: u64,
    /// The trader list the launcher last heard.
    pub final_traders: Vec<NodeId>,
    /// Trading was cut short by Ctrl-C (the market was still stopped in order).
    pub interrupted: bool,
    /// Why the run was degraded, as the launcher saw it (a node that exited
    /// on its own, one that did not stop in time).
    pub degraded: Vec<String>,
}

/// What judging a run reads and makes: the report, and the history and
/// store it was built from (for the plots).
pub struct Judged {
    pub report: Report,
    pub history: History,
    pub store: Snapshot,
}

/// Judges a run without writing anything: reads its histories, the
/// warehouse's store and the cached traders' journals, runs the checker and
/// builds the report (`run_dir` is the directory the report names).
pub fn judge(
    cfg: &Config,
    dir: &RunDir,
    run_dir: &Path,
    trading: &Trading,
) -> anyhow::Result<Judged> {
    let history = History::read_dir(&dir.history())?;
    let store = Store::snapshot(&dir.data_of(NodeId::WAREHOUSE))?;
    let unflushed = crate::rundir::read_unflushed(cfg, dir)?;
    let verdicts = check::check(cfg, &history, &store, &unflushed);
    let report =
        Report::build(cfg, run_dir, trading, &history, &store, verdicts).with_unflushed(&unflushed);
    Ok(Judged {
        report,
        history,
        store,
    })
}

/// The end of a run: [`judge`]s it, draws the plots (a plot that fails is a
/// warning, not a failed run), and writes `report.json` and `report.html`.
pub fn finish(cfg: &Config, dir: &RunDir, trading: &Trading) -> anyhow::Result<Report> {
    write(dir, judge(cfg, dir, &dir.root, trading)?)
}

/// Draws the plots and writes `report.json` and `report.html` into `dir`.
fn write(dir: &RunDir, judged: Judged) -> anyhow::Result<Report> {
    let Judged {
        mut report,
        history,
        store,
    } = judged;
    let drawn = match plots::write(&dir.plots(), &report, &history, &store) {
        Ok(drawn) => drawn,
        Err(e) => {
            eprintln!("warning: no plots: {e:#}");
            Vec::new()
        }
    };
    report.plots = drawn
        .iter()
        .flat_map(|d| [&d.png, &d.svg_file])
        .map(|f| f.strip_prefix(&dir.root).unwrap_or(f).to_path_buf())
        .collect();
    let figures = diagrams(&report, &history);
    let diagram_dir = dir.root.join(DIAGRAMS);
    report.diagrams.clear();
    for f in &figures {
        let path = diagram_dir.join(format!("{}.svg", f.stem));
        let written =
            std::fs::create_dir_all(&diagram_dir).and_then(|_| std::fs::write(&path, &f.svg));
        match written {
            Ok(()) => report
                .diagrams
                .push(Path::new(DIAGRAMS).join(format!("{}.svg", f.stem))),
            Err(e) => eprintln!("warning: cannot write {}: {e}", path.display()),
        }
    }
    report.write_json(&dir.report())?;
    let page = html::page(&report, &history, &drawn, &figures);
    std::fs::write(dir.html(), page)
        .with_context(|| format!("cannot write {}", dir.html().display()))?;
    Ok(report)
}

/// Where the report's diagrams go, under the run directory.
pub const DIAGRAMS: &str = "diagrams";
/// The most node lines in a report's diagram: the warehouse, every node
/// that was ever a trader or struck by a fault, then the lowest others.
const DIAGRAM_NODES: usize = 12;
/// Around a fault, the diagram starts this long before it and ends this
/// long after the detection (or the commit of the set without the victim).
const DIAGRAM_MARGIN: Duration = Duration::from_millis(300);
/// The longest window a fault's diagram covers (an undetected fault).
const DIAGRAM_SPAN: Duration = Duration::from_secs(3);

/// A space-time diagram of the report (see [`crate::diagram`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// `start`, `fault-1`, ...: the file's and the page element's name.
    pub stem: String,
    pub title: String,
    pub caption: String,
    pub svg: String,
}

/// The report's diagrams: the market's first second, and one around each
/// fault, from a little before it to a little after its detection. A window
/// too full to draw is shortened until it fits.
pub fn diagrams(report: &Report, history: &History) -> Vec<Figure> {
    use crate::diagram::{MAX_MESSAGES, Run, Window};
    let run = Run::new(history);
    let all: Vec<NodeId> = run.nodes().collect();
    let nodes: Vec<NodeId> = if all.len() <= DIAGRAM_NODES {
        all.clone()
    } else {
        let mut keep: std::collections::BTreeSet<NodeId> = [NodeId::WAREHOUSE].into();
        for r in &history.failover {
            match &r.what {
                Happening::Elected { traders, .. } => keep.extend(traders),
                Happening::Committed { view, .. } => keep.extend(&view.traders),
                Happening::Fault { victim, .. } => {
                    keep.insert(*victim);
                }
                _ => {}
            }
        }
        let mut keep: Vec<NodeId> = keep.into_iter().take(DIAGRAM_NODES).collect();
        for n in &all {
            if keep.len() >= DIAGRAM_NODES {
                break;
            }
            if !keep.contains(n) {
                keep.push(*n);
            }
        }
        keep.retain(|n| all.contains(n));
        keep.sort();
        keep
    };
    let since = |us: u64| Duration::from_micros(us.saturating_sub(history.first_us));
    let mut windows: Vec<(String, String, Window)> = vec![(
        "start".into(),
        "The market's first second".into(),
        Window::new(Duration::ZERO, Duration::from_secs(1)),
    )];
    for (i, f) in report.failover.faults.iter().enumerate() {
        let at = since(f.wall_us);
        let end = f
            .detected
            .as_ref()
            .map(|d| since(d.found_us.max(d.wall_us)))
            .unwrap_or(at + Duration::from_secs(1));
        let from = at.saturating_sub(DIAGRAM_MARGIN);
        let to = (end + DIAGRAM_MARGIN)
            .min(at + DIAGRAM_SPAN)
            .max(at + DIAGRAM_MARGIN);
        let what = format!("{:?} {}", f.fault, f.victim).to_lowercase();
        windows.push((
            format!("fault-{}", i + 1),
            format!("Around the fault: {what} at {:.2} s of trading", f.at_s),
            Window::new(from, to),
        ));
    }
    let only = (nodes.len() < all.len()).then_some(nodes.as_slice());
    let mut figures = Vec::new();
    for (stem, title, mut window) in windows {
        // Shorten a window too full to draw (a large market's busy second).
        for _ in 0..20 {
            if run.count(window) <= MAX_MESSAGES
                || window.to - window.from < Duration::from_millis(20)
            {
                break;
            }
            window.to = window.from + (window.to - window.from) / 2;
        }
        match run.draw(window, only) {
            Ok(d) => {
                let mut caption = format!(
                    "{} messages from {window} (seconds since the run's first event, as on the plots).",
                    d.messages
                );
                if d.left_out > 0 {
                    let _ = std::fmt::Write::write_fmt(
                        &mut caption,
                        format_args!(
                            " {} more, to or from nodes not drawn, are left out.",
                            d.left_out
                        ),
                    );
                }
                if !d.traced {
                    caption.push_str(" This run's history has no message trace.");
                }
                figures.push(Figure {
                    stem,
                    title,
                    caption,
                    svg: d.svg,
                });
            }
            Err(e) => eprintln!("warning: no diagram {stem}: {e}"),
        }
    }
    figures
}

/// How a run ended, as far as its exit code goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    InvariantFailed,
    Interrupted,
    Degraded,
}

/// Whether `wall_us` is in the stop of a run that began stopping at `stopped_us`
/// (0: unknown, never).
pub(crate) fn during_stop(stopped_us: u64, wall_us: u64) -> bool {
    stopped_us != 0 && wall_us >= stopped_us
}

/// Why a run was degraded: what the launcher saw, then what the history
/// shows: a death detected, before the stop, of a node no fault struck; the
/// warehouse unreachable for a trader for a whole `lease` or more (a
/// shorter outage, a deadline missed on a loaded machine and answered
/// again before the trader's lease ran out, is in the summary but is no
/// degradation: the trader served throughout).
fn degraded(history: &History, trading: &Trading, lease: Duration) -> Vec<String> {
    let struck: HashSet<NodeId> = history.faults().map(|(victim, _)| victim).collect();
    let mut why = trading.degraded.clone();
    let network = crate::failover::NetworkFaultReport::explains;
    for (dead, r) in history.detections() {
        if struck.contains(&dead)
            || during_stop(trading.stopped_us, r.wall_us)
            || network(history, dead, r.wall_us)
        {
            continue;
        }
        let by = r.by.map_or("the launcher".to_string(), |b| b.to_string());
        let cause = match &r.what {
            Happening::Detected { cause, .. } => cause.as_str(),
            _ => "",
        };
        let reason = format!("{by} declared {dead} dead ({cause}) though no fault struck it");
        // A rebuilt report starts from the reasons it gave before.
        if !why.contains(&reason) {
            why.push(reason);
        }
    }
    // The warehouse became unreachable (each trader records it once per
    // outage; one reason per recorder and outage start is plenty).
    let answered_again = |by: Option<NodeId>, from_us: u64| {
        history
            .failover
            .iter()
            .filter(|u| u.by == by && u.wall_us >= from_us)
            .find(|u| matches!(u.what, Happening::Warehouse { up: true, .. }))
            .map(|u| u.wall_us)
    };
    for r in &history.failover {
        let Happening::Warehouse { up: false, reason } = &r.what else {
            continue;
        };
        let brief = answered_again(r.by, r.wall_us)
            .is_some_and(|up| up - r.wall_us < lease.as_micros() as u64);
        if brief
            || during_stop(trading.stopped_us, r.wall_us)
            || r.by.is_some_and(|by| network(history, by, r.wall_us))
        {
            continue;
        }
        let by = r.by.map_or("the launcher".to_string(), |b| b.to_string());
        let at = r.wall_us.saturating_sub(trading.began_us) as f64 / 1e6;
        let reason = format!("{by} could not reach the warehouse at {at:.2} s ({reason})");
        if !why.contains(&reason) {
            why.push(reason);
        }
    }
    why
}

/// Requests of one kind, by outcome. A buy the trader answered is `ok`
/// whatever it granted; `full`, `cut_short` and `empty` tell those apart
/// (a sell answered is always `full`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Answered: `full + cut_short + empty`.
    pub ok: u64,
    /// Answered with every item asked for.
    #[serde(default)]
    pub full: u64,
    /// Buys answered with some items, fewer than asked.
    #[serde(default)]
    pub cut_short: u64,
    /// Buys answered with no item at all (no stock, as the warehouse or the
    /// trader's cache saw it).
    #[serde(default)]
    pub empty: u64,
    pub refused: u64,
    pub failed: u64,
}

impl Outcomes {
    pub fn total(&self) -> u64 {
        self.ok + self.refused + self.failed
    }

    /// Counts one completed request.
    pub fn count(&mut self, outcome: &Outcome, asked: Qty, granted: Qty) {
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                match granted.0 {
                    0 => self.empty += 1,
                    _ if granted < asked => self.cut_short += 1,
                    _ => self.full += 1,
                }
            }
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub buy: Outcomes,
    pub sell: Outcomes,
    /// Invoked and never answered, by a client that stopped cleanly.
    pub unanswered: u64,
    /// Invoked and cut short by their client's death.
    pub interrupted: u64,
    /// Requests retried at another trader (failover), counted once each.
    pub retried: u64,
    /// Acknowledged requests the warehouse does not have (the checker's
    /// "no lost acknowledged request" offenders).
    pub lost: u64,
}

/// What one trader did: what it answered (from its clients' histories) and,
/// in cached mode, what the warehouse made of its flushes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraderReport {
    pub trader: NodeId,
    /// Requests this trader answered (ok or refused).
    pub answered: u64,
    /// Items its granted buys came to, as the buyers were told.
    pub granted: u64,
    /// Cached mode: its flushes as the warehouse applied them.
    #[serde(flatten)]
    pub book: TraderBook,
}

/// One acknowledged buy the warehouse judged against its trader's cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgedBuy {
    pub id: RequestId,
    /// What the warehouse really shipped.
    pub shipped: Qty,
    /// Granted by the trader and not shipped (oversell).
    pub oversold: Qty,
    /// Not granted by the trader though the warehouse had it (undersell).
    pub undersold: Qty,
}

/// Requests a cached trader acknowledged and left unflushed in its journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unflushed {
    pub trader: NodeId,
    pub requests: u64,
    pub ids: Vec<RequestId>,
}

/// The longest latency the report tells apart (µs); longer ones count as this.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Latency of answered requests, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One product's stock from open to close.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductReport {
    pub name: String,
    pub initial: u64,
    pub sold: u64,
    pub shipped: u64,
    pub refused: u64,
    pub oversells: u64,
    pub oversold: u64,
    pub undersells: u64,
    pub undersold: u64,
    pub final_stock: u64,
    pub conserved: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Answered requests (ok or refused) per second of trading.
    pub requests_per_s: f64,
    /// Items the warehouse shipped per second of trading.
    pub shipped_per_s: f64,
}

/// Everything a run's report says; `report.json` is this, serialized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub mode: Mode,
    pub seed: u64,
    pub run_dir: PathBuf,
    /// Seconds from the start of trading to its end.
    pub duration_s: f64,
    /// Wall time trading began, µs since the Unix epoch.
    #[serde(default)]
    pub began_us: u64,
    pub peers: u32,
    pub traders: Vec<NodeId>,
    pub buyers: Vec<NodeId>,
    pub sellers: Vec<NodeId>,
    pub requests: Requests,
    /// Items the warehouse shipped, all products.
    pub shipped: u64,
    /// Buys the warehouse could not fill after a trader granted them.
    pub oversells: u64,
    /// Buys a trader refused or cut short while the warehouse had the stock.
    pub undersells: u64,
    /// Buy requests the warehouse applied (the rates' denominator).
    pub buys: u64,
    /// Oversold buys / all buys.
    pub oversell_rate: f64,
    /// Undersold buys / all buys.
    pub undersell_rate: f64,
    /// Per trader: what it answered, and (cached mode) its flushes.
    pub per_trader: Vec<TraderReport>,
    /// Cached mode: every acknowledged buy that was oversold, with what it lacked.
    pub oversold_buys: Vec<JudgedBuy>,
    /// Cached mode: every buy that was undersold.
    pub undersold_buys: Vec<JudgedBuy>,
    /// Cached mode: requests acknowledged but left in a trader's journal
    /// (a trader that died for good). Never silently dropped.
    #[serde(default)]
    pub unflushed: Vec<Unflushed>,
    pub throughput: Throughput,
    pub latency: Latency,
    pub products: Vec<ProductReport>,
    /// initial + sold − shipped = final, for every product.
    pub conserved: bool,
    pub checks: Vec<Verdict>,
    /// Why the run, though its invariants held, did not go as configured: a
    /// node that died on its own, a death detected that no fault caused.
    #[serde(default)]
    pub degraded: Vec<String>,
    /// Trading was cut short by Ctrl-C.
    #[serde(default)]
    pub interrupted: bool,
    /// When the launcher began to stop the market (µs since the Unix epoch).
    #[serde(default)]
    pub stopped_us: u64,
    /// Election, faults, detections, retries, lost requests.
    #[serde(default)]
    pub failover: FailoverReport,
    /// The plot files written, relative to the run directory.
    #[serde(default)]
    pub plots: Vec<PathBuf>,
    /// The space-time diagrams written (`diagrams/start.svg`,
    /// `diagrams/fault-1.svg`, ...), relative to the run directory.
    #[serde(default)]
    pub diagrams: Vec<PathBuf>,
}

impl Report {
    pub fn build(
        cfg: &Config,
        run_dir: &Path,
        trading: &Trading,
        history: &History,
        store: &Snapshot,
        checks: Vec<Verdict>,
    ) -> Report {
        let mut failover = FailoverReport::build(
            history,
            store,
            trading.began_us,
            trading.began_us + trading.elapsed.as_micros() as u64,
            &trading.final_traders,
        );
        // A trader that sees another stop first, as the market is stopped in
        // order, may declare it dead, or miss the warehouse's answer while a
        // thousand nodes write out their histories: that is the stop, not a
        // failure.
        failover
            .detections
            .retain(|d| !during_stop(trading.stopped_us, d.wall_us));
        failover
            .warehouse_outages
            .retain(|o| !during_stop(trading.stopped_us, o.from_us));
        let degraded = degraded(history, trading, cfg.heartbeat.lease);
        // Roles as the election made them (the config's defaults if no peer
        // recorded a result).
        let roles = if failover.elected.is_empty() {
            cfg.roles_of_peers().unwrap_or_default()
        } else {
            cfg.roles_given(&failover.elected, false)
                .or_else(|_| cfg.roles_of_peers())
                .unwrap_or_default()
        };
        let with = |role| -> Vec<NodeId> {
            roles
                .iter()
                .filter(|(_, r)| *r == role)
                .map(|(n, _)| *n)
                .collect()
        };
        let mut counts = Requests::default();
        let mut per_trader: BTreeMap<NodeId, TraderReport> = BTreeMap::new();
        fn trader(map: &mut BTreeMap<NodeId, TraderReport>, t: NodeId) -> &mut TraderReport {
            map.entry(t).or_insert_with(|| TraderReport {
                trader: t,
                ..TraderReport::default()
            })
        }
        // Bounded on purpose: an auto-resizing histogram does not resize on
        // `saturating_record`, it clamps (to 2 ms when new).
        let mut latency = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)
            .expect("1 µs to an hour at 3 significant figures is valid");
        for r in &history.requests {
            let o = match r.side {
                Side::Buy => &mut counts.buy,
                Side::Sell => &mut counts.sell,
            };
            o.count(&r.outcome, r.asked, r.granted);
            if !matches!(r.outcome, Outcome::Failed(_)) {
                latency.saturating_record(r.latency_us.max(1));
                let t = trader(&mut per_trader, r.trader);
                t.answered += 1;
                if r.side == Side::Buy && r.outcome == Outcome::Ok {
                    t.granted += u64::from(r.granted.0);
                }
            }
        }
        for (t, book) in &store.traders {
            trader(&mut per_trader, *t).book = *book;
        }
        counts.unanswered = history.unanswered.iter().filter(|u| u.closed).count() as u64;
        counts.interrupted = history.unanswered.len() as u64 - counts.unanswered;
        counts.retried = history
            .retries()
            .map(|(id, _)| id)
            .collect::<HashSet<_>>()
            .len() as u64;
        counts.lost = checks
            .iter()
            .find(|v| v.invariant == check::NO_LOST_ACK)
            .map_or(0, |v| v.offenders);
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let products: Vec<ProductReport> = cfg
            .products
            .iter()
            .zip(&store.books)
            .map(|(p, b)| ProductReport {
                name: p.name.clone(),
                initial: b.initial,
                sold: b.sold,
                shipped: b.shipped,
                refused: b.refused,
                oversells: b.oversells,
                oversold: b.oversold,
                undersells: b.undersells,
                undersold: b.undersold,
                final_stock: b.stock,
                conserved: b.conserved(),
            })
            .collect();
        let shipped = store.books.iter().map(|b| b.shipped).sum();
        let oversells: u64 = store.books.iter().map(|b| b.oversells).sum();
        let undersells: u64 = store.books.iter().map(|b| b.undersells).sum();
        let buys: u64 = store.books.iter().map(|b| b.buys).sum();
        let rate = |n: u64| {
            if buys == 0 {
                0.0
            } else {
                n as f64 / buys as f64
            }
        };
        let judged = |pick: fn(&Applied) -> bool| {
            let mut v: Vec<JudgedBuy> = store
                .applied
                .iter()
                .filter(|(_, a)| a.side == Side::Buy && pick(a))
                .map(|(id, a)| JudgedBuy {
                    id: *id,
                    shipped: a.qty,
                    oversold: a.oversold,
                    undersold: a.undersold,
                })
                .collect();
            v.sort_by_key(|j| j.id);
            v
        };
        let secs = trading.elapsed.as_secs_f64().max(1e-9);
        let answered = counts.buy.ok + counts.buy.refused + counts.sell.ok + counts.sell.refused;
        Report {
            name: cfg.market.name.clone(),
            mode: cfg.market.mode,
            seed: cfg.market.seed,
            run_dir: run_dir.to_path_buf(),
            duration_s: trading.elapsed.as_secs_f64(),
            began_us: trading.began_us,
            peers: cfg.market.peers,
            traders: with(Role::Trader),
            buyers: with(Role::Buyer),
            sellers: with(Role::Seller),
            requests: counts,
            shipped,
            oversells,
            undersells,
            buys,
            oversell_rate: rate(oversells),
            undersell_rate: rate(undersells),
            per_trader: per_trader.into_values().collect(),
            oversold_buys: judged(|a| a.oversold.0 > 0),
            undersold_buys: judged(|a| a.undersold.0 > 0),
            unflushed: Vec::new(),
            throughput: Throughput {
                requests_per_s: answered as f64 / secs,
                shipped_per_s: shipped as f64 / secs,
            },
            latency: Latency {
                p50_ms: ms(0.50),
                p90_ms: ms(0.90),
                p99_ms: ms(0.99),
                max_ms: latency.max() as f64 / 1000.0,
            },
            conserved: !products.is_empty() && products.iter().all(|p| p.conserved),
            products,
            checks,
            degraded,
            interrupted: trading.interrupted,
            stopped_us: trading.stopped_us,
            failover,
            plots: Vec::new(),
            diagrams: Vec::new(),
        }
    }

    /// How the run ended, for the exit code: an invariant that failed first,
    /// then an interrupted run (a degraded look is what cutting it short
    /// does), then a degraded one.
    pub fn status(&self) -> Status {
        if !check::all_ok(&self.checks) {
            Status::InvariantFailed
        } else if self.interrupted {
            Status::Interrupted
        } else if !self.degraded.is_empty() {
            Status::Degraded
        } else {
            Status::Ok
        }
    }

    /// Adds what cached traders left unflushed in their journals.
    pub fn with_unflushed(mut self, unflushed: &[(NodeId, FlushEntry)]) -> Report {
        for (trader, e) in unflushed {
            match self.unflushed.iter_mut().find(|u| u.trader == *trader) {
                Some(u) => {
                    u.requests += 1;
                    u.ids.push(e.order.id);
                }
                None => self.unflushed.push(Unflushed {
                    trader: *trader,
                    requests: 1,
                    ids: vec![e.order.id],
                }),
            }
        }
        self
    }

    /// The report of a run directory as it is now: `bazaar report RUN_DIR`
    /// rewrites its `report.json`, plots and `report.html`. How the trading
    /// went (its times, `run_dir`) is what the old `report.json` says, or
    /// else the config's duration.
    pub fn rebuild(run_dir: &Path) -> anyhow::Result<Report> {
        let o = open::open(run_dir)?;
        write(&o.dir, judge(&o.cfg, &o.dir, &o.named, &o.trading)?)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::history::Request;
    use crate::membership::Record;
    use crate::warehouse::ledger::Ledger;
    use crate::wire::{ProductId, Qty, RequestId};

    #[test]
    fn id_lists_write_runs_of_three_or_more_as_ranges() {
        let ids = |v: &[u32]| v.iter().copied().map(NodeId).collect::<Vec<_>>();
        let plain = |n: NodeId| n.0.to_string();
        assert_eq!(id_list(&[], plain), "none");
        assert_eq!(id_list(&ids(&[5, 6]), plain), "5, 6");
        assert_eq!(id_list(&ids(&[3, 1, 2, 7, 9, 10]), plain), "1–3, 7, 9, 10");
        let many: Vec<NodeId> = (1..=496).chain(498..=500).map(NodeId).collect();
        assert_eq!(
            id_list(&many, |n| n.to_string()),
            "peer1–peer496, peer498–peer500"
        );
    }

    /// A request of client peer1, completed ok at `at_ms`.
    pub(crate) fn req(seq: u64, side: Side, granted: u32, trader: u32, at_ms: u64) -> Request {
        Request {
            id: RequestId {
                node: NodeId(1),
                seq,
            },
            side,
            product: ProductId(0),
            asked: Qty(granted),
            granted: Qty(granted),
            trader: NodeId(trader),
            outcome: Outcome::Ok,
            invoked_us: at_ms * 1000 - 500,
            completed_us: at_ms * 1000,
            latency_us: 500 + seq * 100,
            lamport_invoked: Lamport(seq),
            lamport_completed: Lamport(seq + 1),
        }
    }

    pub(crate) fn sample() -> (Report, History) {
        let (report, h, _) = sample_with_store();
        (report, h)
    }

    pub(crate) fn sample_with_store() -> (Report, History, Snapshot) {
        let cfg = Config::default();
        let mut h = History {
            requests: vec![
                req(1, Side::Sell, 5, 5, 100),
                req(2, Side::Buy, 3, 6, 200),
                req(3, Side::Buy, 4, 5, 1500),
            ],
            first_us: 0,
            last_us: 2_000_000,
            ..History::default()
        };
        h.failover.push(Record {
            wall_us: 1_000_000,
            lamport: None,
            by: None,
            what: Happening::Fault {
                fault: crate::config::FaultKind::Kill,
                victim: NodeId(6),
            },
        });
        h.failover.push(Record {
            wall_us: 1_300_000,
            lamport: Some(Lamport(9)),
            by: Some(NodeId(5)),
            what: Happening::Detected {
                dead: NodeId(6),
                cause: "refused".into(),
                traders: vec![NodeId(5)],
                promoted: None,
                found_us: 0,
            },
        });
        let mut ledger = Ledger::new(&[50]);
        for r in &h.requests {
            let order = crate::wire::Order {
                id: r.id,
                product: r.product,
                qty: r.granted,
            };
            ledger.apply(r.side, &order);
        }
        let snap = Snapshot {
            books: ledger.books,
            ..Snapshot::default()
        };
        let report = Report::build(
            &cfg,
            Path::new("run"),
            &crate::report::Trading {
                elapsed: Duration::from_secs(2),
                ..Default::default()
            },
            &h,
            &snap,
            Vec::new(),
        );
        (report, h, snap)
    }

    /// peer5 lost the warehouse (`up: false`) or reached it again, at `at_ms`.
    fn reach(at_ms: u64, up: bool) -> Record {
        Record {
            wall_us: at_ms * 1000,
            lamport: None,
            by: Some(NodeId(5)),
            what: Happening::Warehouse {
                up,
                reason: "warehouse did not answer within 200ms".into(),
            },
        }
    }

    #[test]
    fn a_warehouse_outage_that_begins_in_the_stop_is_not_reported() {
        let (_, mut h, snap) = sample_with_store();
        h.failover
            .extend([reach(500, false), reach(520, true), reach(1900, false)]);
        let trading = Trading {
            elapsed: Duration::from_secs(2),
            stopped_us: 1_800_000,
            ..Default::default()
        };
        let report = Report::build(
            &Config::default(),
            Path::new("run"),
            &trading,
            &h,
            &snap,
            Vec::new(),
        );
        let starts: Vec<u64> = report
            .failover
            .warehouse_outages
            .iter()
            .map(|o| o.from_us)
            .collect();
        assert_eq!(
            starts,
            vec![500_000],
            "{:?}",
            report.failover.warehouse_outages
        );
        assert!(report.degraded.is_empty(), "{:?}", report.degraded);
    }

    #[test]
    fn a_warehouse_outage_degrades_the_run_only_if_it_outlasts_a_lease() {
        let lease = Duration::from_millis(350);
        let judge = |records: Vec<Record>| {
            let history = History {
                failover: records,
                ..History::default()
            };
            degraded(&history, &Trading::default(), lease)
        };
        assert!(
            judge(vec![reach(1000, false), reach(1080, true)]).is_empty(),
            "answered again 80 ms later: the trader's lease never ran out"
        );
        let long = judge(vec![reach(1000, false), reach(1400, true)]);
        assert_eq!(long.len(), 1, "{long:?}");
        assert!(
            long[0].contains("peer5 could not reach the warehouse"),
            "{long:?}"
        );
        assert_eq!(
            judge(vec![reach(1000, false)]).len(),
            1,
            "never answered again"
        );
    }

    #[test]
    fn a_buy_answered_with_nothing_is_empty_not_granted() {
        let mut o = Outcomes::default();
        o.count(&Outcome::Ok, Qty(5), Qty(5));
        o.count(&Outcome::Ok, Qty(5), Qty(2));
        o.count(&Outcome::Ok, Qty(5), Qty(0));
        o.count(&Outcome::Refused("no".into()), Qty(5), Qty(0));
        o.count(&Outcome::Failed("late".into()), Qty(5), Qty(0));
        assert_eq!(
            (o.ok, o.full, o.cut_short, o.empty, o.refused, o.failed),
            (3, 1, 1, 1, 1, 1)
        );
        assert_eq!(o.total(), 5);
    }

    #[test]
    fn latency_percentiles_are_not_clamped() {
        let requests = (1..=100u64)
            .map(|seq| Request {
                id: RequestId {
                    node: NodeId(1),
                    seq,
                },
                side: Side::Sell,
                product: ProductId(0),
                asked: Qty(1),
                granted: Qty(1),
                trader: NodeId(5),
                outcome: Outcome::Ok,
                invoked_us: 0,
                completed_us: seq * 1000,
                latency_us: seq * 1000, // 1 ms .. 100 ms
                lamport_invoked: Lamport(1),
                lamport_completed: Lamport(2),
            })
            .collect();
        let history = History {
            requests,
            ..History::default()
        };
        let store = Snapshot {
            books: Ledger::new(&[50]).books,
            ..Snapshot::default()
        };
        let r = Report::build(
            &Config::default(),
            Path::new("run"),
            &Trading {
                elapsed: Duration::from_secs(1),
                ..Trading::default()
            },
            &history,
            &store,
            Vec::new(),
        );
        let l = &r.latency;
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
        assert_eq!(r.per_trader.len(), 1);
        assert_eq!(r.per_trader[0].answered, 100);
    }
}
