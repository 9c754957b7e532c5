//! Upstreams that misbehave on purpose, one fault at a time: they reset the
//! connection, stall, answer garbage, close in the middle of a body, stop
//! reading the request, die under load or restart. For each, the client gets
//! the right status (502 or 504 with `Proxy-Status`), or, once a response
//! has begun, a body that visibly breaks off; never a hang, never a short
//! body that looks complete. (failures.rs has the simpler cases: refused,
//! silent, closed before answering.)

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proxy_status(response: &http::Response<()>) -> String {
    response
        .headers()
        .get("proxy-status")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// How an upstream ends a connection: an orderly close, or a reset.
#[derive(Debug, Clone, Copy)]
enum Close {
    Fin,
    Rst,
}

async fn close(mut stream: TcpStream, how: Close) {
    match how {
        Close::Fin => {
            let _ = stream.shutdown().await;
        }
        Close::Rst => reset(stream),
    }
}

/// An upstream that reads each request head, writes `bytes`, then ends
/// the connection the way `how` says.
async fn writes_then_closes(bytes: &'static [u8], how: Close) -> std::net::SocketAddr {
    raw_upstream(move |mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        close(stream, how).await;
    })
    .await
}

/// GET `/` through the proxy: the response head, and the body or the error
/// that ended it.
async fn get_outcome(
    client: &Client,
    proxy: std::net::SocketAddr,
) -> (http::Response<()>, Result<Bytes, String>) {
    let request = Request::get(format!("http://{proxy}/"))
        .header("host", "app.localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    // Generous bounds, there only so that a hang fails instead of waiting
    // forever (on a paused clock they pass at once: keep them past 30 s).
    let response = tokio::time::timeout(Duration::from_secs(120), client.request(request))
        .await
        .expect("the proxy answers in time")
        .expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(120), body.collect())
        .await
        .expect("the body ends in time, complete or not");
    (
        http::Response::from_parts(parts, ()),
        body.map(|b| b.to_bytes()).map_err(|e| e.to_string()),
    )
}

#[tokio::test]
async fn an_upstream_that_resets_before_answering_is_a_502() {
    let upstream = writes_then_closes(b"", Close::Rst).await;
    let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
    let (response, body) = get_outcome(&client(), proxy.addr).await;
    assert_eq!(response.status(), 502);
    assert!(
        proxy_status(&response).contains("error=connection_terminated"),
        "{}",
        proxy_status(&response)
    );
    assert!(body.is_ok(), "an error page is a complete body");
}

#[tokio::test]
async fn an_upstream_that_breaks_off_mid_headers_is_a_502() {
    for how in [Close::Fin, Close::Rst] {
        let upstream = writes_then_closes(b"HTTP/1.1 200 OK\r\ncontent-le", how).await;
        let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
        let (response, _) = get_outcome(&client(), proxy.addr).await;
        assert_eq!(response.status(), 502, "{how:?}");
        assert!(
            proxy_status(&response).contains("error=connection_terminated"),
            "{how:?}: {}",
            proxy_status(&response)
        );
    }
}

#[tokio::test]
async fn a_content_length_body_cut_off_ends_the_client_connection_early() {
    // 1000 of the 100000 promised bytes, then a close or a reset: the client
    // gets the head (it went out before the upstream broke off) and then a
    // connection that ends before the promised length, which every HTTP
    // client reports as an error.
    const CUT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789";
    for how in [Close::Fin, Close::Rst] {
        let upstream = writes_then_closes(CUT, how).await;
        let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
        let (response, body) = get_outcome(&client(), proxy.addr).await;
        assert_eq!(response.status(), 200, "{how:?}");
        assert_eq!(response.headers()["content-length"], "100000", "{how:?}");
        assert!(body.is_err(), "{how:?}: a short body passed off as whole");
        let raw = raw_exchange(
            proxy.addr,
            b"GET / HTTP/1.1\r\nhost: app.localhost\r\nconnection: close\r\n\r\n",
        )
        .await;
        let (_, body) = raw.split_once("\r\n\r\n").expect("a response head");
        assert_eq!(body, "0123456789", "{how:?}");
    }
}

