//! The Centrifugo client protocol on a connection (`/connection/websocket`, and the
//! unidirectional transports' connect step): connect with a JWT, subscribe (with
//! namespaces, permissions, subscription tokens, `$` private and `#` user-limited channels,
//! recovery by epoch + offset), publish, history, presence, refresh, pings, and join/leave.
//!
//! Owns: per-connection Centrifugo state ([`CfClient`]) and command handling. Called by the
//! WebSocket transport (frames), the worker (events, API user commands) and the timer
//! (pings). Replies and pushes are queued on the connection; no socket is touched. Never
//! logs tokens or message data.

use crate::hub::bus::{Event, Note, UserCmd};
use crate::hub::check_cf_channel as check_channel;
use crate::hub::envelope::json_data;
use crate::proto::centrifugo::{self as proto, Command, Disconnect, Error, SubscribeReq};
use crate::proto::jwt::{TokenError, Verifier};
use crate::proto::ws::{self as codec, Opcode};
use crate::transport::fanout;
use crate::transport::session::{State, WsMode};
use crate::transport::{Env, Session, Sessions};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Centrifugo state of one connection (kept on the `Session`, so it outlives state changes
/// and is cleaned up — presence, leave — when the connection goes).
pub struct CfClient {
    pub id: Arc<str>,
    pub user: Arc<str>,
    pub conn_info: Option<Bytes>,
    pub connected: bool,
    /// Unix seconds after which the connection must have refreshed its token.
    pub expires_at: Option<i64>,
    pub subs: Vec<CfSub>,
    /// A `{}` ping was sent and its pong must arrive by then.
    pub pong_deadline_ms: Option<u64>,
    /// Unidirectional transport: bare pushes, no commands after connect.
    pub uni: bool,
}

/// One Centrifugo subscription.
pub struct CfSub {
    pub channel: Arc<str>,
    pub info: Bytes,
    pub join_leave: bool,
    pub presence: bool,
    pub expires_at: Option<i64>,
}

impl CfClient {
    fn new(id: String, uni: bool) -> CfClient {
        CfClient {
            id: Arc::from(id),
            user: Arc::from(""),
            conn_info: None,
            connected: false,
            expires_at: None,
            subs: Vec::new(),
            pong_deadline_ms: None,
            uni,
        }
    }
}

/// Build the token verifier from the configuration.
pub fn verifier(cfg: &crate::config::Config) -> Verifier {
    use crate::proto::jwt::Secret;
    let t = &cfg.client.token;
    let secret = (!t.hmac_secret_key.is_empty()).then(|| Secret::new(t.hmac_secret_key.as_bytes()));
    Verifier::new(secret)
        .with_audience((!t.audience.is_empty()).then(|| t.audience.clone()))
        .with_issuer((!t.issuer.is_empty()).then(|| t.issuer.clone()))
}

pub fn sub_verifier(cfg: &crate::config::Config) -> Verifier {
    use crate::proto::jwt::Secret;
    let st = &cfg.client.subscription_token;
    if st.enabled && !st.hmac_secret_key.is_empty() {
        Verifier::new(Some(Secret::new(st.hmac_secret_key.as_bytes())))
    } else {
        verifier(cfg)
    }
}

/// Start Centrifugo state on a freshly upgraded connection.
pub fn attach(env: &mut Env, conn: &mut Session, uni: bool) {
    conn.cf = Some(Box::new(CfClient::new(env.ids.next_id(), uni)));
}

fn send_text(env: &mut Env, conn: &mut Session, s: &[u8]) {
    let f = codec::frame(Opcode::Text, s);
    env.queue(conn, f);
}

/// Close the connection with a Centrifugo disconnect code (in the WebSocket close frame).
pub fn disconnect(env: &mut Env, conn: &mut Session, d: Disconnect) {
    log::debug!("conn {}:{} from {}: centrifugo disconnect {} {}", env.id, conn.id.key, conn.peer, d.code, d.reason);
    if matches!(conn.state, State::Ws(_)) {
        crate::transport::ws::close(env, conn, d.code, d.reason);
    } else {
        env.close_after_flush(conn);
    }
}

/// A text or binary frame from a bidirectional client: one or more newline-separated
/// JSON commands.
pub fn on_frame(env: &mut Env, conn: &mut Session, data: &[u8]) {
    if conn.cf.as_ref().is_some_and(|c| c.uni) {
        // Unidirectional WebSocket: the first message may carry the connect request.
        if conn.cf.as_ref().is_some_and(|c| c.connected) {
            return;
        }
        match serde_json::from_slice::<proto::ConnectReq>(data) {
            Ok(req) => return connect(env, conn, 0, req),
            Err(_) => return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST),
        }
    }
    for raw in proto::split_commands(data) {
        if conn.dead || !matches!(conn.state, State::Ws(_)) {
            return;
        }
        let cmd: Command = match serde_json::from_slice(raw) {
            Ok(c) => c,
            Err(_) => return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST),
        };
        command(env, conn, cmd);
    }
}

