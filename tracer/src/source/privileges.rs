//! What loading the programs needs from the process: root or CAP_BPF + CAP_PERFMON, and on
//! kernels that still charge BPF memory to RLIMIT_MEMLOCK, a limit high enough. Checked
//! before loading, so a failure names its fix instead of a bare EPERM.
use std::io;

use anyhow::bail;

use crate::format;

const PRIVILEGE_HINT: &str = "tracer needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8): run it with sudo";

/// Fails early, with the fix, when the process lacks the capabilities to load BPF (as
/// non-root, or as root with a reduced capability set, e.g. under systemd).
pub(super) fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |c: u64| eff & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    // SAFETY: geteuid has no preconditions.
    let who = if unsafe { libc::geteuid() } == 0 {
        "running as root but"
    } else {
        "not running as root and"
    };
    bail!("{who} missing {}: {PRIVILEGE_HINT}", missing.join(" and "))
}

pub(super) fn privilege_hint(e: anyhow::Error) -> anyhow::Error {
    if is_eperm(&e) {
        e.context(PRIVILEGE_HINT)
    } else {
        e
    }
}

/// An EACCES from attaching a tracepoint (perf_event_open) where the kernel's
/// `kernel.perf_event_paranoid` is above 2: Debian's and Ubuntu's kernels (their default is
/// 3 or 4) then refuse perf_event_open to any process without CAP_SYS_ADMIN, CAP_PERFMON or
/// not (a distribution patch; upstream kernels stop at 2).
pub(super) fn attach_hint(e: anyhow::Error) -> anyhow::Error {
    let eacces = e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EACCES))
            || c.to_string().contains("Permission denied")
    });
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok());
    match paranoid_message(eacces, paranoid, has_cap(CAP_SYS_ADMIN)) {
        Some(m) => e.context(m),
        None => privilege_hint(e),
    }
}

/// [`attach_hint`]'s sentence, if it applies.
fn paranoid_message(eacces: bool, paranoid: Option<i32>, sys_admin: bool) -> Option<String> {
    let level = paranoid?;
    (eacces && level > 2 && !sys_admin).then(|| {
        format!(
            "this kernel's kernel.perf_event_paranoid is {level} (Debian's and Ubuntu's default is 3 or more), and at that level their kernels refuse perf_event_open, which attaching a tracepoint needs, to a process without CAP_SYS_ADMIN, even with CAP_PERFMON: add CAP_SYS_ADMIN (as the packaged systemd unit does), or set kernel.perf_event_paranoid=2"
        )
    })
}

const CAP_SYS_ADMIN: u64 = 21;

/// Whether the process has capability `cap` in its effective set.
fn has_cap(cap: u64) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1 << cap) != 0)
}

pub(super) fn is_eperm(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
            || c.to_string().contains("Operation not permitted")
    })
}

/// RLIMIT_MEMLOCK after `raise_memlock`: kernels before 5.11 charge the memory of BPF maps
/// and programs to it (later ones to the memory cgroup), so an EPERM from creating a map or
/// loading a program there is the limit, not privileges.
#[derive(Debug)]
pub(super) struct Memlock {
    /// `uname -r`.
    release: String,
    /// The soft limit in bytes, `None` if unlimited.
    limit: Option<u64>,
    /// Why it could not be raised to unlimited.
    raise_error: Option<String>,
}

impl Memlock {
    /// `e` with the reason for an EPERM in its chain, if there is one.
    pub(super) fn hint(&self, e: anyhow::Error, ring_bytes: u32) -> anyhow::Error {
        if !is_eperm(&e) {
            return e;
        }
        match self.message(ring_bytes) {
            Some(m) => e.context(m),
            None => e.context(PRIVILEGE_HINT),
        }
    }

    /// The sentence for an EPERM when the memlock limit is the likely cause: a kernel that
    /// charges it and a finite limit.
    pub(super) fn message(&self, ring_bytes: u32) -> Option<String> {
        let limit = self.limit?;
        if !charges_memlock(&self.release) {
            return None;
        }
        let raise = match &self.raise_error {
            Some(err) => format!(", could not be raised: {err}"),
            None => String::new(),
        };
        Some(format!(
            "the kernel ({}) charges BPF maps and programs to RLIMIT_MEMLOCK (currently {}{raise}), \
             and the ring buffer alone needs {}: run as root (or with CAP_SYS_RESOURCE), raise \
             it with `ulimit -l unlimited` or LimitMEMLOCK=infinity in the systemd unit, or use \
             a smaller --ring-buffer-size",
            self.release,
            binary_size(limit),
            binary_size(u64::from(ring_bytes))
        ))
    }
}

/// Kernels before 5.11 account BPF memory to RLIMIT_MEMLOCK (5.11 moved it to the memory
/// cgroup). An unparsable release is assumed to be recent.
pub(super) fn charges_memlock(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 11),
        _ => false,
    }
}

