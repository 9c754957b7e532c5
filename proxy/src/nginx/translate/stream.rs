//! The `stream {}` context: nginx's layer-4 servers become `[[stream]]`
//! listeners.
//!
//! | nginx (`stream {}`)                        | TOML (`[[stream]]`)                      |
//! |--------------------------------------------|------------------------------------------|
//! | `upstream db { server 10.0.0.5:5432; }`    | `[upstreams.db]`, as in `http {}`        |
//! | `listen 5432;`                             | `listen = "0.0.0.0:5432"`                |
//! | `listen 5432 proxy_protocol;`              | `accept_proxy_protocol = true` (with `set_real_ip_from` as `trusted_proxies`) |
//! | `proxy_pass db;`                           | `upstream = "db"`                        |
//! | `proxy_protocol on;`                       | `proxy_protocol = "v1"`                  |
//! | `proxy_connect_timeout 5s;`                | `connect_timeout = "5s"`                 |
//! | `proxy_timeout 10m;`                       | `idle_timeout = "10m"`                   |
//! | `ssl_preread on;` + `proxy_pass $name;` with `map $ssl_preread_server_name $name { ... }` | `sni = { "a.example" = "pool_a" }`, the map's `default` as `upstream` |
//! | `preread_timeout 5s;`                      | `preread_timeout = "5s"`                 |
//!
//! `proxy_protocol`, `proxy_connect_timeout` and `proxy_timeout` written in
//! `stream {}` itself are inherited by its servers, which may set their own.

use super::render::toml_str;
use super::{At, Line, Translator, nginx_time};
use crate::nginx::parse::Directive;

/// One `[[stream]]` to write.
#[derive(Debug, Clone)]
pub(super) struct StreamOut {
    /// `nginx.conf:12: server { ... }`.
    pub(super) source: String,
    /// The listen address, and whether it takes a PROXY header (`proxy_protocol`).
    pub(super) listen: At<String>,
    pub(super) accept_proxy: bool,
    /// The upstream's name (with `sni`: the one for names no entry matches).
    pub(super) upstream: Option<At<String>>,
    /// With `ssl_preread`: server name -> upstream name.
    pub(super) sni: Vec<(String, String)>,
    /// `connect_timeout`, `idle_timeout`, `proxy_protocol`.
    pub(super) lines: Vec<Line>,
}

/// The settings a stream server inherits or sets itself.
const SETTINGS: [&str; 4] = [
    "proxy_protocol",
    "proxy_connect_timeout",
    "proxy_timeout",
    "preread_timeout",
];

/// A `map $ssl_preread_server_name $VAR { ... }`: its entries and default.
#[derive(Debug, Clone, Default)]
struct SniMap {
    entries: Vec<(String, Directive)>,
    default: Option<Directive>,
}

impl Translator {
    /// The `stream {}` block.
    pub(super) fn stream(&mut self, block: &[Directive]) {
        let mut defaults: Vec<Line> = Vec::new();
        let mut maps: Vec<(String, SniMap)> = Vec::new();
        for d in block {
            if d.block.is_none() && SETTINGS.contains(&d.name.as_str()) {
                self.stream_setting(d, &mut defaults);
            }
            if let ("map", Some(inner)) = (d.name.as_str(), &d.block)
                && let Some(map) = self.sni_map(d, inner)
            {
                maps.push(map);
            }
        }
        for d in block {
            match (d.name.as_str(), &d.block) {
                ("upstream", Some(inner)) => self.upstream(d, inner),
                ("server", Some(inner)) => self.stream_server(d, inner, &defaults, &maps),
                ("map", Some(_)) => {}
                (name, None) if SETTINGS.contains(&name) => {}
                ("set_real_ip_from", None) => self.stream_real_ip(d),
                ("ssl_preread", None) => self.warn(
                    d.line,
                    "`ssl_preread` in `stream {}` itself is not translated: write `ssl_preread on;` in each server",
                ),
                _ => self.not_translated(d),
            }
        }
    }

