//! The Centrifugo client protocol through the session seam, without sockets: a WebSocket
//! upgrade and masked client frames in, server frames decoded and their JSON checked.
//! Covers connect (anonymous, tokens), every subscribe permission path, recovery, and the
//! ping/pong timer.

use crate::proto::jwt::{sign_hs256, Secret};
use crate::transport::session::State;
use crate::transport::testkit::Kit;
use serde_json::{json, Value};

const SECRET: &str = "unit-secret";

/// A kit whose config is `client` / `channel` sections merged into defaults for these tests.
pub(super) fn kit(client: Value, channel: Value) -> Kit {
    let mut c = json!({"token": {"hmac_secret_key": SECRET}, "ping_interval": "10s", "pong_timeout": "3s"});
    if let (Some(base), Some(extra)) = (c.as_object_mut(), client.as_object()) {
        base.extend(extra.clone());
    }
    Kit::with_json(&json!({"client": c, "channel": channel}).to_string())
}

/// The channel section most tests use.
pub(super) fn channels() -> Value {
    json!({
        "without_namespace": {"allow_subscribe_for_client": true},
        "namespaces": [
            {"name": "open", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true},
            {"name": "closed"},
            {"name": "dm", "allow_user_limited_channels": true},
            {"name": "hist", "history_size": 10, "history_ttl": "300s", "force_recovery": true,
             "allow_subscribe_for_client": true}
        ]
    })
}

pub(super) fn token(claims: Value) -> String {
    sign_hs256(&Secret::new(SECRET.as_bytes()), &claims)
}

/// A masked client frame (FIN set) with a 7- or 16-bit length.
pub(super) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Decode unmasked server frames: (opcode, payload) each; panics on a partial frame.
pub(super) fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 2, "partial frame head");
        assert_eq!(b[0] & 0x80, 0x80, "server frames are final");
        assert_eq!(b[1] & 0x80, 0, "server frames are unmasked");
        let op = b[0] & 0x0f;
        let (len, head) = match b[1] & 0x7f {
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        assert!(b.len() >= head + len, "partial frame payload");
        out.push((op, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
    out
}

#[test]
fn frame_decoder_reads_every_length_form() {
    for n in [0usize, 125, 126, 65535, 65536] {
        let payload = vec![b'x'; n];
        let f = crate::proto::ws::frame(crate::proto::ws::Opcode::Text, &payload);
        let frames = server_frames(&f);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 1);
        assert_eq!(frames[0].1.len(), n);
    }
}

/// A WebSocket session on `/connection/websocket`, upgrade answered.
pub(super) fn ws(k: &mut Kit) -> usize {
    let c = k.open();
    let req = "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    k.input(c, req.as_bytes());
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 101"), "{t}");
    c
}

pub(super) fn send(k: &mut Kit, c: usize, cmd: Value) {
    k.input(c, &client_frame(1, cmd.to_string().as_bytes()));
}

/// Everything the server sent: JSON messages of text frames (one per line), and the close
/// code if a close frame came.
pub(super) fn read(k: &mut Kit, c: usize) -> (Vec<Value>, Option<u16>) {
    let mut msgs = Vec::new();
    let mut close = None;
    for (op, p) in server_frames(&k.output(c)) {
        match op {
            1 => {
                for line in p.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    msgs.push(serde_json::from_slice(line).expect("server JSON"));
                }
            }
            8 => close = Some(u16::from_be_bytes([p[0], p[1]])),
            op => panic!("unexpected opcode {op}"),
        }
    }
    (msgs, close)
}

/// The one reply the server sent (no close).
pub(super) fn reply(k: &mut Kit, c: usize) -> Value {
    let (mut msgs, close) = read(k, c);
    assert_eq!(close, None, "closed: {msgs:?}");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    msgs.remove(0)
}

pub(super) fn call(k: &mut Kit, c: usize, id: u32, method: &str, params: Value) -> Value {
    send(k, c, json!({"id": id, method: params}));
    let r = reply(k, c);
    assert_eq!(r["id"], id, "{r}");
    r
}

/// Connect with `token` ("" for none); returns the reply.
pub(super) fn connect(k: &mut Kit, c: usize, token: &str) -> Value {
    call(k, c, 1, "connect", json!({"token": token}))
}

