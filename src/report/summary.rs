//! The terminal summary: the report in the document's own words first
//! ("Oversell N times! Sell out N items!"), then the numbers behind it.

use std::fmt::Write;

use super::Report;
use crate::config::Mode;
use crate::wire::NodeId;

fn ids(nodes: &[NodeId]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| n.0.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

impl Report {
    /// The summary printed at the end of `bazaar run`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let r = &self.requests;
        let _ = writeln!(
            s,
            "market \"{}\", {} mode, seed {}: {} peers (traders {}; buyers {}; sellers {})",
            self.name,
            self.mode,
            self.seed,
            self.peers,
            ids(&self.traders),
            ids(&self.buyers),
            ids(&self.sellers)
        );
        let _ = writeln!(s, "After {:.2} seconds:", self.duration_s);
        let _ = writeln!(s, "Oversell {} times!", self.oversells);
        let _ = writeln!(s, "Sell out {} items!", self.shipped);
        let _ = writeln!(s);
        let cached = self.mode == Mode::Cached;
        if cached {
            let _ = writeln!(
                s,
                "  oversells   {} of {} buys ({:.1}%); undersells {} ({:.1}%)",
                self.oversells,
                self.buys,
                100.0 * self.oversell_rate,
                self.undersells,
                100.0 * self.undersell_rate
            );
        }
        for u in &self.unflushed {
            let _ = writeln!(
                s,
                "  UNFLUSHED   {} acknowledged requests left in {}'s journal (it never flushed them)",
                u.requests, u.trader
            );
        }
        let _ = writeln!(
            s,
            "  buys        {} answered: {} granted in full, {} cut short, {} empty (answered 0 items); {} refused, {} failed",
            r.buy.ok, r.buy.full, r.buy.cut_short, r.buy.empty, r.buy.refused, r.buy.failed
        );
        let _ = writeln!(
            s,
            "  sells       {} deposited, {} refused, {} failed",
            r.sell.ok, r.sell.refused, r.sell.failed
        );
        let _ = writeln!(
            s,
            "  answers     {} never answered, {} cut short by their client's death, {} retried at another trader, {} acknowledged and lost",
            r.unanswered, r.interrupted, r.retried, r.lost
        );
        for t in &self.per_trader {
            let mut line = format!(
                "  trader      {}: {} answered, {} items granted",
                t.trader, t.answered, t.granted
            );
            if cached {
                let b = &t.book;
                line.push_str(&format!(
                    "; {} flushed, {} buys: {} oversells ({} items), {} undersells ({} items)",
                    b.flushed, b.buys, b.oversells, b.oversold, b.undersells, b.undersold
                ));
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "  throughput  {:.1} requests/s, {:.1} items shipped/s",
            self.throughput.requests_per_s, self.throughput.shipped_per_s
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency     p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
        for p in &self.products {
            let _ = writeln!(
                s,
                "  stock       {}: {} initial + {} sold - {} shipped = {} final ({}; {} refused for want of stock)",
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
            );
        }
        let f = &self.failover;
        for x in &f.faults {
            let _ = writeln!(
                s,
                "  fault       {:?} {} at {:.2} s (Lamport {})",
                x.fault,
                x.victim,
                x.at_s,
                x.lamport.map_or("?".into(), |l| l.0.to_string())
            );
            match &x.detected {
                Some(d) => {
                    let _ = writeln!(
                        s,
                        "  detected    by {} after {:.0} ms (Lamport {}): {}; traders now {}",
                        d.by,
                        d.after_ms,
                        d.lamport.map_or("?".into(), |l| l.0.to_string()),
                        d.cause,
                        ids(&d.traders)
                    );
                }
                None => {
                    let _ = writeln!(s, "  detected    NOT DETECTED");
                }
            }
            let _ = writeln!(
                s,
                "  shipped     {} items before the fault ({:.1}/s), {} after ({:.1}/s)",
                x.shipped_before, x.shipped_per_s_before, x.shipped_after, x.shipped_per_s_after
            );
        }
        if !f.faults.is_empty() || f.retries > 0 {
            let _ = writeln!(
                s,
                "  failover    {} requests retried ({} retries), {} acknowledged requests lost",
                f.requests_retried, f.retries, f.lost
            );
        }
        for v in &self.checks {
            let _ = writeln!(
                s,
                "  check       {:<28} {:<6} {}",
                v.invariant,
                mark(v.ok),
                v.detail
            );
        }
        if !self.plots.is_empty() {
            let _ = writeln!(
                s,
                "  plots       {}",
                self.run_dir.join("plots").join("*.png").display()
            );
        }
        let _ = writeln!(s, "  run dir     {}", self.run_dir.display());
        s
    }
}
