//! The configuration file: TOML in, a checked, typed [`Config`] out.
//!
//! Loading happens in two passes, like `nginx -t`:
//! 1. **parse**: serde reads the TOML into `Raw*` structs that mirror the file,
//!    keeping each value's position (`toml::Spanned`), and refusing unknown keys;
//! 2. **validate**: every rule that serde cannot express (addresses parse, routes
//!    name upstreams that exist, at most one default server, ...) is checked, and
//!    *all* problems are reported at once, each with file, line, column and a hint.
//!
//! The result is a [`Config`] in which every cross-reference is already resolved
//! (a route holds its upstream's index, not its name), so the hot path never has
//! to look anything up by string or handle an impossible case.
//!
//! ```toml
//! [[listen]]
//! addr = "127.0.0.1:8080"
//!
//! [[servers]]
//! server_names = ["app.localhost"]
//!
//! [[servers.routes]]
//! path = "/api/"
//! upstream = "api"
//! strip_prefix = true        # nginx: proxy_pass http://api/;
//!
//! [[servers.routes]]
//! path = "/"
//! return = { status = 200, body = "Welcome to the reverse proxy!" }
//!
//! [upstreams.api]
//! servers = ["127.0.0.1:8000"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, uri::Authority};

use crate::header_rules::{HeaderRules, Template};
use crate::rewrite::RewriteRule;
use serde::Deserialize;
use toml::Spanned;

/// Default for [`Upstream::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Upstream::read_timeout`] (nginx's `proxy_read_timeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Config::client_header_timeout`] (nginx's `client_header_timeout`).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Config::client_body_timeout`] (nginx's `client_body_timeout`).
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Defaults for [`Config::head_limits`]: the request line's URI, one header
/// line, the whole head, and the number of header lines.
pub const DEFAULT_HEAD_LIMITS: HeadLimits = HeadLimits {
    max_uri_size: 8 * 1024,
    max_header_size: 8 * 1024,
    max_request_head_size: 32 * 1024,
    max_headers: 100,
};
/// The smallest `max_request_head_size`: hyper's smallest read buffer.
pub const MIN_REQUEST_HEAD_SIZE: usize = 8 * 1024;
/// Default for [`Upstream::fail_timeout`] (nginx's).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Upstream::resolve_interval`].
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// Defaults for [`HealthCheck`]: every 5 s, 2 s to answer, 3 to fall, 2 to rise.
pub const DEFAULT_HEALTH_CHECK: (Duration, Duration, u32, u32) =
    (Duration::from_secs(5), Duration::from_secs(2), 3, 2);
/// Default for [`Config::keepalive_timeout`] (nginx's `keepalive_timeout`).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default for [`Stream::idle_timeout`] (nginx's `proxy_timeout` in `stream {}`).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default for [`Stream::preread_timeout`] (nginx's `preread_timeout`).
pub const DEFAULT_PREREAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Default idle timeout of an upgraded connection (a WebSocket tunnel): like
/// nginx, whose `proxy_read_timeout` (60 s) closes a silent WebSocket.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The checked model: what the rest of the proxy reads.
// ---------------------------------------------------------------------------

/// A complete, validated proxy configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Tokio worker threads; `None` means one per CPU core.
    pub workers: Option<usize>,
    /// How long a client may take to send a request head before it is cut off.
    pub client_header_timeout: Duration,
    /// How long a request body may go without a byte from the client before
    /// the request is abandoned with 408 (nginx `client_body_timeout`: the
    /// time between two reads, not the whole upload).
    pub client_body_timeout: Duration,
    /// How large a request head may be (see [`crate::request_head`]).
    pub head_limits: HeadLimits,
    /// How long a keep-alive connection may sit idle between two requests;
    /// zero turns keep-alive off (every response closes its connection).
    pub keepalive_timeout: Duration,
    /// How long requests in flight may take to finish once shutdown begins
    /// (SIGTERM); then they are cut off and the proxy exits.
    pub shutdown_timeout: Duration,
    /// The addresses to accept connections on.
    pub listeners: Vec<Listener>,
    /// Virtual servers, chosen by the request's host name.
    pub servers: Vec<Server>,
    /// Index into `servers` of the server that answers unknown host names.
    pub default_server: usize,
    /// Named pools of upstream servers; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Request-rate limit zones (nginx `limit_req_zone`); `limit_req` settings
    /// refer to them by index.
    pub rate_zones: Vec<RateZone>,
    /// Concurrency limit zones (nginx `limit_conn_zone`); `limit_conn`
    /// settings refer to them by index.
    pub conn_zones: Vec<ConnZone>,
    /// Response cache stores (nginx `proxy_cache_path`); `cache` settings
    /// refer to them by index.
    pub cache_zones: Vec<CacheZone>,
    /// Peers whose `X-Forwarded-For` is believed for the client's address
    /// (none by default: a client could write anything there).
    pub trusted_proxies: crate::access::Networks,
    /// Clients (by TCP peer address) whose `X-Lab-Trace: 1` is answered with
    /// the decision trace ([`crate::trace`]); none by default: tracing is off.
    pub trace_from: crate::access::Networks,
    /// Where the access log goes and how it is written (`access_log`).
    pub access_log: crate::access_log::AccessLogSettings,
    /// The header that carries each request's id (`X-Request-Id` by default;
    /// see [`crate::request_id`]).
    pub request_id_header: http::HeaderName,
    /// Where the local CA lives for `tls = { auto_local = true }`; `None`
    /// means the per-user default ([`LocalCa::default_dir`](crate::local_ca::LocalCa::default_dir)).
    pub local_ca_dir: Option<PathBuf>,
    /// The admin listener (`/metrics`, `/health`), if `admin` is set.
    pub admin: Option<Admin>,
    /// Layer-4 listeners (`[[stream]]`, nginx `stream { server { ... } }`):
    /// TCP bytes passed to an upstream pool unread (see [`crate::stream`]).
    pub streams: Vec<Stream>,
}

/// A TCP stream listener (nginx `stream { server { listen ...; proxy_pass ...; } }`):
/// every connection accepted on `addr` is joined to a server of `upstream`
/// and bytes are copied both ways, without reading them as HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Where to bind; port 0 lets the OS choose (tests use it).
    pub addr: SocketAddr,
    /// Index into [`Config::upstreams`]: the pool whose servers get the
    /// connections (with `sni`: those whose name matches no entry). `None`
    /// only with `sni`: a client whose name matches nothing is closed.
    pub upstream: Option<usize>,
    /// TLS passthrough routing (nginx `ssl_preread` + `map $ssl_preread_server_name`):
    /// the server name read from the client's ClientHello, without
    /// decrypting, picks the pool. Exact names win over wildcards; among
    /// wildcards, the longest suffix wins. Empty: no preread.
    pub sni: Vec<(ServerName, usize)>,
    /// How long to wait for the ClientHello when `sni` is set (nginx
    /// `preread_timeout`, 30 s by default), or for the TLS handshake with
    /// `tls`; a client that does not finish in time is closed.
    pub preread_timeout: Duration,
    /// TLS termination at layer 4: the proxy completes the TLS handshake with
    /// the client and sends the decrypted bytes to the upstream in plain TCP.
    pub tls: Option<StreamTls>,
    /// How long to wait for the TCP connection to one server before trying
    /// the next (nginx `proxy_connect_timeout`); the pool's `connect_timeout`
    /// unless set.
    pub connect_timeout: Duration,
    /// How long a connection may carry no byte in either direction before the
    /// proxy closes it (nginx `proxy_timeout`, 10 minutes by default).
    pub idle_timeout: Duration,
    /// At most this many connections of one client address at once
    /// (nginx `limit_conn` in `stream {}`); the extra one is closed at once.
    pub limit_conn: Option<StreamLimitConn>,
    /// Whether each upstream connection starts with a PROXY protocol header
    /// naming the client (nginx `proxy_protocol on` in `stream {}`), and in
    /// which version; `None`: the upstream sees only the proxy's address.
    pub proxy_protocol: Option<crate::stream::proxy_protocol::Version>,
    /// Whether each client connection starts with a PROXY protocol header
    /// from a trusted proxy in front (nginx `listen ... proxy_protocol` in
    /// `stream {}`); its source is the client from then on.
    pub accept_proxy_protocol: bool,
}

/// Where a terminating stream's certificate comes from (`[[stream]] tls = ...`).
#[derive(Debug, Clone)]
pub enum StreamTls {
    /// PEM files given in the config, loaded and checked when it was read.
    Files {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// The loaded certificate and key.
        loaded: crate::tls::ServerCert,
    },
    /// Issued by the local CA when the proxy starts, for these names
    /// (`names = [...]`, by default `localhost` and `127.0.0.1`).
    AutoLocal {
        /// Host names and IP addresses the certificate is for.
        names: Vec<String>,
    },
}

impl PartialEq for StreamTls {
    fn eq(&self, other: &StreamTls) -> bool {
        match (self, other) {
            (
                StreamTls::Files {
                    cert: a, key: b, ..
                },
                StreamTls::Files {
                    cert: c, key: d, ..
                },
            ) => a == c && b == d,
            (StreamTls::AutoLocal { names: a }, StreamTls::AutoLocal { names: b }) => a == b,
            _ => false,
        }
    }
}

impl Stream {
    /// The pool for a client that asked for `name` (`None`: no server name,
    /// or none read): an exact `sni` entry, else the longest matching
    /// wildcard, else the stream's `upstream`.
    pub fn pool_for(&self, name: Option<&str>) -> Option<usize> {
        let Some(name) = name else {
            return self.upstream;
        };
        let name = name.to_ascii_lowercase();
        let mut best: Option<(usize, usize)> = None;
        for (pattern, pool) in &self.sni {
            match pattern {
                ServerName::Exact(exact) if *exact == name => return Some(*pool),
                ServerName::Wildcard(suffix)
                    if name.len() > suffix.len()
                        && name.ends_with(suffix.as_str())
                        && best.is_none_or(|(len, _)| suffix.len() > len) =>
                {
                    best = Some((suffix.len(), *pool));
                }
                _ => {}
            }
        }
        best.map(|(_, pool)| pool).or(self.upstream)
    }
}

/// A stream's use of a concurrency zone: connections, not requests, per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimitConn {
    /// Index into [`Config::conn_zones`].
    pub zone: usize,
    /// Connections of one key allowed open at once.
    pub max: u32,
}

/// The size limits of a request head (nginx's `large_client_header_buffers`
/// in spirit). A head over them is refused before any routing: 414 for the
/// URI, 431 for a header line, for the whole head or for too many lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest request-target (path and query), in bytes.
    pub max_uri_size: usize,
    /// The longest single header line (name and value), in bytes.
    pub max_header_size: usize,
    /// The largest whole head: request line and every header line. hyper
    /// enforces it while reading, so a huge head never fills memory.
    pub max_request_head_size: usize,
    /// The most header lines a request may have.
    pub max_headers: usize,
}

/// The admin listener: a separate address that serves the proxy's own
/// metrics (`GET /metrics`, Prometheus text format) and `GET /health`, never
/// proxied traffic. See [`crate::metrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where to bind: loopback by default ([`DEFAULT_ADMIN_ADDR`]), so only
    /// this machine can read the proxy's internals; port 0 lets the OS choose.
    pub addr: SocketAddr,
}

/// Where the admin listener binds when `admin = {}` gives no `addr`.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";

/// One address the proxy accepts connections on (nginx `listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where to bind; port 0 lets the OS choose (tests use it).
    pub addr: SocketAddr,
    /// Whether clients speak TLS (HTTPS) on it.
    pub tls: bool,
    /// Whether every connection starts with a PROXY protocol header (v1 or
    /// v2) from a proxy in front, naming the real client (nginx
    /// `listen ... proxy_protocol`). Only peers in `trusted_proxies` may
    /// connect; the header's source is then the client's address.
    pub accept_proxy_protocol: bool,
}

/// A virtual server (nginx `server {}`): a set of host names and their routes.
#[derive(Debug, Clone)]
pub struct Server {
    /// The host names this server answers (nginx `server_name`).
    pub names: Vec<ServerName>,
    /// Its routes, in file order; the router decides which one wins.
    pub routes: Vec<Route>,
    /// Its certificate, for HTTPS listeners.
    pub tls: Option<ServerTls>,
    /// When set, plain-HTTP requests are answered with this redirect status
    /// (301 or 308) to the same URL on HTTPS (nginx `return 301 https://$host$request_uri`).
    pub redirect_https: Option<StatusCode>,
    /// `Strict-Transport-Security` value added to every HTTPS response.
    pub hsts: Option<HeaderValue>,
    /// The request-rate limit for its routes that set none of their own.
    pub limit_req: Option<LimitReq>,
    /// The largest request body its routes accept, unless they set their own.
    pub max_body_size: Option<u64>,
    /// The concurrency limit for its routes that set none of their own.
    pub limit_conn: Option<LimitConn>,
    /// Its access rules, for routes that set none of their own.
    pub access: Vec<crate::access::AccessRule>,
    /// Its password protection, for routes that set none of their own.
    pub basic_auth: Option<crate::access::BasicAuth>,
    /// Its CORS rules, for routes that set none of their own.
    pub cors: Option<crate::cors::Cors>,
    /// Headers changed on requests to the upstream, before its routes' rules.
    pub request_headers: Option<HeaderRules>,
    /// Headers changed on responses to the client, before its routes' rules.
    pub response_headers: Option<HeaderRules>,
    /// Path rewrites applied before a route is chosen (see [`crate::rewrite`]).
    pub rewrite: Vec<RewriteRule>,
    /// Whether any of its routes has `slash_redirect` (so requests to the
    /// others skip the lookup).
    pub has_slash_redirects: bool,
    /// Its response compression, for routes that set none of their own.
    pub compress: Option<crate::compress::Compress>,
    /// Its response cache, for routes that set none of their own.
    pub cache: Option<CacheSettings>,
    /// How long an upgraded connection (WebSocket) may stay silent in both
    /// directions before the proxy closes it, for routes that set none.
    pub websocket_idle_timeout: Option<Duration>,
}

/// A response cache store (nginx `proxy_cache_path ... keys_zone=NAME max_size=...`):
/// responses kept in memory, the least recently used thrown out first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheZone {
    /// The name `cache = { zone = ... }` uses.
    pub name: String,
    /// The most bytes (bodies and headers) it keeps.
    pub max_size: u64,
    /// The largest body it stores; bigger ones are passed through, not kept.
    pub max_entry_size: u64,
}

/// Default for [`CacheZone::max_entry_size`].
pub const DEFAULT_CACHE_MAX_ENTRY_SIZE: u64 = 1024 * 1024;

/// A route's or server's use of a cache zone (nginx `proxy_cache NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Index into [`Config::cache_zones`].
    pub zone: usize,
    /// How long a response that says nothing about its freshness stays fresh
    /// (only for statuses that may be cached by default: 200, 301, 404, ...);
    /// `None`: such responses are not stored.
    pub default_ttl: Option<Duration>,
    /// How long a stale response may still be served while it is refreshed in
    /// the background, when the response gives no `stale-while-revalidate`.
    pub stale_while_revalidate: Duration,
}

