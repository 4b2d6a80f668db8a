//! The soak client: one mio event loop (no async runtime) holding every subscriber and the
//! publisher connections.
//!
//! A subscriber sits on one channel with one transport for the whole run. It connects,
//! receives for a random while, disconnects, stays away for a random while and reconnects
//! with resume (WebSocket `since=`, SSE `Last-Event-ID:`, long-poll `since=`), naming the
//! last id it actually processed. Every id it processes is checked against that last id:
//! `last + 1` is in order, `<= last` is a duplicate, anything higher is a gap — lost, or
//! "missed" when the server announced it (WS `{"missed":true}` frame, SSE `event: missed`,
//! long-poll `"missed":true`). Bytes the kernel held but the client never read before it
//! closed are not processed, so their ids must come again after the resume.
//!
//! Publishers are keep-alive HTTP connections publishing at a steady rate, round-robin over
//! the channels; the answer `{"id":N}` gives each channel's newest id.
//!
//! This file holds the loop, the connects, the churn timers and the closes; what arrives
//! on a subscriber connection is read in `net/subscriber.rs`, the publishers' side is
//! `net/publisher.rs`.
//!
//! Called by `main.rs` phase by phase (`connect_all`, `turn`, `start_churn`, …). Requests,
//! response heads, frames, sockets and the PRNG come from `herald_bench_tools`.

mod publisher;
mod subscriber;

use herald_bench_tools::http;
use herald_bench_tools::rng::Rng;
use herald_bench_tools::sock::{connect_from, loopback_source};
use herald_bench_tools::tls::Stream;
use herald_bench_tools::ws;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Largest server frame accepted.
const MAX_FRAME: usize = 16 << 20;

/// How a subscriber receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tr {
    Ws,
    Sse,
    Lp,
}

impl Tr {
    pub fn name(self) -> &'static str {
        match self {
            Tr::Ws => "ws",
            Tr::Sse => "sse",
            Tr::Lp => "longpoll",
        }
    }
}

