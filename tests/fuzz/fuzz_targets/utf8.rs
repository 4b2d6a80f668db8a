#![no_main]
//! Fuzz target `utf8`: see `targets::utf8` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::utf8(data));
