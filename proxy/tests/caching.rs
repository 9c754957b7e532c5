//! Response caching over real loopback: an upstream that counts its requests
//! shows when the proxy answered from its cache and when it asked again.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An upstream whose answers are chosen by the query string:
/// `cc=...` (Cache-Control), `etag=v1` (and 304 for a matching
/// If-None-Match), `vary=NAME`, `cookie=1`, `bytes=N` (a body of N bytes),
/// `pattern=N` (N bytes streamed without a length), `delay_ms=N`.
/// Otherwise the body is `answer N`, N counting the requests it got.
struct CountingUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// The headers of every request it got.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl CountingUpstream {
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn last_seen(&self, name: &str) -> Option<String> {
        let seen = self.seen.lock().expect("lock");
        seen.last()?
            .get(name)
            .map(|v| v.to_str().expect("text").to_owned())
    }
}

async fn counting_upstream() -> CountingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (requests.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (count, log) = (count.clone(), log.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, count.clone(), log.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    CountingUpstream {
        addr,
        requests,
        seen,
    }
}

async fn answer(
    req: Request<Incoming>,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    seen.lock().expect("lock").push(req.headers().clone());
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    if let Some(ms) = param("delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = Response::builder();
    if let Some(cc) = param("cc") {
        response = response.header("cache-control", cc);
    }
    if let Some(vary) = param("vary") {
        response = response.header("vary", vary.clone());
    }
    if param("cookie").is_some() {
        response = response.header("set-cookie", "session=secret");
    }
    if let Some(tag) = param("etag") {
        let etag = format!("\"{tag}\"");
        response = response.header("etag", etag.clone());
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            return Ok(response
                .status(304)
                .body(Full::new(Bytes::new()).boxed())
                .expect("response"));
        }
    }
    let body = if let Some(n) = param("bytes").and_then(|v| v.parse().ok()) {
        Full::new(Bytes::from(vec![b'x'; n])).boxed()
    } else if let Some(n) = param("pattern").and_then(|v| v.parse().ok()) {
        PatternBody::new(n, false).boxed()
    } else {
        let language = req
            .headers()
            .get("accept-language")
            .map(|v| format!(" {}", v.to_str().unwrap_or("?")))
            .unwrap_or_default();
        Full::new(Bytes::from(format!("answer {n}{language}"))).boxed()
    };
    Ok(response.body(body).expect("response"))
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[cache_zones.main]
max_size = "1MiB"

[cache_zones.small]
max_size = "4KiB"
max_entry_size = "2KiB"

[[servers]]
server_names = ["app.localhost"]
cache = {{ zone = "main" }}
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/ttl/", upstream = "app", cache = {{ zone = "main", default_ttl = "10s" }} }},
  {{ path = "/swr/", upstream = "app", cache = {{ zone = "main", stale_while_revalidate = "30s" }} }},
  {{ path = "/small/", upstream = "app", cache = {{ zone = "small" }} }},
]

[upstreams.app]
servers = ["{upstream}"]
"#
    )
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .map_or("(none)", |v| v.to_str().expect("text"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("text"))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("text")
    }
}

async fn request(proxy: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", "app.localhost");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (response, body) = send(
        &client(),
        builder.body(Full::new(Bytes::new())).expect("request"),
    )
    .await;
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body,
    }
}

async fn get(proxy: SocketAddr, path: &str) -> Answer {
    request(proxy, "GET", path, &[]).await
}

async fn setup() -> (CountingUpstream, TestProxy) {
    let up = counting_upstream().await;
    let proxy = start_proxy(&config(up.addr)).await;
    (up, proxy)
}

