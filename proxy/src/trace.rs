//! The decision trace: ask the proxy *why*.
//!
//! Send a request with `X-Lab-Trace: 1` and its response carries one header
//! per decision the proxy made for it, numbered in the order they were made:
//!
//! ```text
//! x-lab-trace-01: request `GET /api/tasks HTTP/1.1` from 127.0.0.1:50312 on the http listener 127.0.0.1:8080
//! x-lab-trace-02: host `app.localhost`: server #1 (app.localhost) by its exact name
//! x-lab-trace-03: path `/api/tasks`: routes `/` (prefix), `/api/` (prefix) match; the longest prefix `/api/` wins
//! x-lab-trace-04: upstream request: path `/api/tasks` -> `/tasks` (strip_prefix: the route's prefix `/api/` becomes `/`), ...
//! x-lab-trace-05: attempt 1: upstream `api` has 1 server, balance round_robin: in turn, by weight
//! x-lab-trace-06: server 127.0.0.1:8000: weight 1, 0 in flight, up
//! x-lab-trace-07: attempt 1: round_robin chose 127.0.0.1:8000
//! x-lab-trace-08: 127.0.0.1:8000 answered 200 OK in 1.3 ms
//! ```
//!
//! The response's body is untouched: the trace is only headers, so it works
//! on every answer, streamed ones included, and `curl -i` shows it in order.
//!
//! **Who may ask.** Only clients whose TCP peer address is in `trace_from`
//! (empty by default: tracing is off). The peer address, not
//! `X-Forwarded-For`, because a header can say anything, and a trace shows the
//! proxy's insides (upstream addresses, limits). From anyone else the header
//! is ignored. It is taken off every request as it arrives, so an upstream
//! never sees it: the question is for this proxy.
//!
//! **What it costs.** Nothing when off: the request path formats no line and
//! allocates nothing. Each step calls [`Trace::note`] with a *closure* that
//! writes the line, and the closure only runs when the trace is on. The
//! wording lives here, in one place, so `proxy.rs` keeps reading as the
//! request's story with one-line notes.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

use crate::access::{AccessRule, Networks};
use crate::config::{
    Action, Balance, Config, HashKey, LimitKey, LimitReq, NextUpstream, PathRewrite, ProxyPass,
    Route, Server, ServerName,
};
use crate::error::ProxyError;
use crate::limit::Decision;
use crate::limit::rate::Checked;
use crate::proxy::ConnInfo;
use crate::router::{RouteMatch, Router, ServerChoice};
use crate::upstream::UpstreamPool;

/// The request header that asks for a trace (`X-Lab-Trace: 1`).
pub static HEADER: HeaderName = HeaderName::from_static("x-lab-trace");

/// Response headers are `x-lab-trace-01` to `x-lab-trace-99`.
const PREFIX: &str = "x-lab-trace-";
/// At most this many lines; a longer trace ends with a line saying so.
const MAX_LINES: usize = 99;
/// A longer line is cut, so a client's long path cannot bloat the headers.
const MAX_LINE_CHARS: usize = 400;

/// The decision trace of one request: off (the usual case), or the lines so far.
#[derive(Debug, Default)]
pub struct Trace {
    /// `None` when off, so an untraced request allocates nothing.
    lines: Option<Vec<String>>,
}

impl Trace {
    /// A trace that records nothing.
    pub fn off() -> Trace {
        Trace { lines: None }
    }

    /// On when the request asked (`asked` is its `X-Lab-Trace` value, `1`)
    /// and its TCP peer is in `allowed`; off otherwise. Without the header,
    /// nothing is checked at all.
    pub fn start(asked: Option<&HeaderValue>, allowed: &Networks, peer: IpAddr) -> Trace {
        let on = asked.is_some_and(|v| v.as_bytes().trim_ascii() == b"1") && allowed.contains(peer);
        Trace {
            lines: on.then(|| Vec::with_capacity(16)),
        }
    }

