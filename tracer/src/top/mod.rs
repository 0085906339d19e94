//! `tracer top`: the host's TCP state machine as a live terminal dashboard.
//!
//! The dashboard is a [`Sink`] like the other views. Per event it only counts, in its own
//! memory (an arrow is an array index; a finished connection adds to its remote's counts and
//! to a bounded list of recent ones): no lock, no formatting. Once per interval
//! ([`Sink::refresh`], the pipeline's clock) it publishes what it counted, with the table's
//! state counts, stuck connections and groups, into a shared [`Dashboard`] (plain data,
//! [`model`]); a thread of its own owns the terminal, copies that dashboard when it changed,
//! draws it ([`panels`]) and reads the keys ([`keys`]).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    cgroup::Names,
    clock::WallClock,
    decode::{Context, LostCause, TcpState, Transition},
    diagram::{Arrows, STATES},
    output::Sink,
    table::{
        CloseClass, Conn, DiagTransition, Owner, Role, StuckGroup, StuckReport, Table, Unstuck,
    },
};

mod keys;
pub mod model;
mod panels;
mod ui;

pub use model::Dashboard;
use model::{
    Group, HISTORY, MAX_GROUPS, MAX_REMOTES, RECENT, Remote, RemoteKey, STUCK_ROWS, container_key,
    top_groups,
};

/// The shortest window rates are taken over: the reader takes events from the ring in
/// batches, so a shorter one would jump with the batches.
const RATE_WINDOW_NS: u64 = 1_000_000_000;

/// Set when the dashboard's `q` (or a signal, in a replay) asks to stop.
static QUIT: AtomicBool = AtomicBool::new(false);

/// Whether `q` was pressed (a replay polls it; live, `q` raises SIGINT).
pub fn quit_requested() -> bool {
    QUIT.load(Ordering::Relaxed)
}

/// Asks the dashboard's owner to stop.
pub fn request_quit() {
    QUIT.store(true, Ordering::Relaxed);
}

/// What the sink counts between two publications.
#[derive(Default)]
struct Counts {
    arrows: Arrows,
    events: u64,
    /// `events` when the current rate window began.
    events_at_window: u64,
    remotes: HashMap<RemoteKey, Remote>,
    remotes_uncounted: u64,
    closed: [u64; CLOSE_CLASSES.len()],
    recent: VecDeque<Conn>,
    lost: BTreeMap<&'static str, u64>,
}

const CLOSE_CLASSES: [CloseClass; 11] = [
    CloseClass::Active,
    CloseClass::Passive,
    CloseClass::Simultaneous,
    CloseClass::ResetSent,
    CloseClass::ResetReceived,
    CloseClass::Refused,
    CloseClass::Unreachable,
    CloseClass::Timeout,
    CloseClass::OrphanTimeout,
    CloseClass::ListenerClosed,
    CloseClass::Unknown,
];

/// The dashboard sink: the pipeline's side of `tracer top`.
pub struct Top {
    shared: Arc<Mutex<Dashboard>>,
    counts: Counts,
    ui: Option<ui::Ui>,
    interval: Duration,
    color: bool,
    names: Names,
    /// The pipeline time of the next publication.
    next_ns: u64,
    /// Where the current rate window began.
    window_ns: u64,
    cpu_s: f64,
}

