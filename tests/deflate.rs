//! permessage-deflate (RFC 7692) against a real herald, with raw frames: negotiation
//! (offered, not offered, disabled, Centrifugo's key, declined offers), compressed delivery
//! to `/ws/` and Centrifugo subscribers, compressed echo, a deflate bomb (1009 without
//! inflating it), RSV1 where it has no meaning (1002).
//!
//! The client side compresses with miniz_oxide and inflates with flate2's raw stream, so
//! the server's own `proto::ws_deflate` is not checked against itself.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const ON: &str = r#"{"ws_compression": true, "ws_compression_min_size": 64}"#;

/// Open a WebSocket offering `ext` (if any); returns the socket and the extension answered.
fn ws_offer(h: &Herald, path: &str, ext: Option<&str>) -> (TcpStream, Option<String>) {
    let mut s = h.connect();
    let ext = ext.map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n")).unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 101, "{:?}", r);
    let e = r.header("Sec-WebSocket-Extensions").map(str::to_string);
    (s, e)
}

/// Read one server frame with its RSV1 bit: (rsv1, opcode, payload).
fn read_frame_rsv(s: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    use std::io::Read;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert_eq!(h[0] & 0x30, 0, "RSV2/RSV3 never set");
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).ok()?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut p = vec![0u8; len as usize];
    s.read_exact(&mut p).ok()?;
    Some((h[0] & 0x40 != 0, h[0] & 0x0f, p))
}

/// Inflate a message payload as a browser would (RFC 7692 §7.2.2).
fn inflate(p: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let mut input = p.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(p.len() * 4 + 1024);
    loop {
        let done = d.total_in() as usize;
        d.decompress_vec(&input[done..], &mut out, flate2::FlushDecompress::Sync).unwrap();
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// A compressed client frame (RSV1 on the first frame).
fn compressed_client_frame(opcode: u8, data: &[u8]) -> Vec<u8> {
    let z = miniz_oxide::deflate::compress_to_vec(data, 6);
    let mut f = client_frame(true, opcode, &z);
    f[0] |= 0x40;
    f
}

fn json_of(n: usize) -> String {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("{{\"id\":{i},\"name\":\"item {i}\",\"price\":{}.99,\"tags\":[\"a\",\"b\"]}},", i * 3));
        i += 1;
    }
    s.pop();
    s.push_str("]}");
    s
}

