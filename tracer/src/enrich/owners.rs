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
                    Err(e) if namespaces.is_own(ns) => return Err(e),
                    // Could not tell: nothing there is dropped.
                    Err(_) => alive.extend(table.tuples_in(ns)),
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
        let found = self.lookup(&wanted, namespaces)?;
        for (sock, _) in &wanted {
            table.owner_lookup_tried(*sock);
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
        for (sock, owner) in self.lookup(socks, namespaces)? {
            table.set_owner(sock, owner);
        }
        Ok(())
    }

    /// The owners /proc gives for `wanted`: each socket's inode from sock_diag in its own
    /// namespace, then the process holding `socket:[inode]`.
    fn lookup(
        &self,
        wanted: &[(SockAddr, NsTuple)],
        namespaces: &mut Namespaces,
    ) -> io::Result<Vec<(SockAddr, Owner)>> {
        // Socket inodes are unique on the host, but only the socket's own namespace can
        // tell which inode a tuple has.
        let mut by_ns: HashMap<u32, Vec<(SockAddr, Tuple)>> = HashMap::new();
        for (sock, t) in wanted {
            by_ns.entry(t.netns).or_default().push((*sock, t.tuple));
        }
        let mut want_inodes = HashMap::new();
        for (ns, socks) in by_ns {
            let inodes = match namespaces.lookup(ns) {
                Lookup::Diag(d) => match d.inodes() {
                    Ok(i) => i,
                    Err(e) if namespaces.is_own(ns) => return Err(e),
                    Err(_) => continue,
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
        Ok(want_inodes
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
            .collect())
    }
}

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

/// Scans /proc/<pid>/fd for `socket:[inode]` links: inode → the lowest pid holding it.
pub fn procfs_owners(inodes: &std::collections::HashSet<u32>) -> HashMap<u32, ProcOwner> {
    let mut out: HashMap<u32, ProcOwner> = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u32>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) && !out.contains_key(&inode) {
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
        }
        if out.len() == inodes.len() {
            break;
        }
    }
    out
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
    use super::*;

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
