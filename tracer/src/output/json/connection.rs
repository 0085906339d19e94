//! The connection record, written by hand (the longest record, one per socket).
use super::*;

impl<W: Write> Json<W> {
    /// The connection record by hand (one per socket, and the longest record); same bytes
    /// as [`ConnectionJson`] (a test compares).
    pub(super) fn fast_connection(&mut self, c: &Conn) -> io::Result<()> {
        self.record(|this, b| {
            b.extend_from_slice(b"{\"v\":1,\"type\":\"connection\",\"sock\":");
            put_sock(b, c.sock);
            put_netns(b, c.netns);
            put_tuple(b, Some(c.family), &c.tuple)?;
            b.extend_from_slice(b",\"role\":\"");
            b.extend_from_slice(c.role.name().as_bytes());
            b.extend_from_slice(b"\",\"states\":[");
            for (i, s) in c.states.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                put_name(b, s.name());
            }
            b.extend_from_slice(b"],\"durations_ns\":[");
            for (i, d) in c.durations().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                put_opt_u64(b, d);
            }
            b.extend_from_slice(b"],\"start_ns\":");
            put_u64(b, c.start_ns());
            b.extend_from_slice(b",\"end_ns\":");
            put_u64(b, c.end_ns());
            b.extend_from_slice(b",\"lifetime_ns\":");
            put_u64(b, c.lifetime_ns());
            b.extend_from_slice(b",\"start_time\":\"");
            this.write_time(b, c.start_ns());
            b.extend_from_slice(b"\",\"incomplete\":");
            b.extend_from_slice(if c.incomplete { b"true" } else { b"false" });
            b.extend_from_slice(b",\"owner\":");
            this.owners.put(b, c.owner.as_ref(), &this.names)?;
            b.extend_from_slice(b",\"close\":");
            put_opt_name(b, c.close.map(CloseClass::name));
            b.extend_from_slice(b",\"events\":[");
            for (i, n) in c.notes.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.extend_from_slice(b"{\"kind\":\"");
                b.extend_from_slice(n.kind.name().as_bytes());
                b.extend_from_slice(b"\",\"ts_ns\":");
                put_u64(b, n.ts_ns);
                b.extend_from_slice(b",\"state\":");
                put_opt_name(b, n.state.map(TcpState::name));
                put_errno(b, n.kind, n.value)?;
                b.extend_from_slice(b",\"value\":");
                put_i64(b, n.value.into());
                b.push(b'}');
            }
            for (key, v) in [
                (b"],\"events_dropped\":".as_slice(), c.notes_dropped),
                (b",\"retransmits\":", c.retransmits),
                (b",\"syn_retransmits\":", c.syn_retransmits),
                (b",\"synack_retransmits\":", c.synack_retransmits),
                (b",\"resets_sent\":", c.resets_sent),
                (b",\"resets_received\":", c.resets_received),
            ] {
                b.extend_from_slice(key);
                put_u64(b, v.into());
            }
            b.extend_from_slice(b",\"error\":");
            match c.error {
                Some(e) => put_str(b, &errno_name(e))?,
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"time_wait\":");
            match c.time_wait {
                Some(tw) => {
                    b.extend_from_slice(if tw.confirmed {
                        b"{\"confirmed\":true,\"expires_ns\":"
                    } else {
                        b"{\"confirmed\":false,\"expires_ns\":"
                    });
                    put_opt_u64(b, tw.expires_ns);
                    b.push(b'}');
                }
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"orphan\":");
            match c.orphan.as_deref() {
                Some(o) => {
                    b.extend_from_slice(b"{\"handoff_ns\":");
                    put_opt_u64(b, (o.handoff_ns != 0).then_some(o.handoff_ns));
                    b.extend_from_slice(b",\"expires_ns\":");
                    put_opt_u64(b, o.expires_ns);
                    b.extend_from_slice(b",\"end\":");
                    put_opt_name(b, o.end.map(|e| e.how.name()));
                    b.extend_from_slice(b",\"end_ns\":");
                    put_opt_u64(b, o.end.map(|e| e.ts_ns));
                    b.extend_from_slice(b",\"source\":");
                    put_opt_name(b, o.end.map(|e| e.how.source()));
                    b.push(b'}');
                }
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"tcp\":");
            match c.tcp.as_deref() {
                Some(t) => {
                    use tracer_common::stat;
                    let has = |bit: u32| t.present & bit != 0;
                    let fields: [(&[u8], Option<u64>); 12] = [
                        (b"{\"bytes_sent\":", c.data_bytes().0),
                        (b",\"bytes_received\":", c.data_bytes().1),
                        (
                            b",\"bytes_retrans\":",
                            has(stat::BYTES_RETRANS).then_some(t.bytes_retrans),
                        ),
                        (
                            b",\"segs_out\":",
                            has(stat::SEGS_OUT).then_some(t.segs_out.into()),
                        ),
                        (
                            b",\"segs_in\":",
                            has(stat::SEGS_IN).then_some(t.segs_in.into()),
                        ),
                        (
                            b",\"retrans_total\":",
                            has(stat::TOTAL_RETRANS).then_some(t.total_retrans.into()),
                        ),
                        (
                            b",\"srtt_us\":",
                            has(stat::SRTT).then_some((t.srtt_us >> 3).into()),
                        ),
                        (
                            b",\"rttvar_us\":",
                            has(stat::MDEV).then_some((t.mdev_us >> 2).into()),
                        ),
                        (
                            b",\"min_rtt_us\":",
                            (has(stat::MIN_RTT) && t.min_rtt_us != u32::MAX)
                                .then_some(t.min_rtt_us.into()),
                        ),
                        (
                            b",\"cwnd\":",
                            has(stat::SND_CWND).then_some(t.snd_cwnd.into()),
                        ),
                        (
                            b",\"handshake_rtt_us\":",
                            c.handshake_rtt_ns().map(|n| n / 1_000),
                        ),
                        (b",\"delivery_rate_bytes_per_s\":", t.delivery_rate()),
                    ];
                    for (key, v) in fields {
                        b.extend_from_slice(key);
                        put_opt_u64(b, v);
                    }
                    b.push(b'}');
                }
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"seen_from\":\"");
            b.extend_from_slice(c.seen_from.name().as_bytes());
            b.extend_from_slice(b"\"}\n");
            Ok(())
        })
    }
}
