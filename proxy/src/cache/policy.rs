//! The rules of HTTP caching (RFC 9111) as pure functions: which responses a
//! shared cache may keep, for how long they are fresh, how old they are, and
//! whether a client's conditional request is already satisfied. No clocks are
//! read here: callers pass "now", so every rule is tested on fixed inputs.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// The largest number of seconds a directive may say: RFC 9111 section 1.2.2
/// says a bigger delta-seconds counts as 2^31.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The `Cache-Control` directives this cache understands, from a request or a
/// response. Unknown directives are ignored, as the RFC asks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// Do not store this at all (request or response).
    pub no_store: bool,
    /// Response: may be stored, but must be revalidated before every use.
    /// Request: the client wants the origin asked (revalidation at least).
    pub no_cache: bool,
    /// Response: for one user's browser only; a shared cache must not keep it.
    pub private: bool,
    /// Response: may be stored even where it normally would not be
    /// (a request with `Authorization`, a response with `Set-Cookie`).
    pub public: bool,
    /// Seconds the response is fresh (or, in a request, the oldest response
    /// the client accepts).
    pub max_age: Option<u64>,
    /// Like `max-age`, for shared caches only; wins over it here.
    pub s_maxage: Option<u64>,
    /// Once stale, never served without asking the origin.
    pub must_revalidate: bool,
    /// `must-revalidate` for shared caches only.
    pub proxy_revalidate: bool,
    /// Seconds a stale response may still be served while it is refreshed in
    /// the background (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
}

impl CacheControl {
    /// Reads every `Cache-Control` line. When a directive appears twice,
    /// the most careful value (the smallest number of seconds) wins, and a
    /// number that does not parse counts as 0.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else {
                continue;
            };
            for directive in split_list(text) {
                let (name, argument) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = |old: Option<u64>| {
                    let new = argument.map_or(0, delta_seconds);
                    Some(old.map_or(new, |old| old.min(new)))
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "max-age" => cc.max_age = seconds(cc.max_age),
                    "s-maxage" => cc.s_maxage = seconds(cc.s_maxage),
                    "stale-while-revalidate" => {
                        cc.stale_while_revalidate = seconds(cc.stale_while_revalidate);
                    }
                    _ => {}
                }
            }
        }
        cc
    }

    /// A request's directives; the old `Pragma: no-cache` counts as
    /// `Cache-Control: no-cache` when there is no `Cache-Control`.
    pub fn of_request(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::parse(headers);
        if !headers.contains_key(header::CACHE_CONTROL)
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(split_list)
                .any(|d| d.eq_ignore_ascii_case("no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    /// Whether a stale copy may never be served without asking the origin:
    /// `must-revalidate`, `proxy-revalidate`, or `s-maxage` (which implies
    /// `proxy-revalidate`, RFC 9111 section 5.2.2.10).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

/// Splits a comma-separated header value, keeping commas inside quotes.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    text.split(move |c: char| {
        if c == '"' {
            quoted = !quoted;
        }
        c == ',' && !quoted
    })
    .map(str::trim)
    .filter(|s| !s.is_empty())
}

/// `delta-seconds`: digits; too big is 2^31, anything else is 0.
fn delta_seconds(text: &str) -> u64 {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    text.parse::<u64>()
        .map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS))
}

/// Why a response was not stored; its name goes into `Cache-Status` as the
/// `detail`, so a learner sees the reason in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Only responses to GET are stored.
    Method,
    /// The request said `Cache-Control: no-store`.
    RequestNoStore,
    /// The response said `no-store`.
    NoStore,
    /// The response said `private`: for the user's own browser cache only.
    Private,
    /// The request carried `Authorization` and the response did not say
    /// `public`, `s-maxage` or `must-revalidate`: it may be one user's data.
    Authorization,
    /// The response sets a cookie and did not say `public`.
    SetCookie,
    /// `Vary: *`: the response depends on things no header shows.
    VaryAny,
    /// A status that is never stored (206, 304, 1xx) or not stored without
    /// explicit freshness (302, 500, ...).
    Status,
    /// Nothing says how long it is fresh, and the route has no `default_ttl`.
    NoFreshness,
    /// The body is larger than the zone's `max_entry_size`.
    TooLarge,
}

impl NotStored {
    /// The reason as a `Cache-Status` `detail` token.
    pub fn detail(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryAny => "vary-star",
            NotStored::Status => "status",
            NotStored::NoFreshness => "no-freshness",
            NotStored::TooLarge => "too-large",
        }
    }
}

