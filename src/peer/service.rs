//! A peer's runtime: the thin async drivers around the pure election
//! ([`crate::election`]) and failure detector ([`crate::heartbeat`]) state
//! machines, the peer's message handler, and the role switch.
//!
//! A peer starts without a role. It serves, elects (messages 0 and 1), and
//! takes its role from the result: a trader if elected, otherwise the buyer
//! or seller the config makes it among the non-traders (see
//! [`crate::config::Config::roles_given`]). Every peer can serve as a trader
//! (the [`Desk`] is always there); it does so only while the trader list says
//! it is one, and refuses trades otherwise ([`Refusal::NotATrader`]) so that a
//! client retries them elsewhere.
//!
//! While a trader, the peer heartbeats the other traders (message 7). When
//! one dies it drops it from the list, promotes the highest live non-trader
//! if `replace_dead_traders` is set, and tells every peer (message 8). A peer
//! promoted while buying or selling finishes the request it has in flight,
//! stops its workload and serves as a trader from then on: traders serve for
//! life and never trade themselves (a configured buyer that is elected at the
//! start never buys, for the same reason).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::election::{Election, Outgoing};
use crate::heartbeat::{Cause, Detector, Output};
use crate::history::{self, Event};
use crate::link::{CallError, Link};
use crate::membership::{Happening, Record};
use crate::net::{BoxFuture, Listener};
use crate::node::{Handler, NodeContext, ServeOptions, not_for_role, now, serve, tell_launcher};
use crate::trader::Trader;
use crate::trader::desk::Desk;
use crate::wire::{Body, NodeId, Refusal};

/// How many election timeouts a peer waits for a result before giving up.
const ELECTION_ROUNDS: u32 = 20;

/// Appends a failover line to the node's history and writes it out at once,
/// so that it survives the node being killed right after.
pub fn record(ctx: &NodeContext, what: Happening) {
    let r = Record {
        wall_us: history::wall_us(),
        lamport: Some(ctx.clock.tick()),
        by: Some(ctx.me),
        what,
    };
    let h = &ctx.history;
    if let Err(e) = h.append(&Event::Failover(r)).and_then(|_| h.flush()) {
        tracing::error!("cannot write history: {e}");
    }
}

/// One peer's protocol state and its links to the other peers.
pub struct Service {
    ctx: NodeContext,
    election: Mutex<Election>,
    /// Control-plane links (election, heartbeats, message 8) to every other peer.
    control: BTreeMap<NodeId, Link>,
    /// The trader this peer serves as while the trader list names it; a
    /// cached trader's queue is flushed when the node stops.
    trader: Arc<Trader>,
    desk: Desk,
}

