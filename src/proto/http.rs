//! HTTP/1.1 for Herald, as a pure core over bytes: request heads, request bodies and
//! response encoding.
//!
//! Owns:
//! - [`parse_head`]: the request head (RFC 9112 §2-§5) on top of `httparse`, with Herald's
//!   limits ([`HttpLimits`]) checked on partial input too, and the message-framing rules of
//!   RFC 9112 §6 (Content-Length / Transfer-Encoding, request smuggling defences).
//! - [`ChunkedDecoder`]: the chunked transfer coding of request bodies (RFC 9112 §7.1).
//! - [`Response`], [`chunk`], [`error_response`]: response heads and bodies, encoded into one
//!   buffer each and handed out as [`bytes::Bytes`] so the same bytes can be queued to many
//!   connections.
//! - Query-string helpers ([`query_param`], [`percent_decode`]), re-exported from
//!   [`super::query`].
//!
//! Called by: the reactor's connection state machine (feeding the bytes it has read, then
//! the body bytes after `head_len`) and the transports/routes (building responses).
//!
//! Never: touches a socket, reads the clock (so no `Date` header), allocates without a bound
//! set by [`HttpLimits`], or panics on any input. A caller-supplied header value can never
//! inject a header: values holding CR, LF or other control bytes are dropped.

use std::fmt;
use std::mem::MaybeUninit;

use bytes::Bytes;

pub use super::query::{percent_decode, query_param};

/// Bounds on what a client may make the server buffer for one request.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Longest request line (method, target and version, without CRLF) → 414 URI Too Long.
    pub max_request_line: usize,
    /// Most header fields in one request → 431 Request Header Fields Too Large.
    pub max_headers: usize,
    /// Longest whole head, request line and final CRLFCRLF included → 431.
    pub max_header_bytes: usize,
    /// Largest request body (declared Content-Length or decoded chunked data) → 413.
    pub max_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_request_line: 8192, max_headers: 64, max_header_bytes: 16384, max_body: 1 << 20 }
    }
}

/// The request method. Method names are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    /// Any other valid method token; see [`Head::method_str`].
    Other,
}

impl Method {
    fn from_token(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum BodyKind {
    /// Neither Content-Length nor Transfer-Encoding: the body is empty.
    None,
    /// Exactly this many bytes follow the head (`Content-Length: 0` gives `Length(0)`).
    Length(usize),
    /// Chunked bytes follow the head; decode them with [`ChunkedDecoder`].
    Chunked,
}

/// A parsed request head, borrowing the read buffer.
#[derive(Debug, Clone)]
pub struct Head<'b> {
    /// The method; see `method_str` for the token of an [`Method::Other`].
    pub method: Method,
    /// The method token as sent, e.g. `"GET"` or `"PROPFIND"`.
    pub method_str: &'b str,
    /// The raw (not percent-decoded) path, without the query, e.g. `"/publish/"`. For an
    /// absolute-form target (`GET http://host/p?q`) this is the path part (`"/"` if empty);
    /// for `OPTIONS *` it is `"*"`.
    pub path: &'b str,
    /// The raw query without `?`, `""` if there is none. See [`query_param`].
    pub query: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order, values trimmed of surrounding whitespace.
    pub headers: Vec<(&'b str, &'b [u8])>,
    /// How the body that follows the head is framed.
    pub body: BodyKind,
    /// Whether the connection persists after this exchange (RFC 9112 §9.3): HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Bytes of the head including the final CRLFCRLF: the body (or the next pipelined
    /// request) starts at `buf[head_len..]`.
    pub head_len: usize,
}

impl<'b> Head<'b> {
    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, v)| v)
    }

    /// [`Head::header`] as a string trimmed of spaces and tabs; `None` if absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'b str> {
        let value = std::str::from_utf8(self.header(name)?).ok()?;
        Some(value.trim_matches([' ', '\t']))
    }

    /// Whether any header called `name` lists `token` in its comma-separated value, both
    /// compared case-insensitively (RFC 9110 §5.6.1), e.g. `Connection: keep-alive, Upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).any(|&(_, v)| list_has_token(v, token))
    }

    /// Whether the client waits for `100 Continue` before sending the body (RFC 9110
    /// §10.1.1). The caller then writes [`CONTINUE_100`] first, or answers with a final status.
    pub fn expects_continue(&self) -> bool {
        self.minor_version == 1 && self.header_has_token("expect", "100-continue")
    }
}

