//! Response caching: answering again with a response already fetched,
//! without asking the upstream (RFC 9111), like nginx's `proxy_cache`.
//!
//! # Fresh and stale
//! The upstream says how long its answer stays good: `Cache-Control:
//! max-age=60` (or `s-maxage`, meant for shared caches like this one, or an
//! `Expires` date). While the stored response is younger than that it is
//! **fresh** and served straight from memory: `Cache-Status: proxy; hit;
//! ttl=42`, and an `Age` header says how many seconds old it is. Once older,
//! it is **stale**: it must not be served again without asking the upstream,
//! unless the upstream allowed a grace period (`stale-while-revalidate=N`:
//! serve the stale copy at once and refresh it in the background).
//!
//! # Validators and revalidation
//! Asking again need not mean downloading again. A response with a
//! *validator*, an `ETag` (a version tag) or `Last-Modified`, can be checked:
//! the cache sends `If-None-Match: "v1"`, and an upstream whose version is
//! still `"v1"` answers `304 Not Modified` with no body. The cache then
//! serves its stored body with refreshed headers (`fwd=stale;
//! fwd-status=304`). A client can do the same with the proxy: if its
//! `If-None-Match` names the stored `ETag`, a fresh hit is answered `304`.
//!
//! # Shared, not private
//! A browser cache serves one user; this cache serves everyone behind the
//! proxy. So it never keeps `Cache-Control: private` or `no-store` answers,
//! an answer to a request with `Authorization` only when the upstream says
//! `public` (or `s-maxage`, `must-revalidate`), and, a choice of this proxy,
//! an answer that sets a cookie only when it says `public`: a session cookie
//! handed to the next visitor would log them in as someone else.
//!
//! # Vary
//! One URL can have several answers: `Vary: Accept-Language` says the
//! answer depends on that request header, so the cache keeps one response per
//! language asked for (`fwd=vary-miss` when it has the URL but not this
//! language). `Vary: *` means "depends on things you cannot see": not stored.
//!
//! # The key
//! Responses are found by scheme, host, path and query *as the client sent
//! them* (before the route's rewrite), plus the `Vary`'d header values. Only
//! GET responses are stored; a HEAD request may be answered from a stored GET.
//! A successful POST, PUT or DELETE to a URL throws its stored copy away: it
//! may have changed what is there.
//!
//! # Many clients, one upstream request
//! When many clients ask for the same missing URL at once, only the first
//! goes upstream; the others wait for it (at most [`COLLAPSE_WAIT`]) and are
//! served its stored response (`collapsed`), or go upstream themselves when it
//! could not be stored (`collapsed=?0`).
//!
//! # Cache-Status
//! Every response of a route with a cache says what the cache did (RFC 9211):
//! `hit` (served from the cache; `ttl` is the freshness left, negative when
//! stale), or `fwd=` why it went upstream: `uri-miss`, `vary-miss`, `stale`,
//! `request` (the client asked with `no-cache` or `max-age=0`) or `bypass`
//! (not a GET or HEAD, or `no-store` asked); `fwd-status` is the upstream's
//! status on a revalidation; `stored` when the response is being kept;
//! `detail` says why it was not.
//!
//! The store lives in memory only ([`store`]), bounded in bytes; there is no
//! disk store, and a reload of the configuration starts with empty caches.

pub mod policy;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{self, BodyError, ProxyBody};
use crate::config::{CacheSettings, CacheZone};
use policy::{CacheControl, NotStored};
use store::{Entry, Found, Store};

/// How long requests wait for another request already fetching the same
/// URL before they go upstream themselves (nginx `proxy_cache_lock_timeout`).
pub const COLLAPSE_WAIT: Duration = Duration::from_secs(5);

/// The name this cache gives itself in `Cache-Status`.
pub const NAME: &str = "proxy";

