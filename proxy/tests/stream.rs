//! `[[stream]]` listeners (layer 4) over real sockets on loopback port 0:
//! bytes arrive exactly, half-closes cross in both directions, the pool's
//! balancer and health decide the server, and idle connections, extra
//! connections and dead pools end as the log and metrics say.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PATTERN_PERIOD, StreamProxy, expected_crc, pattern_byte};
use proxy::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A stream-only config: `[[stream]]` to upstream `pool` of `servers`, plus
/// extra TOML for the stream and for the pool.
fn config(servers: &[SocketAddr], stream_extra: &str, pool_extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[stream]]\nlisten = \"127.0.0.1:0\"\nupstream = \"pool\"\n{stream_extra}\n\n[upstreams.pool]\nservers = [{}]\n{pool_extra}\n",
        servers.join(", ")
    )
}

/// Runs `behaviour` on every connection accepted on a new loopback port.
async fn tcp_server<F, Fut>(behaviour: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(behaviour(socket));
        }
    });
    addr
}

/// Echoes every byte back; at the client's end, ends its own side too.
async fn echo_server() -> SocketAddr {
    tcp_server(|mut socket| async move {
        let (mut read, mut write) = socket.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        let _ = write.shutdown().await;
    })
    .await
}

/// Says its name and closes.
async fn named_server(name: &'static str) -> SocketAddr {
    tcp_server(move |mut socket| async move {
        let _ = socket.write_all(name.as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await
}

/// Reads everything the client sends, to its end, then answers
/// `LENGTH CRC` and closes: it answers only because the client's half-close
/// came through.
async fn digest_server() -> SocketAddr {
    tcp_server(|mut socket| async move {
        let (mut length, mut crc) = (0u64, crc32fast::Hasher::new());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    length += n as u64;
                    crc.update(&buf[..n]);
                }
            }
        }
        let answer = format!("{length} {:08x}", crc.finalize());
        let _ = socket.write_all(answer.as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await
}

/// Writes the first `total` bytes of the test pattern (see `common`).
async fn write_pattern<W: AsyncWriteExt + Unpin>(to: &mut W, total: u64) {
    let period: Vec<u8> = (0..PATTERN_PERIOD as u64).map(pattern_byte).collect();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(PATTERN_PERIOD as u64) as usize;
        to.write_all(&period[..n]).await.expect("write");
        sent += n as u64;
    }
}

/// Sends the pattern's first `total` bytes from the upstream, then closes.
async fn source_server(total: u64) -> SocketAddr {
    tcp_server(move |mut socket| async move {
        write_pattern(&mut socket, total).await;
        let _ = socket.shutdown().await;
    })
    .await
}

/// Reads `from` to its end: the length and CRC-32 of what came.
async fn digest_of<R: AsyncReadExt + Unpin>(from: &mut R) -> (u64, u32) {
    let (mut length, mut crc) = (0u64, crc32fast::Hasher::new());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.expect("read");
        if n == 0 {
            return (length, crc.finalize());
        }
        length += n as u64;
        crc.update(&buf[..n]);
    }
}

/// An address that refuses connections for as long as the returned socket
/// lives: bound but not listening, so no other socket of the test run (the
/// proxy's own listener included) can be given its port meanwhile.
fn dead_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    (socket.local_addr().expect("addr"), socket)
}

async fn read_all(addr: SocketAddr) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut text = String::new();
    socket.read_to_string(&mut text).await.expect("read");
    text
}

#[tokio::test]
async fn small_messages_are_echoed_byte_for_byte() {
    let proxy = StreamProxy::start(&config(&[echo_server().await], "", "")).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    for message in [&b"hello"[..], b"\0\xff\r\n binary \x01", b"x"] {
        socket.write_all(message).await.expect("write");
        let mut got = vec![0u8; message.len()];
        socket.read_exact(&mut got).await.expect("read");
        assert_eq!(got, message);
    }
    socket.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    socket
        .read_to_end(&mut rest)
        .await
        .expect("the echo closes too");
    assert!(rest.is_empty());
    proxy.wait_ended("client_closed", 1).await;
}

