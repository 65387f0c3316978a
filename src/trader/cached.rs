//! The document's trader cache ("cached" mode), as a pure state machine.
//!
//! The trader keeps its own copy of the warehouse's stock per product, filled
//! by a lookup (message 4) at start and whenever it has expired (`cache.ttl`).
//! A buy (message 6) is granted from the copy, up to what it shows, and the copy
//! is decremented; a sell (message 5) increments it. Every answered request,
//! also a buy refused or cut short, is queued, and the queue is flushed to the
//! warehouse (message 9) when it holds `cache.flush_every` requests and also
//! when its oldest request has waited `cache.flush_interval`. The warehouse's
//! answer carries its stock after the flush, which refreshes the copy (minus
//! what was queued since).
//!
//! No I/O and no clock in here: time comes in as an argument, and each step
//! returns [`Action`]s for the driver ([`super::driver`]) to carry out. The
//! driver must journal every [`Action::Accept`] durably before it sends its
//! reply: a trader that crashes and restarts on its journal flushes what it had
//! acknowledged ([`Cache::new`] takes the journal back).
//!
//! One warehouse call at a time (a lookup or a flush): so every stock the
//! warehouse sends back is exact for the moment it is applied at, and a flush
//! whose answer was lost is retried, with the same id and requests, before
//! anything else is asked.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::clock::Lamport;
use crate::config::{Config, MAX_FLUSH};
use crate::wire::{Body, Epoch, FlushEntry, NodeId, Order, Qty, Refusal, RequestId, Side, View};

/// Requests that may wait for a lookup; beyond this, new ones are refused
/// (a trader whose warehouse is gone must not hoard its clients' requests).
pub const MAX_WAITING: usize = 4096;

/// The driver's handle on one client's request, to route its reply.
pub type Token = u64;

/// A key of the journal: the order in which the trader accepted requests.
pub type Key = u64;

/// How the cache behaves, from `[cache]` and `[market]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub ttl: Duration,
    pub flush_every: usize,
    pub flush_interval: Duration,
    /// A request that waited this long for a lookup is refused instead: its
    /// client has given up on it (a little less than the request timeout).
    pub deadline: Duration,
    /// Pause before a failed lookup or flush is tried again.
    pub retry: Duration,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            ttl: cfg.cache.ttl,
            flush_every: cfg.cache.flush_every,
            flush_interval: cfg.cache.flush_interval,
            deadline: cfg.market.request_timeout.mul_f64(0.8),
            retry: Duration::from_millis(100).min(cfg.cache.flush_interval),
        }
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Journal `entry` under `key`, durably, and only then send `reply`.
    Accept {
        token: Token,
        key: Key,
        entry: FlushEntry,
        reply: Body,
    },
    /// Send a reply that changed nothing (a refusal).
    Reply { token: Token, body: Body },
    /// The warehouse applied these: drop them from the journal.
    Forget(Vec<Key>),
    /// Call the warehouse (a lookup or a flush) and feed the answer to
    /// [`Cache::on_answer`].
    Call(Body),
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    key: Key,
    entry: FlushEntry,
    at: Instant,
}

#[derive(Clone, Debug)]
struct Waiting {
    token: Token,
    side: Side,
    order: Order,
    clock: Lamport,
    since: Instant,
}

/// A flush sent and not yet answered (or failed, and waiting to be retried).
#[derive(Clone, Debug)]
struct Flight {
    id: RequestId,
    queued: Vec<Queued>,
    retry_at: Option<Instant>,
}

/// The cache, the queue and the flush triggers of one trader.
#[derive(Debug)]
pub struct Cache {
    me: NodeId,
    settings: Settings,
    /// The copy of the stock, per product.
    stock: Vec<u64>,
    /// When the copy was last refreshed; `None` before the first lookup.
    fetched: Option<Instant>,
    /// Requests waiting for the copy to be (re)filled, in arrival order.
    waiting: VecDeque<Waiting>,
    /// Accepted requests not yet sent in a flush, in acceptance order.
    queue: VecDeque<Queued>,
    flight: Option<Flight>,
    /// The one warehouse call in flight, if any.
    outstanding: Option<RequestId>,
    lookup_retry_at: Option<Instant>,
    next_key: Key,
    next_call: u64,
    stopping: bool,
    /// Why the warehouse refused one of this trader's flushes for good (a
    /// malformed flush: a bug, never a passing fault). The trader then takes
    /// no more requests (its clients fail over) and does not resend the flush;
    /// what it holds stays in its journal and is reported as unflushed.
    refused: Option<String>,
    /// The trader's epoch now: the fencing token of its lookups and of every
    /// request it accepts (see [`Cache::set_view`]).
    epoch: Epoch,
    /// The traders of that epoch if this trader is not one of them (it was
    /// deposed, or is not a trader yet): it then accepts nothing.
    not_in: Option<Vec<NodeId>>,
}

