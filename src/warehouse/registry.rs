//! The market's trader set, kept by the warehouse: one [`View`] per
//! [`Epoch`], committed by compare-and-set, and the traders' leases.
//!
//! A pure state machine (no sockets, no clock: time comes in as an
//! argument), owned by the warehouse's ledger thread beside the books, so a
//! change of the set and the requests it fences are ordered in one place.
//!
//! ## Why the warehouse
//! The warehouse is already the market's one source of truth (for stock) and
//! every trade passes through it; if it is down, nothing can be settled
//! anyway. Making it also the keeper of the trader set turns agreement into a
//! local fact: epoch `e` is written once, in the warehouse's durable store,
//! so every node that learns epoch `e` learns the same set. Peers still elect
//! the traders among themselves (messages 0 and 1) and traders still detect
//! each other's death (messages 7 and 8); what they decide takes effect only
//! once the warehouse commits it ([`Registry::decide`]), and reaches the other
//! peers as the committed view.
//!
//! ## The rules
//! - **Opening.** Until the first view (epoch 1) is committed the market is
//!   closed; it opens when every one of the config's `peers` peers has
//!   joined ([`Body::Join`](crate::wire::Body::Join)), whatever order they
//!   started in. Only then may the election's result be committed, and only
//!   a full set of `traders` traders, for a `grace` after the opening: a
//!   peer that gave up waiting for slower ones cannot commit a smaller set
//!   while they are still electing. After the grace a smaller set is taken
//!   (peers that joined and died before the election).
//! - **Compare-and-set.** A proposal names the epoch it replaces (`base`);
//!   unless that is the current epoch it is refused with the current view,
//!   which the proposer adopts. Of two traders that declare each other dead
//!   (a partition between them), the first to reach the warehouse wins and
//!   the other learns it is deposed. After epoch 1, only a trader of the
//!   current set may change it.
//! - **Leases.** A trader of the current set renews its lease every
//!   heartbeat interval ([`Body::Renew`](crate::wire::Body::Renew)); the
//!   trader counts the lease from when it *sent* the request, the warehouse
//!   from when it granted it, so the trader's lease always ends first. A
//!   change that removes a trader whose lease still runs is refused
//!   ([`Refusal::LeaseHeld`]) until it ends: by the time a set without trader
//!   `t` is committed, `t` has stopped answering on its own.
//! - **Fencing.** Buys, sells and lookups (messages 2, 3, 4) carry the
//!   trader's epoch; they are applied only if it is the current epoch and the
//!   trader is in its set. A flushed entry (message 9) carries the epoch
//!   under which the trader acknowledged it, and is applied only if the
//!   trader was in that epoch's set (see [`Registry::fence_entry`]).
//!
//! A restarted warehouse reads its views back; it does not know the leases
//! it granted, so it counts every current trader as leased for a full lease
//! from its restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::wire::{Epoch, NodeId, Refusal, View};

/// The warehouse's record of the trader set.
#[derive(Clone, Debug)]
pub struct Registry {
    peers: u32,
    seats: usize,
    lease: Duration,
    /// How long after the opening only a full set is committed.
    grace: Duration,
    /// When the last peer joined.
    opened_at: Option<Instant>,
    joined: BTreeSet<NodeId>,
    /// Every committed view, in epoch order: `views[i].epoch == i + 1`.
    views: Vec<View>,
    /// When each current trader's lease ends, as the warehouse granted it.
    leases: BTreeMap<NodeId, Instant>,
}

impl Registry {
    /// A registry for `peers` peers and `seats` traders, with the views a
    /// store held (none for a new market). Every trader of the last view
    /// counts as leased for `lease` from `now`.
    pub fn new(
        peers: u32,
        seats: usize,
        lease: Duration,
        grace: Duration,
        views: Vec<View>,
        now: Instant,
    ) -> Self {
        let leases = views
            .last()
            .map(|v| v.traders.iter().map(|&t| (t, now + lease)).collect())
            .unwrap_or_default();
        Self {
            peers,
            seats: seats.max(1),
            lease,
            grace,
            opened_at: None,
            joined: BTreeSet::new(),
            views,
            leases,
        }
    }

