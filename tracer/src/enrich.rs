//! What the tracepoints cannot tell, from netlink sock_diag and /proc: TIME_WAIT, and the
//! owners of sockets whose history the tracer did not see.
//!
//! The kernel hands an active closer over to a separate timewait socket and reports
//! FIN_WAIT2 → CLOSE (or CLOSING → CLOSE) on the original, so TIME_WAIT never appears on
//! `sock:inet_sock_set_state`. When such a socket closes, tracer looks its 4-tuple up in the
//! kernel's TIME_WAIT table (one sock_diag dump per batch, both families), reports
//! `→ TIME_WAIT` with the timer's expiry, and `TIME_WAIT → CLOSE` once the timewait socket is
//! gone. Cost is bounded: dumps are rate-limited (less often when the table is large) and
//! at most [`MAX_TRACKED`] timewait sockets are followed to their end.
use std::{collections::HashMap, io};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags, Timer},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::{
    cgroup::{self, Names},
    decode::{Comm, Family, TcpState},
    filter::Filter,
    table::DiagTransition,
    table::{Owner, OwnerSource, Seed, Table, TimeWait, Tuple},
};

/// Timewait sockets followed until they end; beyond this only their start is reported.
pub const MAX_TRACKED: usize = 65_536;

/// A netlink sock_diag socket.
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Offset of `idiag_expires` (u32, milliseconds) in `struct inet_diag_msg`: after family,
/// state, timer, retrans (4 × u8) and `struct inet_diag_sockid` (48 bytes). The sock_diag crate
/// parses the message but drops the TIME_WAIT timer's value, which is what we need here.
const IDIAG_EXPIRES: usize = 4 + 48;
/// Size of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;

impl SockDiag {
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; 64 << 10],
        })
    }

    /// Every TCP socket in TIME_WAIT: local/remote tuple → milliseconds left on its timer.
    pub fn time_wait(&mut self) -> io::Result<HashMap<Tuple, u32>> {
        let mut out = HashMap::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, StateFlags::TIME_WAIT, |h, expires_ms| {
                out.insert(tuple(&h.socket_id), expires_ms);
            })?;
        }
        Ok(out)
    }

    /// Every TCP socket but timewait ones: tuple → (socket inode, owner uid).
    pub fn inodes(&mut self) -> io::Result<HashMap<Tuple, (u32, u32)>> {
        Ok(self
            .sockets()?
            .into_iter()
            .filter(|d| d.inode != 0)
            .map(|d| (d.tuple, (d.inode, d.uid)))
            .collect())
    }

    /// Every TCP socket but timewait and request ones, both families.
    pub fn sockets(&mut self) -> io::Result<Vec<DiagSocket>> {
        let mut out = Vec::new();
        let states = StateFlags::all() - StateFlags::TIME_WAIT;
        for family in [AF_INET, AF_INET6] {
            self.dump(family, states.clone(), |h, _| {
                if h.state == TcpState::NewSynRecv as u8 {
                    return; // request mini-sockets: not connections yet
                }
                if matches!(h.timer, Some(Timer::TimeWait)) {
                    // A timewait mini-socket (an orphaned FIN_WAIT2 handed over early, or
                    // TIME_WAIT itself): owned by no process, and it never shows on the
                    // tracepoints, so it could not be followed.
                    return;
                }
                out.push(DiagSocket {
                    family: if h.family == AF_INET {
                        Family::Ipv4
                    } else {
                        Family::Ipv6
                    },
                    state: h.state,
                    tuple: tuple(&h.socket_id),
                    inode: h.inode,
                    uid: h.uid,
                });
            })?;
        }
        Ok(out)
    }

    fn dump(
        &mut self,
        family: u8,
        states: StateFlags,
        mut f: impl FnMut(&InetResponseHeader, u32),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let mut req = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id,
            })
            .into(),
        );
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let bytes = &self.buf[off..n];
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"))
                })?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(io::Error::other(format!("sock_diag: {e:?}")));
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let at = NLMSG_HDR + IDIAG_EXPIRES;
                        let expires = bytes
                            .get(at..at + 4)
                            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        f(&r.header, expires);
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

/// One socket as sock_diag reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: Family,
    /// Raw `TCP_*` state.
    pub state: u8,
    pub tuple: Tuple,
    pub inode: u32,
    pub uid: u32,
}

