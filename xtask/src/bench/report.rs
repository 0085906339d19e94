//! The report: per-workload summaries, results.md, the machine's facts.
use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path, process::Command};

use serde::Serialize;

use super::{
    Tool,
    proc::miss_loses,
    run::{RunResult, Workload},
};

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) machine: BTreeMap<String, String>,
    pub(super) command: String,
    pub(super) wall_s: f64,
    pub(super) skipped: BTreeMap<String, String>,
    pub(super) summary: Vec<Summary>,
    pub(super) runs: Vec<RunResult>,
    /// `--orphans`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) orphans: Vec<super::orphans::OrphanRun>,
}

#[derive(Serialize)]
pub(super) struct Summary {
    pub(super) workload: String,
    pub(super) tool: Tool,
    pub(super) runs: usize,
    pub(super) conns_per_s: f64,
    pub(super) ratio_mean: Option<f64>,
    pub(super) ratio_min: Option<f64>,
    pub(super) ratio_max: Option<f64>,
    pub(super) captured: Option<u64>,
    pub(super) kernel_events: u64,
    pub(super) lost_reported: Option<u64>,
    pub(super) recursion_misses: Option<u64>,
    /// Of those, the misses of the program(s) on `sock:inet_sock_set_state`.
    pub(super) set_state_misses: Option<u64>,
    /// tracer: "ring buffer full" of its exit lines.
    pub(super) lost_ring_full: Option<u64>,
    /// Each program (by name): runs and recursion misses, summed over the runs.
    pub(super) programs: Vec<ProgramSum>,
    pub(super) prog_ns_per_run: Option<Spread>,
    pub(super) all_progs_ns_per_event: Option<f64>,
    pub(super) cpu_s_per_m_events: Option<Spread>,
    pub(super) peak_rss_kib: Option<u64>,
    pub(super) drain_s: Option<Spread>,
    pub(super) startup_s: Option<f64>,
    pub(super) max_lag_s: f64,
    pub(super) captured_from: &'static str,
}

#[derive(Serialize)]
pub(super) struct ProgramSum {
    pub(super) name: String,
    pub(super) runs: u64,
    pub(super) recursion_misses: u64,
    pub(super) on_set_state: bool,
}

