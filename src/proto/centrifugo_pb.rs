//! Centrifugo client protocol in protobuf (`/connection/websocket?cf_protocol=protobuf`, or
//! the `centrifuge-protobuf` WebSocket subprotocol): the messages of Centrifugo's
//! `client.proto` (github.com/centrifugal/protocol v0.19.2, the version Centrifugo v6.9.1
//! uses) as hand-written prost structs, and the conversions to and from the JSON side's
//! request and result types in [`super::centrifugo`], so command handling stays one.
//!
//! Owns: the protobuf shapes (field numbers exactly as in client.proto; fields Herald never
//! reads or writes are left out, which protobuf decoders skip), varint-delimited framing
//! (several commands or replies per WebSocket message), and converting the JSON that the hub
//! keeps (ClientInfo, tags) into their protobuf form. Data stays what the hub stores (JSON
//! text), sent as the `data` bytes. No sockets, no clock.

use super::centrifugo as json;
use bytes::{Bytes, BytesMut};
use prost::Message as _;
use serde_json::value::RawValue;
use std::collections::HashMap;

/// `Error`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    /// Centrifugo error code.
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// Its message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The client may retry.
    #[prost(bool, tag = "3")]
    pub temporary: bool,
}

/// `Command`: one client command; exactly one method is set, none is a pong.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    /// Echoed in the reply.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// connect
    #[prost(message, optional, tag = "4")]
    pub connect: Option<ConnectRequest>,
    /// subscribe
    #[prost(message, optional, tag = "5")]
    pub subscribe: Option<SubscribeRequest>,
    /// unsubscribe
    #[prost(message, optional, tag = "6")]
    pub unsubscribe: Option<ChannelRequest>,
    /// publish
    #[prost(message, optional, tag = "7")]
    pub publish: Option<PublishRequest>,
    /// presence
    #[prost(message, optional, tag = "8")]
    pub presence: Option<ChannelRequest>,
    /// presence_stats
    #[prost(message, optional, tag = "9")]
    pub presence_stats: Option<ChannelRequest>,
    /// history
    #[prost(message, optional, tag = "10")]
    pub history: Option<HistoryRequest>,
    /// ping
    #[prost(message, optional, tag = "11")]
    pub ping: Option<Empty>,
    /// send
    #[prost(message, optional, tag = "12")]
    pub send: Option<SendRequest>,
    /// rpc
    #[prost(message, optional, tag = "13")]
    pub rpc: Option<RpcRequest>,
    /// refresh
    #[prost(message, optional, tag = "14")]
    pub refresh: Option<RefreshRequest>,
    /// sub_refresh
    #[prost(message, optional, tag = "15")]
    pub sub_refresh: Option<SubRefreshRequest>,
}

/// `Reply`: a reply to a command (id set), a push (id 0, push set), or a ping (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    /// The command's id.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// error
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
    /// push
    #[prost(message, optional, tag = "4")]
    pub push: Option<Push>,
    /// connect
    #[prost(message, optional, tag = "5")]
    pub connect: Option<ConnectResult>,
    /// subscribe
    #[prost(message, optional, tag = "6")]
    pub subscribe: Option<SubscribeResult>,
    /// unsubscribe (UnsubscribeResult: empty)
    #[prost(message, optional, tag = "7")]
    pub unsubscribe: Option<Empty>,
    /// publish (PublishResult: empty)
    #[prost(message, optional, tag = "8")]
    pub publish: Option<Empty>,
    /// presence
    #[prost(message, optional, tag = "9")]
    pub presence: Option<PresenceResult>,
    /// presence_stats
    #[prost(message, optional, tag = "10")]
    pub presence_stats: Option<PresenceStatsResult>,
    /// history
    #[prost(message, optional, tag = "11")]
    pub history: Option<HistoryResult>,
    /// ping (PingResult: empty)
    #[prost(message, optional, tag = "12")]
    pub ping: Option<Empty>,
    /// rpc
    #[prost(message, optional, tag = "13")]
    pub rpc: Option<RpcResult>,
    /// refresh
    #[prost(message, optional, tag = "14")]
    pub refresh: Option<RefreshResult>,
    /// sub_refresh
    #[prost(message, optional, tag = "15")]
    pub sub_refresh: Option<SubRefreshResult>,
}

/// `Push`: something the server sends unasked.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Push {
    /// The channel it concerns ("" for connection-level pushes).
    #[prost(string, tag = "2")]
    pub channel: String,
    /// A publication.
    #[prost(message, optional, tag = "4")]
    pub r#pub: Option<Publication>,
    /// A client joined.
    #[prost(message, optional, tag = "5")]
    pub join: Option<Join>,
    /// A client left.
    #[prost(message, optional, tag = "6")]
    pub leave: Option<Join>,
    /// The server ended the subscription.
    #[prost(message, optional, tag = "7")]
    pub unsubscribe: Option<Unsubscribe>,
    /// The server subscribed the client.
    #[prost(message, optional, tag = "9")]
    pub subscribe: Option<Subscribe>,
    /// The connection's expiry changed.
    #[prost(message, optional, tag = "12")]
    pub refresh: Option<Refresh>,
}

