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
              run`, in RUN_DIR/logs/), `warn` for the other commands' stderr.";

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
    /// Print the books of a stopped warehouse's data directory, product by product.
    #[command(after_long_help = AFTER_LONG_HELP)]
    Stock {
        /// A warehouse's data directory, e.g. runs/latest/data/warehouse.
        data_dir: PathBuf,
        /// The config that names the products (default: the run directory's config.toml, two levels up, if there is one).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the default config, commented.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Cmd::Run { .. }
            | Cmd::Experiment { .. }
            | Cmd::Check { .. }
            | Cmd::Report { .. }
            | Cmd::Stock { .. }
            | Cmd::Config
    );
    let filter =
        std::env::var("BAZAAR_LOG").unwrap_or_else(|_| if quiet { "warn" } else { "info" }.into());
    // A node's stderr is its log file when launched: colour codes only on a terminal.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Failed.into();
        }
    };
    // Everything `check` and `report` do is read a run directory (and write
    // its report): a failure there is an unreadable run directory.
    let reads_run_dir = matches!(cli.command, Cmd::Check { .. } | Cmd::Report { .. });
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
            let exe = std::env::current_exe().context("cannot find the bazaar binary")?;
            let placement = if netns {
                bazaar::market::Placement::Netns
            } else {
                bazaar::market::Placement::Loopback
            };
            let report = bazaar::market::run(&cfg, &runs_dir, &exe, placement).await?;
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
        Cmd::Node {
            id,
            config,
            listen,
            data_dir,
            run_dir,
            launched,
        } => {
            let cfg = load_config(config.as_deref())?;
            run_node(cfg, NodeId(id), listen, data_dir, run_dir, launched).await?;
            Ok(Exit::Ok)
        }
    }
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
