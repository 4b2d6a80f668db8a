//! The protocol half of one connection: its state machine, partial input, out-queue,
//! subscriptions and Centrifugo client state.
//!
//! Owns: per-connection protocol state only. The reactor keeps the socket beside it (its
//! `Slot`) and hands the session to transport functions with bytes; transports change
//! `state`, push to `out` and record effects in the [`super::Env`]. A session never holds a
//! socket, so every handler runs in unit tests without one. An idle session owns no heap
//! buffer: `inbuf` is empty (capacity 0) and `out` is empty.

use super::centrifugo::client::CfClient;
use super::outq::OutQueue;
use crate::hub::local::{ConnId, SubRef};
use crate::hub::Message;
use crate::proto::http::ChunkedDecoder;
use crate::proto::ws::Decoder;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;

/// Which transport a subscriber connection uses (decides the wire format of deliveries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `/sse/`: Server-Sent Events.
    Sse,
    /// `/stream/`: endless HTML for a hidden iframe.
    Iframe,
    /// `/connection/uni_sse`: Centrifugo pushes as SSE events.
    CfSse,
    /// `/connection/uni_http_stream`: Centrifugo pushes as newline-delimited JSON.
    CfHttp,
}

/// What a WebSocket connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsMode {
    /// `/echo`: every message sent back as is.
    Echo,
    /// `/ws/`: subscriber to channels.
    Sub,
    /// `/connection/websocket`: Centrifugo's bidirectional protocol.
    Centrifugo,
    /// `/connection/uni_websocket`: Centrifugo's unidirectional WebSocket.
    CfUni,
}

/// WebSocket connection state (boxed: only upgraded connections pay for it).
pub struct WsState {
    /// Frame decoder (holds a partial message's state).
    pub decoder: Decoder,
    /// What the connection is for.
    pub mode: WsMode,
    /// When the next server ping is due.
    pub next_ping_ms: u64,
    /// A close frame has been queued: nothing but the close handshake follows.
    pub close_sent: bool,
    /// permessage-deflate was negotiated and frames to this peer may be compressed
    /// (RFC 7692; see `proto::ws_deflate`). Incoming RSV1 is the decoder's own flag.
    pub deflate: bool,
    /// Since when an incomplete frame has been waiting for its remaining bytes (ms + 1,
    /// so `None` costs no space: this struct stays in jemalloc's 80-byte class).
    partial_since: Option<NonZeroU64>,
}

impl WsState {
    /// A fresh WebSocket state.
    pub fn new(decoder: Decoder, mode: WsMode, next_ping_ms: u64) -> WsState {
        WsState { decoder, mode, next_ping_ms, close_sent: false, deflate: false, partial_since: None }
    }

    /// Since when an incomplete frame has been waiting, if one is.
    pub fn partial_since_ms(&self) -> Option<u64> {
        self.partial_since.map(|t| t.get() - 1)
    }

    /// Start or end the incomplete-frame deadline.
    pub fn set_partial_since(&mut self, ms: Option<u64>) {
        self.partial_since = ms.and_then(|t| NonZeroU64::new(t.saturating_add(1)));
    }
}

/// A held long-poll request.
pub struct LongPoll {
    /// When to answer with no messages.
    pub expires_ms: u64,
    /// Keep the connection open after the answer.
    pub keep_alive: bool,
    /// The request was HTTP/1.0.
    pub http10: bool,
    /// `Access-Control-Allow-Origin` for the answer.
    pub cors: Option<Box<str>>,
    /// JSONP callback for the answer.
    pub callback: Option<Box<str>>,
}

/// The connection's protocol state.
pub enum State {
    /// Reading HTTP requests (keep-alive, pipelining); holds a chunked request body while
    /// it arrives.
    Http(Option<Box<ChunkedBody>>),
    /// Upgraded to WebSocket.
    Ws(Box<WsState>),
    /// An endless response (SSE or iframe); input is read and discarded.
    Stream {
        /// Wire format of deliveries.
        kind: StreamKind,
        /// When the next keep-alive (or Centrifugo ping) is due.
        next_keepalive_ms: u64,
        /// Several channels: SSE ids are positional lists.
        multi: bool,
    },
    /// A `/listen/` request held until a message or the timeout.
    LongPoll(Box<LongPoll>),
    /// Final bytes queued; after they are flushed the write side is shut and input is
    /// drained until EOF or `until_ms` (a lingering close, so the peer sees our last bytes
    /// rather than a reset).
    Closing {
        /// When to give up waiting for the peer's FIN.
        until_ms: u64,
    },
}