    /// `map $ssl_preread_server_name $VAR { NAME UPSTREAM; ... default UPSTREAM; }`:
    /// routing by the TLS name, `sni` in a `[[stream]]`. Other maps are not translated.
    fn sni_map(&mut self, d: &Directive, inner: &[Directive]) -> Option<(String, SniMap)> {
        let var = d.arg(1).strip_prefix('$');
        let (true, Some(var)) = (d.arg(0) == "$ssl_preread_server_name", var) else {
            self.warn(
                d.line,
                "only `map $ssl_preread_server_name $VAR` is translated in `stream {}`: this map was left out",
            );
            return None;
        };
        let mut map = SniMap::default();
        let mut hostnames = false;
        for e in inner {
            match e.name.as_str() {
                "hostnames" => hostnames = true,
                "default" => map.default = Some(e.clone()),
                name if name.starts_with('~') => self.warn(
                    e.line,
                    format!("regex `{name}` is not supported in `sni` (exact names and `*.suffix`): left out"),
                ),
                name => {
                    let name = name.to_ascii_lowercase();
                    if let Some(domain) = name.strip_prefix('.').filter(|_| hostnames) {
                        map.entries.push((domain.to_owned(), e.clone()));
                        map.entries.push((format!("*.{domain}"), e.clone()));
                    } else {
                        map.entries.push((name, e.clone()));
                    }
                }
            }
        }
        Some((var.to_owned(), map))
    }

    /// One `server {}` of `stream {}`: a `[[stream]]` per `listen`.
    fn stream_server(
        &mut self,
        d: &Directive,
        block: &[Directive],
        defaults: &[Line],
        maps: &[(String, SniMap)],
    ) {
        let mut lines = defaults.to_vec();
        let mut listens: Vec<(At<String>, bool)> = Vec::new();
        let mut upstream: Option<At<String>> = None;
        let mut sni: Vec<(String, String)> = Vec::new();
        let mut routed = false;
        let preread = block
            .iter()
            .any(|s| s.name == "ssl_preread" && s.arg(0) == "on");
        for s in block {
            match (s.name.as_str(), &s.block) {
                ("listen", None) => {
                    if let Some(listen) = self.stream_listen(s) {
                        listens.push(listen);
                    }
                }
                ("proxy_pass", None) => {
                    let target = s.arg(0);
                    let map = target
                        .strip_prefix('$')
                        .and_then(|var| maps.iter().find(|(v, _)| v == var));
                    if let (true, Some((_, map))) = (preread, map) {
                        routed = true;
                        for (name, entry) in &map.entries {
                            let up = self.upstream_for(entry, false, entry.arg(0));
                            if !sni.iter().any(|(n, _)| n == name) {
                                sni.push((name.clone(), up));
                            }
                        }
                        if let Some(default) = &map.default {
                            let up = self.upstream_for(default, false, default.arg(0));
                            upstream = Some(self.at(default, up));
                        }
                    } else if target.contains('$') || target.starts_with("unix:") {
                        self.warn(
                            s.line,
                            format!("`proxy_pass {target}`: only an upstream name or host:port is translated"),
                        );
                    } else {
                        let name = self.upstream_for(s, false, target);
                        upstream = Some(self.at(s, name));
                    }
                }
                (name, None) if SETTINGS.contains(&name) => self.stream_setting(s, &mut lines),
                ("set_real_ip_from", None) => self.stream_real_ip(s),
                ("ssl_preread", None) => {}
                _ => self.not_translated(s),
            }
        }
        if preread && !routed {
            self.note(
                d.line,
                "`ssl_preread on` with a `proxy_pass` that is not a map of $ssl_preread_server_name routes nothing: left out",
            );
        }
        if upstream.is_none() && sni.is_empty() {
            self.warn(
                d.line,
                "a stream `server` without `proxy_pass` was skipped: a [[stream]] passes connections to an upstream",
            );
            return;
        }
        if listens.is_empty() {
            self.warn(d.line, "a stream `server` without `listen` was skipped");
        }
        for (listen, accept_proxy) in listens {
            self.streams.push(StreamOut {
                source: self.src(d),
                listen,
                accept_proxy,
                upstream: upstream.clone(),
                sni: sni.clone(),
                lines: lines.clone(),
            });
        }
    }

