//! Tests that span the submodules (random input through every entry point), and the
//! fixtures the submodules' own tests share.

use super::chunked::tests::CHUNKED;
use super::head::tests::COMPLETE;
use super::*;

pub(super) const L: HttpLimits =
    HttpLimits { max_request_line: 8192, max_headers: 64, max_header_bytes: 16384, max_body: 1 << 20 };

pub(super) fn ok(buf: &[u8]) -> Head<'_> {
    match parse_head(buf, &L) {
        Ok(Some(h)) => h,
        other => panic!("{:?}: {:?}", String::from_utf8_lossy(buf), other.map(|h| h.is_some())),
    }
}

pub(super) fn err(buf: &[u8]) -> HttpError {
    err_with(buf, &L)
}

pub(super) fn err_with(buf: &[u8], limits: &HttpLimits) -> HttpError {
    match parse_head(buf, limits) {
        Err(e) => e,
        Ok(h) => panic!("{:?} parsed: {:?}", String::from_utf8_lossy(buf), h.map(|h| h.head_len)),
    }
}

pub(super) fn partial(buf: &[u8]) -> bool {
    matches!(parse_head(buf, &L), Ok(None))
}

use crate::proto::testrng::Rng;

#[test]
fn garbage_never_panics() {
    const ALPHABET: &[u8] = b"\r\n\r\n :;,\t0123456789abcdefABCDEF/?%=&GETPOSTHTTP/1.1HostContent-LengthTransfer-Encodingchunked\x00\x7f\xff\xc3";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tiny = HttpLimits { max_request_line: 40, max_headers: 3, max_header_bytes: 120, max_body: 50 };
    let seeds: Vec<&[u8]> = COMPLETE.iter().copied().chain(CHUNKED.iter().map(|c| c.0)).collect();
    let mut bare_lf_seen = 0;
    for round in 0..30_000 {
        let len = rng.below(160);
        let buf: Vec<u8> = match round % 3 {
            // Raw bytes.
            0 => (0..len).map(|_| rng.next() as u8).collect(),
            // Bytes from an HTTP-ish alphabet.
            1 => (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect(),
            // A valid message with a few mutations.
            _ => {
                let mut v = seeds[rng.below(seeds.len())].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(v.len() + 1);
                    match rng.below(4) {
                        0 if i < v.len() => v[i] = ALPHABET[rng.below(ALPHABET.len())],
                        1 if i < v.len() => {
                            v.remove(i);
                        }
                        // Turn a CRLF into a bare LF.
                        2 => {
                            let crs: Vec<usize> = (0..v.len()).filter(|&j| v[j] == b'\r').collect();
                            if !crs.is_empty() {
                                v.remove(crs[rng.below(crs.len())]);
                            }
                        }
                        _ => v.insert(i, rng.next() as u8),
                    }
                }
                v
            }
        };
        // The structural bare-LF check agrees with a naive scan of every byte.
        let naive_bare_lf = |head: &[u8]| (0..head.len()).any(|i| head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'));
        let mut slots = [httparse::EMPTY_HEADER; 64];
        if let Ok(httparse::Status::Complete(n)) = httparse::Request::new(&mut slots).parse(&buf) {
            if naive_bare_lf(&buf[..n]) {
                bare_lf_seen += 1;
                assert!(parse_head(&buf, &L).is_err(), "{:?}", String::from_utf8_lossy(&buf));
            }
        }
        for limits in [&L, &tiny] {
            if let Ok(Some(h)) = parse_head(&buf, limits) {
                assert!(!naive_bare_lf(&buf[..h.head_len]));
                assert!(h.head_len <= buf.len());
                assert!(h.headers.len() <= limits.max_headers);
                if let BodyKind::Length(n) = h.body {
                    assert!(n <= limits.max_body);
                }
            }
        }
        let mut d = ChunkedDecoder::new(64);
        let mut out = Vec::new();
        let cut = rng.below(buf.len() + 1);
        if let Ok((n, done)) = d.feed(&buf[..cut], &mut out) {
            assert!(n <= cut && (done || n == cut));
            if !done {
                let _ = d.feed(&buf[cut..], &mut out);
            }
        }
        assert!(out.len() <= 64);
        let s = String::from_utf8_lossy(&buf);
        let _ = query_param(&s, "cid");
        let _ = percent_decode(&s);
        let r = Response::new(rng.next() as u16).header(&s, &s).body(&s, &buf);
        assert!(r.starts_with(b"HTTP/1.1 "));
    }
    assert!(bare_lf_seen > 100, "the loop must reach the bare-LF check: {bare_lf_seen}");
}
