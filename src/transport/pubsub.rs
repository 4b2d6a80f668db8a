//! The public contract of Herald (README.md "Endpoints"): publish, polling, Comet long-polling,
//! the iframe stream, Server-Sent Events and WebSocket subscriptions, and the delivery of a
//! published message to each of them.
//!
//! Owns: request handling for those endpoints and the per-transport wire bytes. Called by the
//! router and by the worker's inbox drain. A message is encoded once per worker per wire
//! format ([`WireCache`]) and the same `Bytes` are queued to every subscriber. Must never
//! read or write a socket, nor block.

use super::http::{error, json, respond, Req};
use crate::hub::envelope::{iframe_chunk, json_data, messages_body, sse_event, valid_callback};
use crate::hub::local::{ConnId, SubRef};
use crate::hub::{parse_channels, HistoryRead, Message};
use crate::proto::http::{query_param, Response};
use crate::proto::ws::{self as codec, Opcode};
use crate::reactor::conn::{Conn, LongPoll, State, StreamKind, WsMode};
use crate::reactor::worker::Ctx;
use bytes::Bytes;
use slab::Slab;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The demo chat page served at `/`.
pub const DEMO_PAGE: &str = include_str!("demo.html");

/// Padding sent first on streams: old browsers buffer the first KiB or two before they
/// run anything (IE, old Safari), and some proxies buffer small responses.
const PADDING: usize = 2048;

/// Per-message wire encodings, built lazily once per worker per message.
#[derive(Default)]
pub struct WireCache {
    ws: Option<Bytes>,
    sse: Option<Bytes>,
    iframe: Option<Bytes>,
    longpoll: Option<Bytes>,
    cf: Option<Bytes>,
    cf_uni: Option<Bytes>,
    cf_uni_ws: Option<Bytes>,
    cf_uni_sse: Option<Bytes>,
}

impl WireCache {
    fn ws(&mut self, m: &Message) -> Bytes {
        self.ws.get_or_insert_with(|| codec::frame(Opcode::Text, &m.envelope)).clone()
    }
    fn sse(&mut self, m: &Message) -> Bytes {
        // An unsequenced message (id 0) carries no `id:`, so Last-Event-ID keeps its place.
        self.sse.get_or_insert_with(|| sse_event((m.id > 0).then(|| m.id.to_string()).as_deref(), &m.envelope)).clone()
    }
    fn iframe(&mut self, m: &Message) -> Bytes {
        self.iframe.get_or_insert_with(|| iframe_chunk(&m.envelope)).clone()
    }
    /// Centrifugo publication push in a WebSocket frame.
    fn cf(&mut self, m: &Message) -> Bytes {
        self.cf
            .get_or_insert_with(|| {
                let push = crate::centrifugo::proto::pub_push(m, true);
                codec::frame(Opcode::Text, &push)
            })
            .clone()
    }
    /// The bare push unidirectional transports send (framed by the caller per transport).
    fn cf_uni(&mut self, m: &Message) -> Bytes {
        self.cf_uni.get_or_insert_with(|| crate::centrifugo::proto::pub_push(m, false)).clone()
    }
    fn cf_uni_ws(&mut self, m: &Message) -> Bytes {
        let p = self.cf_uni(m);
        self.cf_uni_ws.get_or_insert_with(|| codec::frame(Opcode::Text, &p)).clone()
    }
    fn cf_uni_sse(&mut self, m: &Message) -> Bytes {
        let p = self.cf_uni(m);
        self.cf_uni_sse.get_or_insert_with(|| sse_event(None, &p)).clone()
    }
    fn longpoll(&mut self, m: &Message) -> Bytes {
        self.longpoll
            .get_or_insert_with(|| Bytes::from(messages_body(&[&m.envelope], false, &[(&m.channel, m.id)], None)))
            .clone()
    }
}

/// `Access-Control-Allow-Origin` value for this request, if CORS applies.
pub fn cors_origin(ctx: &Ctx, req: &Req) -> Option<String> {
    let origin = req.head.header_str("Origin")?;
    let allowed = &ctx.shared.cfg.cors_origins;
    if allowed.iter().any(|o| o == "*") {
        Some("*".into())
    } else if allowed.iter().any(|o| o == origin) {
        Some(origin.to_string())
    } else {
        None
    }
}

