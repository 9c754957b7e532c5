//! CORS, answered at the proxy: which other sites' pages may call this one.
//!
//! A browser lets a page from one origin (`http://app.localhost:8080`) read
//! answers from another (`http://api.localhost:8080`) only when the answer
//! says so with `Access-Control-Allow-Origin`. For anything beyond a plain
//! GET or form POST (a JSON body, a custom header, PUT or DELETE) the browser
//! first asks permission with a *preflight*: an `OPTIONS` request carrying
//! `Origin`, `Access-Control-Request-Method` and maybe
//! `Access-Control-Request-Headers`.
//!
//! With `cors = { allow_origins = [...] }` on a server or route, the proxy:
//! - answers preflights itself (204 with the allowed methods and headers, or
//!   403 saying what is not allowed), so they never reach the upstream;
//! - adds `Access-Control-Allow-Origin` (and `-Credentials`,
//!   `-Expose-Headers`) to answers for an allowed origin, with `Vary: Origin`
//!   so caches keep one answer per origin;
//! - adds nothing for other origins: the browser then hides the answer from
//!   the page. (CORS protects the user's browser, not the server: curl reads
//!   any answer.)

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// A validated `cors` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// The origins allowed; `None` means any (`"*"`).
    pub origins: Option<Vec<HeaderValue>>,
    /// Methods a preflight may ask for.
    pub methods: Vec<Method>,
    /// Request headers a preflight may ask for.
    pub headers: Vec<HeaderName>,
    /// Response headers the page may read beyond the simple ones.
    pub expose: Vec<HeaderName>,
    /// Whether the page may send cookies and read the answer
    /// (`Access-Control-Allow-Credentials: true`; not allowed with any origin).
    pub credentials: bool,
    /// How long a browser may remember a preflight's answer.
    pub max_age: Option<Duration>,
}

