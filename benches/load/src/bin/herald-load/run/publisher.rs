//! The publisher side of the load run: HTTP keep-alive connections (channel `c` on
//! connection `c % pub_conns`, so each channel's messages are published in order), each
//! with up to `pub_pipeline` requests in flight; answers are matched to requests in order
//! and a non-2xx answer (or, with Centrifugo's API, an answer carrying an `error`) marks its
//! message as expecting no deliveries.
//!
//! Called from `run.rs`: `open_publishers` after connecting, `publish_next` at the rate or
//! window, `pub_event` on readiness of a publisher connection.

use super::{chan_name, read_in, Msg, PubApi, Run, PUB_TOKEN_BASE};
use crate::wire;
use herald::proto::http::ChunkedDecoder;
use herald_bench_tools::http::{self, parse_response};
use herald_bench_tools::sock::{connect_from, write_pending};
use herald_bench_tools::text;
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::collections::VecDeque;
use std::io;

/// Where a publisher connection is.
#[derive(PartialEq, Eq)]
enum PubState {
    Connecting,
    Open,
    Dead,
}

/// One publisher connection and its pipeline.
pub(super) struct Publisher {
    sock: TcpStream,
    state: PubState,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// The messages of each request sent and not yet answered, in order (one per request,
    /// or up to `pub_batch` with `/api/batch`).
    inflight: VecDeque<Vec<u64>>,
    /// Requests waiting for a pipeline slot.
    queued: VecDeque<u64>,
    resp: Option<Resp>,
}

/// The answer being read: status, then the body by `Content-Length` or chunked.
struct Resp {
    status: u16,
    len: Option<usize>,
    dec: Option<ChunkedDecoder>,
    /// The de-chunked body so far (chunked answers only).
    body: Vec<u8>,
}

