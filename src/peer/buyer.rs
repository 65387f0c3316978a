//! The document's buyer: asks a random trader for a random 1..=`max_quantity`
//! items (message 6), waits for the answer, pauses, and again, until stopped.

use tokio_util::sync::CancellationToken;

use rand::RngExt;

use super::client::Client;
use crate::config::BuyerLoad;
use crate::wire::{Qty, Side};

pub async fn run(
    client: &mut Client,
    load: &BuyerLoad,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while !stop.is_cancelled() {
        let product = client.random_product();
        let qty = Qty(client.rng().random_range(1..=load.max_quantity));
        client.request(Side::Buy, product, qty).await?;
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(load.pause) => {}
        }
    }
    Ok(())
}
