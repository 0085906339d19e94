//! Prometheus metrics (`--metrics ADDR`), served by the same tokio runtime.
//!
//! Label cardinality is bounded by construction: states, roles, close classes, directions and
//! loss causes are small closed sets; nothing is labelled per connection, address or port.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{
    decode::LostCause,
    decode::{Context, ContextKind, TcpState, Transition},
    table::DiagTransition,
    table::{CloseClass, Conn, Role},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    old: &'static str,
    new: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    role: &'static str,
    close: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Bucket bounds: 10 µs, then factor-4 steps (log scale) up to ~11.9 h (10 µs × 4^16 =
/// 42,950 s). A CLOSE_WAIT leak or a long-lived connection lasts hours: with 14 buckets
/// (up to 671 s) every one of them landed in +Inf.
const SECONDS_BUCKETS: (f64, f64, u16) = (1e-5, 4.0, 17);

/// Durations from 10 µs to ~12 h.
fn seconds_histogram() -> Histogram {
    let (start, factor, n) = SECONDS_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

/// Handles to every metric (cheap to clone: each is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    transitions: Family<TransitionLabels, Counter>,
    connections: Family<ConnLabels, Counter>,
    resets: Family<DirLabels, Counter>,
    retransmits: Counter,
    syn_retransmits: Counter,
    lost: Family<CauseLabels, Counter>,
    open: Family<StateLabels, Gauge>,
    stuck: Family<StateLabels, Gauge>,
    handshake: Histogram,
    accept: Histogram,
    close_wait: Histogram,
    fin_wait2: Histogram,
    time_wait: Histogram,
    lifetime: Histogram,
    rtt: Histogram,
    bytes: Family<DirLabels, Counter>,
    connection_bytes: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tracer");
        let transitions = Family::<TransitionLabels, Counter>::default();
        r.register(
            "tcp_transitions",
            "TCP state transitions, by old and new state",
            transitions.clone(),
        );
        let connections = Family::<ConnLabels, Counter>::default();
        r.register(
            "tcp_connections",
            "Finished connections, by role and how they ended",
            connections.clone(),
        );
        let resets = Family::<DirLabels, Counter>::default();
        r.register(
            "tcp_resets",
            "RSTs, by direction (sent or received)",
            resets.clone(),
        );
        let retransmits = Counter::default();
        r.register(
            "tcp_retransmits",
            "Retransmitted segments",
            retransmits.clone(),
        );
        let syn_retransmits = Counter::default();
        r.register(
            "tcp_syn_retransmits",
            "Retransmitted SYNs (handshakes nobody answers)",
            syn_retransmits.clone(),
        );
        let lost = Family::<CauseLabels, Counter>::default();
        r.register(
            "lost_events",
            "Events the kernel could not hand over, by cause",
            lost.clone(),
        );
        let open = Family::<StateLabels, Gauge>::default();
        r.register(
            "tcp_connections_open",
            "Connections currently in each state",
            open.clone(),
        );
        let stuck = Family::<StateLabels, Gauge>::default();
        r.register(
            "tcp_connections_stuck",
            "Connections stuck longer than --stuck, by state",
            stuck.clone(),
        );
        let h = |r: &mut Registry, name: &str, help: &str| {
            let h = seconds_histogram();
            r.register(name, help, h.clone());
            h
        };
        let handshake = h(
            &mut r,
            "tcp_handshake_seconds",
            "Client handshake time (SYN_SENT to ESTABLISHED)",
        );
        let accept = h(
            &mut r,
            "tcp_accept_seconds",
            "Server handshake time (SYN_RECV to ESTABLISHED)",
        );
        let close_wait = h(
            &mut r,
            "tcp_close_wait_seconds",
            "Time in CLOSE_WAIT (the application's delay in closing)",
        );
        let fin_wait2 = h(
            &mut r,
            "tcp_fin_wait2_seconds",
            "Time in FIN_WAIT2 (waiting for the peer to close)",
        );
        let time_wait = h(
            &mut r,
            "tcp_time_wait_seconds",
            "Time in TIME_WAIT (from sock_diag)",
        );
        let lifetime = h(
            &mut r,
            "tcp_connection_lifetime_seconds",
            "Connection lifetime, first to last transition",
        );
        let rtt = h(
            &mut r,
            "tcp_rtt_seconds",
            "Smoothed RTT of each connection at its close (the kernel's srtt)",
        );
        let bytes = Family::<DirLabels, Counter>::default();
        r.register(
            "tcp_data_bytes",
            "Data bytes of finished connections, by direction (sent and acked, received)",
            bytes.clone(),
        );
        // 64 B to 64 GiB, factor 4.
        let connection_bytes = Histogram::new(exponential_buckets(64.0, 4.0, 16));
        r.register(
            "tcp_connection_bytes",
            "Data bytes each finished connection moved, both ways",
            connection_bytes.clone(),
        );
        Self {
            registry: Arc::new(r),
            rtt,
            bytes,
            connection_bytes,
            transitions,
            connections,
            resets,
            retransmits,
            syn_retransmits,
            lost,
            open,
            stuck,
            handshake,
            accept,
            close_wait,
            fin_wait2,
            time_wait,
            lifetime,
        }
    }

    pub fn transition(&self, t: &Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                old: t.old.name(),
                new: t.new.name(),
            })
            .inc();
    }

    pub fn diag_transition(&self, d: &DiagTransition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                old: d.old.name(),
                new: d.new.name(),
            })
            .inc();
        if d.old == TcpState::TimeWait
            && let Some(ns) = d.in_old_ns
        {
            self.time_wait.observe(ns as f64 / 1e9);
        }
    }

    pub fn event(&self, c: &Context) {
        match c.kind {
            ContextKind::SendReset => {
                self.resets
                    .get_or_create(&DirLabels { direction: "sent" })
                    .inc();
            }
            ContextKind::ReceiveReset => {
                self.resets
                    .get_or_create(&DirLabels {
                        direction: "received",
                    })
                    .inc();
            }
            ContextKind::Retransmit => {
                self.retransmits.inc();
                if c.state == Some(TcpState::SynSent) {
                    self.syn_retransmits.inc();
                }
            }
            _ => {}
        }
    }

    pub fn connection(&self, c: &Conn) {
        let close = c.close.unwrap_or(CloseClass::Unknown);
        self.connections
            .get_or_create(&ConnLabels {
                role: c.role.name(),
                close: close.name(),
            })
            .inc();
        let secs = |ns: u64| ns as f64 / 1e9;
        for (state, d) in c.states.iter().zip(c.durations_ns()) {
            let Some(d) = d else { continue };
            match (state, c.role) {
                (TcpState::SynSent, _) => self.handshake.observe(secs(d)),
                (TcpState::SynRecv, Role::Server) => self.accept.observe(secs(d)),
                (TcpState::CloseWait, _) => self.close_wait.observe(secs(d)),
                (TcpState::FinWait2, _) => self.fin_wait2.observe(secs(d)),
                _ => {}
            }
        }
        if !c.incomplete {
            self.lifetime.observe(secs(c.lifetime_ns()));
        }
        if let Some(t) = c.tcp.as_deref() {
            if t.present & tracer_common::stat::SRTT != 0 {
                self.rtt.observe(f64::from(t.srtt_us >> 3) / 1e6);
            }
            let (tx, rx) = c.data_bytes();
            for (direction, n) in [("sent", tx), ("received", rx)] {
                if let Some(n) = n {
                    self.bytes.get_or_create(&DirLabels { direction }).inc_by(n);
                }
            }
            if tx.is_some() || rx.is_some() {
                self.connection_bytes
                    .observe((tx.unwrap_or(0) + rx.unwrap_or(0)) as f64);
            }
        }
    }

    pub fn lost(&self, cause: LostCause, count: u64) {
        let cause = match cause {
            LostCause::RingbufFull => "ringbuf_full",
            LostCause::Recursion => "recursion",
            LostCause::ReadError => "read_error",
        };
        self.lost
            .get_or_create(&CauseLabels { cause })
            .inc_by(count);
    }

    /// Sets the gauges: open connections per state, and stuck ones per state.
    pub fn set_states(&self, open: &[(TcpState, u64)], stuck: &[(TcpState, u64)]) {
        for s in TcpState::ALL {
            let get =
                |v: &[(TcpState, u64)]| v.iter().find(|(t, _)| *t == s).map_or(0, |(_, n)| *n);
            self.open
                .get_or_create(&StateLabels { state: s.name() })
                .set(get(open) as i64);
            self.stuck
                .get_or_create(&StateLabels { state: s.name() })
                .set(get(stuck) as i64);
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// Serves `GET /metrics` on `addr` in the current runtime. Binding happens now, so a bad
    /// or busy address fails at start-up.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
        let local = listener.local_addr()?;
        let m = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("tracer: metrics endpoint stopped: {e}");
            }
        });
        Ok(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Table, tests::tr};
    use TcpState::*;

    #[test]
    fn counters_histograms_and_gauges_are_exposed() {
        let m = Metrics::new();
        let mut t = Table::new();
        let evs = [
            tr(1, 1_000_000, Close, SynSent, 0, 80),
            tr(1, 3_000_000, SynSent, Established, 5, 80),
            tr(1, 4_000_000, Established, FinWait1, 5, 80),
            tr(1, 5_000_000, FinWait1, FinWait2, 5, 80),
            tr(1, 9_000_000, FinWait2, Close, 5, 80),
        ];
        for e in &evs {
            m.transition(e);
            t.apply(e);
        }
        for c in t.flush() {
            m.connection(&c);
        }
        m.lost(LostCause::Recursion, 3);
        m.set_states(&[(Established, 7)], &[(CloseWait, 2)]);
        let text = m.encode();
        for line in [
            r#"tracer_tcp_transitions_total{old="SYN_SENT",new="ESTABLISHED"} 1"#,
            r#"tracer_tcp_connections_total{role="client",close="active"} 1"#,
            r#"tracer_lost_events_total{cause="recursion"} 3"#,
            r#"tracer_tcp_connections_open{state="ESTABLISHED"} 7"#,
            r#"tracer_tcp_connections_stuck{state="CLOSE_WAIT"} 2"#,
            "tracer_tcp_handshake_seconds_count 1",
            "tracer_tcp_handshake_seconds_sum 0.002",
            "tracer_tcp_fin_wait2_seconds_sum 0.004",
            "tracer_tcp_connection_lifetime_seconds_sum 0.008",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    /// The `le` bounds of one histogram, as the exposition gives them.
    fn bucket_bounds(text: &str, name: &str) -> Vec<String> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|l| l.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn duration_buckets_reach_hours_not_minutes() {
        let m = Metrics::new();
        let mut t = Table::new();
        // A client that stayed ESTABLISHED for 4 hours, then closed.
        let hours = 4 * 3_600_000_000_000u64;
        for e in [
            tr(1, 1_000, Close, SynSent, 0, 80),
            tr(1, 2_000, SynSent, Established, 5, 80),
            tr(1, hours, Established, FinWait1, 5, 80),
            tr(1, hours + 1_000, FinWait1, FinWait2, 5, 80),
            tr(1, hours + 2_000, FinWait2, Close, 5, 80),
        ] {
            t.apply(&e);
        }
        for c in t.flush() {
            m.connection(&c);
        }
        let text = m.encode();
        for name in [
            "tracer_tcp_handshake_seconds",
            "tracer_tcp_accept_seconds",
            "tracer_tcp_close_wait_seconds",
            "tracer_tcp_fin_wait2_seconds",
            "tracer_tcp_time_wait_seconds",
            "tracer_tcp_connection_lifetime_seconds",
        ] {
            let bounds = bucket_bounds(&text, name);
            assert_eq!(bounds.len(), 18, "{name}: 17 bounds and +Inf in:\n{text}");
            assert_eq!(
                bounds.first().map(String::as_str),
                Some("0.00001"),
                "{name}"
            );
            assert_eq!(bounds.last().map(String::as_str), Some("+Inf"), "{name}");
            let finite: Vec<f64> = bounds[..17].iter().map(|b| b.parse().unwrap()).collect();
            let top = finite[16];
            assert!(
                top >= 3.0 * 3600.0,
                "{name}: the last finite bucket ends at {top} s"
            );
            assert!(finite.windows(2).all(|w| (w[1] / w[0] - 4.0).abs() < 1e-9));
        }
        // The 4-hour lifetime is counted in a finite bucket: the one ending at ~11.9 h.
        let lifetime = "tracer_tcp_connection_lifetime_seconds_bucket{le=\"";
        let counts: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(lifetime))
            .map(|l| {
                let (le, rest) = l.split_once("\"} ").unwrap();
                (le.to_string(), rest.trim().parse().unwrap())
            })
            .collect();
        let first_with = counts.iter().find(|(_, n)| *n > 0).unwrap();
        assert_ne!(first_with.0, "+Inf", "{counts:?}");
        assert!(first_with.0.parse::<f64>().unwrap() > 4.0 * 3600.0);
    }

    #[test]
    fn rtt_and_bytes_of_finished_connections_are_exposed() {
        let m = Metrics::new();
        for (sock, sent, received, srtt_us) in [(1, 1_000, 200, 50), (2, 100_000, 0, 30_000)] {
            let mut t = Table::new();
            for e in [
                tr(sock, 1_000, Close, SynSent, 0, 80),
                tr(sock, 2_000, SynSent, Established, 5, 80),
                tr(sock, 3_000, Established, FinWait1, 5, 80),
                tr(sock, 4_000, FinWait1, FinWait2, 5, 80),
                tr(sock, 5_000, FinWait2, Close, 5, 80),
            ] {
                t.apply(&e);
            }
            let mut c = t.flush().remove(0);
            use tracer_common::stat;
            c.tcp = Some(Box::new(tracer_common::TcpStats {
                // SYN and FIN acked, the peer's FIN received: taken out.
                bytes_acked: sent + 2,
                bytes_received: received + 1,
                srtt_us: srtt_us << 3,
                present: stat::BYTES_ACKED | stat::BYTES_RECEIVED | stat::SRTT,
                ..Default::default()
            }));
            m.connection(&c);
        }
        // And one without counters (e.g. --no-counters): counted nowhere below.
        let mut t = Table::new();
        t.apply(&tr(3, 1_000, Close, SynSent, 0, 80));
        t.apply(&tr(3, 2_000, SynSent, Close, 5, 80));
        m.connection(&t.flush().remove(0));
        let text = m.encode();
        for line in [
            // 50 µs and 30 ms: 0.03005 s in all. Buckets 10 µs × 4^k (10, 40, 160 µs, …):
            // 50 µs is in the 160 µs one, 30 ms in the 40.96 ms one.
            "tracer_tcp_rtt_seconds_count 2",
            "tracer_tcp_rtt_seconds_sum 0.03005",
            "tracer_tcp_rtt_seconds_bucket{le=\"0.00004\"} 0",
            "tracer_tcp_rtt_seconds_bucket{le=\"0.00016\"} 1",
            "tracer_tcp_rtt_seconds_bucket{le=\"0.01024\"} 1",
            "tracer_tcp_rtt_seconds_bucket{le=\"0.04096\"} 2",
            "tracer_tcp_data_bytes_total{direction=\"sent\"} 101000",
            "tracer_tcp_data_bytes_total{direction=\"received\"} 200",
            // Both ways per connection: 1,200 and 100,000 bytes; buckets 64 B × 4^k.
            "tracer_tcp_connection_bytes_count 2",
            "tracer_tcp_connection_bytes_sum 101200.0",
            "tracer_tcp_connection_bytes_bucket{le=\"1024.0\"} 0",
            "tracer_tcp_connection_bytes_bucket{le=\"4096.0\"} 1",
            "tracer_tcp_connection_bytes_bucket{le=\"65536.0\"} 1",
            "tracer_tcp_connection_bytes_bucket{le=\"262144.0\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