/// Answer a CORS preflight (`OPTIONS`).
pub fn preflight(ctx: &mut Ctx, conn: &mut Conn, req: &Req, methods: &str) {
    let keep = req.keep_alive();
    let mut r = Response::new(204).keep_alive(keep).header("Allow", methods);
    if let Some(o) = cors_origin(ctx, req) {
        let hdrs = req
            .head
            .header_str("Access-Control-Request-Headers")
            .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric() || ", -_".contains(c)))
            .unwrap_or("Content-Type, Last-Event-ID, X-API-Key");
        r = r
            .header("Access-Control-Allow-Origin", &o)
            .header("Access-Control-Allow-Methods", methods)
            .header("Access-Control-Allow-Headers", hdrs)
            .header("Access-Control-Max-Age", "86400")
            .header("Vary", "Origin");
    }
    respond(ctx, conn, r.empty(), keep);
}

/// Constant-time comparison (no early exit on the first differing byte).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn may_publish(ctx: &Ctx, conn: &Conn, req: &Req) -> bool {
    if let (Some(key), Some(given)) = (&ctx.shared.cfg.publish_api_key, req.head.header("X-API-Key")) {
        if ct_eq(key.as_bytes(), given.trim_ascii()) {
            return true;
        }
    }
    let ip = conn.peer.ip();
    ctx.publish_cidrs.iter().any(|c| c.contains(ip))
}

fn channels(ctx: &mut Ctx, conn: &mut Conn, req: &Req) -> Option<Vec<String>> {
    let cid = query_param(req.head.query, "cid").or_else(|| query_param(req.head.query, "channel"));
    match parse_channels(cid.as_deref().unwrap_or(""), ctx.shared.cfg.max_channels_per_conn) {
        Ok(c) => Some(c),
        Err(e) => {
            error(ctx, conn, req, 400, &e);
            None
        }
    }
}

/// `since` for each channel: `since=ID` applies to all; `since=5,7` is positional. SSE's
/// `Last-Event-ID` (header, or `last_event_id` in the query for polyfills) has the same
/// form. Returns Err with a message on a malformed value.
fn since_list(req: &Req, n: usize, sse: bool) -> Result<Vec<Option<u64>>, String> {
    crate::hub::parse_since(req.head.query, req.head.header_str("Last-Event-ID"), n, sse)
}

/// `POST /publish/?cid=CH`: sequence the body as a message on each named channel.
pub fn publish(ctx: &mut Ctx, conn: &mut Conn, req: &Req) {
    if !may_publish(ctx, conn, req) {
        log::debug!("conn {}:{} from {}: publish refused", ctx.id, conn.id.key, conn.peer);
        return error(
            ctx,
            conn,
            req,
            403,
            "publishing is not allowed from this address (see publish_allow / publish_api_key)",
        );
    }
    let Some(chans) = channels(ctx, conn, req) else {
        return;
    };
    let data = json_data(req.body);
    let mut parts = Vec::with_capacity(chans.len());
    for ch in &chans {
        let (id, _) = ctx.shared.engine.publish(ch, data.clone(), Default::default(), ctx.now_ms);
        ctx.shared.stats.published.fetch_add(1, Ordering::Relaxed);
        parts.push(format!("{{\"id\":{id},\"channel\":\"{ch}\"}}"));
    }
    let out = if parts.len() == 1 {
        parts.pop().unwrap_or_default()
    } else {
        format!("{{\"published\":[{}]}}", parts.join(","))
    };
    json(ctx, conn, req, 200, out.as_bytes(), "application/json");
}

fn callback(ctx: &mut Ctx, conn: &mut Conn, req: &Req) -> Result<Option<String>, ()> {
    match query_param(req.head.query, "callback") {
        None => Ok(None),
        Some(cb) if valid_callback(&cb) => Ok(Some(cb.into_owned())),
        Some(_) => {
            error(ctx, conn, req, 400, "callback must be a JavaScript identifier (letters, digits, _ $ .)");
            Err(())
        }
    }
}