/// The `Cache-Status` header (RFC 9211).
pub static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// One `[cache_zones.NAME]`: a store, and the fetches in progress for it.
#[derive(Debug)]
pub struct Zone {
    /// Its name in the configuration.
    pub name: String,
    /// The stored responses.
    pub store: Store,
    /// The largest body it keeps.
    pub max_entry_size: u64,
    /// One entry per key some request is fetching right now; waiting requests
    /// subscribe, and are woken when the fetch ends (its sender is dropped).
    fetching: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl Zone {
    /// An empty zone for the configuration's `zone`.
    pub fn new(zone: &CacheZone) -> Zone {
        Zone {
            name: zone.name.clone(),
            store: Store::new(zone.max_size),
            max_entry_size: zone.max_entry_size,
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The first request for a missing key leads (fetches); later ones wait.
    fn join(self: &Arc<Self>, key: &str) -> Turn {
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leader) = fetching.get(key) {
            return Turn::Wait(leader.subscribe());
        }
        fetching.insert(key.to_owned(), watch::channel(()).0);
        Turn::Lead(Leading {
            zone: self.clone(),
            key: key.to_owned(),
        })
    }
}

enum Turn {
    Lead(Leading),
    Wait(watch::Receiver<()>),
}

/// Held by the request fetching a missing key until its response is stored
/// or given up on; dropping it (also when the client goes away or the
/// upstream fails) wakes the waiting requests, so none waits forever.
#[derive(Debug)]
struct Leading {
    zone: Arc<Zone>,
    key: String,
}

impl Drop for Leading {
    fn drop(&mut self) {
        let mut fetching = self.zone.fetching.lock().unwrap_or_else(|p| p.into_inner());
        fetching.remove(&self.key);
    }
}

/// Held by a background refresh (stale-while-revalidate) until it ends, so
/// that only one runs per stored response.
#[derive(Debug)]
struct RefreshClaim(Arc<Entry>);

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        self.0.release_refresh();
    }
}

/// What the cache did with a request, written as a `Cache-Status` member:
/// `proxy; hit; ttl=7`, `proxy; fwd=uri-miss; stored`, ...
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the cache without going upstream.
    pub hit: bool,
    /// Why the request went upstream.
    pub fwd: Option<&'static str>,
    /// The upstream's status, on a revalidation.
    pub fwd_status: Option<u16>,
    /// Seconds of freshness left (negative: stale), on a hit.
    pub ttl: Option<i64>,
    /// The response is being stored.
    pub stored: bool,
    /// Waited for another request's fetch: reused its response (`true`) or
    /// had to go upstream after all (`false`).
    pub collapsed: Option<bool>,
    /// More about it: why it was not stored, or that it was served stale.
    pub detail: Option<&'static str>,
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NAME)?;
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={fwd}")?;
        }
        if let Some(status) = self.fwd_status {
            write!(f, "; fwd-status={status}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        match self.collapsed {
            Some(true) => f.write_str("; collapsed")?,
            Some(false) => f.write_str("; collapsed=?0")?,
            None => {}
        }
        if let Some(detail) = self.detail {
            write!(f, "; detail={detail}")?;
        }
        Ok(())
    }
}

/// The outcome of [`lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// Answered from the cache. `refresh`, when set, is a conditional request
    /// to send upstream in the background (stale-while-revalidate).
    Answer {
        /// The response for the client.
        response: Response<ProxyBody>,
        /// What the cache did.
        status: CacheStatus,
        /// The background refresh to start, if this request starts one.
        refresh: Option<Box<Refresh>>,
    },
    /// The request goes upstream; hand its response to [`finish`].
    Forward(Pending),
}

/// A request to send upstream in the background, and what to do with its
/// response (hand both to [`finish`]).
#[derive(Debug)]
pub struct Refresh {
    /// The conditional GET for the upstream.
    pub request: Request<ProxyBody>,
    /// The cache's side of it.
    pub pending: Pending,
}

/// A request that went upstream: what the cache needs to know when its
/// response comes back.
#[derive(Debug)]
pub struct Pending {
    zone: Arc<Zone>,
    key: String,
    method: Method,
    /// The client's headers, before any conditional header the cache added.
    request_headers: HeaderMap,
    settings: CacheSettings,
    /// What the cache did so far.
    pub status: CacheStatus,
    /// The stored response being revalidated with a conditional request.
    revalidating: Option<Arc<Entry>>,
    leading: Option<Leading>,
    claim: Option<RefreshClaim>,
    may_store: bool,
}

/// The key a response is stored under: `http://app.localhost/path?query`.
pub fn key(scheme: &str, host: Option<&str>, uri: &Uri) -> String {
    let host = host.unwrap_or("").to_ascii_lowercase();
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{scheme}://{host}{path}")
}

