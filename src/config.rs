//! The market config: TOML, with every default embedded (`bazaar config`
//! prints them, commented).
//!
//! A user's file is laid over the defaults key by key, so it names only what it
//! changes; then [`Config::validate`] checks everything that TOML types alone
//! cannot, with errors that name the field and the fix.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{MAX_ORDER_QTY, NodeId};

/// The default config, commented: what `bazaar config` prints.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Most peers a market may have; past this a launcher's process count, not
/// the protocol, is the limit.
pub const MAX_PEERS: u32 = 1000;
/// Most products a market may have.
pub const MAX_PRODUCTS: usize = 1000;
/// Most initial stock per product; keeps every sum far from `u64::MAX`.
pub const MAX_STOCK: u64 = 1_000_000_000_000;

/// A bad config, in words a person can act on.
#[derive(Debug, thiserror::Error)]
#[error("bad config: {0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub market: Market,
    pub products: Vec<Product>,
    pub roles: Roles,
    pub workload: Workload,
    pub cache: CacheConfig,
    #[serde(default)]
    pub network: Network,
    pub election: Election,
    pub heartbeat: Heartbeat,
    /// Faults the launcher injects (`[[faults]]`); none by default.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// The election of the trader set (messages 0 and 1), see [`crate::election`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Election {
    /// How long a peer waits for higher peers to answer message 0, and then
    /// for the result (message 1), before it acts on what it heard.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
}

/// The traders' failure detector (message 7), see [`crate::heartbeat`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// How often every trader heartbeats every other trader.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// A trader silent this long is declared dead (refusing a connection is
    /// dead at once).
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// How long a trader may serve after the warehouse last confirmed its
    /// epoch (it renews every `interval`). Shorter than `timeout − interval`,
    /// so a trader that stops (a pause, a partition from the warehouse) has
    /// stopped serving by the time the others can declare it dead.
    #[serde(with = "duration_str")]
    pub lease: Duration,
}

/// One fault the launcher injects: at `at` after trading starts, either
/// SIGKILL a node's process (`kill`) or stop a trader's worker while its
/// socket keeps accepting (`wedge`, the document's silent-trader bug).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(with = "duration_str")]
    pub at: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wedge: Option<Target>,
    /// SIGSTOP the node (a GC pause, a suspended VM), and SIGCONT it after
    /// `lasting`: it resumes with its old state and a clock that jumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Target>,
    /// How long a `pause` lasts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_str"
    )]
    pub lasting: Option<Duration>,
    /// With `kill`: start the node again this long after, on its data
    /// directory and its address (a crash and a restart).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_str"
    )]
    pub restart_after: Option<Duration>,
    /// A network partition: groups of node ids (0 is the warehouse) that
    /// cannot reach each other; a node in no group reaches everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Vec<Vec<u32>>>,
    /// Delay every frame node `on` sends by this long (plus `jitter`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_str"
    )]
    pub delay: Option<Duration>,
    /// With `delay`: each frame's delay is drawn uniformly from
    /// `delay ± jitter` (seeded), never reordering a connection's frames.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_str"
    )]
    pub jitter: Option<Duration>,
    /// Drop this fraction (0 to 1) of the packets node `on` sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Whose traffic `delay` or `loss` hits (as `kill`: "trader", "warehouse"
    /// or a peer id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Target>,
    /// A network fault heals this long after it began (default: it lasts
    /// until trading ends).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_str"
    )]
    pub heal: Option<Duration>,
}

/// A fault on the network rather than on a node's process, as the launcher
/// applies it (with nftables in `--netns` mode, else through the transport's
/// fault layer, [`crate::net::Faulty`]) and as the history records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "net", rename_all = "snake_case")]
pub enum NetFault {
    /// The groups cannot reach each other.
    Partition { groups: Vec<Vec<NodeId>> },
    /// Frames `on` sends wait `delay_ms ± jitter_ms`.
    Delay {
        on: NodeId,
        delay_ms: u64,
        jitter_ms: u64,
    },
    /// `per_mille` of the packets `on` sends are dropped.
    Loss { on: NodeId, per_mille: u32 },
}

impl NetFault {
    /// The nodes it touches (every node of a partition's groups).
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            NetFault::Partition { groups } => groups.iter().flatten().copied().collect(),
            NetFault::Delay { on, .. } | NetFault::Loss { on, .. } => vec![*on],
        }
    }
}

