#![no_main]
//! Fuzz target `cf_command`: see `targets::cf_command` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::cf_command(data));
