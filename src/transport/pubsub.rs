//! The public contract of Herald (README.md "Endpoints"): publish, polling, Comet long-polling,
//! the iframe stream, Server-Sent Events and WebSocket subscriptions, and the delivery of a
//! published message to each of them.
//!
//! Owns: request handling for those endpoints and the per-transport wire bytes. Called by the
//! router and by the worker's inbox drain. A message is encoded once per worker per wire
//! format ([`WireCache`]) and the same `Bytes` are queued to every subscriber. Must never
//! read or write a socket, nor block.

use super::access::cors_origin;
use super::fanout::{full_channel, leave_subscriptions, subscribe};
use super::http::{error, error_to, json_to, respond, Req, ReqInfo};
use super::session::{LongPoll, State, StreamKind, WsMode};
use super::{Env, Session};
use crate::hub::envelope::{json_data, messages_body, sse_event, valid_callback};
use crate::hub::{parse_channels, HistoryRead, Message, Op};
use crate::proto::http::{query_param, Response};
use crate::proto::ws::{self as codec, Opcode};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The demo chat page served at `/`.
pub const DEMO_PAGE: &str = include_str!("demo.html");

/// Padding sent first on streams: old browsers buffer the first KiB or two before they
/// run anything (IE, old Safari), and some proxies buffer small responses.
const PADDING: usize = 2048;

fn channels(env: &mut Env, conn: &mut Session, req: &Req) -> Option<Vec<String>> {
    let cid = query_param(req.head.query, "cid").or_else(|| query_param(req.head.query, "channel"));
    match parse_channels(cid.as_deref().unwrap_or(""), env.shared.cfg.max_channels_per_conn) {
        Ok(c) => Some(c),
        Err(e) => {
            error(env, conn, req, 400, &e.to_string());
            None
        }
    }
}

/// The channels of a read request (`cid`), each allowed to an anonymous reader by the one
/// authorization decision (`authz`); else a 403 naming the channel and the rule is queued.
fn readable_channels(env: &mut Env, conn: &mut Session, req: &Req) -> Option<Vec<String>> {
    let chans = channels(env, conn, req)?;
    for c in &chans {
        if let Err(denied) = super::authz::subscribe(&env.shared.cfg, c, super::authz::Who::Anonymous) {
            log::debug!("conn {}:{} from {}: read of {c} refused: {denied}", env.id, conn.id.key, conn.peer);
            error(env, conn, req, 403, &format!("channel {c}: {denied}"));
            return None;
        }
    }
    Some(chans)
}

/// `since` for each channel: `since=ID` applies to all; `since=5,7` is positional. SSE's
/// `Last-Event-ID` (header, or `last_event_id` in the query for polyfills) has the same
/// form. Returns Err with a message on a malformed value.
fn since_list(req: &Req, n: usize, sse: bool) -> Result<Vec<Option<u64>>, crate::hub::BadSince> {
    crate::hub::parse_since(req.head.query, req.head.header_str("Last-Event-ID"), n, sse)
}

/// `POST /publish/?cid=CH`: sequence the body as a message on each named channel.
pub fn publish(env: &mut Env, conn: &mut Session, req: &Req) {
    // The status page's test form publishes with its admin login token.
    if !(super::access::may_publish(env, conn, req) || super::ops::admin_authorized(env, req)) {
        log::debug!("conn {}:{} from {}: publish refused", env.id, conn.id.key, conn.peer);
        return error(
            env,
            conn,
            req,
            403,
            "publishing is not allowed from this address (see publish_allow / publish_api_key)",
        );
    }
    let Some(chans) = channels(env, conn, req) else {
        return;
    };
    let data = json_data(req.body);
    let info = ReqInfo::of(env, req);
    let ops = chans
        .iter()
        .map(|ch| Op::Publish { channel: ch.clone(), data: data.clone(), meta: Default::default() })
        .collect();
    env.engine(conn, ops, move |env, conn, done| {
        let mut parts = Vec::with_capacity(chans.len());
        for (ch, d) in chans.iter().zip(done) {
            match d.published() {
                Ok((id, _)) => {
                    env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
                    parts.push(format!("{{\"id\":{id},\"channel\":\"{ch}\"}}"));
                }
                Err(e) => {
                    // Channels before this one were published: say which.
                    log::warn!("publish to {ch}: {e}");
                    let msg = format!("publish to {ch} failed: {e}; published before it: [{}]", parts.join(","));
                    return error_to(env, conn, &info, 503, &msg);
                }
            }
        }
        let out = if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            format!("{{\"published\":[{}]}}", parts.join(","))
        };
        json_to(env, conn, &info, 200, out.as_bytes(), "application/json");
    });
}

