//! Each node's history: one JSON line per event in `RUN_DIR/history/<node>.jsonl`,
//! read back after the run by the checker ([`crate::check`]) and the report.
//!
//! Like a Jepsen history, a client request is two events: an [`Invoke`] when it
//! starts and a [`Complete`] when it ends (answered, refused or failed). A
//! request with an invoke and no completion got no answer at all; the checker
//! tells that apart from a node that was killed mid-request by the [`Mark`]s
//! around them: every opening of a history writes [`Event::Opened`], every
//! clean stop writes [`Event::Closed`].
//!
//! Beside the requests, the control planes record what they did: the
//! warehouse each cache flush it applied ([`Flush`]), and the peers and the
//! launcher every election result, injected fault, failure detection,
//! promotion and retry at another trader ([`Event::Failover`], a
//! [`crate::membership::Record`]). Any part of a node appends through the
//! node's one shared [`Writer`] (`NodeContext::history`).
//!
//! The writer buffers in memory and hands its buffer to the OS when it fills,
//! when [`FLUSH_EVERY`] has passed since the last hand-off (checked on append),
//! on [`Writer::hand_off`] (a failover line), and on [`Writer::flush`] /
//! [`Writer::close`] (which also sync it to disk): appending costs a mutex and a
//! JSON encoding, never a system call per event (see `benches/history.rs`).
//! A process killed by SIGKILL loses at most the events of its last
//! [`FLUSH_EVERY`]; a clean stop loses nothing.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// tokio's clock: the system's, or simulated time in the simulator, so what a
// killed simulated node loses is the same on every replay.
use tokio::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::clock::Lamport;
use crate::membership::{Happening, Record};
use crate::wire::{NodeId, ProductId, Qty, RequestId, Side, View};

/// Longest time appended events wait in memory before reaching the OS (the
/// most a killed process loses; also how stale the launcher's progress line is).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The writer's buffer: a few hundred events, so a busy client hands the OS
/// a large write now and then rather than a small one per request.
const BUFFER: usize = 64 * 1024;
/// The launcher's own history file (faults it injected), beside the nodes'.
pub const LAUNCHER: &str = "launcher";
/// The largest history file read back (about 5 million events, hours of a
/// busy client): a larger one is refused by name before it is read.
pub const MAX_FILE: u64 = 1 << 30;
/// The longest history line read back; an event is a few hundred bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// The most history files one run directory may hold (a node writes one;
/// `[market] peers` is at most 1000).
pub const MAX_FILES: usize = 4096;

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

/// A client starts a buy or a sell (written before the request leaves).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoke {
    pub id: RequestId,
    pub side: Side,
    pub product: ProductId,
    pub asked: Qty,
    /// The trader the request is first sent to (`peer0`, i.e. none, when no
    /// trader was known to be alive).
    pub trader: NodeId,
    /// Wall time in µs since the Unix epoch.
    pub wall_us: u64,
    pub lamport: Lamport,
}

/// A client's request ends. Repeats the invoke's fields so that each line
/// reads on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    pub id: RequestId,
    pub side: Side,
    pub product: ProductId,
    pub asked: Qty,
    /// Items the buyer got, or the seller deposited; 0 unless the outcome is ok.
    pub granted: Qty,
    /// The trader that answered (the last one tried).
    pub trader: NodeId,
    pub outcome: Outcome,
    pub wall_us: u64,
    pub lamport: Lamport,
    /// Monotonic time from invoke to completion, in µs.
    pub latency_us: u64,
}

/// A cache flush (message 9) as the warehouse applied it: the trader's batch,
/// and how many of its buys the warehouse could not fill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {
    pub trader: NodeId,
    pub id: RequestId,
    /// Requests in the batch.
    pub requests: u32,
    /// Buys in the batch that were oversold (the document's "Oversell N times!").
    pub oversells: u32,
    /// Items promised by the trader that the warehouse could not deliver.
    pub oversold: u64,
    pub wall_us: u64,
    pub lamport: Lamport,
}

