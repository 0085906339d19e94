//! The connection table: events in, per-socket timelines out.
//!
//! Pure logic, no I/O and no clock of its own: it learns the time from the events and from
//! the `now_ns` it is given. A socket is identified by its kernel address while it lives.
//! Its timeline starts at the first event seen for it and its transitions end at CLOSE;
//! the finished record is released a short grace period later (a RST sent or an error
//! reported right after the CLOSE still belongs to it, and an active closer's TIME_WAIT is
//! looked up first). The address may then be reused by a new socket, which starts a new
//! timeline.
use std::collections::{HashMap, hash_map::Entry};

use smallvec::{SmallVec, smallvec};

use crate::decode::{Accept, Context, ContextKind, Family, SockAddr, TcpState, Transition};

mod conn;
mod stuck;

pub use conn::*;
pub use stuck::*;

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

/// Most sockets whose context events wait for the socket's first transition
/// ([`Table::unseen_dropped`] counts what does not fit).
pub const MAX_UNSEEN_SOCKS: usize = 1024;

/// Context events kept per socket not seen yet; further ones are dropped (counted).
pub const MAX_UNSEEN_NOTES: usize = 16;

/// A waiting socket with no event for this long is given up when room is needed.
pub const UNSEEN_MAX_AGE_NS: u64 = 60_000_000_000;

/// A full buffer is searched for such sockets at most this often.
pub const UNSEEN_SWEEP_NS: u64 = 1_000_000_000;

/// Most error reports waiting for their tuple to be known ([`Table::context`]).
pub const MAX_EARLY_ERRORS: usize = 256;

/// Context events of a socket the table has no record of yet (one older than the tracer,
/// retransmitting until it dies), kept for the record its first transition creates.
#[derive(Debug)]
struct Unseen {
    netns: u32,
    tuple: Tuple,
    /// Its latest event.
    last_ns: u64,
    notes: SmallVec<[Note; 4]>,
}

/// A closed socket whose TIME_WAIT is to be looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingTimeWait {
    pub sock: SockAddr,
    pub netns: u32,
    pub tuple: Tuple,
    pub family: Family,
    /// The state it closed from (FIN_WAIT2, CLOSING, FIN_WAIT1).
    pub from: TcpState,
    pub owner: Option<Owner>,
    /// When the tracepoint reported its CLOSE (the handoff to a timewait socket).
    pub closed_ns: u64,
    /// When it entered the state it closed from, if known.
    pub from_ns: Option<u64>,
    /// Found handed over in the FIN_WAIT2 substate by an earlier lookup.
    pub orphan: Option<Orphan>,
    /// When its peer, on this host, sent its FIN after the handoff (`CLOSE_WAIT -> LAST_ACK`
    /// on the reversed tuple).
    pub peer_fin_ns: Option<u64>,
}

/// Longest an orphaned FIN_WAIT2 is followed past its timer's end before its record is
/// released anyway (a lookup that keeps failing).
pub const ORPHAN_SLACK_NS: u64 = 8_000_000_000;

