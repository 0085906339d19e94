//! A running tool: its output, its CPU, RSS and BPF program statistics.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) pid: i32,
    pub(super) started: Instant,
    pub(super) stderr: Arc<Mutex<Vec<(f64, String)>>>,
    pub(super) reader: Option<thread::JoinHandle<()>>,
}

pub(super) struct Exit {
    pub(super) code: Option<i32>,
    pub(super) maxrss_kib: Option<u64>,
    pub(super) cpu_total_s: f64,
    pub(super) stderr: Vec<String>,
    pub(super) summary_line: Option<String>,
    pub(super) transitions: Option<u64>,
    pub(super) lost: Option<u64>,
}

impl Proc {
    pub(super) fn spawn(cmd: &mut Command, stdout: impl Into<Stdio>) -> anyhow::Result<Self> {
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

    pub(super) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub(super) fn stderr_tail(&self) -> String {
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

    pub(super) fn wait_for_stderr(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
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

    /// Seconds from exec until one of the process's BPF programs has run ([`first_event`]).
    pub(super) fn wait_for_first_event(&mut self, timeout: Duration) -> anyhow::Result<f64> {
        let (pid, started) = (self.pid, self.started);
        first_event(pid, started, timeout, || {
            if self.exited() {
                Some(self.stderr_tail())
            } else {
                None
            }
        })
    }

    /// For perf: seconds until it has a perf event open, plus a moment for it to enable it.
    pub(super) fn wait_for_perf_event(&mut self, timeout: Duration) -> anyhow::Result<f64> {
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

    pub(super) fn interrupt(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
    }

    /// SIGINT, then wait (SIGKILL after `timeout`); rusage from wait4.
    pub(super) fn stop(mut self, timeout: Duration) -> anyhow::Result<Exit> {
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

/// Seconds from `started` until one of process `pid`'s BPF programs has run: meanwhile a
/// listening socket is opened and closed every 2 ms (CLOSE -> LISTEN -> CLOSE, no packets).
/// `exited` says why not when the process is gone (its stderr's tail).
pub(super) fn first_event(
    pid: i32,
    started: Instant,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<String>,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        if prog_stats(pid).values().any(|p| p.run_cnt > 0) {
            return Ok(started.elapsed().as_secs_f64());
        }
        if let Some(tail) = exited() {
            bail!("exited during start-up; {tail}");
        }
        if Instant::now() > deadline {
            bail!(
                "no BPF program of it ran within {timeout:?} (are the kernel's BPF statistics on?)"
            );
        }
        // Port 0: the kernel picks one in the host's ephemeral range, never ours.
        if let Ok(l) = TcpListener::bind("127.0.0.1:0") {
            drop(l);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// "tracer: stopped (SIGINT): N transitions, …, lost L (…)" → (N, L).
pub(super) fn parse_tracer_summary(l: &str) -> (Option<u64>, Option<u64>) {
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
pub(super) fn wait_quiet(path: &Path, quiet: Duration, max: Duration) {
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
pub(super) fn cpu_ticks(pid: i32) -> Option<f64> {
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

pub(super) fn status_kib(pid: i32, key: &str) -> Option<u64> {
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
pub(super) struct ProgStat {
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
    pub(super) recursion_misses: u64,
}

/// The BPF programs a process holds (by prog_id), from /proc/PID/fdinfo of its prog fds.
pub(super) fn prog_stats(pid: i32) -> BTreeMap<u64, ProgStat> {
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
pub(super) fn prog_delta(
    a: &BTreeMap<u64, ProgStat>,
    b: &BTreeMap<u64, ProgStat>,
) -> (Option<f64>, u64, u64) {
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

/// A BPF program's name as the kernel keeps it (at most 15 characters: `inet_sock_set_s`),
/// from `bpftool prog show id ID`; `prog ID` where bpftool is missing.
pub(super) fn prog_name(id: u64) -> String {
    let name = ["/usr/sbin/bpftool", "/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .and_then(|b| {
            Command::new(b)
                .args(["-j", "prog", "show", "id", &id.to_string()])
                .stderr(Stdio::null())
                .output()
                .ok()
        })
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["name"].as_str().map(str::to_string));
    name.unwrap_or_else(|| format!("prog {id}"))
}

/// What one recursion miss of a tracer program loses, by the program's (truncated) name.
pub(super) fn miss_loses(name: &str) -> &'static str {
    match name {
        n if n.starts_with("inet_sock_set") => {
            "a TCP state transition, of any socket on the host (not only the generator's)"
        }
        n if n.starts_with("tcp_destroy") => "a context event: a socket freed",
        n if n.starts_with("tcp_send_reset") || n.starts_with("tcp_receive_res") => {
            "a context event: a reset sent or received"
        }
        n if n.starts_with("tcp_retransmit") => "a context event: a retransmit",
        n if n.starts_with("inet_sk_error") => "a context event: an error report",
        n if n.starts_with("sys_exit_accept") => {
            "an accept record (the accepted socket keeps its listener's owner)"
        }
        _ => "?",
    }
}

/// `uname -r`: the running kernel's release.
pub(super) fn uname_r() -> String {
    Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A name safe in a file name: ASCII letters and digits, the rest `_`.
pub(super) fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}
