//! Heap bytes one idle rustls 0.23 server connection keeps, measured with a counting
//! allocator: the same configuration Herald's workers use (ring provider, buffered
//! `ServerConnection`, ALPN http/1.1), a TLS 1.3 (then 1.2) handshake over memory, one
//! WebSocket-sized exchange, then idle. Prints live heap bytes at each step.
//!
//! Run: cargo run --release -p herald-bench-tools --example tls_idle_bytes

use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
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

fn measure(versions: &[&'static rustls::SupportedProtocolVersion], label: &str) {
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
    let scfg = Arc::new(scfg);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut ccfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ccfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let ccfg = Arc::new(ccfg);
    let n = 200;
    let mut conns: Vec<Box<ServerConnection>> = Vec::with_capacity(n);
    let mut fresh: Vec<Box<ServerConnection>> = Vec::with_capacity(n);
    let base0 = live();
    for _ in 0..n {
        fresh.push(server(|| Box::new(ServerConnection::new(scfg.clone()).unwrap())));
    }
    let new_only = (live() - base0) / n as isize;
    server(|| drop(fresh));
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = ClientConnection::new(ccfg.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
        c.writer().write_all(b"x").unwrap(); // touch the client so it is comparable
        clients.push(c);
    }
    let base = live();
    for c in clients.iter_mut() {
        let mut s = server(|| Box::new(ServerConnection::new(scfg.clone()).unwrap()));
        server(|| s.set_buffer_limit(Some(64 * 1024)));
        pump(c, &mut s);
        conns.push(s);
    }
    let a = live();
    // One request/reply of a WebSocket upgrade's size, the reply fully written out.
    let mut buf = vec![0u8; 8192];
    for (c, s) in clients.iter_mut().zip(conns.iter_mut()) {
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
        while let Ok(k) = c.reader().read(&mut buf) {
            if k == 0 {
                break;
            }
        }
    }
    let b = live();
    println!(
        "{label}: heap per server connection (Box<ServerConnection> of {} B included): new {} B; after the handshake {} B; idle after one request/reply {} B",
        std::mem::size_of::<ServerConnection>(),
        new_only,
        (a - base) / n as isize,
        (b - base) / n as isize,
    );
    // What the idle connections hold, by allocation size (allocations per connection).
    let mut rows = Vec::new();
    for (size, c) in BY_SIZE.iter().enumerate() {
        let c = c.load(Relaxed);
        if c >= n as isize / 2 {
            rows.push(format!("{size} B x{:.2}", c as f64 / n as f64));
        }
    }
    println!("  live allocations per idle connection, by size: {}", rows.join(", "));
    server(|| drop(conns));
    for c in BY_SIZE.iter() {
        c.store(0, Relaxed);
    }
}

fn main() {
    println!(
        "size_of: ServerConnection {} B, UnbufferedServerConnection {} B",
        std::mem::size_of::<ServerConnection>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>()
    );
    measure(&[&rustls::version::TLS13], "TLS 1.3");
    measure(&[&rustls::version::TLS12], "TLS 1.2");
}
