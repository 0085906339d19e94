//! Owners of sockets from /proc, found by the socket inode sock_diag gives in the socket's
//! own namespace.
use std::{
    collections::{HashMap, HashSet},
    io,
};

use super::{Lookup, Namespaces};
use crate::{
    cgroup::{self, Names},
    decode::{Comm, SockAddr},
    table::{NsTuple, Owner, OwnerSource, Table, Tuple},
};

/// Finds the owners of sockets the tracer saw no process-context event for (older than the
/// tracer, or accepted from a listener it never saw), as `ss -p` does: the socket's inode from
/// sock_diag, then the process holding `socket:[inode]` among /proc/<pid>/fd. A /proc scan is
/// costly, so it runs at most once a second, only when such sockets exist, for at most
/// [`MAX_LOOKUPS`] of them, and gives up on a socket after [`MAX_TRIES`] rounds.
pub struct OwnerResolver {
    /// The owners' cgroup paths, from /proc/PID/cgroup, are noted here.
    names: Names,
    last_ns: Option<u64>,
    last_prune_ns: u64,
    /// sock_diag dumps in the tracer's own namespace that failed (that round went without
    /// them; said once, counted at exit).
    pub failed: u64,
}

/// How often, and after how long without events, open sockets are checked against the
/// kernel's list and dropped if it no longer has them (their CLOSE was not seen).
pub const PRUNE_EVERY_NS: u64 = 60_000_000_000;

pub const MAX_LOOKUPS: usize = 4096;
pub const MAX_TRIES: u8 = 3;

impl OwnerResolver {
    pub fn new(names: Names) -> Self {
        Self {
            names,
            last_ns: None,
            last_prune_ns: 0,
            failed: 0,
        }
    }

    /// Every [`PRUNE_EVERY_NS`]: drops open sockets quiet for that long that the kernel no
    /// longer has, in their own namespaces (a namespace nobody holds any more has none).
    /// Returns them (incomplete). Also releases the namespaces no longer held.
    pub fn prune(
        &mut self,
        now_ns: u64,
        table: &mut Table,
        namespaces: &mut Namespaces,
    ) -> io::Result<Vec<crate::table::Conn>> {
        if self.last_prune_ns == 0 {
            self.last_prune_ns = now_ns;
        }
        if now_ns.saturating_sub(self.last_prune_ns) < PRUNE_EVERY_NS || table.is_empty() {
            return Ok(Vec::new());
        }
        self.last_prune_ns = now_ns;
        namespaces.scan(true);
        let mut alive = HashSet::new();
        for ns in table.namespaces() {
            match namespaces.lookup(ns) {
                Lookup::Diag(d) => match d.sockets() {
                    // (Orphaned FIN_WAIT2s from the start-up dump are not among these: the
                    // TIME_WAIT lookups follow them to their end.)
                    Ok(socks) => {
                        alive.extend(socks.into_iter().map(|d| NsTuple::new(ns, d.tuple)));
                    }
                    // Could not tell: nothing there is dropped.
                    Err(e) => {
                        if namespaces.is_own(ns) {
                            dump_failed(e, ns, &mut self.failed)?;
                        }
                        alive.extend(table.tuples_in(ns));
                    }
                },
                Lookup::Gone => {}
                Lookup::Refused | Lookup::Pending => alive.extend(table.tuples_in(ns)),
            }
        }
        Ok(table.prune_vanished(&alive, now_ns.saturating_sub(PRUNE_EVERY_NS)))
    }

    pub fn poll(
        &mut self,
        now_ns: u64,
        table: &mut Table,
        namespaces: &mut Namespaces,
    ) -> io::Result<()> {
        if self
            .last_ns
            .is_some_and(|l| now_ns.saturating_sub(l) < 1_000_000_000)
        {
            return Ok(());
        }
        // At most once a second even when nothing is found: finding them walks every open
        // socket (100,000 of them walked after every batch took a quarter of the reader).
        self.last_ns = Some(now_ns);
        let wanted: Vec<_> = table.unowned(MAX_TRIES).take(MAX_LOOKUPS).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let (found, failed) = self.lookup(&wanted, namespaces)?;
        // A failed dump is no try: those sockets are looked up again next round.
        for (sock, t) in &wanted {
            if !failed.contains(&t.netns) {
                table.owner_lookup_tried(*sock);
            }
        }
        for (sock, owner) in found {
            table.set_owner(sock, owner);
        }
        Ok(())
    }

    /// Before a stuck report names an owner that is unknown or only inherited from the
    /// listener (a pre-fork server's master, when the accept was not seen): the process that
    /// really holds each of `socks` now, from /proc in the socket's own namespace, becomes
    /// its owner (source `procfs`). Those not found keep what they had.
    pub fn confirm(
        &mut self,
        socks: &[(SockAddr, NsTuple)],
        table: &mut Table,
        namespaces: &mut Namespaces,
    ) -> io::Result<()> {
        if socks.is_empty() {
            return Ok(());
        }
        for (sock, owner) in self.lookup(socks, namespaces)?.0 {
            table.set_owner(sock, owner);
        }
        Ok(())
    }

