//! The cross-worker bus: one inbox per worker, a lock-free MPSC queue plus a `mio::Waker`.
//!
//! Owns: handing messages from whoever publishes (any worker, the main thread) to a worker.
//! A pending flag makes a burst of sends cost one wake-up; the worker drains the whole queue
//! at once. Must never block the sender.
//!
//! Why the queue is not bounded: every sender is another worker's event loop (or the main
//! thread), which must never block, and every note is a message already sequenced and
//! stored in history, so a full queue could only drop it — a silent gap for every
//! subscriber on that worker. What bounds the queue instead is upstream: publishes come
//! from HTTP requests and client frames, each bounded per connection and per loop turn, and
//! a worker drains its whole inbox every turn. `herald_worker_inbox_depth` in `/metrics`
//! shows the depth; a worker that cannot keep up shows there first.

use super::engine::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// A channel event other than a publication (Centrifugo join/leave), encoded once.
pub struct Event {
    pub channel: Arc<str>,
    /// The whole push as JSON text, e.g. `{"push":{"channel":"c","join":{"info":{...}}}}`.
    pub json: bytes::Bytes,
    /// The client whose join/leave this is.
    pub client: Arc<str>,
}

/// A server API command aimed at a user's connections, wherever they are.
pub enum UserCmd {
    Subscribe { user: String, channel: String },
    Unsubscribe { user: String, channel: String },
    Disconnect { user: String, code: u16, reason: String },
    Refresh { user: String, expire_at: Option<i64>, expired: bool },
}

/// What a worker can be told.
pub enum Note {
    /// A sequenced message for a channel this worker has (or had) subscribers on.
    Publish(Arc<Message>),
    /// A join/leave event.
    Event(Arc<Event>),
    /// A server API command for a user's connections.
    User(Arc<UserCmd>),
    /// Start the graceful drain.
    Shutdown,
}

/// The sending side of one worker's inbox, shared by all senders.
pub struct Inbox {
    // `Sender` is Sync since Rust 1.72: senders share it without a lock.
    tx: Sender<Note>,
    waker: std::sync::OnceLock<Arc<mio::Waker>>,
    pending: AtomicBool,
    depth: std::sync::atomic::AtomicUsize,
}

impl Inbox {
    /// A new inbox and its receiving end (kept by the worker).
    pub fn new() -> (Arc<Inbox>, Receiver<Note>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let inbox =
            Inbox { tx, waker: std::sync::OnceLock::new(), pending: AtomicBool::new(false), depth: Default::default() };
        (Arc::new(inbox), rx)
    }

    /// Install the worker's waker (once, when the worker's Poll exists).
    pub fn set_waker(&self, w: Arc<mio::Waker>) {
        let _ = self.waker.set(w);
    }

    /// Queue a note and wake the worker if it is not already due to drain.
    pub fn send(&self, n: Note) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(n).is_err() {
            return; // worker gone (shutting down)
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
        }
    }

    /// Called by the worker before draining: later sends wake it again.
    pub fn clear_pending(&self) {
        self.pending.store(false, Ordering::Release);
    }

    /// Notes taken off the queue (for the inbox-depth metric).
    pub fn taken(&self, n: usize) {
        self.depth.fetch_sub(n, Ordering::Relaxed);
    }

    /// Notes queued and not yet taken.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}
