//! The message trace: every message a node sends and receives, one history
//! line each ([`Sent`], [`Received`] in `RUN_DIR/history/<node>.jsonl`), so
//! that a run can be drawn as a Lamport space-time diagram
//! ([`crate::diagram`]) and any message followed from its sender to its
//! receiver.
//!
//! A line holds the document's message number ([`Kind::msg`]), the kind, the
//! request id it carries or answers, the wall time and the node's Lamport
//! time at the event: on a send the stamp the frame carries; on a receive the
//! clock after merging it, and the sender's stamp. The sender's node (from
//! its history file) and that stamp name a message across the run; the
//! stamps a node's clock hands out never repeat within one life of the node.
//!
//! Cost: a line is a mutex and a JSON encoding into the history's buffer,
//! with no allocation of its own (every field is a number or a
//! `&'static str`); `benches/history.rs` measures it per request. Every
//! message is recorded, heartbeats included: among traders they are a few
//! dozen a second, next to four messages (eight lines) per buy.
//! The connection's hello and welcome are not traced (they open a
//! connection and carry no request). With `BAZAAR_LOG=debug`
//! (`bazaar::trace=debug`) each message is also logged as it is sent and
//! received.
//!
//! [`Trace`] is the handle the writer ([`crate::connection::Sender`]) and the
//! readers ([`crate::node::serve`], [`crate::link::Link`]) call, one line each.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Lamport;
use crate::history::{Event, Writer, wall_us};
use crate::wire::{Body, Envelope, NodeId, RequestId};

/// What a message is: one per [`Body`] variant, as the trace records it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Hello,
    Welcome,
    Election,
    Alive,
    Elected,
    WarehouseBuy,
    WarehouseSell,
    Lookup,
    Sell,
    Buy,
    Heartbeat,
    TraderDied,
    Flush,
    Join,
    Propose,
    Renew,
    Granted,
    Deposited,
    Stock,
    HeartbeatAck,
    Flushed,
    Joined,
    Committed,
    Leased,
    Refused,
}

impl Kind {
    /// The kind of `body`.
    pub fn of(body: &Body) -> Kind {
        match body {
            Body::Hello { .. } => Kind::Hello,
            Body::Welcome { .. } => Kind::Welcome,
            Body::Election { .. } => Kind::Election,
            Body::Alive { .. } => Kind::Alive,
            Body::Elected { .. } => Kind::Elected,
            Body::WarehouseBuy { .. } => Kind::WarehouseBuy,
            Body::WarehouseSell { .. } => Kind::WarehouseSell,
            Body::Lookup { .. } => Kind::Lookup,
            Body::Sell(_) => Kind::Sell,
            Body::Buy(_) => Kind::Buy,
            // A retry is message 5 or 6 again (settled at the warehouse).
            Body::Retry {
                side: crate::wire::Side::Buy,
                ..
            } => Kind::Buy,
            Body::Retry {
                side: crate::wire::Side::Sell,
                ..
            } => Kind::Sell,
            Body::Heartbeat { .. } => Kind::Heartbeat,
            Body::TraderDied { .. } => Kind::TraderDied,
            Body::Flush { .. } => Kind::Flush,
            Body::Join { .. } => Kind::Join,
            Body::Propose { .. } => Kind::Propose,
            Body::Renew { .. } => Kind::Renew,
            Body::Granted { .. } => Kind::Granted,
            Body::Deposited { .. } => Kind::Deposited,
            Body::Stock { .. } => Kind::Stock,
            Body::HeartbeatAck { .. } => Kind::HeartbeatAck,
            Body::Flushed { .. } => Kind::Flushed,
            Body::Joined { .. } => Kind::Joined,
            Body::Committed { .. } => Kind::Committed,
            Body::Leased { .. } => Kind::Leased,
            Body::Refused { .. } => Kind::Refused,
        }
    }