/// `ClientInfo`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientInfo {
    /// user
    #[prost(string, tag = "1")]
    pub user: String,
    /// client id
    #[prost(string, tag = "2")]
    pub client: String,
    /// The connection token's `info` (JSON text).
    #[prost(bytes = "vec", tag = "3")]
    pub conn_info: Vec<u8>,
    /// The subscription token's `info` (JSON text).
    #[prost(bytes = "vec", tag = "4")]
    pub chan_info: Vec<u8>,
}

/// `Publication`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Publication {
    /// Payload: the JSON text the hub stores.
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    /// Publisher.
    #[prost(message, optional, tag = "5")]
    pub info: Option<ClientInfo>,
    /// Stream offset (0: unsequenced).
    #[prost(uint64, tag = "6")]
    pub offset: u64,
    /// Tags.
    #[prost(map = "string, string", tag = "7")]
    pub tags: HashMap<String, String>,
}

/// `Join` and `Leave` (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Join {
    /// Who joined or left.
    #[prost(message, optional, tag = "1")]
    pub info: Option<ClientInfo>,
}

/// `Unsubscribe` push.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unsubscribe {
    /// code
    #[prost(uint32, tag = "2")]
    pub code: u32,
    /// reason
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// `Subscribe` push (a server-side subscription).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribe {
    /// recoverable
    #[prost(bool, tag = "1")]
    pub recoverable: bool,
    /// epoch
    #[prost(string, tag = "4")]
    pub epoch: String,
    /// offset
    #[prost(uint64, tag = "5")]
    pub offset: u64,
    /// positioned
    #[prost(bool, tag = "6")]
    pub positioned: bool,
}

/// `Refresh` push.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refresh {
    /// expires
    #[prost(bool, tag = "1")]
    pub expires: bool,
    /// ttl
    #[prost(uint32, tag = "2")]
    pub ttl: u32,
}

/// `ConnectRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectRequest {
    /// token
    #[prost(string, tag = "1")]
    pub token: String,
    /// data (for the connect proxy)
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// Subscriptions to resume.
    #[prost(map = "string, message", tag = "3")]
    pub subs: HashMap<String, SubscribeRequest>,
    /// SDK name
    #[prost(string, tag = "4")]
    pub name: String,
    /// SDK version
    #[prost(string, tag = "5")]
    pub version: String,
    /// Headers emulation.
    #[prost(map = "string, string", tag = "6")]
    pub headers: HashMap<String, String>,
}

/// `ConnectResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectResult {
    /// client
    #[prost(string, tag = "1")]
    pub client: String,
    /// version
    #[prost(string, tag = "2")]
    pub version: String,
    /// expires
    #[prost(bool, tag = "3")]
    pub expires: bool,
    /// ttl
    #[prost(uint32, tag = "4")]
    pub ttl: u32,
    /// Data from the connect proxy.
    #[prost(bytes = "vec", tag = "5")]
    pub data: Vec<u8>,
    /// Server-side subscriptions (map<string, SubscribeResult>, see [`Entry`]).
    #[prost(message, repeated, tag = "6")]
    pub subs: Vec<Entry<SubscribeResult>>,
    /// ping interval (s)
    #[prost(uint32, tag = "7")]
    pub ping: u32,
    /// the client must answer pings
    #[prost(bool, tag = "8")]
    pub pong: bool,
}

/// `RefreshRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct RefreshRequest {
    /// token
    #[prost(string, tag = "1")]
    pub token: String,
}

/// `RefreshResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct RefreshResult {
    /// client
    #[prost(string, tag = "1")]
    pub client: String,
    /// version
    #[prost(string, tag = "2")]
    pub version: String,
    /// expires
    #[prost(bool, tag = "3")]
    pub expires: bool,
    /// ttl
    #[prost(uint32, tag = "4")]
    pub ttl: u32,
}

/// `SubscribeRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeRequest {
    /// channel
    #[prost(string, tag = "1")]
    pub channel: String,
    /// token
    #[prost(string, tag = "2")]
    pub token: String,
    /// recover
    #[prost(bool, tag = "3")]
    pub recover: bool,
    /// epoch
    #[prost(string, tag = "6")]
    pub epoch: String,
    /// offset
    #[prost(uint64, tag = "7")]
    pub offset: u64,
    /// data (for a subscribe proxy; ignored)
    #[prost(bytes = "vec", tag = "8")]
    pub data: Vec<u8>,
    /// positioned
    #[prost(bool, tag = "9")]
    pub positioned: bool,
    /// recoverable
    #[prost(bool, tag = "10")]
    pub recoverable: bool,
    /// join_leave
    #[prost(bool, tag = "11")]
    pub join_leave: bool,
}

/// `SubscribeResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeResult {
    /// expires
    #[prost(bool, tag = "1")]
    pub expires: bool,
    /// ttl
    #[prost(uint32, tag = "2")]
    pub ttl: u32,
    /// recoverable
    #[prost(bool, tag = "3")]
    pub recoverable: bool,
    /// epoch
    #[prost(string, tag = "6")]
    pub epoch: String,
    /// publications
    #[prost(message, repeated, tag = "7")]
    pub publications: Vec<Publication>,
    /// recovered
    #[prost(bool, tag = "8")]
    pub recovered: bool,
    /// offset
    #[prost(uint64, tag = "9")]
    pub offset: u64,
    /// positioned
    #[prost(bool, tag = "10")]
    pub positioned: bool,
    /// Data from the subscribe proxy.
    #[prost(bytes = "vec", tag = "11")]
    pub data: Vec<u8>,
    /// was_recovering
    #[prost(bool, tag = "12")]
    pub was_recovering: bool,
}

