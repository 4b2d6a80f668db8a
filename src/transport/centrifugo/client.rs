//! The Centrifugo client protocol on a connection (`/connection/websocket`, and the
//! unidirectional transports' connect step): connect with a JWT, subscribe (with
//! namespaces, permissions, subscription tokens, `$` private and `#` user-limited channels,
//! recovery by epoch + offset), publish, history, presence, refresh, pings, and join/leave.
//!
//! Owns: per-connection Centrifugo state ([`CfClient`]) and command handling. Called by the
//! WebSocket transport (frames), the worker (events, API user commands) and the timer
//! (pings). Replies and pushes are queued on the connection; no socket is touched. Never
//! logs tokens or message data.

use crate::config::centrifugo::ChannelOptions;
use crate::hub::bus::{Event, Note, UserCmd};
use crate::hub::check_cf_channel as check_channel;
use crate::hub::engine::HistoryRead;
use crate::hub::envelope::json_data;
use crate::hub::{Done, Message, Op};
use crate::proto::centrifugo::{self as proto, Command, Disconnect, Encode, Error, SubscribeReq};
use crate::proto::centrifugo_pb as pb;
use crate::proto::jwks::Jwks;
use crate::proto::jwt::{TokenError, Verifier};
use crate::proto::ws::{self as codec, Opcode};
use crate::transport::authz;
use crate::transport::fanout;
use crate::transport::session::{Item, State, WsMode};
use crate::transport::wire::cf_pub;
use crate::transport::{Env, Session, Sessions};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Centrifugo state of one connection (kept on the `Session`, so it outlives state changes
/// and is cleaned up — presence, leave — when the connection goes).
pub struct CfClient {
    /// Client id (UUID form).
    pub id: Arc<str>,
    /// User from the connection token ("" anonymous).
    pub user: Arc<str>,
    /// The token's `info`: ClientInfo `conn_info`.
    pub conn_info: Option<Bytes>,
    /// The connect command succeeded.
    pub connected: bool,
    /// Unix seconds after which the connection must have refreshed its token.
    pub expires_at: Option<i64>,
    /// Subscriptions, in subscribe order.
    pub subs: Vec<CfSub>,
    /// A `{}` ping was sent and its pong must arrive by then.
    pub pong_deadline_ms: Option<u64>,
    /// Unidirectional transport: bare pushes, no commands after connect.
    pub uni: bool,
    /// Bidirectional emulation over an HTTP stream or SSE (`/connection/http_stream`,
    /// `/connection/sse`): replies and wrapped pushes go down the stream, commands come in
    /// through `POST /emulation` naming [`CfClient::session`].
    pub emulated: bool,
    /// The emulation session id (`w{worker}.{128 random bits}`: the worker that holds it,
    /// and a secret only this client learns, in its connect result).
    pub session: Option<Arc<str>>,
    /// The connection speaks protobuf (`?cf_protocol=protobuf` or the `centrifuge-protobuf`
    /// subprotocol): binary frames of varint-delimited commands and replies.
    pub protobuf: bool,
    /// What proxies to the application backend keep for this connection; `None` (one
    /// pointer) unless there is something to keep.
    pub proxy: Option<Box<ProxyState>>,
}

/// What a connection keeps for its proxy calls.
#[derive(Default)]
pub struct ProxyState {
    /// Headers of the connection's HTTP request that some proxy forwards (`http_headers`),
    /// kept from the upgrade or stream request.
    pub headers: Vec<(String, String)>,
    /// Headers from the connect command's `headers` that some proxy forwards
    /// (`emulated_headers`).
    pub emulated_headers: Vec<(String, String)>,
    /// The connection's meta from the connect (or refresh) proxy, sent back to proxies with
    /// `include_connection_meta`.
    pub meta: Option<Bytes>,
}

impl CfClient {
    /// The proxy state, made on first use.
    pub fn proxy_state(&mut self) -> &mut ProxyState {
        self.proxy.get_or_insert_with(Default::default)
    }
}

/// One Centrifugo subscription.
pub struct CfSub {
    /// Channel name.
    pub channel: Arc<str>,
    /// The subscription's `chan_info` (from its token or the subscribe proxy), if any: the
    /// subscriber's ClientInfo ([`CfClient::sub_info`]) is built from it when needed
    /// rather than kept per subscription.
    pub chan_info: Option<Bytes>,
    /// The client receives join/leave pushes.
    pub join_leave: bool,
    /// The client is in the channel's presence.
    pub presence: bool,
    /// Unix seconds when the subscription token expires.
    pub expires_at: Option<i64>,
}

impl CfClient {
    /// The subscriber's ClientInfo JSON in a subscription (publications, presence,
    /// join/leave).
    pub fn sub_info(&self, sub: &CfSub) -> Bytes {
        proto::client_info(&self.user, &self.id, self.conn_info.as_deref(), sub.chan_info.as_deref())
    }

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
            emulated: false,
            session: None,
            protobuf: false,
            proxy: None,
        }
    }
}

/// The JWKS cells a configuration needs: one per distinct `jwks_public_endpoint` URL
/// (`client.token`, and `client.subscription_token` when enabled), each with the receiving
/// end of its refresh requests for the fetcher thread (`reactor::jwks`).
pub fn jwks_cells(cfg: &crate::config::Config) -> Vec<(String, Arc<Jwks>, std::sync::mpsc::Receiver<()>)> {
    let st = &cfg.client.subscription_token;
    let mut urls = vec![cfg.client.token.jwks_public_endpoint.as_str()];
    if st.enabled {
        urls.push(st.jwks_public_endpoint.as_str());
    }
    let mut out: Vec<(String, Arc<Jwks>, std::sync::mpsc::Receiver<()>)> = Vec::new();
    for url in urls {
        if !url.is_empty() && !out.iter().any(|(u, _, _)| u == url) {
            let (cell, rx) = Jwks::new();
            out.push((url.to_string(), cell, rx));
        }
    }
    out
}

/// The cell for `url` among `cells`; an empty one (never filled: every RS/ES token is
/// "not loaded yet") when it is missing, which only a caller that started no fetcher sees.
fn cell_for(cells: &[(String, Arc<Jwks>)], url: &str) -> Arc<Jwks> {
    cells.iter().find(|(u, _)| u == url).map(|(_, c)| c.clone()).unwrap_or_else(|| Jwks::new().0)
}

/// Build the token verifier from the configuration; `cells` are the JWKS cells by URL.
pub fn verifier(cfg: &crate::config::Config, cells: &[(String, Arc<Jwks>)]) -> Verifier {
    use crate::proto::jwt::Secret;
    let t = &cfg.client.token;
    let v = if !t.jwks_public_endpoint.is_empty() {
        // As Centrifugo: with a JWKS, the HMAC secret and PEM keys are not used.
        Verifier::new(None).with_jwks(cell_for(cells, &t.jwks_public_endpoint))
    } else {
        let secret = (!t.hmac_secret_key.is_empty()).then(|| Secret::new(t.hmac_secret_key.as_bytes()));
        // Config validation parsed these keys already: none fails here.
        let keys = t.public_keys("client.token").unwrap_or_default();
        keys.into_iter().fold(Verifier::new(secret), Verifier::with_public_key)
    };
    v.with_audience((!t.audience.is_empty()).then(|| t.audience.clone()))
        .with_issuer((!t.issuer.is_empty()).then(|| t.issuer.clone()))
}

