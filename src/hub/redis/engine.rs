//! The Redis engine: several Herald nodes act as one server through Redis.
//!
//! Owns: what this node knows of the channels it has local subscribers on (which workers,
//! whether Redis confirmed its subscription, the newest id it delivered and the stream's
//! epoch), the translation of engine operations into the Lua scripts of [`super::script`],
//! and turning what arrives from Redis (publications, join/leave events, server API
//! commands for users) into notes for the workers' inboxes.
//!
//! How IO fits: the engine never touches a socket. It hands commands to an [`Io`] (the
//! reactor's Redis driver thread, which pipelines them per shard) with a callback, and
//! answers the worker that asked through its inbox ([`Note::Answer`]): a worker never
//! blocks on Redis and never waits in a lock for it. Publications come back on the driver
//! thread (`on_publication`), are turned into one shared [`Message`] per node and handed to
//! the workers with local subscribers, exactly like a local publish: each worker encodes it
//! once per wire format.
//!
//! Ordering and gaps: a channel's first local subscriber makes the node SUBSCRIBE in Redis;
//! history is read only once Redis confirmed it, so nothing published in between is lost
//! (and what arrives twice is dropped by id). Ids are consecutive per channel, so a missing
//! id shows a gap: the node reads it back from history before delivering further (also
//! after its pub/sub connection comes back). A new epoch (Redis lost the channel's data)
//! or ids history no longer holds are reported to the subscribers ([`Note::Lost`]).

use super::link::Publication;
use super::script::{self, Keys};
use super::shard;
use crate::hub::bus::{Event, Inbox, Note, UserCmd};
use crate::hub::engine::{ChannelStat, Done, Engine, EngineError, HistoryRead, Message, Op, Policy, PubMeta, Reply};
use crate::hub::envelope::envelope_of;
use crate::proto::resp::Value;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A command's callback on the IO side.
pub type Answered = Box<dyn FnOnce(Result<Value, String>) + Send>;
/// A subscription's callback: Ok once Redis confirmed it.
pub type Subscribed = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The IO the engine needs (implemented by the reactor's Redis driver). Every method
/// returns at once; callbacks run later on the IO thread and must not block.
pub trait Io: Send + Sync {
    /// Run a command on a shard; `done` gets the reply or why there is none.
    fn command(&self, shard: usize, args: Vec<Vec<u8>>, done: Answered);
    /// Subscribe the shard's pub/sub connection to `channel` (kept across reconnects);
    /// `done` once confirmed, or at once with an error when the connection is down.
    fn subscribe(&self, shard: usize, channel: &[u8], done: Option<Subscribed>);
    /// Stop receiving `channel`.
    fn unsubscribe(&self, shard: usize, channel: &[u8]);
}

/// Settings of the Redis engine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Key prefix (Centrifugo's `engine.redis.prefix`).
    pub prefix: String,
    /// Number of shards (Redis instances); channels are spread over them by name.
    pub shards: usize,
    /// This node's id (ignores its own control messages).
    pub node: String,
    /// How long presence entries live without a refresh, in seconds.
    pub presence_ttl_s: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SubState {
    /// No SUBSCRIBE in effect (or it failed).
    Idle,
    /// SUBSCRIBE sent, not confirmed yet.
    Subscribing,
    /// Confirmed: publications arrive.
    Live,
}

type Waiter = Box<dyn FnOnce(bool) + Send>;

/// What this node knows of a channel it has local subscribers on.
struct NodeChan {
    name: Arc<str>,
    workers: u64,
    subscribers: usize,
    state: SubState,
    /// Reads waiting for the subscription's confirmation.
    waiting: Vec<Waiter>,
    /// Newest id handed to the workers.
    last_id: u64,
    /// The stream's epoch as this node knows it.
    epoch: Option<Arc<str>>,
    /// A gap is being read back from history: publications wait here, in order.
    repairing: Option<Vec<Publication>>,
}

/// One channel's presence entries of this node: client id -> (user, ClientInfo JSON).
type LocalPresence = HashMap<String, (String, Bytes)>;

const SHARDS: usize = 64;
/// A node not heard from for this long is gone from the node list (heartbeats come every
/// 2 s).
const NODE_TTL_S: u64 = 10;
/// How long channel meta (top offset, epoch) outlives the last publish, in seconds.
const META_TTL_S: u64 = 30 * 24 * 3600;

struct Inner {
    io: std::sync::OnceLock<Box<dyn Io>>,
    inboxes: Vec<Arc<Inbox>>,
    policy: Policy,
    set: Settings,
    pub_prefix: String,
    control: String,
    chans: Vec<Mutex<HashMap<Arc<str>, NodeChan>>>,
    /// This node's presence entries by channel (refreshed before they expire in Redis).
    presence: Mutex<HashMap<String, LocalPresence>>,
    last_presence_refresh: AtomicU64,
    seq: AtomicU64,
    epochs: AtomicU64,
    seed: u64,
    /// Publications dropped because they could not be decoded.
    pub bad: AtomicUsize,
    /// The other live nodes as the last heartbeat saw them.
    nodes: Mutex<Vec<(String, Bytes)>>,
}

/// The Redis engine (see the module documentation).
pub struct RedisEngine {
    inner: Arc<Inner>,
}

/// Collects the answers of one [`Engine::submit`] and sends them when all are in.
struct Batch {
    reply: Reply,
    inbox: Arc<Inbox>,
    slots: Mutex<Vec<Option<Done>>>,
    left: AtomicUsize,
}

impl Batch {
    fn put(&self, i: usize, d: Done) {
        if let Ok(mut s) = self.slots.lock() {
            if let Some(slot) = s.get_mut(i) {
                *slot = Some(d);
            }
        }
        log::trace!("redis engine: answer {i} for {:?}", self.reply);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done: Vec<Done> = match self.slots.lock() {
                Ok(mut s) => s
                    .drain(..)
                    .map(|d| d.unwrap_or_else(|| Done::Published(Err(EngineError("no answer".into())))))
                    .collect(),
                Err(_) => Vec::new(),
            };
            self.inbox.send(Note::Answer { conn: self.reply.conn, done });
        }
    }
}

