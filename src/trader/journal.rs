//! A cached trader's journal: its accepted, not yet flushed requests, durable
//! before the client hears of them.
//!
//! An append-only log (`journal.log`) under the trader's data directory.
//! Each step of the driver appends one record: the entries it accepted and
//! the keys the warehouse confirmed since (`[length u32][crc32 u32][postcard
//! record]`, little-endian). Appending is a `write` into the page cache;
//! [`Journal::sync`] makes a record durable, and the driver answers a step's
//! clients only once its record is synced.
//!
//! ## Appends do not wait for syncs
//! The append and the sync are separate so that a sync never holds the
//! journal: while one `fdatasync` runs on a [`crate::syncer::Syncer`]'s thread, the driver
//! goes on appending the next steps' records, and the next sync covers them
//! all (a sync covers every record fully written before it began). A redb
//! transaction, which this journal was before, holds its write lock through
//! its fsync, so the next step waited for the whole of the last one.
//!
//! ## Zeros ahead of the log
//! The file is grown [`PREALLOCATE`] bytes of zeros at a time, ahead of the
//! records, and each record is written over them in place. An `fdatasync`
//! after a write that lengthens the file must also write the file's size;
//! one over zeros already on disk writes the data alone. On this disk that
//! took a single-threaded write and sync from 164–172 µs to 123–144 µs, and
//! `bench --quick --in-process --mode cached` from 509–578 µs at the trader
//! to 433–470 µs (three A/B pairs; as processes, where the hops cost more,
//! no change showed). A record of length 0 is where the log ends.
//!
//! ## Reading back, and tearing
//! A record is read only if its length and checksum hold; reading stops at
//! the first that does not, or at the zeros. A crash can tear only records no sync had covered
//! (a sync covers everything written before it), so everything a client was
//! told of precedes the tear. A trader restarted on the directory cuts a
//! torn tail off (anything but zeros after the last good record), reads the
//! live entries back and flushes them first; the warehouse's per-request
//! dedupe makes a re-flush of something it already applied harmless. What a trader that never comes back leaves here is read
//! by the launcher after the run and reported as unflushed.
//!
//! ## Compaction, and failures
//! The journal keeps its live entries in memory too. When the log has grown
//! past [`COMPACT_AT`] and holds mostly forgotten entries, [`Journal::compact`]
//! writes the live entries to a new file, syncs it and renames it over the
//! log. A failed write or sync leaves the log in doubt (a torn record in the
//! middle would hide every record after it), so the journal refuses appends
//! until [`Journal::recover`] has rewritten it the same way.
//!
//! A journal written by an older trader (`journal.redb`) is still read, and
//! a trader restarted on one moves its entries into the log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::cached::Key;
use crate::syncer::Durable;
use crate::wire::FlushEntry;

/// The journal's file in a trader's data directory.
pub const JOURNAL_FILE: &str = "journal.log";
/// The journal as older traders wrote it (a redb table `key → entry`).
const REDB_FILE: &str = "journal.redb";
/// That table, its entries postcard-encoded.
const REDB_QUEUE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("queue");
/// The log is compacted once it is this long and mostly forgotten entries.
pub const COMPACT_AT: u64 = 8 << 20;
/// Longest record read back: beyond it, a length is taken for a torn one.
const MAX_RECORD: usize = 64 << 20;
/// Zeros the file is grown by ahead of the log (see the module docs).
pub const PREALLOCATE: u64 = 256 << 10;
/// A record's header: its length and its checksum.
const HEADER: usize = 8;
/// At most what one live entry takes in the log (postcard: about 30 bytes).
const ENTRY_BYTES: u64 = 64;

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

/// One step's record.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    append: Vec<(Key, FlushEntry)>,
    forget: Vec<Key>,
}

/// What [`Journal::append`] wrote: [`Journal::sync`] of it makes it durable.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

pub struct Journal {
    path: PathBuf,
    shown: String,
    state: Mutex<State>,
    /// Records known durable: every one numbered up to this.
    synced: AtomicU64,
}

