//! Properties of host and path normalisation and of routing
//! (`proxy::router`, `proxy::path`).
//!
//! The input is lines: a Host header, a path, then extra lines that add
//! server names (or, starting with `/`, prefix routes) to a small config.
//!
//! `normalize_host(host)`, when it gives a name, gives one that is:
//! - a fixed point: normalising it again changes nothing (idempotent);
//! - lower case (ASCII), trimmed, without a port and without a trailing dot.
//!
//! `path::normalize(path)`, when it accepts a path, gives one that is:
//! - a fixed point (normalising it again gives the same path);
//! - still absolute, with no empty, `.` or `..` segment left to resolve, so
//!   the route chosen for it is the route the upstream's path belongs to;
//! - free of escapes that mean a separator or an unreserved character
//!   (`%2F`, `%5C`, `%00`, `%2E`, `%41`, ...), with every `%` followed by
//!   two upper-case hex digits.
//!
//! `Router::route` never panics, and:
//! - routing the raw host, its normalised form, its upper-case form, or the
//!   name with `:8080` or a trailing dot added, picks the same server and route;
//! - the route it picks is one of [`Router::candidates`] and matches the
//!   path (equal for an exact route, a prefix otherwise), and no other
//!   matching prefix route is longer; no route means no candidate.

use proxy::Config;
use proxy::path;
use proxy::router::{Router, normalize_host};

/// Checks the properties above on `data` (ignored unless UTF-8).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let extra: Vec<&str> = lines.collect();

    if let Ok(normal_path) = path::normalize(path) {
        check_normalized_path(path, &normal_path);
    }

    let normalized = normalize_host(host);
    if let Some(name) = &normalized {
        check_normalized(host, name);
    }

    let config = config_with(&extra)
        .or_else(|| config_with(&[]))
        .expect("the base config is valid");
    let router = Router::new(&config);
    let raw = router.route(Some(host), path);
    assert_eq!(raw, router.route(normalized.as_deref(), path), "{host:?}");
    assert_eq!(
        raw,
        router.route(Some(&host.to_ascii_uppercase()), path),
        "upper case {host:?}"
    );
    if let Some(name) = normalized.as_deref().filter(|n| !n.starts_with('[')) {
        for variant in [
            format!("{name}:8080"),
            format!("{name}."),
            format!("{name}.:443"),
        ] {
            assert_eq!(raw, router.route(Some(&variant), path), "{variant:?}");
        }
    }
    check_route(&config, &router, raw.server, raw.route, path);
}

fn check_normalized_path(path: &str, normal: &str) {
    assert_eq!(
        path::normalize(normal).as_deref(),
        Ok(normal),
        "normalising {path:?} twice changed it"
    );
    if !path.starts_with('/') {
        assert_eq!(normal, path, "a path that is not absolute is left alone");
        return;
    }
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    let inner = normal[1..].strip_suffix('/').unwrap_or(&normal[1..]);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(
                !matches!(segment, "" | "." | ".."),
                "{path:?} -> {normal:?} keeps a segment {segment:?}"
            );
        }
    }
    let bytes = normal.as_bytes();
    for (at, _) in normal.match_indices('%') {
        let hex = bytes.get(at + 1..at + 3).expect("two digits after %");
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{path:?} -> {normal:?}: escape at {at} is not two upper-case hex digits"
        );
        let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
        let byte = digit(hex[0]) * 16 + digit(hex[1]);
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        assert!(
            !unreserved && !matches!(byte, b'/' | b'\\' | 0),
            "{path:?} -> {normal:?} keeps the escape %{:02X}",
            byte
        );
    }
}

fn check_normalized(host: &str, name: &str) {
    assert!(!name.is_empty(), "{host:?} normalised to an empty name");
    assert_eq!(
        normalize_host(name).as_deref(),
        Some(name),
        "not idempotent: {host:?} -> {name:?}"
    );
    assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    assert_eq!(name, name.trim(), "untrimmed {name:?}");
    assert!(!name.ends_with('.'), "trailing dot in {name:?}");
    if !name.starts_with('[') {
        let port = name
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
        assert!(!port, "a port is left in {name:?} (from {host:?})");
    }
}

fn check_route(config: &Config, router: &Router, server: usize, route: Option<usize>, path: &str) {
    assert!(
        server < config.servers.len(),
        "server {server} out of range"
    );
    let routes = &config.servers[server].routes;
    let candidates = router.candidates(server, path);
    let Some(chosen) = route else {
        assert!(
            candidates.is_empty(),
            "{path:?}: no route, yet {candidates:?}"
        );
        return;
    };
    assert!(
        candidates.contains(&chosen),
        "{chosen} not in {candidates:?}"
    );
    let winner = &routes[chosen];
    if winner.exact {
        assert_eq!(winner.path, path, "exact route for another path");
        return;
    }
    assert!(
        path.starts_with(&winner.path),
        "{:?} !< {path:?}",
        winner.path
    );
    for &other in &candidates {
        let other = &routes[other];
        assert!(
            other.exact || other.path.len() <= winner.path.len(),
            "{path:?}: {:?} is longer than the chosen {:?}",
            other.path,
            winner.path
        );
        assert!(!other.exact, "{path:?}: an exact route lost to a prefix");
    }
}

/// The config: server 0 has `extra`'s names and prefix routes; then a
/// wildcard server and a default one. `None` when the extras make it invalid.
fn config_with(extra: &[&str]) -> Option<Config> {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let names: Vec<String> = extra
        .iter()
        .filter(|l| !l.starts_with('/'))
        .map(|l| quote(l))
        .chain(["\"app.localhost\"".to_owned()])
        .collect();
    let mut routes = String::new();
    for path in extra.iter().filter(|l| l.starts_with('/')) {
        routes.push_str(&format!(
            "  {{ path = {}, upstream = \"a\" }},\n",
            quote(path)
        ));
    }
    let text = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = [{names}]
routes = [
{routes}  {{ path = "/", upstream = "a" }},
  {{ path = "/api/", upstream = "a" }},
  {{ path = "/api/admin", exact = true, return = {{ status = 403 }} }},
]

[[servers]]
server_names = ["*.example.com", "*.eu.example.com"]
routes = [{{ path = "/", upstream = "a" }}]

[[servers]]
server_names = ["_"]
default = true
routes = [{{ path = "/", return = {{ status = 404 }} }}]

[upstreams.a]
servers = ["127.0.0.1:1"]
"#,
        names = names.join(", ")
    );
    Config::parse(&text, "router.toml").ok()
}
