//! Who may do what over plain HTTP: CORS answers, the publish allow-list and API keys.
//!
//! Owns: [`cors_origin`], [`preflight`], [`may_publish`] and the constant-time key compare.
//! Called by the router and the endpoints. Never touches a socket.

use super::http::{respond, Req};
use super::{Env, Session};
use crate::proto::http::Response;

/// `Access-Control-Allow-Origin` value for this request, if CORS applies.
pub fn cors_origin(env: &Env, req: &Req) -> Option<String> {
    let origin = req.head.header_str("Origin")?;
    let allowed = &env.shared.cfg.cors_origins;
    if allowed.iter().any(|o| o == "*") {
        Some("*".into())
    } else if allowed.iter().any(|o| o == origin) {
        Some(origin.to_string())
    } else {
        None
    }
}

/// Answer a CORS preflight (`OPTIONS`).
pub fn preflight(env: &mut Env, conn: &mut Session, req: &Req, methods: &str) {
    let keep = req.keep_alive();
    let mut r = Response::new(204).keep_alive(keep).header("Allow", methods);
    if let Some(o) = cors_origin(env, req) {
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
    respond(env, conn, r.empty(), keep);
}

/// Constant-time comparison (no early exit on the first differing byte).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether this request may publish on the plain HTTP endpoints: its `X-API-Key` header
/// equals `publish_api_key` (compared in constant time), or the peer address is inside a
/// `publish_allow` network (loopback only by default). Checked first by `/publish` and
/// `/stats`; the Centrifugo `/api` checks its own key instead.
pub fn may_publish(env: &Env, conn: &Session, req: &Req) -> bool {
    if let (Some(key), Some(given)) = (&env.shared.cfg.publish_api_key, req.head.header("X-API-Key")) {
        if ct_eq(key.as_bytes(), given.trim_ascii()) {
            return true;
        }
    }
    let ip = conn.peer.ip();
    env.publish_cidrs.iter().any(|c| c.contains(ip))
}
