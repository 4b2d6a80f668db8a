//! The engine seam and the embedded in-memory engine.
//!
//! Owns: per-channel id sequences, history rings, and which workers have subscribers on
//! which channel. Called by transports (publish, subscribe, history) and the main thread
//! (sweep). A publish is sequenced exactly once: the channel's shard lock is held while its
//! id is assigned, its history appended and the message handed to the workers' inboxes, so
//! every worker receives one channel's messages in id order. Delivery to connections happens
//! in the workers, with no lock. Must never block on IO while holding a shard lock.

use super::bus::{Inbox, Note};
use super::envelope::envelope;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// A sequenced message, shared by every worker and history.
pub struct Message {
    pub channel: Arc<str>,
    pub id: u64,
    /// `{"id":N,"channel":"CH","data":PAYLOAD}`, encoded once.
    pub envelope: Bytes,
    /// The raw published body.
    pub body: Bytes,
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
    /// True when `since` is older than the history holds (or from a previous life of the
    /// channel): the client missed messages.
    pub missed: bool,
}

/// What every engine offers the hub (memory now; Redis later).
pub trait Engine: Send + Sync {
    /// Sequence, store and fan out one message; returns its id.
    fn publish(&self, channel: &str, body: Bytes, now_ms: u64) -> u64;
    /// Register `worker` as having subscribers on `channel` and read history after `since`
    /// in the same step, so no message falls between the two.
    fn subscribe(&self, channel: &str, worker: usize, since: Option<u64>, now_ms: u64) -> HistoryRead;
    /// `worker` has no subscribers left on `channel`.
    fn unsubscribe(&self, channel: &str, worker: usize);
    /// Messages after `since` (all kept messages when None), oldest first, at most `limit`
    /// newest of them.
    fn history(&self, channel: &str, since: Option<u64>, limit: usize, now_ms: u64) -> HistoryRead;
    /// Drop expired history and channels with neither subscribers nor history.
    fn sweep(&self, now_ms: u64);
    /// (channels, messages held in history).
    fn counts(&self) -> (usize, usize);
    /// Per-channel (name, workers subscribed, messages held, last id), for `/stats`.
    fn channel_stats(&self) -> Vec<(String, u32, usize, u64)>;
}

struct Chan {
    last_id: u64,
    history: VecDeque<Arc<Message>>,
    /// Bit i set: worker i has subscribers.
    workers: u64,
}

/// The embedded in-memory engine: channels sharded over mutexes by name hash.
pub struct MemoryEngine {
    shards: Vec<Mutex<HashMap<Arc<str>, Chan>>>,
    inboxes: Vec<Arc<Inbox>>,
    history_size: usize,
    history_ttl_ms: u64,
    seq: std::sync::atomic::AtomicU64,
}

const SHARDS: usize = 64;

