//! Time: the kernel's CLOCK_MONOTONIC timestamps and their wall-clock equivalents. Every view
//! shares it; it imports nothing of the pipeline.
use chrono::{DateTime, Utc};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns, sampled once at start-up.
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock with a known offset (a recording's, or a test's).
    pub fn fixed(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns.
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn utc(&self, mono_ns: u64) -> DateTime<Utc> {
        let ns = i64::try_from(self.offset_ns + i128::from(mono_ns)).unwrap_or(i64::MAX);
        DateTime::from_timestamp_nanos(ns)
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock of the kernel's `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// The CPU time of the calling thread so far (user and system), in ns: what a piece of
/// work cost, whatever else the machine runs meanwhile.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) as u64
}

/// A clock's time in ns.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}
