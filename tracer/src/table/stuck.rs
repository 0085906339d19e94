//! Stuck connections: which states can be stuck, and the reports of those that are.
use std::collections::HashMap;

use super::{Conn, Owner, Table};
use crate::decode::{Comm, SockAddr, TcpState};

/// Stuck reports of a socket in its current state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StuckTrack {
    /// Reports made in this state.
    pub reports: u32,
    /// Report again once the age reaches this (doubling: AGE, 2×AGE, 4×AGE, …).
    pub next_age_ns: u64,
}

/// States in which a connection can be stuck: waiting on the peer or on the application.
pub const STUCK_STATES: [TcpState; 7] = [
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
];

/// A full socket's queues and `tcp_info`, as `ss -ti` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SockInfo {
    /// Bytes received and not read by the application.
    pub recv_queue: u32,
    /// Bytes written and not acked by the peer (sent and unsent).
    pub send_queue: u32,
    /// Of those, bytes not sent yet.
    pub notsent_bytes: u32,
    /// Segments sent and not acked.
    pub unacked: u32,
    /// Retransmits of the current segment (RTO back-offs so far).
    pub retransmits: u8,
    /// Zero-window or keepalive probes sent without an answer.
    pub probes: u8,
    pub backoff: u8,
    pub rto_us: u32,
    pub rtt_us: u32,
    pub total_retrans: u32,
    pub last_data_sent_ms: u32,
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
    /// The peer's advertised receive window (bytes, scaled).
    pub snd_wnd: u32,
    /// RTT deviation (µs), the lowest RTT seen (µs), the congestion window (segments).
    pub rttvar_us: u32,
    pub min_rtt_us: u32,
    pub cwnd: u32,
    /// The kernel's `bytes_acked` and `bytes_received` (sequence space: a SYN or FIN
    /// exchanged counts 1, as `ss -ti` shows them), segments out and in.
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    /// The last delivery-rate sample (`tcpi_delivery_rate`, bytes per second; 0: none).
    pub delivery_rate_bytes_per_s: u64,
}

impl SockInfo {
    /// Why a socket stuck in `state` is stuck, in a few words: "4.0MiB unsent, peer window
    /// 0, 12 probes". Empty when nothing stands out.
    pub fn why(&self, state: TcpState) -> String {
        use crate::units::human_bytes;
        let mut parts: Vec<String> = Vec::new();
        let unsent = self.notsent_bytes;
        let in_flight = self.send_queue.saturating_sub(unsent);
        if unsent > 0 {
            parts.push(format!("{} unsent", human_bytes(unsent.into())));
        }
        if in_flight > 0 {
            parts.push(format!(
                "{} sent and not acked ({} segments)",
                human_bytes(in_flight.into()),
                self.unacked
            ));
        }
        if self.send_queue > 0 && self.snd_wnd == 0 {
            parts.push("peer window 0".into());
        }
        if self.probes > 0 {
            parts.push(format!("{} probes unanswered", self.probes));
        }
        if self.retransmits > 0 || self.backoff > 0 {
            parts.push(format!(
                "retransmitting (RTO {}, back-off {})",
                crate::units::human_ns(u64::from(self.rto_us) * 1_000),
                self.backoff
            ));
        }
        // Past the peer's FIN, `rcv_nxt` counts it too: until the application reads to the
        // end of the stream, the receive queue is its unread data plus 1.
        let fin = matches!(
            state,
            TcpState::CloseWait | TcpState::LastAck | TcpState::Closing
        ) && self.recv_queue > 0;
        let unread = self.recv_queue - u32::from(fin);
        if unread > 0 {
            parts.push(format!(
                "{} received and not read by the application",
                human_bytes(unread.into())
            ));
        }
        if parts.is_empty() && state == TcpState::CloseWait {
            parts.push("the peer closed; the application has not called close()".into());
        }
        parts.join(", ")
    }
}

/// A connection that has stayed in one state longer than the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckReport {
    pub conn: Conn,
    pub state: TcpState,
    pub age_ns: u64,
    /// The socket predates the tracer: the real age is at least `age_ns`.
    pub age_at_least: bool,
    /// 1 for the first report in this state, then 2, 3, … as it ages.
    pub report: u32,
    /// Its queues and `tcp_info` when the report was made (live, full sockets only).
    pub info: Option<SockInfo>,
}

/// A stuck connection that finally moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unstuck {
    pub state: TcpState,
    pub age_ns: u64,
    pub age_at_least: bool,
    pub reports: u32,
}

/// Stuck connections of one owner in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckGroup {
    pub owner: Option<Owner>,
    pub state: TcpState,
    pub count: u64,
    pub oldest_ns: u64,
    /// Some of them predate the tracer: `oldest_ns` is a lower bound.
    pub oldest_at_least: bool,
}

