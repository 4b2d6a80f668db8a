//! The subscriber side of the soak loop: what arrives on a subscriber connection. Parses
//! the response head (WebSocket upgrade, SSE stream, long-poll answer), then WebSocket
//! frames, SSE events or long-poll bodies, and checks every id against the subscriber's
//! last one (in order, duplicate, gap, or "missed" when the server said so).
//!
//! Called from `Soak::turn` in `net.rs` for every readiness event on a subscriber.

use super::{chan_name, lp_request, End, Phase, Soak, Tr, MAX_FRAME, MAX_REPORTS};
use herald_bench_tools::http::parse_response;
use herald_bench_tools::sock::{read_available, write_pending, ReadEnd};
use herald_bench_tools::text::{find, leading_id};
use herald_bench_tools::ws::{self, client_frame, decode_frame};

#[derive(serde::Deserialize)]
struct LpEnv {
    id: u64,
}

#[derive(serde::Deserialize)]
struct LpBody {
    messages: Vec<LpEnv>,
    last_id: u64,
    #[serde(default)]
    missed: bool,
}

impl Soak {
    fn record(&mut self, i: usize, id: u64) {
        let s = &mut self.subs[i];
        if id <= s.last {
            s.dups += 1;
            if self.counts.reports < MAX_REPORTS {
                self.counts.reports += 1;
                eprintln!(
                    "herald-soak: DUPLICATE: subscriber {i} ({}) on {}{}: id {id} after {} (session {})",
                    s.tr.name(),
                    self.cfg.prefix,
                    s.ch,
                    s.last,
                    s.sessions
                );
            }
            return;
        }
        let gap = id - s.last - 1;
        if gap > 0 {
            if s.missed_pending {
                s.missed_ids += gap;
            } else {
                s.lost += gap;
                if self.counts.reports < MAX_REPORTS {
                    self.counts.reports += 1;
                    eprintln!(
                        "herald-soak: GAP: subscriber {i} ({}) on {}{}: id {id} after {} ({gap} lost, session {})",
                        s.tr.name(),
                        self.cfg.prefix,
                        s.ch,
                        s.last,
                        s.sessions
                    );
                }
            }
        }
        s.missed_pending = false;
        s.last = id;
        s.got += 1;
    }

    fn missed(&mut self, i: usize) {
        let s = &mut self.subs[i];
        s.missed_events += 1;
        s.missed_pending = true;
    }

    fn opened(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.open {
            return;
        }
        c.open = true;
        let i = c.sub;
        self.handshaking -= 1;
        self.subs[i].sessions += 1;
        if self.churn {
            self.arm_session(i);
        }
    }