/// What is wrong with a request, named for the fault; [`HttpError::status`] maps it to the
/// response status. After any of these the caller answers and closes the connection, since
/// the framing of what follows can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400: malformed syntax or ambiguous framing; the text says which.
    BadRequest(&'static str),
    /// 414: the request line exceeds [`HttpLimits::max_request_line`].
    UriTooLong,
    /// 431: too many header fields, or a head (or trailer section) that is too long.
    HeadersTooLarge,
    /// 413: the body exceeds [`HttpLimits::max_body`].
    BodyTooLarge,
    /// 411: for callers that require a body; [`parse_head`] never returns it, because a
    /// request without Content-Length or Transfer-Encoding has an empty body (RFC 9112 §6.3).
    LengthRequired,
    /// 501: a feature Herald does not implement (a transfer coding other than chunked,
    /// CONNECT).
    NotImplemented(&'static str),
}

impl HttpError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::UriTooLong => 414,
            HttpError::HeadersTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::LengthRequired => 411,
            HttpError::NotImplemented(_) => 501,
        }
    }

    /// A short, client-safe description, suitable for [`error_response`].
    pub fn message(&self) -> &'static str {
        match self {
            HttpError::BadRequest(m) | HttpError::NotImplemented(m) => m,
            HttpError::UriTooLong => "request line too long",
            HttpError::HeadersTooLarge => "request header fields too large",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::LengthRequired => "length required",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl std::error::Error for HttpError {}

/// Header slots kept on the stack; larger `max_headers` fall back to one heap buffer.
const STACK_HEADERS: usize = 64;

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (nothing is consumed: call again with the
/// same bytes plus more), `Ok(Some(head))` once it is complete (the body or the next request
/// starts at `head.head_len`), or the error to answer with. Limits are checked on partial
/// input too, so a client cannot make the server buffer without bound:
/// - a request line longer than `max_request_line`, complete or not → [`HttpError::UriTooLong`];
/// - more than `max_headers` fields → [`HttpError::HeadersTooLarge`];
/// - a head longer than `max_header_bytes`, or a partial one already that long → 431;
/// - `Content-Length` above `max_body` → [`HttpError::BodyTooLarge`] right away.
///
/// Framing follows RFC 9112 §6: both Content-Length and Transfer-Encoding, differing
/// Content-Length values, Transfer-Encoding in HTTP/1.0 or without `chunked` as the final
/// coding → 400; other transfer codings → 501. Bare LF line endings, obs-fold, invalid
/// tokens, and HTTP/1.1 without exactly one Host (RFC 9112 §3.2) → 400.
pub fn parse_head<'b>(buf: &'b [u8], limits: &HttpLimits) -> Result<Option<Head<'b>>, HttpError> {
    // Every field line takes at least 4 bytes ("a:\r\n"), so more slots than this can never
    // be filled by a head that fits `max_header_bytes`: it bounds the allocation below.
    let slots_len = limits.max_headers.min(limits.max_header_bytes / 4 + 1);
    let mut stack = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if slots_len <= STACK_HEADERS {
        &mut stack[..slots_len]
    } else {
        heap.resize_with(slots_len, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(None);
        }
        Err(e) => return Err(map_httparse_error(e)),
    };
    // httparse fills every field of a complete request.
    let (Some(method_str), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadRequest("malformed request line"));
    };
    // httparse allows exactly one SP between the parts (RFC 9112 §3), so the request line is
    // "METHOD SP target SP HTTP/1.x".
    if method_str.len() + target.len() + 10 > limits.max_request_line {
        return Err(HttpError::UriTooLong);
    }
    if head_len > limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge);
    }
    // httparse accepts a bare LF as a line terminator; RFC 9112 §2.2 lets a server reject it,
    // and we do, since front-end proxies disagree on it (a smuggling vector).
    if has_bare_lf(buf, head_len, req.headers) {
        return Err(HttpError::BadRequest("bare LF line ending"));
    }
    let method = Method::from_token(method_str);
    let (path, query) = split_target(method, method_str, target)?;
    let framing = Framing::scan(req.headers)?;
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, or with more than one.
    if framing.hosts > 1 || (minor_version == 1 && framing.hosts == 0) {
        return Err(HttpError::BadRequest("missing or repeated Host header"));
    }
    let body = framing.body_kind(minor_version, limits)?;
    let keep_alive =
        if minor_version == 1 { !framing.conn_close } else { framing.conn_keep_alive && !framing.conn_close };
    Ok(Some(Head {
        method,
        method_str,
        path,
        query,
        minor_version,
        headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
        body,
        keep_alive,
        head_len,
    }))
}

/// Limits on an incomplete head: the request line so far, and the head so far.
fn check_partial(buf: &[u8], limits: &HttpLimits) -> Result<(), HttpError> {
    let start = skip_empty_lines(buf);
    let line = &buf[start..];
    // Look no further than one byte past the limit plus CRLF.
    let window = &line[..line.len().min(limits.max_request_line.saturating_add(2))];
    let line_len = match window.iter().position(|&b| b == b'\n') {
        Some(lf) => lf - usize::from(lf > 0 && window[lf - 1] == b'\r'),
        None => window.len() - usize::from(window.last() == Some(&b'\r')),
    };
    if line_len > limits.max_request_line {
        return Err(HttpError::UriTooLong);
    }
    // An incomplete head of `max_header_bytes` bytes can only complete above the limit.
    if buf.len() >= limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge);
    }
    Ok(())
}

/// Length of the empty lines that may precede a request line (RFC 9112 §2.2), as httparse
/// skips them.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

fn map_httparse_error(e: httparse::Error) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::HeadersTooLarge,
        httparse::Error::HeaderName => HttpError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => HttpError::BadRequest("invalid header value"),
        httparse::Error::NewLine => HttpError::BadRequest("invalid line ending"),
        httparse::Error::Version => HttpError::BadRequest("unsupported HTTP version"),
        _ => HttpError::BadRequest("malformed request line"),
    }
}

