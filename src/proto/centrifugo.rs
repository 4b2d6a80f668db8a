//! Centrifugo client protocol v2 (JSON) as pure data: commands in, replies and pushes out.
//!
//! Owns: the JSON shapes of commands, replies, errors and pushes, and the encoding of a
//! publication push (once per message per worker). Called by the Centrifugo transport and
//! API. No sockets, no clock (client ids come from a seeded [`IdGen`]). Unknown fields in
//! commands are ignored, as Centrifugo does.

use crate::proto::json::Writer;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A client command. Exactly one method field is set; an empty object is a pong.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Command {
    /// Chosen by the client and echoed in the reply so it can match replies to commands.
    /// After connect, a command without one (0) is taken as the `{}` pong: no reply.
    pub id: u32,
    /// The first command on a connection: authenticates it; anything else before it, or a
    /// second one, closes the connection with 3501.
    pub connect: Option<ConnectReq>,
    /// Subscribe to a channel, optionally recovering missed publications.
    pub subscribe: Option<SubscribeReq>,
    /// Leave a channel; succeeds also when the client was not subscribed.
    pub unsubscribe: Option<ChannelReq>,
    /// Publish into a channel from the client (subject to the namespace's publish permissions).
    pub publish: Option<PublishReq>,
    /// List the clients present in a channel (needs `presence` on the namespace).
    pub presence: Option<ChannelReq>,
    /// Count the clients and distinct users present in a channel.
    pub presence_stats: Option<ChannelReq>,
    /// Read a channel's history and stream position (needs history on the namespace).
    pub history: Option<HistoryReq>,
    /// An application-level ping from the client; answered with an empty result.
    pub ping: Option<serde_json::Value>,
    /// A fire-and-forget message to the server; Herald has no handler and drops it silently.
    pub send: Option<serde_json::Value>,
    /// A call to the application backend's RPC proxy (`rpc.proxy`); without one configured
    /// for the method's namespace it is answered 108 (not available), as Centrifugo does.
    pub rpc: Option<RpcReq>,
    /// Extend the connection with a fresh connection token before the current one expires.
    pub refresh: Option<RefreshReq>,
    /// Extend one subscription with a fresh subscription token before the current one expires.
    pub sub_refresh: Option<SubRefreshReq>,
}

/// `connect`: token, client data, subscriptions to resume, client name and version.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ConnectReq {
    /// Connection JWT: its `sub` is the user, `exp` when the client must refresh, `info` the
    /// client's `conn_info`, `channels`/`subs` server-side subscriptions. Empty connects
    /// anonymously only if `allow_anonymous_connect_without_token` is set; otherwise 3500.
    pub token: String,
    /// Custom data for the connect proxy (sent to the backend as `data`).
    pub data: Option<Box<RawValue>>,
    /// Per channel, the position a reconnecting client had in its server-side subscriptions
    /// (`recover`, `epoch`, `offset`), so they resume where they left off. Consulted only
    /// for channels the token subscribes the client to.
    pub subs: std::collections::HashMap<String, SubscribeReq>,
    /// The SDK's name (e.g. "js"), for the server's logs; Herald ignores it.
    pub name: String,
    /// The SDK's version, for the server's logs; Herald ignores it.
    pub version: String,
    /// Headers emulation (centrifuge-js `headers`): header values the client wants its
    /// proxies to see; forwarded only where a proxy lists them in `emulated_headers`.
    pub headers: std::collections::HashMap<String, String>,
}

/// `rpc`: a method name and its data, for the RPC proxy.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct RpcReq {
    /// The method; the part before `rpc.namespace_boundary` picks the RPC namespace.
    pub method: String,
    /// Data for the backend (JSON).
    pub data: Option<Box<RawValue>>,
}

