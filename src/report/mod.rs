//! The run's report: `report.json`, the terminal summary and the plots, all
//! built from the same [`Report`], which is built from the histories, the
//! warehouse's final store and the checker's verdicts. The README's section
//! "The report" documents `report.json` field by field; keep them together.

pub mod plots;
pub mod progress;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::check::{self, Verdict};
use crate::config::{Config, Mode, Role};
use crate::history::{Declared, History, Outcome};
use crate::market::RunDir;
use crate::warehouse::store::Snapshot;
use crate::warehouse::store::Store;
use crate::wire::{NodeId, Side};

/// The end of a run: reads its histories and the warehouse's store, runs the
/// checker, builds the report, draws the plots (a plot that fails is a
/// warning, not a failed run) and writes `report.json`.
pub fn finish(cfg: &Config, dir: &RunDir, trading: Duration) -> anyhow::Result<Report> {
    let history = History::read_dir(&dir.history())?;
    let store = Store::snapshot(&dir.data_of(NodeId::WAREHOUSE))?;
    let verdicts = check::check(cfg, &history, &store);
    let mut report = Report::build(cfg, &dir.root, trading, &history, &store, verdicts);
    match plots::write(&dir.plots(), &report, &history) {
        Ok(files) => {
            report.plots = files
                .iter()
                .map(|f| f.strip_prefix(&dir.root).unwrap_or(f).to_path_buf())
                .collect()
        }
        Err(e) => eprintln!("warning: no plots: {e:#}"),
    }
    report.write_json(&dir.report())?;
    Ok(report)
}

/// Requests of one kind, by outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub ok: u64,
    pub refused: u64,
    pub failed: u64,
}

impl Outcomes {
    pub fn total(&self) -> u64 {
        self.ok + self.refused + self.failed
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

/// What one trader answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraderReport {
    pub trader: NodeId,
    /// Requests this trader answered (ok or refused).
    pub answered: u64,
    /// Items its granted buys came to, as the buyers were told.
    pub granted: u64,
    /// Its flushed buys the warehouse could not fill (cached mode).
    pub oversells: u64,
}

impl TraderReport {
    fn new(trader: NodeId) -> Self {
        TraderReport {
            trader,
            answered: 0,
            granted: 0,
            oversells: 0,
        }
    }
}

/// An injected fault, and when the market noticed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// Seconds since the market opened.
    pub at_s: f64,
    pub fault: String,
    pub targets: Vec<NodeId>,
    pub detail: String,
    /// The first heartbeat verdict "dead" about a target after the fault.
    pub detected: Option<Detection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub at_s: f64,
    /// Milliseconds from the fault to its detection.
    pub after_ms: f64,
    pub by: NodeId,
    pub subject: NodeId,
}

/// An election result as a node recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ElectionReport {
    pub at_s: f64,
    pub by: NodeId,
    pub traders: Vec<NodeId>,
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
    pub oversold: u64,
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
    pub peers: u32,
    pub traders: Vec<NodeId>,
    pub buyers: Vec<NodeId>,
    pub sellers: Vec<NodeId>,
    pub requests: Requests,
    /// Items the warehouse shipped, all products.
    pub shipped: u64,
    /// Buys the warehouse could not fill after a trader granted them.
    pub oversells: u64,
    pub throughput: Throughput,
    pub latency: Latency,
    pub products: Vec<ProductReport>,
    /// initial + sold − shipped = final, for every product.
    pub conserved: bool,
    pub per_trader: Vec<TraderReport>,
    pub elections: Vec<ElectionReport>,
    pub faults: Vec<FaultReport>,
    pub checks: Vec<Verdict>,
    /// The plot files written, relative to the run directory.
    pub plots: Vec<PathBuf>,
}

