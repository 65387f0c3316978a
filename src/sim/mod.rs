//! The deterministic simulator behind `bazaar sim`: the real nodes on a
//! simulated network and clock, a seeded nemesis, the same checker as for
//! real runs, many seeds.
//!
//! Like FoundationDB's simulator and TigerBeetle's VOPR: one seed draws a
//! market ([`shape`]) and the faults it suffers ([`nemesis`]), runs every
//! node of it in one thread on turmoil's network and clock ([`world`]), and
//! judges the histories and the warehouse's store with [`crate::check`]. The
//! same seed gives the same run, byte for byte, on any thread: every random
//! choice of the nodes and of the network comes from the seed, storage work
//! runs inline ([`crate::node::IoMode::Inline`]), and the histories are
//! stamped with simulated wall time. [`sweep`] runs many seeds on `jobs`
//! threads and sums them up.
//!
//! The nemesis and the shape are pure and always built (the command line
//! names their kinds); the runner needs turmoil, which turns on tokio's
//! `test-util` clock for the whole build it is in, so it is built only with
//! the `sim` feature (and in the crate's own tests), never into the
//! production binary.

pub mod nemesis;
pub mod shape;

#[cfg(any(test, feature = "sim"))]
mod run;
#[cfg(any(test, feature = "sim"))]
mod world;

#[cfg(any(test, feature = "sim"))]
pub use run::{Outcome, Sweep, Tally, replay, run_seed, sweep};

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::config::Mode;

/// What every seed of a sweep shares: the mode, the nemesis's kinds, and
/// what the command line fixes of the market's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    pub nemesis: BTreeSet<nemesis::Kind>,
    pub peers: Option<u32>,
    pub traders: Option<u32>,
    /// A deliberately broken warehouse (tests of the simulator itself).
    #[cfg(any(test, feature = "sim"))]
    pub broken: Broken,
}

/// A deliberately broken warehouse (the simulator's tests of itself).
#[cfg(any(test, feature = "sim"))]
pub use crate::warehouse::broken::Broken;

impl Options {
    /// The command that replays seed `seed` of these options into `dir`.
    pub fn replay_command(&self, seed: u64, dir: &str) -> String {
        let mode = match self.mode {
            Mode::Strong => "strong",
            Mode::Cached => "cached",
            Mode::Escrow => "escrow",
        };
        let mut cmd = format!(
            "cargo run --release --features sim -- sim --seed {seed} --mode {mode} --nemesis {}",
            nemesis::kinds_arg(&self.nemesis)
        );
        if let Some(p) = self.peers {
            cmd += &format!(" --peers {p}");
        }
        if let Some(t) = self.traders {
            cmd += &format!(" --traders {t}");
        }
        cmd + &format!(" --run-dir {dir}")
    }

    pub fn fixed(&self) -> shape::Fixed {
        shape::Fixed {
            mode: self.mode,
            peers: self.peers,
            traders: self.traders,
        }
    }
}
