#![no_main]
//! Fuzz target `cf_config`: see `targets::cf_config` in ../targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::cf_config(data));
