//! WebSocket protocol core (RFC 6455): opening-handshake helpers, the
//! server-side frame decoder and the frame encoders.
//!
//! Owns: the `Sec-WebSocket-Accept` computation (§4.2.2), client-key
//! validation (§4.1, §4.2.1), parsing and unmasking of client frames (§5.2,
//! §5.3), fragmentation and control-frame rules (§5.4, §5.5), close-frame body
//! validation (§5.5.1, §7.4), UTF-8 validation of text messages (§5.6, §8.1,
//! through [`crate::proto::utf8`]) and encoding of unmasked server frames.
//!
//! Called by: the reactor's WebSocket connection adapter, which owns the
//! socket and the read buffer. It passes the unconsumed received bytes to
//! [`Decoder::decode`], acts on the returned [`WsEvent`], drops the consumed
//! prefix, and turns a [`WsError`] into a Close frame with
//! [`WsError::close_code`] (§7.1.7 "Fail the WebSocket Connection").
//!
//! Must never: touch sockets, clocks or any IO; panic on any input; allocate
//! in proportion to a *claimed* length (only bytes that have actually arrived
//! are ever copied or reserved).
//!
//! # Caller contract for [`Decoder::decode`]
//!
//! * `buf` starts at the first byte not yet consumed. After a call returns
//!   `consumed = n`, the caller drops exactly `buf[..n]` and keeps the rest.
//! * Bytes that were **not** consumed must be passed again, unchanged and at
//!   the start of the next `buf` (moving them to the front of a buffer is
//!   fine, altering them is not). The decoder may already have unmasked and
//!   UTF-8-validated a prefix of an incomplete text frame in place (fail fast,
//!   §8.1) and remembers how many payload bytes it did; unmasking them a
//!   second time would corrupt them.
//! * Ranges in an event index into the `buf` of that call; read the payload
//!   before dropping the consumed bytes.
//! * Call again while `consumed > 0` or an event was returned; on
//!   `Ok((None, 0))` wait for more bytes.
//! * After an error the connection must be failed: the decoder keeps
//!   returning the same error.
//! * The read buffer needs room for one whole frame (at most
//!   `14 + max_frame` bytes); fragments are moved into the decoder as they
//!   complete.

use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::proto::utf8::Utf8Validator;

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3, §4.2.2).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Strip optional whitespace (SP / HTAB) around a header value (RFC 7230 §3.2).
fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &v[start..end]
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64(SHA-1(key ++ GUID)). Surrounding whitespace of `key` is ignored.
#[must_use]
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(trim_ows(key));
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Validate the client key (RFC 6455 §4.1 item 7, §4.2.1 item 5): canonical
/// padded base64 that decodes to exactly 16 bytes. Surrounding whitespace is
/// ignored.
#[must_use]
pub fn valid_key(key: &[u8]) -> bool {
    let key = trim_ows(key);
    if key.len() != 24 {
        return false;
    }
    let mut out = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut out), Ok(16))
}

/// Frame opcode (RFC 6455 §5.2, §11.8). Reserved opcodes are not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: continues a fragmented data message (§5.4).
    Continuation,
    /// 0x1: UTF-8 text data.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: connection close (§5.5.1).
    Close,
    /// 0x9: ping (§5.5.2).
    Ping,
    /// 0xA: pong (§5.5.3).
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        match b {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames are Close, Ping and Pong (opcodes with the high bit set, §5.5).
    #[must_use]
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// Size limits enforced by the [`Decoder`] from frame headers alone.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Largest data message (sum of its fragments' payloads), in bytes.
    pub max_message: usize,
    /// Largest payload of a single frame, in bytes.
    pub max_frame: usize,
}

impl Default for WsLimits {
    /// 1 MiB per message and per frame.
    fn default() -> Self {
        WsLimits { max_message: 1 << 20, max_frame: 1 << 20 }
    }
}

/// Why the connection must be failed (RFC 6455 §7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// The peer broke the framing rules; the text says which one.
    Protocol(&'static str),
    /// A text message or close reason is not valid UTF-8 (§8.1).
    InvalidUtf8,
    /// A frame or message exceeds [`WsLimits`].
    TooBig,
}

impl WsError {
    /// Status code to send in our Close frame (§7.4.1): 1002 protocol error,
    /// 1007 inconsistent data, 1009 message too big.
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::InvalidUtf8 => 1007,
            WsError::TooBig => 1009,
        }
    }

    /// Short human-readable reason, suitable for a Close frame body.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            WsError::Protocol(why) => why,
            WsError::InvalidUtf8 => "invalid UTF-8 in text",
            WsError::TooBig => "message too big",
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "websocket {} ({})", self.reason(), self.close_code())
    }
}

impl std::error::Error for WsError {}

/// Where a complete data message's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Range into the caller's buffer (already unmasked in place).
    Buf(Range<usize>),
    /// Assembled from fragments.
    Owned(Vec<u8>),
}

impl Payload {
    /// The message bytes, given the `buf` that was passed to the
    /// [`Decoder::decode`] call that returned this payload.
    ///
    /// # Panics
    /// If `buf` is not that buffer (a `Buf` range out of bounds).
    #[must_use]
    pub fn as_slice<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Payload::Buf(r) => &buf[r.clone()],
            Payload::Owned(v) => v,
        }
    }
}

/// One decoded client event. Ranges index into the `buf` of the
/// [`Decoder::decode`] call that returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text message; its bytes are valid UTF-8.
    Text(Payload),
    /// A complete binary message.
    Binary(Payload),
    /// Ping with its application data (≤ 125 bytes); answer with a Pong (§5.5.2).
    Ping(Range<usize>),
    /// Pong with its application data (≤ 125 bytes).
    Pong(Range<usize>),
    /// A complete message whose first frame had RSV1 set (permessage-deflate, RFC 7692
    /// §6): `payload` is the compressed bytes, to be inflated (and, for text, UTF-8
    /// validated) by the caller. Only when [`Decoder::set_deflate`] enabled the extension.
    Compressed {
        /// Text (else binary).
        text: bool,
        /// The compressed payload (its fragments joined).
        payload: Payload,
    },
    /// Close frame (§5.5.1). `code` is `None` when the frame had no body;
    /// otherwise it is a code valid on the wire (§7.4). `reason` is valid UTF-8.
    Close {
        /// Status code, when present.
        code: Option<u16>,
        /// Reason text (validated UTF-8), possibly empty.
        reason: Range<usize>,
    },
}

/// Data message being assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MsgKind {
    Text,
    Binary,
}