/// `subscribe` (also a `subs` entry of connect): channel, token, recovery position and options.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
pub struct SubscribeReq {
    /// The channel; the part before the namespace boundary (`:` by default) picks the
    /// namespace whose options and permissions apply.
    pub channel: String,
    /// Subscription JWT, sent for channels the client may not join by namespace permissions
    /// alone (e.g. `$` private ones). When present it alone decides; a valid token for
    /// another channel, user or client closes the connection with 3500.
    pub token: String,
    /// Resubscribing after a disconnect: send the publications published after
    /// `epoch`/`offset`. Honoured only on a recoverable subscription (see `recoverable`).
    pub recover: bool,
    /// Epoch the client last saw (from a subscribe result or publication). If the stream's
    /// epoch differs, its history was lost: nothing is replayed and `recovered` is false.
    pub epoch: String,
    /// Offset of the last publication the client received; recovery replays those after it.
    pub offset: u64,
    /// Custom data for a subscribe proxy; Herald has no proxy and ignores it.
    pub data: Option<Box<RawValue>>,
    /// Asks the server to watch for gaps in the stream. Herald does not read it: positioning
    /// follows `recoverable` and the namespace's `force_positioning`.
    pub positioned: bool,
    /// Asks for a recoverable subscription: the reply carries the stream's epoch and offset,
    /// which a later `recover` resumes from. Needs history on the namespace; the namespace's
    /// `force_recovery`/`force_positioning` make it so without asking.
    pub recoverable: bool,
    /// Asks for join/leave pushes on this channel; honoured only where the namespace has
    /// `join_leave` (and `force_push_join_leave` sends them without asking).
    pub join_leave: bool,
}

/// A command naming only a channel (`unsubscribe`, `presence`, `presence_stats`).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ChannelReq {
    /// The channel the command applies to.
    pub channel: String,
}

/// `publish`: channel and JSON data.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct PublishReq {
    /// The channel to publish into.
    pub channel: String,
    /// The publication's payload, any JSON value, stored and delivered byte for byte;
    /// missing data is 107 (bad request).
    pub data: Option<Box<RawValue>>,
}

/// A stream position given by a client or API caller.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
pub struct StreamPosition {
    /// A publication's offset in the channel stream (the id the simple transports see).
    pub offset: u64,
    /// The stream generation the offset belongs to; it changes when the channel's history
    /// is lost. Empty matches any epoch.
    pub epoch: String,
}

/// `history`: channel, limit (0: position only; negative: all), since, direction.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct HistoryReq {
    /// The channel whose history is read.
    pub channel: String,
    /// At most this many publications. 0 (the default) returns none, only the stream's
    /// epoch and offset, e.g. to learn where to start; -1 (any negative) returns all kept.
    pub limit: i64,
    /// Only publications after this position (before it with `reverse`), to page through
    /// history; an epoch other than the stream's is 112 (unrecoverable position).
    pub since: Option<StreamPosition>,
    /// Newest first instead of oldest first.
    pub reverse: bool,
}

/// `refresh`: a new connection token.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct RefreshReq {
    /// The new connection JWT, for the same user; expired is 109, otherwise invalid closes
    /// the connection with 3500.
    pub token: String,
}

/// `sub_refresh`: a new subscription token for a channel.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct SubRefreshReq {
    /// A channel the client is subscribed to.
    pub channel: String,
    /// The new subscription JWT for that channel and user; expired is 109, otherwise
    /// invalid is 103 (permission denied).
    pub token: String,
}

/// The server's version string in connect and refresh results.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " herald");

/// A client error (Centrifugo codes 100-112).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// Centrifugo error code.
    pub code: u16,
    /// Its message.
    pub message: &'static str,
}

impl Error {
    /// Whether Centrifugo marks this error temporary (`"temporary": true`, centrifuge's
    /// `ErrorInternal`, `ErrorTooManyRequests`, `ErrorConcurrentPagination`): SDKs then retry
    /// the command, or reconnect after a failed connect, with backoff instead of giving up.
    pub fn temporary(&self) -> bool {
        matches!(self.code, 100 | 111 | 113)
    }
}

