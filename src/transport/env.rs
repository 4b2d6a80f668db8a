//! What a transport handler sees besides its session: the worker's environment.
//!
//! Owns: [`Shared`] (what all workers share: configuration, engine, inboxes, counters),
//! [`Env`] (one worker's transport-side state: its subscriber sets, the clock of this loop
//! turn, limits, the token verifier) and [`Effects`], the sink where handlers record what
//! the reactor must do at the end of the turn (flush a session, close it, apply the
//! backpressure policy). Handlers never do IO: they queue bytes on the session and list
//! it here; the reactor applies the lists (the rustls/quinn-proto shape). The clock is
//! read by the reactor once per loop turn and written into `now_ms` and `unix_s`.
//!
//! Also the asynchronous seam: a handler that needs an answer from elsewhere (the Redis
//! engine, a proxy call to the application backend through the [`Backend`] the reactor's
//! proxy threads implement) parks its session with a continuation ([`Env::park`] via
//! [`Env::engine`] or [`Env::proxy`]); the answer comes back as a `Note::Answer` in the
//! worker's inbox and [`Env::resume`] runs the rest.

use super::metrics::WorkerGauges;
use super::session::{Session, State};
use crate::config::Config;
use crate::hub::bus::Inbox;
use crate::hub::local::{ConnId, LocalHub};
use crate::hub::Engine;
use crate::proto::centrifugo::IdGen;
use crate::proto::http::HttpLimits;
use crate::proto::jwt::Verifier;
use crate::proto::ws::WsLimits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

/// How long a closing connection may linger waiting for the peer's FIN.
pub const LINGER_MS: u64 = 2_000;

/// Counters shared by all workers (relaxed atomics: read by /metrics, never on a lock).
#[derive(Default)]
pub struct Stats {
    /// Open connections.
    pub connections: AtomicUsize,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Refused: over `max_connections`.
    pub refused_max_conns: AtomicU64,
    /// Refused: over `max_connections_per_ip`.
    pub refused_per_ip: AtomicU64,
    /// Refused: over `connect_rate_per_ip`.
    pub refused_rate: AtomicU64,
    /// accept() failures.
    pub accept_errors: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Deliveries queued to subscribers.
    pub delivered: AtomicU64,
    /// Connections dropped over `max_out_queue`.
    pub slow_drops: AtomicU64,
    /// Proxy calls by kind ([`crate::config::proxy::Kind`] order) and outcome
    /// ([`PROXY_OUTCOMES`] order).
    pub proxy_calls: [[AtomicU64; 4]; 6],
    /// HTTP requests answered with an error.
    pub http_errors: AtomicU64,
    /// WebSocket connections failed for protocol errors.
    pub ws_protocol_errors: AtomicU64,
    /// TLS connections closed for a TLS error (bad ClientHello, plain HTTP on a TLS port,
    /// handshake failure, bad record).
    pub tls_errors: AtomicU64,
    /// WebSocket connections that negotiated permessage-deflate since start.
    pub ws_compressed: AtomicU64,
    /// Connected Centrifugo clients.
    pub cf_clients: AtomicUsize,
    /// Addresses in the reactor's per-IP admission table (updated by its once-a-second
    /// sweep).
    pub ip_table_entries: AtomicUsize,
}

/// Outcomes of a proxy call, as `herald_proxy_calls_total` labels them: answered (a result,
/// an error or a disconnect from the backend), refused for a full queue, timed out, failed
/// otherwise (unreachable, a status other than 200, an answer too large or malformed).
pub const PROXY_OUTCOMES: [&str; 4] = ["answered", "busy", "timeout", "failed"];

/// What every worker shares: configuration, the engine, the inboxes, the counters.
pub struct Shared {
    /// The configuration (never re-read by workers).
    pub cfg: Arc<Config>,
    /// The engine (memory by default).
    pub engine: Arc<dyn Engine>,
    /// Every worker's inbox, by worker index.
    pub inboxes: Vec<Arc<Inbox>>,
    /// Counters.
    pub stats: Stats,
    /// This node's id (Centrifugo `info`).
    pub node_id: String,
    /// Connected Centrifugo users and their connection counts (touched on connect and
    /// disconnect only, never on delivery).
    pub users: Mutex<HashMap<Arc<str>, usize>>,
    /// Per-worker gauges for `/metrics`.
    pub gauges: Vec<WorkerGauges>,
    /// The JWKS key sets by endpoint URL (filled by `reactor::jwks` fetcher threads; read
    /// by the token verifiers at connect and subscribe).
    pub jwks: Vec<(String, Arc<crate::proto::jwks::Jwks>)>,
    /// The proxies to the application backend the configuration names.
    pub proxies: crate::config::proxy::ProxySet,
    /// Whoever makes proxy calls (the reactor's proxy threads); `None` when no proxy is
    /// configured.
    pub backend: Option<Arc<dyn Backend>>,
}

