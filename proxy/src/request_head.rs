//! The request head, checked before anything else reads it.
//!
//! Two kinds of head are refused at the door:
//!
//! - **Too large.** Every byte of a head is held in memory until the head is
//!   complete, so a client sending a huge URI or thousands of headers could
//!   make the proxy hold a lot for nothing. hyper already stops reading an
//!   HTTP/1 head at `max_request_head_size` or `max_headers` and answers 431
//!   itself (the server sets its limits, see [`crate::server`]); this step
//!   applies the finer limits: the URI (`max_uri_size`, 414 URI Too Long) and
//!   each header line (`max_header_size`, 431 Request Header Fields Too
//!   Large), and the same totals for HTTP/2, whose headers hyper does not
//!   count that way.
//! - **A doubtful host.** The `Host` header chooses the virtual server and
//!   may be written into redirects, so it must be one host: an HTTP/1.1
//!   request without one, with two, with one that is not a host name
//!   (`evil.com/x`, `a@b`, `a:80:90`), or whose absolute-form URI names
//!   another host than its `Host` header (`GET http://a/ HTTP/1.1` with
//!   `Host: b`: which one does each party believe?) gets 400, as RFC 9112
//!   section 3.2 asks. (The router believes the URI's authority then, as
//!   RFC 9112 section 3.2.2 says a server must.)

use http::{Request, StatusCode, Version, header};

use crate::config::HeadLimits;
use crate::router::normalize_host;

/// Why a head was refused: the status and a sentence for the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 414 or 431.
    pub status: StatusCode,
    /// What was wrong, and which setting allows more when it is a limit.
    pub reason: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }
}

/// Checks `request`'s head against `limits` and its host (see the module
/// documentation).
pub fn check<B>(limits: &HeadLimits, request: &Request<B>) -> Result<(), Refusal> {
    let uri = request.uri();
    let uri_len = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_size {
        return Err(Refusal::new(
            StatusCode::URI_TOO_LONG,
            "the URI is longer than max_uri_size",
        ));
    }
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "more header lines than max_headers",
        ));
    }
    // "name: value\r\n"
    let mut head = request.method().as_str().len() + uri_len + 12;
    for (name, value) in headers {
        let line = name.as_str().len() + value.len() + 4;
        if line - 2 > limits.max_header_size {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "a header line is longer than max_header_size",
            ));
        }
        head += line;
    }
    if head > limits.max_request_head_size {
        return Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head is larger than max_request_head_size",
        ));
    }
    check_host(request)
}

/// The `Host` rules of RFC 9112 section 3.2, and a host that is a host.
fn check_host<B>(request: &Request<B>) -> Result<(), Refusal> {
    let bad = |reason| Err(Refusal::new(StatusCode::BAD_REQUEST, reason));
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return bad("more than one Host header");
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    let host = match host.map(|h| h.to_str()) {
        Some(Ok(host)) => Some(host),
        Some(Err(_)) => return bad("the Host header is not text"),
        None if request.version() == Version::HTTP_11 && authority.is_none() => {
            return bad("an HTTP/1.1 request needs a Host header");
        }
        None => None,
    };
    let host_name = match host.map(normalize_host) {
        Some(None) => return bad("the Host header is not a host name"),
        Some(Some(name)) => Some(name),
        None => None,
    };
    let authority_name = match authority.map(normalize_host) {
        Some(None) => return bad("the URI's host is not a host name"),
        Some(Some(name)) => Some(name),
        None => None,
    };
    // HTTP/2 clients put the URL's authority in `:authority` and some also
    // send a `Host` of their own (RFC 9113 section 8.3.1 says they must
    // not differ, but only "SHOULD" refuse): only HTTP/1's absolute form,
    // where a client can hide one host behind the other, is refused.
    if let (Some(host), Some(authority)) = (host_name, authority_name)
        && host != authority
        && request.version() < Version::HTTP_2
    {
        return bad("the Host header names another host than the URI");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_HEAD_LIMITS;

    fn check_head(uri: &str, version: Version, headers: &[(&str, &str)]) -> Result<(), Refusal> {
        let mut request = Request::builder().uri(uri).version(version);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        check(&DEFAULT_HEAD_LIMITS, &request.body(()).expect("request"))
    }

    fn status(result: Result<(), Refusal>) -> u16 {
        result.err().map_or(200, |r| r.status.as_u16())
    }

    const H11: Version = Version::HTTP_11;

    #[test]
    fn an_ordinary_head_passes() {
        assert_eq!(
            status(check_head("/a?b=c", H11, &[("host", "app.localhost:8080")])),
            200
        );
        assert_eq!(status(check_head("/", Version::HTTP_10, &[])), 200);
        assert_eq!(status(check_head("http://app.localhost/", H11, &[])), 200);
        assert_eq!(
            status(check_head(
                "http://App.localhost:80/",
                H11,
                &[("host", "app.localhost")]
            )),
            200
        );
    }

    #[test]
    fn sizes_over_the_limits_are_414_and_431() {
        let long = format!("/{}", "a".repeat(9000));
        assert_eq!(status(check_head(&long, H11, &[("host", "a")])), 414);
        let value = "v".repeat(9000);
        assert_eq!(
            status(check_head("/", H11, &[("host", "a"), ("x-big", &value)])),
            431
        );
        let names: Vec<String> = (0..101).map(|i| format!("x-h{i}")).collect();
        let mut many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        many.push(("host", "a"));
        assert_eq!(status(check_head("/", H11, &many)), 431);
        let value = "v".repeat(7000);
        let names: Vec<String> = (0..5).map(|i| format!("x-h{i}")).collect();
        let mut large: Vec<(&str, &str)> =
            names.iter().map(|n| (n.as_str(), value.as_str())).collect();
        large.push(("host", "a"));
        assert_eq!(status(check_head("/", H11, &large)), 431);
    }

    #[test]
    fn a_missing_duplicate_invalid_or_contradicting_host_is_400() {
        assert_eq!(status(check_head("/", H11, &[])), 400);
        assert_eq!(
            status(check_head("/", H11, &[("host", "a"), ("host", "b")])),
            400
        );
        for evil in ["evil.com/x", "a@evil.com", "a:80:90", "", "a b"] {
            assert_eq!(
                status(check_head("/", H11, &[("host", evil)])),
                400,
                "{evil}"
            );
        }
        assert_eq!(
            status(check_head(
                "http://a.localhost/",
                H11,
                &[("host", "b.localhost")]
            )),
            400
        );
    }
}