#[tokio::test]
async fn a_hundred_mib_upload_arrives_whole_and_the_answer_comes_after_the_half_close() {
    let total = 100 * 1024 * 1024;
    let proxy = StreamProxy::start(&config(&[digest_server().await], "", "")).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    write_pattern(&mut socket, total).await;
    // The client says it is done; it still reads the answer.
    socket.shutdown().await.expect("half-close");
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.expect("answer");
    assert_eq!(answer, format!("{total} {:08x}", expected_crc(total)));
}

#[tokio::test]
async fn a_hundred_mib_download_arrives_whole() {
    let total = 100 * 1024 * 1024;
    let proxy = StreamProxy::start(&config(&[source_server(total).await], "", "")).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(digest_of(&mut socket).await, (total, expected_crc(total)));
    // Half-closed by the upstream, the connection lasts until the client closes too.
    drop(socket);
    proxy.wait_ended("upstream_closed", 1).await;
}

#[tokio::test]
async fn the_upstreams_half_close_reaches_the_client_which_can_still_send() {
    let (heard, mut hear) = mpsc::unbounded_channel::<Vec<u8>>();
    let upstream = tcp_server(move |mut socket| {
        let heard = heard.clone();
        async move {
            let _ = socket.write_all(b"greeting, and that is all from me").await;
            let _ = socket.shutdown().await;
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
            let _ = heard.send(rest);
        }
    })
    .await;
    let proxy = StreamProxy::start(&config(&[upstream], "", "")).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut greeting = String::new();
    socket
        .read_to_string(&mut greeting)
        .await
        .expect("the upstream's FIN arrives");
    assert_eq!(greeting, "greeting, and that is all from me");
    socket
        .write_all(b"still talking")
        .await
        .expect("the client's side is open");
    socket.shutdown().await.expect("close");
    let got = tokio::time::timeout(Duration::from_secs(10), hear.recv())
        .await
        .expect("the upstream hears the rest")
        .expect("a message");
    assert_eq!(got, b"still talking");
    proxy.wait_ended("upstream_closed", 1).await;
}

#[tokio::test]
async fn round_robin_takes_the_three_servers_in_turn() {
    let servers = [
        named_server("a").await,
        named_server("b").await,
        named_server("c").await,
    ];
    let proxy = StreamProxy::start(&config(&servers, "", "")).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(read_all(proxy.addr()).await);
    }
    let mut first_round = seen[..3].to_vec();
    first_round.sort();
    assert_eq!(first_round, ["a", "b", "c"], "{seen:?}");
    assert_eq!(seen[..3], seen[3..], "the same order again: {seen:?}");
}

#[tokio::test]
async fn hash_on_the_client_address_keeps_a_client_on_one_server() {
    let servers = [
        named_server("a").await,
        named_server("b").await,
        named_server("c").await,
    ];
    let pool = "balance = \"hash\"\nhash_key = \"client_ip\"";
    let proxy = StreamProxy::start(&config(&servers, "", pool)).await;
    let first = read_all(proxy.addr()).await;
    for _ in 0..5 {
        assert_eq!(read_all(proxy.addr()).await, first);
    }
}

#[tokio::test]
async fn least_conn_sends_the_next_connection_to_the_idle_server() {
    let servers = [echo_server().await, named_server("idle").await];
    let proxy = StreamProxy::start(&config(&servers, "", "balance = \"least_conn\"")).await;
    // Find the echo server and keep a connection to it open.
    let mut held = None;
    for _ in 0..2 {
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        socket.write_all(b"?").await.expect("write");
        let mut one = [0u8; 1];
        socket.read_exact(&mut one).await.expect("read");
        if &one == b"?" {
            held = Some(socket);
            break;
        }
    }
    let _held = held.expect("one connection reached the echo server");
    for _ in 0..3 {
        assert_eq!(read_all(proxy.addr()).await, "idle");
    }
}

#[tokio::test]
async fn a_dead_server_is_skipped_and_the_next_one_answers() {
    let (dead, _held) = dead_addr();
    let servers = [dead, named_server("a").await, named_server("b").await];
    let proxy = StreamProxy::start(&config(&servers, "", "")).await;
    for _ in 0..6 {
        let name = read_all(proxy.addr()).await;
        assert!(name == "a" || name == "b", "got {name:?}");
    }
    assert_eq!(
        proxy.ended("connect_failed"),
        0,
        "no client saw the failure"
    );
    let text = proxy::metrics::render(&proxy.proxy.snapshot());
    assert!(
        text.contains(&format!(
            "proxy_upstream_server_up{{server=\"{dead}\",upstream=\"pool\"}} 0"
        )),
        "passive health took it out:\n{text}"
    );
}