fn callback(env: &mut Env, conn: &mut Session, req: &Req) -> Result<Option<String>, ()> {
    match query_param(req.head.query, "callback") {
        None => Ok(None),
        Some(cb) if valid_callback(&cb) => Ok(Some(cb.into_owned())),
        Some(_) => {
            error(
                env,
                conn,
                req,
                400,
                "callback must be a function name or object.method (letters, digits, _ $; at most 64 characters; \
                 not a built-in such as constructor, __proto__ or eval)",
            );
            Err(())
        }
    }
}

/// A polling or long-poll answer: at most `limit` messages and at most `max_bytes` of
/// envelopes (at least one message), so one reply never outgrows the connection's
/// high-water mark by more than one message. With `since` (walking) the oldest that fit
/// are kept, so a client continuing from `messages[0].id` misses nothing.
fn body_for(reads: &[(&str, HistoryRead)], limit: usize, walking: bool, cb: Option<&str>, max_bytes: usize) -> Vec<u8> {
    let mut msgs: Vec<&Arc<Message>> = reads.iter().flat_map(|(_, r)| r.messages.iter()).collect();
    msgs.sort_by_key(|m| m.seq);
    // With `since`, the oldest `limit` after it (a client walking forward misses nothing);
    // without, the newest `limit`.
    if walking {
        msgs.truncate(limit);
    } else if msgs.len() > limit {
        msgs.drain(..msgs.len() - limit);
    }
    let fit = |it: &mut dyn Iterator<Item = &&Arc<Message>>| {
        let mut total = 0usize;
        it.take_while(|m| {
            total += m.envelope.len() + 1;
            total <= max_bytes
        })
        .count()
        .max(1)
    };
    if walking {
        let n = fit(&mut msgs.iter());
        msgs.truncate(n);
    } else {
        let n = fit(&mut msgs.iter().rev());
        msgs.drain(..msgs.len().saturating_sub(n));
    }
    // Newest first: the classic client takes `since = messages[0].id`.
    msgs.reverse();
    let envs: Vec<&[u8]> = msgs.iter().map(|m| &m.envelope[..]).collect();
    let missed = reads.iter().any(|(_, r)| r.missed);
    let last: Vec<(&str, u64)> = reads.iter().map(|(c, r)| (*c, r.last_id)).collect();
    messages_body(&envs, missed, &last, cb)
}

fn send_messages(env: &mut Env, conn: &mut Session, info: &ReqInfo, body: &[u8], jsonp: bool) {
    let ct = if jsonp { "application/javascript; charset=utf-8" } else { "application/json" };
    json_to(env, conn, info, 200, body, ct);
}

