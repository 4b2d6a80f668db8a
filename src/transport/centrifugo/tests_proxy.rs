//! Centrifugo's proxies through the session seam, without sockets or threads: the calls a
//! command makes (kind, JSON body, headers) are held by the test kit's fake proxy threads,
//! and the test answers them as a backend would (or fails them); the session waits parked
//! meanwhile, as with an engine that answers later.

use super::tests::{call, closed_with, error_code, read, reply, send, token, user, ws};
use crate::config::proxy::Kind;
use crate::proto::proxy::Failure;
use crate::transport::testkit::Kit;
use serde_json::{json, Value};

const P: &str = "http://127.0.0.1:9/";

/// A kit with every proxy configured (endpoints never called: the kit answers).
pub(super) fn kit(extra_client: Value) -> Kit {
    let mut client = json!({
        "token": {"hmac_secret_key": "unit-secret"}, "ping_interval": "10s", "pong_timeout": "3s",
        "proxy": {"connect": {"enabled": true, "endpoint": P, "http_headers": ["Cookie", "X-Real-Ip"],
                              "emulated_headers": ["X-Token"],
                              "http": {"static_headers": {"X-Static": "s", "Cookie": "overridden"}}}}
    });
    if let (Some(base), Some(extra)) = (client.as_object_mut(), extra_client.as_object()) {
        for (k, v) in extra {
            if k == "proxy" {
                base["proxy"].as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    let cfg = json!({
        "client": client,
        "channel": {
            "proxy": {"subscribe": {"endpoint": P}, "publish": {"endpoint": P, "include_connection_meta": true},
                      "sub_refresh": {"endpoint": P}},
            "without_namespace": {"allow_subscribe_for_client": true},
            "namespaces": [
                {"name": "p", "subscribe_proxy_enabled": true, "publish_proxy_enabled": true,
                 "history_size": 10, "history_ttl": "60s", "presence": true},
                {"name": "sr", "subscribe_proxy_enabled": true, "sub_refresh_proxy_enabled": true},
                {"name": "dm", "subscribe_proxy_enabled": true, "allow_user_limited_channels": true},
                {"name": "named", "publish_proxy_enabled": true, "publish_proxy_name": "other"}
            ]
        },
        "proxies": [{"name": "other", "endpoint": "http://127.0.0.1:9/other", "binary_encoding": true}],
        "rpc": {"proxy": {"endpoint": P}, "without_namespace": {"proxy_enabled": true},
                "namespaces": [{"name": "off"}], "ping": {"enabled": true}}
    });
    Kit::with_json(&cfg.to_string())
}

/// A `/connection/websocket` session whose upgrade carried `extra` headers.
fn ws_with(k: &mut Kit, extra: &str) -> usize {
    let c = k.open();
    let req = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    k.input(c, req.as_bytes());
    assert!(k.text(c).starts_with("HTTP/1.1 101"));
    c
}

/// The one waiting call: its kind and body.
fn one_call(k: &Kit) -> (Kind, Value) {
    let calls = k.proxy_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls.into_iter().next().unwrap()
}

/// Connect through the connect proxy, answered `answer`; returns the reply.
fn proxy_connect(k: &mut Kit, c: usize, answer: &str) -> Value {
    send(k, c, json!({"id": 1, "connect": {}}));
    assert!(read(k, c).0.is_empty(), "nothing before the backend answers");
    k.proxy_answer(Ok(answer));
    reply(k, c)
}

#[test]
fn connect_proxy_result_credentials_and_request() {
    let mut k = kit(json!({}));
    let now = k.env.unix_s;
    let c = ws_with(&mut k, "Cookie: sid=1\r\nCookie: x=2\r\nAuthorization: Bearer t\r\nX-Real-IP: 10.0.0.1\r\n");
    let cmd = json!({"id": 1, "connect": {"data": {"hello": 1}, "name": "js", "version": "5.0",
                     "headers": {"X-Token": "em", "X-Other": "no"}}});
    send(&mut k, c, cmd);
    let (kind, body) = one_call(&k);
    assert_eq!(kind, Kind::Connect);
    let client_id = k.s(c).cf.as_ref().unwrap().id.to_string();
    assert_eq!(
        body,
        json!({"client": client_id, "transport": "websocket", "protocol": "json", "encoding": "json",
               "name": "js", "version": "5.0", "data": {"hello": 1}})
    );
    let mut h = k.proxy_headers();
    h.sort();
    assert_eq!(
        h,
        vec![
            ("Cookie".into(), "sid=1".into()),
            ("Cookie".into(), "x=2".into()),
            ("X-Real-IP".into(), "10.0.0.1".into()),
            ("X-Static".into(), "s".into()),
            ("X-Token".into(), "em".into()),
        ],
        "listed transport headers (all values, over the static one), listed emulated ones, static ones"
    );
    assert!(read(&mut k, c).0.is_empty() && k.s(c).parked, "the session waits parked");
    k.proxy_answer(Ok(&json!({"result": {"user": "56", "expire_at": now + 300, "info": {"name": "Alexander"},
        "data": {"welcome": true}, "channels": ["news"], "subs": {"p:1": {"info": {"r": 1}, "data": "d"}},
        "meta": {"tenant": 7}}})
    .to_string()));
    let r = reply(&mut k, c);
    let res = &r["connect"];
    assert_eq!(res["data"], json!({"welcome": true}), "{r}");
    assert_eq!((res["expires"].clone(), res["ttl"].clone()), (json!(true), json!(300)));
    assert_eq!(res["subs"]["news"], json!({}), "{r}");
    assert_eq!(res["subs"]["p:1"]["data"], "d", "{r}");
    let cf = k.s(c).cf.as_ref().unwrap();
    assert_eq!((&*cf.user, cf.connected), ("56", true));
    assert_eq!(cf.proxy.as_ref().and_then(|p| p.meta.as_deref()), Some(&br#"{"tenant":7}"#[..]));
    let info = String::from_utf8(cf.sub_info(cf.subs.iter().find(|s| &*s.channel == "p:1").unwrap()).to_vec()).unwrap();
    assert!(info.contains(r#""conn_info":{"name":"Alexander"}"#) && info.contains(r#""chan_info":{"r":1}"#), "{info}");
    // The connection's later proxy calls send the user and, where asked, the meta.
    send(&mut k, c, json!({"id": 2, "publish": {"channel": "p:1", "data": {"x": 1}}}));
    let (_, body) = one_call(&k);
    assert_eq!((body["user"].clone(), body["meta"].clone()), (json!("56"), json!({"tenant": 7})));
}

#[test]
fn connect_proxy_refusals_map_to_codes() {
    let mut k = kit(json!({}));
    let c = ws(&mut k);
    let r = proxy_connect(&mut k, c, r#"{"error":{"code":1000,"message":"custom","temporary":true}}"#);
    assert_eq!(r["error"], json!({"code": 1000, "message": "custom", "temporary": true}));
    assert!(!k.s(c).cf.as_ref().unwrap().connected);
    let c = ws(&mut k);
    send(&mut k, c, json!({"id": 1, "connect": {}}));
    k.proxy_answer(Ok(r#"{"disconnect":{"code":4501,"reason":"go away"}}"#));
    assert_eq!(closed_with(&mut k, c), 4501);
    for failure in [Failure::Timeout, Failure::Status(500), Failure::Transport("refused".into())] {
        let c = ws(&mut k);
        send(&mut k, c, json!({"id": 1, "connect": {}}));
        k.proxy_answer(Err(failure));
        let r = reply(&mut k, c);
        assert_eq!(r["error"], json!({"code": 100, "message": "internal server error", "temporary": true}), "{r}");
    }
    k.proxy_busy(true);
    let c = ws(&mut k);
    let r = call(&mut k, c, 1, "connect", json!({}));
    assert_eq!(error_code(&r), 100, "a full queue answers at once");
    k.proxy_busy(false);
    // No result: no credentials (3501 without anonymous access).
    let c = ws(&mut k);
    send(&mut k, c, json!({"id": 1, "connect": {}}));
    k.proxy_answer(Ok("{}"));
    assert_eq!(closed_with(&mut k, c), 3501);
    let now = k.env.unix_s;
    let c = ws(&mut k);
    let r = proxy_connect(&mut k, c, &json!({"result": {"user": "u", "expire_at": now - 1}}).to_string());
    assert_eq!(error_code(&r), 110);
    let c = ws(&mut k);
    let r = proxy_connect(&mut k, c, r#"{"result":{"user":"u","channels":["nope:x"]}}"#);
    assert_eq!(error_code(&r), 102);
    // A token still goes to the token check, not the proxy.
    let c = ws(&mut k);
    let r = call(&mut k, c, 1, "connect", json!({"token": token(json!({"sub": "t"}))}));
    assert!(r["connect"]["client"].is_string() && k.proxy_calls().is_empty(), "{r}");
}

#[test]
fn other_sessions_are_served_while_one_waits() {
    let mut k = kit(json!({}));
    let waiting = ws(&mut k);
    send(&mut k, waiting, json!({"id": 1, "connect": {}}));
    // Its next commands wait behind the connect, unread.
    send(&mut k, waiting, json!({"id": 2, "rpc": {"method": "ping"}}));
    let other = user(&mut k, "bob");
    let r = call(&mut k, other, 2, "subscribe", json!({"channel": "news"}));
    assert!(r["subscribe"].is_object(), "{r}");
    assert!(read(&mut k, waiting).0.is_empty());
    k.proxy_answer(Ok(r#"{"result":{"user":"alice"}}"#));
    let (msgs, _) = read(&mut k, waiting);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!((msgs[0]["id"].clone(), msgs[1]["id"].clone()), (json!(1), json!(2)), "replies in order");
    assert_eq!(msgs[1]["rpc"], json!({}), "rpc.ping");
}

#[test]
fn subscribe_proxy_allows_with_overrides_or_refuses() {
    let mut k = kit(json!({}));
    let c = user(&mut k, "alice");
    send(&mut k, c, json!({"id": 2, "subscribe": {"channel": "p:room", "data": {"want": 1}}}));
    let (kind, body) = one_call(&k);
    assert_eq!(kind, Kind::Subscribe);
    assert_eq!((body["channel"].clone(), body["user"].clone()), (json!("p:room"), json!("alice")));
    assert_eq!(body["data"], json!({"want": 1}));
    k.proxy_answer(Ok(r#"{"result":{"info":{"role":"admin"},"data":{"state":1},
        "override":{"presence":{"value":false},"force_recovery":{"value":true}}}}"#));
    let r = reply(&mut k, c);
    let res = &r["subscribe"];
    assert_eq!(res["data"], json!({"state": 1}), "{r}");
    assert_eq!(res["recoverable"], true, "force_recovery override: {r}");
    let sub = k.s(c).cf.as_ref().unwrap().subs.iter().find(|s| &*s.channel == "p:room").map(|s| s.presence);
    assert_eq!(sub, Some(false), "presence override");
    send(&mut k, c, json!({"id": 3, "subscribe": {"channel": "p:other"}}));
    k.proxy_answer(Ok(r#"{"error":{"code":403,"message":"forbidden"}}"#));
    assert_eq!(reply(&mut k, c)["error"], json!({"code": 403, "message": "forbidden"}));
    send(&mut k, c, json!({"id": 4, "subscribe": {"channel": "p:third"}}));
    k.proxy_answer(Ok(r#"{"disconnect":{"code":4403,"reason":"banned"}}"#));
    assert_eq!(closed_with(&mut k, c), 4403);
    // Checked before any call: already subscribed (105), `$` private without a token (103),
    // a user-limited channel naming the user (allowed without the proxy).
    let c = user(&mut k, "bob");
    let r = call(&mut k, c, 2, "subscribe", json!({"channel": "p:$secret"}));
    assert_eq!(error_code(&r), 103);
    let r = call(&mut k, c, 3, "subscribe", json!({"channel": "dm:chat#bob"}));
    assert!(r["subscribe"].is_object(), "{r}");
    assert!(k.proxy_calls().is_empty());
}

#[test]
fn publish_proxy_replaces_data_or_refuses() {
    let mut k = kit(json!({}));
    let c = user(&mut k, "alice");
    let r = call(&mut k, c, 2, "subscribe", json!({"channel": "news"}));
    assert!(r["subscribe"].is_object());
    let watcher = user(&mut k, "w");
    send(&mut k, watcher, json!({"id": 2, "subscribe": {"channel": "p:room"}}));
    k.proxy_answer(Ok("{}"));
    reply(&mut k, watcher);
    // Not subscribed and no allow_publish_* option: the proxy alone decides.
    send(&mut k, c, json!({"id": 3, "publish": {"channel": "p:room", "data": {"text": "hi"}}}));
    let (kind, body) = one_call(&k);
    assert_eq!((kind, body["data"].clone()), (Kind::Publish, json!({"text": "hi"})));
    k.proxy_answer(Ok(r#"{"result":{"data":{"text":"hi (moderated)"}}}"#));
    assert_eq!(reply(&mut k, c)["publish"], json!({}));
    k.pump();
    let (msgs, _) = read(&mut k, watcher);
    assert_eq!(msgs[0]["push"]["pub"]["data"], json!({"text": "hi (moderated)"}), "{msgs:?}");
    assert_eq!(msgs[0]["push"]["pub"]["info"]["user"], "alice");
    send(&mut k, c, json!({"id": 4, "publish": {"channel": "p:room", "data": 1}}));
    k.proxy_answer(Ok(r#"{"error":{"code":1001,"message":"spam"}}"#));
    assert_eq!(error_code(&reply(&mut k, c)), 1001);
    k.pump();
    assert!(read(&mut k, watcher).0.is_empty(), "nothing published");
    // A named proxy with binary encoding gets base64 data.
    send(&mut k, c, json!({"id": 5, "publish": {"channel": "named:x", "data": [1]}}));
    let (_, body) = one_call(&k);
    assert_eq!((body["encoding"].clone(), body["b64data"].clone()), (json!("binary"), json!("WzFd")));
    k.proxy_answer(Ok(r#"{"result":{"skip_history":true}}"#));
    assert_eq!(reply(&mut k, c)["publish"], json!({}));
    assert!(k.env.shared.engine.history("named:x", None, 10, k.env.now_ms).messages.is_empty(), "skip_history");
}

#[test]
fn rpc_proxy_methods_and_errors() {
    let mut k = kit(json!({}));
    let c = user(&mut k, "alice");
    assert_eq!(call(&mut k, c, 2, "rpc", json!({"method": "ping"}))["rpc"], json!({}));
    assert_eq!(error_code(&call(&mut k, c, 3, "rpc", json!({"method": "nons:x"}))), 104);
    assert_eq!(error_code(&call(&mut k, c, 4, "rpc", json!({"method": "off:x"}))), 108);
    send(&mut k, c, json!({"id": 5, "rpc": {"method": "getUser", "data": {"id": 7}}}));
    let (kind, body) = one_call(&k);
    assert_eq!(kind, Kind::Rpc);
    assert_eq!((body["method"].clone(), body["data"].clone()), (json!("getUser"), json!({"id": 7})));
    k.proxy_answer(Ok(r#"{"result":{"data":{"name":"Alice"}}}"#));
    assert_eq!(reply(&mut k, c), json!({"id": 5, "rpc": {"data": {"name": "Alice"}}}));
    send(&mut k, c, json!({"id": 6, "rpc": {"method": "getUser"}}));
    k.proxy_answer(Ok(r#"{"error":{"code":1404,"message":"no such user"}}"#));
    assert_eq!(reply(&mut k, c)["error"], json!({"code": 1404, "message": "no such user"}));
    send(&mut k, c, json!({"id": 7, "rpc": {"method": "getUser"}}));
    k.proxy_answer(Err(Failure::Timeout));
    assert_eq!(error_code(&reply(&mut k, c)), 100);
}

#[test]
fn rpc_without_a_proxy_is_not_available() {
    let mut k = Kit::with_json(r#"{"client":{"allow_anonymous_connect_without_token":true}}"#);
    let c = ws(&mut k);
    call(&mut k, c, 1, "connect", json!({}));
    assert_eq!(error_code(&call(&mut k, c, 2, "rpc", json!({"method": "x"}))), 108);
}

#[test]
fn refresh_proxy_extends_the_connection_server_side() {
    let mut k = kit(json!({"proxy": {"refresh": {"enabled": true, "endpoint": P}}}));
    let now = k.env.unix_s;
    let c = ws(&mut k);
    let r = proxy_connect(&mut k, c, &json!({"result": {"user": "u", "expire_at": now + 5}}).to_string());
    assert!(r["connect"].get("expires").is_none(), "the server refreshes: no ttl for the client: {r}");
    // A client refresh is a protocol error then.
    let c2 = user(&mut k, "t");
    send(&mut k, c2, json!({"id": 2, "refresh": {"token": "x"}}));
    assert_eq!(closed_with(&mut k, c2), 3501);
    k.advance(10_000);
    k.timer(c);
    let (kind, body) = one_call(&k);
    assert_eq!((kind, body["user"].clone()), (Kind::Refresh, json!("u")));
    let now = k.env.unix_s;
    k.proxy_answer(Ok(&json!({"result": {"expire_at": now + 600, "info": {"v": 2}}}).to_string()));
    assert_eq!(k.s(c).cf.as_ref().unwrap().expires_at, Some(now + 600));
    assert!(!k.closed(c));
    send(&mut k, c, json!({})); // the pong to the timer's ping
                                // A failed call: another minute.
    k.advance(610_000);
    k.timer(c);
    k.proxy_answer(Err(Failure::Timeout));
    let now = k.env.unix_s;
    assert_eq!(k.s(c).cf.as_ref().unwrap().expires_at, Some(now + 60));
    send(&mut k, c, json!({}));
    k.advance(61_000);
    k.timer(c);
    k.proxy_answer(Ok(r#"{"result":{"expired":true}}"#));
    read(&mut k, c);
    assert!(k.closed(c), "expired: 3005");
}

#[test]
fn sub_refresh_proxy_extends_subscriptions_server_side() {
    let mut k = kit(json!({}));
    let c = user(&mut k, "alice");
    let now = k.env.unix_s;
    send(&mut k, c, json!({"id": 2, "subscribe": {"channel": "sr:1"}}));
    k.proxy_answer(Ok(&json!({"result": {"expire_at": now + 5}}).to_string()));
    let r = reply(&mut k, c);
    assert!(r["subscribe"].get("expires").is_none(), "server-side sub refresh: no ttl: {r}");
    send(&mut k, c, json!({"id": 3, "sub_refresh": {"channel": "sr:1", "token": "x"}}));
    assert_eq!(closed_with(&mut k, c), 3501, "a client sub_refresh is a protocol error there");
    let c = user(&mut k, "bob");
    send(&mut k, c, json!({"id": 2, "subscribe": {"channel": "sr:2"}}));
    k.proxy_answer(Ok(&json!({"result": {"expire_at": now + 5}}).to_string()));
    reply(&mut k, c);
    k.advance(11_000);
    k.timer(c);
    let (kind, body) = one_call(&k);
    assert_eq!((kind, body["channel"].clone()), (Kind::SubRefresh, json!("sr:2")));
    let now = k.env.unix_s;
    k.proxy_answer(Ok(&json!({"result": {"expire_at": now + 100}}).to_string()));
    assert!(!k.closed(c));
    let sub = k.s(c).cf.as_ref().unwrap().subs.iter().find(|s| &*s.channel == "sr:2").unwrap().expires_at;
    assert_eq!(sub, Some(now + 100));
    send(&mut k, c, json!({}));
    k.advance(110_000);
    k.timer(c);
    k.proxy_answer(Ok(r#"{"result":{"expired":true}}"#));
    let (_, close) = read(&mut k, c);
    assert_eq!(close, Some(3006));
}

#[test]
fn emulation_posts_wait_in_order_behind_a_call_and_are_bounded() {
    let mut k = kit(json!({}));
    let s = k.open();
    let connect = br#"{"id":1,"connect":{"data":{"x":1}}}"#;
    let req = format!(
        "POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nCookie: c=1\r\nContent-Length: {}\r\n\r\n",
        connect.len()
    );
    k.input(s, &[req.as_bytes(), connect].concat());
    let (_, body) = one_call(&k);
    assert_eq!(body["transport"], "http_stream");
    assert!(k.proxy_headers().contains(&("Cookie".to_string(), "c=1".to_string())), "{:?}", k.proxy_headers());
    let session = k.s(s).cf.as_ref().unwrap().session.clone().unwrap();
    let node = k.env.shared.node_id.clone();
    let post = |k: &mut Kit, data: &str| {
        let body = json!({"session": &*session, "node": node, "data": data}).to_string();
        let c = k.open();
        let req = format!("POST /emulation HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        k.input(c, req.as_bytes());
        assert!(k.text(c).starts_with("HTTP/1.1 204"));
        k.pump();
    };
    post(&mut k, r#"{"id":2,"rpc":{"method":"ping"}}"#);
    k.text(s);
    k.proxy_answer(Ok(r#"{"result":{"user":"e"}}"#));
    let t = k.text(s);
    let (a, b) = (t.find("\"id\":1").unwrap(), t.find("\"id\":2").unwrap());
    assert!(a < b && t.contains(r#""rpc":{}"#), "the posted command ran after the connect: {t}");
    // A session waiting on a call holds at most MAX_WAITING_POSTS posts.
    post(&mut k, r#"{"id":3,"rpc":{"method":"slow"}}"#);
    assert_eq!(k.proxy_calls().len(), 1);
    for i in 0..super::emulation::MAX_WAITING_POSTS {
        assert!(!k.closed(s), "{i}");
        post(&mut k, r#"{"id":4,"rpc":{"method":"ping"}}"#);
    }
    assert!(!k.closed(s));
    post(&mut k, r#"{"id":5,"rpc":{"method":"ping"}}"#);
    assert!(k.closed(s), "one post too many closes the session");
}

/// With an engine that answers later (Redis), a proxied publish waits for the backend, then
/// for the engine, and commands behind it keep their order.
#[test]
fn a_proxy_call_then_a_later_engine_keep_order() {
    let cfg = json!({
        "client": {"allow_anonymous_connect_without_token": true},
        "channel": {"proxy": {"publish": {"endpoint": P}},
                    "namespaces": [{"name": "p", "publish_proxy_enabled": true,
                                    "history_size": 10, "history_ttl": "60s"}]}
    });
    let mut k = Kit::deferred(&cfg.to_string());
    let c = ws(&mut k);
    send(&mut k, c, json!({"id": 1, "connect": {}}));
    assert_eq!(reply(&mut k, c)["id"], 1);
    let frame = [
        json!({"id": 2, "publish": {"channel": "p:x", "data": 1}}).to_string(),
        json!({"id": 3, "publish": {"channel": "p:x", "data": 2}}).to_string(),
    ]
    .join("\n");
    k.input(c, &super::tests::client_frame(1, frame.as_bytes()));
    assert_eq!(k.proxy_calls().len(), 1, "the second waits behind the first");
    k.proxy_answer(Ok(r#"{"result":{"data":"one"}}"#));
    assert_eq!(k.queued(), 1, "then the engine");
    assert!(read(&mut k, c).0.is_empty());
    k.answer();
    assert_eq!(k.proxy_calls().len(), 1, "the second publish asks the backend now");
    k.proxy_answer(Ok("{}"));
    k.answer();
    let (msgs, _) = read(&mut k, c);
    let ids: Vec<&Value> = msgs.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, vec![&json!(2), &json!(3)], "{msgs:?}");
    let h = k.env.shared.engine.history("p:x", None, 10, k.env.now_ms);
    let data: Vec<&[u8]> = h.messages.iter().map(|m| &m.data[..]).collect();
    assert_eq!(data, vec![&b"\"one\""[..], &b"2"[..]], "the backend's data, then the client's");
}
