//! The Lamport clock every node stamps its messages with.
//!
//! The document orders a cache flush "by logic clock"; we keep that clock on
//! every message, not only on flushes: tick on send, `max(local, received) + 1`
//! on receive. Ties between equal stamps are broken by node id wherever a total
//! order is needed (see [`crate::wire::Stamp`]).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A Lamport timestamp. Compared as a number, never as a string.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lamport(pub u64);

impl std::fmt::Display for Lamport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "L{}", self.0)
    }
}

/// A node's Lamport clock, shared by all of its tasks.
#[derive(Debug, Default)]
pub struct Clock {
    now: AtomicU64,
}

impl Clock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current time, without advancing it.
    pub fn now(&self) -> Lamport {
        Lamport(self.now.load(Ordering::SeqCst))
    }

    /// Advances the clock for a send (or any local event) and returns the new time.
    pub fn tick(&self) -> Lamport {
        self.advance(|t| t.saturating_add(1))
    }

    /// Merges a received time: the clock becomes `max(local, seen) + 1`.
    pub fn observe(&self, seen: Lamport) -> Lamport {
        self.advance(|t| t.max(seen.0).saturating_add(1))
    }

    fn advance(&self, f: impl Fn(u64) -> u64) -> Lamport {
        let prev = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(f(t)))
            .unwrap_or_else(|t| t);
        let next = f(prev);
        debug_assert!(next >= prev, "a Lamport clock never goes backwards");
        Lamport(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeId;

    #[test]
    fn tick_advances_by_one() {
        let c = Clock::new();
        assert_eq!(c.tick(), Lamport(1));
        assert_eq!(c.tick(), Lamport(2));
        assert_eq!(c.now(), Lamport(2));
    }

    #[test]
    fn observe_takes_max_plus_one() {
        let c = Clock::new();
        c.tick();
        assert_eq!(c.observe(Lamport(10)), Lamport(11));
        // An older stamp still advances the clock by one, never backwards.
        assert_eq!(c.observe(Lamport(3)), Lamport(12));
    }

    #[test]
    fn a_hostile_huge_stamp_saturates_instead_of_wrapping() {
        let c = Clock::new();
        assert_eq!(c.observe(Lamport(u64::MAX)), Lamport(u64::MAX));
        assert_eq!(c.tick(), Lamport(u64::MAX));
    }

    #[test]
    fn clocks_compare_as_numbers_not_strings() {
        // The document's program sorted "10" before "9".
        let mut stamps = [(Lamport(10), NodeId(1)), (Lamport(9), NodeId(2))];
        stamps.sort();
        assert_eq!(stamps[0].0, Lamport(9));
    }

    #[test]
    fn concurrent_ticks_are_all_distinct() {
        let c = std::sync::Arc::new(Clock::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).map(|_| c.tick().0).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }
}
