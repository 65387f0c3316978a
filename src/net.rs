//! The transport seam: bind, accept, connect.
//!
//! Node logic never names `tokio::net`; it holds an `Arc<dyn Transport>` and
//! gets byte streams from it. [`Tcp`] is the real network; the simulation
//! supplies another implementation (turmoil's network) behind the same trait.
//!
//! [`Faulty`] is the fault layer over any of them: network partitions, delay
//! with jitter and loss, set at run time by the launcher ([`NetRules`], the
//! `net` line of [`crate::launch`]), for a market on loopback that needs no
//! root (and, in `--netns` mode, for the delay that nftables cannot make).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::config::NetFault;
use crate::wire::NodeId;

/// A boxed future, as the seam's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed stream, what the seam hands out.
pub type BoxStream = Box<dyn Stream>;

/// A bound listener.
pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A network: where listeners are bound and connections made.
pub trait Transport: Send + Sync + 'static {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>>;
}

/// The real network: TCP with Nagle's algorithm off (our frames are small and
/// every one of them is waited for).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tcp;

impl Tcp {
    pub fn shared() -> Arc<dyn Transport> {
        Arc::new(Tcp)
    }
}

struct TcpListener(tokio::net::TcpListener);

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (s, addr) = self.0.accept().await?;
            s.set_nodelay(true)?;
            Ok((Box::new(s) as BoxStream, addr))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Transport for Tcp {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let l = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TcpListener(l)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

// ---------------------------------------------------------------------------
// An in-memory network, for a market in one process.

/// Bytes a connection's pipe holds in each direction before a writer waits.
const PIPE_BYTES: usize = 64 * 1024;

/// A network in this process's memory: a connection is a pair of in-memory
/// pipes (tokio's `duplex`), so it holds no file descriptor. For
/// `bazaar run --in-process --memory`: a 1,000-peer market on loopback TCP
/// holds about 40,000 descriptors (both ends of every connection are in the
/// one process), more than a process may usually open.
///
/// Addresses are `127.0.0.1:port`; binding port 0 picks a free port. A
/// connection to an address nobody listens on (or whose listener is gone) is
/// refused, as on loopback.
#[derive(Default)]
pub struct Memory {
    listeners: Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<(BoxStream, SocketAddr)>>>,
    last_port: AtomicU64,
}

impl Memory {
    pub fn shared() -> Arc<dyn Transport> {
        Arc::new(Memory::default())
    }

    fn next_addr(&self) -> SocketAddr {
        let port = 1 + self.last_port.fetch_add(1, Ordering::Relaxed) % u64::from(u16::MAX - 1);
        SocketAddr::from(([127, 0, 0, 1], port as u16))
    }

    fn table(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        HashMap<SocketAddr, mpsc::UnboundedSender<(BoxStream, SocketAddr)>>,
    > {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct MemoryListener {
    addr: SocketAddr,
    incoming: mpsc::UnboundedReceiver<(BoxStream, SocketAddr)>,
}

impl Listener for MemoryListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            self.incoming
                .recv()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the network is gone"))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl Transport for Memory {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let mut table = self.table();
            table.retain(|_, tx| !tx.is_closed());
            let addr = if addr.port() == 0 {
                (0..u16::MAX)
                    .map(|_| self.next_addr())
                    .find(|a| !table.contains_key(a))
                    .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port"))?
            } else if table.contains_key(&addr) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{addr} is in use"),
                ));
            } else {
                addr
            };
            let (tx, incoming) = mpsc::unbounded_channel();
            table.insert(addr, tx);
            Ok(Box::new(MemoryListener { addr, incoming }) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let refused = || {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nobody listens on {addr}"),
                )
            };
            let tx = self.table().get(&addr).cloned().ok_or_else(refused)?;
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            let from = self.next_addr();
            tx.send((Box::new(theirs), from)).map_err(|_| refused())?;
            Ok(Box::new(ours) as BoxStream)
        })
    }
}

// ---------------------------------------------------------------------------
// The fault layer: partitions, delay with jitter and loss, on a real network.

/// The network faults in force, as the launcher last set them (the `net`
/// line of [`crate::launch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRules {
    pub faults: Vec<NetFault>,
}

/// How the frames one node sends are shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shaping {
    pub delay: Duration,
    pub jitter: Duration,
    pub per_mille: u32,
}

impl Shaping {
    fn is_none(&self) -> bool {
        *self == Shaping::default()
    }
}

