//! The warehouse's books: stock and counters per product (and per trader, for
//! cache flushes), and what applying a buy, a sell or a flushed request does to
//! them. Pure: no I/O, no time; [`super::store`] makes it durable and the
//! service in [`super`] feeds it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{FlushEntry, NodeId, Order, ProductId, Qty, Side};

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
    /// Buy requests applied (the denominator of the oversell and undersell rates).
    pub buys: u64,
    /// Flushed buys a trader refused or cut short while the warehouse, at that
    /// point of the Lamport order, had the stock (cached mode).
    pub undersells: u64,
    /// Items those buys could have had and did not get.
    pub undersold: u64,
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

/// What one applied request came to: for a buy the items shipped, for a sell
/// the items deposited. Kept per request id so a retry gets the same answer,
/// and so the report can name every oversold and undersold buy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub side: Side,
    pub product: ProductId,
    pub qty: Qty,
    /// Items a trader granted from its cache that the warehouse could not ship.
    pub oversold: Qty,
    /// Items a trader refused from its cache that the warehouse had.
    pub undersold: Qty,
}

impl Applied {
    /// A strong-mode result: no trader's cache was involved.
    pub fn plain(side: Side, product: ProductId, qty: Qty) -> Self {
        Self {
            side,
            product,
            qty,
            oversold: Qty(0),
            undersold: Qty(0),
        }
    }

    /// What the trader told its client: shipped plus oversold.
    pub fn acknowledged(&self) -> Qty {
        Qty(self.qty.0.saturating_add(self.oversold.0))
    }
}

/// What the warehouse made of one trader's flushes (cached mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraderBook {
    /// Flushed requests applied (replays of a repeated flush not counted).
    pub flushed: u64,
    /// Flushed buys among them.
    pub buys: u64,
    pub oversells: u64,
    pub oversold: u64,
    pub undersells: u64,
    pub undersold: u64,
}

/// The books of every product, indexed by product id, and of every trader
/// that flushed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub books: Vec<ProductBook>,
    pub traders: BTreeMap<NodeId, TraderBook>,
}

impl Ledger {
    pub fn new(initial: &[u64]) -> Self {
        Self {
            books: initial.iter().map(|&s| ProductBook::new(s)).collect(),
            traders: BTreeMap::new(),
        }
    }

    /// Applies one validated request of `trader`'s flush, at its place in the
    /// Lamport order. A buy ships what the trader granted if the stock allows;
    /// what it cannot ship is an oversell. A buy granted less than it asked
    /// while the stock had more is an undersell. A sell adds everything.
    pub fn apply_flushed(&mut self, trader: NodeId, entry: &FlushEntry) -> Applied {
        let book = &mut self.books[entry.order.product.0 as usize];
        let tb = self.traders.entry(trader).or_default();
        tb.flushed += 1;
        let applied = match entry.side {
            Side::Sell => {
                let qty = u64::from(entry.order.qty.0);
                book.stock += qty;
                book.sold += qty;
                Applied::plain(Side::Sell, entry.order.product, entry.order.qty)
            }
            Side::Buy => {
                let (asked, granted) = (u64::from(entry.order.qty.0), u64::from(entry.granted.0));
                let shipped = granted.min(book.stock);
                let oversold = granted - shipped;
                let undersold = asked.min(book.stock).saturating_sub(granted);
                book.stock -= shipped;
                book.shipped += shipped;
                book.buys += 1;
                tb.buys += 1;
                if oversold > 0 {
                    book.oversells += 1;
                    book.oversold += oversold;
                    tb.oversells += 1;
                    tb.oversold += oversold;
                }
                if undersold > 0 {
                    book.undersells += 1;
                    book.undersold += undersold;
                    tb.undersells += 1;
                    tb.undersold += undersold;
                }
                Applied {
                    side: Side::Buy,
                    product: entry.order.product,
                    qty: Qty(shipped as u32),
                    oversold: Qty(oversold as u32),
                    undersold: Qty(undersold as u32),
                }
            }
        };
        debug_assert!(book.conserved(), "conservation broken: {book:?}");
        applied
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
                book.buys += 1;
                shipped
            }
            Side::Sell => {
                book.stock += asked;
                book.sold += asked;
                asked
            }
        };
        debug_assert!(book.conserved(), "conservation broken: {book:?}");
        Applied::plain(side, order.product, Qty(qty as u32))
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

    fn flushed(side: Side, qty: u32, granted: u32) -> FlushEntry {
        FlushEntry {
            order: order(qty),
            side,
            clock: crate::clock::Lamport(1),
            granted: Qty(granted),
            epoch: crate::wire::Epoch(1),
        }
    }

    #[test]
    fn a_flushed_buy_the_stock_cannot_fill_is_an_oversell() {
        let mut l = Ledger::new(&[3]);
        let t = NodeId(6);
        let a = l.apply_flushed(t, &flushed(Side::Buy, 5, 5));
        assert_eq!((a.qty, a.oversold, a.undersold), (Qty(3), Qty(2), Qty(0)));
        assert_eq!(a.acknowledged(), Qty(5));
        let b = l.books[0];
        assert_eq!((b.stock, b.shipped, b.oversells, b.oversold), (0, 3, 1, 2));
        assert!(b.conserved());
        let tb = l.traders[&t];
        assert_eq!(
            (tb.flushed, tb.buys, tb.oversells, tb.oversold),
            (1, 1, 1, 2)
        );
    }

    #[test]
    fn a_flushed_buy_cut_short_while_stock_was_there_is_an_undersell() {
        let mut l = Ledger::new(&[4]);
        let t = NodeId(5);
        // Asked 5, the trader's cache granted 1, the warehouse had 4.
        let a = l.apply_flushed(t, &flushed(Side::Buy, 5, 1));
        assert_eq!((a.qty, a.oversold, a.undersold), (Qty(1), Qty(0), Qty(3)));
        // Refused outright (granted 0) with 3 left: undersold 3.
        let a = l.apply_flushed(t, &flushed(Side::Buy, 5, 0));
        assert_eq!((a.qty, a.undersold), (Qty(0), Qty(3)));
        // Refused with nothing left: neither.
        l.apply_flushed(t, &flushed(Side::Buy, 3, 3));
        let a = l.apply_flushed(t, &flushed(Side::Buy, 2, 0));
        assert_eq!((a.qty, a.oversold, a.undersold), (Qty(0), Qty(0), Qty(0)));
        let b = l.books[0];
        assert_eq!((b.buys, b.undersells, b.undersold), (4, 2, 6));
        assert!(b.conserved());
        // A flushed sell adds everything.
        l.apply_flushed(t, &flushed(Side::Sell, 5, 5));
        assert_eq!(l.books[0].stock, 5);
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