/// Longest an orphaned FIN_WAIT2 whose timer is unknown is followed.
pub const ORPHAN_MAX_NS: u64 = 600_000_000_000;

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
    displaced: Map<NsTuple, Held>,
    /// Listening sockets by local port: accepted sockets inherit their owner.
    listeners: Map<u16, Vec<SockAddr>>,
    /// Complete 4-tuples of open and closing sockets, for events that carry no address
    /// (nor a namespace: a reset sent without a socket). Several namespaces may hold the same
    /// tuple (containers reuse addresses), so each tuple keeps every (namespace, socket).
    by_tuple: Map<Tuple, SmallVec<[(u32, SockAddr); 1]>>,
    /// Sockets from the start-up dump not yet seen in an event, by tuple in its namespace
    /// (sock_diag does not give the kernel address; the first event with that tuple adopts
    /// the entry).
    seeded: Map<NsTuple, Box<Conn>>,
    /// Seeded listeners by port, for accepted sockets to inherit from.
    seeded_listeners: Map<u16, Vec<NsTuple>>,
    /// Most sockets followed at once (open + seeded); beyond it the least recently active
    /// are evicted, counted in `evicted`. 0 = the default.
    pub max_conns: usize,
    /// Sockets dropped to stay within `max_conns`.
    pub evicted: u64,
    /// Context events of sockets not seen yet, by kernel address ([`Unseen`]).
    unseen: Map<SockAddr, Unseen>,
    /// No sweep of a full `unseen` before this time (event time).
    unseen_sweep_ns: u64,
    /// Error reports (they carry a tuple, not a socket) that matched no socket, for a
    /// moment: a connecting socket's tuple is complete only from its second transition (its
    /// local port is not chosen yet at CLOSE → SYN_SENT), and kernels before 6.10 report a
    /// failed connect's error just before its CLOSE.
    early_errors: Map<Tuple, Note>,
    /// Context events of sockets not seen yet that were not kept: beyond the bounds, given
    /// up, or found stale (the address began a new socket).
    pub unseen_dropped: u64,
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
        tuple: NsTuple,
        tw: Option<TimeWait>,
    },
    /// An orphaned FIN_WAIT2 found, or its end ([`Table::set_orphan`]).
    Orphan {
        sock: SockAddr,
        tuple: NsTuple,
        orphan: Orphan,
    },
    /// Sockets the kernel no longer has ([`Table::drop_vanished`]).
    Vanished {
        socks: Vec<SockAddr>,
        tuples: Vec<NsTuple>,
    },
}

/// A closed record held back before it is released, with what decides when: kept beside
/// the record, not in it, so the release scan (every few milliseconds, over every held
/// record) reads the maps' own memory instead of every record's.
#[derive(Debug)]
struct Held {
    /// When it reached CLOSE.
    closed: u64,
    /// An active closer waiting for its TIME_WAIT lookup (or an orphaned FIN_WAIT2 for its
    /// end).
    pending: bool,
    /// Released by then even while pending: [`TIME_WAIT_WAIT_NS`] after the close, or the
    /// orphan's FIN_WAIT2 timer and [`ORPHAN_SLACK_NS`].
    deadline: u64,
    /// See [`PendingTimeWait::peer_fin_ns`].
    peer_fin_ns: Option<u64>,
    conn: Box<Conn>,
}

impl Held {
    fn new(closed: u64, pending: bool, conn: Box<Conn>) -> Self {
        Self {
            closed,
            pending,
            deadline: closed.saturating_add(TIME_WAIT_WAIT_NS),
            peer_fin_ns: None,
            conn,
        }
    }

    /// Whether it is released at `now`: after the grace period, or at its deadline while
    /// its lookup is still pending.
    fn released(&self, now_ns: u64) -> bool {
        let waited = now_ns.saturating_sub(self.closed);
        now_ns >= self.deadline || (waited >= GRACE_NS && !self.pending)
    }

    /// Closed with its FIN_WAIT2 handed to a timewait socket, the peer's FIN still awaited.
    fn orphaned(&self) -> bool {
        self.pending && self.conn.orphan.as_ref().is_some_and(|o| o.end.is_none())
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
        let mut by_age: Vec<(u64, SockAddr, Option<NsTuple>)> = self
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
        alive: &std::collections::HashSet<NsTuple>,
        quiet_since_ns: u64,
    ) -> Vec<Conn> {
        let gone: Vec<SockAddr> = self
            .conns
            .values()
            .filter(|c| {
                c.last_active_ns() < quiet_since_ns
                    && c.complete_ns_tuple().is_some_and(|t| !alive.contains(&t))
            })
            .map(|c| c.sock)
            .collect();
        let gone_seeded: Vec<NsTuple> = self
            .seeded
            .iter()
            .filter(|(t, c)| c.first_seen_ns < quiet_since_ns && !alive.contains(*t))
            .map(|(t, _)| *t)
            .collect();
        self.drop_vanished(gone, gone_seeded)
    }

    /// The network namespaces of the open and seeded sockets.
    pub fn namespaces(&self) -> std::collections::BTreeSet<u32> {
        self.conns
            .values()
            .map(|c| c.netns)
            .chain(self.seeded.keys().map(|t| t.netns))
            .collect()
    }

