//! Every network namespace on the host, each with a sock_diag socket of its own.
//!
//! sock_diag answers only about the namespace its netlink socket was created in, so a
//! tracer in the host namespace is blind to every container's TIME_WAIT sockets, existing
//! connections and socket inodes. The tracepoints, on the other hand, fire in every
//! namespace, and the kernel side reports each socket's namespace inode. This registry maps
//! that inode to an open namespace handle (found through `/proc/PID/ns/net` and the
//! `ip netns` bind mounts) and lazily to a sock_diag socket created by a thread that
//! entered the namespace with setns(2).
//!
//! Both the handle and the netlink socket hold a reference on the namespace, which would
//! keep a dead container's namespace (and its sockets) alive: every scan releases the
//! namespaces no process and no bind mount holds any more.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::SockDiag;

/// Most namespaces followed at once (two file descriptors each).
pub const MAX_NAMESPACES: usize = 2048;

/// Shortest time between two scans of /proc started by an unknown namespace that a scan
/// already missed since it was first asked about.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Shortest time between two scans started by a namespace no scan has looked for yet (a
/// container just started): soon enough for a TIME_WAIT lookup, which waits 1.5 s, while
/// a burst of new namespaces costs at most ten scans a second.
const FIRST_MISS_RESCAN: Duration = Duration::from_millis(100);

/// Namespaces held are rescanned at least this often, events or not, so that those no
/// process holds any more are released (their handle and sock_diag socket would keep a dead
/// container's namespace alive).
pub const PERIODIC_SCAN: Duration = Duration::from_secs(60);

/// How long an unknown namespace is remembered as asked about.
const ASKED_FOR: Duration = Duration::from_secs(60);

/// Where `ip netns add` keeps namespaces that no process may hold.
const BIND_MOUNT_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// What a lookup in one namespace can get.
pub enum Lookup<'a> {
    /// Its sock_diag socket.
    Diag(&'a mut SockDiag),
    /// No process and no bind mount holds it: it is gone, and so are its sockets.
    Gone,
    /// It exists but could not be entered (reported once, on stderr).
    Refused,
    /// Not found yet, and no scan has looked for it since it was first asked about (scans
    /// are rate-limited): ask again later. It is not known to be gone.
    Pending,
}

struct Ns {
    handle: File,
    diag: Option<SockDiag>,
}

/// The namespace registry (see the module's documentation).
pub struct Namespaces {
    own: u32,
    own_diag: SockDiag,
    others: HashMap<u32, Ns>,
    /// Namespaces that could not be entered: not tried again.
    refused: HashSet<u32>,
    last_scan: Option<Instant>,
    /// Namespaces asked about but not found, with when they were first asked about: one
    /// is gone only once a scan started after that missed it.
    asked: HashMap<u32, Instant>,
    /// The most namespaces a scan left unfollowed because [`MAX_NAMESPACES`] were.
    pub over_cap: u64,
    /// The kernel side reports each event's namespace (it found the BTF offsets): otherwise
    /// every event says 0 and only the tracer's own namespace can be looked up.
    pub kernel_reports: bool,
}

