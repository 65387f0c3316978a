//! The market one simulated run trades in, drawn from its seed.
//!
//! Within these bounds (the flags fix some of them):
//! - peers 3..=8 (`--peers`), traders 1..=3 leaving at least two other peers
//!   (`--traders`); buyers 1 or more, sellers 1 or more, the rest idle;
//! - 1..=3 products, each with an opening stock of 0..=40;
//! - sellers sell 1..=5 items every 50..=300 ms; buyers ask for 1..=8 items
//!   and pause 10..=150 ms between requests;
//! - clients trade for 3..=6 s; a request may take 1..=2 s;
//! - in cached mode the cache expires after 200..=1500 ms and is flushed
//!   every 1..=8 requests or 100..=500 ms;
//! - a dead trader is replaced by a promoted peer in half the runs;
//! - elections, heartbeats and leases keep the defaults (`bazaar config`).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::{Config, ConfigError, Mode};

/// What the command line fixes of the market; the rest is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixed {
    pub mode: Mode,
    pub peers: Option<u32>,
    pub traders: Option<u32>,
}

/// The config of run `seed`: a valid market within the bounds above, or
/// the reason `fixed` cannot make one (too few peers for the traders).
pub fn draw(seed: u64, fixed: Fixed) -> Result<Config, ConfigError> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5348_4150_4500);
    let peers = fixed.peers.unwrap_or_else(|| rng.random_range(3..=8));
    let traders = match fixed.traders {
        Some(t) => t,
        None => rng.random_range(1..=3.min(peers.saturating_sub(2)).max(1)),
    };
    if peers < traders + 2 {
        return Err(ConfigError(format!(
            "a simulated market needs a buyer and a seller beside its traders: {peers} peers cannot hold {traders} traders and 2 clients"
        )));
    }
    let clients = peers - traders;
    let buyers = rng.random_range(1..clients);
    let sellers = rng.random_range(1..=clients - buyers);
    let mode = match fixed.mode {
        Mode::Strong => "strong",
        Mode::Cached => "cached",
        Mode::Escrow => "escrow",
    };
    let mut toml = format!(
        "[market]\nname = \"sim-{seed}\"\npeers = {peers}\ntraders = {traders}\nmode = \"{mode}\"\n\
         duration = \"{}ms\"\nseed = {seed}\nrequest_timeout = \"{}ms\"\nreplace_dead_traders = {}\n\
         [roles]\nbuyers = {buyers}\nsellers = {sellers}\n\
         [workload.seller]\nquantity = {}\ninterval = \"{}ms\"\n\
         [workload.buyer]\nmax_quantity = {}\npause = \"{}ms\"\n\
         [cache]\nttl = \"{}ms\"\nflush_every = {}\nflush_interval = \"{}ms\"\n",
        rng.random_range(3000..=6000),
        rng.random_range(1000..=2000),
        rng.random_bool(0.5),
        rng.random_range(1..=5),
        rng.random_range(50..=300),
        rng.random_range(1..=8),
        rng.random_range(10..=150),
        rng.random_range(200..=1500),
        rng.random_range(1..=8),
        rng.random_range(100..=500),
    );
    for p in 0..rng.random_range(1..=3) {
        toml += &format!(
            "[[products]]\nname = \"p{p}\"\nstock = {}\n",
            rng.random_range(0..=40)
        );
    }
    Config::from_toml(&toml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(mode: Mode) -> Fixed {
        Fixed {
            mode,
            peers: None,
            traders: None,
        }
    }

    #[test]
    fn every_seed_draws_a_valid_market_within_the_bounds() {
        for seed in 0..500 {
            let cfg = draw(seed, fixed(Mode::Cached)).unwrap();
            let m = &cfg.market;
            assert!((3..=8).contains(&m.peers), "seed {seed}");
            assert!(m.traders >= 1 && m.traders + 2 <= m.peers, "seed {seed}");
            assert_eq!(m.mode, Mode::Cached);
            assert!(!cfg.products.is_empty() && cfg.products.len() <= 3);
            assert_eq!(draw(seed, fixed(Mode::Cached)).unwrap(), cfg);
        }
    }

    #[test]
    fn the_flags_fix_the_shape_and_an_impossible_one_is_refused() {
        let f = Fixed {
            mode: Mode::Strong,
            peers: Some(12),
            traders: Some(4),
        };
        let cfg = draw(3, f).unwrap();
        assert_eq!((cfg.market.peers, cfg.market.traders), (12, 4));
        let f = Fixed {
            peers: Some(3),
            traders: Some(2),
            ..f
        };
        assert!(draw(3, f).unwrap_err().0.contains("cannot hold 2 traders"));
    }
}
