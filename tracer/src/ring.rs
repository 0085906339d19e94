//! The ring buffer's consumer side, batched.
//!
//! aya's `RingBuf::next` publishes the consumer position after every record. The kernel's
//! `bpf_ringbuf_reserve` reads that position on every event, so while the reader drains,
//! nearly every reservation on the other CPU missed its cache (the reader had just written
//! the line): `__bpf_ringbuf_reserve` was half of the program's time in a profile. This
//! consumer reads the same memory layout (libbpf's and aya's: a consumer page, then the
//! producer page and the data pages mapped twice in a row so no record wraps) and publishes
//! its position once per [`PUBLISH_BYTES`] and at the end of a batch.
//!
//! The map's fd stays with aya's `RingBuf`, which keeps it open and serves `AsFd` for
//! epoll; its own consumer is never used.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::MapData;

/// `BPF_RINGBUF_BUSY_BIT`: the record is reserved but not yet submitted.
const BUSY: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`: the record was discarded; skip it.
const DISCARD: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`.
const HEADER: usize = 8;
/// Publish the consumer position at least this often within a batch, so a long batch frees
/// space for the producers as it goes (a sixty-fourth of the default 8 MiB ring).
pub const PUBLISH_BYTES: usize = 128 << 10;

/// One `mmap`ed region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::other("ring buffer offset out of range"))?;
        // SAFETY: a fresh shared mapping of the map's fd at an offset and length the kernel
        // checks (`ringbuf_map_mmap`); it is only read or written through the atomics below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast())
            .map(|ptr| Self { ptr, len })
            .ok_or_else(|| io::Error::other("mmap of the ring buffer returned NULL"))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region `mmap` returned; nothing borrows it past `Ring`'s life.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The ring buffer, read in batches.
pub struct Ring {
    /// Owns the map's fd (epoll waits on it).
    map: MapData,
    /// The consumer page (read-write): the consumer position at offset 0.
    consumer: Mapping,
    /// The producer page (producer position at offset 0), then the data pages.
    producer: Mapping,
    page: usize,
    mask: usize,
    /// A record that wraps around the end, made contiguous.
    scratch: Vec<u8>,
    /// Our position (published to `consumer` by [`Self::drain`]).
    pos: usize,
}

// SAFETY: the mappings are owned by this value and only used through `&mut self`.
unsafe impl Send for Ring {}

impl Ring {
    /// `size`: the map's data size in bytes (a power-of-two multiple of the page size, as
    /// the kernel requires of `max_entries`).
    pub fn new(map: MapData, size: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("page size unknown"))?;
        if !size.is_power_of_two() || size < page {
            return Err(io::Error::other(format!(
                "ring buffer size {size} is not a power-of-two multiple of the page size"
            )));
        }
        let fd = map.fd().as_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + size, libc::PROT_READ, page)?;
        let mut ring = Self {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            scratch: Vec::new(),
            pos: 0,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page is mapped read-write, page-aligned, and the kernel keeps
        // an `unsigned long` there; it lives as long as `self`.
        unsafe { self.consumer.ptr.cast::<AtomicUsize>().as_ref() }
    }

    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: as above, read-only; the kernel writes it with release semantics.
        unsafe { self.producer.ptr.cast::<AtomicUsize>().as_ref() }
    }

    /// Calls `f` with every record submitted so far, in order, and returns how many there
    /// were. Stops early (position published up to the failing record) if `f` fails.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let mut n = 0;
        let mut published = self.pos;
        // The producer position is read again only when we catch up with it: the kernel
        // writes it on every reservation, and reading it per record would pull its cache line
        // away from the producing CPU each time (as writing ours did).
        let mut prod = self.producer_pos().load(Ordering::Acquire);
        let result = loop {
            if self.pos == prod {
                prod = self.producer_pos().load(Ordering::Acquire);
                if self.pos == prod {
                    break Ok(());
                }
            }
            let off = self.pos & self.mask;
            // SAFETY: `off` < size and records and the size are multiples of 8, so the
            // 8-byte header is inside the data pages; the kernel writes it with an ordered xchg at
            // submit, paired with this acquire load.
            let header = unsafe {
                &*self
                    .producer
                    .ptr
                    .as_ptr()
                    .add(self.page + off)
                    .cast::<AtomicU32>()
            }
            .load(Ordering::Acquire);
            if header & BUSY != 0 {
                // Reserved, not yet submitted: the rest comes with the next batch.
                break Ok(());
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            if len > self.mask {
                break Err(io::Error::other(format!(
                    "ring buffer record of {len} bytes at position {}: the ring is corrupt",
                    self.pos
                )));
            }
            if header & DISCARD == 0 {
                let size = self.mask + 1;
                // SAFETY: the data pages are `size` bytes after the producer page; the range
                // read is `start .. start + first` with start + first <= size, and the rest
                // (a record that wraps) from the beginning of the data pages, len < size.
                // The producer no longer writes the record (not busy), and does not reuse it
                // before we publish a position past it.
                let data: &[u8] = unsafe {
                    let base = self.producer.ptr.as_ptr().add(self.page);
                    let start = (off + HEADER) & self.mask;
                    let first = len.min(size - start);
                    let head = std::slice::from_raw_parts(base.add(start), first);
                    if first == len {
                        head
                    } else {
                        self.scratch.clear();
                        self.scratch.extend_from_slice(head);
                        self.scratch
                            .extend_from_slice(std::slice::from_raw_parts(base, len - first));
                        &self.scratch
                    }
                };
                if let Err(e) = f(data) {
                    break Err(e);
                }
                n += 1;
            }
            self.pos = self.pos.wrapping_add((HEADER + len).next_multiple_of(8));
            if self.pos.wrapping_sub(published) >= PUBLISH_BYTES {
                self.consumer_pos().store(self.pos, Ordering::Release);
                published = self.pos;
            }
        };
        if published != self.pos {
            self.consumer_pos().store(self.pos, Ordering::Release);
        }
        result.map(|()| n)
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}
