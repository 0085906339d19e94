//! Reserving, writing and submitting one event, with the wake-up policy.
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
};
use tracer_common::{Config, Counters, Event, in_owner_context, kind};

use crate::maps::EVENTS;

/// Bytes one event takes in the ring buffer: its 8-byte header and the record (a multiple
/// of 8, so no padding).
const RECORD_STRIDE: u64 = 8 + core::mem::size_of::<Event>() as u64;

/// `BPF_RB_AVAIL_DATA` for `bpf_ringbuf_query`: bytes not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The fields of one event, read from the record, before it is reserved and written.
pub(crate) struct Fields {
    pub(crate) kind: u32,
    pub(crate) skaddr: u64,
    pub(crate) saddr: [u64; 2],
    pub(crate) daddr: [u64; 2],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) family: u16,
    pub(crate) oldstate: u8,
    pub(crate) newstate: u8,
    pub(crate) value: i32,
    /// The socket's network namespace inode ([`crate::filters::sock_netns`]).
    pub(crate) netns: u32,
}

/// Reserves, writes and submits one event, counting what is sent and what is lost in the
/// program's counters `c` (looked up once per event by the caller). `false`: lost.
#[inline(always)]
pub(crate) fn emit(cfg: &Config, f: &Fields, c: *mut Counters) -> bool {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump!(c, lost_ringbuf_full);
        return false;
    };
    // SAFETY: a reserved slot of exactly one `Event`, only this program's until submit.
    unsafe { write(entry.as_mut_ptr(), f) };
    bump!(c, submitted);
    entry.submit(wakeup_flags(cfg, RECORD_STRIDE));
    true
}

/// Writes every field of event `f` into `ev`; returns the CPU and timestamp it gave it.
///
/// # Safety
/// `ev` points to a reserved, 8-byte aligned ring-buffer slot of at least
/// `size_of::<Event>()` bytes that only this program writes until submit.
#[inline(always)]
pub(crate) unsafe fn write(ev: *mut Event, f: &Fields) -> (u32, u64) {
    // SAFETY: `ev` is as the caller promises. Reserved memory is not zeroed: every field is
    // written. The address words are stored as native-endian u64, which reproduces the
    // record's bytes in order.
    unsafe {
        let cpu = bpf_get_smp_processor_id();
        let ts_ns = bpf_ktime_get_ns();
        (*ev).kind = f.kind;
        (*ev).cpu = cpu;
        (*ev).ts_ns = ts_ns;
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
        (cpu, ts_ns)
    }
}

/// The submit flags of a record of `stride` bytes (its header included).
///
/// Wake the reader only when a batch is pending: per-event wake-ups cost more than the
/// rest of the program together. Below the threshold the reader's timer picks events up.
/// And only the record that crosses a multiple of the threshold wakes it: a reader that
/// lags behind a full buffer would otherwise be woken by every event, exactly when it can
/// least afford it (and the longer runs widen the window for recursion misses).
#[inline(always)]
pub(crate) fn wakeup_flags(cfg: &Config, stride: u64) -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    let wb = cfg.wakeup_bytes;
    let flags = if wb > 0 && avail >= wb && (avail - stride) / wb != avail / wb {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    u64::from(flags)
}
