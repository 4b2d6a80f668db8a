//! The engine seam and the embedded in-memory engine.
//!
//! Owns: per-channel id sequences (Centrifugo's offsets) and epochs, history rings,
//! presence, subscriber counts, and which workers have subscribers on which channel. Called
//! by transports (publish, subscribe, history, presence) and the main thread (sweep). A
//! publish is sequenced exactly once: the channel's shard lock is held while its id is
//! assigned, its history appended and the message handed to the workers' inboxes, so every
//! worker receives one channel's messages in id order. Delivery to connections happens in
//! the workers, with no lock. Must never block on IO while holding a shard lock.

use super::bus::{Inbox, Note};
use super::envelope::envelope_of;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A sequenced message, shared by every worker and history.
pub struct Message {
    /// Channel the message was published to (the engine's interned name).
    pub channel: Arc<str>,
    /// Position in the channel's stream (Centrifugo's offset): 1, 2, 3, ... per channel,
    /// valid within the current epoch; 0 for a `skip_history` publish, which is not stored.
    pub id: u64,
    /// The payload as JSON text.
    pub data: Bytes,
    /// `{"id":N,"channel":"CH","data":DATA}`, encoded once.
    pub envelope: Bytes,
    /// Publisher's ClientInfo JSON (Centrifugo client publishes), if any.
    pub info: Option<Bytes>,
    /// Centrifugo publication tags (a JSON object), if any.
    pub tags: Option<Bytes>,
    /// When it was published, in ms on the server's monotonic clock (since start, not Unix
    /// time); history TTL expiry counts from it.
    pub time_ms: u64,
    /// Process-wide publish order (orders messages of different channels).
    pub seq: u64,
}

/// A history read.
pub struct HistoryRead {
    /// Messages after `since`, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// The channel's newest id (0 if it has none).
    pub last_id: u64,
    /// The channel stream's epoch (changes when its history is lost).
    pub epoch: Arc<str>,
    /// True when `since` is older than the history holds (or from a previous life of the
    /// channel): the client missed messages.
    pub missed: bool,
}

/// Options of one publish beyond its data.
#[derive(Default, Clone)]
pub struct PubMeta {
    /// Publisher's ClientInfo JSON.
    pub info: Option<Bytes>,
    /// Tags JSON object delivered with the publication.
    pub tags: Option<Bytes>,
    /// Deliver without sequencing or storing (id 0, Centrifugo's `skip_history`).
    pub skip_history: bool,
    /// A retry with the same key within 5 minutes returns the first result and publishes
    /// nothing (Centrifugo's `idempotency_key`).
    pub idempotency_key: Option<String>,
}

impl From<Option<Bytes>> for PubMeta {
    fn from(info: Option<Bytes>) -> PubMeta {
        PubMeta { info, ..Default::default() }
    }
}

/// How long an idempotency key is remembered.
const IDEMPOTENCY_MS: u64 = 300_000;

/// History policy of a channel: (size, ttl ms), decided by its namespace.
pub type Policy = Arc<dyn Fn(&str) -> (usize, u64) + Send + Sync>;

/// Per-channel counters for the API and `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStat {
    /// Channel name.
    pub name: String,
    /// Current subscriptions to the channel, over all workers.
    pub subscribers: usize,
    /// Number of workers with at least one subscriber on the channel (those its publishes
    /// are handed to).
    pub workers: u32,
    /// Messages held in the channel's history. Expired ones are dropped lazily (on publish,
    /// subscribe, history read or sweep), so this may briefly count some.
    pub stored: usize,
    /// The channel's newest message id (0 if nothing was published in this epoch).
    pub last_id: u64,
}

/// Why an engine could not carry out an operation (the Redis engine: its shard is down,
/// the connection was lost with the command in flight, or it answered an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError(pub String);

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EngineError {}

/// Where an asynchronous engine sends its answer: a worker and one of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The worker whose inbox receives [`Note::Answer`].
    pub worker: usize,
    /// The connection waiting for it.
    pub conn: crate::hub::local::ConnId,
}

