//! The run's plots, each written as PNG and SVG into `RUN_DIR/plots/`:
//! - `throughput`: answered requests per second over time, per trader and in all;
//! - `latency`: the distribution (CDF) of answered requests' latency, with
//!   p50, p90 and p99 marked (the report's own figures);
//! - `stock`: each product's stock over time, *reconstructed from the clients'
//!   histories*: the initial stock, plus every acknowledged sell, minus every
//!   granted buy, taken in the order the clients saw them complete. In `strong`
//!   mode that is the warehouse's stock up to the order of requests completing
//!   at about the same instant; in `cached` mode it is the stock the buyers were
//!   promised. The warehouse's final stock is drawn as a dot at the end;
//! - `oversells`: oversells over time, cumulative, from the warehouse's cache
//!   flush events (none in `strong` mode);
//! - `latency_time`: latency over time, per bucket of completion time: the
//!   p50–p90 and p90–p99 bands and the p50 and p99 lines, on a log axis;
//! - `shipped`: items shipped over time, cumulative (the document's "Sell out
//!   N items!"), per trader and in all, as the buyers were told; a dot marks
//!   the warehouse's own count;
//! - `warehouse`: the warehouse's own stock over time, per product: what it
//!   applied (its audit table: shipped, not promised), each request placed at
//!   the time it was applied: in `strong` mode when its trader answered (the
//!   warehouse applies before the trader answers), in `cached` mode at its
//!   trader's first cache flush after the request was acknowledged. It ends
//!   at the warehouse's final stock;
//! - `roles`: which peers were traders over the run, from the election
//!   results, the detections of a death (message 8) and the promotions the
//!   peers recorded; a trader killed and not yet detected is drawn apart.
//!
//! Faults the launcher injected and the heartbeat verdicts that detected them
//! are drawn on the time plots as vertical lines.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`assets/fonts/`,
//! licence beside it), so the plots render on a machine with no fonts at all.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Report, during_stop};
use crate::config::{FaultKind, Mode};
use crate::history::{History, Outcome};
use crate::membership::Happening;
use crate::warehouse::store::Snapshot;
use crate::wire::{NodeId, RequestId, Side};

/// The embedded font, registered as "sans-serif" before the first plot.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
/// Pixel size of every plot (the SVG uses the same units).
const SIZE: (u32, u32) = (1200, 700);
/// Colours of the lines, in order (matplotlib's "tab10", easy to tell apart).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];
const FAULT_COLOR: RGBColor = RGBColor(214, 39, 40);
const DETECTION_COLOR: RGBColor = RGBColor(255, 160, 0);
/// Network faults: a band from start to heal.
const NETWORK_COLOR: RGBColor = RGBColor(31, 119, 180);
/// A row of the roles plot: a trader, and a trader killed and not yet detected.
const TRADER_COLOR: RGBColor = RGBColor(31, 119, 180);
const UNDETECTED_COLOR: RGBColor = RGBColor(240, 150, 150);

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(ok, "the embedded font DejaVuSans.ttf does not load");
    Ok(())
}

/// A vertical line on the time plots (a network fault: a shaded band from
/// its start to its heal).
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at_s: f64,
    /// A network fault's heal (`None`: it lasted to the end).
    pub until_s: Option<f64>,
    pub label: String,
    pub kind: MarkerKind,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    Fault,
    Detection,
    Network,
}

/// One line of a time plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// The line is black and thicker (a total).
    pub total: bool,
}

/// A shaded band of a time plot, between two values at each point in time:
/// `(x, low, high)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// How a time plot's values are drawn.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// The values are log10 of what is shown; the axis is labelled with
    /// the shown values.
    Log10,
}

/// A plot of values over the run's time, in seconds since its first event.
#[derive(Clone, Debug, PartialEq)]
pub struct TimePlot {
    pub stem: &'static str,
    pub title: String,
    pub y_desc: String,
    pub lines: Vec<Line>,
    /// Dots: (label, x, y), drawn over the lines.
    pub dots: Vec<(String, f64, f64)>,
    /// Lines of text in the plot's top-left corner.
    pub notes: Vec<String>,
    pub x_max: f64,
    /// Shaded bands, drawn under the lines.
    pub bands: Vec<Band>,
    pub scale: Scale,
}

/// The latency CDF: (latency in ms, fraction of requests at or below it).
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyPlot {
    pub points: Vec<(f64, f64)>,
    /// (label, ms) of the marked percentiles.
    pub marks: Vec<(String, f64)>,
    pub title: String,
}

/// Values against named categories (an experiment's cells: ratios, modes),
/// one line per series, each point a mean with an error bar of its spread.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryPlot {
    pub stem: String,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    /// Lines of text in the plot's top-left corner.
    pub notes: Vec<String>,
}

/// One line of a [`CategoryPlot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: String,
    /// Per category: (mean, spread), or `None` where the series has no value.
    /// A spread above 0 is drawn as an error bar of ± spread.
    pub points: Vec<Option<(f64, f64)>>,
    /// Drawn dashed (a second quantity beside a solid one of the same colour).
    pub dashed: bool,
    /// Index into the line colours; series of one mode share a colour.
    pub color: usize,
}

/// Which peers were traders when: one row per peer.
#[derive(Clone, Debug, PartialEq)]
pub struct RolesPlot {
    pub title: String,
    /// Each peer and its label (`peer3 (seller)`), top to bottom.
    pub rows: Vec<(NodeId, String)>,
    pub spans: Vec<Span>,
    /// The changes of the trader list, in time order, for the notes.
    pub notes: Vec<String>,
    pub x_max: f64,
}

