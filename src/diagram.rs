//! A Lamport space-time diagram of a window of a run, drawn as SVG from its
//! history alone (`bazaar diagram`, and the report's diagrams around each
//! fault and of the market's first second).
//!
//! One vertical line per node, time flowing down (wall time, seconds since
//! the run's first history event, as on the report's plots and timeline);
//! one arrow per message of the trace ([`crate::trace`]) from its send to its
//! receive, labelled with its kind, the document's message number and the
//! Lamport stamps at both ends (`buy 6  L12→L15`); hovering an arrow shows
//! its request id and wall times. A message sent and never received ends
//! in a cross halfway; one whose send was not recorded (its sender was
//! killed before its history reached the disk) is dashed from the sender's
//! line at the receive's time; one with an end outside the window is cut at
//! the window's edge. Faults (red), detections (orange) and epoch changes
//! (a dashed line across, where the warehouse committed the new set; a tick
//! where each node adopted it) are marked.
//!
//! [`draw`] is pure: (history, window, nodes) in, SVG text out; a window
//! too full to read, an empty one or an unknown node is a clear
//! [`DiagramError`]. The page fetches nothing (no `url(`, no markers).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use crate::history::History;
use crate::membership::Happening;
use crate::trace::{Kind, Message};
use crate::wire::NodeId;

/// The most messages one diagram draws: beyond it the arrows are a smear
/// and the SVG megabytes; narrow the window or the nodes.
pub const MAX_MESSAGES: usize = 3000;
/// The most node lines one diagram draws.
pub const MAX_NODES: usize = 64;
/// The tallest diagram, in pixels.
const MAX_HEIGHT: f64 = 8000.0;
/// The shortest.
const MIN_HEIGHT: f64 = 360.0;
/// Pixels of height per event drawn (each end of a message, each mark).
const PER_EVENT: f64 = 16.0;
const LEFT: f64 = 80.0;
const COLUMN: f64 = 150.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = 30.0;

/// The part of a run to draw: from `from` to `to` after the run's first
/// history event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
}

impl Window {
    pub fn new(from: Duration, to: Duration) -> Window {
        Window { from, to }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3}–{:.3} s",
            self.from.as_secs_f64(),
            self.to.as_secs_f64()
        )
    }
}

/// Why a diagram was not drawn.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiagramError {
    #[error("the window {window} is empty: --to must be later than --from")]
    EmptyWindow { window: Window },
    #[error("no node {node} in this run; its nodes are {known}")]
    UnknownNode { node: NodeId, known: String },
    #[error(
        "the window {window} holds {messages} messages, more than the {max} a diagram draws; narrow it with --from/--to or --nodes"
    )]
    TooManyMessages {
        window: Window,
        messages: usize,
        max: usize,
    },
    #[error("{nodes} nodes are more than the {max} a diagram draws; pick some with --nodes")]
    TooManyNodes { nodes: usize, max: usize },
}

/// A diagram drawn, and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    pub svg: String,
    /// Messages drawn (one arrow each).
    pub messages: usize,
    /// Messages in the window left out because an end is on a node not drawn.
    pub left_out: usize,
    /// Whether the run's history has a message trace at all (older runs do not).
    pub traced: bool,
}

/// Parses a node as `--nodes` takes it: `warehouse`, `peer5` or `5`.
pub fn parse_node(s: &str) -> Result<NodeId, String> {
    let t = s.trim();
    if t == "warehouse" {
        return Ok(NodeId::WAREHOUSE);
    }
    t.strip_prefix("peer")
        .unwrap_or(t)
        .parse::<u32>()
        .map(NodeId)
        .map_err(|_| format!("{s:?} is not a node: give warehouse, peer5 or 5"))
}

/// The nodes a run's history names: those that wrote a history, sent or
/// received a message, or were struck by a fault.
pub fn nodes_of(history: &History) -> BTreeSet<NodeId> {
    let mut nodes: BTreeSet<NodeId> = history.finals.iter().map(|f| f.node).collect();
    for (by, s) in &history.trace.sent {
        nodes.extend([*by, s.to]);
    }
    for (by, r) in &history.trace.received {
        nodes.extend([*by, r.from]);
    }
    nodes.extend(history.faults().map(|(victim, _)| victim));
    nodes
}

