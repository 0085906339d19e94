//! Kernel side of tracer: `sock:inet_sock_set_state` (two programs, one is loaded), plus one
//! program per context tracepoint (resets, retransmits, error reports, socket destruction).
//!
//! Kept deliberately small (read, filter, reserve, submit, count): every instruction here
//! runs for every TCP state change on the host, and the longer the program runs the wider
//! the window in which the kernel skips a nested run of it (`recursion_misses`).
//!
//! - `inet_sock_set_state` reads the record by direct loads at the compile-time offsets of
//!   `tracer_common::layout` (every mainline kernel since 5.6). Direct loads are far cheaper
//!   than `bpf_probe_read_kernel` per field; the verifier only accepts them at
//!   `ctx + constant`, so even the IPv6 addresses are read as aligned u64 words.
//! - `inet_sock_set_state_portable` reads at offsets the loader took from the running
//!   kernel's `format` file (the `LAYOUT` global), through `bpf_probe_read_kernel`. The
//!   loader picks it only when the kernel's layout differs.
//! - `sys_exit_accept` (attached to `sys_exit_accept4` and `sys_exit_accept`) names the
//!   process that accepted a socket: the accepted socket's own transitions run in softirq,
//!   so in a pre-fork server they would only ever name the listener's owner.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
            bpf_get_current_task, bpf_get_current_uid_gid, bpf_get_smp_processor_id,
            bpf_ktime_get_ns,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    AF_INET, AF_INET6, AcceptOffsets, AddrKey, Config, Counters, CtxLayout, Event, FAST_LAYOUT,
    IPPROTO_TCP, KOwner, NetnsOffsets, OWNER_CGROUP, OWNER_COMM, OWNER_PID, PORT_LOCAL,
    PORT_REMOTE, RuntimeLayout, SYSCALL_RET, in_owner_context, kind, tcp,
};

/// Bytes one event takes in the ring buffer: its 8-byte header and the record (a multiple
/// of 8, so no padding).
const RECORD_STRIDE: u64 = 8 + core::mem::size_of::<Event>() as u64;

/// `BPF_RB_AVAIL_DATA` for `bpf_ringbuf_query`: bytes not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The loader resizes it (`--ring-buffer-size`) before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(kind::COUNT as u32, 0);

/// Ports of `--port`/`--lport`/`--rport`; the loader sizes it to the number of ports.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1, 0);

/// Socket → owner, learned from process-context transitions (only with owner filters).
#[map]
static OWNERS: LruHashMap<u64, KOwner> = LruHashMap::with_max_entries(65536, 0);

/// Listening port → owner, for accepted sockets to inherit.
#[map]
static LISTEN_OWNERS: LruHashMap<u16, KOwner> = LruHashMap::with_max_entries(4096, 0);

#[map]
static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);
#[map]
static COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(1, 0);
#[map]
static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

/// Address prefixes of `--addr`; the loader sizes it to the number of prefixes.
#[map]
static ADDRS: LpmTrie<AddrKey, u8> = LpmTrie::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(Config {
    wakeup_bytes: 0,
    family: 0,
    filter_ports: 0,
    filter_addrs: 0,
    filter_owner: 0,
    filter_netns: 0,
    read_netns: 0,
    _pad: 0,
});

#[unsafe(no_mangle)]
static NETNS_OFFSETS: Global<NetnsOffsets> = Global::new(NetnsOffsets {
    skc_net: 0,
    net_inum: 0,
});

/// Network namespace inodes of `--netns`.
#[map]
static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static LAYOUT: Global<RuntimeLayout> = Global::new(FAST_LAYOUT);

/// Adds one to a counter in this CPU's `COUNTERS` slot of one program. Each program has its
/// own slot (indexed by its kind): the kernel never nests a program with itself on a CPU, so
/// a slot has one writer at a time, although different programs nest (a softirq context
/// event interrupting a transition).
macro_rules! bump {
    ($c:expr, $field:ident) => {{
        let c: *mut Counters = $c;
        // SAFETY: `c` is a valid per-CPU map value from `get_ptr_mut`, written only by this
        // program on this CPU (see above).
        unsafe { (*c).$field += 1 };
    }};
}