impl NetRules {
    /// Whether a partition keeps `a` and `b` apart.
    pub fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.faults.iter().any(|f| match f {
            NetFault::Partition { groups } => {
                let of = |n| groups.iter().position(|g| g.contains(&n));
                matches!((of(a), of(b)), (Some(x), Some(y)) if x != y)
            }
            _ => false,
        })
    }

    /// How what `from` sends is shaped (the delays add up; the losses
    /// compound).
    pub fn shaping(&self, from: NodeId) -> Shaping {
        let mut s = Shaping::default();
        let mut kept = 1.0f64;
        for f in &self.faults {
            match *f {
                NetFault::Delay {
                    on,
                    delay_ms,
                    jitter_ms,
                } if on == from => {
                    s.delay += Duration::from_millis(delay_ms);
                    s.jitter += Duration::from_millis(jitter_ms);
                }
                NetFault::Loss { on, per_mille } if on == from => {
                    kept *= 1.0 - (per_mille.min(1000) as f64 / 1000.0);
                }
                _ => {}
            }
        }
        s.per_mille = ((1.0 - kept) * 1000.0).round() as u32;
        s
    }
}

/// TCP's shortest retransmission timeout (Linux's `TCP_RTO_MIN`): what a
/// lost packet costs a TCP stream, which sends it again.
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// Losses of one chunk in a row that are retransmitted; one more and it
/// goes through (a bound, so a 100% loss stalls rather than spins).
const MAX_LOSSES: u32 = 6;

/// When each chunk of one direction of one connection is delivered: pure,
/// seeded, time passed in.
///
/// A chunk waits `delay ± jitter` (uniform); a lost chunk is, as TCP does,
/// sent again after a retransmission timeout that doubles each time, so
/// loss on a stream costs time, not bytes. Chunks never overtake each other
/// (jitter stretches the stream, it does not reorder it).
pub struct Shaper {
    rng: StdRng,
    last: Option<tokio::time::Instant>,
}

impl Shaper {
    pub fn new(seed: u64) -> Shaper {
        Shaper {
            rng: StdRng::seed_from_u64(seed),
            last: None,
        }
    }

    /// When a chunk sent at `now` arrives.
    pub fn due(&mut self, now: tokio::time::Instant, s: Shaping) -> tokio::time::Instant {
        let mut wait = s.delay;
        if !s.jitter.is_zero() {
            let j = s.jitter.as_micros() as i64;
            let d = self.rng.random_range(-j..=j);
            wait = Duration::from_micros((wait.as_micros() as i64 + d).max(0) as u64);
        }
        let mut rto = MIN_RTO;
        for _ in 0..MAX_LOSSES {
            if s.per_mille == 0 || self.rng.random_range(0..1000) >= s.per_mille {
                break;
            }
            wait += rto;
            rto *= 2;
        }
        let due = (now + wait).max(self.last.unwrap_or(now));
        self.last = Some(due);
        due
    }
}

/// The launcher's handle on a [`Faulty`] transport: sets the rules and
/// tells it who is at which address.
#[derive(Clone)]
pub struct FaultControl {
    rules: Arc<watch::Sender<NetRules>>,
    book: Arc<Mutex<HashMap<SocketAddr, NodeId>>>,
}

impl FaultControl {
    pub fn set(&self, rules: NetRules) {
        self.rules.send_replace(rules);
    }

    /// Who listens where (connections to an address not in it are never
    /// faulted).
    pub fn set_book(&self, nodes: impl IntoIterator<Item = (NodeId, SocketAddr)>) {
        let mut b = self.book.lock().expect("book");
        for (n, a) in nodes {
            b.insert(a, n);
        }
    }
}

/// The fault layer: a transport over another whose connections suffer the
/// launcher's network faults. Each connection is faulted by the node that
/// made it (every node runs the same rules), in both directions:
///
/// - partition: a connect to a node on the other side waits until the
///   partition heals (as a SYN into a dropped link does; the caller's
///   deadline ends it), and a connection open across it loses every byte
///   from then on, both ways, for good (a black hole: only a timeout
///   notices, as on a real cut link);
/// - delay and jitter: each chunk the faulted node sends waits, in order;
/// - loss: a chunk is lost and sent again after a retransmission timeout,
///   as TCP does (see [`Shaper`]).
///
/// Seeded: the draws of each direction of each connection follow from the
/// seed, the two nodes and the connection's number.
pub struct Faulty {
    inner: Arc<dyn Transport>,
    me: NodeId,
    seed: u64,
    rules: watch::Receiver<NetRules>,
    book: Arc<Mutex<HashMap<SocketAddr, NodeId>>>,
    conns: AtomicU64,
}

