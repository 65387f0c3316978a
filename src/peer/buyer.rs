//! The document's buyer: asks a random trader for 1..=`max_quantity` items
//! of a product (message 6), waits for the answer, pauses, and again, until
//! stopped. What it asks for next is `[workload.buyer] goal`: a fresh draw
//! every time (`fresh`), or, like the document's buyer, what is still missing
//! of its goal until the goal is met (`until_met`).

use std::time::Duration;

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
        if !pause(load.pause, &stop).await {
            break;
        }
    }
    Ok(())
}

/// Waits out the pause between two buys; false if stopped meanwhile.
///
/// No pause, no timer: a zero sleep still waits for the timer's next
/// millisecond tick, which held a closed-loop buyer (the bench's) to about
/// one request a millisecond whatever the market's speed.
async fn pause(pause: Duration, stop: &CancellationToken) -> bool {
    if pause.is_zero() {
        return !stop.is_cancelled();
    }
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
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

    /// Polls `f` once: its output if it is ready without waiting.
    fn ready_at_once<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn no_pause_does_not_wait_for_the_timer() {
        let stop = CancellationToken::new();
        assert_eq!(ready_at_once(pause(Duration::ZERO, &stop)), Some(true));
        // What it replaces: the timer's zero sleep waits for the timer.
        assert!(ready_at_once(tokio::time::sleep(Duration::ZERO)).is_none());
        stop.cancel();
        assert_eq!(ready_at_once(pause(Duration::ZERO, &stop)), Some(false));
        assert_eq!(
            ready_at_once(pause(Duration::from_secs(9), &stop)),
            Some(false)
        );
    }

    #[test]
    fn a_fresh_buyer_draws_again_whatever_it_got() {
        assert_eq!(FIVE.rest(BuyerGoal::Fresh, Qty(0)), None);
        assert_eq!(FIVE.rest(BuyerGoal::Fresh, Qty(5)), None);
    }
}
