//! `--summary`: what happened over the whole run, printed at exit and on SIGUSR1.
//! Connections by role and close class, transitions by (old, new), duration histograms
//! (log scale, with percentiles; the smoothed RTT among them), histograms of the data bytes
//! each connection sent and received, and the busiest remote endpoints.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    decode::{TcpState, Transition},
    table::DiagTransition,
    table::{CloseClass, Conn, Role},
    units::{endpoint, human_bytes, human_ns},
};

/// The durations summarised, in the order they are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// SYN_SENT → ESTABLISHED: the client's handshake (one round trip).
    Handshake,
    /// SYN_RECV → ESTABLISHED: a server's child socket until the handshake completed.
    Accept,
    /// Time in CLOSE_WAIT: the peer closed, the application had not yet.
    CloseWait,
    /// Time in FIN_WAIT2: waiting for the peer's FIN.
    FinWait2,
    /// Time in TIME_WAIT (from sock_diag: the timewait socket's life).
    TimeWait,
    /// First event to CLOSE, for complete connections (not listeners).
    Lifetime,
    /// The smoothed RTT at the close (the kernel's `srtt_us`).
    Rtt,
}

impl Span {
    pub const ALL: [Span; 7] = [
        Self::Handshake,
        Self::Accept,
        Self::CloseWait,
        Self::FinWait2,
        Self::TimeWait,
        Self::Lifetime,
        Self::Rtt,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Accept => "accept",
            Self::CloseWait => "close_wait",
            Self::FinWait2 => "fin_wait2",
            Self::TimeWait => "time_wait",
            Self::Lifetime => "lifetime",
            Self::Rtt => "srtt",
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Handshake => "handshake (SYN_SENT -> ESTABLISHED)",
            Self::Accept => "accept (SYN_RECV -> ESTABLISHED)",
            Self::CloseWait => "in CLOSE_WAIT",
            Self::FinWait2 => "in FIN_WAIT2",
            Self::TimeWait => "in TIME_WAIT",
            Self::Lifetime => "connection lifetime",
            Self::Rtt => "smoothed RTT at the close",
        }
    }
}

/// Largest duration kept exactly (longer ones are clamped): one day.
const MAX_NS: u64 = 86_400 * 1_000_000_000;
/// Largest byte count kept (larger ones are clamped): 1 PiB.
const MAX_BYTES: u64 = 1 << 50;
/// Byte histogram buckets grow by this factor: 16 B, 256 B, 4 KiB, 64 KiB, 1 MiB, …
const BYTES_FACTOR: u64 = 16;

/// The byte counts summarised, in the order they are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Volume {
    /// Data bytes sent and acked by the peer.
    Sent,
    /// Data bytes received.
    Received,
}

impl Volume {
    pub const ALL: [Volume; 2] = [Self::Sent, Self::Received];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Sent => "data sent (acked by the peer)",
            Self::Received => "data received",
        }
    }
}
/// Remote endpoints counted individually; beyond this many, new ones are not (the top lists
/// say so). Bounds memory under a scan or a SYN flood.
const MAX_REMOTES: usize = 100_000;
/// Entries in each top list.
const TOP: usize = 5;

#[derive(Clone, Copy, Debug, Default)]
struct RemoteCounts {
    connections: u64,
    resets: u64,
    /// Data bytes both ways (what the kernel counted at the close).
    bytes: u64,
    retransmits: u64,
}

pub struct Summary {
    first_ns: Option<u64>,
    last_ns: u64,
    by_role_close: BTreeMap<(&'static str, &'static str), u64>,
    incomplete: u64,
    transitions: BTreeMap<(TcpState, TcpState), u64>,
    hists: Vec<Histogram<u64>>,
    /// Exact maxima (the histogram rounds to 3 significant digits).
    maxes: Vec<u64>,
    remotes: HashMap<String, RemoteCounts>,
    remotes_uncounted: u64,
    /// Data bytes per connection, by [`Volume`]; and their exact maxima.
    volumes: Vec<Histogram<u64>>,
    volume_maxes: Vec<u64>,
}

