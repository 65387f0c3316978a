//! A trader: takes buys (message 6) and sells (message 5) from any peer and
//! settles them with the warehouse in the market's consistency mode
//! ([`strong`] today), and answers heartbeats (message 7).

pub mod cached;
pub mod strong;

use std::time::Duration;

use crate::link::Link;
use crate::net::BoxFuture;
use crate::node::{Handler, NodeContext, not_for_role};
use crate::wire::{Body, NodeId, Order, Side};

/// A trader's message handler.
pub struct Trader {
    warehouse: Link,
    products: usize,
    /// How long the trader waits for the warehouse: a little less than a
    /// client waits for the trader, so the client hears why rather than a timeout.
    warehouse_timeout: Duration,
}

impl Trader {
    pub fn new(ctx: &NodeContext) -> Self {
        let addr = ctx
            .book
            .get(NodeId::WAREHOUSE)
            .expect("every address book has the warehouse");
        Self {
            warehouse: Link::new(
                ctx.me,
                NodeId::WAREHOUSE,
                addr,
                ctx.transport.clone(),
                ctx.clock.clone(),
            ),
            products: ctx.config.products.len(),
            warehouse_timeout: ctx.config.market.request_timeout.mul_f64(0.8),
        }
    }

    async fn trade(&self, side: Side, order: Order) -> Body {
        if let Err(reason) = order.validate(self.products) {
            return Body::Refused {
                id: order.id,
                reason,
            };
        }
        strong::settle(&self.warehouse, side, order, self.warehouse_timeout).await
    }
}

impl Handler for Trader {
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            match body {
                Body::Buy(order) => Some(self.trade(Side::Buy, order).await),
                Body::Sell(order) => Some(self.trade(Side::Sell, order).await),
                Body::Heartbeat { id } => Some(Body::HeartbeatAck { id }),
                other => not_for_role("trader", from, &other),
            }
        })
    }
}
