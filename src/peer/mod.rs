//! Peers: the nodes `1..=N` that elect the traders and then trade.
//!
//! A peer's parts, each one concern: [`service`] is its message handler and
//! the state its drivers share; [`join`] enters the market (join the
//! warehouse, wait for it to open, elect); [`heartbeats`] detects dead
//! traders and settles their succession with the warehouse (messages 7, 8);
//! [`tenure`] keeps a trader's lease. The protocol decisions themselves are
//! pure state machines elsewhere ([`crate::election`], [`crate::heartbeat`],
//! [`crate::lease`], [`crate::membership::successor`]); these files are the
//! thin drivers around them. [`client`] makes one request at a time at a
//! random live trader, failing over to another on a trader's death, and
//! records it; [`buyer`] and [`seller`] are the document's two workloads.
//!
//! [`run`] is the role switch. A peer takes its role from the first view:
//! a trader if the current view names it; otherwise the buyer or seller the
//! config makes it among the non-traders of the first view (see
//! [`crate::config::Config::roles_given`]). A peer that was a trader of an
//! earlier epoch and is not any more (it restarted after being deposed)
//! stays idle: traders serve for life and never trade themselves. A peer
//! promoted while buying or selling finishes the request it has in flight,
//! stops its workload and serves as a trader from then on.

pub mod buyer;
pub mod client;
pub mod heartbeats;
pub mod join;
pub mod seller;
pub mod sequence;
pub mod service;
pub mod tenure;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::launch::Line;
use crate::membership::{Happening, Membership};
use crate::net::Listener;
use crate::node::{NodeContext, ServeOptions, serve};
use crate::wire::View;
use service::{PeerHandler, Service};

/// Who the traders are, as this node last heard.
pub type Traders = Arc<Membership>;

/// Runs this peer's workload (`role`) until `stop`, then writes out its history.
pub async fn trade(ctx: &NodeContext, role: Role, stop: CancellationToken) -> anyhow::Result<()> {
    let mut client = client::Client::new(ctx).await?;
    let traded = match role {
        Role::Buyer => buyer::run(&mut client, &ctx.config.workload.buyer, stop).await,
        Role::Seller => seller::run(&mut client, &ctx.config.workload.seller, stop).await,
        _ => Ok(()),
    };
    // The history is written out even if the workload stopped on an error.
    client.finish()?;
    traded
}

/// This peer's role, once it knows the first view and the current one.
pub fn role_of(ctx: &NodeContext, first: &View, current: &View) -> anyhow::Result<Role> {
    if current.contains(ctx.me) {
        return Ok(Role::Trader);
    }
    if first.contains(ctx.me) {
        return Ok(Role::Idle); // a trader of an earlier epoch: never trades
    }
    let roles = ctx.config.roles_given(&first.traders, false)?;
    Ok(roles
        .iter()
        .find(|(n, _)| *n == ctx.me)
        .map(|(_, r)| *r)
        .unwrap_or(Role::Idle))
}

/// Runs a peer until `stop_all`: serve, join, elect, take the role, trade
/// (until `stop_work`, or until promoted), call `on_done`, and close the
/// history once everything has stopped.
pub async fn run(
    ctx: NodeContext,
    listener: Box<dyn Listener>,
    opts: ServeOptions,
    stop_work: CancellationToken,
    stop_all: CancellationToken,
    on_done: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let svc = Service::new(&ctx, stop_all.clone())?;
    let server = tokio::spawn(serve(
        listener,
        ctx.me,
        ctx.clock.clone(),
        ctx.trace(),
        Arc::new(PeerHandler(svc.clone())),
        opts,
        stop_all.clone(),
    ));
    {
        let svc = svc.clone();
        let wedge = ctx.wedge.clone();
        let stop = stop_all.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = wedge.cancelled() => svc.desk.wedge(),
                _ = stop.cancelled() => {}
            }
        });
    }
    if ctx.launched {
        tell_launcher_every_view(&ctx, stop_all.clone());
    }

    let first = match join::enter(&svc, &stop_all).await {
        Ok(first) => first,
        Err(_) if stop_all.is_cancelled() => {
            tracing::warn!("stopped before the market opened");
            on_done();
            server.await?;
            // A cached trader restarted on its journal hands it over even so.
            svc.trader.stop().await;
            ctx.history.close(ctx.me)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let current = ctx.traders.view();
    let role = role_of(&ctx, &first, &current)?;
    tracing::info!(me = %ctx.me, %role, view = %current, "in the market");
    ctx.record(Happening::Elected {
        traders: current.traders.clone(),
        role,
    });
    // Deaths are acted on while the market trades: once it is being stopped
    // in order, the traders going one by one are not failures.
    tokio::spawn(heartbeats::run(svc.clone(), stop_work.clone()));
    tokio::spawn(tenure::keep(svc.clone(), stop_all.clone()));
    tokio::spawn(join::keep_fresh(svc.clone(), stop_all.clone()));
    if let (Some(d), Role::Buyer | Role::Seller) = (ctx.trade_for, role) {
        // Trade for `d` from now, however long the market took to open.
        let work = stop_work.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            work.cancel();
        });
    }

    if matches!(role, Role::Buyer | Role::Seller) {
        // Promotion ends the workload; the request in flight completes first.
        let work = stop_work.child_token();
        let mut rx = ctx.traders.subscribe();
        let (promo_ctx, promo_work) = (ctx.clone(), work.clone());
        tokio::spawn(async move {
            loop {
                if promo_ctx.traders.is_trader() {
                    promo_ctx.record(Happening::Promoted {
                        traders: promo_ctx.traders.traders(),
                        was: role,
                    });
                    promo_work.cancel();
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = promo_work.cancelled() => return,
                }
            }
        });
        trade(&ctx, role, work).await?;
    }
    stop_work.cancelled().await;
    ctx.history.flush()?;
    on_done();
    server.await?;
    svc.trader.stop().await;
    // End on the current view (the checker's final agreement).
    join::refresh(&svc, ctx.config.heartbeat.timeout).await;
    ctx.history.close(ctx.me)?;
    Ok(())
}

/// Tells the launcher every view this peer adopts, starting with the one it
/// holds now (the server is already running, so a view may have arrived
/// before this subscription).
fn tell_launcher_every_view(ctx: &NodeContext, stop: CancellationToken) {
    let mut rx = ctx.traders.subscribe();
    rx.mark_changed();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
            let view = rx.borrow_and_update().clone();
            if !view.traders.is_empty() {
                Line::Traders(view).tell();
            }
        }
    });
}
