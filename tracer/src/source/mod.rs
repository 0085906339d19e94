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
    programs::{RawTracePoint, TracePoint},
};

use tokio::io::unix::AsyncFd;

use tracer_common::{
    AF_INET, AF_INET6, AcceptOffsets, AddrKey, Config, Counters, CtxLayout, NetnsOffsets,
    OWNER_CGROUP, OWNER_COMM, OWNER_PID, SockOffsets, TcpStatsOffsets, names,
};

#[cfg(test)]
mod object_tests;
mod privileges;
pub(crate) mod stats_spans;

use privileges::{attach_hint, check_privileges, privilege_hint, raise_memlock};

use crate::{
    decode::Family,
    filter::{Filter, comm_key},
    format::{self, Choice},
    reader::Reader,
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
    /// Read each connection's TCP counters at its close.
    pub tcp_stats: bool,
    /// Attach the accept program (owners of accepted sockets).
    pub accept: bool,
    /// The reader drains the ring at least this often (the kernel wakes it sooner when a
    /// quarter of the ring is pending).
    pub poll_interval: std::time::Duration,
    /// Most memory the reader's queue of raw records may hold ([`crate::reader`]).
    pub queue_bytes: usize,
}

/// Sums of the per-CPU counters plus the kernel's own count of skipped runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub seen: u64,
    pub submitted: u64,
    pub lost_ringbuf_full: u64,
    pub lost_read_error: u64,
    pub context_seen: u64,
    /// Accept records (owners of accepted sockets) not handed over: full ring or unreadable.
    /// Apart from the events' losses: they are no events, and an accepted socket whose
    /// record is lost only keeps its listener's owner.
    pub lost_accepts: u64,
    /// Connection counter records lost (their connection's `tcp` is then null).
    pub lost_stats: u64,
    /// `recursion_misses` of the program (bpf_prog_info): runs the kernel skipped.
    pub recursion_misses: u64,
}

