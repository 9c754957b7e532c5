//! The admin listener and its metrics, over real loopback: traffic goes
//! through the proxy, then `/metrics` is read with a Prometheus text parser
//! and every counter is checked to the exact value.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use prometheus_parse::{Scrape, Value};
use proxy::{Config, ProxyServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A proxy with an admin listener; stops when dropped.
struct AdminProxy {
    addr: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(config: &str) -> AdminProxy {
    let config = Config::parse(config, "test.toml").expect("valid test config");
    let server = ProxyServer::bind(config).await.expect("bind the proxy");
    let addr = server.local_addrs()[0];
    let admin = server.admin_addr().expect("the admin listener is bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    AdminProxy {
        addr,
        admin,
        _stop: stop,
    }
}

/// `GET path` on the admin listener: status, content type, body.
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String, String) {
    let (response, body) = get(&client(), admin, "localhost", path).await;
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (
        response.status().as_u16(),
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let (status, content_type, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of the sample `name{labels}` (exactly these labels), if present.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape.samples.iter().find(|s| {
        s.metric == name
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            && s.labels.iter().count() == labels.len()
    })?;
    Some(match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count),
        Value::Summary(_) => panic!("no summaries here"),
    })
}

fn requests(scrape: &Scrape, route: &str, class: &str) -> Option<f64> {
    value(
        scrape,
        "proxy_requests_total",
        &[
            ("server", "app.localhost"),
            ("route", route),
            ("status_class", class),
        ],
    )
}

fn config(app: SocketAddr, hang: SocketAddr, gone: SocketAddr) -> String {
    format!(
        r#"
admin = {{ addr = "127.0.0.1:0" }}

[[listen]]
addr = "127.0.0.1:0"

[limit_req_zones.slow]
rate = "1r/m"

[limit_conn_zones.one_at_a_time]
key = "route"

[cache_zones.pages]
max_size = "1MiB"

[[servers]]
server_names = ["app.localhost", "www.app.localhost"]
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/limited/", upstream = "app", limit_req = {{ zone = "slow", status = 429 }} }},
  {{ path = "/cached/", upstream = "app", cache = {{ zone = "pages", default_ttl = "60s" }} }},
  {{ path = "/hang/", upstream = "hang", limit_conn = {{ zone = "one_at_a_time", max = 1 }} }},
  {{ path = "/gone/", upstream = "gone" }},
  {{ path = "/hello", exact = true, return = {{ status = 200, body = "hi" }} }},
]

[[servers]]
server_names = ["other.localhost"]
routes = [{{ path = "/only/", upstream = "app" }}]

[upstreams.app]
servers = ["{app}"]

[upstreams.hang]
servers = ["{hang}"]

[upstreams.gone]
servers = ["{gone}"]
"#
    )
}

