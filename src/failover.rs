//! The failover part of a run's report: who was elected, each fault, when and
//! by whom it was detected, how many requests were retried and how many
//! acknowledged requests were lost (must be 0), and the items shipped before
//! and after each fault (the document's fault experiment); every trader set
//! the warehouse committed (one per epoch), and when the warehouse was
//! unreachable.
//!
//! Built after the run from the nodes' histories (the `failover` lines of
//! [`crate::membership::Record`] and the clients' requests) and the
//! warehouse's store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::clock::Lamport;
use crate::config::FaultKind;
use crate::history::{History, Outcome};
use crate::membership::Happening;
use crate::warehouse::store::Snapshot;
use crate::wire::{NodeId, Side, View};

/// A trader set the warehouse committed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewChange {
    pub view: View,
    pub proposer: NodeId,
    pub cause: String,
    pub wall_us: u64,
}

/// A time the warehouse could not be reached, as the traders' lease
/// renewals saw it: from the first trader that lost it to the first that
/// reached it again (`until_us` is `None` if it never came back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub from_us: u64,
    pub until_us: Option<u64>,
    /// Seconds after trading began.
    pub at_s: f64,
    pub lasted_s: Option<f64>,
    pub reason: String,
}

/// When and by whom a fault was detected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub by: NodeId,
    /// From the fault to the detection (the detector finding it dead), wall
    /// clock.
    pub after_ms: f64,
    /// From the fault to the warehouse committing the set without it (after
    /// its lease ran out), wall clock.
    #[serde(default)]
    pub committed_after_ms: f64,
    /// When the detector found it dead (0: an older run, the commit's time).
    #[serde(default)]
    pub found_us: u64,
    pub wall_us: u64,
    pub lamport: Option<Lamport>,
    pub cause: String,
    /// The trader list the detector sent in message 8.
    pub traders: Vec<NodeId>,
    pub promoted: Option<NodeId>,
}

/// One injected fault and what followed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub fault: FaultKind,
    pub victim: NodeId,
    /// Seconds after trading began.
    pub at_s: f64,
    pub wall_us: u64,
    /// The victim's Lamport time just before the fault.
    pub lamport: Option<Lamport>,
    /// The first detection of the victim's death after the fault, if any.
    pub detected: Option<Detection>,
    /// Items shipped to buyers (acknowledged buys, by completion time) before
    /// the fault, and from the fault to the end of trading.
    pub shipped_before: u64,
    pub shipped_after: u64,
    /// The same, per second of the time before and after.
    pub shipped_per_s_before: f64,
    pub shipped_per_s_after: f64,
}

/// The failover section of `report.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// The traders the election chose (the list most peers recorded).
    pub elected: Vec<NodeId>,
    /// The trader list the launcher last heard.
    pub final_traders: Vec<NodeId>,
    pub faults: Vec<FaultReport>,
    /// Every detection, in time order.
    pub detections: Vec<Detection>,
    /// Requests sent again to another trader (distinct ids), and retries in all.
    pub requests_retried: u64,
    pub retries: u64,
    /// Acknowledged requests the warehouse never applied (must be 0).
    pub lost: u64,
    /// Every trader set the warehouse committed, in epoch order.
    #[serde(default)]
    pub views: Vec<ViewChange>,
    /// Times the warehouse could not be reached.
    #[serde(default)]
    pub warehouse_outages: Vec<Outage>,
}

