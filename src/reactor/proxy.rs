//! The proxy threads: the calls Centrifugo's proxies make to the application backend
//! (connect, refresh, subscribe, publish, sub_refresh, rpc), made off the workers.
//!
//! Owns: a bounded queue of calls ([`Pool::call`] never blocks: a full queue is
//! [`Failure::Busy`] at once), `proxy_threads` threads that each take a call, POST it with
//! `ureq` (kept-alive connections to the backend, shared by the threads), read at most
//! `proxy_max_response` bytes, decode the answer ([`crate::proto::proxy::decode`], so a
//! worker never parses it) and send it to the worker that asked, as
//! [`Note::Answer`] with one [`Done::Proxy`]. Every call is answered: a result, or a
//! failure when the queue was full, the deadline passed (the proxy's `timeout` counts from
//! when the worker queued the call, waiting for a thread included), the backend was
//! unreachable, answered another status than 200 (unless a `status_to_code_transforms`
//! rule maps it), too much, or something malformed.
//!
//! Called by [`super::Server::start`] ([`Pool::start`]), and through the
//! [`crate::transport::env::Backend`] seam by the workers. Must never: run on a worker
//! thread, log request bodies or headers (they carry cookies and tokens), follow a
//! redirect (a POST answered 3xx is a failed call, as the backend is misconfigured).
//!
//! Why threads with a blocking client: Herald has no async runtime; a call is one short
//! request to one backend, and `proxy_threads` bounds how many are outstanding while the
//! queue bounds how many wait. HTTPS trusts the system's roots, as the JWKS fetcher does.

use crate::hub::bus::{Inbox, Note};
use crate::hub::{Done, Reply};
use crate::proto::proxy::{decode, status_answer, Answer, Failure};
use crate::transport::env::{Backend, Call};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Job {
    call: Call,
    reply: Reply,
    deadline: Instant,
}

/// The proxy threads and their queue.
pub struct Pool {
    tx: SyncSender<Job>,
    in_flight: Arc<AtomicUsize>,
    /// When a full queue was last logged (seconds since the pool started): once a second
    /// at most, however many calls it refuses.
    busy_logged: std::sync::atomic::AtomicU64,
    started: Instant,
}

impl Pool {
    /// Start `threads` threads answering into `inboxes` (by worker index), with room for
    /// `queue` waiting calls and answers of at most `max_response` bytes.
    pub fn start(threads: usize, queue: usize, max_response: usize, inboxes: Vec<Arc<Inbox>>) -> std::io::Result<Pool> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let agent = agent(threads);
        for i in 0..threads {
            let (rx, inboxes, agent, in_flight) = (rx.clone(), inboxes.clone(), agent.clone(), in_flight.clone());
            std::thread::Builder::new()
                .name(format!("herald-proxy{i}"))
                .spawn(move || run(&rx, &inboxes, &agent, max_response, &in_flight))?;
        }
        log::info!("proxy: {threads} threads for calls to the application backend, {queue} may wait");
        Ok(Pool { tx, in_flight, busy_logged: Default::default(), started: Instant::now() })
    }
}

impl Backend for Pool {
    fn call(&self, call: Call, reply: Reply) -> Result<(), Failure> {
        let deadline = Instant::now() + call.timeout;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Job { call, reply, deadline }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                let now = self.started.elapsed().as_secs() + 1;
                if self.busy_logged.swap(now, Ordering::Relaxed) != now {
                    log::warn!(
                        "proxy {} to {}: {} (clients get error 100 and retry)",
                        j.call.kind.as_str(),
                        shown(&j.call.url),
                        Failure::Busy
                    );
                }
                Err(Failure::Busy)
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

fn run(rx: &Mutex<Receiver<Job>>, inboxes: &[Arc<Inbox>], agent: &ureq::Agent, max: usize, in_flight: &AtomicUsize) {
    loop {
        // The lock is held only while waiting for the next job, never during a call.
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return, // the pool is gone
        };
        let started = Instant::now();
        let r = perform(agent, &job, max);
        match &r {
            Ok(_) => log::debug!(
                "proxy {} to {}: answered in {} ms",
                job.call.kind.as_str(),
                shown(&job.call.url),
                started.elapsed().as_millis()
            ),
            Err(e) => log::warn!("proxy {} to {}: {e}", job.call.kind.as_str(), shown(&job.call.url)),
        }
        in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(inbox) = inboxes.get(job.reply.worker) {
            inbox.send(Note::Answer { conn: job.reply.conn, done: vec![Done::Proxy(r)] });
        }
    }
}

/// One POST: the body, the call's headers, `Content-Type: application/json`; the deadline
/// bounds the whole exchange.
fn perform(agent: &ureq::Agent, job: &Job, max: usize) -> Result<Box<Answer>, Failure> {
    let left = job.deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(Failure::Timeout);
    }
    let mut req = agent.post(&job.call.url).config().timeout_global(Some(left)).build();
    for (k, v) in &job.call.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req = req.header("Content-Type", "application/json");
    let mut resp = req.send(&job.call.body[..]).map_err(failure)?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(max as u64).read_to_vec();
    if status != 200 {
        return status_answer(status, &job.call.transforms).map(Box::new);
    }
    let body = body.map_err(failure)?;
    decode(&body).map(Box::new)
}

