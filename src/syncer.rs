//! A thread that makes a file's writes durable behind its writer.
//!
//! A writer that fsyncs before it goes on waits for the disk once per batch
//! and does none of its next batch's work meanwhile. Here the writer numbers
//! what it writes (1, 2, 3, …), asks a [`Syncer`] for a number, and goes on;
//! the syncer's thread syncs, back to back while numbers wait, and reports
//! after each sync how far everything is durable. One sync covers everything
//! written before it began, so the writes of a sync's duration share the
//! next one (group commit). The writer answers its clients for a number only
//! once it is reported durable.
//!
//! Used by a cached trader's journal ([`crate::trader::journal`]). The
//! warehouse's store commits through redb, which syncs inside its commit.

use std::sync::{Arc, Condvar, Mutex};

/// What a [`Syncer`] makes durable.
pub trait Durable: Send + Sync + 'static {
    /// Whether everything numbered up to `upto` is durable.
    fn is_synced(&self, upto: u64) -> bool;
    /// Makes everything numbered up to `upto` durable (and whatever else was
    /// written before the sync began); returns how far everything now is.
    fn sync(&self, upto: u64) -> Result<u64, String>;
}

/// What the sync thread reports after each sync: how far everything is
/// durable, or why the sync failed.
pub type Done = dyn Fn(Result<u64, String>) + Send + Sync;

/// A thread that syncs a [`Durable`] whenever a number waits for it. Started
/// by the first [`Syncer::want`], so a node that never writes has no
/// thread; stopped when dropped, once what was wanted is synced.
pub struct Syncer {
    target: Arc<dyn Durable>,
    /// Until the thread starts; then it holds it.
    done: Mutex<Option<Box<Done>>>,
    wanted: Arc<Wanted>,
}

/// What the thread is asked for: the newest number to sync, and whether to stop.
#[derive(Default)]
struct Wanted {
    want: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Syncer {
    /// A syncer of `target` that calls `done` after each sync.
    pub fn new(target: Arc<dyn Durable>, done: Box<Done>) -> Syncer {
        Syncer {
            target,
            done: Mutex::new(Some(done)),
            wanted: Arc::default(),
        }
    }

    /// Asks for everything numbered up to `upto` to be synced.
    pub fn want(&self, upto: u64) -> std::io::Result<()> {
        let start = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = start {
            let (target, wanted) = (self.target.clone(), self.wanted.clone());
            std::thread::Builder::new()
                .name("sync".into())
                .spawn(move || sync_loop(&*target, &wanted, &*done))?;
        }
        let mut want = self.wanted.want.lock().unwrap_or_else(|e| e.into_inner());
        want.0 = want.0.max(upto);
        self.wanted.changed.notify_one();
        Ok(())
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.wanted.want.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.wanted.changed.notify_one();
    }
}

fn sync_loop(target: &dyn Durable, wanted: &Wanted, done: &Done) {
    // What a sync failed for is not tried again until more is wanted (the
    // writer decides what a failure means: a rewrite, or the end).
    let mut failed_at = None;
    loop {
        let upto = {
            let mut want = wanted.want.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                // What is wanted is synced before the thread stops.
                if !target.is_synced(want.0) && failed_at != Some(want.0) {
                    break want.0;
                }
                if want.1 {
                    return;
                }
                want = wanted.changed.wait(want).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = target.sync(upto);
        failed_at = result.is_err().then_some(upto);
        done(result);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
    use std::time::Duration;

    /// A syncer of `target` whose reports come out of the receiver.
    pub(crate) fn reporting(target: Arc<dyn Durable>) -> (Syncer, Receiver<Result<u64, String>>) {
        let (tx, rx) = channel();
        let done = move |r| {
            let _ = tx.send(r);
        };
        (Syncer::new(target, Box::new(done)), rx)
    }

    /// Counts syncs; everything written is `written`.
    #[derive(Default)]
    struct Counter {
        written: AtomicU64,
        synced: AtomicU64,
        syncs: AtomicU64,
    }

    impl Durable for Counter {
        fn is_synced(&self, upto: u64) -> bool {
            self.synced.load(Ordering::SeqCst) >= upto
        }
        fn sync(&self, _: u64) -> Result<u64, String> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            let covers = self.written.load(Ordering::SeqCst);
            self.synced.fetch_max(covers, Ordering::SeqCst);
            Ok(covers)
        }
    }

    #[test]
    fn a_sync_is_made_for_what_is_wanted_reported_and_the_thread_stops_when_dropped() {
        let target = Arc::new(Counter::default());
        let (syncer, rx) = reporting(target.clone());
        let wait = Duration::from_secs(30);
        target.written.store(3, Ordering::SeqCst);
        syncer.want(2).unwrap();
        // The sync covers all that was written, not only what was asked.
        assert_eq!(rx.recv_timeout(wait), Ok(Ok(3)));
        assert!(target.is_synced(3));
        // What is durable already needs no sync.
        syncer.want(3).unwrap();
        target.written.store(4, Ordering::SeqCst);
        syncer.want(4).unwrap();
        assert_eq!(rx.recv_timeout(wait), Ok(Ok(4)));
        assert_eq!(target.syncs.load(Ordering::SeqCst), 2);
        drop(syncer);
        let end = rx.recv_timeout(wait);
        assert_eq!(end, Err(RecvTimeoutError::Disconnected));
    }

    /// Fails every sync, counting them.
    #[derive(Default)]
    struct Broken {
        syncs: AtomicU64,
    }

    impl Durable for Broken {
        fn is_synced(&self, _: u64) -> bool {
            false
        }
        fn sync(&self, _: u64) -> Result<u64, String> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Err("injected".into())
        }
    }

    #[test]
    fn a_failed_sync_is_reported_and_not_tried_again_until_more_is_wanted() {
        let target = Arc::new(Broken::default());
        let (syncer, rx) = reporting(target.clone());
        let wait = Duration::from_secs(30);
        syncer.want(1).unwrap();
        assert_eq!(rx.recv_timeout(wait), Ok(Err("injected".into())));
        syncer.want(1).unwrap();
        syncer.want(2).unwrap();
        assert_eq!(rx.recv_timeout(wait), Ok(Err("injected".into())));
        // Dropped, the thread ends without trying 2 again: the channel
        // closes after exactly two syncs (not a loop of retries).
        drop(syncer);
        assert_eq!(rx.recv_timeout(wait), Err(RecvTimeoutError::Disconnected));
        assert_eq!(target.syncs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn what_was_wanted_is_synced_before_the_thread_stops() {
        let target = Arc::new(Counter::default());
        let (syncer, rx) = reporting(target.clone());
        target.written.store(5, Ordering::SeqCst);
        syncer.want(5).unwrap();
        drop(syncer);
        let reports: Vec<_> = rx.iter().collect();
        assert_eq!(reports.last(), Some(&Ok(5)));
        assert!(target.is_synced(5));
    }

    #[test]
    fn a_syncer_never_asked_starts_no_thread() {
        let target = Arc::new(Counter::default());
        let (syncer, rx) = reporting(target);
        // The report channel's sender still sits in the syncer, unstarted.
        assert!(syncer.done.lock().unwrap().is_some());
        drop(syncer);
        assert_eq!(rx.recv(), Err(std::sync::mpsc::RecvError));
    }
}
