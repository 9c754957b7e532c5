//! Fuzz target: the checks in `fuzz/src/scenario.rs`. Run with `fuzz/run.sh 60 scenario`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::scenario::check(data));