    /// The document's message number (0–9); `None` for replies and for the
    /// messages that are ours.
    pub fn msg(self) -> Option<u8> {
        Some(match self {
            Kind::Election => 0,
            Kind::Elected => 1,
            Kind::WarehouseBuy => 2,
            Kind::WarehouseSell => 3,
            Kind::Lookup => 4,
            Kind::Sell => 5,
            Kind::Buy => 6,
            Kind::Heartbeat => 7,
            Kind::TraderDied => 8,
            Kind::Flush => 9,
            _ => return None,
        })
    }

    /// A short name for labels (`buy`, `warehouse_buy`, `heartbeat_ack`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Welcome => "welcome",
            Kind::Election => "election",
            Kind::Alive => "alive",
            Kind::Elected => "elected",
            Kind::WarehouseBuy => "warehouse_buy",
            Kind::WarehouseSell => "warehouse_sell",
            Kind::Lookup => "lookup",
            Kind::Sell => "sell",
            Kind::Buy => "buy",
            Kind::Heartbeat => "heartbeat",
            Kind::TraderDied => "trader_died",
            Kind::Flush => "flush",
            Kind::Join => "join",
            Kind::Propose => "propose",
            Kind::Renew => "renew",
            Kind::Granted => "granted",
            Kind::Deposited => "deposited",
            Kind::Stock => "stock",
            Kind::HeartbeatAck => "heartbeat_ack",
            Kind::Flushed => "flushed",
            Kind::Joined => "joined",
            Kind::Committed => "committed",
            Kind::Leased => "leased",
            Kind::Refused => "refused",
        }
    }

    /// Whether the message answers a request.
    pub fn is_reply(self) -> bool {
        matches!(
            self,
            Kind::Welcome
                | Kind::Alive
                | Kind::Granted
                | Kind::Deposited
                | Kind::Stock
                | Kind::HeartbeatAck
                | Kind::Flushed
                | Kind::Joined
                | Kind::Committed
                | Kind::Leased
                | Kind::Refused
        )
    }
}

/// The request id a body carries or answers, for the debug log (`1#5`, or `-`).
fn show_id(body: &Body) -> String {
    id_of(body).map_or_else(|| "-".into(), |i| i.to_string())
}

/// The request id a body carries or answers.
fn id_of(body: &Body) -> Option<RequestId> {
    body.request_id().or_else(|| body.reply_id())
}

/// A history line: this node sent a message to `to`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Wall time in µs since the Unix epoch.
    pub wall_us: u64,
    /// The stamp the message carries (the sender's clock, ticked for it).
    pub lamport: Lamport,
    pub to: NodeId,
    /// The document's message number, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<u8>,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// A history line: this node received a message from `from`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub wall_us: u64,
    /// The receiver's clock after merging the message's stamp.
    pub lamport: Lamport,
    pub from: NodeId,
    /// The stamp the message carried (its [`Sent::lamport`]).
    pub sent_lamport: Lamport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<u8>,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// Where a node's sends and receives are recorded: its history, or nowhere
/// (tests and benchmarks that have no history). Cheap to clone.
#[derive(Clone, Default)]
pub struct Trace {
    history: Option<Arc<Writer>>,
}

impl Trace {
    /// Records into `history`.
    pub fn to(history: Arc<Writer>) -> Trace {
        Trace {
            history: Some(history),
        }
    }

    /// Records nothing (the debug log still shows each message).
    pub fn off() -> Trace {
        Trace::default()
    }

    /// `env` leaves for `to`, stamped.
    pub fn sent(&self, to: NodeId, env: &Envelope) {
        let kind = Kind::of(&env.body);
        tracing::debug!(
            %to,
            lamport = env.clock.0,
            id = %show_id(&env.body),
            "sent {}",
            env.body.name()
        );
        if let Some(h) = &self.history {
            h.record(&Event::Sent(Sent {
                wall_us: wall_us(),
                lamport: env.clock,
                to,
                msg: kind.msg(),
                kind,
                id: id_of(&env.body),
            }));
        }
    }

