//! Records that cross the kernel/user boundary, and nothing else.
//!
//! Every type here is `#[repr(C)]` with fixed-width fields and explicit padding, so the
//! eBPF program and the loader agree on the bytes without any serialisation step. Kernel
//! values stay raw integers (states, families, errnos); the loader turns them into enums with
//! `TryFrom`, where an unknown value can be reported instead of silently mis-decoded.
#![no_std]

/// `AF_INET`, as the tracepoints report it in `family`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as the tracepoints report it in `family`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`: `inet_sock_set_state` and `inet_sk_error_report` also fire for SCTP,
/// MPTCP and DCCP sockets.
pub const IPPROTO_TCP: u16 = 6;

/// Raw TCP states (include/net/tcp_states.h), as the tracepoint reports them. The loader turns
/// them into its `TcpState` enum; the kernel side compares raw values.
pub mod tcp {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
}

/// Transitions the kernel makes in the process context of the task acting on the socket:
/// `connect()`, `listen()`, and `close()`/`shutdown()` sending a FIN or closing a listener.
/// Everything else may run in softirq or a timer, where the current task is unrelated. One
/// definition for both sides: the kernel's owner map and the loader's table.
pub const fn in_owner_context(old: u8, new: u8) -> bool {
    use tcp::*;
    matches!(
        (old, new),
        (CLOSE, SYN_SENT)
            | (CLOSE, LISTEN)
            | (LISTEN, CLOSE)
            | (ESTABLISHED, FIN_WAIT1)
            | (SYN_RECV, FIN_WAIT1)
            | (CLOSE_WAIT, LAST_ACK)
    )
}

/// What an [`Event`] is (its `kind`). Values are part of the recording format: never reuse.
pub mod kind {
    /// `sock:inet_sock_set_state`: `oldstate` → `newstate`.
    pub const TRANSITION: u32 = 1;
    /// `tcp:tcp_send_reset`: this host sent a RST (`skaddr` may be 0: no socket).
    pub const SEND_RESET: u32 = 2;
    /// `tcp:tcp_receive_reset`: a RST arrived for the socket.
    pub const RECEIVE_RESET: u32 = 3;
    /// `tcp:tcp_retransmit_skb`: a segment was retransmitted (`oldstate` = socket state).
    pub const RETRANSMIT: u32 = 4;
    /// `tcp:tcp_retransmit_synack`: a SYN-ACK was retransmitted (`skaddr` = the listener).
    pub const RETRANSMIT_SYNACK: u32 = 5;
    /// `sock:inet_sk_error_report`: an error was reported to the socket (`value` = errno).
    /// From the raw tracepoint ([`super::names::ERROR_REPORT_RAW_PROGRAM`]) it carries the
    /// socket's address and namespace; from the classic one only a tuple (`skaddr` 0).
    pub const ERROR_REPORT: u32 = 6;
    /// `tcp:tcp_destroy_sock`: the socket is really freed.
    pub const DESTROY_SOCK: u32 = 7;
    /// `syscalls:sys_exit_accept4` / `sys_exit_accept`: the task on the CPU accepted the
    /// socket (`oldstate` = its state then). Its pid, comm, uid and cgroup are the owner's.
    /// Not sent when the accepting process made the socket's listener (the owner user space
    /// inherits from the listener already).
    pub const ACCEPT: u32 = 8;
    /// A connection's TCP counters, read from its `tcp_sock` as it leaves a synchronized
    /// state for CLOSE: [`super::TcpStats`] packed into the record. It follows that
    /// transition in the same ring record ([`super::CLOSE_WITH_STATS_SIZE`]); recordings
    /// keep it as an event of its own, right after the transition.
    pub const TCP_STATS: u32 = 9;
    /// Number of kinds + 1 (array sizes indexed by kind).
    pub const COUNT: usize = 10;
}

