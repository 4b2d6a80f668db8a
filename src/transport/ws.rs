//! WebSocket on a connection: the upgrade (RFC 6455 §4.2), frames in, frames out, pings, and
//! the close handshake (§7).
//!
//! Owns: the `Ws` state of a connection. Called by the router (upgrade), by
//! `transport::process` (input) and by the timer (pings). The frame codec itself is the pure
//! `proto::ws`. Must never read or write the socket.

use super::http::{error, respond, Req};
use super::session::{State, WsMode, WsState};
use super::{Env, Session};
use crate::proto::http::{Method, Response};
use crate::proto::ws::{self as codec, Decoder, Opcode, Payload, WsError, WsEvent};
use crate::proto::ws_deflate::{self, InflateError};
use std::sync::atomic::Ordering;

/// Check the handshake and switch the connection to WebSocket. Returns false (after
/// queueing the error response) when the request is not a valid upgrade.
pub fn upgrade(env: &mut Env, conn: &mut Session, req: &Req, mode: WsMode) -> bool {
    let h = req.head;
    let cfg = env.shared.cfg.clone();
    if h.method != Method::Get || h.minor_version < 1 {
        error(env, conn, req, 400, "a WebSocket handshake is an HTTP/1.1 GET");
        return false;
    }
    if !h.header_has_token("Upgrade", "websocket") || !h.header_has_token("Connection", "upgrade") {
        let keep = req.keep_alive();
        let r = Response::new(426)
            .keep_alive(keep)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .body("application/json", b"{\"error\":\"this endpoint speaks WebSocket: send Upgrade: websocket\"}");
        respond(env, conn, r, keep);
        return false;
    }
    if h.header_str("Sec-WebSocket-Version") != Some("13") {
        // RFC 6455 §4.4: answer with the versions we support.
        let keep = req.keep_alive();
        let r = Response::new(426)
            .keep_alive(keep)
            .header("Sec-WebSocket-Version", "13")
            .body("application/json", b"{\"error\":\"unsupported WebSocket version; this server speaks 13\"}");
        respond(env, conn, r, keep);
        return false;
    }
    let Some(key) = h.header("Sec-WebSocket-Key").filter(|k| codec::valid_key(k.trim_ascii())) else {
        error(env, conn, req, 400, "missing or invalid Sec-WebSocket-Key");
        return false;
    };
    let origins = if matches!(mode, WsMode::Centrifugo | WsMode::CfUni) {
        &cfg.client.allowed_origins
    } else {
        &cfg.ws_allowed_origins
    };
    if !origin_allowed(origins, req, matches!(mode, WsMode::Centrifugo | WsMode::CfUni)) {
        log::debug!("conn {}:{} from {}: origin {:?} refused", env.id, conn.id.key, conn.peer, h.header_str("Origin"));
        error(env, conn, req, 403, "origin not allowed");
        return false;
    }
    // Subprotocol: the first of the server's preferences that the client offers; on
    // `/connection/websocket`, Centrifugo's own first (the first the client offers, as
    // Centrifugo does).
    let offered = offered_subprotocols(req);
    let configured = || cfg.ws_subprotocols.iter().find(|p| offered.contains(&p.as_str())).map(|s| s.as_str());
    let proto = if mode == WsMode::Centrifugo { cf_subprotocol(req).or_else(configured) } else { configured() };
    // permessage-deflate (RFC 7692): the first acceptable offer, when enabled.
    let deflate = if env.zip.enabled {
        ws_deflate::negotiate(
            h.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Extensions")).map(|(_, v)| &v[..]),
        )
    } else {
        None
    };
    let accept = codec::accept_key(key.trim_ascii());
    let ext = deflate.map(|a| a.response());
    env.queue(conn, Response::upgrade_websocket(&accept, proto, ext.as_deref()));
    let mut decoder = Decoder::new(env.ws_limits);
    decoder.set_deflate(deflate.is_some());
    let mut ws = WsState::new(decoder, mode, env.now_ms + cfg.ws_ping_interval_ms);
    ws.deflate = deflate.is_some_and(|a| a.compress_outgoing());
    conn.state = State::Ws(Box::new(ws));
    if deflate.is_some() {
        env.shared.stats.ws_compressed.fetch_add(1, Ordering::Relaxed);
    }
    log::debug!("conn {}:{} from {}: websocket {:?} deflate {:?}", env.id, conn.id.key, conn.peer, mode, deflate);
    true
}

/// The subprotocols a handshake offers, in its order.
fn offered_subprotocols<'a>(req: &'a Req) -> Vec<&'a str> {
    req.head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim())
        .collect()
}

/// Centrifugo's subprotocol the client offers first (`centrifuge-json` or
/// `centrifuge-protobuf`; centrifuge-js in protobuf mode sends the latter).
pub fn cf_subprotocol(req: &Req) -> Option<&'static str> {
    offered_subprotocols(req).into_iter().find_map(|p| match p {
        "centrifuge-json" => Some("centrifuge-json"),
        "centrifuge-protobuf" => Some("centrifuge-protobuf"),
        _ => None,
    })
}

/// Whether a `/connection/websocket` handshake asks for the protobuf protocol: the
/// `centrifuge-protobuf` subprotocol, or `cf_protocol=protobuf` (also the older
/// `format=protobuf`) in the query, as Centrifugo decides.
pub fn cf_wants_protobuf(req: &Req) -> bool {
    let q = req.head.query;
    let is_pb = |name| crate::proto::http::query_param(q, name).is_some_and(|v| v == "protobuf");
    is_pb("cf_protocol") || is_pb("format") || cf_subprotocol(req) == Some("centrifuge-protobuf")
}

