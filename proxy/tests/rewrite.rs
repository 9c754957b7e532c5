//! URL rewriting over real loopback: regex rewrites on servers (before
//! routing) and routes (after it), redirects, and nginx's slash redirect.

mod common;

use common::*;

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
rewrite = [
  {{ from = '^/old/(.*)$', to = "/new/$1" }},
  {{ from = '^/blog/(\d+)$', to = "/posts/${{1}}", redirect = 301 }},
  {{ from = '^/elsewhere/(.*)$', to = "https://example.com/$1", redirect = 302 }},
]

[[servers.routes]]
path = "/new/"
upstream = "app"

[[servers.routes]]
path = "/"
return = {{ status = 404, body = "not here" }}

[[servers.routes]]
path = "/users/"
upstream = "app"
rewrite = [{{ from = '^/users/(?P<name>[a-z]+)/?$', to = "/profile?user=$name" }}]

[[servers.routes]]
path = "/app/"
upstream = "app"
slash_redirect = true

[[servers.routes]]
path = "/docs/"
upstream = "app"
slash_redirect = true

[[servers.routes]]
path = "/docs"
exact = true
return = {{ status = 200, body = "the docs' own page" }}

[upstreams.app]
servers = ["{upstream}"]
"#
    )
}

fn uri_seen(body: &bytes::Bytes) -> String {
    json(body)["uri"].as_str().expect("uri").to_owned()
}

#[tokio::test]
async fn a_server_rewrite_changes_the_path_before_routing() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    // /old/ has no route of its own: after the rewrite, /new/ serves it.
    let (response, body) = get(&client, proxy.addr, "app.localhost", "/old/a/b?x=1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(uri_seen(&body), "/new/a/b?x=1");
    // Paths that no rule matches are routed as they are.
    let (response, body) = get(&client, proxy.addr, "app.localhost", "/older").await;
    assert_eq!(response.status(), 404);
    assert_eq!(&body[..], b"not here");
}

#[tokio::test]
async fn a_route_rewrite_changes_what_the_route_sends_upstream() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let (response, body) = get(&client, proxy.addr, "app.localhost", "/users/ana?tab=2").await;
    assert_eq!(response.status(), 200);
    assert_eq!(uri_seen(&body), "/profile?user=ana&tab=2");
    // No match: the path goes as it came.
    let (_, body) = get(&client, proxy.addr, "app.localhost", "/users/Ana/x").await;
    assert_eq!(uri_seen(&body), "/users/Ana/x");
}

#[tokio::test]
async fn a_redirect_rule_answers_at_the_proxy() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let (response, _) = get(&client, proxy.addr, "app.localhost", "/blog/42?ref=home").await;
    assert_eq!(response.status(), 301);
    assert_eq!(response.headers()["location"], "/posts/42?ref=home");
    let (response, _) = get(&client, proxy.addr, "app.localhost", "/elsewhere/x").await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://example.com/x");
    assert_eq!(up.completed.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_folder_without_its_slash_is_redirected_like_nginx() {
    let up = echo_upstream("app").await;
    let proxy = start_proxy(&config(up.addr)).await;
    let client = client();
    let (response, _) = get(&client, proxy.addr, "app.localhost", "/app?x=1").await;
    assert_eq!(response.status(), 301);
    assert_eq!(response.headers()["location"], "/app/?x=1");
    // With the slash, the route serves it.
    let (response, body) = get(&client, proxy.addr, "app.localhost", "/app/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(uri_seen(&body), "/app/");
    // Only the exact folder name: /application is not /app/.
    let (response, _) = get(&client, proxy.addr, "app.localhost", "/application").await;
    assert_eq!(response.status(), 404);
    // An exact route for the slashless path wins, as in nginx.
    let (response, body) = get(&client, proxy.addr, "app.localhost", "/docs").await;
    assert_eq!(response.status(), 200);
    assert_eq!(&body[..], b"the docs' own page");
}

#[test]
fn bad_rewrites_are_refused_with_where_and_how() {
    let up: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let base = single_upstream_config(&[up], "");
    let with_route = |route: &str| {
        base.replace(
            "routes = [{ path = \"/\", upstream = \"app\" }]",
            &format!("routes = [{route}]"),
        )
    };
    let cases = [
        (
            r#"{ path = "/", upstream = "app", rewrite = [{ from = "^/(a", to = "/$1" }] }"#,
            "`from` is not a valid regular expression",
            "regex",
        ),
        (
            r#"{ path = "/", upstream = "app", rewrite = [{ from = "^/(a)", to = "/$2" }] }"#,
            "`$2` in `/$2` names no group of `from`",
            "`from` has 1 group",
        ),
        (
            r#"{ path = "/", upstream = "app", rewrite = [{ from = "^/(a)", to = "/$1x" }] }"#,
            "names no group",
            "write `${1}x`",
        ),
        (
            r#"{ path = "/", upstream = "app", rewrite = [{ from = "^/a", to = "/b", redirect = 200 }] }"#,
            "`redirect = 200` is not a redirect status",
            "301",
        ),
        (
            r#"{ path = "/", upstream = "app", rewrite = [{ from = "^/a", to = "https://x.example/" }] }"#,
            "must be a path starting with `/`",
            "needs `redirect = 301`",
        ),
        (
            r#"{ path = "/", upstream = "app", strip_prefix = true, rewrite = [{ from = "^/a", to = "/b" }] }"#,
            "cannot both `rewrite`",
            "keep one",
        ),
        (
            r#"{ path = "/app", upstream = "app", slash_redirect = true }"#,
            "`slash_redirect` needs a prefix route ending in `/`",
            "path = \"/app/\"",
        ),
    ];
    for (route, message, help) in cases {
        assert_refused(&with_route(route), message, help);
    }
}
