//! nginx directives -> this proxy's TOML, with a warning wherever the two differ.
//!
//! The walk follows nginx's contexts: the main context (`worker_processes`,
//! `events`), `http` (zones, `upstream` blocks, defaults for every server),
//! `server` (one virtual server), `location` (one route). Most settings are
//! **inherited** downwards, and a level that sets one replaces what it
//! inherited. Directives that can be repeated (`proxy_set_header`,
//! `add_header`, `limit_req`, `allow`/`deny`) are replaced as a *group*: one
//! `add_header` in a location drops every `add_header` of its server. The
//! [`Scope`] struct is that inherited state; each level clones its parent's
//! and applies its own directives.
//!
//! Our TOML has two levels (server, route) and the same "a route replaces
//! its server's" rule for limits, access, auth, compression and caching, so
//! those are written on the server and, where a location differs, on the
//! route. Header rules are different in ours (a route's run *after* its
//! server's), so they are written per route, exactly as nginx resolves them.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::parse::Directive;
use render::{rewrite_toml, toml_str};

mod render;
mod stream;

/// How serious a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something was not translated, or would behave differently: read it.
    Warning,
    /// Translated, but nginx and this proxy differ in a way worth knowing.
    Note,
}

/// One message about the translation, at an nginx line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The nginx line it is about.
    pub line: usize,
    /// Warning or note.
    pub severity: Severity,
    /// What happened and what to do.
    pub message: String,
}

/// A value and the nginx line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct At<T> {
    value: T,
    line: usize,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LimitReq {
    zone: String,
    burst: Option<u32>,
    nodelay: bool,
    delay: Option<u32>,
}

/// What a level inherits from the levels around it (nginx's merge).
#[derive(Debug, Clone, Default)]
struct Scope {
    set_headers: Vec<At<(String, String)>>,
    add_headers: Vec<At<(String, String, bool)>>,
    hide_headers: Vec<At<String>>,
    limit_req: Vec<At<LimitReq>>,
    limit_req_status: Option<At<u16>>,
    limit_conn: Vec<At<(String, u32)>>,
    limit_conn_status: Option<At<u16>>,
    body_size: Option<At<String>>,
    access: Vec<At<String>>,
    auth_basic: Option<At<String>>,
    auth_user_file: Option<At<String>>,
    gzip: Option<At<bool>>,
    gzip_types: Option<At<Vec<String>>>,
    gzip_min_length: Option<At<String>>,
    gzip_level: Option<At<String>>,
    cache: Option<At<String>>,
    cache_valid: Option<At<String>>,
    connect_timeout: Option<At<String>>,
    read_timeout: Option<At<String>>,
    ssl_cert: Option<At<String>>,
    ssl_key: Option<At<String>>,
}

/// One `key = value` line of the TOML, with the nginx lines it came from.
#[derive(Debug, Clone)]
struct Line {
    key: String,
    value: String,
    sources: Vec<String>,
}

impl Line {
    fn new(key: &str, value: String, sources: Vec<String>) -> Line {
        Line {
            key: key.into(),
            value,
            sources,
        }
    }
}

#[derive(Debug, Clone)]
struct Listen {
    addr: String,
    tls: bool,
    /// `listen ... proxy_protocol`: a PROXY header comes first.
    accept_proxy: bool,
    line: usize,
}

#[derive(Debug, Clone)]
struct RouteOut {
    path: String,
    exact: bool,
    source: String,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct RewriteOut {
    from: String,
    to: String,
    redirect: Option<u16>,
    source: String,
}

#[derive(Debug, Clone)]
struct ServerOut {
    source: String,
    line: usize,
    names: Vec<String>,
    names_source: Option<String>,
    /// The `server_name` line.
    names_line: usize,
    catch_all: bool,
    default: Option<String>,
    listens: Vec<Listen>,
    lines: Vec<Line>,
    rewrites: Vec<RewriteOut>,
    routes: Vec<RouteOut>,
    /// `return 301 https://$host$request_uri` was all this server did.
    https_redirect: Option<At<u16>>,
}

#[derive(Debug, Clone)]
struct UpstreamOut {
    name: String,
    source: Option<String>,
    servers: Vec<(String, String)>,
    lines: Vec<Line>,
    connect: Vec<At<String>>,
    read: Vec<At<String>>,
}

/// The translation's state: what has been written so far, and the warnings.
struct Translator {
    file: String,
    warnings: Vec<Warning>,
    seen_warnings: HashSet<(usize, String)>,
    top: Vec<Line>,
    trusted_proxies: Vec<At<String>>,
    req_zones: Vec<(String, usize, Vec<Line>)>,
    conn_zones: Vec<(String, usize, Vec<Line>)>,
    cache_zones: Vec<(String, Vec<Line>)>,
    used_zones: HashSet<String>,
    upstreams: Vec<UpstreamOut>,
    /// Names of `upstream` blocks, known before servers are read.
    upstream_blocks: HashSet<String>,
    servers: Vec<ServerOut>,
    /// `server {}` blocks of `stream {}`.
    streams: Vec<stream::StreamOut>,
    used_names: HashSet<String>,
    said_http10: bool,
}

/// The variables our header rules understand (see [`crate::header_rules`]).
const VARIABLES: [&str; 6] = [
    "remote_addr",
    "host",
    "scheme",
    "request_id",
    "request_uri",
    "request_method",
];

/// Directives with no effect on a reverse proxy's behaviour here: noted,
/// not translated.
const IGNORED: &[(&str, &str)] = &[
    (
        "sendfile",
        "sendfile sends files from disk; the proxy streams upstream bodies",
    ),
    (
        "tcp_nopush",
        "a sendfile tuning; the proxy streams upstream bodies",
    ),
    ("tcp_nodelay", "the proxy always sets TCP_NODELAY"),
    ("types_hash_max_size", "an nginx hash-table tuning"),
    (
        "server_names_hash_bucket_size",
        "an nginx hash-table tuning",
    ),
    (
        "default_type",
        "the proxy passes on the upstream's Content-Type",
    ),
    (
        "server_tokens",
        "remove the `Server` header with response_headers = { remove = [\"Server\"] } if you want",
    ),
    (
        "proxy_http_version",
        "the proxy always talks HTTP/1.1 with keep-alive to upstreams",
    ),
    (
        "ssl_protocols",
        "rustls offers TLS 1.2 and 1.3 only, with safe ciphers",
    ),
    (
        "ssl_ciphers",
        "rustls offers TLS 1.2 and 1.3 only, with safe ciphers",
    ),
    ("ssl_prefer_server_ciphers", "rustls chooses the cipher"),
    ("ssl_session_cache", "rustls keeps its own session cache"),
    ("ssl_session_timeout", "rustls keeps its own session cache"),
    ("ssl_session_tickets", "rustls keeps its own session cache"),
    ("http2", "HTTP/2 is offered on every TLS listener (ALPN)"),
    (
        "resolver",
        "upstream names are looked up with the system resolver, again every resolve_interval",
    ),
    (
        "proxy_buffering",
        "the proxy streams bodies, never buffers them",
    ),
    (
        "proxy_request_buffering",
        "the proxy streams bodies, never buffers them",
    ),
    (
        "proxy_buffers",
        "the proxy streams bodies, never buffers them",
    ),
    (
        "proxy_buffer_size",
        "the proxy streams bodies, never buffers them",
    ),
    (
        "gzip_vary",
        "the proxy always sends `Vary: Accept-Encoding` when it compresses",
    ),
    (
        "gzip_proxied",
        "the proxy compresses whatever the Via header says",
    ),
    (
        "gzip_http_version",
        "the proxy compresses for HTTP/1.0 clients too",
    ),
    ("gzip_disable", "no per-browser exceptions"),
    ("gzip_buffers", "the proxy compresses as it streams"),
];

impl Translator {
    fn new(file: &str) -> Translator {
        Translator {
            file: file.to_owned(),
            warnings: Vec::new(),
            seen_warnings: HashSet::new(),
            top: Vec::new(),
            trusted_proxies: Vec::new(),
            req_zones: Vec::new(),
            conn_zones: Vec::new(),
            cache_zones: Vec::new(),
            used_zones: HashSet::new(),
            upstreams: Vec::new(),
            upstream_blocks: HashSet::new(),
            servers: Vec::new(),
            streams: Vec::new(),
            used_names: HashSet::new(),
            said_http10: false,
        }
    }

    fn say(&mut self, line: usize, severity: Severity, message: impl Into<String>) {
        let message = message.into();
        if self.seen_warnings.insert((line, message.clone())) {
            self.warnings.push(Warning {
                line,
                severity,
                message,
            });
        }
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.say(line, Severity::Warning, message);
    }

    /// `large_client_header_buffers 4 8k`: in nginx the request line and each
    /// header line must fit in one buffer, and the whole head in all of them:
    /// `max_uri_size` and `max_header_size` are the buffer's size, and
    /// `max_request_head_size` their total (at least the proxy's 8k).
    fn large_client_header_buffers(&mut self, d: &Directive) {
        let count = d.arg(0).parse::<u64>().ok().filter(|n| *n >= 1);
        let size = nginx_size(d.arg(1)).filter(|n| *n >= 256);
        let (Some(count), Some(size)) = (count, size) else {
            self.warn(
                d.line,
                format!(
                    "`large_client_header_buffers {} {}` is not a count and a size: left out",
                    d.arg(0),
                    d.arg(1)
                ),
            );
            return;
        };
        let as_size = |bytes: u64| match bytes % 1024 {
            0 => toml_str(&format!("{}k", bytes / 1024)),
            _ => toml_str(&bytes.to_string()),
        };
        let head = count.saturating_mul(size).max(8 * 1024).max(size);
        for (key, value) in [
            ("max_uri_size", as_size(size)),
            ("max_header_size", as_size(size)),
            ("max_request_head_size", as_size(head)),
        ] {
            self.top.push(Line::new(key, value, vec![self.src(d)]));
        }
    }

    fn note(&mut self, line: usize, message: impl Into<String>) {
        self.say(line, Severity::Note, message);
    }

    fn at<T>(&self, d: &Directive, value: T) -> At<T> {
        At {
            value,
            line: d.line,
            source: self.src(d),
        }
    }

    /// `nginx.conf:12: proxy_pass http://api/;`, for comments in the TOML.
    fn src(&self, d: &Directive) -> String {
        format!("{}:{}: {}", self.file, d.line, d.source())
    }

    fn not_translated(&mut self, d: &Directive) {
        if let Some((_, why)) = IGNORED.iter().find(|(name, _)| *name == d.name) {
            self.note(d.line, format!("`{}` is not needed: {why}", d.name));
        } else {
            self.warn(
                d.line,
                format!(
                    "`{}` has no equivalent in this proxy and was not translated",
                    d.name
                ),
            );
        }
    }

    // -----------------------------------------------------------------
    // The main and http contexts.
    // -----------------------------------------------------------------

    fn main(&mut self, tree: &[Directive]) {
        // `upstream` names first: `proxy_pass http://NAME` refers to them
        // wherever they are written.
        collect_upstream_names(tree, &mut self.upstream_blocks);
        let mut scope = Scope::default();
        self.http(tree, &mut scope, true);
    }