/// Names of the maps, programs and globals in the eBPF object, as the loader looks them up.
/// The kernel side spells them as Rust identifiers (a `static` or `fn` name), so a rename there
/// is not a compile error: the loader's unit tests (`source::object_tests`) parse the built
/// object and check that each name below exists, with the map type, key and value sizes and
/// global sizes the loader assumes.
pub mod names {
    /// Ring buffer carrying [`super::Event`]s.
    pub const EVENTS: &str = "EVENTS";
    /// `tcp_destroy_sock` with direct loads, for the layout [`super::CtxLayout::DESTROY_FAST`].
    pub const DESTROY_FAST_PROGRAM: &str = "tcp_destroy_sock_fast";
    /// Per-CPU [`super::Counters`], one entry per program, indexed by its kind.
    pub const COUNTERS: &str = "COUNTERS";
    /// Ports (`u16` → [`super::PORT_LOCAL`] | [`super::PORT_REMOTE`]) for `--port`,
    /// `--lport`, `--rport`.
    pub const PORTS: &str = "PORTS";
    /// LRU map socket address → [`super::KOwner`], kept only with owner filters.
    pub const OWNERS: &str = "OWNERS";
    /// LRU map listening port → [`super::KOwner`]: accepted sockets inherit it.
    pub const LISTEN_OWNERS: &str = "LISTEN_OWNERS";
    /// LRU map (netns inode << 16 | listening port) → tgid of the listener's maker (0:
    /// several): the accept program skips the accepts of that process.
    pub const LISTEN_TGIDS: &str = "LISTEN_TGIDS";
    /// Sets for `--pid` (u32), `--comm` ([u8; 16]) and `--cgroup` (u64 cgroup id).
    pub const PIDS: &str = "PIDS";
    pub const COMMS: &str = "COMMS";
    pub const CGROUPS: &str = "CGROUPS";
    /// Set of network namespace inodes (u32 → u8) for `--netns`.
    pub const NETNS: &str = "NETNS";
    /// Global [`super::NetnsOffsets`].
    pub const NETNS_OFFSETS: &str = "NETNS_OFFSETS";
    /// Global [`super::AcceptOffsets`].
    pub const ACCEPT_OFFSETS: &str = "ACCEPT_OFFSETS";
    /// Global [`super::TcpStatsOffsets`].
    pub const TCP_STATS_OFFSETS: &str = "TCP_STATS_OFFSETS";
    /// Global [`super::TcpStatsSpans`].
    pub const TCP_STATS_SPANS: &str = "TCP_STATS_SPANS";
    /// Per-CPU array of one [`super::STATS_SCRATCH_SIZE`]-byte buffer the counters' spans
    /// are copied into.
    pub const STATS_SCRATCH: &str = "STATS_SCRATCH";
    /// The accept program, attached to each of [`ACCEPT_TRACEPOINTS`] (syscalls category),
    /// walking to the socket with `bpf_probe_read_kernel`: the fallback.
    pub const ACCEPT_PROGRAM: &str = "sys_exit_accept";
    /// The same walking the file table through BTF-typed pointers (5.11+): tried first.
    pub const ACCEPT_BTF_PROGRAM: &str = "sys_exit_accept_btf";
    /// `inet_sk_error_report` as a raw tracepoint (its argument is the `struct sock *`), at
    /// the socket offsets of [`ERROR_REPORT_OFFSETS`]; the classic tracepoint program of
    /// [`CONTEXT_PROGRAMS`] is the fallback where raw tracepoints are refused.
    pub const ERROR_REPORT_RAW_PROGRAM: &str = "inet_sk_error_report_raw";
    /// The raw tracepoint it attaches to.
    pub const ERROR_REPORT_RAW_TRACEPOINT: &str = "inet_sk_error_report";
    /// Global [`super::SockOffsets`] of the raw error-report program.
    pub const ERROR_REPORT_OFFSETS: &str = "ERROR_REPORT_OFFSETS";
    /// Syscall exits after which the new file descriptor (`ret`) is an accepted socket.
    pub const ACCEPT_TRACEPOINTS: [&str; 2] = ["sys_exit_accept4", "sys_exit_accept"];
    /// LPM trie of address prefixes ([`super::AddrKey`] → `u8`) for `--addr`.
    pub const ADDRS: &str = "ADDRS";
    /// Program reading the record at the compile-time offsets of [`super::layout`].
    pub const PROG_FAST: &str = "inet_sock_set_state";
    /// Program reading the record at the offsets given in [`super::RuntimeLayout`].
    pub const PROG_PORTABLE: &str = "inet_sock_set_state_portable";
    /// Global [`super::Config`].
    pub const CONFIG: &str = "CONFIG";
    /// Global [`super::RuntimeLayout`].
    pub const LAYOUT: &str = "LAYOUT";
    /// Context-event programs: (program, tracepoint category, tracepoint name, kind, global
    /// [`super::CtxLayout`] of that program).
    pub const CONTEXT_PROGRAMS: [(&str, &str, &str, u32, &str); 6] = [
        (
            "tcp_send_reset",
            "tcp",
            "tcp_send_reset",
            super::kind::SEND_RESET,
            "CTX_SEND_RESET",
        ),
        (
            "tcp_receive_reset",
            "tcp",
            "tcp_receive_reset",
            super::kind::RECEIVE_RESET,
            "CTX_RECEIVE_RESET",
        ),
        (
            "tcp_retransmit_skb",
            "tcp",
            "tcp_retransmit_skb",
            super::kind::RETRANSMIT,
            "CTX_RETRANSMIT",
        ),
        (
            "tcp_retransmit_synack",
            "tcp",
            "tcp_retransmit_synack",
            super::kind::RETRANSMIT_SYNACK,
            "CTX_RETRANSMIT_SYNACK",
        ),
        (
            "inet_sk_error_report",
            "sock",
            "inet_sk_error_report",
            super::kind::ERROR_REPORT,
            "CTX_ERROR_REPORT",
        ),
        (
            "tcp_destroy_sock",
            "tcp",
            "tcp_destroy_sock",
            super::kind::DESTROY_SOCK,
            "CTX_DESTROY_SOCK",
        ),
    ];
}

