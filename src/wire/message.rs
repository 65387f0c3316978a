//! The envelope and the one message enum: the document's messages 0–9, their
//! replies, and the connection's hello.
//!
//! | doc | variant | from → to | reply |
//! |---|---|---|---|
//! | 0 | [`Body::Election`] | peer → higher peers | [`Body::Alive`] |
//! | 1 | [`Body::Elected`] | winner → every peer | none |
//! | 2 | [`Body::WarehouseBuy`] | trader → warehouse | [`Body::Granted`] |
//! | 3 | [`Body::WarehouseSell`] | trader → warehouse | [`Body::Deposited`] |
//! | 4 | [`Body::Lookup`] | trader → warehouse | [`Body::Stock`] |
//! | 5 | [`Body::Sell`] | seller → trader | [`Body::Deposited`] |
//! | 6 | [`Body::Buy`] | buyer → trader | [`Body::Granted`] |
//! | 7 | [`Body::Heartbeat`] | trader → trader | [`Body::HeartbeatAck`] |
//! | 8 | [`Body::TraderDied`] | trader → every peer | none |
//! | 9 | [`Body::Flush`] | trader → warehouse | [`Body::Flushed`] |
//!
//! Any request may instead be answered with [`Body::Refused`], which says why.

use serde::{Deserialize, Serialize};

use crate::clock::Lamport;

/// The largest quantity one buy or sell may carry. A request above it is refused
/// at the edge: no workload of the document comes near it, and it keeps every
/// sum of quantities far from overflowing a `u64`.
pub const MAX_ORDER_QTY: u32 = 1_000_000;

/// A node of the market: `0` is the warehouse, peers are `1..=N` as in the document.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u32);

impl NodeId {
    pub const WAREHOUSE: NodeId = NodeId(0);

    pub fn is_warehouse(self) -> bool {
        self == Self::WAREHOUSE
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_warehouse() {
            write!(f, "warehouse")
        } else {
            write!(f, "peer{}", self.0)
        }
    }
}

/// A product, by its index in the config's product list (the document's `productID`).
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ProductId(pub u32);

impl std::fmt::Display for ProductId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "product {}", self.0)
    }
}

/// A quantity of items in one request. Never negative; checked against
/// [`MAX_ORDER_QTY`] wherever it enters from outside.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Qty(pub u32);

impl std::fmt::Display for Qty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A request's identity across the whole run: the node that made it and its
/// sequence number there. A retry keeps the id, so the warehouse can tell it
/// from a new request.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct RequestId {
    pub node: NodeId,
    pub seq: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.node.0, self.seq)
    }
}

/// A buy or a sell of `qty` items of one product.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: RequestId,
    pub product: ProductId,
    pub qty: Qty,
}

impl Order {
    /// Checks the order against a catalogue of `products` products.
    pub fn validate(&self, products: usize) -> Result<(), Refusal> {
        if self.product.0 as usize >= products {
            return Err(Refusal::UnknownProduct {
                product: self.product,
                known: products as u32,
            });
        }
        match self.qty.0 {
            0 => Err(Refusal::ZeroQuantity),
            q if q > MAX_ORDER_QTY => Err(Refusal::QuantityTooLarge {
                asked: q,
                max: MAX_ORDER_QTY,
            }),
            _ => Ok(()),
        }
    }
}

/// Whether a request buys or sells.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// One request in a cache flush (message 9): what the trader did, and when.
///
/// Every buy the trader answered is sent, also those it refused or cut short
/// (`granted < qty`), so that the warehouse can judge each one in Lamport
/// order: an oversell if it cannot ship `granted`, an undersell if it could
/// have shipped more than `granted`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushEntry {
    pub order: Order,
    pub side: Side,
    /// The trader's Lamport time when it accepted the request.
    pub clock: Lamport,
    /// What the trader granted from its cache (buys; equal to `qty` for sells).
    pub granted: Qty,
}

