//! The life of a request, top to bottom.
//!
//! [`Proxy::handle_request`] is the whole story; read it first. Each step is a
//! named function below it, in the order it runs:
//!
//! 0. [`check_request_head`]: a head over the size limits gets 414 or 431, a
//!    missing, doubled or doubtful `Host` 400 (see [`crate::request_head`]);
//!    [`normalize_path`]: `..`, `.`, `//` and unreserved escapes are
//!    resolved, so routing sees the path the upstream will act on, and a path
//!    with no single meaning (`%2F`, climbing above `/`) gets 400 (see
//!    [`crate::path`]);
//! 1. [`route`]: which virtual server (by host) and which route (by path)?
//! 2. a plain-HTTP request to a server with `redirect_https` is sent to HTTPS
//!    ([`redirect_to_https`]); `rewrite` rules change the path or redirect
//!    ([`rewrite_url`]); a `return` route answers at once
//!    ([`fixed_response`]); no route is a 404;
//! 3. [`limit_request`]: the request-rate limit may delay or refuse it;
//!    [`check_access`]: allow/deny and basic auth;
//!    [`check_body_size`]: a body over `max_body_size` gets 413;
//! 4. [`rewrite_request`]: the path is rewritten, hop-by-hop headers removed,
//!    forwarding headers (`X-Forwarded-For`, ...), the request id and
//!    `traceparent` added, `request_headers` rules applied;
//! 5. [`cache_lookup`]: on a route with a `cache`, a fresh stored response is
//!    served without going upstream; [`forward`]: [`pick_upstream`] has the
//!    balancer choose a server that is up, and the request goes there on a
//!    pooled keep-alive connection; a failed attempt may go on to the next
//!    server (retries);
//! 6. [`respond`]: the response's hop-by-hop headers are removed and its body is
//!    streamed back to the client as it arrives; [`cache_store`] copies a
//!    cacheable one into the cache as it passes; or, when the upstream agreed
//!    to switch protocols (WebSocket), [`tunnel_upgrade`] answers 101 and
//!    joins the two connections into a byte pipe;
//! 7. before it leaves, the response may be compressed ([`compress_response`])
//!    and gets the proxy's added headers ([`add_hsts`], [`add_cors`],
//!    [`add_cache_status`], [`add_response_headers`]: the request id and
//!    `response_headers` rules, [`add_trace`]);
//! 8. [`record_metrics`]: the request is counted for `/metrics`;
//!    [`log_access`]: one line per request.
//!
//! Every failure on the way is a [`ProxyError`], and [`fail_to_proxy`] is the one
//! place that turns it into a response (502/504 with `Proxy-Status`).
//!
//! Each step also notes its decision in the request's [`Trace`] (one line,
//! `ctx.trace.note(|| ...)`, which costs nothing unless the client asked with
//! `X-Lab-Trace: 1`); [`add_trace`] puts the lines in the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log;
use crate::balance::PeerRequest;
use crate::body::{self, ProxyBody};
use crate::config::{
    Action, Config, DEFAULT_WEBSOCKET_IDLE_TIMEOUT, FixedResponse, HashKey, LimitKey, PathRewrite,
    ProxyPass, Route, Server,
};
use crate::error::{ErrorKind, ProxyError};
use crate::header_rules::Vars;
use crate::headers::{self, ClientInfo};
use crate::limit::{self, ConnLimitZone, ConnPermit, Decision, RateLimitZone};
use crate::request_id::{RequestIds, TRACEPARENT};
use crate::router::{RouteMatch, Router};
use crate::trace::{self, NoRetry, Trace};
use crate::upgrade;
use crate::upstream::resolve::Resolver;
use crate::upstream::{UpstreamPool, UpstreamServer};

/// The proxy: its current configuration and everything compiled from it.
#[derive(Debug)]
pub struct Proxy {
    /// The live snapshot. Requests take a reference-counted copy at their start
    /// and keep it to their end, so a reload never changes a request midway.
    state: ArcSwap<Snapshot>,
    /// How upstream host names are looked up, for pools made on reload.
    resolver: Resolver,
}

/// An immutable view of one configuration: the config, its routing tables and
/// its upstream pools.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: Config,
    /// Host and path routing tables compiled from it.
    pub router: Router,
    /// One pool per `[upstreams.NAME]`, in the order of `config.upstreams`.
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// One zone per `[limit_req_zones.NAME]`, in the order of `config.rate_zones`.
    pub rate_zones: Vec<Arc<RateLimitZone>>,
    /// One zone per `[limit_conn_zones.NAME]`, in the order of `config.conn_zones`.
    pub conn_zones: Vec<Arc<ConnLimitZone>>,
    /// One store per `[cache_zones.NAME]`, in the order of `config.cache_zones`.
    pub cache_zones: Vec<Arc<crate::cache::Zone>>,
    /// Its metrics series, resolved by server and route (see [`crate::metrics`]).
    pub metrics: crate::metrics::SnapshotMetrics,
    /// The TLS settings of each `[[stream]]`, in config order: `Some` for the
    /// streams that terminate TLS (see [`crate::stream::terminate`]).
    pub stream_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

/// What the proxy knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address (the TCP peer).
    pub client: SocketAddr,
    /// The proxy's own address the client connected to.
    pub local: SocketAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
}

/// Per-request state, filled in by each step and read by the access log.
#[derive(Debug)]
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// The connection it came on.
    pub conn: ConnInfo,
    /// The client's address: the TCP peer, or what a trusted proxy reported.
    pub client_ip: std::net::IpAddr,
    /// The method, as the client sent it.
    pub method: Method,
    /// The URI, as the client sent it (before any rewrite).
    pub uri: Uri,
    /// The HTTP version the client spoke.
    pub version: Version,
    /// The router's decision, once made.
    pub matched: Option<RouteMatch>,
    /// The upstream server the request was sent to, if any.
    pub upstream: Option<Arc<str>>,
    /// The chosen upstream's status and how long its response head took.
    pub upstream_answer: Option<(StatusCode, std::time::Duration)>,
    /// The failure, if the request failed.
    pub error: Option<ErrorKind>,
    /// The rate-limit zone that refused the request, if one did.
    pub limited: Option<String>,
    /// The page origin that sent it (`Origin`), for CORS.
    pub origin: Option<HeaderValue>,
    /// `Referer` and `User-Agent`, for the access log.
    pub referer: Option<HeaderValue>,
    /// See `referer`.
    pub user_agent: Option<HeaderValue>,
    /// The host the client asked for (`Host`, or the URI's authority).
    pub host: Option<HeaderValue>,
    /// Its request id and trace context (see [`crate::request_id`]).
    pub ids: RequestIds,
    /// The encodings the client can decode (`Accept-Encoding`), for compression.
    pub accept_encoding: Option<HeaderValue>,
    /// The decision trace: off unless the client asked and may ask.
    pub trace: Trace,
    /// What the route's cache did, for the `Cache-Status` header.
    pub cache: Option<crate::cache::CacheStatus>,
}

impl Snapshot {
    /// Compiles a configuration into routing tables and upstream pools, and
    /// starts the pools' background work (health checks, DNS lookups) when a
    /// tokio runtime is running.
    pub fn new(config: Config, resolver: &Resolver) -> Snapshot {
        Snapshot::replacing(config, resolver, None)
    }