struct State {
    file: Arc<File>,
    /// Records fully written, numbered from 1.
    written: u64,
    /// Bytes of records in the log: where the next one goes.
    len: u64,
    /// Bytes the file holds (the log and the zeros after it).
    allocated: u64,
    live: HashMap<Key, FlushEntry>,
    /// Why the log is in doubt, until it is rewritten.
    broken: Option<String>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, cutting off a torn tail;
    /// returns it with the entries it holds, in key order.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<(Key, FlushEntry)>), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| store_error(&shown, e);
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| err(&e))?;
        let Scan {
            live,
            good,
            len,
            torn,
        } = scan(&mut file, &shown)?;
        let journal = Journal {
            path,
            shown: shown.clone(),
            state: Mutex::new(State {
                file: Arc::new(file),
                written: 0,
                len: good,
                allocated: len,
                live,
                broken: None,
            }),
            synced: AtomicU64::new(0),
        };
        let old = dir.join(REDB_FILE);
        if old.exists() {
            let entries = read_redb(&old)?;
            journal.lock().live.extend(entries);
            journal.compact()?;
            std::fs::remove_file(&old).map_err(|e| err(&e))?;
        } else if torn {
            tracing::warn!(
                "{shown}: cutting off {} bytes after a torn last record (never acknowledged)",
                len - good
            );
            journal.compact()?;
        }
        let entries = sorted(&journal.lock().live);
        Ok((journal, entries))
    }

    /// The entries a stopped trader left in `dir` (none if it has no
    /// journal), in key order. Reads only: a torn tail is left as it is.
    pub fn read(dir: &Path) -> Result<Vec<(Key, FlushEntry)>, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        if path.exists() {
            let shown = path.display().to_string();
            let mut file = File::open(&path).map_err(|e| store_error(&shown, &e))?;
            return Ok(sorted(&scan(&mut file, &shown)?.live));
        }
        let old = dir.join(REDB_FILE);
        if old.exists() {
            return Ok(sorted(&read_redb(&old)?.into_iter().collect()));
        }
        Ok(Vec::new())
    }

    /// Writes a record that adds `append` and drops `forget`; not durable
    /// until [`Journal::sync`] of the returned ticket. Refused while the log
    /// is in doubt (see the module docs).
    pub fn append(
        &self,
        append: &[(Key, FlushEntry)],
        forget: &[Key],
    ) -> Result<Ticket, JournalError> {
        let record = Record {
            append: append.to_vec(),
            forget: forget.to_vec(),
        };
        let frame = frame(&record).map_err(|e| self.error(&e))?;
        let mut s = self.lock();
        if let Some(why) = &s.broken {
            return Err(self.error(&format!("refused until it is rewritten ({why})")));
        }
        if let Err(e) = s.write(&frame) {
            s.broken = Some(format!("a write failed: {e}"));
            return Err(self.error(&e));
        }
        s.written += 1;
        s.live.extend(append.iter().copied());
        for key in forget {
            s.live.remove(key);
        }
        Ok(Ticket(s.written))
    }

    /// The ticket of the last record written: syncing it makes every record durable.
    pub fn last(&self) -> Ticket {
        Ticket(self.lock().written)
    }

    /// Whether every record up to `ticket` is durable.
    pub fn is_synced(&self, ticket: Ticket) -> bool {
        self.synced.load(Ordering::Acquire) >= ticket.0
    }

    /// Makes every record up to `ticket` durable: an `fdatasync`, unless a
    /// sync that covered it already finished. Runs beside appends and other
    /// syncs (see the module docs). A failure leaves the log in doubt.
    pub fn sync(&self, ticket: Ticket) -> Result<(), JournalError> {
        if self.is_synced(ticket) {
            return Ok(());
        }
        let (file, covers) = {
            let s = self.lock();
            (s.file.clone(), s.written)
        };
        if let Err(e) = file.sync_data() {
            self.lock().broken = Some(format!("a sync failed: {e}"));
            return Err(self.error(&e));
        }
        self.synced.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }

    /// [`Journal::append`] and [`Journal::sync`] in one (the tests' shorthand).
    #[cfg(test)]
    pub fn commit(&self, append: &[(Key, FlushEntry)], forget: &[Key]) -> Result<(), JournalError> {
        let ticket = self.append(append, forget)?;
        self.sync(ticket)
    }

    /// Whether the log is long and mostly forgotten entries.
    pub fn wants_compaction(&self) -> bool {
        let s = self.lock();
        s.len >= COMPACT_AT && s.live.len() as u64 * ENTRY_BYTES < s.len / 2
    }

    /// Rewrites the log as its live entries alone, durably (see the module
    /// docs). Every record written before is then durable.
    pub fn compact(&self) -> Result<(), JournalError> {
        let mut s = self.lock();
        let err = |e: &dyn std::fmt::Display| self.error(e);
        let record = Record {
            append: sorted(&s.live),
            forget: Vec::new(),
        };
        let frame = frame(&record).map_err(|e| err(&e))?;
        let fresh = self.path.with_extension("log.new");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&fresh)
            .map_err(|e| err(&e))?;
        file.write_all(&frame).map_err(|e| err(&e))?;
        file.sync_all().map_err(|e| err(&e))?;
        std::fs::rename(&fresh, &self.path).map_err(|e| err(&e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| err(&e))?;
        }
        // Appends go on at the new file's end.
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| err(&e))?;
        s.file = Arc::new(file);
        s.len = frame.len() as u64;
        s.allocated = s.len;
        s.broken = None;
        self.synced.fetch_max(s.written, Ordering::AcqRel);
        Ok(())
    }

    /// Drops `keys` (requests whose clients were refused) and rewrites the
    /// log: what a failed write or sync left in doubt is then durable, or the
    /// error says why not (and appends are still refused).
    pub fn recover(&self, drop: &[Key]) -> Result<(), JournalError> {
        {
            let mut s = self.lock();
            for key in drop {
                s.live.remove(key);
            }
        }
        self.compact()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, e: &dyn std::fmt::Display) -> JournalError {
        store_error(&self.shown, e)
    }
}

