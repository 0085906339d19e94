//! The plan of the counters' read at each close ([`TcpStatsSpans`]): which spans of the
//! `tcp_sock` the kernel side copies, one `bpf_probe_read_kernel` each, into its per-CPU
//! scratch buffer, and where each field then is in that buffer.
//!
//! Each call costs more than copying a few hundred bytes, and the counters sit in two
//! clusters of a recent `tcp_sock` (Linux 6.18: eleven fields over 392 bytes, then
//! `bytes_retrans` and `total_retrans` side by side 360 bytes further), so two copies replace
//! eleven reads. A layout that needs more than two spans is read field by field, as before.
use tracer_common::{
    STATS_SPAN_HALF, STATS_SPAN_MAX, STATS_ZERO_POS, TcpStatsOffsets, TcpStatsSpans, stat,
};

/// Spans the kernel side copies at most.
const SPANS: usize = 2;

/// Each counter the close reads: its offset in `o`, its size and its [`stat`] bit.
fn fields(o: &TcpStatsOffsets) -> [(u32, u32, u32); 13] {
    [
        (o.bytes_acked, 8, stat::BYTES_ACKED),
        (o.bytes_received, 8, stat::BYTES_RECEIVED),
        (o.bytes_retrans, 8, stat::BYTES_RETRANS),
        (o.segs_out, 4, stat::SEGS_OUT),
        (o.segs_in, 4, stat::SEGS_IN),
        (o.total_retrans, 4, stat::TOTAL_RETRANS),
        (o.srtt_us, 4, stat::SRTT),
        (o.mdev_us, 4, stat::MDEV),
        (o.min_rtt, 4, stat::MIN_RTT),
        (o.snd_cwnd, 4, stat::SND_CWND),
        (o.rate_delivered, 4, stat::RATE_DELIVERED),
        (o.rate_interval_us, 4, stat::RATE_INTERVAL),
        (o.mss_cache, 4, stat::MSS),
    ]
}

/// The spans for the counters at offsets `o` (0: a field this kernel lacks): the fields in
/// offset order, each joining the current span while the span stays within
/// [`STATS_SPAN_MAX`] bytes, else starting the next one. All lengths 0 (read field by
/// field) without offsets, when a field is not at a multiple of its size (its position in
/// the buffer would not be aligned), or when two spans are not enough.
pub fn plan(o: &TcpStatsOffsets) -> TcpStatsSpans {
    let by_field = TcpStatsSpans::default();
    if o.enabled == 0 {
        return by_field;
    }
    let mut present: Vec<(u32, u32, u32)> = fields(o).into_iter().filter(|f| f.0 != 0).collect();
    present.sort_unstable();
    // (start, end, bits) of each span; a start is a multiple of 8.
    let mut spans: Vec<(u32, u32, u32)> = Vec::with_capacity(SPANS + 1);
    for (off, size, bit) in present {
        if off % size != 0 {
            return by_field;
        }
        let end = off + size;
        match spans.last_mut() {
            Some(s) if end.next_multiple_of(8) - s.0 <= STATS_SPAN_MAX => {
                s.1 = s.1.max(end);
                s.2 |= bit;
            }
            _ => spans.push((off & !7, end, bit)),
        }
    }
    if spans.is_empty() || spans.len() > SPANS {
        return by_field;
    }
    let mut p = by_field;
    for (i, &(start, end, bits)) in spans.iter().enumerate() {
        p.off[i] = start;
        p.len[i] = end.next_multiple_of(8) - start;
        p.bits[i] = bits;
    }
    let at = |off: u32| -> u32 {
        if off == 0 {
            return STATS_ZERO_POS;
        }
        spans
            .iter()
            .enumerate()
            .find(|(_, s)| (s.0..s.1).contains(&off))
            .map_or(STATS_ZERO_POS, |(i, s)| {
                i as u32 * STATS_SPAN_HALF + (off - s.0)
            })
    };
    p.pos = TcpStatsOffsets {
        bytes_acked: at(o.bytes_acked),
        bytes_received: at(o.bytes_received),
        bytes_retrans: at(o.bytes_retrans),
        segs_out: at(o.segs_out),
        segs_in: at(o.segs_in),
        total_retrans: at(o.total_retrans),
        srtt_us: at(o.srtt_us),
        mdev_us: at(o.mdev_us),
        min_rtt: at(o.min_rtt),
        snd_cwnd: at(o.snd_cwnd),
        rate_delivered: at(o.rate_delivered),
        rate_interval_us: at(o.rate_interval_us),
        mss_cache: at(o.mss_cache),
        enabled: 0,
    };
    p
}

