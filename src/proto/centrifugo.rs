//! Centrifugo client protocol v2 (JSON) as pure data: commands in, replies and pushes out.
//!
//! Owns: the JSON shapes of commands, replies, errors and pushes, and the encoding of a
//! publication push (once per message per worker). Called by the Centrifugo transport and
//! API. No sockets, no clock (client ids come from a seeded [`IdGen`]). Unknown fields in commands are ignored, as Centrifugo does.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A client command. Exactly one method field is set; an empty object is a pong.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Command {
    pub id: u32,
    pub connect: Option<ConnectReq>,
    pub subscribe: Option<SubscribeReq>,
    pub unsubscribe: Option<ChannelReq>,
    pub publish: Option<PublishReq>,
    pub presence: Option<ChannelReq>,
    pub presence_stats: Option<ChannelReq>,
    pub history: Option<HistoryReq>,
    pub ping: Option<serde_json::Value>,
    pub send: Option<serde_json::Value>,
    pub rpc: Option<serde_json::Value>,
    pub refresh: Option<RefreshReq>,
    pub sub_refresh: Option<SubRefreshReq>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ConnectReq {
    pub token: String,
    pub data: Option<Box<RawValue>>,
    pub subs: std::collections::HashMap<String, SubscribeReq>,
    pub name: String,
    pub version: String,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
pub struct SubscribeReq {
    pub channel: String,
    pub token: String,
    pub recover: bool,
    pub epoch: String,
    pub offset: u64,
    pub data: Option<Box<RawValue>>,
    pub positioned: bool,
    pub recoverable: bool,
    pub join_leave: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ChannelReq {
    pub channel: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct PublishReq {
    pub channel: String,
    pub data: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct HistoryReq {
    pub channel: String,
    pub limit: i64,
    pub since: Option<StreamPosition>,
    pub reverse: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct RefreshReq {
    pub token: String,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct SubRefreshReq {
    pub channel: String,
    pub token: String,
}

/// A client error (Centrifugo codes 100-112).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    pub code: u16,
    pub message: &'static str,
}

pub const INTERNAL: Error = Error { code: 100, message: "internal server error" };
pub const UNAUTHORIZED: Error = Error { code: 101, message: "unauthorized" };
pub const UNKNOWN_CHANNEL: Error = Error { code: 102, message: "unknown channel" };
pub const PERMISSION_DENIED: Error = Error { code: 103, message: "permission denied" };
pub const METHOD_NOT_FOUND: Error = Error { code: 104, message: "method not found" };
pub const ALREADY_SUBSCRIBED: Error = Error { code: 105, message: "already subscribed" };
pub const LIMIT_EXCEEDED: Error = Error { code: 106, message: "limit exceeded" };
pub const BAD_REQUEST: Error = Error { code: 107, message: "bad request" };
pub const NOT_AVAILABLE: Error = Error { code: 108, message: "not available" };
pub const TOKEN_EXPIRED: Error = Error { code: 109, message: "token expired" };
pub const UNRECOVERABLE_POSITION: Error = Error { code: 112, message: "unrecoverable position" };

/// A disconnect: WebSocket close code and reason (Centrifugo v6 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: &'static str,
}

pub const SHUTDOWN: Disconnect = Disconnect { code: 3001, reason: "shutdown" };
pub const EXPIRED: Disconnect = Disconnect { code: 3005, reason: "connection expired" };
pub const SLOW: Disconnect = Disconnect { code: 3008, reason: "slow" };
pub const NO_PONG: Disconnect = Disconnect { code: 3012, reason: "no pong" };
pub const INVALID_TOKEN: Disconnect = Disconnect { code: 3500, reason: "invalid token" };
pub const DISCONNECT_BAD_REQUEST: Disconnect = Disconnect { code: 3501, reason: "bad request" };
pub const FORCE_NO_RECONNECT: Disconnect = Disconnect { code: 3503, reason: "force disconnect" };
pub const CHANNEL_LIMIT: Disconnect = Disconnect { code: 3505, reason: "channel limit" };
pub const PERMISSION_DENIED_DISCONNECT: Disconnect = Disconnect { code: 3507, reason: "permission denied" };

/// `{"id":N,"error":{"code":C,"message":"..."}}`
pub fn error_reply(id: u32, e: Error) -> String {
    format!("{{\"id\":{id},\"error\":{{\"code\":{},\"message\":\"{}\"}}}}", e.code, e.message)
}

/// `{"id":N,"METHOD":RESULT}`
pub fn reply(id: u32, method: &str, result: &str) -> String {
    format!("{{\"id\":{id},\"{method}\":{result}}}")
}

/// ClientInfo JSON: `{"user":..,"client":..,"conn_info":..,"chan_info":..}` (empty parts
/// omitted, as Centrifugo's JSON does).
pub fn client_info(user: &str, client: &str, conn_info: Option<&[u8]>, chan_info: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_slice(b"{\"user\":");
    out.put_slice(serde_json::to_string(user).unwrap_or_default().as_bytes());
    out.put_slice(b",\"client\":\"");
    out.put_slice(client.as_bytes());
    out.put_u8(b'"');
    if let Some(c) = conn_info {
        out.put_slice(b",\"conn_info\":");
        out.put_slice(c);
    }
    if let Some(c) = chan_info {
        out.put_slice(b",\"chan_info\":");
        out.put_slice(c);
    }
    out.put_u8(b'}');
    out.freeze()
}

/// A publication object `{"data":DATA[,"offset":N][,"info":INFO][,"tags":TAGS]}` (offset
/// 0 — an unsequenced publication — is omitted, as Centrifugo's JSON does).
pub fn publication(out: &mut BytesMut, data: &[u8], offset: u64, info: Option<&[u8]>, tags: Option<&[u8]>) {
    out.put_slice(b"{\"data\":");
    out.put_slice(data);
    if offset > 0 {
        out.put_slice(b",\"offset\":");
        out.put_slice(offset.to_string().as_bytes());
    }
    if let Some(i) = info {
        out.put_slice(b",\"info\":");
        out.put_slice(i);
    }
    if let Some(t) = tags {
        out.put_slice(b",\"tags\":");
        out.put_slice(t);
    }
    out.put_u8(b'}');
}

/// The parts of one publication, borrowed from wherever the message is kept.
#[derive(Debug, Clone, Copy)]
pub struct Pub<'a> {
    /// Channel the publication belongs to.
    pub channel: &'a str,
    /// Payload as JSON text.
    pub data: &'a [u8],
    /// Stream offset (0: unsequenced, omitted).
    pub offset: u64,
    /// Publisher's ClientInfo JSON.
    pub info: Option<&'a [u8]>,
    /// Tags JSON object.
    pub tags: Option<&'a [u8]>,
}

impl Pub<'_> {
    /// Append the publication object.
    pub fn write(&self, out: &mut BytesMut) {
        publication(out, self.data, self.offset, self.info, self.tags);
    }
}

/// The publication push. `wrapped`: bidirectional (`{"push":{...}}`); else the bare push
/// object that unidirectional transports send.
pub fn pub_push(m: &Pub<'_>, wrapped: bool) -> Bytes {
    let channel = m.channel;
    let mut out = BytesMut::with_capacity(m.data.len() + channel.len() + 64);
    if wrapped {
        out.put_slice(b"{\"push\":");
    }
    out.put_slice(b"{\"channel\":\"");
    out.put_slice(channel.as_bytes());
    out.put_slice(b"\",\"pub\":");
    m.write(&mut out);
    out.put_u8(b'}');
    if wrapped {
        out.put_u8(b'}');
    }
    out.freeze()
}

/// A join or leave push.
pub fn join_leave_push(channel: &str, info: &[u8], join: bool) -> Bytes {
    let kind = if join { "join" } else { "leave" };
    let mut out = BytesMut::with_capacity(info.len() + channel.len() + 48);
    out.put_slice(b"{\"push\":{\"channel\":\"");
    out.put_slice(channel.as_bytes());
    out.put_slice(format!("\",\"{kind}\":{{\"info\":").as_bytes());
    out.put_slice(info);
    out.put_slice(b"}}}");
    out.freeze()
}

/// Split a frame's payload into the JSON commands it carries (newline-delimited).
pub fn split_commands(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload.split(|&b| b == b'\n').map(|l| l.trim_ascii()).filter(|l| !l.is_empty())
}

/// Client ids in UUID v4 form from a splitmix64 sequence. The seed comes from the caller
/// (the reactor mixes the wall clock, the process id and the worker index once at start),
/// so this code reads no clock and two generators with different seeds do not collide.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> IdGen {
        IdGen { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        client_id(self.next_u64(), self.next_u64())
    }
}

/// Format two random words as a UUID v4.
fn client_id(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(error_reply(3, PERMISSION_DENIED), r#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#);
        let m = |data: &'static [u8], offset, info: Option<&'static [u8]>, tags: Option<&'static [u8]>| Pub {
            channel: "c",
            data,
            offset,
            info,
            tags,
        };
        let p = pub_push(&m(b"{\"a\":1}", 5, None, None), true);
        assert_eq!(&p[..], br#"{"push":{"channel":"c","pub":{"data":{"a":1},"offset":5}}}"#);
        let p = pub_push(&m(b"1", 5, Some(b"{\"user\":\"u\"}"), Some(b"{\"k\":\"v\"}")), false);
        assert_eq!(&p[..], br#"{"channel":"c","pub":{"data":1,"offset":5,"info":{"user":"u"},"tags":{"k":"v"}}}"#);
        let p = pub_push(&m(b"1", 0, None, None), false);
        assert_eq!(&p[..], br#"{"channel":"c","pub":{"data":1}}"#);
        let i = client_info("u\"", "id", Some(b"{}"), None);
        assert_eq!(&i[..], br#"{"user":"u\"","client":"id","conn_info":{}}"#);
        let j = join_leave_push("c", &i, false);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["push"]["leave"]["info"]["client"], "id");
        let cmds: Vec<&[u8]> = split_commands(b"{\"id\":1}\n{}\n\n").collect();
        assert_eq!(cmds.len(), 2);
        let c: Command =
            serde_json::from_slice(br#"{"id":2,"subscribe":{"channel":"x","recover":true,"unknown":1},"zzz":[]}"#)
                .unwrap();
        assert_eq!(c.subscribe.unwrap().channel, "x");
        let mut g = IdGen::new(1);
        let id = g.next_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, g.next_id());
    }
}
