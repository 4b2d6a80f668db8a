//! HTTP/1.1 on a connection: parse one request at a time (keep-alive, pipelining), route it,
//! queue the response.
//!
//! Owns: the route table and the plain responses (`/health`, errors). Called by
//! `transport::process` in the `Http` state. A request's head and body must both be present
//! before it is routed; limits are enforced by the parser (431/414/413) before anything is
//! buffered past them. Must never read or write the socket.

use super::session::{ChunkedBody, State, WsMode};
use super::{pubsub, ws};
use super::{Env, Session};
use crate::proto::http::{error_response, parse_head, BodyKind, ChunkedDecoder, Head, Method, Response};
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// A request as routed: its head plus its (decoded) body.
pub struct Req<'a, 'b> {
    /// The parsed request head, borrowing the bytes it was parsed from.
    pub head: &'a Head<'b>,
    /// The whole body, de-chunked if it was sent chunked; empty when the request had none.
    /// Never longer than `max_body` bytes (the parser answers 413 first).
    pub body: &'a [u8],
}

impl Req<'_, '_> {
    /// Whether the response may keep the connection open.
    pub fn keep_alive(&self) -> bool {
        self.head.keep_alive
    }
}

/// Parse and handle at most one request from `buf`; returns the bytes consumed (0 while the
/// request head or a Content-Length body is incomplete). A chunked body is decoded as it
/// arrives: its raw bytes are consumed at once (linear work, no re-decoding) and the head
/// is kept beside the decoded body until the last chunk.
pub fn on_data(env: &mut Env, conn: &mut Session, buf: &mut [u8]) -> usize {
    if let State::Http(Some(_)) = conn.state {
        return chunked_more(env, conn, buf);
    }
    if conn.req_started_ms().is_none() {
        conn.set_req_started(Some(env.now_ms));
    }
    let head = match parse_head(buf, &env.http_limits) {
        Ok(Some(h)) => h,
        Ok(None) => return 0,
        Err(e) => {
            env.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
            log::debug!("conn {}:{} from {}: bad request: {}", env.id, conn.id.key, conn.peer, e.message());
            respond(env, conn, error_response(e.status(), e.message(), false), false);
            return buf.len();
        }
    };
    let head_len = head.head_len;
    match head.body {
        BodyKind::None => {
            conn.set_req_started(None);
            route(env, conn, &Req { head: &head, body: &[] });
            head_len
        }
        BodyKind::Length(n) => {
            if buf.len() - head_len < n {
                return 0;
            }
            conn.set_req_started(None);
            route(env, conn, &Req { head: &head, body: &buf[head_len..head_len + n] });
            head_len + n
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(env.http_limits.max_body);
            let mut data = Vec::new();
            match dec.feed(&buf[head_len..], &mut data) {
                Ok((n, true)) => {
                    conn.set_req_started(None);
                    route(env, conn, &Req { head: &head, body: &data });
                    head_len + n
                }
                Ok((_, false)) => {
                    // The whole rest of `buf` was fed: keep the decoder, not the raw bytes.
                    let saved = buf[..head_len].to_vec();
                    conn.state = State::Http(Some(Box::new(ChunkedBody { decoder: dec, data, head: saved })));
                    buf.len()
                }
                Err(e) => {
                    env.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
                    respond(env, conn, error_response(e.status(), e.message(), false), false);
                    buf.len()
                }
            }
        }
    }
}

/// More bytes of a chunked body whose head arrived earlier.
fn chunked_more(env: &mut Env, conn: &mut Session, buf: &mut [u8]) -> usize {
    let State::Http(Some(cb)) = &mut conn.state else { return 0 };
    match cb.decoder.feed(buf, &mut cb.data) {
        Ok((n, false)) => n.max(buf.len()),
        Ok((n, true)) => {
            let State::Http(Some(cb)) = std::mem::replace(&mut conn.state, State::Http(None)) else { return n };
            conn.set_req_started(None);
            match parse_head(&cb.head, &env.http_limits) {
                Ok(Some(head)) => route(env, conn, &Req { head: &head, body: &cb.data }),
                // The same bytes parsed before: cannot happen, but never panic on input.
                _ => respond(env, conn, error_response(400, "bad request", false), false),
            }
            n
        }
        Err(e) => {
            conn.state = State::Http(None);
            env.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
            respond(env, conn, error_response(e.status(), e.message(), false), false);
            buf.len()
        }
    }
}

