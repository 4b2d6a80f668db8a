//! Operations endpoints: `/metrics` (Prometheus text) and `/stats` (per-channel JSON, like
//! nginx push-stream's channel stats, protected like publishing).
//!
//! Owns: those two responses. Called by the router.

use super::http::{error, respond, Req};
use super::{Env, Session};
use crate::proto::http::Response;
use std::sync::atomic::Ordering;

/// `GET /metrics`.
pub fn metrics(env: &mut Env, conn: &mut Session, req: &Req) {
    let body = crate::transport::metrics::render(&env.shared, env.now_ms);
    let keep = req.keep_alive();
    let r = Response::new(200).keep_alive(keep).body("text/plain; version=0.0.4; charset=utf-8", body.as_bytes());
    respond(env, conn, r, keep);
}

/// `GET /stats`: allowed where publishing is (address allow-list or API key).
pub fn stats(env: &mut Env, conn: &mut Session, req: &Req) {
    if !super::access::may_publish(env, conn, req) {
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
    let list: Vec<serde_json::Value> = chans
        .iter()
        .map(|c| {
            serde_json::json!({
                "channel": c.name,
                "subscribers": c.subscribers,
                "stored_messages": c.stored,
                "last_message_id": c.last_id,
            })
        })
        .collect();
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
    });
    super::http::json(env, conn, req, 200, v.to_string().as_bytes(), "application/json");
}
