//! HTTP/1.1 on a connection: parse one request at a time (keep-alive, pipelining), route it,
//! queue the response.
//!
//! Owns: the route table and the plain responses (`/health`, errors). Called by
//! `transport::process` in the `Http` state. A request's head and body must both be present
//! before it is routed; limits are enforced by the parser (431/414/413) before anything is
//! buffered past them. Must never read or write the socket.

use super::{pubsub, ws};
use crate::proto::http::{error_response, parse_head, BodyKind, ChunkedDecoder, Head, Method, Response};
use crate::reactor::conn::{Conn, WsMode};
use crate::reactor::worker::Ctx;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// A request as routed: its head plus its (decoded) body.
pub struct Req<'a, 'b> {
    pub head: &'a Head<'b>,
    pub body: &'a [u8],
}

impl Req<'_, '_> {
    /// Whether the response may keep the connection open.
    pub fn keep_alive(&self) -> bool {
        self.head.keep_alive
    }
}

/// Parse and handle at most one request from `buf`; returns the bytes consumed (0 while the
/// request is incomplete).
pub fn on_data(ctx: &mut Ctx, conn: &mut Conn, buf: &mut [u8]) -> usize {
    if conn.req_started_ms.is_none() {
        conn.req_started_ms = Some(ctx.now_ms);
    }
    let head = match parse_head(buf, &ctx.http_limits) {
        Ok(Some(h)) => h,
        Ok(None) => return 0,
        Err(e) => {
            ctx.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
            log::debug!("conn {}:{} from {}: bad request: {}", ctx.id, conn.id.key, conn.peer, e.message());
            respond(ctx, conn, error_response(e.status(), e.message(), false), false);
            return buf.len();
        }
    };
    let head_len = head.head_len;
    let (body_owned, used): (Option<Vec<u8>>, usize) = match head.body {
        BodyKind::None => (None, head_len),
        BodyKind::Length(n) => {
            if buf.len() - head_len < n {
                return 0;
            }
            (None, head_len + n)
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(ctx.http_limits.max_body);
            let mut out = Vec::new();
            match dec.feed(&buf[head_len..], &mut out) {
                Ok((n, true)) => (Some(out), head_len + n),
                Ok((_, false)) => return 0,
                Err(e) => {
                    ctx.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
                    respond(ctx, conn, error_response(e.status(), e.message(), false), false);
                    return buf.len();
                }
            }
        }
    };
    let body: &[u8] = match (&body_owned, head.body) {
        (Some(b), _) => b,
        (None, BodyKind::Length(n)) => &buf[head_len..head_len + n],
        _ => &[],
    };
    conn.req_started_ms = None;
    let req = Req { head: &head, body };
    route(ctx, conn, &req);
    used
}

/// Queue a complete response. Without keep-alive the connection closes once it is sent,
/// and any further pipelined input is discarded.
pub fn respond(ctx: &mut Ctx, conn: &mut Conn, resp: Bytes, keep_alive: bool) {
    ctx.queue(conn, resp);
    conn.last_active_ms = ctx.now_ms;
    if !keep_alive || ctx.shutting_down {
        ctx.close_after_flush(conn);
    }
}

/// A JSON error answer on an otherwise healthy connection.
pub fn error(ctx: &mut Ctx, conn: &mut Conn, req: &Req, status: u16, msg: &str) {
    ctx.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
    // error_response speaks HTTP/1.1; an HTTP/1.0 client is answered and closed.
    let keep = req.keep_alive() && status < 500 && req.head.minor_version >= 1;
    let r = error_response(status, msg, keep);
    respond(ctx, conn, r, keep);
}

/// A JSON answer with CORS headers when the request has an allowed Origin.
pub fn json(ctx: &mut Ctx, conn: &mut Conn, req: &Req, status: u16, body: &[u8], content_type: &str) {
    let keep = req.keep_alive();
    let mut r =
        Response::new(status).keep_alive(keep).http10(req.head.minor_version == 0).header("Cache-Control", "no-store");
    if let Some(o) = pubsub::cors_origin(ctx, req) {
        r = r.header("Access-Control-Allow-Origin", &o).header("Vary", "Origin");
    }
    let r = r.head_only(req.head.method == Method::Head).body(content_type, body);
    respond(ctx, conn, r, keep);
}

