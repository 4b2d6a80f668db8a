//! Centrifugo client protocol and server API against a real herald, with tungstenite and
//! raw HTTP (the official SDKs are exercised in tests/centrifugo/).

mod common;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::{connect, stream::MaybeTlsStream, Message, WebSocket};

const SECRET: &str = "test-secret-key-123456";
const KEY: &str = "api-key-123456";

fn token(claims: Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", b64.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn config() -> String {
    json!({
        "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": "1s", "pong_timeout": "500ms"},
        "http_api": {"key": KEY},
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": true},
            "namespaces": [
                {"name": "chat", "history_size": 100, "history_ttl": "300s", "force_recovery": true,
                 "presence": true, "join_leave": true, "force_push_join_leave": true,
                 "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true,
                 "allow_history_for_subscriber": true, "allow_presence_for_subscriber": true},
                {"name": "ro", "allow_subscribe_for_client": true},
                {"name": "dm", "allow_user_limited_channels": true}
            ]
        }
    })
    .to_string()
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

struct Client {
    ws: Ws,
    next_id: u32,
    pushes: Vec<Value>,
}

impl Client {
    fn open(h: &Herald) -> Client {
        let (ws, _) = connect(h.ws_url("/connection/websocket")).unwrap();
        Client { ws, next_id: 1, pushes: Vec::new() }
    }
    fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string())).unwrap();
    }
    /// Read frames; each frame may hold several newline-separated JSON messages.
    fn read(&mut self) -> Vec<Value> {
        loop {
            match self.ws.read().unwrap() {
                Message::Text(t) => return t.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, method: params}));
        loop {
            for v in self.read() {
                if v["id"] == id {
                    return v;
                }
                if v.get("push").is_some() {
                    self.pushes.push(v);
                } else if v.as_object().is_some_and(|o| o.is_empty()) {
                    self.send(json!({}));
                }
            }
        }
    }
    fn push(&mut self) -> Value {
        if !self.pushes.is_empty() {
            return self.pushes.remove(0);
        }
        loop {
            for v in self.read() {
                if v.get("push").is_some() {
                    return v;
                }
                if v.as_object().is_some_and(|o| o.is_empty()) {
                    self.send(json!({}));
                }
            }
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

#[test]
fn connect_subscribe_publish_history_presence() {
    let h = Herald::start(&config());
    let mut a = Client::open(&h);
    let r = a.call("connect", json!({"token": token(json!({"sub": "alice", "exp": now() + 600, "info": {"n": 1}}))}));
    let client = r["connect"]["client"].as_str().unwrap().to_string();
    assert_eq!(client.len(), 36);
    assert!(r["connect"]["ping"].as_u64().unwrap() >= 1);
    assert_eq!(r["connect"]["pong"], true);
    let r = a.call("subscribe", json!({"channel": "chat:room"}));
    assert_eq!(r["subscribe"]["recoverable"], true, "{r}");
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    // our own join
    let j = a.push();
    assert_eq!(j["push"]["join"]["info"]["user"], "alice", "{j}");
    // API publish -> push with offset; simple /publish/ shares the hub.
    let res = api(&h, "publish", json!({"channel": "chat:room", "data": {"text": "hi"}}));
    assert_eq!(res["result"]["offset"], 1);
    assert_eq!(res["result"]["epoch"], epoch.as_str());
    let p = a.push();
    assert_eq!(p["push"]["pub"]["data"]["text"], "hi");
    assert_eq!(p["push"]["pub"]["offset"], 1);
    let simple = publish(&h, "chat:room", b"{\"text\":\"plain\"}");
    let p = a.push();
    assert_eq!(p["push"]["pub"]["offset"], simple["id"]);
    // client publish allowed for subscribers of chat:
    let r = a.call("publish", json!({"channel": "chat:room", "data": {"text": "mine"}}));
    assert!(r.get("error").is_none(), "{r}");
    let p = a.push();
    assert_eq!(p["push"]["pub"]["info"]["user"], "alice");
    // ...refused in ro:
    a.call("subscribe", json!({"channel": "ro:feed"}));
    let r = a.call("publish", json!({"channel": "ro:feed", "data": 1}));
    assert_eq!(r["error"]["code"], 103);
    // history
    let r = a.call("history", json!({"channel": "chat:room", "limit": 10}));
    let pubs = r["history"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 3);
    assert_eq!(r["history"]["offset"], 3);
    let r = a.call("history", json!({"channel": "chat:room", "limit": 1, "reverse": true}));
    assert_eq!(r["history"]["publications"][0]["offset"], 3);
    let r = a.call("history", json!({"channel": "chat:room", "limit": 10, "since": {"offset": 1, "epoch": epoch}}));
    assert_eq!(r["history"]["publications"].as_array().unwrap().len(), 2);
    let r = a.call("history", json!({"channel": "chat:room", "limit": 10, "since": {"offset": 1, "epoch": "nope"}}));
    assert_eq!(r["error"]["code"], 112);
    // presence
    let r = a.call("presence", json!({"channel": "chat:room"}));
    assert_eq!(r["presence"]["presence"][&client]["user"], "alice", "{r}");
    let r = a.call("presence_stats", json!({"channel": "chat:room"}));
    assert_eq!(r["presence_stats"], json!({"num_clients": 1, "num_users": 1}));
    let st = api(&h, "presence_stats", json!({"channel": "chat:room"}));
    assert_eq!(st["result"]["num_clients"], 1);
    // errors
    assert_eq!(a.call("subscribe", json!({"channel": "nope:x"}))["error"]["code"], 102);
    assert_eq!(a.call("subscribe", json!({"channel": "chat:room"}))["error"]["code"], 105);
    assert_eq!(a.call("subscribe", json!({"channel": "$secret"}))["error"]["code"], 103);
    assert_eq!(a.call("subscribe", json!({"channel": "dm:x#bob"}))["error"]["code"], 103);
    assert!(a.call("subscribe", json!({"channel": "dm:x#alice,bob"})).get("error").is_none());
    // 108 as Centrifugo v6.9.1 answers without an RPC proxy (tests/centrifugo/diff.test.mjs)
    assert_eq!(a.call("rpc", json!({"method": "x"}))["error"]["code"], 108);
    // a second client's join and leave reach the first
    let mut b = Client::open(&h);
    b.call("connect", json!({"token": token(json!({"sub": "bob"}))}));
    b.call("subscribe", json!({"channel": "chat:room"}));
    let j = a.push();
    assert_eq!(j["push"]["join"]["info"]["user"], "bob");
    drop(b);
    let l = a.push();
    assert_eq!(l["push"]["leave"]["info"]["user"], "bob");
    // API: channels, info
    let ch = api(&h, "channels", json!({}));
    assert_eq!(ch["result"]["channels"]["chat:room"]["num_clients"], 1);
    let info = api(&h, "info", json!({}));
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 1);
    // API: unsubscribe and disconnect a user
    api(&h, "unsubscribe", json!({"user": "alice", "channel": "chat:room"}));
    let u = a.push();
    assert_eq!(u["push"]["unsubscribe"]["code"], 2000, "{u}");
    api(&h, "disconnect", json!({"user": "alice"}));
    assert_eq!(a.close_code(), Some(3503));
}

#[test]
fn recovery_after_reconnect() {
    let h = Herald::start(&config());
    let t = token(json!({"sub": "u"}));
    let mut a = Client::open(&h);
    a.call("connect", json!({"token": t}));
    let r = a.call("subscribe", json!({"channel": "chat:r"}));
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    api(&h, "publish", json!({"channel": "chat:r", "data": 1}));
    drop(a);
    for i in 2..=4 {
        api(&h, "publish", json!({"channel": "chat:r", "data": i}));
    }
    let mut a = Client::open(&h);
    a.call("connect", json!({"token": t}));
    let r = a.call("subscribe", json!({"channel": "chat:r", "recover": true, "epoch": epoch, "offset": 1}));
    let s = &r["subscribe"];
    assert_eq!(s["recovered"], true, "{r}");
    assert_eq!(s["was_recovering"], true);
    let offs: Vec<u64> = s["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offs, vec![2, 3, 4]);
    api(&h, "publish", json!({"channel": "chat:r", "data": 5}));
    loop {
        let p = a.push();
        if p["push"].get("pub").is_some() {
            assert_eq!(p["push"]["pub"]["offset"], 5, "no duplicates after recovery");
            break;
        }
    }
    // A wrong epoch is not recovered.
    let mut b = Client::open(&h);
    b.call("connect", json!({"token": t}));
    let r = b.call("subscribe", json!({"channel": "chat:r", "recover": true, "epoch": "other", "offset": 1}));
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");
}

#[test]
fn bad_tokens_and_pings() {
    let h = Herald::start(&config());
    let mut a = Client::open(&h);
    a.send(json!({"id": 1, "connect": {"token": format!("{}x", token(json!({"sub": "u"})))}}));
    assert_eq!(a.close_code(), Some(3500));
    let mut a = Client::open(&h);
    let r = a.call("connect", json!({"token": token(json!({"sub": "u", "exp": now() - 100}))}));
    assert_eq!(r["error"]["code"], 109);
    // alg none is refused
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!("{}.{}.", b64.encode(br#"{"alg":"none"}"#), b64.encode(br#"{"sub":"u"}"#));
    let mut a = Client::open(&h);
    a.send(json!({"id": 1, "connect": {"token": none}}));
    assert_eq!(a.close_code(), Some(3500));
    // commands before connect
    let mut a = Client::open(&h);
    a.send(json!({"id": 1, "subscribe": {"channel": "x"}}));
    assert_eq!(a.close_code(), Some(3501));
    // a client that never answers pings gets 3012
    let mut a = Client::open(&h);
    a.send(json!({"id": 1, "connect": {"token": token(json!({"sub": "u"}))}}));
    let t = std::time::Instant::now();
    loop {
        match a.ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 3012);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    // one that answers stays
    let mut b = Client::open(&h);
    b.call("connect", json!({"token": token(json!({"sub": "u"}))}));
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        b.call("ping", json!({}));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn api_auth_and_errors() {
    let h = Herald::start(&config());
    let r = request(&h, "POST", "/api/publish", &[], b"{}");
    assert_eq!(r.status, 401);
    let r = request(
        &h,
        "POST",
        "/api/publish",
        &[("Authorization", &format!("apikey {KEY}"))],
        br#"{"channel":"x","data":1}"#,
    );
    assert_eq!(r.status, 200);
    // `x` has no history in its namespace: `{}`, as Centrifugo v6.9.1 answers (the hub still
    // sequences it for the simple endpoints).
    assert_eq!(r.json()["result"], json!({}));
    let r = request(&h, "POST", "/api/publish", &[("X-API-Key", KEY)], b"not json");
    assert_eq!(r.status, 400);
    assert_eq!(api(&h, "publish", json!({"channel": "nope:x", "data": 1}))["error"]["code"], 102);
    assert_eq!(api(&h, "history", json!({"channel": "ro:x"}))["error"]["code"], 108);
    let r = request(&h, "POST", "/api/nosuch", &[("X-API-Key", KEY)], b"{}");
    assert_eq!(r.status, 404);
    let b = api(
        &h,
        "batch",
        json!({"commands": [{"publish": {"channel": "x", "data": 2}}, {"publish": {"channel": "nope:y", "data": 1}}]}),
    );
    assert_eq!(b["replies"][0]["publish"], json!({}), "{b}");
    assert_eq!(b["replies"][1]["error"]["code"], 102);
    let b = api(&h, "broadcast", json!({"channels": ["x", "y"], "data": {"z": 1}}));
    assert_eq!(b["result"]["responses"].as_array().unwrap().len(), 2);
    // the simple transports see the API's publications
    let m = get(&h, "/messages/?cid=y").json();
    assert_eq!(m["messages"][0]["data"]["z"], 1);
}

#[test]
fn uni_transports() {
    let h = Herald::start(&config());
    let t = token(json!({"sub": "u", "channels": ["news"]}));
    // uni_websocket with the connect request as the first message
    let (mut ws, _) = connect(h.ws_url("/connection/uni_websocket")).unwrap();
    ws.send(Message::Text(json!({"token": t}).to_string())).unwrap();
    let first: Value = loop {
        if let Message::Text(t) = ws.read().unwrap() {
            break serde_json::from_str(&t).unwrap();
        }
    };
    assert!(first["connect"]["client"].is_string(), "{first}");
    api(&h, "publish", json!({"channel": "news", "data": {"n": 1}}));
    let p: Value = loop {
        if let Message::Text(t) = ws.read().unwrap() {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v.get("pub").is_some() {
                break v;
            }
        }
    };
    assert_eq!(p["channel"], "news");
    assert_eq!(p["pub"]["data"]["n"], 1);
    // uni_http_stream: POST the connect request, read newline-delimited JSON
    use std::io::{BufRead, BufReader, Write};
    let mut s = h.connect();
    let body = json!({"token": t}).to_string();
    write!(s, "POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    line.clear();
    r.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(v["connect"]["client"].is_string());
    api(&h, "publish", json!({"channel": "news", "data": 2}));
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("pub").is_some() {
            assert_eq!(v["pub"]["data"], 2);
            break;
        }
    }
}
