//! Writing the TOML: readable text, each setting followed by the nginx line
//! it came from (a comment), in the order a reader expects: top-level
//! settings, zones, listeners, servers with their routes, upstreams.

use std::fmt::Write as _;

use super::{Line, Listen, RewriteOut, Translator};

impl Translator {
    pub(super) fn render(&self, file: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Imported from {} by `proxy import-nginx`.",
            comment_text(file)
        );
        out.push_str("# Each setting names the nginx line it came from; read the warnings too.\n");
        out.push_str("# Check it with `proxy check --config FILE`.\n");
        if !self.top.is_empty() || !self.trusted_proxies.is_empty() {
            out.push('\n');
        }
        for line in &self.top {
            write_line(&mut out, line);
        }
        if !self.trusted_proxies.is_empty() {
            let list: Vec<String> = self
                .trusted_proxies
                .iter()
                .map(|t| toml_str(&t.value))
                .collect();
            write_line(
                &mut out,
                &Line::new(
                    "trusted_proxies",
                    format!("[{}]", list.join(", ")),
                    self.trusted_proxies
                        .iter()
                        .map(|t| t.source.clone())
                        .collect(),
                ),
            );
        }
        for (name, line, lines) in &self.req_zones {
            let _ = writeln!(
                out,
                "\n[limit_req_zones.{}]{}",
                toml_key(name),
                pad_comment(
                    &format!("[limit_req_zones.{name}]"),
                    &format!("{file}:{line}")
                )
            );
            for l in lines {
                write_line(&mut out, l);
            }
        }
        for (name, line, lines) in &self.conn_zones {
            let _ = writeln!(
                out,
                "\n[limit_conn_zones.{}]{}",
                toml_key(name),
                pad_comment(
                    &format!("[limit_conn_zones.{name}]"),
                    &format!("{file}:{line}")
                )
            );
            for l in lines {
                write_line(&mut out, l);
            }
        }
        for (name, lines) in &self.cache_zones {
            let _ = writeln!(out, "\n[cache_zones.{}]", toml_key(name));
            for l in lines {
                write_line(&mut out, l);
            }
        }
        let mut listens: Vec<&Listen> = Vec::new();
        for server in &self.servers {
            for l in &server.listens {
                if !listens.iter().any(|x| x.addr == l.addr) {
                    listens.push(l);
                }
            }
        }
        for l in listens {
            out.push_str("\n[[listen]]\n");
            write_line(
                &mut out,
                &Line::new(
                    "addr",
                    toml_str(&l.addr),
                    vec![format!("{}:{}", file, l.line)],
                ),
            );
            if l.tls {
                out.push_str("tls = true\n");
            }
            if l.accept_proxy && !self.trusted_proxies.is_empty() {
                out.push_str("accept_proxy_protocol = true\n");
            }
        }
        for s in &self.streams {
            let _ = writeln!(out, "\n[[stream]]{}", pad_comment("[[stream]]", &s.source));
            write_line(
                &mut out,
                &Line::new(
                    "listen",
                    toml_str(&s.listen.value),
                    vec![s.listen.source.clone()],
                ),
            );
            if let Some(upstream) = &s.upstream {
                write_line(
                    &mut out,
                    &Line::new(
                        "upstream",
                        toml_str(&upstream.value),
                        vec![upstream.source.clone()],
                    ),
                );
            }
            if !s.sni.is_empty() {
                let entries: Vec<String> = s
                    .sni
                    .iter()
                    .map(|(name, up)| format!("{} = {}", toml_str(name), toml_str(up)))
                    .collect();
                let _ = writeln!(out, "sni = {{ {} }}", entries.join(", "));
            }
            if s.accept_proxy && !self.trusted_proxies.is_empty() {
                out.push_str("accept_proxy_protocol = true\n");
            }
            for line in &s.lines {
                write_line(&mut out, line);
            }
        }
        for server in &self.servers {
            let _ = writeln!(
                out,
                "\n[[servers]]{}",
                pad_comment("[[servers]]", &server.source)
            );
            let mut names: Vec<String> = server.names.iter().map(|n| toml_str(n)).collect();
            if server.catch_all && names.is_empty() {
                names.push(toml_str("_"));
            }
            write_line(
                &mut out,
                &Line::new(
                    "server_names",
                    format!("[{}]", names.join(", ")),
                    server.names_source.iter().cloned().collect(),
                ),
            );
            if let Some(source) = &server.default {
                write_line(
                    &mut out,
                    &Line::new("default", "true".into(), vec![source.clone()]),
                );
            }
            for line in &server.lines {
                write_line(&mut out, line);
            }
            if !server.rewrites.is_empty() {
                out.push_str("rewrite = [\n");
                for r in &server.rewrites {
                    let _ = writeln!(
                        out,
                        "  {},{}",
                        rewrite_toml(r),
                        pad_comment(&format!("  {},", rewrite_toml(r)), &r.source)
                    );
                }
                out.push_str("]\n");
            }
            for route in &server.routes {
                let _ = writeln!(
                    out,
                    "\n[[servers.routes]]{}",
                    pad_comment("[[servers.routes]]", &route.source)
                );
                write_line(&mut out, &Line::new("path", toml_str(&route.path), vec![]));
                if route.exact {
                    out.push_str("exact = true\n");
                }
                for line in &route.lines {
                    write_line(&mut out, line);
                }
            }
        }
        for up in &self.upstreams {
            let _ = writeln!(
                out,
                "\n[upstreams.{}]{}",
                toml_key(&up.name),
                up.source
                    .as_ref()
                    .map(|s| pad_comment(&format!("[upstreams.{}]", up.name), s))
                    .unwrap_or_default()
            );
            out.push_str("servers = [\n");
            for (server, source) in &up.servers {
                let text = if server.starts_with('#') {
                    format!("  {server}")
                } else {
                    format!("  {server},")
                };
                let _ = writeln!(out, "{text}{}", pad_comment(&text, source));
            }
            out.push_str("]\n");
            for line in &up.lines {
                write_line(&mut out, line);
            }
        }
        out
    }
}