/// A connected session for `user` ("" for anonymous, which the config must allow).
pub(super) fn user(k: &mut Kit, user: &str) -> usize {
    let c = ws(k);
    let t = if user.is_empty() { String::new() } else { token(json!({"sub": user})) };
    let r = connect(k, c, &t);
    assert!(r["connect"]["client"].is_string(), "{r}");
    c
}

pub(super) fn subscribe(k: &mut Kit, c: usize, params: Value) -> Value {
    call(k, c, 2, "subscribe", params)
}

pub(super) fn error_code(r: &Value) -> u64 {
    r["error"]["code"].as_u64().unwrap_or_else(|| panic!("no error in {r}"))
}

/// The close code after a command that must disconnect.
pub(super) fn closed_with(k: &mut Kit, c: usize) -> u16 {
    let (msgs, close) = read(k, c);
    assert!(msgs.is_empty(), "{msgs:?}");
    assert!(k.closed(c));
    close.expect("a close frame")
}

#[test]
fn anonymous_connect_allowed() {
    let mut k = kit(json!({"allow_anonymous_connect_without_token": true}), channels());
    let c = ws(&mut k);
    let r = connect(&mut k, c, "");
    let res = &r["connect"];
    assert_eq!(res["client"].as_str().unwrap().len(), 36, "{r}");
    assert_eq!(res["version"], crate::proto::centrifugo::VERSION);
    assert_eq!(res["ping"], 10);
    assert_eq!(res["pong"], true);
    assert!(res.get("expires").is_none() && res.get("subs").is_none(), "{r}");
    assert_eq!(&*k.s(c).cf.as_ref().unwrap().user, "");
}

#[test]
fn anonymous_connect_refused_closes_3501() {
    let mut k = kit(json!({}), channels());
    let c = ws(&mut k);
    send(&mut k, c, json!({"id": 1, "connect": {}}));
    assert_eq!(closed_with(&mut k, c), 3501);
}

#[test]
fn token_connect_sets_user_and_expiry() {
    let mut k = kit(json!({}), channels());
    let now = k.env.unix_s;
    let c = ws(&mut k);
    let r = connect(&mut k, c, &token(json!({"sub": "alice", "exp": now + 600, "info": {"n": 1}})));
    assert_eq!(r["connect"]["expires"], true);
    assert_eq!(r["connect"]["ttl"], 600);
    let cf = k.s(c).cf.as_ref().unwrap();
    assert_eq!(&*cf.user, "alice");
    assert!(cf.connected);
    assert_eq!(cf.expires_at, Some(now + 600));
    assert_eq!(cf.conn_info.as_deref(), Some(&b"{\"n\":1}"[..]));
}