/// Mean, least and most of a figure over the runs: on a shared machine one slow run can
/// move a mean a long way (the in-kernel time of one build measured 283–543 ns in six runs).
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct Spread {
    pub(super) mean: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

impl Spread {
    pub(super) fn of(v: &[f64]) -> Option<Self> {
        Some(Self {
            mean: mean(v)?,
            min: v.iter().copied().reduce(f64::min)?,
            max: v.iter().copied().reduce(f64::max)?,
        })
    }

    /// `mean (min–max)` with `p` decimals; the mean alone for a single run.
    pub(super) fn show(s: Option<Self>, p: usize) -> String {
        match s {
            None => "–".into(),
            Some(s) if s.min == s.max => format!("{:.p$}", s.mean),
            Some(s) => format!("{:.p$} ({:.p$}–{:.p$})", s.mean, s.min, s.max),
        }
    }
}

pub(super) fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(super) fn summarise(workloads: &[Workload], runs: &[RunResult]) -> Vec<Summary> {
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
                set_state_misses: sum(&|r| r.set_state_misses),
                lost_ring_full: sum(&|r| r.lost_ring_full),
                programs: {
                    let mut by_name: BTreeMap<String, ProgramSum> = BTreeMap::new();
                    for r in &rs {
                        for p in &r.programs {
                            let e = by_name.entry(p.name.clone()).or_insert(ProgramSum {
                                name: p.name.clone(),
                                runs: 0,
                                recursion_misses: 0,
                                on_set_state: p.on_set_state(tool),
                            });
                            e.runs += p.runs;
                            e.recursion_misses += p.recursion_misses;
                        }
                    }
                    by_name.into_values().collect()
                },
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

pub(super) fn markdown(r: &Report) -> String {
    let o = |v: Option<f64>, p: usize| v.map_or_else(|| "–".into(), |v| format!("{v:.p$}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | tool | runs | conns/s | × untraced (min–max) | captured / emitted | lost (reported) | recursion misses: set_state prog / all progs | ns per run (set_state prog) | all progs ns / event | CPU s / M events | peak RSS MiB | last event → last write s | start-up s |"
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
            Some(c) if !matches!(x.tool, Tool::TracerQuiet | Tool::TracerTop) => format!(
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
            match (x.set_state_misses, x.recursion_misses) {
                (Some(a), Some(b)) => format!("{a} / {b}"),
                _ => "–".into(),
            },
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
        "\nconns/s: the generator's rate (mean over runs); × untraced: each run's rate over the untraced mean of the same workload. captured: transitions on the generator's ports in the tool's output; emitted: counted by a tracefs instance (\\* tracer -q and tracer top: their exit line's count, all TCP on the host unless --only-ports). lost: as the tool reports it. Recursion misses: bpf_prog_info of the tool's programs (runs the kernel skipped), its set_state program's and all of them (by program below). ns per run: run_time_ns / run_cnt of the tool's busiest program (the kernel's BPF statistics, BPF_ENABLE_STATS). CPU: the tool's user + system time from the start of the load to its exit, per million emitted transitions (tracer top, run in tmux: from its shell's `times`). Peak RSS: ru_maxrss (tracer top: VmHWM before the stop). Last event → last write: from the last transition the kernel emitted on the generator's ports (tracefs, mono clock) to the tool's last write to its output before it was stopped (its mtime; none for -q, top and perf; unless --only-ports the tracers are not filtered, so other TCP traffic on the host moves it). Start-up: exec until its program ran on an event (perf: until its perf event was open)."
    );
    missing_table(&mut s, r);
    programs_table(&mut s, r);
    if !r.orphans.is_empty() {
        s.push_str(&super::orphans::markdown(&r.orphans));
    }
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

/// Where each tool's missing transitions went: emitted (tracefs, the generator's ports) −
/// captured (the tool's output, the same ports), against the recursion misses of its program
/// on `sock:inet_sock_set_state` (host-wide: every TCP transition on the host reaches it).
/// What is missing beyond those misses was lost some other way (a full ring, counted by the
/// tool or not) or, where the count is a lower bound, not counted.
fn missing_table(s: &mut String, r: &Report) {
    let rows: Vec<&Summary> = r
        .summary
        .iter()
        .filter(|x| x.tool != Tool::Untraced && x.captured.is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nMissing transitions, summed over the runs: emitted (tracefs, on the generator's ports) − captured (the same ports, from the tool's output), against the recursion misses of the tool's program on `sock:inet_sock_set_state` (host-wide: it runs for every TCP transition on the host). Missing − those misses: what is missing beyond them (a negative figure: misses of other sockets' transitions). Ring full: tracer's exit line (events of every kind).\n"
    );
    let _ = writeln!(
        s,
        "| workload | tool | emitted | captured | missing | set_state misses | missing − set_state misses | ring full (tracer) | captured counted from |\n|---|---|---|---|---|---|---|---|---|"
    );
    for x in rows {
        let n = |v: Option<u64>| v.map_or_else(|| "–".into(), |v| v.to_string());
        let (captured, missing, beyond) = match x.captured {
            // -q prints no records: its exit line counts all TCP on the host.
            Some(c) if x.tool == Tool::TracerQuiet => {
                (format!("{c} (host-wide)"), "–".into(), "–".into())
            }
            Some(c) => {
                let missing = x.kernel_events as i64 - c as i64;
                let beyond = x
                    .set_state_misses
                    .map_or_else(|| "–".into(), |m| (missing - m as i64).to_string());
                (c.to_string(), missing.to_string(), beyond)
            }
            None => ("–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {captured} | {missing} | {} | {beyond} | {} | {} |",
            x.workload,
            x.tool.name(),
            x.kernel_events,
            n(x.set_state_misses),
            n(x.lost_ring_full),
            x.captured_from,
        );
    }
}

/// Each tool's BPF programs: runs and recursion misses during the loads, and what one miss
/// loses.
fn programs_table(s: &mut String, r: &Report) {
    if r.summary.iter().all(|x| x.programs.is_empty()) {
        return;
    }
    let _ = writeln!(
        s,
        "\nRuns and recursion misses by program, summed over the runs (a miss is a run the kernel skipped because a BPF program was already running on that CPU; from `/proc/PID/fdinfo`, over the load):\n\n| workload | tool | program | runs | recursion misses | a miss loses |\n|---|---|---|---|---|---|"
    );
    for x in &r.summary {
        for p in &x.programs {
            let loses = if x.tool.is_tracer() {
                miss_loses(&p.name)
            } else if p.on_set_state {
                "a TCP state transition, of any socket on the host"
            } else {
                "?"
            };
            let _ = writeln!(
                s,
                "| {} | {} | `{}` | {} | {} | {loses} |",
                x.workload,
                x.tool.name(),
                p.name,
                p.runs,
                p.recursion_misses
            );
        }
    }
}

pub(super) fn machine_facts(tracer: Option<&Path>) -> BTreeMap<String, String> {
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

/// The generator's first listener port for this invocation. The tracepoint is global, so a
/// generator someone else runs at the same time on the same port (in any namespace) would be
/// counted as ours; a port picked from the pid makes that unlikely. Above 65000 (outside the
/// ephemeral ranges), with room for the listeners of a hold workload.
pub(super) fn listen_port() -> u16 {
    65_001 + (std::process::id() % 400) as u16
}

pub(super) fn human_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}