impl Cache {
    /// A cache for `products` products, with the journal's unflushed requests
    /// `restored` (they are flushed first thing, by [`Cache::start`]).
    pub fn new(
        me: NodeId,
        products: usize,
        settings: Settings,
        mut restored: Vec<(Key, FlushEntry)>,
        now: Instant,
    ) -> Self {
        restored.sort_by_key(|(k, _)| *k);
        let next_key = restored.last().map_or(1, |(k, _)| k + 1);
        Self {
            me,
            settings,
            stock: vec![0; products],
            fetched: None,
            waiting: VecDeque::new(),
            queue: restored
                .into_iter()
                .map(|(key, entry)| Queued {
                    key,
                    entry,
                    at: now,
                })
                .collect(),
            flight: None,
            outstanding: None,
            lookup_retry_at: None,
            next_key,
            next_call: 1,
            stopping: false,
            refused: None,
            epoch: Epoch(0),
            not_in: None,
        }
    }

    /// The trader's view from now on (the driver sets it before each step).
    /// A request accepted carries the view's epoch to the warehouse, which
    /// applies it only if this trader was a trader of that epoch. So a
    /// trader the view leaves out accepts nothing more (its clients go to
    /// another): an entry of an epoch it is not in would be refused at
    /// every flush, and with it the entries it had rightly acknowledged
    /// before it was deposed, which ride in the same flush.
    pub fn set_view(&mut self, view: &View) {
        self.epoch = view.epoch;
        self.not_in =
            (view.epoch != Epoch(0) && !view.contains(self.me)).then(|| view.traders.clone());
    }

