//! Hostile clients, over real sockets: malformed and smuggling requests,
//! oversized heads, slow and vanishing clients, path traversal, host
//! injection and spoofed forwarding headers. Each attack gets the right status
//! or a closed connection, and after each one an ordinary client is still
//! served (see docs/hardening.md, "Hostile clients").

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short clocks, so the slow-client cases take a fraction of a second.
const CLOCKS: &str = "client_header_timeout = \"300ms\"\nclient_body_timeout = \"300ms\"\n";

fn config(servers: &[SocketAddr], top: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"{CLOCKS}{top}
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/api/", upstream = "app" }},
  {{ path = "/admin/", return = {{ status = 403, body = "admin is closed" }} }},
]

[upstreams.app]
servers = [{}]
"#,
        list.join(", ")
    )
}

/// A proxy in front of one echo upstream.
async fn setup() -> (TestProxy, EchoUpstream) {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(&[up.addr], "")).await;
    (proxy, up)
}

/// Writes `request` on a new connection and reads until the proxy closes it;
/// fails the test if the proxy neither answers nor closes within 3 s.
async fn exchange(proxy: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    // The proxy may close before it has read everything (it refused the head).
    let _ = stream.write_all(request).await;
    read_all(&mut stream).await
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the proxy hung: got {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// The status of the first response in `raw`, `None` if the connection was
/// closed without one.
fn status(raw: &str) -> Option<u16> {
    let rest = raw
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| raw.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}

/// How many responses `raw` holds.
fn responses(raw: &str) -> usize {
    raw.matches("HTTP/1.1 ").count()
}

/// An ordinary client is still served.
async fn others_are_served(proxy: SocketAddr) {
    let (response, _) = get(&client(), proxy, "app.localhost", "/ok").await;
    assert_eq!(
        response.status(),
        200,
        "an ordinary client after the attack"
    );
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: app.localhost\r\n\r\n";

#[tokio::test]
async fn smuggling_attempts_reach_the_upstream_as_one_request_or_none() {
    let (proxy, up) = setup().await;
    // (attack, statuses allowed; `None` is a closed connection)
    let cases: Vec<(&str, String, &[Option<u16>])> = vec![
        // Both lengths: hyper frames by Transfer-Encoding alone, drops the
        // Content-Length and closes after answering (RFC 9112 section 6.1),
        // so the bytes after the chunked body are never read as a request.
        (
            "CL then TE",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[Some(200)],
        ),
        (
            "TE then CL",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[Some(200)],
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 0\r\nContent-Length: 47\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "a Content-Length list that disagrees",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 0, 47\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "a signed Content-Length",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: +47\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "obsolete line folding",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 47\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "a space before the colon",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "Transfer-Encoding other than chunked",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: gzip\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "chunked not last",
            format!(
                "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!(
                "POST / HTTP/1.0\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[Some(400), None],
        ),
    ];
    for (name, attack, allowed) in cases {
        let before = up.completed.load(Ordering::SeqCst);
        let raw = exchange(proxy.addr, attack.as_bytes()).await;
        let after = up.completed.load(Ordering::SeqCst);
        assert!(allowed.contains(&status(&raw)), "{name}: {raw}");
        assert!(responses(&raw) <= 1, "{name}: a second response: {raw}");
        let expected = usize::from(status(&raw) == Some(200));
        assert_eq!(
            after - before,
            expected,
            "{name}: requests the upstream completed"
        );
        others_are_served(proxy.addr).await;
    }
}

#[tokio::test]
async fn bad_chunk_sizes_are_the_clients_error_and_never_complete_upstream() {
    let (proxy, up) = setup().await;
    for (name, chunk) in [
        ("hex overflow", "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        ("negative", "-1\r\nx\r\n0\r\n\r\n"),
        ("garbage", "zz\r\nx\r\n0\r\n\r\n"),
        ("no CRLF", "1\r\nxyz0\r\n\r\n"),
    ] {
        let attack = format!(
            "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
        );
        let before = up.completed.load(Ordering::SeqCst);
        let raw = exchange(proxy.addr, attack.as_bytes()).await;
        assert!(matches!(status(&raw), Some(400) | None), "{name}: {raw}");
        assert_eq!(up.completed.load(Ordering::SeqCst), before, "{name}");
        others_are_served(proxy.addr).await;
    }
}

#[tokio::test]
async fn oversized_heads_get_414_and_431() {
    let (proxy, up) = setup().await;
    let long_uri = format!("/{}", "a".repeat(9 * 1024));
    let big_header = "v".repeat(9 * 1024);
    let many: String = (0..101).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let huge: String = (0..10)
        .map(|i| format!("X-Big{i}: {}\r\n", "v".repeat(4000)))
        .collect();
    let cases = [
        (
            "a long URI",
            format!("GET {long_uri} HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n"),
            414,
        ),
        (
            "a long header",
            format!(
                "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: {big_header}\r\nConnection: close\r\n\r\n"
            ),
            431,
        ),
        (
            "101 headers",
            format!("GET / HTTP/1.1\r\nHost: app.localhost\r\n{many}Connection: close\r\n\r\n"),
            431,
        ),
        (
            "a 40 KiB head",
            format!("GET / HTTP/1.1\r\nHost: app.localhost\r\n{huge}Connection: close\r\n\r\n"),
            431,
        ),
    ];
    for (name, attack, expected) in cases {
        let raw = exchange(proxy.addr, attack.as_bytes()).await;
        assert_eq!(status(&raw), Some(expected), "{name}: {raw}");
        others_are_served(proxy.addr).await;
    }
    assert_eq!(
        up.completed.load(Ordering::SeqCst),
        4,
        "only the ordinary requests went up"
    );
}

#[tokio::test]
async fn the_head_limits_are_configurable() {
    let up = echo_upstream("app").await;
    let top = "max_uri_size = \"1k\"\nmax_header_size = \"512\"\nmax_headers = 10\n";
    let proxy = start_proxy(&config(&[up.addr], top)).await;
    let uri = format!("/{}", "a".repeat(1100));
    let raw = exchange(
        proxy.addr,
        format!("GET {uri} HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&raw), Some(414), "{raw}");
    let header = "v".repeat(600);
    let raw = exchange(
        proxy.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: {header}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&raw), Some(431), "{raw}");
    let many: String = (0..11).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let raw = exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: app.localhost\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&raw), Some(431), "{raw}");
    others_are_served(proxy.addr).await;
    assert_refused(
        "max_request_head_size = \"4k\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nroutes = [{ path = \"/\", return = { status = 200 } }]\n",
        "`max_request_head_size` is smaller than a head can be",
        "at least 8k",
    );
    assert_refused(
        "max_headers = 0\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nroutes = [{ path = \"/\", return = { status = 200 } }]\n",
        "`max_headers` must be between 1 and 10000",
        "leave it out",
    );
}

#[tokio::test]
async fn a_missing_doubled_invalid_or_contradicting_host_is_400() {
    let (proxy, up) = setup().await;
    let cases = [
        ("no Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: app.localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "a path in Host",
            "GET / HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n",
        ),
        (
            "userinfo in Host",
            "GET / HTTP/1.1\r\nHost: app.localhost@evil.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "two ports",
            "GET / HTTP/1.1\r\nHost: app.localhost:80:90\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute URI for another host",
            "GET http://evil.example/ HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (name, attack) in cases {
        let raw = exchange(proxy.addr, attack.as_bytes()).await;
        assert_eq!(status(&raw), Some(400), "{name}: {raw}");
        others_are_served(proxy.addr).await;
    }
    assert_eq!(up.completed.load(Ordering::SeqCst), cases.len());
    // The absolute form with a matching Host, and HTTP/1.0 without one, are fine.
    let raw = exchange(
        proxy.addr,
        b"GET http://app.localhost/x HTTP/1.1\r\nHost: APP.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&raw), Some(200), "{raw}");
    let raw = exchange(proxy.addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&raw), Some(200), "{raw}");
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_while_others_are_served() {
    let (proxy, _up) = setup().await;
    let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.loc")
        .await
        .expect("write");
    others_are_served(proxy.addr).await;
    let started = tokio::time::Instant::now();
    let raw = read_all(&mut slow).await;
    assert!(matches!(status(&raw), Some(408) | None), "{raw}");
    assert!(started.elapsed() < Duration::from_secs(2));
    others_are_served(proxy.addr).await;
}

/// Two upstream servers, `max_fails = 1`: a failure blamed on either would
/// take it out, and the next requests would all go to the other one.
async fn two_servers() -> (TestProxy, EchoUpstream, EchoUpstream) {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let proxy = start_proxy(&config(&[a.addr, b.addr], "")).await;
    (proxy, a, b)
}

async fn both_still_up(proxy: SocketAddr) {
    let client = client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (response, _) = get(&client, proxy, "app.localhost", "/").await;
        assert_eq!(response.status(), 200);
        seen.insert(
            response.headers()["x-upstream"]
                .to_str()
                .expect("name")
                .to_owned(),
        );
    }
    assert_eq!(
        seen.len(),
        2,
        "a server was taken out: only {seen:?} answered"
    );
}

#[tokio::test]
async fn a_stalled_body_is_408_and_not_the_upstreams_fault() {
    let (proxy, a, b) = two_servers().await;
    // A large body streams on at once; a small one is read whole first (so
    // that a retry can send it again): both paths end in 408.
    for length in [100_000, 10] {
        let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: {length}\r\n\r\nabc"
        );
        slow.write_all(head.as_bytes()).await.expect("write");
        let raw = read_all(&mut slow).await;
        assert_eq!(status(&raw), Some(408), "{raw}");
        assert!(raw.contains("client_body_timeout"), "{raw}");
    }
    // A chunk that never ends is a stalled body; a broken chunk size is
    // the client's fault too.
    let raw = exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    )
    .await;
    assert_eq!(status(&raw), Some(408), "{raw}");
    let raw = exchange(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(matches!(status(&raw), Some(400) | None), "{raw}");
    assert_eq!(
        a.completed.load(Ordering::SeqCst) + b.completed.load(Ordering::SeqCst),
        0
    );
    both_still_up(proxy.addr).await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_upload_aborts_the_upstream_request() {
    // An upstream that reports how many body bytes it got before the end.
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let cut = raw_upstream(move |mut stream| {
        let got_tx = got_tx.clone();
        async move {
            read_head(&mut stream).await;
            let mut total = 0usize;
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                total += n;
            }
            let _ = got_tx.send(total);
        }
    })
    .await;
    let up = echo_upstream("app").await;
    let text = config(&[up.addr], "").replace(
        "{ path = \"/api/\", upstream = \"app\" }",
        "{ path = \"/api/\", upstream = \"cut\" }",
    ) + &format!("\n[upstreams.cut]\nservers = [\"{cut}\"]\n");
    let proxy = start_proxy(&text).await;
    let mut client_side = TcpStream::connect(proxy.addr).await.expect("connect");
    client_side
        .write_all(
            b"POST /api/upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await
        .expect("write");
    client_side.write_all(&[b'x'; 20000]).await.expect("write");
    drop(client_side);
    let total = tokio::time::timeout(Duration::from_secs(3), got.recv())
        .await
        .expect("the upstream saw the cut")
        .expect("a count");
    assert!(total < 1_000_000, "the upstream got {total} bytes");
    others_are_served(proxy.addr).await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_download_releases_the_upstream() {
    // An upstream that streams forever, and reports when its writes fail.
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let endless = raw_upstream(move |mut stream| {
        let done_tx = done_tx.clone();
        async move {
            read_head(&mut stream).await;
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n";
            if stream.write_all(head).await.is_ok() {
                let chunk = [b'y'; 65536];
                while stream.write_all(&chunk).await.is_ok() {}
            }
            let _ = done_tx.send(());
        }
    })
    .await;
    let up = echo_upstream("app").await;
    // One download at a time per client: a slot the cut download kept would
    // refuse the next one with 503.
    let text = config(&[up.addr], "").replace(
        "{ path = \"/api/\", upstream = \"app\" }",
        "{ path = \"/api/\", upstream = \"endless\", limit_conn = { zone = \"addr\", max = 1 } }",
    ) + &format!(
        "\n[upstreams.endless]\nservers = [\"{endless}\"]\n\n[limit_conn_zones.addr]\nkey = \"client_ip\"\n"
    );
    let proxy = start_proxy(&text).await;
    for _ in 0..2 {
        let mut client_side = TcpStream::connect(proxy.addr).await.expect("connect");
        client_side
            .write_all(b"GET /api/big HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        let n = client_side.read(&mut buf).await.expect("read");
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        drop(client_side);
        tokio::time::timeout(Duration::from_secs(3), done.recv())
            .await
            .expect("the upstream connection was closed")
            .expect("a signal");
        others_are_served(proxy.addr).await;
    }
}

#[tokio::test]
async fn path_traversal_and_encoded_slashes_do_not_cross_routes() {
    let (proxy, up) = setup().await;
    let client = client();
    // Resolved first: these name /admin/, and /admin/ answers them, not /api/'s upstream.
    for path in [
        "/api/../admin/",
        "/api/%2e%2e/admin/",
        "/api/./../admin/x",
        "//admin//x",
    ] {
        let (response, body) = get(&client, proxy.addr, "app.localhost", path).await;
        assert_eq!(response.status(), 403, "{path}");
        assert_eq!(&body[..], b"admin is closed", "{path}");
    }
    assert_eq!(up.completed.load(Ordering::SeqCst), 0);
    // No single meaning: refused.
    for path in [
        "/api/..%2fadmin/",
        "/api/..%2Fadmin/",
        "/api/..%5Cadmin/",
        "/api/%00",
        "/../etc/passwd",
        "/api/%zz",
    ] {
        let raw = exchange(
            proxy.addr,
            format!("GET {path} HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(status(&raw), Some(400), "{path}: {raw}");
    }
    assert_eq!(up.completed.load(Ordering::SeqCst), 0);
    // The upstream gets the path it was routed by.
    let (response, body) = get(
        &client,
        proxy.addr,
        "app.localhost",
        "/api//x/./y/../%7Ez?q=%2F",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)["uri"], "/api/x/~z?q=%2F");
}

#[tokio::test]
async fn an_evil_host_never_becomes_a_redirect_to_another_site() {
    let up = echo_upstream("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"local_ca_dir = "{}"
[[listen]]
addr = "127.0.0.1:0"

[[listen]]
addr = "127.0.0.1:0"
tls = true

[[servers]]
server_names = ["secure.localhost"]
tls = {{ auto_local = true }}
redirect_https = true
default = true
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{}"]
"#,
        dir.path().display(),
        up.addr
    );
    let proxy = start_proxy(&text).await;
    let https = proxy.addrs[1].port();
    // A host no server names: the default server answers, but the redirect
    // names the server, not the client's host.
    let raw = exchange(
        proxy.addr,
        b"GET /login HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&raw), Some(301), "{raw}");
    assert!(
        raw.contains(&format!(
            "location: https://secure.localhost:{https}/login\r\n"
        )),
        "{raw}"
    );
    assert!(!raw.contains("evil"), "{raw}");
    for evil in [
        "evil.example/x",
        "secure.localhost@evil.example",
        "evil.example:80:90",
        "evil.example\\x",
    ] {
        let raw = exchange(
            proxy.addr,
            format!("GET / HTTP/1.1\r\nHost: {evil}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&raw), Some(400), "{evil}: {raw}");
        assert!(!raw.contains("evil"), "{raw}");
    }
    // The server's own name is redirected as before.
    let raw = exchange(
        proxy.addr,
        b"GET /a?b HTTP/1.1\r\nHost: Secure.localhost:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        raw.contains(&format!(
            "location: https://secure.localhost:{https}/a?b\r\n"
        )),
        "{raw}"
    );
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_not_believed() {
    let (proxy, _up) = setup().await;
    let request = http::Request::get(format!("http://{}/", proxy.addr))
        .header("host", "app.localhost")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    let seen = json(&body);
    assert_eq!(seen_header(&seen, "x-real-ip"), Some("127.0.0.1"));
    // The list keeps what the client wrote (as nginx's
    // $proxy_add_x_forwarded_for), but its last entry is the proxy's own.
    assert_eq!(
        seen_header(&seen, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen_header(&seen, "forwarded"), None);

    // From a trusted proxy, its Forwarded is passed on.
    let up = echo_upstream("app").await;
    let trusting = start_proxy(&config(&[up.addr], "trusted_proxies = [\"127.0.0.1\"]\n")).await;
    let request = http::Request::get(format!("http://{}/", trusting.addr))
        .header("host", "app.localhost")
        .header("forwarded", "for=203.0.113.9")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (_, body) = send(&client(), request).await;
    assert_eq!(
        seen_header(&json(&body), "forwarded"),
        Some("for=203.0.113.9")
    );
}
