//! Accepted sockets: who accepted them. The accepted socket's own transitions run in softirq,
//! so in a pre-fork server they would only ever name the listener's owner.
use aya_ebpf::{
    EbpfContext as _, Global,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    AF_INET, AF_INET6, AcceptOffsets, Counters, IPPROTO_TCP, KOwner, SYSCALL_RET, kind,
};

use crate::{
    emit::{Fields, emit},
    filters::{addr_passes, known_owner_passes, netns_passes, passes, sock_netns},
    maps::{CONFIG, COUNTERS, OWNERS},
    readers::{Direct, Record, kread, v4_word},
};

#[unsafe(no_mangle)]
static ACCEPT_OFFSETS: Global<AcceptOffsets> = Global::new(AcceptOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    skc_family: 0,
    skc_state: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_rcv_saddr: 0,
    skc_daddr: 0,
    skc_v6_rcv_saddr: 0,
    skc_v6_daddr: 0,
    sk_protocol: 0,
    enabled: 0,
});
/// The exit of `accept4()` / `accept()`: `ret` is the new file descriptor. Its socket is
/// found through the current task's file table and reported (an [`kind::ACCEPT`] record, the
/// accepting task's identity in it), and with owner filters the task becomes the socket's
/// owner in `OWNERS`, so `--pid WORKER` follows what a pre-fork server's worker accepted.
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let Ok(ret) = Direct(ctx.as_ptr().cast()).read::<i64>(SYSCALL_RET) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let o = ACCEPT_OFFSETS.load();
    if o.enabled == 0 {
        return 0;
    }
    let Some(c) = COUNTERS.get_ptr_mut(kind::ACCEPT) else {
        return 0;
    };
    if accept_fill(&o, ret as u64, c).is_err() {
        bump!(c, lost_read_error);
        debug!(&ctx, "accept: the accepted socket could not be read");
    }
    0
}

#[inline(always)]
fn accept_fill(o: &AcceptOffsets, fd: u64, c: *mut Counters) -> Result<(), ()> {
    // SAFETY: a helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task, o.task_files)?;
    let fdt: u64 = kread(files, o.files_fdt)?;
    let max_fds: u32 = kread(fdt, o.fdt_max_fds)?;
    if fd >= u64::from(max_fds) {
        return Ok(());
    }
    let fds: u64 = kread(fdt, o.fdt_fd)?;
    let file: u64 = kread(fds + fd * 8, 0)?;
    if file == 0 {
        // Already closed by another thread of the process.
        return Ok(());
    }
    let sock: u64 = kread(file, o.file_private_data)?;
    let sk: u64 = kread(sock, o.socket_sk)?;
    if sk == 0 {
        return Ok(());
    }
    let family: u16 = kread(sk, o.skc_family)?;
    if family != AF_INET && family != AF_INET6 {
        // A unix (or other) stream socket.
        return Ok(());
    }
    if kread::<u16>(sk, o.sk_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    bump!(c, context_seen);
    let cfg = CONFIG.load();
    let sport: u16 = kread(sk, o.skc_num)?;
    let dport = u16::from_be(kread::<u16>(sk, o.skc_dport)?);
    if !passes(&cfg, family, sport, dport) {
        return Ok(());
    }
    let (saddr, daddr) = if family == AF_INET {
        (
            [v4_word(kread::<u32>(sk, o.skc_rcv_saddr)?), 0],
            [v4_word(kread::<u32>(sk, o.skc_daddr)?), 0],
        )
    } else {
        (
            [
                kread::<u64>(sk, o.skc_v6_rcv_saddr)?,
                kread::<u64>(sk, o.skc_v6_rcv_saddr + 8)?,
            ],
            [
                kread::<u64>(sk, o.skc_v6_daddr)?,
                kread::<u64>(sk, o.skc_v6_daddr + 8)?,
            ],
        )
    };
    if !addr_passes(&cfg, family, &saddr, &daddr) {
        return Ok(());
    }
    let netns = sock_netns(&cfg, sk);
    if !netns_passes(&cfg, sk, netns) {
        return Ok(());
    }
    if cfg.filter_owner != 0 {
        let mut ko = KOwner::default();
        // SAFETY: helpers without preconditions; `ko.comm` is a valid 16-byte buffer.
        unsafe {
            ko.tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            ko.cgroup_id = bpf_get_current_cgroup_id();
            bpf_get_current_comm(ko.comm.as_mut_ptr().cast(), 16);
        }
        let _ = OWNERS.insert(sk, ko, 0);
        if !known_owner_passes(&cfg, sk) {
            return Ok(());
        }
    }
    let state: u8 = kread(sk, o.skc_state)?;
    emit(
        &cfg,
        &Fields {
            kind: kind::ACCEPT,
            skaddr: sk,
            saddr,
            daddr,
            sport,
            dport,
            family,
            oldstate: state,
            newstate: 0,
            value: 0,
            netns,
        },
        c,
    );
    Ok(())
}
