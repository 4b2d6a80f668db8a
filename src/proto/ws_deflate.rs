//! permessage-deflate (RFC 7692): offer negotiation, and the per-message deflate and
//! inflate that a worker shares among all its connections.
//!
//! Owns: parsing `Sec-WebSocket-Extensions` offers (RFC 7692 §5, RFC 6455 §9.1), choosing
//! the first acceptable `permessage-deflate` offer and the response string (§7.1), and
//! [`Deflater`] / [`Inflater`]: raw DEFLATE with the `00 00 ff ff` tail handled (§7.2.1,
//! §7.2.2), reset before every message.
//!
//! Herald always answers with `server_no_context_takeover` and `client_no_context_takeover`
//! (§7.1.1.1, §7.1.1.2): every message is compressed and inflated on its own, so no
//! connection carries a zlib window. That is what lets fan-out compress a message once per
//! worker and queue the same frame to every subscriber that negotiated the extension, and
//! what keeps an idle compressed connection as small as an uncompressed one.
//!
//! Must never: touch sockets or clocks; inflate past the caller's limit (a deflate bomb
//! stops at `max + 1` bytes of output, whatever it would inflate to).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension token.
pub const TOKEN: &str = "permessage-deflate";

/// The empty stored block a sync flush ends with; stripped by the sender and appended by
/// the receiver (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What was agreed for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// `server_max_window_bits` the client asked for (8-15), echoed in the response.
    pub server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// Whether the server compresses what it sends. With a `server_max_window_bits` below 15
    /// it does not: zlib cannot deflate raw streams with an 8-bit window, and a message
    /// compressed with a smaller window would be a separate encoding per window size (no
    /// longer "once per worker"). Sending such a connection uncompressed frames honours any
    /// window limit (RFC 7692 §6: compressing is the sender's choice, message by message);
    /// messages from the client are still inflated.
    #[must_use]
    pub fn compress_outgoing(&self) -> bool {
        self.server_max_window_bits.is_none_or(|b| b == 15)
    }

    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    #[must_use]
    pub fn response(&self) -> String {
        let mut s = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        if let Some(b) = self.server_max_window_bits {
            s.push_str("; server_max_window_bits=");
            s.push_str(&b.to_string());
        }
        s
    }
}

/// One offer's parameters, as parsed.
#[derive(Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: bool,
}

/// Choose among the client's offers: the first `permessage-deflate` offer whose parameters
/// are valid and that Herald can honour (RFC 7692 §5.1, §7.1). `values` are the values of
/// every `Sec-WebSocket-Extensions` header, in order. `None`: nothing acceptable was
/// offered, so the connection goes uncompressed. A header that does not parse as an
/// extension list declines the extension as a whole.
#[must_use]
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreed> {
    for v in values {
        let s = std::str::from_utf8(v).ok()?;
        for ext in split_outside_quotes(s, ',') {
            let mut parts = split_outside_quotes(ext, ';').into_iter();
            let name = parts.next().unwrap_or("").trim();
            if name.is_empty() {
                continue; // `#rule` allows empty list elements
            }
            if !name.eq_ignore_ascii_case(TOKEN) {
                continue;
            }
            if let Some(a) = accept_offer(parts) {
                return Some(a);
            }
        }
    }
    None
}

/// Validate one offer's parameters (§7.1): unknown, repeated or ill-valued parameters
/// decline the offer.
fn accept_offer<'a>(parts: impl Iterator<Item = &'a str>) -> Option<Agreed> {
    let mut p = Params::default();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !p.server_no_context_takeover => {
                p.server_no_context_takeover = true;
            }
            "client_no_context_takeover" if value.is_none() && !p.client_no_context_takeover => {
                p.client_no_context_takeover = true;
            }
            "server_max_window_bits" if p.server_max_window_bits.is_none() => {
                p.server_max_window_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" if !p.client_max_window_bits => {
                // A value is a hint about the client's own window; without a value it only
                // says the client understands the parameter. Herald inflates with a 15-bit
                // window, which reads any smaller one, so it never limits the client.
                if let Some(v) = value {
                    window_bits(v)?;
                }
                p.client_max_window_bits = true;
            }
            _ => return None,
        }
    }
    // server_no_context_takeover is what Herald does anyway; client_no_context_takeover
    // is requested in the response whether offered or not (§7.1.1.2).
    Some(Agreed { server_max_window_bits: p.server_max_window_bits })
}

