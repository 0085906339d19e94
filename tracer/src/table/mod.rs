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

mod closing;
mod conn;
mod owners;
mod stuck;
mod unseen;

pub use closing::*;
pub use conn::*;
pub use stuck::*;
pub use unseen::*;

/// The table's maps: a fast hash, still seeded per process (remote peers choose ports and
/// addresses, so the keys must not be predictable), several lookups per event.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
    /// No held record can be released before this ([`Table::expire`]).
    next_release_ns: u64,
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
    pub(super) fn journal(&mut self, fact: Fact) {
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
        let key = NsTuple::new(seed.netns, seed.tuple);
        if seed.orphan {
            // Handed over before the tracer started (when is not known: 0), and closed by
            // its owner: it is held as the orphans the tracer saw close are, waiting for
            // the same lookups to find its end (the peer's FIN, its timer). Its timeline
            // gains its CLOSE then. Found by its tuple: a timewait socket has no address.
            conn.orphan = Some(Box::new(Orphan {
                handoff_ns: 0,
                expires_ns: None,
                end: None,
            }));
            let mut held = Held::new(now_ns, true, Box::new(conn));
            // Until a lookup reads its timer ([`Self::set_orphan`]).
            held.deadline = now_ns.saturating_add(ORPHAN_MAX_NS);
            self.due_by(held.release_at());
            self.displaced.insert(key, held);
            return;
        }
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

    pub(super) fn take_seeded(&mut self, tuple: &NsTuple) -> Option<Box<Conn>> {
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
        // Orphaned FIN_WAIT2s are still in FIN_WAIT2 (in a timewait socket).
        let orphans = self
            .closing
            .values()
            .chain(self.displaced.values())
            .filter(|h| h.orphaned())
            .count();
        n[TcpState::FinWait2 as usize] += orphans as u64;
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
                self.due_by(held.release_at());
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
        if (t.old, t.new) == (TcpState::SynRecv, TcpState::Established) && t.srtt_us != 0 {
            c.synack_rtt_us = t.srtt_us >> 3;
        }
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
            let held = Held::new(t.ts_ns, pending, c);
            self.due_by(held.release_at());
            self.closing.insert(t.sock, held);
        }
        Applied {
            in_old_ns,
            owner,
            finished,
            unstuck,
        }
    }

    pub(super) fn finish(&mut self, mut c: Box<Conn>) -> Box<Conn> {
        if let Some(t) = c.complete_tuple() {
            self.forget_tuple(&t, c.sock);
        }
        c.close = Some(c.classify());
        c
    }

    pub(super) fn remove_open(&mut self, sock: SockAddr) -> Option<Box<Conn>> {
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
    pub(super) fn forget_tuple(&mut self, tuple: &Tuple, sock: SockAddr) {
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
    pub(super) fn sock_by_tuple(&self, netns: u32, tuple: &Tuple) -> Option<SockAddr> {
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

    pub(super) fn forget_listener(&mut self, port: u16, sock: SockAddr) {
        if let Entry::Occupied(mut e) = self.listeners.entry(port) {
            e.get_mut().retain(|s| *s != sock);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
