//! Transports: the protocol half of every connection, between the reactor and the hub.
//!
//! Owns: what a session does with its input in each state, what it does when its timer
//! fires, and how a published message is written for each wire format. The reactor calls
//! the functions of this module with a [`Session`] and an [`Env`]; handlers queue bytes on
//! the session and record effects in `env.fx` (flush, close, backpressure), which the
//! reactor applies at the end of the loop turn. Nothing here touches a socket, names the
//! reactor, or reads the clock (the turn's time is `env.now_ms` / `env.unix_s`).
//!
//! ```text
//!  reactor (sockets, poll, timers, clock) --bytes, Session, Env--> transport
//!  transport --queued bytes + Effects{flush, close, pressure}--> reactor
//!  transport --publish/subscribe/history--> hub --> proto (pure codecs)
//! ```
//!
//! - [`http`]: request parsing, routing, plain responses.
//! - [`ws`]: the WebSocket upgrade and frame handling (`/echo`, `/ws/`).
//! - [`pubsub`]: publish, polling, long-polling, iframe stream, SSE, `/ws/` endpoints.
//! - [`fanout`]: subscribing, delivering a published message, backpressure marks.
//! - [`wire`]: per-message wire encodings, built once per worker.
//! - [`access`]: CORS, API keys, the publish allow-list.
//! - [`centrifugo`]: Centrifugo's client protocol and server API.
//! - [`ops`], [`metrics`]: `/metrics` and `/stats`.

pub mod access;
pub mod authz;
pub mod centrifugo;
pub mod env;
pub mod fanout;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod outq;
pub mod pubsub;
pub mod session;
#[cfg(test)]
pub mod testkit;
#[cfg(test)]
mod tests;
pub mod wire;
pub mod ws;

pub use env::{Effects, Env, Sessions, Shared, Stats, LINGER_MS};
pub use fanout::leave_subscriptions;
pub use session::{Kind, Session, State, StreamKind, WsMode};

use crate::hub::bus::Note;
use crate::hub::local::ConnId;

/// Push onto a per-connection list that is usually short: the first element allocates room
/// for one (not `Vec`'s four: 3 x 32-72 bytes wasted on every connection with one
/// subscription), later ones double it.
pub fn push_small<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(x);
}

/// Bytes arrived for a session (`data` is the reactor's scratch buffer). Whatever the state
/// machine does not consume yet is kept in the session's `inbuf` and passed again, followed
/// by new bytes. An idle session keeps no input buffer.
pub fn on_bytes(env: &mut Env, conn: &mut Session, data: &mut [u8]) {
    conn.last_active_ms = env.now_ms;
    if conn.inbuf.is_empty() {
        let used = process(env, conn, data);
        if used < data.len() && !conn.dead {
            conn.inbuf.extend_from_slice(&data[used..]);
        }
    } else {
        let mut buf = conn.inbuf.take();
        buf.extend_from_slice(data);
        let used = process(env, conn, &mut buf);
        buf.drain(..used.min(buf.len()));
        // Idle connections own no read buffer: an emptied one is freed.
        conn.inbuf.put(buf);
    }
    if !conn.inbuf.is_empty() {
        check_held_input(env, conn);
    }
    note_partial_frame(env, conn);
}

/// Start (or end) the deadline of an incomplete WebSocket frame: bytes of a frame that
/// never completes must not be held forever (they count toward no out-queue).
fn note_partial_frame(env: &Env, conn: &mut Session) {
    note_held(env, conn, false)
}

/// After a read on a TLS connection: `below` says whether the reactor holds the start of a
/// TLS record for it (bytes the session has not seen yet). Those are held input like an
/// incomplete frame, under the same deadline, so a client cannot park a partial record.
pub fn note_held_below(env: &Env, conn: &mut Session, below: bool) {
    note_held(env, conn, below)
}

fn note_held(env: &Env, conn: &mut Session, below: bool) {
    // Input held back while the session is paused over its high-water mark is not a
    // stalled frame: the client is not reading, and the ping timer handles that.
    let held = (below || !conn.inbuf.is_empty()) && !env.over_high_water(conn);
    if let State::Ws(w) = &mut conn.state {
        match (held, w.partial_since_ms()) {
            (true, None) => w.set_partial_since(Some(env.now_ms)),
            (false, Some(_)) => w.set_partial_since(None),
            _ => {}
        }
    }
}

/// Run input processing again on bytes already held (after a long-poll completes, the next
/// pipelined request may be waiting in `inbuf`).
pub fn reprocess(env: &mut Env, conn: &mut Session) {
    if conn.inbuf.is_empty() || conn.dead {
        return;
    }
    let mut buf = conn.inbuf.take();
    let used = process(env, conn, &mut buf);
    buf.drain(..used.min(buf.len()));
    conn.inbuf.put(buf);
    note_partial_frame(env, conn);
}

