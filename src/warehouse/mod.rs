//! The warehouse: the single source of truth for stock (messages 2, 3, 4, 9).
//!
//! Requests are checked at the door (unknown product, zero or huge quantity are
//! refused and never reach the books), then handed to one ledger thread that
//! owns the books and the store. It takes every request waiting, applies them
//! in one transaction (group commit), commits, and only then answers: an
//! acknowledged change is on disk. Direct buys and sells (messages 2, 3) are
//! applied in arrival order; then the requests of every cache flush (message 9)
//! in the batch, merged in Lamport order ([`flush`]). A retried request id is
//! answered with its first result, never applied again; a late duplicate older
//! than its client's last request is refused as stale (see [`store`]).
//!
//! The warehouse also keeps the market's trader set ([`registry`]): peers
//! join it, the election's result and every later change are committed here
//! by compare-and-set, traders renew their leases here, and every buy, sell,
//! lookup and flushed entry is fenced by the epoch it carries. Membership
//! requests go through the same ledger thread as the books, ahead of the
//! trades of their batch, so a request is judged against the set as it is
//! when the request is applied.

#[cfg(any(test, feature = "sim"))]
pub mod broken;
pub mod flush;
pub mod ledger;
pub mod registry;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use std::time::Instant;

use crate::clock::{Clock, Lamport};
use crate::history::{self, Event};
use crate::membership::{Happening, Record};
use crate::net::BoxFuture;
use crate::node::{Handler, History, IoMode, NodeContext, not_for_role, now};
use crate::wire::{Body, Epoch, FlushEntry, NodeId, Order, Qty, Refusal, RequestId, Side};
use ledger::Ledger;
use registry::Registry;
use store::{Change, Outcome, Store};

/// Requests that may wait for the ledger thread. Beyond this, connections wait
/// (and with them their peers): backpressure instead of unbounded memory.
const LEDGER_QUEUE: usize = 4096;
/// Most requests one transaction takes; bounds the latency of the first one.
const MAX_BATCH: usize = 512;

enum Job {
    /// A buy or sell (messages 2, 3) from `trader` in `epoch`.
    Change {
        trader: NodeId,
        epoch: Epoch,
        change: Change,
        reply: oneshot::Sender<Body>,
    },
    Lookup {
        id: RequestId,
        trader: NodeId,
        epoch: Epoch,
        reply: oneshot::Sender<Body>,
    },
    Flush {
        id: RequestId,
        trader: NodeId,
        entries: Vec<FlushEntry>,
        reply: oneshot::Sender<Body>,
    },
    /// A join, proposal or lease renewal, received at `at`.
    Member {
        at: Instant,
        from: NodeId,
        ask: Body,
        reply: oneshot::Sender<Body>,
    },
}

impl Job {
    /// The fencing check of a trade or lookup; `None` for the rest.
    fn fence(&self, registry: &Registry) -> Option<Result<(), Refusal>> {
        match self {
            Job::Change { trader, epoch, .. } | Job::Lookup { trader, epoch, .. } => {
                Some(registry.fence(*trader, *epoch))
            }
            Job::Flush {
                trader, entries, ..
            } => Some(
                entries
                    .iter()
                    .try_for_each(|e| registry.fence_entry(*trader, e.epoch)),
            ),
            Job::Member { .. } => None,
        }
    }

    /// The job's refusal, with where it goes.
    fn refuse(self, reason: Refusal) -> (oneshot::Sender<Body>, Body) {
        let (id, reply) = match self {
            Job::Change { change, reply, .. } => (change.order().id, reply),
            Job::Lookup { id, reply, .. } | Job::Flush { id, reply, .. } => (id, reply),
            Job::Member { ask, reply, .. } => (ask.request_id().unwrap_or_default(), reply),
        };
        (reply, Body::Refused { id, reason })
    }
}

/// Answers of one batch, each with where it goes.
type Replies = Vec<(oneshot::Sender<Body>, Body)>;

/// How the ledger's answers reach the connections waiting for them.
enum Courier {
    /// Sent at once: the ledger is a task on the node's runtime.
    Direct,
    /// Handed over a whole batch at a time to a task on the runtime, which
    /// sends them. From the ledger's own thread, each answer sent directly
    /// would wake the runtime with a system call of its own (one per
    /// request, 32 after every commit of the bench's market); a batch wakes
    /// it once.
    Runtime(mpsc::UnboundedSender<Replies>),
}

