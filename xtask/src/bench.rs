//! `cargo xtask bench` and `cargo xtask soak`: tracer against an untraced baseline and its
//! peers under real loopback load from `cargo xtask loadgen`.
//!
//! One run = one tool started (or none: untraced), one generator run in a fresh network
//! namespace, the tool stopped. Around it:
//! - a tracefs instance with `sock:inet_sock_set_state` enabled and filtered on the
//!   generator's listener ports counts what the kernel emitted (ground truth: `perf stat`
//!   stops counting once a BPF program is attached). Its per-CPU `entries + overrun` is the
//!   total even when its small buffer wraps;
//! - `kernel.bpf_stats_enabled=1` for the whole benchmark, so the tools' BPF programs get
//!   `run_time_ns`, `run_cnt` and `recursion_misses`, read from `/proc/PID/fdinfo` of their
//!   program fds before and after the load (the deltas belong to this run);
//! - the tool's CPU time during the load (`/proc/PID/stat` before, `wait4` rusage at exit)
//!   and its peak RSS (`ru_maxrss`);
//! - start-up: exec until the tool's BPF program has run on an event (the bench opens and
//!   closes a listening socket every 2 ms meanwhile: two transitions, no packets); for perf,
//!   which has no BPF program, until its tracepoint perf event is open.
//!
//! Runs are interleaved (rep 1: A B C…, rep 2: B C… A) so the machine's noise hits every tool.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    io::{BufRead as _, BufReader},
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::loadgen::{self, Family};

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
                | Self::CompareJson
        )
    }

    const ALL: [Self; 10] = [
        Self::Untraced,
        Self::TracerJson,
        Self::TracerText,
        Self::TracerQuiet,
        Self::TracerJsonNoEvents,
        Self::TracerJsonConnections,
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
    /// Extra tracer arguments (after `--`), e.g. `-- --max-connections 50000`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub tracer_args: Vec<String>,
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Entry points

pub fn bench(root: &Path, cargo: &mut Command, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let out = root.join(&args.out);
    let runs_dir = out.join("runs");
    fs::create_dir_all(&runs_dir).with_context(|| format!("creating {}", runs_dir.display()))?;
    let mut tools: Vec<Tool> = if args.tools.is_empty() {
        Tool::ALL.to_vec()
    } else {
        args.tools.clone()
    };
    if args.compare.is_some() {
        tools.push(Tool::CompareJson);
    }
    tools.sort();
    tools.dedup();
    if args.peers {
        install_peers(&tools)?;
    }
    let tracer = if tools.iter().any(|t| t.is_tracer()) {
        Some(tracer_binary(root, cargo, args.tracer.as_deref(), &out)?)
    } else {
        None
    };
    let mut skipped: BTreeMap<Tool, String> = BTreeMap::new();
    for &t in &tools {
        if let Some(why) = unavailable(t) {
            eprintln!("bench: skipping {}: {why}", t.name());
            skipped.insert(t, why);
        }
    }
    ensure_tracefs()?;
    let _stats = BpfStats::enable()?;
    let compare = match &args.compare {
        Some(p) => {
            let dst = out.join("tracer-compare");
            fs::copy(p, &dst)
                .with_context(|| format!("copying {} to {}", p.display(), dst.display()))?;
            Some(dst)
        }
        None => None,
    };
    let ctx = Ctx {
        tracer,
        compare,
        runs_dir,
        keep_output: args.keep_output,
        family: args.shape.family,
    };

    let base = |conns: u64| loadgen::Args {
        conns,
        shape: args.shape,
        port: listen_port(),
        rate: None,
        hold: None,
        orphans: false,
        max_secs: 600.0,
        no_netns: false,
        child: false,
        progress: 0.0,
    };
    let mut workloads = Vec::new();
    let default_scale = [100_000];
    let scales: &[u64] = if args.scales.is_empty()
        && args.sustained.is_none()
        && args.open.is_none()
        && args.burst.is_none()
    {
        &default_scale
    } else {
        &args.scales
    };
    for &n in scales {
        workloads.push(Workload {
            name: format!("churn {}", human_count(n)),
            gen_args: base(n),
            tools: tools.clone(),
            reps: args.reps,
        });
    }
    if let Some(rate) = args.sustained {
        let n = (rate * args.sustained_secs).round() as u64;
        if n == 0 {
            bail!("--sustained × --sustained-secs makes no connection");
        }
        let mut g = base(n);
        g.rate = Some(rate);
        g.max_secs = args.sustained_secs * 3.0 + 30.0;
        workloads.push(Workload {
            name: format!("sustained {rate:.0}/s × {:.0}s", args.sustained_secs),
            gen_args: g,
            tools: tools
                .iter()
                .copied()
                .filter(|t| {
                    matches!(
                        t,
                        Tool::Untraced | Tool::TracerJson | Tool::CompareJson | Tool::Tcpstates
                    )
                })
                .collect(),
            reps: 1,
        });
    }
    if let Some(n) = args.open {
        let mut g = base(n);
        g.hold = Some(3.0);
        workloads.push(Workload {
            name: format!("{} open at once", human_count(n)),
            gen_args: g,
            tools: tools
                .iter()
                .copied()
                .filter(|t| matches!(t, Tool::Untraced | Tool::TracerJson | Tool::CompareJson))
                .collect(),
            reps: 1,
        });
    }

    if let Some(n) = args.burst {
        let mut g = base(n);
        g.hold = Some(args.burst_hold);
        workloads.push(Workload {
            name: format!("burst {}", human_count(n)),
            gen_args: g,
            tools: tools.clone(),
            reps: args.reps,
        });
    }

    let started = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    for w in &workloads {
        let active: Vec<Tool> = w
            .tools
            .iter()
            .copied()
            .filter(|t| !skipped.contains_key(t))
            .collect();
        for rep in 0..w.reps {
            // Rotate the order each rep so no tool always runs first (or after the same one).
            let k = rep as usize % active.len().max(1);
            let order: Vec<Tool> = active[k..].iter().chain(&active[..k]).copied().collect();
            for tool in order {
                if skipped.contains_key(&tool) {
                    continue;
                }
                eprintln!(
                    "bench: [{:>5.0}s] {} rep {}/{}: {}",
                    started.elapsed().as_secs_f64(),
                    w.name,
                    rep + 1,
                    w.reps,
                    tool.name()
                );
                match run_one(&ctx, w, tool, rep) {
                    Ok(r) => {
                        eprintln!("bench:   {}", r.one_line());
                        results.push(r);
                    }
                    Err(e) => {
                        // A peer that cannot start is skipped from then on, with the reason.
                        eprintln!("bench:   {} failed: {e:#}", tool.name());
                        if tool == Tool::Untraced {
                            return Err(e).context("the untraced baseline failed");
                        }
                        skipped.insert(tool, format!("{e:#}"));
                    }
                }
            }
        }
    }

    let report = Report {
        machine: machine_facts(ctx.tracer.as_deref()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        wall_s: started.elapsed().as_secs_f64(),
        skipped: skipped
            .iter()
            .map(|(t, why)| (t.name().to_string(), why.clone()))
            .collect(),
        summary: summarise(&workloads, &results),
        runs: results,
    };
    let md = markdown(&report);
    fs::write(out.join("results.md"), &md).context("writing results.md")?;
    fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report).context("encoding results")?,
    )
    .context("writing results.json")?;
    println!("{md}");
    eprintln!(
        "bench: wrote {} and results.json",
        out.join("results.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn soak(root: &Path, cargo: &mut Command, args: &SoakArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    let out = root.join(&args.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tracer = tracer_binary(root, cargo, args.tracer.as_deref(), &out)?;
    ensure_tracefs()?;
    let gen_args = loadgen::Args {
        conns: args.conns,
        shape: loadgen::Shape::plain(args.concurrency),
        port: listen_port(),
        rate: None,
        hold: None,
        orphans: false,
        max_secs: args.max_secs,
        no_netns: false,
        child: false,
        progress: 10.0,
    };
    let counter = TraceCount::new(&gen_args)?;
    let stdout =
        File::create(&args.output).with_context(|| format!("opening {}", args.output.display()))?;
    let mut targs: Vec<String> = vec!["-o".into(), "json".into()];
    targs.extend(args.tracer_args.iter().cloned());
    eprintln!(
        "soak: {} {} > {}",
        tracer.display(),
        targs.join(" "),
        args.output.display()
    );
    let mut proc = Proc::spawn(Command::new(&tracer).args(&targs), stdout)?;
    let attached = proc.wait_for_stderr("tracer: attached to", Duration::from_secs(30))?;
    eprintln!(
        "soak: tracer attached after {attached:.3}s; starting {} connections",
        args.conns
    );

    // Sample RSS once a second in the background while the churn runs.
    let pid = proc.pid;
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let samples = Arc::clone(&samples);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS:")
                    && let Ok(mut s) = samples.lock()
                {
                    s.push((t0.elapsed().as_secs_f64(), rss));
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let gen_result = run_loadgen(&gen_args);
    let churn_end = t0.elapsed().as_secs_f64();
    let lg = match gen_result {
        Ok(g) => g,
        Err(e) => {
            proc.interrupt();
            return Err(e);
        }
    };
    eprintln!(
        "soak: generator done: {} connections in {:.1}s ({:.0}/s); watching RSS for {:.0}s",
        lg.conns, lg.elapsed_s, lg.conns_per_s, args.after_secs
    );
    thread::sleep(Duration::from_secs_f64(args.after_secs.max(1.0)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let hwm_kib = status_kib(pid, "VmHWM:");
    let exit = proc.stop(Duration::from_secs(60))?;
    let kernel = counter.count()?;
    drop(counter);
    let summary = exit.summary_line.clone().unwrap_or_default();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let during_max = samples
        .iter()
        .filter(|(t, _)| *t <= churn_end)
        .map(|&(_, r)| r)
        .max();
    let after: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t > churn_end + 1.0)
        .collect();
    let after_first = after.first().map(|&(_, r)| r);
    let after_last = after.last().map(|&(_, r)| r);
    let mib =
        |k: Option<u64>| k.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let growing = match (after_first, after_last) {
        (Some(a), Some(b)) => b > a + a / 50, // more than 2% up while idle
        _ => false,
    };
    let mut md = String::new();
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| connections | {} in {:.1}s ({:.0}/s, {} failed{}) |",
        lg.conns,
        lg.elapsed_s,
        lg.conns_per_s,
        lg.failed,
        if lg.timed_out {
            ", stopped by --max-secs"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| transitions emitted (tracefs) | {kernel} (expected {}) |",
        lg.expected_transitions
    );
    let _ = writeln!(
        md,
        "| tracer transitions (all TCP on the host) | {} |",
        exit.transitions
            .map_or_else(|| "?".into(), |t| t.to_string())
    );
    let _ = writeln!(
        md,
        "| tracer lost | {} |",
        exit.lost.map_or_else(|| "?".into(), |t| t.to_string())
    );
    let _ = writeln!(
        md,
        "| peak RSS (VmHWM) | {} MiB |",
        mib(hwm_kib.or(exit.maxrss_kib))
    );
    let _ = writeln!(
        md,
        "| highest RSS sampled during the churn | {} MiB |",
        mib(during_max)
    );
    let _ = writeln!(md, "| RSS 1 s after the churn | {} MiB |", mib(after_first));
    let _ = writeln!(
        md,
        "| RSS {:.0} s after the churn | {} MiB |",
        args.after_secs,
        mib(after_last)
    );
    let _ = writeln!(
        md,
        "| still growing after the churn | {} |",
        if growing { "YES" } else { "no" }
    );
    let _ = writeln!(md, "| tracer CPU | {:.1} s |", exit.cpu_total_s);
    let _ = writeln!(md, "\ntracer's exit line: `{summary}`");
    let soak_json = serde_json::json!({
        "machine": machine_facts(Some(&tracer)),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "generator": lg,
        "kernel_transitions": kernel,
        "tracer_transitions": exit.transitions,
        "tracer_lost": exit.lost,
        "vm_hwm_kib": hwm_kib,
        "ru_maxrss_kib": exit.maxrss_kib,
        "rss_samples_kib": samples,
        "churn_end_s": churn_end,
        "rss_growing_after_churn": growing,
        "tracer_cpu_s": exit.cpu_total_s,
        "tracer_summary": summary,
    });
    fs::write(out.join("soak.md"), &md).context("writing soak.md")?;
    fs::write(
        out.join("soak.json"),
        serde_json::to_string_pretty(&soak_json).context("encoding soak.json")?,
    )
    .context("writing soak.json")?;
    println!("{md}");
    eprintln!("soak: wrote {}", out.join("soak.md").display());
    Ok(if growing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------------------------------------
// One run

struct Ctx {
    tracer: Option<PathBuf>,
    /// `--compare`: the second build.
    compare: Option<PathBuf>,
    runs_dir: PathBuf,
    keep_output: bool,
    family: Family,
}

struct Workload {
    name: String,
    gen_args: loadgen::Args,
    tools: Vec<Tool>,
    reps: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    workload: String,
    tool: Tool,
    rep: u32,
    conns: u64,
    failed: u64,
    conns_per_s: f64,
    elapsed_s: f64,
    /// Rate mode: the generator's worst lag behind its schedule.
    max_lag_s: f64,
    /// Counted by the tracefs instance.
    kernel_events: u64,
    /// 10 per connection (6 with RSTs) + 2 per listener.
    expected_events: u64,
    /// Transitions on the generator's ports found in the tool's output.
    captured: Option<u64>,
    /// How `captured` was counted.
    captured_from: &'static str,
    /// Lost events as the tool itself reports them.
    lost_reported: Option<u64>,
    /// Sum over the tool's BPF programs during the load.
    recursion_misses: Option<u64>,
    /// run_time_ns / run_cnt of the tool's busiest program (the inet_sock_set_state one).
    prog_ns_per_run: Option<f64>,
    /// All the tool's programs' run time during the load / kernel_events.
    all_progs_ns_per_event: Option<f64>,
    /// The tool's CPU (user + system) from just before the load until it exited.
    cpu_s: Option<f64>,
    cpu_s_per_m_events: Option<f64>,
    peak_rss_kib: Option<u64>,
    /// VmRSS just before the load and once its output had stopped growing after it.
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    /// From the last event the kernel emitted on the generator's ports (tracefs, `mono`
    /// clock) to the tool's last write to its output before it was stopped: how far behind
    /// the kernel its output ended.
    drain_s: Option<f64>,
    /// Exec until its program ran on an event (perf: until its perf event was open).
    startup_s: Option<f64>,
    /// tracer only: exec until its "attached" line.
    attached_line_s: Option<f64>,
    summary_line: Option<String>,
    notes: Vec<String>,
}

impl RunResult {
    fn one_line(&self) -> String {
        let o = |v: Option<f64>, p: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.p$}"));
        format!(
            "{:.0} conns/s, kernel {} (expected {}), captured {}, lost {}, misses {}, {} ns/run, CPU {} s/M, RSS {} MiB (after {}), drain {} s, start {} s{}",
            self.conns_per_s,
            self.kernel_events,
            self.expected_events,
            self.captured.map_or_else(|| "-".into(), |c| c.to_string()),
            self.lost_reported
                .map_or_else(|| "-".into(), |c| c.to_string()),
            self.recursion_misses
                .map_or_else(|| "-".into(), |c| c.to_string()),
            o(self.prog_ns_per_run, 0),
            o(self.cpu_s_per_m_events, 3),
            o(self.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
            o(self.rss_after_kib.map(|k| k as f64 / 1024.0), 1),
            o(self.drain_s, 2),
            o(self.startup_s, 3),
            if self.notes.is_empty() {
                String::new()
            } else {
                format!(" [{}]", self.notes.join("; "))
            }
        )
    }
}

fn run_one(ctx: &Ctx, w: &Workload, tool: Tool, rep: u32) -> anyhow::Result<RunResult> {
    let g = &w.gen_args;
    let counter = TraceCount::new(g)?;
    let out_path = ctx.runs_dir.join(format!(
        "{}-{}-{}.out",
        slug(&w.name),
        slug(tool.name()),
        rep + 1
    ));
    let mut notes = Vec::new();
    let mut proc = None;
    let mut startup_s = None;
    let mut attached_line_s = None;
    if tool != Tool::Untraced {
        let (mut cmd, out_file) = tool_command(ctx, tool, &out_path)?;
        let mut p = Proc::spawn(&mut cmd, out_file)?;
        let ready = if tool == Tool::Perf {
            p.wait_for_perf_event(Duration::from_secs(60))
        } else {
            p.wait_for_first_event(Duration::from_secs(120))
        };
        match ready {
            Ok(s) => startup_s = Some(s),
            Err(e) => {
                let tail = p.stderr_tail();
                p.interrupt();
                let _ = p.stop(Duration::from_secs(10));
                return Err(e.context(tail));
            }
        }
        if tool.is_tracer() {
            attached_line_s = p
                .wait_for_stderr("tracer: attached to", Duration::from_secs(5))
                .ok();
        }
        if tool == Tool::Perf {
            notes.push("start-up: until perf's event was open".into());
        }
        // Let the tool's start-up work (compiling, loading, first allocations) settle.
        thread::sleep(Duration::from_millis(500));
        proc = Some(p);
    }

    let before = proc.as_ref().map(|p| (cpu_ticks(p.pid), prog_stats(p.pid)));
    let rss_before_kib = proc.as_ref().and_then(|p| status_kib(p.pid, "VmRSS:"));
    let gen_result = run_loadgen(g);
    let lg = match gen_result {
        Ok(g) => g,
        Err(e) => {
            if let Some(p) = proc {
                p.interrupt();
                let _ = p.stop(Duration::from_secs(10));
            }
            return Err(e).context("generator");
        }
    };
    let mut res = RunResult {
        workload: w.name.clone(),
        tool,
        rep: rep + 1,
        conns: lg.conns,
        failed: lg.failed,
        conns_per_s: lg.conns_per_s,
        elapsed_s: lg.elapsed_s,
        max_lag_s: lg.max_lag_s,
        kernel_events: 0,
        expected_events: lg.expected_transitions,
        captured: None,
        captured_from: "",
        lost_reported: None,
        recursion_misses: None,
        prog_ns_per_run: None,
        all_progs_ns_per_event: None,
        cpu_s: None,
        cpu_s_per_m_events: None,
        peak_rss_kib: None,
        rss_before_kib: None,
        rss_after_kib: None,
        drain_s: None,
        startup_s,
        attached_line_s,
        summary_line: None,
        notes,
    };
    if lg.failed > 0 {
        res.notes.push(format!("{} connects failed", lg.failed));
    }
    if lg.timed_out {
        res.notes.push("generator hit its time bound".into());
    }

    if let (Some(p), Some((cpu0, progs0))) = (proc, before) {
        // Wait for the tool to finish writing what it has (its output stops growing).
        let min = if tool.is_tracer() { 2.0 } else { 1.0 };
        wait_quiet(
            &out_path,
            Duration::from_secs_f64(min),
            Duration::from_secs(60),
        );
        let progs1 = prog_stats(p.pid);
        res.rss_before_kib = rss_before_kib;
        res.rss_after_kib = status_kib(p.pid, "VmRSS:");
        let written = out_path.clone();
        // -q writes no records, and perf writes its data file in its own time.
        if !matches!(tool, Tool::TracerQuiet | Tool::Perf) {
            res.drain_s = last_write_mono_s(&written)
                .zip(counter.last_event_s())
                .map(|(w, k)| w - k);
        }
        let exit = p.stop(Duration::from_secs(120))?;
        res.peak_rss_kib = exit.maxrss_kib;
        if let Some(cpu0) = cpu0 {
            res.cpu_s = Some((exit.cpu_total_s - cpu0).max(0.0));
        }
        res.summary_line = exit.summary_line.clone();
        if tool != Tool::Perf {
            let (ns_run, total_ns, misses) = prog_delta(&progs0, &progs1);
            res.prog_ns_per_run = ns_run;
            res.recursion_misses = Some(misses);
            res.all_progs_ns_per_event = Some(total_ns as f64);
        }
        let (captured, from, lost) = count_output(tool, &out_path, &exit, g)?;
        res.captured = captured;
        res.captured_from = from;
        res.lost_reported = lost;
        if !ctx.keep_output {
            let _ = fs::remove_file(&out_path);
        }
        if let Some(code) = exit.code
            && code != 0
            && tool != Tool::Perf
        {
            let tail: Vec<&str> = exit
                .stderr
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(String::as_str)
                .collect();
            res.notes
                .push(format!("exit status {code}: {}", tail.join(" | ")));
        }
    }
    res.kernel_events = counter.count()?;
    drop(counter);
    if let Some(total) = res.all_progs_ns_per_event {
        res.all_progs_ns_per_event = Some(total / res.kernel_events.max(1) as f64);
    }
    if let Some(cpu) = res.cpu_s {
        res.cpu_s_per_m_events = Some(cpu / (res.kernel_events.max(1) as f64 / 1e6));
    }
    if res.kernel_events != res.expected_events {
        res.notes.push(format!(
            "kernel emitted {} transitions, formula says {}",
            res.kernel_events, res.expected_events
        ));
    }
    Ok(res)
}

fn run_loadgen(g: &loadgen::Args) -> anyhow::Result<loadgen::Report> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let out = Command::new(exe)
        .arg("loadgen")
        .args(g.to_cli())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the load generator")?;
    if !out.status.success() {
        bail!("load generator failed ({})", out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim())
        .with_context(|| format!("parsing the generator's report {:?}", line.trim()))
}

/// The command line of a tool, with its stdout file.
fn tool_command(ctx: &Ctx, tool: Tool, out: &Path) -> anyhow::Result<(Command, File)> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let tracer = || -> anyhow::Result<Command> {
        let bin = ctx.tracer.as_ref().context("no tracer binary")?;
        let mut c = Command::new(bin);
        c.args(["--color", "never"]);
        Ok(c)
    };
    let cmd = match tool {
        Tool::Untraced => bail!("untraced has no command"),
        Tool::TracerJson => {
            let mut c = tracer()?;
            c.args(["-o", "json"]);
            c
        }
        Tool::TracerText => tracer()?,
        Tool::TracerQuiet => {
            let mut c = tracer()?;
            c.arg("-q");
            c
        }
        Tool::CompareJson => {
            let bin = ctx.compare.as_ref().context("no --compare binary")?;
            let mut c = Command::new(bin);
            c.args(["--color", "never", "-o", "json"]);
            c
        }
        Tool::TracerJsonNoEvents => {
            let mut c = tracer()?;
            c.args(["-o", "json", "--no-events"]);
            c
        }
        Tool::TracerJsonConnections => {
            let mut c = tracer()?;
            c.args(["-o", "json", "--view", "connections"]);
            c
        }
        Tool::Tcpstates => Command::new("/usr/sbin/tcpstates"),
        Tool::Bcc => {
            let mut c = Command::new("/usr/sbin/tcpstates-bpfcc");
            // Python buffers stdout to a file in blocks either way; this only makes sure the
            // interpreter does not hold back its output at exit.
            c.env("PYTHONUNBUFFERED", "0");
            c
        }
        Tool::Bpftrace => {
            let (s, d) = match ctx.family {
                Family::V4 => ("args->saddr", "args->daddr"),
                Family::V6 => ("args->saddr_v6", "args->daddr_v6"),
            };
            // The same fields tcpstates prints: ports first so the bench can count by port.
            let script = format!(
                "tracepoint:sock:inet_sock_set_state {{ printf(\"%d %d %llu %llx %d %s %s %s %d %d\\n\", args->sport, args->dport, nsecs, args->skaddr, pid, comm, ntop({s}), ntop({d}), args->oldstate, args->newstate); }}"
            );
            let mut c = Command::new("bpftrace");
            c.args(["-e", &script]);
            c
        }
        Tool::Perf => {
            let mut c = Command::new("perf");
            c.args([
                "record",
                "-q",
                "-B",
                "-a",
                "-e",
                "sock:inet_sock_set_state",
                "-o",
            ])
            .arg(out.with_extension("perf.data"));
            c
        }
    };
    Ok((cmd, file))
}

/// Why a tool cannot run here, if it cannot.
fn unavailable(tool: Tool) -> Option<String> {
    let need = |bin: &str, pkg: &str| {
        (!Path::new(bin).exists() && which(bin).is_none())
            .then(|| format!("{bin} not installed (Debian package {pkg}; --peers installs it)"))
    };
    match tool {
        Tool::Tcpstates => need("/usr/sbin/tcpstates", "libbpf-tools"),
        Tool::Bcc => need("/usr/sbin/tcpstates-bpfcc", "bpfcc-tools").or_else(|| {
            let build = format!("/lib/modules/{}/build", uname_r());
            (!Path::new(&build).exists()).then(|| {
                format!(
                    "bcc needs kernel headers at {build} (--peers puts Debian's 6.1 headers there)"
                )
            })
        }),
        Tool::Bpftrace => need("bpftrace", "bpftrace"),
        Tool::Perf => need("perf", "linux-perf"),
        _ => None,
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        return Path::new(bin).exists().then(|| PathBuf::from(bin));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn install_peers(tools: &[Tool]) -> anyhow::Result<()> {
    let mut pkgs = Vec::new();
    for (t, pkg) in [
        (Tool::Tcpstates, "libbpf-tools"),
        (Tool::Bcc, "bpfcc-tools"),
        (Tool::Bpftrace, "bpftrace"),
        (Tool::Perf, "linux-perf"),
    ] {
        if tools.contains(&t) {
            if crate::deb_installed(pkg) {
                eprintln!("bench: {pkg} already installed");
            } else {
                pkgs.push(pkg);
            }
        }
    }
    let modules = PathBuf::from(format!("/lib/modules/{}", uname_r()));
    let want_headers = tools.contains(&Tool::Bcc)
        && !(modules.join("build").exists() && modules.join("source").exists());
    if want_headers && !crate::deb_installed("linux-headers-amd64") {
        // bcc compiles its program against kernel headers; there are none for this kernel in
        // the archive, and bookworm's 6.1 headers work for tcpstates (6.12's do not).
        pkgs.push("linux-headers-amd64");
    }
    if !pkgs.is_empty() {
        eprintln!("bench: installing the peers: {}", pkgs.join(" "));
        crate::apt_install(&pkgs)?;
    }
    if want_headers {
        // Debian's layout: build -> the arch headers, source -> the common ones (bcc and
        // bpftrace need both once `build` exists).
        let newest = |suffix: &str| -> anyhow::Result<PathBuf> {
            fs::read_dir("/usr/src")
                .context("listing /usr/src")?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("linux-headers-6.1.") && n.ends_with(suffix))
                })
                .max()
                .with_context(|| format!("no /usr/src/linux-headers-6.1.*{suffix}"))
        };
        fs::create_dir_all(&modules).with_context(|| format!("creating {}", modules.display()))?;
        for (name, suffix) in [("build", "-amd64"), ("source", "-common")] {
            let link = modules.join(name);
            if link.exists() {
                continue;
            }
            let _ = fs::remove_file(&link); // a dangling link
            let target = newest(suffix)?;
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
            eprintln!(
                "bench: bcc: linked {} -> {} (no headers exist for this kernel)",
                link.display(),
                target.display()
            );
        }
    }
    Ok(())
}

/// The tracer to benchmark: given, or built now (into CARGO_TARGET_DIR if set), then copied
/// into the output directory so a rebuild during the benchmark cannot swap it.
fn tracer_binary(
    root: &Path,
    cargo: &mut Command,
    given: Option<&Path>,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let src = match given {
        Some(p) => p.to_path_buf(),
        None => {
            crate::status(cargo.args(["build", "--release", "-p", "tracer"]))?;
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            target.join("release/tracer")
        }
    };
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let dst = out.join("tracer-under-test");
    fs::copy(&src, &dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(dst)
}

// ---------------------------------------------------------------------------------------------
// Counting what the tools captured

fn count_output(
    tool: Tool,
    out: &Path,
    exit: &Exit,
    g: &loadgen::Args,
) -> anyhow::Result<(Option<u64>, &'static str, Option<u64>)> {
    let lo = g.port;
    let hi = g.port + g.listeners() as u16 - 1;
    let ours = |p: u16| p >= lo && p <= hi;
    let port_tok = |t: &str| t.parse::<u16>().is_ok_and(ours);
    let lines = || -> anyhow::Result<_> {
        let f = File::open(out).with_context(|| format!("opening {}", out.display()))?;
        Ok(BufReader::with_capacity(1 << 20, f).split(b'\n'))
    };
    // tracer's JSON records of one type, picked by a cheap check before parsing (the type is
    // near the start of the line).
    let records = |ty: &str| -> anyhow::Result<_> {
        let key = format!(r#""type":"{ty}""#).into_bytes();
        Ok(lines()?.filter_map(move |l| match l {
            Ok(l) => {
                let head = &l[..l.len().min(48)];
                head.windows(key.len())
                    .any(|w| w == key.as_slice())
                    .then_some(Ok(l))
            }
            Err(e) => Some(Err(anyhow::Error::from(e).context("reading tracer output"))),
        }))
    };
    Ok(match tool {
        Tool::Untraced => (None, "", None),
        Tool::TracerJson | Tool::TracerJsonNoEvents | Tool::CompareJson => {
            #[derive(Deserialize)]
            struct T {
                sport: u16,
                dport: u16,
                source: String,
            }
            let mut n = 0;
            for l in records("transition")? {
                let t: T = serde_json::from_slice(&l?).context("parsing a transition record")?;
                if t.source == "tracepoint" && (ours(t.sport) || ours(t.dport)) {
                    n += 1;
                }
            }
            (Some(n), "JSON transition records on the ports", exit.lost)
        }
        Tool::TracerJsonConnections => {
            #[derive(Deserialize)]
            struct C {
                sport: u16,
                dport: u16,
                states: Vec<String>,
                durations_ns: Vec<Option<u64>>,
                incomplete: bool,
            }
            let mut n = 0;
            for l in records("connection")? {
                let c: C = serde_json::from_slice(&l?).context("parsing a connection record")?;
                if !(ours(c.sport) || ours(c.dport)) {
                    continue;
                }
                let steps = c.states.len().saturating_sub(1) as u64;
                n += if c.incomplete {
                    // A state the tracer did not see entered has null durations on both
                    // sides (and one unseen transition): counting only steps with known
                    // durations is a lower bound.
                    c.durations_ns
                        .iter()
                        .skip(1)
                        .filter(|d| d.is_some())
                        .count() as u64
                        + u64::from(steps > 0)
                } else {
                    steps
                };
            }
            (
                Some(n),
                "state changes in the connection records on the ports (exact for complete records, a lower bound for incomplete ones)",
                exit.lost,
            )
        }
        Tool::TracerText => {
            let mut n = 0;
            let suffixes: Vec<String> = (lo..=hi).map(|p| format!(":{p}")).collect();
            for l in lines()? {
                let l = l.context("reading tracer output")?;
                let l = String::from_utf8_lossy(&l);
                // Transition rows start with the time; timeline blocks are indented or "──".
                if l.starts_with(|c: char| c.is_ascii_digit())
                    && l.contains(" -> ")
                    && !l.contains("(sock_diag)")
                    && l.split_whitespace()
                        .any(|t| suffixes.iter().any(|s| t.ends_with(s.as_str())))
                {
                    n += 1;
                }
            }
            (Some(n), "text transition rows on the ports", exit.lost)
        }
        Tool::TracerQuiet => (
            exit.transitions,
            "tracer's exit line (all TCP on the host)",
            exit.lost,
        ),
        Tool::Tcpstates | Tool::Bcc | Tool::Bpftrace => {
            // tcpstates / bcc: SKADDR C-PID C-COMM LADDR LPORT RADDR RPORT OLD -> NEW MS;
            // our bpftrace script: SPORT DPORT ….
            let mut n = 0;
            // Their loss messages ("lost N events on CPU #1", bcc's "Possibly lost N
            // samples", bpftrace's "Lost N events") go to stderr or, for bpftrace, stdout.
            let mut lost = exit
                .stderr
                .iter()
                .filter_map(|l| lost_message(l))
                .sum::<u64>();
            for l in lines()? {
                let l = l.context("reading output")?;
                let l = String::from_utf8_lossy(&l);
                let t: Vec<&str> = l.split_whitespace().collect();
                let hit = if tool == Tool::Bpftrace {
                    t.len() >= 10 && (port_tok(t[0]) || port_tok(t[1]))
                } else {
                    t.iter()
                        .position(|&x| x == "->")
                        .is_some_and(|a| a >= 4 && (port_tok(t[a - 4]) || port_tok(t[a - 2])))
                };
                if hit {
                    n += 1;
                } else if let Some(v) = lost_message(&l) {
                    lost += v;
                }
            }
            (Some(n), "output rows on the ports", Some(lost))
        }
        Tool::Perf => {
            let data = out.with_extension("perf.data");
            let r = perf_count(&data, &ours);
            let _ = fs::remove_file(&data);
            let (n, lost) = r?;
            (Some(n), "perf script samples on the ports", Some(lost))
        }
    })
}

/// N from a peer's loss message: "lost N events…", "Possibly lost N samples", "Lost N events".
fn lost_message(l: &str) -> Option<u64> {
    let l = l.trim();
    let rest = l
        .strip_prefix("Possibly lost ")
        .or_else(|| l.strip_prefix("lost "))
        .or_else(|| l.strip_prefix("Lost "))?;
    let (n, tail) = rest.split_once(' ')?;
    (tail.starts_with("events") || tail.starts_with("samples"))
        .then(|| n.parse().ok())
        .flatten()
}

/// Samples on our ports in a perf.data, and the samples perf says it lost.
fn perf_count(data: &Path, ours: &dyn Fn(u16) -> bool) -> anyhow::Result<(u64, u64)> {
    let mut child = Command::new("perf")
        .args(["script", "-F", "trace:trace", "-i"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running perf script")?;
    let stdout = child.stdout.take().context("perf script stdout")?;
    let stderr = child.stderr.take().context("perf script stderr")?;
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut n = 0;
    for l in BufReader::with_capacity(1 << 20, stdout).split(b'\n') {
        let l = l.context("reading perf script")?;
        let l = String::from_utf8_lossy(&l);
        let port = |key: &str| {
            l.split_whitespace()
                .find_map(|t| t.strip_prefix(key))
                .and_then(|v| v.parse::<u16>().ok())
        };
        if port("sport=").is_some_and(ours) || port("dport=").is_some_and(ours) {
            n += 1;
        }
    }
    let _ = child.wait();
    let err = err_thread.join().unwrap_or_default();
    // perf report --stats counts the samples inside its LOST records.
    let stats = Command::new("perf")
        .args(["report", "--stats", "-i"])
        .arg(data)
        .output()
        .context("running perf report --stats")?;
    let text = String::from_utf8_lossy(&stats.stdout);
    let mut lost = 0;
    for l in text.lines() {
        let l = l.trim();
        if let Some(rest) = l
            .strip_prefix("LOST_SAMPLES events:")
            .or_else(|| l.strip_prefix("LOST events:"))
            && let Some(v) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            lost += v;
        }
    }
    if !err.trim().is_empty() {
        eprintln!(
            "bench:   perf script: {}",
            err.trim().lines().next().unwrap_or("")
        );
    }
    Ok((n, lost))
}

// ---------------------------------------------------------------------------------------------
// A running tool

struct Proc {
    child: Child,
    pid: i32,
    started: Instant,
    stderr: Arc<Mutex<Vec<(f64, String)>>>,
    reader: Option<thread::JoinHandle<()>>,
}

struct Exit {
    code: Option<i32>,
    maxrss_kib: Option<u64>,
    cpu_total_s: f64,
    stderr: Vec<String>,
    summary_line: Option<String>,
    transitions: Option<u64>,
    lost: Option<u64>,
}

impl Proc {
    fn spawn(cmd: &mut Command, stdout: File) -> anyhow::Result<Self> {
        let started = Instant::now();
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires. A bench started from
        // a non-interactive shell's `&` inherits SIGINT ignored, and Python (bcc) keeps an
        // ignored SIGINT ignored: it would then not stop on our SIGINT.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().context("no stderr pipe")?;
        let reader = {
            let stderr = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = stderr.lock() {
                        v.push((started.elapsed().as_secs_f64(), line));
                    }
                }
            })
        };
        Ok(Self {
            child,
            pid,
            started,
            stderr,
            reader: Some(reader),
        })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn stderr_tail(&self) -> String {
        let v = self.stderr.lock().map(|v| v.clone()).unwrap_or_default();
        let tail: Vec<String> = v
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(|(_, l)| l.clone())
            .collect();
        format!("stderr: {}", tail.join(" | "))
    }

    fn wait_for_stderr(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(v) = self.stderr.lock()
                && let Some((t, _)) = v.iter().find(|(_, l)| l.starts_with(prefix))
            {
                return Ok(*t);
            }
            if self.exited() {
                bail!("exited before printing {prefix:?}; {}", self.stderr_tail());
            }
            if Instant::now() > deadline {
                bail!("no {prefix:?} within {timeout:?}; {}", self.stderr_tail());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Seconds from exec until one of the process's BPF programs has run: meanwhile a
    /// listening socket is opened and closed every 2 ms (CLOSE -> LISTEN -> CLOSE, no packets).
    fn wait_for_first_event(&mut self, timeout: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if prog_stats(self.pid).values().any(|p| p.run_cnt > 0) {
                return Ok(self.started.elapsed().as_secs_f64());
            }
            if self.exited() {
                bail!("exited during start-up; {}", self.stderr_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "no BPF program of it ran within {timeout:?} (is kernel.bpf_stats_enabled on?); {}",
                    self.stderr_tail()
                );
            }
            // Port 0: the kernel picks one in the host's ephemeral range, never ours.
            if let Ok(l) = TcpListener::bind("127.0.0.1:0") {
                drop(l);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// For perf: seconds until it has a perf event open, plus a moment for it to enable it.
    fn wait_for_perf_event(&mut self, timeout: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let has = fs::read_dir(format!("/proc/{}/fd", self.pid))
                .map(|d| {
                    d.filter_map(Result::ok).any(|e| {
                        fs::read_link(e.path())
                            .is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
                    })
                })
                .unwrap_or(false);
            if has {
                let t = self.started.elapsed().as_secs_f64();
                thread::sleep(Duration::from_millis(300));
                return Ok(t);
            }
            if self.exited() {
                bail!("exited during start-up; {}", self.stderr_tail());
            }
            if Instant::now() > deadline {
                bail!("no perf event within {timeout:?}; {}", self.stderr_tail());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
    }

    /// SIGINT, then wait (SIGKILL after `timeout`); rusage from wait4.
    fn stop(mut self, timeout: Duration) -> anyhow::Result<Exit> {
        self.interrupt();
        let deadline = Instant::now() + timeout;
        let mut status = 0;
        // SAFETY: rusage is plain data; all-zero is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let mut killed = false;
        loop {
            // SAFETY: wait4 on our own child, writing into locals we own. std's Child is not
            // waited on afterwards (it would find the pid gone, which it tolerates).
            let rc = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if rc == self.pid {
                break;
            }
            if rc < 0 {
                return Err(std::io::Error::last_os_error()).context("wait4");
            }
            if Instant::now() > deadline && !killed {
                eprintln!("bench:   process {} ignored SIGINT: killing it", self.pid);
                // SAFETY: as above.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                killed = true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr: Vec<String> = self
            .stderr
            .lock()
            .map(|v| v.iter().map(|(_, l)| l.clone()).collect())
            .unwrap_or_default();
        let summary_line = stderr
            .iter()
            .find(|l| l.starts_with("tracer: stopped"))
            .cloned();
        let (transitions, lost) = summary_line
            .as_deref()
            .map_or((None, None), parse_tracer_summary);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Exit {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            maxrss_kib: u64::try_from(ru.ru_maxrss).ok(),
            cpu_total_s: tv(ru.ru_utime) + tv(ru.ru_stime),
            stderr,
            summary_line,
            transitions,
            lost,
        })
    }
}

/// "tracer: stopped (SIGINT): N transitions, …, lost L (…)" → (N, L).
fn parse_tracer_summary(l: &str) -> (Option<u64>, Option<u64>) {
    let after = |key: &str| -> Option<u64> {
        let i = l.find(key)? + key.len();
        l[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let transitions = l
        .split_once("): ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok());
    (transitions, after(", lost "))
}

/// Waits until a file stops growing for `quiet` (at most `max`).
fn wait_quiet(path: &Path, quiet: Duration, max: Duration) {
    let start = Instant::now();
    let mut last = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut since = Instant::now();
    while start.elapsed() < max {
        thread::sleep(Duration::from_millis(100));
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len != last {
            last = len;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

/// utime + stime of a process so far, in seconds.
fn cpu_ticks(pid: i32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends comm: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / hz)
}

fn status_kib(pid: i32, key: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Clone, Copy, Debug, Default)]
struct ProgStat {
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
}

/// The BPF programs a process holds (by prog_id), from /proc/PID/fdinfo of its prog fds.
fn prog_stats(pid: i32) -> BTreeMap<u64, ProgStat> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let is_prog = fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(id) = field("prog_id:") {
            out.insert(
                id,
                ProgStat {
                    run_time_ns: field("run_time_ns:").unwrap_or(0),
                    run_cnt: field("run_cnt:").unwrap_or(0),
                    recursion_misses: field("recursion_misses:").unwrap_or(0),
                },
            );
        }
    }
    out
}

/// (ns per run of the busiest program, total ns of all programs, recursion misses of all).
fn prog_delta(a: &BTreeMap<u64, ProgStat>, b: &BTreeMap<u64, ProgStat>) -> (Option<f64>, u64, u64) {
    let mut busiest: Option<(u64, u64)> = None;
    let mut total_ns = 0;
    let mut misses = 0;
    for (id, s1) in b {
        let s0 = a.get(id).copied().unwrap_or_default();
        let cnt = s1.run_cnt.saturating_sub(s0.run_cnt);
        let ns = s1.run_time_ns.saturating_sub(s0.run_time_ns);
        total_ns += ns;
        misses += s1.recursion_misses.saturating_sub(s0.recursion_misses);
        if busiest.is_none_or(|(c, _)| cnt > c) {
            busiest = Some((cnt, ns));
        }
    }
    let ns_run = busiest
        .filter(|&(c, _)| c > 0)
        .map(|(c, ns)| ns as f64 / c as f64);
    (ns_run, total_ns, misses)
}

// ---------------------------------------------------------------------------------------------
// Ground truth: a tracefs instance

struct TraceCount {
    dir: PathBuf,
}

impl TraceCount {
    fn new(g: &loadgen::Args) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!(
            "{TRACEFS}/instances/xtask_bench_{}",
            std::process::id()
        ));
        if dir.exists() {
            let _ = fs::write(dir.join("events/sock/inet_sock_set_state/enable"), "0");
            fs::remove_dir(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::create_dir(&dir)
            .with_context(|| format!("creating tracefs instance {}", dir.display()))?;
        let me = Self { dir };
        // Small buffer: only entries + overrun are read, and a wrapping buffer counts both.
        fs::write(me.dir.join("buffer_size_kb"), "64").context("sizing the tracefs buffer")?;
        // CLOCK_MONOTONIC timestamps: the last event's time is compared with the tool's
        // last write ([`last_write_mono_s`]).
        fs::write(me.dir.join("trace_clock"), "mono").context("setting the trace clock")?;
        let lo = g.port;
        let hi = u64::from(g.port) + g.listeners() - 1;
        let filter =
            format!("(sport >= {lo} && sport <= {hi}) || (dport >= {lo} && dport <= {hi})");
        let ev = me.dir.join("events/sock/inet_sock_set_state");
        fs::write(ev.join("filter"), &filter)
            .with_context(|| format!("setting tracefs filter {filter:?}"))?;
        fs::write(ev.join("enable"), "1")
            .context("enabling sock:inet_sock_set_state in tracefs")?;
        Ok(me)
    }

    fn count(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for e in fs::read_dir(self.dir.join("per_cpu")).context("listing per_cpu")? {
            let p = e?.path().join("stats");
            let s = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            for l in s.lines() {
                for key in ["entries:", "overrun:"] {
                    if let Some(v) = l.strip_prefix(key) {
                        total += v.trim().parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        Ok(total)
    }
}

impl TraceCount {
    /// The last event's time (`CLOCK_MONOTONIC` seconds): the buffer keeps the newest
    /// entries when it wraps.
    fn last_event_s(&self) -> Option<f64> {
        let text = fs::read_to_string(self.dir.join("trace")).ok()?;
        text.lines()
            .filter(|l| l.contains("inet_sock_set_state:"))
            .filter_map(|l| {
                // "comm-pid [cpu] flags 12345.678901: inet_sock_set_state: …"
                let head = l.split(": inet_sock_set_state:").next()?;
                head.split_whitespace().last()?.parse::<f64>().ok()
            })
            .reduce(f64::max)
    }
}

/// When `path` was last written, on the `CLOCK_MONOTONIC` time line (its mtime is wall
/// clock; the two clocks' offset is read now). `None` for an empty file.
fn last_write_mono_s(path: &Path) -> Option<f64> {
    let m = fs::metadata(path).ok()?;
    if m.len() == 0 {
        return None;
    }
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let clock = |id: libc::clockid_t| {
        // SAFETY: clock_gettime writes into a local timespec.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(id, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    let offset = clock(libc::CLOCK_REALTIME) - clock(libc::CLOCK_MONOTONIC);
    Some(mtime - offset)
}

impl Drop for TraceCount {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("events/sock/inet_sock_set_state/enable"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("instances").is_dir() {
        return Ok(());
    }
    crate::status(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))
        .context("mounting tracefs")
}

/// kernel.bpf_stats_enabled on for the benchmark; restored when dropped.
struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let old = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.old.trim());
    }
}

fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load BPF programs and create network namespaces: run as root");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Serialize)]
struct Report {
    machine: BTreeMap<String, String>,
    command: String,
    wall_s: f64,
    skipped: BTreeMap<String, String>,
    summary: Vec<Summary>,
    runs: Vec<RunResult>,
}

#[derive(Serialize)]
struct Summary {
    workload: String,
    tool: Tool,
    runs: usize,
    conns_per_s: f64,
    ratio_mean: Option<f64>,
    ratio_min: Option<f64>,
    ratio_max: Option<f64>,
    captured: Option<u64>,
    kernel_events: u64,
    lost_reported: Option<u64>,
    recursion_misses: Option<u64>,
    prog_ns_per_run: Option<Spread>,
    all_progs_ns_per_event: Option<f64>,
    cpu_s_per_m_events: Option<Spread>,
    peak_rss_kib: Option<u64>,
    drain_s: Option<Spread>,
    startup_s: Option<f64>,
    max_lag_s: f64,
    captured_from: &'static str,
}

/// Mean, least and most of a figure over the runs: on a shared machine one slow run can
/// move a mean a long way (the in-kernel time of one build measured 283–543 ns in six runs).
#[derive(Clone, Copy, Debug, Serialize)]
struct Spread {
    mean: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Option<Self> {
        Some(Self {
            mean: mean(v)?,
            min: v.iter().copied().reduce(f64::min)?,
            max: v.iter().copied().reduce(f64::max)?,
        })
    }

    /// `mean (min–max)` with `p` decimals; the mean alone for a single run.
    fn show(s: Option<Self>, p: usize) -> String {
        match s {
            None => "–".into(),
            Some(s) if s.min == s.max => format!("{:.p$}", s.mean),
            Some(s) => format!("{:.p$} ({:.p$}–{:.p$})", s.mean, s.min, s.max),
        }
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn summarise(workloads: &[Workload], runs: &[RunResult]) -> Vec<Summary> {
    let mut out = Vec::new();
    for w in workloads {
        let base: Vec<f64> = runs
            .iter()
            .filter(|r| r.workload == w.name && r.tool == Tool::Untraced)
            .map(|r| r.conns_per_s)
            .collect();
        let base = mean(&base);
        for &tool in &w.tools {
            let rs: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.workload == w.name && r.tool == tool)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let each = |g: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<f64> {
                rs.iter().filter_map(|r| g(r)).collect()
            };
            let f = |g: &dyn Fn(&RunResult) -> Option<f64>| mean(&each(g));
            let sum = |g: &dyn Fn(&RunResult) -> Option<u64>| {
                rs.iter().map(|r| g(r)).sum::<Option<u64>>()
            };
            let ratios: Vec<f64> = base
                .map(|b| rs.iter().map(|r| r.conns_per_s / b).collect())
                .unwrap_or_default();
            out.push(Summary {
                workload: w.name.clone(),
                tool,
                runs: rs.len(),
                conns_per_s: f(&|r| Some(r.conns_per_s)).unwrap_or(0.0),
                ratio_mean: mean(&ratios),
                ratio_min: ratios.iter().copied().reduce(f64::min),
                ratio_max: ratios.iter().copied().reduce(f64::max),
                captured: sum(&|r| r.captured),
                kernel_events: rs.iter().map(|r| r.kernel_events).sum(),
                lost_reported: sum(&|r| r.lost_reported),
                recursion_misses: sum(&|r| r.recursion_misses),
                prog_ns_per_run: Spread::of(&each(&|r| r.prog_ns_per_run)),
                all_progs_ns_per_event: f(&|r| r.all_progs_ns_per_event),
                cpu_s_per_m_events: Spread::of(&each(&|r| r.cpu_s_per_m_events)),
                peak_rss_kib: rs.iter().filter_map(|r| r.peak_rss_kib).max(),
                drain_s: Spread::of(&each(&|r| r.drain_s)),
                startup_s: f(&|r| r.startup_s),
                max_lag_s: rs.iter().map(|r| r.max_lag_s).fold(0.0, f64::max),
                captured_from: rs[0].captured_from,
            });
        }
    }
    out
}

fn markdown(r: &Report) -> String {
    let o = |v: Option<f64>, p: usize| v.map_or_else(|| "–".into(), |v| format!("{v:.p$}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | tool | runs | conns/s | × untraced (min–max) | captured / emitted | lost (reported) | recursion misses | ns per run (set_state prog) | all progs ns / event | CPU s / M events | peak RSS MiB | last event → last write s | start-up s |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for x in &r.summary {
        let ratio = match (x.ratio_mean, x.ratio_min, x.ratio_max) {
            (Some(m), Some(lo), Some(hi)) if x.tool != Tool::Untraced => {
                format!("{m:.2} ({lo:.2}–{hi:.2})")
            }
            (Some(m), ..) => format!("{m:.2}"),
            _ => "–".into(),
        };
        let captured = match x.captured {
            Some(c) if x.tool != Tool::TracerQuiet => format!(
                "{c} / {} ({:.3}%)",
                x.kernel_events,
                100.0 * c as f64 / x.kernel_events.max(1) as f64
            ),
            Some(c) => format!("{c}* / {}", x.kernel_events),
            None => format!("– / {}", x.kernel_events),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.workload,
            x.tool.name(),
            x.runs,
            x.conns_per_s,
            ratio,
            captured,
            x.lost_reported
                .map_or_else(|| "–".into(), |v| v.to_string()),
            x.recursion_misses
                .map_or_else(|| "–".into(), |v| v.to_string()),
            Spread::show(x.prog_ns_per_run, 0),
            o(x.all_progs_ns_per_event, 0),
            Spread::show(x.cpu_s_per_m_events, 2),
            o(x.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
            Spread::show(x.drain_s, 2),
            o(x.startup_s, 3),
        );
    }
    let _ = writeln!(
        s,
        "\nconns/s: the generator's rate (mean over runs); × untraced: each run's rate over the untraced mean of the same workload. captured: transitions on the generator's ports in the tool's output; emitted: counted by a tracefs instance (\\* tracer -q: its exit line's count, all TCP on the host). lost: as the tool reports it. Recursion misses: bpf_prog_info of the tool's programs (runs the kernel skipped). ns per run: run_time_ns / run_cnt of the tool's busiest program (kernel.bpf_stats_enabled=1). CPU: the tool's user + system time from the start of the load to its exit, per million emitted transitions. Peak RSS: ru_maxrss. Last event → last write: from the last transition the kernel emitted on the generator's ports (tracefs, mono clock) to the tool's last write to its output before it was stopped (its mtime; none for -q and perf; the tracers are not filtered, so other TCP traffic on the host moves it). Start-up: exec until its program ran on an event (perf: until its perf event was open)."
    );
    if !r.skipped.is_empty() {
        let _ = writeln!(s, "\nSkipped:");
        for (t, why) in &r.skipped {
            let _ = writeln!(s, "- {t}: {why}");
        }
    }
    let _ = writeln!(s, "\nPer run:\n");
    let _ = writeln!(
        s,
        "| workload | tool | rep | conns | conns/s | s | lag s | emitted | expected | captured | lost | misses | ns/run | CPU s | RSS MiB | RSS before → after MiB | drain s | start s | notes |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for x in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.workload,
            x.tool.name(),
            x.rep,
            x.conns,
            x.conns_per_s,
            x.elapsed_s,
            x.max_lag_s,
            x.kernel_events,
            x.expected_events,
            x.captured.map_or_else(|| "–".into(), |v| v.to_string()),
            x.lost_reported
                .map_or_else(|| "–".into(), |v| v.to_string()),
            x.recursion_misses
                .map_or_else(|| "–".into(), |v| v.to_string()),
            o(x.prog_ns_per_run, 0),
            o(x.cpu_s, 2),
            o(x.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
            match (x.rss_before_kib, x.rss_after_kib) {
                (Some(a), Some(b)) =>
                    format!("{:.1} → {:.1}", a as f64 / 1024.0, b as f64 / 1024.0),
                _ => "–".into(),
            },
            o(x.drain_s, 2),
            o(x.startup_s, 3),
            x.notes.join("; "),
        );
    }
    let _ = writeln!(s, "\nMachine:");
    for (k, v) in &r.machine {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(s, "\nCommand: `{}` ({:.0} s)", r.command, r.wall_s);
    s
}

fn machine_facts(tracer: Option<&Path>) -> BTreeMap<String, String> {
    let sh = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mut m = BTreeMap::new();
    m.insert("kernel".into(), sh("uname", &["-srm"]));
    m.insert("cpus".into(), sh("nproc", &[]));
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    m.insert("cpu".into(), cpu);
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    m.insert("os".into(), os);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    m.insert("memory".into(), mem);
    m.insert("date".into(), sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    if let Some(t) = tracer {
        m.insert("tracer".into(), sh(&t.to_string_lossy(), &["--version"]));
    }
    m.insert(
        "git".into(),
        sh("git", &["describe", "--always", "--dirty"]),
    );
    for pkg in ["libbpf-tools", "bpfcc-tools", "bpftrace", "linux-perf"] {
        let v = sh("dpkg-query", &["-W", "-f=${Version}", pkg]);
        if !v.is_empty() {
            m.insert(pkg.into(), v);
        }
    }
    m
}

fn uname_r() -> String {
    Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The generator's first listener port for this invocation. The tracepoint is global, so a
/// generator someone else runs at the same time on the same port (in any namespace) would be
/// counted as ours; a port picked from the pid makes that unlikely. Above 65000 (outside the
/// ephemeral ranges), with room for the listeners of a hold workload.
fn listen_port() -> u16 {
    65_001 + (std::process::id() % 400) as u16
}

fn human_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}