/// Feed received bytes to the session's state machine; returns how many were consumed.
/// Stops early, leaving input unconsumed, while the session is over its high-water mark
/// (the reactor stops reading it until the queue drains) or when its per-turn budget of
/// requests/frames is spent (the reactor comes back next turn: `env.fx.ready`).
fn process(env: &mut Env, conn: &mut Session, buf: &mut [u8]) -> usize {
    let mut pos = 0;
    while pos < buf.len() && !conn.dead && !conn.parked {
        let parses = matches!(conn.state, State::Http(_) | State::Ws(_));
        if parses && env.over_high_water(conn) {
            break;
        }
        if parses && env.budget == 0 {
            env.fx.ready.push(conn.id.key as usize);
            break;
        }
        let n = match conn.state {
            State::Http(_) => http::on_data(env, conn, &mut buf[pos..]),
            State::Ws(_) => ws::on_data(env, conn, &mut buf[pos..]),
            // Nothing is expected from these clients: read and discard.
            State::Stream { .. } | State::Closing { .. } => buf.len() - pos,
            // Pipelined requests behind a held long-poll wait their turn (bounded by
            // `check_held_input`).
            State::LongPoll(_) => 0,
        };
        if n == 0 {
            break;
        }
        if parses {
            env.budget -= 1;
        }
        pos += n;
    }
    if conn.dead {
        buf.len()
    } else {
        pos
    }
}

/// Bound what a session may hold unconsumed: a partial request head is bounded by the
/// HTTP limits inside the parser, a partial frame by the WebSocket limits; input queued
/// behind a held long-poll may not exceed one request head plus body.
fn check_held_input(env: &mut Env, conn: &mut Session) {
    if let State::LongPoll(_) = conn.state {
        if conn.inbuf.len() > env.http_limits.max_header_bytes + env.http_limits.max_body {
            log::debug!(
                "conn {}:{} from {}: too much pipelined input behind a long-poll",
                env.id,
                conn.id.key,
                conn.peer
            );
            env.kill(conn);
        }
    }
}

/// The session's out-queue fell to the low-water mark: continue a paced replay.
pub fn on_drained(env: &mut Env, conn: &mut Session) {
    if conn.replay.is_some() {
        fanout::refill(env, conn);
    }
}

/// The peer closed its write side (read returned 0).
pub fn on_eof(env: &mut Env, conn: &mut Session) {
    match &conn.state {
        // Our close was sent and the peer's FIN arrived: the close is complete.
        State::Closing { .. } => env.kill(conn),
        // A client that half-closes after its request still gets the answer (HTTP/1.0
        // style); anything else is gone.
        State::Http(_) if !conn.out.is_empty() => env.close_after_flush(conn),
        _ => env.kill(conn),
    }
}

/// Everything queued before a graceful close has been written and the reactor shut the
/// write side: leave the channels and linger until the peer's FIN.
pub fn on_final_flush(env: &mut Env, conn: &mut Session) {
    leave_subscriptions(env, conn);
    conn.state = State::Closing { until_ms: env.now_ms + LINGER_MS };
}

/// The session is being freed (its socket is closed by the reactor).
pub fn on_close(env: &mut Env, conn: &mut Session) {
    env.forget(conn);
    leave_subscriptions(env, conn);
}

/// Refuse a fresh connection at admission with an HTTP error, then close it.
pub fn refuse(env: &mut Env, conn: &mut Session, status: u16, why: &str) {
    let resp = crate::proto::http::error_response(status, why, false);
    env.queue(conn, resp);
    env.close_after_flush(conn);
}

/// The session's next deadline in ms on the worker clock, or None.
pub fn next_deadline(env: &Env, conn: &Session) -> Option<u64> {
    let cfg = &env.shared.cfg;
    match &conn.state {
        State::Http(_) => Some(match conn.req_started_ms() {
            Some(t) => t + cfg.handshake_timeout_ms,
            None => conn.last_active_ms + cfg.idle_timeout_ms,
        }),
        State::Ws(w) => Some(match w.partial_since_ms() {
            Some(t) => w.next_ping_ms.min(t + cfg.handshake_timeout_ms),
            None => w.next_ping_ms,
        }),
        State::Stream { next_keepalive_ms, .. } => Some(*next_keepalive_ms),
        State::LongPoll(lp) => Some(lp.expires_ms),
        State::Closing { until_ms } => Some(*until_ms),
    }
}

