//! Kernel side of tracer: `sock:inet_sock_set_state` (two programs, one is loaded), plus one
//! program per context tracepoint (resets, retransmits, error reports, socket destruction).
//!
//! Kept deliberately small (read, filter, reserve, submit, count): every instruction here
//! runs for every TCP state change on the host, and the longer the program runs the wider
//! the window in which the kernel skips a nested run of it (`recursion_misses`).
//!
//! - `inet_sock_set_state` reads the record by direct loads at the compile-time offsets of
//!   `tracer_common::layout` (every mainline kernel since 5.6). Direct loads are far cheaper
//!   than `bpf_probe_read_kernel` per field; the verifier only accepts them at
//!   `ctx + constant`, so even the IPv6 addresses are read as aligned u64 words.
//! - `inet_sock_set_state_portable` reads at offsets the loader took from the running
//!   kernel's `format` file (the `LAYOUT` global), through `bpf_probe_read_kernel`. The
//!   loader picks it only when the kernel's layout differs.
//! - `sys_exit_accept` (attached to `sys_exit_accept4` and `sys_exit_accept`) names the
//!   process that accepted a socket: the accepted socket's own transitions run in softirq,
//!   so in a pre-fork server they would only ever name the listener's owner.
//!
//! Modules: [`maps`] (maps and shared globals), [`readers`] (record and kernel-memory reads),
//! [`filters`], [`emit`] (reserve, write, submit, wake-up), and the programs: [`transition`],
//! [`context`], [`accept`]. The names the loader looks up (`tracer_common::names`) are checked
//! against the built object by the loader's unit tests.
#![no_std]
#![no_main]

/// Adds one to a counter in this CPU's `COUNTERS` slot of one program. Each program has its
/// own slot (indexed by its kind): the kernel never nests a program with itself on a CPU, so
/// a slot has one writer at a time, although different programs nest (a softirq context
/// event interrupting a transition).
macro_rules! bump {
    ($c:expr, $field:ident) => {{
        let c: *mut Counters = $c;
        // SAFETY: `c` is a valid per-CPU map value from `get_ptr_mut`, written only by this
        // program on this CPU (see above).
        unsafe { (*c).$field += 1 };
    }};
}
// (Before the modules: a `macro_rules!` is in scope only after its definition.)

mod accept;
mod context;
mod emit;
mod filters;
mod maps;
mod readers;
mod stats;
mod transition;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
