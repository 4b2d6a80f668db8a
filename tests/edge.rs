//! Edge attacks an anonymous client can make against a real herald, each showing that the
//! server now fails safely: pipelining or pinging without reading (memory bounded, input
//! reading paused), paced history replay (an honest slow-window reader gets everything, a
//! reader that never reads is dropped), trickled chunked bodies (linear CPU), per-turn
//! fairness, SIGTERM under load, multi-channel SSE with an unsequenced message, an
//! incomplete WebSocket frame, and `X-Content-Type-Options: nosniff` everywhere.
//!
//! Figures come from /proc (VmRSS, utime+stime) and are printed with `eprintln!`; bounds
//! are wide on purpose (shared, slow machines, debug builds). Every socket has timeouts
//! and every loop a deadline.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MB: f64 = 1024.0 * 1024.0;

/// One counter or gauge from /metrics (an unlabelled sample line `name value`).
fn metric(h: &Herald, name: &str) -> u64 {
    let r = get(h, "/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics"));
    v.trim().parse::<f64>().unwrap() as u64
}

/// A TCP connection whose receive buffer is `rcvbuf` bytes (set before connect, so the
/// advertised window stays small): the server cannot park a large backlog in the kernel.
fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    sock.connect_timeout(&addr.into(), Duration::from_secs(10)).unwrap();
    let s: TcpStream = sock.into();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// What a client that writes without ever reading managed to push.
struct Flood {
    /// Bytes the kernel took from the client in total.
    accepted: u64,
    /// Of those, bytes taken during the last second of the flood.
    last_second: u64,
    /// Highest VmRSS of herald seen during the flood.
    peak_rss: u64,
    /// The write error that ended the flood early (the server dropped the connection).
    error: Option<std::io::Error>,
}

