//! The live source: loads the eBPF program, attaches it, and hands out ring-buffer records
//! and the kernel-side counters. Everything after this module cannot tell where events come
//! from.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::TracePoint,
};
use tokio::io::unix::AsyncFd;
use tracer_common::{
    AF_INET, AF_INET6, AddrKey, Config, Counters, CtxLayout, NetnsOffsets, OWNER_CGROUP,
    OWNER_COMM, OWNER_PID, names,
};

use crate::{
    decode::Family,
    filter::{Filter, comm_key},
    format::{self, Choice},
    ring::Ring,
};

/// The eBPF object built by `tracer/build.rs` (aya-build), embedded at compile time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// What the kernel side should do, validated before anything is loaded.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Ports, addresses and family, applied in the kernel.
    pub filter: Filter,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_bytes: u32,
    /// Let the eBPF program's aya-log statements through (debugging tracer itself).
    pub bpf_log: bool,
    /// Load the portable program even where the fast one fits (tests the fallback).
    pub force_portable: bool,
    /// Attach the context tracepoints (resets, retransmits, errors, destroys).
    pub context_events: bool,
}

/// Sums of the per-CPU counters plus the kernel's own count of skipped runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub seen: u64,
    pub submitted: u64,
    pub lost_ringbuf_full: u64,
    pub lost_read_error: u64,
    pub context_seen: u64,
    /// `recursion_misses` of the program (bpf_prog_info): runs the kernel skipped.
    pub recursion_misses: u64,
}