#[test]
fn token_channels_become_server_side_subscriptions() {
    let mut k = kit(json!({}), channels());
    let c = ws(&mut k);
    // `closed:x` is refused to clients but a server-side subscription needs no permission;
    // `nope:x` names no namespace and is left out.
    let r = connect(&mut k, c, &token(json!({"sub": "alice", "channels": ["closed:x", "nope:x"]})));
    let subs = r["connect"]["subs"].as_object().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(subs.keys().collect::<Vec<_>>(), vec!["closed:x"]);
    k.publish("closed:x", r#"{"m":1}"#);
    let (msgs, _) = read(&mut k, c);
    assert_eq!(msgs[0]["push"]["channel"], "closed:x");
    assert_eq!(msgs[0]["push"]["pub"]["data"]["m"], 1);
}

#[test]
fn expired_token_replies_109_and_keeps_the_connection() {
    let mut k = kit(json!({}), channels());
    let now = k.env.unix_s;
    let c = ws(&mut k);
    let r = connect(&mut k, c, &token(json!({"sub": "alice", "exp": now - 10})));
    assert_eq!(error_code(&r), 109);
    assert_eq!(r["error"]["message"], "token expired");
    assert!(!k.closed(c));
    // The client may retry with a fresh token.
    let r = connect(&mut k, c, &token(json!({"sub": "alice"})));
    assert!(r["connect"]["client"].is_string(), "{r}");
}

#[test]
fn bad_signature_closes_3500() {
    let mut k = kit(json!({}), channels());
    let c = ws(&mut k);
    let t = sign_hs256(&Secret::new(b"another-secret"), &json!({"sub": "alice"}));
    send(&mut k, c, json!({"id": 1, "connect": {"token": t}}));
    assert_eq!(closed_with(&mut k, c), 3500);
}

#[test]
fn subscribe_allowed_for_client_user_and_anonymous_per_namespace() {
    let mut k = kit(json!({"allow_anonymous_connect_without_token": true}), channels());
    let alice = user(&mut k, "alice");
    let anon = user(&mut k, "");
    // Top level: allow_subscribe_for_client, not for anonymous.
    assert_eq!(subscribe(&mut k, alice, json!({"channel": "news"}))["subscribe"], json!({}));
    assert_eq!(error_code(&subscribe(&mut k, anon, json!({"channel": "news"}))), 103);
    // `open`: anonymous too.
    assert_eq!(subscribe(&mut k, anon, json!({"channel": "open:x"}))["subscribe"], json!({}));
    // `closed`: nobody.
    let r = subscribe(&mut k, alice, json!({"channel": "closed:x"}));
    assert_eq!((error_code(&r), r["error"]["message"].as_str()), (103, Some("permission denied")));
    assert_eq!(error_code(&subscribe(&mut k, anon, json!({"channel": "closed:x"}))), 103);
    assert!(!k.closed(alice) && !k.closed(anon));
    let subs: Vec<String> = k.s(alice).cf.as_ref().unwrap().subs.iter().map(|s| s.channel.to_string()).collect();
    assert_eq!(subs, vec!["news"]);
}

#[test]
fn private_channel_needs_a_subscription_token() {
    let mut k = kit(json!({}), channels());
    let now = k.env.unix_s;
    let c = user(&mut k, "alice");
    assert_eq!(error_code(&subscribe(&mut k, c, json!({"channel": "$secret"}))), 103);
    let t = token(json!({"sub": "alice", "channel": "$secret", "exp": now + 60, "info": {"role": "x"}}));
    let r = subscribe(&mut k, c, json!({"channel": "$secret", "token": t}));
    assert_eq!(r["subscribe"], json!({"expires": true, "ttl": 60}), "{r}");
    let cf = k.s(c).cf.as_ref().unwrap();
    let sub = &cf.subs[0];
    assert_eq!(sub.expires_at, Some(now + 60));
    let info: Value = serde_json::from_slice(&cf.sub_info(sub)).unwrap();
    assert_eq!(info["user"], "alice");
    assert_eq!(info["chan_info"]["role"], "x");
}

#[test]
fn subscription_token_for_another_channel_closes_3500() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    let t = token(json!({"sub": "alice", "channel": "$other"}));
    send(&mut k, c, json!({"id": 2, "subscribe": {"channel": "$secret", "token": t}}));
    assert_eq!(closed_with(&mut k, c), 3500);
}

#[test]
fn subscription_token_for_another_user_closes_3500() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    let t = token(json!({"sub": "bob", "channel": "$secret"}));
    send(&mut k, c, json!({"id": 2, "subscribe": {"channel": "$secret", "token": t}}));
    assert_eq!(closed_with(&mut k, c), 3500);
}

#[test]
fn expired_or_forged_subscription_token_is_an_error_reply() {
    let mut k = kit(json!({}), channels());
    let now = k.env.unix_s;
    let c = user(&mut k, "alice");
    let t = token(json!({"sub": "alice", "channel": "$secret", "exp": now - 1}));
    assert_eq!(error_code(&subscribe(&mut k, c, json!({"channel": "$secret", "token": t}))), 109);
    let t = sign_hs256(&Secret::new(b"forged"), &json!({"sub": "alice", "channel": "$secret"}));
    assert_eq!(error_code(&subscribe(&mut k, c, json!({"channel": "$secret", "token": t}))), 103);
    assert!(!k.closed(c));
}

#[test]
fn user_limited_channel_admits_only_its_users() {
    let mut k = kit(json!({"allow_anonymous_connect_without_token": true}), channels());
    let alice = user(&mut k, "alice");
    let carol = user(&mut k, "carol");
    let anon = user(&mut k, "");
    assert_eq!(subscribe(&mut k, alice, json!({"channel": "dm:x#alice,bob"}))["subscribe"], json!({}));
    assert_eq!(error_code(&subscribe(&mut k, carol, json!({"channel": "dm:x#alice,bob"}))), 103);
    assert_eq!(error_code(&subscribe(&mut k, anon, json!({"channel": "dm:x#alice,bob"}))), 103);
    // Without `#` the `dm` namespace (no allow_subscribe_for_client) refuses.
    assert_eq!(error_code(&subscribe(&mut k, alice, json!({"channel": "dm:x"}))), 103);
}

