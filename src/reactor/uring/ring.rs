//! The io_uring itself, behind a safe interface: the one place of the uring backend with
//! `unsafe` (the kernel reads and writes memory named by raw addresses in submissions).
//!
//! Owns: the ring (one per worker, created on the worker's own thread: it is set up
//! `SINGLE_ISSUER | DEFER_TASKRUN`, so completions are only produced inside this thread's
//! `io_uring_enter`), the provided-buffer ring every multishot receive takes its buffers
//! from, the buffers of sends in flight, and the eventfd read that wakes the worker.
//! Called by the uring worker only; it never interprets bytes.
//!
//! Memory rules the interface keeps: a send's bytes are moved into [`Ring::send`] and stay
//! here until that send's completion; a receive buffer is lent out by [`Ring::recv_buf`]
//! between its completion and [`Ring::recycle`]; nothing the kernel may still write is
//! freed while operations are in flight (on an abnormal teardown it is leaked instead).

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// What a completion belongs to (the top bits of its `user_data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A multishot accept on listener `0` (main) or `1` (second).
    Accept(u8),
    /// A multishot receive of the connection at slab `key`, generation `gen` (low 28 bits).
    Recv {
        /// Slab key.
        key: u32,
        /// Generation, masked to [`GEN_MASK`].
        gen: u32,
    },
    /// A send; its owner is in the completion's `owner`.
    Send,
    /// The eventfd read (the inbox was woken).
    Wake,
    /// A cancel request's own completion.
    Cancel,
}

/// Generations carried in `user_data` are compared modulo 2^28.
pub const GEN_MASK: u32 = (1 << 28) - 1;
const KIND_SHIFT: u32 = 60;
const K_ACCEPT: u64 = 1;
const K_RECV: u64 = 2;
const K_SEND: u64 = 3;
const K_WAKE: u64 = 4;
const K_CANCEL: u64 = 5;

fn ud_recv(key: u32, gen: u32) -> u64 {
    K_RECV << KIND_SHIFT | u64::from(gen & GEN_MASK) << 32 | u64::from(key)
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// What it belongs to.
    pub op: Op,
    /// The result: bytes, a file descriptor, or a negative errno.
    pub res: i32,
    /// More completions follow from the same (multishot) request.
    pub more: bool,
    /// For a receive: the provided buffer holding the bytes.
    pub buf: Option<u16>,
    /// For a send: the connection (key, generation) it was for, and the bytes it carried.
    pub owner: (u32, u32, u32),
}

/// Bytes of one send in flight, with the connection they belong to.
struct Sending {
    bytes: Vec<u8>,
    key: u32,
    gen: u32,
}

/// Send buffers kept for reuse, by size class (powers of two from 256 B to 64 KiB). A
/// fan-out stages a send for every subscriber each turn; allocating and freeing those
/// through the allocator made it hand pages back and fault them in again every turn (4% of
/// the worker's time in page faults at 10k subscribers). Whatever a class did not need over
/// the last trim period is freed at the next [`Pool::trim`], so an idle worker keeps none.
#[derive(Default)]
struct Pool {
    free: [Vec<Vec<u8>>; CLASSES],
    /// Fewest buffers each class had free since the last trim (what it did not need).
    spare: [usize; CLASSES],
}

const CLASSES: usize = 9;
const MIN_CLASS: usize = 256;

impl Pool {
    fn class_of_need(n: usize) -> usize {
        let c = n.max(MIN_CLASS).next_power_of_two().trailing_zeros() as usize - MIN_CLASS.trailing_zeros() as usize;
        c.min(CLASSES - 1)
    }

    fn take(&mut self, need: usize) -> Vec<u8> {
        let c = Self::class_of_need(need);
        match self.free[c].pop() {
            Some(b) => {
                self.spare[c] = self.spare[c].min(self.free[c].len());
                b
            }
            None => Vec::with_capacity(MIN_CLASS << c),
        }
    }

