//! The connection table: events in, per-socket timelines out.
//!
//! Pure logic, no I/O and no clock of its own: it learns the time from the events and from
//! the `now_ns` it is given. A socket is identified by its kernel address while it lives.
//! Its timeline starts at the first event seen for it and its transitions end at CLOSE;
//! the finished record is released a short grace period later (a RST sent or an error
//! reported right after the CLOSE still belongs to it, and an active closer's TIME_WAIT is
//! looked up first). The address may then be reused by a new socket, which starts a new
//! timeline.
use std::{
    collections::{HashMap, hash_map::Entry},
    net::IpAddr,
};

use serde::Serialize;
use smallvec::{SmallVec, smallvec};

use crate::decode::{Comm, Context, ContextKind, Family, SockAddr, Task, TcpState, Transition};

/// The table's maps: a fast hash, still seeded per process (remote peers choose ports and
/// addresses, so the keys must not be predictable), several lookups per event.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How long a closed socket's record waits for late context events (RST sent after CLOSE,
/// error report) before it is released.
pub const GRACE_NS: u64 = 20_000_000;
/// The pipeline looks for records to release ([`Table::expire`]) at most this often: it
/// walks every closed record, they number tens of thousands under churn, and batches come
/// every few milliseconds. Records wait at least [`GRACE_NS`] anyway.
pub const EXPIRE_EVERY_NS: u64 = 5_000_000;
/// Longest a record waits for its TIME_WAIT lookup.
pub const TIME_WAIT_WAIT_NS: u64 = 1_500_000_000;
/// Context events kept per connection; further ones are only counted.
pub const MAX_EVENTS_PER_CONN: usize = 64;

const ECONNREFUSED: i32 = 111;
const ETIMEDOUT: i32 = 110;

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

/// How an owner was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerSource {
    /// From the socket's own process-context transition (connect, listen, close, shutdown).
    Event,
    /// An accepted socket, from its listener's owner (not yet confirmed by its own act).
    Inherited,
    /// From /proc/<pid>/fd, for a socket whose history the tracer did not see.
    Procfs,
}

/// The process that owns a socket (not the task that happened to be on the CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
    pub uid: u32,
    pub cgroup_id: u64,
    pub source: OwnerSource,
}

impl Owner {
    fn from_task(t: &Task, source: OwnerSource) -> Self {
        Self {
            pid: t.pid,
            comm: t.comm,
            uid: t.uid,
            cgroup_id: t.cgroup_id,
            source,
        }
    }
}

/// Whether the task on the CPU acts on the socket for this transition (see
/// [`tracer_common::in_owner_context`], shared with the kernel's owner map).
pub fn in_owner_context(old: TcpState, new: TcpState) -> bool {
    tracer_common::in_owner_context(old as u8, new as u8)
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseClass {
    /// This side sent FIN first.
    Active,
    /// The peer sent FIN first.
    Passive,
    /// Both sent FIN at once (CLOSING).
    Simultaneous,
    /// This side aborted with a RST (e.g. SO_LINGER 0, unread data at close).
    ResetSent,
    /// The peer aborted with a RST.
    ResetReceived,
    /// connect() got a RST: ECONNREFUSED.
    Refused,
    /// connect() gave up after SYN retransmits: ETIMEDOUT.
    Timeout,
    /// An orphaned FIN_WAIT2 socket was given up (tcp_fin_timeout).
    OrphanTimeout,
    /// A listening socket was closed.
    ListenerClosed,
    Unknown,
}

impl CloseClass {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::Simultaneous => "simultaneous",
            Self::ResetSent => "reset_sent",
            Self::ResetReceived => "reset_received",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::OrphanTimeout => "orphan_timeout",
            Self::ListenerClosed => "listener_closed",
            Self::Unknown => "unknown",
        }
    }
}

/// A context event kept on a connection's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note {
    pub kind: ContextKind,
    pub ts_ns: u64,
    pub state: Option<TcpState>,
    pub value: i32,
}

/// What sock_diag said about an active closer's TIME_WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TimeWait {
    /// Found in the kernel's TIME_WAIT table.
    pub confirmed: bool,
    /// When it expires (CLOCK_MONOTONIC ns), from the kernel's timer.
    pub expires_ns: Option<u64>,
}

/// A timeline's states, inline: a client or server has 6, a listener 3. Every open socket
/// has a timeline, so its size is most of the tracer's memory (one heap block per vector
/// cost more than the vectors' contents).
pub type States = SmallVec<[TcpState; 8]>;
/// When each state was entered (CLOCK_MONOTONIC ns), `None` where it is not known (the
/// first state predates the first event; a gap). Kept as plain words with `u64::MAX` for
/// "not known" (no monotonic clock reaches it), inline for six states: half the size of
/// `Option<u64>`s, in every open socket's timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entered(SmallVec<[u64; 6]>);

impl Entered {
    const UNKNOWN: u64 = u64::MAX;

    fn word(t: Option<u64>) -> u64 {
        t.unwrap_or(Self::UNKNOWN)
    }

    fn time(w: u64) -> Option<u64> {
        (w != Self::UNKNOWN).then_some(w)
    }

    pub fn push(&mut self, t: Option<u64>) {
        self.0.push(Self::word(t));
    }

    /// The entry time of state `i`; `None` if unknown or out of range.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.0.get(i).copied().and_then(Self::time)
    }

    pub fn set(&mut self, i: usize, t: Option<u64>) {
        if let Some(w) = self.0.get_mut(i) {
            *w = Self::word(t);
        }
    }

    /// The last state's entry time (`None` if unknown or there is none).
    pub fn last(&self) -> Option<u64> {
        self.0.last().copied().and_then(Self::time)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn truncate(&mut self, n: usize) {
        self.0.truncate(n);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Option<u64>> + '_ {
        self.0.iter().map(|&w| Self::time(w))
    }
}

impl FromIterator<Option<u64>> for Entered {
    fn from_iter<I: IntoIterator<Item = Option<u64>>>(it: I) -> Self {
        Self(it.into_iter().map(Self::word).collect())
    }
}
/// A timeline's context events: usually one (the socket's destruction), two with a reset.
pub type Notes = SmallVec<[Note; 2]>;

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
    pub states: States,
    /// When each state was entered; `None` for the first (it predates the first event).
    pub entered_ns: Entered,
    /// Events are missing from this timeline: it started mid-way (the socket predates the
    /// tracer), or an event's old state did not match the state we had (events were lost).
    pub incomplete: bool,
    pub owner: Option<Owner>,
    pub notes: Notes,
    /// Context events beyond [`MAX_EVENTS_PER_CONN`], counted only.
    pub notes_dropped: u32,
    pub retransmits: u32,
    /// Retransmits while in SYN_SENT: a handshake nobody answers.
    pub syn_retransmits: u32,
    /// SYN-ACK retransmits (on a listener: its pending handshakes are not completing).
    pub synack_retransmits: u32,
    pub resets_sent: u32,
    pub resets_received: u32,
    /// The last errno reported to the socket.
    pub error: Option<i32>,
    /// Set at finalisation.
    pub close: Option<CloseClass>,
    pub time_wait: Option<TimeWait>,
    /// /proc owner lookups tried for this socket (it had no owner).
    pub owner_lookups: u8,
    /// Where tracer first learned of it.
    pub seen_from: SeenFrom,
    /// When tracer first learned of it (CLOCK_MONOTONIC ns).
    pub first_seen_ns: u64,
    /// Stuck reporting for its current state.
    pub stuck: StuckTrack,
}

/// Where tracer first learned of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeenFrom {
    /// Its transitions.
    Events,
    /// The sock_diag dump taken at start-up: it existed before the tracer.
    Dump,
}