/// `GET /messages/?cid=CH&since=ID&limit=N`: polling.
pub fn poll(env: &mut Env, conn: &mut Session, req: &Req) {
    let Some(chans) = readable_channels(env, conn, req) else {
        return;
    };
    let Ok(cb) = callback(env, conn, req) else {
        return;
    };
    let since = match since_list(req, chans.len(), false) {
        Ok(s) => s,
        Err(e) => return error(env, conn, req, 400, &e.to_string()),
    };
    let limit = match query_param(req.head.query, "limit").map(|l| l.parse::<usize>()) {
        None => env.shared.cfg.history_size.max(1),
        Some(Ok(l)) if l > 0 => l,
        Some(_) => return error(env, conn, req, 400, "limit must be a positive integer"),
    };
    let info = ReqInfo::of(env, req);
    let ops = chans.iter().zip(&since).map(|(c, s)| Op::History { channel: c.clone(), since: *s, limit }).collect();
    env.engine(conn, ops, move |env, conn, done| {
        let mut reads: Vec<(&str, HistoryRead)> = Vec::with_capacity(chans.len());
        for (c, d) in chans.iter().zip(done) {
            match d.history() {
                Ok(r) => reads.push((c.as_str(), r)),
                Err(e) => return error_to(env, conn, &info, 503, &format!("history of {c}: {e}")),
            }
        }
        let body = body_for(&reads, limit, since.iter().any(|s| s.is_some()), cb.as_deref(), env.high_water);
        send_messages(env, conn, &info, &body, cb.is_some());
    });
}

fn refuse_full(env: &mut Env, conn: &mut Session, req: &Req, chans: &[String]) -> bool {
    if let Some(c) = full_channel(env, chans) {
        let msg = format!("channel {c} has max_subscribers_per_channel subscribers");
        error(env, conn, req, 503, &msg);
        return true;
    }
    false
}

/// The common part of every subscribe endpoint: channels, `since` positions, and the
/// checks (shutdown, full channel). None once an error answer has been queued.
fn subscription_request(
    env: &mut Env,
    conn: &mut Session,
    req: &Req,
    sse: bool,
) -> Option<(Vec<String>, Vec<Option<u64>>)> {
    let chans = readable_channels(env, conn, req)?;
    let since = match since_list(req, chans.len(), sse) {
        Ok(s) => s,
        Err(e) => {
            error(env, conn, req, 400, &e.to_string());
            return None;
        }
    };
    if env.shutting_down {
        error(env, conn, req, 503, "server shutting down");
        return None;
    }
    if refuse_full(env, conn, req, &chans) {
        return None;
    }
    Some((chans, since))
}

/// `GET /listen/?cid=CH&since=ID`: answer at once if history has newer messages, else hold
/// the request until a message arrives or the long-poll timeout.
pub fn listen(env: &mut Env, conn: &mut Session, req: &Req) {
    let Ok(cb) = callback(env, conn, req) else {
        return;
    };
    let Some((chans, since)) = subscription_request(env, conn, req, false) else {
        return;
    };
    let info = ReqInfo::of(env, req);
    let names = chans.clone();
    subscribe(env, conn, &chans, &since, move |env, conn, reads| {
        let reads = match reads {
            Ok(r) => r,
            Err(e) => {
                leave_subscriptions(env, conn);
                return error_to(env, conn, &info, 503, &format!("subscribe: {e}"));
            }
        };
        if reads.iter().any(|r| !r.messages.is_empty() || r.missed) {
            let named: Vec<(&str, HistoryRead)> = names.iter().map(|c| c.as_str()).zip(reads).collect();
            let body = body_for(&named, usize::MAX, true, cb.as_deref(), env.high_water);
            leave_subscriptions(env, conn);
            return send_messages(env, conn, &info, &body, cb.is_some());
        }
        conn.state = State::LongPoll(Box::new(LongPoll {
            expires_ms: env.now_ms + env.shared.cfg.longpoll_timeout_ms,
            keep_alive: info.keep_alive,
            http10: info.http10,
            cors: info.cors.map(|s| s.into_boxed_str()),
            callback: cb.map(|s| s.into_boxed_str()),
        }));
    });
}

