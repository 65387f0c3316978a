//! Buyers and sellers: the peers that trade through the traders.
//!
//! [`client`] makes one request at a time at a random live trader and records
//! it; [`buyer`] and [`seller`] are the document's two workloads. Every peer
//! also listens, for the trader list (messages 1 and 8).

pub mod buyer;
pub mod client;
pub mod seller;

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::net::BoxFuture;
use crate::node::{Handler, NodeContext, not_for_role};
use crate::wire::{Body, NodeId};

/// Who the traders are, as this node last heard.
pub type Traders = Arc<RwLock<Vec<NodeId>>>;

/// The trader list a node starts with: the config's initial traders.
pub fn initial_traders(cfg: &crate::config::Config) -> Traders {
    Arc::new(RwLock::new(cfg.initial_traders()))
}

/// A buyer's, seller's or idle peer's message handler.
pub struct PeerHandler {
    role: Role,
    traders: Traders,
}

impl PeerHandler {
    pub fn new(ctx: &NodeContext) -> Self {
        Self {
            role: ctx.role,
            traders: ctx.traders.clone(),
        }
    }
}

impl Handler for PeerHandler {
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            match body {
                Body::Elected { traders } | Body::TraderDied { traders, .. } => {
                    tracing::info!(%from, ?traders, "trader list updated");
                    *self.traders.write().expect("trader list") = traders;
                    None
                }
                other => not_for_role(self.role, from, &other),
            }
        })
    }
}

/// Runs this peer's workload until `stop`, then writes out its history.
pub async fn trade(ctx: &NodeContext, stop: CancellationToken) -> anyhow::Result<()> {
    let mut client = client::Client::new(ctx)?;
    match ctx.role {
        Role::Buyer => buyer::run(&mut client, &ctx.config.workload.buyer, stop).await,
        Role::Seller => seller::run(&mut client, &ctx.config.workload.seller, stop).await,
        _ => {}
    }
    client.finish()
}