impl Run<'_> {
    /// Open the `pub_conns` publisher connections (from the kernel's source address).
    pub(super) fn open_publishers(&mut self) {
        for i in 0..self.o.pub_conns {
            let state = PubState::Connecting;
            let mut sock = match connect_from(None, self.o.publ.addr) {
                Ok(s) => s,
                Err(e) => {
                    self.note_error(format!("publisher connect: {e}"));
                    continue;
                }
            };
            if self
                .poll
                .registry()
                .register(&mut sock, Token(PUB_TOKEN_BASE + i), Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.pubs.push(Publisher {
                sock,
                state,
                out: Vec::new(),
                inbuf: Vec::new(),
                inflight: VecDeque::new(),
                queued: VecDeque::new(),
                resp: None,
            });
        }
    }

    /// Create message `seq` on its channel and hand it to that channel's publisher.
    pub(super) fn publish_next(&mut self, now: u64) -> bool {
        let seq = self.msgs.len() as u64 + 1;
        let ch = ((seq - 1) % self.o.channels as u64) as u32;
        let pi = ch as usize % self.pubs.len().max(1);
        let Some(p) = self.pubs.get_mut(pi) else { return false };
        if p.state == PubState::Dead || p.queued.len() > 10_000 {
            self.t.pub_skipped += 1;
            return false;
        }
        self.msgs.push(Msg { ch, sent_ns: now, expected: self.alive[ch as usize], got: 0 });
        self.t.published += 1;
        p.queued.push_back(seq);
        self.pump_pub(pi);
        true
    }

    fn pump_pub(&mut self, pi: usize) {
        let p = &mut self.pubs[pi];
        if p.state != PubState::Open {
            return;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let batch = self.o.pub_batch > 1;
        while p.inflight.len() < self.o.pub_pipeline && !p.queued.is_empty() {
            let n = p.queued.len().min(self.o.pub_batch);
            let seqs: Vec<u64> = p.queued.drain(..n).collect();
            let mut target = String::new();
            let mut body = Vec::new();
            if batch {
                body.extend_from_slice(b"{\"commands\":[");
            }
            for (i, &seq) in seqs.iter().enumerate() {
                let m = &mut self.msgs[seq as usize - 1];
                // The send time is when the request leaves, not when it was queued.
                m.sent_ns = now;
                let msg = if self.o.json {
                    wire::json_message(seq, now, self.o.size)
                } else {
                    wire::message(seq, now, self.o.size)
                };
                let ch = chan_name(self.o, m.ch);
                target = self.o.publ.target(&ch);
                let one = match self.o.pub_api {
                    PubApi::Plain => msg,
                    PubApi::Centrifugo => wire::cf::publish_body(&ch, &msg),
                };
                if batch {
                    body.extend_from_slice(if i == 0 { b"{\"publish\":" } else { b",{\"publish\":" });
                    body.extend_from_slice(&one);
                    body.push(b'}');
                } else {
                    body = one;
                }
            }
            if batch {
                body.extend_from_slice(b"]}");
                target = batch_path(&target);
            }
            let key = self.o.api_key.as_deref().map(|k| [("X-API-Key", k)]);
            let hdrs = key.as_ref().map(|k| &k[..]).unwrap_or(&[]);
            p.out.extend_from_slice(&http::post_request_with(&self.o.publ.host, &target, &body, hdrs));
            p.inflight.push_back(seqs);
        }
        if let Err(e) = write_pending(&mut p.sock, &mut p.out) {
            p.state = PubState::Dead;
            let why = format!("publisher write: {e}");
            self.note_error(why);
        }
    }

    /// Readiness on publisher connection `pi`: finish its connect, read and match answers,
    /// send what the pipeline allows.
    pub(super) fn pub_event(&mut self, pi: usize) {
        let p = &mut self.pubs[pi];
        if p.state == PubState::Dead {
            return;
        }
        if p.state == PubState::Connecting {
            match (p.sock.take_error(), p.sock.peer_addr()) {
                (Ok(None), Ok(_)) => p.state = PubState::Open,
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                (Ok(Some(e)) | Err(e), _) | (_, Err(e)) => {
                    p.state = PubState::Dead;
                    return self.note_error(format!("publisher connect: {e}"));
                }
            }
        }
        let alive = read_in(&mut p.sock, &mut self.scratch, &mut p.inbuf);
        let api = self.o.pub_api;
        loop {
            let p = &mut self.pubs[pi];
            if p.resp.is_none() {
                match parse_response(&p.inbuf) {
                    Ok(Some(h)) => {
                        p.inbuf.drain(..h.head_len);
                        let dec = h.chunked.then(|| ChunkedDecoder::new(1 << 20));
                        let len = if h.chunked { None } else { Some(h.content_length.unwrap_or(0)) };
                        p.resp = Some(Resp { status: h.status, len, dec, body: Vec::new() });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        p.state = PubState::Dead;
                        self.note_error(format!("publisher: {e}"));
                        return;
                    }
                }
            }
            let Some(r) = p.resp.as_mut() else { break };
            // Centrifugo's API answers its errors with 200 and `{"error":{...}}`: the body
            // is looked at only then.
            let mut api_error = Vec::new();
            let batch = p.inflight.front().map_or(0, |s| if self.o.pub_batch > 1 { s.len() } else { 0 });
            let complete = match (r.len, r.dec.as_mut()) {
                (Some(n), _) if p.inbuf.len() >= n => {
                    if api == PubApi::Centrifugo {
                        api_error = api_errors_in(&p.inbuf[..n], batch);
                    }
                    p.inbuf.drain(..n);
                    true
                }
                (Some(_), _) => false,
                (None, Some(d)) => match d.feed(&p.inbuf, &mut r.body) {
                    Ok((used, done)) => {
                        p.inbuf.drain(..used);
                        if done && api == PubApi::Centrifugo {
                            api_error = api_errors_in(&r.body, batch);
                        }
                        done
                    }
                    Err(_) => {
                        p.state = PubState::Dead;
                        return;
                    }
                },
                (None, None) => false,
            };
            if !complete {
                break;
            }
            let status = r.status;
            p.resp = None;
            if let Some(seqs) = p.inflight.pop_front() {
                for (i, seq) in seqs.into_iter().enumerate() {
                    let failed = match api_error.get(i).or(api_error.first()) {
                        _ if !(200..300).contains(&status) => Some(format!("publish answered {status}")),
                        Some(Some(e)) => Some(format!("publish answered {status} with {e}")),
                        _ => None,
                    };
                    if let Some(why) = failed {
                        self.t.pub_errors += 1;
                        self.msgs[seq as usize - 1].expected = 0;
                        self.note_error(why);
                    }
                }
            }
        }
        match alive {
            Ok(true) => self.pump_pub(pi),
            Ok(false) | Err(_) => {
                self.pubs[pi].state = PubState::Dead;
                self.note_error("publisher connection closed by the server".into());
            }
        }
    }
}

/// `/api/batch` next to the publish URL's path (`/api/publish?x` -> `/api/batch`).
fn batch_path(target: &str) -> String {
    let path = target.split('?').next().unwrap_or(target);
    match path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/batch"),
        None => "/api/batch".into(),
    }
}