    /// `env` arrived, and merging its stamp made this node's clock `now`.
    pub fn received(&self, env: &Envelope, now: Lamport) {
        let kind = Kind::of(&env.body);
        tracing::debug!(
            from = %env.from,
            sent = env.clock.0,
            lamport = now.0,
            id = %show_id(&env.body),
            "received {}",
            env.body.name()
        );
        if let Some(h) = &self.history {
            h.record(&Event::Received(Received {
                wall_us: wall_us(),
                lamport: now,
                from: env.from,
                sent_lamport: env.clock,
                msg: kind.msg(),
                kind,
                id: id_of(&env.body),
            }));
        }
    }
}

/// One end of a message: when (wall and Lamport) it left or arrived.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub wall_us: u64,
    pub lamport: Lamport,
}

/// A message, its send and its receive paired up from the two nodes'
/// histories. Either end may be missing: a send never received (lost, or
/// its receiver killed), a receive whose send was not recorded (its sender
/// killed before its history reached the disk).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub kind: Kind,
    pub id: Option<RequestId>,
    /// The stamp the message carried.
    pub stamp: Lamport,
    pub sent: Option<End>,
    pub received: Option<End>,
}

impl Message {
    /// The earliest wall time known of it.
    pub fn first_us(&self) -> u64 {
        match (self.sent, self.received) {
            (Some(s), _) => s.wall_us,
            (None, Some(r)) => r.wall_us,
            (None, None) => 0,
        }
    }
}

/// Every send and receive of a run, by the node that recorded it (what
/// [`crate::history::History`] keeps of the trace lines).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lines {
    pub sent: Vec<(NodeId, Sent)>,
    pub received: Vec<(NodeId, Received)>,
}

