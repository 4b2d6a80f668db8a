//! The load run: one mio event loop (no async runtime) that opens the subscribers, publishes,
//! counts what arrives and times it.
//!
//! Centrifugo subscribers (`Opts::cf`): after the WebSocket upgrade a subscriber sends
//! `connect`, and `subscribe` once that is answered, as Centrifugo's SDKs do; it counts as
//! open (and towards the connect rate) when the subscribe reply arrives. `{}` pings are
//! answered with `{}`; publications are scanned out of the newline-delimited pushes.
//!
//! Phases: connect (at most `connect_concurrency` handshakes in flight, until every
//! subscriber is open or `connect_timeout`), settle (idle; server memory is read here), publish
//! (`duration`; at a fixed rate or as fast as a window of undelivered messages allows), drain
//! (until every expected delivery arrived or `drain`). Every phase is bounded in time.
//!
//! Loss and duplicates: each message carries a global sequence number; a subscriber sits on
//! one channel, and one publisher connection (pipelined, in order) serves each channel, so a
//! subscriber sees its channel's sequence numbers increasing. A number not above the last one
//! seen is a duplicate. Expected deliveries of a message = subscribers open on its channel when
//! it was published; loss = expected − unique deliveries.

mod publisher;

use crate::wire::{self, UrlTemplate};
use herald::proto::http::ChunkedDecoder;
use herald_bench_tools::http::{self, parse_response};
use herald_bench_tools::sock::{connect_from, loopback_source, read_available, write_pending, ReadEnd};
use herald_bench_tools::tls::Stream;
use herald_bench_tools::{procfs, text, ws};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use publisher::Publisher;
use slab::Slab;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How subscribers receive messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Sse,
    LongPoll,
}

/// Everything a run needs (filled from the command line).
pub struct Opts {
    /// Subscribe URL templates (subscriber i uses `(i / channels) % len`).
    pub sub: Vec<UrlTemplate>,
    pub publ: UrlTemplate,
    pub transport: Transport,
    pub conns: usize,
    pub channels: usize,
    pub chan_prefix: String,
    pub sources: usize,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub settle: Duration,
    /// Publishes per second; 0 = as fast as the window allows.
    pub rate: f64,
    /// Most published-but-not-fully-delivered messages in max-rate mode.
    pub window: usize,
    pub pub_conns: usize,
    pub pub_pipeline: usize,
    /// Publishes per request (`/api/batch`) when more than 1.
    pub pub_batch: usize,
    pub size: usize,
    pub duration: Duration,
    pub drain: Duration,
    pub server_pid: Option<u32>,
    pub progress: bool,
    /// Offer permessage-deflate (RFC 7692) on WebSocket subscribers.
    pub deflate: bool,
    /// Pad messages with varied JSON items instead of `x` (realistic compressibility).
    pub json: bool,
    /// `wss://` subscribers: the client configuration and the server name to verify.
    pub tls: Option<TlsClient>,
    /// WebSocket subscribers speak Centrifugo's JSON client protocol.
    pub cf: Option<CfClient>,
    /// How publishes are sent.
    pub pub_api: PubApi,
    /// `X-API-Key` on every publish.
    pub api_key: Option<String>,
}

/// Centrifugo subscribers: how they authenticate.
pub struct CfClient {
    /// Sign a connection token per subscriber with this HMAC key; None = anonymous connect.
    pub token_secret: Option<herald::proto::jwt::Secret>,
}

/// How a message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubApi {
    /// `POST` of the message itself to the publish URL (channel in the URL).
    Plain,
    /// Centrifugo's server API: `POST {"channel":..,"data":MESSAGE}`; an `error` in the
    /// answer (Centrifugo answers API errors with 200) is a failed publish.
    Centrifugo,
}

/// A TLS client configuration and the server name to send and verify.
pub type TlsClient = (Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>);

/// Per-message bookkeeping (index = seq − 1).
struct Msg {
    ch: u32,
    sent_ns: u64,
    expected: u32,
    got: u32,
}

