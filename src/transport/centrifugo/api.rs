//! Centrifugo's server API: `POST /api/<method>` with a JSON body, authorised by
//! `X-API-Key: KEY` or `Authorization: apikey KEY`; answers `{"result":...}` or
//! `{"error":{"code":N,"message":"..."}}` (HTTP 200), 401 without a valid key, 400 for a
//! body that is not JSON, 404 for an unknown method.
//!
//! Owns: the API methods. Called by the router. Commands aimed at users' connections
//! (subscribe, unsubscribe, disconnect, refresh) are broadcast to every worker's inbox.

use super::client::{history_result, presence_result};
use crate::hub::bus::{Note, UserCmd};
use crate::hub::check_cf_channel as check_channel;
use crate::hub::envelope::json_data;
use crate::hub::PubMeta;
use crate::proto::centrifugo::{self as proto, Error};
use crate::proto::http::Response;
use crate::transport::access::ct_eq;
use crate::transport::http::{respond, Req};
use crate::transport::{Env, Session};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn authorised(env: &Env, req: &Req) -> bool {
    let api = &env.shared.cfg.http_api;
    if api.insecure {
        return true;
    }
    if api.key.is_empty() {
        return false;
    }
    if let Some(k) = req.head.header("X-API-Key") {
        if ct_eq(k.trim_ascii(), api.key.as_bytes()) {
            return true;
        }
    }
    // The documented `?api_key=KEY` form.
    if let Some(k) = crate::proto::http::query_param(req.head.query, "api_key") {
        if ct_eq(k.as_bytes(), api.key.as_bytes()) {
            return true;
        }
    }
    if let Some(a) = req.head.header_str("Authorization") {
        if let Some((scheme, k)) = a.split_once(' ') {
            if scheme.eq_ignore_ascii_case("apikey") && ct_eq(k.trim().as_bytes(), api.key.as_bytes()) {
                return true;
            }
        }
    }
    false
}

fn send(env: &mut Env, conn: &mut Session, req: &Req, status: u16, body: &str) {
    let keep = req.keep_alive();
    let r = Response::new(status)
        .keep_alive(keep)
        .http10(req.head.minor_version == 0)
        .body("application/json", body.as_bytes());
    respond(env, conn, r, keep);
}

fn err_json(e: Error) -> String {
    format!("{{\"error\":{{\"code\":{},\"message\":\"{}\"}}}}", e.code, e.message)
}