/// Complete a held long-poll with `body` and return the connection to HTTP.
pub(crate) fn finish_longpoll(env: &mut Env, conn: &mut Session, body: Bytes) {
    let State::LongPoll(lp) = std::mem::replace(&mut conn.state, State::Http(None)) else {
        return;
    };
    let ct = if lp.callback.is_some() { "application/javascript; charset=utf-8" } else { "application/json" };
    let mut r = Response::new(200).keep_alive(lp.keep_alive).http10(lp.http10).header("Cache-Control", "no-store");
    if let Some(o) = &lp.cors {
        r = r.header("Access-Control-Allow-Origin", o).header("Vary", "Origin");
    }
    let head_and_body = r.body(ct, &body);
    respond(env, conn, head_and_body, lp.keep_alive);
}

/// The long-poll timeout (or shutdown): answer with no messages.
pub fn longpoll_timeout(env: &mut Env, conn: &mut Session) {
    let State::LongPoll(lp) = &conn.state else {
        return;
    };
    let last: Vec<(&str, u64)> = conn.subs.iter().map(|s| (&*s.channel, s.last_id)).collect();
    let body = Bytes::from(messages_body(&[], false, &last, lp.callback.as_deref()));
    leave_subscriptions(env, conn);
    finish_longpoll(env, conn, body);
}

/// The head of an endless response: a close-delimited body (RFC 9112 §6.3), so the
/// stream ends when the connection does; never cached or buffered by proxies.
pub fn stream_head(env: &Env, req: &Req, content_type: &str) -> Bytes {
    let mut r = Response::new(200)
        .http10(req.head.minor_version == 0)
        .header("Cache-Control", "no-cache, no-store")
        .header("X-Accel-Buffering", "no");
    if let Some(o) = cors_origin(env, req) {
        r = r.header("Access-Control-Allow-Origin", &o).header("Vary", "Origin");
    }
    r.close_delimited_start(content_type)
}

