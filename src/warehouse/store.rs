//! The warehouse's durable ledger, in redb under the node's data directory.
//!
//! Three tables, written in the same transaction as the change they record:
//! - `books`: stock and counters per product;
//! - `clients`: per client node, the last request applied for it and what it
//!   came to: the dedupe state (see below);
//! - `applied`: every applied request id and what it came to: the run's audit
//!   trail, which the checker holds against every client's history. It is
//!   written, never read on the request path.
//!
//! A batch of requests is applied in one write transaction and committed with
//! redb's default durability (fsync), before any of them is answered: whatever
//! was acknowledged survives a crash.
//!
//! ## Exactly once, in bounded state
//! A client (buyer or seller) numbers its requests 1, 2, 3, … and has at most
//! one in flight: it sends request `n + 1` only once `n` is settled (answered,
//! or given up at its deadline). A retry of `n` (failover to another trader)
//! keeps `n`. So the warehouse needs, per client, only the last applied `seq`
//! and its result:
//! - `seq > last`: new; applied, and becomes the client's `last`;
//! - `seq == last`: a retry; answered with the recorded result, not applied;
//! - `seq < last`: a late duplicate (say from a trader that died holding it);
//!   its client has already moved past it, so nobody waits for the answer. It
//!   is refused as stale and not applied. Safe both ways: if it was applied
//!   before, applying it again would be the double apply; if it never was, its
//!   client recorded it as failed ("may or may not have been applied").
//!
//! The dedupe state is one row per client: memory and disk bounded by the
//! number of peers, not of requests. Lookups never touch the `applied` audit
//! table, whose inserts go to the rightmost page of each client's key range, so
//! redb's working set stays small too. The rule relies on "ack after apply"
//! (strong mode): a cached trader's flush (message 9) carries entries that may
//! reach the warehouse out of each client's order and must be deduped by flush
//! id, not through [`Store::apply`]'s high-water rule.
//!
//! redb 2.6 is used on purpose: it is the version checked on this machine
//! (shared/STACK.md), its file format is stable, and nothing we need is newer.

use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::ledger::{Applied, Ledger, ProductBook};
use crate::wire::{NodeId, Order, Qty, RequestId, Side};

/// Books per product id: `[initial, stock, sold, shipped, refused, oversold, oversells]`.
const BOOKS: TableDefinition<u32, [u64; 7]> = TableDefinition::new("books");
/// Applied requests: `(node, seq)` → `(side, qty)`, side 0 = buy, 1 = sell.
/// The audit trail; never read on the request path.
const APPLIED: TableDefinition<(u32, u64), (u8, u32)> = TableDefinition::new("applied");
/// Per client node: `(last applied seq, side, qty)`, the dedupe state.
const CLIENTS: TableDefinition<u32, (u64, u8, u32)> = TableDefinition::new("clients");

/// The file under a warehouse's data directory that holds its ledger.
pub const LEDGER_FILE: &str = "warehouse.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("warehouse store: {0}")]
    /// Boxed: redb's error is large, and every store call returns this.
    Redb(Box<redb::Error>),
    #[error(
        "warehouse store {path} holds {stored} products but the config has {configured} (use a fresh data directory)"
    )]
    ProductCount {
        path: String,
        stored: usize,
        configured: usize,
    },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

fn redb_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(Box::new(e.into()))
}

/// A request for the ledger: a buy or sell to apply once.
#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub side: Side,
    pub order: Order,
}

/// What a batch did for one change: applied now, found already applied (a
/// retry, answered from the record), or refused as older than its client's
/// last applied request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied(Applied),
    Replayed(Applied),
    Stale { last: RequestId },
}

impl Outcome {
    /// What the request came to, if it was (now or before) applied.
    pub fn applied(self) -> Option<Applied> {
        match self {
            Outcome::Applied(a) | Outcome::Replayed(a) => Some(a),
            Outcome::Stale { .. } => None,
        }
    }
}