/// A request-rate limit zone (nginx `limit_req_zone KEY zone=NAME:SIZE rate=RATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateZone {
    /// The name `limit_req` uses.
    pub name: String,
    /// What requests are counted by.
    pub key: LimitKey,
    /// Thousandths of a request per second (1r/s = 1000, 30r/m = 500).
    pub rate_milli: u64,
    /// How many keys it remembers (its size in bytes / 64).
    pub capacity: usize,
}

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's IP address (nginx `$binary_remote_addr`).
    ClientIp,
    /// A request header's value; requests without it are not limited.
    Header(http::HeaderName),
    /// The route: all clients of a route share one bucket.
    Route,
}

/// A concurrency limit zone (nginx `limit_conn_zone KEY zone=NAME:SIZE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnZone {
    /// The name `limit_conn` uses.
    pub name: String,
    /// What requests are counted by.
    pub key: LimitKey,
}

/// A route's or server's use of a concurrency zone (nginx `limit_conn NAME N`).
#[derive(Debug, Clone)]
pub struct LimitConn {
    /// Index into [`Config::conn_zones`].
    pub zone: usize,
    /// Requests of one key allowed in progress at once.
    pub max: u32,
    /// The status of a refused request (nginx `limit_conn_status`, 503 by default).
    pub status: StatusCode,
}

/// A route's or server's use of a rate zone (nginx `limit_req zone=... burst=...`).
#[derive(Debug, Clone)]
pub struct LimitReq {
    /// Index into [`Config::rate_zones`].
    pub zone: usize,
    /// Burst size and how much of it is served without delay.
    pub burst: crate::limit::rate::Burst,
    /// The status of a rejected request (nginx `limit_req_status`, 503 by default).
    pub status: StatusCode,
}

/// Where a server's certificate comes from.
#[derive(Debug, Clone)]
pub enum ServerTls {
    /// PEM files given in the config, loaded and checked when it was read.
    Files {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// The loaded certificate and key.
        loaded: crate::tls::ServerCert,
    },
    /// Issued by the local CA for the server's names when the proxy starts.
    AutoLocal,
}

/// A host name pattern for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// Matches exactly this name (lower case), e.g. `app.localhost`.
    Exact(String),
    /// `*.example.com`: matches any name ending in `.example.com` (stored with
    /// the leading dot), but not `example.com` itself.
    Wildcard(String),
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerName::Exact(name) => f.write_str(name),
            ServerName::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// A route (nginx `location`): a path pattern and what to do with matching requests.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path prefix (or the exact path when `exact`).
    pub path: String,
    /// `true` for nginx `location = /path`: only this exact path matches.
    pub exact: bool,
    /// What happens to a request that this route wins.
    pub action: Action,
    /// Its request-rate limit, replacing the server's.
    pub limit_req: Option<LimitReq>,
    /// The largest request body it accepts (nginx `client_max_body_size`),
    /// replacing the server's; `None` means no limit.
    pub max_body_size: Option<u64>,
    /// Its concurrency limit, replacing the server's.
    pub limit_conn: Option<LimitConn>,
    /// Its access rules (nginx `allow`/`deny`), replacing the server's when set.
    pub access: Option<Vec<crate::access::AccessRule>>,
    /// Its password protection (nginx `auth_basic`), replacing the server's.
    pub basic_auth: Option<crate::access::BasicAuth>,
    /// Its CORS rules, replacing the server's.
    pub cors: Option<crate::cors::Cors>,
    /// Headers changed on requests to the upstream, after the server's rules.
    pub request_headers: Option<HeaderRules>,
    /// Headers changed on responses to the client, after the server's rules.
    pub response_headers: Option<HeaderRules>,
    /// Path rewrites applied once this route is chosen (see [`crate::rewrite`]).
    pub rewrite: Vec<RewriteRule>,
    /// For a prefix ending in `/`: the same path without the slash is
    /// redirected (301) to it, as nginx does for its `proxy_pass` locations.
    pub slash_redirect: bool,
    /// Its response compression, replacing the server's (`compress = false`
    /// turns the server's off here).
    pub compress: Option<crate::compress::Compress>,
    /// Its response cache, replacing the server's.
    pub cache: Option<CacheSettings>,
    /// Its idle timeout for upgraded connections (WebSocket), replacing the
    /// server's; with neither, [`DEFAULT_WEBSOCKET_IDLE_TIMEOUT`].
    pub websocket_idle_timeout: Option<Duration>,
}

/// What a route does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to an upstream pool (nginx `proxy_pass`).
    Proxy(ProxyPass),
    /// Answer directly, without any upstream (nginx `return`).
    Return(FixedResponse),
}

/// How a route forwards requests to its upstream pool.
#[derive(Debug, Clone)]
pub struct ProxyPass {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// How the path is changed before it is sent upstream.
    pub rewrite: PathRewrite,
    /// Send the client's `Host` header upstream (nginx `proxy_set_header Host $host`);
    /// when `false`, the upstream server's own address is sent instead.
    pub preserve_host: bool,
}

/// How the request path is rewritten on its way upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Send the path as the client sent it (nginx `proxy_pass http://api;`).
    Keep,
    /// Replace the matched route prefix with this string (nginx
    /// `proxy_pass http://api/;` replaces it with `/`). `strip_prefix = true`
    /// is this with `/`.
    ReplacePrefix(String),
}

/// A response the proxy makes itself.
#[derive(Debug, Clone)]
pub struct FixedResponse {
    /// The status code.
    pub status: StatusCode,
    /// The body, sent as is.
    pub body: Bytes,
    /// The `Content-Type` of the body.
    pub content_type: HeaderValue,
    /// The `Location` header, for redirects.
    pub location: Option<HeaderValue>,
}

/// A named pool of upstream servers (nginx `upstream NAME {}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The name routes use to refer to it.
    pub name: String,
    /// The servers, as `host:port` with a weight.
    pub servers: Vec<UpstreamServerConfig>,
    /// How a server is picked for each request.
    pub balance: Balance,
    /// What `balance = "hash"` hashes; `None` for the other balancers.
    pub hash_key: Option<HashKey>,
    /// Passive health: failed attempts that take a server out of rotation
    /// (nginx `max_fails`); 0 turns passive health off.
    pub max_fails: u32,
    /// Both the window in which `max_fails` failures must happen and how long
    /// the server then stays out (nginx `fail_timeout`).
    pub fail_timeout: Duration,
    /// When a failed attempt goes on to the next server, and which failures
    /// count against a server (nginx `proxy_next_upstream`).
    pub next_upstream: NextUpstream,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheck>,
    /// How often servers given by host name are looked up again in DNS.
    pub resolve_interval: Duration,
    /// How long to wait for a TCP connection to a server.
    pub connect_timeout: Duration,
    /// How long to wait for a server's response head once the request is
    /// sent (counted from the last move of its body, so a long upload that
    /// keeps moving is not cut off), and between two reads of the response body.
    pub read_timeout: Duration,
    /// Plain HTTP, or HTTPS (the servers were written `https://host:port`).
    pub tls: UpstreamTls,
}

/// One server of an upstream, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServerConfig {
    /// `host:port`, lower case; the host may be a name to look up in DNS.
    pub address: String,
    /// Its share relative to the pool's other servers (nginx `weight=`).
    pub weight: u32,
}

/// What `balance = "hash"` keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address: a client keeps its server (session affinity).
    ClientIp,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value, e.g. a session id.
    Cookie(String),
}

/// nginx's `proxy_next_upstream`: which failures of an attempt send the
/// request on to the next server, and how far it may go.
///
/// As in nginx, connection errors and timeouts always count against the
/// server for passive health; the `http_5xx` statuses count only when listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextUpstream {
    /// Try the next server when the connection fails or breaks (`error`).
    pub on_error: bool,
    /// ... when the server times out (`timeout`).
    pub on_timeout: bool,
    /// ... when the server answers with one of these statuses (`http_500`, ...).
    pub on_status: Vec<u16>,
    /// Also retry POST, PATCH and other non-idempotent requests that were
    /// already sent (`non_idempotent`); off by default, as they may have
    /// taken effect.
    pub non_idempotent: bool,
    /// At most this many attempts in all; 0 means one per server (nginx
    /// `proxy_next_upstream_tries`).
    pub tries: u32,
    /// Give up going on after this long since the first attempt (nginx
    /// `proxy_next_upstream_timeout`); `None` means no limit.
    pub timeout: Option<Duration>,
}

impl NextUpstream {
    /// Whether any failure at all sends a request on.
    pub fn enabled(&self) -> bool {
        self.on_error || self.on_timeout || !self.on_status.is_empty()
    }
}

/// Active health checks, HAProxy style: a GET to `path` on every server every
/// `interval`, independent of traffic. `fall` failures in a row take a server
/// out, `rise` successes in a row bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path to GET, e.g. `/health`.
    pub path: String,
    /// Time between two checks of a server.
    pub interval: Duration,
    /// How long a check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failures that mark a server down.
    pub fall: u32,
    /// Consecutive successes that mark a down server up again.
    pub rise: u32,
}

/// Whether the proxy speaks TLS to a pool's servers.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamTls {
    /// Plain HTTP: the usual case, the proxy terminated TLS already.
    Off,
    /// HTTPS, verifying the servers' certificates against the system's trusted
    /// roots, or against `tls_ca_file`'s certificates when it is set.
    On {
        /// The roots from `tls_ca_file`; `None` means the system's.
        roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    },
}

/// The load-balancing algorithm of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn, in proportion to the servers' weights.
    RoundRobin,
    /// The server with the fewest requests in progress, for its weight.
    LeastConn,
    /// The less busy of two servers picked at random.
    RandomTwo,
    /// By the hash of a request key (`hash_key`), consistently.
    Hash,
    /// The first server that is up, in config order.
    First,
}

impl Balance {
    const NAMES: &'static [&'static str] =
        &["round_robin", "least_conn", "random_two", "hash", "first"];

    fn from_name(name: &str) -> Option<Balance> {
        match name {
            "round_robin" => Some(Balance::RoundRobin),
            "least_conn" => Some(Balance::LeastConn),
            "random_two" => Some(Balance::RandomTwo),
            "hash" => Some(Balance::Hash),
            "first" => Some(Balance::First),
            _ => None,
        }
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_in(&text, &file, &base),
            Err(err) => Err(ConfigErrors(vec![Diagnostic {
                severity: Severity::Error,
                file,
                at: None,
                message: format!("cannot read the configuration file: {err}"),
                help: Some("check the path given to --config".into()),
            }])),
        }
    }

    /// Parses and validates configuration text; `file` names it in error
    /// messages. Relative file paths in it are relative to the working directory.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::parse_in(text, file, Path::new(""))
    }

    /// Like [`Config::parse`], with relative paths taken from `base`.
    /// `${NAME}` and `${NAME:-default}` in double-quoted strings are
    /// environment variables ([`crate::env_vars`]); errors then quote the
    /// lines with the values put in.
    pub fn parse_in(text: &str, file: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let expanded =
            crate::env_vars::expand(text, |name| std::env::var(name).ok()).map_err(|errors| {
                ConfigErrors(
                    errors
                        .into_iter()
                        .map(|e| Diagnostic::new(file, text, Some(e.span), e.message, Some(e.help)))
                        .collect(),
                )
            })?;
        let text = expanded.as_ref();
        let raw: RawConfig = toml::from_str(text).map_err(|err| {
            let span = err.span();
            let message = err.message().trim_end().to_owned();
            let help = help_for_parse_error(&message);
            ConfigErrors(vec![Diagnostic::new(file, text, span, message, help)])
        })?;
        let mut check = Validator {
            file,
            text,
            base,
            zone_names: Vec::new(),
            conn_zone_names: Vec::new(),
            cache_zone_names: Vec::new(),
            diagnostics: Vec::new(),
        };
        let config = check.config(raw);
        if check.diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(check.diagnostics))
        }
    }

    /// The port HTTPS is served on: the first TLS listener's.
    pub fn https_port(&self) -> Option<u16> {
        self.listeners.iter().find(|l| l.tls).map(|l| l.addr.port())
    }

    /// The upstream a route forwards to.
    pub fn upstream(&self, pass: &ProxyPass) -> &Upstream {
        &self.upstreams[pass.upstream]
    }
}

// ---------------------------------------------------------------------------
// Errors that point into the file.
// ---------------------------------------------------------------------------

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// One problem in a configuration file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// An error (the file is refused) or a warning (a lint: valid, but
    /// almost certainly not what was meant; see [`crate::lint`]).
    pub severity: Severity,
    /// The file, as given on the command line.
    pub file: String,
    /// Where in the file, when known.
    pub at: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// The configuration works, but does something its author almost
    /// certainly did not mean.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A place in the file: 1-based line and column, and the text of that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// How many characters to underline.
    pub width: usize,
    /// The whole line, for the excerpt.
    pub source_line: String,
}

impl Diagnostic {
    fn new(
        file: &str,
        text: &str,
        span: Option<Range<usize>>,
        message: String,
        help: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            at: span.map(|span| position(text, span)),
            message,
            help,
        }
    }

    /// A warning at `span` of `text` (see [`crate::lint`]).
    pub(crate) fn warning(
        file: &str,
        text: &str,
        span: Range<usize>,
        message: String,
        help: String,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(file, text, Some(span), message, Some(help))
        }
    }
}

