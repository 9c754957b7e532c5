//! One spelling for every path, before anything looks at it.
//!
//! A URL path can name the same resource in many ways: `/api/../admin` is
//! `/admin`, `/a//b` is `/a/b`, `/%61dmin` is `/admin`. A proxy that routes on
//! the raw text and lets the upstream resolve it is open to *path traversal*:
//! `/api/../admin` matches the `/api/` route (say, public), and the upstream,
//! resolving `..`, serves `/admin` (say, private). The cure is to route on the
//! same path the upstream will act on: [`normalize`] resolves the path first
//! (RFC 3986 section 6.2.2: percent-decoding of unreserved characters, then
//! removing dot-segments), and refuses what has no single meaning:
//!
//! - an escaped separator inside a segment: `%2F` (`/`), `%5C` (`\`, a
//!   separator on Windows servers) and `%00` (ends a string in C). Some
//!   upstreams decode them and some do not, so `/api/..%2Fadmin` would be one
//!   segment to the proxy and two to the upstream;
//! - a `..` that climbs above the root (`/../etc/passwd`);
//! - a `%` not followed by two hex digits.
//!
//! Other escapes (`%20`, `%C3%A9`) are kept, with upper-case hex digits.
//! nginx does much the same (`merge_slashes`, and its own `..` resolution).

use std::borrow::Cow;

/// Why a path has no single meaning; the request gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F`, `%5C` or `%00` inside a segment.
    #[error("an escaped `/`, `\\` or NUL (%2F, %5C, %00) in the path")]
    EncodedSeparator,
    /// More `..` segments than there are segments to climb.
    #[error("a `..` in the path climbs above the root")]
    AboveRoot,
    /// A `%` without two hex digits after it.
    #[error("a `%` in the path is not followed by two hex digits")]
    InvalidEscape,
}

/// The path resolved to its one spelling (see the module documentation);
/// borrowed, with no allocation, when it already is. A path that does not
/// start with `/` (`*` of `OPTIONS *`) is returned as it is.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut ends_with_slash = path.ends_with('/');
    for raw in path[1..].split('/') {
        let segment = decode_unreserved(raw)?;
        match segment.as_str() {
            // `//`: an empty segment, merged like nginx's `merge_slashes`.
            "" => {}
            "." => ends_with_slash = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                ends_with_slash = true;
            }
            _ => {
                segments.push(segment);
                ends_with_slash = path.ends_with('/');
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if ends_with_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` has nothing to resolve: no `%`, no `//`, no dot-segment.
fn is_normal(path: &str) -> bool {
    !path.contains('%')
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// One segment with its unreserved escapes decoded (`%7E` is `~`) and the
/// others kept in upper case.
fn decode_unreserved(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let end = segment[i..].find('%').map_or(bytes.len(), |n| i + n);
            out.push_str(&segment[i..end]);
            i = end;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::InvalidEscape)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(PathError::InvalidEscape)?;
        match value {
            b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(b));
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalize(path).expect("a valid path").into_owned()
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        assert!(matches!(normalize("/api/users/7"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("*"), Ok(Cow::Borrowed("*"))));
    }

    #[test]
    fn dot_segments_and_double_slashes_are_resolved() {
        assert_eq!(ok("/api/../admin"), "/admin");
        assert_eq!(ok("/api/./users"), "/api/users");
        assert_eq!(ok("/a//b///c"), "/a/b/c");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/../"), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/a/b/"), "/a/b/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/api/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a%20b/%7Euser"), "/a%20b/~user");
    }

    #[test]
    fn escaped_separators_are_refused() {
        for path in ["/api/..%2fadmin", "/api/..%2F", "/a%5Cb", "/a%00", "/%2f"] {
            assert_eq!(normalize(path), Err(PathError::EncodedSeparator), "{path}");
        }
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in ["/..", "/../etc/passwd", "/a/../../b", "/%2e%2e/x"] {
            assert_eq!(normalize(path), Err(PathError::AboveRoot), "{path}");
        }
    }

    #[test]
    fn a_broken_escape_is_refused() {
        for path in ["/a%", "/a%2", "/a%zz", "/a%+1"] {
            assert_eq!(normalize(path), Err(PathError::InvalidEscape), "{path}");
        }
    }
}