    /// The `http` context (or, for a file holding only `server` blocks, the
    /// top of the file: such files are included inside `http`).
    fn http(&mut self, block: &[Directive], scope: &mut Scope, main: bool) {
        let mut seen = HashSet::new();
        for d in block {
            self.inherited(scope, d, &mut seen);
        }
        for d in block {
            if is_inherited(&d.name) {
                continue;
            }
            match (d.name.as_str(), &d.block) {
                ("http", Some(inner)) if main => {
                    let mut http_scope = scope.clone();
                    self.http(inner, &mut http_scope, false);
                }
                ("stream", Some(inner)) if main => self.stream(inner),
                ("events", Some(inner)) => {
                    for e in inner {
                        if e.name == "worker_connections" {
                            self.note(e.line, "`worker_connections` has no equivalent: the proxy has no per-worker connection cap (limit_conn limits per client)");
                        } else {
                            self.not_translated(e);
                        }
                    }
                }
                ("worker_processes", None) => self.workers(d),
                ("user" | "pid" | "worker_rlimit_nofile", None) => self.note(
                    d.line,
                    format!(
                        "`{}` is about the nginx process; the proxy runs as whoever starts it",
                        d.name
                    ),
                ),
                ("access_log", None) => self.access_log(d),
                ("log_format", None) => self.warn(
                    d.line,
                    "`log_format` is not translated: the access log is written `combined` (nginx's default format, with upstream timings added) or `json`",
                ),
                ("error_log", None) => self.note(
                    d.line,
                    "`error_log` is not needed: the error log goes to stderr, its level chosen with RUST_LOG (e.g. RUST_LOG=warn)",
                ),
                ("include", None) if d.arg(0).ends_with("mime.types") => self.note(
                    d.line,
                    "`include mime.types` is not needed: the proxy passes on the upstream's Content-Type",
                ),
                ("include", None) => self.warn(
                    d.line,
                    format!(
                        "`include {}` is not followed: import that file on its own, or paste it here",
                        d.arg(0)
                    ),
                ),
                ("keepalive_timeout", None) => {
                    let value = nginx_time(d.arg(0));
                    self.top_line(d, Line::new("keepalive_timeout", toml_str(&value), vec![self.src(d)]));
                }
                ("client_header_timeout", None) => {
                    let value = nginx_time(d.arg(0));
                    self.top_line(d, Line::new("client_header_timeout", toml_str(&value), vec![self.src(d)]));
                }
                ("client_body_timeout", None) => {
                    let value = nginx_time(d.arg(0));
                    self.top.push(Line::new(
                        "client_body_timeout",
                        toml_str(&value),
                        vec![self.src(d)],
                    ));
                }
                ("large_client_header_buffers", None) => self.large_client_header_buffers(d),
                ("set_real_ip_from", None) => {
                    self.trusted_proxies.push(self.at(d, d.arg(0).to_owned()))
                }
                ("real_ip_header", None) => {
                    if !d.arg(0).eq_ignore_ascii_case("X-Forwarded-For") {
                        self.warn(d.line, format!("`real_ip_header {}`: the proxy reads only X-Forwarded-For from trusted_proxies", d.arg(0)));
                    }
                }
                ("limit_req_zone", None) => self.limit_req_zone(d),
                ("limit_conn_zone", None) => self.limit_conn_zone(d),
                ("proxy_cache_path", None) => self.cache_zone(d),
                ("upstream", Some(inner)) => self.upstream(d, inner),
                ("server", Some(inner)) => self.server(d, inner, scope),
                ("map", Some(_)) => self.warn(
                    d.line,
                    "`map` blocks are not supported: the variable it defines is unknown to the proxy",
                ),
                _ => self.not_translated(d),
            }
        }
    }

    /// Adds a top-level setting, unless one with its key is already there: a
    /// TOML key may be written once, and nginx refuses a repeated directive
    /// of this kind too (`"keepalive_timeout" directive is duplicate`).
    fn top_line(&mut self, d: &Directive, line: Line) {
        if self.top.iter().any(|l| l.key == line.key) {
            self.warn(
                d.line,
                format!(
                    "`{}` is repeated: nginx refuses a duplicate; the first one is kept",
                    d.name
                ),
            );
        } else {
            self.top.push(line);
        }
    }

    /// `access_log off;` or `access_log FILE [combined];` at the `http`
    /// level: the proxy's one access log. A named `log_format` of one's own
    /// cannot be followed (the proxy writes `combined` or `json`), nor syslog.
    fn access_log(&mut self, d: &Directive) {
        let path = d.arg(0);
        if path.starts_with("syslog:") {
            self.warn(
                d.line,
                "`access_log syslog:...` is not translated: the proxy writes its access log to a file, stdout or stderr",
            );
            return;
        }
        let value = if path == "off" {
            "{ path = \"off\" }".to_owned()
        } else {
            let format = d.args.get(1).map(String::as_str).unwrap_or("combined");
            if format != "combined" && !format.contains('=') {
                self.warn(
                    d.line,
                    format!(
                        "log format `{format}` is not translated: written as `combined` (nginx's default); `format = \"json\"` is the other choice"
                    ),
                );
            }
            format!("{{ path = {}, format = \"combined\" }}", toml_str(path))
        };
        self.top_line(d, Line::new("access_log", value, vec![self.src(d)]));
    }

    fn workers(&mut self, d: &Directive) {
        match d.arg(0).parse::<u32>() {
            Ok(n) if n > 0 => {
                self.top_line(d, Line::new("workers", n.to_string(), vec![self.src(d)]))
            }
            _ if d.arg(0) == "auto" => self.note(
                d.line,
                "`worker_processes auto` is the default (`workers` left out: one per core)",
            ),
            _ => self.warn(
                d.line,
                format!("`worker_processes {}` is not a number", d.arg(0)),
            ),
        }
    }

    /// Applies a directive that is inherited downwards to `scope`. A
    /// repeatable directive seen for the first time at this level replaces
    /// the inherited group. Returns whether `d` was one of them.
    fn inherited(&mut self, scope: &mut Scope, d: &Directive, seen: &mut HashSet<String>) -> bool {
        if !is_inherited(&d.name) {
            return false;
        }
        let first = seen.insert(d.name.clone());
        let repeatable = matches!(
            d.name.as_str(),
            "proxy_set_header"
                | "add_header"
                | "proxy_hide_header"
                | "limit_req"
                | "limit_conn"
                | "allow"
                | "deny"
                | "proxy_cache_valid"
        );
        if !first && !repeatable {
            self.warn(
                d.line,
                format!(
                    "`{}` is repeated in this block: nginx refuses a duplicate; the last one is used here",
                    d.name
                ),
            );
        }
        match d.name.as_str() {
            "proxy_set_header" => {
                if first {
                    scope.set_headers.clear();
                }
                scope
                    .set_headers
                    .push(self.at(d, (d.arg(0).to_owned(), d.arg(1).to_owned())));
            }
            "add_header" => {
                if first {
                    scope.add_headers.clear();
                }
                let always = d.arg(2) == "always";
                scope
                    .add_headers
                    .push(self.at(d, (d.arg(0).to_owned(), d.arg(1).to_owned(), always)));
            }
            "proxy_hide_header" => {
                if first {
                    scope.hide_headers.clear();
                }
                scope.hide_headers.push(self.at(d, d.arg(0).to_owned()));
            }
            "limit_req" => {
                if first {
                    scope.limit_req.clear();
                }
                let mut limit = LimitReq {
                    zone: String::new(),
                    burst: None,
                    nodelay: false,
                    delay: None,
                };
                for arg in &d.args {
                    if let Some(zone) = arg.strip_prefix("zone=") {
                        limit.zone = zone.to_owned();
                    } else if let Some(burst) = arg.strip_prefix("burst=") {
                        limit.burst = burst.parse().ok();
                    } else if let Some(delay) = arg.strip_prefix("delay=") {
                        limit.delay = delay.parse().ok();
                    } else if arg == "nodelay" {
                        limit.nodelay = true;
                    } else {
                        self.warn(d.line, format!("`limit_req` option `{arg}` is not known"));
                    }
                }
                scope.limit_req.push(self.at(d, limit));
            }
            "limit_conn" => {
                if first {
                    scope.limit_conn.clear();
                }
                match d.arg(1).parse::<u32>() {
                    Ok(n) => scope.limit_conn.push(self.at(d, (d.arg(0).to_owned(), n))),
                    Err(_) => self.warn(
                        d.line,
                        format!(
                            "`limit_conn {} {}`: the limit is not a number",
                            d.arg(0),
                            d.arg(1)
                        ),
                    ),
                }
            }
            "limit_req_status" | "limit_conn_status" => match d.arg(0).parse::<u16>() {
                Ok(code) => {
                    let value = Some(self.at(d, code));
                    if d.name == "limit_req_status" {
                        scope.limit_req_status = value;
                    } else {
                        scope.limit_conn_status = value;
                    }
                }
                Err(_) => self.warn(d.line, format!("`{}` needs a status code", d.name)),
            },
            "client_max_body_size" => scope.body_size = Some(self.at(d, d.arg(0).to_owned())),
            "allow" | "deny" => {
                if first && !seen.contains(if d.name == "allow" { "deny" } else { "allow" }) {
                    scope.access.clear();
                }
                scope
                    .access
                    .push(self.at(d, format!("{} {}", d.name, d.arg(0))));
            }
            "auth_basic" => scope.auth_basic = Some(self.at(d, d.arg(0).to_owned())),
            "auth_basic_user_file" => scope.auth_user_file = Some(self.at(d, d.arg(0).to_owned())),
            "gzip" => scope.gzip = Some(self.at(d, d.arg(0) == "on")),
            "gzip_types" => scope.gzip_types = Some(self.at(d, d.args.clone())),
            "gzip_min_length" => scope.gzip_min_length = Some(self.at(d, d.arg(0).to_owned())),
            "gzip_comp_level" => scope.gzip_level = Some(self.at(d, d.arg(0).to_owned())),
            "proxy_cache" => scope.cache = Some(self.at(d, d.arg(0).to_owned())),
            "proxy_cache_valid" => {
                let time = d.args.last().cloned().unwrap_or_default();
                scope.cache_valid = Some(self.at(d, time));
            }
            "proxy_connect_timeout" => {
                scope.connect_timeout = Some(self.at(d, nginx_time(d.arg(0))))
            }
            "proxy_read_timeout" => scope.read_timeout = Some(self.at(d, nginx_time(d.arg(0)))),
            "ssl_certificate" => scope.ssl_cert = Some(self.at(d, d.arg(0).to_owned())),
            "ssl_certificate_key" => scope.ssl_key = Some(self.at(d, d.arg(0).to_owned())),
            _ => {}
        }
        // The two kinds of access rule form one group.
        if d.name == "allow" {
            seen.insert("deny".into());
        } else if d.name == "deny" {
            seen.insert("allow".into());
        }
        true
    }

    // -----------------------------------------------------------------
    // Zones.
    // -----------------------------------------------------------------

    fn zone_name(d: &Directive) -> Option<(String, String)> {
        d.args.iter().find_map(|a| {
            let rest = a.strip_prefix("keys_zone=").or(a.strip_prefix("zone="))?;
            let (name, size) = rest.split_once(':').unwrap_or((rest, ""));
            Some((name.to_owned(), size.to_owned()))
        })
    }

    fn zone_key(&mut self, d: &Directive) -> String {
        let key = d.arg(0);
        match key {
            "$binary_remote_addr" | "$remote_addr" => "client_ip".into(),
            _ => {
                if let Some(header) = key.strip_prefix("$http_") {
                    format!("header:{}", header_name_from_variable(header))
                } else {
                    self.warn(
                        d.line,
                        format!(
                            "the key `{key}` is not supported: counted per client address instead (keys: client_ip, header:NAME, route)"
                        ),
                    );
                    "client_ip".into()
                }
            }
        }
    }

    /// Whether zone `name` was already defined (at line `first`): nginx
    /// refuses a second zone of the same name, and a TOML table cannot be
    /// written twice, so the first is kept and the second gets a warning.
    fn zone_defined_twice(&mut self, d: &Directive, name: &str, first: Option<usize>) -> bool {
        let Some(first) = first else {
            return false;
        };
        self.warn(
            d.line,
            format!("zone `{name}` is already defined at line {first}: nginx refuses this; the first one is kept"),
        );
        true
    }

    fn limit_req_zone(&mut self, d: &Directive) {
        let Some((name, size)) = Self::zone_name(d) else {
            self.warn(
                d.line,
                "`limit_req_zone` without `zone=NAME:SIZE` was skipped",
            );
            return;
        };
        let first = self.req_zones.iter().find(|z| z.0 == name).map(|z| z.1);
        if self.zone_defined_twice(d, &name, first) {
            return;
        }
        let key = self.zone_key(d);
        let rate = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("rate="))
            .unwrap_or("1r/s");
        let mut lines = vec![
            Line::new("key", toml_str(&key), vec![]),
            Line::new("rate", toml_str(rate), vec![]),
        ];
        if !size.is_empty() {
            lines.push(Line::new(
                "size",
                toml_str(&size.to_ascii_lowercase()),
                vec![],
            ));
        }
        self.req_zones.push((name, d.line, lines));
    }

    fn limit_conn_zone(&mut self, d: &Directive) {
        let Some((name, _)) = Self::zone_name(d) else {
            self.warn(
                d.line,
                "`limit_conn_zone` without `zone=NAME:SIZE` was skipped",
            );
            return;
        };
        let first = self.conn_zones.iter().find(|z| z.0 == name).map(|z| z.1);
        if self.zone_defined_twice(d, &name, first) {
            return;
        }
        let key = self.zone_key(d);
        self.conn_zones
            .push((name, d.line, vec![Line::new("key", toml_str(&key), vec![])]));
    }