/// Per-CPU counters kept by the programs (one entry of the `COUNTERS` per-CPU array), so the
/// loader can say exactly what was seen, sent and lost. One map lookup per event serves all.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// TCP state transitions the program saw (after the protocol check, before the filters).
    pub seen: u64,
    /// Events (of every kind) that passed the filters and were submitted.
    pub submitted: u64,
    /// Events that passed the filters but found the ring buffer full: lost.
    pub lost_ringbuf_full: u64,
    /// Events whose fields could not be read: lost.
    pub lost_read_error: u64,
    /// Context events (resets, retransmits, errors, destroys) seen, and TCP sockets
    /// accepted by another process than their listener's (the accept program's slot), before
    /// the filters.
    pub context_seen: u64,
}

/// The `sock:inet_sock_set_state` record layout the fast program is compiled for: byte
/// offsets from the start of the record (the 8-byte common header included). This is the
/// layout of every mainline kernel since 5.6 (`protocol` widened from u8 to u16); the loader
/// compares it with the running kernel's `format` file before choosing the fast program.
pub mod layout {
    pub const SKADDR: u32 = 8;
    pub const OLDSTATE: u32 = 16;
    pub const NEWSTATE: u32 = 20;
    pub const SPORT: u32 = 24;
    pub const DPORT: u32 = 26;
    pub const FAMILY: u32 = 28;
    pub const PROTOCOL: u32 = 30;
    pub const PROTOCOL_SIZE: u32 = 2;
    pub const SADDR: u32 = 32;
    pub const DADDR: u32 = 36;
    pub const SADDR_V6: u32 = 40;
    pub const DADDR_V6: u32 = 56;
}

/// One event, of any [`kind`], as the eBPF programs send it (112 bytes, 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// One of [`kind`].
    pub kind: u32,
    /// CPU the event was seen on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`: the socket's identity while it lives; 0 when
    /// the event has none (a RST sent without a socket, an error report from the classic
    /// tracepoint).
    pub skaddr: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high 32 bits, thread id in the low.
    /// The task on the CPU, which in softirq is not the socket's owner.
    pub pid_tgid: u64,
    /// cgroup v2 id of the task on the CPU; only for transitions in the owner's context
    /// ([`in_owner_context`]), 0 otherwise (it would never be used).
    pub cgroup_id: u64,
    /// `bpf_get_current_uid_gid()`: gid high, uid low; like `cgroup_id`, 0 outside the
    /// owner's context.
    pub uid_gid: u64,
    /// `comm` of the task on the CPU, NUL-padded.
    pub comm: [u8; 16],
    /// Local address: 4 bytes then zeros for IPv4, 16 bytes for IPv6; zeros if unknown.
    pub saddr: [u8; 16],
    /// Remote address, same encoding as `saddr`.
    pub daddr: [u8; 16],
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`; 0 if the event does not say.
    pub family: u16,
    /// Transition: raw `TCP_*` state before. Context events: the socket's state, if given.
    pub oldstate: u8,
    /// Transition: raw `TCP_*` state after.
    pub newstate: u8,
    /// Error report: errno (positive). Retransmit: `err`. Send reset: reason. Transition
    /// SYN_RECV → ESTABLISHED: the child socket's `srtt_us` (<< 3, as in `tcp_sock`), the
    /// SYN-ACK's RTT sample, 0 when unknown. Else 0.
    pub value: i32,
    /// Inode of the socket's network namespace (`sk->__sk_common.skc_net->ns.inum`, at
    /// [`NetnsOffsets`] from the kernel's BTF); 0 when the event has no socket or the
    /// offsets are unknown. User space asks sock_diag and /proc in that namespace.
    pub netns: u32,
}

/// Size of [`Event`] on the wire.
pub const EVENT_SIZE: usize = 112;

/// Size of the ring record of a transition from a synchronized state to CLOSE when the
/// counters are read: the [`kind::TRANSITION`] event and its [`kind::TCP_STATS`] event back
/// to back, one reservation instead of two. Every other ring record is one [`Event`].
pub const CLOSE_WITH_STATS_SIZE: usize = 2 * EVENT_SIZE;
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

/// Filters and tuning the loader writes into the programs before loading them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Wake the reader only once this many bytes are pending in the ring buffer; below it
    /// events are submitted with `BPF_RB_NO_WAKEUP` and the reader polls on a timer. Waking
    /// the reader per event is the main per-event cost at high rates.
    pub wakeup_bytes: u64,
    /// 0: any family; otherwise only this one (`AF_INET` / `AF_INET6`).
    pub family: u16,
    /// Non-zero: only events whose local port is in `PORTS` with [`PORT_LOCAL`] set, or
    /// whose remote port is with [`PORT_REMOTE`], pass.
    pub filter_ports: u8,
    /// Non-zero: only events whose local or remote address is in the `ADDRS` trie pass.
    pub filter_addrs: u8,
    /// [`OWNER_PID`] | [`OWNER_COMM`] | [`OWNER_CGROUP`]: track socket owners in the kernel
    /// (`OWNERS`) and drop events of sockets whose known owner does not match.
    pub filter_owner: u8,
    /// Non-zero: only sockets whose network namespace inode is in `NETNS` pass (read through
    /// the socket at the [`NetnsOffsets`] the loader took from the kernel's BTF).
    pub filter_netns: u8,
    /// Non-zero: read every socket's network namespace inode into [`Event::netns`] (the
    /// offsets are known). Zero where the kernel has no BTF: events then say 0, unknown.
    pub read_netns: u8,
    pub _pad: u8,
}

/// Where a socket's netns inode is: `*(u32 *)(*(u64 *)(sk + skc_net) + net_inum)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetnsOffsets {
    pub skc_net: u32,
    pub net_inum: u32,
}

