//! Fuzz target logic for Herald's pure parsers, shared by the cargo-fuzz binaries
//! (tests/fuzz/fuzz_targets/*.rs) and the main crate's regression test
//! (tests/fuzz_regressions.rs), which replays tests/fuzz/seeds/<target>/* and
//! tests/fuzz/crashes/<target>/* through the same functions.
//!
//! Each target takes arbitrary bytes and panics (assert) when an invariant of the code under
//! test breaks. A panic inside herald itself is a bug too. The first byte(s) of an input
//! usually pick limits and split points; the layout is documented on each target.
//!
//! Depends only on `herald`, `serde`, `serde_json` and `bytes` (dependencies of the main crate,
//! so available to its tests, and of the fuzz crate).
#![allow(dead_code)]

use std::borrow::Cow;

use herald::hub::envelope::{envelope, iframe_chunk, messages_body, script_safe, sse_event, valid_callback};
use herald::hub::{check_channel, parse_channels};
use herald::proto::centrifugo::{split_commands, Command};
use herald::proto::http::{parse_head, percent_decode, query_param, BodyKind, ChunkedDecoder, HttpError, HttpLimits};
use herald::proto::jwt::{decode_unverified, sign_hs256, Secret, TokenError, Verifier};
use herald::proto::utf8::Utf8Validator;
use herald::proto::ws::{accept_key, close_frame, frame, valid_key, Decoder, Opcode, WsError, WsEvent, WsLimits};

/// A fuzz target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name: the directory names under seeds/ and crashes/.
pub const TARGETS: &[Target] = &[
    ("http_head", http_head),
    ("chunked", chunked),
    ("ws_decoder", ws_decoder),
    ("ws_deflate", ws_deflate),
    ("utf8", utf8),
    ("query", query),
    ("channel", channel),
    ("sse", sse),
    ("since", since),
    ("cf_command", cf_command),
    ("cf_token", cf_token),
    ("cf_config", cf_config),
];

// ---------------------------------------------------------------------------------------
// Input helpers
// ---------------------------------------------------------------------------------------

/// Reads the leading control bytes of an input; missing bytes read as 0.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | u64::from(self.byte());
        }
        v
    }

    /// A split spec: one byte `k` (number of cuts, `k % 8`), then `k` piece lengths
    /// (`0..=63` each). The stream is what follows.
    fn splits(&mut self) -> Vec<usize> {
        let k = self.byte() % 8;
        (0..k).map(|_| usize::from(self.byte() % 64)).collect()
    }

    fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Cuts `stream` into pieces of the given lengths (clamped), then the remainder.
fn pieces<'a>(stream: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(lens.len() + 1);
    let mut at = 0;
    for &l in lens {
        let end = (at + l).min(stream.len());
        out.push(&stream[at..end]);
        at = end;
    }
    out.push(&stream[at..]);
    out
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// ---------------------------------------------------------------------------------------
// http_head: parse_head with small limits, then the chunked body if any
// ---------------------------------------------------------------------------------------

