//! HTTPS: real TLS handshakes over loopback, with a client that trusts the
//! test's own local CA (and one that does not).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proxy::local_ca::LocalCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A local CA in a temporary folder, with certificates written next to it.
struct TestCa {
    ca: LocalCa,
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = LocalCa::open_or_create(&dir.path().join("ca")).expect("ca");
        TestCa { ca, dir }
    }

    /// Issues a certificate for `names`; returns (cert path, key path).
    fn issue(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.ca
            .issue(&names)
            .expect("issue")
            .write(self.dir.path(), &proxy::local_ca::file_base(&names))
            .expect("write")
    }
}

/// What a client saw of one HTTPS request.
struct HttpsAnswer {
    alpn: Option<Vec<u8>>,
    peer_cert: CertificateDer<'static>,
    response: Response<()>,
    body: Bytes,
}

fn client_config(roots_pem: Option<&str>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    client_config_with_versions(roots_pem, alpn, rustls::DEFAULT_VERSIONS)
}

fn client_config_with_versions(
    roots_pem: Option<&str>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("add root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// `GET https://{sni}{path}` to `addr`, trusting `roots_pem`, offering `alpn`.
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    roots_pem: Option<&str>,
    alpn: &[&[u8]],
    path: &str,
) -> Result<HttpsAnswer, Box<dyn std::error::Error + Send + Sync>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots_pem, alpn)));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from(sni.to_owned())?, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let peer_cert = session.peer_certificates().expect("peer certificate")[0].clone();
    let request = Request::get(format!("https://{sni}{path}"))
        .header("host", sni)
        .body(Empty::<Bytes>::new())?;
    let io = TokioIo::new(tls);
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let mut request = request;
        request.headers_mut().remove("host"); // HTTP/2 carries it in :authority
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(HttpsAnswer {
        alpn,
        peer_cert,
        response: Response::from_parts(parts, ()),
        body,
    })
}

/// A CA, certificates for `app.localhost` and `api.localhost`, and a proxy
/// serving [`two_names_config`] with `extra_app` added to the app server.
struct TwoNames {
    ca: TestCa,
    app: (PathBuf, PathBuf),
    api: (PathBuf, PathBuf),
    proxy: TestProxy,
    _up: EchoUpstream,
}

impl TwoNames {
    async fn start(extra_app: &str) -> TwoNames {
        let ca = TestCa::new();
        let (app, api) = (ca.issue(&["app.localhost"]), ca.issue(&["api.localhost"]));
        let up = echo_upstream("app").await;
        let proxy = start_proxy(&two_names_config(up.addr, &app, &api, extra_app)).await;
        TwoNames {
            ca,
            app,
            api,
            proxy,
            _up: up,
        }
    }

    fn root(&self) -> Option<&str> {
        Some(self.ca.ca.root_cert_pem())
    }
}

fn der_of(cert: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert).expect("certificate file")
}

/// A config with a plain and a TLS listener, `app.localhost` (the default
/// server) and `api.localhost`, each with its own certificate.
fn two_names_config(
    up: SocketAddr,
    app: &(PathBuf, PathBuf),
    api: &(PathBuf, PathBuf),
    extra_app: &str,
) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[listen]]
addr = "127.0.0.1:0"
tls = true

[[servers]]
server_names = ["app.localhost"]
tls = {{ cert = "{}", key = "{}" }}
routes = [{{ path = "/", upstream = "app" }}]
{extra_app}

