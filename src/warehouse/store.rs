//! The warehouse's durable ledger, in redb under the node's data directory.
//!
//! Four tables, written in the same transaction as the change they record:
//! - `books`: stock and counters per product;
//! - `clients`: per client node, the last request applied for it directly
//!   (strong mode) and what it came to: the dedupe state (see below);
//! - `applied`: every applied request id and what it came to (with its
//!   oversold and undersold quantities): the run's audit trail, which the
//!   checker holds against every client's history;
//! - `traders`: per trader, what its cache flushes came to (cached mode).
//!
//! A batch of requests is applied in one write transaction and committed with
//! redb's default durability (fsync), before any of them is answered: whatever
//! was acknowledged survives a crash.
//!
//! ## Exactly once, in bounded state
//! *Strong mode.* A client (buyer or seller) numbers its requests 1, 2, 3, …
//! and has at most one in flight: it sends request `n + 1` only once `n` is
//! settled (answered, or given up at its deadline). A retry of `n` (failover to
//! another trader) keeps `n`. So the warehouse needs, per client, only the last
//! applied `seq` and its result:
//! - `seq > last`: new; applied, and becomes the client's `last`;
//! - `seq == last`: a retry; answered with the recorded result, not applied;
//! - `seq < last`: a late duplicate (say from a trader that died holding it);
//!   its client has already moved past it, so nobody waits for the answer. It
//!   is refused as stale and not applied. Safe both ways: if it was applied
//!   before, applying it again would be the double apply; if it never was, its
//!   client recorded it as failed ("may or may not have been applied").
//!
//! That state is one row per client: bounded by the number of peers, not of
//! requests; the strong path never reads the `applied` audit table (which
//! itself grows by one row per request, on disk, for the checker).
//!
//! *Cached mode.* A trader acknowledges from its cache and flushes later, so
//! one client's requests reach the warehouse out of order (request 6 through
//! trader B's flush before request 5 through trader A's): the high-water rule
//! would refuse an acknowledged request. Flushed entries are deduped by their
//! own id in the `applied` table instead. That table lives on disk (a B-tree
//! lookup per entry; memory is redb's bounded page cache, not a set of ids).
//! It catches a retried flush, a journal re-flushed in other batches after a
//! trader's restart, and a retry of the same request through another trader.
//!
//! redb 2.6 is used on purpose: it is the version checked on this machine
//! (shared/STACK.md), its file format is stable, and nothing we need is newer.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::ledger::{Applied, Ledger, ProductBook, TraderBook};
use crate::wire::{Epoch, FlushEntry, NodeId, Order, ProductId, Qty, RequestId, Side, View};

/// Books per product id: `[initial, stock, sold, shipped, refused, oversold,
/// oversells, buys, undersells, undersold]`.
const BOOKS: TableDefinition<u32, [u64; 10]> = TableDefinition::new("books");
/// Applied requests: `(seq, node)` → `(side, qty, oversold, undersold,
/// product)`, side 0 = buy, 1 = sell.
///
/// Keyed by sequence number first: the clients of a market all make
/// requests at about the same pace, so at any moment they are at about the
/// same sequence number, and a commit's new rows land together at the
/// tree's right edge. Keyed by client first, each client's row went to a
/// page of its own: a strong commit of the bench's 32 clients wrote 26
/// pages where it now writes 12 (counted with `strace` on the ledger
/// thread); `bench --quick --mode strong`, A/B twice each on a quiet
/// machine, did 8% more as processes and 3–24% more in-process.
const APPLIED: TableDefinition<(u64, u32), AppliedRow> = TableDefinition::new("applied_by_seq");
/// [`APPLIED`] as stores written before it were keyed, `(node, seq)`: read
/// by [`Store::snapshot`] so that an older run can still be checked.
const APPLIED_BY_NODE: TableDefinition<(u32, u64), AppliedRow> = TableDefinition::new("applied");
/// A row of [`APPLIED`]: `(side, qty, oversold, undersold, product)`.
type AppliedRow = (u8, u32, u32, u32, u32);
/// Per client node: `(last directly applied seq, side, product, qty)`, the
/// dedupe state.
const CLIENTS: TableDefinition<u32, (u64, u8, u32, u32)> = TableDefinition::new("clients");
/// Per trader id: `[flushed, buys, oversells, oversold, undersells, undersold]`.
const TRADERS: TableDefinition<u32, [u64; 6]> = TableDefinition::new("traders");

