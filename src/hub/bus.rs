//! The cross-worker bus: one inbox per worker, a lock-free MPSC queue plus a waker (the
//! epoll worker's `mio::Waker`, or the io_uring worker's eventfd: anything [`Wake`]).
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
    /// Channel the client joined or left; delivered to this worker's subscribers of it that
    /// asked for join/leave pushes.
    pub channel: Arc<str>,
    /// The whole push as JSON text, e.g. `{"push":{"channel":"c","join":{"info":{...}}}}`.
    pub json: bytes::Bytes,
    /// The client whose join/leave this is.
    pub client: Arc<str>,
}

/// A server API command aimed at a user's connections, wherever they are.
///
/// Built by the `/api` methods of the same names and broadcast to every worker; each acts
/// on the user's Centrifugo connections it holds (none: nothing happens).
pub enum UserCmd {
    /// Server-side subscribe: each connection of `user` subscribes to `channel` without a
    /// permission check and gets a `subscribe` push with the result.
    Subscribe {
        /// User ID whose connections are targeted (non-empty; checked by the API).
        user: String,
        /// Channel to subscribe to; its namespace exists (checked by the API).
        channel: String,
    },
    /// Server-side unsubscribe: connections of `user` subscribed to `channel` leave it and
    /// get an `unsubscribe` push (code 2000, "server unsubscribe").
    Unsubscribe {
        /// User ID whose connections are targeted (non-empty; checked by the API).
        user: String,
        /// Channel to leave; connections not subscribed to it are left alone.
        channel: String,
    },
    /// Close every connection of `user` with a Centrifugo disconnect.
    Disconnect {
        /// User ID whose connections are closed (non-empty; checked by the API).
        user: String,
        /// Disconnect code, 3000-4999 (the API substitutes 3503 for anything else).
        code: u16,
        /// Reason given to the API. Only its emptiness is used: the close reason sent is
        /// "force disconnect" when empty, else "disconnect".
        reason: String,
    },
    /// Change the expiry of the user's connections, or end them.
    Refresh {
        /// User ID whose connections are refreshed.
        user: String,
        /// New connection expiry in unix seconds, pushed to the client as a `ttl`; `None` or
        /// `<= 0` removes the expiry.
        expire_at: Option<i64>,
        /// Disconnect the connections at once as expired (3005) instead.
        expired: bool,
    },
}

/// What a worker can be told.
pub enum Note {
    /// A sequenced message for a channel this worker has (or had) subscribers on.
    Publish(Arc<Message>),
    /// A join/leave event.
    Event(Arc<Event>),
    /// A server API command for a user's connections.
    User(Arc<UserCmd>),
    /// A Centrifugo command posted to `/emulation` for a session of this worker.
    Emulation {
        /// The session id.
        session: Arc<str>,
        /// The command(s), JSON text.
        data: bytes::Bytes,
    },
    /// Answers of an asynchronous engine to operations of a connection of this worker
    /// (`Engine::submit` returned `None`), or the answer of a proxy call to the application
    /// backend (one `Done::Proxy`, from the reactor's proxy threads).
    Answer {
        /// The connection that waits.
        conn: crate::hub::local::ConnId,
        /// One answer per operation, in order.
        done: Vec<super::engine::Done>,
    },
    /// The channel's stream lost publications this node could not read back (`reset`: it
    /// began again with a new epoch, so earlier positions mean nothing). Subscribers are
    /// told (Centrifugo: unsubscribe with "insufficient state", so the client resubscribes
    /// and recovers; the other transports: a `missed` notice) and later ids are delivered.
    Lost {
        /// The channel.
        channel: Arc<str>,
        /// A new epoch (rather than a gap).
        reset: bool,
    },
    /// Start the graceful drain.
    Shutdown,
}

/// How a sender wakes a worker that sleeps in its poll: the epoll worker's `mio::Waker`, the
/// io_uring worker's eventfd. Called at most once per burst (the inbox's pending flag).
pub trait Wake: Send + Sync {
    /// Wake the worker (a failure is ignored: the worker drains its inbox every turn).
    fn wake(&self) -> std::io::Result<()>;
}

impl Wake for mio::Waker {
    fn wake(&self) -> std::io::Result<()> {
        mio::Waker::wake(self)
    }
}

/// The sending side of one worker's inbox, shared by all senders.
pub struct Inbox {
    // `Sender` is Sync since Rust 1.72: senders share it without a lock.
    tx: Sender<Note>,
    waker: std::sync::OnceLock<Arc<dyn Wake>>,
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

    /// Install another kind of waker (the io_uring worker's eventfd), once.
    pub fn set_wake(&self, w: Arc<dyn Wake>) {
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
