#![no_main]
//! Fuzz target `channel`: see `targets::channel` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::channel(data));
