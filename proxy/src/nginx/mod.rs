//! `proxy import-nginx`: an nginx configuration, rewritten as this proxy's TOML.
//!
//! nginx and this proxy describe the same things with different shapes:
//!
//! | nginx | here |
//! |---|---|
//! | `server { listen 80; server_name a.com; }` | `[[listen]]` (shared by every server) + `[[servers]]` with `server_names` |
//! | `location /api/ { proxy_pass http://api/; }` | `[[servers.routes]]` `path = "/api/"`, `upstream = "api"`, `strip_prefix = true` |
//! | `upstream api { server a:8000 weight=2; }` | `[upstreams.api]` `servers = ["a:8000 weight=2"]` |
//! | directives inherited `http` -> `server` -> `location` | server settings a route may replace |
//! | `return 301 https://$host$request_uri` in a port-80 server | `redirect_https = true` on the HTTPS server |
//!
//! The biggest model difference: nginx binds each `server` to its own `listen`
//! ports, while here every `[[listen]]` serves every server, chosen by Host.
//! The second: nginx's upstream defaults (`Host: $proxy_host`, HTTP/1.0, a new
//! connection per request) are not ours (the client's Host, HTTP/1.1, pooled
//! keep-alive connections); the import writes what keeps nginx's behaviour
//! and says so.
//!
//! Two steps, as in any compiler: [`parse`] turns the text into a tree of
//! directives (syntax only, errors at a line), and [`translate`] walks the
//! tree into this proxy's model, with a [`Warning`] for each directive it
//! cannot translate and each place where the behaviour differs; its `render`
//! part writes the TOML text.

pub mod parse;
pub mod translate;

use std::fmt;

pub use parse::{Directive, ParseError};
pub use translate::{Severity, Warning};

/// The result of an import: the TOML text and what to read about it.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The configuration, as TOML with comments naming the nginx lines.
    pub toml: String,
    /// Warnings and notes, by line.
    pub warnings: Vec<Warning>,
}

/// Imports the nginx configuration `text`; `file` names it in comments and
/// messages. Fails only on a syntax error.
pub fn import(text: &str, file: &str) -> Result<Imported, ParseError> {
    let tree = parse::parse(text)?;
    let (toml, mut warnings) = translate::translate(&tree, file);
    check_with_the_proxy(&toml, file, &mut warnings);
    Ok(Imported { toml, warnings })
}

/// The import's own check: the TOML goes through the proxy's validator
/// ([`crate::Config::parse`]) and each error becomes a warning at the nginx
/// line the TOML line names in its comment (else line 1). nginx accepts
/// values the proxy refuses (a server name with spaces, a header value
/// with control characters, ...): better said now than at `proxy check`.
/// Files the config names (certificates, password files) may be on another
/// machine, so "cannot read" errors are left to `proxy check`.
fn check_with_the_proxy(toml: &str, file: &str, warnings: &mut Vec<Warning>) {
    let Err(errors) = crate::Config::parse(toml, "imported.toml") else {
        return;
    };
    if errors
        .0
        .iter()
        .any(|d| d.message.starts_with("cannot read "))
    {
        return;
    }
    let marker = format!("# {file}:");
    for error in errors
        .0
        .iter()
        .filter(|d| d.severity == crate::Severity::Error)
    {
        let at = error.at.as_ref();
        let line = at
            .and_then(|at| at.source_line.rsplit_once(marker.as_str()))
            .and_then(|(_, rest)| {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                rest[..digits].parse().ok()
            })
            .unwrap_or(1);
        let toml_line = at
            .map(|at| format!(" (TOML line {})", at.line))
            .unwrap_or_default();
        warnings.push(Warning {
            line,
            severity: Severity::Warning,
            message: format!(
                "the proxy refuses the translation{toml_line}: {}; edit the TOML by hand",
                error.message.replace('\n', " ")
            ),
        });
    }
}

/// A warning as the command prints it: `nginx.conf:12: warning: ...`.
pub struct Located<'a> {
    /// The nginx file's name.
    pub file: &'a str,
    /// The warning.
    pub warning: &'a Warning,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.warning.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(
            f,
            "{}:{}: {kind}: {}",
            self.file, self.warning.line, self.warning.message
        )
    }
}