/// One HTTP call to the application backend (a Centrifugo proxy), ready to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// What it is for (logs, metrics).
    pub kind: crate::config::proxy::Kind,
    /// The proxy's endpoint.
    pub url: String,
    /// The whole call must be answered within this, waiting for a thread included.
    pub timeout: std::time::Duration,
    /// Request headers (static, then forwarded; `Content-Type` is added by the caller).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: bytes::Bytes,
    /// Statuses answered as errors or disconnects instead of a failure.
    pub transforms: Vec<crate::proto::proxy::Transform>,
}

/// Makes proxy calls off the worker: [`Backend::call`] never blocks; the answer (or the
/// failure) comes back later as [`crate::hub::bus::Note::Answer`] with one
/// [`crate::hub::Done::Proxy`] for `reply`. Implemented by the reactor's proxy threads.
pub trait Backend: Send + Sync {
    /// Queue `call`; `Err(Failure::Busy)` at once when the queue is full (nothing will be
    /// sent for it then).
    fn call(&self, call: Call, reply: crate::hub::Reply) -> Result<(), crate::proto::proxy::Failure>;
    /// Calls queued or being made.
    fn in_flight(&self) -> usize;
}

/// What handlers ask the reactor to do, applied at the end of the loop turn. Each list
/// holds slab keys; a session's `dirty`/`dead` flags keep it listed once.
#[derive(Default)]
pub struct Effects {
    /// Sessions with queued bytes to flush.
    pub flush: Vec<usize>,
    /// Sessions to close now (their socket is freed; nothing more is sent).
    pub close: Vec<usize>,
    /// Sessions whose out-queue passed `max_out_queue` (the reactor's backpressure policy).
    pub pressure: Vec<usize>,
    /// Sessions that stopped with input left because their per-turn budget ran out: the
    /// reactor comes back to them next turn without waiting for a new readiness event.
    pub ready: Vec<usize>,
}

/// Requests or WebSocket frames one session may have handled per loop turn before the
/// worker moves on to the others (fairness under pipelining floods).
pub const TURN_BUDGET: u32 = 64;

/// One worker's transport-side state, handed to every handler with a session.
pub struct Env {
    /// Worker index.
    pub id: usize,
    /// What all workers share.
    pub shared: Arc<Shared>,
    /// This worker's subscriber sets.
    pub local: LocalHub,
    /// Milliseconds since the server started, read once per loop turn by the reactor.
    pub now_ms: u64,
    /// Unix time in seconds, read once per loop turn by the reactor (token expiry).
    pub unix_s: i64,
    /// HTTP parser limits.
    pub http_limits: HttpLimits,
    /// WebSocket decoder limits.
    pub ws_limits: WsLimits,
    /// Addresses allowed to publish.
    pub publish_cidrs: Vec<crate::config::Cidr>,
    /// The graceful drain has begun.
    pub shutting_down: bool,
    /// Effects for the reactor.
    pub fx: Effects,
    /// The cap on a session's queued bytes (`max_out_queue`).
    pub max_out_queue: usize,
    /// Input is not parsed while a session has this many bytes queued (see
    /// [`Env::high_water_of`]); replays refill up to it.
    pub high_water: usize,
    /// A paused session resumes reading, and a replay is refilled, once its queue falls
    /// to this many bytes.
    pub low_water: usize,
    /// Requests or frames the session now being handled may still process this turn.
    pub budget: u32,
    /// Centrifugo connection-token verifier.
    pub verifier: Arc<Verifier>,
    /// Centrifugo subscription-token verifier.
    pub sub_verifier: Arc<Verifier>,
    /// This worker's Centrifugo connections by user (for API commands aimed at users).
    pub cf_users: HashMap<Arc<str>, Vec<ConnId>>,
    /// Client ids (seeded by the reactor).
    pub ids: IdGen,
    /// This worker's Centrifugo emulation sessions (`/emulation` requests name them).
    pub emulation: HashMap<Arc<str>, ConnId>,
    /// permessage-deflate: the worker's one compressor and decompressor.
    pub zip: super::wire::Zip,
    /// Inflated client message scratch (reused; freed when a message made it large).
    pub inflated: Vec<u8>,
    /// Sessions waiting for an asynchronous engine or proxy answer, by slab key (see
    /// [`Env::engine`], [`Env::proxy`], [`Env::park`]). Empty with the memory engine and no
    /// proxy call in flight.
    pub waiting: HashMap<u32, Waiting>,
}

