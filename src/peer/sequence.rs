//! A client's request numbers, never reused across its restarts.
//!
//! The warehouse remembers, durably, the last request it applied for each
//! client and answers a repeated id from that record. A client restarted on
//! its data directory that numbered its requests from 1 again would have its
//! new requests answered with its old results, or refused as stale, and
//! never applied. So numbers are reserved in blocks: the end of the current
//! block is written (and synced) to `request.seq` in the data directory
//! before any number in it is used, and a restart starts after it.
//!
//! (A client whose data directory is lost starts from 1 again: give a node
//! a fresh id or a fresh warehouse then.)

use std::io::Write;
use std::path::{Path, PathBuf};

/// Numbers reserved at a time: one small write per this many requests.
pub const BLOCK: u64 = 1 << 20;
const FILE: &str = "request.seq";

/// The next request numbers of one client.
#[derive(Debug)]
pub struct Sequence {
    path: PathBuf,
    next: u64,
    /// The first number not reserved yet.
    end: u64,
}

impl Sequence {
    /// Opens the sequence in `dir` and reserves its first block.
    pub fn open(dir: &Path) -> std::io::Result<Sequence> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| {
                std::io::Error::other(format!("{} is not a number: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e),
        };
        let mut seq = Sequence {
            path,
            next: start,
            end: start,
        };
        seq.reserve()?;
        Ok(seq)
    }

    /// The next number, reserving a new block when the current one is used up.
    pub fn take(&mut self) -> std::io::Result<u64> {
        if self.next == self.end {
            self.reserve()?;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    /// Writes the end of a new block durably (write, sync, rename).
    fn reserve(&mut self) -> std::io::Result<()> {
        let end = self.end + BLOCK;
        let tmp = self.path.with_extension("seq.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{end}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.end = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_sequence_never_repeats_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequence::open(dir.path()).unwrap();
        assert_eq!((s.take().unwrap(), s.take().unwrap()), (1, 2));
        drop(s); // a crash: the rest of the block is skipped, never reused
        let mut again = Sequence::open(dir.path()).unwrap();
        assert_eq!(again.take().unwrap(), 1 + BLOCK);
    }

    #[test]
    fn a_used_up_block_reserves_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequence::open(dir.path()).unwrap();
        s.next = s.end; // as if the whole block were used
        assert_eq!(s.take().unwrap(), 1 + BLOCK);
        drop(s);
        assert_eq!(
            Sequence::open(dir.path()).unwrap().take().unwrap(),
            1 + 2 * BLOCK
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_restart_from_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        let err = Sequence::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a number"), "{err}");
    }
}
