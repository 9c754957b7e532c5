//! Header rules: headers the configuration adds, sets or removes on the way
//! in (to the upstream) and on the way out (to the client), like nginx's
//! `proxy_set_header`, `add_header` and `proxy_hide_header`.
//!
//! ```toml
//! request_headers  = { set = { "X-Env" = "lab", "X-Client" = "$remote_addr" }, remove = ["X-Debug"] }
//! response_headers = { add = { "Access-Control-Allow-Origin" = "*" }, remove = ["Server"] }
//! ```
//!
//! Each rule set runs in this order: `remove` the listed headers, then `set`
//! (replace any value the message had), then `add` (one more value, keeping
//! those already there). A server's rules run first, then the route's, so a
//! route can refine what its server does. (nginx differs here: a `location`
//! with any `add_header` of its own silently drops all of its server's.)
//!
//! Response rules apply to every answer of the route, the proxy's own error
//! pages included (nginx needs `add_header ... always` for that).
//!
//! Values are templates with variables, named as in nginx:
//!
//! | variable          | value                                                 |
//! |-------------------|-------------------------------------------------------|
//! | `$remote_addr`    | the client's address (after `trusted_proxies`)        |
//! | `$host`           | the host the client asked for, without port           |
//! | `$scheme`         | `http` or `https`, as the client connected            |
//! | `$request_id`     | the request's id (see [`crate::request_id`])          |
//! | `$request_uri`    | the path and query as the client sent them            |
//! | `$request_method` | the method                                            |
//!
//! `${host}` separates a name from text that follows; `$$` is a dollar sign.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A header value with variables, parsed once when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A variable a template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `$remote_addr`
    RemoteAddr,
    /// `$host`
    Host,
    /// `$scheme`
    Scheme,
    /// `$request_id`
    RequestId,
    /// `$request_uri`
    RequestUri,
    /// `$request_method`
    RequestMethod,
}

impl Var {
    /// Every variable, with its name.
    pub const ALL: [(&'static str, Var); 6] = [
        ("remote_addr", Var::RemoteAddr),
        ("host", Var::Host),
        ("scheme", Var::Scheme),
        ("request_id", Var::RequestId),
        ("request_uri", Var::RequestUri),
        ("request_method", Var::RequestMethod),
    ];
}

/// What went wrong parsing a template, for the config's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl Template {
    /// Parses `text`, finding its `$variables`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let pieces = dollar_references(text).map_err(|UnclosedBrace| TemplateError {
            message: format!("`${{` without a closing `}}` in `{text}`"),
            help: "write `${name}`, or `$$` for a dollar sign".into(),
        })?;
        let mut parts = Vec::new();
        let mut literal = String::new();
        for piece in pieces {
            let name = match piece {
                Piece::Text(text) => {
                    literal.push_str(text);
                    continue;
                }
                Piece::Name(name) => name,
            };
            let Some(&(_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = Var::ALL.iter().map(|(n, _)| format!("${n}")).collect();
                return Err(TemplateError {
                    message: if name.is_empty() {
                        format!("a `$` without a variable name in `{text}`")
                    } else {
                        format!("unknown variable `${name}` in `{text}`")
                    },
                    help: format!(
                        "the variables are {}; write `$$` for a dollar sign",
                        known.join(", ")
                    ),
                });
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if let Some(Part::Text(text)) = parts.iter().find(|p| match p {
            Part::Text(t) => HeaderValue::from_str(t).is_err(),
            Part::Var(_) => false,
        }) {
            return Err(TemplateError {
                message: format!("`{text}` has characters a header value cannot hold"),
                help: "use printable ASCII text, without line breaks".into(),
            });
        }
        Ok(Template { parts })
    }

    /// The header value for one request; `None` if a variable's value made it
    /// invalid (it never does with the variables above, which are all header
    /// text already).
    pub fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        if let [Part::Text(text)] = self.parts.as_slice() {
            return HeaderValue::from_str(text).ok();
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => vars.write(*var, &mut out),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(&text.replace('$', "$$"))?,
                Part::Var(var) => {
                    let name = Var::ALL
                        .iter()
                        .find(|(_, v)| v == var)
                        .map_or("?", |(n, _)| n);
                    write!(f, "${{{name}}}")?;
                }
            }
        }
        Ok(())
    }
}

/// A piece of a text that may name things with `$`: literal text, or a
/// `$name` / `${name}` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text as it is (`$$` gives a `$` of its own).
    Text(&'a str),
    /// The name after a `$` (empty for a lone `$`).
    Name(&'a str),
}

/// A `${` without its `}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnclosedBrace;

/// Splits `text` at its `$` references, with the rules header templates and
/// `rewrite` replacements (the regex crate's) share: `$name` takes the
/// longest run of letters, digits and `_`, `${name}` ends at `}`, and `$$`
/// is a dollar sign.
pub(crate) fn dollar_references(text: &str) -> Result<Vec<Piece<'_>>, UnclosedBrace> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        if dollar > 0 {
            pieces.push(Piece::Text(&rest[..dollar]));
        }
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            pieces.push(Piece::Text("$"));
            rest = tail;
            continue;
        }
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').ok_or(UnclosedBrace)?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        pieces.push(Piece::Name(name));
        rest = tail;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The values of the variables for one request.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    /// `$remote_addr`
    pub remote_addr: std::net::IpAddr,
    /// `$host`: lower case, without its port.
    pub host: std::borrow::Cow<'a, str>,
    /// `$scheme`
    pub scheme: &'a str,
    /// `$request_id`
    pub request_id: &'a HeaderValue,
    /// `$request_uri`
    pub request_uri: &'a str,
    /// `$request_method`
    pub request_method: &'a str,
}

