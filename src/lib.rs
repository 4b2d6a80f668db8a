//! Herald: a real-time messaging server.
//!
//! Three rings (see ../shared/DESIGN.md and README.md):
//! - [`proto`]: pure cores over bytes (HTTP, WebSocket, SSE); no sockets, no clock.
//! - [`hub`] and [`transport`]: per-worker channel state and adapters between a
//!   connection and the hub.
//! - [`reactor`]: the only IO layer: mio poll loop, slab of connections, timers.
pub mod proto;
