//! The properties the fuzz targets check, one module per target, each a plain
//! `pub fn check(data: &[u8])` that panics when a property does not hold.
//!
//! The fuzz targets (`fuzz_targets/*.rs`) are one line each: libFuzzer feeds
//! `check` millions of inputs. The same files are included by
//! `proxy/tests/fuzz_regressions.rs` and `lab/tests/fuzz_regressions.rs`, which
//! run the seeds and every saved crash on stable Rust with `cargo test`. So a
//! module here may use only `proxy`, `lab`, `toml` and `std`.
//!
//! # Layout
//! - [`config`]: `Config::parse`, the TOML parser and validator.
//! - [`import_nginx`]: `proxy::nginx::import`, nginx config to TOML.
//! - [`scenario`]: the lab's scenario files.
//! - [`router`]: `normalize_host` and `Router::route`.

pub mod config;
pub mod import_nginx;
pub mod router;
pub mod scenario;
