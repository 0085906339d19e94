//! How the programs read: tracepoint records (direct loads or `bpf_probe_read_kernel`), kernel
//! memory at offsets from BTF, and the address words.
use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use tracer_common::{AF_INET, AF_INET6, IPPROTO_TCP, SockHead, SockOffsets};

/// A loader-written global, whose fields are read in place with [`field!`]: `load()` copies
/// the whole struct onto the 512-byte stack (and costs a load and a store per word, every run).
#[inline(always)]
pub(crate) fn global_ptr<T>(g: &'static Global<T>) -> *const T {
    // `Global<T>` is `#[repr(transparent)]` over `MaybeUninit<T>`, itself laid out as `T`.
    (g as *const Global<T>).cast()
}

/// One field (a path: `sock.head`) of the struct behind a [`global_ptr`], read volatile: the
/// compiler sees the static's initial value (zeros) and would otherwise fold the read.
macro_rules! field {
    ($p:expr, $($f:ident).+) => {{
        let p = $p;
        // SAFETY: `p` points to a 'static global the loader wrote before loading; a plain
        // integer field, read in place.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).$($f).+)) }
    }};
}
pub(crate) use field;

/// How a program reads one field of the tracepoint record.
pub(crate) trait Record {
    /// Reads a `T` at byte offset `off` of the record; `Err` if it could not be read.
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()>;

    /// The 4 bytes at `off` as a `u32` in memory order, `off` only 2-byte aligned.
    #[inline(always)]
    fn read_u32_at2(&self, off: u32) -> Result<u32, ()> {
        self.read(off)
    }

    /// The 8 bytes at `off` as a `u64` in memory order, `off` only 2-byte aligned.
    #[inline(always)]
    fn read_u64_at2(&self, off: u32) -> Result<u64, ()> {
        self.read(off)
    }
}

/// Direct loads; `off` must be a compile-time constant once inlined (verifier rule).
pub(crate) struct Direct(pub(crate) *const u8);

impl Record for Direct {
    #[inline(always)]
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()> {
        // SAFETY: the pointer is the tracepoint context and every offset used with `Direct`
        // is a constant from `tracer_common` (`FAST_LAYOUT`, `CtxLayout::DESTROY_FAST`),
        // which the loader checked against the kernel's `format` file before choosing the
        // program; the verifier re-checks the access against the record size. Volatile keeps
        // it one load of exactly `T`.
        Ok(unsafe { core::ptr::read_volatile(self.0.add(off as usize).cast::<T>()) })
    }

    // The verifier refuses a context load not aligned to its own size, and some records
    // (tcp_destroy_sock's addresses, at 22, 26, 30, 46) are only 2-byte aligned: read them
    // as u16 words, put together in memory order.
    #[inline(always)]
    fn read_u32_at2(&self, off: u32) -> Result<u32, ()> {
        let (a, b) = (
            u32::from(self.read::<u16>(off)?),
            u32::from(self.read::<u16>(off + 2)?),
        );
        Ok(if cfg!(target_endian = "big") {
            (a << 16) | b
        } else {
            a | (b << 16)
        })
    }

    #[inline(always)]
    fn read_u64_at2(&self, off: u32) -> Result<u64, ()> {
        let (a, b) = (
            u64::from(self.read_u32_at2(off)?),
            u64::from(self.read_u32_at2(off + 4)?),
        );
        Ok(if cfg!(target_endian = "big") {
            (a << 32) | b
        } else {
            a | (b << 32)
        })
    }
}

/// `bpf_probe_read_kernel` at runtime offsets.
pub(crate) struct Probe(pub(crate) *const u8);

impl Record for Probe {
    #[inline(always)]
    fn read<T: Copy>(&self, off: u32) -> Result<T, ()> {
        // SAFETY: `bpf_probe_read_kernel` checks the address itself and fails cleanly; the
        // offsets come from the kernel's own `format` file.
        unsafe { bpf_probe_read_kernel(self.0.add(off as usize).cast::<T>()) }.map_err(|_| ())
    }
}

/// Reads an optional field: `Ok(None)` when the tracepoint has no such field.
#[inline(always)]
pub(crate) fn opt<T: Copy>(rec: &impl Record, off: i32) -> Result<Option<T>, ()> {
    if off < 0 {
        Ok(None)
    } else {
        rec.read::<T>(off as u32).map(Some)
    }
}

/// `bpf_probe_read_kernel` of a `T` at kernel address `base + off`.
#[inline(always)]
pub(crate) fn kread<T: Copy>(base: u64, off: u32) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails cleanly; the offsets
    // come from the running kernel's BTF.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.map_err(|_| ())
}