impl std::fmt::Display for NetFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetFault::Partition { groups } => {
                let gs: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let ids: Vec<String> = g.iter().map(|n| n.0.to_string()).collect();
                        format!("[{}]", ids.join(","))
                    })
                    .collect();
                write!(f, "partition {}", gs.join(" | "))
            }
            NetFault::Delay {
                on,
                delay_ms,
                jitter_ms,
            } => write!(f, "delay {delay_ms}±{jitter_ms} ms on {on}"),
            NetFault::Loss { on, per_mille } => {
                write!(f, "loss {:.1}% on {on}", *per_mille as f64 / 10.0)
            }
        }
    }
}

/// Whom a fault hits: `"trader"` (a random current trader, seeded) or a peer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A random trader among those the launcher last heard of.
    Trader,
    /// A named peer.
    Peer(NodeId),
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Trader => s.serialize_str("trader"),
            Target::Peer(n) if n.is_warehouse() => s.serialize_str("warehouse"),
            Target::Peer(n) => s.serialize_u32(n.0),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Id(i64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "trader" => Ok(Target::Trader),
            Raw::Word(w) if w == "warehouse" => Ok(Target::Peer(NodeId::WAREHOUSE)),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "\"{w}\" is not a fault target (write \"trader\", \"warehouse\" or a peer id such as 6)"
            ))),
            Raw::Id(n) => u32::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .map(|n| Target::Peer(NodeId(n)))
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{n} is not a peer id (peers are 1..=peers; write \"warehouse\" for the warehouse)"
                    ))
                }),
        }
    }
}

impl Fault {
    /// Whether this is a network fault (`partition`, `delay`, `loss`).
    pub fn is_network(&self) -> bool {
        self.partition.is_some() || self.delay.is_some() || self.loss.is_some()
    }

    /// The network fault, with `on` resolved to `victim` (a partition
    /// names its own nodes); `None` for a node fault.
    pub fn network(&self, victim: Option<NodeId>) -> Option<NetFault> {
        if let Some(groups) = &self.partition {
            let groups = groups
                .iter()
                .map(|g| g.iter().copied().map(NodeId).collect())
                .collect();
            return Some(NetFault::Partition { groups });
        }
        let on = victim?;
        if let Some(d) = self.delay {
            return Some(NetFault::Delay {
                on,
                delay_ms: d.as_millis() as u64,
                jitter_ms: self.jitter.unwrap_or_default().as_millis() as u64,
            });
        }
        self.loss.map(|p| NetFault::Loss {
            on,
            per_mille: (p * 1000.0).round() as u32,
        })
    }

    /// What the fault does and to whom.
    pub fn action(&self) -> (FaultKind, Target) {
        if self.is_network() {
            let kind = if self.partition.is_some() {
                FaultKind::Partition
            } else if self.delay.is_some() {
                FaultKind::Delay
            } else {
                FaultKind::Loss
            };
            return (kind, self.on.unwrap_or(Target::Trader));
        }
        match (self.kill, self.wedge, self.pause) {
            (Some(t), ..) => (FaultKind::Kill, t),
            (None, Some(t), _) => (FaultKind::Wedge, t),
            (None, None, Some(t)) => (FaultKind::Pause, t),
            (None, None, None) => (FaultKind::Kill, Target::Trader),
        }
    }

    /// What undoes the fault, and when after it: a pause's resume, a
    /// kill's restart.
    pub fn undo(&self) -> Option<(FaultKind, Duration)> {
        match self.action().0 {
            FaultKind::Pause => self.lasting.map(|d| (FaultKind::Resume, d)),
            FaultKind::Kill => self.restart_after.map(|d| (FaultKind::Restart, d)),
            FaultKind::Partition | FaultKind::Delay | FaultKind::Loss => {
                self.heal.map(|d| (FaultKind::Heal, d))
            }
            _ => None,
        }
    }
}

/// The kinds of fault the launcher can inject.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL the node's process.
    Kill,
    /// Stop a trader's worker; its socket keeps accepting.
    Wedge,
    /// SIGSTOP the node's process.
    Pause,
    /// SIGCONT a paused node.
    Resume,
    /// Start a killed node again on its data directory.
    Restart,
    /// Cut the network between groups of nodes.
    Partition,
    /// Delay (with jitter) a node's traffic.
    Delay,
    /// Drop some of a node's packets.
    Loss,
    /// Undo a network fault.
    Heal,
}

/// Most requests one cache flush (message 9) carries: keeps a flush far below
/// the frame limit (an entry is ~30 bytes) and one flush's transaction short.
pub const MAX_FLUSH: usize = 1024;