/// A run's history ready to draw: its messages paired once, for several
/// diagrams.
pub struct Run<'a> {
    history: &'a History,
    messages: Vec<Message>,
    nodes: BTreeSet<NodeId>,
}

/// Draws `window` of the run in `history`, with the lines of `only` (in
/// that order) or of every node.
pub fn draw(
    history: &History,
    window: Window,
    only: Option<&[NodeId]>,
) -> Result<Drawn, DiagramError> {
    Run::new(history).draw(window, only)
}

/// A mark on a node's line.
struct Mark {
    node: NodeId,
    at_us: u64,
    class: &'static str,
    text: String,
}

impl<'a> Run<'a> {
    pub fn new(history: &'a History) -> Self {
        Run {
            history,
            messages: history.trace.messages(),
            nodes: nodes_of(history),
        }
    }

    /// Every node of the run, ascending.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().copied()
    }

    /// The messages with an end in `[from_us, to_us]` (absolute wall µs).
    fn in_window(&self, from_us: u64, to_us: u64) -> impl Iterator<Item = &Message> {
        let inside = move |t: u64| t >= from_us && t <= to_us;
        self.messages.iter().filter(move |m| {
            m.sent.is_some_and(|e| inside(e.wall_us))
                || m.received.is_some_and(|e| inside(e.wall_us))
        })
    }

    /// How many messages `window` holds, on any nodes.
    pub fn count(&self, window: Window) -> usize {
        let (from_us, to_us) = self.absolute(window);
        self.in_window(from_us, to_us).count()
    }

    fn absolute(&self, w: Window) -> (u64, u64) {
        let base = self.history.first_us;
        (
            base.saturating_add(w.from.as_micros() as u64),
            base.saturating_add(w.to.as_micros() as u64),
        )
    }

    /// Draws `window` with the lines of `only` (in that order), or of every node.
    pub fn draw(&self, window: Window, only: Option<&[NodeId]>) -> Result<Drawn, DiagramError> {
        if window.to <= window.from {
            return Err(DiagramError::EmptyWindow { window });
        }
        let columns: Vec<NodeId> = match only {
            Some(list) => {
                let mut seen = BTreeSet::new();
                for n in list {
                    if !self.nodes.contains(n) {
                        return Err(DiagramError::UnknownNode {
                            node: *n,
                            known: known(&self.nodes),
                        });
                    }
                    seen.insert(*n);
                }
                list.iter().copied().filter(|n| seen.remove(n)).collect()
            }
            None => self.nodes.iter().copied().collect(),
        };
        if columns.len() > MAX_NODES {
            return Err(DiagramError::TooManyNodes {
                nodes: columns.len(),
                max: MAX_NODES,
            });
        }
        let (from_us, to_us) = self.absolute(window);
        let drawn_on = |n: NodeId| columns.contains(&n);
        let mut left_out = 0;
        let mut messages: Vec<&Message> = Vec::new();
        for m in self.in_window(from_us, to_us) {
            if drawn_on(m.from) && drawn_on(m.to) {
                messages.push(m);
            } else {
                left_out += 1;
            }
        }
        if messages.len() > MAX_MESSAGES {
            return Err(DiagramError::TooManyMessages {
                window,
                messages: messages.len(),
                max: MAX_MESSAGES,
            });
        }
        let marks: Vec<Mark> = self
            .marks(from_us, to_us)
            .into_iter()
            .filter(|k| drawn_on(k.node) || k.class == "epoch")
            .collect();
        let times = messages
            .iter()
            .flat_map(|m| [m.sent, m.received])
            .flatten()
            .map(|e| e.wall_us)
            .chain(marks.iter().map(|k| k.at_us))
            .collect();
        let svg = Canvas::new(&columns, window, from_us, to_us, times).render(
            &messages,
            &marks,
            left_out,
            !self.history.trace.is_empty(),
        );
        Ok(Drawn {
            svg,
            messages: messages.len(),
            left_out,
            traced: !self.history.trace.is_empty(),
        })
    }

    /// Faults, detections and epoch changes in `[from_us, to_us]`.
    fn marks(&self, from_us: u64, to_us: u64) -> Vec<Mark> {
        let mut marks = Vec::new();
        for r in &self.history.failover {
            let mut at_us = r.wall_us;
            let (node, class, text) = match &r.what {
                Happening::Fault { fault, victim } => (
                    *victim,
                    "fault",
                    format!("{fault:?} {victim}").to_lowercase(),
                ),
                Happening::Detected { dead, found_us, .. } => {
                    let Some(by) = r.by else { continue };
                    if *found_us != 0 {
                        at_us = *found_us;
                    }
                    (by, "detection", format!("found {dead} dead"))
                }
                Happening::Committed { view, .. } => {
                    let by = r.by.unwrap_or(NodeId::WAREHOUSE);
                    (by, "epoch", format!("committed {view}"))
                }
                Happening::View { view, .. } => {
                    let Some(by) = r.by else { continue };
                    (by, "adopt", format!("e{}", view.epoch.0))
                }
                Happening::Deposed { view } => {
                    let Some(by) = r.by else { continue };
                    (by, "detection", format!("deposed by {}", view.epoch))
                }
                _ => continue,
            };
            if at_us >= from_us && at_us <= to_us {
                marks.push(Mark {
                    node,
                    at_us,
                    class,
                    text,
                });
            }
        }
        marks
    }
}