#[test]
fn negotiation() {
    let h = Herald::start(ON);
    for path in ["/ws/?cid=n", "/echo", "/connection/websocket", "/connection/uni_websocket"] {
        assert_eq!(ws_offer(&h, path, Some(OFFER)).1.as_deref(), Some(AGREED), "{path}");
        assert_eq!(ws_offer(&h, path, None).1, None, "{path}: not offered");
    }
    // Several offers, the first acceptable one wins (RFC 7692 §5.1); invalid ones are skipped.
    assert_eq!(
        ws_offer(&h, "/echo", Some("permessage-deflate; bogus, permessage-deflate; server_max_window_bits=10"))
            .1
            .as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    assert_eq!(ws_offer(&h, "/echo", Some("permessage-deflate; server_max_window_bits=16")).1, None);
    assert_eq!(ws_offer(&h, "/echo", Some("x-webkit-deflate-frame")).1, None);
    let m = get(&h, "/metrics").text();
    assert!(m.contains("herald_ws_compressed_connections_total 5\n"), "{m}");

    // Disabled (the default): never negotiated.
    let off = Herald::start("{}");
    assert_eq!(ws_offer(&off, "/echo", Some(OFFER)).1, None);
    assert_eq!(ws_offer(&off, "/ws/?cid=n", Some(OFFER)).1, None);

    // Centrifugo v6's key.
    let cf = Herald::start(r#"{"websocket": {"compression": true}}"#);
    assert_eq!(ws_offer(&cf, "/echo", Some(OFFER)).1.as_deref(), Some(AGREED));
    // ... which overrides Herald's own.
    let cf_off = Herald::start(r#"{"ws_compression": true, "websocket": {"compression": false}}"#);
    assert_eq!(ws_offer(&cf_off, "/echo", Some(OFFER)).1, None);
}

#[test]
fn compressed_delivery_to_ws_subscribers() {
    let h = Herald::start(ON);
    let (mut z, e) = ws_offer(&h, "/ws/?cid=zc", Some(OFFER));
    assert!(e.is_some());
    let (mut plain, _) = ws_offer(&h, "/ws/?cid=zc", None);
    let body = json_of(1024);
    publish(&h, "zc", body.as_bytes());
    let (rsv1, op, p) = read_frame_rsv(&mut z).unwrap();
    assert!(rsv1, "a 1 KiB message goes compressed");
    assert_eq!(op, 1);
    assert!(p.len() < body.len() / 2, "{} compressed bytes for {}", p.len(), body.len());
    let env: serde_json::Value = serde_json::from_slice(&inflate(&p)).unwrap();
    assert_eq!(env["channel"], "zc");
    assert_eq!(env["data"], serde_json::from_str::<serde_json::Value>(&body).unwrap());
    // The uncompressed subscriber gets the same envelope, plain.
    let (rsv1, _, p2) = read_frame_rsv(&mut plain).unwrap();
    assert!(!rsv1);
    assert_eq!(inflate(&p), p2);
    // Below ws_compression_min_size: uncompressed even on a compressed connection.
    publish(&h, "zc", b"{\"a\":1}");
    let (rsv1, _, p) = read_frame_rsv(&mut z).unwrap();
    assert!(!rsv1);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&p).unwrap()["data"]["a"], 1);
    // Many messages: each inflates alone (no context takeover).
    for i in 0..20 {
        publish(&h, "zc", json_of(500 + i * 10).as_bytes());
    }
    for i in 0..20 {
        let (rsv1, _, p) = read_frame_rsv(&mut z).unwrap();
        assert!(rsv1);
        let env: serde_json::Value = serde_json::from_slice(&inflate(&p)).unwrap();
        assert_eq!(env["data"], serde_json::from_str::<serde_json::Value>(&json_of(500 + i * 10)).unwrap());
    }
}

const SECRET: &str = "test-secret-key-123456";

fn token(claims: serde_json::Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[test]
fn compressed_delivery_to_centrifugo_uni_websocket() {
    let h = Herald::start(&format!(
        r#"{{"ws_compression": true, "ws_compression_min_size": 64,
            "client": {{"token": {{"hmac_secret_key": "{SECRET}"}}}}}}"#
    ));
    let (mut s, e) = ws_offer(&h, "/connection/uni_websocket", Some(OFFER));
    assert!(e.is_some());
    let connect = format!(r#"{{"token":"{}"}}"#, token(serde_json::json!({"sub": "u", "channels": ["news"]})));
    s.write_all(&compressed_client_frame(1, connect.as_bytes())).unwrap();
    // The connect push (may be plain or compressed, by size).
    let (rsv1, _, p) = read_frame_rsv(&mut s).unwrap();
    let first = if rsv1 { inflate(&p) } else { p };
    assert!(String::from_utf8_lossy(&first).contains("\"connect\""), "{}", String::from_utf8_lossy(&first));
    let body = json_of(1024);
    publish(&h, "news", body.as_bytes());
    loop {
        let (rsv1, _, p) = read_frame_rsv(&mut s).unwrap();
        let m = if rsv1 { inflate(&p) } else { p };
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        if v.get("pub").is_some() {
            assert!(rsv1, "publication compressed");
            assert_eq!(v["channel"], "news");
            assert_eq!(v["pub"]["data"], serde_json::from_str::<serde_json::Value>(&body).unwrap());
            break;
        }
    }
}

#[test]
fn compressed_echo() {
    let h = Herald::start(ON);
    let (mut s, e) = ws_offer(&h, "/echo", Some(OFFER));
    assert!(e.is_some());
    let msg = json_of(2000);
    s.write_all(&compressed_client_frame(1, msg.as_bytes())).unwrap();
    let (rsv1, op, p) = read_frame_rsv(&mut s).unwrap();
    assert!(rsv1 && op == 1);
    assert_eq!(inflate(&p), msg.as_bytes());
    // Fragmented compressed binary message: RSV1 on the first frame only.
    let z = miniz_oxide::deflate::compress_to_vec(msg.as_bytes(), 1);
    let (a, b) = z.split_at(z.len() / 2);
    let mut f1 = client_frame(false, 2, a);
    f1[0] |= 0x40;
    s.write_all(&f1).unwrap();
    s.write_all(&client_frame(true, 9, b"ping")).unwrap();
    s.write_all(&client_frame(true, 0, b)).unwrap();
    let (_, op, p) = read_frame_rsv(&mut s).unwrap();
    assert_eq!((op, p), (0xA, b"ping".to_vec()));
    let (rsv1, op, p) = read_frame_rsv(&mut s).unwrap();
    assert!(rsv1 && op == 2);
    assert_eq!(inflate(&p), msg.as_bytes());
    // An uncompressed message on the compressed connection, below the threshold: plain.
    s.write_all(&client_frame(true, 1, b"hi")).unwrap();
    assert_eq!(read_frame_rsv(&mut s).unwrap(), (false, 1, b"hi".to_vec()));
    // Compressed invalid UTF-8 in a text message: 1007.
    s.write_all(&compressed_client_frame(1, &[b'a', 0xff, 0xfe])).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1007));
}