/// One engine operation whose answer may have to wait for the network (the Redis engine).
pub enum Op {
    /// Sequence, store and fan out a message.
    Publish {
        /// Channel.
        channel: String,
        /// Payload, JSON text.
        data: Bytes,
        /// Options.
        meta: PubMeta,
    },
    /// Read history (see [`Engine::history`]).
    History {
        /// Channel.
        channel: String,
        /// Exclusive start.
        since: Option<u64>,
        /// At most this many.
        limit: usize,
    },
    /// Count a subscriber of `worker` and read history after `since` (see
    /// [`Engine::subscribe`]).
    Subscribe {
        /// Channel.
        channel: String,
        /// The subscriber's worker.
        worker: usize,
        /// Exclusive start of the replay, if any.
        since: Option<u64>,
    },
    /// Read presence.
    Presence {
        /// Channel.
        channel: String,
    },
    /// Add or replace a presence entry, answered once it is in place (a subscribe reply
    /// follows it, so whoever reads presence after the reply sees the subscriber).
    PresenceAdd {
        /// Channel.
        channel: String,
        /// Client id.
        client: String,
        /// User id.
        user: String,
        /// ClientInfo JSON.
        info: Bytes,
    },
}

/// The answer to one [`Op`], in the order the operations were given.
pub enum Done {
    /// To [`Op::Publish`]: (id, epoch).
    Published(Result<(u64, Arc<str>), EngineError>),
    /// To [`Op::History`] and [`Op::Subscribe`].
    History(Result<HistoryRead, EngineError>),
    /// To [`Op::Presence`]: (client id, user, ClientInfo JSON).
    Presence(Result<Vec<(String, String, Bytes)>, EngineError>),
    /// To [`Op::PresenceAdd`].
    Added(Result<(), EngineError>),
    /// Not an engine answer: a proxy call to the application backend answered (or failed),
    /// delivered through the same [`Note::Answer`] to the session that waits for it.
    Proxy(Result<Box<crate::proto::proxy::Answer>, crate::proto::proxy::Failure>),
}

impl Done {
    /// The publish answer (an error when this answers another operation).
    pub fn published(self) -> Result<(u64, Arc<str>), EngineError> {
        match self {
            Done::Published(r) => r,
            _ => Err(EngineError("engine answered another operation".into())),
        }
    }

    /// The history answer (an error when this answers another operation).
    pub fn history(self) -> Result<HistoryRead, EngineError> {
        match self {
            Done::History(r) => r,
            _ => Err(EngineError("engine answered another operation".into())),
        }
    }

    /// The presence answer (an error when this answers another operation).
    pub fn presence(self) -> Result<Vec<(String, String, Bytes)>, EngineError> {
        match self {
            Done::Presence(r) => r,
            _ => Err(EngineError("engine answered another operation".into())),
        }
    }

    /// The proxy answer (a failure when this answers something else).
    pub fn proxy(self) -> Result<Box<crate::proto::proxy::Answer>, crate::proto::proxy::Failure> {
        match self {
            Done::Proxy(r) => r,
            _ => Err(crate::proto::proxy::Failure::Malformed("answered another operation".into())),
        }
    }
}

