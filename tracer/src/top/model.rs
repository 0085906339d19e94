//! What the dashboard shows: plain data, filled by the sink once per interval and read by the
//! drawing thread; and the pure parts of the views (the `/` filter, the groupings, the
//! connection lists), unit-tested without a terminal.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    net::IpAddr,
};

use crate::{
    cgroup::Names,
    clock::WallClock,
    decode::TcpState,
    diagram::{Arrows, STATES},
    table::{Conn, Owner, Role, StuckRow, Tuple},
    units::endpoint,
};

/// Samples of each state's count kept for its sparkline (one per refresh).
pub const HISTORY: usize = 120;
/// Stuck connections listed at most.
pub const STUCK_ROWS: usize = 200;
/// Recently finished connections kept for the list, most recent first.
pub const RECENT: usize = 200;
/// Remote endpoints counted individually; beyond, new ones are not (counted as such).
pub const MAX_REMOTES: usize = 10_000;
/// Groups (network namespaces, containers) shown at most; the rest are summed as `other`.
pub const MAX_GROUPS: usize = 64;

/// A remote endpoint as the dashboard counts it: the address and port for a client's peer
/// (the service it used), the address alone for a server's (its port is ephemeral).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl RemoteKey {
    pub fn of(c: &Conn) -> Self {
        Self {
            addr: c.tuple.remote.addr,
            port: (c.role != Role::Server).then_some(c.tuple.remote.port),
        }
    }
}

impl fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => f.write_str(&endpoint(crate::tuple::Endpoint {
                addr: self.addr,
                port,
            })),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// What one remote endpoint did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    pub connections: u64,
    pub resets: u64,
    pub retransmits: u64,
    pub bytes: u64,
}

impl Remote {
    pub fn add(&mut self, o: &Remote) {
        self.connections += o.connections;
        self.resets += o.resets;
        self.retransmits += o.retransmits;
        self.bytes += o.bytes;
    }
}

/// How the remotes are sorted (`s` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Connections,
    Resets,
    Retransmits,
    Bytes,
}

impl Sort {
    pub fn next(self) -> Self {
        match self {
            Self::Connections => Self::Resets,
            Self::Resets => Self::Retransmits,
            Self::Retransmits => Self::Bytes,
            Self::Bytes => Self::Connections,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Resets => "resets",
            Self::Retransmits => "retransmits",
            Self::Bytes => "bytes",
        }
    }

    pub fn key(self, r: &Remote) -> u64 {
        match self {
            Self::Connections => r.connections,
            Self::Resets => r.resets,
            Self::Retransmits => r.retransmits,
            Self::Bytes => r.bytes,
        }
    }
}

/// How the "sockets now" panel groups the sockets (`n` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    #[default]
    Host,
    Netns,
    Container,
}

impl Grouping {
    pub fn next(self) -> Self {
        match self {
            Self::Host => Self::Netns,
            Self::Netns => Self::Container,
            Self::Container => Self::Host,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host-wide",
            Self::Netns => "per network namespace",
            Self::Container => "per container",
        }
    }
}

/// One group's sockets per state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `4026531840`, `ctr 3f2a9c1b7d0e`, `nginx.service`, `host`.
    pub key: String,
    /// The tracer's own network namespace.
    pub own: bool,
    pub states: [u64; STATES],
}

impl Group {
    pub fn total(&self) -> u64 {
        self.states.iter().sum()
    }
}

/// The largest `max` groups, most sockets first (ties by key), the rest summed into one
/// `other (N)` group.
pub fn top_groups(groups: impl IntoIterator<Item = Group>, max: usize) -> Vec<Group> {
    let mut v: Vec<Group> = groups.into_iter().collect();
    v.sort_by(|a, b| b.total().cmp(&a.total()).then_with(|| a.key.cmp(&b.key)));
    if v.len() > max {
        let rest = v.split_off(max.saturating_sub(1));
        let mut other = Group {
            key: format!("other ({})", rest.len()),
            own: false,
            states: [0; STATES],
        };
        for g in &rest {
            for (o, n) in other.states.iter_mut().zip(g.states) {
                *o += n;
            }
        }
        v.push(other);
    }
    v
}