    fn put(&mut self, mut b: Vec<u8>) {
        let cap = b.capacity();
        if cap < MIN_CLASS {
            return;
        }
        // The largest class whose size the buffer holds (a grown buffer serves its class).
        let c = ((cap.ilog2() as usize) - MIN_CLASS.trailing_zeros() as usize).min(CLASSES - 1);
        b.clear();
        self.free[c].push(b);
    }

    fn trim(&mut self) {
        for c in 0..CLASSES {
            let drop = self.spare[c].min(self.free[c].len());
            let keep = self.free[c].len() - drop;
            self.free[c].truncate(keep);
            if self.free[c].capacity() > 4 * keep.max(16) {
                self.free[c].shrink_to_fit();
            }
            self.spare[c] = self.free[c].len();
        }
    }
}

/// The provided-buffer ring: `count` buffers of `size` bytes that multishot receives take
/// from (so a connection holds no receive buffer while it waits), handed back one by one.
struct BufRing {
    /// The ring of buffer descriptors (page-aligned, mmap'd).
    ring: *mut types::BufRingEntry,
    ring_len: usize,
    /// The buffers, `count * size` bytes (mmap'd: pages are touched only once used).
    base: *mut u8,
    base_len: usize,
    count: u16,
    size: u32,
    /// Our tail (buffers handed to the kernel so far, mod 2^16), published with release.
    tail: u16,
    /// Whether the kernel may still write into the buffers (then they are never unmapped).
    leak: bool,
}

/// Buffer group id of the one provided-buffer ring.
const BGID: u16 = 0;

impl BufRing {
    fn new(count: u16, size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        let ring_len = std::mem::size_of::<types::BufRingEntry>() * count as usize;
        let base_len = count as usize * size as usize;
        let ring = mmap(ring_len)? as *mut types::BufRingEntry;
        let base = match mmap(base_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `ring` was mapped just above with this length and nothing uses it.
                unsafe { libc::munmap(ring.cast(), ring_len) };
                return Err(e);
            }
        };
        Ok(BufRing { ring, ring_len, base, base_len, count, size, tail: 0, leak: false })
    }

    /// Put buffer `bid` at the tail (visible to the kernel after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: the index is masked into the ring's `count` entries, which live as long as
        // `self`; the kernel reads only entries between its head and the published tail, and
        // this one is past the published tail.
        let e = unsafe { &mut *self.ring.add((self.tail & mask) as usize) };
        e.set_addr(self.base as u64 + u64::from(bid) * u64::from(self.size));
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make the buffers pushed so far visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the tail field overlays entry 0's `resv`, a u16 the kernel reads with
        // acquire ordering; the ring is page-aligned (mmap) as the kernel requires.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    fn get(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.count && len <= self.size as usize);
        // SAFETY: buffer `bid` lies inside the mapping; between its completion and its
        // recycling the kernel does not write into it (it is not in the ring), and the
        // `&mut self` borrow keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(bid as usize * self.size as usize), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return; // the kernel might still write here: never hand these pages back
        }
        // SAFETY: both regions were mapped by `new` with these lengths, and no operation
        // that could use them is in flight (`leak` is false).
        unsafe {
            libc::munmap(self.base.cast(), self.base_len);
            libc::munmap(self.ring.cast(), self.ring_len);
        }
    }
}

fn mmap(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// Sizes of one worker's ring.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Submission queue entries (a turn with more submissions enters the kernel once per
    /// full queue).
    pub sq: u32,
    /// Completion queue entries.
    pub cq: u32,
    /// Provided receive buffers (a power of two).
    pub bufs: u16,
    /// Bytes per receive buffer.
    pub buf_size: u32,
}