    /// The owners /proc gives for `wanted`: each socket's inode from sock_diag in its own
    /// namespace, then the process holding `socket:[inode]`. Also the namespaces whose dump
    /// failed (their sockets were not looked up).
    fn lookup(
        &mut self,
        wanted: &[(SockAddr, NsTuple)],
        namespaces: &mut Namespaces,
    ) -> io::Result<(Found, HashSet<u32>)> {
        // Socket inodes are unique on the host, but only the socket's own namespace can
        // tell which inode a tuple has.
        let mut by_ns: HashMap<u32, Vec<(SockAddr, Tuple)>> = HashMap::new();
        for (sock, t) in wanted {
            by_ns.entry(t.netns).or_default().push((*sock, t.tuple));
        }
        let mut want_inodes = HashMap::new();
        let mut failed = HashSet::new();
        for (ns, socks) in by_ns {
            let inodes = match namespaces.lookup(ns) {
                Lookup::Diag(d) => match d.inodes() {
                    Ok(i) => i,
                    Err(e) => {
                        if namespaces.is_own(ns) {
                            dump_failed(e, ns, &mut self.failed)?;
                        }
                        failed.insert(ns);
                        continue;
                    }
                },
                Lookup::Gone | Lookup::Refused | Lookup::Pending => continue,
            };
            for (sock, t) in socks {
                if let Some(&(inode, uid)) = inodes.get(&t) {
                    want_inodes.insert(inode, (sock, uid));
                }
            }
        }
        let found = procfs_owners(&want_inodes.keys().copied().collect());
        note_cgroups(&self.names, found.values());
        let owners = want_inodes
            .into_iter()
            .filter_map(|(inode, (sock, uid))| {
                let p = found.get(&inode)?;
                Some((
                    sock,
                    Owner {
                        pid: p.pid,
                        comm: p.comm,
                        uid,
                        cgroup_id: p.cgroup_id,
                        source: OwnerSource::Procfs,
                    },
                ))
            })
            .collect();
        Ok((owners, failed))
    }
}

/// A sock_diag dump in the tracer's own namespace failed. Only a kernel that cannot answer at
/// all (no `inet_diag`/`tcp_diag`) stops the owner lookups and the pruning (`Err`); any other
/// failure is counted in `failed`, said the first time, and that round goes without the
/// dump: nothing is pruned and no socket is given up on for it.
fn dump_failed(e: io::Error, ns: u32, failed: &mut u64) -> io::Result<()> {
    if super::unavailable(&e) {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "this kernel cannot list sockets ({e}): load the tcp_diag module (modprobe tcp_diag)"
            ),
        ));
    }
    *failed += 1;
    if *failed == 1 {
        eprintln!(
            "tracer: warning: a sock_diag dump for owner lookups failed ({e}, network namespace {ns}): retried at the next round; failures are counted at exit"
        );
    }
    Ok(())
}

/// Owners found by [`OwnerResolver::lookup`], by socket.
type Found = Vec<(SockAddr, Owner)>;

/// A process found holding a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcOwner {
    pub pid: u32,
    pub comm: Comm,
    /// Its cgroup v2 id; 0 if unknown (no cgroup2 mounted, or the process is gone).
    pub cgroup_id: u64,
    /// Its cgroup v2 path, from /proc/PID/cgroup.
    pub cgroup_path: Option<String>,
}

/// The cgroups /proc named for owners, into the cache: cheaper than a rescan.
pub(super) fn note_cgroups<'a>(names: &Names, owners: impl Iterator<Item = &'a ProcOwner>) {
    for o in owners {
        if let Some(p) = &o.cgroup_path {
            names.note(o.cgroup_id, p);
        }
    }
}

/// Scans /proc/<pid>/fd for `socket:[inode]` links: inode → the process holding it. A
/// socket held by several processes (a descriptor inherited across fork: a pre-fork server's
/// listener, a child that did not close what it inherited) goes to the one that started
/// first (`starttime` in /proc/PID/stat; the lower pid on a tie): the parent that made or
/// received the socket before handing it down. The lowest pid, which it replaced, is the
/// same until pids wrap around, and then names a child. Every process is looked at, since
/// the oldest holder may have any pid.
pub fn procfs_owners(inodes: &std::collections::HashSet<u32>) -> HashMap<u32, ProcOwner> {
    let mut out: HashMap<u32, ProcOwner> = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // inode → (start time, pid) of the oldest holder so far.
    let mut oldest: HashMap<u32, (u64, u32)> = HashMap::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        // Read once per process, and only for one that holds a wanted socket.
        let mut started: Option<u64> = None;
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u32>().ok())
                .filter(|i| inodes.contains(i))
            else {
                continue;
            };
            // A process gone since has no start time: it sorts last.
            let at = *started.get_or_insert_with(|| proc_start_time(pid).unwrap_or(u64::MAX));
            let candidate = (at, pid);
            if oldest.get(&inode).is_some_and(|&o| o <= candidate) {
                continue;
            }
            oldest.insert(inode, candidate);
        }
    }
    for (inode, (_, pid)) in oldest {
        let cg = cgroup::mount().and_then(|m| cgroup::proc_cgroup(pid, m));
        out.insert(
            inode,
            ProcOwner {
                pid,
                comm: proc_comm(pid),
                cgroup_id: cg.as_ref().map_or(0, |c| c.0),
                cgroup_path: cg.map(|c| c.1),
            },
        );
    }
    out
}

