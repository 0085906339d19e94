//! The connection table: transitions in, per-socket timelines out.
//!
//! Pure logic, no I/O and no clock of its own: everything it knows comes from the events.
//! A socket is identified by its kernel address while it lives. Its timeline starts at the
//! first event seen for it and ends when it reaches CLOSE; the address may then be reused by a
//! new socket (the kernel frees and reallocates `struct sock`s all the time), so the entry is
//! dropped at CLOSE and a later event at that address starts a new timeline.
use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use crate::decode::{Family, SockAddr, TcpState, Transition};

/// How the socket came to exist, from its first transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Began CLOSE → SYN_SENT: `connect()`.
    Client,
    /// Began LISTEN → SYN_RECV: a child of a listener, for one incoming connection.
    Server,
    /// Began CLOSE → LISTEN: `listen()`.
    Listener,
    /// Anything else, e.g. a socket that existed before the tracer started.
    Unknown,
}

impl Role {
    fn from_first(old: TcpState, new: TcpState) -> Self {
        match (old, new) {
            (TcpState::Close, TcpState::SynSent) => Self::Client,
            (TcpState::Listen, TcpState::SynRecv) => Self::Server,
            (TcpState::Close, TcpState::Listen) => Self::Listener,
            _ => Self::Unknown,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::Listener => "listener",
            Self::Unknown => "unknown",
        }
    }
}

/// A socket's timeline so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    pub sock: SockAddr,
    pub family: Family,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub role: Role,
    /// The state before the first event, then every new state in order.
    pub states: Vec<TcpState>,
    /// When each state was entered; `None` for the first (it predates the first event).
    pub entered_ns: Vec<Option<u64>>,
    /// Events are missing from this timeline: it started mid-way (the socket predates the
    /// tracer), or an event's old state did not match the state we had (events were lost).
    pub incomplete: bool,
}

impl Conn {
    pub fn start_ns(&self) -> u64 {
        self.entered_ns
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap_or(0)
    }

    pub fn end_ns(&self) -> u64 {
        self.entered_ns.last().copied().flatten().unwrap_or(0)
    }

    /// Time spent in each state but the last; `None` where the entry time is unknown.
    pub fn durations_ns(&self) -> Vec<Option<u64>> {
        self.entered_ns
            .windows(2)
            .map(|w| match (w[0], w[1]) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            })
            .collect()
    }

    pub fn lifetime_ns(&self) -> u64 {
        self.end_ns().saturating_sub(self.start_ns())
    }

    fn last_state(&self) -> TcpState {
        *self
            .states
            .last()
            .expect("a Conn always has at least two states")
    }
}

/// What one transition did to the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// Time spent in the old state, when the table saw the socket enter it.
    pub in_old_ns: Option<u64>,
    /// A connection that this transition finished (it reached CLOSE).
    pub closed: Option<Conn>,
    /// A connection cut short: the address was reused by a new socket before we saw its
    /// CLOSE (an event was lost). Reported as incomplete.
    pub superseded: Option<Conn>,
}

/// Every live socket, by kernel address.
#[derive(Debug, Default)]
pub struct Table {
    conns: HashMap<SockAddr, Conn>,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Sockets still open (not yet at CLOSE), in no particular order.
    pub fn open(&self) -> impl Iterator<Item = &Conn> {
        self.conns.values()
    }