/// A time a peer was a trader.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub node: NodeId,
    pub from_s: f64,
    pub to_s: f64,
    /// It had been killed, and the others did not know yet.
    pub undetected: bool,
}

/// A plot, of any kind, ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub enum Chart {
    Time(TimePlot),
    Latency(LatencyPlot),
    Roles(RolesPlot),
    Category(CategoryPlot),
}

impl Chart {
    pub fn stem(&self) -> &str {
        match self {
            Chart::Time(p) => p.stem,
            Chart::Latency(_) => "latency",
            Chart::Roles(_) => "roles",
            Chart::Category(p) => &p.stem,
        }
    }

    pub fn title(&self) -> &str {
        match self {
            Chart::Time(p) => &p.title,
            Chart::Latency(p) => &p.title,
            Chart::Roles(p) => &p.title,
            Chart::Category(p) => &p.title,
        }
    }
}

/// A plot as written: its files and its SVG text (which `report.html` inlines).
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    pub stem: String,
    pub title: String,
    pub png: PathBuf,
    pub svg_file: PathBuf,
    pub svg: String,
}

fn secs(history: &History, us: u64) -> f64 {
    us.saturating_sub(history.first_us) as f64 / 1e6
}

/// The faults and their detections (not those made while the market was
/// being stopped, from `stopped_us`), as vertical lines.
pub fn markers(history: &History, stopped_us: u64) -> Vec<Marker> {
    let mut m: Vec<Marker> = history
        .faults()
        .map(|(victim, r)| Marker {
            at_s: secs(history, r.wall_us),
            until_s: None,
            label: match &r.what {
                Happening::Fault { fault, .. } => format!("{fault:?} {victim}").to_lowercase(),
                _ => format!("fault {victim}"),
            },
            kind: MarkerKind::Fault,
        })
        .collect();
    m.extend(
        history
            .detections()
            .filter(|(_, r)| !during_stop(stopped_us, r.wall_us))
            .map(|(dead, r)| Marker {
                at_s: secs(history, r.wall_us),
                until_s: None,
                label: format!("{} declares {dead} dead", r.by.unwrap_or_default()),
                kind: MarkerKind::Detection,
            }),
    );
    // Network faults, each from its start to its heal.
    for r in &history.failover {
        let Happening::Network { fault, change } = &r.what else {
            continue;
        };
        let at = secs(history, r.wall_us);
        if *fault == FaultKind::Heal {
            let label = change.to_string();
            if let Some(open) = m
                .iter_mut()
                .find(|x| x.kind == MarkerKind::Network && x.until_s.is_none() && x.label == label)
            {
                open.until_s = Some(at);
            }
        } else {
            m.push(Marker {
                at_s: at,
                until_s: None,
                label: change.to_string(),
                kind: MarkerKind::Network,
            });
        }
    }
    m.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    m
}

/// A bucket width for about 25 buckets over `span` seconds, from a round
/// list: enough requests per bucket that the rate is not all noise.
pub fn bucket_width(span: f64) -> f64 {
    const NICE: [f64; 12] = [
        0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0,
    ];
    let want = span / 25.0;
    NICE.iter().copied().find(|&w| w >= want).unwrap_or(want)
}

fn x_max(report: &Report, history: &History) -> f64 {
    report
        .duration_s
        .max(secs(history, history.last_us))
        .max(0.1)
}

/// Answered requests per second, per trader and in all, over time.
pub fn throughput(report: &Report, history: &History) -> TimePlot {
    let x_max = x_max(report, history);
    let answered: Vec<_> = history
        .requests
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
        .collect();
    // Buckets cover the trading up to the last answer; the last one stretches
    // to it (between a half and one and a half widths), its rate over that.
    let end = answered
        .iter()
        .map(|r| secs(history, r.completed_us))
        .fold(0.0, f64::max)
        .max(1e-3);
    let width = bucket_width(end);
    let buckets = (end / width).round().max(1.0) as usize;
    let mut traders: std::collections::BTreeMap<NodeId, Vec<u64>> = Default::default();
    let mut all = vec![0u64; buckets];
    for r in &answered {
        let b = ((secs(history, r.completed_us) / width) as usize).min(buckets - 1);
        traders.entry(r.trader).or_insert_with(|| vec![0; buckets])[b] += 1;
        all[b] += 1;
    }
    let line = |label: String, counts: &[u64], total| Line {
        label,
        points: counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let start = i as f64 * width;
                let covered = if i + 1 == buckets {
                    (end - start).max(1e-3)
                } else {
                    width
                };
                (start + covered / 2.0, c as f64 / covered)
            })
            .collect(),
        total,
    };
    let mut lines: Vec<Line> = traders
        .iter()
        .map(|(t, c)| line(t.to_string(), c, false))
        .collect();
    if traders.len() > 1 {
        lines.push(line("all traders".into(), &all, true));
    }
    TimePlot {
        stem: "throughput",
        title: format!("Throughput per trader ({} mode)", report.mode),
        y_desc: "answered requests / s".into(),
        lines,
        dots: Vec::new(),
        notes: vec![format!(
            "requests answered (ok or refused), counted at completion, in {}-ms buckets",
            (width * 1000.0).round()
        )],
        x_max,
        bands: Vec::new(),
        scale: Scale::Linear,
    }
}