/// How a program reads one field of the tracepoint record.
trait Record {
    /// Reads a `T` at byte offset `off` of the record; `Err` if it could not be read.
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()>;

    /// The 4 bytes at `off` as a `u32` in memory order, `off` only 2-byte aligned.
    #[inline(always)]
    fn read_u32_at2(&self, off: u32) -> Result<u32, ()> {
        self.read(off)
    }

    /// The 8 bytes at `off` as a `u64` in memory order, `off` only 2-byte aligned.
    #[inline(always)]
    fn read_u64_at2(&self, off: u32) -> Result<u64, ()> {
        self.read(off)
    }
}

/// Direct loads; `off` must be a compile-time constant once inlined (verifier rule).
struct Direct(*const u8);

impl Record for Direct {
    #[inline(always)]
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()> {
        // SAFETY: the pointer is the tracepoint context and every offset used with `Direct`
        // is a constant from `tracer_common` (`FAST_LAYOUT`, `CtxLayout::DESTROY_FAST`),
        // which the loader checked against the kernel's `format` file before choosing the
        // program; the verifier re-checks the access against the record size. Volatile keeps
        // it one load of exactly `T`.
        Ok(unsafe { core::ptr::read_volatile(self.0.add(off as usize).cast::<T>()) })
    }

    // The verifier refuses a context load not aligned to its own size, and some records
    // (tcp_destroy_sock's addresses, at 22, 26, 30, 46) are only 2-byte aligned: read them
    // as u16 words, put together in memory order.
    #[inline(always)]
    fn read_u32_at2(&self, off: u32) -> Result<u32, ()> {
        let (a, b) = (
            u32::from(self.read::<u16>(off)?),
            u32::from(self.read::<u16>(off + 2)?),
        );
        Ok(if cfg!(target_endian = "big") {
            (a << 16) | b
        } else {
            a | (b << 16)
        })
    }

    #[inline(always)]
    fn read_u64_at2(&self, off: u32) -> Result<u64, ()> {
        let (a, b) = (
            u64::from(self.read_u32_at2(off)?),
            u64::from(self.read_u32_at2(off + 4)?),
        );
        Ok(if cfg!(target_endian = "big") {
            (a << 32) | b
        } else {
            a | (b << 32)
        })
    }
}

/// `bpf_probe_read_kernel` at runtime offsets.
struct Probe(*const u8);