#[tokio::test]
async fn a_pool_with_no_live_server_closes_the_connection() {
    let (dead, _held) = dead_addr();
    let proxy = StreamProxy::start(&config(&[dead], "", "")).await;
    assert_eq!(read_all(proxy.addr()).await, "");
    proxy.wait_ended("connect_failed", 1).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    // Holds every connection open and says nothing.
    let silent = tcp_server(|socket| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(socket);
    })
    .await;
    let proxy = StreamProxy::start(&config(&[silent], "idle_timeout = \"300ms\"", "")).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut got = Vec::new();
    // Nobody closes but the proxy: the read ends well before the upstream's 60 s.
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut got))
        .await
        .expect("the proxy closed the connection")
        .expect("a clean close");
    assert!(got.is_empty());
    proxy.wait_ended("idle_timeout", 1).await;
}

#[tokio::test]
async fn a_client_over_its_connection_limit_is_closed_and_the_slot_comes_back() {
    let stream = "limit_conn = { zone = \"per_client\", max = 1 }";
    let text = config(&[echo_server().await], stream, "")
        + "\n[limit_conn_zones.per_client]\nkey = \"client_ip\"\n";
    let proxy = StreamProxy::start(&text).await;
    let mut first = TcpStream::connect(proxy.addr()).await.expect("connect");
    first.write_all(b"1").await.expect("write");
    let mut one = [0u8; 1];
    first
        .read_exact(&mut one)
        .await
        .expect("the first is served");

    let mut extra = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got).await; // closed at once (or reset)
    assert!(got.is_empty());
    proxy.wait_ended("limited", 1).await;

    drop(first);
    proxy.wait_ended("client_closed", 1).await;
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    again.write_all(b"2").await.expect("write");
    again
        .read_exact(&mut one)
        .await
        .expect("the slot came back");
    assert_eq!(&one, b"2");
}

#[tokio::test]
async fn a_reload_sends_the_next_connection_to_the_new_upstream_on_the_same_port() {
    let proxy = StreamProxy::start(&config(&[named_server("old").await], "", "")).await;
    assert_eq!(read_all(proxy.addr()).await, "old");
    // The same `listen` as written (port 0 included) keeps the same socket.
    let next = config(&[named_server("new").await], "", "");
    let next = Config::parse(&next, "next.toml").expect("valid");
    let done = proxy.reload.reload(next).await.expect("reloaded");
    assert_eq!(done.streams.0, vec![proxy.addr()], "kept: {done:?}");
    assert_eq!(read_all(proxy.addr()).await, "new");
}

#[tokio::test]
async fn with_proxy_protocol_the_upstream_learns_the_clients_address_first() {
    // Sends back everything it received, as text, once the client is done.
    for (version, expect_v1) in [("v1", true), ("v2", false)] {
        let upstream = tcp_server(|mut socket| async move {
            let mut got = Vec::new();
            let _ = socket.read_to_end(&mut got).await;
            let _ = socket.write_all(&got).await;
            let _ = socket.shutdown().await;
        })
        .await;
        let stream = format!("proxy_protocol = \"{version}\"");
        let proxy = StreamProxy::start(&config(&[upstream], &stream, "")).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        let me = socket.local_addr().expect("addr");
        socket.write_all(b"hello").await.expect("write");
        socket.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        socket.read_to_end(&mut got).await.expect("read");
        let header = proxy::stream::proxy_protocol::encode(
            if expect_v1 {
                proxy::stream::proxy_protocol::Version::V1
            } else {
                proxy::stream::proxy_protocol::Version::V2
            },
            Some(&proxy::stream::proxy_protocol::ProxyHeader {
                source: me,
                destination: proxy.addr(),
            }),
        );
        assert_eq!(got, [header.as_slice(), b"hello"].concat(), "{version}");
        if expect_v1 {
            let line = format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\nhello",
                me.port(),
                proxy.addr().port()
            );
            assert_eq!(String::from_utf8_lossy(&got), line);
        }
    }
}

