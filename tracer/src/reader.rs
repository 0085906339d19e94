//! The reader thread: copies raw records out of the ring buffer into a bounded queue, so the
//! ring is emptied as fast as records can be copied, and decoding, the table and the output
//! run behind it on the event loop.
//!
//! A burst (every connection of a host closed at once) emits events faster than they can be
//! formatted; the kernel ring absorbs only what fits in it (about 70,000 events in the default
//! 8 MiB). Here the ring is drained at memcpy speed into chunks of [`CHUNK_BYTES`], handed to
//! the pipeline in the order they were read: the ring's own order, which is everything the
//! table relies on (per-CPU order of the events), is kept exactly.
//!
//! The queue is bounded (`--queue-size`): when its chunks reach the bound the reader stops
//! draining until the pipeline has freed one, the ring fills, and the kernel counts what it
//! cannot take as it always did (`ringbuf_full`): a loss is counted and reported in one place,
//! whichever buffer was the one that ran out.
//!
//! Every drain is a [`Batch`] carrying the time it started, even an empty one: it is the
//! pipeline's clock. Every event submitted before that time was in that batch or an earlier
//! one, so the grace periods and lookups the pipeline times against it cannot release a
//! record whose late events are still queued, however far the pipeline lags behind.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::NonNull,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use tokio::sync::mpsc;

use crate::{clock::monotonic_ns, ring::Ring};

/// One chunk of the queue: about 8,700 records of 120 bytes.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Chunks kept for reuse once the pipeline is done with them; the rest are unmapped, so the
/// memory of a burst goes back to the system when it is over.
const POOL_KEEP: usize = 4;

/// Records stored back to back in an anonymous mapping of [`CHUNK_BYTES`], each as its length
/// (`u32`, native order) and its bytes. Mapped and unmapped directly (not through `malloc`,
/// whose heaps would keep a burst's memory).
pub struct Chunk {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only used through it.
unsafe impl Send for Chunk {}

impl Chunk {
    fn new() -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHUNK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast())
            .map(|ptr| Self { ptr, len: 0 })
            .ok_or_else(|| io::Error::other("mmap returned NULL"))
    }

    /// Appends a record; false (nothing written) if it does not fit.
    fn push(&mut self, rec: &[u8]) -> bool {
        let need = 4 + rec.len();
        if need > CHUNK_BYTES - self.len {
            return false;
        }
        let n = u32::try_from(rec.len()).unwrap_or(u32::MAX);
        // SAFETY: `len + need <= CHUNK_BYTES`, inside the mapping; the source is a live slice
        // that does not overlap it.
        unsafe {
            let dst = self.ptr.as_ptr().add(self.len);
            std::ptr::copy_nonoverlapping(n.to_ne_bytes().as_ptr(), dst, 4);
            std::ptr::copy_nonoverlapping(rec.as_ptr(), dst.add(4), rec.len());
        }
        self.len += need;
        true
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `push`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: exactly the region `mmap` returned.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), CHUNK_BYTES) };
    }
}

/// One drain of the ring (or a part of it, a chunk at a time).
pub struct Batch {
    chunk: Option<Chunk>,
    /// `CLOCK_MONOTONIC` when the last complete drain ended (the ring found empty, as the
    /// old loop found it before it settled); `None` for a chunk sent full in the middle of
    /// the first drain.
    pub read_ns: Option<u64>,
}

impl Batch {
    /// The records, in ring order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.chunk.as_ref().map_or(&[][..], Chunk::bytes);
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let n = (u32::from_ne_bytes(*len) as usize).min(tail.len());
            let (rec, tail) = tail.split_at(n);
            rest = tail;
            Some(rec)
        })
    }
}

/// What the reader thread and the event loop share.
struct Shared {
    /// Chunks that exist (being filled, queued, being read, or in the pool).
    chunks: AtomicUsize,
    /// Batches sent and not yet received by the event loop.
    queued: AtomicUsize,
    /// Most chunks that existed at once.
    peak: AtomicUsize,
    /// Times the reader found the queue at its bound and left records in the ring.
    full: AtomicUsize,
    pool: Mutex<Vec<Chunk>>,
    stop: AtomicBool,
}

impl Shared {
    fn new() -> Self {
        Self {
            chunks: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            full: AtomicUsize::new(0),
            pool: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        }
    }

