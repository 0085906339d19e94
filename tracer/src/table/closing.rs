//! Closed records held back: the grace period for late events, the TIME_WAIT lookup of
//! active closers, orphaned FIN_WAIT2s followed to their end, and the counters read at the
//! close; their release.
use super::*;

/// How long a closed socket's record waits for late context events (RST sent after CLOSE,
/// error report) before it is released.
pub const GRACE_NS: u64 = 20_000_000;

/// The pipeline looks for records to release ([`Table::expire`]) at most this often: it
/// walks every closed record, they number tens of thousands under churn, and batches come
/// every few milliseconds. Records wait at least [`GRACE_NS`] anyway.
pub const EXPIRE_EVERY_NS: u64 = 5_000_000;

/// Longest a record waits for its TIME_WAIT lookup.
pub const TIME_WAIT_WAIT_NS: u64 = 1_500_000_000;

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

/// A closed record held back before it is released, with what decides when: kept beside
/// the record, not in it, so the release scan (every few milliseconds, over every held
/// record) reads the maps' own memory instead of every record's.
#[derive(Debug)]
pub(super) struct Held {
    /// When it reached CLOSE.
    pub(super) closed: u64,
    /// An active closer waiting for its TIME_WAIT lookup (or an orphaned FIN_WAIT2 for its
    /// end).
    pub(super) pending: bool,
    /// Released by then even while pending: [`TIME_WAIT_WAIT_NS`] after the close, or the
    /// orphan's FIN_WAIT2 timer and [`ORPHAN_SLACK_NS`].
    pub(super) deadline: u64,
    /// See [`PendingTimeWait::peer_fin_ns`].
    pub(super) peer_fin_ns: Option<u64>,
    pub(super) conn: Box<Conn>,
}