    /// Whether lines are being recorded.
    pub fn is_on(&self) -> bool {
        self.lines.is_some()
    }

    /// Records the line `line` writes; `line` runs only when the trace is on.
    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            lines.push(line());
        }
    }

    /// Records several lines (or none: an `Option<String>` will do).
    pub fn note_lines<I: IntoIterator<Item = String>>(&mut self, lines: impl FnOnce() -> I) {
        if let Some(all) = &mut self.lines {
            all.extend(lines());
        }
    }

    /// The lines recorded so far.
    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or_default()
    }

    /// Adds the lines to `headers` as `x-lab-trace-01: ...`, `-02`, ...,
    /// ASCII only, replacing any such headers already there (an upstream's).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let Some(lines) = &self.lines else {
            return;
        };
        let theirs: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(PREFIX))
            .cloned()
            .collect();
        for name in theirs {
            headers.remove(name);
        }
        let extra = lines.len().saturating_sub(MAX_LINES);
        let kept = if extra > 0 {
            MAX_LINES - 1
        } else {
            lines.len()
        };
        let mut shown: Vec<String> = lines.iter().take(kept).map(|l| header_safe(l)).collect();
        if extra > 0 {
            shown.push(format!("... and {} more lines, left out", extra + 1));
        }
        for (number, line) in shown.into_iter().enumerate() {
            let name = HeaderName::try_from(format!("{PREFIX}{:02}", number + 1));
            if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(line)) {
                headers.insert(name, value);
            }
        }
    }
}

/// A line a header can carry: printable ASCII, no line breaks, not too long.
fn header_safe(line: &str) -> String {
    let mut safe: String = line
        .chars()
        .take(MAX_LINE_CHARS)
        .map(|c| match c {
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    if line.chars().nth(MAX_LINE_CHARS).is_some() {
        safe.push_str("...");
    }
    safe
}

// ---------------------------------------------------------------------------
// The words: one function per decision, in the order a request meets them.
// ---------------------------------------------------------------------------

/// The request as it arrived, on which listener, from whom; and the client's
/// address when a trusted proxy reported another one.
pub fn arrival<B>(request: &Request<B>, conn: &ConnInfo, client_ip: IpAddr) -> Vec<String> {
    let mut lines = vec![format!(
        "request `{} {} {:?}` from {} on the {} listener {}",
        request.method(),
        request.uri(),
        request.version(),
        conn.client,
        conn.proto,
        conn.local,
    )];
    if client_ip != conn.client.ip() {
        lines.push(format!(
            "client address {client_ip}: read from X-Forwarded-For, believed because the peer {} is in trusted_proxies",
            conn.client.ip()
        ));
    }
    lines
}

/// Which virtual server the host chose, and how; then which route the path chose.
pub fn routing(
    config: &Config,
    router: &Router,
    matched: RouteMatch,
    host: Option<&str>,
    path: &str,
) -> Vec<String> {
    let Some(server) = config.servers.get(matched.server) else {
        return Vec::new();
    };
    let this = server_label(matched.server, server);
    let host_line = match (matched.by, host) {
        (ServerChoice::ExactName, Some(host)) => format!("host `{host}`: {this} by its exact name"),
        (ServerChoice::Wildcard, Some(host)) => format!(
            "host `{host}`: {this} by the wildcard `{}` (no server has this exact name)",
            matching_wildcard(server, host).unwrap_or_default()
        ),
        (_, Some(host)) => {
            format!("host `{host}`: no server has this name, so the default server answers: {this}")
        }
        (_, None) => format!("no Host header: the default server answers: {this}"),
    };
    let candidates: Vec<&Route> = router
        .candidates(matched.server, path)
        .into_iter()
        .filter_map(|i| server.routes.get(i))
        .collect();
    let winner = matched.route.and_then(|i| server.routes.get(i));
    let path_line = match winner {
        None => format!(
            "path `{path}`: no route of this server matches (its routes: {})",
            list(server.routes.iter().map(route_label), "none")
        ),
        Some(route) if candidates.len() <= 1 => {
            format!("path `{path}`: only route {} matches", route_label(route))
        }
        Some(route) => {
            let why = if route.exact {
                format!(
                    "the exact route `{}` wins: an exact match beats every prefix",
                    route.path
                )
            } else {
                format!("the longest prefix `{}` wins", route.path)
            };
            format!(
                "path `{path}`: routes {} match; {why}",
                list(candidates.iter().map(|r| route_label(r)), "none")
            )
        }
    };
    vec![host_line, path_line]
}

/// `server #2 (api.localhost, *.example.com)`: its place in the file and its names.
fn server_label(index: usize, server: &Server) -> String {
    let names = list(server.names.iter().map(ToString::to_string), "no names");
    format!("server #{} ({names})", index + 1)
}

/// The longest wildcard name of `server` that `host` ends with.
fn matching_wildcard(server: &Server, host: &str) -> Option<String> {
    let host = crate::router::normalize_host(host)?;
    server
        .names
        .iter()
        .filter_map(|name| match name {
            ServerName::Wildcard(suffix) if host.ends_with(suffix.as_str()) => Some(suffix),
            _ => None,
        })
        .max_by_key(|suffix| suffix.len())
        .map(|suffix| format!("*{suffix}"))
}

/// `` `/api/` (prefix) `` or `` `/health` (exact) ``.
fn route_label(route: &Route) -> String {
    let kind = if route.exact { "exact" } else { "prefix" };
    format!("`{}` ({kind})", route.path)
}

/// Items joined with `, `, or `empty` when there are none.
fn list(items: impl Iterator<Item = String>, empty: &str) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(", ")
    }
}

