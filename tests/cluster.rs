//! Several Herald nodes over the Redis engine (issue #12), against private redis-server
//! processes on free ports (no persistence) and three real herald nodes: every transport on
//! one node gets, in order and with the same ids, what another node publishes; a client
//! resumes on another node (also after its node is killed with SIGKILL); presence, join/leave
//! and server API user commands cross nodes; a Redis restart is survived and reported; a dead
//! shard affects only its channels; start-up names a bad or unreachable Redis.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tungstenite::{connect, stream::MaybeTlsStream, Message, WebSocket};

const SECRET: &str = "cluster-secret-key-123456";
const KEY: &str = "cluster-api-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn node_config(redis: &[u16], prefix: &str) -> String {
    let addrs: Vec<String> = redis.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
    json!({
        "history_size": 100,
        "engine": {"type": "redis", "redis": {"address": addrs, "prefix": prefix, "io_timeout": "2s", "presence_ttl": "3s"}},
        "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": "10s", "pong_timeout": "5s"},
        "http_api": {"key": KEY},
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": true, "history_size": 100, "history_ttl": "300s"},
            "namespaces": [
                {"name": "small", "history_size": 2, "history_ttl": "300s", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true},
                {"name": "chat", "history_size": 100, "history_ttl": "300s", "force_recovery": true,
                 "presence": true, "join_leave": true, "force_push_join_leave": true,
                 "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true,
                 "allow_history_for_subscriber": true, "allow_presence_for_subscriber": true}
            ]
        }
    })
    .to_string()
}

fn nodes(redis: &[u16], prefix: &str, n: usize) -> Vec<Herald> {
    (0..n).map(|_| Herald::start(&node_config(redis, prefix))).collect()
}

