//! Heap bytes one idle TLS server connection keeps, measured with a counting allocator
//! around the server-side calls only, in the configuration Herald's workers use (ring
//! provider, ALPN http/1.1): a TLS 1.3 (then 1.2) handshake over memory, one
//! WebSocket-sized request/reply, then idle. Two server sides:
//!
//! - herald: `herald::reactor::tls::Tls` (rustls's `UnbufferedServerConnection` and the
//!   connection's two ciphertext buffers), driven by the reactor's own `tls::read` and
//!   `tls::flush` over an in-memory socket, the worker's shared buffers warmed up first
//!   (they are per worker, not per connection);
//! - buffered: rustls's buffered `ServerConnection`, as Herald used it before, for
//!   comparison.
//!
//! Prints live heap bytes per connection at each step, and the live allocations by size.
//!
//! Run: cargo run --release -p herald-bench-tools --example tls_idle_bytes

use herald::reactor::tls::{self, ReadStep, Tls};
use herald::transport::outq::OutQueue;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
thread_local! {
    /// Count only while the server side runs: the client's allocations are not the server's.
    static ON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Live allocations by exact size (sizes up to 16 KiB), counted like LIVE.
static BY_SIZE: [AtomicIsize; 16385] = [const { AtomicIsize::new(0) }; 16385];

fn count(d: isize) {
    if ON.with(|c| c.get()) {
        LIVE.fetch_add(d, Relaxed);
    }
}

fn count_size(size: usize, d: isize) {
    if size < BY_SIZE.len() && ON.with(|c| c.get()) {
        BY_SIZE[size].fetch_add(d, Relaxed);
    }
}

/// Run `f` as server-side work (its allocations and frees are counted).
fn server<T>(f: impl FnOnce() -> T) -> T {
    ON.with(|c| c.set(true));
    let t = f();
    ON.with(|c| c.set(false));
    t
}

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        count_size(l.size(), 1);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        count_size(l.size(), -1);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n as isize - l.size() as isize);
        count_size(l.size(), -1);
        count_size(n, 1);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Relaxed)
}

