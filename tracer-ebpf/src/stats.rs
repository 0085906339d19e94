//! A connection's TCP counters (bytes, segments, retransmits, RTT, cwnd, delivery rate),
//! read from its `tcp_sock` as it leaves a synchronized state for CLOSE: the socket is still
//! whole then, and its counters are final. They travel in the CLOSE transition's own ring
//! record, as a second event. And a server's handshake RTT, read as its child socket
//! becomes ESTABLISHED. At most these two reads per socket, only for sockets whose
//! transition passed every filter.
use aya_ebpf::{
    Global,
    helpers::{bpf_probe_read_kernel, generated},
};
use tracer_common::{
    CLOSE_WITH_STATS_SIZE, Config, Counters, Event, STATS_SPAN_HALF, TcpStats, TcpStatsOffsets,
    TcpStatsSpans, kind, stat,
};

use crate::{
    emit::{Fields, wakeup_flags, write},
    maps::{COUNTERS, EVENTS, STATS_SCRATCH},
    readers::{field, global_ptr},
};

#[unsafe(no_mangle)]
static TCP_STATS_OFFSETS: Global<TcpStatsOffsets> = Global::new(TcpStatsOffsets::NONE);

/// Zero (all lengths 0): the counters are read field by field.
#[unsafe(no_mangle)]
static TCP_STATS_SPANS: Global<TcpStatsSpans> = Global::new(TcpStatsSpans::NONE);

/// TCP states (kernel numbering) with data moving: ESTABLISHED, FIN_WAIT1, FIN_WAIT2,
/// CLOSE_WAIT, LAST_ACK, CLOSING.
#[inline(always)]
fn synchronized(s: u8) -> bool {
    matches!(s, 1 | 4 | 5 | 8 | 9 | 11)
}

#[inline(always)]
fn read_u64(sk: u64, off: u32, bit: u32, present: &mut u32) -> u64 {
    if off == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails cleanly.
    match unsafe { bpf_probe_read_kernel((sk + u64::from(off)) as *const u64) } {
        Ok(v) => {
            *present |= bit;
            v
        }
        Err(_) => 0,
    }
}

#[inline(always)]
fn read_u32(sk: u64, off: u32, bit: u32, present: &mut u32) -> u32 {
    if off == 0 {
        return 0;
    }
    // SAFETY: as above.
    match unsafe { bpf_probe_read_kernel((sk + u64::from(off)) as *const u32) } {
        Ok(v) => {
            *present |= bit;
            v
        }
        Err(_) => 0,
    }
}

/// Two u32 fields `a` and `b`: one read when `b` directly follows `a` (as `mss_cache` and
/// `snd_cwnd`, `rate_delivered` and `rate_interval_us` do in every `tcp_sock` of recent
/// years), two otherwise. Each read costs more than the rest of this function.
#[inline(always)]
fn read_pair(sk: u64, a: u32, b: u32, bits: (u32, u32), present: &mut u32) -> (u32, u32) {
    if a != 0 && b == a + 4 {
        // SAFETY: bpf_probe_read_kernel checks the address itself and fails cleanly.
        match unsafe { bpf_probe_read_kernel((sk + u64::from(a)) as *const [u32; 2]) } {
            Ok([x, y]) => {
                *present |= bits.0 | bits.1;
                (x, y)
            }
            Err(_) => (0, 0),
        }
    } else {
        (
            read_u32(sk, a, bits.0, present),
            read_u32(sk, b, bits.1, present),
        )
    }
}

/// For a server's child socket becoming ESTABLISHED (SYN_RECV → ESTABLISHED): its
/// `srtt_us` (<< 3), which then holds only the SYN-ACK's RTT sample (`tcp_synack_rtt_meas`,
/// run by `tcp_check_req` as it made the child); 0 for any other transition, without BTF,
/// or when the kernel took no sample. Carried in the transition's own `value`: no second
/// record.
#[inline(always)]
pub(crate) fn handshake_srtt(sk: u64, oldstate: u8, newstate: u8) -> i32 {
    if oldstate != 3 || newstate != 1 {
        return 0;
    }
    let o = global_ptr(&TCP_STATS_OFFSETS);
    if field!(o, enabled) == 0 {
        return 0;
    }
    let mut p = 0;
    read_u32(sk, field!(o, srtt_us), stat::SRTT, &mut p) as i32
}

