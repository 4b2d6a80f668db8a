//! Centrifugo's HTTP proxy protocol as pure data: the JSON request bodies Herald POSTs to
//! the application backend, and the JSON answers it reads back (Centrifugo v6.9.1's
//! `proxyproto`, JSON encoding).
//!
//! Owns: encoding a request (`client`, `transport`, `protocol`, `encoding`, then what the
//! call is about: `user`, `channel`, `token`, `method`, `name`, `version`, `data` or
//! `b64data`, `meta`), decoding an answer into [`Answer`] (`result`, `error`,
//! `disconnect`; `b64info` / `b64data` decoded), the HTTP statuses a proxy maps to errors
//! ([`Transform`]), and why a call failed ([`Failure`]). Called by the Centrifugo transport
//! (requests, answers) and the proxy threads (decode on their side, so a worker never
//! parses a large answer). No sockets, no clock.

use crate::proto::json::Writer;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// What a request carries besides the connection's identity. Empty strings and `None` are
/// left out of the body, except `user` on every call but connect (Centrifugo always sends
/// it there, `""` for anonymous).
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// Client id.
    pub client: &'a str,
    /// `websocket`, `http_stream`, `sse`, `uni_websocket`, `uni_sse`, `uni_http_stream`.
    pub transport: &'a str,
    /// `json` or `protobuf`.
    pub protocol: &'a str,
    /// Send `b64data` instead of `data` (the proxy's `binary_encoding`).
    pub binary: bool,
    /// The connection's user (every call but connect).
    pub user: Option<&'a str>,
    /// Channel (subscribe, publish, sub_refresh).
    pub channel: &'a str,
    /// Subscription token the client sent (subscribe).
    pub token: &'a str,
    /// RPC method.
    pub method: &'a str,
    /// SDK name (connect).
    pub name: &'a str,
    /// SDK version (connect).
    pub version: &'a str,
    /// Payload, JSON text (connect, subscribe, publish, rpc).
    pub data: Option<&'a [u8]>,
    /// The connection's meta, JSON text (`include_connection_meta`).
    pub meta: Option<&'a [u8]>,
}

/// The request body.
pub fn encode(r: &Request<'_>) -> Bytes {
    let mut w = Writer::with_capacity(128 + r.data.map_or(0, |d| d.len() * 4 / 3) + r.meta.map_or(0, <[u8]>::len));
    w.obj();
    for (k, v) in [("client", r.client), ("transport", r.transport), ("protocol", r.protocol)] {
        if !v.is_empty() {
            w.key(k).string(v);
        }
    }
    w.key("encoding").string(if r.binary { "binary" } else { "json" });
    if let Some(u) = r.user {
        w.key("user").string(u);
    }
    for (k, v) in
        [("channel", r.channel), ("token", r.token), ("method", r.method), ("name", r.name), ("version", r.version)]
    {
        if !v.is_empty() {
            w.key(k).string(v);
        }
    }
    match r.data {
        Some(d) if r.binary => {
            w.key("b64data").string(&base64::engine::general_purpose::STANDARD.encode(d));
        }
        Some(d) => {
            w.key("data").raw(d);
        }
        None => {}
    }
    if let Some(m) = r.meta {
        w.key("meta").raw(m);
    }
    w.end();
    w.finish()
}

/// An error the backend chose (or a [`Transform`] made of a status): sent to the client as
/// it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BackendError {
    /// Error code.
    pub code: u32,
    /// Message.
    pub message: String,
    /// The client may retry.
    pub temporary: bool,
}

impl crate::proto::centrifugo::Encode for BackendError {
    fn write(&self, w: &mut Writer) {
        w.obj().key("code").u64(self.code.into()).key("message").string(&self.message);
        if self.temporary {
            w.key("temporary").bool(true);
        }
        w.end();
    }
}

/// A disconnect the backend chose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BackendDisconnect {
    /// Close code.
    pub code: u32,
    /// Close reason.
    pub reason: String,
}

impl BackendDisconnect {
    /// The code and reason as a WebSocket close frame may carry them: a code outside
    /// 1000-4999 (or one RFC 6455 §7.4.1 reserves) becomes 3004 "internal server error"; the
    /// reason is cut to the 123 bytes a control frame leaves room for.
    pub fn close(&self) -> (u16, &str) {
        let code = match self.code {
            1004..=1006 | 1015 => None,
            c @ 1000..=4999 => u16::try_from(c).ok(),
            _ => None,
        };
        let Some(code) = code else { return (3004, "internal server error") };
        let mut end = self.reason.len().min(123);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        (code, &self.reason[..end])
    }
}

