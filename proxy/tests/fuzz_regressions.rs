//! The fuzz targets' checks on stable Rust: every seed and every saved crash
//! input in `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` goes
//! through the same `check` function the fuzzer calls (the files are
//! included from `fuzz/src/`). A crash the fuzzer found stays fixed: its input
//! is a file here. See docs/fuzzing.md.

#[path = "../../fuzz/src/replay.rs"]
mod replay;
use replay::run_inputs;

#[path = "../../fuzz/src/config.rs"]
mod config;
#[path = "../../fuzz/src/import_nginx.rs"]
mod import_nginx;
#[path = "../../fuzz/src/router.rs"]
mod router;

#[test]
fn config_seeds_and_regressions_hold_the_fuzz_properties() {
    run_inputs("config", config::check);
}

#[test]
fn import_nginx_seeds_and_regressions_hold_the_fuzz_properties() {
    run_inputs("import_nginx", import_nginx::check);
}

#[test]
fn router_seeds_and_regressions_hold_the_fuzz_properties() {
    run_inputs("router", router::check);
}