/// `SubRefreshRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubRefreshRequest {
    /// channel
    #[prost(string, tag = "1")]
    pub channel: String,
    /// token
    #[prost(string, tag = "2")]
    pub token: String,
}

/// `SubRefreshResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubRefreshResult {
    /// expires
    #[prost(bool, tag = "1")]
    pub expires: bool,
    /// ttl
    #[prost(uint32, tag = "2")]
    pub ttl: u32,
}

/// `UnsubscribeRequest`, `PresenceRequest`, `PresenceStatsRequest` (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelRequest {
    /// channel
    #[prost(string, tag = "1")]
    pub channel: String,
}

/// `PublishRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRequest {
    /// channel
    #[prost(string, tag = "1")]
    pub channel: String,
    /// data
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// `PresenceResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceResult {
    /// client id -> ClientInfo (map<string, ClientInfo>, see [`Entry`]).
    #[prost(message, repeated, tag = "1")]
    pub presence: Vec<Entry<ClientInfo>>,
}

/// `PresenceStatsResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PresenceStatsResult {
    /// num_clients
    #[prost(uint32, tag = "1")]
    pub num_clients: u32,
    /// num_users
    #[prost(uint32, tag = "2")]
    pub num_users: u32,
}

/// `StreamPosition`
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamPosition {
    /// offset
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    /// epoch
    #[prost(string, tag = "2")]
    pub epoch: String,
}

/// `HistoryRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryRequest {
    /// channel
    #[prost(string, tag = "1")]
    pub channel: String,
    /// limit
    #[prost(int32, tag = "7")]
    pub limit: i32,
    /// since
    #[prost(message, optional, tag = "8")]
    pub since: Option<StreamPosition>,
    /// reverse
    #[prost(bool, tag = "9")]
    pub reverse: bool,
}

/// `HistoryResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryResult {
    /// publications
    #[prost(message, repeated, tag = "1")]
    pub publications: Vec<Publication>,
    /// epoch
    #[prost(string, tag = "2")]
    pub epoch: String,
    /// offset
    #[prost(uint64, tag = "3")]
    pub offset: u64,
}

/// `RPCRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcRequest {
    /// data
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// method
    #[prost(string, tag = "2")]
    pub method: String,
}

/// `RPCResult`
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcResult {
    /// data
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// `SendRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendRequest {
    /// data
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// One entry of a `map<string, Message>` as it is on the wire (a map is a repeated entry
/// message). prost's own map encoding leaves out a value equal to its default, which
/// protobuf.js (centrifuge-js) then decodes as `null`: a server-side subscription with an
/// empty SubscribeResult crashed the SDK. Go's encoder, which Centrifugo uses, always writes
/// the value; so does this.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry<V: prost::Message + Default + PartialEq + std::fmt::Debug> {
    /// The map key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value, always present.
    #[prost(message, optional, tag = "2")]
    pub value: Option<V>,
}

impl<V: prost::Message + Default + PartialEq + std::fmt::Debug> Entry<V> {
    /// An entry.
    pub fn new(key: String, value: V) -> Entry<V> {
        Entry { key, value: Some(value) }
    }
}

/// The empty messages (PingRequest/Result, PublishResult, UnsubscribeResult).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// A malformed frame: a truncated length prefix or message, or a message that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The varint-delimited commands of a frame, decoded one at a time as they are taken: a
/// frame of a million empty commands (1 MiB) never holds a million 592-byte `Command`s at
/// once. A malformed command yields `Err` and ends the iteration.
pub fn decode_commands(frame: &[u8]) -> Commands<'_> {
    Commands { frame, failed: false }
}

/// Iterator of [`decode_commands`].
pub struct Commands<'a> {
    frame: &'a [u8],
    failed: bool,
}

impl<'a> Commands<'a> {
    /// The bytes not decoded yet.
    pub fn rest(&self) -> &'a [u8] {
        self.frame
    }
}

impl Iterator for Commands<'_> {
    type Item = Result<Command, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.frame.is_empty() || self.failed {
            return None;
        }
        let one = (|| {
            let len = prost::encoding::decode_varint(&mut self.frame).map_err(|_| Malformed)?;
            let len = usize::try_from(len).map_err(|_| Malformed)?;
            if len > self.frame.len() {
                return Err(Malformed);
            }
            let (msg, rest) = self.frame.split_at(len);
            self.frame = rest;
            Command::decode(msg).map_err(|_| Malformed)
        })();
        self.failed = one.is_err();
        Some(one)
    }
}

/// JSON text as a RawValue, when it is valid JSON (UTF-8).
fn raw_json(b: &[u8]) -> Option<Box<RawValue>> {
    let s = std::str::from_utf8(b).ok()?;
    if s.trim().is_empty() {
        return None;
    }
    RawValue::from_string(s.trim().to_string()).ok()
}

