//! Upstreams that fail: each failure gets the right status and a
//! `Proxy-Status` header (RFC 9209) saying why, and the client never hangs.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

fn proxy_status(response: &http::Response<()>) -> &str {
    response.headers()["proxy-status"]
        .to_str()
        .expect("ascii header")
}

#[tokio::test]
async fn a_refused_connection_is_a_502_naming_the_upstream() {
    let dead = refused_addr().await;
    let proxy = start_proxy(&single_upstream_config(&[dead], "")).await;
    let (response, body) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        proxy_status(&response),
        format!("proxy-lab; error=connection_refused; details=\"upstream {dead}\"")
    );
    assert_eq!(
        body,
        format!("502 Bad Gateway: the upstream refused the connection ({dead})\n")
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_never_answers_is_a_504_after_the_read_timeout() {
    // The clock is the test's: tokio advances it only when every task waits,
    // so the 30 s timeout passes at once and the result never depends on load.
    let stalled = silent_upstream().await;
    let proxy = start_proxy(&single_upstream_config(
        &[stalled],
        "read_timeout = \"30s\"",
    ))
    .await;
    let started = tokio::time::Instant::now();
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 504);
    assert!(proxy_status(&response).contains("error=http_response_timeout"));
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn an_upstream_that_closes_without_answering_is_a_502() {
    let closer = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(&[closer], "")).await;
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 502);
    assert!(proxy_status(&response).contains("error=connection_terminated"));
}

#[tokio::test]
async fn an_upstream_that_answers_garbage_is_a_502_protocol_error() {
    let garbage = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        let _ = stream.shutdown().await;
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(&[garbage], "")).await;
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 502);
    assert!(proxy_status(&response).contains("error=http_protocol_error"));
}

#[tokio::test]
async fn a_body_cut_off_by_the_upstream_is_never_passed_off_as_complete() {
    let truncating = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b")
            .await;
        let _ = stream.shutdown().await;
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(&[truncating], "")).await;
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: app.localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    // The head went out before the upstream broke off; the client then sees
    // the connection close after 10 of the 1000 promised bytes.
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("content-length: 1000"), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(body, "only ten b");
}

#[tokio::test]
async fn without_retries_or_passive_health_one_dead_server_fails_its_own_turns() {
    // The bare round-robin of the first tutorial: nothing notices the dead
    // server, so every second request fails (see balancing.rs for the cures).
    let alive = echo_upstream("whoami-1").await;
    let dead = refused_addr().await;
    let proxy = start_proxy(&single_upstream_config(
        &[alive.addr, dead],
        "next_upstream = [\"off\"]\nmax_fails = 0",
    ))
    .await;
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 502, 200, 502]);
}

#[tokio::test]
async fn a_connect_that_never_completes_is_a_504_after_the_connect_timeout() {
    // A listener that never accepts, with a backlog of one: once its queue is
    // full, the kernel drops further SYNs and a new connect just waits.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let full = socket.listen(1).expect("listen");
    let addr = full.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(50),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break, // the queue is full: connects now hang
        }
    }
    assert!(
        !fillers.is_empty(),
        "the listener's queue could not be filled"
    );
    // From here on the clock is the test's: the 5 s connect timeout passes at once.
    tokio::time::pause();
    let proxy = start_proxy(&single_upstream_config(
        &[addr],
        "connect_timeout = \"5s\"\nread_timeout = \"60s\"",
    ))
    .await;
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 504);
    assert!(
        proxy_status(&response).contains("error=connection_timeout"),
        "{}",
        proxy_status(&response)
    );
    drop((full, fillers));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    // slowloris: a few header bytes, then silence. client_header_timeout
    // (here 5 s on the test's clock) closes the connection; the proxy keeps
    // serving everyone else.
    let up = echo_upstream("app").await;
    let config = format!(
        "client_header_timeout = \"5s\"\n{}",
        single_upstream_config(&[up.addr], "")
    );
    let proxy = start_proxy(&config).await;
    let started = tokio::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.loc")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut rest),
    )
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    // Cut off by the configured 5 s, not by hyper's own 30 s default.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 200);
}

/// A proxy with a 5 s header timeout and a 20 s keep-alive timeout in front
/// of one echo upstream.
async fn proxy_with_conn_timeouts(keepalive: &str) -> (TestProxy, EchoUpstream) {
    let up = echo_upstream("app").await;
    let config = format!(
        "client_header_timeout = \"5s\"\nkeepalive_timeout = \"{keepalive}\"\n{}",
        single_upstream_config(&[up.addr], "")
    );
    (start_proxy(&config).await, up)
}