#[derive(PartialEq, Eq)]
enum SubState {
    Connecting,
    Handshake,
    /// Centrifugo protocol: upgraded, `connect` (then `subscribe`) not answered yet.
    Joining,
    Open,
}

struct Sub {
    /// The socket, with its TLS state for `wss://`.
    sock: Stream<TcpStream>,
    ch: u32,
    /// Which subscribe URL template (server) it uses.
    tpl: usize,
    state: SubState,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// WebSocket: payload of a fragmented message being assembled.
    frag: Vec<u8>,
    /// That message is compressed (RSV1 on its first frame).
    frag_z: bool,
    /// SSE over chunked encoding: the decoder and decoded text.
    chunked: Option<ChunkedDecoder>,
    text: Vec<u8>,
    /// Long-poll: the response being read (`Some(remaining body bytes)` after its head).
    lp_body: Option<usize>,
    since: u64,
    last_seq: u64,
}

/// Counters and samples; turned into the summary at the end.
#[derive(Default)]
pub struct Tally {
    pub opened: usize,
    pub connect_errors: usize,
    pub connect_timeouts: usize,
    pub first_error: Option<String>,
    pub closed_by_server: usize,
    pub published: u64,
    pub pub_errors: u64,
    pub pub_skipped: u64,
    pub expected: u64,
    pub unique: u64,
    pub dups: u64,
    pub strays: u64,
    /// Latencies in µs of unique deliveries.
    pub lat_us: Vec<u32>,
    pub connect_secs: f64,
    pub pub_secs: f64,
    pub deliveries_in_window: u64,
    pub last_delivery_ns: u64,
    pub rss_base: Option<u64>,
    pub rss_idle: Option<u64>,
    pub rss_end: Option<u64>,
    pub rss_peak: Option<u64>,
    pub sock_base: Option<(u64, u64)>,
    pub sock_idle: Option<(u64, u64)>,
    pub sock_peak_mem: u64,
    pub slab_base: Option<u64>,
    pub slab_idle: Option<u64>,
    pub server_cpu_pct: Option<f64>,
    pub gen_cpu_pct: f64,
    /// WebSocket subscribers whose handshake answer named permessage-deflate.
    pub deflate_negotiated: usize,
    /// Compressed (RSV1) messages received.
    pub compressed_msgs: u64,
    /// Bytes subscribers read while publishing (the window of `deliveries_in_window`).
    pub sub_bytes_in_window: u64,
    /// Centrifugo `{}` pings answered.
    pub cf_pings: u64,
}

const MAX_FRAME: usize = 16 << 20;
const MAX_SAMPLES: usize = 40_000_000;
const PUB_TOKEN_BASE: usize = usize::MAX - 1024;

struct Run<'a> {
    o: &'a Opts,
    poll: Poll,
    subs: Slab<Sub>,
    pubs: Vec<Publisher>,
    msgs: Vec<Msg>,
    /// Open subscribers per channel.
    alive: Vec<u32>,
    /// Oldest message not yet fully delivered nor given up on (window).
    low: usize,
    t: Tally,
    epoch: Instant,
    scratch: Vec<u8>,
    found: Vec<(u64, u64)>,
    publishing: bool,
    /// Shared inflater for compressed messages and its output buffer.
    inflater: flate2::Decompress,
    inflated: Vec<u8>,
    /// Compressed payloads already inflated, by content: a server that compresses a
    /// message once sends the same bytes to every subscriber, and inflating each copy would
    /// make the generator, not the server, the bottleneck. Bounded (cleared when full).
    inflate_cache: HashMap<Vec<u8>, Vec<(u64, u64)>>,
    pub_start_ns: u64,
    pub_end_ns: u64,
    pending: usize,
    started: usize,
}

fn chan_name(o: &Opts, ch: u32) -> String {
    format!("{}{ch}", o.chan_prefix)
}

/// Read until WouldBlock, appending to `buf`. Returns Ok(false) at EOF.
fn read_in(sock: &mut impl io::Read, scratch: &mut [u8], buf: &mut Vec<u8>) -> io::Result<bool> {
    read_available(sock, scratch, buf, usize::MAX).map(|end| end != ReadEnd::Eof)
}