/// `404 Not Found`.
fn status_text(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// The request is answered with a 404: no route.
pub fn not_found() -> String {
    "no route for this path: 404 Not Found".to_owned()
}

/// A plain-HTTP request to a server with `redirect_https`.
pub fn redirect(status: StatusCode) -> String {
    format!(
        "the server has redirect_https and this request came over plain HTTP: {} to the same URL on https",
        status_text(status)
    )
}

/// A `return` route answers.
pub fn fixed(route: &Route) -> String {
    let status = match &route.action {
        Action::Return(fixed) => status_text(fixed.status),
        Action::Proxy(_) => String::new(),
    };
    format!(
        "route `{}` is a `return` route: the proxy answers {status} itself; limits, access rules and upstreams do not apply",
        route.path
    )
}

/// What a limit counts this request by: `client 127.0.0.1`, never a header's
/// value (it may be a secret, like an API key).
pub fn limit_key(key: &LimitKey, client_ip: IpAddr, route: &Route) -> String {
    match key {
        LimitKey::ClientIp => format!("client {client_ip}"),
        LimitKey::Header(name) => format!("header `{name}` (its value is not shown)"),
        LimitKey::Route => format!("route `{}` (one bucket for all clients)", route.path),
    }
}

/// A limit whose key is a header the request does not have.
pub fn no_limit_key(kind: &str, zone: &str, key: &LimitKey) -> String {
    let what = match key {
        LimitKey::Header(name) => format!("header `{name}`, which this request does not have"),
        _ => "a key this request does not have".to_owned(),
    };
    format!("{kind} zone `{zone}` counts by {what}: it does not count this request (as in nginx)")
}

/// The concurrency limit's verdict: `in_progress` counts this request when
/// it got a slot, and is the count that refused it otherwise.
pub fn conn_limit(
    zone: &str,
    key: &str,
    in_progress: u32,
    max: u32,
    refused: Option<StatusCode>,
) -> String {
    match refused {
        None => format!(
            "limit_conn zone `{zone}` by {key}: {in_progress} of max {max} requests in progress, this one included: go on"
        ),
        Some(status) => format!(
            "limit_conn zone `{zone}` by {key}: {in_progress} of max {max} requests already in progress: refused with {}",
            status_text(status)
        ),
    }
}

/// The rate limit's verdict. The bucket's level is nginx's *excess*: how
/// many requests this key is ahead of the rate, this request included.
pub fn rate_limit(
    zone: &str,
    key: &str,
    rate_milli: u64,
    limit: &LimitReq,
    checked: &Checked,
) -> String {
    let burst = limit.burst.burst;
    let no_delay = limit.burst.no_delay.min(burst);
    let head = format!(
        "limit_req zone `{zone}` ({}, burst {burst}) by {key}",
        rate(rate_milli)
    );
    let level = |milli: u64| format!("{:.1}", milli as f64 / 1000.0);
    let Some(before) = checked.before else {
        return format!(
            "{head}: a key not seen before, its bucket starts empty (level 0.0): accept"
        );
    };
    let (before, after) = (level(before), level(checked.after));
    let ahead = format!("{after} requests ahead of the rate (bucket level {before} -> {after})");
    match checked.decision {
        Decision::Accept if checked.after == 0 => format!(
            "{head}: this request is not ahead of the rate (bucket level {before} -> {after}): accept"
        ),
        Decision::Accept => {
            let setting = if no_delay == burst {
                "nodelay".to_owned()
            } else {
                format!("delay = {no_delay}")
            };
            format!(
                "{head}: this request is {ahead}, within the {no_delay} served without delay ({setting}): accept at once"
            )
        }
        Decision::Delay(wait) => format!(
            "{head}: this request is {ahead}, within the burst: delayed {} so that it leaves at the rate",
            millis(wait)
        ),
        Decision::Reject { retry_after } => format!(
            "{head}: this request would be {ahead}, over the burst: rejected with {}, Retry-After: {} (the bucket drains enough in {})",
            status_text(limit.status),
            retry_after.as_millis().div_ceil(1000).max(1),
            millis(retry_after)
        ),
    }
}

/// `1 r/s`, `0.5 r/s`.
fn rate(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{} r/s", milli / 1000)
    } else {
        let text = format!("{:.3}", milli as f64 / 1000.0);
        format!("{} r/s", text.trim_end_matches('0'))
    }
}

