//! The run's report: `report.json` and the terminal summary, both built from
//! the same [`Report`], which is built from the histories, the warehouse's
//! final store and the checker's verdicts.

pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::check::Verdict;
use crate::config::{Config, Mode, Role};
use crate::history::{Outcome, Request};
use crate::warehouse::ledger::{Applied, TraderBook};
use crate::warehouse::store::Snapshot;
use crate::wire::{FlushEntry, NodeId, Qty, RequestId, Side};

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
}

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

/// What the warehouse made of one cached trader's flushes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraderReport {
    pub trader: NodeId,
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
    /// Buys a trader refused or cut short while the warehouse had the stock.
    pub undersells: u64,
    /// Buy requests the warehouse applied (the rates' denominator).
    pub buys: u64,
    /// Oversold buys / all buys.
    pub oversell_rate: f64,
    /// Undersold buys / all buys.
    pub undersell_rate: f64,
    /// Cached mode: oversells and undersells per trader.
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
    /// Election, faults, detections, retries, lost requests.
    #[serde(default)]
    pub failover: crate::failover::FailoverReport,
}

impl Report {
    pub fn build(
        cfg: &Config,
        run_dir: &Path,
        trading: Duration,
        requests: &[&Request],
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
        let mut latency = Histogram::<u64>::new(3).expect("3 significant figures is valid");
        for r in requests {
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
            }
        }
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
            oversells,
            undersells,
            buys,
            oversell_rate: rate(oversells),
            undersell_rate: rate(undersells),
            per_trader: store
                .traders
                .iter()
                .map(|(t, b)| TraderReport {
                    trader: *t,
                    book: *b,
                })
                .collect(),
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
            failover: Default::default(),
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

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}
