//! Lints: configurations that are *valid* but almost certainly not what their
//! author meant. `proxy check` prints them as warnings after the errors (and
//! fails on them with `--deny-warnings`); `proxy run` logs them and starts.
//!
//! An error is something the proxy cannot do; a lint is something it will do
//! exactly as written, which is the problem. Each lint below is precise: it
//! fires only when the routing model of [`crate::router`] and the request's
//! life in [`crate::proxy`] make the outcome certain, never on a guess.
//!
//! - **A server that can never be chosen.** A request reaches a server by its
//!   host name, and a host no server names goes to the default server
//!   (`default = true`, else the first). A server that is not the default and
//!   names no host (or only nginx's placeholder `_`) is therefore never
//!   chosen. (Two servers cannot claim the same name: that is an error, so
//!   name shadowing between servers cannot happen.)
//! - **A route that can never win.** Routes within a server cannot shadow
//!   each other: the exact route wins for its path, else the *longest*
//!   prefix, whatever the file order, and a prefix always wins at least for
//!   itself. What can hide a route is the server's `rewrite`: server rules run
//!   *before* routing, so a rule like `^/catalog/(.*)$` rewrites every path of
//!   a `/catalog/` route away, and that route wins only if some rule's result
//!   can lead back into it.
//! - **A prefix without a segment boundary.** Prefixes are plain string
//!   prefixes (as in nginx), so a top-level `/api` also takes `/apiary` and
//!   `/api-docs`, names that belong to the rest of the site. Only one-segment
//!   prefixes are linted: deeper ones (`/api/whoami`) usually name an
//!   endpoint inside a folder the route already shares.
//! - **A rewrite that doubles (or loses) a slash.** `strip_prefix` on
//!   `/service1` turns `/service1/x` into `//x` (nginx's
//!   `location /service1 { proxy_pass http://s1/; }`), and `replace_prefix =
//!   "/v1"` on `/api/` turns `/api/tasks` into `/v1tasks`. A regex `rewrite`
//!   is tried on a sample path under its literal start (`/api/x` for
//!   `^/api(.*)$`): if it makes a `//` the sample did not have, it is linted.
//! - **Retrying non-idempotent requests.** `next_upstream` with
//!   `non_idempotent` sends a POST that reached a server, and may have taken
//!   effect there, to another server: the order may be placed twice.
//! - **Trusting every address as a proxy.** `trusted_proxies` with `all`,
//!   `0.0.0.0/0` or `::/0` believes *every* client's `X-Forwarded-For`, so any
//!   client chooses the address that `client_ip` limits and access rules see.
//!   The reverse mistake (a proxy in front, `trusted_proxies` empty, every
//!   client counted as the one load balancer) is not linted: nothing in the
//!   file says whether a proxy is in front.
//! - **A limit keyed by an address header.** A zone with `key =
//!   "header:X-Forwarded-For"` (or `X-Real-IP`, `Forwarded`, ...) counts what
//!   the client wrote: without a proxy in front that sets it, every request
//!   can claim a new address and is never limited. `key = "client_ip"` with
//!   the proxy in front listed in `trusted_proxies` counts the address that
//!   proxy reported, and only believes it from that proxy.
//! - **HTTPS promises without a certificate.** A server with `hsts` or
//!   `redirect_https` but no `tls` of its own is served on HTTPS with another
//!   server's certificate (SNI falls back to the default one); when that
//!   certificate does not name the host, browsers refuse the connection: the
//!   redirect leads to an error page and the HSTS header is never seen.
//! - **A `slash_redirect` that never fires.** `/app/` with `slash_redirect`
//!   redirects `/app`, unless an exact route `/app` exists: exact routes win
//!   first.
//!
//! The checked [`Config`] drops the file's positions, so the lints read the
//! text again into small `Spanned` mirrors of the few keys they point at; the
//! config is valid, so the mirrors line up with it index for index (a server's
//! routes, its rules, the upstreams in name order). This keeps positions out
//! of the model the hot path reads.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    Action, Config, Diagnostic, LimitKey, PathRewrite, Server, ServerName, ServerTls,
};
use crate::rewrite::RewriteRule;

/// The warnings for `config`, read from `text` (`file` names it in messages).
/// `config` must be the result of parsing `text`.
pub fn lint(config: &Config, text: &str, file: &str) -> Vec<Diagnostic> {
    let Ok(raw) = toml::from_str::<Raw>(text) else {
        return Vec::new();
    };
    let mut lints = Lints {
        config,
        text,
        file,
        found: Vec::new(),
    };
    for (index, (server, raw_server)) in config.servers.iter().zip(&raw.servers).enumerate() {
        let span = raw_server.span();
        let raw_server = raw_server.get_ref();
        lints.unreachable_server(index, server, raw_server, span);
        lints.rewritten_away(server, raw_server);
        lints.routes(server, raw_server);
        lints.https_without_certificate(server, raw_server);
    }
    lints.retries(&raw);
    lints.trusted_proxies(&raw);
    lints.forged_address_keys(&raw);
    lints.http_health_check_on_a_stream_pool(&raw);
    lints.found
}