/// Build the subscription token verifier: `client.subscription_token` when enabled with
/// its own key or JWKS, else the connection token verifier.
pub fn sub_verifier(cfg: &crate::config::Config, cells: &[(String, Arc<Jwks>)]) -> Verifier {
    use crate::proto::jwt::Secret;
    let st = &cfg.client.subscription_token;
    let own = !st.hmac_secret_key.is_empty()
        || !st.rsa_public_key.is_empty()
        || !st.ecdsa_public_key.is_empty()
        || !st.jwks_public_endpoint.is_empty();
    if !(st.enabled && own) {
        return verifier(cfg, cells);
    }
    if !st.jwks_public_endpoint.is_empty() {
        return Verifier::new(None).with_jwks(cell_for(cells, &st.jwks_public_endpoint));
    }
    let secret = (!st.hmac_secret_key.is_empty()).then(|| Secret::new(st.hmac_secret_key.as_bytes()));
    let sub = crate::config::centrifugo::TokenConfig {
        rsa_public_key: st.rsa_public_key.clone(),
        ecdsa_public_key: st.ecdsa_public_key.clone(),
        ..Default::default()
    };
    let keys = sub.public_keys("client.subscription_token").unwrap_or_default();
    keys.into_iter().fold(Verifier::new(secret), Verifier::with_public_key)
}

/// Start Centrifugo state on a freshly upgraded connection; `req` is its HTTP request (the
/// headers proxies forward are kept from it).
pub fn attach(env: &mut Env, conn: &mut Session, uni: bool, req: &crate::transport::http::Req) {
    let mut cf = CfClient::new(env.ids.next_id(), uni);
    let wanted = &env.shared.proxies.http_headers;
    if !wanted.is_empty() {
        for (name, value) in &req.head.headers {
            if wanted.iter().any(|w| w.eq_ignore_ascii_case(name)) {
                cf.proxy_state().headers.push((name.to_string(), String::from_utf8_lossy(value).into_owned()));
            }
        }
    }
    conn.cf = Some(Box::new(cf));
}

pub(super) fn send_text(env: &mut Env, conn: &mut Session, s: &[u8]) {
    if matches!(conn.state, State::Stream { .. }) {
        // Bidirectional emulation: replies go down the HTTP stream or SSE.
        return stream_send(env, conn, s);
    }
    let f = crate::transport::ws::data_frame(env, conn, Opcode::Text, s);
    env.queue(conn, f);
}

