//! How the programs read: tracepoint records (direct loads or `bpf_probe_read_kernel`), kernel
//! memory at offsets from BTF, and the address words.
use aya_ebpf::helpers::bpf_probe_read_kernel;

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
