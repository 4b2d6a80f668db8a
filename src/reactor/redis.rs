//! The Redis engine's IO half (issue #12, in progress; not yet used by the engine seam):
//! one thread with its own mio loop holding, per shard, a command connection and a pub/sub
//! connection, driving the sans-IO [`crate::hub::redis::link::Link`]s.
//!
//! Owns: the sockets to Redis, connecting with a timeout and reconnecting with backoff,
//! pipelining (every queued command is written in one go and answered in order),
//! re-subscribing a shard's channels after its pub/sub connection comes back, and failing
//! the commands a lost connection leaves unanswered (their callbacks get an error: nothing
//! waits forever). Callers talk to it through [`Driver`]: requests go over a channel and a
//! `mio::Waker`, so no caller ever blocks on Redis. Callbacks and the [`Sink`] run on the
//! driver thread and must only hand results on (a worker's inbox), never block.

use crate::hub::redis::link::{Event, Link, Publication};
use crate::proto::resp::{Limits, Value};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a command's callback receives.
pub type Answer = Result<Value, DriverError>;
/// A command's callback (runs on the driver thread; must not block).
pub type Callback = Box<dyn FnOnce(Answer) + Send>;

/// Why a command got no answer from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// The shard's connection is down (being re-established); nothing was sent.
    Down(SocketAddr),
    /// The connection was lost after the command was sent: it may or may not have run.
    Lost(SocketAddr),
    /// The driver is stopping.
    Stopped,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::Down(a) => write!(f, "Redis {a} is unreachable"),
            DriverError::Lost(a) => write!(f, "connection to Redis {a} lost with the command in flight"),
            DriverError::Stopped => f.write_str("the Redis driver stopped"),
        }
    }
}

impl std::error::Error for DriverError {}

/// Where the driver reports pub/sub traffic and shard health.
pub trait Sink: Send + 'static {
    /// A publication arrived on `shard`.
    fn publication(&self, shard: usize, p: Publication);
    /// `shard`'s pub/sub connection came up (`true`, after its channels were subscribed
    /// again) or went down (`false`): whoever relies on the feed must look for gaps.
    fn health(&self, shard: usize, up: bool);
}

enum Request {
    Command { shard: usize, args: Vec<Vec<u8>>, done: Callback },
    Subscribe { shard: usize, channel: Vec<u8> },
    Unsubscribe { shard: usize, channel: Vec<u8> },
    Stop,
}

/// The handle callers keep: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Driver {
    tx: Sender<Request>,
    waker: Arc<Waker>,
}

impl Driver {
    /// Start the driver thread for `shards` (one address each). Connections are made in
    /// the background; commands sent while a shard is down fail at once with
    /// [`DriverError::Down`].
    pub fn start(shards: Vec<SocketAddr>, timeouts: Timeouts, sink: impl Sink) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let mut th =
            Thread { poll, rx, sink: Box::new(sink), timeouts, shards: shards.into_iter().map(Shard::new).collect() };
        std::thread::Builder::new().name("herald-redis".into()).spawn(move || th.run())?;
        Ok(Driver { tx, waker })
    }

    fn send(&self, r: Request) {
        if self.tx.send(r).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Run a command on `shard`; `done` gets the reply (or why there is none).
    pub fn command(&self, shard: usize, args: Vec<Vec<u8>>, done: Callback) {
        self.send(Request::Command { shard, args, done });
    }

    /// Subscribe `shard`'s pub/sub connection to `channel` (kept across reconnects).
    pub fn subscribe(&self, shard: usize, channel: &[u8]) {
        self.send(Request::Subscribe { shard, channel: channel.to_vec() });
    }

    /// Stop receiving `channel`.
    pub fn unsubscribe(&self, shard: usize, channel: &[u8]) {
        self.send(Request::Unsubscribe { shard, channel: channel.to_vec() });
    }

    /// Stop the thread (pending callbacks get [`DriverError::Stopped`]).
    pub fn stop(&self) {
        self.send(Request::Stop);
    }
}

/// Connect timeout and reconnect backoff.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a connection attempt may take.
    pub connect: Duration,
    /// First wait before reconnecting; doubles up to `backoff_max`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            backoff: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

const WAKER: Token = Token(usize::MAX);

/// One connection of a shard.
struct Conn {
    sock: Option<TcpStream>,
    link: Link,
    connected: bool,
    since: Instant,
    callbacks: HashMap<u64, Callback>,
    next_tag: u64,
    retry_at: Instant,
    backoff: Duration,
}