    /// The current view (epoch 0 and no traders before the first election).
    pub fn current(&self) -> View {
        self.views.last().cloned().unwrap_or_default()
    }

    /// The first committed view: its set fixes the buyers' and sellers' roles.
    pub fn first(&self) -> View {
        self.views.first().cloned().unwrap_or_default()
    }

    /// Every committed view, in epoch order.
    pub fn views(&self) -> &[View] {
        &self.views
    }

    /// Whether trading may start: a view exists, or every peer has joined.
    pub fn open(&self) -> bool {
        !self.views.is_empty() || self.joined.len() as u32 >= self.peers
    }

    /// How many peers have joined since the warehouse started.
    pub fn joined(&self) -> u32 {
        self.joined.len() as u32
    }

    fn is_peer(&self, node: NodeId) -> bool {
        (1..=self.peers).contains(&node.0)
    }

    /// `peer` is up (at `now`).
    pub fn join(&mut self, now: Instant, peer: NodeId) -> Result<(), Refusal> {
        if !self.is_peer(peer) {
            return Err(Refusal::Membership {
                reason: format!(
                    "{peer} is not a peer of this market (peers are 1..={})",
                    self.peers
                ),
            });
        }
        self.joined.insert(peer);
        if self.opened_at.is_none() && self.open() {
            self.opened_at = Some(now);
        }
        Ok(())
    }

    /// Whether `from`'s proposal to replace epoch `base` with `traders` may
    /// be committed now; if so, the view to commit (then call
    /// [`Registry::commit`] once it is durable).
    pub fn decide(
        &self,
        now: Instant,
        from: NodeId,
        base: Epoch,
        traders: &[NodeId],
    ) -> Result<View, Refusal> {
        let current = self.current();
        let refuse = |reason: String| Err(Refusal::Membership { reason });
        #[cfg(any(test, feature = "sim"))]
        let base = match super::broken::is(super::broken::Broken::Fencing) {
            true if base != Epoch(0) && current.epoch != Epoch(0) => current.epoch,
            _ => base,
        };
        #[cfg(any(test, feature = "sim"))]
        let from = match super::broken::is(super::broken::Broken::Fencing) {
            true => current.traders.first().copied().unwrap_or(from),
            false => from,
        };
        if base != current.epoch {
            return Err(Refusal::StaleEpoch {
                theirs: base,
                current,
            });
        }
        let mut set: Vec<NodeId> = traders.to_vec();
        set.sort_unstable();
        set.dedup();
        if set.is_empty() || set.len() > self.seats {
            return refuse(format!(
                "a trader set holds 1 to {} traders, not {}",
                self.seats,
                set.len()
            ));
        }
        if let Some(bad) = set.iter().find(|t| !self.is_peer(**t)) {
            return refuse(format!("{bad} is not a peer of this market"));
        }
        if base == Epoch(0) {
            if !self.open() {
                return Err(Refusal::NotOpen {
                    joined: self.joined(),
                    peers: self.peers,
                });
            }
            // While every peer that joined may still be electing, only the
            // set the bully would pick with all of them alive is taken: the
            // `seats` highest that joined.
            let early = self.opened_at.is_some_and(|at| now < at + self.grace);
            let highest: Vec<NodeId> = {
                let mut h: Vec<NodeId> =
                    self.joined.iter().rev().take(self.seats).copied().collect();
                h.sort_unstable();
                h
            };
            if early && set != highest {
                return refuse(format!(
                    "the first trader set is the {} highest peers that joined ({}) while they may still be electing, not {}",
                    self.seats,
                    View {
                        epoch: Epoch(1),
                        traders: highest,
                    },
                    View {
                        epoch: Epoch(1),
                        traders: set,
                    }
                ));
            }
        } else if !current.contains(from) {
            return refuse(format!(
                "only a trader of {current} may change it, not {from}"
            ));
        }
        #[cfg(any(test, feature = "sim"))]
        let leases_held = !super::broken::is(super::broken::Broken::Fencing);
        #[cfg(not(any(test, feature = "sim")))]
        let leases_held = true;
        for gone in current.traders.iter().filter(|t| !set.contains(t)) {
            if let Some(until) = self.leases.get(gone).filter(|u| leases_held && **u > now) {
                return Err(Refusal::LeaseHeld {
                    trader: *gone,
                    ms: until.duration_since(now).as_millis() as u64 + 1,
                });
            }
        }
        Ok(View {
            epoch: Epoch(current.epoch.0 + 1),
            traders: set,
        })
    }