    /// Like [`new`](Self::new), for a reload: what did not change in the
    /// config is taken over from `previous` instead of made anew, so a reload
    /// keeps it. An upstream with the same name and settings keeps its pool
    /// (health, idle connections, balancer state); a limit zone keeps its
    /// counts; a cache zone keeps its stored answers.
    pub fn replacing(config: Config, resolver: &Resolver, previous: Option<&Snapshot>) -> Snapshot {
        /// The part of `previous` made from a config part equal to `part`.
        fn same<'p, C: PartialEq, T: Clone>(
            previous: Option<(&'p [C], &'p [T])>,
            part: &C,
        ) -> Option<T> {
            let (parts, made) = previous?;
            let index = parts.iter().position(|p| p == part)?;
            made.get(index).cloned()
        }
        let old_pools = previous.map(|s| (&s.config.upstreams[..], &s.upstreams[..]));
        let old_rates = previous.map(|s| (&s.config.rate_zones[..], &s.rate_zones[..]));
        let old_conns = previous.map(|s| (&s.config.conn_zones[..], &s.conn_zones[..]));
        let old_caches = previous.map(|s| (&s.config.cache_zones[..], &s.cache_zones[..]));
        // The counters go on from where the previous configuration left them.
        let metrics = previous
            .map(|s| s.metrics.shared.clone())
            .unwrap_or_default();
        Snapshot {
            stream_tls: crate::stream::terminate::acceptors(&config),
            metrics: crate::metrics::SnapshotMetrics::new(metrics, &config),
            router: Router::new(&config),
            upstreams: config
                .upstreams
                .iter()
                .map(|upstream| {
                    if let Some(pool) = same(old_pools, upstream) {
                        return pool;
                    }
                    let pool = Arc::new(UpstreamPool::new(upstream));
                    // Background work needs a runtime; without one (a
                    // benchmark building a snapshot) the pool just serves.
                    if tokio::runtime::Handle::try_current().is_ok() {
                        if let Some(check) = upstream.health_check.clone() {
                            crate::upstream::checks::start(&pool, check);
                        }
                        crate::upstream::resolve::start(&pool, resolver.clone());
                        crate::upstream::connections::start_pruning(&pool);
                    }
                    pool
                })
                .collect(),
            rate_zones: config
                .rate_zones
                .iter()
                .map(|z| {
                    same(old_rates, z).unwrap_or_else(|| {
                        Arc::new(RateLimitZone::new(&z.name, z.rate_milli, z.capacity))
                    })
                })
                .collect(),
            conn_zones: config
                .conn_zones
                .iter()
                .map(|z| {
                    same(old_conns, z).unwrap_or_else(|| Arc::new(ConnLimitZone::new(&z.name)))
                })
                .collect(),
            cache_zones: config
                .cache_zones
                .iter()
                .map(|z| {
                    same(old_caches, z).unwrap_or_else(|| Arc::new(crate::cache::Zone::new(z)))
                })
                .collect(),
            config,
        }
    }
}

impl Proxy {
    /// A proxy serving `config`, looking host names up with the system's resolver.
    pub fn new(config: Config) -> Proxy {
        Proxy::with_resolver(config, Resolver::System)
    }

    /// A proxy serving `config`, looking upstream host names up with `resolver`.
    pub fn with_resolver(config: Config, resolver: Resolver) -> Proxy {
        Proxy {
            state: ArcSwap::from_pointee(Snapshot::new(config, &resolver)),
            resolver,
        }
    }

    /// Serves `config` from now on (a reload). Requests already running
    /// finish with the snapshot they started with; the next request sees the
    /// new one. Pools, limit zones and caches whose settings did not change
    /// are kept (see [`Snapshot::replacing`]).
    pub fn reload(&self, config: Config) {
        let previous = self.snapshot();
        let next = Snapshot::replacing(config, &self.resolver, Some(&previous));
        self.state.store(Arc::new(next));
    }

    /// The configuration requests are served with right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The proxy's metrics, kept across reloads (see [`crate::metrics`]).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.state.load().metrics.shared.clone()
    }

    /// Handles one request from arrival to the response head; the body then
    /// streams on its own. Never fails: every error becomes a response.
    pub async fn handle_request(
        &self,
        mut request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let snapshot = self.snapshot();
        // Taken off every request: a trace is asked of this proxy, never of the upstream.
        let asked = request.headers_mut().remove(&trace::HEADER);
        if !snapshot.config.trusted_proxies.contains(conn.client.ip()) {
            headers::remove_untrusted_forwarded(request.headers_mut());
        }
        let ids = RequestIds::assign(request.headers_mut(), &snapshot.config.request_id_header);
        let mut ctx = RequestCtx {
            started: Instant::now(),
            conn,
            client_ip: crate::access::client_ip(
                &snapshot.config.trusted_proxies,
                conn.client.ip(),
                request.headers(),
            ),
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            matched: None,
            upstream: None,
            upstream_answer: None,
            error: None,
            limited: None,
            origin: request.headers().get(header::ORIGIN).cloned(),
            referer: request.headers().get(header::REFERER).cloned(),
            user_agent: request.headers().get(header::USER_AGENT).cloned(),
            host: request_host_value(request.uri(), request.headers()),
            ids,
            accept_encoding: crate::compress::accept_encoding(request.headers()),
            trace: Trace::start(
                asked.as_ref(),
                &snapshot.config.trace_from,
                conn.client.ip(),
            ),
            cache: None,
        };
        ctx.trace
            .note_lines(|| trace::arrival(&request, &conn, ctx.client_ip));
        let mut response = match proxy_request(&snapshot, &mut ctx, request).await {
            Ok(response) => response,
            Err(err) => fail_to_proxy(&mut ctx, err),
        };
        compress_response(&snapshot, &mut ctx, &mut response);
        add_hsts(&snapshot, &mut ctx, &mut response);
        add_cors(&snapshot, &mut ctx, &mut response);
        add_cache_status(&ctx, &mut response);
        add_response_headers(&snapshot, &mut ctx, &mut response);
        add_trace(&ctx, &mut response);
        record_metrics(&snapshot, &ctx, &response);
        log_access(&snapshot, &ctx, &mut response);
        response
    }
}

/// Steps 1 to 6 of the request's life; see the module documentation.
async fn proxy_request(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Some(refused) = check_request_head(snapshot, ctx, &request) {
        return Ok(refused);
    }
    if let Some(refused) = normalize_path(ctx, &mut request) {
        return Ok(refused);
    }
    let Some((server, mut route)) = route(snapshot, ctx, &request) else {
        return Ok(not_found(ctx));
    };
    if let Some(status) = server.redirect_https
        && ctx.conn.proto == "http"
    {
        ctx.trace.note(|| trace::redirect(status));
        let by_name = ctx
            .matched
            .is_some_and(|m| m.by != crate::router::ServerChoice::Default);
        return Ok(redirect_to_https(
            status,
            &request,
            snapshot.config.https_port(),
            (!by_name).then_some(&server.names[..]),
        ));
    }
    if !server.rewrite.is_empty()
        && let Some(rewritten) = rewrite_url(ctx, &server.rewrite, "server", &mut request)
    {
        if let Some(status) = rewritten.redirect {
            return Ok(redirect_to(status, &rewritten.target));
        }
        // The new path is routed again: the route for it may be another one.
        route = self::route(snapshot, ctx, &request).and_then(|(_, route)| route);
    }
    if server.has_slash_redirects
        && let Some(location) = slash_redirect(snapshot, ctx, &request)
    {
        return Ok(redirect_to(StatusCode::MOVED_PERMANENTLY, &location));
    }
    let Some(route) = route else {
        return Ok(not_found(ctx));
    };
    if !route.rewrite.is_empty()
        && let Some(rewritten) = rewrite_url(ctx, &route.rewrite, "route", &mut request)
        && let Some(status) = rewritten.redirect
    {
        return Ok(redirect_to(status, &rewritten.target));
    }
    // A CORS preflight asks the proxy, not the upstream (see add_cors).
    if let Some(cors) = route.cors.as_ref().or(server.cors.as_ref())
        && crate::cors::is_preflight(request.method(), request.headers())
    {
        ctx.trace
            .note(|| "CORS preflight: answered by the proxy from the `cors` setting".to_owned());
        return Ok(cors.preflight(request.headers()));
    }
    let pass = match &route.action {
        Action::Return(fixed) => {
            ctx.trace.note(|| trace::fixed(route));
            return Ok(fixed_response(fixed));
        }
        Action::Proxy(pass) => pass,
    };
    let permit = match limit_request(snapshot, ctx, server, route, &request).await {
        Ok(permit) => permit,
        Err(refusal) => return Ok(refusal),
    };
    if let Some(denied) = check_access(ctx, server, route, &request).await {
        return Ok(denied);
    }
    // Claimed before the request is taken apart: hyper keeps it there.
    let client_upgrade = upgrade::take_client_side(&mut request);
    let mut request = check_body_size(
        ctx,
        request,
        route.max_body_size.or(server.max_body_size),
        snapshot.config.client_body_timeout,
    )?;
    let pool = &snapshot.upstreams[pass.upstream];
    // An upgrade is a conversation, never a stored answer.
    let cached = match client_upgrade {
        Some(_) => None,
        None => match cache_lookup(snapshot, ctx, server, route, pass, &mut request).await {
            Ok(cached) => cached,
            Err(answer) => return Ok(answer),
        },
    };
    let upstream_request = rewrite_request(request, server, route, pass, ctx);
    let (upstream_response, in_flight) = forward(pool, ctx, upstream_request).await?;
    if upstream_response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let idle = route
            .websocket_idle_timeout
            .or(server.websocket_idle_timeout)
            .unwrap_or(DEFAULT_WEBSOCKET_IDLE_TIMEOUT);
        return tunnel_upgrade(
            ctx,
            client_upgrade,
            upstream_response,
            idle,
            (permit, in_flight),
        );
    }
    let response = respond(upstream_response, pool.read_timeout());
    let response = cache_store(ctx, cached, response);
    // The connection-limit slot stays taken, and the server counts the
    // request as in progress (least_conn), until the body has been sent.
    Ok(response.map(|body| body::holding(body, (permit, in_flight))))
}

