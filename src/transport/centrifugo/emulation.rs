//! Centrifugo's bidirectional emulation: centrifuge-js's `http_stream` and `sse` transports.
//! The client opens a stream (`POST /connection/http_stream` with the connect command as
//! the body, or `GET /connection/sse?cf_connect=COMMAND`); replies and pushes come down it
//! (a JSON line each, or an SSE event each); every later command is posted to
//! `/emulation` as `{"session": S, "node": N, "data": "COMMAND"}` and answered with `204`.
//!
//! Owns: opening those streams, the session registry of each worker, and routing an
//! `/emulation` request to the worker that holds the session (the session id names it:
//! `w{worker}.{128 random bits}`) through that worker's inbox. The command logic is the client's
//! ([`super::client::on_frame`]). A request for another node is carried there by a shared
//! engine (Redis), as Centrifugo does through its broker; with the embedded engine it is
//! answered `404`, as Centrifugo does. A session gone is answered `204` (its stream ended).

use super::client;
use crate::hub::bus::Note;
use crate::proto::http::{query_param, Method};
use crate::transport::http::{error, respond, Req};
use crate::transport::session::{State, StreamKind};
use crate::transport::{Env, Session, Sessions};
use bytes::Bytes;
use std::sync::Arc;

/// Largest `/emulation` body (Centrifugo's default, 64 KiB).
pub const MAX_EMULATION_BODY: usize = 64 * 1024;

/// `POST /connection/http_stream` (`kind` CfHttp) or `GET /connection/sse` (CfSse).
pub fn open(env: &mut Env, conn: &mut Session, req: &Req, kind: StreamKind) {
    let command: Vec<u8> = if kind == StreamKind::CfSse {
        match query_param(req.head.query, "cf_connect") {
            Some(c) => c.into_owned().into_bytes(),
            None => return error(env, conn, req, 400, "pass the connect command in cf_connect"),
        }
    } else {
        if req.head.method != Method::Post || req.body.trim_ascii().is_empty() {
            return error(env, conn, req, 400, "POST the connect command");
        }
        req.body.to_vec()
    };
    if !crate::transport::ws::origin_allowed(&env.shared.cfg.client.allowed_origins, req, true) {
        return error(env, conn, req, 403, "origin not allowed (client.allowed_origins)");
    }
    if env.shutting_down {
        return error(env, conn, req, 503, "server shutting down");
    }
    let ct = if kind == StreamKind::CfSse { "text/event-stream; charset=utf-8" } else { "application/json" };
    env.queue(conn, crate::transport::pubsub::stream_head(env, req, ct));
    conn.state =
        State::Stream { kind, next_keepalive_ms: env.now_ms + env.shared.cfg.handshake_timeout_ms, multi: false };
    client::attach(env, conn, false, req);
    if let Some(cf) = conn.cf.as_mut() {
        cf.emulated = true;
        // The session id is what authorises `/emulation` commands for this client, so it is
        // not the client id (which presence and join/leave show to other clients) but 128
        // bits from the OS's CSPRNG, after the worker index that routes it.
        let Some(secret) = random_hex() else {
            return client::disconnect(env, conn, crate::proto::centrifugo::SHUTDOWN);
        };
        let session: Arc<str> = Arc::from(format!("w{}.{secret}", env.id));
        env.emulation.insert(session.clone(), conn.id);
        cf.session = Some(session);
    }
    client::on_frame(env, conn, &command);
}

/// 16 random bytes as hex, from the OS (getrandom: never blocks once the system is up).
fn random_hex() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[derive(serde::Deserialize)]
struct EmulationRequest {
    #[serde(default)]
    node: String,
    session: String,
    data: String,
}

/// `POST /emulation`.
pub fn request(env: &mut Env, conn: &mut Session, req: &Req) {
    if req.body.len() > MAX_EMULATION_BODY {
        return error(env, conn, req, 413, "emulation request over 64 KiB");
    }
    let Ok(r) = serde_json::from_slice::<EmulationRequest>(req.body) else {
        return error(env, conn, req, 400, "body must be {\"session\":..,\"node\":..,\"data\":\"COMMAND\"}");
    };
    if r.node != env.shared.node_id {
        // Another node holds the session: a shared engine carries the command there (as
        // Centrifugo does through its broker), if that node is alive (so a made-up node
        // name costs nothing but this answer); with the embedded engine there is none.
        let live = env.shared.engine.nodes().iter().any(|(id, _)| *id == r.node);
        if !live || !env.shared.engine.forward_emulation(&r.node, &r.session, Bytes::from(r.data)) {
            return error(env, conn, req, 404, "no such node");
        }
        return accepted(env, conn, req);
    }
    let worker = r
        .session
        .strip_prefix('w')
        .and_then(|s| s.split('.').next())
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|w| *w < env.shared.inboxes.len());
    let Some(worker) = worker else {
        return error(env, conn, req, 400, "malformed session");
    };
    let note = Note::Emulation { session: Arc::from(r.session), data: Bytes::from(r.data) };
    // Through the inbox even for this worker: the command runs with the session, never
    // inside another connection's request.
    env.shared.inboxes[worker].send(note);
    accepted(env, conn, req);
}

/// `204`: the command is on its way to its session.
fn accepted(env: &mut Env, conn: &mut Session, req: &Req) {
    let keep = req.keep_alive();
    let mut resp = crate::proto::http::Response::new(204).keep_alive(keep);
    if let Some(o) = crate::transport::access::cors_origin(env, req) {
        resp = resp.header("Access-Control-Allow-Origin", &o).header("Vary", "Origin");
    }
    respond(env, conn, resp.empty(), keep);
}

/// Most `/emulation` posts that may wait behind a session's engine or proxy answer. A
/// WebSocket client waiting that way is simply not read; an emulation client posts on other
/// connections, so its posts are held, and this bounds what they hold (64 KiB each).
pub const MAX_WAITING_POSTS: usize = 16;

/// A command from `/emulation` reaches its session (inbox note on the session's worker).
pub fn deliver<S: Sessions>(env: &mut Env, sessions: &mut S, session: &Arc<str>, data: &Bytes) {
    let Some(id) = env.emulation.get(session).copied() else { return };
    let Some(conn) = sessions.session(id.key as usize) else { return };
    if conn.id.gen != id.gen || conn.dead {
        return;
    }
    if env.deferred(conn) >= MAX_WAITING_POSTS {
        log::info!(
            "conn {}:{} from {}: {MAX_WAITING_POSTS} emulation posts wait already, closing",
            env.id,
            conn.id.key,
            conn.peer
        );
        let d = crate::proto::centrifugo::Disconnect { code: 3013, reason: "too many requests" };
        return client::disconnect(env, conn, d);
    }
    client::on_frame(env, conn, data);
}
