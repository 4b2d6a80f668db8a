//! Fan-out: subscribing a session to channels, delivering a published message to this
//! worker's subscribers in each one's wire format, and marking sessions over their
//! out-queue cap for the reactor's backpressure policy.
//!
//! Owns: the join between history replay and the live feed (per-subscription `last_id`),
//! and leaving channels. Called by the endpoints (subscribe), by `transport::on_note`
//! (deliver) and on close. Delivery queues clones of the same `Bytes` from the
//! [`WireCache`]: no payload copy per subscriber. Never blocks, never touches a socket.

use super::pubsub::finish_longpoll;
use super::session::{Item, Replay, State, StreamKind, WsMode};
use super::wire::WireCache;
use super::{Env, Session, Sessions};
use crate::hub::envelope::messages_body;
use crate::hub::local::{ConnId, SubRef};
use crate::hub::{EngineError, HistoryRead, Message, Op};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Subscribe `conn` to `chans`, returning what history holds after each `since`.
/// The first of `chans` that is at `max_subscribers_per_channel`, if any.
pub(crate) fn full_channel<'a>(env: &Env, chans: &'a [String]) -> Option<&'a str> {
    let max = env.shared.cfg.max_subscribers_per_channel;
    if max == 0 {
        return None;
    }
    chans.iter().find(|c| env.shared.engine.subscribers(c) >= max).map(|c| c.as_str())
}