/// Step 0a: a head over the configured sizes, or with a doubtful `Host`, is
/// refused before anything else reads it (see [`crate::request_head`]).
pub fn check_request_head<B>(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    request: &Request<B>,
) -> Option<Response<ProxyBody>> {
    let refusal = crate::request_head::check(&snapshot.config.head_limits, request).err()?;
    ctx.trace.note(|| {
        format!(
            "request head refused: {} ({})",
            refusal.reason, refusal.status
        )
    });
    let text = format!(
        "{} {}: {}\n",
        refusal.status.as_u16(),
        refusal.status.canonical_reason().unwrap_or("Error"),
        refusal.reason
    );
    let mut response = plain_response(refusal.status, "");
    *response.body_mut() = body::full(text);
    Some(response)
}

/// Step 0b: the path in its one spelling (see [`crate::path`]), written
/// back into the request so that routing, rewrites and the upstream all see
/// the same path; 400 for a path with no single meaning.
pub fn normalize_path<B>(
    ctx: &mut RequestCtx,
    request: &mut Request<B>,
) -> Option<Response<ProxyBody>> {
    let path = request.uri().path();
    let normal = match crate::path::normalize(path) {
        Ok(std::borrow::Cow::Borrowed(_)) => return None,
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(err) => {
            ctx.trace.note(|| format!("path refused: {err}"));
            let mut response = plain_response(StatusCode::BAD_REQUEST, "");
            *response.body_mut() = body::full(format!("400 Bad Request: {err}\n"));
            return Some(response);
        }
    };
    ctx.trace
        .note(|| format!("path normalized: {path} is {normal}"));
    let target = match request.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = target.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    None
}

/// Step 1: picks the virtual server by host and the route by path (`None`
/// when the server has no route for the path).
pub fn route<'s>(
    snapshot: &'s Snapshot,
    ctx: &mut RequestCtx,
    request: &Request<Incoming>,
) -> Option<(&'s Server, Option<&'s Route>)> {
    let (host, path) = (request_host(request), request.uri().path());
    let matched = snapshot.router.route(host, path);
    ctx.matched = Some(matched);
    ctx.trace
        .note_lines(|| trace::routing(&snapshot.config, &snapshot.router, matched, host, path));
    let server = snapshot.config.servers.get(matched.server)?;
    Some((server, matched.route.and_then(|i| server.routes.get(i))))
}

/// Step 2a: sends a plain-HTTP client to the same URL on HTTPS, like nginx's
/// `return 301 https://$host$request_uri;`. The port is the HTTPS listener's,
/// left out when it is 443.
///
/// The host comes from the client, so it is checked before it goes into the
/// `Location` header: a host with characters no host name has (`/`, `@`, ...)
/// would let a client make the proxy redirect elsewhere, and gets 400 instead.
///
/// `unmatched` is the server's names when the client's host matched none of
/// them (the server answered as the default server): a host nobody
/// configured (`Host: evil.example`) is then not trusted, and the redirect
/// goes to the server's first exact name instead, as nginx's
/// `return 301 https://$server_name$request_uri;` does. A server without
/// names answers for any host and redirects to the client's.
pub fn redirect_to_https<B>(
    status: StatusCode,
    request: &Request<B>,
    https_port: Option<u16>,
    unmatched: Option<&[crate::config::ServerName]>,
) -> Response<ProxyBody> {
    let configured = unmatched.filter(|names| !names.is_empty()).map(|names| {
        names.iter().find_map(|name| match name {
            crate::config::ServerName::Exact(name) => Some(std::borrow::Cow::Borrowed(&name[..])),
            crate::config::ServerName::Wildcard(_) => None,
        })
    });
    let host = match configured {
        Some(name) => name,
        None => request_host(request).and_then(crate::router::normalize_host),
    };
    let valid = host.as_deref().is_some_and(|h| {
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'))
    });
    let (Some(host), true) = (host, valid) else {
        return plain_response(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: missing or invalid Host header\n",
        );
    };
    let port = match https_port {
        Some(443) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut response = plain_response(status, "");
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn plain_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The host the client asked for: the `Host` header (HTTP/1.1), or the URI's
/// authority (HTTP/2's `:authority`, or an absolute-form HTTP/1.1 request).
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())
}

/// Step 2b: the answer of a `return` route.
pub fn fixed_response(fixed: &FixedResponse) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, fixed.content_type.clone());
    if let Some(location) = &fixed.location {
        headers.insert(header::LOCATION, location.clone());
    }
    response
}

/// Step 2c: the `rewrite` rules of the server (before routing) or of the
/// route (after it): the first rule whose `from` matches the path gives the
/// new path, written into the request, or a redirect for the caller to send.
/// See [`crate::rewrite`].
pub fn rewrite_url<B>(
    ctx: &mut RequestCtx,
    rules: &[crate::rewrite::RewriteRule],
    whose: &str,
    request: &mut Request<B>,
) -> Option<crate::rewrite::Rewritten> {
    let uri = request.uri();
    let rewritten = crate::rewrite::apply(rules, uri.path(), uri.query())?;
    ctx.trace
        .note(|| trace::url_rewrite(whose, rules, &rewritten, uri.path()));
    if rewritten.redirect.is_none() {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = rewritten.target.parse().ok();
        match Uri::from_parts(parts) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(err) => {
                tracing::warn!(target = %rewritten.target, error = %err, "a rewrite made an invalid URI; the path is left as it was");
                return None;
            }
        }
    }
    Some(rewritten)
}

/// Step 2d: `/app` when the server has a route `/app/` with `slash_redirect`
/// (and no exact route for `/app`) is answered with a 301 to `/app/`, the
/// query kept, as nginx does for a `location /app/` that proxies: the
/// folder's relative links then resolve under it.
fn slash_redirect<B>(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    request: &Request<B>,
) -> Option<String> {
    let path = request.uri().path();
    let (server, route) = matched(snapshot, ctx)?;
    if path.ends_with('/') || route.is_some_and(|r| r.exact) {
        return None;
    }
    let with_slash = server
        .routes
        .iter()
        .find(|r| r.slash_redirect && r.path.len() == path.len() + 1 && r.path.starts_with(path))?;
    ctx.trace.note(|| {
        format!(
            "slash_redirect: {path} is the route {} without its slash: 301 to it",
            with_slash.path
        )
    });
    Some(match request.uri().query() {
        Some(query) => format!("{}?{query}", with_slash.path),
        None => with_slash.path.clone(),
    })
}

