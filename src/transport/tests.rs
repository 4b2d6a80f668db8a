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

const NAMESPACES: &str = r#"{"channel":{"namespaces":[
    {"name":"secret","history_size":10,"history_ttl":"60s"},
    {"name":"open","allow_subscribe_for_client":true,"allow_subscribe_for_anonymous":true},
    {"name":"personal","allow_user_limited_channels":true,"allow_subscribe_for_client":true}]}}"#;

#[test]
fn simple_endpoints_refuse_what_centrifugo_refuses() {
    for path in ["/messages/", "/listen/", "/sse/", "/stream/", "/ws/"] {
        for ch in ["%24private", "secret:plans", "personal:%2342", "open:%24x"] {
            let mut k = Kit::with_json(NAMESPACES);
            k.publish(&ch.replace("%24", "$").replace("%23", "#"), "data");
            let c = k.open();
            k.input(c, &get(&format!("{path}?cid={ch}&since=0")));
            let t = k.text(c);
            assert!(t.starts_with("HTTP/1.1 403"), "{path} {ch}: {t}");
            assert!(!t.contains("data\""), "{path} {ch}: leaked the message: {t}");
            let v: serde_json::Value = serde_json::from_str(body(&t)).unwrap();
            assert!(v["error"].as_str().unwrap().contains("channel "), "{t}");
        }
        let mut k = Kit::with_json(NAMESPACES);
        let c = k.open();
        k.input(c, &get(&format!("{path}?cid=open:news&since=0")));
        assert!(!k.text(c).starts_with("HTTP/1.1 403"), "{path}: an open namespace is served");
    }
}

#[test]
fn a_namespace_can_be_opened_to_simple_endpoints() {
    let json = NAMESPACES.replacen('{', r#"{"simple_access_namespaces":["secret"],"#, 1);
    let mut k = Kit::with_json(&json);
    k.publish("secret:plans", "plan");
    let c = k.open();
    k.input(c, &get("/messages/?cid=secret:plans&since=0"));
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 200"), "{t}");
    assert!(t.contains("plan"));
}

#[test]
fn poll_reply_is_bounded_by_bytes_and_walks_forward() {
    // 20 messages of 100 KB; high water with the default cap is 1 MiB: a reply carries
    // about 10, the oldest first when walking, and walking on gets the rest.
    let mut k = Kit::new(Default::default());
    let big = format!("\"{}\"", "x".repeat(100_000));
    for _ in 0..20 {
        k.publish("a", &big);
    }
    let c = k.open();
    let mut since = 0;
    let mut seen = 0;
    for _ in 0..10 {
        k.input(c, &get(&format!("/messages/?cid=a&since={since}")));
        let t = k.text(c);
        let v: serde_json::Value = serde_json::from_str(body(&t)).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        if msgs.is_empty() {
            break;
        }
        assert!(body(&t).len() <= k.env.high_water + 200_000, "reply of {} bytes", body(&t).len());
        assert_eq!(msgs.last().unwrap()["id"], since + 1, "oldest first after since");
        since = msgs[0]["id"].as_u64().unwrap();
        seen += msgs.len();
    }
    assert_eq!(seen, 20, "walking forward reached every message");
}

#[test]
fn sse_replay_is_paced_and_complete() {
    let mut k = Kit::new(Default::default());
    let big = format!("\"{}\"", "y".repeat(200_000));
    for _ in 0..100 {
        k.publish("big", &big);
    }
    let c = k.open();
    k.input(c, &get("/sse/?cid=big&since=0"));
    let queued = k.s(c).out.len();
    assert!(queued <= k.env.high_water + 250_000, "replay queued {queued} bytes at once");
    // A live message during the replay comes after it.
    k.publish("big", "\"live\"");
    let (all, peak) = k.read_all(c);
    let text = String::from_utf8_lossy(&all);
    let ids: Vec<u64> = text.lines().filter_map(|l| l.strip_prefix("id: ")).map(|v| v.parse().unwrap()).collect();
    assert_eq!(ids, (1..=101).collect::<Vec<u64>>(), "every event, in order");
    assert!(peak <= k.env.high_water + 250_000, "peak queue {peak}");
    assert!(text.ends_with("\"data\":\"live\"}\n\n"));
    assert!(!k.closed(c));
}

#[test]
fn pipelined_requests_wait_while_replies_are_unread() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    // 2,000 pipelined `GET /` (demo page, ~18 KB each) in one read.
    let req = get("/");
    let many: Vec<u8> = req.iter().copied().cycle().take(req.len() * 2000).collect();
    k.input(c, &many);
    let queued = k.s(c).out.len();
    assert!(queued >= k.env.high_water, "answered up to the high-water mark");
    assert!(queued < k.env.high_water + 64 * 1024, "{queued} bytes queued: parsing went on past high water");
    assert!(!k.s(c).inbuf.is_empty(), "the rest waits unparsed");
}

