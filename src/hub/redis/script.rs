//! The Lua scripts a node runs in Redis, their arguments and their answers.
//!
//! Owns: key naming (`{prefix}.meta.{channel}`: a hash with the channel's top offset `s`
//! and epoch `e`; `{prefix}.stream.{channel}`: its history, a Redis stream whose entry ids
//! are `offset-1`; `{prefix}.pub.{channel}`: its pub/sub channel), [`PUBLISH`] (sequence,
//! append to history with size and TTL, publish, all atomically, so ids are the same on
//! every node) and [`HISTORY`] (publications after an offset plus the stream position, and
//! the epoch created if the channel has none yet, so a subscriber before the first publish
//! and the first publisher agree on it).

use crate::proto::resp::Value;
use bytes::Bytes;

/// Sequence, store and publish one message. KEYS: meta, stream, idempotency key. ARGV:
/// payload, history size (0: no history, offset 0), history TTL s, pub/sub channel, epoch
/// to create, meta TTL s, idempotency key (empty: none). Answers `{offset, epoch}`;
/// publishes `offset:epoch:payload`. A publish whose idempotency key was seen in the last
/// 5 minutes answers the first one's offset and publishes nothing.
pub const PUBLISH: &str = r#"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('hset', KEYS[1], 'e', epoch)
end
if ARGV[7] ~= '' then
  local prev = redis.call('get', KEYS[3])
  if prev then return {tonumber(prev), epoch} end
end
local offset = 0
if tonumber(ARGV[2]) > 0 then
  offset = redis.call('hincrby', KEYS[1], 's', 1)
  redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-1', 'p', ARGV[1])
  redis.call('expire', KEYS[2], ARGV[3])
end
redis.call('expire', KEYS[1], ARGV[6])
if ARGV[7] ~= '' then redis.call('set', KEYS[3], offset, 'EX', 300) end
redis.call('publish', ARGV[4], offset .. ':' .. epoch .. ':' .. ARGV[1])
return {offset, epoch}
"#;

/// Publications after an offset. KEYS: meta, stream. ARGV: since (exclusive; 0 = all; one
/// beyond the top reads all),
/// count (0 = all), epoch to create, meta TTL s. Answers `{top, epoch, oldest, entries}`
/// where `oldest` is the first offset history still holds (0 when empty) and entries are
/// `[id, ["p", payload]]`.
pub const HISTORY: &str = r#"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('hset', KEYS[1], 'e', epoch)
  redis.call('expire', KEYS[1], ARGV[4])