/// Queue a complete response. Without keep-alive the connection closes once it is sent,
/// and any further pipelined input is discarded.
pub fn respond(env: &mut Env, conn: &mut Session, resp: Bytes, keep_alive: bool) {
    env.queue(conn, resp);
    conn.last_active_ms = env.now_ms;
    if !keep_alive || env.shutting_down {
        env.close_after_flush(conn);
    }
}

/// What an answer needs of its request, owned: the answer of a request that waits for the
/// engine is written after the request's bytes are gone.
#[derive(Clone, Debug)]
pub struct ReqInfo {
    /// The client asked to keep the connection open.
    pub keep_alive: bool,
    /// HTTP/1.0.
    pub http10: bool,
    /// `HEAD`: the answer has no body.
    pub head_only: bool,
    /// `Access-Control-Allow-Origin` for the answer.
    pub cors: Option<String>,
}

impl ReqInfo {
    /// The answer-relevant part of `req`.
    pub fn of(env: &Env, req: &Req) -> ReqInfo {
        ReqInfo {
            keep_alive: req.keep_alive(),
            http10: req.head.minor_version == 0,
            head_only: req.head.method == Method::Head,
            cors: super::access::cors_origin(env, req),
        }
    }
}

/// A JSON error answer on an otherwise healthy connection.
pub fn error(env: &mut Env, conn: &mut Session, req: &Req, status: u16, msg: &str) {
    let keep = req.keep_alive() && req.head.minor_version >= 1;
    error_keep(env, conn, keep, status, msg);
}

/// [`error`] for a request known by its [`ReqInfo`].
pub fn error_to(env: &mut Env, conn: &mut Session, info: &ReqInfo, status: u16, msg: &str) {
    error_keep(env, conn, info.keep_alive && !info.http10, status, msg);
}

fn error_keep(env: &mut Env, conn: &mut Session, keep: bool, status: u16, msg: &str) {
    env.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
    // error_response speaks HTTP/1.1; an HTTP/1.0 client is answered and closed.
    let keep = keep && status < 500;
    let r = error_response(status, msg, keep);
    respond(env, conn, r, keep);
}

/// A JSON answer with CORS headers when the request has an allowed Origin.
pub fn json(env: &mut Env, conn: &mut Session, req: &Req, status: u16, body: &[u8], content_type: &str) {
    let info = ReqInfo::of(env, req);
    json_to(env, conn, &info, status, body, content_type);
}

/// [`json`] for a request known by its [`ReqInfo`].
pub fn json_to(env: &mut Env, conn: &mut Session, info: &ReqInfo, status: u16, body: &[u8], content_type: &str) {
    let keep = info.keep_alive;
    let mut r = Response::new(status).keep_alive(keep).http10(info.http10).header("Cache-Control", "no-store");
    if let Some(o) = &info.cors {
        r = r.header("Access-Control-Allow-Origin", o).header("Vary", "Origin");
    }
    let r = r.head_only(info.head_only).body(content_type, body);
    respond(env, conn, r, keep);
}

fn allow(env: &mut Env, conn: &mut Session, req: &Req, methods: &[Method], allowed: &str) -> bool {
    if methods.contains(&req.head.method) {
        return true;
    }
    if req.head.method == Method::Options {
        super::access::preflight(env, conn, req, allowed);
        return false;
    }
    env.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
    let keep = req.keep_alive();
    let msg = format!("{{\"error\":\"method {} not allowed; use {}\"}}", req.head.method_str.escape_default(), allowed);
    let r = Response::new(405).keep_alive(keep).header("Allow", allowed).body("application/json", msg.as_bytes());
    respond(env, conn, r, keep);
    false
}

