//! Response compression over real loopback: each encoding decodes back to
//! exactly the upstream's bytes, streamed bodies stay streamed, the headers
//! say what was done, and what must not be compressed is left alone.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Deterministic text of `n` bytes: compressible, but not one repeated byte.
fn text(n: usize) -> Vec<u8> {
    let words = ["proxy ", "upstream ", "gzip ", "brotli ", "zstd ", "vary\n"];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0usize;
    while out.len() < n {
        out.extend_from_slice(words[(i * 7 + i / 13) % words.len()].as_bytes());
        out.extend_from_slice(i.to_string().as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

type UpBody = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> UpBody {
    Full::new(bytes.into()).boxed()
}

/// The upstream: one path per kind of answer.
async fn answer(req: Request<Incoming>, gate: Arc<Notify>) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = Response::builder();
    let response = match path.as_str() {
        "/text" => response
            .header("content-type", "text/plain; charset=utf-8")
            .header("etag", "\"v1\"")
            .header("accept-ranges", "bytes")
            .header("vary", "Origin")
            .body(full(text(5000))),
        "/png" => response
            .header("content-type", "image/png")
            .body(full(text(5000))),
        "/encoded" => response
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(full(text(5000))),
        "/tiny" => response
            .header("content-type", "text/plain")
            .body(full(text(100))),
        "/no-transform" => response
            .header("content-type", "text/html")
            .header("cache-control", "public, no-transform")
            .body(full(text(5000))),
        // Several MiB in pieces of 1 to 16 KiB, with a pause now and then:
        // a chunked body that arrives over time.
        "/stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let all = Bytes::from(text(STREAMED));
                let mut at = 0;
                let mut i = 0;
                while at < all.len() {
                    let n = (1024 * (1 + i % 16)).min(all.len() - at);
                    if tx
                        .send(Ok(Frame::data(all.slice(at..at + n))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    at += n;
                    i += 1;
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            response
                .header("content-type", "application/json")
                .body(StreamBody::new(tokio_stream_of(rx)).boxed())
        }
        // One piece, then nothing until the test opens the gate.
        "/slow" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(FIRST)))).await;
                gate.notified().await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(SECOND)))).await;
            });
            response
                .header("content-type", "text/html")
                .body(StreamBody::new(tokio_stream_of(rx)).boxed())
        }
        _ => response.status(404).body(full("")),
    };
    Ok(response.expect("response"))
}

const STREAMED: usize = 5 * 1024 * 1024 + 123;
const FIRST: &[u8] = b"<p>the first part of a page that is still being made</p>\n";
const SECOND: &[u8] = b"<p>and the rest, much later</p>\n";

/// An mpsc receiver as a stream of frames.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn upstream(gate: Arc<Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, gate.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that promises 100,000 bytes of text and closes after 60,000.
async fn cut_upstream() -> SocketAddr {
    raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&text(60_000)).await;
        let _ = stream.flush().await;
    })
    .await
}

struct Setup {
    proxy: TestProxy,
    gate: Arc<Notify>,
}

async fn setup() -> Setup {
    let gate = Arc::new(Notify::new());
    let app = upstream(gate.clone()).await;
    let cut = cut_upstream().await;
    let config = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
compress = true

[[servers.routes]]
path = "/"
upstream = "app"

[[servers.routes]]
path = "/cut"
upstream = "cut"

[[servers.routes]]
path = "/plain/"
upstream = "app"
strip_prefix = true
compress = false

[[servers.routes]]
path = "/gzip-only/"
upstream = "app"
strip_prefix = true
compress = {{ algorithms = ["gzip"], min_length = 10 }}

[upstreams.app]
servers = ["{app}"]

[upstreams.cut]
servers = ["{cut}"]
"#
    );
    Setup {
        proxy: start_proxy(&config).await,
        gate,
    }
}

fn request(
    proxy: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", "app.localhost");
    if let Some(accept) = accept {
        builder = builder.header("accept-encoding", accept);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

async fn decode(encoding: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipDecoder::new(body).read_to_end(&mut out).await?,
        "br" => BrotliDecoder::new(body).read_to_end(&mut out).await?,
        "zstd" => ZstdDecoder::new(body).read_to_end(&mut out).await?,
        other => panic!("unexpected encoding {other}"),
    };
    Ok(out)
}

fn header<'a>(response: &'a Response<()>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn each_encoding_decodes_to_exactly_the_upstreams_body() {
    let s = setup().await;
    let client = client();
    for (accept, expected) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("br;q=1, gzip;q=0.5", "br"),
        ("zstd;q=0, br;q=0, gzip", "gzip"),
    ] {
        let (response, body) =
            send(&client, request(s.proxy.addr, "GET", "/text", Some(accept))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-encoding"),
            Some(expected),
            "{accept}"
        );
        assert_eq!(header(&response, "vary"), Some("Origin, Accept-Encoding"));
        assert_eq!(header(&response, "etag"), Some("W/\"v1\""));
        assert_eq!(header(&response, "content-length"), None);
        assert_eq!(header(&response, "accept-ranges"), None);
        assert!(body.len() < 2500, "{expected}: {} bytes", body.len());
        let decoded = decode(expected, &body).await.expect("a valid stream");
        assert_eq!(decoded, text(5000), "{expected}");
    }
}

