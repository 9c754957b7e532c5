//! Choosing what handles a request: first the virtual server by host name,
//! then the route by path. Pure functions of their inputs, no I/O.
//!
//! **Host** (nginx `server_name`), in this order:
//! 1. an exact name (`app.localhost`);
//! 2. the longest matching wildcard (`*.api.example.com` beats `*.example.com`);
//! 3. the default server (`default = true`, else the first server in the file).
//!
//! **Path** (nginx `location`), within that server:
//! 1. an exact route (`exact = true`, nginx `location = /path`) equal to the path;
//! 2. the *longest* prefix route the path starts with, whatever the file order.
//!
//! Prefixes are plain string prefixes, as in nginx: `/service1` also matches
//! `/service1x`. Write `/service1/` when only the folder is meant.
//!
//! Prefix lookup does not scan every route: the router remembers which prefix
//! lengths exist and, longest first, looks the path's first N bytes up in a
//! hash map. A server with 1,000 routes of 20 distinct lengths costs at most 20
//! lookups per request.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::{Config, ServerName};

/// The compiled routing tables of a [`Config`].
#[derive(Debug)]
pub struct Router {
    exact_names: HashMap<String, usize>,
    /// `(".example.com", server)`, longest suffix first.
    wildcard_names: Vec<(String, usize)>,
    default_server: usize,
    servers: Vec<ServerRoutes>,
}

#[derive(Debug, Default)]
struct ServerRoutes {
    exact: HashMap<String, usize>,
    prefixes: HashMap<String, usize>,
    /// The distinct lengths in `prefixes`, longest first.
    prefix_lengths: Vec<usize>,
}

/// The router's decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the virtual server in [`Config::servers`].
    pub server: usize,
    /// How the server was chosen.
    pub by: ServerChoice,
    /// Index of the route in that server's `routes`, or `None` (404).
    pub route: Option<usize>,
}

/// Why a virtual server was chosen, for logs and for learners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerChoice {
    /// The host equals one of its names.
    ExactName,
    /// The host ends with one of its wildcard names.
    Wildcard,
    /// No name matched: the default server answers.
    Default,
}

impl Router {
    /// Compiles the routing tables of `config`.
    pub fn new(config: &Config) -> Router {
        let mut exact_names = HashMap::new();
        let mut wildcard_names = Vec::new();
        let mut servers = Vec::with_capacity(config.servers.len());
        for (index, server) in config.servers.iter().enumerate() {
            for name in &server.names {
                match name {
                    ServerName::Exact(name) => {
                        exact_names.entry(name.clone()).or_insert(index);
                    }
                    ServerName::Wildcard(suffix) => wildcard_names.push((suffix.clone(), index)),
                }
            }
            let mut routes = ServerRoutes::default();
            for (route_index, route) in server.routes.iter().enumerate() {
                let table = if route.exact {
                    &mut routes.exact
                } else {
                    &mut routes.prefixes
                };
                table.entry(route.path.clone()).or_insert(route_index);
            }
            routes.prefix_lengths = routes.prefixes.keys().map(String::len).collect();
            routes.prefix_lengths.sort_unstable_by(|a, b| b.cmp(a));
            routes.prefix_lengths.dedup();
            servers.push(routes);
        }
        // Stable sort: among equal lengths, file order decides.
        wildcard_names.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Router {
            exact_names,
            wildcard_names,
            default_server: config.default_server,
            servers,
        }
    }

