//! The ladder view: a connection drawn as a sequence diagram, client on the left, server on
//! the right, time flowing down with the real offsets, arrows for the segments each state
//! change implies.
//!
//! The tracepoint sees states, not packets, so every arrow is inferred from a transition:
//! `ESTABLISHED -> FIN_WAIT1` means this side sent a FIN, `FIN_WAIT1 -> FIN_WAIT2` that an ACK
//! arrived. A segment is drawn once, at whichever end's transition shows it first (on
//! loopback the kernel reports the server's `LISTEN -> SYN_RECV` only when the handshake's
//! last ACK arrives, so the client's `SYN_SENT -> ESTABLISHED` is the first sign of the
//! SYN-ACK). When only one end is on this host, the other is a plain column and every
//! segment this end sent or received is drawn.
//!
//! [`Ladder`] is the model; [`text::render`] draws it for a terminal and `svg` for a browser.
use std::collections::{HashMap, VecDeque};

pub mod svg;
pub mod text;

use crate::{
    clock::WallClock,
    decode::{ContextKind, SockAddr, TcpState, Transition, errno_name},
    table::{CloseClass, Conn, NsTuple, Role},
    units::human_ns,
};

/// One end's column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// `client 127.0.0.1:52940`, `server 127.0.0.1:8080`, `remote 192.0.2.1:443`.
    pub label: String,
    /// `pid 7767 python3`, or empty.
    pub detail: String,
    /// The state before the first event (`CLOSE`, `LISTEN`); `None` for a remote column
    /// (not on this host: nothing is known of its states).
    pub initial: Option<TcpState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub const fn other(self) -> Self {
        match self {
            Self::Left => Self::Right,
            Self::Right => Self::Left,
        }
    }
}

/// A segment between the columns, inferred from a state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrow {
    /// The sender's side.
    pub from: Side,
    /// `SYN`, `SYN-ACK`, `ACK`, `FIN`, `RST`.
    pub label: &'static str,
}

/// One line of the diagram, on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Since the first event of the diagram.
    pub offset_ns: u64,
    pub side: Side,
    /// The state this side entered, on the row of its transition.
    pub state: Option<TcpState>,
    pub arrow: Option<Arrow>,
    /// A context event or an explanation: `RST received`, `expires in 60.00s`.
    pub note: Option<String>,
}

/// A whole diagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladder {
    /// `127.0.0.1:52940 -> 127.0.0.1:8080`.
    pub title: String,
    /// Wall-clock time of the first event, `2026-11-23 22:01:09.992247`.
    pub started: String,
    pub left: Column,
    pub right: Column,
    pub rows: Vec<Row>,
    /// How each side ended, lifetimes, what is unknown.
    pub footer: Vec<String>,
}

/// What a transition says this side sent and received. Order matters: received first (a
/// FIN arrives, then the ACK for it goes out).
fn segments(
    old: TcpState,
    new: TcpState,
    c: &Conn,
) -> (&'static [&'static str], &'static [&'static str]) {
    use TcpState::*;
    match (old, new) {
        (Close, SynSent) => (&[], &["SYN"]),
        (SynSent, Established) => (&["SYN-ACK"], &["ACK"]),
        (SynSent, SynRecv) | (Listen, SynRecv) => (&["SYN"], &["SYN-ACK"]),
        (SynRecv, Established) => (&["ACK"], &[]),
        (Established, FinWait1) | (SynRecv, FinWait1) | (CloseWait, LastAck) => (&[], &["FIN"]),
        (Established, CloseWait) => (&["FIN"], &["ACK"]),
        (FinWait1, FinWait2) | (Closing, _) | (LastAck, Close) => (&["ACK"], &[]),
        // An orphaned FIN_WAIT2 that ended without the peer's FIN (or has not yet).
        (FinWait2, Close)
            if c.orphan.as_deref().is_some_and(|o| {
                !matches!(
                    o.end.map(|e| e.how),
                    Some(crate::table::OrphanHow::Fin { .. })
                )
            }) =>
        {
            (&[], &[])
        }
        (FinWait1, Closing) | (FinWait2, Close | TimeWait) => (&["FIN"], &["ACK"]),
        (FinWait1, Close | TimeWait) if c.resets_received == 0 && c.resets_sent == 0 => {
            (&["ACK", "FIN"], &["ACK"])
        }
        (_, Close) if c.resets_received > 0 => (&["RST"], &[]),
        (_, Close) if c.resets_sent > 0 && old != Listen => (&[], &["RST"]),
        _ => (&[], &[]),
    }
}