#[test]
fn unknown_namespace_bad_name_and_already_subscribed() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    assert_eq!(error_code(&subscribe(&mut k, c, json!({"channel": "nope:x"}))), 102);
    assert_eq!(error_code(&subscribe(&mut k, c, json!({"channel": "a b"}))), 107);
    assert_eq!(subscribe(&mut k, c, json!({"channel": "news"}))["subscribe"], json!({}));
    let r = subscribe(&mut k, c, json!({"channel": "news"}));
    assert_eq!((error_code(&r), r["error"]["message"].as_str()), (105, Some("already subscribed")));
}

#[test]
fn channel_limit_gives_106() {
    let mut k = kit(json!({"channel_limit": 2}), channels());
    let c = user(&mut k, "alice");
    assert_eq!(subscribe(&mut k, c, json!({"channel": "a"}))["subscribe"], json!({}));
    assert_eq!(subscribe(&mut k, c, json!({"channel": "b"}))["subscribe"], json!({}));
    assert_eq!(error_code(&subscribe(&mut k, c, json!({"channel": "c"}))), 106);
    // Unsubscribing frees a place.
    assert_eq!(call(&mut k, c, 3, "unsubscribe", json!({"channel": "a"}))["unsubscribe"], json!({}));
    assert_eq!(subscribe(&mut k, c, json!({"channel": "c"}))["subscribe"], json!({}));
}

/// The epoch and offset a fresh subscriber to `ch` sees.
fn position(k: &mut Kit, ch: &str) -> (String, u64) {
    let c = user(k, "observer");
    let r = subscribe(k, c, json!({"channel": ch}));
    let s = &r["subscribe"];
    assert_eq!(s["recoverable"], true, "{r}");
    assert_eq!(s["positioned"], true, "{r}");
    (s["epoch"].as_str().unwrap().to_string(), s["offset"].as_u64().unwrap_or(0))
}

#[test]
fn recovery_returns_missed_publications_in_the_same_epoch() {
    let mut k = kit(json!({}), channels());
    let ids: Vec<u64> = (1..=3).map(|i| k.publish("hist:a", &format!(r#"{{"n":{i}}}"#))).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let (epoch, top) = position(&mut k, "hist:a");
    assert_eq!(top, 3);
    let c = user(&mut k, "alice");
    let r = subscribe(&mut k, c, json!({"channel": "hist:a", "recover": true, "offset": 1, "epoch": epoch}));
    let s = &r["subscribe"];
    assert_eq!(s["was_recovering"], true, "{r}");
    assert_eq!(s["recovered"], true, "{r}");
    assert_eq!(s["epoch"], epoch.as_str());
    // As Centrifugo: a recovered reply carries the client's offset; the publications advance it.
    assert_eq!(s["offset"], 1);
    let pubs = s["publications"].as_array().unwrap();
    let got: Vec<(u64, u64)> =
        pubs.iter().map(|p| (p["offset"].as_u64().unwrap(), p["data"]["n"].as_u64().unwrap())).collect();
    assert_eq!(got, vec![(2, 2), (3, 3)]);
    // Live delivery continues after the recovered ones, without repeats.
    k.publish("hist:a", r#"{"n":4}"#);
    let (msgs, _) = read(&mut k, c);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["push"]["pub"]["offset"], 4);
}

#[test]
fn recovery_with_another_epoch_is_not_recovered() {
    let mut k = kit(json!({}), channels());
    for i in 1..=3 {
        k.publish("hist:a", &format!("{i}"));
    }
    let c = user(&mut k, "alice");
    let r = subscribe(&mut k, c, json!({"channel": "hist:a", "recover": true, "offset": 1, "epoch": "not-it"}));
    let s = &r["subscribe"];
    assert_eq!(s["was_recovering"], true, "{r}");
    assert!(s.get("recovered").is_none(), "{r}");
    assert!(s.get("publications").is_none(), "{r}");
    assert_eq!(s["offset"], 3);
    assert_ne!(s["epoch"], "not-it");
}

fn next_ping_ms(k: &mut Kit, c: usize) -> u64 {
    match &k.s(c).state {
        State::Ws(ws) => ws.next_ping_ms,
        _ => panic!("not a WebSocket session"),
    }
}

/// Move the clock to the session's ping deadline and fire its timer (as the reactor would).
fn fire(k: &mut Kit, c: usize) {
    let due = next_ping_ms(k, c);
    assert!(due >= k.env.now_ms, "deadline in the past");
    k.advance(due - k.env.now_ms);
    k.timer(c);
}

#[test]
fn ping_without_pong_closes_3012() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    let start = k.env.now_ms;
    assert_eq!(next_ping_ms(&mut k, c), start + 10_000, "first ping one interval after connect");
    fire(&mut k, c);
    assert_eq!(reply(&mut k, c), json!({}), "the ping");
    assert_eq!(next_ping_ms(&mut k, c), start + 13_000, "pong due after pong_timeout");
    fire(&mut k, c);
    assert_eq!(closed_with(&mut k, c), 3012);
}

#[test]
fn pong_keeps_the_connection() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    let start = k.env.now_ms;
    fire(&mut k, c);
    assert_eq!(reply(&mut k, c), json!({}));
    k.advance(1_000);
    send(&mut k, c, json!({}));
    assert!(read(&mut k, c).0.is_empty(), "a pong gets no answer");
    assert_eq!(k.s(c).cf.as_ref().unwrap().pong_deadline_ms, None);
    assert_eq!(next_ping_ms(&mut k, c), start + 11_000 + 10_000, "next ping an interval after the pong");
    // Past the old pong deadline nothing happens; the next ping comes on time.
    fire(&mut k, c);
    assert_eq!(reply(&mut k, c), json!({}));
    assert!(!k.closed(c));
}

#[test]
fn stale_connection_without_connect_closes_3502() {
    let mut k = kit(json!({}), channels());
    let c = ws(&mut k);
    fire(&mut k, c);
    assert_eq!(closed_with(&mut k, c), 3502);
}

#[test]
fn api_unsubscribe_pushes_to_the_users_connections() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    subscribe(&mut k, c, json!({"channel": "news"}));
    let cmd = crate::hub::bus::UserCmd::Unsubscribe { user: "alice".into(), channel: "news".into() };
    crate::transport::centrifugo::client::user_command(&mut k.env, &mut k.sessions, &cmd);
    let (msgs, close) = read(&mut k, c);
    assert_eq!(close, None);
    assert_eq!(
        msgs,
        vec![json!({"push": {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}})]
    );
    assert!(k.s(c).cf.as_ref().unwrap().subs.is_empty());
}