/// [`lint`] for the file at `path`, named as [`Config::from_file`] names it.
/// A file that can no longer be read has no warnings.
pub fn lint_file(config: &Config, path: &Path) -> Vec<Diagnostic> {
    match std::fs::read_to_string(path) {
        Ok(text) => lint(config, &text, &path.display().to_string()),
        Err(_) => Vec::new(),
    }
}

// The keys the lints point at; serde skips the others.

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    servers: Vec<Spanned<RawServer>>,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    limit_req_zones: BTreeMap<String, RawZone>,
    #[serde(default)]
    limit_conn_zones: BTreeMap<String, RawZone>,
}

#[derive(Deserialize)]
struct RawZone {
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawServer {
    #[serde(default)]
    server_names: Vec<Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    redirect_https: Option<Spanned<bool>>,
    hsts: Option<Spanned<String>>,
    #[serde(default)]
    rewrite: Vec<Spanned<RawRewrite>>,
}

#[derive(Deserialize)]
struct RawRoute {
    path: Spanned<String>,
    strip_prefix: Option<Spanned<bool>>,
    replace_prefix: Option<Spanned<String>>,
    slash_redirect: Option<Spanned<bool>>,
    #[serde(default)]
    rewrite: Vec<Spanned<RawRewrite>>,
}

#[derive(Deserialize)]
struct RawRewrite {
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Deserialize)]
struct RawUpstream {
    next_upstream: Option<Vec<Spanned<String>>>,
    health_check: Option<Spanned<toml::Value>>,
}

struct Lints<'a> {
    config: &'a Config,
    text: &'a str,
    file: &'a str,
    found: Vec<Diagnostic>,
}