impl MemoryEngine {
    /// An engine feeding `inboxes` (index = worker id; at most 64 workers).
    pub fn new(inboxes: Vec<Arc<Inbox>>, history_size: usize, history_ttl_ms: u64) -> Self {
        assert!(inboxes.len() <= 64, "at most 64 workers");
        MemoryEngine {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            inboxes,
            history_size,
            history_ttl_ms,
            seq: Default::default(),
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

    fn expire(&self, c: &mut Chan, now_ms: u64) {
        let ttl = self.history_ttl_ms;
        while c.history.front().is_some_and(|m| m.time_ms + ttl <= now_ms) {
            c.history.pop_front();
        }
    }

    fn read(c: &Chan, since: Option<u64>, limit: usize) -> HistoryRead {
        let first = c.history.front().map(|m| m.id).unwrap_or(c.last_id + 1);
        let (from, missed) = match since {
            // A `since` beyond the newest id comes from a previous life of the channel.
            Some(s) if s > c.last_id => (0, c.last_id > 0 || s > 0),
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
        HistoryRead { messages: msgs, last_id: c.last_id, missed }
    }
}

impl Engine for MemoryEngine {
    fn publish(&self, channel: &str, body: Bytes, now_ms: u64) -> u64 {
        let mut shard = self.shard(channel);
        let c = match shard.get_mut(channel) {
            Some(c) => c,
            None => {
                shard.entry(Arc::from(channel)).or_insert(Chan { last_id: 0, history: VecDeque::new(), workers: 0 })
            }
        };
        c.last_id += 1;
        let id = c.last_id;
        let name = c.history.back().map(|m| m.channel.clone()).unwrap_or_else(|| Arc::from(channel));
        let msg = Arc::new(Message {
            envelope: envelope(id, channel, &body),
            channel: name,
            id,
            body,
            time_ms: now_ms,
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        if self.history_size > 0 {
            if c.history.len() >= self.history_size {
                c.history.pop_front();
            }
            c.history.push_back(msg.clone());
        }
        self.expire(c, now_ms);
        let mut mask = c.workers;
        while mask != 0 {
            let w = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.inboxes[w].send(Note::Publish(msg.clone()));
        }
        id
    }

    fn subscribe(&self, channel: &str, worker: usize, since: Option<u64>, now_ms: u64) -> HistoryRead {
        let mut shard = self.shard(channel);
        let c = shard.entry(Arc::from(channel)).or_insert(Chan { last_id: 0, history: VecDeque::new(), workers: 0 });
        c.workers |= 1 << worker;
        self.expire(c, now_ms);
        match since {
            Some(_) => Self::read(c, since, usize::MAX),
            None => HistoryRead { messages: Vec::new(), last_id: c.last_id, missed: false },
        }
    }

    fn unsubscribe(&self, channel: &str, worker: usize) {
        let mut shard = self.shard(channel);
        if let Some(c) = shard.get_mut(channel) {
            c.workers &= !(1 << worker);
            if c.workers == 0 && c.history.is_empty() {
                shard.remove(channel);
            }
        }
    }

    fn history(&self, channel: &str, since: Option<u64>, limit: usize, now_ms: u64) -> HistoryRead {
        let mut shard = self.shard(channel);
        match shard.get_mut(channel) {
            Some(c) => {
                self.expire(c, now_ms);
                Self::read(c, since, limit)
            }
            None => HistoryRead { messages: Vec::new(), last_id: 0, missed: since.is_some_and(|s| s > 0) },
        }
    }

    fn sweep(&self, now_ms: u64) {
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, c| {
                self.expire(c, now_ms);
                c.workers != 0 || !c.history.is_empty()
            });
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

    fn channel_stats(&self) -> Vec<(String, u32, usize, u64)> {
        let mut out = Vec::new();
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(|e| e.into_inner());
            for (name, c) in shard.iter() {
                out.push((name.to_string(), c.workers.count_ones(), c.history.len(), c.last_id));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(size: usize) -> (MemoryEngine, std::sync::mpsc::Receiver<Note>) {
        let (inbox, rx) = Inbox::new();
        (MemoryEngine::new(vec![inbox], size, 10_000), rx)
    }

    #[test]
    fn ids_history_and_missed() {
        let (e, rx) = engine(3);
        for i in 0..5 {
            assert_eq!(e.publish("c", Bytes::from(format!("{i}")), 0), i + 1);
        }
        assert!(rx.try_recv().is_err(), "no subscriber worker: nothing sent");
        let h = e.history("c", Some(3), 100, 0);
        assert_eq!(h.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 5]);
        assert!(!h.missed);
        let h = e.history("c", Some(1), 100, 0);
        assert_eq!(h.messages.len(), 3);
        assert!(h.missed, "ids 2 fell out of the ring");
        let h = e.history("c", Some(2), 100, 0);
        assert!(!h.missed);
        let h = e.history("c", Some(99), 100, 0);
        assert!(h.missed && h.messages.len() == 3);
        let h = e.history("c", None, 2, 0);
        assert_eq!(h.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(e.history("nope", None, 10, 0).messages.len(), 0);
    }

    #[test]
    fn subscribe_feeds_inbox_and_ttl_sweeps() {
        let (e, rx) = engine(10);
        let h = e.subscribe("c", 0, None, 0);
        assert_eq!(h.last_id, 0);
        e.publish("c", Bytes::from_static(b"x"), 5);
        match rx.try_recv() {
            Ok(Note::Publish(m)) => {
                assert_eq!((m.id, &m.envelope[..]), (1, &br#"{"id":1,"channel":"c","data":"x"}"#[..]))
            }
            _ => panic!("expected a publish"),
        }
        e.unsubscribe("c", 0);
        assert_eq!(e.counts(), (1, 1));
        e.sweep(20_000);
        assert_eq!(e.counts(), (0, 0));
    }
}