/// Whether `headers` (of an OPTIONS request) make it a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl Cors {
    /// Whether pages from `origin` may read answers.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.origins.as_ref().is_none_or(|list| {
            list.iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        })
    }

    /// The proxy's answer to a preflight: 204 with the permissions, or 403
    /// naming what the page asked for that is not allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<ProxyBody> {
        let origin = headers.get(header::ORIGIN);
        let method = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let asked_headers: Vec<String> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let refusal = match (origin, &method) {
            (Some(origin), _) if !self.allows(origin) => Some(format!(
                "origin {} is not in allow_origins",
                origin.to_str().unwrap_or("(not text)")
            )),
            (_, None) => Some("Access-Control-Request-Method is not a method".to_owned()),
            (_, Some(m)) if !self.allows_method(m) => {
                Some(format!("method {m} is not in allow_methods"))
            }
            _ => asked_headers
                .iter()
                .find(|h| {
                    !self
                        .headers
                        .iter()
                        .any(|allowed| allowed.as_str() == h.as_str())
                })
                .map(|h| format!("request header {h} is not in allow_headers")),
        };
        if let Some(reason) = refusal {
            let mut response = Response::new(body::full(format!(
                "403 Forbidden: CORS preflight refused: {reason}\n"
            )));
            *response.status_mut() = StatusCode::FORBIDDEN;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            add_vary(response.headers_mut(), "origin");
            return response;
        }
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        self.allow_origin(origin, response.headers_mut());
        let out = response.headers_mut();
        if let Some(value) = join(self.methods.iter().map(Method::as_str)) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
        }
        if let Some(value) = join(self.headers.iter().map(HeaderName::as_str)) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        if let Some(age) = self.max_age {
            out.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(age.as_secs()),
            );
        }
        add_vary(
            out,
            "origin, access-control-request-method, access-control-request-headers",
        );
        response
    }

    /// Adds the CORS headers to an answer for a page from `origin` (nothing
    /// when there is no `Origin` or it is not allowed).
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin else {
            return;
        };
        if !self.allows(origin) {
            add_vary(headers, "origin");
            return;
        }
        self.allow_origin(Some(origin), headers);
        if let Some(value) = join(self.expose.iter().map(HeaderName::as_str)) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }

    /// `Access-Control-Allow-Origin` (and `-Credentials`) for `origin`.
    fn allow_origin(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        match (&self.origins, origin) {
            // Any origin and no cookies: the one answer fits every page.
            (None, _) if !self.credentials => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            (_, Some(origin)) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                add_vary(headers, "origin");
            }
            (_, None) => {}
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn allows_method(&self, method: &Method) -> bool {
        // GET, HEAD and POST are "simple": a browser never needs permission.
        [Method::GET, Method::HEAD, Method::POST].contains(method) || self.methods.contains(method)
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let list: Vec<&str> = items.collect();
    (!list.is_empty())
        .then(|| HeaderValue::from_str(&list.join(", ")).ok())
        .flatten()
}

/// Appends to `Vary`, keeping what the upstream put there.
fn add_vary(headers: &mut HeaderMap, names: &str) {
    let value = match headers.get(header::VARY).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {names}"),
        _ => names.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::VARY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_cors() -> Cors {
        Cors {
            origins: Some(vec![HeaderValue::from_static("http://app.localhost:8080")]),
            methods: vec![Method::GET, Method::POST, Method::DELETE],
            headers: vec![header::CONTENT_TYPE],
            expose: vec![HeaderName::from_static("x-served-by")],
            credentials: false,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn preflight(origin: &str, method: &str, asked: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_str(origin).expect("ascii"),
        );
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).expect("ascii"),
        );
        if !asked.is_empty() {
            headers.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(asked).expect("ascii"),
            );
        }
        headers
    }

    #[test]
    fn an_allowed_preflight_gets_204_with_the_permissions() {
        let answer = api_cors().preflight(&preflight(
            "http://app.localhost:8080",
            "DELETE",
            "Content-Type",
        ));
        assert_eq!(answer.status(), 204);
        let h = answer.headers();
        assert_eq!(
            h["access-control-allow-origin"],
            "http://app.localhost:8080"
        );
        assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-max-age"], "600");
        assert!(h["vary"].to_str().expect("ascii").starts_with("origin"));
    }

    #[test]
    fn a_preflight_asking_for_too_much_gets_403_saying_what() {
        let cors = api_cors();
        for (origin, method, asked, reason) in [
            (
                "http://evil.example",
                "GET",
                "",
                "origin http://evil.example is not in allow_origins",
            ),
            (
                "http://app.localhost:8080",
                "PUT",
                "",
                "method PUT is not in allow_methods",
            ),
            (
                "http://app.localhost:8080",
                "POST",
                "content-type, x-secret",
                "request header x-secret is not in allow_headers",
            ),
        ] {
            let answer = cors.preflight(&preflight(origin, method, asked));
            assert_eq!(answer.status(), 403, "{reason}");
            assert!(!answer.headers().contains_key("access-control-allow-origin"));
        }
    }

    #[test]
    fn answers_name_an_allowed_origin_and_nothing_for_others() {
        let cors = api_cors();
        let mut allowed = HeaderMap::new();
        cors.decorate(
            Some(&HeaderValue::from_static("http://app.localhost:8080")),
            &mut allowed,
        );
        assert_eq!(
            allowed["access-control-allow-origin"],
            "http://app.localhost:8080"
        );
        assert_eq!(allowed["access-control-expose-headers"], "x-served-by");
        let mut other = HeaderMap::new();
        cors.decorate(
            Some(&HeaderValue::from_static("http://evil.example")),
            &mut other,
        );
        assert!(!other.contains_key("access-control-allow-origin"));
        assert_eq!(other["vary"], "origin");
        let mut no_origin = HeaderMap::new();
        cors.decorate(None, &mut no_origin);
        assert!(no_origin.is_empty());
    }

    #[test]
    fn any_origin_is_a_star_without_credentials_and_the_origin_with_them() {
        let mut any = api_cors();
        any.origins = None;
        let origin = HeaderValue::from_static("http://anyone.example");
        let mut h = HeaderMap::new();
        any.decorate(Some(&origin), &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        any.credentials = true;
        let mut h = HeaderMap::new();
        any.decorate(Some(&origin), &mut h);
        assert_eq!(h["access-control-allow-origin"], "http://anyone.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
    }
}