    fn cache_zone(&mut self, d: &Directive) {
        let Some((name, _)) = Self::zone_name(d) else {
            self.warn(
                d.line,
                "`proxy_cache_path` without `keys_zone=NAME:SIZE` was skipped",
            );
            return;
        };
        if self.cache_zones.iter().any(|z| z.0 == name) {
            self.warn(
                d.line,
                format!("cache zone `{name}` is defined twice: nginx refuses this; the first one is kept"),
            );
            return;
        }
        let max = d.args.iter().find_map(|a| a.strip_prefix("max_size="));
        let max = match max {
            Some(size) => size.to_ascii_lowercase(),
            None => {
                self.note(
                    d.line,
                    "no `max_size`: the cache zone gets 64MiB (the proxy keeps its cache in memory, not on disk)",
                );
                "64MiB".into()
            }
        };
        self.note(
            d.line,
            format!(
                "the cache lives in memory: `{}` (the folder) and levels=/inactive= are not used",
                d.arg(0)
            ),
        );
        self.cache_zones.push((
            name,
            vec![Line::new("max_size", toml_str(&max), vec![self.src(d)])],
        ));
    }

    // -----------------------------------------------------------------
    // Upstreams.
    // -----------------------------------------------------------------

    fn upstream(&mut self, d: &Directive, block: &[Directive]) {
        let name = d.arg(0).to_owned();
        let mut up = UpstreamOut {
            name: name.clone(),
            source: Some(self.src(d)),
            servers: Vec::new(),
            lines: Vec::new(),
            connect: Vec::new(),
            read: Vec::new(),
        };
        let mut primaries = Vec::new();
        let mut backups = Vec::new();
        let mut max_fails: Option<At<String>> = None;
        let mut fail_timeout: Option<At<String>> = None;
        let mut balance: Option<Line> = None;
        for s in block {
            match s.name.as_str() {
                "server" => {
                    let address = s.arg(0);
                    if address.starts_with("unix:") {
                        self.warn(s.line, "unix-socket upstream servers are not supported: skipped");
                        continue;
                    }
                    let address = with_port(address, 80);
                    let mut entry = address.clone();
                    let mut backup = false;
                    let mut down = false;
                    for option in s.args.iter().skip(1) {
                        if let Some(weight) = option.strip_prefix("weight=") {
                            if weight != "1" {
                                let _ = write!(entry, " weight={weight}");
                            }
                        } else if let Some(n) = option.strip_prefix("max_fails=") {
                            self.per_server(&mut max_fails, s, n, "max_fails");
                        } else if let Some(t) = option.strip_prefix("fail_timeout=") {
                            self.per_server(&mut fail_timeout, s, &nginx_time(t), "fail_timeout");
                        } else if option == "backup" {
                            backup = true;
                        } else if option == "down" {
                            down = true;
                        } else if option == "resolve" {
                            self.note(s.line, "`resolve` is what the proxy always does: a DNS name is looked up again every resolve_interval");
                        } else {
                            self.warn(
                                s.line,
                                format!("server option `{option}` has no equivalent and was left out"),
                            );
                        }
                    }
                    if down {
                        self.warn(s.line, format!("`{address}` is marked `down`: left out"));
                    } else if backup {
                        backups.push((entry, self.src(s)));
                    } else {
                        primaries.push((entry, self.src(s)));
                    }
                }
                "least_conn" => {
                    balance = Some(Line::new("balance", toml_str("least_conn"), vec![self.src(s)]))
                }
                "ip_hash" => {
                    balance = Some(Line::new("balance", toml_str("hash"), vec![self.src(s)]));
                    up.lines
                        .push(Line::new("hash_key", toml_str("client_ip"), vec![self.src(s)]));
                    self.note(s.line, "`ip_hash` hashes the first three bytes of an IPv4 address; `hash_key = \"client_ip\"` hashes the whole address, consistently");
                }
                "hash" => {
                    balance = Some(Line::new("balance", toml_str("hash"), vec![self.src(s)]));
                    let key = self.hash_key(s);
                    up.lines.push(Line::new("hash_key", toml_str(&key), vec![]));
                    if s.arg(1) != "consistent" {
                        self.note(s.line, "the proxy's hash is always consistent (rendezvous): nginx without `consistent` remaps most keys when a server is added");
                    }
                }
                "random" => {
                    balance = Some(Line::new("balance", toml_str("random_two"), vec![self.src(s)]));
                    if s.arg(0) != "two" {
                        self.note(s.line, "`random` becomes random_two: the less busy of two random servers");
                    }
                }
                "keepalive" => self.note(
                    s.line,
                    "`keepalive` is not needed: upstream connections are always pooled (HTTP/1.1 keep-alive)",
                ),
                "keepalive_timeout" | "keepalive_requests" | "keepalive_time" | "zone" => self
                    .note(
                        s.line,
                        format!("`{}` has no equivalent in an upstream here: ignored", s.name),
                    ),
                _ => self.not_translated(s),
            }
        }
        if !backups.is_empty() {
            if primaries.len() == 1 && balance.is_none() {
                balance = Some(Line::new("balance", toml_str("first"), vec![]));
                self.note(
                    d.line,
                    "`backup` servers: with one main server, `balance = \"first\"` does the same (the backups, in order, only while the servers before them are down)",
                );
                primaries.append(&mut backups);
            } else {
                for (entry, source) in &backups {
                    self.warn(
                        d.line,
                        format!("backup server `{entry}` has no equivalent with several main servers or another balancer: left out (commented)"),
                    );
                    up.servers
                        .push((format!("# {}", toml_str(entry)), source.clone()));
                }
            }
        }
        let mut servers: Vec<(String, String)> = primaries
            .into_iter()
            .map(|(entry, source)| (toml_str(&entry), source))
            .collect();
        servers.append(&mut up.servers);
        up.servers = servers;
        if let Some(balance) = balance {
            up.lines.insert(0, balance);
        }
        if let Some(n) = max_fails {
            up.lines
                .push(Line::new("max_fails", n.value.clone(), vec![n.source]));
        }
        if let Some(t) = fail_timeout {
            up.lines.push(Line::new(
                "fail_timeout",
                toml_str(&t.value),
                vec![t.source],
            ));
        }
        if self.upstreams.iter().any(|u| u.name == name) {
            self.warn(d.line, format!("a second `upstream {name}` was skipped"));
            return;
        }
        self.upstreams.push(up);
    }

    /// `max_fails=` / `fail_timeout=` are per server in nginx, per upstream here.
    fn per_server(
        &mut self,
        slot: &mut Option<At<String>>,
        s: &Directive,
        value: &str,
        what: &str,
    ) {
        match slot {
            None => {
                *slot = Some(self.at(s, value.to_owned()));
                self.note(s.line, format!("`{what}=` is set for the whole upstream here, not per server"));
            }
            Some(first) if first.value != value => self.warn(
                s.line,
                format!(
                    "`{what}={value}` differs from the `{}` of an earlier server: the proxy has one per upstream, the first is used",
                    first.value
                ),
            ),
            Some(_) => {}
        }
    }

    fn hash_key(&mut self, d: &Directive) -> String {
        let key = d.arg(0);
        if matches!(key, "$remote_addr" | "$binary_remote_addr") {
            "client_ip".into()
        } else if let Some(header) = key.strip_prefix("$http_") {
            format!("header:{}", header_name_from_variable(header))
        } else if let Some(cookie) = key.strip_prefix("$cookie_") {
            format!("cookie:{cookie}")
        } else {
            self.warn(
                d.line,
                format!("hash key `{key}` is not supported: hashing the client address instead (keys: client_ip, header:NAME, cookie:NAME)"),
            );
            "client_ip".into()
        }
    }