/// Everything the store holds, read back for reports and checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub books: Vec<ProductBook>,
    pub applied: Vec<(RequestId, Applied)>,
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens the ledger in `dir`, creating it with `initial` stock if new.
    /// Returns the books as last committed.
    pub fn open(dir: &Path, initial: &[u64]) -> Result<(Store, Ledger), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(LEDGER_FILE);
        let db = Database::create(&path).map_err(redb_err)?;
        let store = Store { db };
        let mut books = store.read_books()?;
        if books.is_empty() {
            books = Ledger::new(initial).books;
            let txn = store.db.begin_write().map_err(redb_err)?;
            {
                let mut t = txn.open_table(BOOKS).map_err(redb_err)?;
                for (i, b) in books.iter().enumerate() {
                    t.insert(i as u32, to_row(b)).map_err(redb_err)?;
                }
                txn.open_table(APPLIED).map_err(redb_err)?;
                txn.open_table(CLIENTS).map_err(redb_err)?;
            }
            txn.commit().map_err(redb_err)?;
        } else if books.len() != initial.len() {
            return Err(StoreError::ProductCount {
                path: path.display().to_string(),
                stored: books.len(),
                configured: initial.len(),
            });
        }
        Ok((store, Ledger { books }))
    }

    /// Applies `changes` to `ledger` in one transaction, replaying any whose
    /// request id is its client's last applied and refusing any older one (see
    /// the module docs). On error nothing was committed and the caller must
    /// discard `ledger`'s changes.
    pub fn apply(
        &self,
        ledger: &mut Ledger,
        changes: &[Change],
    ) -> Result<Vec<Outcome>, StoreError> {
        let txn = self.db.begin_write().map_err(redb_err)?;
        let mut outcomes = Vec::with_capacity(changes.len());
        {
            let mut applied = txn.open_table(APPLIED).map_err(redb_err)?;
            let mut clients = txn.open_table(CLIENTS).map_err(redb_err)?;
            let mut touched = vec![false; ledger.books.len()];
            for c in changes {
                let RequestId { node, seq } = c.order.id;
                let last = clients.get(node.0).map_err(redb_err)?.map(|v| v.value());
                if let Some((last, side, qty)) = last {
                    if seq == last {
                        outcomes.push(Outcome::Replayed(from_applied_row((side, qty))));
                        continue;
                    }
                    if seq < last {
                        let last = RequestId { node, seq: last };
                        outcomes.push(Outcome::Stale { last });
                        continue;
                    }
                }
                let a = ledger.apply(c.side, &c.order);
                let row = to_applied_row(a);
                clients
                    .insert(node.0, (seq, row.0, row.1))
                    .map_err(redb_err)?;
                applied.insert((node.0, seq), row).map_err(redb_err)?;
                touched[c.order.product.0 as usize] = true;
                outcomes.push(Outcome::Applied(a));
            }
            let mut books = txn.open_table(BOOKS).map_err(redb_err)?;
            for (i, b) in ledger.books.iter().enumerate().filter(|(i, _)| touched[*i]) {
                books.insert(i as u32, to_row(b)).map_err(redb_err)?;
            }
        }
        txn.commit().map_err(redb_err)?;
        Ok(outcomes)
    }

    fn read_books(&self) -> Result<Vec<ProductBook>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let t = match txn.open_table(BOOKS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(redb_err(e)),
        };
        t.iter()
            .map_err(redb_err)?
            .map(|r| r.map(|(_, v)| from_row(v.value())).map_err(redb_err))
            .collect()
    }

    /// Reads the whole store of a warehouse data directory (the warehouse must
    /// have stopped: redb allows one process at a time).
    pub fn snapshot(dir: &Path) -> Result<Snapshot, StoreError> {
        let db = Database::open(dir.join(LEDGER_FILE)).map_err(redb_err)?;
        let store = Store { db };
        let books = store.read_books()?;
        let txn = store.db.begin_read().map_err(redb_err)?;
        let t = txn.open_table(APPLIED).map_err(redb_err)?;
        let mut applied = Vec::with_capacity(t.len().map_err(redb_err)? as usize);
        for r in t.iter().map_err(redb_err)? {
            let (k, v) = r.map_err(redb_err)?;
            let (node, seq) = k.value();
            applied.push((
                RequestId {
                    node: NodeId(node),
                    seq,
                },
                from_applied_row(v.value()),
            ));
        }
        Ok(Snapshot { books, applied })
    }
}

fn to_row(b: &ProductBook) -> [u64; 7] {
    [
        b.initial,
        b.stock,
        b.sold,
        b.shipped,
        b.refused,
        b.oversold,
        b.oversells,
    ]
}

