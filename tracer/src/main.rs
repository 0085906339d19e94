//! Thin entry point: parse arguments, run, turn errors into a message and an exit code.
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = tracer::cli::Args::parse();
    match tracer::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
