//! `cargo xtask bench --orphans N`: tracer following N orphaned FIN_WAIT2 sockets.
//!
//! The generator opens N loopback connections; each client closes as soon as it is
//! connected while its server holds its end for `--orphans-hold` seconds, so every client
//! socket sits in the kernel's timewait table in the FIN_WAIT2 substate (handed over when its
//! FIN was acked; the tracepoints see nothing more of it) until the servers close together.
//! tracer runs as a user hunting such hangs would run it, `-o json --stuck 1h` (stuck mode
//! and the JSON output keep the sock_diag lookups on; nothing is old enough to be reported),
//! filtered on the generator's ports in the kernel. Measured:
//! - its CPU and RSS during the quiet part of the hold (from 2 s after every connection is
//!   open to 1 s before the release): what following N orphans costs, sampled from /proc
//!   every half second;
//! - the sock_diag dumps, from its exit line (how many, their mean and longest time, and the
//!   number of timewait sockets the longest listed);
//! - the latency from an orphan's end to its report: the peer's FIN turns an orphan into
//!   TIME_WAIT at the peer's LAST_ACK (the record's `ts_ns`, exact: the peer is on this
//!   host), and tracer reports it as a `FIN_WAIT2 -> TIME_WAIT` transition from sock_diag.
//!   Its stdout is read here as it comes, and each such record's latency is the time it was
//!   read (the same CLOCK_MONOTONIC) minus its `ts_ns`. Two cases: one orphan among the N
//!   (probes: during the hold, a connection in the generator's namespace every 1.5 s whose
//!   client closes at once and whose server closes half a second later), and all N at once
//!   (the release: every server closes, and tracer reports 100,000 ends with the burst of
//!   transitions and records that comes with them).
//!
//! The same run with the connections held open instead (no orphans and no probes, the same
//! sockets on the servers' side and 2N sockets followed) is the baseline.
use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::loadgen;

use super::proc::{Proc, cpu_ticks, status_kib};

/// One run of the orphans workload (or of its held-open baseline).
#[derive(Clone, Debug, Serialize)]
pub(super) struct OrphanRun {
    /// "orphans" or "held open".
    pub(super) kind: &'static str,
    pub(super) rep: u32,
    pub(super) conns: u64,
    /// Seconds until every connection was open.
    pub(super) open_s: f64,
    pub(super) hold_s: f64,
    /// tracer's CPU over the quiet window of the hold, % of one core.
    pub(super) hold_cpu_pct: Option<f64>,
    /// The window it was taken over, seconds.
    pub(super) hold_window_s: Option<f64>,
    /// tracer's VmRSS at the end of the window, and its peak over the run (ru_maxrss).
    pub(super) hold_rss_mib: Option<f64>,
    pub(super) peak_rss_mib: Option<f64>,
    /// From tracer's exit line: dumps made, their mean and longest time, and the size of the
    /// longest.
    pub(super) dumps: Option<u64>,
    pub(super) dump_mean_ms: Option<f64>,
    /// Their mean CPU time (tracer's thread, the kernel's filling included).
    pub(super) dump_cpu_ms: Option<f64>,
    pub(super) dump_longest_ms: Option<f64>,
    pub(super) dump_longest_sockets: Option<u64>,
    /// One orphan's end among the N: probes made, their ends reported, and the latency
    /// (ms): median, most.
    pub(super) probes: u64,
    pub(super) probe_reports: u64,
    pub(super) probe_p50_ms: Option<f64>,
    pub(super) probe_max_ms: Option<f64>,
    /// All N at once: `FIN_WAIT2 -> TIME_WAIT` records read, and their latency (ms):
    /// median, 99th percentile, most.
    pub(super) time_wait_reports: u64,
    pub(super) latency_p50_ms: Option<f64>,
    pub(super) latency_p99_ms: Option<f64>,
    pub(super) latency_max_ms: Option<f64>,
    pub(super) stop_line: Option<String>,
    pub(super) notes: Vec<String>,
}

