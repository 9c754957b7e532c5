//! `proxy import-nginx` on the classic tutorials' nginx configs
//! (tests/fixtures/nginx/): each imports, the TOML is a valid config, and a
//! proxy started from it routes like nginx would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use proxy::nginx::{Imported, Severity};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name)
}

fn import(name: &str) -> Imported {
    let text = std::fs::read_to_string(fixture(name)).expect("read fixture");
    proxy::nginx::import(&text, name).expect("the fixture parses")
}

fn has(imported: &Imported, line: usize, severity: Severity, text: &str) -> bool {
    imported
        .warnings
        .iter()
        .any(|w| w.line == line && w.severity == severity && w.message.contains(text))
}

/// The TOML with the listeners on a free loopback port and `hosts` (name,
/// address) replaced.
fn localised(toml: &str, hosts: &[(&str, String)]) -> String {
    let mut toml = toml
        .replace("0.0.0.0:80\"", "127.0.0.1:0\"")
        .replace("0.0.0.0:443\"", "127.0.0.1:0\"");
    for (name, addr) in hosts {
        toml = toml.replace(&format!("\"{name}\""), &format!("\"{addr}\""));
    }
    toml
}

/// Tutorial C's TOML with its certificate paths replaced by a certificate
/// for apiclub.com, made in `dir` (nginx's paths do not exist here).
fn with_test_certificate(toml: &str, dir: &Path) -> String {
    let (ca, _) = proxy::local_ca::LocalCa::open_or_create(dir).expect("CA");
    let (cert, key) = ca
        .issue(&["apiclub.com".to_owned()])
        .expect("issue")
        .write(dir, "apiclub.com")
        .expect("write");
    toml.replace(
        "/etc/nginx/certs/apiclub.com.pem",
        &cert.display().to_string(),
    )
    .replace(
        "/etc/nginx/certs/apiclub.com-key.pem",
        &key.display().to_string(),
    )
}

#[test]
fn every_fixture_imports_into_a_valid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut names: Vec<_> = std::fs::read_dir(fixture(""))
        .expect("fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let imported = import(&name);
        let toml = with_test_certificate(&imported.toml, dir.path());
        if let Err(errors) = proxy::Config::parse(&toml, &name) {
            panic!("{name} imported into an invalid config:\n{errors}\n{toml}");
        }
    }
}

#[test]
fn tutorial_a_warns_where_nginx_and_the_proxy_differ() {
    let imported = import("a-frontend-and-api.conf");
    assert!(imported.toml.contains("workers = 1"));
    assert!(imported.toml.contains("[limit_req_zones.one]"));
    assert!(has(&imported, 7, Severity::Note, "no limit_req uses it"));
    assert!(has(&imported, 16, Severity::Note, "always sets X-Real-IP"));
    assert!(has(&imported, 15, Severity::Note, "not an upstream block"));
    assert!(has(&imported, 15, Severity::Note, "HTTP/1.0"));
    assert!(has(&imported, 26, Severity::Note, "without `always`"));
    // Host $host is the proxy's default: nothing written.
    assert!(!imported.toml.contains("preserve_host"));
}

#[test]
fn tutorial_c_becomes_an_https_server_with_a_redirect() {
    let imported = import("c-api-club-tls.conf");
    let toml = &imported.toml;
    assert!(toml.contains("redirect_https = true"), "{toml}");
    assert!(toml.contains("default = true"), "{toml}");
    assert_eq!(toml.matches("[[servers]]").count(), 1, "{toml}");
    assert!(has(&imported, 26, Severity::Note, "redirect_https = true"));
    assert!(
        !imported
            .warnings
            .iter()
            .any(|w| w.severity == Severity::Warning),
        "{:?}",
        imported.warnings
    );
}