impl FlushEntry {
    /// Checks the entry as the warehouse receives it: a valid order, and a buy
    /// granted no more than it asked.
    pub fn validate(&self, products: usize) -> Result<(), Refusal> {
        self.order.validate(products)?;
        if self.granted > self.order.qty {
            return Err(Refusal::BadFlush {
                reason: format!(
                    "{} was granted {} but asked for {}",
                    self.order.id, self.granted, self.order.qty
                ),
            });
        }
        Ok(())
    }
}

/// Why a request was not carried out. Sent back instead of the normal reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("unknown {product} (the market has {known} products)")]
    UnknownProduct { product: ProductId, known: u32 },
    #[error("quantity must be at least 1")]
    ZeroQuantity,
    #[error("quantity {asked} is over the limit of {max} per request")]
    QuantityTooLarge { asked: u32, max: u32 },
    #[error("a {role} does not handle {message}")]
    NotForRole { role: String, message: String },
    #[error("protocol version {theirs} is not spoken here (this node speaks {ours})")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("the warehouse did not answer: {reason}")]
    WarehouseUnavailable { reason: String },
    #[error("the warehouse could not store the change: {reason}")]
    StorageFailed { reason: String },
    /// A buy or sell sent to a peer that is not a trader (any more): nothing
    /// was done, so the client retries it at a live trader.
    #[error("this peer is not a trader (the traders are {traders:?})")]
    NotATrader { traders: Vec<NodeId> },
    /// A request older than the last one the warehouse applied for its client:
    /// its client has moved on (it had its answer or gave up), so it is a late
    /// duplicate and is not applied.
    #[error("request {id} is older than {last}, the last applied for its client; not applied")]
    Stale { id: RequestId, last: RequestId },
    /// The trader's worker is not serving (the node is shutting down).
    #[error("the trader is not serving")]
    TraderUnavailable,
    #[error("bad cache flush: {reason}")]
    BadFlush { reason: String },
    #[error("the trader is busy: {reason}")]
    Busy { reason: String },
}

impl Refusal {
    /// Whether the refusal proves that nothing was applied. A trader that lost
    /// the warehouse mid-request cannot know whether the warehouse applied it,
    /// and a failed commit may have been the retry of a request an earlier
    /// commit applied: their clients must treat such a request as undecided,
    /// not as refused.
    pub fn nothing_applied(&self) -> bool {
        !matches!(
            self,
            Refusal::WarehouseUnavailable { .. } | Refusal::StorageFailed { .. }
        )
    }
}

/// A message's content. See the module docs for the table of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// First frame on every connection, from the side that connected.
    Hello { version: u16 },
    /// The listener's answer to a hello it accepts.
    Welcome { version: u16 },

    /// Message 0: "I am holding an election; is anyone higher alive?"
    Election { id: RequestId },
    /// Reply to message 0: "I am alive and higher; I take over."
    Alive { id: RequestId },
    /// Message 1: the election's result, the trader list.
    Elected { traders: Vec<NodeId> },

    /// Message 2: a trader asks the warehouse to ship items.
    WarehouseBuy(Order),
    /// Message 3: a trader deposits items at the warehouse.
    WarehouseSell(Order),
    /// Message 4: a trader asks for the stock of every product.
    Lookup { id: RequestId },
    /// Message 5: a seller sells items through a trader.
    Sell(Order),
    /// Message 6: a buyer buys items through a trader.
    Buy(Order),
    /// Message 7: a trader's heartbeat to another trader.
    Heartbeat { id: RequestId },
    /// Message 8: a trader tells every peer that `dead` has died.
    TraderDied { dead: NodeId, traders: Vec<NodeId> },
    /// Message 9: a trader's cache flush.
    Flush {
        id: RequestId,
        entries: Vec<FlushEntry>,
    },

    /// Reply to messages 2 and 6: how many items the buyer gets (maybe fewer than asked).
    Granted { id: RequestId, qty: Qty },
    /// Reply to messages 3 and 5: the items were added to the stock.
    Deposited { id: RequestId },
    /// Reply to message 4: stock per product, indexed by product id.
    Stock { id: RequestId, stock: Vec<u64> },
    /// Reply to message 7.
    HeartbeatAck { id: RequestId },
    /// Reply to message 9: the flush is applied; the stock after it, per
    /// product, so the trader can refresh its cache without a lookup.
    Flushed { id: RequestId, stock: Vec<u64> },
    /// Reply to any request that was not carried out.
    Refused { id: RequestId, reason: Refusal },
}

