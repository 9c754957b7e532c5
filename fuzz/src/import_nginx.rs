//! Properties of `proxy::nginx::import` (`proxy import-nginx`).
//!
//! For any text:
//! 1. the import returns, never panics;
//! 2. a syntax error points at a line of the text and says something;
//! 3. every warning points at a line of the text;
//! 4. what it writes is TOML: the `toml` crate parses it (no duplicate keys
//!    or tables, no raw control characters, no text of the nginx file
//!    escaping from a comment or a string into a key);
//! 5. when it raised no warning (notes only), it claims a faithful
//!    translation, so the TOML must pass `Config::parse`, the proxy's own
//!    validator; with a warning, the output may need a human's edit, and
//!    the warning says why. Files the nginx config names (certificates,
//!    password files) are not on the fuzzing machine: "cannot read" errors
//!    are about this machine, not the translation: such an import is not judged.

use proxy::Config;
use proxy::nginx::{self, Severity};

const FILE: &str = "fuzz.conf";

/// Checks the properties above on `data` (ignored unless UTF-8).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    let imported = match nginx::import(text, FILE) {
        Ok(imported) => imported,
        Err(error) => {
            assert!(
                (1..=lines).contains(&error.line),
                "syntax error at line {} of {lines}: {}",
                error.line,
                error.message
            );
            assert!(!error.message.trim().is_empty(), "empty syntax error");
            return;
        }
    };
    for warning in &imported.warnings {
        assert!(
            (1..=lines).contains(&warning.line),
            "warning at line {} of {lines}: {}",
            warning.line,
            warning.message
        );
    }
    if let Err(err) = toml::from_str::<toml::Table>(&imported.toml) {
        panic!("the import is not TOML: {err}\n---\n{}", imported.toml);
    }
    let warned = imported
        .warnings
        .iter()
        .any(|w| w.severity == Severity::Warning);
    if !warned
        && let Err(errors) = Config::parse(&imported.toml, "imported.toml")
        && !errors
            .0
            .iter()
            .any(|d| d.message.starts_with("cannot read "))
    {
        panic!(
            "an import without warnings is refused by the proxy:\n{errors}\n---\n{}",
            imported.toml
        );
    }
}