/// What runs when an engine (or proxy) answer arrives: the second half of a handler.
pub type Then = Box<dyn FnOnce(&mut Env, &mut Session, Vec<crate::hub::Done>) + Send>;
/// Work that arrived for a session while it waited (API commands, emulation posts), run
/// in order once it no longer waits.
pub type Later = Box<dyn FnOnce(&mut Env, &mut Session) + Send>;

/// A session parked on an engine or proxy answer.
pub struct Waiting {
    gen: u32,
    then: Then,
    later: std::collections::VecDeque<Later>,
}

impl Env {
    /// A worker's environment. `seed` feeds the client-id generator (the reactor mixes the
    /// wall clock, the process id and the worker index); `now_ms` and `unix_s` are the
    /// clock at start.
    pub fn new(id: usize, shared: Arc<Shared>, seed: u64, now_ms: u64, unix_s: i64) -> Env {
        let cfg = &shared.cfg;
        let http_limits = HttpLimits {
            max_request_line: cfg.max_request_line,
            max_headers: cfg.max_headers,
            max_header_bytes: cfg.max_header_bytes,
            max_body: cfg.max_body,
        };
        let ws_limits = WsLimits { max_message: cfg.ws_max_message, max_frame: cfg.ws_max_frame };
        let publish_cidrs = cfg.publish_cidrs();
        let verifier = Arc::new(super::centrifugo::client::verifier(cfg, &shared.jwks));
        let sub_verifier = Arc::new(super::centrifugo::client::sub_verifier(cfg, &shared.jwks));
        let high_water = Env::high_water_of(cfg.max_out_queue);
        Env {
            id,
            max_out_queue: cfg.max_out_queue,
            high_water,
            low_water: high_water / 2,
            budget: TURN_BUDGET,
            local: LocalHub::default(),
            now_ms,
            unix_s,
            http_limits,
            ws_limits,
            publish_cidrs,
            shutting_down: false,
            fx: Effects::default(),
            verifier,
            sub_verifier,
            cf_users: HashMap::new(),
            ids: IdGen::new(seed),
            emulation: HashMap::new(),
            zip: super::wire::Zip::new(cfg.compression(), cfg.compression_min_size(), cfg.compression_level()),
            inflated: Vec::new(),
            waiting: HashMap::new(),
            shared,
        }
    }

    /// Run engine operations for `conn`, then `then` with their answers: at once when the
    /// engine answers at once (the memory engine), else when its [`crate::hub::bus::Note::Answer`]
    /// arrives. Meanwhile the session is `parked`: its input is not parsed (the reactor
    /// stops reading it), and work aimed at it runs afterwards in order ([`Env::later`]), so
    /// replies keep the order of the requests. The engine always answers (an error when
    /// the network fails), so a session never waits forever.
    pub fn engine<F>(&mut self, conn: &mut Session, ops: Vec<crate::hub::Op>, then: F)
    where
        F: FnOnce(&mut Env, &mut Session, Vec<crate::hub::Done>) + Send + 'static,
    {
        if conn.parked {
            return self.later(conn, move |env, conn| env.engine(conn, ops, then));
        }
        let reply = crate::hub::Reply { worker: self.id, conn: conn.id };
        let engine = self.shared.engine.clone();
        match engine.submit(ops, self.now_ms, reply) {
            Some(done) => then(self, conn, done),
            None => {
                self.park(conn, then);
            }
        }
    }

