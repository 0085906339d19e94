//! One socket's record: identity, timeline, owner, context events, and how it ended.

use serde::Serialize;
use smallvec::SmallVec;

use super::stuck::StuckTrack;
use crate::decode::{Comm, Context, ContextKind, Family, SockAddr, Task, TcpState, Transition};

/// Context events kept per connection; further ones are only counted.
pub const MAX_EVENTS_PER_CONN: usize = 64;

pub(super) const ECONNREFUSED: i32 = 111;

pub(super) const ETIMEDOUT: i32 = 110;

pub(super) const EHOSTUNREACH: i32 = 113;

pub(super) const ENETUNREACH: i32 = 101;

/// An ICMP destination-unreachable error, as tcp_v4_err / tcp_v6_err report it.
pub(super) const fn unreachable_errno(e: Option<i32>) -> bool {
    matches!(e, Some(EHOSTUNREACH | ENETUNREACH))
}

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
    pub(super) fn from_first(old: TcpState, new: TcpState) -> Self {
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

/// How an owner was learned. Which one wins when several are learned ([`Self::rank`]): the
/// socket's own act (`event`) over the process that accepted it (`accept`) over what /proc
/// says (`procfs`) over the listener's owner (`inherited`, a guess).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerSource {
    /// From the socket's own process-context transition (connect, listen, close, shutdown).
    Event,
    /// An accepted socket, from its listener's owner (not yet confirmed by its own act).
    Inherited,
    /// From /proc/<pid>/fd, for a socket whose history the tracer did not see.
    Procfs,
    /// An accepted socket, from the process whose `accept()`/`accept4()` returned it (a
    /// pre-fork server's worker, not the master that owns the listener).
    Accept,
}

impl OwnerSource {
    /// Precedence: an owner learned from a higher rank replaces one of a lower rank, never
    /// the other way round. `event` comes last in time too (a close or shutdown after the
    /// accept), so it is always the latest word.
    pub const fn rank(self) -> u8 {
        match self {
            Self::Inherited => 0,
            Self::Procfs => 1,
            Self::Accept => 2,
            Self::Event => 3,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Inherited => "inherited",
            Self::Procfs => "procfs",
            Self::Accept => "accept",
        }
    }
}

/// Whether an owner learned from `new` replaces `current` ([`OwnerSource::rank`]). An
/// `event` owner always replaces (the socket's latest own act), even another `event`.
pub fn owner_replaces(current: Option<&Owner>, new: OwnerSource) -> bool {
    match current {
        None => true,
        Some(o) => new == OwnerSource::Event || new.rank() > o.source.rank(),
    }
}

/// The process that owns a socket (not the task that happened to be on the CPU). What its
/// cgroup says (path, unit, container, pod) is not here: it is looked up by `cgroup_id`
/// where owners are written ([`crate::cgroup::Names`]), so an owner stays small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
    pub uid: u32,
    pub cgroup_id: u64,
    pub source: OwnerSource,
}