    /// Makes `view` (from [`Registry::decide`], now durable) current.
    pub fn commit(&mut self, view: View) {
        debug_assert_eq!(
            view.epoch.0,
            self.views.len() as u64 + 1,
            "views are committed in order"
        );
        self.leases.retain(|t, _| view.contains(*t));
        self.views.push(view);
    }

    /// `from` asks to extend its lease in `epoch`: granted for the lease's
    /// length from `now` if `epoch` is current and `from` is in its set.
    pub fn renew(
        &mut self,
        now: Instant,
        from: NodeId,
        epoch: Epoch,
    ) -> Result<(View, Duration), Refusal> {
        self.fence(from, epoch)?;
        self.leases.insert(from, now + self.lease);
        Ok((self.current(), self.lease))
    }

    /// Whether a buy, sell or lookup from `from`, sent in `epoch`, may be
    /// served: `epoch` is current and `from` is one of its traders.
    pub fn fence(&self, from: NodeId, epoch: Epoch) -> Result<(), Refusal> {
        #[cfg(any(test, feature = "sim"))]
        if super::broken::is(super::broken::Broken::Fencing) {
            return Ok(());
        }
        // On every request's path: no copy of the view unless it is refused.
        match self.views.last() {
            Some(v) if v.epoch == epoch && v.contains(from) => Ok(()),
            _ => Err(Refusal::StaleEpoch {
                theirs: epoch,
                current: self.current(),
            }),
        }
    }

