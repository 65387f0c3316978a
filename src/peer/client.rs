//! The client side of a buyer or seller: picks a random live trader for each
//! request, gives each request a unique id (its node and a sequence number;
//! one request in flight at a time), waits for the answer within the request's
//! deadline, and records the request in the history.
//!
//! **Failover.** If the trader dies while the request is in flight (the
//! connection is refused or lost, the trader says it is not a trader any more,
//! or message 8 removes it from the trader list) the request is sent again to
//! another live trader with the *same* id, as long as its deadline allows. The
//! warehouse applies an id once and answers a retry from its record, so a
//! retry is never applied twice. Each retry is a `retried` line in the
//! history. A request that runs out of deadline is recorded as failed ("may or
//! may not have been applied"), never left hanging. A trader that answers
//! with a newer view ([`Refusal::StaleEpoch`]: the client sent to a deposed
//! trader) teaches the client that view.
//!
//! **Backoff.** Once every trader has failed a request, the client waits
//! before trying them again, and after a request that failed it waits before
//! the next one; each wait doubles with every failure in a row, with
//! jitter ([`crate::backoff`]). So while the warehouse is down the clients
//! poll it gently rather than spin through their attempts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use super::Traders;
use super::sequence::Sequence;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::history::{self, Complete, Event, Invoke, Outcome, Request};
use crate::link::{CallError, Link};
use crate::membership::Happening;
use crate::node::{History, NodeContext};
use crate::wire::{Body, NodeId, Order, ProductId, Qty, Refusal, RequestId, Side, View};
use std::sync::Arc;

/// Most attempts (first try and retries) one request makes; with N traders a
/// request needs at most N, the rest absorb list changes.
const MAX_ATTEMPTS: u32 = 16;
/// First pause before trying traders again once every one has failed a
/// request, and after a failed request; it doubles up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(20);
/// Longest such pause.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub struct Client {
    me: NodeId,
    clock: Arc<Clock>,
    links: BTreeMap<NodeId, Link>,
    traders: Traders,
    rng: StdRng,
    seq: Sequence,
    timeout: Duration,
    products: u32,
    history: History,
    ctx: NodeContext,
    /// Waits after failures, shared by the requests: failures in a row
    /// (every trader failing, or requests failing) lengthen it.
    backoff: Backoff,
}

/// How one attempt at one trader ended.
enum Attempt {
    /// A final answer: the outcome and what was granted.
    Done(Outcome, Qty),
    /// The trader is gone or refused to serve: try another. `undecided` if
    /// the request may have been applied through this attempt (it reached the
    /// trader and no definite answer came back).
    Retry { why: String, undecided: bool },
}

impl Attempt {
    fn retry(why: String) -> Self {
        Attempt::Retry {
            why,
            undecided: false,
        }
    }

    fn undecided(why: String) -> Self {
        Attempt::Retry {
            why,
            undecided: true,
        }
    }
}