/// Before the request goes upstream: answers it from the cache when a fresh
/// (or allowed stale) response is stored; else says why it goes upstream, and
/// on a stale response with validators makes `request` a conditional one.
/// Concurrent misses for one key wait here for the first one's response.
pub async fn lookup(
    zone: &Arc<Zone>,
    settings: &CacheSettings,
    request: &mut Request<ProxyBody>,
    key: String,
) -> Lookup {
    let method = request.method().clone();
    let mut pending = Pending {
        zone: zone.clone(),
        key,
        request_headers: request.headers().clone(),
        settings: settings.clone(),
        status: CacheStatus::default(),
        revalidating: None,
        leading: None,
        claim: None,
        may_store: method == Method::GET,
        method,
    };
    let asked = CacheControl::of_request(request.headers());
    let bypass = if !matches!(pending.method, Method::GET | Method::HEAD) {
        Some(NotStored::Method)
    } else if asked.no_store {
        Some(NotStored::RequestNoStore)
    } else {
        None
    };
    if let Some(reason) = bypass {
        pending.status.fwd = Some("bypass");
        pending.status.detail = Some(reason.detail());
        pending.may_store = false;
        return Lookup::Forward(pending);
    }
    let mut waited = false;
    loop {
        let now = Instant::now();
        let entry = match zone.store.get(&pending.key, &pending.request_headers) {
            Found::Entry(entry) => entry,
            _ if waited => {
                pending.status.collapsed = Some(false);
                return Lookup::Forward(pending);
            }
            miss => {
                pending.status.fwd = Some(match miss {
                    Found::VaryMiss => "vary-miss",
                    _ => "uri-miss",
                });
                if pending.method == Method::GET
                    && !pending.request_headers.contains_key(header::AUTHORIZATION)
                {
                    match zone.join(&pending.key) {
                        Turn::Lead(leading) => pending.leading = Some(leading),
                        Turn::Wait(mut done) => {
                            let _ = tokio::time::timeout(COLLAPSE_WAIT, done.changed()).await;
                            waited = true;
                            continue;
                        }
                    }
                }
                return Lookup::Forward(pending);
            }
        };
        let forced = asked.no_cache
            || asked
                .max_age
                .is_some_and(|max| max == 0 || entry.age(now) > Duration::from_secs(max));
        if waited {
            // Served from the response another request just fetched.
            if entry.is_fresh(now) && !entry.no_cache && !forced {
                pending.status.collapsed = Some(true);
                let response = serve(&entry, &pending.method, &pending.request_headers, now);
                return Lookup::Answer {
                    response,
                    status: pending.status,
                    refresh: None,
                };
            }
            pending.status.collapsed = Some(false);
        } else if !forced && !entry.no_cache && (entry.is_fresh(now) || entry.may_serve_stale(now))
        {
            // Fresh, or stale within its stale-while-revalidate window (then
            // the first such request starts the one background refresh).
            let stale = !entry.is_fresh(now);
            let status = CacheStatus {
                hit: true,
                ttl: Some(entry.ttl(now)),
                detail: stale.then_some("stale-while-revalidate"),
                ..CacheStatus::default()
            };
            let refresh = (stale && entry.claim_refresh())
                .then(|| Box::new(refresh(pending, request, &entry)));
            let response = serve(&entry, request.method(), request.headers(), now);
            return Lookup::Answer {
                response,
                status,
                refresh,
            };
        }
        if !waited {
            pending.status.fwd = Some(if forced { "request" } else { "stale" });
        }
        if pending.method == Method::HEAD {
            // A HEAD answer has no body to refresh the stored one with.
            pending.may_store = false;
        } else {
            make_conditional(request.headers_mut(), &entry);
            if entry.headers.contains_key(header::ETAG)
                || entry.headers.contains_key(header::LAST_MODIFIED)
            {
                pending.revalidating = Some(entry);
            }
        }
        return Lookup::Forward(pending);
    }
}

/// Replaces the client's own conditional headers with the stored response's
/// validators, so the upstream can answer `304` about *our* copy.
fn make_conditional(headers: &mut HeaderMap, entry: &Entry) {
    let conditions = policy::validators(&entry.headers);
    if conditions.is_empty() {
        return;
    }
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    for (name, value) in conditions {
        headers.insert(name, value);
    }
}

