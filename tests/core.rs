//! Event-loop core against a real herald: HTTP/1.1 behaviour, limits, malformed input,
//! slowloris, WebSocket handshake and frames, pings, and graceful shutdown.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tungstenite::{connect, Message};

#[test]
fn health_keepalive_and_pipelining() {
    let h = Herald::start("{}");
    let mut s = h.connect();
    // Two pipelined requests in one write, then a third on the same connection.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let a = read_response(&mut s).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["status"], "ok");
    let b = read_response(&mut s).unwrap();
    assert_eq!(b.status, 404);
    assert!(b.json()["error"].is_string());
    s.write_all(b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    // HEAD: the head with Content-Length, no body; Connection: close honoured (EOF after).
    let rest = String::from_utf8(read_all(&mut s, Duration::from_secs(5))).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("Content-Length: 15\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\n"), "HEAD has no body: {rest}");
}

#[test]
fn http10_closes_unless_keepalive() {
    let h = Herald::start("{}");
    let mut s = h.connect();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let r = read_all(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&r);
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("{\"status\":\"ok\"}"), "{text}");
    let mut s = h.connect();
    s.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    s.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200, "kept alive for HTTP/1.0 with keep-alive");
}

fn raw_status(h: &Herald, bytes: &[u8]) -> (u16, String) {
    let mut s = h.connect();
    let _ = s.write_all(bytes);
    let r = read_response(&mut s).expect("a response");
    (r.status, r.text())
}

