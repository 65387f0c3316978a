//! The top floor: runs a node in its role. The warehouse serves its books
//! ([`crate::warehouse`]); a peer joins, elects and trades
//! ([`crate::peer::run`]). Everything below ([`crate::node`]'s runtime, the
//! roles' modules) is reached from here, and nothing below imports this.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::net::Listener;
use crate::node::{NodeContext, ServeOptions, serve};

/// Runs a node in its role until `stop_all`. A peer elects the traders, takes
/// its role, trades (as a buyer or seller) until `stop_work`, writes out its
/// history and calls `on_done` (see [`crate::peer::run`]); the
/// warehouse calls it at once. Returns once the node has stopped and its
/// storage is closed.
pub async fn run(
    ctx: NodeContext,
    listener: Box<dyn Listener>,
    opts: ServeOptions,
    stop_work: CancellationToken,
    stop_all: CancellationToken,
    on_done: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    if !ctx.me.is_warehouse() {
        return crate::peer::run(ctx, listener, opts, stop_work, stop_all, on_done).await;
    }
    let (warehouse, ledger) = crate::warehouse::Warehouse::start(&ctx)?;
    let server = tokio::spawn(serve(
        listener,
        ctx.me,
        ctx.clock.clone(),
        ctx.trace(),
        Arc::new(warehouse),
        opts,
        stop_all.clone(),
    ));
    on_done();
    server.await?;
    ledger.join().await;
    ctx.history.close(ctx.me)?;
    Ok(())
}