impl Owner {
    pub(super) fn from_task(t: &Task, source: OwnerSource) -> Self {
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
    /// connect() got an ICMP destination unreachable: EHOSTUNREACH, ENETUNREACH.
    Unreachable,
    /// The kernel gave up on an unanswering peer: SYN retransmits (connect()), data
    /// retransmits (tcp_retries2) or keepalive probes ran out: ETIMEDOUT.
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
            Self::Unreachable => "unreachable",
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

/// An active closer that the kernel handed to a timewait socket still in the FIN_WAIT2
/// substate: it closed (the tracepoint's `FIN_WAIT2 -> CLOSE`) before the peer sent its FIN.
/// The tracepoint sees nothing after that; sock_diag follows the timewait socket until the
/// peer's FIN turns it into TIME_WAIT or the FIN_WAIT2 timer (`tcp_fin_timeout`) ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// When the tracepoint reported CLOSE: the handoff (CLOCK_MONOTONIC ns).
    pub handoff_ns: u64,
    /// When the FIN_WAIT2 timer gives it up (CLOCK_MONOTONIC ns), from sock_diag.
    pub expires_ns: Option<u64>,
    /// How its FIN_WAIT2 ended, once it has.
    pub end: Option<OrphanEnd>,
}

/// How an orphaned FIN_WAIT2 ended, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrphanEnd {
    pub ts_ns: u64,
    pub how: OrphanHow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanHow {
    /// The peer's FIN: the timewait socket became TIME_WAIT. `peer`: the time is the peer's
    /// own `CLOSE_WAIT -> LAST_ACK` (it is on this host); otherwise sock_diag's (the TIME_WAIT
    /// timer's start).
    Fin { peer: bool },
    /// The FIN_WAIT2 timer fired: the peer never sent its FIN.
    Timeout,
    /// The timewait socket vanished before its timer (a RST from the peer, or its
    /// namespace went away).
    Gone,
}

impl OrphanHow {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fin { .. } => "fin",
            Self::Timeout => "timeout",
            Self::Gone => "gone",
        }
    }

    /// Who told when it ended.
    pub const fn source(self) -> &'static str {
        match self {
            Self::Fin { peer: true } => "peer",
            _ => "sock_diag",
        }
    }
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
    /// Inode of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    pub family: Family,
    /// Local and remote ends; ports and addresses are filled in as the kernel reports them.
    pub tuple: Tuple,
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
    /// Handed to a timewait socket in FIN_WAIT2 (boxed: few records have one).
    pub orphan: Option<Box<Orphan>>,
    /// Its TCP counters at its close, from the kernel (boxed: only closed records have them).
    pub tcp: Option<Box<tracer_common::TcpStats>>,
    /// A server's handshake RTT (µs): the kernel's RTT sample of its SYN-ACK, read as its
    /// child socket became ESTABLISHED; 0 when unknown.
    pub synack_rtt_us: u32,
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

/// A socket found in the start-up sock_diag dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed {
    /// Inode of the network namespace it was found in.
    pub netns: u32,
    pub family: Family,
    pub tuple: Tuple,
    pub state: TcpState,
    pub owner: Option<Owner>,
    /// A timewait socket in FIN_WAIT2: its owner closed it before the tracer started, and
    /// the peer has not sent its FIN.
    pub orphan: bool,
}