/// Byte offset of `long ret` in a `syscalls:sys_exit_*` record (after the 8-byte common
/// header and `int __syscall_nr`), read by a direct load; the loader checks the running
/// kernel's `format` file before attaching.
pub const SYSCALL_RET: u32 = 16;

/// Where a `struct sock`'s identity is, from the kernel's BTF: byte offsets into the socket
/// (`__sk_common` members and `sk_protocol`, `sk_err`), and of the inode in `struct net`.
/// Shared by the programs that start from a socket pointer (accept, the raw error report).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockOffsets {
    /// `skc_daddr`: remote IPv4 address.
    pub skc_daddr: u32,
    /// `skc_rcv_saddr`: local IPv4 address.
    pub skc_rcv_saddr: u32,
    /// `skc_dport`: remote port, network order.
    pub skc_dport: u32,
    /// `skc_num`: local port, host order.
    pub skc_num: u32,
    /// `skc_family` (u16).
    pub skc_family: u32,
    /// `skc_state` (u8).
    pub skc_state: u32,
    /// `skc_net.net` (`struct net *`).
    pub skc_net: u32,
    /// `skc_v6_daddr`, `skc_v6_rcv_saddr`: IPv6 addresses.
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `net.ns.inum`, in the `struct net` that `skc_net` points to.
    pub net_inum: u32,
    /// `sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `sk_err` (int): the error an error report is about.
    pub sk_err: u32,
    /// `inet_sock.inet_sport` (network order): the local port, which a closed socket still
    /// has after the kernel cleared `skc_num` (an error report after CLOSE).
    pub inet_sport: u32,
    pub _pad: u32,
    /// Non-zero: the `__sk_common` offsets are those of [`SockHead`], so the program copies
    /// the whole head in one read instead of one read per field.
    pub head: u32,
    /// Non-zero: every offset was found (the program does nothing otherwise).
    pub enabled: u32,
}
const _: () = assert!(core::mem::size_of::<SockOffsets>() == 64);

/// The first 88 bytes of `struct sock_common` as every 64-bit kernel lays them out (the
/// address pair, the hash, the port pair, family, state, …, the namespace pointer and the
/// IPv6 addresses). The loader compares the BTF offsets with [`SOCK_HEAD`] and sets
/// [`SockOffsets::head`] only when they match.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockHead {
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub hash: u32,
    pub dport: u16,
    pub num: u16,
    pub family: u16,
    pub state: u8,
    pub _rest: [u8; 29],
    pub net: u64,
    pub v6_daddr: [u64; 2],
    pub v6_rcv_saddr: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<SockHead>() == 88);
// Each field of the copy where SOCK_HEAD says the kernel has it.
const _: () = {
    use core::mem::offset_of;
    let h = SOCK_HEAD;
    assert!(offset_of!(SockHead, daddr) == h.skc_daddr as usize);
    assert!(offset_of!(SockHead, rcv_saddr) == h.skc_rcv_saddr as usize);
    assert!(offset_of!(SockHead, dport) == h.skc_dport as usize);
    assert!(offset_of!(SockHead, num) == h.skc_num as usize);
    assert!(offset_of!(SockHead, family) == h.skc_family as usize);
    assert!(offset_of!(SockHead, state) == h.skc_state as usize);
    assert!(offset_of!(SockHead, net) == h.skc_net as usize);
    assert!(offset_of!(SockHead, v6_daddr) == h.skc_v6_daddr as usize);
    assert!(offset_of!(SockHead, v6_rcv_saddr) == h.skc_v6_rcv_saddr as usize);
};

