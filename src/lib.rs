//! # bazaar — a distributed trading market
//!
//! A warehouse holds the stock of every product. Peers `1..=N` each run as a
//! trader, a buyer or a seller: traders take buy requests (message 6) and sell
//! requests (message 5) from the other peers and settle them with the warehouse
//! (messages 2, 3, 4, 9); buyers ask a random trader for a random quantity;
//! sellers deposit items at a fixed rate. Every message carries a Lamport clock.
//!
//! In `strong` mode (the document's cache-less trader) a trader answers only
//! after the warehouse applied the request, so the market never oversells; the
//! warehouse applies requests in group-committed, durable transactions and
//! remembers each client's last request id, so a retry is never applied twice.
//!
//! Peers join the warehouse in any order; once every peer has joined, they
//! elect the traders (the `traders` highest live ids), and the warehouse
//! commits the result as epoch 1. Every trader set is an epoch the warehouse
//! commits by compare-and-set, so every node that knows epoch `e` knows the
//! same set; the warehouse fences requests from traders outside the current
//! set, and a trader serves only while its lease runs. Traders heartbeat each
//! other; a dead one is removed within `heartbeat.timeout +
//! heartbeat.interval` and every peer is told (message 8). A request in
//! flight at a dying trader is retried at a live one with the same id.
//!
//! In `cached` mode (the document's cache) a trader answers from its own copy
//! of the stock, journals the request durably, queues it, and flushes the queue
//! to the warehouse (message 9) every `cache.flush_every` requests or
//! `cache.flush_interval`. The warehouse applies flushed requests in Lamport
//! order; a granted buy it cannot fill is an oversell, a buy the trader refused
//! while the stock was there an undersell, both counted per trader and per
//! request. A trader restarted on its data directory flushes its journal.
//!
//! ## Module map
//! - [`config`]: the market config (TOML, defaults embedded, validated).
//! - [`wire`]: the envelope, the message enum, frames and their limits.
//! - [`clock`]: the Lamport clock.
//! - [`net`]: the transport seam (TCP today, a simulated network in tests),
//!   and the fault layer over it (partitions, delay with jitter, loss).
//! - [`auth`]: the closed door: the keyed hello and sealed records
//!   (`[network] key`).
//! - [`netns`]: `bazaar run --netns`: a namespace per node, nftables faults.
//! - [`connection`]: both ends of a connection: the hello, the writer.
//! - [`link`]: a multiplexed client connection to one node.
//! - [`node`]: the node runtime (the base every role stands on): listener,
//!   connections, the node's context.
//! - [`role`]: the top floor: runs a node as the warehouse or a peer.
//! - [`launch`]: the launcher's line protocol, one typed enum.
//! - [`election`]: the bully election of the trader set (messages 0, 1), pure.
//! - [`heartbeat`]: the traders' failure detector (message 7), pure.
//! - [`lease`]: a trader's lease, pure.
//! - [`backoff`]: exponential backoff with jitter, pure.
//! - [`membership`]: a node's view (epoch and traders; messages 1, 7, 8),
//!   the successor set after a death, and the failover records.
//! - [`failover`]: the report's failover section (faults, detections, retries).
//! - [`warehouse`]: the warehouse service, its books, its durable store and
//!   the registry of trader sets (epochs, leases, fencing).
//! - [`trader`]: the trader service and its consistency modes (strong; cached,
//!   with its journal and driver).
//! - [`peer`]: a peer's handler and drivers (join and elect, heartbeats and
//!   succession, lease), the role switch, buyers, sellers and their client.
//! - [`market`]: the launcher behind `bazaar run`.
//! - [`inprocess`]: the in-process launcher behind `bazaar run --in-process`.
//! - [`bench`]: `bazaar bench`, the market against a one-hop echo.
//! - [`syncer`]: a thread that makes a file's writes durable behind its
//!   writer (a cached trader's journal's group commits).
//! - [`rundir`]: a run directory's layout and what is read back from it.
//! - [`history`]: each node's log of events (request invokes and completions,
//!   flushes, elections, heartbeat verdicts, faults, every message sent and
//!   received), read back after the run.
//! - [`trace`]: the message trace: each send and receive as a history line,
//!   paired back into messages.
//! - [`diagram`]: a Lamport space-time diagram of a window of a run (SVG).
//! - [`check`]: the invariant checker over the history and the final store.
//! - [`report`]: `report.json`, the terminal summary, the plots and the
//!   progress line.
//! - [`sim`]: the deterministic simulator (`bazaar sim`): seeded markets and
//!   nemeses on turmoil's network and clock, every seed judged.
//! - [`experiment`]: the document's experiments (`bazaar experiment`), each
//!   a set of market runs summed up in a table and plots.

pub mod auth;
pub mod backoff;
pub mod bench;
pub mod check;
pub mod clock;
pub mod config;
pub mod connection;
pub mod diagram;
pub mod election;
pub mod experiment;
pub mod failover;
pub mod heartbeat;
pub mod history;
pub mod inprocess;
pub mod launch;
pub mod lease;
pub mod link;
pub mod market;
pub mod membership;
pub mod net;
pub mod netns;
pub mod node;
pub mod peer;
pub mod report;
pub mod role;
pub mod rundir;
pub mod sim;
pub mod syncer;
pub mod trace;
pub mod trader;
pub mod warehouse;
pub mod wire;
