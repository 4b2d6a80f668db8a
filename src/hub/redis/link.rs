//! One Redis connection as a state machine without a socket: commands are queued with a
//! tag and pipelined; replies come back matched to their tags in order; on a pub/sub
//! connection, messages become [`Publication`]s.
//!
//! Owns: the bytes to write ([`Link::output`] / [`Link::written`]), the bytes received and
//! not yet parsed, and the tags waiting for replies. The caller (the reactor's driver, or a
//! test) writes the output to the socket and feeds what it reads to [`Link::feed`]. A
//! protocol error means the byte stream is lost: the caller drops the connection, and
//! every waiting tag fails (see [`Link::abandon`]).

use crate::proto::resp::{self, Limits, RespError, Value};
use bytes::Bytes;
use std::collections::VecDeque;

/// A publication received on a pub/sub connection: `offset:epoch:payload` on channel
/// `pubsub` (the caller maps the pub/sub channel back to its Herald channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The pub/sub channel it came on.
    pub pubsub: Bytes,
    /// The channel offset (0: published without history).
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: Bytes,
    /// What the publishing node encoded.
    pub payload: Bytes,
}

/// What feeding bytes produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to the command queued with `tag`.
    Reply {
        /// The tag given to [`Link::command`].
        tag: u64,
        /// The reply (an error reply is a `Value::Error`).
        value: Value,
    },
    /// A publication (pub/sub connections).
    Message(Publication),
    /// A pub/sub confirmation: `subscribe` / `unsubscribe`, the channel, how many remain.
    Subscription {
        /// `subscribe` or `unsubscribe`.
        kind: Bytes,
        /// The pub/sub channel.
        channel: Bytes,
        /// Subscriptions the connection now has.
        count: i64,
    },
}

/// One connection's protocol state.
pub struct Link {
    out: Vec<u8>,
    input: Vec<u8>,
    waiting: VecDeque<u64>,
    limits: Limits,
    pubsub: bool,
}

impl Link {
    /// A command connection (`pubsub` false) or a pub/sub connection.
    pub fn new(pubsub: bool, limits: Limits) -> Link {
        Link { out: Vec::new(), input: Vec::new(), waiting: VecDeque::new(), limits, pubsub }
    }

    /// Queue a command whose reply will come back as `Event::Reply { tag, .. }`. On a
    /// pub/sub connection, SUBSCRIBE / UNSUBSCRIBE answer with `Event::Subscription`
    /// instead and take no tag.
    pub fn command<A: AsRef<[u8]>>(&mut self, tag: u64, args: &[A]) {
        resp::encode(&mut self.out, args);
        let is_sub = self.pubsub
            && args.first().is_some_and(|a| {
                let a = a.as_ref();
                a.eq_ignore_ascii_case(b"SUBSCRIBE") || a.eq_ignore_ascii_case(b"UNSUBSCRIBE")
            });
        if !is_sub {
            self.waiting.push_back(tag);
        }
    }

    /// Bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`Link::output`] were written.
    pub fn written(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
        if self.out.is_empty() && self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
    }

    /// Commands sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes received: parse every complete reply into `events`.
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), RespError> {
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        while let Some((v, used)) = resp::parse(&self.input[pos..], &self.limits)? {
            pos += used;
            self.event(v, events);
        }
        self.input.drain(..pos);
        if self.input.is_empty() && self.input.capacity() > 64 * 1024 {
            self.input = Vec::new();
        }
        Ok(())
    }

    /// The connection is gone: the tags that will never be answered.
    pub fn abandon(&mut self) -> Vec<u64> {
        self.out.clear();
        self.input.clear();
        self.waiting.drain(..).collect()
    }

    fn event(&mut self, v: Value, events: &mut Vec<Event>) {
        if self.pubsub {
            if let Some(e) = pubsub_event(&v) {
                events.push(e);
                return;
            }
        }
        if let Value::Push(_) = v {
            if let Some(e) = pubsub_event(&v) {
                events.push(e);
            }
            return;
        }
        if let Some(tag) = self.waiting.pop_front() {
            events.push(Event::Reply { tag, value: v });
        }
    }
}

