//! The election of the trader set (the document's messages 0 and 1): a bully
//! election generalised from one coordinator to `seats` traders, whose result
//! takes effect once the warehouse commits it as epoch 1.
//!
//! A pure state machine: no sockets, no clock of its own. The node's driver
//! ([`crate::peer::join`]) feeds it messages, undeliverable sends and ticks
//! with the time, and sends what it returns (to peers, and to the warehouse).
//!
//! ## The protocol
//! - A peer **starts** an election, once the warehouse says the market is
//!   open (every peer has joined), by sending message 0
//!   ([`Body::Election`]) to higher peers. A live higher peer answers
//!   [`Body::Alive`] ("I am alive and higher") and, if it is not electing
//!   already, starts its own election (the bully cascade, so a late starter
//!   still reaches the top).
//! - A peer counts the higher peers that answered. With `seats` or more it
//!   cannot be a trader: it waits for the result. With fewer it is a trader,
//!   ranked `answers + 1`; the one ranked exactly `seats` knows the whole
//!   trader set (itself and the `seats − 1` live peers above it) and
//!   **proposes** it to the warehouse ([`Body::Propose`], base epoch 0). With
//!   `seats = 1` this is the textbook bully.
//! - Only `seats` answers matter, so a peer does not ask every higher peer
//!   at once (the textbook's fan-out, n²/2 messages and connections for n
//!   peers: half a million at 1,000 peers). It asks the `seats` highest
//!   first, and asks further down only for the answers still missing: one
//!   more peer for each refused connection at once, one more for each peer
//!   silent when `timeout` ends, with a fresh `timeout`. With every peer
//!   alive that is `seats` messages per peer. It decides once every higher
//!   peer it needed has answered, refused the connection or stayed silent.
//! - Nor does every peer start at once: with every peer alive only the
//!   `seats` highest need to, and a thousand starters would send a
//!   thousand messages 0 to each of the top `seats` just as they become the
//!   traders. The `seats` highest peers start at once, each next `seats`
//!   down a quarter `timeout` later, the rest after one `timeout`
//!   ([`Election::start_delay`]); by then the top's result is usually known
//!   and a peer that knows it starts nothing. A message 0 from below starts
//!   a waiting peer at once (the cascade), so a dead top costs at most one
//!   `timeout` more.
//! - The warehouse commits the first proposal it gets and refuses every
//!   later one with the view it committed ([`Refusal::StaleEpoch`]). The
//!   proposer announces what was committed to every peer (message 1,
//!   [`Body::Elected`], carrying the view); a refused proposer adopts the
//!   committed view instead. So however the bully's rounds interleave (late
//!   answers, peers starting at different moments), every peer ends with
//!   the one view the warehouse holds: there is no conflict to settle.
//! - A trader ranked above `seats` waits for the announcement from below; if
//!   none comes (fewer than `seats` peers are alive) it proposes the traders
//!   it knows. A non-trader whose awaited announcement never comes (the peer
//!   that was to announce died) starts again. A proposal the warehouse did
//!   not answer is made again after `timeout`.
//!
//! Once a result is known the state machine keeps answering: a late message 0
//! gets an [`Body::Alive`] and the result. Later changes to the trader set
//! (a death, message 8) belong to [`crate::heartbeat`] and the warehouse,
//! not here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::wire::{Body, Epoch, NodeId, Refusal, RequestId, View};

/// Election request ids live above this, so they never collide with a node's
/// heartbeat ids on a shared control connection.
pub const ELECTION_ID_BASE: u64 = 1 << 62;

/// A message to send ([`NodeId::WAREHOUSE`] for the proposal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeId,
    pub body: Body,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Message 0 sent to higher peers; counting answers until `until`.
    Electing {
        until: Instant,
    },
    /// Waiting for message 1 (or the warehouse's answer to a proposal)
    /// until `until`; `trader` if this peer knows it is one (ranked above
    /// `seats`, or the proposer).
    Waiting {
        until: Instant,
        trader: bool,
    },
    /// A result is known.
    Done,
}

