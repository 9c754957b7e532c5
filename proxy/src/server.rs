//! Accepting connections and serving HTTP on them.
//!
//! [`ProxyServer::bind`] opens every `[[listen]]` address up front, so a port
//! that is taken is reported before the proxy claims to be up. [`ProxyServer::run`]
//! then accepts connections on all of them; each connection gets its own task,
//! which speaks HTTP/1.1 or HTTP/2 (hyper-util's `auto` builder reads the first
//! bytes to tell) and hands every request to [`Proxy::handle_request`].
//!
//! Shutdown is graceful: when the `shutdown` future completes, the listeners
//! close, idle keep-alive connections are closed, and requests in flight get
//! [`SHUTDOWN_GRACE`] to finish.

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

use crate::config::Config;
use crate::proxy::{ConnInfo, Proxy};

/// How long requests in flight may take to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A listen address that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", hint(source))]
pub struct BindError {
    /// The address from the config.
    pub addr: SocketAddr,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
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
#[derive(Debug)]
pub struct ProxyServer {
    listeners: Vec<TcpListener>,
    proxy: Arc<Proxy>,
}

impl ProxyServer {
    /// Opens every listen address of `config`.
    pub async fn bind(config: Config) -> Result<ProxyServer, BindError> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let socket = TcpListener::bind(listener.addr)
                .await
                .map_err(|source| BindError {
                    addr: listener.addr,
                    source,
                })?;
            listeners.push(socket);
        }
        Ok(ProxyServer {
            listeners,
            proxy: Arc::new(Proxy::new(config)),
        })
    }

    /// The addresses actually bound, in config order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The proxy that serves the requests.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Serves connections until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let snapshot = self.proxy.snapshot();
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(snapshot.config.client_header_timeout);
        http.http2().timer(TokioTimer::new());
        let http = Arc::new(http);
        // Shared by the accept loops, which each hand a watcher to every connection.
        let graceful = Arc::new(GracefulShutdown::new());

        let (stop_tx, _) = tokio::sync::watch::channel(false);
        let mut accept_loops = tokio::task::JoinSet::new();
        for listener in self.listeners {
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
                                stream, client, &proxy, &http, graceful.watcher(),
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

/// Serves one client connection in its own task.
fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    proxy: &Arc<Proxy>,
    http: &Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let conn = ConnInfo {
        client,
        local,
        proto: "http",
    };
    let proxy = proxy.clone();
    let http = http.clone();
    tokio::spawn(async move {
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle_request(request, conn).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        if let Err(err) = watcher.watch(connection).await {
            // Clients that disconnect or send garbage end up here; not our error.
            tracing::debug!(%client, "connection ended with an error: {err}");
        }
    });
}

/// Accepting fails when the process runs out of file descriptors: wait a
/// little instead of spinning, then go on.
async fn accept_failed(err: std::io::Error) {
    tracing::error!("accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