impl Table {
    /// Connections that have been in a stuck-prone state for at least `threshold_ns`, each
    /// reported when it crosses the threshold and again at 2×, 4×, 8×… (back-off).
    pub fn stuck(&mut self, now_ns: u64, threshold_ns: u64) -> Vec<StuckReport> {
        let mut out = Vec::new();
        for c in self.conns.values_mut().chain(self.seeded.values_mut()) {
            let Some(next) = c.stuck_due(now_ns, threshold_ns) else {
                continue;
            };
            let state = c.last_state();
            let (age_ns, age_at_least) = c.age(now_ns);
            c.stuck.reports += 1;
            // The next report when the age doubles (at least one threshold later).
            c.stuck.next_age_ns = (age_ns.saturating_mul(2)).max(next.saturating_add(threshold_ns));
            out.push(StuckReport {
                conn: (**c).clone(),
                state,
                age_ns,
                age_at_least,
                report: c.stuck.reports,
                info: None,
            });
        }
        // Orphaned FIN_WAIT2s: closed by their owner, the peer's FIN still awaited.
        for h in self
            .closing
            .values_mut()
            .chain(self.displaced.values_mut())
            .filter(|h| h.orphaned())
        {
            let c = &mut h.conn;
            let Some((age_ns, age_at_least)) = c.orphan_age(now_ns) else {
                continue;
            };
            let next = if c.stuck.next_age_ns == 0 {
                threshold_ns
            } else {
                c.stuck.next_age_ns
            };
            if age_ns < next {
                continue;
            }
            c.stuck.reports += 1;
            c.stuck.next_age_ns = (age_ns.saturating_mul(2)).max(next.saturating_add(threshold_ns));
            out.push(StuckReport {
                conn: (**c).clone(),
                state: TcpState::FinWait2,
                age_ns,
                age_at_least,
                report: c.stuck.reports,
                info: None,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.age_ns));
        out
    }

    /// The open sockets [`Self::stuck`] would report at `now_ns` (seeded ones, which have
    /// no address yet, left out), without counting a report.
    pub fn stuck_due(&self, now_ns: u64, threshold_ns: u64) -> Vec<SockAddr> {
        self.conns
            .values()
            .filter(|c| c.stuck_due(now_ns, threshold_ns).is_some())
            .map(|c| c.sock)
            .collect()
    }

    /// Every connection stuck for at least `threshold_ns` now, grouped by owner and state,
    /// largest groups first.
    pub fn stuck_groups(
        &self,
        now_ns: u64,
        threshold_ns: u64,
        keep: impl Fn(&Conn) -> bool,
    ) -> Vec<StuckGroup> {
        let mut groups: HashMap<(Option<(u32, Comm)>, TcpState), StuckGroup> = HashMap::new();
        let orphans = self
            .closing
            .values()
            .chain(self.displaced.values())
            .filter(|h| h.orphaned())
            .filter_map(|h| {
                let (age, at_least) = h.conn.orphan_age(now_ns)?;
                Some((&*h.conn, TcpState::FinWait2, age, at_least))
            });
        for (c, state, age, at_least) in self
            .conns
            .values()
            .chain(self.seeded.values())
            .map(|c| {
                let (age, at_least) = c.age(now_ns);
                (&**c, c.last_state(), age, at_least)
            })
            .chain(orphans)
            .filter(|(c, ..)| keep(c))
        {
            if !STUCK_STATES.contains(&state) || age < threshold_ns {
                continue;
            }
            let key = (c.owner.map(|o| (o.pid, o.comm)), state);
            let g = groups.entry(key).or_insert(StuckGroup {
                owner: c.owner,
                state,
                count: 0,
                oldest_ns: 0,
                oldest_at_least: false,
            });
            g.count += 1;
            if age > g.oldest_ns {
                g.oldest_ns = age;
                g.oldest_at_least = at_least;
            }
        }
        let mut v: Vec<StuckGroup> = groups.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.oldest_ns.cmp(&a.oldest_ns)));
        v
    }
}

