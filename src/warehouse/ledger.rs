//! The warehouse's books: stock and counters per product, and what applying a
//! buy or a sell does to them. Pure: no I/O, no time; [`super::store`] makes it
//! durable and the service in [`super`] feeds it.

use serde::{Deserialize, Serialize};

use crate::wire::{Order, Qty, Side};

/// One product's stock and everything that moved it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductBook {
    /// Stock when the market opened.
    pub initial: u64,
    /// Stock now.
    pub stock: u64,
    /// Items deposited by accepted sells.
    pub sold: u64,
    /// Items the warehouse really delivered to buyers.
    pub shipped: u64,
    /// Items asked for that the warehouse refused for want of stock (strong mode:
    /// no trader had promised them, so this is a refusal, not an oversell).
    pub refused: u64,
    /// Items a trader had promised from its cache that the warehouse could not
    /// deliver (cached mode).
    pub oversold: u64,
    /// Buys that were oversold (the document's "Oversell N times!").
    pub oversells: u64,
}

impl ProductBook {
    pub fn new(initial: u64) -> Self {
        Self {
            initial,
            stock: initial,
            ..Self::default()
        }
    }

    /// The conservation law: initial + sold − shipped = stock.
    pub fn conserved(&self) -> bool {
        (self.initial + self.sold).checked_sub(self.shipped) == Some(self.stock)
    }
}

/// What one applied request came to: for a buy the items granted, for a sell
/// the items deposited. Kept per request id so a retry gets the same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub side: Side,
    pub qty: Qty,
}

/// The books of every product, indexed by product id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub books: Vec<ProductBook>,
}

impl Ledger {
    pub fn new(initial: &[u64]) -> Self {
        Self {
            books: initial.iter().map(|&s| ProductBook::new(s)).collect(),
        }
    }

    /// Applies a validated order. A buy ships `min(asked, stock)` and never takes
    /// the stock below zero; a sell adds everything.
    pub fn apply(&mut self, side: Side, order: &Order) -> Applied {
        let book = &mut self.books[order.product.0 as usize];
        let asked = u64::from(order.qty.0);
        let qty = match side {
            Side::Buy => {
                let shipped = asked.min(book.stock);
                book.stock -= shipped;
                book.shipped += shipped;
                book.refused += asked - shipped;
                shipped
            }
            Side::Sell => {
                book.stock += asked;
                book.sold += asked;
                asked
            }
        };
        debug_assert!(book.conserved(), "conservation broken: {book:?}");
        Applied {
            side,
            qty: Qty(qty as u32),
        }
    }

    /// Stock per product, as a lookup (message 4) returns it.
    pub fn stock(&self) -> Vec<u64> {
        self.books.iter().map(|b| b.stock).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ProductId, RequestId};

    fn order(qty: u32) -> Order {
        Order {
            id: RequestId::default(),
            product: ProductId(0),
            qty: Qty(qty),
        }
    }

    #[test]
    fn a_buy_larger_than_the_stock_ships_what_there_is() {
        // The document's warehouse crashed here (a lock released twice).
        let mut l = Ledger::new(&[3]);
        assert_eq!(l.apply(Side::Buy, &order(5)).qty, Qty(3));
        assert_eq!(l.apply(Side::Buy, &order(1)).qty, Qty(0));
        let b = l.books[0];
        assert_eq!((b.stock, b.shipped, b.refused, b.oversold), (0, 3, 3, 0));
        assert!(b.conserved());
    }

    #[test]
    fn sells_add_and_conservation_holds() {
        let mut l = Ledger::new(&[10]);
        l.apply(Side::Sell, &order(5));
        l.apply(Side::Buy, &order(12));
        let b = l.books[0];
        assert_eq!((b.stock, b.sold, b.shipped), (3, 5, 12));
        assert!(b.conserved());
        assert!(!ProductBook { stock: 4, ..b }.conserved());
    }
}
