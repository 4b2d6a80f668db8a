#![no_main]
//! Fuzz target `ws_deflate`: see `targets::ws_deflate` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::ws_deflate(data));