/// A server-side inconsistency (e.g. Centrifugo state missing on the connection, which
/// should not happen), or a token whose key is not loaded yet from a JWKS endpoint; not the
/// client's fault, and temporary: SDKs try again with backoff.
pub const INTERNAL: Error = Error { code: 100, message: "internal server error" };
/// Not sent by Herald: a connect or refresh token that fails verification closes the
/// connection with [`INVALID_TOKEN`] instead, as Centrifugo v6 does.
pub const UNAUTHORIZED: Error = Error { code: 101, message: "unauthorized" };
/// The channel's namespace is not configured (client commands and the server API).
pub const UNKNOWN_CHANNEL: Error = Error { code: 102, message: "unknown channel" };
/// The namespace's permissions refuse the subscribe, publish, history or presence call, or a
/// subscription token does not verify (subscribe, sub_refresh).
pub const PERMISSION_DENIED: Error = Error { code: 103, message: "permission denied" };
/// A command with no method Herald handles (e.g. `rpc`), or an unknown server API method.
pub const METHOD_NOT_FOUND: Error = Error { code: 104, message: "method not found" };
/// A subscribe to a channel the client is already subscribed to.
pub const ALREADY_SUBSCRIBED: Error = Error { code: 105, message: "already subscribed" };
/// A subscribe beyond `client.channel_limit`, or to a channel at `max_subscribers_per_channel`.
pub const LIMIT_EXCEEDED: Error = Error { code: 106, message: "limit exceeded" };
/// An invalid channel name, a publish without data, or malformed server API parameters.
pub const BAD_REQUEST: Error = Error { code: 107, message: "bad request" };
/// History or presence asked of a namespace that keeps none.
pub const NOT_AVAILABLE: Error = Error { code: 108, message: "not available" };
/// A connect, refresh, subscribe or sub_refresh token is expired or not yet valid; SDKs
/// fetch a fresh token and try again. Herald keeps the connection open.
pub const TOKEN_EXPIRED: Error = Error { code: 109, message: "token expired" };
/// A connect proxy gave the connection an expiry in the past (centrifuge's `ErrorExpired`).
pub const EXPIRED_ERROR: Error = Error { code: 110, message: "expired" };
/// A history `since` names an epoch other than the stream's: the history it referred to
/// is gone, so the client must reload its state instead of paging.
pub const UNRECOVERABLE_POSITION: Error = Error { code: 112, message: "unrecoverable position" };

/// A disconnect: WebSocket close code and reason (Centrifugo v6 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
}

/// Graceful server shutdown; the client reconnects (3000-3499) after a backoff.
pub const SHUTDOWN: Disconnect = Disconnect { code: 3001, reason: "shutdown" };
/// The server could not carry out what the connection needed (the engine is unreachable);
/// the client reconnects after a backoff.
pub const SERVER_ERROR: Disconnect = Disconnect { code: 3004, reason: "internal server error" };
/// The connection token expired (more than 5 s ago) without a refresh, or the server API
/// `refresh` said `expired`; the client reconnects with a new token.
pub const EXPIRED: Disconnect = Disconnect { code: 3005, reason: "connection expired" };
/// A subscription token expired (more than 5 s ago) and was not refreshed; the client reconnects.
pub const SUBSCRIPTION_EXPIRED: Disconnect = Disconnect { code: 3006, reason: "subscription expired" };
/// Centrifugo's code for a client whose output queue overflowed (it reconnects). Not sent
/// by Herald: a slow consumer past `max_out_queue` is dropped at once.
pub const SLOW: Disconnect = Disconnect { code: 3008, reason: "slow" };
/// No `{}` pong arrived within `client.pong_timeout` of a ping; the client reconnects.
pub const NO_PONG: Disconnect = Disconnect { code: 3012, reason: "no pong" };
/// A connect or refresh token that fails verification (or names another user on refresh),
/// a missing token where anonymous connect is off, or a subscription token for another
/// channel, user or client. The client does not reconnect (3500-3999).
pub const INVALID_TOKEN: Disconnect = Disconnect { code: 3500, reason: "invalid token" };
/// Malformed JSON, a command before connect, a second connect, or a bad connect request on
/// a unidirectional transport. The client does not reconnect.
pub const DISCONNECT_BAD_REQUEST: Disconnect = Disconnect { code: 3501, reason: "bad request" };
/// No connect command arrived within `handshake_timeout_ms` of the upgrade; no reconnect.
pub const STALE: Disconnect = Disconnect { code: 3502, reason: "stale" };
/// The server API `disconnect` without a code (its default); the client does not reconnect.
pub const FORCE_NO_RECONNECT: Disconnect = Disconnect { code: 3503, reason: "force disconnect" };
/// Centrifugo's disconnect for too many channels (no reconnect). Not sent by Herald, which
/// answers such a subscribe with [`LIMIT_EXCEEDED`].
pub const CHANNEL_LIMIT: Disconnect = Disconnect { code: 3505, reason: "channel limit" };
/// Centrifugo's disconnect for a forbidden action (no reconnect). Not sent by Herald, which
/// answers with the [`PERMISSION_DENIED`] error.
pub const PERMISSION_DENIED_DISCONNECT: Disconnect = Disconnect { code: 3507, reason: "permission denied" };