    /// The upstream a `proxy_pass` address names: an `upstream` block, or
    /// a new upstream made of that one address.
    fn upstream_for(&mut self, d: &Directive, https: bool, authority: &str) -> String {
        if self.upstream_blocks.contains(authority) {
            if https {
                self.warn(d.line, format!("`https://{authority}`: TLS to the servers of an upstream block is written on the servers here (\"https://host:port\"); add it to [upstreams.{authority}]"));
            }
            return authority.to_owned();
        }
        let address = with_port(authority, if https { 443 } else { 80 });
        let server = if https {
            format!("https://{address}")
        } else {
            address.clone()
        };
        if let Some(up) = self.upstreams.iter().find(|u| {
            u.source.is_none() && u.servers.first().map(|s| &s.0) == Some(&toml_str(&server))
        }) {
            return up.name.clone();
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let mut name: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let taken = |name: &str| {
            self.upstreams.iter().any(|u| u.name == name) || self.upstream_blocks.contains(name)
        };
        if taken(&name) {
            name = format!("{name}-{}", address.rsplit(':').next().unwrap_or("80"));
        }
        // `q:80`, `q-80:1`, `https://q:80` would give `q`, `q-80`, `q-80`:
        // count on until the name is free, a TOML table is written once.
        let base = name.clone();
        let mut n = 2;
        while taken(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.note(
            d.line,
            format!("`{authority}` is not an upstream block: it became [upstreams.{name}], made of that one address"),
        );
        self.upstreams.push(UpstreamOut {
            name: name.clone(),
            source: None,
            servers: vec![(toml_str(&server), self.src(d))],
            lines: Vec::new(),
            connect: Vec::new(),
            read: Vec::new(),
        });
        name
    }

    // -----------------------------------------------------------------
    // Servers.
    // -----------------------------------------------------------------

    fn server(&mut self, d: &Directive, block: &[Directive], parent: &Scope) {
        let mut scope = parent.clone();
        let mut seen = HashSet::new();
        for inner in block {
            self.inherited(&mut scope, inner, &mut seen);
        }
        let mut server = ServerOut {
            source: self.src(d),
            line: d.line,
            names: Vec::new(),
            names_source: None,
            names_line: d.line,
            catch_all: false,
            default: None,
            listens: Vec::new(),
            lines: Vec::new(),
            rewrites: Vec::new(),
            routes: Vec::new(),
            https_redirect: None,
        };
        let mut server_return: Option<&Directive> = None;
        for inner in block {
            if is_inherited(&inner.name) {
                continue;
            }
            match (inner.name.as_str(), &inner.block) {
                ("listen", None) => self.listen(&mut server, inner),
                ("server_name", None) => self.server_names(&mut server, inner),
                ("location", Some(_)) => {}
                ("return", None) => server_return = Some(inner),
                ("rewrite", None) => {
                    if let Some(rule) = self.rewrite(inner, true) {
                        server.rewrites.push(rule);
                    }
                }
                ("keepalive_timeout", None) => self.warn(inner.line, "`keepalive_timeout` is one setting for the whole proxy here: move it to the `http` level"),
                ("if", Some(_)) => self.warn(inner.line, "`if` blocks are not supported: skipped"),
                ("access_log", None) => self.warn(
                    inner.line,
                    "`access_log` inside a server is not translated: the proxy has one access log, set at the top (`access_log` in the `http` block)",
                ),
                ("error_log", None) => self.note(
                    inner.line,
                    "`error_log` is not needed: the error log goes to stderr, its level chosen with RUST_LOG",
                ),
                ("ssl", None) => {
                    if inner.arg(0) == "on" {
                        for listen in &mut server.listens {
                            listen.tls = true;
                        }
                    }
                }
                ("upstream", Some(inner_block)) => self.upstream(inner, inner_block),
                ("http2", None) => self.not_translated(inner),
                ("root" | "index" | "try_files" | "alias" | "autoindex", None) => self.warn(
                    inner.line,
                    format!("`{}` serves files from disk: the proxy does not serve files (put a file server behind it)", inner.name),
                ),
                _ => self.not_translated(inner),
            }
        }
        if server.listens.is_empty() {
            self.note(
                d.line,
                "no `listen`: nginx listens on port 80, so does this server",
            );
            server.listens.push(Listen {
                addr: "0.0.0.0:80".into(),
                tls: false,
                accept_proxy: false,
                line: d.line,
            });
        }
        let tls = server.listens.iter().any(|l| l.tls);
        if tls {
            self.server_tls(&mut server, &scope, d.line);
        }
        server.lines.extend(self.scope_lines(&scope, None));

        if let Some(ret) = server_return {
            if let Some(status) = https_redirect_status(ret)
                && !tls
            {
                server.https_redirect = Some(self.at(ret, status));
            } else if let Some(route) = self.return_route(ret, "/", false, &mut server) {
                server.routes.push(route);
            }
            for inner in block.iter().filter(|i| i.name == "location") {
                self.warn(
                    inner.line,
                    format!("this location is never used: the server's `return` (line {}) answers every request first", ret.line),
                );
            }
        } else {
            for inner in block.iter().filter(|i| i.name == "location") {
                self.location(&mut server, inner, &scope, &scope);
            }
            // `location / { return 301 https://$host$request_uri; }` makes
            // it a redirect-only server, whatever else it has.
            if !tls
                && let Some(root) = block
                    .iter()
                    .find(|i| i.name == "location" && i.args == ["/"])
                && let Some(ret) = root
                    .block
                    .as_deref()
                    .and_then(|b| b.iter().find(|i| i.name == "return"))
                && let Some(status) = https_redirect_status(ret)
            {
                for other in block
                    .iter()
                    .filter(|i| i.name == "location" && i.line != root.line)
                {
                    self.warn(other.line, "this location is not kept: redirect_https sends every plain-HTTP request of the server to HTTPS (an ACME challenge location needs a server of its own)");
                }
                server.https_redirect = Some(self.at(ret, status));
                server.routes.clear();
                server.rewrites.clear();
            }
        }
        self.servers.push(server);
    }

    fn listen(&mut self, server: &mut ServerOut, d: &Directive) {
        let address = d.arg(0);
        let addr = if address.starts_with('[') {
            self.warn(d.line, format!("IPv6 listen `{address}` skipped: add [[listen]] addr = \"{address}\" by hand if you want it (the IPv4 listener is kept)"));
            return;
        } else if address.starts_with("unix:") {
            self.warn(d.line, "unix-socket listeners are not supported: skipped");
            return;
        } else if let Ok(port) = address.parse::<u16>() {
            format!("0.0.0.0:{port}")
        } else if let Some(port) = address.strip_prefix("*:") {
            format!("0.0.0.0:{port}")
        } else if let Some(port) = address.strip_prefix("localhost:") {
            format!("127.0.0.1:{port}")
        } else if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:80")
        };
        let mut tls = false;
        let mut accept_proxy = false;
        for option in d.args.iter().skip(1) {
            match option.as_str() {
                "ssl" => tls = true,
                "proxy_protocol" => accept_proxy = true,
                "default_server" | "default" => server.default = Some(self.src(d)),
                "http2" => self.note(
                    d.line,
                    "HTTP/2 is offered on every TLS listener (ALPN); nothing to write",
                ),
                other => self.warn(
                    d.line,
                    format!("listen option `{other}` has no equivalent and was left out"),
                ),
            }
        }
        server.listens.push(Listen {
            addr,
            tls,
            accept_proxy,
            line: d.line,
        });
    }

    fn server_names(&mut self, server: &mut ServerOut, d: &Directive) {
        server.names_source = Some(self.src(d));
        server.names_line = d.line;
        for name in &d.args {
            let name = name.to_ascii_lowercase();
            if name == "_" || name.is_empty() {
                server.catch_all = true;
                continue;
            }
            let mut names = Vec::new();
            if name.starts_with('~') {
                self.warn(
                    d.line,
                    format!("regex server name `{name}` is not supported: left out"),
                );
            } else if let Some(base) = name.strip_prefix('.') {
                self.note(
                    d.line,
                    format!("`.{base}` is written as \"{base}\" and \"*.{base}\""),
                );
                names.push(base.to_owned());
                names.push(format!("*.{base}"));
            } else if name.ends_with(".*") {
                self.warn(
                    d.line,
                    format!(
                        "`{name}`: only leading wildcards (`*.example.com`) are supported: left out"
                    ),
                );
            } else {
                names.push(name);
            }
            server.names.extend(names);
        }
    }

    fn server_tls(&mut self, server: &mut ServerOut, scope: &Scope, line: usize) {
        match (&scope.ssl_cert, &scope.ssl_key) {
            (Some(cert), Some(key)) => {
                for path in [cert, key] {
                    if !path.value.starts_with('/') {
                        self.note(path.line, "relative paths are read from the TOML file's folder here (nginx: from its prefix, e.g. /etc/nginx)");
                    }
                }
                server.lines.push(Line::new(
                    "tls",
                    format!(
                        "{{ cert = {}, key = {} }}",
                        toml_str(&cert.value),
                        toml_str(&key.value)
                    ),
                    vec![cert.source.clone(), key.source.clone()],
                ));
            }
            _ => {
                self.warn(line, "an `ssl` server without ssl_certificate and ssl_certificate_key: written with tls = { auto_local = true } (a certificate from the local CA)");
                server
                    .lines
                    .push(Line::new("tls", "{ auto_local = true }".into(), vec![]));
            }
        }
    }

    /// The settings a server (`parent` = None) or a route (differences from
    /// its server, `parent`) writes: limits, body size, access, auth,
    /// compression, caching.
    fn scope_lines(&mut self, scope: &Scope, parent: Option<&Scope>) -> Vec<Line> {
        let mut lines = Vec::new();
        let differs = |a: &dyn Fn(&Scope) -> Vec<usize>| parent.is_none_or(|p| a(p) != a(scope));
        fn lines_of<T>(v: &[At<T>]) -> Vec<usize> {
            v.iter().map(|a| a.line).collect()
        }
        fn line_of<T>(v: &Option<At<T>>) -> Vec<usize> {
            v.iter().map(|a| a.line).collect()
        }

        if differs(&|s| [lines_of(&s.limit_req), line_of(&s.limit_req_status)].concat())
            && let Some(limit) = scope.limit_req.first()
        {
            if scope.limit_req.len() > 1 {
                self.warn(
                    scope.limit_req[1].line,
                    "only one `limit_req` per server or route here: the first one is used",
                );
            }
            self.used_zones.insert(format!("req:{}", limit.value.zone));
            let mut value = format!("{{ zone = {}", toml_str(&limit.value.zone));
            let mut sources = vec![limit.source.clone()];
            if let Some(burst) = limit.value.burst {
                let _ = write!(value, ", burst = {burst}");
            }
            if limit.value.nodelay {
                value.push_str(", nodelay = true");
            }
            if let Some(delay) = limit.value.delay {
                let _ = write!(value, ", delay = {delay}");
            }
            if let Some(status) = &scope.limit_req_status {
                let _ = write!(value, ", status = {}", status.value);
                sources.push(status.source.clone());
            }
            value.push_str(" }");
            lines.push(Line::new("limit_req", value, sources));
        }
        if differs(&|s| [lines_of(&s.limit_conn), line_of(&s.limit_conn_status)].concat())
            && let Some(limit) = scope.limit_conn.first()
        {
            if scope.limit_conn.len() > 1 {
                self.warn(
                    scope.limit_conn[1].line,
                    "only one `limit_conn` per server or route here: the first one is used",
                );
            }
            self.used_zones.insert(format!("conn:{}", limit.value.0));
            let mut value = format!(
                "{{ zone = {}, max = {}",
                toml_str(&limit.value.0),
                limit.value.1
            );
            let mut sources = vec![limit.source.clone()];
            if let Some(status) = &scope.limit_conn_status {
                let _ = write!(value, ", status = {}", status.value);
                sources.push(status.source.clone());
            }
            value.push_str(" }");
            lines.push(Line::new("limit_conn", value, sources));
        }
        if differs(&|s| line_of(&s.body_size))
            && let Some(size) = &scope.body_size
        {
            match nginx_size(&size.value) {
                Some(0) => self.note(
                    size.line,
                    "`client_max_body_size 0` (no limit) is the proxy's default: nothing written",
                ),
                Some(_) => lines.push(Line::new(
                    "max_body_size",
                    toml_str(&size.value.to_ascii_lowercase()),
                    vec![size.source.clone()],
                )),
                None => self.warn(size.line, format!("`{}` is not a size", size.value)),
            }
        }
        if differs(&|s| lines_of(&s.access)) && !scope.access.is_empty() {
            let rules: Vec<String> = scope.access.iter().map(|a| toml_str(&a.value)).collect();
            lines.push(Line::new(
                "access",
                format!("[{}]", rules.join(", ")),
                scope.access.iter().map(|a| a.source.clone()).collect(),
            ));
        }
        if differs(&|s| [line_of(&s.auth_basic), line_of(&s.auth_user_file)].concat())
            && let Some(auth) = &scope.auth_basic
        {
            if auth.value == "off" {
                if parent.is_some() {
                    self.warn(auth.line, "`auth_basic off` in a location: a route cannot switch off its server's basic_auth here; give the other routes basic_auth instead");
                }
            } else {
                let file = scope
                    .auth_user_file
                    .as_ref()
                    .map_or("(no auth_basic_user_file)".to_owned(), |f| f.value.clone());
                self.warn(
                    auth.line,
                    format!("basic auth is NOT active in the output: the passwords in {file} must be re-hashed with `proxy hash-password` and written as basic_auth = {{ realm = ..., users = {{ NAME = \"HASH\" }} }} (a commented line shows where)"),
                );
                lines.push(Line::new(
                    "# basic_auth",
                    format!(
                        "{{ realm = {}, users = {{ NAME = \"HASH from proxy hash-password\" }} }}",
                        toml_str(&auth.value)
                    ),
                    vec![auth.source.clone()],
                ));
            }
        }
        if differs(&|s| {
            [
                line_of(&s.gzip),
                line_of(&s.gzip_types),
                line_of(&s.gzip_min_length),
                line_of(&s.gzip_level),
            ]
            .concat()
        }) {
            match &scope.gzip {
                Some(on) if on.value => {
                    let mut value = "{ algorithms = [\"gzip\"]".to_owned();
                    let mut sources = vec![on.source.clone()];
                    match &scope.gzip_types {
                        Some(types) if types.value.iter().any(|t| t == "*") => {
                            self.note(types.line, "`gzip_types *`: the proxy's default list of compressible types is used instead");
                            sources.push(types.source.clone());
                        }
                        Some(types) => {
                            let mut list = vec![toml_str("text/html")];
                            list.extend(
                                types
                                    .value
                                    .iter()
                                    .filter(|t| *t != "text/html")
                                    .map(|t| toml_str(t)),
                            );
                            let _ = write!(value, ", types = [{}]", list.join(", "));
                            sources.push(types.source.clone());
                        }
                        None => value.push_str(", types = [\"text/html\"]"),
                    }
                    if let Some(min) = &scope.gzip_min_length {
                        match min.value.parse::<u64>() {
                            Ok(n) => {
                                let _ = write!(value, ", min_length = {n}");
                                sources.push(min.source.clone());
                            }
                            Err(_) => self.warn(min.line, "`gzip_min_length` with a unit is not translated: write min_length in bytes"),
                        }
                    }
                    if let Some(level) = &scope.gzip_level {
                        let name = match level.value.parse::<u32>() {
                            Ok(0..=3) => "fastest",
                            Ok(4..=6) => "default",
                            _ => "best",
                        };
                        let _ = write!(value, ", level = \"{name}\"");
                        sources.push(level.source.clone());
                    }
                    value.push_str(" }");
                    self.note(on.line, "compression is on with gzip only, as in nginx; remove `algorithms` to offer zstd and brotli too");
                    lines.push(Line::new("compress", value, sources));
                }
                Some(off) if parent.is_some() => lines.push(Line::new(
                    "compress",
                    "false".into(),
                    vec![off.source.clone()],
                )),
                _ => {}
            }
        }
        if differs(&|s| [line_of(&s.cache), line_of(&s.cache_valid)].concat())
            && let Some(cache) = &scope.cache
        {
            if cache.value == "off" {
                if parent.is_some() {
                    self.warn(cache.line, "`proxy_cache off` in a location: a route cannot switch off its server's cache here");
                }
            } else {
                let mut value = format!("{{ zone = {}", toml_str(&cache.value));
                let mut sources = vec![cache.source.clone()];
                if let Some(valid) = &scope.cache_valid {
                    let _ = write!(
                        value,
                        ", default_ttl = {}",
                        toml_str(&nginx_time(&valid.value))
                    );
                    sources.push(valid.source.clone());
                    self.note(valid.line, "`proxy_cache_valid` becomes default_ttl: it applies to every cacheable status that says nothing itself (200, 301, 404, ...), not only the codes listed");
                }
                value.push_str(" }");
                lines.push(Line::new("cache", value, sources));
            }
        }
        lines
    }

    fn location(
        &mut self,
        server: &mut ServerOut,
        d: &Directive,
        parent: &Scope,
        server_scope: &Scope,
    ) {
        let block = d.block.as_deref().unwrap_or(&[]);
        let (exact, path) = match d.args.as_slice() {
            [path] if path.starts_with('@') => {
                self.warn(
                    d.line,
                    format!("named location `{path}` is not supported: skipped"),
                );
                return;
            }
            [path] => (false, path.clone()),
            [m, path] if m == "=" => (true, path.clone()),
            [m, path] if m == "^~" => {
                self.note(
                    d.line,
                    "`^~` is a plain prefix here (there are no regex locations to skip)",
                );
                (false, path.clone())
            }
            [m, _] if m == "~" || m == "~*" => {
                self.warn(d.line, "regex locations are not supported: skipped (a `rewrite` rule on the server can often do the same job)");
                return;
            }
            _ => {
                self.warn(d.line, "this location form is not supported: skipped");
                return;
            }
        };
        let mut scope = parent.clone();
        let mut seen = HashSet::new();
        for inner in block {
            self.inherited(&mut scope, inner, &mut seen);
        }
        let mut route = RouteOut {
            path: path.clone(),
            exact,
            source: self.src(d),
            lines: Vec::new(),
        };
        let mut proxy_pass = None;
        let mut ret = None;
        let mut rewrites = Vec::new();
        for inner in block {
            if is_inherited(&inner.name) {
                continue;
            }
            match (inner.name.as_str(), &inner.block) {
                ("proxy_pass", None) => proxy_pass = Some(inner),
                ("return", None) => ret = Some(inner),
                ("rewrite", None) => {
                    if let Some(rule) = self.rewrite(inner, false) {
                        rewrites.push(rule);
                    }
                }
                ("location", Some(_)) => {
                    self.note(inner.line, "a nested location becomes a route of its own, with what it inherits from this one");
                    self.location(server, inner, &scope, server_scope);
                }
                ("if", Some(_)) => self.warn(inner.line, "`if` blocks are not supported: skipped"),
                ("root" | "index" | "try_files" | "alias" | "autoindex", None) => self.warn(
                    inner.line,
                    format!("`{}` serves files from disk: the proxy does not serve files (put a file server behind it)", inner.name),
                ),
                _ => self.not_translated(inner),
            }
        }
        // Redirecting rewrites run before routing here, whichever level they
        // are written at, so they go to the server.
        let (redirects, rest): (Vec<_>, Vec<_>) =
            rewrites.into_iter().partition(|r| r.redirect.is_some());
        server.rewrites.extend(redirects);

        if let Some(ret) = ret {
            if proxy_pass.is_some() {
                self.warn(ret.line, "`return` answers before `proxy_pass` is reached: only the return was translated");
            }
            if let Some(mut r) = self.return_route(ret, &path, exact, server) {
                r.source = route.source;
                r.lines.extend(self.response_lines(&scope, server_scope));
                server.routes.push(r);
            }
            return;
        }
        let Some(pass) = proxy_pass else {
            if !rest.is_empty() || block.iter().all(|i| i.name != "rewrite") {
                self.warn(d.line, format!("location `{path}` has no proxy_pass or return: skipped (the proxy only forwards or answers)"));
            }
            return;
        };
        if !self.proxy_pass(&mut route, pass, &path, exact, &scope) {
            return;
        }
        if !rest.is_empty() {
            let rules: Vec<String> = rest.iter().map(rewrite_toml).collect();
            route.lines.push(Line::new(
                "rewrite",
                format!("[{}]", rules.join(", ")),
                rest.iter().map(|r| r.source.clone()).collect(),
            ));
        }
        route.lines.extend(self.request_lines(&scope));
        route
            .lines
            .extend(self.response_lines(&scope, server_scope));
        route
            .lines
            .extend(self.scope_lines(&scope, Some(server_scope)));
        if server
            .routes
            .iter()
            .any(|r| r.path == route.path && r.exact == route.exact)
        {
            self.warn(
                d.line,
                format!("a second location `{path}` was skipped (nginx refuses duplicates)"),
            );
            return;
        }
        server.routes.push(route);
    }

    /// `proxy_pass URL`: the upstream, and what happens to the path.
    fn proxy_pass(
        &mut self,
        route: &mut RouteOut,
        d: &Directive,
        path: &str,
        exact: bool,
        scope: &Scope,
    ) -> bool {
        let url = d.arg(0);
        if url.contains('$') {
            self.warn(
                d.line,
                "`proxy_pass` with variables is not supported: location skipped",
            );
            return false;
        }
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            self.warn(
                d.line,
                format!(
                    "`proxy_pass {url}` is not an http:// or https:// address: location skipped"
                ),
            );
            return false;
        };
        if rest.starts_with("unix:") {
            self.warn(
                d.line,
                "unix-socket upstreams are not supported: location skipped",
            );
            return false;
        }
        let (authority, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let name = self.upstream_for(d, https, authority);
        if !self.said_http10 {
            self.said_http10 = true;
            self.note(d.line, "nginx talks HTTP/1.0 to upstreams and opens a connection per request (unless proxy_http_version 1.1 and keepalive); the proxy uses HTTP/1.1 with pooled keep-alive connections");
        }
        route
            .lines
            .push(Line::new("upstream", toml_str(&name), vec![self.src(d)]));
        match uri {
            None => {}
            Some("/") if !exact => {
                route.lines.push(Line::new(
                    "strip_prefix",
                    "true".into(),
                    vec![format!(
                        "{} (a URI in proxy_pass replaces the location's prefix)",
                        self.src(d)
                    )],
                ));
                if !path.ends_with('/') {
                    self.warn(d.line, format!("`location {path}` without a trailing slash, with a URI in proxy_pass: `{path}/x` reaches the upstream as `//x`, and `{path}x` matches too (as in nginx); `location {path}/` avoids both"));
                }
            }
            Some(uri) => {
                route.lines.push(Line::new(
                    "replace_prefix",
                    toml_str(uri),
                    vec![format!(
                        "{} (a URI in proxy_pass replaces the location's prefix)",
                        self.src(d)
                    )],
                ));
            }
        }
        // Host: nginx sends $proxy_host unless told otherwise.
        let host = scope
            .set_headers
            .iter()
            .find(|h| h.value.0.eq_ignore_ascii_case("host"));
        match host.map(|h| h.value.1.as_str()) {
            Some("$host" | "$http_host") => {}
            Some("$proxy_host") | None => {
                route.lines.push(Line::new(
                    "preserve_host",
                    "false".into(),
                    vec!["nginx's default: Host is the proxy_pass host ($proxy_host)".into()],
                ));
                self.note(d.line, "nginx sends the upstream's own name as Host ($proxy_host) unless `proxy_set_header Host $host`; written preserve_host = false to match (the proxy's default is the client's Host)");
            }
            Some(_) => {}
        }
        for (slot, what) in [
            (&scope.connect_timeout, "connect_timeout"),
            (&scope.read_timeout, "read_timeout"),
        ] {
            if let Some(t) = slot {
                self.note(t.line, format!("nginx sets `proxy_{what}` per location; here it is {what} of [upstreams.{name}], for every route to it"));
                if let Some(up) = self.upstreams.iter_mut().find(|u| u.name == name) {
                    if what == "connect_timeout" {
                        up.connect.push(t.clone());
                    } else {
                        up.read.push(t.clone());
                    }
                }
            }
        }
        true
    }

    /// `proxy_set_header` lines -> preserve_host and `request_headers`.
    fn request_lines(&mut self, scope: &Scope) -> Vec<Line> {
        let mut set = BTreeMap::new();
        let mut remove = Vec::new();
        let mut sources = Vec::new();
        for h in &scope.set_headers {
            let (name, value) = &h.value;
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "host" => {
                    if !matches!(value.as_str(), "$host" | "$http_host" | "$proxy_host")
                        && let Some(value) = self.template(h.line, value)
                    {
                        set.insert(name.clone(), value);
                        sources.push(h.source.clone());
                    }
                }
                "x-real-ip" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" => self.note(
                    h.line,
                    format!("`{name}` is not needed: the proxy always sets X-Real-IP, X-Forwarded-For, -Proto and -Host"),
                ),
                "upgrade" | "connection" => self.note(
                    h.line,
                    format!("`{name}` is not needed: WebSocket and other Upgrade requests pass through without it"),
                ),
                _ if value.is_empty() => {
                    remove.push(name.clone());
                    sources.push(h.source.clone());
                }
                _ => {
                    if name.eq_ignore_ascii_case("x-request-id") && value == "$request_id" {
                        self.note(h.line, "the proxy can also make and echo the id itself: request_id_header = \"X-Request-Id\" at the top");
                    }
                    if let Some(value) = self.template(h.line, value) {
                        set.insert(name.clone(), value);
                        sources.push(h.source.clone());
                    }
                }
            }
        }
        header_rules_line("request_headers", &set, &BTreeMap::new(), &remove, sources)
    }

    /// `add_header` / `proxy_hide_header` -> `response_headers`.
    fn response_lines(&mut self, scope: &Scope, server_scope: &Scope) -> Vec<Line> {
        let mut add = BTreeMap::new();
        let mut remove = Vec::new();
        let mut sources = Vec::new();
        let own: Vec<usize> = scope.add_headers.iter().map(|h| h.line).collect();
        let server_own: Vec<usize> = server_scope.add_headers.iter().map(|h| h.line).collect();
        if own != server_own
            && !server_scope.add_headers.is_empty()
            && let Some(first) = scope.add_headers.first()
        {
            self.note(first.line, format!(
                "nginx quirk: a location with add_header of its own drops every add_header of its server (line {}); the route gets only these, as nginx sends",
                server_scope.add_headers[0].line
            ));
        }
        for h in &scope.add_headers {
            let (name, value, always) = &h.value;
            if !always {
                self.note(h.line, "without `always`, nginx adds this header to 2xx and 3xx answers only; the proxy adds it to every answer");
            }
            if name.eq_ignore_ascii_case("access-control-allow-origin") {
                self.note(h.line, "for CORS the proxy also has `cors = { allow_origins = [...] }`, which answers preflights too");
            }
            if add.contains_key(name) {
                self.warn(
                    h.line,
                    format!("a second add_header `{name}` was left out (one value per name here)"),
                );
                continue;
            }
            if let Some(value) = self.template(h.line, value) {
                add.insert(name.clone(), value);
                sources.push(h.source.clone());
            }
        }
        for h in &scope.hide_headers {
            remove.push(h.value.clone());
            sources.push(h.source.clone());
        }
        header_rules_line("response_headers", &BTreeMap::new(), &add, &remove, sources)
    }

    /// An nginx header value as our template, or `None` (warned) when it
    /// uses a variable the proxy does not have.
    fn template(&mut self, line: usize, value: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = value;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) => (&inner[..end], &inner[end + 1..]),
                    None => (inner, ""),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            let ours = match name {
                "http_host" => "host",
                n if VARIABLES.contains(&n) => n,
                _ => {
                    self.warn(line, format!("variable `${name}` is not known to the proxy (it has ${}): this header was left out", VARIABLES.join(", $")));
                    return None;
                }
            };
            let _ = write!(out, "${{{ours}}}");
            rest = tail;
        }
        out.push_str(rest);
        // `${x}` only where needed, for readability.
        Some(simplify_braces(&out))
    }

    /// `rewrite REGEX REPLACEMENT [flag]`.
    fn rewrite(&mut self, d: &Directive, server_level: bool) -> Option<RewriteOut> {
        let (from, to, flag) = (d.arg(0), d.arg(1), d.arg(2));
        let external =
            to.starts_with("http://") || to.starts_with("https://") || to.starts_with("$scheme");
        let redirect = match flag {
            "permanent" => Some(301),
            "redirect" => Some(302),
            _ if external => Some(302),
            "" | "last" | "break" => None,
            other => {
                self.warn(
                    d.line,
                    format!("rewrite flag `{other}` is not known: rule skipped"),
                );
                return None;
            }
        };
        if !server_level && flag == "last" {
            self.warn(d.line, "`rewrite ... last` in a location: the proxy does not route a request again after a route's rewrite; the new path goes to this route's upstream (as with `break`). Move the rule to the server to have it routed again");
        }
        let to_ours = to.replace("$uri", "$0");
        if let Some(i) = to_ours.find('$') {
            let var = &to_ours[i + 1..];
            if !var.starts_with(|c: char| c.is_ascii_digit() || c == '{') {
                let name: String = var
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if regex_group_names(from).iter().all(|g| *g != name) {
                    self.warn(d.line, format!("rewrite replacement uses `${name}`, which the proxy does not have (only the regex's groups): rule skipped"));
                    return None;
                }
            }
        }
        if regex::Regex::new(from).is_err() {
            self.warn(
                d.line,
                format!("`{from}` is not a regular expression the proxy understands: rule skipped"),
            );
            return None;
        }
        Some(RewriteOut {
            from: from.to_owned(),
            to: to_ours,
            redirect,
            source: self.src(d),
        })
    }

    /// `return` in a location (or a server): a fixed answer or a redirect.
    fn return_route(
        &mut self,
        d: &Directive,
        path: &str,
        exact: bool,
        server: &mut ServerOut,
    ) -> Option<RouteOut> {
        let (code, text) = match d.arg(0).parse::<u16>() {
            Ok(code) => (code, d.arg(1)),
            Err(_) => (302, d.arg(0)),
        };
        if https_redirect_status(d).is_some() && !server.listens.iter().any(|l| l.tls) {
            // A redirect-only server: [`Translator::finish`] makes it
            // `redirect_https` on the HTTPS server.
            return None;
        }
        let mut value = format!("{{ status = {code}");
        if (300..400).contains(&code) {
            if text.contains('$') {
                // A redirect built from the request: a rewrite rule on the
                // server can make it when the variables are the path.
                let prefix = if exact {
                    format!("^({})$", regex::escape(path))
                } else {
                    format!("^({}.*)$", regex::escape(path))
                };
                let to = text.replace("$request_uri", "$1").replace("$uri", "$1");
                if to.contains('$') && !to.contains("$1") || to.matches('$').count() > 1 {
                    self.warn(d.line, format!("`return {code} {text}`: only $request_uri can be used in a redirect here (no $host, $scheme...): skipped; write the site's name instead"));
                    return None;
                }
                server.rewrites.push(RewriteOut {
                    from: prefix,
                    to,
                    redirect: Some(code),
                    source: self.src(d),
                });
                self.note(d.line, "this redirect became a rewrite rule on the server (it keeps the query string, as $request_uri does)");
                return None;
            }
            let _ = write!(value, ", location = {}", toml_str(text));
        } else if !text.is_empty() {
            let _ = write!(value, ", body = {}", toml_str(text));
            if text.contains('$') {
                self.warn(
                    d.line,
                    "variables in a `return` body are sent as written here",
                );
            }
        }
        value.push_str(" }");
        Some(RouteOut {
            path: path.to_owned(),
            exact,
            source: self.src(d),
            lines: vec![Line::new("return", value, vec![self.src(d)])],
        })
    }

    // -----------------------------------------------------------------
    // After the walk: HTTPS redirects, listeners, timeouts; then the text.
    // -----------------------------------------------------------------

    fn finish(&mut self) {
        // A plain-HTTP server that only redirects to https://$host$request_uri
        // is `redirect_https = true` on the HTTPS servers it stands for.
        while let Some(i) = self.servers.iter().position(|s| s.https_redirect.is_some()) {
            let plain = self.servers.remove(i);
            let Some(redirect) = plain.https_redirect.clone() else {
                continue;
            };
            let targets: Vec<usize> = (0..self.servers.len())
                .filter(|&t| self.servers[t].listens.iter().any(|l| l.tls))
                .filter(|&t| {
                    plain.catch_all
                        || plain.default.is_some()
                        || plain.names.is_empty()
                        || self.servers[t]
                            .names
                            .iter()
                            .any(|n| plain.names.contains(n))
                })
                .collect();
            let Some(&first) = targets.first() else {
                self.warn(redirect.line, "a redirect to https://$host$request_uri with no `ssl` server to send clients to: written as a 404 route; add a TLS server and set redirect_https = true on it");
                let mut plain = plain;
                plain.https_redirect = None;
                plain.routes.push(RouteOut {
                    path: "/".into(),
                    exact: false,
                    source: redirect.source.clone(),
                    lines: vec![Line::new("return", "{ status = 404 }".into(), vec![])],
                });
                self.servers.insert(i, plain);
                continue;
            };
            self.note(redirect.line, format!(
                "the plain-HTTP server at line {} only redirected to HTTPS: that is redirect_https = true on the HTTPS server(s) here, which answer its port too",
                plain.line
            ));
            for &t in &targets {
                let target = &mut self.servers[t];
                target.lines.insert(
                    0,
                    Line::new(
                        "redirect_https",
                        "true".into(),
                        vec![redirect.source.clone()],
                    ),
                );
                if redirect.value == 308 {
                    target
                        .lines
                        .insert(1, Line::new("redirect_status", "308".into(), vec![]));
                }
            }
            if !matches!(redirect.value, 301 | 308) {
                self.note(
                    redirect.line,
                    format!(
                        "the proxy redirects to HTTPS with 301 or 308; {} became 301",
                        redirect.value
                    ),
                );
            }
            // Keep its port, and its role as the catch-all.
            for listen in plain.listens {
                self.servers[first].listens.push(listen);
            }
            if plain.default.is_some() && self.servers.iter().all(|s| s.default.is_none()) {
                self.servers[first].default = plain.default.clone();
            }
        }
        self.finish_servers();
        if self.servers.is_empty() {
            self.warn(
                1,
                "no `server` block: the TOML has no [[listen]] and no [[servers]], which the proxy needs; add a `server { listen 80; location / { ... } }`",
            );
        }
    }

    fn finish_servers(&mut self) {
        // A name belongs to one server (nginx warns and ignores the others).
        for server in &mut self.servers {
            let names = std::mem::take(&mut server.names);
            for name in names {
                if self.used_names.insert(name.clone()) {
                    server.names.push(name);
                } else {
                    self.warnings.push(Warning {
                        line: server.names_line,
                        severity: Severity::Warning,
                        message: format!("server name `{name}` is already used by an earlier server: nginx ignores this one too"),
                    });
                }
            }
        }
        let mut default_seen = false;
        for server in &mut self.servers {
            if server.default.is_some() {
                if default_seen {
                    let line = server.line;
                    server.default = None;
                    self.warnings.push(Warning {
                        line,
                        severity: Severity::Warning,
                        message: "a second default_server: the proxy has one default server for every listener, the first is kept".into(),
                    });
                }
                default_seen = true;
            }
            if server.routes.is_empty() {
                self.warnings.push(Warning {
                    line: server.line,
                    severity: Severity::Note,
                    message:
                        "this server has no location the proxy can serve: written with a 404 route"
                            .into(),
                });
                server.routes.push(RouteOut {
                    path: "/".into(),
                    exact: false,
                    source: server.source.clone(),
                    lines: vec![Line::new("return", "{ status = 404 }".into(), vec![])],
                });
            }
        }
        // Timeouts: the longest a location asked for.
        for up in &mut self.upstreams {
            for (list, key) in [(&up.connect, "connect_timeout"), (&up.read, "read_timeout")] {
                let Some(longest) = list
                    .iter()
                    .max_by_key(|t| humantime::parse_duration(&t.value).unwrap_or_default())
                else {
                    continue;
                };
                if list.iter().any(|t| t.value != longest.value) {
                    self.warnings.push(Warning {
                        line: longest.line,
                        severity: Severity::Warning,
                        message: format!("routes to [upstreams.{}] ask for different proxy_{key}s: the longest, {}, is used for all", up.name, longest.value),
                    });
                }
                up.lines.push(Line::new(
                    key,
                    toml_str(&longest.value),
                    vec![longest.source.clone()],
                ));
            }
        }
        // Zones nothing applies.
        for (name, line, _) in &self.req_zones {
            if !self.used_zones.contains(&format!("req:{name}")) {
                self.warnings.push(Warning { line: *line, severity: Severity::Note, message: format!("zone `{name}` is declared but no limit_req uses it: it limits nothing (as in nginx)") });
            }
        }
        for (name, line, _) in &self.conn_zones {
            if !self.used_zones.contains(&format!("conn:{name}")) {
                self.warnings.push(Warning { line: *line, severity: Severity::Note, message: format!("zone `{name}` is declared but no limit_conn uses it: it limits nothing (as in nginx)") });
            }
        }
        // Listeners: every server answers on every one here.
        let all: HashSet<String> = self
            .servers
            .iter()
            .flat_map(|s| s.listens.iter().map(|l| l.addr.clone()))
            .collect();
        if self.servers.len() > 1 {
            for server in &self.servers {
                let own: HashSet<String> = server.listens.iter().map(|l| l.addr.clone()).collect();
                if own != all {
                    self.warnings.push(Warning {
                        line: server.line,
                        severity: Severity::Note,
                        message: "nginx serves this server only on its own `listen` ports; here every server answers on every [[listen]] (by Host)".into(),
                    });
                }
            }
        }
        if !self.servers.iter().any(|s| {
            s.lines.iter().any(|l| l.key == "max_body_size")
                || s.routes
                    .iter()
                    .any(|r| r.lines.iter().any(|l| l.key == "max_body_size"))
        }) && let Some(first) = self.servers.first()
        {
            let line = first.line;
            self.warnings.push(Warning { line, severity: Severity::Note, message: "nginx refuses request bodies over 1 MiB by default (client_max_body_size); the proxy has no limit unless max_body_size is set".into() });
        }
    }
}