fn command(env: &mut Env, conn: &mut Session, cmd: Command) {
    let id = cmd.id;
    let connected = conn.cf.as_ref().is_some_and(|c| c.connected);
    if let Some(req) = cmd.connect {
        if connected {
            return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
        }
        return connect(env, conn, id, req);
    }
    if !connected {
        // Anything but connect before connecting is a protocol error.
        return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
    }
    if id == 0 {
        // `{}`: the client's pong. Nothing else may come without an id.
        if let Some(cf) = conn.cf.as_mut() {
            if cf.pong_deadline_ms.take().is_some() {
                pong_received(env, conn);
            }
        }
        return;
    }
    let (method, res): (&str, Result<String, Error>) = if let Some(r) = cmd.subscribe {
        return subscribe(env, conn, id, r, false);
    } else if let Some(r) = cmd.unsubscribe {
        ("unsubscribe", unsubscribe(env, conn, &r.channel).map(|_| "{}".into()))
    } else if let Some(r) = cmd.publish {
        ("publish", publish(env, conn, &r.channel, r.data.as_deref().map(|d| d.get().as_bytes())))
    } else if let Some(r) = cmd.history {
        ("history", history(env, conn, &r))
    } else if let Some(r) = cmd.presence {
        ("presence", presence(env, conn, &r.channel, false))
    } else if let Some(r) = cmd.presence_stats {
        ("presence_stats", presence(env, conn, &r.channel, true))
    } else if let Some(r) = cmd.refresh {
        return refresh(env, conn, id, &r.token);
    } else if let Some(r) = cmd.sub_refresh {
        ("sub_refresh", sub_refresh(env, conn, &r.channel, &r.token))
    } else if cmd.ping.is_some() {
        ("ping", Ok("{}".into()))
    } else if cmd.send.is_some() {
        return; // asynchronous message: no handler on this server
    } else {
        ("", Err(proto::METHOD_NOT_FOUND))
    };
    let text = match res {
        Ok(body) => proto::reply(id, method, &body),
        Err(e) => proto::error_reply(id, e),
    };
    send_text(env, conn, text.as_bytes());
}

