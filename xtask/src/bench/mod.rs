//! `cargo xtask bench` and `cargo xtask soak`: tracer against an untraced baseline and its
//! peers under real loopback load from `cargo xtask loadgen`.
//!
//! One run = one tool started (or none: untraced), one generator run in a fresh network
//! namespace, the tool stopped. Around it:
//! - a tracefs instance with `sock:inet_sock_set_state` enabled and filtered on the
//!   generator's listener ports counts what the kernel emitted (ground truth: `perf stat`
//!   stops counting once a BPF program is attached). Its per-CPU `entries + overrun` is the
//!   total even when its small buffer wraps;
//! - the kernel's BPF statistics on for the whole benchmark (`BPF_ENABLE_STATS`, the switch
//!   `kernel.bpf_stats_enabled` also turns), so the tools' BPF programs get
//!   `run_time_ns`, `run_cnt` and `recursion_misses`, read from `/proc/PID/fdinfo` of their
//!   program fds before and after the load (the deltas belong to this run);
//! - the tool's CPU time during the load (`/proc/PID/stat` before, `wait4` rusage at exit)
//!   and its peak RSS (`ru_maxrss`);
//! - start-up: exec until the tool's BPF program has run on an event (the bench opens and
//!   closes a listening socket every 2 ms meanwhile: two transitions, no packets); for perf,
//!   which has no BPF program, until its tracepoint perf event is open.
//!
//! Runs are interleaved (rep 1: A B C…, rep 2: B C… A) so the machine's noise hits every tool.
//!
//! [`suite`] runs the benchmark, [`soak`] the soak; [`run`] is one run, measured with [`proc`]
//! (the running tool) and [`tracefs`] (the ground truth), and counted by [`count`]; [`report`]
//! writes results.md and results.json.
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Serialize;

use crate::loadgen;

mod count;
mod orphans;
mod proc;
mod report;
mod run;
mod soak;
mod suite;
mod tmux;
mod tracefs;

pub use soak::soak;
pub use suite::bench;

const TRACEFS: &str = "/sys/kernel/tracing";