/// Statuses a cache may store without any freshness information, guessing a
/// lifetime (RFC 9110 section 15.1 "heuristically cacheable"); here the guess
/// is the route's `default_ttl`.
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a shared cache may store this response to this request, and if
/// so, its freshness lifetime (RFC 9111 section 3).
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    default_ttl: Option<Duration>,
    now: SystemTime,
) -> Result<Duration, NotStored> {
    let cc = CacheControl::parse(response);
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if CacheControl::of_request(request).no_store {
        return Err(NotStored::RequestNoStore);
    }
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if request.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if response.contains_key(header::SET_COOKIE) && !cc.public {
        return Err(NotStored::SetCookie);
    }
    if vary_names(response).is_none() {
        return Err(NotStored::VaryAny);
    }
    if status.is_informational()
        || matches!(
            status,
            StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return Err(NotStored::Status);
    }
    match explicit_lifetime(&cc, response, now) {
        Some(lifetime) => Ok(lifetime),
        None if !(is_heuristically_cacheable(status) || cc.public) => Err(NotStored::Status),
        None => default_ttl.ok_or(NotStored::NoFreshness),
    }
}

/// How long the response says it is fresh: `s-maxage`, else `max-age`, else
/// `Expires` minus `Date` (an `Expires` that is not a date means "already
/// stale"). `None` when it says nothing.
pub fn explicit_lifetime(
    cc: &CacheControl,
    response: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(seconds));
    }
    let expires = response.get(header::EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(Duration::ZERO);
    };
    let date = response
        .get(header::DATE)
        .and_then(http_date)
        .unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// How old the response already was when it arrived (RFC 9111 section
/// 4.2.3): the `Age` an earlier cache reported, or the time since its `Date`,
/// whichever is more. `Date` has one-second resolution, so one second of
/// difference is rounding, not age, and is not counted.
pub fn initial_age(response: &HeaderMap, now: SystemTime) -> Duration {
    let age_value = response
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .map_or(0, delta_seconds);
    let apparent = response
        .get(header::DATE)
        .and_then(http_date)
        .and_then(|date| now.duration_since(date).ok())
        .map_or(0, |d| d.as_secs().saturating_sub(1));
    Duration::from_secs(age_value.max(apparent))
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The request headers a response's `Vary` names: the cache may reuse the
/// response only for requests with the same values of these. `None` for
/// `Vary: *`, which no request matches.
pub fn vary_names(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in response.get_all(header::VARY) {
        for name in split_list(value.to_str().unwrap_or("*")) {
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// A request header's value as `Vary` compares it: all its lines joined by
/// `, `; `None` when the request does not have it.
pub fn vary_value(request: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut joined: Option<Vec<u8>> = None;
    for value in request.get_all(name) {
        let out = joined.get_or_insert_with(Vec::new);
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes());
    }
    joined
}

/// Whether the client's own conditional request is satisfied by a stored
/// response, so `304 Not Modified` is the answer (RFC 9110 section 13.1):
/// `If-None-Match` lists its `ETag` (weak comparison, `W/` ignored) or is
/// `*`; without `If-None-Match`, `If-Modified-Since` is no earlier than its
/// `Last-Modified`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(split_list)
            .any(|tag| tag == "*" || opaque(tag) == opaque(etag));
    }
    match (
        request.get(header::IF_MODIFIED_SINCE).and_then(http_date),
        stored.get(header::LAST_MODIFIED).and_then(http_date),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Headers the conditional request to the origin carries, built from the
/// stored response's validators: `If-None-Match: <ETag>` and
/// `If-Modified-Since: <Last-Modified>`. Empty when it has neither.
pub fn validators(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, modified.clone()));
    }
    out
}

