//! The progress line of `bazaar run`: elapsed/total, items shipped, oversells
//! and live traders, redrawn a few times a second, only when stdout is a
//! terminal (a pipe or a file gets the summary alone).
//!
//! It needs no protocol of its own: it tails the nodes' history files as they
//! grow (each node hands its events to the OS at least every
//! [`crate::history::FLUSH_EVERY`]) and counts what they say:
//! - shipped: items of granted buys, as the buyers were told (in `strong` mode
//!   exactly what the warehouse shipped; in `cached` mode what was promised);
//! - oversells: from the warehouse's cache flush events;
//! - live traders: the initial traders, then the last election result or
//!   trader list a detection of a death sent out (message 8).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::history::{Event, Outcome};
use crate::membership::Happening;
use crate::wire::{NodeId, Side};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// What the history says so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub shipped: u64,
    pub oversells: u64,
    pub traders: BTreeSet<NodeId>,
}

impl Tally {
    pub fn new(traders: &[NodeId]) -> Self {
        Tally {
            traders: traders.iter().copied().collect(),
            ..Tally::default()
        }
    }

    pub fn feed(&mut self, event: &Event) {
        match event {
            Event::Complete(c) if c.side == Side::Buy && c.outcome == Outcome::Ok => {
                self.shipped += u64::from(c.granted.0);
            }
            Event::Flush(f) => self.oversells += u64::from(f.oversells),
            Event::Failover(r) => match &r.what {
                Happening::Elected { traders, .. } | Happening::Detected { traders, .. } => {
                    self.traders = traders.iter().copied().collect()
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Reads the lines a growing file gained since the last call.
#[derive(Debug, Default)]
struct Tail {
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// The events in the complete lines added since the last read. Lines that
    /// do not parse are skipped: this is a display, the checker judges.
    fn read(&mut self, path: &Path) -> Vec<Event> {
        let Ok(mut file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let before = self.partial.len();
        let Ok(n) = file.read_to_end(&mut self.partial) else {
            self.partial.truncate(before);
            return Vec::new();
        };
        self.offset += n as u64;
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        complete
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()
    }
}

/// The progress line over a run's history directory.
struct Progress {
    bar: ProgressBar,
    dir: PathBuf,
    tails: BTreeMap<PathBuf, Tail>,
    tally: Tally,
    total: Duration,
}

impl Progress {
    fn update(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if path.extension().is_some_and(|x| x == "jsonl") {
                    let tail = self.tails.entry(path.clone()).or_default();
                    for e in tail.read(&path) {
                        self.tally.feed(&e);
                    }
                }
            }
        }
        let elapsed = self.bar.elapsed().min(self.total);
        self.bar.set_position(elapsed.as_millis() as u64);
        self.bar.set_message(line(elapsed, self.total, &self.tally));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The words of the line.
pub fn line(elapsed: Duration, total: Duration, t: &Tally) -> String {
    format!(
        "{:.1}s/{:.1}s · shipped {} · oversells {} · {} live trader{}",
        elapsed.as_secs_f64(),
        total.as_secs_f64(),
        t.shipped,
        t.oversells,
        t.traders.len(),
        if t.traders.len() == 1 { "" } else { "s" }
    )
}

/// Draws the progress line until dropped (put it in a `select!` beside the
/// run's timer); when stdout is not a terminal, waits and draws nothing.
pub async fn show(history_dir: PathBuf, total: Duration, traders: Vec<NodeId>) {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return std::future::pending().await;
    }
    let bar =
        ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut p = Progress {
        bar,
        dir: history_dir,
        tails: BTreeMap::new(),
        tally: Tally::new(&traders),
        total,
    };
    let mut every = tokio::time::interval(TICK);
    loop {
        every.tick().await;
        p.update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::config::Role;
    use crate::history::{Complete, Flush};
    use crate::membership::Record;
    use crate::wire::{ProductId, Qty, RequestId};
    use std::io::Write;

    fn granted(seq: u64, qty: u32) -> Event {
        Event::Complete(Complete {
            id: RequestId {
                node: NodeId(1),
                seq,
            },
            side: Side::Buy,
            product: ProductId(0),
            asked: Qty(qty),
            granted: Qty(qty),
            trader: NodeId(6),
            outcome: Outcome::Ok,
            wall_us: 1,
            lamport: Lamport(1),
            latency_us: 1,
        })
    }

    #[test]
    fn the_tally_follows_shipments_oversells_and_traders() {
        let mut t = Tally::new(&[NodeId(5), NodeId(6)]);
        t.feed(&granted(1, 3));
        t.feed(&granted(2, 2));
        t.feed(&Event::Flush(Flush {
            trader: NodeId(6),
            id: RequestId::default(),
            requests: 5,
            oversells: 2,
            oversold: 3,
            wall_us: 1,
            lamport: Lamport(1),
        }));
        let record = |wall_us, what| {
            Event::Failover(Record {
                wall_us,
                lamport: Some(Lamport(wall_us)),
                by: Some(NodeId(5)),
                what,
            })
        };
        t.feed(&record(
            2,
            Happening::Detected {
                dead: NodeId(6),
                cause: "refused".into(),
                traders: vec![NodeId(5)],
                promoted: None,
                found_us: 0,
            },
        ));
        assert_eq!((t.shipped, t.oversells, t.traders.len()), (5, 2, 1));
        t.feed(&record(
            3,
            Happening::Elected {
                traders: vec![NodeId(4), NodeId(5)],
                role: Role::Trader,
            },
        ));
        assert_eq!(t.traders, BTreeSet::from([NodeId(4), NodeId(5)]));
        assert_eq!(
            line(Duration::from_millis(1500), Duration::from_secs(3), &t),
            "1.5s/3.0s · shipped 5 · oversells 2 · 2 live traders"
        );
    }

    #[test]
    fn the_tail_reads_only_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer1.jsonl");
        let line = serde_json::to_string(&granted(1, 3)).unwrap();
        let (head, rest) = line.split_at(10);
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "{line}\n{head}").unwrap();
        let mut tail = Tail::default();
        assert_eq!(tail.read(&path).len(), 1);
        assert!(tail.read(&path).is_empty(), "half a line is not read");
        writeln!(f, "{rest}").unwrap();
        assert_eq!(tail.read(&path), vec![granted(1, 3)]);
        assert!(tail.read(&path).is_empty());
    }
}
