//! Per-message wire encodings: each published message is encoded at most once per worker
//! per wire format, and the same `Bytes` are queued to every subscriber using it.
//!
//! Owns: [`WireCache`], filled lazily during one delivery pass. Called by `fanout`. Knows
//! every format a delivery can take (seed transports and Centrifugo's), and nothing else.

use crate::hub::envelope::{iframe_chunk, messages_body, sse_event};
use crate::hub::Message;
use crate::proto::centrifugo::{pub_push, Pub};
use crate::proto::ws::{self as codec, Opcode};
use bytes::Bytes;

/// The Centrifugo view of a stored message.
pub fn cf_pub(m: &Message) -> Pub<'_> {
    Pub { channel: &m.channel, data: &m.data, offset: m.id, info: m.info.as_deref(), tags: m.tags.as_deref() }
}

/// Per-message wire encodings, built lazily once per worker per message.
#[derive(Default)]
pub struct WireCache {
    ws: Option<Bytes>,
    sse: Option<Bytes>,
    iframe: Option<Bytes>,
    longpoll: Option<Bytes>,
    cf: Option<Bytes>,
    cf_pb: Option<Bytes>,
    cf_uni: Option<Bytes>,
    cf_uni_ws: Option<Bytes>,
    cf_uni_sse: Option<Bytes>,
}

impl WireCache {
    /// Forget every encoding (the next message is another one).
    pub fn clear(&mut self) {
        *self = WireCache::default();
    }

    /// `/ws/`: the envelope in a text frame.
    pub fn ws(&mut self, m: &Message) -> Bytes {
        self.ws.get_or_insert_with(|| codec::frame(Opcode::Text, &m.envelope)).clone()
    }
    /// `/sse/`: the envelope as one SSE event whose `id:` is the message id (none for an
    /// unsequenced id-0 message). Multi-channel streams reuse its data lines with their own id.
    pub fn sse(&mut self, m: &Message) -> Bytes {
        // An unsequenced message (id 0) carries no `id:`, so Last-Event-ID keeps its place.
        self.sse.get_or_insert_with(|| sse_event((m.id > 0).then(|| m.id.to_string()).as_deref(), &m.envelope)).clone()
    }
    /// `/stream/`: the envelope as a `<script>parent.handle(...)</script>` chunk.
    pub fn iframe(&mut self, m: &Message) -> Bytes {
        self.iframe.get_or_insert_with(|| iframe_chunk(&m.envelope)).clone()
    }
    /// Centrifugo publication push in a WebSocket frame.
    pub fn cf(&mut self, m: &Message) -> Bytes {
        self.cf
            .get_or_insert_with(|| {
                let push = pub_push(&cf_pub(m), true);
                codec::frame(Opcode::Text, &push)
            })
            .clone()
    }
    /// Centrifugo publication push in protobuf (a delimited Reply) in a binary frame.
    pub fn cf_pb(&mut self, m: &Message) -> Bytes {
        self.cf_pb
            .get_or_insert_with(|| codec::frame(Opcode::Binary, &crate::proto::centrifugo_pb::pub_push(&cf_pub(m))))
            .clone()
    }
    /// The bare push unidirectional transports send (framed by the caller per transport).
    pub fn cf_uni(&mut self, m: &Message) -> Bytes {
        self.cf_uni.get_or_insert_with(|| pub_push(&cf_pub(m), false)).clone()
    }
    /// `/connection/uni_websocket`: the bare push ([`WireCache::cf_uni`]) in a text frame.
    pub fn cf_uni_ws(&mut self, m: &Message) -> Bytes {
        let p = self.cf_uni(m);
        self.cf_uni_ws.get_or_insert_with(|| codec::frame(Opcode::Text, &p)).clone()
    }
    /// `/connection/uni_sse`: the bare push as one SSE event, without an `id:` line.
    pub fn cf_uni_sse(&mut self, m: &Message) -> Bytes {
        let p = self.cf_uni(m);
        self.cf_uni_sse.get_or_insert_with(|| sse_event(None, &p)).clone()
    }
    /// `/listen/` answer for the common case (one channel, no JSONP callback, sequenced
    /// message): `{"messages":[ENVELOPE],"last_id":ID,"missed":false}`. Others build their own.
    pub fn longpoll(&mut self, m: &Message) -> Bytes {
        self.longpoll
            .get_or_insert_with(|| Bytes::from(messages_body(&[&m.envelope], false, &[(&m.channel, m.id)], None)))
            .clone()
    }
}
