//! Who the traders are, as one node knows it, and the record of every change.
//!
//! [`Membership`] is the node's trader list, shared by all its parts: the
//! election sets it first (message 1), a death replaces it (message 8, from
//! the trader that detected it). Watchers (the client's failover, the
//! heartbeat driver) are woken on every change. Once a death is known, a late
//! election result can no longer bring the dead trader back.
//!
//! [`Record`] is the history line (`RUN_DIR/history/<node>.jsonl`, event
//! `failover`) written for each election result, fault, detection, promotion
//! and retry, with wall time, Lamport time and who recorded it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::Lamport;
use crate::config::{FaultKind, Role};
use crate::wire::{NodeId, RequestId};

/// One node's view of the trader list.
pub struct Membership {
    me: NodeId,
    traders: watch::Sender<Vec<NodeId>>,
    dead: Mutex<BTreeSet<NodeId>>,
}

impl Membership {
    /// A view with no traders known yet (before the election).
    pub fn new(me: NodeId) -> Self {
        Self::with_traders(me, Vec::new())
    }

    /// A view that starts from `traders` (nodes started without an election).
    pub fn with_traders(me: NodeId, traders: Vec<NodeId>) -> Self {
        Self {
            me,
            traders: watch::Sender::new(traders),
            dead: Mutex::new(BTreeSet::new()),
        }
    }

    /// The current trader list, ascending.
    pub fn traders(&self) -> Vec<NodeId> {
        self.traders.borrow().clone()
    }

    /// Whether this node is a trader now.
    pub fn is_trader(&self) -> bool {
        self.traders.borrow().contains(&self.me)
    }

    /// Traders this node knows to be dead.
    pub fn dead(&self) -> BTreeSet<NodeId> {
        self.dead.lock().expect("dead set").clone()
    }

    /// A receiver woken on every change of the list.
    pub fn subscribe(&self) -> watch::Receiver<Vec<NodeId>> {
        self.traders.subscribe()
    }

    /// The election's result (message 1). Ignored once a death is known: the
    /// list has moved on. Returns whether the list changed.
    pub fn apply_elected(&self, traders: &[NodeId]) -> bool {
        let dead = self.dead.lock().expect("dead set");
        if !dead.is_empty() {
            return false;
        }
        self.set(traders, &dead)
    }

    /// A death (message 8 from `by`, or this node's own detection, `by` =
    /// this node): `dead` is out, the list becomes `traders` (without any
    /// trader known dead). A notice from a node this one knows to be dead is
    /// ignored: when two traders declare each other dead (a partition between
    /// them, a stalled host), every node keeps the first notice it hears and
    /// the market keeps a trader, instead of each notice removing the other's
    /// sender and leaving none. Returns whether the list changed.
    pub fn apply_death(&self, by: NodeId, dead: NodeId, traders: &[NodeId]) -> bool {
        let mut known = self.dead.lock().expect("dead set");
        if known.contains(&by) {
            return false;
        }
        known.insert(dead);
        self.set(traders, &known)
    }

    fn set(&self, traders: &[NodeId], dead: &BTreeSet<NodeId>) -> bool {
        let mut list: Vec<NodeId> = traders
            .iter()
            .copied()
            .filter(|t| !dead.contains(t) && !t.is_warehouse())
            .collect();
        list.sort_unstable();
        list.dedup();
        self.traders.send_if_modified(|cur| {
            if *cur == list {
                false
            } else {
                *cur = list;
                true
            }
        })
    }
}

/// A failover history line: what happened, when (wall and Lamport) and who
/// recorded it (`by`: a node, or `null` for the launcher).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Wall time in µs since the Unix epoch.
    pub wall_us: u64,
    /// The recorder's Lamport time; for a fault, the victim's clock just
    /// before the launcher struck (`null` if it did not say).
    pub lamport: Option<Lamport>,
    pub by: Option<NodeId>,
    pub what: Happening,
}

/// The kinds of failover line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Happening {
    /// The recorder learned the election's result and took `role`.
    Elected { traders: Vec<NodeId>, role: Role },
    /// The launcher injected a fault into `victim`.
    Fault { fault: FaultKind, victim: NodeId },
    /// The recorder (a trader) declared `dead` dead and told every peer the
    /// new list (message 8); `promoted` joined it (`replace_dead_traders`).
    Detected {
        dead: NodeId,
        cause: String,
        traders: Vec<NodeId>,
        promoted: Option<NodeId>,
    },
    /// The recorder was promoted to trader; its workload (if any) stopped.
    Promoted { traders: Vec<NodeId>, was: Role },
    /// The recorder (a client) retried request `id`, which was at `from`,
    /// at another trader with the same id.
    Retried {
        id: RequestId,
        from: NodeId,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn a_known_death_is_never_undone_by_a_late_election_result() {
        let m = Membership::new(NodeId(1));
        let mut rx = m.subscribe();
        assert!(m.apply_elected(&ids(&[6, 5])));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ids(&[5, 6]));
        assert!(m.apply_death(NodeId(5), NodeId(6), &ids(&[5])));
        assert!(!m.apply_elected(&ids(&[5, 6])));
        // A stale message 8 that still lists the dead trader cannot either.
        m.apply_death(NodeId(5), NodeId(4), &ids(&[5, 6]));
        assert_eq!(m.traders(), ids(&[5]));
        assert!(!m.is_trader());
    }

    #[test]
    fn two_traders_declaring_each_other_dead_leave_the_first_one_heard() {
        let m = Membership::new(NodeId(1));
        m.apply_elected(&ids(&[5, 6]));
        assert!(m.apply_death(NodeId(5), NodeId(6), &ids(&[5])));
        // Trader 6's notice that 5 died comes from a node known dead.
        assert!(!m.apply_death(NodeId(6), NodeId(5), &ids(&[6])));
        assert_eq!(m.traders(), ids(&[5]));
    }

    #[test]
    fn records_read_back() {
        let r = Record {
            wall_us: 1,
            lamport: Some(Lamport(7)),
            by: Some(NodeId(5)),
            what: Happening::Detected {
                dead: NodeId(6),
                cause: "silent".into(),
                traders: ids(&[5]),
                promoted: None,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"kind\":\"detected\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
