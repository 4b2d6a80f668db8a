//! The chunked transfer coding (RFC 9112 §7.1): [`ChunkedDecoder`] for request bodies, and
//! [`chunk`] / [`LAST_CHUNK`] for response bodies.
//!
//! Called by: the HTTP transport (decoding a request body as its bytes arrive), the
//! streaming transports (encoding each message once for all subscribers), and the load
//! generator (decoding responses).
//!
//! Never: buffers wire bytes of its own (the decoder is a byte-level state machine whose
//! only state is a few counters), lets the decoded body pass `max_body` or the framing
//! overhead grow without bound, or panics on any input.

use bytes::Bytes;

use super::head::{HttpError, HttpLimits};
use super::is_tchar;

/// Longest chunk-size line (size, extensions, CRLF) accepted; extensions are ignored, so
/// this only stops a client from streaming them forever.
const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section accepted (it is read and dropped) → 431.
const MAX_TRAILERS: usize = 16384;
/// Framing bytes (size lines, CRLFs, trailers) accepted per body, at least: with at most
/// `max(max_body, this)` of them, the whole chunked body on the wire stays under
/// `2 × max_body + 64 KiB` even when a client sends 1-byte chunks with long extensions.
const MIN_FRAMING_BUDGET: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before the first hex digit of a chunk size.
    SizeStart,
    /// In the hex digits of a chunk size.
    Size,
    /// Whitespace after the size (BWS before `;`).
    SizeWs,
    /// In chunk extensions, up to CR.
    Ext,
    /// After the CR that ends the size line.
    SizeLf,
    /// In chunk data, this many bytes left.
    Data(usize),
    /// After chunk data, expecting CR then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// In a trailer field line, up to CR.
    TrailerLine,
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    Done,
    Failed(HttpError),
}

/// Incremental decoder of a chunked request body (RFC 9112 §7.1), bounded by a body limit.
///
/// Feed it the bytes after the head as they arrive; it consumes everything it is given until
/// the body ends, so the caller keeps no bytes of its own, and when done it reports how many
/// bytes belonged to the body (what is left is the next pipelined request). Keep one decoder
/// (and one output buffer) per body across reads and pass each byte exactly once: the work
/// is then linear in the body's size however it is split (see [`ChunkedDecoder::feed`]).
/// Chunk extensions and trailer fields are checked for control bytes, bounded, and ignored.
/// The framing overhead is bounded too, so the bytes on the wire stay under
/// `2 × max_body + 64 KiB` (more → [`HttpError::BodyTooLarge`]). After an error it returns
/// the same error on every call.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    max_body: usize,
    /// Decoded bytes so far.
    total: usize,
    /// Size accumulated from the hex digits read so far.
    size: usize,
    /// Bytes of the current size line, or of the trailer section, to bound them.
    line: usize,
    /// Framing bytes (everything but chunk data) left before the body counts as too large.
    framing_left: usize,
}

impl Default for ChunkedDecoder {
    /// A decoder bounded by the default [`HttpLimits::max_body`] (1 MiB).
    fn default() -> Self {
        ChunkedDecoder::new(HttpLimits::default().max_body)
    }
}

