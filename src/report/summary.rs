//! The terminal summary: the report in the document's own words first
//! ("Oversell N times! Sell out N items!"), then the numbers behind it, each
//! under a label, wrapped to fit [`WIDTH`] columns.

use super::Report;
use crate::config::Mode;
use crate::wire::NodeId;

/// The summary's width: an 80-column terminal.
pub const WIDTH: usize = 80;
/// Where a labelled field's text starts (`  label       text`).
const TEXT_AT: usize = 14;

fn ids(nodes: &[NodeId]) -> String {
    super::id_list(nodes, |n| n.0.to_string())
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

/// Appends `lead` then `text`, wrapped at [`WIDTH`] columns at spaces, each
/// continuation line indented to column `hang`. A word longer than a line
/// (a path) stays whole.
fn wrapped(out: &mut String, lead: &str, hang: usize, text: &str) {
    let mut col = lead.chars().count();
    out.push_str(lead);
    let mut first = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if !first && col + 1 + len > WIDTH && col > hang {
            out.push('\n');
            out.push_str(&" ".repeat(hang));
            col = hang;
        } else if !first {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
        first = false;
    }
    out.push('\n');
}

/// One labelled field: `  label       text`, wrapped under the text.
fn field(out: &mut String, label: &str, text: &str) {
    wrapped(
        out,
        &format!("  {label:<w$}", w = TEXT_AT - 2),
        TEXT_AT,
        text,
    );
}

impl Report {
    /// The summary printed at the end of `bazaar run`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        wrapped(
            &mut s,
            "",
            2,
            &format!(
                "market \"{}\", {} mode, seed {}: {} peers (traders {}; buyers {}; sellers {})",
                self.name,
                self.mode,
                self.seed,
                self.peers,
                ids(&self.traders),
                ids(&self.buyers),
                ids(&self.sellers)
            ),
        );
        s.push_str(&format!("After {:.2} seconds:\n", self.duration_s));
        s.push_str(&format!("Oversell {} times!\n", self.oversells));
        s.push_str(&format!("Sell out {} items!\n\n", self.shipped));
        if self.interrupted {
            field(
                &mut s,
                "INTERRUPTED",
                "trading was cut short by Ctrl-C; the market was stopped in order",
            );
        }
        for why in &self.degraded {
            field(&mut s, "DEGRADED", why);
        }
        for (label, text) in self.numbers() {
            field(&mut s, label, &text);
        }
        let f = &self.failover;
        for x in &f.faults {
            field(
                &mut s,
                "fault",
                &format!(
                    "{:?} {} at {:.2} s (Lamport {})",
                    x.fault,
                    x.victim,
                    x.at_s,
                    x.lamport.map_or("?".into(), |l| l.0.to_string())
                ),
            );
            field(&mut s, "followed", &f.what_followed(x));
            field(
                &mut s,
                "shipped",
                &format!(
                    "{} items before the fault ({:.1}/s), {} after ({:.1}/s)",
                    x.shipped_before,
                    x.shipped_per_s_before,
                    x.shipped_after,
                    x.shipped_per_s_after
                ),
            );
        }
        for n in &f.network_faults {
            field(&mut s, "network", &n.line());
        }
        for o in &f.warehouse_outages {
            let back = match o.lasted_s {
                Some(d) => format!("answered again {d:.2} s later"),
                None => "never answered again".into(),
            };
            field(
                &mut s,
                "warehouse",
                &format!("unreachable at {:.2} s, {back} ({})", o.at_s, o.reason),
            );
        }
        if f.views.len() > 1 {
            let epochs: Vec<String> = f.views.iter().map(|v| v.view.to_string()).collect();
            field(&mut s, "epochs", &epochs.join("; "));
        }
        if !f.faults.is_empty() || f.retries > 0 {
            field(
                &mut s,
                "failover",
                &format!(
                    "{} requests retried ({} retries), {} acknowledged requests lost",
                    f.requests_retried, f.retries, f.lost
                ),
            );
        }
        s.push_str(&self.verdicts());
        if !self.plots.is_empty() {
            field(
                &mut s,
                "plots",
                &self
                    .run_dir
                    .join("plots")
                    .join("*.png")
                    .display()
                    .to_string(),
            );
            field(
                &mut s,
                "report",
                &self.run_dir.join("report.html").display().to_string(),
            );
        }
        field(&mut s, "run dir", &self.run_dir.display().to_string());
        s
    }

    /// The numbers of the run, labelled: oversells (cached mode), requests
    /// left unflushed, requests, answers, per trader, throughput, latency
    /// and stock (the summary and `report.html` both show these).
    pub fn numbers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let r = &self.requests;
        let cached = self.mode == Mode::Cached;
        if cached {
            out.push((
                "oversells",
                format!(
                    "{} of {} buys ({:.1}%); undersells {} ({:.1}%)",
                    self.oversells,
                    self.buys,
                    100.0 * self.oversell_rate,
                    self.undersells,
                    100.0 * self.undersell_rate
                ),
            ));
        }
        for u in &self.unflushed {
            out.push((
                "UNFLUSHED",
                format!(
                    "{} acknowledged requests left in {}'s journal (it never flushed them)",
                    u.requests, u.trader
                ),
            ));
        }
        out.push((
            "buys",
            format!(
                "{} answered: {} granted in full, {} cut short, {} empty (answered 0 items); {} refused, {} failed",
                r.buy.ok, r.buy.full, r.buy.cut_short, r.buy.empty, r.buy.refused, r.buy.failed
            ),
        ));
        out.push((
            "sells",
            format!(
                "{} deposited, {} refused, {} failed",
                r.sell.ok, r.sell.refused, r.sell.failed
            ),
        ));
        out.push((
            "answers",
            format!(
                "{} never answered, {} cut short by their client's death, {} retried at another trader, {} acknowledged and lost",
                r.unanswered, r.interrupted, r.retried, r.lost
            ),
        ));
        for t in &self.per_trader {
            let mut line = format!(
                "{}: {} answered, {} items granted",
                t.trader, t.answered, t.granted
            );
            if cached {
                let b = &t.book;
                line.push_str(&format!(
                    "; {} flushed, {} buys: {} oversells ({} items), {} undersells ({} items)",
                    b.flushed, b.buys, b.oversells, b.oversold, b.undersells, b.undersold
                ));
            }
            out.push(("trader", line));
        }
        out.push((
            "throughput",
            format!(
                "{:.1} requests/s, {:.1} items shipped/s",
                self.throughput.requests_per_s, self.throughput.shipped_per_s
            ),
        ));
        let l = &self.latency;
        out.push((
            "latency",
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ),
        ));
        for p in &self.products {
            out.push((
                "stock",
                format!(
                    "{}: {} initial + {} sold - {} shipped = {} final ({}; {} refused for want of stock)",
                    p.name,
                    p.initial,
                    p.sold,
                    p.shipped,
                    p.final_stock,
                    if p.conserved {
                        "conserved"
                    } else {
                        "NOT CONSERVED"
                    },
                    p.refused
                ),
            ));
        }
        out
    }

    /// The checker's verdicts, one field each (`bazaar check` prints these).
    pub fn verdicts(&self) -> String {
        let mut s = String::new();
        for v in &self.checks {
            let lead = format!("  {:<w$}{:<7}", "check", mark(v.ok), w = TEXT_AT - 2);
            wrapped(
                &mut s,
                &lead,
                TEXT_AT + 7,
                &format!("{}: {}", v.invariant, v.detail),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_field_wraps_under_its_text() {
        let mut s = String::new();
        field(&mut s, "answers", &"word ".repeat(30));
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines.len() > 1, "{s}");
        for l in &lines {
            assert!(l.chars().count() <= WIDTH, "{l:?}");
        }
        assert!(lines[1].starts_with(&" ".repeat(TEXT_AT)), "{s}");
        assert!(!lines[1][TEXT_AT..].starts_with(' '), "{s}");
    }

    #[test]
    fn the_summary_of_a_run_with_a_fault_fits_80_columns() {
        let (mut report, _) = crate::report::tests::sample();
        report.degraded = vec![format!(
            "peer3 exited on its own {}",
            "and so on ".repeat(9)
        )];
        report.interrupted = true;
        let s = report.summary();
        assert!(s.contains("fault       Kill peer6"), "{s}");
        for line in s.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}\n{s}");
        }
    }

    #[test]
    fn a_word_longer_than_a_line_stays_whole() {
        let mut s = String::new();
        let path = format!("/{}", "p".repeat(100));
        field(&mut s, "run dir", &path);
        assert_eq!(s, format!("  run dir     {path}\n"));
    }
}
