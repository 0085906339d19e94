//! One run: one tool started (or none), one generator run, the tool stopped, measured.
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::loadgen::{self, Family};

use super::{
    Tool,
    count::count_output,
    proc::{
        Exit, Proc, ProgStat, cpu_ticks, first_event, prog_delta, prog_name, prog_stats, slug,
        status_kib, uname_r, wait_quiet,
    },
    tmux::TmuxProc,
    tracefs::{TraceCount, last_write_mono_s},
};

/// A running tool: a child with its output in a file, or one in a tmux session.
enum Running {
    Child(Proc),
    Tmux(TmuxProc),
}

impl Running {
    fn pid(&self) -> i32 {
        match self {
            Self::Child(p) => p.pid,
            Self::Tmux(p) => p.pid,
        }
    }

    fn wait_for_first_event(&mut self, timeout: Duration) -> anyhow::Result<f64> {
        match self {
            Self::Child(p) => p.wait_for_first_event(timeout),
            Self::Tmux(p) => first_event(p.pid, p.started, timeout, || {
                p.exited().then(|| p.stderr_tail())
            }),
        }
    }

    fn wait_for_stderr(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<f64> {
        match self {
            Self::Child(p) => p.wait_for_stderr(prefix, timeout),
            Self::Tmux(p) => p.wait_for_stderr(prefix, timeout),
        }
    }

    fn stderr_tail(&self) -> String {
        match self {
            Self::Child(p) => p.stderr_tail(),
            Self::Tmux(p) => p.stderr_tail(),
        }
    }

    fn interrupt(&self) {
        match self {
            Self::Child(p) => p.interrupt(),
            Self::Tmux(p) => p.interrupt(),
        }
    }

    fn stop(self, timeout: Duration) -> anyhow::Result<Exit> {
        match self {
            Self::Child(p) => p.stop(timeout),
            Self::Tmux(p) => p.stop(timeout),
        }
    }
}

pub(super) struct Ctx {
    pub(super) tracer: Option<PathBuf>,
    /// `--compare`: the second build.
    pub(super) compare: Option<PathBuf>,
    pub(super) runs_dir: PathBuf,
    pub(super) keep_output: bool,
    /// `--only-ports`: the tracer tools get `-p` for the generator's ports.
    pub(super) only_ports: bool,
    pub(super) family: Family,
}

pub(super) struct Workload {
    pub(super) name: String,
    pub(super) gen_args: loadgen::Args,
    pub(super) tools: Vec<Tool>,
    pub(super) reps: u32,
}

#[derive(Clone, Debug, Serialize)]
pub(super) struct RunResult {
    pub(super) workload: String,
    pub(super) tool: Tool,
    pub(super) rep: u32,
    pub(super) conns: u64,
    pub(super) failed: u64,
    pub(super) conns_per_s: f64,
    pub(super) elapsed_s: f64,
    /// Rate mode: the generator's worst lag behind its schedule.
    pub(super) max_lag_s: f64,
    /// Counted by the tracefs instance.
    pub(super) kernel_events: u64,
    /// 10 per connection (6 with RSTs) + 2 per listener.
    pub(super) expected_events: u64,
    /// Transitions on the generator's ports found in the tool's output.
    pub(super) captured: Option<u64>,
    /// How `captured` was counted.
    pub(super) captured_from: &'static str,
    /// Lost events as the tool itself reports them.
    pub(super) lost_reported: Option<u64>,
    /// Sum over the tool's BPF programs during the load.
    pub(super) recursion_misses: Option<u64>,
    /// Recursion misses of the tool's program(s) on `sock:inet_sock_set_state` during the
    /// load: transitions the kernel skipped, of any socket on the host (the programs run for
    /// every TCP transition; the generator's are most of them during a load). A peer's only
    /// programs are there; tracer's other programs' misses lose context events, accept
    /// records or counter records, never a transition.
    pub(super) set_state_misses: Option<u64>,
    /// Each of the tool's BPF programs during the load (`/proc/PID/fdinfo`).
    pub(super) programs: Vec<ProgRun>,
    /// tracer: its exit line's "ring buffer full" (events of every kind the ring could not
    /// take, the reader's queue at its bound included).
    pub(super) lost_ring_full: Option<u64>,
    /// run_time_ns / run_cnt of the tool's busiest program (the inet_sock_set_state one).
    pub(super) prog_ns_per_run: Option<f64>,
    /// All the tool's programs' run time during the load / kernel_events.
    pub(super) all_progs_ns_per_event: Option<f64>,
    /// The tool's CPU (user + system) from just before the load until it exited.
    pub(super) cpu_s: Option<f64>,
    pub(super) cpu_s_per_m_events: Option<f64>,
    pub(super) peak_rss_kib: Option<u64>,
    /// VmRSS just before the load and once its output had stopped growing after it.
    pub(super) rss_before_kib: Option<u64>,
    pub(super) rss_after_kib: Option<u64>,
    /// From the last event the kernel emitted on the generator's ports (tracefs, `mono`
    /// clock) to the tool's last write to its output before it was stopped: how far behind
    /// the kernel its output ended.
    pub(super) drain_s: Option<f64>,
    /// Exec until its program ran on an event (perf: until its perf event was open).
    pub(super) startup_s: Option<f64>,
    /// tracer only: exec until its "attached" line.
    pub(super) attached_line_s: Option<f64>,
    pub(super) summary_line: Option<String>,
    pub(super) notes: Vec<String>,
}

/// One BPF program of a tool during the load.
#[derive(Clone, Debug, Serialize)]
pub(super) struct ProgRun {
    pub(super) id: u64,
    /// As the kernel keeps it (at most 15 characters).
    pub(super) name: String,
    pub(super) runs: u64,
    pub(super) recursion_misses: u64,
}

impl ProgRun {
    /// Whether the program runs on `sock:inet_sock_set_state` (a miss loses a transition):
    /// tracer's transition program, or any program of a peer (their only tracepoint).
    pub(super) fn on_set_state(&self, tool: Tool) -> bool {
        !tool.is_tracer() || self.name.starts_with("inet_sock_set")
    }
}

/// The programs' runs and misses between two readings, with their names.
fn prog_runs(
    a: &std::collections::BTreeMap<u64, ProgStat>,
    b: &std::collections::BTreeMap<u64, ProgStat>,
) -> Vec<ProgRun> {
    b.iter()
        .map(|(&id, s1)| {
            let s0 = a.get(&id).copied().unwrap_or_default();
            ProgRun {
                id,
                name: prog_name(id),
                runs: s1.run_cnt.saturating_sub(s0.run_cnt),
                recursion_misses: s1.recursion_misses.saturating_sub(s0.recursion_misses),
            }
        })
        .collect()
}

/// "… lost L (ring buffer full N, …" of tracer's exit line → N.
pub(super) fn ring_full_of(summary: &str) -> Option<u64> {
    let key = "(ring buffer full ";
    let i = summary.find(key)? + key.len();
    summary[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl RunResult {
    pub(super) fn one_line(&self) -> String {
        let o = |v: Option<f64>, p: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.p$}"));
        format!(
            "{:.0} conns/s, kernel {} (expected {}), captured {}, lost {}, misses {} (set_state {}), {} ns/run, CPU {} s/M, RSS {} MiB (after {}), drain {} s, start {} s{}",
            self.conns_per_s,
            self.kernel_events,
            self.expected_events,
            self.captured.map_or_else(|| "-".into(), |c| c.to_string()),
            self.lost_reported
                .map_or_else(|| "-".into(), |c| c.to_string()),
            self.recursion_misses
                .map_or_else(|| "-".into(), |c| c.to_string()),
            self.set_state_misses
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

pub(super) fn run_one(ctx: &Ctx, w: &Workload, tool: Tool, rep: u32) -> anyhow::Result<RunResult> {
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
        let ports: Vec<String> = if ctx.only_ports && tool.is_tracer() {
            (g.port..g.port + g.listeners() as u16)
                .flat_map(|p| ["-p".to_string(), p.to_string()])
                .collect()
        } else {
            Vec::new()
        };
        if !ports.is_empty() {
            notes.push(format!("tracer {}", ports.join(" ")));
        }
        let mut p = if tool == Tool::TracerTop {
            let bin = ctx.tracer.as_ref().context("no tracer binary")?;
            // An empty output file: nothing is written but the screen.
            File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
            let tag = format!("{}-{}", slug(&w.name), rep + 1);
            let mut args = vec!["--color", "never", "top"];
            args.extend(ports.iter().map(String::as_str));
            Running::Tmux(TmuxProc::spawn(bin, &args, &ctx.runs_dir, &tag, (100, 40))?)
        } else {
            let (mut cmd, out_file) = tool_command(ctx, tool, &out_path)?;
            cmd.args(&ports);
            Running::Child(Proc::spawn(&mut cmd, out_file)?)
        };
        let ready = match &mut p {
            Running::Child(c) if tool == Tool::Perf => {
                c.wait_for_perf_event(Duration::from_secs(60))
            }
            _ => p.wait_for_first_event(Duration::from_secs(120)),
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

    let before = proc
        .as_ref()
        .map(|p| (cpu_ticks(p.pid()), prog_stats(p.pid())));
    let rss_before_kib = proc.as_ref().and_then(|p| status_kib(p.pid(), "VmRSS:"));
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
        set_state_misses: None,
        programs: Vec::new(),
        lost_ring_full: None,
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
        let progs1 = prog_stats(p.pid());
        if tool != Tool::Perf {
            res.programs = prog_runs(&progs0, &progs1);
            res.set_state_misses = Some(
                res.programs
                    .iter()
                    .filter(|p| p.on_set_state(tool))
                    .map(|p| p.recursion_misses)
                    .sum(),
            );
        }
        res.rss_before_kib = rss_before_kib;
        res.rss_after_kib = status_kib(p.pid(), "VmRSS:");
        let written = out_path.clone();
        // -q writes no records, top only to its screen, and perf writes its data file in
        // its own time.
        if !matches!(tool, Tool::TracerQuiet | Tool::TracerTop | Tool::Perf) {
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
        if tool.is_tracer() {
            res.lost_ring_full = exit.summary_line.as_deref().and_then(ring_full_of);
            // Whether its reader's queue reached its bound (then the ring filled behind it)
            // or held a burst: the lines tracer prints at exit about it.
            for l in &exit.stderr {
                if let Some(q) = l
                    .strip_prefix("tracer: the reader's queue was full ")
                    .and_then(|r| r.split(':').next())
                {
                    res.notes.push(format!("queue full {q}"));
                } else if let Some(q) =
                    l.strip_prefix("tracer: a burst waited in the reader's queue: ")
                {
                    res.notes.push(format!("queue: {q}"));
                }
            }
        }
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

pub(super) fn run_loadgen(g: &loadgen::Args) -> anyhow::Result<loadgen::Report> {
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
pub(super) fn tool_command(ctx: &Ctx, tool: Tool, out: &Path) -> anyhow::Result<(Command, File)> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let tracer = || -> anyhow::Result<Command> {
        let bin = ctx.tracer.as_ref().context("no tracer binary")?;
        let mut c = Command::new(bin);
        c.args(["--color", "never"]);
        Ok(c)
    };
    let cmd = match tool {
        Tool::Untraced => bail!("untraced has no command"),
        Tool::TracerTop => bail!("tracer top runs in tmux, not with a command of its own"),
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
pub(super) fn unavailable(tool: Tool) -> Option<String> {
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

pub(super) fn which(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        return Path::new(bin).exists().then(|| PathBuf::from(bin));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub(super) fn install_peers(tools: &[Tool]) -> anyhow::Result<()> {
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
pub(super) fn tracer_binary(
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