#[test]
fn uni_http_stream_gets_bare_pushes_as_lines() {
    let mut k = kit(json!({}), channels());
    let c = k.open();
    let body = json!({"token": token(json!({"sub": "alice", "channels": ["news"]}))}).to_string();
    let req = format!(
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    k.input(c, req.as_bytes());
    let t = k.text(c);
    let (head, rest) = t.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let first: Value = serde_json::from_str(rest.trim_end_matches('\n')).unwrap();
    assert_eq!(first["connect"]["pong"], false);
    assert_eq!(first["connect"]["subs"]["news"], json!({}));
    k.publish("news", "1");
    assert_eq!(k.text(c), "{\"channel\":\"news\",\"pub\":{\"data\":1,\"offset\":1}}\n");
    let cmd = crate::hub::bus::UserCmd::Unsubscribe { user: "alice".into(), channel: "news".into() };
    crate::transport::centrifugo::client::user_command(&mut k.env, &mut k.sessions, &cmd);
    let line: Value = serde_json::from_str(k.text(c).strip_suffix('\n').expect("one line")).unwrap();
    assert_eq!(line, json!({"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}));
}

/// Channels whose history holds large publications (100 x 200 KB).
fn big_history(k: &mut Kit, ch: &str, n: usize, size: usize) {
    let body = format!("\"{}\"", "p".repeat(size));
    for _ in 0..n {
        k.publish(ch, &body);
    }
}

fn big_channels() -> Value {
    json!({"namespaces": [{"name": "big", "history_size": 100, "history_ttl": "300s", "force_recovery": true,
        "allow_subscribe_for_client": true, "allow_history_for_client": true, "allow_history_for_anonymous": true,
        "allow_subscribe_for_anonymous": true, "allow_presence_for_client": true, "presence": true}]})
}

/// Read everything (a fast reader) and decode the JSON messages and close code.
fn read_all(k: &mut Kit, c: usize) -> (Vec<Value>, Option<u16>, usize) {
    let (bytes, peak) = k.read_all(c);
    let mut msgs = Vec::new();
    let mut close = None;
    for (op, p) in server_frames(&bytes) {
        match op {
            1 => msgs.push(serde_json::from_slice(&p).expect("server JSON")),
            8 => close = Some(u16::from_be_bytes([p[0], p[1]])),
            op => panic!("unexpected opcode {op}"),
        }
    }
    (msgs, close, peak)
}

#[test]
fn large_recovery_is_paced_and_complete() {
    let mut k = kit(json!({}), big_channels());
    big_history(&mut k, "big:a", 100, 200_000);
    let c = user(&mut k, "alice");
    let (epoch, _) = {
        let o = user(&mut k, "observer");
        let r = subscribe(&mut k, o, json!({"channel": "big:a"}));
        (r["subscribe"]["epoch"].as_str().unwrap().to_string(), 0)
    };
    send(&mut k, c, json!({"id": 7, "subscribe": {"channel": "big:a", "recover": true, "offset": 0, "epoch": epoch}}));
    let queued = k.s(c).out.len();
    assert!(queued <= k.env.high_water + 250_000, "{queued} bytes queued at once");
    // A live publication during the paced reply comes after it.
    k.publish("big:a", "\"live\"");
    let (msgs, close, peak) = read_all(&mut k, c);
    assert_eq!(close, None);
    assert!(peak <= k.env.high_water + 250_000, "peak {peak}");
    assert_eq!(msgs.len(), 2, "the reply, then the live push");
    let s = &msgs[0]["subscribe"];
    assert_eq!(msgs[0]["id"], 7);
    assert_eq!(s["recovered"], true);
    let offsets: Vec<u64> =
        s["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<u64>>());
    assert_eq!(msgs[1]["push"]["pub"]["offset"], 101);
    assert_eq!(msgs[1]["push"]["pub"]["data"], "live");
}

#[test]
fn history_flood_without_reading_is_bounded() {
    let mut k = kit(json!({"allow_anonymous_connect_without_token": true}), big_channels());
    big_history(&mut k, "big:h", 50, 100_000);
    let c = user(&mut k, "");
    // 100 history commands in one frame, never read: each reply is 5 MB.
    let cmds: Vec<String> =
        (0..100).map(|i| json!({"id": 10 + i, "history": {"channel": "big:h", "limit": -1}}).to_string()).collect();
    k.input(c, &client_frame(1, cmds.join("\n").as_bytes()));
    let (high, cap) = (k.env.high_water, k.env.max_out_queue);
    let s = k.s(c);
    let held = s.replay.as_ref().map(|r| r.held).unwrap_or(0);
    let queued = s.out.len();
    assert!(queued <= high + 200_000, "out-queue {queued} bytes");
    assert!(held < cap, "held {held} bytes");
    assert!(held > 0, "the rest of the replies wait behind");
    eprintln!("100 x 5 MB history replies unread: {queued} bytes queued, {held} bytes held");
    // More frames are not even parsed while it is over the high-water mark.
    k.input(c, &client_frame(1, json!({"id": 999, "presence": {"channel": "big:h"}}).to_string().as_bytes()));
    assert!(!k.s(c).inbuf.is_empty(), "the next frame waits unparsed");
}

#[test]
fn history_replies_arrive_whole_for_a_reader() {
    let mut k = kit(json!({"allow_anonymous_connect_without_token": true}), big_channels());
    big_history(&mut k, "big:h", 50, 100_000);
    let c = user(&mut k, "");
    let cmds: Vec<String> =
        (0..3).map(|i| json!({"id": 10 + i, "history": {"channel": "big:h", "limit": -1}}).to_string()).collect();
    k.input(c, &client_frame(1, cmds.join("\n").as_bytes()));
    let (msgs, close, _) = read_all(&mut k, c);
    assert_eq!(close, None);
    assert_eq!(msgs.len(), 3);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["id"], 10 + i as u64);
        assert_eq!(m["history"]["publications"].as_array().unwrap().len(), 50);
        assert_eq!(m["history"]["offset"], 50);
    }
}

#[test]
fn anonymous_history_and_presence_need_their_options() {
    let ch = json!({"namespaces": [{"name": "n", "history_size": 10, "history_ttl": "300s", "presence": true,
        "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
        "allow_history_for_client": true, "allow_presence_for_client": true}]});
    let mut k = kit(json!({"allow_anonymous_connect_without_token": true}), ch);
    k.publish("n:x", "1");
    let anon = user(&mut k, "");
    assert_eq!(error_code(&call(&mut k, anon, 5, "history", json!({"channel": "n:x", "limit": 10}))), 103);
    assert_eq!(error_code(&call(&mut k, anon, 6, "presence", json!({"channel": "n:x"}))), 103);
    let u = user(&mut k, "bob");
    let r = call(&mut k, u, 5, "history", json!({"channel": "n:x", "limit": 10}));
    assert_eq!(r["history"]["publications"].as_array().unwrap().len(), 1, "{r}");
    let r = call(&mut k, u, 6, "presence", json!({"channel": "n:x"}));
    assert!(r["presence"].is_object(), "{r}");
}

/// With `jwks_public_endpoint`, a token whose key is not loaded yet gets the temporary
/// error 100 (`"temporary": true`: SDKs reconnect or resubscribe with backoff) and the
/// connection stays open; once the set holds the key the same token connects. The Kit
/// starts no fetcher, so the test fills the cell itself.
#[test]
fn jwks_key_not_loaded_is_temporary() {
    use crate::proto::jwk::tests::{OPENSSL_ES512_KID, OPENSSL_ES512_KID_SUB, OPENSSL_P521_X, OPENSSL_P521_Y};
    use crate::proto::jwks::{KeySet, FRESH_S};
    let client = json!({"token": {"hmac_secret_key": SECRET, "jwks_public_endpoint": "http://127.0.0.1:9/jwks"}});
    let mut k = kit(client, json!({"without_namespace": {}}));
    let now = k.env.unix_s;
    let c = ws(&mut k);
    let r = connect(&mut k, c, OPENSSL_ES512_KID);
    assert_eq!(r["error"], json!({"code": 100, "message": "internal server error", "temporary": true}), "{r}");
    assert!(!k.closed(c));
    // The HMAC secret is not used while a JWKS is configured (as in Centrifugo).
    let c2 = ws(&mut k);
    send(&mut k, c2, json!({"id": 1, "connect": {"token": token(json!({"sub": "1"}))}}));
    assert_eq!(closed_with(&mut k, c2), 3500);

    let cell = k.env.shared.jwks[0].1.clone();
    let doc = json!({"keys": [{"kty": "EC", "crv": "P-521", "kid": "k521", "x": OPENSSL_P521_X, "y": OPENSSL_P521_Y}]});
    cell.replace(KeySet::parse(doc.to_string().as_bytes(), now - 2 * FRESH_S).unwrap().0);
    let c3 = ws(&mut k);
    assert!(connect(&mut k, c3, OPENSSL_ES512_KID)["connect"]["client"].is_string());
    // A subscription token by JWKS: fine now, temporary when its key goes missing from a
    // set that is not fresh.
    let r = subscribe(&mut k, c3, json!({"channel": "$private", "token": OPENSSL_ES512_KID_SUB}));
    assert!(r.get("subscribe").is_some(), "{r}");
    let other =
        json!({"keys": [{"kty": "EC", "crv": "P-521", "kid": "other", "x": OPENSSL_P521_X, "y": OPENSSL_P521_Y}]});
    cell.replace(KeySet::parse(other.to_string().as_bytes(), now - 2 * FRESH_S).unwrap().0);
    send(&mut k, c3, json!({"id": 3, "unsubscribe": {"channel": "$private"}}));
    let _ = reply(&mut k, c3);
    let r = subscribe(&mut k, c3, json!({"channel": "$private", "token": OPENSSL_ES512_KID_SUB}));
    assert_eq!((error_code(&r), &r["error"]["temporary"]), (100, &json!(true)), "{r}");
    // Refresh the same way: an error reply, the connection kept.
    let r = call(&mut k, c3, 4, "refresh", json!({"token": OPENSSL_ES512_KID}));
    assert_eq!((error_code(&r), &r["error"]["temporary"]), (100, &json!(true)), "{r}");
    // A fresh set without the kid: the token is invalid (3500), no retry.
    cell.replace(KeySet::parse(other.to_string().as_bytes(), now).unwrap().0);
    let c4 = ws(&mut k);
    send(&mut k, c4, json!({"id": 1, "connect": {"token": OPENSSL_ES512_KID}}));
    assert_eq!(closed_with(&mut k, c4), 3500);
}