impl Lints<'_> {
    fn warn(&mut self, span: Range<usize>, message: String, help: impl Into<String>) {
        self.found.push(Diagnostic::warning(
            self.file,
            self.text,
            span,
            message,
            help.into(),
        ));
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// A server that is not the default and names no host is never chosen.
    fn unreachable_server(
        &mut self,
        index: usize,
        server: &Server,
        raw: &RawServer,
        raw_span: Range<usize>,
    ) {
        let named = server
            .names
            .iter()
            .any(|n| !matches!(n, ServerName::Exact(name) if name == "_"));
        if named || index == self.config.default_server {
            return;
        }
        let span = raw
            .server_names
            .first()
            .map_or_else(|| raw_span.clone(), Spanned::span);
        self.warn(
            span,
            "this server can never be chosen: it names no host, and it is not the default server"
                .into(),
            "give it server_names = [\"app.example.com\"]; a host no server names goes to the default server (`default = true`, else the first)",
        );
    }

    /// Routes whose every path a server-level rewrite rule changes before
    /// routing, with no rule leading back into them.
    fn rewritten_away(&mut self, server: &Server, raw: &RawServer) {
        if server.rewrite.is_empty() {
            return;
        }
        for (route, raw_route) in server.routes.iter().zip(&raw.routes) {
            let path = route.path.as_str();
            let covering = server
                .rewrite
                .iter()
                .zip(&raw.rewrite)
                .find(|(rule, _)| matches_every_path_under(rule, path));
            let Some((rule, raw_rule)) = covering else {
                continue;
            };
            let leads_back = server.rewrite.iter().any(|rule| {
                rule.redirect.is_none() && {
                    let start = static_start(&rule.to);
                    start.starts_with(path) || path.starts_with(start)
                }
            });
            if leads_back {
                continue;
            }
            let what = if rule.redirect.is_some() {
                "redirects"
            } else {
                "rewrites"
            };
            let line = self.line_of(&raw_rule.get_ref().from.span());
            self.warn(
                raw_route.get_ref().path.span(),
                format!(
                    "route `{path}` can never win: the server's rewrite rule `{}` (line {line}) {what} every path it would get before a route is chosen",
                    raw_rule.get_ref().from.get_ref()
                ),
                "remove the route or the rule; to change what this route sends upstream, put the rule in the route's own `rewrite`",
            );
        }
    }

    /// Per route: segment boundaries, doubled slashes, slash redirects.
    fn routes(&mut self, server: &Server, raw: &RawServer) {
        for (route, raw_route) in server.routes.iter().zip(&raw.routes) {
            let r = raw_route.get_ref();
            let path = route.path.as_str();
            let replacement = match &route.action {
                Action::Proxy(pass) => match &pass.rewrite {
                    PathRewrite::ReplacePrefix(with) => Some(with.as_str()),
                    PathRewrite::Keep => None,
                },
                Action::Return(_) => None,
            };
            let replacement_span = r
                .replace_prefix
                .as_ref()
                .map(Spanned::span)
                .or_else(|| r.strip_prefix.as_ref().map(Spanned::span));
            if !route.exact {
                let warned = match (replacement, replacement_span) {
                    (Some(with), Some(span)) => self.prefix_replacement(path, with, span),
                    _ => false,
                };
                if !warned {
                    self.segment_boundary(path, r.path.span());
                }
            }
            for (rule, raw_rule) in route.rewrite.iter().zip(&r.rewrite) {
                self.doubled_slash(rule, raw_rule.get_ref());
            }
            if route.slash_redirect {
                let without = &path[..path.len() - 1];
                if server.routes.iter().any(|o| o.exact && o.path == without)
                    && let Some(flag) = &r.slash_redirect
                {
                    self.warn(
                        flag.span(),
                        format!(
                            "`slash_redirect` on `{path}` never fires: the exact route `{without}` answers `{without}` first"
                        ),
                        format!("remove `slash_redirect`, or the exact route if `{without}` should be redirected"),
                    );
                }
            }
        }
        for (rule, raw_rule) in server.rewrite.iter().zip(&raw.rewrite) {
            self.doubled_slash(rule, raw_rule.get_ref());
        }
    }

    /// `path = "/api"`: also matches `/apiary`.
    fn segment_boundary(&mut self, path: &str, span: Range<usize>) {
        let segment = &path[1..];
        if segment.is_empty() || segment.contains('/') || segment.contains('.') {
            return;
        }
        self.warn(
            span,
            format!(
                "prefix `{path}` has no trailing slash, so it also matches `{path}x`, `{path}-old`, ..."
            ),
            format!(
                "write path = \"{path}/\" (add slash_redirect = true if `{path}` itself should lead there), or add exact = true if only `{path}` is meant"
            ),
        );
    }

    /// `strip_prefix` / `replace_prefix` and the prefix disagree about the
    /// slash between the prefix and the rest.
    fn prefix_replacement(&mut self, path: &str, with: &str, span: Range<usize>) -> bool {
        let example = |path: &str| {
            let rest = if path.ends_with('/') { "x" } else { "/x" };
            (format!("{path}{rest}"), format!("{with}{rest}"))
        };
        let (sent, becomes) = example(path);
        if !path.ends_with('/') && with.ends_with('/') {
            self.warn(
                span,
                format!(
                    "`{sent}` is sent upstream as `{becomes}`: the prefix `{path}` has no trailing slash, but its replacement `{with}` has one"
                ),
                format!(
                    "write path = \"{path}/\" (add slash_redirect = true if `{path}` itself should lead there)"
                ),
            );
        } else if path.ends_with('/') && !with.ends_with('/') {
            self.warn(
                span,
                format!(
                    "`{sent}` is sent upstream as `{becomes}`: the prefix `{path}` ends in a slash, but its replacement `{with}` does not"
                ),
                format!("write replace_prefix = \"{with}/\""),
            );
        } else {
            return false;
        }
        true
    }

    /// A regex rule that makes `//` out of a path that had none.
    fn doubled_slash(&mut self, rule: &RewriteRule, raw: &RawRewrite) {
        let to = rule.to.as_str();
        let local = to
            .strip_prefix("https://")
            .or_else(|| to.strip_prefix("http://"))
            .map_or(to, |rest| rest.find('/').map_or("", |i| &rest[i..]));
        if let Some(at) = local.find("//") {
            let before = &local[..at];
            if !before.contains('?') {
                self.warn(
                    raw.to.span(),
                    format!("`to = \"{to}\"` makes a path with `//`"),
                    "write one slash",
                );
                return;
            }
        }
        let Some(start) = literal_start(rule.from.as_str()) else {
            return;
        };
        let base = if start.ends_with('/') {
            start
        } else {
            format!("{start}/")
        };
        for sample in ["x", "1", "x/y"].map(|rest| format!("{base}{rest}")) {
            let Some(done) = crate::rewrite::apply(std::slice::from_ref(rule), &sample, None)
            else {
                continue;
            };
            let path = done.target.split('?').next().unwrap_or("");
            let path = path
                .strip_prefix("https://")
                .or_else(|| path.strip_prefix("http://"))
                .map_or(path, |rest| rest.find('/').map_or("", |i| &rest[i..]));
            if path.contains("//") && !sample.contains("//") {
                self.warn(
                    raw.to.span(),
                    format!(
                        "`{sample}` is rewritten to `{}`: the `/` before a group in `to` and the one the group captured add up",
                        done.target
                    ),
                    "capture after the slash, e.g. from = '^/api/(.*)$', or drop the slash before `$1` in `to`",
                );
                return;
            }
        }
    }

    /// `next_upstream` with `non_idempotent`, when it retries at all.
    fn retries(&mut self, raw: &Raw) {
        for (upstream, (_, raw_upstream)) in self.config.upstreams.iter().zip(&raw.upstreams) {
            let next = &upstream.next_upstream;
            if !(next.non_idempotent && next.enabled()) {
                continue;
            }
            let Some(item) = raw_upstream
                .next_upstream
                .iter()
                .flatten()
                .find(|item| item.get_ref().trim() == "non_idempotent")
            else {
                continue;
            };
            self.warn(
                item.span(),
                format!(
                    "upstream `{}` retries POST, PATCH and other non-idempotent requests that a server already got: they may be applied twice",
                    upstream.name
                ),
                "remove \"non_idempotent\" unless every such request to this upstream is safe to repeat (e.g. it carries an idempotency key)",
            );
        }
    }

    /// `trusted_proxies` that trusts every address, when something keys by
    /// the client's address.
    fn trusted_proxies(&mut self, raw: &Raw) {
        let config = self.config;
        let zone_by_ip = |key: &LimitKey| *key == LimitKey::ClientIp;
        let servers = config.servers.iter();
        let routes = || config.servers.iter().flat_map(|s| &s.routes);
        let rate_by_ip = servers
            .clone()
            .filter_map(|s| s.limit_req.as_ref())
            .chain(routes().filter_map(|r| r.limit_req.as_ref()))
            .any(|l| zone_by_ip(&config.rate_zones[l.zone].key));
        let conn_by_ip = servers
            .clone()
            .filter_map(|s| s.limit_conn.as_ref())
            .chain(routes().filter_map(|r| r.limit_conn.as_ref()))
            .any(|l| zone_by_ip(&config.conn_zones[l.zone].key));
        let access = servers.clone().any(|s| !s.access.is_empty())
            || routes().any(|r| r.access.as_ref().is_some_and(|a| !a.is_empty()));
        let dodge = match (rate_by_ip || conn_by_ip, access) {
            (true, true) => "dodge the limits keyed by client_ip and get past the access rules",
            (true, false) => "dodge the limits keyed by client_ip",
            (false, true) => "get past the access rules",
            (false, false) => return,
        };
        for entry in raw.trusted_proxies.iter().flatten() {
            let everyone = crate::access::parse_network(entry.get_ref())
                .is_some_and(|nets| nets.iter().any(|n| n.prefix_len() == 0));
            if everyone {
                self.warn(
                    entry.span(),
                    format!(
                        "`{}` trusts every address as a proxy: any client can put an address of its choice in X-Forwarded-For and {dodge}",
                        entry.get_ref()
                    ),
                    "list only the proxies in front of this one (your load balancer's or CDN's addresses), e.g. \"10.0.0.5\"",
                );
            }
        }
    }

    /// A pool a `[[stream]]` uses (plain TCP, or TLS the proxy does not read)
    /// with an active health check, which speaks HTTP: to a database or a
    /// TLS backend its `GET` gets no HTTP answer, so every server is marked
    /// down and the stream has nowhere to go.
    fn http_health_check_on_a_stream_pool(&mut self, raw: &Raw) {
        let config = self.config;
        for (index, upstream) in config.upstreams.iter().enumerate() {
            let used_by_a_stream = config.streams.iter().any(|stream| {
                stream.upstream == Some(index) || stream.sni.iter().any(|(_, pool)| *pool == index)
            });
            if upstream.health_check.is_none() || !used_by_a_stream {
                continue;
            }
            let Some(check) = raw
                .upstreams
                .get(&upstream.name)
                .and_then(|u| u.health_check.as_ref())
            else {
                continue;
            };
            self.warn(
                check.span(),
                format!(
                    "upstream `{}` serves a [[stream]] and has a health_check, which sends HTTP requests: a server that does not speak plain HTTP never answers one, so every server would be marked down",
                    upstream.name
                ),
                "give the stream a pool of its own without health_check (a refused connection still marks a server down), or keep it if these servers do answer HTTP on that port",
            );
        }
    }

    /// A limit zone keyed by a header that carries a client address, which
    /// any client can write.
    fn forged_address_keys(&mut self, raw: &Raw) {
        const ADDRESS_HEADERS: [&str; 5] = [
            "x-forwarded-for",
            "x-real-ip",
            "forwarded",
            "true-client-ip",
            "cf-connecting-ip",
        ];
        let zones = raw
            .limit_req_zones
            .iter()
            .map(|z| ("limit_req_zones", z))
            .chain(raw.limit_conn_zones.iter().map(|z| ("limit_conn_zones", z)));
        for (kind, (name, zone)) in zones {
            let Some(key) = &zone.key else { continue };
            let Some(header) = key.get_ref().trim().strip_prefix("header:") else {
                continue;
            };
            if ADDRESS_HEADERS.contains(&header.trim().to_ascii_lowercase().as_str()) {
                self.warn(
                    key.span(),
                    format!(
                        "[{kind}.{name}] counts requests by `{}`, which any client can write: a client that sends a new value each time is never limited",
                        header.trim()
                    ),
                    "use key = \"client_ip\", and list the proxy in front in trusted_proxies so that the address it reports is believed, from it only",
                );
            }
        }
    }

    /// `hsts` / `redirect_https` on a server whose HTTPS clients get a
    /// certificate that does not name them.
    fn https_without_certificate(&mut self, server: &Server, raw: &RawServer) {
        if server.tls.is_some() {
            return;
        }
        let (span, what) = match (&raw.hsts, &raw.redirect_https) {
            (Some(hsts), _) if server.hsts.is_some() => (hsts.span(), "hsts"),
            (_, Some(flag)) if server.redirect_https.is_some() => (flag.span(), "redirect_https"),
            _ => return,
        };
        for name in &server.names {
            let host = match name {
                ServerName::Exact(name) if name == "_" => continue,
                ServerName::Exact(name) => name.clone(),
                ServerName::Wildcard(suffix) => format!("www{suffix}"),
            };
            let Some(owner) = certificate_for(self.config, &host) else {
                continue;
            };
            if certificate_names(owner).iter().any(|n| covers(n, &host)) {
                continue;
            }
            let owner_name = owner
                .names
                .first()
                .map_or_else(|| "another server".to_owned(), |n| format!("`{n}`"));
            self.warn(
                span,
                format!(
                    "`{what}` on a server without a certificate: HTTPS clients of `{host}` get the certificate of {owner_name}, which does not name it, so browsers refuse the connection"
                ),
                "give this server its own certificate: tls = { auto_local = true } or tls = { cert = \"app.pem\", key = \"app-key.pem\" }",
            );
            return;
        }
    }
}

