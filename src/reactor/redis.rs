//! The Redis engine's IO half: one thread with its own mio loop holding, per shard, a
//! command connection and a pub/sub connection, driving the sans-IO
//! [`crate::hub::redis::link::Link`]s for [`crate::hub::redis::engine::RedisEngine`].
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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a command's callback receives.
pub type Answer = Result<Value, DriverError>;
/// A command's callback (runs on the driver thread; must not block).
pub type Callback = Box<dyn FnOnce(Answer) + Send>;

/// A subscription's callback: `Ok` once Redis confirmed it (publications from then on
/// arrive), else why not.
pub type SubDone = Box<dyn FnOnce(Result<(), DriverError>) + Send>;

/// One shard's address and credentials.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// ACL user (`AUTH user password`), if any.
    pub user: String,
    /// Password (`AUTH`), if any.
    pub password: String,
    /// Database number (`SELECT`), 0 by default.
    pub db: u32,
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target { addr, user: String::new(), password: String::new(), db: 0 }
    }
}

/// Why a command got no answer from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// The shard's connection is down (being re-established); nothing was sent.
    Down(SocketAddr),
    /// The connection was lost after the command was sent: it may or may not have run.
    Lost(SocketAddr),
    /// The driver is stopping.
    Stopped,
    /// No answer within the IO timeout: the connection was dropped.
    Timeout(SocketAddr),
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::Down(a) => write!(f, "Redis {a} is unreachable"),
            DriverError::Lost(a) => write!(f, "connection to Redis {a} lost with the command in flight"),
            DriverError::Stopped => f.write_str("the Redis driver stopped"),
            DriverError::Timeout(a) => write!(f, "Redis {a} did not answer in time"),
        }
    }
}

impl std::error::Error for DriverError {}

/// Where the driver reports pub/sub traffic and shard health.
pub trait Sink: Send + 'static {
    /// A publication arrived on `shard`.
    fn publication(&self, shard: usize, p: Publication);
    /// `shard`'s pub/sub connection came up (`true`, once Redis confirmed every channel it
    /// subscribed again) or went down (`false`): whoever relies on the feed must look for
    /// gaps.
    fn health(&self, shard: usize, up: bool);
}

enum Request {
    Command { shard: usize, args: Vec<Vec<u8>>, done: Callback },
    Subscribe { shard: usize, channel: Vec<u8>, done: Option<SubDone> },
    Unsubscribe { shard: usize, channel: Vec<u8> },
    Stop,
}

/// The handle callers keep: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Driver {
    tx: Sender<Request>,
    waker: Arc<Waker>,
    up: Arc<std::sync::atomic::AtomicUsize>,
    conns: usize,
}

impl Driver {
    /// Start the driver thread for `shards` (one address each). Connections are made in
    /// the background; commands sent while a shard is down fail at once with
    /// [`DriverError::Down`].
    pub fn start<T: Into<Target>>(shards: Vec<T>, timeouts: Timeouts, sink: impl Sink) -> io::Result<Driver> {
        Driver::start_with(shards, timeouts, sink, Vec::new())
    }

    /// [`Driver::start`] with `setup` commands pipelined first on every command connection
    /// each time it comes up (after AUTH/SELECT): the engine loads its scripts so that
    /// `EVALSHA` finds them and commands keep their order.
    pub fn start_with<T: Into<Target>>(
        shards: Vec<T>,
        timeouts: Timeouts,
        sink: impl Sink,
        setup: Vec<Vec<Vec<u8>>>,
    ) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let up = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shards: Vec<Shard> = shards.into_iter().map(|t| Shard::new(t.into())).collect();
        let conns = shards.len() * 2;
        let mut th = Thread { poll, rx, sink: Box::new(sink), timeouts, shards, up: up.clone(), setup };
        std::thread::Builder::new().name("herald-redis".into()).spawn(move || th.run())?;
        Ok(Driver { tx, waker, up, conns })
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
        self.send(Request::Subscribe { shard, channel: channel.to_vec(), done: None });
    }

    /// Subscribe and call `done` once Redis confirmed it (or at once with an error when the
    /// shard's pub/sub connection is down: nothing is kept then).
    pub fn subscribe_then(&self, shard: usize, channel: &[u8], done: SubDone) {
        self.send(Request::Subscribe { shard, channel: channel.to_vec(), done: Some(done) });
    }

    /// Stop receiving `channel`.
    pub fn unsubscribe(&self, shard: usize, channel: &[u8]) {
        self.send(Request::Unsubscribe { shard, channel: channel.to_vec() });
    }

    /// Wait (start-up only: this blocks) until every connection is up, at most `timeout`;
    /// whether they all are.
    pub fn wait_up(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        while self.up.load(std::sync::atomic::Ordering::Acquire) < self.conns {
            if t.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
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
    /// How long a command may wait for its answer before the connection is dropped (its
    /// commands fail with [`DriverError::Timeout`]).
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            backoff: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            io: Duration::from_secs(4),
        }
    }
}

