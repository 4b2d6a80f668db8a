//! Streaming UTF-8 validation for WebSocket text data (RFC 6455 §5.6, §8.1).
//!
//! Owns: [`Utf8Validator`], a tiny state machine that checks a byte stream
//! delivered in arbitrary pieces (frames, fragments, partial reads) and
//! reports failure as soon as the bytes seen so far cannot be the prefix of
//! any valid UTF-8 text (RFC 3629: no overlong forms, no surrogates
//! U+D800..=U+DFFF, nothing above U+10FFFF, no stray continuation bytes).
//!
//! Called by: [`crate::proto::ws::Decoder`] for text messages (payloads split
//! across fragments, and the already-arrived prefix of an incomplete frame, so
//! that invalid text fails fast as RFC 6455 §8.1 and Autobahn 6.4.x expect).
//! Close-frame reasons are short and whole, so the decoder checks them with
//! `std::str::from_utf8` directly.
//!
//! Must never: allocate, panic on any input, or do IO. It keeps at most three
//! bytes of a code point that is split between two `feed` calls.

use std::str;

/// Incremental UTF-8 validator.
///
/// Feed the bytes of one text message in order with [`feed`](Self::feed);
/// when the message ends, [`is_complete`](Self::is_complete) must be true
/// (no code point left half-delivered). Reuse it for the next message after
/// [`reset`](Self::reset).
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    /// Leading bytes of a code point whose remaining bytes have not arrived
    /// yet; only `pending[..len]` is meaningful and `len <= 3`.
    pending: [u8; 4],
    len: u8,
    /// Set once an invalid sequence was seen; sticky until `reset`.
    failed: bool,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    #[must_use]
    pub const fn new() -> Self {
        Utf8Validator { pending: [0; 4], len: 0, failed: false }
    }

    /// Validate the next piece of the stream.
    ///
    /// Returns `Err(())` as soon as the bytes fed since the last
    /// [`reset`](Self::reset) cannot be a prefix of valid UTF-8; after that,
    /// every call returns `Err(())` until `reset`. A code point that is cut
    /// off at the end of `bytes` is kept (at most 3 bytes) and completed by
    /// the next call.
    ///
    /// # Errors
    /// `Err(())` when the stream is not (a prefix of) valid UTF-8.
    #[allow(clippy::result_unit_err)]
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        if self.failed {
            return Err(());
        }
        if self.len > 0 {
            // Finish the split code point first: append just enough bytes to
            // complete it and let std judge the (at most 4-byte) sequence.
            let have = usize::from(self.len);
            let width = sequence_width(self.pending[0]);
            let take = width.saturating_sub(have).min(bytes.len());
            let mut seq = self.pending;
            seq[have..have + take].copy_from_slice(&bytes[..take]);
            match str::from_utf8(&seq[..have + take]) {
                Ok(_) => {
                    self.len = 0;
                    bytes = &bytes[take..];
                }
                // Still a valid prefix and the input is exhausted.
                Err(e) if e.error_len().is_none() && take == bytes.len() => {
                    self.pending = seq;
                    // have + take < width <= 4
                    self.len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return self.fail(),
            }
        }
        match str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            // `error_len() == None` means the input ended inside a sequence
            // that is a valid prefix so far (std checks the restricted second
            // byte ranges of E0/ED/F0/F4 before reporting truncation).
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                if tail.len() > 3 {
                    // Not produced by std; treat defensively as invalid.
                    return self.fail();
                }
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
            Err(_) => self.fail(),
        }
    }

    /// True when no partial code point is pending (and no error was seen):
    /// the bytes fed so far are complete, valid UTF-8.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.len == 0 && !self.failed
    }

    /// Forget all state, ready for a new message.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    fn fail(&mut self) -> Result<(), ()> {
        self.failed = true;
        self.len = 0;
        Err(())
    }
}