/// A segment drawn, waiting for the other end's transition that shows it arrived (or was
/// sent).
struct Open {
    from: Side,
    label: &'static str,
    /// `true`: drawn at the sender, the receiver's transition may match it; `false`: drawn at
    /// the receiver (the sender showed nothing yet), the sender's may match it.
    awaiting_recv: bool,
}

fn column(c: &Conn) -> Column {
    // "unknown socket" reads badly as a column title.
    let role = match c.role {
        Role::Unknown => "socket",
        r => r.name(),
    };
    Column {
        label: format!("{role} {}", crate::units::endpoint(c.tuple.local)),
        detail: c.owner.as_ref().map_or_else(String::new, |o| {
            format!("pid {} {}", o.pid, o.comm.as_str())
        }),
        initial: c.states.first().copied(),
    }
}

fn remote_column(c: &Conn) -> Column {
    Column {
        label: format!("remote {}", crate::units::endpoint(c.tuple.remote)),
        detail: match c.close {
            Some(CloseClass::Refused) => "no socket: nobody listening",
            Some(CloseClass::Unreachable) => "unreachable: an ICMP error came back",
            Some(CloseClass::Timeout) if c.states.contains(&TcpState::Established) => {
                "stopped answering"
            }
            Some(CloseClass::Timeout) => "never answered",
            _ => "no socket traced (another host, or filtered out)",
        }
        .into(),
        initial: None,
    }
}

/// One row per state change and context event of `c`, on `side`.
fn rows_of(c: &Conn, side: Side, out: &mut Vec<(u64, Side, Step)>) {
    for i in 1..c.states.len() {
        let Some(ts) = c.entered_ns.get(i) else {
            continue;
        };
        out.push((
            ts,
            side,
            Step::Transition {
                old: c.states[i - 1],
                new: c.states[i],
            },
        ));
    }
    for n in &c.notes {
        let text = match n.kind {
            // Resets are arrows already (at the CLOSE they cause); the note says when.
            ContextKind::SendReset => "RST sent".to_string(),
            ContextKind::ReceiveReset => "RST received".to_string(),
            ContextKind::Retransmit => "retransmit".to_string(),
            ContextKind::RetransmitSynack => "SYN-ACK retransmit".to_string(),
            ContextKind::Error => format!("error {}", errno_name(n.value)),
            // Freeing is memory management, not protocol: left out of the diagram.
            ContextKind::Destroy => continue,
        };
        out.push((n.ts_ns, side, Step::Note(text)));
    }
    // The tracepoint's CLOSE of an orphaned FIN_WAIT2 is the kernel's bookkeeping, not a
    // segment: a note where it happened; its final CLOSE (the peer's FIN) is where the
    // FIN_WAIT2 really ended.
    if let Some(o) = c.orphan.as_deref().filter(|o| o.handoff_ns != 0) {
        out.push((
            o.handoff_ns,
            side,
            Step::Note("handed to a timewait socket (FIN_WAIT2)".into()),
        ));
        if let Some(end) = o.end.filter(|e| e.how == crate::table::OrphanHow::Timeout) {
            out.push((
                end.ts_ns,
                side,
                Step::Note("FIN_WAIT2 timer: the peer never sent FIN".into()),
            ));
        }
    }
    if let Some(tw) = &c.time_wait
        && tw.confirmed
    {
        let ts = c.end_ns();
        let note = match tw.expires_ns {
            Some(e) => format!(
                "timewait socket, expires in {}",
                human_ns(e.saturating_sub(ts))
            ),
            None => "timewait socket".into(),
        };
        out.push((ts, side, Step::TimeWait(note)));
    }
}

