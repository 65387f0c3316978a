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
//! | – | [`Body::Join`] | peer → warehouse | [`Body::Joined`] |
//! | – | [`Body::Propose`] | peer → warehouse | [`Body::Committed`] |
//! | – | [`Body::Renew`] | trader → warehouse | [`Body::Leased`] |
//!
//! Any request may instead be answered with [`Body::Refused`], which says why.
//!
//! The last three are ours: the warehouse keeps the market's trader set, one
//! [`View`] per [`Epoch`] (see [`crate::warehouse::registry`]). Messages 0, 1,
//! 7 and 8 carry the sender's view or epoch; messages 2, 3, 4 and 9 carry the
//! trader's epoch as a fencing token.

use serde::{Deserialize, Serialize};

use crate::clock::Lamport;

/// The largest quantity one buy or sell may carry. A request above it is refused
/// at the edge: no workload of the document comes near it, and it keeps every
/// sum of quantities far from overflowing a `u64`.
pub const MAX_ORDER_QTY: u32 = 1_000_000;

/// A node of the market: `0` is the warehouse, peers are `1..=N` as in the document.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub u32);

/// As [`std::fmt::Display`]: `peer5`, `warehouse`, also in logs that print
/// a list of ids (`?traders`) and in test failures.
impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

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

/// The number of a trader set, like Raft's term: every change of the set
/// makes a new epoch, one higher. Epoch 0 is the market before its first
/// election (no traders).
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Epoch(pub u64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// A trader set and its epoch, as the warehouse committed it. Two views with
/// the same epoch always hold the same traders: only the warehouse makes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct View {
    pub epoch: Epoch,
    /// The traders, ascending.
    pub traders: Vec<NodeId>,
}

impl View {
    pub fn contains(&self, node: NodeId) -> bool {
        self.traders.contains(&node)
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {{", self.epoch)?;
        for (i, t) in self.traders.iter().enumerate() {
            write!(f, "{}{t}", if i == 0 { "" } else { ", " })?;
        }
        write!(f, "}}")
    }
}

/// A Lamport time made total by the node that took it: `(clock, node)`.
pub type Stamp = (Lamport, NodeId);

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
    /// The trader's epoch when it acknowledged the request: the entry's
    /// fencing token. The warehouse applies it only if the trader was in that
    /// epoch's set.
    pub epoch: Epoch,
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
    /// The sender acted on an epoch that is over, or is not in the current
    /// epoch's set (a deposed trader): nothing was done. `current` is the
    /// view it should adopt.
    #[error(
        "{theirs} is not current here, or the sender is not in it; the current view is {current}"
    )]
    StaleEpoch { theirs: Epoch, current: View },
    /// A membership change the warehouse would not commit (see `reason`).
    #[error("membership change refused: {reason}")]
    Membership { reason: String },
    /// A trader removed from the set still holds a lease for `ms`
    /// milliseconds: the warehouse commits the change only after it expires.
    #[error("{trader} holds a lease for {ms} ms more")]
    LeaseHeld { trader: NodeId, ms: u64 },
    /// The trader's lease expired and it could not confirm its epoch with
    /// the warehouse: it answers nothing until it does.
    #[error("this trader's lease has expired and the warehouse cannot confirm it: {reason}")]
    NoLease { reason: String },
    /// The market has not opened (not every peer has joined yet).
    #[error("the market is not open yet: {joined} of {peers} peers have joined")]
    NotOpen { joined: u32, peers: u32 },
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
    Election { id: RequestId, epoch: Epoch },
    /// Reply to message 0: "I am alive and higher; I take over."
    Alive { id: RequestId },
    /// Message 1: the election's result, the trader set as the warehouse
    /// committed it.
    Elected { view: View },

    /// Message 2: a trader asks the warehouse to ship items.
    WarehouseBuy { epoch: Epoch, order: Order },
    /// Message 3: a trader deposits items at the warehouse.
    WarehouseSell { epoch: Epoch, order: Order },
    /// Message 4: a trader asks for the stock of every product.
    Lookup { id: RequestId, epoch: Epoch },
    /// Message 5: a seller sells items through a trader.
    Sell(Order),
    /// Message 6: a buyer buys items through a trader.
    Buy(Order),
    /// Message 7: a trader's heartbeat to another trader, with its view.
    Heartbeat { id: RequestId, view: View },
    /// Message 8: a trader tells every peer that `dead` has died, and the
    /// view the warehouse committed without it.
    TraderDied { dead: NodeId, view: View },
    /// Message 9: a trader's cache flush (each entry carries its own epoch).
    Flush {
        id: RequestId,
        entries: Vec<FlushEntry>,
    },

    /// A peer tells the warehouse it is up, and asks for the current view.
    Join { id: RequestId },
    /// A peer asks the warehouse to commit `traders` as the view after
    /// `base` (compare-and-set: refused unless `base` is current).
    Propose {
        id: RequestId,
        base: Epoch,
        traders: Vec<NodeId>,
        /// Why, for the history ("elected", "peer6 silent for 610 ms").
        cause: String,
    },
    /// A trader asks the warehouse to confirm it is in `epoch`'s set and to
    /// extend its lease.
    Renew { id: RequestId, epoch: Epoch },

    /// Reply to messages 2 and 6: how many items the buyer gets (maybe fewer than asked).
    Granted { id: RequestId, qty: Qty },
    /// Reply to messages 3 and 5: the items were added to the stock.
    Deposited { id: RequestId },
    /// Reply to message 4: stock per product, indexed by product id.
    Stock { id: RequestId, stock: Vec<u64> },
    /// Reply to message 7.
    HeartbeatAck { id: RequestId, epoch: Epoch },
    /// Reply to message 9: the flush is applied; the stock after it, per
    /// product, so the trader can refresh its cache without a lookup.
    Flushed { id: RequestId, stock: Vec<u64> },
    /// Reply to [`Body::Join`]: the current view, the first one (whose
    /// set fixes the buyers' and sellers' roles) and whether the market is
    /// open (every peer joined).
    Joined {
        id: RequestId,
        view: View,
        first: View,
        open: bool,
    },
    /// Reply to [`Body::Propose`]: the view committed.
    Committed { id: RequestId, view: View },
    /// Reply to [`Body::Renew`]: the trader is in the current view; its
    /// lease runs `ms` milliseconds from when it sent the request.
    Leased { id: RequestId, view: View, ms: u64 },
    /// Reply to any request that was not carried out.
    Refused { id: RequestId, reason: Refusal },

    /// Messages 5 and 6 again, from a client whose earlier attempt at
    /// another trader may have been applied: every trader settles it at the
    /// warehouse before answering (in cached mode too), so the attempt a
    /// dead trader may have journaled and this one are one request, applied
    /// once, answered as applied. Last in the enum: the numbering of every
    /// other message is unchanged.
    Retry { side: Side, order: Order },
}

