//! The whoami service over real HTTP on a loopback port.

mod common;

use std::net::SocketAddr;

use backends::whoami::{self, Identity};
use common::{TestServer, get, send};
use hyper::StatusCode;
use hyper::body::Bytes;

fn named(name: &str) -> Identity {
    Identity {
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn whoami_answers_with_its_configured_name_and_the_request_it_saw() {
    let server = TestServer::start(whoami::app(named("whoami-test"))).await;

    let reply = send(
        "POST",
        &server.url("/some/path?colour=blue&size=2"),
        &[("x-lab-test", "hello"), ("content-type", "text/plain")],
        "hello world",
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-served-by"), Some("whoami-test"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let echo = reply.json();
    assert_eq!(echo["name"], "whoami-test");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/some/path");
    assert_eq!(echo["query"], "colour=blue&size=2");
    assert_eq!(echo["body_bytes"], 11);
    assert_eq!(echo["headers"]["x-lab-test"], "hello");
    assert_eq!(echo["headers"]["content-type"], "text/plain");
    assert_eq!(echo["headers"]["host"], server.addr.to_string());

    let remote: SocketAddr = echo["remote_addr"]
        .as_str()
        .expect("remote_addr is a string")
        .parse()
        .expect("remote_addr is ip:port");
    assert_eq!(remote.ip().to_string(), "127.0.0.1");
    assert_ne!(remote.port(), server.addr.port(), "it is the client's port");

    server.stop().await;
}

#[tokio::test]
async fn whoami_echoes_any_method_on_any_path_and_reports_a_missing_query_as_null() {
    let server = TestServer::start(whoami::app(named("w"))).await;

    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let reply = send(method, &server.url("/a/b/c"), &[], Bytes::new()).await;
        assert_eq!(reply.status, StatusCode::OK, "{method}");
        let echo = reply.json();
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], "/a/b/c");
        assert!(echo["query"].is_null());
        assert_eq!(echo["body_bytes"], 0);
    }

    server.stop().await;
}

#[tokio::test]
async fn whoami_joins_repeated_headers_and_sorts_header_names() {
    let server = TestServer::start(whoami::app(named("w"))).await;

    let reply = send(
        "GET",
        &server.url("/"),
        &[
            ("x-zebra", "z"),
            ("x-multi", "first"),
            ("x-multi", "second"),
        ],
        Bytes::new(),
    )
    .await;

    let echo = reply.json();
    assert_eq!(echo["headers"]["x-multi"], "first, second");
    // Look at the raw body: the names come out sorted, whatever the order
    // they were sent in.
    let body = reply.text();
    let position = |name: &str| {
        body.find(&format!("\"{name}\":"))
            .unwrap_or_else(|| panic!("{name} is in {body}"))
    };
    assert!(position("host") < position("x-multi"));
    assert!(position("x-multi") < position("x-zebra"));

    server.stop().await;
}

#[tokio::test]
async fn whoami_counts_a_body_larger_than_axums_default_limit() {
    let server = TestServer::start(whoami::app(named("w"))).await;
    let size = 5 * 1024 * 1024;

    let reply = send("PUT", &server.url("/upload"), &[], vec![b'x'; size]).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_bytes"], size);
    server.stop().await;
}

#[tokio::test]
async fn whoami_health_answers_ok_with_its_name_in_a_header() {
    let server = TestServer::start(whoami::app(named("whoami-2"))).await;

    let reply = get(&server.url("/health")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok");
    assert_eq!(reply.header("x-served-by"), Some("whoami-2"));
    server.stop().await;
}

#[tokio::test]
async fn whoami_echoes_other_methods_on_the_health_path() {
    let server = TestServer::start(whoami::app(named("w"))).await;

    let reply = send("POST", &server.url("/health"), &[], "ping").await;

    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.json();
    assert_eq!(echo["path"], "/health");
    assert_eq!(echo["body_bytes"], 4);
    server.stop().await;
}

#[tokio::test]
async fn cached_answers_with_the_asked_cache_control_an_etag_and_a_request_count() {
    let server = TestServer::start(whoami::app(named("w"))).await;
    let url = server.url("/cached?cache_control=max-age=5");

    let first = send("GET", &url, &[], Bytes::new()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("cache-control"), Some("max-age=5"));
    assert_eq!(first.header("etag"), Some("\"v1\""));
    assert_eq!(first.header("x-whoami-requests"), Some("1"));
    assert_eq!(first.text(), "built on request #1\n");

    let unchanged = send("GET", &url, &[("if-none-match", "\"v1\"")], Bytes::new()).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.header("x-whoami-requests"), Some("2"));
    assert!(unchanged.body.is_empty());

    let other = send(
        "GET",
        &server.url("/cached?etag=v2"),
        &[("if-none-match", "\"v1\"")],
        Bytes::new(),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.header("cache-control"), None);
    assert_eq!(other.text(), "built on request #3\n");

    server.stop().await;
}