/// A history opened (node started or restarted) or closed (clean stop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub node: NodeId,
    pub wall_us: u64,
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Opened(Mark),
    Invoke(Invoke),
    Complete(Complete),
    Flush(Flush),
    /// An election result, fault, detection, promotion or retry.
    Failover(Record),
    /// A message this node sent (the message trace, [`crate::trace`]).
    Sent(crate::trace::Sent),
    /// A message this node received.
    Received(crate::trace::Received),
    Closed(Mark),
}

impl Event {
    /// When the event happened, in µs since the Unix epoch.
    pub fn wall_us(&self) -> u64 {
        match self {
            Event::Opened(m) | Event::Closed(m) => m.wall_us,
            Event::Invoke(e) => e.wall_us,
            Event::Complete(e) => e.wall_us,
            Event::Flush(e) => e.wall_us,
            Event::Failover(r) => r.wall_us,
            Event::Sent(e) => e.wall_us,
            Event::Received(e) => e.wall_us,
        }
    }
}

thread_local! {
    /// The wall clock of this thread's history stamps when it is not the
    /// system's: the simulator's ([`simulated_wall_clock`]).
    static WALL: Cell<Option<fn() -> u64>> = const { Cell::new(None) };
}

/// Wall-clock µs since the Unix epoch, for history stamps only: the
/// system's clock, or on a simulator's thread its simulated one, so that a
/// seed replays to the same history byte for byte.
pub fn wall_us() -> u64 {
    if let Some(simulated) = WALL.with(Cell::get) {
        return simulated();
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Makes [`wall_us`] on this thread read `clock` until the guard drops (the
/// simulator runs every simulated node on its own thread).
pub fn simulated_wall_clock(clock: fn() -> u64) -> SimulatedWallClock {
    WALL.with(|w| w.set(Some(clock)));
    SimulatedWallClock(std::marker::PhantomData)
}

/// While alive, this thread's history stamps come from a simulated clock.
pub struct SimulatedWallClock(std::marker::PhantomData<*const ()>);

impl Drop for SimulatedWallClock {
    fn drop(&mut self) {
        WALL.with(|w| w.set(None));
    }
}

/// The file of one node's history in `dir`.
pub fn path_of(dir: &Path, node: NodeId) -> PathBuf {
    dir.join(format!("{node}.jsonl"))
}

struct Inner {
    /// `None` for a writer that discards (tests, benchmarks' baseline).
    out: Option<BufWriter<File>>,
    handed_off: Instant,
}

/// Appends events to one history file through a buffer. Shared by all the
/// tasks of a node (`Arc<Writer>`): [`Writer::append`] takes `&self`.
pub struct Writer {
    inner: Mutex<Inner>,
}

impl Writer {
    /// Opens `node`'s history in `dir` for appending (a restarted node keeps
    /// what it wrote before) and records the opening.
    pub fn for_node(dir: &Path, node: NodeId) -> std::io::Result<Writer> {
        let w = Self::open(&path_of(dir, node))?;
        w.append(&Event::Opened(Mark {
            node,
            wall_us: wall_us(),
        }))?;
        Ok(w)
    }

    /// Opens (creating) `path` for appending. If a killed process left a
    /// half-written last line, the next event starts on a line of its own.
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        if file.metadata()?.len() > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Self::with(Some(BufWriter::with_capacity(BUFFER, file))))
    }

    /// A writer that writes nothing.
    pub fn discard() -> Writer {
        Self::with(None)
    }

    fn with(out: Option<BufWriter<File>>) -> Writer {
        Writer {
            inner: Mutex::new(Inner {
                out,
                handed_off: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a torn line, which
        // the reader tolerates; carry on rather than spread the panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one event (buffered; see the module docs for when it reaches
    /// the OS).
    pub fn append(&self, event: &Event) -> std::io::Result<()> {
        let mut inner = self.lock();
        let Some(out) = inner.out.as_mut() else {
            return Ok(());
        };
        serde_json::to_writer(&mut *out, event)?;
        out.write_all(b"\n")?;
        if inner.handed_off.elapsed() >= FLUSH_EVERY {
            inner.handed_off = Instant::now();
            if let Some(out) = inner.out.as_mut() {
                out.flush()?;
            }
        }
        Ok(())
    }

    /// [`Writer::append`], logging a failure instead of returning it: for
    /// callers on a path where a lost history line must not stop the work.
    pub fn record(&self, event: &Event) {
        if let Err(e) = self.append(event) {
            tracing::error!("cannot write history: {e}");
        }
    }

    /// Hands everything appended so far to the OS, without syncing it to
    /// disk: it survives the process being killed (SIGKILL), which is what
    /// a failover line needs, at the cost of one write. A sync here would
    /// cost a disk flush per view change per node: in a 1,000-peer market
    /// in one process, a thousand of them on the runtime's threads at each
    /// change, and every heartbeat behind them.
    pub fn hand_off(&self) -> std::io::Result<()> {
        self.write_out(false)
    }

    /// Writes everything out and syncs it to disk.
    pub fn flush(&self) -> std::io::Result<()> {
        self.write_out(true)
    }

    fn write_out(&self, sync: bool) -> std::io::Result<()> {
        let mut inner = self.lock();
        inner.handed_off = Instant::now();
        match inner.out.as_mut() {
            Some(out) => {
                out.flush()?;
                if sync {
                    out.get_ref().sync_data()?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a clean stop of `node` and writes everything out: its requests
    /// with no completion are now unanswered, not interrupted.
    pub fn close(&self, node: NodeId) -> std::io::Result<()> {
        self.append(&Event::Closed(Mark {
            node,
            wall_us: wall_us(),
        }))?;
        self.flush()
    }
}

/// One history file, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub path: PathBuf,
    pub events: Vec<Event>,
}

/// Reads one history file. A line that does not parse is an error naming the
/// file and line, except a torn line a killed process left behind: the last
/// line, or one followed by the restarted node's `opened`.
pub fn read_file(path: &Path) -> anyhow::Result<Log> {
    let bytes = read_bounded(path, MAX_FILE, "a history file")?;
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut events = Vec::with_capacity(lines.len());
    // A line that did not parse, judged by the line after it: (line number, why).
    let mut torn: Option<(usize, String)> = None;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let parsed = if line.len() > MAX_LINE {
            Err(serde::de::Error::custom(format_args!(
                "a line of {} bytes, over the {MAX_LINE}-byte limit of a history line",
                line.len()
            )))
        } else {
            serde_json::from_slice::<Event>(line)
        };
        if let Some((bad, why)) = torn.take() {
            if !matches!(parsed, Ok(Event::Opened(_))) {
                anyhow::bail!("{}:{bad}: {why}", path.display());
            }
            tracing::warn!("{}:{bad}: skipping a line torn by a kill", path.display());
        }
        match parsed {
            Ok(e) => events.push(e),
            Err(e) => torn = Some((n, e.to_string())),
        }
    }
    if let Some((bad, why)) = torn {
        tracing::warn!(
            "{}:{bad}: skipping a torn last line ({why})",
            path.display()
        );
    }
    Ok(Log {
        path: path.to_path_buf(),
        events,
    })
}

/// Reads every `*.jsonl` history file in `dir`, in name order. A missing
/// directory is an empty history.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Log>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    anyhow::ensure!(
        files.len() <= MAX_FILES,
        "{} holds {} history files, more than the {MAX_FILES} a run makes; is it a run's history?",
        dir.display(),
        files.len()
    );
    files.sort();
    files.iter().map(|p| read_file(p)).collect()
}

/// Reads a file from outside the process, refusing one over `max` bytes
/// (`what` names it in the error) before reading more than that: a huge or
/// endless input gets a clear error, not all the memory. Only regular files:
/// a FIFO or a device could block or never end.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "{} is not a regular file; expected {what}",
        path.display()
    );
    anyhow::ensure!(
        meta.len() <= max,
        "{} is {} bytes, over the {max}-byte limit for {what}; is it the right file?",
        path.display(),
        meta.len()
    );
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "{} grew past the {max}-byte limit for {what} while it was read",
        path.display()
    );
    Ok(bytes)
}

/// One request, invoked and completed: the pair the checker and report use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub side: Side,
    pub product: ProductId,
    pub asked: Qty,
    pub granted: Qty,
    /// The trader that answered.
    pub trader: NodeId,
    pub outcome: Outcome,
    pub invoked_us: u64,
    pub completed_us: u64,
    pub latency_us: u64,
    pub lamport_invoked: Lamport,
    pub lamport_completed: Lamport,
}

impl Request {
    pub fn pair(invoke: &Invoke, done: &Complete) -> Request {
        Request {
            id: invoke.id,
            side: invoke.side,
            product: invoke.product,
            asked: invoke.asked,
            granted: done.granted,
            trader: done.trader,
            outcome: done.outcome.clone(),
            invoked_us: invoke.wall_us,
            completed_us: done.wall_us,
            latency_us: done.latency_us,
            lamport_invoked: invoke.lamport,
            lamport_completed: done.lamport,
        }
    }
}

/// A request that was invoked and never completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unanswered {
    pub invoke: Invoke,
    /// Whether the client's history was closed cleanly after it: then the
    /// request really got no answer. Otherwise the client was killed while
    /// waiting, and nobody can say.
    pub closed: bool,
}