fn fnv(name: &str) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h as usize
}

/// Payload stored in history and sent over pub/sub: `d` + data, or `m` + info length (u32
/// big-endian) + info + tags length + tags + data.
fn encode_payload(data: &[u8], meta: &PubMeta) -> Vec<u8> {
    if meta.info.is_none() && meta.tags.is_none() {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(b'd');
        v.extend_from_slice(data);
        return v;
    }
    let info = meta.info.as_deref().unwrap_or(b"");
    let tags = meta.tags.as_deref().unwrap_or(b"");
    let mut v = Vec::with_capacity(9 + info.len() + tags.len() + data.len());
    v.push(b'm');
    v.extend_from_slice(&(info.len() as u32).to_be_bytes());
    v.extend_from_slice(info);
    v.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    v.extend_from_slice(tags);
    v.extend_from_slice(data);
    v
}

/// (data, info, tags) of a payload; None when it is not one.
fn decode_payload(p: &Bytes) -> Option<(Bytes, Option<Bytes>, Option<Bytes>)> {
    match p.first()? {
        b'd' => Some((p.slice(1..), None, None)),
        b'm' => {
            let mut at = 1;
            let mut part = || -> Option<Bytes> {
                let n = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
                let b = p.get(at + 4..at + 4 + n).map(|_| p.slice(at + 4..at + 4 + n))?;
                at += 4 + n;
                Some(b)
            };
            let info = part()?;
            let tags = part()?;
            let some = |b: Bytes| (!b.is_empty()).then_some(b);
            Some((p.slice(at..), some(info), some(tags)))
        }
        _ => None,
    }
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError(format!("Redis engine: {e}"))
}

