//! TLS (rustls on the worker loops): every endpoint over `https://` and `wss://` with real
//! clients (rustls client streams, tungstenite over them, curl), ALPN `http/1.1`, bad input
//! on the TLS port, plain and TLS listeners side by side, certificate reload on SIGHUP, and
//! a handshake storm that leaves an established connection served, a partial record not
//! held forever, and the heap an idle TLS connection keeps (counted by this test binary's
//! allocator). The certificates are self-signed ones the test makes with rcgen.

mod common;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A self-signed certificate for 127.0.0.1 and localhost, written to two PEM files.
struct Cert {
    der: CertificateDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Cert {
    fn new(tag: &str) -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir();
        let cert_file = dir.join(format!("herald-tls-{}-{tag}.crt", std::process::id()));
        let key_file = dir.join(format!("herald-tls-{}-{tag}.key", std::process::id()));
        std::fs::write(&cert_file, ck.cert.pem()).unwrap();
        std::fs::write(&key_file, ck.key_pair.serialize_pem()).unwrap();
        Cert { der: ck.cert.der().clone(), cert_file, key_file }
    }

    fn config(&self, extra: &str) -> String {
        format!(
            r#"{{"http_server":{{"tls":{{"enabled":true,"cert_pem_file":"{}","key_pem_file":"{}"}}}}{extra}}}"#,
            self.cert_file.display(),
            self.key_file.display()
        )
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert_file);
        let _ = std::fs::remove_file(&self.key_file);
    }
}