pub struct Live {
    /// Owns the program and its link: dropping it detaches the program.
    ebpf: Option<Ebpf>,
    pub ring: AsyncFd<Ring>,
    counters: PerCpuArray<MapData, Counters>,
    /// Duplicates of the programs' fds, so their counters stay readable after detaching.
    prog_fds: Vec<OwnedFd>,
    pub program: &'static str,
    pub portable: bool,
    /// tracefs was not mounted and we mounted it.
    pub mounted_tracefs: bool,
    /// Context tracepoints attached (`category:name`).
    pub context_programs: Vec<String>,
    /// Context tracepoints that could not be used, with the reason.
    pub unavailable: Vec<String>,
    _logger: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    pub fn start(opts: &LiveOptions) -> anyhow::Result<Self> {
        check_privileges()?;
        let memlock = raise_memlock();
        // An EPERM from creating a map or loading a program: the memlock limit on kernels
        // that charge it, missing privileges otherwise.
        let hint = |e: aya::EbpfError| memlock.hint(anyhow!(e), opts.ring_bytes);
        let hint_prog = |e: aya::programs::ProgramError| memlock.hint(anyhow!(e), opts.ring_bytes);
        let (tracefs, mounted_tracefs) = format::tracefs()?;
        let choice = match format::read_choice(&tracefs, "sock", "inet_sock_set_state")? {
            Choice::Fast if opts.force_portable => Choice::Portable(format::FAST),
            c => c,
        };

        let port_flags = opts.filter.port_flags();
        let config = Config {
            // Wake the reader when a quarter of the buffer is pending; the poll timer picks
            // up anything below that within its interval.
            wakeup_bytes: u64::from(opts.ring_bytes / 4),
            family: match opts.filter.family {
                None => 0,
                Some(Family::Ipv4) => AF_INET,
                Some(Family::Ipv6) => AF_INET6,
            },
            filter_ports: u8::from(!port_flags.is_empty()),
            filter_addrs: u8::from(!opts.filter.cidrs.is_empty()),
            filter_owner: owner_bits(&opts.filter),
            filter_netns: u8::from(!opts.filter.netns.is_empty()),
            _pad: [0; 2],
        };
        // The socket's netns is two pointers away: offsets from the kernel's BTF, or a clear
        // failure before anything is loaded.
        let netns_offsets = if opts.filter.netns.is_empty() {
            NetnsOffsets::default()
        } else {
            let btf = crate::btf::Btf::from_sys_fs()
                .context("the netns filter needs the kernel's BTF")?;
            let o = crate::btf::netns_offsets(&btf)
                .context("the netns filter needs struct offsets from the kernel's BTF")?;
            NetnsOffsets {
                skc_net: o.skc_net,
                net_inum: o.net_inum,
            }
        };
        let (program, layout) = match choice {
            Choice::Fast => (names::PROG_FAST, format::FAST),
            Choice::Portable(l) => (names::PROG_PORTABLE, l),
        };
        // Context tracepoints are optional: a kernel without one (or with a layout we cannot
        // read) still gets transitions, and the user is told what is missing.
        let mut ctx_layouts = Vec::new();
        let mut unavailable = Vec::new();
        for (prog, category, name, _, global) in names::CONTEXT_PROGRAMS {
            if !opts.context_events {
                break;
            }
            match format::read_ctx_layout(&tracefs, category, name) {
                Ok(l) => ctx_layouts.push((prog, category, name, global, l)),
                Err(e) => unavailable.push(format!("{category}:{name} ({e:#})")),
            }
        }
        if EBPF_OBJECT.is_empty() {
            // Only a fuzzing build (`--cfg fuzzing`, tracer/build.rs) embeds no program.
            bail!(
                "this tracer was built without its eBPF program (a fuzzing build): build it with `cargo xtask build`"
            );
        }
        let log_level: u8 = if opts.bpf_log { 0xff } else { 0 };
        let ports_len = u32::try_from(port_flags.len().max(1)).unwrap_or(u32::MAX);
        let addrs_len = u32::try_from(opts.filter.cidrs.len().max(1)).unwrap_or(u32::MAX);
        let size = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let mut loader = EbpfLoader::new();
        for (_, _, _, global, l) in &ctx_layouts {
            loader.override_global(global, l, true);
        }
        let mut ebpf = loader
            .override_global(names::CONFIG, &config, true)
            .override_global(names::LAYOUT, &layout, true)
            .override_global(names::NETNS_OFFSETS, &netns_offsets, true)
            .override_global(aya_log::LEVEL, &log_level, false)
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .map_max_entries(names::PORTS, ports_len)
            .map_max_entries(names::ADDRS, addrs_len)
            .map_max_entries(names::PIDS, size(opts.filter.pids.len()))
            .map_max_entries(names::COMMS, size(opts.filter.comms.len()))
            .map_max_entries(names::CGROUPS, size(opts.filter.cgroups.len()))
            .map_max_entries(names::NETNS, size(opts.filter.netns.len()))
            .load(EBPF_OBJECT)
            .map_err(hint)
            .context("loading the eBPF object")?;

        // The filter sets (each sized to its entries above).
        let f = &opts.filter;
        fill_map(&mut ebpf, names::PORTS, port_flags.iter().copied())?;
        fill_map(&mut ebpf, names::PIDS, f.pids.iter().map(|&p| (p, 1)))?;
        fill_map(
            &mut ebpf,
            names::COMMS,
            f.comms.iter().map(|c| (comm_key(c), 1)),
        )?;
        fill_map(&mut ebpf, names::NETNS, f.netns.iter().map(|&n| (n, 1)))?;
        fill_map(
            &mut ebpf,
            names::CGROUPS,
            f.cgroups.iter().map(|c| (c.id, 1)),
        )?;
        if !opts.filter.cidrs.is_empty() {
            let mut addrs: LpmTrie<_, AddrKey, u8> =
                LpmTrie::try_from(ebpf.map_mut(names::ADDRS).context("ADDRS map missing")?)?;
            for c in &opts.filter.cidrs {
                let (plen, data) = c.lpm_key();
                addrs
                    .insert(&Key::new(plen, data), 1, 0)
                    .with_context(|| format!("adding {c} to the filter"))?;
            }
        }

        let logger = if opts.bpf_log {
            spawn_bpf_logger(&mut ebpf)
        } else {
            None
        };

        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        prog.load().map_err(hint_prog).with_context(|| {
            format!(
                "loading program {program} (kernel {})",
                format::kernel_release()
            )
        })?;
        prog.attach("sock", "inet_sock_set_state")
            .map_err(|e| privilege_hint(anyhow!(e)))
            .context("attaching to tracepoint sock:inet_sock_set_state")?;
        let mut prog_fds = vec![
            prog.fd()?
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating the program fd")?,
        ];

        let mut context_programs = Vec::new();
        for (prog_name, category, name, _, l) in &ctx_layouts {
            // tcp_destroy_sock runs for every socket freed: direct loads where its layout is
            // the one every kernel since 5.10 has (checked field by field).
            let prog_name = if *name == "tcp_destroy_sock"
                && *l == CtxLayout::DESTROY_FAST
                && !opts.force_portable
            {
                names::DESTROY_FAST_PROGRAM
            } else {
                prog_name
            };
            let attached = (|| -> anyhow::Result<()> {
                let p: &mut TracePoint = ebpf
                    .program_mut(prog_name)
                    .with_context(|| format!("program {prog_name} missing"))?
                    .try_into()?;
                p.load().map_err(hint_prog)?;
                p.attach(category, name)
                    .map_err(|e| privilege_hint(anyhow!(e)))?;
                prog_fds.push(p.fd()?.as_fd().try_clone_to_owned()?);
                Ok(())
            })();
            match attached {
                Ok(()) => context_programs.push(format!("{category}:{name}")),
                Err(e) => unavailable.push(format!("{category}:{name} ({e:#})")),
            }
        }

        let ring = match ebpf.take_map(names::EVENTS).context("EVENTS map missing")? {
            aya::maps::Map::RingBuf(m) => m,
            _ => bail!("the EVENTS map is not a ring buffer"),
        };
        let ring = Ring::new(ring, opts.ring_bytes as usize)
            .map_err(|e| anyhow!("mapping the ring buffer: {e}"))?;
        // SAFETY: the Ring owns the map's fd and the AsyncFd owns the Ring, so the fd stays
        // open for as long as it is registered.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(names::COUNTERS)
                .context("COUNTERS map missing")?,
        )?;
        Ok(Self {
            ebpf: Some(ebpf),
            ring,
            counters,
            prog_fds,
            program,
            portable: matches!(choice, Choice::Portable(_)),
            mounted_tracefs,
            context_programs,
            unavailable,
            _logger: logger,
        })
    }

    /// Detaches the program (no new events); the ring buffer and counters stay readable.
    pub fn detach(&mut self) {
        self.ebpf = None;
    }

    pub fn totals(&self) -> anyhow::Result<Totals> {
        let mut t = Totals::default();
        for slot in 0..tracer_common::kind::COUNT as u32 {
            let per_cpu = self
                .counters
                .get(&slot, 0)
                .context("reading the COUNTERS map")?;
            for c in per_cpu.iter() {
                t.seen += c.seen;
                t.submitted += c.submitted;
                t.lost_ringbuf_full += c.lost_ringbuf_full;
                t.lost_read_error += c.lost_read_error;
                t.context_seen += c.context_seen;
            }
        }
        for fd in &self.prog_fds {
            t.recursion_misses +=
                recursion_misses(fd.as_raw_fd()).context("reading bpf_prog_info")?;
        }
        Ok(t)
    }
}

