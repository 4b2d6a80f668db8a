//! Centrifugo's server API: `POST /api/<method>` with a JSON body, authorised by
//! `X-API-Key: KEY` or `Authorization: apikey KEY`; answers `{"result":...}` or
//! `{"error":{"code":N,"message":"..."}}` (HTTP 200), 401 without a valid key, 400 for a
//! body that is not JSON, 404 for an unknown method.
//!
//! Owns: the API methods. Called by the router. Commands aimed at users' connections
//! (subscribe, unsubscribe, disconnect, refresh) are broadcast to every worker's inbox.

use super::client::{history_op, history_select, presence_result};
use crate::hub::bus::{Note, UserCmd};
use crate::hub::check_cf_channel as check_channel;
use crate::hub::envelope::json_data;
use crate::hub::{Done, Op, PubMeta};
use crate::proto::centrifugo::{self as proto, Encode, Error};
use crate::proto::http::Response;
use crate::proto::json::Writer;
use crate::transport::access::ct_eq;
use crate::transport::http::{respond, Req, ReqInfo};
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

fn send(env: &mut Env, conn: &mut Session, req: &Req, status: u16, body: &[u8]) {
    send_to(env, conn, &ReqInfo::of(env, req), status, body);
}

fn send_to(env: &mut Env, conn: &mut Session, info: &ReqInfo, status: u16, body: &[u8]) {
    let keep = info.keep_alive;
    let r = Response::new(status).keep_alive(keep).http10(info.http10).body("application/json", body);
    respond(env, conn, r, keep);
}

/// Turns a method's engine answers into its result.
type Finish = Box<dyn FnOnce(&Env, &mut std::vec::IntoIter<Done>) -> Result<Bytes, Error> + Send>;

/// What an API method does: answer now, or after engine operations.
enum Call {
    Now(Result<Bytes, Error>),
    Wait(Vec<Op>, Finish),
}

impl From<Result<Bytes, Error>> for Call {
    fn from(r: Result<Bytes, Error>) -> Call {
        Call::Now(r)
    }
}

/// Run the engine operations of `calls` (one round trip for all of them), then `then` with
/// each call's result in order.
fn run_calls<F>(env: &mut Env, conn: &mut Session, calls: Vec<Call>, then: F)
where
    F: FnOnce(&mut Env, &mut Session, Vec<Result<Bytes, Error>>) + Send + 'static,
{
    let mut ops = Vec::new();
    let mut steps = Vec::with_capacity(calls.len());
    for c in calls {
        match c {
            Call::Now(r) => steps.push((0, Err(r))),
            Call::Wait(o, f) => {
                steps.push((o.len(), Ok(f)));
                ops.extend(o);
            }
        }
    }
    env.engine(conn, ops, move |env, conn, done| {
        let mut it = done.into_iter();
        let results = steps
            .into_iter()
            .map(|(n, step)| match step {
                Err(now) => now,
                Ok(f) => {
                    let mut mine: std::vec::IntoIter<Done> = it.by_ref().take(n).collect::<Vec<_>>().into_iter();
                    f(env, &mut mine)
                }
            })
            .collect();
        then(env, conn, results)
    });
}

/// The body of a request without a valid key (401).
const UNAUTHORISED_BODY: &[u8] = b"{\"error\":\"unauthorized: pass X-API-Key or Authorization: apikey KEY\"}";
/// The answer when no API key is configured (403): nothing a client sends can pass.
const NO_KEY_BODY: &[u8] = b"{\"error\":\"the server API is disabled: no http_api.key is configured (set http_api.key, or http_api.insecure on a trusted network)\"}";
/// The body of a request whose body is not a JSON object (400).
const NOT_AN_OBJECT_BODY: &[u8] = b"{\"error\":\"request body must be a JSON object\"}";

/// One API answer: `{"result":R}` or `{"error":{"code":C,"message":M}}`. Also the shape of
/// each element of a broadcast's `responses`.
fn answer(w: &mut Writer, res: &Result<Bytes, Error>) {
    w.obj();
    match res {
        Ok(r) => w.key("result").raw(r),
        Err(e) => w.key("error").obj().key("code").u64(e.code.into()).key("message").string(e.message).end(),
    };
    w.end();
}