    /// Picks the server for `host` (as sent by the client: any case, maybe with
    /// a port) and the route for `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> RouteMatch {
        let (server, by) = self.server_for(host);
        RouteMatch {
            server,
            by,
            route: self.servers.get(server).and_then(|s| s.route_for(path)),
        }
    }

    /// Every route of `server` that matches `path`, by index in file order:
    /// the exact route equal to it and each prefix it starts with. The
    /// winner [`route`](Self::route) picks is among them. This one visits
    /// every route, so the hot path never calls it: it is for explaining a
    /// decision (the decision trace), not for making it.
    pub fn candidates(&self, server: usize, path: &str) -> Vec<usize> {
        let Some(routes) = self.servers.get(server) else {
            return Vec::new();
        };
        let mut found: Vec<usize> = routes
            .prefixes
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, &index)| index)
            .chain(routes.exact.get(path).copied())
            .collect();
        found.sort_unstable();
        found
    }

    fn server_for(&self, host: Option<&str>) -> (usize, ServerChoice) {
        let Some(host) = host.and_then(normalize_host) else {
            return (self.default_server, ServerChoice::Default);
        };
        if let Some(&server) = self.exact_names.get(host.as_ref()) {
            return (server, ServerChoice::ExactName);
        }
        for (suffix, server) in &self.wildcard_names {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return (*server, ServerChoice::Wildcard);
            }
        }
        (self.default_server, ServerChoice::Default)
    }
}

impl ServerRoutes {
    fn route_for(&self, path: &str) -> Option<usize> {
        if let Some(&route) = self.exact.get(path) {
            return Some(route);
        }
        self.prefix_lengths
            .iter()
            .filter(|&&len| len <= path.len() && path.is_char_boundary(len))
            .find_map(|&len| self.prefixes.get(&path[..len]).copied())
    }
}