/// Move records both ways until neither side has anything to send.
fn pump(c: &mut ClientConnection, s: &mut ServerConnection) {
    for _ in 0..20 {
        let mut moved = false;
        while c.wants_write() {
            let mut w = Vec::new();
            c.write_tls(&mut w).unwrap();
            server(|| {
                s.read_tls(&mut &w[..]).unwrap();
                s.process_new_packets().unwrap();
            });
            moved = true;
        }
        while s.wants_write() {
            let mut w = Vec::with_capacity(1 << 20);
            server(|| s.write_tls(&mut w).unwrap());
            c.read_tls(&mut &w[..]).unwrap();
            c.process_new_packets().unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

/// An in-memory socket for the herald side: reads drain `input` (`WouldBlock` when
/// empty), writes go to `output`, whose room is allocated outside the counted calls (as
/// the kernel's socket buffer is not the server's heap).
struct Pipe {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        for (d, s) in buf.iter_mut().zip(self.input.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A worker's shared buffers (not counted per connection).
struct Worker {
    scratch: Vec<u8>,
    coalesce: Vec<u8>,
    sc: tls::Scratch,
}

/// One herald server side with its socket and out-queue.
struct Herald {
    tls: Box<Tls>,
    sock: Pipe,
    out: OutQueue,
    /// Plaintext bytes received and the last of them (the session's input is the
    /// transport's, not TLS state: nothing of it is kept).
    got: usize,
    last: u8,
}

/// Move records both ways through herald's read and flush until nothing moves.
fn pump_herald(c: &mut ClientConnection, s: &mut Herald, w: &mut Worker) {
    for _ in 0..20 {
        let mut moved = false;
        while c.wants_write() {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.sock.input.extend(wire);
            moved = true;
        }
        server(|| {
            let Herald { tls, sock, out, got, last } = s;
            let mut deliver = |p: &mut [u8]| {
                *got += p.len();
                *last = p[p.len() - 1];
            };
            while let ReadStep::Data { .. } = tls::read(tls, sock, &mut w.scratch, &mut w.sc, &mut deliver).unwrap() {}
            tls::flush(tls, out, sock, &mut 0, &mut w.coalesce, &mut w.sc).unwrap();
        });
        let wire: Vec<u8> = s.sock.output.drain(..).collect();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
            client_read(c);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn configs(versions: &[&'static rustls::SupportedProtocolVersion]) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut scfg = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    scfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut ccfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ccfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(scfg), Arc::new(ccfg))
}

const N: usize = 200;

fn clients(ccfg: &Arc<ClientConfig>) -> Vec<ClientConnection> {
    (0..N)
        .map(|_| {
            let mut c = ClientConnection::new(ccfg.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
            c.writer().write_all(b"x").unwrap(); // touch the client so it is comparable
            c
        })
        .collect()
}

/// Drain what the client received.
fn client_read(c: &mut ClientConnection) {
    let mut buf = [0u8; 8192];
    while let Ok(k) = c.reader().read(&mut buf) {
        if k == 0 {
            break;
        }
    }
}

/// Live allocations per connection by size (those most connections hold), then reset.
fn by_size() -> String {
    let mut rows = Vec::new();
    for (size, c) in BY_SIZE.iter().enumerate() {
        let c = c.load(Relaxed);
        if c >= N as isize / 2 {
            rows.push(format!("{size} B x{:.2}", c as f64 / N as f64));
        }
    }
    for c in BY_SIZE.iter() {
        c.store(0, Relaxed);
    }
    rows.join(", ")
}

fn measure_herald(versions: &[&'static rustls::SupportedProtocolVersion], label: &str) {
    let (scfg, ccfg) = configs(versions);
    let new_herald = |scfg: &Arc<ServerConfig>| Herald {
        tls: server(|| Box::new(Tls::new(scfg.clone()).unwrap())),
        sock: Pipe { input: VecDeque::with_capacity(64 * 1024), output: Vec::with_capacity(64 * 1024) },
        out: OutQueue::default(),
        got: 0,
        last: 0,
    };
    // The worker's shared buffers, warmed by one whole exchange (then not counted).
    let mut w = Worker { scratch: vec![0; 64 * 1024], coalesce: Vec::with_capacity(4096), sc: tls::Scratch::default() };
    {
        let mut c = clients(&ccfg).pop().unwrap();
        let mut s = new_herald(&scfg);
        pump_herald(&mut c, &mut s, &mut w);
        c.writer().write_all(&[b'q'; 20_000]).unwrap();
        pump_herald(&mut c, &mut s, &mut w);
        s.out.push(bytes::Bytes::from(vec![b'r'; 20_000]));
        s.out.push(bytes::Bytes::from(vec![b'r'; 20_000]));
        pump_herald(&mut c, &mut s, &mut w);
    }
    for c in BY_SIZE.iter() {
        c.store(0, Relaxed);
    }
    let base0 = live();
    let fresh: Vec<Box<Tls>> = (0..N).map(|_| server(|| Box::new(Tls::new(scfg.clone()).unwrap()))).collect();
    let new_only = (live() - base0) / N as isize;
    server(|| drop(fresh));
    for c in BY_SIZE.iter() {
        c.store(0, Relaxed);
    }
    let mut cs = clients(&ccfg);
    let base = live();
    let mut conns = Vec::with_capacity(N);
    for c in cs.iter_mut() {
        let mut s = new_herald(&scfg);
        pump_herald(c, &mut s, &mut w);
        assert!(!s.tls.is_handshaking());
        conns.push(s);
    }
    let a = live();
    for (c, s) in cs.iter_mut().zip(conns.iter_mut()) {
        c.writer().write_all(&[b'q'; 200]).unwrap();
        pump_herald(c, s, &mut w);
        assert!(s.got >= 200 && s.last == b'q');
        s.out.push(bytes::Bytes::from_static(&[b'r'; 150]));
        pump_herald(c, s, &mut w);
        client_read(c);
        assert_eq!(s.tls.buffered_capacity(), 0);
    }
    let b = live();
    println!(
        "{label}, herald (Box<Tls> of {} B: UnbufferedServerConnection {} B and two empty Vecs): new {} B; after the handshake {} B; idle after one request/reply {} B",
        std::mem::size_of::<Tls>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>(),
        new_only,
        (a - base) / N as isize,
        (b - base) / N as isize,
    );
    println!("  live allocations per idle connection, by size: {}", by_size());
    server(|| drop(conns));
}

fn measure_buffered(versions: &[&'static rustls::SupportedProtocolVersion], label: &str) {
    let (scfg, ccfg) = configs(versions);
    let mut conns: Vec<Box<ServerConnection>> = Vec::with_capacity(N);
    let mut fresh: Vec<Box<ServerConnection>> = Vec::with_capacity(N);
    let base0 = live();
    for _ in 0..N {
        fresh.push(server(|| Box::new(ServerConnection::new(scfg.clone()).unwrap())));
    }
    let new_only = (live() - base0) / N as isize;
    server(|| drop(fresh));
    for c in BY_SIZE.iter() {
        c.store(0, Relaxed);
    }
    let mut cs = clients(&ccfg);
    let base = live();
    for c in cs.iter_mut() {
        let mut s = server(|| Box::new(ServerConnection::new(scfg.clone()).unwrap()));
        server(|| s.set_buffer_limit(Some(64 * 1024)));
        pump(c, &mut s);
        conns.push(s);
    }
    let a = live();
    // One request/reply of a WebSocket upgrade's size, the reply fully written out.
    let mut buf = vec![0u8; 8192];
    for (c, s) in cs.iter_mut().zip(conns.iter_mut()) {
        c.writer().write_all(&[b'q'; 200]).unwrap();
        pump(c, s);
        server(|| {
            while let Ok(k) = s.reader().read(&mut buf) {
                if k == 0 {
                    break;
                }
            }
            s.writer().write_all(&[b'r'; 150]).unwrap()
        });
        pump(c, s);
        client_read(c);
    }
    let b = live();
    println!(
        "{label}, buffered (before; Box<ServerConnection> of {} B): new {} B; after the handshake {} B; idle after one request/reply {} B",
        std::mem::size_of::<ServerConnection>(),
        new_only,
        (a - base) / N as isize,
        (b - base) / N as isize,
    );
    println!("  live allocations per idle connection, by size: {}", by_size());
    server(|| drop(conns));
}

fn main() {
    println!(
        "size_of: herald Tls {} B (UnbufferedServerConnection {} B); buffered ServerConnection {} B",
        std::mem::size_of::<Tls>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>(),
        std::mem::size_of::<ServerConnection>(),
    );
    for (v, label) in [(&rustls::version::TLS13, "TLS 1.3"), (&rustls::version::TLS12, "TLS 1.2")] {
        measure_herald(&[v], label);
        measure_buffered(&[v], label);
    }
}