/// `1000 ms`, `1.3 ms`.
fn millis(duration: Duration) -> String {
    if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
    }
}

/// The access rules' verdict: which rule matched (counted from 1), or none.
pub fn access(whose: &str, rules: &[AccessRule], client_ip: IpAddr, allowed: bool) -> String {
    let found = rules
        .iter()
        .position(|rule| rule.networks.contains(client_ip));
    let verdict = if allowed { "let in" } else { "403 Forbidden" };
    match found.and_then(|i| Some((i, rules.get(i)?))) {
        Some((i, rule)) => format!(
            "access rules of the {whose}: rule {} of {} ({}) is the first to match {client_ip}: {verdict}",
            i + 1,
            rules.len(),
            if rule.allow { "allow" } else { "deny" },
        ),
        None => format!(
            "access rules of the {whose}: none of the {} rules matches {client_ip}, and no match lets in: {verdict}",
            rules.len()
        ),
    }
}

/// Basic authentication's verdict. The credentials themselves never appear.
pub fn basic_auth(realm: &str, sent_credentials: bool, verified: bool) -> String {
    let verdict = match (sent_credentials, verified) {
        (_, true) => "the user name and password are right: let in",
        (false, false) => {
            "no Authorization header: 401 Unauthorized, asking for a user name and password"
        }
        (true, false) => "unknown user or wrong password: 401 Unauthorized",
    };
    format!("basic auth (realm `{realm}`): {verdict}")
}

/// The body size limit: within it, over it (413 at once), or not known yet.
pub fn body_size(max: u64, declared: Option<u64>) -> String {
    match declared {
        Some(length) if length > max => format!(
            "max_body_size {max} bytes: Content-Length {length} is over it, refused before anything goes upstream"
        ),
        Some(length) => format!("max_body_size {max} bytes: Content-Length {length} is within it"),
        None => format!(
            "max_body_size {max} bytes: no Content-Length, so the body is counted as it streams (413 if it goes over)"
        ),
    }
}