/// Opens a connection, sends one request on it and reads its whole response
/// (a JSON body from the echo upstream); returns the connection and the head.
async fn one_exchange(proxy: &TestProxy) -> (tokio::net::TcpStream, String) {
    let mut conn = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app.localhost\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"upstream\":\"app\"") {
        let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf)
            .await
            .expect("read");
        assert!(n > 0, "closed before the first response");
        seen.extend_from_slice(&buf[..n]);
    }
    (conn, String::from_utf8_lossy(&seen).into_owned())
}

/// How long until the proxy closes `conn` (at most 10 minutes of test clock).
async fn closed_after(conn: &mut tokio::net::TcpStream) -> Duration {
    let since = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::io::AsyncReadExt::read(conn, &mut buf),
    )
    .await
    .expect("the connection was not closed")
    .unwrap_or(0);
    assert_eq!(n, 0, "expected the proxy to close the connection");
    since.elapsed()
}

fn within_a_second_of(waited: Duration, secs: u64) -> bool {
    waited >= Duration::from_secs(secs) && waited < Duration::from_secs(secs + 1)
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    // nginx keepalive_timeout: idle time between requests has its own clock,
    // longer than the header timeout (5 s here, which must not apply).
    let (proxy, _up) = proxy_with_conn_timeouts("20s").await;
    let (mut conn, head) = one_exchange(&proxy).await;
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let idle = closed_after(&mut conn).await;
    assert!(within_a_second_of(idle, 20), "{idle:?}");
}

#[tokio::test(start_paused = true)]
async fn a_second_request_begun_on_a_keep_alive_connection_is_on_the_header_clock() {
    // After 10 s idle the client starts a request and stalls: from its first
    // byte, the head has client_header_timeout (5 s) to arrive.
    let (proxy, _up) = proxy_with_conn_timeouts("20s").await;
    let (mut conn, _) = one_exchange(&proxy).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app.loc")
        .await
        .expect("write");
    let waited = closed_after(&mut conn).await;
    assert!(within_a_second_of(waited, 5), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_serves_requests_that_come_before_its_timeout() {
    let (proxy, up) = proxy_with_conn_timeouts("20s").await;
    let (mut conn, _) = one_exchange(&proxy).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(19)).await;
        conn.write_all(b"GET / HTTP/1.1\r\nhost: app.localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf)
            .await
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(up.completed.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn keepalive_timeout_zero_closes_every_connection_after_its_response() {
    let (proxy, _up) = proxy_with_conn_timeouts("0s").await;
    let (mut conn, head) = one_exchange(&proxy).await;
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(closed_after(&mut conn).await, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_is_not_cut_off_by_the_client_timeouts() {
    // The connection is busy while its request is served: only the upstream's
    // read_timeout (200 s) bounds the wait, not the 5 s / 20 s client clocks.
    let slow = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(100)).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
            .await;
    })
    .await;
    let config = format!(
        "client_header_timeout = \"5s\"\nkeepalive_timeout = \"20s\"\n{}",
        single_upstream_config(&[slow], "read_timeout = \"200s\"")
    );
    let proxy = start_proxy(&config).await;
    let (response, body) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(body, "slow");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_silent_mid_body_is_cut_off_after_the_read_timeout() {
    let stalling = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
            .await;
        std::future::pending::<()>().await;
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(
        &[stalling],
        "read_timeout = \"30s\"",
    ))
    .await;
    let started = tokio::time::Instant::now();
    let request = http::Request::get(format!("http://{}/", proxy.addr))
        .header("host", "app.localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let response = client().request(request).await.expect("the head arrives");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(
        Duration::from_secs(60),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the client was left hanging");
    assert!(body.is_err(), "a cut-off body must not look complete");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_body_is_not_cut_off_because_the_timeout_is_between_reads() {
    // Five chunks, 20 s apart: 100 s in all, but never 30 s of silence.
    let steady = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            let _ = stream.write_all(b"1\r\na\r\n").await;
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let proxy = start_proxy(&single_upstream_config(&[steady], "read_timeout = \"30s\"")).await;
    let started = tokio::time::Instant::now();
    let (response, body) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(body, "aaaaa");
    assert!(started.elapsed() >= Duration::from_secs(100));
}