/// `GET /stream/?cid=CH` (iframe) and `GET /sse/?cid=CH`: an endless response.
pub fn stream(env: &mut Env, conn: &mut Session, req: &Req, kind: StreamKind) {
    let Some((chans, since)) = subscription_request(env, conn, req, kind == StreamKind::Sse) else {
        return;
    };
    super::fanout::hold_output(env, conn);
    let (ct, preamble) = match kind {
        StreamKind::Sse => {
            let mut p = format!(":{}\nretry: {}\n\n", " ".repeat(PADDING), env.shared.cfg.sse_retry_ms);
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
    env.queue(conn, stream_head(env, req, ct));
    env.queue(conn, Bytes::from(preamble));
    let multi = chans.len() > 1;
    conn.state = State::Stream { kind, next_keepalive_ms: env.now_ms + env.shared.cfg.stream_keepalive_ms, multi };
    subscribe(env, conn, &chans.clone(), &since, move |env, conn, reads| match reads {
        Ok(reads) => replay(env, conn, &chans, reads),
        Err(e) => {
            log::warn!("conn {}:{}: subscribe: {e}", env.id, conn.id.key);
            if let State::Stream { kind: StreamKind::Sse, .. } = conn.state {
                let ev = format!("event: error\ndata: {}\n\n", serde_json::Value::from(format!("subscribe: {e}")));
                env.queue(conn, Bytes::from(ev));
            }
            env.close_after_flush(conn);
        }
    });
}

/// Send what history held after the client's `since`, oldest first, in the connection's
/// wire format; tell a client that missed messages.
fn replay(env: &mut Env, conn: &mut Session, chans: &[String], reads: Vec<HistoryRead>) {
    let missed: Vec<&str> = chans.iter().zip(&reads).filter(|(_, r)| r.missed).map(|(c, _)| c.as_str()).collect();
    missed_notice(env, conn, &missed);
    let mut msgs: Vec<Arc<Message>> = reads.into_iter().flat_map(|r| r.messages).collect();
    msgs.sort_by_key(|m| m.seq);
    // Paced: queued as the socket drains (`fanout::refill`), never all at once.
    super::fanout::start_replay(env, conn, msgs);
}

/// Tell a subscriber that it missed messages of `missed` channels: an SSE `missed` event,
/// a `parent.missed(...)` call in the iframe, a `{"missed":true,...}` WebSocket message; a
/// held long-poll is answered with `missed` at once.
pub(crate) fn missed_notice(env: &mut Env, conn: &mut Session, missed: &[&str]) {
    if missed.is_empty() {
        return;
    }
    let note = format!("{{\"missed\":true,\"channels\":{}}}", serde_json::to_string(&missed).unwrap_or_default());
    match &conn.state {
        State::Stream { kind: StreamKind::Sse, .. } => {
            let mut ev = b"event: missed\n".to_vec();
            ev.extend_from_slice(&sse_event(None, note.as_bytes()));
            env.queue(conn, Bytes::from(ev));
        }
        State::Stream { kind: StreamKind::Iframe, .. } => {
            env.queue(conn, Bytes::from(format!("<script>parent.missed&&parent.missed({note})</script>\n")));
        }
        State::Ws(_) => env.queue(conn, codec::frame(Opcode::Text, note.as_bytes())),
        State::LongPoll(lp) => {
            let last: Vec<(&str, u64)> = conn.subs.iter().map(|s| (&*s.channel, s.last_id)).collect();
            let body = Bytes::from(messages_body(&[], true, &last, lp.callback.as_deref()));
            leave_subscriptions(env, conn);
            finish_longpoll(env, conn, body);
        }
        _ => {}
    }
}

/// `GET /ws/?cid=CH`: WebSocket subscription delivering envelopes as text frames.
pub fn ws_subscribe(env: &mut Env, conn: &mut Session, req: &Req) {
    let Some((chans, since)) = subscription_request(env, conn, req, false) else {
        return;
    };
    super::fanout::hold_output(env, conn);
    if !super::ws::upgrade(env, conn, req, WsMode::Sub) {
        return super::fanout::release_output(env, conn);
    }
    subscribe(env, conn, &chans.clone(), &since, move |env, conn, reads| match reads {
        Ok(reads) => replay(env, conn, &chans, reads),
        Err(e) => {
            log::warn!("conn {}:{}: subscribe: {e}", env.id, conn.id.key);
            // 1011: the server met a condition that kept it from fulfilling the request.
            super::ws::close(env, conn, 1011, "subscribe failed: engine unavailable");
        }
    });
}

/// A message from a `/ws/` subscriber: published to its channels when `ws_client_publish`
/// allows it, else the connection is closed with 1008 (policy violation).
pub fn ws_client_message(env: &mut Env, conn: &mut Session, data: &[u8]) {
    if !env.shared.cfg.ws_client_publish {
        return super::ws::close(env, conn, 1008, "publishing from clients is not enabled");
    }
    let data = json_data(data);
    let ops = conn
        .subs
        .iter()
        .map(|s| Op::Publish { channel: s.channel.to_string(), data: data.clone(), meta: Default::default() })
        .collect();
    env.engine(conn, ops, |env, conn, done| {
        for d in done {
            match d.published() {
                Ok(_) => {
                    env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    log::warn!("conn {}:{}: client publish: {e}", env.id, conn.id.key);
                    return super::ws::close(env, conn, 1011, "publish failed: engine unavailable");
                }
            }
        }
    });
}

/// Keep-alive on a stream (comment for SSE, whitespace comment for the iframe).
pub fn on_keepalive(env: &mut Env, conn: &mut Session) {
    let State::Stream { kind, next_keepalive_ms, .. } = &mut conn.state else {
        return;
    };
    *next_keepalive_ms = env.now_ms + env.shared.cfg.stream_keepalive_ms;
    let b: &'static [u8] = match kind {
        StreamKind::Sse | StreamKind::CfSse => b": keepalive\n\n",
        StreamKind::CfHttp => b"{}\n",
        StreamKind::Iframe => b"<!-- keepalive -->\n",
    };
    env.queue(conn, Bytes::from_static(b));
}
