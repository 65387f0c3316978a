//! The election of the trader set (the document's messages 0 and 1): a bully
//! election generalised from one coordinator to `seats` traders.
//!
//! A pure state machine: no sockets, no clock of its own. The node's driver
//! ([`crate::peer::service`]) feeds it messages, undeliverable sends and ticks
//! with the time, and sends what it returns.
//!
//! ## The protocol
//! - A peer **starts** an election by sending message 0 ([`Body::Election`]) to
//!   every higher peer. A live higher peer answers [`Body::Alive`] ("I am
//!   alive and higher") and, if it is not electing already, starts its own
//!   election (the bully cascade, so a late starter still reaches the top).
//! - A peer counts the higher peers that answered. With `seats` or more it
//!   cannot be a trader: it waits for the result. With fewer it is a trader,
//!   ranked `answers + 1`; the one ranked exactly `seats` knows the whole
//!   trader set (itself and the `seats − 1` live peers above it) and announces
//!   it to every peer (message 1, [`Body::Elected`]). It decides as soon as
//!   every higher peer has answered or refused the connection, else after
//!   `timeout`. With `seats = 1` this is the textbook bully.
//! - A trader ranked above `seats` waits for the announcement from below; if
//!   none comes (fewer than `seats` peers are alive) it announces the traders
//!   it knows. A non-trader whose awaited announcement never comes (the peer
//!   that was to announce died) starts again.
//! - **Conflicts** settle towards the higher ids, as in the bully: of two
//!   announced sets a peer keeps the one that is larger compared highest id
//!   first; a live peer left out of a set that names a lower peer (or has a
//!   free seat) contests it by starting a new election, which announces a set
//!   that beats the old one. Late replies of an earlier round are ignored.
//!
//! Once a result is known the state machine keeps answering: a late message 0
//! gets an [`Body::Alive`] and the result. Later changes to the trader list
//! (a death, message 8) belong to [`crate::heartbeat`] and
//! [`crate::membership`], not here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::wire::{Body, NodeId, RequestId};

/// Election request ids live above this, so they never collide with a node's
/// heartbeat ids on a shared control connection.
pub const ELECTION_ID_BASE: u64 = 1 << 62;

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeId,
    pub body: Body,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Message 0 sent to every higher peer; counting answers until `until`.
    Electing {
        until: Instant,
    },
    /// Waiting for message 1 until `until`; `trader` if this peer knows it is
    /// one (ranked above `seats`).
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
    /// Higher peers that answered this round.
    alive_above: BTreeSet<NodeId>,
    /// Higher peers that refused this round's message 0.
    unreachable: BTreeSet<NodeId>,
    result: Option<Vec<NodeId>>,
    /// Every peer heard from (message 0 or 1, an answer): alive, as far as
    /// this peer knows.
    known: BTreeSet<NodeId>,
}

