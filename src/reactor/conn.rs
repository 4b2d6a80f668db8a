//! One connection: its socket, its partial input, its out-queue and its transport state.
//!
//! Owns: per-connection state only. Created and dropped by the worker; transports change
//! `state` and push to `out`, but only the worker reads or writes the socket. An idle
//! connection owns no heap buffer: `inbuf` is empty (capacity 0) and `out` is empty.

use super::outq::OutQueue;
use crate::hub::local::{ConnId, SubRef};
use crate::proto::ws::Decoder;
use mio::net::TcpStream;
use std::net::SocketAddr;

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
    pub decoder: Decoder,
    pub mode: WsMode,
    /// When the next server ping is due.
    pub next_ping_ms: u64,
    /// A close frame has been queued: nothing but the close handshake follows.
    pub close_sent: bool,
}

/// A held long-poll request.
pub struct LongPoll {
    pub expires_ms: u64,
    pub keep_alive: bool,
    pub http10: bool,
    pub cors: Option<Box<str>>,
    pub callback: Option<Box<str>>,
}

/// The connection's protocol state.
pub enum State {
    /// Reading HTTP requests (keep-alive, pipelining).
    Http,
    /// Upgraded to WebSocket.
    Ws(Box<WsState>),
    /// An endless response (SSE or iframe); input is read and discarded.
    Stream { kind: StreamKind, next_keepalive_ms: u64, multi: bool },
    /// A `/listen/` request held until a message or the timeout.
    LongPoll(Box<LongPoll>),
    /// Final bytes queued; after they are flushed the write side is shut and input is
    /// drained until EOF or `until_ms` (a lingering close, so the peer sees our last bytes
    /// rather than a reset).
    Closing { until_ms: u64 },
}

/// One client connection.
pub struct Conn {
    pub sock: TcpStream,
    pub id: ConnId,
    pub peer: SocketAddr,
    /// Bytes received but not yet consumed (a partial request or frame). Empty when idle.
    pub inbuf: Vec<u8>,
    pub out: OutQueue,
    pub state: State,
    /// Channels this connection is subscribed to.
    pub subs: Vec<SubRef>,
    /// Centrifugo client state, for connections speaking its protocol.
    pub cf: Option<Box<crate::centrifugo::client::CfClient>>,
    /// Tick of this connection's live timer-wheel entry, if any.
    pub timer_tick: Option<u64>,
    /// When the request now being received started (slowloris deadline); None between requests.
    pub req_started_ms: Option<u64>,
    /// Last time bytes arrived or a response completed.
    pub last_active_ms: u64,
    /// After the out-queue drains, move to `Closing`.
    pub close_after_flush: bool,
    /// In the worker's dirty list already.
    pub dirty: bool,
    /// To be freed at the end of this loop turn.
    pub dead: bool,
    /// The write side has been shut down.
    pub write_shut: bool,
    /// Counted in the per-address table (released on close).
    pub admitted: bool,
}

impl Conn {
    /// A fresh connection in the HTTP state; its request deadline starts now.
    pub fn new(sock: TcpStream, id: ConnId, peer: SocketAddr, now_ms: u64) -> Conn {
        Conn {
            sock,
            id,
            peer,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            state: State::Http,
            subs: Vec::new(),
            cf: None,
            timer_tick: None,
            req_started_ms: Some(now_ms),
            last_active_ms: now_ms,
            close_after_flush: false,
            dirty: false,
            dead: false,
            write_shut: false,
            admitted: false,
        }
    }

    /// Short transport name, for logs and metrics.
    pub fn transport(&self) -> &'static str {
        match &self.state {
            State::Http => "http",
            State::Ws(w) if w.mode == WsMode::Echo => "ws_echo",
            State::Ws(w) if w.mode == WsMode::Centrifugo => "centrifugo_ws",
            State::Ws(w) if w.mode == WsMode::CfUni => "centrifugo_uni_ws",
            State::Stream { kind: StreamKind::CfSse, .. } => "centrifugo_uni_sse",
            State::Stream { kind: StreamKind::CfHttp, .. } => "centrifugo_uni_http_stream",
            State::Ws(_) => "ws",
            State::Stream { kind: StreamKind::Sse, .. } => "sse",
            State::Stream { .. } => "stream",
            State::LongPoll(_) => "longpoll",
            State::Closing { .. } => "closing",
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's fixed cost stays small: it is what the slab holds per client
    /// (heap buffers are empty while idle).
    #[test]
    fn conn_stays_small() {
        let n = std::mem::size_of::<super::Conn>();
        assert!(n <= 256, "Conn is {n} bytes");
    }
}