end
local top = redis.call('hget', KEYS[1], 's') or '0'
local since = ARGV[1]
-- A position beyond the top comes from a previous life of the stream: read it all.
if tonumber(since) > tonumber(top) then since = '0' end
local first = redis.call('xrange', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = 0
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
local entries
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('xrange', KEYS[2], '(' .. since .. '-1', '+', 'COUNT', ARGV[2])
else
  entries = redis.call('xrange', KEYS[2], '(' .. since .. '-1', '+')
end
return {top, epoch, oldest, entries}
"#;

/// Add or refresh a presence entry. KEYS: presence hash, expiry zset. ARGV: client id,
/// entry, TTL s. Expiry is Redis's own clock, so nodes' clocks need not agree.
pub const PRESENCE_ADD: &str = r#"
local now = tonumber(redis.call('time')[1])
redis.call('zadd', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('expire', KEYS[2], ARGV[3])
return 1
"#;

/// Remove a presence entry. KEYS: presence hash, expiry zset. ARGV: client id.
pub const PRESENCE_REMOVE: &str = r#"
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"#;

/// The live presence entries (expired ones are dropped first). KEYS: presence hash, expiry
/// zset. Answers `[client, entry, client, entry, ...]`.
pub const PRESENCE_GET: &str = r#"
local now = tonumber(redis.call('time')[1])
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
for _, c in ipairs(gone) do redis.call('hdel', KEYS[1], c) end
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
return redis.call('hgetall', KEYS[1])
"#;

/// A node's heartbeat, answering the live nodes. KEYS: the node set (scored by last
/// heartbeat, Redis time), the node info hash. ARGV: node id, its info JSON, TTL s.
/// Answers `[node, info, node, info, ...]` of the nodes heard from within the TTL (this
/// one included); older ones are removed.
pub const NODES: &str = r#"
local now = tonumber(redis.call('time')[1])
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('zrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[3]))
for _, n in ipairs(gone) do redis.call('hdel', KEYS[2], n) end
redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local live = redis.call('zrange', KEYS[1], 0, -1)
local out = {}
for _, n in ipairs(live) do
  local info = redis.call('hget', KEYS[2], n)
  if info then table.insert(out, n); table.insert(out, info) end
end
return out
"#;

/// A script's SHA1 in hex, as `EVALSHA` names it.
pub fn sha1_hex(script: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(script).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every script this module defines.
pub const ALL: [&str; 6] = [PUBLISH, HISTORY, PRESENCE_ADD, PRESENCE_REMOVE, PRESENCE_GET, NODES];

/// [`sha1_hex`] of one of [`ALL`], computed once per process (a publish would otherwise hash
/// the script's text each time); any other text is hashed.
pub fn sha_of(script: &[u8]) -> String {
    static SHAS: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    let known = SHAS.get_or_init(|| ALL.iter().map(|t| (*t, sha1_hex(t.as_bytes()))).collect());
    match known.iter().find(|(t, _)| t.as_bytes() == script) {
        Some((_, sha)) => sha.clone(),
        None => sha1_hex(script),
    }
}

/// The keys and pub/sub channel of one Herald channel.
pub struct Keys {
    /// The meta hash (top offset, epoch).
    pub meta: String,
    /// The history stream.
    pub stream: String,
    /// The pub/sub channel.
    pub pubsub: String,
    /// The presence hash (client id -> entry).
    pub presence: String,
    /// The presence expiry set (client id scored by expiry, Redis time).
    pub presence_exp: String,
    /// Prefix of idempotency keys (`{prefix}.idem.{channel}.{key}`).
    pub idem: String,
}

impl Keys {
    /// Keys of `channel` under `prefix`.
    pub fn of(prefix: &str, channel: &str) -> Keys {
        Keys {
            meta: format!("{prefix}.meta.{channel}"),
            stream: format!("{prefix}.stream.{channel}"),
            pubsub: format!("{prefix}.pub.{channel}"),
            presence: format!("{prefix}.presence.{channel}"),
            presence_exp: format!("{prefix}.presence.exp.{channel}"),
            idem: format!("{prefix}.idem.{channel}."),
        }
    }
}

/// The `EVAL` arguments of [`PUBLISH`] (`idempotency_key` empty: none).
pub fn publish_args(
    k: &Keys,
    payload: &[u8],
    history_size: usize,
    ttl_s: u64,
    new_epoch: &str,
    meta_ttl_s: u64,
    idempotency_key: &str,
) -> Vec<Vec<u8>> {
    vec![
        b"EVAL".to_vec(),
        PUBLISH.as_bytes().to_vec(),
        b"3".to_vec(),
        k.meta.as_bytes().to_vec(),
        k.stream.as_bytes().to_vec(),
        format!("{}{idempotency_key}", k.idem).into_bytes(),
        payload.to_vec(),
        history_size.to_string().into_bytes(),
        ttl_s.max(1).to_string().into_bytes(),
        k.pubsub.as_bytes().to_vec(),
        new_epoch.as_bytes().to_vec(),
        meta_ttl_s.max(1).to_string().into_bytes(),
        idempotency_key.as_bytes().to_vec(),
    ]
}

/// The `EVAL` arguments of [`HISTORY`].
pub fn history_args(k: &Keys, since: u64, count: usize, new_epoch: &str, meta_ttl_s: u64) -> Vec<Vec<u8>> {
    vec![
        b"EVAL".to_vec(),
        HISTORY.as_bytes().to_vec(),
        b"2".to_vec(),
        k.meta.as_bytes().to_vec(),
        k.stream.as_bytes().to_vec(),
        since.to_string().into_bytes(),
        count.to_string().into_bytes(),
        new_epoch.as_bytes().to_vec(),
        meta_ttl_s.max(1).to_string().into_bytes(),
    ]
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadAnswer {
    /// Redis answered with an error (the message).
    Redis(String),
    /// The answer does not have the script's shape.
    Shape(&'static str),
}

impl std::fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadAnswer::Redis(m) => write!(f, "Redis: {m}"),
            BadAnswer::Shape(w) => write!(f, "unexpected Redis answer: {w}"),
        }
    }
}

impl std::error::Error for BadAnswer {}

fn check(v: &Value) -> Result<&[Value], BadAnswer> {
    match v {
        Value::Error(e) => Err(BadAnswer::Redis(String::from_utf8_lossy(e).into_owned())),
        v => v.as_array().ok_or(BadAnswer::Shape("not an array")),
    }
}

/// `{offset, epoch}` of [`PUBLISH`].
pub fn published(v: &Value) -> Result<(u64, String), BadAnswer> {
    let a = check(v)?;
    let offset = a.first().and_then(Value::as_int).ok_or(BadAnswer::Shape("offset"))?;
    let epoch = a.get(1).and_then(Value::as_bytes).ok_or(BadAnswer::Shape("epoch"))?;
    Ok((offset.max(0) as u64, String::from_utf8_lossy(epoch).into_owned()))
}

/// What [`HISTORY`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The channel's newest offset.
    pub top: u64,
    /// The channel's epoch.
    pub epoch: String,
    /// The first offset history still holds (0 when it holds none).
    pub oldest: u64,
    /// (offset, payload), oldest first.
    pub entries: Vec<(u64, Bytes)>,
}

/// Read [`HISTORY`]'s answer.
pub fn page(v: &Value) -> Result<Page, BadAnswer> {
    let a = check(v)?;
    let top = a.first().and_then(Value::as_int).ok_or(BadAnswer::Shape("top"))?.max(0) as u64;
    let epoch = a.get(1).and_then(Value::as_bytes).ok_or(BadAnswer::Shape("epoch"))?;
    let oldest = a.get(2).and_then(Value::as_int).ok_or(BadAnswer::Shape("oldest"))?.max(0) as u64;
    let list = a.get(3).and_then(Value::as_array).ok_or(BadAnswer::Shape("entries"))?;
    let mut entries = Vec::with_capacity(list.len());
    for e in list {
        let e = e.as_array().ok_or(BadAnswer::Shape("entry"))?;
        let id = e.first().and_then(Value::as_bytes).ok_or(BadAnswer::Shape("entry id"))?;
        let offset = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(BadAnswer::Shape("entry id"))?;
        let fields = e.get(1).and_then(Value::as_array).ok_or(BadAnswer::Shape("entry fields"))?;
        let payload = fields.get(1).and_then(Value::as_bytes).ok_or(BadAnswer::Shape("entry payload"))?;
        entries.push((offset, Bytes::copy_from_slice(payload)));
    }
    Ok(Page { top, epoch: String::from_utf8_lossy(epoch).into_owned(), oldest, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::resp::{parse, Limits};

    fn v(b: &[u8]) -> Value {
        parse(b, &Limits::default()).unwrap().unwrap().0
    }

    #[test]
    fn answers() {
        assert_eq!(published(&v(b"*2\r\n:7\r\n$8\r\nab12cd34\r\n")).unwrap(), (7, "ab12cd34".into()));
        assert_eq!(published(&v(b"-ERR boom\r\n")), Err(BadAnswer::Redis("ERR boom".into())));
        let p = page(&v(b"*4\r\n$1\r\n2\r\n$2\r\nep\r\n:1\r\n*1\r\n*2\r\n$3\r\n2-1\r\n*2\r\n$1\r\np\r\n$3\r\n{x}\r\n"))
            .unwrap();
        assert_eq!(p, Page { top: 2, epoch: "ep".into(), oldest: 1, entries: vec![(2, Bytes::from_static(b"{x}"))] });
        assert!(page(&v(b"*1\r\n:1\r\n")).is_err());
    }

    #[test]
    fn script_sha() {
        assert_eq!(sha_of(PUBLISH.as_bytes()), sha1_hex(PUBLISH.as_bytes()));
        assert_eq!(sha_of(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn keys_and_args() {
        let k = Keys::of("herald", "chat:1");
        assert_eq!(k.meta, "herald.meta.chat:1");
        let a = publish_args(&k, b"{}", 100, 300, "e1", 600, "");
        assert_eq!(a.len(), 13);
        assert_eq!(a[2], b"3");
        assert_eq!(a[9], b"herald.pub.chat:1");
    }
}
