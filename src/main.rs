//! The `bazaar` command line: run a market, run one node, run one of the
//! document's experiments, check a run, read a warehouse's stock, print the
//! default config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use bazaar::clock::Clock;
use bazaar::config::{Config, ConfigError, Mode, Role};
use bazaar::launch::Line;
use bazaar::market::RunDir;
use bazaar::net::{Tcp, Transport};
use bazaar::node::{AddressBook, IoMode, NodeContext, ServeOptions};
use bazaar::report::Status;
use bazaar::report::open::{RunDirError, load_config as load_config_file};
use bazaar::warehouse::store::Store;
use bazaar::wire::NodeId;

/// The long help's closing part: the exit codes and the environment.
const AFTER_LONG_HELP: &str = "\
Exit codes:
  0    ok: the run finished and every invariant held
  1    an invariant failed (the summary, report.json and `bazaar check` name it)
  2    bad usage, a bad config, or a run directory that is missing, unreadable
       or still running
  3    degraded: every invariant held, but the run did not go as configured (a
       node died on its own, a death was detected that no fault caused, the
       warehouse was unreachable for a while);
       report.json's `degraded` says why
  4    bazaar itself failed (a node did not start, a file could not be written)
  130  interrupted by Ctrl-C (the market was stopped in order and reported)
  When several apply, the first of 1, 130, 3 is the one returned.

Environment:
  BAZAAR_LOG  what the logs show: a level (error, warn, info, debug, trace) or
              a filter such as `warn,bazaar::peer=debug` (tracing's EnvFilter).
              Default `info` for `bazaar node` (and so for each node of `bazaar
              run`, in RUN_DIR/logs/), `warn` for the other commands' stderr.
              `debug` (or `info,bazaar::trace=debug`) also logs each message
              a node sends and receives, with its Lamport stamps.";

/// Exit codes (the long help's table).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Exit {
    Ok = 0,
    InvariantFailed = 1,
    BadInput = 2,
    Degraded = 3,
    Failed = 4,
    Interrupted = 130,
}

