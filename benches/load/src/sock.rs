//! Client sockets of both tools: a non-blocking connect from a chosen loopback source
//! address, the source addresses themselves, and the two loops of an edge-triggered mio
//! client: write until the socket would block, read until it would block.
//!
//! Called by `herald-load`'s run loop and `herald-soak`'s client loop for every subscriber
//! and publisher connection.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A non-blocking connect from `src` (port chosen at connect time, so every source address
/// has its own ephemeral port range per destination).
pub fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    if let Some(ip) = src {
        // IP_BIND_ADDRESS_NO_PORT: pick the port at connect(), not at bind(), so the 4-tuple
        // rather than the local port alone must be unique.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` (an int) for the given length; the fd is ours.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// Source address number `k` (0-based): 127.0.1.1, 127.0.1.2, … 127.0.1.250, 127.0.2.1, …
/// Every address of 127/8 is local on Linux, so spreading clients over them multiplies the
/// ephemeral ports available towards one server address.
pub fn loopback_source(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (k / 250) as u8, 1 + (k % 250) as u8))
}

/// Write as much of `out` as the writer takes, until it is empty or the writer would block;
/// what was written is removed from `out`. `NotConnected` (a connect still in progress)
/// counts as would-block; `Interrupted` is retried.
pub fn write_pending(w: &mut impl Write, out: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    let r = loop {
        if done == out.len() {
            break Ok(());
        }
        match w.write(&out[done..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    out.drain(..done);
    r
}

/// How [`read_available`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket would block: everything the kernel held has been read.
    Drained,
    /// The peer closed its side (a read returned 0).
    Eof,
    /// `buf` grew past the caller's limit; more may be waiting (edge-triggered readiness
    /// will not say so again: process `buf`, then read again).
    Full,
}

/// Read until the reader would block, appending to `buf` through `scratch`; stops early at
/// EOF or once `buf` holds more than `limit` bytes. `Interrupted` is retried; other errors
/// are returned (bytes read before them stay in `buf`).
pub fn read_available(r: &mut impl Read, scratch: &mut [u8], buf: &mut Vec<u8>, limit: usize) -> io::Result<ReadEnd> {
    loop {
        match r.read(scratch) {
            Ok(0) => return Ok(ReadEnd::Eof),
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                if buf.len() > limit {
                    return Ok(ReadEnd::Full);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadEnd::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A reader/writer that plays back a script of results.
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        writes: VecDeque<io::Result<usize>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front().unwrap_or(Err(io::ErrorKind::WouldBlock.into())) {
                Ok(v) => {
                    b[..v.len()].copy_from_slice(&v);
                    Ok(v.len())
                }
                Err(e) => Err(e),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let r = self.writes.pop_front().unwrap_or(Err(io::ErrorKind::WouldBlock.into()));
            if let Ok(n) = r {
                self.written.extend_from_slice(&b[..n.min(b.len())]);
            }
            r
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(reads: Vec<io::Result<Vec<u8>>>, writes: Vec<io::Result<usize>>) -> Script {
        Script { reads: reads.into(), writes: writes.into(), written: Vec::new() }
    }

    #[test]
    fn reads_until_would_block_eof_or_limit() {
        let mut scratch = [0u8; 16];
        let mut buf = Vec::new();
        let mut s = script(vec![Ok(b"ab".to_vec()), Err(io::ErrorKind::Interrupted.into()), Ok(b"c".to_vec())], vec![]);
        assert_eq!(read_available(&mut s, &mut scratch, &mut buf, 100).unwrap(), ReadEnd::Drained);
        assert_eq!(buf, b"abc");
        let mut s = script(vec![Ok(b"d".to_vec()), Ok(vec![])], vec![]);
        assert_eq!(read_available(&mut s, &mut scratch, &mut buf, 100).unwrap(), ReadEnd::Eof);
        assert_eq!(buf, b"abcd");
        let mut s = script(vec![Ok(b"efgh".to_vec()), Ok(b"ij".to_vec())], vec![]);
        assert_eq!(read_available(&mut s, &mut scratch, &mut buf, 5).unwrap(), ReadEnd::Full);
        assert_eq!(buf, b"abcdefgh");
        let mut s = script(vec![Ok(b"z".to_vec()), Err(io::ErrorKind::ConnectionReset.into())], vec![]);
        assert!(read_available(&mut s, &mut scratch, &mut buf, 100).is_err());
        assert_eq!(buf, b"abcdefghz");
    }

    #[test]
    fn writes_until_would_block() {
        let mut out = b"hello world".to_vec();
        let mut s = script(vec![], vec![Ok(3), Err(io::ErrorKind::Interrupted.into()), Ok(2)]);
        write_pending(&mut s, &mut out).unwrap();
        assert_eq!((s.written.as_slice(), out.as_slice()), (&b"hello"[..], &b" world"[..]));
        let mut s = script(vec![], vec![Err(io::ErrorKind::NotConnected.into())]);
        write_pending(&mut s, &mut out).unwrap();
        assert_eq!(out, b" world");
        let mut s = script(vec![], vec![Ok(6)]);
        write_pending(&mut s, &mut out).unwrap();
        assert!(out.is_empty());
        let mut out = b"x".to_vec();
        assert!(write_pending(&mut script(vec![], vec![Ok(0)]), &mut out).is_err());
        let mut s = script(vec![], vec![Ok(1), Err(io::ErrorKind::BrokenPipe.into())]);
        let mut out = b"xy".to_vec();
        assert!(write_pending(&mut s, &mut out).is_err());
        assert_eq!(out, b"y");
    }

    #[test]
    fn sources() {
        assert_eq!(loopback_source(0).to_string(), "127.0.1.1");
        assert_eq!(loopback_source(249).to_string(), "127.0.1.250");
        assert_eq!(loopback_source(250).to_string(), "127.0.2.1");
    }
}
