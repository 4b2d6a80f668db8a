//! Centrifugo's proxies on a connection: the connect, refresh, subscribe, publish,
//! sub_refresh and RPC decisions the application backend makes over HTTP, as Centrifugo v6
//! asks them (`internal/proxy`, `internal/client/handler.go`) and centrifuge applies the
//! answers.
//!
//! Owns: when a command goes to a proxy instead of the token or the namespace's
//! permissions, the request each proxy gets (identity, transport, the headers the proxy
//! forwards, `data`, `meta`), and what each answer does: `disconnect` closes the
//! connection with the backend's code, `error` answers the command with the backend's
//! code and message, `result` continues the command (a connect with the user, expiry,
//! info, data, meta and server-side subscriptions it names; a subscription with its info,
//! data, expiry and option overrides; a publication with replaced data, tags,
//! `skip_history`, idempotency key; an RPC result). A call that fails (unreachable,
//! timeout, status, queue full) answers the command with error 100 (temporary), as
//! Centrifugo does; a failed server-side refresh or sub_refresh gives the connection 60 s
//! more, as Centrifugo does. Called by the command handling in [`super::client`] and its
//! ping timer (refresh, sub_refresh at expiry).
//!
//! Must never wait: every call goes through [`Env::proxy`], which parks the session (its
//! input is not read, work aimed at it waits in order) until the proxy threads answer
//! through the worker's inbox. One call per connection at a time follows from that.

use super::client::{self, Credentials, Prepared, SubGrant};
use crate::config::proxy::{Kind, Proxy};
use crate::hub::envelope::json_data;
use crate::hub::{Op, PubMeta};
use crate::proto::centrifugo::{self as proto, ConnectReq, Disconnect, PublishReq, RpcReq, SubscribeReq};
use crate::proto::centrifugo_pb as pb;
use crate::proto::proxy::{Answer, BackendDisconnect, BackendError, Failure, Request, Transform};
use crate::transport::env::Call;
use crate::transport::session::{State, StreamKind};
use crate::transport::{Env, Session};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// centrifuge's cap on an expiry (a year from now): longer is surely a bug.
const MAX_TTL_S: i64 = 365 * 24 * 3600;

/// What a failed server-side refresh or sub_refresh gives the connection: Centrifugo lets
/// it live a minute more and asks again, so a backend hiccup drops nobody.
const RETRY_S: i64 = 60;

/// The transport's name as Centrifugo reports it to proxies.
fn transport_name(conn: &Session) -> &'static str {
    let uni = conn.cf.as_ref().is_some_and(|c| c.uni);
    match (&conn.state, uni) {
        (State::Stream { kind: StreamKind::CfSse, .. }, true) => "uni_sse",
        (State::Stream { .. }, true) => "uni_http_stream",
        (State::Stream { kind: StreamKind::CfSse, .. }, false) => "sse",
        (State::Stream { .. }, false) => "http_stream",
        (_, true) => "uni_websocket",
        _ => "websocket",
    }
}

/// Headers that never go to the backend, whatever a proxy lists: the framing of the
/// client's request is not this request's, and `Content-Type` is the proxy's own.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
];

/// The headers of a call, as Centrifugo sets them: `static_headers` first, then the
/// connect command's `headers` the proxy lists in `emulated_headers`, then the client's
/// HTTP request headers it lists in `http_headers` (all their values; they replace any of
/// the same name set before).
fn headers(conn: &Session, p: &Proxy) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: &str, v: &str| {
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        out.push((k.to_string(), v.to_string()));
    };
    for (k, v) in &p.http.static_headers {
        set(&mut out, k, v);
    }
    if let Some(st) = conn.cf.as_ref().and_then(|c| c.proxy.as_deref()) {
        let listed = |names: &[String], k: &str| names.iter().any(|n| n.eq_ignore_ascii_case(k));
        for (k, v) in &st.emulated_headers {
            if listed(&p.emulated_headers, k) {
                set(&mut out, k, v);
            }
        }
        let transport: Vec<&(String, String)> = st.headers.iter().filter(|(k, _)| listed(&p.http_headers, k)).collect();
        for (k, _) in &transport {
            out.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        }
        out.extend(transport.into_iter().cloned());
    }
    out.retain(|(k, _)| !NOT_FORWARDED.iter().any(|h| h.eq_ignore_ascii_case(k)));
    out
}