    /// Handle the bytes in a subscriber's input buffer. Returns why to close, if so.
    fn process(&mut self, key: usize) -> Option<End> {
        loop {
            let phase = self.conns[key].phase;
            match phase {
                Phase::Head => {
                    let h = match parse_response(&self.conns[key].inbuf) {
                        Ok(Some(h)) => h,
                        Ok(None) => return None,
                        Err(e) => return Some(End::Failed(e)),
                    };
                    let tr = self.subs[self.conns[key].sub].tr;
                    match tr {
                        Tr::Ws => {
                            if h.status != 101 {
                                return Some(End::Failed(format!("WebSocket handshake answered {}", h.status)));
                            }
                            if !ws::accept_ok(h.ws_accept.as_deref()) {
                                return Some(End::Failed("bad Sec-WebSocket-Accept".into()));
                            }
                            self.conns[key].inbuf.drain(..h.head_len);
                            self.conns[key].phase = Phase::Ws;
                            self.opened(key);
                        }
                        Tr::Sse => {
                            if h.status != 200 {
                                return Some(End::Failed(format!("SSE answered {}", h.status)));
                            }
                            self.conns[key].inbuf.drain(..h.head_len);
                            self.conns[key].phase = Phase::Sse;
                            self.opened(key);
                        }
                        Tr::Lp => {
                            if h.status != 200 {
                                return Some(End::Failed(format!("long-poll answered {}", h.status)));
                            }
                            let Some(len) = h.content_length else {
                                return Some(End::Failed("long-poll answer without Content-Length".into()));
                            };
                            self.conns[key].phase = Phase::LpBody { head: h.head_len, len };
                            self.opened(key);
                        }
                    }
                }
                Phase::LpBody { head, len } => {
                    if self.conns[key].inbuf.len() < head + len {
                        return None;
                    }
                    let body: Result<LpBody, _> = serde_json::from_slice(&self.conns[key].inbuf[head..head + len]);
                    let i = self.conns[key].sub;
                    match body {
                        Ok(b) => {
                            if b.missed {
                                self.missed(i);
                            }
                            // Newest first: process oldest first.
                            for m in b.messages.iter().rev() {
                                self.record(i, m.id);
                            }
                            if b.messages.is_empty() && b.last_id > self.subs[i].last && !b.missed {
                                self.counts.id_mismatches += 1;
                                self.error(format!(
                                    "subscriber {i} (longpoll): empty answer with last_id {} after {}",
                                    b.last_id, self.subs[i].last
                                ));
                            }
                        }
                        Err(e) => {
                            self.counts.bad_frames += 1;
                            return Some(End::Server(format!("long-poll body: {e}")));
                        }
                    }
                    self.conns[key].inbuf.drain(..head + len);
                    // Poll again on the same keep-alive connection, from the last id processed.
                    let ch = chan_name(&self.cfg.prefix, self.subs[i].ch);
                    let req = lp_request(&ch, self.cfg.addr, self.subs[i].last);
                    let c = &mut self.conns[key];
                    c.out.extend_from_slice(&req);
                    c.phase = Phase::Head;
                    if let Err(e) = write_pending(&mut c.sock, &mut c.out) {
                        return Some(End::Server(format!("write: {e}")));
                    }
                }
                Phase::Ws => {
                    let (fin, op, start, end) = match decode_frame(&self.conns[key].inbuf, MAX_FRAME) {
                        Ok(Some(f)) => (f.fin, f.opcode, f.start, f.end),
                        Ok(None) => return None,
                        Err(e) => {
                            self.counts.bad_frames += 1;
                            return Some(End::Server(e.into()));
                        }
                    };
                    let i = self.conns[key].sub;
                    match op {
                        0x1 | 0x0 if !fin => {
                            let c = &mut self.conns[key];
                            let p = c.inbuf[start..end].to_vec();
                            c.frag.extend_from_slice(&p);
                        }
                        0x1 | 0x0 => {
                            let c = &mut self.conns[key];
                            let msg = if c.frag.is_empty() {
                                c.inbuf[start..end].to_vec()
                            } else {
                                let mut m = std::mem::take(&mut c.frag);
                                m.extend_from_slice(&c.inbuf[start..end]);
                                m
                            };
                            if let Some(id) = leading_id(&msg, b"{\"id\":") {
                                self.record(i, id);
                            } else if msg.starts_with(b"{\"missed\":true") {
                                self.missed(i);
                            } else {
                                self.counts.bad_frames += 1;
                                self.error(format!("subscriber {i} (ws): unexpected text frame"));
                            }
                        }
                        0x9 => {
                            let c = &mut self.conns[key];
                            let pong = client_frame(0xA, &c.inbuf[start..end]);
                            c.out.extend_from_slice(&pong);
                            if let Err(e) = write_pending(&mut c.sock, &mut c.out) {
                                return Some(End::Server(format!("write: {e}")));
                            }
                        }
                        0xA => {}
                        0x8 => {
                            return Some(End::Server("close frame".into()));
                        }
                        _ => {
                            self.counts.bad_frames += 1;
                            return Some(End::Server(format!("opcode {op}")));
                        }
                    }
                    self.conns[key].inbuf.drain(..end);
                }
                Phase::Sse => {
                    let p = find(&self.conns[key].inbuf, b"\n\n")?;
                    let ev: Vec<u8> = self.conns[key].inbuf.drain(..p + 2).collect();
                    let i = self.conns[key].sub;
                    let mut id = None;
                    let mut data_id = None;
                    let mut missed = false;
                    for line in ev.split(|&b| b == b'\n') {
                        if let Some(v) = line.strip_prefix(b"id: ") {
                            id = std::str::from_utf8(v).ok().and_then(|v| v.parse::<u64>().ok());
                        } else if line == b"event: missed" {
                            missed = true;
                        } else if let Some(v) = line.strip_prefix(b"data: ") {
                            data_id = leading_id(v, b"{\"id\":");
                        }
                    }
                    if missed {
                        self.missed(i);
                    } else if let Some(id) = id {
                        if data_id != Some(id) {
                            self.counts.id_mismatches += 1;
                            self.error(format!("subscriber {i} (sse): event id {id} but data id {data_id:?}"));
                        }
                        self.record(i, id);
                    }
                }
            }
        }
    }

    /// Readiness on subscriber connection `key`: flush its request, read and process what
    /// arrived, close it on EOF or error.
    pub(super) fn on_sub_event(&mut self, key: usize, readable: bool, writable: bool) {
        if writable {
            let c = &mut self.conns[key];
            // flush: TLS records the handshake left behind when the socket would block.
            if let Err(e) = write_pending(&mut c.sock, &mut c.out).and_then(|()| std::io::Write::flush(&mut c.sock)) {
                let open = c.open;
                return self
                    .close(key, if open { End::Server(format!("write: {e}")) } else { End::Failed(e.to_string()) });
            }
            // A long-poll is open once its request is out (the answer may take the whole
            // long-poll timeout on a quiet channel).
            if c.out.is_empty() && !c.open && self.subs[c.sub].tr == Tr::Lp {
                self.opened(key);
            }
        }
        if !readable {
            return;
        }
        loop {
            let c = &mut self.conns[key];
            // At most 8 MiB before processing; then read on (readiness is edge-triggered:
            // no new event would come for bytes already waiting).
            let end = read_available(&mut c.sock, &mut self.scratch, &mut c.inbuf, 8 << 20);
            if let Some(why) = self.process(key) {
                return self.close(key, why);
            }
            let eof = match end {
                Ok(ReadEnd::Full) => continue,
                Ok(ReadEnd::Drained) => return,
                Ok(ReadEnd::Eof) => "EOF".to_string(),
                Err(e) => e.to_string(),
            };
            let open = self.conns[key].open;
            return self.close(key, if open { End::Server(eof) } else { End::Failed(format!("before open: {eof}")) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_ids() {
        let f = herald::proto::ws::frame(herald::proto::ws::Opcode::Text, br#"{"id":42,"channel":"c","data":1}"#);
        for cut in 0..f.len() {
            assert_eq!(decode_frame(&f[..cut], MAX_FRAME), Ok(None));
        }
        let d = decode_frame(&f, MAX_FRAME).unwrap().unwrap();
        assert!(d.fin && d.opcode == 1);
        assert_eq!(leading_id(&f[d.start..d.end], b"{\"id\":"), Some(42));
        assert!(decode_frame(&client_frame(1, b"x"), MAX_FRAME).is_err());
    }
}
