//! Bodies arrive whole and unchanged, whatever their size and framing, and
//! they stream: every byte crosses the proxy with a CRC-32 compared end to
//! end, uploads and downloads, `Content-Length` and chunked, HTTP/1.1 and
//! HTTP/2 clients; the first bytes get through before the last are sent; and
//! 1 GiB each way through the real `proxy` binary leaves its peak memory far
//! below what a proxy holding the body would need.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The sizes every framing and protocol is checked with: empty, one byte,
/// one byte short of a 16 KiB boundary, and two that take many frames.
const SIZES: [u64; 5] = [0, 1, 16 * KIB - 1, MIB, 64 * MIB];

type TestBody = BoxBody<Bytes, Infallible>;

/// An upstream that checks uploads and serves downloads:
/// - `PUT /upload`: reads the body and answers `LENGTH CRC` and how it came
///   (`content-length` or `chunked`);
/// - `GET /download?bytes=N&sized=1`: N pattern bytes, with a
///   `Content-Length` (`sized=1`) or chunked (`sized=0`).
async fn integrity_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(req: Request<Incoming>) -> Response<TestBody> {
    if req.uri().path() == "/download" {
        let query = req.uri().query().unwrap_or("");
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let body = PatternBody::new(param("bytes"), param("sized") == 1);
        return Response::new(body.boxed());
    }
    let framing = if req.headers().contains_key("content-length") {
        "content-length"
    } else if req.headers().contains_key("transfer-encoding") {
        "chunked"
    } else {
        "none"
    };
    let (length, crc) = digest(req.into_body()).await;
    Response::new(
        Full::new(Bytes::from(format!("{length} {crc:08x} {framing}")))
            .map_err(|never| match never {})
            .boxed(),
    )
}

fn client_for(
    http2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    PatternBody,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

/// Uploads `total` pattern bytes to `/upload` through the proxy at `proxy`
/// and checks that the upstream got them all, unchanged.
async fn upload(http2: bool, proxy: SocketAddr, total: u64, sized: bool) {
    let what = format!("upload of {total} bytes, sized={sized}, http2={http2}");
    let request = Request::put(format!("http://{proxy}/upload"))
        .header("host", "app.localhost")
        .body(PatternBody::new(total, sized))
        .expect("request");
    let response = client_for(http2)
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(response.status(), 200, "{what}");
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    let mut seen = text.split(' ');
    let (length, crc) = (seen.next(), seen.next());
    assert_eq!(length, Some(total.to_string().as_str()), "{what}: {text}");
    assert_eq!(
        crc,
        Some(format!("{:08x}", expected_crc(total)).as_str()),
        "{what}: {text}"
    );
    // Over HTTP/1.1 the client's framing goes through as it is; an empty
    // body may go with no framing at all.
    if !http2 && total > 0 {
        let framing = if sized { "content-length" } else { "chunked" };
        assert_eq!(seen.next(), Some(framing), "{what}: {text}");
    }
}

/// Downloads `total` pattern bytes from `/download` through the proxy and
/// checks them.
async fn download(http2: bool, proxy: SocketAddr, total: u64, sized: bool) {
    let what = format!("download of {total} bytes, sized={sized}, http2={http2}");
    let request = Request::get(format!(
        "http://{proxy}/download?bytes={total}&sized={}",
        u8::from(sized)
    ))
    .header("host", "app.localhost")
    .body(PatternBody::new(0, true))
    .expect("request");
    let response = client_for(http2)
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(response.status(), 200, "{what}");
    // Over HTTP/1.1 the upstream's framing reaches the client; an empty
    // body is sent as `content-length: 0` either way.
    if !http2 && total > 0 {
        let headers = response.headers();
        if sized {
            assert_eq!(
                headers.get("content-length").map(|v| v.as_bytes()),
                Some(total.to_string().as_bytes()),
                "{what}"
            );
        } else {
            assert_eq!(
                headers.get("transfer-encoding").map(|v| v.as_bytes()),
                Some(&b"chunked"[..]),
                "{what}: {headers:?}"
            );
        }
    }
    assert_eq!(
        digest(response.into_body()).await,
        (total, expected_crc(total)),
        "{what}"
    );
}

#[test]
fn the_expected_crc_is_the_crc_of_the_bytes() {
    for total in [
        0,
        1,
        PATTERN_PERIOD as u64 - 1,
        PATTERN_PERIOD as u64,
        3 * PATTERN_PERIOD as u64 + 5,
        5 * MIB + 3,
    ] {
        let mut crc = crc32fast::Hasher::new();
        let mut body = PatternBody::new(total, true);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            let data = frame.into_data().expect("data");
            // The pattern, byte for byte, wherever the frame begins.
            crc.update(&data);
        }
        assert_eq!(crc.finalize(), expected_crc(total), "{total} bytes");
    }
    let first: Vec<u8> = (0..100_000).map(pattern_byte).collect();
    let mut body = PatternBody::new(100_000, false);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut produced = Vec::new();
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
        produced.extend_from_slice(&frame.into_data().expect("data"));
    }
    assert_eq!(produced.len(), first.len());
    // Period PATTERN_PERIOD: byte i is pattern_byte(i % PATTERN_PERIOD).
    assert!(
        produced
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte((i % PATTERN_PERIOD) as u64))
    );
}