/// Emits transition `f` when it closes a connection that moved data (a synchronized state
/// → CLOSE), together with the connection's counters: one ring record of two events back to
/// back, the [`kind::TRANSITION`] and its [`kind::TCP_STATS`] (see
/// [`tracer_common::CLOSE_WITH_STATS_SIZE`]): one reserve and submit, one timestamp. `false`
/// (nothing done) for any other transition, or without the offsets: the caller emits it alone.
#[inline(always)]
pub(crate) fn emit_close(cfg: &Config, f: &Fields, c: *mut Counters) -> bool {
    if f.newstate != 7 || !synchronized(f.oldstate) {
        return false;
    }
    // The globals are read in place (`load()` would copy them onto the 512-byte stack,
    // which this program shares with the transition's own fields and the counters).
    let o = global_ptr(&TCP_STATS_OFFSETS);
    if field!(o, enabled) == 0 {
        return false;
    }
    let Some(sc) = COUNTERS.get_ptr_mut(kind::TCP_STATS) else {
        return false;
    };
    bump!(sc, seen);
    let Some(mut entry) = EVENTS.reserve::<[Event; 2]>(0) else {
        bump!(c, lost_ringbuf_full);
        bump!(sc, lost_ringbuf_full);
        return true;
    };
    let slot = entry.as_mut_ptr().cast::<Event>();
    // SAFETY: the first of the two reserved `Event`s, only this program's until submit.
    let (cpu, ts_ns) = unsafe { write(slot, f) };
    let spans = global_ptr(&TCP_STATS_SPANS);
    let stats = if field!(spans, len)[0] != 0 {
        from_spans(f.skaddr, spans)
    } else {
        counters(f.skaddr, o)
    };
    // Written in place, field by field: an `Event` built on the stack first (112 bytes)
    // took the portable program past the BPF stack's 512 bytes.
    // SAFETY: the second reserved `Event`, right after the first (the reservation is
    // `[Event; 2]`, 8-byte aligned), only this program's until submit; every field is
    // written before `pack` takes a reference to it.
    unsafe {
        let ev = slot.add(1);
        (*ev).kind = kind::TCP_STATS;
        (*ev).cpu = cpu;
        (*ev).ts_ns = ts_ns;
        (*ev).skaddr = f.skaddr;
        (*ev).pid_tgid = 0;
        (*ev).cgroup_id = 0;
        (*ev).uid_gid = 0;
        (*ev).comm = [0; 16];
        (*ev).saddr = [0; 16];
        (*ev).daddr = [0; 16];
        (*ev).sport = f.sport;
        (*ev).dport = f.dport;
        (*ev).family = f.family;
        (*ev).oldstate = f.oldstate;
        (*ev).newstate = f.newstate;
        (*ev).value = 0;
        (*ev).netns = f.netns;
        stats.pack(&mut *ev);
    }
    bump!(c, submitted);
    bump!(sc, submitted);
    entry.submit(wakeup_flags(cfg, CLOSE_STRIDE));
    true
}

/// Bytes a close with its counters takes in the ring buffer: the 8-byte header and two
/// events.
const CLOSE_STRIDE: u64 = 8 + CLOSE_WITH_STATS_SIZE as u64;

