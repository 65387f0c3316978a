//! The node runtime: one listener, its connections, and the role it serves.
//!
//! Every connection opens with a hello (checked for the protocol version within
//! [`ServeOptions::hello_timeout`]), then carries frames whose requests are
//! handled concurrently, up to [`ServeOptions::max_in_flight`] per connection,
//! and answered in whatever order they finish. A bad frame closes its own
//! connection with a logged reason; the node goes on. Every frame after the
//! hello is recorded in the node's message trace ([`crate::trace`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{BufReader, BufWriter};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, Role};
use crate::connection::Sender;
use crate::net::{BoxFuture, BoxStream, Listener, Transport};
use crate::trace::Trace;
use crate::wire::frame::{FrameError, read_len, read_payload};
use crate::wire::{Body, NodeId, Refusal};

/// The read buffer of a connection, each side: room for dozens of small
/// frames (20 to 60 bytes) per system call; a larger frame (a flush) is read
/// through it. Small, because a large market holds thousands of mostly idle
/// connections (the election's), each with one of these at each end.
pub const READ_BUFFER: usize = 4 * 1024;

/// What a node does with each message it receives.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message; returns the reply for a request, `None` for a
    /// one-way message.
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>>;
}

/// The answer to a message this node's role does not take: a refusal for a
/// request, a log line for a one-way message.
pub fn not_for_role(role: impl std::fmt::Display, from: NodeId, body: &Body) -> Option<Body> {
    let reason = Refusal::NotForRole {
        role: role.to_string(),
        message: body.name().to_string(),
    };
    tracing::warn!(%from, "{reason}");
    body.request_id().map(|id| Body::Refused { id, reason })
}

/// Limits on each incoming connection.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A peer must say hello within this long after connecting.
    pub hello_timeout: Duration,
    /// Once a frame's length has arrived, its body must follow within this long.
    pub frame_timeout: Duration,
    /// A connection silent this long is closed (its peer reconnects when needed).
    pub idle_timeout: Duration,
    /// Requests handled at once per connection; beyond this the connection's
    /// reader waits, so one busy peer cannot take all of a node's memory.
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_in_flight: 256,
        }
    }
}

/// Accepts connections until `stop`, serving each with `handler`; records
/// what they carry in `trace`.
pub async fn serve(
    mut listener: Box<dyn Listener>,
    me: NodeId,
    clock: Arc<Clock>,
    trace: Trace,
    handler: Arc<dyn Handler>,
    opts: ServeOptions,
    stop: CancellationToken,
) {
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let conn = Connection {
            me,
            clock: clock.clone(),
            trace: trace.clone(),
            handler: handler.clone(),
            opts,
            stop: stop.child_token(),
        };
        tokio::spawn(async move {
            if let Err(reason) = conn.run(stream).await {
                tracing::warn!(%addr, "closed connection: {reason}");
            }
        });
    }
}

/// The listener's side of one connection (see [`crate::connection`]).
struct Connection {
    me: NodeId,
    clock: Arc<Clock>,
    trace: Trace,
    handler: Arc<dyn Handler>,
    opts: ServeOptions,
    stop: CancellationToken,
}

