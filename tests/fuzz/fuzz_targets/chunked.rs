#![no_main]
//! Fuzz target `chunked`: see `targets::chunked` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::chunked(data));