/// What the upstream will receive: the path before (`parts`) and after
/// (`new_uri`) the rewrite, the `Host`, and `X-Forwarded-For` (in `parts`).
pub fn rewrite(
    route: &Route,
    pass: &ProxyPass,
    parts: &http::request::Parts,
    new_uri: &http::Uri,
    host: Option<&HeaderValue>,
) -> String {
    let (before, after) = (parts.uri.path(), new_uri.path());
    let path = match &pass.rewrite {
        PathRewrite::Keep => format!("path `{before}` sent as it is"),
        PathRewrite::ReplacePrefix(_) if route.exact => {
            format!("path `{before}` -> `{after}` (the exact route's path is replaced)")
        }
        PathRewrite::ReplacePrefix(with) if with == "/" => format!(
            "path `{before}` -> `{after}` (strip_prefix: the route's prefix `{}` becomes `/`)",
            route.path
        ),
        PathRewrite::ReplacePrefix(with) => format!(
            "path `{before}` -> `{after}` (replace_prefix: `{}` becomes `{with}`)",
            route.path
        ),
    };
    let host = match (pass.preserve_host, host.and_then(|h| h.to_str().ok())) {
        (true, Some(host)) => format!("Host `{host}` kept (preserve_host)"),
        _ => "Host: the chosen server's address (preserve_host = false)".to_owned(),
    };
    let xff = parts
        .headers
        .get(&crate::headers::X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    format!("upstream request: {path}, {host}, X-Forwarded-For `{xff}`")
}

/// A `rewrite` rule that matched: the new path, or the redirect it makes.
pub fn url_rewrite(
    whose: &str,
    rules: &[crate::rewrite::RewriteRule],
    rewritten: &crate::rewrite::Rewritten,
    path: &str,
) -> String {
    let rule = rules
        .get(rewritten.rule)
        .map_or_else(String::new, |r| format!("`{}` -> `{}`", r.from, r.to));
    let order = match whose {
        "server" => "; the new path is routed again",
        _ => "",
    };
    match rewritten.redirect {
        Some(status) => format!(
            "{whose} rewrite rule {} {rule} matches `{path}`: {} redirect to `{}`",
            rewritten.rule + 1,
            status.as_u16(),
            rewritten.target
        ),
        None => format!(
            "{whose} rewrite rule {} {rule} matches `{path}`: now `{}`{order}",
            rewritten.rule + 1,
            rewritten.target
        ),
    }
}

/// Header rules that ran on the request or the response.
pub fn header_rules(direction: &str, rules: &crate::header_rules::HeaderRules) -> String {
    let mut said = Vec::new();
    if !rules.remove.is_empty() {
        let names: Vec<&str> = rules.remove.iter().map(|n| n.as_str()).collect();
        said.push(format!("removed {}", names.join(", ")));
    }
    for (verb, list) in [("set", &rules.set), ("added", &rules.add)] {
        for (name, template) in list {
            said.push(format!("{verb} {name}: {template}"));
        }
    }
    format!("{direction}_headers: {}", said.join("; "))
}

/// The pool's servers as the balancer sees them for attempt `attempt`:
/// health, weight, requests in flight, and which are left out and why.
pub fn servers(
    pool: &UpstreamPool,
    attempt: usize,
    has_key: bool,
    client_ip: IpAddr,
    tried: &[std::sync::Arc<str>],
) -> Vec<String> {
    let servers = pool.servers();
    let how = match (pool.config.balance, &pool.config.hash_key) {
        (Balance::RoundRobin, _) => "round_robin: in turn, by weight".to_owned(),
        (Balance::LeastConn, _) => {
            "least_conn: fewest requests in flight for its weight".to_owned()
        }
        (Balance::RandomTwo, _) => {
            "random_two: two drawn at random by weight, the less busy wins".to_owned()
        }
        (Balance::First, _) => "first: the first usable server in config order".to_owned(),
        (Balance::Hash, key) if !has_key => format!(
            "hash, but this request has no {} to hash: round-robin instead (as nginx does)",
            hash_source(key.as_ref(), client_ip)
        ),
        (Balance::Hash, key) => format!(
            "hash of the {}: the same key always gets the same server",
            hash_source(key.as_ref(), client_ip)
        ),
    };
    let count = match servers.len() {
        1 => "1 server".to_owned(),
        n => format!("{n} servers"),
    };
    let mut lines = vec![format!(
        "attempt {attempt}: upstream `{}` has {count}, balance {how}",
        pool.name
    )];
    let now = tokio::time::Instant::now();
    let passive = servers.len() > 1;
    for server in servers.iter() {
        let mut line = format!(
            "server {}: weight {}, {} in flight, ",
            server.address,
            server.peer.weight,
            server.peer.in_flight()
        );
        if server.health.is_checked_down() {
            line.push_str("down (active health checks fail): left out");
        } else if !server.health.is_available(now, passive) {
            let _ = write!(
                line,
                "down (passive health: it failed max_fails = {} time(s) within fail_timeout = {}, and is out for as long): left out",
                pool.config.max_fails,
                humantime::format_duration(pool.config.fail_timeout)
            );
        } else if tried.contains(&server.address) {
            line.push_str("up, but this request already tried it: left out");
        } else {
            line.push_str("up");
        }
        lines.push(line);
    }
    lines
}

/// `client address 127.0.0.1`, `header `x-user``, `cookie `session``.
fn hash_source(key: Option<&HashKey>, client_ip: IpAddr) -> String {
    match key {
        Some(HashKey::Header(name)) => format!("header `{name}`"),
        Some(HashKey::Cookie(name)) => format!("cookie `{name}`"),
        Some(HashKey::ClientIp) | None => format!("client address {client_ip}"),
    }
}

/// The balancer's choice for attempt `attempt`, or that there was none.
pub fn chose(pool: &UpstreamPool, attempt: usize, chosen: Option<&str>) -> String {
    let balance = match pool.config.balance {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
        Balance::RandomTwo => "random_two",
        Balance::Hash => "hash",
        Balance::First => "first",
    };
    match chosen {
        Some(address) => format!("attempt {attempt}: {balance} chose {address}"),
        None => format!(
            "attempt {attempt}: no server left to choose (every one is down or already tried): 502"
        ),
    }
}

/// An attempt's answer: its status and how long the response head took.
/// `listed`: `next_upstream` lists the status, so it counts as a failure.
pub fn answered(address: &str, status: StatusCode, listed: bool, took: Option<Duration>) -> String {
    let took = took
        .map(|d| format!(" in {}", millis(d)))
        .unwrap_or_default();
    let mut line = format!("{address} answered {}{took}", status_text(status));
    if listed {
        line.push_str(", a status next_upstream lists: it counts as a failure");
    }
    line
}

/// An attempt that failed before any answer: why, and whether the upstream
/// could have received the request.
pub fn failed(address: &str, err: &ProxyError, took: Option<Duration>) -> String {
    let took = took
        .map(|d| format!(" after {}", millis(d)))
        .unwrap_or_default();
    let when = if !err.kind.is_upstream_failure() {
        "; not the server's fault, so no other server is tried"
    } else if err.kind.before_request_sent() {
        " (before the request was sent)"
    } else {
        " (the request may have reached it)"
    };
    format!("{address} failed{took}: {}{when}", err.kind.explain())
}

/// A failure taken a server out of rotation (passive health).
pub fn taken_out(pool: &UpstreamPool, address: &str) -> String {
    format!(
        "passive health: {address} reached max_fails = {} and is out of rotation for {}",
        pool.config.max_fails,
        humantime::format_duration(pool.config.fail_timeout)
    )
}

/// Why a failed attempt does not go on to the next server (nginx's
/// `proxy_next_upstream` rules, in the order they are checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    /// `next_upstream` does not list this kind of failure.
    NotListed,
    /// The body was streamed to the failed server and cannot be sent again.
    BodyGone,
    /// `next_upstream_tries` are used up (by default, one per server).
    NoTriesLeft,
    /// The request reached the server and its method is not idempotent.
    NotIdempotent,
    /// `next_upstream_timeout` has passed since the first attempt.
    OutOfTime,
}