/// Committed trader sets: epoch → the traders (postcard-encoded `Vec<NodeId>`);
/// see [`super::registry`].
const VIEWS: TableDefinition<u64, &[u8]> = TableDefinition::new("views");

/// The file under a warehouse's data directory that holds its ledger.
pub const LEDGER_FILE: &str = "warehouse.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large, and this one travels through every result.
    #[error("warehouse store: {0}")]
    Redb(Box<redb::Error>),
    #[error(
        "warehouse store {path} holds {stored} products but the config has {configured} (use a fresh data directory)"
    )]
    ProductCount {
        path: String,
        stored: usize,
        configured: usize,
    },
    #[error("warehouse store: {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

fn redb_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(Box::new(e.into()))
}

/// A request for the ledger, to apply once.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    /// A buy or sell a trader forwarded (messages 2 and 3, strong mode).
    Direct { side: Side, order: Order },
    /// A request from a trader's cache flush (message 9), in Lamport order.
    Flushed { trader: NodeId, entry: FlushEntry },
}

impl Change {
    pub fn order(&self) -> &Order {
        match self {
            Change::Direct { order, .. } => order,
            Change::Flushed { entry, .. } => &entry.order,
        }
    }
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub books: Vec<ProductBook>,
    pub applied: Vec<(RequestId, Applied)>,
    /// What each trader's flushes came to (cached mode; empty in strong mode).
    pub traders: Vec<(NodeId, TraderBook)>,
    /// Every trader set the warehouse committed, in epoch order.
    pub views: Vec<View>,
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
                txn.open_table(TRADERS).map_err(redb_err)?;
            }
            txn.commit().map_err(redb_err)?;
        } else if books.len() != initial.len() {
            return Err(StoreError::ProductCount {
                path: path.display().to_string(),
                stored: books.len(),
                configured: initial.len(),
            });
        }
        let traders = store.read_traders()?.into_iter().collect();
        Ok((store, Ledger { books, traders }))
    }

    /// Applies `changes` to `ledger` in one transaction: a direct request by
    /// its client's high-water mark, a flushed one by its id (see the module
    /// docs); a repeat is answered from the record, a stale one refused. On
    /// error nothing was committed and the caller must discard `ledger`'s changes.
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
            let mut traders_touched = Vec::new();
            for c in changes {
                let order = c.order();
                let RequestId { node, seq } = order.id;
                let a = match c {
                    Change::Direct { side, order } => {
                        let last = clients.get(node.0).map_err(redb_err)?.map(|v| v.value());
                        #[cfg(any(test, feature = "sim"))]
                        let last =
                            last.filter(|_| !super::broken::is(super::broken::Broken::Dedupe));
                        match last {
                            Some((last, side, product, qty)) if seq == last => {
                                let side = side_of(side);
                                let replay = Applied::plain(side, ProductId(product), Qty(qty));
                                outcomes.push(Outcome::Replayed(replay));
                                continue;
                            }
                            Some((last, ..)) if seq < last => {
                                let last = RequestId { node, seq: last };
                                outcomes.push(Outcome::Stale { last });
                                continue;
                            }
                            _ => {}
                        }
                        // Applied already as a trader's flushed entry (a
                        // retry of an attempt a cached trader journaled).
                        if let Some(a) = applied_before(&applied, node, seq)? {
                            outcomes.push(Outcome::Replayed(a));
                            continue;
                        }
                        let a = ledger.apply(*side, order);
                        let row = to_applied_row(a);
                        clients
                            .insert(node.0, (seq, row.0, a.product.0, row.1))
                            .map_err(redb_err)?;
                        a
                    }
                    Change::Flushed { trader, entry } => {
                        if let Some(a) = applied_before(&applied, node, seq)? {
                            outcomes.push(Outcome::Replayed(a));
                            continue;
                        }
                        traders_touched.push(*trader);
                        ledger.apply_flushed(*trader, entry)
                    }
                };
                applied
                    .insert((seq, node.0), to_applied_row(a))
                    .map_err(redb_err)?;
                touched[order.product.0 as usize] = true;
                outcomes.push(Outcome::Applied(a));
            }
            let mut books = txn.open_table(BOOKS).map_err(redb_err)?;
            for (i, b) in ledger.books.iter().enumerate().filter(|(i, _)| touched[*i]) {
                books.insert(i as u32, to_row(b)).map_err(redb_err)?;
            }
            traders_touched.sort_unstable();
            traders_touched.dedup();
            let mut traders = txn.open_table(TRADERS).map_err(redb_err)?;
            for t in traders_touched {
                let tb = ledger.traders.get(&t).copied().unwrap_or_default();
                traders.insert(t.0, trader_row(&tb)).map_err(redb_err)?;
            }
        }
        txn.commit().map_err(redb_err)?;
        Ok(outcomes)
    }

    /// Every applied request, in `(node, seq)` order whatever the store's
    /// key order (an older store's table is read if it has no newer one).
    fn read_applied(&self) -> Result<Vec<(RequestId, Applied)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let id = |node: u32, seq: u64| RequestId {
            node: NodeId(node),
            seq,
        };
        let mut applied = Vec::new();
        match txn.open_table(APPLIED) {
            Ok(t) => {
                for r in t.iter().map_err(redb_err)? {
                    let (k, v) = r.map_err(redb_err)?;
                    let (seq, node) = k.value();
                    applied.push((id(node, seq), from_applied_row(v.value())));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {
                let t = txn.open_table(APPLIED_BY_NODE).map_err(redb_err)?;
                for r in t.iter().map_err(redb_err)? {
                    let (k, v) = r.map_err(redb_err)?;
                    let (node, seq) = k.value();
                    applied.push((id(node, seq), from_applied_row(v.value())));
                }
            }
            Err(e) => return Err(redb_err(e)),
        }
        applied.sort_unstable_by_key(|(id, _)| (id.node, id.seq));
        Ok(applied)
    }

    /// Commits `view` (durably) as the trader set of its epoch.
    pub fn commit_view(&self, view: &View) -> Result<(), StoreError> {
        let traders = postcard::to_stdvec(&view.traders).map_err(|e| StoreError::Corrupt {
            what: format!("{}", view.epoch),
            reason: e.to_string(),
        })?;
        let txn = self.db.begin_write().map_err(redb_err)?;
        {
            let mut t = txn.open_table(VIEWS).map_err(redb_err)?;
            t.insert(view.epoch.0, traders.as_slice())
                .map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)
    }

    /// Every committed trader set, in epoch order.
    pub fn read_views(&self) -> Result<Vec<View>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let t = match txn.open_table(VIEWS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(redb_err(e)),
        };
        let mut views = Vec::new();
        for r in t.iter().map_err(redb_err)? {
            let (k, v) = r.map_err(redb_err)?;
            let epoch = Epoch(k.value());
            let traders = postcard::from_bytes(v.value()).map_err(|e| StoreError::Corrupt {
                what: format!("{epoch}"),
                reason: e.to_string(),
            })?;
            views.push(View { epoch, traders });
        }
        Ok(views)
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

    fn read_traders(&self) -> Result<Vec<(NodeId, TraderBook)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let t = match txn.open_table(TRADERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(redb_err(e)),
        };
        t.iter()
            .map_err(redb_err)?
            .map(|r| {
                r.map(|(k, v)| (NodeId(k.value()), from_trader_row(v.value())))
                    .map_err(redb_err)
            })
            .collect()
    }

    /// Reads the whole store of a warehouse data directory (the warehouse must
    /// have stopped: redb allows one process at a time).
    pub fn snapshot(dir: &Path) -> Result<Snapshot, StoreError> {
        let db = Database::open(dir.join(LEDGER_FILE)).map_err(redb_err)?;
        let store = Store { db };
        let books = store.read_books()?;
        let traders = store.read_traders()?;
        let applied = store.read_applied()?;
        let views = store.read_views()?;
        Ok(Snapshot {
            books,
            applied,
            traders,
            views,
        })
    }
}