/// One JSON message on an HTTP stream (a line) or SSE (an event).
fn stream_send(env: &mut Env, conn: &mut Session, json: &[u8]) {
    match &conn.state {
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

/// The connection speaks protobuf.
pub(super) fn is_pb(conn: &Session) -> bool {
    conn.cf.as_ref().is_some_and(|c| c.protobuf)
}

/// Send delimited protobuf replies in a binary frame.
pub(super) fn send_binary(env: &mut Env, conn: &mut Session, b: &[u8]) {
    let f = codec::frame(Opcode::Binary, b);
    env.queue(conn, f);
}

/// Answer command `id` in the connection's protocol: `json` as the JSON result of `method`,
/// or the protobuf Reply that `pb` fills in.
pub(super) fn send_reply(
    env: &mut Env,
    conn: &mut Session,
    id: u32,
    method: &str,
    json: &dyn Encode,
    pb: impl FnOnce(&mut pb::Reply),
) {
    if is_pb(conn) {
        let mut r = pb::Reply { id, ..Default::default() };
        pb(&mut r);
        send_binary(env, conn, &pb::delimited(&r));
    } else {
        send_text(env, conn, &proto::reply(id, method, json));
    }
}

/// Answer command `id` with an error in the connection's protocol.
pub(super) fn send_error(env: &mut Env, conn: &mut Session, id: u32, e: Error) {
    if is_pb(conn) {
        send_binary(env, conn, &pb::delimited(&pb::error_reply(id, e)));
    } else {
        send_text(env, conn, &proto::error_reply(id, e));
    }
}

/// Answer command `id` with an error the application backend chose (a proxy's answer).
pub(super) fn send_backend_error(env: &mut Env, conn: &mut Session, id: u32, e: &crate::proto::proxy::BackendError) {
    if is_pb(conn) {
        let error = Some(pb::Error { code: e.code, message: e.message.clone(), temporary: e.temporary });
        send_binary(env, conn, &pb::delimited(&pb::Reply { id, error, ..Default::default() }));
    } else {
        send_text(env, conn, &proto::reply(id, "error", e));
    }
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
    commands(env, conn, data);
}

/// Run a frame's commands in order. When one waits for the engine, the rest of the frame
/// waits behind it, copied (at most `ws_max_message`; input is not parsed meanwhile, so a
/// session holds at most one such rest from its socket).
fn commands(env: &mut Env, conn: &mut Session, data: &[u8]) {
    if is_pb(conn) {
        let mut it = pb::decode_commands(data);
        loop {
            if conn.parked {
                let rest = it.rest().to_vec();
                return env.later(conn, move |env, conn| commands(env, conn, &rest));
            }
            let Some(c) = it.next() else { return };
            if conn.dead || !matches!(conn.state, State::Ws(_)) {
                return;
            }
            let Ok(c) = c else {
                return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
            };
            command(env, conn, pb::into_command(c));
        }
    }
    for raw in proto::split_commands(data) {
        if conn.parked {
            let at = (raw.as_ptr() as usize).saturating_sub(data.as_ptr() as usize).min(data.len());
            let rest = data[at..].to_vec();
            return env.later(conn, move |env, conn| commands(env, conn, &rest));
        }
        let emulated = conn.cf.as_ref().is_some_and(|c| c.emulated);
        if conn.dead || !(matches!(conn.state, State::Ws(_)) || emulated && matches!(conn.state, State::Stream { .. }))
        {
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
    // As Centrifugo: a channel command without a channel is a protocol error (3501).
    let no_channel = cmd.subscribe.as_ref().is_some_and(|r| r.channel.is_empty())
        || cmd.unsubscribe.as_ref().is_some_and(|r| r.channel.is_empty())
        || cmd.publish.as_ref().is_some_and(|r| r.channel.is_empty())
        || cmd.history.as_ref().is_some_and(|r| r.channel.is_empty())
        || cmd.presence.as_ref().is_some_and(|r| r.channel.is_empty())
        || cmd.presence_stats.as_ref().is_some_and(|r| r.channel.is_empty())
        || cmd.sub_refresh.as_ref().is_some_and(|r| r.channel.is_empty());
    if no_channel {
        return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
    }
    if let Some(r) = cmd.subscribe {
        subscribe(env, conn, id, r, false)
    } else if let Some(r) = cmd.unsubscribe {
        match unsubscribe(env, conn, &r.channel) {
            Ok(()) => send_reply(env, conn, id, "unsubscribe", &proto::Empty, |r| r.unsubscribe = Some(pb::Empty {})),
            Err(e) => send_error(env, conn, id, e),
        }
    } else if let Some(r) = cmd.publish {
        if super::proxy::publish_proxied(env, &r.channel) {
            return super::proxy::publish(env, conn, id, r);
        }
        match publish(env, conn, &r.channel, r.data.as_deref().map(|d| d.get().as_bytes())) {
            Ok(op) => env.engine(conn, vec![op], move |env, conn, done| match first(done).published() {
                Ok(_) => {
                    env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
                    send_reply(env, conn, id, "publish", &proto::Empty, |r| r.publish = Some(pb::Empty {}))
                }
                Err(e) => {
                    log::warn!("conn {}:{}: centrifugo publish: {e}", env.id, conn.id.key);
                    send_error(env, conn, id, proto::INTERNAL)
                }
            }),
            Err(e) => send_error(env, conn, id, e),
        }
    } else if let Some(r) = cmd.history {
        if let Err(e) = history(env, conn, &r) {
            return send_error(env, conn, id, e);
        }
        history_page(env, conn, r.channel.clone(), r.limit, r.since.clone(), r.reverse, move |env, conn, page| {
            match page {
                Ok(page) if is_pb(conn) => {
                    send_with_pubs_pb(env, conn, id, &page.msgs, pb::PacedResult::History, |pubs| pb::Reply {
                        id,
                        history: Some(pb::history_result(&page.result(pubs))),
                        ..Default::default()
                    })
                }
                Ok(page) => {
                    send_with_pubs(env, conn, &page.msgs, |pubs| proto::reply(id, "history", &page.result(pubs)))
                }
                Err(e) => send_error(env, conn, id, e),
            }
        });
    } else if let Some(r) = cmd.presence {
        match presence(env, conn, &r.channel) {
            Ok(()) => {
                let op = Op::Presence { channel: r.channel.clone() };
                env.engine(conn, vec![op], move |env, conn, done| match first(done).presence() {
                    Ok(entries) => {
                        let json = proto::PresenceResult { clients: &entries };
                        send_reply(env, conn, id, "presence", &json, |r| {
                            r.presence = Some(pb::presence_result(&entries))
                        });
                    }
                    Err(e) => {
                        log::warn!("conn {}:{}: centrifugo presence: {e}", env.id, conn.id.key);
                        send_error(env, conn, id, proto::INTERNAL)
                    }
                });
            }
            Err(e) => send_error(env, conn, id, e),
        }
    } else if let Some(r) = cmd.presence_stats {
        match presence(env, conn, &r.channel) {
            Ok(()) => {
                let op = Op::Presence { channel: r.channel.clone() };
                env.engine(conn, vec![op], move |env, conn, done| match first(done).presence() {
                    Ok(entries) => {
                        let st = presence_stats(&entries);
                        send_reply(env, conn, id, "presence_stats", &st, |r| {
                            r.presence_stats = Some(pb::presence_stats(&st))
                        });
                    }
                    Err(e) => {
                        log::warn!("conn {}:{}: centrifugo presence_stats: {e}", env.id, conn.id.key);
                        send_error(env, conn, id, proto::INTERNAL)
                    }
                });
            }
            Err(e) => send_error(env, conn, id, e),
        }
    } else if let Some(r) = cmd.refresh {
        if env.shared.proxies.refresh.is_some() {
            // As centrifuge: the server refreshes through the proxy; a client must not.
            return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
        }
        refresh(env, conn, id, &r.token)
    } else if let Some(r) = cmd.sub_refresh {
        if super::proxy::sub_refresh_proxied(env, &r.channel)
            && conn.cf.as_ref().is_some_and(|c| c.subs.iter().any(|s| *s.channel == *r.channel))
        {
            return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
        }
        match sub_refresh(env, conn, &r.channel, &r.token) {
            Ok(e) => send_reply(env, conn, id, "sub_refresh", &e, |r| r.sub_refresh = Some(pb::sub_refresh_result(e))),
            Err(e) => send_error(env, conn, id, e),
        }
    } else if cmd.ping.is_some() {
        send_reply(env, conn, id, "ping", &proto::Empty, |r| r.ping = Some(pb::Empty {}))
    } else if cmd.send.is_some() {
        // asynchronous message: no handler on this server
    } else if let Some(r) = cmd.rpc {
        super::proxy::rpc(env, conn, id, r)
    } else {
        // No method Herald knows: Centrifugo disconnects such a command as a bad request.
        disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST)
    }
}

/// Who a connect command authenticated, and what comes with it (a token's claims, or the
/// connect proxy's result).
#[derive(Default)]
pub(super) struct Credentials {
    /// The user ("" anonymous).
    pub user: String,
    /// `conn_info`.
    pub info: Option<Bytes>,
    /// Server-side subscriptions, with the options a connect proxy gave (`subs`).
    pub channels: Vec<(String, Option<crate::proto::proxy::SubOptions>)>,
    /// Connection expiry, unix seconds.
    pub expire_at: Option<i64>,
    /// Data for the connect result (connect proxy).
    pub data: Option<Bytes>,
    /// The connection's meta (connect proxy).
    pub meta: Option<Bytes>,
}

pub(crate) fn connect(env: &mut Env, conn: &mut Session, id: u32, req: proto::ConnectReq) {
    let cfg = env.shared.cfg.clone();
    let now = env.unix_s;
    let wanted = &env.shared.proxies.emulated_headers;
    if !wanted.is_empty() {
        let kept: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(k, _)| wanted.iter().any(|w| w.eq_ignore_ascii_case(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(cf) = conn.cf.as_mut().filter(|_| !kept.is_empty()) {
            cf.proxy_state().emulated_headers = kept;
        }
    }
    let creds = if req.token.is_empty() {
        if env.shared.proxies.connect.is_some() {
            return super::proxy::connect(env, conn, id, req);
        }
        if !cfg.client.allow_anonymous_connect_without_token {
            // As Centrifugo v6.9.1: no credentials at all is a bad request (3501; centrifuge
            // client.go "client credentials not found"), not an invalid token (3500).
            return disconnect(env, conn, proto::DISCONNECT_BAD_REQUEST);
        }
        Credentials::default()
    } else {
        match env.verifier.verify_connect(&req.token, now) {
            Ok(v) => {
                let c = v.into_claims();
                let exp = c.connection_expires_at();
                let info = c.info.map(|i| Bytes::from(i.to_string()));
                // `subs` (with per-channel options) replaces `channels` when present.
                let chans: Vec<String> = if c.subs.is_empty() { c.channels } else { c.subs.keys().cloned().collect() };
                Credentials {
                    user: c.sub,
                    info,
                    channels: chans.into_iter().map(|c| (c, None)).collect(),
                    expire_at: exp,
                    ..Default::default()
                }
            }
            Err(TokenError::Expired | TokenError::NotYetValid) => {
                return send_error(env, conn, id, proto::TOKEN_EXPIRED);
            }
            Err(TokenError::KeysUnavailable) => {
                // The JWKS fetch this asked for runs on its own thread: the SDK reconnects
                // with backoff (error 100 is temporary) and finds the key loaded.
                log::debug!("conn {}:{} from {}: connect token key not loaded yet", env.id, conn.id.key, conn.peer);
                return send_error(env, conn, id, proto::INTERNAL);
            }
            Err(e) => {
                log::debug!("conn {}:{} from {}: connect token refused: {e:?}", env.id, conn.id.key, conn.peer);
                return disconnect(env, conn, proto::INVALID_TOKEN);
            }
        }
    };
    connected(env, conn, id, req, creds)
}

/// The connect command authenticated the connection: record it, join its server-side
/// subscriptions and send the connect result.
pub(super) fn connected(env: &mut Env, conn: &mut Session, id: u32, req: proto::ConnectReq, creds: Credentials) {
    let cfg = env.shared.cfg.clone();
    let now = env.unix_s;
    let Credentials { user, info, channels, expire_at, data, meta } = creds;
    if conn.dead || conn.cf.as_ref().is_none_or(|c| c.connected) {
        return;
    }
    // As centrifuge: the server refreshes every connection itself when a refresh proxy is
    // configured, so the client is told of no expiry.
    let server_refresh = env.shared.proxies.refresh.is_some();
    let Some(cf) = conn.cf.as_mut() else { return };
    cf.user = Arc::from(user.as_str());
    cf.conn_info = info;
    cf.connected = true;
    cf.expires_at = expire_at;
    if let Some(m) = meta {
        cf.proxy_state().meta = Some(m);
    }
    let client_id = cf.id.clone();
    let uni = cf.uni;
    crate::transport::push_small(env.cf_users.entry(cf.user.clone()).or_default(), conn.id);
    if let Ok(mut u) = env.shared.users.lock() {
        *u.entry(cf.user.clone()).or_insert(0) += 1;
    }
    env.shared.stats.cf_clients.fetch_add(1, Ordering::Relaxed);
    let ping_s = cfg.client.ping_interval.0 / 1000;
    if let State::Ws(ws) = &mut conn.state {
        ws.next_ping_ms = env.now_ms + cfg.client.ping_interval.0;
    }
    // Server-side subscriptions from the token's `channels`, and the ones the client asks
    // to resume in `subs`; `"subs"` is present whenever the token named a valid channel.
    let mut wanted: Vec<(String, Option<crate::proto::proxy::SubOptions>)> = Vec::new();
    for (c, o) in channels {
        if check_channel(&c).is_ok() && !wanted.iter().any(|(w, _)| *w == c) {
            wanted.push((c, o));
        }
    }
    let any = !wanted.is_empty();
    let mut preps = Vec::with_capacity(wanted.len());
    for (ch, options) in wanted {
        let mut r = req.subs.get(&ch).cloned().unwrap_or_default();
        r.channel = ch;
        // A refused server-side subscription is left out of `subs` (as before: no error).
        if let Ok(mut p) = prepare(env, conn, r, true) {
            if let Some(o) = options {
                p.overrides(&o.overrides);
                p.grant.chan_info = o.info;
                p.grant.data = o.data;
            }
            preps.push(p);
        }
    }
    join_all(env, conn, preps, move |env, conn, joined| {
        let joined = match joined {
            Ok(j) => j,
            Err(e) => {
                log::warn!("conn {}:{}: centrifugo connect: server-side subscriptions: {e}", env.id, conn.id.key);
                return disconnect(env, conn, proto::SERVER_ERROR);
            }
        };
        let subs: Option<Vec<(String, Bytes)>> = any.then(|| {
            joined.iter().map(|(p, rec)| (p.req.channel.clone(), encode_subscribe(env, conn, &p.grant, rec))).collect()
        });
        let session = conn.cf.as_ref().and_then(|c| c.session.clone());
        let node = env.shared.node_id.clone();
        let result = proto::ConnectResult {
            client: &client_id,
            version: proto::VERSION,
            ping: ping_s.max(1),
            pong: !uni,
            expires_ttl: if server_refresh { None } else { proto::ttl(expire_at, now) },
            subs: subs.as_deref(),
            emulation: session.as_deref().map(|s| (s, node.as_str())),
            data: data.as_deref(),
        };
        log::debug!("conn {}:{} from {}: centrifugo client {client_id} connected", env.id, conn.id.key, conn.peer);
        if uni {
            // Unidirectional: the connect result is the first push.
            uni_send(env, conn, &proto::connect_push(&result));
        } else if is_pb(conn) {
            // encode_subscribe encoded each server-side subscription's result in protobuf.
            let subs = result
                .subs
                .unwrap_or_default()
                .iter()
                .filter_map(|(ch, b)| Some((ch.clone(), prost::Message::decode(&b[..]).ok()?)))
                .collect();
            let r = pb::Reply { id, connect: Some(pb::connect_result(&result, subs)), ..Default::default() };
            send_binary(env, conn, &pb::delimited(&r));
        } else {
            send_text(env, conn, &proto::reply(id, "connect", &result));
        }
    });
}

/// Send a push on a unidirectional transport (WebSocket text frame, SSE event or
/// newline-delimited JSON).
pub fn uni_send(env: &mut Env, conn: &mut Session, json: &[u8]) {
    match &conn.state {
        State::Ws(_) => send_text(env, conn, json),
        State::Stream { .. } => stream_send(env, conn, json),
        _ => {}
    }
}

/// Why a subscription is refused: an error reply, or a disconnect (a subscription token
/// that verifies but names another channel, user or client closes the connection with
/// 3500, as Centrifugo does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Answer the subscribe command with this error.
    Reply(Error),
    /// Close the connection.
    Disconnect(Disconnect),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Reply(e)
    }
}

/// What a permitted subscription takes from its subscription token or the subscribe
/// proxy (nothing without either).
#[derive(Debug, Default)]
pub struct SubGrant {
    /// The token's `info`: the subscriber's `chan_info`.
    pub chan_info: Option<Bytes>,
    /// When the subscription expires (unix seconds), from the token.
    pub expires_at: Option<i64>,
    /// Data for the subscribe result (subscribe proxy, connect proxy `subs`).
    pub data: Option<Bytes>,
    /// The namespace refreshes subscriptions through its sub_refresh proxy: the client is
    /// told of no expiry (centrifuge's server-side refresh).
    pub server_refresh: bool,
}

fn subscribe(env: &mut Env, conn: &mut Session, id: u32, req: SubscribeReq, server_side: bool) {
    if !server_side && super::proxy::subscribe_proxied(env, conn, &req) {
        return super::proxy::subscribe(env, conn, id, req);
    }
    let p = match prepare(env, conn, req, server_side) {
        Ok(p) => p,
        Err(Refusal::Reply(e)) => return send_error(env, conn, id, e),
        Err(Refusal::Disconnect(d)) => return disconnect(env, conn, d),
    };
    subscribe_prepared(env, conn, id, p);
}

/// Join a permitted subscription and answer the subscribe command.
pub(super) fn subscribe_prepared(env: &mut Env, conn: &mut Session, id: u32, p: Prepared) {
    join_all(env, conn, vec![p], move |env, conn, joined| {
        let Some((p, rec)) = joined.ok().and_then(|mut j| j.pop()) else {
            return send_error(env, conn, id, proto::INTERNAL);
        };
        let g = &p.grant;
        let now = env.unix_s;
        if is_pb(conn) {
            let result = |pubs: &[proto::Pub<'_>]| {
                let r = pb::subscribe_result(&subscribe_result(g, &rec, pubs, now));
                pb::Reply { id, subscribe: Some(r), ..Default::default() }
            };
            return send_with_pubs_pb(env, conn, id, &rec.pubs, pb::PacedResult::Subscribe, result);
        }
        let result = |pubs: &[proto::Pub<'_>]| proto::reply(id, "subscribe", &subscribe_result(g, &rec, pubs, now));
        send_with_pubs(env, conn, &rec.pubs, result);
    });
}

/// The encoded subscribe result (server-side subscriptions: the connect result and API
/// subscribe pushes carry it inline), in JSON or, on a protobuf connection, as a protobuf
/// SubscribeResult.
fn encode_subscribe(env: &Env, conn: &Session, grant: &SubGrant, rec: &Recovery) -> Bytes {
    let pubs: Vec<proto::Pub<'_>> = rec.pubs.iter().map(|m| cf_pub(m)).collect();
    let result = subscribe_result(grant, rec, &pubs, env.unix_s);
    if is_pb(conn) {
        return Bytes::from(prost::Message::encode_to_vec(&pb::subscribe_result(&result)));
    }
    result.encode()
}

/// A subscription that passed the checks and the permission decision, before it joins the
/// channel's stream.
pub(super) struct Prepared {
    pub(super) req: SubscribeReq,
    pub(super) opts: ChannelOptions,
    pub(super) grant: SubGrant,
    /// The channel keeps a stream the client may position itself in.
    pub(super) recoverable: bool,
    /// The client asked to recover (and the channel allows it).
    pub(super) recovering: bool,
}

impl Prepared {
    /// A subscription the subscribe proxy allowed. As Centrifugo's proxy path, it is
    /// recoverable by the namespace's (or the backend's) `force_recovery` /
    /// `force_positioning` alone, not by the client's asking.
    pub(super) fn proxied(req: SubscribeReq, opts: ChannelOptions, grant: SubGrant) -> Prepared {
        let mut p = Prepared { req, opts, grant, recoverable: false, recovering: false };
        p.overrides(&Default::default());
        p
    }

    /// Apply a proxy's option overrides (`override` in its answer).
    pub(super) fn overrides(&mut self, o: &crate::proto::proxy::Overrides) {
        let opts = &mut self.opts;
        for (v, slot) in [
            (o.presence, &mut opts.presence),
            (o.join_leave, &mut opts.join_leave),
            (o.force_push_join_leave, &mut opts.force_push_join_leave),
            (o.force_recovery, &mut opts.force_recovery),
            (o.force_positioning, &mut opts.force_positioning),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
        self.recoverable = opts.history() && (opts.force_recovery || opts.force_positioning);
        self.recovering = self.req.recover && self.recoverable;
    }
}

/// The checks and the permission decision of a subscription.
fn prepare(env: &Env, conn: &Session, req: SubscribeReq, server_side: bool) -> Result<Prepared, Refusal> {
    let opts = admissible(env, conn, &req)?;
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    let mut grant =
        if server_side { SubGrant::default() } else { may_subscribe(env, cf, &req.channel, &opts, &req.token)? };
    grant.server_refresh = opts.sub_refresh_proxy_enabled;
    let recoverable = opts.history() && (opts.force_recovery || opts.force_positioning || req.recoverable);
    let recovering = req.recover && recoverable;
    Ok(Prepared { req, opts, grant, recoverable, recovering })
}

/// What [`join_all`] hands on: each subscription with what recovery found.
type Joined = Result<Vec<(Prepared, Recovery)>, crate::hub::EngineError>;

/// Join the channels' streams (one engine round trip for all of them), reading what
/// recovering clients missed, then record each subscription (presence, join event). Live
/// deliveries continue after what the replies carry (or after the stream top). On an
/// engine failure nothing is recorded.
fn join_all<F>(env: &mut Env, conn: &mut Session, preps: Vec<Prepared>, then: F)
where
    F: FnOnce(&mut Env, &mut Session, Joined) + Send + 'static,
{
    if preps.is_empty() {
        return then(env, conn, Ok(Vec::new()));
    }
    let chans: Vec<String> = preps.iter().map(|p| p.req.channel.clone()).collect();
    let since: Vec<Option<u64>> = preps.iter().map(|p| p.recovering.then_some(p.req.offset)).collect();
    fanout::subscribe(env, conn, &chans.clone(), &since, move |env, conn, reads| {
        let reads = match reads {
            Ok(r) => r,
            Err(e) => {
                for ch in &chans {
                    leave_stream(env, conn, ch);
                }
                return then(env, conn, Err(e));
            }
        };
        let mut out = Vec::with_capacity(preps.len());
        let mut presence = Vec::new();
        let mut joins = Vec::new();
        for (p, read) in preps.into_iter().zip(reads) {
            let rec = recovery(conn, &p, read);
            let (pr, join) = enter(conn, &p.req, &p.opts, &p.grant);
            presence.extend(pr);
            joins.extend(join);
            log::debug!(
                "conn {}:{}: centrifugo subscribe {} recovering={} recovered={}",
                env.id,
                conn.id.key,
                p.req.channel,
                rec.recovering,
                rec.recovered
            );
            out.push((p, rec));
        }
        if presence.is_empty() {
            announce(env, &joins);
            return then(env, conn, Ok(out));
        }
        // The reply waits for the presence entries (whoever reads presence after it sees
        // this client); the joins are announced after them.
        env.engine(conn, presence, move |env, conn, done| {
            for d in done {
                if let Done::Added(Err(e)) = d {
                    log::warn!("conn {}:{}: presence add: {e}", env.id, conn.id.key);
                }
            }
            then(env, conn, Ok(out))
        });
        announce(env, &joins);
    });
}

/// Announce join events (through the engine: every node's subscribers get them).
fn announce(env: &Env, joins: &[Arc<Event>]) {
    for ev in joins {
        env.shared.engine.channel_event(&ev.channel, &|| Note::Event(ev.clone()));
    }
}

/// Leave a channel's delivery set (not the Centrifugo subscription record).
fn leave_stream(env: &mut Env, conn: &mut Session, channel: &str) {
    if let Some(i) = conn.subs.iter().position(|s| &*s.channel == channel) {
        let sr = conn.subs.swap_remove(i);
        let last = env.local.remove(&sr.channel, sr.slot);
        env.shared.engine.unsubscribe(&sr.channel, env.id, last);
    }
}

/// The subscribe result for what `join` found, carrying `pubs`.
fn subscribe_result<'a>(
    grant: &'a SubGrant,
    rec: &'a Recovery,
    pubs: &'a [proto::Pub<'a>],
    now: i64,
) -> proto::SubscribeResult<'a> {
    proto::SubscribeResult {
        data: grant.data.as_deref(),
        expires_ttl: if grant.server_refresh { None } else { proto::ttl(grant.expires_at, now) },
        recoverable: rec.recoverable.then_some(proto::Position { epoch: &rec.read.epoch, offset: rec.reply_offset }),
        was_recovering: rec.recovering,
        recovered: rec.recovered,
        publications: pubs,
    }
}

/// Send a reply that carries publications (subscribe with recovery, history). A small one
/// is encoded at once. A large one is paced like a history replay: the frame header and
/// the reply up to its publications are queued, then each publication is encoded as the
/// socket drains (`fanout::refill`), then the rest; the frame length is known up front
/// from [`proto::Pub::encoded_len`]. An honest reader gets it all; a reader that does not
/// read holds the high-water mark plus a pointer per publication.
fn send_with_pubs<F>(env: &mut Env, conn: &mut Session, msgs: &[Arc<Message>], reply: F)
where
    F: Fn(&[proto::Pub<'_>]) -> Bytes,
{
    let size: usize = msgs.iter().map(|m| cf_pub(m).encoded_len() + 1).sum();
    // Pacing frames a WebSocket message; emulation streams get the reply whole (bounded by
    // the channel's history).
    if size <= env.low_water || !matches!(conn.state, State::Ws(_)) {
        let pubs: Vec<proto::Pub<'_>> = msgs.iter().map(|m| cf_pub(m)).collect();
        return send_text(env, conn, &reply(&pubs));
    }
    // The reply with one marker publication shows where the publications go: NUL cannot
    // occur in encoded JSON (control characters are escaped in strings).
    let marker = proto::Pub { channel: "", data: b"\0", offset: 0, info: None, tags: None };
    let whole = reply(std::slice::from_ref(&marker));
    let mark = marker.encode();
    let Some(at) = whole.windows(mark.len()).position(|w| w == &mark[..]) else {
        // Cannot happen; never panic on it either.
        let pubs: Vec<proto::Pub<'_>> = msgs.iter().map(|m| cf_pub(m)).collect();
        return send_text(env, conn, &reply(&pubs));
    };
    let (head, tail) = (&whole[..at], &whole[at + mark.len()..]);
    let total = head.len() + size - 1 + tail.len();
    let mut first = Vec::with_capacity(head.len() + 10);
    codec::write_header(&mut first, Opcode::Text, true, total);
    first.extend_from_slice(head);
    env.hold(conn, Item::Bytes(Bytes::from(first)));
    for (i, m) in msgs.iter().enumerate() {
        env.hold(conn, Item::CfPub(m.clone(), i == 0));
    }
    env.hold(conn, Item::Bytes(whole.slice(at + mark.len()..)));
    debug_assert_eq!(tail.len(), whole.len() - at - mark.len());
    fanout::refill(env, conn);
}

/// [`send_with_pubs`] for a protobuf connection. A small reply is encoded whole (the bytes
/// Centrifugo's encoder writes). A large one is paced the same way: the frame header, the
/// reply's length prefix, id and the result's other fields are queued, then each
/// publication is encoded (as a `publications` field) as the socket drains; the lengths
/// are known up front from `prost::Message::encoded_len`. The publications come last in
/// the result, which protobuf allows (fields in any order). `reply` gives the Reply
/// carrying some publications.
fn send_with_pubs_pb<F>(
    env: &mut Env,
    conn: &mut Session,
    id: u32,
    msgs: &[Arc<Message>],
    kind: pb::PacedResult,
    reply: F,
) where
    F: Fn(&[proto::Pub<'_>]) -> pb::Reply,
{
    let size: usize = msgs.iter().map(|m| pb::pub_field_len(&cf_pub(m))).sum();
    if size <= env.low_water {
        let pubs: Vec<proto::Pub<'_>> = msgs.iter().map(|m| cf_pub(m)).collect();
        return send_binary(env, conn, &pb::delimited(&reply(&pubs)));
    }
    let r = reply(&[]);
    let bare = match kind {
        pb::PacedResult::Subscribe => r.subscribe.map(|s| prost::Message::encode_to_vec(&s)),
        pb::PacedResult::History => r.history.map(|h| prost::Message::encode_to_vec(&h)),
    }
    .unwrap_or_default();
    let head = pb::paced_head(id, kind, &bare, size);
    let mut first = Vec::with_capacity(head.len() + 10);
    codec::write_header(&mut first, Opcode::Binary, true, head.len() + size);
    first.extend_from_slice(&head);
    env.hold(conn, Item::Bytes(Bytes::from(first)));
    for m in msgs {
        env.hold(conn, Item::CfPbPub(m.clone(), kind));
    }
    fanout::refill(env, conn);
}

/// The checks before permission: a valid channel name in a known namespace, not yet
/// subscribed, within the client's and the channel's limits. Returns the channel's options.
pub(super) fn admissible(env: &Env, conn: &Session, req: &SubscribeReq) -> Result<ChannelOptions, Error> {
    let cfg = &env.shared.cfg;
    let ch = req.channel.as_str();
    if check_channel(ch).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    let Some((_, opts)) = cfg.channel.resolve(ch) else { return Err(proto::UNKNOWN_CHANNEL) };
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    if cf.subs.iter().any(|s| &*s.channel == ch) {
        return Err(proto::ALREADY_SUBSCRIBED);
    }
    if cf.subs.len() >= cfg.client.channel_limit
        || fanout::full_channel(env, std::slice::from_ref(&req.channel)).is_some()
    {
        return Err(proto::LIMIT_EXCEEDED);
    }
    Ok(opts.clone())
}

/// The permission decision for a client's subscribe command: with a subscription token,
/// the token decides; without one, `$` private channels are refused, `#` user-limited
/// channels (where the namespace allows them) admit the users they name, and other
/// channels follow `allow_subscribe_for_client` (and `allow_subscribe_for_anonymous` for
/// the anonymous user).
pub fn may_subscribe(
    env: &Env,
    cf: &CfClient,
    ch: &str,
    opts: &ChannelOptions,
    token: &str,
) -> Result<SubGrant, Refusal> {
    if !token.is_empty() {
        return token_grant(env, cf, ch, token);
    }
    let _ = opts; // the options were resolved by `admissible`; `authz` reads them again
    match authz::subscribe(&env.shared.cfg, ch, authz::Who::Client { user: &cf.user }) {
        Ok(()) => Ok(SubGrant::default()),
        Err(authz::Denied::UnknownNamespace) => Err(Refusal::Reply(proto::UNKNOWN_CHANNEL)),
        Err(_) => Err(Refusal::Reply(proto::PERMISSION_DENIED)),
    }
}

/// The subscription token path. As Centrifugo: a token that does not verify is "permission
/// denied" (or "token expired"); one that verifies but names another channel, user or
/// client disconnects with 3500.
fn token_grant(env: &Env, cf: &CfClient, ch: &str, token: &str) -> Result<SubGrant, Refusal> {
    let v = env.sub_verifier.verify_subscribe(token, ch, env.unix_s).map_err(|e| match e {
        TokenError::Expired | TokenError::NotYetValid => Refusal::Reply(proto::TOKEN_EXPIRED),
        TokenError::KeysUnavailable => Refusal::Reply(proto::INTERNAL),
        TokenError::WrongChannel => Refusal::Disconnect(proto::INVALID_TOKEN),
        _ => Refusal::Reply(proto::PERMISSION_DENIED),
    })?;
    let c = v.into_claims();
    if c.sub != *cf.user || (!c.client.is_empty() && *c.client != *cf.id) {
        return Err(Refusal::Disconnect(proto::INVALID_TOKEN));
    }
    Ok(SubGrant {
        expires_at: c.subscription_expires_at(),
        chan_info: c.info.map(|i| Bytes::from(i.to_string())),
        ..Default::default()
    })
}

/// The outcome of joining a channel's stream.
struct Recovery {
    /// The channel keeps a stream the client may position itself in.
    recoverable: bool,
    /// The client asked to recover (and the channel allows it).
    recovering: bool,
    /// Recovery succeeded: same epoch and nothing missed.
    recovered: bool,
    /// The offset the reply shows: the client's own when recovered, else the stream top.
    reply_offset: u64,
    /// The stream's position as the subscription began.
    read: HistoryRead,
    /// The publications the client missed (empty unless recovering in the same epoch).
    pubs: Vec<Arc<Message>>,
}

/// What recovery found once the stream was joined: the publications a recovering client
/// missed (same epoch), and where live deliveries continue.
fn recovery(conn: &mut Session, p: &Prepared, mut read: HistoryRead) -> Recovery {
    let (req, recovering) = (&p.req, p.recovering);
    let ch = req.channel.as_str();
    let mut recovered = false;
    let mut pubs: Vec<Arc<Message>> = Vec::new();
    // As Centrifugo: an empty epoch in the request matches the stream's epoch.
    if recovering && (req.epoch.is_empty() || *read.epoch == *req.epoch) {
        recovered = !read.missed;
        pubs = std::mem::take(&mut read.messages);
    }
    let after =
        pubs.last().map(|m| m.id).unwrap_or(read.last_id).max(if recovering && recovered { req.offset } else { 0 });
    let after = if pubs.is_empty() { read.last_id } else { after };
    if let Some(sr) = conn.subs.iter_mut().find(|s| &*s.channel == ch) {
        sr.last_id = after;
    }
    // As Centrifugo: a recovered reply carries the offset the client sent; the client then
    // advances through the publications it carries.
    let reply_offset = if recovered { req.offset } else { read.last_id };
    Recovery { recoverable: p.recoverable, recovering, recovered, reply_offset, read, pubs }
}

/// Record the subscription on the client; what it then takes: the presence entry to add
/// and the join event to announce (in that order, after it).
fn enter(
    conn: &mut Session,
    req: &SubscribeReq,
    opts: &ChannelOptions,
    grant: &SubGrant,
) -> (Option<Op>, Option<Arc<Event>>) {
    let ch = req.channel.as_str();
    // The name the worker's subscriber set interned (one allocation per channel, not one
    // per subscription).
    let channel =
        conn.subs.iter().find(|s| &*s.channel == ch).map(|s| s.channel.clone()).unwrap_or_else(|| Arc::from(ch));
    let Some(cf) = conn.cf.as_mut() else { return (None, None) };
    let info = proto::client_info(&cf.user, &cf.id, cf.conn_info.as_deref(), grant.chan_info.as_deref());
    crate::transport::push_small(
        &mut cf.subs,
        CfSub {
            channel,
            chan_info: grant.chan_info.clone(),
            join_leave: opts.join_leave && (opts.force_push_join_leave || req.join_leave),
            presence: opts.presence,
            expires_at: grant.expires_at,
        },
    );
    let client_id = cf.id.clone();
    let presence = opts.presence.then(|| Op::PresenceAdd {
        channel: ch.to_string(),
        client: client_id.to_string(),
        user: cf.user.to_string(),
        info: info.clone(),
    });
    let join = opts.join_leave.then(|| {
        Arc::new(Event { channel: Arc::from(ch), json: proto::join_leave_push(ch, &info, true), client: client_id })
    });
    (presence, join)
}

/// Leave one channel (client unsubscribe, API unsubscribe, or connection close).
fn unsubscribe(env: &mut Env, conn: &mut Session, channel: &str) -> Result<(), Error> {
    let Some(cf) = conn.cf.as_mut() else { return Err(proto::INTERNAL) };
    let Some(pos) = cf.subs.iter().position(|s| &*s.channel == channel) else { return Ok(()) };
    let sub = cf.subs.swap_remove(pos);
    let client = cf.id.clone();
    let info = cf.sub_info(&sub);
    leave_effects(env, &sub, &client, info);
    leave_stream(env, conn, channel);
    Ok(())
}

fn leave_effects(env: &mut Env, sub: &CfSub, client: &Arc<str>, info: Bytes) {
    let cfg = env.shared.cfg.clone();
    if sub.presence {
        env.shared.engine.presence_remove(&sub.channel, client);
    }
    if cfg.channel.resolve(&sub.channel).is_some_and(|(_, o)| o.join_leave) {
        let ev = Arc::new(Event {
            channel: sub.channel.clone(),
            json: proto::join_leave_push(&sub.channel, &info, false),
            client: client.clone(),
        });
        env.shared.engine.channel_event(&sub.channel, &|| Note::Event(ev.clone()));
    }
}

/// The connection is going away: presence entries and leave events for every channel.
pub fn on_close(env: &mut Env, conn: &mut Session) {
    let Some(cf) = conn.cf.take() else { return };
    if let Some(s) = &cf.session {
        env.emulation.remove(s);
    }
    if cf.connected {
        for s in &cf.subs {
            leave_effects(env, s, &cf.id, cf.sub_info(s));
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

/// The checks of a client publish; the operation to run when they pass.
fn publish(env: &mut Env, conn: &mut Session, channel: &str, data: Option<&[u8]>) -> Result<Op, Error> {
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
    let info = publisher_info(cf, channel);
    Ok(Op::Publish { channel: channel.to_string(), data: json_data(data), meta: Some(info).into() })
}

/// The ClientInfo a client publication carries: the publisher's in the channel when it is
/// subscribed (with its `chan_info`), else its connection's.
pub(super) fn publisher_info(cf: &CfClient, channel: &str) -> Bytes {
    match cf.subs.iter().find(|s| &*s.channel == channel) {
        Some(s) => cf.sub_info(s),
        None => proto::client_info(&cf.user, &cf.id, cf.conn_info.as_deref(), None),
    }
}

/// The one answer of a one-operation call.
fn first(done: Vec<Done>) -> Done {
    done.into_iter().next().unwrap_or(Done::Published(Err(crate::hub::EngineError("no answer".into()))))
}

/// The checks of a client history call.
fn history(env: &mut Env, conn: &mut Session, r: &proto::HistoryReq) -> Result<(), Error> {
    let cfg = env.shared.cfg.clone();
    let (_, opts) = cfg.channel.resolve(&r.channel).ok_or(proto::UNKNOWN_CHANNEL)?;
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    // As Centrifugo: a namespace without history answers 108 before permissions are looked at.
    if !opts.history() {
        return Err(proto::NOT_AVAILABLE);
    }
    let subscribed = cf.subs.iter().any(|s| *s.channel == *r.channel);
    if !(opts.allow_history_for_client || (opts.allow_history_for_subscriber && subscribed)) {
        return Err(proto::PERMISSION_DENIED);
    }
    if cf.user.is_empty() && !opts.allow_history_for_anonymous {
        return Err(proto::PERMISSION_DENIED);
    }
    Ok(())
}

/// What a history call returns: the publications and the stream position.
pub struct HistoryPage {
    /// Publications, in the order asked for.
    pub msgs: Vec<Arc<Message>>,
    /// The stream's epoch.
    pub epoch: Arc<str>,
    /// The stream's newest offset.
    pub offset: u64,
}

impl HistoryPage {
    /// The result carrying `pubs` (this page's publications, or a marker).
    pub fn result<'a>(&'a self, pubs: &'a [proto::Pub<'a>]) -> proto::HistoryResult<'a> {
        proto::HistoryResult {
            publications: pubs,
            position: proto::Position { epoch: &self.epoch, offset: self.offset },
        }
    }
}

/// Read the history page a client or API history call asks for, then `then` with it.
pub fn history_page<F>(
    env: &mut Env,
    conn: &mut Session,
    channel: String,
    limit: i64,
    since: Option<proto::StreamPosition>,
    reverse: bool,
    then: F,
) where
    F: FnOnce(&mut Env, &mut Session, Result<HistoryPage, Error>) + Send + 'static,
{
    // As centrifuge's node.history: reverse with since offset 0 is a bad request.
    if reverse && since.as_ref().is_some_and(|sp| sp.offset == 0) {
        return then(env, conn, Err(proto::BAD_REQUEST));
    }
    let op = history_op(channel);
    env.engine(conn, vec![op], move |env, conn, done| {
        let page = first(done).history().map_err(|e| {
            log::warn!("centrifugo history: {e}");
            proto::INTERNAL
        });
        then(env, conn, page.and_then(|all| history_select(all, limit, since.as_ref(), reverse)))
    });
}

/// The engine read behind a history call (the whole kept history; the page is cut from it).
pub fn history_op(channel: String) -> Op {
    Op::History { channel, since: None, limit: usize::MAX }
}

/// The publications a history call asks for, from the channel's whole kept history.
pub fn history_select(
    all: HistoryRead,
    limit: i64,
    since: Option<&proto::StreamPosition>,
    reverse: bool,
) -> Result<HistoryPage, Error> {
    // As centrifuge's node.history: reverse with since offset 0 is a bad request.
    if reverse && since.is_some_and(|sp| sp.offset == 0) {
        return Err(proto::BAD_REQUEST);
    }
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
    Ok(HistoryPage { msgs, epoch: all.epoch, offset: all.last_id })
}

/// The checks before a presence or presence_stats call.
fn presence(env: &mut Env, conn: &mut Session, channel: &str) -> Result<(), Error> {
    let cfg = env.shared.cfg.clone();
    let (_, opts) = cfg.channel.resolve(channel).ok_or(proto::UNKNOWN_CHANNEL)?;
    let cf = conn.cf.as_ref().ok_or(proto::INTERNAL)?;
    // As Centrifugo: a namespace without presence answers 108 before permissions are looked at.
    if !opts.presence {
        return Err(proto::NOT_AVAILABLE);
    }
    let subscribed = cf.subs.iter().any(|s| &*s.channel == channel);
    if !(opts.allow_presence_for_client || (opts.allow_presence_for_subscriber && subscribed)) {
        return Err(proto::PERMISSION_DENIED);
    }
    if cf.user.is_empty() && !opts.allow_presence_for_anonymous {
        return Err(proto::PERMISSION_DENIED);
    }
    Ok(())
}

/// Count the clients and distinct users present in a channel.
pub fn presence_stats(entries: &[(String, String, Bytes)]) -> proto::PresenceStatsResult {
    let mut users: Vec<&str> = entries.iter().map(|(_, u, _)| u.as_str()).collect();
    users.sort();
    users.dedup();
    proto::PresenceStatsResult { num_clients: entries.len() as u64, num_users: users.len() as u64 }
}

/// Presence (or, with `stats`, presence_stats) for the API, encoded.
pub fn presence_result(entries: &[(String, String, Bytes)], stats: bool) -> Bytes {
    if stats {
        return presence_stats(entries).encode();
    }
    proto::PresenceResult { clients: entries }.encode()
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
            // As Centrifugo (centrifuge client.go): the refresh reply carries expires/ttl only,
            // no client id or version.
            let result = proto::Expiry { ttl: proto::ttl(exp, now) };
            let pb_result = proto::RefreshResult { client: "", version: "", expires_ttl: proto::ttl(exp, now) };
            send_reply(env, conn, id, "refresh", &result, |r| r.refresh = Some(pb::refresh_result(&pb_result)));
        }
        Err(TokenError::Expired | TokenError::NotYetValid) => send_error(env, conn, id, proto::TOKEN_EXPIRED),
        Err(TokenError::KeysUnavailable) => send_error(env, conn, id, proto::INTERNAL),
        Err(_) => disconnect(env, conn, proto::INVALID_TOKEN),
    }
}

fn sub_refresh(env: &mut Env, conn: &mut Session, channel: &str, token: &str) -> Result<proto::Expiry, Error> {
    let now = env.unix_s;
    let v = env.sub_verifier.verify_subscribe(token, channel, now).map_err(|e| match e {
        TokenError::Expired | TokenError::NotYetValid => proto::TOKEN_EXPIRED,
        TokenError::KeysUnavailable => proto::INTERNAL,
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
    Ok(proto::Expiry { ttl: proto::ttl(exp, now) })
}

/// Ping timer of a Centrifugo connection: a missing pong is 3012; an expired connection
/// token is 3005; otherwise send `{}`.
pub fn on_ping_timer(env: &mut Env, conn: &mut Session) {
    let cfg = env.shared.cfg.clone();
    let now_ms = env.now_ms;
    if conn.parked {
        // Waiting for an engine or proxy answer (which always comes, a timeout at the
        // latest): its input, the pong or the connect included, is not read meanwhile, so
        // judge it once it is read again.
        match &mut conn.state {
            State::Ws(ws) => ws.next_ping_ms = now_ms + 500,
            State::Stream { next_keepalive_ms, .. } => *next_keepalive_ms = now_ms + 500,
            _ => {}
        }
        return;
    }
    let Some(cf) = conn.cf.as_mut() else { return };
    if !cf.connected {
        // Connected neither in time: Centrifugo's "stale".
        return disconnect(env, conn, proto::STALE);
    }
    if cf.pong_deadline_ms.is_some_and(|d| now_ms >= d) {
        return disconnect(env, conn, proto::NO_PONG);
    }
    let now = env.unix_s;
    let server_refresh = env.shared.proxies.refresh.is_some();
    if server_refresh && cf.expires_at.is_some_and(|e| now >= e) {
        // As centrifuge: at expiry the server asks the refresh proxy (the session waits).
        super::proxy::refresh(env, conn);
    } else if cf.expires_at.is_some_and(|e| now > e + 5) {
        return disconnect(env, conn, proto::EXPIRED);
    }
    let Some(cf) = conn.cf.as_mut() else { return };
    let expired: Vec<Arc<str>> =
        cf.subs.iter().filter(|s| s.expires_at.is_some_and(|e| now > e + 5)).map(|s| s.channel.clone()).collect();
    for ch in expired {
        if !super::proxy::sub_refresh_proxied(env, &ch) {
            return disconnect(env, conn, proto::SUBSCRIPTION_EXPIRED);
        }
        super::proxy::sub_refresh(env, conn, ch);
    }
    let Some(cf) = conn.cf.as_mut() else { return };
    let uni = cf.uni;
    let next;
    if cf.pong_deadline_ms.is_none() {
        if !uni {
            cf.pong_deadline_ms = Some(now_ms + cfg.client.pong_timeout.0);
        }
        next = if uni { now_ms + cfg.client.ping_interval.0 } else { now_ms + cfg.client.pong_timeout.0 };
        if uni {
            uni_send(env, conn, b"{}");
        } else if cf.protobuf {
            send_binary(env, conn, pb::PING);
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
        State::Stream { next_keepalive_ms, .. } => {
            *next_keepalive_ms = if uni { now_ms + cfg.client.ping_interval.0 } else { next }
        }
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
    let mut pb_frame: Option<Option<Bytes>> = None;
    for (_, id) in set.iter() {
        let Some(conn) = conns.session(id.key as usize) else { continue };
        if conn.id.gen != id.gen || conn.dead {
            continue;
        }
        let Some(cf) = conn.cf.as_ref() else { continue };
        if !cf.subs.iter().any(|s| s.channel == ev.channel && s.join_leave) || cf.uni {
            continue;
        }
        if cf.emulated {
            stream_send(env, conn, &ev.json);
            continue;
        }
        let f = if cf.protobuf {
            // Encoded once per event per worker, as the JSON frame is.
            let f = pb_frame
                .get_or_insert_with(|| pb::join_leave_from_json(&ev.json).map(|p| codec::frame(Opcode::Binary, &p)));
            let Some(f) = f.clone() else { continue };
            f
        } else {
            frame.get_or_insert_with(|| codec::frame(Opcode::Text, &ev.json)).clone()
        };
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
                let channel = channel.clone();
                // After whatever the connection is waiting for (its replies keep their order).
                env.later(conn, move |env, conn| server_subscribe(env, conn, channel));
            }
            UserCmd::Unsubscribe { channel, .. } => {
                if conn.cf.as_ref().is_some_and(|c| c.subs.iter().any(|s| *s.channel == **channel)) {
                    let _ = unsubscribe(env, conn, channel);
                    if is_pb(conn) {
                        send_binary(env, conn, &pb::unsubscribe_push(channel, proto::SERVER_UNSUBSCRIBE));
                    } else if conn.cf.as_ref().is_some_and(|c| c.uni) {
                        uni_send(env, conn, &proto::unsubscribe_push(channel, proto::SERVER_UNSUBSCRIBE, false));
                    } else {
                        send_text(env, conn, &proto::unsubscribe_push(channel, proto::SERVER_UNSUBSCRIBE, true));
                    }
                }
            }
            UserCmd::Disconnect { code, reason, .. } => {
                // The API's own reason text is not kept (reasons are static); the code is.
                let reason: &'static str =
                    if reason.is_empty() { proto::FORCE_NO_RECONNECT.reason } else { "disconnect" };
                disconnect(env, conn, Disconnect { code: *code, reason });
            }
            UserCmd::Refresh { expired: true, .. } => disconnect(env, conn, proto::EXPIRED),
            UserCmd::Refresh { expire_at, .. } => {
                let exp = expire_at.filter(|e| *e > 0);
                if let Some(cf) = conn.cf.as_mut() {
                    cf.expires_at = exp;
                    let expiry = proto::Expiry { ttl: proto::ttl(exp, env.unix_s) };
                    if cf.protobuf {
                        send_binary(env, conn, &pb::refresh_push(expiry));
                    } else if cf.uni {
                        uni_send(env, conn, &proto::refresh_push(expiry, false));
                    } else {
                        send_text(env, conn, &proto::refresh_push(expiry, true));
                    }
                }
            }
        }
    }
}

/// The engine lost publications of `channel`: leave it and tell the client with
/// "insufficient state" (its SDK resubscribes and recovers).
pub fn insufficient_state(env: &mut Env, conn: &mut Session, channel: &str) {
    if !conn.cf.as_ref().is_some_and(|c| c.subs.iter().any(|s| &*s.channel == channel)) {
        return;
    }
    let _ = unsubscribe(env, conn, channel);
    let why = proto::INSUFFICIENT_STATE;
    if is_pb(conn) {
        send_binary(env, conn, &pb::unsubscribe_push(channel, why));
    } else if conn.cf.as_ref().is_some_and(|c| c.uni) {
        uni_send(env, conn, &proto::unsubscribe_push(channel, why, false));
    } else {
        send_text(env, conn, &proto::unsubscribe_push(channel, why, true));
    }
}

/// The server API's subscribe for one connection: subscribe without a permission check and
/// push the result.
fn server_subscribe(env: &mut Env, conn: &mut Session, channel: String) {
    let req = SubscribeReq { channel: channel.clone(), ..Default::default() };
    let Ok(p) = prepare(env, conn, req, true) else { return };
    join_all(env, conn, vec![p], move |env, conn, joined| {
        let Some((p, rec)) = joined.ok().and_then(|mut j| j.pop()) else { return };
        let res = encode_subscribe(env, conn, &p.grant, &rec);
        if is_pb(conn) {
            let r: pb::SubscribeResult = prost::Message::decode(&res[..]).unwrap_or_default();
            send_binary(env, conn, &pb::subscribe_push(&channel, &r));
        } else if conn.cf.as_ref().is_some_and(|c| c.uni) {
            uni_send(env, conn, &proto::subscribe_push(&channel, &res, false));
        } else {
            send_text(env, conn, &proto::subscribe_push(&channel, &res, true));
        }
    });
}

/// Start a Centrifugo WebSocket connection after the upgrade (the stale timer runs until
/// connect arrives); `req` is the upgrade request.
pub fn on_upgrade(env: &mut Env, conn: &mut Session, uni: bool, protobuf: bool, req: &crate::transport::http::Req) {
    attach(env, conn, uni, req);
    if let Some(cf) = conn.cf.as_mut() {
        cf.protobuf = protobuf && !uni;
    }
    if let State::Ws(ws) = &mut conn.state {
        // Until connect arrives the ping timer is the "stale" deadline.
        ws.next_ping_ms = env.now_ms + env.shared.cfg.handshake_timeout_ms;
        ws.mode = if uni { WsMode::CfUni } else { WsMode::Centrifugo };
    }
}
