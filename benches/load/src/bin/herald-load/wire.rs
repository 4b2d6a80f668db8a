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
    fn templates() {
        let u = UrlTemplate::parse("ws://127.0.0.1:9000/sub/{ch}").unwrap();
        assert_eq!(u.target("a1"), "/sub/a1");
        assert_eq!(u.addr.port(), 9000);
        assert!(UrlTemplate::parse("wss://x/").is_err());
    }
}