/// [`SockHead`]'s offsets, as [`SockOffsets`] names them (the other fields 0).
pub const SOCK_HEAD: SockOffsets = SockOffsets {
    skc_daddr: 0,
    skc_rcv_saddr: 4,
    skc_dport: 12,
    skc_num: 14,
    skc_family: 16,
    skc_state: 18,
    skc_net: 48,
    skc_v6_daddr: 56,
    skc_v6_rcv_saddr: 72,
    net_inum: 0,
    sk_protocol: 0,
    sk_err: 0,
    inet_sport: 0,
    _pad: 0,
    head: 0,
    enabled: 0,
};

impl SockOffsets {
    /// Every offset 0, not enabled: what the kernel side starts from until the loader writes
    /// the kernel's (its programs then do nothing).
    pub const NONE: Self = Self {
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_num: 0,
        skc_family: 0,
        skc_state: 0,
        skc_net: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        net_inum: 0,
        sk_protocol: 0,
        sk_err: 0,
        inet_sport: 0,
        _pad: 0,
        head: 0,
        enabled: 0,
    };

    /// Whether the `__sk_common` offsets are [`SOCK_HEAD`]'s.
    pub const fn matches_head(&self) -> bool {
        let h = SOCK_HEAD;
        self.skc_daddr == h.skc_daddr
            && self.skc_rcv_saddr == h.skc_rcv_saddr
            && self.skc_dport == h.skc_dport
            && self.skc_num == h.skc_num
            && self.skc_family == h.skc_family
            && self.skc_state == h.skc_state
            && self.skc_net == h.skc_net
            && self.skc_v6_daddr == h.skc_v6_daddr
            && self.skc_v6_rcv_saddr == h.skc_v6_rcv_saddr
    }
}

