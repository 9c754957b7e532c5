//! Pools of several servers: passive health (nginx `max_fails` /
//! `fail_timeout`), retries on the next server (nginx `proxy_next_upstream`)
//! and the balancers, through the real proxy over loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

/// Sends `n` GETs and returns their statuses.
async fn statuses(proxy: &TestProxy, n: usize) -> Vec<u16> {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        let (response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
        seen.push(response.status().as_u16());
    }
    seen
}

/// The `x-upstream` names of `n` GETs' answers (`-` for a failure).
async fn served_by(proxy: &TestProxy, n: usize, header: Option<(&str, &str)>) -> Vec<String> {
    let client = client();
    let mut names = Vec::new();
    for _ in 0..n {
        let mut request =
            http::Request::get(format!("http://{}/", proxy.addr)).header("host", "app.localhost");
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let (response, _) = send(
            &client,
            request.body(Full::new(Bytes::new())).expect("request"),
        )
        .await;
        names.push(
            response
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned(),
        );
    }
    names
}

/// An upstream that reads the request head, then closes without answering:
/// the request reached it, so only idempotent requests may be retried.
async fn hang_up_upstream() -> std::net::SocketAddr {
    raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        drop(stream);
    })
    .await
}

/// An upstream that answers every request with `status`.
async fn status_upstream(status: u16) -> std::net::SocketAddr {
    raw_upstream(move |mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(
                format!("HTTP/1.1 {status} Oops\r\ncontent-length: 0\r\nx-upstream: status-{status}\r\n\r\n")
                    .as_bytes(),
            )
            .await;
    })
    .await
}