impl Conn {
    fn new(pubsub: bool) -> Conn {
        Conn {
            sock: None,
            link: Link::new(pubsub, Limits::default()),
            connected: false,
            since: Instant::now(),
            callbacks: HashMap::new(),
            next_tag: 1,
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
        }
    }
}

struct Shard {
    addr: SocketAddr,
    cmd: Conn,
    sub: Conn,
    channels: HashSet<Vec<u8>>,
}

impl Shard {
    fn new(addr: SocketAddr) -> Shard {
        Shard { addr, cmd: Conn::new(false), sub: Conn::new(true), channels: HashSet::new() }
    }
}

struct Thread {
    poll: Poll,
    rx: Receiver<Request>,
    sink: Box<dyn Sink>,
    timeouts: Timeouts,
    shards: Vec<Shard>,
}

/// Token of a connection: shard * 2 (+1 for pub/sub).
fn token(shard: usize, pubsub: bool) -> Token {
    Token(shard * 2 + usize::from(pubsub))
}

impl Thread {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        for i in 0..self.shards.len() {
            self.connect(i, false);
            self.connect(i, true);
        }
        loop {
            let wait = self.next_wait();
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("redis driver: poll: {e}");
                    break;
                }
            }
            let mut stop = false;
            while let Ok(r) = self.rx.try_recv() {
                match r {
                    Request::Stop => stop = true,
                    r => self.request(r),
                }
            }
            if stop {
                break;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let (shard, pubsub) = (ev.token().0 / 2, ev.token().0 % 2 == 1);
                if shard >= self.shards.len() {
                    continue;
                }
                if ev.is_writable() {
                    self.on_writable(shard, pubsub);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(shard, pubsub);
                }
            }
            self.timers();
            for i in 0..self.shards.len() {
                self.flush(i, false);
                self.flush(i, true);
            }
        }
        for s in &mut self.shards {
            for (_, cb) in s.cmd.callbacks.drain() {
                cb(Err(DriverError::Stopped));
            }
        }
    }

    fn next_wait(&self) -> Duration {
        let now = Instant::now();
        let mut wait = Duration::from_millis(500);
        for s in &self.shards {
            for c in [&s.cmd, &s.sub] {
                if c.sock.is_none() {
                    wait = wait.min(c.retry_at.saturating_duration_since(now));
                } else if !c.connected {
                    wait = wait.min((c.since + self.timeouts.connect).saturating_duration_since(now));
                }
            }
        }
        wait
    }

    fn conn(&mut self, shard: usize, pubsub: bool) -> &mut Conn {
        let s = &mut self.shards[shard];
        if pubsub {
            &mut s.sub
        } else {
            &mut s.cmd
        }
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Command { shard, args, done } => {
                let Some(s) = self.shards.get_mut(shard) else {
                    return done(Err(DriverError::Stopped));
                };
                if !s.cmd.connected {
                    return done(Err(DriverError::Down(s.addr)));
                }
                let tag = s.cmd.next_tag;
                s.cmd.next_tag += 1;
                s.cmd.link.command(tag, &args);
                s.cmd.callbacks.insert(tag, done);
            }
            Request::Subscribe { shard, channel } => {
                if let Some(s) = self.shards.get_mut(shard) {
                    if s.channels.insert(channel.clone()) && s.sub.connected {
                        s.sub.link.command(0, &[&b"SUBSCRIBE"[..], &channel]);
                    }
                }
            }
            Request::Unsubscribe { shard, channel } => {
                if let Some(s) = self.shards.get_mut(shard) {
                    if s.channels.remove(&channel) && s.sub.connected {
                        s.sub.link.command(0, &[&b"UNSUBSCRIBE"[..], &channel]);
                    }
                }
            }
            Request::Stop => {}
        }
    }

    fn connect(&mut self, shard: usize, pubsub: bool) {
        let addr = self.shards[shard].addr;
        let registry = self.poll.registry();
        let c = if pubsub { &mut self.shards[shard].sub } else { &mut self.shards[shard].cmd };
        match TcpStream::connect(addr) {
            Ok(mut sock) => {
                let _ = sock.set_nodelay(true);
                if registry.register(&mut sock, token(shard, pubsub), Interest::READABLE | Interest::WRITABLE).is_ok() {
                    c.sock = Some(sock);
                    c.since = Instant::now();
                    c.connected = false;
                    return;
                }
                self.down(shard, pubsub);
            }
            Err(e) => {
                log::debug!("redis {addr}: connect: {e}");
                self.down(shard, pubsub);
            }
        }
    }

    /// A connection finished connecting (first writable with no socket error).
    fn up(&mut self, shard: usize, pubsub: bool) {
        let s = &mut self.shards[shard];
        let c = if pubsub { &mut s.sub } else { &mut s.cmd };
        c.connected = true;
        c.backoff = Duration::ZERO;
        log::info!("redis {}: {} connection up", s.addr, if pubsub { "pub/sub" } else { "command" });
        if pubsub {
            let chans: Vec<Vec<u8>> = s.channels.iter().cloned().collect();
            for ch in chans {
                s.sub.link.command(0, &[&b"SUBSCRIBE"[..], &ch]);
            }
            self.sink.health(shard, true);
        }
    }

    /// Drop a connection, fail what it had in flight, and schedule a reconnect.
    fn down(&mut self, shard: usize, pubsub: bool) {
        let backoff_first = self.timeouts.backoff;
        let backoff_max = self.timeouts.backoff_max;
        let addr = self.shards[shard].addr;
        let registry = self.poll.registry();
        let c = if pubsub { &mut self.shards[shard].sub } else { &mut self.shards[shard].cmd };
        let was_up = c.connected;
        if let Some(mut s) = c.sock.take() {
            let _ = registry.deregister(&mut s);
        }
        c.connected = false;
        let lost = c.link.abandon();
        let mut failed = Vec::new();
        for tag in lost {
            if let Some(cb) = c.callbacks.remove(&tag) {
                failed.push(cb);
            }
        }
        // Commands queued but never sent have no tag in flight yet: fail them too.
        failed.extend(c.callbacks.drain().map(|(_, cb)| cb));
        c.backoff = if c.backoff.is_zero() { backoff_first } else { (c.backoff * 2).min(backoff_max) };
        c.retry_at = Instant::now() + c.backoff;
        for cb in failed {
            cb(Err(DriverError::Lost(addr)));
        }
        if pubsub && was_up {
            self.sink.health(shard, false);
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        for i in 0..self.shards.len() {
            for pubsub in [false, true] {
                let timeout = self.timeouts.connect;
                let c = self.conn(i, pubsub);
                if c.sock.is_none() && now >= c.retry_at {
                    self.connect(i, pubsub);
                } else if c.sock.is_some() && !c.connected && now >= c.since + timeout {
                    log::debug!("redis {}: connect timed out", self.shards[i].addr);
                    self.down(i, pubsub);
                }
            }
        }
    }

    fn on_writable(&mut self, shard: usize, pubsub: bool) {
        let c = self.conn(shard, pubsub);
        let Some(sock) = c.sock.as_ref() else { return };
        if !c.connected {
            match sock.take_error() {
                Ok(None) if sock.peer_addr().is_ok() => self.up(shard, pubsub),
                _ => return self.down(shard, pubsub),
            }
        }
        self.flush(shard, pubsub);
    }

    fn flush(&mut self, shard: usize, pubsub: bool) {
        let c = self.conn(shard, pubsub);
        if !c.connected {
            return;
        }
        let Some(sock) = c.sock.as_mut() else { return };
        while !c.link.output().is_empty() {
            match sock.write(c.link.output()) {
                Ok(0) => return self.down(shard, pubsub),
                Ok(n) => c.link.written(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.down(shard, pubsub),
            }
        }
    }

    fn on_readable(&mut self, shard: usize, pubsub: bool) {
        let mut buf = [0u8; 64 * 1024];
        let mut events = Vec::new();
        loop {
            let c = self.conn(shard, pubsub);
            let Some(sock) = c.sock.as_mut() else { return };
            match sock.read(&mut buf) {
                Ok(0) => {
                    self.deliver(shard, pubsub, &mut events);
                    return self.down(shard, pubsub);
                }
                Ok(n) => {
                    if c.link.feed(&buf[..n], &mut events).is_err() {
                        self.deliver(shard, pubsub, &mut events);
                        return self.down(shard, pubsub);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.deliver(shard, pubsub, &mut events);
                    return self.down(shard, pubsub);
                }
            }
        }
        self.deliver(shard, pubsub, &mut events);
    }

    fn deliver(&mut self, shard: usize, pubsub: bool, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            match e {
                Event::Reply { tag, value } => {
                    if let Some(cb) = self.conn(shard, pubsub).callbacks.remove(&tag) {
                        cb(Ok(value));
                    }
                }
                Event::Message(p) => self.sink.publication(shard, p),
                Event::Subscription { .. } => {}
            }
        }
    }
}