impl Conn {
    /// A timeline with the given identity and history, nothing counted yet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        sock: SockAddr,
        netns: u32,
        family: Family,
        tuple: Tuple,
        role: Role,
        states: States,
        entered_ns: Entered,
        owner: Option<Owner>,
        seen_from: SeenFrom,
        first_seen_ns: u64,
    ) -> Self {
        Self {
            sock,
            netns,
            family,
            tuple,
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
            orphan: None,
            tcp: None,
            synack_rtt_us: 0,
            owner_lookups: 0,
            seen_from,
            first_seen_ns,
            stuck: StuckTrack::default(),
        }
    }

    /// The time of its last transition (or when tracer first learned of it).
    pub(super) fn last_active_ns(&self) -> u64 {
        self.entered_ns
            .iter()
            .rev()
            .flatten()
            .next()
            .unwrap_or(self.first_seen_ns)
    }

    /// Time since the current state was entered, when that is known.
    pub(super) fn in_current_ns(&self, now_ns: u64) -> Option<u64> {
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

    /// An orphaned FIN_WAIT2's time in FIN_WAIT2 at `now_ns` (since it entered it, before
    /// the handoff), while the peer's FIN is awaited.
    /// And whether that is only a lower bound (one from the start-up dump: since then).
    pub fn orphan_age(&self, now_ns: u64) -> Option<(u64, bool)> {
        self.orphan.as_ref().filter(|o| o.end.is_none())?;
        Some(self.fin_wait2_age(now_ns))
    }

    /// An orphan's time in FIN_WAIT2 at `now_ns`, and whether it is a lower bound.
    pub(super) fn fin_wait2_age(&self, now_ns: u64) -> (u64, bool) {
        let Some(o) = self.orphan.as_deref() else {
            return self.age(now_ns);
        };
        // FIN_WAIT2 is the state before the CLOSE of the handoff (the only state of one
        // from the dump, until its end).
        let n = self.states.len();
        let i = if self.last_state() == TcpState::Close {
            n.checked_sub(2)
        } else {
            n.checked_sub(1)
        };
        match i.and_then(|i| self.entered_ns.get(i)) {
            Some(since) => (now_ns.saturating_sub(since), false),
            None if o.handoff_ns != 0 => (now_ns.saturating_sub(o.handoff_ns), false),
            None => (now_ns.saturating_sub(self.first_seen_ns), true),
        }
    }

    /// Data bytes sent and acked, and received, from the kernel's `bytes_acked` and
    /// `bytes_received`, which count the SYN's and FIN's sequence numbers too (`ss -ti` shows
    /// `bytes_acked:1` for a connection that sent nothing): those are taken out, as the
    /// timeline tells which were exchanged before the counters were read (at the close).
    ///
    /// - A client's SYN is in its `bytes_acked` once ESTABLISHED (an accepted socket starts
    ///   past its SYN-ACK).
    /// - Our FIN is acked, so in `bytes_acked`, exactly when the socket left FIN_WAIT1 for
    ///   FIN_WAIT2 (the kernel moves on as soon as `snd_una` passes the FIN), or closed from
    ///   LAST_ACK or CLOSING on that ACK (not by a reset or a timeout). FIN_WAIT1 → CLOSE is
    ///   never an ACK of the FIN (a timeout, or a reset): not in it.
    /// - The peer's FIN advances `rcv_nxt`, so is in `bytes_received`, exactly when it was
    ///   processed, and its processing is a transition: ESTABLISHED → CLOSE_WAIT, FIN_WAIT1
    ///   → CLOSING, or FIN_WAIT2 → CLOSE (the timewait handoff, not an orphan's handoff
    ///   without it, nor a reset). A FIN received out of order stays out of `rcv_nxt`; a
    ///   FIN_WAIT1 that closes without CLOSING never processed one. A reset after the FIN
    ///   does not take it back.
    pub fn data_bytes(&self) -> (Option<u64>, Option<u64>) {
        use TcpState::*;
        use tracer_common::stat;
        let Some(t) = self.tcp.as_deref() else {
            return (None, None);
        };
        let reset = self.resets_received > 0 || self.resets_sent > 0;
        let prev = self.before_close();
        let has = |s: TcpState| self.states.contains(&s);
        let syn = u64::from(self.role == Role::Client && has(Established));
        let our_fin_acked =
            has(FinWait2) || (matches!(prev, LastAck | Closing) && !reset && !self.timed_out());
        let their_fin =
            has(CloseWait) || has(Closing) || (prev == FinWait2 && self.orphan.is_none() && !reset);
        let sent = (t.present & stat::BYTES_ACKED != 0)
            .then(|| t.bytes_acked.saturating_sub(syn + u64::from(our_fin_acked)));
        let received = (t.present & stat::BYTES_RECEIVED != 0)
            .then(|| t.bytes_received.saturating_sub(u64::from(their_fin)));
        (sent, received)
    }

    /// The handshake's round trip as this end saw it. A client: its time in SYN_SENT (its
    /// SYN out, the SYN-ACK in, as the tracepoint timed them; SYN retransmits included). A
    /// server: the kernel's RTT sample of its SYN-ACK (`tcp_synack_rtt_meas` in
    /// `tcp_check_req`: from the SYN-ACK's send time to the handshake's ACK, µs), read as
    /// the child socket became ESTABLISHED. After a SYN-ACK retransmit the kernel takes it
    /// from the TCP timestamp echo instead (whole ms), or not at all without timestamps.
    pub fn handshake_rtt_ns(&self) -> Option<u64> {
        match self.role {
            Role::Client => {
                let i = self.states.iter().position(|s| *s == TcpState::SynSent)?;
                (self.states.get(i + 1) == Some(&TcpState::Established))
                    .then(|| self.durations().nth(i).flatten())
                    .flatten()
            }
            Role::Server => {
                (self.synack_rtt_us != 0).then(|| u64::from(self.synack_rtt_us) * 1_000)
            }
            _ => None,
        }
    }

    /// The state before the final CLOSE (or the last state if not closed).
    pub(super) fn before_close(&self) -> TcpState {
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
            && !self.timed_out()
    }

    /// The complete 4-tuple, once both ports are known.
    pub fn complete_tuple(&self) -> Option<Tuple> {
        self.tuple.is_complete().then_some(self.tuple)
    }

    /// The complete 4-tuple in its namespace, once both ports are known.
    pub fn complete_ns_tuple(&self) -> Option<NsTuple> {
        self.complete_tuple().map(|t| NsTuple::new(self.netns, t))
    }

    pub(super) fn note(&mut self, c: &Context) {
        self.add_note(Note {
            kind: c.kind,
            ts_ns: c.ts_ns,
            state: c.state,
            value: c.value,
        });
    }

    /// Keeps a context event and counts what it says.
    pub(super) fn add_note(&mut self, n: Note) {
        if self.notes.len() < MAX_EVENTS_PER_CONN {
            self.notes.push(n);
        } else {
            self.notes_dropped += 1;
        }
        match n.kind {
            ContextKind::SendReset => self.resets_sent += 1,
            ContextKind::ReceiveReset => self.resets_received += 1,
            ContextKind::Retransmit => {
                self.retransmits += 1;
                if n.state == Some(TcpState::SynSent) || self.last_state() == TcpState::SynSent {
                    self.syn_retransmits += 1;
                }
            }
            ContextKind::RetransmitSynack => self.synack_retransmits += 1,
            // Some reports come with no error set yet (0): not an errno.
            ContextKind::Error if n.value != 0 => self.error = Some(n.value.abs()),
            ContextKind::Error => {}
            ContextKind::Destroy => {}
        }
    }

    /// The kernel gave up on the peer (tcp_write_err): ETIMEDOUT, or, for a synchronized
    /// socket whose retransmits drew ICMP errors, the soft error it kept (EHOSTUNREACH,
    /// ENETUNREACH), with no reset either way.
    pub(super) fn timed_out(&self) -> bool {
        self.error == Some(ETIMEDOUT)
            || (unreachable_errno(self.error)
                && self.retransmits > 0
                && self.resets_received == 0
                && self.resets_sent == 0)
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
            } else if unreachable_errno(self.error) {
                CloseClass::Unreachable
            } else if self.error == Some(ETIMEDOUT) || self.syn_retransmits > 0 {
                CloseClass::Timeout
            } else {
                CloseClass::Unknown
            };
        }
        if let Some(OrphanEnd {
            how: OrphanHow::Timeout,
            ..
        }) = self.orphan.as_ref().and_then(|o| o.end)
        {
            return CloseClass::OrphanTimeout;
        }
        // Before the resets: a keepalive timeout sends a RST, then reports ETIMEDOUT.
        if self.timed_out() {
            return CloseClass::Timeout;
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
            // No error report (kernels before 5.15 have none: RHEL 8, Amazon Linux 2, Ubuntu
            // 20.04) and no reset either way: a socket that went straight from ESTABLISHED,
            // CLOSE_WAIT or FIN_WAIT1 to CLOSE after retransmitting was given up on by the
            // kernel (tcp_write_err). Every other way out of those states sends or receives
            // a RST, or passes through FIN_WAIT2, CLOSING or LAST_ACK.
            Established | CloseWait | FinWait1 if self.error.is_none() && self.retransmits > 0 => {
                CloseClass::Timeout
            }
            FinWait1 | FinWait2 => CloseClass::Active,
            LastAck => CloseClass::Passive,
            _ => CloseClass::Unknown,
        }
    }
}

