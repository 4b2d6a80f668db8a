//! Operations endpoints: `/metrics` (Prometheus text), `/stats` (per-channel JSON, like
//! nginx push-stream's channel stats, protected like publishing) and the live status page
//! (`/status`, its data `/status.json`, its login `/status/auth`).
//!
//! Owns: those responses and who may read them. Called by the router. Every answer goes
//! through `respond` / `json` and has a bounded size except `/stats` (one entry per
//! channel, for scripts that want them all); the status data lists the
//! [`STATUS_TOP_CHANNELS`] busiest channels only.

use super::access::{ct_eq, may_publish};
use super::http::{error, json, respond, Req};
use super::session::Kind;
use super::{Env, Session};
use crate::proto::http::{Method, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::Ordering;

/// The status page served at `/status` (hand-written HTML, canvas and JS; no CDN).
pub const STATUS_PAGE: &str = include_str!("status.html");

/// Channels listed in `/status.json` (busiest first): bounds its size (a channel name is at
/// most 255 bytes; at most 64 workers), whatever the number of channels.
pub const STATUS_TOP_CHANNELS: usize = 20;

/// Lifetime of a status-page login token, seconds.
const ADMIN_TOKEN_TTL_S: i64 = 24 * 3600;

/// `GET /metrics`: from `metrics_allow` (default loopback) or with
/// `X-API-Key: <publish_api_key>`.
pub fn metrics(env: &mut Env, conn: &mut Session, req: &Req) {
    if !metrics_allowed(env, conn, req) {
        return error(env, conn, req, 403, "metrics are not allowed from this address (see metrics_allow)");
    }
    let body = crate::transport::metrics::render(&env.shared, env.now_ms);
    let keep = req.keep_alive();
    let r = Response::new(200).keep_alive(keep).body("text/plain; version=0.0.4; charset=utf-8", body.as_bytes());
    respond(env, conn, r, keep);
}

fn metrics_allowed(env: &Env, conn: &Session, req: &Req) -> bool {
    if let (Some(key), Some(given)) = (&env.shared.cfg.publish_api_key, req.head.header("X-API-Key")) {
        if ct_eq(key.as_bytes(), given.trim_ascii()) {
            return true;
        }
    }
    env.shared.cfg.metrics_allowed(conn.peer.ip())
}

/// `GET /stats`: allowed where publishing is (address allow-list or API key).
pub fn stats(env: &mut Env, conn: &mut Session, req: &Req) {
    if !may_publish(env, conn, req) {
        return error(
            env,
            conn,
            req,
            403,
            "stats are not allowed from this address (see publish_allow / publish_api_key)",
        );
    }
    let st = &env.shared.stats;
    let chans = env.shared.engine.channel_stats();
    let list: Vec<serde_json::Value> = chans.iter().map(channel_json).collect();
    let v = serde_json::json!({
        "hostname": std::env::var("HOSTNAME").unwrap_or_default(),
        "uptime_seconds": env.now_ms / 1000,
        "connections": st.connections.load(Ordering::Relaxed),
        "published_messages": st.published.load(Ordering::Relaxed),
        "delivered_messages": st.delivered.load(Ordering::Relaxed),
        "channels": chans.len(),
        "subscribers": chans.iter().map(|c| c.subscribers).sum::<usize>(),
        "stored_messages": chans.iter().map(|c| c.stored).sum::<usize>(),
        "by_channel": list,
        "nodes": nodes_json(&env.shared),
    });
    super::http::json(env, conn, req, 200, v.to_string().as_bytes(), "application/json");
}

/// This node, then the other live nodes of a shared engine (Redis) as their last heartbeat
/// told (`/stats`, `/status.json`).
fn nodes_json(s: &super::Shared) -> Vec<serde_json::Value> {
    let this = serde_json::json!({
        "name": s.node_id, "this": true, "connections": s.stats.connections.load(Ordering::Relaxed)
    });
    std::iter::once(this)
        .chain(s.engine.nodes().into_iter().map(|(id, info)| {
            let i: serde_json::Value = serde_json::from_slice(&info).unwrap_or_default();
            let conns = i.get("num_connections").cloned().unwrap_or_default();
            serde_json::json!({"name": id, "this": false, "connections": conns})
        }))
        .collect()
}

/// The token `/status/auth` hands out: `EXP.HEX(HMAC-SHA256(admin.secret, "herald-status:" EXP))`.
fn admin_token(secret: &str, exp: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("herald-status:{exp}").as_bytes());
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{exp}.{sig}")
}

