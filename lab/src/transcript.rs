//! Transcripts: what happened during a run, as text a chapter can show and a
//! snapshot test can pin.
//!
//! Ports change on every run (every service binds port 0), so a transcript is
//! *normalised* before it is shown: a service's address becomes its name in
//! angle brackets (`127.0.0.1:41807` -> `<whoami-2>`), and any other loopback
//! port becomes `<port>`, and a time the proxy measured (`in 1.4 ms`) becomes
//! `in <ms>`. The facts stay visible; only the noise goes.

use std::fmt::Write as _;

use crate::client::Exchange;
use crate::stack::LabStack;

/// A titled list of requests, answers and notes.
#[derive(Debug, Clone)]
pub struct Transcript {
    title: String,
    lines: Vec<String>,
    /// `(address, name)` pairs for normalisation.
    names: Vec<(String, String)>,
}

impl Transcript {
    /// An empty transcript for a run on `stack`.
    pub fn new(title: &str, stack: &impl LabStack) -> Transcript {
        let names = stack.transcript_names();
        Transcript {
            title: title.to_owned(),
            lines: Vec::new(),
            names,
        }
    }

    /// A comment for the reader: what to look at and why.
    pub fn note(&mut self, text: &str) {
        self.lines.push(format!("# {text}"));
    }

    /// A request line and its status: `GET http://app.localhost/api/ -> 200 OK`.
    pub fn exchange(&mut self, exchange: &Exchange) {
        self.exchange_via(exchange, "");
    }

    /// A request line with where it was sent, `via` (` via <proxy-l4>`), before its status.
    pub fn exchange_via(&mut self, exchange: &Exchange, via: &str) {
        self.lines.push(format!(
            "{} {}://{}{}{via} -> {}",
            exchange.method, exchange.scheme, exchange.host, exchange.path, exchange.status
        ));
    }

    /// A line as it is.
    pub fn line(&mut self, text: &str) {
        self.lines.push(text.to_owned());
    }

    /// A detail of the last exchange, indented under it.
    pub fn detail(&mut self, key: &str, value: &str) {
        self.lines.push(format!("    {key}: {value}"));
    }

    /// An empty line between parts.
    pub fn gap(&mut self) {
        self.lines.push(String::new());
    }

    /// A line as the transcript will show it: addresses as names, no
    /// timings (what an expectation about shown text compares with).
    pub fn normalised(&self, line: &str) -> String {
        normalise(line, &self.names)
    }

    /// The normalised text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} ==", self.title);
        for line in &self.lines {
            let _ = writeln!(out, "{}", normalise(line, &self.names));
        }
        out
    }
}

/// Replaces known addresses by names, then any other `127.0.0.1:PORT` port by `<port>`.
fn normalise(line: &str, names: &[(String, String)]) -> String {
    let mut text = line.to_owned();
    for (addr, name) in names {
        text = text.replace(addr.as_str(), name);
    }
    const LOOPBACK: &str = "127.0.0.1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(LOOPBACK) {
        let after = &rest[at + LOOPBACK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..at + LOOPBACK.len()]);
        if digits > 0 {
            out.push_str("<port>");
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    hide_timings(&out)
}

/// `answered 200 OK in 1.4 ms` -> `answered 200 OK in <ms>`, and
/// `failed after 0.2 ms` -> `failed after <ms>`.
fn hide_timings(text: &str) -> String {
    [" in ", " after "]
        .iter()
        .fold(text.to_owned(), |text, word| hide_millis_after(&text, word))
}

/// Each `{word}N ms` (N a number) becomes `{word}<ms>`.
fn hide_millis_after(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let after = &rest[at + word.len()..];
        let number = after
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        out.push_str(&rest[..at + word.len()]);
        if number > 0 && after[number..].starts_with(" ms") {
            out.push_str("<ms>");
            rest = &after[number + 3..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_addresses_become_names_and_other_ports_are_hidden() {
        let names = vec![("127.0.0.1:41807".to_owned(), "<whoami-2>".to_owned())];
        assert_eq!(
            normalise(
                "upstream 127.0.0.1:41807, peer 127.0.0.1:50123, ip 127.0.0.1",
                &names
            ),
            "upstream <whoami-2>, peer 127.0.0.1:<port>, ip 127.0.0.1"
        );
        assert_eq!(
            normalise("answered 200 OK in 1.4 ms, drains in 995 ms, in 3 s", &[]),
            "answered 200 OK in <ms>, drains in <ms>, in 3 s"
        );
        assert_eq!(
            normalise("failed after 0.2 ms: refused, after 2 tries", &[]),
            "failed after <ms>: refused, after 2 tries"
        );
    }
}
