//! Responses: the [`Response`] builder, [`error_response`], the WebSocket upgrade head,
//! [`reason`] phrases and [`CONTINUE_100`]. Each response is encoded into one buffer and
//! handed out as [`bytes::Bytes`], so the same bytes can be queued to many connections.
//!
//! Called by: the transports and routes (every response Herald sends is built here).
//!
//! Never: lets a caller-supplied header name or value inject a header or split the response
//! (values holding CR, LF or other control bytes are dropped), lets a caller override the
//! framing headers, adds a `Date` header (no clock in proto/), or panics on any input.

use bytes::Bytes;

use super::{is_field_value, is_token};

/// Sent before reading the body of a request that [`Head::expects_continue`].
///
/// [`Head::expects_continue`]: super::Head::expects_continue
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
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
/// [`Response::empty`], [`Response::chunked_start`] or [`Response::close_delimited_start`],
/// each returning the whole encoded response (or head) in one buffer.
///
/// Every response carries `Server: herald` and `X-Content-Type-Options: nosniff` (bodies such
/// as [`error_response`]'s echo client input, so a browser must not sniff them into another
/// type). The builder owns the framing: `Content-Length`, `Transfer-Encoding`, `Connection`,
/// `Server` and `X-Content-Type-Options` passed to [`Response::header`] are ignored.
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
    /// Neither Content-Length nor chunked: the body runs to the close (RFC 9112 §6.3 (8)).
    CloseDelimited,
}

