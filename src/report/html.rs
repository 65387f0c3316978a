//! `report.html`: one self-contained page per run, to open in a browser. It
//! holds the summary's headline, the checker's verdicts, why the run was
//! degraded, the numbers, the failover timeline, every plot (the SVG inline),
//! the space-time diagrams of the message trace ([`super::diagrams`]: the
//! market's first second and around each fault) and the report itself as JSON (`<script type="application/json"
//! id="report-data">`). It fetches nothing: no script, stylesheet, font or
//! image comes from anywhere else, so it reads the same offline, from a
//! mail attachment or a CI artefact.

use std::fmt::Write;

use super::plots::Drawn;
use super::{Figure, Report, Status, during_stop};
use crate::history::History;
use crate::membership::{Happening, Record};
use crate::wire::NodeId;

/// Retries listed one by one in the timeline; beyond that, counted.
const RETRIES_LISTED: usize = 20;

/// Escapes text for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn names(nodes: &[NodeId]) -> String {
    super::id_list(nodes, |n| n.to_string())
}

/// What each plot shows, under it.
fn caption(stem: &str) -> &'static str {
    match stem {
        "throughput" => {
            "Answered requests per second, per trader and in all, counted at completion."
        }
        "latency_time" => {
            "Latency over time: per bucket of completion time, the p50–p90 and p90–p99 bands and the p50 and p99 lines (log axis)."
        }
        "latency" => "The distribution of answered requests' latency, with p50, p90 and p99.",
        "shipped" => {
            "Items shipped, cumulative, as the buyers were told (the document's \"Sell out N items!\"); the dot is the warehouse's own count."
        }
        "stock" => {
            "Stock per product as the clients saw it: initial + acknowledged sells − granted buys, in completion order; the dot is the warehouse's final stock."
        }
        "warehouse" => {
            "The warehouse's own stock: what it applied (shipped, not promised), each request when it was applied (strong: when answered; cached: at its trader's next flush)."
        }
        "roles" => {
            "Which peers were traders, from the election results, detections (message 8) and promotions; a trader killed and not yet detected is drawn pink."
        }
        "oversells" => "Oversells over time, cumulative, from the warehouse's cache flushes.",
        _ => "",
    }
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; }
.status { font-size: 1.2em; font-weight: bold; padding: 0.5em 0.8em; border-radius: 6px; }
.status.ok { background: #e3f4e3; color: #1d6b1d; }
.status.failed { background: #fde2e2; color: #a11; }
.status.degraded, .status.interrupted { background: #fff1d6; color: #8a5a00; }
.headline { font-family: ui-monospace, monospace; font-size: 1.1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.ok { color: #1d6b1d; font-weight: bold; }
td.failed { color: #a11; font-weight: bold; }
tr.stop td { color: #888; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure.plot { margin: 1.5em 0; }
figure.plot svg { width: 100%; height: auto; max-width: 1200px; border: 1px solid #ddd; }
figcaption { color: #555; margin-top: 0.3em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
nav a { margin-right: 1em; }
.diagram-box { max-height: 1100px; overflow: auto; border: 1px solid #ddd; }
figure.diagram svg { display: block; }
";

/// The page for `report`, with the plots `drawn` and the diagrams inlined.
pub fn page(report: &Report, history: &History, drawn: &[Drawn], diagrams: &[Figure]) -> String {
    let mut h = String::new();
    let status = report.status();
    let (class, said) = match status {
        Status::Ok => ("ok", "Every invariant held.".to_string()),
        Status::InvariantFailed => {
            let n = report.checks.iter().filter(|v| !v.ok).count();
            (
                "failed",
                format!("{n} of {} invariants FAILED.", report.checks.len()),
            )
        }
        Status::Interrupted => (
            "interrupted",
            "Interrupted by Ctrl-C; every invariant held.".to_string(),
        ),
        Status::Degraded => (
            "degraded",
            "Degraded: every invariant held, but the run did not go as configured.".to_string(),
        ),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>bazaar: {} ({} mode): {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&report.name),
        report.mode,
        esc(said.trim_end_matches('.'))
    );
    let _ = write!(
        h,
        "<header>\n<h1>Market \u{201c}{}\u{201d}</h1>\n\
         <p class=\"sub\">{} mode, seed {}, {} peers (traders {}; buyers {}; sellers {}); \
         {:.2} s of trading; run directory <code>{}</code></p>\n\
         <p id=\"status\" class=\"status {class}\">{}</p>\n\
         <p class=\"headline\">After {:.2} seconds: Oversell {} times! Sell out {} items!</p>\n</header>\n",
        esc(&report.name),
        report.mode,
        report.seed,
        report.peers,
        names(&report.traders),
        names(&report.buyers),
        names(&report.sellers),
        report.duration_s,
        esc(&report.run_dir.display().to_string()),
        esc(&said),
        report.duration_s,
        report.oversells,
        report.shipped
    );
    h.push_str(
        "<nav><a href=\"#checks\">verdicts</a><a href=\"#numbers\">numbers</a>\
         <a href=\"#failover\">failover</a><a href=\"#plots\">plots</a>\
         <a href=\"#diagrams\">diagrams</a><a href=\"#summary\">summary</a></nav>\n",
    );
    verdicts(&mut h, report);
    numbers(&mut h, report);
    timeline(&mut h, report, history);
    plots(&mut h, drawn);
    figures(&mut h, diagrams);
    let _ = write!(
        h,
        "<section id=\"summary\">\n<h2>The terminal summary</h2>\n<pre>{}</pre>\n</section>\n",
        esc(&report.summary())
    );
    // The report as data; `<` never appears raw, so the text cannot end the
    // script element (JSON reads `\u003c` as `<`).
    let json = serde_json::to_string(report)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
        .replace('<', "\\u003c");
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"report-data\">{json}</script>\n</body>\n</html>\n"
    );
    h
}

fn verdicts(h: &mut String, report: &Report) {
    h.push_str(
        "<section id=\"checks\">\n<h2>The checker's verdicts</h2>\n<table id=\"verdicts\">\n\
         <thead><tr><th>invariant</th><th>verdict</th><th>offenders</th><th>detail</th></tr></thead>\n<tbody>\n",
    );
    for v in &report.checks {
        let (class, mark) = if v.ok {
            ("ok", "ok")
        } else {
            ("failed", "FAILED")
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"{class}\">{mark}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&v.invariant),
            v.offenders,
            esc(&v.detail)
        );
    }
    h.push_str("</tbody>\n</table>\n");
    if !report.degraded.is_empty() {
        h.push_str("<h3>Why the run is degraded</h3>\n<ul id=\"degraded\">\n");
        for why in &report.degraded {
            let _ = writeln!(h, "<li>{}</li>", esc(why));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");
}

fn numbers(h: &mut String, report: &Report) {
    h.push_str("<section id=\"numbers\">\n<h2>The numbers</h2>\n<table id=\"figures\">\n<tbody>\n");
    for (label, text) in report.numbers() {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(label), esc(&text));
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// One row of the failover timeline.
struct Row {
    at_s: f64,
    lamport: String,
    by: String,
    what: String,
    during_stop: bool,
}

fn timeline(h: &mut String, report: &Report, history: &History) {
    let secs = |us: u64| us.saturating_sub(history.first_us) as f64 / 1e6;
    let by = |r: &Record| r.by.map_or("launcher".to_string(), |b| b.to_string());
    let row = |r: &Record, what: String| Row {
        at_s: secs(r.wall_us),
        lamport: r.lamport.map_or("?".into(), |l| l.0.to_string()),
        by: by(r),
        what,
        during_stop: during_stop(report.stopped_us, r.wall_us),
    };
    let mut rows: Vec<Row> = Vec::new();
    // Every peer records the election result it adopts: one row per list.
    let mut elected: Vec<(Vec<NodeId>, usize, Vec<String>)> = Vec::new();
    let retries = history.retries().count();
    for r in &history.failover {
        match &r.what {
            Happening::Elected { traders, .. } => {
                match elected.iter_mut().find(|(t, ..)| t == traders) {
                    Some((_, _, who)) => who.push(by(r)),
                    None => {
                        elected.push((traders.clone(), rows.len(), vec![by(r)]));
                        rows.push(row(r, String::new()));
                    }
                }
            }
            Happening::Fault { fault, victim } => {
                rows.push(row(r, format!("{fault:?} {victim}").to_lowercase()))
            }
            Happening::Network { fault, change } => rows.push(row(
                r,
                format!("{}: {change}", format!("{fault:?}").to_lowercase()),
            )),
            Happening::Detected {
                dead,
                cause,
                traders,
                promoted,
                ..
            } => {
                let mut what = format!(
                    "declared {dead} dead ({cause}); message 8: traders {}",
                    names(traders)
                );
                if let Some(p) = promoted {
                    let _ = write!(what, "; promoted {p}");
                }
                rows.push(row(r, what));
            }
            Happening::Promoted { traders, was } => rows.push(row(
                r,
                format!("promoted from {was}; traders {}", names(traders)),
            )),
            Happening::Retried { id, from, reason } if retries <= RETRIES_LISTED => rows.push(row(
                r,
                format!(
                    "retried request {}#{} that was at {from}: {reason}",
                    id.node.0, id.seq
                ),
            )),
            Happening::Retried { .. } => {}
            Happening::Committed {
                view,
                proposer,
                cause,
            } => rows.push(row(
                r,
                format!("committed {view}, proposed by {proposer} ({cause})"),
            )),
            Happening::Deposed { view } => {
                rows.push(row(r, format!("deposed: not a trader of {view}")))
            }
            Happening::Warehouse { up: false, reason } => {
                rows.push(row(r, format!("the warehouse is unreachable: {reason}")))
            }
            Happening::Warehouse { up: true, .. } => {
                rows.push(row(r, "the warehouse answers again".into()))
            }
            // Every node adopts every view: the commits above say it once.
            Happening::View { .. } => {}
        }
    }
    for (traders, at, mut who) in elected {
        who.sort();
        rows[at].what = format!(
            "elected traders {} (adopted by {})",
            names(&traders),
            who.join(", ")
        );
    }
    h.push_str("<section id=\"failover\">\n<h2>Failover timeline</h2>\n");
    let f = &report.failover;
    let _ = writeln!(
        h,
        "<p>{} requests retried at another trader ({} retries), {} acknowledged requests lost. \
         Times are seconds since the market opened, as on the plots.</p>",
        f.requests_retried, f.retries, f.lost
    );
    for x in &f.faults {
        let detected = f.what_followed(x);
        let _ = writeln!(
            h,
            "<p>{:?} {} at {:.2} s of trading: {}; {} items shipped before ({:.1}/s), {} after ({:.1}/s).</p>",
            x.fault,
            x.victim,
            x.at_s,
            esc(&detected),
            x.shipped_before,
            x.shipped_per_s_before,
            x.shipped_after,
            x.shipped_per_s_after
        );
    }
    h.push_str(
        "<table id=\"timeline\">\n<thead><tr><th>time (s)</th><th>Lamport</th><th>by</th><th>what</th></tr></thead>\n<tbody>\n",
    );
    for r in &rows {
        let (class, note) = if r.during_stop {
            (
                " class=\"stop\"",
                " (as the market was being stopped: not a failure)",
            )
        } else {
            ("", "")
        };
        let _ = writeln!(
            h,
            "<tr{class}><td class=\"num\">{:.3}</td><td class=\"num\">{}</td><td>{}</td><td>{}{note}</td></tr>",
            r.at_s,
            esc(&r.lamport),
            esc(&r.by),
            esc(&r.what)
        );
    }
    if retries > RETRIES_LISTED {
        let _ = writeln!(
            h,
            "<tr><td></td><td></td><td>clients</td><td>{retries} retries at another trader (not listed one by one)</td></tr>"
        );
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

fn plots(h: &mut String, drawn: &[Drawn]) {
    h.push_str("<section id=\"plots\">\n<h2>Plots</h2>\n");
    if drawn.is_empty() {
        h.push_str(
            "<p>No plot could be drawn for this run (see the warning bazaar printed).</p>\n",
        );
    }
    for d in drawn {
        let _ = write!(
            h,
            "<figure class=\"plot\" id=\"plot-{}\">\n<h3>{}</h3>\n{}\n<figcaption>{} \
             Also <code>plots/{}.png</code> and <code>.svg</code>.</figcaption>\n</figure>\n",
            d.stem,
            esc(&d.title),
            d.svg.trim(),
            esc(caption(&d.stem)),
            d.stem
        );
    }
    h.push_str("</section>\n");
}

fn figures(h: &mut String, diagrams: &[Figure]) {
    h.push_str(
        "<section id=\"diagrams\">\n<h2>Space-time diagrams</h2>\n<p>The message trace drawn \
         as a Lamport diagram: one line per node, time flowing down; an arrow per message \
         from its send to its receive, labelled with its kind, the document's message number \
         and the Lamport stamps at both ends (hover for its request id and times). \
         Draw any other window with <code>bazaar diagram RUN_DIR --from T --to T</code>.</p>\n",
    );
    if diagrams.is_empty() {
        h.push_str(
            "<p>No diagram could be drawn for this run (see the warning bazaar printed).</p>\n",
        );
    }
    for d in diagrams {
        let _ = write!(
            h,
            "<figure class=\"plot diagram\" id=\"diagram-{}\">\n<h3>{}</h3>\n<div class=\"diagram-box\">{}</div>\n\
             <figcaption>{} Also <code>diagrams/{}.svg</code>.</figcaption>\n</figure>\n",
            d.stem,
            esc(&d.title),
            d.svg.trim(),
            esc(&d.caption),
            d.stem
        );
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_the_data_cannot_end_its_script() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let (mut report, history) = crate::report::tests::sample();
        report.name = "</script><script>alert(1)</script>".into();
        let page = page(&report, &history, &[], &[]);
        assert_eq!(
            page.matches("</script>").count(),
            1,
            "only the data's own end"
        );
        assert!(!page.contains("<script>"));
        // The data reads back as the report.
        let start = page.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
        let end = page[start..].find("</script>").unwrap() + start;
        let back: Report = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(back.name, report.name);
    }

    #[test]
    fn the_page_fetches_nothing() {
        let (report, history) = crate::report::tests::sample();
        let page = page(&report, &history, &[], &[]);
        for bad in ["src=", "<link", "url(", "@import", "http://", "https://"] {
            assert!(!page.contains(bad), "{bad}");
        }
        assert!(page.contains("<table id=\"verdicts\">"));
        assert!(page.contains("<table id=\"timeline\">"));
    }
}