#[tokio::test]
async fn a_chunked_body_cut_off_never_gets_its_terminal_chunk() {
    const CUT: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n5\r\nab";
    for how in [Close::Fin, Close::Rst] {
        let upstream = writes_then_closes(CUT, how).await;
        let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
        let (response, body) = get_outcome(&client(), proxy.addr).await;
        assert_eq!(response.status(), 200, "{how:?}");
        assert!(body.is_err(), "{how:?}: a cut chunked body ended cleanly");
        let raw = raw_exchange(
            proxy.addr,
            b"GET / HTTP/1.1\r\nhost: app.localhost\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(raw.contains("transfer-encoding: chunked"), "{how:?}: {raw}");
        assert!(raw.contains("0123456789"), "{how:?}: {raw}");
        assert!(
            !raw.ends_with("0\r\n\r\n"),
            "{how:?}: the proxy wrote the terminal chunk of a body it never got whole: {raw:?}"
        );
    }
}

#[tokio::test]
async fn an_http2_client_sees_a_cut_body_as_a_reset_stream() {
    const CUT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789";
    let upstream = writes_then_closes(CUT, Close::Fin).await;
    let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{}/", proxy.addr))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = h2.request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the stream ends in time");
    assert!(body.is_err(), "HTTP/2 passed a cut body off as whole");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_stalls_mid_headers_is_a_504_at_the_read_timeout() {
    // Half a head, then silence. The clock is the test's (see failures.rs):
    // the 30 s pass at once, and the answer comes at 30 s, not later.
    let stalled = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nx-half: ").await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(
        &[stalled],
        "read_timeout = \"30s\"",
    ))
    .await;
    let started = tokio::time::Instant::now();
    let (response, _) = get_outcome(&client(), proxy.addr).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(proxy_status(&response).contains("error=http_response_timeout"));
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "answered after {waited:?}, the read_timeout is 30 s"
    );
}