/// Inserts `entries` into the `u8`-valued hash map `name` (nothing to do when empty).
fn fill_map<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: impl IntoIterator<Item = (K, u8)>,
) -> anyhow::Result<()> {
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return Ok(());
    }
    let mut m: HashMap<_, K, u8> = HashMap::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("{name} map missing"))?,
    )?;
    for (k, v) in entries {
        m.insert(k, v, 0)
            .with_context(|| format!("filling the {name} filter"))?;
    }
    Ok(())
}

/// `Config::filter_owner` for the owner filters given.
fn owner_bits(f: &Filter) -> u8 {
    let bit = |on: bool, b: u8| if on { b } else { 0 };
    bit(!f.pids.is_empty(), OWNER_PID)
        | bit(!f.comms.is_empty(), OWNER_COMM)
        | bit(!f.cgroups.is_empty(), OWNER_CGROUP)
}

/// `recursion_misses` from `bpf_prog_info`: aya 0.14 does not expose it.
fn recursion_misses(fd: RawFd) -> io::Result<u64> {
    use aya_obj::generated::{bpf_cmd, bpf_prog_info};
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is a plain C struct of integers; all-zero is valid and is what
    // the kernel expects for the fields it does not fill.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most `info_len` bytes to `info`, which points to
    // a live, writable bpf_prog_info; `attr` matches the kernel's `info` member of bpf_attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

fn spawn_bpf_logger(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    match aya_log::EbpfLogger::init(ebpf) {
        Err(e) => {
            log::warn!("eBPF logger unavailable: {e}");
            None
        }
        Ok(logger) => {
            // SAFETY: the logger owns its ring buffer fd and the AsyncFd owns the logger.
            let mut logger =
                unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
                    .ok()?;
            Some(tokio::task::spawn(async move {
                while let Ok(mut guard) = logger.readable_mut().await {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }))
        }
    }
}

const PRIVILEGE_HINT: &str = "tracer needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8): run it with sudo";

/// Fails early, with the fix, when the process lacks the capabilities to load BPF (as
/// non-root, or as root with a reduced capability set, e.g. under systemd).
fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
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

fn privilege_hint(e: anyhow::Error) -> anyhow::Error {
    if is_eperm(&e) {
        e.context(PRIVILEGE_HINT)
    } else {
        e
    }
}

fn is_eperm(e: &anyhow::Error) -> bool {
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
struct Memlock {
    /// `uname -r`.
    release: String,
    /// The soft limit in bytes, `None` if unlimited.
    limit: Option<u64>,
    /// Why it could not be raised to unlimited.
    raise_error: Option<String>,
}

impl Memlock {
    /// `e` with the reason for an EPERM in its chain, if there is one.
    fn hint(&self, e: anyhow::Error, ring_bytes: u32) -> anyhow::Error {
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
    fn message(&self, ring_bytes: u32) -> Option<String> {
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
fn charges_memlock(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 11),
        _ => false,
    }
}

/// `64 KiB`, `8 MiB`, `1536 B`: exact binary units.
fn binary_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// Raises RLIMIT_MEMLOCK to unlimited (needs CAP_SYS_RESOURCE beyond the hard limit) and
/// reports what it is afterwards.
fn raise_memlock() -> Memlock {
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

    fn memlock(release: &str, limit: Option<u64>, raise_error: Option<&str>) -> Memlock {
        Memlock {
            release: release.into(),
            limit,
            raise_error: raise_error.map(str::to_string),
        }
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
