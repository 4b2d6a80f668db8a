//! Pure protocol cores over bytes: no sockets, no clock, nothing from the rings above.
//!
//! - [`http`]: HTTP/1.1 request heads, chunked bodies, responses.
//! - [`ws`]: RFC 6455 handshake and frame codec.
//! - [`ws_deflate`]: permessage-deflate (RFC 7692) negotiation, deflate and inflate.
//! - [`centrifugo`]: Centrifugo's client protocol (JSON) and its codes.
//! - [`centrifugo_pb`]: the same protocol in protobuf (prost structs of client.proto).
//! - [`jwt`]: Centrifugo connection and subscription tokens (JWT: HMAC, RSA, ECDSA).
//! - [`jwk`], [`jwks`]: public keys (PEM, JWK) and key sets from a JWKS endpoint.
//! - [`json`]: the escaping JSON writer every hand-built reply goes through.
//! - [`resp`]: the Redis protocol (commands out, replies in).
//! - [`proxy`]: the JSON bodies of Centrifugo's HTTP proxy calls to the application backend.
//! - [`query`], [`utf8`]: query strings and streaming UTF-8 validation.
pub mod centrifugo;
pub mod centrifugo_pb;
pub mod http;
pub mod json;
pub mod jwk;
pub mod jwks;
pub mod jwt;
pub mod proxy;
pub mod query;
pub mod resp;
#[cfg(test)]
pub(crate) mod testrng;
pub mod utf8;
pub mod ws;
pub mod ws_deflate;