/// A `304 Not Modified` from the origin confirms the stored response: its
/// headers replace the stored ones of the same name (new `Date`,
/// `Cache-Control`, `ETag`, ...), except those that describe the 304's own
/// (empty) body (RFC 9111 section 3.2).
pub fn merge_not_modified(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    for name in not_modified.keys() {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::CONTENT_ENCODING | header::CONTENT_RANGE
        ) {
            continue;
        }
        stored.remove(name);
        for value in not_modified.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn now() -> SystemTime {
        httpdate::parse_http_date("Mon, 23 Nov 2026 12:00:00 GMT").expect("date")
    }

    fn store(req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]) -> Result<u64, NotStored> {
        storable(
            &Method::GET,
            &headers(req),
            StatusCode::from_u16(status).expect("status"),
            &headers(resp),
            None,
            now(),
        )
        .map(|d| d.as_secs())
    }

    #[test]
    fn cache_control_directives_are_read_from_every_line_and_any_case() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "Public, MAX-AGE=60"),
            (
                "cache-control",
                "s-maxage=\"30\", stale-while-revalidate=5, must-revalidate",
            ),
        ]));
        assert_eq!(
            cc,
            CacheControl {
                public: true,
                max_age: Some(60),
                s_maxage: Some(30),
                stale_while_revalidate: Some(5),
                must_revalidate: true,
                ..CacheControl::default()
            }
        );
    }

    #[test]
    fn a_bad_or_repeated_max_age_is_read_the_careful_way() {
        let cc = |v: &str| CacheControl::parse(&headers(&[("cache-control", v)])).max_age;
        assert_eq!(cc("max-age=abc"), Some(0));
        assert_eq!(cc("max-age=-5"), Some(0));
        assert_eq!(cc("max-age=60, max-age=10"), Some(10));
        assert_eq!(cc("max-age=99999999999999999999"), Some(1 << 31));
        assert_eq!(cc("no-cache"), None);
    }

    #[test]
    fn quoted_field_lists_do_not_split_directives() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "private=\"set-cookie, x-a\", max-age=5",
        )]));
        assert!(cc.private);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        assert!(CacheControl::of_request(&headers(&[("pragma", "no-cache")])).no_cache);
        assert!(
            !CacheControl::of_request(&headers(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .no_cache
        );
    }

    #[test]
    fn s_maxage_wins_over_max_age_for_a_shared_cache() {
        assert_eq!(
            store(&[], 200, &[("cache-control", "max-age=60, s-maxage=5")]),
            Ok(5)
        );
        assert_eq!(store(&[], 200, &[("cache-control", "max-age=60")]), Ok(60));
    }

    #[test]
    fn expires_counts_from_date_and_a_bad_expires_means_stale() {
        assert_eq!(
            store(
                &[],
                200,
                &[
                    ("date", "Mon, 23 Nov 2026 11:00:00 GMT"),
                    ("expires", "Mon, 23 Nov 2026 11:00:30 GMT")
                ]
            ),
            Ok(30)
        );
        assert_eq!(
            store(&[], 200, &[("expires", "Mon, 23 Nov 2026 12:01:00 GMT")]),
            Ok(60)
        );
        assert_eq!(store(&[], 200, &[("expires", "0")]), Ok(0));
        assert_eq!(
            store(
                &[],
                200,
                &[
                    ("expires", "Mon, 23 Nov 2026 12:01:00 GMT"),
                    ("cache-control", "max-age=5")
                ]
            ),
            Ok(5)
        );
    }

    #[test]
    fn no_store_and_private_are_never_stored_by_a_shared_cache() {
        assert_eq!(
            store(&[], 200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(&[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Err(NotStored::RequestNoStore)
        );
    }

    #[test]
    fn no_cache_responses_are_stored_to_be_revalidated() {
        assert_eq!(
            store(&[], 200, &[("cache-control", "no-cache, max-age=60")]),
            Ok(60)
        );
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let auth = [("authorization", "Basic YTpi")];
        assert_eq!(
            store(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(NotStored::Authorization)
        );
        assert_eq!(
            store(&auth, 200, &[("cache-control", "public, max-age=60")]),
            Ok(60)
        );
        assert_eq!(store(&auth, 200, &[("cache-control", "s-maxage=9")]), Ok(9));
        assert_eq!(
            store(
                &auth,
                200,
                &[("cache-control", "must-revalidate, max-age=3")]
            ),
            Ok(3)
        );
    }

    #[test]
    fn set_cookie_needs_public() {
        assert_eq!(
            store(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            store(
                &[],
                200,
                &[
                    ("cache-control", "public, max-age=60"),
                    ("set-cookie", "a=b")
                ]
            ),
            Ok(60)
        );
    }

    #[test]
    fn vary_star_is_not_stored_and_vary_lists_names() {
        assert_eq!(
            store(&[], 200, &[("cache-control", "max-age=60"), ("vary", "*")]),
            Err(NotStored::VaryAny)
        );
        assert_eq!(
            vary_names(&headers(&[
                ("vary", "Accept-Language, accept-encoding"),
                ("vary", "x-a")
            ])),
            Some(vec![
                HeaderName::from_static("accept-language"),
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("x-a")
            ])
        );
        let req = headers(&[("accept", "a"), ("accept", "b")]);
        assert_eq!(vary_value(&req, &header::ACCEPT), Some(b"a, b".to_vec()));
        assert_eq!(vary_value(&req, &header::ACCEPT_LANGUAGE), None);
    }

    #[test]
    fn statuses_need_freshness_or_the_default_ttl() {
        assert_eq!(store(&[], 200, &[]), Err(NotStored::NoFreshness));
        assert_eq!(store(&[], 302, &[]), Err(NotStored::Status));
        assert_eq!(store(&[], 302, &[("cache-control", "max-age=7")]), Ok(7));
        assert_eq!(
            store(&[], 206, &[("cache-control", "max-age=7")]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(&[], 304, &[("cache-control", "max-age=7")]),
            Err(NotStored::Status)
        );
        let with_default = |status: u16| {
            storable(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::from_u16(status).expect("status"),
                &HeaderMap::new(),
                Some(Duration::from_secs(10)),
                now(),
            )
        };
        assert_eq!(with_default(404), Ok(Duration::from_secs(10)));
        assert_eq!(with_default(500), Err(NotStored::Status));
    }

    #[test]
    fn only_get_is_stored() {
        let result = storable(
            &Method::POST,
            &HeaderMap::new(),
            StatusCode::OK,
            &headers(&[("cache-control", "max-age=60")]),
            None,
            now(),
        );
        assert_eq!(result, Err(NotStored::Method));
    }

    #[test]
    fn age_is_the_larger_of_age_and_the_time_since_date_less_rounding() {
        assert_eq!(initial_age(&headers(&[("age", "7")]), now()).as_secs(), 7);
        let date = [("date", "Mon, 23 Nov 2026 11:59:50 GMT")];
        assert_eq!(initial_age(&headers(&date), now()).as_secs(), 9);
        let just_now = [("date", "Mon, 23 Nov 2026 11:59:59 GMT")];
        assert_eq!(initial_age(&headers(&just_now), now()).as_secs(), 0);
        let future = [("date", "Mon, 23 Nov 2026 12:10:00 GMT"), ("age", "3")];
        assert_eq!(initial_age(&headers(&future), now()).as_secs(), 3);
    }

    #[test]
    fn stale_serving_is_forbidden_by_must_revalidate_and_s_maxage() {
        let forbids =
            |v: &str| CacheControl::parse(&headers(&[("cache-control", v)])).forbids_stale();
        assert!(forbids("must-revalidate"));
        assert!(forbids("proxy-revalidate"));
        assert!(forbids("s-maxage=5"));
        assert!(!forbids("max-age=5, stale-while-revalidate=5"));
    }

    #[test]
    fn a_matching_if_none_match_is_not_modified() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Mon, 23 Nov 2026 11:00:00 GMT"),
        ]);
        let nm = |req: &[(&str, &str)]| not_modified(&headers(req), &stored);
        assert!(nm(&[("if-none-match", "\"v0\", W/\"v1\"")]));
        assert!(nm(&[("if-none-match", "*")]));
        assert!(!nm(&[("if-none-match", "\"v2\"")]));
        // If-None-Match decides alone when present.
        assert!(!nm(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Mon, 23 Nov 2026 11:30:00 GMT")
        ]));
        assert!(nm(&[(
            "if-modified-since",
            "Mon, 23 Nov 2026 11:30:00 GMT"
        )]));
        assert!(!nm(&[(
            "if-modified-since",
            "Mon, 23 Nov 2026 10:30:00 GMT"
        )]));
        assert!(!nm(&[]));
    }

    #[test]
    fn validators_become_conditional_headers() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Mon, 23 Nov 2026 11:00:00 GMT"),
        ]);
        let got = validators(&stored);
        assert_eq!(
            got[0],
            (header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""))
        );
        assert_eq!(got[1].0, header::IF_MODIFIED_SINCE);
        assert!(validators(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn a_304_updates_headers_but_not_the_body_length() {
        let mut stored = headers(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=1"),
            ("content-length", "42"),
            ("x-a", "1"),
        ]);
        merge_not_modified(
            &mut stored,
            &headers(&[
                ("cache-control", "max-age=60"),
                ("content-length", "0"),
                ("date", "Mon, 23 Nov 2026 11:00:00 GMT"),
            ]),
        );
        assert_eq!(stored["cache-control"], "max-age=60");
        assert_eq!(stored["content-length"], "42");
        assert_eq!(stored["x-a"], "1");
        assert!(stored.contains_key("date"));
    }
}