/// A failure of the journal at `shown` (its path, as shown).
fn store_error(shown: &str, e: &dyn std::fmt::Display) -> JournalError {
    JournalError::Store {
        path: shown.to_string(),
        reason: e.to_string(),
    }
}

impl State {
    /// Writes `frame` at the log's end, first zeroing the file ahead of it
    /// (see the module docs).
    fn write(&mut self, frame: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.len + frame.len() as u64;
        if end > self.allocated {
            let grow = PREALLOCATE.max(end - self.allocated);
            let zeros = vec![0u8; grow as usize];
            self.file.write_all_at(&zeros, self.allocated)?;
            self.allocated += grow;
        }
        self.file.write_all_at(frame, self.len)?;
        self.len = end;
        Ok(())
    }
}

impl Durable for Journal {
    fn is_synced(&self, upto: u64) -> bool {
        Journal::is_synced(self, Ticket(upto))
    }

    fn sync(&self, upto: u64) -> Result<u64, String> {
        Journal::sync(self, Ticket(upto)).map_err(|e| e.to_string())?;
        Ok(self.synced.load(Ordering::Acquire))
    }
}

/// `record` as it goes to the log: length, checksum, body.
fn frame(record: &Record) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_stdvec(record)?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// What [`scan`] read of a log.
struct Scan {
    live: HashMap<Key, FlushEntry>,
    /// The length of its good records.
    good: u64,
    /// The file's whole length.
    len: u64,
    /// Whether anything but zeros follows the good records (a torn one).
    torn: bool,
}

/// Reads a log from its start.
fn scan(file: &mut File, shown: &str) -> Result<Scan, JournalError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| store_error(shown, &e))?;
    let mut live = HashMap::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len == 0 {
            // The zeros ahead of the log.
            break;
        }
        let Some(body) = bytes
            .get(at + HEADER..at + HEADER + len)
            .filter(|_| len <= MAX_RECORD)
        else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(record) = postcard::from_bytes::<Record>(body) else {
            break;
        };
        live.extend(record.append);
        for key in record.forget {
            live.remove(&key);
        }
        at += HEADER + len;
    }
    Ok(Scan {
        torn: bytes[at..].iter().any(|b| *b != 0),
        live,
        good: at as u64,
        len: bytes.len() as u64,
    })
}

