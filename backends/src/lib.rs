//! Sample services that the lab puts behind the reverse proxy.
//!
//! A reverse proxy is only interesting when there is something behind it. This
//! crate provides three small HTTP services, each chosen to make one proxy
//! behaviour visible to a learner:
//!
//! - a static **frontend** page that calls the other two through the proxy,
//! - a **whoami** echo service that tells you which replica answered and what
//!   the request looked like once it arrived (headers, client address),
//! - a **tasks-api** JSON API backed by SQLite that migrates its schema at
//!   start-up, like a typical real application.
//!
//! Non-goals: these are sample services, not production applications. They
//! have no authentication, no rate limiting, no configuration beyond a couple
//! of flags, and they favour code a learner can read in one sitting over
//! completeness.
//!
//! # Layout
//!
//! - [`frontend`]: the HTML page served at `/`, which calls `/api/whoami` and `/api/tasks`.
//! - [`whoami`]: echoes the request back as JSON, tagged with the replica's name.
//! - [`tasks_api`]: a tasks CRUD API on SQLite with versioned schema migrations.
//! - [`probe`]: `--probe`, each binary's own health check for containers without curl.
//! - [`serve`], [`shutdown_signal`] and [`init_tracing`]: the start-up and serving code every binary shares.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The type every sample service is built as; re-exported so the lab can
/// start services without depending on axum itself.
pub use axum::Router;

pub mod frontend;
pub mod probe;
pub mod proxy_protocol;
pub mod tasks_api;
pub mod whoami;

/// Serves `app` on an already bound `listener` until `shutdown` completes.
///
/// The caller binds the listener so it can pick port 0 and read back the port
/// the operating system chose before anything is served. Each connection's peer
/// address is made available to handlers (axum's `ConnectInfo<SocketAddr>`):
/// behind a proxy that address is the proxy's, which is exactly why proxies add
/// `X-Forwarded-For`.
///
/// Shutdown is graceful: once `shutdown` resolves, no new connections are
/// accepted and requests already in flight are allowed to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// [`serve`], for connections that may start with a PROXY protocol header
/// (whoami's `--proxy-protocol`): each connection's header, when it has one,
/// is handed to handlers as a [`proxy_protocol::ProxySeen`] request
/// extension, beside `ConnectInfo<SocketAddr>` (the TCP peer). A malformed
/// header closes the connection. Once `shutdown` resolves, no new
/// connections are accepted.
pub async fn serve_accepting_proxy_protocol(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        tokio::spawn(async move {
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                proxy_protocol::read_optional(stream),
            )
            .await;
            let (seen, stream) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(err)) => {
                    tracing::warn!(%peer, "connection closed: bad PROXY header: {err}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "connection closed: nothing within 5s");
                    return;
                }
            };
            let mut app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            if let Some(seen) = seen {
                app = app.layer(axum::Extension(seen));
            }
            let service = TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A future that resolves when the process is asked to stop: Ctrl-C in a
/// terminal (SIGINT), or SIGTERM, which is what `docker stop` and most process
/// supervisors send.
///
/// Handling SIGTERM matters for a service in a container: its main process is
/// PID 1 there, and PID 1 gets no default signal handling, so without this the
/// container would only die when the supervisor loses patience and sends
/// SIGKILL.
///
/// The signal handlers are installed when this function is called, not when
/// the future is first polled: a binary calls it before announcing that it
/// listens, so a signal sent any time after the announcement is handled.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};

        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            tokio::select! {
                () = wait_for(interrupt, "SIGINT") => tracing::info!("Ctrl-C received, shutting down"),
                () = wait_for(terminate, "SIGTERM") => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }

    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received, shutting down"),
            Err(err) => {
                tracing::warn!("cannot listen for Ctrl-C: {err}");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Waits for one delivery of a signal; if its handler could not be installed,
/// waits forever (the other signal can still stop the process).
#[cfg(unix)]
async fn wait_for(handler: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match handler {
        Ok(mut handler) => {
            handler.recv().await;
        }
        Err(err) => {
            tracing::warn!("cannot listen for {name}: {err}");
            std::future::pending::<()>().await;
        }
    }
}

/// Sets up logging for the binaries: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`).
///
/// Logs go to stderr so that stdout carries only the few lines a script or a
/// test may want to read, such as the "listening on" line.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