/// The trader's cache in `cached` mode (the document's cache and flush).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a looked-up stock stays valid before the next request looks it up again.
    #[serde(with = "duration_str")]
    pub ttl: Duration,
    /// Flush the queue when it holds this many requests (the document's 5).
    pub flush_every: usize,
    /// Flush also when the oldest queued request has waited this long.
    #[serde(with = "duration_str")]
    pub flush_interval: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Market {
    pub name: String,
    pub peers: u32,
    pub traders: u32,
    pub mode: Mode,
    #[serde(with = "duration_str")]
    pub duration: Duration,
    pub seed: u64,
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// When a trader dies, promote the highest live non-trader peer so the
    /// market keeps `traders` traders (the document does not: false).
    pub replace_dead_traders: bool,
}

/// How traders and the warehouse agree on the stock.
#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The document's cache-less trader: applied at the warehouse, then answered.
    Strong,
    /// The document's cache: answered from the trader's copy, flushed in batches.
    Cached,
    /// Ours: the warehouse escrows a share of the stock to each trader.
    Escrow,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Strong => "strong",
            Mode::Cached => "cached",
            Mode::Escrow => "escrow",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strong" => Ok(Mode::Strong),
            "cached" => Ok(Mode::Cached),
            "escrow" => Ok(Mode::Escrow),
            _ => Err(bad(format!(
                "mode \"{s}\" is not a consistency mode (choose strong, cached or escrow)"
            ))),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub name: String,
    pub stock: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    pub buyers: PeerSet,
    pub sellers: PeerSet,
}

/// Some peers, given as a count or as explicit ids.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PeerSet {
    Count(u32),
    Ids(Vec<u32>),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub seller: SellerLoad,
    pub buyer: BuyerLoad,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SellerLoad {
    pub quantity: u32,
    #[serde(with = "duration_str")]
    pub interval: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuyerLoad {
    pub max_quantity: u32,
    #[serde(with = "duration_str")]
    pub pause: Duration,
    /// What the buyer asks for after an answer (default: a fresh draw).
    #[serde(default)]
    pub goal: BuyerGoal,
}

/// What a buyer asks for next.
#[derive(Copy, Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BuyerGoal {
    /// Every request draws a new 1..=`max_quantity` of a random product.
    #[default]
    Fresh,
    /// The document's buyer: a goal of 1..=`max_quantity` items of one
    /// product, asked for again (what is still missing of it) until it is
    /// met, then a new goal. A buy answered 2 of 5 asks for 3 next; one
    /// answered 0, refused or failed asks for the same again.
    UntilMet,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub warehouse: Option<SocketAddr>,
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// The market's shared secret: with it, only nodes holding it can
    /// connect (see [`crate::auth`]). At least 16 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A file holding the shared secret (instead of `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Network {
    /// The market's key, if one is set (read from `key_file` now).
    pub fn key(&self) -> Result<Option<crate::auth::Key>, ConfigError> {
        match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => Err(bad("[network] give key = ... or key_file = ..., not both")),
            (Some(k), None) => crate::auth::Key::from_secret(k).map(Some).map_err(bad),
            (None, Some(f)) => crate::auth::Key::from_file(f).map(Some).map_err(bad),
            (None, None) => Ok(None),
        }
    }
}

/// What a node does in the market.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Warehouse,
    Trader,
    Buyer,
    Seller,
    /// A peer with no workload; it stays available to the election.
    Idle,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Warehouse => "warehouse",
            Role::Trader => "trader",
            Role::Buyer => "buyer",
            Role::Seller => "seller",
            Role::Idle => "idle peer",
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str(DEFAULT_TOML).expect("the embedded default config parses")
    }
}

