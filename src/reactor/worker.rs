//! One worker: a single-threaded mio event loop that owns its connections outright.
//!
//! Loop contract (mio): edge-triggered readiness, so every read and write goes on until
//! `WouldBlock`; `Interrupted` is retried; `Ok(0)` on read is the peer's FIN. Writes are
//! batched per loop turn: transports queue bytes and mark the connection dirty, and all dirty
//! connections are flushed just before polling again; only leftovers wait for a writable
//! event. Slab slots are freed only after a whole events batch, and every timer entry and
//! subscriber reference carries the slot's generation, so nothing stale reaches a reused slot.

use super::conn::{Conn, State};
use super::outq::Flush;
use super::timer::{Entry, Wheel};
use super::Shared;
use crate::hub::bus::Note;
use crate::hub::local::{ConnId, LocalHub};
use crate::proto::http::HttpLimits;
use crate::proto::ws::WsLimits;
use crate::transport;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Per-worker read scratch buffer: every read lands here first.
const SCRATCH: usize = 64 * 1024;
/// How long a closing connection may linger waiting for the peer's FIN.
pub const LINGER_MS: u64 = 2_000;
/// Back-off before retrying accept after EMFILE/ENFILE.
const ACCEPT_BACKOFF_MS: u64 = 100;

/// Create a non-blocking SO_REUSEPORT listener (one per worker; the kernel spreads
/// connections between them).
pub fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Worker state the transports may use (everything but the connection slab, so a
/// transport can hold `&mut Conn` and `&mut Ctx` at once).
pub struct Ctx {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub local: LocalHub,
    pub now_ms: u64,
    pub http_limits: HttpLimits,
    pub ws_limits: WsLimits,
    pub publish_cidrs: Vec<crate::config::Cidr>,
    pub shutting_down: bool,
    /// Connections with queued bytes, flushed at the end of the loop turn.
    pub dirty: Vec<usize>,
    /// Connections to free at the end of the loop turn.
    pub dead: Vec<usize>,
    /// Connections whose out-queue passed `max_out_queue` (see `Worker::relieve`).
    pub pressure: Vec<usize>,
    /// Centrifugo token verifier.
    pub verifier: Arc<crate::centrifugo::token::Verifier>,
    /// This worker's Centrifugo connections by user (for API commands aimed at users).
    pub cf_users: std::collections::HashMap<Arc<str>, Vec<ConnId>>,
}

impl Ctx {
    /// Queue bytes on a connection and mark it for the end-of-turn flush.
    pub fn queue(&mut self, conn: &mut Conn, b: bytes::Bytes) {
        conn.out.push(b);
        self.mark_dirty(conn);
    }

    /// Close a connection now (freed at the end of the loop turn; nothing more is sent).
    pub fn kill(&mut self, conn: &mut Conn) {
        if !conn.dead {
            conn.dead = true;
            self.dead.push(conn.id.key as usize);
        }
    }

    /// Send what is queued, then close gracefully (shut the write side, drain input until the
    /// peer's FIN, linger at most [`LINGER_MS`]). Input arriving meanwhile is discarded.
    pub fn close_after_flush(&mut self, conn: &mut Conn) {
        conn.close_after_flush = true;
        if !matches!(conn.state, State::Closing { .. }) {
            // Subscriptions are left when the flush completes or the connection is freed,
            // never here: this may run during a delivery pass over a subscriber set.
            conn.state = State::Closing { until_ms: self.now_ms + LINGER_MS };
        }
        self.mark_dirty(conn);
    }

    /// Distinct Centrifugo users connected to the whole node.
    pub fn cf_user_count(&self) -> usize {
        self.shared.users.lock().map(|u| u.len()).unwrap_or(0)
    }

    /// Mark a connection for the end-of-turn flush.
    pub fn mark_dirty(&mut self, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(conn.id.key as usize);
        }
    }
}