impl Courier {
    /// A courier for a ledger on its own thread, and the task on this
    /// runtime that hands out what it carries.
    fn to_runtime() -> Courier {
        let (tx, mut rx) = mpsc::unbounded_channel::<Replies>();
        tokio::spawn(async move {
            while let Some(replies) = rx.recv().await {
                send_all(replies);
            }
        });
        Courier::Runtime(tx)
    }

    fn deliver(&self, replies: Replies) {
        if replies.is_empty() {
            return;
        }
        match self {
            Courier::Direct => send_all(replies),
            // Gone only as the node stops: the answers' receivers see their
            // senders dropped and refuse, as for any job left unanswered.
            Courier::Runtime(tx) => {
                let _ = tx.send(replies);
            }
        }
    }
}

fn send_all(replies: Replies) {
    for (reply, body) in replies {
        let _ = reply.send(body);
    }
}

/// The warehouse's message handler.
pub struct Warehouse {
    jobs: mpsc::Sender<Job>,
    products: usize,
}

/// Where the ledger runs; [`LedgerRunner::join`] waits until it has closed the store.
pub enum LedgerRunner {
    /// Its own OS thread: storage blocks (fsync) without holding up the runtime.
    Thread(std::thread::JoinHandle<()>),
    /// A task on the node's runtime (simulation): simulated time stands still
    /// while the store works, which keeps a simulated run deterministic.
    Task(tokio::task::JoinHandle<()>),
}

impl LedgerRunner {
    pub async fn join(self) {
        match self {
            LedgerRunner::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            LedgerRunner::Task(t) => {
                let _ = t.await;
            }
        }
    }
}

impl Warehouse {
    /// Opens the store under the node's data directory and starts the ledger.
    pub fn start(ctx: &NodeContext) -> anyhow::Result<(Warehouse, LedgerRunner)> {
        let initial = ctx.config.initial_stock();
        let (store, ledger) = Store::open(&ctx.data_dir, &initial)?;
        let market = &ctx.config.market;
        let registry = Registry::new(
            market.peers,
            market.traders as usize,
            ctx.config.heartbeat.lease,
            ctx.config.election.timeout * 8,
            store.read_views()?,
            now(),
        );
        tracing::info!(stock = ?ledger.stock(), view = %registry.current(), "warehouse open");
        let (jobs, mut rx) = mpsc::channel(LEDGER_QUEUE);
        let courier = match ctx.io {
            IoMode::Threaded => Courier::to_runtime(),
            IoMode::Inline => Courier::Direct,
        };
        let mut books = Books {
            courier,
            store,
            ledger,
            registry,
            me: ctx.me,
            history: ctx.history.clone(),
            clock: ctx.clock.clone(),
        };
        let runner = match ctx.io {
            IoMode::Threaded => {
                LedgerRunner::Thread(std::thread::Builder::new().name("ledger".into()).spawn(
                    move || {
                        while let Some(first) = rx.blocking_recv() {
                            books.settle(first, &mut rx);
                        }
                    },
                )?)
            }
            IoMode::Inline => LedgerRunner::Task(tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    books.settle(first, &mut rx);
                }
            })),
        };
        Ok((
            Warehouse {
                jobs,
                products: initial.len(),
            },
            runner,
        ))
    }

    async fn submit(&self, make: impl FnOnce(oneshot::Sender<Body>) -> Job, id: RequestId) -> Body {
        let (tx, rx) = oneshot::channel();
        let gone = || Body::Refused {
            id,
            reason: Refusal::StorageFailed {
                reason: "the warehouse is shutting down".into(),
            },
        };
        if self.jobs.send(make(tx)).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    async fn change(&self, trader: NodeId, epoch: Epoch, side: Side, order: Order) -> Body {
        if let Err(reason) = order.validate(self.products) {
            return Body::Refused {
                id: order.id,
                reason,
            };
        }
        self.submit(
            |reply| Job::Change {
                trader,
                epoch,
                change: Change::Direct { side, order },
                reply,
            },
            order.id,
        )
        .await
    }

    async fn flush(&self, id: RequestId, trader: NodeId, entries: Vec<FlushEntry>) -> Body {
        if let Err(reason) = flush::validate(&entries, self.products) {
            tracing::warn!(%trader, %id, "{reason}");
            return Body::Refused { id, reason };
        }
        self.submit(
            |reply| Job::Flush {
                id,
                trader,
                entries,
                reply,
            },
            id,
        )
        .await
    }
}

