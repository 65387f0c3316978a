//! The nemesis: the faults one simulated run suffers, drawn from its seed.
//!
//! A [`Schedule`] is pure data: which nodes start late (and in what order),
//! and a sequence of faults, each struck at its time and undone after
//! `lasting` (the killed node restarted, the paused node let go, the cut
//! link healed). Faults follow one another: each starts after the one
//! before has been undone, so a heal never undoes another fault's cut, and
//! any window of the run holds at most one fault (plus the late starts).
//! [`draw`] makes the schedule from the seed, the market's shape and the
//! kinds of fault asked for; the same three give the same schedule.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::config::Config;
use crate::wire::NodeId;

/// A kind of fault (`bazaar sim --nemesis`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A trader killed for good (never more than all traders but one).
    Kill,
    /// A trader or the warehouse killed and started again on its durable
    /// state (the warehouse's books, a cached trader's journal).
    Restart,
    /// A node that makes no progress the world can see: nothing it sends
    /// leaves and nothing sent to it arrives until it is let go, then all
    /// of it at once.
    Pause,
    /// A node cut off from a group: a trader from the warehouse, a trader
    /// from the other traders, a client from everyone, the warehouse from
    /// everyone.
    Partition,
    /// A node's messages delayed, with jitter.
    Delay,
    /// A node's links dropping messages (the link goes down at random and
    /// comes back at random while the fault lasts).
    Loss,
    /// Peers and the warehouse started late, in a random order.
    LateStart,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Kill,
        Kind::Restart,
        Kind::Pause,
        Kind::Partition,
        Kind::Delay,
        Kind::Loss,
        Kind::LateStart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Restart => "restart",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Delay => "delay",
            Kind::Loss => "loss",
            Kind::LateStart => "late-start",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("no nemesis {s:?}: the kinds are {}", names.join(", "))
            })
    }
}

/// Parses `kill,pause,...` (or `none`, or `all`) into a set of kinds.
pub fn parse_kinds(list: &str) -> Result<BTreeSet<Kind>, String> {
    match list.trim() {
        "none" | "" => Ok(BTreeSet::new()),
        "all" => Ok(Kind::ALL.into_iter().collect()),
        list => list.split(',').map(|k| k.trim().parse()).collect(),
    }
}

/// Writes a set of kinds as `--nemesis` takes it.
pub fn kinds_arg(kinds: &BTreeSet<Kind>) -> String {
    if kinds.is_empty() {
        return "none".into();
    }
    let names: Vec<_> = kinds.iter().map(|k| k.name()).collect();
    names.join(",")
}

/// What one fault does, and to whom.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    Kill(NodeId),
    Restart(NodeId),
    Pause(NodeId),
    Partition {
        alone: NodeId,
        from: Vec<NodeId>,
    },
    Delay {
        node: NodeId,
        delay_ms: u64,
        jitter_ms: u64,
    },
    Loss {
        node: NodeId,
        percent: u32,
    },
}

impl What {
    pub fn kind(&self) -> Kind {
        match self {
            What::Kill(_) => Kind::Kill,
            What::Restart(_) => Kind::Restart,
            What::Pause(_) => Kind::Pause,
            What::Partition { .. } => Kind::Partition,
            What::Delay { .. } => Kind::Delay,
            What::Loss { .. } => Kind::Loss,
        }
    }

    /// The node the fault strikes (for a partition, the one cut off).
    pub fn victim(&self) -> NodeId {
        match self {
            What::Kill(n) | What::Restart(n) | What::Pause(n) => *n,
            What::Partition { alone, .. } => *alone,
            What::Delay { node, .. } | What::Loss { node, .. } => *node,
        }
    }
}

/// One fault: struck `at` (simulated time since the run began), undone
/// `lasting` later (a kill is never undone).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    pub at: Duration,
    pub lasting: Duration,
    pub what: What,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.as_millis();
        let lasting = self.lasting.as_millis();
        match &self.what {
            What::Kill(n) => write!(f, "{at:>6} ms  kill {n} for good"),
            What::Restart(n) => write!(f, "{at:>6} ms  kill {n}, restart after {lasting} ms"),
            What::Pause(n) => write!(f, "{at:>6} ms  pause {n} for {lasting} ms"),
            What::Partition { alone, from } => {
                let from: Vec<_> = from.iter().map(|n| n.to_string()).collect();
                write!(
                    f,
                    "{at:>6} ms  cut {alone} off from {} for {lasting} ms",
                    from.join(" ")
                )
            }
            What::Delay {
                node,
                delay_ms,
                jitter_ms,
            } => write!(
                f,
                "{at:>6} ms  delay {node}'s messages {delay_ms} ms (+ up to {jitter_ms} ms) for {lasting} ms"
            ),
            What::Loss { node, percent } => write!(
                f,
                "{at:>6} ms  drop {percent}% of {node}'s messages for {lasting} ms"
            ),
        }
    }
}