#[cfg(test)]
mod tests {
    use tracer_common::{STATS_SCRATCH_SIZE, TcpStats};

    use super::*;

    /// Linux 6.18's `tcp_sock` (x86_64), from its BTF.
    const LINUX_6_18: TcpStatsOffsets = TcpStatsOffsets {
        bytes_acked: 1824,
        bytes_received: 1752,
        bytes_retrans: 2192,
        segs_out: 1536,
        segs_in: 1760,
        total_retrans: 2200,
        srtt_us: 1680,
        mdev_us: 1588,
        min_rtt: 1500,
        snd_cwnd: 1444,
        rate_delivered: 1780,
        rate_interval_us: 1784,
        mss_cache: 1440,
        enabled: 1,
    };

    /// What the kernel side does with a plan (`tracer-ebpf/src/stats.rs`, `from_spans`),
    /// the masks included, on a socket whose bytes are `sk`.
    fn read_by_spans(sk: &[u8], p: &TcpStatsSpans) -> TcpStats {
        let mut buf = [0u8; STATS_SCRATCH_SIZE];
        let mut present = 0;
        for i in 0..2 {
            let len = (p.len[i] & (STATS_SPAN_HALF - 1)) as usize;
            if i == 1 && p.len[1] == 0 {
                continue;
            }
            let dst = i * STATS_SPAN_HALF as usize;
            let src = p.off[i] as usize;
            buf[dst..dst + len].copy_from_slice(&sk[src..src + len]);
            present |= p.bits[i];
        }
        let at = |pos: u32| (pos & (2 * STATS_SPAN_HALF - 1)) as usize;
        let u64_at = |pos: u32| u64::from_ne_bytes(buf[at(pos)..at(pos) + 8].try_into().unwrap());
        let u32_at = |pos: u32| u32::from_ne_bytes(buf[at(pos)..at(pos) + 4].try_into().unwrap());
        let q = &p.pos;
        TcpStats {
            bytes_acked: u64_at(q.bytes_acked),
            bytes_received: u64_at(q.bytes_received),
            bytes_retrans: u64_at(q.bytes_retrans),
            segs_out: u32_at(q.segs_out),
            segs_in: u32_at(q.segs_in),
            total_retrans: u32_at(q.total_retrans),
            srtt_us: u32_at(q.srtt_us),
            mdev_us: u32_at(q.mdev_us),
            min_rtt_us: u32_at(q.min_rtt),
            snd_cwnd: u32_at(q.snd_cwnd),
            rate_delivered: u32_at(q.rate_delivered),
            rate_interval_us: u32_at(q.rate_interval_us),
            mss: u32_at(q.mss_cache),
            present,
        }
    }

    /// What the field-by-field read gives (`counters` in the kernel side).
    fn read_by_field(sk: &[u8], o: &TcpStatsOffsets) -> TcpStats {
        let mut present = 0;
        let mut get = |off: u32, size: usize, bit: u32| -> u64 {
            if off == 0 {
                return 0;
            }
            present |= bit;
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(&sk[off as usize..off as usize + size]);
            u64::from_ne_bytes(b)
        };
        let s = TcpStats {
            bytes_acked: get(o.bytes_acked, 8, stat::BYTES_ACKED),
            bytes_received: get(o.bytes_received, 8, stat::BYTES_RECEIVED),
            bytes_retrans: get(o.bytes_retrans, 8, stat::BYTES_RETRANS),
            segs_out: get(o.segs_out, 4, stat::SEGS_OUT) as u32,
            segs_in: get(o.segs_in, 4, stat::SEGS_IN) as u32,
            total_retrans: get(o.total_retrans, 4, stat::TOTAL_RETRANS) as u32,
            srtt_us: get(o.srtt_us, 4, stat::SRTT) as u32,
            mdev_us: get(o.mdev_us, 4, stat::MDEV) as u32,
            min_rtt_us: get(o.min_rtt, 4, stat::MIN_RTT) as u32,
            snd_cwnd: get(o.snd_cwnd, 4, stat::SND_CWND) as u32,
            rate_delivered: get(o.rate_delivered, 4, stat::RATE_DELIVERED) as u32,
            rate_interval_us: get(o.rate_interval_us, 4, stat::RATE_INTERVAL) as u32,
            mss: get(o.mss_cache, 4, stat::MSS) as u32,
            present: 0,
        };
        TcpStats { present, ..s }
    }