/// Layout: `[limits byte] [request bytes...]`.
///
/// Checks: no panic; `Ok(None)` only below `max_header_bytes`; a complete head is within the
/// limits, ends in CRLFCRLF at `head_len <= buf.len()`, parses the same from
/// `buf[..head_len]`, and every shorter prefix of it is `Ok(None)` (a request arriving in
/// pieces is never rejected when it would be accepted whole); header values hold no CR/LF;
/// the framing is consistent. A chunked body is then fed to [`ChunkedDecoder`] whole and in
/// pieces.
pub fn http_head(data: &[u8]) {
    let mut input = Input { data };
    let l = input.byte();
    let limits = HttpLimits {
        max_request_line: [8192, 16, 32, 64][usize::from(l & 3)],
        max_headers: [64, 0, 1, 4, 100, 3, 2, 8][usize::from(l >> 2 & 7)],
        max_header_bytes: [16384, 64, 128, 512][usize::from(l >> 5 & 3)],
        max_body: [1 << 20, 16][usize::from(l >> 7)],
    };
    let buf = input.rest();
    match parse_head(buf, &limits) {
        Ok(None) => assert!(buf.len() < limits.max_header_bytes, "incomplete head at or over max_header_bytes"),
        Err(e) => {
            assert!(matches!(e.status(), 400 | 413 | 414 | 431 | 501), "{e:?}");
            assert!(!e.message().is_empty());
        }
        Ok(Some(head)) => {
            let n = head.head_len;
            assert!(n > 0 && n <= buf.len(), "head_len {n} of {}", buf.len());
            assert!(n <= limits.max_header_bytes);
            assert!(buf[..n].ends_with(b"\r\n\r\n"));
            assert!(head.headers.len() <= limits.max_headers);
            assert!(head.method_str.len() + head.path.len() + head.query.len() + 10 <= limits.max_request_line);
            assert!(head.path == "*" || head.path.starts_with('/'), "path {:?}", head.path);
            assert!(!head.path.contains(['?', '#']) && !head.query.contains('#'));
            assert!(head.minor_version <= 1);
            for (name, value) in &head.headers {
                assert!(!name.is_empty());
                assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n'), "CR/LF in header value");
            }
            match head.body {
                BodyKind::Length(len) => assert!(len <= limits.max_body),
                BodyKind::Chunked => assert_eq!(head.minor_version, 1),
                BodyKind::None => {}
            }
            if head.minor_version == 1 {
                assert_eq!(head.headers.iter().filter(|(h, _)| h.eq_ignore_ascii_case("host")).count(), 1);
            }
            // The accessors must not panic.
            let _ = (head.header_str("host"), head.expects_continue(), head.header_has_token("connection", "close"));
            let _ = query_param(head.query, "cid");
            // Same head from exactly its own bytes.
            let again = parse_head(&buf[..n], &limits);
            assert_eq!(format!("{again:?}"), format!("{:?}", Ok::<_, HttpError>(Some(head.clone()))));
            // Every prefix is merely incomplete.
            for k in (0..n).filter(|&k| k < 24 || k + 8 > n || k % 17 == 0) {
                let p = parse_head(&buf[..k], &limits);
                assert!(matches!(p, Ok(None)), "prefix of {k}/{n} bytes of an accepted head gave {p:?}");
            }
            if head.body == BodyKind::Chunked {
                let rest = &buf[n..];
                let lens: Vec<usize> = rest.iter().take(6).map(|&b| usize::from(b % 13)).collect();
                chunked_check(limits.max_body, rest, &lens);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// chunked: ChunkedDecoder, split-invariance and a reference grammar
// ---------------------------------------------------------------------------------------

/// Layout: `[max_body selector] [split spec] [body bytes...]`.
pub fn chunked(data: &[u8]) {
    let mut input = Input { data };
    let max_body = [1 << 20, 0, 1, 16, 100, 4096, 65536, 3][usize::from(input.byte() & 7)];
    let lens = input.splits();
    chunked_check(max_body, input.rest(), &lens);
}

type ChunkedOutcome = (Vec<u8>, Result<(usize, bool), HttpError>);

/// Feeds `pieces` in order like the reactor does; checks the per-call contract.
fn chunked_run(max_body: usize, pieces: &[&[u8]]) -> ChunkedOutcome {
    let mut d = ChunkedDecoder::new(max_body);
    let mut out = Vec::new();
    let mut consumed = 0;
    for p in pieces {
        match d.feed(p, &mut out) {
            Ok((n, done)) => {
                assert!(n <= p.len());
                assert_eq!(done, d.is_done());
                assert_eq!(d.decoded_len(), out.len());
                assert!(out.len() <= max_body, "decoded {} > max_body {max_body}", out.len());
                consumed += n;
                if done {
                    assert_eq!(d.feed(b"0\r\n\r\n", &mut out), Ok((0, true)), "feed after done");
                    return (out, Ok((consumed, true)));
                }
                assert_eq!(n, p.len(), "not done but did not consume everything");
            }
            Err(e) => {
                assert!(out.len() <= max_body);
                assert_eq!(d.feed(b"0\r\n\r\n", &mut out), Err(e), "error is not sticky");
                return (out, Err(e));
            }
        }
    }
    (out, Ok((consumed, false)))
}

fn chunked_check(max_body: usize, stream: &[u8], lens: &[usize]) {
    let whole = chunked_run(max_body, &[stream]);
    let split = chunked_run(max_body, &pieces(stream, lens));
    assert_eq!(whole, split, "chunked decode depends on how the bytes are split");
    let (out, result) = whole;
    match result {
        Ok((consumed, true)) => {
            // Wire bytes stay bounded: data plus at most max(max_body, 64 KiB) of framing.
            assert!(consumed <= max_body + max_body.max(64 * 1024));
            assert_eq!(ref_chunked(stream), RefChunked::Done(out, consumed));
        }
        Ok((_, false)) => assert_eq!(ref_chunked(stream), RefChunked::Incomplete, "decoder wants more"),
        Err(HttpError::BadRequest(m)) if m != "chunk size line too long" => {
            assert_eq!(ref_chunked(stream), RefChunked::Invalid, "decoder rejected ({m}) what the grammar accepts");
        }
        Err(_) => {}
    }
}

#[derive(Debug, PartialEq)]
enum RefChunked {
    Done(Vec<u8>, usize),
    Incomplete,
    Invalid,
}

/// An independent, unbounded reading of the chunked grammar that [`ChunkedDecoder`]
/// implements (RFC 9112 §7.1): `1*HEXDIG *(SP/HTAB) [";" ext] CRLF`, data, CRLF, ...,
/// `0` line, trailer lines starting with a tchar, empty line. Extension and trailer bytes
/// are HTAB or 0x20..=0xFF except DEL.
fn ref_chunked(b: &[u8]) -> RefChunked {
    use RefChunked::*;
    let text = |c: u8| c == b'\t' || (c >= 0x20 && c != 0x7f);
    let tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let mut i = 0;
    let mut out = Vec::new();
    // Returns Some(result) to stop, None when byte `c` at `i` is fine.
    macro_rules! expect {
        ($ok:expr) => {
            match b.get(i) {
                None => return Incomplete,
                Some(&c) if $ok(c) => i += 1,
                Some(_) => return Invalid,
            }
        };
    }
    loop {
        let start = i;
        let mut size: u128 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_hexdigit() {
                break;
            }
            size = (size * 16 + u128::from((c as char).to_digit(16).unwrap_or(0))).min(u128::from(u64::MAX));
            i += 1;
        }
        if i == b.len() {
            return Incomplete;
        }
        if i == start {
            return Invalid;
        }
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if b.get(i) == Some(&b';') {
            while matches!(b.get(i), Some(&c) if c != b'\r' && text(c)) {
                i += 1;
            }
        }
        expect!(|c| c == b'\r');
        expect!(|c| c == b'\n');
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if b.len() - i < size {
            return Incomplete;
        }
        out.extend_from_slice(&b[i..i + size]);
        i += size;
        expect!(|c| c == b'\r');
        expect!(|c| c == b'\n');
    }
    loop {
        match b.get(i) {
            None => return Incomplete,
            Some(b'\r') => {
                i += 1;
                expect!(|c| c == b'\n');
                return Done(out, i);
            }
            Some(&c) if tchar(c) => {
                while matches!(b.get(i), Some(&c) if c != b'\r' && text(c)) {
                    i += 1;
                }
                expect!(|c| c == b'\r');
                expect!(|c| c == b'\n');
            }
            Some(_) => return Invalid,
        }
    }
}

// ---------------------------------------------------------------------------------------
// ws_decoder: split-invariance, and a reference model on well-formed frame sequences
// ---------------------------------------------------------------------------------------

/// Layout: `[mode|limits] [split spec] [rest...]`.
///
/// Mode bit 0x80 clear ("raw"): `rest` is the byte stream from the client. Set
/// ("structured"): `rest` describes frames (see [`build_frames`]) that are encoded, masked,
/// concatenated, and the decoder's output is compared with [`ws_model`].
///
/// Either way the stream is decoded as the reactor does (append what arrived, call `decode`
/// until it returns `(None, 0)`, drop the consumed prefix), once whole and once in the
/// pieces of the split spec: the events, the error and the bytes left must be the same.
pub fn ws_decoder(data: &[u8]) {
    let mut input = Input { data };
    let l = input.byte();
    let limits = WsLimits {
        max_frame: [1 << 20, 125, 126, 300, 0, 7, 65535, 65536][usize::from(l & 7)],
        max_message: [1 << 20, 300, 126, 10, 0, 127, 1000, 65536][usize::from(l >> 3 & 7)],
    };
    let lens = input.splits();
    let rest = input.rest();
    let (stream, model) = if l & 0x80 != 0 {
        let frames = build_frames(rest);
        let mut stream = Vec::new();
        for f in &frames {
            encode_frame(f, &mut stream);
        }
        (stream, Some(ws_model(&frames, limits)))
    } else {
        (rest.to_vec(), None)
    };
    let whole = ws_run(limits, &[&stream]);
    let split = ws_run(limits, &pieces(&stream, &lens));
    assert_eq!(whole, split, "websocket decode depends on how the bytes are split");
    if let Some((events, error, in_message)) = model {
        let (got_events, got_error, left, got_in_message) = whole;
        assert_eq!(got_events, events, "events differ from the RFC 6455 model");
        assert_eq!(got_error.map(|e| e.close_code()), error.map(|e| e.close_code()), "{got_error:?} vs {error:?}");
        if error.is_none() {
            assert_eq!(left, 0, "whole frames left bytes unconsumed");
            assert_eq!(got_in_message, in_message);
        }
    }
    // The handshake helpers and encoders must not panic either.
    let _ = (valid_key(rest), accept_key(rest));
    let s = String::from_utf8_lossy(rest);
    let cf = close_frame(1000, &s);
    assert!(cf.len() <= 2 + 125 && cf[1] as usize == cf.len() - 2);
    let f = frame(Opcode::Binary, rest);
    assert!(f.len() >= rest.len() + 2);
}

/// A decoded event with its bytes copied out of the caller's buffer.
#[derive(Debug, PartialEq, Clone)]
pub enum Ev {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

type WsOutcome = (Vec<Ev>, Option<WsError>, usize, bool);

fn ws_run(limits: WsLimits, pieces: &[&[u8]]) -> WsOutcome {
    let mut d = Decoder::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for p in pieces {
        buf.extend_from_slice(p);
        loop {
            match d.decode(&mut buf) {
                Ok((ev, used)) => {
                    assert!(used <= buf.len(), "consumed {used} of {}", buf.len());
                    match ev {
                        Some(ev) => {
                            assert!(used > 0, "event without consuming");
                            events.push(own_event(ev, &buf, limits));
                        }
                        None if used == 0 => break,
                        None => {}
                    }
                    buf.drain(..used);
                }
                Err(e) => {
                    assert_eq!(d.decode(&mut buf), Err(e), "error is not sticky");
                    assert!(!e.reason().is_empty() && matches!(e.close_code(), 1002 | 1007 | 1009));
                    // What is left in the buffer after an error depends on when it was seen
                    // (fail fast on a partial frame); the connection is failed anyway.
                    return (events, Some(e), 0, d.in_message());
                }
            }
        }
    }
    (events, None, buf.len(), d.in_message())
}

fn own_event(ev: WsEvent, buf: &[u8], limits: WsLimits) -> Ev {
    match ev {
        WsEvent::Text(p) => {
            let b = p.as_slice(buf).to_vec();
            assert!(std::str::from_utf8(&b).is_ok(), "text message is not UTF-8");
            assert!(b.len() <= limits.max_message);
            Ev::Text(b)
        }
        WsEvent::Binary(p) => {
            let b = p.as_slice(buf).to_vec();
            assert!(b.len() <= limits.max_message);
            Ev::Binary(b)
        }
        WsEvent::Ping(r) => {
            assert!(r.len() <= 125);
            Ev::Ping(buf[r].to_vec())
        }
        WsEvent::Pong(r) => {
            assert!(r.len() <= 125);
            Ev::Pong(buf[r].to_vec())
        }
        // These decoders never negotiate permessage-deflate, so RSV1 is always an error.
        WsEvent::Compressed { .. } => panic!("compressed message without permessage-deflate"),
        WsEvent::Close { code, reason } => {
            let reason = buf[reason].to_vec();
            assert!(std::str::from_utf8(&reason).is_ok());
            assert!(code.is_some() || reason.is_empty());
            Ev::Close(code, reason)
        }
    }
}

/// One client frame as the structured mode describes it: the payload in plain text.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// First header byte as sent (FIN, RSV1-3, opcode).
    b0: u8,
    masked: bool,
    /// 0: 7-bit length when it fits, 1: 16-bit, 2: 64-bit.
    len_form: u8,
    mask: [u8; 4],
    payload: Vec<u8>,
}

/// Structured layout, repeated: `[b0] [flags: bit0 unmasked, bits1-2 length form]
/// [len lo] [len hi & 1] [mask x4] [payload: len bytes, or whatever is left]`.
fn build_frames(mut b: &[u8]) -> Vec<FrameSpec> {
    let mut frames = Vec::new();
    while !b.is_empty() && frames.len() < 64 {
        let mut input = Input { data: b };
        let b0 = input.byte();
        let flags = input.byte();
        let len = usize::from(input.byte()) | usize::from(input.byte() & 1) << 8;
        let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
        let rest = input.rest();
        let n = len.min(rest.len());
        frames.push(FrameSpec {
            b0,
            masked: flags & 1 == 0,
            len_form: flags >> 1 & 3,
            mask,
            payload: rest[..n].to_vec(),
        });
        b = &rest[n..];
    }
    frames
}

fn encode_frame(f: &FrameSpec, out: &mut Vec<u8>) {
    let n = f.payload.len();
    let m = if f.masked { 0x80 } else { 0 };
    out.push(f.b0);
    match f.len_form {
        0 | 3 if n <= 125 => out.push(m | n as u8),
        0 | 1 | 3 if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if f.masked {
        out.extend_from_slice(&f.mask);
        out.extend(f.payload.iter().enumerate().map(|(i, &p)| p ^ f.mask[i % 4]));
    } else {
        out.extend_from_slice(&f.payload);
    }
}

fn len7(f: &FrameSpec) -> usize {
    let n = f.payload.len();
    match f.len_form {
        0 | 3 if n <= 125 => n,
        0 | 1 | 3 if n <= 0xFFFF => 126,
        _ => 127,
    }
}

/// RFC 6455 server-side rules (§5.2-§5.6, §7.4, §8.1) applied to whole frames in order:
/// the events, the first error (compared by close code) and whether a message is open.
fn ws_model(frames: &[FrameSpec], limits: WsLimits) -> (Vec<Ev>, Option<WsError>, bool) {
    let mut events = Vec::new();
    // Kind (true = text) and bytes of the fragmented message in progress.
    let mut msg: Option<(bool, Vec<u8>)> = None;
    let protocol = WsError::Protocol("");
    for f in frames {
        let fin = f.b0 & 0x80 != 0;
        let op = f.b0 & 0x0F;
        let control = op & 0x8 != 0;
        // RSV bits, unknown opcode, fragmented control, continuation without a message (or a
        // new message inside one), unmasked, oversized control payload.
        let err = if f.b0 & 0x70 != 0
            || !matches!(op, 0 | 1 | 2 | 8 | 9 | 10)
            || (control && !fin)
            || (!control && ((op == 0) != msg.is_some()))
            || !f.masked
            || (control && len7(f) > 125)
        {
            Some(protocol)
        } else if f.payload.len() > limits.max_frame
            || (!control && msg.as_ref().map_or(0, |m| m.1.len()) + f.payload.len() > limits.max_message)
        {
            Some(WsError::TooBig)
        } else {
            None
        };
        if let Some(e) = err {
            return (events, Some(e), false);
        }
        let p = f.payload.clone();
        match op {
            9 => events.push(Ev::Ping(p)),
            10 => events.push(Ev::Pong(p)),
            8 => match p.len() {
                0 => events.push(Ev::Close(None, p)),
                1 => return (events, Some(protocol), false),
                _ => {
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                        return (events, Some(protocol), false);
                    }
                    if std::str::from_utf8(&p[2..]).is_err() {
                        return (events, Some(WsError::InvalidUtf8), false);
                    }
                    events.push(Ev::Close(Some(code), p[2..].to_vec()));
                }
            },
            _ => {
                let (text, mut bytes) = msg.take().unwrap_or((op == 1, Vec::new()));
                bytes.extend_from_slice(&p);
                if text {
                    match std::str::from_utf8(&bytes) {
                        Ok(_) => {}
                        Err(e) if e.error_len().is_none() && !fin => {}
                        Err(_) => return (events, Some(WsError::InvalidUtf8), false),
                    }
                }
                if fin {
                    events.push(if text { Ev::Text(bytes) } else { Ev::Binary(bytes) });
                } else {
                    msg = Some((text, bytes));
                }
            }
        }
    }
    (events, None, msg.is_some())
}

// ---------------------------------------------------------------------------------------
// utf8: Utf8Validator against std::str::from_utf8
// ---------------------------------------------------------------------------------------

/// Layout: `[split spec] [bytes...]`. Fed in pieces, the validator must fail exactly at the
/// first piece after which the bytes so far are no longer a prefix of valid UTF-8, and end
/// complete exactly when std accepts the whole input.
pub fn utf8(data: &[u8]) {
    let mut input = Input { data };
    let lens = input.splits();
    let stream = input.rest();
    let mut v = Utf8Validator::new();
    let mut fed = 0;
    let mut failed = false;
    for p in pieces(stream, &lens) {
        fed += p.len();
        let std_prefix = std::str::from_utf8(&stream[..fed]);
        let not_a_prefix = matches!(std_prefix, Err(e) if e.error_len().is_some());
        match v.feed(p) {
            Ok(()) => assert!(!not_a_prefix, "accepted {:?}, not a UTF-8 prefix", &stream[..fed]),
            Err(()) => {
                assert!(not_a_prefix, "rejected {:?}, a valid UTF-8 prefix", &stream[..fed]);
                assert!(v.feed(b"a").is_err(), "failure is not sticky");
                assert!(!v.is_complete());
                failed = true;
                break;
            }
        }
    }
    if !failed {
        assert_eq!(v.is_complete(), std::str::from_utf8(stream).is_ok(), "{stream:?}");
    }
    v.reset();
    assert!(v.is_complete());
    let whole = v.feed(stream).is_ok() && v.is_complete();
    assert_eq!(whole, std::str::from_utf8(stream).is_ok());
}

// ---------------------------------------------------------------------------------------
// query: percent_decode and query_param against straightforward references
// ---------------------------------------------------------------------------------------

/// Layout: UTF-8 text `NAME \n QUERY` (without the newline: the whole text is the query and
/// the name is `cid`). Non-UTF-8 inputs are skipped (queries reach these as `&str`).
pub fn query(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (name, q) = s.split_once('\n').unwrap_or(("cid", s));
    let d = percent_decode(q);
    assert_eq!(d.as_deref(), ref_percent_decode(q).as_deref(), "percent_decode({q:?})");
    if let Some(Cow::Borrowed(b)) = &d {
        assert!(!q.contains(['%', '+']) && *b == q);
    }
    assert_eq!(query_param(q, name).as_deref(), ref_query_param(q, name).as_deref(), "query_param({q:?}, {name:?})");
    for n in ["cid", "since", "callback", "last_event_id", ""] {
        assert_eq!(query_param(q, n).as_deref(), ref_query_param(q, n).as_deref());
    }
}

fn ref_percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |i: usize| b.get(i).and_then(|&c| (c as char).to_digit(16));
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn ref_query_param(q: &str, name: &str) -> Option<String> {
    q.split('&').filter(|p| !p.is_empty()).find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (ref_percent_decode(k).as_deref() == Some(name)).then(|| ref_percent_decode(v))
    })?
}

// ---------------------------------------------------------------------------------------
// channel: parse_channels, envelope, iframe_chunk, messages_body, valid_callback
// ---------------------------------------------------------------------------------------

/// Layout: `[max] [id: 8 bytes] CHANNEL-LIST \0 BODY \0 CALLBACK` (list and callback read
/// lossily as UTF-8; the body is raw bytes, as a publisher may send anything).
pub fn channel(data: &[u8]) {
    let mut input = Input { data };
    let max = usize::from(input.byte() % 10);
    let id = input.u64();
    let mut parts = input.rest().splitn(3, |&b| b == 0);
    let list = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();
    let cb = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();

    let items: Vec<&str> = list.split(',').collect();
    let ref_ok = |n: &str| {
        !n.is_empty() && n.len() <= 255 && n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:@#$/".contains(c))
    };
    for n in &items {
        assert_eq!(check_channel(n).is_ok(), ref_ok(n), "check_channel({n:?})");
    }
    let mut distinct: Vec<&str> = Vec::new();
    for n in &items {
        if !distinct.contains(n) {
            distinct.push(n);
        }
    }
    let expect_ok = !list.is_empty() && items.iter().all(|n| ref_ok(n)) && distinct.len() <= max;
    let chans = match parse_channels(&list, max) {
        Ok(v) => {
            assert!(expect_ok, "parse_channels({list:?}, {max}) accepted");
            assert_eq!(v, distinct);
            v
        }
        Err(e) => {
            assert!(!expect_ok && !e.to_string().is_empty(), "parse_channels({list:?}, {max}) rejected: {e}");
            vec!["ch".to_string()]
        }
    };

    let ch = chans[0].as_str();
    let env = envelope(id, ch, body);
    let env_str = std::str::from_utf8(&env).unwrap_or_else(|e| panic!("envelope is not UTF-8 ({e}): {env:?}"));
    assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&env).is_ok(), "envelope is not JSON: {env_str}");
    let env_value = json_value(&env);
    if let Some(v) = &env_value {
        assert_eq!(v["id"], id);
        assert_eq!(v["channel"], ch);
        let trimmed = body.trim_ascii();
        let data = match serde_json::from_slice::<serde_json::Value>(trimmed) {
            Ok(d) if !trimmed.is_empty() => d,
            _ => serde_json::Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        assert_eq!(v["data"], data, "envelope data for body {body:?}");
    }

    let chunk = iframe_chunk(&env);
    assert_eq!(count(&chunk, b"</script>"), 1, "iframe chunk: {chunk:?}");
    let (head, tail) = (b"<script>parent.handle(".as_slice(), b")</script>\n".as_slice());
    assert!(chunk.starts_with(head) && chunk.ends_with(tail));
    let inner = &chunk[head.len()..chunk.len() - tail.len()];
    script_safe_checks(inner);
    assert!(serde_json::from_slice::<serde::de::IgnoredAny>(inner).is_ok());
    if let Some(v) = &env_value {
        assert_eq!(json_value(inner).as_ref(), Some(v), "script_safe changed the value");
    }

    let last: Vec<(&str, u64)> = chans.iter().map(|c| (c.as_str(), id)).collect();
    let plain = messages_body(&[&env, &env], id & 1 == 1, &last, None);
    assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&plain).is_ok(), "{plain:?}");
    let cb_ok = valid_callback(&cb);
    let parts: Vec<&str> = cb.split('.').collect();
    let ref_cb = !cb.is_empty()
        && cb.len() <= herald::hub::envelope::CALLBACK_MAX
        && parts.len() <= 2
        && parts.iter().all(|p| {
            let b = p.as_bytes();
            !b.is_empty()
                && !b[0].is_ascii_digit()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
                && !herald::hub::envelope::CALLBACK_DENY.iter().any(|d| d == p)
        });
    assert_eq!(cb_ok, ref_cb, "valid_callback({cb:?})");
    if cb_ok {
        let js = messages_body(&[&env], false, &last[..1], Some(&cb));
        let prefix = format!("/**/{cb}(");
        assert!(js.starts_with(prefix.as_bytes()) && js.ends_with(b");"));
        let inner = &js[prefix.len()..js.len() - 2];
        script_safe_checks(inner);
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(inner).is_ok());
    }
    // script_safe on arbitrary bytes: nothing that can end a script element or comment.
    let mut out = bytes::BytesMut::new();
    script_safe(body, &mut out);
    script_safe_checks(&out);
}