    /// A chunk the pipeline is done with: kept for reuse (up to [`POOL_KEEP`]) or unmapped,
    /// which makes room under the bound.
    fn give_back(&self, mut c: Chunk) {
        c.len = 0;
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < POOL_KEEP {
            pool.push(c);
        } else {
            drop(pool);
            drop(c);
            self.chunks.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The reader thread's end of the event loop.
pub struct Reader {
    rx: mpsc::UnboundedReceiver<io::Result<Batch>>,
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
    max_chunks: usize,
}

impl Reader {
    /// Starts the thread: drains `ring` when the kernel wakes it and at least every `poll`,
    /// keeping at most `max_bytes` of chunks (at least one).
    pub fn spawn(ring: Ring, poll: Duration, max_bytes: usize) -> io::Result<Self> {
        let max_chunks = chunks_for(max_bytes);
        let shared = Arc::new(Shared::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("tracer-reader".into())
            .spawn(move || read(ring, poll, max_chunks, &s, &tx))?;
        Ok(Self {
            rx,
            shared,
            thread: Some(thread),
            max_chunks,
        })
    }

    /// The next batch (`None` once the thread has stopped and everything was taken).
    pub async fn next(&mut self) -> Option<io::Result<Batch>> {
        let b = self.rx.recv().await;
        if matches!(b, Some(Ok(_))) {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        b
    }

    /// Gives a batch's chunk back once its records are handled.
    pub fn recycle(&self, b: Batch) {
        if let Some(c) = b.chunk {
            self.shared.give_back(c);
        }
    }

    /// Tells the thread to drain the ring one last time and stop, then calls `f` with every
    /// batch still to come, in order, until the thread is gone.
    pub fn finish(&mut self, mut f: impl FnMut(&Batch) -> io::Result<()>) -> io::Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let mut result = Ok(());
        loop {
            match self.rx.try_recv() {
                Ok(Ok(b)) => {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    if result.is_ok() {
                        result = f(&b);
                    }
                    self.recycle(b);
                }
                Ok(Err(e)) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => thread::sleep(Duration::from_millis(1)),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result
    }

    /// The most memory the queue held at once, in bytes.
    pub fn peak_bytes(&self) -> usize {
        self.shared.peak.load(Ordering::Relaxed) * CHUNK_BYTES
    }

    /// The bound, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_chunks * CHUNK_BYTES
    }

    /// How many times the queue was at its bound (records were left in the ring).
    pub fn times_full(&self) -> usize {
        self.shared.full.load(Ordering::Relaxed)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Nothing takes the batches any more: the thread's sends fail and it ends.
        self.rx.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The queue's bound in chunks for `--queue-size` bytes: rounded down, at least one.
fn chunks_for(max_bytes: usize) -> usize {
    (max_bytes / CHUNK_BYTES).max(1)
}

/// A chunk from the pool, or a new one if the bound allows.
fn take_chunk(s: &Shared, max_chunks: usize) -> io::Result<Option<Chunk>> {
    if let Some(c) = s
        .pool
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
    {
        return Ok(Some(c));
    }
    let n = s.chunks.load(Ordering::Acquire);
    if n >= max_chunks {
        return Ok(None);
    }
    let c = Chunk::new()?;
    let n = s.chunks.fetch_add(1, Ordering::AcqRel) + 1;
    s.peak.fetch_max(n, Ordering::Relaxed);
    Ok(Some(c))
}

/// The error `drain` is stopped with when a chunk is full (the record stays in the ring).
fn chunk_full() -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, "chunk full")
}

/// An epoll instance watching the ring's fd, edge-triggered.
fn epoll_on(ring: &Ring) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd it returns is owned below.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 0,
    };
    // SAFETY: valid epoll and ring fds, and a live epoll_event.
    if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &raw mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ep)
}

/// The thread: wait, drain into chunks, send; until told to stop (then one last drain).
fn read(
    mut ring: Ring,
    poll: Duration,
    max_chunks: usize,
    s: &Shared,
    tx: &mpsc::UnboundedSender<io::Result<Batch>>,
) {
    let timeout = i32::try_from(poll.as_millis()).unwrap_or(1000).max(1);
    // Edge-triggered, as the event loop waited before: woken when the kernel wakes readers
    // (a quarter of the ring pending), not whenever a record is there (the poll timer picks
    // those up), so a steady trickle is read in batches.
    let ep = match epoll_on(&ring) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let send = |chunk: Option<Chunk>, read_ns: Option<u64>| {
        s.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(Ok(Batch { chunk, read_ns })).is_ok()
    };
    // The chunk being filled: kept across drains while the pipeline has batches waiting (it
    // would gain nothing from a partial one), so queued chunks are full.
    let mut current: Option<Chunk> = None;
    // When the last complete drain ended.
    let mut done_ns: Option<u64> = None;
    let mut waiting_for_room = false;
    loop {
        if tx.is_closed() {
            return;
        }
        let stopping = s.stop.load(Ordering::Acquire);
        if waiting_for_room {
            // The pipeline is behind: look again soon, the ring fills meanwhile.
            thread::sleep(Duration::from_millis(1));
        } else if !stopping {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: one writable epoll_event; `ep` is a valid epoll fd.
            unsafe { libc::epoll_wait(ep.as_raw_fd(), &raw mut ev, 1, timeout) };
        }
        waiting_for_room = false;
        // Everything in the ring, a chunk at a time.
        loop {
            let chunk = match &mut current {
                Some(c) => c,
                None => match take_chunk(s, max_chunks) {
                    Ok(Some(c)) => current.insert(c),
                    Ok(None) => {
                        s.full.fetch_add(1, Ordering::Relaxed);
                        waiting_for_room = true;
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                },
            };
            match ring.drain(|rec| {
                if chunk.push(rec) {
                    Ok(())
                } else {
                    Err(chunk_full())
                }
            }) {
                Ok(_) => break,
                // Full: on its way, timed by the last complete drain.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !chunk.is_empty() => {
                    if !send(current.take(), done_ns) {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        if waiting_for_room {
            continue;
        }
        done_ns = Some(monotonic_ns());
        if stopping || s.queued.load(Ordering::Acquire) == 0 {
            // The pipeline is waiting (or this is the end): what there is, with the clock.
            let chunk = current.take_if(|c| !c.is_empty());
            if !send(chunk, done_ns) {
                return;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_gives_back_its_records_in_order() {
        let mut c = Chunk::new().unwrap();
        let recs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        for r in &recs {
            assert!(c.push(r));
        }
        let b = Batch {
            chunk: Some(c),
            read_ns: None,
        };
        let got: Vec<&[u8]> = b.records().collect();
        assert_eq!(got.len(), recs.len());
        assert!(got.iter().zip(&recs).all(|(a, b)| *a == b.as_slice()));
    }

    #[test]
    fn the_queue_never_holds_more_chunks_than_its_bound() {
        // --queue-size 3 MiB: three chunks, then none until the pipeline gives one back
        // (the reader then leaves the records in the ring, where the kernel counts what does
        // not fit as ringbuf_full).
        let s = Shared::new();
        let max = chunks_for(3 << 20);
        assert_eq!(max, 3);
        let mut held: Vec<Chunk> = (0..max)
            .map(|_| take_chunk(&s, max).unwrap().expect("under the bound"))
            .collect();
        assert!(take_chunk(&s, max).unwrap().is_none(), "past the bound");
        assert!(take_chunk(&s, max).unwrap().is_none(), "still past it");
        assert_eq!(s.chunks.load(Ordering::Relaxed), max);
        assert_eq!(s.peak.load(Ordering::Relaxed), max);
        // One handled: it is reused, and the bound still holds.
        let mut c = held.pop().unwrap();
        assert!(c.push(&[1, 2, 3]));
        s.give_back(c);
        let again = take_chunk(&s, max).unwrap().expect("the chunk given back");
        assert!(again.is_empty(), "a reused chunk starts empty");
        assert!(take_chunk(&s, max).unwrap().is_none());
        assert_eq!(s.chunks.load(Ordering::Relaxed), max);
        held.push(again);
        // The pool keeps POOL_KEEP chunks; the rest are unmapped, freeing room.
        let s = Shared::new();
        let max = POOL_KEEP + 2;
        let all: Vec<Chunk> = (0..max)
            .map(|_| take_chunk(&s, max).unwrap().unwrap())
            .collect();
        for c in all {
            s.give_back(c);
        }
        assert_eq!(s.chunks.load(Ordering::Relaxed), POOL_KEEP);
        assert_eq!(s.pool.lock().unwrap().len(), POOL_KEEP);
        assert_eq!(s.peak.load(Ordering::Relaxed), max);
        // The bound: POOL_KEEP from the pool, then two new ones, then none.
        let again: Vec<Chunk> = (0..max)
            .map(|_| take_chunk(&s, max).unwrap().expect("under the bound"))
            .collect();
        assert!(take_chunk(&s, max).unwrap().is_none());
        assert_eq!(again.len(), max);
        drop(held);
    }

    #[test]
    fn the_queue_bound_in_chunks() {
        assert_eq!(chunks_for(128 << 20), 128, "the default --queue-size");
        assert_eq!(chunks_for(1 << 20), 1, "the least --queue-size");
        assert_eq!(chunks_for((1 << 20) + (1 << 19)), 1, "rounded down");
        assert_eq!(
            chunks_for(0),
            1,
            "never zero: the reader could read nothing"
        );
    }

    #[test]
    fn a_full_chunk_refuses_a_record_whole() {
        let mut c = Chunk::new().unwrap();
        let rec = [7u8; 112];
        let mut n = 0;
        while c.push(&rec) {
            n += 1;
        }
        assert_eq!(n, CHUNK_BYTES / 116);
        let b = Batch {
            chunk: Some(c),
            read_ns: None,
        };
        assert_eq!(b.records().count(), n);
        assert!(b.records().all(|r| r == rec));
        let empty = Batch {
            chunk: None,
            read_ns: None,
        };
        assert_eq!(empty.records().count(), 0);
    }
}