    /// A socket of 4 KiB whose every byte differs from its neighbours (so a field read at
    /// the wrong place shows).
    fn socket() -> Vec<u8> {
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn linux_6_18_reads_in_two_spans() {
        let p = plan(&LINUX_6_18);
        // mss_cache .. bytes_acked, then bytes_retrans + total_retrans.
        assert_eq!(p.off, [1440, 2192]);
        assert_eq!(p.len, [392, 16]);
        assert_eq!(p.pos.mss_cache, 0);
        assert_eq!(p.pos.snd_cwnd, 4);
        assert_eq!(p.pos.bytes_acked, 384);
        assert_eq!(p.pos.bytes_retrans, 512);
        assert_eq!(p.pos.total_retrans, 520);
        assert_eq!(p.bits[1], stat::BYTES_RETRANS | stat::TOTAL_RETRANS);
        assert_eq!(p.bits[0] | p.bits[1], (1 << 14) - 1 - (1 << 2));
        let sk = socket();
        assert_eq!(read_by_spans(&sk, &p), read_by_field(&sk, &LINUX_6_18));
    }

    #[test]
    fn spans_give_what_field_by_field_reads_give() {
        let sk = socket();
        // One span; fields missing (0: read as 0, bit clear); a span that starts at an
        // offset that is not a multiple of 8; the longest span.
        let one = TcpStatsOffsets {
            bytes_acked: 1600,
            bytes_received: 1608,
            bytes_retrans: 1616,
            segs_out: 1624,
            segs_in: 1628,
            total_retrans: 1632,
            srtt_us: 1636,
            mdev_us: 1640,
            min_rtt: 1644,
            snd_cwnd: 1648,
            rate_delivered: 1652,
            rate_interval_us: 1656,
            mss_cache: 1660,
            enabled: 1,
        };
        let lacking = TcpStatsOffsets {
            bytes_retrans: 0,
            rate_delivered: 0,
            rate_interval_us: 0,
            mss_cache: 0,
            ..LINUX_6_18
        };
        let unaligned_start = TcpStatsOffsets {
            mss_cache: 1444,
            snd_cwnd: 1448,
            ..LINUX_6_18
        };
        let longest = TcpStatsOffsets {
            mss_cache: 1000,
            bytes_acked: 1000 + STATS_SPAN_MAX - 8,
            ..one
        };
        for o in [one, lacking, unaligned_start, longest] {
            let p = plan(&o);
            assert_ne!(p.len[0], 0, "{o:?}");
            assert!(p.len.iter().all(|&l| l <= STATS_SPAN_MAX && l % 8 == 0));
            assert_eq!(read_by_spans(&sk, &p), read_by_field(&sk, &o), "{o:?}");
        }
        assert_eq!(plan(&one).len, [64, 0]);
        assert_eq!(plan(&longest).len, [STATS_SPAN_MAX, 56]);
        // An absent field points at the word no span writes.
        assert_eq!(plan(&lacking).pos.mss_cache, STATS_ZERO_POS);
        assert!(plan(&lacking).len[0] <= STATS_ZERO_POS);
    }

    #[test]
    fn field_by_field_when_spans_do_not_do() {
        // Three clusters further apart than a span.
        let three = TcpStatsOffsets {
            segs_out: 3000,
            ..LINUX_6_18
        };
        // A u64 at an offset that is not a multiple of 8.
        let odd = TcpStatsOffsets {
            bytes_acked: 1828,
            ..LINUX_6_18
        };
        let none = TcpStatsOffsets::default();
        let nothing_found = TcpStatsOffsets {
            enabled: 1,
            ..TcpStatsOffsets::default()
        };
        for o in [three, odd, none, nothing_found] {
            assert_eq!(plan(&o), TcpStatsSpans::default(), "{o:?}");
        }
    }
}