impl Config {
    /// Reads a config file, lays it over the defaults and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| bad(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses TOML text laid over the defaults, and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = toml::from_str(DEFAULT_TOML).expect("defaults parse");
        let user: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        overlay(&mut merged, user);
        let cfg: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML, as written into a run directory.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config serializes")
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.market;
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "[market] name = {:?}: use letters, digits, '-' and '_' (it names the run directory)",
                m.name
            )));
        }
        if m.peers < 2 || m.peers > MAX_PEERS {
            return Err(bad(format!(
                "[market] peers = {} (need 2..={MAX_PEERS}: at least one trader and one buyer or seller)",
                m.peers
            )));
        }
        if m.traders == 0 || m.traders >= m.peers {
            return Err(bad(format!(
                "[market] traders = {} but {} peers (need 1 <= traders < peers)",
                m.traders, m.peers
            )));
        }
        if m.mode == Mode::Escrow {
            return Err(bad(format!(
                "[market] mode = \"{}\" is not built yet; choose \"strong\" or \"cached\"",
                m.mode
            )));
        }
        if m.duration.is_zero() || m.duration > Duration::from_secs(24 * 3600) {
            return Err(bad(format!(
                "[market] duration = {:?} (need more than 0 and at most 24h)",
                m.duration
            )));
        }
        if m.request_timeout < Duration::from_millis(10) {
            return Err(bad(format!(
                "[market] request_timeout = {:?} is too short (need at least 10ms)",
                m.request_timeout
            )));
        }
        if self.products.is_empty() || self.products.len() > MAX_PRODUCTS {
            return Err(bad(format!(
                "[[products]] has {} entries (need 1..={MAX_PRODUCTS})",
                self.products.len()
            )));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.products.iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(bad(format!("[[products]] #{i} has an empty name")));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(format!(
                    "[[products]] name \"{}\" appears twice (names must be unique)",
                    p.name
                )));
            }
            if p.stock > MAX_STOCK {
                return Err(bad(format!(
                    "[[products]] \"{}\" stock = {} is over the limit of {MAX_STOCK}",
                    p.name, p.stock
                )));
            }
        }
        let w = &self.workload;
        if w.seller.quantity == 0 || w.seller.quantity > MAX_ORDER_QTY {
            return Err(bad(format!(
                "[workload.seller] quantity = {} (need 1..={MAX_ORDER_QTY})",
                w.seller.quantity
            )));
        }
        if w.seller.interval < Duration::from_millis(1) {
            return Err(bad(format!(
                "[workload.seller] interval = {:?} (need at least 1ms)",
                w.seller.interval
            )));
        }
        if w.buyer.max_quantity == 0 || w.buyer.max_quantity > MAX_ORDER_QTY {
            return Err(bad(format!(
                "[workload.buyer] max_quantity = {} (need 1..={MAX_ORDER_QTY})",
                w.buyer.max_quantity
            )));
        }
        self.validate_failover()?;
        let c = &self.cache;
        if c.ttl < Duration::from_millis(1) {
            return Err(bad(format!(
                "[cache] ttl = {:?} (need at least 1ms)",
                c.ttl
            )));
        }
        if c.flush_every == 0 || c.flush_every > MAX_FLUSH {
            return Err(bad(format!(
                "[cache] flush_every = {} (need 1..={MAX_FLUSH} requests)",
                c.flush_every
            )));
        }
        if c.flush_interval < Duration::from_millis(1) {
            return Err(bad(format!(
                "[cache] flush_interval = {:?} (need at least 1ms)",
                c.flush_interval
            )));
        }
        if !self.network.peers.is_empty() && self.network.peers.len() != m.peers as usize {
            return Err(bad(format!(
                "[network] peers lists {} addresses but [market] peers = {} (give one per peer, or none)",
                self.network.peers.len(),
                m.peers
            )));
        }
        self.roles_of_peers().map(|_| ())
    }

    fn validate_failover(&self) -> Result<(), ConfigError> {
        let e = &self.election;
        if e.timeout < Duration::from_millis(10) || e.timeout > Duration::from_secs(60) {
            return Err(bad(format!(
                "[election] timeout = {:?} (need 10ms..=60s)",
                e.timeout
            )));
        }
        let h = &self.heartbeat;
        if h.interval < Duration::from_millis(10) {
            return Err(bad(format!(
                "[heartbeat] interval = {:?} is too short (need at least 10ms)",
                h.interval
            )));
        }
        if h.timeout <= h.interval {
            return Err(bad(format!(
                "[heartbeat] timeout = {:?} must be longer than interval = {:?} (a live trader needs a chance to answer)",
                h.timeout, h.interval
            )));
        }
        if h.lease <= h.interval || h.lease + h.interval > h.timeout {
            return Err(bad(format!(
                "[heartbeat] lease = {:?} must be longer than interval = {:?} (it is renewed every interval) and at most timeout - interval = {:?} (a trader the others declare dead must have stopped serving)",
                h.lease,
                h.interval,
                h.timeout.saturating_sub(h.interval)
            )));
        }
        if let (Some(k), None) = (&self.network.key, &self.network.key_file) {
            crate::auth::Key::from_secret(k).map_err(bad)?;
        }
        if self.network.key.is_some() && self.network.key_file.is_some() {
            return Err(bad("[network] give key = ... or key_file = ..., not both"));
        }
        for (i, f) in self.faults.iter().enumerate() {
            if f.is_network() || f.on.is_some() || f.heal.is_some() || f.jitter.is_some() {
                self.validate_network_fault(i, f)?;
                continue;
            }
            let given = [f.kill, f.wedge, f.pause].iter().flatten().count();
            if given != 1 {
                return Err(bad(format!(
                    "[[faults]] #{i}: give exactly one of kill = ..., wedge = ..., pause = ..., partition = ..., delay = ... or loss = ... (e.g. {{ at = \"3s\", kill = \"trader\" }})"
                )));
            }
            match (f.action().0, f.lasting, f.restart_after) {
                (FaultKind::Pause, None, _) => {
                    return Err(bad(format!(
                        "[[faults]] #{i}: a pause needs lasting = ... (how long the node stays stopped, e.g. \"2s\")"
                    )));
                }
                (FaultKind::Pause, _, Some(_)) | (FaultKind::Wedge, _, Some(_)) => {
                    return Err(bad(format!(
                        "[[faults]] #{i}: restart_after goes with kill = ... only"
                    )));
                }
                (FaultKind::Kill | FaultKind::Wedge, Some(_), _) => {
                    return Err(bad(format!(
                        "[[faults]] #{i}: lasting goes with pause = ... only"
                    )));
                }
                _ => {}
            }
            if let Some((undo, after)) = f.undo()
                && f.at + after >= self.market.duration
            {
                return Err(bad(format!(
                    "[[faults]] #{i}: its {undo:?} at {:?} is not before the end of trading ([market] duration = {:?})",
                    f.at + after,
                    self.market.duration
                )));
            }
            if f.wedge == Some(Target::Peer(NodeId::WAREHOUSE)) {
                return Err(bad(format!(
                    "[[faults]] #{i}: the warehouse has no trader worker to wedge (kill or pause it)"
                )));
            }
            if let (_, Target::Peer(n)) = f.action()
                && n.0 > self.market.peers
            {
                return Err(bad(format!(
                    "[[faults]] #{i} names peer {}, but peers are 1..={}",
                    n.0, self.market.peers
                )));
            }
            if f.at >= self.market.duration {
                return Err(bad(format!(
                    "[[faults]] #{i}: at = {:?} is not before the end of trading ([market] duration = {:?})",
                    f.at, self.market.duration
                )));
            }
        }
        Ok(())
    }

    /// Checks a network fault (`partition`, `delay`, `loss`).
    fn validate_network_fault(&self, i: usize, f: &Fault) -> Result<(), ConfigError> {
        let given = [f.partition.is_some(), f.delay.is_some(), f.loss.is_some()]
            .iter()
            .filter(|x| **x)
            .count()
            + [f.kill, f.wedge, f.pause].iter().flatten().count();
        if given != 1 {
            return Err(bad(format!(
                "[[faults]] #{i}: give exactly one of kill, wedge, pause, partition, delay or loss (on = ..., jitter = ... and heal = ... go with a network fault)"
            )));
        }
        if f.lasting.is_some() || f.restart_after.is_some() {
            return Err(bad(format!(
                "[[faults]] #{i}: a network fault is undone by heal = ..., not lasting or restart_after"
            )));
        }
        if f.jitter.is_some() && f.delay.is_none() {
            return Err(bad(format!(
                "[[faults]] #{i}: jitter goes with delay = ... only"
            )));
        }
        if let (Some(d), Some(j)) = (f.delay, f.jitter)
            && j > d
        {
            return Err(bad(format!(
                "[[faults]] #{i}: jitter = {j:?} is more than delay = {d:?} (a frame cannot leave before it was sent)"
            )));
        }
        if f.delay.is_some_and(|d| d > Duration::from_secs(60)) {
            return Err(bad(format!("[[faults]] #{i}: delay is over 60s")));
        }
        if let Some(p) = f.loss
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(bad(format!(
                "[[faults]] #{i}: loss = {p} (need a fraction in (0, 1], e.g. 0.1 for 10%)"
            )));
        }
        let peers = self.market.peers;
        let check_node = |n: u32| -> Result<(), ConfigError> {
            if n > peers {
                return Err(bad(format!(
                    "[[faults]] #{i} names node {n}, but nodes are 0 (the warehouse) and peers 1..={peers}"
                )));
            }
            Ok(())
        };
        if let Some(groups) = &f.partition {
            if f.on.is_some() {
                return Err(bad(format!(
                    "[[faults]] #{i}: a partition names its nodes in its groups, not with on = ..."
                )));
            }
            if groups.len() < 2 || groups.iter().any(|g| g.is_empty()) {
                return Err(bad(format!(
                    "[[faults]] #{i}: partition = {groups:?} needs two or more non-empty groups, e.g. [[5], [6, 0]]"
                )));
            }
            let mut seen = BTreeSet::new();
            for &n in groups.iter().flatten() {
                check_node(n)?;
                if !seen.insert(n) {
                    return Err(bad(format!(
                        "[[faults]] #{i}: node {n} is in two groups of the partition"
                    )));
                }
            }
        } else {
            match f.on {
                None => {
                    return Err(bad(format!(
                        "[[faults]] #{i}: say whose traffic with on = ... (\"trader\", \"warehouse\" or a peer id)"
                    )));
                }
                Some(Target::Peer(n)) => check_node(n.0)?,
                Some(Target::Trader) => {}
            }
        }
        if f.at >= self.market.duration {
            return Err(bad(format!(
                "[[faults]] #{i}: at = {:?} is not before the end of trading ([market] duration = {:?})",
                f.at, self.market.duration
            )));
        }
        if let Some(h) = f.heal
            && f.at + h >= self.market.duration
        {
            return Err(bad(format!(
                "[[faults]] #{i}: its heal at {:?} is not before the end of trading ([market] duration = {:?})",
                f.at + h,
                self.market.duration
            )));
        }
        Ok(())
    }

    /// Whether any fault is a network fault (the nodes then run the
    /// transport's fault layer).
    pub fn has_network_faults(&self) -> bool {
        self.faults.iter().any(Fault::is_network)
    }

    /// The traders before any election: the `traders` highest peer ids.
    pub fn initial_traders(&self) -> Vec<NodeId> {
        let m = &self.market;
        (m.peers - m.traders + 1..=m.peers).map(NodeId).collect()
    }

    /// Every node's role when the election elects [`Config::initial_traders`]
    /// (all peers alive), warehouse first, then peers `1..=N` in order. This is
    /// also where the `[roles]` section is validated.
    pub fn roles_of_peers(&self) -> Result<Vec<(NodeId, Role)>, ConfigError> {
        self.roles_given(&self.initial_traders(), true)
    }

    /// Every node's role once `traders` are the traders (the election's
    /// result). Buyers and sellers are chosen among the other peers: a count
    /// takes the lowest free ids, buyers first; a list names them. A listed
    /// buyer or seller that was elected is a trader: traders serve for life and
    /// never trade themselves, so its workload is dropped (with `strict`, the
    /// config-time check, naming an expected trader is an error instead).
    pub fn roles_given(
        &self,
        traders: &[NodeId],
        strict: bool,
    ) -> Result<Vec<(NodeId, Role)>, ConfigError> {
        let peers = self.market.peers;
        let traders: BTreeSet<u32> = traders.iter().map(|n| n.0).collect();
        let mut free = (1..=peers).filter(|p| !traders.contains(p));
        let mut pick = |set: &PeerSet, what: &str| -> Result<Vec<u32>, ConfigError> {
            match set {
                PeerSet::Count(n) => {
                    let ids: Vec<u32> = free.by_ref().take(*n as usize).collect();
                    if strict && ids.len() < *n as usize {
                        return Err(bad(format!(
                            "[roles] {what} = {n} but only {} peers are left after {} traders and the other role (raise [market] peers or lower the count)",
                            ids.len(),
                            traders.len()
                        )));
                    }
                    Ok(ids)
                }
                PeerSet::Ids(ids) => {
                    for &id in ids {
                        if id == 0 || id > peers {
                            return Err(bad(format!(
                                "[roles] {what} names peer {id}, but peers are 1..={peers}"
                            )));
                        }
                        if strict && traders.contains(&id) {
                            return Err(bad(format!(
                                "[roles] {what} names peer {id}, which is a trader (traders are the {} highest ids: {:?})",
                                traders.len(),
                                traders
                            )));
                        }
                    }
                    Ok(ids.clone())
                }
            }
        };
        let buyers = pick(&self.roles.buyers, "buyers")?;
        let sellers = pick(&self.roles.sellers, "sellers")?;
        if let Some(both) = buyers.iter().find(|b| sellers.contains(b)) {
            return Err(bad(format!(
                "[roles] peer {both} is listed as both buyer and seller (a peer has one role)"
            )));
        }
        let mut roles = vec![(NodeId::WAREHOUSE, Role::Warehouse)];
        for p in 1..=peers {
            let role = if traders.contains(&p) {
                Role::Trader
            } else if buyers.contains(&p) {
                Role::Buyer
            } else if sellers.contains(&p) {
                Role::Seller
            } else {
                Role::Idle
            };
            roles.push((NodeId(p), role));
        }
        Ok(roles)
    }

    /// One node's role.
    pub fn role_of(&self, node: NodeId) -> Result<Role, ConfigError> {
        self.roles_of_peers()?
            .into_iter()
            .find(|(n, _)| *n == node)
            .map(|(_, r)| r)
            .ok_or_else(|| {
                bad(format!(
                    "node {} is not in this market (0 is the warehouse, peers are 1..={})",
                    node.0, self.market.peers
                ))
            })
    }

    /// Initial stock per product, indexed by product id.
    pub fn initial_stock(&self) -> Vec<u64> {
        self.products.iter().map(|p| p.stock).collect()
    }
}