pub(crate) fn connect(env: &mut Env, conn: &mut Session, id: u32, req: proto::ConnectReq) {
    let cfg = env.shared.cfg.clone();
    let now = env.unix_s;
    let (user, info, channels, expire_at) = if req.token.is_empty() {
        if !cfg.client.allow_anonymous_connect_without_token {
            return disconnect(env, conn, proto::INVALID_TOKEN);
        }
        (String::new(), None, Vec::new(), None)
    } else {
        match env.verifier.verify_connect(&req.token, now) {
            Ok(v) => {
                let c = v.into_claims();
                let exp = c.connection_expires_at();
                let info = c.info.map(|i| Bytes::from(i.to_string()));
                // `subs` (with per-channel options) replaces `channels` when present.
                let chans: Vec<String> = if c.subs.is_empty() { c.channels } else { c.subs.keys().cloned().collect() };
                (c.sub, info, chans, exp)
            }
            Err(TokenError::Expired | TokenError::NotYetValid) => {
                let t = proto::error_reply(id, proto::TOKEN_EXPIRED);
                return send_text(env, conn, t.as_bytes());
            }
            Err(e) => {
                log::debug!("conn {}:{} from {}: connect token refused: {e:?}", env.id, conn.id.key, conn.peer);
                return disconnect(env, conn, proto::INVALID_TOKEN);
            }
        }
    };
    let Some(cf) = conn.cf.as_mut() else { return };
    cf.user = Arc::from(user.as_str());
    cf.conn_info = info;
    cf.connected = true;
    cf.expires_at = expire_at;
    let client_id = cf.id.clone();
    let uni = cf.uni;
    env.cf_users.entry(cf.user.clone()).or_default().push(conn.id);
    if let Ok(mut u) = env.shared.users.lock() {
        *u.entry(cf.user.clone()).or_insert(0) += 1;
    }
    env.shared.stats.cf_clients.fetch_add(1, Ordering::Relaxed);
    let ping_s = cfg.client.ping_interval.0 / 1000;
    let mut body = format!(
        "{{\"client\":\"{client_id}\",\"version\":\"{} herald\",\"ping\":{},\"pong\":{}",
        env!("CARGO_PKG_VERSION"),
        ping_s.max(1),
        !uni
    );
    if let Some(exp) = expire_at {
        body.push_str(&format!(",\"expires\":true,\"ttl\":{}", (exp - now).max(0)));
    }
    // Server-side subscriptions from the token's `channels`, and the ones the client asks
    // to resume in `subs`.
    let mut subs = Vec::new();
    for ch in channels.iter().filter(|c| check_channel(c).is_ok()) {
        let r = req.subs.get(ch).cloned().unwrap_or_default();
        subs.push((ch.clone(), r));
    }
    if let State::Ws(ws) = &mut conn.state {
        ws.next_ping_ms = env.now_ms + cfg.client.ping_interval.0;
    }
    if !subs.is_empty() {
        body.push_str(",\"subs\":{");
        let mut first = true;
        for (ch, mut r) in subs {
            r.channel = ch.clone();
            if let Ok(res) = do_subscribe(env, conn, r, true) {
                if !first {
                    body.push(',');
                }
                first = false;
                body.push_str(&format!("\"{ch}\":{res}"));
            }
        }
        body.push('}');
    }
    body.push('}');
    log::debug!("conn {}:{} from {}: centrifugo client {client_id} connected", env.id, conn.id.key, conn.peer);
    if uni {
        // Unidirectional: the connect result is the first push.
        let push = format!("{{\"connect\":{body}}}");
        uni_send(env, conn, push.as_bytes());
    } else {
        send_text(env, conn, proto::reply(id, "connect", &body).as_bytes());
    }
}

/// Send a push on a unidirectional transport (WebSocket text frame, SSE event or
/// newline-delimited JSON).
pub fn uni_send(env: &mut Env, conn: &mut Session, json: &[u8]) {
    match &conn.state {
        State::Ws(_) => send_text(env, conn, json),
        State::Stream { kind: crate::transport::session::StreamKind::CfSse, .. } => {
            let ev = crate::hub::envelope::sse_event(None, json);
            env.queue(conn, ev);
        }
        State::Stream { .. } => {
            let mut b = BytesMut::with_capacity(json.len() + 1);
            b.put_slice(json);
            b.put_u8(b'\n');
            env.queue(conn, b.freeze());
        }
        _ => {}
    }
}

fn user_allowed_in_limited(env: &Env, user: &str, channel: &str) -> bool {
    !user.is_empty() && env.shared.cfg.channel.limited_users(channel).is_some_and(|mut us| us.any(|u| u == user))
}

/// Marker error: a subscription token that is not valid for this client disconnects it
/// with 3500, as Centrifugo does.
const INVALID_SUB_TOKEN: Error = Error { code: 0, message: "invalid token" };

fn subscribe(env: &mut Env, conn: &mut Session, id: u32, req: SubscribeReq, server_side: bool) {
    let text = match do_subscribe(env, conn, req, server_side) {
        Ok(body) => proto::reply(id, "subscribe", &body),
        Err(e) if e == INVALID_SUB_TOKEN => return disconnect(env, conn, proto::INVALID_TOKEN),
        Err(e) => proto::error_reply(id, e),
    };
    send_text(env, conn, text.as_bytes());
}

