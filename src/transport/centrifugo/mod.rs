//! Centrifugo compatibility on a connection: its client protocol (`/connection/websocket`
//! and the unidirectional transports) and its server API (`/api/<method>`), so that
//! Centrifugo's SDKs and API clients work against Herald unchanged. One hub serves both
//! worlds: a Centrifugo offset is the id the simple transports see. The pure protocol is
//! `proto::centrifugo` and `proto::jwt`; the configuration sections are
//! `config::centrifugo`.

pub mod api;
pub mod client;
pub mod emulation;
pub mod proxy;
pub mod uni;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pb;
#[cfg(test)]
mod tests_proxy;
