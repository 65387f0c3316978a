//! Both ends of a connection: the hello that opens it and the writer that
//! stamps and sends every later frame. The listener's side
//! ([`crate::node::serve`]) and the caller's ([`crate::link::Link`]) differ
//! only in who says hello first and what they do with what they read; what
//! they write, and how, is here once.
//!
//! A connection opens with [`Body::Hello`] from the side that connected,
//! carrying [`PROTOCOL_VERSION`]; the listener answers [`Body::Welcome`], or
//! [`Refusal::VersionMismatch`] and closes. Every frame is stamped with the
//! sender's Lamport clock as it leaves ([`Clock::tick`]); the writer flushes
//! once its queue is empty, so pipelined messages share a system call, and
//! records each frame it sends in the node's message trace ([`Trace`]).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::trace::Trace;
use crate::wire::frame::{FrameError, read_frame, write_frame};
use crate::wire::{Body, Envelope, NodeId, PROTOCOL_VERSION, Refusal, RequestId};

/// Who writes on a connection: this node, stamping with its clock.
#[derive(Clone)]
pub struct Sender {
    pub me: NodeId,
    pub clock: Arc<Clock>,
    /// Where [`Sender::write_all`] records what it sends.
    pub trace: Trace,
}

impl Sender {
    fn stamp(&self, body: Body) -> Envelope {
        Envelope {
            from: self.me,
            clock: self.clock.tick(),
            body,
        }
    }

    /// Writes one frame and flushes it (the handshake's frames).
    pub async fn send_now<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        body: Body,
    ) -> Result<(), FrameError> {
        write_frame(wr, &self.stamp(body)).await?;
        wr.flush().await.map_err(FrameError::from)
    }

    /// The caller's side of the hello: says hello, waits for the welcome.
    pub async fn hello<R, W>(&self, rd: &mut R, wr: &mut W) -> Result<(), String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let hello = Body::Hello {
            version: PROTOCOL_VERSION,
        };
        self.send_now(wr, hello).await.map_err(|e| e.to_string())?;
        let answer = read_frame(rd).await.map_err(|e| e.to_string())?;
        self.clock.observe(answer.clock);
        match answer.body {
            Body::Welcome { .. } => Ok(()),
            Body::Refused { reason, .. } => Err(reason.to_string()),
            other => Err(format!("answered hello with {}", other.name())),
        }
    }

    /// The listener's side of the hello, given the first frame `hello` from
    /// `peer`: welcomes it, or refuses a version it does not speak.
    pub async fn welcome<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        peer: NodeId,
        hello: Body,
    ) -> Result<(), String> {
        match hello {
            Body::Hello {
                version: PROTOCOL_VERSION,
            } => {
                let welcome = Body::Welcome {
                    version: PROTOCOL_VERSION,
                };
                self.send_now(wr, welcome).await.map_err(|e| e.to_string())
            }
            Body::Hello { version } => {
                let reason = Refusal::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                };
                let refusal = Body::Refused {
                    id: RequestId::default(),
                    reason: reason.clone(),
                };
                let _ = self.send_now(wr, refusal).await;
                Err(format!("{peer}: {reason}"))
            }
            other => Err(format!(
                "{peer} opened with {} instead of a hello",
                other.name()
            )),
        }
    }

    /// Sends every body from `outbox`, stamped as it leaves, until every
    /// sender of the outbox is gone (what was queued goes out first: replies
    /// already computed leave before the socket closes) or a write fails;
    /// then cancels `stop`, so the reading half stops too.
    pub async fn write_all<W: AsyncWrite + Unpin>(
        self,
        mut wr: BufWriter<W>,
        mut outbox: mpsc::Receiver<Body>,
        peer: NodeId,
        stop: CancellationToken,
    ) {
        while let Some(body) = outbox.recv().await {
            let env = self.stamp(body);
            self.trace.sent(peer, &env);
            if let Err(e) = write_frame(&mut wr, &env).await {
                tracing::warn!(%peer, "send failed: {e}");
                break;
            }
            if outbox.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        stop.cancel();
    }
}