/// The latency CDF of answered requests, with the report's percentiles.
pub fn latency(report: &Report, history: &History) -> LatencyPlot {
    let mut ms: Vec<f64> = history
        .requests
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| (r.latency_us.max(1)) as f64 / 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len() as f64;
    let points = ms
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, (i + 1) as f64 / n))
        .collect();
    let l = &report.latency;
    LatencyPlot {
        points,
        marks: vec![
            (format!("p50 {:.2} ms", l.p50_ms), l.p50_ms),
            (format!("p90 {:.2} ms", l.p90_ms), l.p90_ms),
            (format!("p99 {:.2} ms", l.p99_ms), l.p99_ms),
        ],
        title: format!(
            "Latency of {} answered requests ({} mode)",
            ms.len(),
            report.mode
        ),
    }
}

/// Stock per product over time, reconstructed (see the module docs).
pub fn stock(report: &Report, history: &History) -> TimePlot {
    let x_max = x_max(report, history);
    let mut lines = Vec::new();
    let mut dots = Vec::new();
    for (i, p) in report.products.iter().enumerate() {
        let mut level = p.initial as f64;
        let mut points = vec![(0.0, level)];
        for r in history
            .requests
            .iter()
            .filter(|r| r.product.0 as usize == i && r.outcome == Outcome::Ok)
        {
            let x = secs(history, r.completed_us);
            points.push((x, level));
            level += match r.side {
                Side::Sell => f64::from(r.granted.0),
                Side::Buy => -f64::from(r.granted.0),
            };
            points.push((x, level));
        }
        points.push((x_max, level));
        lines.push(Line {
            label: p.name.clone(),
            points,
            total: false,
        });
        dots.push((
            format!("{}: warehouse's final stock", p.name),
            x_max,
            p.final_stock as f64,
        ));
    }
    TimePlot {
        stem: "stock",
        title: format!("Stock per product ({} mode)", report.mode),
        y_desc: "items in stock".into(),
        lines,
        dots,
        notes: vec![
            "reconstructed: initial + acknowledged sells − granted buys, in completion order"
                .into(),
        ],
        x_max,
        bands: Vec::new(),
        scale: Scale::Linear,
    }
}

/// Cumulative oversells over time, from the warehouse's flush events.
pub fn oversells(report: &Report, history: &History) -> TimePlot {
    let x_max = x_max(report, history);
    let events: Vec<(NodeId, f64, f64)> = history
        .flushes
        .iter()
        .map(|f| (f.trader, secs(history, f.wall_us), f64::from(f.oversells)))
        .collect();
    let lines = per_trader(&events, x_max);
    let mut notes = vec![format!(
        "the warehouse counted {} oversells in all",
        report.oversells
    )];
    if history.flushes.is_empty() {
        notes.push(format!(
            "no cache flush in this run's history ({} mode)",
            report.mode
        ));
    }
    TimePlot {
        stem: "oversells",
        title: format!("Oversells over time ({} mode)", report.mode),
        y_desc: "oversells (cumulative)".into(),
        lines,
        dots: Vec::new(),
        notes,
        x_max,
        bands: Vec::new(),
        scale: Scale::Linear,
    }
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Latency over time: per bucket of completion time, the p50–p90 and
/// p90–p99 bands and the p50 and p99 lines (log axis).
pub fn latency_over_time(report: &Report, history: &History) -> TimePlot {
    let x_max = x_max(report, history);
    let answered: Vec<(f64, f64)> = history
        .requests
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| {
            (
                secs(history, r.completed_us),
                r.latency_us.max(1) as f64 / 1000.0,
            )
        })
        .collect();
    let end = answered.iter().map(|a| a.0).fold(0.0, f64::max).max(1e-3);
    let width = bucket_width(end);
    let buckets = (end / width).round().max(1.0) as usize;
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    for (at, ms) in &answered {
        per[((at / width) as usize).min(buckets - 1)].push(*ms);
    }
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for (i, v) in per.iter_mut().enumerate().filter(|(_, v)| !v.is_empty()) {
        v.sort_by(f64::total_cmp);
        let x = (i as f64 + 0.5) * width;
        let [a, b, c] = [0.5, 0.9, 0.99].map(|q| quantile(v, q).log10());
        p50.push((x, a));
        p99.push((x, c));
        low.push((x, a, b));
        high.push((x, b, c));
    }
    let line = |label: &str, points, total| Line {
        label: label.into(),
        points,
        total,
    };
    TimePlot {
        stem: "latency_time",
        title: format!("Latency over time ({} mode)", report.mode),
        y_desc: "latency (ms, log scale)".into(),
        lines: vec![line("p99", p99, false), line("p50", p50, true)],
        dots: Vec::new(),
        notes: vec![format!(
            "answered requests, by completion time, in {}-ms buckets",
            (width * 1000.0).round()
        )],
        x_max,
        bands: vec![
            Band {
                label: "p50–p90".into(),
                points: low,
            },
            Band {
                label: "p90–p99".into(),
                points: high,
            },
        ],
        scale: Scale::Log10,
    }
}

/// A cumulative count over time, as a step line from 0 at time 0 to `x_max`:
/// `events` are `(seconds, amount)` in any order.
fn cumulative(mut events: Vec<(f64, f64)>, start: f64, x_max: f64) -> Vec<(f64, f64)> {
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = start;
    let mut points = vec![(0.0, total)];
    for (x, amount) in events {
        points.push((x, total));
        total += amount;
        points.push((x, total));
    }
    points.push((x_max, total));
    points
}

