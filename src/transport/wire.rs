//! Per-message wire encodings: each published message is encoded at most once per worker
//! per wire format, and the same `Bytes` are queued to every subscriber using it.
//!
//! Owns: [`WireCache`], filled lazily during one delivery pass. Called by `fanout`. Knows
//! every format a delivery can take (seed transports and Centrifugo's), and nothing else.

use crate::hub::envelope::{iframe_chunk, messages_body, sse_event};
use crate::hub::Message;
use crate::proto::centrifugo::{pub_push, Pub};
use crate::proto::ws::{self as codec, Opcode};
use crate::proto::ws_deflate::{Deflater, Inflater};
use bytes::Bytes;

/// A worker's permessage-deflate machinery (RFC 7692), shared by all its connections:
/// with no context takeover either way, no connection holds any zlib state. The
/// compressor and decompressor are created on first use, so a worker that never sees a
/// compressed connection never allocates them.
pub struct Zip {
    /// `ws_compression`: negotiate permessage-deflate when a client offers it.
    pub enabled: bool,
    /// Messages shorter than this go uncompressed.
    pub min_size: usize,
    /// zlib level (1 fastest .. 9 smallest).
    pub level: u32,
    deflater: Option<Deflater>,
    inflater: Option<Inflater>,
    /// Compressed output scratch (reused).
    scratch: Vec<u8>,
}

/// Scratch buffers above this are freed after use rather than kept for the next message.
const KEEP_SCRATCH: usize = 256 << 10;

impl Zip {
    /// Machinery for the given settings (nothing allocated yet).
    pub fn new(enabled: bool, min_size: usize, level: u32) -> Zip {
        Zip { enabled, min_size, level, deflater: None, inflater: None, scratch: Vec::new() }
    }

    /// A frame carrying `data`: compressed (RSV1) when `data` is at least `min_size`
    /// bytes, else a plain frame.
    pub fn frame(&mut self, op: Opcode, data: &[u8]) -> Bytes {
        if data.len() < self.min_size {
            return codec::frame(op, data);
        }
        let level = self.level;
        let d = self.deflater.get_or_insert_with(|| Deflater::new(level));
        self.scratch.clear();
        d.compress(data, &mut self.scratch);
        let f = codec::compressed_frame(op, &self.scratch);
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
        f
    }

    /// Inflate a client message into `out` (see [`Inflater::inflate`]).
    ///
    /// # Errors
    /// Past `max` bytes, or a corrupt stream.
    pub fn inflate(
        &mut self,
        data: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::proto::ws_deflate::InflateError> {
        self.inflater.get_or_insert_with(Inflater::new).inflate(data, max, out)
    }
}

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
    cf_line: Option<Bytes>,
    cf_event: Option<Bytes>,
    ws_z: Option<Bytes>,
    cf_z: Option<Bytes>,
    cf_uni_ws_z: Option<Bytes>,
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
    /// The wrapped push (`{"push":..}`) as one line of an emulation HTTP stream.
    pub fn cf_line(&mut self, m: &Message) -> Bytes {
        self.cf_line
            .get_or_insert_with(|| {
                let mut b = pub_push(&cf_pub(m), true).to_vec();
                b.push(b'\n');
                Bytes::from(b)
            })
            .clone()
    }
    /// The wrapped push as one SSE event (emulation over SSE).
    pub fn cf_event(&mut self, m: &Message) -> Bytes {
        self.cf_event.get_or_insert_with(|| sse_event(None, &pub_push(&cf_pub(m), true))).clone()
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

    /// `/ws/` for a connection that negotiated permessage-deflate: compressed once per
    /// worker per message, the same frame for every such subscriber.
    pub fn ws_z(&mut self, m: &Message, zip: &mut Zip) -> Bytes {
        self.ws_z.get_or_insert_with(|| zip.frame(Opcode::Text, &m.envelope)).clone()
    }
    /// [`WireCache::cf`], compressed.
    pub fn cf_z(&mut self, m: &Message, zip: &mut Zip) -> Bytes {
        self.cf_z
            .get_or_insert_with(|| {
                let push = pub_push(&cf_pub(m), true);
                zip.frame(Opcode::Text, &push)
            })
            .clone()
    }
    /// [`WireCache::cf_uni_ws`], compressed.
    pub fn cf_uni_ws_z(&mut self, m: &Message, zip: &mut Zip) -> Bytes {
        let p = self.cf_uni(m);
        self.cf_uni_ws_z.get_or_insert_with(|| zip.frame(Opcode::Text, &p)).clone()
    }
}