fn subscribe_req(s: SubscribeRequest) -> json::SubscribeReq {
    json::SubscribeReq {
        data: raw_json(&s.data),
        channel: s.channel,
        token: s.token,
        recover: s.recover,
        epoch: s.epoch,
        offset: s.offset,
        positioned: s.positioned,
        recoverable: s.recoverable,
        join_leave: s.join_leave,
    }
}

/// The protobuf command as the request structs the JSON side decodes into. Publish data
/// that is not JSON text becomes missing data (107 bad request): the hub keeps JSON, which
/// JSON subscribers receive as is.
pub fn into_command(c: Command) -> json::Command {
    let chan = |r: Option<ChannelRequest>| r.map(|r| json::ChannelReq { channel: r.channel });
    let present = |b: bool| b.then(|| serde_json::Value::Object(Default::default()));
    json::Command {
        id: c.id,
        connect: c.connect.map(|r| json::ConnectReq {
            data: raw_json(&r.data),
            token: r.token,
            subs: r.subs.into_iter().map(|(k, v)| (k, subscribe_req(v))).collect(),
            name: r.name,
            version: r.version,
            headers: r.headers,
        }),
        subscribe: c.subscribe.map(subscribe_req),
        unsubscribe: chan(c.unsubscribe),
        publish: c.publish.map(|r| json::PublishReq { data: raw_json(&r.data), channel: r.channel }),
        presence: chan(c.presence),
        presence_stats: chan(c.presence_stats),
        history: c.history.map(|r| json::HistoryReq {
            channel: r.channel,
            limit: r.limit.into(),
            since: r.since.map(|s| json::StreamPosition { offset: s.offset, epoch: s.epoch }),
            reverse: r.reverse,
        }),
        ping: present(c.ping.is_some()),
        send: present(c.send.is_some()),
        rpc: c.rpc.map(|r| json::RpcReq { data: raw_json(&r.data), method: r.method }),
        refresh: c.refresh.map(|r| json::RefreshReq { token: r.token }),
        sub_refresh: c.sub_refresh.map(|r| json::SubRefreshReq { channel: r.channel, token: r.token }),
    }
}

/// `message` with its varint length in front (one reply in a frame).
pub fn delimited(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut b = BytesMut::with_capacity(len + prost::length_delimiter_len(len));
    // Cannot fail: the buffer grows.
    let _ = message.encode_length_delimited(&mut b);
    b.freeze()
}

/// A reply to command `id` carrying an error.
pub fn error_reply(id: u32, e: json::Error) -> Reply {
    Reply {
        id,
        error: Some(Error { code: e.code.into(), message: e.message.into(), temporary: e.temporary() }),
        ..Default::default()
    }
}

fn ttl(t: Option<i64>) -> (bool, u32) {
    match t {
        Some(t) => (true, u32::try_from(t.max(0)).unwrap_or(u32::MAX)),
        None => (false, 0),
    }
}

/// ClientInfo from the JSON the hub keeps (`{"user","client","conn_info","chan_info"}`).
pub fn client_info(info: &[u8]) -> ClientInfo {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Info {
        user: String,
        client: String,
        conn_info: Option<Box<RawValue>>,
        chan_info: Option<Box<RawValue>>,
    }
    let i: Info = serde_json::from_slice(info).unwrap_or_default();
    let raw = |r: Option<Box<RawValue>>| r.map(|r| r.get().as_bytes().to_vec()).unwrap_or_default();
    ClientInfo { user: i.user, client: i.client, conn_info: raw(i.conn_info), chan_info: raw(i.chan_info) }
}

