//! One connection as the io_uring worker holds it, and the writer that stages its
//! out-queue into the bytes of one send.
//!
//! Owns: the socket descriptor, the timer handle, the admission and pause flags, and what
//! the connection has in flight in the ring (its multishot receive, at most one send). The
//! session beside them is the transports' own, exactly as with epoll.

use crate::transport::{Session, Sessions};
use slab::Slab;
use std::io::{self, IoSlice, Write};
use std::num::{NonZeroU32, NonZeroU64};
use std::os::fd::OwnedFd;

/// Where a connection's multishot receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    /// Armed: completions bring its bytes.
    Armed,
    /// A cancel was submitted; bytes may still arrive until the last completion.
    Cancelling,
    /// Not armed (paused, or it ended for lack of buffers): armed again when wanted.
    Off,
    /// The peer's FIN arrived: never armed again.
    Eof,
}

/// One client connection.
pub struct Conn {
    /// The socket (blocking: io_uring waits on it, the worker never does).
    pub fd: OwnedFd,
    /// The protocol half.
    pub session: Session,
    /// Tick of the live timer-wheel entry, plus one (see `reactor::slot::Slot`).
    timer: Option<NonZeroU64>,
    /// The write side has been shut down.
    pub write_shut: bool,
    /// Counted in the per-address table (released on close).
    pub admitted: bool,
    /// Reading stopped: over the high-water mark or waiting for the engine (resumed as in
    /// the epoll worker).
    pub paused: bool,
    /// Input is held because the turn's budget ran out (served again next turn; no new
    /// receive meanwhile).
    pub held: bool,
    /// The multishot receive.
    pub recv: Recv,
    /// Registered in the ring's fixed-file table at its slab key.
    pub fixed: bool,
    /// The send in flight (its id in the ring, plus one), if any: one at a time per
    /// connection. See [`Conn::sending`].
    send_id: Option<NonZeroU32>,
}

impl Conn {
    /// A freshly accepted connection (its receive not armed yet).
    pub fn new(fd: OwnedFd, session: Session) -> Conn {
        Conn {
            fd,
            session,
            timer: None,
            write_shut: false,
            admitted: false,
            paused: false,
            held: false,
            recv: Recv::Off,
            fixed: false,
            send_id: None,
        }
    }

    /// How the ring names this connection's socket.
    pub fn sock(&self) -> super::ring::Sock {
        use std::os::fd::AsRawFd;
        super::ring::Sock { fd: self.fd.as_raw_fd(), key: self.session.id.key, fixed: self.fixed }
    }

    /// The id of the send in flight, if any.
    pub fn sending(&self) -> Option<u32> {
        self.send_id.map(|i| i.get() - 1)
    }

    /// Record (Some) or clear (None) the send in flight.
    pub fn set_sending(&mut self, id: Option<u32>) {
        self.send_id = id.and_then(|i| NonZeroU32::new(i.wrapping_add(1)));
    }

    /// Tick of this connection's live timer-wheel entry, if any.
    pub fn timer_tick(&self) -> Option<u64> {
        self.timer.map(|t| t.get() - 1)
    }

    /// Record (Some) or clear (None) the live timer-wheel entry.
    pub fn set_timer_tick(&mut self, tick: Option<u64>) {
        self.timer = tick.and_then(|t| NonZeroU64::new(t.saturating_add(1)));
    }

    /// Whether the connection can take input now: a receive should be armed.
    pub fn wants_input(&self) -> bool {
        !self.session.dead && !self.paused && !self.held && self.recv != Recv::Eof
    }
}

/// Fan-out and inbox handling reach sessions through the slab of connections.
impl Sessions for Slab<Conn> {
    fn session(&mut self, key: usize) -> Option<&mut Session> {
        self.get_mut(key).map(|c| &mut c.session)
    }
}

/// A writer that copies into the bytes of the next send, up to `cap`; beyond it, it
/// answers `WouldBlock` (the rest stays in the out-queue, counted, until this send is done).
pub struct Stage<'a> {
    /// The send's bytes.
    pub buf: &'a mut Vec<u8>,
    /// Most bytes one send carries.
    pub cap: usize,
}

impl Write for Stage<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let room = self.cap.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(b.len());
        self.buf.extend_from_slice(&b[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            match self.write(b) {
                Ok(k) => {
                    n += k;
                    if k < b.len() {
                        break;
                    }
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::outq::{Flush, OutQueue};

    #[test]
    fn stage_takes_up_to_its_cap_and_leaves_the_rest_queued() {
        let mut q = OutQueue::default();
        for i in 0..40u8 {
            q.push(bytes::Bytes::from(vec![i; 200]));
        }
        let mut all = Vec::new();
        loop {
            let mut buf = Vec::new();
            let r = q.flush(&mut Stage { buf: &mut buf, cap: 1000 }, &mut 0, &mut Vec::new()).unwrap();
            assert!(buf.len() <= 1000);
            all.extend_from_slice(&buf);
            if r == Flush::Done {
                break;
            }
            assert_eq!(buf.len(), 1000, "a blocked stage is a full one");
        }
        let expect: Vec<u8> = (0..40u8).flat_map(|i| vec![i; 200]).collect();
        assert_eq!(all, expect);
        assert!(q.is_empty());
    }

    #[test]
    fn conn_stays_small() {
        let n = std::mem::size_of::<Conn>();
        assert!(n <= 208, "Conn is {n} bytes");
    }
}
