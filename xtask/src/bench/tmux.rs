//! A tool that needs a terminal (`tracer top`): run in a detached tmux session, measured
//! like any other. tmux's shell runs it as a child and, once it exited, writes the child's
//! CPU time (`times`) and exit status to files; its stderr goes to a file too (what tracer
//! top keeps while it owns the terminal is written there at exit).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::proc::{Exit, parse_tracer_summary, status_kib};

pub(super) struct TmuxProc {
    session: String,
    pub(super) pid: i32,
    pub(super) started: Instant,
    stderr: PathBuf,
    times: PathBuf,
    status: PathBuf,
}

/// `'…'` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl TmuxProc {
    /// Starts `program args` in a new detached session of `w` × `h`; files go in `dir`.
    pub(super) fn spawn(
        program: &Path,
        args: &[&str],
        dir: &Path,
        tag: &str,
        (w, h): (u16, u16),
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let session = format!("xtask-bench-{}-{tag}", std::process::id());
        let file = |ext: &str| dir.join(format!("{tag}.{ext}"));
        let (stderr, times, status) = (file("stderr"), file("times"), file("status"));
        for f in [&stderr, &times, &status] {
            let _ = fs::remove_file(f);
        }
        let mut cmd = quote(&program.to_string_lossy());
        for a in args {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        let p = |f: &Path| quote(&f.to_string_lossy());
        // The exit status last: its file says the others are written.
        let script = format!(
            "{cmd} 2>{}; s=$?; times >{}; echo $s >{}",
            p(&stderr),
            p(&times),
            p(&status)
        );
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x"])
            .arg(w.to_string())
            .arg("-y")
            .arg(h.to_string())
            .arg(&script)
            .stdin(Stdio::null())
            .status()
            .context("running tmux (apt-get install tmux)")?;
        if !ok.success() {
            bail!("tmux new-session failed ({ok})");
        }
        let mut me = Self {
            session,
            pid: 0,
            started,
            stderr,
            times,
            status,
        };
        // The shell is the pane's process; the tool its child.
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &me.session, "#{pane_pid}"])
            .output()
            .context("tmux display-message")?;
        let shell: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("tmux gave no pane pid: {out:?}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        me.pid = loop {
            let children = fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
                .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                break pid;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start in tmux; {}",
                    program.display(),
                    me.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        Ok(me)
    }

    pub(super) fn stderr_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(super) fn stderr_tail(&self) -> String {
        let v = self.stderr_lines();
        let tail: Vec<&str> = v.iter().rev().take(5).rev().map(String::as_str).collect();
        format!("stderr: {}", tail.join(" | "))
    }

    pub(super) fn exited(&self) -> bool {
        self.status.exists() || !Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub(super) fn wait_for_stderr(&self, prefix: &str, timeout: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_lines().iter().any(|l| l.starts_with(prefix)) {
                return Ok(self.started.elapsed().as_secs_f64());
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

    pub(super) fn interrupt(&self) {
        // SAFETY: kill(2) on the pid of the tool this run started.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
    }

    /// SIGINT, then wait for the shell's files (SIGKILL after `timeout`).
    pub(super) fn stop(self, timeout: Duration) -> anyhow::Result<Exit> {
        // Peak RSS: what the kernel kept, read before it goes (no rusage for a grandchild).
        let maxrss_kib = status_kib(self.pid, "VmHWM:");
        self.interrupt();
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        while !self.status.exists() {
            if Instant::now() > deadline && !killed {
                eprintln!("bench:   process {} ignored SIGINT: killing it", self.pid);
                // SAFETY: as in `interrupt`.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                killed = true;
            }
            if Instant::now() > deadline + Duration::from_secs(10) {
                bail!(
                    "the tmux shell wrote no exit status; {}",
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        let times = fs::read_to_string(&self.times).context("reading the shell's times")?;
        let cpu_total_s =
            children_cpu(&times).with_context(|| format!("the shell's times: {times:?}"))?;
        let code = fs::read_to_string(&self.status)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let stderr = self.stderr_lines();
        let summary_line = stderr
            .iter()
            .find(|l| l.starts_with("tracer: stopped"))
            .cloned();
        let (transitions, lost) = summary_line
            .as_deref()
            .map_or((None, None), parse_tracer_summary);
        Ok(Exit {
            code,
            maxrss_kib,
            cpu_total_s,
            stderr,
            summary_line,
            transitions,
            lost,
        })
    }
}

impl Drop for TmuxProc {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status();
    }
}

/// The children's user + system time from sh's `times` (its second line: `0m1.230000s
/// 0m0.450000s` in dash, `0m1.230s 0m0.450s` in bash).
fn children_cpu(times: &str) -> Option<f64> {
    let line = times.lines().nth(1)?;
    let secs = |t: &str| -> Option<f64> {
        let (m, s) = t.strip_suffix('s')?.split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let mut it = line.split_whitespace();
    Some(secs(it.next()?)? + secs(it.next()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shells_times_are_read() {
        assert_eq!(
            children_cpu("0m0.000000s 0m0.001000s\n1m2.500000s 0m0.250000s\n"),
            Some(62.75)
        );
        let bash = children_cpu("0m0.001s 0m0.000s\n0m1.230s 0m0.450s\n").unwrap();
        assert!((bash - 1.68).abs() < 1e-9, "{bash}");
        assert_eq!(children_cpu("0m0.001s 0m0.000s\n"), None);
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