impl Handler for Warehouse {
    fn handle(&self, from: NodeId, body: Body) -> BoxFuture<'_, Option<Body>> {
        Box::pin(async move {
            match body {
                Body::WarehouseBuy { order, epoch } => {
                    Some(self.change(from, epoch, Side::Buy, order).await)
                }
                Body::WarehouseSell { order, epoch } => {
                    Some(self.change(from, epoch, Side::Sell, order).await)
                }
                Body::Lookup { id, epoch } => {
                    let lookup = |reply| Job::Lookup {
                        id,
                        trader: from,
                        epoch,
                        reply,
                    };
                    Some(self.submit(lookup, id).await)
                }
                Body::Flush { id, entries } => Some(self.flush(id, from, entries).await),
                ask @ (Body::Join { .. } | Body::Propose { .. } | Body::Renew { .. }) => {
                    let id = ask.request_id().unwrap_or_default();
                    let at = now();
                    let member = |reply| Job::Member {
                        at,
                        from,
                        ask,
                        reply,
                    };
                    Some(self.submit(member, id).await)
                }
                other => not_for_role("warehouse", from, &other),
            }
        })
    }
}

/// The books and their store, owned by the ledger.
struct Books {
    courier: Courier,
    store: Store,
    ledger: Ledger,
    registry: Registry,
    me: NodeId,
    /// Where each applied cache flush is recorded (`flush` events).
    history: History,
    clock: Arc<Clock>,
}

impl Drop for Books {
    fn drop(&mut self) {
        tracing::info!(stock = ?self.ledger.stock(), "warehouse closed");
    }
}