impl Lines {
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.received.is_empty()
    }

    /// Pairs each receive with its send: same sender, receiver, kind and
    /// stamp; if a restarted sender reused a stamp, the latest send before
    /// the receive. Returns the messages in order of their first known wall
    /// time.
    pub fn messages(&self) -> Vec<Message> {
        type Key = (NodeId, NodeId, Kind, Lamport);
        let mut sends: HashMap<Key, Vec<usize>> = HashMap::with_capacity(self.sent.len());
        let mut out: Vec<Message> = Vec::with_capacity(self.sent.len() + self.received.len());
        for (by, s) in &self.sent {
            sends
                .entry((*by, s.to, s.kind, s.lamport))
                .or_default()
                .push(out.len());
            out.push(Message {
                from: *by,
                to: s.to,
                kind: s.kind,
                id: s.id,
                stamp: s.lamport,
                sent: Some(End {
                    wall_us: s.wall_us,
                    lamport: s.lamport,
                }),
                received: None,
            });
        }
        for (by, r) in &self.received {
            let end = End {
                wall_us: r.wall_us,
                lamport: r.lamport,
            };
            let key = (r.from, *by, r.kind, r.sent_lamport);
            // The latest unreceived send no later than the receive; else any
            // unreceived one (clocks of two hosts may disagree a little).
            let found = sends.get(&key).and_then(|idx| {
                let open = idx.iter().copied().filter(|&i| out[i].received.is_none());
                open.clone()
                    .filter(|&i| out[i].first_us() <= r.wall_us)
                    .max_by_key(|&i| out[i].first_us())
                    .or_else(|| open.min_by_key(|&i| out[i].first_us()))
            });
            match found {
                Some(i) => out[i].received = Some(end),
                None => out.push(Message {
                    from: r.from,
                    to: *by,
                    kind: r.kind,
                    id: r.id,
                    stamp: r.sent_lamport,
                    sent: None,
                    received: Some(end),
                }),
            }
        }
        out.sort_by_key(|m| (m.first_us(), m.from, m.stamp));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Order, ProductId, Qty};

    fn buy(seq: u64) -> Body {
        Body::Buy(Order {
            id: RequestId {
                node: NodeId(1),
                seq,
            },
            product: ProductId(0),
            qty: Qty(2),
        })
    }

    fn sent(lamport: u64, to: u32, wall_us: u64) -> Sent {
        Sent {
            wall_us,
            lamport: Lamport(lamport),
            to: NodeId(to),
            msg: Some(6),
            kind: Kind::Buy,
            id: None,
        }
    }

    fn received(sent_lamport: u64, from: u32, wall_us: u64) -> Received {
        Received {
            wall_us,
            lamport: Lamport(sent_lamport + 1),
            from: NodeId(from),
            sent_lamport: Lamport(sent_lamport),
            msg: Some(6),
            kind: Kind::Buy,
            id: None,
        }
    }

    #[test]
    fn kinds_carry_the_documents_numbers() {
        assert_eq!(Kind::of(&buy(1)).msg(), Some(6));
        let beat = Body::Heartbeat {
            id: RequestId::default(),
            view: Default::default(),
        };
        assert_eq!(Kind::of(&beat).msg(), Some(7));
        assert_eq!(Kind::Granted.msg(), None);
        assert!(Kind::Granted.is_reply() && !Kind::Buy.is_reply());
        assert_eq!(
            serde_json::to_string(&Kind::HeartbeatAck).unwrap(),
            "\"heartbeat_ack\""
        );
        assert_eq!(Kind::HeartbeatAck.name(), "heartbeat_ack");
    }

    #[test]
    fn a_line_format_is_stable() {
        let s = Event::Sent(Sent {
            id: Some(RequestId {
                node: NodeId(1),
                seq: 7,
            }),
            ..sent(12, 6, 100)
        });
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"event":"sent","wall_us":100,"lamport":12,"to":6,"msg":6,"kind":"buy","id":{"node":1,"seq":7}}"#
        );
        let r = Event::Received(Received {
            msg: None,
            kind: Kind::Elected,
            ..received(12, 1, 150)
        });
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"event":"received","wall_us":150,"lamport":13,"from":1,"sent_lamport":12,"kind":"elected"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), r);
    }

    #[test]
    fn sends_and_receives_pair_up_and_the_unpaired_are_kept() {
        let lines = Lines {
            sent: vec![
                (NodeId(1), sent(5, 6, 100)),
                // Never received (its receiver was killed).
                (NodeId(1), sent(6, 6, 110)),
            ],
            received: vec![
                (NodeId(6), received(5, 1, 130)),
                // Its send was lost with its sender.
                (NodeId(6), received(3, 2, 90)),
            ],
        };
        let m = lines.messages();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].sent, None);
        assert_eq!(m[0].from, NodeId(2));
        assert_eq!(m[1].stamp, Lamport(5));
        assert_eq!(m[1].received.unwrap().wall_us, 130);
        assert_eq!(m[2].received, None);
    }

    #[test]
    fn a_restarted_sender_reusing_a_stamp_pairs_with_its_latest_send() {
        let lines = Lines {
            sent: vec![(NodeId(1), sent(5, 6, 100)), (NodeId(1), sent(5, 6, 5_000))],
            received: vec![
                (NodeId(6), received(5, 1, 5_020)),
                (NodeId(6), received(5, 1, 120)),
            ],
        };
        let m = lines.messages();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].received.unwrap().wall_us, 120);
        assert_eq!(m[1].received.unwrap().wall_us, 5_020);
    }

    #[test]
    fn a_trace_records_both_ends_into_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(Writer::for_node(dir.path(), NodeId(1)).unwrap());
        let t = Trace::to(w.clone());
        let env = Envelope {
            from: NodeId(1),
            clock: Lamport(4),
            body: buy(9),
        };
        t.sent(NodeId(6), &env);
        t.received(&env, Lamport(5));
        Trace::off().sent(NodeId(6), &env);
        w.close(NodeId(1)).unwrap();
        let h = crate::history::History::read_dir(dir.path()).unwrap();
        assert_eq!(h.trace.sent.len(), 1);
        assert_eq!(h.trace.received.len(), 1);
        let (by, s) = h.trace.sent[0];
        assert_eq!(by, NodeId(1));
        assert_eq!(s.id.map(|i| i.seq), Some(9));
        assert_eq!(s.msg, Some(6));
    }
}
