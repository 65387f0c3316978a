//! Peers: the nodes `1..=N` that elect the traders and then trade.
//!
//! [`service`] is a peer's runtime: its message handler (election, trader
//! list, and, while it is a trader, the trader's desk), the election and
//! heartbeat drivers, and the role switch. [`client`] makes one request at a
//! time at a random live trader, failing over to another on a trader's death,
//! and records it; [`buyer`] and [`seller`] are the document's two workloads.

pub mod buyer;
pub mod client;
pub mod seller;
pub mod sequence;
pub mod service;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::membership::Membership;
use crate::node::NodeContext;

/// Who the traders are, as this node last heard.
pub type Traders = Arc<Membership>;

/// Runs this peer's workload (`role`) until `stop`, then writes out its history.
pub async fn trade(ctx: &NodeContext, role: Role, stop: CancellationToken) -> anyhow::Result<()> {
    let mut client = client::Client::new(ctx)?;
    let traded = match role {
        Role::Buyer => buyer::run(&mut client, &ctx.config.workload.buyer, stop).await,
        Role::Seller => seller::run(&mut client, &ctx.config.workload.seller, stop).await,
        _ => Ok(()),
    };
    // The history is written out even if the workload stopped on an error.
    client.finish()?;
    traded
}