/// Transport of a session, for logs and the `/metrics` label (index into
/// [`Kind::LABELS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Plain HTTP requests.
    Http = 0,
    /// `/echo`.
    WsEcho,
    /// `/ws/`.
    Ws,
    /// `/sse/`.
    Sse,
    /// `/stream/`.
    Stream,
    /// `/listen/` held.
    LongPoll,
    /// Closing.
    Closing,
    /// `/connection/websocket`.
    CentrifugoWs,
    /// `/connection/uni_websocket`.
    CentrifugoUniWs,
    /// `/connection/uni_sse`.
    CentrifugoUniSse,
    /// `/connection/uni_http_stream`.
    CentrifugoUniHttpStream,
    /// `/connection/http_stream` (bidirectional emulation).
    CentrifugoHttpStream,
    /// `/connection/sse` (bidirectional emulation).
    CentrifugoSse,
}

impl Kind {
    /// Metric labels, indexed by `Kind as usize`.
    pub const LABELS: [&'static str; 13] = [
        "http",
        "ws_echo",
        "ws",
        "sse",
        "stream",
        "longpoll",
        "closing",
        "centrifugo_ws",
        "centrifugo_uni_ws",
        "centrifugo_uni_sse",
        "centrifugo_uni_http_stream",
        "centrifugo_http_stream",
        "centrifugo_sse",
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// The protocol half of one client connection.
pub struct Session {
    /// Slab key and generation (names this connection in subscriber sets and timers).
    pub id: ConnId,
    /// The peer's address (for logs, the publish allow-list and per-address limits).
    pub peer: SocketAddr,
    /// Bytes received but not yet consumed (a partial request or frame). Empty when idle.
    pub inbuf: InBuf,
    /// Everything queued for this connection (the one accounting point).
    pub out: OutQueue,
    /// Protocol state.
    pub state: State,
    /// Channels this connection is subscribed to.
    pub subs: Vec<SubRef>,
    /// Centrifugo client state, for connections speaking its protocol.
    pub cf: Option<Box<CfClient>>,
    /// When the request now being received started (slowloris and body deadline), stored
    /// plus one so `None` costs no space; see [`Session::req_started_ms`].
    req_started: Option<NonZeroU64>,
    /// History still to be sent (paced as the socket drains), and live messages that
    /// arrived meanwhile, in order.
    pub replay: Option<Box<Replay>>,
    /// Last time bytes arrived or a response completed.
    pub last_active_ms: u64,
    /// After the out-queue drains, move to `Closing`.
    pub close_after_flush: bool,
    /// Listed in the environment's flush effects already.
    pub dirty: bool,
    /// Listed in the environment's close effects: nothing more is done for it.
    pub dead: bool,
    /// Waiting for an engine answer (see `Env::engine`): input is not parsed meanwhile.
    pub parked: bool,
}

/// Input received and not consumed yet. A buffer exists only while bytes are held (a
/// partial request or frame), behind one pointer: an idle session pays 8 bytes here, not
/// an empty `Vec`'s 24.
#[derive(Default)]
#[allow(clippy::box_collection)] // on purpose: 8 bytes inline for every idle session
pub struct InBuf(Option<Box<Vec<u8>>>);

impl InBuf {
    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_empty())
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }

    /// Take the held bytes out (to process them with new ones); give them back with
    /// [`InBuf::put`].
    pub fn take(&mut self) -> Vec<u8> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }

    /// Hold `v` (an empty one frees the buffer).
    pub fn put(&mut self, v: Vec<u8>) {
        self.0 = if v.is_empty() { None } else { Some(Box::new(v)) };
    }

    /// Hold more bytes after those held.
    pub fn extend_from_slice(&mut self, d: &[u8]) {
        if !d.is_empty() {
            self.0.get_or_insert_with(Default::default).extend_from_slice(d);
        }
    }

    /// Drop what is held.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// A chunked request body decoded so far. Raw body bytes are consumed as they are fed, so
/// decoding is linear in the bytes received and the session holds the request head plus
/// the decoded body (at most `max_body`), never the raw chunk framing.
pub struct ChunkedBody {
    /// Decoder state.
    pub decoder: ChunkedDecoder,
    /// Body bytes decoded so far.
    pub data: Vec<u8>,
    /// The request head, parsed again when the body is complete.
    pub head: Vec<u8>,
}

/// Output held back behind a paced replay, in the order it must go out.
pub enum Item {
    /// A message to deliver in the session's wire format; `live` when it arrived during
    /// the replay (it counts against `max_out_queue`; history entries are shared with the
    /// engine's history and cost a pointer).
    Msg(Arc<Message>, bool),
    /// Bytes queued while the replay runs (a reply, a pong, a close frame...).
    Bytes(bytes::Bytes),
    /// One publication of a paced Centrifugo reply (its array's comma first unless
    /// `first`), encoded as it is sent.
    CfPub(Arc<Message>, bool),
    /// One publication of a paced Centrifugo protobuf reply, encoded as it is sent (as a
    /// `publications` field of that result).
    CfPbPub(Arc<Message>, crate::proto::centrifugo_pb::PacedResult),
}

