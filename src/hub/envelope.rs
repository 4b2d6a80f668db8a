//! The message envelope `{"id":N,"channel":"CH","data":PAYLOAD}` and its wire encodings.
//!
//! Owns: turning a published body into the envelope (once per publish) and the envelope into
//! each transport's bytes (once per worker per wire format). Called by the engine and the
//! workers' delivery path. Must never allocate per subscriber.

use bytes::{BufMut, Bytes, BytesMut};

/// The payload as JSON text: the body when it is valid JSON (outer whitespace trimmed),
/// else the body as a JSON string (invalid UTF-8 replaced by U+FFFD).
pub fn json_data(body: &[u8]) -> Bytes {
    let trimmed = body.trim_ascii();
    // UTF-8 first: serde_json skips strings it ignores without checking their bytes, and
    // the envelope goes out in WebSocket text frames, which must be UTF-8 (found by fuzzing).
    if !trimmed.is_empty()
        && std::str::from_utf8(trimmed).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok()
    {
        return Bytes::copy_from_slice(trimmed);
    }
    let s = String::from_utf8_lossy(body);
    Bytes::from(serde_json::to_string(&*s).expect("string serializes"))
}

/// Build the envelope `{"id":N,"channel":"CH","data":DATA}` around JSON `data` (see
/// [`json_data`]).
pub fn envelope_of(id: u64, channel: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + channel.len() + 40);
    out.put_slice(b"{\"id\":");
    out.put_slice(id.to_string().as_bytes());
    out.put_slice(b",\"channel\":\"");
    // Channel names are restricted to JSON-safe ASCII (see hub::check_channel).
    out.put_slice(channel.as_bytes());
    out.put_slice(b"\",\"data\":");
    out.put_slice(data);
    out.put_u8(b'}');
    out.freeze()
}

/// The envelope of a raw published body.
pub fn envelope(id: u64, channel: &str, body: &[u8]) -> Bytes {
    envelope_of(id, channel, &json_data(body))
}

/// Make JSON safe inside an HTML `<script>` element: `<`, `>`, `&`, U+2028 and U+2029 can
/// only occur inside JSON strings, where their `\uXXXX` escapes mean the same thing, so no
/// `</script>` or `<!--` can end the script or start a comment.
pub fn script_safe(json: &[u8], out: &mut BytesMut) {
    let mut start = 0;
    let mut i = 0;
    while i < json.len() {
        let rep: Option<(&[u8], usize)> = match json[i] {
            b'<' => Some((b"\\u003c", 1)),
            b'>' => Some((b"\\u003e", 1)),
            b'&' => Some((b"\\u0026", 1)),
            0xE2 if json.get(i + 1) == Some(&0x80) && json.get(i + 2) == Some(&0xA8) => Some((b"\\u2028", 3)),
            0xE2 if json.get(i + 1) == Some(&0x80) && json.get(i + 2) == Some(&0xA9) => Some((b"\\u2029", 3)),
            _ => None,
        };
        if let Some((r, n)) = rep {
            out.put_slice(&json[start..i]);
            out.put_slice(r);
            i += n;
            start = i;
        } else {
            i += 1;
        }
    }
    out.put_slice(&json[start..]);
}

/// One iframe-stream chunk: `<script>parent.handle(ENVELOPE)</script>\n`.
pub fn iframe_chunk(env: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(env.len() + 48);
    out.put_slice(b"<script>parent.handle(");
    script_safe(env, &mut out);
    out.put_slice(b")</script>\n");
    out.freeze()
}