fn allow(ctx: &mut Ctx, conn: &mut Conn, req: &Req, methods: &[Method], allowed: &str) -> bool {
    if methods.contains(&req.head.method) {
        return true;
    }
    if req.head.method == Method::Options {
        pubsub::preflight(ctx, conn, req, allowed);
        return false;
    }
    ctx.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
    let keep = req.keep_alive();
    let msg = format!("{{\"error\":\"method {} not allowed; use {}\"}}", req.head.method_str.escape_default(), allowed);
    let r = Response::new(405).keep_alive(keep).header("Allow", allowed).body("application/json", msg.as_bytes());
    respond(ctx, conn, r, keep);
    false
}

/// The route table.
fn route(ctx: &mut Ctx, conn: &mut Conn, req: &Req) {
    let path = req.head.path;
    let path = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    log::trace!("conn {}:{}: {} {}", ctx.id, conn.id.key, req.head.method_str, path);
    use Method::*;
    match path {
        "/health" => {
            if allow(ctx, conn, req, &[Get, Head], "GET, HEAD") {
                json(ctx, conn, req, 200, b"{\"status\":\"ok\"}", "application/json");
            }
        }
        "/metrics" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                super::ops::metrics(ctx, conn, req);
            }
        }
        "/stats" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                super::ops::stats(ctx, conn, req);
            }
        }
        "/echo" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                ws::upgrade(ctx, conn, req, crate::reactor::conn::WsMode::Echo);
            }
        }
        "/" | "/index.html" => {
            if allow(ctx, conn, req, &[Get, Head], "GET, HEAD") {
                let keep = req.keep_alive();
                let r = Response::new(200)
                    .keep_alive(keep)
                    .http10(req.head.minor_version == 0)
                    .header("Cache-Control", "no-cache")
                    .head_only(req.head.method == Head)
                    .body("text/html; charset=utf-8", pubsub::DEMO_PAGE.as_bytes());
                respond(ctx, conn, r, keep);
            }
        }
        "/publish" | "/pub" => {
            if allow(ctx, conn, req, &[Post, Put], "POST, PUT") {
                pubsub::publish(ctx, conn, req);
            }
        }
        "/messages" => {
            if allow(ctx, conn, req, &[Get, Head], "GET, HEAD") {
                pubsub::poll(ctx, conn, req);
            }
        }
        "/listen" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                pubsub::listen(ctx, conn, req);
            }
        }
        "/stream" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                pubsub::stream(ctx, conn, req, crate::reactor::conn::StreamKind::Iframe);
            }
        }
        "/sse" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                pubsub::stream(ctx, conn, req, crate::reactor::conn::StreamKind::Sse);
            }
        }
        "/ws" => {
            if allow(ctx, conn, req, &[Get], "GET") {
                pubsub::ws_subscribe(ctx, conn, req);
            }
        }
        "/connection/websocket" => {
            if allow(ctx, conn, req, &[Get], "GET") && ws::upgrade(ctx, conn, req, WsMode::Centrifugo) {
                crate::centrifugo::client::on_upgrade(ctx, conn, false);
            }
        }
        "/connection/uni_websocket" => {
            if allow(ctx, conn, req, &[Get], "GET") && ws::upgrade(ctx, conn, req, WsMode::CfUni) {
                crate::centrifugo::client::on_upgrade(ctx, conn, true);
                crate::centrifugo::uni::connect_from_query(ctx, conn, req);
            }
        }
        "/connection/uni_sse" => {
            if allow(ctx, conn, req, &[Get, Post], "GET, POST") {
                crate::centrifugo::uni::stream(ctx, conn, req, crate::reactor::conn::StreamKind::CfSse);
            }
        }
        "/connection/uni_http_stream" => {
            if allow(ctx, conn, req, &[Post, Get], "POST, GET") {
                crate::centrifugo::uni::stream(ctx, conn, req, crate::reactor::conn::StreamKind::CfHttp);
            }
        }
        p if p == "/api" || p.starts_with("/api/") => {
            if allow(ctx, conn, req, &[Post], "POST") {
                let method = p.strip_prefix("/api").unwrap_or("").trim_start_matches('/');
                crate::centrifugo::api::handle(ctx, conn, req, method);
            }
        }
        _ => error(ctx, conn, req, 404, "no such endpoint"),
    }
}