enum Step {
    Transition { old: TcpState, new: TcpState },
    Note(String),
    TimeWait(String),
}

/// Builds the diagram of one connection: both ends when `peer` is given (the same
/// connection's socket at the other end, on this host), else `c` and a remote column.
pub fn build(c: &Conn, peer: Option<&Conn>, clock: &WallClock) -> Ladder {
    // The client (or the side that connected) on the left, as in textbooks.
    let (left, right) = match peer {
        Some(p) if p.role == Role::Client && c.role != Role::Client => (p, Some(c)),
        _ => (c, peer),
    };
    let mut steps = Vec::new();
    rows_of(left, Side::Left, &mut steps);
    if let Some(r) = right {
        rows_of(r, Side::Right, &mut steps);
    }
    // An orphaned FIN_WAIT2 ends at its peer's LAST_ACK, at the same instant: the FIN is
    // the peer's, so its end comes after the peer's row.
    let ends_at_peer_fin = |side: Side, step: &Step| {
        let c = match (side, right) {
            (Side::Right, Some(r)) => r,
            _ => left,
        };
        let peer_fin = c.orphan.as_deref().is_some_and(|o| {
            matches!(
                o.end.map(|e| e.how),
                Some(crate::table::OrphanHow::Fin { peer: true })
            )
        });
        peer_fin
            && matches!(
                step,
                Step::Transition {
                    old: TcpState::FinWait2,
                    new: TcpState::Close
                } | Step::TimeWait(_)
            )
    };
    // Stable: at equal times the left side's transitions stay first.
    steps.sort_by_key(|(ts, side, step)| (*ts, ends_at_peer_fin(*side, step)));
    let t0 = steps.first().map_or(0, |(ts, _, _)| *ts);

    let two_sided = right.is_some();
    let mut open: Vec<Open> = Vec::new();
    let mut rows = Vec::new();
    for (ts, side, step) in steps {
        let offset_ns = ts - t0;
        match step {
            Step::Note(text) => rows.push(Row {
                offset_ns,
                side,
                state: None,
                arrow: None,
                note: Some(text),
            }),
            Step::TimeWait(note) => rows.push(Row {
                offset_ns,
                side,
                state: Some(TcpState::TimeWait),
                arrow: None,
                note: Some(note),
            }),
            Step::Transition { old, new } => {
                let conn = if side == Side::Left {
                    left
                } else {
                    right.unwrap_or(left)
                };
                let (received, sent) = segments(old, new, conn);
                let mut first = Row {
                    offset_ns,
                    side,
                    state: Some(new),
                    arrow: None,
                    note: None,
                };
                let mut extra = Vec::new();
                let place = |arrow: Arrow, first: &mut Row, extra: &mut Vec<Row>| {
                    if first.arrow.is_none() {
                        first.arrow = Some(arrow);
                    } else {
                        extra.push(Row {
                            offset_ns,
                            side,
                            state: None,
                            arrow: Some(arrow),
                            note: None,
                        });
                    }
                };
                for &label in received {
                    let from = side.other();
                    // Already drawn at the sender's transition?
                    if let Some(i) = open
                        .iter()
                        .position(|o| o.from == from && o.label == label && o.awaiting_recv)
                    {
                        open.remove(i);
                        continue;
                    }
                    if two_sided {
                        open.push(Open {
                            from,
                            label,
                            awaiting_recv: false,
                        });
                    }
                    place(Arrow { from, label }, &mut first, &mut extra);
                }
                for &label in sent {
                    if let Some(i) = open
                        .iter()
                        .position(|o| o.from == side && o.label == label && !o.awaiting_recv)
                    {
                        open.remove(i);
                        continue;
                    }
                    if two_sided {
                        open.push(Open {
                            from: side,
                            label,
                            awaiting_recv: true,
                        });
                    }
                    place(Arrow { from: side, label }, &mut first, &mut extra);
                }
                rows.push(first);
                rows.extend(extra);
            }
        }
    }

    let mut footer = Vec::new();
    for conn in [Some(left), right].into_iter().flatten() {
        let mut line = format!(
            "{}: close {}, lifetime {}",
            column(conn).label,
            conn.close.unwrap_or(CloseClass::Unknown).name(),
            human_ns(conn.lifetime_ns()),
        );
        if conn.incomplete {
            line.push_str(
                ", incomplete (events missing: it started before the tracer or events were lost)",
            );
        }
        footer.push(line);
    }
    footer.push(
        "arrows are inferred from the state changes: the tracepoint sees states, not packets"
            .into(),
    );

    Ladder {
        title: format!(
            "{} -> {}{}",
            crate::units::endpoint(left.tuple.local),
            crate::units::endpoint(left.tuple.remote),
            if crate::enrich::netns::is_foreign(left.netns) {
                format!(" netns {}", left.netns)
            } else {
                String::new()
            }
        ),
        started: clock
            .utc(t0)
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string(),
        left: column(left),
        right: match right {
            Some(r) => column(r),
            None => remote_column(left),
        },
        rows,
        footer,
    }
}