/// Why the server ended a subscription (the body of an unsubscribe push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Centrifugo unsubscribe code.
    pub code: u16,
    /// Its reason.
    pub reason: &'static str,
}

/// The server (API `unsubscribe`) removed the subscription.
pub const SERVER_UNSUBSCRIBE: Unsubscribe = Unsubscribe { code: 2000, reason: "server unsubscribe" };
/// The server lost publications of the channel it cannot replay (a shared engine lost its
/// data, or a gap history no longer holds): the client resubscribes (2500-2999) and
/// recovers what it can.
pub const INSUFFICIENT_STATE: Unsubscribe = Unsubscribe { code: 2500, reason: "insufficient state" };

/// A value that encodes itself as one JSON value through the escaping [`Writer`].
pub trait Encode {
    /// Append the value.
    fn write(&self, w: &mut Writer);

    /// The value on its own.
    fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        self.write(&mut w);
        w.finish()
    }
}

/// Already-encoded JSON (a result kept from an earlier encoding, a payload).
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a>(pub &'a [u8]);

impl Encode for Raw<'_> {
    fn write(&self, w: &mut Writer) {
        w.raw(self.0);
    }
}

/// `{}`: the result of a method with nothing to report.
#[derive(Debug, Clone, Copy)]
pub struct Empty;

impl Encode for Empty {
    fn write(&self, w: &mut Writer) {
        w.obj().end();
    }
}

/// `{"code":C,"message":"M"}`
impl Encode for Error {
    fn write(&self, w: &mut Writer) {
        w.obj().key("code").u64(self.code.into()).key("message").string(self.message);
        if self.temporary() {
            w.key("temporary").bool(true);
        }
        w.end();
    }
}

/// `{"code":C,"reason":"R"}`
impl Encode for Unsubscribe {
    fn write(&self, w: &mut Writer) {
        w.obj().key("code").u64(self.code.into()).key("reason").string(self.reason).end();
    }
}

/// Seconds left until `expires_at` (never negative), when there is an expiry.
pub fn ttl(expires_at: Option<i64>, now: i64) -> Option<i64> {
    expires_at.map(|e| (e - now).max(0))
}

/// `"expires":true,"ttl":N` members when the token expires.
fn expiry(w: &mut Writer, ttl: Option<i64>) {
    if let Some(t) = ttl {
        w.key("expires").bool(true).key("ttl").i64(t);
    }
}

/// `{"id":N,"METHOD":RESULT}`
pub fn reply(id: u32, method: &str, result: &dyn Encode) -> Bytes {
    let mut w = Writer::new();
    w.obj().key("id").u64(id.into()).key(method);
    result.write(&mut w);
    w.end();
    w.finish()
}

/// `{"id":N,"error":{"code":C,"message":"..."[,"temporary":true]}}`
pub fn error_reply(id: u32, e: Error) -> Bytes {
    reply(id, "error", &e)
}

/// The connect result: `{"client":..,"version":..,"ping":S,"pong":B[,"expires":true,"ttl":N][,"subs":{..}]}`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectResult<'a> {
    /// Client id.
    pub client: &'a str,
    /// Server version ([`VERSION`]).
    pub version: &'a str,
    /// Ping interval in seconds.
    pub ping: u64,
    /// Whether the client must answer pings (bidirectional transports).
    pub pong: bool,
    /// Seconds until the connection token expires.
    pub expires_ttl: Option<i64>,
    /// Server-side subscriptions: channel and its encoded subscribe result. `Some` (even
    /// empty) when the token named channels.
    pub subs: Option<&'a [(String, Bytes)]>,
    /// Bidirectional emulation (`http_stream`, `sse`): the session the client names in its
    /// `/emulation` requests, and this node's id.
    pub emulation: Option<(&'a str, &'a str)>,
    /// Data for the client from the connect proxy (JSON text).
    pub data: Option<&'a [u8]>,
}

