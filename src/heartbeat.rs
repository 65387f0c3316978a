//! The traders' failure detector (the document's message 7): every trader
//! heartbeats every other trader each `interval`; one that has not answered
//! for `timeout`, or that refuses the connection, is declared dead. The
//! survivor then tells every peer (message 8, see [`crate::peer::service`]).
//!
//! [`Detector`] is a pure state machine: the driver tells it the traders to
//! watch, the answers and failures of the heartbeats it sent, and the time;
//! it says which heartbeats to send and who is dead. No sockets, no clock.
//!
//! What counts as alive is an answer ([`Body::HeartbeatAck`]) from the
//! trader's worker, the same machinery that serves trades
//! ([`crate::trader::desk`]), not an accepting socket: the document's bug was
//! a trader whose worker had died while its socket still accepted, which
//! heartbeats that only connect never notice. A refusal or a connection that
//! drops is not an answer.
//!
//! The heartbeats also keep a trader's lease ([`crate::lease`]) while the
//! warehouse cannot be reached: [`Detector::lease_anchor`] is the time from
//! which the trader may count a lease once *every* other trader of its epoch
//! has answered a heartbeat of that epoch sent since then. Any of them could
//! propose this trader's removal, and each one proposes it only after
//! hearing nothing from it (no answer, no heartbeat: see
//! [`Detector::on_heard`]) for `timeout`, longer than a lease: so a lease
//! counted this way has ended before a set without this trader can be
//! committed, as one granted by the warehouse has.
//!
//! Bounds: a dead trader is declared within `timeout` plus one tick of the
//! driver after its last answer, at most `timeout + interval` after it died
//! (it answered a heartbeat at most `interval` before dying); a trader whose
//! process is gone is declared at the first heartbeat that finds its port
//! closed, within `interval`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::{Body, Epoch, NodeId, RequestId, View};

/// A heartbeat to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beat {
    pub to: NodeId,
    pub body: Body,
}

/// Why a trader was declared dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No answer for this long.
    Silent(Duration),
    /// The connection was refused (or the handshake failed).
    Refused(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Silent(d) => write!(f, "silent for {} ms", d.as_millis()),
            Cause::Refused(r) => write!(f, "refused the connection ({r})"),
        }
    }
}

/// What the detector asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send(Beat),
    Dead { node: NodeId, cause: Cause },
}

#[derive(Clone, Debug)]
struct Watch {
    last_heard: Instant,
    next_beat: Instant,
    /// When the latest heartbeat it answered (in this detector's epoch) was sent.
    acked_sent: Option<Instant>,
}

/// One trader's view of the other traders' health.
#[derive(Clone, Debug)]
pub struct Detector {
    me: NodeId,
    interval: Duration,
    timeout: Duration,
    watched: BTreeMap<NodeId, Watch>,
    /// The view the watched traders come from; every heartbeat carries it.
    view: View,
    next_seq: u64,
    /// When each heartbeat still unanswered was sent, by its sequence number.
    sent: BTreeMap<u64, Instant>,
}

impl Detector {
    pub fn new(me: NodeId, interval: Duration, timeout: Duration) -> Self {
        Self {
            me,
            interval,
            timeout,
            watched: BTreeMap::new(),
            view: View::default(),
            next_seq: 1,
            sent: BTreeMap::new(),
        }
    }

    /// The traders being watched.
    pub fn watched(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.watched.keys().copied()
    }

    /// Watches the traders of `view` (this trader excluded; none if this
    /// node is not one of them). A newly watched trader gets a full `timeout`
    /// from now; one no longer listed is forgotten.
    pub fn watch(&mut self, now: Instant, view: &View) {
        let traders: &[NodeId] = if view.contains(self.me) {
            &view.traders
        } else {
            &[]
        };
        if view.epoch != self.view.epoch {
            // Answers to another epoch's heartbeats vouch for nothing now.
            for w in self.watched.values_mut() {
                w.acked_sent = None;
            }
        }
        self.view = view.clone();
        self.watched
            .retain(|n, _| traders.contains(n) && *n != self.me);
        for &t in traders {
            if t != self.me && !t.is_warehouse() {
                self.watched.entry(t).or_insert(Watch {
                    last_heard: now,
                    next_beat: now,
                    acked_sent: None,
                });
            }
        }
    }