impl Default for Summary {
    fn default() -> Self {
        Self::new()
    }
}

impl Summary {
    pub fn new() -> Self {
        let hist = || {
            // 1 ns to a day, 3 significant digits: percentiles within 0.1%.
            Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
        };
        Self {
            first_ns: None,
            last_ns: 0,
            by_role_close: BTreeMap::new(),
            incomplete: 0,
            transitions: BTreeMap::new(),
            hists: Span::ALL.iter().map(|_| hist()).collect(),
            maxes: vec![0; Span::ALL.len()],
            remotes: HashMap::new(),
            remotes_uncounted: 0,
            // 2 significant digits (percentiles within 1%): a tenth of the memory of 3 over
            // this range, and byte counts need no more.
            volumes: Volume::ALL
                .iter()
                .map(|_| {
                    Histogram::new_with_bounds(1, MAX_BYTES, 2)
                        .expect("static histogram bounds are valid")
                })
                .collect(),
            volume_maxes: vec![0; Volume::ALL.len()],
        }
    }

    fn record_volume(&mut self, v: Volume, bytes: u64) {
        let i = Volume::ALL.iter().position(|x| *x == v).unwrap_or(0);
        // Clamped into the histogram's range (0 is recordable), so `record` cannot fail.
        let _ = self.volumes[i].record(bytes.min(MAX_BYTES));
        self.volume_maxes[i] = self.volume_maxes[i].max(bytes);
    }

    fn seen(&mut self, ts: u64) {
        self.first_ns.get_or_insert(ts);
        self.last_ns = self.last_ns.max(ts);
    }

    fn record(&mut self, span: Span, ns: u64) {
        let i = Span::ALL.iter().position(|s| *s == span).unwrap_or(0);
        // Clamped into the histogram's range, so `record` cannot fail.
        let _ = self.hists[i].record(ns.clamp(1, MAX_NS));
        self.maxes[i] = self.maxes[i].max(ns);
    }

    pub fn transition(&mut self, t: &Transition) {
        self.seen(t.ts_ns);
        *self.transitions.entry((t.old, t.new)).or_default() += 1;
    }

    pub fn diag(&mut self, d: &DiagTransition) {
        self.seen(d.ts_ns);
        *self.transitions.entry((d.old, d.new)).or_default() += 1;
        if d.old == TcpState::TimeWait
            && let Some(ns) = d.in_old_ns
        {
            self.record(Span::TimeWait, ns);
        }
    }

    pub fn connection(&mut self, c: &Conn) {
        let close = c.close.unwrap_or(CloseClass::Unknown).name();
        *self
            .by_role_close
            .entry((c.role.name(), close))
            .or_default() += 1;
        if c.incomplete {
            self.incomplete += 1;
        }
        for (i, d) in c.durations_ns().into_iter().enumerate() {
            let Some(d) = d else { continue };
            let (from, to) = (c.states[i], c.states[i + 1]);
            match (from, to) {
                (TcpState::SynSent, TcpState::Established) => self.record(Span::Handshake, d),
                (TcpState::SynRecv, TcpState::Established) => self.record(Span::Accept, d),
                (TcpState::CloseWait, _) => self.record(Span::CloseWait, d),
                (TcpState::FinWait2, _) => self.record(Span::FinWait2, d),
                _ => {}
            }
        }
        if c.role == Role::Listener {
            return;
        }
        if !c.incomplete {
            self.record(Span::Lifetime, c.lifetime_ns());
        }
        // The remote endpoint: address and port for a client (the service it used), the
        // address alone for a server (the peer's port is ephemeral).
        let remote = match c.role {
            Role::Server => c.tuple.remote.addr.to_string(),
            _ => endpoint(c.tuple.remote),
        };
        let resets = u64::from(c.resets_received + c.resets_sent);
        let (tx, rx) = c.data_bytes();
        let bytes = tx.unwrap_or(0) + rx.unwrap_or(0);
        for (v, n) in [(Volume::Sent, tx), (Volume::Received, rx)] {
            if let Some(n) = n {
                self.record_volume(v, n);
            }
        }
        let retransmits = c
            .tcp
            .as_deref()
            .map_or(u64::from(c.retransmits), |t| u64::from(t.total_retrans));
        if let Some(t) = c.tcp.as_deref()
            && t.present & tracer_common::stat::SRTT != 0
        {
            self.record(Span::Rtt, u64::from(t.srtt_us >> 3) * 1_000);
        }
        if let Some(r) = self.remotes.get_mut(&remote) {
            r.connections += 1;
            r.resets += resets;
            r.bytes += bytes;
            r.retransmits += retransmits;
        } else if self.remotes.len() < MAX_REMOTES {
            self.remotes.insert(
                remote,
                RemoteCounts {
                    connections: 1,
                    resets,
                    bytes,
                    retransmits,
                },
            );
        } else {
            self.remotes_uncounted += 1;
        }
    }