/// One worker's io_uring.
pub struct Ring {
    ring: IoUring,
    bufs: BufRing,
    sends: Slab<Sending>,
    pool: Pool,
    /// The eventfd read's target (boxed: its address must not move while the read is in
    /// flight).
    wake_buf: Box<u64>,
    /// Operations submitted whose last completion has not been seen.
    in_flight: usize,
    /// Size of the fixed-file table (0: none). A connection registered there at its slab
    /// key is named by index in its operations, which spares the kernel a descriptor
    /// lookup and reference per operation (3% of a 10k fan-out's time went to `fget`).
    files: u32,
    /// Table slots whose clearing (a `Close` submission) is queued but not submitted yet:
    /// a new connection at that key must not be registered before it is.
    clearing: Vec<u32>,
}

/// Most fixed-file slots per worker (and never more than the open-files limit).
const MAX_FILES: u32 = 65_536;

/// Where an operation's socket is: its descriptor, or its fixed-file slot.
#[derive(Clone, Copy, Debug)]
pub struct Sock {
    /// The descriptor.
    pub fd: RawFd,
    /// The connection's slab key.
    pub key: u32,
    /// Registered in the fixed-file table at `key`.
    pub fixed: bool,
}

impl Ring {
    /// Set up a ring and its provided-buffer ring. Call on the thread that will use it.
    pub fn new(s: Sizes) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(s.cq)
            .setup_submit_all()
            .build(s.sq)
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring_setup: {e}")))?;
        let _ = ring.submitter().register_ring_fd();
        let mut bufs = BufRing::new(s.bufs, s.buf_size)?;
        // SAFETY: the descriptor ring is page-aligned, `bufs` entries long, and lives until
        // the buffer group is unregistered (Ring's Drop) or, failing that, forever (leak).
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.ring as u64, bufs.count, BGID, 0) }
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring provided-buffer ring (Linux 5.19+): {e}")))?;
        for bid in 0..bufs.count {
            bufs.push(bid);
        }
        bufs.publish();
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct we pass.
        let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 { rl.rlim_cur } else { 0 };
        let want = (nofile.min(u64::from(MAX_FILES))) as u32;
        // Without a table (an old kernel, a low limit) operations name descriptors.
        let files = if want > 0 && ring.submitter().register_files_sparse(want).is_ok() { want } else { 0 };
        Ok(Ring {
            ring,
            bufs,
            sends: Slab::new(),
            pool: Pool::default(),
            wake_buf: Box::new(0),
            in_flight: 0,
            files,
            clearing: Vec::new(),
        })
    }

    /// Sends in flight.
    #[cfg(test)]
    pub fn sends_in_flight(&self) -> usize {
        self.sends.len()
    }

    /// Queue a submission, entering the kernel first if the queue is full.
    ///
    /// # Safety
    /// Whatever memory `e` names must stay valid until its last completion.
    unsafe fn push(&mut self, e: &squeue::Entry) {
        self.in_flight += 1;
        let mut failures = 0;
        loop {
            // SAFETY: the caller vouches for the entry's memory.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel (completions wait in the CQ, or in the
            // kernel's overflow list: IORING_FEAT_NODROP).
            if let Err(err) = self.submit_now() {
                // Only a broken ring fails again and again; the worker cannot go on without
                // losing operations silently, so it stops loudly.
                failures += 1;
                assert!(failures < 1000, "io_uring submission keeps failing: {err}");
            }
        }
    }

    /// Submit what is queued now (without waiting). Transient failures (a signal, a full
    /// completion queue, no memory for a moment) are errors the caller may retry.
    fn submit_now(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => {
                self.clearing.clear();
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Register a new connection's socket in the fixed-file table at its slab key (one
    /// `io_uring_register`), so its operations skip the descriptor lookup. Returns where
    /// its operations should name it.
    pub fn register(&mut self, key: u32, fd: RawFd) -> Sock {
        let mut sock = Sock { fd, key, fixed: false };
        if key < self.files {
            if self.clearing.contains(&key) {
                // The previous holder's slot is still to be cleared: do that first (if that
                // fails, this connection names its descriptor instead).
                let _ = self.submit_now();
            }
            sock.fixed =
                !self.clearing.contains(&key) && self.ring.submitter().register_files_update(key, &[fd]).is_ok();
        }
        sock
    }

    /// Clear a freed connection's fixed-file slot (queued; operations still in flight keep
    /// the socket until they finish).
    pub fn unregister(&mut self, sock: Sock) {
        if !sock.fixed {
            return;
        }
        let e = opcode::Close::new(types::Fixed(sock.key)).build().user_data(K_CANCEL << KIND_SHIFT);
        // SAFETY: a close names no memory.
        unsafe { self.push(&e) };
        self.clearing.push(sock.key);
    }

    /// Accept connections on `fd` until cancelled or failed (new sockets are blocking:
    /// io_uring waits for them itself).
    pub fn accept(&mut self, fd: RawFd, which: u8) {
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(K_ACCEPT << KIND_SHIFT | u64::from(which));
        // SAFETY: a multishot accept names no memory of ours.
        unsafe { self.push(&e) };
    }

    /// Receive on `fd` into provided buffers until cancelled, EOF, an error, or the buffers
    /// run out (a completion without `more`).
    pub fn recv(&mut self, sock: Sock, gen: u32) {
        let e = if sock.fixed {
            opcode::RecvMulti::new(types::Fixed(sock.key), BGID).build()
        } else {
            opcode::RecvMulti::new(types::Fd(sock.fd), BGID).build()
        };
        let e = e.user_data(ud_recv(sock.key, gen));
        // SAFETY: the buffers are the provided ring's, which outlives every operation.
        unsafe { self.push(&e) };
    }

    /// Send all of `bytes` on `fd` (MSG_WAITALL: a short send is continued by the kernel as
    /// the socket drains, so the completion is all or an error). Returns the send's id.
    pub fn send(&mut self, sock: Sock, gen: u32, bytes: Vec<u8>) -> u32 {
        let entry = self.sends.vacant_entry();
        let id = entry.key() as u32;
        let (ptr, len) = (bytes.as_ptr(), bytes.len() as u32);
        entry.insert(Sending { bytes, key: sock.key, gen });
        let flags = libc::MSG_WAITALL | libc::MSG_NOSIGNAL;
        let e = if sock.fixed {
            opcode::Send::new(types::Fixed(sock.key), ptr, len).flags(flags).build()
        } else {
            opcode::Send::new(types::Fd(sock.fd), ptr, len).flags(flags).build()
        };
        let e = e.user_data(K_SEND << KIND_SHIFT | u64::from(id));
        // SAFETY: the bytes were moved into `self.sends` (a Vec's heap buffer does not move
        // with it) and are dropped only at this send's completion.
        unsafe { self.push(&e) };
        id
    }

    /// An empty buffer for the bytes of a send of about `need` bytes (from the pool).
    pub fn send_buf(&mut self, need: usize) -> Vec<u8> {
        self.pool.take(need)
    }

    /// Give back a buffer [`Ring::send_buf`] gave that was not sent.
    pub fn unused_buf(&mut self, b: Vec<u8>) {
        self.pool.put(b);
    }

    /// Free the pooled send buffers the last period did not need (once a second).
    pub fn trim(&mut self) {
        self.pool.trim();
    }

    /// Read the eventfd `fd` once (re-armed by the worker at each completion).
    pub fn read_wake(&mut self, fd: RawFd) {
        let p: *mut u64 = &mut *self.wake_buf;
        let e = opcode::Read::new(types::Fd(fd), p.cast(), 8).build().user_data(K_WAKE << KIND_SHIFT);
        // SAFETY: `wake_buf` is boxed (stable address) and lives as long as the ring; on an
        // abnormal teardown it is leaked with the rest.
        unsafe { self.push(&e) };
    }

    fn cancel_ud(&mut self, ud: u64) {
        let e = opcode::AsyncCancel::new(ud).build().user_data(K_CANCEL << KIND_SHIFT);
        // SAFETY: a cancel names no memory.
        unsafe { self.push(&e) };
    }

    /// Cancel a connection's receive.
    pub fn cancel_recv(&mut self, key: u32, gen: u32) {
        self.cancel_ud(ud_recv(key, gen));
    }

    /// Cancel a send in flight (its completion still arrives, with -ECANCELED).
    pub fn cancel_send(&mut self, id: u32) {
        self.cancel_ud(K_SEND << KIND_SHIFT | u64::from(id));
    }

    /// Cancel a listener's accept.
    pub fn cancel_accept(&mut self, which: u8) {
        self.cancel_ud(K_ACCEPT << KIND_SHIFT | u64::from(which));
    }

    /// Submit everything queued and wait up to `timeout_ms` (0: not at all) for a
    /// completion; then copy the completions into `out`.
    pub fn turn(&mut self, timeout_ms: u64, out: &mut Vec<Done>) -> io::Result<()> {
        self.bufs.publish();
        let ts = types::Timespec::new().sec(timeout_ms / 1000).nsec(((timeout_ms % 1000) * 1_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        // Always GETEVENTS (deferred completions are produced only by an enter that asks
        // for events); with completions already waiting it returns at once.
        match self.ring.submitter().submit_with_args(1, &args) {
            // A timeout or a signal ends the wait, after the submission.
            Ok(_) => self.clearing.clear(),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => self.clearing.clear(),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        self.reap(out);
        Ok(())
    }

    /// Copy the completion queue into `out`, taking back the buffers of finished sends.
    fn reap(&mut self, out: &mut Vec<Done>) {
        for c in self.ring.completion() {
            let ud = c.user_data();
            let flags = c.flags();
            let more = cqueue::more(flags);
            if !more {
                self.in_flight -= 1;
            }
            let kind = ud >> KIND_SHIFT;
            let mut owner = (0, 0, 0);
            let op = match kind {
                K_ACCEPT => Op::Accept(ud as u8),
                K_RECV => Op::Recv { key: ud as u32, gen: (ud >> 32) as u32 & GEN_MASK },
                K_SEND => {
                    let s = self.sends.remove(ud as u32 as usize);
                    owner = (s.key, s.gen, s.bytes.len() as u32);
                    self.pool.put(s.bytes);
                    Op::Send
                }
                K_WAKE => Op::Wake,
                _ => Op::Cancel,
            };
            out.push(Done { op, res: c.result(), more, buf: cqueue::buffer_select(flags), owner });
        }
    }

    /// The bytes of a receive completion (buffer `bid`, `len` bytes), until [`Ring::recycle`].
    pub fn recv_buf(&mut self, bid: u16, len: usize) -> &mut [u8] {
        self.bufs.get(bid, len)
    }

    /// Hand a receive buffer back to the kernel (published at the next [`Ring::turn`]).
    pub fn recycle(&mut self, bid: u16) {
        self.bufs.push(bid);
    }

    /// Stop: cancel everything in flight and wait (at most `wait_ms`) for it to finish, so
    /// no buffer is freed under the kernel. What is still in flight then is leaked.
    pub fn close(mut self, wait_ms: u64) {
        if self.in_flight > 0 {
            let e =
                opcode::AsyncCancel2::new(types::CancelBuilder::any().all()).build().user_data(K_CANCEL << KIND_SHIFT);
            // SAFETY: a cancel names no memory.
            unsafe { self.push(&e) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
        let mut done = Vec::new();
        while self.in_flight > 0 && std::time::Instant::now() < deadline {
            if self.turn(10, &mut done).is_err() {
                break;
            }
            for d in done.drain(..) {
                if let Some(bid) = d.buf {
                    self.recycle(bid);
                }
            }
        }
        // Drop (below) decides what can be freed.
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still read a send's bytes or write a receive buffer after the
            // ring's descriptor closes (its teardown is asynchronous): keep them forever.
            log::warn!("io_uring: {} operations still in flight at teardown; their buffers are leaked", self.in_flight);
            self.bufs.leak = true;
            std::mem::forget(std::mem::take(&mut self.sends));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        } else {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
        }
    }
}

/// An eventfd the inbox's senders write to wake the worker (blocking mode: io_uring would
/// answer a read of a non-blocking one with EAGAIN instead of waiting).
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a valid result is a fresh descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Its descriptor.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl crate::hub::bus::Wake for EventFd {
    fn wake(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array to a descriptor we own.
        let n = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Take ownership of a descriptor a completion returned (an accepted socket).
pub fn owned(fd: i32) -> OwnedFd {
    assert!(fd >= 0);
    // SAFETY: the kernel created this descriptor for us in an accept completion, and
    // nothing else refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn sizes() -> Sizes {
        Sizes { sq: 64, cq: 256, bufs: 4, buf_size: 16 }
    }

    /// Accept, receive into provided buffers (more bytes than one buffer holds, and more
    /// than the ring's buffers hold at once), send, and tear down with nothing in flight.
    #[test]
    fn pool_reuses_by_class_and_trims_what_was_not_needed() {
        let mut p = Pool::default();
        assert_eq!(Pool::class_of_need(1), 0);
        assert_eq!(Pool::class_of_need(256), 0);
        assert_eq!(Pool::class_of_need(257), 1);
        assert_eq!(Pool::class_of_need(1 << 20), CLASSES - 1);
        let bufs: Vec<Vec<u8>> = (0..10).map(|_| p.take(300)).collect();
        assert!(bufs.iter().all(|b| b.capacity() >= 512));
        for b in bufs {
            p.put(b);
        }
        assert_eq!(p.free[1].len(), 10);
        p.trim(); // the period before: nothing was spare yet
        let b = p.take(400);
        assert!(b.capacity() >= 512 && b.is_empty());
        p.put(b);
        p.trim(); // at least 9 were never taken this period
        assert!(p.free[1].len() <= 1, "{}", p.free[1].len());
        p.trim();
        assert_eq!(p.free[1].len(), 0, "an idle worker keeps none");
    }

    #[test]
    fn accept_recv_send_roundtrip() {
        let mut ring = match Ring::new(sizes()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}); skipped");
                return;
            }
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ring.accept(l.as_raw_fd(), 0);
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut done = Vec::new();
        let mut sock = None;
        while sock.is_none() {
            ring.turn(1000, &mut done).unwrap();
            for d in done.drain(..) {
                if d.op == Op::Accept(0) {
                    assert!(d.more, "multishot accept stays armed");
                    sock = Some(owned(d.res));
                }
            }
        }
        let sock = sock.unwrap();
        let target = ring.register(7, sock.as_raw_fd());
        assert!(target.fixed, "registered in the fixed-file table");
        ring.recv(target, 3);
        let msg: Vec<u8> = (0..100u8).collect();
        c.write_all(&msg).unwrap();
        let mut got = Vec::new();
        let mut armed = true;
        while got.len() < msg.len() {
            if !armed {
                ring.recv(target, 3);
                armed = true;
            }
            ring.turn(1000, &mut done).unwrap();
            for d in done.drain(..) {
                if let Op::Recv { key, gen } = d.op {
                    assert_eq!((key, gen), (7, 3));
                    if d.res > 0 {
                        let bid = d.buf.unwrap();
                        got.extend_from_slice(ring.recv_buf(bid, d.res as usize));
                        ring.recycle(bid);
                    } else {
                        assert_eq!(d.res, -libc::ENOBUFS, "only running out of buffers ends it here");
                    }
                    armed &= d.more;
                }
            }
        }
        assert_eq!(got, msg);
        let id = ring.send(target, 3, b"hello".to_vec());
        assert_eq!(ring.sends_in_flight(), 1);
        let mut sent = false;
        while !sent {
            ring.turn(1000, &mut done).unwrap();
            for d in done.drain(..) {
                if d.op == Op::Send {
                    assert_eq!(d.res, 5);
                    assert_eq!(d.owner, (7, 3, 5));
                    sent = true;
                }
            }
        }
        let _ = id;
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        ring.cancel_recv(7, 3);
        ring.unregister(target);
        ring.cancel_accept(0);
        ring.close(1000);
    }
}