/// Whether the request carries a valid, unexpired status login token
/// (`Authorization: token T`), when `admin.enabled`.
pub fn admin_authorized(env: &Env, req: &Req) -> bool {
    let a = &env.shared.cfg.admin;
    if !a.enabled || a.secret.is_empty() {
        return false;
    }
    let Some(given) = req.head.header_str("Authorization").and_then(|h| h.trim().strip_prefix("token ")) else {
        return false;
    };
    let given = given.trim();
    let Some(exp) = given.split_once('.').and_then(|(e, _)| e.parse::<i64>().ok()) else {
        return false;
    };
    exp > env.unix_s && ct_eq(admin_token(&a.secret, exp).as_bytes(), given.as_bytes())
}

/// Who may read the status data: as `/stats` (allow-list or API key), or with an admin
/// login token.
fn status_allowed(env: &Env, conn: &Session, req: &Req) -> bool {
    may_publish(env, conn, req) || admin_authorized(env, req)
}

/// `GET /status`: the page (which holds no data). Served where the data may be read, and
/// to anyone when `admin.enabled` (the page then asks for the password).
pub fn status_page(env: &mut Env, conn: &mut Session, req: &Req) {
    if !(status_allowed(env, conn, req) || env.shared.cfg.admin.enabled) {
        return error(
            env,
            conn,
            req,
            403,
            "the status page is not allowed from this address (see publish_allow / publish_api_key / admin)",
        );
    }
    let keep = req.keep_alive();
    let r = Response::new(200)
        .keep_alive(keep)
        .http10(req.head.minor_version == 0)
        .header("Cache-Control", "no-cache")
        .header("X-Frame-Options", "DENY")
        .head_only(req.head.method == Method::Head)
        .body("text/html; charset=utf-8", STATUS_PAGE.as_bytes());
    respond(env, conn, r, keep);
}

/// `POST /status/auth` with `{"password": "..."}`: a login token valid 24 h, when
/// `admin.enabled` and the password matches (compared in constant time).
pub fn status_auth(env: &mut Env, conn: &mut Session, req: &Req) {
    let a = env.shared.cfg.admin.clone();
    if !a.enabled {
        return error(env, conn, req, 404, "admin login is not enabled (admin.enabled)");
    }
    let given: Option<String> = serde_json::from_slice::<serde_json::Value>(req.body)
        .ok()
        .and_then(|v| v.get("password").and_then(|p| p.as_str()).map(str::to_string));
    match given {
        Some(p) if ct_eq(p.as_bytes(), a.password.as_bytes()) => {
            let token = admin_token(&a.secret, env.unix_s + ADMIN_TOKEN_TTL_S);
            let body = serde_json::json!({ "token": token, "expires_in": ADMIN_TOKEN_TTL_S }).to_string();
            json(env, conn, req, 200, body.as_bytes(), "application/json");
        }
        Some(_) => {
            log::info!("conn {}:{} from {}: status page login refused (bad password)", env.id, conn.id.key, conn.peer);
            error(env, conn, req, 403, "wrong password")
        }
        None => error(env, conn, req, 400, "send {\"password\": \"...\"}"),
    }
}

