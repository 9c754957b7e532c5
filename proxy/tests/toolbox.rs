//! The HTTP toolbox together, as a browser meets it: a page that is cached
//! once and compressed for each client, with `Vary` and `Cache-Status`
//! telling caches and people what happened.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_compression::tokio::bufread::ZstdDecoder;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// An HTML page of a few KiB, cacheable for a minute.
fn page() -> String {
    (0..200)
        .map(|i| format!("<p>paragraph {i} of the page</p>\n"))
        .collect()
}

/// An upstream serving [`page`], counting the requests it gets.
async fn page_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .header("cache-control", "max-age=60")
                                .header("etag", "\"page-v1\"")
                                .body(Full::new(Bytes::from(page())))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

fn browser_get(
    proxy: std::net::SocketAddr,
    accept_encoding: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::get(format!("http://{proxy}/"))
        .header("host", "app.localhost")
        .header("accept", "text/html");
    if let Some(encodings) = accept_encoding {
        request = request.header("accept-encoding", encodings);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

async fn zstd_decode(body: &[u8]) -> String {
    let mut out = String::new();
    ZstdDecoder::new(body)
        .read_to_string(&mut out)
        .await
        .expect("a valid zstd body");
    out
}

#[tokio::test]
async fn a_browser_gets_a_compressed_cached_page_with_vary_and_cache_status() {
    let (upstream, requests) = page_upstream().await;
    let config = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[cache_zones.pages]
max_size = "1MiB"

[[servers]]
server_names = ["app.localhost"]
routes = [{{ path = "/", upstream = "site", cache = {{ zone = "pages" }}, compress = true }}]

[upstreams.site]
servers = ["{upstream}"]
"#
    );
    let proxy = start_proxy(&config).await;
    let client = client();
    let browser = Some("gzip, deflate, br, zstd");

    // First visit: a miss, stored, and compressed on its way out.
    let (first, body) = send(&client, browser_get(proxy.addr, browser)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["cache-status"],
        "proxy; fwd=uri-miss; stored"
    );
    assert_eq!(first.headers()["content-encoding"], "zstd");
    assert_eq!(first.headers()["vary"], "Accept-Encoding");
    assert_eq!(
        first.headers()["etag"],
        "W/\"page-v1\"",
        "a changed body's ETag is weak"
    );
    assert!(body.len() < page().len() / 2, "{} bytes", body.len());
    assert_eq!(zstd_decode(&body).await, page());

    // Second visit: from the cache, compressed again for this client.
    let (second, body) = send(&client, browser_get(proxy.addr, browser)).await;
    let status = second.headers()["cache-status"].to_str().expect("text");
    assert!(status.starts_with("proxy; hit; ttl="), "{status}");
    assert_eq!(second.headers()["content-encoding"], "zstd");
    assert_eq!(second.headers()["vary"], "Accept-Encoding");
    assert!(second.headers().contains_key("age"));
    assert_eq!(zstd_decode(&body).await, page());

    // A client that cannot decode anything gets the same stored page, as is:
    // the cache keeps the upstream's form and compression is per client.
    let (plain, body) = send(&client, browser_get(proxy.addr, None)).await;
    assert!(
        plain.headers()["cache-status"]
            .to_str()
            .expect("text")
            .starts_with("proxy; hit")
    );
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "Accept-Encoding");
    assert_eq!(std::str::from_utf8(&body).expect("utf-8"), page());

    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the upstream was asked once"
    );
}