/// Where the accept program finds the accepted socket, from the kernel's BTF:
/// `current->files->fdt->fd[ret]->private_data` (a `struct socket *`) `->sk`, bounded by
/// `fdt->max_fds`, and then the socket's fields ([`SockOffsets`]). `enabled` is 0 (the
/// program does nothing) unless every offset was found.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AcceptOffsets {
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds` (unsigned int).
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdt_fd: u32,
    /// `file.private_data`.
    pub file_private_data: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// Non-zero: `fdtable.fd` is 8 bytes after `max_fds` (every kernel): both are read in
    /// one copy.
    pub fdt_pair: u32,
    pub enabled: u32,
    pub sock: SockOffsets,
}
const _: () = assert!(core::mem::size_of::<AcceptOffsets>() == 96);

impl AcceptOffsets {
    /// Every offset 0, not enabled (see [`SockOffsets::NONE`]).
    pub const NONE: Self = Self {
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_private_data: 0,
        socket_sk: 0,
        fdt_pair: 0,
        enabled: 0,
        sock: SockOffsets::NONE,
    };
}

/// `Config::filter_owner` bit: the owner's tgid must be in `PIDS`.
pub const OWNER_PID: u8 = 1;
/// `Config::filter_owner` bit: the owner's comm must be in `COMMS`.
pub const OWNER_COMM: u8 = 2;
/// `Config::filter_owner` bit: the owner's cgroup id must be in `CGROUPS`.
pub const OWNER_CGROUP: u8 = 4;

/// A socket's owner as the kernel program tracks it (for the owner filters).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KOwner {
    pub tgid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<KOwner>() == 32);

/// `PORTS` value bit: the port may be the local one.
pub const PORT_LOCAL: u8 = 1;
/// `PORTS` value bit: the port may be the remote one.
pub const PORT_REMOTE: u8 = 2;

/// Key data of the `ADDRS` LPM trie: an IPv6 address, IPv4 as `::ffff:a.b.c.d`.
pub type AddrKey = [u8; 16];
const _: () = assert!(core::mem::size_of::<Config>() == 16);

/// [`layout`] as a [`RuntimeLayout`]: what the fast program reads, and what the loader
/// compares the running kernel's `format` file with.
pub const FAST_LAYOUT: RuntimeLayout = RuntimeLayout {
    skaddr: layout::SKADDR,
    oldstate: layout::OLDSTATE,
    newstate: layout::NEWSTATE,
    sport: layout::SPORT,
    dport: layout::DPORT,
    family: layout::FAMILY,
    protocol: layout::PROTOCOL,
    protocol_size: layout::PROTOCOL_SIZE,
    saddr: layout::SADDR,
    daddr: layout::DADDR,
    saddr_v6: layout::SADDR_V6,
    daddr_v6: layout::DADDR_V6,
};

/// Where the portable program finds each field, read from the running kernel's
/// `format` file when it does not match [`layout`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RuntimeLayout {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    /// 1 (before Linux 5.6) or 2.
    pub protocol_size: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}
const _: () = assert!(core::mem::size_of::<RuntimeLayout>() == 48);

/// Offset value meaning "this tracepoint has no such field".
pub const ABSENT: i32 = -1;

/// Where a context-event program finds its fields (from the kernel's `format` file);
/// [`ABSENT`] for fields the tracepoint does not have. Context events are rare next to
/// transitions, so they are read with `bpf_probe_read_kernel` at these runtime offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxLayout {
    pub skaddr: i32,
    /// `int state` (a `TCP_*` value).
    pub state: i32,
    /// An `int` copied to [`Event::value`] (error, err, reason).
    pub value: i32,
    pub family: i32,
    pub sport: i32,
    pub dport: i32,
    pub saddr: i32,
    pub daddr: i32,
    pub saddr_v6: i32,
    pub daddr_v6: i32,
    /// `protocol` (u16), for tracepoints that fire for other protocols too.
    pub protocol: i32,
    /// Non-zero: `saddr`/`daddr` are `struct sockaddr_in6`-sized sockaddrs (family at +0,
    /// big-endian port at +2, IPv4 address at +4, IPv6 address at +8), as in
    /// `tcp_send_reset` since Linux 6.10; the other address/port offsets are then unused.
    pub sockaddr: u32,
    /// Non-zero: this program was attached and its layout filled in.
    pub enabled: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CtxLayout>() == 56);

impl CtxLayout {
    /// `tcp:tcp_destroy_sock` as every kernel since 5.10 lays it out (skaddr, sport, dport,
    /// family, saddr[4], daddr[4], saddr_v6[16], daddr_v6[16], sock_cookie): the loader
    /// attaches [`names::DESTROY_FAST_PROGRAM`] (direct loads at these constant offsets)
    /// when the running kernel's format gives exactly this, the generic program otherwise.
    pub const DESTROY_FAST: Self = Self {
        skaddr: 8,
        state: ABSENT,
        value: ABSENT,
        family: 20,
        sport: 16,
        dport: 18,
        saddr: 22,
        daddr: 26,
        saddr_v6: 30,
        daddr_v6: 46,
        protocol: ABSENT,
        sockaddr: 0,
        enabled: 1,
        _pad: 0,
    };

    pub const NONE: Self = Self {
        skaddr: ABSENT,
        state: ABSENT,
        value: ABSENT,
        family: ABSENT,
        sport: ABSENT,
        dport: ABSENT,
        saddr: ABSENT,
        daddr: ABSENT,
        saddr_v6: ABSENT,
        daddr_v6: ABSENT,
        protocol: ABSENT,
        sockaddr: 0,
        enabled: 0,
        _pad: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and integer arrays, with no
    // implicit padding (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuntimeLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtxLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KOwner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetnsOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AcceptOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockOffsets {}
    // SAFETY: as above (fourteen u32).
    unsafe impl aya::Pod for super::TcpStatsOffsets {}
    // SAFETY: as above (u32 arrays and a TcpStatsOffsets).
    unsafe impl aya::Pod for super::TcpStatsSpans {}
}

/// Where a `struct tcp_sock`'s counters are, from the kernel's BTF: offsets into the socket;
/// 0 for a field this kernel does not have (no counter sits at offset 0 of a `tcp_sock`).
/// `enabled` is 0 (nothing is read) without BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpStatsOffsets {
    /// `bytes_acked` (u64): bytes sent and acked by the peer.
    pub bytes_acked: u32,
    /// `bytes_received` (u64).
    pub bytes_received: u32,
    /// `bytes_retrans` (u64).
    pub bytes_retrans: u32,
    /// `segs_out`, `segs_in` (u32).
    pub segs_out: u32,
    pub segs_in: u32,
    /// `total_retrans` (u32).
    pub total_retrans: u32,
    /// `srtt_us` (u32, smoothed RTT << 3). Also read when a server's child socket becomes
    /// ESTABLISHED: it then holds the SYN-ACK's RTT sample.
    pub srtt_us: u32,
    /// `mdev_us` (u32, RTT deviation << 2).
    pub mdev_us: u32,
    /// `rtt_min.s[0].v` (u32, µs): the minimum RTT seen.
    pub min_rtt: u32,
    /// `snd_cwnd` (u32, segments).
    pub snd_cwnd: u32,
    /// `rate_delivered` (u32, segments) and `rate_interval_us` (u32): the last delivery-rate
    /// sample, as `tcp_get_info` turns it into `tcpi_delivery_rate`.
    pub rate_delivered: u32,
    pub rate_interval_us: u32,
    /// `mss_cache` (u32, bytes): the segment size the delivery rate is counted in.
    pub mss_cache: u32,
    pub enabled: u32,
}
const _: () = assert!(core::mem::size_of::<TcpStatsOffsets>() == 56);

impl TcpStatsOffsets {
    /// Every offset 0, not enabled (see [`SockOffsets::NONE`]).
    pub const NONE: Self = Self {
        bytes_acked: 0,
        bytes_received: 0,
        bytes_retrans: 0,
        segs_out: 0,
        segs_in: 0,
        total_retrans: 0,
        srtt_us: 0,
        mdev_us: 0,
        min_rtt: 0,
        snd_cwnd: 0,
        rate_delivered: 0,
        rate_interval_us: 0,
        mss_cache: 0,
        enabled: 0,
    };
}

/// Bytes of each half of the counters' scratch buffer: span `i` is copied to `i *
/// STATS_SPAN_HALF`. A power of two: the kernel side masks lengths and positions with it.
pub const STATS_SPAN_HALF: u32 = 512;
/// Longest span: under [`STATS_SPAN_HALF`] (the mask keeps it below) and a multiple of 8.
pub const STATS_SPAN_MAX: u32 = STATS_SPAN_HALF - 8;
/// Where an absent field's position points: the 8 bytes past the longest span of the first
/// half, which no span ever writes, so they stay zero.
pub const STATS_ZERO_POS: u32 = STATS_SPAN_MAX;
/// Bytes of the per-CPU scratch buffer: both halves, and 8 more so that a u64 at any
/// position the kernel side's mask lets through (below `2 * STATS_SPAN_HALF`) is inside.
pub const STATS_SCRATCH_SIZE: usize = 2 * STATS_SPAN_HALF as usize + 8;