#[test]
fn malformed_and_oversized_requests() {
    let h = Herald::start(r#"{"max_headers": 8, "max_request_line": 200, "max_header_bytes": 1024, "max_body": 100}"#);
    assert_eq!(raw_status(&h, b"GARBAGE\r\n\r\n").0, 400);
    assert_eq!(raw_status(&h, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").0, 400);
    assert_eq!(raw_status(&h, b"\x00\x01\x02\x03\r\n\r\n").0, 400);
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw_status(&h, many.as_bytes()).0, 431);
    let long = format!("GET /health?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(300));
    assert_eq!(raw_status(&h, long.as_bytes()).0, 414);
    let big = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(2000));
    assert_eq!(raw_status(&h, big.as_bytes()).0, 431);
    let (st, body) = raw_status(&h, b"POST /publish/?cid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    assert_eq!(st, 413, "{body}");
    assert_eq!(
        raw_status(
            &h,
            b"POST /publish/?cid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .0,
        400
    );
    assert_eq!(raw_status(&h, b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n").0, 405);
    assert_eq!(raw_status(&h, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").0, 404);
    // A chunked body within the limit is accepted.
    let (st, body) =
        raw_status(&h, b"POST /publish/?cid=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert_eq!(st, 200, "{body}");
    let m = get(&h, "/messages/?cid=a").json();
    assert_eq!(m["messages"][0]["data"], "abcde");
    // The server is still fine for everyone else.
    assert_eq!(get(&h, "/health").status, 200);
}

#[test]
fn slowloris_is_dropped_and_others_carry_on() {
    let h = Herald::start(r#"{"handshake_timeout_ms": 400}"#);
    let mut slow = h.connect();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    // Dribble a header byte every 100 ms: never finishes in time.
    let mut closed = false;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        assert_eq!(get(&h, "/health").status, 200, "others are served meanwhile");
    }
    if !closed {
        let out = read_all(&mut slow, Duration::from_secs(3));
        let text = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(t.elapsed() < Duration::from_secs(4), "dropped near the deadline");
    // A connection that says nothing at all is dropped too.
    let mut silent = h.connect();
    let out = read_all(&mut silent, Duration::from_secs(3));
    assert!(out.is_empty());
}

#[test]
fn idle_keepalive_connection_is_closed() {
    let h = Herald::start(r#"{"idle_timeout_ms": 300}"#);
    let mut s = h.connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    let t = Instant::now();
    assert_eq!(read_all(&mut s, Duration::from_secs(5)), b"");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn websocket_echo_with_tungstenite() {
    let h = Herald::start("{}");
    let (mut ws, resp) = connect(h.ws_url("/echo")).unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("héllo".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("héllo".into()));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Binary(big));
    ws.send(Message::Ping(b"p".to_vec())).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(p, b"p");
                break;
            }
            Message::Ping(_) => continue,
            m => panic!("unexpected {m:?}"),
        }
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => continue,
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn websocket_handshake_errors() {
    let h =
        Herald::start(r#"{"ws_allowed_origins": ["https://good.example"], "ws_subprotocols": ["chat.v2", "chat"]}"#);
    let base = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: https://good.example\r\n";
    let mut s = h.connect();
    write!(s, "{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
    let mut s = h.connect();
    write!(s, "{base}Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 400);
    let mut s = h.connect();
    write!(s, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 426, "plain GET on a WebSocket endpoint");
    let mut s = h.connect();
    write!(
        s,
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: https://evil.example\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 403);
    // Subprotocol: the server's first preference that the client offers.
    let mut s = h.connect();
    write!(
        s,
        "{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, chat.v2\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("Sec-WebSocket-Protocol"), Some("chat.v2"));
    assert_eq!(r.header("Sec-WebSocket-Accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let mut s = h.connect();
    write!(
        s,
        "{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: other\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("Sec-WebSocket-Protocol"), None);
}

#[test]
fn bad_frames_get_the_right_close_code_and_others_go_on() {
    let h = Herald::start(r#"{"ws_max_message": 1000, "ws_max_frame": 1000}"#);
    let (mut good, _) = connect(h.ws_url("/echo")).unwrap();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
        (
            "reserved bit",
            {
                let mut f = client_frame(true, 1, b"hi");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("reserved opcode", client_frame(true, 3, b"x"), 1002),
        ("invalid utf-8", client_frame(true, 1, &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xed, 0xa0, 0x80]), 1007),
        ("too big", client_frame(true, 2, &[0u8; 1001]), 1009),
        ("fragmented ping", client_frame(false, 9, b"x"), 1002),
        ("orphan continuation", client_frame(true, 0, b"x"), 1002),
        ("bad close code", client_frame(true, 8, &[0x03, 0xed]), 1002),
    ];
    for (name, frame, code) in cases {
        let mut s = raw_ws(&h, "/echo");
        s.write_all(&frame).unwrap();
        assert_eq!(read_close_code(&mut s), Some(code), "{name}");
        // The server closes the TCP connection after its close frame.
        assert_eq!(read_all(&mut s, Duration::from_secs(5)), b"", "{name}");
        good.send(Message::Text(name.into())).unwrap();
        assert_eq!(good.read().unwrap(), Message::Text(name.into()));
    }
    // Fragmented text with a code point split across frames, a ping in between.
    let mut s = raw_ws(&h, "/echo");
    let text = "κόσμε".as_bytes();
    s.write_all(&client_frame(false, 1, &text[..3])).unwrap();
    s.write_all(&client_frame(true, 9, b"")).unwrap();
    s.write_all(&client_frame(true, 0, &text[3..])).unwrap();
    let (_, op, p) = read_frame(&mut s).unwrap();
    assert_eq!((op, &p[..]), (0xA, &b""[..]));
    let (fin, op, p) = read_frame(&mut s).unwrap();
    assert_eq!((fin, op, &p[..]), (true, 1, text));
    // Close handshake: our code is echoed.
    s.write_all(&client_frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e'])).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1000));
}

#[test]
fn server_pings_and_drops_silent_peers() {
    let h = Herald::start(r#"{"ws_ping_interval_ms": 200}"#);
    let mut s = raw_ws(&h, "/echo");
    let (_, op, _) = read_frame(&mut s).expect("a ping");
    assert_eq!(op, 9);
    // Never answer: dropped after two intervals of silence.
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not dropped: {e}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    // A peer that answers stays.
    let (mut ws, _) = connect(h.ws_url("/echo")).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(900) {
        ws.send(Message::Text("x".into())).unwrap();
        loop {
            if let Message::Text(_) = ws.read().unwrap() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ws.send(Message::Text("still here".into())).unwrap();
}

#[test]
fn max_connections_gets_503() {
    let h = Herald::start_with(r#"{"max_connections": 3}"#, &["--workers", "1"]);
    let held: Vec<_> = (0..3).map(|_| raw_ws(&h, "/echo")).collect();
    let r = get(&h, "/health");
    assert_eq!(r.status, 503);
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || get(&h, "/health").status == 200));
}

#[test]
fn graceful_shutdown_sends_1001_and_exits() {
    let mut h = Herald::start(r#"{"shutdown_timeout_ms": 3000}"#);
    let mut a = raw_ws(&h, "/echo");
    let mut b = raw_ws(&h, "/echo");
    let (st, took) = {
        let t = std::thread::spawn({
            let pid = h.child.id();
            move || {
                std::thread::sleep(Duration::from_millis(100));
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        });
        assert_eq!(read_close_code(&mut a), Some(1001));
        assert_eq!(read_close_code(&mut b), Some(1001));
        // Answer one close, leave the other: the server still exits in bounded time.
        a.write_all(&client_frame(true, 8, &[0x03, 0xe9])).unwrap();
        t.join().unwrap();
        h.terminate()
    };
    assert!(st.success(), "{st:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn config_errors_name_the_key() {
    let dir = std::env::temp_dir().join(format!("herald-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (cfg, key) in [(r#"{"prot": 80}"#, "prot"), (r#"{"port": "x"}"#, "port"), (r#"{"workers": 9999}"#, "workers")] {
        let p = dir.join("c.json");
        std::fs::write(&p, cfg).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald")).arg("--config").arg(&p).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("herald "));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald")).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--workers"));
    let _ = std::fs::remove_dir_all(dir);
}