/// Percentile of sorted samples.
pub fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

impl<'a> Run<'a> {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn src_ip(&self, i: usize, dst: &UrlTemplate) -> Option<IpAddr> {
        if self.o.sources == 0 || !dst.addr.ip().is_loopback() || dst.addr.is_ipv6() {
            return None;
        }
        Some(loopback_source(i % self.o.sources))
    }

    fn note_error(&mut self, e: String) {
        if self.t.first_error.is_none() {
            self.t.first_error = Some(e);
        }
    }

    fn start_sub(&mut self) {
        let i = self.started;
        self.started += 1;
        let ch = (i % self.o.channels) as u32;
        let tpl = (i / self.o.channels) % self.o.sub.len();
        let o = self.o;
        let url = &o.sub[tpl];
        let sock = match connect_from(self.src_ip(i, url), url.addr) {
            Ok(s) => s,
            Err(e) => {
                self.t.connect_errors += 1;
                self.note_error(format!("connect: {e}"));
                return;
            }
        };
        let sock = match &self.o.tls {
            None => Stream::plain(sock),
            Some((cfg, name)) => match Stream::tls(sock, cfg, name.clone()) {
                Ok(s) => s,
                Err(e) => {
                    self.t.connect_errors += 1;
                    self.note_error(e);
                    return;
                }
            },
        };
        let mut sock = sock;
        let entry = self.subs.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.poll.registry().register(&mut sock.sock, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            self.t.connect_errors += 1;
            self.note_error(format!("register: {e}"));
            return;
        }
        let target = url.target(&chan_name(self.o, ch));
        let out = match self.o.transport {
            Transport::Ws => ws::upgrade_request_with(&url.host, &target, self.o.deflate),
            Transport::Sse => http::get_request(&url.host, &target, "text/event-stream", &[]),
            // since=0 on a fresh channel: anything published before the request is held
            // comes from history, so no message falls between two polls.
            Transport::LongPoll => http::get_request(&url.host, &lp_target(&target, 0), "application/json", &[]),
        };
        entry.insert(Sub {
            sock,
            ch,
            tpl,
            state: SubState::Connecting,
            inbuf: Vec::new(),
            out,
            frag: Vec::new(),
            frag_z: false,
            chunked: None,
            text: Vec::new(),
            lp_body: None,
            since: 0,
            last_seq: 0,
        });
        self.pending += 1;
    }

    fn sub_failed(&mut self, key: usize, why: String) {
        let Some(s) = self.subs.get(key) else { return };
        match s.state {
            SubState::Connecting | SubState::Handshake | SubState::Joining => {
                self.pending -= 1;
                self.t.connect_errors += 1;
            }
            SubState::Open => {
                self.alive[s.ch as usize] -= 1;
                self.t.closed_by_server += 1;
            }
        }
        self.note_error(why);
        let mut s = self.subs.remove(key);
        let _ = self.poll.registry().deregister(&mut s.sock.sock);
    }

    fn sub_opened(&mut self, key: usize) {
        let s = &mut self.subs[key];
        s.state = SubState::Open;
        self.alive[s.ch as usize] += 1;
        self.pending -= 1;
        self.t.opened += 1;
    }