const WAKER: Token = Token(usize::MAX);

/// The callback of a set-up command (AUTH, SELECT): an error is logged (the commands after
/// it will fail with Redis's own error, e.g. NOAUTH).
fn setup_check(addr: SocketAddr, what: &'static str) -> Callback {
    Box::new(move |a: Answer| match a {
        Ok(Value::Error(e)) => log::error!("redis {addr}: {what} refused: {}", String::from_utf8_lossy(&e)),
        Ok(_) => {}
        Err(e) => log::debug!("redis {addr}: {what}: {e}"),
    })
}

/// One connection of a shard.
struct Conn {
    sock: Option<TcpStream>,
    link: Link,
    connected: bool,
    since: Instant,
    /// Waiting commands by tag (tags grow, so the first is the oldest), with when sent.
    callbacks: BTreeMap<u64, (Callback, Instant)>,
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
            callbacks: BTreeMap::new(),
            next_tag: 1,
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
        }
    }
}

struct Shard {
    addr: SocketAddr,
    target: Target,
    cmd: Conn,
    sub: Conn,
    channels: HashSet<Vec<u8>>,
    /// Channels Redis confirmed on the current pub/sub connection.
    confirmed: HashSet<Vec<u8>>,
    /// Callbacks waiting for a channel's confirmation, with when they started waiting
    /// (they fail after the IO timeout, connected or not).
    pending: HashMap<Vec<u8>, Vec<(SubDone, Instant)>>,
    /// Confirmations still due after a reconnect before the shard is reported up.
    resubscribing: usize,
    /// The sink was last told the shard is up (both connections up, channels confirmed).
    reported_up: bool,
}

impl Shard {
    fn new(target: Target) -> Shard {
        Shard {
            addr: target.addr,
            target,
            cmd: Conn::new(false),
            sub: Conn::new(true),
            channels: HashSet::new(),
            confirmed: HashSet::new(),
            pending: HashMap::new(),
            resubscribing: 0,
            reported_up: false,
        }
    }
}