[[servers]]
server_names = ["api.localhost"]
tls = {{ cert = "{}", key = "{}" }}
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{up}"]
"#,
        app.0.display(),
        app.1.display(),
        api.0.display(),
        api.1.display(),
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_of_each_server_name() {
    let t = TwoNames::start("").await;
    let https = t.proxy.addrs[1];
    let root = t.root();

    let answer = https_get(https, "app.localhost", root, &[b"http/1.1"], "/")
        .await
        .expect("app");
    assert_eq!(answer.peer_cert, der_of(&t.app.0));
    assert_eq!(answer.response.status(), 200);

    let answer = https_get(https, "api.localhost", root, &[b"http/1.1"], "/")
        .await
        .expect("api");
    assert_eq!(answer.peer_cert, der_of(&t.api.0));

    // A name no server has gets the default server's certificate, which does
    // not cover it: a client that checks names refuses it.
    let err = https_get(https, "other.localhost", root, &[b"http/1.1"], "/")
        .await
        .err()
        .expect("a certificate for another name is refused");
    assert!(
        err.to_string().contains("certificate not valid for name"),
        "{err}"
    );
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_the_upstream_learns_the_client_used_https() {
    let t = TwoNames::start("").await;
    let root = t.root();

    let h2 = https_get(
        t.proxy.addrs[1],
        "app.localhost",
        root,
        &[b"h2", b"http/1.1"],
        "/h2",
    )
    .await
    .expect("h2");
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.response.version(), http::Version::HTTP_2);
    let echo = json(&h2.body);
    assert_eq!(echo["uri"], "/h2");
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), Some("https"));
    assert_eq!(seen_header(&echo, "host"), Some("app.localhost"));

    let h1 = https_get(
        t.proxy.addrs[1],
        "app.localhost",
        root,
        &[b"http/1.1"],
        "/h1",
    )
    .await
    .expect("http/1.1");
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.response.version(), http::Version::HTTP_11);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let t = TwoNames::start("").await;
    let other = TestCa::new();
    let err = https_get(
        t.proxy.addrs[1],
        "app.localhost",
        Some(other.ca.root_cert_pem()),
        &[],
        "/",
    )
    .await
    .err()
    .expect("an untrusted certificate is refused");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // The proxy is unharmed: a trusting client still gets through.
    let ok = https_get(t.proxy.addrs[1], "app.localhost", t.root(), &[], "/").await;
    assert_eq!(ok.expect("trusted").response.status(), 200);
}

#[tokio::test]
async fn plain_http_is_redirected_to_the_https_port_keeping_path_and_query() {
    let t = TwoNames::start("redirect_https = true").await;
    let (plain, https) = (t.proxy.addrs[0], t.proxy.addrs[1]);
    let client = client();

    let (response, _) = get(&client, plain, "app.localhost", "/api/tasks?done=1").await;
    assert_eq!(response.status(), 301);
    assert_eq!(
        response.headers()["location"],
        format!("https://app.localhost:{}/api/tasks?done=1", https.port()).as_str()
    );

    // api.localhost has no redirect_https: served over plain HTTP as usual.
    let (response, _) = get(&client, plain, "api.localhost", "/").await;
    assert_eq!(response.status(), 200);

    // A Host that is no host name never reaches the Location header.
    let raw = raw_exchange(
        plain,
        b"GET / HTTP/1.1\r\nhost: evil.example/phish?\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(!raw.contains("evil.example"), "{raw}");

    // The HTTPS side serves the request instead of redirecting again.
    let answer = https_get(https, "app.localhost", t.root(), &[], "/x")
        .await
        .expect("https");
    assert_eq!(answer.response.status(), 200);
}

#[tokio::test]
async fn redirect_status_308_keeps_the_method() {
    let extra = "redirect_https = true\nredirect_status = 308";
    let t = TwoNames::start(extra).await;
    let (response, _) = get(&client(), t.proxy.addrs[0], "app.localhost", "/").await;
    assert_eq!(response.status(), 308);
}

#[tokio::test]
async fn hsts_is_sent_over_https_only() {
    let extra = "hsts = \"max-age=31536000; includeSubDomains\"";
    let t = TwoNames::start(extra).await;
    let answer = https_get(t.proxy.addrs[1], "app.localhost", t.root(), &[], "/")
        .await
        .expect("https");
    assert_eq!(
        answer.response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let (plain, _) = get(&client(), t.proxy.addrs[0], "app.localhost", "/").await;
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn auto_local_issues_certificates_from_the_local_ca_and_reuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let up = echo_upstream("app").await;
    let config = format!(
        r#"
local_ca_dir = "{}"

[[listen]]
addr = "127.0.0.1:0"
tls = true

[[servers]]
server_names = ["app.localhost", "*.app.localhost"]
tls = {{ auto_local = true }}
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{}"]
"#,
        ca_dir.display(),
        up.addr
    );
    let first = start_proxy(&config).await;
    let root = std::fs::read_to_string(ca_dir.join("rootCA.pem")).expect("the CA was made");
    let a = https_get(first.addr, "app.localhost", Some(&root), &[], "/")
        .await
        .expect("app");
    let b = https_get(first.addr, "shop.app.localhost", Some(&root), &[], "/")
        .await
        .expect("wildcard");
    assert_eq!(
        a.peer_cert, b.peer_cert,
        "one certificate covers both names"
    );

    // A restart finds the cached certificate instead of issuing another.
    let second = start_proxy(&config).await;
    let c = https_get(second.addr, "app.localhost", Some(&root), &[], "/")
        .await
        .expect("again");
    assert_eq!(a.peer_cert, c.peer_cert);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let keys: Vec<_> = std::fs::read_dir(ca_dir.join("auto"))
            .expect("auto folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-key.pem"))
            .chain([ca_dir.join("rootCA-key.pem")])
            .collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        for key in keys {
            let mode = std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}

fn config_errors(config: &str) -> String {
    match proxy::Config::parse(config, "proxy.toml") {
        Ok(_) => panic!("the config should be refused"),
        Err(errors) => errors.to_string(),
    }
}

fn tls_config(cert: &Path, key: &Path) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"
tls = true

[[servers]]
server_names = ["app.localhost"]
tls = {{ cert = "{}", key = "{}" }}
routes = [{{ path = "/", return = {{ status = 200 }} }}]
"#,
        cert.display(),
        key.display()
    )
}