fn parse_count(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = s.strip_suffix('m') {
        (n, 1_000_000)
    } else if let Some(n) = s.strip_suffix('k') {
        (n, 1_000)
    } else {
        (s.as_str(), 1)
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a count (1000, 10k, 1M)"))?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("`{s}` is out of range")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    /// The generator alone.
    Untraced,
    /// `tracer -o json > file`.
    TracerJson,
    /// `tracer --color never > file` (transitions and timelines).
    TracerText,
    /// `tracer -q`: no per-event output, summaries only (the capture path alone).
    TracerQuiet,
    /// `tracer -o json --no-events > file`: transitions only, no context tracepoints.
    TracerJsonNoEvents,
    /// `tracer -o json --view connections > file`: one record per connection, no
    /// transition or event records.
    TracerJsonConnections,
    /// `tracer top`, the dashboard, in a detached tmux session (it needs a terminal).
    TracerTop,
    /// libbpf-tools `tcpstates > file`.
    Tcpstates,
    /// bcc `tcpstates-bpfcc > file`.
    Bcc,
    /// A bpftrace script on tracepoint:sock:inet_sock_set_state printing the fields.
    Bpftrace,
    /// `perf record -e sock:inet_sock_set_state -a`.
    Perf,
    /// `-o json` of the build given with `--compare`: an A/B of two builds in one run.
    #[value(skip)]
    CompareJson,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::TracerJson => "tracer -o json",
            Self::TracerText => "tracer (text)",
            Self::TracerQuiet => "tracer -q",
            Self::TracerJsonNoEvents => "tracer -o json --no-events",
            Self::TracerJsonConnections => "tracer -o json --view connections",
            Self::TracerTop => "tracer top (tmux)",
            Self::Tcpstates => "libbpf-tools tcpstates",
            Self::Bcc => "bcc tcpstates-bpfcc",
            Self::Bpftrace => "bpftrace",
            Self::Perf => "perf record",
            Self::CompareJson => "tracer -o json [--compare]",
        }
    }

    fn is_tracer(self) -> bool {
        matches!(
            self,
            Self::TracerJson
                | Self::TracerText
                | Self::TracerQuiet
                | Self::TracerJsonNoEvents
                | Self::TracerJsonConnections
                | Self::TracerTop
                | Self::CompareJson
        )
    }

    const ALL: [Self; 11] = [
        Self::Untraced,
        Self::TracerJson,
        Self::TracerText,
        Self::TracerQuiet,
        Self::TracerJsonNoEvents,
        Self::TracerJsonConnections,
        Self::TracerTop,
        Self::Tcpstates,
        Self::Bcc,
        Self::Bpftrace,
        Self::Perf,
    ];
}

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Connections per run: 1k, 10k, 100k (repeatable; each scale is one churn workload).
    /// Default: 100k, unless only other workloads (`--sustained`, `--open`, `--burst`) are
    /// asked for.
    #[arg(long = "scale", value_name = "N", value_parser = parse_count)]
    pub scales: Vec<u64>,
    /// Runs of each tool per workload, interleaved.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Tools to run (comma-separated; default: all; peers that are not installed are skipped
    /// with the reason).
    #[arg(long = "tools", value_enum, value_delimiter = ',')]
    pub tools: Vec<Tool>,
    /// Install the peers first with apt (libbpf-tools, bpfcc-tools + 6.1 kernel headers,
    /// bpftrace, linux-perf).
    #[arg(long)]
    pub peers: bool,
    /// The generator's connections (see `cargo xtask loadgen --help`).
    #[command(flatten)]
    pub shape: loadgen::Shape,
    /// Also a sustained workload at this many connections per second (untraced, tracer
    /// -o json and libbpf-tools tcpstates when selected; one run each).
    #[arg(long, value_name = "CONNS_PER_S")]
    pub sustained: Option<f64>,
    /// Length of the sustained workload.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub sustained_secs: f64,
    /// Also a workload holding this many connections open at once (peak RSS of tracer -o json).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub open: Option<u64>,
    /// Also the `burst` workload: this many connections held open (both ends followed: twice
    /// as many sockets), then closed all at once, as a deploy or a crash does. Every tracer
    /// output and the peers selected; captured, lost, peak RSS, RSS after, and the time from
    /// the last kernel event to the tool's last write.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub burst: Option<u64>,
    /// `--burst`: seconds the connections are held before they close.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub burst_hold: f64,
    /// Also the `orphans` workload: this many connections whose clients close at once while
    /// their servers hold them for `--orphans-hold` seconds (every client an orphaned
    /// FIN_WAIT2 meanwhile), against the same connections held open; tracer `-o json --stuck
    /// 1h` only. Its CPU and RSS in the hold, the time of its sock_diag dumps, and the
    /// latency of each orphan's end (the servers' close) to its report. `--reps` runs of
    /// each, interleaved.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub orphans: Option<u64>,
    /// `--orphans`: seconds the servers hold their ends.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub orphans_hold: f64,
    /// The tracer binary (default: build it with `cargo build --release -p tracer`).
    #[arg(long)]
    pub tracer: Option<PathBuf>,
    /// Another tracer build to run with `-o json` beside the others, interleaved with them
    /// ("tracer -o json [--compare]"): an A/B of a change, measured in one run so the
    /// machine's noise hits both alike.
    #[arg(long, value_name = "TRACER")]
    pub compare: Option<PathBuf>,
    /// Keep each run's output file in target/bench/runs/ (they can be hundreds of MB).
    #[arg(long)]
    pub keep_output: bool,
    /// Give the tracer tools `-p` for the generator's ports (filtered in the kernel): other
    /// TCP traffic on the host (other jobs on a shared machine) then costs them nothing, so
    /// two tracer views compare on the generator's events alone. The peers stay unfiltered.
    #[arg(long)]
    pub only_ports: bool,
    /// Where results.md and results.json go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Connections to churn through.
    #[arg(short = 'n', long, default_value = "1M", value_parser = parse_count)]
    pub conns: u64,
    #[arg(short = 'c', long, default_value_t = 4)]
    pub concurrency: usize,
    /// Where tracer's JSON goes.
    #[arg(long, default_value = "/dev/null")]
    pub output: PathBuf,
    /// Seconds to keep watching RSS after the churn ends.
    #[arg(long, default_value_t = 20.0)]
    pub after_secs: f64,
    /// Generator time bound (it stops starting connections after this).
    #[arg(long, default_value_t = 900.0)]
    pub max_secs: f64,
    /// The tracer binary (default: build it).
    #[arg(long)]
    pub tracer: Option<PathBuf>,
    /// Do not give tracer `-p` for the generator's ports: it then counts every TCP
    /// transition on the host, which the tracefs count (those ports only) cannot check.
    #[arg(long)]
    pub all_ports: bool,
    /// Extra tracer arguments (after `--`), e.g. `-- --max-connections 50000`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub tracer_args: Vec<String>,
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}