/// [`answer`] on its own.
fn answer_body(res: &Result<Bytes, Error>) -> Bytes {
    let mut w = Writer::new();
    answer(&mut w, res);
    w.finish()
}

/// `POST /api/<method>`.
pub fn handle(env: &mut Env, conn: &mut Session, req: &Req, method: &str) {
    if !authorised(env, req) {
        log::debug!("conn {}:{} from {}: api refused (no valid key)", env.id, conn.id.key, conn.peer);
        if env.shared.cfg.http_api.key.is_empty() {
            // No key can be right: say what to configure rather than ask for a key.
            return send(env, conn, req, 403, NO_KEY_BODY);
        }
        return send(env, conn, req, 401, UNAUTHORISED_BODY);
    }
    let body: &[u8] = if req.body.trim_ascii().is_empty() { b"{}" } else { req.body };
    // Kept as raw text: `data` must pass through byte for byte (Centrifugo does not
    // re-serialize it), so only the parts a method reads are parsed.
    let params: &RawValue = match serde_json::from_slice::<&RawValue>(body) {
        Ok(v) if v.get().starts_with('{') => v,
        _ => return send(env, conn, req, 400, NOT_AN_OBJECT_BODY),
    };
    if method == "batch" {
        #[derive(Deserialize)]
        struct Batch<'a> {
            #[serde(borrow, default)]
            commands: Option<Vec<&'a RawValue>>,
        }
        let Some(cmds) = serde_json::from_str::<Batch>(params.get()).ok().and_then(|b| b.commands) else {
            return send(env, conn, req, 200, &answer_body(&Err(proto::BAD_REQUEST)));
        };
        // `{"replies":[{"METHOD":RESULT} | {"error":{..}}, ..]}`
        let mut methods: Vec<Option<String>> = Vec::with_capacity(cmds.len());
        let mut calls = Vec::with_capacity(cmds.len());
        for c in cmds {
            let one = serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(c.get()).ok();
            match one.as_ref().and_then(|o| o.iter().next()) {
                Some((m, p)) => match call(env, m, p) {
                    Some(c) => {
                        methods.push(Some(m.clone()));
                        calls.push(c);
                    }
                    None => {
                        methods.push(None);
                        calls.push(Call::Now(Err(proto::METHOD_NOT_FOUND)));
                    }
                },
                None => {
                    methods.push(None);
                    calls.push(Call::Now(Err(proto::BAD_REQUEST)));
                }
            }
        }
        let info = ReqInfo::of(env, req);
        return run_calls(env, conn, calls, move |env, conn, results| {
            let mut w = Writer::new();
            w.obj().key("replies").arr();
            for (m, r) in methods.iter().zip(results) {
                match (m, r) {
                    (Some(m), Ok(r)) => {
                        w.obj().key(m).raw(&r).end();
                    }
                    (_, r) => answer(&mut w, &r.and(Err(proto::BAD_REQUEST))),
                }
            }
            w.end_arr().end();
            send_to(env, conn, &info, 200, w.as_bytes());
        });
    }
    if !decodes(method, params) {
        // Centrifugo decodes the body into the method's request type first: a field of the
        // wrong type is a 400, not an API error.
        return send(env, conn, req, 400, BAD_FIELDS_BODY);
    }
    match call(env, method, params) {
        Some(Call::Now(res)) => send(env, conn, req, 200, &answer_body(&res)),
        Some(c) => {
            let info = ReqInfo::of(env, req);
            run_calls(env, conn, vec![c], move |env, conn, mut results| {
                let res = results.pop().unwrap_or(Err(proto::INTERNAL));
                send_to(env, conn, &info, 200, &answer_body(&res));
            });
        }
        None => send(env, conn, req, 404, &answer_body(&Err(proto::METHOD_NOT_FOUND))),
    }
}

