//! Request-rate limits through the proxy, on a clock the test controls:
//! tokio's paused clock moves only when every task waits, so a burst queued
//! for seconds finishes at once, and the timeline is exact on any machine.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

fn config(up: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[limit_req_zones.one]
key = "client_ip"
rate = "1r/s"
size = "1m"

[limit_req_zones.by_token]
key = "header:x-api-token"
rate = "1r/s"

[[servers]]
server_names = ["app.localhost"]
limit_req = {{ zone = "one", burst = 2 }}
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/strict/", upstream = "app", limit_req = {{ zone = "one", status = 429 }} }},
  {{ path = "/token/", upstream = "app", limit_req = {{ zone = "by_token" }} }},
  {{ path = "/welcome", exact = true, return = {{ status = 200, body = "hi" }} }},
]

[upstreams.app]
servers = ["{up}"]
"#
    )
}

/// Sends `n` requests for `path` at the same instant; returns, in the order
/// sent, each status, its Retry-After, and when it was answered.
async fn burst(
    proxy: std::net::SocketAddr,
    path: &str,
    n: usize,
) -> Vec<(u16, Option<String>, Duration)> {
    let start = Instant::now();
    let client = client();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = client.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let (response, _) = get(&client, proxy, "app.localhost", &path).await;
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            (response.status().as_u16(), retry, start.elapsed())
        }));
        // Let each request reach the limiter before the next, so "in the
        // order sent" is the order counted. No time passes.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("request task"));
    }
    results
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_queued_at_the_rate_and_the_excess_gets_503_with_retry_after() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let results = burst(proxy.addr, "/page", 4).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [200, 200, 200, 503]);
    // The burst of two was spaced at 1r/s: answered after about 1 s and 2 s.
    let secs = |i: usize| results[i].2.as_secs();
    assert_eq!((secs(0), secs(1), secs(2)), (0, 1, 2), "{results:?}");
    assert_eq!(results[3].1.as_deref(), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn a_route_limit_replaces_the_servers_and_can_answer_429() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let results = burst(proxy.addr, "/strict/x", 2).await;
    assert_eq!(results[0].0, 200);
    assert_eq!(results[1].0, 429);
    // A second later the bucket has drained.
    tokio::time::advance(Duration::from_secs(1)).await;
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/strict/x").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn return_routes_are_answered_before_limits_as_in_nginx() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let statuses: Vec<u16> = burst(proxy.addr, "/welcome", 5)
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(statuses, [200; 5]);
}

#[tokio::test(start_paused = true)]
async fn a_header_keyed_zone_counts_each_token_and_ignores_requests_without_one() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let with = |token: &'static str| {
        http::Request::get(format!("http://{}/token/", proxy.addr))
            .header("host", "app.localhost")
            .header("x-api-token", token)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    assert_eq!(send(&client, with("alice")).await.0.status(), 200);
    assert_eq!(send(&client, with("alice")).await.0.status(), 503);
    assert_eq!(send(&client, with("bob")).await.0.status(), 200);
    for _ in 0..3 {
        let (response, _) = get(&client, proxy.addr, "app.localhost", "/token/").await;
        assert_eq!(response.status(), 200, "no token, no limit");
    }
}

#[test]
fn limit_settings_are_checked() {
    let base = "[[listen]]\naddr = \"127.0.0.1:0\"\n[limit_req_zones.one]\nrate = \"RATE\"\nsize = \"SIZE\"\n[[servers]]\nlimit_req = LIMIT\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    let errors = |rate: &str, size: &str, limit: &str| {
        let text = base
            .replace("RATE", rate)
            .replace("SIZE", size)
            .replace("LIMIT", limit);
        match proxy::Config::parse(&text, "proxy.toml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        errors(
            "1r/s",
            "10m",
            "{ zone = \"one\", burst = 5, nodelay = true }"
        ),
        ""
    );
    assert!(errors("1r/s", "10m", "{ zone = \"two\" }").contains("rate zone `two` is not defined"));
    assert!(errors("fast", "10m", "{ zone = \"one\" }").contains("`fast` is not a rate"));
    assert!(errors("1r/s", "ten", "{ zone = \"one\" }").contains("is not a zone size"));
    assert!(
        errors(
            "1r/s",
            "10m",
            "{ zone = \"one\", burst = 5, nodelay = true, delay = 2 }"
        )
        .contains("`nodelay` and `delay` cannot be used together")
    );
    assert!(
        errors("1r/s", "10m", "{ zone = \"one\", status = 200 }")
            .contains("not a status for a rejected request")
    );
}

fn body_limit_config(up: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
max_body_size = "1m"
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/small/", upstream = "app", max_body_size = "10" }},
]

[upstreams.app]
servers = ["{up}"]
"#
    )
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_413_before_anything_goes_upstream() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&body_limit_config(up.addr)).await;
    let request = http::Request::post(format!("http://{}/small/upload", proxy.addr))
        .header("host", "app.localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"eleven bytes",
        )))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 413);
    assert!(String::from_utf8_lossy(&body).contains("larger than this route accepts"));
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 0);

    // At the limit is fine: the route's 10 bytes replace the server's 1m.
    let request = http::Request::post(format!("http://{}/small/upload", proxy.addr))
        .header("host", "app.localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"ten bytes!",
        )))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)["body_bytes"], 10);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_off_and_never_reaches_the_upstream_complete() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&body_limit_config(up.addr)).await;
    let streamed = |total| {
        http::Request::post(format!("http://{}/upload", proxy.addr))
            .header("host", "app.localhost")
            .body(PatternBody::new(total, false))
            .expect("request")
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<PatternBody>();

    // 2 MiB, chunked (no Content-Length): passes the head check, then goes over.
    let response = client
        .request(streamed(2 * 1024 * 1024))
        .await
        .expect("response");
    assert_eq!(response.status(), 413);
    assert_eq!(
        up.completed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the upstream must not have seen the truncated body as a complete request"
    );

    // Under the limit, the same kind of upload streams through intact.
    let total = 1024 * 1024 - 1;
    let response = client.request(streamed(total)).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(json(&body)["body_crc"], pattern_crc_hex(total));
    assert_eq!(up.completed.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_concurrency_slot_is_held_until_the_response_body_is_sent() {
    // The upstream sends the head and half the body, then waits for `release`.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let gated = raw_upstream(move |mut stream| {
        let mut release = release_rx.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
                .await;
            let _ = release.wait_for(|released| *released).await;
            let _ = stream.write_all(b"-half").await;
        }
    })
    .await;
    let config = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[limit_conn_zones.addr]
key = "client_ip"

[[servers]]
limit_conn = {{ zone = "addr", max = 1 }}
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{gated}"]
"#
    );
    let proxy = start_proxy(&config).await;
    let client = client();

    // A: its head arrives, its body is still streaming.
    let request = http::Request::get(format!("http://{}/download", proxy.addr))
        .header("host", "app.localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let a = client.request(request).await.expect("A's head");
    assert_eq!(a.status(), 200);

    // B, meanwhile, finds the only slot taken.
    let (b, body) = get(&client, proxy.addr, "app.localhost", "/other").await;
    assert_eq!(b.status(), 503);
    assert!(String::from_utf8_lossy(&body).contains("too many requests in progress"));

    // A finishes; its slot comes back.
    let _ = release_tx.send(true);
    let a_body = http_body_util::BodyExt::collect(a.into_body())
        .await
        .expect("A's body")
        .to_bytes();
    assert_eq!(a_body, "first-half");
    let (c, _) = get(&client, proxy.addr, "app.localhost", "/again").await;
    assert_eq!(c.status(), 200);
}