/// `text` as the content of a TOML basic string (`"..."`, or `"""..."""`):
/// quotes, backslashes and control characters escaped.
pub(crate) fn basic_string_content(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    if !text
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn position(text: &str, span: Range<usize>) -> Position {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    let end = floor_char_boundary(text, span.end.clamp(start, line_end));
    Position {
        line: text[..start].matches('\n').count() + 1,
        column: text[line_start..start].chars().count() + 1,
        width: text[start..end].chars().count().max(1),
        source_line: source_line.to_owned(),
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

impl fmt::Display for Diagnostic {
    /// Rendered like a compiler error (or warning), so it reads the same as `cargo` output:
    ///
    /// ```text
    /// error: upstream `apii` is not defined
    ///   --> proxy.toml:14:12
    ///    |
    /// 14 | upstream = "apii"
    ///    |            ^^^^^^
    ///    = help: define [upstreams.apii], or use one of: api, whoami
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.message)?;
        match &self.at {
            Some(at) => {
                let gutter = at.line.to_string().len();
                let pad = " ".repeat(gutter);
                writeln!(f, "{pad}--> {}:{}:{}", self.file, at.line, at.column)?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {}", at.line, at.source_line)?;
                let indent: String = at
                    .source_line
                    .chars()
                    .take(at.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{pad} | {indent}{}", "^".repeat(at.width))?;
                if let Some(help) = &self.help {
                    writeln!(f, "{pad} = help: {help}")?;
                }
            }
            None => {
                writeln!(f, "  --> {}", self.file)?;
                if let Some(help) = &self.help {
                    writeln!(f, "  = help: {help}")?;
                }
            }
        }
        Ok(())
    }
}

fn help_for_parse_error(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some("remove the key or fix its spelling; the keys allowed here are listed above".into())
    } else if message.starts_with("missing field") {
        Some("add the key; see examples/ for a complete configuration".into())
    } else if message.starts_with("invalid type") {
        Some("strings need quotes, lists need [ ], tables need { } or a [header]".into())
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// The file format, as serde reads it.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<Spanned<i64>>,
    client_header_timeout: Option<Spanned<String>>,
    client_body_timeout: Option<Spanned<String>>,
    max_uri_size: Option<Spanned<String>>,
    max_header_size: Option<Spanned<String>>,
    max_request_head_size: Option<Spanned<String>>,
    max_headers: Option<Spanned<i64>>,
    shutdown_timeout: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    servers: Vec<Spanned<RawServer>>,
    #[serde(default)]
    upstreams: BTreeMap<Spanned<String>, RawUpstream>,
    local_ca_dir: Option<String>,
    #[serde(default)]
    limit_req_zones: BTreeMap<Spanned<String>, RawRateZone>,
    #[serde(default)]
    limit_conn_zones: BTreeMap<Spanned<String>, RawConnZone>,
    #[serde(default)]
    cache_zones: BTreeMap<Spanned<String>, RawCacheZone>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    trace_from: Option<Vec<Spanned<String>>>,
    request_id_header: Option<Spanned<String>>,
    access_log: Option<Spanned<RawAccessLog>>,
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    stream: Vec<Spanned<RawStream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    listen: Spanned<String>,
    upstream: Option<Spanned<String>>,
    sni: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    preread_timeout: Option<Spanned<String>>,
    tls: Option<Spanned<RawStreamTls>>,
    connect_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    limit_conn: Option<Spanned<RawLimitConn>>,
    proxy_protocol: Option<Spanned<String>>,
    accept_proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    auto_local: bool,
    names: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    addr: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCacheZone {
    max_size: Spanned<String>,
    max_entry_size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    zone: Spanned<String>,
    default_ttl: Option<Spanned<String>>,
    stale_while_revalidate: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnZone {
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimitConn {
    zone: Spanned<String>,
    max: Spanned<i64>,
    status: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateZone {
    key: Option<Spanned<String>>,
    rate: Spanned<String>,
    size: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimitReq {
    zone: Spanned<String>,
    #[serde(default)]
    burst: Option<Spanned<i64>>,
    #[serde(default)]
    nodelay: bool,
    delay: Option<Spanned<i64>>,
    status: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: Spanned<String>,
    #[serde(default)]
    tls: bool,
    accept_proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    server_names: Vec<Spanned<String>>,
    default: Option<Spanned<bool>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    tls: Option<Spanned<RawServerTls>>,
    redirect_https: Option<Spanned<bool>>,
    redirect_status: Option<Spanned<i64>>,
    hsts: Option<Spanned<String>>,
    limit_req: Option<Spanned<RawLimitReq>>,
    max_body_size: Option<Spanned<String>>,
    limit_conn: Option<Spanned<RawLimitConn>>,
    access: Option<Vec<Spanned<String>>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
    cors: Option<Spanned<RawCors>>,
    request_headers: Option<Spanned<RawHeaderRules>>,
    response_headers: Option<Spanned<RawHeaderRules>>,
    rewrite: Option<Vec<Spanned<RawRewrite>>>,
    compress: Option<Spanned<RawCompress>>,
    cache: Option<Spanned<RawCache>>,
    websocket_idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    #[serde(default)]
    realm: Option<String>,
    users: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    auto_local: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Spanned<String>,
    #[serde(default)]
    exact: bool,
    upstream: Option<Spanned<String>>,
    strip_prefix: Option<Spanned<bool>>,
    replace_prefix: Option<Spanned<String>>,
    preserve_host: Option<bool>,
    #[serde(rename = "return")]
    fixed: Option<Spanned<RawReturn>>,
    limit_req: Option<Spanned<RawLimitReq>>,
    max_body_size: Option<Spanned<String>>,
    limit_conn: Option<Spanned<RawLimitConn>>,
    access: Option<Vec<Spanned<String>>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
    cors: Option<Spanned<RawCors>>,
    request_headers: Option<Spanned<RawHeaderRules>>,
    response_headers: Option<Spanned<RawHeaderRules>>,
    rewrite: Option<Vec<Spanned<RawRewrite>>>,
    slash_redirect: Option<Spanned<bool>>,
    compress: Option<Spanned<RawCompress>>,
    cache: Option<Spanned<RawCache>>,
    websocket_idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRules {
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    #[serde(default)]
    set: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    add: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    from: Spanned<String>,
    to: Spanned<String>,
    redirect: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReturn {
    status: Spanned<i64>,
    #[serde(default)]
    body: String,
    content_type: Option<Spanned<String>>,
    location: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    servers: Spanned<Vec<Spanned<String>>>,
    balance: Option<Spanned<String>>,
    hash_key: Option<Spanned<String>>,
    max_fails: Option<Spanned<i64>>,
    fail_timeout: Option<Spanned<String>>,
    next_upstream: Option<Spanned<Vec<Spanned<String>>>>,
    next_upstream_tries: Option<Spanned<i64>>,
    next_upstream_timeout: Option<Spanned<String>>,
    health_check: Option<Spanned<RawHealthCheck>>,
    resolve_interval: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allow_origins: Vec<Spanned<String>>,
    #[serde(default)]
    allow_methods: Vec<Spanned<String>>,
    #[serde(default)]
    allow_headers: Vec<Spanned<String>>,
    #[serde(default)]
    expose_headers: Vec<Spanned<String>>,
    #[serde(default)]
    allow_credentials: bool,
    max_age: Option<Spanned<String>>,
}

/// `compress = true`, `compress = false` or `compress = { ... }`.
enum RawCompress {
    Switch(bool),
    Table(RawCompressTable),
}

impl<'de> Deserialize<'de> for RawCompress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawCompress;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or a table such as { algorithms = [\"br\", \"gzip\"] }")
            }
            fn visit_bool<E>(self, on: bool) -> Result<RawCompress, E> {
                Ok(RawCompress::Switch(on))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawCompress, A::Error> {
                RawCompressTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawCompress::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompressTable {
    algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    min_length: Option<Spanned<i64>>,
    types: Option<Spanned<Vec<Spanned<String>>>>,
    level: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    fall: Option<Spanned<i64>>,
    rise: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------
// Validation: raw file -> checked model, collecting every problem.
// ---------------------------------------------------------------------------

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    base: &'a Path,
    /// The `limit_req_zones` names, for `limit_req` to refer to.
    zone_names: Vec<String>,
    /// The `limit_conn_zones` names, for `limit_conn` to refer to.
    conn_zone_names: Vec<String>,
    /// The `cache_zones` names, for `cache` to refer to.
    cache_zone_names: Vec<String>,
    diagnostics: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let help = (!help.is_empty()).then_some(help);
        self.diagnostics.push(Diagnostic::new(
            self.file,
            self.text,
            Some(span),
            message.into(),
            help,
        ));
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let head_limits = self.head_limits(&raw);
        let workers = raw
            .workers
            .and_then(|w| match usize::try_from(*w.get_ref()) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.error(
                        w.span(),
                        "`workers` must be at least 1",
                        "leave it out to use one worker thread per CPU core",
                    );
                    None
                }
            });
        let client_header_timeout = self.duration(
            raw.client_header_timeout.as_ref(),
            DEFAULT_CLIENT_HEADER_TIMEOUT,
        );
        let client_body_timeout = self.duration(
            raw.client_body_timeout.as_ref(),
            DEFAULT_CLIENT_BODY_TIMEOUT,
        );
        // Unlike the other timeouts, zero means something: no keep-alive.
        let keepalive_timeout = match &raw.keepalive_timeout {
            Some(raw)
                if humantime::parse_duration(raw.get_ref().trim()).is_ok_and(|d| d.is_zero()) =>
            {
                Duration::ZERO
            }
            other => self.duration(other.as_ref(), DEFAULT_KEEPALIVE_TIMEOUT),
        };

        let listeners = self.listeners(&raw.listen, !raw.stream.is_empty());
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a, &listeners));
        let rate_zones: Vec<RateZone> = raw
            .limit_req_zones
            .iter()
            .map(|(name, zone)| self.rate_zone(name, zone))
            .collect();
        self.zone_names = rate_zones.iter().map(|z| z.name.clone()).collect();
        let conn_zones: Vec<ConnZone> = raw
            .limit_conn_zones
            .iter()
            .map(|(name, zone)| ConnZone {
                name: name.get_ref().clone(),
                key: self.limit_key(zone.key.as_ref()),
            })
            .collect();
        self.conn_zone_names = conn_zones.iter().map(|z| z.name.clone()).collect();
        let cache_zones: Vec<CacheZone> = raw
            .cache_zones
            .iter()
            .map(|(name, zone)| self.cache_zone(name, zone))
            .collect();
        self.cache_zone_names = cache_zones.iter().map(|z| z.name.clone()).collect();
        let tls_listener = raw.listen.iter().find(|l| l.tls).map(|l| l.addr.span());

        // Upstreams first: routes refer to them.
        let mut upstreams = Vec::with_capacity(raw.upstreams.len());
        for (name, upstream) in &raw.upstreams {
            upstreams.push(self.upstream(name, upstream));
        }

        // A config of `[[stream]]`s only serves no HTTP, and needs no server.
        if raw.servers.is_empty() && (!raw.listen.is_empty() || raw.stream.is_empty()) {
            self.error(
                0..0,
                "no [[servers]] defined: the proxy would answer nothing",
                "add a [[servers]] table with at least one [[servers.routes]]",
            );
        }
        let mut seen_names: HashSet<String> = HashSet::new();
        let mut servers = Vec::with_capacity(raw.servers.len());
        let mut default_server = None;
        for (index, server) in raw.servers.iter().enumerate() {
            if let Some(flag) = &server.get_ref().default
                && *flag.get_ref()
            {
                if default_server.is_some() {
                    self.error(
                        flag.span(),
                        "more than one server has `default = true`",
                        "only one server can answer unknown host names; remove the flag from all but one",
                    );
                } else {
                    default_server = Some(index);
                }
            }
            servers.push(self.server(server, &upstreams, &mut seen_names, tls_listener.is_some()));
        }
        if let Some(span) = tls_listener
            && !servers.iter().any(|s| s.tls.is_some())
        {
            self.error(
                span,
                "this TLS listener has no certificate to present",
                "give a server `tls = { auto_local = true }`, or `tls = { cert = \"app.pem\", key = \"app-key.pem\" }`",
            );
        }

        let streams = self.streams(&raw.stream, &upstreams, &listeners, &conn_zones);
        // A PROXY header is believed only from `trusted_proxies`: with none
        // listed, no peer could ever connect to such a listener.
        if raw.trusted_proxies.as_ref().is_none_or(|t| t.is_empty()) {
            let asking = raw
                .listen
                .iter()
                .filter_map(|l| l.accept_proxy_protocol.as_ref())
                .chain(
                    raw.stream
                        .iter()
                        .filter_map(|s| s.get_ref().accept_proxy_protocol.as_ref()),
                )
                .find(|a| *a.get_ref());
            if let Some(asking) = asking {
                self.error(
                    asking.span(),
                    "accept_proxy_protocol = true, but trusted_proxies is empty: no peer may send a PROXY header",
                    "list the proxies in front, e.g. trusted_proxies = [\"10.0.0.5\"]; a PROXY header from any other peer is refused",
                );
            }
        }

        Config {
            streams,
            workers,
            client_header_timeout,
            client_body_timeout,
            head_limits,
            shutdown_timeout: self.duration(
                raw.shutdown_timeout.as_ref(),
                crate::server::SHUTDOWN_GRACE,
            ),
            keepalive_timeout,
            listeners,
            servers,
            // Like nginx: without an explicit default, the first server is it.
            default_server: default_server.unwrap_or(0),
            upstreams,
            local_ca_dir: raw.local_ca_dir.map(|dir| self.base.join(dir)),
            admin,
            request_id_header: self.request_id_header(raw.request_id_header.as_ref()),
            access_log: self.access_log(raw.access_log.as_ref()),
            rate_zones,
            conn_zones,
            cache_zones,
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .flatten()
                .filter_map(|net| {
                    self.parsed(
                        net,
                        "list addresses or CIDR blocks, e.g. \"10.0.0.0/8\" or \"127.0.0.1\"",
                    )
                })
                .collect(),
            trace_from: raw
                .trace_from
                .iter()
                .flatten()
                .filter_map(|net| {
                    self.parsed(
                        net,
                        "list the client addresses that may ask for a trace, e.g. [\"127.0.0.1/32\", \"::1/128\"]",
                    )
                })
                .collect(),
        }
    }

    /// Loads `tls = { cert, key }` (paths relative to the config file), for
    /// a server or a stream; an error points at the file that failed.
    fn cert_files(
        &mut self,
        cert: &Spanned<String>,
        key: &Spanned<String>,
    ) -> Option<(PathBuf, PathBuf, crate::tls::ServerCert)> {
        let cert_path = self.base.join(cert.get_ref());
        let key_path = self.base.join(key.get_ref());
        match crate::tls::load_cert(&cert_path, &key_path) {
            Ok(loaded) => Some((cert_path, key_path, loaded)),
            Err(err) => {
                let span = match &err {
                    crate::tls::CertError::Read { path, .. }
                    | crate::tls::CertError::NoKey { path }
                    | crate::tls::CertError::Unusable { path, .. }
                        if *path == key_path =>
                    {
                        key.span()
                    }
                    _ => cert.span(),
                };
                self.error(
                    span,
                    err.to_string(),
                    "paths are relative to the config file; `proxy cert issue NAME` makes a certificate and key",
                );
                None
            }
        }
    }

    /// `admin = { addr = "127.0.0.1:9090" }`: an IP and a port of its own
    /// (not one of the `[[listen]]` addresses: metrics are not for clients).
    fn admin(&mut self, raw: &Spanned<RawAdmin>, listeners: &[Listener]) -> Option<Admin> {
        let Some(addr) = &raw.get_ref().addr else {
            let addr = SocketAddr::from_str(DEFAULT_ADMIN_ADDR).ok()?;
            return Some(Admin { addr });
        };
        let text = addr.get_ref().trim();
        let Ok(parsed) = SocketAddr::from_str(text) else {
            let help = match text.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() => format!(
                    "the admin address needs an IP, not a host name: e.g. \"127.0.0.1:{port}\" instead of \"{host}:{port}\""
                ),
                _ => format!(
                    "write it as IP:PORT, e.g. \"{DEFAULT_ADMIN_ADDR}\" (loopback: only this machine can read the metrics)"
                ),
            };
            self.error(
                addr.span(),
                format!("`{text}` is not an IP address and port"),
                help,
            );
            return None;
        };
        if parsed.port() != 0
            && listeners.iter().any(|l| {
                l.addr.port() == parsed.port()
                    && (l.addr.ip() == parsed.ip()
                        || l.addr.ip().is_unspecified()
                        || parsed.ip().is_unspecified())
            })
        {
            self.error(
                addr.span(),
                format!("the admin address `{parsed}` is also a [[listen]] address"),
                "the admin listener needs a port of its own, e.g. \"127.0.0.1:9090\": clients must not reach the metrics",
            );
            return None;
        }
        Some(Admin { addr: parsed })
    }

    fn listeners(&mut self, raw: &[RawListen], has_streams: bool) -> Vec<Listener> {
        if raw.is_empty() && !has_streams {
            self.error(
                0..0,
                "no [[listen]] address: the proxy would accept no connections",
                "add\n      [[listen]]\n      addr = \"127.0.0.1:8080\"",
            );
        }
        let mut seen = HashSet::new();
        let mut listeners = Vec::new();
        for listen in raw {
            let text = listen.addr.get_ref().trim();
            match SocketAddr::from_str(text) {
                Ok(addr) => {
                    if addr.port() != 0 && !seen.insert(addr) {
                        self.error(
                            listen.addr.span(),
                            format!("`{addr}` is listed twice"),
                            "each [[listen]] address can appear once",
                        );
                    }
                    listeners.push(Listener {
                        addr,
                        tls: listen.tls,
                        accept_proxy_protocol: listen
                            .accept_proxy_protocol
                            .as_ref()
                            .is_some_and(|a| *a.get_ref()),
                    });
                }
                Err(_) => {
                    let help = if let Some(port) = text.strip_prefix(':') {
                        format!(
                            "write an IP and a port, e.g. \"0.0.0.0:{port}\" for every interface"
                        )
                    } else if let Some((host, port)) = text.rsplit_once(':') {
                        format!(
                            "a listen address needs an IP, not a host name: e.g. \"127.0.0.1:{port}\" instead of \"{host}:{port}\""
                        )
                    } else {
                        "write it as IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"".into()
                    };
                    self.error(
                        listen.addr.span(),
                        format!("`{text}` is not a valid listen address"),
                        help,
                    );
                }
            }
        }
        listeners
    }

    /// The `[[stream]]` listeners: an address of their own, an upstream that
    /// exists (and, for `balance = "hash"`, hashes the client address: a TCP
    /// stream has no headers or cookies), timeouts, and a per-client limit.
    /// The index of the pool a stream names, with an error when there is
    /// none or when it cannot serve a stream.
    fn stream_pool(&mut self, name: &Spanned<String>, upstreams: &[Upstream]) -> Option<usize> {
        let text = name.get_ref();
        let Some(index) = upstreams.iter().position(|u| u.name == *text) else {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            let help = if known.is_empty() {
                format!(
                    "define it:\n      [upstreams.{text}]\n      servers = [\"127.0.0.1:5432\"]"
                )
            } else {
                format!(
                    "define [upstreams.{text}], or use one of: {}",
                    known.join(", ")
                )
            };
            self.error(
                name.span(),
                format!("upstream `{text}` is not defined"),
                help,
            );
            return None;
        };
        if upstreams.get(index).is_some_and(|pool| {
            matches!(
                pool.hash_key,
                Some(HashKey::Header(_)) | Some(HashKey::Cookie(_))
            )
        }) {
            self.error(
                name.span(),
                format!("upstream `{text}` hashes a header or cookie, which a TCP stream does not have"),
                "give the stream an upstream with hash_key = \"client_ip\" (or another balancer): at layer 4 the client address is all there is",
            );
        }
        Some(index)
    }

    /// A stream's `tls = { cert, key }` (loaded and checked now) or
    /// `tls = { auto_local = true, names = [...] }`.
    fn stream_tls(&mut self, raw: &Spanned<RawStreamTls>) -> Option<StreamTls> {
        let tls = raw.get_ref();
        match (&tls.cert, &tls.key, tls.auto_local) {
            (None, None, true) => {
                let names = match &tls.names {
                    None => vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
                    Some(names) if names.is_empty() => {
                        self.error(
                            raw.span(),
                            "`names` is empty: the certificate needs a name",
                            "e.g. names = [\"db.localhost\"], or leave it out for localhost and 127.0.0.1",
                        );
                        return None;
                    }
                    Some(names) => names
                        .iter()
                        .map(|n| n.get_ref().trim().to_owned())
                        .collect(),
                };
                Some(StreamTls::AutoLocal { names })
            }
            (Some(cert), Some(key), false) if tls.names.is_none() => {
                let (cert, key, loaded) = self.cert_files(cert, key)?;
                Some(StreamTls::Files { cert, key, loaded })
            }
            _ => {
                self.error(
                    raw.span(),
                    "a stream's tls needs either `cert` and `key`, or `auto_local = true` (with optional `names`)",
                    "e.g. tls = { cert = \"db.pem\", key = \"db-key.pem\" } or tls = { auto_local = true, names = [\"db.localhost\"] }",
                );
                None
            }
        }
    }

    fn streams(
        &mut self,
        raw: &[Spanned<RawStream>],
        upstreams: &[Upstream],
        listeners: &[Listener],
        conn_zones: &[ConnZone],
    ) -> Vec<Stream> {
        let mut seen: HashSet<SocketAddr> = listeners
            .iter()
            .map(|l| l.addr)
            .filter(|a| a.port() != 0)
            .collect();
        let mut streams = Vec::new();
        for spanned in raw {
            let r = spanned.get_ref();
            let text = r.listen.get_ref().trim();
            let addr = match SocketAddr::from_str(text) {
                Ok(addr) => {
                    if addr.port() != 0 && !seen.insert(addr) {
                        self.error(
                            r.listen.span(),
                            format!("`{addr}` is already a [[listen]] or [[stream]] address"),
                            "each address can be opened once: give this stream a port of its own",
                        );
                    }
                    Some(addr)
                }
                Err(_) => {
                    let help = match text.rsplit_once(':') {
                        Some((host, port)) if !host.is_empty() => format!(
                            "a stream listens on an IP, not a host name: e.g. \"127.0.0.1:{port}\" instead of \"{host}:{port}\""
                        ),
                        _ => "write it as IP:PORT, e.g. \"127.0.0.1:9000\" or \"0.0.0.0:5432\""
                            .into(),
                    };
                    self.error(
                        r.listen.span(),
                        format!("`{text}` is not a valid stream listen address"),
                        help,
                    );
                    None
                }
            };
            let upstream = r
                .upstream
                .as_ref()
                .and_then(|name| self.stream_pool(name, upstreams));
            let mut sni = Vec::new();
            let mut sni_ok = true;
            if let Some(map) = &r.sni {
                if map.get_ref().is_empty() {
                    self.error(
                        map.span(),
                        "`sni` names no server name",
                        "e.g. sni = { \"a.example\" = \"pool-a\", \"*.b.example\" = \"pool-b\" }, or leave it out",
                    );
                }
                for (name, pool) in map.get_ref() {
                    let pattern = self.server_name(name);
                    let index = self.stream_pool(pool, upstreams);
                    match (pattern, index) {
                        (Some(pattern), Some(index)) => sni.push((pattern, index)),
                        _ => sni_ok = false,
                    }
                }
            }
            if r.sni.is_none() && r.upstream.is_none() {
                self.error(
                    spanned.span(),
                    "a stream needs an `upstream` (or `sni` to pick one by name)",
                    "add upstream = \"NAME\", naming an [upstreams.NAME]",
                );
            }
            if let (Some(_), Some(tls)) = (&r.sni, &r.tls) {
                self.error(
                    tls.span(),
                    "a stream cannot both route by `sni` (TLS passthrough) and terminate `tls`",
                    "passthrough leaves the TLS to the upstream, which holds the key: keep `sni`, or drop it and keep `tls` to decrypt here",
                );
            }
            let preread_timeout =
                self.duration(r.preread_timeout.as_ref(), DEFAULT_PREREAD_TIMEOUT);
            if let (Some(timeout), None, None) = (&r.preread_timeout, &r.sni, &r.tls) {
                self.error(
                    timeout.span(),
                    "`preread_timeout` only applies with `sni` or `tls`",
                    "it bounds the wait for the ClientHello (or the TLS handshake); add `sni` or `tls`, or remove it",
                );
            }
            let tls = r.tls.as_ref().and_then(|t| self.stream_tls(t));
            let default_connect = upstream
                .or(sni.first().map(|(_, i)| *i))
                .and_then(|i| upstreams.get(i))
                .map_or(DEFAULT_CONNECT_TIMEOUT, |u| u.connect_timeout);
            let connect_timeout = self.duration(r.connect_timeout.as_ref(), default_connect);
            let idle_timeout = self.duration(r.idle_timeout.as_ref(), DEFAULT_STREAM_IDLE_TIMEOUT);
            let limit_conn = r
                .limit_conn
                .as_ref()
                .and_then(|l| self.stream_limit_conn(l, conn_zones));
            let proxy_protocol = r.proxy_protocol.as_ref().and_then(|v| {
                use crate::stream::proxy_protocol::Version;
                match v.get_ref().trim() {
                    "v1" => Some(Version::V1),
                    "v2" => Some(Version::V2),
                    other => {
                        self.error(
                            v.span(),
                            format!("`{other}` is not a PROXY protocol version"),
                            "use \"v1\" (a line of text) or \"v2\" (binary); leave it out to send no header",
                        );
                        None
                    }
                }
            });
            let complete = (r.upstream.is_none() || upstream.is_some())
                && sni_ok
                && (r.tls.is_none() || tls.is_some())
                && (upstream.is_some() || !sni.is_empty());
            if let (Some(addr), true) = (addr, complete) {
                streams.push(Stream {
                    addr,
                    upstream,
                    sni,
                    preread_timeout,
                    tls,
                    connect_timeout,
                    idle_timeout,
                    limit_conn,
                    proxy_protocol,
                    accept_proxy_protocol: r
                        .accept_proxy_protocol
                        .as_ref()
                        .is_some_and(|a| *a.get_ref()),
                });
            }
        }
        streams
    }

    /// `limit_conn = { zone, max }` on a stream: the zone must count by
    /// client address (or `route`: one count for the whole stream), and
    /// there is no status to answer with, the connection is just closed.
    fn stream_limit_conn(
        &mut self,
        raw: &Spanned<RawLimitConn>,
        conn_zones: &[ConnZone],
    ) -> Option<StreamLimitConn> {
        if let Some(status) = &raw.get_ref().status {
            self.error(
                status.span(),
                "a stream has no status to answer with",
                "remove `status`: at layer 4 a refused connection is closed at once, no HTTP answer is sent",
            );
        }
        let limit = self.limit_conn(raw)?;
        if let Some(zone) = conn_zones.get(limit.zone)
            && matches!(zone.key, LimitKey::Header(_))
        {
            self.error(
                raw.get_ref().zone.span(),
                format!(
                    "connection zone `{}` counts by a header, which a TCP stream does not have",
                    zone.name
                ),
                "use a zone with key = \"client_ip\" for streams",
            );
            return None;
        }
        Some(StreamLimitConn {
            zone: limit.zone,
            max: limit.max,
        })
    }

    fn upstream(&mut self, name: &Spanned<String>, raw: &RawUpstream) -> Upstream {
        if raw.servers.get_ref().is_empty() {
            self.error(
                raw.servers.span(),
                format!("upstream `{}` has no servers", name.get_ref()),
                "list at least one, e.g. servers = [\"127.0.0.1:8000\"]",
            );
        }
        let mut servers = Vec::new();
        let mut https: Option<bool> = None;
        for server in raw.servers.get_ref() {
            let Some((is_https, address, weight)) = self.upstream_server(server) else {
                continue;
            };
            if https.is_some_and(|first| first != is_https) {
                self.error(
                    server.span(),
                    "a pool's servers must all use the same scheme",
                    "make them all http:// (the default) or all https://, or split them into two upstreams",
                );
            }
            https.get_or_insert(is_https);
            servers.push(UpstreamServerConfig { address, weight });
        }
        let tls = self.upstream_tls(https.unwrap_or(false), raw.tls_ca_file.as_ref());
        let balance = match &raw.balance {
            None => Balance::RoundRobin,
            Some(text) => Balance::from_name(text.get_ref()).unwrap_or_else(|| {
                self.error(
                    text.span(),
                    format!("unknown balancer `{}`", text.get_ref()),
                    format!("use one of: {}", Balance::NAMES.join(", ")),
                );
                Balance::RoundRobin
            }),
        };
        let hash_key = self.hash_key(balance, raw.hash_key.as_ref());
        let next_upstream = self.next_upstream(raw);
        let health_check = raw.health_check.as_ref().map(|h| self.health_check(h));
        Upstream {
            name: name.get_ref().clone(),
            servers,
            balance,
            hash_key,
            max_fails: self.count(raw.max_fails.as_ref(), "max_fails", 1, 0),
            fail_timeout: self.duration(raw.fail_timeout.as_ref(), DEFAULT_FAIL_TIMEOUT),
            next_upstream,
            health_check,
            resolve_interval: self
                .duration(raw.resolve_interval.as_ref(), DEFAULT_RESOLVE_INTERVAL),
            connect_timeout: self.duration(raw.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT),
            read_timeout: self.duration(raw.read_timeout.as_ref(), DEFAULT_READ_TIMEOUT),
            tls,
        }
    }

    /// TLS to the pool's servers: off, or on with the system's roots or those
    /// of `tls_ca_file` (read and checked now).
    fn upstream_tls(&mut self, https: bool, ca_file: Option<&Spanned<String>>) -> UpstreamTls {
        let Some(ca_file) = ca_file else {
            return if https {
                UpstreamTls::On { roots: None }
            } else {
                UpstreamTls::Off
            };
        };
        if !https {
            self.error(
                ca_file.span(),
                "`tls_ca_file` is for https:// servers, and this pool's are plain HTTP",
                "write the servers as \"https://host:port\", or remove tls_ca_file",
            );
            return UpstreamTls::Off;
        }
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let path = self.base.join(ca_file.get_ref());
        let roots = std::fs::read(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|pem| {
                CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .and_then(|roots| {
                if roots.is_empty() {
                    Err(format!("{} holds no PEM certificate", path.display()))
                } else {
                    Ok(roots)
                }
            });
        match roots {
            Ok(roots) => UpstreamTls::On { roots: Some(roots) },
            Err(message) => {
                self.error(
                    ca_file.span(),
                    message,
                    "give the CA certificate (PEM) that signed the upstream's certificate; paths are relative to the config file",
                );
                UpstreamTls::On { roots: None }
            }
        }
    }

    /// An upstream server is `host:port`, optionally after `http://` or
    /// `https://` (then the port may be left out: 80 or 443). No path: the
    /// route decides the path. Returns whether it is HTTPS, and `host:port`.
    /// `"host:port"`, optionally followed by `weight=N` (nginx's `server`
    /// line): the scheme, the address and the weight.
    fn upstream_server(&mut self, server: &Spanned<String>) -> Option<(bool, String, u32)> {
        let mut words = server.get_ref().split_whitespace();
        let address = words.next().unwrap_or("");
        let mut weight = 1;
        for option in words {
            match option.strip_prefix("weight=").map(str::parse::<u32>) {
                Some(Ok(w @ 1..=1000)) => weight = w,
                _ => {
                    self.error(
                        server.span(),
                        format!("`{option}` is not a server option"),
                        "the only option is a weight from 1 to 1000, e.g. \"127.0.0.1:8000 weight=2\"",
                    );
                    return None;
                }
            }
        }
        let (https, address) = self.upstream_address(server.span(), address)?;
        Some((https, address, weight))
    }

    fn upstream_address(&mut self, span: Range<usize>, text: &str) -> Option<(bool, String)> {
        let server = Spanned::new(span, text);
        let (https, rest) = match text.split_once("://") {
            None => (false, text),
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some((scheme, _)) => {
                self.error(
                    server.span(),
                    format!("`{scheme}://` is not a scheme an upstream can use"),
                    "write host:port for plain HTTP, or https://host:port for TLS to the upstream",
                );
                return None;
            }
        };
        if let Some((authority, path)) = rest.split_once('/') {
            self.error(
                server.span(),
                format!("upstream server `{text}` has a path (`/{path}`)"),
                format!(
                    "write only the address, \"{authority}\"; to change paths use the route's strip_prefix or replace_prefix"
                ),
            );
            return None;
        }
        let authority = Authority::from_str(rest)
            .ok()
            .filter(|a| !a.as_str().contains('@') && !a.host().is_empty());
        let port = match &authority {
            Some(a) => {
                a.port_u16()
                    .or(text.contains("://").then_some(if https { 443 } else { 80 }))
            }
            None => None,
        };
        let (Some(authority), Some(port @ 1..)) = (authority, port) else {
            self.error(
                server.span(),
                format!("`{text}` is not a valid upstream server"),
                "write it as host:port with a port from 1 to 65535, e.g. \"127.0.0.1:8000\", \"api:8000\" or \"https://api.example.com\"",
            );
            return None;
        };
        Some((
            https,
            format!("{}:{port}", authority.host()).to_ascii_lowercase(),
        ))
    }

    /// A whole number of at least `min`, or `default` when left out.
    fn count(&mut self, raw: Option<&Spanned<i64>>, what: &str, default: u32, min: u32) -> u32 {
        let Some(raw) = raw else { return default };
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if n >= min => n,
            _ => {
                self.error(
                    raw.span(),
                    format!("`{what}` must be a whole number of at least {min}"),
                    format!("leave it out for the default ({default})"),
                );
                default
            }
        }
    }

    /// `hash_key`: what `balance = "hash"` hashes.
    fn hash_key(&mut self, balance: Balance, raw: Option<&Spanned<String>>) -> Option<HashKey> {
        let Some(raw) = raw else {
            return (balance == Balance::Hash).then_some(HashKey::ClientIp);
        };
        if balance != Balance::Hash {
            self.error(
                raw.span(),
                "`hash_key` is only read by balance = \"hash\"",
                "add balance = \"hash\", or remove hash_key",
            );
            return None;
        }
        let text = raw.get_ref().trim();
        if text == "client_ip" {
            return Some(HashKey::ClientIp);
        }
        if let Some(header) = text
            .strip_prefix("header:")
            .and_then(|h| http::HeaderName::from_bytes(h.trim().as_bytes()).ok())
        {
            return Some(HashKey::Header(header));
        }
        if let Some(cookie) = text.strip_prefix("cookie:").map(str::trim).filter(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';')
        }) {
            return Some(HashKey::Cookie(cookie.to_owned()));
        }
        self.error(
            raw.span(),
            format!("`{text}` is not a hash key"),
            "use \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
        );
        Some(HashKey::ClientIp)
    }

    /// `next_upstream`, `next_upstream_tries`, `next_upstream_timeout`.
    fn next_upstream(&mut self, raw: &RawUpstream) -> NextUpstream {
        let mut next = NextUpstream {
            on_error: true,
            on_timeout: true,
            on_status: Vec::new(),
            non_idempotent: false,
            tries: self.count(
                raw.next_upstream_tries.as_ref(),
                "next_upstream_tries",
                0,
                0,
            ),
            timeout: raw
                .next_upstream_timeout
                .as_ref()
                .map(|t| self.duration(Some(t), Duration::from_secs(10))),
        };
        if let Some(list) = &raw.next_upstream {
            next.on_error = false;
            next.on_timeout = false;
            for item in list.get_ref() {
                match item.get_ref().trim() {
                    "error" => next.on_error = true,
                    "timeout" => next.on_timeout = true,
                    "non_idempotent" => next.non_idempotent = true,
                    "off" if list.get_ref().len() == 1 => {}
                    other => match other
                        .strip_prefix("http_")
                        .and_then(|code| code.parse::<u16>().ok())
                        .filter(|code| [429, 500, 502, 503, 504].contains(code))
                    {
                        Some(code) => next.on_status.push(code),
                        None => self.error(
                            item.span(),
                            format!("`{other}` is not a next_upstream case"),
                            "use any of \"error\", \"timeout\", \"http_500\", \"http_502\", \"http_503\", \"http_504\", \"http_429\", \"non_idempotent\"; or [\"off\"] alone",
                        ),
                    },
                }
            }
        }
        next
    }

    /// `[upstreams.NAME.health_check]`.
    fn health_check(&mut self, raw: &Spanned<RawHealthCheck>) -> HealthCheck {
        let r = raw.get_ref();
        let (interval, timeout, fall, rise) = DEFAULT_HEALTH_CHECK;
        let path = match &r.path {
            None => "/".to_owned(),
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
            Some(p) => {
                self.error(
                    p.span(),
                    format!("`{}` is not a path", p.get_ref()),
                    "write a path starting with /, e.g. \"/health\"",
                );
                "/".to_owned()
            }
        };
        HealthCheck {
            path,
            interval: self.duration(r.interval.as_ref(), interval),
            timeout: self.duration(r.timeout.as_ref(), timeout),
            fall: self.count(r.fall.as_ref(), "fall", fall, 1),
            rise: self.count(r.rise.as_ref(), "rise", rise, 1),
        }
    }

    fn duration(&mut self, raw: Option<&Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.get_ref().trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(
                    raw.span(),
                    "a timeout of zero would fail every request",
                    format!(
                        "leave it out for the default ({})",
                        humantime::format_duration(default)
                    ),
                );
                default
            }
            Err(err) => {
                self.error(
                    raw.span(),
                    format!("`{}` is not a duration: {err}", raw.get_ref()),
                    "write a number and a unit, e.g. \"500ms\", \"5s\" or \"2m\"",
                );
                default
            }
        }
    }

    fn server(
        &mut self,
        raw: &Spanned<RawServer>,
        upstreams: &[Upstream],
        seen_names: &mut HashSet<String>,
        has_tls_listener: bool,
    ) -> Server {
        let tls = raw
            .get_ref()
            .tls
            .as_ref()
            .and_then(|tls| self.server_tls(tls, &raw.get_ref().server_names));
        let https = self.https_options(raw.get_ref(), has_tls_listener);
        let limit_req = raw
            .get_ref()
            .limit_req
            .as_ref()
            .and_then(|l| self.limit_req(l));
        let mut names = Vec::new();
        for name in &raw.get_ref().server_names {
            let Some(parsed) = self.server_name(name) else {
                continue;
            };
            if !seen_names.insert(parsed.to_string()) {
                self.error(
                    name.span(),
                    format!("server name `{parsed}` is used by two servers"),
                    "a host name can belong to one server only; remove it from one of them",
                );
            }
            names.push(parsed);
        }
        if raw.get_ref().routes.is_empty() {
            self.error(
                raw.span(),
                "this server has no routes: every request to it would get 404",
                "add a [[servers.routes]] with a path and an upstream or a return",
            );
        }
        let mut seen_paths = HashSet::new();
        let mut routes = Vec::new();
        for route in &raw.get_ref().routes {
            let r = route.get_ref();
            if !seen_paths.insert((r.path.get_ref().clone(), r.exact)) {
                self.error(
                    r.path.span(),
                    format!(
                        "two routes in this server have the path `{}`",
                        r.path.get_ref()
                    ),
                    "merge them, or make one `exact = true`",
                );
            }
            if let Some(route) = self.route(route, upstreams) {
                routes.push(route);
            }
        }
        Server {
            names,
            has_slash_redirects: routes.iter().any(|r| r.slash_redirect),
            routes,
            tls,
            redirect_https: https.0,
            hsts: https.1,
            limit_req,
            access: self
                .access(raw.get_ref().access.as_ref())
                .unwrap_or_default(),
            basic_auth: raw
                .get_ref()
                .basic_auth
                .as_ref()
                .and_then(|a| self.basic_auth(a)),
            cors: raw.get_ref().cors.as_ref().and_then(|c| self.cors(c)),
            request_headers: self.header_rules(raw.get_ref().request_headers.as_ref(), true),
            response_headers: self.header_rules(raw.get_ref().response_headers.as_ref(), false),
            rewrite: self.rewrites(raw.get_ref().rewrite.as_ref()),
            compress: raw.get_ref().compress.as_ref().map(|c| self.compress(c)),
            cache: raw.get_ref().cache.as_ref().and_then(|c| self.cache(c)),
            websocket_idle_timeout: self
                .websocket_idle_timeout(raw.get_ref().websocket_idle_timeout.as_ref()),
            max_body_size: self.max_body_size(raw.get_ref().max_body_size.as_ref()),
            limit_conn: raw
                .get_ref()
                .limit_conn
                .as_ref()
                .and_then(|l| self.limit_conn(l)),
        }
    }

    /// `[limit_req_zones.NAME]`: key, rate (`"10r/s"`, `"30r/m"`) and size
    /// (`"10m"`: bytes, with k or m).
    fn rate_zone(&mut self, name: &Spanned<String>, raw: &RawRateZone) -> RateZone {
        let key = self.limit_key(raw.key.as_ref());
        let rate_text = raw.rate.get_ref().trim();
        let rate_milli = rate_text
            .strip_suffix("r/s")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(|n| n * 1000)
            .or_else(|| {
                rate_text
                    .strip_suffix("r/m")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .map(|n| n * 1000 / 60)
            })
            .filter(|r| *r > 0);
        let rate_milli = rate_milli.unwrap_or_else(|| {
            self.error(
                raw.rate.span(),
                format!("`{rate_text}` is not a rate"),
                "write requests per second or per minute, e.g. \"1r/s\", \"10r/s\" or \"30r/m\"",
            );
            1000
        });
        let size = match &raw.size {
            None => 10 * 1024 * 1024,
            Some(size) => self
                .size(size)
                .filter(|bytes| *bytes >= crate::limit::rate::BYTES_PER_KEY)
                .unwrap_or_else(|| {
                    self.error(
                        size.span(),
                        format!("`{}` is not a zone size", size.get_ref()),
                        "write bytes with k or m, e.g. \"10m\" (about 80,000 client addresses) or \"64k\"",
                    );
                    10 * 1024 * 1024
                }),
        };
        RateZone {
            name: name.get_ref().clone(),
            key,
            rate_milli,
            capacity: size / crate::limit::rate::BYTES_PER_KEY,
        }
    }

    /// A value parsed with `FromStr`, or an error at its place with `help`.
    fn parsed<T: FromStr<Err = String>>(&mut self, raw: &Spanned<String>, help: &str) -> Option<T> {
        match raw.get_ref().parse::<T>() {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(raw.span(), message, help);
                None
            }
        }
    }

    /// `access_log = { path = "stdout" | "stderr" | "off" | "FILE", format =
    /// "combined" | "json" }`; a relative file is relative to the config file.
    fn access_log(
        &mut self,
        raw: Option<&Spanned<RawAccessLog>>,
    ) -> crate::access_log::AccessLogSettings {
        use crate::access_log::{AccessLogSettings, LogFormat, LogTarget};
        let Some(raw) = raw else {
            return AccessLogSettings::default();
        };
        let raw = raw.get_ref();
        let target = match raw.path.as_ref().map(|p| (p, p.get_ref().trim())) {
            None | Some((_, "stdout")) => LogTarget::Stdout,
            Some((_, "stderr")) => LogTarget::Stderr,
            Some((_, "off")) => LogTarget::Off,
            Some((span, "")) => {
                self.error(
                    span.span(),
                    "`path` is empty",
                    "write \"stdout\", \"stderr\", \"off\" or a file such as \"access.log\"",
                );
                LogTarget::Stdout
            }
            Some((_, file)) => LogTarget::File(self.base.join(file)),
        };
        let format = match raw.format.as_ref() {
            None => LogFormat::Combined,
            Some(f) => match f.get_ref().trim() {
                "combined" => LogFormat::Combined,
                "json" => LogFormat::Json,
                other => {
                    self.error(
                        f.span(),
                        format!("`{other}` is not an access-log format"),
                        "use \"combined\" (nginx's) or \"json\" (one object per line)",
                    );
                    LogFormat::Combined
                }
            },
        };
        AccessLogSettings { target, format }
    }

    /// `request_id_header = "X-Correlation-Id"`: a valid header name that the
    /// proxy does not manage itself.
    fn request_id_header(&mut self, raw: Option<&Spanned<String>>) -> http::HeaderName {
        let default = http::HeaderName::from_static(crate::request_id::DEFAULT_HEADER);
        let Some(raw) = raw else {
            return default;
        };
        match http::HeaderName::from_bytes(raw.get_ref().trim().as_bytes()) {
            Ok(name) if !crate::header_rules::is_protected(&name) && name != http::header::HOST => {
                name
            }
            _ => {
                self.error(
                    raw.span(),
                    format!("`{}` cannot carry the request id", raw.get_ref()),
                    "use a header name of letters, digits and dashes, such as \"X-Request-Id\"",
                );
                default
            }
        }
    }

    /// `request_headers = { set = {...}, add = {...}, remove = [...] }` (and
    /// `response_headers`): header names checked, values parsed as templates.
    fn header_rules(
        &mut self,
        raw: Option<&Spanned<RawHeaderRules>>,
        request: bool,
    ) -> Option<HeaderRules> {
        let raw = raw?.get_ref();
        let mut rules = HeaderRules::default();
        let direction = if request { "request" } else { "response" };
        let name = |v: &mut Self, raw: &Spanned<String>| -> Option<http::HeaderName> {
            let Ok(name) = http::HeaderName::from_bytes(raw.get_ref().trim().as_bytes()) else {
                v.error(
                    raw.span(),
                    format!("`{}` is not a header name", raw.get_ref()),
                    "header names are letters, digits and `-`, such as \"X-Env\"",
                );
                return None;
            };
            if crate::header_rules::is_protected(&name) {
                v.error(
                    raw.span(),
                    format!("`{name}` belongs to the connection, and {direction}_headers may not change it"),
                    "remove this rule: the proxy sets the message's framing and connection headers itself",
                );
                return None;
            }
            Some(name)
        };
        for raw_name in &raw.remove {
            if let Some(header) = name(self, raw_name) {
                rules.remove.push(header);
            }
        }
        for (list, out) in [(&raw.set, &mut rules.set), (&raw.add, &mut rules.add)] {
            for (raw_name, raw_value) in list {
                let header = name(self, raw_name);
                match Template::parse(raw_value.get_ref()) {
                    Ok(template) => {
                        if let Some(header) = header {
                            out.push((header, template));
                        }
                    }
                    Err(err) => self.error(raw_value.span(), err.message, err.help),
                }
            }
        }
        Some(rules)
    }

    /// `rewrite = [{ from = "^/old/(.*)$", to = "/new/$1", redirect = 301 }]`.
    fn rewrites(&mut self, raw: Option<&Vec<Spanned<RawRewrite>>>) -> Vec<RewriteRule> {
        let mut rules = Vec::new();
        for raw in raw.into_iter().flatten() {
            let r = raw.get_ref();
            let from = match regex::Regex::new(r.from.get_ref()) {
                Ok(from) => from,
                Err(err) => {
                    let detail = err.to_string();
                    self.error(
                        r.from.span(),
                        format!(
                            "`from` is not a valid regular expression: {}",
                            detail.lines().last().unwrap_or("").trim()
                        ),
                        "the syntax is Rust's regex crate's (like nginx's PCRE without look-around); in TOML, write a backslash as \\\\ or use '...' quotes",
                    );
                    continue;
                }
            };
            if let Err((message, help)) = crate::rewrite::check_references(&from, r.to.get_ref()) {
                self.error(r.to.span(), message, help);
                continue;
            }
            let redirect = match &r.redirect {
                None => None,
                Some(status) => match *status.get_ref() {
                    code @ (301 | 302 | 303 | 307 | 308) => {
                        StatusCode::from_u16(u16::try_from(code).unwrap_or(302)).ok()
                    }
                    other => {
                        self.error(
                            status.span(),
                            format!("`redirect = {other}` is not a redirect status"),
                            "use 301 or 308 (permanent), 302, 303 or 307 (temporary)",
                        );
                        continue;
                    }
                },
            };
            let to = r.to.get_ref();
            let absolute = to.starts_with("http://") || to.starts_with("https://");
            if !(to.starts_with('/') || to.starts_with('$') || (absolute && redirect.is_some())) {
                self.error(
                    r.to.span(),
                    format!("`to = \"{to}\"` must be a path starting with `/`"),
                    if absolute {
                        "a rule that sends the client to another site needs `redirect = 301` (or 302, ...)"
                    } else {
                        "write the new path, such as \"/new/$1\""
                    },
                );
                continue;
            }
            rules.push(RewriteRule {
                from,
                to: to.clone(),
                redirect,
            });
        }
        rules
    }

    /// `cors = { allow_origins = ["http://app.localhost:8080"], ... }`.
    fn cors(&mut self, raw: &Spanned<RawCors>) -> Option<crate::cors::Cors> {
        let r = raw.get_ref();
        let mut origins = Some(Vec::new());
        for origin in &r.allow_origins {
            let text = origin.get_ref().trim();
            if text == "*" {
                origins = None;
                continue;
            }
            let valid = text
                .parse::<http::Uri>()
                .ok()
                .filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https"))
                        && u.host().is_some()
                        && !text
                            .trim_start_matches("http://")
                            .trim_start_matches("https://")
                            .contains('/')
                })
                .and_then(|_| HeaderValue::from_str(text).ok());
            match (valid, origins.as_mut()) {
                (Some(value), Some(list)) => list.push(value),
                (Some(_), None) => {}
                (None, _) => self.error(
                    origin.span(),
                    format!("`{text}` is not an origin"),
                    "an origin is scheme://host[:port] with no path, e.g. \"http://app.localhost:8080\", or \"*\" for any",
                ),
            }
        }
        if r.allow_origins.is_empty() {
            self.error(
                raw.span(),
                "`cors` allows no origin",
                "list them: allow_origins = [\"http://app.localhost:8080\"], or [\"*\"] for any",
            );
        }
        if origins.is_none() && r.allow_credentials {
            self.error(
                raw.span(),
                "`allow_credentials` cannot go with allow_origins = [\"*\"]",
                "browsers refuse credentials for any origin: list the origins that may send cookies",
            );
        }
        let methods = r
            .allow_methods
            .iter()
            .filter_map(|m| {
                match Method::from_bytes(m.get_ref().trim().to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        self.error(
                            m.span(),
                            format!("`{}` is not a method", m.get_ref()),
                            "e.g. \"PUT\" or \"DELETE\"",
                        );
                        None
                    }
                }
            })
            .collect();
        let mut names = |list: &[Spanned<String>]| -> Vec<http::HeaderName> {
            list.iter()
                .filter_map(
                    |h| match http::HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
                        Ok(name) => Some(name),
                        Err(_) => {
                            self.error(
                                h.span(),
                                format!("`{}` is not a header name", h.get_ref()),
                                "e.g. \"content-type\"",
                            );
                            None
                        }
                    },
                )
                .collect()
        };
        let headers = names(&r.allow_headers);
        let expose = names(&r.expose_headers);
        Some(crate::cors::Cors {
            origins,
            methods,
            headers,
            expose,
            credentials: r.allow_credentials,
            max_age: r
                .max_age
                .as_ref()
                .map(|m| self.duration(Some(m), Duration::from_secs(600))),
        })
    }

    /// `compress = true`, `false`, or `{ algorithms = ["br", "gzip"],
    /// min_length = 256, types = ["text/html"], level = "default" }`; what
    /// the table leaves out has the defaults of `compress = true`.
    fn compress(&mut self, raw: &Spanned<RawCompress>) -> crate::compress::Compress {
        use crate::compress::{Algorithm, Compress, Level};
        let table = match raw.get_ref() {
            RawCompress::Switch(true) => return Compress::default(),
            RawCompress::Switch(false) => return Compress::off(),
            RawCompress::Table(table) => table,
        };
        let mut compress = Compress::default();
        let names = || {
            Algorithm::ALL
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(list) = &table.algorithms {
            compress.algorithms.clear();
            for name in list.get_ref() {
                match Algorithm::from_name(name.get_ref()) {
                    Some(a) if compress.algorithms.contains(&a) => self.error(
                        name.span(),
                        format!("`{}` is listed twice", name.get_ref()),
                        "list each algorithm once, the most preferred first",
                    ),
                    Some(a) => compress.algorithms.push(a),
                    None => self.error(
                        name.span(),
                        format!(
                            "`{}` is not a compression algorithm the proxy has",
                            name.get_ref()
                        ),
                        format!("choose among {}, the most preferred first", names()),
                    ),
                }
            }
            if list.get_ref().is_empty() {
                self.error(
                    list.span(),
                    "`algorithms` lists no algorithm",
                    format!(
                        "list some of {}, or write compress = false to turn compression off",
                        names()
                    ),
                );
            }
        }
        if let Some(min) = &table.min_length {
            match u64::try_from(*min.get_ref()) {
                Ok(n) => compress.min_length = n,
                Err(_) => self.error(
                    min.span(),
                    format!("`{}` is not a length", min.get_ref()),
                    "write a number of bytes, 0 or more, e.g. 256",
                ),
            }
        }
        if let Some(list) = &table.types {
            compress.types.clear();
            for media in list.get_ref() {
                let text = media.get_ref().trim().to_ascii_lowercase();
                let valid = text.split_once('/').is_some_and(|(kind, sub)| {
                    let token = |s: &str| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                    };
                    token(kind) && (sub == "*" || token(sub))
                });
                if valid {
                    compress.types.push(text);
                } else {
                    self.error(
                        media.span(),
                        format!("`{}` is not a media type", media.get_ref()),
                        "write type/subtype, e.g. \"text/html\" or \"application/json\", or type/* for a whole type, e.g. \"text/*\"",
                    );
                }
            }
            if list.get_ref().is_empty() {
                self.error(
                    list.span(),
                    "`types` lists no media type: nothing would be compressed",
                    "list some, e.g. [\"text/*\", \"application/json\"], or write compress = false",
                );
            }
        }
        if let Some(level) = &table.level {
            match Level::from_name(level.get_ref()) {
                Some(l) => compress.level = l,
                None => self.error(
                    level.span(),
                    format!("`{}` is not a compression level", level.get_ref()),
                    "choose \"fastest\", \"default\" or \"best\"",
                ),
            }
        }
        compress
    }

    /// `basic_auth = { realm = "...", users = { alice = "$2b$12$..." } }`.
    fn basic_auth(&mut self, raw: &Spanned<RawBasicAuth>) -> Option<crate::access::BasicAuth> {
        let r = raw.get_ref();
        if r.users.is_empty() {
            self.error(
                raw.span(),
                "`basic_auth` lists no users: nobody could get in",
                "add users = { NAME = \"BCRYPT HASH\" }; `proxy hash-password` makes a hash",
            );
            return None;
        }
        let mut users = Vec::new();
        for (name, hash) in &r.users {
            if crate::access::is_bcrypt_hash(hash.get_ref()) {
                users.push((name.clone(), hash.get_ref().clone()));
            } else {
                self.error(
                    hash.span(),
                    format!("the password of `{name}` is not a bcrypt hash"),
                    "never write a password in the config: `proxy hash-password` prints a hash to put here",
                );
            }
        }
        Some(crate::access::BasicAuth {
            realm: r.realm.clone().unwrap_or_else(|| "restricted".into()),
            users,
        })
    }

    /// `access = ["allow 10.0.0.0/8", "deny all"]`.
    fn access(
        &mut self,
        raw: Option<&Vec<Spanned<String>>>,
    ) -> Option<Vec<crate::access::AccessRule>> {
        let rules = raw?
            .iter()
            .filter_map(|rule| {
                self.parsed(rule, "write \"allow NETWORK\" or \"deny NETWORK\"; NETWORK is an address, a CIDR block or all")
            })
            .collect();
        Some(rules)
    }

    /// A zone's `key`: `"client_ip"` (the default), `"header:NAME"` or `"route"`.
    fn limit_key(&mut self, raw: Option<&Spanned<String>>) -> LimitKey {
        match raw.map(|k| (k, k.get_ref().trim())) {
            None | Some((_, "client_ip")) => LimitKey::ClientIp,
            Some((_, "route")) => LimitKey::Route,
            Some((spanned, text)) => match text
                .strip_prefix("header:")
                .and_then(|h| http::HeaderName::from_bytes(h.trim().as_bytes()).ok())
            {
                Some(header) => LimitKey::Header(header),
                None => {
                    self.error(
                        spanned.span(),
                        format!("`{text}` is not a limit key"),
                        "use \"client_ip\" (nginx $binary_remote_addr), \"header:NAME\" or \"route\"",
                    );
                    LimitKey::ClientIp
                }
            },
        }
    }

    /// `limit_conn = { zone, max, status }` on a server or route.
    fn limit_conn(&mut self, raw: &Spanned<RawLimitConn>) -> Option<LimitConn> {
        let r = raw.get_ref();
        let Some(zone) = self
            .conn_zone_names
            .iter()
            .position(|z| z == r.zone.get_ref())
        else {
            let help = format!(
                "define it:\n      [limit_conn_zones.{}]\n      key = \"client_ip\"",
                r.zone.get_ref()
            );
            self.error(
                r.zone.span(),
                format!("connection zone `{}` is not defined", r.zone.get_ref()),
                help,
            );
            return None;
        };
        let Some(max) = u32::try_from(*r.max.get_ref()).ok().filter(|m| *m >= 1) else {
            self.error(
                r.max.span(),
                "`max` must be at least 1",
                "the number of requests of one key allowed in progress at once",
            );
            return None;
        };
        let status = self.refusal_status(r.status.as_ref());
        Some(LimitConn { zone, max, status })
    }

    /// `status` of a limit: 400 to 599, 503 (nginx's default) when unset.
    fn refusal_status(&mut self, raw: Option<&Spanned<i64>>) -> StatusCode {
        let Some(s) = raw else {
            return StatusCode::SERVICE_UNAVAILABLE;
        };
        match u16::try_from(*s.get_ref())
            .ok()
            .filter(|c| (400..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) => code,
            None => {
                self.error(
                    s.span(),
                    format!("`{}` is not a status for a rejected request", s.get_ref()),
                    "use 503 (nginx's default) or 429 Too Many Requests",
                );
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// A size in bytes: `"10m"`, `"64k"`, `"512"` (k and m are 1024 and
    /// 1024 x 1024, as in nginx). `None` when it is not one.
    fn size(&self, raw: &Spanned<String>) -> Option<usize> {
        let text = raw.get_ref().trim().to_ascii_lowercase();
        let (digits, unit) = if let Some(d) = text.strip_suffix('m') {
            (d, 1024 * 1024)
        } else if let Some(d) = text.strip_suffix('k') {
            (d, 1024)
        } else {
            (text.as_str(), 1)
        };
        digits
            .trim()
            .parse::<usize>()
            .ok()
            .map(|n| n.saturating_mul(unit))
    }

    /// `websocket_idle_timeout = "5m"` on a server or route: how long a
    /// tunnel may carry no byte either way before it is closed.
    fn websocket_idle_timeout(&mut self, raw: Option<&Spanned<String>>) -> Option<Duration> {
        let raw = raw?;
        match humantime::parse_duration(raw.get_ref().trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(
                    raw.span(),
                    "a WebSocket idle timeout of zero would close every tunnel at once",
                    format!(
                        "leave it out for the default ({}), or give a duration such as \"5m\"",
                        humantime::format_duration(DEFAULT_WEBSOCKET_IDLE_TIMEOUT)
                    ),
                );
                None
            }
            Err(err) => {
                self.error(
                    raw.span(),
                    format!("`{}` is not a duration: {err}", raw.get_ref()),
                    "write a number and a unit, e.g. \"30s\", \"5m\" or \"1h\"",
                );
                None
            }
        }
    }

    /// `max_uri_size`, `max_header_size`, `max_request_head_size` and
    /// `max_headers`: each within reason, and the head large enough to hold
    /// the largest URI and the largest header line.
    fn head_limits(&mut self, raw: &RawConfig) -> HeadLimits {
        let d = DEFAULT_HEAD_LIMITS;
        let size = |raw: Option<&Spanned<String>>, default: usize, this: &mut Self| {
            let Some(raw) = raw else { return default };
            match this.size(raw) {
                Some(bytes) if bytes >= 256 => bytes,
                _ => {
                    this.error(
                        raw.span(),
                        format!(
                            "`{}` is not a head size of at least 256 bytes",
                            raw.get_ref()
                        ),
                        format!(
                            "write bytes with k, e.g. \"{}k\" (the default)",
                            default / 1024
                        ),
                    );
                    default
                }
            }
        };
        let max_uri_size = size(raw.max_uri_size.as_ref(), d.max_uri_size, self);
        let max_header_size = size(raw.max_header_size.as_ref(), d.max_header_size, self);
        let mut max_request_head_size = size(
            raw.max_request_head_size.as_ref(),
            d.max_request_head_size,
            self,
        );
        if let Some(raw) = &raw.max_request_head_size
            && max_request_head_size < MIN_REQUEST_HEAD_SIZE.max(max_uri_size).max(max_header_size)
        {
            self.error(
                raw.span(),
                "`max_request_head_size` is smaller than a head can be",
                format!(
                    "make it at least 8k (hyper's smallest read buffer), max_uri_size ({max_uri_size}) and max_header_size ({max_header_size})"
                ),
            );
            max_request_head_size = d.max_request_head_size;
        }
        let max_headers = match &raw.max_headers {
            None => d.max_headers,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n) if (1..=10_000).contains(&n) => n,
                _ => {
                    self.error(
                        n.span(),
                        "`max_headers` must be between 1 and 10000",
                        "leave it out for the default (100, as hyper and nginx's typical clients)",
                    );
                    d.max_headers
                }
            },
        };
        HeadLimits {
            max_uri_size,
            max_header_size,
            max_request_head_size,
            max_headers,
        }
    }

    /// `max_body_size = "1m"` on a server or route.
    fn max_body_size(&mut self, raw: Option<&Spanned<String>>) -> Option<u64> {
        let raw = raw?;
        match self.size(raw) {
            Some(bytes) => Some(bytes as u64),
            None => {
                self.error(
                    raw.span(),
                    format!("`{}` is not a size", raw.get_ref()),
                    "write bytes with k or m, e.g. \"1m\" (nginx's client_max_body_size default) or \"100k\"",
                );
                None
            }
        }
    }

    /// `[cache_zones.NAME]`: `max_size` (required) and `max_entry_size`.
    fn cache_zone(&mut self, name: &Spanned<String>, raw: &RawCacheZone) -> CacheZone {
        let size = |raw: &Spanned<String>, this: &mut Self| match cache_size(raw.get_ref()) {
            Some(bytes) if bytes > 0 => Some(bytes),
            _ => {
                this.error(
                    raw.span(),
                    format!("`{}` is not a cache size", raw.get_ref()),
                    "write bytes with a unit, e.g. \"64MiB\", \"512KiB\" or \"1m\" (more than zero)",
                );
                None
            }
        };
        let max_size = size(&raw.max_size, self).unwrap_or(u64::MAX);
        let max_entry_size = match &raw.max_entry_size {
            Some(entry) => match size(entry, self) {
                Some(bytes) if bytes > max_size => {
                    self.error(
                        entry.span(),
                        format!(
                            "`max_entry_size` ({}) is larger than the zone's `max_size` ({})",
                            entry.get_ref(),
                            raw.max_size.get_ref()
                        ),
                        "an entry must fit in its zone: make max_entry_size smaller or max_size larger",
                    );
                    max_size
                }
                Some(bytes) => bytes,
                None => DEFAULT_CACHE_MAX_ENTRY_SIZE,
            },
            None => DEFAULT_CACHE_MAX_ENTRY_SIZE.min(max_size),
        };
        CacheZone {
            name: name.get_ref().clone(),
            max_size,
            max_entry_size,
        }
    }

    /// `cache = { zone = "NAME", default_ttl = "10s", stale_while_revalidate = "5s" }`
    /// on a server or route.
    fn cache(&mut self, raw: &Spanned<RawCache>) -> Option<CacheSettings> {
        let r = raw.get_ref();
        let zone = self
            .cache_zone_names
            .iter()
            .position(|z| z == r.zone.get_ref());
        if zone.is_none() {
            let help = if self.cache_zone_names.is_empty() {
                format!(
                    "define it:\n      [cache_zones.{}]\n      max_size = \"64MiB\"",
                    r.zone.get_ref()
                )
            } else {
                format!(
                    "define [cache_zones.{}], or use one of: {}",
                    r.zone.get_ref(),
                    self.cache_zone_names.join(", ")
                )
            };
            self.error(
                r.zone.span(),
                format!("cache zone `{}` is not defined", r.zone.get_ref()),
                help,
            );
        }
        let seconds = |raw: Option<&Spanned<String>>, what: &str, this: &mut Self| {
            let raw = raw?;
            match humantime::parse_duration(raw.get_ref().trim()) {
                Ok(d) => Some(d),
                Err(_) => {
                    this.error(
                        raw.span(),
                        format!("`{what}` = `{}` is not a duration", raw.get_ref()),
                        "write it like \"10s\", \"5m\" or \"1h\"",
                    );
                    None
                }
            }
        };
        let default_ttl = seconds(r.default_ttl.as_ref(), "default_ttl", self);
        let stale_while_revalidate = seconds(
            r.stale_while_revalidate.as_ref(),
            "stale_while_revalidate",
            self,
        )
        .unwrap_or_default();
        Some(CacheSettings {
            zone: zone?,
            default_ttl,
            stale_while_revalidate,
        })
    }

    /// `limit_req = { zone, burst, nodelay, delay, status }` on a server or route.
    fn limit_req(&mut self, raw: &Spanned<RawLimitReq>) -> Option<LimitReq> {
        let r = raw.get_ref();
        let Some(zone) = self.zone_names.iter().position(|z| z == r.zone.get_ref()) else {
            let help = if self.zone_names.is_empty() {
                format!(
                    "define it:\n      [limit_req_zones.{}]\n      rate = \"1r/s\"",
                    r.zone.get_ref()
                )
            } else {
                format!(
                    "define [limit_req_zones.{}], or use one of: {}",
                    r.zone.get_ref(),
                    self.zone_names.join(", ")
                )
            };
            self.error(
                r.zone.span(),
                format!("rate zone `{}` is not defined", r.zone.get_ref()),
                help,
            );
            return None;
        };
        let count = |v: &Option<Spanned<i64>>, this: &mut Self, what: &str| -> u64 {
            match v {
                None => 0,
                Some(n) => u64::try_from(*n.get_ref()).unwrap_or_else(|_| {
                    this.error(
                        n.span(),
                        format!("`{what}` cannot be negative"),
                        "use 0 or more requests",
                    );
                    0
                }),
            }
        };
        let burst = count(&r.burst, self, "burst");
        let delay = count(&r.delay, self, "delay");
        if let (true, Some(d)) = (r.nodelay, &r.delay) {
            self.error(
                d.span(),
                "`nodelay` and `delay` cannot be used together",
                "nodelay serves the whole burst at once; delay = N serves only the first N at once",
            );
        }
        let status = self.refusal_status(r.status.as_ref());
        Some(LimitReq {
            zone,
            burst: crate::limit::rate::Burst {
                burst,
                no_delay: if r.nodelay { burst } else { delay },
            },
            status,
        })
    }

    /// `tls = { cert, key }` (loaded and checked now) or `tls = { auto_local = true }`.
    fn server_tls(
        &mut self,
        raw: &Spanned<RawServerTls>,
        names: &[Spanned<String>],
    ) -> Option<ServerTls> {
        let tls = raw.get_ref();
        match (&tls.cert, &tls.key, tls.auto_local) {
            (None, None, true) => {
                if !names.iter().any(|n| n.get_ref().trim() != "_") {
                    self.error(
                        raw.span(),
                        "`auto_local` issues a certificate for the server's names, but it has none",
                        "add server_names = [\"app.localhost\"]",
                    );
                    return None;
                }
                Some(ServerTls::AutoLocal)
            }
            (Some(cert), Some(key), false) => {
                let (cert, key, loaded) = self.cert_files(cert, key)?;
                Some(ServerTls::Files { cert, key, loaded })
            }
            _ => {
                self.error(
                    raw.span(),
                    "a server's tls needs either `cert` and `key`, or `auto_local = true`",
                    "e.g. tls = { cert = \"app.pem\", key = \"app-key.pem\" } or tls = { auto_local = true }",
                );
                None
            }
        }
    }

    /// `redirect_https`, `redirect_status` and `hsts`, which only make sense
    /// when some listener speaks TLS.
    fn https_options(
        &mut self,
        raw: &RawServer,
        has_tls_listener: bool,
    ) -> (Option<StatusCode>, Option<HeaderValue>) {
        let no_tls = "add a [[listen]] with `tls = true` (e.g. addr = \"127.0.0.1:8443\")";
        let mut redirect = None;
        if let Some(flag) = &raw.redirect_https
            && *flag.get_ref()
        {
            if !has_tls_listener {
                self.error(
                    flag.span(),
                    "`redirect_https` has no HTTPS listener to send clients to",
                    no_tls,
                );
            }
            redirect = Some(StatusCode::MOVED_PERMANENTLY);
        }
        if let Some(status) = &raw.redirect_status {
            match *status.get_ref() {
                301 => redirect = redirect.map(|_| StatusCode::MOVED_PERMANENTLY),
                308 => redirect = redirect.map(|_| StatusCode::PERMANENT_REDIRECT),
                other => self.error(
                    status.span(),
                    format!("`redirect_status` {other} is not a permanent redirect"),
                    "use 301 (browsers may turn POST into GET) or 308 (method and body kept)",
                ),
            }
        }
        let hsts = match &raw.hsts {
            None => None,
            Some(value) if !has_tls_listener => {
                self.error(
                    value.span(),
                    "`hsts` is only sent over HTTPS, and no listener has `tls = true`",
                    no_tls,
                );
                None
            }
            Some(value) => match HeaderValue::from_str(value.get_ref()) {
                Ok(v) if value.get_ref().starts_with("max-age=") => Some(v),
                _ => {
                    self.error(
                        value.span(),
                        "`hsts` must be a Strict-Transport-Security value",
                        "e.g. hsts = \"max-age=31536000; includeSubDomains\"",
                    );
                    None
                }
            },
        };
        (redirect, hsts)
    }

    fn server_name(&mut self, raw: &Spanned<String>) -> Option<ServerName> {
        let name = raw.get_ref().trim().to_ascii_lowercase();
        // nginx's conventional "matches nothing" name, for catch-all servers.
        if name == "_" {
            return Some(ServerName::Exact(name));
        }
        let (wildcard, host) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if host.is_empty() || !host.split('.').all(valid_label) {
            let help = if name.contains('*') {
                "a wildcard is allowed only as a whole first label: \"*.example.com\""
            } else if name.contains(':') || name.contains('/') {
                "write the host name alone, without scheme, port or path: \"app.localhost\""
            } else {
                "a host name is letters, digits, '-' and dots, e.g. \"app.localhost\""
            };
            self.error(
                raw.span(),
                format!("`{}` is not a valid server name", raw.get_ref()),
                help,
            );
            return None;
        }
        Some(if wildcard {
            ServerName::Wildcard(format!(".{host}"))
        } else {
            ServerName::Exact(name)
        })
    }

    fn route(&mut self, raw: &Spanned<RawRoute>, upstreams: &[Upstream]) -> Option<Route> {
        let r = raw.get_ref();
        let path = r.path.get_ref();
        let mut ok = true;
        if !path.starts_with('/') {
            self.error(
                r.path.span(),
                format!("route path `{path}` does not start with `/`"),
                format!("write it as \"/{}\"", path.trim_start_matches('/')),
            );
            ok = false;
        }
        let action = match (&r.upstream, &r.fixed) {
            (Some(_), Some(fixed)) => {
                self.error(
                    fixed.span(),
                    "a route can either forward to an `upstream` or `return` a response, not both",
                    "remove one of the two keys",
                );
                None
            }
            (None, None) => {
                self.error(
                    raw.span(),
                    format!("route `{path}` does nothing"),
                    "add `upstream = \"NAME\"` to forward, or `return = { status = 200, body = \"...\" }`",
                );
                None
            }
            (Some(name), None) => self.proxy_pass(r, name, upstreams).map(Action::Proxy),
            (None, Some(fixed)) => {
                for key in [
                    r.strip_prefix.as_ref().map(|s| ("strip_prefix", s.span())),
                    r.replace_prefix
                        .as_ref()
                        .map(|s| ("replace_prefix", s.span())),
                    r.cache.as_ref().map(|s| ("cache", s.span())),
                ]
                .into_iter()
                .flatten()
                {
                    self.error(
                        key.1,
                        format!("`{}` only applies to routes with an upstream", key.0),
                        "remove it: a `return` route sends nothing upstream",
                    );
                }
                self.fixed_response(fixed).map(Action::Return)
            }
        };
        let rewrite = self.rewrites(r.rewrite.as_ref());
        if let (Some(rules), Some(Action::Proxy(pass))) = (&r.rewrite, action.as_ref())
            && pass.rewrite != PathRewrite::Keep
            && let Some(first) = rules.first()
        {
            self.error(
                first.span(),
                "a route cannot both `rewrite` its path and use `strip_prefix`/`replace_prefix`",
                "keep one: a rewrite rule such as { from = \"^/api/(.*)$\", to = \"/$1\" } does what strip_prefix does",
            );
        }
        let slash_redirect = match &r.slash_redirect {
            Some(flag) if *flag.get_ref() => {
                if r.exact || !path.ends_with('/') || path == "/" {
                    self.error(
                        flag.span(),
                        format!("`slash_redirect` needs a prefix route ending in `/`, and `{path}` is not one"),
                        "use it on a route such as path = \"/app/\": then /app is redirected to /app/",
                    );
                    false
                } else {
                    true
                }
            }
            _ => false,
        };
        match (ok, action) {
            (true, Some(action)) => Some(Route {
                path: path.clone(),
                exact: r.exact,
                action,
                limit_req: r.limit_req.as_ref().and_then(|l| self.limit_req(l)),
                max_body_size: self.max_body_size(r.max_body_size.as_ref()),
                limit_conn: r.limit_conn.as_ref().and_then(|l| self.limit_conn(l)),
                access: self.access(r.access.as_ref()),
                basic_auth: r.basic_auth.as_ref().and_then(|a| self.basic_auth(a)),
                cors: r.cors.as_ref().and_then(|c| self.cors(c)),
                request_headers: self.header_rules(r.request_headers.as_ref(), true),
                response_headers: self.header_rules(r.response_headers.as_ref(), false),
                rewrite,
                slash_redirect,
                compress: r.compress.as_ref().map(|c| self.compress(c)),
                cache: r.cache.as_ref().and_then(|c| self.cache(c)),
                websocket_idle_timeout: self
                    .websocket_idle_timeout(r.websocket_idle_timeout.as_ref()),
            }),
            _ => None,
        }
    }

    fn proxy_pass(
        &mut self,
        r: &RawRoute,
        name: &Spanned<String>,
        upstreams: &[Upstream],
    ) -> Option<ProxyPass> {
        let rewrite = match (&r.strip_prefix, &r.replace_prefix) {
            (Some(strip), Some(_)) => {
                self.error(
                    strip.span(),
                    "`strip_prefix` and `replace_prefix` cannot be used together",
                    "`strip_prefix = true` is `replace_prefix = \"/\"`; keep one",
                );
                PathRewrite::Keep
            }
            (Some(strip), None) if *strip.get_ref() => PathRewrite::ReplacePrefix("/".into()),
            (_, Some(replacement)) => {
                if !replacement.get_ref().starts_with('/') {
                    self.error(
                        replacement.span(),
                        "`replace_prefix` must start with `/`",
                        format!("write \"/{}\"", replacement.get_ref()),
                    );
                }
                PathRewrite::ReplacePrefix(replacement.get_ref().clone())
            }
            _ => PathRewrite::Keep,
        };
        let Some(upstream) = upstreams.iter().position(|u| u.name == *name.get_ref()) else {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            let help = if known.is_empty() {
                format!(
                    "define it:\n      [upstreams.{}]\n      servers = [\"127.0.0.1:8000\"]",
                    name.get_ref()
                )
            } else {
                format!(
                    "define [upstreams.{}], or use one of: {}",
                    name.get_ref(),
                    known.join(", ")
                )
            };
            self.error(
                name.span(),
                format!("upstream `{}` is not defined", name.get_ref()),
                help,
            );
            return None;
        };
        Some(ProxyPass {
            upstream,
            rewrite,
            preserve_host: r.preserve_host.unwrap_or(true),
        })
    }

    fn fixed_response(&mut self, raw: &Spanned<RawReturn>) -> Option<FixedResponse> {
        let r = raw.get_ref();
        let status = u16::try_from(*r.status.get_ref())
            .ok()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok());
        let Some(status) = status else {
            self.error(
                r.status.span(),
                format!(
                    "`{}` is not a status a route can return",
                    r.status.get_ref()
                ),
                "use a status from 200 to 599, e.g. 200, 301, 404 or 503",
            );
            return None;
        };
        let location = match &r.location {
            Some(loc) => match HeaderValue::from_str(loc.get_ref()) {
                Ok(value) => Some(value),
                Err(_) => {
                    self.error(
                        loc.span(),
                        "`location` contains characters a header cannot hold",
                        "use a plain URL without line breaks",
                    );
                    return None;
                }
            },
            None => None,
        };
        if status.is_redirection() && location.is_none() {
            self.error(
                r.status.span(),
                format!("a {status} redirect needs a `location`"),
                "add location = \"https://example.com/\"",
            );
            return None;
        }
        let content_type = match &r.content_type {
            Some(ct) => match HeaderValue::from_str(ct.get_ref()) {
                Ok(value) => value,
                Err(_) => {
                    self.error(
                        ct.span(),
                        "`content_type` is not a valid header value",
                        "e.g. \"text/html; charset=utf-8\"",
                    );
                    return None;
                }
            },
            None => HeaderValue::from_static("text/plain; charset=utf-8"),
        };
        Some(FixedResponse {
            status,
            body: Bytes::from(r.body.clone()),
            content_type,
            location,
        })
    }
}