/// The body of a request whose fields do not have the method's types (400).
const BAD_FIELDS_BODY: &[u8] = b"{\"error\":\"request fields do not match the method's parameters\"}";

#[derive(Deserialize, Default)]
#[serde(default)]
#[allow(dead_code)] // only decoded, to check the types
struct ChannelParams {
    channel: String,
    pattern: String,
}

/// Whether `raw` has the field types of `method`'s parameters (unknown methods pass: they
/// get their 404 from [`call`]).
fn decodes(method: &str, raw: &RawValue) -> bool {
    let s = raw.get();
    match method {
        "publish" | "broadcast" => serde_json::from_str::<PublishParams>(s).is_ok(),
        "subscribe" | "unsubscribe" | "disconnect" | "refresh" => serde_json::from_str::<UserParams>(s).is_ok(),
        "history" => serde_json::from_str::<HistoryParams>(s).is_ok(),
        "presence" | "presence_stats" | "history_remove" | "channels" => {
            serde_json::from_str::<ChannelParams>(s).is_ok()
        }
        _ => true,
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

/// The publish result: `{"offset":N,"epoch":"E"}`, or `{}` for an unsequenced publication.
struct PublishResult<'a> {
    offset: u64,
    epoch: &'a str,
}

impl Encode for PublishResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj();
        if self.offset > 0 {
            w.key("offset").u64(self.offset).key("epoch").string(self.epoch);
        }
        w.end();
    }
}

/// The checks of one API publish: the operation, and whether the namespace keeps history.
fn publish_one(env: &Env, channel: &str, data: &[u8], p: &PublishParams) -> Result<(Op, bool), Error> {
    if check_channel(channel).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    let Some((_, opts)) = env.shared.cfg.channel.resolve(channel) else {
        return Err(proto::UNKNOWN_CHANNEL);
    };
    let meta = PubMeta {
        info: None,
        tags: p.tags.as_ref().filter(|t| !t.is_empty()).and_then(|t| serde_json::to_vec(t).ok()).map(Bytes::from),
        skip_history: p.skip_history,
        idempotency_key: (!p.idempotency_key.is_empty()).then(|| p.idempotency_key.clone()),
    };
    Ok((Op::Publish { channel: channel.to_string(), data: json_data(data), meta }, opts.history()))
}

/// The result of one API publish from its engine answer.
fn published(env: &Env, history: bool, done: Option<Done>) -> Result<Bytes, Error> {
    let (id, epoch) = match done.map(Done::published) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            log::warn!("api publish: {e}");
            return Err(proto::INTERNAL);
        }
        None => return Err(proto::INTERNAL),
    };
    env.shared.stats.published.fetch_add(1, Ordering::Relaxed);
    // id 0: not sequenced (skip_history). A namespace without history answers `{}` as
    // Centrifugo does, even though the hub sequences the publication for the simple
    // endpoints' own history (top-level `history_size`).
    let offset = if history { id } else { 0 };
    Ok(PublishResult { offset, epoch: &epoch }.encode())
}

fn channel_checked(env: &Env, ch: &str) -> Result<crate::config::centrifugo::ChannelOptions, Error> {
    if check_channel(ch).is_err() {
        return Err(proto::BAD_REQUEST);
    }
    env.shared.cfg.channel.resolve(ch).map(|(_, o)| o.clone()).ok_or(proto::UNKNOWN_CHANNEL)
}

/// One API method; None when the method does not exist.
fn call(env: &mut Env, method: &str, raw: &RawValue) -> Option<Call> {
    call_result(env, method, raw).map(|r| match r {
        Ok(c) => c,
        Err(e) => Call::Now(Err(e)),
    })
}