#[tokio::test]
async fn answers_that_are_not_http_are_502_protocol_errors() {
    let huge_head: &'static [u8] = {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..20_000 {
            head.extend_from_slice(format!("x-filler-{i}: {}\r\n", "a".repeat(40)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        Vec::leak(head)
    };
    let cases: [(&str, &'static [u8]); 5] = [
        ("another protocol", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        ("a status of 4 digits", b"HTTP/1.1 2000 OK\r\n\r\n"),
        (
            "a header without a colon",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        ),
        (
            "a content-length that is not a number",
            b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n",
        ),
        ("a head of 1 MiB", huge_head),
    ];
    for (what, answer) in cases {
        let upstream = writes_then_closes(answer, Close::Fin).await;
        let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
        let (response, _) = get_outcome(&client(), proxy.addr).await;
        assert_eq!(response.status(), 502, "{what}");
        assert!(
            proxy_status(&response).contains("error=http_protocol_error"),
            "{what}: {}",
            proxy_status(&response)
        );
    }
}

#[tokio::test]
async fn an_upstream_that_stops_reading_the_request_body_is_a_504_not_a_hang() {
    // It reads the head and then nothing: once the socket buffers are full
    // the upload cannot move. The read_timeout bounds the wait for an answer
    // (upload included), so the client gets 504 instead of waiting forever.
    let stuck = silent_upstream().await;
    let proxy = start_proxy(&single_upstream_config(
        &[stuck],
        "read_timeout = \"500ms\"",
    ))
    .await;
    let total: usize = 64 * 1024 * 1024;
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head =
        format!("PUT /upload HTTP/1.1\r\nhost: app.localhost\r\ncontent-length: {total}\r\n\r\n");
    let started = std::time::Instant::now();
    let uploader = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            writer.write_all(&chunk).await?;
            sent += chunk.len();
        }
        Ok::<_, std::io::Error>(sent)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&answer).contains("did not answer in time") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the client hung: {answer}");
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(answer.contains("error=http_response_timeout"), "{answer}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    // The proxy never read the whole upload; it must not wait for it either.
    uploader.abort();
}

/// A raw upstream that answers the first request on each connection with
/// keep-alive, and closes the connection without answering when a second
/// request comes on it: from the proxy's side exactly the race where an
/// upstream closes an idle connection (its own keep-alive timeout) just as
/// the proxy sends a request on it. Counts connections and answers.
async fn closes_on_second_request() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let (count, served) = (connections.clone(), answered.clone());
    let addr = raw_upstream(move |mut stream| {
        count.fetch_add(1, Ordering::SeqCst);
        let served = served.clone();
        async move {
            let head = read_request(&mut stream).await;
            if head.is_empty() {
                return;
            }
            served.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            // The next request is read, then the connection is dropped.
            read_request(&mut stream).await;
        }
    })
    .await;
    (addr, connections, answered)
}

/// Reads one request (head and a `content-length` body) from `stream`;
/// empty when the connection ended first.
async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return seen;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Vec::new(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_just_closed_is_never_a_502_for_a_get() {
    // A one-server pool: no retry on another server can hide the fault.
    let (upstream, connections, answered) = closes_on_second_request().await;
    let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
    let client = client();
    for i in 0..6 {
        let (response, body) = get_outcome(&client, proxy.addr).await;
        assert_eq!(
            response.status(),
            200,
            "request {i}: {}",
            proxy_status(&response)
        );
        assert_eq!(body.as_deref(), Ok(&b"ok"[..]));
    }
    assert_eq!(answered.load(Ordering::SeqCst), 6);
    // Each request after the first met the closing connection, then went
    // on a new one: 6 answers on 6 connections.
    assert_eq!(connections.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_small_put_is_sent_again_on_a_new_connection_but_a_post_is_not() {
    let (upstream, _, answered) = closes_on_second_request().await;
    let proxy = start_proxy(&single_upstream_config(&[upstream], "")).await;
    let client = client();
    let send = |method: &str| {
        Request::builder()
            .method(method)
            .uri(format!("http://{}/item", proxy.addr))
            .header("host", "app.localhost")
            .body(Full::new(Bytes::from_static(b"{\"done\":true}")))
            .expect("request")
    };
    // The first request opens the connection the next ones meet closing.
    let (first, _) = common::send(&client, send("PUT")).await;
    assert_eq!(first.status(), 200);
    // PUT is idempotent (sending it twice does what sending it once does)
    // and its small body is in memory: it goes again on a new connection.
    let (put, _) = common::send(&client, send("PUT")).await;
    assert_eq!(put.status(), 200, "{}", proxy_status(&put));
    // A POST that reached the upstream may have taken effect: the proxy
    // cannot know, so it is not sent twice; the client gets the 502.
    let (post, _) = common::send(&client, send("POST")).await;
    assert_eq!(post.status(), 502);
    assert!(proxy_status(&post).contains("error=connection_terminated"));
    assert_eq!(answered.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn after_an_upstream_restarts_on_its_port_the_next_requests_succeed() {
    let first = stoppable_upstream("before", "127.0.0.1:0".parse().expect("addr")).await;
    let addr = first.addr;
    let proxy = start_proxy(&single_upstream_config(&[addr], "")).await;
    let client = client();
    // Several connections in the pool: concurrent requests each need one.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let proxy = proxy.addr;
            tokio::spawn(async move { get_outcome(&client, proxy).await })
        })
        .collect();
    for task in warm {
        let (response, _) = task.await.expect("join");
        assert_eq!(response.status(), 200);
    }
    // The restart: every pooled connection now leads to a closed socket.
    first.stop().await;
    let second = stoppable_upstream("after", addr).await;
    for i in 0..8 {
        let (response, body) = get_outcome(&client, proxy.addr).await;
        assert_eq!(
            response.status(),
            200,
            "request {i} after the restart: {}",
            proxy_status(&response)
        );
        assert_eq!(json(&body.expect("whole body"))["upstream"], "after");
    }
    assert_eq!(second.completed.load(Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_of_three_killed_under_load_costs_no_get_an_error() {
    let servers = [
        stoppable_upstream("one", "127.0.0.1:0".parse().expect("addr")).await,
        stoppable_upstream("two", "127.0.0.1:0".parse().expect("addr")).await,
        stoppable_upstream("three", "127.0.0.1:0".parse().expect("addr")).await,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    // The defaults: next_upstream on `error` and `timeout`, max_fails = 1.
    let proxy = start_proxy(&single_upstream_config(&addrs, "")).await;
    let client = client();
    const WORKERS: usize = 16;
    const PER_WORKER: usize = 40;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, proxy, done_tx) = (client.clone(), proxy.addr, done_tx.clone());
        workers.push(tokio::spawn(async move {
            let (mut get_failures, mut post_failures) = (Vec::new(), Vec::new());
            for i in 0..PER_WORKER {
                // One request in four is a POST with a small body.
                let post = (w + i) % 4 == 0;
                let request = Request::builder()
                    .method(if post { "POST" } else { "GET" })
                    .uri(format!("http://{proxy}/w{w}/{i}"))
                    .header("host", "app.localhost")
                    .body(Full::new(Bytes::from(if post {
                        "x".repeat(100)
                    } else {
                        String::new()
                    })))
                    .expect("request");
                let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    let proxy_status = response
                        .headers()
                        .get("proxy-status")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((status, proxy_status))
                })
                .await;
                let failed = match outcome {
                    Ok(Ok((status, _))) if status == 200 => None,
                    Ok(Ok((status, proxy_status))) => Some(format!("{status} {proxy_status:?}")),
                    Ok(Err(err)) => Some(err),
                    Err(_) => Some("hung for 10 s".to_owned()),
                };
                if let Some(failed) = failed {
                    if post {
                        &mut post_failures
                    } else {
                        &mut get_failures
                    }
                    .push(failed);
                }
                let _ = done_tx.send(());
            }
            (get_failures, post_failures)
        }));
    }
    drop(done_tx);
    // Mid-run, once a quarter of the requests are done, server two dies.
    let total = WORKERS * PER_WORKER;
    for _ in 0..total / 4 {
        done.recv().await.expect("a worker reports");
    }
    let [one, two, three] = servers;
    let served_before_kill = two.completed.load(Ordering::SeqCst);
    two.stop().await;
    let (mut get_failures, mut post_failures) = (Vec::new(), Vec::new());
    for worker in workers {
        let (gets, posts) = worker.await.expect("join");
        get_failures.extend(gets);
        post_failures.extend(posts);
    }
    let served = one.completed.load(Ordering::SeqCst)
        + served_before_kill
        + three.completed.load(Ordering::SeqCst);
    eprintln!(
        "killed under load: {total} requests, {} GET failures, {} POST failures {post_failures:?}; served {served}",
        get_failures.len(),
        post_failures.len()
    );
    assert!(served_before_kill > 0, "server two never served");
    assert!(
        get_failures.is_empty(),
        "GETs failed when one server of three died: {get_failures:?}"
    );
    // A POST that reached the dying server may have taken effect there: it
    // is not sent again, so at most the POSTs in flight then can fail.
    assert!(
        post_failures.len() <= WORKERS,
        "more POSTs failed than were in flight: {post_failures:?}"
    );
}

#[tokio::test]
async fn a_slow_but_steady_upload_longer_than_the_read_timeout_is_not_cut_off() {
    // 12 frames 100 ms apart: 1.2 s of upload, three times the read_timeout.
    // The upstream answers after the whole body, as most do; the time it
    // may stay silent is counted from the last byte it was sent, not from
    // the start of the upload.
    let up = echo_upstream("app-1").await;
    let proxy = start_proxy(&single_upstream_config(
        &[up.addr],
        "read_timeout = \"400ms\"",
    ))
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
    let body = http_body_util::StreamBody::new(ReceiverStream(rx));
    let request = Request::post(format!("http://{}/upload", proxy.addr))
        .header("host", "app.localhost")
        .body(body)
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<ReceiverStream>>();
    let exchange = tokio::spawn(async move { client.request(request).await });
    for _ in 0..12 {
        let frame = http_body::Frame::data(Bytes::from(vec![b's'; 1000]));
        if tx.send(Ok(frame)).await.is_err() {
            break; // the proxy gave up on the upload: the status says why
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answered")
        .expect("join")
        .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["body_bytes"], 12_000);
}

/// `mpsc::Receiver` as a `Stream`, for `StreamBody`.
struct ReceiverStream(tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Infallible>>);

impl futures_util::Stream for ReceiverStream {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