/// Everything the nemesis does to one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Schedule {
    /// Nodes that start late, and how late (the others start at once).
    pub late: Vec<(NodeId, Duration)>,
    /// The faults, in time order, one after another.
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// When `node` starts.
    pub fn start_of(&self, node: NodeId) -> Duration {
        self.late
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, d)| *d)
            .unwrap_or_default()
    }

    /// The latest start of any node.
    pub fn last_start(&self) -> Duration {
        self.late.iter().map(|(_, d)| *d).max().unwrap_or_default()
    }

    /// How many faults of each kind (late starts counted per node).
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::LateStart => self.late.len(),
            k => self.faults.iter().filter(|f| f.what.kind() == k).count(),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.late.is_empty() && self.faults.is_empty() {
            return writeln!(f, "  (no faults)");
        }
        let mut late = self.late.clone();
        late.sort_by_key(|(n, d)| (*d, *n));
        for (n, d) in late {
            writeln!(f, "  {:>6} ms  start {n}", d.as_millis())?;
        }
        for fault in &self.faults {
            writeln!(f, "  {fault}")?;
        }
        Ok(())
    }
}

/// The longest a late node waits to start.
pub const LATEST_START: Duration = Duration::from_millis(2500);

/// Draws the nemesis of run `seed` for the market `cfg`, with the fault
/// kinds in `kinds`. Faults fall within the market's `duration` (the time
/// every client trades), counted from the last late start.
pub fn draw(seed: u64, cfg: &Config, kinds: &BTreeSet<Kind>) -> Schedule {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4E45_4D45_5349_5300);
    let peers: Vec<NodeId> = (1..=cfg.market.peers).map(NodeId).collect();
    let traders = cfg.initial_traders();
    let clients: Vec<NodeId> = peers
        .iter()
        .copied()
        .filter(|p| !traders.contains(p))
        .collect();
    let mut everyone = vec![NodeId::WAREHOUSE];
    everyone.extend(&peers);

    let mut late = Vec::new();
    if kinds.contains(&Kind::LateStart) {
        for &n in &everyone {
            if rng.random_bool(0.4) {
                let ms = rng.random_range(0..=LATEST_START.as_millis() as u64);
                late.push((n, Duration::from_millis(ms)));
            }
        }
    }
    let choices: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::LateStart)
        .collect();
    let mut faults = Vec::new();
    if choices.is_empty() {
        return Schedule { late, faults };
    }
    let pick = |rng: &mut StdRng, from: &[NodeId]| from[rng.random_range(0..from.len())];
    let mut dead: BTreeSet<NodeId> = BTreeSet::new();
    let end = late.iter().map(|(_, d)| *d).max().unwrap_or_default() + cfg.market.duration;
    let mut t = Duration::from_millis(rng.random_range(200..=1500));
    loop {
        let lasting = Duration::from_millis(rng.random_range(100..=2500));
        if t + lasting > end {
            break;
        }
        let alive = |set: &[NodeId]| -> Vec<NodeId> {
            set.iter().copied().filter(|n| !dead.contains(n)).collect()
        };
        let live_traders = alive(&traders);
        let what = match choices[rng.random_range(0..choices.len())] {
            // At least one trader of the first set lives to the end.
            Kind::Kill if live_traders.len() > 1 => {
                let n = pick(&mut rng, &live_traders);
                dead.insert(n);
                What::Kill(n)
            }
            Kind::Kill => What::Restart(pick(&mut rng, &live_traders)),
            Kind::Restart => {
                let mut can = live_traders.clone();
                can.push(NodeId::WAREHOUSE);
                What::Restart(pick(&mut rng, &can))
            }
            Kind::Pause => What::Pause(pick(&mut rng, &alive(&everyone))),
            Kind::Partition => {
                partition(&mut rng, &live_traders, &alive(&clients), &alive(&everyone))
            }
            Kind::Delay => What::Delay {
                node: pick(&mut rng, &alive(&everyone)),
                delay_ms: rng.random_range(5..=300),
                jitter_ms: rng.random_range(0..=200),
            },
            Kind::Loss => What::Loss {
                node: pick(&mut rng, &alive(&everyone)),
                percent: rng.random_range(2..=30),
            },
            Kind::LateStart => unreachable!("filtered out of the choices above"),
        };
        faults.push(Fault {
            at: t,
            lasting,
            what,
        });
        t += lasting + Duration::from_millis(rng.random_range(100..=1200));
    }
    Schedule { late, faults }
}