/// Whether the request goes on to another server after a failed attempt, and why.
pub fn next_upstream(
    stop: Option<NoRetry>,
    rules: &NextUpstream,
    what: &str,
    method: &Method,
    sent: bool,
) -> String {
    let Some(stop) = stop else {
        let safe = if !sent {
            "the request never reached the server".to_owned()
        } else if method.is_idempotent() {
            format!("{method} is idempotent")
        } else {
            "non_idempotent is listed".to_owned()
        };
        return format!("next_upstream lists {what} and {safe}: trying another server");
    };
    let why = match stop {
        NoRetry::NotListed => format!("next_upstream does not list {what}"),
        NoRetry::BodyGone => {
            "the request body was streamed to that server and cannot be sent again".to_owned()
        }
        NoRetry::NoTriesLeft if rules.tries == 0 => {
            "every server has had its try (one per server)".to_owned()
        }
        NoRetry::NoTriesLeft => format!("next_upstream_tries = {} are used up", rules.tries),
        NoRetry::NotIdempotent => format!(
            "{method} is not idempotent and may have taken effect on that server, so it is not sent twice (non_idempotent is not listed)"
        ),
        NoRetry::OutOfTime => format!(
            "next_upstream_timeout = {} has passed since the first attempt",
            rules
                .timeout
                .map(humantime::format_duration)
                .map(|d| d.to_string())
                .unwrap_or_default()
        ),
    };
    format!("no other server is tried: {why}")
}