    pub fn apply(&mut self, t: &Transition) -> Applied {
        let mut superseded = None;
        let mut in_old_ns = None;
        let starts_new = |c: &Conn| c.last_state() != t.old && t.old == TcpState::Close;
        if let Some(c) = self.conns.get(&t.sock)
            && starts_new(c)
        {
            // CLOSE → X on an address whose socket never reached CLOSE for us: that socket's
            // CLOSE was lost and this is a new socket at the same address.
            let mut old = self.conns.remove(&t.sock).expect("checked above");
            old.incomplete = true;
            superseded = Some(old);
        }
        match self.conns.get_mut(&t.sock) {
            // The kernel reports X → X too (e.g. shutdown(SHUT_WR) then close() gives
            // FIN_WAIT1 → FIN_WAIT1). The transition is shown as reported; the timeline does
            // not gain a state, and time in X keeps counting from when X was entered.
            Some(c) if t.old == t.new && c.last_state() == t.new => {
                in_old_ns = c
                    .entered_ns
                    .last()
                    .copied()
                    .flatten()
                    .map(|e| t.ts_ns.saturating_sub(e));
                fill_tuple(c, t);
            }
            Some(c) => {
                if c.last_state() != t.old {
                    // A gap: at least one transition of this socket was not seen.
                    c.incomplete = true;
                    c.states.push(t.old);
                    c.entered_ns.push(None);
                } else {
                    in_old_ns = c
                        .entered_ns
                        .last()
                        .copied()
                        .flatten()
                        .map(|e| t.ts_ns.saturating_sub(e));
                }
                c.states.push(t.new);
                c.entered_ns.push(Some(t.ts_ns));
                fill_tuple(c, t);
            }
            None => {
                let role = Role::from_first(t.old, t.new);
                self.conns.insert(
                    t.sock,
                    Conn {
                        sock: t.sock,
                        family: t.family,
                        saddr: t.saddr,
                        sport: t.sport,
                        daddr: t.daddr,
                        dport: t.dport,
                        role,
                        states: vec![t.old, t.new],
                        entered_ns: vec![None, Some(t.ts_ns)],
                        incomplete: role == Role::Unknown,
                    },
                );
            }
        }
        let closed = (t.new == TcpState::Close)
            .then(|| self.conns.remove(&t.sock))
            .flatten();
        Applied {
            in_old_ns,
            closed,
            superseded,
        }
    }
}