impl From<Status> for Exit {
    fn from(s: Status) -> Exit {
        match s {
            Status::Ok => Exit::Ok,
            Status::InvariantFailed => Exit::InvariantFailed,
            Status::Interrupted => Exit::Interrupted,
            Status::Degraded => Exit::Degraded,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// `--mode`: the consistency modes, as the config's `[market] mode`.
#[derive(Copy, Clone, Debug, ValueEnum)]
enum ModeArg {
    /// The document's cache-less trader: every request applied at the warehouse, then answered; never oversells
    Strong,
    /// The document's trader cache: answered from the trader's copy, flushed to the warehouse in batches; may oversell
    Cached,
    /// Ours: each trader sells within a share of the stock the warehouse escrows to it (being built)
    Escrow,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Strong => Mode::Strong,
            ModeArg::Cached => Mode::Cached,
            ModeArg::Escrow => Mode::Escrow,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "bazaar",
    version,
    about = "A distributed trading market: warehouse, traders, buyers, sellers.",
    after_long_help = AFTER_LONG_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum NetnsCmd {
    /// Remove the namespaces (with their links and rules) of `bazaar run
    /// --netns` runs whose launcher is gone (killed outright, or crashed).
    Clean,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole market on this machine (one process per node) and print its report.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Run {
        /// Market config (TOML); fields it leaves out take the defaults (`bazaar config`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long buyers and sellers trade, overriding [market] duration: "3s", "500ms", "2m".
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// The seed every random choice derives from, overriding [market] seed.
        #[arg(long)]
        seed: Option<u64>,
        /// The consistency mode, overriding [market] mode.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Where run directories are made (`<DIR>/<timestamp>-<name>/`, and `<DIR>/latest` links the newest).
        #[arg(long, value_name = "DIR", default_value = "runs")]
        runs_dir: PathBuf,
        /// Run every node as a task tree in this one process and runtime (real
        /// loopback TCP between them), not a process per node: for large
        /// markets. Faults other than wedge are refused.
        #[arg(long)]
        in_process: bool,
        /// With --in-process: the nodes talk over in-memory pipes instead of
        /// loopback TCP, so connections hold no file descriptors (a 1,000-peer
        /// market needs about 40,000 on loopback).
        #[arg(long, requires = "in_process")]
        memory: bool,
        /// Run each node in a network namespace of its own, joined by a bridge;
        /// partitions and loss become nftables rules (needs root and nftables;
        /// see README, "Network faults").
        #[arg(long)]
        netns: bool,
    },
    /// Network namespaces of `bazaar run --netns`.
    Netns {
        #[command(subcommand)]
        action: NetnsCmd,
    },
    /// Measure the market against a one-hop echo over bazaar's own transport:
    /// throughput, latency and CPU per request in each mode, as ratios to the echo,
    /// beside the disk's write-and-fdatasync latency.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Bench {
        /// The modes to measure (default: strong and cached).
        #[arg(long, value_enum)]
        mode: Vec<ModeArg>,
        /// Concurrent clients, each a buyer (or seller) peer with one request in flight.
        #[arg(long, default_value_t = 32)]
        clients: u32,
        /// Measure this many answered requests per run.
        #[arg(long, conflicts_with = "duration")]
        requests: Option<u64>,
        /// How long each run trades (default 10s; 2s with --quick).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Short runs (2 s each): the whole bench in under a minute, for CI.
        #[arg(long)]
        quick: bool,
        /// Run each market in this process (see `run --in-process`).
        #[arg(long)]
        in_process: bool,
        /// Leave out the half-load runs.
        #[arg(long)]
        no_half_load: bool,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Show the change against an earlier `--json` FILE.
        #[arg(long, value_name = "FILE")]
        compare: Option<PathBuf>,
        /// Where the markets' run directories go (default: a temporary
        /// directory, removed at the end).
        #[arg(long, value_name = "DIR")]
        runs_dir: Option<PathBuf>,
    },
    /// Run one node in this process, with addresses from the config's [network].
    #[command(after_long_help = AFTER_LONG_HELP)]
    Node {
        /// Node id: 0 is the warehouse, peers are 1..=peers.
        #[arg(long)]
        id: u32,
        /// Market config (TOML), the same for every node; without it, the defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (default: the node's [network] address).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory for this node's data and history (default: ./node-<id>,
        /// or RUN_DIR/data/<node> with --run-dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A run directory shared by every node of a hand-started market (on
        /// one host, or a shared filesystem): each node writes its history to
        /// RUN_DIR/history and its data to RUN_DIR/data/<node>, the warehouse
        /// writes RUN_DIR/config.toml; then `bazaar check RUN_DIR` and
        /// `bazaar report RUN_DIR` work on it once the nodes have stopped.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Take the address book and stop signals on stdin (set by `bazaar run`).
        #[arg(long, hide = true)]
        launched: bool,
        /// Threads of the node's runtime: 1 (the default) is the
        /// single-thread runtime, 0 one worker per core (see the README's
        /// performance section).
        #[arg(long, hide = true, value_parser = clap::value_parser!(usize))]
        threads: Option<usize>,
    },
    /// Run one of the document's experiments (every cell a market run) and
    /// write its results, table and plots to runs/experiment-<name>-<timestamp>/.
    Experiment {
        /// ratio (buyer:seller against oversells and shipped), cache (cached
        /// against strong) or failover (a trader killed part way).
        #[arg(value_enum)]
        name: bazaar::experiment::Experiment,
        /// Divide every interval and the duration of the document's timings
        /// by F (e.g. 10: 6.6 s of trading instead of 66 s).
        #[arg(long, default_value = "1", value_parser = bazaar::experiment::parse_time_scale)]
        time_scale: f64,
        /// Seeds per cell; the table gives the mean and spread, the plots error bars.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
        /// Buyer:seller ratios, e.g. 1:5,1:1,5:1 (default: the document's
        /// 1:3,2:2,3:1 for ratio, 2:2 for cache and failover).
        #[arg(long, value_parser = bazaar::experiment::parse_ratios)]
        ratios: Option<bazaar::experiment::Ratios>,
        /// Cells run at once (each is a whole market of processes).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
        jobs: u64,
        /// The first seed; --repeat K uses seed, seed+1, ..., seed+K-1.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where the experiment's directory is made.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Check a finished run directory against the invariants (exit 1 if one fails); writes nothing.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Check {
        /// A run directory, e.g. runs/latest.
        run_dir: PathBuf,
        /// Print the verdicts as JSON (`ok`, `status`, `checks`, `degraded`, `interrupted`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a run directory's report.json, plots and report.html, and print its summary.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Report {
        /// A run directory, e.g. runs/latest.
        run_dir: PathBuf,
        /// Print only the path of report.html, to open in a browser: `xdg-open "$(bazaar report runs/latest --open)"`.
        #[arg(long)]
        open: bool,
    },
    /// Draw a Lamport space-time diagram of a window of a run as SVG: one
    /// vertical line per node, an arrow per message (kind, message number,
    /// Lamport stamps), faults, detections and epoch changes marked.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Diagram {
        /// A run directory, e.g. runs/latest.
        run_dir: PathBuf,
        /// Where the window starts, after the run's first history event (the
        /// report's time axis): "1.5s", "300ms", or seconds ("1.5").
        #[arg(long, default_value = "0s", value_parser = parse_time)]
        from: Duration,
        /// Where the window ends (default: 1 s after --from).
        #[arg(long, value_parser = parse_time)]
        to: Option<Duration>,
        /// The nodes to draw, in this order: "warehouse,peer5,6" (default: every node).
        #[arg(long, value_delimiter = ',', value_parser = bazaar::diagram::parse_node)]
        nodes: Option<Vec<NodeId>>,
        /// Where to write the SVG (default: RUN_DIR/diagram.svg).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the books of a stopped warehouse's data directory, product by product.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Stock {
        /// A warehouse's data directory, e.g. runs/latest/data/warehouse.
        data_dir: PathBuf,
        /// The config that names the products (default: the run directory's config.toml, two levels up, if there is one).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the deterministic simulator: seeded markets under a seeded nemesis,
    /// every node on a simulated network and clock, every seed checked
    /// (built with `--features sim`).
    #[command(after_long_help = AFTER_LONG_HELP)]
    Sim {
        /// How many seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed of the sweep.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Run this one seed and print its verdicts (with --run-dir: write its
        /// run directory and report, for `bazaar check`, `report`, the plots).
        #[arg(long)]
        seed: Option<u64>,
        /// The consistency mode of every seed's market.
        #[arg(long, value_enum, default_value = "strong")]
        mode: ModeArg,
        /// The faults the nemesis draws from, comma-separated: kill, restart,
        /// pause, partition, delay, loss, late-start; or all, or none.
        #[arg(long, default_value = "all", value_parser = bazaar::sim::nemesis::parse_kinds)]
        nemesis: std::collections::BTreeSet<bazaar::sim::nemesis::Kind>,
        /// Peers in every seed's market (default: drawn, 3 to 8).
        #[arg(long, value_parser = clap::value_parser!(u32).range(3..=1000))]
        peers: Option<u32>,
        /// Traders in every seed's market (default: drawn, 1 to 3).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        traders: Option<u32>,
        /// Threads, each running whole seeds (a seed's run is the same on any thread).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
        jobs: u64,
        /// Run every seed even after one fails (default: stop at the first).
        #[arg(long)]
        keep_going: bool,
        /// With --seed: the run directory to write (config, histories, store,
        /// report.json, report.html, plots).
        #[arg(long, requires = "seed")]
        run_dir: Option<PathBuf>,
    },
    /// Print the default config, commented.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Cmd::Run { .. }
            | Cmd::Bench { .. }
            | Cmd::Experiment { .. }
            | Cmd::Check { .. }
            | Cmd::Report { .. }
            | Cmd::Stock { .. }
            | Cmd::Sim { .. }
            | Cmd::Diagram { .. }
            | Cmd::Config
    );
    // The simulator runs thousands of markets: their nodes' logs only when asked.
    let default = match cli.command {
        Cmd::Sim { .. } => "off",
        _ if quiet => "warn",
        _ => "info",
    };
    let filter = std::env::var("BAZAAR_LOG").unwrap_or_else(|_| default.into());
    // A node's stderr is its log file when launched: colour codes only on a terminal.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match build_runtime(&cli.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Failed.into();
        }
    };
    // Everything `check` and `report` do is read a run directory (and write
    // its report): a failure there is an unreadable run directory.
    let reads_run_dir = matches!(
        cli.command,
        Cmd::Check { .. } | Cmd::Report { .. } | Cmd::Diagram { .. }
    );
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code.into(),
        Err(e) => {
            let bad_input = reads_run_dir
                || e.chain().any(|c| {
                    c.is::<ConfigError>()
                        || c.is::<RunDirError>()
                        || c.is::<bazaar::netns::NetnsError>()
                });
            eprintln!("error: {e:#}");
            if bad_input {
                Exit::BadInput
            } else {
                Exit::Failed
            }
            .into()
        }
    }
}

