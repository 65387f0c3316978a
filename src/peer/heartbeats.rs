//! The heartbeat driver (message 7) and what follows a death (message 8):
//! the thin async side of the pure [`crate::heartbeat::Detector`].
//!
//! While this peer is a trader it heartbeats the other traders of its view;
//! a heartbeat refused with a newer view is adopted (this trader may be
//! deposed by it). When the detector finds a trader dead, this trader
//! proposes the view without it (and with a promoted peer, if
//! `replace_dead_traders`) to the warehouse, based on its own epoch
//! ([`succession`]). Only once the warehouse commits it does it tell every
//! peer (message 8, carrying the committed view). A proposal refused because
//! the epoch moved on is dropped if the new view already settles it, and
//! made again on the new epoch otherwise; one refused because the "dead"
//! trader still renews its lease at the warehouse is retried once the lease
//! would have run out, and dropped if it keeps being renewed (the trader is
//! alive, only cut off from this one).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use super::service::Service;
use crate::backoff::Backoff;
use crate::heartbeat::{Cause, Detector, Output};
use crate::link::CallError;
use crate::membership::{Happening, successor};
use crate::node::now;
use crate::wire::{Body, NodeId, Refusal};

/// Times a removal is tried against a trader that keeps renewing its lease.
const LEASE_HELD_TRIES: u32 = 3;

/// Deaths being settled with the warehouse, so one is proposed once.
#[derive(Default)]
pub struct Settling(Mutex<BTreeSet<NodeId>>);

/// Heartbeats this peer received, by sender: the handler tells the
/// driver, whose detector counts them as signs of life.
pub struct Heard {
    tx: tokio::sync::mpsc::Sender<NodeId>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<NodeId>>>,
}

impl Default for Heard {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Heard {
    /// A heartbeat from `from` arrived (dropped if the driver lags: the
    /// next one will do).
    pub fn tell(&self, from: NodeId) {
        let _ = self.tx.try_send(from);
    }

    fn take(&self) -> Option<tokio::sync::mpsc::Receiver<NodeId>> {
        self.rx.lock().expect("heard").take()
    }
}

/// The heartbeat driver: while this peer is a trader, feeds the detector
/// the time and the heartbeats' outcomes, and acts on deaths.
pub async fn run(svc: Arc<Service>, stop: CancellationToken) {
    let hb = &svc.ctx.config.heartbeat;
    let mut detector = Detector::new(svc.ctx.me, hb.interval, hb.timeout);
    let tick = (hb.interval / 4).max(Duration::from_millis(5));
    let mut changes = svc.ctx.traders.subscribe();
    let (done_tx, mut done) = tokio::sync::mpsc::channel(256);
    let Some(mut heard) = svc.heard.take() else {
        return; // one driver per peer
    };
    loop {
        detector.watch(now(), &svc.ctx.traders.view());
        let outs = tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() { return; }
                continue;
            }
            _ = tokio::time::sleep(tick) => detector.on_tick(now()),
            Some(from) = heard.recv() => {
                detector.on_heard(now(), from);
                Vec::new()
            }
            Some((to, result)) = done.recv() => {
                let now = now();
                match result {
                    Ok(Body::Refused { reason: Refusal::StaleEpoch { current, .. }, .. }) => {
                        svc.adopt(&current, to);
                        Vec::new()
                    }
                    Ok(reply) => {
                        let out = detector.on_message(now, to, &reply);
                        if let Some(anchor) = detector.lease_anchor() {
                            svc.tenure.grant(anchor, hb.lease);
                        }
                        out
                    }
                    Err(CallError::Timeout { .. }) => Vec::new(),
                    Err(CallError::Lost { .. }) => detector.on_lost(now, to),
                    Err(e) => detector.on_refused(now, to, e.to_string()),
                }
            }
        };
        for o in outs {
            match o {
                // A trader whose worker does not answer goes silent.
                Output::Send(_) if !svc.tenure.serving() => {}
                Output::Send(beat) => {
                    let (svc, tx, timeout) = (svc.clone(), done_tx.clone(), hb.timeout);
                    tokio::spawn(async move {
                        let Some(link) = svc.control.get(&beat.to) else {
                            return;
                        };
                        let r = link.call(beat.body, timeout).await;
                        let _ = tx.send((beat.to, r)).await;
                    });
                }
                Output::Dead { node, cause } => {
                    tokio::spawn(succession(svc.clone(), node, cause, stop.clone()));
                }
            }
        }
    }
}

