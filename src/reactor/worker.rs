//! One worker: a single-threaded mio event loop that owns its connections outright.
//!
//! Loop contract (mio): edge-triggered readiness, so every read and write goes on until
//! `WouldBlock`; `Interrupted` is retried; `Ok(0)` on read is the peer's FIN. Writes are
//! batched per loop turn: transports queue bytes and mark the connection dirty, and all dirty
//! connections are flushed just before polling again; only leftovers wait for a writable
//! event. Slab slots are freed only after a whole events batch, and every timer entry and
//! subscriber reference carries the slot's generation, so nothing stale reaches a reused slot.

use super::limits::IpLimits;
use super::slot::Slot;
use super::timer::{Entry, Wheel};
use super::Clock;
use crate::hub::bus::Note;
use crate::hub::local::ConnId;
use crate::transport::outq::Flush;
use crate::transport::{self, Env, Session, Shared};
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
const TLS_LISTENER: Token = Token(usize::MAX - 3);
/// Per-worker read scratch buffer: every read lands here first.
const SCRATCH: usize = 64 * 1024;
/// Bytes one connection may have read per loop turn before the worker moves on (with
/// `transport::TURN_BUDGET` requests/frames, the fairness budget of one connection).
const READ_BUDGET: usize = 4 * SCRATCH;
/// Back-off before retrying accept after EMFILE/ENFILE.
const ACCEPT_BACKOFF_MS: u64 = 100;

/// Create a non-blocking SO_REUSEPORT listener (one per worker; the kernel spreads
/// connections between them). Errors name `addr`.
pub fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let named = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    s.set_reuse_address(true).map_err(named)?;
    s.set_reuse_port(true).map_err(named)?;
    s.set_nonblocking(true).map_err(named)?;
    s.bind(&addr.into()).map_err(named)?;
    s.listen(4096).map_err(named)?;
    Ok(s.into())
}

/// A worker's listening sockets: the main one (`port`; TLS when `main_tls`) and the
/// optional TLS one (`tls_port`).
pub struct Listeners {
    /// The main listener.
    pub main: std::net::TcpListener,
    /// Whether the main listener speaks TLS.
    pub main_tls: bool,
    /// The TLS listener on `tls_port`, if any.
    pub tls: Option<std::net::TcpListener>,
    /// The certificate, when TLS is on.
    pub certs: Option<Arc<super::tls::Certs>>,
}

