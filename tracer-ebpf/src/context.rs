//! Context events: resets, retransmits, error reports, socket destruction. One program per
//! tracepoint, each reading at the offsets of its own `CTX_*` global (from the running kernel's
//! `format` file), and `tcp_destroy_sock_fast` with direct loads at constant offsets.
use aya_ebpf::{
    EbpfContext as _, Global,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use tracer_common::{AF_INET, AF_INET6, Counters, CtxLayout, IPPROTO_TCP, SockOffsets, kind};

use crate::{
    emit::{Fields, emit},
    filters::{addr_passes, known_owner_passes, netns_passes, passes, read_sock_netns, sock_netns},
    maps::{CONFIG, COUNTERS, OWNERS},
    readers::{
        Direct, Probe, Record, SockFields, field, global_ptr, kread, opt, read_tcp_sock, v4_mapped,
        v4_word,
    },
};

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

#[unsafe(no_mangle)]
static ERROR_REPORT_OFFSETS: Global<SockOffsets> = Global::new(SockOffsets::NONE);

/// `inet_sk_error_report` as a raw tracepoint: its argument is the `struct sock *`, so the
/// report carries the socket's address and namespace. The classic tracepoint's record has
/// only a tuple, which cannot tell two containers' identical loopback connections apart.
/// The loader attaches this one where the kernel allows raw tracepoints, the classic
/// `inet_sk_error_report` program otherwise; both count in the error-report slot.
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn inet_sk_error_report_raw(ctx: RawTracePointContext) -> i32 {
    let o = global_ptr(&ERROR_REPORT_OFFSETS);
    if field!(o, enabled) == 0 {
        return 0;
    }
    let Some(c) = COUNTERS.get_ptr_mut(kind::ERROR_REPORT) else {
        return 0;
    };
    bump!(c, context_seen);
    let sk: u64 = ctx.arg(0);
    if error_report_fill(sk, o, c).is_err() {
        bump!(c, lost_read_error);
        debug!(&ctx, "inet_sk_error_report: the socket could not be read");
    }
    0
}

#[inline(always)]
fn error_report_fill(sk: u64, o: *const SockOffsets, c: *mut Counters) -> Result<(), ()> {
    let mut s = SockFields::new();
    // Also fired for UDP, SCTP, MPTCP sockets.
    let Some(net) = read_tcp_sock(sk, o, &mut s)? else {
        return Ok(());
    };
    if s.sport == 0 {
        // Closed (unhashed) already: the local port is only in `inet_sport` now, where the
        // classic tracepoint takes it from.
        s.sport = u16::from_be(kread::<u16>(sk, field!(o, inet_sport))?);
    }
    let cfg = CONFIG.load();
    if !passes(&cfg, s.family, s.sport, s.dport) || !addr_passes(&cfg, s.family, &s.saddr, &s.daddr)
    {
        return Ok(());
    }
    let netns = read_sock_netns(&cfg, sk, net, o);
    if !known_owner_passes(&cfg, sk) || !netns_passes(&cfg, sk, netns) {
        return Ok(());
    }
    emit(
        &cfg,
        &Fields {
            kind: kind::ERROR_REPORT,
            skaddr: sk,
            saddr: s.saddr,
            daddr: s.daddr,
            sport: s.sport,
            dport: s.dport,
            family: s.family,
            oldstate: s.state,
            newstate: 0,
            // What the classic tracepoint records as `error`.
            value: kread::<i32>(sk, field!(o, sk_err))?,
            netns,
        },
        c,
    );
    Ok(())
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