/// What every engine offers the hub: the embedded memory engine, and the Redis engine for
/// several nodes.
///
/// The operations that may need a network round trip go through [`Engine::submit`]: an
/// engine that can answer at once returns the answers; one that cannot returns `None` and
/// later sends [`Note::Answer`] to the reply's worker (it must always answer: an error
/// when the network fails). The others are local bookkeeping or fire-and-forget.
pub trait Engine: Send + Sync {
    /// Carry out `ops` in order. `Some(answers)` when done now (the memory engine always);
    /// `None` when the answers will arrive as [`Note::Answer`] for `reply`.
    fn submit(&self, ops: Vec<Op>, now_ms: u64, reply: Reply) -> Option<Vec<Done>> {
        let _ = reply;
        Some(
            ops.into_iter()
                .map(|op| match op {
                    Op::Publish { channel, data, meta } => {
                        Done::Published(Ok(self.publish(&channel, data, meta, now_ms)))
                    }
                    Op::History { channel, since, limit } => {
                        Done::History(Ok(self.history(&channel, since, limit, now_ms)))
                    }
                    Op::Subscribe { channel, worker, since } => {
                        Done::History(Ok(self.subscribe(&channel, worker, since, now_ms)))
                    }
                    Op::Presence { channel } => Done::Presence(Ok(self.presence(&channel))),
                    Op::PresenceAdd { channel, client, user, info } => {
                        self.presence_add(&channel, &client, &user, info);
                        Done::Added(Ok(()))
                    }
                })
                .collect(),
        )
    }
    /// Whether operations are answered at once ([`Engine::submit`] never returns `None`).
    fn immediate(&self) -> bool {
        true
    }
    /// Sequence, store and fan out one message (`data` is JSON text); returns (id, epoch).
    /// A `skip_history` publish is delivered with id 0 and not stored.
    fn publish(&self, channel: &str, data: Bytes, meta: PubMeta, now_ms: u64) -> (u64, Arc<str>);
    /// Count a new subscriber on `worker`, register the worker for the channel's feed and
    /// read history after `since` in the same step, so no message falls between the two.
    fn subscribe(&self, channel: &str, worker: usize, since: Option<u64>, now_ms: u64) -> HistoryRead;
    /// A subscriber left; `last_on_worker` when `worker` has none left there.
    fn unsubscribe(&self, channel: &str, worker: usize, last_on_worker: bool);
    /// Messages after `since` (all kept messages when None), oldest first, at most `limit`
    /// (the oldest after `since`, or the newest without it).
    fn history(&self, channel: &str, since: Option<u64>, limit: usize, now_ms: u64) -> HistoryRead;
    /// Drop a channel's history (its epoch changes).
    fn history_remove(&self, channel: &str);
    /// Hand an event (join/leave push) to the workers with subscribers on `channel`.
    fn channel_event(&self, channel: &str, note: &dyn Fn() -> Note);
    /// Presence: add or replace a client's entry (user, ClientInfo JSON).
    fn presence_add(&self, channel: &str, client: &str, user: &str, info: Bytes);
    /// Presence: remove a client's entry.
    fn presence_remove(&self, channel: &str, client: &str);
    /// Presence entries: (client id, user, ClientInfo JSON).
    fn presence(&self, channel: &str) -> Vec<(String, String, Bytes)>;
    /// Drop expired history and channels with neither subscribers nor history.
    fn sweep(&self, now_ms: u64);
    /// (channels, messages held in history).
    fn counts(&self) -> (usize, usize);
    /// Subscribers of a channel across all workers.
    fn subscribers(&self, channel: &str) -> usize;
    /// Per-channel counters.
    fn channel_stats(&self) -> Vec<ChannelStat>;
    /// Tell every worker something (shutdown, API commands aimed at users).
    fn broadcast(&self, note: &dyn Fn() -> Note);
    /// This node is alive, with its counters (`info`: a JSON object as `/api/info` lists
    /// nodes); called every few seconds. An engine spanning nodes shares it.
    fn heartbeat(&self, node: &str, info: Bytes) {
        let _ = (node, info);
    }
    /// Hand a Centrifugo emulation command to `node`, which holds `session` (the
    /// `/emulation` request reached another node). False when the engine spans this
    /// process only (there is no other node to reach).
    fn forward_emulation(&self, node: &str, session: &str, data: Bytes) -> bool {
        let _ = (node, session, data);
        false
    }
    /// The other live nodes (id, info JSON) as last seen: none for an engine that spans
    /// one process.
    fn nodes(&self) -> Vec<(String, Bytes)> {
        Vec::new()
    }
}

struct Chan {
    last_id: u64,
    epoch: Arc<str>,
    name: Arc<str>,
    history: VecDeque<Arc<Message>>,
    size: usize,
    ttl_ms: u64,
    /// Bit i set: worker i has subscribers.
    workers: u64,
    subscribers: usize,
    presence: HashMap<String, (String, Bytes)>,
    /// Idempotency key -> (id, when).
    recent_keys: HashMap<String, (u64, u64)>,
}

/// The embedded in-memory engine: channels sharded over mutexes by name hash.
pub struct MemoryEngine {
    shards: Vec<Mutex<HashMap<Arc<str>, Chan>>>,
    inboxes: Vec<Arc<Inbox>>,
    policy: Policy,
    seq: AtomicU64,
    epochs: AtomicU64,
    seed: u64,
}