fn to_row(b: &ProductBook) -> [u64; 10] {
    [
        b.initial,
        b.stock,
        b.sold,
        b.shipped,
        b.refused,
        b.oversold,
        b.oversells,
        b.buys,
        b.undersells,
        b.undersold,
    ]
}

fn from_row(r: [u64; 10]) -> ProductBook {
    let [
        initial,
        stock,
        sold,
        shipped,
        refused,
        oversold,
        oversells,
        buys,
        undersells,
        undersold,
    ] = r;
    ProductBook {
        initial,
        stock,
        sold,
        shipped,
        refused,
        oversold,
        oversells,
        buys,
        undersells,
        undersold,
    }
}

fn trader_row(t: &TraderBook) -> [u64; 6] {
    [
        t.flushed,
        t.buys,
        t.oversells,
        t.oversold,
        t.undersells,
        t.undersold,
    ]
}

fn from_trader_row(r: [u64; 6]) -> TraderBook {
    let [flushed, buys, oversells, oversold, undersells, undersold] = r;
    TraderBook {
        flushed,
        buys,
        oversells,
        oversold,
        undersells,
        undersold,
    }
}

fn side_of(side: u8) -> Side {
    if side == 0 { Side::Buy } else { Side::Sell }
}

fn to_applied_row(a: Applied) -> AppliedRow {
    let side = match a.side {
        Side::Buy => 0,
        Side::Sell => 1,
    };
    (side, a.qty.0, a.oversold.0, a.undersold.0, a.product.0)
}

