//! Everything after the source: decode, table, enrich, sinks. It knows nothing of BPF: the live
//! loader and a recording feed it the same way.
use std::{io, path::PathBuf};

use crate::{
    cgroup::Names,
    clock::WallClock,
    decode::{self, Decoded, LostCause, TcpState},
    diagram,
    enrich::{Namespaces, OwnerResolver, TimeWaitTracker},
    filter::Filter,
    ladder::{self, Pairer},
    metrics,
    output::Sink,
    record::{self, Item, Recorder},
    summary::Summary,
    table::{self, DiagTransition, Table},
};

/// `--view`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Every transition as it happens, then each connection's timeline.
    Events,
    /// Only each connection's record (timeline) when it closes: one record per socket.
    Connections,
    /// Each finished connection as a sequence diagram of both ends.
    Ladder,
}

/// Everything after the source: decode, table, enrich, sink. Knows nothing of BPF: the
/// live loader and a recording feed it the same way.
pub struct Pipeline<S: Sink> {
    pub table: Table,
    /// `settle` looks for records to release from this time on ([`table::EXPIRE_EVERY_NS`]).
    next_expire_ns: u64,
    pub sink: S,
    pub transitions: u64,
    pub events: u64,
    pub connections: u64,
    pub decode_errors: u64,
    /// TIME_WAIT from sock_diag; `None` with --no-timewait (or after it failed).
    pub time_wait: Option<TimeWaitTracker>,
    /// Live, without TIME_WAIT lookups: closed records must not wait for one (1.5 s each
    /// before this was set). A replay leaves it off: its lookups are in the recording.
    pub no_time_wait_lookups: bool,
    /// Owners from sock_diag + /proc for sockets without a process-context event.
    pub owners: Option<OwnerResolver>,
    /// The host's network namespaces, each with its sock_diag socket: what the TIME_WAIT and
    /// owner lookups go through. `None` in a replay (its lookups are in the recording) or
    /// when sock_diag is unavailable.
    pub namespaces: Option<Namespaces>,
    /// What to show (`--state`; the other filters ran in the kernel).
    pub filter: Filter,
    /// Apply the kernel's filters here too (a replay: the recording was not filtered by
    /// this run's options).
    pub user_filter: bool,
    /// `--quiet`: no per-event output.
    pub quiet: bool,
    /// `--stuck`: the threshold, in ns.
    pub stuck_ns: Option<u64>,
    /// `--metrics`: counted before the output filters (they count what the kernel passed).
    pub metrics: Option<metrics::Metrics>,
    /// `--summary`.
    pub summary: Option<Summary>,
    /// `--diagram FILE`: the counts and times the SVG at exit shows, and its file (created at
    /// start-up, so a bad path fails before anything runs).
    pub diagram: Option<(diagram::Collector, std::fs::File, PathBuf)>,
    /// `--view`: per-event records and timelines (events), timelines only (connections), or
    /// ladders instead of both (ladder).
    pub view: View,
    /// `--svg DIR`: one SVG ladder per finished connection.
    pub svg_dir: Option<PathBuf>,
    /// SVG files written.
    pub svg_written: u64,
    /// `--force`: SVG files may replace existing ones.
    pub force: bool,
    /// Pairs the two ends of local connections (ladder view and SVG).
    pub pairer: Option<Pairer>,
    /// Wall-clock times for ladders.
    pub clock: WallClock,
    /// `--record FILE`.
    pub recorder: Option<Recorder<io::BufWriter<std::fs::File>>>,
    /// Something happened since the last `settle` line of the recording.
    unsettled: bool,
    /// Transitions into CLOSING (a simultaneous close) seen: `tracer demo simultaneous`
    /// waits for one.
    pub closing_seen: u64,
    /// The latest kernel timestamp of the events handled: the live loop's clock never runs
    /// behind it (what the table and the lookups time against must not precede what they
    /// have seen).
    pub latest_ts_ns: u64,
    /// Cgroup ids → path, unit, container, pod; shared with the sink. The pipeline resolves
    /// the ids of what comes in (live: scanning the cgroup2 tree on a miss) before it is
    /// recorded; the sink and the filters only look up. A replay's learns from the
    /// recording's `cgroup` lines.
    pub names: Names,
}

/// A recording that cannot be written is an error the user must see, not a broken pipe.
fn recording_error(e: io::Error) -> io::Error {
    io::Error::other(format!("writing the recording (--record): {e}"))
}

