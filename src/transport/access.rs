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

/// Whether `origin` matches a pattern of `allowed_origins`: `*` stands for any run of
/// characters and `?` for one, as in Centrifugo's patterns (`https://*.example.com`); the
/// origin is compared in lower case.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        // Iterative wildcard match with one backtrack point (linear for `*` patterns).
        let (mut pi, mut si) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some(pi);
                pi += 1;
                mark = si;
            } else if let Some(sp) = star {
                pi = sp + 1;
                mark += 1;
                si = mark;
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
    glob(pattern.as_bytes(), origin.to_ascii_lowercase().as_bytes())
}

/// Whether a pattern of `allowed_origins` is one Herald can match (only `*` and `?` are
/// wildcards; Centrifugo's glob library also has `[...]` and `{a,b}`, refused here).
pub fn valid_origin_pattern(pattern: &str) -> bool {
    !pattern.is_empty() && !pattern.contains(['[', ']', '{', '}', '\\'])
}

/// The Origin check of a WebSocket or Centrifugo endpoint. A request without `Origin` (not
/// a browser) always passes. With `origins` empty: the seed WebSocket endpoints
/// (`centrifugo` false) let every origin in; the Centrifugo endpoints, like Centrifugo,
/// refuse every cross-origin browser connection, and (unlike Centrifugo, which refuses any
/// Origin then) let a same-origin one in, so the page Herald serves itself works. Else the
/// origin must match one of the patterns.
pub fn origin_ok(origins: &[String], req: &Req, centrifugo: bool) -> bool {
    let Some(origin) = req.head.header_str("Origin").filter(|o| !o.is_empty()) else { return true };
    if origins.is_empty() {
        if !centrifugo {
            return true;
        }
        let host = req.head.header_str("Host").unwrap_or("");
        let bare = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
        return !host.is_empty() && bare.eq_ignore_ascii_case(host);
    }
    origins.iter().any(|p| origin_matches(p, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        assert!(origin_matches("*", "https://any.example"));
        assert!(origin_matches("https://*.example.com", "https://app.example.com"));
        assert!(origin_matches("https://*.example.com", "HTTPS://App.Example.com"));
        assert!(!origin_matches("https://*.example.com", "https://example.com"));
        assert!(!origin_matches("https://*.example.com", "https://evil.com/.example.com.x"));
        assert!(origin_matches("http://localhost:????", "http://localhost:8000"));
        assert!(!origin_matches("http://localhost:????", "http://localhost:80"));
        assert!(origin_matches("https://app.example.com", "https://app.example.com"));
        assert!(!origin_matches("https://app.example.com", "https://app.example.com.evil"));
        assert!(valid_origin_pattern("https://*.a.b"));
        assert!(!valid_origin_pattern("https://{a,b}.c"));
    }
}