/// Ports and addresses become known along the way (a client's local port is still 0 at
/// CLOSE → SYN_SENT): take every non-zero value the kernel reports.
fn fill_tuple(c: &mut Conn, t: &Transition) {
    if t.sport != 0 {
        c.sport = t.sport;
    }
    if t.dport != 0 {
        c.dport = t.dport;
    }
    if !t.saddr.is_unspecified() {
        c.saddr = t.saddr;
    }
    if !t.daddr.is_unspecified() {
        c.daddr = t.daddr;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::{Comm, TcpState::*};

    pub(crate) fn tr(
        sock: u64,
        ts: u64,
        old: TcpState,
        new: TcpState,
        sport: u16,
        dport: u16,
    ) -> Transition {
        Transition {
            ts_ns: ts,
            sock: SockAddr(sock),
            family: Family::Ipv4,
            saddr: "127.0.0.1".parse().unwrap(),
            sport,
            daddr: if dport == 0 {
                "0.0.0.0".parse().unwrap()
            } else {
                "127.0.0.1".parse().unwrap()
            },
            dport,
            old,
            new,
            pid: 7,
            tid: 7,
            comm: Comm::default(),
            cpu: 0,
        }
    }

    fn run(table: &mut Table, events: &[Transition]) -> Vec<Conn> {
        let mut out = Vec::new();
        for e in events {
            let a = table.apply(e);
            out.extend(a.superseded);
            out.extend(a.closed);
        }
        out
    }

    #[test]
    fn client_closing_first_fills_its_port_and_times_each_state() {
        let mut t = Table::new();
        let done = run(
            &mut t,
            &[
                tr(1, 100, Close, SynSent, 0, 8080),
                tr(1, 150, SynSent, Established, 40000, 8080),
                tr(1, 1150, Established, FinWait1, 40000, 8080),
                tr(1, 1160, FinWait1, FinWait2, 40000, 8080),
                tr(1, 1400, FinWait2, Close, 40000, 8080),
            ],
        );
        assert_eq!(done.len(), 1);
        let c = &done[0];
        assert_eq!(c.role, Role::Client);
        assert_eq!(
            c.states,
            [Close, SynSent, Established, FinWait1, FinWait2, Close]
        );
        assert_eq!(
            c.durations_ns(),
            [None, Some(50), Some(1000), Some(10), Some(240)]
        );
        assert_eq!(
            (c.start_ns(), c.end_ns(), c.lifetime_ns()),
            (100, 1400, 1300)
        );
        assert_eq!((c.sport, c.dport), (40000, 8080));
        assert!(!c.incomplete);
        assert!(t.is_empty(), "CLOSE frees the entry");
    }

    #[test]
    fn in_old_is_the_time_since_the_previous_transition() {
        let mut t = Table::new();
        assert_eq!(t.apply(&tr(1, 100, Close, SynSent, 0, 80)).in_old_ns, None);
        assert_eq!(
            t.apply(&tr(1, 130, SynSent, Established, 5, 80)).in_old_ns,
            Some(30)
        );
    }

    #[test]
    fn roles() {
        let mut t = Table::new();
        t.apply(&tr(1, 1, Close, SynSent, 0, 80));
        t.apply(&tr(2, 1, Listen, SynRecv, 80, 5));
        t.apply(&tr(3, 1, Close, Listen, 80, 0));
        t.apply(&tr(4, 1, Established, CloseWait, 80, 5));
        let mut roles: Vec<_> = t.open().map(|c| (c.sock.0, c.role, c.incomplete)).collect();
        roles.sort_by_key(|r| r.0);
        assert_eq!(
            roles,
            [
                (1, Role::Client, false),
                (2, Role::Server, false),
                (3, Role::Listener, false),
                (4, Role::Unknown, true)
            ]
        );
    }

    #[test]
    fn server_closing_first_and_listener() {
        let mut t = Table::new();
        let done = run(
            &mut t,
            &[
                tr(9, 1, Close, Listen, 80, 0),
                tr(2, 10, Listen, SynRecv, 80, 5000),
                tr(2, 20, SynRecv, Established, 80, 5000),
                tr(2, 30, Established, CloseWait, 80, 5000),
                tr(2, 40, CloseWait, LastAck, 80, 5000),
                tr(2, 50, LastAck, Close, 80, 5000),
                tr(9, 60, Listen, Close, 80, 0),
            ],
        );
        assert_eq!(done[0].role, Role::Server);
        assert_eq!(
            done[0].states,
            [Listen, SynRecv, Established, CloseWait, LastAck, Close]
        );
        assert_eq!(done[1].role, Role::Listener);
        assert_eq!(done[1].states, [Close, Listen, Close]);
        assert_eq!(done[1].lifetime_ns(), 59);
    }

    #[test]
    fn address_reuse_after_close_starts_a_new_timeline() {
        let mut t = Table::new();
        let done = run(
            &mut t,
            &[
                tr(5, 1, Close, SynSent, 0, 80),
                tr(5, 2, SynSent, Close, 0, 80),
                tr(5, 3, Close, Listen, 81, 0),
                tr(5, 4, Listen, Close, 81, 0),
            ],
        );
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].role, done[1].role), (Role::Client, Role::Listener));
        assert!(!done[0].incomplete && !done[1].incomplete);
    }

    #[test]
    fn reuse_without_a_seen_close_supersedes_and_marks_incomplete() {
        let mut t = Table::new();
        t.apply(&tr(5, 1, Close, SynSent, 0, 80));
        t.apply(&tr(5, 2, SynSent, Established, 1, 80));
        // The socket's CLOSE was lost; a new socket at the same address connects.
        let a = t.apply(&tr(5, 9, Close, SynSent, 0, 443));
        let old = a.superseded.expect("old connection reported");
        assert!(old.incomplete);
        assert_eq!(old.states, [Close, SynSent, Established]);
        let new = t.open().next().unwrap();
        assert_eq!(
            (new.role, new.dport, new.incomplete),
            (Role::Client, 443, false)
        );
    }

    #[test]
    fn a_self_transition_does_not_add_a_state() {
        let mut t = Table::new();
        t.apply(&tr(1, 10, Close, SynSent, 0, 80));
        t.apply(&tr(1, 20, SynSent, Established, 1, 80));
        t.apply(&tr(1, 30, Established, FinWait1, 1, 80));
        assert_eq!(
            t.apply(&tr(1, 35, FinWait1, FinWait1, 1, 80)).in_old_ns,
            Some(5)
        );
        t.apply(&tr(1, 40, FinWait1, FinWait2, 1, 80));
        let c = t.apply(&tr(1, 50, FinWait2, Close, 1, 80)).closed.unwrap();
        assert_eq!(
            c.states,
            [Close, SynSent, Established, FinWait1, FinWait2, Close]
        );
        assert_eq!(
            c.durations_ns(),
            [None, Some(10), Some(10), Some(10), Some(10)]
        );
        assert!(!c.incomplete);
    }

    #[test]
    fn a_gap_is_marked_and_not_timed() {
        let mut t = Table::new();
        t.apply(&tr(1, 10, Close, SynSent, 0, 80));
        // SYN_SENT → ESTABLISHED was lost.
        let a = t.apply(&tr(1, 50, Established, FinWait1, 1, 80));
        assert_eq!(a.in_old_ns, None);
        let c = t.open().next().unwrap();
        assert!(c.incomplete);
        assert_eq!(c.states, [Close, SynSent, Established, FinWait1]);
        assert_eq!(c.durations_ns(), [None, None, None]);
    }
}
