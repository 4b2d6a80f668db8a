//! Centrifugo compatibility: its client protocol (`/connection/websocket` and the
//! unidirectional transports), its server API (`/api/<method>`), its tokens, its
//! configuration sections and its CLI commands, so that Centrifugo's SDKs and API clients
//! work against Herald unchanged. One hub serves both worlds: a Centrifugo offset is the
//! id the simple transports see.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod proto;
pub mod token;
pub mod uni;
