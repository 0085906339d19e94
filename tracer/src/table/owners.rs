//! Owners: from the socket's own process-context transitions, the accepting process, /proc,
//! or the listener an accepted socket came from.
use super::*;

impl Table {
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

    /// The owner of the listener an accepted socket came from: same namespace, same local
    /// port, and the same local address or a wildcard one.
    pub(super) fn listener_owner(&self, t: &Transition) -> Option<Owner> {
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
