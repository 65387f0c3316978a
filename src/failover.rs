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
use crate::config::{FaultKind, NetFault};
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

/// The requests of a stretch of the run: how many completed, how fast, and
/// their latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub seconds: f64,
    /// Requests completed (any outcome) in the window, and per second.
    pub requests: u64,
    pub per_s: f64,
    /// Requests that failed (timed out, refused) in the window.
    pub failed: u64,
    /// Latency of the requests completed in the window, in ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Window {
    fn of(history: &History, from_us: u64, to_us: u64) -> Window {
        let mut lat: Vec<u64> = Vec::new();
        let mut failed = 0;
        for r in history
            .requests
            .iter()
            .filter(|r| r.completed_us >= from_us && r.completed_us < to_us)
        {
            lat.push(r.latency_us);
            if r.outcome != Outcome::Ok {
                failed += 1;
            }
        }
        lat.sort_unstable();
        let q = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
            }
        };
        let seconds = to_us.saturating_sub(from_us) as f64 / 1e6;
        Window {
            seconds,
            requests: lat.len() as u64,
            per_s: if seconds > 0.0 {
                lat.len() as f64 / seconds
            } else {
                0.0
            },
            failed,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
        }
    }
}

/// A network fault (partition, delay, loss) from its start to its heal, and
/// the requests before, during and after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkFaultReport {
    pub fault: FaultKind,
    pub change: NetFault,
    /// Seconds after trading began: the start, and the heal (`None`: never
    /// healed before the end).
    pub from_s: f64,
    pub until_s: Option<f64>,
    pub from_us: u64,
    pub until_us: Option<u64>,
    /// From the start of trading (or the previous heal) to the start; the
    /// fault; from the heal to the end of trading.
    pub before: Window,
    pub during: Window,
    pub after: Window,
}

impl NetworkFaultReport {
    /// The faults of the history, each with its heal.
    pub fn build(history: &History, began_us: u64, ended_us: u64) -> Vec<NetworkFaultReport> {
        let mut out: Vec<NetworkFaultReport> = Vec::new();
        for r in &history.failover {
            let Happening::Network { fault, change } = &r.what else {
                continue;
            };
            let s = |us: u64| us.saturating_sub(began_us) as f64 / 1e6;
            if *fault == FaultKind::Heal {
                if let Some(open) = out
                    .iter_mut()
                    .find(|o| o.until_us.is_none() && o.change == *change)
                {
                    open.until_us = Some(r.wall_us);
                    open.until_s = Some(s(r.wall_us));
                }
                continue;
            }
            out.push(NetworkFaultReport {
                fault: *fault,
                change: change.clone(),
                from_s: s(r.wall_us),
                until_s: None,
                from_us: r.wall_us,
                until_us: None,
                before: Window::default(),
                during: Window::default(),
                after: Window::default(),
            });
        }
        for o in &mut out {
            let until = o.until_us.unwrap_or(ended_us).min(ended_us);
            o.before = Window::of(history, began_us, o.from_us);
            o.during = Window::of(history, o.from_us, until);
            o.after = Window::of(history, until, ended_us);
        }
        out
    }

    /// Whether a network fault touching `node` (or the warehouse, which
    /// every trader needs) was in force at `wall_us`, or had healed less
    /// than [`AFTERMATH_US`] before: what explains an outage or a death
    /// that no node fault caused.
    pub fn explains(history: &History, node: NodeId, wall_us: u64) -> bool {
        let mut open: Vec<(&NetFault, u64)> = Vec::new();
        let mut spans: Vec<(u64, u64, &NetFault)> = Vec::new();
        for r in &history.failover {
            let Happening::Network { fault, change } = &r.what else {
                continue;
            };
            if *fault == FaultKind::Heal {
                if let Some(i) = open.iter().position(|(c, _)| *c == change) {
                    let (c, from) = open.remove(i);
                    spans.push((from, r.wall_us, c));
                }
            } else {
                open.push((change, r.wall_us));
            }
        }
        spans.extend(open.into_iter().map(|(c, from)| (from, u64::MAX, c)));
        spans.iter().any(|(from, until, c)| {
            let touched = c.nodes();
            (touched.contains(&node) || touched.contains(&NodeId::WAREHOUSE))
                && wall_us >= *from
                && wall_us <= until.saturating_add(AFTERMATH_US)
        })
    }

    /// The fault and its effect, in a line.
    pub fn line(&self) -> String {
        let until = self
            .until_s
            .map_or("the end".to_string(), |u| format!("{u:.1} s"));
        format!(
            "{} from {:.1} s to {until}: {:.0} req/s (p50 {:.1} ms, p99 {:.0} ms, {} failed) against {:.0} req/s (p50 {:.1} ms) before",
            self.change,
            self.from_s,
            self.during.per_s,
            self.during.p50_ms,
            self.during.p99_ms,
            self.during.failed,
            self.before.per_s,
            self.before.p50_ms,
        )
    }
}

/// How long after a network fault heals its effects still count as its own
/// (a connection across it is found dead and made anew): 2 s.
pub const AFTERMATH_US: u64 = 2_000_000;

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
    /// The network faults, each from its start to its heal, with the
    /// requests' rate and latency before, during and after it.
    #[serde(default)]
    pub network_faults: Vec<NetworkFaultReport>,
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
                Happening::Promoted { .. }
                | Happening::View { .. }
                | Happening::Deposed { .. }
                | Happening::Network { .. } => {}
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
            network_faults: NetworkFaultReport::build(history, began_us, ended_us),
        }
    }
}
