//! Transports: adapters between a connection and the hub.
//!
//! Owns: what a connection does with its input in each state, what it does when a timer
//! fires, and how a published message is written for each wire format. Called by the
//! reactor with bytes and `&mut Conn`; transports push to the out-queue and change state,
//! and never read or write a socket.
//!
//! - [`http`]: request parsing, routing, plain responses.
//! - [`ws`]: the WebSocket upgrade and frame handling (`/echo`, `/ws/`).
//! - [`pubsub`]: publish, polling, long-polling, iframe stream, SSE, and delivery.

pub mod http;
pub mod ops;
pub mod pubsub;
pub mod ws;

use crate::reactor::conn::{Conn, State, StreamKind};
use crate::reactor::worker::Ctx;
pub use pubsub::{deliver, leave_subscriptions, WireCache};

/// Feed received bytes to the connection's state machine; returns how many were consumed.
/// Unconsumed bytes are kept by the reactor and passed again, followed by new ones.
pub fn process(ctx: &mut Ctx, conn: &mut Conn, buf: &mut [u8]) -> usize {
    let mut pos = 0;
    while pos < buf.len() && !conn.dead {
        let n = match conn.state {
            State::Http => http::on_data(ctx, conn, &mut buf[pos..]),
            State::Ws(_) => ws::on_data(ctx, conn, &mut buf[pos..]),
            // Nothing is expected from these clients: read and discard.
            State::Stream { .. } | State::Closing { .. } => buf.len() - pos,
            // Pipelined requests behind a held long-poll wait their turn (bounded by
            // `check_held_input`).
            State::LongPoll(_) => 0,
        };
        if n == 0 {
            break;
        }
        pos += n;
    }
    if conn.dead {
        buf.len()
    } else {
        pos
    }
}

/// Bound what a connection may hold unconsumed: a partial request head is bounded by the
/// HTTP limits inside the parser, a partial frame by the WebSocket limits; input queued
/// behind a held long-poll may not exceed one request head.
pub fn check_held_input(ctx: &mut Ctx, conn: &mut Conn) {
    if let State::LongPoll(_) = conn.state {
        if conn.inbuf.len() > ctx.http_limits.max_header_bytes + ctx.http_limits.max_body {
            log::debug!(
                "conn {}:{} from {}: too much pipelined input behind a long-poll",
                ctx.id,
                conn.id.key,
                conn.peer
            );
            ctx.kill(conn);
        }
    }
}

/// The peer closed its write side (read returned 0).
pub fn on_eof(ctx: &mut Ctx, conn: &mut Conn) {
    match &conn.state {
        // Our close was sent and the peer's FIN arrived: the close is complete.
        State::Closing { .. } => ctx.kill(conn),
        // A client that half-closes after its request still gets the answer (HTTP/1.0
        // style); anything else is gone.
        State::Http if !conn.out.is_empty() => ctx.close_after_flush(conn),
        _ => ctx.kill(conn),
    }
}

/// The connection's next deadline in ms on the worker clock, or None.
pub fn next_deadline(ctx: &Ctx, conn: &Conn) -> Option<u64> {
    let cfg = &ctx.shared.cfg;
    match &conn.state {
        State::Http => Some(match conn.req_started_ms {
            Some(t) => t + cfg.handshake_timeout_ms,
            None => conn.last_active_ms + cfg.idle_timeout_ms,
        }),
        State::Ws(w) => Some(w.next_ping_ms),
        State::Stream { next_keepalive_ms, .. } => Some(*next_keepalive_ms),
        State::LongPoll(lp) => Some(lp.expires_ms),
        State::Closing { until_ms } => Some(*until_ms),
    }
}

/// A timer fired for this connection: act if its deadline has passed.
pub fn on_timer(ctx: &mut Ctx, conn: &mut Conn) {
    let now = ctx.now_ms;
    match next_deadline(ctx, conn) {
        Some(d) if d <= now => {}
        _ => return, // moved later since the entry was armed; the reactor re-arms
    }
    match &mut conn.state {
        State::Http => {
            if conn.req_started_ms.is_some() {
                // Slowloris: the request head did not arrive in time.
                log::debug!("conn {}:{} from {}: request head timeout", ctx.id, conn.id.key, conn.peer);
                if conn.out.is_empty() && conn.inbuf.is_empty() {
                    ctx.kill(conn);
                } else {
                    let r = crate::proto::http::error_response(408, "request head not received in time", false);
                    conn.inbuf = Vec::new();
                    ctx.queue(conn, r);
                    conn.req_started_ms = None;
                    ctx.close_after_flush(conn);
                }
            } else {
                log::debug!("conn {}:{} from {}: idle timeout", ctx.id, conn.id.key, conn.peer);
                ctx.kill(conn);
            }
        }
        State::Ws(_) => ws::on_ping_timer(ctx, conn),
        State::Stream { .. } if conn.cf.is_some() => crate::centrifugo::client::on_ping_timer(ctx, conn),
        State::Stream { .. } => pubsub::on_keepalive(ctx, conn),
        State::LongPoll(_) => pubsub::longpoll_timeout(ctx, conn),
        State::Closing { .. } => ctx.kill(conn),
    }
}

/// Graceful shutdown: WebSocket clients get close 1001, held long-polls are answered,
/// streams end, idle keep-alive connections are closed.
pub fn on_shutdown(ctx: &mut Ctx, conn: &mut Conn) {
    match &conn.state {
        State::Ws(_) if conn.cf.is_some() => {
            crate::centrifugo::client::disconnect(ctx, conn, crate::centrifugo::proto::SHUTDOWN)
        }
        State::Ws(_) => ws::close(ctx, conn, 1001, "server shutting down"),
        State::LongPoll(_) => pubsub::longpoll_timeout(ctx, conn),
        State::Stream { kind, .. } => {
            if *kind == StreamKind::Sse {
                ctx.queue(conn, bytes::Bytes::from_static(b": server shutting down\n\n"));
            }
            ctx.close_after_flush(conn);
        }
        State::Http => {
            if conn.out.is_empty() {
                ctx.kill(conn);
            } else {
                ctx.close_after_flush(conn);
            }
        }
        State::Closing { .. } => {}
    }
}
