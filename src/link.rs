//! A long-lived, multiplexed connection to one other node.
//!
//! A [`Link`] connects on first use, says hello, and then carries any number of
//! requests at once: each request is filed under its [`RequestId`] and its reply,
//! which may come back out of order, is matched by that id. A lost connection
//! fails the requests in flight on it and is made anew by the next call; so
//! is one on which nothing at all was heard for a whole call's deadline.
//! Every call has a deadline; a slow peer delays only its own callers. A
//! [`Link::traced`] link records what it sends and receives in the node's
//! message trace ([`crate::trace`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::connection::Sender;
use crate::net::Transport;
use crate::trace::Trace;
use crate::wire::frame::read_frame;
use crate::wire::{Body, NodeId, RequestId};

/// How many outgoing messages may wait for the socket before callers wait too.
const OUTBOX: usize = 1024;

/// How a call can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {peer} at {addr}: {reason}")]
    Connect {
        peer: NodeId,
        addr: SocketAddr,
        reason: String,
    },
    #[error("{peer} refused the connection: {reason}")]
    Handshake { peer: NodeId, reason: String },
    #[error("connection to {peer} lost before it answered")]
    Lost { peer: NodeId },
    #[error("{peer} did not answer within {after:?}")]
    Timeout { peer: NodeId, after: Duration },
}

/// Callers waiting for a reply, by request id. Each entry carries the number of
/// the call that filed it, so that a call which gives up removes only its own
/// entry, never that of a later call with the same id (a retry).
type Pending = Arc<Mutex<HashMap<RequestId, (u64, oneshot::Sender<Body>)>>>;

/// Numbers calls, for [`Pending`].
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Conn {
    outbox: mpsc::Sender<Body>,
    pending: Pending,
    closed: CancellationToken,
    /// When the last frame arrived from the peer.
    heard: Arc<Mutex<Instant>>,
}

impl Conn {
    fn heard_since(&self, t: Instant) -> bool {
        *self.heard.lock().expect("heard") >= t
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// The connection from this node to `peer`.
pub struct Link {
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    transport: Arc<dyn Transport>,
    clock: Arc<Clock>,
    trace: Trace,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

impl Link {
    pub fn new(
        me: NodeId,
        peer: NodeId,
        addr: SocketAddr,
        transport: Arc<dyn Transport>,
        clock: Arc<Clock>,
    ) -> Self {
        Self {
            me,
            peer,
            addr,
            transport,
            clock,
            trace: Trace::off(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The link, recording its messages in `trace` (untraced by default).
    pub fn traced(mut self, trace: Trace) -> Self {
        self.trace = trace;
        self
    }

    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Sends a request and waits for its reply, for at most `timeout` in all
    /// (connecting included).
    pub async fn call(&self, body: Body, timeout: Duration) -> Result<Body, CallError> {
        let id = body
            .request_id()
            .expect("Link::call is given requests only; one-way messages use Link::send");
        let peer = self.peer;
        let sent = Instant::now();
        let mut used = None;
        let answer = tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            used = Some(conn.clone());
            let (tx, rx) = oneshot::channel();
            let _filed = Filed::new(&conn.pending, id, tx);
            conn.outbox
                .send(body)
                .await
                .map_err(|_| CallError::Lost { peer })?;
            rx.await.map_err(|_| CallError::Lost { peer })
        })
        .await;
        answer.unwrap_or_else(|_| {
            // A peer that answered nothing at all during the whole call is
            // presumed gone (a silent partition never closes a TCP stream):
            // drop the connection so the next call makes a new one. A peer
            // that is answering others is only slow; keep it.
            if let Some(conn) = used.filter(|c| !c.heard_since(sent)) {
                tracing::warn!(%peer, "nothing heard for {timeout:?}; reconnecting on next call");
                conn.closed.cancel();
            }
            Err(CallError::Timeout {
                peer,
                after: timeout,
            })
        })
    }

    /// Sends a one-way message (no reply expected), within `timeout`.
    pub async fn send(&self, body: Body, timeout: Duration) -> Result<(), CallError> {
        let peer = self.peer;
        tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            conn.outbox
                .send(body)
                .await
                .map_err(|_| CallError::Lost { peer })
        })
        .await
        .map_err(|_| CallError::Timeout {
            peer,
            after: timeout,
        })?
    }

    /// The open connection, or a new one if there is none or it was lost.
    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.closed.is_cancelled()) {
            return Ok(c.clone());
        }
        let conn = Arc::new(self.open().await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn open(&self) -> Result<Conn, CallError> {
        let (peer, addr) = (self.peer, self.addr);
        let stream = self
            .transport
            .connect(addr)
            .await
            .map_err(|e| CallError::Connect {
                peer,
                addr,
                reason: e.to_string(),
            })?;
        let (rd, wr) = tokio::io::split(stream);
        let mut rd = BufReader::with_capacity(crate::node::READ_BUFFER, rd);
        let mut wr = BufWriter::new(wr);
        let sender = Sender {
            me: self.me,
            clock: self.clock.clone(),
            trace: self.trace.clone(),
        };
        sender
            .hello(&mut rd, &mut wr)
            .await
            .map_err(|reason| CallError::Handshake { peer, reason })?;

        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        let heard = Arc::new(Mutex::new(Instant::now()));
        let (outbox, out_rx) = mpsc::channel::<Body>(OUTBOX);
        tokio::spawn(sender.write_all(wr, out_rx, peer, closed.clone()));

        // Reader: hands each reply to the caller waiting under its id.
        let (clock, stop, waiting) = (self.clock.clone(), closed.clone(), pending.clone());
        let trace = self.trace.clone();
        let last = heard.clone();
        tokio::spawn(async move {
            loop {
                let env = tokio::select! {
                    r = read_frame(&mut rd) => r,
                    _ = stop.cancelled() => break,
                };
                let env = match env {
                    Ok(env) => env,
                    Err(e) => {
                        tracing::debug!(%peer, "connection ended: {e}");
                        break;
                    }
                };
                trace.received(&env, clock.observe(env.clock));
                *last.lock().expect("heard") = Instant::now();
                let Some(id) = env.body.reply_id() else {
                    tracing::warn!(%peer, "unexpected {} on a client connection", env.body.name());
                    continue;
                };
                let waiter = waiting.lock().expect("pending map").remove(&id);
                // A reply nobody waits for any more (its caller timed out) is dropped.
                if let Some((_, tx)) = waiter {
                    let _ = tx.send(env.body);
                }
            }
            stop.cancel();
            // Dropping the senders fails every call still in flight on this connection.
            waiting.lock().expect("pending map").clear();
        });

        Ok(Conn {
            outbox,
            pending,
            closed,
            heard,
        })
    }
}

/// A request filed in the pending map for as long as its caller waits.
struct Filed<'a> {
    pending: &'a Pending,
    id: RequestId,
    call: u64,
}

impl<'a> Filed<'a> {
    fn new(pending: &'a Pending, id: RequestId, tx: oneshot::Sender<Body>) -> Self {
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pending.lock().expect("pending map").insert(id, (call, tx));
        Self { pending, id, call }
    }
}

impl Drop for Filed<'_> {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().expect("pending map");
        if pending
            .get(&self.id)
            .is_some_and(|(call, _)| *call == self.call)
        {
            pending.remove(&self.id);
        }
    }
}