impl Record for Probe {
    #[inline(always)]
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()> {
        // SAFETY: `bpf_probe_read_kernel` checks the address itself and fails cleanly; the
        // offsets come from the kernel's own `format` file.
        unsafe { bpf_probe_read_kernel(self.0.add(off as usize).cast::<T>()) }.map_err(|_| ())
    }
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    handle(&ctx, &Direct(ctx.as_ptr().cast()), &FAST_LAYOUT);
    0
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state_portable(ctx: TracePointContext) -> u32 {
    handle(&ctx, &Probe(ctx.as_ptr().cast()), &LAYOUT.load());
    0
}

#[inline(always)]
fn handle<R: Record>(ctx: &TracePointContext, rec: &R, l: &RuntimeLayout) {
    let protocol = if l.protocol_size == 1 {
        rec.read::<u8>(l.protocol).map(u16::from)
    } else {
        rec.read::<u16>(l.protocol)
    };
    if protocol != Ok(IPPROTO_TCP) {
        return;
    }
    let Some(c) = COUNTERS.get_ptr_mut(kind::TRANSITION) else {
        return;
    };
    bump!(c, seen);
    if fill(rec, l, c).is_err() {
        bump!(c, lost_read_error);
        debug!(ctx, "inet_sock_set_state: a record field could not be read");
    }
}

/// The fields of one event, read from the record, before it is reserved and written.
struct Fields {
    kind: u32,
    skaddr: u64,
    saddr: [u64; 2],
    daddr: [u64; 2],
    sport: u16,
    dport: u16,
    family: u16,
    oldstate: u8,
    newstate: u8,
    value: i32,
    /// The socket's network namespace inode ([`sock_netns`]).
    netns: u32,
}

/// The family and port filters, shared by every program: checked before anything else is
/// read, so filtered-out events cost as little as possible.
#[inline(always)]
fn passes(cfg: &Config, family: u16, sport: u16, dport: u16) -> bool {
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
fn addr_passes(cfg: &Config, family: u16, saddr: &[u64; 2], daddr: &[u64; 2]) -> bool {
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
fn owner_passes(cfg: &Config, sk: u64, old: u8, new: u8, sport: u16) -> bool {
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

/// The inode of the socket's own network namespace (not the current task's), read once per
/// record: it goes into the event (user space asks sock_diag and /proc in that namespace)
/// and decides `--netns`. 0 when there is no socket, the offsets are unknown, or the read
/// fails.
#[inline(always)]
fn sock_netns(cfg: &Config, sk: u64) -> u32 {
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

/// `--netns`: events without a socket pass; a socket whose namespace cannot be read (0) is
/// dropped only if the filter is on.
#[inline(always)]
fn netns_passes(cfg: &Config, sk: u64, netns: u32) -> bool {
    if cfg.filter_netns == 0 || sk == 0 {
        return true;
    }
    // SAFETY: a map lookup of a plain u32 key.
    netns != 0 && unsafe { NETNS.get(netns) }.is_some()
}

/// The owner filters for a socket, from the owner map alone (context events).
#[inline(always)]
fn known_owner_passes(cfg: &Config, sk: u64) -> bool {
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

/// Reads a transition, applies the filters, and emits it. `Err` means a field could not be
/// read (the event is lost and counted); filtered-out events return `Ok`.
#[inline(always)]
fn fill<R: Record>(rec: &R, l: &RuntimeLayout, c: *mut Counters) -> Result<(), ()> {
    let cfg = CONFIG.load();
    let family: u16 = rec.read(l.family)?;
    let sport: u16 = rec.read(l.sport)?;
    let dport: u16 = rec.read(l.dport)?;
    if !passes(&cfg, family, sport, dport) {
        return Ok(());
    }
    let (saddr, daddr) = if family == AF_INET {
        let s: u32 = rec.read(l.saddr)?;
        let d: u32 = rec.read(l.daddr)?;
        ([v4_word(s), 0], [v4_word(d), 0])
    } else {
        (
            [
                rec.read::<u64>(l.saddr_v6)?,
                rec.read::<u64>(l.saddr_v6 + 8)?,
            ],
            [
                rec.read::<u64>(l.daddr_v6)?,
                rec.read::<u64>(l.daddr_v6 + 8)?,
            ],
        )
    };
    if !addr_passes(&cfg, family, &saddr, &daddr) {
        return Ok(());
    }
    let oldstate: i32 = rec.read(l.oldstate)?;
    let newstate: i32 = rec.read(l.newstate)?;
    let skaddr: u64 = rec.read(l.skaddr)?;
    // TCP states are 1..=12; anything else is passed on and rejected by the decoder.
    let (oldstate, newstate) = (oldstate as u8, newstate as u8);
    let netns = sock_netns(&cfg, skaddr);
    if !netns_passes(&cfg, skaddr, netns) || !owner_passes(&cfg, skaddr, oldstate, newstate, sport)
    {
        return Ok(());
    }
    emit(
        &cfg,
        &Fields {
            kind: kind::TRANSITION,
            skaddr,
            saddr,
            daddr,
            sport,
            dport,
            family,
            oldstate,
            newstate,
            value: 0,
            netns,
        },
        c,
    );
    Ok(())
}

/// Reserves, writes and submits one event, counting what is sent and what is lost in the
/// program's counters `c` (looked up once per event by the caller).
#[inline(always)]
fn emit(cfg: &Config, f: &Fields, c: *mut Counters) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump!(c, lost_ringbuf_full);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved, 8-byte aligned ring-buffer slot of exactly
    // `size_of::<Event>()` bytes that only this program writes until submit. Reserved memory
    // is not zeroed: every field is written. The address words are stored as native-endian
    // u64, which reproduces the record's bytes in order.
    unsafe {
        (*ev).kind = f.kind;
        (*ev).cpu = bpf_get_smp_processor_id();
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).skaddr = f.skaddr;
        (*ev).pid_tgid = bpf_get_current_pid_tgid();
        // The uid and cgroup only make an owner, and only the task of a process-context
        // transition (or of an accept) is the socket's owner: elsewhere they would be read
        // and never used.
        if f.kind == kind::ACCEPT
            || (f.kind == kind::TRANSITION && in_owner_context(f.oldstate, f.newstate))
        {
            (*ev).cgroup_id = bpf_get_current_cgroup_id();
            (*ev).uid_gid = bpf_get_current_uid_gid();
        } else {
            (*ev).cgroup_id = 0;
            (*ev).uid_gid = 0;
        }
        let comm = core::ptr::addr_of_mut!((*ev).comm);
        if bpf_get_current_comm(comm.cast(), 16) != 0 {
            (*ev).comm = [0; 16];
        }
        (*ev).saddr = core::mem::transmute::<[u64; 2], [u8; 16]>(f.saddr);
        (*ev).daddr = core::mem::transmute::<[u64; 2], [u8; 16]>(f.daddr);
        (*ev).sport = f.sport;
        (*ev).dport = f.dport;
        (*ev).family = f.family;
        (*ev).oldstate = f.oldstate;
        (*ev).newstate = f.newstate;
        (*ev).value = f.value;
        (*ev).netns = f.netns;
    }
    bump!(c, submitted);
    // Wake the reader only when a batch is pending: per-event wake-ups cost more than the
    // rest of the program together. Below the threshold the reader's timer picks events up.
    // And only the record that crosses a multiple of the threshold wakes it: a reader that
    // lags behind a full buffer would otherwise be woken by every event, exactly when it can
    // least afford it (and the longer runs widen the window for recursion misses).
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    let wb = cfg.wakeup_bytes;
    let flags = if wb > 0 && avail >= wb && (avail - RECORD_STRIDE) / wb != avail / wb {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(u64::from(flags));
}

/// The IPv4 address (as read from memory, for [`v4_word`]) of a v4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) held as two words in memory order.
#[inline(always)]
fn v4_mapped(a: &[u64; 2]) -> Option<u32> {
    // SAFETY: two u64 words are 16 plain bytes, in memory order.
    let b = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(*a) };
    let mapped = b[..10].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff;
    mapped.then(|| u32::from_ne_bytes([b[12], b[13], b[14], b[15]]))
}

/// The 8-byte word whose memory holds the 4 address bytes of `v` (as read from the record)
/// followed by zeros.
#[inline(always)]
fn v4_word(v: u32) -> u64 {
    if cfg!(target_endian = "big") {
        u64::from(v) << 32
    } else {
        u64::from(v)
    }
}

// ---- Context events: resets, retransmits, errors, destroys -------------------------------

macro_rules! context_program {
    ($prog:ident, $category:literal, $name:literal, $kind:expr, $global:ident) => {
        #[unsafe(no_mangle)]
        static $global: Global<CtxLayout> = Global::new(CtxLayout::NONE);

        #[tracepoint(category = $category, name = $name)]
        pub fn $prog(ctx: TracePointContext) -> u32 {
            context(&ctx, &$global.load(), $kind);
            0
        }
    };
}

context_program!(
    tcp_send_reset,
    "tcp",
    "tcp_send_reset",
    kind::SEND_RESET,
    CTX_SEND_RESET
);
context_program!(
    tcp_receive_reset,
    "tcp",
    "tcp_receive_reset",
    kind::RECEIVE_RESET,
    CTX_RECEIVE_RESET
);
context_program!(
    tcp_retransmit_skb,
    "tcp",
    "tcp_retransmit_skb",
    kind::RETRANSMIT,
    CTX_RETRANSMIT
);
context_program!(
    tcp_retransmit_synack,
    "tcp",
    "tcp_retransmit_synack",
    kind::RETRANSMIT_SYNACK,
    CTX_RETRANSMIT_SYNACK
);
context_program!(
    inet_sk_error_report,
    "sock",
    "inet_sk_error_report",
    kind::ERROR_REPORT,
    CTX_ERROR_REPORT
);
context_program!(
    tcp_destroy_sock,
    "tcp",
    "tcp_destroy_sock",
    kind::DESTROY_SOCK,
    CTX_DESTROY_SOCK
);

/// Reads an optional field: `Ok(None)` when the tracepoint has no such field.
#[inline(always)]
fn opt<T: Copy>(rec: &impl Record, off: i32) -> Result<Option<T>, ()> {
    if off < 0 {
        Ok(None)
    } else {
        rec.read::<T>(off as u32).map(Some)
    }
}

/// `tcp_destroy_sock` with direct loads at the constant offsets of
/// [`CtxLayout::DESTROY_FAST`]: it runs for every socket freed, and the generic program's
/// `bpf_probe_read_kernel` per field made it cost more than a transition.
#[tracepoint(category = "tcp", name = "tcp_destroy_sock")]
pub fn tcp_destroy_sock_fast(ctx: TracePointContext) -> u32 {
    context_with(
        &ctx,
        &Direct(ctx.as_ptr().cast()),
        &CtxLayout::DESTROY_FAST,
        kind::DESTROY_SOCK,
    );
    0
}

#[inline(always)]
fn context(ctx: &TracePointContext, l: &CtxLayout, kind: u32) {
    context_with(ctx, &Probe(ctx.as_ptr().cast()), l, kind);
}

#[inline(always)]
fn context_with<R: Record>(ctx: &TracePointContext, rec: &R, l: &CtxLayout, kind: u32) {
    if l.enabled == 0 {
        return;
    }
    let Some(c) = COUNTERS.get_ptr_mut(kind) else {
        return;
    };
    bump!(c, context_seen);
    if context_fill(rec, l, kind, c).is_err() {
        bump!(c, lost_read_error);
        debug!(
            ctx,
            "context event {}: a record field could not be read", kind
        );
    }
}

#[inline(always)]
fn context_fill<R: Record>(rec: &R, l: &CtxLayout, kind: u32, c: *mut Counters) -> Result<(), ()> {
    if let Some(p) = opt::<u16>(rec, l.protocol)?
        && p != IPPROTO_TCP
    {
        return Ok(());
    }
    let (mut family, sport, dport, saddr, daddr);
    if l.sockaddr != 0 {
        // struct sockaddr_in / sockaddr_in6 in a 28-byte array (tcp_send_reset, 6.10+).
        let (s, d) = (l.saddr, l.daddr);
        family = opt::<u16>(rec, s)?.unwrap_or(0);
        sport = u16::from_be(opt::<u16>(rec, s + 2)?.unwrap_or(0));
        dport = u16::from_be(opt::<u16>(rec, d + 2)?.unwrap_or(0));
        if family == AF_INET {
            saddr = [v4_word(opt::<u32>(rec, s + 4)?.unwrap_or(0)), 0];
            daddr = [v4_word(opt::<u32>(rec, d + 4)?.unwrap_or(0)), 0];
        } else {
            saddr = [
                rec.read::<u64>(s as u32 + 8)?,
                rec.read::<u64>(s as u32 + 16)?,
            ];
            daddr = [
                rec.read::<u64>(d as u32 + 8)?,
                rec.read::<u64>(d as u32 + 16)?,
            ];
        }
    } else {
        family = opt::<u16>(rec, l.family)?.unwrap_or(0);
        sport = opt::<u16>(rec, l.sport)?.unwrap_or(0);
        dport = opt::<u16>(rec, l.dport)?.unwrap_or(0);
        if family == AF_INET && l.saddr >= 0 && l.daddr >= 0 {
            saddr = [v4_word(rec.read_u32_at2(l.saddr as u32)?), 0];
            daddr = [v4_word(rec.read_u32_at2(l.daddr as u32)?), 0];
        } else if l.saddr_v6 >= 0 && l.daddr_v6 >= 0 {
            let (s, d) = (l.saddr_v6 as u32, l.daddr_v6 as u32);
            let s6 = [rec.read_u64_at2(s)?, rec.read_u64_at2(s + 8)?];
            let d6 = [rec.read_u64_at2(d)?, rec.read_u64_at2(d + 8)?];
            (family, saddr, daddr) = if l.family < 0 {
                // No `family` field (the tcp_* events of older kernels, e.g. 5.10): the kernel stores an
                // IPv4 socket's addresses v4-mapped in the v6 fields. Without this the event
                // had no family (dropped by -4/-6) and its addresses showed as 0.0.0.0.
                match (v4_mapped(&s6), v4_mapped(&d6)) {
                    (Some(s4), Some(d4)) => (AF_INET, [v4_word(s4), 0], [v4_word(d4), 0]),
                    _ if s6 != [0, 0] || d6 != [0, 0] => (AF_INET6, s6, d6),
                    _ => (family, s6, d6),
                }
            } else {
                (family, s6, d6)
            };
        } else {
            saddr = [0, 0];
            daddr = [0, 0];
        }
    }
    let cfg = CONFIG.load();
    if !passes(&cfg, family, sport, dport) || !addr_passes(&cfg, family, &saddr, &daddr) {
        return Ok(());
    }
    let state = opt::<i32>(rec, l.state)?.unwrap_or(0);
    let skaddr = opt::<u64>(rec, l.skaddr)?.unwrap_or(0);
    // The listener's own owner for SYN-ACK retransmits; the socket's for the rest.
    let netns = sock_netns(&cfg, skaddr);
    let pass = known_owner_passes(&cfg, skaddr) && netns_passes(&cfg, skaddr, netns);
    if kind == kind::DESTROY_SOCK && cfg.filter_owner != 0 {
        // Freed: its address may now be reused (the map is LRU besides).
        let _ = OWNERS.remove(skaddr);
    }
    if !pass {
        return Ok(());
    }
    emit(
        &cfg,
        &Fields {
            kind,
            skaddr,
            saddr,
            daddr,
            sport,
            dport,
            family,
            oldstate: state as u8,
            newstate: 0,
            value: opt::<i32>(rec, l.value)?.unwrap_or(0),
            netns,
        },
        c,
    );
    Ok(())
}

// ---- Accepted sockets: who accepted them -------------------------------------------------

#[unsafe(no_mangle)]
static ACCEPT_OFFSETS: Global<AcceptOffsets> = Global::new(AcceptOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    skc_family: 0,
    skc_state: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_rcv_saddr: 0,
    skc_daddr: 0,
    skc_v6_rcv_saddr: 0,
    skc_v6_daddr: 0,
    sk_protocol: 0,
    enabled: 0,
});

/// `bpf_probe_read_kernel` of a `T` at kernel address `base + off`.
#[inline(always)]
fn kread<T: Copy>(base: u64, off: u32) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails cleanly; the offsets
    // come from the running kernel's BTF.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.map_err(|_| ())
}

/// The exit of `accept4()` / `accept()`: `ret` is the new file descriptor. Its socket is
/// found through the current task's file table and reported (an [`kind::ACCEPT`] record, the
/// accepting task's identity in it), and with owner filters the task becomes the socket's
/// owner in `OWNERS`, so `--pid WORKER` follows what a pre-fork server's worker accepted.
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let Ok(ret) = Direct(ctx.as_ptr().cast()).read::<i64>(SYSCALL_RET) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let o = ACCEPT_OFFSETS.load();
    if o.enabled == 0 {
        return 0;
    }
    let Some(c) = COUNTERS.get_ptr_mut(kind::ACCEPT) else {
        return 0;
    };
    if accept_fill(&o, ret as u64, c).is_err() {
        bump!(c, lost_read_error);
        debug!(&ctx, "accept: the accepted socket could not be read");
    }
    0
}

#[inline(always)]
fn accept_fill(o: &AcceptOffsets, fd: u64, c: *mut Counters) -> Result<(), ()> {
    // SAFETY: a helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task, o.task_files)?;
    let fdt: u64 = kread(files, o.files_fdt)?;
    let max_fds: u32 = kread(fdt, o.fdt_max_fds)?;
    if fd >= u64::from(max_fds) {
        return Ok(());
    }
    let fds: u64 = kread(fdt, o.fdt_fd)?;
    let file: u64 = kread(fds + fd * 8, 0)?;
    if file == 0 {
        // Already closed by another thread of the process.
        return Ok(());
    }
    let sock: u64 = kread(file, o.file_private_data)?;
    let sk: u64 = kread(sock, o.socket_sk)?;
    if sk == 0 {
        return Ok(());
    }
    let family: u16 = kread(sk, o.skc_family)?;
    if family != AF_INET && family != AF_INET6 {
        // A unix (or other) stream socket.
        return Ok(());
    }
    if kread::<u16>(sk, o.sk_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    bump!(c, context_seen);
    let cfg = CONFIG.load();
    let sport: u16 = kread(sk, o.skc_num)?;
    let dport = u16::from_be(kread::<u16>(sk, o.skc_dport)?);
    if !passes(&cfg, family, sport, dport) {
        return Ok(());
    }
    let (saddr, daddr) = if family == AF_INET {
        (
            [v4_word(kread::<u32>(sk, o.skc_rcv_saddr)?), 0],
            [v4_word(kread::<u32>(sk, o.skc_daddr)?), 0],
        )
    } else {
        (
            [
                kread::<u64>(sk, o.skc_v6_rcv_saddr)?,
                kread::<u64>(sk, o.skc_v6_rcv_saddr + 8)?,
            ],
            [
                kread::<u64>(sk, o.skc_v6_daddr)?,
                kread::<u64>(sk, o.skc_v6_daddr + 8)?,
            ],
        )
    };
    if !addr_passes(&cfg, family, &saddr, &daddr) {
        return Ok(());
    }
    let netns = sock_netns(&cfg, sk);
    if !netns_passes(&cfg, sk, netns) {
        return Ok(());
    }
    if cfg.filter_owner != 0 {
        let mut ko = KOwner::default();
        // SAFETY: helpers without preconditions; `ko.comm` is a valid 16-byte buffer.
        unsafe {
            ko.tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            ko.cgroup_id = bpf_get_current_cgroup_id();
            bpf_get_current_comm(ko.comm.as_mut_ptr().cast(), 16);
        }
        let _ = OWNERS.insert(sk, ko, 0);
        if !known_owner_passes(&cfg, sk) {
            return Ok(());
        }
    }
    let state: u8 = kread(sk, o.skc_state)?;
    emit(
        &cfg,
        &Fields {
            kind: kind::ACCEPT,
            skaddr: sk,
            saddr,
            daddr,
            sport,
            dport,
            family,
            oldstate: state,
            newstate: 0,
            value: 0,
            netns,
        },
        c,
    );
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