impl Faulty {
    pub fn over(
        inner: Arc<dyn Transport>,
        me: NodeId,
        seed: u64,
    ) -> (Arc<dyn Transport>, FaultControl) {
        let (tx, rx) = watch::channel(NetRules::default());
        let book = Arc::new(Mutex::new(HashMap::new()));
        let t = Faulty {
            inner,
            me,
            seed,
            rules: rx,
            book: book.clone(),
            conns: AtomicU64::new(0),
        };
        (
            Arc::new(t),
            FaultControl {
                rules: Arc::new(tx),
                book,
            },
        )
    }
}

/// Chunks in flight through one direction of the fault layer.
const IN_FLIGHT: usize = 256;
/// The largest chunk moved at once.
const CHUNK: usize = 16 * 1024;

/// One direction of a faulted connection: bytes `from` sends to `to`.
struct Lane {
    from: NodeId,
    to: NodeId,
    rules: watch::Receiver<NetRules>,
    dead: Arc<AtomicBool>,
    shaper: Shaper,
    /// The caller's lane tells it has closed; the answering lane then reads
    /// for [`LINGER`] more at most (a peer behind a real partition never
    /// sends its FIN).
    closed: Arc<tokio::sync::Notify>,
    caller: bool,
}

/// How long the answering lane outlives the caller's.
const LINGER: Duration = Duration::from_secs(5);