/// One SSE event (WHATWG HTML §9.2): optional `id:`, then the data split into one `data:`
/// line per line of the payload (CRLF, CR and LF all end a line), then a blank line.
pub fn sse_event(id: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.put_slice(b"data: ");
        match end {
            Some(e) => {
                out.put_slice(&rest[..e]);
                out.put_u8(b'\n');
                let skip = if rest[e] == b'\r' && rest.get(e + 1) == Some(&b'\n') { 2 } else { 1 };
                rest = &rest[e + skip..];
            }
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                break;
            }
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// `{"messages":[E1,E2,...]}` (callers pass newest first), plus `"missed":true` when the
/// client's `since` is older than the history holds. With `callback`, wrapped as JSONP.
/// `last` holds each channel's newest id: one channel gives `"last_id":N`, several give
/// `"last_ids":{"a":N,...}`.
pub fn messages_body(envs: &[&[u8]], missed: bool, last: &[(&str, u64)], callback: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(envs.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
    if let Some(cb) = callback {
        // `/**/` defeats the Rosetta-Flash style content sniffing of a leading callback name.
        out.extend_from_slice(b"/**/");
        out.extend_from_slice(cb.as_bytes());
        out.push(b'(');
    }
    out.extend_from_slice(b"{\"messages\":[");
    for (i, e) in envs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if callback.is_some() {
            let mut b = BytesMut::new();
            script_safe(e, &mut b);
            out.extend_from_slice(&b);
        } else {
            out.extend_from_slice(e);
        }
    }
    if let [(_, id)] = last {
        out.extend_from_slice(b"],\"last_id\":");
        out.extend_from_slice(id.to_string().as_bytes());
    } else {
        out.extend_from_slice(b"],\"last_ids\":{");
        for (i, (ch, id)) in last.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{ch}\":{id}").as_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(if missed { b",\"missed\":true}" } else { b",\"missed\":false}" });
    if callback.is_some() {
        out.extend_from_slice(b");");
    }
    out
}

/// Longest JSONP callback name accepted (`jQuery3600123456789012345_1612345678901` is 39).
pub const CALLBACK_MAX: usize = 64;

/// Names refused in any segment of a JSONP callback: members that reach built-in
/// prototypes and constructors (`constructor.constructor` is `Function`), code evaluation,
/// and the global objects through which `x.y` reaches the page (`document.write`,
/// `location.assign`, `opener.close`). A real callback is an application's function; none
/// of these is one.
pub const CALLBACK_DENY: &[&str] = &[
    // prototypes and functions
    "constructor",
    "prototype",
    "__proto__",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toString",
    "toLocaleString",
    "valueOf",
    "call",
    "apply",
    "bind",
    "caller",
    "callee",
    "arguments",
    // code evaluation
    "eval",
    "Function",
    "setTimeout",
    "setInterval",
    "setImmediate",
    "execScript",
    "importScripts",
    "require",
    // globals that reach the page, the window or the built-ins
    "globalThis",
    "window",
    "self",
    "top",
    "parent",
    "frames",
    "opener",
    "document",
    "location",
    "history",
    "navigator",
    "Object",
    "Reflect",
    "Proxy",
];

/// Whether a JSONP callback name is safe to echo into a script: a JavaScript identifier
/// (`[A-Za-z_$][A-Za-z0-9_$]*`), optionally one dotted member (`app.onMessages`), at most
/// [`CALLBACK_MAX`] bytes, and no segment in [`CALLBACK_DENY`]. Deeper paths
/// (`document.body.firstElementChild.click`) and built-ins (`constructor.constructor`) are
/// refused: a page including the script must not be made to call anything but its own
/// handler.
pub fn valid_callback(cb: &str) -> bool {
    let ident = |p: &str| {
        let mut ch = p.bytes();
        matches!(ch.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b'$')
            && ch.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
    };
    !cb.is_empty()
        && cb.len() <= CALLBACK_MAX
        && cb.split('.').count() <= 2
        && cb.split('.').all(|p| ident(p) && !CALLBACK_DENY.contains(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_json_and_string() {
        assert_eq!(&envelope(1, "a", b" {\"x\":1}\n")[..], br#"{"id":1,"channel":"a","data":{"x":1}}"#);
        assert_eq!(&envelope(2, "a", b"hi \"there\"")[..], br#"{"id":2,"channel":"a","data":"hi \"there\""}"#);
        assert_eq!(&envelope(3, "a", b"")[..], br#"{"id":3,"channel":"a","data":""}"#);
        assert_eq!(&envelope(4, "a", b"42")[..], br#"{"id":4,"channel":"a","data":42}"#);
        let v: serde_json::Value = serde_json::from_slice(&envelope(5, "a", b"\xff\x00")).unwrap();
        assert_eq!(v["data"], "\u{fffd}\u{0}");
        // JSON-shaped but not UTF-8 inside a string: sent as a (repaired) string.
        let e = envelope(6, "a", b"[\"\xff\"]");
        assert!(std::str::from_utf8(&e).is_ok());
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["data"], "[\"\u{fffd}\"]");
    }

    #[test]
    fn script_cannot_break_out() {
        let env = envelope(1, "a", b"</script><script>alert(1)</script><!--");
        let chunk = iframe_chunk(&env);
        let s = std::str::from_utf8(&chunk).unwrap();
        assert_eq!(s.matches("</script>").count(), 1);
        assert!(!s.contains("<!--"));
        // still the same JSON once unescaped by a JSON parser
        let inner = &s["<script>parent.handle(".len()..s.len() - ")</script>\n".len()];
        let v: serde_json::Value = serde_json::from_str(inner).unwrap();
        assert_eq!(v["data"], "</script><script>alert(1)</script><!--");
        let v2: serde_json::Value = serde_json::from_str(core::str::from_utf8(&env).unwrap()).unwrap();
        assert_eq!(v, v2);
        let mut b = BytesMut::new();
        script_safe("\"\u{2028}\u{2029}\"".as_bytes(), &mut b);
        assert_eq!(&b[..], b"\"\\u2028\\u2029\"");
    }

    #[test]
    fn sse_lines() {
        assert_eq!(&sse_event(Some("7"), b"a\nb\r\nc\rd")[..], b"id: 7\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(&sse_event(None, b"x")[..], b"data: x\n\n");
        assert_eq!(&sse_event(None, b"x\n")[..], b"data: x\ndata: \n\n");
    }

    #[test]
    fn messages_and_jsonp() {
        let b = messages_body(&[b"{\"id\":2}", b"{\"id\":1}"], false, &[("a", 2)], None);
        assert_eq!(&b[..], br#"{"messages":[{"id":2},{"id":1}],"last_id":2,"missed":false}"#);
        let b = messages_body(&[b"\"</script>\""], true, &[("a", 1)], Some("cb.x"));
        assert_eq!(&b[..], br#"/**/cb.x({"messages":["\u003c/script\u003e"],"last_id":1,"missed":true});"#);
        let b = messages_body(&[], false, &[("a", 1), ("b", 0)], None);
        assert_eq!(&b[..], br#"{"messages":[],"last_ids":{"a":1,"b":0},"missed":false}"#);
        assert!(valid_callback("jQuery123_456.cb"));
        assert!(!valid_callback("alert(1)"));
        assert!(!valid_callback("a..b"));
        assert!(!valid_callback("1a"));
    }

    #[test]
    fn callbacks_are_one_identifier_or_one_member() {
        for ok in ["handle", "app.onMessages", "_cb", "$", "$.cb", "jQuery3600123456789012345_1612345678901", "a1.b2"] {
            assert!(valid_callback(ok), "{ok} should be accepted");
        }
        let long_ok = "a".repeat(CALLBACK_MAX);
        assert!(valid_callback(&long_ok));
        let too_long = "a".repeat(CALLBACK_MAX + 1);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a.b.c",
            "document.body.firstElementChild.click",
            "constructor.constructor",
            "constructor",
            "app.constructor",
            "__proto__",
            "x.__proto__",
            "prototype",
            "a.__defineGetter__",
            "eval",
            "Function",
            "setTimeout",
            "document.write",
            "location.assign",
            "window.close",
            "opener.close",
            "top.x",
            "a.call",
            "f.apply",
            "a b",
            "a-b",
            "a;b",
            r"a\u0062",
            r"\u0065val",
            "ünïcode",
            r"a\0",
            too_long.as_str(),
        ] {
            assert!(!valid_callback(bad), "{bad:?} should be refused");
        }
        // Deny-list entries match whole segments only.
        assert!(valid_callback("evaluate"));
        assert!(valid_callback("app.windowed"));
        assert!(valid_callback("Constructor"));
    }
}