const SHARDS: usize = 64;

/// A short random-looking epoch: unique per channel life within and across processes
/// (`seed` is the engine's, given by whoever reads the clock; `n` counts channel lives).
fn new_epoch(seed: u64, n: u64) -> Arc<str> {
    let mut x = seed ^ n.wrapping_mul(0x9E3779B97F4A7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^= x >> 31;
    Arc::from(format!("{:08x}", x as u32))
}

impl MemoryEngine {
    /// An engine feeding `inboxes` (index = worker id; at most 64 workers) with one history
    /// policy for every channel. `seed` makes epochs differ between processes (the caller
    /// mixes the wall clock and the process id: the hub reads no clock).
    pub fn new(inboxes: Vec<Arc<Inbox>>, history_size: usize, history_ttl_ms: u64, seed: u64) -> Self {
        Self::with_policy(inboxes, Arc::new(move |_: &str| (history_size, history_ttl_ms)), seed)
    }

    /// An engine whose history size and TTL are decided per channel.
    pub fn with_policy(inboxes: Vec<Arc<Inbox>>, policy: Policy, seed: u64) -> Self {
        assert!(inboxes.len() <= 64, "at most 64 workers");
        MemoryEngine {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            inboxes,
            policy,
            seq: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            seed,
        }
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, HashMap<Arc<str>, Chan>> {
        // FNV-1a: cheap and good enough for spreading channel names.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in channel.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        self.shards[(h as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn chan<'a>(&self, shard: &'a mut HashMap<Arc<str>, Chan>, channel: &str) -> &'a mut Chan {
        if !shard.contains_key(channel) {
            let name: Arc<str> = Arc::from(channel);
            let (size, ttl_ms) = (self.policy)(channel);
            let epoch = new_epoch(self.seed, self.epochs.fetch_add(1, Ordering::Relaxed));
            shard.insert(
                name.clone(),
                Chan {
                    last_id: 0,
                    epoch,
                    name,
                    history: VecDeque::new(),
                    size,
                    ttl_ms,
                    workers: 0,
                    subscribers: 0,
                    presence: HashMap::new(),
                    recent_keys: HashMap::new(),
                },
            );
        }
        shard.get_mut(channel).expect("inserted above")
    }

    fn expire(c: &mut Chan, now_ms: u64) {
        let ttl = c.ttl_ms;
        while c.history.front().is_some_and(|m| m.time_ms + ttl <= now_ms) {
            c.history.pop_front();
        }
    }

    fn read(c: &Chan, since: Option<u64>, limit: usize) -> HistoryRead {
        let first = c.history.front().map(|m| m.id).unwrap_or(c.last_id + 1);
        let (from, missed) = match since {
            // A `since` beyond the newest id comes from a previous life of the channel.
            Some(s) if s > c.last_id => (0, true),
            Some(s) => (s, s + 1 < first),
            None => (0, false),
        };
        let mut msgs: Vec<Arc<Message>> = c.history.iter().filter(|m| m.id > from).cloned().collect();
        if msgs.len() > limit {
            // With `since` the client walks forward: give the oldest `limit` after it, so the
            // next `since` continues with no gap. Without, give the newest.
            if since.is_some() {
                msgs.truncate(limit);
            } else {
                msgs.drain(..msgs.len() - limit);
            }
        }
        HistoryRead { messages: msgs, last_id: c.last_id, epoch: c.epoch.clone(), missed }
    }

    fn send_to_workers(&self, mut mask: u64, note: &dyn Fn() -> Note) {
        while mask != 0 {
            let w = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.inboxes[w].send(note());
        }
    }
}

impl Engine for MemoryEngine {
    fn publish(&self, channel: &str, data: Bytes, meta: PubMeta, now_ms: u64) -> (u64, Arc<str>) {
        let mut shard = self.shard(channel);
        let c = self.chan(&mut shard, channel);
        if let Some(k) = &meta.idempotency_key {
            c.recent_keys.retain(|_, (_, t)| *t + IDEMPOTENCY_MS > now_ms);
            if let Some((id, _)) = c.recent_keys.get(k) {
                return (*id, c.epoch.clone());
            }
        }
        let id = if meta.skip_history {
            0
        } else {
            c.last_id += 1;
            c.last_id
        };
        if let Some(k) = meta.idempotency_key {
            c.recent_keys.insert(k, (id, now_ms));
        }
        let msg = Arc::new(Message {
            envelope: envelope_of(id, channel, &data),
            channel: c.name.clone(),
            id,
            data,
            info: meta.info,
            tags: meta.tags,
            time_ms: now_ms,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        });
        if id > 0 && c.size > 0 && c.ttl_ms > 0 {
            if c.history.len() >= c.size {
                c.history.pop_front();
            }
            c.history.push_back(msg.clone());
        }
        Self::expire(c, now_ms);
        let epoch = c.epoch.clone();
        self.send_to_workers(c.workers, &|| Note::Publish(msg.clone()));
        (id, epoch)
    }

    fn subscribe(&self, channel: &str, worker: usize, since: Option<u64>, now_ms: u64) -> HistoryRead {
        let mut shard = self.shard(channel);
        let c = self.chan(&mut shard, channel);
        c.workers |= 1 << worker;
        c.subscribers += 1;
        Self::expire(c, now_ms);
        match since {
            Some(_) => Self::read(c, since, usize::MAX),
            None => HistoryRead { messages: Vec::new(), last_id: c.last_id, epoch: c.epoch.clone(), missed: false },
        }
    }

    fn unsubscribe(&self, channel: &str, worker: usize, last_on_worker: bool) {
        let mut shard = self.shard(channel);
        if let Some(c) = shard.get_mut(channel) {
            c.subscribers = c.subscribers.saturating_sub(1);
            if last_on_worker {
                c.workers &= !(1 << worker);
            }
            if c.workers == 0 && c.history.is_empty() && c.presence.is_empty() {
                shard.remove(channel);
            }
        }
    }

    fn history(&self, channel: &str, since: Option<u64>, limit: usize, now_ms: u64) -> HistoryRead {
        let mut shard = self.shard(channel);
        match shard.get_mut(channel) {
            Some(c) => {
                Self::expire(c, now_ms);
                Self::read(c, since, limit)
            }
            None => HistoryRead {
                messages: Vec::new(),
                last_id: 0,
                epoch: Arc::from(""),
                missed: since.is_some_and(|s| s > 0),
            },
        }
    }

    fn history_remove(&self, channel: &str) {
        let mut shard = self.shard(channel);
        if let Some(c) = shard.get_mut(channel) {
            c.history.clear();
        }
    }

    fn channel_event(&self, channel: &str, note: &dyn Fn() -> Note) {
        let shard = self.shard(channel);
        if let Some(c) = shard.get(channel) {
            self.send_to_workers(c.workers, note);
        }
    }

    fn presence_add(&self, channel: &str, client: &str, user: &str, info: Bytes) {
        let mut shard = self.shard(channel);
        let c = self.chan(&mut shard, channel);
        c.presence.insert(client.to_string(), (user.to_string(), info));
    }

    fn presence_remove(&self, channel: &str, client: &str) {
        let mut shard = self.shard(channel);
        if let Some(c) = shard.get_mut(channel) {
            c.presence.remove(client);
        }
    }

    fn presence(&self, channel: &str) -> Vec<(String, String, Bytes)> {
        let shard = self.shard(channel);
        shard
            .get(channel)
            .map(|c| c.presence.iter().map(|(k, (u, i))| (k.clone(), u.clone(), i.clone())).collect())
            .unwrap_or_default()
    }

    fn sweep(&self, now_ms: u64) {
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, c| {
                Self::expire(c, now_ms);
                c.workers != 0 || !c.history.is_empty() || !c.presence.is_empty()
            });
            if shard.len() < shard.capacity() / 4 {
                shard.shrink_to_fit();
            }
        }
    }

    fn counts(&self) -> (usize, usize) {
        let mut ch = 0;
        let mut msgs = 0;
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(|e| e.into_inner());
            ch += shard.len();
            msgs += shard.values().map(|c| c.history.len()).sum::<usize>();
        }
        (ch, msgs)
    }

    fn subscribers(&self, channel: &str) -> usize {
        self.shard(channel).get(channel).map(|c| c.subscribers).unwrap_or(0)
    }

    fn channel_stats(&self) -> Vec<ChannelStat> {
        let mut out = Vec::new();
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(|e| e.into_inner());
            for (name, c) in shard.iter() {
                out.push(ChannelStat {
                    name: name.to_string(),
                    subscribers: c.subscribers,
                    workers: c.workers.count_ones(),
                    stored: c.history.len(),
                    last_id: c.last_id,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn broadcast(&self, note: &dyn Fn() -> Note) {
        for i in &self.inboxes {
            i.send(note());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(size: usize) -> (MemoryEngine, std::sync::mpsc::Receiver<Note>) {
        let (inbox, rx) = Inbox::new();
        (MemoryEngine::new(vec![inbox], size, 10_000, 42), rx)
    }

    fn data(s: &str) -> Bytes {
        super::super::envelope::json_data(s.as_bytes())
    }

    #[test]
    fn ids_history_and_missed() {
        let (e, rx) = engine(3);
        for i in 0..5 {
            assert_eq!(e.publish("c", data(&format!("{i}")), PubMeta::default(), 0).0, i + 1);
        }
        assert!(rx.try_recv().is_err(), "no subscriber worker: nothing sent");
        let h = e.history("c", Some(3), 100, 0);
        assert_eq!(h.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 5]);
        assert!(!h.missed);
        let h = e.history("c", Some(1), 100, 0);
        assert_eq!(h.messages.len(), 3);
        assert!(h.missed, "id 2 fell out of the ring");
        assert!(!e.history("c", Some(2), 100, 0).missed);
        let h = e.history("c", Some(99), 100, 0);
        assert!(h.missed && h.messages.len() == 3);
        let h = e.history("c", None, 2, 0);
        assert_eq!(h.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 5]);
        let h = e.history("c", Some(2), 1, 0);
        assert_eq!(h.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(e.history("nope", None, 10, 0).messages.len(), 0);
        let epoch = h.epoch.clone();
        e.history_remove("c");
        assert_eq!(e.history("c", None, 10, 0).messages.len(), 0);
        assert_eq!(e.history("c", None, 10, 0).epoch, epoch);
    }

    #[test]
    fn subscribe_feeds_inbox_counts_and_ttl_sweeps() {
        let (e, rx) = engine(10);
        let h = e.subscribe("c", 0, None, 0);
        assert_eq!(h.last_id, 0);
        e.subscribe("c", 0, None, 0);
        assert_eq!(e.channel_stats()[0].subscribers, 2);
        e.publish("c", data("x"), PubMeta::default(), 5);
        let k = PubMeta { idempotency_key: Some("k".into()), ..Default::default() };
        assert_eq!(e.publish("c", data("y"), k.clone(), 6).0, 2);
        assert_eq!(e.publish("c", data("y"), k, 7).0, 2, "a retry with the same key is not published again");
        let skip = PubMeta { skip_history: true, ..Default::default() };
        assert_eq!(e.publish("c", data("z"), skip, 8).0, 0);
        assert_eq!(e.history("c", None, 10, 9).last_id, 2);
        match rx.try_recv() {
            Ok(Note::Publish(m)) => {
                assert_eq!((m.id, &m.envelope[..]), (1, &br#"{"id":1,"channel":"c","data":"x"}"#[..]))
            }
            _ => panic!("expected a publish"),
        }
        e.unsubscribe("c", 0, false);
        e.unsubscribe("c", 0, true);
        assert_eq!(e.counts(), (1, 2), "history keeps the channel");
        e.sweep(20_000);
        assert_eq!(e.counts(), (0, 0));
    }

    #[test]
    fn presence_entries() {
        let (e, _rx) = engine(10);
        e.presence_add("p", "c1", "u1", Bytes::from_static(b"{}"));
        e.presence_add("p", "c2", "u1", Bytes::from_static(b"{}"));
        assert_eq!(e.presence("p").len(), 2);
        e.presence_remove("p", "c1");
        assert_eq!(e.presence("p").len(), 1);
        e.presence_remove("p", "c2");
        e.sweep(0);
        assert_eq!(e.counts().0, 0);
    }
}