#[test]
fn chunked_body_in_one_byte_chunks() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, b"POST /publish/?cid=t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3000 {
        k.input(c, b"1\r\nz\r\n");
        assert!(k.s(c).inbuf.is_empty(), "raw chunk bytes are consumed as they are decoded");
    }
    k.input(c, b"0\r\n\r\n");
    let t = k.text(c);
    assert_eq!(body(&t), r#"{"id":1,"channel":"t"}"#, "{t}");
    k.input(c, &get("/messages/?cid=t"));
    assert!(k.text(c).contains(&"z".repeat(3000)));
}

#[test]
fn trickled_body_times_out_with_408() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, b"POST /publish/?cid=t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n");
    k.advance(k.env.shared.cfg.handshake_timeout_ms);
    k.timer(c);
    assert!(k.text(c).starts_with("HTTP/1.1 408"));
}

#[test]
fn incomplete_websocket_frame_times_out_with_1008() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    let req = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    k.input(c, req.as_bytes());
    let _ = k.output(c);
    // A masked text frame announcing 1000 bytes; 10 arrive.
    let mut f = vec![0x81, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
    f.extend_from_slice(&[0u8; 10]);
    k.input(c, &f);
    k.advance(k.env.shared.cfg.handshake_timeout_ms);
    k.timer(c);
    let out = k.output(c);
    assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xf0], "close 1008: {out:?}");
    assert!(k.closed(c));
}

#[test]
fn multi_channel_sse_sends_unsequenced_messages_with_their_data() {
    let mut k = Kit::new(Default::default());
    let c = k.open();
    k.input(c, &get("/sse/?cid=a,b"));
    let _ = k.output(c);
    let data = crate::hub::envelope::json_data(b"{\"x\":1}");
    let meta = crate::hub::PubMeta { skip_history: true, ..Default::default() };
    k.env.shared.engine.publish("a", data, meta, k.env.now_ms);
    k.pump();
    let t = k.text(c);
    assert!(t.starts_with("data: {\"id\":0,\"channel\":\"a\",\"data\":{\"x\":1}}\n\n"), "{t:?}");
    assert!(!t.contains("id: "), "no id line for an unsequenced message: {t:?}");
    k.publish("b", "2");
    let t = k.text(c);
    assert!(t.ends_with("id: 0,1\n\n"), "{t:?}");
}

