//! The client side of a buyer or seller: picks a random trader from the current
//! trader list for each request, gives each request a unique id, waits for the
//! answer within the request timeout, and records the request in the history.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Traders;
use crate::clock::Clock;
use crate::history::{self, Complete, Event, Invoke, Outcome, Request};
use crate::link::Link;
use crate::node::NodeContext;
use crate::wire::{Body, NodeId, Order, ProductId, Qty, RequestId, Side};
use std::sync::Arc;

pub struct Client {
    me: NodeId,
    clock: Arc<Clock>,
    links: BTreeMap<NodeId, Link>,
    traders: Traders,
    rng: StdRng,
    next_seq: u64,
    timeout: Duration,
    products: u32,
    history: Arc<history::Writer>,
}

/// The seed of one node's random choices: the market's seed, spread per node.
pub fn node_seed(seed: u64, node: NodeId) -> u64 {
    seed ^ u64::from(node.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Client {
    pub fn new(ctx: &NodeContext) -> anyhow::Result<Self> {
        let links = ctx
            .book
            .nodes
            .iter()
            .filter(|(n, _)| !n.is_warehouse() && **n != ctx.me)
            .map(|(&n, &addr)| {
                let link = Link::new(ctx.me, n, addr, ctx.transport.clone(), ctx.clock.clone());
                (n, link)
            })
            .collect();
        Ok(Self {
            me: ctx.me,
            clock: ctx.clock.clone(),
            links,
            traders: ctx.traders.clone(),
            rng: StdRng::seed_from_u64(node_seed(ctx.config.market.seed, ctx.me)),
            next_seq: 1,
            timeout: ctx.config.market.request_timeout,
            products: ctx.config.products.len() as u32,
            history: ctx.history.clone(),
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

    /// Makes one request at a random trader, waits for it, records its invoke
    /// and its completion.
    pub async fn request(&mut self, side: Side, product: ProductId, qty: Qty) -> Request {
        let id = RequestId {
            node: self.me,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let order = Order { id, product, qty };
        let trader = self.pick_trader();
        let invoked_us = history::wall_us();
        let lamport_invoked = self.clock.tick();
        let started = tokio::time::Instant::now();
        self.history.record(&Event::Invoke(Invoke {
            id,
            side,
            product,
            asked: qty,
            trader: trader.unwrap_or_default(),
            wall_us: invoked_us,
            lamport: lamport_invoked,
        }));
        let (outcome, granted) = match trader.and_then(|t| self.links.get(&t)) {
            None => (
                Outcome::Failed("no trader is known to be alive".into()),
                Qty(0),
            ),
            Some(link) => {
                let body = match side {
                    Side::Buy => Body::Buy(order),
                    Side::Sell => Body::Sell(order),
                };
                match link.call(body, self.timeout).await {
                    Ok(Body::Granted { qty: got, .. }) if side == Side::Buy && got <= qty => {
                        (Outcome::Ok, got)
                    }
                    Ok(Body::Deposited { .. }) if side == Side::Sell => (Outcome::Ok, qty),
                    Ok(Body::Refused { reason, .. }) => {
                        (Outcome::Refused(reason.to_string()), Qty(0))
                    }
                    Ok(other) => (
                        Outcome::Failed(format!("unexpected answer: {}", other.name())),
                        Qty(0),
                    ),
                    Err(e) => (Outcome::Failed(e.to_string()), Qty(0)),
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
        if let Outcome::Refused(r) | Outcome::Failed(r) = &req.outcome {
            tracing::warn!(%id, "{side:?} failed: {r}");
        }
        req
    }

    fn pick_trader(&mut self) -> Option<NodeId> {
        let traders = self.traders.read().expect("trader list").clone();
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
