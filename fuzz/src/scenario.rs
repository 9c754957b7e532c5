//! Properties of `lab::scenario::Scenario::parse`.
//!
//! For any text, parsing returns (never panics), and a refusal names the file
//! and a real position: a line of the text and a column within that line,
//! shown as `file:line:column`.

use lab::scenario::{Scenario, ScenarioError};

const FILE: &str = "fuzz-scenario.toml";

/// Checks the properties above on `data` (ignored unless UTF-8).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(error) = Scenario::parse(text, FILE) else {
        return;
    };
    let shown = error.to_string();
    let ScenarioError::Invalid {
        file, line, column, ..
    } = &error
    else {
        panic!("a parse error that is not `Invalid`: {shown}");
    };
    assert_eq!(file, FILE);
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(line),
        "line {line} outside the text's {} lines: {shown}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    assert!(
        (1..=width + 1).contains(column),
        "column {column} outside line {line} ({width} characters): {shown}"
    );
    assert!(
        shown.starts_with(&format!("{FILE}:{line}:{column}: ")),
        "no file:line:column in {shown}"
    );
}
