//! Centrifugo's defaults where Herald's used to differ (issue #13): cross-origin browser
//! connections to `/connection/*` are refused unless `client.allowed_origins` matches
//! (patterns with `*`), same-origin pages and non-browser clients pass; `/api` without a
//! configured key says the API is disabled instead of asking for a key.

mod common;

use common::*;
use std::io::Write;

fn upgrade(h: &Herald, path: &str, origin: Option<&str>) -> u16 {
    let mut s = h.connect();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        h.addr
    );
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut s).expect("an answer").status
}

#[test]
fn centrifugo_endpoints_refuse_cross_origin_by_default() {
    let h = Herald::start("{}");
    let same = format!("http://{}", h.addr);
    assert_eq!(upgrade(&h, "/connection/websocket", None), 101, "no Origin: not a browser");
    assert_eq!(upgrade(&h, "/connection/websocket", Some(&same)), 101, "the page Herald serves");
    assert_eq!(upgrade(&h, "/connection/websocket", Some("https://evil.example")), 403, "cross-origin");
    assert_eq!(upgrade(&h, "/connection/uni_websocket", Some("https://evil.example")), 403);
    let r = request(&h, "GET", "/connection/uni_sse", &[("Origin", "https://evil.example")], b"");
    assert_eq!(r.status, 403, "{}", r.text());
    // The seed endpoints keep their documented default (ws_allowed_origins empty: any).
    assert_eq!(upgrade(&h, "/ws/?cid=a", Some("https://evil.example")), 101);
}

#[test]
fn allowed_origins_take_patterns() {
    let h = Herald::start(
        r#"{"client":{"allowed_origins":["https://*.example.com"]},"ws_allowed_origins":["http://localhost:????"]}"#,
    );
    assert_eq!(upgrade(&h, "/connection/websocket", Some("https://app.example.com")), 101);
    assert_eq!(upgrade(&h, "/connection/websocket", Some("https://example.com")), 403);
    assert_eq!(upgrade(&h, "/connection/websocket", Some("https://app.example.com.evil.io")), 403);
    assert_eq!(upgrade(&h, "/ws/?cid=a", Some("http://localhost:8000")), 101);
    assert_eq!(upgrade(&h, "/ws/?cid=a", Some("http://localhost:80")), 403);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["checkconfig", "--config", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(br#"{"client":{"allowed_origins":["https://{a,b}.example"]}}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&bad.stdout), String::from_utf8_lossy(&bad.stderr));
    assert!(!bad.status.success(), "{text}");
    assert!(text.contains("client.allowed_origins"), "{text}");
}

#[test]
fn api_without_a_key_says_it_is_disabled() {
    let h = Herald::start("{}");
    let r = request(&h, "POST", "/api/info", &[("X-API-Key", "anything")], b"{}");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("no http_api.key is configured"), "{}", r.text());
    let h = Herald::start(r#"{"http_api":{"key":"k-123456"}}"#);
    let r = request(&h, "POST", "/api/info", &[("X-API-Key", "wrong")], b"{}");
    assert_eq!(r.status, 401, "a configured key and a wrong one: 401");
    let r = request(&h, "POST", "/api/info", &[("X-API-Key", "k-123456")], b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
}
