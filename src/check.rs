//! The invariant checker (DESIGN.md §7): judges a run after the fact from the
//! nodes' histories (invokes and completions, [`History`]) and the warehouse's
//! final store, like Jepsen's checkers.
//!
//! Each invariant gets a [`Verdict`]; a failing one names the first few
//! offending requests so a person can find them in the history:
//! 1. conservation — per product, initial + sold − shipped = final stock;
//! 2. no lost acknowledged request — every sell a client saw deposited and
//!    every buy it saw granted is in the warehouse's applied table with that
//!    quantity, shipped plus oversold (in `cached` mode a buy may be applied
//!    short: that shortfall is an oversell, counted, not lost); one left in a
//!    dead trader's journal is named as stranded;
//! 3. no request applied twice — the books are exactly the sum of the
//!    distinct applied requests (whatever the clients' histories say), each
//!    was made by a client, and none was applied that its client was told
//!    was refused;
//! 4. zero oversell in `strong` and `escrow` modes;
//! 5. liveness — every request invoked got an answer or a clear failure
//!    within its deadline (the request timeout, retries at other traders
//!    included, plus [`LIVENESS_GRACE`]). A request invoked and never completed fails it when
//!    its client's history was closed cleanly; if the client was killed, the
//!    request is counted as interrupted, not failed.
//! 6. agreement — for every epoch, every node that knew it (adopted it, or
//!    the warehouse that committed it) knew the same trader set, the one in
//!    the warehouse's store;
//! 7. fencing — every request was answered by a trader of an epoch that was
//!    current at some moment between its invoke and its completion (the
//!    epochs' commit times come from the warehouse's history); a deposed
//!    trader that answers after a set without it was committed is caught;
//! 8. final agreement — every peer that stopped cleanly ended holding the
//!    warehouse's view as it was a refresh period (`heartbeat.timeout`)
//!    before the peer stopped; at the end of a run stopped in order, the
//!    warehouse's last view, whose traders the report names.
//!
//! A run that answered requests but recorded no view at all fails 6 to 8:
//! every market commits one before it trades.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};
use crate::history::{History, Outcome};
use crate::membership::Happening;
use crate::warehouse::ledger::Applied;
use crate::warehouse::store::Snapshot;
use crate::wire::{Epoch, FlushEntry, NodeId, RequestId, Side, View};

/// Time a request may run past its deadline before liveness calls it hung:
/// the client's timer fires at the deadline, and then it must be scheduled.
pub const LIVENESS_GRACE: Duration = Duration::from_secs(1);
/// Offenders named per failed verdict.
const SHOWN: usize = 5;

/// One invariant's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub invariant: String,
    pub ok: bool,
    /// How many requests (or products) break the invariant.
    pub offenders: u64,
    /// On success what was checked; on failure the first few offenders.
    pub detail: String,
}

impl Verdict {
    fn new(invariant: &str, offenders: Vec<String>, ok_detail: String) -> Self {
        let n = offenders.len();
        let detail = if n == 0 {
            ok_detail
        } else {
            let mut d = offenders[..n.min(SHOWN)].join("; ");
            if n > SHOWN {
                d.push_str(&format!("; and {} more", n - SHOWN));
            }
            d
        };
        Verdict {
            invariant: invariant.to_string(),
            ok: n == 0,
            offenders: n as u64,
            detail,
        }
    }
}

/// The invariants' names, in the order they are reported.
pub const CONSERVATION: &str = "conservation";
pub const NO_LOST_ACK: &str = "no lost acknowledged request";
pub const NO_DOUBLE_APPLY: &str = "no request applied twice";
pub const ZERO_OVERSELL: &str = "zero oversell";
pub const LIVENESS: &str = "liveness";
pub const AGREEMENT: &str = "agreement";
pub const FENCING: &str = "fencing";
pub const FINAL_AGREEMENT: &str = "final agreement";

/// Judges a run: `history` from every node, `store` as the warehouse left it,
/// `unflushed` what cached traders that died for good left in their journals
/// (such a request is acknowledged and not in the warehouse: it still fails
/// "no lost acknowledged request", named as stranded rather than vanished).
pub fn check(
    cfg: &Config,
    history: &History,
    store: &Snapshot,
    unflushed: &[(NodeId, FlushEntry)],
) -> Vec<Verdict> {
    vec![
        conservation(cfg, store),
        no_lost_ack(history, store, unflushed),
        no_double_apply(history, store),
        zero_oversell(cfg, history, store),
        liveness(cfg, history),
        agreement(history, store),
        fencing(history),
        final_agreement(cfg, history, store),
    ]
}

