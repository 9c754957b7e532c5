//! Accepting connections and serving HTTP on them.
//!
//! [`ProxyServer::bind`] opens every `[[listen]]` address up front, and
//! prepares the certificates of TLS listeners, so a port that is taken or a
//! certificate that cannot be had is reported before the proxy claims to be
//! up. [`ProxyServer::run`] then accepts connections on all of them; each
//! connection gets its own task, which does the TLS handshake on TLS listeners,
//! speaks HTTP/1.1 or HTTP/2 (chosen by ALPN, or on plain listeners by
//! hyper-util's `auto` builder reading the first bytes) and hands every request
//! to [`Proxy::handle_request`]. Its two clocks, the header timeout and the
//! keep-alive timeout, are kept by [`conn_timeouts`](crate::conn_timeouts).
//!
//! Connections are served with upgrades on: after a `101 Switching Protocols`
//! (a WebSocket), hyper hands the socket to the tunnel ([`crate::upgrade`])
//! and this connection's HTTP work is over.
//!
//! Shutdown is graceful: when the `shutdown` future completes, the listeners
//! close, idle keep-alive connections are closed, and requests in flight get
//! [`SHUTDOWN_GRACE`] to finish. Open tunnels are not waited for: they end
//! when either side closes, when they go idle, or when the process exits.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::body;
use crate::config::{Config, ServerName, ServerTls};
use crate::conn_timeouts::{self, ConnActivity, ConnTimeouts, WatchedIo};
use crate::local_ca::{CaError, LocalCa};
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::{self, SniResolver};
use crate::upstream::resolve::Resolver;

/// How long requests in flight may take to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be opened.
    #[error("cannot listen on {addr}: {source}{}", hint(source))]
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The local CA for `auto_local` certificates could not be used.
    #[error("cannot issue auto_local certificates: {0}")]
    LocalCa(#[from] CaError),
    /// An `auto_local` certificate could not be issued or loaded.
    #[error("cannot issue an auto_local certificate: {0}")]
    AutoLocal(#[from] tls::AutoLocalError),
    /// rustls refused the TLS settings (a bug: they are fixed).
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

fn hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another program uses this port: stop it, or pick another port in [[listen]]"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root: use a port such as 8080"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; this machine has no such address: use 127.0.0.1 or 0.0.0.0"
        }
        _ => "",
    }
}

/// The proxy with its listening sockets open, ready to [`run`](Self::run).
pub struct ProxyServer {
    /// Each socket, with the TLS acceptor of TLS listeners.
    listeners: Vec<(TcpListener, Option<TlsAcceptor>)>,
    proxy: Arc<Proxy>,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|(l, tls)| {
                let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                if tls.is_some() {
                    format!("https://{addr}")
                } else {
                    format!("http://{addr}")
                }
            })
            .collect();
        f.debug_struct("ProxyServer")
            .field("listeners", &listeners)
            .finish_non_exhaustive()
    }
}

impl ProxyServer {
    /// Prepares the certificates and opens every listen address of `config`.
    pub async fn bind(config: Config) -> Result<ProxyServer, StartError> {
        ProxyServer::bind_with_resolver(config, Resolver::System).await
    }

    /// Like [`bind`](Self::bind), looking upstream host names up with `resolver`.
    pub async fn bind_with_resolver(
        mut config: Config,
        resolver: Resolver,
    ) -> Result<ProxyServer, StartError> {
        let acceptor = if config.listeners.iter().any(|l| l.tls) {
            Some(tls_acceptor(&config)?)
        } else {
            None
        };
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &mut config.listeners {
            let socket =
                TcpListener::bind(listener.addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: listener.addr,
                        source,
                    })?;
            // Port 0 becomes the port the OS chose, so redirects name it.
            if let Ok(bound) = socket.local_addr() {
                listener.addr = bound;
            }
            listeners.push((socket, acceptor.clone().filter(|_| listener.tls)));
        }
        Ok(ProxyServer {
            listeners,
            proxy: Arc::new(Proxy::with_resolver(config, resolver)),
        })
    }

    /// The addresses actually bound, in config order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The URLs of the listeners, `http://` or `https://` as they speak.
    pub fn urls(&self) -> Vec<String> {
        self.listeners
            .iter()
            .filter_map(|(l, tls)| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                l.local_addr().ok().map(|a| format!("{scheme}://{a}"))
            })
            .collect()
    }

    /// The proxy that serves the requests.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Serves connections until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let snapshot = self.proxy.snapshot();
        let timeouts = ConnTimeouts {
            header: snapshot.config.client_header_timeout,
            keepalive: snapshot.config.keepalive_timeout,
        };
        let mut http = auto::Builder::new(TokioExecutor::new());
        // hyper's header timer would also run while a connection is idle;
        // conn_timeouts keeps both clocks instead.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(!timeouts.keepalive.is_zero());
        http.http2().timer(TokioTimer::new());
        let http = Arc::new(http);
        // Shared by the accept loops, which each hand a watcher to every connection.
        let graceful = Arc::new(GracefulShutdown::new());

        let (stop_tx, _) = tokio::sync::watch::channel(false);
        let mut accept_loops = tokio::task::JoinSet::new();
        for (listener, acceptor) in self.listeners {
            let mut stop = stop_tx.subscribe();
            let proxy = self.proxy.clone();
            let http = http.clone();
            let graceful = graceful.clone();
            accept_loops.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, client)) => serve_connection(
                                stream, client, acceptor.clone(), timeouts, &proxy, &http, graceful.watcher(),
                            ),
                            Err(err) => accept_failed(err).await,
                        },
                    }
                }
            });
        }

        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop_tx.send(true);
        while accept_loops.join_next().await.is_some() {}
        // The accept loops are gone, and with them every other handle.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing them");
        }
    }
}

