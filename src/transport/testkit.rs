//! Unit-test support: a worker environment and sessions without sockets or threads.
//!
//! Owns: [`Kit`], which builds a [`Shared`] with the memory engine (inboxes whose notes the
//! test drains by hand), an [`Env`] with a fake clock, and sessions in a plain slab. Tests
//! feed bytes with [`Kit::input`], move the clock with [`Kit::advance`], fire timers with
//! [`Kit::timer`], deliver the engine's notes with [`Kit::pump`], and read what a session
//! would have written with [`Kit::output`]. Compiled for tests only.

use super::env::{Env, Shared, Stats};
use super::session::Session;
use crate::config::Config;
use crate::hub::bus::{Inbox, Note};
use crate::hub::local::ConnId;
use crate::hub::Engine;
use slab::Slab;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// A worker environment with sessions and no IO.
pub struct Kit {
    /// The environment handlers get.
    pub env: Env,
    /// Sessions by key.
    pub sessions: Slab<Session>,
    inbox: Receiver<Note>,
    deferred: Option<Arc<Deferred>>,
    backend: Arc<FakeBackend>,
}

/// Proxy calls kept until the test answers them ([`Kit::proxy_answer`]), as the proxy
/// threads would through the worker's inbox.
#[derive(Default)]
pub struct FakeBackend {
    calls: std::sync::Mutex<Vec<(super::env::Call, crate::hub::Reply)>>,
    /// Refuse calls as a full queue would.
    pub busy: std::sync::atomic::AtomicBool,
}

impl super::env::Backend for FakeBackend {
    fn call(&self, call: super::env::Call, reply: crate::hub::Reply) -> Result<(), crate::proto::proxy::Failure> {
        if self.busy.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::proto::proxy::Failure::Busy);
        }
        self.calls.lock().expect("lock").push((call, reply));
        Ok(())
    }
    fn in_flight(&self) -> usize {
        self.calls.lock().expect("lock").len()
    }
}

/// An engine that answers later, as the Redis engine does: [`Engine::submit`] keeps the
/// operations until the test calls [`Kit::answer`], which runs them on a memory engine.
pub struct Deferred {
    inner: crate::hub::MemoryEngine,
    queued: std::sync::Mutex<Vec<(Vec<crate::hub::Op>, u64, crate::hub::Reply)>>,
}

impl Engine for Deferred {
    fn submit(&self, ops: Vec<crate::hub::Op>, now_ms: u64, reply: crate::hub::Reply) -> Option<Vec<crate::hub::Done>> {
        self.queued.lock().expect("lock").push((ops, now_ms, reply));
        None
    }
    fn immediate(&self) -> bool {
        false
    }
    fn publish(&self, c: &str, d: bytes::Bytes, m: crate::hub::PubMeta, now: u64) -> (u64, Arc<str>) {
        self.inner.publish(c, d, m, now)
    }
    fn subscribe(&self, c: &str, w: usize, s: Option<u64>, now: u64) -> crate::hub::HistoryRead {
        self.inner.subscribe(c, w, s, now)
    }
    fn unsubscribe(&self, c: &str, w: usize, last: bool) {
        self.inner.unsubscribe(c, w, last)
    }
    fn history(&self, c: &str, s: Option<u64>, l: usize, now: u64) -> crate::hub::HistoryRead {
        self.inner.history(c, s, l, now)
    }
    fn history_remove(&self, c: &str) {
        self.inner.history_remove(c)
    }
    fn channel_event(&self, c: &str, n: &dyn Fn() -> Note) {
        self.inner.channel_event(c, n)
    }
    fn presence_add(&self, c: &str, k: &str, u: &str, i: bytes::Bytes) {
        self.inner.presence_add(c, k, u, i)
    }
    fn presence_remove(&self, c: &str, k: &str) {
        self.inner.presence_remove(c, k)
    }
    fn presence(&self, c: &str) -> Vec<(String, String, bytes::Bytes)> {
        self.inner.presence(c)
    }
    fn sweep(&self, now: u64) {
        self.inner.sweep(now)
    }
    fn counts(&self) -> (usize, usize) {
        self.inner.counts()
    }
    fn subscribers(&self, c: &str) -> usize {
        self.inner.subscribers(c)
    }
    fn channel_stats(&self) -> Vec<crate::hub::engine::ChannelStat> {
        self.inner.channel_stats()
    }
    fn broadcast(&self, n: &dyn Fn() -> Note) {
        self.inner.broadcast(n)
    }
}

