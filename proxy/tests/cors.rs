//! CORS at the proxy: preflights answered without the upstream, answers
//! marked for allowed origins only, and config mistakes refused.

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

const CORS: &str = r#"cors = { allow_origins = ["http://app.localhost:8080"], allow_methods = ["DELETE"], allow_headers = ["content-type"], expose_headers = ["x-upstream"], max_age = "10m" }"#;

fn config(upstream: std::net::SocketAddr) -> String {
    single_upstream_config(&[upstream], "").replace(
        "routes = [{ path = \"/\", upstream = \"app\" }]",
        &format!("{CORS}\nroutes = [{{ path = \"/\", upstream = \"app\" }}]"),
    )
}

fn request(
    method: &str,
    proxy: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{proxy}/tasks"))
        .header("host", "app.localhost");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test]
async fn a_preflight_is_answered_by_the_proxy_and_never_reaches_the_upstream() {
    let up = echo_upstream("api").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let (ok, _) = send(
        &client,
        request(
            "OPTIONS",
            proxy.addr,
            &[
                ("origin", "http://app.localhost:8080"),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "Content-Type"),
            ],
        ),
    )
    .await;
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://app.localhost:8080"
    );
    assert_eq!(ok.headers()["access-control-allow-methods"], "DELETE");
    assert_eq!(ok.headers()["access-control-max-age"], "600");
    let (refused, body) = send(
        &client,
        request(
            "OPTIONS",
            proxy.addr,
            &[
                ("origin", "http://evil.example"),
                ("access-control-request-method", "DELETE"),
            ],
        ),
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        body,
        "403 Forbidden: CORS preflight refused: origin http://evil.example is not in allow_origins\n"
    );
    assert_eq!(
        up.completed.load(Ordering::SeqCst),
        0,
        "no preflight went upstream"
    );
}

#[tokio::test]
async fn answers_carry_cors_headers_for_allowed_origins_only() {
    let up = echo_upstream("api").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let (allowed, _) = send(
        &client,
        request(
            "GET",
            proxy.addr,
            &[("origin", "http://app.localhost:8080")],
        ),
    )
    .await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.localhost:8080"
    );
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "x-upstream"
    );
    assert_eq!(allowed.headers()["vary"], "origin");
    let (other, _) = send(
        &client,
        request("GET", proxy.addr, &[("origin", "http://evil.example")]),
    )
    .await;
    assert_eq!(
        other.status(),
        200,
        "CORS protects browsers; the answer itself is served"
    );
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let (plain, _) = send(&client, request("GET", proxy.addr, &[])).await;
    assert!(!plain.headers().contains_key("access-control-allow-origin"));
    assert_eq!(up.completed.load(Ordering::SeqCst), 3);
}

#[test]
fn cors_mistakes_are_config_errors() {
    for (cors, expected) in [
        (
            r#"cors = { allow_origins = ["*"], allow_credentials = true }"#,
            "`allow_credentials` cannot go with allow_origins = [\"*\"]",
        ),
        (
            r#"cors = { allow_origins = ["app.localhost"] }"#,
            "`app.localhost` is not an origin",
        ),
        (
            r#"cors = { allow_origins = ["http://a.localhost/path"] }"#,
            "`http://a.localhost/path` is not an origin",
        ),
        (
            r#"cors = { allow_origins = [] }"#,
            "`cors` allows no origin",
        ),
    ] {
        let text = single_upstream_config(&["127.0.0.1:9".parse().expect("addr")], "").replace(
            "routes = [{ path = \"/\", upstream = \"app\" }]",
            &format!("{cors}\nroutes = [{{ path = \"/\", upstream = \"app\" }}]"),
        );
        let errors = proxy::Config::parse(&text, "t.toml")
            .expect_err("invalid")
            .to_string();
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
}
