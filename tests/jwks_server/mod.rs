//! A JWKS endpoint for tests: a real HTTP/1.1 server (optionally over TLS with a
//! certificate made by rcgen) on a loopback port, one thread, answering each path with what
//! the test set last, and counting the requests. It stops (by its own flag) when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status and body (`application/json`).
    Doc(u16, String),
    /// Close the connection without a word (an endpoint that is down).
    Close,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Answer>,
    /// (path, when) of every request.
    hits: Vec<(String, Instant)>,
}

pub struct JwksServer {
    pub addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl JwksServer {
    /// Plain HTTP.
    pub fn start() -> JwksServer {
        Self::start_tls(None)
    }

    /// HTTPS with this server configuration when given.
    pub fn start_tls(tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp, is_tls) = (state.clone(), stop.clone(), tls.is_some());
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(sock) = sock else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
                match &tls {
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else { continue };
                        serve(rustls::StreamOwned::new(conn, sock), &st);
                    }
                    None => serve(sock, &st),
                }
            }
        });
        JwksServer { addr, tls: is_tls, state, stop }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Answer `path` with `a` from now on.
    pub fn set(&self, path: &str, a: Answer) {
        self.state.lock().unwrap().routes.insert(path.to_string(), a);
    }

    /// Serve this JWKS document at `path` (status 200).
    pub fn keys(&self, path: &str, keys: &[serde_json::Value]) {
        self.set(path, Answer::Doc(200, serde_json::json!({ "keys": keys }).to_string()));
    }

    /// Requests `path` has had.
    pub fn hits(&self, path: &str) -> usize {
        self.state.lock().unwrap().hits.iter().filter(|(p, _)| p == path).count()
    }

    /// How long ago `path` was last requested.
    pub fn since_last(&self, path: &str) -> Option<Duration> {
        self.state.lock().unwrap().hits.iter().rev().find(|(p, _)| p == path).map(|(_, t)| t.elapsed())
    }

    /// Wait until `path` has had `n` requests (panics after `limit`).
    pub fn wait_hits(&self, path: &str, n: usize, limit: Duration) {
        let until = Instant::now() + limit;
        while self.hits(path) < n {
            assert!(Instant::now() < until, "{path}: {} requests, {n} expected", self.hits(path));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One request, one answer, then close.
fn serve(mut s: impl Read + Write, state: &Mutex<State>) {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let answer = {
        let mut st = state.lock().unwrap();
        st.hits.push((path.clone(), Instant::now()));
        st.routes.get(&path).cloned().unwrap_or(Answer::Doc(404, "{}".into()))
    };
    match answer {
        Answer::Close => {}
        Answer::Doc(status, body) => {
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
            let _ = s.flush();
        }
    }
}