pub struct Live {
    /// Owns the program and its link: dropping it detaches the program.
    ebpf: Option<Ebpf>,
    /// The thread that empties the ring buffer into a bounded queue.
    pub reader: Reader,
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
    /// Every record carries its socket's network namespace inode.
    pub reads_netns: bool,
    /// The syscall exits the accept program is attached to (empty: not attached).
    pub accept_programs: Vec<String>,
    /// The accept program walks the file table through BTF-typed pointers (not helpers).
    pub accept_btf: bool,
    /// Why accepted sockets are not named after their accepter, if they are not.
    pub accept_unavailable: Option<String>,
    /// Why error reports come from the classic tracepoint (no socket: matched to a
    /// connection by 4-tuple), when they do; `None` when the raw tracepoint carries the
    /// socket, or when there are no error reports at all.
    pub error_reports_by_tuple: Option<String>,
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
        let mut config = Config {
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
            read_netns: 0,
            _pad: 0,
        };
        // The socket's netns is two pointers away, at offsets from the kernel's BTF. Every
        // record carries it (lookups in user space go to the socket's own namespace);
        // without BTF `--netns` fails before anything is loaded, and otherwise the events
        // say 0 (unknown) and user space stays in its own namespace.
        let btf = crate::btf::Btf::from_sys_fs().context("reading the kernel's BTF");
        let netns_offsets = match btf.as_ref().map_err(|e| anyhow!("{e:#}")).and_then(|btf| {
            crate::btf::netns_offsets(btf).context("struct offsets from the kernel's BTF")
        }) {
            Ok(o) => {
                config.read_netns = 1;
                NetnsOffsets {
                    skc_net: o.skc_net,
                    net_inum: o.net_inum,
                }
            }
            Err(e) if !opts.filter.netns.is_empty() => {
                return Err(e.context("the netns filter needs the socket's namespace"));
            }
            Err(e) => {
                eprintln!(
                    "tracer: warning: sockets' network namespaces unknown ({e:#}): TIME_WAIT, owner and start-up lookups only in tracer's own namespace"
                );
                NetnsOffsets::default()
            }
        };
        // Who accepted each socket: the accepting task walks to the new socket through its
        // file table, at offsets from the BTF; the syscall exits must have `ret` where the
        // program reads it. Without either, accepted sockets keep their listener's owner.
        let accept = btf
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
            .and_then(|btf| {
                crate::btf::accept_offsets(btf).context("struct offsets from the kernel's BTF")
            })
            .and_then(|o| {
                for name in names::ACCEPT_TRACEPOINTS {
                    format::check_syscall_exit(&tracefs, name)?;
                }
                Ok(o)
            });
        // Each connection's counters at its close, at offsets from the BTF; a field this
        // kernel lacks is null in the output (said once here).
        let tcp_stats_offsets = match btf
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
            .and_then(crate::btf::tcp_stats_offsets)
        {
            _ if !opts.tcp_stats => TcpStatsOffsets::default(),
            Ok((o, missing)) => {
                if !missing.is_empty() {
                    eprintln!(
                        "tracer: this kernel's tcp_sock lacks {}: those connection counters will be null",
                        missing.join(", ")
                    );
                }
                o
            }
            Err(e) => {
                eprintln!(
                    "tracer: warning: connections' bytes, RTT and retransmits unknown ({e:#})"
                );
                TcpStatsOffsets::default()
            }
        };
        // Read in one or two copies of the tcp_sock where the layout allows.
        let tcp_stats_spans = stats_spans::plan(&tcp_stats_offsets);
        let (accept_offsets, mut accept_unavailable) = match accept {
            _ if !opts.accept => (AcceptOffsets::default(), Some("--no-accept".to_string())),
            // The fallback paths: a field per read.
            Ok(mut o) if opts.force_portable => {
                o.fdt_pair = 0;
                o.sock.head = 0;
                (o, None)
            }
            Ok(o) => (o, None),
            Err(e) => (AcceptOffsets::default(), Some(format!("{e:#}"))),
        };
        // Error reports with their socket: the raw tracepoint's argument is the `struct
        // sock *`, read at these offsets. Without them, the classic tracepoint (a tuple).
        let error_sock = btf
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
            .and_then(|btf| {
                crate::btf::sock_offsets(btf).context("struct offsets from the kernel's BTF")
            })
            .and_then(|o| {
                if opts.force_portable {
                    bail!("--force-portable")
                }
                Ok(o)
            });
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
            .override_global(names::ACCEPT_OFFSETS, &accept_offsets, true)
            .override_global(
                names::ERROR_REPORT_OFFSETS,
                error_sock.as_ref().unwrap_or(&SockOffsets::default()),
                true,
            )
            .override_global(names::TCP_STATS_OFFSETS, &tcp_stats_offsets, true)
            .override_global(names::TCP_STATS_SPANS, &tcp_stats_spans, true)
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
            .map_err(|e| attach_hint(anyhow!(e)))
            .context("attaching to tracepoint sock:inet_sock_set_state")?;
        let mut prog_fds = vec![
            prog.fd()?
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating the program fd")?,
        ];