/// The background refresh of a stale entry: a GET like the client's, made
/// conditional on the stored validators.
fn refresh(mut pending: Pending, request: &Request<ProxyBody>, entry: &Arc<Entry>) -> Refresh {
    let mut conditional = Request::new(body::empty());
    *conditional.method_mut() = Method::GET;
    *conditional.uri_mut() = request.uri().clone();
    *conditional.headers_mut() = request.headers().clone();
    make_conditional(conditional.headers_mut(), entry);
    pending.method = Method::GET;
    pending.may_store = true;
    pending.status.fwd = Some("stale");
    pending.claim = Some(RefreshClaim(entry.clone()));
    if !policy::validators(&entry.headers).is_empty() {
        pending.revalidating = Some(entry.clone());
    }
    Refresh {
        request: conditional,
        pending,
    }
}

/// A stored response as the client gets it: with its current `Age`, and as
/// `304 Not Modified` when the client's own conditional headers match it.
fn serve(entry: &Entry, method: &Method, request: &HeaderMap, now: Instant) -> Response<ProxyBody> {
    let not_modified =
        entry.status == StatusCode::OK && policy::not_modified(request, &entry.headers);
    let with_body = !not_modified && *method != Method::HEAD;
    let mut response = Response::new(if with_body {
        body::full(entry.body.clone())
    } else {
        body::empty()
    });
    *response.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        entry.status
    };
    let headers = response.headers_mut();
    *headers = entry.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    if !not_modified {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    }
    response
}

/// After the upstream answered: a `304` to a revalidation refreshes the
/// stored response and serves it; a storable response is streamed to the
/// client and copied into the store as it goes.
pub fn finish(
    mut pending: Pending,
    response: Response<ProxyBody>,
) -> (Response<ProxyBody>, CacheStatus) {
    let now = Instant::now();
    let wall = SystemTime::now();
    let status = response.status();
    if let Some(entry) = pending.revalidating.take() {
        pending.status.fwd_status = Some(status.as_u16());
        if status == StatusCode::NOT_MODIFIED {
            let mut headers = entry.headers.clone();
            policy::merge_not_modified(&mut headers, response.headers());
            let refreshed = match policy::storable(
                &Method::GET,
                &pending.request_headers,
                entry.status,
                &headers,
                pending.settings.default_ttl,
                wall,
            ) {
                Ok(lifetime) => {
                    let mut refreshed =
                        new_entry(&pending, entry.status, &headers, lifetime, now, wall);
                    refreshed.body = entry.body.clone();
                    let refreshed = Arc::new(refreshed);
                    pending
                        .zone
                        .store
                        .insert(pending.key.clone(), clone_entry(&refreshed));
                    refreshed
                }
                Err(reason) => {
                    pending.status.detail = Some(reason.detail());
                    pending.zone.store.remove(&pending.key);
                    entry
                }
            };
            let served = serve(&refreshed, &pending.method, &pending.request_headers, now);
            return (served, pending.status);
        }
    }
    // A successful POST, PUT, DELETE, ... may have changed the resource: its
    // stored copy goes (RFC 9111 section 4.4).
    if !pending.method.is_safe() && (status.is_success() || status.is_redirection()) {
        pending.zone.store.remove(&pending.key);
    }
    if !pending.may_store {
        if pending.method == Method::HEAD && pending.status.detail.is_none() {
            pending.status.detail = Some(NotStored::Method.detail());
        }
        return (response, pending.status);
    }
    let decision = policy::storable(
        &pending.method,
        &pending.request_headers,
        status,
        response.headers(),
        pending.settings.default_ttl,
        wall,
    )
    .and_then(|lifetime| {
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if length > pending.zone.max_entry_size => Err(NotStored::TooLarge),
            _ => Ok(lifetime),
        }
    });
    match decision {
        Err(reason) => {
            pending.status.detail = Some(reason.detail());
            (response, pending.status)
        }
        Ok(lifetime) => {
            pending.status.stored = true;
            let entry = new_entry(&pending, status, response.headers(), lifetime, now, wall);
            let status = pending.status.clone();
            let response = response.map(|body| Fill::start(body, pending, entry));
            (response, status)
        }
    }
}

/// The cache's record of a response, its body still to come.
fn new_entry(
    pending: &Pending,
    status: StatusCode,
    headers: &HeaderMap,
    lifetime: Duration,
    now: Instant,
    wall: SystemTime,
) -> Entry {
    let cc = CacheControl::parse(headers);
    let vary = policy::vary_names(headers)
        .unwrap_or_default()
        .into_iter()
        .map(|name| {
            let value = policy::vary_value(&pending.request_headers, &name);
            (name, value)
        })
        .collect();
    let initial_age = policy::initial_age(headers, wall);
    let mut headers = headers.clone();
    headers.remove(header::AGE);
    headers.remove(header::CONTENT_LENGTH);
    Entry {
        status,
        headers,
        body: Bytes::new(),
        vary,
        stored_at: now,
        initial_age,
        lifetime,
        stale_while_revalidate: cc
            .stale_while_revalidate
            .map_or(pending.settings.stale_while_revalidate, Duration::from_secs),
        no_cache: cc.no_cache,
        forbids_stale: cc.forbids_stale(),
        refreshing: std::sync::atomic::AtomicBool::new(false),
    }
}