impl Books {
    /// Takes `first` and every job already waiting (up to [`MAX_BATCH`]),
    /// applies them in one transaction and answers each.
    fn settle(&mut self, first: Job, rx: &mut mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Membership first, in arrival order; then every other job is fenced
        // against the set as it now stands. Both are answered before the
        // commit (a lease renewal does not wait for the books).
        let mut batch = Vec::with_capacity(jobs.len());
        let mut early = Replies::new();
        for job in jobs {
            match job {
                Job::Member {
                    at,
                    from,
                    ask,
                    reply,
                } => early.push((reply, self.member(at, from, ask))),
                job => match job.fence(&self.registry) {
                    Some(Err(reason)) => early.push(job.refuse(reason)),
                    _ => batch.push(job),
                },
            }
        }
        self.courier.deliver(early);
        // Direct requests in arrival order, then every flush of the batch
        // merged in Lamport order; all in one transaction.
        let mut changes: Vec<Change> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Change { change, .. } => Some(*change),
                _ => None,
            })
            .collect();
        let direct = changes.len();
        let mut flushes = Vec::new();
        let mut tallies = Vec::new();
        for job in &mut batch {
            if let Job::Flush {
                id,
                trader,
                entries,
                ..
            } = job
            {
                tallies.push(FlushTally::new(*trader, *id, entries));
                flushes.push((*trader, std::mem::take(entries)));
            }
        }
        changes.extend(
            flush::lamport_order(flushes)
                .into_iter()
                .map(|(trader, entry)| Change::Flushed { trader, entry }),
        );
        let before = self.ledger.clone();
        let outcomes = if changes.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.apply(&mut self.ledger, &changes)
        };
        let outcomes = match outcomes {
            Ok(o) => {
                self.record_flushes(tallies, &changes[direct..], &o[direct..]);
                Some(o)
            }
            Err(e) => {
                tracing::error!("commit failed, {} changes refused: {e}", changes.len());
                self.ledger = before;
                None
            }
        };
        let replies = self.answer(batch, outcomes.as_deref().map(|o| &o[..direct]));
        self.courier.deliver(replies);
    }

    /// The answer to every job of a batch; `direct` holds the outcomes of
    /// its direct changes in order, or `None` if the batch was not committed.
    fn answer(&self, batch: Vec<Job>, direct: Option<&[Outcome]>) -> Replies {
        let stock = self.ledger.stock();
        let committed = direct.is_some();
        let mut outcomes = direct.unwrap_or_default().iter();
        let mut replies = Replies::with_capacity(batch.len());
        for job in batch {
            match job {
                Job::Lookup { id, reply, .. } => {
                    replies.push((
                        reply,
                        Body::Stock {
                            id,
                            stock: stock.clone(),
                        },
                    ));
                }
                // Answered before the batch was formed (see `settle`); never
                // a panic in the ledger thread if that ever changes.
                job @ Job::Member { .. } => {
                    debug_assert!(false, "membership jobs are answered before the batch");
                    replies.push(job.refuse(Refusal::StorageFailed {
                        reason: "a membership request reached the books' batch".into(),
                    }));
                }
                Job::Flush { id, reply, .. } => {
                    let body = if committed {
                        Body::Flushed {
                            id,
                            stock: stock.clone(),
                        }
                    } else {
                        Body::Refused {
                            id,
                            reason: Refusal::StorageFailed {
                                reason: "the batch could not be committed; nothing of this flush was applied".into(),
                            },
                        }
                    };
                    replies.push((reply, body));
                }
                Job::Change {
                    change: c,
                    reply: tx,
                    ..
                } => {
                    let id = c.order().id;
                    let reply = match outcomes.next() {
                        Some(Outcome::Stale { last }) => Body::Refused {
                            id,
                            reason: Refusal::Stale { id, last: *last },
                        },
                        Some(Outcome::Applied(a) | Outcome::Replayed(a)) => match a.side {
                            // A flushed buy replayed to a retry: what its
                            // trader granted, shipped or oversold.
                            Side::Buy => Body::Granted {
                                id,
                                qty: Qty(a.qty.0 + a.oversold.0),
                            },
                            Side::Sell => Body::Deposited { id },
                        },
                        None => Body::Refused {
                            id,
                            reason: Refusal::StorageFailed {
                                reason: "the batch could not be committed".into(),
                            },
                        },
                    };
                    replies.push((tx, reply));
                }
            }
        }
        replies
    }

    /// Answers a join, a proposal (committing it if it may be) or a lease
    /// renewal.
    fn member(&mut self, at: Instant, from: NodeId, ask: Body) -> Body {
        let id = ask.request_id().unwrap_or_default();
        let answer = match ask {
            Body::Join { .. } => self.registry.join(at, from).map(|()| Body::Joined {
                id,
                view: self.registry.current(),
                first: self.registry.first(),
                open: self.registry.open(),
            }),
            Body::Propose {
                base,
                traders,
                cause,
                ..
            } => self
                .registry
                .decide(at, from, base, &traders)
                .and_then(|view| {
                    self.store
                        .commit_view(&view)
                        .map_err(|e| Refusal::StorageFailed {
                            reason: e.to_string(),
                        })?;
                    self.registry.commit(view.clone());
                    tracing::info!(%view, proposer = %from, %cause, "trader set committed");
                    let record = Record {
                        wall_us: history::wall_us(),
                        lamport: Some(self.clock.tick()),
                        by: Some(self.me),
                        what: Happening::Committed {
                            view: view.clone(),
                            proposer: from,
                            cause,
                        },
                    };
                    self.history.record(&Event::Failover(record));
                    let _ = self.history.hand_off();
                    Ok(Body::Committed { id, view })
                }),
            Body::Renew { epoch, .. } => {
                self.registry
                    .renew(at, from, epoch)
                    .map(|(view, lease)| Body::Leased {
                        id,
                        view,
                        ms: lease.as_millis() as u64,
                    })
            }
            other => Err(Refusal::NotForRole {
                role: "warehouse".into(),
                message: other.name().into(),
            }),
        };
        answer.unwrap_or_else(|reason| Body::Refused { id, reason })
    }

    /// Writes a `flush` history event per committed cache flush: its
    /// requests and what of them the warehouse could not fill. A replayed
    /// entry (a flush retried) was counted when it was first applied.
    fn record_flushes(
        &self,
        mut tallies: Vec<FlushTally>,
        flushed: &[Change],
        outcomes: &[Outcome],
    ) {
        for (c, o) in flushed.iter().zip(outcomes) {
            let (Change::Flushed { trader, entry }, Outcome::Applied(a)) = (c, o) else {
                continue;
            };
            if a.oversold.0 == 0 {
                continue;
            }
            if let Some(t) = tallies
                .iter_mut()
                .find(|t| t.event.trader == *trader && t.ids.contains(&entry.order.id))
            {
                t.event.oversells += 1;
                t.event.oversold += u64::from(a.oversold.0);
            }
        }
        for mut t in tallies {
            t.event.wall_us = history::wall_us();
            t.event.lamport = self.clock.tick();
            self.history.record(&Event::Flush(t.event));
        }
    }
}

/// One cache flush of a batch, as the history will tell it.
struct FlushTally {
    event: history::Flush,
    ids: HashSet<RequestId>,
}

impl FlushTally {
    fn new(trader: NodeId, id: RequestId, entries: &[FlushEntry]) -> Self {
        FlushTally {
            event: history::Flush {
                trader,
                id,
                requests: entries.len() as u32,
                oversells: 0,
                oversold: 0,
                wall_us: 0,
                lamport: Lamport(0),
            },
            ids: entries.iter().map(|e| e.order.id).collect(),
        }
    }
}
