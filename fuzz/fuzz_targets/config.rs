//! Fuzz target: the checks in `fuzz/src/config.rs`. Run with `fuzz/run.sh 60 config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::config::check(data));