/// The seed of one node's random choices: the market's seed, spread per node.
pub fn node_seed(seed: u64, node: NodeId) -> u64 {
    seed ^ u64::from(node.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Client {
    /// A client of `ctx`'s node; its request numbers' first block is
    /// reserved off the runtime (a sync: a thousand clients starting at
    /// once must not stall the runtime's threads for a thousand of them).
    pub async fn new(ctx: &NodeContext) -> anyhow::Result<Self> {
        let links = ctx.peer_links();
        let dir = ctx.data_dir.clone();
        let seq = ctx
            .io
            .run(move || Sequence::open(&dir))
            .await
            .map_err(std::io::Error::other)
            .flatten()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reserve request numbers in {}: {e}",
                    ctx.data_dir.display()
                )
            })?;
        Ok(Self {
            me: ctx.me,
            clock: ctx.clock.clone(),
            links,
            traders: ctx.traders.clone(),
            rng: StdRng::seed_from_u64(node_seed(ctx.config.market.seed, ctx.me)),
            seq,
            timeout: ctx.config.market.request_timeout,
            products: ctx.config.products.len() as u32,
            history: ctx.history.clone(),
            ctx: ctx.clone(),
            backoff: Backoff::new(BACKOFF, MAX_BACKOFF),
        })
    }

    /// The node's random source, shared with its workload so one seed replays all.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A random product of the market.
    pub fn random_product(&mut self) -> ProductId {
        ProductId(self.rng.random_range(0..self.products))
    }

    /// Makes one request at a random live trader, fails over to another if
    /// that one dies, and records its invoke, any retries, and its completion.
    ///
    /// Fails only if no request number can be reserved (the data directory
    /// cannot be written): the client cannot go on without reusing one.
    pub async fn request(
        &mut self,
        side: Side,
        product: ProductId,
        qty: Qty,
    ) -> anyhow::Result<Request> {
        let id = RequestId {
            node: self.me,
            seq: self.seq.take()?,
        };
        let order = Order { id, product, qty };
        let body = match side {
            Side::Buy => Body::Buy(order),
            Side::Sell => Body::Sell(order),
        };
        let invoked_us = history::wall_us();
        let lamport_invoked = self.clock.tick();
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut tried = BTreeSet::new();
        let mut first = self.pick_trader(&tried);
        self.history.record(&Event::Invoke(Invoke {
            id,
            side,
            product,
            asked: qty,
            trader: first.unwrap_or_default(),
            wall_us: invoked_us,
            lamport: lamport_invoked,
        }));
        let mut trader = None;
        let mut last_error = String::from("no trader is known to be alive");
        let mut attempts = 0;
        // Whether an attempt may have been applied without our hearing so.
        let mut undecided = false;
        let (outcome, granted) = loop {
            if attempts >= MAX_ATTEMPTS {
                break (
                    Outcome::Failed(format!("gave up after {attempts} attempts: {last_error}")),
                    Qty(0),
                );
            }
            let now = Instant::now();
            if now >= deadline {
                break (
                    Outcome::Failed(format!(
                        "no answer within the deadline of {:?}: {last_error}",
                        self.timeout
                    )),
                    Qty(0),
                );
            }
            let Some(t) = first.take().or_else(|| self.pick_trader(&tried)) else {
                // Every live trader failed this request, or none is known:
                // wait for the view to change (message 8) or a pause that
                // grows while the failures go on.
                let mut rx = self.traders.subscribe();
                let pause = self.backoff.fail(&mut self.rng).min(deadline - now);
                let _ = tokio::time::timeout(pause, rx.changed()).await;
                tried.clear();
                continue;
            };
            if let Some(from) = trader {
                self.ctx.record(Happening::Retried {
                    id,
                    from,
                    reason: last_error.clone(),
                });
            }
            attempts += 1;
            trader = Some(t);
            // An earlier attempt may have been applied (or journaled by a
            // cached trader): this one is settled at the warehouse.
            let body = match (&body, undecided) {
                (Body::Buy(o) | Body::Sell(o), true) => Body::Retry { side, order: *o },
                _ => body.clone(),
            };
            match self.attempt(t, body, side, qty, deadline).await {
                // A refusal proves nothing once an earlier attempt may have
                // been applied: the request is undecided, not refused.
                Attempt::Done(Outcome::Refused(why), _) if undecided => {
                    break (
                        Outcome::Failed(format!(
                            "{why}, after an earlier attempt that may have been applied ({last_error})"
                        )),
                        Qty(0),
                    );
                }
                Attempt::Done(outcome, granted) => break (outcome, granted),
                Attempt::Retry { why, undecided: u } => {
                    tracing::info!(%id, trader = %t, "failing over: {why}");
                    undecided |= u;
                    last_error = why;
                    tried.insert(t);
                }
            }
        };
        let req = Request {
            id,
            side,
            product,
            asked: qty,
            granted,
            trader: trader.unwrap_or_default(),
            outcome,
            invoked_us,
            completed_us: history::wall_us(),
            latency_us: started.elapsed().as_micros() as u64,
            lamport_invoked,
            lamport_completed: self.clock.tick(),
        };
        self.history.record(&Event::Complete(Complete {
            id,
            side,
            product,
            asked: qty,
            granted: req.granted,
            trader: req.trader,
            outcome: req.outcome.clone(),
            wall_us: req.completed_us,
            lamport: req.lamport_completed,
            latency_us: req.latency_us,
        }));
        match &req.outcome {
            Outcome::Refused(r) | Outcome::Failed(r) => {
                tracing::warn!(%id, "{side:?} failed: {r}");
                if matches!(req.outcome, Outcome::Failed(_)) {
                    // The market is in trouble (no trader, no warehouse):
                    // wait before the next request rather than hammer it.
                    let pause = self.backoff.fail(&mut self.rng);
                    tokio::time::sleep(pause).await;
                }
            }
            Outcome::Ok => self.backoff.succeed(),
        }
        Ok(req)
    }

    /// One attempt at `trader`, until its answer, its death, or the deadline.
    async fn attempt(
        &self,
        trader: NodeId,
        body: Body,
        side: Side,
        qty: Qty,
        deadline: Instant,
    ) -> Attempt {
        let Some(link) = self.links.get(&trader) else {
            return Attempt::retry(format!("no address for {trader}"));
        };
        let mut list = self.traders.subscribe();
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::select! {
            r = link.call(body, left) => r,
            _ = dropped(&mut list, trader) => {
                return Attempt::undecided(format!("{trader} was declared dead (message 8)"));
            }
        };
        match answer {
            Ok(Body::Granted { qty: got, .. }) if side == Side::Buy && got <= qty => {
                Attempt::Done(Outcome::Ok, got)
            }
            Ok(Body::Deposited { .. }) if side == Side::Sell => Attempt::Done(Outcome::Ok, qty),
            // A deposed trader: it did nothing, and its view is newer than
            // ours. Take it, and try a trader of it.
            Ok(Body::Refused {
                reason: reason @ Refusal::StaleEpoch { .. },
                ..
            }) => {
                if let Refusal::StaleEpoch { current, .. } = &reason {
                    self.ctx.adopt(current, trader);
                }
                Attempt::retry(format!("{trader}: {reason}"))
            }
            // This trader cannot take the request now, and did nothing with
            // it (a cached trader that cannot reach the warehouse is Busy; a
            // trader whose lease the warehouse cannot confirm): another
            // trader may.
            Ok(Body::Refused {
                reason:
                    reason @ (Refusal::NotATrader { .. }
                    | Refusal::TraderUnavailable
                    | Refusal::NoLease { .. }
                    | Refusal::Busy { .. }),
                ..
            }) => Attempt::retry(format!("{trader}: {reason}")),
            // The trader lost the warehouse mid-request: undecided, so try
            // another trader with the same id (the warehouse dedupes it).
            Ok(Body::Refused { reason, .. }) if !reason.nothing_applied() => {
                Attempt::undecided(format!("{trader}: {reason}"))
            }
            Ok(Body::Refused { reason, .. }) => {
                Attempt::Done(Outcome::Refused(reason.to_string()), Qty(0))
            }
            Ok(other) => Attempt::Done(
                Outcome::Failed(format!("unexpected answer: {}", other.name())),
                Qty(0),
            ),
            Err(CallError::Timeout { .. }) => Attempt::Done(
                Outcome::Failed(format!(
                    "{trader} did not answer within the deadline of {:?}",
                    self.timeout
                )),
                Qty(0),
            ),
            // Never sent (no connection): nothing can have been applied.
            Err(e @ (CallError::Connect { .. } | CallError::Handshake { .. })) => {
                Attempt::retry(e.to_string())
            }
            // Sent, and the connection died before the answer.
            Err(e @ CallError::Lost { .. }) => Attempt::undecided(e.to_string()),
        }
    }

    /// A random live trader not yet tried for this request.
    fn pick_trader(&mut self, tried: &BTreeSet<NodeId>) -> Option<NodeId> {
        let traders: Vec<NodeId> = self
            .traders
            .traders()
            .into_iter()
            .filter(|t| !tried.contains(t) && *t != self.me)
            .collect();
        if traders.is_empty() {
            return None;
        }
        Some(traders[self.rng.random_range(0..traders.len())])
    }

    /// Writes out the history.
    pub fn finish(self) -> anyhow::Result<()> {
        self.history.flush()?;
        Ok(())
    }
}

/// Resolves once `trader` is no longer in the view (never if the view goes
/// away).
async fn dropped(list: &mut tokio::sync::watch::Receiver<View>, trader: NodeId) {
    loop {
        if !list.borrow_and_update().contains(trader) {
            return;
        }
        if list.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
