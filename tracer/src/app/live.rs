//! Live tracing: attach the programs and the enrichers, run the event loop, report at the end.
use std::{
    io::{self, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::{demo, report_files, with_pipeline, write_diagram};
use crate::{
    cli::{self, Args},
    clock::{WallClock, monotonic_ns},
    decode::{LostCause, TcpState},
    enrich::{self, Namespaces, OwnerResolver, TimeWaitTracker},
    files,
    filter::Filter,
    metrics,
    output::Sink,
    pipeline::Pipeline,
    reader,
    record::{self, Recorder},
    source::{Live, LiveOptions, Totals},
    units,
};

/// How often the kernel counters (losses) are checked while running.
const COUNTER_INTERVAL: Duration = Duration::from_millis(250);

pub(super) async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
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
        tcp_stats: !args.no_counters,
        accept: !args.no_accept,
        poll_interval: args.poll_interval,
        queue_bytes: args.queue_size,
    };
    let clock = WallClock::now();
    with_pipeline!(&args, clock, |pipe| trace(&args, &opts, pipe, clock, demo)
        .await)
}

/// The signals that stop tracer (SIGINT, SIGTERM, SIGHUP) or ask for a stuck summary
/// (SIGUSR1).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
        })
    }
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
        netns: enrich::netns::own_netns().unwrap_or(0),
    }
}

