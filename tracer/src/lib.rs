//! tracer: the Linux kernel's TCP state machine, live.
//!
//! Pipeline: [`source`] (eBPF loader, ring buffer) → [`decode`] (bytes → typed events) →
//! [`table`] (per-socket timelines) → [`output`] (text / JSON sinks). [`run`] wires them up.
pub mod btf;
pub mod cli;
pub mod decode;
pub mod enrich;
pub mod filter;
pub mod format;
pub mod metrics;
pub mod output;
pub mod source;
pub mod table;

use std::{
    io::{self, IsTerminal as _, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{Args, ColorChoice, Output},
    decode::TcpState,
    decode::{Decoded, decode},
    enrich::{OwnerResolver, TimeWaitTracker},
    filter::Filter,
    output::{Json, LostCause, Sink, Text, WallClock, monotonic_ns},
    source::{Live, LiveOptions, Totals},
    table::Table,
};

/// How often the kernel counters (losses) are checked while running.
const COUNTER_INTERVAL: Duration = Duration::from_millis(250);

/// Everything after the source: decode, table, enrich, sink. Knows nothing of BPF.
pub struct Pipeline<S: Sink> {
    pub table: Table,
    pub sink: S,
    pub transitions: u64,
    pub events: u64,
    pub connections: u64,
    pub decode_errors: u64,
    /// TIME_WAIT from sock_diag; `None` with --no-timewait (or after it failed).
    pub time_wait: Option<TimeWaitTracker>,
    /// Owners from sock_diag + /proc for sockets without a process-context event.
    pub owners: Option<OwnerResolver>,
    /// What to show (`--state`; the other filters ran in the kernel).
    pub filter: Filter,
    /// `--quiet`: no per-event output.
    pub quiet: bool,
    /// `--stuck`: the threshold, in ns.
    pub stuck_ns: Option<u64>,
    /// `--metrics`: counted before the output filters (they count what the kernel passed).
    pub metrics: Option<metrics::Metrics>,
}

impl<S: Sink> Pipeline<S> {
    pub fn new(sink: S) -> Self {
        Self {
            table: Table::new(),
            sink,
            transitions: 0,
            events: 0,
            connections: 0,
            decode_errors: 0,
            time_wait: None,
            owners: None,
            filter: Filter::default(),
            quiet: false,
            stuck_ns: None,
            metrics: None,
        }
    }

    /// One ring-buffer record.
    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match decode(bytes) {
            Ok(Decoded::Transition(t)) => {
                self.transitions += 1;
                if let Some(m) = &self.metrics {
                    m.transition(&t);
                }
                let applied = self.table.apply(&t);
                for c in &applied.finished {
                    self.connection(c)?;
                }
                let shown = self.filter.states.is_empty()
                    || self.table.passed_through(t.sock, &self.filter.states);
                if let Some(u) = &applied.unstuck
                    && shown
                {
                    self.sink.unstuck(&t, u, applied.owner.as_ref())?;
                }
                if self.quiet || !shown {
                    return Ok(());
                }
                self.sink
                    .transition(&t, applied.in_old_ns, applied.owner.as_ref())
            }
            Ok(Decoded::Context(c)) => {
                self.events += 1;
                if let Some(m) = &self.metrics {
                    m.event(&c);
                }
                let owner = self.table.context(&c);
                let shown = self.filter.states.is_empty()
                    || c.sock
                        .is_some_and(|s| self.table.passed_through(s, &self.filter.states));
                if self.quiet || !shown {
                    return Ok(());
                }
                self.sink.event(&c, owner.as_ref())
            }
            Err(e) => {
                // Never silently: counted, reported on stderr the first time and at exit.
                if self.decode_errors == 0 {
                    eprintln!("tracer: skipping an event the decoder does not understand: {e}");
                }
                self.decode_errors += 1;
                Ok(())
            }
        }
    }

    fn connection(&mut self, c: &table::Conn) -> io::Result<()> {
        self.connections += 1;
        if let Some(m) = &self.metrics {
            m.connection(c);
        }
        if self.quiet
            || !self.filter.matches_states(&c.states)
            || !self.filter.matches_owner(c.owner.as_ref())
        {
            return Ok(());
        }
        self.sink.connection(c)
    }

    /// After a batch: owner and TIME_WAIT lookups, then the connections whose records are
    /// complete.
    pub fn settle(&mut self, now_ns: u64) -> io::Result<()> {
        let mut dropped = self.table.enforce_cap();
        if let Some(o) = &mut self.owners {
            match o
                .poll(now_ns, &mut self.table)
                .and_then(|()| o.prune(now_ns, &mut self.table))
            {
                Ok(gone) => dropped.extend(gone),
                Err(e) => {
                    eprintln!(
                        "tracer: owner lookups and pruning via sock_diag and /proc stopped: {e}"
                    );
                    self.owners = None;
                }
            }
        }
        for c in &dropped {
            self.connection(c)?;
        }
        let learned = match &mut self.time_wait {
            None => Vec::new(),
            Some(tw) => tw.poll(now_ns, &mut self.table).unwrap_or_else(|e| {
                eprintln!("tracer: TIME_WAIT lookups via sock_diag stopped: {e}");
                self.time_wait = None;
                Vec::new()
            }),
        };
        for d in &learned {
            if let Some(m) = &self.metrics {
                m.diag_transition(d);
            }
            if !self.quiet && self.filter.matches_owner(d.owner.as_ref()) {
                self.sink.diag_transition(d)?;
            }
        }
        for c in self.table.expire(now_ns) {
            self.connection(&c)?;
        }
        Ok(())
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

    /// Reports connections that crossed the stuck threshold (or aged further).
    pub fn check_stuck(&mut self, now_ns: u64) -> io::Result<()> {
        let Some(threshold) = self.stuck_ns else {
            return Ok(());
        };
        for r in self.table.stuck(now_ns, threshold) {
            if self.filter.matches_states(&r.conn.states)
                && self.filter.matches_owner(r.conn.owner.as_ref())
            {
                self.sink.stuck(&r)?;
            }
        }
        Ok(())
    }

    /// The stuck connections now, grouped by owner and state (SIGUSR1, exit).
    pub fn stuck_summary(&mut self, now_ns: u64) -> io::Result<()> {
        let Some(threshold) = self.stuck_ns else {
            return Ok(());
        };
        let states = self.filter.states.clone();
        let groups = self.table.stuck_groups(now_ns, threshold, |c| {
            states.is_empty() || c.states.iter().any(|s| states.contains(s))
        });
        self.sink.stuck_summary(&groups, threshold)?;
        self.sink.flush()
    }

    /// At exit: one last TIME_WAIT lookup, then every record still held back.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<()> {
        self.settle(now_ns.saturating_add(crate::table::TIME_WAIT_WAIT_NS / 2))?;
        for c in self.table.flush() {
            self.connection(&c)?;
        }
        self.check_stuck(now_ns)?;
        self.stuck_summary(now_ns)?;
        self.sink.flush()
    }
}