/// Parsed frame header (§5.2).
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    /// RSV1: the message is compressed (only accepted on a data message's first frame
    /// when permessage-deflate was negotiated).
    rsv1: bool,
    opcode: Opcode,
    mask: [u8; 4],
    /// Bytes of header, including the masking key.
    len: usize,
    payload_len: usize,
}

/// Server-side decoder of client frames; holds fragmentation and UTF-8 state
/// between calls. See the module docs for the caller contract.
pub struct Decoder {
    /// Largest data message, from [`WsLimits`] (u32: the decoder sits in every WebSocket
    /// connection's state, which stays in a small allocation class).
    max_message: u32,
    /// Largest frame payload, from [`WsLimits`].
    max_frame: u32,
    /// Kind of the fragmented message in progress (§5.4), if any.
    msg: Option<MsgKind>,
    /// Payload of the completed fragments of that message (allocated only while one is
    /// being assembled).
    #[allow(clippy::box_collection)] // on purpose: 8 bytes inline in every connection
    assembly: Option<Box<Vec<u8>>>,
    /// UTF-8 state of the text message in progress (fragments and partial frame).
    utf8: Utf8Validator,
    /// Payload bytes of the incomplete frame at the start of the caller's
    /// buffer that are already unmasked in place and UTF-8 validated (only
    /// ever non-zero for text data frames; below `max_frame`).
    partial: u32,
    /// Masking key of that frame (consistency check of the caller contract).
    partial_mask: [u8; 4],
    /// Sticky error: once failed, always failed (boxed: rare, and 24 bytes inline).
    failed: Option<Box<WsError>>,
    /// permessage-deflate was negotiated: RSV1 may mark a compressed message (RFC 7692).
    deflate: bool,
    /// The message in progress is compressed (its first frame had RSV1).
    compressed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(WsLimits::default())
    }
}

impl Decoder {
    /// A decoder enforcing `limits`.
    #[must_use]
    pub fn new(limits: WsLimits) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Decoder {
            max_message: clamp(limits.max_message),
            max_frame: clamp(limits.max_frame),
            msg: None,
            assembly: None,
            utf8: Utf8Validator::default(),
            partial: 0,
            partial_mask: [0; 4],
            failed: None,
            deflate: false,
            compressed: false,
        }
    }

    /// Accept RSV1 on the first frame of a data message (permessage-deflate negotiated,
    /// RFC 7692 §6); such messages come out as [`WsEvent::Compressed`].
    pub fn set_deflate(&mut self, on: bool) {
        self.deflate = on;
    }

    /// Whether permessage-deflate was negotiated on this decoder.
    #[must_use]
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// True while a fragmented message is being assembled (so the connection
    /// holds state).
    #[must_use]
    pub fn in_message(&self) -> bool {
        self.msg.is_some()
    }

    /// Decode at most one event from `buf` (bytes the server has received and
    /// not yet consumed).
    ///
    /// Unmasks in place. Returns the event (if one completed) and how many
    /// bytes of `buf` were consumed; the caller drops those bytes and calls
    /// again while `consumed > 0` or an event came. An incomplete frame
    /// consumes nothing (`Ok((None, 0))`), except that fragments (non-final
    /// data frames) that are complete are consumed into the decoder's own
    /// assembly buffer. Ranges in the returned event index into `buf` as passed
    /// to this call.
    ///
    /// For an incomplete text frame the payload bytes that have arrived are
    /// unmasked and validated right away, so invalid UTF-8 fails before the
    /// frame completes; the caller must therefore hand back unconsumed bytes
    /// unchanged (see the module docs).
    ///
    /// # Errors
    /// [`WsError::Protocol`] for a framing violation (§5.2-§5.5, §7.4),
    /// [`WsError::InvalidUtf8`] for a text message or close reason that is not
    /// UTF-8 (§8.1), [`WsError::TooBig`] when a frame or message exceeds the
    /// limits. The connection must then be failed with
    /// [`WsError::close_code`]; the decoder keeps returning the same error.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<(Option<WsEvent>, usize), WsError> {
        if let Some(e) = self.failed.as_deref() {
            return Err(*e);
        }
        let result = self.decode_frame(buf);
        if let Err(e) = result {
            self.failed = Some(Box::new(e));
            self.msg = None;
            self.assembly = None;
            self.partial = 0;
            self.compressed = false;
        }
        result
    }

    fn decode_frame(&mut self, buf: &mut [u8]) -> Result<(Option<WsEvent>, usize), WsError> {
        let Some(h) = self.parse_header(buf)? else {
            return Ok((None, 0));
        };
        let start = h.len;
        let end = start.saturating_add(h.payload_len);
        let compressed = match h.opcode {
            Opcode::Text | Opcode::Binary => h.rsv1,
            Opcode::Continuation => self.compressed,
            _ => false,
        };
        let is_text = h.opcode == Opcode::Text || (h.opcode == Opcode::Continuation && self.msg == Some(MsgKind::Text));
        // Compressed text is validated by the caller after inflating (RFC 7692 §6.1).
        let text = is_text && !compressed;

        if self.partial > 0 {
            debug_assert!(text && self.partial_mask == h.mask, "decode: caller changed unconsumed bytes");
        }
        if buf.len() < end {
            if text {
                // Fail fast (§8.1, Autobahn 6.4.x): unmask and validate the
                // payload that has arrived; remember how far we got.
                let have = buf.len() - start; // < payload_len <= max_frame
                let partial = self.partial as usize;
                if have > partial {
                    let seg = &mut buf[start + partial..start + have];
                    unmask(seg, h.mask, partial);
                    self.utf8.feed(seg).map_err(|()| WsError::InvalidUtf8)?;
                    self.partial = u32::try_from(have).unwrap_or(u32::MAX);
                    self.partial_mask = h.mask;
                }
            }
            return Ok((None, 0));
        }

        // The whole frame is here: unmask what is still masked (§5.3).
        let done = std::mem::take(&mut self.partial) as usize;
        unmask(&mut buf[start + done..end], h.mask, done);
        let range = start..end;

        match h.opcode {
            Opcode::Ping => Ok((Some(WsEvent::Ping(range)), end)),
            Opcode::Pong => Ok((Some(WsEvent::Pong(range)), end)),
            Opcode::Close => Ok((Some(close_event(buf, range)?), end)),
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                let kind = match h.opcode {
                    Opcode::Text => MsgKind::Text,
                    Opcode::Binary => MsgKind::Binary,
                    // parse_header guarantees a message is in progress.
                    _ => self.msg.unwrap_or(MsgKind::Binary),
                };
                if text {
                    self.utf8.feed(&buf[start + done..end]).map_err(|()| WsError::InvalidUtf8)?;
                }
                if !h.fin {
                    // A fragment (§5.4): keep its payload, consume the frame.
                    self.msg = Some(kind);
                    self.compressed = compressed;
                    self.assembly.get_or_insert_with(Default::default).extend_from_slice(&buf[range]);
                    return Ok((None, end));
                }
                if text {
                    if !self.utf8.is_complete() {
                        return Err(WsError::InvalidUtf8);
                    }
                    self.utf8.reset();
                }
                self.msg = None;
                self.compressed = false;
                let payload = match self.assembly.take() {
                    Some(mut a) if !a.is_empty() => {
                        a.extend_from_slice(&buf[range]);
                        Payload::Owned(*a)
                    }
                    _ => Payload::Buf(range),
                };
                let event = match kind {
                    _ if compressed => WsEvent::Compressed { text: kind == MsgKind::Text, payload },
                    MsgKind::Text => WsEvent::Text(payload),
                    MsgKind::Binary => WsEvent::Binary(payload),
                };
                Ok((Some(event), end))
            }
        }
    }

    /// Parse and check the frame header at the start of `buf` (§5.2).
    ///
    /// Every rule is checked as soon as the bytes it depends on are present,
    /// so a bad or oversized frame fails before its payload arrives.
    /// `Ok(None)` means the header is incomplete.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, WsError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        // §5.2: RSV1-3 MUST be 0 unless an extension was negotiated. permessage-deflate
        // (RFC 7692 §6) gives RSV1 a meaning on the first frame of a data message only:
        // never on control frames (§6.1) nor on continuation frames.
        if b0 & 0x30 != 0 {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::Protocol("reserved opcode"))?;
        if rsv1 && !(self.deflate && matches!(opcode, Opcode::Text | Opcode::Binary)) {
            return Err(WsError::Protocol("reserved bits set"));
        }
        if opcode.is_control() {
            // §5.5: control frames MUST NOT be fragmented.
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
        } else {
            // §5.4: continuation only inside a message; no nested messages.
            match (opcode, self.msg) {
                (Opcode::Continuation, None) => return Err(WsError::Protocol("continuation without a message")),
                (Opcode::Text | Opcode::Binary, Some(_)) => {
                    return Err(WsError::Protocol("new message inside a fragmented one"))
                }
                _ => {}
            }
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        // §5.1, §5.3: a client MUST mask every frame.
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("unmasked client frame"));
        }
        let len7 = b1 & 0x7F;
        // §5.5: control frame payload is at most 125 bytes.
        if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(WsError::Protocol("control frame too long"));
        }
        // §5.2: 7-bit, 16-bit or 64-bit payload length. Non-minimal encodings
        // are accepted (lenient, like common implementations).
        let (payload_len, len_end) = match len7 {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => {
                // The most significant bit MUST be 0; check it early.
                if buf.get(2).is_some_and(|&b| b & 0x80 != 0) {
                    return Err(WsError::Protocol("64-bit length with high bit set"));
                }
                match buf.get(2..10) {
                    Some(b) => {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(b);
                        (u64::from_be_bytes(be), 10)
                    }
                    None => return Ok(None),
                }
            }
            n => (u64::from(n), 2),
        };
        let payload_len = match usize::try_from(payload_len) {
            Ok(n) if n <= self.max_frame as usize => n,
            _ => return Err(WsError::TooBig),
        };
        let assembled = self.assembly.as_ref().map_or(0, |a| a.len());
        if !opcode.is_control() && assembled.saturating_add(payload_len) > self.max_message as usize {
            return Err(WsError::TooBig);
        }
        let Some(key) = buf.get(len_end..len_end + 4) else {
            return Ok(None);
        };
        Ok(Some(Header { fin, rsv1, opcode, mask: [key[0], key[1], key[2], key[3]], len: len_end + 4, payload_len }))
    }
}

