//! The publisher side of the soak loop: keep-alive HTTP connections, one per
//! `--pub-conns`, publishing round-robin over the channels (channel `c` on connection
//! `c % pub_conns`, so each channel's publishes are answered in order) and reading the
//! answers `{"id":N}` that give each channel's newest id.
//!
//! Called from `Soak::turn` (the rate) and `Soak::publish_once` (warm-up) in `net.rs`.

use super::{chan_name, Soak, MAX_INFLIGHT, PUB_BASE};
use herald_bench_tools::http::{parse_response, post_request};
use herald_bench_tools::sock::{connect_from, read_available, write_pending, ReadEnd};
use herald_bench_tools::text::{leading_id, padded_body};
use mio::{Interest, Token};

impl Soak {
    /// Publish one message on channel `ch` through its publisher connection (opened on
    /// first use); skipped when that connection has [`MAX_INFLIGHT`] requests unanswered.
    pub(super) fn publish(&mut self, ch: u32) {
        let p = ch as usize % self.pubs.len();
        if self.pubs[p].inflight.len() >= MAX_INFLIGHT {
            self.counts.pub_skipped += 1;
            return;
        }
        if self.pubs[p].sock.is_none() {
            match connect_from(None, self.cfg.addr) {
                Ok(mut s) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut s, Token(PUB_BASE + p), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        self.counts.pub_skipped += 1;
                        return;
                    }
                    self.pubs[p].sock = Some(s);
                }
                Err(e) => {
                    self.counts.pub_errors += 1;
                    self.error(format!("publisher connect: {e}"));
                    return;
                }
            }
        }
        let seq = self.counts.published + self.counts.pub_skipped;
        let body = padded_body(&format!("\"seq\":{seq},"), self.cfg.size);
        let ch_name = chan_name(&self.cfg.prefix, ch);
        let req = post_request(&self.cfg.addr.to_string(), &format!("/publish/?cid={ch_name}"), &body);
        let pb = &mut self.pubs[p];
        pb.out.extend_from_slice(&req);
        pb.inflight.push_back(ch);
        self.counts.published += 1;
        if let Some(s) = pb.sock.as_mut() {
            let _ = write_pending(s, &mut pb.out);
        }
    }

    /// Readiness on publisher connection `p`: write what is queued, read and match answers
    /// to requests in order; on EOF or error, drop the connection (the next publish on it
    /// reconnects) and count what was unanswered as publish errors.
    pub(super) fn on_pub_event(&mut self, p: usize, readable: bool, writable: bool) {
        let mut dead = None;
        {
            let pb = &mut self.pubs[p];
            let Some(sock) = pb.sock.as_mut() else {
                return;
            };
            if writable {
                if let Err(e) = write_pending(sock, &mut pb.out) {
                    dead = Some(format!("write: {e}"));
                }
            }
            if readable && dead.is_none() {
                match read_available(sock, &mut self.scratch, &mut pb.inbuf, usize::MAX) {
                    Ok(ReadEnd::Drained | ReadEnd::Full) => {}
                    Ok(ReadEnd::Eof) => dead = Some("EOF".into()),
                    Err(e) => dead = Some(e.to_string()),
                }
            }
        }
        // Answers, in order.
        loop {
            let pb = &mut self.pubs[p];
            let h = match parse_response(&pb.inbuf) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    dead = Some(e);
                    break;
                }
            };
            let len = h.content_length.unwrap_or(0);
            if pb.inbuf.len() < h.head_len + len {
                break;
            }
            let ch = pb.inflight.pop_front();
            let body = &pb.inbuf[h.head_len..h.head_len + len];
            let id = leading_id(body, b"{\"id\":");
            let ok = h.status == 200 && id.is_some() && ch.is_some();
            if let (true, Some(ch), Some(id)) = (ok, ch, id) {
                let last = &mut self.chan_last[ch as usize];
                if id != *last + 1 {
                    self.counts.id_mismatches += 1;
                    if self.counts.first_error.is_none() {
                        self.counts.first_error = Some(format!("publish on channel {ch}: id {id} after {last}"));
                    }
                }
                *last = (*last).max(id);
            }
            let pb = &mut self.pubs[p];
            pb.inbuf.drain(..h.head_len + len);
            if !ok {
                self.counts.pub_errors += 1;
                self.error(format!("publish answered {}", h.status));
            }
        }
        if let Some(e) = dead {
            let pb = &mut self.pubs[p];
            let lost = pb.inflight.len() as u64;
            if let Some(mut s) = pb.sock.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            pb.inflight.clear();
            pb.out.clear();
            pb.inbuf.clear();
            self.counts.pub_errors += lost;
            self.counts.pub_reconnects += 1;
            self.error(format!("publisher connection: {e} ({lost} publishes unanswered)"));
        }
    }
}