pub(super) fn rewrite_toml(r: &RewriteOut) -> String {
    let mut text = format!("{{ from = {}, to = {}", toml_str(&r.from), toml_str(&r.to));
    if let Some(code) = r.redirect {
        let _ = write!(text, ", redirect = {code}");
    }
    text.push_str(" }");
    text
}

/// A TOML string: literal ('...') when that needs no escape and the text
/// has a backslash (regexes read better), else basic ("...").
pub(super) fn toml_str(text: &str) -> String {
    let plain = !text.chars().any(|c| c.is_control() || c == '\'');
    if plain && text.contains('\\') {
        return format!("'{text}'");
    }
    format!("\"{}\"", crate::config::basic_string_content(text))
}

/// A table key: bare when it can be, else quoted.
pub(super) fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_owned()
    } else {
        toml_str(name)
    }
}

pub(super) fn pad_comment(text: &str, comment: &str) -> String {
    let width = text.chars().count();
    let pad = if width < 40 { 40 - width } else { 2 };
    format!("{}# {}", " ".repeat(pad), comment_text(comment))
}

/// Text for a TOML comment: a comment ends at the line's end and may hold no
/// control character but a tab, so the nginx text quoted in it (a quoted
/// argument may span lines) has those escaped; else it would end the comment
/// and the rest would be read as TOML keys.
pub(super) fn comment_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into();
    }
    text.chars()
        .map(|c| match c {
            '\t' => "\t".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect::<String>()
        .into()
}

pub(super) fn write_line(out: &mut String, line: &Line) {
    let text = format!("{} = {}", line.key, line.value);
    let sources: Vec<String> = line.sources.to_vec();
    match sources.as_slice() {
        [] => {
            let _ = writeln!(out, "{text}");
        }
        [one] => {
            let _ = writeln!(out, "{text}{}", pad_comment(&text, one));
        }
        many => {
            for source in many {
                let _ = writeln!(out, "# {}", comment_text(source));
            }
            let _ = writeln!(out, "{text}");
        }
    }
}