impl SeenFrom {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Dump => "dump",
        }
    }
}

/// Stuck reports of a socket in its current state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StuckTrack {
    /// Reports made in this state.
    pub reports: u32,
    /// Report again once the age reaches this (doubling: AGE, 2×AGE, 4×AGE, …).
    pub next_age_ns: u64,
}

/// States in which a connection can be stuck: waiting on the peer or on the application.
pub const STUCK_STATES: [TcpState; 7] = [
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
];

/// A connection that has stayed in one state longer than the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckReport {
    pub conn: Conn,
    pub state: TcpState,
    pub age_ns: u64,
    /// The socket predates the tracer: the real age is at least `age_ns`.
    pub age_at_least: bool,
    /// 1 for the first report in this state, then 2, 3, … as it ages.
    pub report: u32,
}

/// A stuck connection that finally moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unstuck {
    pub state: TcpState,
    pub age_ns: u64,
    pub age_at_least: bool,
    pub reports: u32,
}

/// Stuck connections of one owner in one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StuckGroup {
    pub owner: Option<Owner>,
    pub state: TcpState,
    pub count: u64,
    pub oldest_ns: u64,
    /// Some of them predate the tracer: `oldest_ns` is a lower bound.
    pub oldest_at_least: bool,
}

/// A socket found in the start-up sock_diag dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed {
    pub family: Family,
    pub tuple: Tuple,
    pub state: TcpState,
    pub owner: Option<Owner>,
}

impl Conn {
    /// A timeline with the given identity and history, nothing counted yet.
    #[allow(clippy::too_many_arguments)]
    fn new(
        sock: SockAddr,
        family: Family,
        (saddr, sport, daddr, dport): Tuple,
        role: Role,
        states: States,
        entered_ns: Entered,
        owner: Option<Owner>,
        seen_from: SeenFrom,
        first_seen_ns: u64,
    ) -> Self {
        Self {
            sock,
            family,
            saddr,
            sport,
            daddr,
            dport,
            role,
            states,
            entered_ns,
            // Without its first transition from CLOSE (or LISTEN for an accepted socket), the
            // start of the timeline was not seen.
            incomplete: role == Role::Unknown || seen_from == SeenFrom::Dump,
            owner,
            notes: Notes::new(),
            notes_dropped: 0,
            retransmits: 0,
            syn_retransmits: 0,
            synack_retransmits: 0,
            resets_sent: 0,
            resets_received: 0,
            error: None,
            close: None,
            time_wait: None,
            owner_lookups: 0,
            seen_from,
            first_seen_ns,
            stuck: StuckTrack::default(),
        }
    }

    /// The time of its last transition (or when tracer first learned of it).
    fn last_active_ns(&self) -> u64 {
        self.entered_ns
            .iter()
            .rev()
            .flatten()
            .next()
            .unwrap_or(self.first_seen_ns)
    }

    /// Time since the current state was entered, when that is known.
    fn in_current_ns(&self, now_ns: u64) -> Option<u64> {
        self.entered_ns.last().map(|e| now_ns.saturating_sub(e))
    }

    pub fn start_ns(&self) -> u64 {
        self.entered_ns.iter().flatten().next().unwrap_or(0)
    }

    pub fn end_ns(&self) -> u64 {
        self.entered_ns.last().unwrap_or(0)
    }

    /// Time spent in each state but the last; `None` where the entry time is unknown.
    pub fn durations_ns(&self) -> Vec<Option<u64>> {
        self.durations().collect()
    }

    /// [`Self::durations_ns`] without collecting them.
    pub fn durations(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.entered_ns
            .iter()
            .zip(self.entered_ns.iter().skip(1))
            .map(|(a, b)| Some(b?.saturating_sub(a?)))
    }

    pub fn lifetime_ns(&self) -> u64 {
        self.end_ns().saturating_sub(self.start_ns())
    }

    /// Time in the current state at `now_ns`, and whether that is only a lower bound (the
    /// socket was in it before tracer saw it).
    pub fn age(&self, now_ns: u64) -> (u64, bool) {
        match self.in_current_ns(now_ns) {
            Some(a) => (a, false),
            None => (now_ns.saturating_sub(self.first_seen_ns), true),
        }
    }

    pub fn last_state(&self) -> TcpState {
        *self
            .states
            .last()
            .expect("a Conn always has at least two states")
    }

    /// The state before the final CLOSE (or the last state if not closed).
    fn before_close(&self) -> TcpState {
        let n = self.states.len();
        if self.last_state() == TcpState::Close && n >= 2 {
            self.states[n - 2]
        } else {
            self.last_state()
        }
    }

    /// Closed by the FIN exchange from this side: the kernel hands it to a timewait socket.
    pub fn may_enter_time_wait(&self) -> bool {
        matches!(
            self.before_close(),
            TcpState::FinWait2 | TcpState::Closing | TcpState::FinWait1
        ) && self.resets_sent == 0
            && self.resets_received == 0
    }

    /// The complete 4-tuple, once both ports are known.
    pub fn tuple(&self) -> Option<Tuple> {
        (self.sport != 0 && self.dport != 0)
            .then_some((self.saddr, self.sport, self.daddr, self.dport))
    }

    fn note(&mut self, c: &Context) {
        if self.notes.len() < MAX_EVENTS_PER_CONN {
            self.notes.push(Note {
                kind: c.kind,
                ts_ns: c.ts_ns,
                state: c.state,
                value: c.value,
            });
        } else {
            self.notes_dropped += 1;
        }
        match c.kind {
            ContextKind::SendReset => self.resets_sent += 1,
            ContextKind::ReceiveReset => self.resets_received += 1,
            ContextKind::Retransmit => {
                self.retransmits += 1;
                if c.state == Some(TcpState::SynSent) || self.last_state() == TcpState::SynSent {
                    self.syn_retransmits += 1;
                }
            }
            ContextKind::RetransmitSynack => self.synack_retransmits += 1,
            ContextKind::Error => self.error = Some(c.value.abs()),
            ContextKind::Destroy => {}
        }
    }

    /// How it ended, from its states and context events.
    pub fn classify(&self) -> CloseClass {
        use TcpState::*;
        if self.last_state() != Close {
            return CloseClass::Unknown;
        }
        let prev = self.before_close();
        if prev == Listen {
            return CloseClass::ListenerClosed;
        }
        if prev == SynSent {
            return if self.resets_received > 0 || self.error == Some(ECONNREFUSED) {
                CloseClass::Refused
            } else if self.error == Some(ETIMEDOUT) || self.syn_retransmits > 0 {
                CloseClass::Timeout
            } else {
                CloseClass::Unknown
            };
        }
        if prev == FinWait2 && self.resets_sent > 0 && self.resets_received == 0 {
            return CloseClass::OrphanTimeout;
        }
        if self.resets_received > 0 {
            return CloseClass::ResetReceived;
        }
        if self.resets_sent > 0 {
            return CloseClass::ResetSent;
        }
        if self.states.contains(&Closing) {
            return CloseClass::Simultaneous;
        }
        match prev {
            FinWait1 | FinWait2 => CloseClass::Active,
            LastAck => CloseClass::Passive,
            _ => CloseClass::Unknown,
        }
    }
}

/// Local address, local port, remote address, remote port.
pub type Tuple = (IpAddr, u16, IpAddr, u16);

/// A closed socket whose TIME_WAIT is to be looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingTimeWait {
    pub sock: SockAddr,
    pub tuple: Tuple,
    pub family: Family,
    /// The state it closed from (FIN_WAIT2, CLOSING, FIN_WAIT1).
    pub from: TcpState,
    pub owner: Option<Owner>,
}

