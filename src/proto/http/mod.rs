//! HTTP/1.1 for Herald, as a pure core over bytes: request heads, request bodies and
//! response encoding. This module only declares the parts and re-exports their public items,
//! so every path `crate::proto::http::X` names the same item whichever file holds it.
//!
//! Owns, by file:
//! - `head.rs`: [`parse_head`], the request head (RFC 9112 §2-§5) on top of `httparse`, with
//!   Herald's limits ([`HttpLimits`]) checked on partial input too; [`Head`], [`HttpError`].
//! - `framing.rs`: the message-framing rules of RFC 9112 §6 (Content-Length /
//!   Transfer-Encoding, request smuggling defences) that give a head its [`BodyKind`].
//! - `chunked.rs`: [`ChunkedDecoder`] for chunked request bodies and [`chunk`] /
//!   [`LAST_CHUNK`] for chunked responses (RFC 9112 §7.1).
//! - `response.rs`: [`Response`], [`error_response`], [`reason`]: response heads and bodies,
//!   encoded into one buffer each and handed out as [`bytes::Bytes`] so the same bytes can
//!   be queued to many connections.
//! - Query-string helpers ([`query_param`], [`percent_decode`]), re-exported from
//!   [`super::query`].
//!
//! Called by: the reactor's connection state machine (feeding the bytes it has read, then
//! the body bytes after `head_len`) and the transports/routes (building responses).
//!
//! Never: touches a socket, reads the clock (so no `Date` header), allocates without a bound
//! set by [`HttpLimits`], or panics on any input. A caller-supplied header value can never
//! inject a header: values holding CR, LF or other control bytes are dropped.

mod chunked;
mod framing;
mod head;
mod response;
#[cfg(test)]
mod tests;

pub use super::query::{percent_decode, query_param};
pub use chunked::{chunk, ChunkedDecoder, LAST_CHUNK};
pub use head::{parse_head, BodyKind, Head, HttpError, HttpLimits, Method};
pub use response::{error_response, reason, Response, CONTINUE_100};

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// token (RFC 9110 §5.6.2): one or more tchar.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// field-value characters (RFC 9110 §5.5): no CTL other than HTAB, so never CR, LF or NUL.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
