//! Kernel side of tracer: one tracepoint, `sock:inet_sock_set_state`, two programs.
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
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
            bpf_ktime_get_ns,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    AF_INET, Config, Counters, IPPROTO_TCP, KIND_TRANSITION, RuntimeLayout, TransitionEvent, layout,
};

/// `BPF_RB_AVAIL_DATA` for `bpf_ringbuf_query`: bytes not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The loader resizes it (`--ring-buffer-size`) before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// Ports of `--port`; the loader sizes it to the number of ports.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(Config {
    wakeup_bytes: 0,
    family: 0,
    filter_ports: 0,
    _pad: [0; 5],
});

#[unsafe(no_mangle)]
static LAYOUT: Global<RuntimeLayout> = Global::new(FAST_LAYOUT);

const FAST_LAYOUT: RuntimeLayout = RuntimeLayout {
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

/// How a program reads one field of the tracepoint record.
trait Record {
    /// Reads a `T` at byte offset `off` of the record; `Err` if it could not be read.
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()>;
}

/// Direct loads; `off` must be a compile-time constant once inlined (verifier rule).
struct Direct(*const u8);

impl Record for Direct {
    #[inline(always)]
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()> {
        // SAFETY: the pointer is the tracepoint context and every offset used with `Direct`
        // is a constant from `tracer_common::layout`, which the loader checked against the
        // kernel's `format` file before choosing this program; the verifier re-checks the
        // access against the record size. Volatile keeps it one load of exactly `T`.
        Ok(unsafe { core::ptr::read_volatile(self.0.add(off as usize).cast::<T>()) })
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
    let Some(counters) = COUNTERS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array slot is only touched by this CPU, and this program does not
    // nest on one CPU (the kernel skips a nested run and counts it in recursion_misses).
    let counters = unsafe { &mut *counters };
    counters.seen += 1;
    if fill(rec, l).is_err() {
        counters.lost_read_error += 1;
        // aya-log: off unless the loader runs with --bpf-log (AYA_LOG_LEVEL patched at load).
        debug!(ctx, "inet_sock_set_state: a record field could not be read");
    }
}

/// Applies the filters, then reserves, fills and submits one event. `Err` means a field could
/// not be read (the event is lost and counted); filtered-out events return `Ok`.
#[inline(always)]
fn fill<R: Record>(rec: &R, l: &RuntimeLayout) -> Result<(), ()> {
    let cfg = CONFIG.load();
    let family: u16 = rec.read(l.family)?;
    if cfg.family != 0 && cfg.family != family {
        return Ok(());
    }
    let sport: u16 = rec.read(l.sport)?;
    let dport: u16 = rec.read(l.dport)?;
    if cfg.filter_ports != 0 && PORTS.get_ptr(sport).is_none() && PORTS.get_ptr(dport).is_none() {
        return Ok(());
    }

    let Some(mut entry) = EVENTS.reserve::<TransitionEvent>(0) else {
        if let Some(c) = COUNTERS.get_ptr_mut(0) {
            // SAFETY: as in `handle`: this CPU's own slot.
            unsafe { (*c).lost_ringbuf_full += 1 };
        }
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    let ok = write(rec, l, ev, family, sport, dport);
    if ok.is_err() {
        entry.discard(0);
        return ok;
    }
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as in `handle`: this CPU's own slot.
        unsafe { (*c).submitted += 1 };
    }
    // Wake the reader only when a batch is pending: per-event wake-ups cost more than the
    // rest of the program together. Below the threshold the reader's timer picks events up.
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= cfg.wakeup_bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(u64::from(flags));
    Ok(())
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

#[inline(always)]
fn write<R: Record>(
    rec: &R,
    l: &RuntimeLayout,
    ev: *mut TransitionEvent,
    family: u16,
    sport: u16,
    dport: u16,
) -> Result<(), ()> {
    let skaddr: u64 = rec.read(l.skaddr)?;
    let oldstate: i32 = rec.read(l.oldstate)?;
    let newstate: i32 = rec.read(l.newstate)?;
    // Reserved ring-buffer memory is not zeroed: every byte of the event is written below.
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
    // SAFETY: `ev` points to a reserved, 8-byte aligned ring-buffer slot of exactly
    // `size_of::<TransitionEvent>()` bytes that only this program writes until submit.
    // The address words are stored as native-endian u64, which reproduces the record's
    // bytes in order on this (little- or big-endian) target.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).skaddr = skaddr;
        (*ev).saddr = core::mem::transmute::<[u64; 2], [u8; 16]>(saddr);
        (*ev).daddr = core::mem::transmute::<[u64; 2], [u8; 16]>(daddr);
        (*ev).pid_tgid = bpf_get_current_pid_tgid();
        let comm = core::ptr::addr_of_mut!((*ev).comm);
        if bpf_get_current_comm(comm.cast(), 16) != 0 {
            (*ev).comm = [0; 16];
        }
        (*ev).sport = sport;
        (*ev).dport = dport;
        (*ev).family = family;
        // TCP states are 1..=12; anything else is passed on and rejected by the decoder.
        (*ev).oldstate = oldstate as u8;
        (*ev).newstate = newstate as u8;
        (*ev).cpu = bpf_get_smp_processor_id();
        (*ev).kind = KIND_TRANSITION;
    }
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