/// One peer's side of the election.
#[derive(Clone, Debug)]
pub struct Election {
    me: NodeId,
    /// Every peer of the market, ascending.
    peers: Vec<NodeId>,
    seats: usize,
    timeout: Duration,
    phase: Phase,
    round: u64,
    /// Higher peers sent this round's message 0.
    asked: BTreeSet<NodeId>,
    /// Higher peers that answered this round.
    alive_above: BTreeSet<NodeId>,
    /// Higher peers that refused this round's message 0.
    unreachable: BTreeSet<NodeId>,
    /// Higher peers still silent when a deadline of this round ended.
    silent: BTreeSet<NodeId>,
    /// The committed view, once known.
    result: Option<View>,
    /// Every peer heard from (message 0 or 1, an answer): alive, as far as
    /// this peer knows.
    known: BTreeSet<NodeId>,
}

impl Election {
    /// `peers` are all peer ids of the market (any order); `seats` how many traders.
    pub fn new(me: NodeId, peers: &[NodeId], seats: usize, timeout: Duration) -> Self {
        let mut peers = peers.to_vec();
        peers.sort_unstable();
        peers.dedup();
        Self {
            me,
            peers,
            seats: seats.max(1),
            timeout,
            phase: Phase::Idle,
            round: 0,
            asked: BTreeSet::new(),
            alive_above: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            silent: BTreeSet::new(),
            result: None,
            known: BTreeSet::new(),
        }
    }

    /// The committed view, once known.
    pub fn result(&self) -> Option<&View> {
        self.result.as_ref()
    }

    /// How long after the market opens this peer starts its election: at
    /// once for the `seats` highest peers, a quarter `timeout` more for each
    /// next `seats` down, one `timeout` at most.
    pub fn start_delay(&self) -> Duration {
        let above = self.higher().count();
        let tier = (above / self.seats).min(4) as u32;
        self.timeout * tier / 4
    }

    /// Whether this peer is electing or waiting for a result right now.
    pub fn in_progress(&self) -> bool {
        matches!(self.phase, Phase::Electing { .. } | Phase::Waiting { .. })
    }