impl Conn {
    /// Whether it is due for a stuck report at `now_ns` (in a stuck-prone state, and as old
    /// as the next report's age): that age, or `None`.
    fn stuck_due(&self, now_ns: u64, threshold_ns: u64) -> Option<u64> {
        if !STUCK_STATES.contains(&self.last_state()) {
            return None;
        }
        let next = if self.stuck.next_age_ns == 0 {
            threshold_ns
        } else {
            self.stuck.next_age_ns
        };
        (self.age(now_ns).0 >= next).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_names_what_stands_out() {
        let behind_a_closed_window = SockInfo {
            send_queue: 4 << 20,
            notsent_bytes: 4 << 20,
            snd_wnd: 0,
            probes: 12,
            ..SockInfo::default()
        };
        assert_eq!(
            behind_a_closed_window.why(TcpState::FinWait1),
            "4.0MiB unsent, peer window 0, 12 probes unanswered"
        );
        let retransmitting = SockInfo {
            send_queue: 1448,
            unacked: 1,
            snd_wnd: 65535,
            retransmits: 3,
            backoff: 3,
            rto_us: 1_600_000,
            ..SockInfo::default()
        };
        assert_eq!(
            retransmitting.why(TcpState::Established),
            "1.4KiB sent and not acked (1 segments), retransmitting (RTO 1.60s, back-off 3)"
        );
        // In CLOSE_WAIT the receive queue counts the peer's FIN until the end of the stream
        // is read: 100 bytes unread and the FIN, or only the FIN.
        assert_eq!(
            SockInfo {
                recv_queue: 101,
                ..SockInfo::default()
            }
            .why(TcpState::CloseWait),
            "100B received and not read by the application"
        );
        assert_eq!(
            SockInfo {
                recv_queue: 1,
                ..SockInfo::default()
            }
            .why(TcpState::CloseWait),
            "the peer closed; the application has not called close()"
        );
        // Before the FIN, every byte of it is data.
        assert_eq!(
            SockInfo {
                recv_queue: 1,
                ..SockInfo::default()
            }
            .why(TcpState::FinWait1),
            "1B received and not read by the application"
        );
        assert_eq!(
            SockInfo::default().why(TcpState::CloseWait),
            "the peer closed; the application has not called close()"
        );
        assert_eq!(SockInfo::default().why(TcpState::SynSent), "");
    }
}

/// One stuck connection as a dashboard lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckRow {
    pub state: TcpState,
    pub age_ns: u64,
    pub age_at_least: bool,
    pub owner: Option<Owner>,
    pub tuple: super::Tuple,
    pub netns: u32,
    /// An orphaned FIN_WAIT2: closed by its owner, the peer's FIN awaited.
    pub orphaned: bool,
    /// Its timeline so far (for the dashboard to show on demand).
    pub conn: Box<Conn>,
}

impl Table {
    /// The connections stuck for at least `threshold_ns` now, oldest first, at most `limit`
    /// (for a dashboard: it does not count reports as [`Self::stuck`] does). Only the rows
    /// kept carry a copy of their timeline.
    pub fn stuck_rows(&self, now_ns: u64, threshold_ns: u64, limit: usize) -> Vec<StuckRow> {
        let open = self
            .conns
            .values()
            .chain(self.seeded.values())
            .filter_map(|c| {
                let state = c.last_state();
                let (age_ns, age_at_least) = c.age(now_ns);
                (STUCK_STATES.contains(&state) && age_ns >= threshold_ns).then_some((
                    &**c,
                    state,
                    age_ns,
                    age_at_least,
                    c.orphan.is_some(),
                ))
            });
        let orphans = self
            .closing
            .values()
            .chain(self.displaced.values())
            .filter(|h| h.orphaned())
            .filter_map(|h| {
                let (age_ns, age_at_least) = h.conn.orphan_age(now_ns)?;
                (age_ns >= threshold_ns).then_some((
                    &*h.conn,
                    TcpState::FinWait2,
                    age_ns,
                    age_at_least,
                    true,
                ))
            });
        let mut rows: Vec<(&Conn, TcpState, u64, bool, bool)> = open.chain(orphans).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        rows.truncate(limit);
        rows.into_iter()
            .map(|(c, state, age_ns, age_at_least, orphaned)| StuckRow {
                state,
                age_ns,
                age_at_least,
                owner: c.owner,
                tuple: c.tuple,
                netns: c.netns,
                orphaned,
                conn: Box::new(c.clone()),
            })
            .collect()
    }

    /// Open sockets per state, grouped by `key` (a network namespace, a container), the
    /// orphaned FIN_WAIT2s counted in FIN_WAIT2 as [`Self::state_counts`] does.
    pub fn state_counts_by<K: Ord>(
        &self,
        mut key: impl FnMut(&Conn) -> K,
    ) -> std::collections::BTreeMap<K, [u64; 13]> {
        let mut out: std::collections::BTreeMap<K, [u64; 13]> = std::collections::BTreeMap::new();
        for c in self.conns.values().chain(self.seeded.values()) {
            out.entry(key(c)).or_insert([0; 13])[c.last_state() as usize] += 1;
        }
        for h in self
            .closing
            .values()
            .chain(self.displaced.values())
            .filter(|h| h.orphaned())
        {
            out.entry(key(&h.conn)).or_insert([0; 13])[TcpState::FinWait2 as usize] += 1;
        }
        out
    }
}
