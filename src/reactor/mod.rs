//! The reactor: the only IO layer. One single-threaded event loop per worker thread (mio
//! over epoll in [`worker`], or io_uring in [`uring`], chosen by the `io` key), each with
//! its own SO_REUSEPORT listener, a slab of connections, a timer wheel and an inbox for
//! messages from other workers.
//!
//! Owns: sockets, readiness, timers, the clock, admission. Calls into `transport` with
//! bytes and a `Session`, and applies the effects handlers record (flush, close,
//! backpressure); transports never read or write a socket themselves. Beside the workers,
//! [`jwks`] runs the background threads that fetch token keys from a JWKS endpoint, and
//! [`proxy`] the threads that make Centrifugo proxy calls to the application backend.

pub mod jwks;
pub mod limits;
pub mod proxy;
pub mod redis;
pub mod slot;
pub mod timer;
pub mod tls;
pub mod uring;
pub mod worker;

use crate::config::Config;
use crate::hub::bus::{Inbox, Note};
use crate::hub::Engine;
use crate::transport::{Shared, Stats};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The reactor's clock: milliseconds since `epoch` for timers and handlers, and Unix
/// seconds for token expiry. Read once per loop turn by each worker (and by the main
/// thread's sweep through [`Server::now_ms`]).
#[derive(Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// Milliseconds since the server started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Unix time in seconds.
    pub fn unix_s(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    /// A seed for id generators: wall clock nanoseconds, the process id and `salt` mixed.
    pub fn seed(&self, salt: u64) -> u64 {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        t ^ (u64::from(std::process::id()) << 40) ^ salt.wrapping_mul(0x9E3779B97F4A7C15)
    }
}

/// Fail if another process listens on `addr` already. The workers' listeners use
/// SO_REUSEPORT (one per worker), which would also let them join a port another herald
/// holds and split its traffic between two servers with separate histories; a plain bind
/// (SO_REUSEADDR only, so sockets in TIME_WAIT do not count) refuses an address in use.
/// Skipped when `reuse_port` asks for sharing, and for port 0.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    s.set_reuse_address(true).map_err(named)?;
    match s.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {addr}: address already in use (another process holds it; \
                 set \"reuse_port\": true to share the port on purpose)"
            ),
        )),
        Err(e) => Err(named(e)),
    }
}

