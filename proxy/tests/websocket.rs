//! WebSockets and other HTTP/1.1 upgrades through the proxy, over real
//! loopback: the handshake reaches the upstream with its `Upgrade` and
//! `Connection` headers, the 101 comes back, and then bytes flow both ways
//! until a side closes or the tunnel goes idle.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{
    SWITCHED, client, echo_through, echo_upstream, json, raw_echo_upstream, raw_upgrade,
    raw_upstream, read_head, seen_header, send, start_proxy,
};
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

/// One server for `app.localhost`: `/` with the defaults, `/short/` with a
/// 5 s idle timeout, `/one/` with at most one request (or tunnel) at a time.
fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[limit_conn_zones.tunnels]
key = "route"

[[servers]]
server_names = ["app.localhost"]
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/short/", upstream = "app", websocket_idle_timeout = "5s" }},
  {{ path = "/one/", upstream = "app", limit_conn = {{ zone = "tunnels", max = 1 }} }},
]

[upstreams.app]
servers = ["{upstream}"]
"#
    )
}

/// A WebSocket echo server (tungstenite's server side): every text or binary
/// message comes back unchanged. Sends the headers of each handshake it saw.
async fn websocket_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<http::HeaderMap>) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let addr = raw_upstream(move |stream| {
        let seen_tx = seen_tx.clone();
        async move {
            // The signature is tungstenite's: its error type is a whole response.
            #[allow(clippy::result_large_err)]
            let callback = |request: &WsRequest, response: WsResponse| {
                let _ = seen_tx.send(request.headers().clone());
                Ok(response)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen)
}

/// Reads until the proxy closes the connection; returns what came first.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    rest
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 10 s"))
}

#[tokio::test]
async fn a_websocket_echo_round_trips_through_the_proxy() {
    let (upstream, mut seen) = websocket_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async("ws://app.localhost/chat", tcp)
        .await
        .expect("the handshake succeeds through the proxy");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(response.headers()["connection"], "upgrade");
    // tungstenite checked it against its key: the upstream's own answer.
    assert!(response.headers().contains_key("sec-websocket-accept"));

    let headers = seen.recv().await.expect("the upstream saw the handshake");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["connection"], "upgrade");
    assert!(headers.contains_key("sec-websocket-key"));
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    for text in ["hello", "through the proxy", ""] {
        ws.send(Message::text(text)).await.expect("send");
        let back = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(back, Message::text(text));
    }
    ws.close(None).await.expect("close");
    // The close handshake completes and the stream ends.
    while let Some(Ok(message)) = within("the close", ws.next()).await {
        assert!(message.is_close(), "{message:?}");
    }
}

#[tokio::test]
async fn a_one_mib_binary_message_arrives_intact() {
    let (upstream, _seen) = websocket_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async("ws://app.localhost/", tcp)
        .await
        .expect("handshake");
    let payload: Vec<u8> = (0..1024 * 1024u64).map(common::pattern_byte).collect();
    ws.send(Message::binary(payload.clone()))
        .await
        .expect("send");
    let back = within("the echo", ws.next())
        .await
        .expect("a reply")
        .expect("a message");
    let Message::Binary(data) = back else {
        panic!("a binary message, got {back:?}");
    };
    assert_eq!(data.len(), payload.len());
    assert!(data[..] == payload[..], "the bytes changed on the way");
}