impl FailoverReport {
    /// What followed fault `x`, in a line: its detection (a trader's death),
    /// the outage it caused (the warehouse's), or nothing to detect (a
    /// resume or a restart undoes an earlier fault).
    pub fn what_followed(&self, x: &FaultReport) -> String {
        use crate::config::FaultKind;
        if matches!(
            x.fault,
            FaultKind::Resume | FaultKind::Restart | FaultKind::Heal
        ) {
            return "undoes the fault before it".into();
        }
        if x.victim.is_warehouse() {
            return match self
                .warehouse_outages
                .iter()
                .find(|o| o.from_us >= x.wall_us)
            {
                Some(o) => match o.lasted_s {
                    Some(s) => format!(
                        "the traders lost the warehouse after {:.0} ms; it answered again {s:.2} s later",
                        o.from_us.saturating_sub(x.wall_us) as f64 / 1000.0
                    ),
                    None => "the traders lost the warehouse; it never answered again".into(),
                },
                None => "no trader noticed (it had nothing to ask)".into(),
            };
        }
        match &x.detected {
            Some(d) => format!(
                "by {} after {:.0} ms, committed after {:.0} ms (Lamport {}): {}; traders now {}",
                d.by,
                d.after_ms,
                d.committed_after_ms,
                d.lamport.map_or("?".into(), |l| l.0.to_string()),
                d.cause,
                d.traders
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "NOT DETECTED".into(),
        }
    }

    /// `began_us`/`ended_us`: wall times trading began and ended.
    pub fn build(
        history: &History,
        store: &Snapshot,
        began_us: u64,
        ended_us: u64,
        final_traders: &[NodeId],
    ) -> FailoverReport {
        let mut votes: BTreeMap<Vec<NodeId>, usize> = BTreeMap::new();
        let mut faults = Vec::new();
        let mut detections = Vec::new();
        let mut retried = BTreeSet::new();
        let mut retries = 0;
        let mut views = Vec::new();
        let mut warehouse: Vec<(u64, bool, String)> = Vec::new();
        for r in &history.failover {
            match &r.what {
                Happening::Elected { traders, .. } => {
                    *votes.entry(traders.clone()).or_default() += 1
                }
                Happening::Fault { fault, victim } => faults.push((r.clone(), *fault, *victim)),
                Happening::Detected {
                    dead,
                    cause,
                    traders,
                    promoted,
                    found_us,
                } => detections.push((
                    *dead,
                    Detection {
                        by: r.by.unwrap_or_default(),
                        after_ms: 0.0,
                        committed_after_ms: 0.0,
                        found_us: if *found_us == 0 { r.wall_us } else { *found_us },
                        wall_us: r.wall_us,
                        lamport: r.lamport,
                        cause: cause.clone(),
                        traders: traders.clone(),
                        promoted: *promoted,
                    },
                )),
                Happening::Retried { id, .. } => {
                    retries += 1;
                    retried.insert(*id);
                }
                Happening::Committed {
                    view,
                    proposer,
                    cause,
                } => views.push(ViewChange {
                    view: view.clone(),
                    proposer: *proposer,
                    cause: cause.clone(),
                    wall_us: r.wall_us,
                }),
                Happening::Warehouse { up, reason } => {
                    warehouse.push((r.wall_us, *up, reason.clone()))
                }
                Happening::Promoted { .. } | Happening::View { .. } | Happening::Deposed { .. } => {
                }
            }
        }
        views.sort_by_key(|v| v.view.epoch);
        warehouse.sort_by_key(|(t, ..)| *t);
        let mut warehouse_outages: Vec<Outage> = Vec::new();
        for (t, up, reason) in warehouse {
            match warehouse_outages.last_mut() {
                Some(o) if o.until_us.is_none() && up => {
                    o.until_us = Some(t);
                    o.lasted_s = Some(t.saturating_sub(o.from_us) as f64 / 1e6);
                }
                Some(o) if o.until_us.is_none() => {}
                _ if !up => warehouse_outages.push(Outage {
                    from_us: t,
                    until_us: None,
                    at_s: t.saturating_sub(began_us) as f64 / 1e6,
                    lasted_s: None,
                    reason,
                }),
                _ => {}
            }
        }
        detections.sort_by_key(|(_, d)| d.wall_us);
        faults.sort_by_key(|(r, ..)| r.wall_us);
        // The warehouse's record is the authority; the peers' votes serve a
        // run without one (an old run directory).
        let elected = match store.views.first() {
            Some(v) => v.traders.clone(),
            None => votes
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(t, _)| t)
                .unwrap_or_default(),
        };
        let final_traders = match store.views.last() {
            Some(v) => v.traders.clone(),
            None => final_traders.to_vec(),
        };

        // Items shipped to buyers, by the time the buyer heard.
        let shipped: Vec<(u64, u64)> = history
            .requests
            .iter()
            .filter(|r| r.side == Side::Buy && r.outcome == Outcome::Ok)
            .map(|r| (r.completed_us, u64::from(r.granted.0)))
            .collect();
        let per_s = |items: u64, from: u64, to: u64| {
            let secs = to.saturating_sub(from) as f64 / 1e6;
            if secs > 0.0 { items as f64 / secs } else { 0.0 }
        };
        let faults = faults
            .into_iter()
            .map(|(r, fault, victim)| {
                let detected = detections
                    .iter()
                    .find(|(dead, d)| *dead == victim && d.wall_us >= r.wall_us)
                    .map(|(_, d)| Detection {
                        after_ms: d.found_us.saturating_sub(r.wall_us) as f64 / 1000.0,
                        committed_after_ms: d.wall_us.saturating_sub(r.wall_us) as f64 / 1000.0,
                        ..d.clone()
                    });
                let before: u64 = shipped
                    .iter()
                    .filter(|(t, _)| *t < r.wall_us)
                    .map(|(_, q)| q)
                    .sum();
                let after: u64 = shipped
                    .iter()
                    .filter(|(t, _)| *t >= r.wall_us)
                    .map(|(_, q)| q)
                    .sum();
                FaultReport {
                    fault,
                    victim,
                    at_s: r.wall_us.saturating_sub(began_us) as f64 / 1e6,
                    wall_us: r.wall_us,
                    lamport: r.lamport,
                    detected,
                    shipped_before: before,
                    shipped_after: after,
                    shipped_per_s_before: per_s(before, began_us, r.wall_us),
                    shipped_per_s_after: per_s(after, r.wall_us, ended_us),
                }
            })
            .collect();

        let applied: HashMap<_, _> = store.applied.iter().copied().collect();
        // As the checker judges it: shipped (or deposited) plus oversold.
        let lost = history
            .requests
            .iter()
            .filter(|r| r.outcome == Outcome::Ok)
            .filter(|r| {
                applied
                    .get(&r.id)
                    .is_none_or(|a| a.side != r.side || a.acknowledged() != r.granted)
            })
            .count() as u64;
        FailoverReport {
            elected,
            final_traders,
            faults,
            detections: detections.into_iter().map(|(_, d)| d).collect(),
            requests_retried: retried.len() as u64,
            retries,
            lost,
            views,
            warehouse_outages,
        }
    }
}
