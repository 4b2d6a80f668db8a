//! One socket slot: the socket and what the reactor keeps about it, beside the protocol
//! half (the transport's `Session`).
//!
//! Owns: the socket, the timer handle, the write-shutdown flag and per-address admission.
//! Created and freed by the worker; only the worker reads or writes the socket. The
//! session's `dirty`/`dead` flags are the effect lists' de-duplication marks.

use crate::transport::{Session, Sessions};
use mio::net::TcpStream;
use slab::Slab;

/// One client connection as the reactor holds it.
pub struct Slot {
    /// The socket (registered with the worker's poll under the slab key).
    pub sock: TcpStream,
    /// The protocol half.
    pub session: Session,
    /// Tick of this connection's live timer-wheel entry, plus one (so `None` costs no
    /// space); see [`Slot::timer_tick`].
    timer: Option<std::num::NonZeroU64>,
    /// The write side has been shut down.
    pub write_shut: bool,
    /// Counted in the per-address table (released on close).
    pub admitted: bool,
    /// Reading stopped: the out-queue is over the high-water mark (resumed by a flush that
    /// drains it to the low-water mark).
    pub paused: bool,
    /// TLS state of a TLS connection (boxed: plain connections pay a pointer).
    pub tls: Option<Box<super::tls::Tls>>,
}

impl Slot {
    /// A slot for a freshly accepted connection.
    pub fn new(sock: TcpStream, session: Session, tls: Option<Box<super::tls::Tls>>) -> Slot {
        Slot { sock, session, timer: None, write_shut: false, admitted: false, paused: false, tls }
    }

    /// Tick of this connection's live timer-wheel entry, if any.
    pub fn timer_tick(&self) -> Option<u64> {
        self.timer.map(|t| t.get() - 1)
    }

    /// Record (Some) or clear (None) the live timer-wheel entry.
    pub fn set_timer_tick(&mut self, tick: Option<u64>) {
        self.timer = tick.and_then(|t| std::num::NonZeroU64::new(t.saturating_add(1)));
    }
}

/// Fan-out and inbox handling reach sessions through the slab of slots.
impl Sessions for Slab<Slot> {
    fn session(&mut self, key: usize) -> Option<&mut Session> {
        self.get_mut(key).map(|s| &mut s.session)
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's fixed cost stays small: it is what the slab holds per client
    /// (heap buffers are empty while idle).
    #[test]
    fn slot_stays_small() {
        // mio's socket carries a selector id for its own checks in debug builds only.
        let debug_extra = if cfg!(debug_assertions) { 16 } else { 0 };
        let n = std::mem::size_of::<super::Slot>();
        assert!(n <= 208 + debug_extra, "Slot is {n} bytes");
    }
}
