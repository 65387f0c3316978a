//! A cached trader's journal: its accepted, not yet flushed requests, durable
//! before the client hears of them.
//!
//! One redb file (`journal.redb`) under the trader's data directory, one table
//! `key → entry` (the entry postcard-encoded). Every step of the driver writes
//! its new entries and drops the ones the warehouse confirmed in one
//! transaction, committed with fsync, before any reply of that step leaves. A
//! trader restarted on the same directory reads the table back and flushes it
//! first; the warehouse's per-request dedupe makes a re-flush of something it
//! already applied harmless. What a trader that never comes back leaves here is
//! read by the launcher after the run and reported as unflushed.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::cached::Key;
use crate::wire::FlushEntry;

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");

/// The journal's file in a trader's data directory.
pub const JOURNAL_FILE: &str = "journal.redb";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("trader journal {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("trader journal {path}: entry {key} is unreadable: {reason}")]
    Entry {
        path: String,
        key: u64,
        reason: String,
    },
}

pub struct Journal {
    db: Database,
    path: String,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it with the entries it holds.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<(Key, FlushEntry)>), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| JournalError::Store {
            path: shown.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        let db = Database::create(&path).map_err(|e| err(&e))?;
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(QUEUE).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;
        let journal = Journal { db, path: shown };
        let entries = journal.entries()?;
        Ok((journal, entries))
    }

    /// The entries a stopped trader left in `dir` (none if it has no journal).
    pub fn read(dir: &Path) -> Result<Vec<(Key, FlushEntry)>, JournalError> {
        if !dir.join(JOURNAL_FILE).exists() {
            return Ok(Vec::new());
        }
        Ok(Self::open(dir)?.1)
    }

    /// Adds `append` and drops `forget`, in one durable transaction.
    pub fn commit(&self, append: &[(Key, FlushEntry)], forget: &[Key]) -> Result<(), JournalError> {
        let err = |e: &dyn std::fmt::Display| JournalError::Store {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = txn.open_table(QUEUE).map_err(|e| err(&e))?;
            for (key, entry) in append {
                let bytes = postcard::to_stdvec(entry).map_err(|e| err(&e))?;
                t.insert(*key, bytes.as_slice()).map_err(|e| err(&e))?;
            }
            for key in forget {
                t.remove(*key).map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    fn entries(&self) -> Result<Vec<(Key, FlushEntry)>, JournalError> {
        let err = |e: &dyn std::fmt::Display| JournalError::Store {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let t = txn.open_table(QUEUE).map_err(|e| err(&e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(&e))? {
            let (k, v) = row.map_err(|e| err(&e))?;
            let key = k.value();
            let entry = postcard::from_bytes(v.value()).map_err(|e| JournalError::Entry {
                path: self.path.clone(),
                key,
                reason: e.to_string(),
            })?;
            out.push((key, entry));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::wire::{NodeId, Order, ProductId, Qty, RequestId, Side};

    fn entry(seq: u64) -> FlushEntry {
        FlushEntry {
            order: Order {
                id: RequestId {
                    node: NodeId(2),
                    seq,
                },
                product: ProductId(0),
                qty: Qty(3),
            },
            side: Side::Buy,
            clock: Lamport(seq),
            granted: Qty(1),
            epoch: crate::wire::Epoch(1),
        }
    }

    #[test]
    fn what_was_journaled_and_not_forgotten_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (j, none) = Journal::open(dir.path()).unwrap();
        assert!(none.is_empty());
        j.commit(&[(1, entry(1)), (2, entry(2)), (3, entry(3))], &[])
            .unwrap();
        j.commit(&[(4, entry(4))], &[1, 3]).unwrap();
        drop(j);
        let back = Journal::read(dir.path()).unwrap();
        assert_eq!(back, vec![(2, entry(2)), (4, entry(4))]);
    }

    #[test]
    fn a_directory_without_a_journal_has_nothing_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::read(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join(JOURNAL_FILE).exists());
    }
}