/// serde_json's Value is stricter than the JSON grammar (lone surrogate escapes, numbers out
/// of f64 range, nesting over 128); JavaScript's JSON.parse accepts those, so they are not
/// failures here: `None` then.
fn json_value(b: &[u8]) -> Option<serde_json::Value> {
    match serde_json::from_slice(b) {
        Ok(v) => Some(v),
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.contains("surrogate") || m.contains("out of range") || m.contains("recursion limit"),
                "not JSON: {e}: {}",
                String::from_utf8_lossy(b)
            );
            None
        }
    }
}

fn script_safe_checks(s: &[u8]) {
    assert!(!s.iter().any(|&b| b == b'<' || b == b'>' || b == b'&'), "unescaped <, > or &: {s:?}");
    assert_eq!(count(s, "\u{2028}".as_bytes()) + count(s, "\u{2029}".as_bytes()), 0);
}

// ---------------------------------------------------------------------------------------
// sse: sse_event
// ---------------------------------------------------------------------------------------

/// Layout: `[flags: bit0 has id] [id: 8 bytes] [data...]`. Every line of the event is
/// `id: <digits>` or `data: ...`, no CR anywhere, one empty line at the very end, and the
/// data lines joined with LF give the data with CRLF and CR turned into LF.
pub fn sse(data: &[u8]) {
    let mut input = Input { data };
    let has_id = input.byte() & 1 == 1;
    let id = input.u64().to_string();
    let payload = input.rest();
    let ev = sse_event(has_id.then_some(id.as_str()), payload);
    assert!(ev.ends_with(b"\n\n"), "{ev:?}");
    assert!(!ev.contains(&b'\r'), "CR in an SSE event: {ev:?}");
    let lines: Vec<&[u8]> = ev[..ev.len() - 2].split(|&b| b == b'\n').collect();
    let mut data_lines = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(v) = line.strip_prefix(b"id: ") {
            assert!(i == 0 && has_id && v == id.as_bytes(), "line {i}: {line:?}");
        } else if let Some(v) = line.strip_prefix(b"data: ") {
            data_lines.push(v);
        } else {
            panic!("SSE line {i} is neither id: nor data: {line:?} (event {ev:?})");
        }
    }
    assert_eq!(has_id, lines[0].starts_with(b"id: "));
    let mut normalized = Vec::new();
    let mut i = 0;
    while i < payload.len() {
        match payload[i] {
            b'\r' if payload.get(i + 1) == Some(&b'\n') => {
                normalized.push(b'\n');
                i += 1;
            }
            b'\r' => normalized.push(b'\n'),
            c => normalized.push(c),
        }
        i += 1;
    }
    assert_eq!(data_lines.join(&b'\n'), normalized, "SSE data does not round-trip");
}