    /// The complete tuples of the open and seeded sockets in namespace `netns`.
    pub fn tuples_in(&self, netns: u32) -> Vec<NsTuple> {
        self.conns
            .values()
            .filter(|c| c.netns == netns)
            .filter_map(|c| c.complete_ns_tuple())
            .chain(self.seeded.keys().filter(|t| t.netns == netns).copied())
            .collect()
    }

    /// Drops sockets the kernel no longer has (see [`Self::prune_vanished`]); also what a
    /// replay does with a recorded [`Fact::Vanished`].
    pub fn drop_vanished(&mut self, socks: Vec<SockAddr>, tuples: Vec<NsTuple>) -> Vec<Conn> {
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

    /// Sockets followed or held back closed: what the table's memory grows with.
    pub fn footprint(&self) -> usize {
        self.conns.len() + self.closing.len() + self.displaced.len() + self.by_tuple.len()
    }

    /// Gives back the room of maps that a burst grew and that are now mostly empty (maps
    /// never shrink on their own).
    pub fn shrink(&mut self) {
        fn fit<K: std::hash::Hash + Eq, V>(m: &mut Map<K, V>) {
            if m.capacity() > 4096 && m.len() < m.capacity() / 4 {
                m.shrink_to_fit();
            }
        }
        fit(&mut self.conns);
        fit(&mut self.closing);
        fit(&mut self.displaced);
        fit(&mut self.by_tuple);
        fit(&mut self.unseen);
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
                let n = c.states.len();
                Some(PendingTimeWait {
                    sock: c.sock,
                    netns: c.netns,
                    tuple: c.complete_tuple()?,
                    family: c.family,
                    from: c.before_close(),
                    owner: c.owner,
                    closed_ns: h.closed,
                    from_ns: n.checked_sub(2).and_then(|i| c.entered_ns.get(i)),
                    orphan: c.orphan.as_deref().copied(),
                    peer_fin_ns: h.peer_fin_ns,
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
        let mut conn = Conn::new(
            SockAddr(0),
            seed.netns,
            seed.family,
            seed.tuple,
            role,
            smallvec![seed.state],
            [None].into_iter().collect(),
            seed.owner,
            SeenFrom::Dump,
            now_ns,
        );
        if seed.orphan {
            // Handed over before the tracer started: when is not known (0).
            conn.orphan = Some(Box::new(Orphan {
                handoff_ns: 0,
                expires_ns: None,
                end: None,
            }));
        }
        let key = NsTuple::new(seed.netns, seed.tuple);
        if seed.state == TcpState::Listen {
            self.seeded_listeners
                .entry(seed.tuple.local.port)
                .or_default()
                .push(key);
        }
        self.seeded.insert(key, Box::new(conn));
    }

    /// Sockets from the dump not yet seen in an event.
    pub fn seeded_len(&self) -> usize {
        self.seeded.len()
    }

    fn take_seeded(&mut self, tuple: &NsTuple) -> Option<Box<Conn>> {
        let c = self.seeded.remove(tuple)?;
        if let Entry::Occupied(mut e) = self.seeded_listeners.entry(tuple.tuple.local.port) {
            e.get_mut().retain(|t| t != tuple);
            if e.get().is_empty() {
                e.remove();
            }
        }
        Some(c)
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
    pub fn unowned(&self, max_tries: u8) -> impl Iterator<Item = (SockAddr, NsTuple)> + '_ {
        self.conns
            .values()
            .filter(move |c| c.owner.is_none() && c.owner_lookups < max_tries)
            .filter_map(|c| Some((c.sock, c.complete_ns_tuple()?)))
    }

    pub fn owner_lookup_tried(&mut self, sock: SockAddr) {
        if let Some(c) = self.conns.get_mut(&sock) {
            c.owner_lookups = c.owner_lookups.saturating_add(1);
        }
    }

    /// An owner found outside the events (/proc): it replaces none learned from the events
    /// but the listener's ([`owner_replaces`]).
    pub fn set_owner(&mut self, sock: SockAddr, owner: Owner) {
        self.journal(Fact::Owner { sock, owner });
        if let Some(c) = self.conns.get_mut(&sock)
            && owner_replaces(c.owner.as_ref(), owner.source)
        {
            c.owner = Some(owner);
        }
    }

    /// A process accepted the socket: it becomes the owner ([`OwnerSource::Accept`]) unless
    /// the socket's own act already named one. A socket the table does not have yet (its
    /// handshake was filtered out in the kernel by an owner filter naming the accepter, or it
    /// waited in the accept queue since before the tracer) starts a timeline here, in the
    /// state it was accepted in; one from the start-up dump is adopted. Returns the owner.
    pub fn accept(&mut self, a: &Accept) -> Option<Owner> {
        let owner = Owner::from_task(&a.task, OwnerSource::Accept);
        let take = |c: &mut Conn| {
            if owner_replaces(c.owner.as_ref(), OwnerSource::Accept) {
                c.owner = Some(owner);
            }
            c.owner
        };
        if let Some(c) = self.conns.get_mut(&a.sock) {
            return take(c);
        }
        if let Some(h) = self.closing.get_mut(&a.sock) {
            // Reset (or closed) while it waited in the accept queue.
            return take(&mut h.conn);
        }
        let mut c = match self.take_seeded(&NsTuple::new(a.netns, a.tuple)) {
            Some(mut c) => {
                c.sock = a.sock;
                c
            }
            // Nothing more will happen to a socket already closed: no timeline for it.
            None if a.state == TcpState::Close => return Some(owner),
            None => {
                let mut c = Conn::new(
                    a.sock,
                    a.netns,
                    a.family,
                    a.tuple,
                    Role::Server,
                    smallvec![a.state],
                    [None].into_iter().collect(),
                    None,
                    SeenFrom::Events,
                    a.ts_ns,
                );
                // Its handshake was not seen.
                c.incomplete = true;
                Box::new(c)
            }
        };
        let owner = take(&mut c);
        if let Some(t) = c.complete_tuple() {
            let at = self.by_tuple.entry(t).or_default();
            at.retain(|(ns, _)| *ns != a.netns);
            at.push((a.netns, a.sock));
        }
        self.conns.insert(a.sock, c);
        owner
    }

    /// Open sockets whose owner is unknown or only inherited from their listener, among
    /// `socks`, with a complete tuple: the ones a stuck report should check in /proc first.
    pub fn unconfirmed_owners(&self, socks: &[SockAddr]) -> Vec<(SockAddr, NsTuple)> {
        socks
            .iter()
            .filter_map(|s| self.conns.get(s))
            .filter(|c| c.owner.is_none_or(|o| o.source == OwnerSource::Inherited))
            .filter_map(|c| Some((c.sock, c.complete_ns_tuple()?)))
            .collect()
    }

    /// The result of a TIME_WAIT lookup for a closed socket.
    pub fn set_time_wait(&mut self, sock: SockAddr, tuple: NsTuple, tw: Option<TimeWait>) {
        self.journal(Fact::TimeWait { sock, tuple, tw });
        let held = match self.closing.get_mut(&sock) {
            Some(h) if h.conn.complete_ns_tuple() == Some(tuple) => Some(h),
            _ => self.displaced.get_mut(&tuple),
        };
        if let Some(h) = held {
            h.pending = false;
            h.conn.time_wait = tw;
        }
    }

    /// What sock_diag said of an active closer handed over in the FIN_WAIT2 substate: found
    /// so (no `end`: it stays held, and pending, until its timer's end), or how it ended.
    /// Its timeline then continues in FIN_WAIT2 until that end: the final CLOSE is entered
    /// there, so FIN_WAIT2 lasts what it really did (`handoff_ns` keeps the tracepoint's).
    pub fn set_orphan(&mut self, sock: SockAddr, tuple: NsTuple, orphan: Orphan) {
        self.journal(Fact::Orphan {
            sock,
            tuple,
            orphan,
        });
        let held = match self.closing.get_mut(&sock) {
            Some(h) if h.conn.complete_ns_tuple() == Some(tuple) => Some(h),
            _ => self.displaced.get_mut(&tuple),
        };
        let Some(h) = held else {
            return;
        };
        match orphan.end {
            None => {
                h.deadline = match orphan.expires_ns {
                    Some(e) => e.saturating_add(ORPHAN_SLACK_NS),
                    None => h.closed.saturating_add(ORPHAN_MAX_NS),
                }
                .max(h.deadline);
            }
            Some(end) => {
                h.pending = false;
                let c = &mut h.conn;
                if c.last_state() == TcpState::Close {
                    let last = c.entered_ns.len() - 1;
                    let at = end.ts_ns.max(c.entered_ns.get(last).unwrap_or(0));
                    c.entered_ns.set(last, Some(at));
                }
            }
        }
        h.conn.orphan = Some(Box::new(orphan));
    }

    /// A peer on this host sent its FIN (`t` is its `CLOSE_WAIT -> LAST_ACK`): an active
    /// closer on the reversed tuple, already handed to a timewait socket, got it now.
    fn peer_fin(&mut self, t: &Transition) {
        let rev = Tuple {
            local: t.tuple.remote,
            remote: t.tuple.local,
        };
        let Some(at) = self.by_tuple.get(&rev) else {
            return;
        };
        // The peer's own namespace first (loopback); across a veth pair the closer is in
        // another one, and then only a single candidate is trusted.
        let same: Vec<(u32, SockAddr)> = at
            .iter()
            .copied()
            .filter(|(ns, _)| *ns == t.netns)
            .collect();
        let pick = match (same.as_slice(), at.as_slice()) {
            ([one], _) | ([], [one]) => *one,
            _ => return,
        };
        let key = NsTuple::new(pick.0, rev);
        let held = match self.closing.get_mut(&pick.1) {
            Some(h) if h.conn.complete_ns_tuple() == Some(key) => Some(h),
            _ => self.displaced.get_mut(&key),
        };
        if let Some(h) = held
            && h.pending
            && h.peer_fin_ns.is_none()
            && t.ts_ns >= h.closed
        {
            h.peer_fin_ns = Some(t.ts_ns);
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
                && let Some(tuple) = held.conn.complete_ns_tuple()
            {
                // A tuple already waiting there is older still: it is done.
                if let Some(older) = self.displaced.insert(tuple, held) {
                    finished.push(*self.finish(older.conn));
                }
            } else {
                finished.push(*self.finish(held.conn));
            }
        }
        if t.new == TcpState::LastAck {
            self.peer_fin(t);
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
        // The tuple this socket is known by (a socket adopted from the dump is not yet).
        let had_tuple = self.conns.get(&t.sock).and_then(|c| c.complete_tuple());
        if !self.conns.contains_key(&t.sock)
            && let Some(mut c) = self.take_seeded(&NsTuple::new(t.netns, t.tuple))
        {
            // First event of a socket from the start-up dump: it now has an address.
            c.sock = t.sock;
            if !self.unseen.is_empty() {
                self.adopt_unseen(t, &mut c);
            }
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
                let mut conn = Conn::new(
                    t.sock,
                    t.netns,
                    t.family,
                    t.tuple,
                    Role::from_first(t.old, t.new),
                    smallvec![t.old, t.new],
                    [None, Some(t.ts_ns)].into_iter().collect(),
                    listener_owner,
                    SeenFrom::Events,
                    t.ts_ns,
                );
                if !self.unseen.is_empty() {
                    self.adopt_unseen(t, &mut conn);
                }
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
        let tuple = c.complete_tuple();
        if tuple != had_tuple {
            if let Some(old) = had_tuple {
                self.forget_tuple(&old, t.sock);
            }
            if let Some(new) = tuple {
                let at = self.by_tuple.entry(new).or_default();
                at.retain(|(ns, _)| *ns != t.netns);
                at.push((t.netns, t.sock));
                if !self.early_errors.is_empty()
                    && let Some(e) = self.early_errors.remove(&new)
                    && t.ts_ns.saturating_sub(e.ts_ns) <= GRACE_NS
                    && let Some(c) = self.conns.get_mut(&t.sock)
                {
                    c.add_note(e);
                }
            }
        }
        if t.new == TcpState::Listen {
            self.listeners
                .entry(t.tuple.local.port)
                .or_default()
                .push(t.sock);
        } else if t.old == TcpState::Listen && t.new == TcpState::Close {
            self.forget_listener(t.tuple.local.port, t.sock);
        }
        if t.new == TcpState::Close
            && let Some(c) = self.conns.remove(&t.sock)
        {
            let pending = c.may_enter_time_wait();
            self.closing.insert(t.sock, Held::new(t.ts_ns, pending, c));
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
    ///
    /// A reset sent without a socket answers a segment for which the host has no socket: it
    /// is matched by tuple only, to a socket that may have just closed, and is not that
    /// socket's doing (it stays a live event record, with that socket's owner, not on the
    /// timeline). Events of a
    /// socket with no record yet wait for its first transition ([`Unseen`]).
    pub fn context(&mut self, c: &Context) -> Option<Owner> {
        let Some(sock) = c.sock else {
            let found = self.sock_by_tuple(c.netns, &c.tuple);
            if c.kind == ContextKind::SendReset {
                // Shown with the owner of the connection it answers for, as before; not noted.
                let sock = found?;
                return self
                    .conns
                    .get(&sock)
                    .or_else(|| self.closing.get(&sock).map(|h| &h.conn))
                    .and_then(|c| c.owner);
            }
            let Some(sock) = found else {
                if c.kind == ContextKind::Error {
                    self.keep_early_error(c);
                }
                return None;
            };
            return self.note_known(sock, c);
        };
        if self.conns.contains_key(&sock) || self.closing.contains_key(&sock) {
            return self.note_known(sock, c);
        }
        if c.netns != 0
            && let Some(seeded) = self.seeded.get_mut(&NsTuple::new(c.netns, c.tuple))
        {
            // A socket from the start-up dump whose first transition is still to come.
            seeded.note(c);
            return seeded.owner;
        }
        self.keep_unseen(sock, c);
        None
    }

    /// [`Self::context`] for a socket with an open or closing record.
    fn note_known(&mut self, sock: SockAddr, c: &Context) -> Option<Owner> {
        if let Some(conn) = self.conns.get_mut(&sock) {
            conn.note(c);
            return conn.owner;
        }
        let held = self.closing.get_mut(&sock)?;
        held.conn.note(c);
        if matches!(c.kind, ContextKind::SendReset | ContextKind::ReceiveReset)
            || (c.kind == ContextKind::Error && held.conn.timed_out())
        {
            // An aborted or timed-out connection has no TIME_WAIT to look up.
            held.pending = false;
        }
        held.conn.owner
    }

    /// Keeps an error report no socket has the tuple of (yet), within the bound; the ones
    /// older than the grace period give way.
    fn keep_early_error(&mut self, c: &Context) {
        if c.value == 0 {
            return;
        }
        if self.early_errors.len() >= MAX_EARLY_ERRORS {
            let cutoff = c.ts_ns.saturating_sub(GRACE_NS);
            self.early_errors.retain(|_, n| n.ts_ns >= cutoff);
            if self.early_errors.len() >= MAX_EARLY_ERRORS {
                return;
            }
        }
        self.early_errors.insert(
            c.tuple,
            Note {
                kind: c.kind,
                ts_ns: c.ts_ns,
                state: c.state,
                value: c.value,
            },
        );
    }

    /// Keeps a context event of a socket with no record, within the bounds.
    fn keep_unseen(&mut self, sock: SockAddr, c: &Context) {
        // A freed socket has no transition to come, nor has a timewait or request socket
        // (not full sockets).
        if c.kind == ContextKind::Destroy
            || matches!(c.state, Some(TcpState::TimeWait | TcpState::NewSynRecv))
        {
            return;
        }
        if !self.unseen.contains_key(&sock) && self.unseen.len() >= MAX_UNSEEN_SOCKS {
            if c.ts_ns >= self.unseen_sweep_ns {
                self.unseen_sweep_ns = c.ts_ns.saturating_add(UNSEEN_SWEEP_NS);
                let cutoff = c.ts_ns.saturating_sub(UNSEEN_MAX_AGE_NS);
                let mut dropped = 0;
                self.unseen.retain(|_, u| {
                    let keep = u.last_ns >= cutoff;
                    if !keep {
                        dropped += u.notes.len() as u64;
                    }
                    keep
                });
                self.unseen_dropped += dropped;
            }
            if self.unseen.len() >= MAX_UNSEEN_SOCKS {
                self.unseen_dropped += 1;
                return;
            }
        }
        let u = self.unseen.entry(sock).or_insert_with(|| Unseen {
            netns: c.netns,
            tuple: c.tuple,
            last_ns: c.ts_ns,
            notes: SmallVec::new(),
        });
        u.last_ns = u.last_ns.max(c.ts_ns);
        if u.notes.len() < MAX_UNSEEN_NOTES {
            u.notes.push(Note {
                kind: c.kind,
                ts_ns: c.ts_ns,
                state: c.state,
                value: c.value,
            });
        } else {
            self.unseen_dropped += 1;
        }
    }

    /// Sockets whose context events wait for their first transition.
    pub fn unseen_len(&self) -> usize {
        self.unseen.len()
    }

    /// The first transition of a socket with no record: events kept for its address join
    /// the new record `c` if the transition continues an existing socket (the one they were
    /// reported for). A birth (CLOSE → *, LISTEN → SYN_RECV) begins a new socket at a reused
    /// address: what was kept belonged to an earlier one and is dropped, as it is when the
    /// namespace or tuple differ.
    fn adopt_unseen(&mut self, t: &Transition, c: &mut Conn) {
        let Some(u) = self.unseen.remove(&t.sock) else {
            return;
        };
        let birth =
            t.old == TcpState::Close || (t.old, t.new) == (TcpState::Listen, TcpState::SynRecv);
        let same = (u.netns == 0 || t.netns == 0 || u.netns == t.netns)
            && !(u.tuple.is_complete() && t.tuple.is_complete() && u.tuple != t.tuple);
        if birth || !same {
            self.unseen_dropped += u.notes.len() as u64;
            return;
        }
        // Its role is unknown, so it is marked incomplete already.
        for n in u.notes {
            c.add_note(n);
        }
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
        if let Some(t) = c.complete_tuple() {
            self.forget_tuple(&t, c.sock);
        }
        c.close = Some(c.classify());
        c
    }

    fn remove_open(&mut self, sock: SockAddr) -> Option<Box<Conn>> {
        let c = self.conns.remove(&sock)?;
        if let Some(t) = c.complete_tuple() {
            self.forget_tuple(&t, sock);
        }
        if c.last_state() == TcpState::Listen {
            self.forget_listener(c.tuple.local.port, sock);
        }
        Some(c)
    }

    /// Removes `sock` from the sockets known by `tuple`.
    fn forget_tuple(&mut self, tuple: &Tuple, sock: SockAddr) {
        if let Entry::Occupied(mut e) = self.by_tuple.entry(*tuple) {
            e.get_mut().retain(|(_, s)| *s != sock);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// The socket an event without an address belongs to: the one with that tuple in the
    /// event's namespace; when the event does not know its namespace (a reset sent without a
    /// socket), the only socket with that tuple, if there is only one.
    fn sock_by_tuple(&self, netns: u32, tuple: &Tuple) -> Option<SockAddr> {
        let at = self.by_tuple.get(tuple)?;
        if netns != 0
            && let Some(&(_, s)) = at.iter().find(|(ns, _)| *ns == netns)
        {
            return Some(s);
        }
        match at.as_slice() {
            [(_, s)] if netns == 0 => Some(*s),
            _ => None,
        }
    }

    fn forget_listener(&mut self, port: u16, sock: SockAddr) {
        if let Entry::Occupied(mut e) = self.listeners.entry(port) {
            e.get_mut().retain(|s| *s != sock);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// The owner of the listener an accepted socket came from: same namespace, same local
    /// port, and the same local address or a wildcard one.
    fn listener_owner(&self, t: &Transition) -> Option<Owner> {
        let matches = |l: &&Conn| {
            l.netns == t.netns
                && (l.tuple.local.addr == t.tuple.local.addr || l.tuple.local.addr.is_unspecified())
        };
        let live = self
            .listeners
            .get(&t.tuple.local.port)
            .into_iter()
            .flatten()
            .filter_map(|s| self.conns.get(s).map(|c| &**c));
        let seeded = self
            .seeded_listeners
            .get(&t.tuple.local.port)
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

#[cfg(test)]
pub(crate) mod tests;
