//! URL rewriting: changing the path with a regular expression, like nginx's
//! `rewrite ^/old/(.*)$ /new/$1;`, or answering with a redirect to it.
//!
//! ```toml
//! rewrite = [
//!   { from = "^/old/(.*)$", to = "/new/$1" },                      # the upstream gets /new/...
//!   { from = "^/blog/(\\d+)$", to = "/posts/$1", redirect = 301 }, # the client is sent there
//! ]
//! ```
//!
//! `from` is matched against the path (never the query string); `$1`, `$2`,
//! ... and `$name` in `to` are the groups it captured (`${1}x` when a letter
//! or digit follows). The rules are tried in order and the first that
//! matches is the only one applied.
//!
//! The query string is kept: appended to `to`, or after `&` when `to` has a
//! query of its own; a `to` ending in `?` drops it (all as in nginx).
//!
//! Where the rules are written decides when they run:
//! - on a **server**, before the route is chosen: the new path is routed, so
//!   `/old/x` rewritten to `/new/x` is served by the `/new/` route (nginx's
//!   server-level `rewrite`, or `rewrite ... last` in a location);
//! - on a **route**, after it was chosen: the new path is what the route
//!   sends upstream (nginx's `rewrite ... break`).
//!
//! With `redirect` (301, 302, 303, 307 or 308) the proxy does not rewrite but
//! answers the client with that status and `Location: <the new URL>`; `to`
//! may then be a full URL on another site (`https://example.com/$1`).

use http::StatusCode;
use regex::Regex;

/// One validated `rewrite` rule.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    /// The pattern matched against the path.
    pub from: Regex,
    /// The replacement, with `$1` / `$name` group references.
    pub to: String,
    /// Answer with this redirect instead of rewriting.
    pub redirect: Option<StatusCode>,
}

/// The result of the first matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new path and query (or, for a redirect, the URL to send the client to).
    pub target: String,
    /// The redirect status, when the rule redirects.
    pub redirect: Option<StatusCode>,
    /// Which rule matched (index in the list), for the decision trace.
    pub rule: usize,
}

/// Applies the first rule of `rules` whose pattern matches `path`; `None`
/// when none does. `query` is the request's query string, if any.
pub fn apply(rules: &[RewriteRule], path: &str, query: Option<&str>) -> Option<Rewritten> {
    rules.iter().enumerate().find_map(|(index, rule)| {
        let captures = rule.from.captures(path)?;
        let mut target = String::new();
        captures.expand(&rule.to, &mut target);
        match (query, target.strip_suffix('?')) {
            (_, Some(without)) => target.truncate(without.len()),
            (Some(query), None) if !query.is_empty() => {
                target.push(if target.contains('?') { '&' } else { '?' });
                target.push_str(query);
            }
            _ => {}
        }
        Some(Rewritten {
            target,
            redirect: rule.redirect,
            rule: index,
        })
    })
}

/// What is wrong with a rule's `to`, given its pattern: a group reference the
/// pattern does not have (`$2` with one group, `$1x` read as a group named
/// `1x`). Returns the message and the help.
pub fn check_references(from: &Regex, to: &str) -> Result<(), (String, String)> {
    let groups = from.captures_len() - 1;
    let pieces = crate::header_rules::dollar_references(to).map_err(|_| {
        (
            format!("`${{` without a closing `}}` in `{to}`"),
            "write `${1}` or `${name}`; `$$` is a dollar sign".to_owned(),
        )
    })?;
    for piece in pieces {
        let crate::header_rules::Piece::Name(name) = piece else {
            continue;
        };
        let known = match name.parse::<usize>() {
            Ok(n) => n <= groups,
            Err(_) => from.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            let suffix = name.trim_start_matches(|c: char| c.is_ascii_digit());
            let help = if name.is_empty() {
                "write `$$` for a dollar sign".to_owned()
            } else if !suffix.is_empty() && suffix.len() < name.len() {
                let number = &name[..name.len() - suffix.len()];
                format!(
                    "`${name}` is read as a group named `{name}`: write `${{{number}}}{suffix}`"
                )
            } else {
                format!(
                    "`from` has {groups} group{}: `$1` to `${groups}`, or names given with `(?P<name>...)`",
                    if groups == 1 { "" } else { "s" }
                )
            };
            return Err((
                format!("`${name}` in `{to}` names no group of `from`"),
                help,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &str, to: &str, redirect: Option<u16>) -> RewriteRule {
        RewriteRule {
            from: Regex::new(from).expect("regex"),
            to: to.into(),
            redirect: redirect.map(|s| StatusCode::from_u16(s).expect("status")),
        }
    }

    fn target(rules: &[RewriteRule], path: &str, query: Option<&str>) -> Option<String> {
        apply(rules, path, query).map(|r| r.target)
    }

    #[test]
    fn captures_fill_the_replacement_and_the_query_is_kept() {
        let rules = [rule("^/old/(.*)$", "/new/$1", None)];
        assert_eq!(
            target(&rules, "/old/a/b", None).as_deref(),
            Some("/new/a/b")
        );
        assert_eq!(
            target(&rules, "/old/a", Some("x=1")).as_deref(),
            Some("/new/a?x=1")
        );
        assert_eq!(target(&rules, "/other", None), None);
    }

    #[test]
    fn a_query_in_the_replacement_comes_first_and_a_final_question_mark_drops_the_clients() {
        let with_query = [rule("^/search/(\\w+)$", "/find?q=$1", None)];
        assert_eq!(
            target(&with_query, "/search/cats", Some("page=2")).as_deref(),
            Some("/find?q=cats&page=2")
        );
        let dropping = [rule("^/x$", "/y?", None)];
        assert_eq!(target(&dropping, "/x", Some("a=1")).as_deref(), Some("/y"));
    }

    #[test]
    fn the_first_matching_rule_is_the_only_one_applied() {
        let rules = [
            rule("^/a/(.*)$", "/b/$1", None),
            rule("^/b/(.*)$", "/c/$1", Some(301)),
        ];
        let first = apply(&rules, "/a/x", None).expect("matches");
        assert_eq!(
            (first.target.as_str(), first.redirect, first.rule),
            ("/b/x", None, 0)
        );
        let second = apply(&rules, "/b/x", None).expect("matches");
        assert_eq!(second.redirect, Some(StatusCode::MOVED_PERMANENTLY));
        assert_eq!(second.rule, 1);
    }

    #[test]
    fn named_groups_and_braces_work() {
        let rules = [rule(
            "^/u/(?P<user>[a-z]+)/(\\d+)$",
            "/users/${user}/items/${2}x",
            None,
        )];
        assert_eq!(
            target(&rules, "/u/ana/42", None).as_deref(),
            Some("/users/ana/items/42x")
        );
    }

    #[test]
    fn references_to_missing_groups_are_caught() {
        let one = Regex::new("^/old/(.*)$").expect("regex");
        assert!(check_references(&one, "/new/$1").is_ok());
        assert!(check_references(&one, "/cost/$$5").is_ok());
        let (message, help) = check_references(&one, "/new/$2").expect_err("no group 2");
        assert_eq!(message, "`$2` in `/new/$2` names no group of `from`");
        assert!(help.contains("has 1 group"), "{help}");
        let (_, help) = check_references(&one, "/new/$1x").expect_err("group 1x");
        assert!(help.contains("`${1}x`"), "{help}");
        let named = Regex::new("^/(?P<id>\\d+)$").expect("regex");
        assert!(check_references(&named, "/item/$id").is_ok());
        assert!(check_references(&named, "/item/$name").is_err());
    }
}
