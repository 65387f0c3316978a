//! Seeds: one judged ([`run_seed`]), one replayed into a run directory for
//! the report ([`replay`]), many summed up ([`sweep`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::check::{self, Verdict};
use crate::config::{Config, ConfigError, FaultKind};
use crate::history::History;
use crate::membership::Happening;
use crate::report::{Report, Trading};
use crate::rundir::RunDir;
use crate::sim::nemesis::{self, Kind, Schedule};
use crate::sim::{Options, world};
use crate::warehouse::store::Store;
use crate::wire::NodeId;

/// One seed, run and judged.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub cfg: Config,
    pub schedule: Schedule,
    /// The checker's verdicts (empty if the simulation itself failed).
    pub verdicts: Vec<Verdict>,
    /// The simulation failed: a node's code returned an error, or the
    /// market did not stop (a hang).
    pub error: Option<String>,
    /// Requests completed (answered, refused or failed).
    pub requests: u64,
    /// The longest from a fault to the warehouse's commit of the set
    /// without its victim.
    pub slowest_failover: Option<Duration>,
    pub ran: world::Ran,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.error.is_some() || !check::all_ok(&self.verdicts)
    }

    /// The invariants that failed, by name (`simulation` for a failed run).
    pub fn violations(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .verdicts
            .iter()
            .filter(|v| !v.ok)
            .map(|v| v.invariant.clone())
            .collect();
        if self.error.is_some() {
            v.push("simulation".into());
        }
        v
    }
}

impl Outcome {
    /// What a person needs to chase a failed seed: the seed, its market,
    /// its nemesis, what broke, and the one command that replays it.
    pub fn explain(&self, opts: &Options, kept: &Path) -> String {
        let m = &self.cfg.market;
        let mut s = format!(
            "seed {} failed: {}\n\nmarket: {} peers, {} traders, {:?} mode, {} s of trading\nnemesis:\n{}",
            self.seed,
            self.violations().join(", "),
            m.peers,
            m.traders,
            m.mode,
            m.duration.as_secs_f64(),
            self.schedule
        );
        if let Some(e) = &self.error {
            s += &format!("\n{e}\n");
        }
        for v in self.verdicts.iter().filter(|v| !v.ok) {
            s += &format!("\n{}: {}\n", v.invariant, v.detail);
        }
        s += &format!(
            "\nits run directory: {}\nreplay it, with its report:\n  {}\n",
            kept.display(),
            opts.replay_command(self.seed, &format!("runs/sim-{}", self.seed))
        );
        s
    }
}

/// Runs seed `seed` of `opts` in `dir` (made if missing) and judges it.
pub fn run_seed(seed: u64, opts: &Options, dir: &Path) -> Result<Outcome, ConfigError> {
    let cfg = crate::sim::shape::draw(seed, opts.fixed())?;
    let schedule = nemesis::draw(seed, &cfg, &opts.nemesis);
    let rd = RunDir {
        root: dir.to_path_buf(),
    };
    let _broken = crate::warehouse::broken::set(opts.broken);
    let (ran, error) = match world::run(seed, &cfg, &schedule, &rd) {
        Ok(ran) => (ran, None),
        Err(e) => (world::Ran::default(), Some(e)),
    };
    let mut out = Outcome {
        seed,
        cfg,
        schedule,
        verdicts: Vec::new(),
        error,
        requests: 0,
        slowest_failover: None,
        ran,
    };
    if out.error.is_none() {
        match judge(&out.cfg, &rd) {
            Ok((verdicts, history)) => {
                out.verdicts = verdicts;
                out.requests = history.requests.len() as u64;
                out.slowest_failover = slowest_failover(&history);
            }
            Err(e) => out.error = Some(format!("cannot judge the run: {e:#}")),
        }
    }
    Ok(out)
}

/// The checker over a run directory's histories, store and journals.
pub(super) fn judge(cfg: &Config, dir: &RunDir) -> anyhow::Result<(Vec<Verdict>, History)> {
    let history = History::read_dir(&dir.history())?;
    let store = Store::snapshot(&dir.data_of(NodeId::WAREHOUSE))?;
    let unflushed = crate::rundir::read_unflushed(cfg, dir)?;
    Ok((check::check(cfg, &history, &store, &unflushed), history))
}

/// The longest from a fault on a trader to the warehouse's commit of a set
/// without it (a detection's record is written once the commit is made).
fn slowest_failover(history: &History) -> Option<Duration> {
    let faults: Vec<(u64, NodeId)> = history
        .failover
        .iter()
        .filter_map(|r| match r.what {
            Happening::Fault { fault, victim } if fault != FaultKind::Restart => {
                Some((r.wall_us, victim))
            }
            _ => None,
        })
        .collect();
    history
        .failover
        .iter()
        .filter_map(|r| match &r.what {
            Happening::Detected { dead, .. } => faults
                .iter()
                .rev()
                .find(|(at, victim)| victim == dead && *at <= r.wall_us)
                .map(|(at, _)| Duration::from_micros(r.wall_us - at)),
            _ => None,
        })
        .max()
}