#[tokio::test]
async fn the_imported_tutorial_c_proxies_https_and_redirects_plain_http() {
    let api = echo_upstream("api_server").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = with_test_certificate(
        &localised(
            &import("c-api-club-tls.conf").toml,
            &[("api_server:8000", api.addr.to_string())],
        ),
        dir.path(),
    );
    let proxy = start_proxy(&toml).await;

    // HTTPS on the first listener (nginx's `listen 443 ssl`), trusting the test CA.
    let root = std::fs::read(
        proxy::local_ca::LocalCa::open_or_create(dir.path())
            .expect("CA")
            .0
            .root_cert_path(),
    )
    .expect("root certificate");
    let (status, upstream, body) = https_get(proxy.addrs[0], "apiclub.com", &root, "/").await;
    assert_eq!(status, 200);
    assert_eq!(upstream, "api_server");
    let echo = json(&body);
    assert_eq!(echo["uri"], "/");
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), Some("https"));

    // The second listener is nginx's `listen 80 default_server`.
    let plain = proxy.addrs[1];
    let (response, _) = get(&client(), plain, "apiclub.com", "/status?x=1").await;
    assert_eq!(response.status(), 301);
    let https_port = proxy.addrs[0].port();
    assert_eq!(
        response.headers()["location"],
        format!("https://apiclub.com:{https_port}/status?x=1").as_str()
    );
    // Any other name gets the redirect too: the server is the default.
    let (response, _) = get(&client(), plain, "other.example", "/").await;
    assert_eq!(response.status(), 301);
}

/// `GET https://{name}{path}` over HTTP/1.1, trusting `root_pem`: the
/// status, the `x-upstream` header and the body.
async fn https_get(
    addr: std::net::SocketAddr,
    name: &str,
    root_pem: &[u8],
    path: &str,
) -> (u16, String, bytes::Bytes) {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert.expect("pem")).expect("add root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server_name =
        rustls::pki_types::ServerName::try_from(name.to_owned()).expect("server name");
    let tls = connector
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", name)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, upstream, body)
}

#[test]
fn tutorial_e_warns_about_the_prefix_trap() {
    let imported = import("e-two-services.conf");
    assert!(has(
        &imported,
        9,
        Severity::Warning,
        "reaches the upstream as `//x`"
    ));
    assert!(imported.toml.contains("strip_prefix = true"));
}