/// A redirect the proxy answers itself, to `location`.
fn redirect_to(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut response = plain_response(status, "");
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => plain_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error: a redirect rule made an invalid Location\n",
        ),
    }
}

/// Step 2e: no route matched the path.
fn not_found(ctx: &mut RequestCtx) -> Response<ProxyBody> {
    ctx.trace.note(trace::not_found);
    plain_response(
        StatusCode::NOT_FOUND,
        "404 Not Found: no route matches this path\n",
    )
}

/// Step 3: the limits of the route (else of its server), like nginx's
/// `limit_conn` and `limit_req`:
/// - concurrency: if the key already has `max` requests in progress, refuse;
///   else take a slot, returned here, which the response body holds until it
///   has been sent;
/// - rate: the request goes on at once, goes on after a delay (it is part of
///   an allowed burst), or is refused with `Retry-After`.
///
/// Refusals use the limit's status (503 by default, or 429). As in nginx,
/// `return` routes and HTTPS redirects are answered before limits apply
/// (nginx's rewrite phase comes before its preaccess phase).
pub async fn limit_request<B>(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    server: &Server,
    route: &Route,
    request: &Request<B>,
) -> Result<Option<ConnPermit>, Response<ProxyBody>> {
    let mut permit = None;
    if let Some(limit) = route.limit_conn.as_ref().or(server.limit_conn.as_ref())
        && let (Some(zone), Some(config)) = (
            snapshot.conn_zones.get(limit.zone),
            snapshot.config.conn_zones.get(limit.zone),
        )
        && let Some(key) = limit_key("limit_conn", &zone.name, &config.key, ctx, route, request)
    {
        let slot = zone.try_acquire(key, limit.max);
        let refused = slot.is_none().then_some(limit.status);
        let by = || trace::limit_key(&config.key, ctx.client_ip, route);
        ctx.trace.note(|| {
            trace::conn_limit(&zone.name, &by(), zone.in_progress(key), limit.max, refused)
        });
        match slot {
            Some(slot) => permit = Some(slot),
            None => {
                ctx.limited = Some(zone.name.clone());
                return Err(refusal(
                    limit.status,
                    "too many requests in progress",
                    &zone.name,
                ));
            }
        }
    }
    if let Some(limit) = route.limit_req.as_ref().or(server.limit_req.as_ref())
        && let (Some(zone), Some(config)) = (
            snapshot.rate_zones.get(limit.zone),
            snapshot.config.rate_zones.get(limit.zone),
        )
        && let Some(key) = limit_key("limit_req", &zone.name, &config.key, ctx, route, request)
    {
        let checked = zone.check_levels(key, limit.burst, tokio::time::Instant::now());
        let by = || trace::limit_key(&config.key, ctx.client_ip, route);
        ctx.trace
            .note(|| trace::rate_limit(&zone.name, &by(), config.rate_milli, limit, &checked));
        match checked.decision {
            Decision::Accept => {}
            Decision::Delay(wait) => tokio::time::sleep(wait).await,
            Decision::Reject { retry_after } => {
                ctx.limited = Some(zone.name.clone());
                let mut response =
                    refusal(limit.status, "too many requests (rate limit", &zone.name);
                let seconds = retry_after.as_millis().div_ceil(1000).max(1);
                if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return Err(response);
            }
        }
    }
    Ok(permit)
}

/// What a limit (`kind` zone `zone`) counts this request by; `None` (not
/// limited) when the key is a header the request does not have, as in nginx.
fn limit_key<B>(
    kind: &str,
    zone: &str,
    key: &LimitKey,
    ctx: &mut RequestCtx,
    route: &Route,
    request: &Request<B>,
) -> Option<limit::LimitKey> {
    Some(match key {
        LimitKey::ClientIp => limit::LimitKey::ip(ctx.client_ip),
        LimitKey::Header(name) => match request.headers().get(name) {
            Some(value) => limit::LimitKey::hashed(value.as_bytes()),
            None => {
                ctx.trace.note(|| trace::no_limit_key(kind, zone, key));
                return None;
            }
        },
        LimitKey::Route => {
            let server_index = ctx.matched.map_or(0, |m| m.server);
            limit::LimitKey::hashed(format!("{server_index} {}", route.path).as_bytes())
        }
    })
}