/// What the loop needs to know.
pub struct Cfg {
    pub addr: SocketAddr,
    /// Under `--tls`: subscribers connect here (herald's `tls_port`) with this client
    /// configuration and server name; publishers stay on plain `addr`.
    pub tls: Option<(SocketAddr, std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    pub prefix: String,
    pub subscribers: usize,
    pub channels: usize,
    /// Percent of subscribers on SSE and on long-poll; the rest use WebSocket.
    pub sse_pct: u32,
    pub lp_pct: u32,
    pub session: (Duration, Duration),
    pub offline: (Duration, Duration),
    pub rate: f64,
    pub pub_conns: usize,
    pub size: usize,
    pub sources: usize,
    pub connect_concurrency: usize,
    pub seed: u64,
}

/// One subscriber's record, kept across its connections.
pub struct Sub {
    pub ch: u32,
    pub tr: Tr,
    /// The highest id processed (ids are checked to arrive as last + 1).
    pub last: u64,
    pub got: u64,
    pub dups: u64,
    pub lost: u64,
    pub missed_events: u64,
    pub missed_ids: u64,
    missed_pending: bool,
    /// Connections that reached the open state (handshake / first response done).
    pub sessions: u64,
    conn: Option<usize>,
    /// Bumped whenever the subscriber's timers become stale.
    gen: u32,
    /// Waiting in the connect queue.
    queued: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Waiting for the response head.
    Head,
    /// Long-poll: reading a body of this many bytes after the head of that length.
    LpBody {
        head: usize,
        len: usize,
    },
    Ws,
    Sse,
}

struct Conn {
    sub: usize,
    /// The socket, with its TLS state under `--tls`.
    sock: Stream<TcpStream>,
    phase: Phase,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// Fragmented WebSocket message being assembled.
    frag: Vec<u8>,
    started: Instant,
    /// Session end (None: not yet open, or the soak is draining).
    open: bool,
}

struct Pub {
    sock: Option<TcpStream>,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    inflight: VecDeque<u32>,
}

/// Counters over the whole run (subscriber counters live in `Sub`).
#[derive(Default, Debug, Clone)]
pub struct Counts {
    pub connects: u64,
    pub connect_errors: u64,
    pub handshake_timeouts: u64,
    pub server_closes: u64,
    pub bad_frames: u64,
    pub id_mismatches: u64,
    pub published: u64,
    pub pub_errors: u64,
    pub pub_skipped: u64,
    pub pub_reconnects: u64,
    pub first_error: Option<String>,
    pub reports: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    SessionEnd,
    Reconnect,
}

const PUB_BASE: usize = 1 << 40;
const MAX_INFLIGHT: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most loss / duplicate reports printed (the rest are counted).
const MAX_REPORTS: u64 = 20;

pub struct Soak {
    pub cfg: Cfg,
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    pub subs: Vec<Sub>,
    pubs: Vec<Pub>,
    timers: BinaryHeap<Reverse<(Instant, TimerKind, usize, u32)>>,
    connect_queue: VecDeque<usize>,
    handshaking: usize,
    pub churn: bool,
    publishing: Option<Instant>,
    pub_due_base: u64,
    /// Newest id per channel from publish answers.
    pub chan_last: Vec<u64>,
    pub counts: Counts,
    rng: Rng,
    scratch: Vec<u8>,
    next_source: usize,
    last_sweep: Instant,
}

pub fn chan_name(prefix: &str, ch: u32) -> String {
    format!("{prefix}{ch}")
}

/// Why a connection ended.
#[derive(PartialEq, Eq, Debug)]
enum End {
    /// The client ended its session (churn or end of run).
    Client,
    /// EOF or error from the server during a session.
    Server(String),
    /// Refused, timed out or failed before opening.
    Failed(String),
}

impl Soak {
    pub fn new(cfg: Cfg) -> io::Result<Soak> {
        let mut rng = Rng::new(cfg.seed);
        let mut subs = Vec::with_capacity(cfg.subscribers);
        for i in 0..cfg.subscribers {
            let r = rng.below(100) as u32;
            let tr = if r < cfg.sse_pct {
                Tr::Sse
            } else if r < cfg.sse_pct + cfg.lp_pct {
                Tr::Lp
            } else {
                Tr::Ws
            };
            subs.push(Sub {
                ch: (i % cfg.channels) as u32,
                tr,
                last: 0,
                got: 0,
                dups: 0,
                lost: 0,
                missed_events: 0,
                missed_ids: 0,
                missed_pending: false,
                sessions: 0,
                conn: None,
                gen: 0,
                queued: false,
            });
        }
        let pubs = (0..cfg.pub_conns).map(|_| Pub {
            sock: None,
            out: Vec::new(),
            inbuf: Vec::new(),
            inflight: VecDeque::new(),
        });
        Ok(Soak {
            chan_last: vec![0; cfg.channels],
            pubs: pubs.collect(),
            cfg,
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Slab::new(),
            subs,
            timers: BinaryHeap::new(),
            connect_queue: VecDeque::new(),
            handshaking: 0,
            churn: false,
            publishing: None,
            pub_due_base: 0,
            counts: Counts::default(),
            rng,
            scratch: vec![0; 256 * 1024],
            next_source: 0,
            last_sweep: Instant::now(),
        })
    }

    fn error(&mut self, what: String) {
        if self.counts.first_error.is_none() {
            eprintln!("herald-soak: first error: {what}");
            self.counts.first_error = Some(what);
        }
    }

    /// Queue every subscriber for its first connection.
    pub fn connect_all(&mut self) {
        for i in 0..self.subs.len() {
            self.want_connect(i);
        }
    }

    fn want_connect(&mut self, i: usize) {
        let s = &mut self.subs[i];
        if s.conn.is_none() && !s.queued {
            s.queued = true;
            s.gen = s.gen.wrapping_add(1);
            self.connect_queue.push_back(i);
        }
    }

    /// Subscribers with an open connection.
    pub fn open_count(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.open).count()
    }

    /// Every subscriber has processed its channel's newest id.
    pub fn caught_up(&self, last: &[u64]) -> usize {
        self.subs.iter().filter(|s| s.last >= last[s.ch as usize]).count()
    }

