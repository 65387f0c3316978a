//! The thin async driver of a cached trader: owns the journal, the link to
//! the warehouse and the timers, and feeds the pure [`Cache`].
//!
//! One task. Each step takes every request waiting (up to [`STEP_BATCH`]), or
//! one warehouse answer, or a timer, or the news of a journal sync; hands it
//! to the cache; then carries out the cache's actions: it appends one journal
//! record for everything accepted in the step, and holds the step's replies
//! and warehouse calls until that record is durable. So no client hears of a
//! request before it is on disk, and no flush carries it before then either.
//!
//! The syncs run on a thread of the journal's own ([`Syncer`]), back to back
//! while records wait, each covering every record written before it began
//! (group commit). The driver does not wait for them: while one runs, it
//! takes the next requests and appends their record, which the next sync
//! covers. Steps are released in order, oldest first. Before this, a step
//! waited for the whole of the last step's commit, then for its own, and
//! each commit made two thread hand-offs through tokio's blocking pool.
//!
//! What the warehouse confirmed is dropped from the journal lazily: the
//! confirmed keys ride along with the next step's record, or go alone once
//! they have waited [`FORGET_WITHIN`] (and before the driver exits). A
//! record of forgotten keys alone is not synced: it waits for the next sync.
//! Forgetting late, or losing a forget in a crash, is safe: a journal
//! entry the warehouse already applied is deduped if it is ever flushed again
//! (a restart), and the checker counts an entry as stranded only if the
//! warehouse never applied it.
//!
//! On stop the driver refuses new requests and flushes what is queued, for at
//! most [`DRAIN`]; anything the warehouse did not confirm by then stays in the
//! journal (and is reported as unflushed).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cached::{Action, Cache, Key, Settings, Token};
use super::journal::{Journal, JournalError, Ticket};
use crate::clock::Lamport;
use crate::link::Link;
use crate::node::{IoMode, NodeContext, now};
use crate::syncer::{Durable, Syncer};
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
        let journal = Arc::new(journal);
        let driver = Driver::new(
            cache,
            ctx.traders.clone(),
            journal,
            warehouse,
            call_timeout,
            ctx.io,
        );
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
    /// What the sync thread syncs: the journal itself, or in a test the
    /// journal behind a gate that holds its syncs back. Must sync `journal`.
    durable: Arc<dyn Durable>,
    warehouse: Arc<Link>,
    call_timeout: Duration,
    replies: HashMap<Token, oneshot::Sender<Body>>,
    next_token: Token,
    /// Confirmed keys not yet dropped from the journal, and when the first
    /// of them must go at the latest.
    forget: Vec<Key>,
    forget_by: Option<Instant>,
    /// Where the journal's syncs run (off the runtime, or inline in the
    /// simulation).
    io: IoMode,
    /// Steps waiting for their journal record to be durable, oldest first.
    pending: VecDeque<Step>,
    /// The journal's sync thread (started by the first sync it is asked for).
    syncer: Option<Syncer>,
}