/// What request `node#seq` came to if it was applied before, by any path
/// (directly or in a trader's flush): the one record every repeat is
/// answered from. (A deliberately broken store, in tests, forgets it.)
fn applied_before(
    applied: &redb::Table<(u64, u32), AppliedRow>,
    node: NodeId,
    seq: u64,
) -> Result<Option<Applied>, StoreError> {
    let row = applied.get((seq, node.0)).map_err(redb_err)?;
    #[cfg(any(test, feature = "sim"))]
    let row = row.filter(|_| !super::broken::is(super::broken::Broken::Dedupe));
    Ok(row.map(|v| from_applied_row(v.value())))
}

fn from_applied_row((side, qty, oversold, undersold, product): AppliedRow) -> Applied {
    Applied {
        side: side_of(side),
        product: ProductId(product),
        qty: Qty(qty),
        oversold: Qty(oversold),
        undersold: Qty(undersold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProductId;

    fn change(side: Side, seq: u64, qty: u32) -> Change {
        Change::Direct {
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

    fn flushed(trader: u32, seq: u64, side: Side, qty: u32, granted: u32) -> Change {
        let Change::Direct { order, .. } = change(side, seq, qty) else {
            unreachable!()
        };
        Change::Flushed {
            trader: NodeId(trader),
            entry: FlushEntry {
                order,
                side,
                clock: crate::clock::Lamport(seq),
                granted: Qty(granted),
                epoch: crate::wire::Epoch(1),
            },
        }
    }

    #[test]
    fn a_repeated_flush_is_replayed_and_oversells_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut ledger) = Store::open(dir.path(), &[4]).unwrap();
        let flush = [
            flushed(6, 1, Side::Buy, 3, 3),
            flushed(6, 2, Side::Buy, 3, 3),
            flushed(6, 3, Side::Sell, 5, 5),
        ];
        let first = store.apply(&mut ledger, &flush).unwrap();
        assert!(first.iter().all(|o| matches!(o, Outcome::Applied(_))));
        assert_eq!(first[1].applied().unwrap().oversold, Qty(2));
        // The same flush again (its reply was lost), cut into another batch
        // with a new request: only the new one is applied.
        let again = store
            .apply(
                &mut ledger,
                &[flush[1], flush[0], flushed(6, 4, Side::Buy, 1, 1)],
            )
            .unwrap();
        assert_eq!(again[0], Outcome::Replayed(first[1].applied().unwrap()));
        assert!(matches!(again[2], Outcome::Applied(_)));
        let b = ledger.books[0];
        assert_eq!((b.stock, b.shipped, b.oversells, b.oversold), (4, 5, 1, 2));
        assert_eq!(ledger.traders[&NodeId(6)].flushed, 4);
        drop(store);
        let snap = Store::snapshot(dir.path()).unwrap();
        assert_eq!(snap.traders, vec![(NodeId(6), ledger.traders[&NodeId(6)])]);
        assert_eq!(snap.books, ledger.books);
        let (_, reopened) = Store::open(dir.path(), &[4]).unwrap();
        assert_eq!(reopened, ledger);
    }

    #[test]
    fn a_retry_of_a_flushed_request_is_replayed_whichever_comes_first() {
        // Found by the simulator (seed 1184, cached): a client's attempt at a
        // trader that died was journaled and flushed, and its retry reached
        // another trader, which settles a retry at the warehouse.
        let dir = tempfile::tempdir().unwrap();
        let (store, mut ledger) = Store::open(dir.path(), &[2]).unwrap();
        // The flush first: granted 3 of a stock of 2 (1 oversold).
        let first = store
            .apply(&mut ledger, &[flushed(6, 1, Side::Buy, 4, 3)])
            .unwrap();
        let retried = store
            .apply(&mut ledger, &[change(Side::Buy, 1, 4)])
            .unwrap();
        assert_eq!(
            retried,
            vec![Outcome::Replayed(first[0].applied().unwrap())]
        );
        let a = retried[0].applied().unwrap();
        assert_eq!((a.qty, a.oversold), (Qty(2), Qty(1)));
        // The retry first: the late flush of the same id is not applied.
        let retry = store
            .apply(&mut ledger, &[change(Side::Sell, 2, 5)])
            .unwrap();
        let late = store
            .apply(&mut ledger, &[flushed(6, 2, Side::Sell, 5, 5)])
            .unwrap();
        assert_eq!(late, vec![Outcome::Replayed(retry[0].applied().unwrap())]);
        assert_eq!(ledger.books[0].sold, 5);
        assert_eq!(ledger.books[0].shipped, 2);
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

    /// A buy of 1 by client `node`'s request `seq`.
    fn buy_by(node: u32, seq: u64) -> Change {
        Change::Direct {
            side: Side::Buy,
            order: Order {
                id: RequestId {
                    node: NodeId(node),
                    seq,
                },
                product: ProductId(0),
                qty: Qty(1),
            },
        }
    }

    fn ids(snapshot: &Snapshot) -> Vec<(u32, u64)> {
        snapshot
            .applied
            .iter()
            .map(|(id, _)| (id.node.0, id.seq))
            .collect()
    }

    #[test]
    fn the_snapshot_lists_applied_requests_by_client_then_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut ledger) = Store::open(dir.path(), &[10]).unwrap();
        // Stored by sequence first: (1, 3) (1, 4) (2, 3) (2, 4).
        let batch = [buy_by(4, 1), buy_by(3, 1), buy_by(4, 2), buy_by(3, 2)];
        store.apply(&mut ledger, &batch).unwrap();
        drop(store);
        let snapshot = Store::snapshot(dir.path()).unwrap();
        assert_eq!(ids(&snapshot), vec![(3, 1), (3, 2), (4, 1), (4, 2)]);
    }

    #[test]
    fn a_store_keyed_by_client_first_is_still_read() {
        // What an older warehouse left: the applied table keyed (node, seq).
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &[10]).unwrap());
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(APPLIED).unwrap();
        {
            let mut t = txn.open_table(APPLIED_BY_NODE).unwrap();
            t.insert((7, 2), (0, 1, 0, 0, 0)).unwrap();
            t.insert((5, 9), (1, 3, 0, 0, 0)).unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        let snapshot = Store::snapshot(dir.path()).unwrap();
        assert_eq!(ids(&snapshot), vec![(5, 9), (7, 2)]);
        assert_eq!(snapshot.applied[0].1.side, Side::Sell);
        assert_eq!(snapshot.applied[0].1.qty, Qty(3));
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
        if let Change::Direct { order, .. } = &mut other {
            order.id.node = NodeId(2);
        }
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
