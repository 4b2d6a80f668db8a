#![no_main]
//! Fuzz target `ws_decoder`: see `targets::ws_decoder` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::ws_decoder(data));