/// `dead` was found dead: has the warehouse commit a view without it, then
/// tells every peer (message 8).
pub async fn succession(svc: Arc<Service>, dead: NodeId, cause: Cause, stop: CancellationToken) {
    if !svc.settling.0.lock().expect("settling").insert(dead) {
        return; // already being settled
    }
    settle_death(&svc, dead, &cause, &stop).await;
    svc.settling.0.lock().expect("settling").remove(&dead);
}

async fn settle_death(svc: &Arc<Service>, dead: NodeId, cause: &Cause, stop: &CancellationToken) {
    let cfg = &svc.ctx.config;
    let timeout = cfg.heartbeat.timeout;
    let mut rng = StdRng::seed_from_u64(cfg.market.seed ^ u64::from(dead.0) << 32);
    let mut backoff = Backoff::new(cfg.heartbeat.interval, Duration::from_secs(2));
    let mut lease_held = 0;
    let found_us = crate::history::wall_us();
    tracing::warn!(%dead, %cause, "trader found dead; proposing the set without it");
    loop {
        let view = svc.ctx.traders.view();
        if !view.contains(dead) || !view.contains(svc.ctx.me) {
            return; // settled by someone else, or this trader was deposed
        }
        let (traders, promoted) = successor(
            &view,
            dead,
            cfg.market.replace_dead_traders,
            cfg.market.peers,
            &svc.ever_traders(),
        );
        let propose = Body::Propose {
            id: svc.control_id(),
            base: view.epoch,
            traders,
            cause: format!("{dead} {cause}"),
        };
        let wait = match svc.warehouse.call(propose, timeout).await {
            Ok(Body::Committed { view, .. }) => {
                svc.adopt(&view, NodeId::WAREHOUSE);
                svc.ctx.record(Happening::Detected {
                    dead,
                    cause: cause.to_string(),
                    traders: view.traders.clone(),
                    promoted,
                    found_us,
                });
                tracing::warn!(%dead, %view, "committed; telling every peer (message 8)");
                tell_every_peer(svc, dead, &view, promoted, stop);
                return;
            }
            Ok(Body::Refused {
                reason: Refusal::StaleEpoch { current, .. },
                ..
            }) => {
                svc.adopt(&current, NodeId::WAREHOUSE);
                continue;
            }
            Ok(Body::Refused {
                reason: Refusal::LeaseHeld { ms, .. },
                ..
            }) => {
                lease_held += 1;
                if lease_held > LEASE_HELD_TRIES {
                    tracing::warn!(
                        %dead,
                        "still renews its lease at the warehouse: it is alive, only cut off from this trader; not removed"
                    );
                    return;
                }
                Duration::from_millis(ms)
            }
            Ok(other) => {
                tracing::warn!(%dead, "the warehouse answered the proposal with {other:?}");
                backoff.fail(&mut rng)
            }
            Err(e) => {
                let wait = backoff.fail(&mut rng);
                tracing::warn!(%dead, "cannot reach the warehouse to remove it ({e}); again in {} ms", wait.as_millis());
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Message 8 to every other peer. A promoted peer that cannot be reached is
/// dead too, and is removed in turn.
fn tell_every_peer(
    svc: &Arc<Service>,
    dead: NodeId,
    view: &crate::wire::View,
    promoted: Option<NodeId>,
    stop: &CancellationToken,
) {
    let timeout = svc.ctx.config.heartbeat.timeout;
    for &peer in svc.control.keys() {
        let (svc, stop) = (svc.clone(), stop.clone());
        let body = Body::TraderDied {
            dead,
            view: view.clone(),
        };
        tokio::spawn(async move {
            let Some(link) = svc.control.get(&peer) else {
                return;
            };
            match link.send(body, timeout).await {
                Ok(()) => {}
                Err(e) if Some(peer) == promoted => {
                    succession(svc, peer, Cause::Refused(e.to_string()), stop).await
                }
                Err(e) => tracing::debug!(%peer, "message 8 not delivered: {e}"),
            }
        });
    }
}
