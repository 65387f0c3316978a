//! The invariant checker (DESIGN.md §7): judges a run after the fact from the
//! clients' histories and the warehouse's final store, like Jepsen's checkers.
//!
//! Each invariant gets a [`Verdict`]; a failing one names the first few
//! offending requests so a person can find them in the history.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode};
use crate::history::{Outcome, Request};
use crate::warehouse::ledger::Applied;
use crate::warehouse::store::Snapshot;
use crate::wire::{FlushEntry, NodeId, RequestId, Side};

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
    pub detail: String,
}

impl Verdict {
    fn new(invariant: &str, offenders: Vec<String>, total: usize, ok_detail: String) -> Self {
        let ok = offenders.is_empty();
        let detail = if ok {
            ok_detail
        } else {
            let more = total.saturating_sub(SHOWN);
            let mut d = offenders.join("; ");
            if more > 0 {
                d.push_str(&format!("; and {more} more"));
            }
            d
        };
        Verdict {
            invariant: invariant.to_string(),
            ok,
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

/// Judges a run: `requests` from every client's history, `store` as the
/// warehouse left it.
pub fn check(cfg: &Config, requests: &[&Request], store: &Snapshot) -> Vec<Verdict> {
    check_with_journals(cfg, requests, store, &[])
}

/// [`check`], also given what cached traders left unflushed in their journals
/// (a trader that died for good): such a request is acknowledged and not in the
/// warehouse, so it still fails "no lost acknowledged request", but it is named
/// as stranded rather than as vanished.
pub fn check_with_journals(
    cfg: &Config,
    requests: &[&Request],
    store: &Snapshot,
    unflushed: &[(NodeId, FlushEntry)],
) -> Vec<Verdict> {
    let applied: HashMap<RequestId, Applied> = store.applied.iter().copied().collect();
    let stranded: HashMap<RequestId, NodeId> =
        unflushed.iter().map(|(t, e)| (e.order.id, *t)).collect();
    vec![
        conservation(cfg, store),
        no_lost_ack(requests, &applied, &stranded),
        no_double_apply(requests, store),
        zero_oversell(cfg, store),
        liveness(cfg, requests),
    ]
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
    let n = bad.len();
    bad.truncate(SHOWN);
    Verdict::new(
        CONSERVATION,
        bad,
        n,
        format!(
            "initial + sold − shipped = final for all {} products",
            store.books.len()
        ),
    )
}

/// Every acknowledged request is in the warehouse as acknowledged: shipped or
/// deposited, plus (cached mode) what was oversold of a granted buy.
fn no_lost_ack(
    requests: &[&Request],
    applied: &HashMap<RequestId, Applied>,
    stranded: &HashMap<RequestId, NodeId>,
) -> Verdict {
    let mut bad = Vec::new();
    let (mut acked, mut oversold) = (0, 0);
    for r in requests.iter().filter(|r| r.outcome == Outcome::Ok) {
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
    let n = bad.len();
    bad.truncate(SHOWN);
    Verdict::new(
        NO_LOST_ACK,
        bad,
        n,
        format!(
            "all {acked} acknowledged requests are in the warehouse ({oversold} of them as oversells)"
        ),
    )
}

fn no_double_apply(requests: &[&Request], store: &Snapshot) -> Verdict {
    // The books must be exactly the sum of the distinct applied requests: an
    // application the id table does not account for is a double apply.
    let mut bad = Vec::new();
    let mut sold = vec![0u64; store.books.len()];
    let mut shipped = vec![0u64; store.books.len()];
    let invoked: HashMap<RequestId, &Request> = requests.iter().map(|r| (r.id, *r)).collect();
    for (id, a) in &store.applied {
        let Some(r) = invoked.get(id) else {
            bad.push(format!("{id} was applied but no client made it"));
            continue;
        };
        let Some(p) = sold.get_mut(r.product.0 as usize) else {
            continue;
        };
        match a.side {
            Side::Sell => *p += u64::from(a.qty.0),
            Side::Buy => shipped[r.product.0 as usize] += u64::from(a.qty.0),
        }
    }
    // Requests of clients that crashed before writing their history cannot be
    // attributed; only judge the totals when every applied id was found.
    if bad.is_empty() {
        for (i, b) in store.books.iter().enumerate() {
            if b.sold != sold[i] || b.shipped != shipped[i] {
                bad.push(format!(
                    "product {i}: books say sold {} shipped {}, applied requests add up to sold {} shipped {}",
                    b.sold, b.shipped, sold[i], shipped[i]
                ));
            }
        }
    }
    let n = bad.len();
    bad.truncate(SHOWN);
    Verdict::new(
        NO_DOUBLE_APPLY,
        bad,
        n,
        format!(
            "the books are the sum of {} distinct applied requests",
            store.applied.len()
        ),
    )
}

fn zero_oversell(cfg: &Config, store: &Snapshot) -> Verdict {
    let oversells: u64 = store.books.iter().map(|b| b.oversells).sum();
    let must_be_zero = matches!(cfg.market.mode, Mode::Strong | Mode::Escrow);
    let bad = if must_be_zero && oversells > 0 {
        vec![format!(
            "{oversells} oversells in {} mode, which must have none",
            cfg.market.mode
        )]
    } else {
        Vec::new()
    };
    Verdict::new(
        ZERO_OVERSELL,
        bad,
        1,
        if must_be_zero {
            format!("no oversell in {} mode", cfg.market.mode)
        } else {
            format!("{oversells} oversells, allowed and counted in cached mode")
        },
    )
}

fn liveness(cfg: &Config, requests: &[&Request]) -> Verdict {
    let deadline = cfg.market.request_timeout + LIVENESS_GRACE;
    let late: Vec<&&Request> = requests
        .iter()
        .filter(|r| Duration::from_micros(r.latency_us) > deadline)
        .collect();
    let bad = late
        .iter()
        .take(SHOWN)
        .map(|r| {
            format!(
                "{} took {:?}, past its deadline of {:?}",
                r.id,
                Duration::from_micros(r.latency_us),
                cfg.market.request_timeout
            )
        })
        .collect();
    let failed = requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    Verdict::new(
        LIVENESS,
        bad,
        late.len(),
        format!(
            "all {} requests answered or failed within their deadline ({failed} failed)",
            requests.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::warehouse::ledger::{Ledger, ProductBook};
    use crate::wire::{NodeId, ProductId, Qty};

    fn req(seq: u64, side: Side, asked: u32, granted: u32) -> Request {
        Request {
            id: RequestId {
                node: NodeId(1),
                seq,
            },
            side,
            product: ProductId(0),
            asked: Qty(asked),
            granted: Qty(granted),
            trader: NodeId(5),
            outcome: Outcome::Ok,
            invoked_us: 0,
            completed_us: 1000,
            latency_us: 1000,
            lamport_invoked: Lamport(1),
            lamport_completed: Lamport(2),
        }
    }

    /// A consistent run: 50 initial, a sell of 5 and a buy of 3.
    fn clean() -> (Config, Vec<Request>, Snapshot) {
        let cfg = Config::default();
        let reqs = vec![req(1, Side::Sell, 5, 5), req(2, Side::Buy, 3, 3)];
        let mut ledger = Ledger::new(&[50]);
        let applied = reqs
            .iter()
            .map(|r| {
                let order = crate::wire::Order {
                    id: r.id,
                    product: r.product,
                    qty: r.asked,
                };
                (r.id, ledger.apply(r.side, &order))
            })
            .collect();
        (
            cfg,
            reqs,
            Snapshot {
                books: ledger.books,
                applied,
                traders: Vec::new(),
            },
        )
    }

    fn verdict(cfg: &Config, reqs: &[Request], snap: &Snapshot, name: &str) -> Verdict {
        let refs: Vec<&Request> = reqs.iter().collect();
        check(cfg, &refs, snap)
            .into_iter()
            .find(|v| v.invariant == name)
            .expect("verdict")
    }

    #[test]
    fn a_clean_history_passes() {
        let (cfg, reqs, snap) = clean();
        let refs: Vec<&Request> = reqs.iter().collect();
        let verdicts = check(&cfg, &refs, &snap);
        assert!(all_ok(&verdicts), "{verdicts:#?}");
    }

    #[test]
    fn stock_not_conserved_is_caught() {
        let (cfg, reqs, mut snap) = clean();
        snap.books[0].stock += 1;
        let v = verdict(&cfg, &reqs, &snap, CONSERVATION);
        assert!(!v.ok && v.detail.contains("≠ final 53"), "{v:?}");
    }

    #[test]
    fn a_lost_ack_is_caught() {
        let (cfg, reqs, mut snap) = clean();
        snap.applied.retain(|(id, _)| id.seq != 2);
        let v = verdict(&cfg, &reqs, &snap, NO_LOST_ACK);
        assert!(
            !v.ok && v.detail.contains("1#2") && v.detail.contains("never applied"),
            "{v:?}"
        );
    }

    #[test]
    fn an_oversold_buy_counts_as_in_the_warehouse_and_a_stranded_one_is_named() {
        let (mut cfg, reqs, mut snap) = clean();
        cfg.market.mode = Mode::Cached;
        // The buy of 3 was granted from a cache; the warehouse shipped 1.
        snap.applied[1].1 = Applied {
            qty: Qty(1),
            oversold: Qty(2),
            ..snap.applied[1].1
        };
        let v = verdict(&cfg, &reqs, &snap, NO_LOST_ACK);
        assert!(v.ok && v.detail.contains("1 of them as oversells"), "{v:?}");
        // Shipped 1 and oversold 1 does not add up to the 3 acknowledged.
        snap.applied[1].1.oversold = Qty(1);
        assert!(!verdict(&cfg, &reqs, &snap, NO_LOST_ACK).ok);
        // Not applied, but left in a dead trader's journal.
        snap.applied.retain(|(id, _)| id.seq != 2);
        let entry = FlushEntry {
            order: crate::wire::Order {
                id: reqs[1].id,
                product: ProductId(0),
                qty: Qty(3),
            },
            side: Side::Buy,
            clock: Lamport(3),
            granted: Qty(3),
        };
        let refs: Vec<&Request> = reqs.iter().collect();
        let v = check_with_journals(&cfg, &refs, &snap, &[(NodeId(6), entry)])
            .into_iter()
            .find(|v| v.invariant == NO_LOST_ACK)
            .unwrap();
        assert!(
            !v.ok && v.detail.contains("stranded unflushed in peer6"),
            "{v:?}"
        );
    }

    #[test]
    fn a_double_apply_is_caught() {
        let (cfg, reqs, mut snap) = clean();
        // The buy was applied a second time: the books moved, the id table did not.
        snap.books[0].stock -= 3;
        snap.books[0].shipped += 3;
        let v = verdict(&cfg, &reqs, &snap, NO_DOUBLE_APPLY);
        assert!(!v.ok && v.detail.contains("shipped 6"), "{v:?}");
    }

    #[test]
    fn an_oversell_in_strong_mode_is_caught() {
        let (cfg, reqs, mut snap) = clean();
        snap.books[0] = ProductBook {
            oversells: 1,
            oversold: 2,
            ..snap.books[0]
        };
        let v = verdict(&cfg, &reqs, &snap, ZERO_OVERSELL);
        assert!(
            !v.ok && v.detail.contains("1 oversells in strong mode"),
            "{v:?}"
        );
    }

    #[test]
    fn a_request_past_its_deadline_is_caught() {
        let (cfg, mut reqs, snap) = clean();
        reqs[1].latency_us = (cfg.market.request_timeout + LIVENESS_GRACE).as_micros() as u64 + 1;
        let v = verdict(&cfg, &reqs, &snap, LIVENESS);
        assert!(!v.ok && v.detail.contains("past its deadline"), "{v:?}");
    }
}
