//! The reactor: the only IO layer. One single-threaded mio event loop per worker thread,
//! each with its own SO_REUSEPORT listener, a slab of connections, a timer wheel and an
//! inbox for messages from other workers.
//!
//! Owns: sockets, readiness, timers and the clock. Calls into `transport` with bytes and
//! connection state; transports never read or write a socket themselves.

pub mod alloc;
pub mod conn;
pub mod limits;
pub mod metrics;
pub mod outq;
pub mod timer;
pub mod worker;

use crate::config::Config;
use crate::hub::bus::{Inbox, Note};
use crate::hub::Engine;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counters shared by all workers (relaxed atomics: read by /metrics, never on a lock).
#[derive(Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub accepted: AtomicU64,
    pub refused_max_conns: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub refused_rate: AtomicU64,
    pub accept_errors: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub slow_drops: AtomicU64,
    pub http_errors: AtomicU64,
    pub ws_protocol_errors: AtomicU64,
    /// Connected Centrifugo clients.
    pub cf_clients: AtomicUsize,
}

/// What every worker shares: configuration, the engine, the inboxes, the clock's epoch.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub engine: Arc<dyn Engine>,
    pub inboxes: Vec<Arc<Inbox>>,
    pub epoch: Instant,
    pub stats: Stats,
    /// This node's id (Centrifugo `info`).
    pub node_id: String,
    /// Connected Centrifugo users and their connection counts (touched on connect and
    /// disconnect only).
    pub users: std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>,
    /// Per-worker gauges for `/metrics`.
    pub gauges: Vec<metrics::WorkerGauges>,
    /// Per-address admission.
    pub ip_limits: limits::IpLimits,
}

impl Shared {
    /// Milliseconds since the process started (the one clock workers and engine share).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A running server: its workers' threads and how to stop them.
pub struct Server {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
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
        let policy_cfg = cfg.clone();
        let policy: crate::hub::engine::Policy = Arc::new(move |ch: &str| policy_cfg.history_policy(ch));
        let engine: Arc<dyn Engine> = Arc::new(crate::hub::MemoryEngine::with_policy(inboxes.clone(), policy));
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            engine,
            inboxes,
            epoch: Instant::now(),
            stats: Stats::default(),
            node_id: crate::centrifugo::proto::client_id(),
            users: Default::default(),
            gauges: (0..n).map(|_| Default::default()).collect(),
            ip_limits: limits::IpLimits::new(cfg.max_connections_per_ip, cfg.connect_rate_per_ip),
        });
        let ip: std::net::IpAddr = cfg.bind.parse().map_err(|_| std::io::Error::other("bad bind address"))?;
        let mut addr = SocketAddr::new(ip, cfg.port);
        let mut listeners = Vec::new();
        for _ in 0..n {
            let l = worker::listen(addr)?;
            // Port 0: the first listener picks the port, the others share it.
            addr = l.local_addr()?;
            listeners.push(l);
        }
        let mut threads = Vec::new();
        for (i, (l, rx)) in listeners.into_iter().zip(receivers).enumerate() {
            let w = worker::Worker::new(i, shared.clone(), l, rx)?;
            threads.push(std::thread::Builder::new().name(format!("herald-w{i}")).spawn(move || w.run())?);
        }
        Ok(Server { shared, addr, threads })
    }

    /// Tell every worker to drain (graceful shutdown).
    pub fn shutdown(&self) {
        for i in &self.shared.inboxes {
            i.send(Note::Shutdown);
        }
    }

    /// Wait for all workers to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Open connections right now.
    pub fn connections(&self) -> usize {
        self.shared.stats.connections.load(Ordering::Relaxed)
    }
}