    fn sub_event(&mut self, key: usize, writable: bool) {
        let Some(s) = self.subs.get_mut(key) else { return };
        if s.state == SubState::Connecting {
            if !writable {
                // readable/hup before writable: let the read below report the error
            }
            match s.sock.sock.take_error() {
                Ok(Some(e)) | Err(e) => return self.sub_failed(key, format!("connect: {e}")),
                Ok(None) => {}
            }
            match s.sock.sock.peer_addr() {
                Ok(_) => s.state = SubState::Handshake,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.sub_failed(key, format!("connect: {e}")),
            }
        }
        // write_pending, then flush: TLS records left behind by a socket that would block
        // (the handshake's) go out on the next writable event.
        if let Err(e) = write_pending(&mut s.sock, &mut s.out).and_then(|()| io::Write::flush(&mut s.sock)) {
            return self.sub_failed(key, format!("write: {e}"));
        }
        // A long-poll is answered only when a message comes: it counts as open once its
        // first request is out.
        if s.state == SubState::Handshake && self.o.transport == Transport::LongPoll && s.out.is_empty() {
            self.sub_opened(key);
        }
        let Some(s) = self.subs.get_mut(key) else { return };
        let mut buf = std::mem::take(&mut s.inbuf);
        let had = buf.len();
        let alive = match read_in(&mut s.sock, &mut self.scratch, &mut buf) {
            Ok(a) => a,
            Err(e) => return self.sub_failed(key, format!("read: {e}")),
        };
        if self.publishing {
            self.t.sub_bytes_in_window += (buf.len() - had) as u64;
        }
        let now = self.now_ns();
        if let Err(e) = self.sub_input(key, &mut buf, now) {
            return self.sub_failed(key, e);
        }
        let Some(s) = self.subs.get_mut(key) else { return };
        s.inbuf = if buf.is_empty() { Vec::new() } else { buf };
        if !alive {
            return self.sub_failed(key, "server closed the connection".into());
        }
        if !s.out.is_empty() {
            if let Err(e) = write_pending(&mut s.sock, &mut s.out) {
                self.sub_failed(key, format!("write: {e}"))
            }
        }
    }

    /// Consume what `buf` holds; leaves unconsumed bytes in it.
    fn sub_input(&mut self, key: usize, buf: &mut Vec<u8>, now: u64) -> Result<(), String> {
        let tr = self.o.transport;
        if self.subs[key].state == SubState::Handshake {
            let Some(h) = parse_response(buf)? else { return Ok(()) };
            match tr {
                Transport::Ws => {
                    if h.status != 101 || !ws::accept_ok(h.ws_accept.as_deref()) {
                        return Err(format!("websocket handshake answered {}", h.status));
                    }
                    if h.ws_deflate {
                        self.t.deflate_negotiated += 1;
                    }
                    buf.drain(..h.head_len);
                    if let Some(cf) = &self.o.cf {
                        // Open once subscribed (cf_reply).
                        let token =
                            cf.token_secret.as_ref().map(|k| wire::cf::token(k, &format!("load{key}"), unix_now()));
                        let s = &mut self.subs[key];
                        s.out.extend_from_slice(&ws::client_frame(ws::op::TEXT, &wire::cf::connect(token.as_deref())));
                        s.state = SubState::Joining;
                        return self.ws_input(key, buf, now);
                    }
                }
                Transport::Sse => {
                    if h.status != 200 {
                        return Err(format!("SSE request answered {}", h.status));
                    }
                    buf.drain(..h.head_len);
                    if h.chunked {
                        self.subs[key].chunked = Some(ChunkedDecoder::new(usize::MAX / 4));
                    }
                }
                // Open once its request is out (above); heads are read in lp_input.
                Transport::LongPoll => return self.lp_input(key, buf, now),
            }
            self.sub_opened(key);
        }
        match tr {
            Transport::Ws => self.ws_input(key, buf, now),
            Transport::Sse => self.sse_input(key, buf, now),
            Transport::LongPoll => self.lp_input(key, buf, now),
        }
    }