/// Reduces a `Host` header to the name servers are matched against: no port,
/// no trailing dot, lower case. `None` when nothing usable is left, or when
/// it is not a host at all: only a host name (letters, digits, `-`, `.`,
/// `_`), an IPv4 address or a bracketed IPv6 address, then at most one
/// `:PORT` of digits. Anything else (`evil.com/x`, `a@b`, `a:80:90`, spaces)
/// is refused, so a client's `Host` can never smuggle a path or a second
/// authority into a name the proxy matches or writes into a `Location`.
///
/// Allocates only when the host has upper-case letters.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080" -> "[::1]"
        let end = rest.find(']')?;
        let inside = &rest[..end];
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return None;
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (&raw[..end + 2], port)
    } else {
        match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        }
    };
    if port.is_some_and(|p| p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    // One port and one trailing dot came off; what remains must be a plain
    // name that another pass would not change (`a:80:90`, `a..`, `a :80` are
    // unusable, as an empty Host is).
    if name.is_empty()
        || name.ends_with('.')
        || (!name.starts_with('[')
            && !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
    {
        return None;
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(text: &str) -> Router {
        Router::new(&Config::parse(text, "test.toml").expect("valid config"))
    }

    const TWO_SERVERS: &str = r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [
  { path = "/", upstream = "web" },
  { path = "/api/", upstream = "api" },
  { path = "/api/admin/", return = { status = 403 } },
  { path = "/service1", upstream = "api" },
  { path = "/health", exact = true, return = { status = 200, body = "ok" } },
]

[[servers]]
server_names = ["api.localhost", "*.example.com", "*.eu.example.com"]
routes = [{ path = "/", upstream = "api" }]

[[servers]]
server_names = ["_"]
default = true
routes = [{ path = "/", return = { status = 404, body = "unknown host" } }]

[upstreams.web]
servers = ["127.0.0.1:3000"]

[upstreams.api]
servers = ["127.0.0.1:8000"]
"#;

    #[test]
    fn the_longest_prefix_wins_whatever_the_file_order() {
        let r = router(TWO_SERVERS);
        let route = |path| r.route(Some("app.localhost"), path).route;
        assert_eq!(route("/"), Some(0));
        assert_eq!(route("/index.html"), Some(0));
        assert_eq!(route("/api/"), Some(1));
        assert_eq!(route("/api/tasks"), Some(1));
        assert_eq!(route("/api/admin/users"), Some(2));
        assert_eq!(route("/api"), Some(0), "no trailing slash: not under /api/");
    }

    #[test]
    fn a_prefix_without_a_slash_also_matches_longer_names_as_in_nginx() {
        let r = router(TWO_SERVERS);
        assert_eq!(r.route(Some("app.localhost"), "/service1/x").route, Some(3));
        assert_eq!(r.route(Some("app.localhost"), "/service1x").route, Some(3));
    }

    #[test]
    fn an_exact_route_matches_only_its_path() {
        let r = router(TWO_SERVERS);
        assert_eq!(r.route(Some("app.localhost"), "/health").route, Some(4));
        assert_eq!(r.route(Some("app.localhost"), "/healthz").route, Some(0));
    }

    #[test]
    fn hosts_match_exactly_then_by_longest_wildcard_then_default() {
        let r = router(TWO_SERVERS);
        let pick = |host: &str| {
            let m = r.route(Some(host), "/");
            (m.server, m.by)
        };
        assert_eq!(pick("app.localhost"), (0, ServerChoice::ExactName));
        assert_eq!(pick("APP.localhost:8080"), (0, ServerChoice::ExactName));
        assert_eq!(pick("app.localhost."), (0, ServerChoice::ExactName));
        assert_eq!(pick("api.localhost"), (1, ServerChoice::ExactName));
        assert_eq!(pick("www.example.com"), (1, ServerChoice::Wildcard));
        assert_eq!(pick("a.b.example.com"), (1, ServerChoice::Wildcard));
        assert_eq!(pick("example.com"), (2, ServerChoice::Default));
        assert_eq!(pick("other.localhost"), (2, ServerChoice::Default));
        assert_eq!(pick("127.0.0.1:8080"), (2, ServerChoice::Default));
        assert_eq!(r.route(None, "/").server, 2);
    }

    #[test]
    fn without_a_default_flag_the_first_server_is_the_default() {
        let text = TWO_SERVERS.replace("default = true", "");
        let r = router(&text);
        assert_eq!(r.route(Some("nobody.localhost"), "/").server, 0);
    }

    #[test]
    fn no_matching_route_is_none() {
        let text = r#"
[[listen]]
addr = "127.0.0.1:0"
[[servers]]
routes = [{ path = "/api/", return = { status = 200 } }]
"#;
        assert_eq!(router(text).route(None, "/other").route, None);
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(
            normalize_host("Example.COM:80").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host(":8080"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn a_host_that_is_not_a_host_is_refused() {
        for evil in [
            "a:80:90",
            "evil.com/x",
            "a@evil.com",
            "evil.com:80x",
            "a b",
            "evil.com\\x",
            "[::1]x",
            "[::g]",
            "[]",
            "app.localhost:123456",
            "app.localhost?x",
        ] {
            assert_eq!(normalize_host(evil), None, "{evil}");
        }
        assert_eq!(
            normalize_host("Api_1.Local:8080").as_deref(),
            Some("api_1.local")
        );
        assert_eq!(
            normalize_host("app.localhost.").as_deref(),
            Some("app.localhost")
        );
        assert_eq!(normalize_host("[::1]:").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("[::1"), None);
    }

    #[test]
    fn candidates_are_every_matching_route_and_include_the_winner() {
        let r = router(TWO_SERVERS);
        let app = |path| r.candidates(0, path);
        assert_eq!(app("/api/admin/users"), [0, 1, 2]);
        assert_eq!(app("/health"), [0, 4]);
        assert_eq!(app("/service1x"), [0, 3]);
        assert_eq!(r.candidates(1, "/x"), [0]);
        assert_eq!(r.candidates(9, "/x"), Vec::<usize>::new());
        for path in [
            "/",
            "/api/",
            "/api/admin/x",
            "/health",
            "/healthz",
            "/service1",
        ] {
            let winner = r.route(Some("app.localhost"), path).route.expect("a route");
            assert!(app(path).contains(&winner), "{path}");
        }
        let text = r#"
[[listen]]
addr = "127.0.0.1:0"
[[servers]]
routes = [{ path = "/api/", return = { status = 200 } }]
"#;
        assert!(router(text).candidates(0, "/other").is_empty());
    }

    #[test]
    fn a_path_with_multibyte_characters_does_not_panic() {
        let r = router(TWO_SERVERS);
        assert_eq!(r.route(Some("app.localhost"), "/é/ü").route, Some(0));
    }
}