impl Kit {
    /// A kit for `cfg` (one worker).
    pub fn new(cfg: Config) -> Kit {
        Kit::build(cfg, false)
    }

    /// A kit whose engine answers only when the test calls [`Kit::answer`].
    pub fn deferred(json: &str) -> Kit {
        Kit::build(Config::from_json(json).expect("test config"), true)
    }

    fn build(cfg: Config, deferred: bool) -> Kit {
        let cfg = Arc::new(cfg);
        let (inbox, rx) = Inbox::new();
        let pc = cfg.clone();
        let policy: crate::hub::engine::Policy = Arc::new(move |ch: &str| pc.history_policy(ch));
        let memory = crate::hub::MemoryEngine::with_policy(vec![inbox.clone()], policy, 7);
        let mut later = None;
        let engine: Arc<dyn Engine> = if deferred {
            let d = Arc::new(Deferred { inner: memory, queued: Default::default() });
            later = Some(d.clone());
            d
        } else {
            Arc::new(memory)
        };
        let backend = Arc::new(FakeBackend::default());
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            engine,
            inboxes: vec![inbox],
            stats: Stats::default(),
            node_id: "node".into(),
            users: Default::default(),
            gauges: vec![Default::default()],
            // No fetcher: a JWKS set stays empty (tokens get the temporary error).
            jwks: super::centrifugo::client::jwks_cells(&cfg).into_iter().map(|(u, c, _)| (u, c)).collect(),
            proxies: crate::config::proxy::ProxySet::new(&cfg),
            backend: Some(backend.clone() as Arc<dyn super::env::Backend>),
        });
        let env = Env::new(0, shared, 1, 1_000, 1_700_000_000);
        Kit { env, sessions: Slab::new(), inbox: rx, deferred: later, backend }
    }

    /// The proxy calls waiting for an answer: (kind, body as JSON).
    pub fn proxy_calls(&self) -> Vec<(crate::config::proxy::Kind, serde_json::Value)> {
        let calls = self.backend.calls.lock().expect("lock");
        calls.iter().map(|(c, _)| (c.kind, serde_json::from_slice(&c.body).expect("JSON body"))).collect()
    }

    /// The headers of the oldest waiting proxy call.
    pub fn proxy_headers(&self) -> Vec<(String, String)> {
        self.backend.calls.lock().expect("lock").first().map(|(c, _)| c.headers.clone()).unwrap_or_default()
    }

    /// Answer the oldest waiting proxy call with `answer` (a backend's JSON body, decoded
    /// as the proxy threads do, or their failure), through the worker's inbox path.
    pub fn proxy_answer(&mut self, answer: Result<&str, crate::proto::proxy::Failure>) {
        let (_, reply) = {
            let mut calls = self.backend.calls.lock().expect("lock");
            assert!(!calls.is_empty(), "no proxy call waits");
            calls.remove(0)
        };
        let r = answer.and_then(|b| crate::proto::proxy::decode(b.as_bytes())).map(Box::new);
        let mut done = Vec::new();
        super::on_answer(&mut self.env, &mut self.sessions, reply.conn, vec![crate::hub::Done::Proxy(r)], &mut done);
        for id in done {
            if let Some(s) = self.sessions.get_mut(id.key as usize) {
                super::reprocess(&mut self.env, s);
            }
        }
        self.settle();
    }

    /// Make the fake proxy threads refuse calls (a full queue).
    pub fn proxy_busy(&self, busy: bool) {
        self.backend.busy.store(busy, std::sync::atomic::Ordering::Relaxed);
    }

    /// Operations the deferred engine holds.
    pub fn queued(&self) -> usize {
        self.deferred.as_ref().map(|d| d.queued.lock().expect("lock").len()).unwrap_or(0)
    }

    /// Let the deferred engine answer everything it holds (in order, and what that makes
    /// sessions ask next), as its answers would arrive in the worker's inbox.
    pub fn answer(&mut self) {
        let Some(d) = self.deferred.clone() else { return };
        loop {
            let queued = std::mem::take(&mut *d.queued.lock().expect("lock"));
            if queued.is_empty() {
                break;
            }
            for (ops, now, reply) in queued {
                let done = d.inner.submit(ops, now, reply).expect("memory answers at once");
                let mut fin = Vec::new();
                super::on_answer(&mut self.env, &mut self.sessions, reply.conn, done, &mut fin);
                for id in fin {
                    super::reprocess(&mut self.env, &mut self.sessions[id.key as usize]);
                }
                self.pump();
            }
        }
        self.settle();
    }

    /// A kit with the configuration a JSON text gives (panics on a bad config: tests only).
    pub fn with_json(json: &str) -> Kit {
        Kit::new(Config::from_json(json).expect("test config"))
    }

    /// Open a session from 127.0.0.1; returns its key.
    pub fn open(&mut self) -> usize {
        let e = self.sessions.vacant_entry();
        let key = e.key();
        let id = ConnId { key: key as u32, gen: 1 };
        e.insert(Session::new(id, "127.0.0.1:40000".parse().expect("addr"), self.env.now_ms));
        key
    }

    /// The session at `key`.
    pub fn s(&mut self, key: usize) -> &mut Session {
        &mut self.sessions[key]
    }

    /// Bytes from the client, as the reactor would hand them over.
    pub fn input(&mut self, key: usize, bytes: &[u8]) {
        let mut buf = bytes.to_vec();
        // One read per loop turn, as the reactor grants it.
        self.env.budget = super::env::TURN_BUDGET;
        super::on_bytes(&mut self.env, &mut self.sessions[key], &mut buf);
        self.settle();
    }

    /// Everything queued for the session so far, as the socket would have received it.
    pub fn output(&mut self, key: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut written = 0;
        let mut scratch = Vec::new();
        let s = &mut self.sessions[key];
        s.out.flush(&mut out, &mut written, &mut scratch).expect("flush into a Vec");
        s.dirty = false;
        out
    }

    /// Read everything as a fast client would: flush, and let a paced replay refill as the
    /// reactor does after each drain, until nothing more comes. Returns what was written
    /// and the most bytes the session ever held queued meanwhile.
    pub fn read_all(&mut self, key: usize) -> (Vec<u8>, usize) {
        let mut all = Vec::new();
        let mut peak = self.sessions[key].out.len();
        loop {
            let chunk = self.output(key);
            let more = self.sessions[key].replay.is_some();
            super::on_drained(&mut self.env, &mut self.sessions[key]);
            self.settle();
            peak = peak.max(self.sessions[key].out.len());
            if chunk.is_empty() && !more {
                return (all, peak);
            }
            all.extend_from_slice(&chunk);
        }
    }

    /// Output as text (lossy).
    pub fn text(&mut self, key: usize) -> String {
        String::from_utf8_lossy(&self.output(key)).into_owned()
    }

    /// Move the clock forward.
    pub fn advance(&mut self, ms: u64) {
        self.env.now_ms += ms;
        self.env.unix_s += (ms / 1000) as i64;
    }

    /// Fire the session's timer (the handler checks its own deadline).
    pub fn timer(&mut self, key: usize) {
        super::on_timer(&mut self.env, &mut self.sessions[key]);
        self.settle();
    }

    /// Deliver every note the engine sent this worker (publications, events, API commands).
    pub fn pump(&mut self) {
        while let Ok(note) = self.inbox.try_recv() {
            let mut done = Vec::new();
            super::on_note(&mut self.env, &mut self.sessions, &note, &mut done);
            for id in done {
                super::reprocess(&mut self.env, &mut self.sessions[id.key as usize]);
            }
        }
        self.settle();
    }

    /// Whether the session was closed (killed, or its graceful close has begun).
    pub fn closed(&mut self, key: usize) -> bool {
        let s = &self.sessions[key];
        s.dead || s.close_after_flush
    }

    /// Forget the effect lists (a test has no reactor to apply them).
    fn settle(&mut self) {
        self.env.fx.flush.clear();
        self.env.fx.pressure.clear();
        let closed = std::mem::take(&mut self.env.fx.close);
        for key in closed {
            if let Some(s) = self.sessions.get_mut(key) {
                super::on_close(&mut self.env, s);
            }
        }
    }

    /// Publish `body` on `channel` as the backend would (`POST /publish/`).
    pub fn publish(&mut self, channel: &str, body: &str) -> u64 {
        let data = crate::hub::envelope::json_data(body.as_bytes());
        let (id, _) = self.env.shared.engine.publish(channel, data, Default::default(), self.env.now_ms);
        self.pump();
        id
    }
}