/// Whether some line of the head ends in a bare LF.
///
/// Checks only the line ends instead of scanning every byte: in a head httparse accepted, an
/// LF can only end a line (the URI, names and values all exclude it), and the lines are the
/// leading empty lines, the request line, one line per header field (no obs-fold, no skipped
/// invalid lines) and the final empty line. So each line end sits just before a header
/// name, or in the last 4 bytes ("\r\n\r\n").
fn has_bare_lf(buf: &[u8], head_len: usize, headers: &[httparse::Header<'_>]) -> bool {
    let mut i = 0;
    while buf[i..head_len].starts_with(b"\r\n") {
        i += 2;
    }
    if buf.get(i) == Some(&b'\n') || !buf[..head_len].ends_with(b"\r\n\r\n") {
        return true;
    }
    let base = buf.as_ptr() as usize;
    headers.iter().any(|h| {
        let name_at = (h.name.as_ptr() as usize).wrapping_sub(base);
        name_at < 2 || buf.get(name_at - 2..name_at) != Some(b"\r\n")
    })
}

/// Splits a request-target (RFC 9112 §3.2) into path and query.
fn split_target<'b>(method: Method, method_str: &str, target: &'b str) -> Result<(&'b str, &'b str), HttpError> {
    if target.contains('#') {
        return Err(HttpError::BadRequest("fragment in request target"));
    }
    let path_query = if target.starts_with('/') {
        target // origin-form, by far the common case
    } else if target == "*" {
        // asterisk-form is only for a server-wide OPTIONS (RFC 9112 §3.2.4).
        return match method {
            Method::Options => Ok(("*", "")),
            _ => Err(HttpError::BadRequest("asterisk-form target without OPTIONS")),
        };
    } else if let Some(rest) = strip_http_scheme(target) {
        // absolute-form: a server MUST accept it (RFC 9112 §3.2.2); keep only path and query.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if end == 0 {
            return Err(HttpError::BadRequest("empty authority in request target"));
        }
        &rest[end..]
    } else if method_str == "CONNECT" {
        return Err(HttpError::NotImplemented("CONNECT is not supported"));
    } else {
        return Err(HttpError::BadRequest("invalid request target"));
    };
    let (path, query) = match path_query.find('?') {
        Some(q) => (&path_query[..q], &path_query[q + 1..]),
        None => (path_query, ""),
    };
    Ok((if path.is_empty() { "/" } else { path }, query))
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    let b = target.as_bytes();
    for scheme in ["http://", "https://"] {
        if b.len() >= scheme.len() && b[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// What the framing-relevant headers say, gathered in one pass before any decision, so the
/// outcome does not depend on header order.
#[derive(Default)]
struct Framing {
    content_length: Option<usize>,
    te_present: bool,
    te_chunked_count: usize,
    te_last_chunked: bool,
    te_other: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    hosts: usize,
}

impl Framing {
    fn scan(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
        let mut f = Framing::default();
        for h in headers {
            let name = h.name;
            // Dispatch on length first: most headers are rejected by one compare.
            match name.len() {
                4 if name.eq_ignore_ascii_case("host") => f.hosts += 1,
                10 if name.eq_ignore_ascii_case("connection") => {
                    for token in list_items(h.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            f.conn_close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            f.conn_keep_alive = true;
                        }
                    }
                }
                14 if name.eq_ignore_ascii_case("content-length") => f.add_content_length(h.value)?,
                17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                    f.te_present = true;
                    for coding in list_items(h.value) {
                        let chunked = coding.eq_ignore_ascii_case(b"chunked");
                        f.te_chunked_count += usize::from(chunked);
                        f.te_other |= !chunked;
                        f.te_last_chunked = chunked;
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Content-Length = 1*DIGIT (RFC 9110 §8.6). A list or repeated field is accepted only
    /// when every value is the same; otherwise the framing is ambiguous (RFC 9112 §6.3 (5)).
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::BadRequest("invalid Content-Length"));
            }
            // Saturate: any value this large is over every body limit anyway.
            let n = item.iter().fold(0usize, |n, &d| n.saturating_mul(10).saturating_add(usize::from(d - b'0')));
            match self.content_length {
                Some(prev) if prev != n => return Err(HttpError::BadRequest("conflicting Content-Length values")),
                _ => self.content_length = Some(n),
            }
        }
        Ok(())
    }

    /// The body length rules of RFC 9112 §6.3, in their order.
    fn body_kind(&self, minor_version: u8, limits: &HttpLimits) -> Result<BodyKind, HttpError> {
        if self.te_present {
            // §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
            if minor_version == 0 {
                return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"));
            }
            // §6.1, §6.3 (3): both headers are a classic smuggling vector; reject.
            if self.content_length.is_some() {
                return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"));
            }
            // §6.3 (4): without chunked last, a request body length cannot be determined.
            if !self.te_last_chunked {
                return Err(HttpError::BadRequest("chunked is not the final transfer coding"));
            }
            // §7: chunked must not be applied more than once.
            if self.te_chunked_count > 1 {
                return Err(HttpError::BadRequest("chunked applied more than once"));
            }
            // §6.1: an unknown transfer coding SHOULD get 501.
            if self.te_other {
                return Err(HttpError::NotImplemented("unsupported transfer coding"));
            }
            return Ok(BodyKind::Chunked);
        }
        match self.content_length {
            Some(n) if n > limits.max_body => Err(HttpError::BodyTooLarge),
            Some(n) => Ok(BodyKind::Length(n)),
            None => Ok(BodyKind::None),
        }
    }
}

/// The non-empty elements of a comma-separated list, trimmed of OWS (RFC 9110 §5.6.1).
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|item| !item.is_empty())
}

fn list_has_token(value: &[u8], token: &str) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

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
/// bytes belonged to the body (what is left is the next pipelined request). Chunk extensions
/// and trailer fields are checked for control bytes, bounded, and ignored. The framing
/// overhead is bounded too, so the bytes on the wire stay under `2 × max_body + 64 KiB`
/// (more → [`HttpError::BodyTooLarge`]). After an error it returns the same error on every
/// call.
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

    /// Decodes `buf`, appending body data to `out`. Returns `(consumed, done)`: when `done`
    /// is false, all of `buf` was consumed; when true, `buf[consumed..]` follows the body.
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