/// Lays `top` over `base`: tables merge key by key, anything else is replaced.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Durations as human-readable strings ("250ms", "10s").
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write it like \"250ms\" or \"10s\""
            ))
        })
    }
}

/// An optional duration, written like [`duration_str`]'s.
mod opt_duration_str {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_str::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration_str::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                cfg.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "{seen} examples in {}", dir.display());
    }

    #[test]
    fn the_defaults_are_valid_and_give_the_documents_market() {
        let cfg = Config::from_toml("").unwrap();
        assert_eq!(cfg, Config::default());
        let roles = cfg.roles_of_peers().unwrap();
        let of = |r| roles.iter().filter(|(_, x)| *x == r).count();
        assert_eq!(
            (
                of(Role::Warehouse),
                of(Role::Trader),
                of(Role::Buyer),
                of(Role::Seller)
            ),
            (1, 2, 2, 2)
        );
        assert_eq!(cfg.initial_traders(), vec![NodeId(5), NodeId(6)]);
    }

    #[test]
    fn a_user_file_changes_only_what_it_names() {
        let cfg = Config::from_toml("[market]\nduration = \"3s\"\n").unwrap();
        assert_eq!(cfg.market.duration, Duration::from_secs(3));
        assert_eq!(cfg.market.peers, 6);
    }

    #[test]
    fn written_config_reads_back_the_same() {
        let cfg = Config::default();
        assert_eq!(Config::from_toml(&cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        assert!(err("[market]\ntraders = 6").contains("traders = 6 but 6 peers"));
        assert!(err("[market]\nmode = \"escrow\"").contains("not built yet"));
        assert!(Config::from_toml("[market]\nmode = \"cached\"").is_ok());
        assert!(err("[cache]\nflush_every = 0").contains("[cache] flush_every = 0"));
        assert!(err("[cache]\nflush_every = 5000").contains("flush_every = 5000"));
        assert!(err("[cache]\nttl = \"0s\"").contains("[cache] ttl"));
        assert!(err("[cache]\nflush_interval = \"0ms\"").contains("[cache] flush_interval"));
        assert!(err("[cache]\nflush_every = -1").contains("flush_every"));
        assert!(err("[cache]\nsize = 3").contains("size"));
        assert!(err("[market]\nmode = \"fast\"").contains("unknown variant"));
        assert!(err("[market]\nduration = \"soon\"").contains("not a duration"));
        assert!(err("[market]\npeers = -3").contains("peers"));
        assert!(err("[market]\nbogus = 1").contains("bogus"));
        assert!(err("[workload.seller]\nquantity = 0").contains("quantity = 0"));
        assert!(err("[workload.buyer]\nmax_quantity = 99999999").contains("max_quantity"));
        assert!(err("[workload.buyer]\ngoal = \"greedy\"").contains("unknown variant"));
        let doc = Config::from_toml("[workload.buyer]\ngoal = \"until_met\"").unwrap();
        assert_eq!(doc.workload.buyer.goal, BuyerGoal::UntilMet);
        assert!(err("[roles]\nbuyers = [6]").contains("which is a trader"));
        assert!(err("[roles]\nbuyers = [1]\nsellers = [1]").contains("both buyer and seller"));
        assert!(err("[roles]\nbuyers = 5").contains("only 4 peers are left"));
        assert!(
            err("[[products]]\nname = \"a\"\nstock = 1\n[[products]]\nname = \"a\"\nstock = 1")
                .contains("appears twice")
        );
        assert!(err("products = []").contains("[[products]] has 0 entries"));
        assert!(err("[market\n").contains("bad config"));
        assert!(err("[heartbeat]\ninterval = \"1s\"\ntimeout = \"1s\"").contains("longer than"));
        assert!(err("[heartbeat]\nlease = \"500ms\"").contains("at most timeout - interval"));
        assert!(err("[[faults]]\nat = \"1s\"\npause = \"trader\"").contains("needs lasting"));
        assert!(
            err("[[faults]]\nat = \"1s\"\nwedge = \"trader\"\nrestart_after = \"1s\"")
                .contains("restart_after goes with kill")
        );
        assert!(err("[[faults]]\nat = \"1s\"\nwedge = \"warehouse\"").contains("no trader worker"));
        let restart = "[[faults]]\nat = \"1s\"\nkill = \"warehouse\"\nrestart_after = \"1s\"";
        let cfg = Config::from_toml(restart).unwrap();
        assert_eq!(
            Config::from_toml(&cfg.to_toml()).unwrap(),
            cfg,
            "reads back"
        );
        assert!(
            err("[[faults]]\nat = \"1s\"\nkill = 3\npause = 4\nlasting = \"1s\"")
                .contains("exactly one of")
        );
        assert!(err("[[faults]]\nat = \"1s\"\nkill = \"everyone\"").contains("not a fault target"));
        assert!(err("[[faults]]\nat = \"1s\"\nkill = 0").contains("not a peer id"));
        assert!(err("[[faults]]\nat = \"1s\"\nkill = 9").contains("peers are 1..=6"));
        assert!(err("[[faults]]\nat = \"1s\"").contains("exactly one of"));
        assert!(err("[[faults]]\nat = \"1m\"\nkill = 6").contains("not before the end"));
    }

    #[test]
    fn network_faults_parse_and_bad_ones_say_what_to_write() {
        let cfg = Config::from_toml(
            "faults = [{ at = \"1s\", partition = [[5], [6, 0]], heal = \"2s\" }, { at = \"2s\", delay = \"50ms\", jitter = \"10ms\", on = \"warehouse\" }, { at = \"3s\", loss = 0.1, on = \"trader\" }]",
        )
        .unwrap();
        assert!(cfg.has_network_faults());
        assert_eq!(cfg.faults[0].action().0, FaultKind::Partition);
        assert_eq!(
            cfg.faults[0].undo(),
            Some((FaultKind::Heal, Duration::from_secs(2)))
        );
        assert_eq!(
            cfg.faults[0].network(None),
            Some(NetFault::Partition {
                groups: vec![vec![NodeId(5)], vec![NodeId(6), NodeId(0)]]
            })
        );
        assert_eq!(
            cfg.faults[1].network(Some(NodeId(0))),
            Some(NetFault::Delay {
                on: NodeId(0),
                delay_ms: 50,
                jitter_ms: 10
            })
        );
        assert_eq!(cfg.faults[2].action(), (FaultKind::Loss, Target::Trader));
        assert_eq!(
            cfg.faults[2].network(Some(NodeId(6))),
            Some(NetFault::Loss {
                on: NodeId(6),
                per_mille: 100
            })
        );
        let f = |body: &str| err(&format!("[[faults]]\nat = \"1s\"\n{body}"));
        assert!(f("partition = [[5]]").contains("two or more non-empty groups"));
        assert!(f("partition = [[5], [5]]").contains("in two groups"));
        assert!(f("partition = [[5], [9]]").contains("names node 9"));
        assert!(f("partition = [[5], [6]]\non = 5").contains("not with on"));
        assert!(f("delay = \"50ms\"").contains("say whose traffic"));
        assert!(f("delay = \"5ms\"\njitter = \"6ms\"\non = 5").contains("more than delay"));
        assert!(f("loss = 1.5\non = 5").contains("need a fraction"));
        assert!(f("loss = 0.1\non = 5\nkill = 6").contains("exactly one of"));
        assert!(f("loss = 0.1\non = 5\nlasting = \"1s\"").contains("undone by heal"));
        assert!(f("loss = 0.1\non = 5\nheal = \"1m\"").contains("not before the end"));
        assert!(f("jitter = \"1ms\"\nkill = 6").contains("jitter goes with delay"));
        assert!(err("[network]\nkey = \"short\"").contains("at least 16"));
        assert!(
            err("[network]\nkey = \"0123456789abcdef\"\nkey_file = \"k\"").contains("not both")
        );
    }

    #[test]
    fn faults_parse_and_an_elected_buyer_is_a_trader() {
        let cfg = Config::from_toml(
            "faults = [{ at = \"3s\", kill = \"trader\" }, { at = \"4s\", wedge = 5 }]\n[roles]\nbuyers = [1, 4]\nsellers = [2]",
        )
        .unwrap();
        assert_eq!(cfg.faults[0].action(), (FaultKind::Kill, Target::Trader));
        assert_eq!(
            cfg.faults[1].action(),
            (FaultKind::Wedge, Target::Peer(NodeId(5)))
        );
        assert_eq!(Config::from_toml(&cfg.to_toml()).unwrap(), cfg);
        // Peers 5 and 6 dead at start: 3 and 4 are elected; buyer 4 serves as a trader.
        let roles = cfg.roles_given(&[NodeId(3), NodeId(4)], false).unwrap();
        assert_eq!(roles[4], (NodeId(4), Role::Trader));
        assert_eq!(roles[1], (NodeId(1), Role::Buyer));
    }

    #[test]
    fn explicit_role_lists_leave_other_peers_idle() {
        let cfg = Config::from_toml("[roles]\nbuyers = [1]\nsellers = [4]").unwrap();
        assert_eq!(cfg.role_of(NodeId(2)).unwrap(), Role::Idle);
        assert_eq!(cfg.role_of(NodeId(4)).unwrap(), Role::Seller);
        assert!(cfg.role_of(NodeId(7)).is_err());
    }
}