/// The runtime a command runs on. A node's is tokio's single-thread
/// runtime (a market on one machine is many processes on few cores: one
/// thread each halves a node's CPU per request, see the README's
/// performance section; its disk work runs on blocking threads), unless
/// `--threads N` (or `BAZAAR_NODE_THREADS=N`, which reaches the nodes
/// `bazaar run` starts) says otherwise: N workers, 0 for one per core.
fn build_runtime(cmd: &Cmd) -> std::io::Result<tokio::runtime::Runtime> {
    let Cmd::Node { threads, .. } = cmd else {
        return tokio::runtime::Runtime::new();
    };
    let threads = threads.or_else(|| {
        std::env::var("BAZAAR_NODE_THREADS")
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
    });
    match threads {
        Some(0) => tokio::runtime::Runtime::new(),
        None | Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => load_config_file(p)?,
        None => Config::default(),
    })
}

async fn dispatch(cmd: Cmd) -> anyhow::Result<Exit> {
    match cmd {
        Cmd::Config => {
            print!("{}", bazaar::config::DEFAULT_TOML);
            Ok(Exit::Ok)
        }
        Cmd::Netns {
            action: NetnsCmd::Clean,
        } => {
            let removed = bazaar::netns::clean_orphans()?;
            for ns in &removed {
                println!("removed {ns}");
            }
            if removed.is_empty() {
                println!("no namespaces of a gone launcher");
            }
            Ok(Exit::Ok)
        }
        Cmd::Run {
            config,
            duration,
            seed,
            mode,
            runs_dir,
            in_process,
            memory,
            netns,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            if let Some(d) = duration {
                cfg.market.duration = d;
            }
            if let Some(s) = seed {
                cfg.market.seed = s;
            }
            if let Some(m) = mode {
                cfg.market.mode = m.into();
            }
            cfg.validate()?;
            let report = match (in_process, netns) {
                (true, true) => bail!(ConfigError(
                    "--in-process and --netns exclude each other: in-process nodes share one network namespace".into()
                )),
                (true, false) => {
                    let network = match memory {
                        true => bazaar::inprocess::Network::Memory,
                        false => bazaar::inprocess::Network::Loopback,
                    };
                    bazaar::inprocess::run(&cfg, &runs_dir, network).await?
                }
                (false, netns) => {
                    let exe = std::env::current_exe().context("cannot find the bazaar binary")?;
                    let placement = if netns {
                        bazaar::market::Placement::Netns
                    } else {
                        bazaar::market::Placement::Loopback
                    };
                    bazaar::market::run(&cfg, &runs_dir, &exe, placement).await?
                }
            };
            print!("{}", report.summary());
            Ok(report.status().into())
        }
        Cmd::Experiment {
            name,
            time_scale,
            repeat,
            ratios,
            jobs,
            seed,
            runs_dir,
        } => {
            let plan = bazaar::experiment::Plan::new(
                name,
                time_scale,
                repeat,
                ratios,
                seed,
                jobs as usize,
            );
            let exe = std::env::current_exe().context("cannot find the bazaar binary")?;
            let results = bazaar::experiment::run(&plan, &runs_dir, &exe).await?;
            print!("{}", results.table);
            println!("results  {}", results.dir.join("results.json").display());
            for p in results
                .plots
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "png"))
            {
                println!("plot     {}", results.dir.join(p).display());
            }
            Ok(if results.all_ok() {
                Exit::Ok
            } else {
                Exit::InvariantFailed
            })
        }
        Cmd::Check { run_dir, json } => {
            let o = bazaar::report::open::open(&run_dir)?;
            let report = bazaar::report::judge(&o.cfg, &o.dir, &o.named, &o.trading)?.report;
            if json {
                let out = serde_json::json!({
                    "run_dir": run_dir,
                    "ok": report.status() == Status::Ok,
                    "status": format!("{:?}", report.status()).to_lowercase(),
                    "checks": report.checks,
                    "degraded": report.degraded,
                    "interrupted": report.interrupted,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", report.verdicts());
            }
            Ok(report.status().into())
        }
        Cmd::Report { run_dir, open } => {
            let report = bazaar::report::Report::rebuild(&run_dir)?;
            if open {
                let html = RunDir { root: run_dir }.html();
                println!("{}", std::path::absolute(&html).unwrap_or(html).display());
            } else {
                print!("{}", report.summary());
            }
            Ok(report.status().into())
        }
        Cmd::Sim {
            seeds,
            from,
            seed,
            mode,
            nemesis,
            peers,
            traders,
            jobs,
            keep_going,
            run_dir,
        } => {
            let args = SimArgs {
                seeds,
                from,
                seed,
                mode: mode.into(),
                nemesis,
                peers,
                traders,
                jobs: jobs as usize,
                keep_going,
                run_dir,
            };
            // turmoil makes runtimes of its own: off this one's threads.
            tokio::task::spawn_blocking(move || simulate(args)).await?
        }
        Cmd::Diagram {
            run_dir,
            from,
            to,
            nodes,
            out,
        } => {
            let dir = RunDir { root: run_dir };
            let history_dir = dir.history();
            if !history_dir.is_dir() {
                bail!(RunDirError(format!(
                    "{} has no history/ directory; is it a run directory (e.g. runs/latest)?",
                    dir.root.display()
                )));
            }
            let history = bazaar::history::History::read_dir(&history_dir)?;
            let to = to.unwrap_or(from + Duration::from_secs(1));
            let window = bazaar::diagram::Window::new(from, to);
            let drawn = bazaar::diagram::draw(&history, window, nodes.as_deref())?;
            let out = out.unwrap_or_else(|| dir.root.join("diagram.svg"));
            std::fs::write(&out, &drawn.svg)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "diagram  {} ({} messages, {window})",
                out.display(),
                drawn.messages
            );
            if !drawn.traced {
                eprintln!(
                    "warning: this run's history has no message trace (a run from before it): only nodes and marks are drawn"
                );
            }
            Ok(Exit::Ok)
        }
        Cmd::Stock { data_dir, config } => {
            let snap = Store::snapshot(&data_dir).with_context(|| {
                RunDirError(format!(
                    "cannot read a warehouse store in {} (a warehouse's data directory is RUN_DIR/data/warehouse)",
                    data_dir.display()
                ))
            })?;
            // The products' names: the given config, or the run's.
            let beside = data_dir.join("../../config.toml");
            let cfg = match config {
                Some(path) => Some(load_config_file(&path)?),
                None if beside.is_file() => load_config_file(&beside).ok(),
                None => None,
            };
            for (i, b) in snap.books.iter().enumerate() {
                let name = cfg.as_ref().and_then(|c| c.products.get(i)).map_or_else(
                    || format!("product {i}"),
                    |p| format!("{} (product {i})", p.name),
                );
                println!("{name}: stock {}", b.stock);
                println!(
                    "  initial {}, sold {}, shipped {}, refused {} for want of stock",
                    b.initial, b.sold, b.shipped, b.refused
                );
                println!(
                    "  {} buys: oversold {} in {} oversells, undersold {} in {} undersells",
                    b.buys, b.oversold, b.oversells, b.undersold, b.undersells
                );
            }
            for (t, tb) in &snap.traders {
                println!(
                    "{t}: {} flushed requests, {} buys, {} oversells ({} items), {} undersells ({} items)",
                    tb.flushed, tb.buys, tb.oversells, tb.oversold, tb.undersells, tb.undersold
                );
            }
            println!("{} applied requests", snap.applied.len());
            Ok(Exit::Ok)
        }
        Cmd::Bench {
            mode,
            clients,
            requests,
            duration,
            quick,
            in_process,
            no_half_load,
            json,
            compare,
            runs_dir,
        } => {
            bench(BenchArgs {
                mode,
                clients,
                requests,
                duration,
                quick,
                in_process,
                no_half_load,
                json,
                compare,
                runs_dir,
            })
            .await
        }
        Cmd::Node {
            id,
            config,
            listen,
            data_dir,
            run_dir,
            launched,
            threads: _,
        } => {
            let cfg = load_config(config.as_deref())?;
            run_node(cfg, NodeId(id), listen, data_dir, run_dir, launched).await?;
            Ok(Exit::Ok)
        }
    }
}