    /// The first step: flush what the journal gave back, or else look up.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.queue.is_empty() {
            self.send_flush(&mut out);
        } else {
            self.send_lookup(&mut out);
        }
        out
    }

    /// A buy or sell from a client, stamped with the trader's Lamport time.
    pub fn on_request(
        &mut self,
        now: Instant,
        token: Token,
        side: Side,
        order: Order,
        clock: Lamport,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let refuse = |reason: Refusal| Action::Reply {
            token,
            body: Body::Refused {
                id: order.id,
                reason,
            },
        };
        if let Err(reason) = order.validate(self.stock.len()) {
            out.push(refuse(reason));
        } else if self.stopping {
            out.push(refuse(Refusal::Busy {
                reason: "the trader is stopping".into(),
            }));
        } else if self.epoch == Epoch(0) {
            // An entry must carry the epoch it was acknowledged in: the
            // warehouse would refuse an entry of no epoch for ever.
            out.push(refuse(Refusal::Busy {
                reason: "this trader holds no epoch yet".into(),
            }));
        } else if let Some(traders) = &self.not_in {
            out.push(refuse(Refusal::NotATrader {
                traders: traders.clone(),
            }));
        } else if let Some(why) = &self.refused {
            out.push(refuse(Refusal::Busy {
                reason: format!("the warehouse refused this trader's flush: {why}"),
            }));
        } else if self.waiting.is_empty() && self.fresh(now) {
            self.accept(now, token, side, order, clock, &mut out);
        } else if self.waiting.len() >= MAX_WAITING {
            out.push(refuse(Refusal::Busy {
                reason: format!("{MAX_WAITING} requests already wait for the warehouse"),
            }));
        } else {
            // Missing or expired: wait for the copy, behind those already waiting.
            self.waiting.push_back(Waiting {
                token,
                side,
                order,
                clock,
                since: now,
            });
        }
        self.pump(now, &mut out);
        out
    }

    /// The warehouse's answer to call `id` (or why there is none).
    pub fn on_answer(
        &mut self,
        now: Instant,
        id: RequestId,
        answer: Result<Body, String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.outstanding != Some(id) {
            return out; // stale: a call we no longer wait for
        }
        self.outstanding = None;
        let products = self.stock.len();
        let is_flush = self.flight.as_ref().is_some_and(|f| f.id == id);
        if is_flush && let Some(why) = permanent_refusal(&answer, products) {
            tracing::error!(
                "the warehouse refused flush {id} for good: {why}; taking no more requests"
            );
            for w in std::mem::take(&mut self.waiting) {
                out.push(busy(&w, "the warehouse refused this trader's flush"));
            }
            self.refused = Some(why);
            return out;
        }
        let stock = match answer {
            Ok(Body::Flushed { stock, .. } | Body::Stock { stock, .. })
                if stock.len() == products =>
            {
                Some(stock)
            }
            _ => None,
        };
        match (is_flush, stock) {
            (true, Some(stock)) => {
                let flight = self.flight.take().expect("is_flush");
                out.push(Action::Forget(
                    flight.queued.iter().map(|q| q.key).collect(),
                ));
                self.refresh(now, &stock);
                self.serve_waiting(now, &mut out);
            }
            (true, None) => {
                if let Some(f) = self.flight.as_mut() {
                    f.retry_at = Some(now + self.settings.retry);
                }
            }
            (false, Some(stock)) => {
                self.lookup_retry_at = None;
                self.refresh(now, &stock);
                self.serve_waiting(now, &mut out);
            }
            (false, None) => self.lookup_retry_at = Some(now + self.settings.retry),
        }
        self.pump(now, &mut out);
        out
    }

    /// Time passed: flush by interval, retry a failed call, give up on
    /// requests that waited past their deadline.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.expire_waiting(now, &mut out);
        self.pump(now, &mut out);
        out
    }

    /// Stop taking requests; flush everything queued, whatever its count.
    pub fn stop(&mut self, now: Instant) -> Vec<Action> {
        self.stopping = true;
        let mut out = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            out.push(busy(&w, "the trader is stopping"));
        }
        self.pump(now, &mut out);
        out
    }

    /// When [`Cache::on_tick`] next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        // While a call is out nothing else is sent (see `pump`): only the
        // waiting requests' deadlines can fall due. Waking for the rest
        // would find nothing to do, again and again: a spin.
        let idle = self.outstanding.is_none();
        let interval = match (&self.flight, self.queue.front()) {
            (None, Some(q)) if idle => Some(q.at + self.settings.flush_interval),
            _ => None,
        };
        let retry = self
            .flight
            .as_ref()
            .and_then(|f| f.retry_at)
            .filter(|_| idle);
        let lookup = self
            .lookup_retry_at
            .filter(|_| idle && !self.waiting.is_empty());
        let deadline = self
            .waiting
            .front()
            .map(|w| w.since + self.settings.deadline);
        [interval, retry, lookup, deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Accepted requests the warehouse has not confirmed (queued or in flight).
    pub fn unflushed(&self) -> usize {
        self.queue.len() + self.flight.as_ref().map_or(0, |f| f.queued.len())
    }

    /// Whether everything accepted is at the warehouse.
    pub fn settled(&self) -> bool {
        self.unflushed() == 0
    }

    /// The copy of the stock, per product (for logs and tests).
    pub fn stock(&self) -> &[u64] {
        &self.stock
    }

    /// Takes back accepted requests the driver could not journal (their
    /// clients are told so): out of the queue or the flush in flight, and out
    /// of the copy. Returns the flush in flight without them, if it had any,
    /// for the driver to send in place of the one it was about to send.
    pub fn revoke(&mut self, keys: &[Key]) -> Option<Body> {
        let mut revoked = Vec::new();
        let mut keep = |q: &Queued| {
            let drop = keys.contains(&q.key);
            if drop {
                revoked.push(q.entry);
            }
            !drop
        };
        self.queue.retain(&mut keep);
        let mut corrected = None;
        if let Some(f) = self.flight.as_mut() {
            let before = f.queued.len();
            f.queued.retain(&mut keep);
            if f.queued.len() != before {
                corrected = Some(Body::Flush {
                    id: f.id,
                    entries: f.queued.iter().map(|q| q.entry).collect(),
                });
            }
        }
        for e in revoked {
            let p = e.order.product.0 as usize;
            match e.side {
                Side::Buy => self.stock[p] = self.stock[p].saturating_add(e.granted.0.into()),
                Side::Sell => self.stock[p] = self.stock[p].saturating_sub(e.order.qty.0.into()),
            }
        }
        corrected
    }

    fn fresh(&self, now: Instant) -> bool {
        self.fetched
            .is_some_and(|t| now.saturating_duration_since(t) < self.settings.ttl)
    }

    /// Answers one request from the copy and queues it.
    fn accept(
        &mut self,
        now: Instant,
        token: Token,
        side: Side,
        order: Order,
        clock: Lamport,
        out: &mut Vec<Action>,
    ) {
        let p = order.product.0 as usize;
        let asked = u64::from(order.qty.0);
        let (granted, reply) = match side {
            Side::Buy => {
                let granted = asked.min(self.stock[p]);
                self.stock[p] -= granted;
                let qty = Qty(granted as u32);
                (qty, Body::Granted { id: order.id, qty })
            }
            Side::Sell => {
                self.stock[p] = self.stock[p].saturating_add(asked);
                (order.qty, Body::Deposited { id: order.id })
            }
        };
        let entry = FlushEntry {
            order,
            side,
            clock,
            granted,
            epoch: self.epoch,
        };
        let key = self.next_key;
        self.next_key += 1;
        self.queue.push_back(Queued {
            key,
            entry,
            at: now,
        });
        out.push(Action::Accept {
            token,
            key,
            entry,
            reply,
        });
    }

    /// The copy is the warehouse's stock plus what is queued here and not yet
    /// at the warehouse (sells add, granted buys take away).
    fn refresh(&mut self, now: Instant, stock: &[u64]) {
        self.stock.copy_from_slice(stock);
        for q in &self.queue {
            let p = q.entry.order.product.0 as usize;
            match q.entry.side {
                Side::Sell => {
                    self.stock[p] = self.stock[p].saturating_add(q.entry.order.qty.0.into())
                }
                Side::Buy => self.stock[p] = self.stock[p].saturating_sub(q.entry.granted.0.into()),
            }
        }
        self.fetched = Some(now);
    }

    fn serve_waiting(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.expire_waiting(now, out);
        while let Some(w) = self.waiting.pop_front() {
            match &self.not_in {
                // Deposed while they waited for the copy: nothing applied.
                Some(traders) => out.push(refuse_waiting(
                    &w,
                    Refusal::NotATrader {
                        traders: traders.clone(),
                    },
                )),
                None => self.accept(now, w.token, w.side, w.order, w.clock, out),
            }
        }
    }

    fn expire_waiting(&mut self, now: Instant, out: &mut Vec<Action>) {
        let deadline = self.settings.deadline;
        self.waiting.retain(|w| {
            let late = now.saturating_duration_since(w.since) >= deadline;
            if late {
                out.push(busy(w, "no stock from the warehouse in time"));
            }
            !late
        });
    }

    /// Starts the next warehouse call, if one is due and none is in flight:
    /// a failed flush first, then a flush, then a lookup.
    fn pump(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.outstanding.is_some() {
            return;
        }
        if let Some(f) = self.flight.as_mut() {
            if f.retry_at.is_some_and(|t| now >= t) {
                f.retry_at = None;
                self.outstanding = Some(f.id);
                out.push(Action::Call(Body::Flush {
                    id: f.id,
                    entries: f.queued.iter().map(|q| q.entry).collect(),
                }));
            }
            return; // nothing else goes to the warehouse before this flush
        }
        if self.flush_due(now) {
            self.send_flush(out);
        } else if !self.waiting.is_empty() && self.lookup_retry_at.is_none_or(|t| now >= t) {
            self.send_lookup(out);
        }
    }

    fn flush_due(&self, now: Instant) -> bool {
        let Some(oldest) = self.queue.front() else {
            return false;
        };
        self.queue.len() >= self.settings.flush_every
            || now >= oldest.at + self.settings.flush_interval
            || self.stopping
            // A flush's answer refreshes the copy: it serves as the lookup.
            || !self.waiting.is_empty()
    }

    fn call_id(&mut self) -> RequestId {
        let id = RequestId {
            node: self.me,
            seq: self.next_call,
        };
        self.next_call += 1;
        id
    }

    fn send_flush(&mut self, out: &mut Vec<Action>) {
        let n = self.queue.len().min(MAX_FLUSH);
        let queued: Vec<Queued> = self.queue.drain(..n).collect();
        let id = self.call_id();
        out.push(Action::Call(Body::Flush {
            id,
            entries: queued.iter().map(|q| q.entry).collect(),
        }));
        self.outstanding = Some(id);
        self.flight = Some(Flight {
            id,
            queued,
            retry_at: None,
        });
    }

    fn send_lookup(&mut self, out: &mut Vec<Action>) {
        let id = self.call_id();
        self.outstanding = Some(id);
        out.push(Action::Call(Body::Lookup {
            id,
            epoch: self.epoch,
        }));
    }
}

