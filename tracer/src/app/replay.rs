//! `tracer replay FILE`: a recording through the same pipeline as live events. No root, no
//! BPF: the kernel's filters are applied here instead (`Pipeline::user_filter`), and what
//! sock_diag and /proc said live comes from the recording's facts.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{report_files, with_pipeline, write_diagram};
use crate::{
    cli::{Args, Command},
    clock::WallClock,
    output::Sink,
    pipeline::Pipeline,
    record::{Item, ReadError, Reader},
};

pub fn run(args: &Args, file: &Path) -> anyhow::Result<ExitCode> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = Reader::new(BufReader::with_capacity(1 << 20, f));
    let header = match reader.next() {
        Some(Ok(Item::Header(h))) => h,
        Some(Err(e)) => bail!("{}: {e}", file.display()),
        _ => bail!("{}: not a tracer recording", file.display()),
    };
    eprintln!(
        "tracer: replaying {}: recorded by tracer {} on {} (kernel {}), started {}{}",
        file.display(),
        header.tracer,
        header.hostname,
        header.kernel,
        header.started,
        if header.filters.is_empty() {
            String::new()
        } else {
            format!(", kernel filters then: {}", header.filters)
        }
    );
    let clock = WallClock::fixed(i128::from(header.clock_offset_ns));
    crate::enrich::netns::set_home(header.netns);
    let source = format!(
        "replayed from {} (recorded on {} by tracer {})",
        file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        header.hostname,
        header.tracer
    );
    let pace = match &args.command {
        Some(Command::Replay {
            top: true, speed, ..
        }) => {
            stop_on_signals();
            Some(*speed)
        }
        _ => None,
    };
    with_pipeline!(args, clock, |pipe| replay(
        args, file, reader, pipe, pace, &source
    ))
}

/// `tracer replay --top`: SIGINT (the dashboard's `q` raises it), SIGTERM and SIGHUP stop
/// the replay, which then gives the terminal back, instead of killing it with the terminal
/// still in raw mode.
fn stop_on_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        // An atomic store: async-signal-safe.
        crate::top::request_quit();
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only stores to an atomic; the sigaction struct is
        // zeroed (no flags, empty mask) but for the handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Plays a recording in its own time: waits until the wall clock reaches an item's recorded
/// time divided by the speed (0: no waiting). Stops waiting when `q` is pressed.
struct Pacer {
    speed: f64,
    /// The first recorded time and when it was played.
    start: Option<(u64, Instant)>,
}

impl Pacer {
    fn wait(&mut self, ts_ns: u64) {
        if self.speed <= 0.0 {
            return;
        }
        let (t0, w0) = *self.start.get_or_insert((ts_ns, Instant::now()));
        let due = w0 + Duration::from_secs_f64(ts_ns.saturating_sub(t0) as f64 / 1e9 / self.speed);
        while !crate::top::quit_requested() {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// The recorded time of an item, if it has one.
fn item_ts(item: &Item) -> Option<u64> {
    match item {
        Item::Event(ev) => Some(ev.ts_ns),
        Item::Diag(d) => Some(d.ts_ns),
        Item::Settle(ts) | Item::Tick(ts) => Some(*ts),
        Item::End { ts_ns, .. } => Some(*ts_ns),
        _ => None,
    }
}

/// What ended the replay.
enum Outcome {
    /// The `end` line: the recording is whole.
    Complete(String),
    /// The file ended without one: the recorder was killed or the file cut.
    NoEnd,
    /// A bad line.
    Bad(ReadError),
    StdoutClosed,
    /// `q` in the dashboard (or a signal) before the end.
    Stopped,
}

fn replay<S: Sink, R: BufRead>(
    args: &Args,
    file: &Path,
    reader: Reader<R>,
    mut pipe: Pipeline<S>,
    pace: Option<f64>,
    source: &str,
) -> anyhow::Result<ExitCode> {
    pipe.user_filter = true;
    pipe.sink.replaying(&format!("replay {}", file.display()));
    let mut pacer = pace.map(|speed| Pacer { speed, start: None });
    let mut last_ts = 0u64;
    let mut outcome = Outcome::NoEnd;
    let mut end_ts = None;
    let mut reader = reader;
    for item in reader.by_ref() {
        let item = match item {
            Err(e) => {
                outcome = Outcome::Bad(e);
                break;
            }
            Ok(item) => item,
        };
        if let Some(p) = &mut pacer {
            if let Some(ts) = item_ts(&item) {
                p.wait(ts);
            }
            if crate::top::quit_requested() {
                outcome = Outcome::Stopped;
                break;
            }
        }
        if let Item::End { ts_ns, reason } = &item {
            end_ts = Some(*ts_ns);
            outcome = Outcome::Complete(reason.clone());
        }
        let step = pipe.feed(item, &mut last_ts);
        match step {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                outcome = Outcome::StdoutClosed;
                break;
            }
            Err(e) => return Err(e).context("writing output"),
        }
    }
    if !matches!(outcome, Outcome::StdoutClosed) {
        // Everything read so far is shown, even when the file was cut or corrupt.
        match pipe.finish(end_ts.unwrap_or(last_ts)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e).context("writing output"),
        }
        if pacer.is_some() && !matches!(outcome, Outcome::Stopped) {
            pipe.sink
                .hold(&pipe.table, end_ts.unwrap_or(last_ts))
                .context("showing the dashboard")?;
        }
    }
    write_diagram(&mut pipe, source)?;
    eprintln!(
        "tracer: replayed {} lines{}: {} transitions, {} context events, {} connections closed, {} still open at the end{}",
        reader.lines_read(),
        match &outcome {
            Outcome::Complete(reason) => format!(" (the recording ended: {reason})"),
            Outcome::Stopped => " (stopped before its end)".to_string(),
            _ => String::new(),
        },
        pipe.transitions,
        pipe.events,
        pipe.connections,
        pipe.table.len(),
        if pipe.decode_errors > 0 {
            format!(", {} undecodable", pipe.decode_errors)
        } else {
            String::new()
        },
    );
    report_files(args, &pipe);
    match outcome {
        Outcome::Complete(_) | Outcome::StdoutClosed | Outcome::Stopped => Ok(ExitCode::SUCCESS),
        Outcome::NoEnd => {
            eprintln!(
                "tracer: warning: {} has no end line: the recording was cut short (the tracer was killed, or the file copied while it ran); connections open at that point were shown as they were",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Bad(e) => {
            eprintln!(
                "tracer: error: {}: {e}; everything before that line was shown",
                file.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
