//! A peer's message handler and the state its drivers share.
//!
//! Every peer can serve as a trader (the [`Desk`] is always there); it does
//! so only while the view it holds names it and its lease runs
//! ([`super::tenure`]), and refuses trades otherwise
//! ([`Refusal::NotATrader`]) so that a client retries them elsewhere.
//!
//! What each message does:
//! - messages 0 and 1 go to the election ([`crate::election`]);
//! - message 8 and a heartbeat (7) carry a view: a newer one is adopted
//!   ([`Service::adopt`]), an older one is refused with the current view
//!   ([`Refusal::StaleEpoch`]) and never acted on;
//! - buys and sells (5, 6) are served through the desk, once the lease is
//!   confirmed.
//!
//! The drivers around it: [`super::join`] (join the warehouse, elect),
//! [`super::heartbeats`] (failure detection, message 8), [`super::tenure`]
//! (the lease); [`super::run`] is the role switch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::heartbeats::{Heard, Settling};
use super::tenure::Tenure;
use crate::config::Role;
use crate::election::Election;
use crate::link::Link;
use crate::net::BoxFuture;
use crate::node::{Handler, NodeContext, not_for_role};
use crate::trader::Trader;
use crate::trader::desk::Desk;
use crate::wire::{Body, NodeId, Refusal, RequestId, View};

/// The control plane's requests to the warehouse (join, proposals, lease
/// renewals) are numbered from here: above a node's heartbeat ids, below
/// the election's ([`crate::election::ELECTION_ID_BASE`]).
const CONTROL_ID_BASE: u64 = 1 << 61;

/// One peer's protocol state and its links to the other nodes.
pub struct Service {
    pub(super) ctx: NodeContext,
    pub(super) election: Mutex<Election>,
    /// Control-plane links (election, heartbeats, message 8) to every other peer.
    pub(super) control: BTreeMap<NodeId, Link>,
    /// The control plane's link to the warehouse (join, proposals, leases).
    pub(super) warehouse: Link,
    /// The trader this peer serves as while the view names it; a cached
    /// trader's queue is flushed when the node stops.
    pub(super) trader: Arc<Trader>,
    pub(super) desk: Desk,
    pub(super) tenure: Tenure,
    /// Deaths being settled with the warehouse.
    pub(super) settling: Settling,
    /// Heartbeats received, for the heartbeat driver's detector.
    pub(super) heard: Heard,
    /// Every peer named a trader in a view this node adopted.
    ever: Mutex<BTreeSet<NodeId>>,
    next_control: AtomicU64,
}

/// The handler the node's server calls.
pub struct PeerHandler(pub Arc<Service>);

impl Handler for PeerHandler {
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        let svc = self.0.clone();
        Box::pin(async move { svc.handle(from, body).await })
    }
}

impl Service {
    pub fn new(ctx: &NodeContext, stop: CancellationToken) -> anyhow::Result<Arc<Self>> {
        let peers: Vec<NodeId> = (1..=ctx.config.market.peers).map(NodeId).collect();
        let election = Election::new(
            ctx.me,
            &peers,
            ctx.config.market.traders as usize,
            ctx.config.election.timeout,
        );
        let warehouse = ctx
            .link_to(NodeId::WAREHOUSE)
            .ok_or_else(|| anyhow::anyhow!("{}: no address for the warehouse", ctx.me))?;
        let trader = Arc::new(Trader::start(ctx)?);
        let desk = Desk::start(trader.clone(), stop);
        Ok(Arc::new(Self {
            ctx: ctx.clone(),
            election: Mutex::new(election),
            control: ctx.peer_links(),
            warehouse,
            trader,
            desk,
            tenure: Tenure::default(),
            settling: Settling::default(),
            heard: Heard::default(),
            ever: Mutex::new(BTreeSet::new()),
            next_control: AtomicU64::new(0),
        }))
    }

    /// A fresh id for a control-plane request to the warehouse.
    pub fn control_id(&self) -> RequestId {
        RequestId {
            node: self.ctx.me,
            seq: CONTROL_ID_BASE + self.next_control.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Every peer that was a trader in a view this node adopted.
    pub fn ever_traders(&self) -> BTreeSet<NodeId> {
        self.ever.lock().expect("ever").clone()
    }

    /// Adopts `view` (heard from `from`) if it is newer than the one held,
    /// and records it; a trader the new view leaves out stops serving at
    /// once. Returns whether the view was adopted.
    pub fn adopt(&self, view: &View, from: NodeId) -> bool {
        let Some(deposed) = self.ctx.adopt(view, from) else {
            return false;
        };
        self.ever
            .lock()
            .expect("ever")
            .extend(view.traders.iter().copied());
        if deposed {
            self.tenure.revoke();
        }
        true
    }

    /// What this node takes a view-carrying message from `from` to mean:
    /// `Ok` if the sender's epoch is not behind ours (adopting its view if it
    /// is ahead), else the refusal that tells it the current view.
    fn judge(&self, view: &View, from: NodeId) -> Result<(), Refusal> {
        let mine = self.ctx.traders.view();
        if view.epoch < mine.epoch {
            return Err(Refusal::StaleEpoch {
                theirs: view.epoch,
                current: mine,
            });
        }
        self.adopt(view, from);
        Ok(())
    }

    async fn handle(self: &Arc<Self>, from: NodeId, body: Body) -> Option<Body> {
        match body {
            Body::Election { .. } | Body::Elected { .. } => {
                if let Body::Elected { view } = &body {
                    self.adopt(view, from);
                }
                super::join::on_election_message(self, from, body)
            }
            Body::TraderDied { dead, view } => {
                match self.judge(&view, from) {
                    Ok(()) => tracing::info!(%from, %dead, %view, "trader died (message 8)"),
                    Err(reason) => {
                        tracing::warn!(%from, %dead, "message 8 ignored: {reason}")
                    }
                }
                None
            }
            Body::Heartbeat { id, ref view } => {
                if let Err(reason) = self.judge(view, from) {
                    return Some(Body::Refused { id, reason });
                }
                if !self.ctx.traders.is_trader() {
                    return Some(self.not_a_trader(id));
                }
                self.heard.tell(from);
                self.desk.serve(from, body).await
            }
            Body::Buy(ref order) | Body::Sell(ref order) | Body::Retry { ref order, .. } => {
                let id = order.id;
                if !self.ctx.traders.is_trader() {
                    return Some(self.not_a_trader(id));
                }
                // Answer nothing on a lease that is over: confirm the epoch
                // with the warehouse first (a trader waking from a pause).
                if let Err(reason) = super::tenure::confirm(self).await {
                    return Some(Body::Refused { id, reason });
                }
                if !self.ctx.traders.is_trader() {
                    return Some(self.not_a_trader(id));
                }
                self.desk.serve(from, body).await
            }
            other => {
                let role = if self.ctx.traders.is_trader() {
                    Role::Trader
                } else {
                    self.ctx.role
                };
                not_for_role(role, from, &other)
            }
        }
    }

    fn not_a_trader(&self, id: crate::wire::RequestId) -> Body {
        Body::Refused {
            id,
            reason: Refusal::NotATrader {
                traders: self.ctx.traders.traders(),
            },
        }
    }
}
