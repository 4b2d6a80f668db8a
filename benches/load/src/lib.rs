//! The client library of Herald's load and soak tools (`herald-load`, `herald-soak`): the
//! pieces both need, once.
//!
//! - [`rng`]: a small deterministic PRNG (xorshift64*);
//! - [`rlimit`]: raising the open-files limit (each client connection is a descriptor);
//! - [`procfs`]: a server's RSS, CPU time and descriptors, kernel socket memory, from `/proc`;
//! - [`sock`]: non-blocking connects from a chosen loopback source address, and the
//!   write-until-`WouldBlock` / read-until-`WouldBlock` loops of an edge-triggered client;
//! - [`http`]: HTTP/1.1 client requests and the response-head parser (on `httparse`), plus a
//!   blocking GET for control requests (`/stats`, `/metrics`);
//! - [`ws`]: the WebSocket client side: upgrade request, accept check, server-frame decoder,
//!   masked client frames;
//! - [`tls`]: `wss://` subscribers: a rustls client stream that reads and writes like a
//!   non-blocking socket;
//! - [`text`]: byte searches and number scans over message bodies.
//!
//! Herald's own codecs are reused where the client side matches the server side
//! (`herald::proto::ws::accept_key`, `herald::proto::http::ChunkedDecoder`). Everything here
//! is synchronous and runtime-free: the tools drive it from their own mio loops.

pub mod http;
pub mod procfs;
pub mod report;
pub mod rlimit;
pub mod rng;
pub mod sock;
pub mod text;
pub mod tls;
pub mod ws;
