#![no_main]
//! Fuzz target `since`: see `targets::since` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::since(data));