fn sorted(live: &HashMap<Key, FlushEntry>) -> Vec<(Key, FlushEntry)> {
    let mut out: Vec<_> = live.iter().map(|(k, e)| (*k, *e)).collect();
    out.sort_unstable_by_key(|(k, _)| *k);
    out
}

/// The entries of a journal an older trader wrote in redb.
fn read_redb(path: &Path) -> Result<Vec<(Key, FlushEntry)>, JournalError> {
    let shown = path.display().to_string();
    let err = |e: &dyn std::fmt::Display| store_error(&shown, e);
    let db = redb::Database::open(path).map_err(|e| err(&e))?;
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let t = match txn.open_table(REDB_QUEUE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(err(&e)),
    };
    let mut out = Vec::new();
    for row in redb::ReadableTable::iter(&t).map_err(|e| err(&e))? {
        let (k, v) = row.map_err(|e| err(&e))?;
        let key = k.value();
        let entry = postcard::from_bytes(v.value()).map_err(|e| JournalError::Entry {
            path: shown.clone(),
            key,
            reason: e.to_string(),
        })?;
        out.push((key, entry));
    }
    Ok(out)
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

    fn file_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len()
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
        let (_, reopened) = Journal::open(dir.path()).unwrap();
        assert_eq!(reopened, back);
    }

    #[test]
    fn a_directory_without_a_journal_has_nothing_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::read(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join(JOURNAL_FILE).exists());
    }

    #[test]
    fn a_sync_covers_what_was_written_before_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        let first = j.append(&[(1, entry(1))], &[]).unwrap();
        let second = j.append(&[(2, entry(2))], &[]).unwrap();
        assert!(first < second);
        assert!(!j.is_synced(first));
        // One sync for the later record settles the earlier one too.
        j.sync(second).unwrap();
        assert!(j.is_synced(first) && j.is_synced(second));
        let third = j.append(&[(3, entry(3))], &[]).unwrap();
        assert!(!j.is_synced(third));
        assert_eq!(j.last(), third);
    }

    #[test]
    fn a_sync_thread_makes_the_journal_durable_and_says_how_far() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap().0);
        let (syncer, rx) = crate::syncer::tests::reporting(journal.clone());
        journal.append(&[(1, entry(1))], &[]).unwrap();
        let ticket = journal.append(&[(2, entry(2))], &[]).unwrap();
        assert!(!journal.is_synced(ticket));
        syncer.want(ticket.0).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(Ok(2)));
        assert!(journal.is_synced(ticket));
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.commit(&[(1, entry(1)), (2, entry(2))], &[]).unwrap();
        let whole = j.lock().len;
        j.commit(&[(3, entry(3))], &[1]).unwrap();
        let end = j.lock().len;
        drop(j);
        // A crash mid-write: the last record's bytes stop short.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.set_len(end - 3).unwrap();
        drop(f);
        let want = vec![(1, entry(1)), (2, entry(2))];
        assert_eq!(Journal::read(dir.path()).unwrap(), want);
        let (j, back) = Journal::open(dir.path()).unwrap();
        assert_eq!(back, want);
        assert_eq!(file_len(dir.path()), whole, "the torn tail is cut off");
        // What is appended next is read back after the good records.
        j.commit(&[(4, entry(4))], &[2]).unwrap();
        drop(j);
        let back = Journal::read(dir.path()).unwrap();
        assert_eq!(back, vec![(1, entry(1)), (4, entry(4))]);
    }

    #[test]
    fn the_zeros_ahead_of_the_log_are_not_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.commit(&[(1, entry(1)), (2, entry(2))], &[]).unwrap();
        let end = j.lock().len;
        drop(j);
        let allocated = file_len(dir.path());
        assert!(allocated >= PREALLOCATE && allocated > end);
        let (j, back) = Journal::open(dir.path()).unwrap();
        assert_eq!(back, vec![(1, entry(1)), (2, entry(2))]);
        assert_eq!(file_len(dir.path()), allocated, "nothing was rewritten");
        // The next record goes where the log ends, over the zeros.
        j.commit(&[(3, entry(3))], &[1]).unwrap();
        assert_eq!(file_len(dir.path()), allocated);
        drop(j);
        let back = Journal::read(dir.path()).unwrap();
        assert_eq!(back, vec![(2, entry(2)), (3, entry(3))]);
    }

    #[test]
    fn a_log_longer_than_its_zeros_grows_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        let many: Vec<(Key, FlushEntry)> = (1..=20_000).map(|k| (k, entry(k))).collect();
        j.commit(&many, &[]).unwrap();
        j.commit(&[], &(1..20_000).collect::<Vec<_>>()).unwrap();
        let end = j.lock().len;
        assert!(end > PREALLOCATE, "one record longer than the zeros");
        assert!(file_len(dir.path()) >= end);
        drop(j);
        assert_eq!(
            Journal::read(dir.path()).unwrap(),
            vec![(20_000, entry(20_000))]
        );
    }

    #[test]
    fn a_record_whose_checksum_fails_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.commit(&[(1, entry(1))], &[]).unwrap();
        let first = j.lock().len;
        j.commit(&[(2, entry(2))], &[]).unwrap();
        j.commit(&[(3, entry(3))], &[]).unwrap();
        drop(j);
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first as usize + HEADER] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap(), vec![(1, entry(1))]);
    }

    #[test]
    fn compaction_keeps_the_live_entries_alone_and_appends_go_on_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        for k in 1..=200 {
            j.commit(&[(k, entry(k))], &[]).unwrap();
            if k > 2 {
                j.commit(&[], &[k - 1]).unwrap();
            }
        }
        let long = j.lock().len;
        let pending = j.append(&[(201, entry(201))], &[]).unwrap();
        j.compact().unwrap();
        assert!(j.is_synced(pending), "compaction makes everything durable");
        assert!(file_len(dir.path()) < long / 20);
        j.commit(&[(202, entry(202))], &[1]).unwrap();
        drop(j);
        let back = Journal::read(dir.path()).unwrap();
        assert_eq!(
            back,
            vec![(200, entry(200)), (201, entry(201)), (202, entry(202))]
        );
        assert!(!dir.path().join("journal.log.new").exists());
    }

    #[test]
    fn a_broken_log_refuses_appends_until_it_is_rewritten_without_the_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.commit(&[(1, entry(1))], &[]).unwrap();
        j.append(&[(2, entry(2))], &[]).unwrap();
        j.lock().broken = Some("a sync failed: injected".into());
        let refused = j.append(&[(3, entry(3))], &[]).unwrap_err();
        assert!(refused.to_string().contains("injected"), "{refused}");
        j.recover(&[2]).unwrap();
        assert!(j.lock().broken.is_none());
        j.commit(&[(4, entry(4))], &[]).unwrap();
        drop(j);
        let back = Journal::read(dir.path()).unwrap();
        assert_eq!(back, vec![(1, entry(1)), (4, entry(4))]);
    }

    #[test]
    fn an_older_traders_redb_journal_is_read_and_moved_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = redb::Database::create(dir.path().join(REDB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(REDB_QUEUE).unwrap();
                for k in [5u64, 7] {
                    let bytes = postcard::to_stdvec(&entry(k)).unwrap();
                    t.insert(k, bytes.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let want = vec![(5, entry(5)), (7, entry(7))];
        assert_eq!(Journal::read(dir.path()).unwrap(), want);
        let (j, back) = Journal::open(dir.path()).unwrap();
        assert_eq!(back, want);
        assert!(!dir.path().join(REDB_FILE).exists());
        drop(j);
        assert_eq!(Journal::read(dir.path()).unwrap(), want);
    }
}
