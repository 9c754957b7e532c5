//! Requests that succeed: routing, rewriting, forwarding headers, balancing,
//! keep-alive pooling and streamed bodies, all over real loopback sockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn the_upstream_sees_the_forwarding_headers_of_the_nginx_tutorials() {
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(&[up.addr], "")).await;
    let request = Request::get(format!("http://{}/hello?x=1", proxy.addr))
        .header("host", "app.localhost")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "6.6.6.6")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    let echo = json(&body);
    assert_eq!(echo["uri"], "/hello?x=1");
    assert_eq!(seen_header(&echo, "host"), Some("app.localhost"));
    assert_eq!(seen_header(&echo, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(
        seen_header(&echo, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen_header(&echo, "x-forwarded-host"),
        Some("app.localhost")
    );
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross_the_proxy_in_either_direction() {
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(&[up.addr], "")).await;
    let request = Request::get(format!("http://{}/", proxy.addr))
        .header("host", "app.localhost")
        .header("connection", "x-client-secret")
        .header("x-client-secret", "for the proxy only")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    let echo = json(&body);
    for name in [
        "x-client-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
    ] {
        assert_eq!(
            seen_header(&echo, name),
            None,
            "{name} reached the upstream"
        );
    }
    // The upstream named x-upstream-secret in its Connection header.
    assert!(response.headers().get("x-upstream-secret").is_none());
    assert_eq!(response.headers()["x-upstream"], "app-1");
}

#[tokio::test]
async fn with_preserve_host_off_the_upstream_sees_its_own_address() {
    let up = echo_upstream("app-1").await;
    let config = single_upstream_config(&[up.addr], "").replace(
        "upstream = \"app\" }",
        "upstream = \"app\", preserve_host = false }",
    );
    let proxy = start_proxy(&config).await;
    let (_, body) = get(&client(), proxy.addr, "app.localhost", "/").await;
    let expected = up.addr.to_string();
    assert_eq!(seen_header(&json(&body), "host"), Some(expected.as_str()));
}

#[tokio::test]
async fn round_robin_sends_each_request_to_the_next_server() {
    let ups = [
        echo_upstream("whoami-1").await,
        echo_upstream("whoami-2").await,
        echo_upstream("whoami-3").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let proxy = start_proxy(&single_upstream_config(&addrs, "")).await;
    let client = client();
    let mut answered = Vec::new();
    for _ in 0..6 {
        let (response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
        answered.push(
            response.headers()["x-upstream"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
    }
    assert_eq!(
        answered,
        [
            "whoami-1", "whoami-2", "whoami-3", "whoami-1", "whoami-2", "whoami-3"
        ]
    );
}

#[tokio::test]
async fn upstream_connections_are_reused_across_requests() {
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(&[up.addr], "")).await;
    let client = client();
    for _ in 0..20 {
        let (response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "20 sequential requests should share one pooled upstream connection"
    );
}

#[tokio::test]
async fn an_upstream_closing_its_idle_connections_is_never_an_error() {
    // Answers one request per connection, keep-alive style (no
    // `Connection: close`), then closes it a moment later, as an upstream
    // does when its own keep-alive timeout expires.
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let closer = raw_upstream(move |mut stream| {
        let count = count.clone();
        async move {
            read_head(&mut stream).await;
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(&[closer], "")).await;
    let client = client();
    for _ in 0..5 {
        let (response, body) = get(&client, proxy.addr, "app.localhost", "/").await;
        assert_eq!(
            response.status(),
            200,
            "a closed pooled connection is skipped"
        );
        assert_eq!(&body[..], b"ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        5,
        "one new connection per request"
    );
}

/// A keep-alive upstream that answers `GET /slow` with a body sent in two
/// halves 500 ms apart, and anything else with `ok`; counts its connections.
async fn slow_body_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let addr = raw_upstream(move |mut stream| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
                if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    continue;
                }
                let answer: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
                let _ = stream.write_all(answer).await;
                if head.starts_with(b"GET /slow") {
                    let _ = stream.write_all(b"ab").await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = stream.write_all(b"cd").await;
                } else {
                    let _ = stream.write_all(b"okok").await;
                }
                head.clear();
            }
        }
    })
    .await;
    (addr, connections)
}

#[tokio::test]
async fn a_connection_still_streaming_a_body_is_not_given_another_request() {
    // A second request sent while the first one's body still trickles must
    // go on another connection, not queue behind it.
    let (upstream, connections) = slow_body_upstream().await;
    let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
    let client = client();
    let slow = {
        let client = client.clone();
        let addr = proxy.addr;
        tokio::spawn(async move { get(&client, addr, "app.localhost", "/slow").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let (response, body) = get(&client, proxy.addr, "app.localhost", "/").await;
    assert_eq!((response.status().as_u16(), &body[..]), (200, &b"okok"[..]));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the second request waited for the first one's body: {:?}",
        started.elapsed()
    );
    let (slow_response, slow_body) = slow.await.expect("the slow request completes");
    assert_eq!(
        (slow_response.status().as_u16(), &slow_body[..]),
        (200, &b"abcd"[..])
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // Both connections are idle now: later requests reuse them.
    for _ in 0..5 {
        get(&client, proxy.addr, "app.localhost", "/").await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_large_download_streams_through_intact() {
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(&[up.addr], "")).await;
    let total: u64 = 8 * 1024 * 1024 + 17;
    let response = client()
        .request(
            Request::get(format!("http://{}/pattern?bytes={total}", proxy.addr))
                .header("host", "app.localhost")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let (length, crc) = digest(response.into_body()).await;
    assert_eq!(length, total);
    assert_eq!(crc, expected_crc(total));
}

#[tokio::test]
async fn a_large_upload_streams_through_intact() {
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(&[up.addr], "")).await;
    let total: u64 = 4 * 1024 * 1024 + 3;
    // A streamed (chunked) upload: the proxy must pass it on without buffering it whole.
    let body = PatternBody::new(total, false);
    let request = Request::post(format!("http://{}/upload", proxy.addr))
        .header("host", "app.localhost")
        .body(body)
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<PatternBody>();
    let response = client.request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let echo = json(&body);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"], total);
    assert_eq!(echo["body_crc"], pattern_crc_hex(total));
}

#[tokio::test]
async fn prefix_routes_strip_and_return_routes_answer_without_an_upstream() {
    let api = echo_upstream("api").await;
    let web = echo_upstream("web").await;
    let config = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [
  {{ path = "/", upstream = "web" }},
  {{ path = "/api/", upstream = "api", strip_prefix = true }},
  {{ path = "/welcome", exact = true, return = {{ status = 200, body = "Welcome to the reverse proxy!" }} }},
  {{ path = "/old/", return = {{ status = 301, location = "/new/" }} }},
]

[[servers]]
server_names = ["api.localhost"]
routes = [{{ path = "/", upstream = "api" }}]

[upstreams.api]
servers = ["{}"]

[upstreams.web]
servers = ["{}"]
"#,
        api.addr, web.addr
    );
    let proxy = start_proxy(&config).await;
    let client = client();

    let (r, body) = get(&client, proxy.addr, "app.localhost", "/api/tasks?done=1").await;
    assert_eq!(r.headers()["x-upstream"], "api");
    assert_eq!(json(&body)["uri"], "/tasks?done=1");

    let (r, body) = get(&client, proxy.addr, "app.localhost", "/index.html").await;
    assert_eq!(r.headers()["x-upstream"], "web");
    assert_eq!(json(&body)["uri"], "/index.html");

    let (r, body) = get(&client, proxy.addr, "app.localhost", "/welcome").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body, "Welcome to the reverse proxy!");

    let (r, _) = get(&client, proxy.addr, "app.localhost", "/old/page").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/new/");

    // Same IP, another name: the second server, which keeps the path.
    let (r, body) = get(&client, proxy.addr, "api.localhost:8080", "/api/tasks").await;
    assert_eq!(r.headers()["x-upstream"], "api");
    assert_eq!(json(&body)["uri"], "/api/tasks");
}

#[tokio::test]
async fn a_path_no_route_matches_gets_404() {
    let up = echo_upstream("api").await;
    let config = single_upstream_config(&[up.addr], "").replace("path = \"/\"", "path = \"/api/\"");
    let proxy = start_proxy(&config).await;
    let (r, body) = get(&client(), proxy.addr, "app.localhost", "/elsewhere").await;
    assert_eq!(r.status(), 404);
    assert_eq!(body, "404 Not Found: no route matches this path\n");
}

#[tokio::test]
async fn an_http2_client_is_served_over_http1_upstream() {
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(&[up.addr], "")).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    // HTTP/2 carries the host in :authority, taken from the URI; the config's
    // only server is also the default, so the IP address is routed there.
    let request = Request::get(format!("http://{}/via-h2", proxy.addr))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = h2.request(request).await.expect("h2 response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let echo = json(&body);
    assert_eq!(echo["uri"], "/via-h2");
}
