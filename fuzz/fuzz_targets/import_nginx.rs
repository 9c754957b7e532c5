//! Fuzz target: the checks in `fuzz/src/import_nginx.rs`. Run with `fuzz/run.sh 60 import_nginx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy_fuzz::import_nginx::check(data));