fn api(h: &Herald, method: &str, body: Value) -> Value {
    let r = request(h, "POST", &format!("/api/{method}"), &[("X-API-Key", KEY)], body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

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

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn ws_open(h: &Herald, path: &str) -> Ws {
    let (ws, _) = connect(h.ws_url(path)).unwrap();
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// The next text message of a seed `/ws/` subscriber, as JSON.
fn ws_next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message before the timeout") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

/// An SSE (or iframe) reader over a raw socket.
struct Stream {
    r: BufReader<TcpStream>,
}

impl Stream {
    fn open(h: &Herald, path: &str, headers: &str) -> Stream {
        let mut s = h.connect();
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("200"), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Stream { r }
    }

    /// The next line that starts with `prefix`, without it.
    fn next(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.r.read_line(&mut line).expect("stream line before the timeout");
            assert!(n > 0, "stream ended");
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }
}

/// A Centrifugo JSON client over tungstenite.
struct Cf {
    ws: Ws,
    next_id: u32,
    pushes: Vec<Value>,
}

impl Cf {
    fn open(h: &Herald, user: &str) -> Cf {
        let ws = ws_open(h, "/connection/websocket");
        let mut c = Cf { ws, next_id: 1, pushes: Vec::new() };
        let r = c.call("connect", json!({"token": token(json!({"sub": user}))}));
        assert!(r.get("connect").is_some(), "{r}");
        c
    }
    fn read(&mut self) -> Vec<Value> {
        loop {
            match self.ws.read().expect("a frame before the timeout") {
                Message::Text(t) => return t.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws.send(Message::Text(json!({"id": id, method: params}).to_string())).unwrap();
        loop {
            for v in self.read() {
                if v["id"] == id {
                    return v;
                }
                if v.get("push").is_some() {
                    self.pushes.push(v);
                } else if v.as_object().is_some_and(|o| o.is_empty()) {
                    self.ws.send(Message::Text("{}".into())).unwrap();
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
                    self.pushes.push(v);
                } else if v.as_object().is_some_and(|o| o.is_empty()) {
                    self.ws.send(Message::Text("{}".into())).unwrap();
                }
            }
            if !self.pushes.is_empty() {
                return self.pushes.remove(0);
            }
        }
    }
    /// The next publication push's (offset, data).
    fn publication(&mut self) -> (u64, Value) {
        loop {
            let p = self.push();
            if let Some(publ) = p["push"].get("pub") {
                return (publ["offset"].as_u64().unwrap_or(0), publ["data"].clone());
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

#[test]
fn every_transport_on_other_nodes_gets_what_a_node_publishes() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t1", 3);
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let mut ws = ws_open(b, "/ws/?cid=news");
    let mut sse = Stream::open(b, "/sse/?cid=news", "");
    let mut iframe = Stream::open(c, "/stream/?cid=news", "");
    let mut cf = Cf::open(c, "u1");
    let r = cf.call("subscribe", json!({"channel": "news"}));
    assert!(r.get("subscribe").is_some(), "{r}");
    // The long-poll waits on C while A publishes.
    let lp_node = c.addr;
    let lp = std::thread::spawn(move || {
        let mut s = TcpStream::connect(lp_node).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET /listen/?cid=news&since=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let v = read_response(&mut s).expect("long-poll answer").json();
        let mut ids: Vec<u64> = v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
        ids.reverse();
        ids
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    for i in 1..=10u64 {
        let id = if i % 2 == 1 {
            publish(a, "news", format!("{{\"n\":{i}}}").as_bytes())["id"].as_u64().unwrap()
        } else {
            let r = api(a, "publish", json!({"channel": "news", "data": {"n": i}}));
            r["result"]["offset"].as_u64().unwrap()
        };
        ids.push(id);
    }
    assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "one sequence for the cluster");
    for i in 1..=10u64 {
        let m = ws_next(&mut ws);
        assert_eq!((m["id"].as_u64(), &m["data"]["n"]), (Some(i), &json!(i)), "/ws/ on B");
        assert_eq!(sse.next("id: "), i.to_string(), "/sse/ on B");
        let line = iframe.next("<script>");
        assert!(line.contains(&format!("\"id\":{i},")), "/stream/ on C: {line}");
        let (off, data) = cf.publication();
        assert_eq!((off, data), (i, json!({"n": i})), "Centrifugo on C");
    }
    let lp_ids = lp.join().unwrap();
    assert_eq!(lp_ids.first(), Some(&1), "/listen/ on C answered with the first publication");
    let polled = get(c, "/messages/?cid=news&since=0&limit=100").json();
    let got: Vec<u64> = polled["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(got, (1..=10).rev().collect::<Vec<_>>(), "/messages/ on C reads the shared history");
    // History and the stream position through the API of another node.
    let h = api(b, "history", json!({"channel": "news", "limit": -1}));
    assert_eq!(h["result"]["publications"].as_array().unwrap().len(), 10);
    assert_eq!(h["result"]["offset"], 10);
}

#[test]
fn a_client_resumes_on_another_node_even_after_its_node_is_killed() {
    let redis = Redis::start();
    let mut n = nodes(&[redis.port], "t2", 3);
    {
        let (a, b) = (&n[0], &n[1]);
        let mut ws = ws_open(b, "/ws/?cid=feed");
        for i in 1..=3 {
            publish(a, "feed", format!("{i}").as_bytes());
        }
        for i in 1..=3 {
            assert_eq!(ws_next(&mut ws)["id"], i);
        }
    }
    // /api/info and /stats of any node list the three live nodes.
    let uids = |h: &Herald| -> Vec<String> {
        let v = api(h, "info", json!({}));
        v["result"]["nodes"].as_array().unwrap().iter().map(|n| n["uid"].as_str().unwrap().to_string()).collect()
    };
    assert!(wait_until(Duration::from_secs(10), || uids(&n[0]).len() == 3), "{:?}", uids(&n[0]));
    let stats = get(&n[2], "/stats").json();
    assert_eq!(stats["nodes"].as_array().map(|a| a.len()), Some(3), "{}", stats["nodes"]);
    let b_uid = api(&n[1], "info", json!({}))["result"]["nodes"][0]["uid"].as_str().unwrap().to_string();
    // Node B dies without a goodbye; its client had id 3.
    let _ = n[1].child.kill();
    let _ = n[1].child.wait();
    for i in 4..=6 {
        publish(&n[0], "feed", format!("{i}").as_bytes());
    }
    let c = &n[2];
    let mut ws = ws_open(c, "/ws/?cid=feed&since=3");
    for i in 4..=6 {
        assert_eq!(ws_next(&mut ws)["id"], i, "replayed on C from history");
    }
    publish(&n[0], "feed", b"7");
    assert_eq!(ws_next(&mut ws)["id"], 7, "then live");
    // SSE resumes with Last-Event-ID on C.
    let mut sse = Stream::open(c, "/sse/?cid=feed", "Last-Event-ID: 5\r\n");
    assert_eq!(sse.next("id: "), "6");
    assert_eq!(sse.next("id: "), "7");
    // Centrifugo recovery on C of what was published through A.
    let mut cf = Cf::open(c, "u");
    let r = cf
        .call("subscribe", json!({"channel": "feed", "recoverable": true, "recover": true, "offset": 0, "epoch": ""}));
    let pubs = r["subscribe"]["publications"].as_array().cloned().unwrap_or_default();
    assert!(r["subscribe"]["recovered"].as_bool().unwrap_or(false), "{r}");
    assert_eq!(pubs.len(), 7, "{r}");
    // The dead node leaves the node list once its heartbeat is 10 s old.
    assert!(wait_until(Duration::from_secs(16), || !uids(&n[0]).contains(&b_uid)), "{:?}", uids(&n[0]));
    assert_eq!(uids(&n[0]).len(), 2);
}

#[test]
fn presence_join_leave_and_user_commands_cross_nodes() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t3", 3);
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let mut on_b = Cf::open(b, "alice");
    assert!(on_b.call("subscribe", json!({"channel": "chat:room"})).get("subscribe").is_some());
    let mut on_c = Cf::open(c, "bob");
    assert!(on_c.call("subscribe", json!({"channel": "chat:room"})).get("subscribe").is_some());
    // Alice on B sees Bob join through C.
    let join = loop {
        let p = on_b.push();
        if p["push"].get("join").is_some() && p["push"]["join"]["info"]["user"] == "bob" {
            break p;
        }
    };
    assert_eq!(join["push"]["channel"], "chat:room");
    let p = api(a, "presence", json!({"channel": "chat:room"}));
    let users: Vec<&str> =
        p["result"]["presence"].as_object().unwrap().values().map(|e| e["user"].as_str().unwrap()).collect();
    assert!(users.contains(&"alice") && users.contains(&"bob"), "{p}");
    let st = api(a, "presence_stats", json!({"channel": "chat:room"}));
    assert_eq!((st["result"]["num_clients"].as_u64(), st["result"]["num_users"].as_u64()), (Some(2), Some(2)));
    // A client publish on C reaches B with the publisher's info.
    assert!(on_c.call("publish", json!({"channel": "chat:room", "data": {"hi": 1}})).get("publish").is_some());
    let publ = loop {
        let p = on_b.push();
        if let Some(x) = p["push"].get("pub") {
            break x.clone();
        }
    };
    assert_eq!((publ["data"].clone(), publ["info"]["user"].clone()), (json!({"hi": 1}), json!("bob")));
    // The server API on A disconnects Bob on C.
    api(a, "disconnect", json!({"user": "bob", "disconnect": {"code": 4011, "reason": "bye"}}));
    assert_eq!(on_c.close_code(), Some(4011));
    // Bob's leave reaches Alice; his presence is gone.
    loop {
        let p = on_b.push();
        if p["push"].get("leave").is_some() && p["push"]["leave"]["info"]["user"] == "bob" {
            break;
        }
    }
    let p = api(a, "presence", json!({"channel": "chat:room"}));
    assert_eq!(p["result"]["presence"].as_object().unwrap().len(), 1, "{p}");
    // Carol joins through C, then C dies without a goodbye: her entry expires with the
    // presence TTL (3 s here), since nobody refreshes it.
    let mut on_c2 = Cf::open(c, "carol");
    assert!(on_c2.call("subscribe", json!({"channel": "chat:room"})).get("subscribe").is_some());
    let count = || api(a, "presence", json!({"channel": "chat:room"}))["result"]["presence"].as_object().unwrap().len();
    assert_eq!(count(), 2);
    // Alive, her entry outlives the TTL (its node refreshes it).
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(count(), 2, "refreshed while its node lives");
    // SIGKILL by the PID this test started (the handle is borrowed above), with Carol still
    // connected: her node never says goodbye.
    let killed = Command::new("kill").args(["-KILL", &c.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(8), || count() == 1), "a dead node's clients leave presence");
    assert!(t.elapsed() >= Duration::from_millis(500), "gone by expiry, not by a goodbye");
    drop(on_c2);
}

#[test]
fn a_redis_restart_is_survived_and_reported() {
    let mut redis = Redis::start();
    let port = redis.port;
    let n = nodes(&[port], "t4", 3);
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    let mut ws = ws_open(b, "/ws/?cid=live");
    let mut cf = Cf::open(c, "u");
    assert!(cf.call("subscribe", json!({"channel": "live"})).get("subscribe").is_some());
    for i in 1..=3 {
        publish(a, "live", format!("{i}").as_bytes());
        assert_eq!(ws_next(&mut ws)["id"], i);
        assert_eq!(cf.publication().0, i);
    }
    redis.kill();
    // While Redis is away publishes fail clearly; nobody is disconnected.
    let r = request(a, "POST", "/publish/?cid=live", &[], b"4");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("Redis"), "{}", r.text());
    let r = api(a, "publish", json!({"channel": "live", "data": 4}));
    assert_eq!(r["error"]["code"], 100, "{r}");
    // Redis comes back empty: the nodes reconnect and see a new epoch.
    let _redis = Redis::on(port);
    let t = Instant::now();
    let id = loop {
        let r = request(a, "POST", "/publish/?cid=live", &[], b"5");
        if r.status == 200 {
            break r.json()["id"].as_u64().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(15), "no reconnect: {}", r.text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(id, 1, "a new stream after Redis lost its data");
    // The /ws/ subscriber is told it missed messages, then gets the new stream's messages.
    let notice = ws_next(&mut ws);
    assert_eq!(notice["missed"], true, "{notice}");
    assert_eq!(ws_next(&mut ws)["id"], 1);
    // The Centrifugo client is unsubscribed with "insufficient state" (its SDK resubscribes).
    let unsub = loop {
        let p = cf.push();
        if p["push"].get("unsubscribe").is_some() {
            break p;
        }
    };
    assert_eq!(unsub["push"]["unsubscribe"]["code"], 2500, "{unsub}");
    // Its recovery from the old epoch cannot succeed: it is told, and gets the new stream.
    let r = cf.call(
        "subscribe",
        json!({"channel": "live", "recoverable": true, "recover": true, "offset": 3, "epoch": "old"}),
    );
    assert!(r.get("subscribe").is_some(), "{r}");
    assert!(!r["subscribe"]["recovered"].as_bool().unwrap_or(false), "{r}");
    assert_eq!(r["subscribe"]["offset"], 1, "{r}");
}

#[test]
fn one_dead_shard_leaves_the_other_channels_alone() {
    let r0 = Redis::start();
    let mut r1 = Redis::start();
    let n = nodes(&[r0.port, r1.port], "t5", 2);
    let (a, b) = (&n[0], &n[1]);
    let on = |s: usize| (0..).map(|i| format!("ch{i}")).find(|c| herald::hub::redis::shard::of(c, 2) == s).unwrap();
    let (c0, c1) = (on(0), on(1));
    let mut w0 = ws_open(b, &format!("/ws/?cid={c0}"));
    let mut w1 = ws_open(b, &format!("/ws/?cid={c1}"));
    publish(a, &c0, b"1");
    publish(a, &c1, b"1");
    assert_eq!(ws_next(&mut w0)["id"], 1);
    assert_eq!(ws_next(&mut w1)["id"], 1);
    r1.kill();
    let r = request(a, "POST", &format!("/publish/?cid={c1}"), &[], b"2");
    assert_eq!(r.status, 503, "{}", r.text());
    for i in 2..=4 {
        assert_eq!(publish(a, &c0, b"x")["id"], i, "shard 0 goes on");
        assert_eq!(ws_next(&mut w0)["id"], i);
    }
}

#[test]
fn start_up_names_a_bad_or_unreachable_redis() {
    let dead = free_port();
    for (addr, want) in [
        (format!("redis://127.0.0.1:{dead}"), format!("redis://127.0.0.1:{dead}")),
        ("rediss://127.0.0.1:1".to_string(), "rediss://127.0.0.1:1".to_string()),
        ("redis://127.0.0.1:notaport".to_string(), "notaport".to_string()),
    ] {
        let cfg = json!({"engine": {"type": "redis", "redis": {"address": [addr]}}}).to_string();
        let path = std::env::temp_dir().join(format!("herald-cluster-bad-{}.json", std::process::id()));
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--bind", "127.0.0.1", "--port", "0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "must not start with {want}");
        assert!(err.contains(&want), "the error names the address: {err}");
    }
}

#[test]
fn pipelined_publishes_through_redis_are_answered_in_order() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t6", 1);
    let mut s = n[0].connect();
    let mut all = Vec::new();
    for i in 0..500 {
        write!(
            all,
            "POST /publish/?cid=pipe HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{i}",
            i.to_string().len()
        )
        .unwrap();
    }
    s.write_all(&all).unwrap();
    let mut ids = Vec::new();
    let mut r = BufReader::new(s);
    while ids.len() < 500 {
        let resp = read_response(&mut r).expect("an answer");
        assert_eq!(resp.status, 200, "{}", resp.text());
        ids.push(resp.json()["id"].as_u64().unwrap());
    }
    assert_eq!(ids, (1..=500).collect::<Vec<_>>(), "answers in request order, ids in publish order");
    let mut rest = Vec::new();
    let _ = r.get_mut().set_read_timeout(Some(Duration::from_millis(200)));
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn a_batch_of_publishes_crosses_nodes_in_order_with_per_command_answers() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t12", 2);
    let mut a = ws_open(&n[1], "/ws/?cid=bat1");
    let mut b = ws_open(&n[1], "/ws/?cid=bat2");
    std::thread::sleep(Duration::from_millis(300));
    // 200 publishes over two channels in one request, one to an unknown namespace in the
    // middle: it fails alone, every other command gets its offset, in order.
    let mut cmds = Vec::new();
    for i in 0..200 {
        let ch = if i % 2 == 0 { "bat1" } else { "bat2" };
        cmds.push(json!({"publish": {"channel": ch, "data": {"i": i}}}));
        if i == 100 {
            cmds.push(json!({"publish": {"channel": "nosuchns:x", "data": {"i": -1}}}));
        }
    }
    let r = api(&n[0], "batch", json!({ "commands": cmds }));
    let replies = r["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 201, "{r}");
    assert_eq!(replies[101]["error"]["code"], 102, "unknown namespace: {}", replies[101]);
    let offsets: Vec<u64> = replies
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != 101)
        .map(|(_, x)| x["publish"]["offset"].as_u64().unwrap_or_else(|| panic!("{x}")))
        .collect();
    let want: Vec<u64> = (1..=100).flat_map(|k| [k, k]).collect();
    assert_eq!(offsets, want, "each channel's offsets in command order");
    // Node 1's subscribers get their channel's 100 messages in order, ids equal to offsets.
    for (ws, first) in [(&mut a, 0), (&mut b, 1)] {
        for k in 0..100u64 {
            let m = ws_next(ws);
            assert_eq!(m["id"].as_u64(), Some(k + 1), "{m}");
            assert_eq!(m["data"]["i"].as_u64(), Some(first + 2 * k), "{m}");
        }
    }
}

/// Send one command to Redis over a raw socket; the reply's first line.
fn redis_cmd(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// Publish `bodies` to `channel` on one connection, pipelined (all written at once).
fn publish_burst(h: &Herald, channel: &str, bodies: &[&str]) -> Vec<u64> {
    let mut s = h.connect();
    let mut all = Vec::new();
    for b in bodies {
        write!(all, "POST /publish/?cid={channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{b}", b.len())
            .unwrap();
    }
    s.write_all(&all).unwrap();
    let mut r = BufReader::new(s);
    bodies.iter().map(|_| read_response(&mut r).expect("answer").json()["id"].as_u64().unwrap()).collect()
}

#[test]
fn a_dropped_feed_is_read_back_from_history_or_reported() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t7", 2);
    let (a, b) = (&n[0], &n[1]);
    let mut keep = ws_open(b, "/ws/?cid=keep");
    let mut small = ws_open(b, "/ws/?cid=small:x");
    let mut cf = Cf::open(b, "u");
    assert!(cf.call("subscribe", json!({"channel": "small:x"})).get("subscribe").is_some());
    for i in 1..=3 {
        publish(a, "keep", b"0");
        publish(a, "small:x", b"0");
        assert_eq!(ws_next(&mut keep)["id"], i);
        assert_eq!(ws_next(&mut small)["id"], i);
        assert_eq!(cf.publication().0, i);
    }
    // Every node's pub/sub connection drops; publications go on meanwhile.
    let killed = redis_cmd(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    assert_eq!(publish_burst(a, "keep", &["4", "5", "6"]), vec![4, 5, 6]);
    assert_eq!(publish_burst(a, "small:x", &["4", "5", "6", "7", "8"]), vec![4, 5, 6, 7, 8]);
    // History holds what B missed on `keep`: delivered once each, in order.
    for i in 4..=6 {
        assert_eq!(ws_next(&mut keep)["id"], i, "read back after the reconnect");
    }
    publish(a, "keep", b"7");
    assert_eq!(ws_next(&mut keep)["id"], 7, "no duplicate, no gap");
    // `small:x` keeps 2: ids 4..6 are gone; the subscriber is told, then gets 7 and 8.
    let notice = ws_next(&mut small);
    assert_eq!(notice["missed"], true, "{notice}");
    assert_eq!(ws_next(&mut small)["id"], 7);
    assert_eq!(ws_next(&mut small)["id"], 8);
    let unsub = loop {
        let p = cf.push();
        if p["push"].get("unsubscribe").is_some() {
            break p;
        }
    };
    assert_eq!(unsub["push"]["unsubscribe"]["code"], 2500, "{unsub}");
}

#[test]
fn emulation_commands_posted_to_another_node_reach_their_session() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t8", 2);
    let (a, b) = (&n[0], &n[1]);
    // centrifuge-js's http_stream transport: the stream on B...
    let mut s = b.connect();
    let connect = json!({"id": 1, "connect": {"token": token(json!({"sub": "em"}))}}).to_string();
    write!(
        s,
        "POST /connection/http_stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{connect}",
        connect.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut next_json = || -> Value {
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "stream ended");
            let t = l.trim();
            if t.starts_with('{') && t != "{}" {
                return serde_json::from_str(t).unwrap();
            }
        }
    };
    let reply = next_json();
    // A knows B once B's heartbeat reached it.
    let b_uid = api(b, "info", json!({}))["result"]["nodes"][0]["uid"].as_str().unwrap().to_string();
    let known = || api(a, "info", json!({}))["result"]["nodes"].as_array().unwrap().iter().any(|n| n["uid"] == b_uid);
    assert!(wait_until(Duration::from_secs(6), known));
    let session = reply["connect"]["session"].as_str().expect("a session").to_string();
    let node = reply["connect"]["node"].as_str().expect("a node").to_string();
    // ...and its commands posted to A, which carries them to B.
    let data = json!({"id": 2, "subscribe": {"channel": "news"}}).to_string();
    let body = json!({"session": session, "node": node, "data": data}).to_string();
    let resp = request(a, "POST", "/emulation", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(resp.status, 204, "{}", resp.text());
    let sub = next_json();
    assert_eq!(sub["id"], 2, "{sub}");
    assert!(sub.get("subscribe").is_some(), "{sub}");
    publish(a, "news", b"{\"x\":1}");
    let push = next_json();
    assert_eq!(push["push"]["pub"]["data"], json!({"x": 1}), "{push}");
    // A node that is not alive: 404, nothing is published.
    let body = json!({"session": "w0.00", "node": "nope", "data": "{}"}).to_string();
    assert_eq!(request(a, "POST", "/emulation", &[], body.as_bytes()).status, 404);
}

#[test]
fn unidirectional_transports_and_server_side_subscriptions_cross_nodes() {
    let redis = Redis::start();
    let n = nodes(&[redis.port], "t9", 2);
    let (a, b) = (&n[0], &n[1]);
    // The token's channels are subscribed server-side, in Redis, before the connect push.
    let t = token(json!({"sub": "u", "channels": ["news", "chat:room"]}));
    let mut ws = ws_open(b, "/connection/uni_websocket");
    ws.send(Message::Text(json!({"token": t}).to_string())).unwrap();
    let text = |ws: &mut Ws| -> Value {
        loop {
            if let Message::Text(t) = ws.read().expect("a message") {
                return serde_json::from_str(&t).unwrap();
            }
        }
    };
    let first = text(&mut ws);
    assert_eq!(first["connect"]["subs"].as_object().map(|s| s.len()), Some(2), "{first}");
    let mut s = b.connect();
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
    assert!(v["connect"]["client"].is_string(), "{v}");
    for i in 1..=3 {
        api(a, "publish", json!({"channel": "news", "data": {"n": i}}));
    }
    for i in 1..=3u64 {
        let p = loop {
            let v = text(&mut ws);
            if v.get("pub").is_some() {
                break v;
            }
        };
        assert_eq!((p["channel"].as_str(), p["pub"]["offset"].as_u64()), (Some("news"), Some(i)), "{p}");
        let p = loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0);
            let v: Value = serde_json::from_str(line.trim()).unwrap_or_default();
            if v.get("pub").is_some() {
                break v;
            }
        };
        assert_eq!(p["pub"]["offset"].as_u64(), Some(i), "{p}");
    }
    // The server API subscribes the user on B from A.
    api(a, "subscribe", json!({"user": "u", "channel": "chat:other"}));
    let sub = loop {
        let v = text(&mut ws);
        if v.get("subscribe").is_some() {
            break v;
        }
    };
    assert_eq!(sub["channel"], "chat:other", "{sub}");
    api(a, "publish", json!({"channel": "chat:other", "data": "x"}));
    let p = loop {
        let v = text(&mut ws);
        if v.get("pub").is_some() {
            break v;
        }
    };
    assert_eq!((p["channel"].as_str(), p["pub"]["data"].as_str()), (Some("chat:other"), Some("x")));
}
