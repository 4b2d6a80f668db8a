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

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::sock::connect_from;
use crate::wire::{client_frame, decode_frame};

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

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(self.next() % (span + 1))
    }
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
    sock: TcpStream,
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

/// The number after `key` at the start of `s` (`{"id":12,...` with key `{"id":`).
fn leading_id(s: &[u8], key: &[u8]) -> Option<u64> {
    let rest = s.strip_prefix(key)?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    status: u16,
    len: usize,
    content_length: Option<usize>,
    accept: Option<String>,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut hdrs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hdrs);
    match r.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => Err("response head over 64 KiB".into()),
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let mut h = Head { status: r.code.unwrap_or(0), len: n, content_length: None, accept: None };
            for x in r.headers.iter() {
                let v = String::from_utf8_lossy(x.value).trim().to_string();
                if x.name.eq_ignore_ascii_case("content-length") {
                    h.content_length = v.parse().ok();
                } else if x.name.eq_ignore_ascii_case("sec-websocket-accept") {
                    h.accept = Some(v);
                }
            }
            Ok(Some(h))
        }
        Err(e) => Err(format!("bad response head: {e}")),
    }
}

#[derive(serde::Deserialize)]
struct LpEnv {
    id: u64,
}

#[derive(serde::Deserialize)]
struct LpBody {
    messages: Vec<LpEnv>,
    last_id: u64,
    #[serde(default)]
    missed: bool,
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
            let r = (rng.next() % 100) as u32;
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
            let n = self.next_source + 1;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, (n % 250) as u8 + 1)))
        };
        let sock = match connect_from(src, self.cfg.addr) {
            Ok(s) => s,
            Err(e) => {
                self.counts.connect_errors += 1;
                self.error(format!("connect: {e}"));
                self.schedule_reconnect(i, Duration::from_millis(200));
                return;
            }
        };
        let s = &self.subs[i];
        let ch = chan_name(&self.cfg.prefix, s.ch);
        let host = self.cfg.addr;
        // Every connection resumes from the last id processed; the first one asks from 0,
        // so a subscriber must see its channel's ids exactly 1..=last.
        let req = match s.tr {
            Tr::Ws => format!(
                "GET /ws/?cid={ch}&since={} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                s.last
            ),
            Tr::Sse => format!(
                "GET /sse/?cid={ch} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nLast-Event-ID: {}\r\n\r\n",
                s.last
            ),
            Tr::Lp => lp_request(&ch, host, s.last),
        };
        let mut conn = Conn {
            sub: i,
            sock,
            phase: Phase::Head,
            out: req.into_bytes(),
            inbuf: Vec::new(),
            frag: Vec::new(),
            started: Instant::now(),
            open: false,
        };
        let key = self.conns.vacant_key();
        if let Err(e) =
            self.poll.registry().register(&mut conn.sock, Token(key), Interest::READABLE | Interest::WRITABLE)
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
        let _ = self.poll.registry().deregister(&mut c.sock);
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

    fn record(&mut self, i: usize, id: u64) {
        let s = &mut self.subs[i];
        if id <= s.last {
            s.dups += 1;
            if self.counts.reports < MAX_REPORTS {
                self.counts.reports += 1;
                eprintln!(
                    "herald-soak: DUPLICATE: subscriber {i} ({}) on {}{}: id {id} after {} (session {})",
                    s.tr.name(),
                    self.cfg.prefix,
                    s.ch,
                    s.last,
                    s.sessions
                );
            }
            return;
        }
        let gap = id - s.last - 1;
        if gap > 0 {
            if s.missed_pending {
                s.missed_ids += gap;
            } else {
                s.lost += gap;
                if self.counts.reports < MAX_REPORTS {
                    self.counts.reports += 1;
                    eprintln!(
                        "herald-soak: GAP: subscriber {i} ({}) on {}{}: id {id} after {} ({gap} lost, session {})",
                        s.tr.name(),
                        self.cfg.prefix,
                        s.ch,
                        s.last,
                        s.sessions
                    );
                }
            }
        }
        s.missed_pending = false;
        s.last = id;
        s.got += 1;
    }

    fn missed(&mut self, i: usize) {
        let s = &mut self.subs[i];
        s.missed_events += 1;
        s.missed_pending = true;
    }

    fn opened(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.open {
            return;
        }
        c.open = true;
        let i = c.sub;
        self.handshaking -= 1;
        self.subs[i].sessions += 1;
        if self.churn {
            self.arm_session(i);
        }
    }

    /// Handle the bytes in a subscriber's input buffer. Returns why to close, if so.
    fn process(&mut self, key: usize) -> Option<End> {
        loop {
            let phase = self.conns[key].phase;
            match phase {
                Phase::Head => {
                    let h = match parse_head(&self.conns[key].inbuf) {
                        Ok(Some(h)) => h,
                        Ok(None) => return None,
                        Err(e) => return Some(End::Failed(e)),
                    };
                    let tr = self.subs[self.conns[key].sub].tr;
                    match tr {
                        Tr::Ws => {
                            if h.status != 101 {
                                return Some(End::Failed(format!("WebSocket handshake answered {}", h.status)));
                            }
                            if h.accept.as_deref() != Some(&*herald::proto::ws::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="))
                            {
                                return Some(End::Failed("bad Sec-WebSocket-Accept".into()));
                            }
                            self.conns[key].inbuf.drain(..h.len);
                            self.conns[key].phase = Phase::Ws;
                            self.opened(key);
                        }
                        Tr::Sse => {
                            if h.status != 200 {
                                return Some(End::Failed(format!("SSE answered {}", h.status)));
                            }
                            self.conns[key].inbuf.drain(..h.len);
                            self.conns[key].phase = Phase::Sse;
                            self.opened(key);
                        }
                        Tr::Lp => {
                            if h.status != 200 {
                                return Some(End::Failed(format!("long-poll answered {}", h.status)));
                            }
                            let Some(len) = h.content_length else {
                                return Some(End::Failed("long-poll answer without Content-Length".into()));
                            };
                            self.conns[key].phase = Phase::LpBody { head: h.len, len };
                            self.opened(key);
                        }
                    }
                }
                Phase::LpBody { head, len } => {
                    if self.conns[key].inbuf.len() < head + len {
                        return None;
                    }
                    let body: Result<LpBody, _> = serde_json::from_slice(&self.conns[key].inbuf[head..head + len]);
                    let i = self.conns[key].sub;
                    match body {
                        Ok(b) => {
                            if b.missed {
                                self.missed(i);
                            }
                            // Newest first: process oldest first.
                            for m in b.messages.iter().rev() {
                                self.record(i, m.id);
                            }
                            if b.messages.is_empty() && b.last_id > self.subs[i].last && !b.missed {
                                self.counts.id_mismatches += 1;
                                self.error(format!(
                                    "subscriber {i} (longpoll): empty answer with last_id {} after {}",
                                    b.last_id, self.subs[i].last
                                ));
                            }
                        }
                        Err(e) => {
                            self.counts.bad_frames += 1;
                            return Some(End::Server(format!("long-poll body: {e}")));
                        }
                    }
                    self.conns[key].inbuf.drain(..head + len);
                    // Poll again on the same keep-alive connection, from the last id processed.
                    let ch = chan_name(&self.cfg.prefix, self.subs[i].ch);
                    let req = lp_request(&ch, self.cfg.addr, self.subs[i].last);
                    let c = &mut self.conns[key];
                    c.out.extend_from_slice(req.as_bytes());
                    c.phase = Phase::Head;
                    if let Err(e) = flush(&mut c.sock, &mut c.out) {
                        return Some(End::Server(format!("write: {e}")));
                    }
                }
                Phase::Ws => {
                    let (fin, op, start, end) = match decode_frame(&self.conns[key].inbuf, MAX_FRAME) {
                        Ok(Some(f)) => (f.fin, f.opcode, f.start, f.end),
                        Ok(None) => return None,
                        Err(e) => {
                            self.counts.bad_frames += 1;
                            return Some(End::Server(e.into()));
                        }
                    };
                    let i = self.conns[key].sub;
                    match op {
                        0x1 | 0x0 if !fin => {
                            let c = &mut self.conns[key];
                            let p = c.inbuf[start..end].to_vec();
                            c.frag.extend_from_slice(&p);
                        }
                        0x1 | 0x0 => {
                            let c = &mut self.conns[key];
                            let msg = if c.frag.is_empty() {
                                c.inbuf[start..end].to_vec()
                            } else {
                                let mut m = std::mem::take(&mut c.frag);
                                m.extend_from_slice(&c.inbuf[start..end]);
                                m
                            };
                            if let Some(id) = leading_id(&msg, b"{\"id\":") {
                                self.record(i, id);
                            } else if msg.starts_with(b"{\"missed\":true") {
                                self.missed(i);
                            } else {
                                self.counts.bad_frames += 1;
                                self.error(format!("subscriber {i} (ws): unexpected text frame"));
                            }
                        }
                        0x9 => {
                            let c = &mut self.conns[key];
                            let pong = client_frame(0xA, &c.inbuf[start..end]);
                            c.out.extend_from_slice(&pong);
                            if let Err(e) = flush(&mut c.sock, &mut c.out) {
                                return Some(End::Server(format!("write: {e}")));
                            }
                        }
                        0xA => {}
                        0x8 => {
                            return Some(End::Server("close frame".into()));
                        }
                        _ => {
                            self.counts.bad_frames += 1;
                            return Some(End::Server(format!("opcode {op}")));
                        }
                    }
                    self.conns[key].inbuf.drain(..end);
                }
                Phase::Sse => {
                    let p = find(&self.conns[key].inbuf, b"\n\n")?;
                    let ev: Vec<u8> = self.conns[key].inbuf.drain(..p + 2).collect();
                    let i = self.conns[key].sub;
                    let mut id = None;
                    let mut data_id = None;
                    let mut missed = false;
                    for line in ev.split(|&b| b == b'\n') {
                        if let Some(v) = line.strip_prefix(b"id: ") {
                            id = std::str::from_utf8(v).ok().and_then(|v| v.parse::<u64>().ok());
                        } else if line == b"event: missed" {
                            missed = true;
                        } else if let Some(v) = line.strip_prefix(b"data: ") {
                            data_id = leading_id(v, b"{\"id\":");
                        }
                    }
                    if missed {
                        self.missed(i);
                    } else if let Some(id) = id {
                        if data_id != Some(id) {
                            self.counts.id_mismatches += 1;
                            self.error(format!("subscriber {i} (sse): event id {id} but data id {data_id:?}"));
                        }
                        self.record(i, id);
                    }
                }
            }
        }
    }

    fn on_sub_event(&mut self, key: usize, readable: bool, writable: bool) {
        if writable {
            let c = &mut self.conns[key];
            if let Err(e) = flush(&mut c.sock, &mut c.out) {
                let open = c.open;
                return self
                    .close(key, if open { End::Server(format!("write: {e}")) } else { End::Failed(e.to_string()) });
            }
            // A long-poll is open once its request is out (the answer may take the whole
            // long-poll timeout on a quiet channel).
            if c.out.is_empty() && !c.open && self.subs[c.sub].tr == Tr::Lp {
                self.opened(key);
            }
        }
        if !readable {
            return;
        }
        let mut eof = None;
        loop {
            let c = &mut self.conns[key];
            match c.sock.read(&mut self.scratch) {
                Ok(0) => {
                    eof = Some("EOF".to_string());
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eof = Some(e.to_string());
                    break;
                }
            }
            if c.inbuf.len() > 8 << 20 {
                break; // process before reading more
            }
        }
        if let Some(why) = self.process(key) {
            return self.close(key, why);
        }
        if let Some(e) = eof {
            let open = self.conns[key].open;
            self.close(key, if open { End::Server(e) } else { End::Failed(format!("before open: {e}")) });
        }
    }

    fn publish(&mut self, ch: u32) {
        let p = ch as usize % self.pubs.len();
        if self.pubs[p].inflight.len() >= MAX_INFLIGHT {
            self.counts.pub_skipped += 1;
            return;
        }
        if self.pubs[p].sock.is_none() {
            match connect_from(None, self.cfg.addr) {
                Ok(mut s) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut s, Token(PUB_BASE + p), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        self.counts.pub_skipped += 1;
                        return;
                    }
                    self.pubs[p].sock = Some(s);
                }
                Err(e) => {
                    self.counts.pub_errors += 1;
                    self.error(format!("publisher connect: {e}"));
                    return;
                }
            }
        }
        let seq = self.counts.published + self.counts.pub_skipped;
        let mut body = format!("{{\"seq\":{seq},\"p\":\"");
        let pad = self.cfg.size.saturating_sub(body.len() + 2);
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str("\"}");
        let ch_name = chan_name(&self.cfg.prefix, ch);
        let req = format!(
            "POST /publish/?cid={ch_name} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.cfg.addr,
            body.len()
        );
        let pb = &mut self.pubs[p];
        pb.out.extend_from_slice(req.as_bytes());
        pb.inflight.push_back(ch);
        self.counts.published += 1;
        if let Some(s) = pb.sock.as_mut() {
            let _ = flush(s, &mut pb.out);
        }
    }

    fn on_pub_event(&mut self, p: usize, readable: bool, writable: bool) {
        let mut dead = None;
        {
            let pb = &mut self.pubs[p];
            let Some(sock) = pb.sock.as_mut() else {
                return;
            };
            if writable {
                if let Err(e) = flush(sock, &mut pb.out) {
                    dead = Some(format!("write: {e}"));
                }
            }
            if readable && dead.is_none() {
                loop {
                    match sock.read(&mut self.scratch) {
                        Ok(0) => {
                            dead = Some("EOF".into());
                            break;
                        }
                        Ok(n) => pb.inbuf.extend_from_slice(&self.scratch[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            dead = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        // Answers, in order.
        loop {
            let pb = &mut self.pubs[p];
            let h = match parse_head(&pb.inbuf) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    dead = Some(e);
                    break;
                }
            };
            let len = h.content_length.unwrap_or(0);
            if pb.inbuf.len() < h.len + len {
                break;
            }
            let ch = pb.inflight.pop_front();
            let body = &pb.inbuf[h.len..h.len + len];
            let id = leading_id(body, b"{\"id\":");
            let ok = h.status == 200 && id.is_some() && ch.is_some();
            if let (true, Some(ch), Some(id)) = (ok, ch, id) {
                let last = &mut self.chan_last[ch as usize];
                if id != *last + 1 {
                    self.counts.id_mismatches += 1;
                    if self.counts.first_error.is_none() {
                        self.counts.first_error = Some(format!("publish on channel {ch}: id {id} after {last}"));
                    }
                }
                *last = (*last).max(id);
            }
            let pb = &mut self.pubs[p];
            pb.inbuf.drain(..h.len + len);
            if !ok {
                self.counts.pub_errors += 1;
                self.error(format!("publish answered {}", h.status));
            }
        }
        if let Some(e) = dead {
            let pb = &mut self.pubs[p];
            let lost = pb.inflight.len() as u64;
            if let Some(mut s) = pb.sock.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            pb.inflight.clear();
            pb.out.clear();
            pb.inbuf.clear();
            self.counts.pub_errors += lost;
            self.counts.pub_reconnects += 1;
            self.error(format!("publisher connection: {e} ({lost} publishes unanswered)"));
        }
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

fn lp_request(ch: &str, host: SocketAddr, since: u64) -> String {
    format!("GET /listen/?cid={ch}&since={since} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n")
}

/// Write as much of `out` as the socket takes.
fn flush(sock: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        match sock.write(&out[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break, // connect in progress
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.drain(..done);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_ids() {
        let f = herald::proto::ws::frame(herald::proto::ws::Opcode::Text, br#"{"id":42,"channel":"c","data":1}"#);
        for cut in 0..f.len() {
            assert_eq!(decode_frame(&f[..cut], MAX_FRAME), Ok(None));
        }
        let d = decode_frame(&f, MAX_FRAME).unwrap().unwrap();
        assert!(d.fin && d.opcode == 1);
        assert_eq!(leading_id(&f[d.start..d.end], b"{\"id\":"), Some(42));
        assert!(decode_frame(&client_frame(1, b"x"), MAX_FRAME).is_err());
    }
}