/// A call to proxy `p` for this connection; `r` names what it is about (the connection's
/// identity, transport, protocol, encoding and meta are filled in here).
fn build<'a>(conn: &'a Session, kind: Kind, p: &Proxy, mut r: Request<'a>) -> Call {
    let cf = conn.cf.as_deref();
    r.client = cf.map_or("", |c| &c.id);
    r.transport = transport_name(conn);
    r.protocol = if client::is_pb(conn) { "protobuf" } else { "json" };
    r.binary = p.binary_encoding;
    if kind != Kind::Connect {
        r.user = Some(cf.map_or("", |c| &c.user));
        if p.include_connection_meta {
            r.meta = cf.and_then(|c| c.proxy.as_deref()).and_then(|p| p.meta.as_deref());
        }
    }
    Call {
        kind,
        url: p.endpoint.clone(),
        timeout: std::time::Duration::from_millis(p.timeout.0),
        headers: headers(conn, p),
        body: crate::proto::proxy::encode(&r),
        transforms: p
            .http
            .status_to_code_transforms
            .iter()
            .map(|t| Transform {
                status: t.status_code,
                error: (t.to_error.code > 0).then(|| BackendError {
                    code: t.to_error.code,
                    message: t.to_error.message.clone(),
                    temporary: t.to_error.temporary,
                }),
                disconnect: (t.to_disconnect.code > 0)
                    .then(|| BackendDisconnect { code: t.to_disconnect.code, reason: t.to_disconnect.reason.clone() }),
            })
            .collect(),
    }
}

/// Close the connection as the backend asked.
fn close(env: &mut Env, conn: &mut Session, d: &BackendDisconnect) {
    let (code, reason) = d.close();
    log::debug!("conn {}:{} from {}: proxy disconnect {code} {reason}", env.id, conn.id.key, conn.peer);
    if matches!(conn.state, State::Ws(_)) {
        crate::transport::ws::close(env, conn, code, reason);
    } else {
        env.close_after_flush(conn);
    }
}

fn failed(env: &Env, conn: &Session, kind: Kind, f: &Failure) {
    // The proxy threads log the failure with the endpoint; this names the connection.
    log::debug!("conn {}:{} from {}: proxy {}: {f}", env.id, conn.id.key, conn.peer, kind.as_str());
}

/// A command's proxy answer: its result fields, or `None` once the client got what stands
/// in for them (Centrifugo's internal error for a failed call, the backend's error, or the
/// backend's disconnect).
fn answered(
    env: &mut Env,
    conn: &mut Session,
    kind: Kind,
    id: u32,
    r: Result<Box<Answer>, Failure>,
) -> Option<crate::proto::proxy::Fields> {
    if conn.dead {
        return None;
    }
    let a = match r {
        Ok(a) => a,
        Err(f) => {
            failed(env, conn, kind, &f);
            client::send_error(env, conn, id, proto::INTERNAL);
            return None;
        }
    };
    if let Some(d) = &a.disconnect {
        close(env, conn, d);
        return None;
    }
    if let Some(e) = &a.error {
        client::send_backend_error(env, conn, id, e);
        return None;
    }
    Some(a.result.unwrap_or_default())
}

/// The internal error, as a backend error (one path for both).
fn internal() -> BackendError {
    BackendError { code: proto::INTERNAL.code.into(), message: proto::INTERNAL.message.into(), temporary: true }
}

/// A JSON payload from the backend: JSON text as it is, anything else (decoded `b64*`
/// bytes) as a JSON string, so what goes to clients is always JSON.
fn json(b: Option<Bytes>) -> Option<Bytes> {
    b.map(|b| json_data(&b))
}