/// A window-bits value: 1*DIGIT in 8..=15, no leading zero (§7.1.2.1).
fn window_bits(v: String) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// A parameter value: a token, or a quoted-string whose content is a token (RFC 6455 §9.1).
fn unquote(v: &str) -> Option<String> {
    let inner = if let Some(q) = v.strip_prefix('"') {
        let q = q.strip_suffix('"')?;
        let mut out = String::new();
        let mut esc = false;
        for c in q.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                return None;
            } else {
                out.push(c);
            }
        }
        if esc {
            return None;
        }
        out
    } else {
        v.to_string()
    };
    let token =
        !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    token.then_some(inner)
}

/// Split on `sep` outside quoted strings.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut esc) = (0, false, false);
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
        } else if quoted && c == '\\' {
            esc = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// A raw-DEFLATE compressor reset before every message (one per worker).
pub struct Deflater {
    c: Compress,
}

impl Deflater {
    /// A compressor at `level` (0 = store, 1 = fastest ... 9 = smallest).
    #[must_use]
    pub fn new(level: u32) -> Deflater {
        Deflater { c: Compress::new(Compression::new(level.min(9)), false) }
    }

    /// Append `data` compressed as one message (§7.2.1: sync-flushed, the trailing
    /// `00 00 ff ff` removed) to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.c.reset();
        let base = out.len();
        out.reserve(data.len() / 2 + 64);
        let start = self.c.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let done = (self.c.total_in() - start) as usize;
            // Only a buffer error (no progress possible) can be returned, and 64 spare
            // bytes always let a sync flush progress.
            let _ = self.c.compress_vec(&data[done..], out, FlushCompress::Sync);
            // Done when all input is in and the flush stopped short of filling the buffer
            // (zlib fills it whenever it has more to write).
            if (self.c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.len() >= base + 4 && out[out.len() - 4..] == TAIL {
            out.truncate(out.len() - 4);
        }
        if out.len() == base {
            // An empty message: one empty fixed block (§7.2.3.6 uses 0x00).
            out.push(0x00);
        }
    }
}

/// Why an inflate failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The inflated message passed the limit (nothing past `max + 1` bytes was inflated).
    TooBig,
    /// Not a valid DEFLATE stream (or one needing a dictionary / context takeover).
    Corrupt,
}

/// A raw-DEFLATE decompressor reset before every message (one per worker).
pub struct Inflater {
    d: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// A decompressor with a 15-bit window (reads any window size a client uses).
    #[must_use]
    pub fn new() -> Inflater {
        Inflater { d: Decompress::new(false) }
    }

