//! `tracer top`: the host's TCP state machine as a live terminal dashboard.
//!
//! The dashboard is a [`Sink`] like the other views: the pipeline feeds it every transition,
//! context event, finished connection and loss, and once a second ([`Sink::refresh`]) the
//! table's state counts and stuck connections. What it shows is a [`Dashboard`] (plain data,
//! unit-tested); a thread of its own owns the terminal, draws the dashboard every interval
//! and reads the keys ([`ui`]).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    decode::{Context, LostCause, TcpState, Transition},
    output::Sink,
    table::{
        CloseClass, Conn, DiagTransition, Owner, StuckGroup, StuckReport, StuckRow, Table, Unstuck,
    },
    units::endpoint,
};

mod ui;

/// Samples of each state's count kept for its sparkline (one per refresh).
pub const HISTORY: usize = 120;
/// Stuck connections listed at most.
const STUCK_ROWS: usize = 200;
/// The shortest window rates are taken over.
const RATE_WINDOW_NS: u64 = 1_000_000_000;
/// Remote endpoints counted individually; beyond, new ones are not (counted as such).
const MAX_REMOTES: usize = 10_000;

/// One arrow of the state diagram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Arrow {
    pub total: u64,
    /// Since the last refresh.
    pub now: u64,
    /// Per second over the last refresh interval.
    pub rate: f64,
}

/// What one remote endpoint did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    pub connections: u64,
    pub resets: u64,
    pub retransmits: u64,
    pub bytes: u64,
}

/// How the remotes are sorted (`s` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Connections,
    Resets,
    Retransmits,
    Bytes,
}

impl Sort {
    pub fn next(self) -> Self {
        match self {
            Self::Connections => Self::Resets,
            Self::Resets => Self::Retransmits,
            Self::Retransmits => Self::Bytes,
            Self::Bytes => Self::Connections,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Resets => "resets",
            Self::Retransmits => "retransmits",
            Self::Bytes => "bytes",
        }
    }

    fn key(self, r: &Remote) -> u64 {
        match self {
            Self::Connections => r.connections,
            Self::Resets => r.resets,
            Self::Retransmits => r.retransmits,
            Self::Bytes => r.bytes,
        }
    }
}

/// Everything the dashboard shows.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    /// The last refresh (CLOCK_MONOTONIC ns); 0 before the first.
    pub now_ns: u64,
    pub first_ns: u64,
    /// Sockets in each state now (from the table: seeded at start-up, then kept by events).
    pub states: BTreeMap<TcpState, u64>,
    /// Each state's count at the last [`HISTORY`] refreshes.
    pub history: BTreeMap<TcpState, VecDeque<u64>>,
    pub arrows: BTreeMap<(TcpState, TcpState), Arrow>,
    pub stuck: Vec<StuckRow>,
    pub threshold_ns: u64,
    pub remotes: HashMap<String, Remote>,
    pub remotes_uncounted: u64,
    pub closed: BTreeMap<&'static str, u64>,
    pub events: u64,
    events_since: u64,
    /// Where the current rate window began.
    rates_since_ns: u64,
    pub events_per_s: f64,
    pub lost: BTreeMap<&'static str, u64>,
    /// The tracer's own CPU time (user + system, seconds) and its share of a core over the
    /// last interval.
    pub cpu_s: f64,
    pub cpu_share: f64,
}

impl Dashboard {
    pub fn new(threshold_ns: u64) -> Self {
        Self {
            threshold_ns,
            ..Self::default()
        }
    }

    fn arrow(&mut self, old: TcpState, new: TcpState) {
        let a = self.arrows.entry((old, new)).or_default();
        a.total += 1;
        a.now += 1;
    }

    pub fn transition(&mut self, t: &Transition) {
        self.events += 1;
        self.events_since += 1;
        self.arrow(t.old, t.new);
    }

    pub fn diag(&mut self, d: &DiagTransition) {
        self.arrow(d.old, d.new);
    }

    pub fn context(&mut self) {
        self.events += 1;
        self.events_since += 1;
    }

