//! The document's seller: deposits `quantity` items of a random product with a
//! random trader (message 5) every `interval`, until stopped. A slow answer
//! delays the next deposit rather than piling deposits up.

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use crate::config::SellerLoad;
use crate::wire::{Qty, Side};

pub async fn run(
    client: &mut Client,
    load: &SellerLoad,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(load.interval);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Stop first: a stop and a tick due at once end the run the same way
        // every time (the simulation replays runs exactly).
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let product = client.random_product();
        client
            .request(Side::Sell, product, Qty(load.quantity))
            .await?;
    }
    Ok(())
}