/// A time for `--from`/`--to`: "1.5s", "300ms", or plain seconds ("1.5").
fn parse_time(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a time of zero or more seconds"));
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a time (\"1.5s\", \"300ms\" or seconds): {e}"))
}

/// `bazaar bench`'s arguments.
struct BenchArgs {
    mode: Vec<ModeArg>,
    clients: u32,
    requests: Option<u64>,
    duration: Option<Duration>,
    quick: bool,
    in_process: bool,
    no_half_load: bool,
    json: Option<PathBuf>,
    compare: Option<PathBuf>,
    runs_dir: Option<PathBuf>,
}

async fn bench(a: BenchArgs) -> anyhow::Result<Exit> {
    use bazaar::bench::{Load, Plan, Results};
    // Read the earlier results first: a bad file is known before the runs.
    let before: Option<Results> = match &a.compare {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("--compare: cannot read {}: {e}", p.display())))?;
            Some(serde_json::from_str(&text).map_err(|e| {
                ConfigError(format!(
                    "--compare: {} is not the JSON of a `bazaar bench --json`: {e}",
                    p.display()
                ))
            })?)
        }
        None => None,
    };
    let load = match (a.requests, a.duration, a.quick) {
        (Some(0), ..) => bail!(ConfigError("--requests 0 (need at least 1)".into())),
        (Some(n), ..) => Load::Requests(n),
        (None, Some(d), _) => Load::Duration(d),
        (None, None, true) => Load::Duration(Plan::QUICK),
        (None, None, false) => Load::Duration(Plan::DEFAULT),
    };
    if let Load::Duration(d) = load
        && !(Duration::from_millis(500)..=Duration::from_secs(3600)).contains(&d)
    {
        bail!(ConfigError(format!(
            "--duration {} (need 500ms..=1h)",
            humantime::format_duration(d)
        )));
    }
    let modes: Vec<Mode> = if a.mode.is_empty() {
        vec![Mode::Strong, Mode::Cached]
    } else {
        a.mode.into_iter().map(Mode::from).collect()
    };
    let temp = match &a.runs_dir {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let runs_dir = a
        .runs_dir
        .clone()
        .or_else(|| temp.clone())
        .context("no runs directory")?;
    let plan = Plan {
        modes,
        clients: a.clients,
        load,
        in_process: a.in_process,
        half_load: !a.no_half_load,
        runs_dir,
        exe: std::env::current_exe().context("cannot find the bazaar binary")?,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let results = bazaar::bench::run(&plan, command).await;
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    let results = results?;
    println!();
    print!("{}", results.table());
    if let Some(b) = &before {
        println!();
        print!("{}", results.compare(b));
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
        println!("json     {}", p.display());
    }
    Ok(if results.modes.iter().all(|m| m.checks_ok) {
        Exit::Ok
    } else {
        Exit::InvariantFailed
    })
}

/// A fresh directory under the system's temporary one, for the bench's markets.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "bazaar-bench-{}-{}",
        std::process::id(),
        bazaar::rundir::timestamp()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The longest line a launched node reads from the launcher: the address
/// book of 1000 peers is about 40 KiB.
const MAX_LAUNCHER_LINE: u64 = 1 << 20;

/// The next line from the launcher on stdin (`None` once it closes), read
/// no further than [`MAX_LAUNCHER_LINE`].
async fn launcher_line<R: AsyncBufRead + Unpin>(from: &mut R) -> anyhow::Result<Option<String>> {
    let mut line = Vec::new();
    (&mut *from)
        .take(MAX_LAUNCHER_LINE + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() as u64 > MAX_LAUNCHER_LINE {
        bail!("a line from the launcher is over {MAX_LAUNCHER_LINE} bytes");
    }
    Ok(Some(
        String::from_utf8(line).context("a line from the launcher is not UTF-8")?,
    ))
}

async fn run_node(
    cfg: Config,
    me: NodeId,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    launched: bool,
) -> anyhow::Result<()> {
    let role = cfg.role_of(me)?;
    let configured = AddressBook::from_config(&cfg);
    let listen = match (listen, launched) {
        (Some(a), _) => a,
        (None, true) => "127.0.0.1:0".parse()?,
        (None, false) => configured.get(me).with_context(|| {
            ConfigError(format!(
                "[network] gives no address for {me}; pass --listen"
            ))
        })?,
    };
    let (data_dir, history_dir) = match (&run_dir, data_dir) {
        (_, Some(d)) => (d.clone(), d.join("history")),
        (Some(r), None) => {
            let dir = RunDir { root: r.clone() };
            if !launched && me.is_warehouse() {
                // A hand-started market: the run directory's config, for
                // `bazaar check` and `bazaar report`.
                std::fs::create_dir_all(&dir.root)
                    .with_context(|| format!("cannot create {}", dir.root.display()))?;
                // Without the market's secret: `check` and `report` need none.
                let mut shown = cfg.clone();
                shown.network.key = None;
                std::fs::write(dir.config(), shown.to_toml())
                    .with_context(|| format!("cannot write {}", dir.config().display()))?;
            }
            (dir.data_of(me), dir.history())
        }
        (None, None) => {
            let d = PathBuf::from(format!("node-{}", me.0));
            (d.clone(), d.join("history"))
        }
    };
    // The fault layer, driven by the launcher's `net` lines, when the run
    // injects network faults; the door ([network] key) over it.
    let mut transport: Arc<dyn Transport> = Tcp::shared();
    let mut faults = None;
    if launched && cfg.has_network_faults() {
        let (t, control) = bazaar::net::Faulty::over(transport, me, cfg.market.seed ^ 0x0E7_FA17);
        (transport, faults) = (t, Some(control));
    }
    match cfg.network.key()? {
        Some(key) => transport = bazaar::auth::Keyed::over(transport, key),
        None if !launched => tracing::warn!(
            "no [network] key: anyone who can reach {listen} can connect and send this node any message; set [network] key or key_file on every node"
        ),
        None => {}
    }
    let listener = transport
        .bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%me, %role, %addr, "listening");
    Line::Ready(addr).tell();

    let stop_work = CancellationToken::new();
    let stop_all = CancellationToken::new();
    let wedge = CancellationToken::new();
    let clock = Arc::new(Clock::new());
    let book = if launched {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin());
        let Some(line) = launcher_line(&mut lines).await? else {
            return Ok(()); // the launcher went away before the start
        };
        let Ok(Line::Start(book)) = line.parse::<Line>() else {
            bail!("expected `start <address book>` on stdin, got {line:?}");
        };
        if let Some(f) = &faults {
            f.set_book(book.nodes.iter().map(|(n, a)| (*n, *a)));
        }
        let (work, all) = (stop_work.clone(), stop_all.clone());
        let (wedge, clock) = (wedge.clone(), clock.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = launcher_line(&mut lines).await {
                match line.parse::<Line>() {
                    Ok(Line::Stop) => work.cancel(),
                    // The fault experiments: stop the trader worker, keep the socket.
                    Ok(Line::Wedge) => wedge.cancel(),
                    // The launcher asks for our Lamport time just before a fault.
                    Ok(Line::AskClock) => Line::Clock(clock.now()).tell(),
                    // The network faults in force (the fault layer's rules).
                    Ok(Line::Net(rules)) => match &faults {
                        Some(f) => {
                            tracing::info!(?rules, "network faults");
                            f.set(rules)
                        }
                        None => tracing::warn!("network faults, but no fault layer"),
                    },
                    Ok(other) => tracing::warn!("unexpected launcher line {other}"),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            // stdin closed: the launcher is done with us, or dead.
            work.cancel();
            all.cancel();
        });
        book
    } else {
        // Buyers and sellers stop `duration` after the market opened for
        // them (`trade_for` below); everyone stops on Ctrl-C.
        let (work, all) = (stop_work.clone(), stop_all.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = work.cancelled() => {}
            }
            work.cancel();
            all.cancel();
        });
        configured
    };
    // A peer may be elected, and talks to every peer in the election.
    let needs: Vec<NodeId> = match role {
        Role::Warehouse => vec![],
        _ => (0..=cfg.market.peers).map(NodeId).collect(),
    };
    if let Some(missing) = needs.iter().find(|n| book.get(**n).is_none()) {
        bail!(ConfigError(format!(
            "a {role} needs the address of {missing}; give [network] warehouse and peers"
        )));
    }
    let mut ctx = NodeContext::new(
        me,
        role,
        Arc::new(cfg),
        book,
        transport,
        IoMode::Threaded,
        data_dir,
        history_dir,
    )?;
    (ctx.clock, ctx.wedge, ctx.launched) = (clock, wedge, launched);
    if !launched {
        ctx.trade_for = Some(ctx.config.market.duration);
    }
    bazaar::role::run(
        ctx,
        listener,
        ServeOptions::default(),
        stop_work,
        stop_all,
        move || {
            if launched {
                Line::Done.tell();
            }
        },
    )
    .await
}