/// Check and perform a subscription; returns the subscribe result JSON.
fn do_subscribe(env: &mut Env, conn: &mut Session, req: SubscribeReq, server_side: bool) -> Result<String, Error> {
    let cfg = env.shared.cfg.clone();
    let ch = req.channel.as_str();
    if check_channel(ch).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    let Some((_, opts)) = cfg.channel.resolve(ch) else { return Err(proto::UNKNOWN_CHANNEL) };
    let opts = opts.clone();
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    if cf.subs.iter().any(|s| &*s.channel == ch) {
        return Err(proto::ALREADY_SUBSCRIBED);
    }
    if cf.subs.len() >= cfg.client.channel_limit
        || fanout::full_channel(env, std::slice::from_ref(&req.channel)).is_some()
    {
        return Err(proto::LIMIT_EXCEEDED);
    }
    let user = cf.user.clone();
    let mut chan_info: Option<Bytes> = None;
    let mut sub_expires = None;
    if !server_side {
        if !req.token.is_empty() {
            // As Centrifugo: a token that does not verify is "permission denied"; one that
            // verifies but names another channel, user or client disconnects (3500).
            let v = env.sub_verifier.verify_subscribe(&req.token, ch, env.unix_s).map_err(|e| match e {
                TokenError::Expired | TokenError::NotYetValid => proto::TOKEN_EXPIRED,
                TokenError::WrongChannel => INVALID_SUB_TOKEN,
                _ => proto::PERMISSION_DENIED,
            })?;
            let c = v.into_claims();
            let client_id = conn.cf.as_ref().map(|c| c.id.clone()).unwrap_or_else(|| Arc::from(""));
            if c.sub != *user || (!c.client.is_empty() && *c.client != *client_id) {
                return Err(INVALID_SUB_TOKEN);
            }
            sub_expires = c.subscription_expires_at();
            chan_info = c.info.map(|i| Bytes::from(i.to_string()));
        } else if cfg.channel.is_private(ch) {
            return Err(proto::PERMISSION_DENIED);
        } else if opts.allow_user_limited_channels && cfg.channel.limited_users(ch).is_some() {
            if !user_allowed_in_limited(env, &user, ch) {
                return Err(proto::PERMISSION_DENIED);
            }
        } else {
            let anon = user.is_empty();
            let allowed = opts.allow_subscribe_for_client && (!anon || opts.allow_subscribe_for_anonymous);
            if !allowed {
                return Err(proto::PERMISSION_DENIED);
            }
        }
    }
    let recoverable = opts.history() && (opts.force_recovery || opts.force_positioning || req.recoverable);
    let recovering = req.recover && recoverable;
    let since = if recovering { Some(req.offset) } else { None };
    let reads = fanout::subscribe(env, conn, &[ch.to_string()], &[since]);
    let read = reads.into_iter().next().ok_or(proto::INTERNAL)?;
    let mut recovered = false;
    let mut pubs: Vec<Arc<crate::hub::Message>> = Vec::new();
    if recovering && *read.epoch == *req.epoch {
        recovered = !read.missed;
        pubs = read.messages;
    }
    // Live deliveries continue after what this reply carries (or after the stream top).
    let after =
        pubs.last().map(|m| m.id).unwrap_or(read.last_id).max(if recovering && recovered { req.offset } else { 0 });
    let after = if pubs.is_empty() { read.last_id } else { after };
    if let Some(sr) = conn.subs.iter_mut().find(|s| &*s.channel == ch) {
        sr.last_id = after;
    }
    let info = proto::client_info(
        &user,
        conn.cf.as_ref().map(|c| &*c.id).unwrap_or(""),
        conn.cf.as_ref().and_then(|c| c.conn_info.as_deref()),
        chan_info.as_deref(),
    );
    let join_leave = opts.join_leave && (opts.force_push_join_leave || req.join_leave);
    if let Some(cf) = conn.cf.as_mut() {
        cf.subs.push(CfSub {
            channel: Arc::from(ch),
            info: info.clone(),
            join_leave,
            presence: opts.presence,
            expires_at: sub_expires,
        });
    }
    let client_id: Arc<str> = conn.cf.as_ref().map(|c| c.id.clone()).unwrap_or_else(|| Arc::from(""));
    if opts.presence {
        env.shared.engine.presence_add(ch, &client_id, &user, info.clone());
    }
    if opts.join_leave {
        let ev = Arc::new(Event {
            channel: Arc::from(ch),
            json: proto::join_leave_push(ch, &info, true),
            client: client_id,
        });
        env.shared.engine.channel_event(ch, &|| Note::Event(ev.clone()));
    }
    let mut out = String::from("{");
    let mut parts: Vec<String> = Vec::new();
    if let Some(exp) = sub_expires {
        parts.push(format!("\"expires\":true,\"ttl\":{}", (exp - env.unix_s).max(0)));
    }
    if recoverable {
        parts.push("\"recoverable\":true".into());
        parts.push(format!("\"epoch\":\"{}\"", read.epoch));
        if read.last_id > 0 {
            parts.push(format!("\"offset\":{}", read.last_id));
        }
        parts.push("\"positioned\":true".into());
    }
    if recovering {
        parts.push("\"was_recovering\":true".into());
        if recovered {
            parts.push("\"recovered\":true".into());
        }
    }
    if !pubs.is_empty() {
        let mut b = BytesMut::new();
        b.put_slice(b"\"publications\":[");
        for (i, m) in pubs.iter().enumerate() {
            if i > 0 {
                b.put_u8(b',');
            }
            crate::transport::wire::cf_pub(m).write(&mut b);
        }
        b.put_u8(b']');
        parts.push(String::from_utf8_lossy(&b).into_owned());
    }
    out.push_str(&parts.join(","));
    out.push('}');
    log::debug!(
        "conn {}:{}: centrifugo subscribe {ch} recovering={recovering} recovered={recovered}",
        env.id,
        conn.id.key
    );
    Ok(out)
}

