//! Chapter 02, in Rust: which route a request takes, and the path its
//! upstream receives.
//!
//! A reference solution of lab/exercises/02-path-routing/prefix.rs. The
//! proxy's own router is proxy/src/router.rs.

use course_kit::prefix::{PrefixRouter, Route};

/// A route table.
pub struct Routes {
    routes: Vec<Route>,
}

/// Whether `prefix` matches `path` on whole segments.
fn matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        // `/api` matches `/api` and `/api/...`; `/api/` (or `/`) ends with
        // its own slash, so anything after it starts a new segment.
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
    }
}

impl PrefixRouter for Routes {
    fn new(routes: &[Route]) -> Self {
        Routes {
            routes: routes.to_vec(),
        }
    }

    fn route(&self, target: &str) -> Option<(usize, String)> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let (index, route) = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| matches(r.prefix, path))
            .max_by_key(|(_, r)| r.prefix.len())?;
        let mut out = String::with_capacity(target.len());
        if route.strip_prefix {
            let rest = &path[route.prefix.len()..];
            if !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
        } else {
            out.push_str(path);
        }
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Some((index, out))
    }
}