impl<S: Sink> Pipeline<S> {
    pub fn new(mut sink: S) -> Self {
        let names = Names::new();
        sink.use_cgroups(&names);
        Self {
            names,
            table: Table::new(),
            sink,
            transitions: 0,
            events: 0,
            connections: 0,
            decode_errors: 0,
            time_wait: None,
            owners: None,
            namespaces: None,
            filter: Filter::default(),
            user_filter: false,
            quiet: false,
            stuck_ns: None,
            metrics: None,
            summary: None,
            diagram: None,
            view: View::Events,
            svg_dir: None,
            svg_written: 0,
            force: false,
            pairer: None,
            clock: WallClock::now(),
            recorder: None,
            unsettled: false,
            closing_seen: 0,
            latest_ts_ns: 0,
            next_expire_ns: 0,
            no_time_wait_lookups: false,
        }
    }

    /// Starts recording to `rec` (the header is written already).
    pub fn start_recording(&mut self, rec: Recorder<io::BufWriter<std::fs::File>>) {
        self.recorder = Some(rec);
        self.table.journal = Some(Vec::new());
        self.names.start_journal();
    }

    /// Writes the cgroup ids learned since last time to the recording: before anything that
    /// may show them.
    fn write_cgroups(&mut self) -> io::Result<()> {
        let Some(r) = &mut self.recorder else {
            return Ok(());
        };
        for (id, path) in self.names.take_journal() {
            r.line(&record::Line::Cgroup { id, path })
                .map_err(recording_error)?;
        }
        Ok(())
    }

    /// Whether per-event records (transitions, context events) are shown.
    fn shows_events(&self) -> bool {
        !self.quiet && self.view == View::Events
    }

