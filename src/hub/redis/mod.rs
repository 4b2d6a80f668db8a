//! The Redis engine's sans-IO half: what a node says to Redis and how it reads the
//! answers, without a socket.
//!
//! Owns: [`shard`] (which Redis instance holds a channel: jump consistent hashing, so adding
//! a shard moves few channels), [`script`] (the Lua scripts that sequence, store and publish
//! a message atomically, and read history with the stream position), and [`link`] (one
//! connection's state machine: commands queued with tags and pipelined, replies matched in
//! order, pub/sub messages decoded into [`link::Publication`]s). The socket driver belongs
//! to the reactor (the only IO layer); it feeds a link bytes and writes what the link
//! queued. [`engine`] is the engine itself, talking to the driver through [`engine::Io`].

pub mod engine;
pub mod link;
pub mod script;
pub mod shard;