impl Top {
    /// The terminal is taken (alternate screen, raw mode) at the first refresh: once tracer
    /// is attached and its signal handlers are in place, so the start-up lines and errors
    /// are seen as usual and every way out gives the terminal back. From then until it is
    /// dropped, what tracer writes to stderr is kept and written out after the terminal.
    pub fn new(threshold_ns: u64, interval: Duration, color: bool, clock: WallClock) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Dashboard::new(threshold_ns, clock))),
            counts: Counts::default(),
            ui: None,
            interval,
            color,
            names: Names::new(),
            next_ns: 0,
            window_ns: 0,
            cpu_s: own_cpu_seconds().unwrap_or(0.0),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Dashboard) -> T) -> T {
        // A poisoned lock only means the drawing thread panicked: keep going.
        let mut d = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut d)
    }

    /// What the table says now and what was counted, into the shared dashboard. The table's
    /// work (three passes) is done before the lock is taken.
    fn publish(&mut self, table: &Table, now_ns: u64) {
        let threshold_ns = self.with(|d| d.threshold_ns);
        let (states, by_netns, by_container) = groups(table, &self.names);
        let stuck = table.stuck_rows(now_ns, threshold_ns, STUCK_ROWS);
        if self.window_ns == 0 {
            self.window_ns = now_ns;
        }
        let elapsed = now_ns.saturating_sub(self.window_ns);
        let rates = (elapsed >= RATE_WINDOW_NS).then(|| {
            let secs = elapsed as f64 / 1e9;
            self.window_ns = now_ns;
            self.counts.arrows.take_rates(secs);
            let events = self.counts.events - self.counts.events_at_window;
            self.counts.events_at_window = self.counts.events;
            let cpu = own_cpu_seconds().unwrap_or(self.cpu_s);
            let share = ((cpu - self.cpu_s) / secs).max(0.0);
            self.cpu_s = cpu;
            (events as f64 / secs, share)
        });
        let c = &self.counts;
        let shared = Arc::clone(&self.shared);
        let mut d = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.first_ns == 0 {
            d.first_ns = now_ns;
        }
        d.now_ns = now_ns;
        d.states = states;
        for s in TcpState::ALL {
            let h = d.history.entry(s).or_default();
            h.push_back(states[s as usize]);
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        d.stuck = stuck;
        d.by_netns = by_netns;
        d.by_container = by_container;
        d.arrows.clone_from(&c.arrows);
        d.recent.clone_from(&c.recent);
        d.remotes.clone_from(&c.remotes);
        d.remotes_uncounted = c.remotes_uncounted;
        d.closed = CLOSE_CLASSES
            .iter()
            .zip(c.closed)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.name(), n))
            .collect();
        d.lost.clone_from(&c.lost);
        d.events = c.events;
        if let Some((eps, cpu)) = rates {
            d.events_per_s = eps;
            d.cpu_share = cpu;
            d.cpu_s = self.cpu_s;
        }
        d.names = self.names.clone();
        d.generation += 1;
    }

    fn start_ui(&mut self) -> io::Result<()> {
        if self.ui.is_none() {
            let ui = ui::Ui::start(Arc::clone(&self.shared), self.interval, self.color).map_err(
                |e| io::Error::new(e.kind(), format!("tracer top needs a terminal: {e}")),
            )?;
            self.ui = Some(ui);
        }
        Ok(())
    }
}