    /// `listen 5432 [proxy_protocol]`: the address, and whether a PROXY
    /// header comes first.
    fn stream_listen(&mut self, d: &Directive) -> Option<(At<String>, bool)> {
        let address = d.arg(0);
        let addr = if address.starts_with('[') || address.starts_with("unix:") {
            self.warn(d.line, format!("listen `{address}` skipped: write its [[stream]] listen address by hand (an IPv4 address and port)"));
            return None;
        } else if let Ok(port) = address.parse::<u16>() {
            format!("0.0.0.0:{port}")
        } else if let Some(port) = address.strip_prefix("*:") {
            format!("0.0.0.0:{port}")
        } else if let Some(port) = address.strip_prefix("localhost:") {
            format!("127.0.0.1:{port}")
        } else {
            address.to_owned()
        };
        let mut accept_proxy = false;
        for option in d.args.iter().skip(1) {
            match option.as_str() {
                "proxy_protocol" => accept_proxy = true,
                "udp" => {
                    self.warn(
                        d.line,
                        "UDP is not supported by [[stream]] (TCP only): this listen was skipped",
                    );
                    return None;
                }
                "ssl" => self.warn(
                    d.line,
                    "`listen ... ssl` in stream (TLS termination) is not translated yet: the [[stream]] passes the TLS bytes through",
                ),
                other => self.warn(
                    d.line,
                    format!("listen option `{other}` has no equivalent and was left out"),
                ),
            }
        }
        Some((self.at(d, addr), accept_proxy))
    }

    /// `proxy_protocol on|off`, `proxy_connect_timeout T`, `proxy_timeout T`:
    /// set (or, for `off`, remove) the line in `lines`.
    fn stream_setting(&mut self, d: &Directive, lines: &mut Vec<Line>) {
        let (key, value) = match d.name.as_str() {
            "proxy_protocol" => match d.arg(0) {
                "on" => ("proxy_protocol", Some(toml_str("v1"))),
                "off" => ("proxy_protocol", None),
                other => {
                    self.warn(
                        d.line,
                        format!("`proxy_protocol {other}` is neither on nor off: left out"),
                    );
                    return;
                }
            },
            "proxy_connect_timeout" => ("connect_timeout", Some(toml_str(&nginx_time(d.arg(0))))),
            "preread_timeout" => ("preread_timeout", Some(toml_str(&nginx_time(d.arg(0))))),
            _ => ("idle_timeout", Some(toml_str(&nginx_time(d.arg(0))))),
        };
        lines.retain(|l| l.key != key);
        if let Some(value) = value {
            if key == "proxy_protocol" {
                self.note(
                    d.line,
                    "nginx sends PROXY protocol version 1: `proxy_protocol = \"v1\"` (\"v2\", binary, is also available)",
                );
            }
            lines.push(Line::new(key, value, vec![self.src(d)]));
        }
    }

    /// `set_real_ip_from` in `stream {}`: the peers whose PROXY header is
    /// believed, the proxy's `trusted_proxies` (shared with HTTP).
    fn stream_real_ip(&mut self, d: &Directive) {
        let net = d.arg(0).to_owned();
        if !self.trusted_proxies.iter().any(|t| t.value == net) {
            self.trusted_proxies.push(self.at(d, net));
        }
    }

    /// After the whole file is read: a listener that takes PROXY headers
    /// needs `trusted_proxies` (nginx's `set_real_ip_from`), else the proxy
    /// would refuse the config; without it, `accept_proxy_protocol` is
    /// left out, with a warning.
    pub(super) fn finish_streams(&mut self) {
        if !self.trusted_proxies.is_empty() {
            return;
        }
        let lines: Vec<usize> = self
            .streams
            .iter()
            .filter(|s| s.accept_proxy)
            .map(|s| s.listen.line)
            .chain(
                self.servers
                    .iter()
                    .flat_map(|s| s.listens.iter().filter(|l| l.accept_proxy).map(|l| l.line)),
            )
            .collect();
        for line in lines {
            self.warn(
                line,
                "`listen ... proxy_protocol` without `set_real_ip_from`: the proxy takes PROXY headers only from trusted_proxies, so accept_proxy_protocol was left out; add set_real_ip_from (trusted_proxies) for the proxies in front",
            );
        }
    }
}