impl Body {
    /// The id a request expects its reply under; `None` for one-way messages and replies.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Body::Election { id, .. }
            | Body::Lookup { id, .. }
            | Body::Heartbeat { id, .. }
            | Body::Flush { id, .. }
            | Body::Join { id }
            | Body::Propose { id, .. }
            | Body::Renew { id, .. } => Some(*id),
            Body::WarehouseBuy { order: o, .. }
            | Body::WarehouseSell { order: o, .. }
            | Body::Sell(o)
            | Body::Buy(o)
            | Body::Retry { order: o, .. } => Some(o.id),
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
            | Body::HeartbeatAck { id, .. }
            | Body::Flushed { id, .. }
            | Body::Joined { id, .. }
            | Body::Committed { id, .. }
            | Body::Leased { id, .. }
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
            Body::WarehouseBuy { .. } => "warehouse buy (message 2)",
            Body::WarehouseSell { .. } => "warehouse sell (message 3)",
            Body::Lookup { .. } => "lookup (message 4)",
            Body::Sell(_) => "sell (message 5)",
            Body::Buy(_) => "buy (message 6)",
            Body::Retry {
                side: Side::Buy, ..
            } => "retried buy (message 6)",
            Body::Retry {
                side: Side::Sell, ..
            } => "retried sell (message 5)",
            Body::Heartbeat { .. } => "heartbeat (message 7)",
            Body::TraderDied { .. } => "trader died (message 8)",
            Body::Flush { .. } => "cache flush (message 9)",
            Body::Granted { .. } => "granted",
            Body::Deposited { .. } => "deposited",
            Body::Stock { .. } => "stock",
            Body::HeartbeatAck { .. } => "heartbeat reply",
            Body::Flushed { .. } => "flushed",
            Body::Join { .. } => "join",
            Body::Propose { .. } => "proposal",
            Body::Renew { .. } => "lease renewal",
            Body::Joined { .. } => "joined",
            Body::Committed { .. } => "committed",
            Body::Leased { .. } => "leased",
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
        assert_eq!(
            Body::Lookup {
                id,
                epoch: Epoch(1)
            }
            .request_id(),
            Some(id)
        );
        assert_eq!(
            Body::Buy(Order { id, ..order(0, 1) }).request_id(),
            Some(id)
        );
        assert_eq!(Body::Granted { id, qty: Qty(1) }.reply_id(), Some(id));
        assert_eq!(Body::Granted { id, qty: Qty(1) }.request_id(), None);
        assert_eq!(
            Body::TraderDied {
                dead: NodeId(1),
                view: View::default()
            }
            .request_id(),
            None
        );
    }
}
