//! Deliberately broken warehouses, for the simulator's tests of itself:
//! with a switch set, the warehouse forgets what it applied (every retry is
//! applied again) or fences nothing (any trader of any epoch is served and
//! leased). The switch is per thread, set only by the simulator's runner on
//! the thread that runs a whole simulated market, and exists only in tests
//! and `sim` builds: the production warehouse has no switch to turn.

use std::cell::Cell;

/// What is broken.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Broken {
    #[default]
    No,
    /// Each client's last request id and each flushed id are forgotten: a
    /// retry is applied twice.
    Dedupe,
    /// Nothing is fenced: requests, flushes and lease renewals are taken
    /// from any trader of any epoch, a proposal is committed on top of
    /// whatever is current (no compare-and-set), and a trader is removed
    /// without waiting for its lease to end.
    Fencing,
}

thread_local! {
    static BROKEN: Cell<Broken> = const { Cell::new(Broken::No) };
}

/// Breaks the warehouses run on this thread until the guard drops.
pub fn set(broken: Broken) -> Guard {
    BROKEN.with(|b| b.set(broken));
    Guard(std::marker::PhantomData)
}

/// While alive, this thread's warehouses are broken.
pub struct Guard(std::marker::PhantomData<*const ()>);

impl Drop for Guard {
    fn drop(&mut self) {
        BROKEN.with(|b| b.set(Broken::No));
    }
}

/// Whether this thread's warehouse is broken in `way`.
pub fn is(way: Broken) -> bool {
    BROKEN.with(Cell::get) == way
}
