#![no_main]
//! Fuzz target `cf_token`: see `targets::cf_token` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::cf_token(data));