/// One event loop.
pub struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    main_tls: bool,
    tls_listener: Option<TcpListener>,
    certs: Option<Arc<super::tls::Certs>>,
    conns: Slab<Slot>,
    gens: Vec<u32>,
    ctx: Env,
    clock: Clock,
    ip_limits: Arc<IpLimits>,
    scratch: Vec<u8>,
    /// Where a flush copies several small queued frames to write them in one `write`.
    coalesce: Vec<u8>,
    /// TLS connections' shared plaintext and sealing buffers (empty until first used).
    tls_scratch: super::tls::Scratch,
    /// Connections to serve again next turn without a readiness event (budget spent, or
    /// reading resumed after a pause).
    ready: Vec<usize>,
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
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        clock: Clock,
        ip_limits: Arc<IpLimits>,
        ls: Listeners,
        inbox: Receiver<Note>,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(ls.main);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut tls_listener = ls.tls.map(TcpListener::from_std);
        if let Some(l) = tls_listener.as_mut() {
            poll.registry().register(l, TLS_LISTENER, Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        shared.inboxes[id].set_waker(waker);
        let ctx = Env::new(id, shared, clock.seed(id as u64), clock.now_ms(), clock.unix_s());
        Ok(Worker {
            poll,
            listener: Some(listener),
            main_tls: ls.main_tls,
            tls_listener,
            certs: ls.certs,
            conns: Slab::new(),
            gens: Vec::new(),
            ctx,
            clock,
            ip_limits,
            scratch: vec![0; SCRATCH],
            coalesce: Vec::with_capacity(crate::transport::outq::COALESCE_MAX),
            tls_scratch: super::tls::Scratch::default(),
            ready: Vec::new(),
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
            let now = self.clock.now_ms();
            // Connections left with work by their turn budget are served again at once.
            let busy = !self.ready.is_empty() || !self.ctx.fx.ready.is_empty() || !self.ctx.fx.flush.is_empty();
            let timeout = if busy { 0 } else { self.wheel.next_wait_ms(now) };
            if let Err(e) = self.poll.poll(&mut events, Some(std::time::Duration::from_millis(timeout))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.ctx.id);
                    break;
                }
            }
            self.ctx.now_ms = self.clock.now_ms();
            self.ctx.unix_s = self.clock.unix_s();
            let turn_start = std::time::Instant::now();
            self.serve_ready();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(false),
                    TLS_LISTENER => self.accept(true),
                    WAKER => self.drain_inbox(),
                    Token(key) => {
                        // Spurious or late events for a freed or dying slot are ignored.
                        if self.conns.get(key).is_none_or(|c| c.session.dead) {
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
                self.accept(false);
                self.accept(true);
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
        let conns = &self.conns;
        if !super::account_turn(&self.ctx, turn_start, &mut self.next_gauges_ms, || {
            conns.iter().map(|(_, c)| &c.session)
        }) {
            return;
        }
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
        trim(&mut self.ctx.fx.flush);
        trim(&mut self.ctx.fx.close);
        trim(&mut self.ctx.fx.pressure);
        trim(&mut self.due);
        trim(&mut self.finish);
        self.ctx.local.shrink();
        self.ctx.cf_users.shrink_to_fit();
        crate::alloc::release_thread_cache();
    }

    /// Accept from the main listener, or (`second`) the TLS one.
    fn accept(&mut self, second: bool) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let tls = if second { true } else { self.main_tls };
        loop {
            let l = if second { self.tls_listener.as_ref() } else { self.listener.as_ref() };
            let Some(l) = l else {
                return;
            };
            match l.accept() {
                Ok((sock, peer)) => self.add_conn(sock, peer, tls),
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

    fn add_conn(&mut self, mut sock: TcpStream, peer: SocketAddr, tls: bool) {
        let tls = match (tls, self.certs.as_ref()) {
            (false, _) => None,
            (true, Some(c)) => match c.accept() {
                Ok(t) => Some(t),
                Err(e) => {
                    log::warn!("worker {}: TLS state for {peer}: {e}", self.ctx.id);
                    return;
                }
            },
            (true, None) => return,
        };
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
        let slot = entry.insert(Slot::new(sock, Session::new(id, peer, self.ctx.now_ms), tls));
        log::debug!("conn {}:{} from {peer}: accepted", self.ctx.id, key);
        let limits = &self.ip_limits;
        let refusal = if max > 0 && total > max {
            stats.refused_max_conns.fetch_add(1, Ordering::Relaxed);
            Some((503, "server at max_connections"))
        } else if limits.enabled() {
            match limits.admit(peer.ip(), self.ctx.now_ms) {
                Ok(()) => {
                    slot.admitted = true;
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
                Err(super::limits::Refusal::TableFull) => {
                    stats.refused_rate.fetch_add(1, Ordering::Relaxed);
                    Some((429, "too many client addresses connecting at once (max_tracked_ips)"))
                }
            }
        } else {
            None
        };
        if let Some((status, why)) = refusal {
            log::debug!("conn {}:{} from {peer}: refused: {why}", self.ctx.id, key);
            transport::refuse(&mut self.ctx, &mut slot.session, status, why);
        }
        self.arm(key);
    }

    /// Read a connection until `WouldBlock`, its turn budget is spent, or its out-queue is
    /// over the high-water mark (then reading pauses until a flush drains it: input is not
    /// parsed while the client is not reading what it asked for).
    fn on_readable(&mut self, key: usize) {
        let Worker { conns, ctx, scratch, tls_scratch, .. } = self;
        let Some(slot) = conns.get_mut(key) else {
            return;
        };
        if slot.paused {
            return;
        }
        ctx.budget = transport::env::TURN_BUDGET;
        let mut read_budget = READ_BUDGET;
        loop {
            if slot.session.dead {
                return;
            }
            // Over the high-water mark, or waiting for an engine answer: stop reading.
            if ctx.over_high_water(&slot.session) || slot.session.parked {
                slot.paused = true;
                break;
            }
            if read_budget == 0 || ctx.budget == 0 {
                ctx.fx.ready.push(key);
                break;
            }
            if let Some(tls) = slot.tls.as_mut() {
                let session = &mut slot.session;
                let step = super::tls::read(tls, &mut slot.sock, scratch, tls_scratch, |plain| {
                    transport::on_bytes(ctx, session, plain)
                });
                match step {
                    Ok(super::tls::ReadStep::Data { wire }) => {
                        read_budget = read_budget.saturating_sub(wire);
                        ctx.shared.gauges[ctx.id].bytes_in.fetch_add(wire as u64, Ordering::Relaxed);
                        // The start of a record held below the session counts as held input.
                        transport::note_held_below(ctx, &mut slot.session, tls.holds_input());
                        if tls.has_unsent() || (!tls.is_handshaking() && !slot.session.out.is_empty()) {
                            // Handshake records to send, or replies queued during it.
                            ctx.mark_dirty(&mut slot.session);
                        }
                        continue;
                    }
                    Ok(super::tls::ReadStep::Eof) => {
                        transport::on_eof(ctx, &mut slot.session);
                        break;
                    }
                    Ok(super::tls::ReadStep::WouldBlock) => break,
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        ctx.shared.stats.tls_errors.fetch_add(1, Ordering::Relaxed);
                        log::debug!("conn {}:{} from {}: TLS: {e}", ctx.id, key, slot.session.peer);
                        // The alert rustls prepared, best effort; then the connection goes.
                        super::tls::send_alert(tls, &mut slot.sock);
                        ctx.kill(&mut slot.session);
                        break;
                    }
                    Err(e) => {
                        log::debug!("conn {}:{} from {}: read error: {e}", ctx.id, key, slot.session.peer);
                        ctx.kill(&mut slot.session);
                        break;
                    }
                }
            }
            match slot.sock.read(scratch) {
                Ok(0) => {
                    transport::on_eof(ctx, &mut slot.session);
                    break;
                }
                Ok(n) => {
                    read_budget = read_budget.saturating_sub(n);
                    ctx.shared.gauges[ctx.id].bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    transport::on_bytes(ctx, &mut slot.session, &mut scratch[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("conn {}:{} from {}: read error: {e}", ctx.id, key, slot.session.peer);
                    ctx.kill(&mut slot.session);
                    break;
                }
            }
        }
        self.after(key);
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
        }
    }

    /// Serve the connections that still had work when their turn budget ran out (or that
    /// resumed after a pause): held input first, then the socket. Edge-triggered readiness
    /// will not report bytes that were already there, so they are not waited for.
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
            // Input already held used up the turn: reading more now would only grow it
            // (a client pipelining faster than it is answered waits in its socket).
            if self.ctx.budget == 0 {
                self.after(key);
                continue;
            }
            self.on_readable(key);
        }
        // Keys listed again while serving (budget spent again) stay listed.
        ready.clear();
        ready.append(&mut self.ready);
        self.ready = ready;
    }

    /// Bookkeeping after a connection was handled: apply backpressure, re-arm its timer.
    fn after(&mut self, key: usize) {
        self.ready.append(&mut self.ctx.fx.ready);
        self.relieve();
        if self.conns.get(key).is_some_and(|c| !c.session.dead) {
            self.arm(key);
        }
    }

    /// The backpressure policy, enforced here only: a connection whose out-queue passed
    /// `max_out_queue` is flushed at once; if the socket still cannot take enough, the
    /// client is a slow consumer and is dropped (it reconnects and resumes from history).
    /// It never slows other subscribers and never grows memory without bound.
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
            super::drop_if_slow(&mut self.ctx, key, &mut slot.session, max);
        }
        self.ctx.fx.pressure = keys;
    }

    fn flush(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.session.dead {
            return;
        }
        let mut written = 0u64;
        let mut r = write_out(slot, &mut written, &mut self.coalesce, &mut self.tls_scratch);
        // A paced replay continues as the socket takes it (bounded rounds per turn; the
        // rest continues on the next writable event or turn).
        let mut rounds = 0;
        // (A replay held for an engine answer has nothing to give yet.)
        let replaying = |s: &transport::Session| s.replay.as_ref().is_some_and(|r| !r.hold);
        while matches!(r, Ok(Flush::Done)) && replaying(&slot.session) && rounds < 16 && !slot.session.dead {
            transport::on_drained(&mut self.ctx, &mut slot.session);
            r = write_out(slot, &mut written, &mut self.coalesce, &mut self.tls_scratch);
            rounds += 1;
        }
        if matches!(r, Ok(Flush::Blocked)) && slot.session.out.len() <= self.ctx.low_water {
            transport::on_drained(&mut self.ctx, &mut slot.session);
        }
        if slot.paused && slot.session.out.len() <= self.ctx.low_water {
            slot.paused = false;
            self.ready.push(key);
        }
        if rounds == 16 && replaying(&slot.session) {
            self.ctx.mark_dirty(&mut slot.session);
        }
        self.ctx.shared.gauges[self.ctx.id].bytes_out.fetch_add(written, Ordering::Relaxed);
        match r {
            Ok(Flush::Done) => {
                // Everything queued before the close must go first, a paced replay included.
                if slot.session.close_after_flush && !slot.write_shut && slot.session.replay.is_none() {
                    slot.write_shut = true;
                    if let Some(tls) = slot.tls.as_mut() {
                        super::tls::close_notify(tls, &mut slot.sock, &mut self.tls_scratch);
                    }
                    let _ = slot.sock.shutdown(std::net::Shutdown::Write);
                    transport::on_final_flush(&mut self.ctx, &mut slot.session);
                    self.arm(key);
                }
            }
            Ok(Flush::Blocked) => {}
            Err(e) => {
                log::debug!("conn {}:{} from {}: write error: {e}", self.ctx.id, key, slot.session.peer);
                self.ctx.kill(&mut slot.session);
            }
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
        // Sessions marked again while flushing (a replay that continues next turn) stay
        // listed: their `dirty` flag is set, so dropping them would strand them.
        dirty.append(&mut self.ctx.fx.flush);
        // Keep the allocation unless a burst made it large.
        if dirty.capacity() <= 4096 || !dirty.is_empty() {
            self.ctx.fx.flush = dirty;
        }
    }

    /// Mark a connection for closing at the end of this turn.
    fn kill(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            self.ctx.kill(&mut c.session);
        }
    }

    /// Free dead connections (end of the loop turn only).
    fn reap(&mut self) {
        let mut dead = std::mem::take(&mut self.ctx.fx.close);
        for key in dead.drain(..) {
            // A key may be listed twice; the second time its slot is already vacant.
            if !self.conns.get(key).is_some_and(|c| c.session.dead) {
                continue;
            }
            let mut slot = self.conns.remove(key);
            transport::on_close(&mut self.ctx, &mut slot.session);
            let _ = self.poll.registry().deregister(&mut slot.sock);
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

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(self.ctx.now_ms, &mut due);
        for e in due.drain(..) {
            let Some(slot) = self.conns.get_mut(e.key) else {
                continue;
            };
            if slot.session.id.gen != e.gen || slot.timer_tick() != Some(e.tick) || slot.session.dead {
                continue; // stale entry
            }
            slot.set_timer_tick(None);
            transport::on_timer(&mut self.ctx, &mut slot.session);
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
            if let Note::Shutdown = note {
                self.begin_shutdown();
                continue;
            }
            if let Note::Answer { conn, done } = note {
                transport::on_answer(&mut self.ctx, &mut self.conns, conn, done, &mut self.finish);
            } else {
                transport::on_note(&mut self.ctx, &mut self.conns, &note, &mut self.finish);
            }
            self.relieve();
            let mut finish = std::mem::take(&mut self.finish);
            for id in finish.drain(..) {
                // A session that waited for the engine stopped reading: resume it.
                if let Some(slot) = self.conns.get_mut(id.key as usize) {
                    if slot.paused && !slot.session.parked && slot.session.out.len() <= self.ctx.low_water {
                        slot.paused = false;
                        self.ready.push(id.key as usize);
                    }
                }
                self.after(id.key as usize);
                self.reprocess(id.key as usize);
                self.after(id.key as usize);
            }
            self.finish = finish;
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
        if let Some(mut l) = self.tls_listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shutdown_deadline = Some(self.ctx.now_ms + self.ctx.shared.cfg.shutdown_timeout_ms);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        log::info!("worker {}: draining {} connections", self.ctx.id, keys.len());
        for key in keys {
            let Worker { conns, ctx, .. } = self;
            if let Some(slot) = conns.get_mut(key) {
                transport::on_shutdown(ctx, &mut slot.session);
            }
            self.after(key);
        }
    }
}

/// Write a connection's out-queue to its socket, sealed by rustls when it speaks TLS.
fn write_out(
    slot: &mut Slot,
    written: &mut u64,
    coalesce: &mut Vec<u8>,
    tls_scratch: &mut super::tls::Scratch,
) -> io::Result<Flush> {
    match slot.tls.as_mut() {
        Some(tls) => super::tls::flush(tls, &mut slot.session.out, &mut slot.sock, written, coalesce, tls_scratch),
        None => slot.session.out.flush(&mut slot.sock, written, coalesce),
    }
}
