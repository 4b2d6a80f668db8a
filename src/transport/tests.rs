//! Seed transports through the session seam, without sockets: requests in as bytes,
//! responses and deliveries out as bytes, the clock moved by hand.

use super::testkit::Kit;

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// The body of the last HTTP response in `text`.
fn body(text: &str) -> &str {
    text.rsplit("\r\n\r\n").next().unwrap_or("")
}

#[test]
fn health_and_404() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, &get("/health"));
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert_eq!(body(&t), r#"{"status":"ok"}"#);
    k.input(c, &get("/nope"));
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 404"), "{t}");
    assert!(!k.closed(c), "a 404 keeps the connection");
}

#[test]
fn request_split_at_every_byte() {
    let req = get("/health");
    for cut in 1..req.len() {
        let mut k = Kit::new(Default::default());
        let c = k.open();
        k.input(c, &req[..cut]);
        assert!(k.output(c).is_empty(), "answered a partial request cut at {cut}");
        k.input(c, &req[cut..]);
        assert!(k.text(c).starts_with("HTTP/1.1 200 OK"), "cut at {cut}");
    }
}

#[test]
fn poll_returns_history_newest_first() {
    let mut k = Kit::new(Default::default());
    k.publish("a", r#"{"n":1}"#);
    k.publish("a", "two");
    let c = k.open();
    k.input(c, &get("/messages/?cid=a&since=0"));
    let t = k.text(c);
    let v: serde_json::Value = serde_json::from_str(body(&t)).unwrap();
    assert_eq!(v["messages"][0]["data"], "two");
    assert_eq!(v["messages"][1]["data"]["n"], 1);
    assert_eq!(v["last_id"], 2);
}

#[test]
fn long_poll_is_held_then_completed_by_a_publish() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, &get("/listen/?cid=a"));
    assert!(k.output(c).is_empty(), "held until a message");
    let id = k.publish("a", "hello");
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 200 OK"), "{t}");
    let v: serde_json::Value = serde_json::from_str(body(&t)).unwrap();
    assert_eq!(v["messages"][0]["id"], id);
    assert_eq!(v["messages"][0]["data"], "hello");
    // Back to HTTP: the next request on the connection is served.
    k.input(c, &get("/health"));
    assert!(k.text(c).contains(r#"{"status":"ok"}"#));
}

#[test]
fn long_poll_times_out_empty() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, &get("/listen/?cid=a"));
    let timeout = k.env.shared.cfg.longpoll_timeout_ms;
    k.advance(timeout - 1);
    k.timer(c);
    assert!(k.output(c).is_empty(), "not before the deadline");
    k.advance(1);
    k.timer(c);
    let t = k.text(c);
    let v: serde_json::Value = serde_json::from_str(body(&t)).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 0);
}

#[test]
fn sse_replays_then_streams_live() {
    let mut k = Kit::new(Default::default());
    k.publish("a", "old");
    let c = k.open();
    k.input(c, &get("/sse/?cid=a&since=0"));
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert!(t.contains("text/event-stream"));
    assert!(t.contains("id: 1\ndata: {\"id\":1,\"channel\":\"a\",\"data\":\"old\"}\n\n"), "{t}");
    k.publish("a", "new");
    assert_eq!(k.text(c), "id: 2\ndata: {\"id\":2,\"channel\":\"a\",\"data\":\"new\"}\n\n");
    // Keep-alive comment when the timer fires.
    k.advance(k.env.shared.cfg.stream_keepalive_ms);
    k.timer(c);
    assert_eq!(k.text(c), ": keepalive\n\n");
}

#[test]
fn iframe_stream_delivers_script_chunks() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, &get("/stream/?cid=a"));
    let _head = k.output(c);
    k.publish("a", r#"{"x":"</script>"}"#);
    let t = k.text(c);
    assert!(t.starts_with("<script>parent.handle("), "{t}");
    assert_eq!(t.matches("</script>").count(), 1, "only the chunk's own end tag: {t}");
    assert!(t.contains(r#"\u003c/script\u003e"#), "{t}");
}

#[test]
fn websocket_subscriber_gets_text_frames() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    let req = "GET /ws/?cid=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    k.input(c, req.as_bytes());
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 101"), "{t}");
    assert!(t.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455 sample accept key");
    k.publish("a", "hi");
    let f = k.output(c);
    let env = br#"{"id":1,"channel":"a","data":"hi"}"#;
    assert_eq!(f[0], 0x81, "FIN + text");
    assert_eq!(f[1] as usize, env.len());
    assert_eq!(&f[2..], env);
    // A masked close from the client is echoed and the session closes.
    let mask = [1u8, 2, 3, 4];
    let payload = 1000u16.to_be_bytes();
    let mut close = vec![0x88, 0x80 | 2];
    close.extend_from_slice(&mask);
    close.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    k.input(c, &close);
    assert_eq!(k.output(c), vec![0x88, 2, 0x03, 0xe8]);
    assert!(k.closed(c));
}

#[test]
fn publish_needs_an_allowed_address_and_names_the_channel() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, b"POST /publish/?cid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    let t = k.text(c);
    assert_eq!(body(&t), r#"{"id":1,"channel":"a"}"#, "{t}");
    let mut k = Kit::with_json(r#"{"publish_allow":["10.0.0.0/8"]}"#);
    let c = k.open();
    k.input(c, b"POST /publish/?cid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert!(k.text(c).starts_with("HTTP/1.1 403"));
}

#[test]
fn slowloris_head_gets_408() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, b"GET /health HTTP/1.1\r\nHo");
    k.advance(k.env.shared.cfg.handshake_timeout_ms);
    k.timer(c);
    assert!(k.text(c).starts_with("HTTP/1.1 408"));
    assert!(k.closed(c));
}