        let mut context_programs = Vec::new();
        // inet_sk_error_report as a raw tracepoint first: its reports then carry their
        // socket. Where the kernel refuses raw tracepoints (or has no BTF), the classic
        // program below takes its place.
        let mut error_reports_by_tuple = None;
        let mut raw_error_reports = false;
        if opts.context_events
            && ctx_layouts
                .iter()
                .any(|(_, _, name, _, _)| *name == names::ERROR_REPORT_RAW_TRACEPOINT)
        {
            let attached = error_sock
                .as_ref()
                .map_err(|e| anyhow!("{e:#}"))
                .and_then(|_| {
                    let p: &mut RawTracePoint = ebpf
                        .program_mut(names::ERROR_REPORT_RAW_PROGRAM)
                        .with_context(|| {
                            format!("program {} missing", names::ERROR_REPORT_RAW_PROGRAM)
                        })?
                        .try_into()?;
                    p.load().map_err(hint_prog)?;
                    p.attach(names::ERROR_REPORT_RAW_TRACEPOINT)
                        .map_err(|e| privilege_hint(anyhow!(e)))?;
                    prog_fds.push(p.fd()?.as_fd().try_clone_to_owned()?);
                    Ok(())
                });
            match attached {
                Ok(()) => {
                    raw_error_reports = true;
                    context_programs.push(format!(
                        "sock:{} (raw tracepoint: with its socket)",
                        names::ERROR_REPORT_RAW_TRACEPOINT
                    ));
                }
                Err(e) => error_reports_by_tuple = Some(format!("{e:#}")),
            }
        }
        for (prog_name, category, name, _, l) in &ctx_layouts {
            if *name == names::ERROR_REPORT_RAW_TRACEPOINT && raw_error_reports {
                continue;
            }
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

        let mut accept_programs = Vec::new();
        let mut accept_btf = false;
        if accept_unavailable.is_none() {
            // The file table through BTF-typed pointers where the verifier takes it (5.11+),
            // a helper call per pointer otherwise (and with --force-portable).
            let loads = |ebpf: &mut Ebpf, name: &str| -> anyhow::Result<()> {
                let p: &mut TracePoint = ebpf
                    .program_mut(name)
                    .with_context(|| format!("program {name} missing"))?
                    .try_into()?;
                p.load().map_err(hint_prog)?;
                Ok(())
            };
            let prog =
                if !opts.force_portable && loads(&mut ebpf, names::ACCEPT_BTF_PROGRAM).is_ok() {
                    names::ACCEPT_BTF_PROGRAM
                } else {
                    names::ACCEPT_PROGRAM
                };
            let attached = (|| -> anyhow::Result<()> {
                if prog == names::ACCEPT_PROGRAM {
                    loads(&mut ebpf, prog)?;
                }
                let p: &mut TracePoint = ebpf
                    .program_mut(prog)
                    .with_context(|| format!("program {prog} missing"))?
                    .try_into()?;
                // One program, one link per syscall exit; both or neither, so every accept
                // is named the same way.
                let mut links = Vec::new();
                for name in names::ACCEPT_TRACEPOINTS {
                    match p.attach("syscalls", name) {
                        Ok(l) => links.push(l),
                        Err(e) => {
                            for l in links {
                                let _ = p.detach(l);
                            }
                            return Err(privilege_hint(anyhow!(e)))
                                .with_context(|| format!("attaching to syscalls:{name}"));
                        }
                    }
                }
                prog_fds.push(p.fd()?.as_fd().try_clone_to_owned()?);
                Ok(())
            })();
            match attached {
                Ok(()) => {
                    accept_btf = prog == names::ACCEPT_BTF_PROGRAM;
                    accept_programs.extend(
                        names::ACCEPT_TRACEPOINTS
                            .iter()
                            .map(|n| format!("syscalls:{n}")),
                    );
                }
                Err(e) => accept_unavailable = Some(format!("{e:#}")),
            }
        }

        let ring = match ebpf.take_map(names::EVENTS).context("EVENTS map missing")? {
            aya::maps::Map::RingBuf(m) => m,
            _ => bail!("the EVENTS map is not a ring buffer"),
        };
        let ring = Ring::new(ring, opts.ring_bytes as usize)
            .map_err(|e| anyhow!("mapping the ring buffer: {e}"))?;
        let reader = Reader::spawn(ring, opts.poll_interval, opts.queue_bytes)
            .map_err(|e| anyhow!("starting the ring buffer's reader thread: {e}"))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(names::COUNTERS)
                .context("COUNTERS map missing")?,
        )?;
        Ok(Self {
            ebpf: Some(ebpf),
            reader,
            counters,
            prog_fds,
            program,
            portable: matches!(choice, Choice::Portable(_)),
            mounted_tracefs,
            context_programs,
            unavailable,
            reads_netns: config.read_netns != 0,
            accept_programs,
            accept_btf,
            accept_unavailable,
            error_reports_by_tuple,
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
                // The counter records follow transitions already counted: they are no TCP
                // events of their own (seen, submitted or filtered), only their losses count.
                if slot == tracer_common::kind::TCP_STATS {
                    t.lost_stats += c.lost_ringbuf_full + c.lost_read_error;
                    continue;
                }
                t.seen += c.seen;
                t.submitted += c.submitted;
                if slot == tracer_common::kind::ACCEPT {
                    t.lost_accepts += c.lost_ringbuf_full + c.lost_read_error;
                } else {
                    t.lost_ringbuf_full += c.lost_ringbuf_full;
                    t.lost_read_error += c.lost_read_error;
                }
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
    match aya_log::EbpfLogger::init_with_logger(ebpf, BpfLog) {
        Err(e) => {
            eprintln!("tracer: warning: --bpf-log: the eBPF program's log is unavailable: {e}");
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

/// Where `--bpf-log` writes the program's records: straight to stderr, whatever the
/// process's `RUST_LOG` filter (the program logs at debug; the default filter is warn, and
/// asking for `--bpf-log` is asking to see them).
struct BpfLog;

impl log::Log for BpfLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        eprintln!(
            "tracer: bpf: {} {}",
            r.level().as_str().to_ascii_lowercase(),
            r.args()
        );
    }

    fn flush(&self) {}
}