/// `POST /api/<method>`.
pub fn handle(env: &mut Env, conn: &mut Session, req: &Req, method: &str) {
    if !authorised(env, req) {
        log::debug!("conn {}:{} from {}: api refused (no valid key)", env.id, conn.id.key, conn.peer);
        return send(env, conn, req, 401, "{\"error\":\"unauthorized: pass X-API-Key or Authorization: apikey KEY\"}");
    }
    let body: &[u8] = if req.body.trim_ascii().is_empty() { b"{}" } else { req.body };
    let params: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return send(env, conn, req, 400, "{\"error\":\"request body must be a JSON object\"}"),
    };
    if method == "batch" {
        let Some(cmds) = params.get("commands").and_then(|c| c.as_array()) else {
            return send(env, conn, req, 200, &err_json(proto::BAD_REQUEST));
        };
        let mut replies = Vec::with_capacity(cmds.len());
        for c in cmds {
            let reply = match c.as_object().and_then(|o| o.iter().next()) {
                Some((m, p)) => match call(env, m, p) {
                    Some(Ok(r)) => format!("{{\"{m}\":{r}}}"),
                    Some(Err(e)) => err_json(e),
                    None => err_json(proto::METHOD_NOT_FOUND),
                },
                None => err_json(proto::BAD_REQUEST),
            };
            replies.push(reply);
        }
        return send(env, conn, req, 200, &format!("{{\"replies\":[{}]}}", replies.join(",")));
    }
    match call(env, method, &params) {
        Some(Ok(r)) => send(env, conn, req, 200, &format!("{{\"result\":{r}}}")),
        Some(Err(e)) => send(env, conn, req, 200, &err_json(e)),
        None => send(env, conn, req, 404, "{\"error\":{\"code\":104,\"message\":\"method not found\"}}"),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishParams {
    channel: String,
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
    b64data: Option<String>,
    tags: Option<std::collections::BTreeMap<String, String>>,
    skip_history: bool,
    idempotency_key: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserParams {
    user: String,
    channel: String,
    expire_at: Option<i64>,
    expired: bool,
    disconnect: Option<DisconnectParams>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectParams {
    code: u16,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryParams {
    channel: String,
    limit: i64,
    since: Option<proto::StreamPosition>,
    reverse: bool,
}

fn publish_one(env: &Env, channel: &str, data: &[u8], p: &PublishParams) -> Result<String, Error> {
    if check_channel(channel).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    if env.shared.cfg.channel.resolve(channel).is_none() {
        return Err(proto::UNKNOWN_CHANNEL);
    }
    let meta = PubMeta {
        info: None,
        tags: p.tags.as_ref().filter(|t| !t.is_empty()).and_then(|t| serde_json::to_vec(t).ok()).map(Bytes::from),
        skip_history: p.skip_history,
        idempotency_key: (!p.idempotency_key.is_empty()).then(|| p.idempotency_key.clone()),
    };
    let (id, epoch) = env.shared.engine.publish(channel, json_data(data), meta, env.now_ms);
    env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
    if id == 0 {
        return Ok("{}".into()); // not sequenced (skip_history)
    }
    Ok(format!("{{\"offset\":{id},\"epoch\":\"{epoch}\"}}"))
}

fn channel_checked(env: &Env, ch: &str) -> Result<crate::config::centrifugo::ChannelOptions, Error> {
    if check_channel(ch).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    env.shared.cfg.channel.resolve(ch).map(|(_, o)| o.clone()).ok_or(proto::UNKNOWN_CHANNEL)
}

/// One API method; None when the method does not exist.
fn call(env: &mut Env, method: &str, params: &Value) -> Option<Result<String, Error>> {
    let de = |v: &Value| v.clone();
    Some(match method {
        "publish" | "broadcast" => {
            let Ok(p) = serde_json::from_value::<PublishParams>(de(params)) else {
                return Some(Err(proto::BAD_REQUEST));
            };
            let data: Vec<u8> = match (&p.data, &p.b64data) {
                (Some(d), _) => d.get().as_bytes().to_vec(),
                (None, Some(_)) => return Some(Err(proto::BAD_REQUEST)), // binary needs a binary protocol
                (None, None) => return Some(Err(proto::BAD_REQUEST)),
            };
            if method == "publish" {
                publish_one(env, &p.channel, &data, &p)
            } else {
                if p.channels.is_empty() {
                    return Some(Err(proto::BAD_REQUEST));
                }
                let parts: Vec<String> = p
                    .channels
                    .iter()
                    .map(|c| match publish_one(env, c, &data, &p) {
                        Ok(r) => format!("{{\"result\":{r}}}"),
                        Err(e) => err_json(e),
                    })
                    .collect();
                Ok(format!("{{\"responses\":[{}]}}", parts.join(",")))
            }
        }
        "subscribe" | "unsubscribe" | "disconnect" | "refresh" => {
            let Ok(p) = serde_json::from_value::<UserParams>(de(params)) else { return Some(Err(proto::BAD_REQUEST)) };
            if p.user.is_empty() && method != "refresh" {
                return Some(Err(proto::BAD_REQUEST));
            }
            if matches!(method, "subscribe" | "unsubscribe") {
                if let Err(e) = channel_checked(env, &p.channel) {
                    return Some(Err(e));
                }
            }
            let cmd = Arc::new(match method {
                "subscribe" => UserCmd::Subscribe { user: p.user, channel: p.channel },
                "unsubscribe" => UserCmd::Unsubscribe { user: p.user, channel: p.channel },
                "disconnect" => {
                    let d = p.disconnect.unwrap_or(DisconnectParams { code: 3503, reason: "force disconnect".into() });
                    let code = if (3000..5000).contains(&d.code) { d.code } else { 3503 };
                    UserCmd::Disconnect { user: p.user, code, reason: d.reason }
                }
                _ => UserCmd::Refresh { user: p.user, expire_at: p.expire_at, expired: p.expired },
            });
            env.shared.engine.broadcast(&|| Note::User(cmd.clone()));
            Ok("{}".into())
        }
        "presence" | "presence_stats" => {
            let ch = params.get("channel").and_then(|c| c.as_str()).unwrap_or("");
            match channel_checked(env, ch) {
                Err(e) => Err(e),
                Ok(o) if !o.presence => Err(proto::NOT_AVAILABLE),
                Ok(_) => Ok(presence_result(env, ch, method == "presence_stats")),
            }
        }
        "history" => {
            let Ok(p) = serde_json::from_value::<HistoryParams>(de(params)) else {
                return Some(Err(proto::BAD_REQUEST));
            };
            match channel_checked(env, &p.channel) {
                Err(e) => Err(e),
                Ok(o) if !o.history() => Err(proto::NOT_AVAILABLE),
                Ok(_) => history_result(env, &p.channel, p.limit, p.since.as_ref(), p.reverse),
            }
        }
        "history_remove" => {
            let ch = params.get("channel").and_then(|c| c.as_str()).unwrap_or("");
            match channel_checked(env, ch) {
                Err(e) => Err(e),
                Ok(_) => {
                    env.shared.engine.history_remove(ch);
                    Ok("{}".into())
                }
            }
        }
        "channels" => {
            let pattern = params.get("pattern").and_then(|p| p.as_str()).unwrap_or("");
            let mut parts = Vec::new();
            for st in env.shared.engine.channel_stats() {
                if st.subscribers == 0 || !glob(pattern, &st.name) {
                    continue;
                }
                parts.push(format!("\"{}\":{{\"num_clients\":{}}}", st.name, st.subscribers));
            }
            Ok(format!("{{\"channels\":{{{}}}}}", parts.join(",")))
        }
        "info" => {
            let stats = env.shared.engine.channel_stats();
            let subs: usize = stats.iter().map(|s| s.subscribers).sum();
            let chans = stats.iter().filter(|s| s.subscribers > 0).count();
            let clients = env.shared.stats.connections.load(Ordering::Relaxed);
            let cf_clients = env.shared.stats.cf_clients.load(Ordering::Relaxed);
            let uptime = env.now_ms / 1000;
            Ok(format!(
                "{{\"nodes\":[{{\"uid\":\"{}\",\"name\":\"herald\",\"version\":\"{} herald\",\"num_clients\":{},\"num_users\":{},\"num_subs\":{subs},\"num_channels\":{chans},\"uptime\":{uptime},\"num_connections\":{clients}}}]}}",
                env.shared.node_id,
                env!("CARGO_PKG_VERSION"),
                cf_clients,
                env.cf_user_count(),
            ))
        }
        _ => return None,
    })
}

/// Centrifugo's `channels` pattern: `*` matches any run of characters; empty matches all.
fn glob(pattern: &str, s: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(pos) => rest = &rest[pos + p.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_patterns() {
        use super::glob;
        assert!(glob("", "x"));
        assert!(glob("chat:*", "chat:room"));
        assert!(!glob("chat:*", "news"));
        assert!(glob("*room*", "chat:room:1"));
        assert!(glob("a", "a"));
        assert!(!glob("a", "ab"));
    }
}