/// Leave one channel (client unsubscribe, API unsubscribe, or connection close).
fn unsubscribe(env: &mut Env, conn: &mut Session, channel: &str) -> Result<(), Error> {
    let Some(cf) = conn.cf.as_mut() else { return Err(proto::INTERNAL) };
    let Some(pos) = cf.subs.iter().position(|s| &*s.channel == channel) else { return Ok(()) };
    let sub = cf.subs.swap_remove(pos);
    let client = cf.id.clone();
    leave_effects(env, &sub, &client);
    if let Some(i) = conn.subs.iter().position(|s| &*s.channel == channel) {
        let sr = conn.subs.swap_remove(i);
        let last = env.local.remove(&sr.channel, sr.slot);
        env.shared.engine.unsubscribe(&sr.channel, env.id, last);
    }
    Ok(())
}

fn leave_effects(env: &mut Env, sub: &CfSub, client: &Arc<str>) {
    let cfg = env.shared.cfg.clone();
    if sub.presence {
        env.shared.engine.presence_remove(&sub.channel, client);
    }
    if cfg.channel.resolve(&sub.channel).is_some_and(|(_, o)| o.join_leave) {
        let ev = Arc::new(Event {
            channel: sub.channel.clone(),
            json: proto::join_leave_push(&sub.channel, &sub.info, false),
            client: client.clone(),
        });
        env.shared.engine.channel_event(&sub.channel, &|| Note::Event(ev.clone()));
    }
}

/// The connection is going away: presence entries and leave events for every channel.
pub fn on_close(env: &mut Env, conn: &mut Session) {
    let Some(cf) = conn.cf.take() else { return };
    if cf.connected {
        for s in &cf.subs {
            leave_effects(env, s, &cf.id);
        }
        if let Some(list) = env.cf_users.get_mut(&cf.user) {
            list.retain(|c| *c != conn.id);
            if list.is_empty() {
                env.cf_users.remove(&cf.user);
            }
        }
        env.shared.stats.cf_clients.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut u) = env.shared.users.lock() {
            if let Some(n) = u.get_mut(&cf.user) {
                *n -= 1;
                if *n == 0 {
                    u.remove(&cf.user);
                }
            }
        }
    }
}

