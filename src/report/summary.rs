//! The terminal summary: the report in the document's own words first
//! ("Oversell N times! Sell out N items!"), then the numbers behind it.

use std::fmt::Write;

use super::Report;
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
        let _ = writeln!(
            s,
            "  requests    buy {} ok, {} refused, {} failed; sell {} ok, {} refused, {} failed",
            r.buy.ok, r.buy.refused, r.buy.failed, r.sell.ok, r.sell.refused, r.sell.failed
        );
        let _ = writeln!(
            s,
            "  answers     {} never answered, {} cut short by their client's death, {} retried at another trader, {} acknowledged and lost",
            r.unanswered, r.interrupted, r.retried, r.lost
        );
        for t in &self.per_trader {
            let _ = writeln!(
                s,
                "  trader      {}: {} answered, {} items granted, {} oversells",
                t.trader, t.answered, t.granted, t.oversells
            );
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
        for f in &self.faults {
            let targets: Vec<String> = f.targets.iter().map(|t| t.to_string()).collect();
            let detected = match &f.detected {
                Some(d) => format!(
                    "detected {:.0} ms later by {} (at {:.2} s)",
                    d.after_ms, d.by, d.at_s
                ),
                None => "no heartbeat verdict declared it dead".into(),
            };
            let detail = if f.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.detail)
            };
            let _ = writeln!(
                s,
                "  fault       at {:.2} s: {} {}{detail}; {detected}",
                f.at_s,
                f.fault,
                targets.join(", ")
            );
        }
        if let Some(e) = self.elections.last() {
            let _ = writeln!(
                s,
                "  elections   {} results recorded; the last, at {:.2} s by {}: traders {}",
                self.elections.len(),
                e.at_s,
                e.by,
                ids(&e.traders)
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