/// A limit's refusal: `429 Too Many Requests: too many requests (rate limit zone `one`)`.
fn refusal(status: StatusCode, what: &str, zone: &str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(format!(
        "{} {}: {what} zone `{zone}`)\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Step 3b: the route's access rules (else its server's), nginx `allow` and
/// `deny`: the first rule matching the client's address decides, no match
/// lets it in; a denied client gets 403. Then its password protection (nginx
/// `auth_basic`): without the right user and password, 401 and a
/// `WWW-Authenticate` header that makes a browser ask. (As in nginx, limits
/// are counted first: a refused request still uses up its share of the rate.)
pub async fn check_access<B>(
    ctx: &mut RequestCtx,
    server: &Server,
    route: &Route,
    request: &Request<B>,
) -> Option<Response<ProxyBody>> {
    let (rules, whose) = match &route.access {
        Some(rules) => (rules.as_slice(), "route"),
        None => (server.access.as_slice(), "server"),
    };
    let allowed = crate::access::is_allowed(rules, ctx.client_ip);
    if !rules.is_empty() {
        ctx.trace
            .note(|| trace::access(whose, rules, ctx.client_ip, allowed));
    }
    if !allowed {
        return Some(plain_response(
            StatusCode::FORBIDDEN,
            "403 Forbidden: your address is not allowed here\n",
        ));
    }
    let auth = route.basic_auth.as_ref().or(server.basic_auth.as_ref())?;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    // bcrypt takes milliseconds of CPU on purpose: keep it off the threads
    // that move everyone else's traffic.
    let checker = auth.clone();
    let verified = tokio::task::spawn_blocking(move || checker.verify(given.as_deref()))
        .await
        .unwrap_or(false);
    ctx.trace.note(|| {
        trace::basic_auth(
            &auth.realm,
            request.headers().contains_key(header::AUTHORIZATION),
            verified,
        )
    });
    if verified {
        return None;
    }
    let mut response = plain_response(
        StatusCode::UNAUTHORIZED,
        "401 Unauthorized: this route needs a user name and password\n",
    );
    let realm = auth.realm.replace(['"', '\\'], "");
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    Some(response)
}

/// Step 3c: the largest body the route accepts (nginx `client_max_body_size`).
/// A `Content-Length` over it is refused at once with 413, before anything
/// goes upstream. A body without a length (chunked) is counted as it streams;
/// if it goes over, the stream is cut off with an error, so the upstream sees
/// an aborted request, never a complete-looking truncated one, and the client
/// gets 413 (see [`fail_to_proxy`]).
///
/// The body is also on the `client_body_timeout` clock from here on, and any
/// failure of it is marked as the client's (see [`body::from_client`]).
pub fn check_body_size(
    ctx: &mut RequestCtx,
    request: Request<Incoming>,
    max: Option<u64>,
    client_body_timeout: std::time::Duration,
) -> Result<Request<ProxyBody>, ProxyError> {
    let request = request.map(|incoming| body::from_client(incoming, client_body_timeout));
    let Some(max) = max else {
        return Ok(request);
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    ctx.trace.note(|| trace::body_size(max, declared));
    if declared.is_some_and(|length| length > max) {
        return Err(ProxyError {
            kind: ErrorKind::BodyTooLarge,
            upstream: None,
            cause: Some(format!("Content-Length over max_body_size ({max} bytes)").into()),
        });
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    Ok(request.map(|incoming| {
        http_body_util::Limited::new(incoming, limit)
            .map_err(body::BodyError::from)
            .boxed()
    }))
}

/// Step 4: turns the client's request into the request the upstream
/// receives. The `Host` header is the client's with `preserve_host`, else it
/// is left out here and [`forward`] sets it to the chosen server's address
/// (nginx's default `Host $proxy_host`).
pub fn rewrite_request(
    request: Request<ProxyBody>,
    server: &Server,
    route: &Route,
    pass: &ProxyPass,
    ctx: &mut RequestCtx,
) -> Request<ProxyBody> {
    let (mut parts, incoming) = request.into_parts();

    // The host the client asked for, read before any header is removed.
    let client_host = request_host_value(&parts.uri, &parts.headers);

    let uri = rewrite_path(&parts.uri, route, &pass.rewrite);
    // A protocol switch (WebSocket) must reach the upstream, or it never happens.
    let upgrade = headers::upgrade_protocol(parts.version, &parts.headers);
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        headers::keep_upgrade(&mut parts.headers, protocol);
    }
    headers::add_forwarding_headers(
        &mut parts.headers,
        &ClientInfo {
            ip: ctx.client_ip,
            peer: ctx.conn.client.ip(),
            proto: ctx.conn.proto,
            host: client_host.as_ref(),
        },
    );
    ctx.trace
        .note(|| trace::rewrite(route, pass, &parts, &uri, client_host.as_ref()));
    parts.uri = uri;
    match (pass.preserve_host, client_host) {
        (true, Some(host)) => parts.headers.insert(header::HOST, host),
        _ => parts.headers.remove(header::HOST),
    };
    // The request's names travel with it (see crate::request_id).
    parts
        .headers
        .insert(ctx.ids.header.clone(), ctx.ids.request_id.clone());
    parts
        .headers
        .insert(TRACEPARENT.clone(), ctx.ids.traceparent.clone());
    for rules in [&server.request_headers, &route.request_headers]
        .into_iter()
        .flatten()
    {
        rules.apply(&mut parts.headers, &vars(ctx));
        ctx.trace.note(|| trace::header_rules("request", rules));
    }
    Request::from_parts(parts, incoming)
}

/// The values of the variables header rules may use (see [`crate::header_rules`]).
fn vars(ctx: &RequestCtx) -> Vars<'_> {
    let host = ctx
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    Vars {
        remote_addr: ctx.client_ip,
        host: crate::router::normalize_host(host).unwrap_or_default(),
        scheme: ctx.conn.proto,
        request_id: &ctx.ids.request_id,
        request_uri: ctx.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        request_method: ctx.method.as_str(),
    }
}

fn request_host_value(uri: &Uri, headers: &http::HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

/// Applies a route's path rewrite, keeping the query string. Returns an
/// origin-form URI (`/path?query`); the upstream pool adds scheme and authority.
///
/// With `ReplacePrefix`, the matched prefix is replaced, exactly like nginx's
/// `proxy_pass http://api/;` in `location /api/`: `/api/tasks` becomes `/tasks`.
/// A prefix without a trailing slash gives nginx's well-known surprise:
/// `location /service1` + `proxy_pass http://s1/;` sends `/service1/x` as `//x`.
pub fn rewrite_path(uri: &Uri, route: &Route, rewrite: &PathRewrite) -> Uri {
    let path = uri.path();
    let new_path = match rewrite {
        PathRewrite::ReplacePrefix(replacement) if !route.exact => path
            .strip_prefix(route.path.as_str())
            .map(|rest| format!("{replacement}{rest}")),
        PathRewrite::ReplacePrefix(replacement) => Some(replacement.clone()),
        PathRewrite::Keep => None,
    };
    let path_and_query = match (new_path, uri.query()) {
        (None, _) => return origin_form(uri),
        (Some(path), Some(query)) => format!("{path}?{query}"),
        (Some(path), None) => path,
    };
    Uri::try_from(path_and_query).unwrap_or_else(|_| origin_form(uri))
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// Step 5: sends the request upstream and waits for the response head; when
/// an attempt fails, goes on to the next server (nginx `proxy_next_upstream`):
///
/// - [`pick_upstream`]: the balancer picks a server that is up and that this
///   request has not tried yet;
/// - every failed attempt counts against its server (passive health:
///   `max_fails` failures within `fail_timeout` take it out of rotation);
/// - the request goes on to another server only if the failure is one
///   `next_upstream` lists (by default `error` and `timeout`), tries and time
///   are left, the body can be sent again, and either the upstream never got
///   the request (the connection failed) or it is idempotent: a POST that
///   reached a server may have taken effect, so it is not sent twice unless
///   `non_idempotent` is listed;
/// - no byte has gone to the client yet, so a retry is invisible to it.
///
/// Returns the response head and the guard that counts the request as in
/// progress on its server until the response body ends.
pub async fn forward(
    pool: &UpstreamPool,
    ctx: &mut RequestCtx,
    request: Request<ProxyBody>,
) -> Result<(Response<Incoming>, PeerRequest), ProxyError> {
    let rules = &pool.config.next_upstream;
    let key = hash_key(pool, ctx, &request);
    let max_tries = match rules.tries {
        0 => pool.servers().len(),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let (mut parts, body) = request.into_parts();
    let may_retry = rules.enabled() && max_tries > 1;
    // An idempotent request keeps a small body in memory even without
    // retries: it may have to go again on a new connection (see `spare`).
    let idempotent = parts.method.is_idempotent();
    let mut body = ReplayableBody::new(body, may_retry || idempotent).await?;
    let started = tokio::time::Instant::now();
    let mut tried: Vec<Arc<str>> = Vec::new();
    loop {
        let server = pick_upstream(pool, ctx, key, &tried)?;
        tried.push(server.address.clone());
        let in_flight = server.peer.begin_request();
        let sent_at = Instant::now();
        let mut attempt = Request::new(body.next());
        *attempt.method_mut() = parts.method.clone();
        // The last possible attempt takes the URI and headers; others copy them.
        if may_retry && tried.len() < max_tries {
            *attempt.uri_mut() = parts.uri.clone();
            *attempt.headers_mut() = parts.headers.clone();
        } else {
            *attempt.uri_mut() = std::mem::take(&mut parts.uri);
            *attempt.headers_mut() = std::mem::take(&mut parts.headers);
        }
        if !attempt.headers().contains_key(header::HOST) {
            attempt
                .headers_mut()
                .insert(header::HOST, server.host.clone());
        }
        // A kept connection the upstream closes just as this request goes
        // out: an idempotent request whose body is in memory goes once more,
        // on a new connection (see `upstream::connections`).
        let spare = if idempotent { body.spare() } else { None };
        let outcome = pool.send(&server, attempt, spare).await;
        let took = sent_at.elapsed();
        if let Ok(response) = &outcome {
            ctx.upstream_answer = Some((response.status(), took));
        }
        let took = ctx.trace.is_on().then_some(took);
        // Why this failure may not go on to the next server, given whether
        // the upstream could have received the request; `None`: it may.
        let stop = |listed: bool, sent: bool| {
            if !listed {
                Some(NoRetry::NotListed)
            } else if !body.can_replay() {
                Some(NoRetry::BodyGone)
            } else if tried.len() >= max_tries {
                Some(NoRetry::NoTriesLeft)
            } else if sent && !parts.method.is_idempotent() && !rules.non_idempotent {
                Some(NoRetry::NotIdempotent)
            } else if rules
                .timeout
                .is_some_and(|budget| started.elapsed() >= budget)
            {
                Some(NoRetry::OutOfTime)
            } else {
                None
            }
        };
        match outcome {
            Ok(response) => {
                let listed = rules.on_status.contains(&response.status().as_u16());
                ctx.trace
                    .note(|| trace::answered(&server.address, response.status(), listed, took));
                if !listed {
                    pool.report_success(&server);
                    return Ok((response, in_flight));
                }
                report_failure(pool, ctx, &server);
                let stop = stop(true, true);
                ctx.trace
                    .note(|| trace::next_upstream(stop, rules, "this status", &parts.method, true));
                if stop.is_some() {
                    return Ok((response, in_flight));
                }
                tracing::info!(upstream = %pool.name, server = %server.address, status = response.status().as_u16(), "trying the next server");
            }
            Err(err) => {
                ctx.trace
                    .note(|| trace::failed(&server.address, &err, took));
                if !err.kind.is_upstream_failure() {
                    return Err(err);
                }
                report_failure(pool, ctx, &server);
                let (listed, what) = if err.kind.is_timeout() {
                    (rules.on_timeout, "`timeout`")
                } else {
                    (rules.on_error, "`error`")
                };
                let sent = !err.kind.before_request_sent();
                let stop = stop(listed, sent);
                ctx.trace
                    .note(|| trace::next_upstream(stop, rules, what, &parts.method, sent));
                if stop.is_some() {
                    return Err(err);
                }
                tracing::info!(upstream = %pool.name, server = %server.address, error = %err, "trying the next server");
            }
        }
    }
}

/// Step 5a: the pool's balancer chooses a server among those that are up
/// and not yet tried; with none left, 502 and `Proxy-Status:
/// destination_unavailable` at once (no waiting, no spinning).
pub fn pick_upstream(
    pool: &UpstreamPool,
    ctx: &mut RequestCtx,
    key: Option<u64>,
    tried: &[Arc<str>],
) -> Result<Arc<UpstreamServer>, ProxyError> {
    let attempt = tried.len() + 1;
    ctx.trace
        .note_lines(|| trace::servers(pool, attempt, key.is_some(), ctx.client_ip, tried));
    let picked = pool.pick(key, tried);
    ctx.trace
        .note(|| trace::chose(pool, attempt, picked.as_ref().ok().map(|s| &*s.address)));
    let server = picked.map_err(|_| ProxyError {
        kind: ErrorKind::NoLiveUpstream,
        upstream: Some(pool.name.clone()),
        cause: None,
    })?;
    ctx.upstream = Some(server.address.clone());
    Ok(server)
}

/// Passive health: a failed attempt counts against its server; the trace
/// says when that took the server out of rotation.
fn report_failure(pool: &UpstreamPool, ctx: &mut RequestCtx, server: &UpstreamServer) {
    pool.report_failure(server);
    if ctx.trace.is_on()
        && !server
            .health
            .is_available(tokio::time::Instant::now(), pool.servers().len() > 1)
    {
        ctx.trace.note(|| trace::taken_out(pool, &server.address));
    }
}

/// What `balance = "hash"` hashes for this request: the client's address, a
/// header or a cookie. `None` (round-robin instead) for other balancers, or
/// when the request has no such header or cookie.
fn hash_key<B>(pool: &UpstreamPool, ctx: &RequestCtx, request: &Request<B>) -> Option<u64> {
    let value: Vec<u8> = match pool.config.hash_key.as_ref()? {
        HashKey::ClientIp => ctx.client_ip.to_string().into_bytes(),
        HashKey::Header(name) => request.headers().get(name)?.as_bytes().to_vec(),
        HashKey::Cookie(name) => request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            })?,
    };
    Some(crate::balance::stable_hash(&value))
}

/// Request bodies above this size are streamed once and never retried; at
/// or below it, a body that may need sending again (retries are on, or the
/// request is idempotent) is kept in memory.
pub const REPLAY_BUFFER_LIMIT: u64 = 64 * 1024;

/// A request body that can be sent to more than one server: none, a small
/// body read into memory first, or a streamed body that can go only once.
enum ReplayableBody {
    Empty,
    Buffered(bytes::Bytes),
    Once(Option<ProxyBody>),
}

impl ReplayableBody {
    async fn new(body: ProxyBody, may_retry: bool) -> Result<ReplayableBody, ProxyError> {
        use http_body::Body as _;
        if body.is_end_stream() {
            return Ok(ReplayableBody::Empty);
        }
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= REPLAY_BUFFER_LIMIT);
        if !(may_retry && small) {
            return Ok(ReplayableBody::Once(Some(body)));
        }
        match body.collect().await {
            Ok(collected) => Ok(ReplayableBody::Buffered(collected.to_bytes())),
            Err(err) => Err(ProxyError {
                kind: crate::error::client_body_kind(&*err).unwrap_or(ErrorKind::Internal),
                upstream: None,
                cause: Some(format!("reading the request body: {err}").into()),
            }),
        }
    }

    /// The body for the next attempt.
    fn next(&mut self) -> ProxyBody {
        match self {
            ReplayableBody::Empty => body::empty(),
            ReplayableBody::Buffered(bytes) => body::full(bytes.clone()),
            ReplayableBody::Once(body) => body.take().unwrap_or_else(body::empty),
        }
    }

    /// The body once more, when it is in memory (none, or buffered).
    fn spare(&self) -> Option<ProxyBody> {
        match self {
            ReplayableBody::Empty => Some(body::empty()),
            ReplayableBody::Buffered(bytes) => Some(body::full(bytes.clone())),
            ReplayableBody::Once(_) => None,
        }
    }

    /// Whether another attempt can have the same body.
    fn can_replay(&self) -> bool {
        !matches!(self, ReplayableBody::Once(None))
    }
}

/// Step 6: prepares the upstream's response for the client. The body is not
/// read here: hyper streams it to the client frame by frame, and if the
/// upstream breaks off mid-body, or stays silent for longer than
/// `read_timeout` between two reads, the client connection is aborted too, so
/// a truncated body is never passed off as complete.
pub fn respond(
    response: Response<Incoming>,
    read_timeout: std::time::Duration,
) -> Response<ProxyBody> {
    let (mut parts, incoming) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    let body = body::with_read_timeout(body::streamed(incoming), read_timeout);
    Response::from_parts(parts, body)
}

/// Step 5, first: with a `cache` on the route (else its server), the
/// cache is asked before the upstream ([`crate::cache`]). A fresh stored
/// response is the answer (`Err`, so nothing goes upstream). Otherwise the
/// request goes on, maybe made conditional (`If-None-Match`) to revalidate a
/// stale copy, with what [`cache_store`] needs afterwards. A stale copy served
/// within its stale-while-revalidate window starts one background refresh.
pub async fn cache_lookup(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    server: &Server,
    route: &Route,
    pass: &ProxyPass,
    request: &mut Request<ProxyBody>,
) -> Result<Option<crate::cache::Pending>, Response<ProxyBody>> {
    use crate::cache::{self, Lookup};
    let Some(settings) = route.cache.as_ref().or(server.cache.as_ref()) else {
        return Ok(None);
    };
    let Some(zone) = snapshot.cache_zones.get(settings.zone) else {
        return Ok(None);
    };
    let key = cache::key(ctx.conn.proto, request_host(request), &ctx.uri);
    match cache::lookup(zone, settings, request, key).await {
        Lookup::Answer {
            response,
            status,
            refresh,
        } => {
            ctx.trace
                .note(|| format!("cache `{}`: answered from the cache: {status}", zone.name));
            ctx.cache = Some(status);
            if let Some(refresh) = refresh {
                let refresh = *refresh;
                let upstream_request = rewrite_request(refresh.request, server, route, pass, ctx);
                let pool = snapshot.upstreams[pass.upstream].clone();
                refresh_in_background(ctx, pool, upstream_request, refresh.pending);
            }
            Err(response)
        }
        Lookup::Forward(pending) => {
            ctx.trace
                .note(|| format!("cache `{}`: goes upstream: {}", zone.name, pending.status));
            ctx.cache = Some(pending.status.clone());
            Ok(Some(pending))
        }
    }
}

/// stale-while-revalidate: the conditional request goes upstream on its own
/// task, after the client already has the stale copy; its response refreshes
/// (304) or replaces (200) the stored one.
fn refresh_in_background(
    ctx: &RequestCtx,
    pool: Arc<UpstreamPool>,
    request: Request<ProxyBody>,
    pending: crate::cache::Pending,
) {
    let mut own = RequestCtx {
        started: Instant::now(),
        conn: ctx.conn,
        client_ip: ctx.client_ip,
        method: Method::GET,
        uri: ctx.uri.clone(),
        version: ctx.version,
        matched: ctx.matched,
        upstream: None,
        upstream_answer: None,
        error: None,
        limited: None,
        origin: None,
        referer: None,
        user_agent: None,
        host: ctx.host.clone(),
        ids: ctx.ids.clone(),
        accept_encoding: None,
        trace: Trace::off(),
        cache: None,
    };
    tokio::spawn(async move {
        let Ok((response, in_flight)) = forward(&pool, &mut own, request).await else {
            return;
        };
        let response = respond(response, pool.read_timeout());
        let (response, _) = crate::cache::finish(pending, response);
        // Reading the body to its end is what stores it.
        let _ = response.into_body().collect().await;
        drop(in_flight);
    });
}

/// Step 6, last: on a cached route, the upstream's answer to a revalidation
/// (`304`: the stored body, refreshed) or a storable response, streamed to
/// the client and copied into the cache as it passes.
pub fn cache_store(
    ctx: &mut RequestCtx,
    pending: Option<crate::cache::Pending>,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let Some(pending) = pending else {
        return response;
    };
    let (response, status) = crate::cache::finish(pending, response);
    ctx.trace.note(|| format!("cache: {status}"));
    ctx.cache = Some(status);
    response
}

/// Before the response leaves: on a route with a cache, `Cache-Status`
/// (RFC 9211) says what the cache did, e.g. `proxy; hit; ttl=7`. A cache
/// further upstream may have said something already: ours goes last, as the
/// one closest to the client.
pub fn add_cache_status(ctx: &RequestCtx, response: &mut Response<ProxyBody>) {
    let Some(status) = &ctx.cache else {
        return;
    };
    let ours = status.to_string();
    let value = match response.headers().get(&crate::cache::CACHE_STATUS) {
        Some(theirs) => format!("{}, {ours}", String::from_utf8_lossy(theirs.as_bytes())),
        None => ours,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(crate::cache::CACHE_STATUS.clone(), value);
    }
}

/// Step 6, for an upgrade: the client asked to switch protocols
/// (`Connection: upgrade`, `Upgrade: websocket`), the request went upstream
/// with those two headers, and the upstream agreed with `101 Switching
/// Protocols`. From here the connection is no longer HTTP: the client gets
/// the 101 (with the upstream's `Upgrade` and `Sec-WebSocket-Accept`), and a
/// task of its own copies bytes both ways between the client's connection and
/// the upstream's until one side closes or nothing moves for `idle`
/// ([`crate::upgrade`]). The connection-limit slot and the server's
/// in-progress count are held until then.
///
/// An upstream that answers 101 to a request that asked for no upgrade (or
/// came over HTTP/2) is broken: 502.
pub fn tunnel_upgrade<G: Send + 'static>(
    ctx: &mut RequestCtx,
    client_side: Option<hyper::upgrade::OnUpgrade>,
    upstream_response: Response<Incoming>,
    idle: std::time::Duration,
    guard: G,
) -> Result<Response<ProxyBody>, ProxyError> {
    let address = ctx.upstream.clone().unwrap_or_else(|| Arc::from("-"));
    let Some(client_side) = client_side else {
        return Err(ProxyError::upstream(
            ErrorKind::ProtocolError,
            &address,
            "the upstream switched protocols (101) but the client asked for no upgrade",
        ));
    };
    let (response, upstream_side) = upgrade::switched_response(upstream_response);
    ctx.trace.note(|| {
        format!(
            "upgrade: the upstream switched to `{}` (101); the proxy now copies bytes both ways until one side closes or nothing moves for {} (websocket_idle_timeout)",
            response
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?"),
            humantime::format_duration(idle)
        )
    });
    upgrade::spawn_tunnel(client_side, upstream_side, idle, address, guard);
    Ok(response)
}

/// The one place where a failure becomes a response: the status for its kind,
/// a `Proxy-Status` header (RFC 9209) saying what went wrong, and a short
/// text body for people.
pub fn fail_to_proxy(ctx: &mut RequestCtx, err: ProxyError) -> Response<ProxyBody> {
    ctx.error = Some(err.kind);
    tracing::warn!(
        target: "proxy::error",
        method = %ctx.method,
        uri = %ctx.uri,
        error = %err,
        cause = err.cause.as_ref().map(tracing::field::display),
        "request failed"
    );
    let status = err.kind.status();
    let text = format!(
        "{} {}: {err}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let proxy_status = err.proxy_status();
    ctx.trace
        .note(|| trace::failure(&err, status, &proxy_status));
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&proxy_status) {
        headers.insert(http::HeaderName::from_static("proxy-status"), value);
    }
    response
}

/// The server and route the router chose for this request, for the steps
/// that run after the answer is made (`None` before routing).
fn matched<'s>(
    snapshot: &'s Snapshot,
    ctx: &RequestCtx,
) -> Option<(&'s Server, Option<&'s Route>)> {
    let matched = ctx.matched?;
    let server = snapshot.config.servers.get(matched.server)?;
    Some((server, matched.route.and_then(|i| server.routes.get(i))))
}

/// Before the response leaves: with a `compress` setting on the route (else
/// its server), a text body is compressed with the best encoding the client
/// accepts (`Accept-Encoding`), as it streams; see [`crate::compress`].
///
/// It runs on *every* response of such a route, whatever made it: the
/// upstream, a `return`, a cache (which keeps the upstream's form and is
/// shared by all clients, while the encoding is chosen per client), or the
/// proxy's own error pages (mostly under `min_length`, so sent as they are).
/// One rule at the one place where the response leaves is simpler to reason
/// about than a rule per source.
pub fn compress_response(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    response: &mut Response<ProxyBody>,
) {
    use crate::compress::{self, Decision};
    use http_body::Body as _;
    let Some((server, route)) = matched(snapshot, ctx) else {
        return;
    };
    let Some(setting) = route
        .and_then(|r| r.compress.as_ref())
        .or(server.compress.as_ref())
        .filter(|c| c.is_on())
    else {
        return;
    };
    let decision = compress::decide(
        setting,
        &ctx.method,
        ctx.accept_encoding.as_ref(),
        response.status(),
        response.headers(),
        response.body().size_hint().exact(),
    );
    ctx.trace.note(|| decision.to_string());
    match decision {
        Decision::NotCompressible | Decision::Untouchable(_) => {}
        Decision::Identity(_) => compress::add_vary(response.headers_mut()),
        Decision::Compress(algorithm) => {
            compress::add_vary(response.headers_mut());
            compress::mark_encoded(response.headers_mut(), algorithm);
            let body = std::mem::replace(response.body_mut(), body::empty());
            *response.body_mut() = compress::encode(body, algorithm, setting.level);
        }
    }
}

/// Before the response leaves: on HTTPS, the server's `Strict-Transport-Security`
/// header tells the browser to use HTTPS for this host from now on, even when
/// the user types `http://`. Never sent over plain HTTP, where an attacker in
/// the middle could forge or strip it (RFC 6797 section 7.2).
pub fn add_hsts(snapshot: &Snapshot, ctx: &mut RequestCtx, response: &mut Response<ProxyBody>) {
    if ctx.conn.proto != "https" {
        return;
    }
    let server = ctx
        .matched
        .and_then(|m| snapshot.config.servers.get(m.server));
    if let Some(hsts) = server.and_then(|s| s.hsts.as_ref()) {
        ctx.trace.note(|| trace::hsts(hsts));
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
}

/// Before the response leaves: with a `cors` setting on the route (else its
/// server), an answer to a page from an allowed origin says so
/// (`Access-Control-Allow-Origin`), so the browser lets that page read it;
/// pages from other origins get nothing, and the browser hides the answer.
/// (Preflights were answered earlier, before any limit or upstream.)
pub fn add_cors(snapshot: &Snapshot, ctx: &mut RequestCtx, response: &mut Response<ProxyBody>) {
    let Some((server, route)) = matched(snapshot, ctx) else {
        return;
    };
    let Some(cors) = route.and_then(|r| r.cors.as_ref()).or(server.cors.as_ref()) else {
        return;
    };
    if let Some(origin) = &ctx.origin {
        let allowed = cors.allows(origin);
        ctx.trace.note(|| {
            format!(
                "CORS: origin {} is {}",
                origin.to_str().unwrap_or("(not text)"),
                if allowed {
                    "allowed: Access-Control-Allow-Origin added"
                } else {
                    "not allowed: no CORS headers, the browser hides the answer"
                }
            )
        });
    }
    cors.decorate(ctx.origin.as_ref(), response.headers_mut());
}

/// Before the response leaves: the request id goes back to the client, so
/// it can be quoted when something went wrong; then the `response_headers`
/// rules of the server and of the route (see [`crate::header_rules`]) run,
/// on every answer, the proxy's own error pages included.
pub fn add_response_headers(
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    response: &mut Response<ProxyBody>,
) {
    response
        .headers_mut()
        .insert(ctx.ids.header.clone(), ctx.ids.request_id.clone());
    let Some((server, route)) = matched(snapshot, ctx) else {
        return;
    };
    let rules = [
        server.response_headers.as_ref(),
        route.and_then(|r| r.response_headers.as_ref()),
    ];
    for rules in rules.into_iter().flatten() {
        rules.apply(response.headers_mut(), &vars(ctx));
        ctx.trace.note(|| trace::header_rules("response", rules));
    }
}

/// Before the response leaves: when the client asked with `X-Lab-Trace: 1`
/// from an address in `trace_from`, every decision noted on the way becomes a
/// numbered header, `x-lab-trace-01: ...`. Headers only: the body, perhaps
/// still streaming from the upstream, is not touched.
pub fn add_trace(ctx: &RequestCtx, response: &mut Response<ProxyBody>) {
    ctx.trace.write_headers(response.headers_mut());
}

/// Step 7, first: counts the request in the metrics that `GET /metrics` on
/// the admin listener shows ([`crate::metrics`]): its status class and time
/// to the response head by server and route, and a limit's refusal, the
/// cache's result or an upstream failure when there was one. A few atomic
/// adds: the series were looked up when the configuration was compiled.
pub fn record_metrics(snapshot: &Snapshot, ctx: &RequestCtx, response: &Response<ProxyBody>) {
    crate::metrics::record(snapshot, ctx, response);
}

/// Last: one access-log line per request, written when the answer's body
/// has been sent (or abandoned), in nginx's `combined` format (or JSON) plus
/// the upstream, its status and time, the request id and how the request
/// ended (see [`crate::access_log`]):
///
/// ```text
/// 127.0.0.1 - - [23/Nov/2026:18:02:11 +0000] "GET /api/tasks HTTP/1.1" 200 512 "-" "curl/8.5.0" rt=0.004 upstream=127.0.0.1:8000 upstream_status=200 upstream_time=0.003 id=4bf92f35... end=done
/// ```
///
/// When nobody reads the access log (it is `off`, or a test or benchmark
/// installed no logger), nothing is gathered or formatted.
pub fn log_access(snapshot: &Snapshot, ctx: &RequestCtx, response: &mut Response<ProxyBody>) {
    if !access_log::is_on() {
        return;
    }
    let path = ctx.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let end = match (ctx.error, &ctx.limited) {
        (Some(kind), _) => Some(kind.proxy_status_type()),
        (None, Some(_)) => Some("limited"),
        (None, None) => None,
    };
    let record = access_log::Record {
        format: snapshot.config.access_log.format,
        remote_addr: ctx.client_ip,
        time: std::time::SystemTime::now() - ctx.started.elapsed(),
        started: ctx.started,
        request_line: format!("{} {path} {:?}", ctx.method, ctx.version),
        status: response.status().as_u16(),
        referer: ctx.referer.clone(),
        user_agent: ctx.user_agent.clone(),
        upstream: ctx
            .upstream
            .clone()
            .zip(ctx.upstream_answer)
            .map(|(server, (status, took))| (server, status.as_u16(), took)),
        request_id: ctx.ids.request_id.clone(),
        end,
    };
    let body = std::mem::replace(response.body_mut(), body::empty());
    *response.body_mut() = access_log::logged(body, record);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, exact: bool) -> Route {
        Route {
            path: path.into(),
            exact,
            limit_req: None,
            max_body_size: None,
            limit_conn: None,
            access: None,
            basic_auth: None,
            cors: None,
            request_headers: None,
            response_headers: None,
            rewrite: Vec::new(),
            slash_redirect: false,
            compress: None,
            cache: None,
            websocket_idle_timeout: None,
            action: Action::Return(FixedResponse {
                status: StatusCode::OK,
                body: Default::default(),
                content_type: HeaderValue::from_static("text/plain"),
                location: None,
            }),
        }
    }

    fn rewrite(uri: &str, prefix: &str, rewrite: PathRewrite) -> String {
        let uri: Uri = uri.parse().expect("uri");
        rewrite_path(&uri, &route(prefix, false), &rewrite).to_string()
    }

    fn location(host: &str, uri: &str, port: Option<u16>) -> Option<String> {
        let request = Request::get(uri)
            .header("host", host)
            .body(())
            .expect("request");
        let response = redirect_to_https(StatusCode::MOVED_PERMANENTLY, &request, port, None);
        response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn the_https_redirect_names_the_port_unless_it_is_443() {
        assert_eq!(
            location("App.localhost:8080", "/a?b=1", Some(8443)).as_deref(),
            Some("https://app.localhost:8443/a?b=1")
        );
        assert_eq!(
            location("app.localhost", "/", Some(443)).as_deref(),
            Some("https://app.localhost/")
        );
        assert_eq!(
            location("[::1]:8080", "/x", Some(8443)).as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(location("evil.example/phish", "/", Some(443)), None);
        assert_eq!(location("user@evil.example", "/", Some(443)), None);
    }

    #[test]
    fn strip_prefix_replaces_the_matched_prefix_with_a_slash() {
        let strip = || PathRewrite::ReplacePrefix("/".into());
        assert_eq!(
            rewrite("/api/tasks?done=1", "/api/", strip()),
            "/tasks?done=1"
        );
        assert_eq!(rewrite("/api/", "/api/", strip()), "/");
    }

    #[test]
    fn a_prefix_without_trailing_slash_reproduces_the_nginx_double_slash() {
        let strip = PathRewrite::ReplacePrefix("/".into());
        assert_eq!(rewrite("/service1/x", "/service1", strip.clone()), "//x");
        assert_eq!(rewrite("/service1x", "/service1", strip), "/x");
    }

    #[test]
    fn keep_sends_the_path_unchanged_in_origin_form() {
        assert_eq!(
            rewrite("http://app.localhost/api/x?y", "/api/", PathRewrite::Keep),
            "/api/x?y"
        );
    }

    #[test]
    fn replace_prefix_can_map_to_another_folder() {
        let to_v1 = PathRewrite::ReplacePrefix("/v1/".into());
        assert_eq!(rewrite("/api/tasks", "/api/", to_v1), "/v1/tasks");
    }

    #[test]
    fn an_exact_route_replaces_the_whole_path() {
        let uri: Uri = "/old?q=1".parse().expect("uri");
        let new = rewrite_path(
            &uri,
            &route("/old", true),
            &PathRewrite::ReplacePrefix("/new".into()),
        );
        assert_eq!(new.to_string(), "/new?q=1");
    }
}