fn known(nodes: &BTreeSet<NodeId>) -> String {
    if nodes.is_empty() {
        return "none (the run's history is empty)".into();
    }
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A colour per family of messages.
fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Refused => "#d62728",
        Kind::Buy | Kind::Sell | Kind::Granted | Kind::Deposited => "#1f77b4",
        Kind::WarehouseBuy
        | Kind::WarehouseSell
        | Kind::Lookup
        | Kind::Flush
        | Kind::Stock
        | Kind::Flushed => "#2ca02c",
        Kind::Heartbeat | Kind::HeartbeatAck => "#9467bd",
        _ => "#7f7f7f",
    }
}

/// Geometry: where a node's line and a time are.
///
/// Time runs down in event order: every distinct time at which something is
/// drawn (a send, a receive, a mark) gets a row of its own, and times in
/// between are placed proportionally between their rows. So a burst of
/// messages a few µs apart on loopback reads as well as a quiet stretch,
/// while the order of events (and with it causality) is kept exactly; the
/// axis on the left gives the wall time.
struct Canvas<'c> {
    columns: &'c [NodeId],
    window: Window,
    from_us: u64,
    to_us: u64,
    /// The distinct times drawn, ascending (absolute wall µs, in the window).
    times: Vec<u64>,
    height: f64,
}

impl<'c> Canvas<'c> {
    fn new(
        columns: &'c [NodeId],
        window: Window,
        from_us: u64,
        to_us: u64,
        mut times: Vec<u64>,
    ) -> Self {
        times.retain(|t| *t >= from_us && *t <= to_us);
        times.sort_unstable();
        times.dedup();
        let height = ((times.len() + 1) as f64 * PER_EVENT).clamp(MIN_HEIGHT, MAX_HEIGHT);
        Canvas {
            columns,
            window,
            from_us,
            to_us,
            times,
            height,
        }
    }

    fn x(&self, node: NodeId) -> f64 {
        let i = self.columns.iter().position(|n| *n == node).unwrap_or(0);
        LEFT + COLUMN * (i as f64 + 0.5)
    }

    /// The y of wall time `us`: its row, or between the rows of the times
    /// around it; the window's edges for times outside it.
    fn y(&self, us: u64) -> f64 {
        if us < self.from_us {
            return TOP;
        }
        if us > self.to_us {
            return self.bottom();
        }
        let n = self.times.len();
        let row = self.height / (n + 1) as f64;
        // Knots: the window's start, each time's row, the window's end.
        let knot = |i: usize| -> (u64, f64) {
            match i {
                0 => (self.from_us, TOP),
                i if i <= n => (self.times[i - 1], TOP + row * i as f64),
                _ => (self.to_us, self.bottom()),
            }
        };
        let i = self.times.partition_point(|t| *t < us);
        if i < n && self.times[i] == us {
            return knot(i + 1).1;
        }
        let ((t0, y0), (t1, y1)) = (knot(i), knot(i + 1));
        if t1 <= t0 {
            return y0;
        }
        y0 + (y1 - y0) * (us - t0) as f64 / (t1 - t0) as f64
    }