impl Encode for ConnectResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj().key("client").string(self.client).key("version").string(self.version);
        w.key("ping").u64(self.ping).key("pong").bool(self.pong);
        expiry(w, self.expires_ttl);
        if let Some(d) = self.data {
            w.key("data").raw(d);
        }
        if let Some(subs) = self.subs {
            w.key("subs").obj();
            for (ch, res) in subs {
                w.key(ch).raw(res);
            }
            w.end();
        }
        if let Some((session, node)) = self.emulation {
            w.key("session").string(session).key("node").string(node);
        }
        w.end();
    }
}

/// The refresh result: `{"client":..,"version":..[,"expires":true,"ttl":N]}`.
#[derive(Debug, Clone, Copy)]
pub struct RefreshResult<'a> {
    /// Client id.
    pub client: &'a str,
    /// Server version ([`VERSION`]).
    pub version: &'a str,
    /// Seconds until the new token expires.
    pub expires_ttl: Option<i64>,
}

impl Encode for RefreshResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj().key("client").string(self.client).key("version").string(self.version);
        expiry(w, self.expires_ttl);
        w.end();
    }
}

/// An expiry alone: `{"expires":true,"ttl":N}` or `{}` — the sub_refresh result and the
/// body of a refresh push.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// Seconds until expiry; None: does not expire.
    pub ttl: Option<i64>,
}

impl Encode for Expiry {
    fn write(&self, w: &mut Writer) {
        w.obj();
        expiry(w, self.ttl);
        w.end();
    }
}

/// A stream position: epoch and top offset.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// Stream epoch.
    pub epoch: &'a str,
    /// Top offset (0: empty stream).
    pub offset: u64,
}

/// The subscribe result: `{[expires,ttl][,"recoverable":true,"epoch":E[,"offset":N],
/// "positioned":true][,"was_recovering":true[,"recovered":true]][,"publications":[..]]}`.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeResult<'a> {
    /// Seconds until the subscription token expires.
    pub expires_ttl: Option<i64>,
    /// The stream position of a recoverable (positioned) subscription.
    pub recoverable: Option<Position<'a>>,
    /// The client asked to recover.
    pub was_recovering: bool,
    /// Recovery succeeded (only written when recovering).
    pub recovered: bool,
    /// Publications the client missed (omitted when none).
    pub publications: &'a [Pub<'a>],
    /// Data for the client from the subscribe proxy (JSON text).
    pub data: Option<&'a [u8]>,
}

impl Encode for SubscribeResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj();
        expiry(w, self.expires_ttl);
        if let Some(p) = self.recoverable {
            w.key("recoverable").bool(true).key("epoch").string(p.epoch);
            if p.offset > 0 {
                w.key("offset").u64(p.offset);
            }
            w.key("positioned").bool(true);
        }
        if self.was_recovering {
            w.key("was_recovering").bool(true);
            if self.recovered {
                w.key("recovered").bool(true);
            }
        }
        if !self.publications.is_empty() {
            w.key("publications");
            pubs(w, self.publications);
        }
        if let Some(d) = self.data {
            w.key("data").raw(d);
        }
        w.end();
    }
}

/// The rpc result: `{"data":D}` or `{}`.
#[derive(Debug, Clone, Copy)]
pub struct RpcResult<'a> {
    /// The backend's result data (JSON text).
    pub data: Option<&'a [u8]>,
}

impl Encode for RpcResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj();
        if let Some(d) = self.data {
            w.key("data").raw(d);
        }
        w.end();
    }
}