/// Cumulative lines of `(trader, seconds, amount)` events: one per trader,
/// and one in all.
fn per_trader(events: &[(NodeId, f64, f64)], x_max: f64) -> Vec<Line> {
    let of = |t: Option<NodeId>| {
        let picked = events
            .iter()
            .filter(|e| t.is_none_or(|t| t == e.0))
            .map(|e| (e.1, e.2))
            .collect();
        cumulative(picked, 0.0, x_max)
    };
    let traders: std::collections::BTreeSet<NodeId> = events.iter().map(|e| e.0).collect();
    let mut lines: Vec<Line> = traders
        .iter()
        .map(|&t| Line {
            label: t.to_string(),
            points: of(Some(t)),
            total: false,
        })
        .collect();
    lines.push(Line {
        label: "all traders".into(),
        points: of(None),
        total: true,
    });
    lines
}

/// Items shipped over time, cumulative, per trader and in all, as the
/// buyers were told; the warehouse's own count is a dot at the end.
pub fn shipped(report: &Report, history: &History) -> TimePlot {
    let x_max = x_max(report, history);
    let granted: Vec<(NodeId, f64, f64)> = history
        .requests
        .iter()
        .filter(|r| r.side == Side::Buy && r.outcome == Outcome::Ok)
        .map(|r| {
            (
                r.trader,
                secs(history, r.completed_us),
                f64::from(r.granted.0),
            )
        })
        .collect();
    let lines = per_trader(&granted, x_max);
    let told: f64 = granted.iter().map(|g| g.2).sum();
    TimePlot {
        stem: "shipped",
        title: format!("Sell out {} items! ({} mode)", report.shipped, report.mode),
        y_desc: "items shipped (cumulative)".into(),
        lines,
        dots: vec![(
            "the warehouse's count of items shipped".into(),
            x_max,
            report.shipped as f64,
        )],
        notes: vec![format!(
            "items of granted buys, by the time the buyer heard: {told} in all"
        )],
        x_max,
        bands: Vec::new(),
        scale: Scale::Linear,
    }
}

/// The warehouse's own stock per product over time, from its audit table of
/// applied requests (see the module docs for when each is placed).
pub fn warehouse_stock(report: &Report, history: &History, store: &Snapshot) -> TimePlot {
    let x_max = x_max(report, history);
    // When each request was settled, as its client saw it: completed, or
    // else invoked (a client killed while waiting).
    let mut seen: std::collections::HashMap<RequestId, (u64, NodeId)> = history
        .invokes
        .iter()
        .map(|i| (i.id, (i.wall_us, i.trader)))
        .collect();
    seen.extend(
        history
            .requests
            .iter()
            .map(|r| (r.id, (r.completed_us, r.trader))),
    );
    let mut flushes: std::collections::BTreeMap<NodeId, Vec<u64>> = Default::default();
    for f in &history.flushes {
        flushes.entry(f.trader).or_default().push(f.wall_us);
    }
    for times in flushes.values_mut() {
        times.sort_unstable();
    }
    let applied_at = |id: &RequestId| -> Option<f64> {
        let &(at, trader) = seen.get(id)?;
        let at = match report.mode {
            Mode::Cached => {
                let times = flushes.get(&trader)?;
                times[times.partition_point(|&t| t < at).min(times.len() - 1)].max(at)
            }
            _ => at,
        };
        Some(secs(history, at))
    };
    let mut lines = Vec::new();
    let mut dots = Vec::new();
    let mut unplaced = 0;
    for (i, p) in report.products.iter().enumerate() {
        let mut events = Vec::new();
        for (id, a) in store
            .applied
            .iter()
            .filter(|(_, a)| a.product.0 as usize == i)
        {
            let change = match a.side {
                Side::Sell => f64::from(a.qty.0),
                Side::Buy => -f64::from(a.qty.0),
            };
            match applied_at(id) {
                Some(x) => events.push((x, change)),
                None => unplaced += 1,
            }
        }
        lines.push(Line {
            label: p.name.clone(),
            points: cumulative(events, p.initial as f64, x_max),
            total: false,
        });
        dots.push((
            format!("{}: final stock", p.name),
            x_max,
            p.final_stock as f64,
        ));
    }
    let mut notes = vec![match report.mode {
        Mode::Cached => {
            "what the warehouse applied, at the cache flush that followed each request".to_string()
        }
        _ => "what the warehouse applied, at the time each request was answered".to_string(),
    }];
    if unplaced > 0 {
        notes.push(format!(
            "{unplaced} applied requests left out: no history says when they were made"
        ));
    }
    TimePlot {
        stem: "warehouse",
        title: format!("The warehouse's stock ({} mode)", report.mode),
        y_desc: "items in the warehouse".into(),
        lines,
        dots,
        notes,
        x_max,
        bands: Vec::new(),
        scale: Scale::Linear,
    }
}