/// The views the warehouse committed, as its history tells them: `(view,
/// commit wall time)`, in epoch order.
fn commits(history: &History) -> Vec<(&View, u64)> {
    let mut c: Vec<(&View, u64)> = history
        .failover
        .iter()
        .filter_map(|r| match &r.what {
            Happening::Committed { view, .. } => Some((view, r.wall_us)),
            _ => None,
        })
        .collect();
    c.sort_by_key(|(v, _)| v.epoch);
    c
}

/// A verdict for a run that answered requests with no view recorded.
fn no_views(name: &str, history: &History) -> Option<Verdict> {
    let answered = history.requests.iter().any(|r| r.outcome == Outcome::Ok);
    answered.then(|| {
        Verdict::new(
            name,
            vec!["requests were answered, but no trader set was ever committed".into()],
            String::new(),
        )
    })
}

fn agreement(history: &History, store: &Snapshot) -> Verdict {
    let mut known: std::collections::BTreeMap<Epoch, (&View, NodeId)> = Default::default();
    for v in &store.views {
        known.insert(v.epoch, (v, NodeId::WAREHOUSE));
    }
    let mut bad = Vec::new();
    let mut seen = 0;
    for r in &history.failover {
        let (Happening::View { view, .. } | Happening::Committed { view, .. }) = &r.what else {
            continue;
        };
        seen += 1;
        let by = r.by.unwrap_or_default();
        match known.get(&view.epoch) {
            Some((v, first)) if *v != view => bad.push(format!(
                "{by} knew {} as {view}, but {first} knew {v}",
                view.epoch
            )),
            Some(_) => {}
            None if !store.views.is_empty() => bad.push(format!(
                "{by} knew {view}, an epoch the warehouse never committed"
            )),
            None => {
                known.insert(view.epoch, (view, by));
            }
        }
    }
    if seen == 0
        && let Some(v) = no_views(AGREEMENT, history)
    {
        return v;
    }
    Verdict::new(
        AGREEMENT,
        bad,
        format!(
            "{} epochs, each known by every node that knew it as the same set ({seen} adoptions)",
            known.len()
        ),
    )
}

fn fencing(history: &History) -> Verdict {
    let commits = commits(history);
    if commits.is_empty()
        && let Some(v) = no_views(FENCING, history)
    {
        return v;
    }
    let mut bad = Vec::new();
    let mut judged = 0;
    for r in history.requests.iter().filter(|r| r.outcome == Outcome::Ok) {
        judged += 1;
        // The epochs current at some moment of [invoked, completed].
        let mut current = commits.iter().enumerate().filter(|(i, (_, at))| {
            let ended = commits.get(i + 1).map(|(_, next)| *next);
            *at <= r.completed_us && ended.is_none_or(|end| end > r.invoked_us)
        });
        if !current.any(|(_, (v, _))| v.contains(r.trader)) {
            let sets: Vec<String> = commits
                .iter()
                .rfind(|(_, at)| *at <= r.completed_us)
                .map(|(v, _)| v.to_string())
                .into_iter()
                .collect();
            bad.push(format!(
                "{} was answered by {}, not a trader of the epoch current then ({})",
                r.id,
                r.trader,
                if sets.is_empty() {
                    "none committed yet".to_string()
                } else {
                    sets.join(", ")
                }
            ));
        }
    }
    Verdict::new(
        FENCING,
        bad,
        format!(
            "all {judged} answered requests answered by a trader of an epoch current at the time ({} epochs)",
            commits.len()
        ),
    )
}

