#![no_main]
//! Fuzz target `sse`: see `targets::sse` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::sse(data));
