//! The io_uring backend (`io: "uring"`): a second worker loop behind the same seam as the
//! epoll one. It drives the same transport functions (`on_bytes`, `on_eof`, `on_timer`,
//! `on_note`, ...) with the same `Session` and `Env`, applies the same effects (flush,
//! close, pressure, ready), and uses the same timer wheel, inbox, admission and
//! backpressure policy; only how bytes move differs.
//!
//! - Accept: one multishot accept per listener; a new socket's peer address is read with
//!   `getpeername` (a multishot accept gives none), and the socket is registered in the
//!   ring's fixed-file table at its slab key, so its operations skip the descriptor lookup.
//! - Receive: one multishot receive per connection into a provided-buffer ring shared by
//!   the worker (`ring::Sizes`), so an idle connection holds no receive buffer: a buffer is
//!   taken only when bytes arrive and is handed back as soon as the transport has them
//!   (whatever it cannot use yet goes to the session's `inbuf`, as with epoll). A paused
//!   connection (over its high-water mark, waiting for the engine, or out of turn budget)
//!   has its receive cancelled, so the kernel's socket buffer and TCP flow control hold
//!   its client back as they do with epoll; it is armed again when the connection resumes.
//! - Send: at the end of a loop turn each dirty connection's out-queue is copied (up to
//!   [`SEND_MAX`]) into the bytes of one send; every send of the turn goes to the kernel
//!   in the one `io_uring_enter` that also waits for the next completions. A connection has
//!   at most one send in flight (MSG_WAITALL: the kernel finishes a short send itself as
//!   the socket drains); what is queued meanwhile waits in its out-queue, counted against
//!   `max_out_queue` as usual, and goes when that send completes.
//! - Wake: the inbox's senders write an eventfd; the worker keeps one read of it in the ring.
//! - TLS is not served by this backend (refused at start-up by configuration validation).
//!
//! Loop contract: one `io_uring_enter` per turn submits everything queued and waits for a
//! completion or the next timer tick; completions are then handled in order, timers run,
//! dirty connections are staged for sending, dead ones are freed (never mid-batch), and
//! every completion carries the connection's generation, so nothing stale reaches a reused
//! slot. A connection freed with operations in flight has them cancelled; their buffers
//! live in the ring until their completions arrive.

mod conn;
mod ring;

use super::limits::IpLimits;
use super::timer::{Entry, Wheel};
use super::worker::Listeners;
use super::Clock;
use crate::hub::bus::Note;
use crate::hub::local::ConnId;
use crate::transport::{self, Env, Session, Shared};
use conn::{Conn, Recv, Stage};
use ring::{Done, EventFd, Op, Ring, Sizes, GEN_MASK};
use slab::Slab;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// Ring sizes. 512 receive buffers of 2 KiB (1 MiB per worker, touched only as used) are
/// shared by every connection of the worker; a turn whose completions take them all ends
/// the receives that found none (ENOBUFS), which are armed again once the buffers are
/// back, before the next submission.
const SIZES: Sizes = Sizes { sq: 4096, cq: 32768, bufs: 512, buf_size: 2048 };
/// Most bytes one send carries (the rest of a connection's queue waits for its completion).
pub const SEND_MAX: usize = 64 * 1024;
/// Back-off before accepting again after EMFILE/ENFILE.
const ACCEPT_BACKOFF_MS: u64 = 100;
/// How long the worker waits at exit for cancelled operations to finish.
const CLOSE_WAIT_MS: u64 = 1000;