fn final_agreement(cfg: &Config, history: &History, store: &Snapshot) -> Verdict {
    let Some(last) = store.views.last() else {
        return no_views(FINAL_AGREEMENT, history).unwrap_or_else(|| {
            Verdict::new(
                FINAL_AGREEMENT,
                Vec::new(),
                "no trader set, no requests".into(),
            )
        });
    };
    // A peer is held to the view that was current a refresh period before
    // it stopped: message 8 is the fast path, and a peer that missed it asks
    // the warehouse every `heartbeat.timeout` and once more as it stops (see
    // `peer::join::keep_fresh`). A set committed later it may not know.
    let commits = commits(history);
    let settle = cfg.heartbeat.timeout.as_micros() as u64;
    let due_at = |t: u64| commits.iter().rfind(|(_, at)| *at <= t).map(|(v, _)| *v);
    let mut bad = Vec::new();
    let mut peers = 0;
    for f in history
        .finals
        .iter()
        .filter(|f| f.closed && !f.node.is_warehouse())
    {
        peers += 1;
        let due = if commits.is_empty() {
            Some(last)
        } else {
            due_at(f.closed_us.saturating_sub(settle))
        };
        match (&f.view, due) {
            // Nothing was due yet, or it knew at least that.
            (_, None) => {}
            (Some(v), Some(due)) if v.epoch >= due.epoch => {}
            (Some(v), Some(due)) => bad.push(format!(
                "{} ended with {v}, not the warehouse's {due}",
                f.node
            )),
            // Stopped before the market opened for it: it held no list to
            // disagree with, and sent nothing.
            (None, Some(_)) => {}
        }
    }
    Verdict::new(
        FINAL_AGREEMENT,
        bad,
        format!(
            "all {peers} peers that stopped cleanly ended with the warehouse's view then ({last} at the end)"
        ),
    )
}

/// Whether every verdict holds.
pub fn all_ok(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.ok)
}

fn conservation(cfg: &Config, store: &Snapshot) -> Verdict {
    let mut bad = Vec::new();
    if store.books.len() != cfg.products.len() {
        bad.push(format!(
            "the store has {} products, the config {}",
            store.books.len(),
            cfg.products.len()
        ));
    }
    for (p, b) in cfg.products.iter().zip(&store.books) {
        if b.initial != p.stock || !b.conserved() {
            bad.push(format!(
                "{}: initial {} (config {}) + sold {} − shipped {} ≠ final {}",
                p.name, b.initial, p.stock, b.sold, b.shipped, b.stock
            ));
        }
    }
    Verdict::new(
        CONSERVATION,
        bad,
        format!(
            "initial + sold − shipped = final for all {} products",
            store.books.len()
        ),
    )
}

/// Every acknowledged request is in the warehouse as acknowledged: shipped or
/// deposited, plus (cached mode) what was oversold of a granted buy.
fn no_lost_ack(history: &History, store: &Snapshot, unflushed: &[(NodeId, FlushEntry)]) -> Verdict {
    let applied: HashMap<RequestId, Applied> = store.applied.iter().copied().collect();
    let stranded: HashMap<RequestId, NodeId> =
        unflushed.iter().map(|(t, e)| (e.order.id, *t)).collect();
    let mut bad = Vec::new();
    let (mut acked, mut oversold) = (0, 0);
    for r in history.requests.iter().filter(|r| r.outcome == Outcome::Ok) {
        acked += 1;
        match applied.get(&r.id) {
            Some(a) if a.side == r.side && a.acknowledged() == r.granted => {
                oversold += usize::from(a.oversold.0 > 0);
            }
            Some(a) => bad.push(format!(
                "{} acknowledged as {:?} {} but the warehouse applied {:?} {} (+{} oversold)",
                r.id, r.side, r.granted, a.side, a.qty, a.oversold
            )),
            None => match stranded.get(&r.id) {
                Some(t) => bad.push(format!(
                    "{} ({:?} {} via {}) acknowledged but stranded unflushed in {t}'s journal",
                    r.id, r.side, r.granted, r.trader
                )),
                None => bad.push(format!(
                    "{} ({:?} {} via {}) acknowledged but never applied",
                    r.id, r.side, r.granted, r.trader
                )),
            },
        }
    }
    Verdict::new(
        NO_LOST_ACK,
        bad,
        format!(
            "all {acked} acknowledged requests are in the warehouse ({oversold} of them as oversells)"
        ),
    )
}

