//! Ground truth: a tracefs instance counting what the kernel emitted; `bpf_stats_enabled`.
use std::{
    fs,
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

/// kernel.bpf_stats_enabled on for the benchmark; restored when dropped.
pub(super) struct BpfStats {
    pub(super) old: String,
}

pub(super) const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(super) fn enable() -> anyhow::Result<Self> {
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

pub(super) fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load BPF programs and create network namespaces: run as root");
    }
    Ok(())
}