/// Losses already reported, per cause, so each report says what is new.
#[derive(Default)]
struct LossTracker {
    reported: Totals,
}

impl LossTracker {
    fn report<S: Sink>(&mut self, now: &Totals, pipe: &mut Pipeline<S>) -> io::Result<()> {
        let pairs = [
            (
                LostCause::RingbufFull,
                now.lost_ringbuf_full,
                &mut self.reported.lost_ringbuf_full,
            ),
            (
                LostCause::Recursion,
                now.recursion_misses,
                &mut self.reported.recursion_misses,
            ),
            (
                LostCause::ReadError,
                now.lost_read_error,
                &mut self.reported.lost_read_error,
            ),
        ];
        for (cause, total, reported) in pairs {
            if total > *reported {
                if let Some(m) = &pipe.metrics {
                    m.lost(cause, total - *reported);
                }
                pipe.sink.lost(cause, total - *reported, total)?;
                *reported = total;
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Subcommands that only print (no root, no kernel).
    match args.command {
        Some(cli::Command::Completions { shell }) => {
            cli::completions(shell, &mut io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Some(cli::Command::Man) => {
            cli::man(&mut io::stdout()).context("writing the man page")?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let opts = LiveOptions {
        filter: args.filter(),
        ring_bytes: args.ring_buffer_size,
        bpf_log: args.bpf_log,
        force_portable: args.force_portable,
        context_events: !args.no_events,
    };
    let clock = WallClock::now();
    let stdout = io::stdout();
    let out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    match args.output {
        Output::Json => trace(&args, &opts, Pipeline::new(Json::new(out, clock))).await,
        Output::Text => {
            let color = match args.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            trace(
                &args,
                &opts,
                Pipeline::new(Text::new(out, clock, color, !args.no_timeline)),
            )
            .await
        }
    }
}

/// Why the main loop ended.
enum Stop {
    Signal(&'static str),
    Duration,
    StdoutClosed,
}

async fn trace<S: Sink>(
    args: &Args,
    opts: &LiveOptions,
    mut pipe: Pipeline<S>,
) -> anyhow::Result<ExitCode> {
    let mut live = Live::start(opts)?;
    pipe.owners = match OwnerResolver::new() {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!(
                "tracer: owners of sockets older than the tracer will not be resolved: sock_diag unavailable ({e})"
            );
            None
        }
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;

    pipe.filter = opts.filter.clone();
    pipe.table.max_conns = args.max_connections;
    pipe.quiet = args.quiet();
    pipe.stuck_ns = args
        .stuck_threshold()
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
    if let Some(addr) = args.metrics {
        let m = metrics::Metrics::new();
        let local = m.serve(addr).await?;
        eprintln!("tracer: Prometheus metrics on http://{local}/metrics");
        pipe.metrics = Some(m);
    }
    // TIME_WAIT lookups, unless nothing would show them (quiet and no metrics).
    let nothing_would_show = pipe.quiet && pipe.metrics.is_none();
    if !args.no_timewait && !nothing_would_show {
        pipe.time_wait = match TimeWaitTracker::new() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!(
                    "tracer: TIME_WAIT will not be shown: netlink sock_diag unavailable ({e})"
                );
                None
            }
        };
    }
    if let Some(ns) = pipe.stuck_ns {
        match enrich::seed(&mut pipe.table, &opts.filter, monotonic_ns()) {
            Ok(n) => eprintln!(
                "tracer: reporting connections stuck for {} or more; {n} existing sockets seeded from sock_diag (their age counts from now)",
                output::human_ns(ns)
            ),
            Err(e) => eprintln!(
                "tracer: warning: could not list existing sockets (sock_diag: {e}); only connections seen from now on can be found stuck"
            ),
        }
    }
    if live.mounted_tracefs {
        eprintln!("tracer: tracefs was not mounted; mounted it at /sys/kernel/tracing");
    }
    eprintln!(
        "tracer: attached to sock:inet_sock_set_state ({} program{}, ring buffer {} KiB){}; Ctrl-C to stop",
        live.program,
        if live.portable {
            ", runtime offsets for this kernel's layout"
        } else {
            ""
        },
        opts.ring_bytes >> 10,
        match opts.filter.describe() {
            d if d.is_empty() => String::new(),
            d => format!(", {d}"),
        },
    );
    if !live.context_programs.is_empty() {
        eprintln!(
            "tracer: context events from {}",
            live.context_programs.join(", ")
        );
    }
    for u in &live.unavailable {
        eprintln!("tracer: warning: context events unavailable: {u}");
    }

    let mut poll = tokio::time::interval(args.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counters = tokio::time::interval(COUNTER_INTERVAL);
    counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut losses = LossTracker::default();
    let mut ticks: u64 = 0;

    let stop = loop {
        let step: io::Result<Option<Stop>> = tokio::select! {
            guard = live.ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                // Drain fully before clearing readiness: a wake-up may cover many records.
                let r = drain(guard.get_inner_mut(), &mut pipe);
                guard.clear_ready();
                r.map(|()| None)
            }
            _ = poll.tick() => drain(live.ring.get_mut(), &mut pipe).map(|()| None),
            _ = counters.tick() => {
                let totals = live.totals()?;
                losses
                    .report(&totals, &mut pipe)
                    .and_then(|()| pipe.check_stuck(monotonic_ns()))
                    .map(|()| {
                        ticks += 1;
                        if ticks.is_multiple_of(4) {
                            pipe.update_gauges(monotonic_ns());
                        }
                    })
                    .and_then(|()| pipe.sink.flush())
                    .map(|()| None)
            }
            _ = sigusr1.recv() => pipe.stuck_summary(monotonic_ns()).map(|()| None),
            _ = sigint.recv() => Ok(Some(Stop::Signal("SIGINT"))),
            _ = sigterm.recv() => Ok(Some(Stop::Signal("SIGTERM"))),
            _ = sighup.recv() => Ok(Some(Stop::Signal("SIGHUP"))),
            () = &mut deadline => Ok(Some(Stop::Duration)),
        };
        match step {
            Ok(None) => {}
            Ok(Some(stop)) => break stop,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Stop::StdoutClosed,
            Err(e) => return Err(e).context("writing output"),
        }
    };

    // Detach first so nothing new arrives, then drain what is left and take the final counts.
    live.detach();
    let final_write =
        drain(live.ring.get_mut(), &mut pipe).and_then(|()| pipe.finish(monotonic_ns()));
    let totals = live.totals()?;
    let final_write = final_write
        .and_then(|()| losses.report(&totals, &mut pipe))
        .and_then(|()| pipe.sink.flush());
    drop(live);
    match (&stop, final_write) {
        (_, Ok(())) | (Stop::StdoutClosed, Err(_)) => {}
        (_, Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {}
        (_, Err(e)) => return Err(e).context("writing output"),
    }

    let lost = totals.lost_ringbuf_full + totals.recursion_misses + totals.lost_read_error;
    let seen = totals.seen + totals.context_seen;
    let filtered = if opts.filter.describe().is_empty() {
        String::new()
    } else {
        format!(
            ", filtered out in the kernel: {} of {seen} TCP events",
            seen.saturating_sub(totals.submitted)
        )
    };
    let why = match stop {
        Stop::Signal(s) => s.to_string(),
        Stop::Duration => "duration reached".into(),
        Stop::StdoutClosed => "stdout closed".into(),
    };
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "tracer: stopped ({why}): {} transitions, {} context events, {} connections closed, {} still open{}{}, lost {lost} (ring buffer full {}, skipped by the kernel {}, unreadable {}){}{filtered}",
        pipe.transitions,
        pipe.events,
        pipe.connections,
        pipe.table.len(),
        pipe.time_wait
            .as_ref()
            .map_or_else(String::new, |t| format!(", {} in TIME_WAIT", t.tracked())),
        if pipe.table.evicted > 0 {
            format!(
                ", {} evicted to stay within --max-connections",
                pipe.table.evicted
            )
        } else {
            String::new()
        },
        totals.lost_ringbuf_full,
        totals.recursion_misses,
        totals.lost_read_error,
        if pipe.decode_errors > 0 {
            format!(", {} undecodable", pipe.decode_errors)
        } else {
            String::new()
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn drain<S: Sink>(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    pipe: &mut Pipeline<S>,
) -> io::Result<()> {
    while let Some(item) = ring.next() {
        pipe.record(&item)?;
    }
    pipe.settle(monotonic_ns())?;
    // Records released by `settle` (grace period over) must show now, not at the next event.
    pipe.sink.flush()
}