/// The books must be exactly the sum of the distinct applied requests (each
/// applied request records its product): an application the id table does
/// not account for is a double apply. Every applied request must also have
/// been made by a client, and none that its client was told was refused.
fn no_double_apply(history: &History, store: &Snapshot) -> Verdict {
    let mut bad = Vec::new();
    let mut sold = vec![0u64; store.books.len()];
    let mut shipped = vec![0u64; store.books.len()];
    for (id, a) in &store.applied {
        let p = a.product.0 as usize;
        match (a.side, sold.get_mut(p)) {
            (_, None) => bad.push(format!("{id} was applied to unknown {}", a.product)),
            (Side::Sell, Some(s)) => *s += u64::from(a.qty.0),
            (Side::Buy, Some(_)) => shipped[p] += u64::from(a.qty.0),
        }
    }
    for (i, b) in store.books.iter().enumerate() {
        if b.sold != sold[i] || b.shipped != shipped[i] {
            bad.push(format!(
                "product {i}: books say sold {} shipped {}, applied requests add up to sold {} shipped {}",
                b.sold, b.shipped, sold[i], shipped[i]
            ));
        }
    }
    let invoked: HashSet<RequestId> = history.invokes.iter().map(|i| i.id).collect();
    let unattributed = store
        .applied
        .iter()
        .filter(|(id, _)| !invoked.contains(id))
        .count();
    if unattributed > 0 && history.unclosed.is_empty() {
        // Every client closed its history, so every request is in it.
        bad.push(format!(
            "{unattributed} applied requests were invoked by no client"
        ));
    }
    let applied: HashSet<RequestId> = store.applied.iter().map(|(id, _)| *id).collect();
    for r in &history.requests {
        if let Outcome::Refused(why) = &r.outcome
            && applied.contains(&r.id)
        {
            bad.push(format!(
                "{} was applied, but its client was told it was refused ({why})",
                r.id
            ));
        }
    }
    let mut ok = format!(
        "the books are the sum of {} distinct applied requests, none of them refused",
        store.applied.len()
    );
    if unattributed > 0 {
        ok.push_str(&format!(
            "; {unattributed} made by clients killed before their history was written"
        ));
    }
    Verdict::new(NO_DOUBLE_APPLY, bad, ok)
}

fn zero_oversell(cfg: &Config, history: &History, store: &Snapshot) -> Verdict {
    let oversells: u64 = store.books.iter().map(|b| b.oversells).sum();
    let must_be_zero = matches!(cfg.market.mode, Mode::Strong | Mode::Escrow);
    let mut bad = Vec::new();
    if must_be_zero {
        for (i, b) in store.books.iter().enumerate() {
            if b.oversells > 0 || b.oversold > 0 {
                bad.push(format!(
                    "product {i}: {} oversells ({} items) in {} mode, which must have none",
                    b.oversells, b.oversold, cfg.market.mode
                ));
            }
        }
        for f in history.flushes.iter().filter(|f| f.oversells > 0) {
            bad.push(format!(
                "flush {} from {} oversold {} buys",
                f.id, f.trader, f.oversells
            ));
        }
    }
    Verdict::new(
        ZERO_OVERSELL,
        bad,
        if must_be_zero {
            format!("no oversell in {} mode", cfg.market.mode)
        } else {
            format!(
                "{oversells} oversells, allowed and counted in {} mode",
                cfg.market.mode
            )
        },
    )
}