/// An expiry from a proxy answer: 0 is none; capped a year ahead.
fn expiry(at: i64, now: i64) -> Option<i64> {
    (at > 0).then(|| at.min(now + MAX_TTL_S))
}

// ---------------------------------------------------------------------------------- connect

/// A connect command without a token, decided by the connect proxy.
pub(super) fn connect(env: &mut Env, conn: &mut Session, id: u32, req: ConnectReq) {
    let Some(p) = env.shared.proxies.connect.clone() else { return };
    let r = Request {
        name: &req.name,
        version: &req.version,
        data: req.data.as_ref().map(|d| d.get().as_bytes()),
        ..Default::default()
    };
    let call = build(conn, Kind::Connect, &p, r);
    env.proxy(conn, call, move |env, conn, answer| connect_answer(env, conn, id, req, answer));
}

fn connect_answer(env: &mut Env, conn: &mut Session, id: u32, req: ConnectReq, r: Result<Box<Answer>, Failure>) {
    if conn.dead {
        return;
    }
    let a = match r {
        Ok(a) => a,
        Err(f) => {
            failed(env, conn, Kind::Connect, &f);
            return connect_refused(env, conn, id, &internal());
        }
    };
    if let Some(d) = &a.disconnect {
        return close(env, conn, d);
    }
    if let Some(e) = &a.error {
        return connect_refused(env, conn, id, e);
    }
    let Some(r) = a.result else {
        // No credentials: anonymous where allowed, else centrifuge's "client credentials
        // not found" (3501).
        if env.shared.cfg.client.allow_anonymous_connect_without_token {
            return client::connected(env, conn, id, req, Credentials::default());
        }
        return client::disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
    };
    let now = env.unix_s;
    let expire_at = expiry(r.expire_at, now);
    if expire_at.is_some_and(|e| e < now) {
        return connect_refused(env, conn, id, &error_of(proto::EXPIRED_ERROR));
    }
    // `channels`, then `subs` (with options) over them; an unknown namespace fails the
    // connect (102), as in Centrifugo.
    let mut channels: Vec<(String, Option<crate::proto::proxy::SubOptions>)> = Vec::new();
    for ch in r.channels {
        channels.retain(|(c, _)| *c != ch);
        channels.push((ch, Some(Default::default())));
    }
    for (ch, mut o) in r.subs {
        o.info = json(o.info);
        o.data = json(o.data);
        channels.retain(|(c, _)| *c != ch);
        channels.push((ch, Some(o)));
    }
    if let Some((ch, _)) = channels.iter().find(|(c, _)| env.shared.cfg.channel.resolve(c).is_none()) {
        log::info!("conn {}:{}: connect proxy named channel {ch} of an unknown namespace", env.id, conn.id.key);
        return connect_refused(env, conn, id, &error_of(proto::UNKNOWN_CHANNEL));
    }
    let creds = Credentials { user: r.user, info: json(r.info), channels, expire_at, data: json(r.data), meta: r.meta };
    client::connected(env, conn, id, req, creds);
}

fn error_of(e: proto::Error) -> BackendError {
    BackendError { code: e.code.into(), message: e.message.into(), temporary: e.temporary() }
}

/// A refused connect: an error reply on a bidirectional connection; on a unidirectional
/// one (which has no replies) the disconnect centrifuge maps the error to.
fn connect_refused(env: &mut Env, conn: &mut Session, id: u32, e: &BackendError) {
    if !conn.cf.as_ref().is_some_and(|c| c.uni) {
        return client::send_backend_error(env, conn, id, e);
    }
    let d = match e.code {
        109 | 110 => proto::EXPIRED,
        103 => proto::PERMISSION_DENIED_DISCONNECT,
        111 => Disconnect { code: 3013, reason: "too many requests" },
        _ => proto::SERVER_ERROR,
    };
    client::disconnect(env, conn, d);
}

// ---------------------------------------------------------------------------------- refresh

