//! The io_uring backend (`io: "uring"`) beside the epoll one. The rest of the integration
//! suites run against it with `HERALD_TEST_IO=uring`; this file holds what is particular
//! to it:
//! - an idle connection holds no receive buffer: the memory each further idle WebSocket
//!   connection adds is measured on both backends, and uring's must be comparable to
//!   epoll's (a receive buffer per connection, even the ring's 2 KiB one, would show);
//! - bytes larger than the whole provided-buffer ring (1 MiB per worker) arrive whole, so a
//!   receive that ran out of buffers is armed again;
//! - the backend is refused with TLS, naming the key.
//!
//! Skipped (with a message) where io_uring is disabled.

mod common;

use common::{publish, read_response, rss_bytes, Herald};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn uring_available() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_else(|_| "0".into());
    if disabled.trim() != "0" {
        eprintln!("io_uring is disabled here (io_uring_disabled = {}); skipped", disabled.trim());
        return false;
    }
    true
}

/// Open `n` WebSocket subscribers on `/ws/?cid=idle`, handshakes pipelined (all requests
/// written, then all answers read).
fn open_idle(h: &Herald, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = h.connect();
        write!(
            s,
            "GET /ws/?cid=idle HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        v.push(s);
    }
    for s in &mut v {
        let r = read_response(s).expect("handshake answer");
        assert_eq!(r.status, 101);
    }
    v
}

/// Resident memory once allocator caches settle (jemalloc returns freed pages after ~1 s).
fn settled_rss(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_millis(2500));
    rss_bytes(pid)
}

/// Bytes of RSS per idle connection for the first `N` connections (which also pay for
/// whatever the worker sets up at first use, e.g. the receive buffers touched) and for the
/// next `N` (the cost of one more idle connection).
fn per_idle_conn(io: &str) -> (f64, f64) {
    const N: usize = 2000;
    let h = Herald::start_with(r#"{"workers": 1}"#, &["--io", io]);
    let pid = h.child.id();
    let r0 = settled_rss(pid);
    let a = open_idle(&h, N);
    let r1 = settled_rss(pid);
    let b = open_idle(&h, N);
    let r2 = settled_rss(pid);
    drop((a, b));
    let first = (r1 as f64 - r0 as f64) / N as f64;
    let next = (r2 as f64 - r1 as f64) / N as f64;
    eprintln!(
        "{io}: RSS {r0} -> {r1} -> {r2} B: first {N} idle connections {first:.0} B each, next {N} {next:.0} B each"
    );
    (first, next)
}

#[test]
fn idle_connections_hold_no_receive_buffer() {
    if !uring_available() {
        return;
    }
    let (e_first, e_next) = per_idle_conn("epoll");
    let (u_first, u_next) = per_idle_conn("uring");
    eprintln!("per idle connection: epoll {e_first:.0} / {e_next:.0} B, uring {u_first:.0} / {u_next:.0} B");
    // A receive buffer per connection (2 KiB, the ring's buffer size) would put uring's
    // marginal cost at least that far above epoll's. The slack covers allocator noise.
    assert!(
        u_next < e_next + 1024.0,
        "an idle uring connection costs {u_next:.0} B, an epoll one {e_next:.0} B: something per connection is held"
    );
    assert!(u_next < 2048.0, "an idle uring connection costs {u_next:.0} B");
}

#[test]
fn bytes_beyond_the_whole_buffer_ring_arrive_whole() {
    if !uring_available() {
        return;
    }
    let h = Herald::start_with(r#"{"workers": 1, "max_body": 3000000, "max_out_queue": 8000000}"#, &["--io", "uring"]);
    // 2.5 MB in one request: more than the worker's 512 x 2 KiB receive buffers at once.
    let body: Vec<u8> = (0..2_500_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = publish(&h, "big", &body);
    assert_eq!(r["id"], 1, "{r}");
    let mut s = h.connect();
    s.write_all(b"GET /messages/?cid=big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let resp = read_response(&mut s).unwrap();
    assert_eq!(resp.status, 200);
    let v = resp.json();
    let data = v["messages"][0]["data"].as_str().expect("data as a string");
    assert_eq!(data.as_bytes(), &body[..]);
    // And many requests pipelined in one write (beyond the turn budget of 64): all answered.
    let mut reqs = Vec::new();
    for _ in 0..300 {
        reqs.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    s.write_all(&reqs).unwrap();
    for i in 0..300 {
        let r = read_response(&mut s).unwrap_or_else(|| panic!("answer {i} missing"));
        assert_eq!(r.status, 200);
    }
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing more: {} bytes", rest.len());
}

#[test]
fn uring_with_tls_is_refused_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--bind", "127.0.0.1", "--port", "0", "--io", "uring", "--config", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(br#"{"io": "uring", "http_server": {"tls": {"enabled": true, "cert_pem_file": "x.pem", "key_pem_file": "x.key"}}}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("key `io`") && err.contains("TLS"), "{err}");
}
