//! Message framing of a request (RFC 9112 §6): what Content-Length, Transfer-Encoding and
//! Connection say, and the body length rules of §6.3 that turn them into a [`BodyKind`],
//! including the request-smuggling defences (both headers, conflicting lengths, chunked not
//! last or repeated, Transfer-Encoding in HTTP/1.0).
//!
//! Called by: [`super::head::parse_head`] only, once the head is complete; its list helpers
//! also serve [`super::Head::header_has_token`].
//!
//! Never: decides by header order (all fields are gathered in one pass first), trusts a
//! Content-Length it cannot parse exactly, or panics on any input.

use super::head::{BodyKind, HttpError, HttpLimits};

/// What the framing-relevant headers say, gathered in one pass before any decision, so the
/// outcome does not depend on header order.
#[derive(Default)]
pub(super) struct Framing {
    content_length: Option<usize>,
    te_present: bool,
    te_chunked_count: usize,
    te_last_chunked: bool,
    te_other: bool,
    pub(super) conn_close: bool,
    pub(super) conn_keep_alive: bool,
    pub(super) hosts: usize,
}

impl Framing {
    pub(super) fn scan(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
        let mut f = Framing::default();
        for h in headers {
            let name = h.name;
            // Dispatch on length first: most headers are rejected by one compare.
            match name.len() {
                4 if name.eq_ignore_ascii_case("host") => f.hosts += 1,
                10 if name.eq_ignore_ascii_case("connection") => {
                    for token in list_items(h.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            f.conn_close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            f.conn_keep_alive = true;
                        }
                    }
                }
                14 if name.eq_ignore_ascii_case("content-length") => f.add_content_length(h.value)?,
                17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                    f.te_present = true;
                    for coding in list_items(h.value) {
                        let chunked = coding.eq_ignore_ascii_case(b"chunked");
                        f.te_chunked_count += usize::from(chunked);
                        f.te_other |= !chunked;
                        f.te_last_chunked = chunked;
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Content-Length = 1*DIGIT (RFC 9110 §8.6). A list or repeated field is accepted only
    /// when every value is the same; otherwise the framing is ambiguous (RFC 9112 §6.3 (5)).
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::BadRequest("invalid Content-Length"));
            }
            // Saturate: any value this large is over every body limit anyway.
            let n = item.iter().fold(0usize, |n, &d| n.saturating_mul(10).saturating_add(usize::from(d - b'0')));
            match self.content_length {
                Some(prev) if prev != n => return Err(HttpError::BadRequest("conflicting Content-Length values")),
                _ => self.content_length = Some(n),
            }
        }
        Ok(())
    }

    /// The body length rules of RFC 9112 §6.3, in their order.
    pub(super) fn body_kind(&self, minor_version: u8, limits: &HttpLimits) -> Result<BodyKind, HttpError> {
        if self.te_present {
            // §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
            if minor_version == 0 {
                return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"));
            }
            // §6.1, §6.3 (3): both headers are a classic smuggling vector; reject.
            if self.content_length.is_some() {
                return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"));
            }
            // §6.3 (4): without chunked last, a request body length cannot be determined.
            if !self.te_last_chunked {
                return Err(HttpError::BadRequest("chunked is not the final transfer coding"));
            }
            // §7: chunked must not be applied more than once.
            if self.te_chunked_count > 1 {
                return Err(HttpError::BadRequest("chunked applied more than once"));
            }
            // §6.1: an unknown transfer coding SHOULD get 501.
            if self.te_other {
                return Err(HttpError::NotImplemented("unsupported transfer coding"));
            }
            return Ok(BodyKind::Chunked);
        }
        match self.content_length {
            Some(n) if n > limits.max_body => Err(HttpError::BodyTooLarge),
            Some(n) => Ok(BodyKind::Length(n)),
            None => Ok(BodyKind::None),
        }
    }
}

/// The non-empty elements of a comma-separated list, trimmed of OWS (RFC 9110 §5.6.1).
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|item| !item.is_empty())
}

pub(super) fn list_has_token(value: &[u8], token: &str) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, ok};
    use super::*;

    #[test]
    fn body_framing() {
        let body = |req: &'static [u8]| ok(req).body;
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n"), BodyKind::Length(42));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), BodyKind::Length(0));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 007\r\n\r\n"), BodyKind::Length(7));
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            BodyKind::Length(5)
        );
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"), BodyKind::Length(5));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"), BodyKind::Chunked);
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"), BodyKind::Chunked);
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked,\r\n\r\n"), BodyKind::Chunked);
        assert_eq!(body(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n"), BodyKind::Length(3));
        assert_eq!(body(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"), BodyKind::None);
    }

    #[test]
    fn invalid_content_length() {
        for v in ["", "-1", "+5", "0x10", "5 5", "5,", ",5", "5;", "1e3", "\u{663}"] {
            let req = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n");
            assert_eq!(err(req.as_bytes()), HttpError::BadRequest("invalid Content-Length"), "{v:?}");
        }
    }

    #[test]
    fn smuggling() {
        let e = |req: &'static [u8]| err(req);
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::BadRequest("both Content-Length and Transfer-Encoding")
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n").status(),
            400
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HttpError::BadRequest("conflicting Content-Length values")
        );
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n").status(), 400);
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HttpError::BadRequest("chunked is not the final transfer coding")
        );
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").status(), 400);
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HttpError::NotImplemented("unsupported transfer coding")
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
            501
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
                .status(),
            400
        );
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n").status(), 400);
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n").status(), 400);
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n").status(), 400);
        assert_eq!(
            e(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::BadRequest("Transfer-Encoding in HTTP/1.0")
        );
        // Whitespace before the colon and obs-fold are both rejected (RFC 9112 §5.1, §5.2).
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n").status(), 400);
        assert_eq!(e(b"POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n").status(), 400);
        assert_eq!(e(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n").status(), 400);
    }

    #[test]
    fn limit_body() {
        assert_eq!(err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n"), HttpError::BodyTooLarge);
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n").body,
            BodyKind::Length(1 << 20)
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999999\r\n\r\n").status(),
            413
        );
        // Framing errors win over the size: ambiguity is the bigger fault.
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\nTransfer-Encoding: chunked\r\n\r\n")
                .status(),
            400
        );
    }
}