/// Write `batch` over and over on a non-blocking socket for `dur`, never reading; every
/// 100 ms sample herald's RSS and call `tick(elapsed)`.
fn flood_without_reading(
    s: &mut TcpStream,
    batch: &[u8],
    pid: u32,
    dur: Duration,
    mut tick: impl FnMut(Duration),
) -> Flood {
    s.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let (mut off, mut accepted, mut peak_rss, mut error) = (0usize, 0u64, rss_bytes(pid), None);
    while start.elapsed() < dur {
        let el = start.elapsed();
        if el >= next_sample {
            samples.push((el, accepted));
            peak_rss = peak_rss.max(rss_bytes(pid));
            tick(el);
            next_sample += Duration::from_millis(100);
        }
        match s.write(&batch[off..]) {
            Ok(0) => {
                error = Some(std::io::Error::new(ErrorKind::WriteZero, "write returned 0"));
                break;
            }
            Ok(n) => {
                accepted += n as u64;
                off = (off + n) % batch.len();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let end = start.elapsed();
    samples.push((end, accepted));
    peak_rss = peak_rss.max(rss_bytes(pid));
    let before = samples.iter().rev().find(|(t, _)| *t + Duration::from_secs(1) <= end).map(|(_, a)| *a).unwrap_or(0);
    s.set_nonblocking(false).unwrap();
    Flood { accepted, last_second: accepted - before, peak_rss, error }
}

/// A raw SSE reader: the response head, then events.
struct SseReader {
    r: BufReader<TcpStream>,
    head: String,
}

#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl SseReader {
    fn open(mut s: TcpStream, path: &str) -> SseReader {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "EOF in SSE head: {head}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        SseReader { r, head }
    }

    /// The next event that has data (comments and `retry:` skipped).
    fn next(&mut self) -> Option<Event> {
        let (mut id, mut event, mut data) = (None, None, Vec::<String>::new());
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end_matches('\n');
            if l.is_empty() {
                if !data.is_empty() {
                    return Some(Event { id, event, data: data.join("\n") });
                }
                (id, event) = (None, None);
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (k, v) = l.split_once(':').map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((l, ""));
            match k {
                "id" => id = Some(v.to_string()),
                "event" => event = Some(v.to_string()),
                "data" => data.push(v.to_string()),
                _ => {}
            }
        }
    }
}

/// A keep-alive publisher: one write per request.
struct Publisher(TcpStream);

impl Publisher {
    fn new(h: &Herald) -> Publisher {
        let s = h.connect();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Publisher(s)
    }
    fn publish(&mut self, cid: &str, body: &[u8]) -> Value {
        let mut req = format!("POST /publish/?cid={cid} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
        req.extend_from_slice(body);
        self.0.write_all(&req).unwrap();
        let r = read_response(&mut self.0).expect("publish answered");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// A 200 KB JSON body that names its index.
fn big_body(i: usize) -> Vec<u8> {
    format!("{{\"i\":{i},\"p\":\"{}\"}}", "x".repeat(200_000)).into_bytes()
}

/// Open a WebSocket on `s` (already connected) and complete the handshake.
fn ws_handshake(s: &mut TcpStream, path: &str) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let r = read_response(s).expect("handshake answered");
    assert_eq!(r.status, 101, "{r:?}");
}

fn echo_round_trip(s: &mut TcpStream, text: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(&client_frame(true, 1, text)).unwrap();
    let (fin, op, p) = read_frame(s).expect("echo frame");
    assert!(fin && op == 1 && p == text, "echo answered {op} {:?}", String::from_utf8_lossy(&p));
    t.elapsed()
}

fn health_latency(h: &Herald) -> Duration {
    let t = Instant::now();
    let r = get(h, "/health");
    assert_eq!(r.status, 200, "{}", r.text());
    t.elapsed()
}

// 1 ---------------------------------------------------------------------------------------

#[test]
fn pipelined_demo_page_requests_without_reading_stay_bounded() {
    let h = Herald::start(r#"{"workers":1}"#);
    let pid = h.child.id();
    let page = get(&h, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.len() > 10_000, "demo page is {} bytes", page.body.len());
    let rss0 = rss_bytes(pid);

    let req: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let batch = req.repeat(1000);
    let mut s = h.connect();
    let mut health = Vec::new();
    let fl = flood_without_reading(&mut s, &batch, pid, Duration::from_secs(3), |el| {
        // Another connection on the same (only) worker is served meanwhile.
        if el >= Duration::from_millis(1000 * (health.len() as u64 + 1)) {
            health.push(health_latency(&h));
        }
    });
    let growth = fl.peak_rss.saturating_sub(rss0);
    eprintln!(
        "pipelined GET / without reading: {} request bytes ({} requests, {:.1} MB of replies asked for) accepted \
         before writes blocked; {} in the last second; RSS +{:.1} MB (peak {:.1} MB); /health latencies {:?}; \
         write error: {:?}",
        fl.accepted,
        fl.accepted / req.len() as u64,
        (fl.accepted / req.len() as u64) as f64 * page.body.len() as f64 / MB,
        fl.last_second,
        growth as f64 / MB,
        fl.peak_rss as f64 / MB,
        health,
        fl.error
    );
    assert!(fl.error.is_none(), "a pipelining client is throttled, not dropped: {:?}", fl.error);
    assert!(health.len() >= 2, "only {} /health checks ran during the flood", health.len());
    assert!(health.iter().all(|d| *d < Duration::from_secs(3)), "/health was slow during the flood: {health:?}");
    assert!(growth < 64 << 20, "RSS grew {:.1} MB under a pipelining flood", growth as f64 / MB);
    assert!(
        fl.last_second < 256 << 10,
        "the server kept reading a client that does not read: {} bytes accepted in the last second",
        fl.last_second
    );

    // Throttled, not broken: once the client reads, the answers come, in order.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..3 {
        let resp = read_response(&mut r).expect("a queued answer");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), page.body.len());
    }
}

// 2 ---------------------------------------------------------------------------------------

#[test]
fn websocket_pings_without_reading_stay_bounded() {
    let h = Herald::start(r#"{"workers":1}"#);
    let pid = h.child.id();
    let mut other = raw_ws(&h, "/echo");
    echo_round_trip(&mut other, b"before");
    let rss0 = rss_bytes(pid);

    let ping = client_frame(true, 9, &[b'p'; 125]);
    let batch = ping.repeat(1000);
    let mut s = raw_ws(&h, "/echo");
    let mut echoes = Vec::new();
    let fl = flood_without_reading(&mut s, &batch, pid, Duration::from_secs(3), |el| {
        if el >= Duration::from_millis(1000 * (echoes.len() as u64 + 1)) {
            echoes.push(echo_round_trip(&mut other, b"during"));
        }
    });
    let growth = fl.peak_rss.saturating_sub(rss0);
    // An unbounded server reads as fast as the client writes for the whole 3 s.
    eprintln!(
        "ws pings to /echo without reading: {} bytes ({} pings) accepted, {} in the last second; \
         RSS +{:.1} MB (peak {:.1} MB); other client's echo latencies {:?}; write error: {:?}",
        fl.accepted,
        fl.accepted / ping.len() as u64,
        fl.last_second,
        growth as f64 / MB,
        fl.peak_rss as f64 / MB,
        echoes,
        fl.error
    );
    assert!(echoes.len() >= 2, "only {} echo checks ran during the flood", echoes.len());
    assert!(echoes.iter().all(|d| *d < Duration::from_secs(3)), "echo was slow during the flood: {echoes:?}");
    assert!(growth < 64 << 20, "RSS grew {:.1} MB under a ping flood", growth as f64 / MB);
    // Throttled (writes block) or dropped (write error): either way no longer read.
    assert!(
        fl.error.is_some() || fl.last_second < 256 << 10,
        "the server kept reading pings from a client that does not read: {} bytes in the last second",
        fl.last_second
    );
    if fl.error.is_none() {
        // Throttled: the pongs are there once the client reads.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..3 {
            let (_, op, p) = read_frame(&mut s).expect("a queued pong");
            assert_eq!((op, p.len()), (10, 125));
        }
    }
    echo_round_trip(&mut other, b"after");
}

// 3 ---------------------------------------------------------------------------------------

#[test]
fn paced_replay_delivers_all_history_to_an_honest_reader() {
    let h = Herald::start(r#"{"history_size":100,"max_body":1048576}"#);
    let pid = h.child.id();
    let mut p = Publisher::new(&h);
    let t = Instant::now();
    for i in 1..=100 {
        let r = p.publish("big", &big_body(i));
        assert_eq!(r["id"], i as u64, "{r}");
    }
    eprintln!("published 100 x 200 KB to `big` in {:.2} s", t.elapsed().as_secs_f64());
    let rss0 = rss_bytes(pid);

    // SSE, 64 KiB receive buffer, read promptly.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(60);
    let mut sse = SseReader::open(connect_small_rcvbuf(h.addr, 64 << 10), "/sse/?cid=big&since=0");
    let mut peak = rss0;
    let mut bytes = 0usize;
    for want in 1..=100u64 {
        assert!(Instant::now() < deadline, "SSE replay too slow: {} events in 60 s", want - 1);
        let ev = sse.next().unwrap_or_else(|| panic!("SSE stream ended before event {want}"));
        assert_eq!(ev.event, None, "unexpected {:?} event", ev.event);
        assert_eq!(ev.id.as_deref(), Some(want.to_string().as_str()), "event id");
        let v: Value = serde_json::from_str(&ev.data).expect("envelope JSON");
        assert_eq!((v["id"].as_u64(), v["data"]["i"].as_u64()), (Some(want), Some(want)));
        bytes += ev.data.len();
        if want % 10 == 0 {
            peak = peak.max(rss_bytes(pid));
        }
    }
    eprintln!(
        "SSE paced replay: 100 events ({:.1} MB) in order in {:.2} s through a 64 KiB receive buffer; \
         RSS +{:.1} MB",
        bytes as f64 / MB,
        t.elapsed().as_secs_f64(),
        peak.saturating_sub(rss0) as f64 / MB
    );

    // /ws/, same.
    let t = Instant::now();
    let mut ws = connect_small_rcvbuf(h.addr, 64 << 10);
    ws_handshake(&mut ws, "/ws/?cid=big&since=0");
    let mut want = 1u64;
    let mut bytes = 0usize;
    while want <= 100 {
        assert!(Instant::now() < deadline, "/ws/ replay too slow: {} frames", want - 1);
        let (fin, op, payload) = read_frame(&mut ws).unwrap_or_else(|| panic!("/ws/ ended before frame {want}"));
        if op == 9 {
            continue; // a server ping
        }
        assert!(fin && op == 1, "frame {want}: opcode {op}");
        let v: Value = serde_json::from_slice(&payload).expect("envelope JSON");
        assert_eq!((v["id"].as_u64(), v["data"]["i"].as_u64()), (Some(want), Some(want)));
        bytes += payload.len();
        want += 1;
    }
    peak = peak.max(rss_bytes(pid));
    let drops = metric(&h, "herald_slow_consumer_drops_total");
    eprintln!(
        "/ws/ paced replay: 100 frames ({:.1} MB) in order in {:.2} s; peak RSS +{:.1} MB; slow-consumer drops {drops}",
        bytes as f64 / MB,
        t.elapsed().as_secs_f64(),
        peak.saturating_sub(rss0) as f64 / MB
    );
    assert_eq!(drops, 0, "an honest reader was dropped as a slow consumer");
    assert!(
        peak.saturating_sub(rss0) < 64 << 20,
        "replays grew RSS by {:.1} MB",
        peak.saturating_sub(rss0) as f64 / MB
    );
    drop(sse);
}

// 4 ---------------------------------------------------------------------------------------

#[test]
fn a_reader_that_never_reads_during_replay_and_live_publishes_is_dropped() {
    // max_out_queue must exceed ws_max_message + 14 (config validation).
    let h = Herald::start(
        r#"{"history_size":100,"max_body":1048576,"max_out_queue":1048576,"ws_max_message":65536,"ws_max_frame":65536}"#,
    );
    let pid = h.child.id();
    let mut p = Publisher::new(&h);
    for i in 1..=20 {
        p.publish("big", &big_body(i));
    }
    let rss0 = rss_bytes(pid);
    let drops0 = metric(&h, "herald_slow_consumer_drops_total");
    assert_eq!(drops0, 0);

    // Subscribe from the start of history and read nothing at all.
    let mut sub = connect_small_rcvbuf(h.addr, 64 << 10);
    sub.write_all(b"GET /sse/?cid=big&since=0 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();

    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    let mut published = 20usize;
    let mut peak = rss0;
    let mut drops = drops0;
    while drops == drops0 && Instant::now() < deadline && published < 200 {
        published += 1;
        p.publish("big", &big_body(published));
        peak = peak.max(rss_bytes(pid));
        drops = metric(&h, "herald_slow_consumer_drops_total");
    }
    let took = t.elapsed();

    // The connection is closed: what the kernel held arrives, then EOF.
    let mut got = 0usize;
    let mut closed = false;
    let mut buf = vec![0u8; 64 << 10];
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        match sub.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => {
                closed = true; // reset
                break;
            }
        }
    }
    peak = peak.max(rss_bytes(pid));
    let total = published * 200_000;
    eprintln!(
        "never-reading SSE subscriber: dropped after {} live publishes of 200 KB ({:.2} s); slow-consumer drops \
         {drops0} -> {drops}; it had received {:.2} MB of {:.1} MB published; closed: {closed}; RSS +{:.1} MB",
        published - 20,
        took.as_secs_f64(),
        got as f64 / MB,
        total as f64 / MB,
        peak.saturating_sub(rss0) as f64 / MB
    );
    assert!(drops > drops0, "no slow-consumer drop after {} live publishes of 200 KB", published - 20);
    assert!(closed, "the slow consumer's connection was not closed");
    assert!(got < total, "the never-reading subscriber got all {total} bytes before being dropped");
    assert!(peak.saturating_sub(rss0) < 200 << 20, "RSS grew {:.1} MB", peak.saturating_sub(rss0) as f64 / MB);
    // The server is fine.
    assert!(health_latency(&h) < Duration::from_secs(5));
}

// 5 ---------------------------------------------------------------------------------------

#[test]
fn trickled_one_byte_chunks_cost_linear_cpu() {
    // A generous request deadline: this test measures CPU, not the 408. max_body 4 MiB:
    // the decoder allows max(max_body, 64 KiB) framing bytes per body, and 300 000 one-byte
    // chunks carry 1.5 MB of framing (at the default 1 MiB they get 413, by design).
    let h = Herald::start(r#"{"handshake_timeout_ms":30000,"max_body":4194304}"#);
    let pid = h.child.id();
    const N: usize = 300_000;
    let mut wire = b"POST /publish/?cid=t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    wire.extend(b"1\r\nX\r\n".repeat(N));
    wire.extend_from_slice(b"0\r\n\r\n");

    let mut s = h.connect();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let c0 = cpu_seconds(pid);
    let t = Instant::now();
    let mut writes = 0usize;
    for piece in wire.chunks(1000) {
        assert!(t.elapsed() < Duration::from_secs(25), "sending took too long");
        s.write_all(piece).unwrap();
        writes += 1;
        if writes.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let r = read_response(&mut s).expect("publish answered");
    let wall = t.elapsed();
    let cpu = cpu_seconds(pid) - c0;
    eprintln!(
        "chunked trickle: {N} one-byte chunks ({:.2} MB on the wire) in {writes} writes over {:.2} s; herald CPU \
         {cpu:.3} s; reply {} {}",
        wire.len() as f64 / MB,
        wall.as_secs_f64(),
        r.status,
        r.text()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], 1);
    assert!(cpu < 1.0, "decoding {N} one-byte chunks took {cpu:.2} CPU-s");

    let m = get(&h, "/messages/?cid=t");
    assert_eq!(m.status, 200);
    let v = m.json();
    let data = v["messages"][0]["data"].as_str().expect("the body, as a JSON string");
    assert_eq!(data.len(), N);
    assert!(data.bytes().all(|b| b == b'X'));
}

// 6 ---------------------------------------------------------------------------------------

/// Client A: a writer pipelining batches of 1000 `GET /health` as fast as the socket takes
/// them, and a reader draining the answers. `answered` counts answer bytes; `written`
/// counts batches written.
struct PipelineFlood {
    a: TcpStream,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PipelineFlood {
    fn start(h: &Herald) -> PipelineFlood {
        let a = h.connect();
        a.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = {
            let (mut w, stop, written) = (a.try_clone().unwrap(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let batch = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
                while !stop.load(Ordering::Relaxed) {
                    // A write timeout (2 s blocked) is not the end: the server may resume.
                    match w.write_all(&batch) {
                        Ok(()) => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        let reader = {
            let (mut r, stop, n) = (a.try_clone().unwrap(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while !stop.load(Ordering::Relaxed) {
                    match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            n.fetch_add(k as u64, Ordering::Relaxed);
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
        };
        PipelineFlood { a, stop, answered, written, threads: vec![writer, reader] }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.a.shutdown(std::net::Shutdown::Both);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Size of one `/health` answer on a keep-alive connection.
fn health_answer_len(h: &Herald) -> u64 {
    let mut s = h.connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let both = read_all(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&both);
    let second = text.rfind("HTTP/1.1 ").expect("two answers");
    assert!(second > 0, "{text}");
    second as u64
}

#[test]
fn a_pipelining_client_does_not_starve_another_on_the_same_worker() {
    let h = Herald::start(r#"{"workers":1}"#);
    let one = health_answer_len(&h);
    let flood = PipelineFlood::start(&h);

    // Client B: 20 sequential requests on its own keep-alive connection, 100 ms apart.
    std::thread::sleep(Duration::from_millis(300));
    let mut b = BufReader::new(h.connect());
    let mut lat = Vec::new();
    let mut a_per_request = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        b.get_mut().write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read_response(&mut b).expect("B answered");
        assert_eq!(r.status, 200);
        lat.push(t.elapsed());
        a_per_request.push(flood.answered.load(Ordering::Relaxed) / one);
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_answers = flood.answered.load(Ordering::Relaxed) / one;
    let a_asked = flood.written.load(Ordering::Relaxed) * 1000;
    flood.stop();

    // A's progress over the second half of B's run (about 1 s).
    let a_second_half = a_per_request[19] - a_per_request[10];
    lat.sort();
    let (median, max) = (lat[lat.len() / 2], lat[lat.len() - 1]);
    eprintln!(
        "fairness (1 worker): A pipelined {a_asked} /health and got {a_answers} answers ({a_second_half} in the \
         second half of B's run) while B made 20 requests: B median {:.1} ms, max {:.1} ms",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(max < Duration::from_secs(1), "B waited {max:?} behind a pipelining client (median {median:?})");
    // A must be served too (a fair worker, not one that forgot A): answers keep coming.
    assert!(
        a_second_half > 0 && a_answers >= 1000,
        "A stalled: {a_answers} answers to {a_asked} requests written, {a_second_half} in the second half of \
         the run, while the worker served B in {median:?}"
    );
}

// 11 --------------------------------------------------------------------------------------

#[test]
fn pipelining_faster_than_answered_holds_bounded_input() {
    // The client reads every answer, but pipelines faster than 64 requests per loop turn
    // are answered: what the server reads and holds unparsed must stay bounded.
    let h = Herald::start(r#"{"workers":1}"#);
    let pid = h.child.id();
    let one = health_answer_len(&h);
    let rss0 = rss_bytes(pid);
    let flood = PipelineFlood::start(&h);
    let t = Instant::now();
    let mut peak = rss0;
    let mut marks = Vec::new();
    while t.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_bytes(pid));
        if marks.len() < (t.elapsed().as_secs() as usize) {
            marks.push((
                flood.written.load(Ordering::Relaxed) * 1000,
                flood.answered.load(Ordering::Relaxed) / one,
                rss_bytes(pid).saturating_sub(rss0) as f64 / MB,
            ));
        }
    }
    let asked = flood.written.load(Ordering::Relaxed) * 1000;
    let answers = flood.answered.load(Ordering::Relaxed) / one;
    flood.stop();
    let growth = peak.saturating_sub(rss0);
    let req_len = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".len() as u64;
    eprintln!(
        "pipelining /health while reading, 6 s: {asked} requests written ({:.1} MB), {answers} answered, \
         {:.1} MB of requests unanswered; RSS +{:.1} MB (peak); per second (asked, answered, RSS MB): {marks:?}",
        (asked * req_len) as f64 / MB,
        (asked.saturating_sub(answers) * req_len) as f64 / MB,
        growth as f64 / MB
    );
    assert!(
        growth < 16 << 20,
        "RSS grew {:.1} MB holding pipelined input that is read faster than it is answered",
        growth as f64 / MB
    );
    // Without a flood the bound above proves nothing: the client must have been served
    // throughout, answers still coming after the first two seconds.
    let after_2s = marks.get(1).map(|m| m.1).unwrap_or(0);
    assert!(
        answers >= 1000 && answers > after_2s,
        "A stalled: {answers} answers to {asked} requests written, {after_2s} of them by 2 s: the bound was not \
         exercised"
    );
}

// 7 ---------------------------------------------------------------------------------------

#[test]
fn sigterm_under_a_flood_exits_in_time() {
    let mut h = Herald::start(r#"{"workers":1,"shutdown_timeout_ms":1000}"#);
    let pid = h.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let s = h.connect();
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let (stop, got) = (stop.clone(), got.clone());
            std::thread::spawn(move || {
                let batch = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
                let mut s = s;
                let mut buf = vec![0u8; 64 << 10];
                'outer: while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&batch).is_err() {
                        break;
                    }
                    // Read roughly a batch worth of answers (keeps the pipe full, bounded).
                    let mut n = 0;
                    while n < 200 * 100 {
                        match s.read(&mut buf) {
                            Ok(0) => break 'outer,
                            Ok(k) => {
                                n += k;
                                got.fetch_add(k as u64, Ordering::Relaxed);
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => break 'outer,
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let before = got.load(Ordering::Relaxed);
    assert!(before > 0, "the flood got no answers");

    let t = Instant::now();
    // SAFETY: signalling the herald process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let mut status = None;
    while t.elapsed() < Duration::from_secs(15) {
        if let Some(st) = h.child.try_wait().unwrap() {
            status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    eprintln!(
        "SIGTERM under a flood of 4 pipelining clients ({:.1} MB answered before the signal): exit {:?} after {:.2} s",
        before as f64 / MB,
        status,
        took.as_secs_f64()
    );
    assert!(status.is_some(), "herald still running {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(8), "herald took {took:?} to exit after SIGTERM");
}

// 8 ---------------------------------------------------------------------------------------

#[test]
fn multi_channel_sse_delivers_skip_history_with_data_and_no_id() {
    let h = Herald::start(r#"{"http_api":{"insecure":true}}"#);
    let mut sse = SseReader::open(h.connect(), "/sse/?cid=a,b");

    let r = request(
        &h,
        "POST",
        "/api/publish",
        &[("Content-Type", "application/json")],
        br#"{"channel":"a","data":{"x":1},"skip_history":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("result").is_some(), "{}", r.text());
    let pb = publish(&h, "b", br#"{"y":2}"#);
    assert_eq!(pb["id"], 1);

    let first = sse.next().expect("the skip_history event");
    let second = sse.next().expect("the event on b");
    eprintln!("multi-channel SSE: first {first:?}; second {second:?}");
    assert_eq!(first.id, None, "an unsequenced message moves no position: {first:?}");
    let v: Value = serde_json::from_str(&first.data).expect("envelope JSON");
    assert_eq!(v["channel"], "a");
    assert_eq!(v["data"]["x"], 1);
    assert_eq!(second.id.as_deref(), Some("0,1"), "positional ids in cid order: {second:?}");
    let v: Value = serde_json::from_str(&second.data).expect("envelope JSON");
    assert_eq!((v["channel"].as_str(), v["id"].as_u64(), v["data"]["y"].as_u64()), (Some("b"), Some(1), Some(2)));
}

// 9 ---------------------------------------------------------------------------------------

#[test]
fn an_incomplete_websocket_frame_is_closed_with_1008() {
    let h = Herald::start(r#"{"handshake_timeout_ms":1000}"#);
    let mut s = raw_ws(&h, "/echo");
    // A masked text frame announcing 100000 bytes, then 10 of them, then nothing.
    let mut f = vec![0x81u8, 0x80 | 127];
    f.extend_from_slice(&100_000u64.to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f.extend_from_slice(&[b'a' ^ 1; 10]);
    let t = Instant::now();
    s.write_all(&f).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let code = read_close_code(&mut s);
    let took = t.elapsed();
    eprintln!("incomplete ws frame (100000 announced, 10 sent): close {code:?} after {:.2} s", took.as_secs_f64());
    assert_eq!(code, Some(1008), "expected close 1008 within 5 s");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(took >= Duration::from_millis(500), "closed after {took:?}, before handshake_timeout_ms");
}

// 10 --------------------------------------------------------------------------------------

fn assert_nosniff(what: &str, r: &Resp) {
    eprintln!("{what}: {} X-Content-Type-Options: {:?}", r.status, r.header("X-Content-Type-Options"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"), "{what} ({}) lacks nosniff", r.status);
}

#[test]
fn every_response_carries_nosniff() {
    let h = Herald::start("{}");
    let r = get(&h, "/health");
    assert_eq!(r.status, 200);
    assert_nosniff("/health", &r);
    let r = get(&h, "/no/such/path");
    assert_eq!(r.status, 404);
    assert_nosniff("404", &r);
    let mut s = h.connect();
    s.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let r = read_response(&mut s).expect("an answer");
    assert_eq!(r.status, 400);
    assert_nosniff("400 malformed", &r);
    publish(&h, "n", b"{\"k\":1}");
    let r = get(&h, "/messages/?cid=n");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").is_some_and(|c| c.contains("json")));
    assert_nosniff("/messages/", &r);
}

/// The SSE stream head is written by hand in `pubsub::stream`, not by the `Response`
/// builder, and lacks the header. Ignored until the stream heads use the builder.
#[test]
fn sse_stream_head_carries_nosniff() {
    let h = Herald::start("{}");
    let sse = SseReader::open(h.connect(), "/sse/?cid=n");
    eprintln!("/sse/ head: {:?}", sse.head);
    assert!(sse.head.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{}", sse.head);
}

/// Channel permissions hold on every endpoint: with Centrifugo namespaces configured,
/// private (`$`), user-limited (`#`) and closed-namespace channels are refused to the
/// simple endpoints (403 naming the rule), while a Centrifugo anonymous subscribe is
/// refused with 103 by the same decision; `simple_access_namespaces` opens a namespace.
#[test]
fn simple_endpoints_honour_channel_permissions() {
    let cfg = r#"{"http_api":{"insecure":true},"client":{"allow_anonymous_connect_without_token":true},
        "simple_access_namespaces":["feed"],
        "channel":{"without_namespace":{"allow_subscribe_for_client":true,"history_size":10,"history_ttl":"60s"},
        "namespaces":[
          {"name":"secret","history_size":10,"history_ttl":"60s"},
          {"name":"personal","allow_user_limited_channels":true,"allow_subscribe_for_client":true,
           "history_size":10,"history_ttl":"60s"},
          {"name":"feed","history_size":10,"history_ttl":"60s"}]}}"#;
    let h = Herald::start(cfg);
    for ch in ["$private", "secret:plans", "personal:#42", "feed:news", "open"] {
        let body = format!(r#"{{"channel":"{ch}","data":{{"secret":"{ch}"}}}}"#);
        let r = request(&h, "POST", "/api/publish", &[], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["result"].is_object(), "{}", r.text());
    }
    let mut refused = 0;
    for path in ["/messages/", "/listen/", "/sse/", "/stream/", "/ws/"] {
        for (ch, rule) in [
            ("%24private", "private channel"),
            ("secret:plans", "allow_subscribe_for_client"),
            ("personal:%2342", "user-limited"),
        ] {
            let mut hdrs = vec![];
            if path == "/ws/" {
                hdrs = vec![
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ];
            }
            let r = request(&h, "GET", &format!("{path}?cid={ch}&since=0"), &hdrs, b"");
            assert_eq!(r.status, 403, "{path} {ch}: {}", r.text());
            let t = r.text();
            assert!(t.contains(rule), "{path} {ch}: the error names the rule: {t}");
            assert!(!t.contains("\"secret\""), "{path} {ch}: leaked data: {t}");
            refused += 1;
        }
    }
    // Opened and plain channels are served.
    let r = get(&h, "/messages/?cid=feed:news&since=0");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["messages"][0]["data"]["secret"], "feed:news");
    let r = get(&h, "/messages/?cid=open&since=0");
    assert_eq!(r.json()["messages"][0]["data"]["secret"], "open");
    // The Centrifugo protocol refuses the same channels to an anonymous client.
    let mut s = raw_ws(&h, "/connection/websocket");
    s.write_all(&client_frame(true, 1, br#"{"id":1,"connect":{}}"#)).unwrap();
    let (_, _, p) = read_frame(&mut s).expect("connect reply");
    assert!(String::from_utf8_lossy(&p).contains("\"connect\""), "{}", String::from_utf8_lossy(&p));
    for (i, ch) in ["$private", "secret:plans", "personal:#42"].iter().enumerate() {
        let cmd = format!(r#"{{"id":{},"subscribe":{{"channel":"{ch}"}}}}"#, i + 2);
        s.write_all(&client_frame(true, 1, cmd.as_bytes())).unwrap();
        let (_, _, p) = read_frame(&mut s).expect("subscribe reply");
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["error"]["code"], 103, "{ch}: {v}");
    }
    eprintln!("permissions: {refused} simple-endpoint reads refused with 403 naming the rule; 3 Centrifugo subscribes refused with 103");
}

/// `/api/publish` passes `data` through byte for byte (key order and spacing kept), in
/// history and in deliveries, as Centrifugo does.
#[test]
fn api_publish_keeps_data_bytes() {
    let h = Herald::start(
        r#"{"http_api":{"insecure":true},"channel":{"without_namespace":{"history_size":10,"history_ttl":"60s"}}}"#,
    );
    let data = r#"{"z":1,"a":2,"m":  [1, 2]}"#;
    let mut sse = SseReader::open(h.connect(), "/sse/?cid=raw");
    let body = format!(r#"{{"channel":"raw","data":{data}}}"#);
    let r = request(&h, "POST", "/api/publish", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = sse.next().expect("delivery");
    assert_eq!(ev.data, format!(r#"{{"id":1,"channel":"raw","data":{data}}}"#));
    let r = get(&h, "/messages/?cid=raw&since=0");
    assert!(r.text().contains(data), "history keeps the bytes: {}", r.text());
    let r = request(&h, "POST", "/api/history", &[], br#"{"channel":"raw","limit":10}"#);
    assert!(r.text().contains(data), "{}", r.text());
    eprintln!("api publish data kept byte for byte: {data}");
}

/// `client.allowed_origins` holds on every `/connection/*` endpoint, the unidirectional
/// SSE and HTTP-stream ones included.
#[test]
fn uni_streams_check_allowed_origins() {
    let h = Herald::start(
        r#"{"client":{"allow_anonymous_connect_without_token":true,"allowed_origins":["https://app.example"]}}"#,
    );
    for (method, path, body) in
        [("GET", "/connection/uni_sse", &b""[..]), ("POST", "/connection/uni_http_stream", &b"{}"[..])]
    {
        let r = request(&h, method, path, &[("Origin", "https://evil.example")], body);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let mut s = h.connect();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    }
}

/// Centrifugo commands count too: an anonymous client sends frames of 100 `history`
/// commands on a channel holding 50 x 100 KB (5 MB per answer) and never reads. Before,
/// RSS reached 5.4 GB and SIGTERM had no effect; now the answers are paced, frames wait
/// unparsed, RSS stays bounded, /health answers and SIGTERM stops the server in time.
#[test]
fn centrifugo_history_flood_without_reading_is_bounded() {
    let mut h = Herald::start(
        r#"{"workers":1,"shutdown_timeout_ms":1000,"max_body":200000,
            "client":{"allow_anonymous_connect_without_token":true},
            "channel":{"namespaces":[{"name":"h","history_size":50,"history_ttl":"300s",
              "allow_subscribe_for_client":true,"allow_subscribe_for_anonymous":true,
              "allow_history_for_client":true,"allow_history_for_anonymous":true}]}}"#,
    );
    let pid = h.child.id();
    let big = format!("\"{}\"", "h".repeat(100_000));
    for _ in 0..50 {
        publish(&h, "h:x", big.as_bytes());
    }
    let rss0 = rss_bytes(pid);
    let mut s = raw_ws(&h, "/connection/websocket");
    s.write_all(&client_frame(true, 1, br#"{"id":1,"connect":{}}"#)).unwrap();
    let (_, _, p) = read_frame(&mut s).expect("connect reply");
    assert!(String::from_utf8_lossy(&p).contains("\"connect\""));
    let cmds: Vec<String> =
        (0..100).map(|i| format!(r#"{{"id":{},"history":{{"channel":"h:x","limit":-1}}}}"#, i + 2)).collect();
    let frame = client_frame(true, 1, cmds.join("\n").as_bytes());
    let mut health = Vec::new();
    let fl = flood_without_reading(&mut s, &frame, pid, Duration::from_secs(3), |el| {
        if el >= Duration::from_millis(1000 * (health.len() as u64 + 1)) {
            health.push(health_latency(&h));
        }
    });
    let growth = fl.peak_rss.saturating_sub(rss0);
    eprintln!(
        "history flood: {} bytes of command frames accepted ({} frames, {:.0} MB of answers asked for); \
         RSS +{:.1} MB; /health {:?}",
        fl.accepted,
        fl.accepted / frame.len() as u64,
        (fl.accepted / frame.len() as u64) as f64 * 100.0 * 5.0,
        growth as f64 / MB,
        health
    );
    assert!(growth < 128 << 20, "RSS grew {:.1} MB", growth as f64 / MB);
    assert!(health.len() >= 2 && health.iter().all(|d| *d < Duration::from_secs(3)), "{health:?}");
    let (status, took) = h.terminate();
    eprintln!("SIGTERM with the flood connection open: exit {status:?} after {took:?}");
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
}

/// Centrifugo recovery of a large history is paced too: a client recovering 100 x 200 KB
/// from offset 0 through a 64 KiB receive buffer gets one subscribe reply with all 100
/// publications (about 20 MB in one frame), then the live one published meanwhile.
#[test]
fn centrifugo_recovery_of_a_large_history_arrives_whole() {
    let h = Herald::start(
        r#"{"workers":1,"client":{"allow_anonymous_connect_without_token":true},
            "channel":{"namespaces":[{"name":"big","history_size":100,"history_ttl":"300s","force_recovery":true,
              "allow_subscribe_for_client":true,"allow_subscribe_for_anonymous":true}]}}"#,
    );
    let pid = h.child.id();
    let mut p = Publisher::new(&h);
    for i in 0..100 {
        p.publish("big:r", &big_body(i));
    }
    let rss0 = rss_bytes(pid);
    let mut s = connect_small_rcvbuf(h.addr, 64 * 1024);
    ws_handshake(&mut s, "/connection/websocket");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&client_frame(true, 1, br#"{"id":1,"connect":{}}"#)).unwrap();
    read_frame(&mut s).expect("connect reply");
    // The epoch, from a subscription that does not recover; then leave it.
    s.write_all(&client_frame(true, 1, br#"{"id":2,"subscribe":{"channel":"big:r"}}"#)).unwrap();
    let (_, _, r) = read_frame(&mut s).expect("subscribe reply");
    let v: Value = serde_json::from_slice(&r).unwrap();
    let epoch = v["subscribe"]["epoch"].as_str().unwrap().to_string();
    s.write_all(&client_frame(true, 1, br#"{"id":3,"unsubscribe":{"channel":"big:r"}}"#)).unwrap();
    read_frame(&mut s).expect("unsubscribe reply");
    let t = Instant::now();
    let cmd = format!(r#"{{"id":4,"subscribe":{{"channel":"big:r","recover":true,"offset":0,"epoch":"{epoch}"}}}}"#);
    s.write_all(&client_frame(true, 1, cmd.as_bytes())).unwrap();
    p.publish("big:r", b"\"live\"");
    let (_, _, r) = read_frame(&mut s).expect("recovering subscribe reply");
    let took = t.elapsed();
    let peak = rss_bytes(pid).saturating_sub(rss0);
    let v: Value = serde_json::from_slice(&r).expect("one JSON reply");
    assert_eq!(v["id"], 4);
    assert_eq!(v["subscribe"]["recovered"], true, "{}", &String::from_utf8_lossy(&r)[..200]);
    let offsets: Vec<u64> =
        v["subscribe"]["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<u64>>());
    let (_, _, live) = read_frame(&mut s).expect("the live push after the reply");
    let l: Value = serde_json::from_slice(&live).unwrap();
    assert_eq!(l["push"]["pub"]["offset"], 101, "{l}");
    eprintln!(
        "centrifugo recovery: {:.1} MB reply with 100 publications in {took:?} through a 64 KiB buffer; RSS +{:.1} MB",
        r.len() as f64 / MB,
        peak as f64 / MB
    );
}
