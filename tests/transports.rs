//! The four transports against a real herald: every message, in order, no duplicates;
//! resume by `since` and `Last-Event-ID`; publish access control; script-safe iframe
//! stream; a stalled reader that does not delay the others; bad requests.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::{connect, Message};

/// A keep-alive publisher connection.
struct Publisher(TcpStream);

impl Publisher {
    fn new(h: &Herald) -> Self {
        Publisher(h.connect())
    }
    fn publish(&mut self, cid: &str, body: &str) -> Value {
        // One write per request (write! would issue several, and Nagle would hold them).
        let req =
            format!("POST /publish/?cid={cid} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        self.0.set_nodelay(true).unwrap();
        self.0.write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut self.0).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// A minimal SSE client over a raw socket: returns (id, data) per event.
struct Sse {
    r: BufReader<TcpStream>,
}

impl Sse {
    fn open(h: &Herald, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut s = h.connect();
        let extra = last_event_id.map(|i| format!("Last-Event-ID: {i}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut ct = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if line.to_ascii_lowercase().starts_with("content-type:") {
                ct = line.clone();
            }
        }
        assert!(ct.contains("text/event-stream"), "{ct}");
        Sse { r }
    }
    /// Next event with data (comments and retry skipped): (id, event, data).
    fn next(&mut self) -> Option<(Option<String>, Option<String>, String)> {
        let (mut id, mut ev, mut data): (Option<String>, Option<String>, Vec<String>) = (None, None, vec![]);
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end_matches('\n');
            if l.is_empty() {
                if !data.is_empty() {
                    return Some((id, ev, data.join("\n")));
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (k, v) = l.split_once(':').map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((l, ""));
            match k {
                "id" => id = Some(v.to_string()),
                "event" => ev = Some(v.to_string()),
                "data" => data.push(v.to_string()),
                _ => {}
            }
        }
    }
}

fn ws_json(ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            m => panic!("unexpected {m:?}"),
        }
    }
}

const N: u64 = 1000;

#[test]
fn thousand_messages_in_order_on_every_transport() {
    let h = Herald::start(r#"{"history_size": 2000}"#);
    let (mut ws, _) = connect(h.ws_url("/ws/?cid=bulk")).unwrap();
    let mut sse = Sse::open(&h, "/sse/?cid=bulk", None);
    let mut iframe = h.connect();
    write!(iframe, "GET /stream/?cid=bulk HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Give the subscriptions a moment to register (they are set before the 101/200 goes out,
    // but the iframe request may still be in flight).
    std::thread::sleep(Duration::from_millis(200));
    let publisher = {
        let addr = h.addr;
        std::thread::spawn(move || {
            let mut p = Publisher(TcpStream::connect(addr).unwrap());
            for i in 1..=N {
                let r = p.publish("bulk", &format!("{{\"n\":{i}}}"));
                assert_eq!(r["id"], i);
            }
        })
    };
    // Long-poll and polling clients walk the channel by `since` while it is being published.
    let lp = {
        let addr = h.addr;
        std::thread::spawn(move || walk(addr, "/listen/"))
    };
    let poll = {
        let addr = h.addr;
        std::thread::spawn(move || walk(addr, "/messages/"))
    };
    for i in 1..=N {
        let v = ws_json(&mut ws);
        assert_eq!(
            (v["id"].as_u64(), v["channel"].as_str(), v["data"]["n"].as_u64()),
            (Some(i), Some("bulk"), Some(i))
        );
        let (id, _, data) = sse.next().unwrap();
        assert_eq!(id.as_deref(), Some(i.to_string().as_str()));
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["id"].as_u64(), Some(i));
    }
    publisher.join().unwrap();
    assert_eq!(lp.join().unwrap(), (1..=N).collect::<Vec<_>>(), "long-poll saw every id once, in order");
    assert_eq!(poll.join().unwrap(), (1..=N).collect::<Vec<_>>(), "polling saw every id once, in order");
    // The iframe stream: one script per message, in order.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    iframe.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    while count(&buf, b"parent.handle(") < N as usize && t.elapsed() < Duration::from_secs(20) {
        let n = iframe.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(buf).unwrap();
    let ids: Vec<u64> = text
        .split("<script>parent.handle(")
        .skip(1)
        .map(|s| {
            let json = s.split(")</script>").next().unwrap();
            serde_json::from_str::<Value>(json).unwrap()["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Follow a channel by `since` until id N has been seen; returns ids in the order seen.
fn walk(addr: std::net::SocketAddr, endpoint: &str) -> Vec<u64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut since = 0u64;
    let mut seen = Vec::new();
    let t = Instant::now();
    while since < N {
        assert!(t.elapsed() < Duration::from_secs(60), "{endpoint} stalled at {since}");
        s.set_nodelay(true).unwrap();
        s.write_all(format!("GET {endpoint}?cid=bulk&since={since}&limit=5000 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["missed"], false);
        let msgs = v["messages"].as_array().unwrap();
        // newest first
        let mut ids: Vec<u64> = msgs.iter().map(|m| m["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        ids.reverse();
        seen.extend_from_slice(&ids);
        if let Some(&last) = ids.last() {
            since = last;
        } else if endpoint == "/messages/" {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    seen
}

#[test]
fn polling_since_limit_and_missed_flag() {
    let h = Herald::start(r#"{"history_size": 5}"#);
    for i in 1..=8 {
        publish(&h, "p", format!("m{i}").as_bytes());
    }
    let v = get(&h, "/messages/?cid=p&since=5").json();
    let ids: Vec<u64> = v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![8, 7, 6]);
    assert_eq!(v["missed"], false);
    assert_eq!(v["last_id"], 8);
    let v = get(&h, "/messages/?cid=p&since=1").json();
    assert_eq!(v["missed"], true, "ids 2 and 3 fell out of a 5-message history");
    assert_eq!(v["messages"].as_array().unwrap().len(), 5);
    let v = get(&h, "/messages/?cid=p&limit=2").json();
    assert_eq!(v["messages"][0]["data"], "m8");
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    let v = get(&h, "/messages/?cid=never").json();
    assert_eq!(v["messages"].as_array().unwrap().len(), 0);
    // JSONP for old browsers.
    let r = get(&h, "/messages/?cid=p&since=7&callback=jQuery123.cb");
    assert!(r.header("Content-Type").unwrap().contains("javascript"));
    assert!(r.text().starts_with("/**/jQuery123.cb({\"messages\":[{\"id\":8"), "{}", r.text());
    assert_eq!(get(&h, "/messages/?cid=p&callback=alert(1)").status, 400);
}

/// Issue #11: a JSONP callback is a plain identifier or one dotted member, never a path
/// that reaches built-in prototypes or the page (`constructor.constructor` is `Function`).
#[test]
fn jsonp_callback_is_one_identifier_or_member_and_no_builtin() {
    let h = Herald::start("{}");
    publish(&h, "a", b"hello");
    for path in ["/messages/?cid=a", "/listen/?cid=a&since=0"] {
        let ok = get(&h, &format!("{path}&callback=app.onMessages"));
        eprintln!("{path} callback=app.onMessages -> {} {:?}", ok.status, ok.text());
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert!(ok.header("Content-Type").unwrap().contains("javascript"));
        assert!(ok.text().starts_with("/**/app.onMessages({\"messages\":[{\"id\":1"), "{}", ok.text());
        for bad in [
            "constructor.constructor",
            "constructor",
            "app.constructor",
            "__proto__",
            "x.__defineGetter__",
            "eval",
            "Function",
            "document.write",
            "document.body.firstElementChild.click",
            "a.b.c",
        ] {
            let r = get(&h, &format!("{path}&callback={bad}"));
            eprintln!("{path} callback={bad} -> {}", r.status);
            assert_eq!(r.status, 400, "callback={bad} on {path}: {}", r.text());
            assert!(r.text().contains("callback"), "the error names the parameter: {}", r.text());
            assert!(!r.text().contains(&format!("{bad}(")), "nothing is echoed");
        }
    }
}

#[test]
fn resume_after_disconnect_loses_nothing() {
    let h = Herald::start("{}");
    let mut p = Publisher::new(&h);
    for i in 1..=3 {
        p.publish("r", &format!("{i}"));
    }
    // SSE: read two, disconnect, publish more, resume with Last-Event-ID.
    let mut sse = Sse::open(&h, "/sse/?cid=r&since=0", None);
    let (id1, _, _) = sse.next().unwrap();
    let (id2, _, _) = sse.next().unwrap();
    assert_eq!((id1.as_deref(), id2.as_deref()), (Some("1"), Some("2")));
    drop(sse);
    for i in 4..=6 {
        p.publish("r", &format!("{i}"));
    }
    let mut sse = Sse::open(&h, "/sse/?cid=r", Some("2"));
    let ids: Vec<String> = (0..4).map(|_| sse.next().unwrap().0.unwrap()).collect();
    assert_eq!(ids, vec!["3", "4", "5", "6"]);
    p.publish("r", "7");
    assert_eq!(sse.next().unwrap().0.as_deref(), Some("7"), "live after the replay");
    // WebSocket with since.
    let (mut ws, _) = connect(h.ws_url("/ws/?cid=r&since=5")).unwrap();
    assert_eq!(ws_json(&mut ws)["id"], 6);
    assert_eq!(ws_json(&mut ws)["id"], 7);
    p.publish("r", "8");
    assert_eq!(ws_json(&mut ws)["id"], 8);
    // Multi-channel SSE: positional ids resume both channels.
    p.publish("r2", "a");
    let mut sse = Sse::open(&h, "/sse/?cid=r,r2", Some("7,0"));
    let (id, _, data) = sse.next().unwrap();
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!((v["channel"].as_str(), v["id"].as_u64()), (Some("r"), Some(8)));
    assert_eq!(id.as_deref(), Some("8,0"));
    let (id, _, _) = sse.next().unwrap();
    assert_eq!(id.as_deref(), Some("8,1"));
}

#[test]
fn missed_is_reported_on_streams() {
    let h = Herald::start(r#"{"history_size": 2}"#);
    for i in 1..=5 {
        publish(&h, "m", format!("{i}").as_bytes());
    }
    let mut sse = Sse::open(&h, "/sse/?cid=m&since=1", None);
    let (_, ev, data) = sse.next().unwrap();
    assert_eq!(ev.as_deref(), Some("missed"));
    assert!(data.contains("\"m\""));
    assert_eq!(sse.next().unwrap().0.as_deref(), Some("4"));
}

#[test]
fn longpoll_holds_then_answers_or_times_out() {
    let h = Herald::start(r#"{"longpoll_timeout_ms": 300}"#);
    let t = Instant::now();
    let v = get(&h, "/listen/?cid=lp").json();
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(v["messages"].as_array().unwrap().len(), 0);
    // A held request answers as soon as a message arrives, then serves the next request
    // on the same connection.
    let mut s = h.connect();
    write!(s, "GET /listen/?cid=lp HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    publish(&h, "lp", b"{\"hello\":1}");
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.json()["messages"][0]["data"]["hello"], 1);
    write!(s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
}

#[test]
fn iframe_stream_is_script_safe() {
    let h = Herald::start("{}");
    let evil = "</script><script>alert('x')</script><!-- \u{2028}";
    publish(&h, "x", evil.as_bytes());
    let mut s = h.connect();
    write!(s, "GET /stream/?cid=x&since=0 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut c = [0u8; 8192];
    while !String::from_utf8_lossy(&buf).contains(")</script>") {
        let n = s.read(&mut c).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&c[..n]);
    }
    let text = String::from_utf8(buf).unwrap();
    assert!(text.contains("Content-Type: text/html"));
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body.matches("<script>").count(), 1, "{body}");
    assert_eq!(body.matches("</script>").count(), 1, "{body}");
    assert!(!body.contains("<!-- \u{2028}"));
    let json = body.split("parent.handle(").nth(1).unwrap().split(")</script>").next().unwrap();
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["data"], evil, "the message itself arrives intact");
}

#[test]
fn publish_access_control() {
    let h = Herald::start(r#"{"publish_allow": ["10.0.0.0/8"], "publish_api_key": "s3cret-key"}"#);
    let r = request(&h, "POST", "/publish/?cid=a", &[], b"x");
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("not allowed"));
    let r = request(&h, "POST", "/publish/?cid=a", &[("X-API-Key", "wrong-key!")], b"x");
    assert_eq!(r.status, 403);
    let r = request(&h, "POST", "/publish/?cid=a,b", &[("X-API-Key", "s3cret-key")], b"x");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["published"].as_array().unwrap().len(), 2);
    assert_eq!(get(&h, "/messages/?cid=b").json()["messages"][0]["data"], "x");
}

#[test]
fn bad_requests_get_clear_errors() {
    let h = Herald::start(r#"{"max_body": 64, "max_channels_per_conn": 3}"#);
    for path in ["/messages/?cid=a%20b", "/messages/", "/sse/?cid=", "/listen/?cid=a,b,c,d", "/messages/?cid=a&since=x"]
    {
        let r = get(&h, path);
        assert_eq!(r.status, 400, "{path}");
        assert!(r.json()["error"].as_str().unwrap().len() > 5, "{path}: {}", r.text());
    }
    let r = request(&h, "POST", "/publish/?cid=a", &[], &[b'x'; 65]);
    assert_eq!(r.status, 413);
    let long = "c".repeat(256);
    assert_eq!(get(&h, &format!("/messages/?cid={long}")).status, 400);
    assert_eq!(get(&h, &format!("/messages/?cid={}", &long[..255])).status, 200);
    assert_eq!(request(&h, "GET", "/publish/?cid=a", &[], b"").status, 405);
}

#[test]
fn cors_preflight_and_headers() {
    let h = Herald::start(r#"{"cors_origins": ["https://app.example"]}"#);
    let r = request(
        &h,
        "OPTIONS",
        "/messages/?cid=a",
        &[("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("https://app.example"));
    let r = request(&h, "GET", "/messages/?cid=a", &[("Origin", "https://app.example")], b"");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("https://app.example"));
    let r = request(&h, "GET", "/messages/?cid=a", &[("Origin", "https://evil.example")], b"");
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}

#[test]
fn ws_client_publish_only_where_allowed() {
    let h = Herald::start("{}");
    let (mut ws, _) = connect(h.ws_url("/ws/?cid=c")).unwrap();
    ws.send(Message::Text("hi".into())).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1008);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected close 1008, got {e}"),
        }
    }
    assert_eq!(get(&h, "/messages/?cid=c").json()["messages"].as_array().unwrap().len(), 0);
    let h = Herald::start(r#"{"ws_client_publish": true}"#);
    let (mut a, _) = connect(h.ws_url("/ws/?cid=c")).unwrap();
    let (mut b, _) = connect(h.ws_url("/ws/?cid=c")).unwrap();
    a.send(Message::Text("{\"from\":\"a\"}".into())).unwrap();
    assert_eq!(ws_json(&mut b)["data"]["from"], "a");
    assert_eq!(ws_json(&mut a)["data"]["from"], "a");
}

#[test]
fn stalled_reader_does_not_delay_others() {
    let h = Herald::start_with(
        r#"{"max_out_queue": 262144, "ws_max_message": 65536, "ws_max_frame": 65536}"#,
        &["--workers", "1"],
    );
    // The stalled subscriber never reads; its socket buffers fill, then its out-queue.
    let stalled = raw_ws(&h, "/ws/?cid=s");
    let (mut ok, _) = connect(h.ws_url("/ws/?cid=s")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut p = Publisher::new(&h);
    let payload = "y".repeat(16 * 1024);
    let t = Instant::now();
    for i in 1..=300u64 {
        p.publish("s", &payload);
        let v = ws_json(&mut ok);
        assert_eq!(v["id"].as_u64(), Some(i));
    }
    assert!(t.elapsed() < Duration::from_secs(20));
    // The stalled one was dropped once it had more than max_out_queue queued.
    let mut stalled = stalled;
    stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        match stalled.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("stalled reader was not dropped: {e}"),
        }
    }
    assert!(total < 300 * 16 * 1024, "it did not get everything: dropped ({total} bytes)");
}

#[test]
fn concurrent_publishers_get_unique_ordered_ids() {
    let h = Herald::start_with("{\"history_size\": 1000}", &["--workers", "2"]);
    let (mut ws, _) = connect(h.ws_url("/ws/?cid=cc")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = h.addr;
            std::thread::spawn(move || {
                let mut p = Publisher(TcpStream::connect(addr).unwrap());
                (0..100).map(|i| p.publish("cc", &format!("\"{t}-{i}\""))["id"].as_u64().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    assert_eq!(all, (1..=400).collect::<Vec<_>>(), "each id assigned exactly once");
    let got: Vec<u64> = (0..400).map(|_| ws_json(&mut ws)["id"].as_u64().unwrap()).collect();
    assert_eq!(got, (1..=400).collect::<Vec<_>>(), "in id order, no duplicates");
}

#[test]
fn polling_with_limit_walks_forward_without_gaps() {
    let h = Herald::start("{}");
    for i in 1..=5 {
        publish(&h, "w", format!("m{i}").as_bytes());
    }
    // More than `limit` messages after `since`: the oldest ones come first, so following
    // `since = messages[0].id` sees every message.
    let v = get(&h, "/messages/?cid=w&since=0&limit=2").json();
    let ids: Vec<u64> = v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![2, 1]);
    let v = get(&h, "/messages/?cid=w&since=2&limit=2").json();
    let ids: Vec<u64> = v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![4, 3]);
}

#[test]
fn sse_last_event_id_wins_over_since() {
    let h = Herald::start("{}");
    for i in 1..=5 {
        publish(&h, "le", format!("{i}").as_bytes());
    }
    // The browser reconnects with its original URL plus the header naming what it got.
    let mut sse = Sse::open(&h, "/sse/?cid=le&since=1", Some("4"));
    assert_eq!(sse.next().unwrap().0.as_deref(), Some("5"));
}

/// Issue #16: ids are per channel, so one `since` for several channels was a trap (false
/// `missed`, replays on channels with lower ids). A single non-zero value with several
/// channels is now a 400 that explains the positional form; `since=0` (from the start of
/// each) and the positional form work, and the reply carries `last_ids` per channel.
#[test]
fn several_channels_take_one_since_per_channel() {
    let h = Herald::start("{}");
    for i in 0..3 {
        publish(&h, "multi-a", format!("{{\"a\":{i}}}").as_bytes());
    }
    publish(&h, "multi-b", b"{\"b\":0}");
    for path in ["/messages/?cid=multi-a,multi-b&since=2", "/listen/?cid=multi-a,multi-b&since=2"] {
        let r = get(&h, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains("ambiguous") && e.contains("one per channel"), "{e}");
    }
    // SSE: a single Last-Event-ID for several channels is refused the same way.
    let r = request(&h, "GET", "/sse/?cid=multi-a,multi-b", &[("Last-Event-ID", "2")], b"");
    assert_eq!(r.status, 400, "{}", r.text());

    // Positional: after a's 2nd message and before b's 1st.
    let r = get(&h, "/messages/?cid=multi-a,multi-b&since=2,0");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let got: Vec<(String, u64)> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["channel"].as_str().unwrap().to_string(), m["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(got.len(), 2, "{v}");
    assert!(got.contains(&("multi-a".into(), 3)) && got.contains(&("multi-b".into(), 1)), "{v}");
    assert_eq!(v["missed"], false, "{v}");
    assert_eq!(v["last_ids"]["multi-a"], 3, "{v}");
    assert_eq!(v["last_ids"]["multi-b"], 1, "{v}");

    // since=0: everything of both, not missed.
    let v = get(&h, "/messages/?cid=multi-a,multi-b&since=0").json();
    assert_eq!(v["messages"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(v["missed"], false, "{v}");

    // The README's client loop: the next since per channel is the highest id seen on it.
    let mut pos = [("multi-a", 3u64), ("multi-b", 1u64)];
    publish(&h, "multi-b", b"{\"b\":1}");
    let q = format!("/listen/?cid=multi-a,multi-b&since={},{}", pos[0].1, pos[1].1);
    let v = get(&h, &q).json();
    for m in v["messages"].as_array().unwrap() {
        let p = pos.iter_mut().find(|(c, _)| *c == m["channel"].as_str().unwrap()).unwrap();
        p.1 = p.1.max(m["id"].as_u64().unwrap());
    }
    assert_eq!(pos, [("multi-a", 3), ("multi-b", 2)], "{v}");
    assert_eq!(v["missed"], false, "{v}");
}

/// Issue #16: a `since` ahead of the channel's last id can only come from an earlier life
/// of the channel (ids restart after a restart or once a channel was dropped), so the
/// client's position means nothing now: it gets `missed` and what history holds, on every
/// transport. Documented in README "Polling".
#[test]
fn since_ahead_of_the_last_id_is_missed_and_replays_history() {
    let h = Herald::start("{}");
    publish(&h, "ahead", b"1");
    publish(&h, "ahead", b"2");
    let v = get(&h, "/messages/?cid=ahead&since=5").json();
    assert_eq!(v["missed"], true, "{v}");
    let ids: Vec<u64> = v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![2, 1], "{v}");
    let mut sse = Sse::open(&h, "/sse/?cid=ahead", Some("5"));
    let (_, ev, data) = sse.next().unwrap();
    assert_eq!(ev.as_deref(), Some("missed"), "{data}");
    let (id, _, _) = sse.next().unwrap();
    assert_eq!(id.as_deref(), Some("1"));
    let (id, _, _) = sse.next().unwrap();
    assert_eq!(id.as_deref(), Some("2"));
}

/// Issue #16: `/listen/` without `since` does not answer with history: it waits for the
/// next message (README "Comet long-polling").
#[test]
fn listen_without_since_waits_for_the_next_message() {
    let h = Herald::start("{}");
    publish(&h, "next", b"\"old\"");
    let mut s = h.connect();
    s.write_all(b"GET /listen/?cid=next HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The long-poll is registered once the channel has a subscriber.
    assert!(wait_until(Duration::from_secs(10), || get(&h, "/stats").json()["subscribers"] == 1));
    publish(&h, "next", b"\"new\"");
    let v = read_response(&mut s).unwrap().json();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{v}");
    assert_eq!(msgs[0]["data"], "new", "{v}");
    assert_eq!(msgs[0]["id"], 2, "{v}");
}
