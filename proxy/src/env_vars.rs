//! Environment variables in the configuration file.
//!
//! Inside a double-quoted string, `${NAME}` becomes the value of the
//! environment variable `NAME`, and `${NAME:-default}` the default when the
//! variable is unset or empty (as in a shell or a compose file). So one file
//! serves several deployments: a container publishing the HTTPS port under
//! another number, a certificate path per machine. `NAME` is written in
//! capitals (letters, digits and `_`), as environment variables are: the
//! proxy's own variables in header rules are lower case (`${host}`), and
//! stay theirs.
//!
//! ```toml
//! [[listen]]
//! addr = "0.0.0.0:${HTTPS_PORT:-8443}"
//! tls = true
//! ```
//!
//! Nothing else changes: single-quoted (literal) strings, comments and bare
//! values are left as written, `$1` and `${1}` in a rewrite are still
//! capture groups, and `$${NAME}` writes a literal `${NAME}`. The value is
//! put in as the string's content, so quotes or backslashes in it stay
//! characters of the string. HAProxy expands `"${NAME}"` in its
//! configuration the same way; nginx does not, and its Docker image runs
//! `envsubst` over templates instead.

use std::borrow::Cow;
use std::ops::Range;

/// A `${...}` that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// Where it is, in bytes of the file's text.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

/// What the scanner is inside of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    Toml,
    Comment,
    /// `"..."` or, when true, `"""..."""`.
    Basic(bool),
    /// `'...'` or, when true, `'''...'''`.
    Literal(bool),
}

/// `text` with every `${...}` of its double-quoted strings replaced, looking
/// variables up with `lookup`; borrowed when there is none.
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'_, str>, Vec<EnvError>> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut state = In::Toml;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let (next, taken) = match state {
            In::Toml if rest.starts_with("\"\"\"") => (In::Basic(true), 3),
            In::Toml if rest.starts_with("'''") => (In::Literal(true), 3),
            In::Toml if rest.starts_with('"') => (In::Basic(false), 1),
            In::Toml if rest.starts_with('\'') => (In::Literal(false), 1),
            In::Toml if rest.starts_with('#') => (In::Comment, 1),
            In::Comment if rest.starts_with('\n') => (In::Toml, 1),
            In::Basic(multi) if rest.starts_with('\\') => {
                // An escape: the next character is part of it.
                let escaped = rest[1..].chars().next().map_or(0, char::len_utf8);
                (In::Basic(multi), 1 + escaped)
            }
            In::Basic(true) if rest.starts_with("\"\"\"") => (In::Toml, 3),
            In::Basic(false) if rest.starts_with('"') || rest.starts_with('\n') => (In::Toml, 1),
            In::Literal(true) if rest.starts_with("'''") => (In::Toml, 3),
            In::Literal(false) if rest.starts_with('\'') || rest.starts_with('\n') => (In::Toml, 1),
            In::Basic(_) if rest.starts_with("$${") && names_a_variable(&rest[3..]) => {
                out.push_str("${");
                i += 3;
                continue;
            }
            In::Basic(_) if rest.starts_with("${") && names_a_variable(&rest[2..]) => {
                match variable(rest, i, &lookup) {
                    Ok((value, len)) => {
                        out.push_str(&crate::config::basic_string_content(&value));
                        i += len;
                    }
                    Err((error, len)) => {
                        errors.push(error);
                        i += len;
                    }
                }
                continue;
            }
            _ => (state, rest.chars().next().map_or(1, char::len_utf8)),
        };
        out.push_str(&rest[..taken]);
        state = next;
        i += taken;
    }
    if errors.is_empty() {
        Ok(Cow::Owned(out))
    } else {
        Err(errors)
    }
}

/// Whether `text` starts like an environment variable's name: a capital or `_`.
fn names_a_variable(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
}

