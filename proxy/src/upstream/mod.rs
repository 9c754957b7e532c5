//! Upstream pools: the servers behind the proxy, and the pooled connections to them.
//!
//! Opening a TCP connection costs a round trip (and a TLS handshake costs more),
//! so the proxy keeps connections to upstreams open after a response and reuses
//! them for later requests: HTTP/1.1 keep-alive. Each server of an
//! [`UpstreamPool`] keeps its own idle connections ([`connections`]: closed
//! after 90 s idle; a request that finds a pooled connection closed by the
//! upstream goes on a new one, since no byte of it was sent, and so does an
//! idempotent request with its body in memory that crossed the close).
//!
//! Usually the proxy talks plain HTTP to upstreams: it terminated TLS already,
//! and the upstream sits on a private network. A pool whose servers are written
//! `https://host:port` is spoken to over TLS instead, and the upstream's
//! certificate is verified like a browser would: against the system's trusted
//! roots, or the pool's `tls_ca_file`.
//!
//! Which server gets a request is the balancer's choice ([`crate::balance`]),
//! among the servers that are up: [`health`] keeps each server's passive and
//! active health, [`checks`] runs the active checks, and [`resolve`] keeps
//! the set of servers in step with DNS. Retries live in
//! [`crate::proxy::forward`], where the request's whole path can be read.

pub mod checks;
pub mod connections;
pub mod health;
pub mod resolve;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::uri::Authority;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::balance::{Balancer, Peer};
use crate::body::ProxyBody;
use crate::config::{Upstream, UpstreamServerConfig, UpstreamTls};
use crate::error::{ErrorKind, ProxyError};
use connections::{Connector, IdleConnections};
use health::{Change, ServerHealth};

/// A named group of interchangeable servers (nginx `upstream`), with a
/// balancer to spread requests, the servers' health, and a client that pools
/// connections.
#[derive(Debug)]
pub struct UpstreamPool {
    /// The pool's name from the config.
    pub name: String,
    /// Its settings: balancer, health, retries, timeouts.
    pub config: Upstream,
    /// The servers now. Replaced as a whole when DNS gives a new set.
    servers: ArcSwap<Vec<Arc<UpstreamServer>>>,
    balancer: Balancer,
    connector: Connector,
    /// Background tasks (health checks, DNS), stopped with the pool.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// One server of a pool.
#[derive(Debug)]
pub struct UpstreamServer {
    /// `ip:port` or `host:port` connected to; shared with log lines.
    pub address: Arc<str>,
    /// What the balancers see of it.
    pub peer: Arc<Peer>,
    /// Its health, passive and active.
    pub health: ServerHealth,
    /// The `Host` the upstream receives by default: the address as configured
    /// (a DNS name stays a name even when connecting to one of its addresses).
    pub host: HeaderValue,
    /// Its idle keep-alive connections.
    pub connections: IdleConnections,
}

impl AsRef<Peer> for UpstreamServer {
    fn as_ref(&self) -> &Peer {
        &self.peer
    }
}

impl AsRef<Peer> for Arc<UpstreamServer> {
    fn as_ref(&self) -> &Peer {
        &self.peer
    }
}

impl UpstreamServer {
    /// A server reached at `address` (`ip:port` or `host:port`), configured as `configured`.
    pub fn new(address: &str, configured: &UpstreamServerConfig) -> Option<UpstreamServer> {
        // Only a valid `host:port` makes a server.
        address.parse::<Authority>().ok()?;
        let peer = Arc::new(Peer::new(address, configured.weight));
        Some(UpstreamServer {
            address: peer.address.clone(),
            peer,
            health: ServerHealth::default(),
            host: HeaderValue::from_str(&configured.address).ok()?,
            connections: IdleConnections::default(),
        })
    }
}

/// Why no server could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// Every server is down (health) or was already tried.
    NoneLeft,
}

impl UpstreamPool {
    /// Builds the pool for a validated upstream config.
    pub fn new(config: &Upstream) -> UpstreamPool {
        let connector = Connector {
            tls: match config.tls {
                UpstreamTls::Off => None,
                UpstreamTls::On { .. } => Some(tokio_rustls::TlsConnector::from(Arc::new(
                    client_tls_config(&config.tls),
                ))),
            },
            connect_timeout: config.connect_timeout,
        };
        let servers = config
            .servers
            .iter()
            .filter_map(|server| UpstreamServer::new(&server.address, server).map(Arc::new))
            .collect::<Vec<_>>();
        UpstreamPool {
            name: config.name.clone(),
            balancer: Balancer::new(config.balance),
            servers: ArcSwap::from_pointee(servers),
            connector,
            config: config.clone(),
            tasks: Mutex::default(),
        }
    }