#[test]
fn stream_config_errors_point_at_the_line_and_say_what_to_do() {
    let bad_listen = "[[stream]]\nlisten = \"localhost:9000\"\nupstream = \"db\"\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
    let errors = Config::parse(bad_listen, "proxy.toml")
        .expect_err("refused")
        .to_string();
    assert!(
        errors.contains("`localhost:9000` is not a valid stream listen address"),
        "{errors}"
    );
    assert!(errors.contains("proxy.toml:2:10"), "{errors}");
    assert!(errors.contains("\"127.0.0.1:9000\""), "{errors}");

    let unknown = "[[stream]]\nlisten = \"127.0.0.1:9000\"\nupstream = \"dbb\"\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
    let errors = Config::parse(unknown, "proxy.toml")
        .expect_err("refused")
        .to_string();
    assert!(errors.contains("upstream `dbb` is not defined"), "{errors}");
    assert!(errors.contains("proxy.toml:3:12"), "{errors}");
    assert!(
        errors.contains("define [upstreams.dbb], or use one of: db"),
        "{errors}"
    );

    let by_header = "[[stream]]\nlisten = \"127.0.0.1:9000\"\nupstream = \"db\"\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\nbalance = \"hash\"\nhash_key = \"header:x-user\"\n";
    let errors = Config::parse(by_header, "proxy.toml")
        .expect_err("refused")
        .to_string();
    assert!(errors.contains("a TCP stream does not have"), "{errors}");

    let bad_version = "[[stream]]\nlisten = \"127.0.0.1:9000\"\nupstream = \"db\"\nproxy_protocol = \"v3\"\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
    let errors = Config::parse(bad_version, "proxy.toml")
        .expect_err("refused")
        .to_string();
    assert!(
        errors.contains("`v3` is not a PROXY protocol version"),
        "{errors}"
    );
    assert!(errors.contains("proxy.toml:4:18"), "{errors}");

    let with_status = "[[stream]]\nlisten = \"127.0.0.1:9000\"\nupstream = \"db\"\nlimit_conn = { zone = \"c\", max = 1, status = 429 }\n\n[limit_conn_zones.c]\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
    let errors = Config::parse(with_status, "proxy.toml")
        .expect_err("refused")
        .to_string();
    assert!(
        errors.contains("a stream has no status to answer with"),
        "{errors}"
    );
}

#[test]
fn a_config_of_streams_only_needs_no_http_listener_or_server() {
    let text = "[[stream]]\nlisten = \"127.0.0.1:9000\"\nupstream = \"db\"\nconnect_timeout = \"2s\"\nidle_timeout = \"1h\"\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
    let config = Config::parse(text, "proxy.toml").expect("valid");
    assert!(config.listeners.is_empty());
    assert_eq!(config.streams.len(), 1);
    assert_eq!(config.streams[0].connect_timeout, Duration::from_secs(2));
    assert_eq!(config.streams[0].idle_timeout, Duration::from_secs(3600));
    // Still refused: nothing at all to serve.
    let errors = Config::parse(
        "[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n",
        "proxy.toml",
    )
    .expect_err("refused")
    .to_string();
    assert!(errors.contains("no [[listen]] address"), "{errors}");
}

// ---- Accepting the PROXY protocol (`accept_proxy_protocol = true`) ----

use proxy::stream::proxy_protocol::{self as pp, ProxyHeader, Version};

/// The client a proxy in front names in its headers.
fn far_client() -> SocketAddr {
    "203.0.113.7:51000".parse().expect("addr")
}

/// An HTTP listener taking PROXY headers from `trusted`, routing to `upstream`.
fn http_config(trusted: &str, upstream: SocketAddr) -> String {
    format!(
        "trusted_proxies = [\"{trusted}\"]\n\n[[listen]]\naddr = \"127.0.0.1:0\"\naccept_proxy_protocol = true\n\n[[servers]]\nserver_names = [\"app.localhost\"]\nroutes = [{{ path = \"/\", upstream = \"app\" }}]\n\n[upstreams.app]\nservers = [\"{upstream}\"]\n"
    )
}