/// Seeds the table with every TCP socket that exists now (one sock_diag dump, one /proc
/// scan for their owners), so connections older than the tracer can be found stuck.
/// Returns how many were seeded. The owners' cgroups are noted in `names`.
pub fn seed(table: &mut Table, filter: &Filter, names: &Names, now_ns: u64) -> io::Result<usize> {
    let socks: Vec<DiagSocket> = SockDiag::new()?
        .sockets()?
        .into_iter()
        .filter(|d| filter.matches_tuple(d.family, &d.tuple))
        .collect();
    let inodes = socks.iter().map(|d| d.inode).filter(|&i| i != 0).collect();
    let owners = procfs_owners(&inodes);
    note_cgroups(names, owners.values());
    let mut n = 0;
    for d in socks {
        // `--state` is about where a connection goes: it is applied to what is reported.
        let Ok(state) = TcpState::try_from(d.state) else {
            continue;
        };
        let owner = owners.get(&d.inode).map(|p| Owner {
            pid: p.pid,
            comm: p.comm,
            uid: d.uid,
            cgroup_id: p.cgroup_id,
            source: OwnerSource::Procfs,
        });
        table.seed(
            Seed {
                family: d.family,
                tuple: d.tuple,
                state,
                owner,
            },
            now_ns,
        );
        n += 1;
    }
    Ok(n)
}

fn tuple(id: &SocketId) -> Tuple {
    Tuple::new(
        id.source_address,
        id.source_port,
        id.destination_address,
        id.destination_port,
    )
}

struct Tracked {
    end: DiagTransition,
}

/// Confirms active closers' TIME_WAIT and follows it to its end.
pub struct TimeWaitTracker {
    diag: SockDiag,
    last_dump_ns: Option<u64>,
    /// How many timewait sockets the last dump returned (sets the dump rate).
    last_size: usize,
    /// How long the last dump took (sets the dump rate).
    last_dump_cost_ns: u64,
    tracked: HashMap<Tuple, Tracked>,
    /// Timewait sockets confirmed but not followed (over [`MAX_TRACKED`]).
    pub untracked: u64,
}

impl TimeWaitTracker {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            diag: SockDiag::new()?,
            last_dump_ns: None,
            last_size: 0,
            last_dump_cost_ns: 0,
            tracked: HashMap::new(),
            untracked: 0,
        })
    }

    /// Timewait sockets still followed (at exit: still in TIME_WAIT).
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// How long to wait after a dump before the next one. Each dump walks the kernel's
    /// whole socket hash table (every namespace's sockets, however few match), so its cost
    /// grows with the host's socket count, not with ours: at 50 ms intervals under churn it
    /// cost 15 % of the reader's CPU here. So the interval follows the last dump's own
    /// duration (at most ~1 % of the time in dumps), between 200 ms and 900 ms: every
    /// closed record waits up to [`crate::table::TIME_WAIT_WAIT_NS`] (1.5 s) for its lookup,
    /// which leaves it at least one lookup even at the longest interval.
    fn min_interval_ns(&self) -> u64 {
        let mut ns = self.last_dump_cost_ns.saturating_mul(100);
        if self.last_size > 10_000 {
            // A TIME_WAIT storm of our own makes each reply large too.
            ns = ns.max(900_000_000);
        }
        ns.clamp(200_000_000, 900_000_000)
    }

    /// Looks up pending closers and ends of followed timewait sockets, when due; returns the
    /// transitions learned (→ TIME_WAIT, TIME_WAIT → CLOSE).
    pub fn poll(&mut self, now_ns: u64, table: &mut Table) -> io::Result<Vec<DiagTransition>> {
        let mut out = Vec::new();
        // Cheap checks first: this runs after every batch, the table can hold many records.
        let since = self.last_dump_ns.map(|l| now_ns.saturating_sub(l));
        let (for_pending, for_tracked) = match since {
            None => (true, true),
            Some(s) => (
                s >= self.min_interval_ns(),
                !self.tracked.is_empty() && s >= 1_000_000_000,
            ),
        };
        if !for_pending && !for_tracked {
            return Ok(out);
        }
        let pending: Vec<_> = table.time_wait_pending().collect();
        if pending.is_empty() && !for_tracked {
            return Ok(out);
        }
        let started = std::time::Instant::now();
        let tw = self.diag.time_wait()?;
        self.last_dump_cost_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_dump_ns = Some(now_ns);
        self.last_size = tw.len();
        for p in pending {
            let found = tw.get(&p.tuple).copied();
            let confirmed = found.map(|ms| TimeWait {
                confirmed: true,
                expires_ns: Some(now_ns + u64::from(ms) * 1_000_000),
            });
            table.set_time_wait(
                p.sock,
                p.tuple,
                confirmed.or(Some(TimeWait {
                    confirmed: false,
                    expires_ns: None,
                })),
            );
            let Some(TimeWait { expires_ns, .. }) = confirmed else {
                continue;
            };
            let start = DiagTransition {
                ts_ns: now_ns,
                sock: p.sock,
                family: p.family,
                tuple: p.tuple,
                old: p.from,
                new: TcpState::TimeWait,
                expires_ns,
                in_old_ns: None,
                owner: p.owner,
            };
            out.push(start);
            if self.tracked.len() < MAX_TRACKED {
                let end = DiagTransition {
                    old: TcpState::TimeWait,
                    new: TcpState::Close,
                    expires_ns: None,
                    ..start
                };
                self.tracked.insert(p.tuple, Tracked { end });
            } else {
                self.untracked += 1;
            }
        }
        let gone: Vec<Tuple> = self
            .tracked
            .keys()
            .filter(|t| !tw.contains_key(t))
            .copied()
            .collect();
        for t in gone {
            if let Some(mut tr) = self.tracked.remove(&t) {
                tr.end.in_old_ns = Some(now_ns.saturating_sub(tr.end.ts_ns));
                tr.end.ts_ns = now_ns;
                out.push(tr.end);
            }
        }
        Ok(out)
    }
}

