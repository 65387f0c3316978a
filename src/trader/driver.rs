//! The thin async driver of a cached trader: owns the journal, the link to
//! the warehouse and the timers, and feeds the pure [`Cache`].
//!
//! One task. Each step takes every request waiting (up to [`STEP_BATCH`]), or
//! one warehouse answer, or a timer; hands it to the cache; then carries out
//! the cache's actions: first one journal transaction for everything accepted
//! in the step (fsync), then the replies, then the warehouse calls. So no
//! client hears of a request before it is on disk, and one fsync serves every
//! request that arrived together (group commit).
//!
//! What the warehouse confirmed is dropped from the journal lazily: the
//! confirmed keys ride along with the next step's transaction, or go alone
//! once they have waited [`FORGET_WITHIN`] (and before the driver exits). A
//! confirmation costs no fsync of its own while requests keep coming; before
//! this, every flush's confirmation was a transaction of its own, one fsync
//! the next clients' step waited behind. Forgetting late is safe: a journal
//! entry the warehouse already applied is deduped if it is ever flushed again
//! (a restart), and the checker counts an entry as stranded only if the
//! warehouse never applied it.
//!
//! On stop the driver refuses new requests and flushes what is queued, for at
//! most [`DRAIN`]; anything the warehouse did not confirm by then stays in the
//! journal (and is reported as unflushed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cached::{Action, Cache, Key, Settings, Token};
use super::journal::Journal;
use crate::clock::Lamport;
use crate::link::Link;
use crate::node::{IoMode, NodeContext, now};
use crate::wire::{Body, FlushEntry, Order, Refusal, RequestId, Side};

/// Requests that may wait for the driver; beyond this the connections wait.
const CMD_QUEUE: usize = 4096;
/// Most requests one step (one journal transaction) takes.
const STEP_BATCH: usize = 256;
/// How long a stopping trader keeps trying to flush its queue. Less than the
/// launcher's grace for a stopping node (5 s), so the trader exits on its own.
pub const DRAIN: Duration = Duration::from_secs(3);
/// Longest a confirmed entry stays in the journal when no step commits
/// (see the module docs): short, so the journal of a trader killed while
/// idle holds little that was already applied.
const FORGET_WITHIN: Duration = Duration::from_millis(50);

struct Cmd {
    side: Side,
    order: Order,
    clock: Lamport,
    reply: oneshot::Sender<Body>,
}

type Answer = (RequestId, Result<Body, String>);