    pub fn connection(&mut self, c: &Conn) {
        let close = c.close.unwrap_or(CloseClass::Unknown).name();
        *self.closed.entry(close).or_default() += 1;
        if c.role == crate::table::Role::Listener {
            return;
        }
        let remote = match c.role {
            crate::table::Role::Server => c.tuple.remote.addr.to_string(),
            _ => endpoint(c.tuple.remote),
        };
        let (tx, rx) = c.data_bytes();
        let add = Remote {
            connections: 1,
            resets: u64::from(c.resets_sent + c.resets_received),
            retransmits: u64::from(c.retransmits),
            bytes: tx.unwrap_or(0) + rx.unwrap_or(0),
        };
        let full = self.remotes.len() >= MAX_REMOTES;
        match self.remotes.get_mut(&remote) {
            Some(r) => {
                r.connections += add.connections;
                r.resets += add.resets;
                r.retransmits += add.retransmits;
                r.bytes += add.bytes;
            }
            None if full => self.remotes_uncounted += 1,
            None => {
                self.remotes.insert(remote, add);
            }
        }
    }

    pub fn lost(&mut self, cause: LostCause, count: u64) {
        let name = match cause {
            LostCause::RingbufFull => "ring buffer full",
            LostCause::Recursion => "skipped by the kernel",
            LostCause::ReadError => "unreadable",
        };
        *self.lost.entry(name).or_default() += count;
    }

    /// Once per interval: the table's states and stuck connections, and the rates since the
    /// last refresh.
    pub fn refresh(&mut self, table: &Table, now_ns: u64) {
        if self.first_ns == 0 {
            self.first_ns = now_ns;
            self.rates_since_ns = now_ns;
        }
        self.now_ns = now_ns;
        // Rates over a second at least: the reader takes events from the ring in batches, so
        // a shorter window would jump with the batches.
        let elapsed = now_ns.saturating_sub(self.rates_since_ns);
        let dt = if elapsed >= RATE_WINDOW_NS {
            self.rates_since_ns = now_ns;
            elapsed as f64 / 1e9
        } else {
            0.0
        };
        self.states = table.state_counts().into_iter().collect();
        for s in TcpState::ALL {
            let h = self.history.entry(s).or_default();
            h.push_back(self.states.get(&s).copied().unwrap_or(0));
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        self.stuck = table.stuck_rows(now_ns, self.threshold_ns, STUCK_ROWS);
        if dt == 0.0 {
            return;
        }
        for a in self.arrows.values_mut() {
            a.rate = a.now as f64 / dt;
            a.now = 0;
        }
        self.events_per_s = self.events_since as f64 / dt;
        self.events_since = 0;
        let cpu = own_cpu_seconds().unwrap_or(self.cpu_s);
        self.cpu_share = ((cpu - self.cpu_s) / dt).max(0.0);
        self.cpu_s = cpu;
    }

    /// The busiest remotes by `sort`, at most `n`.
    pub fn top_remotes(&self, sort: Sort, n: usize) -> Vec<(&str, Remote)> {
        let mut v: Vec<(&str, Remote)> = self
            .remotes
            .iter()
            .map(|(k, r)| (k.as_str(), *r))
            .filter(|(_, r)| sort.key(r) > 0)
            .collect();
        v.sort_by(|a, b| sort.key(&b.1).cmp(&sort.key(&a.1)).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// This process's user + system CPU time, in seconds.
fn own_cpu_seconds() -> Option<f64> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a full rusage into the pointer on success.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(ru.ru_utime) + secs(ru.ru_stime))
}

/// The dashboard sink: the pipeline's side of `tracer top`.
pub struct Top {
    shared: Arc<Mutex<Dashboard>>,
    ui: Option<ui::Ui>,
    interval: Duration,
    color: bool,
}

impl Top {
    /// The terminal is taken (alternate screen, raw mode) at the first refresh: once tracer
    /// is attached and its signal handlers are in place, so the start-up lines and errors
    /// are seen as usual and every way out gives the terminal back. From then until it is
    /// dropped, what tracer writes to stderr is kept and written out after the terminal.
    pub fn new(threshold_ns: u64, interval: Duration, color: bool) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Dashboard::new(threshold_ns))),
            ui: None,
            interval,
            color,
        }
    }

    fn with(&self, f: impl FnOnce(&mut Dashboard)) {
        // A poisoned lock only means the drawing thread panicked: keep counting.
        let mut d = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut d);
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        if let Some(ui) = self.ui.take() {
            ui.stop();
        }
    }
}