impl Lane {
    /// Moves bytes from `rd` to `wr` under the rules, until either end closes.
    async fn run<R, W>(mut self, mut rd: R, mut wr: W)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(Vec<u8>, tokio::time::Instant)>(IN_FLIGHT);
        let dead = self.dead.clone();
        let writer = tokio::spawn(async move {
            while let Some((chunk, due)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if dead.load(Ordering::Relaxed) {
                    continue;
                }
                if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let mut buf = vec![0u8; CHUNK];
        let closed = self.closed.clone();
        let caller = self.caller;
        let lane = async {
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (cut, shaping) = {
                    let r = self.rules.borrow();
                    (r.cut(self.from, self.to), r.shaping(self.from))
                };
                if cut {
                    self.dead.store(true, Ordering::Relaxed);
                }
                if self.dead.load(Ordering::Relaxed) {
                    continue; // into the black hole
                }
                let now = tokio::time::Instant::now();
                let due = if shaping.is_none() {
                    now.max(self.shaper.last.unwrap_or(now))
                } else {
                    self.shaper.due(now, shaping)
                };
                if tx.send((buf[..n].to_vec(), due)).await.is_err() {
                    break;
                }
            }
        };
        if caller {
            lane.await;
            closed.notify_one();
        } else {
            tokio::select! {
                _ = lane => {}
                _ = async { closed.notified().await; tokio::time::sleep(LINGER).await } => {}
            }
        }
        drop(tx);
        let _ = writer.await;
    }
}

impl Transport for Faulty {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        self.inner.bind(addr)
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let peer = self.book.lock().expect("book").get(&addr).copied();
            let Some(peer) = peer else {
                return self.inner.connect(addr).await;
            };
            // Across a partition a connect goes unanswered until it heals.
            let mut rules = self.rules.clone();
            loop {
                if !rules.borrow_and_update().cut(self.me, peer) {
                    break;
                }
                if rules.changed().await.is_err() {
                    return Err(io::Error::other("the fault layer stopped"));
                }
            }
            let stream = self.inner.connect(addr).await?;
            let n = self.conns.fetch_add(1, Ordering::Relaxed);
            let seed = |dir: u64| {
                self.seed ^ ((self.me.0 as u64) << 48) ^ ((peer.0 as u64) << 32) ^ (n << 1 | dir)
            };
            let dead = Arc::new(AtomicBool::new(false));
            let closed = Arc::new(tokio::sync::Notify::new());
            let (app, net) = tokio::io::duplex(CHUNK * 4);
            let (app_rd, app_wr) = tokio::io::split(net);
            let (net_rd, net_wr) = tokio::io::split(stream);
            let out = Lane {
                from: self.me,
                to: peer,
                rules: self.rules.clone(),
                dead: dead.clone(),
                shaper: Shaper::new(seed(0)),
                closed: closed.clone(),
                caller: true,
            };
            let back = Lane {
                from: peer,
                to: self.me,
                rules: self.rules.clone(),
                dead,
                shaper: Shaper::new(seed(1)),
                closed,
                caller: false,
            };
            tokio::spawn(out.run(app_rd, net_wr));
            tokio::spawn(back.run(net_rd, app_wr));
            Ok(Box::new(app) as BoxStream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_network_connects_to_listeners_and_refuses_elsewhere() {
        let net = Memory::default();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut a = net.bind(any).await.unwrap();
        let addr = a.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(
            net.bind(addr).await.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        let mut client = net.connect(addr).await.unwrap();
        let (mut server, _) = a.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let b = net.bind(any).await.unwrap();
        assert_ne!(b.local_addr().unwrap(), addr);
        drop(a);
        assert_eq!(
            net.connect(addr).await.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused),
            "a listener that is gone refuses"
        );
        // Its address can be bound again.
        assert!(net.bind(addr).await.is_ok());
    }

    fn rules(faults: Vec<NetFault>) -> NetRules {
        NetRules { faults }
    }

    #[test]
    fn a_partition_cuts_between_groups_only() {
        let r = rules(vec![NetFault::Partition {
            groups: vec![vec![NodeId(5)], vec![NodeId(6), NodeId(0)]],
        }]);
        assert!(r.cut(NodeId(5), NodeId(6)) && r.cut(NodeId(0), NodeId(5)));
        assert!(!r.cut(NodeId(6), NodeId(0)), "same group");
        assert!(
            !r.cut(NodeId(1), NodeId(5)),
            "a node in no group reaches all"
        );
        assert!(!NetRules::default().cut(NodeId(5), NodeId(6)));
    }

    #[test]
    fn shaping_is_per_sender_and_adds_up() {
        let r = rules(vec![
            NetFault::Delay {
                on: NodeId(6),
                delay_ms: 50,
                jitter_ms: 10,
            },
            NetFault::Loss {
                on: NodeId(6),
                per_mille: 100,
            },
        ]);
        let s = r.shaping(NodeId(6));
        assert_eq!(s.delay, Duration::from_millis(50));
        assert_eq!(s.per_mille, 100);
        assert!(r.shaping(NodeId(5)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn delays_stay_within_the_jitter_never_reorder_and_repeat_with_the_seed() {
        let s = Shaping {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            per_mille: 0,
        };
        let draw = |seed| {
            let mut sh = Shaper::new(seed);
            let t0 = tokio::time::Instant::now();
            (0..200)
                .map(|i| sh.due(t0 + Duration::from_millis(i), s) - t0)
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same delays");
        assert_ne!(a, draw(8));
        for (i, d) in a.iter().enumerate() {
            let sent = Duration::from_millis(i as u64);
            assert!(*d >= sent + Duration::from_millis(40), "{i}: {d:?}");
            assert!(*d <= sent + Duration::from_millis(60) + Duration::from_millis(10));
        }
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "no overtaking");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_chunk_costs_a_retransmission_timeout_about_as_often_as_the_loss() {
        let s = Shaping {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            per_mille: 100,
        };
        let mut sh = Shaper::new(1);
        let mut late = 0;
        for i in 0..10_000u64 {
            // Far apart, so no chunk waits for the one before it.
            let t = tokio::time::Instant::now() + Duration::from_secs(100 * i);
            if sh.due(t, s) - t >= MIN_RTO {
                late += 1;
            }
        }
        assert!((800..1200).contains(&late), "{late} of 10000 at 10% loss");
    }

    #[tokio::test]
    async fn a_partition_black_holes_an_open_connection_and_holds_new_ones_until_it_heals() {
        let (faulty, control) = Faulty::over(Tcp::shared(), NodeId(5), 1);
        let mut l = Tcp.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        control.set_book([(NodeId(6), addr)]);
        let mut c = faulty.connect(addr).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        control.set(rules(vec![NetFault::Partition {
            groups: vec![vec![NodeId(5)], vec![NodeId(6)]],
        }]));
        c.write_all(b"lost").await.unwrap();
        s.write_all(b"lost").await.unwrap();
        let quiet = Duration::from_millis(200);
        assert!(tokio::time::timeout(quiet, s.read(&mut got)).await.is_err());
        assert!(tokio::time::timeout(quiet, c.read(&mut got)).await.is_err());
        let pending = tokio::time::timeout(quiet, faulty.connect(addr)).await;
        assert!(pending.is_err(), "a connect across the cut waits");

        control.set(NetRules::default());
        let mut again = faulty.connect(addr).await.unwrap();
        let (mut s2, _) = l.accept().await.unwrap();
        again.write_all(b"back").await.unwrap();
        s2.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
        // The old connection stays dead after the heal.
        c.write_all(b"gone").await.unwrap();
        assert!(tokio::time::timeout(quiet, s.read(&mut got)).await.is_err());
    }
}
