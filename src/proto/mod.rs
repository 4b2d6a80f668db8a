pub mod http;
pub mod query;
pub mod utf8;
pub mod ws;