    /// Park `conn` until a [`crate::hub::bus::Note::Answer`] for it arrives, then run `then`
    /// with the answers; returns where that answer must be sent. The session must not be
    /// parked already (callers defer with [`Env::later`] first): one thing waited for at a
    /// time per session, which also bounds what one client can have in flight.
    pub fn park<F>(&mut self, conn: &mut Session, then: F) -> crate::hub::Reply
    where
        F: FnOnce(&mut Env, &mut Session, Vec<crate::hub::Done>) + Send + 'static,
    {
        debug_assert!(!conn.parked, "a parked session parked again");
        conn.parked = true;
        let w = Waiting { gen: conn.id.gen, then: Box::new(then), later: Default::default() };
        self.waiting.insert(conn.id.key, w);
        crate::hub::Reply { worker: self.id, conn: conn.id }
    }

    /// Call the application backend (a Centrifugo proxy), then `then` with its answer. The
    /// session is parked meanwhile exactly as for an engine answer ([`Env::engine`]); the
    /// call runs on the proxy threads and its answer arrives through the worker's inbox.
    /// A full queue (or no proxy threads) answers at once with the failure. The proxy
    /// threads always answer (a timeout at the latest), so a session never waits forever.
    pub fn proxy<F>(&mut self, conn: &mut Session, call: Call, then: F)
    where
        F: FnOnce(&mut Env, &mut Session, Result<Box<crate::proto::proxy::Answer>, crate::proto::proxy::Failure>)
            + Send
            + 'static,
    {
        use crate::proto::proxy::Failure;
        if conn.parked {
            return self.later(conn, move |env, conn| env.proxy(conn, call, then));
        }
        let kind = call.kind;
        let counted = move |env: &mut Env, r: &Result<Box<crate::proto::proxy::Answer>, Failure>| {
            let outcome = match r {
                Ok(_) => 0,
                Err(Failure::Busy) => 1,
                Err(Failure::Timeout) => 2,
                Err(_) => 3,
            };
            env.shared.stats.proxy_calls[kind as usize][outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let Some(backend) = self.shared.backend.clone() else {
            let r = Err(Failure::Transport("no proxy threads".into()));
            counted(self, &r);
            return then(self, conn, r);
        };
        let reply = crate::hub::Reply { worker: self.id, conn: conn.id };
        match backend.call(call, reply) {
            Ok(()) => {
                self.park(conn, move |env, conn, done| {
                    let r = done.into_iter().next().map(crate::hub::Done::proxy).unwrap_or(Err(Failure::Timeout));
                    counted(env, &r);
                    then(env, conn, r)
                });
            }
            Err(f) => {
                let r = Err(f);
                counted(self, &r);
                then(self, conn, r)
            }
        }
    }

    /// Run `f` on the session now, or after its engine answer when it is parked.
    pub fn later<F>(&mut self, conn: &mut Session, f: F)
    where
        F: FnOnce(&mut Env, &mut Session) + Send + 'static,
    {
        match self.waiting.get_mut(&conn.id.key) {
            Some(w) if conn.parked => w.later.push_back(Box::new(f)),
            _ => f(self, conn),
        }
    }

    /// How much work waits behind a parked session's answer (0 when it is not parked).
    pub fn deferred(&self, conn: &Session) -> usize {
        match self.waiting.get(&conn.id.key) {
            Some(w) if conn.parked && w.gen == conn.id.gen => w.later.len(),
            _ => 0,
        }
    }

    /// The engine answered a parked session: run the rest of its handler and whatever
    /// waited behind it (until it parks again).
    pub fn resume(&mut self, conn: &mut Session, done: Vec<crate::hub::Done>) {
        let Some(w) = self.waiting.remove(&conn.id.key) else {
            log::trace!("worker {}: engine answer for conn {} which waits for none", self.id, conn.id.key);
            return;
        };
        log::trace!("worker {}: engine answer for conn {}", self.id, conn.id.key);
        if w.gen != conn.id.gen || conn.dead {
            return;
        }
        conn.parked = false;
        (w.then)(self, conn, done);
        let mut later = w.later;
        while let Some(f) = later.pop_front() {
            if conn.parked {
                if let Some(nw) = self.waiting.get_mut(&conn.id.key) {
                    later.push_front(f);
                    nw.later.extend(later);
                }
                return;
            }
            f(self, conn);
        }
    }

    /// The session is going away: drop whatever waited for it.
    pub fn forget(&mut self, conn: &mut Session) {
        if conn.parked {
            conn.parked = false;
            self.waiting.remove(&conn.id.key);
        }
    }

    /// The high-water mark for a cap: a quarter of it, between 64 KiB and 1 MiB (never
    /// above the cap). Small enough that a paused client holds little, large enough for a
    /// batch of deliveries or one large reply.
    pub fn high_water_of(max_out_queue: usize) -> usize {
        (max_out_queue / 4).clamp(64 << 10, 1 << 20).min(max_out_queue)
    }

    /// Queue bytes on a session and mark it for the end-of-turn flush. This is the one
    /// accounting point: replies, pongs, close frames, command answers, deliveries and
    /// replays all pass here, and a session whose queue crosses `max_out_queue` is listed
    /// for the reactor's backpressure policy.
    pub fn queue(&mut self, conn: &mut Session, b: bytes::Bytes) {
        if conn.replay.is_some() {
            // Behind a paced replay: waits its turn (and is counted while it waits).
            self.hold(conn, super::session::Item::Bytes(b));
            return;
        }
        self.push_out(conn, b);
    }

    /// Put an item at the end of the session's paced replay (starting one if needed), and
    /// drop the session if what it holds there passes `max_out_queue`.
    pub fn hold(&mut self, conn: &mut Session, item: super::session::Item) {
        let r = conn.replay.get_or_insert_with(Default::default);
        r.held += super::session::Replay::cost(&item);
        r.queue.push_back(item);
        let held = r.held;
        if held > self.max_out_queue {
            self.slow_consumer(conn, held);
            return;
        }
        // An empty out-queue is flushed at once, which refills from the replay.
        self.mark_dirty(conn);
    }

    /// Drop a session that fell too far behind (counted, logged once).
    pub fn slow_consumer(&mut self, conn: &mut Session, bytes: usize) {
        if conn.dead {
            return;
        }
        self.shared.stats.slow_drops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::info!(
            "conn {}:{} from {}: slow consumer ({bytes} bytes waiting > max_out_queue {}), dropped",
            self.id,
            conn.id.key,
            conn.peer,
            self.max_out_queue
        );
        conn.replay = None;
        conn.out.clear();
        self.kill(conn);
    }

    /// Queue bytes on the out-queue itself (the replay's own refill, and everything when no
    /// replay runs).
    pub fn push_out(&mut self, conn: &mut Session, b: bytes::Bytes) {
        let before = conn.out.len();
        conn.out.push(b);
        if before <= self.max_out_queue && conn.out.len() > self.max_out_queue && !conn.dead {
            self.fx.pressure.push(conn.id.key as usize);
        }
        self.mark_dirty(conn);
    }

    /// Whether a session has so much queued that its input must wait.
    pub fn over_high_water(&self, conn: &Session) -> bool {
        conn.out.len() >= self.high_water
    }

    /// Close a session now (freed at the end of the loop turn; nothing more is sent).
    pub fn kill(&mut self, conn: &mut Session) {
        if !conn.dead {
            conn.dead = true;
            self.fx.close.push(conn.id.key as usize);
        }
    }

    /// Send what is queued, then close gracefully (shut the write side, drain input until the
    /// peer's FIN, linger at most [`LINGER_MS`]). Input arriving meanwhile is discarded.
    pub fn close_after_flush(&mut self, conn: &mut Session) {
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

    /// Mark a session for the end-of-turn flush.
    pub fn mark_dirty(&mut self, conn: &mut Session) {
        if !conn.dirty {
            conn.dirty = true;
            self.fx.flush.push(conn.id.key as usize);
        }
    }
}

/// Sessions by slab key: implemented by the reactor's slab of socket slots, so that
/// fan-out and inbox handling can reach other sessions without knowing what holds them.
pub trait Sessions {
    /// The live session at `key`, if any.
    fn session(&mut self, key: usize) -> Option<&mut Session>;
}

/// A plain slab of sessions (unit tests; anything without sockets).
impl Sessions for slab::Slab<Session> {
    fn session(&mut self, key: usize) -> Option<&mut Session> {
        self.get_mut(key)
    }
}
