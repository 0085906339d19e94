//! Records that cross the kernel/user boundary, and nothing else.
//!
//! Every type here is `#[repr(C)]` with fixed-width fields and explicit padding, so the
//! eBPF program and the loader agree on the bytes without any serialisation step. Kernel
//! values stay raw integers (states, families); the loader turns them into enums with
//! `TryFrom`, where an unknown value can be reported instead of silently mis-decoded.
#![no_std]

/// `AF_INET`, as the tracepoint reports it in `family`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as the tracepoint reports it in `family`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`: the tracepoint also fires for SCTP, MPTCP and DCCP sockets.
pub const IPPROTO_TCP: u16 = 6;

/// Value of [`TransitionEvent::kind`] for a state transition.
pub const KIND_TRANSITION: u32 = 1;

/// Names of the maps, programs and globals in the eBPF object, shared so that a rename on
/// one side is a compile error on the other rather than a load-time "map not found".
pub mod names {
    /// Ring buffer carrying [`super::TransitionEvent`]s.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU [`super::Counters`], one entry.
    pub const COUNTERS: &str = "COUNTERS";
    /// Hash set of ports (`u16` → `u8`) for `--port`.
    pub const PORTS: &str = "PORTS";
    /// Program reading the record at the compile-time offsets of [`super::layout`].
    pub const PROG_FAST: &str = "inet_sock_set_state";
    /// Program reading the record at the offsets given in [`super::RuntimeLayout`].
    pub const PROG_PORTABLE: &str = "inet_sock_set_state_portable";
    /// Global [`super::Config`].
    pub const CONFIG: &str = "CONFIG";
    /// Global [`super::RuntimeLayout`].
    pub const LAYOUT: &str = "LAYOUT";
}

/// Per-CPU counters kept by the program (one entry of the `COUNTERS` per-CPU array), so the
/// loader can say exactly what was seen, sent and lost. One map lookup per event serves all.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// TCP events the program saw (after the protocol check, before the filters).
    pub seen: u64,
    /// Events that passed the filters and were submitted to the ring buffer.
    pub submitted: u64,
    /// Events that passed the filters but found the ring buffer full: lost.
    pub lost_ringbuf_full: u64,
    /// Events whose fields could not be read (portable program only): lost.
    pub lost_read_error: u64,
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

/// One TCP state transition, as the eBPF program sends it (88 bytes, 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`: the socket's identity while it lives.
    pub skaddr: u64,
    /// Local address: 4 bytes then zeros for IPv4, 16 bytes for IPv6.
    pub saddr: [u8; 16],
    /// Remote address, same encoding as `saddr`.
    pub daddr: [u8; 16],
    /// `bpf_get_current_pid_tgid()`: tgid in the high 32 bits, thread id in the low.
    /// The task on the CPU, which in softirq is not the socket's owner.
    pub pid_tgid: u64,
    /// `comm` of the task on the CPU, NUL-padded.
    pub comm: [u8; 16],
    /// Local port, host byte order (the tracepoint converts it).
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Raw `TCP_*` state before the transition.
    pub oldstate: u8,
    /// Raw `TCP_*` state after the transition.
    pub newstate: u8,
    /// CPU the event was seen on.
    pub cpu: u32,
    /// [`KIND_TRANSITION`]; room for other record kinds on the same ring buffer.
    pub kind: u32,
}

/// Size of [`TransitionEvent`] on the wire.
pub const TRANSITION_EVENT_SIZE: usize = 88;
const _: () = assert!(core::mem::size_of::<TransitionEvent>() == TRANSITION_EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<TransitionEvent>() == 8);

/// Filters and tuning the loader writes into the program before loading it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Wake the reader only once this many bytes are pending in the ring buffer; below it
    /// events are submitted with `BPF_RB_NO_WAKEUP` and the reader polls on a timer. Waking
    /// the reader per event is the main per-event cost at high rates.
    pub wakeup_bytes: u64,
    /// 0: any family; otherwise only this one (`AF_INET` / `AF_INET6`).
    pub family: u16,
    /// Non-zero: only events whose local or remote port is in the `PORTS` map pass.
    pub filter_ports: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and integer arrays, with no
    // implicit padding (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::TransitionEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuntimeLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
}
