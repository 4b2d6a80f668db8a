//! The WebSocket client side of both tools (RFC 6455): the upgrade request with a fixed
//! key, the check of the server's `Sec-WebSocket-Accept`, a decoder for the server's
//! unmasked frames and the masked frames a client must send (pongs).
//!
//! Pure functions over bytes. `herald-load` and `herald-soak` call them from their
//! subscriber state machines; the accept value comes from Herald's own
//! `herald::proto::ws::accept_key`.

/// The fixed WebSocket key of every tool client (the RFC 6455 sample).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Opcodes of RFC 6455 §5.2 the tools act on.
pub mod op {
    /// A continuation frame.
    pub const CONT: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping (answered with a pong of the same payload).
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// The upgrade request for `target` on `host`, with [`WS_KEY`].
pub fn upgrade_request(host: &str, target: &str) -> Vec<u8> {
    upgrade_request_with(host, target, false)
}

/// The offer a browser makes (Chromium's, RFC 7692).
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// [`upgrade_request`], offering permessage-deflate when `deflate` is set.
pub fn upgrade_request_with(host: &str, target: &str, deflate: bool) -> Vec<u8> {
    let ext = if deflate { format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n") } else { String::new() };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    )
    .into_bytes()
}

/// Inflate one permessage-deflate message payload (RFC 7692 §7.2.2: the `00 00 ff ff`
/// tail appended) into `out`, with a raw-DEFLATE decompressor shared by the caller's
/// connections (reset here: any window the server may use is read).
pub fn inflate(d: &mut flate2::Decompress, payload: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    d.reset(false);
    out.clear();
    for input in [payload, &[0, 0, 0xff, 0xff][..]] {
        let start = d.total_in();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            let done = (d.total_in() - start) as usize;
            let st = d
                .decompress_vec(&input[done..], out, flate2::FlushDecompress::Sync)
                .map_err(|_| "bad permessage-deflate data")?;
            if st == flate2::Status::StreamEnd {
                return Ok(());
            }
            if (d.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
                break;
            }
        }
    }
    Ok(())
}

/// Whether a `Sec-WebSocket-Accept` value answers [`WS_KEY`].
pub fn accept_ok(accept: Option<&str>) -> bool {
    accept == Some(herald::proto::ws::accept_key(WS_KEY.as_bytes()).as_str())
}

/// One decoded server frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit: the last frame of a message.
    pub fin: bool,
    /// The opcode (see [`op`]).
    pub opcode: u8,
    /// Start of the payload in the buffer passed to [`decode_frame`].
    pub start: usize,
    /// End of the payload (and of the frame) in that buffer.
    pub end: usize,
}

/// Decode one unmasked server frame (RFC 6455 §5.2) from the front of `buf`.
/// `Ok(None)`: need more bytes. `Err`: a masked frame or a payload over `max` bytes.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<Frame>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("server frame is masked");
    }
    let (len, hl) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10),
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    if len > max as u64 {
        return Err("server frame too large");
    }
    let end = hl + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame { fin: buf[0] & 0x80 != 0, opcode: buf[0] & 0x0f, start: hl, end }))
}

/// A masked client frame (clients must mask, §5.3) with a fixed mask; FIN set. Payloads are
/// cut at 65,535 bytes (the tools send only pongs, at most 125).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x1c, 0x3e, 0x77];
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n.min(0xffff) as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().take(0xffff).enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald::proto::ws::{frame, Opcode};

    #[test]
    fn decodes_server_frames_at_every_split() {
        for (n, hl) in [(0usize, 2usize), (125, 2), (126, 4), (300, 4), (65_535, 4), (65_536, 10)] {
            let payload = vec![b'a'; n];
            let f = frame(Opcode::Text, &payload);
            for cut in 0..f.len() {
                assert_eq!(decode_frame(&f[..cut], 1 << 20), Ok(None), "len {n}, cut {cut}");
            }
            let mut two = f.to_vec();
            two.extend_from_slice(&frame(Opcode::Ping, b"p"));
            let d = decode_frame(&two, 1 << 20).unwrap().unwrap();
            assert_eq!(d, Frame { fin: true, opcode: op::TEXT, start: hl, end: hl + n });
            let p = decode_frame(&two[d.end..], 1 << 20).unwrap().unwrap();
            assert_eq!((p.opcode, &two[d.end + p.start..d.end + p.end]), (op::PING, &b"p"[..]));
        }
        assert_eq!(decode_frame(&frame(Opcode::Text, &[0; 300]), 299), Err("server frame too large"));
        assert_eq!(decode_frame(&client_frame(op::TEXT, b"x"), 100), Err("server frame is masked"));
    }

    /// Unmask a client frame the way a server does.
    fn unmask(f: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(f[0] & 0x80, 0x80, "FIN");
        assert_eq!(f[1] & 0x80, 0x80, "MASK");
        let (len, at) = match f[1] & 0x7f {
            126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        let mask = &f[at..at + 4];
        assert_eq!(f.len(), at + 4 + len);
        (f[0] & 0x0f, f[at + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect())
    }

    #[test]
    fn client_frames_roundtrip() {
        for n in [0usize, 1, 125, 126, 1000, 65_535] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            assert_eq!(unmask(&client_frame(op::PONG, &payload)), (op::PONG, payload));
        }
    }

    #[test]
    fn handshake() {
        let r = String::from_utf8(upgrade_request("h:1", "/ws/?cid=a&since=3")).unwrap();
        assert!(r.starts_with("GET /ws/?cid=a&since=3 HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(r.contains(&format!("Sec-WebSocket-Key: {WS_KEY}\r\n")) && r.ends_with("\r\n\r\n"));
        assert!(accept_ok(Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
        assert!(!accept_ok(Some("x")) && !accept_ok(None));
    }
}