    fn ws_input(&mut self, key: usize, buf: &mut Vec<u8>, now: u64) -> Result<(), String> {
        let mut pos = 0;
        let mut found = std::mem::take(&mut self.found);
        let mut r = Ok(());
        while let Some(f) = ws::decode_frame(&buf[pos..], MAX_FRAME)? {
            let rsv1 = buf[pos] & 0x40 != 0;
            let p = &buf[pos + f.start..pos + f.end];
            let s = &mut self.subs[key];
            match f.opcode {
                0..=2 if !f.fin || !s.frag.is_empty() => {
                    if s.frag.is_empty() {
                        s.frag_z = rsv1;
                    }
                    s.frag.extend_from_slice(p);
                    if f.fin {
                        let frag = std::mem::take(&mut s.frag);
                        let z = s.frag_z;
                        if let Err(e) = self.message(key, &frag, z, &mut found) {
                            r = Err(e);
                            break;
                        }
                    }
                }
                1 | 2 => {
                    if let Err(e) = self.message(key, p, rsv1, &mut found) {
                        r = Err(e);
                        break;
                    }
                }
                9 => s.out.extend_from_slice(&ws::client_frame(ws::op::PONG, p)),
                10 => {}
                8 => {
                    // Centrifugo says why in the close frame (3012 no pong, 3501 bad request, ...).
                    let code = p.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]).to_string()).unwrap_or_default();
                    let why = String::from_utf8_lossy(p.get(2..).unwrap_or_default());
                    r = Err(format!("server sent a close frame {code} {why}").trim_end().to_string());
                    break;
                }
                op => {
                    r = Err(format!("unknown opcode {op}"));
                    break;
                }
            }
            pos += f.end;
        }
        buf.drain(..pos);
        self.deliver(key, &mut found, now);
        self.found = found;
        r
    }

    /// One complete WebSocket data message (`z`: compressed): its load messages go to
    /// `found`; Centrifugo lines are acted on.
    fn message(&mut self, key: usize, m: &[u8], z: bool, found: &mut Vec<(u64, u64)>) -> Result<(), String> {
        if self.o.cf.is_none() {
            return if z {
                self.scan_compressed(m, found)
            } else {
                wire::scan(m, found);
                Ok(())
            };
        }
        if !z {
            return self.cf_message(key, m, found);
        }
        // Compressed Centrifugo frames are inflated every time (pings and replies must be
        // seen per connection, so the per-payload cache is not used).
        self.t.compressed_msgs += 1;
        let mut inflated = std::mem::take(&mut self.inflated);
        let r = ws::inflate(&mut self.inflater, m, &mut inflated)
            .map_err(String::from)
            .and_then(|()| self.cf_message(key, &inflated, found));
        self.inflated = inflated;
        r
    }

    /// The lines of one Centrifugo frame: pushes scanned, pings answered, the `connect` and
    /// `subscribe` replies move the subscriber on; an error reply fails it.
    fn cf_message(&mut self, key: usize, m: &[u8], found: &mut Vec<(u64, u64)>) -> Result<(), String> {
        for line in wire::cf::lines(m) {
            match line {
                wire::cf::Line::Push(l) => wire::scan(l, found),
                wire::cf::Line::Ping => {
                    self.t.cf_pings += 1;
                    self.subs[key].out.extend_from_slice(&ws::client_frame(ws::op::TEXT, wire::cf::PONG));
                }
                wire::cf::Line::Reply { id, error: Some(e) } => {
                    let what = if id == wire::cf::CONNECT_ID { "connect" } else { "subscribe" };
                    return Err(format!("centrifugo {what} answered error {e}"));
                }
                wire::cf::Line::Reply { id, error: None } => {
                    let s = &mut self.subs[key];
                    if s.state != SubState::Joining {
                        continue;
                    }
                    if id == wire::cf::CONNECT_ID {
                        let ch = chan_name(self.o, s.ch);
                        s.out.extend_from_slice(&ws::client_frame(ws::op::TEXT, &wire::cf::subscribe(&ch)));
                    } else if id == wire::cf::SUBSCRIBE_ID {
                        self.sub_opened(key);
                    }
                }
                wire::cf::Line::Other => self.t.strays += 1,
            }
        }
        Ok(())
    }

    /// Inflate a compressed message (once per distinct payload) and scan it.
    fn scan_compressed(&mut self, z: &[u8], found: &mut Vec<(u64, u64)>) -> Result<(), String> {
        self.t.compressed_msgs += 1;
        if let Some(f) = self.inflate_cache.get(z) {
            found.extend_from_slice(f);
            return Ok(());
        }
        ws::inflate(&mut self.inflater, z, &mut self.inflated)?;
        let start = found.len();
        wire::scan(&self.inflated, found);
        if self.inflate_cache.len() >= 256 {
            self.inflate_cache.clear();
        }
        self.inflate_cache.insert(z.to_vec(), found[start..].to_vec());
        Ok(())
    }

    fn sse_input(&mut self, key: usize, buf: &mut Vec<u8>, now: u64) -> Result<(), String> {
        let s = &mut self.subs[key];
        if let Some(dec) = s.chunked.as_mut() {
            let (used, done) = dec.feed(buf, &mut s.text).map_err(|e| format!("chunked SSE: {e:?}"))?;
            buf.drain(..used);
            if done {
                return Err("SSE stream ended".into());
            }
        } else {
            s.text.append(buf);
        }
        // Complete events end with a blank line; keep the partial tail.
        let Some(end) = s.text.windows(2).rposition(|w| w == b"\n\n") else { return Ok(()) };
        let mut found = std::mem::take(&mut self.found);
        wire::scan(&s.text[..end], &mut found);
        s.text.drain(..end + 2);
        if s.text.capacity() > 64 * 1024 && s.text.is_empty() {
            s.text = Vec::new();
        }
        self.deliver(key, &mut found, now);
        self.found = found;
        Ok(())
    }

    fn lp_input(&mut self, key: usize, buf: &mut Vec<u8>, now: u64) -> Result<(), String> {
        loop {
            let s = &mut self.subs[key];
            if s.lp_body.is_none() {
                let Some(h) = parse_response(buf)? else { return Ok(()) };
                if h.status != 200 {
                    return Err(format!("long-poll answered {}", h.status));
                }
                let len = h.content_length.ok_or("long-poll answer without Content-Length")?;
                buf.drain(..h.head_len);
                s.lp_body = Some(len);
            }
            let len = s.lp_body.unwrap_or(0);
            if buf.len() < len {
                return Ok(());
            }
            let body: Vec<u8> = buf.drain(..len).collect();
            s.lp_body = None;
            let asked = s.since;
            if let Some(p) = text::find(&body, b"\"last_id\":") {
                let digits: String =
                    body[p + 10..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
                if let Ok(v) = digits.parse() {
                    s.since = v;
                }
            }
            let url = &self.o.sub[s.tpl];
            let target = lp_target(&url.target(&chan_name(self.o, s.ch)), s.since);
            s.out.extend_from_slice(&http::get_request(&url.host, &target, "application/json", &[]));
            let mut found = std::mem::take(&mut self.found);
            wire::scan(&body, &mut found);
            // Newest first in the body: count them oldest first.
            found.sort_unstable();
            let last_seq = self.subs[key].last_seq;
            if found.iter().any(|&(seq, _)| seq <= last_seq) && self.t.dups < 5 {
                // An answer carrying what this subscriber already had: show it (the first few).
                let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                eprintln!("herald-load: long-poll subscriber {key} asked since={asked} (seq {last_seq} seen) and got: {shown}");
            }
            self.deliver(key, &mut found, now);
            self.found = found;
        }
    }

    /// Count the messages found in one read of one subscriber.
    fn deliver(&mut self, key: usize, found: &mut Vec<(u64, u64)>, now: u64) {
        let s = &mut self.subs[key];
        for &(seq, t) in found.iter() {
            let Some(m) = (seq as usize).checked_sub(1).and_then(|i| self.msgs.get_mut(i)) else {
                self.t.strays += 1;
                continue;
            };
            // Another channel's or another generator's message with the same number (its
            // send time differs: each message carries the time its request left).
            if m.ch != s.ch || m.sent_ns != t {
                self.t.strays += 1;
                continue;
            }
            if seq <= s.last_seq {
                self.t.dups += 1;
                continue;
            }
            s.last_seq = seq;
            m.got += 1;
            self.t.unique += 1;
            if self.publishing {
                self.t.deliveries_in_window += 1;
            }
            self.t.last_delivery_ns = now;
            if self.t.lat_us.len() < MAX_SAMPLES {
                self.t.lat_us.push((now.saturating_sub(t) / 1000).min(u32::MAX as u64) as u32);
            }
        }
        found.clear();
    }

    /// Advance the window past messages fully delivered or older than 2 s.
    fn advance_low(&mut self, now: u64) {
        while let Some(m) = self.msgs.get(self.low) {
            if m.got >= m.expected || now.saturating_sub(m.sent_ns) > 2_000_000_000 {
                self.low += 1;
            } else {
                break;
            }
        }
    }

    fn poll_once(&mut self, events: &mut Events, timeout: Duration) {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for ev in events.iter() {
            let Token(k) = ev.token();
            if k >= PUB_TOKEN_BASE {
                self.pub_event(k - PUB_TOKEN_BASE);
            } else {
                self.sub_event(k, ev.is_writable());
            }
        }
    }
}