fn body_for(reads: &[(&str, HistoryRead)], limit: usize, walking: bool, cb: Option<&str>) -> Vec<u8> {
    let mut msgs: Vec<&Arc<Message>> = reads.iter().flat_map(|(_, r)| r.messages.iter()).collect();
    msgs.sort_by_key(|m| m.seq);
    // With `since`, the oldest `limit` after it (a client walking forward misses nothing);
    // without, the newest `limit`.
    if walking {
        msgs.truncate(limit);
    } else if msgs.len() > limit {
        msgs.drain(..msgs.len() - limit);
    }
    // Newest first: the classic client takes `since = messages[0].id`.
    msgs.reverse();
    let envs: Vec<&[u8]> = msgs.iter().map(|m| &m.envelope[..]).collect();
    let missed = reads.iter().any(|(_, r)| r.missed);
    let last: Vec<(&str, u64)> = reads.iter().map(|(c, r)| (*c, r.last_id)).collect();
    messages_body(&envs, missed, &last, cb)
}

fn send_messages(ctx: &mut Ctx, conn: &mut Conn, req: &Req, body: &[u8], jsonp: bool) {
    let ct = if jsonp { "application/javascript; charset=utf-8" } else { "application/json" };
    json(ctx, conn, req, 200, body, ct);
}

/// `GET /messages/?cid=CH&since=ID&limit=N`: polling.
pub fn poll(ctx: &mut Ctx, conn: &mut Conn, req: &Req) {
    let Some(chans) = channels(ctx, conn, req) else {
        return;
    };
    let Ok(cb) = callback(ctx, conn, req) else {
        return;
    };
    let since = match since_list(req, chans.len(), false) {
        Ok(s) => s,
        Err(e) => return error(ctx, conn, req, 400, &e),
    };
    let limit = match query_param(req.head.query, "limit").map(|l| l.parse::<usize>()) {
        None => ctx.shared.cfg.history_size.max(1),
        Some(Ok(l)) if l > 0 => l,
        Some(_) => return error(ctx, conn, req, 400, "limit must be a positive integer"),
    };
    let engine = ctx.shared.engine.clone();
    let reads: Vec<(&str, HistoryRead)> =
        chans.iter().zip(&since).map(|(c, s)| (c.as_str(), engine.history(c, *s, limit, ctx.now_ms))).collect();
    let body = body_for(&reads, limit, since.iter().any(|s| s.is_some()), cb.as_deref());
    send_messages(ctx, conn, req, &body, cb.is_some());
}

/// Subscribe `conn` to `chans`, returning what history holds after each `since`.
/// The first of `chans` that is at `max_subscribers_per_channel`, if any.
pub(crate) fn full_channel<'a>(ctx: &Ctx, chans: &'a [String]) -> Option<&'a str> {
    let max = ctx.shared.cfg.max_subscribers_per_channel;
    if max == 0 {
        return None;
    }
    chans.iter().find(|c| ctx.shared.engine.subscribers(c) >= max).map(|c| c.as_str())
}

fn refuse_full(ctx: &mut Ctx, conn: &mut Conn, req: &Req, chans: &[String]) -> bool {
    if let Some(c) = full_channel(ctx, chans) {
        let msg = format!("channel {c} has max_subscribers_per_channel subscribers");
        error(ctx, conn, req, 503, &msg);
        return true;
    }
    false
}

pub(crate) fn subscribe(ctx: &mut Ctx, conn: &mut Conn, chans: &[String], since: &[Option<u64>]) -> Vec<HistoryRead> {
    let engine = ctx.shared.engine.clone();
    let mut reads = Vec::with_capacity(chans.len());
    for (ch, s) in chans.iter().zip(since) {
        let (name, slot, _) = ctx.local.add(ch, conn.id);
        let read = engine.subscribe(ch, ctx.id, *s, ctx.now_ms);
        // Deliveries skip ids at or below `last_id`: start just before what the replay
        // will send, so history and the live feed join with no gap and no duplicate.
        let last_id = match *s {
            Some(s) if s <= read.last_id => s,
            Some(_) => 0, // a `since` from a previous life of the channel: replay it all
            None => read.last_id,
        };
        conn.subs.push(SubRef { channel: name, slot, last_id });
        reads.push(read);
    }
    reads
}

/// Remove every subscription of a connection (on close, or when a long-poll completes).
pub fn leave_subscriptions(ctx: &mut Ctx, conn: &mut Conn) {
    if conn.cf.is_some() {
        crate::centrifugo::client::on_close(ctx, conn);
    }
    for sr in conn.subs.drain(..) {
        let last = ctx.local.remove(&sr.channel, sr.slot);
        ctx.shared.engine.unsubscribe(&sr.channel, ctx.id, last);
    }
    if conn.subs.capacity() > 0 {
        conn.subs = Vec::new();
    }
}

