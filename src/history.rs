//! Each node's history: one JSON line per event in `RUN_DIR/history/<node>.jsonl`.
//!
//! Today the events are the requests of buyers and sellers, each written once
//! it completes, with its invoke and completion times (wall and Lamport) and
//! its outcome. The checker and the report read them back after the run.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock::Lamport;
use crate::wire::{NodeId, ProductId, Qty, RequestId, Side};

/// How a request ended, from the client's side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// The trader answered: a buy got `granted` items (maybe fewer than asked,
    /// maybe none), a sell was deposited.
    Ok,
    /// The trader answered with a refusal; nothing was applied.
    Refused(String),
    /// No answer within the deadline: it may or may not have been applied.
    Failed(String),
}

/// One buy or sell, invoked and completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub side: Side,
    pub product: ProductId,
    pub asked: Qty,
    /// Items the buyer got, or the seller deposited; 0 unless the outcome is ok.
    pub granted: Qty,
    pub trader: NodeId,
    pub outcome: Outcome,
    /// Wall time at invoke and completion, in µs since the Unix epoch.
    pub invoked_us: u64,
    pub completed_us: u64,
    /// Monotonic latency in µs.
    pub latency_us: u64,
    pub lamport_invoked: Lamport,
    pub lamport_completed: Lamport,
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Request(Request),
    /// An election result, fault, detection, promotion or retry
    /// ([`crate::membership::Record`]).
    Failover(crate::membership::Record),
}

/// Wall-clock µs since the Unix epoch, for history stamps only.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The file of one node's history in `dir`.
pub fn path_of(dir: &Path, node: NodeId) -> PathBuf {
    dir.join(format!("{node}.jsonl"))
}

/// Appends events to a node's history through a buffer; [`Writer::flush`]
/// (or drop) writes them out.
pub struct Writer {
    out: BufWriter<File>,
}

impl Writer {
    pub fn create(dir: &Path, node: NodeId) -> std::io::Result<Writer> {
        std::fs::create_dir_all(dir)?;
        let file = File::create(path_of(dir, node))?;
        Ok(Writer {
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    pub fn append(&mut self, event: &Event) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

/// Reads every history file in `dir`. A torn last line (a node killed while
/// writing) is skipped; any other bad line is an error naming file and line.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(events);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        let lines: Vec<String> = BufReader::new(File::open(&path)?)
            .lines()
            .collect::<Result<_, _>>()?;
        let last = lines.len();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Event>(line) {
                Ok(e) => events.push(e),
                Err(_) if i + 1 == last => {
                    tracing::warn!("{}: skipping torn last line", path.display())
                }
                Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), i + 1),
            }
        }
    }
    Ok(events)
}

/// The requests among `events`.
pub fn requests(events: &[Event]) -> impl Iterator<Item = &Request> {
    events.iter().filter_map(|e| match e {
        Event::Request(r) => Some(r),
        _ => None,
    })
}