fn liveness(cfg: &Config, history: &History) -> Verdict {
    // The client keeps one deadline per request, its retries at other
    // traders included.
    let timeout = cfg.market.request_timeout;
    let deadline = timeout + LIVENESS_GRACE;
    let mut bad = Vec::new();
    for r in &history.requests {
        let took = Duration::from_micros(r.latency_us);
        if took > deadline {
            bad.push(format!(
                "{} took {took:?}, past its deadline of {timeout:?}",
                r.id
            ));
        }
    }
    let mut interrupted = 0;
    for u in &history.unanswered {
        if u.closed {
            bad.push(format!(
                "{} ({:?} {} at {}) was invoked and never answered",
                u.invoke.id, u.invoke.side, u.invoke.asked, u.invoke.trader
            ));
        } else {
            interrupted += 1;
        }
    }
    for c in &history.orphans {
        bad.push(format!("{} completed but was never invoked", c.id));
    }
    for c in &history.duplicates {
        bad.push(format!("{} completed twice", c.id));
    }
    let failed = history
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    let mut ok = format!(
        "all {} requests answered or failed within their deadline ({failed} failed)",
        history.requests.len()
    );
    if interrupted > 0 {
        ok.push_str(&format!(
            "; {interrupted} interrupted by their client's death"
        ));
    }
    Verdict::new(LIVENESS, bad, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::history::{Complete, Event, Flush, Invoke, Log, Mark};
    use crate::membership::Record;
    use crate::warehouse::ledger::{Ledger, ProductBook};
    use crate::wire::{NodeId, Order, ProductId, Qty};

    const BUYER: NodeId = NodeId(1);

    fn id(seq: u64) -> RequestId {
        RequestId { node: BUYER, seq }
    }

    fn invoke(seq: u64, side: Side, asked: u32) -> Event {
        Event::Invoke(Invoke {
            id: id(seq),
            side,
            product: ProductId(0),
            asked: Qty(asked),
            trader: NodeId(5),
            wall_us: seq * 10_000,
            lamport: Lamport(2 * seq),
        })
    }

    fn complete(seq: u64, side: Side, asked: u32, granted: u32) -> Event {
        Event::Complete(Complete {
            id: id(seq),
            side,
            product: ProductId(0),
            asked: Qty(asked),
            granted: Qty(granted),
            trader: NodeId(5),
            outcome: Outcome::Ok,
            wall_us: seq * 10_000 + 1000,
            lamport: Lamport(2 * seq + 1),
            latency_us: 1000,
        })
    }

    fn mark(wall_us: u64) -> Mark {
        Mark {
            node: BUYER,
            wall_us,
        }
    }

    fn view(epoch: u64, traders: &[u32]) -> View {
        View {
            epoch: Epoch(epoch),
            traders: traders.iter().copied().map(NodeId).collect(),
        }
    }

    /// The first view of every test run: traders 5 and 6.
    fn first() -> View {
        view(1, &[5, 6])
    }

    fn happened(by: NodeId, wall_us: u64, what: Happening) -> Event {
        Event::Failover(Record {
            wall_us,
            lamport: None,
            by: Some(by),
            what,
        })
    }

    /// `by` adopted `v` at `wall_us`.
    fn adopted(by: NodeId, wall_us: u64, v: View) -> Event {
        let from = NodeId::WAREHOUSE;
        happened(by, wall_us, Happening::View { view: v, from })
    }

    /// The warehouse committed `v` at `wall_us`.
    fn committed(wall_us: u64, v: View) -> Event {
        let what = Happening::Committed {
            view: v,
            proposer: NodeId(6),
            cause: "test".into(),
        };
        happened(NodeId::WAREHOUSE, wall_us, what)
    }

    /// A consistent run, as the client's history file says it: 50 initial,
    /// a sell of 5 and a buy of 3, the history opened and closed cleanly.
    fn clean_events() -> Vec<Event> {
        vec![
            Event::Opened(mark(0)),
            invoke(1, Side::Sell, 5),
            complete(1, Side::Sell, 5, 5),
            invoke(2, Side::Buy, 3),
            complete(2, Side::Buy, 3, 3),
            adopted(BUYER, 1, first()),
            Event::Closed(mark(100_000)),
        ]
    }

    /// The warehouse's store after applying `events`' completed requests.
    fn store_for(events: &[Event]) -> Snapshot {
        let mut ledger = Ledger::new(&[50]);
        let applied = events
            .iter()
            .filter_map(|e| match e {
                Event::Complete(c) => {
                    let order = Order {
                        id: c.id,
                        product: c.product,
                        qty: c.asked,
                    };
                    Some((c.id, ledger.apply(c.side, &order)))
                }
                _ => None,
            })
            .collect();
        Snapshot {
            books: ledger.books,
            applied,
            traders: Vec::new(),
            views: vec![first()],
        }
    }

    /// The buyer's `events` beside a warehouse that committed [`first`].
    fn history(events: Vec<Event>) -> History {
        histories(events, vec![committed(0, first())])
    }

    /// The buyer's `events` and the warehouse's `warehouse` events.
    fn histories(events: Vec<Event>, warehouse: Vec<Event>) -> History {
        let wh = |wall_us| Mark {
            node: NodeId::WAREHOUSE,
            wall_us,
        };
        let mut wh_events = vec![Event::Opened(wh(0))];
        wh_events.extend(warehouse);
        wh_events.push(Event::Closed(wh(200_000)));
        History::from_logs(&[
            Log {
                path: "peer1.jsonl".into(),
                events,
            },
            Log {
                path: "warehouse.jsonl".into(),
                events: wh_events,
            },
        ])
    }

    fn verdict_of(history: &History, snap: &Snapshot, name: &str) -> Verdict {
        check(&Config::default(), history, snap, &[])
            .into_iter()
            .find(|v| v.invariant == name)
            .expect("verdict")
    }

    /// Epoch 2 deposes trader 6: the warehouse committed it at 15 ms.
    fn six_deposed_at_15ms() -> (Vec<Event>, Snapshot) {
        let mut snap = store_for(&clean_events());
        snap.views.push(view(2, &[5]));
        let warehouse = vec![committed(0, first()), committed(15_000, view(2, &[5]))];
        (warehouse, snap)
    }

    #[test]
    fn a_node_that_knew_an_epoch_as_another_set_breaks_agreement() {
        let mut events = clean_events();
        // The buyer says epoch 1 held 4 and 6; the warehouse committed 5 and 6.
        events[5] = adopted(BUYER, 1, view(1, &[4, 6]));
        let snap = store_for(&events);
        let v = verdict_of(&history(events), &snap, AGREEMENT);
        assert!(
            !v.ok
                && v.detail
                    .contains("peer1 knew epoch 1 as epoch 1 {peer4, peer6}"),
            "{v:?}"
        );
        // Without the warehouse's record, two nodes that disagree are caught too.
        let mut events = clean_events();
        events.insert(2, adopted(NodeId(2), 2, view(1, &[4, 6])));
        let mut snap = store_for(&events);
        snap.views.clear();
        let v = verdict_of(&histories(events, vec![]), &snap, AGREEMENT);
        assert!(!v.ok && v.detail.contains("but peer1 knew"), "{v:?}");
    }

    #[test]
    fn an_answer_from_a_deposed_trader_breaks_fencing() {
        let (warehouse, snap) = six_deposed_at_15ms();
        let mut events = clean_events();
        // The buy (invoked at 20 ms) was answered by trader 6, deposed at 15 ms.
        for e in &mut events {
            if let Event::Complete(c) = e
                && c.id == id(2)
            {
                c.trader = NodeId(6);
            }
        }
        events.insert(events.len() - 1, adopted(BUYER, 30_000, view(2, &[5])));
        let h = histories(events.clone(), warehouse.clone());
        let verdicts = check(&Config::default(), &h, &snap, &[]);
        for v in &verdicts {
            assert_eq!(v.ok, v.invariant != FENCING, "{verdicts:#?}");
        }
        let v = verdict_of(&h, &snap, FENCING);
        assert!(v.detail.contains("1#2 was answered by peer6"), "{v:?}");
        // Answered by 6 while its epoch was still current: fine.
        let mut early = warehouse;
        early[1] = committed(25_000, view(2, &[5]));
        assert!(verdict_of(&histories(events, early), &snap, FENCING).ok);
    }

    #[test]
    fn a_peer_that_ends_on_an_old_view_breaks_final_agreement() {
        let (warehouse, snap) = six_deposed_at_15ms();
        // The buyer never heard of epoch 2 and stopped cleanly a second
        // later, long enough to have learned it (a refresh period is 600 ms).
        let mut events = clean_events();
        *events.last_mut().unwrap() = Event::Closed(mark(1_000_000));
        let h = histories(events.clone(), warehouse.clone());
        let verdicts = check(&Config::default(), &h, &snap, &[]);
        for v in &verdicts {
            assert_eq!(v.ok, v.invariant != FINAL_AGREEMENT, "{verdicts:#?}");
        }
        let v = verdict_of(&h, &snap, FINAL_AGREEMENT);
        assert!(v.detail.contains("peer1 ended with epoch 1"), "{v:?}");
        // A peer that stopped before it could have heard is not held to it,
        // nor one that was killed.
        assert!(
            verdict_of(
                &histories(clean_events(), warehouse.clone()),
                &snap,
                FINAL_AGREEMENT
            )
            .ok
        );
        events.pop();
        assert!(verdict_of(&histories(events, warehouse), &snap, FINAL_AGREEMENT).ok);
    }

    #[test]
    fn requests_answered_with_no_view_ever_committed_fail_the_membership_checks() {
        let events: Vec<Event> = clean_events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Failover(_)))
            .collect();
        let mut snap = store_for(&events);
        snap.views.clear();
        let h = histories(events, vec![]);
        for name in [AGREEMENT, FENCING, FINAL_AGREEMENT] {
            let v = verdict_of(&h, &snap, name);
            assert!(!v.ok && v.detail.contains("no trader set"), "{v:?}");
        }
    }

    fn verdict(cfg: &Config, events: Vec<Event>, snap: &Snapshot, name: &str) -> Verdict {
        check(cfg, &history(events), snap, &[])
            .into_iter()
            .find(|v| v.invariant == name)
            .expect("verdict")
    }

    /// Every verdict but `name` holds; `name`'s is returned.
    fn only_failure(cfg: &Config, events: Vec<Event>, snap: &Snapshot, name: &str) -> Verdict {
        let verdicts = check(cfg, &history(events), snap, &[]);
        for v in &verdicts {
            assert_eq!(v.ok, v.invariant != name, "{verdicts:#?}");
        }
        verdicts.into_iter().find(|v| v.invariant == name).unwrap()
    }

    #[test]
    fn a_clean_history_passes() {
        let cfg = Config::default();
        let events = clean_events();
        let snap = store_for(&events);
        let verdicts = check(&cfg, &history(events), &snap, &[]);
        assert!(all_ok(&verdicts), "{verdicts:#?}");
        assert_eq!(verdicts.len(), 8);
        assert!(verdicts.iter().all(|v| v.offenders == 0));
    }

    #[test]
    fn stock_not_conserved_is_caught() {
        let (cfg, events) = (Config::default(), clean_events());
        let mut snap = store_for(&events);
        snap.books[0].stock += 1;
        let v = only_failure(&cfg, events, &snap, CONSERVATION);
        assert!(v.detail.contains("≠ final 53"), "{v:?}");
        assert_eq!(v.offenders, 1);
    }

    #[test]
    fn a_lost_ack_is_caught() {
        let (cfg, events) = (Config::default(), clean_events());
        // The warehouse never applied the buy its trader granted.
        let snap = store_for(&events[..3]);
        let v = only_failure(&cfg, events, &snap, NO_LOST_ACK);
        assert!(
            v.detail.contains("1#2") && v.detail.contains("never applied"),
            "{v:?}"
        );
    }

    #[test]
    fn an_ack_applied_differently_is_caught() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let snap = store_for(&events);
        // The client was told it got 3; the warehouse shipped 3 — unless the
        // history says the client saw 2.
        if let Event::Complete(c) = &mut events[4] {
            c.granted = Qty(2);
        }
        let v = only_failure(&cfg, events, &snap, NO_LOST_ACK);
        assert!(v.detail.contains("acknowledged as Buy 2"), "{v:?}");
    }

    #[test]
    fn a_double_apply_is_caught() {
        let (cfg, events) = (Config::default(), clean_events());
        let mut snap = store_for(&events);
        // The buy was applied a second time: the books moved, the id table did not.
        snap.books[0].stock -= 3;
        snap.books[0].shipped += 3;
        let v = only_failure(&cfg, events, &snap, NO_DOUBLE_APPLY);
        assert!(v.detail.contains("shipped 6"), "{v:?}");
    }

    #[test]
    fn a_double_apply_is_caught_even_when_a_client_was_killed() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let mut snap = store_for(&events);
        snap.books[0].stock -= 3;
        snap.books[0].shipped += 3;
        // The client was killed (no `closed`), and a request of another,
        // killed client is applied that no history knows of.
        events.pop();
        let mut stray = snap.applied[0];
        stray.0.node = NodeId(9);
        snap.books[0].sold += u64::from(stray.1.qty.0);
        snap.books[0].stock += u64::from(stray.1.qty.0);
        snap.applied.push(stray);
        let v = verdict(&cfg, events, &snap, NO_DOUBLE_APPLY);
        assert!(!v.ok && v.detail.contains("shipped 6"), "{v:?}");
    }

    #[test]
    fn a_refused_request_the_warehouse_applied_is_caught() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let snap = store_for(&events);
        if let Event::Complete(c) = &mut events[4] {
            c.outcome = Outcome::Refused("quantity must be at least 1".into());
            c.granted = Qty(0);
        }
        let v = only_failure(&cfg, events, &snap, NO_DOUBLE_APPLY);
        assert!(
            v.detail
                .contains("1#2 was applied, but its client was told it was refused"),
            "{v:?}"
        );
    }

    #[test]
    fn an_applied_row_the_books_do_not_show_is_caught() {
        let (cfg, events) = (Config::default(), clean_events());
        let mut snap = store_for(&events);
        let again = snap.applied[1];
        snap.applied.push(again);
        let v = verdict(&cfg, events, &snap, NO_DOUBLE_APPLY);
        assert!(
            !v.ok && v.detail.contains("books say sold 5 shipped 3"),
            "{v:?}"
        );
    }

    #[test]
    fn an_oversell_in_strong_mode_is_caught() {
        let (cfg, events) = (Config::default(), clean_events());
        let mut snap = store_for(&events);
        snap.books[0] = ProductBook {
            oversells: 1,
            oversold: 2,
            ..snap.books[0]
        };
        let v = only_failure(&cfg, events, &snap, ZERO_OVERSELL);
        assert!(
            v.detail
                .contains("1 oversells (2 items) in strong mode, which must have none"),
            "{v:?}"
        );
    }

    #[test]
    fn an_oversold_flush_in_escrow_mode_is_caught_and_allowed_in_cached() {
        let mut cfg = Config::default();
        let mut events = clean_events();
        let snap = store_for(&events);
        events.insert(
            5,
            Event::Flush(Flush {
                trader: NodeId(6),
                id: RequestId {
                    node: NodeId(6),
                    seq: 1,
                },
                requests: 5,
                oversells: 2,
                oversold: 4,
                wall_us: 50_000,
                lamport: Lamport(20),
            }),
        );
        cfg.market.mode = Mode::Escrow;
        let v = verdict(&cfg, events.clone(), &snap, ZERO_OVERSELL);
        assert!(!v.ok && v.detail.contains("flush 6#1 from peer6 oversold 2 buys"));
        cfg.market.mode = Mode::Cached;
        assert!(verdict(&cfg, events, &snap, ZERO_OVERSELL).ok);
    }

    #[test]
    fn a_request_with_no_answer_is_caught() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let snap = store_for(&events);
        events.insert(5, invoke(3, Side::Buy, 4));
        let v = only_failure(&cfg, events, &snap, LIVENESS);
        assert!(
            v.detail
                .contains("1#3 (Buy 4 at peer5) was invoked and never answered"),
            "{v:?}"
        );
    }

    #[test]
    fn a_request_cut_short_by_its_clients_death_is_not_a_failure() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let snap = store_for(&events);
        events.pop(); // no `closed`: the client was killed...
        events.push(invoke(3, Side::Buy, 4)); // ...while waiting for this one
        let v = verdict(&cfg, events, &snap, LIVENESS);
        assert!(v.ok && v.detail.contains("1 interrupted"), "{v:?}");
    }

    #[test]
    fn a_request_past_its_deadline_is_caught() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let snap = store_for(&events);
        let late = (cfg.market.request_timeout + LIVENESS_GRACE).as_micros() as u64 + 1;
        if let Event::Complete(c) = &mut events[4] {
            c.latency_us = late;
        }
        let v = only_failure(&cfg, events, &snap, LIVENESS);
        assert!(v.detail.contains("past its deadline"), "{v:?}");
    }

    #[test]
    fn completions_without_invoke_or_twice_are_caught() {
        let (cfg, mut events) = (Config::default(), clean_events());
        let snap = store_for(&events);
        events.insert(5, complete(2, Side::Buy, 3, 3));
        let v = verdict(&cfg, events.clone(), &snap, LIVENESS);
        assert!(!v.ok && v.detail.contains("1#2 completed twice"), "{v:?}");
        events.remove(3); // the buy's invoke
        let v = verdict(&cfg, events, &snap, LIVENESS);
        assert!(
            v.detail.contains("1#2 completed but was never invoked"),
            "{v:?}"
        );
    }

    #[test]
    fn an_oversold_buy_counts_as_in_the_warehouse_and_a_stranded_one_is_named() {
        let (mut cfg, events) = (Config::default(), clean_events());
        cfg.market.mode = Mode::Cached;
        let mut snap = store_for(&events);
        // The buy of 3 was granted from a cache; the warehouse shipped 1.
        let buy = snap.applied.iter().position(|(i, _)| *i == id(2)).unwrap();
        snap.applied[buy].1 = Applied {
            qty: Qty(1),
            oversold: Qty(2),
            ..snap.applied[buy].1
        };
        snap.books[0].shipped -= 2;
        snap.books[0].stock += 2;
        snap.books[0].oversold += 2;
        snap.books[0].oversells += 1;
        let v = verdict(&cfg, events.clone(), &snap, NO_LOST_ACK);
        assert!(v.ok && v.detail.contains("1 of them as oversells"), "{v:?}");
        // Shipped 1 and oversold 1 does not add up to the 3 acknowledged.
        snap.applied[buy].1.oversold = Qty(1);
        assert!(!verdict(&cfg, events.clone(), &snap, NO_LOST_ACK).ok);
        // Not applied, but left in a dead trader's journal.
        snap.applied.retain(|(i, _)| *i != id(2));
        let entry = FlushEntry {
            order: Order {
                id: id(2),
                product: ProductId(0),
                qty: Qty(3),
            },
            side: Side::Buy,
            clock: Lamport(3),
            granted: Qty(3),
            epoch: crate::wire::Epoch(1),
        };
        let v = check(&cfg, &history(events), &snap, &[(NodeId(6), entry)])
            .into_iter()
            .find(|v| v.invariant == NO_LOST_ACK)
            .unwrap();
        assert!(
            !v.ok && v.detail.contains("stranded unflushed in peer6"),
            "{v:?}"
        );
    }
}
