//! Entering the market: a peer tells the warehouse it is up (join), waits
//! until the market opens (every peer has joined), and elects the traders
//! with the others (messages 0 and 1, [`crate::election`]), whose result
//! the warehouse commits as epoch 1.
//!
//! A peer that joins after the first view was committed (a late start, a
//! restart) takes the current view from the warehouse's answer and starts
//! no election: it joins the market without disturbing it. Until it has a
//! view the peer asks the warehouse again every election timeout, so it
//! never depends on one message 1 reaching it; while the warehouse cannot be
//! reached it waits with backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::service::Service;
use crate::backoff::Backoff;
use crate::election::{Election, Outgoing};
use crate::link::CallError;
use crate::node::now;
use crate::wire::{Body, NodeId, Refusal, View};

/// Longest wait between two tries at an unreachable warehouse.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Joins the market and waits for a view (epoch 1 or later). Returns the
/// first view the warehouse committed (its set fixes the buyers' and
/// sellers' roles); the current one is in the node's membership.
pub async fn enter(svc: &Arc<Service>, stop: &CancellationToken) -> anyhow::Result<View> {
    let timeout = svc.ctx.config.election.timeout;
    let mut rng = StdRng::seed_from_u64(svc.ctx.config.market.seed ^ u64::from(svc.ctx.me.0));
    let mut backoff = Backoff::new(timeout / 4, MAX_BACKOFF);
    let mut views = svc.ctx.traders.subscribe();
    let mut electing = false;
    let mut said_waiting = false;
    loop {
        let id = svc.control_id();
        let wait = match svc.warehouse.call(Body::Join { id }, timeout).await {
            Ok(Body::Joined {
                view, first, open, ..
            }) => {
                backoff.succeed();
                if view.epoch.0 >= 1 {
                    svc.adopt(&view, NodeId::WAREHOUSE);
                    return Ok(first);
                }
                if open && !electing {
                    electing = true;
                    tracing::info!("every peer has joined: electing the traders");
                    start_election(svc, stop);
                } else if !open && !said_waiting {
                    said_waiting = true;
                    tracing::info!(
                        "joined; waiting for the other peers (the market opens once all {} have joined)",
                        svc.ctx.config.market.peers
                    );
                }
                timeout
            }
            Ok(Body::Refused {
                reason: reason @ Refusal::Membership { .. },
                ..
            }) => bail!(
                "{}: the warehouse refused to let it join: {reason}",
                svc.ctx.me
            ),
            Ok(other) => {
                tracing::warn!("the warehouse answered a join with {}", other.name());
                backoff.fail(&mut rng)
            }
            Err(e) => {
                let wait = backoff.fail(&mut rng);
                if backoff.failures() == 1 || backoff.failures().is_power_of_two() {
                    tracing::warn!(
                        "cannot reach the warehouse ({e}); trying again in {} ms",
                        wait.as_millis()
                    );
                }
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = views.changed() => if r.is_err() { bail!("stopped") },
            _ = stop.cancelled() => bail!("stopped before the market opened"),
        }
        // Ask again (at once if a view arrived by message 1: the warehouse's
        // answer also carries the first view).
    }
}

/// Asks the warehouse for the current view once and adopts it; false if
/// the warehouse did not answer with one.
pub async fn refresh(svc: &Service, timeout: Duration) -> bool {
    let id = svc.control_id();
    match svc.warehouse.call(Body::Join { id }, timeout).await {
        Ok(Body::Joined { view, .. }) => {
            svc.adopt(&view, NodeId::WAREHOUSE);
            true
        }
        _ => false,
    }
}

/// Refreshes of the view the whole market may ask of the warehouse in a
/// second, at most, beside its real work: a large market's peers refresh
/// less often each (a 1,000-peer market's every 10 s, a 6-peer market's
/// every heartbeat timeout).
const REFRESHES_PER_SECOND: u32 = 100;

/// How often a non-trader asks the warehouse for the view: every heartbeat
/// timeout, or less often in a market too large for the warehouse to answer
/// every peer that often ([`REFRESHES_PER_SECOND`]).
pub fn refresh_period(heartbeat_timeout: Duration, peers: u32) -> Duration {
    let budget = Duration::from_secs(1) * peers / REFRESHES_PER_SECOND;
    heartbeat_timeout.max(budget)
}

/// Keeps a peer's view fresh while it is not a trader (a trader's lease
/// renewals do that): message 8 is the fast path, and a peer that missed it
/// (a lost message, a partition) asks the warehouse every
/// [`refresh_period`], at a moment of its own within it (so the peers'
/// refreshes spread out rather than arrive together), so every peer
/// converges on the current view.
pub async fn keep_fresh(svc: Arc<Service>, stop: CancellationToken) {
    let cfg = &svc.ctx.config;
    let every = refresh_period(cfg.heartbeat.timeout, cfg.market.peers);
    // Its own stream, apart from the node's client's (same node seed).
    let seed = super::client::node_seed(cfg.market.seed, svc.ctx.me) ^ 0xF2E5;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut wait = every.mul_f64(rng.random::<f64>());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = every;
        if !svc.ctx.traders.is_trader() {
            refresh(&svc, cfg.heartbeat.timeout).await;
        }
    }
}

