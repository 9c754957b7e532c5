//! Who the client is (trusted proxies) and whether it may come in (allow/deny).

mod common;

use common::*;

fn config(up: std::net::SocketAddr, trusted: &str) -> String {
    format!(
        r#"
{trusted}

[[listen]]
addr = "127.0.0.1:0"

[[servers]]
access = ["deny 203.0.113.0/24", "allow all"]
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/admin/", upstream = "app", access = ["allow 127.0.0.1", "deny all"] }},
]

[upstreams.app]
servers = ["{up}"]
"#
    )
}

async fn get_as(
    proxy: std::net::SocketAddr,
    path: &str,
    forwarded_for: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request =
        http::Request::get(format!("http://{proxy}{path}")).header("host", "app.localhost");
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    let echo = serde_json::from_slice(&body).unwrap_or_default();
    (response.status().as_u16(), echo)
}

#[tokio::test]
async fn from_a_trusted_proxy_the_forwarded_client_is_the_client() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr, "trusted_proxies = [\"127.0.0.1\"]")).await;

    let (status, _) = get_as(proxy.addr, "/", Some("203.0.113.7")).await;
    assert_eq!(status, 403, "the forwarded client is in a denied network");

    let (status, echo) = get_as(proxy.addr, "/", Some("198.51.100.1")).await;
    assert_eq!(status, 200);
    assert_eq!(seen_header(&echo, "x-real-ip"), Some("198.51.100.1"));
    // This hop appends its own TCP peer, as every proxy in a chain does.
    assert_eq!(
        seen_header(&echo, "x-forwarded-for"),
        Some("198.51.100.1, 127.0.0.1")
    );

    // /admin/ lets in 127.0.0.1 only: the proxy in front itself, not its clients.
    assert_eq!(
        get_as(proxy.addr, "/admin/", Some("198.51.100.1")).await.0,
        403
    );
    assert_eq!(get_as(proxy.addr, "/admin/", None).await.0, 200);
}

#[tokio::test]
async fn by_default_a_clients_x_forwarded_for_is_not_believed() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr, "")).await;
    // A client claiming to be someone else is still judged by its own address.
    let (status, echo) = get_as(proxy.addr, "/", Some("203.0.113.7")).await;
    assert_eq!(status, 200);
    assert_eq!(seen_header(&echo, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(
        get_as(proxy.addr, "/admin/", Some("198.51.100.1")).await.0,
        200
    );
}

#[test]
fn bad_access_rules_and_networks_are_config_errors() {
    let bad = "trusted_proxies = [\"10.0.0.0/33\"]\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\naccess = [\"permit all\"]\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    let errors = match proxy::Config::parse(bad, "proxy.toml") {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        errors.contains("`10.0.0.0/33` is not an address, a CIDR block or `all`"),
        "{errors}"
    );
    assert!(
        errors.contains("does not start with `allow` or `deny`"),
        "{errors}"
    );
}

#[tokio::test]
async fn basic_auth_asks_for_a_password_and_lets_the_right_one_in() {
    use base64::Engine as _;
    let up = echo_upstream("app").await;
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let config = format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
routes = [
  {{ path = "/", upstream = "app" }},
  {{ path = "/private/", upstream = "app", basic_auth = {{ realm = "lab admin", users = {{ alice = "{hash}" }} }} }},
]

[upstreams.app]
servers = ["{}"]
"#,
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let with_auth = |creds: Option<&str>| {
        let mut request = http::Request::get(format!("http://{}/private/x", proxy.addr))
            .header("host", "app.localhost");
        if let Some(creds) = creds {
            let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
            request = request.header("authorization", format!("Basic {encoded}"));
        }
        request
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    let client = client();
    let (response, _) = send(&client, with_auth(None)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"lab admin\""
    );
    assert_eq!(
        send(&client, with_auth(Some("alice:wrong")))
            .await
            .0
            .status(),
        401
    );
    assert_eq!(
        send(&client, with_auth(Some("alice:s3cret")))
            .await
            .0
            .status(),
        200
    );
    // Other routes are open.
    assert_eq!(
        get(&client, proxy.addr, "app.localhost", "/open")
            .await
            .0
            .status(),
        200
    );
}

#[test]
fn a_plain_text_password_in_the_config_is_refused() {
    let text = "[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nbasic_auth = { users = { alice = \"hunter2\" } }\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    let errors = match proxy::Config::parse(text, "proxy.toml") {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        errors.contains("the password of `alice` is not a bcrypt hash"),
        "{errors}"
    );
    assert!(errors.contains("proxy hash-password"), "{errors}");
}

#[test]
fn hash_password_prints_a_hash_that_verifies() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["hash-password", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run proxy hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse\n")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(proxy::access::is_bcrypt_hash(&hash), "{hash}");
    assert!(bcrypt::verify("correct horse", &hash).expect("verify"));
}
