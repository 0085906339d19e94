//! tracer: the Linux kernel's TCP state machine, live.
//!
//! Pipeline: [`source`] (eBPF loader, ring buffer) → [`decode`] (bytes → typed events) →
//! [`table`] (per-socket timelines) → [`output`] (text / JSON sinks). [`run`] wires them up.
pub mod btf;
pub mod cli;
pub mod decode;
pub mod demo;
pub mod enrich;
pub mod filter;
pub mod format;
pub mod ladder;
pub mod metrics;
pub mod output;
pub mod record;
pub mod replay;
pub mod ring;
pub mod source;
pub mod summary;
pub mod svg;
pub mod table;

use std::{
    io::{self, IsTerminal as _, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{Args, ColorChoice, Output, View},
    decode::{Decoded, TcpState},
    enrich::{OwnerResolver, TimeWaitTracker},
    filter::Filter,
    ladder::Pairer,
    output::{DiagTransition, Json, LostCause, Sink, Text, WallClock, monotonic_ns},
    record::Recorder,
    source::{Live, LiveOptions, Totals},
    summary::Summary,
    table::Table,
};

/// How often the kernel counters (losses) are checked while running.
const COUNTER_INTERVAL: Duration = Duration::from_millis(250);

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
    /// `--view`: per-event records and timelines (events), timelines only (connections), or
    /// ladders instead of both (ladder).
    pub view: View,
    /// `--svg DIR`: one SVG ladder per finished connection.
    pub svg_dir: Option<PathBuf>,
    /// SVG files written.
    pub svg_written: u64,
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
}