fn proxy_status(response: &http::Response<()>) -> String {
    response
        .headers()
        .get("proxy-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn with_the_default_retries_a_dead_server_costs_no_client_an_error() {
    // nginx's defaults: proxy_next_upstream error timeout; max_fails=1.
    let alive = echo_upstream("whoami-1").await;
    let dead = refused_addr().await;
    let proxy = start_proxy(&single_upstream_config(&[dead, alive.addr], "")).await;
    assert_eq!(statuses(&proxy, 6).await, [200; 6]);
    assert_eq!(alive.completed.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn a_failing_server_is_taken_out_for_fail_timeout_then_tried_again() {
    // Retries off, to see each attempt: max_fails=1 takes the dead server out
    // after its first failure; fail_timeout later it gets one request again.
    let alive = echo_upstream("whoami-1").await;
    let dead = refused_addr().await;
    let proxy = start_proxy(&single_upstream_config(
        &[dead, alive.addr],
        "next_upstream = [\"off\"]\nmax_fails = 1\nfail_timeout = \"10s\"",
    ))
    .await;
    assert_eq!(statuses(&proxy, 5).await, [502, 200, 200, 200, 200]);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        statuses(&proxy, 3).await,
        [200, 200, 200],
        "still out at 9 s"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = statuses(&proxy, 4).await;
    assert_eq!(
        after.iter().filter(|&&s| s == 502).count(),
        1,
        "one probe after fail_timeout, then out again: {after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_fails_counts_failures_within_fail_timeout() {
    // max_fails=2: a second failure within 10 s takes the server out. Retries
    // are off, so every other request goes to the dead server until then.
    let alive = echo_upstream("whoami-1").await;
    let dead = refused_addr().await;
    let proxy = start_proxy(&single_upstream_config(
        &[dead, alive.addr],
        "next_upstream = [\"off\"]\nmax_fails = 2\nfail_timeout = \"10s\"",
    ))
    .await;
    assert_eq!(statuses(&proxy, 6).await, [502, 200, 502, 200, 200, 200]);
}

#[tokio::test]
async fn when_every_server_is_down_the_answer_is_an_immediate_502_saying_so() {
    let proxy = start_proxy(&single_upstream_config(
        &[refused_addr().await, refused_addr().await],
        "",
    ))
    .await;
    let client = client();
    // The first request tries both servers and reports the last failure.
    let (first, _) = get(&client, proxy.addr, "app.localhost", "/").await;
    assert_eq!(first.status(), 502);
    assert!(proxy_status(&first).contains("error=connection_refused"));
    // Both are now out: the next request is refused without any attempt.
    let (second, body) = get(&client, proxy.addr, "app.localhost", "/").await;
    assert_eq!(second.status(), 502);
    assert_eq!(
        proxy_status(&second),
        "proxy-lab; error=destination_unavailable; details=\"upstream app\""
    );
    assert_eq!(
        body,
        "502 Bad Gateway: no server of the upstream is up (app)\n"
    );
}

#[tokio::test]
async fn the_only_server_of_a_pool_is_never_taken_out() {
    // nginx ignores max_fails for a single server: there is nowhere else to go.
    let dead = refused_addr().await;
    let proxy = start_proxy(&single_upstream_config(&[dead], "")).await;
    let client = client();
    for _ in 0..3 {
        let (response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
        assert!(proxy_status(&response).contains("error=connection_refused"));
    }
}

#[tokio::test]
async fn a_get_that_reached_a_server_which_hung_up_is_retried_a_post_is_not() {
    let hangs_up = hang_up_upstream().await;
    let alive = echo_upstream("whoami-1").await;
    // max_fails = 0 keeps the first server in rotation, so every request
    // starts there (smooth round-robin resumes at it every second pick).
    let config = single_upstream_config(&[hangs_up, alive.addr], "max_fails = 0");
    let proxy = start_proxy(&config).await;
    let client = client();
    let post = |body: &'static str| {
        http::Request::post(format!("http://{}/", proxy.addr))
            .header("host", "app.localhost")
            .body(Full::new(Bytes::from(body)))
            .expect("request")
    };
    let (get_response, _) = get(&client, proxy.addr, "app.localhost", "/").await;
    assert_eq!(get_response.status(), 200, "GET went on to the next server");
    // Round-robin now points at the second server; one GET moves it back.
    let _ = get(&client, proxy.addr, "app.localhost", "/").await;
    let (post_response, _) = send(&client, post("order=1")).await;
    assert_eq!(post_response.status(), 502, "a POST is never sent twice");
    assert!(proxy_status(&post_response).contains("error=connection_terminated"));
}

#[tokio::test]
async fn non_idempotent_lets_a_post_go_on_and_its_body_arrives_whole() {
    let hangs_up = hang_up_upstream().await;
    let alive = echo_upstream("whoami-1").await;
    let config = single_upstream_config(
        &[hangs_up, alive.addr],
        "max_fails = 0\nnext_upstream = [\"error\", \"timeout\", \"non_idempotent\"]",
    );
    let proxy = start_proxy(&config).await;
    let request = http::Request::post(format!("http://{}/", proxy.addr))
        .header("host", "app.localhost")
        .body(Full::new(Bytes::from("order=1")))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)["body_bytes"], 7);
    assert_eq!(json(&body)["method"], "POST");
}

#[tokio::test]
async fn a_post_to_a_server_that_refused_the_connection_is_retried() {
    // The request never left the proxy, so sending it elsewhere is safe.
    let alive = echo_upstream("whoami-1").await;
    let proxy = start_proxy(&single_upstream_config(
        &[refused_addr().await, alive.addr],
        "",
    ))
    .await;
    let request = http::Request::post(format!("http://{}/", proxy.addr))
        .header("host", "app.localhost")
        .body(Full::new(Bytes::from("order=2")))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)["body_bytes"], 7);
}

#[tokio::test]
async fn listed_statuses_go_on_to_the_next_server_unlisted_ones_are_passed_through() {
    let unavailable = status_upstream(503).await;
    let alive = echo_upstream("whoami-1").await;
    let retrying = start_proxy(&single_upstream_config(
        &[unavailable, alive.addr],
        "max_fails = 0\nnext_upstream = [\"error\", \"timeout\", \"http_503\"]",
    ))
    .await;
    assert_eq!(statuses(&retrying, 4).await, [200; 4]);
    let passing = start_proxy(&single_upstream_config(
        &[unavailable, alive.addr],
        "max_fails = 0",
    ))
    .await;
    assert_eq!(statuses(&passing, 4).await, [503, 200, 503, 200]);
}

#[tokio::test]
async fn next_upstream_tries_bounds_the_attempts() {
    let dead: Vec<_> = futures_join(3).await;
    let alive = echo_upstream("whoami-1").await;
    let mut servers = dead.clone();
    servers.push(alive.addr);
    let proxy = start_proxy(&single_upstream_config(
        &servers,
        "max_fails = 0\nnext_upstream_tries = 2",
    ))
    .await;
    // First pick is dead-0, then dead-1: two tries, both failed.
    assert_eq!(statuses(&proxy, 1).await, [502]);
}

