//! The `bazaar` command line: run a market, run one node, check a run, read a
//! warehouse's stock, print the default config.

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
use bazaar::launch::Line;
use bazaar::market::RunDir;
use bazaar::net::{Tcp, Transport};
use bazaar::node::{AddressBook, IoMode, NodeContext, ServeOptions};
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
        Cmd::Run { .. } | Cmd::Check { .. } | Cmd::Report { .. } | Cmd::Stock { .. } | Cmd::Config
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
            if !launched && me.is_warehouse() {
                // A hand-started market: the run directory's config, for
                // `bazaar check` and `bazaar report`.
                std::fs::create_dir_all(&dir.root)
                    .with_context(|| format!("cannot create {}", dir.root.display()))?;
                std::fs::write(dir.config(), cfg.to_toml())
                    .with_context(|| format!("cannot write {}", dir.config().display()))?;
            }
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
    Line::Ready(addr).tell();

    let stop_work = CancellationToken::new();
    let stop_all = CancellationToken::new();
    let wedge = CancellationToken::new();
    let clock = Arc::new(Clock::new());
    let book = if launched {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let Some(line) = lines.next_line().await? else {
            return Ok(()); // the launcher went away before the start
        };
        let Ok(Line::Start(book)) = line.parse::<Line>() else {
            bail!("expected `start <address book>` on stdin, got {line:?}");
        };
        let (work, all) = (stop_work.clone(), stop_all.clone());
        let (wedge, clock) = (wedge.clone(), clock.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match line.parse::<Line>() {
                    Ok(Line::Stop) => work.cancel(),
                    // The fault experiments: stop the trader worker, keep the socket.
                    Ok(Line::Wedge) => wedge.cancel(),
                    // The launcher asks for our Lamport time just before a fault.
                    Ok(Line::AskClock) => Line::Clock(clock.now()).tell(),
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