impl Sink for Top {
    fn transition(
        &mut self,
        t: &Transition,
        _in_old_ns: Option<u64>,
        _owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.with(|d| d.transition(t));
        Ok(())
    }

    fn event(&mut self, _c: &Context, _owner: Option<&Owner>) -> io::Result<()> {
        self.with(Dashboard::context);
        Ok(())
    }

    fn diag_transition(&mut self, t: &DiagTransition) -> io::Result<()> {
        self.with(|d| d.diag(t));
        Ok(())
    }

    fn connection(&mut self, c: &Conn) -> io::Result<()> {
        self.with(|d| d.connection(c));
        Ok(())
    }

    fn stuck(&mut self, _r: &StuckReport) -> io::Result<()> {
        Ok(())
    }

    fn unstuck(&mut self, _t: &Transition, _u: &Unstuck, _owner: Option<&Owner>) -> io::Result<()> {
        Ok(())
    }

    fn stuck_summary(&mut self, _groups: &[StuckGroup], _threshold_ns: u64) -> io::Result<()> {
        Ok(())
    }

    fn lost(&mut self, cause: LostCause, count: u64, _total: u64) -> io::Result<()> {
        self.with(|d| d.lost(cause, count));
        Ok(())
    }

    fn ladder(&mut self, _l: &crate::ladder::Ladder) -> io::Result<()> {
        Ok(())
    }

    fn summary(&mut self, _s: &crate::summary::Summary) -> io::Result<()> {
        Ok(())
    }

    fn refresh(&mut self, table: &Table, now_ns: u64) -> io::Result<()> {
        self.with(|d| d.refresh(table, now_ns));
        if self.ui.is_none() {
            let ui = ui::Ui::start(Arc::clone(&self.shared), self.interval, self.color).map_err(
                |e| io::Error::new(e.kind(), format!("tracer top needs a terminal: {e}")),
            )?;
            self.ui = Some(ui);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::tr;

    #[test]
    fn states_arrows_rates_and_stuck_from_the_table() {
        use TcpState::*;
        let mut t = Table::new();
        let mut d = Dashboard::new(1_000_000_000);
        let evs = [
            tr(1, 10, Close, SynSent, 0, 80),
            tr(1, 20, SynSent, Established, 5, 80),
            tr(2, 30, Listen, SynRecv, 80, 5),
            tr(2, 40, SynRecv, Established, 80, 5),
            tr(2, 50, Established, CloseWait, 80, 5),
        ];
        d.refresh(&t, 1);
        for e in &evs {
            t.apply(e);
            d.transition(e);
        }
        d.refresh(&t, 2_000_000_001);
        assert_eq!(d.states.get(&Established), Some(&1));
        assert_eq!(d.states.get(&CloseWait), Some(&1));
        let a = d.arrows[&(SynSent, Established)];
        assert_eq!((a.total, a.now), (1, 0));
        assert!((a.rate - 0.5).abs() < 1e-9, "{a:?}");
        assert_eq!(d.events, 5);
        // The server has been in CLOSE_WAIT for 2 s: stuck.
        assert_eq!(
            d.stuck.iter().map(|r| r.state).collect::<Vec<_>>(),
            [CloseWait]
        );
        assert_eq!(
            d.history[&CloseWait].iter().copied().collect::<Vec<_>>(),
            [0, 1]
        );
    }

    #[test]
    fn remotes_sort_by_each_key() {
        let mut d = Dashboard::new(0);
        d.remotes.insert(
            "a".into(),
            Remote {
                connections: 5,
                resets: 0,
                retransmits: 1,
                bytes: 10,
            },
        );
        d.remotes.insert(
            "b".into(),
            Remote {
                connections: 1,
                resets: 2,
                retransmits: 0,
                bytes: 99,
            },
        );
        let names = |s| {
            d.top_remotes(s, 5)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Sort::Connections), ["a", "b"]);
        assert_eq!(names(Sort::Resets), ["b"]);
        assert_eq!(names(Sort::Retransmits), ["a"]);
        assert_eq!(names(Sort::Bytes), ["b", "a"]);
        assert_eq!(Sort::Bytes.next(), Sort::Connections);
    }
}