/// A WebSocket client connected to `server`'s `/ws`.
async fn open_websocket(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/ws", server.addr);
    let (ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket handshake succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

#[tokio::test]
async fn whoami_ws_greets_with_its_name_then_echoes_text_and_binary() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start(whoami::app(named("whoami-3"))).await;
    let mut ws = open_websocket(&server).await;
    let greeting = ws.next().await.expect("a greeting").expect("a message");
    assert_eq!(greeting, Message::text("connected to whoami-3"));

    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("bye"),
    ] {
        ws.send(message.clone()).await.expect("send");
        let back = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(back, message);
    }

    // Closing: whoami answers the close frame and the stream ends.
    ws.close(None).await.expect("close");
    while let Some(reply) = ws.next().await {
        let message = reply.expect("a clean close");
        assert!(message.is_close(), "only the close reply: {message:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn whoami_ws_without_an_upgrade_is_echoed_like_any_request() {
    let server = TestServer::start(whoami::app(named("w"))).await;
    let reply = send("GET", &server.url("/ws"), &[], Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/ws");
    server.stop().await;
}

/// Starts whoami with `--proxy-protocol`'s serving; the address it listens on.
async fn start_accepting_proxy_protocol() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(backends::serve_accepting_proxy_protocol(
        listener,
        whoami::app(named("pp")),
        std::future::pending(),
    ));
    addr
}

/// Sends `prefix` and a GET on a raw connection; the JSON reply, or `None`
/// when whoami closed the connection without answering.
async fn echo_after(addr: SocketAddr, prefix: &[u8]) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = b"GET /who HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n";
    socket
        .write_all(&[prefix, request.as_slice()].concat())
        .await
        .expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut out),
    )
    .await
    .expect("answered or closed within 10 s");
    let _ = read;
    let text = String::from_utf8_lossy(&out);
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    Some(serde_json::from_str(&text[start..=end]).expect("json"))
}

#[tokio::test]
async fn with_proxy_protocol_whoami_reports_the_headers_source_beside_its_tcp_peer() {
    let addr = start_accepting_proxy_protocol().await;
    let v1 = format!("PROXY TCP4 203.0.113.7 127.0.0.1 51000 {}\r\n", addr.port());
    let echo = echo_after(addr, v1.as_bytes()).await.expect("an answer");
    assert_eq!(echo["proxy_protocol"]["version"], 1);
    assert_eq!(echo["proxy_protocol"]["source"], "203.0.113.7:51000");
    assert!(
        echo["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{echo}"
    );

    // Version 2, the spec's binary form: 203.0.113.7:51000 -> 192.0.2.1:80.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 203, 0, 113, 7, 192, 0, 2, 1, 0xc7, 0x38, 0, 80,
    ]);
    let echo = echo_after(addr, &v2).await.expect("an answer");
    assert_eq!(echo["proxy_protocol"]["version"], 2);
    assert_eq!(echo["proxy_protocol"]["source"], "203.0.113.7:51000");
    assert_eq!(echo["proxy_protocol"]["destination"], "192.0.2.1:80");

    // The header is optional: plain HTTP is served, with null.
    let echo = echo_after(addr, b"").await.expect("an answer");
    assert!(echo["proxy_protocol"].is_null(), "{echo}");

    // A malformed header closes the connection.
    assert_eq!(echo_after(addr, b"PROXY TCP4 nonsense\r\n").await, None);
}

#[tokio::test]
async fn without_proxy_protocol_the_field_is_null() {
    let server = TestServer::start(whoami::app(named("plain"))).await;
    let reply = get(&server.url("/")).await;
    assert!(reply.json()["proxy_protocol"].is_null());
    server.stop().await;
}