/// A socket's container or unit, from its owner's cgroup: `ctr 3f2a9c1b7d0e` (and `pod …`
/// when known), else its systemd unit, else `host`.
pub fn container_key(owner: Option<&Owner>, names: &Names) -> String {
    owner
        .and_then(|o| names.get(o.cgroup_id))
        .and_then(|id| id.tag.clone())
        .unwrap_or_else(|| "host".to_string())
}

/// The `/` filter: a port (exact: either end's) or text found in either address, in the
/// owner's command name or in a remote's name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    text: String,
    port: Option<u16>,
}

impl Query {
    /// `None` for an empty filter (everything matches).
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(Self {
            port: text.parse().ok(),
            text: text.to_ascii_lowercase(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// A connection by its ends and its owner.
    pub fn matches(&self, tuple: &Tuple, owner: Option<&Owner>) -> bool {
        if let Some(p) = self.port {
            return tuple.local.port == p || tuple.remote.port == p;
        }
        let has = |s: &str| s.to_ascii_lowercase().contains(&self.text);
        has(&endpoint(tuple.local))
            || has(&endpoint(tuple.remote))
            || owner.is_some_and(|o| has(&o.comm.as_str()))
    }

    pub fn matches_remote(&self, r: &RemoteKey) -> bool {
        if let Some(p) = self.port {
            return r.port == Some(p);
        }
        r.to_string().to_ascii_lowercase().contains(&self.text)
    }
}

/// Everything the dashboard shows, as of the last refresh.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    /// Bumped at each refresh: the drawing thread copies the dashboard when it changed.
    pub generation: u64,
    /// The last refresh (CLOCK_MONOTONIC ns); 0 before the first.
    pub now_ns: u64,
    pub first_ns: u64,
    /// Sockets in each state now, by state number (from the table: seeded at start-up, then
    /// kept by events).
    pub states: [u64; STATES],
    /// Each state's count at the last [`HISTORY`] refreshes.
    pub history: BTreeMap<TcpState, VecDeque<u64>>,
    /// Every arrow's count, and its rate over the last window.
    pub arrows: Arrows,
    pub stuck: Vec<StuckRow>,
    /// Finished connections, most recent first, at most [`RECENT`].
    pub recent: VecDeque<Conn>,
    pub threshold_ns: u64,
    pub remotes: HashMap<RemoteKey, Remote>,
    pub remotes_uncounted: u64,
    pub closed: BTreeMap<&'static str, u64>,
    /// Sockets per state per network namespace and per container, largest first.
    pub by_netns: Vec<Group>,
    pub by_container: Vec<Group>,
    pub events: u64,
    pub events_per_s: f64,
    pub lost: BTreeMap<&'static str, u64>,
    /// The tracer's own CPU time (user + system, seconds) and its share of a core over the
    /// last window.
    pub cpu_s: f64,
    pub cpu_share: f64,
    /// For the timelines and ladders shown on demand (`None`: times as they are).
    pub clock: Option<WallClock>,
    pub names: Names,
    /// A replay: what is played (`replay of FILE`), and whether it has ended.
    pub source: Option<String>,
    pub ended: bool,
}

impl Dashboard {
    pub fn new(threshold_ns: u64, clock: WallClock) -> Self {
        Self {
            threshold_ns,
            clock: Some(clock),
            ..Self::default()
        }
    }

    /// The busiest remotes by `sort` that `q` lets through, at most `n`.
    pub fn top_remotes(&self, sort: Sort, n: usize, q: Option<&Query>) -> Vec<(RemoteKey, Remote)> {
        let mut v: Vec<(RemoteKey, Remote)> = self
            .remotes
            .iter()
            .map(|(k, r)| (*k, *r))
            .filter(|(k, r)| sort.key(r) > 0 && q.is_none_or(|q| q.matches_remote(k)))
            .collect();
        v.sort_by(|a, b| sort.key(&b.1).cmp(&sort.key(&a.1)).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The connections listed (stuck ones, then recently finished ones) that `q` lets
    /// through.
    pub fn entries(&self, q: Option<&Query>) -> Vec<Entry> {
        let pass = |t: &Tuple, o: Option<&Owner>| q.is_none_or(|q| q.matches(t, o));
        let stuck = self
            .stuck
            .iter()
            .enumerate()
            .filter(|(_, r)| pass(&r.tuple, r.owner.as_ref()))
            .map(|(i, _)| Entry::Stuck(i));
        let recent = self
            .recent
            .iter()
            .enumerate()
            .filter(|(_, c)| pass(&c.tuple, c.owner.as_ref()))
            .map(|(i, _)| Entry::Recent(i));
        stuck.chain(recent).collect()
    }

    pub fn conn(&self, e: Entry) -> Option<&Conn> {
        match e {
            Entry::Stuck(i) => self.stuck.get(i).map(|r| &*r.conn),
            Entry::Recent(i) => self.recent.get(i),
        }
    }

    /// Identifies an entry across refreshes (its position changes).
    pub fn entry_key(&self, e: Entry) -> Option<EntryKey> {
        let c = self.conn(e)?;
        Some(EntryKey {
            stuck: matches!(e, Entry::Stuck(_)),
            sock: c.sock.0,
            netns: c.netns,
            tuple: c.tuple,
            start_ns: c.start_ns(),
        })
    }

    /// The other end of `c` on this host, if the dashboard holds it (stuck or recently
    /// finished): the socket with the reversed 4-tuple.
    pub fn peer(&self, c: &Conn) -> Option<&Conn> {
        let rev = c.complete_tuple()?.reversed();
        self.stuck
            .iter()
            .map(|r| &*r.conn)
            .chain(self.recent.iter())
            .find(|p| p.complete_tuple() == Some(rev) && p.netns == c.netns)
    }
}

/// A row of the connections list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Stuck(usize),
    Recent(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryKey {
    stuck: bool,
    sock: u64,
    netns: u32,
    tuple: Tuple,
    start_ns: u64,
}

/// The text shown for a connection on `Enter`: its timeline, as the text output prints it,
/// then its ladder (both ends when the other is known).
pub fn detail(d: &Dashboard, c: &Conn) -> String {
    let mut s = crate::output::timeline_block(c, &d.names);
    if c.role != Role::Listener {
        let peer = d.peer(c);
        let clock = d.clock.unwrap_or(WallClock::fixed(0));
        let l = crate::ladder::build(c, peer, &clock);
        s.push('\n');
        s.push_str(&crate::ladder::text::render(&l));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Table, tests::tr};

    fn owner(pid: u32, comm: &str) -> Owner {
        let t = crate::table::tests::task(pid, comm);
        Owner {
            pid,
            comm: t.comm,
            uid: t.uid,
            cgroup_id: t.cgroup_id,
            source: crate::table::OwnerSource::Event,
        }
    }

    fn key(addr: &str, port: Option<u16>) -> RemoteKey {
        RemoteKey {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn the_filter_matches_ports_exactly_and_text_anywhere() {
        use TcpState::*;
        let t = tr(1, 1, Established, CloseWait, 8080, 51_000).tuple;
        let mut o = owner(7, "python3");
        let q = |s: &str| Query::new(s).unwrap();
        assert!(Query::new("  ").is_none());
        assert!(q("8080").matches(&t, None));
        assert!(q("51000").matches(&t, None));
        assert!(!q("808").matches(&t, None), "a port is exact");
        assert!(q("127.0.0").matches(&t, None));
        assert!(q(":8080").matches(&t, None), "text in the endpoint");
        assert!(q("PYTH").matches(&t, Some(&o)));
        assert!(!q("nginx").matches(&t, Some(&o)));
        o.comm = owner(7, "nginx").comm;
        assert!(q("nginx").matches(&t, Some(&o)));
        assert!(q("443").matches_remote(&key("10.0.0.1", Some(443))));
        assert!(!q("443").matches_remote(&key("10.0.0.1", None)));
        assert!(q("10.0").matches_remote(&key("10.0.0.1", None)));
        assert!(!q("10.0").matches_remote(&key("192.168.0.1", Some(10))));
    }

    #[test]
    fn remotes_sort_by_each_key_and_filter() {
        let mut d = Dashboard::default();
        d.remotes.insert(
            key("10.0.0.1", Some(443)),
            Remote {
                connections: 5,
                resets: 0,
                retransmits: 1,
                bytes: 10,
            },
        );
        d.remotes.insert(
            key("10.0.0.2", None),
            Remote {
                connections: 1,
                resets: 2,
                retransmits: 0,
                bytes: 99,
            },
        );
        let names = |s, q: Option<&Query>| {
            d.top_remotes(s, 5, q)
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Sort::Connections, None), ["10.0.0.1:443", "10.0.0.2"]);
        assert_eq!(names(Sort::Resets, None), ["10.0.0.2"]);
        assert_eq!(names(Sort::Retransmits, None), ["10.0.0.1:443"]);
        assert_eq!(names(Sort::Bytes, None), ["10.0.0.2", "10.0.0.1:443"]);
        assert_eq!(
            names(Sort::Connections, Query::new("443").as_ref()),
            ["10.0.0.1:443"]
        );
        assert_eq!(Sort::Bytes.next(), Sort::Connections);
    }

    #[test]
    fn groups_by_namespace_and_container_are_bounded() {
        use TcpState::*;
        let mut t = Table::new();
        let mut a = tr(1, 10, Close, SynSent, 0, 80);
        t.apply(&a);
        a = tr(2, 20, Listen, SynRecv, 80, 5);
        a.netns = 77;
        t.apply(&a);
        a = tr(3, 30, Close, Listen, 80, 0);
        a.netns = 77;
        t.apply(&a);
        let by = t.state_counts_by(|c| c.netns);
        assert_eq!(by.len(), 2);
        assert_eq!(by[&77][Listen as usize], 1);
        assert_eq!(by[&77][SynRecv as usize], 1);
        assert_eq!(by[&crate::table::tests::NETNS][SynSent as usize], 1);
        let groups = (0..10u64).map(|i| Group {
            key: format!("g{i}"),
            own: false,
            states: {
                let mut s = [0; STATES];
                s[Established as usize] = i + 1;
                s
            },
        });
        let top = top_groups(groups, 4);
        let keys: Vec<&str> = top.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["g9", "g8", "g7", "other (7)"]);
        assert_eq!(top[3].total(), (1..=7).sum::<u64>());
        // No owner, or an owner whose cgroup names nothing: the host.
        let names = Names::new();
        assert_eq!(container_key(None, &names), "host");
        names.learn(9, Some("/system.slice/docker-3f2a9c1b7d0e11112222333344445555666677778888999900001111aaaa.scope".into()));
        let o = owner(7, "app");
        assert_eq!(container_key(Some(&o), &names), "ctr 3f2a9c1b7d0e");
    }

    #[test]
    fn entries_list_stuck_then_recent_and_find_the_peer() {
        use TcpState::*;
        let mut t = Table::new();
        let mut d = Dashboard::default();
        // A client that closed, and the server left in CLOSE_WAIT.
        for e in [
            tr(1, 10, Close, SynSent, 0, 8080),
            tr(1, 20, SynSent, Established, 5000, 8080),
            tr(2, 25, Listen, SynRecv, 8080, 5000),
            tr(2, 30, SynRecv, Established, 8080, 5000),
            tr(1, 40, Established, FinWait1, 5000, 8080),
            tr(2, 41, Established, CloseWait, 8080, 5000),
            tr(1, 42, FinWait1, FinWait2, 5000, 8080),
            tr(1, 50, FinWait2, Close, 5000, 8080),
        ] {
            t.apply(&e);
        }
        for c in t.expire(u64::MAX) {
            d.recent.push_front(*c);
        }
        d.stuck = t.stuck_rows(10_000_000_000, 1_000_000_000, STUCK_ROWS);
        let all = d.entries(None);
        assert_eq!(all, [Entry::Stuck(0), Entry::Recent(0)]);
        let server = d.conn(all[0]).unwrap();
        assert_eq!(server.last_state(), CloseWait);
        let client = d.peer(server).unwrap();
        assert_eq!(client.sock.0, 1);
        assert!(d.entries(Query::new("5001").as_ref()).is_empty());
        // Both ends have 127.0.0.1:5000; only the client's owner (its connect) is known.
        assert_eq!(d.entries(Query::new("127.0.0.1:5000").as_ref()).len(), 2);
        assert_eq!(d.entries(Query::new("app").as_ref()), [Entry::Recent(0)]);
        let text = detail(&d, server);
        assert!(text.contains("CLOSE_WAIT"), "{text}");
        assert!(
            text.contains("client 127.0.0.1:5000"),
            "the ladder has both ends: {text}"
        );
        assert_ne!(d.entry_key(all[0]), d.entry_key(all[1]));
    }
}