    /// How long the upstream may stay silent: for the response head, then
    /// between two reads of the body.
    pub fn read_timeout(&self) -> Duration {
        self.config.read_timeout
    }

    /// The servers now, in config order.
    pub fn servers(&self) -> Arc<Vec<Arc<UpstreamServer>>> {
        self.servers.load_full()
    }

    /// Asks the balancer for a server among those that are up and not in
    /// `tried` (the servers this request already failed on). `key` is the
    /// request's hash key, for `balance = "hash"`.
    pub fn pick(
        &self,
        key: Option<u64>,
        tried: &[Arc<str>],
    ) -> Result<Arc<UpstreamServer>, NoServer> {
        let servers = self.servers.load();
        let now = Instant::now();
        let passive = servers.len() > 1;
        let usable = |i: usize| {
            servers.get(i).is_some_and(|s| {
                s.health.is_available(now, passive) && !tried.iter().any(|t| *t == s.address)
            })
        };
        self.balancer
            .pick(&servers, usable, key)
            .and_then(|i| servers.get(i).cloned())
            .ok_or(NoServer::NoneLeft)
    }

    /// Passive health: counts a failed attempt on `server`, logging when it
    /// takes the server out of rotation.
    pub fn report_failure(&self, server: &UpstreamServer) {
        let change = server.health.failed(
            Instant::now(),
            self.config.max_fails,
            self.config.fail_timeout,
        );
        if let Change::Down(period) = change {
            tracing::warn!(
                upstream = %self.name,
                server = %server.address,
                "server marked down for {} after {} failure(s) (max_fails)",
                humantime::format_duration(period),
                self.config.max_fails,
            );
        }
    }

    /// Passive health: counts a successful attempt on `server`.
    pub fn report_success(&self, server: &UpstreamServer) {
        if server.health.succeeded(self.config.max_fails) == Change::Up {
            tracing::info!(upstream = %self.name, server = %server.address, "server is back up");
        }
    }

    /// Replaces the set of servers (DNS found a new one).
    pub fn replace_servers(&self, servers: Vec<Arc<UpstreamServer>>) {
        self.servers.store(Arc::new(servers));
    }

    /// Keeps a background task of this pool, stopped when the pool is dropped.
    pub fn keep_task(&self, task: tokio::task::AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Sends `request` to `server` on a pooled connection and waits for the
    /// response head (not the body: that is streamed later), at most
    /// `read_timeout` after the request body last moved. The request carries
    /// the path to send (origin form) and its `Host`. `spare` is its body
    /// once more, when it may be sent again on a new connection (see
    /// [`Connector::send`]).
    pub async fn send(
        &self,
        server: &UpstreamServer,
        mut request: Request<ProxyBody>,
        mut spare: Option<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        // Upstream connections are HTTP/1.1, whatever the client spoke.
        *request.version_mut() = Version::HTTP_11;
        // `read_timeout` counts from the last move of the request body (its
        // start, when it has none): an upload that takes longer than
        // `read_timeout` but keeps moving is not cut off; one the upstream
        // stopped reading stands still, and is.
        let started = Instant::now();
        let progress =
            (!http_body::Body::is_end_stream(request.body())).then(crate::body::Progress::default);
        if let Some(progress) = &progress {
            request = request.map(|body| progress.watch(body));
            spare = spare.map(|body| progress.watch(body));
        }
        let deadline = || {
            let moved = progress.as_ref().map_or(started, |p| p.last());
            moved + self.config.read_timeout
        };
        let exchange = self
            .connector
            .send(&server.address, &server.connections, request, spare);
        tokio::pin!(exchange);
        loop {
            match tokio::time::timeout_at(deadline(), &mut exchange).await {
                Ok(result) => return result,
                // The body moved since the deadline was set: wait on.
                Err(_) if deadline() > Instant::now() => {}
                Err(elapsed) => {
                    return Err(ProxyError::upstream(
                        ErrorKind::ResponseTimeout,
                        &server.address,
                        elapsed,
                    ));
                }
            }
        }
    }
}

impl Drop for UpstreamPool {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
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
    let mut config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The ring provider supports the default versions; this cannot fail.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    // Upstream connections speak HTTP/1.1 (ALPN says so to the server).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