/// The connection reached its expiry and a refresh proxy is configured: ask it (from the
/// ping timer). A new expiry extends the connection silently; `expired`, no result, or an
/// expiry not in the future closes it (3005); a backend error closes it with 3004, a
/// backend disconnect with its code; a failed call gives it another minute.
pub(super) fn refresh(env: &mut Env, conn: &mut Session) {
    let Some(p) = env.shared.proxies.refresh.clone() else { return };
    let call = build(conn, Kind::Refresh, &p, Request::default());
    env.proxy(conn, call, |env, conn, r| {
        if conn.dead {
            return;
        }
        let now = env.unix_s;
        let a = match r {
            Ok(a) => a,
            Err(f) => {
                failed(env, conn, Kind::Refresh, &f);
                if let Some(cf) = conn.cf.as_mut() {
                    cf.expires_at = Some(now + RETRY_S);
                }
                return;
            }
        };
        if let Some(d) = &a.disconnect {
            return close(env, conn, d);
        }
        if a.error.is_some() {
            return client::disconnect(env, conn, proto::SERVER_ERROR);
        }
        let Some(r) = a.result.filter(|r| !r.expired) else {
            return client::disconnect(env, conn, proto::EXPIRED);
        };
        let Some(cf) = conn.cf.as_mut() else { return };
        if let Some(e) = expiry(r.expire_at, now) {
            cf.expires_at = Some(e);
            if let Some(info) = json(r.info) {
                cf.conn_info = Some(info);
            }
        }
        if let Some(m) = r.meta {
            cf.proxy_state().meta = Some(m);
        }
        if cf.expires_at.is_some_and(|e| e <= now) {
            client::disconnect(env, conn, proto::EXPIRED);
        }
    });
}

// -------------------------------------------------------------------------------- subscribe

/// Whether a subscribe command goes to the subscribe proxy: no subscription token, a
/// namespace with `subscribe_proxy_enabled`, not a `$` private channel (refused without a
/// token before any proxy, 103) and not a `#` user-limited one in a namespace allowing them
/// (those are decided by the user list).
pub(super) fn subscribe_proxied(env: &Env, conn: &Session, req: &SubscribeReq) -> bool {
    let _ = conn;
    let chans = &env.shared.cfg.channel;
    let Some((_, o)) = chans.resolve(&req.channel) else { return false };
    req.token.is_empty()
        && o.subscribe_proxy_enabled
        && !chans.is_private(&req.channel)
        && !(o.allow_user_limited_channels && chans.limited_users(&req.channel).is_some())
}

/// A subscribe decided by the subscribe proxy (after the checks every subscribe passes:
/// channel name, namespace, not subscribed yet, limits).
pub(super) fn subscribe(env: &mut Env, conn: &mut Session, id: u32, req: SubscribeReq) {
    let opts = match client::admissible(env, conn, &req) {
        Ok(o) => o,
        Err(e) => return client::send_error(env, conn, id, e),
    };
    let Some(p) = env.shared.proxies.get(Kind::Subscribe, &opts.subscribe_proxy_name).cloned() else {
        return client::send_error(env, conn, id, proto::NOT_AVAILABLE);
    };
    let r = Request {
        channel: &req.channel,
        token: &req.token,
        data: req.data.as_ref().map(|d| d.get().as_bytes()),
        ..Default::default()
    };
    let call = build(conn, Kind::Subscribe, &p, r);
    env.proxy(conn, call, move |env, conn, r| {
        let Some(f) = answered(env, conn, Kind::Subscribe, id, r) else { return };
        let now = env.unix_s;
        let expires_at = expiry(f.expire_at, now);
        if expires_at.is_some_and(|e| e <= now) {
            return client::send_error(env, conn, id, proto::EXPIRED_ERROR);
        }
        let server_refresh = opts.sub_refresh_proxy_enabled;
        let grant = SubGrant { chan_info: json(f.info), expires_at, data: json(f.data), server_refresh };
        let mut p = Prepared::proxied(req, opts, grant);
        p.overrides(&f.overrides);
        client::subscribe_prepared(env, conn, id, p);
    });
}

