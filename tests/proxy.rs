//! Centrifugo's proxies (issue #13) against a real herald and a real backend: an HTTP/1.1
//! server on a loopback port (threads of this test) that records every request it gets
//! (path, headers, JSON body) and answers as the test's handler decides, slowly when
//! asked. Covers the connect proxy (result with server-side subscriptions, error,
//! disconnect, timeout while the worker keeps serving others, headers forwarded per
//! `http_headers`), the refresh proxy extending a connection, the subscribe, publish,
//! sub_refresh and RPC proxies, and a status mapped by `status_to_code_transforms`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

const KEY: &str = "api-key-123456";

/// One request the backend got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// What the backend answers: (delay, status, body).
type Handler = dyn Fn(&Seen) -> (Duration, u16, String) + Send + Sync;

/// The application backend: a real HTTP/1.1 server (keep-alive, a thread per connection).
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    fn start(handler: impl Fn(&Seen) -> (Duration, u16, String) + Send + Sync + 'static) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for sock in l.incoming() {
                let Ok(sock) = sock else { continue };
                let (seen, handler) = (s2.clone(), handler.clone());
                std::thread::spawn(move || serve(sock, &seen, &*handler));
            }
        });
        Backend { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.path == path).cloned().collect()
    }
}

fn serve(sock: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler) {
    let mut r = BufReader::new(sock.try_clone().unwrap());
    let mut w = sock;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let s = Seen { path, headers, body: serde_json::from_slice(&body).unwrap_or(Value::Null) };
        seen.lock().unwrap().push(s.clone());
        let (delay, status, answer) = handler(&s);
        std::thread::sleep(delay);
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(answer.as_bytes())).is_err() {
            return;
        }
    }
}