impl Connection {
    async fn run(self, stream: BoxStream) -> Result<(), String> {
        let (rd, wr) = tokio::io::split(stream);
        // Buffered reads: one system call takes every frame that has arrived
        // (a length prefix and its payload, or many pipelined frames), not two
        // per frame.
        let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
        let mut wr = BufWriter::new(wr);
        let sender = Sender {
            me: self.me,
            clock: self.clock.clone(),
            trace: self.trace.clone(),
        };

        let hello = tokio::time::timeout(self.opts.hello_timeout, async {
            let len = read_len(&mut rd).await?;
            read_payload(&mut rd, len).await
        })
        .await
        .map_err(|_| format!("no hello within {:?}", self.opts.hello_timeout))?
        .map_err(|e| format!("bad hello: {e}"))?;
        self.clock.observe(hello.clock);
        let peer = hello.from;
        sender.welcome(&mut wr, peer, hello.body).await?;

        // Writer: replies leave in the order they finish, stamped as they leave.
        let (tx, rx) = mpsc::channel::<Body>(self.opts.max_in_flight);
        let writer = tokio::spawn(sender.write_all(wr, rx, peer, self.stop.clone()));

        let in_flight = Arc::new(Semaphore::new(self.opts.max_in_flight));
        let result = loop {
            let len = tokio::select! {
                r = tokio::time::timeout(self.opts.idle_timeout, read_len(&mut rd)) => r,
                _ = self.stop.cancelled() => break Ok(()),
            };
            let env = match len {
                Err(_) => break Err(format!("{peer}: idle for {:?}", self.opts.idle_timeout)),
                Ok(Err(FrameError::Closed)) => break Ok(()),
                Ok(Err(e)) => break Err(format!("{peer}: {e}")),
                Ok(Ok(len)) => {
                    match tokio::time::timeout(self.opts.frame_timeout, read_payload(&mut rd, len))
                        .await
                    {
                        Err(_) => {
                            break Err(format!(
                                "{peer}: frame body not sent within {:?}",
                                self.opts.frame_timeout
                            ));
                        }
                        Ok(Err(e)) => break Err(format!("{peer}: {e}")),
                        Ok(Ok(env)) => env,
                    }
                }
            };
            self.trace.received(&env, self.clock.observe(env.clock));
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break Ok(());
            };
            let (handler, tx) = (self.handler.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(reply) = handler.handle(env.from, env.body).await {
                    let _ = tx.send(reply).await;
                }
                drop(permit);
            });
        };
        drop(tx);
        // Let replies already computed go out before the socket closes.
        let _ = writer.await;
        result
    }
}

/// Where every node listens: index 0 is the warehouse, then peers `1..=N`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressBook {
    pub nodes: BTreeMap<NodeId, SocketAddr>,
}

impl AddressBook {
    /// The addresses a config's `[network]` section gives (maybe none).
    pub fn from_config(cfg: &Config) -> AddressBook {
        let mut nodes = BTreeMap::new();
        if let Some(w) = cfg.network.warehouse {
            nodes.insert(NodeId::WAREHOUSE, w);
        }
        for (i, a) in cfg.network.peers.iter().enumerate() {
            nodes.insert(NodeId(i as u32 + 1), *a);
        }
        AddressBook { nodes }
    }

    pub fn get(&self, node: NodeId) -> Option<SocketAddr> {
        self.nodes.get(&node).copied()
    }
}

/// The node's monotonic time, from tokio's clock: real time in a real run,
/// simulated time in the simulation. What node logic hands its pure state
/// machines, never `std::time::Instant::now()` directly.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// How a node runs its blocking storage work.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// On threads of its own, so the async runtime never waits on a disk.
    #[default]
    Threaded,
    /// On the node's own task: for the single-threaded deterministic
    /// simulation, where simulated time must stand still while storage works.
    Inline,
}

impl IoMode {
    /// Runs blocking disk work `f` (a sync, a journal commit) the way this
    /// mode says: on tokio's blocking threads, or inline. Err if the
    /// blocking task panicked.
    pub async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        match self {
            IoMode::Threaded => tokio::task::spawn_blocking(f).await,
            // The simulation: simulated time stands still while the disk
            // works, so a seed replays the same run.
            IoMode::Inline => Ok(f()),
        }
    }
}

/// A node's history file, shared by all its parts (see [`crate::history`]):
/// `ctx.history.append(&event)` from any task.
pub type History = Arc<crate::history::Writer>;

