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
//!   flush events (none in `strong` mode).
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

use super::Report;
use crate::history::{History, Outcome};
use crate::membership::Happening;
use crate::wire::{NodeId, Side};

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

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(ok, "the embedded font DejaVuSans.ttf does not load");
    Ok(())
}

/// A vertical line on the time plots.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at_s: f64,
    pub label: String,
    pub kind: MarkerKind,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    Fault,
    Detection,
}

/// One line of a time plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// The line is black and thicker (a total).
    pub total: bool,
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

fn secs(history: &History, us: u64) -> f64 {
    us.saturating_sub(history.first_us) as f64 / 1e6
}

/// The faults and their detections, as vertical lines.
pub fn markers(history: &History) -> Vec<Marker> {
    let mut m: Vec<Marker> = history
        .faults()
        .map(|(victim, r)| Marker {
            at_s: secs(history, r.wall_us),
            label: match &r.what {
                Happening::Fault { fault, .. } => format!("{fault:?} {victim}").to_lowercase(),
                _ => format!("fault {victim}"),
            },
            kind: MarkerKind::Fault,
        })
        .collect();
    m.extend(history.detections().map(|(dead, r)| Marker {
        at_s: secs(history, r.wall_us),
        label: format!("{} declares {dead} dead", r.by.unwrap_or_default()),
        kind: MarkerKind::Detection,
    }));
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
    }
}

/// Cumulative oversells over time, from the warehouse's flush events.
pub fn oversells(report: &Report, history: &History) -> TimePlot {
    let x_max = x_max(report, history);
    let mut flushes: Vec<_> = history.flushes.iter().collect();
    flushes.sort_by_key(|f| f.wall_us);
    let cumulative = |of: Option<NodeId>| {
        let mut total = 0.0;
        let mut points = vec![(0.0, 0.0)];
        for f in flushes.iter().filter(|f| of.is_none_or(|t| t == f.trader)) {
            let x = secs(history, f.wall_us);
            points.push((x, total));
            total += f64::from(f.oversells);
            points.push((x, total));
        }
        points.push((x_max, total));
        points
    };
    let traders: std::collections::BTreeSet<NodeId> = flushes.iter().map(|f| f.trader).collect();
    let mut lines: Vec<Line> = traders
        .iter()
        .map(|&t| Line {
            label: t.to_string(),
            points: cumulative(Some(t)),
            total: false,
        })
        .collect();
    lines.push(Line {
        label: "all traders".into(),
        points: cumulative(None),
        total: true,
    });
    let mut notes = vec![format!(
        "the warehouse counted {} oversells in all",
        report.oversells
    )];
    if flushes.is_empty() {
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
    }
}

/// Writes every plot as PNG and SVG into `dir`; returns the files written.
pub fn write(dir: &Path, report: &Report, history: &History) -> anyhow::Result<Vec<PathBuf>> {
    let marks = markers(history);
    let mut files = Vec::new();
    for plot in [
        throughput(report, history),
        stock(report, history),
        oversells(report, history),
    ] {
        files.extend(write_time(dir, &plot, &marks)?);
    }
    let lat = latency(report, history);
    files.extend(save(dir, "latency", |root: &dyn AnyRoot| {
        root.latency(&lat)
    })?);
    Ok(files)
}

/// Writes one plot over time, with `marks`, as PNG and SVG into `dir`.
pub fn write_time(dir: &Path, plot: &TimePlot, marks: &[Marker]) -> anyhow::Result<Vec<PathBuf>> {
    save(dir, plot.stem, |root: &dyn AnyRoot| root.time(plot, marks))
}

/// Writes one plot against categories as PNG and SVG into `dir`.
pub fn write_category(dir: &Path, plot: &CategoryPlot) -> anyhow::Result<Vec<PathBuf>> {
    save(dir, &plot.stem, |root: &dyn AnyRoot| root.category(plot))
}

/// The roots a plot is drawn on (PNG, SVG), behind one face.
trait AnyRoot {
    fn time(&self, plot: &TimePlot, marks: &[Marker]) -> Result<(), String>;
    fn latency(&self, plot: &LatencyPlot) -> Result<(), String>;
    fn category(&self, plot: &CategoryPlot) -> Result<(), String>;
}