/// Sent before reading the body of a request that [`Head::expects_continue`].
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The last chunk and empty trailer section that end a chunked response (RFC 9112 §7.1).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The reason phrase for a status code; `""` for codes Herald does not know (an empty
/// reason phrase is valid, RFC 9112 §4).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A response head under construction; finish it with [`Response::body`],
/// [`Response::empty`] or [`Response::chunked_start`], each returning the whole encoded
/// response in one buffer.
///
/// Every response carries `Server: herald`. The builder owns the framing: `Content-Length`,
/// `Transfer-Encoding`, `Connection` and `Server` passed to [`Response::header`] are ignored.
/// Responses that never have content (1xx, 204, 304; RFC 9110 §6.4.1) get no Content-Type,
/// Content-Length, Transfer-Encoding or body.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    /// Pre-encoded "Name: value\r\n" lines added with `header`.
    headers: Vec<u8>,
    keep_alive: bool,
    http10: bool,
    head_only: bool,
}

enum BodyFraming<'a> {
    Length(&'a [u8]),
    Chunked,
}

impl Response {
    /// A response with this status, keep-alive, HTTP/1.1. A status outside 100-999 is sent
    /// as 500.
    pub fn new(status: u16) -> Self {
        Response {
            status: if (100..=999).contains(&status) { status } else { 500 },
            headers: Vec::new(),
            keep_alive: true,
            http10: false,
            head_only: false,
        }
    }