/// Everything a node's role needs from its surroundings.
#[derive(Clone)]
pub struct NodeContext {
    pub me: NodeId,
    /// The warehouse, or for a peer the role the config gives it if the
    /// election elects the expected traders; the election decides (see
    /// [`crate::peer`]).
    pub role: Role,
    pub config: Arc<Config>,
    pub book: Arc<AddressBook>,
    pub clock: Arc<Clock>,
    /// Who the traders are, as this node last heard (shared by all its parts).
    pub traders: Arc<crate::membership::Membership>,
    /// This node's history (`<node>.jsonl` under the run's history dir).
    pub history: History,
    /// Cancelled to stop this node's trader worker while its socket lives on
    /// (the `wedge` fault).
    pub wedge: CancellationToken,
    /// Whether a launcher reads this node's stdout (see [`crate::launch`]).
    pub launched: bool,
    /// A buyer or seller stops its work this long after it entered the
    /// market (a hand-started node); `None`: whoever started it stops it.
    pub trade_for: Option<Duration>,
    pub transport: Arc<dyn Transport>,
    pub io: IoMode,
    /// The node's own durable state (the warehouse's ledger, a cached
    /// trader's journal).
    pub data_dir: PathBuf,
    /// Where the node writes its history (`<node>.jsonl`).
    pub history_dir: PathBuf,
}

impl NodeContext {
    /// A link from this node to `node`, if the address book has it.
    pub fn link_to(&self, node: NodeId) -> Option<crate::link::Link> {
        let addr = self.book.get(node)?;
        Some(
            crate::link::Link::new(
                self.me,
                node,
                addr,
                self.transport.clone(),
                self.clock.clone(),
            )
            .traced(self.trace()),
        )
    }

    /// Where this node's connections record the messages they carry: its
    /// history.
    pub fn trace(&self) -> Trace {
        Trace::to(self.history.clone())
    }

    /// Appends a failover line (see [`crate::membership::Record`]) to the
    /// node's history and hands it to the OS at once, so that it survives
    /// the node being killed right after.
    pub fn record(&self, what: crate::membership::Happening) {
        let r = crate::membership::Record {
            wall_us: crate::history::wall_us(),
            lamport: Some(self.clock.tick()),
            by: Some(self.me),
            what,
        };
        let h = &self.history;
        if let Err(e) = h
            .append(&crate::history::Event::Failover(r))
            .and_then(|_| h.hand_off())
        {
            tracing::error!("cannot write history: {e}");
        }
    }

    /// Adopts `view` (heard from `from`) if it is newer than the one this
    /// node holds, and records it (`view`, and `deposed` if this node was a
    /// trader and the new view leaves it out). Returns `None` if the view
    /// was not newer, else whether this node was deposed by it.
    pub fn adopt(&self, view: &crate::wire::View, from: NodeId) -> Option<bool> {
        use crate::membership::Happening;
        let was_trader = self.traders.is_trader();
        if !self.traders.adopt(view) {
            return None;
        }
        tracing::info!(%view, %from, "adopted");
        self.record(Happening::View {
            view: view.clone(),
            from,
        });
        let deposed = was_trader && !self.traders.is_trader();
        if deposed {
            tracing::warn!(%view, "deposed: this node is not a trader of the new epoch");
            self.record(Happening::Deposed { view: view.clone() });
        }
        Some(deposed)
    }

    /// A link from this node to every other peer in the address book (not
    /// the warehouse). Each caller gets connections of its own: the control
    /// plane's heartbeats never queue behind a client's trades.
    pub fn peer_links(&self) -> BTreeMap<NodeId, crate::link::Link> {
        self.book
            .nodes
            .iter()
            .filter(|(n, _)| !n.is_warehouse() && **n != self.me)
            .filter_map(|(&n, _)| Some((n, self.link_to(n)?)))
            .collect()
    }

    /// A context with a fresh clock, an empty trader list (the election fills
    /// it) and the node's history file created under `history_dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeId,
        role: Role,
        config: Arc<Config>,
        book: AddressBook,
        transport: Arc<dyn Transport>,
        io: IoMode,
        data_dir: PathBuf,
        history_dir: PathBuf,
    ) -> anyhow::Result<NodeContext> {
        let history = crate::history::Writer::for_node(&history_dir, me).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the history in {}: {e}",
                history_dir.display()
            )
        })?;
        Ok(NodeContext {
            me,
            role,
            config,
            book: Arc::new(book),
            clock: Arc::new(Clock::new()),
            traders: Arc::new(crate::membership::Membership::new(me)),
            history: Arc::new(history),
            wedge: CancellationToken::new(),
            launched: false,
            trade_for: None,
            transport,
            io,
            data_dir,
            history_dir,
        })
    }
}