#[tokio::test]
async fn any_upgrade_protocol_round_trips_and_never_reuses_a_pooled_connection() {
    let (upstream, connections, _closed) = raw_echo_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let (mut first, head) = raw_upgrade(proxy.addr, "/raw").await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: x-echo\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    echo_through(&mut first, b"any bytes at all\r\n\r\n\x00\xff").await;

    // A second tunnel while the first is open: a connection of its own.
    let (mut second, head) = raw_upgrade(proxy.addr, "/raw").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_through(&mut second, b"second").await;
    echo_through(&mut first, b"first again").await;
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_client_closing_closes_the_upstream_side() {
    let (upstream, _, mut closed) = raw_echo_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let (mut stream, _) = raw_upgrade(proxy.addr, "/raw").await;
    echo_through(&mut stream, b"bye").await;
    drop(stream);
    within("the upstream seeing the close", closed.recv())
        .await
        .expect("reported");
}

#[tokio::test]
async fn the_upstream_closing_closes_the_client_side() {
    let upstream = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(SWITCHED).await;
        let _ = stream.write_all(b"last words").await;
        // Dropped: the upstream closes its side.
    })
    .await;
    let proxy = start_proxy(&config(upstream)).await;
    let (mut stream, head) = raw_upgrade(proxy.addr, "/raw").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let rest = within("the close", read_to_close(&mut stream)).await;
    assert_eq!(rest, b"last words", "sent before the close, then the end");
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_where_nothing_moves_for_the_idle_timeout_is_closed() {
    let (upstream, _, mut closed) = raw_echo_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let (mut stream, _) = raw_upgrade(proxy.addr, "/short/raw").await;
    let opened = tokio::time::Instant::now();
    // Activity at 3 s restarts the 5 s clock...
    tokio::time::sleep(Duration::from_secs(3)).await;
    echo_through(&mut stream, b"still here").await;
    let spoke = tokio::time::Instant::now();
    // ...so the tunnel closes 5 s after that, 8 s after it opened.
    let rest = read_to_close(&mut stream).await;
    assert!(rest.is_empty());
    let (silent, total) = (spoke.elapsed(), opened.elapsed());
    assert!(
        silent >= Duration::from_secs(5) && silent < Duration::from_secs(6),
        "closed after {silent:?} of silence"
    );
    assert!(total >= Duration::from_secs(8), "closed after {total:?}");
    closed
        .recv()
        .await
        .expect("the upstream side is closed too");
}

#[tokio::test]
async fn the_connection_limit_slot_is_held_until_the_tunnel_ends() {
    let (upstream, _, mut closed) = raw_echo_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let (mut stream, head) = raw_upgrade(proxy.addr, "/one/raw").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_through(&mut stream, b"open").await;

    let (_, refused) = raw_upgrade(proxy.addr, "/one/raw").await;
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "the tunnel holds the only slot: {refused}"
    );

    drop(stream);
    closed.recv().await.expect("the tunnel ended");
    // The slot is returned as the tunnel's task ends: soon after.
    let mut head = String::new();
    for _ in 0..100 {
        head = raw_upgrade(proxy.addr, "/one/raw").await.1;
        if head.starts_with("HTTP/1.1 101") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "the slot came back: {head}"
    );
}

#[tokio::test]
async fn an_upgrade_answered_200_is_a_normal_response_and_the_headers_went_upstream() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let request = Request::get(format!("http://{}/ws", proxy.addr))
        .header("host", "app.localhost")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (response, body) = send(&client, request).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("upgrade").is_none());
    let echo = json(&body);
    assert_eq!(seen_header(&echo, "upgrade"), Some("websocket"));
    assert_eq!(seen_header(&echo, "connection"), Some("upgrade"));

    // The client's connection goes on carrying HTTP.
    let (again, _) = common::get(&client, proxy.addr, "app.localhost", "/next").await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn an_upgrade_answered_400_is_passed_through_with_its_body() {
    let upstream = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 20\r\nContent-Type: text/plain\r\n\r\nno upgrade for you\r\n",
            )
            .await;
    })
    .await;
    let proxy = start_proxy(&config(upstream)).await;
    let (mut stream, head) = raw_upgrade(proxy.addr, "/raw").await;
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(!head.contains("upgrade:"), "{head}");
    let mut body = [0u8; 20];
    stream.read_exact(&mut body).await.expect("the body");
    assert_eq!(&body, b"no upgrade for you\r\n");
}

#[tokio::test]
async fn an_upstream_that_switches_without_being_asked_gets_502() {
    let (upstream, _, _) = raw_echo_upstream().await;
    let proxy = start_proxy(&config(upstream)).await;
    let (response, body) = common::get(&client(), proxy.addr, "app.localhost", "/plain").await;
    assert_eq!(response.status(), 502);
    assert!(
        String::from_utf8_lossy(&body).contains("not valid HTTP"),
        "{body:?}"
    );
}

#[tokio::test]
async fn over_http2_there_is_no_upgrade_the_request_is_proxied_normally() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    // HTTP/2 with prior knowledge on the plain listener (h2c).
    let h2: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let request = Request::get(format!("http://{}/ws", proxy.addr))
        .header("host", "app.localhost")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (response, body) = send(&h2, request).await;
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let echo = json(&body);
    // HTTP/2 cannot carry Connection/Upgrade: the upstream got a plain GET.
    assert_eq!(seen_header(&echo, "upgrade"), None);
    assert_eq!(seen_header(&echo, "connection"), None);
    assert_eq!(seen_header(&echo, "sec-websocket-version"), Some("13"));
}