struct PeerHandler(Arc<Service>);

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
        let control = ctx.peer_links();
        let trader = Arc::new(Trader::start(ctx)?);
        let desk = Desk::start(trader.clone(), stop);
        Ok(Arc::new(Self {
            ctx: ctx.clone(),
            election: Mutex::new(election),
            control,
            trader,
            desk,
        }))
    }

    async fn handle(self: &Arc<Self>, from: NodeId, body: Body) -> Option<Body> {
        match body {
            Body::Election { .. } => {
                let mut outs = self.step(|e| e.on_message(now(), from, &body));
                let reply = outs
                    .iter()
                    .position(|o| o.to == from && o.body.reply_id().is_some())
                    .map(|i| outs.remove(i).body);
                self.dispatch(outs);
                reply
            }
            Body::Elected { .. } => {
                let outs = self.step(|e| e.on_message(now(), from, &body));
                self.dispatch(outs);
                None
            }
            Body::TraderDied { dead, traders } => {
                tracing::info!(%from, %dead, ?traders, "trader died (message 8)");
                self.ctx.traders.apply_death(from, dead, &traders);
                None
            }
            Body::Buy(_) | Body::Sell(_) | Body::Heartbeat { .. } => {
                if self.ctx.traders.is_trader() {
                    self.desk.serve(from, body).await
                } else {
                    body.request_id().map(|id| Body::Refused {
                        id,
                        reason: Refusal::NotATrader {
                            traders: self.ctx.traders.traders(),
                        },
                    })
                }
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

    /// Runs the election state machine and adopts its result.
    fn step(&self, f: impl FnOnce(&mut Election) -> Vec<Outgoing>) -> Vec<Outgoing> {
        let (outs, result) = {
            let mut e = self.election.lock().expect("election");
            let outs = f(&mut e);
            (outs, e.result().map(<[NodeId]>::to_vec))
        };
        if let Some(r) = result {
            self.ctx.traders.apply_elected(&r);
        }
        outs
    }

    /// Sends what the election state machine asked for.
    fn dispatch(self: &Arc<Self>, outs: Vec<Outgoing>) {
        let timeout = self.ctx.config.election.timeout;
        for o in outs {
            let svc = self.clone();
            tokio::spawn(async move {
                let Some(link) = svc.control.get(&o.to) else {
                    return;
                };
                if o.body.request_id().is_none() {
                    if let Err(e) = link.send(o.body, timeout).await {
                        tracing::debug!("election message to {} not sent: {e}", o.to);
                    }
                    return;
                }
                let more = match link.call(o.body, timeout).await {
                    Ok(reply) => svc.step(|e| e.on_message(now(), o.to, &reply)),
                    Err(CallError::Timeout { .. }) => Vec::new(),
                    Err(_) => svc.step(|e| e.on_unreachable(now(), o.to)),
                };
                svc.dispatch(more);
            });
        }
    }

    /// Starts the election and waits for its result (bounded).
    async fn elect(self: &Arc<Self>, stop: &CancellationToken) -> anyhow::Result<Vec<NodeId>> {
        let timeout = self.ctx.config.election.timeout;
        let tick = (timeout / 10).max(Duration::from_millis(5));
        let outs = self.step(|e| e.start(now()));
        self.dispatch(outs);
        // The ticker runs for the node's life: late messages may restart it.
        let svc = self.clone();
        let stop_ticks = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop_ticks.cancelled() => return,
                }
                let outs = svc.step(|e| e.on_tick(now()));
                svc.dispatch(outs);
            }
        });
        let give_up = now() + timeout * ELECTION_ROUNDS;
        loop {
            {
                let e = self.election.lock().expect("election");
                if let (Some(r), false) = (e.result(), e.in_progress()) {
                    return Ok(r.to_vec());
                }
            }
            if now() > give_up {
                bail!(
                    "{}: no election result after {:?} ([election] timeout = {timeout:?})",
                    self.ctx.me,
                    timeout * ELECTION_ROUNDS
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.cancelled() => bail!("stopped before the election ended"),
            }
        }
    }

    /// The heartbeat driver: while this peer is a trader, feeds the detector
    /// the time and the heartbeats' outcomes, and acts on deaths.
    async fn heartbeats(self: Arc<Self>, stop: CancellationToken) {
        let hb = &self.ctx.config.heartbeat;
        let mut detector = Detector::new(self.ctx.me, hb.interval, hb.timeout);
        let tick = (hb.interval / 4).max(Duration::from_millis(5));
        let mut changes = self.ctx.traders.subscribe();
        let (done_tx, mut done) = tokio::sync::mpsc::channel(256);
        loop {
            let watch = if self.ctx.traders.is_trader() {
                self.ctx.traders.traders()
            } else {
                Vec::new()
            };
            detector.watch(now(), &watch);
            let outs = tokio::select! {
                _ = stop.cancelled() => return,
                r = changes.changed() => {
                    if r.is_err() { return; }
                    continue;
                }
                _ = tokio::time::sleep(tick) => detector.on_tick(now()),
                Some((to, result)) = done.recv() => {
                    let now = now();
                    match result {
                        Ok(reply) => detector.on_message(now, to, &reply),
                        Err(CallError::Timeout { .. }) => Vec::new(),
                        Err(CallError::Lost { .. }) => detector.on_lost(now, to),
                        Err(e) => detector.on_refused(now, to, e.to_string()),
                    }
                }
            };
            for o in outs {
                match o {
                    Output::Send(beat) => {
                        let Some(_) = self.control.get(&beat.to) else {
                            continue;
                        };
                        let (svc, tx, timeout) = (self.clone(), done_tx.clone(), hb.timeout);
                        tokio::spawn(async move {
                            let Some(link) = svc.control.get(&beat.to) else {
                                return;
                            };
                            let r = link.call(beat.body, timeout).await;
                            let _ = tx.send((beat.to, r)).await;
                        });
                    }
                    Output::Dead { node, cause } => self.declare_dead(node, cause),
                }
            }
        }
    }

    /// `dead` is dead: drop it, maybe promote a replacement, tell every peer.
    fn declare_dead(self: &Arc<Self>, dead: NodeId, cause: Cause) {
        let m = &self.ctx.traders;
        let mut traders: Vec<NodeId> = m.traders().into_iter().filter(|t| *t != dead).collect();
        let mut promoted = None;
        if self.ctx.config.market.replace_dead_traders {
            let mut known_dead = m.dead();
            known_dead.insert(dead);
            promoted = (1..=self.ctx.config.market.peers)
                .rev()
                .map(NodeId)
                .find(|p| !traders.contains(p) && !known_dead.contains(p));
            traders.extend(promoted);
            traders.sort_unstable();
        }
        if !m.apply_death(self.ctx.me, dead, &traders) && promoted.is_none() {
            return; // already known
        }
        tracing::warn!(%dead, %cause, ?traders, "trader declared dead; telling every peer (message 8)");
        record(
            &self.ctx,
            Happening::Detected {
                dead,
                cause: cause.to_string(),
                traders: traders.clone(),
                promoted,
            },
        );
        let timeout = self.ctx.config.heartbeat.timeout;
        for &peer in self.control.keys() {
            let svc = self.clone();
            let body = Body::TraderDied {
                dead,
                traders: traders.clone(),
            };
            tokio::spawn(async move {
                let Some(link) = svc.control.get(&peer) else {
                    return;
                };
                match link.send(body, timeout).await {
                    Ok(()) => {}
                    // The peer we promoted is not there: it is dead too.
                    Err(e) if Some(peer) == promoted => {
                        svc.declare_dead(peer, Cause::Refused(e.to_string()))
                    }
                    Err(e) => tracing::debug!(%peer, "message 8 not delivered: {e}"),
                }
            });
        }
    }
}