/// Start worker `id` on its own thread. The ring is set up there (it is single-issuer);
/// this returns once it is, or with the reason it could not be (e.g. io_uring disabled).
pub fn spawn(
    id: usize,
    shared: Arc<Shared>,
    clock: Clock,
    ip_limits: Arc<IpLimits>,
    ls: Listeners,
    inbox: Receiver<Note>,
) -> io::Result<std::thread::JoinHandle<()>> {
    if ls.main_tls || ls.tls.is_some() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "io \"uring\" does not serve TLS yet: use \"epoll\""));
    }
    let wake = Arc::new(EventFd::new()?);
    shared.inboxes[id].set_wake(wake.clone());
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let h = std::thread::Builder::new().name(format!("herald-w{id}")).spawn(move || {
        match Worker::new(id, shared, clock, ip_limits, ls.main, inbox, wake) {
            Ok(w) => {
                let _ = tx.send(Ok(()));
                w.run();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => {
            let _ = h.join();
            Err(io::Error::new(
                e.kind(),
                format!(
                    "io \"uring\": worker {id}: {e} (needs Linux 6.1+ with io_uring enabled: \
                     /proc/sys/kernel/io_uring_disabled 0; or use io \"epoll\")"
                ),
            ))
        }
        Err(_) => Err(io::Error::other(format!("io \"uring\": worker {id} ended while starting"))),
    }
}

/// One io_uring event loop.
pub struct Worker {
    ring: Ring,
    listener: Option<std::net::TcpListener>,
    /// The listener has TCP_NODELAY (its connections inherit it).
    nodelay: bool,
    accept_armed: bool,
    accept_paused_until: Option<u64>,
    wake: Arc<EventFd>,
    conns: Slab<Conn>,
    gens: Vec<u32>,
    ctx: Env,
    clock: Clock,
    ip_limits: Arc<IpLimits>,
    /// Where a flush copies several small queued frames (the out-queue's coalescing).
    coalesce: Vec<u8>,
    /// Connections to serve again next turn (budget spent, or resumed after a pause).
    ready: Vec<usize>,
    wheel: Wheel,
    inbox: Receiver<Note>,
    due: Vec<Entry>,
    done: Vec<Done>,
    shutdown_deadline: Option<u64>,
    finish: Vec<ConnId>,
    next_gauges_ms: u64,
}

mod house;

impl Worker {
    fn new(
        id: usize,
        shared: Arc<Shared>,
        clock: Clock,
        ip_limits: Arc<IpLimits>,
        listener: std::net::TcpListener,
        inbox: Receiver<Note>,
        wake: Arc<EventFd>,
    ) -> io::Result<Worker> {
        let ring = Ring::new(SIZES)?;
        // io_uring waits on the listener itself; a non-blocking one would have accepts
        // answered EAGAIN rather than queued.
        listener.set_nonblocking(false)?;
        // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies the socket's
        // options into each child): one setsockopt here instead of one per connection.
        let nodelay = socket2::SockRef::from(&listener).set_nodelay(true).is_ok();
        let ctx = Env::new(id, shared, clock.seed(id as u64), clock.now_ms(), clock.unix_s());
        log::debug!(
            "worker {id}: io_uring, {} receive buffers of {} B, sends up to {SEND_MAX} B",
            SIZES.bufs,
            SIZES.buf_size
        );
        Ok(Worker {
            ring,
            listener: Some(listener),
            nodelay,
            accept_armed: false,
            accept_paused_until: None,
            wake,
            conns: Slab::new(),
            gens: Vec::new(),
            ctx,
            clock,
            ip_limits,
            coalesce: Vec::with_capacity(crate::transport::outq::COALESCE_MAX),
            ready: Vec::new(),
            wheel: Wheel::default(),
            inbox,
            due: Vec::new(),
            done: Vec::with_capacity(1024),
            shutdown_deadline: None,
            finish: Vec::new(),
            next_gauges_ms: 0,
        })
    }

    /// Run until shutdown completes.
    fn run(mut self) {
        log::debug!("worker {} started (io_uring)", self.ctx.id);
        self.arm_accept();
        self.ring.read_wake(self.wake.fd());
        loop {
            let now = self.clock.now_ms();
            let busy = !self.ready.is_empty() || !self.ctx.fx.ready.is_empty() || !self.ctx.fx.flush.is_empty();
            let timeout = if busy { 0 } else { self.wheel.next_wait_ms(now) };
            if let Err(e) = self.ring.turn(timeout, &mut self.done) {
                log::error!("worker {}: io_uring_enter failed: {e}", self.ctx.id);
                break;
            }
            self.ctx.now_ms = self.clock.now_ms();
            self.ctx.unix_s = self.clock.unix_s();
            let turn_start = std::time::Instant::now();
            self.serve_ready();
            let mut done = std::mem::take(&mut self.done);
            for d in done.drain(..) {
                self.on_done(d);
            }
            self.done = done;
            self.run_timers();
            self.relieve();
            if self.accept_paused_until.is_some_and(|t| self.ctx.now_ms >= t) {
                self.accept_paused_until = None;
                self.arm_accept();
            }
            self.flush_dirty();
            self.reap();
            self.account(turn_start);
            if let Some(d) = self.shutdown_deadline {
                if self.conns.is_empty() || self.ctx.now_ms >= d {
                    break;
                }
            }
        }
        let left = self.conns.len();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            if let Some(c) = self.conns.get_mut(k) {
                self.ctx.kill(&mut c.session);
            }
        }
        self.reap();
        log::debug!("worker {} stopped ({} connections cut at the deadline)", self.ctx.id, left);
        // Dropping the listener closes it only once its accept is cancelled (the ring holds
        // it until then); every buffer stays until the kernel is done with it.
        self.listener = None;
        self.ring.close(CLOSE_WAIT_MS);
    }

    fn on_done(&mut self, d: Done) {
        match d.op {
            Op::Accept(_) => self.on_accept(d),
            Op::Recv { key, gen } => self.on_recv(key as usize, gen, d),
            Op::Send => self.on_sent(d),
            Op::Wake => {
                // Cancelled only at teardown; any other failure is retried (the inbox must
                // keep waking the worker) and the inbox drained meanwhile.
                if d.res == -libc::ECANCELED {
                    return;
                }
                if d.res < 0 {
                    log::warn!("worker {}: inbox eventfd read failed: {}", self.ctx.id, err(d.res));
                }
                self.ring.read_wake(self.wake.fd());
                self.drain_inbox();
            }
            Op::Cancel => {}
        }
    }

    fn arm_accept(&mut self) {
        if self.accept_armed || self.accept_paused_until.is_some() {
            return;
        }
        if let Some(l) = &self.listener {
            self.ring.accept(l.as_raw_fd(), 0);
            self.accept_armed = true;
        }
    }

    fn on_accept(&mut self, d: Done) {
        if !d.more {
            self.accept_armed = false;
        }
        if d.res >= 0 {
            let fd = ring::owned(d.res);
            if self.listener.is_some() {
                self.add_conn(fd);
            }
        } else if d.res != -libc::ECANCELED {
            self.ctx.shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
            // EMFILE/ENFILE/ENOBUFS: the connection stays in the backlog; stop accepting for
            // a moment and let existing connections carry on (the loop re-arms).
            if matches!(-d.res, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) {
                log::warn!(
                    "worker {}: accept: {}; pausing accepts for {ACCEPT_BACKOFF_MS} ms",
                    self.ctx.id,
                    err(d.res)
                );
                self.accept_paused_until = Some(self.ctx.now_ms + ACCEPT_BACKOFF_MS);
            } else {
                log::debug!("worker {}: accept: {}", self.ctx.id, err(d.res));
            }
        }
        if !self.accept_armed {
            self.arm_accept();
        }
    }

    fn add_conn(&mut self, fd: std::os::fd::OwnedFd) {
        let sock = socket2::SockRef::from(&fd);
        // Gone already (reset before we looked): nothing to serve.
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            return;
        };
        if !self.nodelay {
            let _ = sock.set_nodelay(true);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= u32::MAX as usize {
            return;
        }
        if self.gens.len() <= key {
            self.gens.resize(key + 1, 0);
        }
        self.gens[key] = self.gens[key].wrapping_add(1);
        let id = ConnId { key: key as u32, gen: self.gens[key] };
        let stats = &self.ctx.shared.stats;
        let total = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let raw = fd.as_raw_fd();
        let slot = entry.insert(Conn::new(fd, Session::new(id, peer, self.ctx.now_ms)));
        log::debug!("conn {}:{} from {peer}: accepted", self.ctx.id, key);
        let max = self.ctx.shared.cfg.max_connections;
        let (admitted, refusal) =
            super::limits::admission(&self.ip_limits, stats, max, total, peer.ip(), self.ctx.now_ms);
        slot.admitted = admitted;
        slot.fixed = self.ring.register(id.key, raw).fixed;
        // Receive from the start: a refused client's FIN ends its lingering close.
        self.ring.recv(slot.sock(), id.gen);
        slot.recv = Recv::Armed;
        if let Some((status, why)) = refusal {
            log::debug!("conn {}:{} from {peer}: refused: {why}", self.ctx.id, key);
            transport::refuse(&mut self.ctx, &mut slot.session, status, why);
        }
        self.arm(key);
    }

    /// Bytes (or EOF, or an error) from a connection's multishot receive.
    fn on_recv(&mut self, key: usize, gen: u32, d: Done) {
        let Worker { ring, conns, ctx, .. } = self;
        let live = conns.get_mut(key).filter(|c| c.session.id.gen & GEN_MASK == gen);
        let Some(slot) = live else {
            // A late completion of a freed connection: hand its buffer back.
            if let Some(bid) = d.buf {
                ring.recycle(bid);
            }
            return;
        };
        if !d.more {
            slot.recv = if d.res == 0 { Recv::Eof } else { Recv::Off };
        }
        if d.res > 0 {
            let bid = d.buf.expect("a multishot receive names its provided buffer");
            let n = d.res as usize;
            if slot.session.dead {
                ring.recycle(bid);
                return;
            }
            ctx.shared.gauges[ctx.id].bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            if !slot.held {
                ctx.budget = transport::env::TURN_BUDGET;
            }
            transport::on_bytes(ctx, &mut slot.session, ring.recv_buf(bid, n));
            ring.recycle(bid);
            // The budget ran out with input left: `process` listed it for the next turn.
            if ctx.budget == 0 && !slot.session.inbuf.is_empty() {
                slot.held = true;
            }
            // Over the high-water mark, or waiting for an engine answer: stop receiving.
            if ctx.over_high_water(&slot.session) || slot.session.parked {
                slot.paused = true;
            }
        } else if d.res == 0 {
            if !slot.session.dead {
                transport::on_eof(ctx, &mut slot.session);
            }
        } else {
            match -d.res {
                // Out of provided buffers this turn, or cancelled by a pause: armed again
                // when wanted (the buffers are back before the next submission).
                libc::ENOBUFS | libc::ECANCELED => {}
                _ => {
                    log::debug!("conn {}:{} from {}: read error: {}", ctx.id, key, slot.session.peer, err(d.res));
                    ctx.kill(&mut slot.session);
                }
            }
        }
        self.after(key);
    }

    /// A send completed: continue with what was queued meanwhile (or finish a close).
    fn on_sent(&mut self, d: Done) {
        let (key, gen, len) = d.owner;
        let key = key as usize;
        let Some(slot) = self.conns.get_mut(key).filter(|c| c.session.id.gen == gen) else {
            return;
        };
        slot.set_sending(None);
        if slot.session.dead {
            return;
        }
        if d.res < 0 || (d.res as u32) < len {
            log::debug!("conn {}:{} from {}: write error: {}", self.ctx.id, key, slot.session.peer, err(d.res));
            self.ctx.kill(&mut slot.session);
            return;
        }
        self.ctx.shared.gauges[self.ctx.id].bytes_out.fetch_add(u64::from(len), Ordering::Relaxed);
        let closing = slot.session.close_after_flush;
        self.flush(key);
        // A plain send completion changes nothing else (the common case: one per subscriber
        // per fan-out turn); a refilled replay or a close in progress gets the bookkeeping.
        if closing || !self.ctx.fx.ready.is_empty() || !self.ctx.fx.pressure.is_empty() {
            self.after(key);
        }
    }

    /// Arm or cancel a connection's receive to match whether it can take input now.
    fn sync_recv(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        match (c.recv, c.wants_input()) {
            (Recv::Armed, false) if !c.session.dead => {
                self.ring.cancel_recv(c.session.id.key, c.session.id.gen);
                c.recv = Recv::Cancelling;
            }
            (Recv::Off, true) => {
                self.ring.recv(c.sock(), c.session.id.gen);
                c.recv = Recv::Armed;
            }
            _ => {}
        }
    }

    /// Re-run input processing on bytes already held (after a long-poll completes, the next
    /// pipelined request may be waiting in `inbuf`).
    fn reprocess(&mut self, key: usize) {
        if let Some(slot) = self.conns.get_mut(key) {
            if slot.paused || slot.session.dead {
                return;
            }
            self.ctx.budget = transport::env::TURN_BUDGET;
            transport::reprocess(&mut self.ctx, &mut slot.session);
            slot.held = self.ctx.budget == 0 && !slot.session.inbuf.is_empty();
        }
    }

    /// Serve the connections that still had input when their turn budget ran out (or that
    /// resumed after a pause): held input first; their receive is armed again once they
    /// can take more.
    fn serve_ready(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.append(&mut self.ctx.fx.ready);
        ready.sort_unstable();
        ready.dedup();
        for &key in &ready {
            if !self.conns.get(key).is_some_and(|c| !c.session.dead && !c.paused) {
                continue;
            }
            self.reprocess(key);
            self.after(key);
        }
        ready.clear();
        ready.append(&mut self.ready);
        self.ready = ready;
    }

    /// Bookkeeping after a connection was handled: backpressure, its timer, its receive.
    fn after(&mut self, key: usize) {
        self.ready.append(&mut self.ctx.fx.ready);
        self.relieve();
        if self.conns.get(key).is_some_and(|c| !c.session.dead) {
            self.arm(key);
            self.sync_recv(key);
        }
    }

    /// The backpressure policy, as in the epoll worker: a connection whose out-queue passed
    /// `max_out_queue` is flushed at once; if its socket cannot take enough (a send is still
    /// in flight), the client is a slow consumer and is dropped.
    fn relieve(&mut self) {
        if self.ctx.fx.pressure.is_empty() {
            return;
        }
        let max = self.ctx.shared.cfg.max_out_queue;
        let mut keys = std::mem::take(&mut self.ctx.fx.pressure);
        for key in keys.drain(..) {
            if !self.conns.get(key).is_some_and(|c| !c.session.dead && c.session.out.len() > max) {
                continue;
            }
            self.flush(key);
            let Some(slot) = self.conns.get_mut(key) else { continue };
            crate::reactor::drop_if_slow(&mut self.ctx, key, &mut slot.session, max);
        }
        self.ctx.fx.pressure = keys;
    }

    /// Stage the connection's out-queue into one send (unless one is in flight: its
    /// completion comes back here). A paced replay is refilled as the queue drains; a
    /// close waits until everything queued is on the wire.
    fn flush(&mut self, key: usize) {
        let Worker { ring, conns, ctx, coalesce, ready, .. } = self;
        let Some(slot) = conns.get_mut(key) else { return };
        if slot.session.dead || slot.sending().is_some() {
            return;
        }
        let replaying = |s: &Session| s.replay.as_ref().is_some_and(|r| !r.hold);
        let mut bytes = Vec::new();
        let mut rounds = 0;
        loop {
            if !slot.session.out.is_empty() && bytes.len() < SEND_MAX {
                if bytes.capacity() == 0 {
                    bytes = ring.send_buf(slot.session.out.len().min(SEND_MAX));
                }
                bytes.reserve(slot.session.out.len().min(SEND_MAX - bytes.len()));
                let mut w = 0;
                // Staging into memory cannot fail; a full stage is `Blocked`.
                let _ = slot.session.out.flush(&mut Stage { buf: &mut bytes, cap: SEND_MAX }, &mut w, coalesce);
            }
            let again = rounds < 16
                && replaying(&slot.session)
                && !slot.session.dead
                && slot.session.out.len() <= ctx.low_water
                && bytes.len() < SEND_MAX;
            if !again {
                break;
            }
            transport::on_drained(ctx, &mut slot.session);
            rounds += 1;
        }
        if !bytes.is_empty() {
            let id = slot.session.id;
            let sid = ring.send(slot.sock(), id.gen, bytes);
            slot.set_sending(Some(sid));
        } else {
            ring.unused_buf(bytes);
        }
        if slot.paused && slot.session.out.len() <= ctx.low_water {
            slot.paused = false;
            ready.push(key);
        }
        let all_sent = slot.sending().is_none() && slot.session.out.is_empty() && slot.session.replay.is_none();
        if all_sent && slot.session.close_after_flush && !slot.write_shut {
            // Everything queued before the close is on the wire: shut the write side and
            // linger until the peer's FIN (the receive stays armed for it).
            slot.write_shut = true;
            let _ = socket2::SockRef::from(&slot.fd).shutdown(std::net::Shutdown::Write);
            transport::on_final_flush(ctx, &mut slot.session);
            self.arm(key);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.ctx.fx.flush);
        for &key in &dirty {
            if let Some(c) = self.conns.get_mut(key) {
                c.session.dirty = false;
            }
            self.flush(key);
        }
        dirty.clear();
        // Sessions marked again while flushing stay listed (their `dirty` flag is set).
        dirty.append(&mut self.ctx.fx.flush);
        if dirty.capacity() <= 4096 || !dirty.is_empty() {
            self.ctx.fx.flush = dirty;
        }
    }

    /// Free dead connections (end of the loop turn only). Their operations in flight are
    /// cancelled; the socket closes when the last of them lets go of it.
    fn reap(&mut self) {
        let mut dead = std::mem::take(&mut self.ctx.fx.close);
        for key in dead.drain(..) {
            if !self.conns.get(key).is_some_and(|c| c.session.dead) {
                continue;
            }
            let mut slot = self.conns.remove(key);
            transport::on_close(&mut self.ctx, &mut slot.session);
            let id = slot.session.id;
            if slot.recv == Recv::Armed {
                self.ring.cancel_recv(id.key, id.gen);
            }
            if let Some(s) = slot.sending() {
                self.ring.cancel_send(s);
            }
            self.ring.unregister(slot.sock());
            if slot.admitted {
                self.ip_limits.release(slot.session.peer.ip());
            }
            self.ctx.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
            log::debug!("conn {}:{} from {}: closed", self.ctx.id, key, slot.session.peer);
        }
        self.ctx.fx.close = dead;
    }

    /// Make sure the wheel holds an entry no later than the connection's next deadline.
    fn arm(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let Some(deadline) = transport::next_deadline(&self.ctx, &slot.session) else {
            return;
        };
        let tick = Wheel::tick_of(deadline);
        if slot.timer_tick().is_some_and(|t| t <= tick) {
            return; // an earlier entry will fire and re-check
        }
        slot.set_timer_tick(Some(tick));
        self.wheel.add(Entry { key, gen: slot.session.id.gen, tick });
    }
}

/// A negative completion result as an error.
fn err(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}
