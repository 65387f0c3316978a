//! The wire: what nodes say to each other and how it is framed.
//!
//! [`message`] holds the envelope `{ from, clock, body }` and the one message
//! enum; [`frame`] turns envelopes into length-prefixed frames and back, with
//! the size limit enforced before allocation. A connection opens with
//! [`Body::Hello`] carrying [`PROTOCOL_VERSION`]; a listener that speaks another
//! version answers [`Refusal::VersionMismatch`] and closes.

pub mod frame;
pub mod message;

pub use frame::{FrameError, MAX_FRAME};
pub use message::{
    Body, Envelope, Epoch, FlushEntry, MAX_ORDER_QTY, NodeId, Order, ProductId, Qty, Refusal,
    RequestId, Side, Stamp, View,
};

/// The version of this protocol. Bumped on any change to [`Body`] or the framing.
pub const PROTOCOL_VERSION: u16 = 5;