/// The common part of every subscribe endpoint: channels, `since` positions, and the
/// checks (shutdown, full channel). None once an error answer has been queued.
fn subscription_request(
    ctx: &mut Ctx,
    conn: &mut Conn,
    req: &Req,
    sse: bool,
) -> Option<(Vec<String>, Vec<Option<u64>>)> {
    let chans = channels(ctx, conn, req)?;
    let since = match since_list(req, chans.len(), sse) {
        Ok(s) => s,
        Err(e) => {
            error(ctx, conn, req, 400, &e);
            return None;
        }
    };
    if ctx.shutting_down {
        error(ctx, conn, req, 503, "server shutting down");
        return None;
    }
    if refuse_full(ctx, conn, req, &chans) {
        return None;
    }
    Some((chans, since))
}

/// `GET /listen/?cid=CH&since=ID`: answer at once if history has newer messages, else hold
/// the request until a message arrives or the long-poll timeout.
pub fn listen(ctx: &mut Ctx, conn: &mut Conn, req: &Req) {
    let Ok(cb) = callback(ctx, conn, req) else {
        return;
    };
    let Some((chans, since)) = subscription_request(ctx, conn, req, false) else {
        return;
    };
    let reads = subscribe(ctx, conn, &chans, &since);
    if reads.iter().any(|r| !r.messages.is_empty() || r.missed) {
        let named: Vec<(&str, HistoryRead)> = chans.iter().map(|c| c.as_str()).zip(reads).collect();
        let body = body_for(&named, usize::MAX, true, cb.as_deref());
        leave_subscriptions(ctx, conn);
        return send_messages(ctx, conn, req, &body, cb.is_some());
    }
    conn.state = State::LongPoll(Box::new(LongPoll {
        expires_ms: ctx.now_ms + ctx.shared.cfg.longpoll_timeout_ms,
        keep_alive: req.keep_alive(),
        http10: req.head.minor_version == 0,
        cors: cors_origin(ctx, req).map(|s| s.into_boxed_str()),
        callback: cb.map(|s| s.into_boxed_str()),
    }));
}

/// Complete a held long-poll with `body` and return the connection to HTTP.
fn finish_longpoll(ctx: &mut Ctx, conn: &mut Conn, body: Bytes) {
    let State::LongPoll(lp) = std::mem::replace(&mut conn.state, State::Http) else {
        return;
    };
    let ct = if lp.callback.is_some() { "application/javascript; charset=utf-8" } else { "application/json" };
    let mut r = Response::new(200).keep_alive(lp.keep_alive).http10(lp.http10).header("Cache-Control", "no-store");
    if let Some(o) = &lp.cors {
        r = r.header("Access-Control-Allow-Origin", o).header("Vary", "Origin");
    }
    let head_and_body = r.body(ct, &body);
    respond(ctx, conn, head_and_body, lp.keep_alive);
}

/// The long-poll timeout (or shutdown): answer with no messages.
pub fn longpoll_timeout(ctx: &mut Ctx, conn: &mut Conn) {
    let State::LongPoll(lp) = &conn.state else {
        return;
    };
    let last: Vec<(&str, u64)> = conn.subs.iter().map(|s| (&*s.channel, s.last_id)).collect();
    let body = Bytes::from(messages_body(&[], false, &last, lp.callback.as_deref()));
    leave_subscriptions(ctx, conn);
    finish_longpoll(ctx, conn, body);
}

/// `GET /stream/?cid=CH` (iframe) and `GET /sse/?cid=CH`: an endless response.
pub fn stream(ctx: &mut Ctx, conn: &mut Conn, req: &Req, kind: StreamKind) {
    let Some((chans, since)) = subscription_request(ctx, conn, req, kind == StreamKind::Sse) else {
        return;
    };
    let (ct, preamble) = match kind {
        StreamKind::Sse => {
            let mut p = format!(":{}\nretry: {}\n\n", " ".repeat(PADDING), ctx.shared.cfg.sse_retry_ms);
            if chans.len() > 1 {
                p.push_str(": ids are positional, one per channel of cid\n\n");
            }
            ("text/event-stream; charset=utf-8", p)
        }
        StreamKind::Iframe | StreamKind::CfSse | StreamKind::CfHttp => (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>herald stream</title></head><body>\n<!--{}-->\n",
                " ".repeat(PADDING)
            ),
        ),
    };
    // A close-delimited body (RFC 9112 §6.3): the stream ends when the connection does.
    let mut head = format!(
        "HTTP/1.{} 200 OK\r\nServer: herald\r\nContent-Type: {ct}\r\nCache-Control: no-cache, no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n",
        req.head.minor_version.min(1)
    );
    if let Some(o) = cors_origin(ctx, req) {
        head.push_str(&format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&preamble);
    ctx.queue(conn, Bytes::from(head));
    let multi = chans.len() > 1;
    conn.state = State::Stream { kind, next_keepalive_ms: ctx.now_ms + ctx.shared.cfg.stream_keepalive_ms, multi };
    let reads = subscribe(ctx, conn, &chans, &since);
    replay(ctx, conn, &chans, reads);
}