/// What one transition did to the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// Time spent in the old state, when the table saw the socket enter it.
    pub in_old_ns: Option<u64>,
    /// The socket's owner after this transition.
    pub owner: Option<Owner>,
    /// Connections finished by this event: a socket at the same address whose CLOSE was
    /// lost (marked incomplete), or a closed one whose address is now reused.
    pub finished: Vec<Conn>,
    /// The connection had been reported stuck in the state it just left.
    pub unstuck: Option<Unstuck>,
}

/// Every live socket, by kernel address, and the recently closed ones.
#[derive(Debug, Default)]
pub struct Table {
    /// Boxed, here and below: a map keeps its values in one array that doubles as it grows,
    /// and with timelines inline a resize briefly held both arrays (2.5× the table's memory
    /// at its peak); records also move between maps as a pointer.
    conns: Map<SockAddr, Box<Conn>>,
    /// Reached CLOSE, waiting for late events / TIME_WAIT lookup.
    closing: Map<SockAddr, Held>,
    /// Closed sockets still waiting for their TIME_WAIT lookup whose address the kernel
    /// already gave to a new socket (fast connection churn): kept apart, found by tuple.
    displaced: Map<Tuple, Held>,
    /// Listening sockets by local port: accepted sockets inherit their owner.
    listeners: Map<u16, Vec<SockAddr>>,
    /// Complete 4-tuples of open and closing sockets, for events that carry no address.
    by_tuple: Map<Tuple, SockAddr>,
    /// Sockets from the start-up dump not yet seen in an event, by tuple (sock_diag does not
    /// give the kernel address; the first event with that tuple adopts the entry).
    seeded: Map<Tuple, Box<Conn>>,
    /// Seeded listeners by port, for accepted sockets to inherit from.
    seeded_listeners: Map<u16, Vec<Tuple>>,
    /// Most sockets followed at once (open + seeded); beyond it the least recently active
    /// are evicted, counted in `evicted`. 0 = the default.
    pub max_conns: usize,
    /// Sockets dropped to stay within `max_conns`.
    pub evicted: u64,
    /// When `Some`, what the enrichers (sock_diag, /proc) tell the table is kept here, so a
    /// recording can replay it without them.
    pub journal: Option<Vec<Fact>>,
}

/// Something the table learned from outside the events: what a recording must keep for a
/// replay to rebuild the same connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    /// A socket from the start-up dump ([`Table::seed`]).
    Seed { seed: Seed, now_ns: u64 },
    /// An owner from /proc ([`Table::set_owner`]).
    Owner { sock: SockAddr, owner: Owner },
    /// A TIME_WAIT lookup's result ([`Table::set_time_wait`]).
    TimeWait {
        sock: SockAddr,
        tuple: Tuple,
        tw: Option<TimeWait>,
    },
    /// Sockets the kernel no longer has ([`Table::drop_vanished`]).
    Vanished {
        socks: Vec<SockAddr>,
        tuples: Vec<Tuple>,
    },
}

/// A closed record held back before it is released, with what decides when: kept beside
/// the record, not in it, so the release scan (every few milliseconds, over every held
/// record) reads the maps' own memory instead of every record's.
#[derive(Debug)]
struct Held {
    /// When it reached CLOSE.
    closed: u64,
    /// An active closer waiting for its TIME_WAIT lookup.
    pending: bool,
    conn: Box<Conn>,
}

impl Held {
    /// Whether it is released at `now`: after the grace period, or after the longest
    /// TIME_WAIT wait while its lookup is still pending.
    fn released(&self, now_ns: u64) -> bool {
        let waited = now_ns.saturating_sub(self.closed);
        waited >= TIME_WAIT_WAIT_NS || (waited >= GRACE_NS && !self.pending)
    }
}

/// Default for [`Table::max_conns`]: about 100 MiB of timelines at most (about 400 bytes a
/// socket with the maps; measured: 200,000 open sockets, 78 MiB over the idle tracer). Room
/// for 100,000 loopback connections, which are 200,000 sockets.
pub const DEFAULT_MAX_CONNS: usize = 250_000;

impl Table {
    pub fn new() -> Self {
        Self {
            max_conns: DEFAULT_MAX_CONNS,
            ..Self::default()
        }
    }

    /// Keeps the table within `max_conns`: when over, evicts the least recently active 10%
    /// (at least the excess), oldest first, and returns them (incomplete: their end was not
    /// seen). A tenth, not less: finding them walks the whole table, and a storm of new
    /// sockets at the cap would otherwise walk it again every few milliseconds (with 1 %,
    /// half of the reader's time and most events lost, in a 200k-socket test).
    pub fn enforce_cap(&mut self) -> Vec<Conn> {
        let cap = if self.max_conns == 0 {
            DEFAULT_MAX_CONNS
        } else {
            self.max_conns
        };
        let n = self.conns.len() + self.seeded.len();
        if n <= cap {
            return Vec::new();
        }
        let extra = (n - cap).max(cap / 10).max(1);
        let mut by_age: Vec<(u64, SockAddr, Option<Tuple>)> = self
            .conns
            .values()
            .map(|c| (c.last_active_ns(), c.sock, None))
            .chain(
                self.seeded
                    .iter()
                    .map(|(t, c)| (c.last_active_ns(), SockAddr(0), Some(*t))),
            )
            .collect();
        // The `extra` least recently active, oldest first: a selection, then a sort of the
        // selected only (the whole table is sorted by nobody: this runs while a storm of new
        // sockets keeps the table at its cap).
        if extra < by_age.len() {
            by_age.select_nth_unstable_by_key(extra, |e| e.0);
            by_age.truncate(extra);
        }
        by_age.sort_unstable_by_key(|e| e.0);
        let mut out = Vec::with_capacity(extra);
        for (_, sock, tuple) in by_age {
            let c = match tuple {
                Some(t) => self.take_seeded(&t),
                None => self.remove_open(sock),
            };
            if let Some(mut c) = c {
                c.incomplete = true;
                out.push(*self.finish(c));
            }
        }
        self.evicted += out.len() as u64;
        out
    }

    /// Drops open sockets the kernel no longer has (their CLOSE was never seen: lost, or they
    /// predate a gap) and that have been quiet since `quiet_since_ns`. `alive` is every TCP
    /// tuple sock_diag reports now.
    pub fn prune_vanished(
        &mut self,
        alive: &std::collections::HashSet<Tuple>,
        quiet_since_ns: u64,
    ) -> Vec<Conn> {
        let gone: Vec<SockAddr> = self
            .conns
            .values()
            .filter(|c| {
                c.last_active_ns() < quiet_since_ns
                    && c.tuple().is_some_and(|t| !alive.contains(&t))
            })
            .map(|c| c.sock)
            .collect();
        let gone_seeded: Vec<Tuple> = self
            .seeded
            .iter()
            .filter(|(t, c)| c.first_seen_ns < quiet_since_ns && !alive.contains(*t))
            .map(|(t, _)| *t)
            .collect();
        self.drop_vanished(gone, gone_seeded)
    }

    /// Drops sockets the kernel no longer has (see [`Self::prune_vanished`]); also what a
    /// replay does with a recorded [`Fact::Vanished`].
    pub fn drop_vanished(&mut self, socks: Vec<SockAddr>, tuples: Vec<Tuple>) -> Vec<Conn> {
        if socks.is_empty() && tuples.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for &s in &socks {
            if let Some(mut c) = self.remove_open(s) {
                c.incomplete = true;
                out.push(*self.finish(c));
            }
        }
        for t in &tuples {
            if let Some(mut c) = self.take_seeded(t) {
                c.incomplete = true;
                out.push(*self.finish(c));
            }
        }
        self.journal(Fact::Vanished { socks, tuples });
        out
    }