#[test]
fn bad_certificate_files_are_config_errors_naming_the_file() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["app.localhost"]);
    let (_, other_key) = ca.issue(&["other.localhost"]);
    let dir = ca.dir.path();

    let missing = dir.join("missing.pem");
    let errors = config_errors(&tls_config(&missing, &key));
    assert!(
        errors.contains(&format!("cannot read {}", missing.display())),
        "{errors}"
    );
    assert!(errors.contains("--> proxy.toml:8:"), "{errors}");

    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let errors = config_errors(&tls_config(&not_pem, &key));
    assert!(errors.contains("holds no PEM certificate"), "{errors}");

    let errors = config_errors(&tls_config(&cert, &other_key));
    assert!(
        errors.contains("does not belong to the certificate"),
        "{errors}"
    );

    let errors = config_errors(&tls_config(&cert, &not_pem));
    assert!(
        errors.contains(&format!("{} holds no PEM private key", not_pem.display())),
        "{errors}"
    );

    // An expired certificate, made by hand.
    let mut params =
        rcgen::CertificateParams::new(vec!["app.localhost".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old_key = rcgen::KeyPair::generate().expect("key");
    let old = params.self_signed(&old_key).expect("cert");
    let (old_cert, old_key_path) = (dir.join("old.pem"), dir.join("old-key.pem"));
    std::fs::write(&old_cert, old.pem()).expect("write");
    std::fs::write(&old_key_path, old_key.serialize_pem()).expect("write");
    let errors = config_errors(&tls_config(&old_cert, &old_key_path));
    assert!(errors.contains("is expired"), "{errors}");
    assert!(errors.contains("proxy cert issue"), "{errors}");
}

#[test]
fn tls_settings_without_a_tls_listener_or_a_certificate_are_refused() {
    let no_cert = "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n[[servers]]\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    assert!(config_errors(no_cert).contains("this TLS listener has no certificate"));

    let plain_only = "[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nredirect_https = true\nhsts = \"max-age=60\"\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    let errors = config_errors(plain_only);
    assert!(
        errors.contains("`redirect_https` has no HTTPS listener"),
        "{errors}"
    );
    assert!(
        errors.contains("`hsts` is only sent over HTTPS"),
        "{errors}"
    );

    let no_names = "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n[[servers]]\ntls = { auto_local = true }\nroutes = [{ path = \"/\", return = { status = 200 } }]\n";
    assert!(config_errors(no_names).contains("auto_local"));
}

/// An upstream that speaks HTTPS with a certificate for 127.0.0.1 from `ca`,
/// answering like [`echo_upstream`] does.
async fn https_upstream(ca: &TestCa) -> SocketAddr {
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let loaded = proxy::tls::load_cert(&cert, &key).expect("upstream certificate");
    let mut resolver = proxy::tls::SniResolver::new();
    resolver.set_default(loaded);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        proxy::tls::server_config(resolver).expect("tls config"),
    ));
    // The echo upstream listens on plain HTTP; this front terminates TLS for it.
    let echo = echo_upstream("tls-upstream").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _keep = echo.connections; // the echo task lives as long as this one
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let echo_addr = echo.addr;
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(echo_addr).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn https_pool_config(upstream: SocketAddr, ca_file: &Path) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
routes = [{{ path = "/", upstream = "secure" }}]