#[tokio::test]
async fn without_an_acceptable_encoding_the_body_goes_as_it_is_with_vary() {
    let s = setup().await;
    let client = client();
    for accept in [
        None,
        Some("gzip;q=0"),
        Some("deflate"),
        Some("gzip;q=0.5, identity"),
    ] {
        let (response, body) = send(&client, request(s.proxy.addr, "GET", "/text", accept)).await;
        assert_eq!(header(&response, "content-encoding"), None, "{accept:?}");
        assert_eq!(header(&response, "vary"), Some("Origin, Accept-Encoding"));
        assert_eq!(header(&response, "etag"), Some("\"v1\""));
        assert_eq!(header(&response, "content-length"), Some("5000"));
        assert_eq!(header(&response, "accept-ranges"), Some("bytes"));
        assert_eq!(body.as_ref(), text(5000).as_slice());
    }
}

#[tokio::test]
async fn images_encoded_bodies_tiny_bodies_and_no_transform_are_left_alone() {
    let s = setup().await;
    let client = client();
    for (path, vary, length) in [
        ("/png", None, 5000),
        ("/encoded", None, 5000),
        ("/no-transform", None, 5000),
        ("/tiny", Some("Accept-Encoding"), 100),
        ("/plain/text", Some("Origin"), 5000),
    ] {
        let (response, body) = send(
            &client,
            request(s.proxy.addr, "GET", path, Some("gzip, br")),
        )
        .await;
        assert_eq!(
            header(&response, "content-encoding"),
            (path == "/encoded").then_some("gzip"),
            "{path}"
        );
        assert_eq!(header(&response, "vary"), vary, "{path}");
        assert_eq!(body.as_ref(), text(length).as_slice(), "{path}");
    }
    // The same tiny body on a route with a lower min_length is compressed.
    let (response, body) = send(
        &client,
        request(s.proxy.addr, "GET", "/gzip-only/tiny", Some("br, gzip")),
    )
    .await;
    assert_eq!(header(&response, "content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &body).await.expect("gzip"), text(100));
}

#[tokio::test]
async fn a_head_request_is_answered_without_compression() {
    let s = setup().await;
    let client = client();
    let (response, body) = send(
        &client,
        request(s.proxy.addr, "HEAD", "/text", Some("gzip")),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-encoding"), None);
    assert_eq!(header(&response, "content-length"), Some("5000"));
    assert_eq!(header(&response, "vary"), Some("Origin, Accept-Encoding"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_large_streamed_body_round_trips_in_every_encoding() {
    let s = setup().await;
    let client = client();
    let expected = text(STREAMED);
    for encoding in ["gzip", "br", "zstd"] {
        let response = client
            .request(request(s.proxy.addr, "GET", "/stream", Some(encoding)))
            .await
            .expect("the proxy answers");
        assert_eq!(header_of(&response, "content-encoding"), Some(encoding));
        assert_eq!(header_of(&response, "transfer-encoding"), Some("chunked"));
        // Read frame by frame: the encoded body arrives in many pieces, not one.
        let mut body = response.into_body();
        let mut encoded = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("a complete body").into_data() {
                encoded.extend_from_slice(&data);
                frames += 1;
            }
        }
        assert!(frames > 1, "{encoding}: {frames} frame");
        assert!(
            encoded.len() < expected.len() / 2,
            "{encoding}: {}",
            encoded.len()
        );
        let decoded = decode(encoding, &encoded).await.expect("a valid stream");
        assert!(decoded == expected, "{encoding}: the decoded body differs");
    }
}

fn header_of<'a, B>(response: &'a Response<B>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn a_pause_upstream_flushes_what_came_so_far() {
    let s = setup().await;
    let client = client();
    for encoding in ["gzip", "br", "zstd"] {
        let response = client
            .request(request(s.proxy.addr, "GET", "/slow", Some(encoding)))
            .await
            .expect("the proxy answers");
        assert_eq!(header_of(&response, "content-encoding"), Some(encoding));
        let mut body = response.into_body();
        // The upstream sent FIRST and waits: the client must be able to decode
        // FIRST before the upstream sends anything more.
        let mut received = Vec::new();
        let mut decoded = Vec::new();
        while decoded.len() < FIRST.len() {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .expect("the first part arrives while the upstream waits")
                .expect("a frame")
                .expect("no error");
            let data = frame.into_data().expect("data");
            received.extend_from_slice(&data);
            decoded = decode_prefix(encoding, &received).await;
        }
        assert_eq!(decoded, FIRST);
        s.gate.notify_one();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("complete").into_data() {
                received.extend_from_slice(&data);
            }
        }
        let all = decode(encoding, &received).await.expect("a valid stream");
        assert_eq!(all, [FIRST, SECOND].concat());
    }
}

/// What a decoder makes of the bytes received so far (a stream not yet ended).
async fn decode_prefix(encoding: &str, received: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = match encoding {
        "gzip" => GzipDecoder::new(received).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(received).read_to_end(&mut out).await,
        _ => ZstdDecoder::new(received).read_to_end(&mut out).await,
    };
    out
}

#[tokio::test]
async fn an_upstream_cut_off_midway_makes_the_client_see_an_error() {
    let s = setup().await;
    let client = client();
    for encoding in ["gzip", "br", "zstd"] {
        let response = client
            .request(request(s.proxy.addr, "GET", "/cut", Some(encoding)))
            .await
            .expect("the head arrives");
        assert_eq!(header_of(&response, "content-encoding"), Some(encoding));
        let mut body = response.into_body();
        let mut received = Vec::new();
        let mut failed = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "{encoding}: the client must see the body fail");
        assert!(
            decode(encoding, &received).await.is_err(),
            "{encoding}: what arrived must not be a complete compressed stream"
        );
    }
}

#[tokio::test]
async fn an_http2_client_gets_a_compressed_body_too() {
    let s = setup().await;
    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = h2
        .request(request(s.proxy.addr, "GET", "/text", Some("br")))
        .await
        .expect("h2 response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(header_of(&response, "content-encoding"), Some("br"));
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(decode("br", &body).await.expect("br"), text(5000));
}

#[test]
fn compress_mistakes_are_config_errors() {
    for (compress, expected) in [
        (
            r#"compress = { algorithms = ["deflate"] }"#,
            "`deflate` is not a compression algorithm the proxy has",
        ),
        (
            r#"compress = { algorithms = ["deflate"] }"#,
            r#"choose among "zstd", "br", "gzip""#,
        ),
        (
            r#"compress = { algorithms = ["gzip", "GZIP"] }"#,
            "`GZIP` is listed twice",
        ),
        (
            r#"compress = { algorithms = [] }"#,
            "`algorithms` lists no algorithm",
        ),
        (r#"compress = { min_length = -1 }"#, "`-1` is not a length"),
        (
            r#"compress = { types = ["html"] }"#,
            "`html` is not a media type",
        ),
        (
            r#"compress = { types = [] }"#,
            "`types` lists no media type",
        ),
        (
            r#"compress = { level = "max" }"#,
            "`max` is not a compression level",
        ),
        (r#"compress = { gzip = true }"#, "unknown field `gzip`"),
        (r#"compress = "gzip""#, "true, false or a table"),
    ] {
        let text = single_upstream_config(&["127.0.0.1:9".parse().expect("addr")], "").replace(
            "routes = [{ path = \"/\", upstream = \"app\" }]",
            &format!("{compress}\nroutes = [{{ path = \"/\", upstream = \"app\" }}]"),
        );
        let errors = proxy::Config::parse(&text, "t.toml")
            .expect_err("invalid")
            .to_string();
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
}

#[test]
fn a_compress_table_keeps_the_defaults_it_does_not_name() {
    let text = single_upstream_config(&["127.0.0.1:9".parse().expect("addr")], "").replace(
        "routes = [{ path = \"/\", upstream = \"app\" }]",
        "compress = { algorithms = [\"br\", \"gzip\"], level = \"fastest\" }\nroutes = [{ path = \"/\", upstream = \"app\", compress = false }]",
    );
    let config = proxy::Config::parse(&text, "t.toml").expect("valid");
    let server = config.servers[0].compress.as_ref().expect("server setting");
    use proxy::compress::{Algorithm, Level};
    assert_eq!(server.algorithms, [Algorithm::Brotli, Algorithm::Gzip]);
    assert_eq!(server.level, Level::Fastest);
    assert_eq!(server.min_length, 256);
    assert!(server.types.iter().any(|t| t == "text/*"));
    let route = config.servers[0].routes[0]
        .compress
        .as_ref()
        .expect("route setting");
    assert!(!route.is_on());
}
