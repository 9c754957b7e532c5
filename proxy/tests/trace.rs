//! The decision trace: a request sent with `X-Lab-Trace: 1` from an address
//! in `trace_from` gets `x-lab-trace-NN` headers explaining every decision
//! the proxy made for it. Real HTTP over loopback; ports and timings vary
//! from run to run, so the snapshots show them as `<port>` and `<ms>`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use tokio::net::TcpListener;

/// Lets loopback clients ask for traces.
const TRACE_FROM: &str = "trace_from = [\"127.0.0.1/32\", \"::1/128\"]\n";

/// Sends `method path` with `Host: host` and `X-Lab-Trace: 1`.
async fn traced(
    client: &Client,
    proxy: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (Response<()>, Bytes) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", host)
        .header("x-lab-trace", "1");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    send(
        client,
        request.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
}

/// The trace lines of a response, in order.
fn trace_lines(response: &Response<()>) -> Vec<String> {
    let mut lines: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-lab-trace-"))
        .map(|(name, value)| (name.to_string(), value.to_str().expect("ascii").to_owned()))
        .collect();
    lines.sort();
    lines
        .into_iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect()
}

/// The trace as the lab prints it, one header a line.
fn transcript(response: &Response<()>) -> String {
    trace_lines(response).join("\n")
}

/// Snapshots `text` with ports and timings masked.
macro_rules! assert_trace {
    ($name:expr, $text:expr) => {
        insta::with_settings!({filters => vec![
            (r"(127\.0\.0\.\d+):\d+", "$1:<port>"),
            (r"(answered \d{3}[A-Za-z ]*) in \d+(\.\d+)? ms", "$1 in <ms>"),
            (r"failed after \d+(\.\d+)? ms", "failed after <ms>"),
        ]}, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

/// A request: method, host, path, extra headers, the status expected.
type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], u16);

/// An address on `ip` where nothing listens: bound once, then released.
async fn refused_at(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{ip}:0")).await.expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn a_404_names_the_server_and_the_routes_that_did_not_match() {
    let up = echo_upstream("app").await;
    let config = format!(
        r#"{TRACE_FROM}
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost", "*.app.localhost"]
routes = [
  {{ path = "/api/", upstream = "app" }},
  {{ path = "/health", exact = true, return = {{ status = 200, body = "ok" }} }},
]

[upstreams.app]
servers = ["{}"]
"#,
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let (response, body) = traced(
        &client(),
        proxy.addr,
        "GET",
        "www.app.localhost",
        "/nothing",
        &[],
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(body, "404 Not Found: no route matches this path\n");
    assert_trace!("a_404", transcript(&response));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_refusal_shows_the_zone_the_bucket_and_retry_after() {
    let up = echo_upstream("app").await;
    let config = format!(
        r#"{TRACE_FROM}
[[listen]]
addr = "127.0.0.1:0"

[limit_req_zones.one]
rate = "1r/s"

[[servers]]
server_names = ["app.localhost"]
limit_req = {{ zone = "one", burst = 1, nodelay = true, status = 429 }}
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{}"]
"#,
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let client = client();
    let mut limit_lines = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let (response, _) = traced(&client, proxy.addr, "GET", "app.localhost", "/", &[]).await;
        limit_lines.extend(
            trace_lines(&response)
                .into_iter()
                .filter(|l| l.contains("limit_req")),
        );
        last = Some(response);
    }
    let last = last.expect("three responses");
    assert_eq!(last.status(), 429);
    assert_eq!(last.headers()["retry-after"], "1");
    assert_trace!("rate_limit_decisions", limit_lines.join("\n"));
    assert_trace!("rate_limit_refusal", transcript(&last));
    // The trace does not move the clock or the bucket: a second later, it passes.
    tokio::time::advance(Duration::from_secs(1)).await;
    let (response, _) = traced(&client, proxy.addr, "GET", "app.localhost", "/", &[]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_round_robin_choice_lists_the_servers_their_state_and_the_winner() {
    let ups = [
        echo_upstream_at("whoami-1", "127.0.0.1:0".parse().expect("addr")).await,
        echo_upstream_at("whoami-2", "127.0.0.2:0".parse().expect("addr")).await,
        echo_upstream_at("whoami-3", "127.0.0.3:0".parse().expect("addr")).await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let config = format!("{TRACE_FROM}{}", single_upstream_config(&addrs, ""));
    let proxy = start_proxy(&config).await;
    let client = client();
    let (first, _) = traced(&client, proxy.addr, "GET", "app.localhost", "/", &[]).await;
    assert_eq!(first.headers()["x-upstream"], "whoami-1");
    assert_trace!("round_robin", transcript(&first));
    let (second, _) = traced(&client, proxy.addr, "GET", "app.localhost", "/", &[]).await;
    assert_eq!(second.headers()["x-upstream"], "whoami-2");
    let chose = format!("attempt 1: round_robin chose {}", addrs[1]);
    assert!(
        trace_lines(&second).iter().any(|l| l.ends_with(&chose)),
        "{:#?}",
        trace_lines(&second)
    );
}

#[tokio::test]
async fn a_retry_after_a_refused_connection_explains_each_attempt() {
    let dead = refused_at("127.0.0.9").await;
    let alive = echo_upstream("whoami-1").await;
    let config = format!(
        "{TRACE_FROM}{}",
        single_upstream_config(&[dead, alive.addr], "")
    );
    let proxy = start_proxy(&config).await;
    let (response, _) = traced(&client(), proxy.addr, "GET", "app.localhost", "/", &[]).await;
    assert_eq!(response.status(), 200);
    assert_trace!("retry_after_refused", transcript(&response));
}

#[tokio::test]
async fn a_post_that_reached_a_server_is_not_sent_twice_and_the_trace_says_why() {
    let hang_up = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        drop(stream);
    })
    .await;
    let alive = echo_upstream("whoami-1").await;
    let config = format!(
        "{TRACE_FROM}{}",
        single_upstream_config(&[hang_up, alive.addr], "")
    );
    let proxy = start_proxy(&config).await;
    let (response, _) = traced(&client(), proxy.addr, "POST", "app.localhost", "/", &[]).await;
    assert_eq!(response.status(), 502);
    let lines = trace_lines(&response);
    assert!(
        lines.iter().any(|l| l.ends_with(
            "no other server is tried: POST is not idempotent and may have taken effect on that server, so it is not sent twice (non_idempotent is not listed)"
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("502 Bad Gateway with Proxy-Status")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn without_trace_from_or_from_another_address_the_header_is_ignored_and_never_forwarded() {
    let up = echo_upstream("app").await;
    let client = client();
    for trace_from in ["", "trace_from = [\"10.0.0.0/8\"]\n", TRACE_FROM] {
        let config = format!("{trace_from}{}", single_upstream_config(&[up.addr], ""));
        let proxy = start_proxy(&config).await;
        let (response, body) = traced(&client, proxy.addr, "GET", "app.localhost", "/", &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            seen_header(&json(&body), "x-lab-trace"),
            None,
            "forwarded upstream with {trace_from:?}"
        );
        let traced = !trace_lines(&response).is_empty();
        assert_eq!(traced, trace_from == TRACE_FROM, "{trace_from:?}");
    }
    // Allowed, but without the header: no trace either.
    let config = format!("{TRACE_FROM}{}", single_upstream_config(&[up.addr], ""));
    let proxy = start_proxy(&config).await;
    let (response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
    assert!(trace_lines(&response).is_empty());
}

#[tokio::test]
async fn every_kind_of_answer_carries_its_trace() {
    let up = echo_upstream("app").await;
    let dead = refused_addr().await;
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"{TRACE_FROM}local_ca_dir = "{ca}"

[[listen]]
addr = "127.0.0.1:0"

[[listen]]
addr = "127.0.0.1:0"
tls = true

[limit_conn_zones.addr]

[[servers]]
server_names = ["app.localhost"]
routes = [
  {{ path = "/", upstream = "app", strip_prefix = false }},
  {{ path = "/api/", upstream = "app", strip_prefix = true, limit_conn = {{ zone = "addr", max = 2 }} }},
  {{ path = "/welcome", exact = true, return = {{ status = 200, body = "hi" }} }},
  {{ path = "/private/", upstream = "app", access = ["allow 10.0.0.0/8", "deny all"] }},
  {{ path = "/admin/", upstream = "app", basic_auth = {{ realm = "admin", users = {{ alice = "{hash}" }} }} }},
  {{ path = "/upload/", upstream = "app", max_body_size = "4" }},
  {{ path = "/down/", upstream = "dead" }},
  {{ path = "/sticky/", upstream = "sticky" }},
]

[[servers]]
server_names = ["secure.localhost"]
tls = {{ auto_local = true }}
redirect_https = true
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{up}"]

[upstreams.dead]
servers = ["{dead}"]

[upstreams.sticky]
servers = ["{up}"]
balance = "hash"
hash_key = "header:x-user"
"#,
        ca = ca_dir.path().display(),
        up = up.addr,
    );
    let proxy = start_proxy(&config).await;
    let client = client();
    let mut all = String::new();
    let cases: [Case; 10] = [
        ("GET", "secure.localhost", "/x?y=1", &[], 301),
        ("GET", "app.localhost", "/welcome", &[], 200),
        ("GET", "app.localhost", "/api/tasks?done=1", &[], 200),
        ("GET", "app.localhost", "/private/x", &[], 403),
        ("GET", "app.localhost", "/admin/", &[], 401),
        (
            "GET",
            "app.localhost",
            "/admin/",
            &[("authorization", "Basic YWxpY2U6czNjcmV0")],
            200,
        ),
        (
            "POST",
            "app.localhost",
            "/upload/",
            &[("content-length", "0")],
            200,
        ),
        ("GET", "app.localhost", "/down/", &[], 502),
        (
            "GET",
            "app.localhost",
            "/sticky/",
            &[("x-user", "alice")],
            200,
        ),
        ("GET", "app.localhost", "/sticky/", &[], 200),
    ];
    for (method, host, path, extra, status) in cases {
        let (response, _) = traced(&client, proxy.addr, method, host, path, extra).await;
        assert_eq!(response.status(), status, "{method} {host}{path}");
        all.push_str(&format!("--- {method} {host}{path}: {status}\n"));
        all.push_str(&transcript(&response));
        all.push('\n');
    }
    // A body over max_body_size: 413, before anything goes upstream.
    let request = Request::post(format!("http://{}/upload/", proxy.addr))
        .header("host", "app.localhost")
        .header("x-lab-trace", "1")
        .body(Full::new(Bytes::from_static(b"too long")))
        .expect("request");
    let (response, _) = send(&client, request).await;
    assert_eq!(response.status(), 413);
    all.push_str("--- POST app.localhost/upload/ (8 bytes): 413\n");
    all.push_str(&transcript(&response));
    assert!(!all.contains("s3cret") && !all.contains("YWxpY2U6czNjcmV0"));
    assert_trace!("every_kind_of_answer", all);
}

#[tokio::test]
async fn a_client_reported_by_a_trusted_proxy_is_named_beside_the_peer() {
    let up = echo_upstream("app").await;
    let config = format!(
        "{TRACE_FROM}trusted_proxies = [\"127.0.0.1\"]\n{}",
        single_upstream_config(&[up.addr], "")
    );
    let proxy = start_proxy(&config).await;
    let forwarded = [("x-forwarded-for", "203.0.113.7")];
    let (response, _) = traced(
        &client(),
        proxy.addr,
        "GET",
        "app.localhost",
        "/",
        &forwarded,
    )
    .await;
    let lines = trace_lines(&response);
    assert_eq!(
        lines[1],
        "x-lab-trace-02: client address 203.0.113.7: read from X-Forwarded-For, believed because the peer 127.0.0.1 is in trusted_proxies"
    );
    assert!(
        lines[4].ends_with("X-Forwarded-For `203.0.113.7, 127.0.0.1`"),
        "{lines:#?}"
    );
}

#[test]
fn a_bad_trace_from_entry_is_reported_at_its_line_with_help() {
    let config = "trace_from = [\"127.0.0.1/32\", \"localhost\"]\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    let errors = match proxy::Config::parse(config, "proxy.toml") {
        Ok(_) => panic!("a bad trace_from entry was accepted"),
        Err(errors) => errors.to_string(),
    };
    insta::assert_snapshot!(errors);
}
