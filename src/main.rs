//! The `bazaar` command line: run a market, run one node, run one of the
//! document's experiments, check a run, read a warehouse's stock, print the
//! default config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use bazaar::clock::Clock;
use bazaar::config::{Config, ConfigError, Mode, Role};
use bazaar::market::RunDir;
use bazaar::net::{Tcp, Transport};
use bazaar::node::{self, AddressBook, IoMode, NodeContext, ServeOptions};
use bazaar::warehouse::store::Store;
use bazaar::wire::NodeId;
use bazaar::{check, history};

#[derive(Parser)]
#[command(
    name = "bazaar",
    version,
    about = "A distributed trading market: warehouse, traders, buyers, sellers."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole market on this machine (one process per node) and print its report.
    Run {
        /// Market config (TOML); fields it leaves out take the defaults (`bazaar config`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override [market] duration, e.g. "3s".
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Override [market] seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override [market] mode.
        #[arg(long)]
        mode: Option<String>,
        /// Where run directories are made.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Run one node in this process, with addresses from the config's [network].
    Node {
        /// Node id: 0 is the warehouse, peers are 1..=peers.
        #[arg(long)]
        id: u32,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default: the node's [network] address).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory for this node's data and history (default: ./node-<id>).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Run directory of a launched market (set by `bazaar run`).
        #[arg(long, hide = true)]
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
    /// Check a run directory's history against the invariants (exit 1 if one fails).
    Check { run_dir: PathBuf },
    /// Rebuild a run directory's report.json and plots, and print its summary.
    Report { run_dir: PathBuf },
    /// Print the books of a stopped warehouse's data directory.
    Stock { data_dir: PathBuf },
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            let bad_config = e.chain().any(|c| c.is::<ConfigError>());
            eprintln!("error: {e:#}");
            ExitCode::from(if bad_config { 2 } else { 1 })
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

async fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Config => {
            print!("{}", bazaar::config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            config,
            duration,
            seed,
            mode,
            runs_dir,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            if let Some(d) = duration {
                cfg.market.duration = d;
            }
            if let Some(s) = seed {
                cfg.market.seed = s;
            }
            if let Some(m) = mode {
                cfg.market.mode = m.parse::<Mode>()?;
            }
            cfg.validate()?;
            let exe = std::env::current_exe().context("cannot find the bazaar binary")?;
            let report = bazaar::market::run(&cfg, &runs_dir, &exe).await?;
            print!("{}", report.summary());
            Ok(if check::all_ok(&report.checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
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
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Check { run_dir } => {
            let cfg = Config::load(&run_dir.join("config.toml"))?;
            let dir = RunDir { root: run_dir };
            let history = history::History::read_dir(&dir.history())?;
            let store = Store::snapshot(&dir.data_of(NodeId::WAREHOUSE))?;
            let unflushed = bazaar::market::read_unflushed(&cfg, &dir)?;
            let verdicts = check::check(&cfg, &history, &store, &unflushed);
            for v in &verdicts {
                println!(
                    "{:<28} {:<6} {}",
                    v.invariant,
                    if v.ok { "ok" } else { "FAILED" },
                    v.detail
                );
            }
            Ok(if check::all_ok(&verdicts) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Report { run_dir } => {
            let report = bazaar::report::Report::rebuild(&run_dir)?;
            print!("{}", report.summary());
            Ok(if check::all_ok(&report.checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Stock { data_dir } => {
            let snap = Store::snapshot(&data_dir).with_context(|| {
                format!("cannot read a warehouse store in {}", data_dir.display())
            })?;
            for (i, b) in snap.books.iter().enumerate() {
                println!(
                    "product {i}: stock {} (initial {}, sold {}, shipped {}, refused {}, oversold {} in {} oversells, undersold {} in {} undersells, of {} buys)",
                    b.stock,
                    b.initial,
                    b.sold,
                    b.shipped,
                    b.refused,
                    b.oversold,
                    b.oversells,
                    b.undersold,
                    b.undersells,
                    b.buys
                );
            }
            for (t, tb) in &snap.traders {
                println!(
                    "{t}: {} flushed requests, {} buys, {} oversells ({} items), {} undersells ({} items)",
                    tb.flushed, tb.buys, tb.oversells, tb.oversold, tb.undersells, tb.undersold
                );
            }
            println!("{} applied requests", snap.applied.len());
            Ok(ExitCode::SUCCESS)
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
            Ok(ExitCode::SUCCESS)
        }
    }
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
            (dir.data_of(me), dir.history())
        }
        (None, None) => {
            let d = PathBuf::from(format!("node-{}", me.0));
            (d.clone(), d.join("history"))
        }
    };
    let transport: Arc<dyn Transport> = Tcp::shared();
    let listener = transport
        .bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%me, %role, %addr, "listening");
    node::tell_launcher(&format!("ready {addr}"));

    let stop_work = CancellationToken::new();
    let stop_all = CancellationToken::new();
    let wedge = CancellationToken::new();
    let clock = Arc::new(Clock::new());
    let book = if launched {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let Some(line) = lines.next_line().await? else {
            return Ok(()); // the launcher went away before the start
        };
        let json = line
            .strip_prefix("start ")
            .context("expected `start <address book>` on stdin")?;
        let book: AddressBook = serde_json::from_str(json).context("bad address book")?;
        let (work, all) = (stop_work.clone(), stop_all.clone());
        let (wedge, clock) = (wedge.clone(), clock.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match line.as_str() {
                    "stop" => work.cancel(),
                    // The fault experiments: stop the trader worker, keep the socket.
                    "wedge" => wedge.cancel(),
                    // The launcher asks for our Lamport time just before a fault.
                    "clock" => node::tell_launcher(&format!("clock {}", clock.now().0)),
                    other => tracing::warn!("unknown launcher command {other:?}"),
                }
            }
            // stdin closed: the launcher is done with us, or dead.
            work.cancel();
            all.cancel();
        });
        book
    } else {
        let (work, all) = (stop_work.clone(), stop_all.clone());
        let duration = cfg.market.duration;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = tokio::time::sleep(duration), if matches!(role, Role::Buyer | Role::Seller) => {}
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
    node::run(
        ctx,
        listener,
        ServeOptions::default(),
        stop_work,
        stop_all,
        move || {
            if launched {
                node::tell_launcher("done");
            }
        },
    )
    .await
}