struct Thread {
    /// Commands run first on every command connection (script loads).
    setup: Vec<Vec<Vec<u8>>>,
    /// Connections up now (read by [`Driver::wait_up`]).
    up: Arc<std::sync::atomic::AtomicUsize>,
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
            for c in [&mut s.cmd, &mut s.sub] {
                for (_, (cb, _)) in std::mem::take(&mut c.callbacks) {
                    cb(Err(DriverError::Stopped));
                }
            }
            for (_, list) in s.pending.drain() {
                for (done, _) in list {
                    done(Err(DriverError::Stopped));
                }
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
                } else if let Some((_, (_, sent))) = c.callbacks.first_key_value() {
                    wait = wait.min((*sent + self.timeouts.io).saturating_duration_since(now));
                }
            }
            for (_, t) in s.pending.values().flatten() {
                wait = wait.min((*t + self.timeouts.io).saturating_duration_since(now));
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
                s.cmd.callbacks.insert(tag, (done, Instant::now()));
            }
            Request::Subscribe { shard, channel, done } => {
                let Some(s) = self.shards.get_mut(shard) else {
                    if let Some(done) = done {
                        done(Err(DriverError::Stopped));
                    }
                    return;
                };
                // While the pub/sub connection is (re)connecting the channel waits for it,
                // at most the IO timeout.
                if s.channels.insert(channel.clone()) && s.sub.connected {
                    s.sub.link.command(0, &[&b"SUBSCRIBE"[..], &channel]);
                }
                if let Some(done) = done {
                    if s.confirmed.contains(&channel) {
                        done(Ok(()));
                    } else {
                        s.pending.entry(channel).or_default().push((done, Instant::now()));
                    }
                }
            }
            Request::Unsubscribe { shard, channel } => {
                if let Some(s) = self.shards.get_mut(shard) {
                    s.confirmed.remove(&channel);
                    for (done, _) in s.pending.remove(&channel).unwrap_or_default() {
                        done(Err(DriverError::Stopped));
                    }
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
        let addr = s.addr;
        let c = if pubsub { &mut s.sub } else { &mut s.cmd };
        c.connected = true;
        c.backoff = Duration::ZERO;
        self.up.fetch_add(1, std::sync::atomic::Ordering::Release);
        log::info!("redis {}: {} connection up", s.addr, if pubsub { "pub/sub" } else { "command" });
        // Credentials and database first: pipelined ahead of everything else.
        let t = &s.target;
        if !t.password.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if !t.user.is_empty() {
                args.push(t.user.as_bytes());
            }
            args.push(t.password.as_bytes());
            let tag = c.next_tag;
            c.next_tag += 1;
            c.link.command(tag, &args);
            c.callbacks.insert(tag, (setup_check(addr, "AUTH"), Instant::now()));
        }
        if !pubsub && t.db != 0 {
            let db = t.db.to_string();
            let tag = c.next_tag;
            c.next_tag += 1;
            c.link.command(tag, &[&b"SELECT"[..], db.as_bytes()]);
            c.callbacks.insert(tag, (setup_check(addr, "SELECT"), Instant::now()));
        }
        if !pubsub {
            for args in &self.setup {
                let tag = c.next_tag;
                c.next_tag += 1;
                c.link.command(tag, args);
                c.callbacks.insert(tag, (setup_check(addr, "script load"), Instant::now()));
            }
        }
        if pubsub {
            let chans: Vec<Vec<u8>> = s.channels.iter().cloned().collect();
            s.resubscribing = chans.len();
            for ch in chans {
                s.sub.link.command(0, &[&b"SUBSCRIBE"[..], &ch]);
            }
        }
        self.report(shard);
    }

    /// Tell the sink whether the shard is usable: both connections up and every channel
    /// confirmed again (a repair read needs the command connection).
    fn report(&mut self, shard: usize) {
        let s = &mut self.shards[shard];
        let up = s.cmd.connected && s.sub.connected && s.resubscribing == 0;
        if up != s.reported_up {
            s.reported_up = up;
            self.sink.health(shard, up);
        }
    }

    /// Drop a connection, fail what it had in flight, and schedule a reconnect.
    fn down(&mut self, shard: usize, pubsub: bool) {
        self.drop_conn(shard, pubsub, false);
    }

    fn drop_conn(&mut self, shard: usize, pubsub: bool, timed_out: bool) {
        let backoff_first = self.timeouts.backoff;
        let backoff_max = self.timeouts.backoff_max;
        let addr = self.shards[shard].addr;
        let registry = self.poll.registry();
        let c = if pubsub { &mut self.shards[shard].sub } else { &mut self.shards[shard].cmd };
        let was_up = c.connected;
        if was_up {
            self.up.fetch_sub(1, std::sync::atomic::Ordering::Release);
        }
        if let Some(mut s) = c.sock.take() {
            let _ = registry.deregister(&mut s);
        }
        c.connected = false;
        let lost = c.link.abandon();
        let mut failed = Vec::new();
        for tag in lost {
            if let Some((cb, _)) = c.callbacks.remove(&tag) {
                failed.push(cb);
            }
        }
        // Commands queued but never sent have no tag in flight yet: fail them too.
        failed.extend(std::mem::take(&mut c.callbacks).into_values().map(|(cb, _)| cb));
        c.backoff = if c.backoff.is_zero() { backoff_first } else { (c.backoff * 2).min(backoff_max) };
        c.retry_at = Instant::now() + c.backoff;
        let err = if timed_out { DriverError::Timeout(addr) } else { DriverError::Lost(addr) };
        for cb in failed {
            cb(Err(err.clone()));
        }
        if pubsub {
            let s = &mut self.shards[shard];
            s.confirmed.clear();
            s.resubscribing = 0;
            // Pending subscriptions wait for the reconnect (at most the IO timeout).
        }
        if was_up {
            self.report(shard);
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let io_timeout = self.timeouts.io;
        for s in &mut self.shards {
            let addr = s.addr;
            let mut late = Vec::new();
            s.pending.retain(|_, list| {
                let (old, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(list).into_iter().partition(|(_, t)| now >= *t + io_timeout);
                late.extend(old);
                *list = keep;
                !list.is_empty()
            });
            for (done, _) in late {
                done(Err(DriverError::Timeout(addr)));
            }
        }
        for i in 0..self.shards.len() {
            for pubsub in [false, true] {
                let timeout = self.timeouts.connect;
                let io_timeout = self.timeouts.io;
                let c = self.conn(i, pubsub);
                if c.sock.is_none() && now >= c.retry_at {
                    self.connect(i, pubsub);
                } else if c.sock.is_some() && !c.connected && now >= c.since + timeout {
                    log::debug!("redis {}: connect timed out", self.shards[i].addr);
                    self.down(i, pubsub);
                } else if c.connected
                    && c.callbacks.first_key_value().is_some_and(|(_, (_, sent))| now >= *sent + io_timeout)
                {
                    log::warn!("redis {}: no answer within {io_timeout:?}: reconnecting", self.shards[i].addr);
                    self.drop_conn(i, pubsub, true);
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
                    if let Some((cb, _)) = self.conn(shard, pubsub).callbacks.remove(&tag) {
                        cb(Ok(value));
                    }
                }
                Event::Message(p) => self.sink.publication(shard, p),
                Event::Subscription { kind, channel, .. } => {
                    if !kind.eq_ignore_ascii_case(b"subscribe") {
                        continue;
                    }
                    let s = &mut self.shards[shard];
                    let ch = channel.to_vec();
                    if !s.channels.contains(&ch) {
                        continue; // unsubscribed meanwhile; its UNSUBSCRIBE follows
                    }
                    s.confirmed.insert(ch.clone());
                    for (done, _) in s.pending.remove(&ch).unwrap_or_default() {
                        done(Ok(()));
                    }
                    if s.resubscribing > 0 {
                        s.resubscribing -= 1;
                        if s.resubscribing == 0 {
                            self.report(shard);
                        }
                    }
                }
            }
        }
    }
}

/// The Redis engine's IO is this driver.
impl crate::hub::redis::engine::Io for Driver {
    fn command(&self, shard: usize, args: Vec<Vec<u8>>, done: crate::hub::redis::engine::Answered) {
        Driver::command(self, shard, args, Box::new(move |a| done(a.map_err(|e| e.to_string()))));
    }

    fn subscribe(&self, shard: usize, channel: &[u8], done: Option<crate::hub::redis::engine::Subscribed>) {
        match done {
            Some(done) => self.subscribe_then(shard, channel, Box::new(move |r| done(r.map_err(|e| e.to_string())))),
            None => Driver::subscribe(self, shard, channel),
        }
    }

    fn unsubscribe(&self, shard: usize, channel: &[u8]) {
        Driver::unsubscribe(self, shard, channel);
    }
}

/// Publications and shard health go to the Redis engine.
pub struct EngineSink(pub Arc<crate::hub::redis::engine::RedisEngine>);

impl Sink for EngineSink {
    fn publication(&self, shard: usize, p: Publication) {
        self.0.on_publication(shard, p);
    }

    fn health(&self, shard: usize, up: bool) {
        if up {
            log::info!("redis shard {shard}: up; reading back what its channels may have missed");
        } else {
            log::warn!("redis shard {shard}: a connection is down; publishes to its channels fail until it is back");
        }
        self.0.on_health(shard, up);
    }
}

/// Resolve and check the configured Redis addresses at start-up: each must accept a
/// connection within the connect timeout and answer PING (after AUTH and SELECT) within
/// the IO timeout. The error names the address and what went wrong.
pub fn check_targets(cfg: &crate::config::engine::RedisConfig) -> Result<Vec<Target>, String> {
    use std::net::ToSocketAddrs;
    let connect = Duration::from_millis(cfg.connect_timeout.0.max(1));
    let io_t = Duration::from_millis(cfg.io_timeout.0.max(1));
    let mut out = Vec::new();
    for a in cfg.addresses()? {
        let name = &a.text;
        let addr = a
            .host_port
            .to_socket_addrs()
            .map_err(|e| format!("Redis address `{name}`: cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| format!("Redis address `{name}`: resolves to nothing"))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, connect)
            .map_err(|e| format!("Redis `{name}` ({addr}) is unreachable: {e}"))?;
        let _ = s.set_read_timeout(Some(io_t));
        let _ = s.set_write_timeout(Some(io_t));
        let mut req = Vec::new();
        let mut n = 1;
        if !a.password.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if !a.user.is_empty() {
                args.push(a.user.as_bytes());
            }
            args.push(a.password.as_bytes());
            crate::proto::resp::encode(&mut req, &args);
            n += 1;
        }
        if a.db != 0 {
            crate::proto::resp::encode(&mut req, &[&b"SELECT"[..], a.db.to_string().as_bytes()]);
            n += 1;
        }
        crate::proto::resp::encode(&mut req, &[&b"PING"[..]]);
        s.write_all(&req).map_err(|e| format!("Redis `{name}`: {e}"))?;
        let mut link = Link::new(false, Limits::default());
        for tag in 0..n {
            link.command(tag, &["X"]);
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < n as usize {
            let k = s.read(&mut buf).map_err(|e| format!("Redis `{name}`: no answer: {e}"))?;
            if k == 0 {
                return Err(format!("Redis `{name}` closed the connection"));
            }
            link.feed(&buf[..k], &mut got).map_err(|e| format!("Redis `{name}`: bad answer: {e}"))?;
        }
        for e in got {
            if let Event::Reply { value: Value::Error(m), .. } = e {
                return Err(format!("Redis `{name}` refused: {}", String::from_utf8_lossy(&m)));
            }
        }
        out.push(Target { addr, user: a.user, password: a.password, db: a.db });
    }
    Ok(out)
}