fn pubs(w: &mut Writer, list: &[Pub<'_>]) {
    w.arr();
    for p in list {
        p.write(w);
    }
    w.end_arr();
}

/// The history result: `{"publications":[..],"epoch":E,"offset":N}`.
#[derive(Debug, Clone, Copy)]
pub struct HistoryResult<'a> {
    /// Publications, in the order asked for.
    pub publications: &'a [Pub<'a>],
    /// Stream position (offset always written).
    pub position: Position<'a>,
}

impl Encode for HistoryResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj().key("publications");
        pubs(w, self.publications);
        w.key("epoch").string(self.position.epoch).key("offset").u64(self.position.offset).end();
    }
}

/// The presence result: `{"presence":{"CLIENT":INFO,..}}`.
#[derive(Debug, Clone, Copy)]
pub struct PresenceResult<'a> {
    /// (client id, user, ClientInfo JSON) as the engine keeps them.
    pub clients: &'a [(String, String, Bytes)],
}

impl Encode for PresenceResult<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj().key("presence").obj();
        for (client, _, info) in self.clients {
            w.key(client).raw(info);
        }
        w.end().end();
    }
}

/// The presence_stats result: `{"num_clients":N,"num_users":M}`.
#[derive(Debug, Clone, Copy)]
pub struct PresenceStatsResult {
    /// Connections present.
    pub num_clients: u64,
    /// Distinct users among them.
    pub num_users: u64,
}

impl Encode for PresenceStatsResult {
    fn write(&self, w: &mut Writer) {
        w.obj().key("num_clients").u64(self.num_clients).key("num_users").u64(self.num_users).end();
    }
}

/// ClientInfo JSON: `{"user":..,"client":..,"conn_info":..,"chan_info":..}` (empty parts
/// omitted, as Centrifugo's JSON does).
pub fn client_info(user: &str, client: &str, conn_info: Option<&[u8]>, chan_info: Option<&[u8]>) -> Bytes {
    let mut w = Writer::with_capacity(64);
    w.obj().key("user").string(user).key("client").string(client);
    if let Some(c) = conn_info {
        w.key("conn_info").raw(c);
    }
    if let Some(c) = chan_info {
        w.key("chan_info").raw(c);
    }
    w.end();
    w.finish()
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

/// The publication object `{"data":DATA[,"offset":N][,"info":INFO][,"tags":TAGS]}` (offset
/// 0 — an unsequenced publication — is omitted, as Centrifugo's JSON does).
impl Pub<'_> {
    /// The length of this publication's encoding, without encoding it (a paced reply
    /// announces its WebSocket frame length before the publications are written).
    pub fn encoded_len(&self) -> usize {
        let mut n = "{\"data\":".len() + self.data.len() + 1;
        if self.offset > 0 {
            n += ",\"offset\":".len() + decimal_len(self.offset);
        }
        if let Some(i) = self.info {
            n += ",\"info\":".len() + i.len();
        }
        if let Some(t) = self.tags {
            n += ",\"tags\":".len() + t.len();
        }
        n
    }
}

/// Digits of `n` in decimal.
fn decimal_len(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

impl Encode for Pub<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj().key("data").raw(self.data);
        if self.offset > 0 {
            w.key("offset").u64(self.offset);
        }
        if let Some(i) = self.info {
            w.key("info").raw(i);
        }
        if let Some(t) = self.tags {
            w.key("tags").raw(t);
        }
        w.end();
    }
}

/// A push: `{"push":{["channel":"C",]"KIND":BODY}}`, or with `wrapped` false the bare
/// `{["channel":"C",]"KIND":BODY}` that unidirectional transports send.
pub fn push(channel: Option<&str>, kind: &str, body: &dyn Encode, wrapped: bool, capacity: usize) -> Bytes {
    let mut w = Writer::with_capacity(capacity + channel.map_or(0, str::len) + 48);
    if wrapped {
        w.obj().key("push");
    }
    w.obj();
    if let Some(ch) = channel {
        w.key("channel").string(ch);
    }
    w.key(kind);
    body.write(&mut w);
    w.end();
    if wrapped {
        w.end();
    }
    w.finish()
}

/// The publication push (encoded once per message per worker).
pub fn pub_push(m: &Pub<'_>, wrapped: bool) -> Bytes {
    push(Some(m.channel), "pub", m, wrapped, m.data.len() + 16)
}