/// The route table.
fn route(env: &mut Env, conn: &mut Session, req: &Req) {
    let path = req.head.path;
    let path = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    log::trace!("conn {}:{}: {} {}", env.id, conn.id.key, req.head.method_str, path);
    use Method::*;
    match path {
        "/health" => {
            if allow(env, conn, req, &[Get, Head], "GET, HEAD") {
                json(env, conn, req, 200, b"{\"status\":\"ok\"}", "application/json");
            }
        }
        "/metrics" => {
            if allow(env, conn, req, &[Get], "GET") {
                super::ops::metrics(env, conn, req);
            }
        }
        "/stats" => {
            if allow(env, conn, req, &[Get], "GET") {
                super::ops::stats(env, conn, req);
            }
        }
        "/status" => {
            if allow(env, conn, req, &[Get, Head], "GET, HEAD") {
                super::ops::status_page(env, conn, req);
            }
        }
        "/status.json" => {
            if allow(env, conn, req, &[Get], "GET") {
                super::ops::status_json(env, conn, req);
            }
        }
        "/status/auth" => {
            if allow(env, conn, req, &[Post], "POST") {
                super::ops::status_auth(env, conn, req);
            }
        }
        "/echo" => {
            if allow(env, conn, req, &[Get], "GET") {
                ws::upgrade(env, conn, req, crate::transport::session::WsMode::Echo);
            }
        }
        "/" | "/index.html" => {
            if allow(env, conn, req, &[Get, Head], "GET, HEAD") {
                let keep = req.keep_alive();
                let r = Response::new(200)
                    .keep_alive(keep)
                    .http10(req.head.minor_version == 0)
                    .header("Cache-Control", "no-cache")
                    .head_only(req.head.method == Head)
                    .body("text/html; charset=utf-8", pubsub::DEMO_PAGE.as_bytes());
                respond(env, conn, r, keep);
            }
        }
        "/publish" | "/pub" => {
            if allow(env, conn, req, &[Post, Put], "POST, PUT") {
                pubsub::publish(env, conn, req);
            }
        }
        "/messages" => {
            if allow(env, conn, req, &[Get, Head], "GET, HEAD") {
                pubsub::poll(env, conn, req);
            }
        }
        "/listen" => {
            if allow(env, conn, req, &[Get], "GET") {
                pubsub::listen(env, conn, req);
            }
        }
        "/stream" => {
            if allow(env, conn, req, &[Get], "GET") {
                pubsub::stream(env, conn, req, crate::transport::session::StreamKind::Iframe);
            }
        }
        "/sse" => {
            if allow(env, conn, req, &[Get], "GET") {
                pubsub::stream(env, conn, req, crate::transport::session::StreamKind::Sse);
            }
        }
        "/ws" => {
            if allow(env, conn, req, &[Get], "GET") {
                pubsub::ws_subscribe(env, conn, req);
            }
        }
        "/connection/websocket" => {
            if allow(env, conn, req, &[Get], "GET") && ws::upgrade(env, conn, req, WsMode::Centrifugo) {
                let protobuf = ws::cf_wants_protobuf(req);
                crate::transport::centrifugo::client::on_upgrade(env, conn, false, protobuf, req);
            }
        }
        "/connection/uni_websocket" => {
            if allow(env, conn, req, &[Get], "GET") && ws::upgrade(env, conn, req, WsMode::CfUni) {
                crate::transport::centrifugo::client::on_upgrade(env, conn, true, false, req);
                crate::transport::centrifugo::uni::connect_from_query(env, conn, req);
            }
        }
        "/connection/uni_sse" => {
            if allow(env, conn, req, &[Get, Post], "GET, POST") {
                crate::transport::centrifugo::uni::stream(env, conn, req, crate::transport::session::StreamKind::CfSse);
            }
        }
        "/connection/http_stream" => {
            if allow(env, conn, req, &[Post], "POST") {
                crate::transport::centrifugo::emulation::open(
                    env,
                    conn,
                    req,
                    crate::transport::session::StreamKind::CfHttp,
                );
            }
        }
        "/connection/sse" => {
            if allow(env, conn, req, &[Get], "GET") {
                crate::transport::centrifugo::emulation::open(
                    env,
                    conn,
                    req,
                    crate::transport::session::StreamKind::CfSse,
                );
            }
        }
        "/emulation" => {
            if allow(env, conn, req, &[Post], "POST") {
                crate::transport::centrifugo::emulation::request(env, conn, req);
            }
        }
        "/connection/uni_http_stream" => {
            if allow(env, conn, req, &[Post, Get], "POST, GET") {
                crate::transport::centrifugo::uni::stream(
                    env,
                    conn,
                    req,
                    crate::transport::session::StreamKind::CfHttp,
                );
            }
        }
        p if p == "/api" || p.starts_with("/api/") => {
            if allow(env, conn, req, &[Post], "POST") {
                let method = p.strip_prefix("/api").unwrap_or("").trim_start_matches('/');
                crate::transport::centrifugo::api::handle(env, conn, req, method);
            }
        }
        _ => error(env, conn, req, 404, "no such endpoint"),
    }
}
