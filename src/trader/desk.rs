//! The trader's desk: the one worker loop through which every request a
//! trader serves passes, trades (messages 5, 6) and heartbeats (message 7)
//! alike.
//!
//! The worker takes requests from a bounded queue; it starts each trade as its
//! own task (trades settle concurrently) and answers each heartbeat itself.
//! So a heartbeat is answered only while the machinery that serves trades is
//! running: if the worker stops (the document's bug: a dead worker behind a
//! socket that still accepts), trades and heartbeats both go unanswered and
//! the other traders declare this one dead. [`Desk::wedge`] stops the worker
//! on purpose, for the fault experiments.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Trader;
use crate::node::Handler;
use crate::wire::{Body, NodeId, Refusal};

/// Requests waiting for the worker; beyond this, connections wait.
const QUEUE: usize = 1024;
/// Trades settling at once; beyond this the worker waits (and with it the
/// heartbeats: an overloaded trader looks slow, and past the heartbeat timeout
/// dead, which is what its clients see too).
const MAX_TRADES: usize = 1024;

struct Job {
    from: NodeId,
    body: Body,
    reply: oneshot::Sender<Option<Body>>,
}

/// A trader's worker and its queue.
pub struct Desk {
    jobs: mpsc::Sender<Job>,
    wedged: CancellationToken,
}

impl Desk {
    /// Starts the worker; it runs until `stop`.
    pub fn start(trader: Arc<Trader>, stop: CancellationToken) -> Desk {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let wedged = CancellationToken::new();
        tokio::spawn(work(trader, rx, wedged.clone(), stop));
        Desk { jobs, wedged }
    }

    /// Serves one request through the worker.
    pub async fn serve(&self, from: NodeId, body: Body) -> Option<Body> {
        let id = body.request_id();
        let (tx, rx) = oneshot::channel();
        let job = Job {
            from,
            body,
            reply: tx,
        };
        let unavailable = || {
            id.map(|id| Body::Refused {
                id,
                reason: Refusal::TraderUnavailable,
            })
        };
        if self.jobs.send(job).await.is_err() {
            return unavailable();
        }
        rx.await.unwrap_or_else(|_| unavailable())
    }

    /// Whether the worker answers a heartbeat within `timeout`: the trader's
    /// own check that it is serving, before it renews its lease.
    pub async fn answers(&self, timeout: std::time::Duration) -> bool {
        let probe = Body::Heartbeat {
            id: crate::wire::RequestId::default(),
            view: crate::wire::View::default(),
        };
        let answer = tokio::time::timeout(timeout, self.serve(NodeId::WAREHOUSE, probe)).await;
        matches!(answer, Ok(Some(Body::HeartbeatAck { .. })))
    }

    /// Stops the worker while the node (and its socket) lives on: requests
    /// queue up unanswered.
    pub fn wedge(&self) {
        self.wedged.cancel();
    }
}

async fn work(
    trader: Arc<Trader>,
    mut rx: mpsc::Receiver<Job>,
    wedged: CancellationToken,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_TRADES));
    loop {
        let job = tokio::select! {
            // A wedge takes effect before any request still queued.
            biased;
            _ = wedged.cancelled() => break,
            _ = stop.cancelled() => return,
            j = rx.recv() => match j { Some(j) => j, None => return },
        };
        match job.body {
            Body::Heartbeat { id, view } => {
                let epoch = view.epoch;
                let _ = job.reply.send(Some(Body::HeartbeatAck { id, epoch }));
            }
            body => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let trader = trader.clone();
                tokio::spawn(async move {
                    let answer = trader.handle(job.from, body).await;
                    let _ = job.reply.send(answer);
                    drop(permit);
                });
            }
        }
    }
    tracing::warn!("trader worker wedged: requests are accepted and never served");
    // Hold the queue open, unread, until the node stops: callers wait and time
    // out, as with a dead worker thread behind a live socket.
    stop.cancelled().await;
    drop(rx);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RequestId;
    use std::time::Duration;

    #[tokio::test]
    async fn heartbeats_are_answered_only_while_the_worker_runs() {
        let stop = CancellationToken::new();
        let trader = Arc::new(Trader::unconnected(1));
        let desk = Desk::start(trader, stop.clone());
        let id = RequestId {
            node: NodeId(5),
            seq: 1,
        };
        let view = crate::wire::View::default();
        let beat = || Body::Heartbeat {
            id,
            view: view.clone(),
        };
        let epoch = view.epoch;
        assert_eq!(
            desk.serve(NodeId(5), beat()).await,
            Some(Body::HeartbeatAck { id, epoch })
        );
        assert!(desk.answers(Duration::from_millis(200)).await);
        desk.wedge();
        assert!(!desk.answers(Duration::from_millis(50)).await);
        let answer =
            tokio::time::timeout(Duration::from_millis(200), desk.serve(NodeId(5), beat()));
        assert!(answer.await.is_err(), "a wedged desk must not answer");
        stop.cancel();
    }
}