fn publish(env: &mut Env, conn: &mut Session, channel: &str, data: Option<&[u8]>) -> Result<String, Error> {
    let cfg = env.shared.cfg.clone();
    let data = data.ok_or(proto::BAD_REQUEST)?;
    if check_channel(channel).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    let (_, opts) = cfg.channel.resolve(channel).ok_or(proto::UNKNOWN_CHANNEL)?;
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    let subscribed = cf.subs.iter().find(|s| &*s.channel == channel);
    let anon = cf.user.is_empty();
    let allowed = (opts.allow_publish_for_client || (opts.allow_publish_for_subscriber && subscribed.is_some()))
        && (!anon || opts.allow_publish_for_anonymous);
    if !allowed {
        return Err(proto::PERMISSION_DENIED);
    }
    let info = match subscribed {
        Some(s) => s.info.clone(),
        None => proto::client_info(&cf.user, &cf.id, cf.conn_info.as_deref(), None),
    };
    env.shared.engine.publish(channel, json_data(data), Some(info).into(), env.now_ms);
    env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
    Ok("{}".into())
}

fn history(env: &mut Env, conn: &mut Session, r: &proto::HistoryReq) -> Result<String, Error> {
    let cfg = env.shared.cfg.clone();
    let (_, opts) = cfg.channel.resolve(&r.channel).ok_or(proto::UNKNOWN_CHANNEL)?;
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    let subscribed = cf.subs.iter().any(|s| *s.channel == *r.channel);
    if !(opts.allow_history_for_client || (opts.allow_history_for_subscriber && subscribed)) {
        return Err(proto::PERMISSION_DENIED);
    }
    if !opts.history() {
        return Err(proto::NOT_AVAILABLE);
    }
    history_result(env, &r.channel, r.limit, r.since.as_ref(), r.reverse)
}

/// History for clients and the API: `{"publications":[...],"epoch":"E","offset":N}`.
pub fn history_result(
    env: &Env,
    channel: &str,
    limit: i64,
    since: Option<&proto::StreamPosition>,
    reverse: bool,
) -> Result<String, Error> {
    let engine = &env.shared.engine;
    let all = engine.history(channel, None, usize::MAX, env.now_ms);
    let mut msgs = all.messages;
    if let Some(sp) = since {
        if !sp.epoch.is_empty() && *sp.epoch != *all.epoch {
            return Err(proto::UNRECOVERABLE_POSITION);
        }
        if reverse {
            msgs.retain(|m| m.id < sp.offset);
        } else {
            msgs.retain(|m| m.id > sp.offset);
        }
    }
    if reverse {
        msgs.reverse();
    }
    // limit 0: only the stream position; negative: no limit.
    if limit >= 0 {
        msgs.truncate(limit as usize);
    }
    let mut b = BytesMut::new();
    b.put_slice(b"{\"publications\":[");
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        crate::transport::wire::cf_pub(m).write(&mut b);
    }
    b.put_slice(format!("],\"epoch\":\"{}\",\"offset\":{}}}", all.epoch, all.last_id).as_bytes());
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn presence(env: &mut Env, conn: &mut Session, channel: &str, stats: bool) -> Result<String, Error> {
    let cfg = env.shared.cfg.clone();
    let (_, opts) = cfg.channel.resolve(channel).ok_or(proto::UNKNOWN_CHANNEL)?;
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    let subscribed = cf.subs.iter().any(|s| &*s.channel == channel);
    if !(opts.allow_presence_for_client || (opts.allow_presence_for_subscriber && subscribed)) {
        return Err(proto::PERMISSION_DENIED);
    }
    if !opts.presence {
        return Err(proto::NOT_AVAILABLE);
    }
    Ok(presence_result(env, channel, stats))
}

/// Presence for clients and the API.
pub fn presence_result(env: &Env, channel: &str, stats: bool) -> String {
    let entries = env.shared.engine.presence(channel);
    if stats {
        let mut users: Vec<&str> = entries.iter().map(|(_, u, _)| u.as_str()).collect();
        users.sort();
        users.dedup();
        return format!("{{\"num_clients\":{},\"num_users\":{}}}", entries.len(), users.len());
    }
    let mut s = String::from("{\"presence\":{");
    for (i, (client, _, info)) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"{client}\":{}", String::from_utf8_lossy(info)));
    }
    s.push_str("}}");
    s
}