fn clone_entry(entry: &Entry) -> Entry {
    Entry {
        status: entry.status,
        headers: entry.headers.clone(),
        body: entry.body.clone(),
        vary: entry.vary.clone(),
        stored_at: entry.stored_at,
        initial_age: entry.initial_age,
        lifetime: entry.lifetime,
        stale_while_revalidate: entry.stale_while_revalidate,
        no_cache: entry.no_cache,
        forbids_stale: entry.forbids_stale,
        refreshing: std::sync::atomic::AtomicBool::new(false),
    }
}

/// A response body on its way to the client, copied into the store as it
/// passes. The copy is stored only when the body ended intact; a body that
/// grows over `max_entry_size` stops being copied (the client still gets
/// all of it), and an upstream error or a client that leaves stores nothing.
struct Fill {
    body: ProxyBody,
    pending: Option<Pending>,
    entry: Option<Entry>,
    chunks: Vec<Bytes>,
    size: u64,
}

impl Fill {
    fn start(body: ProxyBody, pending: Pending, entry: Entry) -> ProxyBody {
        use http_body::Body as _;
        let mut fill = Fill {
            pending: Some(pending),
            entry: Some(entry),
            chunks: Vec::new(),
            size: 0,
            body,
        };
        if fill.body.is_end_stream() {
            fill.complete();
        }
        fill.boxed()
    }

    fn copy(&mut self, data: &Bytes) {
        let Some(pending) = &self.pending else {
            return;
        };
        self.size += data.len() as u64;
        if self.size > pending.zone.max_entry_size {
            self.give_up();
        } else {
            self.chunks.push(data.clone());
        }
    }

    /// Stores the copy; then the waiting requests are woken (the `Leading`
    /// guard in `pending` is dropped) and find it.
    fn complete(&mut self) {
        let (Some(pending), Some(mut entry)) = (self.pending.take(), self.entry.take()) else {
            return;
        };
        entry.body = match self.chunks.len() {
            1 => self.chunks[0].clone(),
            _ => Bytes::from(self.chunks.concat()),
        };
        self.chunks = Vec::new();
        pending.zone.store.insert(pending.key.clone(), entry);
    }

    fn give_up(&mut self) {
        self.pending = None;
        self.entry = None;
        self.chunks = Vec::new();
    }
}

impl http_body::Body for Fill {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.copy(data);
                }
                if self.body.is_end_stream() {
                    self.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => self.give_up(),
            Poll::Ready(None) => self.complete(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_is_written_as_rfc_9211_parameters() {
        let hit = CacheStatus {
            hit: true,
            ttl: Some(7),
            ..CacheStatus::default()
        };
        assert_eq!(hit.to_string(), "proxy; hit; ttl=7");
        let stored = CacheStatus {
            fwd: Some("uri-miss"),
            stored: true,
            collapsed: Some(false),
            ..CacheStatus::default()
        };
        assert_eq!(
            stored.to_string(),
            "proxy; fwd=uri-miss; stored; collapsed=?0"
        );
        let revalidated = CacheStatus {
            fwd: Some("stale"),
            fwd_status: Some(304),
            ..CacheStatus::default()
        };
        assert_eq!(revalidated.to_string(), "proxy; fwd=stale; fwd-status=304");
        let stale = CacheStatus {
            hit: true,
            ttl: Some(-2),
            detail: Some("stale-while-revalidate"),
            ..CacheStatus::default()
        };
        assert_eq!(
            stale.to_string(),
            "proxy; hit; ttl=-2; detail=stale-while-revalidate"
        );
    }

    #[test]
    fn the_key_is_scheme_host_path_and_query() {
        let uri: Uri = "/a/b?c=1".parse().expect("uri");
        assert_eq!(
            key("http", Some("App.Localhost:8080"), &uri),
            "http://app.localhost:8080/a/b?c=1"
        );
    }
}
