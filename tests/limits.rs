//! Connection limits at the open-files limit: herald runs with `ulimit -n 128` (cheap to
//! reach), more connections arrive than it can hold, and
//! - connections already open keep working (a WebSocket echo round-trip),
//! - the excess wait in the listen backlog (no answer, no reset) while accepts are paused,
//! - the server does not spin meanwhile (its CPU time over 2 s stays small),
//! - service resumes once connections close: the waiting ones are accepted and answered.
//!
//! `max_connections` → 503 is covered in tests/core.rs.

mod common;

use common::{client_frame, cpu_seconds, raw_ws, read_frame, read_response, Herald};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const NOFILE: u64 = 128;
/// More than NOFILE, well under the listen backlog (4096), so the excess queue in the kernel.
const CLIENTS: usize = 200;

fn echo_round_trip(s: &mut TcpStream, text: &[u8]) {
    s.write_all(&client_frame(true, 1, text)).unwrap();
    let (fin, op, p) = read_frame(s).expect("echo frame");
    assert!(fin && op == 1 && p == text, "echo answered {op} {:?}", String::from_utf8_lossy(&p));
}

/// Send a keep-alive `GET /health`; the connection is open at TCP level whether or not
/// herald has accepted it yet.
fn health_request(h: &Herald) -> TcpStream {
    let mut s = TcpStream::connect(h.addr).expect("connect (the backlog takes it)");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s
}

/// Whether a response has arrived (None: nothing yet; Some(status)), without waiting.
fn answered_now(s: &mut TcpStream) -> Option<u16> {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(n) if n > 0 => read_response(s).map(|r| r.status),
        Ok(_) => panic!("connection closed instead of waiting"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("waiting connection failed: {e}"),
    }
}

/// Collect answers from `pending` until `want` arrived or `t` passed; returns who answered.
fn collect_answers(clients: &mut [TcpStream], pending: &mut Vec<usize>, want: usize, t: Duration) -> Vec<usize> {
    let end = Instant::now() + t;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < end {
        pending.retain(|&i| match answered_now(&mut clients[i]) {
            Some(status) => {
                assert_eq!(status, 200);
                got.push(i);
                false
            }
            None => true,
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    got
}

#[test]
fn at_the_fd_limit_existing_work_excess_waits_and_service_resumes() {
    let h = Herald::start_limited(
        r#"{"handshake_timeout_ms": 60000, "idle_timeout_ms": 60000, "ws_ping_interval_ms": 60000}"#,
        &["--workers", "1"],
        Some(NOFILE),
    );
    let pid = h.child.id();
    assert!(
        common::wait_until(Duration::from_secs(5), || h.log.lock().unwrap().iter().any(|l| l.contains("soft 128"))),
        "herald should log its open-files limit: {:?}",
        h.log.lock().unwrap()
    );
    let mut echo = raw_ws(&h, "/echo");
    echo_round_trip(&mut echo, b"before");

    // Fill the descriptor table and then some.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| health_request(&h)).collect();
    for c in clients.iter() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    // Answers stop coming once the descriptors are used up; give them 2 s.
    let mut waiting: Vec<usize> = (0..CLIENTS).collect();
    let answered = collect_answers(&mut clients, &mut waiting, CLIENTS, Duration::from_secs(2));
    eprintln!("{} answered, {} waiting in the backlog", answered.len(), waiting.len());
    assert!(answered.len() >= 64, "only {} of {CLIENTS} answered under a limit of {NOFILE}", answered.len());
    assert!(!waiting.is_empty(), "all {CLIENTS} were served: the limit of {NOFILE} did not apply");
    assert!(answered.len() + 1 < NOFILE as usize, "{} connections answered with {NOFILE} descriptors", answered.len());

    // Existing connections carry on while accepts are paused.
    echo_round_trip(&mut echo, b"during");
    for &i in answered.iter().take(5) {
        clients[i].write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut clients[i]).map(|r| r.status), Some(200));
    }

    // No spinning: 2 s at the limit cost little CPU (a sanity bound, not a performance claim;
    // a busy accept loop would burn close to 2 s).
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - c0;
    eprintln!("CPU at the limit: {used:.3} s in 2 s");
    assert!(used < 0.3, "herald used {used:.2} s of CPU in 2 s while at its fd limit");
    assert!(h.log.lock().unwrap().iter().any(|l| l.contains("pausing accepts")), "the accept pause should be logged");

    // Free 60 descriptors: as many waiting clients are now accepted and answered.
    let freed: Vec<usize> = answered.iter().rev().take(60).copied().collect();
    for &i in &freed {
        clients[i].shutdown(std::net::Shutdown::Both).ok();
    }
    let served = collect_answers(&mut clients, &mut waiting, 40, Duration::from_secs(10)).len();
    assert!(served >= 40, "after 60 connections closed only {served} waiting clients were served");
    echo_round_trip(&mut echo, b"after");
    let mut rest = Vec::new();
    echo.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let _ = echo.read_to_end(&mut rest);
}
