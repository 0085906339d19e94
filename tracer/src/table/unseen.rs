//! Context events of sockets the table has no record of yet (older than the tracer), and
//! error reports that come before a connecting socket's tuple is known: kept, bounded, for
//! the record that comes.
use super::*;

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
pub(super) struct Unseen {
    pub(super) netns: u32,
    pub(super) tuple: Tuple,
    /// Its latest event.
    pub(super) last_ns: u64,
    pub(super) notes: SmallVec<[Note; 4]>,
}

impl Table {
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
    pub(super) fn note_known(&mut self, sock: SockAddr, c: &Context) -> Option<Owner> {
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
        let (owner, at) = (held.conn.owner, held.release_at());
        self.due_by(at);
        owner
    }

    /// Keeps an error report no socket has the tuple of (yet), within the bound; the ones
    /// older than the grace period give way.
    pub(super) fn keep_early_error(&mut self, c: &Context) {
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
    pub(super) fn keep_unseen(&mut self, sock: SockAddr, c: &Context) {
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
    pub(super) fn adopt_unseen(&mut self, t: &Transition, c: &mut Conn) {
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
}