/// A paced replay: output not yet queued, oldest first. The reactor asks for more
/// (`transport::on_drained`) whenever the out-queue falls to the low-water mark, so a
/// replay never holds more than the high-water mark in the out-queue, and an honest reader
/// gets everything however large the history is. While it runs, everything else queued
/// for the session waits behind it (order holds); what is not shared history counts
/// against `max_out_queue` in `held`.
#[derive(Default)]
pub struct Replay {
    /// What is still to be sent, in order.
    pub queue: VecDeque<Item>,
    /// Bytes (and per-item overhead) held here that are not shared with history.
    pub held: usize,
    /// A subscription's history read is still on its way (an asynchronous engine):
    /// everything waits, and the history goes first when it arrives.
    pub hold: bool,
}

impl Replay {
    /// What an item costs against `max_out_queue` while it waits.
    pub fn cost(item: &Item) -> usize {
        const OVERHEAD: usize = std::mem::size_of::<Item>();
        OVERHEAD
            + match item {
                Item::Msg(m, true) => m.envelope.len(),
                Item::Bytes(b) => b.len(),
                Item::Msg(_, false) | Item::CfPub(..) | Item::CfPbPub(..) => 0,
            }
    }
}

impl Session {
    /// When the request now being received started, if one is.
    pub fn req_started_ms(&self) -> Option<u64> {
        self.req_started.map(|t| t.get() - 1)
    }

    /// Start (Some) or end (None) the current request's deadline.
    pub fn set_req_started(&mut self, ms: Option<u64>) {
        self.req_started = ms.and_then(|t| NonZeroU64::new(t.saturating_add(1)));
    }

    /// A fresh session in the HTTP state; its request deadline starts now.
    pub fn new(id: ConnId, peer: SocketAddr, now_ms: u64) -> Session {
        Session {
            id,
            peer,
            inbuf: InBuf::default(),
            out: OutQueue::default(),
            state: State::Http(None),
            subs: Vec::new(),
            cf: None,
            req_started: NonZeroU64::new(now_ms.saturating_add(1)),
            replay: None,
            last_active_ms: now_ms,
            close_after_flush: false,
            dirty: false,
            dead: false,
            parked: false,
        }
    }

    /// A Centrifugo bidirectional-emulation stream.
    fn emulated(&self) -> bool {
        self.cf.as_ref().is_some_and(|c| c.emulated)
    }

    /// Which transport this session is, for logs and metrics.
    pub fn kind(&self) -> Kind {
        match &self.state {
            State::Http(_) => Kind::Http,
            State::Ws(w) => match w.mode {
                WsMode::Echo => Kind::WsEcho,
                WsMode::Sub => Kind::Ws,
                WsMode::Centrifugo => Kind::CentrifugoWs,
                WsMode::CfUni => Kind::CentrifugoUniWs,
            },
            State::Stream { kind: StreamKind::Sse, .. } => Kind::Sse,
            State::Stream { kind: StreamKind::Iframe, .. } => Kind::Stream,
            State::Stream { kind: StreamKind::CfSse, .. } if self.emulated() => Kind::CentrifugoSse,
            State::Stream { kind: StreamKind::CfHttp, .. } if self.emulated() => Kind::CentrifugoHttpStream,
            State::Stream { kind: StreamKind::CfSse, .. } => Kind::CentrifugoUniSse,
            State::Stream { kind: StreamKind::CfHttp, .. } => Kind::CentrifugoUniHttpStream,
            State::LongPoll(_) => Kind::LongPoll,
            State::Closing { .. } => Kind::Closing,
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle session's fixed cost stays small: it is what the slab holds per client
    /// (heap buffers are empty while idle).
    #[test]
    fn session_stays_small() {
        let n = std::mem::size_of::<super::Session>();
        assert!(n <= 184, "Session is {n} bytes");
        // Boxed per WebSocket connection: keep it in jemalloc's 80-byte size class.
        let w = std::mem::size_of::<super::WsState>();
        assert!(w <= 80, "WsState is {w} bytes");
    }

    #[test]
    fn labels_match_kinds() {
        use super::Kind;
        assert_eq!(Kind::CentrifugoSse as usize + 1, Kind::LABELS.len());
        assert_eq!(Kind::LongPoll.label(), "longpoll");
    }
}