/// How one node's history ended: the last view it adopted, and whether it
/// stopped cleanly (its last opening was closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Final {
    pub node: NodeId,
    pub view: Option<View>,
    pub closed: bool,
    /// When its history was closed (its last clean stop).
    pub closed_us: u64,
}

/// A run's histories, sorted out: requests paired, and everything else by kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Completed requests, in order of completion (wall time).
    pub requests: Vec<Request>,
    /// Invokes with no completion.
    pub unanswered: Vec<Unanswered>,
    /// Every invoke, completed or not (to attribute what the warehouse applied).
    pub invokes: Vec<Invoke>,
    /// Completions with no invoke before them in the same history: a broken
    /// history, named by the checker.
    pub orphans: Vec<Complete>,
    /// A second completion of one request.
    pub duplicates: Vec<Complete>,
    pub flushes: Vec<Flush>,
    /// Election results, faults, detections, promotions and retries, in the
    /// order of their wall time.
    pub failover: Vec<Record>,
    /// Every message sent and received, by the node that recorded it (none
    /// in a history from before the trace).
    pub trace: crate::trace::Lines,
    /// Histories that were not closed cleanly (their node was killed).
    pub unclosed: Vec<PathBuf>,
    /// How each node's history ended.
    pub finals: Vec<Final>,
    /// The earliest and latest wall times seen, µs since the epoch (0 if none).
    pub first_us: u64,
    pub last_us: u64,
}