/// A running server: its workers' threads and how to stop them.
pub struct Server {
    /// What the workers share.
    pub shared: Arc<Shared>,
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Where TLS is served (the main address, or `tls_port`'s), when it is.
    pub tls_addr: Option<SocketAddr>,
    certs: Option<Arc<tls::Certs>>,
    /// The reactor's clock.
    pub clock: Clock,
    ip_limits: Arc<limits::IpLimits>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Bind every worker's listener, start the worker threads and return at once.
    pub fn start(cfg: Config) -> std::io::Result<Server> {
        let cfg = Arc::new(cfg);
        let n = cfg.worker_count().min(64);
        let mut inboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (i, r) = Inbox::new();
            inboxes.push(i);
            receivers.push(r);
        }
        let clock = Clock { epoch: Instant::now() };
        let policy_cfg = cfg.clone();
        let policy: crate::hub::engine::Policy = Arc::new(move |ch: &str| policy_cfg.history_policy(ch));
        let node_id = crate::proto::centrifugo::IdGen::new(clock.seed(u64::MAX - 1)).next_id();
        let engine: Arc<dyn Engine> = if cfg.engine.kind == "redis" {
            let rc = &cfg.engine.redis;
            let targets = redis::check_targets(rc).map_err(std::io::Error::other)?;
            let settings = crate::hub::redis::engine::Settings {
                prefix: rc.prefix.clone(),
                shards: targets.len(),
                node: node_id.clone(),
                presence_ttl_s: (rc.presence_ttl.0 / 1000).max(1),
            };
            let e = Arc::new(crate::hub::redis::engine::RedisEngine::new(
                inboxes.clone(),
                policy,
                settings,
                clock.seed(u64::MAX),
            ));
            let timeouts = redis::Timeouts {
                connect: std::time::Duration::from_millis(rc.connect_timeout.0.max(1)),
                io: std::time::Duration::from_millis(rc.io_timeout.0.max(1)),
                ..Default::default()
            };
            let names: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
            let setup = crate::hub::redis::engine::RedisEngine::setup_commands();
            let driver = redis::Driver::start_with(targets, timeouts, redis::EngineSink(e.clone()), setup)?;
            // Serve once the connections are up, so the first requests do not meet a
            // Redis that is still being connected to (it answered PING a moment ago).
            if !driver.wait_up(timeouts.connect * 2) {
                log::warn!("engine: not every Redis connection is up yet; requests fail until they are");
            }
            e.set_io(Box::new(driver));
            log::info!("engine: redis, {} shard(s): {} (prefix {})", names.len(), names.join(", "), rc.prefix);
            e
        } else {
            Arc::new(crate::hub::MemoryEngine::with_policy(inboxes.clone(), policy, clock.seed(u64::MAX)))
        };
        let proxies = crate::config::proxy::ProxySet::new(&cfg);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            engine,
            stats: Stats::default(),
            node_id,
            users: Default::default(),
            gauges: (0..n).map(|_| Default::default()).collect(),
            jwks: jwks::start(crate::transport::centrifugo::client::jwks_cells(&cfg))?,
            backend: if proxies.any() {
                let pool = proxy::Pool::start(
                    cfg.proxy_threads,
                    cfg.proxy_queue_size,
                    cfg.proxy_max_response,
                    inboxes.clone(),
                )?;
                Some(Arc::new(pool) as Arc<dyn crate::transport::env::Backend>)
            } else {
                None
            },
            proxies,
            inboxes,
        });
        let ip_limits =
            Arc::new(limits::IpLimits::new(cfg.max_connections_per_ip, cfg.connect_rate_per_ip, cfg.max_tracked_ips));
        let ip: std::net::IpAddr = cfg.bind.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad bind address `{}` (want an IP address such as 0.0.0.0)", cfg.bind),
            )
        })?;
        let mut addr = SocketAddr::new(ip, cfg.port);
        if !cfg.reuse_port && cfg.port != 0 {
            probe(addr)?;
        }
        let tls_cfg = &cfg.http_server.tls;
        let certs = if tls_cfg.enabled {
            Some(Arc::new(
                tls::Certs::load(tls_cfg).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ))
        } else {
            None
        };
        let mut tls_addr = SocketAddr::new(ip, cfg.tls_port);
        if certs.is_some() && cfg.tls_port != 0 && !cfg.reuse_port {
            probe(tls_addr)?;
        }
        let mut listeners = Vec::new();
        for _ in 0..n {
            let l = worker::listen(addr)?;
            // Port 0: the first listener picks the port, the others share it.
            addr = l.local_addr().map_err(|e| std::io::Error::new(e.kind(), format!("listener on {addr}: {e}")))?;
            let second = if certs.is_some() && cfg.tls_port != 0 {
                let t = worker::listen(tls_addr)?;
                tls_addr = t.local_addr()?;
                Some(t)
            } else {
                None
            };
            listeners.push(worker::Listeners {
                main: l,
                main_tls: certs.is_some() && cfg.tls_port == 0,
                tls: second,
                certs: certs.clone(),
            });
        }
        let mut threads = Vec::new();
        for (i, (l, rx)) in listeners.into_iter().zip(receivers).enumerate() {
            if cfg.io == "uring" {
                threads.push(uring::spawn(i, shared.clone(), clock, ip_limits.clone(), l, rx)?);
                continue;
            }
            let w = worker::Worker::new(i, shared.clone(), clock, ip_limits.clone(), l, rx)?;
            threads.push(std::thread::Builder::new().name(format!("herald-w{i}")).spawn(move || w.run())?);
        }
        let tls_addr = certs.as_ref().map(|_| if cfg.tls_port != 0 { tls_addr } else { addr });
        Ok(Server { shared, addr, tls_addr, certs, clock, ip_limits, threads })
    }

    /// Tell every worker to drain (graceful shutdown).
    pub fn shutdown(&self) {
        for i in &self.shared.inboxes {
            i.send(Note::Shutdown);
        }
    }

    /// Load the TLS certificate and key again (SIGHUP): new connections get the new one,
    /// open ones keep theirs. An error keeps the one in use.
    pub fn reload_tls(&self) -> Result<bool, tls::CertError> {
        match &self.certs {
            Some(c) => c.reload().map(|_| true),
            None => Ok(false),
        }
    }

    /// Wait for all workers to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Wait for all workers to finish, at most until `deadline`; returns false if some were
    /// still running then (the caller exits anyway: `shutdown_timeout_ms` is a promise).
    pub fn join_until(self, deadline: Instant) -> bool {
        for t in &self.threads {
            while !t.is_finished() {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        self.join();
        true
    }

    /// Milliseconds since the server started (the workers' clock).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Housekeeping, about once a second (the main thread's loop): expire idle entries of
    /// the per-IP admission table and publish its size as the `herald_ip_table_entries`
    /// gauge.
    pub fn sweep(&self, now_ms: u64) {
        let n = self.ip_limits.sweep(now_ms);
        self.shared.stats.ip_table_entries.store(n, Ordering::Relaxed);
    }

    /// Open connections right now.
    pub fn connections(&self) -> usize {
        self.shared.stats.connections.load(Ordering::Relaxed)
    }
}

/// The loop-time accounting both worker loops (epoll and io_uring) do each turn, and once
/// a second the gauges `/metrics` reads (connections by kind, subscriptions, channels),
/// counted over `sessions`. Returns whether the once-a-second part ran, so the caller can
/// do its own once-a-second housekeeping.
pub(crate) fn account_turn<'a, I>(
    ctx: &crate::transport::Env,
    turn_start: Instant,
    next_gauges_ms: &mut u64,
    sessions: impl FnOnce() -> I,
) -> bool
where
    I: Iterator<Item = &'a crate::transport::Session>,
{
    let g = &ctx.shared.gauges[ctx.id];
    let us = turn_start.elapsed().as_micros() as u64;
    g.busy_us.fetch_add(us, Ordering::Relaxed);
    g.turns.fetch_add(1, Ordering::Relaxed);
    g.max_turn_us.fetch_max(us, Ordering::Relaxed);
    if ctx.now_ms < *next_gauges_ms {
        return false;
    }
    *next_gauges_ms = ctx.now_ms + 1000;
    let mut counts = [0usize; crate::transport::Kind::LABELS.len()];
    let mut subs = 0;
    for s in sessions() {
        counts[s.kind() as usize] += 1;
        subs += s.subs.len();
    }
    for (i, n) in counts.iter().enumerate() {
        g.conns[i].store(*n, Ordering::Relaxed);
    }
    g.subscriptions.store(subs, Ordering::Relaxed);
    g.channels.store(ctx.local.counts().0, Ordering::Relaxed);
    g.max_turn_us.store(0, Ordering::Relaxed);
    true
}

/// The slow-consumer rule of both worker loops, after the out-queue was flushed as far as
/// the socket takes: a connection still holding more than `max` bytes is dropped (counted,
/// logged; it reconnects and resumes from history). Returns whether it was.
pub(crate) fn drop_if_slow(
    ctx: &mut crate::transport::Env,
    key: usize,
    conn: &mut crate::transport::Session,
    max: usize,
) -> bool {
    if conn.dead || conn.out.len() <= max {
        return false;
    }
    ctx.shared.stats.slow_drops.fetch_add(1, Ordering::Relaxed);
    log::info!(
        "conn {}:{} from {}: slow consumer ({} bytes queued > max_out_queue {max}), dropped",
        ctx.id,
        key,
        conn.peer,
        conn.out.len()
    );
    conn.out.clear();
    ctx.kill(conn);
    true
}