    /// One ring-buffer record: one event, or several back to back (a close and its
    /// counters: [`tracer_common::CLOSE_WITH_STATS_SIZE`]), each handled, and recorded, as
    /// an event of its own.
    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        loop {
            match decode::raw(rest) {
                Ok(ev) => self.raw_event(&ev)?,
                Err(e) => {
                    self.decode_error(&e);
                    return Ok(());
                }
            }
            rest = rest.get(tracer_common::EVENT_SIZE..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    fn decode_error(&mut self, e: &decode::DecodeError) {
        // Never silently: counted, reported on stderr the first time and at exit.
        if self.decode_errors == 0 {
            eprintln!("tracer: skipping an event the decoder does not understand: {e}");
        }
        self.decode_errors += 1;
    }

    /// One raw event, from the ring buffer or a recording.
    pub fn raw_event(&mut self, ev: &tracer_common::Event) -> io::Result<()> {
        self.latest_ts_ns = self.latest_ts_ns.max(ev.ts_ns);
        // The owner's cgroup (only process-context events carry one): resolved before the
        // event is recorded, so a replay knows it from the same point on.
        // (A counters record packs counters where other records have the task.)
        if ev.cgroup_id != 0 && ev.kind != tracer_common::kind::TCP_STATS {
            let pid = (ev.pid_tgid >> 32) as u32;
            self.names.resolve(ev.cgroup_id, (pid != 0).then_some(pid));
            self.write_cgroups()?;
        }
        if let Some(r) = &mut self.recorder {
            r.event(ev).map_err(recording_error)?;
            self.unsettled = true;
        }
        match decode::from_raw(ev) {
            Ok(Decoded::Transition(t)) => self.transition(&t),
            Ok(Decoded::Context(c)) => self.context(&c),
            Ok(Decoded::Accept(a)) => {
                self.accept(&a);
                Ok(())
            }
            Ok(Decoded::Stats(st)) => {
                self.table.stats(&st);
                Ok(())
            }
            Err(e) => {
                self.decode_error(&e);
                Ok(())
            }
        }
    }

    fn transition(&mut self, t: &decode::Transition) -> io::Result<()> {
        if self.user_filter && !self.filter.matches_tuple(t.family, &t.tuple) {
            return Ok(());
        }
        self.transitions += 1;
        if t.new == TcpState::Closing {
            self.closing_seen += 1;
        }
        if let Some(m) = &self.metrics {
            m.transition(t);
        }
        if let Some(s) = &mut self.summary {
            s.transition(t);
        }
        if let Some((d, _, _)) = &mut self.diagram {
            d.transition(t);
        }
        if let Some(p) = &mut self.pairer {
            p.transition(t);
        }
        let applied = self.table.apply(t);
        for c in applied.finished {
            self.connection(c)?;
        }
        let shown = (self.filter.states.is_empty()
            || self.table.passed_through(t.sock, &self.filter.states))
            && (!self.user_filter || self.filter.matches_kernel_owner(applied.owner.as_ref()))
            && self
                .filter
                .matches_container(applied.owner.as_ref(), &self.names);
        if let Some(u) = &applied.unstuck
            && shown
        {
            self.sink.unstuck(t, u, applied.owner.as_ref())?;
        }
        if !self.shows_events() || !shown {
            return Ok(());
        }
        self.sink
            .transition(t, applied.in_old_ns, applied.owner.as_ref())
    }

    fn context(&mut self, c: &decode::Context) -> io::Result<()> {
        if self.user_filter
            && !self.filter.matches_tuple(
                c.family.unwrap_or(match c.tuple.local.addr {
                    std::net::IpAddr::V4(_) => decode::Family::Ipv4,
                    std::net::IpAddr::V6(_) => decode::Family::Ipv6,
                }),
                &c.tuple,
            )
        {
            return Ok(());
        }
        self.events += 1;
        if let Some(m) = &self.metrics {
            m.event(c);
        }
        let owner = self.table.context(c);
        let shown = (self.filter.states.is_empty()
            || c.sock
                .is_some_and(|s| self.table.passed_through(s, &self.filter.states)))
            && (!self.user_filter || self.filter.matches_kernel_owner(owner.as_ref()))
            && self.filter.matches_container(owner.as_ref(), &self.names);
        if !self.shows_events() || !shown {
            return Ok(());
        }
        self.sink.event(c, owner.as_ref())
    }

    /// A process accepted a socket: its owner from now on (not a record of its own: the owner
    /// shows on every later record of the socket, `"source":"accept"`).
    fn accept(&mut self, a: &decode::Accept) {
        if self.user_filter && !self.filter.matches_tuple(a.family, &a.tuple) {
            return;
        }
        self.table.accept(a);
    }

    fn connection(&mut self, c: table::Conn) -> io::Result<()> {
        self.connections += 1;
        if let Some(m) = &self.metrics {
            m.connection(&c);
        }
        let wanted = self.filter.matches_states(&c.states)
            && self.filter.matches_owner(c.owner.as_ref(), &self.names);
        if wanted && let Some(s) = &mut self.summary {
            s.connection(&c);
        }
        if wanted && let Some((d, _, _)) = &mut self.diagram {
            d.connection(&c);
        }
        let print = wanted && !self.quiet;
        let Some(pairer) = &mut self.pairer else {
            return if print {
                self.sink.connection(&c)
            } else {
                Ok(())
            };
        };
        if print && self.view != View::Ladder {
            self.sink.connection(&c)?;
        }
        for pair in pairer.finished(c, wanted) {
            self.draw(pair)?;
        }
        Ok(())
    }

    /// A connection (one end, or both) as a ladder on the sink and/or an SVG file.
    fn draw(&mut self, (a, b): ladder::Pair) -> io::Result<()> {
        let print = self.view == View::Ladder && !self.quiet;
        if a.role == table::Role::Listener {
            // A listener has no other end: its timeline says it all.
            return if print {
                self.sink.connection(&a)
            } else {
                Ok(())
            };
        }
        let l = ladder::build(&a, b.as_ref(), &self.clock);
        if print {
            self.sink.ladder(&l)?;
        }
        if let Some(dir) = &self.svg_dir {
            let path = dir.join(svg_name(&a, &self.clock));
            crate::files::create_private(&path, self.force)
                .and_then(|mut f| io::Write::write_all(&mut f, ladder::svg::render(&l).as_bytes()))
                .map_err(|e| {
                    io::Error::other(format!("writing the SVG {}: {e}", path.display()))
                })?;
            self.svg_written += 1;
        }
        Ok(())
    }

    /// A TIME_WAIT transition learned from sock_diag (live) or a recording.
    pub fn diag(&mut self, d: &DiagTransition) -> io::Result<()> {
        if self.user_filter && !self.filter.matches_tuple(d.family, &d.tuple) {
            return Ok(());
        }
        if let Some(r) = &mut self.recorder {
            r.line(&record::Line::diag(d)).map_err(recording_error)?;
        }
        if let Some(m) = &self.metrics {
            m.diag_transition(d);
        }
        if let Some(s) = &mut self.summary {
            s.diag(d);
        }
        if let Some((c, _, _)) = &mut self.diagram {
            c.diag(d);
        }
        if self.shows_events() && self.filter.matches_owner(d.owner.as_ref(), &self.names) {
            self.sink.diag_transition(d)?;
        }
        if d.old == TcpState::FinWait2 {
            self.orphan_moved(d)?;
        }
        Ok(())
    }

    /// An orphaned FIN_WAIT2 that was reported stuck ended (the peer's FIN, its timer):
    /// said as any stuck connection that moves is.
    fn orphan_moved(&mut self, d: &DiagTransition) -> io::Result<()> {
        let (filter, names) = (&self.filter, &self.names);
        let Some(u) = self.table.orphan_moved(
            d.sock,
            table::NsTuple::new(d.netns, d.tuple),
            d.ts_ns,
            |c| filter.matches_states(&c.states) && filter.matches_owner(c.owner.as_ref(), names),
        ) else {
            return Ok(());
        };
        // No task: sock_diag saw it happen, nobody's process did it.
        let t = decode::Transition {
            ts_ns: d.ts_ns,
            sock: d.sock,
            netns: d.netns,
            family: d.family,
            tuple: d.tuple,
            old: d.old,
            new: d.new,
            task: decode::Task {
                pid: 0,
                tid: 0,
                comm: decode::Comm::default(),
                uid: 0,
                cgroup_id: 0,
            },
            cpu: 0,
            srtt_us: 0,
        };
        self.sink.unstuck(&t, &u, d.owner.as_ref())
    }

    /// A fact from a recording, given to the table as the enrichers gave it live.
    pub fn fact(&mut self, f: table::Fact) -> io::Result<()> {
        match f {
            table::Fact::Seed { seed, now_ns } => self.table.seed(seed, now_ns),
            table::Fact::Owner { sock, owner } => self.table.set_owner(sock, owner),
            table::Fact::TimeWait { sock, tuple, tw } => self.table.set_time_wait(sock, tuple, tw),
            table::Fact::Orphan {
                sock,
                tuple,
                orphan,
            } => self.table.set_orphan(sock, tuple, orphan),
            table::Fact::Vanished { socks, tuples } => {
                for c in self.table.drop_vanished(socks, tuples) {
                    self.connection(c)?;
                }
            }
        }
        Ok(())
    }

    /// Writes what the enrichers told the table to the recording.
    pub fn write_journal(&mut self) -> io::Result<bool> {
        // The cgroups of the owners in these facts (noted from /proc) first.
        self.write_cgroups()?;
        let Some(r) = &mut self.recorder else {
            return Ok(false);
        };
        let facts = self.table.take_journal();
        for f in &facts {
            r.line(&record::Line::fact(f)).map_err(recording_error)?;
        }
        Ok(!facts.is_empty())
    }

    /// The kernel cannot answer the owner lookups' dumps at all: said, and they stop.
    fn stop_owner_lookups(&mut self, e: &io::Error) {
        eprintln!("tracer: owner lookups and pruning via sock_diag and /proc stopped: {e}");
        self.owners = None;
    }

    /// After a batch: owner and TIME_WAIT lookups, then the connections whose records are
    /// complete.
    pub fn settle(&mut self, now_ns: u64) -> io::Result<()> {
        // Cgroup ids missed while a rescan was not due (journaled by `write_journal` below,
        // before anything is shown).
        self.names.retry();
        let mut dropped = self.table.enforce_cap();
        if let (Some(o), Some(ns)) = (&mut self.owners, &mut self.namespaces) {
            match o
                .poll(now_ns, &mut self.table, ns)
                .and_then(|()| o.prune(now_ns, &mut self.table, ns))
            {
                Ok(gone) => dropped.extend(gone),
                Err(e) => self.stop_owner_lookups(&e),
            }
        }
        let learned = match &mut self.time_wait {
            None => {
                if self.no_time_wait_lookups {
                    // Nobody will look these up: they are done waiting (a fact, so a replay
                    // releases them at the same moment).
                    let pending: Vec<_> = self.table.time_wait_pending().collect();
                    for p in pending {
                        self.table.set_time_wait(
                            p.sock,
                            table::NsTuple::new(p.netns, p.tuple),
                            None,
                        );
                    }
                }
                Vec::new()
            }
            Some(tw) => match &mut self.namespaces {
                Some(ns) => tw.poll(now_ns, &mut self.table, ns),
                None => Ok(Vec::new()),
            }
            .unwrap_or_else(|e| {
                // Only when the kernel cannot answer at all: a failed dump is retried.
                eprintln!(
                    "tracer: TIME_WAIT and orphaned FIN_WAIT2 lookups via sock_diag stopped: {e}"
                );
                self.time_wait = None;
                self.no_time_wait_lookups = true;
                Vec::new()
            }),
        };
        // The facts go first in a recording: a replay applies them, then settles.
        let facts = self.write_journal()?;
        for c in dropped {
            self.connection(c)?;
        }
        for d in &learned {
            self.diag(d)?;
        }
        // Every run of `expire` is a settle line in a recording, and nothing else moves
        // `next_expire_ns`, so a replay skips and runs exactly where this run did.
        let run_expire = now_ns >= self.next_expire_ns && self.table.holds_closed();
        let expired = if run_expire {
            self.next_expire_ns = now_ns.saturating_add(table::EXPIRE_EVERY_NS);
            self.table.expire(now_ns)
        } else {
            Vec::new()
        };
        if self.recorder.is_some() && (self.unsettled || facts || run_expire) {
            self.unsettled = false;
            if let Some(r) = &mut self.recorder {
                r.line(&record::Line::Settle { ts_ns: now_ns })
                    .map_err(recording_error)?;
            }
        }
        for c in expired {
            self.connection(*c)?;
        }
        Ok(())
    }

    /// The periodic check: stuck connections (and a `tick` in the recording, so a replay
    /// checks at the same moments).
    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        // Releases the namespaces of containers gone since, events or not.
        if let Some(ns) = &mut self.namespaces {
            ns.rescan_if_due();
        }
        // A sink that shows no stuck reports (the dashboard lists them itself, once per
        // interval) spares the table two passes a tick, unless a recording needs the owners
        // confirmed here to replay as this run would have shown them.
        let reports = self.sink.shows_stuck_reports() || self.recorder.is_some();
        if reports {
            self.confirm_stuck_owners(now_ns)?;
        }
        if let Some(r) = &mut self.recorder {
            r.line(&record::Line::Tick { ts_ns: now_ns })
                .map_err(recording_error)?;
        }
        if reports {
            self.check_stuck(now_ns)?;
        }
        self.sink.refresh(&self.table, now_ns)
    }

    /// `count` events of one cause could not be handed over (`total` so far).
    pub fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()> {
        if let Some(r) = &mut self.recorder {
            r.line(&record::Line::Lost {
                cause,
                count,
                total,
            })
            .map_err(recording_error)?;
        }
        if let Some(m) = &self.metrics {
            m.lost(cause, count);
        }
        self.sink.lost(cause, count, total)
    }

    /// Refreshes the state gauges (`--metrics`).
    pub fn update_gauges(&mut self, now_ns: u64) {
        let Some(m) = &self.metrics else { return };
        let open = self.table.state_counts();
        let stuck: Vec<(TcpState, u64)> = match self.stuck_ns {
            None => Vec::new(),
            Some(th) => {
                let mut by_state: Vec<(TcpState, u64)> = Vec::new();
                for g in self.table.stuck_groups(now_ns, th, |_| true) {
                    match by_state.iter_mut().find(|(s, _)| *s == g.state) {
                        Some((_, n)) => *n += g.count,
                        None => by_state.push((g.state, g.count)),
                    }
                }
                by_state
            }
        };
        m.set_states(&open, &stuck);
    }

    /// The connections about to be reported stuck whose owner is unknown or only inherited
    /// from their listener: checked in /proc first ([`OwnerResolver::confirm`]). What is
    /// found goes to the recording before the `tick` line, so a replay reports the same
    /// owners.
    fn confirm_stuck_owners(&mut self, now_ns: u64) -> io::Result<()> {
        let (Some(threshold), Some(o), Some(ns)) =
            (self.stuck_ns, &mut self.owners, &mut self.namespaces)
        else {
            return Ok(());
        };
        let due = self.table.stuck_due(now_ns, threshold);
        let want = self.table.unconfirmed_owners(&due);
        if want.is_empty() {
            return Ok(());
        }
        if let Err(e) = o.confirm(&want, &mut self.table, ns) {
            self.stop_owner_lookups(&e);
        }
        self.write_journal().map(|_| ())
    }

    /// Reports connections that crossed the stuck threshold (or aged further).
    pub fn check_stuck(&mut self, now_ns: u64) -> io::Result<()> {
        let Some(threshold) = self.stuck_ns else {
            return Ok(());
        };
        let mut reports: Vec<_> = self
            .table
            .stuck(now_ns, threshold)
            .into_iter()
            .filter(|r| {
                self.filter.matches_states(&r.conn.states)
                    && self
                        .filter
                        .matches_owner(r.conn.owner.as_ref(), &self.names)
            })
            .collect();
        if let Some(ns) = &mut self.namespaces {
            crate::enrich::why_stuck(&mut reports, ns);
        }
        for r in &reports {
            self.sink.stuck(r)?;
        }
        Ok(())
    }

    /// The stuck connections now, grouped by owner and state, and the summary (SIGUSR1, exit).
    pub fn stuck_summary(&mut self, now_ns: u64) -> io::Result<()> {
        let groups = self.stuck_groups(now_ns);
        self.write_summaries(groups.as_deref())
    }

    /// The stuck connections now, grouped by owner and state (`None` without `--stuck`).
    fn stuck_groups(&self, now_ns: u64) -> Option<Vec<table::StuckGroup>> {
        let threshold = self.stuck_ns?;
        let (filter, names) = (&self.filter, &self.names);
        Some(self.table.stuck_groups(now_ns, threshold, |c| {
            filter.matches_states(&c.states) && filter.matches_owner(c.owner.as_ref(), names)
        }))
    }

    fn write_summaries(&mut self, groups: Option<&[table::StuckGroup]>) -> io::Result<()> {
        if let (Some(groups), Some(threshold)) = (groups, self.stuck_ns) {
            self.sink.stuck_summary(groups, threshold)?;
        }
        if let Some(s) = &self.summary {
            self.sink.summary(s)?;
        }
        self.sink.flush()
    }

    /// At exit: one last TIME_WAIT lookup, then every record still held back.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<()> {
        self.settle(now_ns.saturating_add(crate::table::TIME_WAIT_WAIT_NS / 2))?;
        self.confirm_stuck_owners(now_ns)?;
        // Before the held records go: orphaned FIN_WAIT2s still waiting are stuck too.
        self.check_stuck(now_ns)?;
        let groups = self.stuck_groups(now_ns);
        self.table.forget_waiting_seeded();
        for c in self.table.expire(u64::MAX) {
            self.connection(*c)?;
        }
        if let Some(p) = &mut self.pairer {
            for pair in p.flush() {
                self.draw(pair)?;
            }
        }
        self.write_summaries(groups.as_deref())?;
        self.sink.flush()
    }