impl Driver {
    fn new(
        cache: Cache,
        membership: Arc<crate::membership::Membership>,
        journal: Arc<Journal>,
        warehouse: Arc<Link>,
        call_timeout: Duration,
        io: IoMode,
    ) -> Self {
        Driver {
            cache,
            membership,
            durable: journal.clone(),
            journal,
            warehouse,
            call_timeout,
            replies: HashMap::new(),
            next_token: 0,
            forget: Vec::new(),
            forget_by: None,
            io,
            pending: VecDeque::new(),
            syncer: None,
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, stop: CancellationToken) {
        let (answers_tx, mut answers) = mpsc::channel::<Answer>(4);
        let (synced_tx, mut synced) = mpsc::unbounded_channel();
        let io = Io {
            answers: answers_tx,
            synced: synced_tx,
        };
        let mut drain_until: Option<Instant> = None;
        // A peer that is not a trader (yet) has nothing to look up: its first
        // request will. What a journal gave back is flushed at once.
        let mut actions = if self.membership.is_trader() || !self.cache.settled() {
            self.cache.start()
        } else {
            Vec::new()
        };
        loop {
            self.carry_out(actions, &io).await;
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
                Some(done) = synced.recv() => {
                    if let Err(reason) = done {
                        self.journal_failed(reason).await;
                    }
                    Vec::new()
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
        // What was confirmed last leaves the journal before the driver does,
        // and what waits for a sync is synced and sent.
        if !self.forget.is_empty() {
            self.forget_by = Some(now());
            self.carry_out(Vec::new(), &io).await;
        }
        let last = self.journal.last();
        if let Err(e) = self.on_journal(move |j| j.sync(last)).await {
            self.journal_failed(e).await;
        }
        self.release(&io.answers);
        if !self.cache.settled() {
            tracing::warn!(
                "stopping with {} accepted requests the warehouse has not confirmed; they stay in the journal",
                self.cache.unflushed()
            );
        }
    }

    /// Journals what `actions` accepted and queues the step's replies and
    /// warehouse calls behind its record (see the module docs); then starts
    /// a sync if one is due and sends whatever is now durable.
    async fn carry_out(&mut self, actions: Vec<Action>, io: &Io) {
        let mut step = Step::default();
        let mut forget = Vec::new();
        for a in actions {
            match a {
                Action::Accept {
                    token,
                    key,
                    entry,
                    reply,
                } => step.accepted.push((token, key, entry, reply)),
                Action::Reply { token, body } => step.replies.push((token, body)),
                Action::Forget(keys) => forget.extend(keys),
                Action::Call(body) => step.calls.push(body),
            }
        }
        if !forget.is_empty() {
            self.forget.extend(forget);
            self.forget_by.get_or_insert_with(|| now() + FORGET_WITHIN);
        }
        let forget_due = self.forget_by.is_some_and(|by| now() >= by);
        let accepts = !step.accepted.is_empty();
        if !step.is_empty() {
            self.pending.push_back(step);
        }
        if accepts || forget_due {
            let last = self.pending.back_mut().filter(|_| accepts);
            let append: Vec<(Key, FlushEntry)> = last
                .as_ref()
                .map(|s| s.accepted.iter().map(|(_, k, e, _)| (*k, *e)).collect())
                .unwrap_or_default();
            let forget = std::mem::take(&mut self.forget);
            self.forget_by = None;
            match self.journal.append(&append, &forget) {
                Ok(ticket) => {
                    if let Some(last) = last {
                        last.ticket = Some(ticket);
                    }
                }
                Err(e) => {
                    if !forget.is_empty() {
                        // Still confirmed: dropped with a later record.
                        self.forget = forget;
                        self.forget_by = Some(now() + FORGET_WITHIN);
                    }
                    let reason = e.to_string();
                    let keys = if append.is_empty() {
                        Vec::new()
                    } else {
                        let newest = self.pending.len() - 1;
                        self.take_back(|i, _| i == newest, &reason)
                    };
                    self.rewrite(keys).await;
                }
            }
        }
        self.sync_due(io).await;
        if self.journal.wants_compaction()
            && let Err(e) = self.on_journal(Journal::compact).await
        {
            tracing::warn!("cannot compact: {e}");
        }
        self.release(&io.answers);
    }

    /// Asks the sync thread for a sync of everything written if a step waits
    /// for one; in the simulation, syncs at once.
    async fn sync_due(&mut self, io: &Io) {
        let waiting = self.pending.iter().filter_map(|s| s.ticket).max();
        let Some(ticket) = waiting.filter(|t| !self.journal.is_synced(*t)) else {
            return;
        };
        match self.io {
            IoMode::Inline => {
                if let Err(e) = self.journal.sync(ticket) {
                    self.journal_failed(e.to_string()).await;
                }
            }
            IoMode::Threaded => {
                let syncer = self.syncer.get_or_insert_with(|| {
                    let synced = io.synced.clone();
                    let done = move |r: Result<u64, String>| {
                        let _ = synced.send(r.map(|_| ()));
                    };
                    Syncer::new(self.durable.clone(), Box::new(done))
                });
                if let Err(e) = syncer.want(ticket.0) {
                    self.journal_failed(format!("cannot start the journal's sync thread: {e}"))
                        .await;
                }
            }
        }
    }

    /// A sync failed: the records not yet known durable are in doubt. If the
    /// journal can be rewritten they are durable after all; if not, their
    /// requests are taken back and their clients refused.
    async fn journal_failed(&mut self, reason: String) {
        tracing::error!("{reason}; rewriting the journal");
        if self.rewrite(Vec::new()).await {
            return;
        }
        let journal = self.journal.clone();
        let keys = self.take_back(
            |_, s| s.ticket.is_some_and(|t| !journal.is_synced(t)),
            &reason,
        );
        self.rewrite(keys).await;
    }

    /// Rewrites the journal without `drop` (see [`Journal::recover`]);
    /// whether it could.
    async fn rewrite(&mut self, drop: Vec<Key>) -> bool {
        match self.on_journal(move |j| j.recover(&drop)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("{e}; refusing requests until the journal can be rewritten");
                false
            }
        }
    }

    /// Runs `f` on the journal where its blocking work runs (see `io`); a
    /// failure, or a task that died, as its message.
    async fn on_journal(
        &self,
        f: impl FnOnce(&Journal) -> Result<(), JournalError> + Send + 'static,
    ) -> Result<(), String> {
        let journal = self.journal.clone();
        match self.io.run(move || f(&journal)).await {
            Ok(done) => done.map_err(|e| e.to_string()),
            Err(e) => Err(format!("journal task failed: {e}")),
        }
    }

    /// Takes back the accepted requests of the pending steps `which` picks
    /// (by index and step): out of the cache, their clients told the journal
    /// failed, and a flush that carried them corrected. Returns their keys.
    fn take_back(&mut self, which: impl Fn(usize, &Step) -> bool, reason: &str) -> Vec<Key> {
        let picked: Vec<usize> = (self.pending.iter().enumerate())
            .filter(|(i, s)| which(*i, s) && !s.accepted.is_empty())
            .map(|(i, _)| i)
            .collect();
        let keys: Vec<Key> = (picked.iter())
            .flat_map(|i| self.pending[*i].accepted.iter().map(|(_, k, _, _)| *k))
            .collect();
        if keys.is_empty() {
            return keys;
        }
        tracing::error!("{reason}; refusing {} accepted requests", keys.len());
        let corrected = self.cache.revoke(&keys);
        for (i, step) in self.pending.iter_mut().enumerate() {
            if let Some(corrected) = &corrected {
                // A flush not yet sent must not carry what was just refused.
                for c in step.calls.iter_mut() {
                    if c.request_id() == corrected.request_id() {
                        *c = corrected.clone();
                    }
                }
            }
            if picked.contains(&i) {
                step.ticket = None;
                for a in step.accepted.iter_mut() {
                    a.3 = Body::Refused {
                        id: a.2.order.id,
                        reason: Refusal::StorageFailed {
                            reason: reason.to_string(),
                        },
                    };
                }
            }
        }
        keys
    }

    /// Sends the replies and makes the warehouse calls of every step, oldest
    /// first, whose record is durable.
    fn release(&mut self, answers: &mpsc::Sender<Answer>) {
        while let Some(front) = self.pending.front() {
            if front.ticket.is_some_and(|t| !self.journal.is_synced(t)) {
                break;
            }
            let step = self.pending.pop_front().expect("a front step");
            let accepted = step.accepted.into_iter().map(|(t, _, _, body)| (t, body));
            for (token, body) in accepted.chain(step.replies) {
                if let Some(tx) = self.replies.remove(&token) {
                    let _ = tx.send(body);
                }
            }
            for body in step.calls {
                self.call(body, answers);
            }
        }
    }

    /// Sends `body` to the warehouse; its answer comes back through `answers`.
    fn call(&self, body: Body, answers: &mpsc::Sender<Answer>) {
        let Some(id) = body.request_id() else {
            return;
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

/// What one step of the driver has to send, held until its journal record
/// is durable.
#[derive(Default)]
struct Step {
    /// Its record, if it accepted requests; `None` once they are taken back.
    ticket: Option<Ticket>,
    /// The requests it accepted: their keys, entries and replies.
    accepted: Vec<(Token, Key, FlushEntry, Body)>,
    replies: Vec<(Token, Body)>,
    calls: Vec<Body>,
}

impl Step {
    fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.replies.is_empty() && self.calls.is_empty()
    }
}

/// Where the driver's background work reports back.
struct Io {
    answers: mpsc::Sender<Answer>,
    synced: mpsc::UnboundedSender<Result<(), String>>,
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::membership::Membership;
    use crate::net::Tcp;
    use crate::trader::cached::tests::{ME, in_epoch, stocked};
    use crate::wire::{NodeId, ProductId, Qty};
    use std::sync::{Condvar, Mutex};

    /// The journal behind a gate: a sync waits until the test opens it, and
    /// says it was asked for.
    struct Gate {
        journal: Arc<Journal>,
        open: Mutex<bool>,
        opened: Condvar,
        asked: mpsc::UnboundedSender<u64>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.opened.notify_all();
        }
    }

    impl Durable for Gate {
        fn is_synced(&self, upto: u64) -> bool {
            Durable::is_synced(&*self.journal, upto)
        }

        fn sync(&self, upto: u64) -> Result<u64, String> {
            let _ = self.asked.send(upto);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            drop(open);
            Durable::sync(&*self.journal, upto)
        }
    }

    /// A driver of the cache tests' trader (in epoch 1, one product, its
    /// stock looked up) whose journal's syncs wait behind a gate, stepped
    /// by hand by a test.
    struct Rig {
        d: Driver,
        gate: Arc<Gate>,
        asked: mpsc::UnboundedReceiver<u64>,
        io: Io,
        answers: mpsc::Receiver<Answer>,
        synced: mpsc::UnboundedReceiver<Result<(), String>>,
        _dir: tempfile::TempDir,
    }

    /// Long enough for anything a test waits on: a wait that runs out is a
    /// failure, not a hang.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = Option<T>>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .unwrap_or_else(|_| panic!("no {what} within 20 s"))
            .unwrap_or_else(|| panic!("no {what}: its sender is gone"))
    }

    /// Every timer of the cache's settings, longer than any test.
    const LONG: Duration = Duration::from_secs(60);

    impl Rig {
        fn new(flush_every: usize) -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let (journal, _) = Journal::open(dir.path()).unwrap();
            let journal = Arc::new(journal);
            let (asked_tx, asked) = mpsc::unbounded_channel();
            let gate = Arc::new(Gate {
                journal: journal.clone(),
                open: Mutex::new(false),
                opened: Condvar::new(),
                asked: asked_tx,
            });
            let settings = Settings {
                ttl: LONG,
                flush_every,
                flush_interval: LONG,
                deadline: LONG,
                retry: LONG,
            };
            let cache = stocked(settings, now(), 10);
            // A warehouse nobody listens at: a test needs only to see
            // whether a flush was sent, and each one comes back as failed.
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap();
            let warehouse = Link::new(ME, NodeId(0), closed, Tcp::shared(), Arc::new(Clock::new()));
            let mut d = Driver::new(
                cache,
                Arc::new(Membership::with_view(ME, in_epoch(1))),
                journal,
                Arc::new(warehouse),
                Duration::from_secs(5),
                IoMode::Threaded,
            );
            d.durable = gate.clone();
            let (answers_tx, answers) = mpsc::channel(4);
            let (synced_tx, synced) = mpsc::unbounded_channel();
            let io = Io {
                answers: answers_tx,
                synced: synced_tx,
            };
            Rig {
                d,
                gate,
                asked,
                io,
                answers,
                synced,
                _dir: dir,
            }
        }

        /// A buy of `qty` from client 7, taken in one step; its reply.
        async fn buy(&mut self, seq: u64, qty: u32) -> oneshot::Receiver<Body> {
            let (tx, rx) = oneshot::channel();
            let token = self.d.next_token;
            self.d.next_token += 1;
            self.d.replies.insert(token, tx);
            let order = Order {
                id: RequestId {
                    node: NodeId(7),
                    seq,
                },
                product: ProductId(0),
                qty: Qty(qty),
            };
            let actions = (self.d.cache).on_request(now(), token, Side::Buy, order, Lamport(seq));
            self.d.carry_out(actions, &self.io).await;
            rx
        }

        /// The flushes that wait in the driver's steps.
        fn held_flushes(&self) -> Vec<RequestId> {
            (self.d.pending.iter().flat_map(|s| &s.calls))
                .filter(|c| matches!(c, Body::Flush { .. }))
                .filter_map(Body::request_id)
                .collect()
        }

        /// Opens the gate, waits for the sync's report, and steps the driver.
        async fn sync(&mut self) {
            self.gate.open();
            within("sync report", self.synced.recv())
                .await
                .expect("the sync worked");
            self.d.carry_out(Vec::new(), &self.io).await;
        }
    }

    impl Drop for Rig {
        /// A failed test must not leave the sync thread waiting for ever.
        fn drop(&mut self) {
            self.gate.open();
        }
    }

    /// The guarantee the driver's pipelining must keep: a client hears of
    /// its request, and the warehouse is sent it, only once its journal
    /// record is durable. Stepped by hand on one thread, so that when the
    /// sync is held at the gate the driver has done all it will do.
    #[tokio::test]
    async fn a_reply_and_its_flush_wait_for_the_record_to_be_durable() {
        let mut rig = Rig::new(1);
        let mut reply = rig.buy(1, 2).await;

        let ticket = within("sync asked for", rig.asked.recv()).await;
        assert!(!rig.d.journal.is_synced(Ticket(ticket)));
        assert!(
            reply.try_recv().is_err(),
            "the reply left before its record was durable"
        );
        let flush = rig.held_flushes();
        assert_eq!(flush.len(), 1, "the step's flush waits with its reply");

        rig.sync().await;
        assert!(rig.d.journal.is_synced(Ticket(ticket)));
        assert!(matches!(
            reply.try_recv(),
            Ok(Body::Granted { qty: Qty(2), .. })
        ));
        let (id, _) = within("flush", rig.answers.recv()).await;
        assert_eq!(id, flush[0]);
        assert!(rig.d.pending.is_empty());
    }

    /// Steps leave in order: a later step with no record of its own (a
    /// flush the timer made of what an earlier step accepted) waits for the
    /// earlier step's record.
    #[tokio::test]
    async fn a_step_without_a_record_waits_for_the_records_before_it() {
        let mut rig = Rig::new(2);
        let mut reply = rig.buy(1, 2).await;
        within("sync asked for", rig.asked.recv()).await;
        assert!(
            rig.held_flushes().is_empty(),
            "one request is not a flush yet"
        );

        let tick = rig.d.cache.on_tick(now() + LONG * 2);
        rig.d.carry_out(tick, &rig.io).await;
        let flush = rig.held_flushes();
        assert_eq!(flush.len(), 1, "the timer's flush waits behind the record");
        assert!(reply.try_recv().is_err());

        rig.sync().await;
        assert!(matches!(reply.try_recv(), Ok(Body::Granted { .. })));
        let (id, _) = within("flush", rig.answers.recv()).await;
        assert_eq!(id, flush[0]);
        assert!(rig.d.pending.is_empty());
    }
}
