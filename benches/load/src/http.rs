//! The HTTP/1.1 client side of both tools: the request bytes a subscriber or publisher
//! sends, the one response-head parser (on `httparse`), and a blocking GET for the soak's
//! control requests (`/stats`, `/metrics`).
//!
//! Request builders and [`parse_response`] are pure functions over bytes; the mio loops of
//! `herald-load` and `herald-soak` feed them. Chunked bodies are decoded with Herald's own
//! `herald::proto::http::ChunkedDecoder`.

use herald::proto::http::ChunkedDecoder;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest response head accepted before giving up on a peer.
pub const MAX_HEAD: usize = 64 * 1024;

/// A `GET` with an `Accept` header and any `extra` headers (name, value), in that order.
/// SSE subscribers ask for `text/event-stream` (Nchan needs it to pick EventSource).
pub fn get_request(host: &str, target: &str, accept: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A publish: `POST` of `body` as `application/json` with its `Content-Length`.
pub fn post_request(host: &str, target: &str, body: &[u8]) -> Vec<u8> {
    post_request_with(host, target, body, &[])
}

/// [`post_request`] with `extra` headers (name, value) after `Content-Type`, e.g. the
/// `X-API-Key` of Centrifugo's server API.
pub fn post_request_with(host: &str, target: &str, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// A parsed response head: what the tools need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespHead {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, blank line included: the body starts there.
    pub head_len: usize,
    /// `Content-Length`, if present and a number.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding` names `chunked`.
    pub chunked: bool,
    /// `Sec-WebSocket-Accept`, trimmed.
    pub ws_accept: Option<String>,
    /// `Sec-WebSocket-Extensions` names `permessage-deflate` (RFC 7692 negotiated).
    pub ws_deflate: bool,
}

/// Parse a response head from the front of `buf`. `Ok(None)`: incomplete (more bytes
/// needed); `Err`: malformed, or still incomplete past [`MAX_HEAD`] bytes.
pub fn parse_response(buf: &[u8]) -> Result<Option<RespHead>, String> {
    let mut hdrs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hdrs);
    match r.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err("response head over 64 KiB".into()),
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let mut h = RespHead {
                status: r.code.unwrap_or(0),
                head_len: n,
                content_length: None,
                chunked: false,
                ws_accept: None,
                ws_deflate: false,
            };
            for x in r.headers.iter() {
                let v = String::from_utf8_lossy(x.value);
                if x.name.eq_ignore_ascii_case("content-length") {
                    h.content_length = v.trim().parse().ok();
                } else if x.name.eq_ignore_ascii_case("transfer-encoding") {
                    h.chunked = v.to_ascii_lowercase().contains("chunked");
                } else if x.name.eq_ignore_ascii_case("sec-websocket-accept") {
                    h.ws_accept = Some(v.trim().to_string());
                } else if x.name.eq_ignore_ascii_case("sec-websocket-extensions") {
                    h.ws_deflate |= v.to_ascii_lowercase().contains("permessage-deflate");
                }
            }
            Ok(Some(h))
        }
        Err(e) => Err(format!("bad response head: {e}")),
    }
}

/// The body of a complete response (`buf` holds the whole response, the head at its front):
/// de-chunked, cut at `Content-Length`, or everything after the head.
pub fn body_of(buf: &[u8], h: &RespHead) -> Result<Vec<u8>, String> {
    let rest = &buf[h.head_len..];
    if h.chunked {
        let mut out = Vec::new();
        let (_, done) =
            ChunkedDecoder::new(usize::MAX / 4).feed(rest, &mut out).map_err(|e| format!("chunked body: {e:?}"))?;
        return if done { Ok(out) } else { Err("chunked body cut short".into()) };
    }
    match h.content_length {
        Some(n) if rest.len() < n => Err(format!("body cut short: {} of {n} bytes", rest.len())),
        Some(n) => Ok(rest[..n].to_vec()),
        None => Ok(rest.to_vec()),
    }
}

/// A blocking `GET target` on a fresh connection (`Connection: close`; 5 s to connect,
/// 10 s per read). Returns the body of a 200 answer; anything else is an error naming the
/// target and status.
pub fn get_ok(addr: SocketAddr, target: &str) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let h = parse_response(&buf)?.ok_or_else(|| format!("{target}: no complete response head"))?;
    if h.status != 200 {
        return Err(format!("{target}: answered {}", h.status));
    }
    body_of(&buf, &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        sec-websocket-accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n\x81\x02hi";
    const CL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCONTENT-LENGTH: 8\r\n\r\n{\"id\":1}";
    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

    /// Every split point: incomplete before the blank line, the same head from there on.
    fn every_boundary(resp: &[u8]) -> RespHead {
        let full = parse_response(resp).unwrap().expect("complete");
        for cut in 0..resp.len() {
            let got = parse_response(&resp[..cut]).unwrap();
            if cut < full.head_len {
                assert_eq!(got, None, "cut at {cut}");
            } else {
                assert_eq!(got.as_ref(), Some(&full), "cut at {cut}");
            }
        }
        full
    }

    #[test]
    fn heads_split_at_every_boundary() {
        let h = every_boundary(WS);
        assert_eq!(h.status, 101);
        assert_eq!(h.ws_accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(&WS[h.head_len..], b"\x81\x02hi");
        let h = every_boundary(CL);
        assert_eq!((h.status, h.content_length, h.chunked), (200, Some(8), false));
        assert_eq!(body_of(CL, &h).unwrap(), b"{\"id\":1}");
        let h = every_boundary(CHUNKED);
        assert_eq!((h.status, h.content_length, h.chunked), (200, None, true));
        assert_eq!(body_of(CHUNKED, &h).unwrap(), b"hello world");
    }

    #[test]
    fn bad_and_oversized_heads() {
        assert!(parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse_response(b"SPDY\r\n\r\n").is_err());
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_response(&big), Ok(None));
        big.extend_from_slice(b"aa");
        assert!(parse_response(&big).is_err());
    }

    #[test]
    fn short_bodies() {
        let h = parse_response(CL).unwrap().unwrap();
        assert!(body_of(&CL[..CL.len() - 1], &h).is_err());
        let h = parse_response(CHUNKED).unwrap().unwrap();
        assert!(body_of(&CHUNKED[..CHUNKED.len() - 2], &h).is_err());
    }

    #[test]
    fn requests() {
        assert_eq!(
            get_request("h:1", "/sse/?cid=a", "text/event-stream", &[("Last-Event-ID", "7")]),
            b"GET /sse/?cid=a HTTP/1.1\r\nHost: h:1\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\n\r\n"
        );
        let p = post_request("h:1", "/publish/?cid=a", b"{}");
        assert!(p.ends_with(b"Content-Length: 2\r\n\r\n{}"));
        assert!(p.starts_with(b"POST /publish/?cid=a HTTP/1.1\r\nHost: h:1\r\n"));
        let k = post_request_with("h:1", "/api/publish", b"{}", &[("X-API-Key", "k1")]);
        assert_eq!(
            k,
            b"POST /api/publish HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nX-API-Key: k1\r\n\
              Content-Length: 2\r\n\r\n{}"
        );
    }
}