/// Starts the election after this peer's [`Election::start_delay`] (unless
/// a message 0 started it before, or the result is known by then) and its
/// ticker (which runs for the node's life: late messages may need
/// answering).
fn start_election(svc: &Arc<Service>, stop: &CancellationToken) {
    let tick = (svc.ctx.config.election.timeout / 10).max(Duration::from_millis(5));
    let delay = svc.election.lock().expect("election").start_delay();
    let (svc, stop) = (svc.clone(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        let outs = step(&svc, NodeId::WAREHOUSE, |e| e.start(now()));
        dispatch(&svc, outs);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.cancelled() => return,
            }
            let outs = step(&svc, NodeId::WAREHOUSE, |e| e.on_tick(now()));
            dispatch(&svc, outs);
        }
    });
}

/// Message 0 or 1 from `from`: the election's part. Returns the reply to a
/// message 0.
pub fn on_election_message(svc: &Arc<Service>, from: NodeId, body: Body) -> Option<Body> {
    let mut outs = step(svc, from, |e| e.on_message(now(), from, &body));
    let reply = outs
        .iter()
        .position(|o| o.to == from && o.body.reply_id().is_some())
        .map(|i| outs.remove(i).body);
    dispatch(svc, outs);
    reply
}

/// Runs the election state machine and adopts a view it learned (heard
/// from `from`).
fn step(
    svc: &Service,
    from: NodeId,
    f: impl FnOnce(&mut Election) -> Vec<Outgoing>,
) -> Vec<Outgoing> {
    let (outs, result) = {
        let mut e = svc.election.lock().expect("election");
        let outs = f(&mut e);
        (outs, e.result().cloned())
    };
    if let Some(view) = result {
        svc.adopt(&view, from);
    }
    outs
}

/// Sends what the election asked for: messages to peers, the proposal to
/// the warehouse; feeds the answers back.
fn dispatch(svc: &Arc<Service>, outs: Vec<Outgoing>) {
    let timeout = svc.ctx.config.election.timeout;
    for o in outs {
        let svc = svc.clone();
        tokio::spawn(async move {
            let link = if o.to.is_warehouse() {
                &svc.warehouse
            } else {
                match svc.control.get(&o.to) {
                    Some(l) => l,
                    None => return,
                }
            };
            if o.body.request_id().is_none() {
                if let Err(e) = link.send(o.body, timeout).await {
                    tracing::debug!("election message to {} not sent: {e}", o.to);
                }
                return;
            }
            let more = match link.call(o.body, timeout).await {
                Ok(reply) => step(&svc, o.to, |e| e.on_message(now(), o.to, &reply)),
                Err(CallError::Timeout { .. }) => Vec::new(),
                Err(_) => step(&svc, o.to, |e| e.on_unreachable(now(), o.to)),
            };
            dispatch(&svc, more);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_market_refreshes_its_views_within_the_warehouses_budget() {
        let timeout = Duration::from_millis(600);
        assert_eq!(refresh_period(timeout, 6), timeout);
        assert_eq!(refresh_period(timeout, 100), Duration::from_secs(1));
        assert_eq!(refresh_period(timeout, 1000), Duration::from_secs(10));
        for peers in [1, 6, 100, 1000, 100_000] {
            let per_second = f64::from(peers) / refresh_period(timeout, peers).as_secs_f64();
            assert!(
                per_second <= f64::from(REFRESHES_PER_SECOND),
                "{peers}: {per_second}"
            );
        }
    }
}