fn refresh(env: &mut Env, conn: &mut Session, id: u32, token: &str) {
    let now = env.unix_s;
    match env.verifier.verify_connect(token, now) {
        Ok(v) => {
            let c = v.into_claims();
            let Some(cf) = conn.cf.as_mut() else { return };
            if c.sub != *cf.user {
                return disconnect(env, conn, proto::INVALID_TOKEN);
            }
            let exp = c.connection_expires_at();
            cf.expires_at = exp;
            let mut body = format!("{{\"client\":\"{}\",\"version\":\"{} herald\"", cf.id, env!("CARGO_PKG_VERSION"));
            if let Some(e) = exp {
                body.push_str(&format!(",\"expires\":true,\"ttl\":{}", (e - now).max(0)));
            }
            body.push('}');
            send_text(env, conn, proto::reply(id, "refresh", &body).as_bytes());
        }
        Err(TokenError::Expired | TokenError::NotYetValid) => {
            send_text(env, conn, proto::error_reply(id, proto::TOKEN_EXPIRED).as_bytes());
        }
        Err(_) => disconnect(env, conn, proto::INVALID_TOKEN),
    }
}

fn sub_refresh(env: &mut Env, conn: &mut Session, channel: &str, token: &str) -> Result<String, Error> {
    let now = env.unix_s;
    let v = env.sub_verifier.verify_subscribe(token, channel, now).map_err(|e| match e {
        TokenError::Expired | TokenError::NotYetValid => proto::TOKEN_EXPIRED,
        _ => proto::PERMISSION_DENIED,
    })?;
    let c = v.into_claims();
    let cf = conn.cf.as_mut().ok_or(proto::INTERNAL)?;
    if c.sub != *cf.user {
        return Err(proto::PERMISSION_DENIED);
    }
    let sub = cf.subs.iter_mut().find(|s| &*s.channel == channel).ok_or(proto::PERMISSION_DENIED)?;
    let exp = c.subscription_expires_at();
    sub.expires_at = exp;
    Ok(match exp {
        Some(e) => format!("{{\"expires\":true,\"ttl\":{}}}", (e - now).max(0)),
        None => "{}".into(),
    })
}

/// Ping timer of a Centrifugo connection: a missing pong is 3012; an expired connection
/// token is 3005; otherwise send `{}`.
pub fn on_ping_timer(env: &mut Env, conn: &mut Session) {
    let cfg = env.shared.cfg.clone();
    let now_ms = env.now_ms;
    let Some(cf) = conn.cf.as_mut() else { return };
    if !cf.connected {
        // Connected neither in time: Centrifugo's "stale".
        return disconnect(env, conn, Disconnect { code: 3502, reason: "stale" });
    }
    if cf.pong_deadline_ms.is_some_and(|d| now_ms >= d) {
        return disconnect(env, conn, proto::NO_PONG);
    }
    let now = env.unix_s;
    if cf.expires_at.is_some_and(|e| now > e + 5) {
        return disconnect(env, conn, proto::EXPIRED);
    }
    if let Some(s) = cf.subs.iter().find(|s| s.expires_at.is_some_and(|e| now > e + 5)) {
        let _ = s;
        return disconnect(env, conn, Disconnect { code: 3006, reason: "subscription expired" });
    }
    let uni = cf.uni;
    let next;
    if cf.pong_deadline_ms.is_none() {
        if !uni {
            cf.pong_deadline_ms = Some(now_ms + cfg.client.pong_timeout.0);
        }
        next = if uni { now_ms + cfg.client.ping_interval.0 } else { now_ms + cfg.client.pong_timeout.0 };
        if uni {
            uni_send(env, conn, b"{}");
        } else {
            send_text(env, conn, b"{}");
        }
    } else {
        next = cf.pong_deadline_ms.unwrap_or(now_ms);
    }
    // After the pong arrives, the next ping is due one interval after this one.
    let next = next.min(now_ms + cfg.client.ping_interval.0);
    match &mut conn.state {
        State::Ws(ws) => ws.next_ping_ms = next,
        State::Stream { next_keepalive_ms, .. } => *next_keepalive_ms = now_ms + cfg.client.ping_interval.0,
        _ => {}
    }
}

/// When the pong came back, schedule the next ping an interval after the last one.
pub fn pong_received(env: &Env, conn: &mut Session) {
    let interval = env.shared.cfg.client.ping_interval.0;
    if let State::Ws(ws) = &mut conn.state {
        ws.next_ping_ms = env.now_ms + interval;
    }
}

