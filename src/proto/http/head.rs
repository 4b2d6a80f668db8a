//! Request heads: [`parse_head`] over `httparse`, with Herald's [`HttpLimits`] checked on
//! partial input too, the parsed [`Head`] with its header lookups, and [`HttpError`], the
//! faults a request can have (each mapped to the status to answer with).
//!
//! Owns: the request line and header section (RFC 9112 §2-§5), the request-target forms
//! (§3.2), the Host rule (§3.2) and the bare-LF rejection (§2.2); the body framing decision
//! itself is delegated to [`super::framing`].
//!
//! Called by: the reactor's HTTP transport, on the bytes read so far for a request.
//!
//! Never: touches a socket, reads the clock, copies the buffer (the [`Head`] borrows it),
//! allocates without a bound set by [`HttpLimits`], or panics on any input.

use std::fmt;
use std::mem::MaybeUninit;

use super::framing::{list_has_token, Framing};

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
    /// `GET`: the subscribe endpoints, WebSocket upgrades (which require it), `/health`.
    Get,
    /// `HEAD`: answered like `GET` where a route allows it, with the body left out.
    Head,
    /// `POST`: publishing, the server API, Centrifugo uni-directional streams.
    Post,
    /// `PUT`: accepted as a synonym of `POST` by `/publish`.
    Put,
    /// `DELETE`: recognised, but no route accepts it (405).
    Delete,
    /// `OPTIONS`: a CORS preflight on any route that does not list it (answered 204 with the
    /// route's allowed methods).
    Options,
    /// `PATCH`: recognised, but no route accepts it (405).
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
    /// Chunked bytes follow the head; decode them with [`ChunkedDecoder`](super::ChunkedDecoder).
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
    /// The raw query without `?`, `""` if there is none. See [`query_param`](super::query_param).
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
    ///
    /// [`CONTINUE_100`]: super::CONTINUE_100
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

    /// A short, client-safe description, suitable for [`error_response`](super::error_response).
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

#[cfg(test)]
pub(super) mod tests {
    use super::super::query_param;
    use super::super::tests::{err, err_with, ok, partial, L};
    use super::*;

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

    pub(in crate::proto::http) const COMPLETE: &[&[u8]] = &[
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
}