    fn top(&self, key: impl Fn(&RemoteCounts) -> u64) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .remotes
            .iter()
            .map(|(k, r)| (k.clone(), key(r)))
            .filter(|(_, n)| *n > 0)
            .collect();
        // Most first; ties by name so the output is stable.
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(TOP);
        v
    }

    /// The summary as one JSON object (`"type":"summary"`).
    pub fn record_json(&self) -> SummaryRecord {
        let connections = self.by_role_close.values().sum();
        SummaryRecord {
            kind: "summary",
            span_ns: self
                .last_ns
                .saturating_sub(self.first_ns.unwrap_or(self.last_ns)),
            connections,
            incomplete: self.incomplete,
            by_role_close: self
                .by_role_close
                .iter()
                .map(|(&(role, close), &count)| RoleClose { role, close, count })
                .collect(),
            transitions: self
                .transitions
                .iter()
                .map(|(&(old, new), &count)| TransitionCount {
                    old: old.name(),
                    new: new.name(),
                    count,
                })
                .collect(),
            durations: Span::ALL
                .iter()
                .zip(self.hists.iter().zip(&self.maxes))
                .filter(|(_, (h, _))| !h.is_empty())
                .map(|(s, (h, &max))| DurationStats {
                    name: s.name(),
                    count: h.len(),
                    // Within 0.1% (3 significant digits), never above the exact maximum.
                    p50_ns: h.value_at_quantile(0.5).min(max),
                    p90_ns: h.value_at_quantile(0.9).min(max),
                    p99_ns: h.value_at_quantile(0.99).min(max),
                    max_ns: max,
                    buckets: decades(h)
                        .into_iter()
                        .map(|(le_ns, count)| Bucket { le_ns, count })
                        .collect(),
                })
                .collect(),
            bytes: Volume::ALL
                .iter()
                .zip(self.volumes.iter().zip(&self.volume_maxes))
                .filter(|(_, (h, _))| !h.is_empty())
                .map(|(v, (h, &max))| VolumeStats {
                    name: v.name(),
                    count: h.len(),
                    // Within 1% (2 significant digits), never above the exact maximum.
                    p50_bytes: h.value_at_quantile(0.5).min(max),
                    p90_bytes: h.value_at_quantile(0.9).min(max),
                    p99_bytes: h.value_at_quantile(0.99).min(max),
                    max_bytes: max,
                    buckets: byte_buckets(h)
                        .into_iter()
                        .map(|(le_bytes, count)| ByteBucket { le_bytes, count })
                        .collect(),
                })
                .collect(),
            top_remotes_by_connections: self
                .top(|r| r.connections)
                .into_iter()
                .map(|(remote, count)| RemoteCount { remote, count })
                .collect(),
            top_remotes_by_resets: self
                .top(|r| r.resets)
                .into_iter()
                .map(|(remote, count)| RemoteCount { remote, count })
                .collect(),
            top_remotes_by_bytes: self
                .top(|r| r.bytes)
                .into_iter()
                .map(|(remote, count)| RemoteCount { remote, count })
                .collect(),
            top_remotes_by_retransmits: self
                .top(|r| r.retransmits)
                .into_iter()
                .map(|(remote, count)| RemoteCount { remote, count })
                .collect(),
            remotes_not_counted: self.remotes_uncounted,
        }
    }

    /// The summary for people.
    pub fn render_text(&self) -> String {
        let r = self.record_json();
        let mut s = String::new();
        let by_role = |role: &str| -> u64 {
            r.by_role_close
                .iter()
                .filter(|x| x.role == role)
                .map(|x| x.count)
                .sum()
        };
        let _ = writeln!(
            s,
            "── summary over {}: {} connections closed (client {}, server {}, listener {}, unknown {}){}",
            human_ns(r.span_ns),
            r.connections,
            by_role("client"),
            by_role("server"),
            by_role("listener"),
            by_role("unknown"),
            if r.incomplete > 0 {
                format!(", {} incomplete", r.incomplete)
            } else {
                String::new()
            }
        );
        if !r.by_role_close.is_empty() {
            let _ = writeln!(s, "  close classes");
            for x in &r.by_role_close {
                let _ = writeln!(s, "    {:<9} {:<16} {:>9}", x.role, x.close, x.count);
            }
        }
        if !r.transitions.is_empty() {
            let _ = writeln!(s, "  transitions");
            for t in &r.transitions {
                let name = format!("{} -> {}", t.old, t.new);
                let _ = writeln!(s, "    {name:<28} {:>9}", t.count);
            }
        }
        if !r.durations.is_empty() {
            let _ = writeln!(
                s,
                "  durations{:<32} {:>7} {:>9} {:>9} {:>9} {:>9}",
                "", "count", "p50", "p90", "p99", "max"
            );
            for d in &r.durations {
                let label = Span::ALL
                    .iter()
                    .find(|s| s.name() == d.name)
                    .map_or(d.name, |s| s.label());
                quantile_row(
                    &mut s,
                    label,
                    d.count,
                    [d.p50_ns, d.p90_ns, d.p99_ns, d.max_ns].map(human_ns),
                );
            }
            let _ = writeln!(
                s,
                "  histograms (log scale: count of durations up to each bound)"
            );
            for d in &r.durations {
                histogram_bars(
                    &mut s,
                    d.name,
                    d.buckets.iter().map(|b| (human_ns(b.le_ns), b.count)),
                );
            }
        }
        if !r.bytes.is_empty() {
            let _ = writeln!(
                s,
                "  bytes per connection{:<21} {:>7} {:>9} {:>9} {:>9} {:>9}",
                "", "count", "p50", "p90", "p99", "max"
            );
            for v in &r.bytes {
                let label = Volume::ALL
                    .iter()
                    .find(|x| x.name() == v.name)
                    .map_or(v.name, |x| x.label());
                quantile_row(
                    &mut s,
                    label,
                    v.count,
                    [v.p50_bytes, v.p90_bytes, v.p99_bytes, v.max_bytes].map(human_bytes),
                );
            }
            let _ = writeln!(
                s,
                "  byte histograms (log scale: count of connections up to each bound)"
            );
            for v in &r.bytes {
                histogram_bars(
                    &mut s,
                    v.name,
                    v.buckets.iter().map(|b| (human_bytes(b.le_bytes), b.count)),
                );
            }
        }
        for (title, list) in [
            ("top remotes by connections", &r.top_remotes_by_connections),
            ("top remotes by resets", &r.top_remotes_by_resets),
            ("top remotes by bytes", &r.top_remotes_by_bytes),
            ("top remotes by retransmits", &r.top_remotes_by_retransmits),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(s, "  {title}");
            for x in list {
                let _ = writeln!(s, "    {:<46} {:>9}", x.remote, x.count);
            }
        }
        if r.remotes_not_counted > 0 {
            let _ = writeln!(
                s,
                "  ({} connections to further remotes not counted: over {MAX_REMOTES} distinct)",
                r.remotes_not_counted
            );
        }
        s
    }
}