/// Most finished connections held while their other end is still open.
const MAX_HELD: usize = 4096;

/// Pairs the two ends of a connection when both are on this host: a socket's record is
/// held until the socket with the reversed 4-tuple in the same network namespace finishes
/// too, as long as that one is still open (it was seen in a transition and has not
/// finished). Containers reuse loopback tuples: two namespaces' connections with the same
/// tuple are two connections. No clock is involved, so a replay pairs exactly as the live
/// run did.
#[derive(Default)]
pub struct Pairer {
    /// Open sockets by their complete 4-tuple and namespace.
    open: HashMap<NsTuple, SockAddr, foldhash::fast::RandomState>,
    /// Finished, waiting for their other end, by their own tuple; `bool`: shown (passed the
    /// output filters).
    held: HashMap<NsTuple, (Conn, bool), foldhash::fast::RandomState>,
    /// Held tuples, oldest first (for the cap).
    order: VecDeque<NsTuple>,
}

/// A connection to draw: one end, and the other if it is on this host.
pub type Pair = (Conn, Option<Conn>);

impl Pairer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn transition(&mut self, t: &Transition) {
        if t.tuple.local.port != 0 && t.tuple.remote.port != 0 && t.new != TcpState::Close {
            self.open.insert(NsTuple::new(t.netns, t.tuple), t.sock);
        }
    }

    /// A finished connection; returns what can be drawn now. Listeners come back alone.
    pub fn finished(&mut self, c: Conn, shown: bool) -> Vec<Pair> {
        let Some(tuple) = c.complete_ns_tuple() else {
            return if shown { vec![(c, None)] } else { Vec::new() };
        };
        if self.open.get(&tuple) == Some(&c.sock) {
            self.open.remove(&tuple);
        }
        if c.role == Role::Listener {
            return if shown { vec![(c, None)] } else { Vec::new() };
        }
        let rev = NsTuple::new(tuple.netns, tuple.tuple.reversed());
        if let Some((peer, peer_shown)) = self.held.remove(&rev) {
            self.order.retain(|t| *t != rev);
            return if shown || peer_shown {
                vec![(peer, Some(c))]
            } else {
                Vec::new()
            };
        }
        if !self.open.contains_key(&rev) {
            return if shown { vec![(c, None)] } else { Vec::new() };
        }
        let mut out = Vec::new();
        if self.held.len() >= MAX_HELD
            && let Some(oldest) = self.order.pop_front()
            && let Some((old, old_shown)) = self.held.remove(&oldest)
            && old_shown
        {
            out.push((old, None));
        }
        self.order.push_back(tuple);
        self.held.insert(tuple, (c, shown));
        out
    }

    /// At exit: everything still held, drawn alone.
    pub fn flush(&mut self) -> Vec<Pair> {
        self.order
            .drain(..)
            .filter_map(|t| self.held.remove(&t))
            .filter(|(_, shown)| *shown)
            .map(|(c, _)| (c, None))
            .collect()
    }
}

