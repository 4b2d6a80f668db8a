//! The Centrifugo protobuf protocol through the session seam, without sockets: the upgrade
//! choosing protobuf (subprotocol or query), varint-delimited commands in binary frames,
//! and every reply and push decoded as the SDKs decode them.

use super::tests::{channels, client_frame, kit, server_frames, token};
use crate::proto::centrifugo_pb as pb;
use crate::transport::session::State;
use crate::transport::testkit::Kit;
use bytes::BytesMut;
use prost::Message as _;
use serde_json::json;

/// A `/connection/websocket` session upgraded with `path_query` and `extra` headers; returns
/// the session and the handshake response.
fn upgrade(k: &mut Kit, path_query: &str, extra: &str) -> (usize, String) {
    let c = k.open();
    let req = format!(
        "GET {path_query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    k.input(c, req.as_bytes());
    let t = k.text(c);
    assert!(t.starts_with("HTTP/1.1 101"), "{t}");
    (c, t)
}

/// A protobuf session as centrifuge-js opens one (the `centrifuge-protobuf` subprotocol).
fn ws(k: &mut Kit) -> usize {
    let (c, head) = upgrade(k, "/connection/websocket", "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n");
    assert!(head.contains("Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"), "{head}");
    c
}

/// Send `cmds` in one binary frame.
fn send(k: &mut Kit, c: usize, cmds: &[pb::Command]) {
    let mut b = BytesMut::new();
    for cmd in cmds {
        cmd.encode_length_delimited(&mut b).unwrap();
    }
    k.input(c, &client_frame(2, &b));
}

/// Every reply the server sent (binary frames of delimited replies), and the close code.
fn read(k: &mut Kit, c: usize) -> (Vec<pb::Reply>, Option<u16>) {
    let mut out = Vec::new();
    let mut close = None;
    for (op, p) in server_frames(&k.output(c)) {
        match op {
            2 => {
                let mut b = &p[..];
                while !b.is_empty() {
                    out.push(pb::Reply::decode_length_delimited(&mut b).expect("a delimited Reply"));
                }
            }
            8 => close = Some(u16::from_be_bytes([p[0], p[1]])),
            op => panic!("unexpected opcode {op} on a protobuf connection"),
        }
    }
    (out, close)
}

fn one(k: &mut Kit, c: usize) -> pb::Reply {
    let (mut r, close) = read(k, c);
    assert_eq!(close, None, "{r:?}");
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn connect_cmd(token: &str) -> pb::Command {
    pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest { token: token.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn subscribe_cmd(id: u32, s: pb::SubscribeRequest) -> pb::Command {
    pb::Command { id, subscribe: Some(s), ..Default::default() }
}

fn sub(channel: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest { channel: channel.into(), ..Default::default() }
}

fn user(k: &mut Kit, name: &str) -> usize {
    let c = ws(k);
    send(k, c, &[connect_cmd(&token(json!({"sub": name})))]);
    let r = one(k, c);
    assert_eq!(r.id, 1);
    assert!(r.connect.is_some(), "{r:?}");
    c
}

#[test]
fn connect_by_subprotocol_or_query() {
    let mut k = kit(json!({}), channels());
    let c = ws(&mut k);
    assert!(k.s(c).cf.as_ref().unwrap().protobuf);
    send(&mut k, c, &[connect_cmd(&token(json!({"sub": "alice", "exp": 1_700_000_030})))]);
    let r = one(&mut k, c);
    let cr = r.connect.unwrap();
    assert_eq!(r.id, 1);
    assert_eq!(cr.client.len(), 36);
    assert!(cr.version.ends_with("herald"));
    assert_eq!((cr.ping, cr.pong, cr.expires, cr.ttl), (10, true, true, 30));
    // The query parameter (Centrifugo's `cf_protocol`, and its older `format`) without a
    // subprotocol: protobuf, and no subprotocol in the answer.
    for q in ["/connection/websocket?cf_protocol=protobuf", "/connection/websocket?format=protobuf"] {
        let (c, head) = upgrade(&mut k, q, "");
        assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
        send(&mut k, c, &[connect_cmd(&token(json!({"sub": "bob"})))]);
        assert!(one(&mut k, c).connect.is_some());
    }
    // `centrifuge-json` stays JSON (and is echoed, as Centrifugo does).
    let (c, head) = upgrade(&mut k, "/connection/websocket", "Sec-WebSocket-Protocol: centrifuge-json\r\n");
    assert!(head.contains("Sec-WebSocket-Protocol: centrifuge-json\r\n"), "{head}");
    assert!(!k.s(c).cf.as_ref().unwrap().protobuf);
}

#[test]
fn several_commands_in_one_frame_and_publications() {
    let ch = json!({"namespaces": [{"name": "n", "history_size": 10, "history_ttl": "300s",
        "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true, "allow_history_for_subscriber": true,
        "presence": true, "allow_presence_for_subscriber": true}]});
    let mut k = kit(json!({}), ch);
    let c = user(&mut k, "alice");
    let publish = pb::Command {
        id: 3,
        publish: Some(pb::PublishRequest { channel: "n:a".into(), data: br#"{"t":"hi"}"#.to_vec() }),
        ..Default::default()
    };
    let history = pb::Command {
        id: 4,
        history: Some(pb::HistoryRequest { channel: "n:a".into(), limit: -1, ..Default::default() }),
        ..Default::default()
    };
    let presence =
        pb::Command { id: 5, presence: Some(pb::ChannelRequest { channel: "n:a".into() }), ..Default::default() };
    let stats =
        pb::Command { id: 6, presence_stats: Some(pb::ChannelRequest { channel: "n:a".into() }), ..Default::default() };
    let ping = pb::Command { id: 7, ping: Some(pb::Empty {}), ..Default::default() };
    send(&mut k, c, &[subscribe_cmd(2, sub("n:a")), publish]);
    k.pump();
    send(&mut k, c, &[history, presence, stats, ping]);
    let (r, close) = read(&mut k, c);
    assert_eq!(close, None);
    let ids: Vec<u32> = r.iter().map(|r| r.id).collect();
    // subscribe, publish, the publication push (id 0), history, presence, stats, ping.
    assert_eq!(ids, [2, 3, 0, 4, 5, 6, 7], "{r:?}");
    assert!(r[0].subscribe.is_some() && r[1].publish.is_some());
    let push = r[2].push.as_ref().unwrap();
    assert_eq!(push.channel, "n:a");
    let p = push.r#pub.as_ref().unwrap();
    assert_eq!((&p.data[..], p.offset), (&br#"{"t":"hi"}"#[..], 1));
    assert_eq!(p.info.as_ref().unwrap().user, "alice");
    let h = r[3].history.as_ref().unwrap();
    assert_eq!(h.publications.len(), 1);
    assert_eq!((&h.publications[0].data[..], h.offset), (&br#"{"t":"hi"}"#[..], 1));
    assert!(!h.epoch.is_empty());
    let pres = &r[4].presence.as_ref().unwrap().presence;
    assert_eq!(pres.len(), 1);
    assert_eq!(pres[0].value.as_ref().unwrap().user, "alice");
    assert_eq!(r[5].presence_stats, Some(pb::PresenceStatsResult { num_clients: 1, num_users: 1 }));
    assert_eq!(r[6].ping, Some(pb::Empty {}));
}

#[test]
fn json_and_protobuf_subscribers_each_get_their_format() {
    let mut k = kit(json!({}), channels());
    let p = user(&mut k, "alice");
    send(&mut k, p, &[subscribe_cmd(2, sub("news"))]);
    one(&mut k, p);
    let (j, _) = upgrade(&mut k, "/connection/websocket", "");
    let cmd = json!({"id": 1, "connect": {"token": token(json!({"sub": "bob"}))}}).to_string();
    k.input(j, &client_frame(1, cmd.as_bytes()));
    k.input(j, &client_frame(1, br#"{"id":2,"subscribe":{"channel":"news"}}"#));
    k.output(j);
    k.publish("news", r#"{"n":1}"#);
    let push = one(&mut k, p).push.unwrap();
    assert_eq!(&push.r#pub.unwrap().data[..], br#"{"n":1}"#);
    let frames = server_frames(&k.output(j));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 1, "text frame for the JSON client");
    assert_eq!(frames[0].1, br#"{"push":{"channel":"news","pub":{"data":{"n":1},"offset":1}}}"#);
}

#[test]
fn errors_and_bad_frames() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    send(&mut k, c, &[subscribe_cmd(2, sub("closed:x"))]);
    let r = one(&mut k, c);
    assert_eq!((r.id, r.error.as_ref().map(|e| e.code)), (2, Some(103)));
    assert_eq!(r.error.unwrap().message, "permission denied");
    // Publish data that is not JSON text: 107 (the hub keeps JSON for JSON subscribers).
    send(&mut k, c, &[subscribe_cmd(3, sub("news"))]);
    one(&mut k, c);
    let bad = pb::Command {
        id: 4,
        publish: Some(pb::PublishRequest { channel: "news".into(), data: vec![0xff, 0] }),
        ..Default::default()
    };
    send(&mut k, c, &[bad]);
    assert_eq!(one(&mut k, c).error.unwrap().code, 107);
    // rpc without a proxy: 108, as Centrifugo.
    let rpc = pb::Command { id: 5, rpc: Some(pb::RpcRequest::default()), ..Default::default() };
    send(&mut k, c, &[rpc]);
    assert_eq!(one(&mut k, c).error.unwrap().code, 108);
    // A truncated message closes with 3501, as malformed JSON does.
    k.input(c, &client_frame(2, &[5, 0x08]));
    let (r, close) = read(&mut k, c);
    assert!(r.is_empty());
    assert_eq!(close, Some(3501));
}

#[test]
fn command_before_connect_and_bad_token_close() {
    let mut k = kit(json!({}), channels());
    let c = ws(&mut k);
    send(&mut k, c, &[subscribe_cmd(2, sub("news"))]);
    assert_eq!(read(&mut k, c).1, Some(3501));
    let c = ws(&mut k);
    send(&mut k, c, &[connect_cmd("not.a.token")]);
    assert_eq!(read(&mut k, c).1, Some(3500));
    let c = ws(&mut k);
    send(&mut k, c, &[connect_cmd(&token(json!({"sub": "a", "exp": 1_600_000_000})))]);
    assert_eq!(one(&mut k, c).error.unwrap().code, 109);
}

fn next_ping_ms(k: &mut Kit, c: usize) -> u64 {
    match &k.s(c).state {
        State::Ws(ws) => ws.next_ping_ms,
        _ => panic!("not a WebSocket session"),
    }
}

fn fire(k: &mut Kit, c: usize) {
    let due = next_ping_ms(k, c);
    k.advance(due - k.env.now_ms);
    k.timer(c);
}

#[test]
fn pings_are_empty_replies_and_pongs_empty_commands() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    fire(&mut k, c);
    let frames = server_frames(&k.output(c));
    assert_eq!(frames, vec![(2, vec![0])], "the ping: an empty Reply, its length 0 its only byte");
    send(&mut k, c, &[pb::Command::default()]);
    assert!(read(&mut k, c).0.is_empty(), "a pong gets no answer");
    assert_eq!(k.s(c).cf.as_ref().unwrap().pong_deadline_ms, None);
    fire(&mut k, c);
    assert_eq!(one(&mut k, c), pb::Reply::default());
    fire(&mut k, c);
    assert_eq!(read(&mut k, c).1, Some(3012), "no pong");
}

#[test]
fn recovery_and_server_side_subscriptions() {
    let mut k = kit(json!({}), channels());
    let c = user(&mut k, "alice");
    send(&mut k, c, &[subscribe_cmd(2, sub("hist:a"))]);
    let s = one(&mut k, c).subscribe.unwrap();
    assert!(s.recoverable && s.positioned && !s.was_recovering);
    let (epoch, offset) = (s.epoch.clone(), s.offset);
    for i in 1..=3 {
        k.publish("hist:a", &format!("{i}"));
    }
    k.output(c);
    let c2 = user(&mut k, "alice");
    let req = pb::SubscribeRequest { channel: "hist:a".into(), recover: true, epoch, offset, ..Default::default() };
    send(&mut k, c2, &[subscribe_cmd(2, req)]);
    let s = one(&mut k, c2).subscribe.unwrap();
    assert!(s.was_recovering && s.recovered);
    let data: Vec<&[u8]> = s.publications.iter().map(|p| &p.data[..]).collect();
    assert_eq!(data, [&b"1"[..], b"2", b"3"]);
    // Token channels: server-side subscriptions in the connect result's `subs`.
    let c3 = ws(&mut k);
    send(&mut k, c3, &[connect_cmd(&token(json!({"sub": "bob", "channels": ["closed:x"]})))]);
    let cr = one(&mut k, c3).connect.unwrap();
    assert_eq!(cr.subs.len(), 1, "{cr:?}");
    assert_eq!(cr.subs[0].key, "closed:x");
    assert!(cr.subs[0].value.is_some());
    k.publish("closed:x", r#"{"m":1}"#);
    assert_eq!(one(&mut k, c3).push.unwrap().channel, "closed:x");
}

#[test]
fn api_pushes_and_join_leave() {
    let ch = json!({"namespaces": [{"name": "room", "allow_subscribe_for_client": true, "join_leave": true,
        "force_push_join_leave": true, "presence": true}], "without_namespace": {"allow_subscribe_for_client": true}});
    let mut k = kit(json!({}), ch);
    let a = user(&mut k, "alice");
    send(&mut k, a, &[subscribe_cmd(2, sub("room:1"))]);
    one(&mut k, a);
    k.pump();
    k.output(a);
    let b = user(&mut k, "bob");
    send(&mut k, b, &[subscribe_cmd(2, sub("room:1"))]);
    k.pump();
    let (r, _) = read(&mut k, a);
    let join = r.iter().find_map(|r| r.push.as_ref().and_then(|p| p.join.clone())).expect("a join push");
    assert_eq!(join.info.unwrap().user, "bob");
    k.output(b);
    send(
        &mut k,
        b,
        &[pb::Command {
            id: 3,
            unsubscribe: Some(pb::ChannelRequest { channel: "room:1".into() }),
            ..Default::default()
        }],
    );
    assert!(one(&mut k, b).unsubscribe.is_some());
    k.pump();
    let (r, _) = read(&mut k, a);
    let leave = r.iter().find_map(|r| r.push.as_ref().and_then(|p| p.leave.clone())).expect("a leave push");
    assert_eq!(leave.info.unwrap().user, "bob");
    // Server API commands for the user's connections.
    use crate::hub::bus::UserCmd;
    use crate::transport::centrifugo::client::user_command;
    user_command(&mut k.env, &mut k.sessions, &UserCmd::Subscribe { user: "alice".into(), channel: "news".into() });
    let push = one(&mut k, a).push.unwrap();
    assert_eq!(push.channel, "news");
    assert!(push.subscribe.is_some());
    user_command(&mut k.env, &mut k.sessions, &UserCmd::Unsubscribe { user: "alice".into(), channel: "news".into() });
    let push = one(&mut k, a).push.unwrap();
    assert_eq!(push.unsubscribe, Some(pb::Unsubscribe { code: 2000, reason: "server unsubscribe".into() }));
    user_command(
        &mut k.env,
        &mut k.sessions,
        &UserCmd::Refresh { user: "alice".into(), expired: false, expire_at: Some(1_700_000_100) },
    );
    assert_eq!(one(&mut k, a).push.unwrap().refresh, Some(pb::Refresh { expires: true, ttl: 100 }));
}

/// A history of `n` publications of `size` bytes each.
fn big_history(k: &mut Kit, ch: &str, n: usize, size: usize) {
    let body = format!("\"{}\"", "p".repeat(size));
    for _ in 0..n {
        k.publish(ch, &body);
    }
}

fn big_channels() -> serde_json::Value {
    json!({"namespaces": [{"name": "big", "history_size": 100, "history_ttl": "300s", "force_recovery": true,
        "allow_subscribe_for_client": true, "allow_history_for_client": true}]})
}

/// Everything a fast reader gets (paced replays refilled as the socket drains), decoded;
/// with the peak bytes queued.
fn read_all(k: &mut Kit, c: usize) -> (Vec<pb::Reply>, Option<u16>, usize) {
    let (bytes, peak) = k.read_all(c);
    let mut out = Vec::new();
    let mut close = None;
    for (op, p) in server_frames(&bytes) {
        match op {
            2 => {
                let mut b = &p[..];
                while !b.is_empty() {
                    out.push(pb::Reply::decode_length_delimited(&mut b).expect("a delimited Reply"));
                }
            }
            8 => close = Some(u16::from_be_bytes([p[0], p[1]])),
            op => panic!("unexpected opcode {op}"),
        }
    }
    (out, close, peak)
}

#[test]
fn large_recovery_and_history_are_paced_and_complete() {
    let mut k = kit(json!({}), big_channels());
    big_history(&mut k, "big:a", 100, 200_000);
    let o = user(&mut k, "observer");
    send(&mut k, o, &[subscribe_cmd(2, sub("big:a"))]);
    let epoch = one(&mut k, o).subscribe.unwrap().epoch;
    let c = user(&mut k, "alice");
    let req = pb::SubscribeRequest { channel: "big:a".into(), recover: true, epoch, offset: 0, ..Default::default() };
    send(&mut k, c, &[subscribe_cmd(7, req)]);
    let queued = k.s(c).out.len();
    assert!(queued <= k.env.high_water + 250_000, "{queued} bytes queued at once");
    assert!(k.s(c).replay.is_some(), "a 20 MB reply is paced");
    // A live publication during the paced reply comes after it.
    k.publish("big:a", "\"live\"");
    let (r, close, peak) = read_all(&mut k, c);
    assert_eq!(close, None);
    assert!(peak <= k.env.high_water + 250_000, "peak {peak}");
    assert_eq!(r.len(), 2, "the reply, then the live push");
    assert_eq!(r[0].id, 7);
    let s = r[0].subscribe.as_ref().unwrap();
    assert!(s.recovered && s.was_recovering && s.recoverable);
    let offsets: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<u64>>());
    assert!(s.publications.iter().all(|p| p.data.len() == 200_002));
    let live = r[1].push.as_ref().unwrap().r#pub.as_ref().unwrap();
    assert_eq!((live.offset, &live.data[..]), (101, &b"\"live\""[..]));
    // History: three paced replies in one frame's commands, each whole and in order.
    let cmds: Vec<pb::Command> = (0..3)
        .map(|i| pb::Command {
            id: 10 + i,
            history: Some(pb::HistoryRequest { channel: "big:a".into(), limit: -1, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    send(&mut k, c, &cmds);
    let (r, close, peak) = read_all(&mut k, c);
    assert_eq!(close, None);
    assert!(peak <= k.env.high_water + 250_000, "peak {peak}");
    assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), [10, 11, 12]);
    for h in &r {
        let h = h.history.as_ref().unwrap();
        assert_eq!((h.publications.len(), h.offset), (100, 101));
        assert_eq!(h.publications[99].offset, 101);
    }
}

#[test]
fn history_flood_without_reading_is_bounded() {
    let mut k = kit(json!({}), big_channels());
    big_history(&mut k, "big:h", 50, 100_000);
    let c = user(&mut k, "alice");
    // 100 history commands in one frame, never read: each reply is 5 MB.
    let cmds: Vec<pb::Command> = (0..100)
        .map(|i| pb::Command {
            id: 10 + i,
            history: Some(pb::HistoryRequest { channel: "big:h".into(), limit: -1, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    send(&mut k, c, &cmds);
    let (high, cap) = (k.env.high_water, k.env.max_out_queue);
    let s = k.s(c);
    let held = s.replay.as_ref().map(|r| r.held).unwrap_or(0);
    assert!(s.out.len() <= high + 200_000, "out-queue {} bytes", s.out.len());
    assert!(held > 0 && held < cap, "held {held} bytes");
}

/// Garbage and mutated commands on a connected protobuf session: never a panic; each frame
/// is either handled or closes the connection with 3501 (or 3500, should a mutation turn
/// bytes into a subscription token).
#[test]
fn garbage_frames_never_panic() {
    let mut rng = crate::proto::testrng::Rng(0x9e37_79b9_7f4a_7c15);
    let mut k = kit(json!({}), channels());
    let mut good = BytesMut::new();
    for c in [
        subscribe_cmd(2, sub("news")),
        pb::Command {
            id: 3,
            history: Some(pb::HistoryRequest { channel: "hist:a".into(), limit: 5, ..Default::default() }),
            ..Default::default()
        },
        pb::Command { id: 4, ping: Some(pb::Empty {}), ..Default::default() },
    ] {
        c.encode_length_delimited(&mut good).unwrap();
    }
    for round in 0..300 {
        let c = user(&mut k, "fuzz");
        let mut f = good.to_vec();
        if round % 2 == 0 {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
        } else {
            f = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        }
        k.input(c, &client_frame(2, &f));
        let (_, close) = read(&mut k, c);
        assert!(matches!(close, None | Some(3501) | Some(3500)), "{close:?}");
    }
}

#[test]
fn proxies_on_a_protobuf_connection() {
    let mut k = super::tests_proxy::kit(json!({}));
    let c = ws(&mut k);
    let connect = pb::ConnectRequest {
        data: br#"{"u":1}"#.to_vec(),
        headers: [("X-Token".to_string(), "t".to_string())].into_iter().collect(),
        ..Default::default()
    };
    send(&mut k, c, &[pb::Command { id: 1, connect: Some(connect), ..Default::default() }]);
    let calls = k.proxy_calls();
    assert_eq!(calls[0].1["protocol"], "protobuf");
    assert_eq!(calls[0].1["data"], json!({"u": 1}));
    assert!(k.proxy_headers().contains(&("X-Token".to_string(), "t".to_string())));
    k.proxy_answer(Ok(r#"{"result":{"user":"p","data":{"hello":true}}}"#));
    let r = one(&mut k, c);
    assert_eq!(r.connect.expect("connect").data, br#"{"hello":true}"#.to_vec());
    let rpc = pb::RpcRequest { method: "m".into(), data: br#"[1,2]"#.to_vec() };
    send(&mut k, c, &[pb::Command { id: 2, rpc: Some(rpc), ..Default::default() }]);
    assert_eq!(k.proxy_calls()[0].1["data"], json!([1, 2]));
    k.proxy_answer(Ok(r#"{"result":{"data":{"sum":3}}}"#));
    let r = one(&mut k, c);
    assert_eq!((r.id, r.rpc.expect("rpc").data), (2, br#"{"sum":3}"#.to_vec()));
    send(
        &mut k,
        c,
        &[pb::Command {
            id: 3,
            rpc: Some(pb::RpcRequest { method: "m".into(), ..Default::default() }),
            ..Default::default()
        }],
    );
    k.proxy_answer(Ok(r#"{"error":{"code":1500,"message":"no","temporary":true}}"#));
    let e = one(&mut k, c).error.expect("error");
    assert_eq!((e.code, e.message.as_str(), e.temporary), (1500, "no", true));
}
