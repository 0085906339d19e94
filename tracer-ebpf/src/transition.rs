//! `sock:inet_sock_set_state`: the fast program (direct loads at the offsets of
//! `tracer_common::layout`) and the portable one (`bpf_probe_read_kernel` at the offsets in
//! `LAYOUT`, from the running kernel's `format` file). The loader loads one of them.
use aya_ebpf::{EbpfContext as _, Global, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::{
    debug, info,
    macro_support::{Level, level_enabled},
};
use tracer_common::{AF_INET, Counters, FAST_LAYOUT, IPPROTO_TCP, RuntimeLayout, kind};

use crate::{
    emit::{Fields, emit},
    filters::{addr_passes, netns_passes, note_listener, owner_passes, passes, sock_netns},
    maps::{CONFIG, COUNTERS, LOGGED},
    readers::{Direct, Probe, Record, v4_word},
};

#[unsafe(no_mangle)]
static LAYOUT: Global<RuntimeLayout> = Global::new(FAST_LAYOUT);
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
    if fill(ctx, rec, l, c).is_err() {
        bump!(c, lost_read_error);
        debug!(ctx, "inet_sock_set_state: a record field could not be read");
    }
}

/// Reads a transition, applies the filters, and emits it. `Err` means a field could not be
/// read (the event is lost and counted); filtered-out events return `Ok`.
#[inline(always)]
fn fill<R: Record>(
    ctx: &TracePointContext,
    rec: &R,
    l: &RuntimeLayout,
    c: *mut Counters,
) -> Result<(), ()> {
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
    let f = Fields {
        kind: kind::TRANSITION,
        skaddr,
        saddr,
        daddr,
        sport,
        dport,
        family,
        oldstate,
        newstate,
        value: crate::stats::handshake_srtt(skaddr, oldstate, newstate),
        netns,
    };
    log_first(ctx, &f);
    // A synchronized state's CLOSE goes out with its counters in one record; the rest alone.
    if !crate::stats::emit_close(&cfg, &f, c) && emit(&cfg, &f, c) {
        note_listener(oldstate, newstate, netns, sport);
    }
    Ok(())
}

/// `--bpf-log`: one line for the first transition that passes the filters, so a user sees the
/// program's log is alive (otherwise the programs log only when a read fails, which a healthy
/// kernel never does). Without `--bpf-log` the loader sets aya-log's level, a read-only global,
/// to 0: the cost per event is that load and a branch (which the verifier, knowing the frozen
/// value, removes as dead code), and `LOGGED` is never looked up.
#[inline(always)]
fn log_first(ctx: &TracePointContext, f: &Fields) {
    if !level_enabled(Level::Info) {
        return;
    }
    let Some(logged) = LOGGED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `logged` is a valid value of a one-slot array map. Not atomic: two CPUs that race
    // for the very first transition may both log it, which is harmless.
    unsafe {
        if *logged != 0 {
            return;
        }
        *logged = 1;
    }
    info!(
        ctx,
        "log is live: first transition sport {} dport {} state {} -> {}",
        f.sport,
        f.dport,
        f.oldstate,
        f.newstate
    );
}