/// `64 KiB`, `8 MiB`, `1536 B`: exact binary units.
pub(super) fn binary_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// Raises RLIMIT_MEMLOCK to unlimited (needs CAP_SYS_RESOURCE beyond the hard limit) and
/// reports what it is afterwards.
pub(super) fn raise_memlock() -> Memlock {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlim` is a valid rlimit.
    let raise_error = if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let e = io::Error::last_os_error();
        log::debug!("could not raise RLIMIT_MEMLOCK: {e}");
        Some(if e.raw_os_error() == Some(libc::EPERM) {
            format!("{e} without CAP_SYS_RESOURCE")
        } else {
            e.to_string()
        })
    } else {
        None
    };
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid, writable `now`.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut now) } != 0
        || now.rlim_cur == libc::RLIM_INFINITY
    {
        None
    } else {
        Some(now.rlim_cur)
    };
    Memlock {
        release: format::kernel_release(),
        limit,
        raise_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    fn memlock(release: &str, limit: Option<u64>, raise_error: Option<&str>) -> Memlock {
        Memlock {
            release: release.into(),
            limit,
            raise_error: raise_error.map(str::to_string),
        }
    }

    #[test]
    fn an_eacces_at_attach_names_perf_event_paranoid_above_2_without_cap_sys_admin() {
        let m = paranoid_message(true, Some(3), false).expect("the hint");
        assert!(
            m.starts_with("this kernel's kernel.perf_event_paranoid is 3 ")
                && m.contains("add CAP_SYS_ADMIN")
                && m.ends_with("set kernel.perf_event_paranoid=2"),
            "{m}"
        );
        // Not for upstream levels, with CAP_SYS_ADMIN, for other errors, or unknown.
        assert_eq!(paranoid_message(true, Some(2), false), None);
        assert_eq!(paranoid_message(true, Some(4), true), None);
        assert_eq!(paranoid_message(false, Some(3), false), None);
        assert_eq!(paranoid_message(true, None, false), None);
    }

    #[test]
    fn kernels_before_5_11_charge_memlock() {
        for r in [
            "5.10.0-46-cloud-amd64",
            "4.19.0-27-amd64",
            "5.4.0",
            "3.10.0-1160.el7",
        ] {
            assert!(charges_memlock(r), "{r}");
        }
        for r in [
            "5.11.0",
            "6.1.0-56-cloud-amd64",
            "6.12.117+deb12-cloud-amd64",
            "10.0",
            "",
        ] {
            assert!(!charges_memlock(r), "{r}");
        }
    }

    #[test]
    fn sizes_are_exact_binary_units() {
        assert_eq!(binary_size(64 << 10), "64 KiB");
        assert_eq!(binary_size(8 << 20), "8 MiB");
        assert_eq!(binary_size(1 << 30), "1 GiB");
        assert_eq!(binary_size(1536), "1536 B");
        assert_eq!(binary_size(8 * 1024 * 1024 + 4096), "8196 KiB");
    }

    #[test]
    fn eperm_names_the_memlock_limit_where_the_kernel_charges_it() {
        let eperm =
            || anyhow!(io::Error::from_raw_os_error(libc::EPERM)).context("creating map EVENTS");
        let m = memlock(
            "5.10.0-46-cloud-amd64",
            Some(64 << 10),
            Some("Operation not permitted (os error 1) without CAP_SYS_RESOURCE"),
        );
        let e = format!("{:#}", m.hint(eperm(), 8 << 20));
        assert_eq!(
            e,
            "the kernel (5.10.0-46-cloud-amd64) charges BPF maps and programs to RLIMIT_MEMLOCK \
             (currently 64 KiB, could not be raised: Operation not permitted (os error 1) without \
             CAP_SYS_RESOURCE), and the ring buffer alone needs 8 MiB: run as root (or with \
             CAP_SYS_RESOURCE), raise it with `ulimit -l unlimited` or LimitMEMLOCK=infinity in \
             the systemd unit, or use a smaller --ring-buffer-size: creating map EVENTS: \
             Operation not permitted (os error 1)"
        );
        // Raised, or a kernel that charges the memory cgroup: privileges are the cause.
        for m in [
            memlock("5.10.0-46-cloud-amd64", None, None),
            memlock("6.1.0-56-cloud-amd64", Some(64 << 10), Some("EPERM")),
        ] {
            let e = format!("{:#}", m.hint(eperm(), 8 << 20));
            assert!(e.starts_with(PRIVILEGE_HINT), "{e}");
        }
        // Other errors pass unchanged.
        let m = memlock("5.10.0", Some(64 << 10), None);
        let e = m.hint(anyhow!(io::Error::from_raw_os_error(libc::EINVAL)), 4096);
        assert_eq!(format!("{e:#}"), "Invalid argument (os error 22)");
    }
}