/// Directives that are inherited downwards (see [`Scope`]).
fn is_inherited(name: &str) -> bool {
    matches!(
        name,
        "proxy_set_header"
            | "add_header"
            | "proxy_hide_header"
            | "limit_req"
            | "limit_req_status"
            | "limit_conn"
            | "limit_conn_status"
            | "client_max_body_size"
            | "allow"
            | "deny"
            | "auth_basic"
            | "auth_basic_user_file"
            | "gzip"
            | "gzip_types"
            | "gzip_min_length"
            | "gzip_comp_level"
            | "proxy_cache"
            | "proxy_cache_valid"
            | "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "ssl_certificate"
            | "ssl_certificate_key"
    )
}

fn collect_upstream_names(block: &[Directive], names: &mut HashSet<String>) {
    for d in block {
        if d.name == "upstream" {
            names.insert(d.arg(0).to_owned());
        } else if let Some(inner) = &d.block
            && matches!(d.name.as_str(), "http" | "server" | "stream")
        {
            collect_upstream_names(inner, names);
        }
    }
}

/// `return 301 https://$host$request_uri;` (or 302/307/308, `$server_name`,
/// `$http_host`): its status, when `d` is that.
fn https_redirect_status(d: &Directive) -> Option<u16> {
    let code = d.arg(0).parse::<u16>().ok()?;
    let url = d.arg(1);
    let is_redirect = matches!(code, 301 | 302 | 307 | 308)
        && matches!(
            url,
            "https://$host$request_uri"
                | "https://$server_name$request_uri"
                | "https://$http_host$request_uri"
        );
    is_redirect.then_some(code)
}

