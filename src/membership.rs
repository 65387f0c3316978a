//! Who the traders are, as one node knows it, and the record of every change.
//!
//! [`Membership`] is the node's current [`View`] (epoch and trader set),
//! shared by all its parts. Every view a node can hear of was committed by
//! the warehouse ([`crate::warehouse::registry`]), so the rule to take one is
//! simple: adopt a view whose epoch is higher than the one held, ignore any
//! other. The order in which notices arrive (message 1, message 8, a
//! heartbeat, a refusal carrying the current view) does not matter, and a
//! notice from a deposed trader, which carries an epoch that is over, is
//! never acted on. Watchers (the client's failover, the heartbeat driver,
//! the role switch) are woken on every change.
//!
//! [`Record`] is the history line (`RUN_DIR/history/<node>.jsonl`, event
//! `failover`) written for each view adopted or committed, fault, detection,
//! promotion and retry, with wall time, Lamport time and who recorded it.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::Lamport;
use crate::config::{FaultKind, NetFault, Role};
use crate::wire::{Epoch, NodeId, RequestId, View};

/// One node's view of the trader set.
pub struct Membership {
    me: NodeId,
    view: watch::Sender<View>,
}

impl Membership {
    /// A node that knows no view yet (epoch 0, no traders).
    pub fn new(me: NodeId) -> Self {
        Self::with_view(me, View::default())
    }

    /// A node that starts from `view` (tests that start nodes without an
    /// election or a warehouse's registry).
    pub fn with_view(me: NodeId, view: View) -> Self {
        Self {
            me,
            view: watch::Sender::new(view),
        }
    }

    /// The view held now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    pub fn epoch(&self) -> Epoch {
        self.view.borrow().epoch
    }

    /// The current traders, ascending.
    pub fn traders(&self) -> Vec<NodeId> {
        self.view.borrow().traders.clone()
    }

    /// Whether this node is a trader in the view it holds.
    pub fn is_trader(&self) -> bool {
        self.view.borrow().contains(self.me)
    }

    /// A receiver woken on every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Takes `view` if its epoch is newer than the one held; returns whether
    /// it did.
    pub fn adopt(&self, view: &View) -> bool {
        self.view.send_if_modified(|cur| {
            if view.epoch > cur.epoch {
                *cur = view.clone();
                true
            } else {
                false
            }
        })
    }
}

/// The trader set to propose once `dead` is found dead: the view without
/// it, and, if `replace` is set, the highest peer of `peers` that is not a
/// trader, not `dead`, and never was a trader (`ever`: traders serve for
/// life, and one that was deposed stays out).
pub fn successor(
    view: &View,
    dead: NodeId,
    replace: bool,
    peers: u32,
    ever: &std::collections::BTreeSet<NodeId>,
) -> (Vec<NodeId>, Option<NodeId>) {
    let mut traders: Vec<NodeId> = view
        .traders
        .iter()
        .copied()
        .filter(|t| *t != dead)
        .collect();
    let promoted = replace
        .then(|| {
            (1..=peers)
                .rev()
                .map(NodeId)
                .find(|p| *p != dead && !view.contains(*p) && !ever.contains(p))
        })
        .flatten();
    traders.extend(promoted);
    traders.sort_unstable();
    (traders, promoted)
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
    /// The recorder adopted `view`, heard from `from`. Every node writes one
    /// per view it takes: the checker's evidence for agreement.
    View { view: View, from: NodeId },
    /// The recorder (the warehouse) committed `view`, proposed by `proposer`.
    Committed {
        view: View,
        proposer: NodeId,
        cause: String,
    },
    /// The recorder stopped serving as a trader: `view` does not hold it.
    Deposed { view: View },
    /// The recorder could not reach the warehouse (`up: false`) or reached
    /// it again (`up: true`).
    Warehouse { up: bool, reason: String },
    /// The launcher injected a fault into `victim`.
    Fault { fault: FaultKind, victim: NodeId },
    /// The launcher put a network fault in force (`fault` is its kind) or
    /// healed it (`fault` is `heal`).
    Network { fault: FaultKind, change: NetFault },
    /// The recorder (a trader) found `dead` dead at `found_us` (wall µs),
    /// had the warehouse commit `traders` without it (the record's own time:
    /// once `dead`'s lease was over) and told every peer (message 8);
    /// `promoted` joined it (`replace_dead_traders`).
    Detected {
        dead: NodeId,
        cause: String,
        traders: Vec<NodeId>,
        promoted: Option<NodeId>,
        #[serde(default)]
        found_us: u64,
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

    fn view(epoch: u64, v: &[u32]) -> View {
        View {
            epoch: Epoch(epoch),
            traders: v.iter().copied().map(NodeId).collect(),
        }
    }

    #[test]
    fn only_a_newer_epoch_is_adopted_whatever_order_notices_arrive_in() {
        let m = Membership::new(NodeId(5));
        let mut rx = m.subscribe();
        assert!(m.adopt(&view(2, &[5])));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), view(2, &[5]));
        // The deposed trader's notice (epoch 1) and the election's result
        // (epoch 1), arriving late, change nothing.
        assert!(!m.adopt(&view(1, &[5, 6])));
        assert!(!m.adopt(&view(2, &[5])));
        assert!(m.is_trader());
        assert!(m.adopt(&view(3, &[4, 6])));
        assert!(!m.is_trader(), "a newer set without this node deposes it");
        assert_eq!(m.epoch(), Epoch(3));
    }

    #[test]
    fn the_successor_set_drops_the_dead_and_promotes_a_peer_that_never_served() {
        let v = view(3, &[5, 6]);
        let none = std::collections::BTreeSet::new();
        assert_eq!(
            successor(&v, NodeId(6), false, 6, &none),
            (vec![NodeId(5)], None)
        );
        assert_eq!(
            successor(&v, NodeId(6), true, 6, &none),
            (vec![NodeId(4), NodeId(5)], Some(NodeId(4)))
        );
        // Peer 4 was a trader once and was deposed: it stays out.
        let ever = [NodeId(4)].into_iter().collect();
        assert_eq!(
            successor(&v, NodeId(6), true, 6, &ever),
            (vec![NodeId(3), NodeId(5)], Some(NodeId(3)))
        );
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
                traders: vec![NodeId(5)],
                promoted: None,
                found_us: 0,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"kind\":\"detected\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