/// The fields every response built by [`Response`] starts with, after the status line.
const COMMON_FIELDS: &[u8] = b"Server: herald\r\nX-Content-Type-Options: nosniff\r\n";

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
        let reserved = ["content-length", "transfer-encoding", "connection", "server", "x-content-type-options"]
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
    ///
    /// [`chunk`]: super::chunk
    /// [`LAST_CHUNK`]: super::LAST_CHUNK
    pub fn chunked_start(self, content_type: &str) -> Bytes {
        self.finish(content_type, BodyFraming::Chunked)
    }

    /// The head of a close-delimited streamed response (RFC 9112 §6.3 (8)): no
    /// Content-Length, no Transfer-Encoding, always `Connection: close`, whatever
    /// [`Response::keep_alive`] said. The body is the raw bytes the caller writes after it,
    /// up to the close: send data unframed (not through [`chunk`]) and close the connection
    /// to end it. Works the same for HTTP/1.1 and, with [`Response::http10`], HTTP/1.0.
    /// `content_type` is sent as Content-Type unless it is empty or invalid; as for every
    /// response, 1xx, 204 and 304 get no Content-Type.
    ///
    /// Unlike [`Response::chunked_start`] this needs no per-message framing, at the cost of
    /// the connection (a client cannot tell a complete stream from a cut one).
    ///
    /// ```
    /// use herald::proto::http::Response;
    /// let head = Response::new(200)
    ///     .http10(false)
    ///     .header("Cache-Control", "no-cache, no-store")
    ///     .close_delimited_start("text/event-stream; charset=utf-8");
    /// assert!(head.ends_with(b"Connection: close\r\n\r\n"));
    /// ```
    ///
    /// [`chunk`]: super::chunk
    pub fn close_delimited_start(self, content_type: &str) -> Bytes {
        self.finish(content_type, BodyFraming::CloseDelimited)
    }

    /// The `101 Switching Protocols` head accepting a WebSocket handshake (RFC 6455 §4.2.2).
    /// `accept` is the Sec-WebSocket-Accept value; `protocol`, if any, the chosen
    /// subprotocol. A value holding control bytes (or a protocol that is not a token) is
    /// dropped, which makes the client fail the handshake rather than read injected headers.
    ///
    /// It carries no `X-Content-Type-Options`: a 101 has no content, and what follows it is
    /// WebSocket frames, not something a browser could sniff.
    pub fn upgrade_websocket(accept: &str, protocol: Option<&str>, extensions: Option<&str>) -> Bytes {
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
        if let Some(e) = extensions.filter(|e| is_field_value(e)) {
            push_field(&mut out, "Sec-WebSocket-Extensions", e);
        }
        out.extend_from_slice(b"\r\n");
        Bytes::from(out)
    }

    fn finish(self, content_type: &str, framing: BodyFraming<'_>) -> Bytes {
        // RFC 9110 §6.4.1: 1xx, 204 and 304 responses never carry content.
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        let close_delimited = match framing {
            BodyFraming::CloseDelimited => true,
            // An HTTP/1.0 stream is delimited by the close too: it has no chunked coding.
            BodyFraming::Chunked => self.http10 && !bodiless,
            BodyFraming::Length(_) => false,
        };
        let keep_alive = self.keep_alive && !close_delimited;
        let body = match framing {
            BodyFraming::Length(b) if !bodiless && !self.head_only => b,
            _ => &[],
        };
        let reason = reason(self.status);
        let mut out = Vec::with_capacity(128 + reason.len() + self.headers.len() + content_type.len() + body.len());
        out.extend_from_slice(if self.http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        push_decimal(&mut out, usize::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(COMMON_FIELDS);
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
                BodyFraming::Chunked | BodyFraming::CloseDelimited => {}
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

/// A JSON error response, `{"error":"<message>"}` with the message JSON-escaped, framed by
/// Content-Length. For an HTTP/1.0 client pass `keep_alive = false` (or build it with
/// [`Response::http10`]): this helper always answers as HTTP/1.1.
pub fn error_response(status: u16, message: &str, keep_alive: bool) -> Bytes {
    let mut json = bytes::BytesMut::with_capacity(message.len() + 16);
    json.extend_from_slice(b"{\"error\":");
    crate::proto::json::escape_into(&mut json, message);
    json.extend_from_slice(b"}");
    Response::new(status).keep_alive(keep_alive).body("application/json", &json)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::HttpError;

    // ---- responses ----

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn response_body() {
        assert_eq!(
            text(Response::new(200).body("application/json", b"{\"ok\":true}")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
        );
        assert_eq!(
            text(
                Response::new(404)
                    .header("Access-Control-Allow-Origin", "*")
                    .header("Cache-Control", "no-store")
                    .keep_alive(false)
                    .body("text/plain", b"nope")
            ),
            "HTTP/1.1 404 Not Found\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-store\r\n\
             Content-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
        );
        assert_eq!(
            text(Response::new(200).head_only(true).body("text/plain", b"hello")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(200).body("", b"x")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 1\r\n\r\nx"
        );
    }

    #[test]
    fn response_empty_and_bodiless() {
        assert_eq!(
            text(Response::new(202).empty()),
            "HTTP/1.1 202 Accepted\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(204).empty()),
            "HTTP/1.1 204 No Content\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(304).header("ETag", "\"7\"").body("text/plain", b"ignored")),
            "HTTP/1.1 304 Not Modified\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nETag: \"7\"\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(299).empty()),
            "HTTP/1.1 299 \r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(7).empty()),
            "HTTP/1.1 500 Internal Server Error\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn response_http10() {
        assert_eq!(
            text(Response::new(200).http10(true).body("text/plain", b"hi")),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
        );
        assert_eq!(
            text(Response::new(200).http10(true).keep_alive(false).empty()),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_chunked() {
        assert_eq!(
            text(Response::new(200).header("Cache-Control", "no-cache").chunked_start("text/event-stream")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nContent-Type: text/event-stream\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            text(Response::new(200).keep_alive(false).chunked_start("text/html")),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        // HTTP/1.0 has no chunked coding: the body runs to the close.
        assert_eq!(
            text(Response::new(200).http10(true).chunked_start("text/html")),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_close_delimited() {
        // What the SSE / iframe / Centrifugo uni streams send: HTTP/1.1 ...
        let h11 = Response::new(200)
            .header("Cache-Control", "no-cache, no-store")
            .header("X-Accel-Buffering", "no")
            .header("Access-Control-Allow-Origin", "https://a.example")
            .header("Vary", "Origin")
            .close_delimited_start("text/event-stream; charset=utf-8");
        assert_eq!(
            text(h11),
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\n\
             Cache-Control: no-cache, no-store\r\nX-Accel-Buffering: no\r\n\
             Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n\
             Content-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n\r\n"
        );
        // ... and HTTP/1.0, without CORS; keep_alive(true) cannot keep a close-delimited body open.
        let h10 = Response::new(200)
            .http10(true)
            .keep_alive(true)
            .header("Cache-Control", "no-cache, no-store")
            .header("X-Accel-Buffering", "no")
            .close_delimited_start("text/html; charset=utf-8");
        assert_eq!(
            text(h10),
            "HTTP/1.0 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\n\
             Cache-Control: no-cache, no-store\r\nX-Accel-Buffering: no\r\n\
             Content-Type: text/html; charset=utf-8\r\nConnection: close\r\n\r\n"
        );
        // No framing header, ever; a HEAD request gets the same head.
        let head = text(Response::new(200).head_only(true).close_delimited_start("application/json"));
        assert!(!head.contains("Content-Length") && !head.contains("Transfer-Encoding"), "{head}");
        assert!(head.ends_with("Content-Type: application/json\r\nConnection: close\r\n\r\n"), "{head}");
        // Bodiless statuses get no Content-Type, but still the close.
        assert_eq!(
            text(Response::new(204).close_delimited_start("text/plain")),
            "HTTP/1.1 204 No Content\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn every_built_response_says_nosniff() {
        const NOSNIFF: &str = "\r\nX-Content-Type-Options: nosniff\r\n";
        let all = [
            Response::new(200).body("text/plain", b"x"),
            Response::new(200).head_only(true).body("text/plain", b"x"),
            Response::new(404).keep_alive(false).empty(),
            Response::new(204).empty(),
            Response::new(200).chunked_start("text/event-stream"),
            Response::new(200).http10(true).chunked_start("text/html"),
            Response::new(200).close_delimited_start("text/html"),
            error_response(400, "<script>", false),
            error_response(431, "x", true),
        ];
        for r in all {
            let r = text(r);
            assert_eq!(r.matches(NOSNIFF).count(), 1, "{r}");
        }
        // Not on the WebSocket upgrade: a 101 has no content to sniff.
        assert!(!text(Response::upgrade_websocket("abc=", None, None)).contains("X-Content-Type-Options"));
    }

    #[test]
    fn response_upgrade() {
        assert_eq!(
            text(Response::upgrade_websocket("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None, None)),
            "HTTP/1.1 101 Switching Protocols\r\nServer: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        assert_eq!(
            text(Response::upgrade_websocket(
                "abc=",
                Some("centrifuge-json"),
                Some("permessage-deflate; server_no_context_takeover")
            )),
            "HTTP/1.1 101 Switching Protocols\r\nServer: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: abc=\r\nSec-WebSocket-Protocol: centrifuge-json\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        );
        let evil = text(Response::upgrade_websocket("a\r\nX: y", Some("p\r\nZ: w"), None));
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
                .header("X-Content-Type-Options", "sniff-away")
                .body("text/plain\r\nX-Evil: 1", b"ok"),
        );
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nX-Tab: a\tb\r\nX-Utf8: caf\u{e9}\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn error_responses() {
        assert_eq!(
            text(error_response(404, "no such channel", true)),
            "HTTP/1.1 404 Not Found\r\nServer: herald\r\nX-Content-Type-Options: nosniff\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n\
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
}