/// A timer fired for this session: act if its deadline has passed.
pub fn on_timer(env: &mut Env, conn: &mut Session) {
    let now = env.now_ms;
    match next_deadline(env, conn) {
        Some(d) if d <= now => {}
        _ => return, // moved later since the entry was armed; the reactor re-arms
    }
    match &mut conn.state {
        State::Http(_) => {
            if conn.req_started_ms().is_some() {
                // Slowloris: the request head did not arrive in time.
                log::debug!("conn {}:{} from {}: request head timeout", env.id, conn.id.key, conn.peer);
                let receiving = !conn.inbuf.is_empty() || matches!(conn.state, State::Http(Some(_)));
                if conn.out.is_empty() && !receiving {
                    env.kill(conn);
                } else {
                    let r = crate::proto::http::error_response(408, "request not received in time", false);
                    conn.inbuf.clear();
                    conn.state = State::Http(None);
                    env.queue(conn, r);
                    conn.set_req_started(None);
                    env.close_after_flush(conn);
                }
            } else {
                log::debug!("conn {}:{} from {}: idle timeout", env.id, conn.id.key, conn.peer);
                env.kill(conn);
            }
        }
        State::Ws(w) if w.partial_since_ms().is_some_and(|t| t + env.shared.cfg.handshake_timeout_ms <= now) => {
            // A frame started arriving and never completed: its bytes are held for nothing.
            log::debug!("conn {}:{} from {}: incomplete frame timed out", env.id, conn.id.key, conn.peer);
            conn.inbuf.clear();
            ws::close(env, conn, 1008, "frame not completed in time")
        }
        State::Ws(_) => ws::on_ping_timer(env, conn),
        State::Stream { .. } if conn.cf.is_some() => centrifugo::client::on_ping_timer(env, conn),
        State::Stream { .. } => pubsub::on_keepalive(env, conn),
        State::LongPoll(_) => pubsub::longpoll_timeout(env, conn),
        State::Closing { .. } => env.kill(conn),
    }
}

/// Graceful shutdown: WebSocket clients get close 1001, held long-polls are answered,
/// streams end, idle keep-alive connections are closed.
pub fn on_shutdown(env: &mut Env, conn: &mut Session) {
    match &conn.state {
        State::Ws(_) if conn.cf.is_some() => {
            centrifugo::client::disconnect(env, conn, crate::proto::centrifugo::SHUTDOWN)
        }
        State::Ws(_) => ws::close(env, conn, 1001, "server shutting down"),
        State::LongPoll(_) => pubsub::longpoll_timeout(env, conn),
        State::Stream { kind, .. } => {
            if *kind == StreamKind::Sse {
                env.queue(conn, bytes::Bytes::from_static(b": server shutting down\n\n"));
            }
            env.close_after_flush(conn);
        }
        State::Http(_) => {
            if conn.out.is_empty() {
                env.kill(conn);
            } else {
                env.close_after_flush(conn);
            }
        }
        State::Closing { .. } => {}
    }
}

/// An engine answer for a parked session (taken by value: the answers move into the
/// handler). The session is listed in `done` so the reactor resumes its input.
pub fn on_answer<S: Sessions>(
    env: &mut Env,
    sessions: &mut S,
    id: ConnId,
    answers: Vec<crate::hub::Done>,
    done: &mut Vec<ConnId>,
) {
    let Some(conn) = sessions.session(id.key as usize) else {
        return;
    };
    if conn.id.gen != id.gen {
        return;
    }
    env.resume(conn, answers);
    log::trace!("conn {}:{}: resumed with {} bytes queued", env.id, id.key, conn.out.len());
    done.push(id);
}

/// A note from the worker's inbox (other than shutdown, which the reactor handles): a
/// publication to fan out, a join/leave event, or an API command for a user's sessions.
/// Long-polls completed by a delivery are listed in `done` (the reactor re-arms them and
/// runs their pipelined input).
pub fn on_note<S: Sessions>(env: &mut Env, sessions: &mut S, note: &Note, done: &mut Vec<ConnId>) {
    match note {
        Note::Publish(msg) => {
            let mut cache = wire::WireCache::default();
            fanout::deliver(env, sessions, msg, &mut cache, done);
        }
        Note::Event(ev) => centrifugo::client::deliver_event(env, sessions, ev),
        Note::User(cmd) => centrifugo::client::user_command(env, sessions, cmd),
        Note::Emulation { session, data } => centrifugo::emulation::deliver(env, sessions, session, data),
        Note::Lost { channel, reset } => fanout::lost(env, sessions, channel, *reset, done),
        Note::Answer { .. } => {}
        Note::Shutdown => {}
    }
}