async fn proxy_to_integrity_upstream() -> TestProxy {
    let upstream = integrity_upstream().await;
    start_proxy(&single_upstream_config(&[upstream], "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_http1_arrive_whole_with_either_framing() {
    let proxy = proxy_to_integrity_upstream().await;
    for total in SIZES {
        for sized in [true, false] {
            upload(false, proxy.addr, total, sized).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_over_http1_arrive_whole_with_either_framing() {
    let proxy = proxy_to_integrity_upstream().await;
    for total in SIZES {
        for sized in [true, false] {
            download(false, proxy.addr, total, sized).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_http2_arrive_whole_with_or_without_a_length() {
    let proxy = proxy_to_integrity_upstream().await;
    for total in SIZES {
        for sized in [true, false] {
            upload(true, proxy.addr, total, sized).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_over_http2_arrive_whole_with_or_without_a_length() {
    let proxy = proxy_to_integrity_upstream().await;
    for total in SIZES {
        for sized in [true, false] {
            download(true, proxy.addr, total, sized).await;
        }
    }
}

/// A body fed by the test, frame by frame, through a channel.
fn channel_body() -> (
    mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    StreamBody<tokio_stream_shim::Receiver>,
) {
    let (tx, rx) = mpsc::channel(4);
    (tx, StreamBody::new(tokio_stream_shim::Receiver(rx)))
}

/// `mpsc::Receiver` as a `Stream`, for `StreamBody` (no tokio-stream needed).
mod tokio_stream_shim {
    use super::*;

    pub struct Receiver(pub mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

    impl futures_util::Stream for Receiver {
        type Item = Result<Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_upload_streams_the_upstream_has_the_first_bytes_before_the_client_sends_the_last() {
    for sized in [true, false] {
        // The upstream reports the first bytes it receives, then reads on.
        let (first_tx, mut first_bytes) = mpsc::unbounded_channel::<usize>();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let first_tx = first_tx.clone();
                async move {
                    let mut body = req.into_body();
                    let mut length = 0;
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Ok(data) = frame.into_data() {
                            if length == 0 {
                                let _ = first_tx.send(data.len());
                            }
                            length += data.len();
                        }
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(length.to_string()))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
        let (tx, body) = channel_body();
        let mut request =
            Request::put(format!("http://{}/upload", proxy.addr)).header("host", "app.localhost");
        // Over the 64 KiB a request may keep in memory to send again.
        let total = 2 * 1024 * 1024;
        if sized {
            request = request.header("content-length", total.to_string());
        }
        let request = request.body(body).expect("request");
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<StreamBody<tokio_stream_shim::Receiver>>();
        let exchange = tokio::spawn(async move { client.request(request).await });
        let half = Bytes::from(vec![b'u'; total / 2]);
        tx.send(Ok(Frame::data(half.clone()))).await.expect("send");
        // The last bytes are not sent until the upstream has the first ones:
        // a proxy that waited for the whole body would never get there.
        let got = tokio::time::timeout(WAIT, first_bytes.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("sized={sized}: the upstream got nothing before the upload ended")
            });
        assert!(got.is_some_and(|n| n > 0), "sized={sized}");
        tx.send(Ok(Frame::data(half))).await.expect("send");
        drop(tx);
        let response = tokio::time::timeout(WAIT, exchange)
            .await
            .expect("answered")
            .expect("join")
            .expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body, total.to_string(), "sized={sized}");
    }
}

#[tokio::test]
async fn a_download_streams_the_client_has_the_first_bytes_before_the_upstream_sends_the_last() {
    for sized in [true, false] {
        let total: usize = 2 * 1024 * 1024;
        // The upstream's body is fed by the test.
        let (tx, body) = channel_body();
        let body = std::sync::Mutex::new(Some(body));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(move |_req: Request<Incoming>| {
                let body = body.lock().expect("lock").take();
                async move {
                    let mut response = Response::builder();
                    if sized {
                        response = response.header("content-length", total.to_string());
                    }
                    Ok::<_, Infallible>(
                        response.body(body.expect("one request")).expect("response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
        let half = Bytes::from(vec![b'd'; total / 2]);
        tx.send(Ok(Frame::data(half.clone()))).await.expect("send");
        let response = tokio::time::timeout(
            WAIT,
            client().request(
                Request::get(format!("http://{}/download", proxy.addr))
                    .header("host", "app.localhost")
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            ),
        )
        .await
        .expect("the head came before the body ended")
        .expect("response");
        let mut body = response.into_body();
        // The client reads the first bytes while the upstream still holds
        // the second half back: a buffering proxy would never send them.
        let mut received = 0;
        while received == 0 {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!("sized={sized}: nothing came before the upstream's last bytes")
                })
                .expect("a frame")
                .expect("no error");
            received += frame.into_data().map_or(0, |d| d.len());
        }
        tx.send(Ok(Frame::data(half))).await.expect("send");
        drop(tx);
        let (rest, _) = digest(body).await;
        assert_eq!(received + rest as usize, total, "sized={sized}");
    }
}

/// Writes a config for the binary: a listener on a free port and `/` to `upstream`.
fn binary_config(dir: &std::path::Path, upstream: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, single_upstream_config(&[upstream], "")).expect("write config");
    path
}

/// The most memory the proxy may hold while 1 GiB crosses it. A proxy
/// that buffered the body would hold at least the body; this one holds a
/// few frames per connection plus its baseline (a few MiB).
const PEAK_RSS_BOUND: u64 = 128 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_body_each_way_through_the_binary_stays_whole_and_its_memory_stays_flat() {
    let upstream = integrity_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = binary_config(dir.path(), upstream);
    let (running, addr, _stdout, _stderr) =
        start_binary(&["--config".as_ref(), config.as_os_str()]).await;
    let baseline = running.peak_rss().expect("/proc/PID/status has VmHWM");
    let total = GIB;

    let started = Instant::now();
    upload(false, addr, total, true).await;
    let up = started.elapsed();
    let after_upload = running.peak_rss().expect("VmHWM");

    let started = Instant::now();
    download(false, addr, total, true).await;
    let down = started.elapsed();
    let peak = running.peak_rss().expect("VmHWM");

    eprintln!(
        "{} MiB through the binary: up {up:.2?} ({:.0} MiB/s), down {down:.2?} ({:.0} MiB/s); \
         proxy peak RSS {:.1} MiB (at start {:.1} MiB, after the upload {:.1} MiB)",
        total / MIB,
        (total / MIB) as f64 / up.as_secs_f64(),
        (total / MIB) as f64 / down.as_secs_f64(),
        peak as f64 / MIB as f64,
        baseline as f64 / MIB as f64,
        after_upload as f64 / MIB as f64,
    );
    assert!(
        total > 2 * PEAK_RSS_BOUND,
        "the body must be bigger than the bound, or a buffering proxy passes"
    );
    assert!(
        peak < PEAK_RSS_BOUND,
        "the proxy's peak memory was {} MiB while {} MiB crossed it each way: is a body being held whole?",
        peak / MIB,
        total / MIB
    );
}