/// One of the partitions the issue names, drawn among the live nodes: a
/// trader from the warehouse, a trader from the other traders, a client
/// from everyone, the warehouse from everyone.
fn partition(
    rng: &mut StdRng,
    traders: &[NodeId],
    clients: &[NodeId],
    everyone: &[NodeId],
) -> What {
    let others =
        |n: NodeId| -> Vec<NodeId> { everyone.iter().copied().filter(|o| *o != n).collect() };
    loop {
        match rng.random_range(0..4) {
            0 if !traders.is_empty() => {
                let t = traders[rng.random_range(0..traders.len())];
                return What::Partition {
                    alone: t,
                    from: vec![NodeId::WAREHOUSE],
                };
            }
            1 if traders.len() > 1 => {
                let t = traders[rng.random_range(0..traders.len())];
                let from = traders.iter().copied().filter(|o| *o != t).collect();
                return What::Partition { alone: t, from };
            }
            2 if !clients.is_empty() => {
                let c = clients[rng.random_range(0..clients.len())];
                return What::Partition {
                    alone: c,
                    from: others(c),
                };
            }
            3 => {
                return What::Partition {
                    alone: NodeId::WAREHOUSE,
                    from: others(NodeId::WAREHOUSE),
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_toml("[market]\nduration = \"8s\"\n").unwrap()
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_another_seed_another() {
        let all = parse_kinds("all").unwrap();
        assert_eq!(draw(7, &cfg(), &all), draw(7, &cfg(), &all));
        assert_ne!(draw(7, &cfg(), &all), draw(8, &cfg(), &all));
    }

    #[test]
    fn faults_follow_one_another_within_the_run_and_a_trader_always_lives() {
        let all = parse_kinds("all").unwrap();
        let cfg = cfg();
        for seed in 0..500 {
            let s = draw(seed, &cfg, &all);
            let end = s.last_start() + cfg.market.duration;
            for pair in s.faults.windows(2) {
                assert!(
                    pair[0].at + pair[0].lasting < pair[1].at,
                    "seed {seed}: {s}"
                );
            }
            for f in &s.faults {
                assert!(f.at + f.lasting <= end, "seed {seed}: {s}");
            }
            let killed: BTreeSet<_> = s
                .faults
                .iter()
                .filter_map(|f| match f.what {
                    What::Kill(n) => Some(n),
                    _ => None,
                })
                .collect();
            assert!(
                killed.len() < cfg.initial_traders().len(),
                "seed {seed}: {s}"
            );
            // Nothing strikes a node killed for good, after its death.
            for (i, f) in s.faults.iter().enumerate() {
                if let What::Kill(n) = f.what {
                    assert!(s.faults[i + 1..].iter().all(|g| g.what.victim() != n));
                }
            }
        }
    }

    #[test]
    fn only_the_kinds_asked_for_are_drawn() {
        let cfg = cfg();
        let kinds = parse_kinds("pause,delay").unwrap();
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let s = draw(seed, &cfg, &kinds);
            assert!(s.late.is_empty());
            seen.extend(s.faults.iter().map(|f| f.what.kind()));
        }
        assert_eq!(seen, kinds);
        assert_eq!(draw(1, &cfg, &BTreeSet::new()), Schedule::default());
    }

    #[test]
    fn kinds_parse_and_print_as_the_flag_takes_them() {
        let k = parse_kinds("kill, late-start").unwrap();
        assert_eq!(kinds_arg(&k), "kill,late-start");
        assert_eq!(parse_kinds(&kinds_arg(&k)).unwrap(), k);
        assert!(
            parse_kinds("kill,fire")
                .unwrap_err()
                .contains("no nemesis \"fire\"")
        );
        assert_eq!(parse_kinds("all").unwrap().len(), Kind::ALL.len());
    }
}