    /// Whether a flushed entry that `from` acknowledged in `epoch` may be
    /// applied: `from` was a trader of `epoch`. An entry of an epoch that is
    /// over still counts: the trader acknowledged it under its lease, before
    /// any view without it was committed, so it is an acknowledged request
    /// and must reach the books (a deposed cached trader's journal is
    /// flushed, not dropped).
    pub fn fence_entry(&self, from: NodeId, epoch: Epoch) -> Result<(), Refusal> {
        #[cfg(any(test, feature = "sim"))]
        if super::broken::is(super::broken::Broken::Fencing) {
            return Ok(());
        }
        let known = epoch.0 >= 1
            && self
                .views
                .get(epoch.0 as usize - 1)
                .is_some_and(|v| v.contains(from));
        if known {
            Ok(())
        } else {
            Err(Refusal::StaleEpoch {
                theirs: epoch,
                current: self.current(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(300);
    const GRACE: Duration = Duration::from_secs(2);

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    fn market(now: Instant) -> Registry {
        let mut r = Registry::new(4, 2, LEASE, GRACE, Vec::new(), now);
        for p in 1..=4 {
            r.join(now, NodeId(p)).unwrap();
        }
        r
    }

    fn commit(r: &mut Registry, now: Instant, from: u32, base: u64, set: &[u32]) -> View {
        let v = r.decide(now, NodeId(from), Epoch(base), &ids(set)).unwrap();
        r.commit(v.clone());
        v
    }

    #[test]
    fn the_market_opens_only_once_every_peer_has_joined() {
        let now = Instant::now();
        let mut r = Registry::new(3, 2, LEASE, GRACE, Vec::new(), now);
        r.join(now, NodeId(3)).unwrap();
        r.join(now, NodeId(1)).unwrap();
        assert!(!r.open());
        assert_eq!(
            r.decide(now, NodeId(3), Epoch(0), &ids(&[2, 3])),
            Err(Refusal::NotOpen {
                joined: 2,
                peers: 3
            })
        );
        r.join(now, NodeId(2)).unwrap();
        assert!(r.open());
        assert!(
            r.join(now, NodeId(4)).is_err(),
            "not a peer of a 3-peer market"
        );
        let v = commit(&mut r, now, 3, 0, &[3, 2]);
        assert_eq!(
            v,
            View {
                epoch: Epoch(1),
                traders: ids(&[2, 3])
            }
        );
        assert_eq!(r.first(), v);
    }

    #[test]
    fn only_the_highest_peers_are_a_first_set_while_slower_peers_may_still_be_electing() {
        let t0 = Instant::now();
        let r = market(t0);
        assert!(matches!(
            r.decide(t0, NodeId(4), Epoch(0), &ids(&[4])),
            Err(Refusal::Membership { .. })
        ));
        assert!(r.decide(t0, NodeId(4), Epoch(0), &ids(&[3, 4])).is_ok());
        assert!(
            r.decide(t0 + GRACE, NodeId(4), Epoch(0), &ids(&[4]))
                .is_ok()
        );
    }

    #[test]
    fn of_two_traders_declaring_each_other_dead_the_first_wins_and_the_other_is_told() {
        let t0 = Instant::now();
        let mut r = market(t0);
        commit(&mut r, t0, 4, 0, &[3, 4]);
        let later = t0 + LEASE * 2; // neither renewed: both leases are over
        let v2 = commit(&mut r, later, 4, 1, &[4]);
        assert_eq!(
            r.decide(later, NodeId(3), Epoch(1), &ids(&[3])),
            Err(Refusal::StaleEpoch {
                theirs: Epoch(1),
                current: v2.clone()
            })
        );
        // The deposed trader can neither renew, nor trade, nor change the set.
        assert!(r.renew(later, NodeId(3), Epoch(1)).is_err());
        assert!(r.fence(NodeId(3), Epoch(1)).is_err());
        assert!(r.fence(NodeId(3), Epoch(2)).is_err());
        assert!(matches!(
            r.decide(later, NodeId(3), Epoch(2), &ids(&[3])),
            Err(Refusal::Membership { .. })
        ));
        assert_eq!(r.fence(NodeId(4), Epoch(2)), Ok(()));
    }

    #[test]
    fn a_trader_is_removed_only_once_its_lease_is_over() {
        let t0 = Instant::now();
        let mut r = market(t0);
        commit(&mut r, t0, 4, 0, &[3, 4]);
        r.renew(t0, NodeId(3), Epoch(1)).unwrap();
        let soon = t0 + LEASE / 3;
        assert!(matches!(
            r.decide(soon, NodeId(4), Epoch(1), &ids(&[4])),
            Err(Refusal::LeaseHeld {
                trader: NodeId(3),
                ..
            })
        ));
        assert!(
            r.decide(t0 + LEASE, NodeId(4), Epoch(1), &ids(&[4]))
                .is_ok()
        );
    }

    #[test]
    fn a_restarted_warehouse_keeps_its_views_and_counts_every_trader_as_leased() {
        let t0 = Instant::now();
        let mut r = market(t0);
        commit(&mut r, t0, 4, 0, &[3, 4]);
        let restarted = Registry::new(4, 2, LEASE, GRACE, r.views().to_vec(), t0);
        assert!(restarted.open(), "a market with a view stays open");
        assert!(matches!(
            restarted.decide(t0, NodeId(4), Epoch(1), &ids(&[4])),
            Err(Refusal::LeaseHeld { .. })
        ));
    }

    #[test]
    fn a_flushed_entry_is_judged_by_the_epoch_it_was_acknowledged_in() {
        let t0 = Instant::now();
        let mut r = market(t0 - LEASE * 4);
        commit(&mut r, t0, 4, 0, &[3, 4]);
        commit(&mut r, t0 + LEASE * 2, 4, 1, &[4]);
        assert_eq!(r.fence_entry(NodeId(3), Epoch(1)), Ok(()));
        assert!(r.fence_entry(NodeId(3), Epoch(2)).is_err());
        assert!(
            r.fence_entry(NodeId(2), Epoch(1)).is_err(),
            "never a trader"
        );
        assert!(r.fence_entry(NodeId(3), Epoch(0)).is_err());
        assert!(r.fence_entry(NodeId(3), Epoch(9)).is_err());
    }

    #[test]
    fn proposals_are_checked() {
        let t0 = Instant::now();
        let r = market(t0);
        let bad = |set: &[u32]| r.decide(t0, NodeId(4), Epoch(0), &ids(set));
        assert!(bad(&[]).is_err());
        assert!(bad(&[2, 3, 4]).is_err(), "more traders than seats");
        assert!(bad(&[9]).is_err(), "not a peer");
        assert!(bad(&[0]).is_err(), "the warehouse is not a peer");
    }
}