    /// Closes the recording with its `end` line.
    pub fn end_recording(&mut self, now_ns: u64, reason: &str) -> io::Result<()> {
        if let Some(mut r) = self.recorder.take() {
            r.line(&record::Line::End {
                ts_ns: now_ns,
                reason: reason.into(),
            })
            .and_then(|()| r.flush())
            .map_err(recording_error)?;
        }
        Ok(())
    }

    /// Gives one recorded item to the pipeline, as the live loop did; `last_ts` follows the
    /// latest time seen (where a recording without an `end` line ends).
    pub fn feed(&mut self, item: Item, last_ts: &mut u64) -> io::Result<()> {
        match item {
            Item::Event(ev) => {
                *last_ts = (*last_ts).max(ev.ts_ns);
                self.raw_event(&ev)
            }
            Item::Fact(f) => self.fact(f),
            Item::Diag(d) => self.diag(&d),
            Item::Cgroup { id, path } => {
                self.names.learn(id, path);
                Ok(())
            }
            Item::Lost {
                cause,
                count,
                total,
            } => self.lost(cause, count, total),
            Item::Settle(ts) => {
                *last_ts = (*last_ts).max(ts);
                self.settle(ts)
            }
            Item::Tick(ts) => {
                *last_ts = (*last_ts).max(ts);
                self.tick(ts)
            }
            // The caller notes the end; a second header is refused by the reader.
            Item::End { .. } | Item::Header(_) => Ok(()),
        }
    }
}