/// Byte length of the sequence started by lead byte `b` (only called on
/// leads std has already accepted as a valid prefix).
fn sequence_width(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: is `p` a prefix of some valid UTF-8 string?
    fn valid_prefix(p: &[u8]) -> bool {
        match str::from_utf8(p) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    /// Feed `s` in the given pieces; return the index of the first piece that
    /// failed (or None) and the final completeness.
    fn feed_pieces(s: &[u8], cuts: &[usize]) -> (Option<usize>, bool) {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for (i, &end) in cuts.iter().chain(std::iter::once(&s.len())).enumerate() {
            if v.feed(&s[start..end]).is_err() {
                return (Some(i), false);
            }
            start = end;
        }
        (None, v.is_complete())
    }

    #[test]
    fn byte_by_byte_matches_reference_on_samples() {
        let samples: &[&[u8]] = &[
            b"",
            b"hello",
            "κόσμε".as_bytes(),
            "€𝄞 mixed ascii ü".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{0800}\u{07FF}\u{0080}\u{007F}".as_bytes(),
            &[0xC0, 0x80],             // overlong NUL
            &[0xC1, 0xBF],             // overlong
            &[0xE0, 0x80, 0x80],       // overlong 3-byte
            &[0xE0, 0x9F, 0xBF],       // overlong 3-byte
            &[0xF0, 0x8F, 0xBF, 0xBF], // overlong 4-byte
            &[0xED, 0xA0, 0x80],       // U+D800
            &[0xED, 0xBF, 0xBF],       // U+DFFF
            &[0xF4, 0x90, 0x80, 0x80], // U+110000
            &[0xF5, 0x80, 0x80, 0x80],
            &[0xFF],
            &[0x80],
            &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80],
            &[0xE2, 0x82],       // truncated, valid prefix
            &[0xF0, 0x9F, 0x98], // truncated, valid prefix
            &[b'a', 0xE2, 0x28, 0xA1],
        ];
        for s in samples {
            let mut v = Utf8Validator::new();
            for i in 0..s.len() {
                let ok = v.feed(&s[i..i + 1]).is_ok();
                assert_eq!(ok, valid_prefix(&s[..=i]), "{s:02x?} at {i}");
                if !ok {
                    break;
                }
                assert_eq!(v.is_complete(), str::from_utf8(&s[..=i]).is_ok());
            }
        }
    }

    #[test]
    fn every_split_agrees_with_std() {
        let s = "a€𝄞bκόσμε\u{10FFFF}z".as_bytes();
        for a in 0..=s.len() {
            for b in a..=s.len() {
                assert_eq!(feed_pieces(s, &[a, b]), (None, true));
            }
        }
        let bad = [b'x', 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xA0, 0x80, b'y'];
        for a in 0..=bad.len() {
            let (failed_at, _) = feed_pieces(&bad, &[a]);
            // The error is detected in the piece containing byte 6 (0xA0).
            let expected = if a <= 6 { 1 } else { 0 };
            assert_eq!(failed_at, Some(expected), "split at {a}");
        }
    }

    #[test]
    fn all_two_byte_sequences() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let s = [a, b];
                let mut v = Utf8Validator::new();
                let r1 = v.feed(&s[..1]).is_ok();
                assert_eq!(r1, valid_prefix(&s[..1]));
                if r1 {
                    assert_eq!(v.feed(&s[1..]).is_ok(), valid_prefix(&s));
                }
                let mut w = Utf8Validator::new();
                assert_eq!(w.feed(&s).is_ok(), valid_prefix(&s));
                assert_eq!(w.is_complete(), str::from_utf8(&s).is_ok());
            }
        }
    }

    #[test]
    fn random_sequences_against_reference() {
        // Bytes chosen around every boundary the decoder must get right.
        const ALPHABET: &[u8] = &[
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
            0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF8, 0xFF,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let n = (next() % 9) as usize;
            let s: Vec<u8> = (0..n).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            let cut = if n == 0 { 0 } else { (next() as usize) % (n + 1) };
            let mut v = Utf8Validator::new();
            let first = v.feed(&s[..cut]).is_ok();
            assert_eq!(first, valid_prefix(&s[..cut]), "{s:02x?} / {cut}");
            if first {
                assert_eq!(v.feed(&s[cut..]).is_ok(), valid_prefix(&s), "{s:02x?} / {cut}");
                if valid_prefix(&s) {
                    assert_eq!(v.is_complete(), str::from_utf8(&s).is_ok());
                }
            }
        }
    }

    #[test]
    fn errors_are_sticky_until_reset() {
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xE2, 0x82]).is_ok());
        assert!(!v.is_complete());
        assert!(v.feed(&[0x41]).is_err());
        assert!(v.feed(b"fine").is_err());
        assert!(!v.is_complete());
        v.reset();
        assert!(v.feed(b"fine").is_ok());
        assert!(v.is_complete());
        // A split 4-byte code point delivered one byte per call.
        for b in "𝄞".bytes() {
            assert!(v.feed(&[b]).is_ok());
        }
        assert!(v.is_complete());
    }
}