/// Per-subscription options the backend may override (`override` in a subscribe result or
/// a connect result's `subs` entry): `None` keeps the namespace's option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `presence`.
    pub presence: Option<bool>,
    /// `join_leave`.
    pub join_leave: Option<bool>,
    /// `force_push_join_leave`.
    pub force_push_join_leave: Option<bool>,
    /// `force_recovery`.
    pub force_recovery: Option<bool>,
    /// `force_positioning`.
    pub force_positioning: Option<bool>,
}

/// A server-side subscription from a connect result's `subs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubOptions {
    /// The subscriber's `chan_info` (JSON text or decoded `b64info`).
    pub info: Option<Bytes>,
    /// Data for the client in its subscribe result.
    pub data: Option<Bytes>,
    /// Option overrides.
    pub overrides: Overrides,
}

/// The `result` of an answer: the union of every call's result fields (each call reads its
/// own). `info` and `data` hold JSON text or the decoded `b64info` / `b64data`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// Connect: the user.
    pub user: String,
    /// Connect, refresh, subscribe, sub_refresh: unix seconds when it expires (0: never).
    pub expire_at: i64,
    /// Connect and refresh: the connection's `conn_info`; subscribe and sub_refresh: the
    /// subscriber's `chan_info`.
    pub info: Option<Bytes>,
    /// Connect: data for the connect result; subscribe: for the subscribe result;
    /// publish: the data to publish instead; rpc: the result.
    pub data: Option<Bytes>,
    /// Connect: server-side subscriptions.
    pub channels: Vec<String>,
    /// Connect: server-side subscriptions with options.
    pub subs: Vec<(String, SubOptions)>,
    /// Connect and refresh: the connection's meta (JSON text), sent back to the backend
    /// with `include_connection_meta`.
    pub meta: Option<Bytes>,
    /// Refresh and sub_refresh: it has expired (close it).
    pub expired: bool,
    /// Subscribe: option overrides.
    pub overrides: Overrides,
    /// Publish: do not keep it in history.
    pub skip_history: bool,
    /// Publish: tags, a JSON object of strings.
    pub tags: Option<Bytes>,
    /// Publish: idempotency key.
    pub idempotency_key: String,
}

/// A decoded answer: Centrifugo looks at `disconnect`, then `error`, then `result`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The call succeeded with these fields (absent: an empty result).
    pub result: Option<Fields>,
    /// The backend refused with this error.
    pub error: Option<BackendError>,
    /// The backend wants the connection closed.
    pub disconnect: Option<BackendDisconnect>,
}

/// Why a proxy call has no answer: each is answered to the client as Centrifugo answers a
/// failed call (error 100, or what refresh and sub_refresh do on failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every proxy thread was busy and the queue was full: the call was not made.
    Busy,
    /// The proxy's `timeout` passed (waiting for a thread counts).
    Timeout,
    /// Connecting, sending or reading failed.
    Transport(String),
    /// The backend answered this status (not 200) and no transform maps it.
    Status(u16),
    /// The answer was larger than `proxy_max_response`.
    TooLarge,
    /// The answer is not Centrifugo's JSON shape.
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Busy => f.write_str("all proxy threads busy and the queue full (proxy_threads, proxy_queue_size)"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Transport(e) => write!(f, "request failed: {e}"),
            Failure::Status(s) => write!(f, "unexpected HTTP status {s}"),
            Failure::TooLarge => f.write_str("answer over proxy_max_response"),
            Failure::Malformed(e) => write!(f, "malformed answer: {e}"),
        }
    }
}

/// A `status_to_code_transforms` rule in the form the proxy threads apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// HTTP status.
    pub status: u16,
    /// The error it becomes.
    pub error: Option<BackendError>,
    /// Or the disconnect.
    pub disconnect: Option<BackendDisconnect>,
}

