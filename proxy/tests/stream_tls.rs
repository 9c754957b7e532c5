//! TLS at layer 4 over real sockets on loopback port 0, both ways:
//! passthrough routed by the SNI name of the ClientHello (the proxy holds no
//! key; the client verifies each backend's own certificate end to end), and
//! termination (the proxy's certificate from the local CA, plain TCP to the
//! upstream).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::StreamProxy;
use proxy::Config;
use proxy::local_ca::LocalCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A local CA in a temporary folder.
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

    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Issues a certificate for `name`; returns (cert path, key path).
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let names = vec![name.to_owned()];
        self.ca
            .issue(&names)
            .expect("issue")
            .write(self.dir.path(), &proxy::local_ca::file_base(&names))
            .expect("write")
    }
}

fn der_of(cert: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert).expect("a certificate")
}

/// A TLS client trusting only `roots_pem` (nothing when `None`).
fn connector(roots_pem: Option<&str>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("add root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS backend with its own certificate: answers `NAME:` followed by
/// everything the client sent, once the client has half-closed.
async fn tls_backend(name: &'static str, cert: &Path, key: &Path) -> SocketAddr {
    let loaded = proxy::tls::load_cert(cert, key).expect("load the backend's certificate");
    let mut resolver = proxy::tls::SniResolver::new();
    resolver.set_default(loaded);
    let config = proxy::tls::server_config(resolver).expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut got = Vec::new();
                let _ = tls.read_to_end(&mut got).await;
                let mut answer = format!("{name}:").into_bytes();
                answer.extend_from_slice(&got);
                let _ = tls.write_all(&answer).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Echoes every byte back, in plain TCP; at the client's end, ends its own side too.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

/// Connects through `addr` with TLS for `sni`, sends `message`, half-closes,
/// and returns the answer and the certificate the client was shown.
async fn tls_exchange(
    addr: SocketAddr,
    sni: &str,
    roots_pem: Option<&str>,
    message: &[u8],
) -> std::io::Result<(Vec<u8>, CertificateDer<'static>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("a server name");
    let mut tls = connector(roots_pem).connect(name, tcp).await?;
    let shown = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    tls.write_all(message).await?;
    tls.shutdown().await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    Ok((answer, shown))
}

/// Two TLS backends, `a.example` and `*.b.example`, each with its own
/// certificate, behind one passthrough stream; `default` is the extra
/// stream settings.
struct Passthrough {
    ca: TestCa,
    a_cert: PathBuf,
    b_cert: PathBuf,
    proxy: StreamProxy,
}

async fn passthrough(extra: &str) -> Passthrough {
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.issue("a.example");
    let (b_cert, b_key) = ca.issue("*.b.example");
    let a = tls_backend("a", &a_cert, &a_key).await;
    let b = tls_backend("b", &b_cert, &b_key).await;
    let config = format!(
        "[[stream]]\nlisten = \"127.0.0.1:0\"\nsni = {{ \"a.example\" = \"pool-a\", \"*.b.example\" = \"pool-b\" }}\n{extra}\n\n\
         [upstreams.pool-a]\nservers = [\"{a}\"]\n\n[upstreams.pool-b]\nservers = [\"{b}\"]\n"
    );
    let proxy = StreamProxy::start(&config).await;
    Passthrough {
        ca,
        a_cert,
        b_cert,
        proxy,
    }
}

#[tokio::test]
async fn sni_passthrough_reaches_each_backend_by_name_and_the_client_verifies_its_own_certificate()
{
    let setup = passthrough("").await;
    let root = setup.ca.ca.root_cert_pem().to_owned();
    let (answer, shown) = tls_exchange(setup.proxy.addr(), "a.example", Some(&root), b"hello a")
        .await
        .expect("TLS through the proxy to a.example");
    assert_eq!(answer, b"a:hello a");
    // The certificate the client checked is the backend's own: the proxy
    // has no key and only passed the bytes on.
    assert_eq!(shown, der_of(&setup.a_cert));

    let (answer, shown) = tls_exchange(
        setup.proxy.addr(),
        "www.b.example",
        Some(&root),
        b"\0binary\xff",
    )
    .await
    .expect("TLS through the proxy to www.b.example");
    assert_eq!(answer, b"b:\0binary\xff");
    assert_eq!(shown, der_of(&setup.b_cert));
    setup.proxy.wait_ended("client_closed", 2).await;
}

#[tokio::test]
async fn an_unknown_name_without_a_default_upstream_is_closed() {
    let setup = passthrough("").await;
    let root = setup.ca.ca.root_cert_pem().to_owned();
    let refused = tls_exchange(setup.proxy.addr(), "c.example", Some(&root), b"hi").await;
    assert!(refused.is_err(), "an unknown name got through");
    setup.proxy.wait_ended("no_route", 1).await;
}

#[tokio::test]
async fn an_unknown_name_goes_to_the_default_upstream_when_there_is_one() {
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.issue("a.example");
    let (d_cert, d_key) = ca.issue("c.example");
    let a = tls_backend("a", &a_cert, &a_key).await;
    let d = tls_backend("default", &d_cert, &d_key).await;
    let config = format!(
        "[[stream]]\nlisten = \"127.0.0.1:0\"\nsni = {{ \"a.example\" = \"pool-a\" }}\nupstream = \"fallback\"\n\n\
         [upstreams.pool-a]\nservers = [\"{a}\"]\n\n[upstreams.fallback]\nservers = [\"{d}\"]\n"
    );
    let proxy = StreamProxy::start(&config).await;
    let root = ca.ca.root_cert_pem().to_owned();
    let (answer, _) = tls_exchange(proxy.addr(), "c.example", Some(&root), b"x")
        .await
        .expect("to the default");
    assert_eq!(answer, b"default:x");
    let (answer, _) = tls_exchange(proxy.addr(), "a.example", Some(&root), b"y")
        .await
        .expect("to a");
    assert_eq!(answer, b"a:y");
}

#[tokio::test]
async fn a_client_that_does_not_speak_tls_is_closed_without_reaching_a_backend() {
    let setup = passthrough("").await;
    let mut socket = TcpStream::connect(setup.proxy.addr())
        .await
        .expect("connect");
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "got {rest:?}");
    setup.proxy.wait_ended("not_tls", 1).await;
}

#[tokio::test]
async fn a_client_that_sends_no_client_hello_is_closed_after_the_preread_timeout() {
    let setup = passthrough("preread_timeout = \"200ms\"").await;
    let mut socket = TcpStream::connect(setup.proxy.addr())
        .await
        .expect("connect");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "still open after 5 s");
    assert!(rest.is_empty());
    setup.proxy.wait_ended("preread_timeout", 1).await;
}

/// A terminating stream with an `auto_local` certificate from `ca`, to a
/// plain echo upstream.
async fn terminating(ca: &TestCa) -> StreamProxy {
    let echo = echo_server().await;
    let config = format!(
        "local_ca_dir = \"{}\"\n\n[[stream]]\nlisten = \"127.0.0.1:0\"\nupstream = \"echo\"\ntls = {{ auto_local = true }}\n\n\
         [upstreams.echo]\nservers = [\"{echo}\"]\n",
        ca.ca_dir().display()
    );
    StreamProxy::start(&config).await
}

#[tokio::test]
async fn tls_termination_hands_the_decrypted_bytes_to_a_plain_upstream_byte_for_byte() {
    let ca = TestCa::new();
    let proxy = terminating(&ca).await;
    let root = ca.ca.root_cert_pem().to_owned();
    // Every byte value, a few times over, crossing many TLS records.
    let message: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (answer, _) = tls_exchange(proxy.addr(), "localhost", Some(&root), &message)
        .await
        .expect("TLS to the proxy");
    assert_eq!(answer.len(), message.len());
    assert!(answer == message, "the echo differs");
    proxy.wait_ended("client_closed", 1).await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_local_ca_fails_the_handshake() {
    let ca = TestCa::new();
    let proxy = terminating(&ca).await;
    let other = TestCa::new();
    let root = other.ca.root_cert_pem().to_owned();
    let refused = tls_exchange(proxy.addr(), "localhost", Some(&root), b"secret").await;
    assert!(refused.is_err(), "a client trusting another CA got through");
    let refused = tls_exchange(proxy.addr(), "localhost", None, b"secret").await;
    assert!(refused.is_err(), "a client trusting nothing got through");
    proxy.wait_ended("tls_failed", 2).await;
}

#[tokio::test]
async fn tls_termination_with_certificate_files() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue("db.localhost");
    let echo = echo_server().await;
    let config = format!(
        "[[stream]]\nlisten = \"127.0.0.1:0\"\nupstream = \"echo\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [upstreams.echo]\nservers = [\"{echo}\"]\n",
        cert.display(),
        key.display()
    );
    let proxy = StreamProxy::start(&config).await;
    let root = ca.ca.root_cert_pem().to_owned();
    let (answer, shown) = tls_exchange(proxy.addr(), "db.localhost", Some(&root), b"SELECT 1;")
        .await
        .expect("TLS to the proxy");
    assert_eq!(answer, b"SELECT 1;");
    assert_eq!(shown, der_of(&cert));
}

/// Checks that `config` is refused with `message`, at `proxy.toml:LINE:`.
fn refused(config: &str, message: &str, at: &str) {
    let errors = match Config::parse(config, "proxy.toml") {
        Ok(_) => panic!("this config was accepted:\n{config}"),
        Err(errors) => errors.to_string(),
    };
    assert!(errors.contains(message), "no `{message}` in:\n{errors}");
    assert!(errors.contains(at), "no `{at}` in:\n{errors}");
}

#[test]
fn tls_stream_config_errors_point_at_the_line() {
    let pools = "\n[upstreams.a]\nservers = [\"127.0.0.1:8443\"]\n";
    refused(
        &format!(
            "[[stream]]\nlisten = \"127.0.0.1:9443\"\nsni = {{ \"a.example\" = \"a\" }}\ntls = {{ auto_local = true }}\n{pools}"
        ),
        "cannot both route by `sni` (TLS passthrough) and terminate `tls`",
        "proxy.toml:4:",
    );
    refused(
        &format!(
            "[[stream]]\nlisten = \"127.0.0.1:9443\"\nsni = {{ \"a.example\" = \"aa\" }}\n{pools}"
        ),
        "upstream `aa` is not defined",
        "proxy.toml:3:",
    );
    refused(
        &format!(
            "[[stream]]\nlisten = \"127.0.0.1:9443\"\nsni = {{ \"a..example\" = \"a\" }}\n{pools}"
        ),
        "is not a valid server name",
        "proxy.toml:3:",
    );
    refused(
        &format!("[[stream]]\nlisten = \"127.0.0.1:9443\"\n{pools}"),
        "a stream needs an `upstream` (or `sni` to pick one by name)",
        "proxy.toml:1:",
    );
    refused(
        &format!(
            "[[stream]]\nlisten = \"127.0.0.1:9443\"\nupstream = \"a\"\npreread_timeout = \"1s\"\n{pools}"
        ),
        "`preread_timeout` only applies with `sni` or `tls`",
        "proxy.toml:4:",
    );
    refused(
        &format!(
            "[[stream]]\nlisten = \"127.0.0.1:9443\"\nupstream = \"a\"\ntls = {{ cert = \"missing.pem\" }}\n{pools}"
        ),
        "a stream's tls needs either `cert` and `key`",
        "proxy.toml:4:",
    );
    refused(
        &format!(
            "[[stream]]\nlisten = \"127.0.0.1:9443\"\nupstream = \"a\"\ntls = {{ cert = \"missing.pem\", key = \"missing-key.pem\" }}\n{pools}"
        ),
        "missing.pem",
        "proxy.toml:4:",
    );
}

#[test]
fn valid_tls_streams_are_accepted() {
    let text = "[[stream]]\nlisten = \"127.0.0.1:9443\"\nsni = { \"a.example\" = \"a\", \"*.b.example\" = \"b\" }\nupstream = \"b\"\npreread_timeout = \"5s\"\n\n\
                [[stream]]\nlisten = \"127.0.0.1:9444\"\nupstream = \"a\"\ntls = { auto_local = true, names = [\"db.localhost\"] }\n\n\
                [upstreams.a]\nservers = [\"127.0.0.1:8443\"]\n\n[upstreams.b]\nservers = [\"127.0.0.1:8444\"]\n";
    let config = Config::parse(text, "proxy.toml").expect("valid");
    let passthrough = &config.streams[0];
    assert_eq!(passthrough.preread_timeout, Duration::from_secs(5));
    let a = passthrough.pool_for(Some("a.example"));
    let b = passthrough.pool_for(Some("x.b.example"));
    assert_ne!(a, b);
    assert_eq!(passthrough.pool_for(Some("A.EXAMPLE")), a);
    // Neither the bare suffix nor an unknown name match the wildcard: the default.
    assert_eq!(
        passthrough.pool_for(Some("b.example")),
        passthrough.upstream
    );
    assert_eq!(passthrough.pool_for(Some("c.example")), b);
    assert_eq!(passthrough.pool_for(None), b);
    assert!(config.streams[1].tls.is_some());
}
