//! The application: the subcommand dispatcher and what live tracing, the demo and replay share
//! (setting a pipeline up from the options). Nothing below imports from here.
use std::{
    io::{self, IsTerminal as _},
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    cli::{self, Args, ColorChoice},
    clock::WallClock,
    ladder::Pairer,
    output::Sink,
    pipeline::{Pipeline, View},
    summary::Summary,
};

pub mod demo;
mod live;
pub mod replay;

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
    if let Some(cli::Command::Replay { file, .. }) = &args.command {
        return replay::run(&args, file);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(live::run_async(args))
}

/// Colour in text output: `--color`, else on a terminal unless NO_COLOR is set.
pub(crate) fn text_color(args: &Args) -> bool {
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
        crate::files::create_private_dir(dir)
            .with_context(|| format!("creating the --svg directory {}", dir.display()))?;
        pipe.svg_dir = Some(dir.clone());
        pipe.force = args.force;
    }
    if let Some(path) = &args.diagram {
        let file = crate::files::create_private(path, args.force)
            .with_context(|| format!("creating the --diagram file {}", path.display()))?;
        pipe.diagram = Some((crate::diagram::Collector::new(), file, path.clone()));
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
        use $crate::{app::configure, cli::Output, output, pipeline::Pipeline};
        let out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
        match ($args.output, $args.top_interval()) {
            (_, Some(interval)) => {
                drop(out);
                let color = std::env::var_os("NO_COLOR").is_none()
                    && $args.color != $crate::cli::ColorChoice::Never;
                let threshold = $args.stuck_threshold().map_or(30_000_000_000, |d| {
                    d.as_nanos().min(u128::from(u64::MAX)) as u64
                });
                if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    anyhow::bail!("tracer top draws on a terminal: stdout is not one");
                }
                let sink = $crate::top::Top::new(threshold, interval, color, $clock);
                let $pipe = configure($args, $clock, Pipeline::new(sink))?;
                $body
            }
            (Output::Json, _) => {
                let sink = output::Json::new(out, $clock);
                let $pipe = configure($args, $clock, Pipeline::new(sink))?;
                $body
            }
            (Output::Text, _) => {
                let color = $crate::app::text_color($args);
                let sink = output::Text::new(out, $clock, color, !$args.no_timeline)
                    .with_columns($args.columns);
                let $pipe = configure($args, $clock, Pipeline::new(sink))?;
                $body
            }
        }
    }};
}

pub(crate) use with_pipeline;

/// `--diagram FILE`: the state diagram written at exit; `source` says where the events came
/// from (under the title).
pub(crate) fn write_diagram<S: Sink>(pipe: &mut Pipeline<S>, source: &str) -> anyhow::Result<()> {
    let Some((c, mut file, path)) = pipe.diagram.take() else {
        return Ok(());
    };
    let span = c
        .first_ns
        .map(|f| {
            format!(
                " over {}",
                crate::units::human_ns(c.last_ns.saturating_sub(f))
            )
        })
        .unwrap_or_default();
    let filters = pipe.filter.describe();
    let subtitle = format!(
        "{} transitions{span}, {source}{}",
        c.arrows.sum(),
        if filters.is_empty() {
            String::new()
        } else {
            format!("; {filters}")
        }
    );
    let svg = crate::diagram::svg::render(&c, "The TCP state machine", &subtitle);
    io::Write::write_all(&mut file, svg.as_bytes())
        .with_context(|| format!("writing the state diagram {}", path.display()))?;
    eprintln!("tracer: wrote the state diagram to {}", path.display());
    Ok(())
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