/// A cache size: a number with an optional unit, `k`/`KiB`, `m`/`MiB` or
/// `g`/`GiB` (powers of 1024, as nginx reads `k` and `m`); no unit is bytes.
fn cache_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let unit = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<Diagnostic> {
        match Config::parse(text, "proxy.toml") {
            Ok(_) => panic!("expected the config to be refused"),
            Err(ConfigErrors(d)) => d,
        }
    }

    const MINIMAL: &str = r#"
[[listen]]
addr = "127.0.0.1:8080"

[[servers]]
server_names = ["app.localhost", "*.example.com"]

[[servers.routes]]
path = "/api/"
upstream = "api"
strip_prefix = true

[[servers.routes]]
path = "/"
return = { status = 200, body = "Welcome" }

[upstreams.api]
servers = ["127.0.0.1:8000", "api:8001"]
read_timeout = "2s"
"#;

    #[test]
    fn a_minimal_config_is_accepted_and_resolved() {
        let config = Config::parse(MINIMAL, "proxy.toml").expect("valid config");
        assert_eq!(config.listeners[0].addr.port(), 8080);
        let server = &config.servers[0];
        assert_eq!(
            server.names,
            vec![
                ServerName::Exact("app.localhost".into()),
                ServerName::Wildcard(".example.com".into())
            ]
        );
        let Action::Proxy(pass) = &server.routes[0].action else {
            panic!("first route forwards");
        };
        assert_eq!(config.upstream(pass).name, "api");
        assert_eq!(pass.rewrite, PathRewrite::ReplacePrefix("/".into()));
        assert!(pass.preserve_host);
        assert_eq!(config.upstreams[0].read_timeout, Duration::from_secs(2));
        assert_eq!(config.upstreams[0].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_line_and_column() {
        let text = MINIMAL.replace("read_timeout", "raed_timeout");
        let d = errors(&text);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].message.contains("unknown field `raed_timeout`"),
            "{}",
            d[0]
        );
        let at = d[0].at.as_ref().expect("position");
        assert_eq!((at.line, at.column), (19, 1));
    }

    #[test]
    fn a_route_to_a_missing_upstream_names_the_ones_that_exist() {
        let text = MINIMAL.replace("upstream = \"api\"", "upstream = \"apii\"");
        let d = errors(&text);
        assert_eq!(d[0].message, "upstream `apii` is not defined");
        assert_eq!(
            d[0].help.as_deref(),
            Some("define [upstreams.apii], or use one of: api")
        );
        let at = d[0].at.as_ref().expect("position");
        assert_eq!((at.line, at.column, at.width), (10, 12, 6));
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let text = MINIMAL
            .replace("127.0.0.1:8080", "localhost:8080")
            .replace("\"api:8001\"", "\"ftp://api:8001\"")
            .replace("\"2s\"", "\"two seconds\"");
        let d = errors(&text);
        let messages: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(d.len(), 3, "{messages:?}");
        assert!(
            d[0].help
                .as_deref()
                .unwrap_or("")
                .contains("127.0.0.1:8080")
        );
        assert!(
            d[1].message.contains("`ftp://` is not a scheme"),
            "{}",
            d[1]
        );
        assert!(d[2].message.contains("is not a duration"));
    }

    #[test]
    fn the_rendered_error_points_at_the_value() {
        let text = MINIMAL.replace("upstream = \"api\"", "upstream = \"apii\"");
        let rendered = errors(&text)[0].to_string();
        let expected = "\
error: upstream `apii` is not defined
  --> proxy.toml:10:12
   |
10 | upstream = \"apii\"
   |            ^^^^^^
   = help: define [upstreams.apii], or use one of: api
";
        assert_eq!(rendered, expected);
    }

    #[test]
    fn server_names_are_checked() {
        for bad in [
            "http://app.localhost",
            "app.*.com",
            "a..b",
            "app.localhost:8080",
        ] {
            let text = MINIMAL.replace("\"app.localhost\"", &format!("\"{bad}\""));
            let d = errors(&text);
            assert!(
                d[0].message.contains("is not a valid server name"),
                "{bad}: {}",
                d[0]
            );
        }
    }

    #[test]
    fn a_redirect_without_location_is_refused() {
        let text = MINIMAL.replace("status = 200", "status = 301");
        assert!(errors(&text)[0].message.contains("needs a `location`"));
    }

    #[test]
    fn two_default_servers_are_refused() {
        let text = format!(
            "{MINIMAL}\n[[servers]]\ndefault = true\nroutes = [{{ path = \"/\", upstream = \"api\" }}]\n[[servers]]\ndefault = true\nroutes = [{{ path = \"/\", upstream = \"api\" }}]\n"
        );
        let d = errors(&text);
        assert!(d[0].message.contains("more than one server"), "{}", d[0]);
    }

    #[test]
    fn upstream_balancing_settings_are_read_with_nginx_defaults() {
        let text = MINIMAL.replace(
            "servers = [\"127.0.0.1:8000\", \"api:8001\"]",
            "servers = [\"127.0.0.1:8000 weight=3\", \"api:8001\"]\nbalance = \"hash\"\nhash_key = \"cookie:session\"\nnext_upstream = [\"error\", \"http_503\", \"non_idempotent\"]\nnext_upstream_tries = 2",
        ) + "[upstreams.api.health_check]\npath = \"/health\"\nrise = 4\n";
        let config = Config::parse(&text, "t.toml").expect("valid");
        let api = &config.upstreams[0];
        assert_eq!(api.servers[0].weight, 3);
        assert_eq!(api.servers[1].weight, 1);
        assert_eq!(api.balance, Balance::Hash);
        assert_eq!(api.hash_key, Some(HashKey::Cookie("session".into())));
        assert_eq!((api.max_fails, api.fail_timeout), (1, DEFAULT_FAIL_TIMEOUT));
        let next = &api.next_upstream;
        assert!(next.on_error && !next.on_timeout && next.non_idempotent);
        assert_eq!((next.on_status.as_slice(), next.tries), (&[503][..], 2));
        let check = api.health_check.as_ref().expect("health_check");
        assert_eq!(
            (check.path.as_str(), check.fall, check.rise),
            ("/health", 3, 4)
        );

        let defaults = Config::parse(MINIMAL, "t.toml").expect("valid");
        let next = &defaults.upstreams[0].next_upstream;
        assert!(next.on_error && next.on_timeout && !next.non_idempotent);
        assert_eq!(defaults.upstreams[0].hash_key, None);
    }

    #[test]
    fn bad_upstream_balancing_settings_are_each_reported() {
        let text = MINIMAL.replace(
            "servers = [\"127.0.0.1:8000\", \"api:8001\"]",
            "servers = [\"127.0.0.1:8000 weight=0\", \"api:8001 backup\"]\nhash_key = \"client_ip\"\nnext_upstream = [\"error\", \"http_404\"]\nmax_fails = -1",
        ) + "[upstreams.api.health_check]\npath = \"health\"\nfall = 0\n";
        let messages: Vec<String> = errors(&text).iter().map(|d| d.message.clone()).collect();
        for expected in [
            "`weight=0` is not a server option",
            "`backup` is not a server option",
            "`hash_key` is only read by balance = \"hash\"",
            "`http_404` is not a next_upstream case",
            "`max_fails` must be a whole number of at least 0",
            "`health` is not a path",
            "`fall` must be a whole number of at least 1",
        ] {
            assert!(
                messages.iter().any(|m| m == expected),
                "{expected}: {messages:#?}"
            );
        }
    }

    #[test]
    fn websocket_idle_timeout_is_set_per_route_or_server_and_checked() {
        let text = MINIMAL
            .replace(
                "server_names = [\"app.localhost\", \"*.example.com\"]",
                "server_names = [\"app.localhost\", \"*.example.com\"]\nwebsocket_idle_timeout = \"5m\"",
            )
            .replace(
                "strip_prefix = true",
                "strip_prefix = true\nwebsocket_idle_timeout = \"30s\"",
            );
        let config = Config::parse(&text, "proxy.toml").expect("valid config");
        let server = &config.servers[0];
        assert_eq!(
            server.websocket_idle_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            server.routes[0].websocket_idle_timeout,
            Some(Duration::from_secs(30))
        );
        assert_eq!(server.routes[1].websocket_idle_timeout, None);

        let bad = text.replace("\"30s\"", "\"half a minute\"");
        let d = errors(&bad);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].message
                .starts_with("`half a minute` is not a duration")
        );
        assert!(d[0].help.as_deref().unwrap_or("").contains("\"5m\""));
        let at = d[0].at.as_ref().expect("position");
        assert_eq!(at.line, 13);

        let zero = text.replace("\"5m\"", "\"0s\"");
        let d = errors(&zero);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].message,
            "a WebSocket idle timeout of zero would close every tunnel at once"
        );
        assert!(d[0].help.as_deref().unwrap_or("").contains("1m"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let d = errors("[[listen]]\naddr = 127.0.0.1:8080\n");
        let at = d[0].at.as_ref().expect("position");
        assert_eq!(at.line, 2);
    }

    /// `admin` goes first in the file: top-level keys come before any [table].
    fn with_admin(admin: &str) -> String {
        format!("admin = {admin}\n{MINIMAL}")
    }

    #[test]
    fn the_admin_listener_is_off_unless_asked_for_and_loopback_by_default() {
        let config = Config::parse(MINIMAL, "proxy.toml").expect("valid config");
        assert_eq!(config.admin, None);
        let config = Config::parse(&with_admin("{}"), "proxy.toml").expect("valid config");
        assert_eq!(
            config.admin.map(|a| a.addr.to_string()).as_deref(),
            Some("127.0.0.1:9090")
        );
        let config = Config::parse(&with_admin(r#"{ addr = "127.0.0.1:0" }"#), "proxy.toml")
            .expect("valid config");
        assert_eq!(config.admin.map(|a| a.addr.port()), Some(0));
        let config = Config::parse(&with_admin(r#"{ addr = "0.0.0.0:9100" }"#), "proxy.toml")
            .expect("a non-loopback address is allowed");
        assert_eq!(
            config.admin.map(|a| a.addr.to_string()).as_deref(),
            Some("0.0.0.0:9100")
        );
    }

    #[test]
    fn an_admin_host_name_is_refused_with_the_ip_to_write() {
        let d = errors(&with_admin(r#"{ addr = "localhost:9090" }"#));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].message,
            "`localhost:9090` is not an IP address and port"
        );
        assert_eq!(
            d[0].help.as_deref(),
            Some(
                "the admin address needs an IP, not a host name: e.g. \"127.0.0.1:9090\" instead of \"localhost:9090\""
            )
        );
        let at = d[0].at.as_ref().expect("position");
        assert_eq!((at.line, at.column), (1, 18));
        let d = errors(&with_admin(r#"{ addr = "9090" }"#));
        assert!(
            d[0].help
                .as_deref()
                .is_some_and(|h| h.starts_with("write it as IP:PORT")),
            "{}",
            d[0]
        );
    }

    #[test]
    fn the_admin_listener_needs_a_port_of_its_own() {
        let d = errors(&with_admin(r#"{ addr = "127.0.0.1:8080" }"#));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].message,
            "the admin address `127.0.0.1:8080` is also a [[listen]] address"
        );
        let d = errors(&with_admin(r#"{ addr = "0.0.0.0:8080" }"#));
        assert_eq!(d.len(), 1, "every interface includes the listener's: {d:?}");
    }

    #[test]
    fn admin_settings_are_checked_by_name() {
        let d = errors(&with_admin(r#"{ address = "127.0.0.1:9090" }"#));
        assert!(d[0].message.contains("unknown field `address`"), "{}", d[0]);
        let d = errors(&with_admin("true"));
        assert!(d[0].message.contains("invalid type"), "{}", d[0]);
    }
}