/// The ladder of an orphaned FIN_WAIT2 as the table builds it from what this kernel
/// reports: the client closes first, is handed to a timewait socket in FIN_WAIT2 as soon as
/// its FIN is acked (sock_diag finds it there), and the server sends its FIN 300 ms later.
/// For the tests (the unit test of the drawing, the browser check of the SVG).
pub fn orphan_sample() -> Ladder {
    use crate::{
        decode::{Comm, Family, Task},
        table::{NsTuple, Orphan, OrphanEnd, OrphanHow, Table, TimeWait, Tuple},
    };
    use TcpState::*;
    const MS: u64 = 1_000_000;
    let lo: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    let mut comm = [0u8; 16];
    comm[..7].copy_from_slice(b"python3");
    let tr = |sock: u64, ts_ns: u64, old, new, sport, dport| Transition {
        ts_ns,
        sock: SockAddr(sock),
        netns: 4_026_531_840,
        family: Family::Ipv4,
        tuple: Tuple::new(lo, sport, lo, dport),
        old,
        new,
        task: Task {
            pid: 23_511,
            tid: 23_511,
            comm: Comm(comm),
            uid: 0,
            cgroup_id: 0,
        },
        cpu: 0,
        srtt_us: 0,
    };
    let (client, server) = (0xffff_8881_0000_1000, 0xffff_8881_0000_2000);
    let (cport, sport) = (44_334, 48_124);
    let steps = [
        tr(client, 0, Close, SynSent, cport, sport),
        tr(client, 43_200, SynSent, Established, cport, sport),
        tr(server, 50_900, Listen, SynRecv, sport, cport),
        tr(server, 54_900, SynRecv, Established, sport, cport),
        tr(client, 86_400, Established, FinWait1, cport, sport),
        tr(server, 91_600, Established, CloseWait, sport, cport),
        tr(client, 384_600, FinWait1, FinWait2, cport, sport),
        // The handoff: the tracepoint's CLOSE, 3 µs later.
        tr(client, 387_400, FinWait2, Close, cport, sport),
        tr(server, 300 * MS + 270_000, CloseWait, LastAck, sport, cport),
        tr(server, 300 * MS + 340_000, LastAck, Close, sport, cport),
    ];
    let (mut t, mut p) = (Table::new(), Pairer::new());
    for s in &steps {
        p.transition(s);
        t.apply(s);
        if s.sock == SockAddr(client) && s.new == Close {
            // The lookup after the close: its timewait socket, in FIN_WAIT2.
            let key = NsTuple::new(s.netns, s.tuple);
            let found = Orphan {
                handoff_ns: s.ts_ns,
                expires_ns: Some(s.ts_ns + 60_000 * MS),
                end: None,
            };
            t.set_orphan(s.sock, key, found);
        }
    }
    // The lookup after the server's FIN: TIME_WAIT, begun at the server's LAST_ACK.
    let (fin, key) = (steps[8].ts_ns, NsTuple::new(steps[7].netns, steps[7].tuple));
    t.set_orphan(
        SockAddr(client),
        key,
        Orphan {
            handoff_ns: steps[7].ts_ns,
            expires_ns: Some(steps[7].ts_ns + 60_000 * MS),
            end: Some(OrphanEnd {
                ts_ns: fin,
                how: OrphanHow::Fin { peer: true },
            }),
        },
    );
    t.set_time_wait(
        SockAddr(client),
        key,
        Some(TimeWait {
            confirmed: true,
            expires_ns: Some(fin + 60_000 * MS),
        }),
    );
    let mut pairs = Vec::new();
    for c in t.flush() {
        pairs.extend(p.finished(c, true));
    }
    match pairs.pop() {
        Some((a, b)) => build(&a, b.as_ref(), &WallClock::fixed(0)),
        None => unreachable!("both ends finished: one pair"),
    }
}

#[cfg(test)]
mod tests;