impl Namespaces {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            own: own_netns().unwrap_or(0),
            own_diag: SockDiag::new()?,
            others: HashMap::new(),
            refused: HashSet::new(),
            last_scan: None,
            asked: HashMap::new(),
            over_cap: 0,
            kernel_reports: false,
        })
    }

    /// Inode of the tracer's own network namespace (0 if it could not be read).
    pub fn own(&self) -> u32 {
        self.own
    }

    /// Whether lookups for `netns` go to the tracer's own namespace (0: unknown, as every
    /// event says without BTF). Its sock_diag socket always answers: a failure there is real.
    pub fn is_own(&self, netns: u32) -> bool {
        netns == 0 || netns == self.own
    }

    /// The sock_diag socket for the namespace `netns` (0, unknown: the tracer's own).
    pub fn lookup(&mut self, netns: u32) -> Lookup<'_> {
        if self.is_own(netns) {
            return Lookup::Diag(&mut self.own_diag);
        }
        if self.refused.contains(&netns) {
            return Lookup::Refused;
        }
        if !self.others.contains_key(&netns)
            && let Some(missing) = self.missing(netns)
        {
            return missing;
        }
        let needs_socket = match self.others.get(&netns) {
            None => return Lookup::Gone,
            Some(ns) => ns.diag.is_none(),
        };
        if needs_socket {
            let made = match self.others.get(&netns) {
                Some(ns) => socket_in(&ns.handle),
                None => return Lookup::Gone,
            };
            match made {
                Ok(d) => {
                    if let Some(ns) = self.others.get_mut(&netns) {
                        ns.diag = Some(d);
                    }
                }
                Err(e) => {
                    eprintln!(
                        "tracer: warning: cannot open sock_diag in network namespace {netns} ({e}): its TIME_WAIT sockets, existing connections and socket owners will not be looked up"
                    );
                    self.others.remove(&netns);
                    self.refused.insert(netns);
                    return Lookup::Refused;
                }
            }
        }
        match self.others.get_mut(&netns).and_then(|n| n.diag.as_mut()) {
            Some(d) => Lookup::Diag(d),
            None => Lookup::Gone,
        }
    }

    /// A namespace not in the registry: scans for it (rate-limited) and says what it is when
    /// still not found; `None` when the scan found it.
    fn missing(&mut self, netns: u32) -> Option<Lookup<'static>> {
        let now = Instant::now();
        if !self.asked.contains_key(&netns) && self.asked.len() >= 2 * MAX_NAMESPACES {
            // Remembering more would be unbounded: treated as gone.
            return Some(Lookup::Gone);
        }
        let asked = *self.asked.entry(netns).or_insert(now);
        let looked_for = |last: Option<Instant>| last.is_some_and(|t| t >= asked);
        let wait = if looked_for(self.last_scan) {
            RESCAN_EVERY
        } else {
            FIRST_MISS_RESCAN
        };
        if self.last_scan.is_none_or(|t| now.duration_since(t) >= wait) {
            self.scan(true);
        }
        if self.others.contains_key(&netns) {
            return None;
        }
        Some(if looked_for(self.last_scan) {
            Lookup::Gone
        } else {
            Lookup::Pending
        })
    }

    /// Every namespace on the host now (a fresh scan), the tracer's own first.
    pub fn all(&mut self) -> Vec<u32> {
        self.scan(true);
        let mut out: Vec<u32> = self.others.keys().copied().collect();
        out.sort_unstable();
        out.insert(0, self.own);
        out
    }

    /// The periodic scan (called on the pipeline's timer): when namespaces are held and the
    /// last scan is [`PERIODIC_SCAN`] old. Returns whether it scanned.
    pub fn rescan_if_due(&mut self) -> bool {
        if self.others.is_empty() && self.refused.is_empty() {
            return false;
        }
        if self.last_scan.is_some_and(|t| t.elapsed() < PERIODIC_SCAN) {
            return false;
        }
        self.scan(true);
        true
    }

    /// Finds the namespaces held by processes and bind mounts; opens the new ones, releases
    /// those no longer held. Unless `force`, at most once per [`RESCAN_EVERY`].
    pub fn scan(&mut self, force: bool) {
        if !force && self.last_scan.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
            return;
        }
        let started = Instant::now();
        self.last_scan = Some(started);
        let mut held = HashSet::new();
        let mut over_cap = 0;
        for (inode, path) in candidates() {
            if inode == self.own || !held.insert(inode) {
                continue;
            }
            if self.others.contains_key(&inode) || self.refused.contains(&inode) {
                continue;
            }
            if self.others.len() >= MAX_NAMESPACES {
                over_cap += 1;
                continue;
            }
            // The process may have exited between readlink and open: then it is not held
            // by it any more, and the next scan sees whoever still holds it.
            let Ok(handle) = File::open(&path) else {
                continue;
            };
            // The path may now name another namespace (pid reuse): keep what it is.
            match handle.metadata() {
                Ok(m) if m.ino() as u32 == inode => {
                    self.others.insert(inode, Ns { handle, diag: None });
                }
                _ => continue,
            }
        }
        self.others.retain(|inode, _| held.contains(inode));
        self.refused.retain(|inode| held.contains(inode));
        let others = &self.others;
        self.asked.retain(|inode, at| {
            !others.contains_key(inode) && started.duration_since(*at) < ASKED_FOR
        });
        if over_cap > self.over_cap {
            if self.over_cap == 0 {
                eprintln!(
                    "tracer: warning: {over_cap} network namespaces not followed (at most {MAX_NAMESPACES} are): their TIME_WAIT sockets, existing connections and socket owners will not be looked up"
                );
            }
            self.over_cap = over_cap;
        }
    }
}