    /// Keeps what the enrichers told the table, for `--record`.
    fn journal(&mut self, fact: Fact) {
        if let Some(j) = &mut self.journal {
            j.push(fact);
        }
    }

    /// The facts journaled since the last call (empty unless `journal` is on).
    pub fn take_journal(&mut self) -> Vec<Fact> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Nothing open, nothing held back: every connection seen has been reported.
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
            && self.closing.is_empty()
            && self.displaced.is_empty()
            && self.seeded.is_empty()
    }

    /// Closed records are held back (for late events or a TIME_WAIT lookup).
    pub fn holds_closed(&self) -> bool {
        !self.closing.is_empty() || !self.displaced.is_empty()
    }

    /// Open sockets (not yet at CLOSE).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Sockets still open, in no particular order.
    pub fn open(&self) -> impl Iterator<Item = &Conn> {
        self.conns.values().map(|c| &**c)
    }

    /// Closed sockets waiting for their TIME_WAIT lookup.
    pub fn time_wait_pending(&self) -> impl Iterator<Item = PendingTimeWait> + '_ {
        self.closing
            .values()
            .chain(self.displaced.values())
            .filter(|h| h.pending)
            .filter_map(|h| {
                let c = &h.conn;
                Some(PendingTimeWait {
                    sock: c.sock,
                    tuple: c.tuple()?,
                    family: c.family,
                    from: c.before_close(),
                    owner: c.owner,
                })
            })
    }

    /// Adds a socket found in the start-up dump (it existed before the tracer).
    pub fn seed(&mut self, seed: Seed, now_ns: u64) {
        self.journal(Fact::Seed { seed, now_ns });
        let role = if seed.state == TcpState::Listen {
            Role::Listener
        } else {
            Role::Unknown
        };
        let conn = Conn::new(
            SockAddr(0),
            seed.family,
            seed.tuple,
            role,
            smallvec![seed.state],
            [None].into_iter().collect(),
            seed.owner,
            SeenFrom::Dump,
            now_ns,
        );
        if seed.state == TcpState::Listen {
            self.seeded_listeners
                .entry(seed.tuple.1)
                .or_default()
                .push(seed.tuple);
        }
        self.seeded.insert(seed.tuple, Box::new(conn));
    }

    /// Sockets from the dump not yet seen in an event.
    pub fn seeded_len(&self) -> usize {
        self.seeded.len()
    }

    fn take_seeded(&mut self, tuple: &Tuple) -> Option<Box<Conn>> {
        let c = self.seeded.remove(tuple)?;
        if let Entry::Occupied(mut e) = self.seeded_listeners.entry(tuple.1) {
            e.get_mut().retain(|t| t != tuple);
            if e.get().is_empty() {
                e.remove();
            }
        }
        Some(c)
    }

    /// Connections that have been in a stuck-prone state for at least `threshold_ns`, each
    /// reported when it crosses the threshold and again at 2×, 4×, 8×… (back-off).
    pub fn stuck(&mut self, now_ns: u64, threshold_ns: u64) -> Vec<StuckReport> {
        let mut out = Vec::new();
        for c in self.conns.values_mut().chain(self.seeded.values_mut()) {
            let state = c.last_state();
            if !STUCK_STATES.contains(&state) {
                continue;
            }
            let (age_ns, age_at_least) = c.age(now_ns);
            let next = if c.stuck.next_age_ns == 0 {
                threshold_ns
            } else {
                c.stuck.next_age_ns
            };
            if age_ns < next {
                continue;
            }
            c.stuck.reports += 1;
            // The next report when the age doubles (at least one threshold later).
            c.stuck.next_age_ns = (age_ns.saturating_mul(2)).max(next.saturating_add(threshold_ns));
            out.push(StuckReport {
                conn: (**c).clone(),
                state,
                age_ns,
                age_at_least,
                report: c.stuck.reports,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.age_ns));
        out
    }

    /// Every connection stuck for at least `threshold_ns` now, grouped by owner and state,
    /// largest groups first.
    pub fn stuck_groups(
        &self,
        now_ns: u64,
        threshold_ns: u64,
        keep: impl Fn(&Conn) -> bool,
    ) -> Vec<StuckGroup> {
        let mut groups: HashMap<(Option<(u32, Comm)>, TcpState), StuckGroup> = HashMap::new();
        for c in self
            .conns
            .values()
            .chain(self.seeded.values())
            .filter(|c| keep(c))
        {
            let state = c.last_state();
            let (age, at_least) = c.age(now_ns);
            if !STUCK_STATES.contains(&state) || age < threshold_ns {
                continue;
            }
            let key = (c.owner.map(|o| (o.pid, o.comm)), state);
            let g = groups.entry(key).or_insert(StuckGroup {
                owner: c.owner,
                state,
                count: 0,
                oldest_ns: 0,
                oldest_at_least: false,
            });
            g.count += 1;
            if age > g.oldest_ns {
                g.oldest_ns = age;
                g.oldest_at_least = at_least;
            }
        }
        let mut v: Vec<StuckGroup> = groups.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.oldest_ns.cmp(&a.oldest_ns)));
        v
    }

    /// Open connections (and seeded ones) per current state.
    pub fn state_counts(&self) -> Vec<(TcpState, u64)> {
        let mut n = [0u64; 13];
        for c in self.conns.values().chain(self.seeded.values()) {
            n[c.last_state() as usize] += 1;
        }
        TcpState::ALL
            .iter()
            .map(|&s| (s, n[s as usize]))
            .filter(|&(_, k)| k > 0)
            .collect()
    }

    /// Whether the open (or just closed) socket at `sock` has been in one of `states`.
    pub fn passed_through(&self, sock: SockAddr, states: &[TcpState]) -> bool {
        self.conns
            .get(&sock)
            .or_else(|| self.closing.get(&sock).map(|h| &h.conn))
            .is_some_and(|c| c.states.iter().any(|s| states.contains(s)))
    }

    /// Open sockets with no known owner and a complete tuple, tried fewer than `max_tries`
    /// times: candidates for a /proc lookup.
    pub fn unowned(&self, max_tries: u8) -> impl Iterator<Item = (SockAddr, Tuple)> + '_ {
        self.conns
            .values()
            .filter(move |c| c.owner.is_none() && c.owner_lookups < max_tries)
            .filter_map(|c| Some((c.sock, c.tuple()?)))
    }

    pub fn owner_lookup_tried(&mut self, sock: SockAddr) {
        if let Some(c) = self.conns.get_mut(&sock) {
            c.owner_lookups = c.owner_lookups.saturating_add(1);
        }
    }

    /// An owner found outside the events (/proc); never replaces one learned from events.
    pub fn set_owner(&mut self, sock: SockAddr, owner: Owner) {
        self.journal(Fact::Owner { sock, owner });
        if let Some(c) = self.conns.get_mut(&sock)
            && c.owner.is_none()
        {
            c.owner = Some(owner);
        }
    }

    /// The result of a TIME_WAIT lookup for a closed socket.
    pub fn set_time_wait(&mut self, sock: SockAddr, tuple: Tuple, tw: Option<TimeWait>) {
        self.journal(Fact::TimeWait { sock, tuple, tw });
        let held = match self.closing.get_mut(&sock) {
            Some(h) if h.conn.tuple() == Some(tuple) => Some(h),
            _ => self.displaced.get_mut(&tuple),
        };
        if let Some(h) = held {
            h.pending = false;
            h.conn.time_wait = tw;
        }
    }

    pub fn apply(&mut self, t: &Transition) -> Applied {
        let mut finished = Vec::new();
        // A socket at this address that reached CLOSE is finished for good once the address
        // shows a new life (the kernel freed it and reallocated: a new client, or an accepted
        // child at LISTEN -> SYN_RECV; or connect() was retried). One still waiting for its
        // TIME_WAIT lookup waits on apart.
        if let Some(held) = self.closing.remove(&t.sock) {
            if held.pending
                && let Some(tuple) = held.conn.tuple()
            {
                // A tuple already waiting there is older still: it is done.
                if let Some(older) = self.displaced.insert(tuple, held) {
                    finished.push(*self.finish(older.conn));
                }
            } else {
                finished.push(*self.finish(held.conn));
            }
        }
        let mut in_old_ns = None;
        if let Some(c) = self.conns.get(&t.sock)
            && c.last_state() != t.old
            && t.old == TcpState::Close
        {
            // CLOSE → X on an address whose socket never reached CLOSE for us: that socket's
            // CLOSE was lost and this is a new socket at the same address.
            let mut old = self.remove_open(t.sock).expect("checked above");
            old.incomplete = true;
            finished.push(*self.finish(old));
        }
        if !self.conns.contains_key(&t.sock)
            && let Some(mut c) = self.take_seeded(&(t.saddr, t.sport, t.daddr, t.dport))
        {
            // First event of a socket from the start-up dump: it now has an address.
            c.sock = t.sock;
            self.conns.insert(t.sock, c);
        }
        let mut unstuck = None;
        if let Some(c) = self.conns.get_mut(&t.sock)
            && t.old != t.new
        {
            if c.stuck.reports > 0 {
                let (age_ns, age_at_least) = c.age(t.ts_ns);
                unstuck = Some(Unstuck {
                    state: c.last_state(),
                    age_ns,
                    age_at_least,
                    reports: c.stuck.reports,
                });
            }
            c.stuck = StuckTrack::default();
        }
        let had_tuple = self.conns.get(&t.sock).and_then(|c| c.tuple());
        // An accepted socket starts with its listener's owner.
        let listener_owner = if (t.old, t.new) == (TcpState::Listen, TcpState::SynRecv)
            && !self.conns.contains_key(&t.sock)
        {
            self.listener_owner(t)
        } else {
            None
        };
        match self.conns.get_mut(&t.sock) {
            // The kernel reports X → X too (e.g. shutdown(SHUT_WR) then close() gives
            // FIN_WAIT1 → FIN_WAIT1). The transition is shown as reported; the timeline does
            // not gain a state, and time in X keeps counting from when X was entered.
            Some(c) if t.old == t.new && c.last_state() == t.new => {
                in_old_ns = c.in_current_ns(t.ts_ns);
            }
            Some(c) => {
                if c.last_state() != t.old {
                    // A gap: at least one transition of this socket was not seen.
                    c.incomplete = true;
                    c.states.push(t.old);
                    c.entered_ns.push(None);
                } else {
                    in_old_ns = c.in_current_ns(t.ts_ns);
                }
                c.states.push(t.new);
                c.entered_ns.push(Some(t.ts_ns));
            }
            None => {
                let conn = Conn::new(
                    t.sock,
                    t.family,
                    (t.saddr, t.sport, t.daddr, t.dport),
                    Role::from_first(t.old, t.new),
                    smallvec![t.old, t.new],
                    [None, Some(t.ts_ns)].into_iter().collect(),
                    listener_owner,
                    SeenFrom::Events,
                    t.ts_ns,
                );
                self.conns.insert(t.sock, Box::new(conn));
            }
        }
        let c = self
            .conns
            .get_mut(&t.sock)
            .expect("inserted or present above");
        fill_tuple(c, t);
        if in_owner_context(t.old, t.new) {
            c.owner = Some(Owner::from_task(&t.task, OwnerSource::Event));
        }
        let owner = c.owner;
        let tuple = c.tuple();
        if tuple != had_tuple {
            if let Some(old) = had_tuple {
                self.by_tuple.remove(&old);
            }
            if let Some(new) = tuple {
                self.by_tuple.insert(new, t.sock);
            }
        }
        if t.new == TcpState::Listen {
            self.listeners.entry(t.sport).or_default().push(t.sock);
        } else if t.old == TcpState::Listen && t.new == TcpState::Close {
            self.forget_listener(t.sport, t.sock);
        }
        if t.new == TcpState::Close
            && let Some(c) = self.conns.remove(&t.sock)
        {
            let held = Held {
                closed: t.ts_ns,
                pending: c.may_enter_time_wait(),
                conn: c,
            };
            self.closing.insert(t.sock, held);
        }
        Applied {
            in_old_ns,
            owner,
            finished,
            unstuck,
        }
    }

    /// Attaches a context event to its connection. Returns the owner of that connection, if
    /// it is known (for the live event record).
    pub fn context(&mut self, c: &Context) -> Option<Owner> {
        let sock = c.sock.or_else(|| {
            let t = (c.saddr, c.sport, c.daddr, c.dport);
            self.by_tuple.get(&t).copied()
        })?;
        if let Some(conn) = self.conns.get_mut(&sock) {
            conn.note(c);
            return conn.owner;
        }
        if let Some(held) = self.closing.get_mut(&sock) {
            held.conn.note(c);
            if matches!(c.kind, ContextKind::SendReset | ContextKind::ReceiveReset) {
                // An aborted connection has no TIME_WAIT to look up.
                held.pending = false;
            }
            return held.conn.owner;
        }
        None
    }

    /// Releases closed connections whose grace period (or TIME_WAIT lookup) is over.
    /// Boxed: a burst of closes can release the whole table at once, and unboxing them
    /// all into one vector would briefly hold every timeline twice.
    /// It walks every closed record (in one pass that takes out the released ones, reading
    /// only the maps: see [`Held`]), at most every [`EXPIRE_EVERY_NS`].
    pub fn expire(&mut self, now_ns: u64) -> Vec<Box<Conn>> {
        let mut due: Vec<Box<Conn>> = self
            .closing
            .extract_if(|_, h| h.released(now_ns))
            .map(|(_, h)| h.conn)
            .collect();
        if !self.displaced.is_empty() {
            due.extend(
                self.displaced
                    .extract_if(|_, h| h.released(now_ns))
                    .map(|(_, h)| h.conn),
            );
        }
        let mut out: Vec<Box<Conn>> = due.into_iter().map(|c| self.finish(c)).collect();
        out.sort_by_key(|c| c.end_ns());
        out
    }

    /// Everything still closing, released at once (at exit).
    pub fn flush(&mut self) -> Vec<Conn> {
        self.expire(u64::MAX).into_iter().map(|c| *c).collect()
    }

    fn finish(&mut self, mut c: Box<Conn>) -> Box<Conn> {
        if let Some(t) = c.tuple()
            && self.by_tuple.get(&t) == Some(&c.sock)
        {
            self.by_tuple.remove(&t);
        }
        c.close = Some(c.classify());
        c
    }

    fn remove_open(&mut self, sock: SockAddr) -> Option<Box<Conn>> {
        let c = self.conns.remove(&sock)?;
        if let Some(t) = c.tuple()
            && self.by_tuple.get(&t) == Some(&sock)
        {
            self.by_tuple.remove(&t);
        }
        if c.last_state() == TcpState::Listen {
            self.forget_listener(c.sport, sock);
        }
        Some(c)
    }

    fn forget_listener(&mut self, port: u16, sock: SockAddr) {
        if let Entry::Occupied(mut e) = self.listeners.entry(port) {
            e.get_mut().retain(|s| *s != sock);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// The owner of the listener an accepted socket came from: same local port, and the same
    /// local address or a wildcard one.
    fn listener_owner(&self, t: &Transition) -> Option<Owner> {
        let matches = |l: &&Conn| l.saddr == t.saddr || l.saddr.is_unspecified();
        let live = self
            .listeners
            .get(&t.sport)
            .into_iter()
            .flatten()
            .filter_map(|s| self.conns.get(s).map(|c| &**c));
        let seeded = self
            .seeded_listeners
            .get(&t.sport)
            .into_iter()
            .flatten()
            .filter_map(|k| self.seeded.get(k).map(|c| &**c));
        let listener = live.chain(seeded).find(matches)?;
        listener.owner.map(|o| Owner {
            source: OwnerSource::Inherited,
            ..o
        })
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

    pub(crate) fn task(pid: u32, comm: &str) -> Task {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        Task {
            pid,
            tid: pid,
            comm: Comm(c),
            uid: 1000,
            cgroup_id: 9,
        }
    }

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
            task: task(7, "app"),
            cpu: 0,
        }
    }

    pub(crate) fn ctx(
        sock: Option<u64>,
        ts: u64,
        kind: ContextKind,
        state: Option<TcpState>,
        value: i32,
    ) -> Context {
        Context {
            kind,
            ts_ns: ts,
            sock: sock.map(SockAddr),
            family: Some(Family::Ipv4),
            saddr: "127.0.0.1".parse().unwrap(),
            sport: 40000,
            daddr: "127.0.0.1".parse().unwrap(),
            dport: 80,
            state,
            value,
            task: task(0, "swapper/0"),
            cpu: 0,
        }
    }

    /// Feeds transitions and context events in order, then releases everything.
    pub(crate) fn run(table: &mut Table, events: &[Ev]) -> Vec<Conn> {
        let mut out = Vec::new();
        for e in events {
            match e {
                Ev::T(t) => out.extend(table.apply(t).finished),
                Ev::C(c) => {
                    table.context(c);
                }
            }
        }
        out.extend(table.flush());
        out
    }

    #[derive(Clone)]
    pub(crate) enum Ev {
        T(Transition),
        C(Context),
    }

    fn ts(evs: &[Transition]) -> Vec<Ev> {
        evs.iter().cloned().map(Ev::T).collect()
    }

    #[test]
    fn client_closing_first_fills_its_port_and_times_each_state() {
        let mut t = Table::new();
        let done = run(
            &mut t,
            &ts(&[
                tr(1, 100, Close, SynSent, 0, 8080),
                tr(1, 150, SynSent, Established, 40000, 8080),
                tr(1, 1150, Established, FinWait1, 40000, 8080),
                tr(1, 1160, FinWait1, FinWait2, 40000, 8080),
                tr(1, 1400, FinWait2, Close, 40000, 8080),
            ]),
        );
        assert_eq!(done.len(), 1);
        let c = &done[0];
        assert_eq!(c.role, Role::Client);
        assert_eq!(
            c.states[..],
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
        assert_eq!(c.close, Some(CloseClass::Active));
        assert!(!c.incomplete);
        assert!(t.is_empty(), "CLOSE frees the entry");
    }

    #[test]
    fn a_closed_record_waits_for_the_grace_period_or_its_time_wait_lookup() {
        let mut t = Table::new();
        t.apply(&tr(1, 100, Close, SynSent, 0, 80));
        t.apply(&tr(1, 200, SynSent, Close, 0, 80));
        assert!(t.expire(200 + GRACE_NS - 1).is_empty());
        assert_eq!(t.expire(200 + GRACE_NS).len(), 1);

        // An active closer waits for its TIME_WAIT lookup, up to TIME_WAIT_WAIT_NS.
        for (s, tw) in [(2, true), (3, false)] {
            t.apply(&tr(s, 0, Close, SynSent, 0, 80));
            t.apply(&tr(s, 1, SynSent, Established, 5, 80));
            t.apply(&tr(s, 2, Established, FinWait1, 5, 80));
            t.apply(&tr(s, 3, FinWait1, FinWait2, 5, 80));
            t.apply(&tr(s, 4, FinWait2, Close, 5, 80));
            if tw {
                let p: Vec<_> = t.time_wait_pending().collect();
                assert_eq!((p.len(), p[0].from, p[0].tuple.1), (1, FinWait2, 5));
                let w = super::TimeWait {
                    confirmed: true,
                    expires_ns: Some(60_000_000_004),
                };
                t.set_time_wait(SockAddr(s), p[0].tuple, Some(w));
                let c = t.expire(4 + GRACE_NS);
                assert_eq!(c[0].time_wait, Some(w));
            } else {
                assert!(
                    t.expire(4 + GRACE_NS).is_empty(),
                    "still waiting for the lookup"
                );
                let c = t.expire(4 + TIME_WAIT_WAIT_NS);
                assert_eq!((c.len(), c[0].time_wait), (1, None));
            }
        }
    }

    #[test]
    fn an_address_reused_before_the_time_wait_lookup_loses_no_connection() {
        // Measured on this kernel with fast churn: an active closer's struct sock is freed
        // and given to the next accepted child (LISTEN -> SYN_RECV) within the grace period.
        let mut t = Table::new();
        t.apply(&tr(1, 0, Close, SynSent, 0, 80));
        t.apply(&tr(1, 1, SynSent, Established, 5, 80));
        t.apply(&tr(1, 2, Established, FinWait1, 5, 80));
        t.apply(&tr(1, 3, FinWait1, FinWait2, 5, 80));
        t.apply(&tr(1, 4, FinWait2, Close, 5, 80));
        // The same address, a new server child, another tuple.
        let a = t.apply(&tr(1, 5, Listen, SynRecv, 80, 6));
        assert!(
            a.finished.is_empty(),
            "the closer still waits for its lookup"
        );
        t.apply(&tr(1, 6, SynRecv, Established, 80, 6));
        let p: Vec<_> = t.time_wait_pending().collect();
        assert_eq!((p.len(), p[0].tuple.1), (1, 5));
        let w = super::TimeWait {
            confirmed: true,
            expires_ns: Some(60_000_000_004),
        };
        t.set_time_wait(SockAddr(1), p[0].tuple, Some(w));
        let done = t.expire(4 + GRACE_NS);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].role, done[0].time_wait, done[0].close),
            (Role::Client, Some(w), Some(CloseClass::Active))
        );
        assert_eq!(t.len(), 1, "the new socket is still open");
        t.apply(&tr(1, 7, Established, Close, 80, 6));
        assert_eq!(t.flush().len(), 1);
        assert!(t.is_idle());
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
    fn owners_come_from_process_context_and_are_inherited_by_accepted_sockets() {
        let mut t = Table::new();
        let mut listen = tr(9, 1, Close, Listen, 80, 0);
        listen.task = task(100, "server");
        assert_eq!(
            t.apply(&listen).owner.map(|o| (o.pid, o.source)),
            Some((100, OwnerSource::Event))
        );
        let mut connect = tr(1, 2, Close, SynSent, 0, 80);
        connect.task = task(200, "client");
        t.apply(&connect);
        // Softirq: the task on the CPU is the client, but the owner stays put.
        let a = t.apply(&tr(1, 3, SynSent, Established, 5000, 80));
        assert_eq!(a.owner.map(|o| o.pid), Some(200));
        let mut child = tr(2, 4, Listen, SynRecv, 80, 5000);
        child.task = task(200, "client");
        let a = t.apply(&child);
        let o = a.owner.unwrap();
        assert_eq!(
            (o.pid, o.comm.as_str().into_owned(), o.source),
            (100, "server".into(), OwnerSource::Inherited)
        );
        t.apply(&tr(2, 5, SynRecv, Established, 80, 5000));
        // The server's own close confirms it (a worker process may be the real owner).
        let mut close = tr(2, 6, Established, FinWait1, 80, 5000);
        close.task = task(101, "worker");
        let o = t.apply(&close).owner.unwrap();
        assert_eq!((o.pid, o.source), (101, OwnerSource::Event));
    }

    #[test]
    fn server_closing_first_and_listener() {
        let mut t = Table::new();
        let done = run(
            &mut t,
            &ts(&[
                tr(9, 1, Close, Listen, 80, 0),
                tr(2, 10, Listen, SynRecv, 80, 5000),
                tr(2, 20, SynRecv, Established, 80, 5000),
                tr(2, 30, Established, CloseWait, 80, 5000),
                tr(2, 40, CloseWait, LastAck, 80, 5000),
                tr(2, 50, LastAck, Close, 80, 5000),
                tr(9, 60, Listen, Close, 80, 0),
            ]),
        );
        let server = done.iter().find(|c| c.role == Role::Server).unwrap();
        assert_eq!(
            server.states[..],
            [Listen, SynRecv, Established, CloseWait, LastAck, Close]
        );
        assert_eq!(server.close, Some(CloseClass::Passive));
        let listener = done.iter().find(|c| c.role == Role::Listener).unwrap();
        assert_eq!(listener.states[..], [Close, Listen, Close]);
        assert_eq!(listener.lifetime_ns(), 59);
        assert_eq!(listener.close, Some(CloseClass::ListenerClosed));
    }

    fn classify(events: &[Ev]) -> Conn {
        let mut t = Table::new();
        let mut done = run(&mut t, events);
        assert_eq!(done.len(), 1, "{done:#?}");
        done.remove(0)
    }

    #[test]
    fn close_classes_from_recorded_sequences() {
        use ContextKind::*;
        let est = |s| {
            vec![
                Ev::T(tr(s, 1, Close, SynSent, 0, 80)),
                Ev::T(tr(s, 2, SynSent, Established, 40000, 80)),
            ]
        };
        let cases: Vec<(Vec<Ev>, CloseClass)> = vec![
            // Refused: RST in SYN_SENT (receive_reset before the CLOSE, error report after).
            (
                vec![
                    Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
                    Ev::C(ctx(Some(1), 2, ReceiveReset, None, 0)),
                    Ev::T(tr(1, 2, SynSent, Close, 40000, 80)),
                    Ev::C(ctx(None, 3, Error, None, ECONNREFUSED)),
                ],
                CloseClass::Refused,
            ),
            // Timeout: SYN retransmits, then ETIMEDOUT.
            (
                vec![
                    Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
                    Ev::C(ctx(Some(1), 2, Retransmit, Some(SynSent), 0)),
                    Ev::C(ctx(Some(1), 3, Retransmit, Some(SynSent), 0)),
                    Ev::T(tr(1, 4, SynSent, Close, 40000, 80)),
                    Ev::C(ctx(None, 5, Error, None, ETIMEDOUT)),
                ],
                CloseClass::Timeout,
            ),
            // Reset sent: SO_LINGER 0 close (the RST may come right after the CLOSE).
            (
                [
                    est(1),
                    vec![
                        Ev::T(tr(1, 3, Established, Close, 40000, 80)),
                        Ev::C(ctx(Some(1), 4, SendReset, Some(Close), 0)),
                    ],
                ]
                .concat(),
                CloseClass::ResetSent,
            ),
            // Reset received.
            (
                [
                    est(1),
                    vec![
                        Ev::C(ctx(Some(1), 3, ReceiveReset, None, 0)),
                        Ev::T(tr(1, 3, Established, Close, 40000, 80)),
                    ],
                ]
                .concat(),
                CloseClass::ResetReceived,
            ),
            // Simultaneous close.
            (
                [
                    est(1),
                    ts(&[
                        tr(1, 3, Established, FinWait1, 40000, 80),
                        tr(1, 4, FinWait1, Closing, 40000, 80),
                        tr(1, 5, Closing, Close, 40000, 80),
                    ]),
                ]
                .concat(),
                CloseClass::Simultaneous,
            ),
            // Passive.
            (
                [
                    est(1),
                    ts(&[
                        tr(1, 3, Established, CloseWait, 40000, 80),
                        tr(1, 4, CloseWait, LastAck, 40000, 80),
                        tr(1, 5, LastAck, Close, 40000, 80),
                    ]),
                ]
                .concat(),
                CloseClass::Passive,
            ),
            // Orphaned FIN_WAIT2 given up: the kernel sends a RST and closes.
            (
                [
                    est(1),
                    vec![
                        Ev::T(tr(1, 3, Established, FinWait1, 40000, 80)),
                        Ev::T(tr(1, 4, FinWait1, FinWait2, 40000, 80)),
                        Ev::C(ctx(Some(1), 60_000_000_004, SendReset, Some(FinWait2), 0)),
                        Ev::T(tr(1, 60_000_000_004, FinWait2, Close, 40000, 80)),
                    ],
                ]
                .concat(),
                CloseClass::OrphanTimeout,
            ),
            // A connect() abandoned without any answer or error: unknown.
            (
                ts(&[
                    tr(1, 1, Close, SynSent, 0, 80),
                    tr(1, 2, SynSent, Close, 0, 80),
                ]),
                CloseClass::Unknown,
            ),
        ];
        for (events, want) in cases {
            let c = classify(&events);
            assert_eq!(c.close, Some(want), "{:?}", c.states);
        }
    }

    #[test]
    fn context_events_are_kept_counted_and_bounded() {
        use ContextKind::*;
        let mut t = Table::new();
        t.apply(&tr(1, 1, Close, SynSent, 0, 80));
        for i in 0..(MAX_EVENTS_PER_CONN as u64 + 5) {
            t.context(&ctx(Some(1), 2 + i, Retransmit, Some(SynSent), 0));
        }
        let c = t.open().next().unwrap();
        assert_eq!((c.notes.len(), c.notes_dropped), (MAX_EVENTS_PER_CONN, 5));
        assert_eq!((c.retransmits, c.syn_retransmits), (69, 69));
        // Unknown socket, no tuple match: not attached.
        assert_eq!(t.context(&ctx(Some(99), 1, Destroy, None, 0)), None);
    }

    #[test]
    fn error_reports_find_an_accepted_socket_by_tuple() {
        let mut t = Table::new();
        t.apply(&tr(2, 1, Listen, SynRecv, 80, 40000));
        let mut e = ctx(None, 3, ContextKind::Error, None, 104);
        (e.sport, e.dport) = (80, 40000);
        t.context(&e);
        assert_eq!(t.open().next().unwrap().error, Some(104));
    }

    #[test]
    fn error_reports_find_their_socket_by_tuple() {
        let mut t = Table::new();
        t.apply(&tr(1, 1, Close, SynSent, 0, 80));
        t.apply(&tr(1, 2, SynSent, Established, 40000, 80));
        t.context(&ctx(None, 3, ContextKind::Error, None, 104));
        assert_eq!(t.open().next().unwrap().error, Some(104));
    }

    #[test]
    fn address_reuse_after_close_starts_a_new_timeline() {
        let mut t = Table::new();
        let done = run(
            &mut t,
            &ts(&[
                tr(5, 1, Close, SynSent, 0, 80),
                tr(5, 2, SynSent, Close, 0, 80),
                tr(5, 3, Close, Listen, 81, 0),
                tr(5, 4, Listen, Close, 81, 0),
            ]),
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
        let old = &a.finished[0];
        assert!(old.incomplete);
        assert_eq!(old.states[..], [Close, SynSent, Established]);
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
        t.apply(&tr(1, 50, FinWait2, Close, 1, 80));
        let c = t.flush().remove(0);
        assert_eq!(
            c.states[..],
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
        assert_eq!(c.states[..], [Close, SynSent, Established, FinWait1]);
        assert_eq!(c.durations_ns(), [None, None, None]);
    }

    const S: u64 = 1_000_000_000;

    fn close_wait(t: &mut Table, sock: u64, at: u64, owner_pid: u32, comm: &str) {
        let mut a = tr(sock, at, Listen, SynRecv, 80, 1000 + sock as u16);
        a.task = task(owner_pid, comm);
        t.apply(&a);
        t.apply(&tr(sock, at, SynRecv, Established, 80, 1000 + sock as u16));
        // Owned by `owner_pid` through the listener it came from.
        t.apply(&tr(
            sock,
            at,
            Established,
            CloseWait,
            80,
            1000 + sock as u16,
        ));
    }

    #[test]
    fn stuck_is_reported_at_the_threshold_then_with_back_off_then_when_it_moves() {
        let mut t = Table::new();
        let mut l = tr(100, 0, Close, Listen, 80, 0);
        l.task = task(1234, "myapp");
        t.apply(&l);
        close_wait(&mut t, 1, 0, 1234, "myapp");
        let age = 30 * S;
        assert!(t.stuck(29 * S, age).is_empty());
        let r = t.stuck(30 * S, age);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].state, r[0].age_ns, r[0].report, r[0].age_at_least),
            (CloseWait, 30 * S, 1, false)
        );
        assert_eq!(r[0].conn.owner.map(|o| o.pid), Some(1234));
        // Not again until the age doubles.
        assert!(t.stuck(59 * S, age).is_empty());
        assert_eq!(t.stuck(60 * S, age)[0].report, 2);
        assert!(t.stuck(119 * S, age).is_empty());
        assert_eq!(t.stuck(120 * S, age)[0].report, 3);
        // It moves: reported once as unstuck, with how long it was stuck.
        let a = t.apply(&tr(1, 130 * S, CloseWait, LastAck, 80, 1001));
        assert_eq!(
            a.unstuck,
            Some(Unstuck {
                state: CloseWait,
                age_ns: 130 * S,
                age_at_least: false,
                reports: 3
            })
        );
        // LAST_ACK is a new state: a new threshold.
        assert!(t.stuck(131 * S, age).is_empty());
        assert_eq!(t.stuck(160 * S, age)[0].state, LastAck);
        // ESTABLISHED and LISTEN are never stuck.
        assert!(t.stuck(10_000 * S, age).iter().all(|r| r.state == LastAck));
    }

    #[test]
    fn stuck_connections_are_grouped_by_owner_and_state() {
        let mut t = Table::new();
        for (l, pid, comm) in [(100, 1234, "myapp"), (101, 99, "other")] {
            let mut e = tr(l, 0, Close, Listen, if pid == 99 { 81 } else { 80 }, 0);
            e.task = task(pid, comm);
            t.apply(&e);
        }
        for s in 1..=3 {
            close_wait(&mut t, s, s * S, 1234, "myapp");
        }
        let mut a = tr(9, 0, Listen, SynRecv, 81, 999);
        a.task = task(99, "other");
        t.apply(&a); // SYN_RECV for "other" (inherits from its listener on port 81)
        let g = t.stuck_groups(100 * S, 30 * S, |_| true);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (
                g[0].owner.map(|o| o.pid),
                g[0].state,
                g[0].count,
                g[0].oldest_ns
            ),
            (Some(1234), CloseWait, 3, 99 * S)
        );
        assert_eq!(
            (g[1].owner.map(|o| o.pid), g[1].state, g[1].count),
            (Some(99), SynRecv, 1)
        );
        assert!(t.stuck_groups(100 * S, 200 * S, |_| true).is_empty());
        assert_eq!(
            t.stuck_groups(100 * S, 30 * S, |c| c.last_state() == SynRecv)
                .len(),
            1
        );
    }

    #[test]
    fn seeded_sockets_age_from_start_up_and_are_adopted_by_their_first_event() {
        let mut t = Table::new();
        let tuple: Tuple = (
            "127.0.0.1".parse().unwrap(),
            80,
            "127.0.0.1".parse().unwrap(),
            5000,
        );
        let owner = Owner {
            pid: 42,
            comm: Comm::default(),
            uid: 0,
            cgroup_id: 0,
            source: OwnerSource::Procfs,
        };
        t.seed(
            Seed {
                family: Family::Ipv4,
                tuple,
                state: CloseWait,
                owner: Some(owner),
            },
            10 * S,
        );
        let r = t.stuck(40 * S, 30 * S);
        assert_eq!((r.len(), r[0].age_ns, r[0].age_at_least), (1, 30 * S, true));
        assert_eq!(r[0].conn.seen_from, SeenFrom::Dump);
        // Its first event carries the kernel address: the entry is adopted, not duplicated.
        let a = t.apply(&tr(7, 50 * S, CloseWait, LastAck, 80, 5000));
        // close() in process context: the owner is confirmed by the event.
        assert_eq!(
            a.owner.map(|o| (o.pid, o.source)),
            Some((7, OwnerSource::Event))
        );
        assert_eq!(
            a.unstuck.map(|u| (u.age_ns, u.age_at_least)),
            Some((40 * S, true))
        );
        assert_eq!(t.seeded_len(), 0);
        let c = t.open().next().unwrap();
        assert_eq!(
            (c.sock.0, c.states.as_slice(), c.incomplete),
            (7, &[CloseWait, LastAck][..], true)
        );
        // A seeded listener passes its owner on to accepted sockets.
        let ltuple: Tuple = (
            "0.0.0.0".parse().unwrap(),
            443,
            "0.0.0.0".parse().unwrap(),
            0,
        );
        t.seed(
            Seed {
                family: Family::Ipv4,
                tuple: ltuple,
                state: Listen,
                owner: Some(owner),
            },
            10 * S,
        );
        let a = t.apply(&tr(8, 60 * S, Listen, SynRecv, 443, 6000));
        assert_eq!(
            a.owner.map(|o| (o.pid, o.source)),
            Some((42, OwnerSource::Inherited))
        );
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_active() {
        let mut t = Table::new();
        t.max_conns = 100;
        for s in 0..150u64 {
            t.apply(&tr(s + 1, s, Close, SynSent, 0, 80));
        }
        let ev = t.enforce_cap();
        assert_eq!(ev.len(), 50);
        assert!(
            ev.iter().all(|c| c.incomplete && c.sock.0 <= 50),
            "oldest first"
        );
        assert_eq!((t.len(), t.evicted), (100, 50));
        assert!(t.enforce_cap().is_empty());
        t.apply(&tr(1000, 1000, Close, SynSent, 0, 80));
        assert_eq!(
            t.enforce_cap().len(),
            10,
            "the excess, and at least a tenth of the cap"
        );
    }

    #[test]
    fn sockets_the_kernel_no_longer_has_are_aged_out() {
        let mut t = Table::new();
        t.apply(&tr(1, 10, Close, SynSent, 0, 80));
        t.apply(&tr(1, 20, SynSent, Established, 5000, 80));
        t.apply(&tr(2, 30, Close, SynSent, 0, 81));
        t.apply(&tr(2, 40, SynSent, Established, 5001, 81));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let alive: std::collections::HashSet<Tuple> = [(lo, 5001, lo, 81)].into_iter().collect();
        // Quiet since before 30: only socket 1 qualifies; it is gone from the kernel.
        let gone = t.prune_vanished(&alive, 30);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].sock.0, gone[0].incomplete), (1, true));
        assert_eq!(t.len(), 1);
        // Socket 2 is alive: kept however quiet.
        assert!(t.prune_vanished(&alive, 1_000).is_empty());
    }
}