/// A recording that cannot be written is an error the user must see, not a broken pipe.
fn recording_error(e: io::Error) -> io::Error {
    io::Error::other(format!("writing the recording (--record): {e}"))
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
            user_filter: false,
            quiet: false,
            stuck_ns: None,
            metrics: None,
            summary: None,
            view: View::Events,
            svg_dir: None,
            svg_written: 0,
            pairer: None,
            clock: WallClock::now(),
            recorder: None,
            unsettled: false,
            closing_seen: 0,
            next_expire_ns: 0,
            no_time_wait_lookups: false,
        }
    }

    /// Starts recording to `rec` (the header is written already).
    pub fn start_recording(&mut self, rec: Recorder<io::BufWriter<std::fs::File>>) {
        self.recorder = Some(rec);
        self.table.journal = Some(Vec::new());
    }

    /// Whether per-event records (transitions, context events) are shown.
    fn shows_events(&self) -> bool {
        !self.quiet && self.view == View::Events
    }

    /// One ring-buffer record.
    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match decode::raw(bytes) {
            Ok(ev) => self.raw_event(&ev),
            Err(e) => {
                self.decode_error(&e);
                Ok(())
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
        if let Some(r) = &mut self.recorder {
            r.event(ev).map_err(recording_error)?;
            self.unsettled = true;
        }
        match decode::from_raw(ev) {
            Ok(Decoded::Transition(t)) => self.transition(&t),
            Ok(Decoded::Context(c)) => self.context(&c),
            Err(e) => {
                self.decode_error(&e);
                Ok(())
            }
        }
    }

    fn transition(&mut self, t: &decode::Transition) -> io::Result<()> {
        if self.user_filter
            && !self
                .filter
                .matches_tuple(t.family, t.saddr, t.sport, t.daddr, t.dport)
        {
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
        if let Some(p) = &mut self.pairer {
            p.transition(t);
        }
        let applied = self.table.apply(t);
        for c in applied.finished {
            self.connection(c)?;
        }
        let shown = (self.filter.states.is_empty()
            || self.table.passed_through(t.sock, &self.filter.states))
            && (!self.user_filter || self.filter.matches_owner(applied.owner.as_ref()));
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
                c.family.unwrap_or(match c.saddr {
                    std::net::IpAddr::V4(_) => decode::Family::Ipv4,
                    std::net::IpAddr::V6(_) => decode::Family::Ipv6,
                }),
                c.saddr,
                c.sport,
                c.daddr,
                c.dport,
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
            && (!self.user_filter || self.filter.matches_owner(owner.as_ref()));
        if !self.shows_events() || !shown {
            return Ok(());
        }
        self.sink.event(c, owner.as_ref())
    }

    fn connection(&mut self, c: table::Conn) -> io::Result<()> {
        self.connections += 1;
        if let Some(m) = &self.metrics {
            m.connection(&c);
        }
        let wanted =
            self.filter.matches_states(&c.states) && self.filter.matches_owner(c.owner.as_ref());
        if wanted && let Some(s) = &mut self.summary {
            s.connection(&c);
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
            std::fs::write(&path, svg::render(&l)).map_err(|e| {
                io::Error::other(format!("writing the SVG {}: {e}", path.display()))
            })?;
            self.svg_written += 1;
        }
        Ok(())
    }

    /// A TIME_WAIT transition learned from sock_diag (live) or a recording.
    pub fn diag(&mut self, d: &DiagTransition) -> io::Result<()> {
        if self.user_filter
            && !self
                .filter
                .matches_tuple(d.family, d.saddr, d.sport, d.daddr, d.dport)
        {
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
        if self.shows_events() && self.filter.matches_owner(d.owner.as_ref()) {
            self.sink.diag_transition(d)?;
        }
        Ok(())
    }

    /// A fact from a recording, given to the table as the enrichers gave it live.
    pub fn fact(&mut self, f: table::Fact) -> io::Result<()> {
        match f {
            table::Fact::Seed { seed, now_ns } => self.table.seed(seed, now_ns),
            table::Fact::Owner { sock, owner } => self.table.set_owner(sock, owner),
            table::Fact::TimeWait { sock, tuple, tw } => self.table.set_time_wait(sock, tuple, tw),
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
        let Some(r) = &mut self.recorder else {
            return Ok(false);
        };
        let facts = self.table.take_journal();
        for f in &facts {
            r.line(&record::Line::fact(f)).map_err(recording_error)?;
        }
        Ok(!facts.is_empty())
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
        let learned = match &mut self.time_wait {
            None => {
                if self.no_time_wait_lookups {
                    // Nobody will look these up: they are done waiting (a fact, so a replay
                    // releases them at the same moment).
                    let pending: Vec<_> = self.table.time_wait_pending().collect();
                    for p in pending {
                        self.table.set_time_wait(p.sock, p.tuple, None);
                    }
                }
                Vec::new()
            }
            Some(tw) => tw.poll(now_ns, &mut self.table).unwrap_or_else(|e| {
                eprintln!("tracer: TIME_WAIT lookups via sock_diag stopped: {e}");
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
        if let Some(r) = &mut self.recorder {
            r.line(&record::Line::Tick { ts_ns: now_ns })
                .map_err(recording_error)?;
        }
        self.check_stuck(now_ns)
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

    /// The stuck connections now, grouped by owner and state, and the summary (SIGUSR1, exit).
    pub fn stuck_summary(&mut self, now_ns: u64) -> io::Result<()> {
        if let Some(threshold) = self.stuck_ns {
            let states = self.filter.states.clone();
            let groups = self.table.stuck_groups(now_ns, threshold, |c| {
                states.is_empty() || c.states.iter().any(|s| states.contains(s))
            });
            self.sink.stuck_summary(&groups, threshold)?;
        }
        if let Some(s) = &self.summary {
            self.sink.summary(s)?;
        }
        self.sink.flush()
    }

    /// At exit: one last TIME_WAIT lookup, then every record still held back.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<()> {
        self.settle(now_ns.saturating_add(crate::table::TIME_WAIT_WAIT_NS / 2))?;
        for c in self.table.expire(u64::MAX) {
            self.connection(*c)?;
        }
        if let Some(p) = &mut self.pairer {
            for pair in p.flush() {
                self.draw(pair)?;
            }
        }
        self.check_stuck(now_ns)?;
        self.stuck_summary(now_ns)?;
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
        ep(c.saddr, c.sport),
        ep(c.daddr, c.dport),
        c.sock.0 & 0xffff_ffff
    )
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
                pipe.lost(cause, total - *reported, total)?;
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
    if let Err(msg) = args.check() {
        use clap::CommandFactory as _;
        let _ = Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .print();
        return Ok(ExitCode::from(2));
    }
    if let Some(cli::Command::Replay { file }) = &args.command {
        return replay::run(&args, file);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(args))
}

/// Colour in text output: `--color`, else on a terminal unless NO_COLOR is set.
fn text_color(args: &Args) -> bool {
    match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// Sets a pipeline up from the options live tracing, the demo and replay share.
pub fn configure<S: Sink>(
    args: &Args,
    clock: WallClock,
    mut pipe: Pipeline<S>,
) -> anyhow::Result<Pipeline<S>> {
    pipe.clock = clock;
    pipe.filter = args.filter();
    pipe.table.max_conns = args.max_connections;
    pipe.quiet = args.quiet();
    pipe.stuck_ns = args
        .stuck_threshold()
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
    pipe.summary = args.summary.then(Summary::new);
    pipe.view = args.view();
    if let Some(dir) = &args.svg {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the --svg directory {}", dir.display()))?;
        pipe.svg_dir = Some(dir.clone());
    }
    if pipe.view == View::Ladder || pipe.svg_dir.is_some() {
        pipe.pairer = Some(Pairer::new());
    }
    Ok(pipe)
}

/// Runs `$body` with `$pipe` bound to a configured pipeline whose sink is the one `-o` asks
/// for (the pipeline is generic over its sink, so each gets its own code).
macro_rules! with_pipeline {
    ($args:expr, $clock:expr, |$pipe:ident| $body:expr) => {{
        let out = io::BufWriter::with_capacity(64 << 10, io::stdout().lock());
        match $args.output {
            Output::Json => {
                let $pipe = configure($args, $clock, Pipeline::new(Json::new(out, $clock)))?;
                $body
            }
            Output::Text => {
                let sink = Text::new(out, $clock, text_color($args), !$args.no_timeline);
                let $pipe = configure($args, $clock, Pipeline::new(sink))?;
                $body
            }
        }
    }};
}
pub(crate) use with_pipeline;

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let mut filter = args.filter();
    let demo = match &args.command {
        Some(cli::Command::Demo { scenario, pause }) => {
            let d = demo::Demo::prepare(*scenario, *pause)?;
            // The demo's own connection only: its port, in the kernel.
            filter.ports = vec![d.port()];
            if *scenario == cli::Scenario::Simultaneous {
                // Only the try whose FINs crossed is drawn.
                filter.states = vec![TcpState::Closing];
            }
            Some(d)
        }
        _ => None,
    };
    let opts = LiveOptions {
        filter,
        ring_bytes: args.ring_buffer_size,
        bpf_log: args.bpf_log,
        force_portable: args.force_portable,
        context_events: !args.no_events,
    };
    let clock = WallClock::now();
    with_pipeline!(&args, clock, |pipe| trace(&args, &opts, pipe, clock, demo)
        .await)
}

/// Why the main loop ended.
enum Stop {
    Signal(&'static str),
    Duration,
    StdoutClosed,
    DemoDone,
}

/// The recording's first line, for this host and run.
fn recording_header(filter: &Filter, clock: &WallClock) -> record::Header {
    // uname(2)'s release and nodename, as the kernel shows them.
    let proc = |f: &str| {
        std::fs::read_to_string(f).map_or_else(|_| String::new(), |s| s.trim().to_string())
    };
    record::Header {
        format: record::FORMAT.into(),
        v: record::VERSION,
        tracer: env!("CARGO_PKG_VERSION").into(),
        kernel: proc("/proc/sys/kernel/osrelease"),
        hostname: proc("/proc/sys/kernel/hostname"),
        clock_offset_ns: i64::try_from(clock.offset_ns()).unwrap_or(i64::MAX),
        started: chrono::Utc::now().to_rfc3339(),
        command: std::env::args().collect(),
        filters: filter.describe(),
    }
}

async fn trace<S: Sink>(
    args: &Args,
    opts: &LiveOptions,
    mut pipe: Pipeline<S>,
    clock: WallClock,
    mut demo: Option<demo::Demo>,
) -> anyhow::Result<ExitCode> {
    // The recording file first: a bad path fails before anything is loaded.
    if let Some(path) = &args.record {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the recording {}", path.display()))?;
        let rec = Recorder::new(
            io::BufWriter::with_capacity(256 << 10, file),
            &recording_header(&opts.filter, &clock),
        )
        .with_context(|| format!("writing the recording {}", path.display()))?;
        pipe.start_recording(rec);
    }
    set_nice(args.nice);
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
    if let Some(addr) = args.metrics {
        let m = metrics::Metrics::new();
        let local = m.serve(addr).await?;
        eprintln!("tracer: Prometheus metrics on http://{local}/metrics");
        pipe.metrics = Some(m);
    }
    // TIME_WAIT lookups, unless nothing would show them (quiet and no metrics).
    let nothing_would_show = pipe.quiet
        && pipe.metrics.is_none()
        && pipe.summary.is_none()
        && pipe.recorder.is_none()
        && pipe.svg_dir.is_none();
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
    pipe.no_time_wait_lookups = pipe.time_wait.is_none();
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
    // The seeds belong before every event in a recording.
    pipe.write_journal()?;
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

    // The demo's scenario runs on a blocking thread once the programs are attached.
    let mut scenario = demo.as_mut().map(demo::Demo::start);
    let mut scenario_done: Option<std::time::Instant> = None;

    let stop = loop {
        let step: io::Result<Option<Stop>> = tokio::select! {
            res = async {
                match &mut scenario {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            }, if scenario.is_some() && scenario_done.is_none() => {
                scenario_done = Some(std::time::Instant::now());
                res.context("the demo scenario panicked")?
                    .context("running the demo scenario")?;
                Ok(None)
            }
            guard = live.ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                // Drain fully before clearing readiness: a wake-up may cover many records.
                let r = drain(guard.get_inner_mut(), &mut pipe);
                guard.clear_ready();
                r.map(|()| None)
            }
            _ = poll.tick() => drain(live.ring.get_mut(), &mut pipe).map(|()| {
                if let Some(d) = &demo
                    && pipe.closing_seen > 0
                {
                    d.crossed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                // The demo ends when its sockets are all reported (or after a grace period).
                scenario_done
                    .filter(|t| pipe.table.is_idle() || t.elapsed() > demo::SETTLE)
                    .map(|_| Stop::DemoDone)
            }),
            _ = counters.tick() => {
                let totals = live.totals()?;
                losses
                    .report(&totals, &mut pipe)
                    .and_then(|()| pipe.tick(monotonic_ns()))
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
    let why = match stop {
        Stop::Signal(s) => s.to_string(),
        Stop::Duration => "duration reached".into(),
        Stop::StdoutClosed => "stdout closed".into(),
        Stop::DemoDone => "demo done".into(),
    };
    let final_write = final_write
        .and_then(|()| losses.report(&totals, &mut pipe))
        .and_then(|()| pipe.end_recording(monotonic_ns(), &why))
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
    report_files(args, &pipe);
    if let Some(d) = &demo {
        let _ = writeln!(err, "{}", d.epilogue());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--nice`: the reader's priority (this thread; threads started later inherit it).
fn set_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority takes plain integers; PRIO_PROCESS with 0 is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 {
        eprintln!(
            "tracer: warning: could not set --nice {nice} ({}); under heavy load the reader may fall behind (losses are reported)",
            io::Error::last_os_error()
        );
    }
}

/// Where the SVG diagrams and the recording went.
pub(crate) fn report_files<S: Sink>(args: &Args, pipe: &Pipeline<S>) {
    if let Some(dir) = &pipe.svg_dir {
        eprintln!(
            "tracer: wrote {} SVG diagram{} to {}",
            pipe.svg_written,
            if pipe.svg_written == 1 { "" } else { "s" },
            dir.display()
        );
    }
    if let Some(path) = &args.record {
        eprintln!(
            "tracer: recorded to {p}; show it again with: tracer replay {p}",
            p = path.display()
        );
    }
}

fn drain<S: Sink>(ring: &mut ring::Ring, pipe: &mut Pipeline<S>) -> io::Result<()> {
    ring.drain(|record| pipe.record(record))?;
    pipe.settle(monotonic_ns())?;
    // Records released by `settle` (grace period over) must show now, not at the next event.
    pipe.sink.flush()
}
