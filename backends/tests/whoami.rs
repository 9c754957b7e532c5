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
