//! A trader: takes buys (message 6) and sells (message 5) from any peer and
//! settles them with the warehouse in the market's consistency mode.
//! Every request reaches it through the [`desk`], whose worker also answers
//! heartbeats (message 7).
//!
//! - [`strong`]: every request is applied at the warehouse, then answered.
//! - [`cached`]: answered from the trader's copy of the stock, queued, and
//!   flushed in batches; [`journal`] keeps the queue durable and [`driver`]
//!   runs it.

pub mod cached;
pub mod desk;
pub mod driver;
pub mod journal;
pub mod strong;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::clock::Clock;
use crate::config::Mode;
use crate::link::Link;
use crate::net::BoxFuture;
use crate::node::{Handler, NodeContext, not_for_role};
use crate::wire::{Body, NodeId, Order, Side};

/// How this trader settles requests.
enum Admission {
    Strong,
    Cached(driver::CachedTrader),
}

/// A trader's message handler.
pub struct Trader {
    warehouse: Arc<Link>,
    /// This node's view: its epoch is the fencing token of every request
    /// the trader sends the warehouse.
    membership: Arc<crate::membership::Membership>,
    products: usize,
    clock: Arc<Clock>,
    /// How long the trader waits for the warehouse: a little less than a
    /// client waits for the trader, so the client hears why rather than a timeout.
    warehouse_timeout: Duration,
    admission: Admission,
}

impl Trader {
    /// Starts a trader in the config's mode (a cached trader opens its journal
    /// under the node's data directory).
    pub fn start(ctx: &NodeContext) -> anyhow::Result<Self> {
        let addr = ctx
            .book
            .get(NodeId::WAREHOUSE)
            .context("a trader needs the warehouse's address")?;
        let warehouse = Arc::new(
            Link::new(
                ctx.me,
                NodeId::WAREHOUSE,
                addr,
                ctx.transport.clone(),
                ctx.clock.clone(),
            )
            .traced(ctx.trace()),
        );
        let warehouse_timeout = ctx.config.market.request_timeout.mul_f64(0.8);
        let admission = match ctx.config.market.mode {
            Mode::Cached => Admission::Cached(driver::CachedTrader::start(
                ctx,
                warehouse.clone(),
                warehouse_timeout,
            )?),
            Mode::Strong | Mode::Escrow => Admission::Strong,
        };
        Ok(Self {
            warehouse,
            membership: ctx.traders.clone(),
            products: ctx.config.products.len(),
            clock: ctx.clock.clone(),
            warehouse_timeout,
            admission,
        })
    }

    /// Stops the trader's background work: a cached trader flushes its queue.
    pub async fn stop(&self) {
        if let Admission::Cached(c) = &self.admission {
            c.stop().await;
        }
    }

    /// A strong-mode trader whose warehouse is nowhere (for tests of the
    /// machinery around it).
    #[cfg(test)]
    pub fn unconnected(products: usize) -> Self {
        let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let clock = Arc::new(Clock::new());
        Self {
            warehouse: Arc::new(Link::new(
                NodeId(1),
                NodeId::WAREHOUSE,
                nowhere,
                crate::net::Tcp::shared(),
                clock.clone(),
            )),
            membership: Arc::new(crate::membership::Membership::new(NodeId(1))),
            products,
            clock,
            warehouse_timeout: Duration::from_millis(100),
            admission: Admission::Strong,
        }
    }

    /// A retried request: settled at the warehouse whatever the mode (see
    /// [`Body::Retry`]).
    async fn settle(&self, side: Side, order: Order) -> Body {
        if let Err(reason) = order.validate(self.products) {
            return Body::Refused {
                id: order.id,
                reason,
            };
        }
        let epoch = self.membership.epoch();
        strong::settle(&self.warehouse, epoch, side, order, self.warehouse_timeout).await
    }

    async fn trade(&self, side: Side, order: Order) -> Body {
        if let Err(reason) = order.validate(self.products) {
            return Body::Refused {
                id: order.id,
                reason,
            };
        }
        match &self.admission {
            Admission::Strong => {
                let epoch = self.membership.epoch();
                strong::settle(&self.warehouse, epoch, side, order, self.warehouse_timeout).await
            }
            Admission::Cached(c) => c.trade(side, order, self.clock.tick()).await,
        }
    }
}

impl Handler for Trader {
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            match body {
                Body::Buy(order) => Some(self.trade(Side::Buy, order).await),
                Body::Sell(order) => Some(self.trade(Side::Sell, order).await),
                Body::Retry { side, order } => Some(self.settle(side, order).await),
                other => not_for_role("trader", from, &other),
            }
        })
    }
}