#[tokio::test(start_paused = true)]
async fn a_miss_is_stored_and_the_next_request_is_a_hit() {
    let (up, proxy) = setup().await;
    let first = get(proxy.addr, "/a?cc=max-age=60").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "answer 1");
    assert_eq!(first.cache_status(), "proxy; fwd=uri-miss; stored");
    assert_eq!(first.header("age"), None);
    let second = get(proxy.addr, "/a?cc=max-age=60").await;
    assert_eq!(second.text(), "answer 1");
    assert_eq!(second.cache_status(), "proxy; hit; ttl=60");
    assert_eq!(second.header("age"), Some("0"));
    assert_eq!(second.header("content-length"), Some("8"));
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    assert_eq!(up.count(), 1, "the upstream was asked once");
    // Another query string is another URL.
    assert_eq!(
        get(proxy.addr, "/a?cc=max-age=60&x").await.text(),
        "answer 2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_is_fresh_for_max_age_then_fetched_again() {
    let (up, proxy) = setup().await;
    get(proxy.addr, "/b?cc=max-age=10").await;
    tokio::time::advance(Duration::from_secs(4)).await;
    let hit = get(proxy.addr, "/b?cc=max-age=10").await;
    assert_eq!(hit.cache_status(), "proxy; hit; ttl=6");
    assert_eq!(hit.header("age"), Some("4"));
    tokio::time::advance(Duration::from_secs(7)).await;
    let stale = get(proxy.addr, "/b?cc=max-age=10").await;
    assert_eq!(stale.cache_status(), "proxy; fwd=stale; stored");
    assert_eq!(stale.text(), "answer 2");
    assert_eq!(get(proxy.addr, "/b?cc=max-age=10").await.text(), "answer 2");
    assert_eq!(up.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn s_maxage_wins_and_default_ttl_covers_responses_without_freshness() {
    let (up, proxy) = setup().await;
    get(proxy.addr, "/c?cc=max-age=100,s-maxage=2").await;
    assert_eq!(
        get(proxy.addr, "/c?cc=max-age=100,s-maxage=2")
            .await
            .cache_status(),
        "proxy; hit; ttl=2"
    );
    // No freshness information and no default_ttl: not stored.
    let plain = get(proxy.addr, "/plain").await;
    assert_eq!(
        plain.cache_status(),
        "proxy; fwd=uri-miss; detail=no-freshness"
    );
    get(proxy.addr, "/plain").await;
    // The /ttl/ route guesses 10 s.
    assert_eq!(
        get(proxy.addr, "/ttl/x").await.cache_status(),
        "proxy; fwd=uri-miss; stored"
    );
    assert_eq!(
        get(proxy.addr, "/ttl/x").await.cache_status(),
        "proxy; hit; ttl=10"
    );
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn no_store_private_set_cookie_and_authorization_are_not_stored() {
    let (up, proxy) = setup().await;
    for (path, headers, detail) in [
        ("/d1?cc=no-store,max-age=60", &[][..], "no-store"),
        ("/d2?cc=private,max-age=60", &[][..], "private"),
        ("/d3?cc=max-age=60&cookie=1", &[][..], "set-cookie"),
        (
            "/d4?cc=max-age=60",
            &[("authorization", "Basic YTpi")][..],
            "authorization",
        ),
    ] {
        for _ in 0..2 {
            let answer = request(proxy.addr, "GET", path, headers).await;
            assert_eq!(
                answer.cache_status(),
                format!("proxy; fwd=uri-miss; detail={detail}"),
                "{path}"
            );
        }
    }
    assert_eq!(up.count(), 8);
    // `public` allows the cookie and the credentials.
    get(proxy.addr, "/d5?cc=public,max-age=60&cookie=1").await;
    assert_eq!(
        get(proxy.addr, "/d5?cc=public,max-age=60&cookie=1")
            .await
            .cache_status(),
        "proxy; hit; ttl=60"
    );
    assert_eq!(up.count(), 9);
}

#[tokio::test]
async fn the_client_can_bypass_or_force_revalidation() {
    let (up, proxy) = setup().await;
    get(proxy.addr, "/e?cc=max-age=60").await;
    let bypass = request(
        proxy.addr,
        "GET",
        "/e?cc=max-age=60",
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(
        bypass.cache_status(),
        "proxy; fwd=bypass; detail=request-no-store"
    );
    assert_eq!(bypass.text(), "answer 2");
    let forced = request(
        proxy.addr,
        "GET",
        "/e?cc=max-age=60",
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(forced.cache_status(), "proxy; fwd=request; stored");
    assert_eq!(forced.text(), "answer 3");
    let max_age_0 = request(
        proxy.addr,
        "GET",
        "/e?cc=max-age=60",
        &[("cache-control", "max-age=0")],
    )
    .await;
    assert_eq!(max_age_0.cache_status(), "proxy; fwd=request; stored");
    assert_eq!(get(proxy.addr, "/e?cc=max-age=60").await.text(), "answer 4");
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn vary_keeps_one_response_per_language() {
    let (up, proxy) = setup().await;
    let path = "/f?cc=max-age=60&vary=accept-language";
    let addr = proxy.addr;
    let ask = |language: &'static str| async move {
        request(addr, "GET", path, &[("accept-language", language)]).await
    };
    let fr = ask("fr").await;
    assert_eq!(
        (fr.text(), fr.cache_status()),
        ("answer 1 fr", "proxy; fwd=uri-miss; stored")
    );
    let de = ask("de").await;
    assert_eq!(
        (de.text(), de.cache_status()),
        ("answer 2 de", "proxy; fwd=vary-miss; stored")
    );
    let fr = ask("fr").await;
    assert_eq!(
        (fr.text(), fr.cache_status()),
        ("answer 1 fr", "proxy; hit; ttl=60")
    );
    let de = ask("de").await;
    assert_eq!(
        (de.text(), de.cache_status()),
        ("answer 2 de", "proxy; hit; ttl=60")
    );
    assert_eq!(up.count(), 2);
    // Vary: * never matches: not stored.
    let star = get(proxy.addr, "/f?cc=max-age=60&vary=*").await;
    assert_eq!(star.cache_status(), "proxy; fwd=uri-miss; detail=vary-star");
}

#[tokio::test(start_paused = true)]
async fn a_stale_response_with_an_etag_is_revalidated_and_a_304_reuses_the_body() {
    let (up, proxy) = setup().await;
    let path = "/g?cc=max-age=5&etag=v1";
    assert_eq!(get(proxy.addr, path).await.text(), "answer 1");
    tokio::time::advance(Duration::from_secs(6)).await;
    let revalidated = get(proxy.addr, path).await;
    assert_eq!(up.last_seen("if-none-match").as_deref(), Some("\"v1\""));
    assert_eq!(revalidated.status, 200);
    assert_eq!(
        revalidated.text(),
        "answer 1",
        "the stored body, not a new one"
    );
    assert_eq!(
        revalidated.cache_status(),
        "proxy; fwd=stale; fwd-status=304"
    );
    assert_eq!(revalidated.header("etag"), Some("\"v1\""));
    // The 304 made it fresh again.
    let hit = get(proxy.addr, path).await;
    assert_eq!(hit.cache_status(), "proxy; hit; ttl=5");
    assert_eq!(hit.text(), "answer 1");
    assert_eq!(up.count(), 2);
    // A client's own matching If-None-Match gets 304 from the proxy itself.
    let not_modified = request(proxy.addr, "GET", path, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.cache_status(), "proxy; hit; ttl=5");
    assert!(not_modified.body.is_empty());
    // no-cache from the client: a conditional request, the upstream says 304.
    let forced = request(proxy.addr, "GET", path, &[("cache-control", "no-cache")]).await;
    assert_eq!(forced.cache_status(), "proxy; fwd=request; fwd-status=304");
    assert_eq!(forced.text(), "answer 1");
    assert_eq!(up.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_is_stored_but_revalidated_every_time() {
    let (up, proxy) = setup().await;
    let path = "/h?cc=no-cache,max-age=60&etag=v1";
    assert_eq!(
        get(proxy.addr, path).await.cache_status(),
        "proxy; fwd=uri-miss; stored"
    );
    for count in [2, 3] {
        let again = get(proxy.addr, path).await;
        assert_eq!(again.cache_status(), "proxy; fwd=stale; fwd-status=304");
        assert_eq!(again.text(), "answer 1");
        assert_eq!(up.count(), count);
    }
}

#[tokio::test(start_paused = true)]
async fn a_changed_resource_answers_200_and_replaces_the_stored_one() {
    let (up, proxy) = setup().await;
    // Without a validator, a stale entry is simply fetched again.
    get(proxy.addr, "/h2?cc=max-age=1").await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let replaced = get(proxy.addr, "/h2?cc=max-age=1").await;
    assert_eq!(replaced.cache_status(), "proxy; fwd=stale; stored");
    assert_eq!(up.last_seen("if-none-match"), None);
    assert_eq!(get(proxy.addr, "/h2?cc=max-age=1").await.text(), "answer 2");
    assert_eq!(up.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_at_once_and_refreshes_once() {
    let (up, proxy) = setup().await;
    let path = "/swr/a?cc=max-age=1";
    assert_eq!(get(proxy.addr, path).await.text(), "answer 1");
    tokio::time::advance(Duration::from_secs(3)).await;
    // Five requests at once, all served the stale copy; one refresh.
    let stale = futures_util::future::join_all((0..5).map(|_| get(proxy.addr, path))).await;
    for answer in &stale {
        assert_eq!(answer.text(), "answer 1");
        assert_eq!(
            answer.cache_status(),
            "proxy; hit; ttl=-2; detail=stale-while-revalidate"
        );
        assert_eq!(answer.header("age"), Some("3"));
    }
    for _ in 0..100 {
        if up.count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(up.count(), 2, "one background refresh");
    let refreshed = get(proxy.addr, path).await;
    assert_eq!(refreshed.text(), "answer 2");
    assert!(
        refreshed.cache_status().starts_with("proxy; hit; ttl="),
        "{}",
        refreshed.cache_status()
    );
    // Past the window, or with must-revalidate, stale is not served.
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(
        get(proxy.addr, path).await.cache_status(),
        "proxy; fwd=stale; stored"
    );
    get(proxy.addr, "/swr/b?cc=max-age=1,must-revalidate").await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        get(proxy.addr, "/swr/b?cc=max-age=1,must-revalidate")
            .await
            .cache_status(),
        "proxy; fwd=stale; stored"
    );
}

#[tokio::test(start_paused = true)]
async fn the_response_can_give_its_own_stale_while_revalidate() {
    let (up, proxy) = setup().await;
    let path = "/i?cc=max-age=1,stale-while-revalidate=10&etag=v1";
    get(proxy.addr, path).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let stale = get(proxy.addr, path).await;
    assert_eq!(
        stale.cache_status(),
        "proxy; hit; ttl=-1; detail=stale-while-revalidate"
    );
    for _ in 0..100 {
        if up.count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(up.last_seen("if-none-match").as_deref(), Some("\"v1\""));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The 304 refreshed the stored copy: fresh again, same body.
    let hit = get(proxy.addr, path).await;
    assert_eq!(hit.text(), "answer 1");
    assert!(
        hit.cache_status().starts_with("proxy; hit; ttl=1"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_go_upstream_once() {
    let (up, proxy) = setup().await;
    let path = "/j?cc=max-age=60&delay_ms=200";
    let answers = futures_util::future::join_all((0..10).map(|_| get(proxy.addr, path))).await;
    assert_eq!(up.count(), 1);
    let mut statuses: Vec<&str> = answers.iter().map(|a| a.cache_status()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses[0], "proxy; fwd=uri-miss; collapsed");
    assert_eq!(statuses[8], "proxy; fwd=uri-miss; collapsed");
    assert_eq!(statuses[9], "proxy; fwd=uri-miss; stored");
    assert!(answers.iter().all(|a| a.text() == "answer 1"));
}

#[tokio::test(start_paused = true)]
async fn waiters_go_upstream_themselves_when_the_response_is_not_storable() {
    let (up, proxy) = setup().await;
    let path = "/k?cc=no-store&delay_ms=200";
    let answers = futures_util::future::join_all((0..4).map(|_| get(proxy.addr, path))).await;
    assert_eq!(up.count(), 4);
    let waited = answers
        .iter()
        .filter(|a| a.cache_status() == "proxy; fwd=uri-miss; collapsed=?0; detail=no-store")
        .count();
    assert_eq!(waited, 3);
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_does_not_leave_waiters_hanging() {
    // Reads the request, waits, then hangs up without answering: 502.
    let addr = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(stream);
    })
    .await;
    let proxy = start_proxy(&config(addr)).await;
    let started = tokio::time::Instant::now();
    let answers = futures_util::future::join_all((0..3).map(|_| get(proxy.addr, "/l"))).await;
    let mut statuses: Vec<(u16, &str)> = answers
        .iter()
        .map(|a| (a.status, a.cache_status()))
        .collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [
            (502, "proxy; fwd=uri-miss"),
            (502, "proxy; fwd=uri-miss; collapsed=?0"),
            (502, "proxy; fwd=uri-miss; collapsed=?0"),
        ]
    );
    // The waiters were woken by the failure, not by the 5 s collapse timeout.
    assert!(
        started.elapsed() < proxy::cache::COLLAPSE_WAIT,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_size_bound_evicts_the_least_recently_used() {
    let (up, proxy) = setup().await;
    // Each entry is about 1.6 KiB: the 4 KiB zone holds two.
    for name in ["m1", "m2", "m3"] {
        let answer = get(
            proxy.addr,
            &format!("/small/{name}?cc=max-age=60&bytes=1500"),
        )
        .await;
        assert_eq!(answer.cache_status(), "proxy; fwd=uri-miss; stored");
    }
    assert_eq!(up.count(), 3);
    let m3 = get(proxy.addr, "/small/m3?cc=max-age=60&bytes=1500").await;
    assert_eq!(m3.cache_status(), "proxy; hit; ttl=60");
    let m1 = get(proxy.addr, "/small/m1?cc=max-age=60&bytes=1500").await;
    assert_eq!(
        m1.cache_status(),
        "proxy; fwd=uri-miss; stored",
        "m1 was evicted"
    );
    assert_eq!(m1.body.len(), 1500);
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn a_body_over_max_entry_size_is_streamed_whole_but_not_stored() {
    let (up, proxy) = setup().await;
    // With a Content-Length, the proxy knows at once.
    let known = get(proxy.addr, "/small/n?cc=max-age=60&bytes=3000").await;
    assert_eq!(
        known.cache_status(),
        "proxy; fwd=uri-miss; detail=too-large"
    );
    assert_eq!(known.body.len(), 3000);
    // Streamed without a length: copying stops at 2 KiB, the client gets all.
    let path = "/small/o?cc=max-age=60&pattern=200000";
    for expected in [1, 2] {
        let streamed = get(proxy.addr, path).await;
        assert_eq!(streamed.body.len(), 200_000);
        assert_eq!(crc32fast::hash(&streamed.body), expected_crc(200_000));
        assert_eq!(up.count(), 1 + expected, "not stored: asked again");
    }
}

#[tokio::test]
async fn post_is_never_cached_and_invalidates_the_stored_copy() {
    let (up, proxy) = setup().await;
    for _ in 0..2 {
        let answer = request(proxy.addr, "POST", "/p?cc=max-age=60", &[]).await;
        assert_eq!(answer.cache_status(), "proxy; fwd=bypass; detail=method");
    }
    assert_eq!(up.count(), 2);
    // A successful POST to a stored URL throws the stored copy away.
    get(proxy.addr, "/p?cc=max-age=60").await;
    assert_eq!(
        get(proxy.addr, "/p?cc=max-age=60").await.cache_status(),
        "proxy; hit; ttl=60"
    );
    request(proxy.addr, "POST", "/p?cc=max-age=60", &[]).await;
    let after = get(proxy.addr, "/p?cc=max-age=60").await;
    assert_eq!(after.cache_status(), "proxy; fwd=uri-miss; stored");
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let (up, proxy) = setup().await;
    // A HEAD miss goes upstream and stores nothing (it has no body).
    let head = request(proxy.addr, "HEAD", "/q?cc=max-age=60", &[]).await;
    assert_eq!(head.cache_status(), "proxy; fwd=uri-miss; detail=method");
    get(proxy.addr, "/q?cc=max-age=60").await;
    let head = request(proxy.addr, "HEAD", "/q?cc=max-age=60", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.cache_status(), "proxy; hit; ttl=60");
    assert_eq!(head.header("content-length"), Some("8"));
    assert!(head.body.is_empty());
    assert_eq!(up.count(), 2);
}

#[test]
fn cache_settings_are_checked() {
    let base = "[[listen]]\naddr = \"127.0.0.1:0\"\nZONES\n[[servers]]\nroutes = [{ path = \"/\", upstream = \"app\", cache = CACHE }]\n[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n";
    let errors = |zones: &str, cache: &str| {
        let text = base.replace("ZONES", zones).replace("CACHE", cache);
        match proxy::Config::parse(&text, "proxy.toml") {
            Ok(_) => String::new(),
            Err(e) => {
                e.0.iter()
                    .map(|d| format!("{} / {}", d.message, d.help.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    };
    let zone = "[cache_zones.main]\nmax_size = \"64MiB\"\n[cache_zones.pages]\nmax_size = \"1m\"\n";
    assert_eq!(
        errors(zone, "{ zone = \"main\", default_ttl = \"10s\" }"),
        ""
    );
    assert_eq!(
        errors(zone, "{ zone = \"mian\" }"),
        "cache zone `mian` is not defined / define [cache_zones.mian], or use one of: main, pages"
    );
    assert_eq!(
        errors("", "{ zone = \"main\" }"),
        "cache zone `main` is not defined / define it:\n      [cache_zones.main]\n      max_size = \"64MiB\""
    );
    assert_eq!(
        errors(
            "[cache_zones.main]\nmax_size = \"lots\"\n",
            "{ zone = \"main\" }"
        ),
        "`lots` is not a cache size / write bytes with a unit, e.g. \"64MiB\", \"512KiB\" or \"1m\" (more than zero)"
    );
    assert_eq!(
        errors(
            "[cache_zones.main]\nmax_size = \"1MiB\"\nmax_entry_size = \"2MiB\"\n",
            "{ zone = \"main\" }"
        ),
        "`max_entry_size` (2MiB) is larger than the zone's `max_size` (1MiB) / an entry must fit in its zone: make max_entry_size smaller or max_size larger"
    );
    assert_eq!(
        errors(zone, "{ zone = \"main\", default_ttl = \"soon\" }"),
        "`default_ttl` = `soon` is not a duration / write it like \"10s\", \"5m\" or \"1h\""
    );
    assert!(errors(zone, "{ zone = \"main\", ttl = \"1s\" }").contains("unknown field `ttl`"));
    let on_return = base.replace("ZONES", zone).replace(
        "upstream = \"app\", cache = CACHE",
        "return = { status = 200 }, cache = { zone = \"main\" }",
    );
    let Err(e) = proxy::Config::parse(&on_return, "proxy.toml") else {
        panic!("a cache on a return route is refused");
    };
    assert_eq!(
        e.0[0].message,
        "`cache` only applies to routes with an upstream"
    );
}