impl<DB: DrawingBackend> AnyRoot for DrawingArea<DB, Shift> {
    fn time(&self, plot: &TimePlot, marks: &[Marker]) -> Result<(), String> {
        time_chart(self, plot, marks).map_err(|e| e.to_string())
    }
    fn latency(&self, plot: &LatencyPlot) -> Result<(), String> {
        latency_chart(self, plot).map_err(|e| e.to_string())
    }
    fn category(&self, plot: &CategoryPlot) -> Result<(), String> {
        category_chart(self, plot).map_err(|e| e.to_string())
    }
}

/// Draws one plot into `dir` as `<stem>.png` and `<stem>.svg`.
fn save(
    dir: &Path,
    stem: &str,
    draw: impl Fn(&dyn AnyRoot) -> Result<(), String>,
) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
    }
    Ok(vec![png, svg])
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
        .chain(plot.dots.iter().map(|d| d.2));
    let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Head room for the notes and the legend above the data.
    let span = hi - lo;
    let (y0, y1) = (
        if lo < 0.0 { lo - 0.05 * span } else { 0.0 },
        hi + 0.3 * span,
    );
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, font(30))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..plot.x_max * 1.02, y0..y1)?;
    // Every plot over time counts things: whole-number labels, one per unit
    // when the range is small (else rounding would print a label twice).
    let y_labels = if y1 - y0 < 10.0 {
        (y1 - y0).floor() as usize + 1
    } else {
        10
    };
    let y_fmt = |v: &f64| format!("{v:.0}");
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
    for kind in [MarkerKind::Fault, MarkerKind::Detection] {
        let (color, name) = match kind {
            MarkerKind::Fault => (FAULT_COLOR, "fault injected"),
            MarkerKind::Detection => (DETECTION_COLOR, "failure detected"),
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
    notes_and_legend(root, &mut chart, &plot.notes, !plot.lines.is_empty())
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
    notes_and_legend(root, &mut chart, &plot.notes, !plot.series.is_empty())
}

/// The notes in the plot's top-left corner, and the legend (if there are
/// series) in its top-right one.
fn notes_and_legend<'a, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    notes: &[String],
    legend: bool,
) -> DrawResult<DB> {
    for (i, note) in notes.iter().enumerate() {
        root.draw(&Text::new(
            note.clone(),
            (120, 70 + 22 * i as i32),
            font(17).color(&RGBColor(80, 80, 80)),
        ))?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(17))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::config::Config;
    use crate::history::Request;
    use crate::membership::Record;
    use crate::warehouse::ledger::Ledger;
    use crate::warehouse::store::Snapshot;
    use crate::wire::{ProductId, Qty, RequestId};
    use std::time::Duration;

    fn req(seq: u64, side: Side, granted: u32, trader: u32, at_ms: u64) -> Request {
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

    fn sample() -> (Report, History) {
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
        (report, h)
    }

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
        let m = markers(&h);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].kind, m[0].at_s), (MarkerKind::Fault, 1.0));
        assert_eq!(m[1].label, "peer5 declares peer6 dead");
    }

    #[test]
    fn every_plot_is_written_as_png_and_svg() {
        let (report, h) = sample();
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &report, &h).unwrap();
        assert_eq!(files.len(), 8);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            match f.extension().and_then(|e| e.to_str()) {
                Some("png") => assert_eq!(&bytes[1..4], b"PNG", "{}", f.display()),
                _ => assert!(String::from_utf8_lossy(&bytes).contains("<svg")),
            }
        }
        let plot = CategoryPlot {
            stem: "ratio".into(),
            title: "t".into(),
            x_desc: "buyers:sellers".into(),
            y_desc: "items".into(),
            categories: vec!["1:3".into(), "3:1".into()],
            series: vec![Series {
                label: "shipped".into(),
                points: vec![Some((10.0, 2.0)), None],
                dashed: true,
                color: 1,
            }],
            notes: vec![],
        };
        assert_eq!(write_category(dir.path(), &plot).unwrap().len(), 2);
        // An empty history still draws (with a note), rather than failing.
        let empty = History::default();
        assert_eq!(write(dir.path(), &report, &empty).unwrap().len(), 8);
    }
}
