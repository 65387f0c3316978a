//! The warehouse's side of a cache flush (message 9): checking a flush at the
//! door and putting flushed requests in Lamport order.
//!
//! The document sorts "the received request list by logic clock". We sort by
//! `(Lamport clock, trader id)`, a total order ([`crate::wire::Stamp`]), and
//! not only within one flush: the ledger thread takes every flush that arrived
//! together (group commit) and merges them, so two traders' interleaved requests
//! are applied in the order their clocks say. Flushes that reach the warehouse
//! in different batches are applied in the order they arrived, as the
//! document's warehouse does (it sorts each flush alone); the report's
//! undersells are judged in that applied order. Requests of one trader with
//! equal stamps keep the order the trader queued them in (the sort is stable).
//!
//! Dedupe is per request, not per flush: every flushed request carries its
//! client's request id, which the applied-ids table already remembers. A flush
//! retried after a lost reply, a journal re-flushed by a restarted trader in
//! batches cut differently, and a request retried through another trader are
//! all caught the same way; a per-flush id would catch only the first.

use crate::config::MAX_FLUSH;
use crate::wire::{FlushEntry, NodeId, Refusal};

/// Checks a flush as it arrives: its size and every entry. A bad flush is
/// refused whole (nothing of it is applied) and the refusal says which entry.
pub fn validate(entries: &[FlushEntry], products: usize) -> Result<(), Refusal> {
    if entries.len() > MAX_FLUSH {
        return Err(Refusal::BadFlush {
            reason: format!(
                "{} requests in one flush (at most {MAX_FLUSH})",
                entries.len()
            ),
        });
    }
    for (i, e) in entries.iter().enumerate() {
        e.validate(products).map_err(|r| Refusal::BadFlush {
            reason: format!("request {i} ({}): {r}", e.order.id),
        })?;
    }
    Ok(())
}

/// Merges flushes (each with the trader that sent it) into the order the
/// warehouse applies them: by `(clock, trader)`, stable within a trader.
pub fn lamport_order(flushes: Vec<(NodeId, Vec<FlushEntry>)>) -> Vec<(NodeId, FlushEntry)> {
    let mut all: Vec<(NodeId, FlushEntry)> = flushes
        .into_iter()
        .flat_map(|(trader, entries)| entries.into_iter().map(move |e| (trader, e)))
        .collect();
    all.sort_by_key(|(trader, e)| (e.clock, *trader));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::wire::{Order, ProductId, Qty, RequestId, Side};

    fn entry(client: u32, seq: u64, clock: u64) -> FlushEntry {
        FlushEntry {
            order: Order {
                id: RequestId {
                    node: NodeId(client),
                    seq,
                },
                product: ProductId(0),
                qty: Qty(1),
            },
            side: Side::Buy,
            clock: Lamport(clock),
            granted: Qty(1),
            epoch: crate::wire::Epoch(1),
        }
    }

    fn order_of(flushes: Vec<(NodeId, Vec<FlushEntry>)>) -> Vec<(u32, u64)> {
        lamport_order(flushes)
            .into_iter()
            .map(|(t, e)| (t.0, e.clock.0))
            .collect()
    }

    #[test]
    fn two_traders_interleaved_clocks_apply_in_lamport_order_ties_by_node_id() {
        // Trader 6 queued at clocks 3, 7, 10; trader 5 at 2, 7, 9, 12. Each
        // flush is in its own queue order; together they interleave, and the
        // tie at 7 goes to the lower node id.
        let t6 = (
            NodeId(6),
            vec![entry(1, 1, 3), entry(2, 1, 7), entry(1, 2, 10)],
        );
        let t5 = (
            NodeId(5),
            vec![
                entry(3, 1, 2),
                entry(2, 2, 7),
                entry(3, 2, 9),
                entry(4, 1, 12),
            ],
        );
        let expect = vec![(5, 2), (6, 3), (5, 7), (6, 7), (5, 9), (6, 10), (5, 12)];
        assert_eq!(order_of(vec![t6.clone(), t5.clone()]), expect);
        // The order does not depend on which flush arrived first.
        assert_eq!(order_of(vec![t5, t6]), expect);
    }

    #[test]
    fn clocks_sort_as_numbers_and_equal_stamps_of_one_trader_keep_queue_order() {
        let flush = vec![entry(1, 1, 10), entry(1, 2, 9), entry(2, 1, 9)];
        let ordered = lamport_order(vec![(NodeId(5), flush)]);
        let ids: Vec<(u32, u64)> = ordered
            .iter()
            .map(|(_, e)| (e.order.id.node.0, e.order.id.seq))
            .collect();
        assert_eq!(ids, vec![(1, 2), (2, 1), (1, 1)]);
    }

    #[test]
    fn a_bad_entry_refuses_the_whole_flush_and_names_it() {
        let mut bad = entry(1, 4, 1);
        bad.granted = Qty(2);
        let err = validate(&[entry(1, 3, 1), bad], 1).unwrap_err();
        assert!(err.to_string().contains("request 1 (1#4)"), "{err}");
        let mut unknown = entry(1, 5, 1);
        unknown.order.product = ProductId(3);
        assert!(validate(&[unknown], 1).is_err());
        let many = vec![entry(1, 1, 1); MAX_FLUSH + 1];
        assert!(
            validate(&many, 1)
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
        assert!(validate(&[entry(1, 1, 1)], 1).is_ok());
    }
}