pub use crate::tuple::{Endpoint, NsTuple, Tuple};

/// Ports and addresses become known along the way (a client's local port is still 0 at
/// CLOSE → SYN_SENT): take every non-zero value the kernel reports.
pub(super) fn fill_tuple(c: &mut Conn, t: &Transition) {
    if t.tuple.local.port != 0 {
        c.tuple.local.port = t.tuple.local.port;
    }
    if t.tuple.remote.port != 0 {
        c.tuple.remote.port = t.tuple.remote.port;
    }
    if !t.tuple.local.addr.is_unspecified() {
        c.tuple.local.addr = t.tuple.local.addr;
    }
    if !t.tuple.remote.addr.is_unspecified() {
        c.tuple.remote.addr = t.tuple.remote.addr;
    }
}

/// A transition the tracepoint cannot show, learned from netlink sock_diag: a closed
/// socket's TIME_WAIT (kept by the kernel in a separate timewait socket), and its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagTransition {
    /// When tracer learned it (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
    pub sock: SockAddr,
    pub netns: u32,
    pub family: Family,
    pub tuple: Tuple,
    pub old: TcpState,
    pub new: TcpState,
    /// When the TIME_WAIT timer fires (CLOCK_MONOTONIC ns), for → TIME_WAIT.
    pub expires_ns: Option<u64>,
    /// Time spent in `old`, for TIME_WAIT → CLOSE.
    pub in_old_ns: Option<u64>,
    pub owner: Option<Owner>,
}