/// Validate a close frame body (§5.5.1, §7.4) and build the event.
fn close_event(buf: &[u8], range: Range<usize>) -> Result<WsEvent, WsError> {
    let body = &buf[range.clone()];
    match body.len() {
        0 => Ok(WsEvent::Close { code: None, reason: range.start..range.start }),
        1 => Err(WsError::Protocol("close frame with 1-byte body")),
        _ => {
            let code = u16::from_be_bytes([body[0], body[1]]);
            if !valid_close_code(code) {
                return Err(WsError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(&body[2..]).is_err() {
                return Err(WsError::InvalidUtf8);
            }
            Ok(WsEvent::Close { code: Some(code), reason: range.start + 2..range.end })
        }
    }
}

/// Close codes a peer may send (§7.4.1, §7.4.2, IANA registry): 1000-1003,
/// 1007-1011, 1012-1014 (registered after the RFC), 3000-4999. 1004-1006 and
/// 1015 are reserved and never sent on the wire; the rest is unassigned.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XOR `data` with the masking key (§5.3), where `data[0]` is payload byte
/// number `offset` of the frame (so the key is applied from `offset % 4`).
///
/// Word at a time: eight bytes per step with the key repeated and rotated to
/// the phase of `data[0]`; unaligned loads through `from_ne_bytes`, which the
/// compiler turns into plain (vectorizable) loads without `unsafe`.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let m8 = [m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]];
    let wide = u64::from_ne_bytes(m8);
    let mut chunks = data.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for word in chunk.chunks_exact_mut(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
        }
    }
    // The chunk sizes are multiples of 4, so the remainder starts at phase 0.
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(m.iter().cycle()) {
        *b ^= k;
    }
}

/// Length of the header of an unmasked server frame carrying `payload_len`
/// bytes (§5.2): 2, 4 (16-bit length) or 10 (64-bit length).
#[must_use]
pub fn header_len(payload_len: usize) -> usize {
    if payload_len <= 125 {
        2
    } else if payload_len <= 0xFFFF {
        4
    } else {
        10
    }
}