/// Attach, run until told to stop, then report: the three stages of a live run.
async fn trace<S: Sink>(
    args: &Args,
    opts: &LiveOptions,
    mut pipe: Pipeline<S>,
    clock: WallClock,
    mut demo: Option<demo::Demo>,
) -> anyhow::Result<ExitCode> {
    // The handlers first: from the "attached" line on, a signal must stop tracer cleanly
    // (one sent right after that line once killed it before they were installed).
    let mut signals = Signals::install()?;
    let mut live = attach(args, opts, &mut pipe, &clock).await?;
    let (stop, mut losses) =
        event_loop(args, &mut live, &mut pipe, demo.as_mut(), &mut signals).await?;
    final_report(args, opts, live, &mut pipe, stop, &mut losses)?;
    if let Some(d) = &demo {
        eprintln!("{}", d.epilogue());
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything before the first event: the recording file, the programs, the enrichers, the
/// start-up dump for `--stuck`, and the lines that say what is attached.
async fn attach<S: Sink>(
    args: &Args,
    opts: &LiveOptions,
    pipe: &mut Pipeline<S>,
    clock: &WallClock,
) -> anyhow::Result<Live> {
    // The recording file first: a bad path fails before anything is loaded.
    if let Some(path) = &args.record {
        let file = files::create_private(path, args.force)
            .with_context(|| format!("creating the recording {}", path.display()))?;
        let rec = Recorder::new(
            io::BufWriter::with_capacity(256 << 10, file),
            &recording_header(&opts.filter, clock),
        )
        .with_context(|| format!("writing the recording {}", path.display()))?;
        pipe.start_recording(rec);
    }
    set_nice(args.nice);
    enrich::netns::set_home(enrich::netns::own_netns().unwrap_or(0));
    let live = Live::start(opts)?;
    match crate::cgroup::mount() {
        Some(m) => pipe.names.scan(m),
        None => eprintln!(
            "tracer: {}: owners' cgroup, unit, container_id and pod_uid will be null",
            crate::cgroup::NOT_MOUNTED
        ),
    }
    pipe.namespaces = match Namespaces::new() {
        Ok(mut ns) => {
            ns.kernel_reports = live.reads_netns;
            pipe.owners = Some(OwnerResolver::new(pipe.names.clone()));
            Some(ns)
        }
        Err(e) => {
            eprintln!(
                "tracer: owners of sockets older than the tracer will not be resolved: sock_diag unavailable ({e})"
            );
            None
        }
    };
    pipe.filter = opts.filter.clone();
    if let Some(addr) = args.metrics {
        let m = metrics::Metrics::new();
        let local = m.serve(addr).await?;
        eprintln!("tracer: Prometheus metrics on http://{local}/metrics");
        pipe.metrics = Some(m);
    }
    // TIME_WAIT lookups, unless nothing would show them (quiet and no metrics). Stuck
    // reports need them: they find the orphaned FIN_WAIT2s.
    let nothing_would_show = pipe.quiet
        && pipe.stuck_ns.is_none()
        && pipe.metrics.is_none()
        && pipe.summary.is_none()
        && pipe.recorder.is_none()
        && pipe.svg_dir.is_none();
    if !args.no_timewait && !nothing_would_show {
        if pipe.namespaces.is_some() {
            pipe.time_wait = Some(TimeWaitTracker::new());
        } else {
            eprintln!("tracer: TIME_WAIT will not be shown: netlink sock_diag unavailable");
        }
    }
    pipe.no_time_wait_lookups = pipe.time_wait.is_none();
    if args.no_timewait && pipe.stuck_ns.is_some() {
        eprintln!(
            "tracer: --no-timewait: orphaned FIN_WAIT2 sockets (closed by their process, the peer's FIN still awaited) will not be found stuck: only the TIME_WAIT lookups see them"
        );
    }
    if let Some(ns) = pipe.stuck_ns {
        let seeded = match &mut pipe.namespaces {
            Some(namespaces) => enrich::seed(
                &mut pipe.table,
                &opts.filter,
                namespaces,
                &pipe.names,
                monotonic_ns(),
                pipe.time_wait.is_some(),
            ),
            None => Err(io::Error::other("netlink sock_diag unavailable")),
        };
        match seeded {
            Ok(n) => eprintln!(
                "tracer: reporting connections stuck for {} or more; {} existing sockets{} seeded from sock_diag in {} network namespace{}{} (their age counts from now)",
                units::human_ns(ns),
                n.sockets,
                if n.orphans > 0 {
                    format!(" ({} orphaned FIN_WAIT2)", n.orphans)
                } else {
                    String::new()
                },
                n.namespaces,
                if n.namespaces == 1 { "" } else { "s" },
                if n.failed > 0 {
                    format!(", {} could not be listed", n.failed)
                } else {
                    String::new()
                }
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
    if let Some(why) = &live.error_reports_by_tuple {
        eprintln!(
            "tracer: warning: error reports from the classic tracepoint (the raw one was refused: {why}): they carry no socket and are matched by 4-tuple, so an error of a connection whose tuple is open in several network namespaces at once is not attributed"
        );
    }
    if args.no_accept {
        // Asked for: nothing to warn about.
    } else if let Some(why) = &live.accept_unavailable {
        eprintln!(
            "tracer: warning: accepted sockets are not attributed to the process that accepted them ({why}): they keep their listener's owner (source inherited) until their own close"
        );
    } else if !live.accept_programs.is_empty() {
        eprintln!(
            "tracer: accepting processes from {}{}",
            live.accept_programs.join(", "),
            if live.accept_btf {
                " (file table through BTF pointers)"
            } else {
                ""
            }
        );
    }
    Ok(live)
}

/// Reads the ring buffer, checks the kernel's counters and stuck connections, and answers
/// signals, until something says stop.
async fn event_loop<S: Sink>(
    args: &Args,
    live: &mut Live,
    pipe: &mut Pipeline<S>,
    demo: Option<&mut demo::Demo>,
    signals: &mut Signals,
) -> anyhow::Result<(Stop, LossTracker)> {
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
    let mut trim = Trim::default();
    // The pipeline's clock (see `handle`).
    let mut now_ns = monotonic_ns();

    // The demo's scenario runs on a blocking thread once the programs are attached.
    let crossed = demo.as_ref().map(|d| d.crossed.clone());
    let mut scenario = demo.map(|d| d.start());
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
            batch = live.reader.next() => {
                match batch {
                    Some(Ok(b)) => {
                        let r = handle(&b, pipe, &mut now_ns);
                        live.reader.recycle(b);
                        r.map(|()| None)
                    }
                    Some(Err(e)) => Err(io::Error::other(format!("reading the ring buffer: {e}"))),
                    None => Err(io::Error::other("the ring buffer's reader thread stopped")),
                }
            }
            _ = poll.tick(), if crossed.is_some() => {
                if let Some(c) = &crossed
                    && pipe.closing_seen > 0
                {
                    c.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                // The demo ends when its sockets are all reported (or after a grace period).
                Ok(scenario_done
                    .filter(|t| pipe.table.is_idle() || t.elapsed() > demo::SETTLE)
                    .map(|_| Stop::DemoDone))
            }
            _ = counters.tick() => {
                let totals = live.totals()?;
                losses
                    .report(&totals, pipe)
                    .and_then(|()| pipe.tick(now_ns))
                    .map(|()| {
                        ticks += 1;
                        if ticks.is_multiple_of(4) {
                            pipe.update_gauges(now_ns);
                            trim.check(pipe);
                        }
                    })
                    .and_then(|()| pipe.sink.flush())
                    .map(|()| None)
            }
            _ = signals.usr1.recv() => pipe.stuck_summary(now_ns).map(|()| None),
            _ = signals.int.recv() => Ok(Some(Stop::Signal("SIGINT"))),
            _ = signals.term.recv() => Ok(Some(Stop::Signal("SIGTERM"))),
            _ = signals.hup.recv() => Ok(Some(Stop::Signal("SIGHUP"))),
            () = &mut deadline => Ok(Some(Stop::Duration)),
        };
        match step {
            Ok(None) => {}
            Ok(Some(stop)) => break stop,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Stop::StdoutClosed,
            Err(e) => return Err(e).context("writing output"),
        }
    };
    Ok((stop, losses))
}

/// Detaches first so nothing new arrives, drains what is left, writes every record still
/// held back, and prints the exit line with the kernel's final counts.
fn final_report<S: Sink>(
    args: &Args,
    opts: &LiveOptions,
    mut live: Live,
    pipe: &mut Pipeline<S>,
    stop: Stop,
    losses: &mut LossTracker,
) -> anyhow::Result<()> {
    live.detach();
    let mut now_ns = 0;
    let final_write = live
        .reader
        .finish(|b| handle(b, pipe, &mut now_ns))
        .and_then(|()| pipe.finish(monotonic_ns()));
    let totals = live.totals()?;
    let why = match stop {
        Stop::Signal(s) => s.to_string(),
        Stop::Duration => "duration reached".into(),
        Stop::StdoutClosed => "stdout closed".into(),
        Stop::DemoDone => "demo done".into(),
    };
    let final_write = final_write
        .and_then(|()| losses.report(&totals, pipe))
        .and_then(|()| pipe.end_recording(monotonic_ns(), &why))
        .and_then(|()| pipe.sink.flush());
    let queue = (
        live.reader.peak_bytes(),
        live.reader.max_bytes(),
        live.reader.times_full(),
    );
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
        "tracer: stopped ({why}): {} transitions, {} context events, {} connections closed, {} still open{}{}{}, lost {lost} (ring buffer full {}, skipped by the kernel {}, unreadable {}){}{filtered}",
        pipe.transitions,
        pipe.events,
        pipe.connections,
        pipe.table.len(),
        pipe.time_wait.as_ref().map_or_else(String::new, |t| {
            let mut untracked = if t.untracked > 0 {
                format!(
                    " ({} more confirmed but not followed to their end)",
                    t.untracked
                )
            } else {
                String::new()
            };
            if t.orphans_untracked > 0 {
                untracked.push_str(&format!(
                    ", {} orphaned FIN_WAIT2s not followed (over {})",
                    t.orphans_untracked,
                    crate::enrich::MAX_ORPHANS
                ));
            }
            if t.stats.failed > 0 {
                untracked.push_str(&format!(
                    ", {} sock_diag dump{} failed (retried)",
                    t.stats.failed,
                    if t.stats.failed == 1 { "" } else { "s" }
                ));
            }
            format!(", {} in TIME_WAIT{untracked}", t.tracked())
        }),
        if pipe.table.evicted > 0 {
            format!(
                ", {} evicted to stay within --max-connections",
                pipe.table.evicted
            )
        } else {
            String::new()
        },
        if pipe.table.unseen_dropped > 0 {
            format!(
                ", {} context events of sockets not seen yet dropped",
                pipe.table.unseen_dropped
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
    if let Some(t) = pipe.time_wait.as_ref().filter(|t| t.stats.dumps > 0) {
        let _ = writeln!(
            err,
            "tracer: sock_diag lookups of TIME_WAIT and orphaned FIN_WAIT2: {}",
            t.stats.describe()
        );
    }
    if let Some(o) = pipe.owners.as_ref().filter(|o| o.failed > 0) {
        let _ = writeln!(
            err,
            "tracer: owner lookups: {} sock_diag dumps failed (each round retried at the next)",
            o.failed
        );
    }
    if totals.lost_stats > 0 {
        let _ = writeln!(
            err,
            "tracer: {} connection counter records lost (ring buffer full or unreadable): those connections' bytes and RTT are null",
            totals.lost_stats
        );
    }
    if totals.lost_accepts > 0 {
        let _ = writeln!(
            err,
            "tracer: {} accept records lost (ring buffer full or unreadable): those accepted sockets keep their listener's owner",
            totals.lost_accepts
        );
    }
    let (peak, max, full) = queue;
    if full > 0 {
        let _ = writeln!(
            err,
            "tracer: the reader's queue was full {full} time{} (--queue-size {} MiB): the ring buffer then filled behind it, and what it could not take is counted as ring buffer full above",
            if full == 1 { "" } else { "s" },
            max >> 20
        );
    } else if peak > 4 * reader::CHUNK_BYTES {
        let _ = writeln!(
            err,
            "tracer: a burst waited in the reader's queue: at most {} MiB of records (bound: --queue-size {} MiB)",
            peak >> 20,
            max >> 20
        );
    }
    if let Some(n) = pipe.namespaces.as_ref().filter(|n| n.over_cap > 0) {
        let _ = writeln!(
            err,
            "tracer: {} network namespaces were not followed (at most {} are): sock_diag lookups there were skipped",
            n.over_cap,
            crate::enrich::netns::MAX_NAMESPACES
        );
    }
    drop(err);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    write_diagram(pipe, &format!("traced live on {}", host.trim()))?;
    report_files(args, pipe);
    Ok(())
}

/// After a burst: the memory of the records it held goes back to the system once the table
/// has shrunk well below its peak (the queue's chunks are unmapped as they are freed; the
/// table's maps and the allocator's free lists would otherwise keep the burst's size).
#[derive(Default)]
struct Trim {
    /// The table's footprint at its largest since the last trim.
    peak: usize,
}

impl Trim {
    fn check<S: Sink>(&mut self, pipe: &mut Pipeline<S>) {
        let now = pipe.table.footprint();
        self.peak = self.peak.max(now);
        if self.peak - now < 20_000 || now > self.peak / 2 {
            return;
        }
        self.peak = now;
        pipe.table.shrink();
        release_free_memory();
    }
}

/// glibc keeps freed memory in its heaps; `malloc_trim` hands the free pages back.
#[cfg(target_env = "gnu")]
fn release_free_memory() {
    // SAFETY: malloc_trim takes a plain size and only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn release_free_memory() {}

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

/// One batch from the reader: its records, then what they settled. The clock (`now_ns`)
/// is when the ring was last read empty or the latest event handled, whichever is later:
/// not the time now, which may be well past what the pipeline has seen when it lags behind
/// a burst (a closed record would be released before its late events in the queue).
fn handle<S: Sink>(b: &reader::Batch, pipe: &mut Pipeline<S>, now_ns: &mut u64) -> io::Result<()> {
    for record in b.records() {
        pipe.record(record)?;
    }
    *now_ns = (*now_ns).max(pipe.latest_ts_ns).max(b.read_ns.unwrap_or(0));
    pipe.settle(*now_ns)?;
    // Records released by `settle` (grace period over) must show now, not at the next event.
    pipe.sink.flush()
}
