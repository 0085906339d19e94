//! `tracer replay FILE`: a recording through the same pipeline as live events. No root, no
//! BPF: the kernel's filters are applied here instead (`Pipeline::user_filter`), and what
//! sock_diag and /proc said live comes from the recording's facts.
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, bail};

use super::{report_files, with_pipeline};
use crate::{
    cli::Args,
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
    with_pipeline!(args, clock, |pipe| replay(args, file, reader, pipe))
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
}

fn replay<S: Sink, R: BufRead>(
    args: &Args,
    file: &Path,
    reader: Reader<R>,
    mut pipe: Pipeline<S>,
) -> anyhow::Result<ExitCode> {
    pipe.user_filter = true;
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
    }
    eprintln!(
        "tracer: replayed {} lines{}: {} transitions, {} context events, {} connections closed, {} still open at the end{}",
        reader.lines_read(),
        match &outcome {
            Outcome::Complete(reason) => format!(" (the recording ended: {reason})"),
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
        Outcome::Complete(_) | Outcome::StdoutClosed => Ok(ExitCode::SUCCESS),
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
