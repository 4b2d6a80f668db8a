#![no_main]
//! Fuzz target `query`: see `targets::query` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::query(data));