/// Which peers were traders over the run (see the module docs).
pub fn roles(report: &Report, history: &History) -> RolesPlot {
    let x_max = x_max(report, history);
    let mut current: Vec<NodeId> = Vec::new();
    let mut since: std::collections::BTreeMap<NodeId, f64> = Default::default();
    let mut spans = Vec::new();
    let mut notes = Vec::new();
    let mut death_known = false;
    let names = |v: &[NodeId]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The warehouse's commits are the authority; a run without them (an
    // older run directory) is read from the peers' records.
    let committed = history
        .failover
        .iter()
        .any(|r| matches!(r.what, Happening::Committed { .. }));
    for r in history
        .failover
        .iter()
        .filter(|r| !during_stop(report.stopped_us, r.wall_us))
    {
        // As a peer's membership does: a late election result does not
        // bring back a trader known dead.
        let (next, why) = match &r.what {
            Happening::Committed { view, cause, .. } => {
                (&view.traders, format!("{} committed ({cause})", view.epoch))
            }
            _ if committed => continue,
            Happening::Elected { traders, .. } if !death_known => (traders, "elected".to_string()),
            Happening::Detected { traders, dead, .. } => {
                death_known = true;
                let by = r.by.unwrap_or_default();
                (traders, format!("{by} declared {dead} dead"))
            }
            Happening::Promoted { traders, .. } => {
                (traders, format!("{} promoted", r.by.unwrap_or_default()))
            }
            _ => continue,
        };
        let mut next = next.clone();
        next.sort_unstable();
        next.dedup();
        if next == current {
            continue;
        }
        let at = secs(history, r.wall_us);
        for gone in current.iter().filter(|t| !next.contains(t)) {
            if let Some(from) = since.remove(gone) {
                spans.push(Span {
                    node: *gone,
                    from_s: from,
                    to_s: at,
                    undetected: false,
                });
            }
        }
        for new in next.iter().filter(|t| !current.contains(t)) {
            since.insert(*new, at);
        }
        notes.push(format!("{at:.2} s: {why}; traders {}", names(&next)));
        current = next;
    }
    for (node, from) in since {
        spans.push(Span {
            node,
            from_s: from,
            to_s: x_max,
            undetected: false,
        });
    }
    // A trader killed is dead from the kill on, though listed until detected.
    for (victim, r) in history.faults() {
        if !matches!(
            r.what,
            Happening::Fault {
                fault: FaultKind::Kill,
                ..
            }
        ) {
            continue;
        }
        let at = secs(history, r.wall_us);
        if let Some(i) = spans
            .iter()
            .position(|s| s.node == victim && s.from_s <= at && at < s.to_s)
        {
            let after = Span {
                from_s: at,
                undetected: true,
                ..spans[i].clone()
            };
            spans[i].to_s = at;
            spans.push(after);
        }
    }
    spans.sort_by(|a, b| {
        (a.node, a.from_s)
            .partial_cmp(&(b.node, b.from_s))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    const SHOWN: usize = 6;
    if notes.len() > SHOWN {
        let more = notes.len() - SHOWN;
        notes.truncate(SHOWN);
        notes.push(format!("and {more} more changes"));
    }
    if notes.is_empty() {
        notes.push("no peer recorded an election result".into());
    }
    let role_of = |n: NodeId| {
        if report.buyers.contains(&n) {
            " (buyer)"
        } else if report.sellers.contains(&n) {
            " (seller)"
        } else {
            ""
        }
    };
    RolesPlot {
        title: format!("Traders over time ({} mode)", report.mode),
        rows: (1..=report.peers)
            .map(NodeId)
            .map(|n| (n, format!("{n}{}", role_of(n))))
            .collect(),
        spans,
        notes,
        x_max,
    }
}

/// Every plot of a run, in the order the report shows them.
pub fn charts(report: &Report, history: &History, store: &Snapshot) -> Vec<Chart> {
    vec![
        Chart::Time(throughput(report, history)),
        Chart::Time(latency_over_time(report, history)),
        Chart::Latency(latency(report, history)),
        Chart::Time(shipped(report, history)),
        Chart::Time(stock(report, history)),
        Chart::Time(warehouse_stock(report, history, store)),
        Chart::Roles(roles(report, history)),
        Chart::Time(oversells(report, history)),
    ]
}

/// Writes every plot as PNG and SVG into `dir`; returns what it drew.
pub fn write(
    dir: &Path,
    report: &Report,
    history: &History,
    store: &Snapshot,
) -> anyhow::Result<Vec<Drawn>> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let marks = markers(history, report.stopped_us);
    charts(report, history, store)
        .iter()
        .map(|chart| save(dir, chart, &marks))
        .collect()
}

/// Draws one plot as PNG (a file) and SVG (a file and the text returned).
/// Writes one time plot (an experiment's) as PNG and SVG into `dir`;
/// returns the two files.
pub fn write_time(dir: &Path, plot: &TimePlot, marks: &[Marker]) -> anyhow::Result<Vec<PathBuf>> {
    let d = save(dir, &Chart::Time(plot.clone()), marks)?;
    Ok(vec![d.png, d.svg_file])
}

/// Writes one category plot (an experiment's) as PNG and SVG into `dir`;
/// returns the two files.
pub fn write_category(dir: &Path, plot: &CategoryPlot) -> anyhow::Result<Vec<PathBuf>> {
    let d = save(dir, &Chart::Category(plot.clone()), &[])?;
    Ok(vec![d.png, d.svg_file])
}

fn save(dir: &Path, chart: &Chart, marks: &[Marker]) -> anyhow::Result<Drawn> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stem = chart.stem().to_string();
    let png = dir.join(format!("{stem}.png"));
    let svg_file = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, chart, marks)
            .and_then(|()| root.present())
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", png.display()))?;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, chart, marks)
            .and_then(|()| root.present())
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg_file.display()))?;
    }
    std::fs::write(&svg_file, &svg)
        .with_context(|| format!("cannot write {}", svg_file.display()))?;
    Ok(Drawn {
        stem,
        title: chart.title().to_string(),
        png,
        svg_file,
        svg,
    })
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    marks: &[Marker],
) -> DrawResult<DB> {
    match chart {
        Chart::Time(plot) => time_chart(root, plot, marks),
        Chart::Latency(plot) => latency_chart(root, plot),
        Chart::Roles(plot) => roles_chart(root, plot, marks),
        Chart::Category(plot) => category_chart(root, plot),
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

fn time_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &TimePlot,
    marks: &[Marker],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let values = plot
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(plot.dots.iter().map(|d| d.2))
        .chain(plot.bands.iter().flat_map(|b| b.points.iter().map(|p| p.2)));
    // Head room above the data for the notes and the legend: the legend's
    // share of the plot's height (about 560 px, 22 px an entry), at least 23%.
    let kinds = [
        MarkerKind::Fault,
        MarkerKind::Detection,
        MarkerKind::Network,
    ]
    .iter()
    .filter(|k| marks.iter().any(|m| m.kind == **k))
    .count();
    let entries = plot.lines.len() + plot.dots.len() + plot.bands.len() + kinds;
    let share = ((entries as f64 * NOTE_LINE + 40.0) / 560.0).clamp(0.23, 0.6);
    let room = share / (1.0 - share);
    let (y0, y1) = match plot.scale {
        Scale::Linear => {
            let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let span = hi - lo;
            (
                if lo < 0.0 { lo - 0.05 * span } else { 0.0 },
                hi + room * span,
            )
        }
        Scale::Log10 => {
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            // Whole decades, and head room as above.
            let (lo, hi) = if lo.is_finite() {
                (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
            } else {
                (-1.0, 1.0)
            };
            (lo, hi + room * (hi - lo))
        }
    };
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, font(30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..plot.x_max * 1.02, y0..y1)?;
    // Every linear plot over time counts things: whole-number labels, one per
    // unit when the range is small (else rounding would print a label twice).
    // A log plot is labelled at whole decades.
    let y_labels = if plot.scale == Scale::Log10 || y1 - y0 < 10.0 {
        (y1 - y0).floor() as usize + 1
    } else {
        10
    };
    let y_fmt = |v: &f64| match plot.scale {
        Scale::Linear => format!("{v:.0}"),
        Scale::Log10 => {
            let shown = 10f64.powf(*v);
            if shown >= 1.0 {
                format!("{shown:.0}")
            } else {
                format!("{shown:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        }
    };
    chart
        .configure_mesh()
        .x_desc("time since the market opened (s)")
        .y_desc(plot.y_desc.as_str())
        .y_labels(y_labels)
        .y_label_formatter(&y_fmt)
        .axis_desc_style(font(22))
        .label_style(font(18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    for (i, band) in plot.bands.iter().enumerate() {
        let fill = COLORS[0].mix(0.35 / (i + 1) as f64).filled();
        let outline: Vec<(f64, f64)> = band
            .points
            .iter()
            .map(|p| (p.0, p.1))
            .chain(band.points.iter().rev().map(|p| (p.0, p.2)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(outline, fill)))?
            .label(band.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 24, y + 6)], fill));
    }
    for (i, line) in plot.lines.iter().enumerate() {
        let style = if line.total {
            BLACK.stroke_width(3)
        } else {
            COLORS[i % COLORS.len()].stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), style))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
    }
    for (i, (label, x, y)) in plot.dots.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(std::iter::once(Circle::new((*x, *y), 7, color.filled())))?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 12, y), 6, color.filled()));
    }
    draw_markers(&mut chart, marks, y0, y1)?;
    draw_notes(root, &plot.notes, 120)?;
    if !plot.lines.is_empty() {
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

/// The legend of every series labelled, in a corner.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    corner: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(corner)
        .label_font(font(17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

type TimeChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The faults and detections, as dashed vertical lines with their labels.
fn draw_markers<DB: DrawingBackend>(
    chart: &mut TimeChart<'_, DB>,
    marks: &[Marker],
    y0: f64,
    y1: f64,
) -> DrawResult<DB> {
    // Network faults first, as shaded bands under the lines.
    let x_end = chart.x_range().end;
    let mut first = true;
    for (n, m) in marks
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == MarkerKind::Network)
    {
        let fill = NETWORK_COLOR.mix(0.15).filled();
        let band = Rectangle::new([(m.at_s, y0), (m.until_s.unwrap_or(x_end), y1)], fill);
        let drawn = chart.draw_series(std::iter::once(band))?;
        if first {
            drawn
                .label("network fault (start to heal)")
                .legend(move |(x, y)| {
                    Rectangle::new(
                        [(x, y - 6), (x + 24, y + 6)],
                        NETWORK_COLOR.mix(0.3).filled(),
                    )
                });
            first = false;
        }
        let y = y1 - (0.12 + 0.04 * (n % 3) as f64) * (y1 - y0);
        chart.draw_series(std::iter::once(Text::new(
            format!(" {}", m.label),
            (m.at_s, y),
            font(16).color(&NETWORK_COLOR),
        )))?;
    }
    for kind in [MarkerKind::Fault, MarkerKind::Detection] {
        let (color, name) = match kind {
            MarkerKind::Fault => (FAULT_COLOR, "fault injected"),
            MarkerKind::Detection => (DETECTION_COLOR, "failure detected"),
            MarkerKind::Network => continue,
        };
        let style = color.stroke_width(2);
        let mut first = true;
        // `n` counts every marker in time order, faults and detections alike.
        for (n, m) in marks.iter().enumerate().filter(|(_, m)| m.kind == kind) {
            let series = DashedLineSeries::new([(m.at_s, y0), (m.at_s, y1)], 10, 6, style);
            let drawn = chart.draw_series(series)?;
            if first {
                drawn
                    .label(name)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
                first = false;
            }
            // Labels step down so that close lines don't write over each other.
            // Below the notes, above the data (which ends at 77% of the height).
            let y = y1 - (0.12 + 0.04 * (n % 3) as f64) * (y1 - y0);
            chart.draw_series(std::iter::once(Text::new(
                format!(" {}", m.label),
                (m.at_s, y),
                font(16).color(&color),
            )))?;
        }
    }
    Ok(())
}

/// Lines of text in a plot's top-left corner, from `left` pixels (right of
/// the y axis's labels).
fn draw_notes<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    notes: &[String],
    left: i32,
) -> DrawResult<DB> {
    for (i, note) in notes.iter().enumerate() {
        root.draw(&Text::new(
            note.clone(),
            (left, 70 + 22 * i as i32),
            font(17).color(&RGBColor(80, 80, 80)),
        ))?;
    }
    Ok(())
}

/// A number as a point label: whole when it is (or is above 10), else two decimals.
fn short(v: f64) -> String {
    if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn category_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &CategoryPlot,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let n = plot.categories.len().max(1);
    let hi = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().flatten().map(|(m, d)| m + d))
        .fold(1.0f64, f64::max);
    // Head room for the notes and the legend above the data.
    let y1 = hi * 1.35;
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, font(30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..y1)?;
    // The categories are written under the axis by hand: plotters would put
    // number labels between them.
    let y_fmt = |v: &f64| short(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&y_fmt)
        .x_desc(plot.x_desc.as_str())
        .y_desc(plot.y_desc.as_str())
        .axis_desc_style(font(22))
        .label_style(font(18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, c) in plot.categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, 0.0));
        root.draw(&Text::new(
            c.clone(),
            (x, y + 8),
            font(20).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    for s in &plot.series {
        let color = COLORS[s.color % COLORS.len()];
        let style = color.stroke_width(3);
        let points: Vec<(f64, f64, f64)> = s
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|(m, d)| (i as f64, m, d)))
            .collect();
        let line = points.iter().map(|&(x, m, _)| (x, m));
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(line, 12, 8, style))?
        } else {
            chart.draw_series(LineSeries::new(line, style))?
        };
        let dashed = s.dashed;
        drawn.label(s.label.as_str()).legend(move |(x, y)| {
            let to = if dashed { x + 10 } else { x + 24 };
            PathElement::new([(x, y), (to, y)], style)
        });
        for &(x, m, d) in &points {
            chart.draw_series(std::iter::once(Circle::new((x, m), 6, color.filled())))?;
            if d > 0.0 {
                let w = 0.04;
                for path in [
                    vec![(x, m - d), (x, m + d)],
                    vec![(x - w, m - d), (x + w, m - d)],
                    vec![(x - w, m + d), (x + w, m + d)],
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        path,
                        color.stroke_width(2),
                    )))?;
                }
            }
            chart.draw_series(std::iter::once(Text::new(
                format!("  {}", short(m)),
                (x, m),
                font(16).color(&color),
            )))?;
        }
    }
    draw_notes(root, &plot.notes, 120)?;
    if !plot.series.is_empty() {
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

/// Height of the notes' lines, in pixels (see [`draw_notes`]).
const NOTE_LINE: f64 = 22.0;

fn roles_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &RolesPlot,
    marks: &[Marker],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let n = plot.rows.len().max(1) as f64;
    // Row i from the top is centred on y = n - i. The notes need their
    // lines' share of the plot's height (about 560 px) above the rows.
    let share = ((plot.notes.len() as f64 + 1.5) * NOTE_LINE / 560.0).min(0.6);
    let (y0, y1) = (0.4, 0.4 + (n + 0.2) / (1.0 - share));
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, font(30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..plot.x_max * 1.02, y0..y1)?;
    let no_label = |_: &f64| String::new();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("time since the market opened (s)")
        .y_label_formatter(&no_label)
        .axis_desc_style(font(22))
        .label_style(font(18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let y_of = |node: NodeId| {
        let i = plot.rows.iter().position(|r| r.0 == node).unwrap_or(0);
        n - i as f64
    };
    for (i, (_, label)) in plot.rows.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, n - i as f64));
        root.draw(&Text::new(
            label.clone(),
            (x - 12, y),
            font(18).pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    for undetected in [false, true] {
        let (color, name) = if undetected {
            (UNDETECTED_COLOR, "killed, not yet detected")
        } else {
            (TRADER_COLOR, "trader")
        };
        let bars: Vec<_> = plot
            .spans
            .iter()
            .filter(|s| s.undetected == undetected)
            .map(|s| {
                let y = y_of(s.node);
                Rectangle::new([(s.from_s, y - 0.3), (s.to_s, y + 0.3)], color.filled())
            })
            .collect();
        if !bars.is_empty() {
            chart.draw_series(bars)?.label(name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 24, y + 6)], color.filled())
            });
        }
    }
    draw_markers(&mut chart, marks, y0, y1)?;
    draw_notes(root, &plot.notes, 200)?;
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn latency_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &LatencyPlot,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    // Whole decades, so the log axis is labelled 0.1, 1, 10, ...
    let decade = |v: f64, up: bool| {
        let e = v.log10();
        10f64.powf(if up { e.ceil() } else { e.floor() })
    };
    let lo = decade(plot.points.first().map_or(0.1, |p| p.0).max(0.001), false);
    let hi = decade(plot.points.last().map_or(10.0, |p| p.0), true).max(lo * 10.0);
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, font(30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.05)?;
    let x_fmt = |v: &f64| format!("{v}");
    chart
        .configure_mesh()
        .x_label_formatter(&x_fmt)
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of requests at or below")
        .axis_desc_style(font(22))
        .label_style(font(18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let style = COLORS[0].stroke_width(3);
    chart
        .draw_series(LineSeries::new(plot.points.iter().copied(), style))?
        .label("cumulative distribution")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
    for (i, (label, ms)) in plot.marks.iter().enumerate() {
        let color = [COLORS[2], COLORS[1], FAULT_COLOR][i % 3];
        let style = color.stroke_width(2);
        let ms = ms.clamp(lo, hi);
        chart
            .draw_series(DashedLineSeries::new([(ms, 0.0), (ms, 1.05)], 10, 6, style))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
        // Written right of its line, or left of it near the right edge.
        let near_edge = (ms / lo).ln() / (hi / lo).ln() > 0.8;
        let (text, anchor) = if near_edge {
            (format!("{label} "), HPos::Right)
        } else {
            (format!(" {label}"), HPos::Left)
        };
        chart.draw_series(std::iter::once(Text::new(
            text,
            (ms, 0.35 - 0.08 * i as f64),
            font(18).color(&color).pos(Pos::new(anchor, VPos::Top)),
        )))?;
    }
    if plot.points.is_empty() {
        root.draw(&Text::new(
            "no answered request in this run".to_string(),
            (SIZE.0 as i32 / 2, SIZE.1 as i32 / 2),
            font(24).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{sample, sample_with_store};

    #[test]
    fn stock_is_initial_plus_sells_minus_buys_in_completion_order() {
        let (report, h) = sample();
        let plot = stock(&report, &h);
        let levels: Vec<f64> = plot.lines[0].points.iter().map(|p| p.1).collect();
        assert_eq!(levels, [50.0, 50.0, 55.0, 55.0, 52.0, 52.0, 48.0, 48.0]);
        assert_eq!(
            plot.dots[0].2, 48.0,
            "the warehouse ends where the history does"
        );
    }

    #[test]
    fn throughput_counts_each_trader_in_its_bucket() {
        let (report, h) = sample();
        let plot = throughput(&report, &h);
        // The last answer is at 1.5 s: 15 buckets of 100 ms.
        let width = bucket_width(1.5);
        assert_eq!(width, 0.1);
        assert_eq!(plot.lines[0].points.len(), 15);
        let names: Vec<&str> = plot.lines.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(names, ["peer5", "peer6", "all traders"]);
        let total: f64 = plot.lines[2].points.iter().map(|p| p.1 * width).sum();
        assert!((total - 3.0).abs() < 1e-9);
    }

    #[test]
    fn faults_and_detections_become_markers() {
        let (_, h) = sample();
        let m = markers(&h, 0);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].kind, m[0].at_s), (MarkerKind::Fault, 1.0));
        assert_eq!(m[1].label, "peer5 declares peer6 dead");
    }

    #[test]
    fn a_network_fault_is_a_band_from_its_start_to_its_heal_and_is_drawn() {
        use crate::config::NetFault;
        use crate::membership::Record;
        let (report, mut h, snap) = sample_with_store();
        let cut = NetFault::Partition {
            groups: vec![vec![NodeId(5)], vec![NodeId(6)]],
        };
        for (fault, at) in [
            (FaultKind::Partition, 1_500_000),
            (FaultKind::Heal, 2_500_000),
        ] {
            h.failover.push(Record {
                wall_us: h.first_us + at,
                lamport: None,
                by: None,
                what: Happening::Network {
                    fault,
                    change: cut.clone(),
                },
            });
        }
        let m = markers(&h, 0);
        let band = m.iter().find(|x| x.kind == MarkerKind::Network).unwrap();
        assert_eq!((band.at_s, band.until_s), (1.5, Some(2.5)));
        assert_eq!(band.label, "partition [5] | [6]");
        let dir = tempfile::tempdir().unwrap();
        let drawn = write(dir.path(), &report, &h, &snap).unwrap();
        let throughput = drawn.iter().find(|d| d.stem == "throughput").unwrap();
        assert!(throughput.svg.contains("network fault (start to heal)"));
    }

    #[test]
    fn every_plot_is_written_as_png_and_svg() {
        let (report, h, snap) = sample_with_store();
        let dir = tempfile::tempdir().unwrap();
        let drawn = write(dir.path(), &report, &h, &snap).unwrap();
        let stems: Vec<&str> = drawn.iter().map(|d| d.stem.as_str()).collect();
        assert_eq!(
            stems,
            [
                "throughput",
                "latency_time",
                "latency",
                "shipped",
                "stock",
                "warehouse",
                "roles",
                "oversells"
            ]
        );
        for d in &drawn {
            let png = std::fs::read(&d.png).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{}", d.png.display());
            assert_eq!(std::fs::read_to_string(&d.svg_file).unwrap(), d.svg);
            assert!(d.svg.starts_with("<svg"), "{}", d.stem);
        }
        // An empty history still draws (with a note), rather than failing.
        let empty = History::default();
        assert_eq!(write(dir.path(), &report, &empty, &snap).unwrap().len(), 8);
    }
}