/// One event loop.
pub struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    gens: Vec<u32>,
    ctx: Ctx,
    scratch: Vec<u8>,
    /// Where a flush copies several small queued frames to write them in one `write`.
    coalesce: Vec<u8>,
    wheel: Wheel,
    inbox: Receiver<Note>,
    due: Vec<Entry>,
    accept_paused_until: Option<u64>,
    shutdown_deadline: Option<u64>,
    /// Deliveries waiting for the end of an inbox drain (long-polls to complete).
    finish: Vec<ConnId>,
    next_gauges_ms: u64,
}

impl Worker {
    /// Build a worker around an already bound listener.
    pub fn new(id: usize, shared: Arc<Shared>, l: std::net::TcpListener, inbox: Receiver<Note>) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(l);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        shared.inboxes[id].set_waker(waker);
        let cfg = &shared.cfg;
        let http_limits = HttpLimits {
            max_request_line: cfg.max_request_line,
            max_headers: cfg.max_headers,
            max_header_bytes: cfg.max_header_bytes,
            max_body: cfg.max_body,
        };
        let ws_limits = WsLimits { max_message: cfg.ws_max_message, max_frame: cfg.ws_max_frame };
        let publish_cidrs = cfg.publish_cidrs();
        let now_ms = shared.now_ms();
        let cfg_for_tokens = shared.cfg.clone();
        Ok(Worker {
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            gens: Vec::new(),
            ctx: Ctx {
                id,
                shared,
                local: LocalHub::default(),
                now_ms,
                http_limits,
                ws_limits,
                publish_cidrs,
                shutting_down: false,
                dirty: Vec::new(),
                dead: Vec::new(),
                pressure: Vec::new(),
                verifier: Arc::new(crate::centrifugo::client::verifier(&cfg_for_tokens)),
                cf_users: Default::default(),
            },
            scratch: vec![0; SCRATCH],
            coalesce: Vec::with_capacity(super::outq::COALESCE_MAX),
            wheel: Wheel::default(),
            inbox,
            due: Vec::new(),
            accept_paused_until: None,
            shutdown_deadline: None,
            finish: Vec::new(),
            next_gauges_ms: 0,
        })
    }

    /// Run until shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        log::debug!("worker {} started", self.ctx.id);
        loop {
            let now = self.ctx.shared.now_ms();
            let timeout = self.wheel.next_wait_ms(now);
            if let Err(e) = self.poll.poll(&mut events, Some(std::time::Duration::from_millis(timeout))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.ctx.id);
                    break;
                }
            }
            self.ctx.now_ms = self.ctx.shared.now_ms();
            let turn_start = std::time::Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => self.drain_inbox(),
                    Token(key) => {
                        // Spurious or late events for a freed or dying slot are ignored.
                        if self.conns.get(key).is_none_or(|c| c.dead) {
                            continue;
                        }
                        if ev.is_writable() {
                            self.flush(key);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                    }
                }
            }
            self.run_timers();
            self.relieve();
            if self.accept_paused_until.is_some_and(|t| self.ctx.now_ms >= t) {
                self.accept_paused_until = None;
                self.accept();
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
            self.kill(k);
        }
        self.reap();
        log::debug!("worker {} stopped ({} connections cut at the deadline)", self.ctx.id, left);
    }

    /// Loop-time accounting, and once a second the gauges `/metrics` reads.
    fn account(&mut self, turn_start: std::time::Instant) {
        let g = &self.ctx.shared.gauges[self.ctx.id];
        let us = turn_start.elapsed().as_micros() as u64;
        g.busy_us.fetch_add(us, Ordering::Relaxed);
        g.turns.fetch_add(1, Ordering::Relaxed);
        g.max_turn_us.fetch_max(us, Ordering::Relaxed);
        if self.ctx.now_ms < self.next_gauges_ms {
            return;
        }
        self.next_gauges_ms = self.ctx.now_ms + 1000;
        let mut counts = [0usize; super::metrics::TRANSPORTS.len()];
        let mut subs = 0;
        for (_, c) in self.conns.iter() {
            counts[super::metrics::transport_index(c.transport())] += 1;
            subs += c.subs.len();
        }
        for (i, n) in counts.iter().enumerate() {
            g.conns[i].store(*n, Ordering::Relaxed);
        }
        g.subscriptions.store(subs, Ordering::Relaxed);
        g.channels.store(self.ctx.local.counts().0, Ordering::Relaxed);
        g.max_turn_us.store(0, Ordering::Relaxed);
        // Give back what a crowd left behind: the slab frees its vacant tail, lists their
        // excess (a soak showed RSS staying up through container capacity after clients left).
        if self.conns.len() < self.conns.capacity() / 4 {
            self.conns.shrink_to_fit();
        }
        fn trim<T>(v: &mut Vec<T>) {
            if v.is_empty() && v.capacity() > 256 {
                *v = Vec::new();
            }
        }
        trim(&mut self.ctx.dirty);
        trim(&mut self.ctx.dead);
        trim(&mut self.ctx.pressure);
        trim(&mut self.due);
        trim(&mut self.finish);
        self.ctx.local.shrink();
        self.ctx.cf_users.shrink_to_fit();
        super::alloc::release_thread_cache();
    }

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((sock, peer)) => self.add_conn(sock, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.ctx.shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    // EMFILE/ENFILE/ENOBUFS: the connection stays in the backlog. Retrying at
                    // once would spin; stop accepting for a moment and let existing
                    // connections carry on (the timer loop retries).
                    let raw = e.raw_os_error();
                    if matches!(raw, Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM))
                    {
                        log::warn!("worker {}: accept: {e}; pausing accepts for {ACCEPT_BACKOFF_MS} ms", self.ctx.id);
                        self.accept_paused_until = Some(self.ctx.now_ms + ACCEPT_BACKOFF_MS);
                        return;
                    }
                    // ECONNABORTED and friends concern one connection only.
                    log::debug!("worker {}: accept: {e}", self.ctx.id);
                }
            }
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        let stats = &self.ctx.shared.stats;
        let _ = sock.set_nodelay(true);
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
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            log::warn!("worker {}: register {peer}: {e}", self.ctx.id);
            return;
        }
        let max = self.ctx.shared.cfg.max_connections;
        let total = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let conn = entry.insert(Conn::new(sock, id, peer, self.ctx.now_ms));
        log::debug!("conn {}:{} from {peer}: accepted", self.ctx.id, key);
        let limits = &self.ctx.shared.ip_limits;
        let refusal = if max > 0 && total > max {
            stats.refused_max_conns.fetch_add(1, Ordering::Relaxed);
            Some((503, "server at max_connections"))
        } else if limits.enabled() {
            match limits.admit(peer.ip(), self.ctx.now_ms) {
                Ok(()) => {
                    conn.admitted = true;
                    None
                }
                Err(super::limits::Refusal::PerIp) => {
                    stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                    Some((503, "too many connections from this address (max_connections_per_ip)"))
                }
                Err(super::limits::Refusal::Rate) => {
                    stats.refused_rate.fetch_add(1, Ordering::Relaxed);
                    Some((429, "connecting too fast from this address (connect_rate_per_ip)"))
                }
            }
        } else {
            None
        };
        if let Some((status, why)) = refusal {
            log::debug!("conn {}:{} from {peer}: refused: {why}", self.ctx.id, key);
            let resp = crate::proto::http::error_response(status, why, false);
            self.ctx.queue(conn, resp);
            self.ctx.close_after_flush(conn);
        }
        self.arm(key);
    }

    fn on_readable(&mut self, key: usize) {
        let Worker { conns, ctx, scratch, .. } = self;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        loop {
            if conn.dead {
                return;
            }
            match conn.sock.read(scratch) {
                Ok(0) => {
                    transport::on_eof(ctx, conn);
                    break;
                }
                Ok(n) => {
                    ctx.shared.gauges[ctx.id].bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    conn.last_active_ms = ctx.now_ms;
                    if conn.inbuf.is_empty() {
                        let used = transport::process(ctx, conn, &mut scratch[..n]);
                        if used < n && !conn.dead {
                            conn.inbuf.extend_from_slice(&scratch[used..n]);
                        }
                    } else {
                        let mut buf = std::mem::take(&mut conn.inbuf);
                        buf.extend_from_slice(&scratch[..n]);
                        let used = transport::process(ctx, conn, &mut buf);
                        buf.drain(..used.min(buf.len()));
                        conn.inbuf = buf;
                    }
                    if !conn.inbuf.is_empty() {
                        transport::check_held_input(ctx, conn);
                    } else if conn.inbuf.capacity() > 0 {
                        // Idle connections own no read buffer.
                        conn.inbuf = Vec::new();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("conn {}:{} from {}: read error: {e}", ctx.id, key, conn.peer);
                    ctx.kill(conn);
                    break;
                }
            }
        }
        self.after(key);
    }

    /// Re-run input processing on bytes already held (after a long-poll completes, the next
    /// pipelined request may be waiting in `inbuf`).
    fn reprocess(&mut self, key: usize) {
        let Worker { conns, ctx, .. } = self;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        if conn.inbuf.is_empty() || conn.dead {
            return;
        }
        let mut buf = std::mem::take(&mut conn.inbuf);
        let used = transport::process(ctx, conn, &mut buf);
        buf.drain(..used.min(buf.len()));
        conn.inbuf = if buf.is_empty() { Vec::new() } else { buf };
    }

    /// Bookkeeping after a connection was handled: apply backpressure, re-arm its timer.
    fn after(&mut self, key: usize) {
        self.relieve();
        if self.conns.get(key).is_some_and(|c| !c.dead) {
            self.arm(key);
        }
    }

    /// The backpressure policy, enforced here only: a connection whose out-queue passed
    /// `max_out_queue` is flushed at once; if the socket still cannot take enough, the
    /// client is a slow consumer and is dropped (it reconnects and resumes from history).
    /// It never slows other subscribers and never grows memory without bound.
    fn relieve(&mut self) {
        if self.ctx.pressure.is_empty() {
            return;
        }
        let max = self.ctx.shared.cfg.max_out_queue;
        let mut keys = std::mem::take(&mut self.ctx.pressure);
        for key in keys.drain(..) {
            if !self.conns.get(key).is_some_and(|c| !c.dead && c.out.len() > max) {
                continue;
            }
            self.flush(key);
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if !conn.dead && conn.out.len() > max {
                self.ctx.shared.stats.slow_drops.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "conn {}:{} from {}: slow consumer ({} bytes queued > max_out_queue {max}), dropped",
                    self.ctx.id,
                    key,
                    conn.peer,
                    conn.out.len()
                );
                conn.out.clear();
                self.ctx.kill(conn);
            }
        }
        self.ctx.pressure = keys;
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead {
            return;
        }
        let mut written = 0u64;
        let r = conn.out.flush(&mut conn.sock, &mut written, &mut self.coalesce);
        self.ctx.shared.gauges[self.ctx.id].bytes_out.fetch_add(written, Ordering::Relaxed);
        match r {
            Ok(Flush::Done) => {
                if conn.close_after_flush && !conn.write_shut {
                    conn.write_shut = true;
                    let _ = conn.sock.shutdown(std::net::Shutdown::Write);
                    transport::leave_subscriptions(&mut self.ctx, conn);
                    conn.state = State::Closing { until_ms: self.ctx.now_ms + LINGER_MS };
                    self.arm(key);
                }
            }
            Ok(Flush::Blocked) => {}
            Err(e) => {
                log::debug!("conn {}:{} from {}: write error: {e}", self.ctx.id, key, conn.peer);
                self.ctx.kill(conn);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.ctx.dirty);
        for &key in &dirty {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
            }
            self.flush(key);
        }
        dirty.clear();
        // Keep the allocation unless a burst made it large.
        if dirty.capacity() <= 4096 {
            self.ctx.dirty = dirty;
        }
    }

    /// Mark a connection for closing at the end of this turn.
    fn kill(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            self.ctx.kill(c);
        }
    }

    /// Free dead connections (end of the loop turn only).
    fn reap(&mut self) {
        let mut dead = std::mem::take(&mut self.ctx.dead);
        for key in dead.drain(..) {
            // A key may be listed twice; the second time its slot is already vacant.
            if !self.conns.get(key).is_some_and(|c| c.dead) {
                continue;
            }
            let mut conn = self.conns.remove(key);
            transport::leave_subscriptions(&mut self.ctx, &mut conn);
            let _ = self.poll.registry().deregister(&mut conn.sock);
            if conn.admitted {
                self.ctx.shared.ip_limits.release(conn.peer.ip());
            }
            self.ctx.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
            log::debug!("conn {}:{} from {}: closed", self.ctx.id, key, conn.peer);
        }
        self.ctx.dead = dead;
    }

    /// Make sure the wheel holds an entry no later than the connection's next deadline.
    fn arm(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(deadline) = transport::next_deadline(&self.ctx, conn) else {
            return;
        };
        let tick = Wheel::tick_of(deadline);
        if conn.timer_tick.is_some_and(|t| t <= tick) {
            return; // an earlier entry will fire and re-check
        }
        conn.timer_tick = Some(tick);
        self.wheel.add(Entry { key, gen: conn.id.gen, tick });
    }

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(self.ctx.now_ms, &mut due);
        for e in due.drain(..) {
            let Some(conn) = self.conns.get_mut(e.key) else {
                continue;
            };
            if conn.id.gen != e.gen || conn.timer_tick != Some(e.tick) || conn.dead {
                continue; // stale entry
            }
            conn.timer_tick = None;
            transport::on_timer(&mut self.ctx, conn);
            self.after(e.key);
        }
        self.due = due;
    }

    fn drain_inbox(&mut self) {
        let inbox = self.ctx.shared.inboxes[self.ctx.id].clone();
        inbox.clear_pending();
        let mut n = 0;
        while let Ok(note) = self.inbox.try_recv() {
            n += 1;
            match note {
                Note::Publish(msg) => {
                    let mut cache = transport::WireCache::default();
                    transport::deliver(&mut self.ctx, &mut self.conns, &msg, &mut cache, &mut self.finish);
                    self.relieve();
                    let mut finish = std::mem::take(&mut self.finish);
                    for id in finish.drain(..) {
                        self.after(id.key as usize);
                        self.reprocess(id.key as usize);
                        self.after(id.key as usize);
                    }
                    self.finish = finish;
                }
                Note::Event(ev) => {
                    crate::centrifugo::client::deliver_event(&mut self.ctx, &mut self.conns, &ev);
                    self.relieve();
                }
                Note::User(cmd) => {
                    crate::centrifugo::client::user_command(&mut self.ctx, &mut self.conns, &cmd);
                    self.relieve();
                }
                Note::Shutdown => self.begin_shutdown(),
            }
        }
        inbox.taken(n);
    }

    fn begin_shutdown(&mut self) {
        if self.ctx.shutting_down {
            return;
        }
        self.ctx.shutting_down = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shutdown_deadline = Some(self.ctx.now_ms + self.ctx.shared.cfg.shutdown_timeout_ms);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        log::info!("worker {}: draining {} connections", self.ctx.id, keys.len());
        for key in keys {
            let Worker { conns, ctx, .. } = self;
            if let Some(conn) = conns.get_mut(key) {
                transport::on_shutdown(ctx, conn);
            }
            self.after(key);
        }
    }
}