/// The IPv4 address (as read from memory, for [`v4_word`]) of a v4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) held as two words in memory order.
#[inline(always)]
pub(crate) fn v4_mapped(a: &[u64; 2]) -> Option<u32> {
    // SAFETY: two u64 words are 16 plain bytes, in memory order.
    let b = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(*a) };
    let mapped = b[..10].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff;
    mapped.then(|| u32::from_ne_bytes([b[12], b[13], b[14], b[15]]))
}

/// The 8-byte word whose memory holds the 4 address bytes of `v` (as read from the record)
/// followed by zeros.
#[inline(always)]
pub(crate) fn v4_word(v: u32) -> u64 {
    if cfg!(target_endian = "big") {
        u64::from(v) << 32
    } else {
        u64::from(v)
    }
}

/// The part of an event read from its socket: family, ports, addresses, state.
pub(crate) struct SockFields {
    pub(crate) family: u16,
    pub(crate) state: u8,
    /// Local port, host order.
    pub(crate) sport: u16,
    /// Remote port, host order.
    pub(crate) dport: u16,
    pub(crate) saddr: [u64; 2],
    pub(crate) daddr: [u64; 2],
}

/// Reads the socket at `sk` into `f`; `Ok(None)` when it is no IPv4/IPv6 TCP socket (a unix
/// stream socket accepted, a UDP socket's error), else `Ok(Some(net))` with its `struct net *`
/// when the head copy brought it along (0: not read). Where the kernel lays `__sk_common` out
/// as every 64-bit kernel does (`head`), the whole head is one copy: each
/// `bpf_probe_read_kernel` costs tens of nanoseconds whatever its size, and the accept
/// program ran twelve of them.
#[inline(always)]
pub(crate) fn read_tcp_sock(
    sk: u64,
    o: *const SockOffsets,
    f: &mut SockFields,
) -> Result<Option<u64>, ()> {
    let sk_protocol: u32 = field!(o, sk_protocol);
    if field!(o, head) != 0 {
        let mut h = core::mem::MaybeUninit::<SockHead>::uninit();
        // SAFETY: the helper writes at most `size_of::<SockHead>()` bytes to `h`, a valid
        // stack slot, and checks the kernel address itself (it fails cleanly). In place: a
        // `SockHead` returned by value would be copied twice more on the stack.
        let rc = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                h.as_mut_ptr().cast(),
                core::mem::size_of::<SockHead>() as u32,
                sk as *const core::ffi::c_void,
            )
        };
        if rc != 0 {
            return Err(());
        }
        // SAFETY: fully written by the successful read above; plain integers.
        let h = unsafe { h.assume_init_ref() };
        if (h.family != AF_INET && h.family != AF_INET6)
            || kread::<u16>(sk, sk_protocol)? != IPPROTO_TCP
        {
            return Ok(None);
        }
        f.family = h.family;
        f.state = h.state;
        f.sport = h.num;
        f.dport = u16::from_be(h.dport);
        if h.family == AF_INET {
            f.saddr = [v4_word(h.rcv_saddr), 0];
            f.daddr = [v4_word(h.daddr), 0];
        } else {
            f.saddr = h.v6_rcv_saddr;
            f.daddr = h.v6_daddr;
        }
        return Ok(Some(h.net));
    }
    let family: u16 = kread(sk, field!(o, skc_family))?;
    if (family != AF_INET && family != AF_INET6) || kread::<u16>(sk, sk_protocol)? != IPPROTO_TCP {
        return Ok(None);
    }
    f.family = family;
    if family == AF_INET {
        f.saddr = [v4_word(kread::<u32>(sk, field!(o, skc_rcv_saddr))?), 0];
        f.daddr = [v4_word(kread::<u32>(sk, field!(o, skc_daddr))?), 0];
    } else {
        let (s, d): (u32, u32) = (field!(o, skc_v6_rcv_saddr), field!(o, skc_v6_daddr));
        f.saddr = [kread(sk, s)?, kread(sk, s + 8)?];
        f.daddr = [kread(sk, d)?, kread(sk, d + 8)?];
    }
    f.state = kread(sk, field!(o, skc_state))?;
    f.sport = kread(sk, field!(o, skc_num))?;
    f.dport = u16::from_be(kread::<u16>(sk, field!(o, skc_dport))?);
    Ok(Some(0))
}

impl SockFields {
    pub(crate) const fn new() -> Self {
        Self {
            family: 0,
            state: 0,
            sport: 0,
            dport: 0,
            saddr: [0, 0],
            daddr: [0, 0],
        }
    }
}