/// How the counters are read at a close: in up to two spans of the `tcp_sock`, each one
/// `bpf_probe_read_kernel` into a per-CPU scratch buffer (a call costs more than copying a
/// few hundred bytes), the fields then picked out of the buffer. The loader plans it from the
/// [`TcpStatsOffsets`]; `len` all 0 (spans would not fit, or no BTF): the kernel side reads
/// each field at its own offset instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpStatsSpans {
    /// Offset into the `tcp_sock` of each span (a multiple of 8).
    pub off: [u32; 2],
    /// Bytes of each span, at most [`STATS_SPAN_MAX`]; 0: unused.
    pub len: [u32; 2],
    /// The [`stat`] bits of the fields in each span: present when its read succeeded.
    pub bits: [u32; 2],
    /// Position of each field in the scratch buffer (span `i`'s bytes start at `i *`
    /// [`STATS_SPAN_HALF`], so a field keeps its alignment); [`STATS_ZERO_POS`] for a field
    /// this kernel lacks. `enabled` is unused.
    pub pos: TcpStatsOffsets,
}
const _: () = assert!(core::mem::size_of::<TcpStatsSpans>() == 80);

impl TcpStatsSpans {
    /// No spans (all lengths 0): the counters are read field by field.
    pub const NONE: Self = Self {
        off: [0; 2],
        len: [0; 2],
        bits: [0; 2],
        pos: TcpStatsOffsets::NONE,
    };
}

/// Bit of [`TcpStats::present`] per counter. Part of the recording format: never reuse a
/// bit (`1 << 2` was `bytes_sent`, no longer read).
pub mod stat {
    pub const BYTES_ACKED: u32 = 1;
    pub const BYTES_RECEIVED: u32 = 1 << 1;
    pub const BYTES_RETRANS: u32 = 1 << 3;
    pub const SEGS_OUT: u32 = 1 << 4;
    pub const SEGS_IN: u32 = 1 << 5;
    pub const TOTAL_RETRANS: u32 = 1 << 6;
    pub const SRTT: u32 = 1 << 7;
    pub const MDEV: u32 = 1 << 8;
    pub const MIN_RTT: u32 = 1 << 9;
    pub const SND_CWND: u32 = 1 << 10;
    pub const RATE_DELIVERED: u32 = 1 << 11;
    pub const RATE_INTERVAL: u32 = 1 << 12;
    pub const MSS: u32 = 1 << 13;
    /// All three of the delivery rate's inputs.
    pub const DELIVERY_RATE: u32 = RATE_DELIVERED | RATE_INTERVAL | MSS;
}

/// A connection's counters as the kernel had them at its close: raw values (`srtt_us` still
/// << 3, `mdev_us` << 2, as in `tcp_sock`); `present` has a [`stat`] bit per field read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpStats {
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_retrans: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    pub mdev_us: u32,
    pub min_rtt_us: u32,
    pub snd_cwnd: u32,
    pub rate_delivered: u32,
    pub rate_interval_us: u32,
    pub mss: u32,
    pub present: u32,
}