#[test]
fn deflate_bomb_is_refused_with_1009() {
    let h = Herald::start(r#"{"ws_compression": true, "ws_max_message": 1048576}"#);
    let pid = h.child.id();
    let (mut s, e) = ws_offer(&h, "/echo", Some(OFFER));
    assert!(e.is_some());
    // 64 MiB of zeros deflate to ~64 KB: under the wire limit, far over the inflated one.
    let zeros = vec![0u8; 64 << 20];
    let z = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
    assert!(z.len() < 1 << 20, "{}", z.len());
    drop(zeros);
    let rss0 = rss_bytes(pid);
    let mut f = client_frame(true, 2, &z);
    f[0] |= 0x40;
    s.write_all(&f).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1009));
    let grew = rss_bytes(pid).saturating_sub(rss0);
    assert!(grew < 16 << 20, "RSS grew {grew} bytes: the bomb was inflated");
    // Just at the limit is fine.
    let (mut s, _) = ws_offer(&h, "/echo", Some(OFFER));
    let ok = vec![b'x'; 1 << 20];
    s.write_all(&compressed_client_frame(2, &ok)).unwrap();
    let (rsv1, _, p) = read_frame_rsv(&mut s).unwrap();
    assert!(rsv1);
    assert_eq!(inflate(&p), ok);
}

#[test]
fn rsv1_without_negotiation_or_on_control_frames_is_1002() {
    let h = Herald::start(ON);
    // Not offered, so not negotiated.
    let (mut s, e) = ws_offer(&h, "/echo", None);
    assert!(e.is_none());
    s.write_all(&compressed_client_frame(1, b"hello hello hello")).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1002));
    // Negotiated, but on a ping.
    let (mut s, _) = ws_offer(&h, "/echo", Some(OFFER));
    let mut p = client_frame(true, 9, b"x");
    p[0] |= 0x40;
    s.write_all(&p).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1002));
    // Negotiated, but on a continuation frame.
    let (mut s, _) = ws_offer(&h, "/echo", Some(OFFER));
    s.write_all(&client_frame(false, 1, b"a")).unwrap();
    let mut c = client_frame(true, 0, b"b");
    c[0] |= 0x40;
    s.write_all(&c).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1002));
    // Negotiated, with a context-takeover stream (a back-reference into a previous
    // message, RFC 7692 §7.2.3.2): refused, Herald asked for client_no_context_takeover.
    let (mut s, _) = ws_offer(&h, "/echo", Some(OFFER));
    let mut f = client_frame(true, 1, &[0xf2, 0x00, 0x11, 0x00, 0x00]);
    f[0] |= 0x40;
    s.write_all(&f).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1002));
    // Disabled server: RSV1 is a protocol error even though the client offered.
    let off = Herald::start("{}");
    let (mut s, _) = ws_offer(&off, "/echo", Some(OFFER));
    s.write_all(&compressed_client_frame(1, b"hello hello hello")).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1002));
}