impl History {
    /// Pairs each log's invokes with their completions. Pairing is per
    /// opening of a history (a restarted client numbers its requests afresh).
    pub fn from_logs(logs: &[Log]) -> History {
        use std::collections::{HashMap, HashSet};
        let mut h = History {
            first_us: u64::MAX,
            ..History::default()
        };
        for log in logs {
            let mut open: HashMap<RequestId, Invoke> = HashMap::new();
            let mut done: HashSet<RequestId> = HashSet::new();
            let mut closed = false;
            let mut node = None;
            let mut last_view = None;
            let mut closed_us = 0;
            let end_segment =
                |open: &mut HashMap<RequestId, Invoke>, closed: bool, h: &mut History| {
                    let mut left: Vec<Invoke> = open.drain().map(|(_, i)| i).collect();
                    left.sort_by_key(|i| (i.wall_us, i.id));
                    h.unanswered
                        .extend(left.into_iter().map(|invoke| Unanswered { invoke, closed }));
                };
            for (n, event) in log.events.iter().enumerate() {
                let t = event.wall_us();
                h.first_us = h.first_us.min(t);
                h.last_us = h.last_us.max(t);
                match event {
                    Event::Opened(m) => {
                        // Each life of the node holds its own view.
                        node = Some(m.node);
                        last_view = None;
                        if n > 0 {
                            end_segment(&mut open, closed, &mut h);
                            if !closed {
                                h.unclosed.push(log.path.clone());
                            }
                        }
                        done.clear();
                        closed = false;
                    }
                    Event::Closed(m) => {
                        closed = true;
                        closed_us = m.wall_us;
                    }
                    Event::Invoke(i) => {
                        h.invokes.push(i.clone());
                        open.insert(i.id, i.clone());
                    }
                    Event::Complete(c) => match open.remove(&c.id) {
                        Some(i) => {
                            done.insert(c.id);
                            h.requests.push(Request::pair(&i, c));
                        }
                        None if done.contains(&c.id) => h.duplicates.push(c.clone()),
                        None => h.orphans.push(c.clone()),
                    },
                    Event::Flush(f) => h.flushes.push(f.clone()),
                    Event::Failover(r) => {
                        if let Happening::View { view, .. } = &r.what {
                            last_view = Some(view.clone());
                        }
                        h.failover.push(r.clone());
                    }
                    // Every node's file opens with its mark: a line before
                    // it names no sender or receiver and is left out.
                    Event::Sent(e) => h.trace.sent.extend(node.map(|n| (n, *e))),
                    Event::Received(e) => h.trace.received.extend(node.map(|n| (n, *e))),
                }
            }
            if let Some(node) = node {
                h.finals.push(Final {
                    node,
                    view: last_view,
                    closed,
                    closed_us,
                });
            }
            end_segment(&mut open, closed, &mut h);
            // The launcher's file has no marks; a node's file always opens with one.
            let is_node = matches!(log.events.first(), Some(Event::Opened(_)));
            if is_node && !closed {
                h.unclosed.push(log.path.clone());
            }
        }
        if h.first_us == u64::MAX {
            h.first_us = 0;
        }
        h.requests.sort_by_key(|r| (r.completed_us, r.id));
        h.failover.sort_by_key(|r| r.wall_us);
        h
    }

