//! What the tracepoints cannot tell, from netlink sock_diag and /proc: TIME_WAIT, the
//! sockets that existed before the tracer, and the owners of sockets whose history the
//! tracer did not see. Every lookup is made in the socket's own network namespace
//! ([`netns`]): a container's sockets are only visible to a sock_diag socket created in it.
//!
//! The kernel hands an active closer over to a separate timewait socket and reports
//! FIN_WAIT2 → CLOSE (or CLOSING → CLOSE) on the original, so TIME_WAIT never appears on
//! `sock:inet_sock_set_state`. When such a socket closes, tracer looks its 4-tuple up in the
//! kernel's timewait table (one sock_diag dump per batch and namespace, both families),
//! reports `→ TIME_WAIT` with the timer's expiry, and `TIME_WAIT → CLOSE` once the timewait
//! socket is gone. Cost is bounded: dumps are rate-limited (less often when the table is
//! large) and at most [`MAX_TRACKED`] timewait sockets are followed to their end.
use std::{collections::HashMap, io};

use crate::{
    cgroup::Names,
    decode::TcpState,
    filter::Filter,
    table::{Owner, OwnerSource, Seed, Table, Tuple},
};

pub mod netns;
mod owners;
mod sock_diag;
mod time_wait;

pub use netns::{Lookup, Namespaces};
pub use owners::*;
pub use sock_diag::*;
pub use time_wait::*;

/// What the start-up dump found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Sockets seeded.
    pub sockets: usize,
    /// Network namespaces dumped.
    pub namespaces: usize,
    /// Namespaces that could not be dumped (entered, or answered).
    pub failed: usize,
    /// Of the sockets, orphaned FIN_WAIT2s (closed by their owner, the peer's FIN awaited).
    pub orphans: usize,
}

/// Seeds the table with every TCP socket that exists now in every network namespace (one
/// sock_diag dump per namespace, one /proc scan for their owners), so connections older
/// than the tracer can be found stuck. An error only when the tracer's own namespace
/// cannot be dumped.
/// The owners' cgroups are noted in `names`. With `orphans` (the TIME_WAIT lookups will
/// follow them), the orphaned FIN_WAIT2s too, at most [`MAX_ORPHANS`].
pub fn seed(
    table: &mut Table,
    filter: &Filter,
    namespaces: &mut Namespaces,
    names: &Names,
    now_ns: u64,
    orphans: bool,
) -> io::Result<Seeded> {
    let own = namespaces.own();
    let mut found: Vec<(u32, DiagSocket)> = Vec::new();
    // Each orphan's FIN_WAIT2 timer, from its timewait socket.
    let mut timers: HashMap<(u32, Tuple), u64> = HashMap::new();
    let mut out = Seeded::default();
    // Without the kernel's namespace of each event, sockets elsewhere could not be told
    // from the tracer's own: then only its own namespace is dumped.
    let all = if namespaces.kernel_reports {
        namespaces.all()
    } else {
        vec![own]
    };
    for ns in all {
        if !filter.netns.is_empty() && !filter.netns.contains(&ns) {
            continue;
        }
        let (socks, tw) = match namespaces.lookup(ns) {
            // Orphaned FIN_WAIT2s are timewait sockets, which a dump of full sockets does
            // not return: they are dumped apart (a failure there only loses them).
            Lookup::Diag(d) => (
                d.sockets(),
                if orphans {
                    d.time_wait().unwrap_or_default()
                } else {
                    HashMap::new()
                },
            ),
            // Just scanned: a namespace not found now is gone.
            Lookup::Gone | Lookup::Pending => continue,
            Lookup::Refused => {
                out.failed += 1;
                continue;
            }
        };
        match socks {
            Ok(socks) => {
                out.namespaces += 1;
                found.extend(
                    socks
                        .into_iter()
                        .filter(|d| filter.matches_tuple(d.family, &d.tuple))
                        .map(|d| (ns, d)),
                );
                // Closed by their owner before the tracer started, the peer's FIN still
                // awaited: no process owns them any more (inode 0).
                let room = MAX_ORPHANS.saturating_sub(timers.len());
                let tw: Vec<_> = tw
                    .into_iter()
                    .filter(|(_, s)| s.state == TcpState::FinWait2)
                    .take(room)
                    .collect();
                timers.extend(tw.iter().map(|(t, s)| ((ns, *t), s.expires_ns())));
                found.extend(
                    tw.into_iter()
                        .map(|(tuple, _)| DiagSocket {
                            family: if tuple.local.addr.is_ipv4() {
                                crate::decode::Family::Ipv4
                            } else {
                                crate::decode::Family::Ipv6
                            },
                            state: TcpState::FinWait2 as u8,
                            tuple,
                            inode: 0,
                            uid: 0,
                        })
                        .filter(|d| filter.matches_tuple(d.family, &d.tuple))
                        .map(|d| (ns, d)),
                );
            }
            Err(e) if namespaces.is_own(ns) => return Err(e),
            // A namespace that went away during the dump: not an error.
            Err(_) => out.failed += 1,
        }
    }
    let inodes = found
        .iter()
        .map(|(_, d)| d.inode)
        .filter(|&i| i != 0)
        .collect();
    let owners = procfs_owners(&inodes);
    owners::note_cgroups(names, owners.values());
    for (ns, d) in found {
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
        // Sockets of the tracer's namespace carry its inode too, as events do.
        let netns = if namespaces.kernel_reports { ns } else { 0 };
        // Only timewait sockets have no inode.
        let orphan = d.inode == 0 && state == TcpState::FinWait2;
        table.seed(
            Seed {
                netns,
                family: d.family,
                tuple: d.tuple,
                state,
                owner,
                orphan,
            },
            now_ns,
        );
        out.sockets += 1;
        if orphan {
            out.orphans += 1;
            // Its FIN_WAIT2 timer: when it gives up, should the peer's FIN never come.
            table.set_orphan(
                crate::decode::SockAddr(0),
                crate::table::NsTuple::new(netns, d.tuple),
                crate::table::Orphan {
                    handoff_ns: 0,
                    expires_ns: timers.get(&(ns, d.tuple)).copied(),
                    end: None,
                },
            );
        }
    }
    Ok(out)
}

/// What `ss -ti` shows of each stuck full socket, from sock_diag in its own namespace (one
/// dump per namespace, of the reported states only): the reports' `info`. Orphaned
/// FIN_WAIT2s (timewait sockets) have none. Best effort: a namespace that cannot be asked
/// leaves its reports without.
pub fn why_stuck(reports: &mut [crate::table::StuckReport], namespaces: &mut Namespaces) {
    use netlink_packet_sock_diag::inet::StateFlags;
    let mut by_ns: std::collections::BTreeMap<u32, StateFlags> = std::collections::BTreeMap::new();
    for r in reports.iter().filter(|r| r.conn.orphan.is_none()) {
        let bit = StateFlags::from_bits_truncate(1 << (r.state as u32));
        *by_ns.entry(r.conn.netns).or_insert(StateFlags::empty()) |= bit;
    }
    for (ns, states) in by_ns {
        let Lookup::Diag(d) = namespaces.lookup(ns) else {
            continue;
        };
        let Ok(info) = d.info(states) else {
            continue;
        };
        for r in reports
            .iter_mut()
            .filter(|r| r.conn.netns == ns && r.conn.orphan.is_none())
        {
            r.info = info.get(&r.conn.tuple).copied();
        }
    }
}
