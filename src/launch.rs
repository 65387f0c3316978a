//! The launcher's line protocol: what `bazaar run` and the `bazaar node`
//! processes it starts say to each other, one text line at a time (the
//! node's stdout towards the launcher, its stdin back). One typed enum,
//! printed and parsed here only, used by the launcher, the node and the
//! tests.
//!
//! | line | direction | meaning |
//! |---|---|---|
//! | `ready <addr>` | node → launcher | listening on `addr` |
//! | `start <address book JSON>` | launcher → node | every node's address; start |
//! | `traders <epoch> <id,id,…>` | node → launcher | the view this node adopted |
//! | `clock` | launcher → node | tell me your Lamport time (before a fault) |
//! | `clock <n>` | node → launcher | my Lamport time is `n` |
//! | `wedge` | launcher → node | stop your trader's worker, keep the socket |
//! | `net <rules JSON>` | launcher → node | the network faults now in force (the fault layer, [`crate::net::Faulty`]) |
//! | `stop` | launcher → node | stop trading, then wait for stdin to close |
//! | `done` | node → launcher | stopped trading, history written |

use std::net::SocketAddr;

use crate::clock::Lamport;
use crate::net::NetRules;
use crate::node::AddressBook;
use crate::wire::{Epoch, NodeId, View};

/// One line of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Ready(SocketAddr),
    Start(AddressBook),
    Traders(View),
    AskClock,
    Clock(Lamport),
    Wedge,
    Net(NetRules),
    Stop,
    Done,
}

impl Line {
    /// Writes this line to stdout (node → launcher). A launcher that has gone
    /// away (a closed pipe) is not an error worth dying for: the node learns
    /// of it from its stdin and stops.
    pub fn tell(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{self}").and_then(|()| out.flush());
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Ready(a) => write!(f, "ready {a}"),
            Line::Start(book) => {
                let json = serde_json::to_string(book).map_err(|_| std::fmt::Error)?;
                write!(f, "start {json}")
            }
            Line::Traders(v) => {
                let ids: Vec<String> = v.traders.iter().map(|n| n.0.to_string()).collect();
                write!(f, "traders {} {}", v.epoch.0, ids.join(","))
            }
            Line::AskClock => write!(f, "clock"),
            Line::Clock(l) => write!(f, "clock {}", l.0),
            Line::Wedge => write!(f, "wedge"),
            Line::Net(rules) => {
                let json = serde_json::to_string(rules).map_err(|_| std::fmt::Error)?;
                write!(f, "net {json}")
            }
            Line::Stop => write!(f, "stop"),
            Line::Done => write!(f, "done"),
        }
    }
}

impl std::str::FromStr for Line {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad launcher line {line:?}: {why}");
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        Ok(match (word, rest) {
            ("ready", a) => Line::Ready(a.parse().map_err(|_| bad("expected ready <addr>"))?),
            ("start", json) => Line::Start(
                serde_json::from_str(json).map_err(|e| bad(&format!("bad address book: {e}")))?,
            ),
            ("traders", v) => {
                let (epoch, ids) = v.split_once(' ').unwrap_or((v, ""));
                let epoch = Epoch(epoch.parse().map_err(|_| bad("expected an epoch"))?);
                let traders = ids
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|i| i.trim().parse().map(NodeId))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| bad("expected peer ids"))?;
                Line::Traders(View { epoch, traders })
            }
            ("clock", "") => Line::AskClock,
            ("clock", n) => Line::Clock(Lamport(n.parse().map_err(|_| bad("expected a number"))?)),
            ("wedge", "") => Line::Wedge,
            ("net", json) => Line::Net(
                serde_json::from_str(json).map_err(|e| bad(&format!("bad network rules: {e}")))?,
            ),
            ("stop", "") => Line::Stop,
            ("done", "") => Line::Done,
            _ => return Err(bad("unknown")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_reads_back_as_it_was_printed() {
        let mut book = AddressBook::default();
        book.nodes
            .insert(NodeId(0), "127.0.0.1:7000".parse().unwrap());
        let lines = [
            Line::Ready("127.0.0.1:40000".parse().unwrap()),
            Line::Start(book),
            Line::Traders(View {
                epoch: Epoch(3),
                traders: vec![NodeId(5), NodeId(6)],
            }),
            Line::AskClock,
            Line::Clock(Lamport(42)),
            Line::Wedge,
            Line::Net(NetRules {
                faults: vec![crate::config::NetFault::Partition {
                    groups: vec![vec![NodeId(5)], vec![NodeId(6), NodeId(0)]],
                }],
            }),
            Line::Stop,
            Line::Done,
        ];
        for l in lines {
            assert_eq!(l.to_string().parse::<Line>(), Ok(l));
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong_and_never_panic() {
        for bad in [
            "",
            "ready",
            "ready nowhere",
            "traders x 1",
            "traders 1 a,b",
            "clock -1",
            "start {",
            "net {",
            "net {\"faults\": [{\"net\": \"flood\"}]}",
            "hello",
        ] {
            let err = bad.parse::<Line>().unwrap_err();
            assert!(err.contains("bad launcher line"), "{err}");
        }
    }
}