    fn bottom(&self) -> f64 {
        TOP + self.height
    }

    fn render(
        &self,
        messages: &[&Message],
        marks: &[Mark],
        left_out: usize,
        traced: bool,
    ) -> String {
        // Room on the right for a mark's text on the last line.
        let width = LEFT + COLUMN * self.columns.len() as f64 + 130.0;
        let total = self.bottom() + BOTTOM;
        let mut s = String::with_capacity(1024 + messages.len() * 400);
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"diagram\" width=\"{width:.0}\" height=\"{total:.0}\" \
             viewBox=\"0 0 {width:.0} {total:.0}\" font-family=\"sans-serif\" font-size=\"10\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let mut title = format!("{} messages, {}", messages.len(), self.window);
        if left_out > 0 {
            let _ = write!(title, " ({left_out} more to or from nodes not drawn)");
        }
        if !traced {
            title.push_str(": this run's history has no message trace");
        }
        let _ = writeln!(
            s,
            "<text x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>",
            esc(&title)
        );
        let _ = writeln!(
            s,
            "<text x=\"{LEFT}\" y=\"34\" fill=\"#555\">arrows: send → receive, \"kind msg  Lamport at send→at receive\"; \
             dashed: a reply; × never received; red: fault; orange: detection; dashed line: epoch committed</text>"
        );
        self.axis(&mut s);
        for n in self.columns {
            let x = self.x(*n);
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"bold\">{n}</text>\n\
                 <line class=\"node\" x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-width=\"1.5\"/>",
                TOP - 12.0,
                self.bottom()
            );
        }
        for k in marks {
            self.mark(&mut s, k);
        }
        for m in messages {
            self.arrow(&mut s, m);
        }
        s.push_str("</svg>\n");
        s
    }

    /// The time axis on the left, in seconds since the run's first event:
    /// the window's ends, and a row's time every few rows.
    fn axis(&self, s: &mut String) {
        let right = LEFT + COLUMN * self.columns.len() as f64;
        let label = |s: &mut String, us: u64, y: f64| {
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{:.4} s</text>",
                LEFT - 6.0,
                LEFT - 8.0,
                y + 3.0,
                self.secs(us)
            );
        };
        label(s, self.from_us, TOP);
        let mut last = TOP;
        for t in &self.times {
            let y = self.y(*t);
            if y - last >= 48.0 && self.bottom() - y >= 24.0 {
                label(s, *t, y);
                last = y;
            }
        }
        label(s, self.to_us, self.bottom());
    }

    fn mark(&self, s: &mut String, k: &Mark) {
        let y = self.y(k.at_us);
        let text = esc(&k.text);
        match k.class {
            "epoch" => {
                let right = LEFT + COLUMN * self.columns.len() as f64;
                let _ = writeln!(
                    s,
                    "<g class=\"mark epoch\"><line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" \
                     stroke=\"#8c564b\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#8c564b\" \
                     text-anchor=\"end\">{text}</text></g>",
                    right,
                    y - 3.0
                );
            }
            "adopt" => {
                let x = self.x(k.node);
                let _ = writeln!(
                    s,
                    "<g class=\"mark adopt\"><line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
                     stroke=\"#8c564b\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#8c564b\" font-size=\"9\">{text}</text></g>",
                    x - 6.0,
                    x + 6.0,
                    x + 8.0,
                    y + 3.0
                );
            }
            class => {
                let x = self.x(k.node);
                let c = if class == "fault" {
                    "#d62728"
                } else {
                    "#ff7f0e"
                };
                let _ = writeln!(
                    s,
                    "<g class=\"mark {class}\"><path d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" \
                     stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\" \
                     font-size=\"11\" font-weight=\"bold\">{text}</text></g>",
                    x - 7.0,
                    y - 7.0,
                    x + 7.0,
                    y + 7.0,
                    x - 7.0,
                    y + 7.0,
                    x + 7.0,
                    y - 7.0,
                    x + 10.0,
                    y - 6.0
                );
            }
        }
    }

    fn arrow(&self, s: &mut String, m: &Message) {
        let (x1, x2) = (self.x(m.from), self.x(m.to));
        let c = colour(m.kind);
        let msg = m.kind.msg().map_or(String::new(), |n| format!(" {n}"));
        let at_receive = m
            .received
            .map_or("?".to_string(), |r| r.lamport.0.to_string());
        let label = format!("{}{msg}  L{}→{at_receive}", m.kind.name(), m.stamp.0);
        let mut class = String::from("msg");
        // Where the line starts and ends, before clipping to the window.
        let (y1, mut end, lost) = match (m.sent, m.received) {
            (Some(a), Some(b)) => (self.y(a.wall_us), (x2, self.y(b.wall_us)), false),
            (Some(a), None) => {
                let y = self.y(a.wall_us);
                (y, (x1 + (x2 - x1) * 0.5, y + 10.0), true)
            }
            (None, Some(b)) => {
                class.push_str(" unsent");
                (self.y(b.wall_us), (x2, self.y(b.wall_us)), false)
            }
            (None, None) => return,
        };
        let mut start = (x1, y1);
        // An end outside the window: cut at the window's edge, short of the
        // other node's line.
        let before = m.sent.is_some_and(|e| e.wall_us < self.from_us);
        let after = m.received.is_some_and(|e| e.wall_us > self.to_us);
        if before {
            start = (x1 + (x2 - x1) * 0.15, TOP);
        }
        if after {
            end = (x1 + (x2 - x1) * 0.85, self.bottom());
        }
        let clipped = before || after;
        if lost {
            class.push_str(" lost");
        }
        if clipped {
            class.push_str(" clipped");
        }
        let dash = if m.kind.is_reply() || m.sent.is_none() {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let id = m.id.map_or(String::new(), |i| format!(" request {i}"));
        let walls = format!(
            "sent {} received {}",
            m.sent.map_or("(not recorded)".into(), |e| format!(
                "{:.6} s",
                self.secs(e.wall_us)
            )),
            m.received.map_or("(never)".into(), |e| format!(
                "{:.6} s",
                self.secs(e.wall_us)
            ))
        );
        let _ = write!(
            s,
            "<g class=\"{class}\" stroke=\"{c}\"><title>{} → {}: {}{id}; {walls}</title>\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke-width=\"1.2\"{dash}/>",
            m.from,
            m.to,
            esc(&label),
            start.0,
            start.1,
            end.0,
            end.1
        );
        if lost && !clipped {
            let (x, y) = end;
            let _ = write!(
                s,
                "<path d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" stroke-width=\"2\"/>",
                x - 4.0,
                y - 4.0,
                x + 4.0,
                y + 4.0,
                x - 4.0,
                y + 4.0,
                x + 4.0,
                y - 4.0
            );
        } else if !clipped {
            // An arrowhead along the line, drawn (no marker: nothing by url()).
            let (dx, dy) = (end.0 - start.0, end.1 - start.1);
            let len = (dx * dx + dy * dy).sqrt().max(1e-9);
            let (ux, uy) = (dx / len, dy / len);
            let (bx, by) = (end.0 - ux * 8.0, end.1 - uy * 8.0);
            let _ = write!(
                s,
                "<polygon points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{c}\" stroke=\"none\"/>",
                end.0,
                end.1,
                bx - uy * 3.5,
                by + ux * 3.5,
                bx + uy * 3.5,
                by - ux * 3.5
            );
        }
        let (lx, ly) = (
            start.0 + (end.0 - start.0) * 0.35,
            start.1 + (end.1 - start.1) * 0.35,
        );
        let _ = writeln!(
            s,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" fill=\"{c}\" stroke=\"none\" text-anchor=\"middle\">{}</text></g>",
            ly - 2.0,
            esc(&label)
        );
    }

    fn secs(&self, us: u64) -> f64 {
        self.window.from.as_secs_f64() + (us as f64 - self.from_us as f64) / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Lamport;
    use crate::history::{Event, Log, Mark as HMark};
    use crate::membership::Record;
    use crate::trace::{Received, Sent};
    use crate::wire::{Epoch, View};

    const MS: u64 = 1000;

    fn sent(at_ms: u64, lamport: u64, to: u32, kind: Kind) -> Event {
        Event::Sent(Sent {
            wall_us: at_ms * MS,
            lamport: Lamport(lamport),
            to: NodeId(to),
            msg: kind.msg(),
            kind,
            id: None,
        })
    }

    fn received(at_ms: u64, from: u32, stamp: u64, kind: Kind) -> Event {
        Event::Received(Received {
            wall_us: at_ms * MS,
            lamport: Lamport(stamp + 1),
            from: NodeId(from),
            sent_lamport: Lamport(stamp),
            msg: kind.msg(),
            kind,
            id: None,
        })
    }

    fn log(node: u32, mut events: Vec<Event>) -> Log {
        events.insert(
            0,
            Event::Opened(HMark {
                node: NodeId(node),
                wall_us: 0,
            }),
        );
        Log {
            path: format!("peer{node}.jsonl").into(),
            events,
        }
    }

    /// Peer 1 buys at trader 6 at 100 ms (answered at 102 ms), again at
    /// 900 ms (answered at 990 ms, the reply arriving at 1 100 ms), and at
    /// 950 ms a buy that is never received; trader 6 is killed at 500 ms and
    /// found dead by 5 at 800 ms; the warehouse commits epoch 2 at 850 ms.
    fn history() -> History {
        let peer1 = log(
            1,
            vec![
                sent(100, 1, 6, Kind::Buy),
                received(102, 6, 2, Kind::Granted),
                sent(900, 4, 6, Kind::Buy),
                received(1100, 6, 6, Kind::Granted),
                sent(950, 6, 6, Kind::Buy),
            ],
        );
        let peer6 = log(
            6,
            vec![
                received(101, 1, 1, Kind::Buy),
                sent(101, 2, 1, Kind::Granted),
                received(901, 1, 4, Kind::Buy),
                sent(990, 6, 1, Kind::Granted),
            ],
        );
        let rec = |ms: u64, by: Option<u32>, what: Happening| {
            Event::Failover(Record {
                wall_us: ms * MS,
                lamport: None,
                by: by.map(NodeId),
                what,
            })
        };
        let peer5 = log(
            5,
            vec![rec(
                820,
                Some(5),
                Happening::Detected {
                    dead: NodeId(6),
                    cause: "silent".into(),
                    traders: vec![NodeId(5)],
                    promoted: None,
                    found_us: 800 * MS,
                },
            )],
        );
        let view = View {
            epoch: Epoch(2),
            traders: vec![NodeId(5)],
        };
        let warehouse = Log {
            path: "warehouse.jsonl".into(),
            events: vec![
                Event::Opened(HMark {
                    node: NodeId(0),
                    wall_us: 0,
                }),
                rec(
                    850,
                    Some(0),
                    Happening::Committed {
                        view,
                        proposer: NodeId(5),
                        cause: "peer6 silent".into(),
                    },
                ),
            ],
        };
        let launcher = Log {
            path: "launcher.jsonl".into(),
            events: vec![rec(
                500,
                None,
                Happening::Fault {
                    fault: crate::config::FaultKind::Kill,
                    victim: NodeId(6),
                },
            )],
        };
        History::from_logs(&[launcher, peer1, peer5, peer6, warehouse])
    }

    fn window(from_ms: u64, to_ms: u64) -> Window {
        Window::new(Duration::from_millis(from_ms), Duration::from_millis(to_ms))
    }

    fn arrows(svg: &str) -> usize {
        svg.matches("<g class=\"msg").count()
    }

    #[test]
    fn one_arrow_per_message_in_the_window() {
        let h = history();
        let d = draw(&h, window(0, 1000), None).unwrap();
        // Two buys, their replies, the lost buy.
        assert_eq!(d.messages, 5);
        assert_eq!(arrows(&d.svg), 5);
        assert!(d.traced);
        assert_eq!(d.svg.matches("class=\"node\"").count(), 4, "0, 1, 5, 6");
        assert!(
            d.svg.contains("buy 6  L1→2"),
            "label with kind, msg, stamps"
        );
        let d = draw(&h, window(0, 200), None).unwrap();
        assert_eq!(arrows(&d.svg), 2);
        let d = draw(&h, window(1050, 1200), None).unwrap();
        assert_eq!(arrows(&d.svg), 1, "only the late reply");
    }

    #[test]
    fn a_message_received_after_the_window_is_cut_at_its_edge() {
        let d = draw(&history(), window(800, 1000), None).unwrap();
        assert_eq!(d.messages, 3, "the buy at 900 ms, its reply, the lost one");
        assert_eq!(d.svg.matches("class=\"msg clipped\"").count(), 1);
        assert_eq!(d.svg.matches("class=\"msg lost\"").count(), 1);
        // The clipped one ends at the window's bottom edge.
        let bottom = TOP + MIN_HEIGHT;
        assert!(d.svg.contains(&format!("y2=\"{bottom:.1}\"")), "{}", d.svg);
    }

    #[test]
    fn faults_detections_and_epochs_are_marked() {
        let d = draw(&history(), window(0, 1000), None).unwrap();
        assert!(d.svg.contains("class=\"mark fault\""));
        assert!(d.svg.contains("kill peer6"));
        assert!(d.svg.contains("class=\"mark detection\""));
        assert!(d.svg.contains("found peer6 dead"));
        assert!(d.svg.contains("class=\"mark epoch\""));
        assert!(d.svg.contains("committed epoch 2 {peer5}"));
        let d = draw(&history(), window(0, 400), None).unwrap();
        assert!(!d.svg.contains("class=\"mark"), "none before 400 ms");
    }

    #[test]
    fn a_node_filter_draws_only_messages_between_its_nodes() {
        let h = history();
        let only = [NodeId(6), NodeId(1)];
        let d = draw(&h, window(0, 1000), Some(&only)).unwrap();
        assert_eq!(arrows(&d.svg), 5);
        // Peer 6's line comes first, as asked.
        let six = d.svg.find(">peer6<").unwrap();
        let one = d.svg.find(">peer1<").unwrap();
        assert!(six < one);
        let d = draw(&h, window(0, 1000), Some(&[NodeId(1), NodeId(5)])).unwrap();
        assert_eq!(arrows(&d.svg), 0);
        assert_eq!(d.left_out, 5);
        assert!(d.svg.contains("5 more to or from nodes not drawn"));
    }

    #[test]
    fn bad_requests_get_clear_errors() {
        let h = history();
        let err = draw(&h, window(0, 1000), Some(&[NodeId(9)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no node peer9 in this run; its nodes are warehouse, peer1, peer5, peer6"
        );
        let err = draw(&h, window(500, 500), None).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        assert_eq!(parse_node("warehouse"), Ok(NodeId(0)));
        assert_eq!(parse_node("peer5"), Ok(NodeId(5)));
        assert_eq!(parse_node(" 7"), Ok(NodeId(7)));
        assert!(parse_node("trader").unwrap_err().contains("not a node"));
    }

    #[test]
    fn a_window_too_full_is_refused() {
        let many: Vec<Event> = (0..=MAX_MESSAGES as u64)
            .map(|i| sent(1 + i / 100, i + 1, 6, Kind::Heartbeat))
            .collect();
        let h = History::from_logs(&[log(5, many), log(6, vec![])]);
        let err = draw(&h, window(0, 1000), None).unwrap_err();
        assert!(
            matches!(err, DiagramError::TooManyMessages { messages, .. } if messages == MAX_MESSAGES + 1),
            "{err}"
        );
        assert!(err.to_string().contains("narrow it"), "{err}");
    }

    #[test]
    fn a_history_without_trace_draws_its_nodes_and_says_so() {
        let h = History::from_logs(&[log(1, vec![]), log(2, vec![])]);
        let d = draw(&h, window(0, 1000), None).unwrap();
        assert_eq!(d.messages, 0);
        assert!(!d.traced);
        assert!(d.svg.contains("no message trace"));
        assert_eq!(d.svg.matches("class=\"node\"").count(), 2);
    }

    #[test]
    fn the_svg_fetches_nothing_and_escapes_text() {
        let d = draw(&history(), window(0, 1000), None).unwrap();
        for bad in ["url(", "href", "<script"] {
            assert!(!d.svg.contains(bad), "{bad}");
        }
        assert_eq!(esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}