    /// Every retry at another trader: `(request, recorded at)`.
    pub fn retries(&self) -> impl Iterator<Item = (RequestId, &Record)> {
        self.failover.iter().filter_map(|r| match &r.what {
            Happening::Retried { id, .. } => Some((*id, r)),
            _ => None,
        })
    }

    /// The faults injected: `(victim, record)`.
    pub fn faults(&self) -> impl Iterator<Item = (NodeId, &Record)> {
        self.failover.iter().filter_map(|r| match &r.what {
            Happening::Fault { victim, .. } => Some((*victim, r)),
            _ => None,
        })
    }

    /// The deaths detected: `(dead trader, record of the detector)`.
    pub fn detections(&self) -> impl Iterator<Item = (NodeId, &Record)> {
        self.failover.iter().filter_map(|r| match &r.what {
            Happening::Detected { dead, .. } => Some((*dead, r)),
            _ => None,
        })
    }

    /// Reads and sorts out every history in `dir`.
    pub fn read_dir(dir: &Path) -> anyhow::Result<History> {
        Ok(History::from_logs(&read_dir(dir)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> RequestId {
        RequestId {
            node: NodeId(1),
            seq,
        }
    }

    fn invoke(seq: u64) -> Event {
        Event::Invoke(Invoke {
            id: id(seq),
            side: Side::Buy,
            product: ProductId(0),
            asked: Qty(3),
            trader: NodeId(5),
            wall_us: 10 * seq,
            lamport: Lamport(seq),
        })
    }

    fn complete(seq: u64) -> Event {
        Event::Complete(Complete {
            id: id(seq),
            side: Side::Buy,
            product: ProductId(0),
            asked: Qty(3),
            granted: Qty(2),
            trader: NodeId(6),
            outcome: Outcome::Ok,
            wall_us: 10 * seq + 5,
            lamport: Lamport(seq + 1),
            latency_us: 5,
        })
    }

    #[test]
    fn events_round_trip_through_a_file_and_pair_up() {
        let dir = tempfile::tempdir().unwrap();
        let w = Writer::for_node(dir.path(), NodeId(1)).unwrap();
        for e in [invoke(1), complete(1), invoke(2)] {
            w.append(&e).unwrap();
        }
        w.append(&Event::Failover(Record {
            wall_us: 12,
            lamport: None,
            by: None,
            what: Happening::Fault {
                fault: crate::config::FaultKind::Kill,
                victim: NodeId(6),
            },
        }))
        .unwrap();
        w.close(NodeId(1)).unwrap();
        let logs = read_dir(dir.path()).unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].events.len(), 6);
        let h = History::from_logs(&logs);
        assert_eq!(h.requests.len(), 1);
        assert_eq!(h.requests[0].granted, Qty(2));
        assert_eq!(h.requests[0].trader, NodeId(6));
        assert_eq!(h.requests[0].invoked_us, 10);
        assert_eq!(h.unanswered.len(), 1);
        assert!(h.unanswered[0].closed);
        assert_eq!(h.faults().count(), 1);
        assert!(h.unclosed.is_empty());
    }

    #[test]
    fn a_line_format_is_stable() {
        let line = serde_json::to_string(&complete(7)).unwrap();
        assert_eq!(
            line,
            r#"{"event":"complete","id":{"node":1,"seq":7},"side":"buy","product":0,"asked":3,"granted":2,"trader":6,"outcome":{"kind":"ok"},"wall_us":75,"lamport":8,"latency_us":5}"#
        );
    }

    #[test]
    fn a_restart_after_a_kill_keeps_both_lives_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), NodeId(1));
        {
            let w = Writer::for_node(dir.path(), NodeId(1)).unwrap();
            w.append(&invoke(1)).unwrap();
            w.flush().unwrap();
        }
        // Killed in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"event":"comp"#).unwrap();
        drop(f);
        let w = Writer::for_node(dir.path(), NodeId(1)).unwrap();
        w.append(&invoke(1)).unwrap();
        w.append(&complete(1)).unwrap();
        w.close(NodeId(1)).unwrap();

        let h = History::read_dir(dir.path()).unwrap();
        assert_eq!(h.requests.len(), 1);
        assert_eq!(h.unanswered.len(), 1);
        assert!(!h.unanswered[0].closed, "the first life was killed");
        assert_eq!(h.unclosed, vec![path]);
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer1.jsonl");
        let good = serde_json::to_string(&invoke(1)).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("peer1.jsonl:2"), "{err}");

        std::fs::write(&path, format!("{good}\n{{\"event\":\"warp\"}}\n")).unwrap();
        // A torn *last* line is what a kill leaves: skipped.
        assert_eq!(read_dir(dir.path()).unwrap()[0].events.len(), 1);

        std::fs::write(&path, [0xff, 0xfe, b'\n', b'x', b'\n']).unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("peer1.jsonl:1"), "{err}");

        // A line too long to be an event is refused without parsing it.
        let long = format!("{{\"event\":\"{}\"}}", "x".repeat(MAX_LINE));
        std::fs::write(&path, format!("{long}\n{good}\n")).unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("peer1.jsonl:1") && err.contains("limit"),
            "{err}"
        );
    }

    #[test]
    fn a_bounded_read_refuses_what_is_too_big_or_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(read_bounded(&path, 100, "a test").unwrap().len(), 100);
        let err = read_bounded(&path, 99, "a test").unwrap_err().to_string();
        assert!(
            err.contains("100 bytes, over the 99-byte limit for a test"),
            "{err}"
        );
        let err = read_bounded(dir.path(), 99, "a test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_completion_without_invoke_or_twice_is_kept_apart() {
        let log = Log {
            path: "x".into(),
            events: vec![complete(1), invoke(2), complete(2), complete(2)],
        };
        let h = History::from_logs(&[log]);
        assert_eq!(h.orphans.len(), 1);
        assert_eq!(h.duplicates.len(), 1);
        assert_eq!(h.requests.len(), 1);
        assert!(h.unclosed.is_empty(), "no marks: not a node's history");
    }
}