    /// Time passes: heartbeats fall due, silences become deaths.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (&node, w) in &mut self.watched {
            let silent = now.saturating_duration_since(w.last_heard);
            if silent >= self.timeout {
                dead.push((node, Cause::Silent(silent)));
                continue;
            }
            if now >= w.next_beat {
                w.next_beat = now + self.interval;
                let id = RequestId {
                    node: self.me,
                    seq: self.next_seq,
                };
                self.next_seq += 1;
                self.sent.insert(id.seq, now);
                out.push(Output::Send(Beat {
                    to: node,
                    body: Body::Heartbeat {
                        id,
                        view: self.view.clone(),
                    },
                }));
            }
        }
        for (node, cause) in dead {
            self.watched.remove(&node);
            out.push(Output::Dead { node, cause });
        }
        // Heartbeats unanswered for a whole timeout are answered by no one.
        self.sent
            .retain(|_, at| now.saturating_duration_since(*at) < self.timeout);
        out
    }

    /// `from` sent this trader a heartbeat: it is alive, as much as if it had
    /// answered one.
    pub fn on_heard(&mut self, now: Instant, from: NodeId) {
        if let Some(w) = self.watched.get_mut(&from) {
            w.last_heard = w.last_heard.max(now);
        }
    }

    /// The time from which this trader may count a lease on its fellow
    /// traders' word: the oldest of the latest answered heartbeats' send
    /// times, once every other trader of the epoch has answered one; `None`
    /// while one has not (or there is no other trader).
    pub fn lease_anchor(&self) -> Option<Instant> {
        if self.watched.is_empty() {
            return None;
        }
        self.watched
            .values()
            .map(|w| w.acked_sent)
            .collect::<Option<Vec<Instant>>>()?
            .into_iter()
            .min()
    }

    /// The epoch this detector's heartbeats carry.
    pub fn epoch(&self) -> Epoch {
        self.view.epoch
    }

    /// A reply to a heartbeat. Only [`Body::HeartbeatAck`] counts as alive.
    pub fn on_message(&mut self, now: Instant, from: NodeId, body: &Body) -> Vec<Output> {
        if let (Body::HeartbeatAck { id, epoch }, Some(w)) = (body, self.watched.get_mut(&from)) {
            w.last_heard = w.last_heard.max(now);
            if let Some(sent) = self.sent.remove(&id.seq)
                && *epoch == self.view.epoch
            {
                w.acked_sent = Some(w.acked_sent.map_or(sent, |a| a.max(sent)));
            }
        }
        Vec::new()
    }

    /// The connection to `node` dropped while a heartbeat was out: beat again
    /// at once, so a dead process is found by the refusal that follows.
    pub fn on_lost(&mut self, now: Instant, node: NodeId) -> Vec<Output> {
        if let Some(w) = self.watched.get_mut(&node) {
            w.next_beat = now;
        }
        self.on_tick(now)
    }

    /// `node` refused the connection: dead at once.
    pub fn on_refused(&mut self, _now: Instant, node: NodeId, reason: String) -> Vec<Output> {
        match self.watched.remove(&node) {
            Some(_) => vec![Output::Dead {
                node,
                cause: Cause::Refused(reason),
            }],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(200);
    const TIMEOUT: Duration = Duration::from_millis(600);
    const TICK: Duration = Duration::from_millis(10);

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn view(traders: &[NodeId]) -> View {
        View {
            epoch: Epoch(1),
            traders: traders.to_vec(),
        }
    }

    fn sends(out: &[Output]) -> Vec<NodeId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(b) => Some(b.to),
                _ => None,
            })
            .collect()
    }

    fn deaths(out: &[Output]) -> Vec<NodeId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Dead { node, .. } => Some(*node),
                _ => None,
            })
            .collect()
    }

    /// Runs a detector for trader 6 watching 5 and 4, where the traders in
    /// `answering(t)` answer every heartbeat at once. Returns when each died.
    fn simulate(
        answering: impl Fn(Duration, NodeId) -> bool,
        until: Duration,
    ) -> Vec<(NodeId, Duration)> {
        let t0 = Instant::now();
        let mut d = Detector::new(n(6), INTERVAL, TIMEOUT);
        d.watch(t0, &view(&[n(4), n(5), n(6)]));
        let mut died = Vec::new();
        let mut t = Duration::ZERO;
        while t <= until {
            let now = t0 + t;
            for o in d.on_tick(now) {
                match o {
                    Output::Send(b) if answering(t, b.to) => {
                        let Body::Heartbeat { id, view } = b.body else {
                            panic!("{b:?}")
                        };
                        let epoch = view.epoch;
                        d.on_message(now, b.to, &Body::HeartbeatAck { id, epoch });
                    }
                    Output::Send(_) => {}
                    Output::Dead { node, .. } => died.push((node, t)),
                }
            }
            t += TICK;
        }
        died
    }

    #[test]
    fn a_lease_on_the_heartbeats_needs_every_other_trader_to_answer() {
        let t0 = Instant::now();
        let mut d = Detector::new(n(6), INTERVAL, TIMEOUT);
        d.watch(t0, &view(&[n(4), n(5), n(6)]));
        let out = d.on_tick(t0);
        let beats: Vec<Beat> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Send(b) => Some(b),
                _ => None,
            })
            .collect();
        let ack = |b: &Beat, epoch| {
            let Body::Heartbeat { id, .. } = b.body else {
                panic!()
            };
            Body::HeartbeatAck { id, epoch }
        };
        assert_eq!(d.lease_anchor(), None);
        d.on_message(t0 + TICK, beats[0].to, &ack(&beats[0], Epoch(1)));
        assert_eq!(d.lease_anchor(), None, "trader 5 has not answered yet");
        // An answer from another epoch vouches for nothing.
        d.on_message(t0 + TICK, beats[1].to, &ack(&beats[1], Epoch(7)));
        assert_eq!(d.lease_anchor(), None);
        let out = d.on_tick(t0 + INTERVAL);
        let again: Vec<Beat> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Send(b) if b.to == n(5) => Some(b),
                _ => None,
            })
            .collect();
        d.on_message(t0 + INTERVAL + TICK, n(5), &ack(&again[0], Epoch(1)));
        // Anchored at the oldest send among the answers: 4's, at t0.
        assert_eq!(d.lease_anchor(), Some(t0));
        // A new epoch starts over.
        d.watch(
            t0 + INTERVAL,
            &View {
                epoch: Epoch(2),
                traders: vec![n(4), n(5), n(6)],
            },
        );
        assert_eq!(d.lease_anchor(), None);
    }

    #[test]
    fn a_heartbeat_received_counts_as_hearing_from_its_sender() {
        let t0 = Instant::now();
        let mut d = Detector::new(n(6), INTERVAL, TIMEOUT);
        d.watch(t0, &view(&[n(5), n(6)]));
        // 5 never answers our heartbeats, but its own keep arriving.
        let mut t = Duration::ZERO;
        while t < TIMEOUT * 3 {
            d.on_heard(t0 + t, n(5));
            assert!(deaths(&d.on_tick(t0 + t)).is_empty(), "at {t:?}");
            t += INTERVAL;
        }
    }

    #[test]
    fn live_traders_are_never_declared_dead() {
        assert!(simulate(|_, _| true, Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_silent_trader_is_declared_within_timeout_plus_interval() {
        let death = Duration::from_millis(1234);
        let died = simulate(|t, who| who != n(5) || t < death, Duration::from_secs(5));
        assert_eq!(died.len(), 1);
        let (who, at) = died[0];
        assert_eq!(who, n(5));
        let detection = at - death;
        assert!(detection <= TIMEOUT + INTERVAL, "took {detection:?}");
        assert!(detection >= TIMEOUT - INTERVAL, "too eager: {detection:?}");
    }

    #[test]
    fn a_refused_connection_is_death_at_once_and_only_once() {
        let now = Instant::now();
        let mut d = Detector::new(n(6), INTERVAL, TIMEOUT);
        d.watch(now, &view(&[n(5), n(6)]));
        assert_eq!(sends(&d.on_tick(now)), vec![n(5)]);
        let out = d.on_refused(now, n(5), "connection refused".into());
        assert_eq!(deaths(&out), vec![n(5)]);
        assert!(d.on_refused(now, n(5), "again".into()).is_empty());
        assert!(d.on_tick(now + TIMEOUT * 2).is_empty());
    }

    #[test]
    fn a_refusal_or_a_lost_connection_is_not_an_answer() {
        let t0 = Instant::now();
        let mut d = Detector::new(n(6), INTERVAL, TIMEOUT);
        d.watch(t0, &view(&[n(5), n(6)]));
        d.on_tick(t0);
        let id = RequestId { node: n(6), seq: 1 };
        let refused = Body::Refused {
            id,
            reason: crate::wire::Refusal::TraderUnavailable,
        };
        d.on_message(t0 + INTERVAL, n(5), &refused);
        // A lost connection makes the next heartbeat go out at once.
        assert_eq!(sends(&d.on_lost(t0 + INTERVAL, n(5))), vec![n(5)]);
        assert_eq!(deaths(&d.on_tick(t0 + TIMEOUT)), vec![n(5)]);
    }

    #[test]
    fn a_newly_watched_trader_gets_a_full_timeout() {
        let t0 = Instant::now();
        let mut d = Detector::new(n(6), INTERVAL, TIMEOUT);
        d.watch(t0, &view(&[n(6)]));
        assert!(d.on_tick(t0 + TIMEOUT * 3).is_empty());
        let later = t0 + TIMEOUT * 3;
        d.watch(later, &view(&[n(3), n(6)]));
        assert_eq!(sends(&d.on_tick(later)), vec![n(3)]);
        assert!(deaths(&d.on_tick(later + TIMEOUT - TICK)).is_empty());
        assert_eq!(deaths(&d.on_tick(later + TIMEOUT)), vec![n(3)]);
        // Unwatching forgets.
        d.watch(later, &view(&[n(6)]));
        assert_eq!(d.watched().count(), 0);
    }
}