/// The `${...}` at the start of `rest` (at byte `at` of the text): its value
/// and length, or why it has none.
fn variable(
    rest: &str,
    at: usize,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(String, usize), (EnvError, usize)> {
    let line_end = rest.find(['\n', '"']).unwrap_or(rest.len());
    let Some(close) = rest[..line_end].find('}') else {
        return Err((
            EnvError {
                span: at..at + 2,
                message: "`${` is not closed".into(),
                help: "write ${NAME} or ${NAME:-default}, or $${NAME} for a literal ${NAME}".into(),
            },
            2,
        ));
    };
    let len = close + 1;
    let inner = &rest[2..close];
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let error = |message: String, help: &str| {
        Err((
            EnvError {
                span: at..at + len,
                message,
                help: help.to_owned(),
            },
            len,
        ))
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return error(
            format!("`{name}` is not an environment variable's name"),
            "write it in capitals, digits and _ (e.g. ${HTTPS_PORT}), or $${NAME} for a literal ${NAME}",
        );
    }
    match (lookup(name).filter(|v| !v.is_empty()), default) {
        (Some(value), _) => Ok((value, len)),
        (None, Some(default)) => Ok((default.to_owned(), len)),
        (None, None) => error(
            format!("the environment variable {name} is not set"),
            &format!("set it, or give a default: ${{{name}:-VALUE}}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HTTPS_PORT" => Some("9443".into()),
            "EMPTY" => Some(String::new()),
            "QUOTED" => Some("a \"b\" \\ c".into()),
            "CONTROL" => Some("a\tb\u{1}c\nd".into()),
            _ => None,
        }
    }

    fn expanded(text: &str) -> String {
        expand(text, env).expect("expands").into_owned()
    }

    #[test]
    fn a_variable_or_its_default_fills_a_double_quoted_string() {
        assert_eq!(
            expanded("addr = \"0.0.0.0:${HTTPS_PORT}\"\n"),
            "addr = \"0.0.0.0:9443\"\n"
        );
        assert_eq!(
            expanded("addr = \"0.0.0.0:${HTTPS_PORT:-8443}\""),
            "addr = \"0.0.0.0:9443\""
        );
        assert_eq!(
            expanded("addr = \"0.0.0.0:${UNSET:-8443}\""),
            "addr = \"0.0.0.0:8443\""
        );
        // Empty counts as unset, as in a shell's `:-`.
        assert_eq!(expanded("a = \"${EMPTY:-x}\""), "a = \"x\"");
        assert_eq!(
            expanded("a = \"\"\"\n${HTTPS_PORT}\"\"\""),
            "a = \"\"\"\n9443\"\"\""
        );
    }

    #[test]
    fn comments_literal_strings_escapes_capture_groups_and_header_variables_are_left_alone() {
        for text in [
            "# publish ${HTTPS_PORT} too\n",
            "to = '/x/${NOPE}'\n",
            "to = \"/products/$1 ${1}\"\n",
            "set = { \"X-Host\" = \"${host}x $$5 $${host}\" }\n",
            "to = '''${NOPE}'''\n",
            "to = \"/products/$1\"\n",
            "a = \"\\${NOPE}\"\n",
            "a = 1 # \"${NOPE}\"\n",
        ] {
            assert_eq!(expanded(text), text);
        }
        assert_eq!(expanded("a = \"$${NOPE}\""), "a = \"${NOPE}\"");
        // A quote ends the string: what follows is not inside one.
        assert_eq!(
            expanded("a = \"x\" # ${NOPE}\nb = \"${HTTPS_PORT}\""),
            "a = \"x\" # ${NOPE}\nb = \"9443\""
        );
    }

    #[test]
    fn a_value_stays_the_string_s_content() {
        let text = expanded("a = \"${QUOTED}\"");
        assert_eq!(text, r#"a = "a \"b\" \\ c""#);
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["a"].as_str(), Some("a \"b\" \\ c"));
        for text in ["a = \"${CONTROL}\"", "a = \"\"\"${CONTROL}\"\"\""] {
            let parsed: toml::Table = toml::from_str(&expanded(text)).expect("valid TOML");
            assert_eq!(parsed["a"].as_str(), Some("a\tb\u{1}c\nd"), "{text}");
        }
    }

    #[test]
    fn what_cannot_be_expanded_is_named_with_its_place_and_a_fix() {
        let text = "a = \"${NOPE}\"\nb = \"${HTTPS-PORT}\"\nc = \"${OPEN\"\n";
        let errors = expand(text, env).expect_err("three errors");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(&text[errors[0].span.clone()], "${NOPE}");
        assert_eq!(
            errors[0].message,
            "the environment variable NOPE is not set"
        );
        assert_eq!(errors[0].help, "set it, or give a default: ${NOPE:-VALUE}");
        assert_eq!(&text[errors[1].span.clone()], "${HTTPS-PORT}");
        assert_eq!(
            errors[1].message,
            "`HTTPS-PORT` is not an environment variable's name"
        );
        assert_eq!(&text[errors[2].span.clone()], "${");
        assert_eq!(errors[2].message, "`${` is not closed");
    }

    #[test]
    fn a_file_without_variables_is_borrowed_as_it_is() {
        assert!(matches!(expand("a = \"$1\"", env), Ok(Cow::Borrowed(_))));
    }
}