/// The socket's counters, from its spans copied into the scratch buffer (`present` has the
/// bits of the spans that were read); all zero if the buffer is missing.
#[inline(always)]
fn from_spans(sk: u64, s: *const TcpStatsSpans) -> TcpStats {
    let Some(buf) = STATS_SCRATCH.get_ptr_mut(0) else {
        return TcpStats::default();
    };
    let buf = buf.cast::<u8>();
    // Masks keep every length and position inside the buffer for the verifier; the loader's
    // plan never needs them (lengths below a half, positions inside the buffer).
    const MASK: u32 = STATS_SPAN_HALF - 1;
    let (off, len, bits) = (field!(s, off), field!(s, len), field!(s, bits));
    let mut p = 0u32;
    let mut span = |i: usize| {
        // SAFETY: `buf + i * STATS_SPAN_HALF` has at least `STATS_SPAN_HALF` bytes of the
        // scratch buffer after it, more than the masked length; bpf_probe_read_kernel
        // checks the source itself, fails cleanly and then zeroes the destination.
        let r = unsafe {
            generated::bpf_probe_read_kernel(
                buf.add(i * STATS_SPAN_HALF as usize).cast(),
                len[i] & MASK,
                (sk + u64::from(off[i])) as *const core::ffi::c_void,
            )
        };
        if r == 0 {
            p |= bits[i];
        }
    };
    span(0);
    if len[1] != 0 {
        span(1);
    }
    TcpStats {
        bytes_acked: pick(buf, field!(s, pos.bytes_acked)),
        bytes_received: pick(buf, field!(s, pos.bytes_received)),
        bytes_retrans: pick(buf, field!(s, pos.bytes_retrans)),
        segs_out: pick(buf, field!(s, pos.segs_out)),
        segs_in: pick(buf, field!(s, pos.segs_in)),
        total_retrans: pick(buf, field!(s, pos.total_retrans)),
        srtt_us: pick(buf, field!(s, pos.srtt_us)),
        mdev_us: pick(buf, field!(s, pos.mdev_us)),
        min_rtt_us: pick(buf, field!(s, pos.min_rtt)),
        snd_cwnd: pick(buf, field!(s, pos.snd_cwnd)),
        rate_delivered: pick(buf, field!(s, pos.rate_delivered)),
        rate_interval_us: pick(buf, field!(s, pos.rate_interval_us)),
        mss: pick(buf, field!(s, pos.mss_cache)),
        present: p,
    }
}

/// The `T` at position `pos` of the scratch buffer `buf`.
#[inline(always)]
fn pick<T: Copy>(buf: *const u8, pos: u32) -> T {
    // SAFETY: the mask keeps `pos` below `2 * STATS_SPAN_HALF`, and the buffer has 8 bytes
    // more (`STATS_SCRATCH_SIZE`): room for any `T` read here (u32, u64). The loader puts
    // each field at a position of its own alignment; volatile keeps it one load.
    unsafe {
        core::ptr::read_volatile(
            buf.add((pos & (2 * STATS_SPAN_HALF - 1)) as usize)
                .cast::<T>(),
        )
    }
}

/// The socket's counters, each read at its own offset (`present` says which were).
#[inline(always)]
fn counters(sk: u64, o: *const TcpStatsOffsets) -> TcpStats {
    let mut p = 0u32;
    let (mss, snd_cwnd) = read_pair(
        sk,
        field!(o, mss_cache),
        field!(o, snd_cwnd),
        (stat::MSS, stat::SND_CWND),
        &mut p,
    );
    let (rate_delivered, rate_interval_us) = read_pair(
        sk,
        field!(o, rate_delivered),
        field!(o, rate_interval_us),
        (stat::RATE_DELIVERED, stat::RATE_INTERVAL),
        &mut p,
    );
    let stats = TcpStats {
        bytes_acked: read_u64(sk, field!(o, bytes_acked), stat::BYTES_ACKED, &mut p),
        bytes_received: read_u64(sk, field!(o, bytes_received), stat::BYTES_RECEIVED, &mut p),
        bytes_retrans: read_u64(sk, field!(o, bytes_retrans), stat::BYTES_RETRANS, &mut p),
        segs_out: read_u32(sk, field!(o, segs_out), stat::SEGS_OUT, &mut p),
        segs_in: read_u32(sk, field!(o, segs_in), stat::SEGS_IN, &mut p),
        total_retrans: read_u32(sk, field!(o, total_retrans), stat::TOTAL_RETRANS, &mut p),
        srtt_us: read_u32(sk, field!(o, srtt_us), stat::SRTT, &mut p),
        mdev_us: read_u32(sk, field!(o, mdev_us), stat::MDEV, &mut p),
        min_rtt_us: read_u32(sk, field!(o, min_rtt), stat::MIN_RTT, &mut p),
        snd_cwnd,
        rate_delivered,
        rate_interval_us,
        mss,
        present: 0,
    };
    TcpStats {
        present: p,
        ..stats
    }
}