/// Serves one client connection in its own task: the TLS handshake first on
/// TLS listeners, then HTTP, until the client closes the connection or one of
/// its timeouts cuts it off.
fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    timeouts: ConnTimeouts,
    proxy: &Arc<Proxy>,
    http: &Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let proxy = proxy.clone();
    let http = http.clone();
    tokio::spawn(async move {
        let conn = ConnInfo {
            client,
            local,
            proto: if acceptor.is_some() { "https" } else { "http" },
        };
        let activity = ConnActivity::new();
        let requests = activity.clone();
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let proxy = proxy.clone();
            // The connection is busy until this request's response is sent.
            let in_flight = requests.request_started(request.version());
            async move {
                let response = proxy.handle_request(request, conn).await;
                Ok::<_, Infallible>(response.map(|b| body::holding(b, in_flight)))
            }
        });
        let result = match acceptor {
            None => {
                let io = TokioIo::new(WatchedIo::new(stream, activity.clone()));
                // Boxed: passing hyper-util's connection future into a generic
                // async fn makes the compiler fail to prove it Send.
                let served: ServedConn<'_> =
                    Box::pin(watcher.watch(http.serve_connection_with_upgrades(io, service)));
                conn_timeouts::watch(activity, timeouts, served).await
            }
            Some(acceptor) => {
                // A client that opens a connection and never finishes the
                // handshake is cut off like one that never sends its headers.
                let handshake =
                    tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await;
                match handshake {
                    Ok(Ok(tls_stream)) => {
                        let io = TokioIo::new(WatchedIo::new(tls_stream, activity.clone()));
                        // Boxed: passing hyper-util's connection future into a generic
                        // async fn makes the compiler fail to prove it Send.
                        let served: ServedConn<'_> = Box::pin(
                            watcher.watch(http.serve_connection_with_upgrades(io, service)),
                        );
                        conn_timeouts::watch(activity, timeouts, served).await
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%client, "TLS handshake failed: {err}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%client, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        match result {
            Ok(Ok(())) => {}
            // Clients that disconnect or send garbage end up here; not our error.
            Ok(Err(err)) => tracing::debug!(%client, "connection ended with an error: {err}"),
            Err(why) => tracing::debug!(%client, "connection closed: {why:?}"),
        }
    });
}

/// A connection being served, until it ends (with hyper's error, if any).
type ServedConn<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>,
>;

/// Builds the TLS acceptor: every server's certificate under each of its
/// names, and a default certificate for clients whose name matches none (the
/// default server's, else the first server's that has one).
fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, StartError> {
    let mut ca = None;
    let mut certs = Vec::with_capacity(config.servers.len());
    for server in &config.servers {
        let cert = match &server.tls {
            None => None,
            Some(ServerTls::Files { loaded, .. }) => Some(loaded.clone()),
            Some(ServerTls::AutoLocal) => {
                if ca.is_none() {
                    ca = Some(open_local_ca(config)?);
                }
                let names: Vec<String> = server
                    .names
                    .iter()
                    .map(ServerName::to_string)
                    .filter(|n| n != "_")
                    .collect();
                match &ca {
                    Some(ca) => Some(tls::auto_local_cert(ca, &names)?),
                    None => None,
                }
            }
        };
        certs.push(cert);
    }
    let mut resolver = SniResolver::new();
    for (server, cert) in config.servers.iter().zip(&certs) {
        if let Some(cert) = cert {
            for name in &server.names {
                resolver.add(&name.to_string(), cert.clone());
            }
        }
    }
    if let Some(default) = certs
        .get(config.default_server)
        .and_then(Option::as_ref)
        .or_else(|| certs.iter().flatten().next())
    {
        resolver.set_default(default.clone());
    }
    Ok(TlsAcceptor::from(Arc::new(tls::server_config(resolver)?)))
}

fn open_local_ca(config: &Config) -> Result<LocalCa, StartError> {
    let dir = match &config.local_ca_dir {
        Some(dir) => dir.clone(),
        None => LocalCa::default_dir()?,
    };
    let (ca, created) = LocalCa::open_or_create(&dir)?;
    if created {
        tracing::warn!(
            "created a local CA in {}; to trust it: curl --cacert {} ..., or import that file in your browser",
            dir.display(),
            ca.root_cert_path().display()
        );
    }
    Ok(ca)
}

/// Accepting fails when the process runs out of file descriptors: wait a
/// little instead of spinning, then go on.
async fn accept_failed(err: std::io::Error) {
    tracing::error!("accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
