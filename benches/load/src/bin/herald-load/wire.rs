//! What only `herald-load` puts on the wire: URL templates (one per target's URL shapes),
//! the load message carrying a sequence number and send time, and the scan that finds them
//! inside whatever a server wraps a message in (Herald's envelope, a raw peer frame, an SSE
//! event, a long-poll body).
//!
//! Pure functions over bytes: no sockets, no clock. Called by `main.rs` (templates) and
//! `run.rs`. Requests, response heads and WebSocket frames are the shared library's
//! (`herald_bench_tools::{http, ws}`).

use herald_bench_tools::text::{find, number_at, padded_body};
use std::net::{SocketAddr, ToSocketAddrs};

/// A `scheme://host:port/path?query` template; `{ch}` in the path is replaced by the
/// channel name.
#[derive(Clone, Debug)]
pub struct UrlTemplate {
    /// `ws`, `wss` or `http`.
    pub scheme: String,
    /// The resolved server address.
    pub addr: SocketAddr,
    /// `host[:port]` as written (sent as `Host:`).
    pub host: String,
    /// Path and query, with `{ch}` where the channel goes.
    pub path: String,
}

impl UrlTemplate {
    /// Parse `ws://127.0.0.1:8000/ws/?cid={ch}` (schemes ws, wss, http).
    pub fn parse(s: &str) -> Result<UrlTemplate, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("`{s}`: expected scheme://host:port/path"))?;
        if !matches!(scheme, "ws" | "wss" | "http") {
            return Err(format!("`{s}`: scheme must be ws, wss or http"));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if scheme == "wss" { 443 } else { 80 };
        let with_port = if host.contains(':') { host.to_string() } else { format!("{host}:{default_port}") };
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

/// The load message: `{"seq":S,"t":T,"p":"xxx…"}` padded with `x` to `size` bytes (never
/// shorter than the fields need). `t` is nanoseconds on the generator's clock.
pub fn message(seq: u64, t_ns: u64, size: usize) -> Vec<u8> {
    padded_body(&format!("\"seq\":{seq},\"t\":{t_ns},"), size)
}

/// Like [`message`], but filled with a list of varied JSON items (ticker-like records whose
/// numbers come from a hash of `seq`) before the padding, so that a compressor sees text as
/// compressible as a real JSON feed rather than a run of `x`. Exactly `size` bytes when
/// `size` leaves room for the fields.
pub fn json_message(seq: u64, t_ns: u64, size: usize) -> Vec<u8> {
    const SYMS: [&str; 8] = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "NFLX"];
    let mut fields = format!("\"seq\":{seq},\"t\":{t_ns},\"items\":[");
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut first = true;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let item = format!(
            "{}{{\"id\":{},\"sym\":\"{}\",\"px\":{}.{:02},\"qty\":{},\"side\":\"{}\"}}",
            if first { "" } else { "," },
            x % 1_000_000,
            SYMS[(x >> 20) as usize % SYMS.len()],
            (x >> 24) % 2000,
            (x >> 36) % 100,
            (x >> 44) % 5000,
            if x & 1 == 0 { "buy" } else { "sell" }
        );
        // Keep room for `],` and the padding field `"p":""}`.
        if fields.len() + item.len() + 2 + 8 > size {
            break;
        }
        fields.push_str(&item);
        first = false;
    }
    fields.push_str("],");
    padded_body(&fields, size)
}

/// Every `(seq, t)` of load messages in `buf` (a frame, an SSE event, a long-poll body).
/// Appends to `out`; stray text without both fields is skipped.
pub fn scan(buf: &[u8], out: &mut Vec<(u64, u64)>) {
    const SEQ: &[u8] = b"\"seq\":";
    const T: &[u8] = b"\"t\":";
    let mut i = 0;
    while let Some(p) = find(&buf[i..], SEQ) {
        let at = i + p + SEQ.len();
        let Some((seq, end)) = number_at(buf, at) else {
            i = at;
            continue;
        };
        i = end;
        if buf[end..].starts_with(b",") && buf[end + 1..].starts_with(T) {
            if let Some((t, end2)) = number_at(buf, end + 1 + T.len()) {
                out.push((seq, t));
                i = end2;
            }
        }
    }
}

/// Centrifugo's JSON client protocol (v2, as Centrifugo v6 speaks it on
/// `/connection/websocket`) and its server API, as far as a subscriber and a backend
/// publisher need them: the commands a subscriber sends, the lines it gets back, the body of
/// `POST /api/publish`.
pub mod cf {
    use herald::proto::jwt::{sign_hs256, Secret};

    /// The id of the `connect` command (the first on every connection).
    pub const CONNECT_ID: u64 = 1;
    /// The id of the `subscribe` command (sent once `connect` is answered).
    pub const SUBSCRIBE_ID: u64 = 2;
    /// A pong (protocol v2: the answer to a `{}` ping is an empty command).
    pub const PONG: &[u8] = b"{}";

    /// The `connect` command: with a connection token, or without one (anonymous, when the
    /// server allows it: `client.allow_anonymous_connect_without_token`).
    pub fn connect(token: Option<&str>) -> Vec<u8> {
        let mut c = serde_json::json!({"id": CONNECT_ID, "connect": {"name": "herald-load"}});
        if let Some(t) = token {
            c["connect"]["token"] = t.into();
        }
        c.to_string().into_bytes()
    }

