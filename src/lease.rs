//! A trader's lease: how long it may go on serving on the warehouse's last
//! word that it is a trader of the current epoch.
//!
//! A pure state machine, time passed in. The trader renews the lease every
//! heartbeat interval ([`crate::wire::Body::Renew`]); a lease counts from when
//! the renewal was *sent*, so it ends no later than the warehouse's record of
//! it (which counts from when it granted it), and the warehouse removes a
//! trader from the set only once its own record has ended (see
//! [`crate::warehouse::registry`]). A trader that stops for longer than its
//! lease (a pause, a suspended VM, a partition from the warehouse) finds the
//! lease over when it resumes and confirms its epoch with the warehouse
//! before it answers anything: if it was deposed meanwhile, it learns so
//! from the answer and serves nothing more.

use std::time::{Duration, Instant};

/// One trader's lease.
#[derive(Clone, Debug, Default)]
pub struct Lease {
    until: Option<Instant>,
}

impl Lease {
    /// A trader with no lease yet (it must confirm before serving).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the lease still runs at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// The warehouse granted `length` on a renewal sent at `sent`.
    pub fn granted(&mut self, sent: Instant, length: Duration) {
        let until = sent + length;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// The warehouse refused: this node is not a trader of the current
    /// epoch. The lease ends at once.
    pub fn revoke(&mut self) {
        self.until = None;
    }

    /// How long the lease still runs at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(350);

    #[test]
    fn a_lease_counts_from_when_the_renewal_was_sent() {
        let t0 = Instant::now();
        let mut l = Lease::new();
        assert!(!l.valid(t0), "no lease before the first renewal");
        // The answer took 100 ms: the lease still counts from t0.
        l.granted(t0, LEASE);
        assert!(l.valid(t0 + Duration::from_millis(100)));
        assert!(!l.valid(t0 + LEASE));
        assert_eq!(
            l.remaining(t0 + Duration::from_millis(300)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn a_late_answer_to_an_old_renewal_never_shortens_the_lease() {
        let t0 = Instant::now();
        let mut l = Lease::new();
        l.granted(t0 + Duration::from_millis(200), LEASE);
        l.granted(t0, LEASE);
        assert!(l.valid(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_trader_that_wakes_from_a_long_pause_holds_no_lease() {
        let t0 = Instant::now();
        let mut l = Lease::new();
        l.granted(t0, LEASE);
        assert!(!l.valid(t0 + Duration::from_secs(5)));
        l.granted(t0, LEASE);
        l.revoke();
        assert!(!l.valid(t0));
    }
}