fn word4(b: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn put4(b: &mut [u8; 16], i: usize, v: u32) {
    let w = v.to_ne_bytes();
    b[i] = w[0];
    b[i + 1] = w[1];
    b[i + 2] = w[2];
    b[i + 3] = w[3];
}

impl TcpStats {
    /// Packs the counters into a [`kind::TCP_STATS`] record's fields (the record keeps the
    /// common header: kind, cpu, ts, skaddr, ports, family, states, netns): `pid_tgid` and
    /// `cgroup_id` hold bytes acked and received, `uid_gid` rate_delivered (low half) and
    /// rate_interval_us (high half), `comm[0..8]` bytes retransmitted, `comm[8..16]` the
    /// segment counts, `saddr` total_retrans, srtt, mdev, min_rtt, `daddr` snd_cwnd,
    /// `present` and the mss. One record size on the wire keeps the ring reader and
    /// recordings as they are.
    pub fn pack(&self, ev: &mut Event) {
        ev.pid_tgid = self.bytes_acked;
        ev.cgroup_id = self.bytes_received;
        ev.uid_gid = u64::from(self.rate_delivered) | (u64::from(self.rate_interval_us) << 32);
        let r = self.bytes_retrans.to_ne_bytes();
        let mut comm = [0u8; 16];
        let mut i = 0;
        while i < 8 {
            comm[i] = r[i];
            i += 1;
        }
        put4(&mut comm, 8, self.segs_out);
        put4(&mut comm, 12, self.segs_in);
        ev.comm = comm;
        let mut s = [0u8; 16];
        put4(&mut s, 0, self.total_retrans);
        put4(&mut s, 4, self.srtt_us);
        put4(&mut s, 8, self.mdev_us);
        put4(&mut s, 12, self.min_rtt_us);
        ev.saddr = s;
        let mut d = [0u8; 16];
        put4(&mut d, 0, self.snd_cwnd);
        put4(&mut d, 4, self.present);
        put4(&mut d, 8, self.mss);
        ev.daddr = d;
    }

    /// The counters of a [`kind::TCP_STATS`] record ([`Self::pack`]'s inverse). A record
    /// written before the delivery rate was read has `uid_gid` = bytes sent and no
    /// [`stat::DELIVERY_RATE`] bits: its rate fields are 0 and not present.
    pub fn unpack(ev: &Event) -> Self {
        let c = &ev.comm;
        let rate = ev.uid_gid;
        let present = word4(&ev.daddr, 4);
        let has = |bit: u32| present & bit != 0;
        Self {
            bytes_acked: ev.pid_tgid,
            bytes_received: ev.cgroup_id,
            bytes_retrans: u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            segs_out: word4(c, 8),
            segs_in: word4(c, 12),
            total_retrans: word4(&ev.saddr, 0),
            srtt_us: word4(&ev.saddr, 4),
            mdev_us: word4(&ev.saddr, 8),
            min_rtt_us: word4(&ev.saddr, 12),
            snd_cwnd: word4(&ev.daddr, 0),
            rate_delivered: if has(stat::RATE_DELIVERED) {
                rate as u32
            } else {
                0
            },
            rate_interval_us: if has(stat::RATE_INTERVAL) {
                (rate >> 32) as u32
            } else {
                0
            },
            mss: if has(stat::MSS) {
                word4(&ev.daddr, 8)
            } else {
                0
            },
            present,
        }
    }

    /// The delivery rate (bytes per second) as `tcp_get_info` computes `tcpi_delivery_rate`:
    /// `rate_delivered * mss * 1e6 / rate_interval_us`. `None` when this kernel lacks one of
    /// the fields (or the record predates them), `Some(0)` when there was no sample.
    pub fn delivery_rate(&self) -> Option<u64> {
        if self.present & stat::DELIVERY_RATE != stat::DELIVERY_RATE {
            return None;
        }
        if self.rate_delivered == 0 || self.rate_interval_us == 0 {
            return Some(0);
        }
        // The kernel's u64 arithmetic, wrap-around included, so the value is exactly its own.
        Some(
            u64::from(self.rate_delivered)
                .wrapping_mul(u64::from(self.mss))
                .wrapping_mul(1_000_000)
                / u64::from(self.rate_interval_us),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel side's starting values are the host side's defaults: nothing enabled.
    #[test]
    fn the_none_offsets_are_the_defaults() {
        assert_eq!(SockOffsets::NONE, SockOffsets::default());
        assert_eq!(AcceptOffsets::NONE, AcceptOffsets::default());
        assert_eq!(TcpStatsOffsets::NONE, TcpStatsOffsets::default());
        assert_eq!(TcpStatsSpans::NONE, TcpStatsSpans::default());
    }
}