/// Tags from their JSON object (string values as they are, others as JSON text).
fn tags(t: &[u8]) -> HashMap<String, String> {
    let m: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(t).unwrap_or_default();
    m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

/// A publication (data copied once into `Bytes`; the caller encodes it once per worker).
pub fn publication(p: &json::Pub<'_>) -> Publication {
    Publication {
        data: Bytes::copy_from_slice(p.data),
        info: p.info.map(client_info),
        offset: p.offset,
        tags: p.tags.map(tags).unwrap_or_default(),
    }
}

/// A push reply (id 0).
pub fn push_reply(push: Push) -> Reply {
    Reply { push: Some(push), ..Default::default() }
}

/// The publication push, delimited (encoded once per message per worker).
pub fn pub_push(p: &json::Pub<'_>) -> Bytes {
    delimited(&push_reply(Push { channel: p.channel.into(), r#pub: Some(publication(p)), ..Default::default() }))
}

/// A join or leave push built from its JSON form (`{"push":{"channel":C,"join":{"info":I}}}`,
/// what the hub carries in a join/leave event); None if it is not one.
pub fn join_leave_from_json(push: &[u8]) -> Option<Bytes> {
    #[derive(serde::Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        push: Inner<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Inner<'a> {
        channel: String,
        #[serde(borrow)]
        join: Option<Body<'a>>,
        #[serde(borrow)]
        leave: Option<Body<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        info: &'a RawValue,
    }
    let o: Outer<'_> = serde_json::from_slice(push).ok()?;
    let mk = |b: Body<'_>| Join { info: Some(client_info(b.info.get().as_bytes())) };
    let join = o.push.join.map(mk);
    let leave = o.push.leave.map(mk);
    if join.is_none() && leave.is_none() {
        return None;
    }
    Some(delimited(&push_reply(Push { channel: o.push.channel, join, leave, ..Default::default() })))
}

/// A subscribe result.
pub fn subscribe_result(r: &json::SubscribeResult<'_>) -> SubscribeResult {
    let (expires, ttl) = ttl(r.expires_ttl);
    let pos = r.recoverable;
    SubscribeResult {
        expires,
        ttl,
        recoverable: pos.is_some(),
        epoch: pos.map(|p| p.epoch.to_string()).unwrap_or_default(),
        offset: pos.map_or(0, |p| p.offset),
        positioned: pos.is_some(),
        was_recovering: r.was_recovering,
        recovered: r.was_recovering && r.recovered,
        publications: r.publications.iter().map(publication).collect(),
        data: r.data.map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// A connect result; `subs` are the server-side subscriptions' results.
pub fn connect_result(r: &json::ConnectResult<'_>, subs: Vec<(String, SubscribeResult)>) -> ConnectResult {
    let (expires, ttl) = ttl(r.expires_ttl);
    ConnectResult {
        client: r.client.into(),
        version: r.version.into(),
        expires,
        ttl,
        subs: subs.into_iter().map(|(k, v)| Entry::new(k, v)).collect(),
        ping: u32::try_from(r.ping).unwrap_or(u32::MAX),
        pong: r.pong,
        data: r.data.map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// A refresh result.
pub fn refresh_result(r: &json::RefreshResult<'_>) -> RefreshResult {
    let (expires, ttl) = ttl(r.expires_ttl);
    RefreshResult { client: r.client.into(), version: r.version.into(), expires, ttl }
}

/// A history result.
pub fn history_result(r: &json::HistoryResult<'_>) -> HistoryResult {
    HistoryResult {
        publications: r.publications.iter().map(publication).collect(),
        epoch: r.position.epoch.into(),
        offset: r.position.offset,
    }
}

/// A presence result from the engine's (client, user, ClientInfo JSON) entries.
pub fn presence_result(entries: &[(String, String, Bytes)]) -> PresenceResult {
    PresenceResult { presence: entries.iter().map(|(c, _, i)| Entry::new(c.clone(), client_info(i))).collect() }
}

/// A presence_stats result.
pub fn presence_stats(r: &json::PresenceStatsResult) -> PresenceStatsResult {
    let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    PresenceStatsResult { num_clients: n(r.num_clients), num_users: n(r.num_users) }
}

/// The sub_refresh result.
pub fn sub_refresh_result(e: json::Expiry) -> SubRefreshResult {
    let (expires, ttl) = ttl(e.ttl);
    SubRefreshResult { expires, ttl }
}

/// A server-side subscribe push: the subscribe result's position.
pub fn subscribe_push(channel: &str, r: &SubscribeResult) -> Bytes {
    let s =
        Subscribe { recoverable: r.recoverable, epoch: r.epoch.clone(), offset: r.offset, positioned: r.positioned };
    delimited(&push_reply(Push { channel: channel.into(), subscribe: Some(s), ..Default::default() }))
}

/// A server-side unsubscribe push.
pub fn unsubscribe_push(channel: &str, why: json::Unsubscribe) -> Bytes {
    let u = Unsubscribe { code: why.code.into(), reason: why.reason.into() };
    delimited(&push_reply(Push { channel: channel.into(), unsubscribe: Some(u), ..Default::default() }))
}

/// A refresh push.
pub fn refresh_push(e: json::Expiry) -> Bytes {
    let (expires, ttl) = ttl(e.ttl);
    delimited(&push_reply(Push { refresh: Some(Refresh { expires, ttl }), ..Default::default() }))
}

/// Where the publications of a paced reply go: the Reply field of the result and, inside
/// it, the field tag of its `publications` (both length-delimited, wire type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacedResult {
    /// Reply.subscribe (6), SubscribeResult.publications (7).
    Subscribe,
    /// Reply.history (11), HistoryResult.publications (1).
    History,
}

impl PacedResult {
    fn tags(self) -> (u8, u8) {
        match self {
            PacedResult::Subscribe => (6 << 3 | 2, 7 << 3 | 2),
            PacedResult::History => (11 << 3 | 2, 1 << 3 | 2),
        }
    }
}

/// The bytes one publication takes inside a paced result (tag, length, message).
pub fn pub_field_len(p: &json::Pub<'_>) -> usize {
    let n = publication(p).encoded_len();
    1 + prost::length_delimiter_len(n) + n
}

/// One publication as a `publications` field of `kind`'s result (encoded as it is sent).
pub fn pub_field(kind: PacedResult, p: &json::Pub<'_>) -> Bytes {
    let m = publication(p);
    let n = m.encoded_len();
    let mut b = BytesMut::with_capacity(1 + prost::length_delimiter_len(n) + n);
    b.extend_from_slice(&[kind.tags().1]);
    let _ = m.encode_length_delimited(&mut b);
    b.freeze()
}

/// The start of a paced reply whose publications follow as [`pub_field`]s totalling
/// `pubs_len` bytes: the reply's length prefix, its id, the result's tag and length, and
/// the result's other fields (`result` encoded without publications). Protobuf fields may
/// come in any order, so the publications go last and nothing follows them; decoders
/// (protobuf.js, Go, Python) read the same message as the whole encoding.
pub fn paced_head(id: u32, kind: PacedResult, result: &[u8], pubs_len: usize) -> Vec<u8> {
    let inner = result.len() + pubs_len;
    let mut body = Reply { id, ..Default::default() }.encode_to_vec();
    body.push(kind.tags().0);
    prost::encoding::encode_varint(inner as u64, &mut body);
    let reply_len = body.len() + inner;
    let mut out = Vec::with_capacity(10 + body.len() + result.len());
    prost::encoding::encode_varint(reply_len as u64, &mut out);
    out.extend_from_slice(&body);
    out.extend_from_slice(result);
    out
}

/// The server's ping: an empty Reply (its length, 0, is the only byte).
pub const PING: &[u8] = &[0];

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cmds: &[Command]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for c in cmds {
            c.encode_length_delimited(&mut b).unwrap();
        }
        b.to_vec()
    }

    #[test]
    fn commands_split_and_convert() {
        let connect = Command {
            id: 1,
            connect: Some(ConnectRequest {
                token: "t".into(),
                name: "js".into(),
                subs: [(
                    "a".to_string(),
                    SubscribeRequest { recover: true, offset: 3, epoch: "e".into(), ..Default::default() },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let publish = Command {
            id: 2,
            publish: Some(PublishRequest { channel: "c".into(), data: br#"{"a":1}"#.to_vec() }),
            ..Default::default()
        };
        let bad_publish = Command {
            id: 3,
            publish: Some(PublishRequest { channel: "c".into(), data: vec![0xff, 1] }),
            ..Default::default()
        };
        let history = Command {
            id: 4,
            history: Some(HistoryRequest {
                channel: "h".into(),
                limit: -1,
                since: Some(StreamPosition { offset: 5, epoch: "x".into() }),
                reverse: true,
            }),
            ..Default::default()
        };
        let ping = Command { id: 5, ping: Some(Empty {}), ..Default::default() };
        let pong = Command::default();
        let f = frame(&[connect.clone(), publish, bad_publish, history, ping, pong]);
        // The pong is an empty message: its length prefix 0 is its only byte.
        assert_eq!(*f.last().unwrap(), 0);
        let cmds: Vec<json::Command> =
            decode_commands(&f).collect::<Result<Vec<_>, _>>().unwrap().into_iter().map(into_command).collect();
        assert_eq!(cmds.len(), 6);
        let c = cmds[0].connect.as_ref().unwrap();
        assert_eq!((c.token.as_str(), c.name.as_str()), ("t", "js"));
        assert!(c.subs["a"].recover && c.subs["a"].offset == 3 && c.subs["a"].epoch == "e");
        assert_eq!(cmds[1].publish.as_ref().unwrap().data.as_ref().unwrap().get(), r#"{"a":1}"#);
        assert!(cmds[2].publish.as_ref().unwrap().data.is_none());
        let h = cmds[3].history.as_ref().unwrap();
        assert_eq!((h.limit, h.reverse, h.since.as_ref().unwrap().offset), (-1, true, 5));
        assert!(cmds[4].ping.is_some() && cmds[4].id == 5);
        assert!(cmds[5].id == 0 && cmds[5].ping.is_none() && cmds[5].connect.is_none());
        // Truncated frames are malformed, never a panic.
        let one = frame(std::slice::from_ref(&connect));
        for cut in 1..one.len() {
            assert_eq!(decode_commands(&one[..cut]).collect::<Result<Vec<_>, _>>(), Err(Malformed));
        }
        assert_eq!(decode_commands(&[0xff; 11]).collect::<Result<Vec<_>, _>>(), Err(Malformed));
        // Decoded one at a time: the error ends the iteration after the good ones.
        let mut two = frame(std::slice::from_ref(&connect));
        two.extend_from_slice(&[0x05, 0x08]);
        let items: Vec<_> = decode_commands(&two).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok() && items[1] == Err(Malformed));
    }

    #[test]
    fn publication_push_round_trip() {
        let p = json::Pub {
            channel: "news",
            data: br#"{"x":"y"}"#,
            offset: 7,
            info: Some(br#"{"user":"u","client":"c","conn_info":{"n":1}}"#),
            tags: Some(br#"{"k":"v","n":2}"#),
        };
        let b = pub_push(&p);
        let mut s = &b[..];
        let r = Reply::decode_length_delimited(&mut s).unwrap();
        assert!(s.is_empty());
        let push = r.push.unwrap();
        assert_eq!(push.channel, "news");
        let publ = push.r#pub.unwrap();
        assert_eq!(&publ.data[..], br#"{"x":"y"}"#);
        assert_eq!(publ.offset, 7);
        let info = publ.info.unwrap();
        assert_eq!((info.user.as_str(), info.client.as_str()), ("u", "c"));
        assert_eq!(info.conn_info, br#"{"n":1}"#);
        assert!(info.chan_info.is_empty());
        assert_eq!(publ.tags["k"], "v");
        assert_eq!(publ.tags["n"], "2");
    }

    /// Byte layouts checked by hand against client.proto's field numbers (these are what
    /// github.com/centrifugal/protocol's encoder writes for the same messages).
    #[test]
    fn wire_bytes() {
        // Reply{id:1, ping:{}}: 0x08 0x01 (id), 0x62 0x00 (field 12, empty) — delimited: 4 first.
        let r = Reply { id: 1, ping: Some(Empty {}), ..Default::default() };
        assert_eq!(&delimited(&r)[..], &[4, 0x08, 1, 0x62, 0][..]);
        // Reply{id:2, error:{code:103, message:"x"}}: field 2, len 5: 0x08 103, 0x12 1 'x'.
        let e = error_reply(2, json::PERMISSION_DENIED);
        assert_eq!(e.error.as_ref().unwrap().message, "permission denied");
        let e = Reply {
            id: 2,
            error: Some(Error { code: 103, message: "x".into(), temporary: false }),
            ..Default::default()
        };
        assert_eq!(&delimited(&e)[..], &[9, 0x08, 2, 0x12, 5, 0x08, 103, 0x12, 1, b'x'][..]);
        // Push{channel:"c", pub:{data:"1", offset:5}}: Reply field 4 > Push field 2 and 4 >
        // Publication field 4 (data) and 6 (offset).
        let p = json::Pub { channel: "c", data: b"1", offset: 5, info: None, tags: None };
        assert_eq!(&pub_push(&p)[..], &[12, 0x22, 10, 0x12, 1, b'c', 0x22, 5, 0x22, 1, b'1', 0x30, 5][..]);
        assert_eq!(PING, &delimited(&Reply::default())[..]);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The same replies as encoded by github.com/centrifugal/protocol v0.19.2 (the Go
    /// package Centrifugo v6.9.1 uses): each `MarshalVT()` with its uvarint length in front,
    /// printed by a small Go program. Herald's encodings are byte for byte the same.
    #[test]
    fn bytes_match_centrifugos_go_encoder() {
        let reply = |id, f: &dyn Fn(&mut Reply)| {
            let mut r = Reply { id, ..Default::default() };
            f(&mut r);
            hex(&delimited(&r))
        };
        assert_eq!(reply(1, &|r| r.ping = Some(Empty {})), "0408016200");
        assert_eq!(
            hex(&delimited(&error_reply(2, json::PERMISSION_DENIED))),
            "1908021215086712117065726d697373696f6e2064656e696564"
        );
        let p = json::Pub {
            channel: "c",
            data: b"1",
            offset: 5,
            info: Some(br#"{"user":"u","client":"x","conn_info":{"a":1}}"#),
            tags: Some(br#"{"k":"v"}"#),
        };
        assert_eq!(hex(&pub_push(&p)), "252223120163221e2201312a0f0a01751201781a077b2261223a317d30053a060a016b120176");
        let c = json::ConnectResult {
            client: "id",
            version: "v",
            ping: 25,
            pong: true,
            expires_ttl: Some(30),
            subs: None,
            emulation: None,
            data: None,
        };
        let cr = connect_result(&c, vec![("b".into(), SubscribeResult::default())]);
        assert_eq!(
            reply(1, &|r| r.connect = Some(cr.clone())),
            "1a08012a160a0269641201761801201e32050a0162120038194001"
        );
        let pubs = [json::Pub { channel: "c", data: b"1", offset: 2, info: None, tags: None }];
        let s = json::SubscribeResult {
            expires_ttl: Some(4),
            recoverable: Some(json::Position { epoch: "e", offset: 2 }),
            was_recovering: true,
            recovered: true,
            publications: &pubs,
            data: None,
        };
        let sr = subscribe_result(&s);
        assert_eq!(
            reply(3, &|r| r.subscribe = Some(sr.clone())),
            "1c080332180801100418013201653a0522013130024001480250016001"
        );
        let h = history_result(&json::HistoryResult {
            publications: &pubs,
            position: json::Position { epoch: "e", offset: 9 },
        });
        assert_eq!(reply(4, &|r| r.history = Some(h.clone())), "1008045a0c0a0522013130021201651809");
        let entries = vec![("c1".to_string(), "u".to_string(), Bytes::from_static(br#"{"user":"u","client":"c1"}"#))];
        let pr = presence_result(&entries);
        assert_eq!(reply(5, &|r| r.presence = Some(pr.clone())), "1308054a0f0a0d0a02633112070a017512026331");
        let st = presence_stats(&json::PresenceStatsResult { num_clients: 2, num_users: 1 });
        assert_eq!(reply(6, &|r| r.presence_stats = Some(st.clone())), "080806520408021001");
        assert_eq!(reply(7, &|r| r.publish = Some(Empty {})), "0408074200");
        let j = join_leave_from_json(&json::join_leave_push("c", br#"{"user":"u","client":"x"}"#, true)).unwrap();
        assert_eq!(hex(&j), "0f220d1201632a080a060a0175120178");
        assert_eq!(
            hex(&unsubscribe_push("c", json::SERVER_UNSUBSCRIBE)),
            "1e221c1201633a1710d00f1a1273657276657220756e737562736372696265"
        );
        assert_eq!(hex(&refresh_push(json::Expiry { ttl: Some(9) })), "082206620408011009");
        let sp =
            SubscribeResult { recoverable: true, epoch: "e".into(), offset: 3, positioned: true, ..Default::default() };
        assert_eq!(hex(&subscribe_push("c", &sp)), "10220e1201634a09080122016528033001");
        let rr = refresh_result(&json::RefreshResult { client: "id", version: "v", expires_ttl: Some(5) });
        assert_eq!(reply(8, &|r| r.refresh = Some(rr.clone())), "0f0808720b0a02696412017618012005");
        let e = sub_refresh_result(json::Expiry { ttl: Some(5) });
        assert_eq!(reply(9, &|r| r.sub_refresh = Some(e.clone())), "0808097a0408011005");
        assert_eq!(hex(PING), "00");
    }

    #[test]
    fn paced_replies_decode_as_the_whole_ones() {
        let info: &[u8] = br#"{"user":"u","client":"x"}"#;
        let pubs: Vec<json::Pub<'_>> = (1..=300u64)
            .map(|i| json::Pub { channel: "c", data: b"{\"n\":12345}", offset: i, info: Some(info), tags: None })
            .collect();
        let s = json::SubscribeResult {
            expires_ttl: None,
            recoverable: Some(json::Position { epoch: "e", offset: 300 }),
            was_recovering: true,
            recovered: true,
            publications: &pubs,
            data: None,
        };
        let whole = Reply { id: 3, subscribe: Some(subscribe_result(&s)), ..Default::default() };
        let bare = subscribe_result(&json::SubscribeResult { publications: &[], ..s }).encode_to_vec();
        let h = history_result(&json::HistoryResult {
            publications: &pubs,
            position: json::Position { epoch: "e", offset: 9 },
        });
        let whole_h = Reply { id: 200, history: Some(h.clone()), ..Default::default() };
        let bare_h = HistoryResult { publications: vec![], ..h }.encode_to_vec();
        for (kind, whole, bare, id) in
            [(PacedResult::Subscribe, whole, bare, 3), (PacedResult::History, whole_h, bare_h, 200)]
        {
            let len: usize = pubs.iter().map(pub_field_len).sum();
            let mut b = paced_head(id, kind, &bare, len);
            for p in &pubs {
                b.extend_from_slice(&pub_field(kind, p));
            }
            assert_eq!(b.len(), delimited(&whole).len(), "same length as the whole encoding");
            let mut s = &b[..];
            assert_eq!(Reply::decode_length_delimited(&mut s).unwrap(), whole);
            assert!(s.is_empty());
        }
    }

    #[test]
    fn results_convert() {
        let pubs = [json::Pub { channel: "c", data: b"1", offset: 2, info: None, tags: None }];
        let s = json::SubscribeResult {
            expires_ttl: Some(4),
            recoverable: Some(json::Position { epoch: "e", offset: 2 }),
            was_recovering: true,
            recovered: true,
            publications: &pubs,
            data: None,
        };
        let r = subscribe_result(&s);
        assert!(r.expires && r.ttl == 4 && r.recoverable && r.positioned && r.recovered && r.was_recovering);
        assert_eq!((r.epoch.as_str(), r.offset, r.publications.len()), ("e", 2, 1));
        let back = SubscribeResult::decode(&*r.encode_to_vec()).unwrap();
        assert_eq!(back, r);
        let c = json::ConnectResult {
            client: "id",
            version: "v",
            ping: 25,
            pong: true,
            expires_ttl: None,
            subs: None,
            emulation: None,
            data: None,
        };
        let cr = connect_result(&c, vec![("a".to_string(), r.clone()), ("b".to_string(), SubscribeResult::default())]);
        assert_eq!(ConnectResult::decode(&*cr.encode_to_vec()).unwrap(), cr);
        assert!(!cr.expires && cr.ping == 25 && cr.pong);
        // An empty value is still written (key "b", then value field 2 with length 0), as
        // Go's encoder does: protobuf.js would decode a missing one as null.
        let b = ConnectResult { subs: vec![Entry::new("b".into(), SubscribeResult::default())], ..Default::default() };
        assert_eq!(b.encode_to_vec(), [0x32, 5, 0x0a, 1, b'b', 0x12, 0]);
        let entries = vec![("c1".to_string(), "u".to_string(), Bytes::from_static(br#"{"user":"u","client":"c1"}"#))];
        let p = presence_result(&entries);
        assert_eq!(p.presence[0].key, "c1");
        assert_eq!(p.presence[0].value.as_ref().unwrap().user, "u");
        let h = history_result(&json::HistoryResult {
            publications: &pubs,
            position: json::Position { epoch: "e", offset: 9 },
        });
        assert_eq!((h.publications.len(), h.offset), (1, 9));
        let j = join_leave_from_json(&json::join_leave_push("c", br#"{"user":"u","client":"x"}"#, false)).unwrap();
        let r = Reply::decode_length_delimited(&j[..]).unwrap();
        let push = r.push.unwrap();
        assert_eq!(push.leave.unwrap().info.unwrap().client, "x");
        assert!(push.join.is_none());
        let u = Reply::decode_length_delimited(&unsubscribe_push("c", json::SERVER_UNSUBSCRIBE)[..]).unwrap();
        assert_eq!(u.push.unwrap().unsubscribe.unwrap().code, 2000);
        let f = Reply::decode_length_delimited(&refresh_push(json::Expiry { ttl: Some(9) })[..]).unwrap();
        assert_eq!(f.push.unwrap().refresh.unwrap(), Refresh { expires: true, ttl: 9 });
    }
}