impl RedisEngine {
    /// An engine feeding `inboxes` (index = worker id, at most 64). Call
    /// [`RedisEngine::set_io`] before use.
    pub fn new(inboxes: Vec<Arc<Inbox>>, policy: Policy, set: Settings, seed: u64) -> RedisEngine {
        assert!(inboxes.len() <= 64, "at most 64 workers");
        let pub_prefix = format!("{}.pub.", set.prefix);
        let control = format!("{}.control", set.prefix);
        RedisEngine {
            inner: Arc::new(Inner {
                io: std::sync::OnceLock::new(),
                inboxes,
                policy,
                pub_prefix,
                control,
                set,
                chans: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                presence: Mutex::new(HashMap::new()),
                last_presence_refresh: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                epochs: AtomicU64::new(0),
                seed,
                bad: AtomicUsize::new(0),
                nodes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Commands to run first on every command connection: `SCRIPT LOAD` of every script,
    /// so `EVALSHA` finds them (a `NOSCRIPT` retry as `EVAL` would run after commands
    /// queued behind it, changing their order).
    pub fn setup_commands() -> Vec<Vec<Vec<u8>>> {
        [
            script::PUBLISH,
            script::HISTORY,
            script::PRESENCE_ADD,
            script::PRESENCE_REMOVE,
            script::PRESENCE_GET,
            script::NODES,
        ]
        .iter()
        .map(|sc| vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), sc.as_bytes().to_vec()])
        .collect()
    }

    /// Connect the engine to its IO (once) and subscribe to the control channel.
    pub fn set_io(&self, io: Box<dyn Io>) {
        let _ = self.inner.io.set(io);
        self.inner.io().subscribe(0, self.inner.control.as_bytes(), None);
    }

    /// A publication arrived from Redis (IO thread).
    pub fn on_publication(&self, shard: usize, p: Publication) {
        self.inner.on_publication(shard, p);
    }

    /// A shard's pub/sub connection went down or came back (IO thread): after it comes
    /// back, read what may have been missed meanwhile.
    pub fn on_health(&self, shard: usize, up: bool) {
        if up {
            self.inner.repair_shard(shard);
        }
    }
}

impl Inner {
    fn io(&self) -> &dyn Io {
        match self.io.get() {
            Some(io) => io.as_ref(),
            None => &NoIo,
        }
    }

    /// Run a command; a script (`EVAL`) runs as `EVALSHA` (Redis caches scripts by SHA1,
    /// so a publish does not send and hash the script's text each time), falling back to
    /// `EVAL` once when Redis does not know it yet (`NOSCRIPT`, e.g. after a restart).
    fn run(self: &Arc<Self>, shard: usize, args: Vec<Vec<u8>>, done: Answered) {
        if args.first().map(|a| &a[..]) != Some(b"EVAL") || args.len() < 2 {
            return self.io().command(shard, args, done);
        }
        let mut sha_args = args.clone();
        sha_args[0] = b"EVALSHA".to_vec();
        sha_args[1] = script::sha_of(&args[1]).into_bytes();
        let me = self.clone();
        self.io().command(
            shard,
            sha_args,
            Box::new(move |r| match r {
                Ok(Value::Error(e)) if e.starts_with(b"NOSCRIPT") => me.io().command(shard, args, done),
                r => done(r),
            }),
        );
    }

    fn shard_of(&self, channel: &str) -> usize {
        shard::of(channel, self.set.shards)
    }

    fn lock(&self, channel: &str) -> MutexGuard<'_, HashMap<Arc<str>, NodeChan>> {
        self.chans[fnv(channel) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_epoch(&self) -> String {
        let n = self.epochs.fetch_add(1, Ordering::Relaxed);
        let mut x = self.seed ^ n.wrapping_mul(0x9E3779B97F4A7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
        x ^= x >> 31;
        format!("{:08x}", x as u32)
    }

    fn message(&self, name: &Arc<str>, id: u64, payload: &Bytes) -> Option<Arc<Message>> {
        let Some((data, info, tags)) = decode_payload(payload) else {
            self.bad.fetch_add(1, Ordering::Relaxed);
            log::warn!("redis engine: undecodable publication on {name} (id {id})");
            return None;
        };
        Some(Arc::new(Message {
            envelope: envelope_of(id, name, &data),
            channel: name.clone(),
            id,
            data,
            info,
            tags,
            time_ms: 0,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }))
    }

    fn send(&self, mut mask: u64, note: &dyn Fn() -> Note) {
        while mask != 0 {
            let w = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(i) = self.inboxes.get(w) {
                i.send(note());
            }
        }
    }

    fn publish(self: &Arc<Self>, channel: &str, data: Bytes, meta: PubMeta, done: Box<dyn FnOnce(Done) + Send>) {
        let (mut size, ttl_ms) = (self.policy)(channel);
        if meta.skip_history || ttl_ms == 0 {
            size = 0;
        }
        let keys = Keys::of(&self.set.prefix, channel);
        let payload = encode_payload(&data, &meta);
        let key = meta.idempotency_key.clone().unwrap_or_default();
        let args =
            script::publish_args(&keys, &payload, size, ttl_ms.div_ceil(1000), &self.new_epoch(), META_TTL_S, &key);
        self.run(
            self.shard_of(channel),
            args,
            Box::new(move |r| {
                let d = match r {
                    Ok(v) => script::published(&v).map(|(o, e)| (o, Arc::from(e.as_str()))).map_err(err),
                    Err(e) => Err(err(e)),
                };
                done(Done::Published(d))
            }),
        );
    }

    /// Read history; `done` gets the read (`since` beyond the top reads all: missed).
    fn read(self: &Arc<Self>, channel: &str, since: Option<u64>, limit: usize, done: Box<dyn FnOnce(Done) + Send>) {
        let keys = Keys::of(&self.set.prefix, channel);
        let count = if since.is_some() && limit != usize::MAX { limit } else { 0 };
        let args = script::history_args(&keys, since.unwrap_or(0), count, &self.new_epoch(), META_TTL_S);
        let name: Arc<str> = Arc::from(channel);
        let me = self.clone();
        self.run(
            self.shard_of(channel),
            args,
            Box::new(move |r| {
                let page = match r {
                    Ok(v) => script::page(&v).map_err(err),
                    Err(e) => Err(err(e)),
                };
                let read = page.map(|p| {
                    let first = if p.oldest > 0 { p.oldest } else { p.top + 1 };
                    let missed = match since {
                        Some(s) if s > p.top => true,
                        Some(s) => s + 1 < first,
                        None => false,
                    };
                    let mut messages: Vec<Arc<Message>> =
                        p.entries.iter().filter_map(|(id, pl)| me.message(&name, *id, pl)).collect();
                    if since.is_none() && messages.len() > limit {
                        messages.drain(..messages.len() - limit);
                    }
                    HistoryRead { messages, last_id: p.top, epoch: Arc::from(p.epoch.as_str()), missed }
                });
                done(Done::History(read))
            }),
        );
    }

    /// Count a subscriber and read history once Redis confirmed the node's subscription.
    fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        worker: usize,
        since: Option<u64>,
        done: Box<dyn FnOnce(Done) + Send>,
    ) {
        let me = self.clone();
        let ch = channel.to_string();
        let read: Waiter = Box::new(move |ok| {
            if !ok {
                return done(Done::History(Err(EngineError(format!(
                    "Redis engine: the subscription to {ch} could not be made (its shard is unreachable)"
                )))));
            }
            let me2 = me.clone();
            let ch2 = ch.clone();
            me.read(
                &ch,
                since,
                usize::MAX,
                Box::new(move |d| {
                    if let Done::History(Ok(r)) = &d {
                        me2.seed_position(&ch2, r.last_id, &r.epoch);
                    }
                    done(d)
                }),
            );
        });
        let mut g = self.lock(channel);
        let nc = g.entry(Arc::from(channel)).or_insert_with_key(|k| NodeChan {
            name: k.clone(),
            workers: 0,
            subscribers: 0,
            state: SubState::Idle,
            waiting: Vec::new(),
            last_id: 0,
            epoch: None,
            repairing: None,
        });
        nc.workers |= 1 << worker;
        nc.subscribers += 1;
        match nc.state {
            SubState::Live => {
                drop(g);
                read(true);
            }
            SubState::Subscribing => nc.waiting.push(read),
            SubState::Idle => {
                nc.state = SubState::Subscribing;
                nc.waiting.push(read);
                drop(g);
                let me = self.clone();
                let name = channel.to_string();
                let pubsub = Keys::of(&self.set.prefix, channel).pubsub;
                self.io().subscribe(
                    self.shard_of(channel),
                    pubsub.as_bytes(),
                    Some(Box::new(move |r| me.confirmed(&name, r.is_ok()))),
                );
            }
        }
    }

    fn confirmed(&self, channel: &str, ok: bool) {
        log::debug!("redis engine: subscription to {channel} confirmed: {ok}");
        let waiting = {
            let mut g = self.lock(channel);
            let Some(nc) = g.get_mut(channel) else { return };
            nc.state = if ok { SubState::Live } else { SubState::Idle };
            std::mem::take(&mut nc.waiting)
        };
        for w in waiting {
            w(ok);
        }
    }

    /// The first read of a channel tells the node where its stream is.
    fn seed_position(&self, channel: &str, top: u64, epoch: &Arc<str>) {
        let mut g = self.lock(channel);
        if let Some(nc) = g.get_mut(channel) {
            if nc.epoch.is_none() {
                nc.epoch = Some(epoch.clone());
                nc.last_id = nc.last_id.max(top);
            }
        }
    }

    fn unsubscribe(&self, channel: &str, worker: usize, last_on_worker: bool) {
        let gone = {
            let mut g = self.lock(channel);
            let Some(nc) = g.get_mut(channel) else { return };
            nc.subscribers = nc.subscribers.saturating_sub(1);
            if last_on_worker {
                nc.workers &= !(1 << worker);
            }
            if nc.workers != 0 {
                return;
            }
            g.remove(channel)
        };
        if let Some(nc) = gone {
            let pubsub = Keys::of(&self.set.prefix, channel).pubsub;
            self.io().unsubscribe(self.shard_of(channel), pubsub.as_bytes());
            for w in nc.waiting {
                w(false);
            }
        }
    }

    fn on_publication(self: &Arc<Self>, _shard: usize, p: Publication) {
        if *p.pubsub == *self.control.as_bytes() {
            return self.on_control(&p.payload);
        }
        let Some(name) = p.pubsub.strip_prefix(self.pub_prefix.as_bytes()) else { return };
        let Ok(name) = std::str::from_utf8(name) else { return };
        if p.payload.first() == Some(&b'e') {
            return self.on_event(name, &p.payload);
        }
        let mut g = self.lock(name);
        let Some(nc) = g.get_mut(name) else { return };
        if p.offset == 0 {
            // Not sequenced (skip_history): delivered as is.
            let (mask, n) = (nc.workers, nc.name.clone());
            drop(g);
            if let Some(m) = self.message(&n, 0, &p.payload) {
                self.send(mask, &|| Note::Publish(m.clone()));
            }
            return;
        }
        if let Some(buf) = nc.repairing.as_mut() {
            buf.push(p);
            return;
        }
        let epoch_changed = nc.epoch.as_ref().is_some_and(|e| *e.as_bytes() != *p.epoch);
        if epoch_changed {
            // The stream began again (Redis lost its data): positions of the old epoch mean
            // nothing now. Subscribers are told, then the new stream is delivered.
            let (mask, n) = (nc.workers, nc.name.clone());
            nc.epoch = Some(Arc::from(String::from_utf8_lossy(&p.epoch).as_ref()));
            nc.last_id = 0;
            log::warn!("redis engine: channel {n} has a new epoch: its earlier positions are lost");
            self.send(mask, &|| Note::Lost { channel: n.clone(), reset: true });
        }
        if p.offset <= nc.last_id {
            return; // delivered already (a repair read raced the feed)
        }
        if nc.last_id > 0 && p.offset > nc.last_id + 1 {
            // A gap: read it back before delivering anything newer.
            let since = nc.last_id;
            nc.repairing = Some(vec![p]);
            let n = nc.name.clone();
            drop(g);
            return self.repair(n, since);
        }
        if nc.epoch.is_none() {
            nc.epoch = Some(Arc::from(String::from_utf8_lossy(&p.epoch).as_ref()));
        }
        nc.last_id = p.offset;
        let (mask, n) = (nc.workers, nc.name.clone());
        drop(g);
        if let Some(m) = self.message(&n, p.offset, &p.payload) {
            self.send(mask, &|| Note::Publish(m.clone()));
        }
    }

    /// After a reconnect: every channel of the shard reads what it may have missed.
    fn repair_shard(self: &Arc<Self>, shard: usize) {
        let mut todo = Vec::new();
        for m in &self.chans {
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            for nc in g.values_mut() {
                if self.shard_of(&nc.name) == shard
                    && nc.state == SubState::Live
                    && nc.epoch.is_some()
                    && nc.repairing.is_none()
                {
                    nc.repairing = Some(Vec::new());
                    todo.push((nc.name.clone(), nc.last_id));
                }
            }
        }
        for (name, since) in todo {
            self.repair(name, since);
        }
    }

    /// Read a channel's history after `since` and deliver what the node has not, then what
    /// waited meanwhile.
    fn repair(self: &Arc<Self>, name: Arc<str>, since: u64) {
        let me = self.clone();
        let n2 = name.clone();
        self.read(
            &name,
            Some(since),
            usize::MAX,
            Box::new(move |d| {
                let read = match d {
                    Done::History(Ok(r)) => Some(r),
                    Done::History(Err(e)) => {
                        log::warn!("redis engine: reading back a gap of {n2}: {e}");
                        None
                    }
                    _ => None,
                };
                me.repaired(&n2, since, read);
            }),
        );
    }

    fn repaired(self: &Arc<Self>, name: &str, since: u64, read: Option<HistoryRead>) {
        let mut g = self.lock(name);
        let Some(nc) = g.get_mut(name) else { return };
        let waiting = nc.repairing.take().unwrap_or_default();
        let mask = nc.workers;
        let n = nc.name.clone();
        let mut out: Vec<Arc<Message>> = Vec::new();
        let mut lost = false;
        let mut reset = false;
        match read {
            Some(r) => {
                if nc.epoch.as_ref().is_some_and(|e| *e != r.epoch) {
                    reset = true;
                    nc.epoch = Some(r.epoch.clone());
                    nc.last_id = 0;
                } else if r.missed {
                    lost = true;
                }
                for m in r.messages {
                    if m.id > nc.last_id {
                        nc.last_id = m.id;
                        out.push(m);
                    }
                }
            }
            None => lost = true,
        }
        for p in waiting {
            let same_epoch = nc.epoch.as_ref().is_some_and(|e| *e.as_bytes() == *p.epoch);
            if same_epoch && p.offset > nc.last_id {
                if p.offset > nc.last_id + 1 && !reset {
                    lost = true;
                }
                nc.last_id = p.offset;
                if let Some(m) = self.message(&n, p.offset, &p.payload) {
                    out.push(m);
                }
            }
        }
        drop(g);
        if reset || lost {
            log::warn!("redis engine: channel {n}: publications after {since} could not all be read back");
            self.send(mask, &|| Note::Lost { channel: n.clone(), reset });
        }
        for m in out {
            self.send(mask, &|| Note::Publish(m.clone()));
        }
    }

    fn on_event(&self, name: &str, payload: &Bytes) {
        let Some(len) = payload.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()) else { return };
        let len = u32::from_be_bytes(len) as usize;
        let (Some(client), Some(json)) = (payload.get(5..5 + len), payload.get(5 + len..)) else { return };
        let g = self.lock(name);
        let Some(nc) = g.get(name) else { return };
        let ev = Arc::new(Event {
            channel: nc.name.clone(),
            json: Bytes::copy_from_slice(json),
            client: Arc::from(String::from_utf8_lossy(client).as_ref()),
        });
        let mask = nc.workers;
        drop(g);
        self.send(mask, &|| Note::Event(ev.clone()));
    }

    fn on_control(&self, payload: &[u8]) {
        if let Some(rest) = payload.strip_prefix(b"x") {
            return self.on_emulation(rest);
        }
        // `u` + node id + `\n` + the command as JSON (published as `0::u...`).
        let Some(rest) = payload.strip_prefix(b"u") else { return };
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else { return };
        if rest[..nl] == *self.set.node.as_bytes() {
            return; // this node's own: delivered locally already
        }
        let Some(cmd) = user_cmd_from_json(&rest[nl + 1..]) else {
            log::warn!("redis engine: undecodable control message");
            return;
        };
        let cmd = Arc::new(cmd);
        for i in &self.inboxes {
            i.send(Note::User(cmd.clone()));
        }
    }

    /// `x` + node id + `\n` + session + `\n` + command: an `/emulation` request made on
    /// another node for a session of this one.
    fn on_emulation(&self, rest: &[u8]) {
        let mut parts = rest.splitn(3, |&b| b == b'\n');
        let (Some(node), Some(session), Some(data)) = (parts.next(), parts.next(), parts.next()) else { return };
        if node != self.set.node.as_bytes() {
            return;
        }
        let Ok(session) = std::str::from_utf8(session) else { return };
        let worker = session.strip_prefix('w').and_then(|s| s.split('.').next()).and_then(|w| w.parse::<usize>().ok());
        if let Some(inbox) = worker.and_then(|w| self.inboxes.get(w)) {
            inbox.send(Note::Emulation { session: Arc::from(session), data: Bytes::copy_from_slice(data) });
        }
    }

    fn presence_entry(user: &str, info: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + user.len() + info.len());
        v.extend_from_slice(&(user.len() as u32).to_be_bytes());
        v.extend_from_slice(user.as_bytes());
        v.extend_from_slice(info);
        v
    }

    fn presence_add_redis(self: &Arc<Self>, channel: &str, client: &str, user: &str, info: &[u8]) {
        self.presence_add_then(channel, client, user, info, Box::new(log_failure("presence add")));
    }

    fn presence_add_then(self: &Arc<Self>, channel: &str, client: &str, user: &str, info: &[u8], done: Answered) {
        let k = Keys::of(&self.set.prefix, channel);
        let args = vec![
            b"EVAL".to_vec(),
            script::PRESENCE_ADD.as_bytes().to_vec(),
            b"2".to_vec(),
            k.presence.into_bytes(),
            k.presence_exp.into_bytes(),
            client.as_bytes().to_vec(),
            Self::presence_entry(user, info),
            self.set.presence_ttl_s.max(1).to_string().into_bytes(),
        ];
        self.run(self.shard_of(channel), args, done);
    }
}

fn log_failure(what: &'static str) -> impl FnOnce(Result<Value, String>) + Send {
    move |r| match r {
        Ok(Value::Error(e)) => log::warn!("redis engine: {what}: {}", String::from_utf8_lossy(&e)),
        Err(e) => log::warn!("redis engine: {what}: {e}"),
        Ok(_) => {}
    }
}

/// The IO before [`RedisEngine::set_io`]: everything fails.
struct NoIo;

impl Io for NoIo {
    fn command(&self, _: usize, _: Vec<Vec<u8>>, done: Answered) {
        done(Err("the Redis driver is not started".into()))
    }
    fn subscribe(&self, _: usize, _: &[u8], done: Option<Subscribed>) {
        if let Some(d) = done {
            d(Err("the Redis driver is not started".into()))
        }
    }
    fn unsubscribe(&self, _: usize, _: &[u8]) {}
}

fn user_cmd_json(cmd: &UserCmd) -> Vec<u8> {
    let v = match cmd {
        UserCmd::Subscribe { user, channel } => serde_json::json!({"t": "subscribe", "user": user, "channel": channel}),
        UserCmd::Unsubscribe { user, channel } => {
            serde_json::json!({"t": "unsubscribe", "user": user, "channel": channel})
        }
        UserCmd::Disconnect { user, code, reason } => {
            serde_json::json!({"t": "disconnect", "user": user, "code": code, "reason": reason})
        }
        UserCmd::Refresh { user, expire_at, expired } => {
            serde_json::json!({"t": "refresh", "user": user, "expire_at": expire_at, "expired": expired})
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

fn user_cmd_from_json(b: &[u8]) -> Option<UserCmd> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Some(match v.get("t")?.as_str()? {
        "subscribe" => UserCmd::Subscribe { user: s("user")?, channel: s("channel")? },
        "unsubscribe" => UserCmd::Unsubscribe { user: s("user")?, channel: s("channel")? },
        "disconnect" => UserCmd::Disconnect {
            user: s("user")?,
            code: u16::try_from(v.get("code")?.as_u64()?).ok()?,
            reason: s("reason").unwrap_or_default(),
        },
        "refresh" => UserCmd::Refresh {
            user: s("user")?,
            expire_at: v.get("expire_at").and_then(|x| x.as_i64()),
            expired: v.get("expired").and_then(|x| x.as_bool()).unwrap_or(false),
        },
        _ => return None,
    })
}

impl Engine for RedisEngine {
    fn submit(&self, ops: Vec<Op>, _now_ms: u64, reply: Reply) -> Option<Vec<Done>> {
        if ops.is_empty() {
            return Some(Vec::new());
        }
        let inbox = self.inner.inboxes.get(reply.worker)?.clone();
        let n = ops.len();
        let batch = Arc::new(Batch {
            reply,
            inbox,
            slots: Mutex::new((0..n).map(|_| None).collect()),
            left: AtomicUsize::new(n),
        });
        for (i, op) in ops.into_iter().enumerate() {
            let b = batch.clone();
            let done: Box<dyn FnOnce(Done) + Send> = Box::new(move |d| b.put(i, d));
            match op {
                Op::Publish { channel, data, meta } => self.inner.publish(&channel, data, meta, done),
                Op::History { channel, since, limit } => self.inner.read(&channel, since, limit, done),
                Op::Subscribe { channel, worker, since } => self.inner.subscribe(&channel, worker, since, done),
                Op::PresenceAdd { channel, client, user, info } => {
                    if let Ok(mut p) = self.inner.presence.lock() {
                        p.entry(channel.clone()).or_default().insert(client.clone(), (user.clone(), info.clone()));
                    }
                    self.inner.presence_add_then(
                        &channel,
                        &client,
                        &user,
                        &info,
                        Box::new(move |r| {
                            let r = match r {
                                Ok(Value::Error(e)) => Err(err(String::from_utf8_lossy(&e))),
                                Ok(_) => Ok(()),
                                Err(e) => Err(err(e)),
                            };
                            done(Done::Added(r))
                        }),
                    );
                }
                Op::Presence { channel } => {
                    let k = Keys::of(&self.inner.set.prefix, &channel);
                    let args = vec![
                        b"EVAL".to_vec(),
                        script::PRESENCE_GET.as_bytes().to_vec(),
                        b"2".to_vec(),
                        k.presence.into_bytes(),
                        k.presence_exp.into_bytes(),
                    ];
                    self.inner.run(
                        self.inner.shard_of(&channel),
                        args,
                        Box::new(move |r| done(Done::Presence(presence_entries(r)))),
                    );
                }
            }
        }
        None
    }

    fn immediate(&self) -> bool {
        false
    }

    fn publish(&self, channel: &str, data: Bytes, meta: PubMeta, _now_ms: u64) -> (u64, Arc<str>) {
        // Fire and forget (callers that need the answer use `submit`).
        self.inner.publish(channel, data, meta, Box::new(|_| {}));
        (0, Arc::from(""))
    }

    fn subscribe(&self, channel: &str, worker: usize, since: Option<u64>, _now_ms: u64) -> HistoryRead {
        // Counted now; the history comes through `submit`.
        let _ = since;
        self.inner.subscribe(channel, worker, None, Box::new(|_| {}));
        HistoryRead { messages: Vec::new(), last_id: 0, epoch: Arc::from(""), missed: false }
    }

    fn unsubscribe(&self, channel: &str, worker: usize, last_on_worker: bool) {
        self.inner.unsubscribe(channel, worker, last_on_worker);
    }

    fn history(&self, _channel: &str, _since: Option<u64>, _limit: usize, _now_ms: u64) -> HistoryRead {
        // Reads go through `submit`; nothing is held locally.
        HistoryRead { messages: Vec::new(), last_id: 0, epoch: Arc::from(""), missed: false }
    }

    fn history_remove(&self, channel: &str) {
        let k = Keys::of(&self.inner.set.prefix, channel);
        let args = vec![b"DEL".to_vec(), k.stream.into_bytes()];
        self.inner.run(self.inner.shard_of(channel), args, Box::new(log_failure("history remove")));
    }

    fn channel_event(&self, channel: &str, note: &dyn Fn() -> Note) {
        // Through the channel's pub/sub, so every node's subscribers get it (this node's
        // too: it is subscribed while it has subscribers there).
        let Note::Event(ev) = note() else { return };
        let mut payload = b"0::e".to_vec();
        payload.extend_from_slice(&(ev.client.len() as u32).to_be_bytes());
        payload.extend_from_slice(ev.client.as_bytes());
        payload.extend_from_slice(&ev.json);
        let pubsub = Keys::of(&self.inner.set.prefix, channel).pubsub;
        let args = vec![b"PUBLISH".to_vec(), pubsub.into_bytes(), payload];
        self.inner.run(self.inner.shard_of(channel), args, Box::new(log_failure("join/leave event")));
    }

    fn presence_add(&self, channel: &str, client: &str, user: &str, info: Bytes) {
        self.inner.presence_add_redis(channel, client, user, &info);
        if let Ok(mut p) = self.inner.presence.lock() {
            p.entry(channel.to_string()).or_default().insert(client.to_string(), (user.to_string(), info));
        }
    }

    fn presence_remove(&self, channel: &str, client: &str) {
        let k = Keys::of(&self.inner.set.prefix, channel);
        let args = vec![
            b"EVAL".to_vec(),
            script::PRESENCE_REMOVE.as_bytes().to_vec(),
            b"2".to_vec(),
            k.presence.into_bytes(),
            k.presence_exp.into_bytes(),
            client.as_bytes().to_vec(),
        ];
        self.inner.run(self.inner.shard_of(channel), args, Box::new(log_failure("presence remove")));
        if let Ok(mut p) = self.inner.presence.lock() {
            if let Some(m) = p.get_mut(channel) {
                m.remove(client);
                if m.is_empty() {
                    p.remove(channel);
                }
            }
        }
    }

    fn presence(&self, _channel: &str) -> Vec<(String, String, Bytes)> {
        // Reads go through `submit`.
        Vec::new()
    }

    fn sweep(&self, now_ms: u64) {
        // Refresh this node's presence entries at a third of their TTL, so they live while
        // the node does and expire within the TTL when it dies.
        let every = self.inner.set.presence_ttl_s * 1000 / 3;
        let last = self.inner.last_presence_refresh.load(Ordering::Relaxed);
        if now_ms < last + every {
            return;
        }
        self.inner.last_presence_refresh.store(now_ms, Ordering::Relaxed);
        let entries: Vec<(String, String, String, Bytes)> = match self.inner.presence.lock() {
            Ok(p) => p
                .iter()
                .flat_map(|(ch, m)| m.iter().map(move |(c, (u, i))| (ch.clone(), c.clone(), u.clone(), i.clone())))
                .collect(),
            Err(_) => return,
        };
        for (ch, client, user, info) in entries {
            self.inner.presence_add_redis(&ch, &client, &user, &info);
        }
    }

    fn counts(&self) -> (usize, usize) {
        let n = self.inner.chans.iter().map(|m| m.lock().map(|g| g.len()).unwrap_or(0)).sum();
        (n, 0)
    }

    fn subscribers(&self, channel: &str) -> usize {
        self.inner.lock(channel).get(channel).map(|c| c.subscribers).unwrap_or(0)
    }

    fn channel_stats(&self) -> Vec<ChannelStat> {
        let mut out = Vec::new();
        for m in &self.inner.chans {
            let g = m.lock().unwrap_or_else(|e| e.into_inner());
            for nc in g.values() {
                out.push(ChannelStat {
                    name: nc.name.to_string(),
                    subscribers: nc.subscribers,
                    workers: nc.workers.count_ones(),
                    stored: 0,
                    last_id: nc.last_id,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn heartbeat(&self, node: &str, info: Bytes) {
        let p = &self.inner.set.prefix;
        let args = vec![
            b"EVAL".to_vec(),
            script::NODES.as_bytes().to_vec(),
            b"2".to_vec(),
            format!("{p}.nodes").into_bytes(),
            format!("{p}.nodes.info").into_bytes(),
            node.as_bytes().to_vec(),
            info.to_vec(),
            NODE_TTL_S.to_string().into_bytes(),
        ];
        let me = self.inner.clone();
        let this = node.to_string();
        self.inner.run(
            0,
            args,
            Box::new(move |r| {
                let list = match r {
                    Ok(v) => v.as_array().map(|a| a.to_vec()).unwrap_or_default(),
                    Err(e) => {
                        log::debug!("redis engine: heartbeat: {e}");
                        return;
                    }
                };
                let mut out = Vec::new();
                for pair in list.chunks(2) {
                    if let (Some(n), Some(i)) =
                        (pair.first().and_then(Value::as_bytes), pair.get(1).and_then(Value::as_bytes))
                    {
                        let n = String::from_utf8_lossy(n).into_owned();
                        if n != this {
                            out.push((n, Bytes::copy_from_slice(i)));
                        }
                    }
                }
                if let Ok(mut nodes) = me.nodes.lock() {
                    *nodes = out;
                }
            }),
        );
    }

    fn nodes(&self) -> Vec<(String, Bytes)> {
        self.inner.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn forward_emulation(&self, node: &str, session: &str, data: Bytes) -> bool {
        if node.contains('\n') || session.contains('\n') {
            return false;
        }
        let mut payload = Vec::with_capacity(8 + node.len() + session.len() + data.len());
        payload.extend_from_slice(b"0::x");
        payload.extend_from_slice(node.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(session.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(&data);
        let args = vec![b"PUBLISH".to_vec(), self.inner.control.clone().into_bytes(), payload];
        self.inner.run(0, args, Box::new(log_failure("emulation forward")));
        true
    }

    fn broadcast(&self, note: &dyn Fn() -> Note) {
        for i in &self.inner.inboxes {
            i.send(note());
        }
        // API commands for users reach the other nodes through the control channel.
        if let Note::User(cmd) = note() {
            let mut payload = b"0::u".to_vec();
            payload.extend_from_slice(self.inner.set.node.as_bytes());
            payload.push(b'\n');
            payload.extend_from_slice(&user_cmd_json(&cmd));
            let args = vec![b"PUBLISH".to_vec(), self.inner.control.clone().into_bytes(), payload];
            self.inner.run(0, args, Box::new(log_failure("control message")));
        }
    }
}

fn presence_entries(r: Result<Value, String>) -> Result<Vec<(String, String, Bytes)>, EngineError> {
    let v = r.map_err(err)?;
    if let Value::Error(e) = &v {
        return Err(err(String::from_utf8_lossy(e)));
    }
    let list = v.as_array().ok_or_else(|| err("presence: unexpected answer"))?;
    let mut out = Vec::with_capacity(list.len() / 2);
    for pair in list.chunks(2) {
        let (Some(c), Some(e)) = (pair.first().and_then(Value::as_bytes), pair.get(1).and_then(Value::as_bytes)) else {
            continue;
        };
        let Some(n) = e.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else { continue };
        let n = u32::from_be_bytes(n) as usize;
        let (Some(user), Some(info)) = (e.get(4..4 + n), e.get(4 + n..)) else { continue };
        out.push((
            String::from_utf8_lossy(c).into_owned(),
            String::from_utf8_lossy(user).into_owned(),
            Bytes::copy_from_slice(info),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let plain = Bytes::from(encode_payload(b"{\"a\":1}", &PubMeta::default()));
        assert_eq!(decode_payload(&plain), Some((Bytes::from_static(b"{\"a\":1}"), None, None)));
        let meta = PubMeta { info: Some(Bytes::from_static(b"{\"user\":\"u\"}")), ..Default::default() };
        let m = Bytes::from(encode_payload(b"\"x\"", &meta));
        let (d, i, t) = decode_payload(&m).unwrap();
        assert_eq!((&d[..], i.as_deref(), t), (&b"\"x\""[..], Some(&b"{\"user\":\"u\"}"[..]), None));
        assert_eq!(decode_payload(&Bytes::from_static(b"m\0\0\0\x09ab")), None, "truncated");
        assert_eq!(decode_payload(&Bytes::from_static(b"")), None);
    }

    #[test]
    fn user_commands_round_trip() {
        let c = UserCmd::Disconnect { user: "u".into(), code: 4000, reason: "r".into() };
        match user_cmd_from_json(&user_cmd_json(&c)) {
            Some(UserCmd::Disconnect { user, code, reason }) => {
                assert_eq!((user.as_str(), code, reason.as_str()), ("u", 4000, "r"))
            }
            _ => panic!("round trip"),
        }
        assert!(user_cmd_from_json(b"{\"t\":\"nope\"}").is_none());
        assert!(user_cmd_from_json(b"junk").is_none());
    }
}