impl ChunkedDecoder {
    /// A decoder that fails with [`HttpError::BodyTooLarge`] once the decoded body would
    /// exceed `max_body` bytes; a chunk whose declared size does not fit fails at its size line.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::SizeStart,
            max_body,
            total: 0,
            size: 0,
            line: 0,
            framing_left: max_body.max(MIN_FRAMING_BUDGET),
        }
    }

    /// Whether the last chunk and trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Bytes of body decoded so far.
    pub fn decoded_len(&self) -> usize {
        self.total
    }

    /// Decodes `buf`, the next bytes of the body, appending the chunk data in it to `out`.
    /// Returns `(consumed, done)`.
    ///
    /// Incremental contract:
    /// - Pass only bytes not passed before. The decoder keeps its position between calls, so
    ///   a caller reading the body in pieces keeps this decoder and its `out` across reads and
    ///   feeds each read's new bytes; re-feeding earlier bytes would parse them a second time
    ///   (and fail, or decode garbage).
    /// - `done == false`: the body is incomplete and all of `buf` was consumed
    ///   (`consumed == buf.len()`), even when it ends inside a chunk-size line, extension,
    ///   CRLF or trailer field. Such a split token is carried in the decoder's state (a few
    ///   counters), not in bytes, so the caller keeps nothing back and never offers these
    ///   bytes again.
    /// - `done == true`: the body ended at `buf[consumed - 1]`; `buf[consumed..]` belongs to
    ///   what follows (the next pipelined request). Later calls return `Ok((0, true))`.
    /// - Each byte of `buf` is examined once, so a call costs `O(buf.len())` plus the copy
    ///   into `out`, and a whole body costs `O(body length)` however it is split: the sum of
    ///   `consumed` over the calls equals the body's length on the wire.
    /// - `max_body` is enforced as soon as a chunk-size line declares a chunk that would take
    ///   the decoded total past it, before any of that chunk's data is appended, so
    ///   [`ChunkedDecoder::decoded_len`] (the sum of what was appended to `out` over all
    ///   calls) never exceeds `max_body`.
    /// - `Err(e)`: the body is rejected; some data may already have been appended to `out`.
    ///   Every later call returns the same error without looking at its input. Answer with
    ///   `e.status()` and close, since the framing of what follows is unknown.
    pub fn feed(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HttpError> {
        match self.state {
            ChunkState::Done => return Ok((0, true)),
            ChunkState::Failed(e) => return Err(e),
            _ => {}
        }
        let mut i = 0;
        while i < buf.len() {
            if let ChunkState::Data(left) = self.state {
                let n = left.min(buf.len() - i);
                out.extend_from_slice(&buf[i..i + n]);
                i += n;
                self.total += n;
                self.state = if n == left { ChunkState::DataCr } else { ChunkState::Data(left - n) };
                continue;
            }
            let b = buf[i];
            i += 1;
            if let Err(e) = self.step(b) {
                self.state = ChunkState::Failed(e);
                return Err(e);
            }
            if self.state == ChunkState::Done {
                return Ok((i, true));
            }
        }
        Ok((i, false))
    }

    /// One byte of framing (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        use ChunkState::*;
        const BAD_SIZE: HttpError = HttpError::BadRequest("invalid chunk size");
        const BAD_CRLF: HttpError = HttpError::BadRequest("missing CRLF after chunk");
        const BAD_TRAILER: HttpError = HttpError::BadRequest("invalid trailer field");
        // Without this, tiny chunks with long extensions would let the wire size run far past
        // max_body while the decoded size stays under it.
        self.framing_left = self.framing_left.checked_sub(1).ok_or(HttpError::BodyTooLarge)?;
        match self.state {
            SizeStart | Size | SizeWs | Ext | SizeLf => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(HttpError::BadRequest("chunk size line too long"));
                }
            }
            TrailerStart | TrailerLine | TrailerLf | EndLf => {
                self.line += 1;
                if self.line > MAX_TRAILERS {
                    return Err(HttpError::HeadersTooLarge);
                }
            }
            _ => {}
        }
        self.state = match (self.state, b) {
            (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                let budget = self.max_body - self.total;
                // Reject a declared size over the budget before any of its data arrives.
                match self.size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                    Some(size) if size <= budget => self.size = size,
                    _ => return Err(HttpError::BodyTooLarge),
                }
                Size
            }
            (SizeStart, _) => return Err(BAD_SIZE),
            (Size | SizeWs, b' ' | b'\t') => SizeWs,
            (Size | SizeWs, b';') => Ext,
            (Size | SizeWs | Ext, b'\r') => SizeLf,
            (Size | SizeWs, _) => return Err(BAD_SIZE),
            // chunk-ext: tokens and quoted strings; we skip them but refuse control bytes.
            (Ext, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => Ext,
            (Ext, _) => return Err(HttpError::BadRequest("invalid chunk extension")),
            (SizeLf, b'\n') => {
                let size = std::mem::take(&mut self.size);
                self.line = 0;
                if size == 0 {
                    TrailerStart
                } else {
                    Data(size)
                }
            }
            (SizeLf, _) => return Err(BAD_SIZE),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => SizeStart,
            (DataCr | DataLf, _) => return Err(BAD_CRLF),
            (TrailerStart, b'\r') => EndLf,
            // A trailer field line starts with a field-name token (no obs-fold, §5.2).
            (TrailerStart, _) if is_tchar(b) => TrailerLine,
            (TrailerStart, _) => return Err(BAD_TRAILER),
            (TrailerLine, b'\r') => TrailerLf,
            (TrailerLine, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => TrailerLine,
            (TrailerLine, _) => return Err(BAD_TRAILER),
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerLf, _) => return Err(BAD_TRAILER),
            (EndLf, b'\n') => Done,
            (EndLf, _) => return Err(BAD_TRAILER),
            (Data(_) | Done, _) => self.state,
            (Failed(e), _) => return Err(e),
        };
        Ok(())
    }
}