fn ok(v: Value) -> (Duration, u16, String) {
    (Duration::ZERO, 200, v.to_string())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Herald with every proxy pointed at `b` (paths /connect, /refresh, /subscribe, /publish,
/// /sub_refresh, /rpc), one worker (so "other connections on the same worker" is every
/// connection), and `extra` merged in at the top level.
fn herald(b: &Backend, refresh: bool, extra: Value) -> Herald {
    let mut cfg = json!({
        "workers": 1,
        "http_api": {"key": KEY},
        "client": {
            "token": {"hmac_secret_key": "secret-123456"},
            "ping_interval": "1s", "pong_timeout": "500ms",
            "proxy": {
                "connect": {"enabled": true, "endpoint": b.url("/connect"), "timeout": "700ms",
                            "http_headers": ["Cookie", "Authorization"],
                            "http": {"status_to_code_transforms": [
                                {"status_code": 403, "to_disconnect": {"code": 4403, "reason": "forbidden"}}]}},
                "refresh": {"enabled": refresh, "endpoint": b.url("/refresh"), "include_connection_meta": true}
            }
        },
        "channel": {
            "proxy": {"subscribe": {"endpoint": b.url("/subscribe")}, "publish": {"endpoint": b.url("/publish")},
                      "sub_refresh": {"endpoint": b.url("/sub_refresh")}},
            "without_namespace": {"allow_subscribe_for_client": true},
            "namespaces": [
                {"name": "p", "subscribe_proxy_enabled": true, "publish_proxy_enabled": true, "history_size": 10,
                 "history_ttl": "60s"},
                {"name": "sr", "subscribe_proxy_enabled": true, "sub_refresh_proxy_enabled": true}
            ]
        },
        "rpc": {"proxy": {"endpoint": b.url("/rpc")}, "without_namespace": {"proxy_enabled": true}}
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Herald::start(&cfg.to_string())
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

struct Client {
    ws: Ws,
    next: u32,
    pushes: Vec<Value>,
}

impl Client {
    fn open(h: &Herald, headers: &[(&str, &str)]) -> Client {
        let mut req = h.ws_url("/connection/websocket").into_client_request().unwrap();
        for (k, v) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            req.headers_mut().append(name, v.parse().unwrap());
        }
        let (ws, _) = tungstenite::connect(req).unwrap();
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        Client { ws, next: 1, pushes: Vec::new() }
    }

    /// Send a command; its reply (pushes seen meanwhile are kept, pings answered).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.ws.send(Message::Text(json!({"id": id, method: params}).to_string())).unwrap();
        loop {
            for v in self.read() {
                if v["id"] == id {
                    return v;
                }
                self.keep(v);
            }
        }
    }

    fn keep(&mut self, v: Value) {
        if v.get("push").is_some() {
            self.pushes.push(v);
        } else if v.as_object().is_some_and(|o| o.is_empty()) {
            self.ws.send(Message::Text("{}".into())).unwrap();
        }
    }

    fn read(&mut self) -> Vec<Value> {
        loop {
            match self.ws.read().unwrap() {
                Message::Text(t) => return t.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    fn push(&mut self) -> Value {
        loop {
            if !self.pushes.is_empty() {
                return self.pushes.remove(0);
            }
            for v in self.read() {
                self.keep(v);
            }
        }
    }

    /// Answer pings for `d` (the connection must stay open).
    fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        }
        while Instant::now() < end {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    for l in t.lines() {
                        let v: Value = serde_json::from_str(l).unwrap();
                        self.keep(v);
                    }
                }
                Ok(Message::Close(f)) => panic!("closed: {f:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
    }

    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

fn api(h: &Herald, method: &str, body: Value) -> Value {
    let r = request(h, "POST", &format!("/api/{method}"), &[("X-API-Key", KEY)], body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The backend's connect answer, chosen by the connect data's `mode`.
fn connect_handler(s: &Seen) -> (Duration, u16, String) {
    let mode = s.body["data"]["mode"].as_str().unwrap_or("");
    match (s.path.as_str(), mode) {
        ("/connect", "error") => ok(json!({"error": {"code": 4000, "message": "custom refusal"}})),
        ("/connect", "disconnect") => ok(json!({"disconnect": {"code": 4501, "reason": "not welcome"}})),
        ("/connect", "slow") => (Duration::from_secs(3), 200, json!({"result": {"user": "late"}}).to_string()),
        ("/connect", "status") => (Duration::ZERO, 403, "{}".into()),
        ("/connect", "broken") => (Duration::ZERO, 500, "oops".into()),
        ("/connect", _) => ok(json!({"result": {
            "user": s.body["data"]["user"].as_str().unwrap_or("56"),
            "expire_at": s.body["data"]["expire_at"].as_i64().unwrap_or(0),
            "info": {"name": "Alexander"}, "data": {"welcome": true},
            "channels": ["news"], "meta": {"tenant": 7}}})),
        _ => ok(json!({})),
    }
}

#[test]
fn connect_proxy_result_subscribes_server_side_and_forwards_headers() {
    let b = Backend::start(connect_handler);
    let h = herald(&b, false, json!({}));
    let mut c = Client::open(&h, &[("Cookie", "session=abc"), ("Authorization", "Bearer xyz"), ("X-Other", "no")]);
    let r = c.call("connect", json!({"data": {"user": "56"}, "name": "test", "version": "1"}));
    let res = &r["connect"];
    assert_eq!(res["data"], json!({"welcome": true}), "{r}");
    assert!(res["subs"]["news"].is_object(), "server-side subscription from the proxy: {r}");
    let seen = b.seen("/connect");
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.body["client"], res["client"]);
    assert_eq!(
        (&s.body["transport"], &s.body["protocol"], &s.body["encoding"]),
        (&json!("websocket"), &json!("json"), &json!("json"))
    );
    assert_eq!(
        (&s.body["name"], &s.body["version"], &s.body["data"]),
        (&json!("test"), &json!("1"), &json!({"user": "56"}))
    );
    assert_eq!(s.header("Cookie"), vec!["session=abc"]);
    assert_eq!(s.header("Authorization"), vec!["Bearer xyz"]);
    assert!(s.header("X-Other").is_empty(), "not listed in http_headers");
    assert_eq!(s.header("Content-Type"), vec!["application/json"]);
    // The server-side subscription delivers, with the proxy's user and info.
    api(&h, "publish", json!({"channel": "news", "data": {"n": 1}}));
    let p = c.push();
    assert_eq!((&p["push"]["channel"], &p["push"]["pub"]["data"]), (&json!("news"), &json!({"n": 1})), "{p}");
    let pres = api(&h, "presence", json!({"channel": "news"}));
    let _ = pres; // presence is off on the namespace; the info shows in a client publication:
    let r = c.call("rpc", json!({"method": "whoami"}));
    assert!(r.get("rpc").is_some(), "{r}");
    let rpc = b.seen("/rpc");
    assert_eq!((&rpc[0].body["user"], &rpc[0].body["method"]), (&json!("56"), &json!("whoami")));
}

#[test]
fn connect_proxy_errors_disconnects_and_failures() {
    let b = Backend::start(connect_handler);
    let h = herald(&b, false, json!({}));
    let mut c = Client::open(&h, &[]);
    let r = c.call("connect", json!({"data": {"mode": "error"}}));
    assert_eq!(r["error"], json!({"code": 4000, "message": "custom refusal"}), "{r}");
    let mut c = Client::open(&h, &[]);
    c.ws.send(Message::Text(json!({"id": 1, "connect": {"data": {"mode": "disconnect"}}}).to_string())).unwrap();
    assert_eq!(c.close_code(), Some(4501));
    // A status mapped by status_to_code_transforms; an unmapped one is error 100.
    let mut c = Client::open(&h, &[]);
    c.ws.send(Message::Text(json!({"id": 1, "connect": {"data": {"mode": "status"}}}).to_string())).unwrap();
    assert_eq!(c.close_code(), Some(4403));
    let mut c = Client::open(&h, &[]);
    let r = c.call("connect", json!({"data": {"mode": "broken"}}));
    assert_eq!(r["error"], json!({"code": 100, "message": "internal server error", "temporary": true}), "{r}");
    // Unreachable backend: error 100 too.
    drop(c);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let h2 = Herald::start(
        &json!({"client": {"proxy": {"connect": {"enabled": true, "endpoint": format!("http://127.0.0.1:{port}/c")}}}})
            .to_string(),
    );
    let mut c = Client::open(&h2, &[]);
    let r = c.call("connect", json!({}));
    assert_eq!(r["error"]["code"], 100, "{r}");
    let metrics = get(&h, "/metrics").text();
    assert!(metrics.contains("herald_proxy_calls_total{kind=\"connect\",outcome=\"answered\"} 3"), "{metrics}");
    assert!(metrics.contains("herald_proxy_calls_total{kind=\"connect\",outcome=\"failed\"} 1"), "{metrics}");
}

#[test]
fn a_hanging_backend_times_out_and_the_worker_keeps_serving() {
    let b = Backend::start(connect_handler);
    let h = herald(&b, false, json!({}));
    // One worker: the slow call's connection and the others share it.
    let mut other = Client::open(&h, &[]);
    let r = other.call("connect", json!({"data": {"user": "fast"}}));
    assert!(r["connect"]["client"].is_string(), "{r}");
    let mut slow = Client::open(&h, &[]);
    let t = Instant::now();
    slow.ws.send(Message::Text(json!({"id": 1, "connect": {"data": {"mode": "slow"}}}).to_string())).unwrap();
    // While the backend hangs (3 s), the worker answers others at once.
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..5 {
        let t1 = Instant::now();
        let r = other.call("subscribe", json!({"channel": format!("free{i}")}));
        assert!(r["subscribe"].is_object(), "{r}");
        api(&h, "publish", json!({"channel": format!("free{i}"), "data": {"i": i}}));
        let p = other.push();
        assert_eq!(p["push"]["pub"]["data"]["i"], i);
        // A blocked worker would take the backend's 3 s; a loaded CI machine gets slack.
        assert!(t1.elapsed() < Duration::from_millis(1000), "served in {:?} while a proxy call hangs", t1.elapsed());
    }
    assert_eq!(get(&h, "/health").status, 200);
    // The slow connect gets the internal error at its 700 ms timeout, not after 3 s.
    let r = slow.read().remove(0);
    let took = t.elapsed();
    assert_eq!(r["error"], json!({"code": 100, "message": "internal server error", "temporary": true}), "{r}");
    assert!(took >= Duration::from_millis(650) && took < Duration::from_millis(2000), "{took:?}");
    let metrics = get(&h, "/metrics").text();
    assert!(metrics.contains("herald_proxy_calls_total{kind=\"connect\",outcome=\"timeout\"} 1"), "{metrics}");
}

#[test]
fn refresh_proxy_extends_a_connection_past_its_expiry() {
    let b = Backend::start(|s| match s.path.as_str() {
        "/refresh" => ok(json!({"result": {"expire_at": now() + 3600, "meta": {"refreshed": true}}})),
        _ => connect_handler(s),
    });
    let h = herald(&b, true, json!({}));
    let mut c = Client::open(&h, &[]);
    let r = c.call("connect", json!({"data": {"user": "u1", "expire_at": now() + 2}}));
    assert!(r["connect"].get("ttl").is_none(), "the server refreshes itself: {r}");
    c.idle(Duration::from_secs(5));
    let seen = b.seen("/refresh");
    assert_eq!(seen.len(), 1, "refreshed once, at expiry: {seen:?}");
    assert_eq!(seen[0].body["user"], "u1");
    assert_eq!(seen[0].body["meta"], json!({"tenant": 7}), "include_connection_meta: the connect proxy's meta");
    // Still connected.
    let r = c.call("subscribe", json!({"channel": "after"}));
    assert!(r["subscribe"].is_object(), "{r}");
}

#[test]
fn refresh_proxy_can_end_a_connection() {
    let b = Backend::start(|s| match s.path.as_str() {
        "/refresh" => ok(json!({"result": {"expired": true}})),
        _ => connect_handler(s),
    });
    let h = herald(&b, true, json!({}));
    let mut c = Client::open(&h, &[]);
    c.call("connect", json!({"data": {"user": "u1", "expire_at": now() + 1}}));
    let t = Instant::now();
    assert_eq!(c.close_code(), Some(3005));
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[test]
fn subscribe_publish_and_sub_refresh_proxies() {
    let b = Backend::start(|s| {
        let ch = s.body["channel"].as_str().unwrap_or("");
        match s.path.as_str() {
            "/subscribe" if ch == "p:denied" => ok(json!({"error": {"code": 403, "message": "forbidden"}})),
            "/subscribe" if ch.starts_with("sr:") => ok(json!({"result": {"expire_at": now() + 2}})),
            "/subscribe" => ok(json!({"result": {"info": {"role": "reader"}, "data": {"motd": "hi"}}})),
            "/publish" if s.body["data"]["text"] == "bad" => {
                ok(json!({"error": {"code": 1001, "message": "not allowed"}}))
            }
            "/publish" => ok(json!({"result": {"data": {"text": s.body["data"]["text"], "checked": true}}})),
            "/sub_refresh" => ok(json!({"result": {"expire_at": now() + 3600}})),
            _ => connect_handler(s),
        }
    });
    let h = herald(&b, false, json!({}));
    let mut c = Client::open(&h, &[]);
    c.call("connect", json!({"data": {"user": "alice"}}));
    let r = c.call("subscribe", json!({"channel": "p:room"}));
    assert_eq!(r["subscribe"]["data"], json!({"motd": "hi"}), "{r}");
    let r = c.call("subscribe", json!({"channel": "p:denied"}));
    assert_eq!(r["error"], json!({"code": 403, "message": "forbidden"}), "{r}");
    let r = c.call("publish", json!({"channel": "p:room", "data": {"text": "hello"}}));
    assert_eq!(r["publish"], json!({}), "{r}");
    let p = c.push();
    assert_eq!(p["push"]["pub"]["data"], json!({"text": "hello", "checked": true}), "data replaced: {p}");
    assert_eq!(p["push"]["pub"]["info"]["chan_info"], json!({"role": "reader"}), "{p}");
    let r = c.call("publish", json!({"channel": "p:room", "data": {"text": "bad"}}));
    assert_eq!(r["error"]["code"], 1001, "{r}");
    let hist = api(&h, "history", json!({"channel": "p:room", "limit": 10}));
    assert_eq!(hist["result"]["publications"].as_array().unwrap().len(), 1, "{hist}");
    let pubs = b.seen("/publish");
    assert_eq!((&pubs[0].body["user"], &pubs[0].body["channel"]), (&json!("alice"), &json!("p:room")));
    // A subscription expiring in 2 s in a namespace with a sub_refresh proxy is extended by
    // the server (Herald checks at ping time, once 5 s past the expiry).
    let r = c.call("subscribe", json!({"channel": "sr:1"}));
    assert!(r["subscribe"].get("ttl").is_none(), "server-side sub refresh: {r}");
    c.idle(Duration::from_secs(10));
    let seen = b.seen("/sub_refresh");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((&seen[0].body["channel"], &seen[0].body["user"]), (&json!("sr:1"), &json!("alice")));
    api(&h, "publish", json!({"channel": "sr:1", "data": 5}));
    assert_eq!(c.push()["push"]["pub"]["data"], 5, "still subscribed");
}

#[test]
fn rpc_proxy_results_and_errors() {
    let b = Backend::start(|s| match (s.path.as_str(), s.body["method"].as_str()) {
        ("/rpc", Some("sum")) => {
            let a = s.body["data"]["a"].as_i64().unwrap_or(0);
            let b = s.body["data"]["b"].as_i64().unwrap_or(0);
            ok(json!({"result": {"data": {"sum": a + b}}}))
        }
        ("/rpc", Some("fail")) => ok(json!({"error": {"code": 1500, "message": "method failed"}})),
        ("/rpc", Some("kick")) => ok(json!({"disconnect": {"code": 4999, "reason": "kicked"}})),
        ("/rpc", _) => ok(json!({"error": {"code": 104, "message": "method not found"}})),
        _ => connect_handler(s),
    });
    let h = herald(
        &b,
        false,
        json!({"rpc": {"proxy": {"endpoint": b.url("/rpc")},
        "without_namespace": {"proxy_enabled": true}, "namespaces": [{"name": "off"}], "ping": {"enabled": true}}}),
    );
    let mut c = Client::open(&h, &[]);
    c.call("connect", json!({"data": {"user": "bob"}}));
    assert_eq!(c.call("rpc", json!({"method": "sum", "data": {"a": 2, "b": 3}}))["rpc"], json!({"data": {"sum": 5}}));
    assert_eq!(c.call("rpc", json!({"method": "fail"}))["error"], json!({"code": 1500, "message": "method failed"}));
    assert_eq!(c.call("rpc", json!({"method": "other"}))["error"]["code"], 104);
    assert_eq!(c.call("rpc", json!({"method": "ping"}))["rpc"], json!({}), "rpc.ping needs no backend");
    assert_eq!(c.call("rpc", json!({"method": "off:x"}))["error"]["code"], 108, "namespace without its proxy");
    assert_eq!(b.seen("/rpc").len(), 3);
    c.ws.send(Message::Text(json!({"id": 99, "rpc": {"method": "kick"}}).to_string())).unwrap();
    assert_eq!(c.close_code(), Some(4999));
}

#[test]
fn uni_and_emulated_transports_go_through_the_connect_proxy() {
    let b = Backend::start(connect_handler);
    let h = herald(&b, false, json!({}));
    let mut s = h.connect();
    let body = json!({"data": {"user": "uni"}}).to_string();
    write!(
        s,
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nCookie: k=v\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\"connect\"") && Instant::now() < end {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("\"welcome\":true") && text.contains("\"news\""), "{text}");
    let seen = b.seen("/connect");
    assert_eq!(seen[0].body["transport"], "uni_http_stream");
    assert_eq!(seen[0].header("Cookie"), vec!["k=v"]);
}