fn failure(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(_) => Failure::Timeout,
        ureq::Error::BodyExceedsLimit(_) => Failure::TooLarge,
        e => Failure::Transport(e.to_string()),
    }
}

/// One agent for all threads: its pool keeps a connection per thread alive per backend.
fn agent(threads: usize) -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(threads * 4)
        .max_idle_connections_per_host(threads)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(super::jwks::root_certs()).build())
        .build()
        .into()
}

/// `scheme://host[:port]/path` for the log: no credentials or query.
fn shown(url: &str) -> String {
    super::jwks::shown(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::proxy::Kind;
    use std::io::{BufRead, BufReader, Read, Write};

    fn call(url: String, timeout_ms: u64) -> Call {
        Call {
            kind: Kind::Rpc,
            url,
            timeout: Duration::from_millis(timeout_ms),
            headers: vec![("Cookie".into(), "a=1".into())],
            body: bytes::Bytes::from_static(b"{\"method\":\"m\"}"),
            transforms: vec![],
        }
    }

    fn answer(rx: &Receiver<Note>) -> Result<Box<Answer>, Failure> {
        match rx.recv_timeout(Duration::from_secs(10)).expect("an answer") {
            Note::Answer { mut done, .. } => done.pop().expect("one").proxy(),
            _ => panic!("not an answer"),
        }
    }

    /// A one-connection-at-a-time HTTP server answering `body` after `delay`, recording
    /// request heads.
    fn backend(body: &'static str, delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/rpc", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(s) = s else { continue };
                s2.lock().unwrap().push(format!("connection {n}"));
                let seen = s2.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut s = s;
                    loop {
                        let mut head = String::new();
                        let mut len = 0;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                            head.push_str(&line);
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut b = vec![0; len];
                        r.read_exact(&mut b).unwrap();
                        seen.lock().unwrap().push(head);
                        std::thread::sleep(delay);
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        (url, seen)
    }

    #[test]
    fn calls_answered_through_the_inbox_on_kept_alive_connections() {
        let (inbox, rx) = Inbox::new();
        let pool = Pool::start(1, 4, 1024, vec![inbox]).unwrap();
        let (url, seen) = backend(r#"{"result":{"data":{"ok":1}}}"#, Duration::ZERO);
        let reply = Reply { worker: 0, conn: crate::hub::local::ConnId { key: 3, gen: 1 } };
        for _ in 0..2 {
            pool.call(call(url.clone(), 2000), reply).unwrap();
            let a = answer(&rx).unwrap();
            assert_eq!(&a.result.unwrap().data.unwrap()[..], br#"{"ok":1}"#);
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "one connection kept alive for both calls: {seen:?}");
        let head = seen[1].to_ascii_lowercase();
        assert!(head.starts_with("post /rpc http/1.1") && head.contains("cookie: a=1"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn timeouts_full_queues_and_large_answers_fail() {
        let (inbox, rx) = Inbox::new();
        let pool = Pool::start(1, 1, 1024, vec![inbox]).unwrap();
        let (slow, _) = backend("{}", Duration::from_millis(600));
        let reply = Reply { worker: 0, conn: crate::hub::local::ConnId { key: 1, gen: 1 } };
        let t = Instant::now();
        // One thread and a queue of one: at most two calls are taken, the next is refused at
        // once (the thread may not have taken the first yet, then only one is).
        let taken = (0..10).take_while(|_| pool.call(call(slow.clone(), 200), reply).is_ok()).count();
        assert!((1..=2).contains(&taken), "{taken}");
        // Each times out; a queued call's deadline passes while it waits.
        for _ in 0..taken {
            assert_eq!(answer(&rx).unwrap_err(), Failure::Timeout);
        }
        assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
        let (big, _) = backend(r#"{"result":{"data":"0123456789012345678901234567890123456789"}}"#, Duration::ZERO);
        let (inbox, rx) = Inbox::new();
        let pool = Pool::start(1, 1, 32, vec![inbox]).unwrap();
        pool.call(call(big, 2000), reply).unwrap();
        assert_eq!(answer(&rx).unwrap_err(), Failure::TooLarge);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        pool.call(call(format!("http://127.0.0.1:{port}/x"), 2000), reply).unwrap();
        assert!(matches!(answer(&rx).unwrap_err(), Failure::Transport(_)));
    }
}