async fn futures_join(n: usize) -> Vec<std::net::SocketAddr> {
    let mut addrs = Vec::new();
    for _ in 0..n {
        addrs.push(refused_addr().await);
    }
    addrs
}

#[tokio::test]
async fn weighted_round_robin_spreads_each_servers_share() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let config = single_upstream_config(&[], "").replace(
        "servers = []",
        &format!("servers = [\"{} weight=2\", \"{}\"]", a.addr, b.addr),
    );
    let proxy = start_proxy(&config).await;
    assert_eq!(served_by(&proxy, 6, None).await.concat(), "abaaba");
}

#[tokio::test]
async fn hash_on_a_header_keeps_each_user_on_one_server() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let c = echo_upstream("c").await;
    let proxy = start_proxy(&single_upstream_config(
        &[a.addr, b.addr, c.addr],
        "balance = \"hash\"\nhash_key = \"header:x-user\"",
    ))
    .await;
    // The servers' scores come from their addresses, and the ports are the
    // ones the system gave: which user lands where changes from run to run.
    // So count only what holds every run. Each user has one home; with 60
    // users, each home taking about a third, the chance that some server
    // gets none is 3 * (2/3)^60, under one in ten billion (six users, as
    // this test once had, all landed on one server one run in 243).
    let mut homes = std::collections::BTreeSet::new();
    for n in 0..60 {
        let user = format!("user-{n}");
        let seen = served_by(&proxy, 3, Some(("x-user", &user))).await;
        assert!(seen.iter().all(|s| *s == seen[0]), "{user}: {seen:?}");
        homes.insert(seen[0].clone());
    }
    assert_eq!(homes.len(), 3, "60 users, not on every server: {homes:?}");
}

#[tokio::test]
async fn first_sends_everything_to_the_first_server_that_is_up() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let proxy = start_proxy(&single_upstream_config(
        &[refused_addr().await, a.addr, b.addr],
        "balance = \"first\"",
    ))
    .await;
    assert_eq!(served_by(&proxy, 4, None).await.concat(), "aaaa");
}