/// A failure that became the response.
pub fn failure(err: &ProxyError, status: StatusCode, proxy_status: &str) -> String {
    format!(
        "failed: {err}: {} with Proxy-Status `{proxy_status}`",
        status_text(status)
    )
}

/// HSTS added on an HTTPS response.
pub fn hsts(value: &HeaderValue) -> String {
    format!(
        "over https: Strict-Transport-Security `{}` added (hsts)",
        value.to_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Networks {
        ["127.0.0.1/32", "::1/128"]
            .iter()
            .map(|n| n.parse::<Networks>().expect("network"))
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn a_trace_starts_only_when_asked_from_an_allowed_peer() {
        let one = HeaderValue::from_static("1");
        assert!(Trace::start(Some(&one), &allowed(), ip("127.0.0.1")).is_on());
        assert!(Trace::start(Some(&one), &allowed(), ip("::1")).is_on());
        assert!(Trace::start(Some(&one), &allowed(), ip("::ffff:127.0.0.1")).is_on());
        assert!(!Trace::start(Some(&one), &allowed(), ip("10.0.0.1")).is_on());
        assert!(!Trace::start(None, &allowed(), ip("127.0.0.1")).is_on());
        let zero = HeaderValue::from_static("0");
        assert!(!Trace::start(Some(&zero), &allowed(), ip("127.0.0.1")).is_on());
        assert!(!Trace::start(Some(&one), &Networks::default(), ip("127.0.0.1")).is_on());
    }

    #[test]
    fn an_off_trace_never_runs_the_closure() {
        let mut trace = Trace::off();
        trace.note(|| unreachable!("formatted while off"));
        trace.note_lines(|| -> Vec<String> { unreachable!("formatted while off") });
        assert!(trace.lines().is_empty());
        let mut headers = HeaderMap::new();
        trace.write_headers(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn lines_become_numbered_ascii_headers_replacing_an_upstreams() {
        let mut trace = Trace::start(Some(&HeaderValue::from_static("1")), &allowed(), ip("::1"));
        trace.note(|| "first".into());
        trace.note_lines(|| ["path `/caf\u{e9}`\r\nx-evil: 1".to_owned()]);
        trace.note_lines(|| None);
        let mut headers = HeaderMap::new();
        headers.insert("x-lab-trace-07", HeaderValue::from_static("from upstream"));
        trace.write_headers(&mut headers);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["x-lab-trace-01"], "first");
        assert_eq!(headers["x-lab-trace-02"], "path `/caf?`??x-evil: 1");
    }

    #[test]
    fn a_very_long_trace_says_how_many_lines_were_left_out() {
        let mut trace = Trace::start(Some(&HeaderValue::from_static("1")), &allowed(), ip("::1"));
        for i in 0..120 {
            trace.note(|| format!("line {i} {}", "x".repeat(1000)));
        }
        let mut headers = HeaderMap::new();
        trace.write_headers(&mut headers);
        assert_eq!(headers.len(), 99);
        assert_eq!(headers["x-lab-trace-99"], "... and 22 more lines, left out");
        assert!(headers["x-lab-trace-01"].len() <= MAX_LINE_CHARS + 3);
    }

    fn limit(burst: u64, no_delay: u64) -> LimitReq {
        LimitReq {
            zone: 0,
            burst: crate::limit::rate::Burst { burst, no_delay },
            status: StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn checked(decision: Decision, before: u64, after: u64) -> Checked {
        Checked {
            decision,
            before: Some(before),
            after,
        }
    }

    #[test]
    fn the_rate_limit_line_says_how_far_ahead_of_the_rate_the_request_is() {
        let line = |limit: &LimitReq, checked: &Checked| {
            rate_limit("one", "client 10.0.0.1", 1000, limit, checked)
        };
        let delayed = checked(Decision::Delay(Duration::from_secs(2)), 1000, 2000);
        assert_eq!(
            line(&limit(5, 0), &delayed),
            "limit_req zone `one` (1 r/s, burst 5) by client 10.0.0.1: this request is 2.0 requests ahead of the rate (bucket level 1.0 -> 2.0), within the burst: delayed 2000 ms so that it leaves at the rate"
        );
        let two_stage = checked(Decision::Accept, 0, 1000);
        assert!(line(&limit(5, 2), &two_stage).ends_with(
            "1.0 requests ahead of the rate (bucket level 0.0 -> 1.0), within the 2 served without delay (delay = 2): accept at once"
        ));
        let on_time = checked(Decision::Accept, 0, 0);
        assert!(
            line(&limit(0, 0), &on_time)
                .ends_with("not ahead of the rate (bucket level 0.0 -> 0.0): accept")
        );
        let rejected = checked(
            Decision::Reject {
                retry_after: Duration::from_millis(1500),
            },
            500,
            1500,
        );
        assert!(line(&limit(0, 0), &rejected).ends_with(
            "would be 1.5 requests ahead of the rate (bucket level 0.5 -> 1.5), over the burst: rejected with 503 Service Unavailable, Retry-After: 2 (the bucket drains enough in 1500 ms)"
        ));
    }

    #[test]
    fn a_limit_by_a_missing_header_says_so_and_never_shows_header_values() {
        let key = LimitKey::Header(HeaderName::from_static("x-api-key"));
        assert_eq!(
            no_limit_key("limit_req", "by_key", &key),
            "limit_req zone `by_key` counts by header `x-api-key`, which this request does not have: it does not count this request (as in nginx)"
        );
    }

    #[test]
    fn rates_and_durations_read_naturally() {
        assert_eq!(rate(1000), "1 r/s");
        assert_eq!(rate(500), "0.5 r/s");
        assert_eq!(millis(Duration::from_millis(1000)), "1000 ms");
        assert_eq!(millis(Duration::from_micros(1300)), "1.3 ms");
    }
}
