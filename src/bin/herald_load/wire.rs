//! Client-side wire helpers for `herald-load`: URL templates, the request bytes a
//! subscriber or publisher sends, a decoder for unmasked server WebSocket frames, masked
//! client frames, HTTP response heads, and the scan that finds a load message's sequence
//! number and send time inside whatever a server wraps it in (Herald's envelope, a raw
//! peer frame, an SSE event, a long-poll body).
//!
//! Pure functions over bytes: no sockets, no clock. Herald's own codecs
//! (`herald::proto::ws::accept_key`, `herald::proto::http::ChunkedDecoder`) are reused where
//! the client side matches the server side.

use std::net::{SocketAddr, ToSocketAddrs};

/// A `scheme://host:port/path?query` template; `{ch}` in the path is replaced by the
/// channel name.
#[derive(Clone, Debug)]
pub struct UrlTemplate {
    pub scheme: String,
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl UrlTemplate {
    /// Parse `ws://127.0.0.1:8000/ws/?cid={ch}` (schemes ws, http; no TLS).
    pub fn parse(s: &str) -> Result<UrlTemplate, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("`{s}`: expected scheme://host:port/path"))?;
        if !matches!(scheme, "ws" | "http") {
            return Err(format!("`{s}`: scheme must be ws or http (no TLS)"));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("`{host}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{host}`: no address"))?;
        Ok(UrlTemplate { scheme: scheme.to_string(), addr, host: host.to_string(), path: path.to_string() })
    }

    /// The request target for one channel.
    pub fn target(&self, ch: &str) -> String {
        self.path.replace("{ch}", ch)
    }
}

/// The fixed WebSocket key of every load client (the RFC 6455 sample); the server's answer
/// is checked against `herald::proto::ws::accept_key` of it.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The WebSocket upgrade request.
pub fn ws_request(host: &str, target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// A plain GET (SSE asks for `text/event-stream`, which Nchan needs to pick EventSource).
pub fn get_request(host: &str, target: &str, sse: bool) -> Vec<u8> {
    let accept = if sse { "text/event-stream" } else { "application/json" };
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n").into_bytes()
}

/// A publish request carrying `body`.
pub fn post_request(host: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The load message: `{"seq":S,"t":T,"p":"xxx…"}` padded with `x` to `size` bytes (never
/// shorter than the fields need). `t` is nanoseconds on the generator's clock.
pub fn message(seq: u64, t_ns: u64, size: usize) -> Vec<u8> {
    let mut m = format!("{{\"seq\":{seq},\"t\":{t_ns},\"p\":\"");
    let pad = size.saturating_sub(m.len() + 2);
    m.extend(std::iter::repeat_n('x', pad));
    m.push_str("\"}");
    m.into_bytes()
}

fn number_after(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut i = at;
    let mut v: u64 = 0;
    while i < buf.len() && buf[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((buf[i] - b'0') as u64)?;
        i += 1;
    }
    (i > at).then_some((v, i))
}

/// Every `(seq, t)` of load messages in `buf` (a frame, an SSE event, a long-poll body).
/// Appends to `out`; stray text without both fields is skipped.
pub fn scan(buf: &[u8], out: &mut Vec<(u64, u64)>) {
    const SEQ: &[u8] = b"\"seq\":";
    const T: &[u8] = b"\"t\":";
    let mut i = 0;
    while let Some(p) = find(&buf[i..], SEQ) {
        let at = i + p + SEQ.len();
        let Some((seq, end)) = number_after(buf, at) else {
            i = at;
            continue;
        };
        i = end;
        if buf[end..].starts_with(b",") && buf[end + 1..].starts_with(T) {
            if let Some((t, end2)) = number_after(buf, end + 1 + T.len()) {
                out.push((seq, t));
                i = end2;
            }
        }
    }
}

/// First position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first) {
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
            None => return None,
        }
    }
    None
}

/// One decoded server frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Payload range in the buffer passed to [`decode_frame`].
    pub start: usize,
    pub end: usize,
}

/// Decode one unmasked server frame (RFC 6455 §5.2) from the front of `buf`.
/// `Ok(None)`: need more bytes. `Err`: a masked or oversized frame.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<Frame>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("server frame is masked");
    }
    let (len, hl) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10),
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    if len > max as u64 {
        return Err("server frame too large");
    }
    let end = hl + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame { fin: buf[0] & 0x80 != 0, opcode: buf[0] & 0x0f, start: hl, end }))
}

/// A masked client frame (clients must mask, §5.3) with a fixed mask.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x1c, 0x3e, 0x77];
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n.min(0xffff) as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().take(0xffff).enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A parsed response head.
#[derive(Debug)]
pub struct RespHead {
    pub status: u16,
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub ws_accept: Option<String>,
}

/// Parse a response head. `Ok(None)`: incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<RespHead>, String> {
    let mut hdrs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hdrs);
    match r.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > 64 * 1024 {
                Err("response head over 64 KiB".into())
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(n)) => {
            let mut h = RespHead {
                status: r.code.unwrap_or(0),
                head_len: n,
                content_length: None,
                chunked: false,
                ws_accept: None,
            };
            for x in r.headers.iter() {
                let v = String::from_utf8_lossy(x.value);
                if x.name.eq_ignore_ascii_case("content-length") {
                    h.content_length = v.trim().parse().ok();
                } else if x.name.eq_ignore_ascii_case("transfer-encoding") {
                    h.chunked = v.to_ascii_lowercase().contains("chunked");
                } else if x.name.eq_ignore_ascii_case("sec-websocket-accept") {
                    h.ws_accept = Some(v.trim().to_string());
                }
            }
            Ok(Some(h))
        }
        Err(e) => Err(format!("bad response head: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_scan_roundtrip() {
        let m = message(42, 123456789, 100);
        assert_eq!(m.len(), 100);
        let env = format!(r#"{{"id":7,"channel":"c","data":{}}}"#, String::from_utf8(m.clone()).unwrap());
        let mut out = Vec::new();
        scan(env.as_bytes(), &mut out);
        scan(&m, &mut out);
        assert_eq!(out, vec![(42, 123456789), (42, 123456789)]);
        let lp = br#"{"messages":[{"data":{"seq":3,"t":9}},{"data":{"seq":2,"t":8}}],"last_id":3}"#;
        out.clear();
        scan(lp, &mut out);
        assert_eq!(out, vec![(3, 9), (2, 8)]);
    }

    #[test]
    fn frames() {
        let f = herald::proto::ws::frame(herald::proto::ws::Opcode::Text, &[b'a'; 300]);
        for cut in 0..f.len() {
            assert_eq!(decode_frame(&f[..cut], 1 << 20), Ok(None));
        }
        let d = decode_frame(&f, 1 << 20).unwrap().unwrap();
        assert_eq!((d.fin, d.opcode, d.start, d.end), (true, 1, 4, 304));
        assert!(decode_frame(&client_frame(1, b"x"), 100).is_err());
    }

    #[test]
    fn templates() {
        let u = UrlTemplate::parse("ws://127.0.0.1:9000/sub/{ch}").unwrap();
        assert_eq!(u.target("a1"), "/sub/a1");
        assert_eq!(u.addr.port(), 9000);
        assert!(UrlTemplate::parse("wss://x/").is_err());
    }
}