// ------------------------------------------------------------------------------ sub_refresh

/// Whether subscriptions to `channel` are refreshed by the server through the sub_refresh
/// proxy (and a client `sub_refresh` for them is a protocol error).
pub(super) fn sub_refresh_proxied(env: &Env, channel: &str) -> bool {
    env.shared.cfg.channel.resolve(channel).is_some_and(|(_, o)| o.sub_refresh_proxy_enabled)
}

/// A subscription reached its expiry in a namespace with a sub_refresh proxy: ask it (from
/// the ping timer). A new expiry (and info) extends it; `expired`, no result, an expiry in
/// the past, a backend error or disconnect end the connection with 3006 (centrifuge's
/// "subscription expired"); a failed call gives it another minute.
pub(super) fn sub_refresh(env: &mut Env, conn: &mut Session, channel: Arc<str>) {
    let name = env.shared.cfg.channel.resolve(&channel).map(|(_, o)| o.sub_refresh_proxy_name.clone());
    let Some(p) = name.and_then(|n| env.shared.proxies.get(Kind::SubRefresh, &n).cloned()) else {
        return client::disconnect(env, conn, proto::SUBSCRIPTION_EXPIRED);
    };
    let call = build(conn, Kind::SubRefresh, &p, Request { channel: &channel, ..Default::default() });
    env.proxy(conn, call, move |env, conn, r| {
        if conn.dead {
            return;
        }
        let now = env.unix_s;
        let a = match r {
            Ok(a) => a,
            Err(f) => {
                failed(env, conn, Kind::SubRefresh, &f);
                return extend_sub(env, conn, &channel, now + RETRY_S, None);
            }
        };
        if a.disconnect.is_some() || a.error.is_some() {
            return client::disconnect(env, conn, proto::SUBSCRIPTION_EXPIRED);
        }
        let Some(r) = a.result.filter(|r| !r.expired) else {
            return client::disconnect(env, conn, proto::SUBSCRIPTION_EXPIRED);
        };
        match expiry(r.expire_at, now) {
            Some(e) if e < now => client::disconnect(env, conn, proto::SUBSCRIPTION_EXPIRED),
            Some(e) => extend_sub(env, conn, &channel, e, json(r.info)),
            // No expiry: the subscription lives on without one.
            None => extend_sub(env, conn, &channel, 0, json(r.info)),
        }
    });
}

/// Give a subscription a new expiry (0: none) and, when the backend sent one, a new
/// `chan_info` (its presence entry follows).
fn extend_sub(env: &mut Env, conn: &mut Session, channel: &str, at: i64, info: Option<Bytes>) {
    let Some(cf) = conn.cf.as_mut() else { return };
    let (user, id, conn_info) = (cf.user.clone(), cf.id.clone(), cf.conn_info.clone());
    let Some(sub) = cf.subs.iter_mut().find(|s| &*s.channel == channel) else { return };
    sub.expires_at = (at > 0).then_some(at);
    if let Some(info) = info {
        let full = proto::client_info(&user, &id, conn_info.as_deref(), Some(&info));
        sub.chan_info = Some(info);
        if sub.presence {
            env.shared.engine.presence_add(channel, &id, &user, full);
        }
    }
}

// ---------------------------------------------------------------------------------- publish

/// Whether client publications to `channel` go to the publish proxy (instead of the
/// namespace's `allow_publish_*` options).
pub(super) fn publish_proxied(env: &Env, channel: &str) -> bool {
    env.shared.cfg.channel.resolve(channel).is_some_and(|(_, o)| o.publish_proxy_enabled)
}