#[tokio::test]
async fn metrics_count_every_request_by_route_status_limit_cache_and_upstream() {
    let app = echo_upstream("app").await;
    // Reads the request and never answers: a request in progress.
    let hang = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await;
    let gone = refused_addr().await;
    let proxy = start(&config(app.addr, hang, gone)).await;
    let client = client();
    let status = |path: &'static str| {
        let client = client.clone();
        async move {
            get(&client, proxy.addr, "app.localhost", path)
                .await
                .0
                .status()
                .as_u16()
        }
    };

    assert_eq!(status("/a").await, 200);
    assert_eq!(status("/b").await, 200);
    assert_eq!(status("/hello").await, 200);
    // The other server has no route for `/`: 404 on its "no route".
    let (response, _) = get(&client, proxy.addr, "other.localhost", "/nothing").await;
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(status("/limited/x").await, 200);
    assert_eq!(status("/limited/x").await, 429);
    assert_eq!(status("/cached/page").await, 200);
    assert_eq!(status("/cached/page").await, 200);
    assert_eq!(status("/gone/x").await, 502);
    // One request held in progress upstream; the next is over the limit.
    let held_client = client.clone();
    let held = tokio::spawn(async move {
        let _ = get(&held_client, proxy.addr, "app.localhost", "/hang/1").await;
    });
    let mut in_flight = 0.0;
    for _ in 0..200 {
        let scraped = scrape(proxy.admin).await;
        in_flight = value(
            &scraped,
            "proxy_upstream_in_flight",
            &[("upstream", "hang"), ("server", &hang.to_string())],
        )
        .expect("an in-flight gauge per upstream server");
        if in_flight == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight, 1.0, "the held request is in progress");
    assert_eq!(status("/hang/2").await, 503);

    let m = scrape(proxy.admin).await;
    assert_eq!(requests(&m, "/", "2xx"), Some(2.0));
    assert_eq!(requests(&m, "/", "4xx"), Some(0.0));
    assert_eq!(requests(&m, "/hello", "2xx"), Some(1.0));
    assert_eq!(requests(&m, "/limited/", "2xx"), Some(1.0));
    assert_eq!(requests(&m, "/limited/", "4xx"), Some(1.0));
    assert_eq!(requests(&m, "/cached/", "2xx"), Some(2.0));
    assert_eq!(requests(&m, "/gone/", "5xx"), Some(1.0));
    // The held request has no response yet: not counted.
    assert_eq!(requests(&m, "/hang/", "5xx"), Some(1.0));
    assert_eq!(requests(&m, "/hang/", "2xx"), Some(0.0));
    // The route label is the configured path, never the request's.
    assert_eq!(
        m.samples
            .iter()
            .filter(|s| s.labels.get("route") == Some("/a"))
            .count(),
        0
    );
    let not_found = [
        ("server", "other.localhost"),
        ("route", "-"),
        ("status_class", "4xx"),
    ];
    assert_eq!(value(&m, "proxy_requests_total", &not_found), Some(1.0));
    assert_eq!(
        value(
            &m,
            "proxy_request_duration_seconds",
            &[("server", "app.localhost"), ("route", "/")]
        ),
        Some(2.0),
        "one observation per answered request"
    );
    assert_eq!(
        value(
            &m,
            "proxy_request_duration_seconds_count",
            &[("server", "app.localhost"), ("route", "/cached/")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&m, "proxy_rate_limited_total", &[("zone", "slow")]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "proxy_conn_limited_total", &[("zone", "one_at_a_time")]),
        Some(1.0)
    );
    let cache = |result| {
        value(
            &m,
            "proxy_cache_requests_total",
            &[("zone", "pages"), ("result", result)],
        )
    };
    assert_eq!(cache("miss"), Some(1.0));
    assert_eq!(cache("hit"), Some(1.0));
    assert_eq!(cache("bypass"), Some(0.0));
    assert_eq!(
        value(
            &m,
            "proxy_upstream_errors_total",
            &[("upstream", "gone"), ("kind", "connection_refused")]
        ),
        Some(1.0)
    );
    let up = |upstream, server: SocketAddr| {
        value(
            &m,
            "proxy_upstream_server_up",
            &[("upstream", upstream), ("server", &server.to_string())],
        )
    };
    assert_eq!(up("app", app.addr), Some(1.0));
    // The only server of its pool stays in rotation (there is nowhere else to go).
    assert_eq!(up("gone", gone), Some(1.0));
    assert_eq!(
        value(
            &m,
            "proxy_upstream_in_flight",
            &[("upstream", "app"), ("server", &app.addr.to_string())]
        ),
        Some(0.0)
    );
    held.abort();
}

#[tokio::test]
async fn a_server_taken_out_by_max_fails_shows_as_down() {
    let app = echo_upstream("app").await;
    let gone = refused_addr().await;
    let config = format!(
        r#"
admin = {{ addr = "127.0.0.1:0" }}

[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{gone}", "{app}"]
balance = "first"
max_fails = 1
fail_timeout = "1h"
"#,
        app = app.addr
    );
    let proxy = start(&config).await;
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(
        response.status().as_u16(),
        200,
        "retried on the live server"
    );
    let m = scrape(proxy.admin).await;
    let up = |server: SocketAddr| {
        value(
            &m,
            "proxy_upstream_server_up",
            &[("upstream", "app"), ("server", &server.to_string())],
        )
    };
    assert_eq!(up(gone), Some(0.0));
    assert_eq!(up(app.addr), Some(1.0));
    assert_eq!(
        value(
            &m,
            "proxy_upstream_errors_total",
            &[("upstream", "app"), ("kind", "connection_refused")]
        ),
        None,
        "a failed attempt that a retry saved is no failed request"
    );
}

/// Opens a keep-alive connection to the proxy and gets one answer on it.
async fn open_connection(proxy: SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"hi") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "the proxy closed the connection");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