/// The answer a status other than 200 gives: a matching transform's error or disconnect,
/// else [`Failure::Status`].
pub fn status_answer(status: u16, transforms: &[Transform]) -> Result<Answer, Failure> {
    for t in transforms.iter().filter(|t| t.status == status) {
        if let Some(e) = &t.error {
            return Ok(Answer { error: Some(e.clone()), ..Default::default() });
        }
        if let Some(d) = &t.disconnect {
            return Ok(Answer { disconnect: Some(d.clone()), ..Default::default() });
        }
    }
    Err(Failure::Status(status))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireBool {
    value: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireOverride {
    presence: Option<WireBool>,
    join_leave: Option<WireBool>,
    force_push_join_leave: Option<WireBool>,
    force_recovery: Option<WireBool>,
    force_positioning: Option<WireBool>,
}

impl From<WireOverride> for Overrides {
    fn from(o: WireOverride) -> Overrides {
        Overrides {
            presence: o.presence.map(|b| b.value),
            join_leave: o.join_leave.map(|b| b.value),
            force_push_join_leave: o.force_push_join_leave.map(|b| b.value),
            force_recovery: o.force_recovery.map(|b| b.value),
            force_positioning: o.force_positioning.map(|b| b.value),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireSub {
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    #[serde(rename = "override")]
    overrides: Option<WireOverride>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireResult {
    user: String,
    expire_at: i64,
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    channels: Vec<String>,
    subs: BTreeMap<String, WireSub>,
    meta: Option<Box<RawValue>>,
    expired: bool,
    #[serde(rename = "override")]
    overrides: Option<WireOverride>,
    skip_history: bool,
    tags: Option<BTreeMap<String, String>>,
    idempotency_key: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Wire {
    result: Option<WireResult>,
    error: Option<BackendError>,
    disconnect: Option<BackendDisconnect>,
}

/// JSON text of a raw value, or the decoded base64 when that is set instead (Centrifugo
/// prefers `b64*` when both are present); `null` counts as absent.
fn payload(raw: Option<Box<RawValue>>, b64: &str, what: &str) -> Result<Option<Bytes>, Failure> {
    if !b64.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| Failure::Malformed(format!("b64{what}: {e}")));
    }
    Ok(raw.filter(|r| r.get() != "null").map(|r| Bytes::copy_from_slice(r.get().as_bytes())))
}

/// Decode a 200 answer.
pub fn decode(body: &[u8]) -> Result<Answer, Failure> {
    let w: Wire = serde_json::from_slice(body).map_err(|e| Failure::Malformed(e.to_string()))?;
    let result = match w.result {
        None => None,
        Some(r) => {
            let mut subs = Vec::with_capacity(r.subs.len());
            for (ch, s) in r.subs {
                subs.push((
                    ch,
                    SubOptions {
                        info: payload(s.info, &s.b64info, "info")?,
                        data: payload(s.data, &s.b64data, "data")?,
                        overrides: s.overrides.map(Overrides::from).unwrap_or_default(),
                    },
                ));
            }
            // Publish: an explicit `data` wins over `b64data` (Centrifugo's order there).
            let data = match r.data.filter(|d| d.get() != "null") {
                Some(d) => Some(Bytes::copy_from_slice(d.get().as_bytes())),
                None => payload(None, &r.b64data, "data")?,
            };
            let tags = r.tags.filter(|t| !t.is_empty()).map(|t| {
                let mut w = Writer::new();
                w.obj();
                for (k, v) in &t {
                    w.key(k).string(v);
                }
                w.end();
                w.finish()
            });
            Some(Fields {
                user: r.user,
                expire_at: r.expire_at,
                info: payload(r.info, &r.b64info, "info")?,
                data,
                channels: r.channels,
                subs,
                meta: payload(r.meta, "", "meta")?,
                expired: r.expired,
                overrides: r.overrides.map(Overrides::from).unwrap_or_default(),
                skip_history: r.skip_history,
                tags,
                idempotency_key: r.idempotency_key,
            })
        }
    };
    Ok(Answer { result, error: w.error, disconnect: w.disconnect })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn requests_as_centrifugo_writes_them() {
        let connect = Request {
            client: "c1",
            transport: "websocket",
            protocol: "json",
            name: "js",
            version: "5",
            data: Some(br#"{"a":1}"#),
            ..Default::default()
        };
        assert_eq!(
            &encode(&connect)[..],
            br#"{"client":"c1","transport":"websocket","protocol":"json","encoding":"json","name":"js","version":"5","data":{"a":1}}"#
        );
        let publish = Request {
            client: "c1",
            transport: "sse",
            protocol: "json",
            binary: true,
            user: Some(""),
            channel: "chat:a\"b",
            data: Some(b"[1]"),
            meta: Some(br#"{"m":true}"#),
            ..Default::default()
        };
        let v = json(&encode(&publish));
        assert_eq!(v["user"], "", "user is always sent after connect");
        assert_eq!(v["channel"], "chat:a\"b");
        assert_eq!(v["encoding"], "binary");
        assert_eq!(v["b64data"], "WzFd");
        assert!(v.get("data").is_none());
        assert_eq!(v["meta"]["m"], true);
        let rpc = Request { method: "m:x", user: Some("u"), ..Default::default() };
        assert_eq!(&encode(&rpc)[..], br#"{"encoding":"json","user":"u","method":"m:x"}"#);
    }

    #[test]
    fn answers_decoded() {
        let a = decode(
            br#"{"result":{"user":"56","expire_at":1700000000,"info":{"name":"A"},"b64data":"eyJ4IjoxfQ==",
                "channels":["news"],"subs":{"chat:1":{"info":{"r":1},"override":{"presence":{"value":false}}}},
                "meta":{"tenant":7},"unknown":1}}"#,
        )
        .unwrap();
        let r = a.result.unwrap();
        assert_eq!((r.user.as_str(), r.expire_at), ("56", 1_700_000_000));
        assert_eq!(&r.info.unwrap()[..], br#"{"name":"A"}"#);
        assert_eq!(&r.data.unwrap()[..], br#"{"x":1}"#);
        assert_eq!(r.channels, vec!["news"]);
        assert_eq!(r.subs[0].0, "chat:1");
        assert_eq!(r.subs[0].1.overrides.presence, Some(false));
        assert_eq!(r.subs[0].1.overrides.join_leave, None);
        assert_eq!(&r.meta.unwrap()[..], br#"{"tenant":7}"#);
        let e = decode(br#"{"error":{"code":1000,"message":"custom"}}"#).unwrap();
        assert_eq!(e.error, Some(BackendError { code: 1000, message: "custom".into(), temporary: false }));
        let d = decode(br#"{"disconnect":{"code":4500,"reason":"go away"}}"#).unwrap();
        assert_eq!(d.disconnect.unwrap().close(), (4500, "go away"));
        assert_eq!(decode(b"{}").unwrap(), Answer::default());
        let p = decode(br#"{"result":{"data":{"new":1},"b64data":"eA==","skip_history":true,"tags":{"k":"v"}}}"#)
            .unwrap()
            .result
            .unwrap();
        assert_eq!(&p.data.unwrap()[..], br#"{"new":1}"#, "publish: data wins over b64data");
        assert!(p.skip_history);
        assert_eq!(&p.tags.unwrap()[..], br#"{"k":"v"}"#);
        assert!(matches!(decode(b"not json"), Err(Failure::Malformed(_))));
        assert!(matches!(decode(br#"{"result":{"expire_at":"soon"}}"#), Err(Failure::Malformed(_))));
        assert!(matches!(decode(br#"{"result":{"b64info":"!!"}}"#), Err(Failure::Malformed(_))));
        assert_eq!(decode(br#"{"result":{"info":null}}"#).unwrap().result.unwrap().info, None);
    }

    #[test]
    fn statuses_and_close_codes() {
        let t = vec![
            Transform { status: 404, error: Some(BackendError { code: 104, ..Default::default() }), disconnect: None },
            Transform {
                status: 403,
                error: None,
                disconnect: Some(BackendDisconnect { code: 4403, reason: "no".into() }),
            },
        ];
        assert_eq!(status_answer(404, &t).unwrap().error.unwrap().code, 104);
        assert_eq!(status_answer(403, &t).unwrap().disconnect.unwrap().code, 4403);
        assert_eq!(status_answer(500, &t), Err(Failure::Status(500)));
        for (code, want) in [(0, 3004), (1005, 3004), (999, 3004), (5000, 3004), (1000, 1000), (3501, 3501)] {
            assert_eq!(BackendDisconnect { code, reason: String::new() }.close().0, want, "{code}");
        }
        let long = BackendDisconnect { code: 4000, reason: "é".repeat(100) };
        let (_, r) = long.close();
        assert!(r.len() <= 123 && r.chars().all(|c| c == 'é'));
    }
}
