//! The document's buyer: asks a random trader for 1..=`max_quantity` items
//! of a product (message 6), waits for the answer, pauses, and again, until
//! stopped. What it asks for next is `[workload.buyer] goal`: a fresh draw
//! every time (`fresh`), or, like the document's buyer, what is still missing
//! of its goal until the goal is met (`until_met`).

use tokio_util::sync::CancellationToken;

use rand::RngExt;

use super::client::Client;
use crate::config::{BuyerGoal, BuyerLoad};
use crate::wire::{ProductId, Qty, Side};

/// One buy to make: a product and how many items of it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Want {
    product: ProductId,
    qty: Qty,
}

impl Want {
    /// What to ask for after an answer that granted `granted` of `self`
    /// (0 for a refused or failed buy), or `None` to draw a new goal.
    fn rest(self, goal: BuyerGoal, granted: Qty) -> Option<Want> {
        match goal {
            BuyerGoal::Fresh => None,
            BuyerGoal::UntilMet => (granted < self.qty).then(|| Want {
                qty: Qty(self.qty.0 - granted.0),
                ..self
            }),
        }
    }
}

pub async fn run(
    client: &mut Client,
    load: &BuyerLoad,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut next: Option<Want> = None;
    while !stop.is_cancelled() {
        // A new goal draws the product first, then the quantity: the same
        // order of draws as ever, so a seed replays the same buys.
        let want = match next.take() {
            Some(w) => w,
            None => {
                let product = client.random_product();
                let qty = Qty(client.rng().random_range(1..=load.max_quantity));
                Want { product, qty }
            }
        };
        let done = client.request(Side::Buy, want.product, want.qty).await?;
        next = want.rest(load.goal, done.granted);
        // No pause, no timer: a zero sleep still waits for the timer's next
        // millisecond tick, which capped a closed-loop buyer (the bench's) at
        // about one request a millisecond whatever the market's speed.
        if load.pause.is_zero() {
            continue;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(load.pause) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Want = Want {
        product: ProductId(0),
        qty: Qty(5),
    };

    #[test]
    fn the_documents_buyer_asks_for_what_is_missing_until_it_has_its_goal() {
        let g = BuyerGoal::UntilMet;
        let rest = FIVE.rest(g, Qty(2)).unwrap();
        assert_eq!(
            rest,
            Want {
                qty: Qty(3),
                ..FIVE
            }
        );
        // Answered with nothing (or refused, or failed): the same again.
        assert_eq!(rest.rest(g, Qty(0)), Some(rest));
        // The rest granted: a new goal.
        assert_eq!(rest.rest(g, Qty(3)), None);
    }

    #[test]
    fn a_fresh_buyer_draws_again_whatever_it_got() {
        assert_eq!(FIVE.rest(BuyerGoal::Fresh, Qty(0)), None);
        assert_eq!(FIVE.rest(BuyerGoal::Fresh, Qty(5)), None);
    }
}