/// CLOCK_MONOTONIC now, ns: the clock of the records' `ts_ns`.
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes into a local timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `"ts_ns":123` in a JSON line.
fn ts_ns(line: &str) -> Option<u64> {
    let i = line.find("\"ts_ns\":")? + 8;
    line[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A duration as tracer prints it (`950ns`, `12.3µs`, `1.20ms`, `2.50s`), in ms.
fn human_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    for (suffix, ms_per) in [("ns", 1e6), ("µs", 1e3), ("ms", 1.0), ("s", 1e-3)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v / ms_per);
        }
    }
    None
}

/// What tracer's exit line says of its dumps.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dumps {
    n: u64,
    mean_ms: f64,
    cpu_ms: f64,
    longest_ms: f64,
    longest_sockets: u64,
}

/// tracer's exit line on its dumps: "tracer: sock_diag lookups of TIME_WAIT and orphaned
/// FIN_WAIT2: 57 dumps, 1.20ms on average (0.95ms of CPU), longest 48.2ms (100000 timewait
/// sockets)".
fn parse_dumps(l: &str) -> Option<Dumps> {
    let rest = l.split_once("FIN_WAIT2: ")?.1;
    let (n, rest) = rest.split_once(" dump")?;
    let (_, rest) = rest.split_once(", ")?;
    let (mean, rest) = rest.split_once(" on average (")?;
    let (cpu, rest) = rest.split_once(" of CPU), longest ")?;
    let (longest, rest) = rest.split_once(" (")?;
    let sockets = rest.split_whitespace().next()?;
    Some(Dumps {
        n: n.parse().ok()?,
        mean_ms: human_ms(mean)?,
        cpu_ms: human_ms(cpu)?,
        longest_ms: human_ms(longest)?,
        longest_sockets: sockets.parse().ok()?,
    })
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)] as f64 / 1e6)
}

/// The generator, started (its stderr watched for "open", echoed), and its report.
struct Generator {
    child: std::process::Child,
    open: Arc<AtomicBool>,
    stderr: Option<thread::JoinHandle<()>>,
}

impl Generator {
    fn start(g: &loadgen::Args) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let mut child = Command::new(exe)
            .arg("loadgen")
            .args(g.to_cli())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running the load generator")?;
        let open = Arc::new(AtomicBool::new(false));
        let pipe = child.stderr.take().context("the generator's stderr")?;
        let stderr = {
            let open = Arc::clone(&open);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("connections open after") {
                        open.store(true, Ordering::Relaxed);
                    }
                    eprintln!("{line}");
                }
            })
        };
        Ok(Self {
            child,
            open,
            stderr: Some(stderr),
        })
    }

    fn finish(mut self) -> anyhow::Result<loadgen::Report> {
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out).context("the generator's report")?;
        }
        let st = self.child.wait().context("waiting for the generator")?;
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        anyhow::ensure!(st.success(), "load generator failed ({st})");
        serde_json::from_str(out.trim())
            .with_context(|| format!("parsing the generator's report {:?}", out.trim()))
    }
}

/// One orphan's end at a time, in the generator's namespace while it holds its N: a
/// connection on `port` whose client closes at once (an orphan) and whose server closes
/// half a second later, every 1.5 s until `stop`. Returns how many were made.
fn probe(pid: u32, port: u16, stop: &AtomicBool) -> anyhow::Result<u64> {
    use std::{
        io::Read as _,
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd as _,
    };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .context("opening the generator's network namespace")?;
    // SAFETY: setns on a valid namespace fd; it moves this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("entering the generator's namespace");
    }
    let l = TcpListener::bind(("127.0.0.1", port)).context("the probes' listener")?;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = TcpStream::connect(("127.0.0.1", port)).context("a probe's connect")?;
        let (mut s, _) = l.accept().context("a probe's accept")?;
        drop(c);
        let mut b = [0u8; 1];
        // The client's FIN: from now on an orphan like the others.
        let _ = s.read(&mut b);
        thread::sleep(Duration::from_millis(500));
        drop(s);
        n += 1;
        thread::sleep(Duration::from_millis(1000));
    }
    Ok(n)
}