/// `{"info":INFO}`: the body of join and leave pushes.
struct InfoBody<'a>(&'a [u8]);

impl Encode for InfoBody<'_> {
    fn write(&self, w: &mut Writer) {
        w.obj().key("info").raw(self.0).end();
    }
}

/// A join or leave push (bidirectional only).
pub fn join_leave_push(channel: &str, info: &[u8], join: bool) -> Bytes {
    push(Some(channel), if join { "join" } else { "leave" }, &InfoBody(info), true, info.len())
}

/// A server-side subscribe push carrying the (encoded) [`SubscribeResult`].
pub fn subscribe_push(channel: &str, result: &[u8], wrapped: bool) -> Bytes {
    push(Some(channel), "subscribe", &Raw(result), wrapped, result.len())
}

/// A server-side unsubscribe push.
pub fn unsubscribe_push(channel: &str, why: Unsubscribe, wrapped: bool) -> Bytes {
    push(Some(channel), "unsubscribe", &why, wrapped, 48)
}

/// A refresh push (the server changed the connection's expiry).
pub fn refresh_push(expiry: Expiry, wrapped: bool) -> Bytes {
    push(None, "refresh", &expiry, wrapped, 32)
}

/// The connect push that opens a unidirectional stream: `{"connect":RESULT}`.
pub fn connect_push(result: &ConnectResult<'_>) -> Bytes {
    push(None, "connect", result, false, 128)
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
        assert_eq!(
            &error_reply(3, PERMISSION_DENIED)[..],
            br#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#
        );
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

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn replies_keep_todays_bytes() {
        assert_eq!(text(reply(1, "ping", &Empty)), r#"{"id":1,"ping":{}}"#);
        let subs = vec![("a".to_string(), Bytes::from_static(b"{}"))];
        let c = ConnectResult {
            client: "id",
            version: "1.0 herald",
            ping: 25,
            pong: true,
            expires_ttl: Some(30),
            subs: Some(&subs),
            emulation: None,
            data: None,
        };
        assert_eq!(
            text(reply(1, "connect", &c)),
            r#"{"id":1,"connect":{"client":"id","version":"1.0 herald","ping":25,"pong":true,"expires":true,"ttl":30,"subs":{"a":{}}}}"#
        );
        let c = ConnectResult { expires_ttl: None, subs: Some(&[]), pong: false, ..c };
        assert_eq!(
            text(connect_push(&c)),
            r#"{"connect":{"client":"id","version":"1.0 herald","ping":25,"pong":false,"subs":{}}}"#
        );
        let c = ConnectResult { subs: None, ..c };
        assert_eq!(text(c.encode()), r#"{"client":"id","version":"1.0 herald","ping":25,"pong":false}"#);
        let r = RefreshResult { client: "id", version: "v", expires_ttl: Some(0) };
        assert_eq!(text(r.encode()), r#"{"client":"id","version":"v","expires":true,"ttl":0}"#);
        assert_eq!(text(Expiry { ttl: None }.encode()), "{}");
        assert_eq!(
            text(refresh_push(Expiry { ttl: Some(9) }, true)),
            r#"{"push":{"refresh":{"expires":true,"ttl":9}}}"#
        );
        assert_eq!(text(refresh_push(Expiry { ttl: None }, false)), r#"{"refresh":{}}"#);
        assert_eq!(ttl(Some(5), 10), Some(0));
        assert_eq!(ttl(Some(15), 10), Some(5));
    }

    #[test]
    fn subscribe_history_presence_shapes() {
        let p = [Pub { channel: "c", data: b"1", offset: 2, info: None, tags: None }];
        let s = SubscribeResult {
            expires_ttl: Some(4),
            recoverable: Some(Position { epoch: "e", offset: 2 }),
            was_recovering: true,
            recovered: true,
            publications: &p,
            data: None,
        };
        assert_eq!(
            text(s.encode()),
            r#"{"expires":true,"ttl":4,"recoverable":true,"epoch":"e","offset":2,"positioned":true,"was_recovering":true,"recovered":true,"publications":[{"data":1,"offset":2}]}"#
        );
        let s = SubscribeResult {
            expires_ttl: None,
            recoverable: Some(Position { epoch: "e", offset: 0 }),
            recovered: false,
            publications: &[],
            ..s
        };
        assert_eq!(text(s.encode()), r#"{"recoverable":true,"epoch":"e","positioned":true,"was_recovering":true}"#);
        let s = SubscribeResult { recoverable: None, was_recovering: false, ..s };
        assert_eq!(text(s.encode()), "{}");
        let h = HistoryResult { publications: &p, position: Position { epoch: "e", offset: 0 } };
        assert_eq!(text(h.encode()), r#"{"publications":[{"data":1,"offset":2}],"epoch":"e","offset":0}"#);
        let h = HistoryResult { publications: &[], position: Position { epoch: "e", offset: 7 } };
        assert_eq!(text(h.encode()), r#"{"publications":[],"epoch":"e","offset":7}"#);
        let entries = vec![
            ("c1".to_string(), "u".to_string(), Bytes::from_static(b"{\"user\":\"u\"}")),
            ("c2".to_string(), "".to_string(), Bytes::from_static(b"{}")),
        ];
        assert_eq!(text(PresenceResult { clients: &entries }.encode()), r#"{"presence":{"c1":{"user":"u"},"c2":{}}}"#);
        assert_eq!(text(PresenceResult { clients: &[] }.encode()), r#"{"presence":{}}"#);
        let st = PresenceStatsResult { num_clients: 2, num_users: 1 };
        assert_eq!(text(st.encode()), r#"{"num_clients":2,"num_users":1}"#);
    }

    #[test]
    fn pushes_escape_channel_names() {
        let ch = "a\"b\\c\n";
        let v: serde_json::Value = serde_json::from_slice(&pub_push(
            &Pub { channel: ch, data: b"1", offset: 0, info: None, tags: None },
            true,
        ))
        .unwrap();
        assert_eq!(v["push"]["channel"], ch);
        let v: serde_json::Value = serde_json::from_slice(&join_leave_push(ch, b"{}", true)).unwrap();
        assert_eq!(v["push"]["channel"], ch);
        assert!(v["push"]["join"]["info"].is_object());
        let u = unsubscribe_push(ch, SERVER_UNSUBSCRIBE, true);
        let v: serde_json::Value = serde_json::from_slice(&u).unwrap();
        assert_eq!(v["push"]["channel"], ch);
        assert_eq!(v["push"]["unsubscribe"]["code"], 2000);
        assert_eq!(
            text(unsubscribe_push("c", SERVER_UNSUBSCRIBE, true)),
            r#"{"push":{"channel":"c","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
        );
        assert_eq!(text(subscribe_push("c", b"{}", true)), r#"{"push":{"channel":"c","subscribe":{}}}"#);
        assert_eq!(text(subscribe_push("c", b"{}", false)), r#"{"channel":"c","subscribe":{}}"#);
        assert_eq!(text(join_leave_push("c", b"{}", false)), r#"{"push":{"channel":"c","leave":{"info":{}}}}"#);
        let mut w = Writer::new();
        w.obj().key("m\"").raw(b"1").end();
        assert_eq!(w.as_bytes(), br#"{"m\"":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&reply(
            1,
            "x",
            &PresenceResult { clients: &[(ch.to_string(), String::new(), Bytes::from_static(b"{}"))] },
        ))
        .unwrap();
        assert!(v["x"]["presence"][ch].is_object());
    }

    #[test]
    fn pub_encoded_len_matches_its_encoding() {
        for data in [&b"1"[..], b"{\"a\":[1,2]}", b"\"x\""] {
            for offset in [0u64, 1, 9, 10, 99, 100, 12345, u64::MAX] {
                for info in [None, Some(&b"{\"user\":\"u\"}"[..])] {
                    for tags in [None, Some(&b"{\"k\":\"v\"}"[..])] {
                        let p = Pub { channel: "c", data, offset, info, tags };
                        assert_eq!(p.encoded_len(), p.encode().len(), "{p:?}");
                    }
                }
            }
        }
    }
}