/// Sends `prefix` then a GET, reads until the proxy closes: the response, or
/// nothing when the proxy refused the connection.
async fn get_after(proxy: SocketAddr, prefix: &[u8]) -> String {
    let request = b"GET /who HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n";
    let bytes = [prefix, request.as_slice()].concat();
    let exchange = common::raw_exchange(proxy, &bytes);
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the proxy answered or closed within 10 s")
}

fn header(version: Version, destination: SocketAddr) -> Vec<u8> {
    pp::encode(
        version,
        Some(&ProxyHeader {
            source: far_client(),
            destination,
        }),
    )
}

#[tokio::test]
async fn an_http_request_after_a_proxy_header_is_forwarded_for_the_headers_source() {
    let upstream = common::echo_upstream("app").await;
    let proxy = common::start_proxy(&http_config("127.0.0.1", upstream.addr)).await;
    for version in [Version::V1, Version::V2] {
        let answer = get_after(proxy.addr, &header(version, proxy.addr)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{version:?}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        // The body may be chunked: the JSON is between the first '{' and the last '}'.
        let json = &body[body.find('{').expect("json")..=body.rfind('}').expect("json")];
        let echo: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(
            common::seen_header(&echo, "x-forwarded-for"),
            Some("203.0.113.7"),
            "{version:?}: {echo}"
        );
        assert_eq!(
            common::seen_header(&echo, "x-real-ip"),
            Some("203.0.113.7"),
            "{version:?}: {echo}"
        );
    }
    // v2 LOCAL (the proxy in front checking health): no client named, the peer stands.
    let answer = get_after(proxy.addr, &pp::encode(Version::V2, None)).await;
    assert!(answer.contains("127.0.0.1"), "{answer}");
}

#[tokio::test]
async fn an_http_listener_refuses_untrusted_peers_and_bad_or_missing_headers() {
    let upstream = common::echo_upstream("app").await;
    // Loopback is not trusted here: even a well-formed header is refused.
    let untrusted = common::start_proxy(&http_config("10.0.0.1", upstream.addr)).await;
    let answer = get_after(untrusted.addr, &header(Version::V1, untrusted.addr)).await;
    assert_eq!(answer, "", "an untrusted peer is closed");

    let proxy = common::start_proxy(&http_config("127.0.0.1", upstream.addr)).await;
    assert_eq!(get_after(proxy.addr, b"").await, "", "missing header");
    assert_eq!(
        get_after(proxy.addr, b"PROXY TCP4 nonsense\r\n").await,
        "",
        "bad v1 header"
    );
    let mut bad_v2 = header(Version::V2, proxy.addr);
    bad_v2[12] = 0x31; // version 3
    assert_eq!(get_after(proxy.addr, &bad_v2).await, "", "bad v2 header");
    assert_eq!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_stream_accepting_proxy_v1_passes_the_original_client_on_in_v2() {
    let upstream = tcp_server(|mut socket| async move {
        let mut got = Vec::new();
        let _ = socket.read_to_end(&mut got).await;
        let _ = socket.write_all(&got).await;
        let _ = socket.shutdown().await;
    })
    .await;
    let text = format!(
        "trusted_proxies = [\"127.0.0.1\"]\n{}",
        config(
            &[upstream],
            "accept_proxy_protocol = true\nproxy_protocol = \"v2\"",
            ""
        )
    );
    let proxy = StreamProxy::start(&text).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    socket
        .write_all(&[header(Version::V1, proxy.addr()).as_slice(), b"hello"].concat())
        .await
        .expect("write");
    socket.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    socket.read_to_end(&mut got).await.expect("read");
    let expected = pp::encode(
        Version::V2,
        Some(&ProxyHeader {
            source: far_client(),
            destination: proxy.addr(),
        }),
    );
    assert_eq!(got, [expected.as_slice(), b"hello"].concat());
}

#[tokio::test]
async fn a_stream_accepting_proxy_closes_untrusted_peers_and_bad_headers() {
    let upstream = echo_server().await;
    for (trusted, sent, n) in [
        ("10.0.0.1", header(Version::V1, far_client()), 1),
        ("127.0.0.1", b"hello, no header\r\n".to_vec(), 1),
    ] {
        let text = format!(
            "trusted_proxies = [\"{trusted}\"]\n{}",
            config(&[upstream], "accept_proxy_protocol = true", "")
        );
        let proxy = StreamProxy::start(&text).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        let _ = socket.write_all(&sent).await;
        let mut got = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "closed, not left hanging");
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        proxy.wait_ended("proxy_protocol_refused", n).await;
    }
}

#[test]
fn accepting_proxy_headers_needs_trusted_proxies() {
    let text = "[[stream]]\nlisten = \"127.0.0.1:9000\"\nupstream = \"db\"\naccept_proxy_protocol = true\n\n[upstreams.db]\nservers = [\"127.0.0.1:5432\"]\n";
    let errors = Config::parse(text, "proxy.toml")
        .expect_err("refused")
        .to_string();
    assert!(errors.contains("trusted_proxies is empty"), "{errors}");
    assert!(errors.contains("proxy.toml:4:"), "{errors}");
}

#[tokio::test]
async fn a_streams_connection_limit_counts_the_client_the_proxy_header_names() {
    let stream = "accept_proxy_protocol = true\nlimit_conn = { zone = \"per_client\", max = 1 }";
    let text = format!(
        "trusted_proxies = [\"127.0.0.1\"]\n{}\n[limit_conn_zones.per_client]\nkey = \"client_ip\"\n",
        config(&[echo_server().await], stream, "")
    );
    let proxy = StreamProxy::start(&text).await;
    let from = |ip: &str| {
        pp::encode(
            Version::V2,
            Some(&ProxyHeader {
                source: SocketAddr::new(ip.parse().expect("ip"), 40000),
                destination: proxy.addr(),
            }),
        )
    };
    // Two clients behind the same proxy in front: one connection each is fine.
    let mut open = Vec::new();
    for ip in ["203.0.113.7", "203.0.113.8"] {
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        socket
            .write_all(&[from(ip).as_slice(), b"x"].concat())
            .await
            .expect("write");
        let mut one = [0u8; 1];
        socket.read_exact(&mut one).await.expect("served");
        open.push(socket);
    }
    // A second connection of the first client is over its limit.
    let mut extra = TcpStream::connect(proxy.addr()).await.expect("connect");
    let _ = extra.write_all(&from("203.0.113.7")).await;
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got).await;
    assert!(got.is_empty());
    proxy.wait_ended("limited", 1).await;
}