fn call_result(env: &mut Env, method: &str, raw: &RawValue) -> Option<Result<Call, Error>> {
    if !raw.get().starts_with('{') {
        return Some(Err(proto::BAD_REQUEST));
    }
    // Publishing reads the raw text only; the other methods read a parsed tree.
    let params = &if matches!(method, "publish" | "broadcast") {
        Value::Null
    } else {
        serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null)
    };
    let de = |v: &Value| v.clone();
    Some(match method {
        "publish" | "broadcast" => {
            let Ok(p) = serde_json::from_str::<PublishParams>(raw.get()) else {
                return Some(Err(proto::BAD_REQUEST));
            };
            let data: Vec<u8> = match (&p.data, &p.b64data) {
                (Some(d), _) => d.get().as_bytes().to_vec(),
                (None, Some(_)) => return Some(Err(proto::BAD_REQUEST)), // binary needs a binary protocol
                (None, None) => return Some(Err(proto::BAD_REQUEST)),
            };
            if method == "publish" {
                publish_one(env, &p.channel, &data, &p).map(|(op, history)| {
                    let f: Finish = Box::new(move |env, done| published(env, history, done.next()));
                    Call::Wait(vec![op], f)
                })
            } else {
                if p.channels.is_empty() {
                    return Some(Err(proto::BAD_REQUEST));
                }
                // `{"responses":[{"result":R} | {"error":{..}}, ..]}`
                let mut ops = Vec::new();
                let checked: Vec<Result<bool, Error>> = p
                    .channels
                    .iter()
                    .map(|c| {
                        publish_one(env, c, &data, &p).map(|(op, history)| {
                            ops.push(op);
                            history
                        })
                    })
                    .collect();
                let f: Finish = Box::new(move |env, done| {
                    let mut w = Writer::new();
                    w.obj().key("responses").arr();
                    for c in checked {
                        match c {
                            Ok(history) => answer(&mut w, &published(env, history, done.next())),
                            Err(e) => answer(&mut w, &Err(e)),
                        }
                    }
                    w.end_arr().end();
                    Ok(w.finish())
                });
                Ok(Call::Wait(ops, f))
            }
        }
        "subscribe" | "unsubscribe" | "disconnect" | "refresh" => {
            let Ok(p) = serde_json::from_value::<UserParams>(de(params)) else { return Some(Err(proto::BAD_REQUEST)) };
            // As Centrifugo v6.9.1 (internal/api/api.go): an empty user is not refused; it
            // names the anonymous connections (user ""). unsubscribe takes an empty channel
            // (Centrifugo: all of the user's channels; Herald: none, see README).
            let skip_check = method == "unsubscribe" && p.channel.is_empty();
            if matches!(method, "subscribe" | "unsubscribe") && !skip_check {
                if let Err(e) = channel_checked(env, &p.channel) {
                    return Some(Err(e));
                }
            }
            let cmd = Arc::new(match method {
                "subscribe" => UserCmd::Subscribe { user: p.user, channel: p.channel },
                "unsubscribe" => UserCmd::Unsubscribe { user: p.user, channel: p.channel },
                "disconnect" => {
                    let force = proto::FORCE_NO_RECONNECT;
                    // No reason: the connection closes with Centrifugo's "force disconnect".
                    let d = p.disconnect.unwrap_or(DisconnectParams { code: force.code, reason: String::new() });
                    // Only application close codes; anything else is the default force disconnect.
                    let code = if (3000..5000).contains(&d.code) { d.code } else { force.code };
                    UserCmd::Disconnect { user: p.user, code, reason: d.reason }
                }
                _ => UserCmd::Refresh { user: p.user, expire_at: p.expire_at, expired: p.expired },
            });
            env.shared.engine.broadcast(&|| Note::User(cmd.clone()));
            Ok(Call::Now(Ok(proto::Empty.encode())))
        }
        "presence" | "presence_stats" => {
            let ch = params.get("channel").and_then(|c| c.as_str()).unwrap_or("");
            let stats = method == "presence_stats";
            match channel_checked(env, ch) {
                Err(e) => Err(e),
                Ok(o) if !o.presence => Err(proto::NOT_AVAILABLE),
                Ok(_) => {
                    let f: Finish = Box::new(move |_, done| match done.next().map(Done::presence) {
                        Some(Ok(entries)) => Ok(presence_result(&entries, stats)),
                        Some(Err(e)) => {
                            log::warn!("api presence: {e}");
                            Err(proto::INTERNAL)
                        }
                        None => Err(proto::INTERNAL),
                    });
                    Ok(Call::Wait(vec![Op::Presence { channel: ch.to_string() }], f))
                }
            }
        }
        "history" => {
            let Ok(p) = serde_json::from_value::<HistoryParams>(de(params)) else {
                return Some(Err(proto::BAD_REQUEST));
            };
            match channel_checked(env, &p.channel) {
                Err(e) => Err(e),
                Ok(o) if !o.history() => Err(proto::NOT_AVAILABLE),
                Ok(_) if p.reverse && p.since.as_ref().is_some_and(|sp| sp.offset == 0) => Err(proto::BAD_REQUEST),
                Ok(_) => {
                    let f: Finish = Box::new(move |_, done| {
                        let all = match done.next().map(Done::history) {
                            Some(Ok(all)) => all,
                            Some(Err(e)) => {
                                log::warn!("api history: {e}");
                                return Err(proto::INTERNAL);
                            }
                            None => return Err(proto::INTERNAL),
                        };
                        let page = history_select(all, p.limit, p.since.as_ref(), p.reverse)?;
                        let pubs: Vec<proto::Pub<'_>> =
                            page.msgs.iter().map(|m| crate::transport::wire::cf_pub(m)).collect();
                        Ok(page.result(&pubs).encode())
                    });
                    Ok(Call::Wait(vec![history_op(p.channel.clone())], f))
                }
            }
        }
        "history_remove" => {
            let ch = params.get("channel").and_then(|c| c.as_str()).unwrap_or("");
            match channel_checked(env, ch) {
                Err(e) => Err(e),
                Ok(_) => {
                    env.shared.engine.history_remove(ch);
                    Ok(Call::Now(Ok(proto::Empty.encode())))
                }
            }
        }
        "channels" => {
            let pattern = params.get("pattern").and_then(|p| p.as_str()).unwrap_or("");
            // `{"channels":{"NAME":{"num_clients":N},..}}`
            let mut w = Writer::new();
            w.obj().key("channels").obj();
            for st in env.shared.engine.channel_stats() {
                if st.subscribers == 0 || !glob(pattern, &st.name) {
                    continue;
                }
                w.key(&st.name).obj().key("num_clients").u64(st.subscribers as u64).end();
            }
            w.end().end();
            Ok(Call::Now(Ok(w.finish())))
        }
        "info" => {
            // This node's counters now, then the other live nodes as the engine last saw
            // them (a shared engine: every node heartbeats every 2 s).
            let mut w = Writer::with_capacity(256);
            w.obj().key("nodes").arr();
            w.raw(&node_info(&env.shared, env.now_ms));
            for (_, info) in env.shared.engine.nodes() {
                w.raw(&info);
            }
            w.end_arr().end();
            Ok(Call::Now(Ok(w.finish())))
        }
        _ => return None,
    })
}

/// This node as `/api/info` lists it (also what it tells other nodes in its heartbeat).
pub fn node_info(shared: &crate::transport::Shared, now_ms: u64) -> Bytes {
    let stats = shared.engine.channel_stats();
    let subs: usize = stats.iter().map(|s| s.subscribers).sum();
    let chans = stats.iter().filter(|s| s.subscribers > 0).count();
    let clients = shared.stats.connections.load(Ordering::Relaxed);
    let cf_clients = shared.stats.cf_clients.load(Ordering::Relaxed);
    let users = shared.users.lock().map(|u| u.len()).unwrap_or(0);
    let mut w = Writer::with_capacity(256);
    w.obj();
    w.key("uid").string(&shared.node_id).key("name").string("herald").key("version").string(proto::VERSION);
    w.key("num_clients").u64(cf_clients as u64).key("num_users").u64(users as u64);
    w.key("num_subs").u64(subs as u64).key("num_channels").u64(chans as u64);
    w.key("uptime").u64(now_ms / 1000).key("num_connections").u64(clients as u64);
    w.end();
    w.finish()
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