/// Whether a flush's answer refuses it for good: the warehouse judged it
/// malformed, or answered with a stock of the wrong shape. A failed commit or
/// a lost call is worth a retry; these are not.
fn permanent_refusal(answer: &Result<Body, String>, products: usize) -> Option<String> {
    match answer {
        Ok(Body::Refused { reason, .. }) if !matches!(reason, Refusal::StorageFailed { .. }) => {
            Some(reason.to_string())
        }
        Ok(Body::Flushed { stock, .. }) if stock.len() != products => Some(format!(
            "stock of {} products, the market has {products}",
            stock.len()
        )),
        _ => None,
    }
}

fn busy(w: &Waiting, reason: &str) -> Action {
    refuse_waiting(
        w,
        Refusal::Busy {
            reason: reason.into(),
        },
    )
}

/// The refusal of a request that waited for the copy.
fn refuse_waiting(w: &Waiting, reason: Refusal) -> Action {
    Action::Reply {
        token: w.token,
        body: Body::Refused {
            id: w.order.id,
            reason,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ProductId;

    pub(crate) const ME: NodeId = NodeId(6);

    fn settings() -> Settings {
        Settings {
            ttl: Duration::from_secs(1),
            flush_every: 5,
            flush_interval: Duration::from_millis(250),
            deadline: Duration::from_millis(1600),
            retry: Duration::from_millis(100),
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn order(seq: u64, qty: u32) -> Order {
        Order {
            id: RequestId {
                node: NodeId(1),
                seq,
            },
            product: ProductId(0),
            qty: Qty(qty),
        }
    }

    fn calls(actions: &[Action]) -> Vec<&Body> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Call(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    fn the_call(actions: &[Action]) -> Body {
        let c = calls(actions);
        assert_eq!(c.len(), 1, "expected one call in {actions:#?}");
        c[0].clone()
    }

    fn replies(actions: &[Action]) -> Vec<Body> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Accept { reply, .. } => Some(reply.clone()),
                Action::Reply { body, .. } => Some(body.clone()),
                _ => None,
            })
            .collect()
    }

    fn granted(actions: &[Action]) -> Vec<u32> {
        replies(actions)
            .into_iter()
            .filter_map(|b| match b {
                Body::Granted { qty, .. } => Some(qty.0),
                _ => None,
            })
            .collect()
    }

    /// A cache started at `t0` and filled by its first lookup with `stock`.
    /// A filled cache that took five buys of 1 at `t0`: the fifth sent them
    /// in a flush (flush_every = 5), whose id is returned.
    fn five_buys_in_flight(t0: Instant) -> (Cache, RequestId) {
        let mut c = filled(t0, 100);
        let mut sent = Vec::new();
        for i in 1..=5 {
            sent = c.on_request(t0, i, Side::Buy, order(i, 1), Lamport(i));
        }
        let (flight_id, _) = flush_of(&the_call(&sent));
        (c, flight_id)
    }

    /// A view of `epoch` whose traders are this trader and one other.
    pub(crate) fn in_epoch(epoch: u64) -> View {
        View {
            epoch: Epoch(epoch),
            traders: vec![ME, NodeId(ME.0 + 1)],
        }
    }

    /// A fresh cache in epoch 1, and the id of the lookup it started with.
    fn looking_up(t0: Instant) -> (Cache, RequestId) {
        looking_up_with(settings(), t0)
    }

    fn looking_up_with(settings: Settings, t0: Instant) -> (Cache, RequestId) {
        let mut c = Cache::new(ME, 1, settings, Vec::new(), t0);
        c.set_view(&in_epoch(1));
        let Body::Lookup { id, .. } = the_call(&c.start()) else {
            panic!("a fresh cache starts with a lookup");
        };
        (c, id)
    }

    fn filled(t0: Instant, stock: u64) -> Cache {
        stocked(settings(), t0, stock)
    }

    /// A cache with `settings` in epoch 1 whose first lookup found `stock`
    /// of its one product.
    pub(crate) fn stocked(settings: Settings, t0: Instant, stock: u64) -> Cache {
        let (mut c, id) = looking_up_with(settings, t0);
        let out = c.on_answer(
            t0,
            id,
            Ok(Body::Stock {
                id,
                stock: vec![stock],
            }),
        );
        assert!(out.is_empty());
        c
    }

    fn flush_of(body: &Body) -> (RequestId, Vec<FlushEntry>) {
        match body {
            Body::Flush { id, entries } => (*id, entries.clone()),
            other => panic!("expected a flush, got {other:?}"),
        }
    }

    #[test]
    fn buys_are_granted_up_to_the_cache_and_sells_fill_it() {
        let t0 = Instant::now();
        let mut c = filled(t0, 3);
        let a = c.on_request(t0, 1, Side::Buy, order(1, 5), Lamport(10));
        assert_eq!(granted(&a), vec![3]);
        let a = c.on_request(t0, 2, Side::Buy, order(2, 2), Lamport(11));
        assert_eq!(granted(&a), vec![0]);
        let a = c.on_request(t0, 3, Side::Sell, order(3, 4), Lamport(12));
        assert_eq!(replies(&a), vec![Body::Deposited { id: order(3, 4).id }]);
        assert_eq!(c.stock(), &[4]);
        // Every answered request is queued, the refused buy too (an undersell
        // record for the warehouse to judge).
        assert_eq!(c.unflushed(), 3);
    }

    #[test]
    fn each_accept_carries_its_journal_entry_before_its_reply() {
        let t0 = Instant::now();
        let mut c = filled(t0, 10);
        let a = c.on_request(t0, 7, Side::Buy, order(1, 2), Lamport(42));
        match &a[0] {
            Action::Accept {
                token,
                entry,
                reply,
                ..
            } => {
                assert_eq!(*token, 7);
                assert_eq!(entry.clock, Lamport(42));
                assert_eq!(entry.granted, Qty(2));
                assert!(matches!(reply, Body::Granted { .. }));
            }
            other => panic!("expected an accept, got {other:?}"),
        }
    }

    #[test]
    fn the_queue_is_flushed_when_it_holds_flush_every_requests() {
        let t0 = Instant::now();
        let mut c = filled(t0, 100);
        for i in 1..=4 {
            let a = c.on_request(ms(t0, i), i, Side::Buy, order(i, 1), Lamport(i));
            assert!(calls(&a).is_empty(), "flushed after {i}");
        }
        let a = c.on_request(ms(t0, 5), 5, Side::Sell, order(5, 5), Lamport(5));
        let (_, entries) = flush_of(&the_call(&a));
        let clocks: Vec<u64> = entries.iter().map(|e| e.clock.0).collect();
        assert_eq!(clocks, vec![1, 2, 3, 4, 5]);
        assert_eq!(c.unflushed(), 5);
    }

    #[test]
    fn a_quiet_queue_is_flushed_after_flush_interval() {
        let t0 = Instant::now();
        let mut c = filled(t0, 100);
        c.on_request(ms(t0, 10), 1, Side::Buy, order(1, 1), Lamport(1));
        c.on_request(ms(t0, 20), 2, Side::Buy, order(2, 1), Lamport(2));
        assert_eq!(c.next_wakeup(), Some(ms(t0, 260)));
        assert!(c.on_tick(ms(t0, 259)).is_empty());
        let (id, entries) = flush_of(&the_call(&c.on_tick(ms(t0, 260))));
        assert_eq!(entries.len(), 2);
        // The answer refreshes the cache and forgets the flushed requests.
        let a = c.on_answer(
            ms(t0, 270),
            id,
            Ok(Body::Flushed {
                id,
                stock: vec![50],
            }),
        );
        assert!(matches!(&a[0], Action::Forget(keys) if keys.len() == 2));
        assert_eq!(c.stock(), &[50]);
        assert!(c.settled());
        assert_eq!(c.next_wakeup(), None);
    }

    #[test]
    fn an_expired_cache_is_looked_up_before_it_answers() {
        let t0 = Instant::now();
        let mut c = filled(t0, 10);
        // Within the ttl: answered from the cache.
        let a = c.on_request(ms(t0, 999), 1, Side::Buy, order(1, 1), Lamport(1));
        assert_eq!(granted(&a), vec![1]);
        // The queued buy goes in a flush when the interval is up; its answer
        // refreshes the cache, so no lookup is needed within the next ttl.
        let (id, _) = flush_of(&the_call(&c.on_tick(ms(t0, 1249))));
        c.on_answer(ms(t0, 1250), id, Ok(Body::Flushed { id, stock: vec![9] }));
        let a = c.on_request(ms(t0, 2249), 2, Side::Buy, order(2, 1), Lamport(2));
        assert_eq!(granted(&a), vec![1]);
        let (id, _) = flush_of(&the_call(&c.on_tick(ms(t0, 2499))));
        c.on_answer(ms(t0, 2499), id, Ok(Body::Flushed { id, stock: vec![8] }));
        // Expired (ttl 1s after the refresh at 2499): this request waits,
        // and a lookup goes out.
        let a = c.on_request(ms(t0, 3499), 3, Side::Buy, order(3, 5), Lamport(3));
        assert!(replies(&a).is_empty());
        let Body::Lookup { id, .. } = the_call(&a) else {
            panic!("expected a lookup")
        };
        // Another request waits behind it, in order, without a second call.
        let a = c.on_request(ms(t0, 3500), 4, Side::Buy, order(4, 5), Lamport(4));
        assert!(a.is_empty());
        // Another trader sold meanwhile: the warehouse now has 6.
        let a = c.on_answer(ms(t0, 3510), id, Ok(Body::Stock { id, stock: vec![6] }));
        assert_eq!(granted(&a), vec![5, 1]);
    }

    #[test]
    fn a_flush_refused_for_good_is_not_resent_and_the_trader_turns_clients_away() {
        let t0 = Instant::now();
        let (mut c, flight_id) = five_buys_in_flight(t0);
        let refused = Body::Refused {
            id: flight_id,
            reason: Refusal::BadFlush {
                reason: "entry for unknown product 9".into(),
            },
        };
        assert!(c.on_answer(ms(t0, 10), flight_id, Ok(refused)).is_empty());
        // Never resent, and kept: what it held is still unflushed.
        assert!(calls(&c.on_tick(ms(t0, 5000))).is_empty());
        assert_eq!(c.unflushed(), 5);
        // New requests are refused Busy, so their clients try another trader.
        let a = c.on_request(ms(t0, 20), 9, Side::Sell, order(9, 1), Lamport(9));
        assert!(matches!(
            &a[..],
            [Action::Reply {
                body: Body::Refused {
                    reason: Refusal::Busy { .. },
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn a_failed_flush_is_retried_with_the_same_id_before_any_lookup() {
        let t0 = Instant::now();
        let (mut c, flight_id) = five_buys_in_flight(t0);
        let a = c.on_answer(ms(t0, 1010), flight_id, Err("timed out".into()));
        assert!(a.is_empty());
        assert_eq!(c.unflushed(), 5);
        // While the flush waits for its retry, an expired cache does not look up.
        let a = c.on_request(ms(t0, 1050), 9, Side::Buy, order(9, 1), Lamport(9));
        assert!(calls(&a).is_empty());
        assert_eq!(c.next_wakeup(), Some(ms(t0, 1110)));
        let (again, entries) = flush_of(&the_call(&c.on_tick(ms(t0, 1110))));
        assert_eq!((again, entries.len()), (flight_id, 5));
        // A late answer to an older call is ignored.
        assert!(
            c.on_answer(ms(t0, 1115), RequestId::default(), Err("x".into()))
                .is_empty()
        );
        let a = c.on_answer(
            ms(t0, 1120),
            again,
            Ok(Body::Flushed {
                id: again,
                stock: vec![95],
            }),
        );
        // Forget the flushed five, then serve the waiting buy from the new stock.
        assert!(matches!(&a[0], Action::Forget(k) if k.len() == 5));
        assert_eq!(granted(&a), vec![1]);
    }

    #[test]
    fn a_call_in_flight_never_makes_the_driver_wake_for_nothing() {
        let t0 = Instant::now();
        let (mut c, id) = looking_up(t0);
        c.on_answer(ms(t0, 1), id, Ok(Body::Stock { id, stock: vec![9] }));
        c.on_request(ms(t0, 2), 1, Side::Buy, order(1, 1), Lamport(1));
        // The copy expires; the next request waits for a lookup, which goes out.
        let late = t0 + settings().ttl + Duration::from_millis(5);
        let out = c.on_request(late, 2, Side::Buy, order(2, 1), Lamport(2));
        assert!(!out.is_empty());
        // Long after the queue's flush interval, with the call still out, the
        // driver is woken only for the waiting request's deadline.
        let wake = c.next_wakeup().expect("a deadline");
        assert!(
            c.on_tick(wake.max(late))
                .iter()
                .all(|a| !matches!(a, Action::Call(_)))
        );
        assert_eq!(wake, late + settings().deadline);
    }

    #[test]
    fn a_deposed_trader_accepts_nothing_more_and_flushes_what_it_accepted_in_its_epoch() {
        // Seed 283 (cached): a trader acknowledged two requests in epoch 1,
        // was deposed (epoch 2 leaves it out), and then acknowledged more,
        // as of epoch 2. The warehouse refused each flush for the epoch-2
        // entries, and the epoch-1 ones in the same flush never reached the
        // books: acknowledged, and lost.
        let t0 = Instant::now();
        let mut c = filled(t0, 100);
        c.on_request(t0, 1, Side::Sell, order(1, 1), Lamport(1));
        c.on_request(t0, 2, Side::Buy, order(2, 1), Lamport(2));
        let deposed = View {
            epoch: Epoch(2),
            traders: vec![NodeId(ME.0 + 1), NodeId(ME.0 + 2)],
        };
        c.set_view(&deposed);
        let out = c.on_request(t0, 3, Side::Buy, order(3, 1), Lamport(3));
        assert!(
            matches!(
                &replies(&out)[..],
                [Body::Refused { reason: Refusal::NotATrader { traders }, .. }]
                    if *traders == deposed.traders
            ),
            "{out:?}"
        );
        // What it acknowledged while a trader is flushed as of that epoch.
        let (_, entries) = flush_of(&the_call(&c.on_tick(t0 + settings().flush_interval)));
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.epoch == Epoch(1)), "{entries:?}");
    }

    #[test]
    fn a_request_waiting_for_the_copy_is_refused_if_its_trader_is_deposed_meanwhile() {
        let t0 = Instant::now();
        let (mut c, id) = looking_up(t0);
        assert!(replies(&c.on_request(t0, 1, Side::Buy, order(1, 1), Lamport(1))).is_empty());
        c.set_view(&View {
            epoch: Epoch(2),
            traders: vec![NodeId(ME.0 + 1)],
        });
        let out = c.on_answer(ms(t0, 1), id, Ok(Body::Stock { id, stock: vec![9] }));
        assert!(
            matches!(
                &replies(&out)[..],
                [Body::Refused {
                    reason: Refusal::NotATrader { .. },
                    ..
                }]
            ),
            "{out:?}"
        );
        assert!(
            calls(&out).is_empty(),
            "nothing was accepted, nothing to flush"
        );
    }

    #[test]
    fn a_restarted_trader_flushes_its_journal_first() {
        let t0 = Instant::now();
        let entry = FlushEntry {
            order: order(1, 2),
            side: Side::Buy,
            clock: Lamport(5),
            granted: Qty(2),
            epoch: Epoch(1),
        };
        let mut c = Cache::new(ME, 1, settings(), vec![(8, entry), (3, entry)], t0);
        c.set_view(&in_epoch(1));
        let (_, entries) = flush_of(&the_call(&c.start()));
        assert_eq!(entries.len(), 2);
        // New keys never collide with the journal's.
        assert_eq!(c.next_key, 9);
    }

    #[test]
    fn requests_that_wait_past_their_deadline_are_refused() {
        let t0 = Instant::now();
        let (mut c, id) = looking_up(t0);
        c.on_request(t0, 1, Side::Buy, order(1, 1), Lamport(1));
        assert_eq!(c.next_wakeup(), Some(ms(t0, 1600)));
        let a = c.on_tick(ms(t0, 1600));
        assert!(matches!(
            &replies(&a)[..],
            [Body::Refused {
                reason: Refusal::Busy { .. },
                ..
            }]
        ));
        // The lookup failed; it is tried again after the retry pause.
        c.on_request(ms(t0, 1700), 2, Side::Buy, order(2, 1), Lamport(2));
        assert!(c.on_answer(ms(t0, 1700), id, Err("down".into())).is_empty());
        assert!(matches!(
            the_call(&c.on_tick(ms(t0, 1800))),
            Body::Lookup { .. }
        ));
    }

    #[test]
    fn stopping_flushes_whatever_is_queued_and_refuses_new_requests() {
        let t0 = Instant::now();
        let mut c = filled(t0, 10);
        c.on_request(t0, 1, Side::Sell, order(1, 1), Lamport(1));
        let (_, entries) = flush_of(&the_call(&c.stop(t0)));
        assert_eq!(entries.len(), 1);
        let a = c.on_request(t0, 2, Side::Buy, order(2, 1), Lamport(2));
        assert!(matches!(
            &replies(&a)[..],
            [Body::Refused {
                reason: Refusal::Busy { .. },
                ..
            }]
        ));
    }

    #[test]
    fn a_bad_order_is_refused_and_not_queued() {
        let t0 = Instant::now();
        let mut c = filled(t0, 10);
        let a = c.on_request(t0, 1, Side::Buy, order(1, 0), Lamport(1));
        assert!(matches!(
            &replies(&a)[..],
            [Body::Refused {
                reason: Refusal::ZeroQuantity,
                ..
            }]
        ));
        assert_eq!(c.unflushed(), 0);
    }

    #[test]
    fn a_revoked_request_leaves_the_queue_and_the_cache() {
        let t0 = Instant::now();
        let mut c = filled(t0, 10);
        let a = c.on_request(t0, 1, Side::Buy, order(1, 4), Lamport(1));
        let Action::Accept { key, .. } = a[0] else {
            panic!()
        };
        assert_eq!(c.revoke(&[key]), None);
        assert_eq!((c.stock()[0], c.unflushed()), (10, 0));
        // Revoked from a flush just built: the flush is sent without it.
        let mut last = Vec::new();
        for i in 1..=5 {
            last = c.on_request(t0, i, Side::Sell, order(i, 1), Lamport(i));
        }
        let (id, _) = flush_of(&the_call(&last));
        let Action::Accept { key, .. } = last[0] else {
            panic!()
        };
        let (again, entries) = flush_of(&c.revoke(&[key]).expect("a corrected flush"));
        assert_eq!((again, entries.len(), c.stock()[0]), (id, 4, 14));
    }
}