/// An upstream named `name` whose `/health` answers 200 while `healthy` is
/// set and 500 otherwise; other paths answer 200 with `x-upstream: NAME`.
async fn upstream_with_health(
    name: &'static str,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    raw_upstream(move |mut stream| {
        let healthy = healthy.clone();
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let status = if head.starts_with(b"GET /health ") && !healthy.load(Ordering::SeqCst) {
                500
            } else {
                200
            };
            let _ = stream
                .write_all(
                    format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\nx-upstream: {name}\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn active_checks_take_a_server_out_after_fall_failures_and_back_after_rise_successes() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let a = upstream_with_health("a", healthy.clone()).await;
    let b = echo_upstream("b").await;
    // Only the checks decide here: no retries, no passive health.
    let config = format!(
        "{}\n[upstreams.app.health_check]\npath = \"/health\"\ninterval = \"2s\"\ntimeout = \"1s\"\nfall = 2\nrise = 3\n",
        single_upstream_config(&[a, b.addr], "next_upstream = [\"off\"]\nmax_fails = 0")
    );
    let proxy = start_proxy(&config).await;
    assert_eq!(served_by(&proxy, 4, None).await.concat(), "abab");

    healthy.store(false, Ordering::SeqCst);
    // One failed check is not enough (fall = 2)...
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(served_by(&proxy, 2, None).await.concat(), "ab");
    // ...the second takes `a` out, with no request needed to notice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(served_by(&proxy, 4, None).await.concat(), "bbbb");

    healthy.store(true, Ordering::SeqCst);
    // rise = 3: two good checks leave it out, the third brings it back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(served_by(&proxy, 2, None).await.concat(), "bb");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = served_by(&proxy, 4, None).await.concat();
    assert_eq!(back.matches('a').count(), 2, "{back}");
}

#[tokio::test(start_paused = true)]
async fn servers_given_by_name_follow_dns_as_replicas_come_and_go() {
    // Like `docker compose up --scale api=N`: one name, one address per
    // replica. Three replicas share a port on three loopback addresses.
    let first = echo_upstream("one").await;
    let port = first.addr.port();
    let at = |ip: &str| format!("{ip}:{port}").parse().expect("addr");
    let second = echo_upstream_at("two", at("127.0.0.2")).await;
    let third = echo_upstream_at("three", at("127.0.0.3")).await;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");

    let dns = proxy::upstream::resolve::Resolver::table();
    dns.set("api.test", &[ip("127.0.0.1")]);
    let config = single_upstream_config(&[], "resolve_interval = \"5s\"\nmax_fails = 0")
        .replace("servers = []", &format!("servers = [\"api.test:{port}\"]"));
    let proxy = start_proxy_with_resolver(&config, dns.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served_by(&proxy, 3, None).await, ["one"; 3]);

    // Scaled up to three: seen within one resolve_interval.
    dns.set(
        "api.test",
        &[ip("127.0.0.3"), ip("127.0.0.1"), ip("127.0.0.2")],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_by(&proxy, 3, None).await, ["one", "two", "three"]);

    // A lookup that fails keeps the last known set.
    dns.set("api.test", &[]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut seen = served_by(&proxy, 3, None).await;
    seen.sort();
    assert_eq!(seen, ["one", "three", "two"]);

    // Scaled down to one.
    dns.set("api.test", &[ip("127.0.0.2")]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_by(&proxy, 3, None).await, ["two"; 3]);
    drop((first, second, third));
}

#[tokio::test]
async fn the_host_header_is_the_configured_name_not_the_address_connected_to() {
    let up = echo_upstream("one").await;
    let port = up.addr.port();
    let dns = proxy::upstream::resolve::Resolver::table();
    dns.set("api.test", &["127.0.0.1".parse().expect("ip")]);
    // preserve_host = false: nginx's default `Host $proxy_host`.
    let config = single_upstream_config(&[], "")
        .replace("servers = []", &format!("servers = [\"api.test:{port}\"]"))
        .replace(
            "upstream = \"app\" }",
            "upstream = \"app\", preserve_host = false }",
        );
    let proxy = start_proxy_with_resolver(&config, dns).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, body) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(
        seen_header(&json(&body), "host"),
        Some(format!("api.test:{port}").as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn next_upstream_timeout_stops_going_on_once_the_time_budget_is_spent() {
    // Each silent server costs read_timeout (5 s). With a 7 s budget the
    // second try starts at 5 s (allowed) and none starts at 10 s.
    let servers = [
        silent_upstream().await,
        silent_upstream().await,
        echo_upstream("whoami-1").await.addr,
    ];
    let budget = start_proxy(&single_upstream_config(
        &servers,
        "max_fails = 0\nread_timeout = \"5s\"\nnext_upstream_timeout = \"7s\"",
    ))
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(statuses(&budget, 1).await, [504]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );
    let unlimited = start_proxy(&single_upstream_config(
        &servers,
        "max_fails = 0\nread_timeout = \"5s\"",
    ))
    .await;
    assert_eq!(
        statuses(&unlimited, 1).await,
        [200],
        "the third server answers"
    );
}

#[tokio::test]
async fn a_body_too_large_to_keep_for_a_retry_gets_a_single_attempt() {
    // Bodies up to 64 KiB are kept in memory so they can be sent again; a
    // larger one streams straight through, so it cannot go on elsewhere.
    let alive = echo_upstream("whoami-1").await;
    let proxy = start_proxy(&single_upstream_config(
        &[refused_addr().await, alive.addr],
        "max_fails = 0",
    ))
    .await;
    let upload = |size: usize| {
        http::Request::put(format!("http://{}/", proxy.addr))
            .header("host", "app.localhost")
            .body(Full::new(Bytes::from(vec![b'x'; size])))
            .expect("request")
    };
    let client = client();
    let (small, body) = send(&client, upload(64 * 1024)).await;
    assert_eq!(small.status(), 200);
    assert_eq!(json(&body)["body_bytes"], 64 * 1024);
    // Round-robin is back at the refused server for the next request.
    let _ = get(&client, proxy.addr, "app.localhost", "/").await;
    let (large, _) = send(&client, upload(64 * 1024 + 1)).await;
    assert_eq!(large.status(), 502);
}
