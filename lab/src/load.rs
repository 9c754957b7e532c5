//! A load generator on hyper: what `lab bench` drives each target with.
//!
//! Each of `connections` tasks holds one keep-alive HTTP/1.1 connection and
//! sends `GET path` on it, over and over, until `duration` has passed:
//! - **closed loop** (no `rate`): the next request leaves as soon as the
//!   answer is in, so the figure is the most the target serves;
//! - **fixed rate** (`rate` requests per second in all): requests leave on a
//!   schedule, and each latency is counted from when the request *should*
//!   have left, so a target that stalls is not flattered by the generator
//!   waiting for it ("coordinated omission").
//!
//! Latencies go into an HDR histogram (microseconds), merged at the end.
//!
//! A target may speak TLS ([`ClientTls`]): each connection then starts with a
//! TLS handshake, once, and carries all its requests encrypted. The
//! handshake's cost is spread over every request of the connection, so what
//! a keep-alive run measures is mostly the cost of encrypting and decrypting
//! each request and answer, not of the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// How to load a target.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// How long to send for.
    pub duration: Duration,
    /// Requests per second in all; `None` for closed loop.
    pub rate: Option<u64>,
    /// The `Host` header.
    pub host: String,
    /// The path to GET.
    pub path: String,
    /// TLS to the target, or `None` for plain TCP.
    pub tls: Option<ClientTls>,
}

/// How to speak TLS to a target: the roots to trust and the name to ask for.
///
/// ALPN offers `http/1.1` alone, so a TLS target answers in HTTP/1.1 like
/// every other: a row with TLS differs from its plain twin by the
/// encryption only, not by the HTTP version.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// rustls with the `ring` provider, the lab's one crypto back end.
    config: Arc<rustls::ClientConfig>,
    /// Sent as SNI, and what the target's certificate must name.
    name: ServerName<'static>,
}