pub(crate) fn subscribe<F>(env: &mut Env, conn: &mut Session, chans: &[String], since: &[Option<u64>], then: F)
where
    F: FnOnce(&mut Env, &mut Session, Result<Vec<HistoryRead>, EngineError>) + Send + 'static,
{
    let mut ops = Vec::with_capacity(chans.len());
    let mut slots = Vec::with_capacity(chans.len());
    for (ch, s) in chans.iter().zip(since) {
        let (name, slot, _) = env.local.add(ch, conn.id);
        super::push_small(&mut conn.subs, SubRef { channel: name, slot, last_id: s.unwrap_or(0) });
        slots.push(slot);
        ops.push(Op::Subscribe { channel: ch.clone(), worker: env.id, since: *s });
    }
    let since = since.to_vec();
    hold_output(env, conn);
    env.engine(conn, ops, move |env, conn, done| {
        // What was queued while the engine answered: bytes (a handshake answer, a stream
        // head) go first; live messages go after the history.
        let held = conn.replay.as_mut().filter(|r| r.hold).map(|r| std::mem::take(&mut r.queue));
        if let Some(r) = conn.replay.as_mut() {
            r.hold = false;
            r.held = 0;
        }
        let held: Option<Vec<Item>> = held.map(|items| {
            let (first, after): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|i| matches!(i, Item::Bytes(_)));
            for i in first {
                if let Item::Bytes(b) = i {
                    env.push_out(conn, b);
                }
            }
            after
        });
        let mut reads = Vec::with_capacity(done.len());
        let mut failed = None;
        for (d, (slot, s)) in done.into_iter().zip(slots.iter().zip(&since)) {
            match d.history() {
                Ok(read) => {
                    // Deliveries skip ids at or below `last_id`: start just before what the
                    // replay will send, so history and the live feed join with no gap and no
                    // duplicate.
                    let last_id = match *s {
                        Some(s) if s <= read.last_id => s,
                        Some(_) => 0, // a `since` from a previous life of the channel: replay it all
                        None => read.last_id,
                    };
                    if let Some(sr) = conn.subs.iter_mut().find(|sr| sr.slot == *slot) {
                        sr.last_id = last_id;
                    }
                    reads.push(read);
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => then(env, conn, Err(e)),
            None => then(env, conn, Ok(reads)),
        }
        if let Some(items) = held {
            for item in items {
                env.hold(conn, item);
            }
            refill(env, conn);
        }
    });
}

/// With an engine that answers later, hold everything queued for the session from now
/// until its subscription is in place (see [`subscribe`]): a client sees the handshake
/// answer or stream head only once it is subscribed, so nothing published after that is
/// missed.
pub(crate) fn hold_output(env: &mut Env, conn: &mut Session) {
    if !env.shared.engine.immediate() {
        conn.replay.get_or_insert_with(Default::default).hold = true;
    }
}

/// Stop holding (the subscription was not made: an error answer must go out).
pub(crate) fn release_output(env: &mut Env, conn: &mut Session) {
    if let Some(r) = conn.replay.as_mut() {
        r.hold = false;
    }
    refill(env, conn);
}

/// Remove every subscription of a connection (on close, or when a long-poll completes).
pub fn leave_subscriptions(env: &mut Env, conn: &mut Session) {
    if conn.cf.is_some() {
        crate::transport::centrifugo::client::on_close(env, conn);
    }
    for sr in conn.subs.drain(..) {
        let last = env.local.remove(&sr.channel, sr.slot);
        env.shared.engine.unsubscribe(&sr.channel, env.id, last);
    }
    if conn.subs.capacity() > 0 {
        conn.subs = Vec::new();
    }
}

/// Deliver one message to one subscriber connection in its wire format. `slot` identifies
/// the membership (usize::MAX: match by channel name). While a paced replay runs, the
/// message joins the end of it instead, so order holds; a reader that lets live messages
/// pile up there past `max_out_queue` is a slow consumer.
pub(crate) fn deliver_one(
    env: &mut Env,
    conn: &mut Session,
    m: &Arc<Message>,
    cache: &mut WireCache,
    slot: usize,
    done: &mut Vec<ConnId>,
) -> bool {
    if !conn.subs.iter().any(|s| (slot == usize::MAX || s.slot == slot) && *s.channel == *m.channel) {
        return false;
    }
    if conn.replay.is_some() {
        env.hold(conn, Item::Msg(m.clone(), true));
        return true;
    }
    deliver_now(env, conn, m, cache, slot, done)
}

/// Queue a message now (no replay in the way).
fn deliver_now(
    env: &mut Env,
    conn: &mut Session,
    m: &Message,
    cache: &mut WireCache,
    slot: usize,
    done: &mut Vec<ConnId>,
) -> bool {
    let Some(sr) = conn.subs.iter_mut().find(|s| (slot == usize::MAX || s.slot == slot) && *s.channel == *m.channel)
    else {
        return false;
    };
    if m.id == 0 {
        // Not sequenced (Centrifugo skip_history): delivered as is, never deduplicated.
    } else if m.id <= sr.last_id {
        return false; // already delivered (history replay raced the live feed)
    } else {
        sr.last_id = m.id;
    }
    match &conn.state {
        State::Ws(w) if w.mode == WsMode::Centrifugo && conn.cf.as_ref().is_some_and(|c| c.protobuf) => {
            env.queue(conn, cache.cf_pb(m))
        }
        // permessage-deflate: the compressed frame is shared like the plain one.
        State::Ws(w) if w.deflate => {
            let f = match w.mode {
                WsMode::Centrifugo => cache.cf_z(m, &mut env.zip),
                WsMode::CfUni => cache.cf_uni_ws_z(m, &mut env.zip),
                _ => cache.ws_z(m, &mut env.zip),
            };
            env.queue(conn, f);
        }
        State::Ws(w) if w.mode == WsMode::Centrifugo => env.queue(conn, cache.cf(m)),
        State::Ws(w) if w.mode == WsMode::CfUni => env.queue(conn, cache.cf_uni_ws(m)),
        State::Stream { kind: StreamKind::CfSse, .. } if emulated(conn) => env.queue(conn, cache.cf_event(m)),
        State::Stream { kind: StreamKind::CfHttp, .. } if emulated(conn) => env.queue(conn, cache.cf_line(m)),
        State::Stream { kind: StreamKind::CfSse, .. } => env.queue(conn, cache.cf_uni_sse(m)),
        State::Stream { kind: StreamKind::CfHttp, .. } => {
            env.queue(conn, cache.cf_uni(m));
            env.queue(conn, Bytes::from_static(b"\n"));
        }
        State::Ws(_) => env.queue(conn, cache.ws(m)),
        State::Stream { kind: StreamKind::Iframe, .. } => env.queue(conn, cache.iframe(m)),
        State::Stream { kind: StreamKind::Sse, multi: false, .. } => env.queue(conn, cache.sse(m)),
        // An unsequenced message moves no position: it goes out without an id line, so
        // the browser's Last-Event-ID stays where it was.
        State::Stream { kind: StreamKind::Sse, multi: true, .. } if m.id == 0 => env.queue(conn, cache.sse(m)),
        State::Stream { kind: StreamKind::Sse, multi: true, .. } => {
            // Several channels: the event id lists each channel's position so that
            // Last-Event-ID resumes all of them; only this short line is per connection.
            let full = cache.sse(m);
            let skip = full.iter().position(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0);
            env.queue(conn, full.slice(skip..full.len() - 1));
            let ids: Vec<String> = conn.subs.iter().map(|s| s.last_id.to_string()).collect();
            env.queue(conn, Bytes::from(format!("id: {}\n\n", ids.join(","))));
        }
        State::LongPoll(lp) => {
            let body = if lp.callback.is_none() && conn.subs.len() == 1 && m.id > 0 {
                cache.longpoll(m)
            } else {
                // `last_id` is the connection's position, which an unsequenced message
                // (id 0) does not move.
                let last: Vec<(&str, u64)> = conn.subs.iter().map(|s| (&*s.channel, s.last_id)).collect();
                Bytes::from(messages_body(&[&m.envelope], false, &last, lp.callback.as_deref()))
            };
            finish_longpoll(env, conn, body);
            done.push(conn.id);
        }
        State::Http(_) | State::Closing { .. } => return false,
    }
    true
}

/// A Centrifugo bidirectional-emulation stream (wrapped pushes, not bare ones).
fn emulated(conn: &Session) -> bool {
    conn.cf.as_ref().is_some_and(|c| c.emulated)
}

/// Start a paced replay of `msgs` (oldest first, from history) and queue its first part.
pub(crate) fn start_replay(env: &mut Env, conn: &mut Session, msgs: Vec<Arc<Message>>) {
    for m in msgs {
        env.hold(conn, Item::Msg(m, false));
    }
    refill(env, conn);
}

/// The out-queue drained to the low-water mark: queue more of the replay, up to the
/// high-water mark. The replay ends (and output goes straight to the out-queue again) when
/// it is empty.
pub fn refill(env: &mut Env, conn: &mut Session) {
    let Some(mut r) = conn.replay.take() else { return };
    if r.hold {
        // Waiting for a history read: nothing may go before it.
        conn.replay = Some(r);
        return;
    }
    let mut cache = WireCache::default();
    let mut done = Vec::new();
    while conn.out.len() < env.high_water && !conn.dead {
        let Some(item) = r.queue.pop_front() else { break };
        r.held = r.held.saturating_sub(Replay::cost(&item));
        match item {
            // With the replay taken out, whatever this queues goes to the out-queue.
            Item::Msg(m, _) => {
                cache.clear();
                deliver_now(env, conn, &m, &mut cache, usize::MAX, &mut done);
            }
            Item::Bytes(b) => env.push_out(conn, b),
            Item::CfPub(m, first) => {
                if !first {
                    env.push_out(conn, Bytes::from_static(b","));
                }
                let b = crate::proto::centrifugo::Encode::encode(&super::wire::cf_pub(&m));
                env.push_out(conn, b);
            }
            Item::CfPbPub(m, kind) => {
                env.push_out(conn, crate::proto::centrifugo_pb::pub_field(kind, &super::wire::cf_pub(&m)));
            }
        }
    }
    if !r.queue.is_empty() && !conn.dead {
        conn.replay = Some(r);
    }
}

/// Fan a message out to this worker's subscribers of its channel.
pub fn deliver<S: Sessions>(
    env: &mut Env,
    conns: &mut S,
    m: &Arc<Message>,
    cache: &mut WireCache,
    done: &mut Vec<ConnId>,
) {
    let Some(set) = env.local.take(&m.channel) else {
        return;
    };
    let mut n = 0u64;
    for (slot, id) in set.iter() {
        let Some(conn) = conns.session(id.key as usize) else {
            continue;
        };
        if conn.id.gen != id.gen || conn.dead {
            continue;
        }
        if deliver_one(env, conn, m, cache, slot, done) {
            n += 1;
        }
    }
    env.local.put_back(&m.channel, set);
    env.shared.stats.delivered.fetch_add(n, Ordering::Relaxed);
    // Completed long-polls leave their channels now that the set is back in place.
    for id in done.iter() {
        if let Some(conn) = conns.session(id.key as usize).filter(|c| c.id.gen == id.gen) {
            leave_subscriptions(env, conn);
        }
    }
}

/// The engine lost publications of `channel` it could not read back (`reset`: a new epoch,
/// ids begin again). Every subscriber here is told; with a reset, positions restart so the
/// new ids are not taken for duplicates. Centrifugo subscribers are unsubscribed with
/// "insufficient state" (their SDK resubscribes and recovers what history still holds).
pub fn lost<S: Sessions>(env: &mut Env, conns: &mut S, channel: &Arc<str>, reset: bool, done: &mut Vec<ConnId>) {
    let Some(set) = env.local.subscribers(channel) else { return };
    let ids: Vec<ConnId> = set.iter().map(|(_, id)| *id).collect();
    for id in ids {
        let Some(conn) = conns.session(id.key as usize) else { continue };
        if conn.id.gen != id.gen || conn.dead {
            continue;
        }
        if reset {
            for sr in conn.subs.iter_mut().filter(|s| s.channel == *channel) {
                sr.last_id = 0;
            }
        }
        if conn.cf.is_some() {
            crate::transport::centrifugo::client::insufficient_state(env, conn, channel);
        } else {
            let longpoll = matches!(conn.state, State::LongPoll(_));
            super::pubsub::missed_notice(env, conn, &[channel]);
            if longpoll {
                done.push(conn.id);
            }
        }
    }
}
