//! Centrifugo's unidirectional transports: `/connection/uni_websocket`,
//! `/connection/uni_sse` and `/connection/uni_http_stream`. The client sends only a connect
//! request (query parameter `cf_connect` with JSON, or a JSON POST body); the server sends
//! the connect result and then pushes (`{"channel":"c","pub":{...}}`) and `{}` pings.
//!
//! Owns: opening those connections. Called by the router; the connect itself is
//! `client::connect`.

use super::client;
use crate::proto::centrifugo::ConnectReq;
use crate::proto::http::{query_param, Method};
use crate::transport::http::{error, Req};
use crate::transport::session::{State, StreamKind};
use crate::transport::{Env, Session};

fn connect_request(req: &Req) -> Result<Option<ConnectReq>, String> {
    if let Some(q) = query_param(req.head.query, "cf_connect") {
        return serde_json::from_str(&q).map(Some).map_err(|e| format!("cf_connect is not a connect request: {e}"));
    }
    if req.head.method == Method::Post && !req.body.trim_ascii().is_empty() {
        return serde_json::from_slice(req.body).map(Some).map_err(|e| format!("body is not a connect request: {e}"));
    }
    Ok(None)
}

/// uni_websocket: connect at once when the URL carries `cf_connect`; otherwise the first
/// message from the client is the connect request.
pub fn connect_from_query(env: &mut Env, conn: &mut Session, req: &Req) {
    match connect_request(req) {
        Ok(Some(r)) => client::connect(env, conn, 0, r),
        Ok(None) => {}
        Err(_) => client::disconnect(env, conn, crate::proto::centrifugo::DISCONNECT_BAD_REQUEST),
    }
}

/// uni_sse and uni_http_stream: an endless response carrying the connect result, then
/// pushes.
pub fn stream(env: &mut Env, conn: &mut Session, req: &Req, kind: StreamKind) {
    let r = match connect_request(req) {
        Ok(Some(r)) => r,
        Ok(None) if kind == StreamKind::CfSse => ConnectReq::default(),
        Ok(None) => return error(env, conn, req, 400, "POST a JSON connect request"),
        Err(e) => return error(env, conn, req, 400, &e),
    };
    if env.shutting_down {
        return error(env, conn, req, 503, "server shutting down");
    }
    if !super::super::ws::origin_allowed(&env.shared.cfg.client.allowed_origins, req, true) {
        log::debug!("conn {}:{} from {}: uni stream origin refused", env.id, conn.id.key, conn.peer);
        return error(env, conn, req, 403, "origin not allowed (client.allowed_origins)");
    }
    // Centrifugo's content types (uni_http_stream is Go's sniffed text/plain there).
    let ct = if kind == StreamKind::CfSse { "text/event-stream; charset=utf-8" } else { "text/plain; charset=utf-8" };
    env.queue(conn, crate::transport::pubsub::stream_head(env, req, ct));
    conn.state =
        State::Stream { kind, next_keepalive_ms: env.now_ms + env.shared.cfg.client.ping_interval.0, multi: false };
    client::attach(env, conn, true, req);
    client::connect(env, conn, 0, r);
}