/// The last chunk and empty trailer section that end a chunked response (RFC 9112 §7.1).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// One chunk of a chunked response: `<hex size>\r\n<data>\r\n` (RFC 9112 §7.1). Encode once
/// and queue the same bytes to every subscriber. Empty `data` gives empty bytes, since a
/// zero-size chunk would end the body; end it with [`LAST_CHUNK`].
pub fn chunk(data: &[u8]) -> Bytes {
    if data.is_empty() {
        return Bytes::new();
    }
    let mut out = Vec::with_capacity(data.len() + 20);
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut i = digits.len();
    while n > 0 {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    // ---- chunked bodies ----

    fn decode_all(max: usize, input: &[u8]) -> Result<(usize, Vec<u8>), HttpError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let (n, done) = d.feed(input, &mut out)?;
        assert!(done, "not done on {:?}", String::from_utf8_lossy(input));
        assert!(d.is_done());
        assert_eq!(d.decoded_len(), out.len());
        Ok((n, out))
    }

    pub(in crate::proto::http) const CHUNKED: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        (b"A\r\n0123456789\r\na\r\nabcdefghij\r\n000\r\n\r\n", b"0123456789abcdefghij"),
        (b"5;name=value;flag\r\nhello\r\n0;last\r\n\r\n", b"hello"),
        (b"5 ; q=\"a b\"\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\t\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n", b"abc"),
        (b"1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n", b"\r\n"),
    ];

    #[test]
    fn chunked_whole() {
        for (input, want) in CHUNKED {
            let (n, out) = decode_all(1024, input).unwrap();
            assert_eq!((n, &out[..]), (input.len(), *want));
        }
    }

    #[test]
    fn chunked_split_at_every_byte() {
        for (input, want) in CHUNKED {
            for cut in 0..=input.len() {
                let mut d = ChunkedDecoder::new(1024);
                let mut out = Vec::new();
                let (n, done) = d.feed(&input[..cut], &mut out).unwrap();
                assert_eq!((n, done), (cut, cut == input.len()), "{:?} cut {cut}", String::from_utf8_lossy(input));
                if cut < input.len() {
                    let (m, done) = d.feed(&input[cut..], &mut out).unwrap();
                    assert_eq!((m, done), (input.len() - cut, true));
                }
                assert_eq!(&out[..], *want);
            }
            // One byte at a time.
            let mut d = ChunkedDecoder::new(1024);
            let mut out = Vec::new();
            for (i, b) in input.iter().enumerate() {
                let (n, done) = d.feed(std::slice::from_ref(b), &mut out).unwrap();
                assert_eq!((n, done), (1, i + 1 == input.len()));
            }
            assert_eq!(&out[..], *want);
        }
    }

    /// A 1.2 MB body of mixed chunk sizes, extensions and trailers, plus a pipelined request.
    fn big_body() -> (Vec<u8>, Vec<u8>) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        let mut i = 0usize;
        while want.len() < 1_200_000 {
            // Sizes 1..=4096 with a few extensions, so every token gets split somewhere.
            let n = 1 + (i * 7919) % 4096;
            let data: Vec<u8> = (0..n).map(|k| (k + i) as u8).collect();
            if i.is_multiple_of(5) {
                wire.extend_from_slice(format!("{n:X};ext=\"v {i}\"\r\n").as_bytes());
                wire.extend_from_slice(&data);
                wire.extend_from_slice(b"\r\n");
            } else {
                wire.extend_from_slice(&chunk(&data));
            }
            want.extend_from_slice(&data);
            i += 1;
        }
        wire.extend_from_slice(b"0;end\r\nX-Sum: 1\r\nX-Other: two\r\n\r\n");
        (wire, want)
    }

    #[test]
    fn chunked_incremental_is_linear() {
        let (body, want) = big_body();
        let mut wire = body.clone();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let max = 2 << 20;
        // One call.
        let mut d = ChunkedDecoder::new(max);
        let mut whole = Vec::new();
        assert_eq!(d.feed(&wire, &mut whole), Ok((body.len(), true)));
        assert_eq!(whole, want);
        // One byte per call, each byte passed exactly once, decoder and output kept across calls.
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut passed = 0;
        let mut consumed = 0;
        let mut done = false;
        while !done {
            let (n, fin) = d.feed(&wire[passed..passed + 1], &mut out).unwrap();
            assert_eq!(n, 1, "byte {passed}");
            assert_eq!(fin, passed + 1 == body.len(), "done only at the body's last byte ({passed})");
            passed += 1;
            consumed += n;
            done = fin;
        }
        assert_eq!((consumed, passed), (body.len(), body.len()));
        assert_eq!(out, whole);
        assert_eq!(d.decoded_len(), want.len());
        assert_eq!(d.feed(&wire[passed..], &mut out), Ok((0, true)));
        // Uneven reads (1 to 1500 bytes): the same again, and consumed sums to the wire length.
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let (mut at, mut step) = (0, 1usize);
        let (mut consumed, mut calls) = (0, 0);
        loop {
            let end = (at + step).min(wire.len());
            let (n, fin) = d.feed(&wire[at..end], &mut out).unwrap();
            consumed += n;
            calls += 1;
            if fin {
                assert_eq!(&wire[at + n..end], &wire[body.len()..end]);
                break;
            }
            assert_eq!(n, end - at);
            at = end;
            step = step * 31 % 1499 + 1;
        }
        assert!(calls > 1000, "{calls}");
        assert_eq!(consumed, body.len());
        assert_eq!(out, want);
    }

    #[test]
    fn chunked_incremental_limit() {
        // The limit trips at the size line that would pass it, fed a byte at a time, with
        // nothing of that chunk appended: decoded output never exceeds max_body.
        let wire = b"6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(10);
        let mut out = Vec::new();
        let mut failed_at = None;
        for (i, b) in wire.iter().enumerate() {
            match d.feed(std::slice::from_ref(b), &mut out) {
                Ok((1, false)) => {}
                Err(e) => {
                    assert_eq!(e, HttpError::BodyTooLarge);
                    failed_at = Some(i);
                    break;
                }
                other => panic!("byte {i}: {other:?}"),
            }
        }
        assert_eq!(failed_at, Some(11), "at the '5' of the second size line");
        assert_eq!((out.as_slice(), d.decoded_len()), (&b"abcdef"[..], 6));
        assert_eq!(d.feed(b"ghijk", &mut out), Err(HttpError::BodyTooLarge));
        // A size accumulated over several reads ("1" then "0" = 16 > 10) trips on its last digit.
        let mut d = ChunkedDecoder::new(10);
        assert_eq!(d.feed(b"1", &mut Vec::new()), Ok((1, false)));
        assert_eq!(d.feed(b"0", &mut Vec::new()), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn chunked_leaves_pipelined_bytes() {
        let input = b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (n, out) = decode_all(1024, input).unwrap();
        assert_eq!((&out[..], &input[n..]), (&b"hi"[..], &b"GET / HTTP/1.1\r\n"[..]));
        let mut d = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        d.feed(input, &mut out).unwrap();
        assert_eq!(d.feed(b"more", &mut out), Ok((0, true)));
    }

    #[test]
    fn chunked_limits() {
        // Exactly at the limit is fine, one over is 413, declared before any data arrives.
        assert_eq!(decode_all(5, b"5\r\nhello\r\n0\r\n\r\n").unwrap().1, b"hello");
        let mut d = ChunkedDecoder::new(5);
        assert_eq!(d.feed(b"6\r\n", &mut Vec::new()), Err(HttpError::BodyTooLarge));
        let mut d = ChunkedDecoder::new(5);
        assert_eq!(d.feed(b"3\r\nabc\r\n3\r", &mut Vec::new()), Err(HttpError::BodyTooLarge));
        // Errors stick.
        assert_eq!(d.feed(b"\nabc", &mut Vec::new()), Err(HttpError::BodyTooLarge));
        assert_eq!(d.feed(b"", &mut Vec::new()), Err(HttpError::BodyTooLarge));
        // A size that overflows usize.
        let mut d = ChunkedDecoder::new(usize::MAX);
        assert_eq!(d.feed(b"fffffffffffffffffffff\r\n", &mut Vec::new()), Err(HttpError::BodyTooLarge));
        // Default: 1 MiB.
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"100001\r\n", &mut Vec::new()), Err(HttpError::BodyTooLarge));
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"100000\r\n", &mut Vec::new()), Ok((8, false)));
        // Framing overhead is bounded: 1-byte chunks with 4000-byte extensions hit 413 once
        // the framing passes max(max_body, 64 KiB), long before max_body bytes are decoded.
        let tiny_chunk = [&b"1;"[..], &b"e".repeat(4000), b"\r\nx\r\n"].concat();
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut wire = 0;
        let err = loop {
            match d.feed(&tiny_chunk, &mut out) {
                Ok((n, false)) => wire += n,
                Ok((_, true)) => panic!("no last chunk was sent"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, HttpError::BodyTooLarge);
        assert!(wire <= 2 << 20 && out.len() < 300, "{wire} {}", out.len());
        // ...while ordinary small chunks of a large body stay well within it.
        let mut wire = Vec::new();
        for _ in 0..(1 << 20) / 64 {
            wire.extend_from_slice(&chunk(&[b'z'; 64]));
        }
        wire.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode_all(1 << 20, &wire).unwrap().1.len(), 1 << 20);
        // Leading zeros and extensions are bounded.
        let zeros = [&b"0".repeat(5000)[..], b"\r\n\r\n"].concat();
        assert_eq!(ChunkedDecoder::new(10).feed(&zeros, &mut Vec::new()).unwrap_err().status(), 400);
        let ext = [&b"1;"[..], &b"x".repeat(5000), b"\r\na\r\n0\r\n\r\n"].concat();
        assert_eq!(ChunkedDecoder::new(10).feed(&ext, &mut Vec::new()).unwrap_err().status(), 400);
        let trailers = [&b"0\r\n"[..], &b"X: y\r\n".repeat(3000), b"\r\n"].concat();
        assert_eq!(ChunkedDecoder::new(10).feed(&trailers, &mut Vec::new()), Err(HttpError::HeadersTooLarge));
    }

    #[test]
    fn chunked_malformed() {
        let cases: &[&[u8]] = &[
            b"z\r\n",
            b"\r\n",
            b"-1\r\n",
            b"0x5\r\nhello\r\n",
            b" 5\r\nhello\r\n",
            b"5 x\r\n",
            b"5\nhello\r\n",
            b"5\r\r\n",
            b"5\r\nhelloXY",
            b"5\r\nhello\n0\r\n\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"5;a\nb\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\n Folded: y\r\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"0\r\n\rX",
        ];
        for case in cases {
            let got = ChunkedDecoder::new(100).feed(case, &mut Vec::new());
            assert!(matches!(got, Err(HttpError::BadRequest(_))), "{:?}: {got:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn chunk_encoding() {
        assert_eq!(&chunk(b"hello")[..], b"5\r\nhello\r\n");
        assert_eq!(&chunk(&[b'x'; 26])[..3], b"1a\r");
        assert_eq!(&chunk(&vec![0u8; 0x1000])[..6], b"1000\r\n");
        assert!(chunk(b"").is_empty());
        // Round trip through the decoder.
        let mut wire = Vec::new();
        for part in [&b"hello "[..], &[b'w'; 300], b"!"] {
            wire.extend_from_slice(&chunk(part));
        }
        wire.extend_from_slice(LAST_CHUNK);
        let (n, out) = decode_all(1024, &wire).unwrap();
        assert_eq!((n, out.len()), (wire.len(), 307));
    }
}