    /// Inflate one message's payload (§7.2.2: with `00 00 ff ff` appended) into `out`
    /// (cleared first). Fails with [`InflateError::TooBig`] as soon as the output passes
    /// `max` bytes: the output buffer never grows beyond `max + 1` bytes and the rest of
    /// the input is not inflated.
    ///
    /// # Errors
    /// [`InflateError::TooBig`] past `max`, [`InflateError::Corrupt`] for a bad stream.
    pub fn inflate(&mut self, data: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.d.reset(false);
        out.clear();
        let limit = max.saturating_add(1);
        let mut len = 0usize;
        let result = (|| {
            for (i, input) in [data, &TAIL[..]].into_iter().enumerate() {
                let mut pos = 0usize;
                loop {
                    if len == out.len() {
                        if len >= limit {
                            return Err(InflateError::TooBig);
                        }
                        // Grow geometrically, never past the limit.
                        let grow = out.len().max(4096).min(limit - len);
                        out.reserve_exact(grow);
                        out.resize(len + grow, 0);
                    }
                    let (in0, out0) = (self.d.total_in(), self.d.total_out());
                    let status = self
                        .d
                        .decompress(&input[pos..], &mut out[len..], FlushDecompress::Sync)
                        .map_err(|_| InflateError::Corrupt)?;
                    let (read, wrote) = ((self.d.total_in() - in0) as usize, (self.d.total_out() - out0) as usize);
                    pos += read;
                    len += wrote;
                    if len > max {
                        return Err(InflateError::TooBig);
                    }
                    if status == Status::StreamEnd {
                        // A final block (BFINAL, allowed by §7.2.3.3) ends the message;
                        // bytes of the message after it are not DEFLATE.
                        return if i == 0 && pos < input.len() { Err(InflateError::Corrupt) } else { Ok(()) };
                    }
                    if pos == input.len() && len < out.len() {
                        break; // all of this input is in and the output was not the limit
                    }
                    if read == 0 && wrote == 0 && len < out.len() {
                        return Err(InflateError::Corrupt); // no progress possible
                    }
                }
            }
            Ok(())
        })();
        out.truncate(len);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(h: &[&str]) -> Option<Agreed> {
        negotiate(h.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn offers() {
        let plain = Some(Agreed { server_max_window_bits: None });
        assert_eq!(neg(&["permessage-deflate"]), plain);
        // Chromium's offer.
        assert_eq!(neg(&["permessage-deflate; client_max_window_bits"]), plain);
        assert_eq!(neg(&["PerMessage-Deflate ; Client_Max_Window_Bits = 10"]), plain);
        assert_eq!(neg(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]), plain);
        assert_eq!(neg(&["x-webkit-deflate-frame", "permessage-deflate"]), plain);
        assert_eq!(neg(&[]), None);
        assert_eq!(neg(&["x-webkit-deflate-frame"]), None);
        assert_eq!(neg(&["permessage-deflate; server_max_window_bits=10"]).unwrap().server_max_window_bits, Some(10));
        assert_eq!(
            neg(&["permessage-deflate; server_max_window_bits=\"15\""]).unwrap().server_max_window_bits,
            Some(15)
        );
        // RFC 7692 §5.1 example: the first acceptable offer wins; an invalid one is skipped.
        assert_eq!(
            neg(&["permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"]),
            Some(Agreed { server_max_window_bits: Some(10) })
        );
        assert_eq!(neg(&["permessage-deflate; server_max_window_bits=7, permessage-deflate"]), plain);
        assert_eq!(neg(&["permessage-deflate; foo, permessage-deflate; client_max_window_bits=9"]), plain);
    }

    #[test]
    fn bad_offers_are_declined() {
        for bad in [
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=\"1\"5\"",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
        ] {
            assert_eq!(neg(&[bad]), None, "{bad}");
        }
        assert_eq!(negotiate([&b"permessage-deflate\xff"[..]]), None);
    }

    #[test]
    fn response_strings() {
        assert_eq!(
            Agreed { server_max_window_bits: None }.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let small = Agreed { server_max_window_bits: Some(9) };
        assert_eq!(
            small.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
        );
        assert!(!small.compress_outgoing());
        assert!(Agreed { server_max_window_bits: Some(15) }.compress_outgoing());
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed with no context takeover.
    #[test]
    fn rfc_vectors() {
        let mut out = Vec::new();
        let mut inf = Inflater::new();
        inf.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.3: the same with BFINAL set.
        inf.inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2 (uncompressed stored block).
        inf.inflate(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00], 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.6: an empty message.
        inf.inflate(&[0x00], 100, &mut out).unwrap();
        assert_eq!(out, b"");
        inf.inflate(&[], 100, &mut out).unwrap();
        assert_eq!(out, b"");
        // §7.2.3.2's second message uses the first as context: with no context takeover
        // that back-reference is invalid.
        assert_eq!(inf.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100, &mut out), Err(InflateError::Corrupt));
        assert_eq!(inf.inflate(&[0xff, 0xff, 0xff], 100, &mut out), Err(InflateError::Corrupt));
    }

    #[test]
    fn round_trip_and_no_context() {
        let mut d = Deflater::new(1);
        let mut inf = Inflater::new();
        let msg = br#"{"channel":"news","data":{"text":"hello hello hello hello"}}"#.repeat(50);
        let mut z = Vec::new();
        d.compress(&msg, &mut z);
        assert!(z.len() < msg.len() / 5, "{}", z.len());
        assert_ne!(z[z.len() - 4..], TAIL);
        // Same input, same output: no context carried between messages.
        let mut z2 = Vec::new();
        d.compress(&msg, &mut z2);
        assert_eq!(z, z2);
        let mut out = Vec::new();
        inf.inflate(&z, msg.len(), &mut out).unwrap();
        assert_eq!(out, msg);
        // Exactly at the limit is fine, one byte less is not.
        assert_eq!(inf.inflate(&z, msg.len() - 1, &mut out), Err(InflateError::TooBig));
        for n in [0usize, 1, 100, 70_000, 300_000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let mut z = Vec::new();
            d.compress(&data, &mut z);
            inf.inflate(&z, n, &mut out).unwrap();
            assert_eq!(out, data, "{n}");
        }
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let mut d = Deflater::new(9);
        let zeros = vec![0u8; 16 << 20];
        let mut z = Vec::new();
        d.compress(&zeros, &mut z);
        assert!(z.len() < 40_000, "{}", z.len());
        let mut out = Vec::new();
        let mut inf = Inflater::new();
        assert_eq!(inf.inflate(&z, 1 << 20, &mut out), Err(InflateError::TooBig));
        assert!(out.capacity() <= (1 << 20) + 1 + 4096, "{}", out.capacity());
        assert!(inf.d.total_out() <= (1 << 20) + 1, "{}", inf.d.total_out());
        // The inflater is reusable afterwards.
        inf.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn random_input_never_panics_and_respects_the_limit() {
        let mut rng = crate::proto::testrng::Rng(0x5EED_DEF1_A7E0_0001);
        let mut inf = Inflater::new();
        let mut d = Deflater::new(1);
        let mut out = Vec::new();
        for _ in 0..3000 {
            let n = rng.below(300);
            let mut data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            // Sometimes a valid stream with a flipped bit (deeper into the inflater).
            if rng.below(2) == 0 {
                let plain: Vec<u8> = (0..n * 4).map(|i| b"abcab"[i % 5] ^ (rng.below(3) as u8)).collect();
                data.clear();
                d.compress(&plain, &mut data);
                if !data.is_empty() && rng.below(2) == 0 {
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
            }
            let max = rng.below(2000);
            match inf.inflate(&data, max, &mut out) {
                Ok(()) => assert!(out.len() <= max),
                Err(InflateError::TooBig) => assert!(out.len() <= max + 1),
                Err(InflateError::Corrupt) => {}
            }
            // Offers built from random tokens.
            let words = [
                "permessage-deflate",
                "server_no_context_takeover",
                "client_max_window_bits",
                "=",
                ";",
                ",",
                "\"",
                "9",
                "15",
                "x",
            ];
            let offer: String = (0..rng.below(12)).map(|_| words[rng.below(words.len())]).collect::<Vec<_>>().join(" ");
            if let Some(a) = negotiate([offer.as_bytes()]) {
                assert_eq!(negotiate([a.response().as_bytes()]), Some(a), "{offer}");
            }
        }
    }
}