// ---------------------------------------------------------------------------------------
// since: the since= / Last-Event-ID list
// ---------------------------------------------------------------------------------------

/// The since= / Last-Event-ID parser under test.
pub fn since_values(query: &str, last_event_id: Option<&str>, n: usize, sse: bool) -> Result<Vec<Option<u64>>, String> {
    herald::hub::parse_since(query, last_event_id, n, sse).map_err(|e| e.to_string())
}

/// Layout: `[flags: bits0-2 channels, bit3 SSE, bit4 send Last-Event-ID] QUERY [\n HEADER]`
/// (lossy UTF-8). Runs the since logic on the raw strings, and on what parse_head makes of
/// a request carrying them.
pub fn since(data: &[u8]) {
    let mut input = Input { data };
    let flags = input.byte();
    let (n, sse, with_header) = (usize::from(flags & 7), flags & 8 != 0, flags & 16 != 0);
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    let (q, h) = match text.split_once('\n') {
        Some((q, h)) => (q, with_header.then_some(h)),
        None => (text.as_str(), None),
    };
    since_checks(q, h, n, sse);
    let mut req = format!("GET /sse/?{q} HTTP/1.1\r\nHost: x\r\n").into_bytes();
    if let Some(h) = h {
        req.extend_from_slice(format!("Last-Event-ID: {h}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    if let Ok(Some(head)) = parse_head(&req, &HttpLimits::default()) {
        since_checks(head.query, head.header_str("Last-Event-ID"), n, sse);
    }
}

fn since_checks(q: &str, h: Option<&str>, n: usize, sse: bool) {
    match since_values(q, h, n, sse) {
        Ok(v) => {
            assert_eq!(v.len(), n);
            assert!(v.iter().all(Option::is_some) || v.iter().all(Option::is_none), "{v:?}");
        }
        Err(e) => assert!(e.starts_with("since"), "{e}"),
    }
    // A plain non-zero id names a position in one channel only: refused with several
    // (issue #16); `since=0` ("from the start") applies to every channel.
    let one = since_values("since=42", None, n, sse);
    if n > 1 {
        assert!(one.as_ref().is_err_and(|e| e.contains("one per channel")), "{one:?}");
    } else {
        assert_eq!(one, Ok(vec![Some(42); n]));
    }
    assert_eq!(since_values("since=0", None, n, sse), Ok(vec![Some(0); n]));
}

// ---------------------------------------------------------------------------------------
// cf_command / cf_token: the Centrifugo client protocol (JSON commands) and JWT tokens
// ---------------------------------------------------------------------------------------

/// Layout: a WebSocket message payload as a Centrifugo client sends it (newline-delimited
/// JSON commands). Splitting yields trimmed, non-empty, newline-free commands, and decoding
/// each as a [`Command`] never panics.
pub fn cf_command(data: &[u8]) {
    let mut n = 0;
    for cmd in split_commands(data) {
        assert!(!cmd.is_empty() && !cmd.contains(&b'\n') && cmd.trim_ascii() == cmd);
        n += 1;
        if let Ok(c) = serde_json::from_slice::<Command>(cmd) {
            let _ = format!("{c:?}");
        }
    }
    assert!(n <= data.len());
}

/// Layout: `[flags] TEXT`. Flags bit0: TEXT is a token to verify (never panics; with no
/// secret always `Disabled`); clear: TEXT is claims JSON, signed with HS256 and verified
/// (never a signature or algorithm error), and a token with a damaged signature or payload
/// never verifies.
pub fn cf_token(data: &[u8]) {
    let mut input = Input { data };
    let flags = input.byte();
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    let now = 1_700_000_000;
    let secret = || Secret::new(b"fuzz-secret");
    let v = Verifier::new(Some(secret())).with_leeway(i64::from(flags >> 4));
    let channel = "news";
    if flags & 1 == 1 {
        let _ = (v.verify_connect(&text, now), v.verify_subscribe(&text, channel, now), decode_unverified(&text));
        let off = Verifier::new(None);
        assert_eq!(off.verify_connect(&text, now).err(), Some(TokenError::Disabled));
        return;
    }
    let Ok(claims) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let token = sign_hs256(&secret(), &claims);
    for e in [v.verify_connect(&token, now).err(), v.verify_subscribe(&token, channel, now).err()].into_iter().flatten()
    {
        assert!(!matches!(e, TokenError::BadSignature | TokenError::BadAlgorithm), "{e:?} for {token}");
    }
    if let Ok((_, c)) = decode_unverified(&token) {
        // Through the text the token carries (serde_json's float printing is not exact).
        let reparsed: serde_json::Value = serde_json::from_str(&claims.to_string()).unwrap_or_default();
        assert_eq!(c, reparsed);
    }
    // Damage one character of the signature (its first, which carries no padding bits) or
    // of the payload: never valid.
    let dot = token.rfind('.').unwrap_or(0);
    for at in [dot + 1, token.find('.').unwrap_or(0) + 1] {
        if at >= token.len() {
            continue;
        }
        let mut bad = token.clone().into_bytes();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap_or_default();
        assert!(v.verify_connect(&bad, now).is_err(), "damaged token verified: {bad}");
        assert!(v.verify_subscribe(&bad, channel, now).is_err(), "damaged token verified: {bad}");
    }
}

// ---------------------------------------------------------------------------------------
// cf_config: Centrifugo durations, namespace resolution, and the reply/push encoders
// ---------------------------------------------------------------------------------------

/// Layout: lossy UTF-8 `DURATION \n CHANNEL \n USER \n JSON`. Checks: `Duration::parse`
/// never panics and agrees with a plain re-parse of what it accepted; namespace resolution,
/// the private prefix and user-limited lists never panic on any channel name; every reply
/// and push encoder gives valid JSON for any channel name (they escape it) and valid JSON
/// data.
pub fn cf_config(data: &[u8]) {
    use herald::config::centrifugo::{ChannelConfig, Duration};
    use herald::proto::centrifugo::{
        client_info, error_reply, join_leave_push, pub_push, reply, subscribe_push, unsubscribe_push, Empty,
        PERMISSION_DENIED, SERVER_UNSUBSCRIBE,
    };
    let text = String::from_utf8_lossy(data).into_owned();
    let mut parts = text.splitn(4, '\n');
    let (dur, ch, user, json) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if let Some(d) = Duration::parse(dur) {
        let ser = serde_json::to_string(&d).expect("durations serialize");
        let back: Duration = serde_json::from_str(&ser).expect("a serialized duration parses");
        assert_eq!(back, d, "{dur:?} -> {ser}");
    }
    let cfg: ChannelConfig = serde_json::from_str(
        r#"{"without_namespace":{"allow_subscribe_for_client":true},
            "namespaces":[{"name":"chat","history_size":10,"history_ttl":"60s","allow_user_limited_channels":true}]}"#,
    )
    .expect("static config");
    let _ = cfg.resolve(ch);
    let _ = cfg.is_private(ch);
    if let Some(users) = cfg.limited_users(ch) {
        for u in users {
            assert!(ch.contains(u));
        }
    }
    let data_json = herald::hub::envelope::json_data(json.as_bytes());
    // Grammar, not serde_json::Value: a number like 4444e444 is valid JSON text (RFC 8259
    // leaves ranges to implementations) and is passed through as published; Value refuses
    // it as out of f64 range (found by this target).
    let valid = |b: &[u8], what: &str| {
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok() && std::str::from_utf8(b).is_ok(),
            "{what} is not JSON: {}",
            String::from_utf8_lossy(b)
        );
    };
    let info = client_info(user, "0000", Some(&data_json), None);
    valid(&info, "client_info");
    valid(&join_leave_push(ch, &info, true), "join push");
    let m = herald::proto::centrifugo::Pub {
        channel: ch,
        offset: data.len() as u64,
        data: &data_json,
        info: Some(&info),
        tags: None,
    };
    valid(&pub_push(&m, true), "pub push");
    valid(&pub_push(&m, false), "uni pub push");
    valid(&error_reply(7, PERMISSION_DENIED), "error reply");
    valid(&reply(7, "publish", &Empty), "reply");
    valid(&reply(7, ch, &Empty), "reply named by the input");
    valid(&subscribe_push(ch, b"{}", true), "subscribe push");
    valid(&unsubscribe_push(ch, SERVER_UNSUBSCRIBE, false), "unsubscribe push");
}