    /// The `subscribe` command for `channel`.
    pub fn subscribe(channel: &str) -> Vec<u8> {
        serde_json::json!({"id": SUBSCRIBE_ID, "subscribe": {"channel": channel}}).to_string().into_bytes()
    }

    /// An HS256 connection token for `user`, valid for an hour from `now_s` (Unix seconds):
    /// what a backend hands its clients (`client.token.hmac_secret_key`).
    pub fn token(secret: &Secret, user: &str, now_s: u64) -> String {
        sign_hs256(secret, &serde_json::json!({"sub": user, "exp": now_s + 3600}))
    }

    /// The body of `POST /api/publish`: `{"channel":CH,"data":DATA}`, `data` being the JSON
    /// message as is (both servers keep JSON data as raw bytes and send them on unchanged).
    pub fn publish_body(channel: &str, data: &[u8]) -> Vec<u8> {
        let mut b = format!("{{\"channel\":{},\"data\":", serde_json::Value::from(channel)).into_bytes();
        b.extend_from_slice(data);
        b.push(b'}');
        b
    }

    /// One line of a server frame: in the JSON protocol a frame holds one or more
    /// newline-delimited replies, pushes and pings.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Line<'a> {
        /// `{}`: a server ping, to be answered with [`PONG`].
        Ping,
        /// A push (`{"push":{"channel":..,"pub":{"data":..}}}` for a publication): the
        /// line, to be scanned for load messages.
        Push(&'a [u8]),
        /// The reply to command `id`, with its error (`{"code":..,"message":..}`) if any.
        Reply { id: u64, error: Option<String> },
        /// Anything else (text that is not one of the above).
        Other,
    }

    /// The lines of one frame, classified. Pushes are recognised by their prefix without
    /// parsing (they are nearly every line under load); other lines are parsed.
    pub fn lines(frame: &[u8]) -> impl Iterator<Item = Line<'_>> {
        frame.split(|&b| b == b'\n').map(|l| l.trim_ascii()).filter(|l| !l.is_empty()).map(classify)
    }

    fn classify(l: &[u8]) -> Line<'_> {
        if l.starts_with(b"{\"push\":") {
            return Line::Push(l);
        }
        if l == PONG {
            return Line::Ping;
        }
        let Ok(serde_json::Value::Object(v)) = serde_json::from_slice::<serde_json::Value>(l) else {
            return Line::Other;
        };
        match v.get("id").and_then(|i| i.as_u64()) {
            Some(id) => Line::Reply { id, error: v.get("error").map(|e| e.to_string()) },
            None if v.contains_key("push") => Line::Push(l),
            None if v.is_empty() => Line::Ping,
            None => Line::Other,
        }
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
        let j = json_message(5, 77, 1024);
        assert_eq!(j.len(), 1024);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert!(v["items"].as_array().unwrap().len() > 10);
        out.clear();
        scan(&j, &mut out);
        assert_eq!(out, vec![(5, 77)]);
    }

    #[test]
    fn centrifugo_protocol() {
        use herald::proto::jwt::{Secret, Verifier};
        let v: serde_json::Value = serde_json::from_slice(&cf::connect(Some("T"))).unwrap();
        assert_eq!(v, serde_json::json!({"id": 1, "connect": {"name": "herald-load", "token": "T"}}));
        let v: serde_json::Value = serde_json::from_slice(&cf::connect(None)).unwrap();
        assert!(v["connect"].get("token").is_none());
        assert_eq!(cf::subscribe("a\"b"), br#"{"id":2,"subscribe":{"channel":"a\"b"}}"#);
        let m = message(9, 11, 100);
        let body = cf::publish_body("load1x0", &m);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["channel"], "load1x0");
        assert_eq!(v["data"]["seq"], 9);
        // The token verifies with Herald's own verifier, as the server will check it.
        let secret = Secret::new(b"s3cret");
        let now = 1_800_000_000;
        let t = cf::token(&secret, "load7", now);
        let ok = Verifier::new(Some(secret)).verify_connect(&t, now as i64).unwrap();
        assert_eq!(ok.claims().sub, "load7");
        // A frame of a reply, two pushes and a ping, as Centrifugo batches them.
        let push =
            format!(r#"{{"push":{{"channel":"c","pub":{{"data":{},"offset":3}}}}}}"#, String::from_utf8(m).unwrap());
        let frame = format!("{{\"id\":2,\"subscribe\":{{}}}}\n{push}\n{push}\n{{}}\n{{\"id\":1,\"error\":{{\"code\":103,\"message\":\"permission denied\"}}}}");
        let got: Vec<cf::Line> = cf::lines(frame.as_bytes()).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], cf::Line::Reply { id: 2, error: None });
        assert_eq!(got[1], cf::Line::Push(push.as_bytes()));
        assert_eq!(got[3], cf::Line::Ping);
        assert!(matches!(&got[4], cf::Line::Reply { id: 1, error: Some(e) } if e.contains("103")));
        let mut out = Vec::new();
        scan(push.as_bytes(), &mut out);
        assert_eq!(out, vec![(9, 11)]);
        assert_eq!(cf::lines(b"nope\n\n").collect::<Vec<_>>(), vec![cf::Line::Other]);
    }

    #[test]
    fn templates() {
        let u = UrlTemplate::parse("ws://127.0.0.1:9000/sub/{ch}").unwrap();
        assert_eq!(u.target("a1"), "/sub/a1");
        assert_eq!(u.addr.port(), 9000);
        assert!(UrlTemplate::parse("wss://x/").is_err());
    }
}