/// A client publication decided by the publish proxy: allowed as it is, allowed with the
/// backend's data (and tags, `skip_history`, idempotency key), or refused.
pub(super) fn publish(env: &mut Env, conn: &mut Session, id: u32, req: PublishReq) {
    let cfg = env.shared.cfg.clone();
    let Some(data) = req.data.as_ref().map(|d| json_data(d.get().as_bytes())) else {
        return client::send_error(env, conn, id, proto::BAD_REQUEST);
    };
    if crate::hub::check_cf_channel(&req.channel).is_err() {
        return client::send_error(env, conn, id, proto::BAD_REQUEST);
    }
    let Some((_, opts)) = cfg.channel.resolve(&req.channel) else {
        return client::send_error(env, conn, id, proto::UNKNOWN_CHANNEL);
    };
    let Some(p) = env.shared.proxies.get(Kind::Publish, &opts.publish_proxy_name).cloned() else {
        return client::send_error(env, conn, id, proto::NOT_AVAILABLE);
    };
    let call =
        build(conn, Kind::Publish, &p, Request { channel: &req.channel, data: Some(&data), ..Default::default() });
    let channel = req.channel;
    env.proxy(conn, call, move |env, conn, r| {
        let Some(f) = answered(env, conn, Kind::Publish, id, r) else { return };
        let Some(cf) = conn.cf.as_ref() else { return };
        let meta = PubMeta {
            info: Some(client::publisher_info(cf, &channel)),
            tags: f.tags,
            skip_history: f.skip_history,
            idempotency_key: (!f.idempotency_key.is_empty()).then_some(f.idempotency_key),
        };
        let data = json(f.data).unwrap_or(data);
        let op = Op::Publish { channel, data, meta };
        env.engine(conn, vec![op], move |env, conn, done| match done.into_iter().next().map(|d| d.published()) {
            Some(Ok(_)) => {
                env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
                client::send_reply(env, conn, id, "publish", &proto::Empty, |r| r.publish = Some(pb::Empty {}))
            }
            _ => client::send_error(env, conn, id, proto::INTERNAL),
        });
    });
}

// -------------------------------------------------------------------------------------- rpc

/// An `rpc` command: the built-in ping method (`rpc.ping`), else the RPC proxy of the
/// method's namespace. Without any RPC proxy (nor ping) it is 108, as Centrifugo answers
/// without an RPC handler; with some, an unknown RPC namespace is 104 and a namespace
/// without its proxy enabled 108.
pub(super) fn rpc(env: &mut Env, conn: &mut Session, id: u32, req: RpcReq) {
    let cfg = env.shared.cfg.clone();
    let ping = &cfg.rpc.ping;
    if ping.enabled && req.method == ping.method {
        return send_rpc(env, conn, id, None);
    }
    let r = &cfg.rpc;
    let any = r.without_namespace.proxy_enabled || r.namespaces.iter().any(|n| n.proxy_enabled);
    if !any {
        let e = if ping.enabled { proto::METHOD_NOT_FOUND } else { proto::NOT_AVAILABLE };
        return client::send_error(env, conn, id, e);
    }
    let Some(o) = r.options(&req.method) else {
        return client::send_error(env, conn, id, proto::METHOD_NOT_FOUND);
    };
    let p = if o.proxy_enabled { env.shared.proxies.get(Kind::Rpc, &o.proxy_name).cloned() } else { None };
    let Some(p) = p else {
        return client::send_error(env, conn, id, proto::NOT_AVAILABLE);
    };
    let r = Request { method: &req.method, data: req.data.as_ref().map(|d| d.get().as_bytes()), ..Default::default() };
    let call = build(conn, Kind::Rpc, &p, r);
    env.proxy(conn, call, move |env, conn, r| {
        let Some(f) = answered(env, conn, Kind::Rpc, id, r) else { return };
        send_rpc(env, conn, id, json(f.data))
    });
}

fn send_rpc(env: &mut Env, conn: &mut Session, id: u32, data: Option<Bytes>) {
    let result = proto::RpcResult { data: data.as_deref() };
    client::send_reply(env, conn, id, "rpc", &result, |r| {
        r.rpc = Some(pb::RpcResult { data: data.as_deref().map(<[u8]>::to_vec).unwrap_or_default() })
    });
}