/// `20261123-220109.992247-127.0.0.1_52940-127.0.0.1_8080.svg`: sorts by time, names the
/// connection, safe in any file system.
fn svg_name(c: &table::Conn, clock: &WallClock) -> String {
    let t = clock
        .utc(c.start_ns())
        .with_timezone(&chrono::Local)
        .format("%Y%m%d-%H%M%S%.6f");
    let ep = |a: std::net::IpAddr, p: u16| format!("{a}_{p}").replace(':', "-");
    format!(
        "{t}-{}-{}-{:x}.svg",
        ep(c.tuple.local.addr, c.tuple.local.port),
        ep(c.tuple.remote.addr, c.tuple.remote.port),
        c.sock.0 & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use tracer_common::{AF_INET, EVENT_SIZE, Event, TcpStats, kind, stat};

    use super::*;
    use crate::output::Json;

    const SOCK: u64 = 0xffff_8881_0000_0040;

    fn ev(ts_ns: u64, old: u8, new: u8) -> Event {
        Event {
            kind: kind::TRANSITION,
            cpu: 1,
            ts_ns,
            skaddr: SOCK,
            pid_tgid: (7 << 32) | 7,
            cgroup_id: 0,
            uid_gid: 0,
            comm: *b"client\0\0\0\0\0\0\0\0\0\0",
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: if old == 7 { 0 } else { 40000 },
            dport: 8080,
            family: AF_INET,
            oldstate: old,
            newstate: new,
            value: 0,
            netns: 4026531840,
        }
    }

    fn bytes(ev: &Event) -> Vec<u8> {
        // SAFETY: plain old data of exactly EVENT_SIZE bytes, no padding.
        unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    /// A client's whole life (CLOSE → … → FIN_WAIT2 → CLOSE), its close's counters
    /// packed as the kernel packs them.
    fn life() -> (Vec<Event>, Event) {
        let close = ev(5_000, 5, 7);
        let mut stats = Event {
            kind: kind::TCP_STATS,
            ..close
        };
        TcpStats {
            bytes_acked: 1000,
            bytes_received: 2000,
            segs_out: 5,
            segs_in: 6,
            srtt_us: 80,
            present: stat::BYTES_ACKED | stat::BYTES_RECEIVED | stat::SEGS_OUT | stat::SRTT,
            ..TcpStats::default()
        }
        .pack(&mut stats);
        let events = vec![
            ev(1_000, 7, 2),
            ev(2_000, 2, 1),
            ev(3_000, 1, 4),
            ev(4_000, 4, 5),
            close,
        ];
        (events, stats)
    }

    /// The JSON a pipeline shows for these ring records, and its decode errors.
    fn shown(records: &[Vec<u8>]) -> (String, u64) {
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let mut pipe = Pipeline::new(Json::new(Vec::new(), clock));
        pipe.no_time_wait_lookups = true;
        for r in records {
            pipe.record(r).unwrap();
        }
        pipe.finish(10_000_000_000).unwrap();
        let errors = pipe.decode_errors;
        let out = std::mem::replace(&mut pipe.sink, Json::new(Vec::new(), clock))
            .into_inner()
            .unwrap();
        (String::from_utf8(out).unwrap(), errors)
    }

    /// The kernel sends a close and its counters in one ring record: the pipeline shows
    /// exactly what it showed when they came as two.
    #[test]
    fn a_close_and_its_counters_in_one_record_show_as_two_records_did() {
        let (events, stats) = life();
        let mut apart: Vec<Vec<u8>> = events.iter().map(bytes).collect();
        apart.push(bytes(&stats));
        let mut together: Vec<Vec<u8>> = events[..4].iter().map(bytes).collect();
        let mut last = bytes(&events[4]);
        last.extend(bytes(&stats));
        assert_eq!(last.len(), tracer_common::CLOSE_WITH_STATS_SIZE);
        together.push(last);
        let (a, a_errors) = shown(&apart);
        let (t, t_errors) = shown(&together);
        assert_eq!((a_errors, t_errors), (0, 0));
        assert!(
            a.contains(r#""tcp":{"bytes_sent":998,"bytes_received":1999,"#),
            "{a}"
        );
        assert_eq!(a, t);
    }

    /// A record with a partial event after the first: the first is handled, the rest is
    /// a decode error (counted), not silently dropped.
    #[test]
    fn a_record_with_a_partial_second_event_is_a_decode_error() {
        let (events, _) = life();
        let mut r = bytes(&events[0]);
        r.extend([0u8; 50]);
        let (out, errors) = shown(&[r]);
        assert_eq!(errors, 1);
        assert!(out.contains(r#""new":"SYN_SENT""#), "{out}");
    }
}