#[test]
fn centrifugo_emulation_over_an_http_stream() {
    let mut k = Kit::with_json(
        r#"{"client":{"allow_anonymous_connect_without_token":true},
            "channel":{"without_namespace":{"allow_subscribe_for_client":true,"allow_subscribe_for_anonymous":true}}}"#,
    );
    let s = k.open();
    let connect = br#"{"id":1,"connect":{}}"#;
    let req = format!(
        "POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        connect.len()
    );
    k.input(s, &[req.as_bytes(), connect].concat());
    let t = k.text(s);
    let line = t.rsplit("\r\n\r\n").next().unwrap().lines().next().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let (session, node) = (v["connect"]["session"].as_str().unwrap(), v["connect"]["node"].as_str().unwrap());
    assert_eq!(node, k.env.shared.node_id);
    // The session authorises commands: it must not be derivable from the client id, which
    // presence and join/leave show to other clients.
    let client = v["connect"]["client"].as_str().unwrap();
    assert!(!session.contains(client), "session {session} contains client id {client}");
    assert!(session.len() >= 32, "a 128-bit secret: {session}");
    let guessed = serde_json::json!({"session": format!("w0.{client}"), "node": node,
        "data": r#"{"id":9,"subscribe":{"channel":"stolen"}}"#});
    // A command posted to /emulation on another connection reaches the stream.
    let post = |k: &mut Kit, body: String| {
        let c = k.open();
        let req = format!("POST /emulation HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        k.input(c, req.as_bytes());
        k.text(c)
    };
    let cmd =
        serde_json::json!({"session": session, "node": node, "data": r#"{"id":2,"subscribe":{"channel":"news"}}"#});
    // A session made from the client id reaches nothing.
    assert!(post(&mut k, guessed.to_string()).starts_with("HTTP/1.1 204"));
    k.pump();
    assert_eq!(k.text(s), "", "a guessed session must not reach the stream");
    assert!(post(&mut k, cmd.to_string()).starts_with("HTTP/1.1 204"));
    k.pump();
    assert_eq!(k.text(s), "{\"id\":2,\"subscribe\":{}}\n");
    k.publish("news", r#"{"x":1}"#);
    assert_eq!(k.text(s), "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"x\":1},\"offset\":1}}}\n");
    // Another node's session, or garbage: 404 / 400.
    let other = serde_json::json!({"session": session, "node": "other", "data": "{}"});
    assert!(post(&mut k, other.to_string()).starts_with("HTTP/1.1 404"));
    assert!(post(&mut k, "{}".into()).starts_with("HTTP/1.1 400"));
}

/// An engine that answers later (Redis): the session waits, its pipelined input waits, live
/// messages wait behind the history read, and everything comes out in order.
#[test]
fn a_later_engine_keeps_order_and_holds_input() {
    let mut k = Kit::deferred("{}");
    // History before anyone subscribes.
    let p = k.open();
    k.input(p, b"POST /publish/?cid=c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n\"a\"POST /publish/?cid=c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n\"b\"");
    assert!(k.s(p).parked, "waiting for the engine: {}", k.text(p));
    assert_eq!(k.text(p), "", "no answer before the engine's");
    assert!(!k.s(p).inbuf.is_empty(), "the second request waits unparsed");
    k.answer();
    let t = k.text(p);
    assert!(t.contains("\"id\":1") && t.contains("\"id\":2"), "{t}");
    assert!(t.find("\"id\":1") < t.find("\"id\":2"), "answers in request order: {t}");
    // An SSE subscriber from id 0: live messages arriving before the history read answers
    // come after the history.
    let s = k.open();
    k.input(s, b"GET /sse/?cid=c&since=0 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(k.s(s).parked);
    assert_eq!(k.text(s), "", "no stream head before the subscription is in place");
    k.env.shared.engine.publish("c", crate::hub::envelope::json_data(b"\"live\""), Default::default(), k.env.now_ms);
    k.pump();
    assert_eq!(k.text(s), "", "the live message waits for the history");
    k.answer();
    let t = k.text(s);
    let (head, a, b, live) = (t.find("text/event-stream"), t.find("\"a\""), t.find("\"b\""), t.find("\"live\""));
    assert!(head.is_some() && head < a && a < b && b < live, "head, history, then live: {t}");
    k.env.shared.engine.publish("c", crate::hub::envelope::json_data(b"\"next\""), Default::default(), k.env.now_ms);
    k.pump();
    assert!(k.text(s).contains("\"next\""), "live delivery goes on");
}
