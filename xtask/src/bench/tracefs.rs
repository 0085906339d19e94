//! Ground truth: a tracefs instance counting what the kernel emitted; the BPF programs' stats.
use std::{
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::loadgen;

use super::TRACEFS;

pub(super) struct TraceCount {
    pub(super) dir: PathBuf,
}

impl TraceCount {
    pub(super) fn new(g: &loadgen::Args) -> anyhow::Result<Self> {
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

    pub(super) fn count(&self) -> anyhow::Result<u64> {
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
    pub(super) fn last_event_s(&self) -> Option<f64> {
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
pub(super) fn last_write_mono_s(path: &Path) -> Option<f64> {
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

pub(super) fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("instances").is_dir() {
        return Ok(());
    }
    crate::status(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))
        .context("mounting tracefs")
}

/// The programs' `run_time_ns` and `run_cnt` counted for as long as this lives: through
/// `BPF_ENABLE_STATS`, whose file descriptor holds the kernel's switch on by reference, not
/// through `kernel.bpf_stats_enabled`, which another benchmark on the same machine could
/// restore to 0 under this one (recursion misses are counted either way).
pub(super) struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub(super) fn enable() -> anyhow::Result<Self> {
        /// `BPF_ENABLE_STATS` of `enum bpf_cmd`, and `BPF_STATS_RUN_TIME` of `enum bpf_stats_type`.
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        // `union bpf_attr`'s `enable_stats { __u32 type; }`, the rest zero.
        let mut attr = [0u32; 4];
        attr[0] = BPF_STATS_RUN_TIME;
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of the live array.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("BPF_ENABLE_STATS (the BPF programs' run time and run count)");
        }
        let fd = i32::try_from(fd).context("BPF_ENABLE_STATS returned no descriptor")?;
        // SAFETY: a fresh descriptor the kernel just gave us, owned from here.
        Ok(Self {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

pub(super) fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load BPF programs and create network namespaces: run as root");
    }
    Ok(())
}
