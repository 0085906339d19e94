//! Counting what the tools captured, from their output files.
use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    thread,
};

use anyhow::Context as _;
use serde::Deserialize;

use crate::loadgen;

use super::{Tool, proc::Exit};

pub(super) fn count_output(
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
        Tool::TracerQuiet | Tool::TracerTop => (
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
pub(super) fn lost_message(l: &str) -> Option<u64> {
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
pub(super) fn perf_count(data: &Path, ours: &dyn Fn(u16) -> bool) -> anyhow::Result<(u64, u64)> {
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