// ---------------------------------------------------------------------------------------
// ws_deflate: permessage-deflate negotiation and inflate/deflate (proto::ws_deflate)
// ---------------------------------------------------------------------------------------

/// First byte even: the rest is `Sec-WebSocket-Extensions` header values, one per line;
/// negotiation never panics, and what it agrees to, offered back, is agreed again (the
/// response is itself a valid offer). First byte odd: bytes 1-2 are an inflate limit
/// (big-endian), byte 3 a level, the rest a client's compressed payload: inflating never
/// panics nor passes the limit; then the rest is deflated and must inflate back to itself.
pub fn ws_deflate(data: &[u8]) {
    use herald::proto::ws_deflate::{negotiate, Deflater, InflateError, Inflater};
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let agreed = negotiate(rest.split(|&b| b == b'\n'));
        if let Some(a) = agreed {
            let again = negotiate([a.response().as_bytes()]);
            assert_eq!(again, Some(a), "the response does not negotiate to itself");
        }
        return;
    }
    if rest.len() < 3 {
        return;
    }
    let max = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let level = u32::from(rest[2] % 10);
    let payload = &rest[3..];
    let mut inf = Inflater::new();
    let mut out = Vec::new();
    match inf.inflate(payload, max, &mut out) {
        Ok(()) => assert!(out.len() <= max),
        Err(InflateError::TooBig) => assert!(out.len() <= max + 1),
        Err(InflateError::Corrupt) => {}
    }
    let mut z = Vec::new();
    Deflater::new(level.max(1)).compress(payload, &mut z);
    inf.inflate(&z, payload.len(), &mut out).expect("own deflate output inflates");
    assert_eq!(out, payload, "deflate/inflate round trip");
}