/// Send what history held after the client's `since`, oldest first, in the connection's
/// wire format; tell a client that missed messages.
fn replay(ctx: &mut Ctx, conn: &mut Conn, chans: &[String], reads: Vec<HistoryRead>) {
    let missed: Vec<&str> = chans.iter().zip(&reads).filter(|(_, r)| r.missed).map(|(c, _)| c.as_str()).collect();
    if !missed.is_empty() {
        let note = format!("{{\"missed\":true,\"channels\":{}}}", serde_json::to_string(&missed).unwrap_or_default());
        match &conn.state {
            State::Stream { kind: StreamKind::Sse, .. } => {
                let mut ev = b"event: missed\n".to_vec();
                ev.extend_from_slice(&sse_event(None, note.as_bytes()));
                ctx.queue(conn, Bytes::from(ev));
            }
            State::Stream { kind: StreamKind::Iframe, .. } => {
                ctx.queue(conn, Bytes::from(format!("<script>parent.missed&&parent.missed({note})</script>\n")));
            }
            State::Ws(_) => ctx.queue(conn, codec::frame(Opcode::Text, note.as_bytes())),
            _ => {}
        }
    }
    let mut msgs: Vec<Arc<Message>> = reads.into_iter().flat_map(|r| r.messages).collect();
    msgs.sort_by_key(|m| m.seq);
    for m in msgs {
        let mut cache = WireCache::default();
        deliver_one(ctx, conn, &m, &mut cache, usize::MAX, &mut Vec::new());
    }
}

/// `GET /ws/?cid=CH`: WebSocket subscription delivering envelopes as text frames.
pub fn ws_subscribe(ctx: &mut Ctx, conn: &mut Conn, req: &Req) {
    let Some((chans, since)) = subscription_request(ctx, conn, req, false) else {
        return;
    };
    if !super::ws::upgrade(ctx, conn, req, WsMode::Sub) {
        return;
    }
    let reads = subscribe(ctx, conn, &chans, &since);
    replay(ctx, conn, &chans, reads);
}