#[tokio::test]
async fn the_imported_tutorial_a_routes_like_nginx() {
    let frontend = echo_upstream("frontend").await;
    let api = echo_upstream("api").await;
    let toml = localised(
        &import("a-frontend-and-api.conf").toml,
        &[
            ("frontend-in-space:3000", frontend.addr.to_string()),
            ("api-but-space:8000", api.addr.to_string()),
        ],
    );
    let proxy = start_proxy(&toml).await;
    let client = client();

    let (response, body) = get(&client, proxy.addr, "space.spaceify.co", "/api/tasks").await;
    assert_eq!(response.headers()["x-upstream"], "api");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let echo = json(&body);
    assert_eq!(
        echo["uri"], "/api/tasks",
        "proxy_pass without a URI keeps the path"
    );
    assert_eq!(seen_header(&echo, "host"), Some("space.spaceify.co"));

    let (response, _) = get(&client, proxy.addr, "space.spaceify.co", "/index.html").await;
    assert_eq!(response.headers()["x-upstream"], "frontend");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn the_imported_tutorial_d_round_robins_across_the_replicas() {
    let apps = [
        echo_upstream("app1").await,
        echo_upstream("app2").await,
        echo_upstream("app3").await,
    ];
    let toml = localised(
        &import("d-round-robin.conf").toml,
        &[
            ("app1:3000", apps[0].addr.to_string()),
            ("app2:3000", apps[1].addr.to_string()),
            ("app3:3000", apps[2].addr.to_string()),
        ],
    );
    let proxy = start_proxy(&toml).await;
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (response, body) = get(&client, proxy.addr, "localhost", "/").await;
        seen.push(
            response.headers()["x-upstream"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
        // nginx sends the upstream's name as Host: preserve_host = false.
        let echo = json(&body);
        assert_ne!(seen_header(&echo, "host"), Some("localhost"));
    }
    let mut first_three = seen[..3].to_vec();
    first_three.sort();
    assert_eq!(first_three, ["app1", "app2", "app3"]);
    assert_eq!(seen[..3], seen[3..], "the same order again: round-robin");
}

#[tokio::test]
async fn the_imported_tutorial_e_strips_prefixes_and_answers_itself() {
    let one = echo_upstream("service1").await;
    let two = echo_upstream("service2").await;
    let toml = localised(
        &import("e-two-services.conf").toml,
        &[
            ("service1:5000", one.addr.to_string()),
            ("service2:5000", two.addr.to_string()),
        ],
    );
    let proxy = start_proxy(&toml).await;
    let client = client();
    let (_, body) = get(&client, proxy.addr, "localhost", "/service2/x?y=1").await;
    let echo = json(&body);
    assert_eq!(echo["upstream"], "service2");
    assert_eq!(
        echo["uri"], "//x?y=1",
        "nginx's prefix replacement, trap included"
    );
    let (response, body) = get(&client, proxy.addr, "localhost", "/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(&body[..], b"Welcome to the reverse proxy!");
}

#[test]
fn the_command_prints_toml_and_warnings_and_fails_on_a_syntax_error() {
    let out = Command::new(PROXY)
        .arg("import-nginx")
        .arg(fixture("e-two-services.conf"))
        .output()
        .expect("run proxy import-nginx");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("[[servers.routes]]"), "{stdout}");
    assert!(
        stderr.contains("e-two-services.conf:9: warning:"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "http {\n  server {\n    listen 80\n  }\n}\n").expect("write");
    let out = Command::new(PROXY)
        .arg("import-nginx")
        .arg(&bad)
        .output()
        .expect("run proxy import-nginx");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.conf:3: error: directive `listen` has no ending `;`"),
        "{stderr}"
    );

    let toml = dir.path().join("proxy.toml");
    let out = Command::new(PROXY)
        .arg("import-nginx")
        .arg(fixture("b-fastapi-site.conf"))
        .arg("--out")
        .arg(&toml)
        .output()
        .expect("run proxy import-nginx --out");
    assert!(out.status.success());
    let check = Command::new(PROXY)
        .args(["check", "--config"])
        .arg(&toml)
        .output()
        .expect("run proxy check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Every `nginx` block quoted in docs/*.md and the README, in file order.
fn quoted_nginx_blocks() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files.push(root.join("README.md"));
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() == "```nginx" {
                let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
                blocks.push((file.display().to_string(), block.join("\n") + "\n"));
            }
        }
    }
    blocks
}

#[test]
fn every_nginx_config_the_docs_quote_is_a_tested_fixture_and_imports() {
    let fixtures: Vec<String> = [
        "a-frontend-and-api.conf",
        "b-fastapi-site.conf",
        "c-api-club-tls.conf",
        "d-round-robin.conf",
        "e-two-services.conf",
        "f-cache-and-gzip.conf",
        "g-edge-security.conf",
    ]
    .iter()
    .map(|name| std::fs::read_to_string(fixture(name)).expect("read fixture"))
    .collect();
    let blocks = quoted_nginx_blocks();
    assert!(
        blocks.len() >= fixtures.len(),
        "the docs quote {} nginx configs",
        blocks.len()
    );
    for (file, block) in blocks {
        assert!(
            fixtures.iter().any(|f| f.trim_end() == block.trim_end()),
            "{file} quotes an nginx config that is not in tests/fixtures/nginx/:\n{block}"
        );
        if let Err(err) = proxy::nginx::import(&block, &file) {
            panic!("{file}: {err}");
        }
    }
}

#[test]
fn a_stream_block_imports_into_stream_listeners_that_proxy_check_accepts() {
    let text = "stream {\n  set_real_ip_from 10.0.0.0/8;\n  upstream db {\n    server 127.0.0.1:5432;\n    server 127.0.0.1:5433;\n  }\n  server {\n    listen 6432 proxy_protocol;\n    proxy_pass db;\n    proxy_protocol on;\n    proxy_connect_timeout 3s;\n    proxy_timeout 1h;\n  }\n  map $ssl_preread_server_name $by_name {\n    app.example.com 127.0.0.1:9443;\n    default db;\n  }\n  server {\n    listen 8443;\n    ssl_preread on;\n    proxy_pass $by_name;\n  }\n}\n";
    let imported = proxy::nginx::import(text, "stream.conf").expect("parses");
    let config = proxy::Config::parse(&imported.toml, "imported.toml")
        .unwrap_or_else(|e| panic!("refused:\n{e}\n{}", imported.toml));
    assert_eq!(config.streams.len(), 2, "{}", imported.toml);
    assert!(config.listeners.is_empty());
    assert!(config.streams[0].accept_proxy_protocol);
    assert_eq!(
        config.streams[0].idle_timeout,
        std::time::Duration::from_secs(3600)
    );
    assert_eq!(config.streams[1].sni.len(), 1, "{}", imported.toml);
    assert!(
        !imported
            .warnings
            .iter()
            .any(|w| w.message.contains("refuses")),
        "{:?}",
        imported.warnings
    );
}