/// Append an unmasked frame header (§5.2; servers never mask, §5.1) using
/// the minimal length encoding.
pub fn write_header(out: &mut Vec<u8>, opcode: Opcode, fin: bool, payload_len: usize) {
    let b0 = if fin { 0x80 } else { 0 } | opcode.bits();
    if payload_len <= 125 {
        out.extend_from_slice(&[b0, payload_len as u8]);
    } else if payload_len <= 0xFFFF {
        let l = (payload_len as u16).to_be_bytes();
        out.extend_from_slice(&[b0, 126, l[0], l[1]]);
    } else {
        out.extend_from_slice(&[b0, 127]);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

/// A whole unfragmented compressed server frame (FIN and RSV1 set, unmasked; RFC 7692
/// §6): `payload` is already deflated. Built with one allocation.
#[must_use]
pub fn compressed_frame(opcode: Opcode, payload: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    write_header(&mut out, opcode, true, payload.len());
    out[0] |= 0x40;
    out.extend_from_slice(payload);
    bytes::Bytes::from(out)
}

/// A whole unfragmented server frame (FIN set, unmasked), built with one
/// allocation.
#[must_use]
pub fn frame(opcode: Opcode, payload: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    write_header(&mut out, opcode, true, payload.len());
    out.extend_from_slice(payload);
    bytes::Bytes::from(out)
}

/// A Close frame with status `code` and `reason` (§5.5.1). The reason is
/// truncated at a char boundary so the body fits a control frame (2 + 123
/// bytes).
#[must_use]
pub fn close_frame(code: u16, reason: &str) -> bytes::Bytes {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut out = Vec::with_capacity(2 + 2 + reason.len());
    write_header(&mut out, Opcode::Close, true, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---------- helpers ----------

    /// Length encoding to use when building a client frame.
    #[derive(Clone, Copy)]
    enum Len {
        Minimal,
        Force16,
        Force64,
    }

    /// Build a masked client frame.
    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4], len: Len) -> Vec<u8> {
        let mut v = vec![if fin { 0x80 } else { 0 } | op];
        let n = payload.len();
        match len {
            Len::Minimal if n <= 125 => v.push(0x80 | n as u8),
            Len::Minimal | Len::Force16 if n <= 0xFFFF => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(fin, op, payload, [0x37, 0xfa, 0x21, 0x3d], Len::Minimal)
    }

    /// An event with its bytes copied out of the caller's buffer.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Ev {
        Text(Vec<u8>),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, Vec<u8>),
        Compressed(bool, Vec<u8>),
    }

    fn own(ev: WsEvent, buf: &[u8]) -> Ev {
        match ev {
            WsEvent::Text(p) => Ev::Text(p.as_slice(buf).to_vec()),
            WsEvent::Binary(p) => Ev::Binary(p.as_slice(buf).to_vec()),
            WsEvent::Ping(r) => Ev::Ping(buf[r].to_vec()),
            WsEvent::Pong(r) => Ev::Pong(buf[r].to_vec()),
            WsEvent::Close { code, reason } => Ev::Close(code, buf[reason].to_vec()),
            WsEvent::Compressed { text, payload } => Ev::Compressed(text, payload.as_slice(buf).to_vec()),
        }
    }

    /// What a caller observes: events, then possibly an error.
    type Outcome = (Vec<Ev>, Option<WsError>);

    /// Simulate the reactor: bytes arrive in `pieces`; after each arrival,
    /// decode until nothing more can be done, dropping consumed bytes.
    fn run_pieces<'a>(dec: &mut Decoder, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut buf: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok((ev, n)) => {
                        let got = ev.is_some();
                        if let Some(ev) = ev {
                            events.push(own(ev, &buf));
                        }
                        assert!(n <= buf.len());
                        buf.drain(..n);
                        if n == 0 && !got {
                            break;
                        }
                    }
                    Err(e) => {
                        // Errors are sticky.
                        assert_eq!(dec.decode(&mut buf), Err(e));
                        return (events, Some(e));
                    }
                }
            }
        }
        (events, None)
    }

    fn run_whole(stream: &[u8]) -> Outcome {
        run_pieces(&mut Decoder::new(WsLimits::default()), [stream])
    }

    /// Assert that `stream` gives `expected` whole, split at every single
    /// byte boundary, and delivered one byte at a time.
    fn check_all_splits_with(limits: WsLimits, stream: &[u8], expected: &Outcome) {
        let whole = run_pieces(&mut Decoder::new(limits), [stream]);
        assert_eq!(&whole, expected, "whole stream");
        for k in 0..=stream.len() {
            let got = run_pieces(&mut Decoder::new(limits), [&stream[..k], &stream[k..]]);
            assert_eq!(&got, expected, "split at {k}");
        }
        let got = run_pieces(&mut Decoder::new(limits), stream.chunks(1));
        assert_eq!(&got, expected, "byte at a time");
    }

    fn check_all_splits(stream: &[u8], expected: &Outcome) {
        check_all_splits_with(WsLimits::default(), stream, expected);
    }

    fn ok(events: Vec<Ev>) -> Outcome {
        (events, None)
    }

    // ---------- handshake ----------

    #[test]
    fn rfc_handshake_example() {
        // RFC 6455 §1.3 / §4.2.2.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accept_key(b" dGhlIHNhbXBsZSBub25jZQ==\t"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key(b"  dGhlIHNhbXBsZSBub25jZQ== "));
    }

    #[test]
    fn invalid_keys() {
        assert!(!valid_key(b""));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ")); // unpadded
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ=")); // short padding
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ===")); // too long
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j!Q==")); // bad alphabet
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZR==")); // non-canonical bits
        assert!(!valid_key(b"aGVsbG8gd29ybGQgaGVsbG8h")); // 18 bytes
        assert!(!valid_key(b"aGVsbG8=")); // 5 bytes
        assert!(valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
    }

    // ---------- RFC 6455 §5.7 examples ----------

    const HELLO_MASKED: [u8; 11] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];

    #[test]
    fn rfc_masked_hello() {
        let mut buf = HELLO_MASKED.to_vec();
        let mut dec = Decoder::default();
        let (ev, n) = dec.decode(&mut buf).unwrap();
        assert_eq!(n, 11);
        assert_eq!(ev, Some(WsEvent::Text(Payload::Buf(6..11))));
        assert_eq!(&buf[6..11], b"Hello");
        check_all_splits(&HELLO_MASKED, &ok(vec![Ev::Text(b"Hello".to_vec())]));
    }

    #[test]
    fn rfc_unmasked_hello_is_rejected() {
        // The server-side decoder refuses the RFC's unmasked example (§5.1).
        let stream = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        check_all_splits(&stream, &(vec![], Some(WsError::Protocol("unmasked client frame"))));
    }

    #[test]
    fn rfc_fragmented_hello() {
        // "Hel" (FIN=0, text) + "lo" (FIN=1, continuation), masked.
        let mut stream = masked(false, 0x1, b"Hel");
        stream.extend(masked(true, 0x0, b"lo"));
        let mut dec = Decoder::default();
        let mut buf = stream.clone();
        let (ev, n) = dec.decode(&mut buf).unwrap();
        assert_eq!((ev, n), (None, 9));
        assert!(dec.in_message());
        buf.drain(..n);
        let (ev, n) = dec.decode(&mut buf).unwrap();
        assert_eq!(ev, Some(WsEvent::Text(Payload::Owned(b"Hello".to_vec()))));
        assert_eq!(n, 8);
        assert!(!dec.in_message());
        check_all_splits(&stream, &ok(vec![Ev::Text(b"Hello".to_vec())]));
    }

    #[test]
    fn rfc_ping_and_pong() {
        let mut stream = masked(true, 0x9, b"Hello");
        stream.extend(masked(true, 0xA, b"Hello"));
        stream.extend(masked(true, 0x9, b""));
        check_all_splits(
            &stream,
            &ok(vec![Ev::Ping(b"Hello".to_vec()), Ev::Pong(b"Hello".to_vec()), Ev::Ping(vec![])]),
        );
    }

    #[test]
    fn rfc_256_byte_binary_16_bit_length() {
        let payload: Vec<u8> = (0..=255u8).collect();
        let stream = client_frame(true, 0x2, &payload, [1, 2, 3, 4], Len::Minimal);
        assert_eq!(&stream[..4], &[0x82, 0xFE, 0x01, 0x00]);
        let mut buf = stream.clone();
        let (ev, n) = Decoder::default().decode(&mut buf).unwrap();
        assert_eq!(ev, Some(WsEvent::Binary(Payload::Buf(8..264))));
        assert_eq!(n, 264);
        check_all_splits(&stream, &ok(vec![Ev::Binary(payload)]));
    }

    #[test]
    fn rfc_64k_binary_64_bit_length() {
        let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
        let stream = client_frame(true, 0x2, &payload, [9, 8, 7, 6], Len::Minimal);
        assert_eq!(&stream[..10], &[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]);
        let expected = ok(vec![Ev::Binary(payload)]);
        assert_eq!(run_whole(&stream), expected);
        // Every split of a 64 KiB frame is slow in debug; split at all
        // boundaries around the header and a sample of the payload.
        for k in (0..40).chain((40..stream.len()).step_by(997)).chain([stream.len()]) {
            let got = run_pieces(&mut Decoder::default(), [&stream[..k], &stream[k..]]);
            assert_eq!(got, expected, "split at {k}");
        }
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let mut stream = client_frame(true, 0x1, b"hi", [5, 6, 7, 8], Len::Force16);
        stream.extend(client_frame(true, 0x2, b"there", [5, 6, 7, 8], Len::Force64));
        stream.extend(client_frame(true, 0x9, b"p", [0, 0, 0, 0], Len::Force16));
        // A control frame with a 16-bit length field is rejected: its 7-bit
        // field (126) already exceeds 125 (§5.5).
        check_all_splits(
            &stream,
            &(
                vec![Ev::Text(b"hi".to_vec()), Ev::Binary(b"there".to_vec())],
                Some(WsError::Protocol("control frame too long")),
            ),
        );
    }

    // ---------- fragmentation and interleaving ----------

    #[test]
    fn control_frames_between_fragments() {
        let mut stream = masked(false, 0x2, b"ab");
        stream.extend(masked(true, 0x9, b"ping"));
        stream.extend(masked(false, 0x0, b""));
        stream.extend(masked(true, 0xA, b""));
        stream.extend(masked(false, 0x0, b"cd"));
        stream.extend(masked(true, 0x0, b"e"));
        stream.extend(masked(true, 0x1, b"next"));
        check_all_splits(
            &stream,
            &ok(vec![
                Ev::Ping(b"ping".to_vec()),
                Ev::Pong(vec![]),
                Ev::Binary(b"abcde".to_vec()),
                Ev::Text(b"next".to_vec()),
            ]),
        );
    }

    #[test]
    fn empty_fragments_then_data_uses_caller_buffer() {
        let mut stream = masked(false, 0x1, b"");
        stream.extend(masked(false, 0x0, b""));
        let tail = masked(true, 0x0, "é".as_bytes());
        stream.extend(&tail);
        let mut dec = Decoder::default();
        let mut buf = stream.clone();
        assert_eq!(dec.decode(&mut buf).unwrap(), (None, 6));
        buf.drain(..6);
        assert_eq!(dec.decode(&mut buf).unwrap(), (None, 6));
        buf.drain(..6);
        let (ev, n) = dec.decode(&mut buf).unwrap();
        assert_eq!(ev, Some(WsEvent::Text(Payload::Buf(6..8))));
        assert_eq!(n, tail.len());
        check_all_splits(&stream, &ok(vec![Ev::Text("é".as_bytes().to_vec())]));
    }

    #[test]
    fn code_point_split_across_fragments() {
        let text = "a€𝄞κ";
        let bytes = text.as_bytes();
        // Cut the message into three fragments at every pair of positions.
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut stream = masked(false, 0x1, &bytes[..a]);
                stream.extend(masked(true, 0x9, b"")); // interleaved ping
                stream.extend(masked(false, 0x0, &bytes[a..b]));
                stream.extend(masked(true, 0x0, &bytes[b..]));
                let expected = ok(vec![Ev::Ping(vec![]), Ev::Text(bytes.to_vec())]);
                assert_eq!(run_whole(&stream), expected, "cuts {a},{b}");
                let got = run_pieces(&mut Decoder::default(), stream.chunks(1));
                assert_eq!(got, expected, "cuts {a},{b} bytewise");
            }
        }
        // And the full split treatment for one of them.
        let mut stream = masked(false, 0x1, &bytes[..2]);
        stream.extend(masked(false, 0x0, &bytes[2..6]));
        stream.extend(masked(true, 0x0, &bytes[6..]));
        check_all_splits(&stream, &ok(vec![Ev::Text(bytes.to_vec())]));
    }

    #[test]
    fn truncated_code_point_at_message_end() {
        let e = "€".as_bytes();
        let stream = masked(true, 0x1, &e[..2]);
        check_all_splits(&stream, &(vec![], Some(WsError::InvalidUtf8)));
        let mut stream = masked(false, 0x1, &e[..1]);
        stream.extend(masked(true, 0x0, &e[1..2]));
        check_all_splits(&stream, &(vec![], Some(WsError::InvalidUtf8)));
    }

    // ---------- fail fast ----------

    #[test]
    fn invalid_utf8_fails_before_frame_completes() {
        // A 100-byte text frame whose 5th byte starts a surrogate (ED A0 ..).
        let mut payload = b"good".to_vec();
        payload.extend([0xED, 0xA0, 0x80]);
        payload.resize(100, b'x');
        let stream = masked(true, 0x1, &payload);
        // Only the header plus 6 payload bytes arrived.
        let mut dec = Decoder::default();
        let mut buf = stream[..6 + 5].to_vec();
        assert_eq!(dec.decode(&mut buf), Ok((None, 0)));
        buf.extend_from_slice(&stream[11..12]);
        assert_eq!(dec.decode(&mut buf), Err(WsError::InvalidUtf8));
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        check_all_splits(&stream, &(vec![], Some(WsError::InvalidUtf8)));
    }

    #[test]
    fn invalid_utf8_in_middle_fragment_fails_before_message_ends() {
        // Autobahn 6.4.1-like: valid fragment, invalid fragment, the rest never sent.
        let mut stream = masked(false, 0x1, "κόσμε".as_bytes());
        let mut bad = vec![0xF4, 0x90, 0x80, 0x80]; // > U+10FFFF
        bad.extend_from_slice(b"edited");
        stream.extend(client_frame(false, 0x0, &bad, [1, 2, 3, 4], Len::Minimal));
        check_all_splits(&stream, &(vec![], Some(WsError::InvalidUtf8)));
        // Even with only the header and the first bad byte pair of a long frame.
        let mut long = vec![0xF4, 0x90];
        long.resize(5000, b'a');
        let frame = client_frame(true, 0x1, &long, [1, 2, 3, 4], Len::Minimal);
        let mut buf = frame[..8 + 2].to_vec();
        assert_eq!(Decoder::default().decode(&mut buf), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn partial_unmasking_is_remembered() {
        // Feed a text frame in three pieces and check the payload comes out
        // right although part of it was unmasked early.
        let text = "partial unmask ✓ across calls, with a long enough payload.";
        let stream = client_frame(true, 0x1, text.as_bytes(), [0xA1, 0xB2, 0xC3, 0xD4], Len::Minimal);
        let mut dec = Decoder::default();
        let mut buf = stream[..9].to_vec();
        assert_eq!(dec.decode(&mut buf), Ok((None, 0)));
        buf.extend_from_slice(&stream[9..30]);
        assert_eq!(dec.decode(&mut buf), Ok((None, 0)));
        // Calling again without new bytes is harmless.
        assert_eq!(dec.decode(&mut buf), Ok((None, 0)));
        buf.extend_from_slice(&stream[30..]);
        let (ev, n) = dec.decode(&mut buf).unwrap();
        assert_eq!(n, stream.len());
        assert_eq!(own(ev.unwrap(), &buf), Ev::Text(text.as_bytes().to_vec()));
    }

    // ---------- error cases and close codes ----------

    fn first_error(stream: &[u8]) -> WsError {
        let (_, e) = run_whole(stream);
        let e = e.expect("expected an error");
        // Same error under every split.
        check_all_splits(stream, &(run_whole(stream).0, Some(e)));
        e
    }

    #[test]
    fn protocol_errors_map_to_1002() {
        let mask = [1, 2, 3, 4];
        let mut unmasked = masked(true, 0x2, b"abc");
        unmasked[1] &= 0x7F;
        unmasked.truncate(2 + 3);
        let mut rsv = Vec::new();
        for bit in [0x40u8, 0x20, 0x10] {
            let mut f = masked(true, 0x1, b"x");
            f[0] |= bit;
            rsv.push(f);
        }
        let mut cases: Vec<(Vec<u8>, &str)> = vec![(unmasked, "unmasked client frame")];
        for f in rsv {
            cases.push((f, "reserved bits set"));
        }
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            cases.push((masked(true, op, b""), "reserved opcode"));
        }
        cases.push((masked(false, 0x9, b""), "fragmented control frame"));
        cases.push((masked(false, 0x8, b""), "fragmented control frame"));
        cases.push((masked(true, 0xA, &[0u8; 126]), "control frame too long"));
        cases.push((masked(true, 0x0, b"x"), "continuation without a message"));
        cases.push((masked(false, 0x0, b"x"), "continuation without a message"));
        let mut nested = masked(false, 0x1, b"a");
        nested.extend(masked(true, 0x2, b"b"));
        cases.push((nested, "new message inside a fragmented one"));
        let mut nested = masked(false, 0x2, b"a");
        nested.extend(masked(false, 0x1, b"b"));
        cases.push((nested, "new message inside a fragmented one"));
        let mut huge = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
        huge.extend_from_slice(&mask);
        cases.push((huge, "64-bit length with high bit set"));
        cases.push((masked(true, 0x8, &[0x03]), "close frame with 1-byte body"));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            cases.push((masked(true, 0x8, &code.to_be_bytes()), "invalid close code"));
        }
        for (stream, why) in cases {
            let e = first_error(&stream);
            assert_eq!(e, WsError::Protocol(why), "{stream:02x?}");
            assert_eq!(e.close_code(), 1002);
            assert_eq!(e.reason(), why);
        }
    }

    #[test]
    fn close_frames() {
        let mut stream = masked(true, 0x8, b"");
        stream.extend(masked(true, 0x8, &1000u16.to_be_bytes()));
        let mut body = 4999u16.to_be_bytes().to_vec();
        body.extend_from_slice("bye κ".as_bytes());
        stream.extend(masked(true, 0x8, &body));
        let mut expected = vec![Ev::Close(None, vec![]), Ev::Close(Some(1000), vec![])];
        expected.push(Ev::Close(Some(4999), "bye κ".as_bytes().to_vec()));
        for code in [1001u16, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000] {
            stream.extend(masked(true, 0x8, &code.to_be_bytes()));
            expected.push(Ev::Close(Some(code), vec![]));
        }
        check_all_splits(&stream, &ok(expected));
        // Close with a 123-byte reason (125-byte body) is fine.
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend([b'r'; 123]);
        check_all_splits(&masked(true, 0x8, &body), &ok(vec![Ev::Close(Some(1000), vec![b'r'; 123])]));
        // Autobahn 7.3.6: 126-byte close body.
        body.push(b'r');
        assert_eq!(first_error(&masked(true, 0x8, &body)), WsError::Protocol("control frame too long"));
    }

    #[test]
    fn invalid_utf8_maps_to_1007() {
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend([0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80, 0x65]);
        let e = first_error(&masked(true, 0x8, &body));
        assert_eq!((e, e.close_code()), (WsError::InvalidUtf8, 1007));
        let e = first_error(&masked(true, 0x1, &[0xC0, 0x80]));
        assert_eq!((e, e.close_code()), (WsError::InvalidUtf8, 1007));
        // Binary data is not validated.
        assert_eq!(run_whole(&masked(true, 0x2, &[0xC0, 0x80])), ok(vec![Ev::Binary(vec![0xC0, 0x80])]));
    }

    #[test]
    fn limits_map_to_1009_from_the_header_alone() {
        let limits = WsLimits { max_message: 100, max_frame: 60 };
        // Frame over max_frame: error as soon as the length is known.
        let stream = masked(true, 0x2, &[0u8; 61]);
        let mut dec = Decoder::new(limits);
        assert_eq!(dec.decode(&mut stream[..2].to_vec()), Err(WsError::TooBig));
        check_all_splits_with(limits, &stream, &(vec![], Some(WsError::TooBig)));
        // A claimed 2^62-byte frame fails with only its header.
        let mut dec = Decoder::new(limits);
        let mut hdr = vec![0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(dec.decode(&mut hdr), Err(WsError::TooBig));
        assert_eq!(WsError::TooBig.close_code(), 1009);
        // Message over max_message across fragments.
        let mut stream = masked(false, 0x1, &[b'a'; 60]);
        stream.extend(masked(true, 0x9, b""));
        stream.extend(masked(true, 0x0, &[b'a'; 41]));
        check_all_splits_with(limits, &stream, &(vec![Ev::Ping(vec![])], Some(WsError::TooBig)));
        // Exactly at the limits is fine.
        let mut stream = masked(false, 0x2, &[7; 60]);
        stream.extend(masked(true, 0x0, &[7; 40]));
        check_all_splits_with(limits, &stream, &ok(vec![Ev::Binary(vec![7; 100])]));
    }

    #[test]
    fn reserved_bits_and_opcode_fail_on_first_byte() {
        for b0 in [0xC1u8, 0x83, 0x8B, 0x09] {
            assert!(matches!(Decoder::default().decode(&mut [b0]), Err(WsError::Protocol(_))), "{b0:02x}");
        }
        let mut dec = Decoder::default();
        assert_eq!(dec.decode(&mut []), Ok((None, 0)));
        assert_eq!(dec.decode(&mut [0x81]), Ok((None, 0)));
    }

    // ---------- unmasking ----------

    fn naive_unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn unmask_matches_naive_at_every_length_alignment_and_phase() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let base: Vec<u8> = (0..100u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..=70 {
            for align in 0..8 {
                for offset in 0..8 {
                    let mut fast = base.clone();
                    let mut slow = base.clone();
                    unmask(&mut fast[align..align + len], mask, offset);
                    naive_unmask(&mut slow[align..align + len], mask, offset);
                    assert_eq!(fast, slow, "len {len} align {align} offset {offset}");
                }
            }
        }
    }

    // ---------- encoders ----------

    #[test]
    fn header_lengths() {
        for (n, hl) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (1 << 33, 10)] {
            assert_eq!(header_len(n), hl, "{n}");
            let mut out = Vec::new();
            write_header(&mut out, Opcode::Binary, true, n);
            assert_eq!(out.len(), hl);
            assert_eq!(out[0], 0x82);
        }
        let mut out = Vec::new();
        write_header(&mut out, Opcode::Text, false, 125);
        assert_eq!(out, [0x01, 125]);
        out.clear();
        write_header(&mut out, Opcode::Continuation, true, 126);
        assert_eq!(out, [0x80, 126, 0, 126]);
        out.clear();
        write_header(&mut out, Opcode::Binary, true, 65535);
        assert_eq!(out, [0x82, 126, 0xFF, 0xFF]);
        out.clear();
        write_header(&mut out, Opcode::Binary, true, 65536);
        assert_eq!(out, [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        out.clear();
        write_header(&mut out, Opcode::Pong, true, 3);
        assert_eq!(out, [0x8A, 3]);
    }

    #[test]
    fn frame_encoding() {
        assert_eq!(&frame(Opcode::Text, b"Hello")[..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(&frame(Opcode::Ping, b"")[..], &[0x89, 0x00]);
        for n in [125usize, 126, 65535, 65536] {
            let p = vec![0xAB; n];
            let f = frame(Opcode::Binary, &p);
            assert_eq!(f.len(), header_len(n) + n);
            assert_eq!(&f[header_len(n)..], &p[..]);
        }
    }

    /// Turn an unmasked server frame into a masked client frame.
    fn mask_server_frame(f: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let hl = match f[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mut v = f[..hl].to_vec();
        v[1] |= 0x80;
        v.extend_from_slice(&mask);
        v.extend(f[hl..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn encoder_decoder_round_trip() {
        for n in [0usize, 1, 125, 126, 1000, 65535, 65536] {
            let p: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let f = mask_server_frame(&frame(Opcode::Binary, &p), [3, 1, 4, 1]);
            assert_eq!(run_whole(&f), ok(vec![Ev::Binary(p)]));
        }
        let f = mask_server_frame(&close_frame(1001, "going away"), [3, 1, 4, 1]);
        assert_eq!(run_whole(&f), ok(vec![Ev::Close(Some(1001), b"going away".to_vec())]));
    }

    #[test]
    fn close_frame_truncation() {
        let f = close_frame(1000, "");
        assert_eq!(&f[..], &[0x88, 2, 0x03, 0xE8]);
        let long = "a".repeat(200);
        let f = close_frame(1009, &long);
        assert_eq!(f.len(), 2 + 125);
        assert_eq!(f[1], 125);
        assert_eq!(&f[2..4], &1009u16.to_be_bytes());
        // 121 ASCII bytes then a 3-byte char that would end at byte 124 > 123.
        let s = format!("{}€tail", "b".repeat(121));
        let f = close_frame(1000, &s);
        assert_eq!(f[1] as usize, 2 + 121);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        // A char ending exactly at 123 is kept.
        let s = format!("{}€", "b".repeat(120));
        assert_eq!(close_frame(1000, &s)[1] as usize, 125);
        // All-multibyte reasons stay valid UTF-8.
        for c in ["é", "€", "𝄞"] {
            let f = close_frame(1000, &c.repeat(100));
            assert!(f.len() <= 127);
            assert!(std::str::from_utf8(&f[4..]).is_ok());
        }
        for e in [WsError::Protocol("x"), WsError::InvalidUtf8, WsError::TooBig] {
            let f = close_frame(e.close_code(), e.reason());
            assert_eq!(&f[2..4], &e.close_code().to_be_bytes());
        }
    }

    // ---------- property-style ----------

    use crate::proto::testrng::Rng;

    const CHARS: &[&str] = &["a", "Z", " ", "é", "κ", "€", "✓", "𝄞", "\u{10FFFF}", "\u{7FF}", "\u{800}"];

    /// A random valid stream of client frames and the events it must produce.
    fn random_stream(rng: &mut Rng) -> (Vec<u8>, Vec<Ev>) {
        let mut stream = Vec::new();
        let mut events = Vec::new();
        let messages = 1 + rng.below(5);
        for _ in 0..messages {
            let text = rng.below(2) == 0;
            let mut payload: Vec<u8> = if text {
                let n = rng.below(60);
                (0..n).flat_map(|_| CHARS[rng.below(CHARS.len())].bytes()).collect()
            } else {
                let n = [0, 1, 7, 125, 126, 300][rng.below(6)];
                (0..n).map(|_| rng.next() as u8).collect()
            };
            // Random cut points (may split code points).
            let pieces = 1 + rng.below(4);
            let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.below(payload.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(payload.len());
            let mut prev = 0;
            for (i, &cut) in cuts.iter().enumerate() {
                let op = if i > 0 {
                    0x0
                } else if text {
                    0x1
                } else {
                    0x2
                };
                let fin = i + 1 == cuts.len();
                let mask = (rng.next() as u32).to_ne_bytes();
                let len = [Len::Minimal, Len::Minimal, Len::Force16, Len::Force64][rng.below(4)];
                stream.extend(client_frame(fin, op, &payload[prev..cut], mask, len));
                prev = cut;
                if fin {
                    let payload = std::mem::take(&mut payload);
                    events.push(if text { Ev::Text(payload) } else { Ev::Binary(payload) });
                }
                if rng.below(3) == 0 {
                    let data: Vec<u8> = (0..rng.below(126)).map(|_| rng.next() as u8).collect();
                    let (op, ev) =
                        if rng.below(2) == 0 { (0x9, Ev::Ping(data.clone())) } else { (0xA, Ev::Pong(data.clone())) };
                    stream.extend(client_frame(true, op, &data, mask, Len::Minimal));
                    events.push(ev);
                }
            }
        }
        (stream, events)
    }

    #[test]
    fn random_streams_random_splits() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..300 {
            let (stream, events) = random_stream(&mut rng);
            let expected = ok(events);
            assert_eq!(run_whole(&stream), expected);
            for _ in 0..8 {
                let mut pieces = Vec::new();
                let mut at = 0;
                while at < stream.len() {
                    let n = 1 + rng.below(40);
                    let end = (at + n).min(stream.len());
                    pieces.push(&stream[at..end]);
                    at = end;
                }
                assert_eq!(run_pieces(&mut Decoder::default(), pieces), expected);
            }
        }
    }

    #[test]
    fn random_corruption_never_panics_and_is_split_invariant() {
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        let limits = WsLimits { max_message: 4096, max_frame: 2048 };
        for _ in 0..2000 {
            let (mut stream, _) = random_stream(&mut rng);
            // Flip a few random bits (headers, masks, payloads alike).
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(stream.len());
                stream[i] ^= 1 << rng.below(8);
            }
            let whole = run_pieces(&mut Decoder::new(limits), [&stream[..]]);
            let bytewise = run_pieces(&mut Decoder::new(limits), stream.chunks(1));
            assert_eq!(whole, bytewise);
            let k = rng.below(stream.len() + 1);
            let split = run_pieces(&mut Decoder::new(limits), [&stream[..k], &stream[k..]]);
            assert_eq!(whole, split);
        }
        // Pure garbage.
        for _ in 0..2000 {
            let n = rng.below(64);
            let garbage: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let _ = run_pieces(&mut Decoder::new(limits), [&garbage[..]]);
            let _ = run_pieces(&mut Decoder::new(limits), garbage.chunks(1));
        }
    }

    // ---------- permessage-deflate (RFC 7692 §6) ----------

    fn deflating() -> Decoder {
        let mut d = Decoder::new(WsLimits::default());
        d.set_deflate(true);
        d
    }

    #[test]
    fn rsv1_marks_a_compressed_message_when_negotiated() {
        let m = [1, 2, 3, 4];
        // RFC 7692 §7.2.3.1 "Hello", masked.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut f = client_frame(true, 0x1, &hello, m, Len::Minimal);
        f[0] |= 0x40;
        let expected = (vec![Ev::Compressed(true, hello.to_vec())], None);
        assert_eq!(run_pieces(&mut deflating(), [&f[..]]), expected);
        for k in 0..=f.len() {
            assert_eq!(run_pieces(&mut deflating(), [&f[..k], &f[k..]]), expected, "split at {k}");
        }
        // Fragmented: RSV1 on the first frame only (§6.1), control frames in between.
        let mut a = client_frame(false, 0x2, &hello[..3], m, Len::Minimal);
        a[0] |= 0x40;
        let mut stream = a;
        stream.extend(client_frame(true, 0x9, b"p", m, Len::Minimal));
        stream.extend(client_frame(true, 0x0, &hello[3..], m, Len::Minimal));
        // Then an uncompressed message on the same connection: not compressed.
        stream.extend(client_frame(true, 0x1, b"plain", m, Len::Minimal));
        assert_eq!(
            run_pieces(&mut deflating(), stream.chunks(1)),
            (vec![Ev::Ping(b"p".to_vec()), Ev::Compressed(false, hello.to_vec()), Ev::Text(b"plain".to_vec())], None)
        );
        // Compressed bytes are not UTF-8 and are not validated as text by the decoder.
        let mut f = client_frame(true, 0x1, &[0xff, 0xfe], m, Len::Minimal);
        f[0] |= 0x40;
        assert_eq!(run_pieces(&mut deflating(), f.chunks(1)), (vec![Ev::Compressed(true, vec![0xff, 0xfe])], None));
    }

    #[test]
    fn rsv1_is_refused_where_it_has_no_meaning() {
        let m = [9, 8, 7, 6];
        // Not negotiated.
        let mut f = client_frame(true, 0x1, b"x", m, Len::Minimal);
        f[0] |= 0x40;
        assert_eq!(run_whole(&f).1, Some(WsError::Protocol("reserved bits set")));
        // On a control frame.
        let mut p = client_frame(true, 0x9, b"x", m, Len::Minimal);
        p[0] |= 0x40;
        assert_eq!(run_pieces(&mut deflating(), [&p[..]]).1, Some(WsError::Protocol("reserved bits set")));
        // On a continuation frame.
        let mut s = client_frame(false, 0x1, b"a", m, Len::Minimal);
        let mut c = client_frame(true, 0x0, b"b", m, Len::Minimal);
        c[0] |= 0x40;
        s.extend(c);
        assert_eq!(run_pieces(&mut deflating(), [&s[..]]).1, Some(WsError::Protocol("reserved bits set")));
        // RSV2 / RSV3 stay reserved.
        for bit in [0x20u8, 0x10] {
            let mut f = client_frame(true, 0x1, b"x", m, Len::Minimal);
            f[0] |= bit;
            assert_eq!(run_pieces(&mut deflating(), [&f[..]]).1, Some(WsError::Protocol("reserved bits set")));
        }
    }

    #[test]
    fn compressed_frame_sets_rsv1() {
        let f = compressed_frame(Opcode::Text, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(&f[..2], &[0xc1, 0x07]);
    }
}
