//! A trader's tenure: its lease from the warehouse ([`crate::lease`]), kept
//! alive while it serves, and confirmed before it answers on a lease that
//! is over.
//!
//! [`keep`] renews the lease every heartbeat interval while the peer is a
//! trader, and only while its desk's worker answers (a trader whose worker
//! is dead behind a live socket lets its lease lapse, and stops sending
//! heartbeats, so the others declare it dead and the warehouse lets them
//! remove it). While the warehouse cannot be reached, the other traders'
//! answers to this one's heartbeats extend the lease instead (see
//! [`crate::heartbeat::Detector::lease_anchor`]): a cached trader serves
//! through a warehouse outage as long as it hears every fellow trader. [`confirm`] is called before every buy or
//! sell: on a running lease it costs a mutex; on a lapsed one it asks the
//! warehouse, and a deposed trader learns so from the answer.
//!
//! The renewals also tell when the warehouse stops answering and when it
//! answers again: each trader records both (`warehouse` lines in the
//! history), which the report shows as the warehouse's outages.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::service::Service;
use crate::lease::Lease;
use crate::membership::Happening;
use crate::node::now;
use crate::wire::{Body, NodeId, Refusal};

/// A trader's lease and the state of its renewals.
pub struct Tenure {
    /// Whether the trader's worker answered its last self-check.
    serving: AtomicBool,
    lease: Mutex<Lease>,
    /// One renewal at a time: requests that find the lease over wait for it.
    renewing: tokio::sync::Mutex<()>,
    /// Whether the last renewal failed to reach the warehouse.
    warehouse_down: Mutex<bool>,
}

impl Default for Tenure {
    fn default() -> Self {
        Self {
            serving: AtomicBool::new(true),
            lease: Mutex::default(),
            renewing: tokio::sync::Mutex::default(),
            warehouse_down: Mutex::default(),
        }
    }
}

impl Tenure {
    /// Whether the trader's own worker answers: if not, it sends no heartbeats.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// A lease of `length` counted from `anchor`, on the fellow traders' word.
    pub fn grant(&self, anchor: Instant, length: Duration) {
        self.lease.lock().expect("lease").granted(anchor, length);
    }

    /// Ends the lease at once (the peer was deposed).
    pub fn revoke(&self) {
        self.lease.lock().expect("lease").revoke();
    }

    fn valid(&self) -> bool {
        self.lease.lock().expect("lease").valid(now())
    }
}

/// Makes sure this trader holds a running lease before it answers: renews
/// it first if it is over. Refuses (the client tries another trader) if the
/// warehouse cannot confirm it.
pub async fn confirm(svc: &Service) -> Result<(), Refusal> {
    if svc.tenure.valid() {
        return Ok(());
    }
    let _one = svc.tenure.renewing.lock().await;
    if svc.tenure.valid() {
        return Ok(());
    }
    tracing::info!("lease over: confirming the epoch with the warehouse before answering");
    renew(svc)
        .await
        .map_err(|reason| Refusal::NoLease { reason })
}

/// Asks the warehouse to extend the lease; adopts the view it answers with.
async fn renew(svc: &Service) -> Result<(), String> {
    let epoch = svc.ctx.traders.epoch();
    let id = svc.control_id();
    let timeout = svc.ctx.config.heartbeat.interval;
    let sent = now();
    let answer = svc.warehouse.call(Body::Renew { id, epoch }, timeout).await;
    let reached = answer.is_ok();
    note_warehouse(svc, reached, answer.as_ref().err().map(|e| e.to_string()));
    match answer {
        Ok(Body::Leased { view, ms, .. }) => {
            svc.adopt(&view, NodeId::WAREHOUSE);
            svc.tenure
                .lease
                .lock()
                .expect("lease")
                .granted(sent, Duration::from_millis(ms));
            Ok(())
        }
        Ok(Body::Refused {
            reason: Refusal::StaleEpoch { current, .. },
            ..
        }) => {
            svc.tenure.revoke();
            svc.adopt(&current, NodeId::WAREHOUSE);
            Err(format!("the warehouse holds {current}"))
        }
        Ok(other) => Err(format!("the warehouse answered {}", other.name())),
        Err(e) => Err(e.to_string()),
    }
}

/// Records the warehouse going unreachable or coming back, once per change.
fn note_warehouse(svc: &Service, reached: bool, reason: Option<String>) {
    let mut down = svc.tenure.warehouse_down.lock().expect("warehouse state");
    if *down != reached {
        return;
    }
    *down = !reached;
    let reason = reason.unwrap_or_else(|| "answered a lease renewal".into());
    if reached {
        tracing::warn!("the warehouse answers again");
    } else {
        tracing::warn!("the warehouse is unreachable: {reason}");
    }
    svc.ctx.record(Happening::Warehouse {
        up: reached,
        reason,
    });
}

/// Renews the lease every heartbeat interval while this peer is a trader
/// and its desk's worker answers, until `stop`.
pub async fn keep(svc: std::sync::Arc<Service>, stop: CancellationToken) {
    let interval = svc.ctx.config.heartbeat.interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        if !svc.ctx.traders.is_trader() {
            continue;
        }
        let serving = svc.desk.answers(interval).await;
        svc.tenure.serving.store(serving, Ordering::Relaxed);
        if !serving {
            tracing::warn!("the trader's worker does not answer: letting the lease lapse");
            continue;
        }
        let _one = svc.tenure.renewing.lock().await;
        if let Err(e) = renew(&svc).await {
            tracing::warn!("lease not renewed: {e}");
        }
    }
}