/// Whether `rule` matches every path that starts with `path`: `from` is `^`,
/// a literal that `path` starts with, then nothing, or any text (`.*`,
/// `(.*)`, `(?P<name>.*)`), optionally `$`.
fn matches_every_path_under(rule: &RewriteRule, path: &str) -> bool {
    let from = rule.from.as_str();
    let Some((literal, rest)) = split_literal(from) else {
        return false;
    };
    let rest = rest.strip_suffix('$').unwrap_or(rest);
    let any = rest.is_empty()
        || rest == ".*"
        || rest == "(.*)"
        || (rest.starts_with("(?P<") || rest.starts_with("(?<")) && rest.ends_with(">.*)");
    any && path.starts_with(&literal)
}

/// The literal text an anchored pattern starts with (`^/api/(.*)$` gives
/// `/api/`); `None` for a pattern without `^`.
fn literal_start(from: &str) -> Option<String> {
    split_literal(from).map(|(literal, _)| literal)
}

fn split_literal(from: &str) -> Option<(String, &str)> {
    let body = from.strip_prefix('^')?;
    let mut literal = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&(_, escaped)) if !escaped.is_ascii_alphanumeric() => {
                    literal.push(escaped);
                    chars.next();
                }
                _ => return Some((literal, &body[at..])),
            },
            '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {
                // A quantifier applies to the last literal character: it is
                // not certain, so it is not part of the literal.
                if matches!(c, '*' | '+' | '?' | '{') {
                    literal.pop();
                }
                return Some((literal, &body[at..]));
            }
            _ => literal.push(c),
        }
    }
    Some((literal, ""))
}