/// One row of a quantiles table: its label, the count, then p50, p90, p99 and max.
fn quantile_row(s: &mut String, label: &str, count: u64, [p50, p90, p99, max]: [String; 4]) {
    let _ = writeln!(
        s,
        "    {label:<37} {count:>7} {p50:>9} {p90:>9} {p99:>9} {max:>9}"
    );
}

/// One histogram as bars: its name, then a line per bucket (its bound, its count, a bar of
/// up to 40 blocks scaled to the fullest bucket).
fn histogram_bars(
    s: &mut String,
    name: &str,
    buckets: impl Iterator<Item = (String, u64)> + Clone,
) {
    let _ = writeln!(s, "    {name}");
    let most = buckets.clone().map(|(_, n)| n).max().unwrap_or(1).max(1);
    for (bound, count) in buckets {
        let bar = ((count * 40).div_ceil(most)) as usize;
        let line = format!("      ≤ {bound:>7} {count:>9} {}", "█".repeat(bar));
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// Counts per decade (≤ 1µs, ≤ 10µs, …) from the first non-empty to the last.
fn decades(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut hi = 1_000u64;
    let mut below = 0u64;
    loop {
        // Values are bucketed to 3 significant digits: the bound's bucket counts as ≤ it.
        let upto = h.count_between(0, hi);
        out.push((hi, upto - below));
        below = upto;
        if upto >= h.len() || hi >= MAX_NS {
            break;
        }
        hi = hi.saturating_mul(10);
    }
    // Drop leading empty decades; trailing ones end at the max anyway.
    let first = out.iter().position(|(_, n)| *n > 0).unwrap_or(0);
    out.drain(..first);
    out
}

/// Counts per factor-16 bucket (≤ 0 B, ≤ 16 B, ≤ 256 B, ≤ 4 KiB, …) from the first non-empty
/// to the last.
fn byte_buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut hi = 0u64;
    let mut below = 0u64;
    loop {
        // Values are bucketed to 2 significant digits: the bound's bucket (within 1% above
        // it) counts as ≤ it.
        let upto = h.count_between(0, hi);
        out.push((hi, upto - below));
        below = upto;
        if upto >= h.len() || hi >= MAX_BYTES {
            break;
        }
        hi = if hi == 0 {
            BYTES_FACTOR
        } else {
            hi * BYTES_FACTOR
        };
    }
    let first = out.iter().position(|(_, n)| *n > 0).unwrap_or(0);
    out.drain(..first);
    out
}

#[derive(Debug, Serialize)]
pub struct SummaryRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// From the first event to the last.
    pub span_ns: u64,
    pub connections: u64,
    pub incomplete: u64,
    pub by_role_close: Vec<RoleClose>,
    pub transitions: Vec<TransitionCount>,
    pub durations: Vec<DurationStats>,
    /// Data bytes per connection (those with the kernel's counters), sent and received.
    pub bytes: Vec<VolumeStats>,
    pub top_remotes_by_connections: Vec<RemoteCount>,
    pub top_remotes_by_resets: Vec<RemoteCount>,
    /// Data bytes both ways.
    pub top_remotes_by_bytes: Vec<RemoteCount>,
    pub top_remotes_by_retransmits: Vec<RemoteCount>,
    pub remotes_not_counted: u64,
}

