//! Exponential backoff with full jitter: how long to wait before trying
//! again something that keeps failing (the warehouse is down, no trader
//! answers), so that many nodes neither spin through their attempts in a
//! fraction of a second nor retry in lockstep.
//!
//! A pure value: the caller passes in its seeded random source, so a run
//! replays the same waits.

use std::time::Duration;

use rand::{Rng, RngExt};

/// The waits of one thing being retried.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits start around `base` and double with every failure, up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// One more failure: how long to wait before the next try, drawn
    /// uniformly from `[ceiling / 2, ceiling]`, where the ceiling doubles
    /// with every failure in a row up to `cap`. (Half the ceiling at least,
    /// so a wait is never near zero: that would be spinning.)
    pub fn fail(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_micros() as u64;
        half + Duration::from_micros(rng.random_range(0..=spread))
    }

    /// It worked: the next failure starts from `base` again.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_reset_on_success() {
        let mut rng = StdRng::seed_from_u64(7);
        let (base, cap) = (Duration::from_millis(20), Duration::from_secs(1));
        let mut b = Backoff::new(base, cap);
        let waits: Vec<Duration> = (0..10).map(|_| b.fail(&mut rng)).collect();
        for (i, w) in waits.iter().enumerate() {
            let ceiling = (base * (1 << i)).min(cap);
            assert!(*w >= ceiling / 2 && *w <= ceiling, "wait {i}: {w:?}");
        }
        assert!(waits[9] >= cap / 2, "capped, never spinning: {waits:?}");
        let total: Duration = waits.iter().sum();
        assert!(
            total >= Duration::from_secs(2),
            "ten failures take seconds, not milliseconds"
        );
        b.succeed();
        assert!(b.fail(&mut rng) <= base);
    }

    #[test]
    fn two_nodes_with_different_seeds_do_not_retry_in_lockstep() {
        let (mut a, mut b) = (StdRng::seed_from_u64(1), StdRng::seed_from_u64(2));
        let mut ba = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut bb = ba.clone();
        let wa: Vec<_> = (0..5).map(|_| ba.fail(&mut a)).collect();
        let wb: Vec<_> = (0..5).map(|_| bb.fail(&mut b)).collect();
        assert_ne!(wa, wb);
    }
}