impl Report {
    pub fn build(
        cfg: &Config,
        run_dir: &Path,
        trading: Duration,
        history: &History,
        store: &Snapshot,
        checks: Vec<Verdict>,
    ) -> Report {
        let roles = cfg.roles_of_peers().unwrap_or_default();
        let with = |role| -> Vec<NodeId> {
            roles
                .iter()
                .filter(|(_, r)| *r == role)
                .map(|(n, _)| *n)
                .collect()
        };
        let mut counts = Requests::default();
        let mut per_trader: std::collections::BTreeMap<NodeId, TraderReport> = Default::default();
        // Bounded on purpose: an auto-resizing histogram does not resize on
        // `saturating_record`, it clamps (to 2 ms when new).
        let mut latency = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)
            .expect("1 µs to an hour at 3 significant figures is valid");
        for r in &history.requests {
            let o = match r.side {
                Side::Buy => &mut counts.buy,
                Side::Sell => &mut counts.sell,
            };
            match r.outcome {
                Outcome::Ok => o.ok += 1,
                Outcome::Refused(_) => o.refused += 1,
                Outcome::Failed(_) => o.failed += 1,
            }
            if !matches!(r.outcome, Outcome::Failed(_)) {
                latency.saturating_record(r.latency_us.max(1));
                let t = per_trader
                    .entry(r.trader)
                    .or_insert_with(|| TraderReport::new(r.trader));
                t.answered += 1;
                if r.side == Side::Buy && r.outcome == Outcome::Ok {
                    t.granted += u64::from(r.granted.0);
                }
            }
        }
        for f in &history.flushes {
            per_trader
                .entry(f.trader)
                .or_insert_with(|| TraderReport::new(f.trader))
                .oversells += u64::from(f.oversells);
        }
        counts.unanswered = history.unanswered.iter().filter(|u| u.closed).count() as u64;
        counts.interrupted = history.unanswered.len() as u64 - counts.unanswered;
        counts.retried = history
            .retries
            .iter()
            .map(|r| r.id)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        counts.lost = checks
            .iter()
            .find(|v| v.invariant == check::NO_LOST_ACK)
            .map_or(0, |v| v.offenders);
        let t0 = history.first_us;
        let at = |us: u64| us.saturating_sub(t0) as f64 / 1e6;
        let faults = history
            .faults
            .iter()
            .map(|f| FaultReport {
                at_s: at(f.wall_us),
                fault: f.fault.clone(),
                targets: f.targets.clone(),
                detail: f.detail.clone(),
                detected: history
                    .verdicts
                    .iter()
                    .filter(|v| {
                        v.verdict == Declared::Dead
                            && v.wall_us >= f.wall_us
                            && f.targets.contains(&v.subject)
                    })
                    .min_by_key(|v| v.wall_us)
                    .map(|v| Detection {
                        at_s: at(v.wall_us),
                        after_ms: (v.wall_us - f.wall_us) as f64 / 1000.0,
                        by: v.observer,
                        subject: v.subject,
                    }),
            })
            .collect();
        let elections = history
            .elections
            .iter()
            .map(|e| ElectionReport {
                at_s: at(e.wall_us),
                by: e.node,
                traders: e.traders.clone(),
            })
            .collect();
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
                oversold: b.oversold,
                final_stock: b.stock,
                conserved: b.conserved(),
            })
            .collect();
        let shipped = store.books.iter().map(|b| b.shipped).sum();
        let secs = trading.as_secs_f64().max(1e-9);
        let answered = counts.buy.ok + counts.buy.refused + counts.sell.ok + counts.sell.refused;
        Report {
            name: cfg.market.name.clone(),
            mode: cfg.market.mode,
            seed: cfg.market.seed,
            run_dir: run_dir.to_path_buf(),
            duration_s: trading.as_secs_f64(),
            peers: cfg.market.peers,
            traders: with(Role::Trader),
            buyers: with(Role::Buyer),
            sellers: with(Role::Seller),
            requests: counts,
            shipped,
            oversells: store.books.iter().map(|b| b.oversells).sum(),
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
            per_trader: per_trader.into_values().collect(),
            elections,
            faults,
            checks,
            plots: Vec::new(),
        }
    }

    /// The report of a run directory as it is now: `bazaar report RUN_DIR`.
    /// The trading time is the one its `report.json` gives, or else the
    /// config's duration.
    pub fn rebuild(run_dir: &Path) -> anyhow::Result<Report> {
        let dir = RunDir {
            root: run_dir.to_path_buf(),
        };
        let cfg = Config::load(&dir.config())?;
        let trading = std::fs::read_to_string(dir.report())
            .ok()
            .and_then(|text| serde_json::from_str::<Report>(&text).ok())
            .map_or(cfg.market.duration, |r| {
                Duration::from_secs_f64(r.duration_s.max(0.0))
            });
        finish(&cfg, &dir, trading)
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::history::Request;
    use crate::warehouse::ledger::Ledger;
    use crate::wire::{ProductId, Qty, RequestId};

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
            applied: Vec::new(),
        };
        let r = Report::build(
            &Config::default(),
            Path::new("run"),
            Duration::from_secs(1),
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
