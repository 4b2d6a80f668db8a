//! Herald: a real-time messaging server.
//!
//! Three rings (see README.md "Architecture"):
//! - [`proto`]: pure cores over bytes (HTTP, WebSocket); no sockets, no clock.
//! - [`hub`] and [`transport`]: channels, history and per-worker subscriber sets; adapters
//!   between a connection and the hub for each transport.
//! - [`reactor`]: the only IO layer: mio poll loop, slab of connections, timers.
//!
//! [`config`] and [`logger`] serve `main`.
#![warn(missing_docs)]
pub mod alloc;
pub mod cli;
pub mod config;
pub mod hub;
pub mod logger;
pub mod proto;
pub mod reactor;
pub mod transport;