impl ClientTls {
    /// Trusts the certificates in `root_pem` (e.g. the local CA's
    /// `rootCA.pem`) and asks for `server_name`.
    pub fn new(root_pem: &str, server_name: &str) -> Result<ClientTls, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the root certificate is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("cannot trust the root certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no certificate in the root PEM: nothing to trust".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
        Ok(ClientTls {
            config: Arc::new(config),
            name,
        })
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Failed requests: errors, or statuses other than 2xx.
    pub errors: u64,
    /// What went wrong the first time a request failed, to say why
    /// `errors` is not 0.
    pub first_error: Option<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Latency percentiles in microseconds: p50, p99, p99.9.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Loads `target` as `options` say and reports what it measured.
pub async fn run(target: SocketAddr, options: &LoadOptions) -> LoadReport {
    let started = Instant::now();
    let deadline = started + options.duration;
    let connections = options.connections.max(1);
    // Each connection's share of the rate: one request every `interval`.
    let interval = options
        .rate
        .map(|rate| Duration::from_secs_f64(connections as f64 / rate.max(1) as f64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (host, path) = (options.host.clone(), options.path.clone());
        let tls = options.tls.clone();
        // Spread the first sends of fixed-rate connections over one interval.
        let offset = interval.map_or(Duration::ZERO, |iv| {
            iv.mul_f64(i as f64 / connections as f64)
        });
        tasks.spawn(async move {
            one_connection(
                target,
                tls,
                host,
                path,
                started + offset,
                interval,
                deadline,
            )
            .await
        });
    }
    let mut histogram = new_histogram();
    let (mut ok, mut errors, mut bytes, mut first_error) = (0, 0, 0, None);
    while let Some(done) = tasks.join_next().await {
        if let Ok(part) = done {
            let _ = histogram.add(&part.histogram);
            ok += part.ok;
            errors += part.errors;
            bytes += part.bytes;
            first_error = first_error.or(part.first_error);
        }
    }
    LoadReport {
        ok,
        errors,
        first_error,
        bytes,
        elapsed: started.elapsed(),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
    }
}

/// 1 µs to 100 s with 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant, valid bounds")
}

struct Part {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    bytes: u64,
}

impl Part {
    /// Counts a failed request; the first one's `why` is kept.
    fn failed(&mut self, why: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }
}

/// Opens one HTTP/1.1 connection to `target`, over TLS when `tls` says so
/// (the TLS handshake happens here, once per connection).
async fn connect(
    target: SocketAddr,
    tls: Option<&ClientTls>,
) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => http1(stream).await,
        Some(tls) => {
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
                .connect(tls.name.clone(), stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            http1(stream).await
        }
    }
}

/// The HTTP/1.1 client side of a connection, its driver spawned.
async fn http1<S>(stream: S) -> Result<SendRequest<Empty<Bytes>>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn one_connection(
    target: SocketAddr,
    tls: Option<ClientTls>,
    host: String,
    path: String,
    first: Instant,
    interval: Option<Duration>,
    deadline: Instant,
) -> Part {
    let mut part = Part {
        histogram: new_histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        bytes: 0,
    };
    let mut sender = None;
    let mut next = first;
    loop {
        // When this request leaves: on schedule, or now in a closed loop.
        let sent = match interval {
            Some(iv) => {
                tokio::time::sleep_until(next).await;
                next += iv;
                next - iv
            }
            None => Instant::now(),
        };
        if sent >= deadline {
            break;
        }
        // The connection kept from the last request, or a new one.
        let (mut conn, new) = match sender.take() {
            Some(kept) => (kept, false),
            None => match connect(target, tls.as_ref()).await {
                Ok(opened) => (opened, true),
                Err(why) => {
                    part.failed(|| why);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // The last answer's body has been read, but the connection's task
        // may not yet have taken note that the exchange is over: hyper
        // refuses a request sent before (`connection was not ready`).
        // Waiting costs nothing. A kept connection the target closed
        // between two requests fails here, before anything is sent, and the
        // loop opens another: no request failed. A new one closed at once is
        // a failure.
        if let Err(e) = conn.ready().await {
            if new {
                part.failed(|| format!("closed before the first request: {e}"));
            }
            continue;
        }
        let request = match http::Request::get(path.as_str())
            .header(http::header::HOST, host.as_str())
            .body(Empty::new())
        {
            Ok(request) => request,
            Err(e) => {
                part.failed(|| format!("the request: {e}"));
                break;
            }
        };
        let answer = async {
            let response = conn
                .send_request(request)
                .await
                .map_err(|e| format!("the request: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("the answer's body, after {status}: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body.len() as u64))
        };
        match answer.await {
            Ok((status, len)) => {
                if status.is_success() {
                    part.ok += 1;
                    part.bytes += len;
                    let latency = sent.elapsed().as_micros();
                    let _ = part
                        .histogram
                        .record(u64::try_from(latency).unwrap_or(u64::MAX).max(1));
                } else {
                    part.failed(|| format!("answered {status}"));
                }
                sender = Some(conn);
            }
            // The connection is dropped; the next request opens another.
            Err(why) => part.failed(|| why),
        }
    }
    part
}

/// Opens `count` keep-alive connections to `target` (over TLS when
/// `options.tls` says so), sends `GET options.path` on each and reads the
/// answer, and returns them open and idle (they close when dropped).
/// Connections that fail, or are not answered within 10 s, are left out.
/// Opened 256 at a time, so the target's listen backlog does not overflow.
/// `options`' connections, duration and rate do not apply.
pub async fn hold_idle(
    target: SocketAddr,
    count: usize,
    options: &LoadOptions,
) -> Vec<SendRequest<Empty<Bytes>>> {
    let mut held = Vec::with_capacity(count);
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..count {
        let (host, path) = (options.host.clone(), options.path.clone());
        let tls = options.tls.clone();
        let open = async move {
            let mut sender = connect(target, tls.as_ref()).await.ok()?;
            let request = http::Request::get(path.as_str())
                .header(http::header::HOST, host.as_str())
                .body(Empty::new())
                .ok()?;
            let response = sender.send_request(request).await.ok()?;
            response.into_body().collect().await.ok()?;
            Some(sender)
        };
        // A target out of descriptors stops accepting: never wait for it.
        opening.spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), open)
                .await
                .ok()
                .flatten()
        });
        if opening.len() >= 256 || i + 1 == count {
            while let Some(done) = opening.join_next().await {
                if let Ok(Some(sender)) = done {
                    held.push(sender);
                }
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two connections for 0.3 s, closed loop.
    fn short(host: &str, path: &str, tls: Option<ClientTls>) -> LoadOptions {
        LoadOptions {
            connections: 2,
            duration: Duration::from_millis(300),
            rate: None,
            host: host.into(),
            path: path.into(),
            tls,
        }
    }

    async fn stack() -> crate::Stack {
        crate::Stack::boot(crate::StackOptions::default())
            .await
            .expect("the stack boots")
    }

    #[tokio::test]
    async fn closed_loop_and_fixed_rate_runs_count_what_they_send() {
        let stack = stack().await;
        let mut options = short("localhost", "/welcome", None);
        let closed = run(stack.proxy_addr, &options).await;
        assert!(closed.ok > 0 && closed.errors == 0, "{closed:?}");
        assert_eq!(closed.first_error, None);
        assert!(closed.p50_us <= closed.p99_us && closed.p99_us <= closed.p999_us);
        options.rate = Some(100);
        let fixed = run(stack.proxy_addr, &options).await;
        // 100 r/s for 0.3 s: about 30 requests, give or take the edges.
        assert!((20..=40).contains(&fixed.ok), "{fixed:?}");
        let held = hold_idle(stack.proxy_addr, 20, &options).await;
        assert_eq!(
            held.len(),
            20,
            "every idle connection opened and was answered"
        );
        stack.shutdown().await;
    }

    #[tokio::test]
    async fn a_tls_target_is_loaded_over_https_and_an_untrusted_one_fails() {
        let stack = stack().await;
        // The stack's HTTPS site, with a certificate from its local CA.
        let root = ClientTls::new(&stack.ca_root_pem, "secure.localhost").expect("the CA's root");
        let mut options = short("secure.localhost", "/", Some(root));
        let trusted = run(stack.proxy_tls_addr, &options).await;
        assert!(trusted.ok > 0 && trusted.errors == 0, "{trusted:?}");
        let held = hold_idle(stack.proxy_tls_addr, 5, &options).await;
        assert_eq!(held.len(), 5, "every idle TLS connection opened");
        drop(held);

        // Another CA's root: every handshake fails, and each try is an error.
        let other = tempfile::tempdir().expect("a temporary folder");
        let (ca, _) = proxy::local_ca::LocalCa::open_or_create(other.path()).expect("a CA");
        options.tls = Some(ClientTls::new(ca.root_cert_pem(), "secure.localhost").expect("a root"));
        let untrusted = run(stack.proxy_tls_addr, &options).await;
        assert!(untrusted.ok == 0 && untrusted.errors > 0, "{untrusted:?}");
        let why = untrusted.first_error.unwrap_or_default();
        assert!(why.starts_with("TLS handshake: "), "{why}");
        stack.shutdown().await;
    }

    /// A server that answers `status` with `Connection: close`: it closes
    /// every connection after one answer.
    async fn one_answer_per_connection(status: u16) -> SocketAddr {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service =
                    service_fn(move |_: http::Request<hyper::body::Incoming>| async move {
                        http::Response::builder()
                            .status(status)
                            .header(http::header::CONNECTION, "close")
                            .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_target_closes_between_requests_is_no_failed_request() {
        // Each answer closes its connection; the next request goes on a new
        // one, and nothing counts as failed.
        let addr = one_answer_per_connection(200).await;
        let report = run(addr, &short("localhost", "/", None)).await;
        assert!(report.ok > 10 && report.errors == 0, "{report:?}");

        // A status other than 2xx is a failure, and says so.
        let addr = one_answer_per_connection(503).await;
        let report = run(addr, &short("localhost", "/", None)).await;
        assert!(report.ok == 0 && report.errors > 10, "{report:?}");
        assert_eq!(
            report.first_error.as_deref(),
            Some("answered 503 Service Unavailable")
        );
    }

    #[test]
    fn a_root_pem_without_a_certificate_is_refused() {
        let err = ClientTls::new("not a certificate", "localhost").expect_err("nothing to trust");
        assert!(err.contains("no certificate"), "{err}");
    }
}