/// `host[:port]`, with `default` added when there is no port.
fn with_port(address: &str, default: u16) -> String {
    let has_port = address
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if has_port {
        address.to_owned()
    } else {
        format!("{address}:{default}")
    }
}

/// `x_api_key` (from `$http_x_api_key`) -> `X-Api-Key`.
fn header_name_from_variable(variable: &str) -> String {
    variable
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// nginx times: `60` is seconds, `60s`, `1m`, `500ms`, `1h`: for humantime.
fn nginx_time(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{text}s")
    } else {
        text.to_owned()
    }
}

/// nginx sizes: `10m`, `64k`, `1g`, `512`: bytes, or `None`.
fn nginx_size(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last()? {
        b'k' => (&lower[..lower.len() - 1], 1 << 10),
        b'm' => (&lower[..lower.len() - 1], 1 << 20),
        b'g' => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    digits.parse::<u64>().ok().map(|n| n * unit)
}

/// Named groups of a regex: `(?<name>...)` and `(?P<name>...)`.
fn regex_group_names(pattern: &str) -> Vec<String> {
    regex::Regex::new(pattern)
        .map(|re| re.capture_names().flatten().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `${name}` -> `$name` where the next character cannot continue the name.
fn simplify_braces(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = &after[..end];
        let tail = &after[end + 1..];
        if tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            let _ = write!(out, "${{{name}}}");
        } else {
            let _ = write!(out, "${name}");
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn header_rules_line(
    key: &str,
    set: &BTreeMap<String, String>,
    add: &BTreeMap<String, String>,
    remove: &[String],
    sources: Vec<String>,
) -> Vec<Line> {
    let map = |m: &BTreeMap<String, String>| {
        let pairs: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    };
    let mut parts = Vec::new();
    if !set.is_empty() {
        parts.push(format!("set = {}", map(set)));
    }
    if !add.is_empty() {
        parts.push(format!("add = {}", map(add)));
    }
    if !remove.is_empty() {
        let list: Vec<String> = remove.iter().map(|r| toml_str(r)).collect();
        parts.push(format!("remove = [{}]", list.join(", ")));
    }
    if parts.is_empty() {
        return Vec::new();
    }
    vec![Line::new(
        key,
        format!("{{ {} }}", parts.join(", ")),
        sources,
    )]
}

/// Translates a parsed nginx file. `file` names it in the TOML's comments.
pub fn translate(tree: &[Directive], file: &str) -> (String, Vec<Warning>) {
    let mut translator = Translator::new(file);
    translator.main(tree);
    translator.finish();
    translator.finish_streams();
    let toml = translator.render(file);
    let mut warnings = translator.warnings;
    warnings.sort_by_key(|w| w.line);
    (toml, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::import;

    fn run(text: &str) -> (String, Vec<Warning>) {
        let imported = import(text, "t.conf").expect("parses");
        (imported.toml, imported.warnings)
    }

    fn said(warnings: &[Warning], line: usize, text: &str) -> bool {
        warnings
            .iter()
            .any(|w| w.line == line && w.message.contains(text))
    }

    const SERVER: &str = "server {\n listen 8080;\n location / { proxy_pass http://app; proxy_set_header Host $host; }\n}\n";

    #[test]
    fn a_stream_block_becomes_stream_listeners_the_proxy_accepts() {
        let text = "stream {\n proxy_connect_timeout 2s;\n set_real_ip_from 10.0.0.0/8;\n upstream db {\n  server 127.0.0.1:5432 weight=2;\n  server 127.0.0.1:5433;\n  least_conn;\n }\n server {\n  listen 6432 proxy_protocol;\n  proxy_pass db;\n  proxy_protocol on;\n  proxy_timeout 10m;\n }\n server {\n  listen 127.0.0.1:6000;\n  proxy_pass 127.0.0.1:7000;\n  proxy_connect_timeout 1s;\n  ssl_preread on;\n }\n}\n";
        let (toml, warnings) = run(text);
        let config = crate::Config::parse(&toml, "imported.toml")
            .unwrap_or_else(|e| panic!("the proxy refuses:\n{e}\n{toml}"));
        assert!(
            !warnings.iter().any(|w| w.message.contains("refuses")),
            "{warnings:?}"
        );
        assert_eq!(config.streams.len(), 2, "{toml}");
        let first = &config.streams[0];
        assert_eq!(first.addr.to_string(), "0.0.0.0:6432");
        assert!(first.accept_proxy_protocol, "{toml}");
        assert_eq!(
            first.proxy_protocol,
            Some(crate::stream::proxy_protocol::Version::V1)
        );
        assert_eq!(first.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(first.idle_timeout, std::time::Duration::from_secs(600));
        assert_eq!(config.upstreams[first.upstream.expect("a pool")].name, "db");
        let second = &config.streams[1];
        assert_eq!(second.addr.to_string(), "127.0.0.1:6000");
        assert_eq!(second.connect_timeout, std::time::Duration::from_secs(1));
        assert_eq!(second.proxy_protocol, None);
        assert!(!second.accept_proxy_protocol);
        assert!(
            config
                .trusted_proxies
                .contains("10.1.2.3".parse().expect("ip")),
            "{toml}"
        );
        assert!(said(&warnings, 15, "routes nothing"), "{warnings:?}");
        assert!(toml.contains("# t.conf:11: proxy_pass db;"), "{toml}");
    }

    #[test]
    fn ssl_preread_with_a_map_of_the_server_name_becomes_sni_routing() {
        let text = "stream {\n upstream site_a { server 127.0.0.1:9001; }\n map $ssl_preread_server_name $backend {\n  hostnames;\n  a.example.com site_a;\n  .b.example.com 127.0.0.1:9002;\n  ~^c site_a;\n  default site_a;\n }\n server {\n  listen 443;\n  ssl_preread on;\n  preread_timeout 5s;\n  proxy_pass $backend;\n }\n}\n";
        let (toml, warnings) = run(text);
        let config = crate::Config::parse(&toml, "imported.toml")
            .unwrap_or_else(|e| panic!("the proxy refuses:\n{e}\n{toml}"));
        let stream = &config.streams[0];
        let names: Vec<String> = stream.sni.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            names.len(),
            3,
            "a.example.com, b.example.com, *.b.example.com: {toml}"
        );
        let site_a = config
            .upstreams
            .iter()
            .position(|u| u.name == "site_a")
            .expect("site_a");
        assert_eq!(stream.upstream, Some(site_a));
        assert_eq!(stream.preread_timeout, std::time::Duration::from_secs(5));
        assert!(said(&warnings, 7, "regex"), "{warnings:?}");
        assert!(
            !warnings.iter().any(|w| w.message.contains("refuses")),
            "{warnings:?}"
        );
    }

    #[test]
    fn accepting_proxy_headers_without_set_real_ip_from_is_left_out_with_a_warning() {
        let text = "stream {\n server {\n  listen 6432 proxy_protocol;\n  proxy_pass 127.0.0.1:5432;\n }\n server {\n  listen 53 udp;\n  proxy_pass 127.0.0.1:53;\n }\n server {\n  listen 7000;\n }\n}\nhttp {\n server {\n  listen 8080 proxy_protocol;\n  location / { proxy_pass http://a:1; }\n }\n}\n";
        let (toml, warnings) = run(text);
        let config = crate::Config::parse(&toml, "imported.toml")
            .unwrap_or_else(|e| panic!("the proxy refuses:\n{e}\n{toml}"));
        assert_eq!(config.streams.len(), 1, "{toml}");
        assert!(!config.streams[0].accept_proxy_protocol);
        assert!(!config.listeners[0].accept_proxy_protocol);
        assert!(
            said(&warnings, 3, "without `set_real_ip_from`"),
            "{warnings:?}"
        );
        assert!(
            said(&warnings, 16, "without `set_real_ip_from`"),
            "{warnings:?}"
        );
        assert!(said(&warnings, 7, "UDP is not supported"), "{warnings:?}");
        assert!(said(&warnings, 10, "without `proxy_pass`"), "{warnings:?}");
    }

    #[test]
    fn an_http_listen_with_proxy_protocol_accepts_it_from_set_real_ip_from() {
        let text = "set_real_ip_from 127.0.0.1;\nserver {\n listen 8080 proxy_protocol;\n location / { proxy_pass http://a:1; }\n}\n";
        let (toml, warnings) = run(text);
        let config = crate::Config::parse(&toml, "imported.toml")
            .unwrap_or_else(|e| panic!("the proxy refuses:\n{e}\n{toml}"));
        assert!(config.listeners[0].accept_proxy_protocol, "{toml}");
        assert!(!said(&warnings, 3, "proxy_protocol"), "{warnings:?}");
    }

    #[test]
    fn a_setting_repeated_where_nginx_refuses_it_is_written_once_with_a_warning() {
        let (toml, warnings) = run(
            "worker_processes 2;\nworker_processes 4;\nkeepalive_timeout 5s;\nkeepalive_timeout 6s;\nlimit_req_zone $remote_addr zone=a:1m rate=1r/s;\nlimit_req_zone $remote_addr zone=a:1m rate=2r/s;\nserver {\n listen 80;\n client_max_body_size 1m;\n client_max_body_size 2m;\n location / { proxy_pass http://a:1; }\n}\n",
        );
        assert_eq!(toml.matches("\nworkers = ").count(), 1, "{toml}");
        assert_eq!(toml.matches("\nkeepalive_timeout = ").count(), 1, "{toml}");
        assert_eq!(toml.matches("[limit_req_zones.a]").count(), 1, "{toml}");
        assert!(said(&warnings, 2, "repeated"), "{warnings:?}");
        assert!(said(&warnings, 4, "repeated"), "{warnings:?}");
        assert!(
            said(&warnings, 6, "already defined at line 5"),
            "{warnings:?}"
        );
        assert!(
            said(&warnings, 10, "repeated in this block"),
            "{warnings:?}"
        );
        toml::from_str::<toml::Table>(&toml).expect("valid TOML");
    }

    #[test]
    fn nginx_text_in_comments_cannot_start_a_toml_line() {
        let (toml, _) = run(
            "server {\n listen 80;\n server_name \"a\n[x]\ny = 1\";\n location / { proxy_pass http://a:1; }\n}\n",
        );
        assert!(!toml.lines().any(|l| l.starts_with("[x]")), "{toml}");
        toml::from_str::<toml::Table>(&toml).expect("valid TOML");
    }

    #[test]
    fn upstream_options_and_balancers_translate() {
        let (toml, warnings) = run(&format!(
            "upstream app {{\n least_conn;\n server a:1 weight=3 max_fails=2 fail_timeout=5;\n server b:2;\n keepalive 16;\n}}\n{SERVER}"
        ));
        assert!(toml.contains("balance = \"least_conn\""), "{toml}");
        assert!(toml.contains("\"a:1 weight=3\","), "{toml}");
        assert!(toml.contains("max_fails = 2"), "{toml}");
        assert!(toml.contains("fail_timeout = \"5s\""), "{toml}");
        assert!(said(&warnings, 5, "always pooled"));
        let (toml, warnings) = run(&format!(
            "upstream app {{ ip_hash; server a:1; }}\n{SERVER}"
        ));
        assert!(toml.contains("balance = \"hash\"") && toml.contains("hash_key = \"client_ip\""));
        assert!(said(&warnings, 1, "first three bytes"));
        let (toml, _) = run(&format!(
            "upstream app {{ hash $http_x_user consistent; server a:1; }}\n{SERVER}"
        ));
        assert!(toml.contains("hash_key = \"header:X-User\""), "{toml}");
    }

    #[test]
    fn one_main_server_with_backups_becomes_first() {
        let (toml, _) = run(&format!(
            "upstream app {{ server a:1; server b:2 backup; }}\n{SERVER}"
        ));
        assert!(toml.contains("balance = \"first\""), "{toml}");
        let (toml, warnings) = run(&format!(
            "upstream app {{ server a:1; server c:3; server b:2 backup; }}\n{SERVER}"
        ));
        assert!(toml.contains("# \"b:2\""), "{toml}");
        assert!(said(&warnings, 1, "backup server `b:2`"));
    }

    #[test]
    fn limits_and_their_status_translate() {
        let (toml, _) = run(
            "limit_req_zone $binary_remote_addr zone=one:10m rate=5r/s;\nlimit_conn_zone $binary_remote_addr zone=addr:10m;\nserver {\n listen 80;\n limit_req zone=one burst=5 nodelay;\n limit_req_status 429;\n limit_conn addr 10;\n location / { proxy_pass http://a:1; limit_req zone=one delay=2; }\n}\n",
        );
        assert!(
            toml.contains(
                "limit_req = { zone = \"one\", burst = 5, nodelay = true, status = 429 }"
            ),
            "{toml}"
        );
        assert!(
            toml.contains("limit_conn = { zone = \"addr\", max = 10 }"),
            "{toml}"
        );
        assert!(
            toml.contains("limit_req = { zone = \"one\", delay = 2, status = 429 }"),
            "{toml}"
        );
    }

    #[test]
    fn headers_follow_nginx_inheritance() {
        let (toml, warnings) = run(
            "server {\n listen 80;\n add_header X-Frame-Options DENY always;\n location / { proxy_pass http://a:1; }\n location /api/ {\n  proxy_pass http://a:1/;\n  add_header X-Api yes;\n  proxy_hide_header Server;\n  proxy_set_header X-Client \"$remote_addr via $scheme\";\n  proxy_set_header X-Odd $cookie_x;\n }\n}\n",
        );
        assert!(
            toml.contains("response_headers = { add = { \"X-Frame-Options\" = \"DENY\" } }"),
            "{toml}"
        );
        assert!(
            toml.contains("add = { \"X-Api\" = \"yes\" }, remove = [\"Server\"]"),
            "{toml}"
        );
        assert!(
            toml.contains("\"X-Client\" = \"$remote_addr via $scheme\""),
            "{toml}"
        );
        assert!(said(&warnings, 7, "nginx quirk"));
        assert!(said(&warnings, 10, "`$cookie_x` is not known"));
        assert!(toml.contains("strip_prefix = true"));
    }

    #[test]
    fn returns_rewrites_and_redirects_translate() {
        let (toml, warnings) = run(
            "server {\n listen 80;\n rewrite ^/old/(.*)$ /new/$1 last;\n rewrite ^/blog/(\\d+)$ /posts/$1 permanent;\n location = /health { return 200 ok; }\n location /moved/ { return 301 https://example.com$request_uri; }\n location /x/ { proxy_pass http://a:1/v1/; rewrite ^/x/(.*)$ /y/$1 last; }\n location ~ \\.php$ { proxy_pass http://a:1; }\n}\n",
        );
        assert!(
            toml.contains("{ from = \"^/old/(.*)$\", to = \"/new/$1\" }"),
            "{toml}"
        );
        assert!(
            toml.contains("to = \"/posts/$1\", redirect = 301"),
            "{toml}"
        );
        assert!(
            toml.contains(
                "path = \"/health\"\nexact = true\nreturn = { status = 200, body = \"ok\" }"
            ),
            "{toml}"
        );
        assert!(
            toml.contains("to = \"https://example.com$1\", redirect = 301"),
            "{toml}"
        );
        assert!(toml.contains("replace_prefix = \"/v1/\""), "{toml}");
        assert!(said(&warnings, 7, "does not route a request again"));
        assert!(said(&warnings, 8, "regex locations are not supported"));
    }

    #[test]
    fn gzip_cache_timeouts_auth_and_access_translate() {
        let (toml, warnings) = run(
            "worker_processes 4;\nhttp {\n gzip on;\n gzip_types application/json;\n gzip_min_length 256;\n keepalive_timeout 65;\n proxy_cache_path /var/cache keys_zone=pages:10m max_size=1g;\n server {\n  listen 80;\n  client_max_body_size 10M;\n  allow 10.0.0.0/8;\n  deny all;\n  location / {\n   proxy_pass http://a:1;\n   proxy_cache pages;\n   proxy_cache_valid 200 10m;\n   proxy_read_timeout 90;\n   auth_basic \"admin\";\n   auth_basic_user_file /etc/htpasswd;\n  }\n }\n}\n",
        );
        assert!(toml.contains("workers = 4"));
        assert!(toml.contains("keepalive_timeout = \"65s\""));
        assert!(toml.contains("compress = { algorithms = [\"gzip\"], types = [\"text/html\", \"application/json\"], min_length = 256 }"), "{toml}");
        assert!(
            toml.contains("[cache_zones.pages]\nmax_size = \"1g\""),
            "{toml}"
        );
        assert!(
            toml.contains("cache = { zone = \"pages\", default_ttl = \"10m\" }"),
            "{toml}"
        );
        assert!(toml.contains("read_timeout = \"90s\""), "{toml}");
        assert!(toml.contains("max_body_size = \"10m\""));
        assert!(toml.contains("access = [\"allow 10.0.0.0/8\", \"deny all\"]"));
        assert!(toml.contains("# basic_auth = "), "{toml}");
        assert!(said(&warnings, 18, "proxy hash-password"));
        assert!(said(&warnings, 17, "[upstreams.a]"));
    }

    #[test]
    fn client_body_timeout_and_header_buffers_translate_to_valid_limits() {
        let (toml, warnings) = run(
            "http {\n client_body_timeout 30;\n large_client_header_buffers 4 16k;\n server {\n  listen 80;\n  location / { return 200; }\n }\n}\n",
        );
        assert!(toml.contains("client_body_timeout = \"30s\""), "{toml}");
        assert!(toml.contains("max_uri_size = \"16k\""), "{toml}");
        assert!(toml.contains("max_header_size = \"16k\""), "{toml}");
        assert!(toml.contains("max_request_head_size = \"64k\""), "{toml}");
        let config = crate::Config::parse(&toml, "imported.toml");
        assert!(config.is_ok(), "{toml}\n{warnings:?}");
        let (_, warnings) = run("http {\n large_client_header_buffers x;\n}\n");
        assert!(said(&warnings, 2, "is not a count and a size"));
    }

    #[test]
    fn the_access_log_translates_at_the_http_level_and_its_limits_are_said() {
        let (toml, warnings) = run(
            "http {\n access_log /var/log/nginx/access.log;\n error_log /var/log/nginx/error.log warn;\n server {\n  listen 80;\n  access_log off;\n  location / { return 200; }\n }\n}\n",
        );
        assert!(
            toml.contains(
                "access_log = { path = \"/var/log/nginx/access.log\", format = \"combined\" }"
            ),
            "{toml}"
        );
        assert!(said(&warnings, 3, "error log goes to stderr"));
        assert!(said(&warnings, 6, "one access log"));
        let config = crate::Config::parse(&toml, "imported.toml");
        assert!(config.is_ok(), "{toml}\n{warnings:?}");

        let (toml, warnings) = run(
            "http {\n log_format main '$remote_addr';\n access_log logs/a.log main buffer=32k;\n}\n",
        );
        assert!(said(&warnings, 2, "`log_format` is not translated"));
        assert!(said(&warnings, 3, "log format `main` is not translated"));
        assert!(toml.contains("path = \"logs/a.log\""), "{toml}");
        let (toml, _) = run("http {\n access_log off;\n}\n");
        assert!(toml.contains("access_log = { path = \"off\" }"), "{toml}");
        let (toml, warnings) = run("http {\n access_log syslog:server=x;\n}\n");
        assert!(!toml.contains("access_log ="), "{toml}");
        assert!(said(&warnings, 2, "syslog"));
    }

    #[test]
    fn a_server_level_https_redirect_merges_into_the_tls_server() {
        let (toml, warnings) = run(
            "server {\n listen 80;\n server_name a.com;\n return 308 https://$host$request_uri;\n}\nserver {\n listen 443 ssl;\n server_name a.com;\n ssl_certificate a.pem;\n ssl_certificate_key a-key.pem;\n location / { proxy_pass http://x:1; proxy_set_header Host $host; }\n}\n",
        );
        assert_eq!(toml.matches("[[servers]]").count(), 1, "{toml}");
        assert!(toml.contains("redirect_https = true"), "{toml}");
        assert!(toml.contains("redirect_status = 308"), "{toml}");
        assert!(
            toml.contains("tls = { cert = \"a.pem\", key = \"a-key.pem\" }"),
            "{toml}"
        );
        assert!(
            toml.contains("addr = \"0.0.0.0:80\"")
                && toml.contains("addr = \"0.0.0.0:443\"")
                && toml.contains("\ntls = true\n")
        );
        assert!(said(&warnings, 9, "relative paths"));

        let (toml, warnings) =
            run("server {\n listen 80;\n return 301 https://$host$request_uri;\n}\n");
        assert!(toml.contains("return = { status = 404 }"), "{toml}");
        assert!(said(&warnings, 3, "no `ssl` server"));
    }

    #[test]
    fn a_redirect_server_with_other_locations_still_becomes_redirect_https() {
        let (toml, warnings) = run(
            "server {\n listen 80;\n location /.well-known/ { proxy_pass http://acme:1; }\n location / { return 301 https://$host$request_uri; }\n}\nserver {\n listen 443 ssl;\n ssl_certificate a.pem;\n ssl_certificate_key a-key.pem;\n location / { proxy_pass http://x:1; }\n}\n",
        );
        assert!(toml.contains("redirect_https = true"), "{toml}");
        assert_eq!(toml.matches("[[servers]]").count(), 1, "{toml}");
        assert!(said(&warnings, 3, "this location is not kept"));
    }

    /// The pairs `lab/tests/nginx_parity.rs` proves behave alike against a
    /// real nginx: the import must write the same TOML for them.
    #[test]
    fn the_import_agrees_with_the_nginx_parity_pairs() {
        let pairs = [
            ("limit_req zone=one;", r#"limit_req = { zone = "one" }"#),
            (
                "limit_req zone=one burst=5 nodelay;",
                r#"limit_req = { zone = "one", burst = 5, nodelay = true }"#,
            ),
            (
                "limit_req zone=one burst=5;",
                r#"limit_req = { zone = "one", burst = 5 }"#,
            ),
            (
                "limit_req zone=one burst=5 delay=2;",
                r#"limit_req = { zone = "one", burst = 5, delay = 2 }"#,
            ),
            (
                "limit_req zone=one;\nlimit_req_status 429;",
                r#"limit_req = { zone = "one", status = 429 }"#,
            ),
            (
                "limit_conn addr 1;",
                r#"limit_conn = { zone = "addr", max = 1 }"#,
            ),
            ("client_max_body_size 10;", r#"max_body_size = "10""#),
            (
                "allow 10.0.0.0/8;\ndeny all;",
                r#"access = ["allow 10.0.0.0/8", "deny all"]"#,
            ),
        ];
        for (nginx, ours) in pairs {
            let (toml, _) = run(&format!(
                "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;\nlimit_conn_zone $binary_remote_addr zone=addr:1m;\nserver {{\nlisten 80;\n{nginx}\nlocation / {{ proxy_pass http://a:1; }}\n}}\n"
            ));
            assert!(toml.contains(ours), "{nginx} -> {toml}");
        }
    }

    /// Every directive the translator knows, with no arguments and with
    /// odd ones, in every context: warnings, never a panic.
    #[test]
    fn any_arguments_in_any_context_never_panic() {
        let names = [
            "listen",
            "server_name",
            "proxy_pass",
            "return",
            "rewrite",
            "proxy_set_header",
            "add_header",
            "proxy_hide_header",
            "limit_req",
            "limit_req_status",
            "limit_conn",
            "limit_conn_status",
            "limit_req_zone",
            "limit_conn_zone",
            "client_max_body_size",
            "client_body_timeout",
            "large_client_header_buffers",
            "allow",
            "deny",
            "auth_basic",
            "auth_basic_user_file",
            "gzip",
            "gzip_types",
            "gzip_min_length",
            "gzip_comp_level",
            "proxy_cache_path",
            "proxy_cache",
            "proxy_cache_valid",
            "proxy_connect_timeout",
            "proxy_read_timeout",
            "ssl_certificate",
            "ssl_certificate_key",
            "worker_processes",
            "keepalive_timeout",
            "server",
            "hash",
            "ip_hash",
            "least_conn",
            "random",
            "keepalive",
            "include",
            "ssl",
        ];
        let args = [
            "",
            " x",
            " 1 2 3",
            " $foo ${bar}x",
            " unix:/x",
            " [::]:80",
            " = /x y",
            " zone= ~ http://",
            " https://$host$request_uri",
        ];
        for name in names {
            for arg in args {
                let d = format!("{name}{arg};");
                for context in [
                    d.clone(),
                    format!("http {{ {d} }}"),
                    format!("server {{ {d} location / {{ proxy_pass http://a:1; }} }}"),
                    format!(
                        "server {{ listen 443 ssl; location / {{ {d} }} location = /x {{ {d} return 200; }} }}"
                    ),
                    format!(
                        "upstream u {{ {d} }} server {{ location / {{ proxy_pass http://u/; }} }}"
                    ),
                ] {
                    let _ = run(&context);
                }
            }
        }
    }

    #[test]
    fn unknown_directives_are_warned_and_logs_explained() {
        let (_, warnings) = run(
            "error_log /var/log/x;\nhttp {\n access_log off;\n include conf.d/*.conf;\n sendfile on;\n frobnicate 1;\n}\n",
        );
        assert!(said(&warnings, 1, "error log goes to stderr"));
        assert!(!said(&warnings, 3, "access_log"), "{warnings:?}");
        assert!(said(&warnings, 4, "is not followed"));
        assert!(said(&warnings, 5, "not needed"));
        assert!(said(&warnings, 6, "`frobnicate` has no equivalent"));
    }
}