/// A message from a `/ws/` subscriber: published to its channels when `ws_client_publish`
/// allows it, else the connection is closed with 1008 (policy violation).
pub fn ws_client_message(ctx: &mut Ctx, conn: &mut Conn, data: &[u8]) {
    if !ctx.shared.cfg.ws_client_publish {
        return super::ws::close(ctx, conn, 1008, "publishing from clients is not enabled");
    }
    let data = json_data(data);
    let chans: Vec<Arc<str>> = conn.subs.iter().map(|s| s.channel.clone()).collect();
    for ch in chans {
        ctx.shared.engine.publish(&ch, data.clone(), Default::default(), ctx.now_ms);
        ctx.shared.stats.published.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keep-alive on a stream (comment for SSE, whitespace comment for the iframe).
pub fn on_keepalive(ctx: &mut Ctx, conn: &mut Conn) {
    let State::Stream { kind, next_keepalive_ms, .. } = &mut conn.state else {
        return;
    };
    *next_keepalive_ms = ctx.now_ms + ctx.shared.cfg.stream_keepalive_ms;
    let b: &'static [u8] = match kind {
        StreamKind::Sse | StreamKind::CfSse => b": keepalive\n\n",
        StreamKind::CfHttp => b"{}\n",
        StreamKind::Iframe => b"<!-- keepalive -->\n",
    };
    ctx.queue(conn, Bytes::from_static(b));
    check_backpressure(ctx, conn);
}

/// Note a connection whose queued output passed `max_out_queue`; the worker applies the
/// backpressure policy (`Worker::relieve`) before the loop turn ends.
pub fn check_backpressure(ctx: &mut Ctx, conn: &mut Conn) {
    if conn.out.len() > ctx.shared.cfg.max_out_queue && !conn.dead {
        ctx.pressure.push(conn.id.key as usize);
    }
}

/// Deliver one message to one subscriber connection in its wire format. `slot` identifies
/// the membership (usize::MAX: match by channel name).
fn deliver_one(
    ctx: &mut Ctx,
    conn: &mut Conn,
    m: &Message,
    cache: &mut WireCache,
    slot: usize,
    done: &mut Vec<ConnId>,
) -> bool {
    let Some(sr) = conn.subs.iter_mut().find(|s| (slot == usize::MAX || s.slot == slot) && *s.channel == *m.channel)
    else {
        return false;
    };
    if m.id == 0 {
        // Not sequenced (Centrifugo skip_history): delivered as is, never deduplicated.
    } else if m.id <= sr.last_id {
        return false; // already delivered (history replay raced the live feed)
    } else {
        sr.last_id = m.id;
    }
    match &conn.state {
        State::Ws(w) if w.mode == WsMode::Centrifugo => ctx.queue(conn, cache.cf(m)),
        State::Ws(w) if w.mode == WsMode::CfUni => ctx.queue(conn, cache.cf_uni_ws(m)),
        State::Stream { kind: StreamKind::CfSse, .. } => ctx.queue(conn, cache.cf_uni_sse(m)),
        State::Stream { kind: StreamKind::CfHttp, .. } => {
            ctx.queue(conn, cache.cf_uni(m));
            ctx.queue(conn, Bytes::from_static(b"\n"));
        }
        State::Ws(_) => ctx.queue(conn, cache.ws(m)),
        State::Stream { kind: StreamKind::Iframe, .. } => ctx.queue(conn, cache.iframe(m)),
        State::Stream { kind: StreamKind::Sse, multi: false, .. } => ctx.queue(conn, cache.sse(m)),
        State::Stream { kind: StreamKind::Sse, multi: true, .. } => {
            // Several channels: the event id lists each channel's position so that
            // Last-Event-ID resumes all of them; only this short line is per connection.
            let full = cache.sse(m);
            let skip = full.iter().position(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0);
            ctx.queue(conn, full.slice(skip..full.len() - 1));
            let ids: Vec<String> = conn.subs.iter().map(|s| s.last_id.to_string()).collect();
            ctx.queue(conn, Bytes::from(format!("id: {}\n\n", ids.join(","))));
        }
        State::LongPoll(lp) => {
            let body = if lp.callback.is_none() && conn.subs.len() == 1 && m.id > 0 {
                cache.longpoll(m)
            } else {
                // `last_id` is the connection's position, which an unsequenced message
                // (id 0) does not move.
                let last: Vec<(&str, u64)> = conn.subs.iter().map(|s| (&*s.channel, s.last_id)).collect();
                Bytes::from(messages_body(&[&m.envelope], false, &last, lp.callback.as_deref()))
            };
            finish_longpoll(ctx, conn, body);
            done.push(conn.id);
        }
        State::Http | State::Closing { .. } => return false,
    }
    check_backpressure(ctx, conn);
    true
}

/// Fan a message out to this worker's subscribers of its channel.
pub fn deliver(ctx: &mut Ctx, conns: &mut Slab<Conn>, m: &Message, cache: &mut WireCache, done: &mut Vec<ConnId>) {
    let Some(set) = ctx.local.take(&m.channel) else {
        return;
    };
    let mut n = 0u64;
    for (slot, id) in set.iter() {
        let Some(conn) = conns.get_mut(id.key as usize) else {
            continue;
        };
        if conn.id.gen != id.gen || conn.dead {
            continue;
        }
        if deliver_one(ctx, conn, m, cache, slot, done) {
            n += 1;
        }
    }
    ctx.local.put_back(&m.channel, set);
    ctx.shared.stats.delivered.fetch_add(n, Ordering::Relaxed);
    // Completed long-polls leave their channels now that the set is back in place.
    for id in done.iter() {
        if let Some(conn) = conns.get_mut(id.key as usize).filter(|c| c.id.gen == id.gen) {
            leave_subscriptions(ctx, conn);
        }
    }
}