/// `GET /status.json`: what the status page draws (bounded size, see
/// [`STATUS_TOP_CHANNELS`]). Counters are totals since start: the page turns them into
/// rates from successive polls, so the server keeps no history for it.
pub fn status_json(env: &mut Env, conn: &mut Session, req: &Req) {
    if !status_allowed(env, conn, req) {
        env.shared.stats.http_errors.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "error": "the status data is not allowed from this address (see publish_allow / publish_api_key / admin)",
            "login": env.shared.cfg.admin.enabled,
        })
        .to_string();
        return json(env, conn, req, 403, body.as_bytes(), "application/json");
    }
    let body = status_value(env).to_string();
    json(env, conn, req, 200, body.as_bytes(), "application/json");
}

/// The `/status.json` document.
pub fn status_value(env: &Env) -> serde_json::Value {
    let s = &env.shared;
    let st = &s.stats;
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut by_transport = serde_json::Map::new();
    for (i, t) in Kind::LABELS.iter().enumerate() {
        let n: usize = s.gauges.iter().map(|g| g.conns[i].load(Ordering::Relaxed)).sum();
        by_transport.insert((*t).to_string(), n.into());
    }
    let mut chans = s.engine.channel_stats();
    let (channels, stored) = s.engine.counts();
    let busier = |a: &crate::hub::engine::ChannelStat, b: &crate::hub::engine::ChannelStat| {
        b.subscribers.cmp(&a.subscribers).then(b.last_id.cmp(&a.last_id)).then(a.name.cmp(&b.name))
    };
    if chans.len() > STATUS_TOP_CHANNELS {
        chans.select_nth_unstable_by(STATUS_TOP_CHANNELS, busier);
        chans.truncate(STATUS_TOP_CHANNELS);
    }
    chans.sort_by(busier);
    let busiest: Vec<serde_json::Value> = chans.iter().map(channel_json).collect();
    let workers: Vec<serde_json::Value> = s
        .gauges
        .iter()
        .enumerate()
        .map(|(i, g)| {
            serde_json::json!({
                "worker": i,
                "busy_seconds_total": r(&g.busy_us) as f64 / 1e6,
                "loop_turns_total": r(&g.turns),
                "max_turn_seconds": r(&g.max_turn_us) as f64 / 1e6,
                "inbox_depth": s.inboxes.get(i).map(|b| b.depth()).unwrap_or(0),
                "subscriptions": g.subscriptions.load(Ordering::Relaxed),
            })
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": s.node_id,
        "uptime_ms": env.now_ms,
        "connections": st.connections.load(Ordering::Relaxed),
        "connections_by_transport": by_transport,
        "centrifugo_clients": st.cf_clients.load(Ordering::Relaxed),
        "published_total": r(&st.published),
        "delivered_total": r(&st.delivered),
        "slow_consumer_drops_total": r(&st.slow_drops),
        "refused_total": {
            "max_connections": r(&st.refused_max_conns),
            "per_ip": r(&st.refused_per_ip),
            "rate": r(&st.refused_rate),
        },
        "http_errors_total": r(&st.http_errors),
        "ws_protocol_errors_total": r(&st.ws_protocol_errors),
        "channels": channels,
        "history_messages": stored,
        "subscriptions": s.gauges.iter().map(|g| g.subscriptions.load(Ordering::Relaxed)).sum::<usize>(),
        "busiest_channels": busiest,
        "workers": workers,
        "nodes": nodes_json(s),
    })
}

/// One channel's counters as `/stats` and `/status.json` show them.
fn channel_json(c: &crate::hub::engine::ChannelStat) -> serde_json::Value {
    serde_json::json!({
        "channel": c.name,
        "subscribers": c.subscribers,
        "stored_messages": c.stored,
        "last_message_id": c.last_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_depends_on_secret_and_expiry() {
        let a = admin_token("secret-one", 100);
        assert!(a.starts_with("100."));
        assert_ne!(a, admin_token("secret-two", 100));
        assert_ne!(a, admin_token("secret-one", 101));
        assert_eq!(a, admin_token("secret-one", 100));
    }
}