/// One run: tracer started, the generator's N connections held (orphaned or open), tracer
/// stopped once it has reported every orphan's end (at most 60 s after the release).
pub(super) fn run(
    tracer: &std::path::Path,
    g: &loadgen::Args,
    kind: &'static str,
    rep: u32,
) -> anyhow::Result<OrphanRun> {
    let hold = g
        .hold
        .context("the orphans workload holds its connections")?;
    let mut args: Vec<String> = ["--color", "never", "-o", "json", "--stuck", "1h"]
        .map(String::from)
        .to_vec();
    // The generator's listeners, then the probes'.
    let probe_port = (u64::from(g.port) + g.listeners()) as u16;
    for p in g.port..=probe_port {
        args.extend(["-p".into(), p.to_string()]);
    }
    let mut cmd = Command::new(tracer);
    cmd.args(&args);
    let mut p = Proc::spawn(&mut cmd, Stdio::piped())?;
    let stdout = p.child.stdout.take().context("tracer's stdout")?;
    // Every FIN_WAIT2 -> TIME_WAIT record's latency, as it is read: the generator's, the
    // probes'.
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let probed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let probe_key = format!(r#""dport":{probe_port},"#);
    let reader = {
        let latencies = Arc::clone(&latencies);
        let probed = Arc::clone(&probed);
        thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.contains(r#""source":"sock_diag""#)
                    && line.contains(r#""old":"FIN_WAIT2","new":"TIME_WAIT""#)
                    && let Some(ts) = ts_ns(&line)
                {
                    let lat = monotonic_ns().saturating_sub(ts);
                    let to = if line.contains(&probe_key) {
                        &probed
                    } else {
                        &latencies
                    };
                    if let Ok(mut v) = to.lock() {
                        v.push(lat);
                    }
                }
            }
        })
    };
    if let Err(e) = p.wait_for_stderr("tracer: attached to", Duration::from_secs(60)) {
        p.interrupt();
        let _ = p.stop(Duration::from_secs(10));
        return Err(e);
    }
    thread::sleep(Duration::from_millis(500));

    // tracer's CPU and RSS every half second while the generator runs.
    let pid = p.pid;
    let samples: Arc<Mutex<Vec<(Instant, f64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let samples = Arc::clone(&samples);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(cpu), Some(rss)) = (cpu_ticks(pid), status_kib(pid, "VmRSS:"))
                    && let Ok(mut v) = samples.lock()
                {
                    v.push((Instant::now(), cpu, rss));
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let gen_start = Instant::now();
    let lg = Generator::start(g).and_then(|generator| {
        // Probes while the N are held (from 2 s after they are all open, to 2 s before the
        // release), in the generator's namespace.
        let pid = generator.child.id();
        let open = Arc::clone(&generator.open);
        let stop_probes = Arc::new(AtomicBool::new(false));
        let with_probes = g.orphans;
        let prober = {
            let stop_probes = Arc::clone(&stop_probes);
            thread::spawn(move || -> anyhow::Result<u64> {
                if !with_probes {
                    // The baseline: nothing but the connections held open (a probe would
                    // add lookups in a namespace of 200,000 sockets).
                    return Ok(0);
                }
                let deadline = Instant::now() + Duration::from_secs(600);
                while !open.load(Ordering::Relaxed) {
                    if Instant::now() > deadline {
                        anyhow::bail!("the generator never said its connections were open");
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                let until = Instant::now() + Duration::from_secs_f64(hold - 2.0);
                thread::sleep(Duration::from_secs(2));
                let stopper = {
                    let stop_probes = Arc::clone(&stop_probes);
                    thread::spawn(move || {
                        while Instant::now() < until && !stop_probes.load(Ordering::Relaxed) {
                            thread::sleep(Duration::from_millis(20));
                        }
                        stop_probes.store(true, Ordering::Relaxed);
                    })
                };
                let n = probe(pid, probe_port, &stop_probes);
                stop_probes.store(true, Ordering::Relaxed);
                let _ = stopper.join();
                n
            })
        };
        let report = generator.finish();
        stop_probes.store(true, Ordering::Relaxed);
        let probes = prober
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
        Ok((report?, probes))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (lg, probes) = match lg {
        Ok(lg) => lg,
        Err(e) => {
            p.interrupt();
            let _ = p.stop(Duration::from_secs(10));
            return Err(e).context("generator");
        }
    };
    // Every orphan's end reported, or a minute.
    let want = if g.orphans { lg.conns } else { 0 };
    let waited = Instant::now();
    while (latencies.lock().map_or(0, |v| v.len()) as u64) < want
        && waited.elapsed() < Duration::from_secs(60)
    {
        thread::sleep(Duration::from_millis(100));
    }
    // And what follows them (the servers' records), written.
    thread::sleep(Duration::from_secs(2));
    let exit = p.stop(Duration::from_secs(60))?;
    let _ = reader.join();

    let mut notes = Vec::new();
    let probes = probes.unwrap_or_else(|e| {
        notes.push(format!("probes: {e:#}"));
        0
    });
    let mut probe_lat = probed.lock().map(|v| v.clone()).unwrap_or_default();
    probe_lat.sort_unstable();
    if lg.failed > 0 {
        notes.push(format!("{} connects failed", lg.failed));
    }
    let open_s = lg.open_s.unwrap_or(0.0);
    // The quiet window of the hold, on the samples' clock.
    let from = gen_start + Duration::from_secs_f64(open_s + 2.0);
    let to = gen_start + Duration::from_secs_f64(open_s + hold - 1.0);
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    let first = samples.iter().find(|s| s.0 >= from);
    let last = samples.iter().rev().find(|s| s.0 <= to);
    let (hold_cpu_pct, hold_window_s, hold_rss_mib) = match (first, last) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let secs = (b.0 - a.0).as_secs_f64();
            (
                Some(100.0 * (b.1 - a.1) / secs),
                Some(secs),
                Some(b.2 as f64 / 1024.0),
            )
        }
        _ => {
            notes.push("no samples in the hold window (hold too short?)".into());
            (None, None, None)
        }
    };
    let dumps = exit.stderr.iter().find_map(|l| parse_dumps(l));
    if dumps.is_none() {
        notes.push("no dump line at exit".into());
    }
    let mut lat = latencies.lock().map(|v| v.clone()).unwrap_or_default();
    lat.sort_unstable();
    if g.orphans && (lat.len() as u64) < lg.conns {
        notes.push(format!(
            "{} of {} orphans' ends reported",
            lat.len(),
            lg.conns
        ));
    }
    if let Some(l) = exit
        .stderr
        .iter()
        .find(|l| l.contains("orphaned FIN_WAIT2s not followed"))
    {
        notes.push(l.clone());
    }
    Ok(OrphanRun {
        kind,
        rep,
        conns: lg.conns,
        open_s,
        hold_s: hold,
        hold_cpu_pct,
        hold_window_s,
        hold_rss_mib,
        peak_rss_mib: exit.maxrss_kib.map(|k| k as f64 / 1024.0),
        dumps: dumps.map(|d| d.n),
        dump_mean_ms: dumps.map(|d| d.mean_ms),
        dump_cpu_ms: dumps.map(|d| d.cpu_ms),
        dump_longest_ms: dumps.map(|d| d.longest_ms),
        dump_longest_sockets: dumps.map(|d| d.longest_sockets),
        probes,
        probe_reports: probe_lat.len() as u64,
        probe_p50_ms: percentile(&probe_lat, 0.5),
        probe_max_ms: probe_lat.last().map(|&l| l as f64 / 1e6),
        time_wait_reports: lat.len() as u64,
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        latency_max_ms: lat.last().map(|&l| l as f64 / 1e6),
        stop_line: exit.summary_line,
        notes,
    })
}

/// The results.md section.
pub(super) fn markdown(runs: &[OrphanRun]) -> String {
    let o = |v: Option<f64>, p: usize| v.map_or_else(|| "–".into(), |v| format!("{v:.p$}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nOrphaned FIN_WAIT2 (tracer -o json --stuck 1h, filtered on the generator's ports):\n"
    );
    let _ = writeln!(
        s,
        "| run | rep | conns | open s | CPU in the hold, % of a core (window s) | RSS in the hold MiB | peak RSS MiB | dumps | dump mean ms (CPU ms) | longest dump ms (sockets) | one end: reported / probes, latency p50 / max ms | all at once: reports, latency p50 / p99 / max ms | notes |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} ({}) | {} | {} | {} | {} ({}) | {} ({}) | {} / {}, {} / {} | {}, {} / {} / {} | {} |",
            r.kind,
            r.rep,
            r.conns,
            r.open_s,
            o(r.hold_cpu_pct, 1),
            o(r.hold_window_s, 1),
            o(r.hold_rss_mib, 1),
            o(r.peak_rss_mib, 1),
            r.dumps.map_or_else(|| "–".into(), |d| d.to_string()),
            o(r.dump_mean_ms, 1),
            o(r.dump_cpu_ms, 1),
            o(r.dump_longest_ms, 1),
            r.dump_longest_sockets
                .map_or_else(|| "–".into(), |d| d.to_string()),
            r.probe_reports,
            r.probes,
            o(r.probe_p50_ms, 0),
            o(r.probe_max_ms, 0),
            r.time_wait_reports,
            o(r.latency_p50_ms, 0),
            o(r.latency_p99_ms, 0),
            o(r.latency_max_ms, 0),
            r.notes.join("; "),
        );
    }
    let _ = writeln!(
        s,
        "\nCPU in the hold: tracer's user + system time from 2 s after every connection was open to 1 s before the release, over that window (the probes included: one connection every 1.5 s). Dumps: tracer's exit line (every sock_diag dump of timewait sockets in the run, the connecting and closing included; their CPU time is the thread's, the kernel's walk and filling included, which other load on the machine does not stretch as it does their duration). Latency: from the server's LAST_ACK (the record's ts_ns: when the orphan became TIME_WAIT) to the moment its FIN_WAIT2 -> TIME_WAIT record was read from tracer's stdout; one end: a probe connection among the N held, its server closing 0.5 s after its client; all at once: the N, when their servers close together."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_line_on_dumps_parses() {
        assert_eq!(
            parse_dumps(
                "tracer: sock_diag lookups of TIME_WAIT and orphaned FIN_WAIT2: 57 dumps, 1.20ms on average (950.0µs of CPU), longest 48.2ms (100000 timewait sockets)"
            ),
            Some(Dumps {
                n: 57,
                mean_ms: 1.2,
                cpu_ms: 0.95,
                longest_ms: 48.2,
                longest_sockets: 100_000
            })
        );
        assert_eq!(
            parse_dumps(
                "tracer: sock_diag lookups of TIME_WAIT and orphaned FIN_WAIT2: 1 dump, 950µs on average (950µs of CPU), longest 950µs (1 timewait socket)"
            )
            .map(|d| (d.n, d.longest_sockets)),
            Some((1, 1))
        );
        assert_eq!(human_ms("1.50s"), Some(1500.0));
        assert_eq!(
            ts_ns(r#"{"v":1,"type":"transition","time":"x","ts_ns":4623218628625,"sock":"0x1"}"#),
            Some(4_623_218_628_625)
        );
        assert_eq!(
            percentile(&[1_000_000, 2_000_000, 3_000_000], 0.5),
            Some(2.0)
        );
    }
}