#[tokio::test]
async fn open_connections_go_up_and_down_and_the_admin_listener_answers_health() {
    let config = r#"
admin = { addr = "127.0.0.1:0" }

[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [{ path = "/hello", exact = true, return = { status = 200, body = "hi" } }]
"#;
    let proxy = start(config).await;
    let gauge = |m: &Scrape| value(m, "proxy_open_connections", &[]);
    let total = |m: &Scrape| value(m, "proxy_connections_total", &[]);
    let m = scrape(proxy.admin).await;
    assert_eq!((gauge(&m), total(&m)), (Some(0.0), Some(0.0)));

    let first = open_connection(proxy.addr).await;
    let second = open_connection(proxy.addr).await;
    let m = scrape(proxy.admin).await;
    assert_eq!((gauge(&m), total(&m)), (Some(2.0), Some(2.0)));

    drop(first);
    drop(second);
    let mut open = None;
    for _ in 0..500 {
        open = gauge(&scrape(proxy.admin).await);
        if open == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, Some(0.0), "closed connections are no longer open");
    let m = scrape(proxy.admin).await;
    assert_eq!(total(&m), Some(2.0));

    assert_eq!(
        admin_get(proxy.admin, "/health").await,
        (200, "text/plain; charset=utf-8".into(), "ok\n".into())
    );
    let (status, _, body) = admin_get(proxy.admin, "/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "404 Not Found: the admin listener serves /metrics and /health\n"
    );
    // The proxy's own port does not serve the metrics.
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/metrics").await;
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn an_admin_port_that_is_taken_fails_at_bind() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = format!(
        r#"
admin = {{ addr = "127.0.0.1:{port}" }}

[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [{{ path = "/", return = {{ status = 200, body = "hi" }} }}]
"#
    );
    let config = Config::parse(&config, "test.toml").expect("valid config");
    let err = ProxyServer::bind(config)
        .await
        .expect_err("the admin port is taken");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot open the admin listener on 127.0.0.1:{port}: "
        )),
        "{message}"
    );
    assert!(
        message.ends_with("pick another port in `admin = { addr = ... }`"),
        "{message}"
    );
}

#[tokio::test]
async fn without_admin_there_is_no_admin_listener() {
    let config = r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [{ path = "/", return = { status = 200, body = "hi" } }]
"#;
    let config = Config::parse(config, "test.toml").expect("valid config");
    let server = ProxyServer::bind(config).await.expect("bind");
    assert_eq!(server.admin_addr(), None);
}

#[tokio::test]
async fn counters_and_the_admin_listener_survive_a_reload() {
    let app = echo_upstream("app").await;
    let config = |extra_route: &str| {
        let text = format!(
            r#"
admin = {{ addr = "127.0.0.1:0" }}

[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [
  {{ path = "/", upstream = "app" }},
  {extra_route}
]

[upstreams.app]
servers = ["{app}"]
"#,
            app = app.addr
        );
        Config::parse(&text, "test.toml").expect("valid config")
    };
    let server = ProxyServer::bind(config("")).await.expect("bind");
    let addr = server.local_addrs()[0];
    let admin = server.admin_addr().expect("admin");
    let handle = server.reload_handle();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = client();
    let (response, _) = get(&client, addr, "app.localhost", "/a").await;
    assert_eq!(response.status().as_u16(), 200);

    handle
        .reload(config(r#"{ path = "/new/", upstream = "app" },"#))
        .await
        .expect("the reload is applied");
    let (response, _) = get(&client, addr, "app.localhost", "/new/x").await;
    assert_eq!(response.status().as_u16(), 200);
    let (response, _) = get(&client, addr, "app.localhost", "/b").await;
    assert_eq!(response.status().as_u16(), 200);

    // Same admin address, counts from before the reload kept.
    let m = scrape(admin).await;
    assert_eq!(requests(&m, "/", "2xx"), Some(2.0));
    assert_eq!(requests(&m, "/new/", "2xx"), Some(1.0));
}