/// A join/leave event for a channel this worker has subscribers on.
pub fn deliver_event<S: Sessions>(env: &mut Env, conns: &mut S, ev: &Event) {
    let Some(set) = env.local.take(&ev.channel) else { return };
    let mut frame: Option<Bytes> = None;
    for (_, id) in set.iter() {
        let Some(conn) = conns.session(id.key as usize) else { continue };
        if conn.id.gen != id.gen || conn.dead {
            continue;
        }
        let Some(cf) = conn.cf.as_ref() else { continue };
        if !cf.subs.iter().any(|s| s.channel == ev.channel && s.join_leave) || cf.uni {
            continue;
        }
        let f = frame.get_or_insert_with(|| codec::frame(Opcode::Text, &ev.json)).clone();
        env.queue(conn, f);
    }
    env.local.put_back(&ev.channel, set);
}

/// A server API command for a user's connections on this worker.
pub fn user_command<S: Sessions>(env: &mut Env, conns: &mut S, cmd: &UserCmd) {
    let user = match cmd {
        UserCmd::Subscribe { user, .. }
        | UserCmd::Unsubscribe { user, .. }
        | UserCmd::Disconnect { user, .. }
        | UserCmd::Refresh { user, .. } => user.as_str(),
    };
    let Some(ids) = env.cf_users.get(user).cloned() else { return };
    for id in ids {
        let Some(conn) = conns.session(id.key as usize) else { continue };
        if conn.id.gen != id.gen || conn.dead {
            continue;
        }
        match cmd {
            UserCmd::Subscribe { channel, .. } => {
                let req = SubscribeReq { channel: channel.clone(), ..Default::default() };
                if let Ok(res) = do_subscribe(env, conn, req, true) {
                    let push = format!("{{\"push\":{{\"channel\":\"{channel}\",\"subscribe\":{res}}}}}");
                    if conn.cf.as_ref().is_some_and(|c| c.uni) {
                        let bare = format!("{{\"channel\":\"{channel}\",\"subscribe\":{res}}}");
                        uni_send(env, conn, bare.as_bytes());
                    } else {
                        send_text(env, conn, push.as_bytes());
                    }
                }
            }
            UserCmd::Unsubscribe { channel, .. } => {
                if conn.cf.as_ref().is_some_and(|c| c.subs.iter().any(|s| *s.channel == **channel)) {
                    let _ = unsubscribe(env, conn, channel);
                    let push = format!(
                        "{{\"push\":{{\"channel\":\"{channel}\",\"unsubscribe\":{{\"code\":2000,\"reason\":\"server unsubscribe\"}}}}}}"
                    );
                    send_text(env, conn, push.as_bytes());
                }
            }
            UserCmd::Disconnect { code, reason, .. } => {
                let reason: &'static str = if reason.is_empty() { "force disconnect" } else { "disconnect" };
                disconnect(env, conn, Disconnect { code: *code, reason });
            }
            UserCmd::Refresh { expired: true, .. } => disconnect(env, conn, proto::EXPIRED),
            UserCmd::Refresh { expire_at, .. } => {
                let exp = expire_at.filter(|e| *e > 0);
                if let Some(cf) = conn.cf.as_mut() {
                    cf.expires_at = exp;
                    let body = match exp {
                        Some(e) => format!("{{\"expires\":true,\"ttl\":{}}}", (e - env.unix_s).max(0)),
                        None => "{}".into(),
                    };
                    if cf.uni {
                        uni_send(env, conn, format!("{{\"refresh\":{body}}}").as_bytes());
                    } else {
                        send_text(env, conn, format!("{{\"push\":{{\"refresh\":{body}}}}}").as_bytes());
                    }
                }
            }
        }
    }
}

/// Start a Centrifugo WebSocket connection after the upgrade (the stale timer runs until
/// connect arrives).
pub fn on_upgrade(env: &mut Env, conn: &mut Session, uni: bool) {
    attach(env, conn, uni);
    if let State::Ws(ws) = &mut conn.state {
        // Until connect arrives the ping timer is the "stale" deadline.
        ws.next_ping_ms = env.now_ms + env.shared.cfg.handshake_timeout_ms;
        ws.mode = if uni { WsMode::CfUni } else { WsMode::Centrifugo };
    }
}