/// A pub/sub message or confirmation (RESP2 array or RESP3 push).
fn pubsub_event(v: &Value) -> Option<Event> {
    let a = v.as_array()?;
    let kind = a.first()?.as_bytes()?;
    if kind.eq_ignore_ascii_case(b"message") {
        let channel = a.get(1)?.as_bytes()?;
        let body = a.get(2)?.as_bytes()?;
        return parse_publication(channel, body).map(Event::Message);
    }
    if kind.eq_ignore_ascii_case(b"subscribe") || kind.eq_ignore_ascii_case(b"unsubscribe") {
        return Some(Event::Subscription {
            kind: Bytes::copy_from_slice(kind),
            channel: Bytes::copy_from_slice(a.get(1)?.as_bytes()?),
            count: a.get(2)?.as_int()?,
        });
    }
    None
}

/// `offset:epoch:payload` as the publish script sends it.
pub fn parse_publication(pubsub: &[u8], body: &[u8]) -> Option<Publication> {
    let c1 = body.iter().position(|&b| b == b':')?;
    let offset = std::str::from_utf8(&body[..c1]).ok()?.parse::<u64>().ok()?;
    let rest = &body[c1 + 1..];
    let c2 = rest.iter().position(|&b| b == b':')?;
    Some(Publication {
        pubsub: Bytes::copy_from_slice(pubsub),
        offset,
        epoch: Bytes::copy_from_slice(&rest[..c2]),
        payload: Bytes::copy_from_slice(&rest[c2 + 1..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_replies_match_their_tags_in_order() {
        let mut l = Link::new(false, Limits::default());
        l.command(1, &["PING"]);
        l.command(2, &["GET", "k"]);
        assert_eq!(l.output(), b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        l.written(l.output().len());
        assert_eq!(l.in_flight(), 2);
        let replies = b"+PONG\r\n$-1\r\n";
        let mut ev = Vec::new();
        // Split at every byte: nothing is produced until a reply is whole.
        for &b in replies.iter() {
            l.feed(&[b], &mut ev).unwrap();
        }
        assert_eq!(
            ev,
            vec![
                Event::Reply { tag: 1, value: Value::Simple(Bytes::from_static(b"PONG")) },
                Event::Reply { tag: 2, value: Value::Nil }
            ]
        );
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn pubsub_messages_and_confirmations() {
        let mut l = Link::new(true, Limits::default());
        l.command(0, &["SUBSCRIBE", "h.pub.a"]);
        assert_eq!(l.in_flight(), 0, "subscribe takes no tag");
        let mut ev = Vec::new();
        l.feed(b"*3\r\n$9\r\nsubscribe\r\n$7\r\nh.pub.a\r\n:1\r\n", &mut ev).unwrap();
        l.feed(b"*3\r\n$7\r\nmessage\r\n$7\r\nh.pub.a\r\n$16\r\n5:ep01:{\"d\":\"x\"}\r\n", &mut ev).unwrap();
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[0], Event::Subscription { count: 1, .. }));
        assert_eq!(
            ev[1],
            Event::Message(Publication {
                pubsub: Bytes::from_static(b"h.pub.a"),
                offset: 5,
                epoch: Bytes::from_static(b"ep01"),
                payload: Bytes::from_static(b"{\"d\":\"x\"}"),
            })
        );
    }

    #[test]
    fn a_broken_stream_is_an_error_and_abandons_tags() {
        let mut l = Link::new(false, Limits::default());
        l.command(9, &["PING"]);
        let mut ev = Vec::new();
        assert!(l.feed(b"?junk\r\n", &mut ev).is_err());
        assert_eq!(l.abandon(), vec![9]);
    }
}