    fn higher(&self) -> impl DoubleEndedIterator<Item = NodeId> + '_ {
        self.peers.iter().copied().filter(move |p| *p > self.me)
    }

    fn round_id(&self) -> RequestId {
        RequestId {
            node: self.me,
            seq: ELECTION_ID_BASE + self.round,
        }
    }

    /// Starts an election (no-op while one is under way or once a result is
    /// known).
    pub fn start(&mut self, now: Instant) -> Vec<Outgoing> {
        if self.result.is_some() || matches!(self.phase, Phase::Electing { .. }) {
            return Vec::new();
        }
        self.round += 1;
        self.asked.clear();
        self.alive_above.clear();
        self.unreachable.clear();
        self.silent.clear();
        self.phase = Phase::Electing {
            until: now + self.timeout,
        };
        let mut out = self.ask_more();
        out.extend(self.maybe_decide(now));
        out
    }

    /// Message 0 to as many more higher peers, highest first, as answers
    /// are still missing: `seats` less those that answered and those asked
    /// and not yet heard from.
    fn ask_more(&mut self) -> Vec<Outgoing> {
        let awaited = self
            .asked
            .iter()
            .filter(|p| !self.resolved(**p) && !self.alive_above.contains(p))
            .count();
        let missing = self.seats.saturating_sub(self.alive_above.len() + awaited);
        let next: Vec<NodeId> = self
            .higher()
            .rev()
            .filter(|p| !self.asked.contains(p))
            .take(missing)
            .collect();
        let id = self.round_id();
        next.into_iter()
            .map(|to| {
                self.asked.insert(to);
                Outgoing {
                    to,
                    body: Body::Election {
                        id,
                        epoch: Epoch(0),
                    },
                }
            })
            .collect()
    }

    /// Whether a higher peer counts as dead this round.
    fn resolved(&self, peer: NodeId) -> bool {
        self.unreachable.contains(&peer) || self.silent.contains(&peer)
    }

    /// A message sent to this peer (message 0 or 1), a reply it got
    /// ([`Body::Alive`]), or the warehouse's answer to its proposal
    /// ([`Body::Committed`], or a refusal carrying the committed view). For
    /// message 0 the reply to its sender is among the returned messages, first.
    pub fn on_message(&mut self, now: Instant, from: NodeId, body: &Body) -> Vec<Outgoing> {
        if self.peers.contains(&from) {
            self.known.insert(from);
        }
        match body {
            Body::Election { id, .. } => {
                let mut out = vec![Outgoing {
                    to: from,
                    body: Body::Alive { id: *id },
                }];
                if let Some(view) = &self.result {
                    out.push(Outgoing {
                        to: from,
                        body: Body::Elected { view: view.clone() },
                    });
                } else if self.phase == Phase::Idle {
                    out.extend(self.start(now));
                }
                out
            }
            Body::Alive { id } => {
                let current = *id == self.round_id();
                if current && from > self.me && matches!(self.phase, Phase::Electing { .. }) {
                    self.silent.remove(&from);
                    self.alive_above.insert(from);
                    return self.maybe_decide(now);
                }
                Vec::new()
            }
            Body::Elected { view } => {
                self.adopt(view);
                Vec::new()
            }
            Body::Committed { view, .. } if from.is_warehouse() => {
                let fresh = self.adopt(view);
                if !fresh {
                    return Vec::new();
                }
                // Ours was committed: announce it (message 1).
                self.peers
                    .iter()
                    .filter(|p| **p != self.me)
                    .map(|&to| Outgoing {
                        to,
                        body: Body::Elected { view: view.clone() },
                    })
                    .collect()
            }
            Body::Refused {
                reason: Refusal::StaleEpoch { current, .. },
                ..
            } if from.is_warehouse() => {
                // Another proposal was committed first: take it.
                self.adopt(current);
                Vec::new()
            }
            Body::Refused { .. } if from.is_warehouse() && self.result.is_none() => {
                // Too early for this set (slower peers may still be
                // electing): wait for their result, or elect again.
                self.phase = Phase::Waiting {
                    until: now + self.timeout,
                    trader: false,
                };
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Takes a committed view if it is newer than the one known; returns
    /// whether it did.
    fn adopt(&mut self, view: &View) -> bool {
        if view.epoch == Epoch(0) || self.result.as_ref().is_some_and(|r| r.epoch >= view.epoch) {
            return false;
        }
        self.known
            .extend(view.traders.iter().filter(|t| self.peers.contains(t)));
        self.result = Some(view.clone());
        self.phase = Phase::Done;
        true
    }

    /// A message to `peer` could not be delivered (connection refused), or
    /// the warehouse did not answer a proposal.
    pub fn on_unreachable(&mut self, now: Instant, peer: NodeId) -> Vec<Outgoing> {
        if peer > self.me && matches!(self.phase, Phase::Electing { .. }) {
            self.unreachable.insert(peer);
            let mut out = self.ask_more();
            out.extend(self.maybe_decide(now));
            return out;
        }
        Vec::new()
    }

    /// Time passes: deadlines fire.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Outgoing> {
        match self.phase {
            Phase::Electing { until } if now >= until => {
                // Who has not answered by now counts as dead: ask further
                // down for the answers still missing, with a fresh deadline.
                let quiet: Vec<NodeId> = (self.asked.iter())
                    .filter(|p| !self.alive_above.contains(p) && !self.resolved(**p))
                    .copied()
                    .collect();
                self.silent.extend(quiet);
                self.phase = Phase::Electing {
                    until: now + self.timeout,
                };
                let mut out = self.ask_more();
                out.extend(self.maybe_decide(now));
                out
            }
            Phase::Waiting { until, trader } if now >= until => {
                if trader {
                    // Nobody below proposed (fewer than `seats` live peers),
                    // or our proposal went unanswered: propose.
                    self.propose(now)
                } else {
                    // The peer that was to propose went silent: start again.
                    self.phase = Phase::Idle;
                    self.start(now)
                }
            }
            _ => Vec::new(),
        }
    }

    /// Decides once `seats` higher peers answered, or every higher peer
    /// answered or counts as dead.
    fn maybe_decide(&mut self, now: Instant) -> Vec<Outgoing> {
        if !matches!(self.phase, Phase::Electing { .. }) {
            return Vec::new();
        }
        let above = self.alive_above.len();
        let wait = Phase::Waiting {
            until: now + self.timeout * 2,
            trader: above < self.seats,
        };
        if above >= self.seats {
            self.phase = wait;
            return Vec::new();
        }
        let accounted = self
            .higher()
            .all(|p| self.alive_above.contains(&p) || self.resolved(p));
        if !accounted {
            return Vec::new();
        }
        let lower_exist = self.peers.iter().any(|p| *p < self.me);
        if above + 1 == self.seats || !lower_exist {
            self.propose(now)
        } else {
            self.phase = wait;
            Vec::new()
        }
    }

    /// Proposes to the warehouse the traders this peer knows: the `seats`
    /// highest of itself, the higher peers that answered, and every peer it
    /// heard from; waits for the answer (and proposes again if none comes).
    fn propose(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut known: BTreeSet<NodeId> = self.alive_above.clone();
        known.insert(self.me);
        known.extend(self.known.iter().copied());
        let mut traders: Vec<NodeId> = known.into_iter().rev().take(self.seats).collect();
        traders.sort_unstable();
        self.phase = Phase::Waiting {
            until: now + self.timeout * 2,
            trader: true,
        };
        vec![Outgoing {
            to: NodeId::WAREHOUSE,
            body: Body::Propose {
                id: self.round_id(),
                base: Epoch(0),
                traders,
                cause: "elected (messages 0 and 1)".into(),
            },
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::registry::Registry;
    use std::collections::{BTreeMap, BinaryHeap};

    /// How a peer that is not up behaves towards a sender.
    #[derive(Clone, Copy, PartialEq)]
    enum Down {
        /// The connection is refused: the sender hears at once.
        Refuses,
        /// Messages vanish: the sender only times out.
        Silent,
    }

    /// A deterministic network of election state machines: messages are
    /// delivered in (time, sequence) order with per-link delays.
    struct Net {
        t0: Instant,
        nodes: BTreeMap<NodeId, Election>,
        /// The warehouse's registry, which commits the first proposal; made
        /// at the first proposal, joined by every peer that is up.
        registry: Option<Registry>,
        seats: usize,
        down: BTreeMap<NodeId, Down>,
        /// Extra delay for messages on (from, to).
        slow: BTreeMap<(NodeId, NodeId), Duration>,
        queue: BinaryHeap<std::cmp::Reverse<Queued>>,
        bodies: BTreeMap<u64, Body>,
        seq: u64,
        now: Duration,
        /// Messages 0 sent so far.
        asked: usize,
    }

    type BodyKey = u64;
    /// A message in flight: (deliver at, sequence, from, to, body key).
    type Queued = (Duration, u64, NodeId, NodeId, BodyKey);

    const HOP: Duration = Duration::from_millis(1);
    const TIMEOUT: Duration = Duration::from_millis(100);

    impl Net {
        fn new(n: u32, seats: usize) -> Self {
            let peers: Vec<NodeId> = (1..=n).map(NodeId).collect();
            let nodes = peers
                .iter()
                .map(|&p| (p, Election::new(p, &peers, seats, TIMEOUT)))
                .collect();
            let t0 = Instant::now();
            Self {
                t0,
                nodes,
                registry: None,
                seats,
                down: BTreeMap::new(),
                slow: BTreeMap::new(),
                queue: BinaryHeap::new(),
                bodies: BTreeMap::new(),
                seq: 0,
                now: Duration::ZERO,
                asked: 0,
            }
        }

        fn at(&self) -> Instant {
            self.t0 + self.now
        }

        fn send(&mut self, from: NodeId, out: Vec<Outgoing>) {
            for o in out {
                if matches!(o.body, Body::Election { .. }) {
                    self.asked += 1;
                }
                if let Some(&d) = self.down.get(&o.to) {
                    if d == Down::Refuses && matches!(o.body, Body::Election { .. }) {
                        let at = self.at();
                        let more = self
                            .nodes
                            .get_mut(&from)
                            .map(|e| e.on_unreachable(at, o.to))
                            .unwrap_or_default();
                        self.send(from, more);
                    }
                    continue;
                }
                let delay = HOP + self.slow.get(&(from, o.to)).copied().unwrap_or_default();
                self.seq += 1;
                self.bodies.insert(self.seq, o.body);
                self.queue.push(std::cmp::Reverse((
                    self.now + delay,
                    self.seq,
                    from,
                    o.to,
                    self.seq,
                )));
            }
        }

        fn start(&mut self, who: &[u32]) {
            for &w in who {
                let at = self.at();
                let out = self.nodes.get_mut(&NodeId(w)).unwrap().start(at);
                self.send(NodeId(w), out);
            }
        }

        /// Runs until nothing is in flight and no deadline is pending, at most `limit`.
        fn run(&mut self, limit: Duration) {
            let tick = Duration::from_millis(5);
            let mut next_tick = self.now + tick;
            for _ in 0..1_000_000 {
                if self.now > limit {
                    break;
                }
                let next_msg = self.queue.peek().map(|r| r.0.0);
                if next_msg.is_some_and(|t| t <= next_tick) {
                    let std::cmp::Reverse((t, _, from, to, key)) = self.queue.pop().unwrap();
                    self.now = t;
                    let body = self.bodies.remove(&key).unwrap();
                    if self.down.contains_key(&to) {
                        continue;
                    }
                    let at = self.at();
                    if to.is_warehouse() {
                        let reply = self.warehouse(at, from, &body);
                        self.send(
                            to,
                            vec![Outgoing {
                                to: from,
                                body: reply,
                            }],
                        );
                        continue;
                    }
                    let out = self.nodes.get_mut(&to).unwrap().on_message(at, from, &body);
                    // The reply to message 0 travels back to its sender like any message.
                    self.send(to, out);
                } else {
                    if next_msg.is_none() && self.quiet() {
                        break;
                    }
                    self.now = next_tick;
                    next_tick += tick;
                    let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                    for id in ids {
                        if self.down.contains_key(&id) {
                            continue;
                        }
                        let at = self.at();
                        let out = self.nodes.get_mut(&id).unwrap().on_tick(at);
                        self.send(id, out);
                    }
                }
            }
        }

        /// The warehouse's answer to a proposal.
        fn warehouse(&mut self, at: Instant, from: NodeId, body: &Body) -> Body {
            let Body::Propose {
                id, base, traders, ..
            } = body
            else {
                panic!("the election sends the warehouse proposals only: {body:?}")
            };
            let (live, seats, t0) = (self.live(), self.seats, self.t0);
            let registry = self.registry.get_or_insert_with(|| {
                // A peer down from the start never joined: the market is
                // the peers that are up (ids 1..=k in these tests).
                let k = live.len() as u32;
                assert_eq!(live, (1..=k).map(NodeId).collect::<Vec<_>>());
                let mut r = Registry::new(k, seats, TIMEOUT, TIMEOUT * 8, Vec::new(), t0);
                for &p in &live {
                    r.join(t0, p).unwrap();
                }
                r
            });
            match registry.decide(at, from, *base, traders) {
                Ok(view) => {
                    registry.commit(view.clone());
                    Body::Committed { id: *id, view }
                }
                Err(reason) => Body::Refused { id: *id, reason },
            }
        }

        /// The peers that are up.
        fn live(&self) -> Vec<NodeId> {
            self.nodes
                .keys()
                .copied()
                .filter(|n| !self.down.contains_key(n))
                .collect()
        }

        fn quiet(&self) -> bool {
            self.nodes
                .iter()
                .filter(|(id, _)| !self.down.contains_key(id))
                .all(|(_, e)| !e.in_progress())
        }

        /// Every live peer's result.
        fn results(&self) -> Vec<(u32, Option<Vec<u32>>)> {
            self.nodes
                .iter()
                .filter(|(id, _)| !self.down.contains_key(id))
                .map(|(id, e)| {
                    let r = e.result().map(|v| v.traders.iter().map(|n| n.0).collect());
                    (id.0, r)
                })
                .collect()
        }

        /// Every live peer holds `want`, as epoch 1: one proposal was
        /// committed, whatever the rounds did.
        fn assert_all_agree(&self, want: &[u32]) {
            for (id, r) in self.results() {
                assert_eq!(r.as_deref(), Some(want), "peer {id}: {:?}", self.results());
            }
            let views = self.registry.as_ref().expect("a proposal").views();
            assert_eq!(views.len(), 1, "{views:?}");
            for e in self.nodes.values().filter(|e| e.result.is_some()) {
                assert_eq!(e.result().unwrap().epoch, Epoch(1));
            }
        }
    }

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn all_alive_elects_the_highest_peers() {
        let mut net = Net::new(6, 2);
        net.start(&[1, 2, 3, 4, 5, 6]);
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[5, 6]);
        // Decided without waiting for a timeout: every higher peer answered.
        assert!(net.now < TIMEOUT, "took {:?}", net.now);
    }

    #[test]
    fn a_thousand_peers_ask_seats_higher_peers_each_not_every_higher_one() {
        let mut net = Net::new(1000, 8);
        net.start(&(1..=1000).collect::<Vec<_>>());
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&(993..=1000).collect::<Vec<_>>());
        assert!(net.now < TIMEOUT, "took {:?}", net.now);
        // The textbook bully sends 499,500 messages 0 here.
        assert!(net.asked <= 1000 * 8, "{} messages 0", net.asked);
    }

    #[test]
    fn dead_peers_among_the_highest_are_replaced_by_the_next_ones_down() {
        let mut net = Net::new(40, 4);
        for (d, how) in [(40, Down::Refuses), (39, Down::Silent), (38, Down::Silent)] {
            net.down.insert(NodeId(d), how);
        }
        net.start(&(1..=37).collect::<Vec<_>>());
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[34, 35, 36, 37]);
        // Each peer asks one more peer per dead one at most.
        assert!(net.asked <= 39 * (4 + 3), "{} messages 0", net.asked);
    }

    #[test]
    fn the_highest_peers_start_first_and_the_rest_within_one_timeout() {
        let peers: Vec<NodeId> = (1..=100).map(NodeId).collect();
        let delay = |me| Election::new(NodeId(me), &peers, 8, TIMEOUT).start_delay();
        for me in 93..=100 {
            assert_eq!(delay(me), Duration::ZERO, "peer {me}");
        }
        assert_eq!(delay(92), TIMEOUT / 4);
        assert_eq!(delay(85), TIMEOUT / 4);
        assert_eq!(delay(84), TIMEOUT / 2);
        assert_eq!(delay(69), TIMEOUT * 3 / 4);
        assert_eq!(delay(68), TIMEOUT);
        assert_eq!(delay(1), TIMEOUT);
    }

    #[test]
    fn a_thousand_peers_starting_by_rank_elect_the_top_with_few_messages() {
        let mut net = Net::new(1000, 8);
        let delays: Vec<(Duration, u32)> = (1..=1000)
            .map(|p| (net.nodes[&NodeId(p)].start_delay(), p))
            .collect();
        for at in [0, 1, 2, 3, 4].map(|q| TIMEOUT * q / 4) {
            net.run(at);
            net.now = net.now.max(at);
            let due: Vec<u32> = delays.iter().filter(|d| d.0 == at).map(|d| d.1).collect();
            net.start(&due);
        }
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&(993..=1000).collect::<Vec<_>>());
        // The top 8 ask each other (28 messages); the 992 below start once
        // the result is known and send nothing.
        assert!(net.asked <= 100, "{} messages 0", net.asked);
    }

    #[test]
    fn one_starter_is_enough_the_bully_cascade_reaches_everyone() {
        let mut net = Net::new(6, 2);
        net.start(&[1]);
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[5, 6]);
    }

    #[test]
    fn the_textbook_bully_with_one_seat() {
        let mut net = Net::new(5, 1);
        net.start(&[2, 3]);
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[5]);
    }

    #[test]
    fn highest_peers_dead_at_start_refusing_connections() {
        let mut net = Net::new(6, 2);
        net.down.insert(NodeId(6), Down::Refuses);
        net.down.insert(NodeId(5), Down::Refuses);
        net.start(&[1, 2, 3, 4]);
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[3, 4]);
        assert!(net.now < TIMEOUT, "refusals are immediate: {:?}", net.now);
    }

    #[test]
    fn highest_peer_dead_at_start_and_silent() {
        let mut net = Net::new(6, 2);
        net.down.insert(NodeId(6), Down::Silent);
        net.start(&[1, 2, 3, 4, 5]);
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[4, 5]);
    }

    #[test]
    fn fewer_live_peers_than_seats_elects_all_of_them() {
        let mut net = Net::new(4, 3);
        for d in [2, 3, 4] {
            net.down.insert(NodeId(d), Down::Refuses);
        }
        net.start(&[1]);
        net.run(Duration::from_secs(5));
        net.assert_all_agree(&[1]);
    }

    #[test]
    fn concurrent_elections_started_at_different_times() {
        for seed in 0..20u64 {
            let mut net = Net::new(7, 3);
            // Seeded skews: each peer starts at its own moment.
            let mut starts: Vec<(u64, u32)> = (1..=7)
                .map(|p| ((seed * 31 + u64::from(p) * 17) % 40, p))
                .collect();
            starts.sort();
            for (at, p) in starts {
                net.run(Duration::from_millis(at));
                net.now = net.now.max(Duration::from_millis(at));
                net.start(&[p]);
            }
            net.run(Duration::from_secs(5));
            net.assert_all_agree(&[5, 6, 7]);
        }
    }

    #[test]
    fn a_late_alive_cannot_split_the_market_the_first_commit_stands() {
        let mut net = Net::new(6, 2);
        // 6's answer to 5 arrives long after 5's timeout: 5 thinks it is alone
        // at the top for a while and proposes a set without 6.
        net.slow
            .insert((NodeId(6), NodeId(5)), Duration::from_millis(400));
        net.start(&[1, 2, 3, 4, 5, 6]);
        net.run(Duration::from_secs(10));
        let first = net.results()[0].1.clone().expect("a result");
        net.assert_all_agree(&first);
    }

    #[test]
    fn a_late_or_stale_result_does_not_undo_a_newer_one() {
        let now = Instant::now();
        let peers = ids(&[1, 2, 3, 4]);
        let mut e = Election::new(NodeId(1), &peers, 2, TIMEOUT);
        e.start(now);
        let view = |epoch, v: &[u32]| View {
            epoch: Epoch(epoch),
            traders: ids(v),
        };
        e.on_message(
            now,
            NodeId(4),
            &Body::Elected {
                view: view(2, &[3, 4]),
            },
        );
        assert_eq!(e.result(), Some(&view(2, &[3, 4])));
        // An older announcement arrives late: ignored.
        e.on_message(
            now,
            NodeId(2),
            &Body::Elected {
                view: view(1, &[2, 3]),
            },
        );
        assert_eq!(e.result(), Some(&view(2, &[3, 4])));
        // A late answer of an old round changes nothing either.
        let old = RequestId {
            node: NodeId(1),
            seq: ELECTION_ID_BASE,
        };
        assert!(
            e.on_message(now, NodeId(4), &Body::Alive { id: old })
                .is_empty()
        );
        // A late message 0 from a lower peer is answered with the result.
        let id = RequestId {
            node: NodeId(0),
            seq: 1,
        };
        let out = e.on_message(
            now,
            NodeId(0),
            &Body::Election {
                id,
                epoch: Epoch(0),
            },
        );
        assert_eq!(out[0].body, Body::Alive { id });
        assert_eq!(
            out[1].body,
            Body::Elected {
                view: view(2, &[3, 4])
            }
        );
        assert!(
            e.start(now).is_empty(),
            "no new election once a view is known"
        );
    }

    #[test]
    fn a_refused_proposer_adopts_the_committed_view_and_announces_nothing() {
        let now = Instant::now();
        let peers = ids(&[1, 2, 3, 4]);
        let mut e = Election::new(NodeId(4), &peers, 1, TIMEOUT);
        let out = e.start(now);
        assert!(
            matches!(
                &out[..],
                [Outgoing {
                    to: NodeId::WAREHOUSE,
                    body: Body::Propose { .. }
                }]
            ),
            "{out:?}"
        );
        let committed = View {
            epoch: Epoch(1),
            traders: ids(&[3]),
        };
        let refused = Body::Refused {
            id: RequestId::default(),
            reason: Refusal::StaleEpoch {
                theirs: Epoch(0),
                current: committed.clone(),
            },
        };
        assert!(e.on_message(now, NodeId::WAREHOUSE, &refused).is_empty());
        assert_eq!(e.result(), Some(&committed));
        assert!(!e.in_progress());
    }

    #[test]
    fn an_unanswered_proposal_is_made_again() {
        let now = Instant::now();
        let peers = ids(&[1, 2]);
        let mut e = Election::new(NodeId(2), &peers, 1, TIMEOUT);
        assert_eq!(e.start(now).len(), 1);
        assert!(e.on_tick(now + TIMEOUT).is_empty());
        let again = e.on_tick(now + TIMEOUT * 2);
        assert!(matches!(
            &again[..],
            [Outgoing {
                body: Body::Propose { .. },
                ..
            }]
        ));
    }
}