/// Whether the request's `Origin` may open this endpoint (see [`super::access::origin_ok`]:
/// patterns with `*`; an empty list lets the seed endpoints take any origin and the
/// Centrifugo ones only same-origin pages and non-browser clients).
pub fn origin_allowed(origins: &[String], req: &Req, centrifugo: bool) -> bool {
    super::access::origin_ok(origins, req, centrifugo)
}

/// Decode at most one event from `buf` and act on it; returns bytes consumed.
pub fn on_data(env: &mut Env, conn: &mut Session, buf: &mut [u8]) -> usize {
    let State::Ws(ws) = &mut conn.state else {
        return 0;
    };
    let (mode, close_sent) = (ws.mode, ws.close_sent);
    let decoded = ws.decoder.decode(buf);
    match decoded {
        Ok((None, used)) => used,
        Ok((Some(ev), used)) => {
            match ev {
                WsEvent::Text(p) | WsEvent::Binary(p) | WsEvent::Compressed { payload: p, .. } if close_sent => drop(p),
                WsEvent::Compressed { text, payload: p } => {
                    // One inflate buffer per worker, taken out while the handler runs.
                    let mut out = std::mem::take(&mut env.inflated);
                    let max = env.ws_limits.max_message;
                    let r = match env.zip.inflate(payload(buf, &p), max, &mut out) {
                        Ok(()) if text && std::str::from_utf8(&out).is_err() => Err(WsError::InvalidUtf8),
                        Ok(()) => Ok(()),
                        Err(InflateError::TooBig) => Err(WsError::TooBig),
                        Err(InflateError::Corrupt) => Err(WsError::Protocol("invalid compressed data")),
                    };
                    match r {
                        Ok(()) => {
                            let op = if text { Opcode::Text } else { Opcode::Binary };
                            on_message(env, conn, mode, op, &out);
                        }
                        Err(e) => fail(env, conn, e),
                    }
                    out.clear();
                    if out.capacity() <= 256 << 10 {
                        env.inflated = out;
                    }
                }
                WsEvent::Text(p) => on_message(env, conn, mode, Opcode::Text, payload(buf, &p)),
                WsEvent::Binary(p) => on_message(env, conn, mode, Opcode::Binary, payload(buf, &p)),
                WsEvent::Ping(r) => {
                    if !close_sent {
                        let pong = codec::frame(Opcode::Pong, &buf[r]);
                        env.queue(conn, pong);
                    }
                }
                WsEvent::Pong(_) => {}
                WsEvent::Close { code, .. } => {
                    if close_sent {
                        // Our close was answered: the handshake is complete.
                        env.close_after_flush(conn);
                    } else {
                        // Echo the status code (RFC 6455 §5.5.1), then close.
                        close(env, conn, code.unwrap_or(1000), "");
                    }
                }
            }
            used.max(1)
        }
        Err(e) => {
            fail(env, conn, e);
            buf.len()
        }
    }
}

/// Fail the connection (RFC 6455 §7.1.7) with the error's close code.
fn fail(env: &mut Env, conn: &mut Session, e: WsError) {
    env.shared.stats.ws_protocol_errors.fetch_add(1, Ordering::Relaxed);
    log::debug!("conn {}:{} from {}: websocket error: {}", env.id, conn.id.key, conn.peer, e.reason());
    close(env, conn, e.close_code(), e.reason());
}

/// A text or binary frame to this connection: compressed when it negotiated
/// permessage-deflate and the message reaches `ws_compression_min_size`.
pub fn data_frame(env: &mut Env, conn: &Session, op: Opcode, data: &[u8]) -> bytes::Bytes {
    match &conn.state {
        State::Ws(w) if w.deflate => env.zip.frame(op, data),
        _ => codec::frame(op, data),
    }
}

fn payload<'a>(buf: &'a [u8], p: &'a Payload) -> &'a [u8] {
    match p {
        Payload::Buf(r) => &buf[r.clone()],
        Payload::Owned(v) => v,
    }
}

fn on_message(env: &mut Env, conn: &mut Session, mode: WsMode, op: Opcode, data: &[u8]) {
    match mode {
        WsMode::Echo => {
            let f = data_frame(env, conn, op, data);
            env.queue(conn, f);
        }
        WsMode::Sub => super::pubsub::ws_client_message(env, conn, data),
        WsMode::Centrifugo | WsMode::CfUni => crate::transport::centrifugo::client::on_frame(env, conn, data),
    }
}

/// Send a close frame and finish the connection once it is flushed (the peer's close frame
/// or FIN is awaited for at most the linger time).
pub fn close(env: &mut Env, conn: &mut Session, code: u16, reason: &str) {
    if let State::Ws(ws) = &mut conn.state {
        if ws.close_sent {
            return;
        }
        ws.close_sent = true;
    }
    let f = codec::close_frame(code, reason);
    env.queue(conn, f);
    env.close_after_flush(conn);
}

/// Ping timer: a peer that has sent nothing for two ping intervals is dropped; otherwise
/// ping it.
pub fn on_ping_timer(env: &mut Env, conn: &mut Session) {
    if conn.cf.is_some() {
        // Centrifugo connections use application-level `{}` pings.
        return crate::transport::centrifugo::client::on_ping_timer(env, conn);
    }
    let interval = env.shared.cfg.ws_ping_interval_ms;
    if env.now_ms.saturating_sub(conn.last_active_ms) >= 2 * interval {
        log::debug!("conn {}:{} from {}: no answer to pings, dropping", env.id, conn.id.key, conn.peer);
        env.kill(conn);
        return;
    }
    if let State::Ws(ws) = &mut conn.state {
        ws.next_ping_ms = env.now_ms + interval;
    }
    env.queue(conn, bytes::Bytes::from_static(PING));
}

/// A server ping with an empty payload (FIN + opcode 9, length 0).
const PING: &[u8] = &[0x89, 0x00];