    /// Adds a header field. It is dropped, never sent, if the name is not a token or the
    /// value holds a control byte other than HTAB (so CR/LF cannot inject a header or split
    /// the response), or if the name is one the builder owns (see [`Response`]).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let value = value.trim_matches([' ', '\t']);
        let reserved = ["content-length", "transfer-encoding", "connection", "server"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r));
        if is_token(name) && is_field_value(value) && !reserved {
            push_field(&mut self.headers, name, value);
        }
        self
    }

    /// Whether the connection stays open after this response; `false` sends
    /// `Connection: close` (RFC 9112 §9.6) and the caller closes after writing it.
    pub fn keep_alive(mut self, keep: bool) -> Self {
        self.keep_alive = keep;
        self
    }

    /// Answers an HTTP/1.0 request: the status line says `HTTP/1.0`, and a kept-alive
    /// connection is announced with `Connection: keep-alive` (RFC 9112 Appendix C.2.2).
    pub fn http10(mut self, yes: bool) -> Self {
        self.http10 = yes;
        self
    }

    /// For a HEAD request: the same head as for GET (Content-Length included) but no body
    /// bytes (RFC 9110 §9.3.2).
    pub fn head_only(mut self, yes: bool) -> Self {
        self.head_only = yes;
        self
    }

    /// The response with `body`, framed by Content-Length. `content_type` is sent as
    /// Content-Type unless it is empty or invalid.
    pub fn body(self, content_type: &str, body: &[u8]) -> Bytes {
        self.finish(content_type, BodyFraming::Length(body))
    }

    /// The response without content: `Content-Length: 0`.
    pub fn empty(self) -> Bytes {
        self.finish("", BodyFraming::Length(&[]))
    }

    /// The head of a streamed response. HTTP/1.1: `Transfer-Encoding: chunked`; send
    /// [`chunk`]s then [`LAST_CHUNK`]. HTTP/1.0 (see [`Response::http10`]): no transfer
    /// coding exists, so the head says `Connection: close` and the body is the raw bytes up
    /// to the close; send data unframed, not through [`chunk`].
    pub fn chunked_start(self, content_type: &str) -> Bytes {
        self.finish(content_type, BodyFraming::Chunked)
    }

    /// The `101 Switching Protocols` head accepting a WebSocket handshake (RFC 6455 §4.2.2).
    /// `accept` is the Sec-WebSocket-Accept value; `protocol`, if any, the chosen
    /// subprotocol. A value holding control bytes (or a protocol that is not a token) is
    /// dropped, which makes the client fail the handshake rather than read injected headers.
    pub fn upgrade_websocket(accept: &str, protocol: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nServer: herald\r\n\
              Upgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        if is_field_value(accept) {
            push_field(&mut out, "Sec-WebSocket-Accept", accept);
        }
        if let Some(p) = protocol.filter(|p| is_token(p)) {
            push_field(&mut out, "Sec-WebSocket-Protocol", p);
        }
        out.extend_from_slice(b"\r\n");
        Bytes::from(out)
    }

    fn finish(self, content_type: &str, framing: BodyFraming<'_>) -> Bytes {
        // RFC 9110 §6.4.1: 1xx, 204 and 304 responses never carry content.
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        let chunked = matches!(framing, BodyFraming::Chunked);
        // An HTTP/1.0 stream is delimited by the close (RFC 9112 §6.3 (8)).
        let keep_alive = self.keep_alive && !(chunked && self.http10 && !bodiless);
        let body = match framing {
            BodyFraming::Length(b) if !bodiless && !self.head_only => b,
            _ => &[],
        };
        let reason = reason(self.status);
        let mut out = Vec::with_capacity(96 + reason.len() + self.headers.len() + content_type.len() + body.len());
        out.extend_from_slice(if self.http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        push_decimal(&mut out, usize::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\nServer: herald\r\n");
        out.extend_from_slice(&self.headers);
        if !bodiless {
            let content_type = content_type.trim_matches([' ', '\t']);
            if !content_type.is_empty() && is_field_value(content_type) {
                push_field(&mut out, "Content-Type", content_type);
            }
            match framing {
                BodyFraming::Length(b) => {
                    out.extend_from_slice(b"Content-Length: ");
                    push_decimal(&mut out, b.len());
                    out.extend_from_slice(b"\r\n");
                }
                BodyFraming::Chunked if !self.http10 => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
                BodyFraming::Chunked => {}
            }
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        Bytes::from(out)
    }
}

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

/// A JSON error response, `{"error":"<message>"}` with the message JSON-escaped, framed by
/// Content-Length. For an HTTP/1.0 client pass `keep_alive = false` (or build it with
/// [`Response::http10`]): this helper always answers as HTTP/1.1.
pub fn error_response(status: u16, message: &str, keep_alive: bool) -> Bytes {
    let mut json = Vec::with_capacity(message.len() + 16);
    json.extend_from_slice(b"{\"error\":\"");
    push_json_escaped(&mut json, message);
    json.extend_from_slice(b"\"}");
    Response::new(status).keep_alive(keep_alive).body("application/json", &json)
}

/// JSON string escaping (RFC 8259 §7): quote, backslash and control characters.
fn push_json_escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// field-value characters (RFC 9110 §5.5): no CTL other than HTAB, so never CR, LF or NUL.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HttpLimits =
        HttpLimits { max_request_line: 8192, max_headers: 64, max_header_bytes: 16384, max_body: 1 << 20 };

    fn ok(buf: &[u8]) -> Head<'_> {
        match parse_head(buf, &L) {
            Ok(Some(h)) => h,
            other => panic!("{:?}: {:?}", String::from_utf8_lossy(buf), other.map(|h| h.is_some())),
        }
    }

    fn err(buf: &[u8]) -> HttpError {
        err_with(buf, &L)
    }

    fn err_with(buf: &[u8], limits: &HttpLimits) -> HttpError {
        match parse_head(buf, limits) {
            Err(e) => e,
            Ok(h) => panic!("{:?} parsed: {:?}", String::from_utf8_lossy(buf), h.map(|h| h.head_len)),
        }
    }

    fn partial(buf: &[u8]) -> bool {
        matches!(parse_head(buf, &L), Ok(None))
    }

    // ---- request heads ----

    #[test]
    fn simple_get() {
        let buf = b"GET /messages/?cid=news&since=4 HTTP/1.1\r\nHost: h\r\n\r\n";
        let h = ok(buf);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.method_str, "GET");
        assert_eq!(h.path, "/messages/");
        assert_eq!(h.query, "cid=news&since=4");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.headers, vec![("Host", &b"h"[..])]);
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
        assert_eq!(h.head_len, buf.len());
        assert_eq!(query_param(h.query, "since").as_deref(), Some("4"));
    }

    #[test]
    fn methods() {
        for (m, want) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Patch),
            ("PROPFIND", Method::Other),
            ("get", Method::Other),
        ] {
            let req = format!("{m} / HTTP/1.1\r\nHost: h\r\n\r\n");
            let h = ok(req.as_bytes());
            assert_eq!((h.method, h.method_str), (want, m));
        }
    }

    #[test]
    fn http10_keep_alive() {
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
    }

    #[test]
    fn http11_close() {
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn pipelined() {
        let buf = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        let a = ok(buf);
        assert_eq!(a.path, "/a");
        let rest = &buf[a.head_len..];
        let b = ok(rest);
        assert_eq!((b.path, b.body), ("/b", BodyKind::Length(3)));
        let rest = &rest[b.head_len..];
        assert_eq!(&rest[..3], b"abc");
        let c = ok(&rest[3..]);
        assert_eq!(c.path, "/c");
        assert_eq!(c.head_len, rest.len() - 3);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let h = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.head_len, 31);
    }

    const COMPLETE: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /x?y=1 HTTP/1.0\r\n\r\n",
        b"\r\nPOST /publish/?cid=c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
        b"GET /ws/ HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        b"PUT /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nEmpty:\r\n\r\n",
    ];

    #[test]
    fn every_split_is_partial_until_complete() {
        for req in COMPLETE {
            let full = ok(req);
            assert_eq!(full.head_len, req.len());
            for cut in 0..req.len() {
                assert!(partial(&req[..cut]), "{:?} cut at {cut}", String::from_utf8_lossy(req));
            }
        }
    }

    #[test]
    fn header_lookup() {
        let h = ok(b"GET / HTTP/1.1\r\nHOST: example\r\nX-Multi: one\r\nx-multi: two\r\nX-Pad: \t padded \t\r\nX-Bin: \xff\r\n\r\n");
        assert_eq!(h.header("host"), Some(&b"example"[..]));
        assert_eq!(h.header("Host"), Some(&b"example"[..]));
        assert_eq!(h.header("X-MULTI"), Some(&b"one"[..]));
        assert_eq!(h.header_str("x-pad"), Some("padded"));
        assert_eq!(h.header("x-bin"), Some(&b"\xff"[..]));
        assert_eq!(h.header_str("x-bin"), None);
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.headers.len(), 5);
    }

    #[test]
    fn header_tokens() {
        let h = ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nX-L: a,,b ,\tc\r\nX-L: d\r\n\r\n");
        assert!(h.header_has_token("connection", "upgrade"));
        assert!(h.header_has_token("Connection", "KEEP-ALIVE"));
        assert!(!h.header_has_token("connection", "close"));
        assert!(!h.header_has_token("connection", "keep"));
        assert!(h.header_has_token("upgrade", "websocket"));
        for t in ["a", "b", "c", "d"] {
            assert!(h.header_has_token("x-l", t), "{t}");
        }
        assert!(!h.header_has_token("x-l", ""));
        assert!(!h.header_has_token("missing", "a"));
    }

    #[test]
    fn expect_continue() {
        assert!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expects_continue()
        );
        assert!(!ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expects_continue());
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").expects_continue());
    }

    #[test]
    fn targets() {
        let t = |req: &'static [u8]| {
            let h = ok(req);
            (h.path, h.query)
        };
        assert_eq!(t(b"GET /a/b HTTP/1.1\r\nHost: h\r\n\r\n"), ("/a/b", ""));
        assert_eq!(t(b"GET /a? HTTP/1.1\r\nHost: h\r\n\r\n"), ("/a", ""));
        assert_eq!(t(b"GET /a?b?c=d HTTP/1.1\r\nHost: h\r\n\r\n"), ("/a", "b?c=d"));
        assert_eq!(t(b"GET /%7Euser?q=%20 HTTP/1.1\r\nHost: h\r\n\r\n"), ("/%7Euser", "q=%20"));
        assert_eq!(t(b"GET http://h:8000/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"), ("/p", "q=1"));
        assert_eq!(t(b"GET HTTPS://h?q HTTP/1.1\r\nHost: h\r\n\r\n"), ("/", "q"));
        assert_eq!(t(b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n"), ("/", ""));
        assert_eq!(t(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), ("*", ""));
        assert_eq!(t("GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes()), ("/caf\u{e9}", ""));
        assert_eq!(err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(err(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n").status(), 501);
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), HttpError::BadRequest("missing or repeated Host header"));
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status(), 400);
        ok(b"GET / HTTP/1.0\r\n\r\n");
        ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"); // empty Host is allowed (RFC 9112 §3.2)
    }

    #[test]
    fn body_framing() {
        let body = |req: &'static [u8]| ok(req).body;
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n"), BodyKind::Length(42));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), BodyKind::Length(0));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 007\r\n\r\n"), BodyKind::Length(7));
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            BodyKind::Length(5)
        );
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"), BodyKind::Length(5));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"), BodyKind::Chunked);
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"), BodyKind::Chunked);
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked,\r\n\r\n"), BodyKind::Chunked);
        assert_eq!(body(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n"), BodyKind::Length(3));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"), BodyKind::None);
    }

    #[test]
    fn invalid_content_length() {
        for v in ["", "-1", "+5", "0x10", "5 5", "5,", ",5", "5;", "1e3", "\u{663}"] {
            let req = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n");
            assert_eq!(err(req.as_bytes()), HttpError::BadRequest("invalid Content-Length"), "{v:?}");
        }
    }

    #[test]
    fn smuggling() {
        let e = |req: &'static [u8]| err(req);
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::BadRequest("both Content-Length and Transfer-Encoding")
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n").status(),
            400
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HttpError::BadRequest("conflicting Content-Length values")
        );
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n").status(), 400);
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HttpError::BadRequest("chunked is not the final transfer coding")
        );
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").status(), 400);
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HttpError::NotImplemented("unsupported transfer coding")
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
            501
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
                .status(),
            400
        );
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n").status(), 400);
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n").status(), 400);
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n").status(), 400);
        assert_eq!(
            e(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::BadRequest("Transfer-Encoding in HTTP/1.0")
        );
        // Whitespace before the colon and obs-fold are both rejected (RFC 9112 §5.1, §5.2).
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n").status(), 400);
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n").status(), 400);
        assert_eq!(e(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n").status(), 400);
    }

    #[test]
    fn malformed() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
            b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.0\n\r\n",
            b"GET / HTTP/1.0\r\n\n",
            b"GET / HTTP/1.0\n\n",
            b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: y\nZ: w\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX:\nZ: w\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: y \t\nZ: w\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX\x01: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\x00\x00\x00\x00",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(err(case).status(), 400, "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn limit_request_line() {
        let lim = HttpLimits { max_request_line: 32, ..L };
        // "GET /" + path + " HTTP/1.1" is exactly 32 bytes: accepted.
        let path = "a".repeat(32 - 14);
        let fits = format!("GET /{path} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(parse_head(fits.as_bytes(), &lim).unwrap().is_some());
        let long = format!("GET /{path}a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err_with(long.as_bytes(), &lim), HttpError::UriTooLong);
        // Partial: no CRLF yet, but the line is already too long.
        let part = format!("GET /{}", "a".repeat(40));
        assert_eq!(err_with(part.as_bytes(), &lim), HttpError::UriTooLong);
        // Partial at exactly the limit (and limit plus CR) is still only partial.
        let at = format!("GET /{path} HTTP/1.1");
        assert_eq!(at.len(), 32);
        assert!(parse_head(at.as_bytes(), &lim).unwrap().is_none());
        assert!(parse_head(format!("{at}\r").as_bytes(), &lim).unwrap().is_none());
        let over = format!("GET /{path}a HTTP/1.1");
        assert_eq!(err_with(over.as_bytes(), &lim), HttpError::UriTooLong);
        // Defaults: 8 KiB request line.
        let big = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "x".repeat(9000));
        assert_eq!(err(big.as_bytes()).status(), 414);
        assert_eq!(err(&big.as_bytes()[..8300]).status(), 414);
    }

    #[test]
    fn limit_header_count() {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..63 {
            req.push_str(&format!("X-{i}: v\r\n"));
        }
        let fits = format!("{req}\r\n");
        assert_eq!(ok(fits.as_bytes()).headers.len(), 64);
        let over = format!("{req}X-64: v\r\n\r\n");
        assert_eq!(err(over.as_bytes()), HttpError::HeadersTooLarge);
        assert_eq!(err(over.as_bytes()).status(), 431);
        // Above the stack slots: a heap buffer is used.
        let lim = HttpLimits { max_headers: 100, ..L };
        let mut req = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..99 {
            req.push_str(&format!("X-{i}: v\r\n"));
        }
        assert_eq!(parse_head(format!("{req}\r\n").as_bytes(), &lim).unwrap().unwrap().headers.len(), 100);
        assert_eq!(err_with(format!("{req}Y: v\r\n\r\n").as_bytes(), &lim), HttpError::HeadersTooLarge);
        let none = HttpLimits { max_headers: 0, ..L };
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n", &none).unwrap().is_some());
        assert_eq!(err_with(b"GET / HTTP/1.0\r\nA: b\r\n\r\n", &none), HttpError::HeadersTooLarge);
    }

    #[test]
    fn limit_header_bytes() {
        let lim = HttpLimits { max_header_bytes: 64, ..L };
        let fits = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(64 - 32));
        assert_eq!(fits.len(), 64);
        assert!(parse_head(fits.as_bytes(), &lim).unwrap().is_some());
        let over = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(64 - 31));
        assert_eq!(err_with(over.as_bytes(), &lim), HttpError::HeadersTooLarge);
        // Partial: never any CRLFCRLF, the head so far is already at the limit.
        let part = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "v".repeat(100));
        assert!(parse_head(&part.as_bytes()[..63], &lim).unwrap().is_none());
        assert_eq!(err_with(&part.as_bytes()[..64], &lim), HttpError::HeadersTooLarge);
        assert_eq!(err_with(&part.as_bytes()[..90], &lim).status(), 431);
        // An endless stream of empty lines is bounded too.
        assert_eq!(err_with(&b"\r\n".repeat(40), &lim), HttpError::HeadersTooLarge);
        // Defaults: 16 KiB.
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "v".repeat(17000));
        assert_eq!(err(big.as_bytes()), HttpError::HeadersTooLarge);
    }

    #[test]
    fn limit_body() {
        assert_eq!(err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n"), HttpError::BodyTooLarge);
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n").body,
            BodyKind::Length(1 << 20)
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999999\r\n\r\n").status(),
            413
        );
        // Framing errors win over the size: ambiguity is the bigger fault.
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\nTransfer-Encoding: chunked\r\n\r\n")
                .status(),
            400
        );
    }

    #[test]
    fn error_statuses_and_messages() {
        let all = [
            (HttpError::BadRequest("x"), 400, "x"),
            (HttpError::UriTooLong, 414, "request line too long"),
            (HttpError::HeadersTooLarge, 431, "request header fields too large"),
            (HttpError::BodyTooLarge, 413, "request body too large"),
            (HttpError::LengthRequired, 411, "length required"),
            (HttpError::NotImplemented("y"), 501, "y"),
        ];
        for (e, status, msg) in all {
            assert_eq!((e.status(), e.message()), (status, msg));
            assert_eq!(e.to_string(), format!("{status} {msg}"));
        }
    }

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

    const CHUNKED: &[(&[u8], &[u8])] = &[
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

    // ---- responses ----

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn response_body() {
        assert_eq!(
            text(Response::new(200).body("application/json", b"{\"ok\":true}")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
        );
        assert_eq!(
            text(
                Response::new(404)
                    .header("Access-Control-Allow-Origin", "*")
                    .header("Cache-Control", "no-store")
                    .keep_alive(false)
                    .body("text/plain", b"nope")
            ),
            "HTTP/1.1 404 Not Found\r\nServer: herald\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-store\r\n\
             Content-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
        );
        assert_eq!(
            text(Response::new(200).head_only(true).body("text/plain", b"hello")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(200).body("", b"x")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nContent-Length: 1\r\n\r\nx"
        );
    }

    #[test]
    fn response_empty_and_bodiless() {
        assert_eq!(
            text(Response::new(202).empty()),
            "HTTP/1.1 202 Accepted\r\nServer: herald\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(text(Response::new(204).empty()), "HTTP/1.1 204 No Content\r\nServer: herald\r\n\r\n");
        assert_eq!(
            text(Response::new(304).header("ETag", "\"7\"").body("text/plain", b"ignored")),
            "HTTP/1.1 304 Not Modified\r\nServer: herald\r\nETag: \"7\"\r\n\r\n"
        );
        assert_eq!(text(Response::new(299).empty()), "HTTP/1.1 299 \r\nServer: herald\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            text(Response::new(7).empty()),
            "HTTP/1.1 500 Internal Server Error\r\nServer: herald\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn response_http10() {
        assert_eq!(
            text(Response::new(200).http10(true).body("text/plain", b"hi")),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
        );
        assert_eq!(
            text(Response::new(200).http10(true).keep_alive(false).empty()),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_chunked() {
        assert_eq!(
            text(Response::new(200).header("Cache-Control", "no-cache").chunked_start("text/event-stream")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nCache-Control: no-cache\r\nContent-Type: text/event-stream\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(200).keep_alive(false).chunked_start("text/html")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        // HTTP/1.0 has no chunked coding: the body runs to the close.
        assert_eq!(
            text(Response::new(200).http10(true).chunked_start("text/html")),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
        );
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

    #[test]
    fn response_upgrade() {
        assert_eq!(
            text(Response::upgrade_websocket("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None)),
            "HTTP/1.1 101 Switching Protocols\r\nServer: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        assert_eq!(
            text(Response::upgrade_websocket("abc=", Some("centrifuge-json"))),
            "HTTP/1.1 101 Switching Protocols\r\nServer: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: abc=\r\nSec-WebSocket-Protocol: centrifuge-json\r\n\r\n"
        );
        let evil = text(Response::upgrade_websocket("a\r\nX: y", Some("p\r\nZ: w")));
        assert!(!evil.contains("X: y") && !evil.contains("Z: w"), "{evil}");
    }

    #[test]
    fn response_headers_not_injectable() {
        let r = text(
            Response::new(200)
                .header("X-A", "ok\r\nSet-Cookie: evil=1")
                .header("X-B", "line\nbreak")
                .header("X-C", "cr\ronly")
                .header("X-D", "nul\0")
                .header("X-E\r\nInjected", "v")
                .header("Bad Name", "v")
                .header("", "v")
                .header("X-Tab", "a\tb")
                .header("X-Utf8", "caf\u{e9}")
                .header("Content-Length", "999")
                .header("transfer-encoding", "chunked")
                .header("Connection", "close")
                .header("Server", "other")
                .body("text/plain\r\nX-Evil: 1", b"ok"),
        );
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Tab: a\tb\r\nX-Utf8: caf\u{e9}\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn error_responses() {
        assert_eq!(
            text(error_response(404, "no such channel", true)),
            "HTTP/1.1 404 Not Found\r\nServer: herald\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n\
             {\"error\":\"no such channel\"}"
        );
        let e = text(error_response(400, "bad \"x\"\\\n\u{1}é", false));
        assert!(e.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{e}");
        assert!(e.contains("Connection: close\r\n"), "{e}");
        assert!(e.ends_with("{\"error\":\"bad \\\"x\\\"\\\\\\n\\u0001é\"}"), "{e}");
        let err = HttpError::HeadersTooLarge;
        let r = text(error_response(err.status(), err.message(), false));
        assert!(r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{r}");
    }

    #[test]
    fn reasons() {
        for s in [100, 101, 200, 204, 400, 404, 405, 411, 413, 414, 429, 431, 500, 501, 503] {
            assert!(!reason(s).is_empty(), "{s}");
        }
        assert_eq!(reason(413), "Content Too Large");
        assert_eq!(reason(299), "");
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    // ---- robustness ----

    /// xorshift64*: deterministic, no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        const ALPHABET: &[u8] = b"\r\n\r\n :;,\t0123456789abcdefABCDEF/?%=&GETPOSTHTTP/1.1HostContent-LengthTransfer-Encodingchunked\x00\x7f\xff\xc3";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let tiny = HttpLimits { max_request_line: 40, max_headers: 3, max_header_bytes: 120, max_body: 50 };
        let seeds: Vec<&[u8]> = COMPLETE.iter().copied().chain(CHUNKED.iter().map(|c| c.0)).collect();
        let mut bare_lf_seen = 0;
        for round in 0..30_000 {
            let len = rng.below(160);
            let buf: Vec<u8> = match round % 3 {
                // Raw bytes.
                0 => (0..len).map(|_| rng.next() as u8).collect(),
                // Bytes from an HTTP-ish alphabet.
                1 => (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect(),
                // A valid message with a few mutations.
                _ => {
                    let mut v = seeds[rng.below(seeds.len())].to_vec();
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(v.len() + 1);
                        match rng.below(4) {
                            0 if i < v.len() => v[i] = ALPHABET[rng.below(ALPHABET.len())],
                            1 if i < v.len() => {
                                v.remove(i);
                            }
                            // Turn a CRLF into a bare LF.
                            2 => {
                                let crs: Vec<usize> = (0..v.len()).filter(|&j| v[j] == b'\r').collect();
                                if !crs.is_empty() {
                                    v.remove(crs[rng.below(crs.len())]);
                                }
                            }
                            _ => v.insert(i, rng.next() as u8),
                        }
                    }
                    v
                }
            };
            // The structural bare-LF check agrees with a naive scan of every byte.
            let naive_bare_lf =
                |head: &[u8]| (0..head.len()).any(|i| head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'));
            let mut slots = [httparse::EMPTY_HEADER; 64];
            if let Ok(httparse::Status::Complete(n)) = httparse::Request::new(&mut slots).parse(&buf) {
                if naive_bare_lf(&buf[..n]) {
                    bare_lf_seen += 1;
                    assert!(parse_head(&buf, &L).is_err(), "{:?}", String::from_utf8_lossy(&buf));
                }
            }
            for limits in [&L, &tiny] {
                if let Ok(Some(h)) = parse_head(&buf, limits) {
                    assert!(!naive_bare_lf(&buf[..h.head_len]));
                    assert!(h.head_len <= buf.len());
                    assert!(h.headers.len() <= limits.max_headers);
                    if let BodyKind::Length(n) = h.body {
                        assert!(n <= limits.max_body);
                    }
                }
            }
            let mut d = ChunkedDecoder::new(64);
            let mut out = Vec::new();
            let cut = rng.below(buf.len() + 1);
            if let Ok((n, done)) = d.feed(&buf[..cut], &mut out) {
                assert!(n <= cut && (done || n == cut));
                if !done {
                    let _ = d.feed(&buf[cut..], &mut out);
                }
            }
            assert!(out.len() <= 64);
            let s = String::from_utf8_lossy(&buf);
            let _ = query_param(&s, "cid");
            let _ = percent_decode(&s);
            let r = Response::new(rng.next() as u16).header(&s, &s).body(&s, &buf);
            assert!(r.starts_with(b"HTTP/1.1 "));
        }
        assert!(bare_lf_seen > 100, "the loop must reach the bare-LF check: {bare_lf_seen}");
    }
}
