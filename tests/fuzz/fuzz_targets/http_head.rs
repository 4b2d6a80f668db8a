#![no_main]
//! Fuzz target `http_head`: see `targets::http_head` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::http_head(data));
