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

pub mod flush;
pub mod ledger;
pub mod store;

use tokio::sync::{mpsc, oneshot};

use crate::net::BoxFuture;
use crate::node::{Handler, IoMode, NodeContext, not_for_role};
use crate::wire::{Body, FlushEntry, NodeId, Order, Refusal, RequestId, Side};
use ledger::Ledger;
use store::{Change, Outcome, Store};

/// Requests that may wait for the ledger thread. Beyond this, connections wait
/// (and with them their peers): backpressure instead of unbounded memory.
const LEDGER_QUEUE: usize = 4096;
/// Most requests one transaction takes; bounds the latency of the first one.
const MAX_BATCH: usize = 512;

enum Job {
    Change(Change, oneshot::Sender<Body>),
    Lookup(RequestId, oneshot::Sender<Body>),
    Flush {
        id: RequestId,
        trader: NodeId,
        entries: Vec<FlushEntry>,
        reply: oneshot::Sender<Body>,
    },
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
        tracing::info!(stock = ?ledger.stock(), "warehouse open");
        let (jobs, mut rx) = mpsc::channel(LEDGER_QUEUE);
        let mut books = Books { store, ledger };
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

    async fn change(&self, side: Side, order: Order) -> Body {
        if let Err(reason) = order.validate(self.products) {
            return Body::Refused {
                id: order.id,
                reason,
            };
        }
        self.submit(
            |tx| Job::Change(Change::Direct { side, order }, tx),
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
                Body::WarehouseBuy(order) => Some(self.change(Side::Buy, order).await),
                Body::WarehouseSell(order) => Some(self.change(Side::Sell, order).await),
                Body::Lookup { id } => Some(self.submit(|tx| Job::Lookup(id, tx), id).await),
                Body::Flush { id, entries } => Some(self.flush(id, from, entries).await),
                other => not_for_role("warehouse", from, &other),
            }
        })
    }
}

/// The books and their store, owned by the ledger.
struct Books {
    store: Store,
    ledger: Ledger,
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
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let (store, ledger) = (&self.store, &mut self.ledger);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Direct requests in arrival order, then every flush of the batch
        // merged in Lamport order; all in one transaction.
        let mut changes: Vec<Change> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Change(c, _) => Some(*c),
                _ => None,
            })
            .collect();
        let direct = changes.len();
        let flushes: Vec<(NodeId, Vec<FlushEntry>)> = batch
            .iter_mut()
            .filter_map(|j| match j {
                Job::Flush {
                    trader, entries, ..
                } => Some((*trader, std::mem::take(entries))),
                _ => None,
            })
            .collect();
        changes.extend(
            flush::lamport_order(flushes)
                .into_iter()
                .map(|(trader, entry)| Change::Flushed { trader, entry }),
        );
        let before = ledger.clone();
        let outcomes = if changes.is_empty() {
            Ok(Vec::new())
        } else {
            store.apply(ledger, &changes)
        };
        let committed = outcomes.is_ok();
        let mut outcomes = match outcomes {
            Ok(o) => o.into_iter().take(direct),
            Err(e) => {
                tracing::error!("commit failed, {} changes refused: {e}", changes.len());
                *ledger = before;
                Vec::new().into_iter().take(0)
            }
        };
        let stock = ledger.stock();
        for job in batch.drain(..) {
            match job {
                Job::Lookup(id, tx) => {
                    let _ = tx.send(Body::Stock {
                        id,
                        stock: stock.clone(),
                    });
                }
                Job::Flush { id, reply, .. } => {
                    let _ = reply.send(if committed {
                        Body::Flushed {
                            id,
                            stock: stock.clone(),
                        }
                    } else {
                        Body::Refused {
                            id,
                            reason: Refusal::StorageFailed {
                                reason: "commit failed; nothing of the flush was applied".into(),
                            },
                        }
                    });
                }
                Job::Change(c, tx) => {
                    let id = c.order().id;
                    let reply = match outcomes.next() {
                        Some(Outcome::Stale { last }) => Body::Refused {
                            id,
                            reason: Refusal::Stale { id, last },
                        },
                        Some(Outcome::Applied(a) | Outcome::Replayed(a)) => match a.side {
                            Side::Buy => Body::Granted { id, qty: a.qty },
                            Side::Sell => Body::Deposited { id },
                        },
                        None => Body::Refused {
                            id,
                            reason: Refusal::StorageFailed {
                                reason: "commit failed; nothing was applied".into(),
                            },
                        },
                    };
                    let _ = tx.send(reply);
                }
            }
        }
    }
}