/// Sockets per state: host-wide, per network namespace and per container (at most
/// [`MAX_GROUPS`] of each), in one pass over the table.
fn groups(table: &Table, names: &Names) -> ([u64; STATES], Vec<Group>, Vec<Group>) {
    let home = crate::enrich::netns::home();
    // One lookup per cgroup, not per socket; a container by its index in `containers`.
    let mut containers: Vec<String> = vec!["host".to_string()];
    let mut index: HashMap<u64, usize> = HashMap::new();
    let both = table.state_counts_by(|c| {
        let container = match c.owner {
            None => 0,
            Some(o) => *index.entry(o.cgroup_id).or_insert_with(|| {
                let key = container_key(Some(&o), names);
                match containers.iter().position(|k| *k == key) {
                    Some(i) => i,
                    None => {
                        containers.push(key);
                        containers.len() - 1
                    }
                }
            }),
        };
        (c.netns, container)
    });
    let mut states = [0u64; STATES];
    let mut by_netns: BTreeMap<u32, [u64; STATES]> = BTreeMap::new();
    let mut by_container: BTreeMap<String, [u64; STATES]> = BTreeMap::new();
    for ((ns, container), counts) in both {
        let add = |into: &mut [u64; STATES]| {
            for (a, b) in into.iter_mut().zip(counts) {
                *a += b;
            }
        };
        add(&mut states);
        add(by_netns.entry(ns).or_insert([0; STATES]));
        add(by_container
            .entry(containers[container].clone())
            .or_insert([0; STATES]));
    }
    let by_netns = by_netns.into_iter().map(|(ns, states)| Group {
        key: if ns == 0 {
            "unknown".to_string()
        } else {
            ns.to_string()
        },
        own: ns != 0 && ns == home,
        states,
    });
    let by_container = by_container.into_iter().map(|(key, states)| Group {
        key,
        own: false,
        states,
    });
    (
        states,
        top_groups(by_netns, MAX_GROUPS),
        top_groups(by_container, MAX_GROUPS),
    )
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

impl Drop for Top {
    fn drop(&mut self) {
        if let Some(ui) = self.ui.take() {
            ui.stop();
        }
    }
}

impl Sink for Top {
    fn use_cgroups(&mut self, names: &Names) {
        self.names = names.clone();
    }

    fn transition(
        &mut self,
        t: &Transition,
        _in_old_ns: Option<u64>,
        _owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.counts.events += 1;
        self.counts.arrows.count(t.old, t.new);
        Ok(())
    }

    fn event(&mut self, _c: &Context, _owner: Option<&Owner>) -> io::Result<()> {
        self.counts.events += 1;
        Ok(())
    }

    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.counts.arrows.count(d.old, d.new);
        Ok(())
    }

    fn connection(&mut self, c: &Conn) -> io::Result<()> {
        let counts = &mut self.counts;
        let class = c.close.unwrap_or(CloseClass::Unknown);
        if let Some(i) = CLOSE_CLASSES.iter().position(|k| *k == class) {
            counts.closed[i] += 1;
        }
        if counts.recent.len() >= RECENT {
            counts.recent.pop_back();
        }
        counts.recent.push_front(c.clone());
        if c.role == Role::Listener {
            return Ok(());
        }
        let (tx, rx) = c.data_bytes();
        let add = Remote {
            connections: 1,
            resets: u64::from(c.resets_sent + c.resets_received),
            retransmits: u64::from(c.retransmits),
            bytes: tx.unwrap_or(0) + rx.unwrap_or(0),
        };
        let key = RemoteKey::of(c);
        let full = counts.remotes.len() >= MAX_REMOTES;
        match counts.remotes.get_mut(&key) {
            Some(r) => r.add(&add),
            None if full => counts.remotes_uncounted += 1,
            None => {
                counts.remotes.insert(key, add);
            }
        }
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
        let name = match cause {
            LostCause::RingbufFull => "ring buffer full",
            LostCause::Recursion => "skipped by the kernel",
            LostCause::ReadError => "unreadable",
        };
        *self.counts.lost.entry(name).or_default() += count;
        Ok(())
    }

    fn ladder(&mut self, _l: &crate::ladder::Ladder) -> io::Result<()> {
        Ok(())
    }

    fn summary(&mut self, _s: &crate::summary::Summary) -> io::Result<()> {
        Ok(())
    }

    /// Every tick (4 a second live; at the recording's ticks in a replay): publishes once
    /// per interval of the pipeline's clock.
    fn refresh(&mut self, table: &Table, now_ns: u64) -> io::Result<()> {
        if now_ns < self.next_ns {
            return Ok(());
        }
        let step = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        // A tick's jitter must not skip a whole interval: aim at the grid.
        self.next_ns = if self.next_ns == 0 || now_ns >= self.next_ns.saturating_add(step) {
            now_ns.saturating_add(step)
        } else {
            self.next_ns.saturating_add(step)
        };
        self.publish(table, now_ns);
        self.start_ui()
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The dashboard lists the stuck connections itself, once per interval.
    fn shows_stuck_reports(&self) -> bool {
        false
    }

    fn replaying(&mut self, what: &str) {
        let what = what.to_string();
        self.with(|d| d.source = Some(what));
    }

    /// The end of a replay: the last frame (the table as the recording left it), then the
    /// dashboard stays up until `q` (or a signal).
    fn hold(&mut self, table: &Table, now_ns: u64) -> io::Result<()> {
        self.publish(table, now_ns);
        self.with(|d| d.ended = true);
        self.start_ui()?;
        while !quit_requested() && self.ui.as_ref().is_some_and(ui::Ui::running) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::tr;

    #[test]
    fn counts_without_a_lock_and_publishes_once_per_interval() {
        use TcpState::*;
        let mut t = Table::new();
        let mut top = Top::new(
            1_000_000_000,
            Duration::from_secs(1),
            false,
            WallClock::fixed(0),
        );
        // The first refresh would take the terminal: publish directly.
        top.publish(&t, 1);
        let evs = [
            tr(1, 10, Close, SynSent, 0, 80),
            tr(1, 20, SynSent, Established, 5, 80),
            tr(2, 30, Listen, SynRecv, 80, 5),
            tr(2, 40, SynRecv, Established, 80, 5),
            tr(2, 50, Established, CloseWait, 80, 5),
        ];
        for e in &evs {
            for c in t.apply(e).finished {
                top.connection(&c).unwrap();
            }
            top.transition(e, None, None).unwrap();
        }
        // Not published yet: the dashboard still shows the first refresh.
        assert_eq!(top.with(|d| d.events), 0);
        top.next_ns = 2_000_000_001;
        top.publish(&t, 2_000_000_001);
        let d = top.with(|d| d.clone());
        assert_eq!(d.states[Established as usize], 1);
        assert_eq!(d.states[CloseWait as usize], 1);
        let a = d.arrows.get(SynSent, Established);
        assert_eq!((a.total, a.now), (1, 0));
        assert!((a.rate - 0.5).abs() < 1e-9, "{a:?}");
        assert_eq!(d.events, 5);
        assert!((d.events_per_s - 2.5).abs() < 1e-9);
        // The server has been in CLOSE_WAIT for 2 s: stuck, its timeline kept.
        assert_eq!(
            d.stuck.iter().map(|r| r.state).collect::<Vec<_>>(),
            [CloseWait]
        );
        assert_eq!(d.stuck[0].conn.sock.0, 2);
        assert_eq!(
            d.history[&CloseWait].iter().copied().collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(d.by_netns.len(), 1);
        assert_eq!(d.by_netns[0].total(), 2);
        assert_eq!(d.by_container[0].key, "host");
        assert_eq!(d.generation, 2);
    }

    #[test]
    fn finished_connections_are_kept_most_recent_first_and_bounded() {
        use TcpState::*;
        let mut t = Table::new();
        let mut top = Top::new(1, Duration::from_secs(1), false, WallClock::fixed(0));
        for k in 0..(RECENT as u64 + 5) {
            let port = 1000 + k as u16;
            for e in [
                tr(k, k * 10, Close, SynSent, 0, 80),
                tr(k, k * 10 + 1, SynSent, Established, port, 80),
                tr(k, k * 10 + 2, Established, Close, port, 80),
            ] {
                t.apply(&e);
            }
            for c in t.expire(u64::MAX) {
                top.connection(&c).unwrap();
            }
        }
        top.publish(&t, 5);
        let d = top.with(|d| d.clone());
        assert_eq!(d.recent.len(), RECENT);
        assert_eq!(d.recent[0].sock.0, RECENT as u64 + 4);
        let r = d.remotes[&RemoteKey {
            addr: "127.0.0.1".parse().unwrap(),
            port: Some(80),
        }];
        assert_eq!(r.connections, RECENT as u64 + 5);
        assert_eq!(d.closed.values().sum::<u64>(), RECENT as u64 + 5);
    }
}