/// The namespace the output treats as "here" (text shows any other one): the tracer's own
/// when live, the recording tracer's in a replay. 0: unknown (a recording from before
/// namespaces were read, whose events do not know theirs either): none is shown. Per thread
/// in unit tests, which run in parallel and each choose their own.
#[cfg(not(test))]
static HOME: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
#[cfg(test)]
thread_local! {
    static HOME: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The namespace "here" ([`set_home`]); 0 when unknown.
pub fn home() -> u32 {
    #[cfg(not(test))]
    return HOME.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(test)]
    return HOME.with(std::cell::Cell::get);
}

pub fn set_home(netns: u32) {
    #[cfg(not(test))]
    HOME.store(netns, std::sync::atomic::Ordering::Relaxed);
    #[cfg(test)]
    HOME.with(|h| h.set(netns));
}

/// Whether the text output names the namespace `netns`: known, and not "here". One load
/// and a comparison: it runs for every text row.
#[inline]
pub fn is_foreign(netns: u32) -> bool {
    #[cfg(not(test))]
    let home = HOME.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(test)]
    let home = HOME.with(std::cell::Cell::get);
    netns != 0 && home != 0 && netns != home
}

/// The inode of the tracer's own network namespace.
pub fn own_netns() -> Option<u32> {
    std::fs::metadata("/proc/self/ns/net")
        .ok()
        .map(|m| m.ino() as u32)
}

/// Every namespace reference on the host: (inode, a path that opens it).
fn candidates() -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for e in procs.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let path = Path::new("/proc").join(pid).join("ns/net");
            if let Some(inode) = std::fs::read_link(&path)
                .ok()
                .and_then(|l| parse_ns_link(l.to_str()?))
            {
                out.push((inode, path));
            }
        }
    }
    for dir in BIND_MOUNT_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            // A bind-mounted namespace file: its inode is the namespace's (anything else
            // there names no namespace a socket reports, so it is never looked up).
            if let Ok(m) = std::fs::metadata(&path) {
                out.push((m.ino() as u32, path));
            }
        }
    }
    out
}

/// The inode in a `/proc/PID/ns/net` link: `net:[4026531840]`.
fn parse_ns_link(link: &str) -> Option<u32> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// A sock_diag socket in the namespace `handle` refers to: created by a thread that entered
/// it (setns changes only the calling thread's namespace; the socket stays in the namespace
/// it was created in after the thread is gone).
fn socket_in(handle: &File) -> io::Result<SockDiag> {
    let fd = handle.try_clone()?;
    std::thread::Builder::new()
        .name("tracer-netns".into())
        .spawn(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            SockDiag::new()
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_parse() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    /// An inode no scan has looked for since it was first asked about is pending, not gone
    /// (the bug: a namespace created just after a scan was "gone" for the next second).
    #[test]
    fn unknown_namespace_is_pending_until_a_scan_looked_for_it() {
        let Ok(mut ns) = Namespaces::new() else {
            return; // no sock_diag here: nothing to test
        };
        // Inode 1 is no namespace's.
        ns.scan(true);
        assert!(matches!(ns.lookup(1), Lookup::Pending));
        std::thread::sleep(FIRST_MISS_RESCAN);
        assert!(matches!(ns.lookup(1), Lookup::Gone));
        // Known gone now: not scanned for again within a second.
        let before = ns.last_scan;
        assert!(matches!(ns.lookup(1), Lookup::Gone));
        assert_eq!(ns.last_scan, before);
    }

    /// A namespace nobody holds any more is released by the periodic scan, with no event and
    /// an empty table (the rescan used to wait for a table with sockets in it).
    #[test]
    fn the_periodic_scan_releases_namespaces_nobody_holds() {
        let mut ns = Namespaces::new().expect("a sock_diag socket (netlink, no privilege needed)");
        // Nothing held: nothing to release, no scan.
        assert!(!ns.rescan_if_due());
        // A handle under an inode no process or bind mount has (1 is no namespace's).
        let hold = || Ns {
            handle: File::open("/proc/self/ns/net").expect("/proc/self/ns/net"),
            diag: None,
        };
        ns.others.insert(1, hold());
        ns.last_scan = Some(Instant::now());
        assert!(!ns.rescan_if_due(), "not due yet");
        assert!(ns.others.contains_key(&1));
        ns.last_scan = Instant::now().checked_sub(PERIODIC_SCAN);
        assert!(ns.rescan_if_due());
        assert!(!ns.others.contains_key(&1), "released");
    }

    #[test]
    fn own_namespace_is_listed() {
        let own = own_netns().expect("/proc/self/ns/net");
        let cands = candidates();
        assert!(cands.iter().any(|(i, _)| *i == own));
    }
}
