//! Header rules, the request id and trace context, over real loopback: what
//! the upstream receives and what the client gets back.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

/// One server with its own header rules and two routes, `/api/` with more.
fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
request_headers = {{ set = {{ "X-Env" = "lab", "X-Client" = "$remote_addr via $scheme://$host" }}, remove = ["X-Debug"] }}
response_headers = {{ set = {{ "X-Frame-Options" = "DENY" }}, remove = ["X-Upstream"] }}

[[servers.routes]]
path = "/"
upstream = "app"

[[servers.routes]]
path = "/api/"
upstream = "app"
request_headers = {{ add = {{ "X-Env" = "api" }}, set = {{ "X-Original-Uri" = "$request_uri", "X-Id-Copy" = "$request_id" }} }}
response_headers = {{ add = {{ "Access-Control-Allow-Origin" = "*" }} }}

[[servers.routes]]
path = "/gone"
exact = true
return = {{ status = 410, body = "gone" }}

[upstreams.app]
servers = ["{upstream}"]
"#
    )
}

fn get_with(
    proxy: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut builder =
        http::Request::get(format!("http://{proxy}{path}")).header("host", "App.localhost:8080");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

fn seen_all<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| pair[0] == name)
        .filter_map(|pair| pair[1].as_str())
        .collect()
}

#[tokio::test]
async fn server_rules_then_route_rules_change_what_the_upstream_sees() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();

    let (response, body) = send(
        &client,
        get_with(proxy.addr, "/page", &[("x-debug", "1"), ("x-env", "prod")]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let echo = json(&body);
    assert_eq!(
        seen_all(&echo, "x-env"),
        ["lab"],
        "set replaces the client's value"
    );
    assert_eq!(
        seen_header(&echo, "x-client"),
        Some("127.0.0.1 via http://app.localhost")
    );
    assert_eq!(seen_header(&echo, "x-debug"), None, "removed");
    assert_eq!(
        seen_header(&echo, "x-original-uri"),
        None,
        "only /api/ sets it"
    );

    let (_, body) = send(&client, get_with(proxy.addr, "/api/tasks?done=1", &[])).await;
    let echo = json(&body);
    assert_eq!(
        seen_all(&echo, "x-env"),
        ["lab", "api"],
        "the route adds after its server sets"
    );
    assert_eq!(
        seen_header(&echo, "x-original-uri"),
        Some("/api/tasks?done=1")
    );
    assert_eq!(
        seen_header(&echo, "x-id-copy"),
        seen_header(&echo, "x-request-id")
    );
}

#[tokio::test]
async fn response_rules_apply_to_every_answer_even_the_proxys_own() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();

    let (response, _) = send(&client, get_with(proxy.addr, "/api/x", &[])).await;
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(response.headers().get("x-upstream").is_none(), "removed");

    let (response, _) = send(&client, get_with(proxy.addr, "/", &[])).await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "a route rule stays on its route"
    );

    let (gone, body) = send(&client, get_with(proxy.addr, "/gone", &[])).await;
    assert_eq!((gone.status().as_u16(), &body[..]), (410, &b"gone"[..]));
    assert_eq!(gone.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn every_request_gets_an_id_that_the_upstream_and_the_client_both_see() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();

    let (first, body) = send(&client, get_with(proxy.addr, "/", &[])).await;
    let echo = json(&body);
    let id = first.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(seen_header(&echo, "x-request-id"), Some(id.as_str()));
    // A new trace, whose id names the request.
    let traceparent = seen_header(&echo, "traceparent").expect("traceparent sent upstream");
    assert!(
        traceparent.starts_with(&format!("00-{id}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-00"), "{traceparent}");

    let (second, _) = send(&client, get_with(proxy.addr, "/", &[])).await;
    assert_ne!(second.headers()["x-request-id"], id.as_str());

    // A client's own id is kept, everywhere.
    let (kept, body) = send(
        &client,
        get_with(proxy.addr, "/", &[("x-request-id", "checkout-42")]),
    )
    .await;
    assert_eq!(kept.headers()["x-request-id"], "checkout-42");
    assert_eq!(
        seen_header(&json(&body), "x-request-id"),
        Some("checkout-42")
    );

    // Unusable ids are replaced.
    let (replaced, _) = send(
        &client,
        get_with(proxy.addr, "/", &[("x-request-id", "two words")]),
    )
    .await;
    assert_eq!(replaced.headers()["x-request-id"].len(), 32);

    // The proxy's own answers carry it too.
    let (gone, _) = send(&client, get_with(proxy.addr, "/gone", &[])).await;
    assert_eq!(gone.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn a_clients_trace_continues_with_the_proxy_as_the_parent() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, body) = send(
        &client(),
        get_with(
            proxy.addr,
            "/",
            &[
                ("traceparent", incoming),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        ),
    )
    .await;
    let echo = json(&body);
    let sent = seen_header(&echo, "traceparent").expect("traceparent");
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(
        fields[2], "00f067aa0ba902b7",
        "the proxy's own span is the parent"
    );
    assert_eq!(fields[3], "01", "sampled stays sampled");
    assert_eq!(seen_header(&echo, "tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(
        seen_header(&echo, "x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[tokio::test]
async fn the_request_id_header_can_be_renamed() {
    let up = echo_upstream("app").await;
    let text = format!(
        "request_id_header = \"X-Correlation-Id\"\n{}",
        single_upstream_config(&[up.addr], "")
    );
    let proxy = start_proxy(&text).await;
    let (response, body) = send(
        &client(),
        get_with(proxy.addr, "/", &[("x-correlation-id", "abc")]),
    )
    .await;
    assert_eq!(response.headers()["x-correlation-id"], "abc");
    assert!(response.headers().get("x-request-id").is_none());
    assert_eq!(seen_header(&json(&body), "x-correlation-id"), Some("abc"));
}

#[test]
fn bad_rules_are_refused_with_where_and_how() {
    let base = single_upstream_config(&["127.0.0.1:1".parse().expect("addr")], "");
    let with = |server_extra: &str| {
        base.replace(
            "routes = [{ path = \"/\", upstream = \"app\" }]",
            &format!("{server_extra}\nroutes = [{{ path = \"/\", upstream = \"app\" }}]"),
        )
    };
    let cases = [
        (
            r#"request_headers = { set = { "X-Who" = "$remote_ip" } }"#,
            "unknown variable `$remote_ip`",
            "$remote_addr",
        ),
        (
            r#"response_headers = { set = { "Content-Length" = "0" } }"#,
            "`content-length` belongs to the connection",
            "remove this rule",
        ),
        (
            r#"request_headers = { remove = ["bad header"] }"#,
            "`bad header` is not a header name",
            "letters, digits",
        ),
        (
            r#"request_headers = { sett = { "X" = "1" } }"#,
            "unknown field `sett`",
            "",
        ),
    ];
    for (extra, message, help) in cases {
        assert_refused(&with(extra), message, help);
    }
}