impl Body {
    /// The id a request expects its reply under; `None` for one-way messages and replies.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Body::Election { id }
            | Body::Lookup { id }
            | Body::Heartbeat { id }
            | Body::Flush { id, .. } => Some(*id),
            Body::WarehouseBuy(o) | Body::WarehouseSell(o) | Body::Sell(o) | Body::Buy(o) => {
                Some(o.id)
            }
            _ => None,
        }
    }

    /// The id of the request this body answers; `None` if it is not a reply.
    pub fn reply_id(&self) -> Option<RequestId> {
        match self {
            Body::Alive { id }
            | Body::Granted { id, .. }
            | Body::Deposited { id }
            | Body::Stock { id, .. }
            | Body::HeartbeatAck { id }
            | Body::Flushed { id, .. }
            | Body::Refused { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The document's short name for the message, for logs and refusals.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Hello { .. } => "hello",
            Body::Welcome { .. } => "welcome",
            Body::Election { .. } => "election (message 0)",
            Body::Alive { .. } => "election reply",
            Body::Elected { .. } => "election result (message 1)",
            Body::WarehouseBuy(_) => "warehouse buy (message 2)",
            Body::WarehouseSell(_) => "warehouse sell (message 3)",
            Body::Lookup { .. } => "lookup (message 4)",
            Body::Sell(_) => "sell (message 5)",
            Body::Buy(_) => "buy (message 6)",
            Body::Heartbeat { .. } => "heartbeat (message 7)",
            Body::TraderDied { .. } => "trader died (message 8)",
            Body::Flush { .. } => "cache flush (message 9)",
            Body::Granted { .. } => "granted",
            Body::Deposited { .. } => "deposited",
            Body::Stock { .. } => "stock",
            Body::HeartbeatAck { .. } => "heartbeat reply",
            Body::Flushed { .. } => "flushed",
            Body::Refused { .. } => "refused",
        }
    }
}

/// What travels in every frame: who sent it, at what Lamport time, and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub clock: Lamport,
    pub body: Body,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(product: u32, qty: u32) -> Order {
        Order {
            id: RequestId::default(),
            product: ProductId(product),
            qty: Qty(qty),
        }
    }

    #[test]
    fn orders_are_checked_at_the_edge() {
        assert_eq!(order(0, 5).validate(1), Ok(()));
        assert!(matches!(
            order(1, 5).validate(1),
            Err(Refusal::UnknownProduct { .. })
        ));
        assert_eq!(order(0, 0).validate(1), Err(Refusal::ZeroQuantity));
        assert!(matches!(
            order(0, u32::MAX).validate(1),
            Err(Refusal::QuantityTooLarge { .. })
        ));
        assert_eq!(order(0, MAX_ORDER_QTY).validate(1), Ok(()));
    }

    #[test]
    fn every_request_and_reply_names_its_id() {
        let id = RequestId {
            node: NodeId(3),
            seq: 7,
        };
        assert_eq!(Body::Lookup { id }.request_id(), Some(id));
        assert_eq!(
            Body::Buy(Order { id, ..order(0, 1) }).request_id(),
            Some(id)
        );
        assert_eq!(Body::Granted { id, qty: Qty(1) }.reply_id(), Some(id));
        assert_eq!(Body::Granted { id, qty: Qty(1) }.request_id(), None);
        assert_eq!(
            Body::TraderDied {
                dead: NodeId(1),
                traders: vec![]
            }
            .request_id(),
            None
        );
    }
}