/// A running cached trader.
pub struct CachedTrader {
    cmds: mpsc::Sender<Cmd>,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl CachedTrader {
    /// Opens the journal under the node's data directory and starts the driver;
    /// what the journal holds from before a crash is flushed first.
    pub fn start(
        ctx: &NodeContext,
        warehouse: Arc<Link>,
        call_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let (journal, restored) = Journal::open(&ctx.data_dir)?;
        if !restored.is_empty() {
            tracing::warn!(
                "journal holds {} accepted requests not yet flushed (a restart); flushing them first",
                restored.len()
            );
        }
        let cache = Cache::new(
            ctx.me,
            ctx.config.products.len(),
            Settings::from_config(&ctx.config),
            restored,
            now(),
        );
        let (cmds, rx) = mpsc::channel(CMD_QUEUE);
        let stop = CancellationToken::new();
        let driver = Driver {
            cache,
            membership: ctx.traders.clone(),
            journal: Arc::new(journal),
            warehouse,
            call_timeout,
            replies: HashMap::new(),
            next_token: 0,
            forget: Vec::new(),
            forget_by: None,
            io: ctx.io,
        };
        let task = tokio::spawn(driver.run(rx, stop.clone()));
        Ok(Self {
            cmds,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Answers a client's buy or sell, accepted at Lamport time `clock`.
    pub async fn trade(&self, side: Side, order: Order, clock: Lamport) -> Body {
        let busy = |reason: &str| Body::Refused {
            id: order.id,
            reason: Refusal::Busy {
                reason: reason.into(),
            },
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd {
            side,
            order,
            clock,
            reply,
        };
        if self.cmds.send(cmd).await.is_err() {
            return busy("the trader is stopping");
        }
        rx.await
            .unwrap_or_else(|_| busy("the trader stopped before answering"))
    }

    /// Stops taking requests, flushes what is queued (for at most [`DRAIN`]),
    /// and waits for the driver to close the journal.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().expect("driver handle").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Driver {
    cache: Cache,
    /// Where the trader's epoch comes from, for the cache's fencing tokens.
    membership: Arc<crate::membership::Membership>,
    journal: Arc<Journal>,
    warehouse: Arc<Link>,
    call_timeout: Duration,
    replies: HashMap<Token, oneshot::Sender<Body>>,
    next_token: Token,
    /// Confirmed keys not yet dropped from the journal, and when the first
    /// of them must go at the latest.
    forget: Vec<Key>,
    forget_by: Option<Instant>,
    /// Where the journal's commits run (off the runtime, or inline in the
    /// simulation).
    io: IoMode,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, stop: CancellationToken) {
        let (answers_tx, mut answers) = mpsc::channel::<Answer>(4);
        let mut drain_until: Option<Instant> = None;
        // A peer that is not a trader (yet) has nothing to look up: its first
        // request will. What a journal gave back is flushed at once.
        let mut actions = if self.membership.is_trader() || !self.cache.settled() {
            self.cache.start()
        } else {
            Vec::new()
        };
        loop {
            self.carry_out(actions, &answers_tx).await;
            self.cache.set_view(&self.membership.view());
            if let Some(until) = drain_until
                && (self.cache.settled() || now() >= until)
            {
                break;
            }
            let wake = [self.cache.next_wakeup(), drain_until, self.forget_by]
                .into_iter()
                .flatten()
                .min();
            let sleep = tokio::time::sleep_until(
                wake.map_or_else(far_future, tokio::time::Instant::from_std),
            );
            actions = tokio::select! {
                Some(first) = cmds.recv(), if drain_until.is_none() => {
                    let mut batch = vec![first];
                    while batch.len() < STEP_BATCH {
                        match cmds.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    let now = now();
                    // The epoch the requests are acknowledged in is the one
                    // held now, not at the top of the loop (a restarted
                    // trader learns its view while the driver waits here).
                    self.cache.set_view(&self.membership.view());
                    let mut out = Vec::new();
                    for c in batch {
                        let token = self.next_token;
                        self.next_token += 1;
                        self.replies.insert(token, c.reply);
                        out.extend(self.cache.on_request(now, token, c.side, c.order, c.clock));
                    }
                    out
                }
                Some((id, answer)) = answers.recv() => {
                    self.cache.on_answer(now(), id, answer)
                }
                _ = sleep, if wake.is_some() => self.cache.on_tick(now()),
                _ = stop.cancelled(), if drain_until.is_none() => {
                    let now = now();
                    drain_until = Some(now + DRAIN);
                    // Requests still in the channel never reached the cache:
                    // dropping their reply senders tells their clients so.
                    cmds.close();
                    while cmds.try_recv().is_ok() {}
                    self.cache.stop(now)
                }
            };
        }
        // What was confirmed last leaves the journal before the driver does.
        if !self.forget.is_empty() {
            self.forget_by = Some(now());
            self.carry_out(Vec::new(), &answers_tx).await;
        }
        if !self.cache.settled() {
            tracing::warn!(
                "stopping with {} accepted requests the warehouse has not confirmed; they stay in the journal",
                self.cache.unflushed()
            );
        }
    }

    /// Journal, then reply, then call the warehouse.
    async fn carry_out(&mut self, actions: Vec<Action>, answers: &mpsc::Sender<Answer>) {
        let mut accepted: Vec<(Token, Key, FlushEntry, Body)> = Vec::new();
        let mut forget = Vec::new();
        let mut replies = Vec::new();
        let mut calls = Vec::new();
        for a in actions {
            match a {
                Action::Accept {
                    token,
                    key,
                    entry,
                    reply,
                } => accepted.push((token, key, entry, reply)),
                Action::Reply { token, body } => replies.push((token, body)),
                Action::Forget(keys) => forget.extend(keys),
                Action::Call(body) => calls.push(body),
            }
        }
        if !forget.is_empty() {
            self.forget.extend(forget);
            self.forget_by.get_or_insert_with(|| now() + FORGET_WITHIN);
        }
        let forget_due = self.forget_by.is_some_and(|by| now() >= by);
        if !accepted.is_empty() || forget_due {
            let append: Vec<(Key, FlushEntry)> =
                accepted.iter().map(|(_, k, e, _)| (*k, *e)).collect();
            let forget = std::mem::take(&mut self.forget);
            self.forget_by = None;
            let journal = self.journal.clone();
            let commit = move || {
                let r = journal.commit(&append, &forget);
                (r, forget)
            };
            let done = self.io.run(commit).await;
            let failure = match done {
                Ok((Ok(()), _)) => None,
                Ok((Err(e), forget)) => {
                    // Still confirmed: dropped with a later transaction.
                    self.forget = forget;
                    self.forget_by = Some(now() + FORGET_WITHIN);
                    Some(e.to_string())
                }
                Err(e) => Some(format!("journal task failed: {e}")),
            };
            if let Some(reason) = failure {
                tracing::error!(
                    "{reason}; refusing the {} requests of this step",
                    accepted.len()
                );
                let keys: Vec<Key> = accepted.iter().map(|(_, k, _, _)| *k).collect();
                if let Some(corrected) = self.cache.revoke(&keys) {
                    // A flush of this step must not carry what was just refused.
                    for c in calls.iter_mut() {
                        if c.request_id() == corrected.request_id() {
                            *c = corrected.clone();
                        }
                    }
                }
                for a in accepted.iter_mut() {
                    a.3 = Body::Refused {
                        id: a.2.order.id,
                        reason: Refusal::StorageFailed {
                            reason: reason.clone(),
                        },
                    };
                }
            }
        }
        let accepted = accepted.into_iter().map(|(t, _, _, body)| (t, body));
        for (token, body) in accepted.chain(replies) {
            if let Some(tx) = self.replies.remove(&token) {
                let _ = tx.send(body);
            }
        }
        for body in calls {
            let Some(id) = body.request_id() else {
                continue;
            };
            let (link, tx, timeout) = (self.warehouse.clone(), answers.clone(), self.call_timeout);
            tokio::spawn(async move {
                let what = body.name();
                let answer = match link.call(body, timeout).await {
                    Ok(Body::Refused { reason, .. }) => Err(reason.to_string()),
                    Ok(b) => Ok(b),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = &answer {
                    tracing::warn!(%id, "{what} failed: {e}; will retry");
                }
                let _ = tx.send((id, answer)).await;
            });
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}