/// Replays seed `seed` into the run directory `dir` (which must not hold a
/// run yet) and writes its report there, as `bazaar run` does.
pub fn replay(seed: u64, opts: &Options, dir: &Path) -> anyhow::Result<(Outcome, Report)> {
    if dir.join("config.toml").exists() {
        anyhow::bail!(
            "{} already holds a run; name a new directory",
            dir.display()
        );
    }
    let out = run_seed(seed, opts, dir)?;
    if let Some(e) = &out.error {
        eprintln!("warning: {e}");
    }
    let rd = RunDir {
        root: dir.to_path_buf(),
    };
    let history = History::read_dir(&rd.history())?;
    let final_traders = history
        .failover
        .iter()
        .rev()
        .find_map(|r| match &r.what {
            Happening::Committed { view, .. } => Some(view.traders.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let trading = Trading {
        elapsed: Duration::from_micros(out.ran.stopped_us.saturating_sub(out.ran.began_us)),
        began_us: out.ran.began_us,
        stopped_us: out.ran.stopped_us,
        final_traders,
        interrupted: false,
        degraded: Vec::new(),
    };
    let report = crate::report::finish(&out.cfg, &rd, &trading)?;
    Ok((out, report))
}

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub opts: Options,
    pub from: u64,
    pub seeds: u64,
    pub jobs: usize,
    /// Run every seed even after a violation (else stop at the first).
    pub keep_going: bool,
    /// Where each seed's run directory is made (removed unless it failed).
    pub scratch: PathBuf,
}

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub seeds_run: u64,
    pub faults: BTreeMap<Kind, u64>,
    pub requests: u64,
    /// Seeds that broke each invariant.
    pub violations: BTreeMap<String, u64>,
    /// The slowest failover, and its seed.
    pub slowest_failover: Option<(Duration, u64)>,
    pub elapsed: Duration,
    /// Every failed seed (the lowest first), with its run directory.
    pub failures: Vec<(Outcome, PathBuf)>,
    /// Seeds whose drawn market the config refused (a bug of the shape).
    pub shape_errors: Vec<(u64, String)>,
}

impl Tally {
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.shape_errors.is_empty()
    }

    fn add(&mut self, out: &Outcome) {
        self.seeds_run += 1;
        for k in Kind::ALL {
            *self.faults.entry(k).or_default() += out.schedule.count(k) as u64;
        }
        self.requests += out.requests;
        for v in out.violations() {
            *self.violations.entry(v).or_default() += 1;
        }
        if let Some(d) = out.slowest_failover
            && self.slowest_failover.is_none_or(|(s, _)| d > s)
        {
            self.slowest_failover = Some((d, out.seed));
        }
    }

    pub fn seeds_per_second(&self) -> f64 {
        self.seeds_run as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seeds run          {}", self.seeds_run)?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let faults = if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        };
        writeln!(f, "faults injected    {faults}")?;
        writeln!(f, "requests           {}", self.requests)?;
        if self.violations.is_empty() {
            writeln!(f, "violations         0")?;
        } else {
            let v: Vec<String> = self
                .violations
                .iter()
                .map(|(k, n)| format!("{k} in {n} seeds"))
                .collect();
            writeln!(f, "violations         {}", v.join(", "))?;
        }
        match self.slowest_failover {
            Some((d, seed)) => {
                writeln!(f, "slowest failover   {} ms (seed {seed})", d.as_millis())?
            }
            None => writeln!(f, "slowest failover   none (no trader was removed)")?,
        }
        write!(
            f,
            "seeds per second   {:.2} ({:.1} s in all)",
            self.seeds_per_second(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs the seeds of `sweep` on its jobs' threads (each seed on one thread,
/// whole), calling `progress` after each. Stops after the first failed seed
/// unless `keep_going` (seeds already started finish).
pub fn sweep(sweep: &Sweep, progress: impl Fn(&Tally) + Sync) -> Result<Tally, ConfigError> {
    // A shape the flags make impossible is refused before any thread starts.
    crate::sim::shape::draw(sweep.from, sweep.opts.fixed())?;
    let started = Instant::now();
    let next = AtomicU64::new(sweep.from);
    let stop = AtomicBool::new(false);
    let tally = Mutex::new(Tally::default());
    let end = sweep.from.saturating_add(sweep.seeds);
    std::thread::scope(|s| {
        for _ in 0..sweep.jobs.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let dir = sweep.scratch.join(format!("seed-{seed}"));
                    let _ = std::fs::remove_dir_all(&dir);
                    let out = run_seed(seed, &sweep.opts, &dir);
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    let out = match out {
                        Ok(out) => out,
                        Err(e) => {
                            // A shape the bounds should never draw: a bug of ours.
                            t.shape_errors.push((seed, e.0));
                            stop.store(!sweep.keep_going, Ordering::Relaxed);
                            continue;
                        }
                    };
                    t.add(&out);
                    if out.failed() {
                        t.failures.push((out, dir));
                        if !sweep.keep_going {
                            stop.store(true, Ordering::Relaxed);
                        }
                    } else {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    t.elapsed = started.elapsed();
                    progress(&t);
                }
            });
        }
    });
    let mut t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    t.failures.sort_by_key(|(o, _)| o.seed);
    t.elapsed = started.elapsed();
    Ok(t)
}