/// Runs a peer until `stop_all`: serve, elect, take the role, trade (until
/// `stop_work`, or until promoted), call `on_done`.
pub async fn run(
    ctx: NodeContext,
    listener: Box<dyn Listener>,
    opts: ServeOptions,
    stop_work: CancellationToken,
    stop_all: CancellationToken,
    on_done: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let svc = Service::new(&ctx, stop_all.clone())?;
    let server = tokio::spawn(serve(
        listener,
        ctx.me,
        ctx.clock.clone(),
        Arc::new(PeerHandler(svc.clone())),
        opts,
        stop_all.clone(),
    ));
    {
        let svc = svc.clone();
        let wedge = ctx.wedge.clone();
        let stop = stop_all.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = wedge.cancelled() => svc.desk.wedge(),
                _ = stop.cancelled() => {}
            }
        });
    }
    if ctx.launched {
        // Tell the launcher every trader list this peer adopts, starting with
        // the one it holds now: the server is already running, so a result
        // (message 1) may have arrived before this subscription.
        let mut rx = ctx.traders.subscribe();
        rx.mark_changed();
        let stop = stop_all.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
                let ids: Vec<String> = rx
                    .borrow_and_update()
                    .iter()
                    .map(|n| n.0.to_string())
                    .collect();
                if !ids.is_empty() {
                    tell_launcher(&format!("traders {}", ids.join(",")));
                }
            }
        });
    }

    let traders = svc.elect(&stop_all).await?;
    let roles = ctx.config.roles_given(&traders, false)?;
    let role = roles
        .iter()
        .find(|(n, _)| *n == ctx.me)
        .map(|(_, r)| *r)
        .unwrap_or(Role::Idle);
    tracing::info!(me = %ctx.me, %role, ?traders, "elected");
    record(
        &ctx,
        Happening::Elected {
            traders: traders.clone(),
            role,
        },
    );
    tokio::spawn(svc.clone().heartbeats(stop_all.clone()));

    if matches!(role, Role::Buyer | Role::Seller) {
        // Promotion ends the workload; the request in flight completes first.
        let work = stop_work.child_token();
        let mut rx = ctx.traders.subscribe();
        let (promo_ctx, promo_work) = (ctx.clone(), work.clone());
        tokio::spawn(async move {
            loop {
                if promo_ctx.traders.is_trader() {
                    record(
                        &promo_ctx,
                        Happening::Promoted {
                            traders: promo_ctx.traders.traders(),
                            was: role,
                        },
                    );
                    promo_work.cancel();
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = promo_work.cancelled() => return,
                }
            }
        });
        crate::peer::trade(&ctx, role, work).await?;
    }
    stop_work.cancelled().await;
    ctx.history.flush()?;
    on_done();
    server.await?;
    svc.trader.stop().await;
    Ok(())
}
