//! Fuzz target: the checks in `fuzz/src/router.rs`. Run with `fuzz/run.sh 60 router`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::router::check(data));
