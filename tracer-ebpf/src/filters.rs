//! The filters, shared by every program: family and ports first (cheapest), then addresses,
//! network namespace and owner.
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    },
    maps::lpm_trie::Key,
};
use tracer_common::{
    AF_INET, AddrKey, Config, KOwner, OWNER_CGROUP, OWNER_COMM, OWNER_PID, PORT_LOCAL, PORT_REMOTE,
    SockOffsets, in_owner_context, tcp,
};

use crate::{
    maps::{
        ADDRS, CGROUPS, COMMS, LISTEN_OWNERS, LISTEN_TGIDS, NETNS, NETNS_OFFSETS, OWNERS, PIDS,
        PORTS,
    },
    readers::{field, kread},
};

/// The family and port filters, shared by every program: checked before anything else is
/// read, so filtered-out events cost as little as possible.
#[inline(always)]
pub(crate) fn passes(cfg: &Config, family: u16, sport: u16, dport: u16) -> bool {
    if cfg.family != 0 && cfg.family != family {
        return false;
    }
    if cfg.filter_ports == 0 {
        return true;
    }
    // SAFETY: the map values are plain u8s, only read here and written by the loader.
    let flag = |port: u16| unsafe { PORTS.get(port) }.copied().unwrap_or(0);
    flag(sport) & PORT_LOCAL != 0 || flag(dport) & PORT_REMOTE != 0
}

/// The address filter (`--addr`): either side's address in one of the prefixes.
#[inline(always)]
pub(crate) fn addr_passes(cfg: &Config, family: u16, saddr: &[u64; 2], daddr: &[u64; 2]) -> bool {
    if cfg.filter_addrs == 0 {
        return true;
    }
    let key = |a: &[u64; 2]| -> AddrKey {
        // SAFETY: two u64 words are 16 plain bytes, in memory order.
        let bytes = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(*a) };
        if family == AF_INET {
            // IPv4 as ::ffff:a.b.c.d, the form the loader stores IPv4 prefixes in.
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, bytes[0], bytes[1], bytes[2], bytes[3],
            ]
        } else {
            bytes
        }
    };
    ADDRS.get(Key::new(128, key(saddr))).is_some() || ADDRS.get(Key::new(128, key(daddr))).is_some()
}

/// Keeps the kernel's owner map (only with owner filters) and applies `--pid`, `--comm`,
/// `--cgroup`. A socket whose owner is not known here (older than the tracer) passes: user
/// space resolves it from /proc and decides.
#[inline(always)]
pub(crate) fn owner_passes(cfg: &Config, sk: u64, old: u8, new: u8, sport: u16) -> bool {
    if cfg.filter_owner == 0 {
        return true;
    }
    if in_owner_context(old, new) {
        let mut o = KOwner::default();
        // SAFETY: helpers without preconditions; `o.comm` is a valid 16-byte buffer.
        unsafe {
            o.tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            o.cgroup_id = bpf_get_current_cgroup_id();
            bpf_get_current_comm(o.comm.as_mut_ptr().cast(), 16);
        }
        let _ = OWNERS.insert(sk, o, 0);
        if new == tcp::LISTEN {
            let _ = LISTEN_OWNERS.insert(sport, o, 0);
        } else if old == tcp::LISTEN {
            let _ = LISTEN_OWNERS.remove(sport);
        }
    } else if old == tcp::LISTEN && new == tcp::SYN_RECV {
        // SAFETY: a map value read and copied at once.
        if let Some(o) = unsafe { LISTEN_OWNERS.get(sport) }.copied() {
            let _ = OWNERS.insert(sk, o, 0);
        }
    }
    known_owner_passes(cfg, sk)
}

/// The [`LISTEN_TGIDS`] key of a listener.
#[inline(always)]
pub(crate) fn listen_key(netns: u32, port: u16) -> u64 {
    (u64::from(netns) << 16) | u64::from(port)
}