/// `bazaar sim`'s arguments (unread in a build without the simulator).
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
struct SimArgs {
    seeds: u64,
    from: u64,
    seed: Option<u64>,
    mode: Mode,
    nemesis: std::collections::BTreeSet<bazaar::sim::nemesis::Kind>,
    peers: Option<u32>,
    traders: Option<u32>,
    jobs: usize,
    keep_going: bool,
    run_dir: Option<PathBuf>,
}

#[cfg(not(feature = "sim"))]
fn simulate(_: SimArgs) -> anyhow::Result<Exit> {
    Err(ConfigError(
        "this bazaar was built without the simulator, which needs turmoil and tokio's test clock; \
         build it with the `sim` feature: cargo run --release --features sim -- sim ..."
            .into(),
    )
    .into())
}

#[cfg(feature = "sim")]
fn simulate(a: SimArgs) -> anyhow::Result<Exit> {
    use bazaar::sim::{Broken, Options, Sweep};
    let opts = Options {
        mode: a.mode,
        nemesis: a.nemesis,
        peers: a.peers,
        traders: a.traders,
        broken: Broken::No,
    };
    if let Some(seed) = a.seed {
        let (out, summary) = match &a.run_dir {
            Some(dir) => {
                let (out, report) = bazaar::sim::replay(seed, &opts, dir)?;
                (out, Some(report.summary()))
            }
            None => {
                let dir = tempdir_for(seed)?;
                let out = bazaar::sim::run_seed(seed, &opts, &dir)?;
                let _ = std::fs::remove_dir_all(&dir);
                (out, None)
            }
        };
        println!(
            "seed {seed}: {} peers, {} traders, {:?} mode\nnemesis:\n{}",
            out.cfg.market.peers, out.cfg.market.traders, out.cfg.market.mode, out.schedule
        );
        match summary {
            Some(s) => print!("{s}"),
            None => {
                for v in &out.verdicts {
                    println!(
                        "{:<4} {:<28} {}",
                        if v.ok { "ok" } else { "FAIL" },
                        v.invariant,
                        v.detail
                    );
                }
            }
        }
        if let Some(e) = &out.error {
            println!("the simulation failed: {e}");
        }
        return Ok(if out.failed() {
            Exit::InvariantFailed
        } else {
            Exit::Ok
        });
    }
    let scratch = std::env::temp_dir().join(format!("bazaar-sim-{}", std::process::id()));
    let sweep = Sweep {
        opts: opts.clone(),
        from: a.from,
        seeds: a.seeds,
        jobs: a.jobs,
        keep_going: a.keep_going,
        scratch: scratch.clone(),
    };
    let bar = indicatif::ProgressBar::new(a.seeds);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} seeds  {msg}  {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tally = bazaar::sim::sweep(&sweep, |t| {
        bar.set_position(t.seeds_run);
        bar.set_message(format!("{} failed", t.failures.len()));
    })?;
    bar.finish_and_clear();
    println!("{tally}");
    for (seed, e) in &tally.shape_errors {
        println!(
            "\nseed {seed}: the drawn market is not a valid config (a bug of the simulator): {e}"
        );
    }
    for (out, dir) in &tally.failures {
        println!("\n{}", out.explain(&opts, dir));
    }
    if tally.ok() {
        let _ = std::fs::remove_dir_all(&scratch);
        Ok(Exit::Ok)
    } else {
        Ok(Exit::InvariantFailed)
    }
}

/// A scratch directory for one seed's run.
#[cfg(feature = "sim")]
fn tempdir_for(seed: u64) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bazaar-sim-{}-seed-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}