[upstreams.secure]
servers = ["https://{upstream}"]
tls_ca_file = "{}"
"#,
        ca_file.display()
    )
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_pools_ca_file() {
    let ca = TestCa::new();
    let upstream = https_upstream(&ca).await;
    let proxy = start_proxy(&https_pool_config(upstream, &ca.ca.root_cert_path())).await;
    let (response, body) = get(&client(), proxy.addr, "app.localhost", "/over-tls").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "tls-upstream");
    assert_eq!(json(&body)["uri"], "/over-tls");
}

#[tokio::test]
async fn an_https_upstream_with_an_untrusted_certificate_is_a_502() {
    let ca = TestCa::new();
    let upstream = https_upstream(&ca).await;
    let stranger = TestCa::new();
    let proxy = start_proxy(&https_pool_config(upstream, &stranger.ca.root_cert_path())).await;
    let (response, _) = get(&client(), proxy.addr, "app.localhost", "/").await;
    assert_eq!(response.status(), 502);
    let status = response.headers()["proxy-status"].to_str().expect("ascii");
    assert!(status.contains("error=tls_certificate_error"), "{status}");
}

#[test]
fn upstream_tls_settings_are_checked() {
    let base = "[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nroutes = [{ path = \"/\", upstream = \"u\" }]\n[upstreams.u]\n";
    let mixed = format!("{base}servers = [\"https://a:443\", \"b:80\"]\n");
    assert!(config_errors(&mixed).contains("must all use the same scheme"));
    let plain_with_ca = format!("{base}servers = [\"a:80\"]\ntls_ca_file = \"ca.pem\"\n");
    assert!(config_errors(&plain_with_ca).contains("`tls_ca_file` is for https:// servers"));
    let missing_ca =
        format!("{base}servers = [\"https://a\"]\ntls_ca_file = \"/nonexistent/ca.pem\"\n");
    assert!(config_errors(&missing_ca).contains("cannot read /nonexistent/ca.pem"));
    let with_path = format!("{base}servers = [\"http://a:80/api\"]\n");
    assert!(config_errors(&with_path).contains("has a path (`/api`)"));
    let ok = format!("{base}servers = [\"https://api.example.com\", \"https://[::1]:8443\"]\n");
    let config = proxy::Config::parse(&ok, "proxy.toml").expect("valid");
    let addresses: Vec<&str> = config.upstreams[0]
        .servers
        .iter()
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(addresses, ["api.example.com:443", "[::1]:8443"]);
}

#[tokio::test]
async fn tls_1_2_and_tls_1_3_clients_are_both_served() {
    let t = TwoNames::start("").await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config_with_versions(t.root(), &[], &[version]);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(t.proxy.addrs[1])
            .await
            .expect("connect");
        let name = ServerName::try_from("app.localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
    }
}