/// The part of a rewrite's `to` before its first group reference or query.
fn static_start(to: &str) -> &str {
    let end = to.find(['$', '?']).unwrap_or(to.len());
    &to[..end]
}

/// The server whose certificate an HTTPS client asking for `host` gets, as
/// [`crate::server`] builds the SNI table: an exact name, the longest
/// wildcard, else the default server's certificate (or the first one).
fn certificate_for<'a>(config: &'a Config, host: &str) -> Option<&'a Server> {
    let with_tls = || config.servers.iter().filter(|s| s.tls.is_some());
    with_tls()
        .find(|s| s.names.contains(&ServerName::Exact(host.to_owned())))
        .or_else(|| {
            with_tls()
                .flat_map(|s| s.names.iter().map(move |n| (n, s)))
                .filter_map(|(n, s)| match n {
                    ServerName::Wildcard(suffix)
                        if host.len() > suffix.len() && host.ends_with(suffix.as_str()) =>
                    {
                        Some((suffix.len(), s))
                    }
                    _ => None,
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, s)| s)
        })
        .or_else(|| {
            config
                .servers
                .get(config.default_server)
                .filter(|s| s.tls.is_some())
        })
        .or_else(|| with_tls().next())
}

/// The names a server's certificate is valid for: its own names for
/// `auto_local`, the certificate's DNS names for files.
fn certificate_names(server: &Server) -> Vec<String> {
    match &server.tls {
        Some(ServerTls::AutoLocal) => server.names.iter().map(ToString::to_string).collect(),
        Some(ServerTls::Files { loaded, .. }) => {
            let Some(leaf) = loaded.cert.first() else {
                return Vec::new();
            };
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
                return Vec::new();
            };
            let Ok(Some(san)) = cert.subject_alternative_name() else {
                return Vec::new();
            };
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(name) => {
                        Some(name.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        }
        None => Vec::new(),
    }
}

/// Whether a certificate name (`app.localhost`, `*.example.com`) covers `host`.
fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host.ends_with(suffix)
                && !host[..host.len() - suffix.len()].contains('.')
        }
        None => name == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warnings for `body` (after a listener and an upstream), as
    /// (line, message); line 1 is the first line of `body`.
    fn warnings(body: &str) -> Vec<(usize, String)> {
        let text = format!(
            "{body}\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n[upstreams.api]\nservers = [\"127.0.0.1:8000\"]\n"
        );
        let config = match Config::parse(&text, "proxy.toml") {
            Ok(config) => config,
            Err(errors) => panic!("invalid test config:\n{errors}"),
        };
        lint(&config, &text, "proxy.toml")
            .into_iter()
            .map(|d| {
                assert_eq!(d.severity, crate::config::Severity::Warning);
                assert!(d.help.is_some(), "{}", d.message);
                (d.at.expect("a position").line, d.message)
            })
            .collect()
    }

    /// A server with a certificate, so the TLS listener has one.
    const APP: &str =
        "[[servers]]\nserver_names = [\"app.localhost\"]\ntls = { auto_local = true }\n";

    #[test]
    fn an_http_health_check_on_a_pool_a_stream_uses_is_flagged() {
        let server =
            format!("{APP}[[servers.routes]]\npath = \"/\"\nreturn = {{ status = 200 }}\n");
        let stream = format!("{server}[[stream]]\nlisten = \"127.0.0.1:0\"\nupstream = \"db\"\n");
        let pool = "[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
        let checked = format!("{stream}{pool}[upstreams.db.health_check]\npath = \"/health\"\n");
        let found = warnings(&checked);
        assert_eq!(found.len(), 1, "{found:?}");
        let line = checked
            .lines()
            .position(|l| l == "[upstreams.db.health_check]");
        assert_eq!(Some(found[0].0), line.map(|i| i + 1));
        assert!(
            found[0].1.contains("upstream `db` serves a [[stream]]"),
            "{found:?}"
        );
        // Without the check, or without a stream using the pool: nothing.
        assert!(warnings(&format!("{stream}{pool}")).is_empty());
        assert!(
            warnings(&format!(
                "{server}{pool}[upstreams.db.health_check]\npath = \"/health\"\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_nameless_server_that_is_not_the_default_is_never_chosen() {
        let found = warnings(&format!(
            "{APP}routes = [{{ path = \"/\", upstream = \"api\" }}]\n[[servers]]\nserver_names = [\"_\"]\nroutes = [{{ path = \"/\", upstream = \"api\" }}]"
        ));
        assert_eq!(
            found,
            [(
                6,
                "this server can never be chosen: it names no host, and it is not the default server"
                    .to_owned()
            )]
        );
        // Near miss: the same server marked as the default answers unknown hosts.
        let found = warnings(&format!(
            "{APP}routes = [{{ path = \"/\", upstream = \"api\" }}]\n[[servers]]\nserver_names = [\"_\"]\ndefault = true\nroutes = [{{ path = \"/\", upstream = \"api\" }}]"
        ));
        assert_eq!(found, []);
    }

    #[test]
    fn a_route_that_a_server_rewrite_always_takes_away_never_wins() {
        let found = warnings(&format!(
            "{APP}rewrite = [{{ from = '^/catalog/(.*)$', to = \"/products/$1\" }}]\nroutes = [\n  {{ path = \"/products/\", upstream = \"api\" }},\n  {{ path = \"/catalog/\", upstream = \"api\" }},\n]"
        ));
        assert_eq!(
            found,
            [(
                7,
                "route `/catalog/` can never win: the server's rewrite rule `^/catalog/(.*)$` (line 4) rewrites every path it would get before a route is chosen"
                    .to_owned()
            )]
        );
        // Near misses: a rule that matches only some of the route's paths, and
        // one whose result can lead back into the route.
        for rule in [
            r"{ from = '^/catalog/(\d+)$', to = '/products/$1' }",
            "{ from = '^/catalog/(.*)$', to = '/catalog/v2/$1' }",
        ] {
            let found = warnings(&format!(
                "{APP}rewrite = [{rule}]\nroutes = [{{ path = \"/catalog/\", upstream = \"api\" }}]"
            ));
            assert_eq!(found, [], "{rule}");
        }
    }

    #[test]
    fn a_top_level_prefix_without_a_slash_matches_more_than_its_folder() {
        let found = warnings(&format!(
            "{APP}routes = [\n  {{ path = \"/\", upstream = \"api\" }},\n  {{ path = \"/api\", upstream = \"api\" }},\n]"
        ));
        assert_eq!(
            found,
            [(
                6,
                "prefix `/api` has no trailing slash, so it also matches `/apix`, `/api-old`, ..."
                    .to_owned()
            )]
        );
        // Near misses: the folder, an exact path, a file, a deeper endpoint.
        let found = warnings(&format!(
            "{APP}routes = [\n  {{ path = \"/api/\", upstream = \"api\" }},\n  {{ path = \"/health\", exact = true, upstream = \"api\" }},\n  {{ path = \"/favicon.ico\", upstream = \"api\" }},\n  {{ path = \"/api/whoami\", upstream = \"api\" }},\n]"
        ));
        assert_eq!(found, []);
    }

    #[test]
    fn strip_prefix_on_a_prefix_without_a_slash_doubles_the_slash() {
        let found = warnings(&format!(
            "{APP}routes = [\n  {{ path = \"/service1\", upstream = \"api\", strip_prefix = true }},\n  {{ path = \"/v1/\", upstream = \"api\", replace_prefix = \"/v2\" }},\n]"
        ));
        assert_eq!(
            found,
            [
                (
                    5,
                    "`/service1/x` is sent upstream as `//x`: the prefix `/service1` has no trailing slash, but its replacement `/` has one"
                        .to_owned()
                ),
                (
                    6,
                    "`/v1/x` is sent upstream as `/v2x`: the prefix `/v1/` ends in a slash, but its replacement `/v2` does not"
                        .to_owned()
                ),
            ]
        );
        let found = warnings(&format!(
            "{APP}routes = [\n  {{ path = \"/service1/\", upstream = \"api\", strip_prefix = true }},\n  {{ path = \"/v1/\", upstream = \"api\", replace_prefix = \"/v2/\" }},\n  {{ path = \"/old\", exact = true, upstream = \"api\", replace_prefix = \"/new/\" }},\n]"
        ));
        assert_eq!(found, []);
    }

    #[test]
    fn a_regex_rewrite_that_makes_a_double_slash_is_found() {
        let found = warnings(&format!(
            "{APP}routes = [{{ path = \"/api/\", upstream = \"api\", rewrite = [{{ from = '^/api(.*)$', to = '/v1/$1' }}] }}]"
        ));
        assert_eq!(
            found,
            [(
                4,
                "`/api/x` is rewritten to `/v1//x`: the `/` before a group in `to` and the one the group captured add up"
                    .to_owned()
            )]
        );
        let found = warnings(&format!(
            "{APP}rewrite = [{{ from = '^/old(/.*)?$', to = 'https://example.com//$1', redirect = 301 }}]\nroutes = [{{ path = \"/\", upstream = \"api\" }}]"
        ));
        assert_eq!(
            found,
            [(
                4,
                "`to = \"https://example.com//$1\"` makes a path with `//`".to_owned()
            )]
        );
        let found = warnings(&format!(
            "{APP}rewrite = [{{ from = '^/old/(.*)$', to = 'https://example.com/$1', redirect = 301 }}]\nroutes = [{{ path = \"/api/\", upstream = \"api\", rewrite = [{{ from = '^/api/(.*)$', to = '/v1/$1' }}] }}]"
        ));
        assert_eq!(found, []);
    }

    #[test]
    fn retrying_non_idempotent_requests_is_flagged() {
        let route = "routes = [{ path = \"/\", upstream = \"api\" }]";
        let text = |next: &str| {
            format!(
                "{APP}{route}\n[upstreams.web]\nservers = [\"127.0.0.1:3000\"]\nnext_upstream = {next}"
            )
        };
        assert_eq!(
            warnings(&text("[\"error\", \"non_idempotent\"]")),
            [(
                7,
                "upstream `web` retries POST, PATCH and other non-idempotent requests that a server already got: they may be applied twice"
                    .to_owned()
            )]
        );
        assert_eq!(
            warnings(&text("[\"error\", \"timeout\", \"http_502\"]")),
            []
        );
    }

    #[test]
    fn trusting_every_address_lets_clients_dodge_limits_by_client_ip() {
        let text = |trusted: &str, key: &str| {
            format!(
                "trusted_proxies = [{trusted}]\n[limit_req_zones.one]\nkey = \"{key}\"\nrate = \"1r/s\"\n{APP}limit_req = {{ zone = \"one\" }}\nroutes = [{{ path = \"/\", upstream = \"api\" }}]"
            )
        };
        assert_eq!(
            warnings(&text("\"10.0.0.0/8\", \"::/0\"", "client_ip")),
            [(
                1,
                "`::/0` trusts every address as a proxy: any client can put an address of its choice in X-Forwarded-For and dodge the limits keyed by client_ip"
                    .to_owned()
            )]
        );
        assert_eq!(warnings(&text("\"10.0.0.0/8\"", "client_ip")), []);
        assert_eq!(warnings(&text("\"all\"", "header:X-Api-Key")), []);
    }

    #[test]
    fn hsts_on_a_server_whose_https_certificate_does_not_name_it() {
        let found = warnings(&format!(
            "{APP}routes = [{{ path = \"/\", upstream = \"api\" }}]\n[[servers]]\nserver_names = [\"other.localhost\"]\nhsts = \"max-age=60\"\nroutes = [{{ path = \"/\", upstream = \"api\" }}]"
        ));
        assert_eq!(
            found,
            [(
                7,
                "`hsts` on a server without a certificate: HTTPS clients of `other.localhost` get the certificate of `app.localhost`, which does not name it, so browsers refuse the connection"
                    .to_owned()
            )]
        );
        // Near miss: a wildcard server's certificate covers the name.
        let found = warnings(
            "[[servers]]\nserver_names = [\"app.localhost\", \"*.app.localhost\"]\ntls = { auto_local = true }\nroutes = [{ path = \"/\", upstream = \"api\" }]\n[[servers]]\nserver_names = [\"api.app.localhost\"]\nredirect_https = true\nroutes = [{ path = \"/\", upstream = \"api\" }]",
        );
        assert_eq!(found, []);
    }

    #[test]
    fn a_slash_redirect_behind_an_exact_route_never_fires() {
        let found = warnings(&format!(
            "{APP}routes = [\n  {{ path = \"/app/\", upstream = \"api\", slash_redirect = true }},\n  {{ path = \"/app\", exact = true, return = {{ status = 200 }} }},\n]"
        ));
        assert_eq!(
            found,
            [(
                5,
                "`slash_redirect` on `/app/` never fires: the exact route `/app` answers `/app` first"
                    .to_owned()
            )]
        );
        let found = warnings(&format!(
            "{APP}routes = [{{ path = \"/app/\", upstream = \"api\", slash_redirect = true }}]"
        ));
        assert_eq!(found, []);
    }

    #[test]
    fn literal_starts_are_read_from_anchored_patterns() {
        assert_eq!(literal_start(r"^/api/(.*)$").as_deref(), Some("/api/"));
        assert_eq!(literal_start(r"^/a\.b/x?").as_deref(), Some("/a.b/"));
        assert_eq!(literal_start(r"^/blog/\d+$").as_deref(), Some("/blog/"));
        assert_eq!(literal_start("/api/"), None);
        let rule = |from: &str| RewriteRule {
            from: regex::Regex::new(from).expect("regex"),
            to: "/x".into(),
            redirect: None,
        };
        assert!(matches_every_path_under(&rule("^/a/(.*)$"), "/a/b/"));
        assert!(matches_every_path_under(&rule("^/a/"), "/a/"));
        assert!(matches_every_path_under(&rule("^/a/(?P<rest>.*)$"), "/a/"));
        assert!(!matches_every_path_under(&rule("^/a/(.+)$"), "/a/"));
        assert!(!matches_every_path_under(&rule("^/ab?$"), "/a/"));
        assert!(!matches_every_path_under(&rule("^/a/(.*)$"), "/b/"));
    }

    #[test]
    fn a_limit_keyed_by_an_address_header_is_flagged_and_client_ip_is_not() {
        let zone = |key: &str| {
            format!(
                "[limit_req_zones.one]\nkey = \"{key}\"\nrate = \"1r/s\"\n{APP}limit_req = {{ zone = \"one\" }}\nroutes = [{{ path = \"/\", upstream = \"api\" }}]"
            )
        };
        assert_eq!(
            warnings(&zone("header:X-Forwarded-For")),
            [(
                2,
                "[limit_req_zones.one] counts requests by `X-Forwarded-For`, which any client can write: a client that sends a new value each time is never limited".to_owned()
            )]
        );
        assert!(warnings(&zone("client_ip")).is_empty());
        assert!(warnings(&zone("header:X-Api-Key")).is_empty());
    }
}