/// Seconds since the Unix epoch (token expiry).
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn lp_target(target: &str, since: u64) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}since={since}")
}

/// Progress line state.
struct Progress {
    at: Instant,
    unique: u64,
    published: u64,
    lat_len: usize,
}

/// Run the whole load test and return the tally.
pub fn run(o: &Opts) -> Tally {
    let epoch = Instant::now();
    let mut r = Run {
        o,
        poll: Poll::new().expect("poll"),
        subs: Slab::with_capacity(o.conns),
        pubs: Vec::new(),
        msgs: Vec::new(),
        alive: vec![0; o.channels],
        low: 0,
        t: Tally::default(),
        epoch,
        scratch: vec![0; 256 * 1024],
        found: Vec::new(),
        publishing: false,
        inflater: flate2::Decompress::new(false),
        inflated: Vec::new(),
        inflate_cache: HashMap::new(),
        pub_start_ns: 0,
        pub_end_ns: 0,
        pending: 0,
        started: 0,
    };
    let mut events = Events::with_capacity(4096);
    let pid = o.server_pid;
    r.t.rss_base = pid.and_then(procfs::rss_bytes);
    r.t.sock_base = procfs::sockstat_tcp();
    r.t.slab_base = procfs::slab_bytes();
    let mut prog = Progress { at: Instant::now(), unique: 0, published: 0, lat_len: 0 };
    let progress = |r: &mut Run, prog: &mut Progress, phase: &str| {
        let dt = prog.at.elapsed().as_secs_f64();
        if dt < 1.0 {
            return;
        }
        if let Some((_, mem)) = procfs::sockstat_tcp() {
            r.t.sock_peak_mem = r.t.sock_peak_mem.max(mem);
        }
        if let Some(rss) = pid.and_then(procfs::rss_bytes) {
            r.t.rss_peak = Some(r.t.rss_peak.unwrap_or(0).max(rss));
        }
        if o.progress {
            let mut last: Vec<u32> = r.t.lat_us[prog.lat_len.min(r.t.lat_us.len())..].to_vec();
            let p99 = if last.is_empty() {
                0.0
            } else {
                let i = ((last.len() - 1) as f64 * 0.99) as usize;
                *last.select_nth_unstable(i).1 as f64 / 1000.0
            };
            eprintln!(
                "[{phase:>7}] t={:6.1}s open={} pending={} failed={} closed={} published={} delivered={} pub_errors={} pub/s={:.0} deliv/s={:.0} p99={:.2}ms lost_so_far={}",
                epoch.elapsed().as_secs_f64(),
                r.t.opened - r.t.closed_by_server,
                r.pending,
                r.t.connect_errors + r.t.connect_timeouts,
                r.t.closed_by_server,
                r.t.published,
                r.t.unique,
                r.t.pub_errors,
                (r.t.published - prog.published) as f64 / dt,
                (r.t.unique - prog.unique) as f64 / dt,
                p99,
                r.msgs[..r.low].iter().map(|m| (m.expected.saturating_sub(m.got)) as u64).sum::<u64>(),
            );
        }
        *prog =
            Progress { at: Instant::now(), unique: r.t.unique, published: r.t.published, lat_len: r.t.lat_us.len() };
    };

    // Connect.
    let t0 = Instant::now();
    let mut last_open = t0;
    while t0.elapsed() < o.connect_timeout {
        while r.started < o.conns && r.pending < o.connect_concurrency {
            r.start_sub();
        }
        if r.started >= o.conns && r.pending == 0 {
            break;
        }
        let before = r.t.opened;
        r.poll_once(&mut events, Duration::from_millis(20));
        if r.t.opened > before {
            last_open = Instant::now();
        }
        progress(&mut r, &mut prog, "connect");
    }
    r.t.connect_secs = last_open.duration_since(t0).as_secs_f64();
    // Whatever is still pending at the deadline is given up.
    let stuck: Vec<usize> = r
        .subs
        .iter()
        .filter(|(_, s)| matches!(s.state, SubState::Connecting | SubState::Handshake | SubState::Joining))
        .map(|(k, _)| k)
        .collect();
    for k in stuck {
        let mut s = r.subs.remove(k);
        let _ = r.poll.registry().deregister(&mut s.sock.sock);
        r.pending -= 1;
        r.t.connect_timeouts += 1;
    }
    // Settle, then read idle memory.
    r.open_publishers();
    let t1 = Instant::now();
    while t1.elapsed() < o.settle {
        r.poll_once(&mut events, Duration::from_millis(20));
        progress(&mut r, &mut prog, "settle");
    }
    r.t.rss_idle = pid.and_then(procfs::rss_bytes);
    r.t.sock_idle = procfs::sockstat_tcp();
    r.t.slab_idle = procfs::slab_bytes();

    // Publish.
    let cpu0 = pid.and_then(procfs::cpu_seconds);
    let gcpu0 = procfs::self_cpu_seconds();
    r.publishing = true;
    r.pub_start_ns = r.now_ns();
    let t2 = Instant::now();
    let interval = if o.rate > 0.0 { Some(Duration::from_secs_f64(1.0 / o.rate)) } else { None };
    let mut next_pub = t2;
    if !o.duration.is_zero() {
        while t2.elapsed() < o.duration {
            let now = r.now_ns();
            match interval {
                Some(iv) => {
                    while Instant::now() >= next_pub && t2.elapsed() < o.duration {
                        r.publish_next(now);
                        next_pub += iv;
                    }
                }
                None => {
                    r.advance_low(now);
                    while r.msgs.len() - r.low < o.window {
                        if !r.publish_next(now) {
                            break;
                        }
                        // A message to a channel with no subscriber is complete at once.
                        r.advance_low(now);
                    }
                }
            }
            let wait = match interval {
                Some(_) => next_pub.saturating_duration_since(Instant::now()).min(Duration::from_millis(10)),
                None => Duration::from_millis(5),
            };
            r.poll_once(&mut events, wait);
            progress(&mut r, &mut prog, "publish");
        }
    }
    r.publishing = false;
    r.pub_end_ns = r.now_ns();
    r.t.pub_secs = (r.pub_end_ns - r.pub_start_ns) as f64 / 1e9;
    if let (Some(a), Some(b)) = (cpu0, pid.and_then(procfs::cpu_seconds)) {
        r.t.server_cpu_pct = Some((b - a) / r.t.pub_secs.max(1e-9) * 100.0);
    }
    r.t.gen_cpu_pct = (procfs::self_cpu_seconds() - gcpu0) / r.t.pub_secs.max(1e-9) * 100.0;

    // Drain.
    let t3 = Instant::now();
    while t3.elapsed() < o.drain {
        let now = r.now_ns();
        if r.msgs.iter().all(|m| m.got >= m.expected) {
            break;
        }
        r.advance_low(now);
        r.poll_once(&mut events, Duration::from_millis(10));
        progress(&mut r, &mut prog, "drain");
    }
    r.t.rss_end = pid.and_then(procfs::rss_bytes);
    r.t.expected = r.msgs.iter().map(|m| m.expected as u64).sum();
    r.t
}