impl Held {
    pub(super) fn new(closed: u64, pending: bool, conn: Box<Conn>) -> Self {
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
    pub(super) fn released(&self, now_ns: u64) -> bool {
        now_ns >= self.release_at()
    }

    /// When it is released, as things stand.
    pub(super) fn release_at(&self) -> u64 {
        if self.pending {
            self.deadline
        } else {
            self.deadline.min(self.closed.saturating_add(GRACE_NS))
        }
    }

    /// Closed with its FIN_WAIT2 handed to a timewait socket, the peer's FIN still awaited.
    pub(super) fn orphaned(&self) -> bool {
        self.pending && self.conn.orphan.as_ref().is_some_and(|o| o.end.is_none())
    }
}

impl Table {
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
            let at = h.release_at();
            self.due_by(at);
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
                .max(h.closed.saturating_add(TIME_WAIT_WAIT_NS));
            }
            Some(end) => {
                h.pending = false;
                let c = &mut h.conn;
                if c.last_state() == TcpState::Close {
                    let last = c.entered_ns.len() - 1;
                    let at = end.ts_ns.max(c.entered_ns.get(last).unwrap_or(0));
                    c.entered_ns.set(last, Some(at));
                } else {
                    // One from the start-up dump: its CLOSE is this end.
                    c.states.push(TcpState::Close);
                    c.entered_ns.push(Some(end.ts_ns));
                }
            }
        }
        h.conn.orphan = Some(Box::new(orphan));
        let at = h.release_at();
        self.due_by(at);
    }

    /// A held record may be released from `at_ns` on: [`Self::expire`] looks again by then.
    pub(super) fn due_by(&mut self, at_ns: u64) {
        self.next_release_ns = self.next_release_ns.min(at_ns);
    }

    /// A connection's counters at its close: the record its CLOSE just moved to the held ones
    /// (or still open, should they come first).
    pub fn stats(&mut self, st: &crate::decode::Stats) {
        let c = match self.closing.get_mut(&st.sock) {
            Some(h) => &mut h.conn,
            None => match self.conns.get_mut(&st.sock) {
                Some(c) => c,
                None => return,
            },
        };
        c.tcp = Some(Box::new(st.stats));
    }

    /// A peer on this host sent its FIN (`t` is its `CLOSE_WAIT -> LAST_ACK`): an active
    /// closer on the reversed tuple, already handed to a timewait socket, got it now.
    pub(super) fn peer_fin(&mut self, t: &Transition) {
        let rev = Tuple {
            local: t.tuple.remote,
            remote: t.tuple.local,
        };
        let Some(at) = self.by_tuple.get(&rev) else {
            // An orphan from the start-up dump has no address: found by its tuple, in the
            // peer's namespace.
            if !self.displaced.is_empty()
                && let Some(h) = self.displaced.get_mut(&NsTuple::new(t.netns, rev))
                && h.orphaned()
                && h.peer_fin_ns.is_none()
            {
                h.peer_fin_ns = Some(t.ts_ns);
            }
            return;
        };
        // The peer's own namespace first (loopback); across a veth pair the closer is in
        // another one, and then only a single candidate is trusted.
        let mut same = at.iter().filter(|(ns, _)| *ns == t.netns);
        let pick = match (same.next(), same.next(), at.as_slice()) {
            (Some(one), None, _) | (None, _, [one]) => *one,
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

    /// Releases closed connections whose grace period (or TIME_WAIT lookup) is over.
    /// Boxed: a burst of closes can release the whole table at once, and unboxing them
    /// all into one vector would briefly hold every timeline twice.
    /// It walks every closed record (in one pass that takes out the released ones, reading
    /// only the maps: see [`Held`]), at most every [`EXPIRE_EVERY_NS`].
    ///
    /// Nothing is walked before the earliest time a held record can be released (kept up to
    /// date as records are held and their lookups answered): 100,000 orphaned FIN_WAIT2s
    /// waiting for their peers' FIN, walked every few milliseconds, took most of the reader's
    /// time.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Box<Conn>> {
        if now_ns < self.next_release_ns {
            return Vec::new();
        }
        let mut next = u64::MAX;
        let mut keep = |h: &mut Held| {
            if h.released(now_ns) {
                return true;
            }
            next = next.min(h.release_at());
            false
        };
        let mut due: Vec<Box<Conn>> = self
            .closing
            .extract_if(|_, h| keep(h))
            .map(|(_, h)| h.conn)
            .collect();
        if !self.displaced.is_empty() {
            due.extend(
                self.displaced
                    .extract_if(|_, h| keep(h))
                    .map(|(_, h)| h.conn),
            );
        }
        self.next_release_ns = next;
        let mut out: Vec<Box<Conn>> = due.into_iter().map(|c| self.finish(c)).collect();
        out.sort_by_key(|c| c.end_ns());
        out
    }

    /// An orphaned FIN_WAIT2 reported stuck has ended (`sock`/`tuple` as in
    /// [`Self::set_orphan`], `ts_ns` its end): how long it was stuck, once (it is not stuck
    /// any more). `None` if it was not reported, or `keep` leaves it out.
    pub fn orphan_moved(
        &mut self,
        sock: SockAddr,
        tuple: NsTuple,
        ts_ns: u64,
        keep: impl Fn(&Conn) -> bool,
    ) -> Option<Unstuck> {
        let held = match self.closing.get_mut(&sock) {
            Some(h) if h.conn.complete_ns_tuple() == Some(tuple) => Some(h),
            _ => self.displaced.get_mut(&tuple),
        }?;
        let c = &mut held.conn;
        if c.stuck.reports == 0 || c.orphan.is_none() || !keep(c) {
            return None;
        }
        let (age_ns, age_at_least) = c.fin_wait2_age(ts_ns);
        let u = Unstuck {
            state: TcpState::FinWait2,
            age_ns,
            age_at_least,
            reports: c.stuck.reports,
        };
        c.stuck = StuckTrack::default();
        Some(u)
    }

    /// Forgets the orphans from the start-up dump still waiting for their end (at exit):
    /// like the other sockets from the dump that are still open, they have no record to
    /// show, only what the stuck reports said.
    pub fn forget_waiting_seeded(&mut self) {
        self.displaced
            .retain(|_, h| !(h.orphaned() && h.conn.seen_from == SeenFrom::Dump));
    }

    /// Everything still closing, released at once (at exit).
    pub fn flush(&mut self) -> Vec<Conn> {
        self.expire(u64::MAX).into_iter().map(|c| *c).collect()
    }
}
