//! The document's cache-less trader ("strong" mode): a buy (message 6) becomes
//! a warehouse buy (message 2), a sell (message 5) a warehouse sell (message 3),
//! and the client is answered only with what the warehouse applied. The request
//! keeps its id on the way, so the warehouse can recognise a retry.
//! Never oversells: the warehouse grants at most what it has.

use std::time::Duration;

use crate::link::Link;
use crate::wire::{Body, Epoch, Order, Refusal, Side};

/// Settles one client request with the warehouse, as a trader of `epoch`
/// (the fencing token: the warehouse refuses it if the epoch is over), and
/// returns the client's answer.
pub async fn settle(
    warehouse: &Link,
    epoch: Epoch,
    side: Side,
    order: Order,
    timeout: Duration,
) -> Body {
    let id = order.id;
    let request = match side {
        Side::Buy => Body::WarehouseBuy { order, epoch },
        Side::Sell => Body::WarehouseSell { order, epoch },
    };
    let unavailable = |reason: String| Body::Refused {
        id,
        reason: Refusal::WarehouseUnavailable { reason },
    };
    match warehouse.call(request, timeout).await {
        Ok(reply) => match (side, &reply) {
            (Side::Buy, Body::Granted { qty, .. }) if *qty <= order.qty => reply,
            (Side::Sell, Body::Deposited { .. }) | (_, Body::Refused { .. }) => reply,
            _ => unavailable(format!(
                "answered {} with {}",
                side_name(side),
                reply.name()
            )),
        },
        Err(e) => unavailable(e.to_string()),
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "a buy",
        Side::Sell => "a sell",
    }
}