/// On an HTTP listener too, a rate limit keyed on the client counts the
/// client the PROXY header names: two clients behind one proxy in front
/// each have their own allowance.
#[tokio::test]
async fn an_http_rate_limit_counts_the_client_the_proxy_header_names() {
    let upstream = common::echo_upstream("app").await;
    let text = http_config("127.0.0.1", upstream.addr).replace(
        "routes = [{ path = \"/\", upstream = \"app\" }]",
        "limit_req = { zone = \"per_client\", status = 429 }\nroutes = [{ path = \"/\", upstream = \"app\" }]",
    ) + "\n[limit_req_zones.per_client]\nkey = \"client_ip\"\nrate = \"1r/m\"\n";
    let proxy = common::start_proxy(&text).await;
    let from = |ip: &str| {
        pp::encode(
            Version::V1,
            Some(&ProxyHeader {
                source: SocketAddr::new(ip.parse().expect("ip"), 40000),
                destination: proxy.addr,
            }),
        )
    };
    let status = |answer: String| answer.get(9..12).unwrap_or_default().to_owned();
    assert_eq!(
        status(get_after(proxy.addr, &from("203.0.113.7")).await),
        "200"
    );
    assert_eq!(
        status(get_after(proxy.addr, &from("203.0.113.7")).await),
        "429"
    );
    assert_eq!(
        status(get_after(proxy.addr, &from("203.0.113.8")).await),
        "200"
    );
}

#[tokio::test]
async fn half_a_proxy_header_is_closed_after_the_header_timeout_not_left_hanging() {
    let upstream = common::echo_upstream("app").await;
    let text = format!(
        "client_header_timeout = \"300ms\"\n{}",
        http_config("127.0.0.1", upstream.addr)
    );
    let proxy = common::start_proxy(&text).await;
    let mut socket = TcpStream::connect(proxy.addr).await.expect("connect");
    socket.write_all(b"PROXY TCP4 203.0").await.expect("write");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), socket.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "closed within the timeout");
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}
