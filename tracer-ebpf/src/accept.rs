//! Accepted sockets: who accepted them. The accepted socket's own transitions run in softirq,
//! so in a pre-fork server they would only ever name the listener's owner. Two programs, one
//! loaded: the file table walked through BTF-typed pointers, or with `bpf_probe_read_kernel`.
use aya_ebpf::{
    EbpfContext as _, Global,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_task_btf,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{AcceptOffsets, Counters, KOwner, SYSCALL_RET, kind};

use crate::{
    emit::{Fields, emit},
    filters::{addr_passes, known_owner_passes, listen_key, netns_passes, passes, read_sock_netns},
    maps::{CONFIG, COUNTERS, LISTEN_TGIDS, OWNERS},
    readers::{Direct, Record, SockFields, field, global_ptr, kread, read_tcp_sock},
};

#[unsafe(no_mangle)]
static ACCEPT_OFFSETS: Global<AcceptOffsets> = Global::new(AcceptOffsets::NONE);
/// The exit of `accept4()` / `accept()`: `ret` is the new file descriptor. Its socket is
/// found through the current task's file table and reported (an [`kind::ACCEPT`] record, the
/// accepting task's identity in it), and with owner filters the task becomes the socket's
/// owner in `OWNERS`, so `--pid WORKER` follows what a pre-fork server's worker accepted.
/// The path to the file table is walked with `bpf_probe_read_kernel` (every kernel with BTF).
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    accept::<false>(&ctx)
}

/// [`sys_exit_accept`] walking `current->files->fdt` with plain loads through BTF-typed
/// pointers (`bpf_get_current_task_btf`, 5.11+): the verifier knows the offsets (read-only
/// globals are constants to it) and checks each load against the kernel's BTF, and the JIT
/// makes them fault-safe loads, a few nanoseconds each instead of a helper call. The loader
/// tries this one first and falls back to [`sys_exit_accept`] where the verifier refuses it.
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept_btf(ctx: TracePointContext) -> u32 {
    accept::<true>(&ctx)
}

#[inline(always)]
fn accept<const BTF: bool>(ctx: &TracePointContext) -> u32 {
    let Ok(ret) = Direct(ctx.as_ptr().cast()).read::<i64>(SYSCALL_RET) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let o = global_ptr(&ACCEPT_OFFSETS);
    if field!(o, enabled) == 0 {
        return 0;
    }
    let Some(c) = COUNTERS.get_ptr_mut(kind::ACCEPT) else {
        return 0;
    };
    if accept_fill::<BTF>(o, ret as u64, c).is_err() {
        bump!(c, lost_read_error);
        debug!(ctx, "accept: the accepted socket could not be read");
    }
    0
}

/// A load through a BTF-typed kernel pointer (see [`sys_exit_accept_btf`]).
#[inline(always)]
fn btf_load<T: Copy>(base: u64, off: u32) -> T {
    // SAFETY: `base` comes from `bpf_get_current_task_btf` or a pointer member loaded from
    // it, and `off` is a member offset from the kernel's BTF: the verifier checks the access
    // against the member's type and rejects the program otherwise; the JIT turns the load
    // into one that yields 0 instead of faulting on a bad address.
    unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const T) }
}

/// The accepting task's file table: `(max_fds, fd array)`.
#[inline(always)]
fn fd_table<const BTF: bool>(o: *const AcceptOffsets) -> Result<(u32, u64), ()> {
    if BTF {
        // SAFETY: a helper without preconditions.
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        let fdt: u64 = btf_load(
            btf_load::<u64>(task, field!(o, task_files)),
            field!(o, files_fdt),
        );
        return Ok((
            btf_load(fdt, field!(o, fdt_max_fds)),
            btf_load(fdt, field!(o, fdt_fd)),
        ));
    }
    // SAFETY: a helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task, field!(o, task_files))?;
    let fdt: u64 = kread(files, field!(o, files_fdt))?;
    if field!(o, fdt_pair) != 0 {
        let p: FdtPair = kread(fdt, field!(o, fdt_max_fds))?;
        Ok((p.max_fds, p.fd))
    } else {
        Ok((
            kread::<u32>(fdt, field!(o, fdt_max_fds))?,
            kread::<u64>(fdt, field!(o, fdt_fd))?,
        ))
    }
}

/// `fdtable.max_fds` and `fdtable.fd`, 8 bytes apart (the padding between them).
#[repr(C)]
#[derive(Clone, Copy)]
struct FdtPair {
    max_fds: u32,
    _pad: u32,
    fd: u64,
}

#[inline(always)]
fn accept_fill<const BTF: bool>(
    o: *const AcceptOffsets,
    fd: u64,
    c: *mut Counters,
) -> Result<(), ()> {
    let (max_fds, fds) = fd_table::<BTF>(o)?;
    if fds == 0 || fd >= u64::from(max_fds) {
        return Ok(());
    }
    let file: u64 = kread(fds + fd * 8, 0)?;
    if file == 0 {
        // Already closed by another thread of the process.
        return Ok(());
    }
    let sock: u64 = kread(file, field!(o, file_private_data))?;
    let sk: u64 = kread(sock, field!(o, socket_sk))?;
    if sk == 0 {
        return Ok(());
    }
    // SAFETY: a field of the global behind `o` (only its address is taken).
    let so = unsafe { core::ptr::addr_of!((*o).sock) };
    let mut s = SockFields::new();
    // A unix (or other) stream socket: nothing to attribute.
    let Some(net) = read_tcp_sock(sk, so, &mut s)? else {
        return Ok(());
    };
    let cfg = CONFIG.load();
    let netns = read_sock_netns(&cfg, sk, net, so);
    // SAFETY: a helper without preconditions.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    // Accepted by the process that made its listener (a single-process server): user space
    // already has that process as the owner (inherited from the listener), so the record
    // would say nothing new. It is skipped, and not counted as seen: half of this program's
    // cost is the record. Never with owner filters, whose kernel map must learn every accept.
    if cfg.filter_owner == 0
        // SAFETY: a map value read at once.
        && unsafe { LISTEN_TGIDS.get(listen_key(netns, s.sport)) }.is_some_and(|&t| t == tgid)
    {
        return Ok(());
    }
    bump!(c, context_seen);
    if !passes(&cfg, s.family, s.sport, s.dport)
        || !addr_passes(&cfg, s.family, &s.saddr, &s.daddr)
        || !netns_passes(&cfg, sk, netns)
    {
        return Ok(());
    }
    if cfg.filter_owner != 0 {
        let mut ko = KOwner {
            tgid,
            ..KOwner::default()
        };
        // SAFETY: helpers without preconditions; `ko.comm` is a valid 16-byte buffer.
        unsafe {
            ko.cgroup_id = bpf_get_current_cgroup_id();
            bpf_get_current_comm(ko.comm.as_mut_ptr().cast(), 16);
        }
        let _ = OWNERS.insert(sk, ko, 0);
        if !known_owner_passes(&cfg, sk) {
            return Ok(());
        }
    }
    emit(
        &cfg,
        &Fields {
            kind: kind::ACCEPT,
            skaddr: sk,
            saddr: s.saddr,
            daddr: s.daddr,
            sport: s.sport,
            dport: s.dport,
            family: s.family,
            oldstate: s.state,
            newstate: 0,
            value: 0,
            netns,
        },
        c,
    );
    Ok(())
}
