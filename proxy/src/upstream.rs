//! Upstream pools: the servers behind the proxy, and the pooled connections to them.
//!
//! Opening a TCP connection costs a round trip (and a TLS handshake costs more),
//! so the proxy keeps connections to upstreams open after a response and reuses
//! them for later requests: HTTP/1.1 keep-alive. Each [`UpstreamPool`] has its
//! own client with its own connection pool and timeouts; hyper-util's pooled
//! client does the bookkeeping (idle connections are closed after 90 s, and a
//! request that finds a pooled connection closed by the upstream is retried on
//! a new one before any byte of it was sent).
//!
//! Usually the proxy talks plain HTTP to upstreams: it terminated TLS already,
//! and the upstream sits on a private network. A pool whose servers are written
//! `https://host:port` is spoken to over TLS instead, and the upstream's
//! certificate is verified like a browser would: against the system's trusted
//! roots, or the pool's `tls_ca_file`.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balance::Balancer;
use crate::body::ProxyBody;
use crate::config::{Upstream, UpstreamTls};
use crate::error::{ErrorKind, ProxyError, classify_client_error};

/// How long an idle pooled connection is kept before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A named group of interchangeable servers (nginx `upstream`), with a
/// balancer to spread requests and a client that pools connections.
#[derive(Debug)]
pub struct UpstreamPool {
    /// The pool's name from the config.
    pub name: String,
    servers: Vec<UpstreamServer>,
    balancer: Balancer,
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    read_timeout: Duration,
}

/// One server of a pool.
#[derive(Debug)]
pub struct UpstreamServer {
    /// `host:port`, as written in the config; shared with log lines.
    pub address: Arc<str>,
    authority: Authority,
}

impl UpstreamPool {
    /// Builds the pool for a validated upstream config.
    pub fn new(config: &Upstream) -> UpstreamPool {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls_config(&config.tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let servers = config
            .servers
            .iter()
            .filter_map(|address| {
                // Validation already parsed every address; skip rather than panic.
                let authority = address.parse::<Authority>().ok()?;
                Some(UpstreamServer {
                    address: Arc::from(address.as_str()),
                    authority,
                })
            })
            .collect::<Vec<_>>();
        UpstreamPool {
            name: config.name.clone(),
            balancer: Balancer::new(config.balance, servers.len()),
            servers,
            client,
            scheme: match config.tls {
                UpstreamTls::Off => Scheme::HTTP,
                UpstreamTls::On { .. } => Scheme::HTTPS,
            },
            read_timeout: config.read_timeout,
        }
    }

    /// How long the upstream may stay silent: for the response head, then
    /// between two reads of the body.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// The servers, in config order.
    pub fn servers(&self) -> &[UpstreamServer] {
        &self.servers
    }

    /// Asks the balancer for the server that gets this request.
    pub fn pick(&self) -> Option<&UpstreamServer> {
        self.servers.get(self.balancer.pick())
    }

    /// Sends `request` to `server` on a pooled connection and waits for the
    /// response head (not the body: that is streamed later). The request must
    /// already carry the path to send (origin form); the scheme and authority
    /// are added here.
    pub async fn send(
        &self,
        server: &UpstreamServer,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(server.authority.clone());
        parts.path_and_query = Some(path_and_query);
        *request.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| ProxyError::upstream(ErrorKind::Internal, &server.address, e))?;
        // Upstream connections are HTTP/1.1, whatever the client spoke.
        *request.version_mut() = Version::HTTP_11;

        match tokio::time::timeout(self.read_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(ProxyError::upstream(
                classify_client_error(&err),
                &server.address,
                err,
            )),
            Err(elapsed) => Err(ProxyError::upstream(
                ErrorKind::ResponseTimeout,
                &server.address,
                elapsed,
            )),
        }
    }
}

/// The TLS client settings of a pool: the roots its servers' certificates must
/// chain to. Plain-HTTP pools get an empty set; they never use it.
fn client_tls_config(tls: &UpstreamTls) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    match tls {
        UpstreamTls::Off => {}
        UpstreamTls::On { roots: Some(ca) } => {
            roots.add_parsable_certificates(ca.iter().cloned());
        }
        UpstreamTls::On { roots: None } => {
            let native = rustls_native_certs::load_native_certs();
            for err in &native.errors {
                tracing::warn!("reading the system's trusted certificates: {err}");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted certificates found on this system: https:// upstreams will fail; set tls_ca_file"
                );
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The ring provider supports the default versions; this cannot fail.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}