/// Finds the owners of sockets the tracer saw no process-context event for (older than the
/// tracer, or accepted from a listener it never saw), as `ss -p` does: the socket's inode from
/// sock_diag, then the process holding `socket:[inode]` among /proc/<pid>/fd. A /proc scan is
/// costly, so it runs at most once a second, only when such sockets exist, for at most
/// [`MAX_LOOKUPS`] of them, and gives up on a socket after [`MAX_TRIES`] rounds.
pub struct OwnerResolver {
    diag: SockDiag,
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
    pub fn new(names: Names) -> io::Result<Self> {
        Ok(Self {
            diag: SockDiag::new()?,
            names,
            last_ns: None,
            last_prune_ns: 0,
        })
    }

    /// Every [`PRUNE_EVERY_NS`]: drops open sockets quiet for that long that the kernel no
    /// longer has. Returns them (incomplete).
    pub fn prune(&mut self, now_ns: u64, table: &mut Table) -> io::Result<Vec<crate::table::Conn>> {
        if self.last_prune_ns == 0 {
            self.last_prune_ns = now_ns;
        }
        if now_ns.saturating_sub(self.last_prune_ns) < PRUNE_EVERY_NS || table.is_empty() {
            return Ok(Vec::new());
        }
        self.last_prune_ns = now_ns;
        let alive = self.diag.sockets()?.into_iter().map(|d| d.tuple).collect();
        Ok(table.prune_vanished(&alive, now_ns.saturating_sub(PRUNE_EVERY_NS)))
    }

    pub fn poll(&mut self, now_ns: u64, table: &mut Table) -> io::Result<()> {
        if self
            .last_ns
            .is_some_and(|l| now_ns.saturating_sub(l) < 1_000_000_000)
        {
            return Ok(());
        }
        let wanted: Vec<_> = table.unowned(MAX_TRIES).take(MAX_LOOKUPS).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        self.last_ns = Some(now_ns);
        let inodes = self.diag.inodes()?;
        let mut want_inodes = HashMap::new();
        for (sock, t) in &wanted {
            if let Some(&(inode, uid)) = inodes.get(t) {
                want_inodes.insert(inode, (*sock, uid));
            }
        }
        let found = procfs_owners(&want_inodes.keys().copied().collect());
        note_cgroups(&self.names, found.values());
        for (sock, _) in &wanted {
            table.owner_lookup_tried(*sock);
        }
        for (inode, (sock, uid)) in want_inodes {
            if let Some(p) = found.get(&inode) {
                table.set_owner(
                    sock,
                    Owner {
                        pid: p.pid,
                        comm: p.comm,
                        uid,
                        cgroup_id: p.cgroup_id,
                        source: OwnerSource::Procfs,
                    },
                );
            }
        }
        Ok(())
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
fn note_cgroups<'a>(names: &Names, owners: impl Iterator<Item = &'a ProcOwner>) {
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
            let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let path = crate::cgroup::v2_path(&text).unwrap();
            let ino = std::fs::metadata(m.dir(path).unwrap()).unwrap().ino();
            assert_eq!((me.cgroup_id, me.cgroup_path.as_deref()), (ino, Some(path)));
        }
    }
}