/// A process's start time, in clock ticks after boot: field 22 of /proc/PID/stat.
fn proc_start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 (`starttime`) of a /proc/PID/stat line. The comm (field 2) is in parentheses
/// and may itself hold spaces and parentheses: the fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts with field 3 (state): field 22 is the 20th after it.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

fn proc_comm(pid: u32) -> Comm {
    let mut c = [0u8; 16];
    if let Ok(s) = std::fs::read(format!("/proc/{pid}/comm")) {
        let s = s.strip_suffix(b"\n").unwrap_or(&s);
        let n = s.len().min(15);
        c[..n].copy_from_slice(&s[..n]);
    }
    Comm(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_dump_stops_lookups_only_when_the_kernel_cannot_answer() {
        let mut failed = 0;
        // A transient failure (out of memory for the dump, an interrupted dump): counted.
        for errno in [libc::ENOMEM, libc::EINTR, libc::EBUSY] {
            super::dump_failed(std::io::Error::from_raw_os_error(errno), 1, &mut failed).unwrap();
        }
        assert_eq!(failed, 3);
        // No inet_diag / tcp_diag: stops, with the fix.
        let e = super::dump_failed(
            std::io::Error::from_raw_os_error(libc::ENOENT),
            1,
            &mut failed,
        )
        .unwrap_err();
        assert!(e.to_string().contains("modprobe tcp_diag"), "{e}");
        assert_eq!(failed, 3);
    }

    use super::*;

    #[test]
    fn start_times_parse_whatever_the_comm() {
        let tail =
            "S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615";
        for comm in ["sleep", "a b", "x) (y", ")", ""] {
            let line = format!("4242 ({comm}) {tail}");
            assert_eq!(parse_start_time(&line), Some(123_456), "{line}");
        }
        assert_eq!(parse_start_time("4242 (x) S 1"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
        let me = proc_start_time(std::process::id()).expect("our own start time");
        assert!(me > 0);
    }

    /// A socket shared with a child (inherited across fork) is the parent's: it started
    /// first. The child here is started after us, so it has the later start time whatever
    /// the pids.
    #[test]
    fn a_shared_socket_belongs_to_the_process_that_started_first() {
        use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino() as u32;
        // A child holding the same socket: the listener's descriptor, duplicated to 3.
        let mut child = {
            use std::os::unix::process::CommandExt as _;
            let raw = fd;
            let mut c = std::process::Command::new("sleep");
            c.arg("10");
            // SAFETY: only dup2 and fcntl, async-signal-safe, between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    // dup2 onto itself (the listener at 3) keeps close-on-exec: cleared apart.
                    if libc::dup2(raw, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c.spawn().unwrap()
        };
        let child_pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Until the child has exec'ed with the socket at fd 3.
        while std::fs::read_link(format!("/proc/{child_pid}/fd/3"))
            .map_or(true, |l| l.to_str() != Some(&format!("socket:[{inode}]")))
            || std::fs::read_to_string(format!("/proc/{child_pid}/comm"))
                .map_or(true, |c| c.trim() != "sleep")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never held the socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let found = procfs_owners(&[inode].into_iter().collect());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.get(&inode).map(|o| o.pid), Some(std::process::id()));
    }

    #[test]
    fn procfs_finds_this_process_sockets() {
        use std::os::unix::fs::MetadataExt as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino() as u32;
        let found = procfs_owners(&[inode].into_iter().collect());
        let me = found.get(&inode).expect("our own socket is found");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.comm.as_str().is_empty());
        // Our cgroup: the inode of our directory under the cgroup2 mount, wherever that is
        // (/sys/fs/cgroup/unified on a hybrid host), what bpf_get_current_cgroup_id() says.
        if let Some(m) = crate::cgroup::mount() {
            use std::os::unix::fs::MetadataExt as _;
            let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let path = crate::cgroup::v2_path(&text).unwrap();
            let ino = std::fs::metadata(m.dir(path).unwrap()).unwrap().ino();
            assert_eq!((me.cgroup_id, me.cgroup_path.as_deref()), (ino, Some(path)));
        }
    }
}
