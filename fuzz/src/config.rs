//! Properties of `Config::parse`, the TOML parser and validator.
//!
//! For any text:
//! 1. parsing returns, never panics (any panic fails the check);
//! 2. a refusal has at least one error, and every diagnostic names the file;
//!    one with a position points at a real line of the text (its number and
//!    its text agree with the input) and its rendering shows `file:line:column`;
//! 3. an accepted config compiles into a router and lints without panicking;
//! 4. validity is a property of the data, not of its layout: the same TOML
//!    re-written by the `toml` crate (other spacing, quoting and key order)
//!    is accepted too. There is no `Config` -> TOML renderer to round-trip
//!    through, so this is the round trip the API allows.

use proxy::Config;
use proxy::config::Severity;
use proxy::router::Router;

/// The file name the checks pass to the parser, to find it in messages.
const FILE: &str = "fuzz.toml";

/// Checks the properties above on `data` (ignored unless UTF-8).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, FILE) {
        Err(errors) => check_errors(text, &errors),
        Ok(config) => {
            let router = Router::new(&config);
            let _ = router.route(Some("localhost"), "/");
            let _ = proxy::lint::lint(&config, text, FILE);
            check_rewritten_is_valid(text);
        }
    }
}

fn check_errors(text: &str, errors: &proxy::ConfigErrors) {
    assert!(
        errors.0.iter().any(|d| d.severity == Severity::Error),
        "a refused config has no error: {errors}"
    );
    let lines: Vec<&str> = text.split('\n').collect();
    for diagnostic in &errors.0 {
        assert_eq!(diagnostic.file, FILE, "diagnostic names another file");
        assert!(!diagnostic.message.trim().is_empty(), "empty message");
        let shown = diagnostic.to_string();
        let Some(at) = &diagnostic.at else {
            assert!(shown.contains(FILE), "no file in {shown}");
            continue;
        };
        assert!(
            (1..=lines.len()).contains(&at.line),
            "line {} outside the text's {} lines: {shown}",
            at.line,
            lines.len()
        );
        assert_eq!(
            at.source_line,
            lines[at.line - 1].trim_end_matches('\r'),
            "the excerpt is not line {}",
            at.line
        );
        assert!(at.column >= 1 && at.width >= 1, "column/width: {at:?}");
        assert!(
            shown.contains(&format!("{FILE}:{}:{}", at.line, at.column)),
            "no file:line:column in {shown}"
        );
    }
}

fn check_rewritten_is_valid(text: &str) {
    let Ok(value) = toml::from_str::<toml::Table>(text) else {
        panic!("the config parser accepted text the toml crate refuses");
    };
    let Ok(rewritten) = toml::to_string(&value) else {
        return; // not every TOML document re-serialises (e.g. some nestings)
    };
    if let Err(errors) = Config::parse(&rewritten, FILE) {
        panic!("accepted config refused once re-written:\n{rewritten}\n{errors}");
    }
}