/// Whether trader set `a` beats `b`: compared highest id first, a higher id
/// wins; a set that extends the other wins.
pub fn beats(a: &[NodeId], b: &[NodeId]) -> bool {
    let desc = |v: &[NodeId]| {
        let mut v = v.to_vec();
        v.sort_unstable_by(|x, y| y.cmp(x));
        v
    };
    desc(a) > desc(b)
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
            alive_above: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            result: None,
            known: BTreeSet::new(),
        }
    }

    /// The trader set, once known.
    pub fn result(&self) -> Option<&[NodeId]> {
        self.result.as_deref()
    }

    /// Whether this peer is electing or waiting for a result right now.
    pub fn in_progress(&self) -> bool {
        matches!(self.phase, Phase::Electing { .. } | Phase::Waiting { .. })
    }

    fn higher(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.iter().copied().filter(move |p| *p > self.me)
    }

    fn round_id(&self) -> RequestId {
        RequestId {
            node: self.me,
            seq: ELECTION_ID_BASE + self.round,
        }
    }

    /// Starts an election (no-op while one is under way).
    pub fn start(&mut self, now: Instant) -> Vec<Outgoing> {
        if matches!(self.phase, Phase::Electing { .. }) {
            return Vec::new();
        }
        self.round += 1;
        self.alive_above.clear();
        self.unreachable.clear();
        self.phase = Phase::Electing {
            until: now + self.timeout,
        };
        let id = self.round_id();
        let mut out: Vec<Outgoing> = self
            .higher()
            .map(|to| Outgoing {
                to,
                body: Body::Election { id },
            })
            .collect();
        out.extend(self.maybe_decide(now, false));
        out
    }

    /// A message sent to this peer (message 0 or 1) or a reply it got
    /// ([`Body::Alive`]). For message 0 the reply to its sender is among the
    /// returned messages, first.
    pub fn on_message(&mut self, now: Instant, from: NodeId, body: &Body) -> Vec<Outgoing> {
        if self.peers.contains(&from) {
            self.known.insert(from);
        }
        match body {
            Body::Election { id } => {
                let mut out = vec![Outgoing {
                    to: from,
                    body: Body::Alive { id: *id },
                }];
                match &self.result {
                    Some(traders) if !self.in_progress() => out.push(Outgoing {
                        to: from,
                        body: Body::Elected {
                            traders: traders.clone(),
                        },
                    }),
                    _ => {}
                }
                if self.phase == Phase::Idle {
                    out.extend(self.start(now));
                }
                out
            }
            Body::Alive { id } => {
                let current = *id == self.round_id();
                if current && from > self.me && matches!(self.phase, Phase::Electing { .. }) {
                    self.alive_above.insert(from);
                    return self.maybe_decide(now, false);
                }
                Vec::new()
            }
            Body::Elected { traders } => self.on_elected(now, traders),
            _ => Vec::new(),
        }
    }

    fn on_elected(&mut self, now: Instant, traders: &[NodeId]) -> Vec<Outgoing> {
        if traders.is_empty() {
            return Vec::new();
        }
        self.known
            .extend(traders.iter().filter(|t| self.peers.contains(t)));
        let left_out = !traders.contains(&self.me)
            && (traders.len() < self.seats || traders.iter().any(|t| *t < self.me));
        if left_out {
            // A live peer the set should hold: contest it (bully-back).
            return self.start(now);
        }
        let better = match &self.result {
            None => true,
            Some(r) => beats(traders, r),
        };
        if better {
            let mut t = traders.to_vec();
            t.sort_unstable();
            self.result = Some(t);
        }
        self.phase = Phase::Done;
        Vec::new()
    }

    /// A message 0 to `peer` could not be delivered (connection refused).
    pub fn on_unreachable(&mut self, now: Instant, peer: NodeId) -> Vec<Outgoing> {
        if peer > self.me && matches!(self.phase, Phase::Electing { .. }) {
            self.unreachable.insert(peer);
            return self.maybe_decide(now, false);
        }
        Vec::new()
    }

    /// Time passes: deadlines fire.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Outgoing> {
        match self.phase {
            Phase::Electing { until } if now >= until => self.maybe_decide(now, true),
            Phase::Waiting { until, trader } if now >= until => {
                if trader {
                    // Nobody below announced: fewer than `seats` live peers.
                    self.announce()
                } else {
                    // The peer that was to announce went silent: start again.
                    self.phase = Phase::Idle;
                    self.start(now)
                }
            }
            _ => Vec::new(),
        }
    }

    /// Decides once every higher peer is accounted for (or `timed_out`).
    fn maybe_decide(&mut self, now: Instant, timed_out: bool) -> Vec<Outgoing> {
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
            .all(|p| self.alive_above.contains(&p) || self.unreachable.contains(&p));
        if !(accounted || timed_out) {
            return Vec::new();
        }
        let lower_exist = self.peers.iter().any(|p| *p < self.me);
        if above + 1 == self.seats || !lower_exist {
            self.announce()
        } else {
            self.phase = wait;
            Vec::new()
        }
    }

    /// Announces the traders this peer knows: the `seats` highest of itself,
    /// the higher peers that answered, and every peer it heard from.
    fn announce(&mut self) -> Vec<Outgoing> {
        let mut known: BTreeSet<NodeId> = self.alive_above.clone();
        known.insert(self.me);
        known.extend(self.known.iter().copied());
        known.extend(self.result.iter().flatten().copied());
        let mut traders: Vec<NodeId> = known.into_iter().rev().take(self.seats).collect();
        traders.sort_unstable();
        self.result = Some(traders.clone());
        self.phase = Phase::Done;
        self.peers
            .iter()
            .filter(|p| **p != self.me)
            .map(|&to| Outgoing {
                to,
                body: Body::Elected {
                    traders: traders.clone(),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        down: BTreeMap<NodeId, Down>,
        /// Extra delay for messages on (from, to).
        slow: BTreeMap<(NodeId, NodeId), Duration>,
        queue: BinaryHeap<std::cmp::Reverse<Queued>>,
        bodies: BTreeMap<u64, Body>,
        seq: u64,
        now: Duration,
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
            Self {
                t0: Instant::now(),
                nodes,
                down: BTreeMap::new(),
                slow: BTreeMap::new(),
                queue: BinaryHeap::new(),
                bodies: BTreeMap::new(),
                seq: 0,
                now: Duration::ZERO,
            }
        }

        fn at(&self) -> Instant {
            self.t0 + self.now
        }

        fn send(&mut self, from: NodeId, out: Vec<Outgoing>) {
            for o in out {
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
                .map(|(id, e)| (id.0, e.result().map(|r| r.iter().map(|n| n.0).collect())))
                .collect()
        }

        fn assert_all_agree(&self, want: &[u32]) {
            for (id, r) in self.results() {
                assert_eq!(r.as_deref(), Some(want), "peer {id}: {:?}", self.results());
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
    fn a_late_alive_is_contested_and_the_higher_set_wins() {
        let mut net = Net::new(6, 2);
        // 6's answer to 5 arrives long after 5's timeout: 5 thinks it is alone
        // at the top for a while.
        net.slow
            .insert((NodeId(6), NodeId(5)), Duration::from_millis(400));
        net.start(&[1, 2, 3, 4, 5, 6]);
        net.run(Duration::from_secs(10));
        net.assert_all_agree(&[5, 6]);
    }

    #[test]
    fn a_late_result_from_an_old_round_does_not_undo_a_better_one() {
        let now = Instant::now();
        let peers = ids(&[1, 2, 3, 4]);
        let mut e = Election::new(NodeId(1), &peers, 2, TIMEOUT);
        e.start(now);
        e.on_message(
            now,
            NodeId(4),
            &Body::Elected {
                traders: ids(&[3, 4]),
            },
        );
        assert_eq!(e.result(), Some(&ids(&[3, 4])[..]));
        // A stale announcement naming lower peers arrives late: ignored.
        e.on_message(
            now,
            NodeId(2),
            &Body::Elected {
                traders: ids(&[2, 3]),
            },
        );
        assert_eq!(e.result(), Some(&ids(&[3, 4])[..]));
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
        let out = e.on_message(now, NodeId(0), &Body::Election { id });
        assert_eq!(out[0].body, Body::Alive { id });
        assert!(matches!(&out[1].body, Body::Elected { traders } if *traders == ids(&[3, 4])));
    }

    #[test]
    fn a_live_peer_left_out_contests_the_result() {
        let now = Instant::now();
        let peers = ids(&[1, 2, 3, 4]);
        let mut e = Election::new(NodeId(3), &peers, 2, TIMEOUT);
        let out = e.on_message(
            now,
            NodeId(2),
            &Body::Elected {
                traders: ids(&[2, 4]),
            },
        );
        assert_eq!(
            out,
            vec![Outgoing {
                to: NodeId(4),
                body: Body::Election {
                    id: RequestId {
                        node: NodeId(3),
                        seq: ELECTION_ID_BASE + 1
                    }
                }
            }]
        );
        assert!(beats(&ids(&[3, 4]), &ids(&[2, 4])));
        assert!(beats(&ids(&[4]), &ids(&[2, 3])));
        assert!(beats(&ids(&[3, 4]), &ids(&[4])));
    }
}
