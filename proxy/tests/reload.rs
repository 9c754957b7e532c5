//! Reloading a running proxy: a new configuration swapped in under load
//! without a failed request, listeners kept, opened and closed, and a reload
//! that cannot be done leaving the old configuration serving. And shutting it
//! down: requests in flight get `shutdown_timeout`, then are cut off.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use proxy::server::{ReloadError, ReloadHandle};
use proxy::{Config, ProxyServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config whose answers carry `x-config: NAME`, on `listeners`.
fn config(upstream: SocketAddr, name: &str, listeners: &[&str]) -> Config {
    let listen: String = listeners
        .iter()
        .map(|addr| format!("[[listen]]\naddr = \"{addr}\"\n"))
        .collect();
    let text = format!(
        r#"
{listen}
[[servers]]
server_names = ["app.localhost"]
response_headers = {{ set = {{ "X-Config" = "{name}" }} }}
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{upstream}"]
"#
    );
    Config::parse(&text, "test.toml").expect("valid config")
}

/// Starts a proxy for `config`; returns its addresses and its reload handle.
async fn start(config: Config) -> (Vec<SocketAddr>, ReloadHandle, Arc<proxy::Proxy>) {
    let server = ProxyServer::bind(config).await.expect("bind");
    let addrs = server.local_addrs();
    let handle = server.reload_handle();
    let proxy = server.proxy();
    tokio::spawn(server.run(std::future::pending()));
    (addrs, handle, proxy)
}

async fn config_name(addr: SocketAddr) -> String {
    let (response, _) = get(&client(), addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 200);
    response.headers()["x-config"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_drop_no_request() {
    let up = echo_upstream("app").await;
    let (addrs, handle, _) = start(config(up.addr, "a", &["127.0.0.1:0"])).await;
    let addr = addrs[0];

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // Half keep their connection, half open a new one per request.
            let mut pooled = client();
            while !stop.load(Ordering::SeqCst) {
                if i % 2 == 1 {
                    pooled = client();
                }
                let request = http::Request::get(format!("http://{addr}/n/{i}"))
                    .header("host", "app.localhost")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                match pooled.request(request).await {
                    Ok(response) if response.status() == 200 => {
                        use http_body_util::BodyExt;
                        match response.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }

    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let name = if round % 2 == 0 { "b" } else { "a" };
        let done = handle
            .reload(config(up.addr, name, &["127.0.0.1:0"]))
            .await
            .expect("the reload is taken");
        assert_eq!(done.kept, vec![addr], "the listener is not rebound");
        assert!(done.opened.is_empty() && done.closed.is_empty());
        assert_eq!(config_name(addr).await, name, "round {round}");
    }
    tokio::time::sleep(Duration::from_millis(25)).await;
    stop.store(true, Ordering::SeqCst);
    for task in clients {
        task.await.expect("client task");
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(failed, 0, "{failed} failed requests ({ok} succeeded)");
    assert!(ok > 100, "only {ok} requests ran across the reloads");
}

#[tokio::test]
async fn listeners_that_stay_keep_their_connections_new_ones_open_and_gone_ones_close() {
    let up = echo_upstream("app").await;
    let (addrs, handle, _) = start(config(up.addr, "a", &["127.0.0.1:0"])).await;
    let first = addrs[0];

    // A keep-alive connection opened before the reload...
    let mut conn = tokio::net::TcpStream::connect(first)
        .await
        .expect("connect");
    let request = b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n";
    conn.write_all(request).await.expect("write");
    let mut buffer = vec![0u8; 64 * 1024];
    let n = conn.read(&mut buffer).await.expect("read");
    assert!(String::from_utf8_lossy(&buffer[..n]).contains("x-config: a"));

    let done = handle
        .reload(config(up.addr, "b", &["127.0.0.1:0", "127.0.0.2:0"]))
        .await
        .expect("reload");
    assert_eq!(done.kept, vec![first]);
    assert_eq!(done.opened.len(), 1);
    let second = done.opened[0];
    assert_eq!(second.ip().to_string(), "127.0.0.2");

    // ...is still served, now with the new configuration.
    conn.write_all(request).await.expect("write");
    let n = conn.read(&mut buffer).await.expect("read");
    assert!(String::from_utf8_lossy(&buffer[..n]).contains("x-config: b"));
    assert_eq!(config_name(second).await, "b");

    let done = handle
        .reload(config(up.addr, "c", &["127.0.0.1:0"]))
        .await
        .expect("reload");
    assert_eq!((done.kept, done.closed), (vec![first], vec![second]));
    assert!(tokio::net::TcpStream::connect(second).await.is_err());
    assert_eq!(config_name(first).await, "c");
}

#[tokio::test]
async fn a_reload_that_cannot_open_its_listener_changes_nothing() {
    let up = echo_upstream("app").await;
    let (addrs, handle, _) = start(config(up.addr, "a", &["127.0.0.1:0"])).await;
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let err = handle
        .reload(config(up.addr, "b", &["127.0.0.1:0", &taken_addr]))
        .await
        .expect_err("the port is taken");
    assert!(matches!(err, ReloadError::Start(_)), "{err}");
    assert!(
        err.to_string().contains("another program uses this port"),
        "{err}"
    );
    assert_eq!(
        config_name(addrs[0]).await,
        "a",
        "the old configuration serves"
    );
}

#[tokio::test]
async fn what_did_not_change_is_kept_across_a_reload() {
    let up = echo_upstream("app").await;
    let other = echo_upstream("other").await;
    let (_, handle, proxy) = start(config(up.addr, "a", &["127.0.0.1:0"])).await;
    let before = proxy.snapshot();

    handle
        .reload(config(up.addr, "b", &["127.0.0.1:0"]))
        .await
        .expect("reload");
    let same = proxy.snapshot();
    assert!(
        Arc::ptr_eq(&before.upstreams[0], &same.upstreams[0]),
        "an unchanged upstream keeps its pool (health, idle connections)"
    );

    handle
        .reload(config(other.addr, "b", &["127.0.0.1:0"]))
        .await
        .expect("reload");
    let changed = proxy.snapshot();
    assert!(!Arc::ptr_eq(&before.upstreams[0], &changed.upstreams[0]));
}

#[tokio::test]
async fn an_open_tunnel_lives_through_reloads() {
    let (upstream, _, _) = raw_echo_upstream().await;
    let (addrs, handle, _) = start(config(upstream, "a", &["127.0.0.1:0"])).await;
    let (mut tunnel, head) = raw_upgrade(addrs[0], "/").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_through(&mut tunnel, b"before").await;
    for name in ["b", "c"] {
        handle
            .reload(config(upstream, name, &["127.0.0.1:0"]))
            .await
            .expect("reload");
        echo_through(&mut tunnel, name.as_bytes()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_requests_in_flight_up_to_shutdown_timeout() {
    let hang = raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        // Never answers; holds the connection open.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await;
    let text = format!(
        "shutdown_timeout = \"3s\"\n{}",
        single_upstream_config(&[hang], "read_timeout = \"1h\"")
    );
    let server = ProxyServer::bind(Config::parse(&text, "test.toml").expect("valid"))
        .await
        .expect("bind");
    let addr = server.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let request = tokio::spawn(async move {
        client()
            .get(format!("http://{addr}/").parse().expect("uri"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let began = tokio::time::Instant::now();
    stop.send(()).expect("stop");
    running.await.expect("the server stops");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "stopped after {took:?}, before shutdown_timeout"
    );
    assert!(took < Duration::from_secs(4), "stopped after {took:?}");
    assert!(
        request.await.expect("join").is_err(),
        "the hung request was cut off"
    );
}