impl Vars<'_> {
    fn write(&self, var: Var, out: &mut String) {
        use std::fmt::Write as _;
        match var {
            Var::RemoteAddr => {
                let _ = write!(out, "{}", self.remote_addr);
            }
            Var::Host => out.push_str(&self.host),
            Var::Scheme => out.push_str(self.scheme),
            Var::RequestId => out.push_str(self.request_id.to_str().unwrap_or("-")),
            Var::RequestUri => out.push_str(self.request_uri),
            Var::RequestMethod => out.push_str(self.request_method),
        }
    }
}

/// One direction's rules (`request_headers` or `response_headers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Headers taken out.
    pub remove: Vec<HeaderName>,
    /// Headers whose value is replaced (or created).
    pub set: Vec<(HeaderName, Template)>,
    /// Headers given one more value.
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderRules {
    /// Applies the rules to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, template) in &self.set {
            match template.render(vars) {
                Some(value) => headers.insert(name.clone(), value),
                None => headers.remove(name),
            };
        }
        for (name, template) in &self.add {
            if let Some(value) = template.render(vars) {
                headers.append(name.clone(), value);
            }
        }
    }
}

/// Headers a rule may not touch, because the proxy or the connection owns
/// them: changing them would break the message's framing or the connection.
pub fn is_protected(name: &HeaderName) -> bool {
    use http::header;
    [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(id: &HeaderValue) -> Vars<'_> {
        Vars {
            remote_addr: "203.0.113.7".parse().expect("ip"),
            host: "app.localhost".into(),
            scheme: "https",
            request_id: id,
            request_uri: "/a?b=1",
            request_method: "GET",
        }
    }

    fn render(text: &str) -> String {
        let id = HeaderValue::from_static("abc123");
        let value = Template::parse(text)
            .expect("parses")
            .render(&vars(&id))
            .expect("valid");
        value.to_str().expect("ascii").to_owned()
    }

    #[test]
    fn variables_are_replaced_by_the_requests_values() {
        assert_eq!(render("lab"), "lab");
        assert_eq!(render("$remote_addr"), "203.0.113.7");
        assert_eq!(
            render("$scheme://$host$request_uri"),
            "https://app.localhost/a?b=1"
        );
        assert_eq!(render("id=${request_id}x"), "id=abc123x");
        assert_eq!(render("$request_method costs $$5"), "GET costs $5");
    }

    #[test]
    fn unknown_or_broken_variables_say_what_exists() {
        let err = Template::parse("$remote_ip").expect_err("unknown");
        assert_eq!(err.message, "unknown variable `$remote_ip` in `$remote_ip`");
        assert!(err.help.contains("$remote_addr"), "{}", err.help);
        assert!(Template::parse("${host").is_err());
        assert!(Template::parse("5 $").is_err());
        assert!(Template::parse("line\nbreak").is_err());
    }

    #[test]
    fn a_template_prints_as_it_can_be_written() {
        let template = Template::parse("$host costs $$5").expect("parses");
        assert_eq!(template.to_string(), "${host} costs $$5");
        assert_eq!(Template::parse(&template.to_string()), Ok(template));
    }

    #[test]
    fn rules_remove_then_set_then_add() {
        let id = HeaderValue::from_static("abc123");
        let rules = HeaderRules {
            remove: vec![HeaderName::from_static("server")],
            set: vec![(
                HeaderName::from_static("x-env"),
                Template::parse("lab").expect("parses"),
            )],
            add: vec![(
                HeaderName::from_static("x-env"),
                Template::parse("$scheme").expect("parses"),
            )],
        };
        let mut headers = HeaderMap::new();
        headers.insert("server", HeaderValue::from_static("upstream/1.0"));
        headers.insert("x-env", HeaderValue::from_static("prod"));
        rules.apply(&mut headers, &vars(&id));
        assert!(headers.get("server").is_none());
        let values: Vec<&str> = headers
            .get_all("x-env")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(values, ["lab", "https"]);
    }

    #[test]
    fn framing_headers_are_protected() {
        assert!(is_protected(&http::header::CONTENT_LENGTH));
        assert!(is_protected(&HeaderName::from_static("keep-alive")));
        assert!(!is_protected(&http::header::HOST));
        assert!(!is_protected(&HeaderName::from_static("x-env")));
    }
}