/// After a listener's `CLOSE -> LISTEN` or `LISTEN -> CLOSE` was submitted (user space knows
/// the listener and its owner): keeps [`LISTEN_TGIDS`], which lets the accept program skip
/// the accepts of the listener's own process.
#[inline(always)]
pub(crate) fn note_listener(old: u8, new: u8, netns: u32, port: u16) {
    let listen = (old, new) == (tcp::CLOSE, tcp::LISTEN);
    if !listen && (old, new) != (tcp::LISTEN, tcp::CLOSE) {
        return;
    }
    // SAFETY: a helper without preconditions.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let key = listen_key(netns, port);
    // SAFETY: a map value read and copied at once.
    let known = unsafe { LISTEN_TGIDS.get(key) }.copied();
    match known {
        None if listen => {
            let _ = LISTEN_TGIDS.insert(key, tgid, 0);
        }
        // Another process's listener on the same port: whose an accept came from is not
        // known here, so none is skipped.
        Some(t) if listen && t != tgid => {
            let _ = LISTEN_TGIDS.insert(key, 0, 0);
        }
        Some(t) if !listen && t == tgid && t != 0 => {
            let _ = LISTEN_TGIDS.remove(key);
        }
        _ => {}
    }
}

/// The inode of the socket's own network namespace (not the current task's), read once per
/// record: it goes into the event (user space asks sock_diag and /proc in that namespace)
/// and decides `--netns`. 0 when there is no socket, the offsets are unknown, or the read
/// fails.
#[inline(always)]
pub(crate) fn sock_netns(cfg: &Config, sk: u64) -> u32 {
    if (cfg.read_netns == 0 && cfg.filter_netns == 0) || sk == 0 {
        return 0;
    }
    let off = NETNS_OFFSETS.load();
    // SAFETY: bpf_probe_read_kernel checks the addresses itself and fails cleanly; the
    // offsets come from the running kernel's BTF.
    unsafe {
        bpf_probe_read_kernel((sk + u64::from(off.skc_net)) as *const u64)
            .and_then(|net| bpf_probe_read_kernel((net + u64::from(off.net_inum)) as *const u32))
    }
    .unwrap_or(0)
}

/// [`sock_netns`] for a socket read with [`crate::readers::read_tcp_sock`]: its namespace
/// pointer `net` may have come with the head copy (one read left, not two).
#[inline(always)]
pub(crate) fn read_sock_netns(cfg: &Config, sk: u64, net: u64, o: *const SockOffsets) -> u32 {
    if cfg.read_netns == 0 && cfg.filter_netns == 0 {
        return 0;
    }
    let net = if net != 0 {
        Ok(net)
    } else {
        kread::<u64>(sk, field!(o, skc_net))
    };
    net.and_then(|net| kread::<u32>(net, field!(o, net_inum)))
        .unwrap_or(0)
}

/// `--netns`: events without a socket pass; a socket whose namespace cannot be read (0) is
/// dropped only if the filter is on.
#[inline(always)]
pub(crate) fn netns_passes(cfg: &Config, sk: u64, netns: u32) -> bool {
    if cfg.filter_netns == 0 || sk == 0 {
        return true;
    }
    // SAFETY: a map lookup of a plain u32 key.
    netns != 0 && unsafe { NETNS.get(netns) }.is_some()
}

/// The owner filters for a socket, from the owner map alone (context events).
#[inline(always)]
pub(crate) fn known_owner_passes(cfg: &Config, sk: u64) -> bool {
    if cfg.filter_owner == 0 || sk == 0 {
        return true;
    }
    // SAFETY: map values are plain data, read at once.
    let Some(o) = (unsafe { OWNERS.get(sk) }).copied() else {
        return true;
    };
    // SAFETY: as above.
    unsafe {
        (cfg.filter_owner & OWNER_PID == 0 || PIDS.get(o.tgid).is_some())
            && (cfg.filter_owner & OWNER_COMM == 0 || COMMS.get(o.comm).is_some())
            && (cfg.filter_owner & OWNER_CGROUP == 0 || CGROUPS.get(o.cgroup_id).is_some())
    }
}