fn from_row(r: [u64; 7]) -> ProductBook {
    let [initial, stock, sold, shipped, refused, oversold, oversells] = r;
    ProductBook {
        initial,
        stock,
        sold,
        shipped,
        refused,
        oversold,
        oversells,
    }
}

fn to_applied_row(a: Applied) -> (u8, u32) {
    let side = match a.side {
        Side::Buy => 0,
        Side::Sell => 1,
    };
    (side, a.qty.0)
}

fn from_applied_row((side, qty): (u8, u32)) -> Applied {
    Applied {
        side: if side == 0 { Side::Buy } else { Side::Sell },
        qty: Qty(qty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProductId;

    fn change(side: Side, seq: u64, qty: u32) -> Change {
        Change {
            side,
            order: Order {
                id: RequestId {
                    node: NodeId(1),
                    seq,
                },
                product: ProductId(0),
                qty: Qty(qty),
            },
        }
    }

    #[test]
    fn committed_changes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut ledger) = Store::open(dir.path(), &[10]).unwrap();
        store
            .apply(
                &mut ledger,
                &[change(Side::Sell, 1, 5), change(Side::Buy, 2, 7)],
            )
            .unwrap();
        drop(store);
        let (_, reopened) = Store::open(dir.path(), &[999]).unwrap();
        assert_eq!(reopened, ledger);
        assert_eq!(reopened.books[0].stock, 8);
    }

    #[test]
    fn a_repeated_request_id_is_replayed_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut ledger) = Store::open(dir.path(), &[10]).unwrap();
        let first = store
            .apply(&mut ledger, &[change(Side::Buy, 1, 4)])
            .unwrap();
        // The same id again, in a batch of its own and twice within one batch.
        let again = store
            .apply(
                &mut ledger,
                &[
                    change(Side::Buy, 1, 4),
                    change(Side::Buy, 3, 1),
                    change(Side::Buy, 3, 1),
                ],
            )
            .unwrap();
        assert_eq!(first[0], Outcome::Applied(again[0].applied().unwrap()));
        assert!(matches!(again[0], Outcome::Replayed(_)));
        assert!(matches!(again[2], Outcome::Replayed(_)));
        assert_eq!(ledger.books[0].stock, 5);
        drop(store);
        let snap = Store::snapshot(dir.path()).unwrap();
        assert_eq!(snap.applied.len(), 2);
    }

    #[test]
    fn a_late_duplicate_below_the_high_water_mark_is_refused_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut ledger) = Store::open(dir.path(), &[10]).unwrap();
        // Request 1 was given up by its client (never reached us); 2 and 3 applied.
        store
            .apply(
                &mut ledger,
                &[change(Side::Buy, 2, 1), change(Side::Buy, 3, 1)],
            )
            .unwrap();
        let late = store
            .apply(
                &mut ledger,
                &[
                    change(Side::Buy, 1, 1),
                    change(Side::Buy, 2, 1),
                    change(Side::Buy, 3, 1),
                ],
            )
            .unwrap();
        let last = RequestId {
            node: NodeId(1),
            seq: 3,
        };
        assert_eq!(late[0], Outcome::Stale { last });
        assert_eq!(late[1], Outcome::Stale { last });
        assert!(matches!(late[2], Outcome::Replayed(_)));
        assert_eq!(ledger.books[0].stock, 8);
        // Other clients are independent.
        let mut other = change(Side::Sell, 1, 5);
        other.order.id.node = NodeId(2);
        assert!(matches!(
            store.apply(&mut ledger, &[other]).unwrap()[0],
            Outcome::Applied(_)
        ));
        // The dedupe state survives a restart.
        drop(store);
        let (store, mut ledger) = Store::open(dir.path(), &[10]).unwrap();
        let again = store
            .apply(&mut ledger, &[change(Side::Buy, 3, 1)])
            .unwrap();
        assert!(matches!(again[0], Outcome::Replayed(_)));
        assert_eq!(ledger.books[0].stock, 13);
    }

    #[test]
    fn a_store_for_other_products_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &[1, 2]).unwrap());
        let err = Store::open(dir.path(), &[1]).err().unwrap();
        assert!(err.to_string().contains("holds 2 products"));
    }
}