    /// Start publishing at the configured rate.
    pub fn start_publishing(&mut self) {
        self.publishing = Some(Instant::now());
        self.pub_due_base = self.counts.published + self.counts.pub_skipped;
    }

    pub fn stop_publishing(&mut self) {
        self.publishing = None;
    }

    /// Publish requests not yet answered.
    pub fn pub_inflight(&self) -> usize {
        self.pubs.iter().map(|p| p.inflight.len()).sum()
    }

    /// Publish one message on `ch` now (outside the rate; used for warm-up).
    pub fn publish_once(&mut self, ch: u32) {
        self.publish(ch);
    }

    fn start_connect(&mut self, i: usize) {
        self.subs[i].queued = false;
        let src = if self.cfg.sources == 0 {
            None
        } else {
            self.next_source = (self.next_source + 1) % self.cfg.sources;
            Some(loopback_source(self.next_source))
        };
        let dst = self.cfg.tls.as_ref().map_or(self.cfg.addr, |t| t.0);
        let sock = match connect_from(src, dst) {
            Ok(s) => match &self.cfg.tls {
                None => Stream::plain(s),
                Some((_, cfg, name)) => match Stream::tls(s, cfg, name.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.counts.connect_errors += 1;
                        self.error(e);
                        self.schedule_reconnect(i, Duration::from_millis(200));
                        return;
                    }
                },
            },
            Err(e) => {
                self.counts.connect_errors += 1;
                self.error(format!("connect: {e}"));
                self.schedule_reconnect(i, Duration::from_millis(200));
                return;
            }
        };
        let s = &self.subs[i];
        let ch = chan_name(&self.cfg.prefix, s.ch);
        let host = self.cfg.addr.to_string();
        // Every connection resumes from the last id processed; the first one asks from 0,
        // so a subscriber must see its channel's ids exactly 1..=last.
        let req = match s.tr {
            Tr::Ws => ws::upgrade_request(&host, &format!("/ws/?cid={ch}&since={}", s.last)),
            Tr::Sse => http::get_request(
                &host,
                &format!("/sse/?cid={ch}"),
                "text/event-stream",
                &[("Last-Event-ID", &s.last.to_string())],
            ),
            Tr::Lp => lp_request(&ch, self.cfg.addr, s.last),
        };
        let mut conn = Conn {
            sub: i,
            sock,
            phase: Phase::Head,
            out: req,
            inbuf: Vec::new(),
            frag: Vec::new(),
            started: Instant::now(),
            open: false,
        };
        let key = self.conns.vacant_key();
        if let Err(e) =
            self.poll.registry().register(&mut conn.sock.sock, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            self.counts.connect_errors += 1;
            self.error(format!("register: {e}"));
            self.schedule_reconnect(i, Duration::from_millis(200));
            return;
        }
        self.conns.insert(conn);
        self.subs[i].conn = Some(key);
        self.handshaking += 1;
        self.counts.connects += 1;
    }

    fn schedule_reconnect(&mut self, i: usize, after: Duration) {
        let s = &mut self.subs[i];
        s.gen = s.gen.wrapping_add(1);
        self.timers.push(Reverse((Instant::now() + after, TimerKind::Reconnect, i, s.gen)));
    }

    /// A connection ended: count why and schedule the next one.
    fn close(&mut self, key: usize, why: End) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.sock.sock);
        if !c.open {
            self.handshaking -= 1;
        }
        let i = c.sub;
        self.subs[i].conn = None;
        self.subs[i].missed_pending = false;
        let delay = match why {
            End::Client => {
                if self.churn {
                    self.rng.between(self.cfg.offline.0, self.cfg.offline.1)
                } else {
                    return;
                }
            }
            End::Server(e) => {
                self.counts.server_closes += 1;
                self.error(format!("subscriber {i} ({}): closed by server: {e}", self.subs[i].tr.name()));
                Duration::from_millis(100)
            }
            End::Failed(e) => {
                self.counts.connect_errors += 1;
                self.error(format!("subscriber {i} ({}): {e}", self.subs[i].tr.name()));
                Duration::from_millis(300)
            }
        };
        self.schedule_reconnect(i, delay);
    }

    /// Close every subscriber connection (end of run) and the publishers.
    pub fn close_all(&mut self) {
        self.churn = false;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k, End::Client);
        }
        self.connect_queue.clear();
        self.timers.clear();
        for p in &mut self.pubs {
            if let Some(mut s) = p.sock.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            p.inflight.clear();
            p.out.clear();
            p.inbuf.clear();
        }
    }

    /// End the churn: open connections stay open; subscribers away reconnect now.
    pub fn stop_churn(&mut self) {
        self.churn = false;
        for i in 0..self.subs.len() {
            if self.subs[i].conn.is_none() {
                self.want_connect(i);
            } else {
                let s = &mut self.subs[i];
                s.gen = s.gen.wrapping_add(1);
            }
        }
    }

    /// Arm session-end timers for every open subscriber and turn churn on.
    pub fn start_churn(&mut self) {
        self.churn = true;
        for i in 0..self.subs.len() {
            match self.subs[i].conn {
                Some(k) if self.conns[k].open => self.arm_session(i),
                Some(_) => {}
                None => self.want_connect(i),
            }
        }
    }

    fn arm_session(&mut self, i: usize) {
        let d = self.rng.between(self.cfg.session.0, self.cfg.session.1);
        let s = &mut self.subs[i];
        s.gen = s.gen.wrapping_add(1);
        self.timers.push(Reverse((Instant::now() + d, TimerKind::SessionEnd, i, s.gen)));
    }

    /// One loop turn: publish what is due, start queued connects, fire timers, handle
    /// socket events (waiting at most `max_wait`).
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = Instant::now();
        if let Some(t0) = self.publishing {
            let due = self.pub_due_base + (now.duration_since(t0).as_secs_f64() * self.cfg.rate) as u64;
            let mut n = self.counts.published + self.counts.pub_skipped;
            while n < due {
                let ch = (n % self.cfg.channels as u64) as u32;
                self.publish(ch);
                n += 1;
            }
        }
        while let Some(Reverse((at, kind, i, gen))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.subs[i].gen != gen {
                continue;
            }
            match kind {
                TimerKind::SessionEnd => {
                    if self.churn {
                        if let Some(k) = self.subs[i].conn {
                            self.close(k, End::Client);
                        }
                    }
                }
                TimerKind::Reconnect => self.want_connect(i),
            }
        }
        while self.handshaking < self.cfg.connect_concurrency {
            let Some(i) = self.connect_queue.pop_front() else {
                break;
            };
            if self.subs[i].conn.is_none() {
                self.start_connect(i);
            } else {
                self.subs[i].queued = false;
            }
        }
        if now.duration_since(self.last_sweep) > Duration::from_secs(1) {
            self.last_sweep = now;
            let stale: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.open && now.duration_since(c.started) > HANDSHAKE_TIMEOUT)
                .map(|(k, _)| k)
                .collect();
            for k in stale {
                self.counts.handshake_timeouts += 1;
                self.close(k, End::Failed("handshake timeout".into()));
            }
        }
        let mut wait = max_wait;
        if let Some(Reverse((at, ..))) = self.timers.peek() {
            wait = wait.min(at.saturating_duration_since(now));
        }
        if self.publishing.is_some() {
            wait = wait.min(Duration::from_millis(2));
        }
        if !self.connect_queue.is_empty() && self.handshaking < self.cfg.connect_concurrency {
            wait = Duration::ZERO;
        }
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let evs: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| (e.token().0, e.is_readable() || e.is_read_closed() || e.is_error(), e.is_writable()))
            .collect();
        for (t, r, w) in evs {
            if t >= PUB_BASE {
                self.on_pub_event(t - PUB_BASE, r, w);
            } else if self.conns.contains(t) {
                self.on_sub_event(t, r, w);
            }
        }
        Ok(())
    }
}

/// The long-poll request: from `since`, on the keep-alive connection.
fn lp_request(ch: &str, host: SocketAddr, since: u64) -> Vec<u8> {
    http::get_request(&host.to_string(), &format!("/listen/?cid={ch}&since={since}"), "application/json", &[])
}