/// Counts live heap bytes allocated and freed by a thread while its `COUNTING` flag is on
/// (only the heap test turns it on; the other tests pay a thread-local read per call).
struct CountingAlloc;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count(d: isize) {
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        LIVE.fetch_add(d, std::sync::atomic::Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator; it only counts sizes.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count(l.size() as isize);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        count(-(l.size() as isize));
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        count(n as isize - l.size() as isize);
        std::alloc::System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Run `f` with this thread's allocations counted.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.with(|c| c.set(true));
    let t = f();
    COUNTING.with(|c| c.set(false));
    t
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A client configuration that trusts only `cert`, offering ALPN `alpn`.
fn client_config(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Connect with TLS and finish the handshake.
fn tls_connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(
        client_config(cert, &[b"h2", b"http/1.1"]),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    s
}

/// One request on a TLS connection (Connection: close); the response.
fn tls_request(addr: SocketAddr, cert: &CertificateDer<'static>, req: &str) -> Resp {
    let mut s = tls_connect(addr, cert);
    s.write_all(req.as_bytes()).unwrap();
    s.flush().unwrap();
    read_response(&mut s).expect("a response over TLS")
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

#[test]
fn every_transport_over_tls() {
    let cert = Cert::new("main");
    let h = Herald::start(&cert.config(""));
    let a = h.addr;
    // https:// with ALPN http/1.1 (the client also offers h2, which Herald does not speak).
    let mut s = tls_connect(a, &cert.der);
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
    s.write_all(get_req("/health").as_bytes()).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"status":"ok"}"#);
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));

    // SSE subscriber over TLS, then a publish over TLS, then polling over TLS.
    let mut sse = tls_connect(a, &cert.der);
    sse.write_all(b"GET /sse/?cid=t HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut sse = BufReader::new(sse);
    let mut line = String::new();
    loop {
        line.clear();
        sse.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let body = r#"{"over":"tls"}"#;
    let p = tls_request(
        a,
        &cert.der,
        &format!(
            "POST /publish/?cid=t HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(p.status, 200, "{}", p.text());
    let mut got = String::new();
    while !got.contains("\"over\"") {
        line.clear();
        assert!(sse.read_line(&mut line).unwrap() > 0, "SSE over TLS ended");
        got.push_str(&line);
    }
    assert!(got.contains(r#"data: {"id":1,"channel":"t","data":{"over":"tls"}}"#), "{got}");
    let r = tls_request(a, &cert.der, &get_req("/messages/?cid=t&since=0"));
    assert_eq!(r.json()["messages"][0]["data"]["over"], "tls");

    // wss:// : /ws/ subscriber, /echo, and the Centrifugo protocol (tungstenite over rustls).
    let (mut ws, resp) =
        tungstenite::client(format!("wss://127.0.0.1:{}/ws/?cid=w", a.port()), tls_connect(a, &cert.der))
            .expect("wss /ws/ handshake");
    assert_eq!(resp.status(), 101);
    tls_request(
        a,
        &cert.der,
        "POST /publish/?cid=w HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    );
    match ws.read().unwrap() {
        tungstenite::Message::Text(t) => assert_eq!(t.as_str(), r#"{"id":1,"channel":"w","data":"hi"}"#),
        m => panic!("unexpected {m:?}"),
    }
    let (mut echo, _) =
        tungstenite::client(format!("wss://127.0.0.1:{}/echo", a.port()), tls_connect(a, &cert.der)).unwrap();
    let big = "e".repeat(200_000);
    echo.send(tungstenite::Message::Text(big.clone())).unwrap();
    match echo.read().unwrap() {
        tungstenite::Message::Text(t) => assert_eq!(t.as_str(), big, "a 200 KB echo over TLS"),
        m => panic!("unexpected {m:?}"),
    }
    let h2 = Herald::start(&cert.config(r#","client":{"allow_anonymous_connect_without_token":true}"#));
    let (mut cf, _) = tungstenite::client(
        format!("wss://127.0.0.1:{}/connection/websocket", h2.addr.port()),
        tls_connect(h2.addr, &cert.der),
    )
    .unwrap();
    cf.send(tungstenite::Message::Text(r#"{"id":1,"connect":{}}"#.into())).unwrap();
    match cf.read().unwrap() {
        tungstenite::Message::Text(t) => assert!(t.contains("\"connect\""), "{t}"),
        m => panic!("unexpected {m:?}"),
    }
}

#[test]
fn curl_speaks_https() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is required (tests/all.sh installs it)");
    }
    let cert = Cert::new("curl");
    let h = Herald::start(&cert.config(""));
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert"])
        .arg(&cert.cert_file)
        .arg(format!("https://127.0.0.1:{}/health", h.addr.port()))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);
}

/// Plain HTTP and garbage on the TLS port are closed (with an alert at most), counted in
/// /metrics, and the server goes on.
#[test]
fn plain_http_and_garbage_on_the_tls_port_are_closed() {
    let cert = Cert::new("bad");
    let h = Herald::start(&cert.config(""));
    for junk in [&b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..]] {
        let mut s = h.connect();
        s.write_all(junk).unwrap();
        let mut buf = Vec::new();
        let t = Instant::now();
        let _ = s.read_to_end(&mut buf);
        assert!(t.elapsed() < Duration::from_secs(5), "closed promptly");
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "no HTTP answer in the clear");
        assert!(buf.len() < 64, "at most an alert: {buf:?}");
    }
    let r = tls_request(h.addr, &cert.der, &get_req("/metrics"));
    let errors: u64 = r
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("herald_tls_errors_total "))
        .expect("herald_tls_errors_total in /metrics")
        .parse()
        .unwrap();
    assert!(errors >= 2, "TLS errors counted: {errors}");
}

/// `tls_port`: plain on `port` and TLS on `tls_port`, at the same time.
#[test]
fn plain_and_tls_listeners_side_by_side() {
    let cert = Cert::new("side");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let h = Herald::start(&cert.config(&format!(r#","tls_port":{free}"#)));
    assert_eq!(get(&h, "/health").status, 200, "plain on port");
    let tls_addr: SocketAddr = format!("127.0.0.1:{free}").parse().unwrap();
    let r = tls_request(tls_addr, &cert.der, &get_req("/health"));
    assert_eq!(r.status, 200, "TLS on tls_port");
}

/// SIGHUP loads the certificate files again: new connections get the new certificate, an
/// open connection keeps working; a broken file keeps the one in use.
#[test]
fn certificate_reload_on_sighup() {
    let cert = Cert::new("reload");
    let h = Herald::start(&cert.config(""));
    let mut old = tls_connect(h.addr, &cert.der);
    let next = Cert::new("reload-next");
    std::fs::copy(&next.cert_file, &cert.cert_file).unwrap();
    std::fs::copy(&next.key_file, &cert.key_file).unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &h.child.id().to_string()]).status();
    assert!(
        wait_until(Duration::from_secs(5), || h
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("TLS certificate reloaded"))),
        "reload logged"
    );
    let r = tls_request(h.addr, &next.der, &get_req("/health"));
    assert_eq!(r.status, 200, "the new certificate is served");
    old.write_all(get_req("/health").as_bytes()).unwrap();
    assert_eq!(read_response(&mut old).unwrap().status, 200, "the open connection keeps working");
    std::fs::write(&cert.cert_file, "not a certificate").unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &h.child.id().to_string()]).status();
    assert!(
        wait_until(Duration::from_secs(5), || h.log.lock().unwrap().iter().any(|l| l.contains("not reloaded"))),
        "a bad file is reported"
    );
    let r = tls_request(h.addr, &next.der, &get_req("/health"));
    assert_eq!(r.status, 200, "the certificate in use stays");
}

/// Bad configurations are refused at start with the file named.
#[test]
fn missing_certificate_is_a_clear_start_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--port", "0", "--config", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(br#"{"http_server":{"tls":{"enabled":true,"cert_pem_file":"/nonexistent.crt","key_pem_file":"/nonexistent.key"}}}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent.crt"), "{err}");
}

/// A connection that opens TLS and never finishes the handshake is closed at
/// `handshake_timeout_ms`, like any slow request.
#[test]
fn unfinished_handshake_is_closed_at_the_deadline() {
    let cert = Cert::new("deadline");
    let h = Herald::start(&cert.config(r#","handshake_timeout_ms":1000"#));
    let mut s = h.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The first bytes of a ClientHello record, then silence.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = t.elapsed();
    eprintln!("unfinished TLS handshake closed after {took:?}");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(8), "{took:?}");
}

/// A storm of TLS handshakes (2,000 connects from 8 threads, each finishing its handshake
/// and closing) leaves an established connection served: its round trips stay fast.
#[test]
fn handshake_storm_leaves_others_served() {
    let cert = Cert::new("storm");
    let h = Herald::start(&cert.config(r#","workers":1"#));
    let addr = h.addr;
    let (mut ws, _) =
        tungstenite::client(format!("wss://127.0.0.1:{}/echo", addr.port()), tls_connect(addr, &cert.der)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (der, stop, done) = (cert.der.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..250 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mut s = tls_connect(addr, &der);
                    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let _ = read_response(&mut s);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    let t0 = Instant::now();
    while done.load(std::sync::atomic::Ordering::Relaxed) < 2000 && t0.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        ws.send(tungstenite::Message::Text("ping".into())).unwrap();
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => assert_eq!(t.as_str(), "ping"),
            m => panic!("unexpected {m:?}"),
        }
        worst = worst.max(t.elapsed());
        rounds += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let n = done.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "TLS handshake storm: {n} handshakes + requests in {:?} ({:.0}/s) on one worker; an established wss:// \
         echo made {rounds} round trips meanwhile, worst {worst:?}",
        t0.elapsed(),
        n as f64 / t0.elapsed().as_secs_f64()
    );
    assert!(n >= 500, "only {n} handshakes completed");
    assert!(rounds >= 5, "the established connection made {rounds} round trips");
    assert!(worst < Duration::from_secs(2), "an established connection waited {worst:?} during the storm");
}

/// The start of a TLS record that never completes is held input like an incomplete
/// WebSocket frame: the connection is closed at `handshake_timeout_ms`, not kept holding it
/// until the ping timer notices.
#[test]
fn a_partial_record_is_not_held_forever() {
    let cert = Cert::new("partial");
    let h = Herald::start(&cert.config(r#","handshake_timeout_ms":1000"#));
    let (mut ws, _) =
        tungstenite::client(format!("wss://127.0.0.1:{}/echo", h.addr.port()), tls_connect(h.addr, &cert.der)).unwrap();
    ws.send(tungstenite::Message::Text("ok".into())).unwrap();
    assert!(matches!(ws.read().unwrap(), tungstenite::Message::Text(_)));
    // An application-data record header announcing 16 KiB, and 3 bytes of it.
    ws.get_mut().sock.write_all(&[0x17, 0x03, 0x03, 0x40, 0x00, 1, 2, 3]).unwrap();
    let t = Instant::now();
    let closed = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => break format!("{f:?}"),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    let took = t.elapsed();
    eprintln!("a partial TLS record held for {took:?}: {closed}");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(8), "{took:?}");
}

/// Backpressure over TLS: a `wss://` subscriber that never reads fills its socket, then its
/// out-queue, and is dropped as a slow consumer past `max_out_queue`; a reading one on the
/// same worker gets all 300 messages of 16 KiB meanwhile (each a full TLS record).
#[test]
fn a_stalled_wss_reader_is_dropped_and_others_are_served() {
    let cert = Cert::new("stalled");
    let h = Herald::start(
        &cert.config(r#","workers":1,"max_out_queue":262144,"ws_max_message":65536,"ws_max_frame":65536"#),
    );
    let url = format!("wss://127.0.0.1:{}/ws/?cid=s", h.addr.port());
    let (mut stalled, _) = tungstenite::client(url.clone(), tls_connect(h.addr, &cert.der)).unwrap();
    let (mut ok, _) = tungstenite::client(url, tls_connect(h.addr, &cert.der)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // One keep-alive TLS connection publishes.
    let mut publisher = tls_connect(h.addr, &cert.der);
    let payload = "y".repeat(16 * 1024);
    let t = Instant::now();
    for i in 1..=300u64 {
        let req =
            format!("POST /publish/?cid=s HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{payload}", payload.len());
        publisher.write_all(req.as_bytes()).unwrap();
        assert_eq!(read_response(&mut publisher).expect("publish answered").status, 200);
        match ok.read().unwrap() {
            tungstenite::Message::Text(t) => assert!(t.starts_with(&format!(r#"{{"id":{i},"#)), "message {i}"),
            m => panic!("unexpected {m:?}"),
        }
    }
    eprintln!("300 x 16 KiB over wss:// to a reader beside a stalled one in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(30));
    // The stalled one was dropped once more than max_out_queue was queued for it.
    let sock = &mut stalled.get_mut().sock;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        match sock.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled wss:// reader was not dropped: {e}"),
        }
    }
    assert!(total < 300 * 16 * 1024, "it did not get everything: dropped ({total} bytes)");
    let m = tls_request(h.addr, &cert.der, &get_req("/metrics"));
    let drops: u64 = m
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("herald_slow_consumer_drops_total "))
        .expect("herald_slow_consumer_drops_total")
        .parse()
        .unwrap();
    assert!(drops >= 1, "counted as a slow consumer");
}

/// An in-memory socket for the heap test: reads drain `input` (`WouldBlock` when empty),
/// writes append to `output`, whose room is allocated beforehand (it stands for the
/// kernel's socket buffer, not the server's heap).
struct MemSock {
    input: std::collections::VecDeque<u8>,
    output: Vec<u8>,
}

impl Read for MemSock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.input.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        for (d, s) in buf.iter_mut().zip(self.input.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
}

impl Write for MemSock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        assert!(self.output.len() + buf.len() <= self.output.capacity(), "room allocated beforehand");
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A worker's shared buffers and one server side for the heap test.
struct MemServer {
    scratch: Vec<u8>,
    coalesce: Vec<u8>,
    sc: herald::reactor::tls::Scratch,
}

impl MemServer {
    /// Move records both ways until nothing moves: the client's through the reactor's own
    /// `tls::read` (plaintext bytes received added to `got`) and `tls::flush`, which are
    /// the only calls counted.
    fn pump(
        &mut self,
        client: &mut rustls::ClientConnection,
        tls: &mut herald::reactor::tls::Tls,
        out: &mut herald::transport::outq::OutQueue,
        sock: &mut MemSock,
        got: &mut usize,
        client_got: &mut Vec<u8>,
    ) {
        use herald::reactor::tls::{flush, read, ReadStep};
        for _ in 0..50 {
            let mut moved = false;
            while client.wants_write() {
                let mut w = Vec::new();
                client.write_tls(&mut w).unwrap();
                sock.input.extend(w);
                moved = true;
            }
            counted(|| {
                while let ReadStep::Data { .. } =
                    read(tls, sock, &mut self.scratch, &mut self.sc, |p| *got += p.len()).unwrap()
                {}
                flush(tls, out, sock, &mut 0, &mut self.coalesce, &mut self.sc).unwrap();
            });
            let wire: Vec<u8> = sock.output.drain(..).collect();
            let mut rd = &wire[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
                let _ = client.reader().read_to_end(client_got);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    /// One connection through a handshake and a request/reply of `size` bytes each way,
    /// then idle: the heap its TLS state keeps, and the state.
    fn exchange(
        &mut self,
        scfg: &Arc<rustls::ServerConfig>,
        ccfg: &Arc<rustls::ClientConfig>,
        size: usize,
    ) -> (isize, Box<herald::reactor::tls::Tls>) {
        let mut client =
            rustls::ClientConnection::new(ccfg.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
        let mut sock = MemSock { input: Default::default(), output: Vec::with_capacity(256 * 1024) };
        sock.input.reserve(256 * 1024);
        let mut out = herald::transport::outq::OutQueue::default();
        let (mut got, mut client_got) = (0usize, Vec::new());
        let before = LIVE.load(std::sync::atomic::Ordering::Relaxed);
        let mut tls = counted(|| Box::new(herald::reactor::tls::Tls::new(scfg.clone()).unwrap()));
        self.pump(&mut client, &mut tls, &mut out, &mut sock, &mut got, &mut client_got);
        assert!(!tls.is_handshaking(), "handshake done");
        client.writer().write_all(&vec![b'q'; size]).unwrap();
        self.pump(&mut client, &mut tls, &mut out, &mut sock, &mut got, &mut client_got);
        assert_eq!(got, size);
        out.push(bytes::Bytes::from(vec![b'r'; size]));
        self.pump(&mut client, &mut tls, &mut out, &mut sock, &mut got, &mut client_got);
        assert_eq!(client_got.len(), size);
        assert_eq!(tls.buffered_capacity(), 0, "no read or write buffer kept");
        (LIVE.load(std::sync::atomic::Ordering::Relaxed) - before, tls)
    }
}

/// The heap one idle TLS connection keeps, herald's TLS state driven by the reactor's own
/// `tls::read` and `tls::flush` (the worker's shared buffers warmed beforehand): after a
/// TLS 1.3 handshake and one request/reply it is rustls's connection state alone, about
/// 3.4 KB (the box, the two AES-GCM keys, the key schedule; the tickets' entries in the
/// shared session cache), and no read or write buffer. rustls's buffered
/// `ServerConnection` kept 7.7 KB, 4 KiB of it a read buffer: a bound of 4 KiB catches the
/// return of any such buffer.
#[test]
fn an_idle_tls_connection_keeps_no_buffer() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut scfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    scfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let scfg = Arc::new(scfg);
    let ccfg = client_config(ck.cert.der(), &[b"http/1.1"]);
    let mut server = MemServer {
        scratch: vec![0u8; 64 * 1024],
        coalesce: Vec::with_capacity(4096),
        sc: herald::reactor::tls::Scratch::default(),
    };
    // Large enough to grow the worker's shared buffers to their working size first.
    let warm = server.exchange(&scfg, &ccfg, 40_000);
    let (kept, tls) = server.exchange(&scfg, &ccfg, 200);
    eprintln!("an idle TLS 1.3 connection keeps {kept} bytes of heap (Tls is {} bytes)", std::mem::size_of_val(&*tls));
    assert!(kept > 2000, "the count includes rustls's state ({kept})");
    assert!(kept <= 4096, "an idle TLS connection keeps {kept} bytes of heap");
    drop((warm, tls));
}