/// The errors of an API answer carrying `n` publishes: with `n` 0 (one plain API call),
/// one entry from [`api_error_in`]; for a batch (`{"replies":[..]}`), one per reply in
/// order, and a whole-answer error (or an answer that is not the expected shape) for
/// every message.
fn api_errors_in(body: &[u8], n: usize) -> Vec<Option<String>> {
    if n == 0 {
        return vec![api_error_in(body)];
    }
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return vec![Some(format!("batch answer is not JSON: {e}"))],
    };
    match v.get("replies").and_then(|r| r.as_array()) {
        Some(r) if r.len() == n => r.iter().map(|one| one.get("error").map(|e| e.to_string())).collect(),
        Some(r) => vec![Some(format!("batch answer has {} replies for {n} publishes", r.len()))],
        None => {
            vec![Some(v.get("error").map_or_else(|| format!("batch answer without replies: {v}"), |e| e.to_string()))]
        }
    }
}

/// The `error` of a Centrifugo API answer (`{"error":{"code":..,"message":..}}`), if any:
/// the body is parsed only when it names an error at all.
fn api_error_in(body: &[u8]) -> Option<String> {
    text::find(body, b"\"error\"")?;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error").map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{api_error_in, api_errors_in, batch_path};

    #[test]
    fn batch_answers() {
        assert_eq!(batch_path("/api/publish"), "/api/batch");
        assert_eq!(batch_path("/api/publish?x=1"), "/api/batch");
        let ok = br#"{"replies":[{"publish":{"offset":1}},{"error":{"code":102,"message":"unknown channel"}}]}"#;
        let e = api_errors_in(ok, 2);
        assert_eq!(e.len(), 2);
        assert!(e[0].is_none());
        assert!(e[1].as_deref().unwrap().contains("102"));
        // Too few replies, or a whole-request error, fail every message.
        assert!(api_errors_in(br#"{"replies":[]}"#, 2)[0].is_some());
        assert!(api_errors_in(br#"{"error":{"code":100}}"#, 2)[0].as_deref().unwrap().contains("100"));
    }

    #[test]
    fn centrifugo_api_errors() {
        assert_eq!(api_error_in(br#"{"result":{}}"#), None);
        assert_eq!(api_error_in(br#"{"result":{"offset":3,"epoch":"x"}}"#), None);
        let e = api_error_in(br#"{"error":{"code":102,"message":"unknown channel"}}"#).unwrap();
        assert!(e.contains("102"), "{e}");
        // A message that merely contains the word is not an error.
        assert_eq!(api_error_in(br#"{"result":{"note":"\"error\""}}"#), None);
    }
}