#[derive(Debug, Serialize)]
pub struct RoleClose {
    pub role: &'static str,
    pub close: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct TransitionCount {
    pub old: &'static str,
    pub new: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct DurationStats {
    pub name: &'static str,
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Log scale: how many durations fall in (previous bound, `le_ns`].
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    pub le_ns: u64,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct VolumeStats {
    pub name: &'static str,
    pub count: u64,
    pub p50_bytes: u64,
    pub p90_bytes: u64,
    pub p99_bytes: u64,
    pub max_bytes: u64,
    /// Factor 16: how many connections fall in (previous bound, `le_bytes`].
    pub buckets: Vec<ByteBucket>,
}

#[derive(Debug, Serialize)]
pub struct ByteBucket {
    pub le_bytes: u64,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct RemoteCount {
    pub remote: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Table, tests::tr};
    use TcpState::*;

    #[test]
    fn counts_percentiles_and_top_remotes() {
        let mut s = Summary::new();
        let mut t = Table::new();
        // 100 clients whose handshakes take 1..=100 µs, closing first.
        for i in 1..=100u64 {
            let base = i * 1_000_000;
            for x in [
                tr(i, base, Close, SynSent, 0, 80),
                tr(i, base + i * 1000, SynSent, Established, 5, 80),
                tr(i, base + 500_000, Established, FinWait1, 5, 80),
                tr(i, base + 600_000, FinWait1, FinWait2, 5, 80),
                tr(i, base + 700_000, FinWait2, Close, 5, 80),
            ] {
                s.transition(&x);
                t.apply(&x);
            }
        }
        for c in t.flush() {
            s.connection(&c);
        }
        let r = s.record_json();
        assert_eq!(r.connections, 100);
        assert_eq!(
            (r.by_role_close[0].role, r.by_role_close[0].close),
            ("client", "active")
        );
        let closes = r
            .transitions
            .iter()
            .find(|x| (x.old, x.new) == ("FIN_WAIT2", "CLOSE"))
            .unwrap();
        assert_eq!(closes.count, 100);
        let h = r.durations.iter().find(|d| d.name == "handshake").unwrap();
        assert_eq!(h.count, 100);
        // 3 significant digits: within 0.1%.
        assert!(h.p50_ns.abs_diff(50_000) <= 50, "{}", h.p50_ns);
        assert!(h.p99_ns.abs_diff(99_000) <= 100, "{}", h.p99_ns);
        assert!(h.max_ns.abs_diff(100_000) <= 100, "{}", h.max_ns);
        // Log-scale buckets: ≤10µs holds 10, ≤100µs the other 90.
        let b: Vec<(u64, u64)> = h.buckets.iter().map(|b| (b.le_ns, b.count)).collect();
        assert_eq!(b, [(1_000, 1), (10_000, 9), (100_000, 90)]);
        let f2 = r.durations.iter().find(|d| d.name == "fin_wait2").unwrap();
        assert_eq!((f2.count, f2.max_ns), (100, 100_000));
        assert_eq!(r.top_remotes_by_connections[0].remote, "127.0.0.1:80");
        assert_eq!(r.top_remotes_by_connections[0].count, 100);
        assert!(r.top_remotes_by_resets.is_empty());
        let text = s.render_text();
        assert!(
            text.contains("100 connections closed (client 100"),
            "{text}"
        );
        assert!(
            text.contains("handshake (SYN_SENT -> ESTABLISHED)"),
            "{text}"
        );
    }

    /// A client to 127.0.0.1:`dport` that closed first having sent `sent` and received
    /// `received` data bytes, with this smoothed RTT and retransmit count at its close.
    fn client(sock: u64, dport: u16, sent: u64, received: u64, srtt_us: u32, retrans: u32) -> Conn {
        let mut t = Table::new();
        for x in [
            tr(sock, 1_000, Close, SynSent, 0, dport),
            tr(sock, 2_000, SynSent, Established, 5, dport),
            tr(sock, 3_000, Established, FinWait1, 5, dport),
            tr(sock, 4_000, FinWait1, FinWait2, 5, dport),
            tr(sock, 5_000, FinWait2, Close, 5, dport),
        ] {
            t.apply(&x);
        }
        let mut c = t.flush().remove(0);
        use tracer_common::stat;
        c.tcp = Some(Box::new(tracer_common::TcpStats {
            // SYN and FIN acked, the peer's FIN received.
            bytes_acked: sent + 2,
            bytes_received: received + 1,
            srtt_us: srtt_us << 3,
            total_retrans: retrans,
            present: stat::BYTES_ACKED | stat::BYTES_RECEIVED | stat::SRTT | stat::TOTAL_RETRANS,
            ..Default::default()
        }));
        c
    }

    #[test]
    fn rtt_and_byte_histograms_and_top_remotes_by_bytes_and_retransmits() {
        let mut s = Summary::new();
        for c in [
            client(1, 80, 100, 20, 50, 0),
            client(2, 80, 1_000, 20, 60, 2),
            client(3, 80, 5_000, 20, 70, 1),
            client(4, 443, 2_000_000, 300, 20_000, 0),
        ] {
            s.connection(&c);
        }
        let r = s.record_json();
        // The smoothed RTTs, by decade: three under 100 µs, one at 20 ms.
        let rtt = r.durations.iter().find(|d| d.name == "srtt").unwrap();
        let b: Vec<(u64, u64)> = rtt.buckets.iter().map(|b| (b.le_ns, b.count)).collect();
        assert_eq!(
            b,
            [
                (100_000, 3),
                (1_000_000, 0),
                (10_000_000, 0),
                (100_000_000, 1)
            ]
        );
        assert_eq!((rtt.count, rtt.max_ns), (4, 20_000_000));
        // Data sent per connection, factor-16 buckets: ≤256 B, ≤4 KiB, ≤64 KiB, ≤16 MiB.
        let sent = r.bytes.iter().find(|v| v.name == "sent").unwrap();
        let b: Vec<(u64, u64)> = sent.buckets.iter().map(|b| (b.le_bytes, b.count)).collect();
        assert_eq!(
            b,
            [(256, 1), (4096, 1), (65_536, 1), (1 << 20, 0), (1 << 24, 1)]
        );
        assert_eq!((sent.count, sent.max_bytes), (4, 2_000_000));
        // The median is the second value, 1,000, to 2 significant digits.
        assert!(sent.p50_bytes.abs_diff(1_000) <= 10, "{}", sent.p50_bytes);
        let received = r.bytes.iter().find(|v| v.name == "received").unwrap();
        let b: Vec<(u64, u64)> = received
            .buckets
            .iter()
            .map(|b| (b.le_bytes, b.count))
            .collect();
        assert_eq!(b, [(256, 3), (4096, 1)]);
        assert_eq!(received.max_bytes, 300);
        // Bytes both ways per remote; retransmits per remote (none to :443: not listed).
        let top = |v: &[RemoteCount]| -> Vec<(String, u64)> {
            v.iter().map(|x| (x.remote.clone(), x.count)).collect()
        };
        assert_eq!(
            top(&r.top_remotes_by_bytes),
            [
                ("127.0.0.1:443".to_string(), 2_000_300),
                ("127.0.0.1:80".to_string(), 6_160)
            ]
        );
        assert_eq!(
            top(&r.top_remotes_by_retransmits),
            [("127.0.0.1:80".to_string(), 3)]
        );
        let text = s.render_text();
        let bar = "█".repeat(40);
        let want = format!(
            "    received\n      ≤    256B         3 {bar}\n      ≤  4.0KiB         1 {}\n",
            "█".repeat(14)
        );
        assert!(text.contains(&want), "{want}\nnot in:\n{text}");
        for line in [
            "  top remotes by bytes\n    127.0.0.1:443                                    2000300\n    127.0.0.1:80                                        6160\n",
            "  top remotes by retransmits\n    127.0.0.1:80                                           3\n",
            "    srtt\n      ≤ 100.0µs         3 ",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }
}
