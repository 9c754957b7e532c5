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
//! **Reload** ([`ReloadHandle::reload`], which `proxy run` calls on SIGHUP):
//! the new configuration replaces the old one atomically (see
//! [`Proxy::reload`]); listeners whose address and kind did not change keep
//! their socket and their connections, new ones are opened first (a port
//! that cannot be had refuses the whole reload, and the old configuration
//! keeps serving), and the ones gone from the config stop accepting. Requests
//! in flight finish on the configuration they started with.
//!
//! **Streams** (`[[stream]]`, layer 4, see [`crate::stream`]) have accept
//! loops of their own: each accepted connection is served by
//! [`stream::serve`](crate::stream::serve) with the configuration of the
//! moment. A reload treats them like HTTP listeners: a stream whose `listen`
//! did not change keeps its socket (and picks up its new upstream, timeouts
//! and limit for the next connection), new ones are opened first, gone ones
//! stop accepting. Open stream connections go on with the configuration they
//! started with, and, like tunnels, are not waited for at shutdown.
//!
//! With `admin` set, [`ProxyServer::bind`] also opens the admin listener
//! ([`crate::admin`]: `/metrics`, `/health`); it is kept as it is across
//! reloads.
//!
//! Shutdown is graceful: when the `shutdown` future completes, the listeners
//! close, idle keep-alive connections are closed, and requests in flight get
//! `shutdown_timeout` ([`SHUTDOWN_GRACE`] by default) to finish. Open tunnels are not waited for: they end
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
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Config, Listener, ServerName, ServerTls, Stream};
use crate::conn_timeouts::{self, ConnActivity, ConnTimeouts, WatchedIo};
use crate::local_ca::{CaError, LocalCa};
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::{self, SniResolver};
use crate::upstream::resolve::Resolver;

/// How long requests in flight may take to finish after shutdown begins,
/// unless `shutdown_timeout` says otherwise.
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
    /// The admin listener's address could not be opened.
    #[error(
        "cannot open the admin listener on {addr}: {source}; pick another port in `admin = {{ addr = ... }}`"
    )]
    AdminBind {
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
    /// A terminating `[[stream]]`'s certificate could not be had.
    #[error(transparent)]
    StreamTls(#[from] crate::stream::terminate::TerminateError),
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
    /// Each socket, with the listener as the config wrote it.
    listeners: Vec<(Listener, TcpListener)>,
    /// The certificates TLS listeners present; replaced on reload.
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    proxy: Arc<Proxy>,
    /// The admin listener (`/metrics`, `/health`), when `admin` is set.
    admin: Option<TcpListener>,
    /// Each `[[stream]]` socket, with its listen address as the config wrote it.
    streams: Vec<(SocketAddr, TcpListener)>,
    reloads: mpsc::Receiver<ReloadRequest>,
    reload_sender: mpsc::Sender<ReloadRequest>,
}

/// A new configuration for the running server, and where to say how it went.
type ReloadRequest = (Config, oneshot::Sender<Result<Reloaded, StartError>>);

/// Asks a running [`ProxyServer`] to serve another configuration.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    sender: mpsc::Sender<ReloadRequest>,
}

/// What a reload changed about the listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Listeners kept as they were (same socket, connections untouched).
    pub kept: Vec<SocketAddr>,
    /// Listeners opened for the new configuration.
    pub opened: Vec<SocketAddr>,
    /// Listeners closed because the new configuration has them no more.
    pub closed: Vec<SocketAddr>,
    /// Stream listeners kept, opened and closed, in the same sense.
    pub streams: (Vec<SocketAddr>, Vec<SocketAddr>, Vec<SocketAddr>),
}

/// Why a reload did not happen; the old configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A new listener or certificate could not be had.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The server is not running (any more).
    #[error("the proxy is not running")]
    NotRunning,
}

impl ReloadHandle {
    /// Swaps in `config` (already validated) and waits until it serves.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((config, reply))
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        Ok(answer.await.map_err(|_| ReloadError::NotRunning)??)
    }
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|(configured, l)| {
                let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                if configured.tls {
                    format!("https://{addr}")
                } else {
                    format!("http://{addr}")
                }
            })
            .collect();
        let tls = self.tls.load().is_some();
        f.debug_struct("ProxyServer")
            .field("tls", &tls)
            .field("listeners", &listeners)
            .field("admin", &self.admin_addr())
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
            let configured = listener.clone();
            let socket = bind(listener).await?;
            listeners.push((configured, socket));
        }
        let mut streams = Vec::with_capacity(config.streams.len());
        for stream in &config.streams {
            if let Some(tls) = &stream.tls {
                // Fail at start, not at the first client.
                crate::stream::terminate::acceptor(&config, tls)?;
            }
        }
        for stream in &mut config.streams {
            let configured = stream.addr;
            streams.push((configured, bind_stream(stream).await?));
        }
        let admin = match &config.admin {
            Some(admin) => Some(bind_admin(admin.addr).await?),
            None => None,
        };
        let (reload_sender, reloads) = mpsc::channel(4);
        Ok(ProxyServer {
            listeners,
            streams,
            admin,
            tls: Arc::new(ArcSwapOption::from(acceptor.map(Arc::new))),
            proxy: Arc::new(Proxy::with_resolver(config, resolver)),
            reloads,
            reload_sender,
        })
    }

    /// A handle to reload this server's configuration while it runs.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            sender: self.reload_sender.clone(),
        }
    }

    /// The addresses actually bound, in config order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }

    /// The `[[stream]]` listeners' bound addresses, in config order (port 0 resolved).
    pub fn stream_addrs(&self) -> Vec<SocketAddr> {
        self.streams
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }

    /// The admin listener's bound address (port 0 resolved), if `admin` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The URLs of the listeners, `http://` or `https://` as they speak.
    pub fn urls(&self) -> Vec<String> {
        self.listeners
            .iter()
            .filter_map(|(configured, l)| {
                let scheme = if configured.tls { "https" } else { "http" };
                l.local_addr().ok().map(|a| format!("{scheme}://{a}"))
            })
            .collect()
    }

    /// The proxy that serves the requests.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Serves connections until `shutdown` completes, then shuts down
    /// gracefully; meanwhile applies the reloads sent through
    /// [`reload_handle`](Self::reload_handle).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let ProxyServer {
            listeners,
            tls,
            proxy,
            admin,
            streams,
            mut reloads,
            reload_sender,
        } = self;
        drop(reload_sender);
        // The admin listener lives as long as the server, across reloads.
        let (stop_admin, admin_stopped) = watch::channel(false);
        let admin_task = admin.map(|listener| {
            tokio::spawn(crate::admin::serve(listener, proxy.clone(), admin_stopped))
        });
        let snapshot = proxy.snapshot();
        let http = http_builder(
            &ConnTimeouts {
                header: snapshot.config.client_header_timeout,
                keepalive: snapshot.config.keepalive_timeout,
            },
            &snapshot.config.head_limits,
        );
        let serving = Arc::new(Serving {
            proxy,
            tls,
            http: ArcSwap::from_pointee(http),
            graceful: GracefulShutdown::new(),
            cut_off: watch::Sender::new(false),
        });
        let mut accepting = Vec::new();
        for (configured, socket) in listeners {
            accepting.push(HttpLoop::start(configured, socket, &serving));
        }
        let mut streaming = Vec::new();
        for (configured, socket) in streams {
            streaming.push(StreamLoop::start(configured, socket, &serving));
        }

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some((config, reply)) = reloads.recv() => {
                    let result = reload(&serving, &mut accepting, &mut streaming, config).await;
                    match &result {
                        Ok(done) => tracing::info!(kept = ?done.kept, opened = ?done.opened, closed = ?done.closed, streams = ?done.streams, "configuration reloaded"),
                        Err(err) => tracing::error!("reload refused, the old configuration keeps serving: {err}"),
                    }
                    let _ = reply.send(result);
                }
            }
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        for accept_loop in accepting {
            accept_loop.stop().await;
        }
        for stream_loop in streaming {
            stream_loop.stop().await;
        }
        let _ = stop_admin.send(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        let grace = serving.proxy.snapshot().config.shutdown_timeout;
        // The accept loops are gone, and with them every other handle.
        let Ok(serving) = Arc::try_unwrap(serving) else {
            return;
        };
        let cut_off = serving.cut_off;
        if tokio::time::timeout(grace, serving.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still running after {grace:?} (shutdown_timeout); closing them"
            );
            cut_off.send_replace(true);
        }
    }
}

/// What every accept loop shares, and a reload replaces.
struct Serving {
    proxy: Arc<Proxy>,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    /// hyper's connection settings (keep-alive on or off).
    http: ArcSwap<auto::Builder<TokioExecutor>>,
    graceful: GracefulShutdown,
    /// Set when shutdown's grace period is over: every connection still
    /// open is dropped.
    cut_off: watch::Sender<bool>,
}

impl Serving {
    /// The connection clocks of the configuration serving now.
    fn timeouts(&self) -> ConnTimeouts {
        let snapshot = self.proxy.snapshot();
        ConnTimeouts {
            header: snapshot.config.client_header_timeout,
            keepalive: snapshot.config.keepalive_timeout,
        }
    }
}

/// hyper's settings for client connections: the clocks, and the head limits
/// it enforces while reading (an HTTP/1 head over `max_request_head_size` or
/// with more than `max_headers` lines gets 431 from hyper itself, before a
/// byte more is buffered; see [`crate::request_head`] for the rest).
fn http_builder(
    timeouts: &ConnTimeouts,
    limits: &crate::config::HeadLimits,
) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer would also run while a connection is idle;
    // conn_timeouts keeps both clocks instead.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(!timeouts.keepalive.is_zero())
        .max_headers(limits.max_headers)
        // Validated to be at least hyper's minimum (8 KiB), so this never panics.
        .max_buf_size(
            limits
                .max_request_head_size
                .max(crate::config::MIN_REQUEST_HEAD_SIZE),
        );
    http.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_head_size).unwrap_or(u32::MAX));
    http
}

/// Opens `listener`'s address; port 0 becomes the port the OS chose, written
/// back so redirects name it.
async fn bind(listener: &mut Listener) -> Result<TcpListener, StartError> {
    let socket = TcpListener::bind(listener.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: listener.addr,
            source,
        })?;
    if let Ok(bound) = socket.local_addr() {
        listener.addr = bound;
    }
    Ok(socket)
}

/// Opens a `[[stream]]` address; port 0 becomes the port the OS chose,
/// written back so logs and metrics name it.
async fn bind_stream(stream: &mut Stream) -> Result<TcpListener, StartError> {
    let socket = TcpListener::bind(stream.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: stream.addr,
            source,
        })?;
    if let Ok(bound) = socket.local_addr() {
        stream.addr = bound;
    }
    Ok(socket)
}

/// Opens the admin listener; a warning when it is reachable from other
/// machines, since it shows the proxy's internals.
async fn bind_admin(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let socket = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::AdminBind { addr, source })?;
    let bound = socket.local_addr().unwrap_or(addr);
    if !addr.ip().is_loopback() {
        tracing::warn!(%bound, "the admin listener is reachable from other machines: /metrics shows routes and upstream servers; use a loopback address (127.0.0.1) unless a firewall guards it");
    }
    tracing::info!("admin listener (/metrics, /health) on http://{bound}");
    Ok(socket)
}

/// One listening socket's accept loop, running in its own task: an HTTP
/// `[[listen]]` (`C` = [`Listener`]) or a `[[stream]]` (`C` = its address).
struct AcceptLoop<C> {
    /// The listener as the config wrote it (port 0 stays 0): what a reload
    /// compares.
    configured: C,
    /// The address it is bound to.
    bound: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// An HTTP `[[listen]]`'s accept loop.
type HttpLoop = AcceptLoop<Listener>;
/// A `[[stream]]` listener's accept loop.
type StreamLoop = AcceptLoop<SocketAddr>;

impl<C> AcceptLoop<C> {
    /// Accepts on `socket` until stopped, handing each connection to
    /// `serve` (which must not wait: it spawns what serves the connection).
    fn spawn(
        configured: C,
        bound: SocketAddr,
        socket: TcpListener,
        serve: impl Fn(TcpStream, SocketAddr) + Send + 'static,
    ) -> AcceptLoop<C> {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = socket.accept() => match accepted {
                        Ok((stream, client)) => serve(stream, client),
                        Err(err) => accept_failed(err).await,
                    },
                }
            }
        });
        AcceptLoop {
            configured,
            bound,
            stop,
            task,
        }
    }

    /// Stops accepting and closes the socket (connections already accepted go on).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl HttpLoop {
    /// An HTTP listener: each connection is served by hyper, after TLS when
    /// the listener has it.
    fn start(configured: Listener, socket: TcpListener, serving: &Arc<Serving>) -> Self {
        let bound = socket.local_addr().unwrap_or(configured.addr);
        let serving = serving.clone();
        let tls = configured.tls;
        let accept_proxy = configured.accept_proxy_protocol;
        AcceptLoop::spawn(configured, bound, socket, move |stream, client| {
            let acceptor = if tls { serving.tls.load_full() } else { None };
            serve_connection(
                stream,
                client,
                acceptor.map(|a| (*a).clone()),
                accept_proxy,
                &serving,
            );
        })
    }
}

impl StreamLoop {
    /// A `[[stream]]` listener. It reads its stream's settings from the live
    /// configuration at each connection: the stream whose address is the one
    /// this socket is bound to (bound addresses are written back into the
    /// config, at start and on reload, so each names one stream).
    fn start(configured: SocketAddr, socket: TcpListener, serving: &Arc<Serving>) -> Self {
        let bound = socket.local_addr().unwrap_or(configured);
        let serving = serving.clone();
        AcceptLoop::spawn(configured, bound, socket, move |stream, client| {
            let snapshot = serving.proxy.snapshot();
            if let Some(index) = snapshot.config.streams.iter().position(|s| s.addr == bound) {
                tokio::spawn(crate::stream::serve(stream, client, snapshot, index));
            }
        })
    }
}

/// Stops every loop of `running` whose address is not in `kept`; returns
/// the addresses it stopped.
async fn stop_all_but<C>(running: &mut Vec<AcceptLoop<C>>, kept: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut closed = Vec::new();
    for loop_ in std::mem::take(running) {
        if kept.contains(&loop_.bound) {
            running.push(loop_);
        } else {
            closed.push(loop_.bound);
            loop_.stop().await;
        }
    }
    closed
}

/// Applies a new configuration: new listeners are opened and the TLS
/// certificates made first, so that any failure leaves everything as it
/// was; then the configuration is swapped in, and listeners it no longer
/// has stop.
async fn reload(
    serving: &Arc<Serving>,
    accepting: &mut Vec<HttpLoop>,
    streaming: &mut Vec<StreamLoop>,
    mut config: Config,
) -> Result<Reloaded, StartError> {
    let acceptor = if config.listeners.iter().any(|l| l.tls) {
        Some(tls_acceptor(&config)?)
    } else {
        None
    };
    let mut kept = Vec::new();
    let mut opened = Vec::new();
    for listener in &mut config.listeners {
        let configured = listener.clone();
        // Two listeners written alike (port 0) are two sockets: each running
        // one is kept for one of them only.
        let running = accepting
            .iter()
            .find(|a| a.configured == configured && !kept.contains(&a.bound));
        match running {
            Some(running) => {
                listener.addr = running.bound;
                kept.push(running.bound);
            }
            None => {
                let socket = bind(listener).await?;
                opened.push((configured, socket));
            }
        }
    }
    // Streams alike: matched by their listen address as written.
    let mut streams_kept: Vec<SocketAddr> = Vec::new();
    let mut streams_opened = Vec::new();
    for stream in &mut config.streams {
        let configured = stream.addr;
        let running = streaming
            .iter()
            .find(|s| s.configured == configured && !streams_kept.contains(&s.bound));
        match running {
            Some(running) => {
                stream.addr = running.bound;
                streams_kept.push(running.bound);
            }
            None => {
                let socket = bind_stream(stream).await?;
                streams_opened.push((configured, socket));
            }
        }
    }
    let admin_before = serving.proxy.snapshot().config.admin.clone();
    if config.admin != admin_before {
        tracing::warn!(
            "`admin` changed: the admin listener stays as it was until the proxy restarts"
        );
    }
    serving.tls.store(acceptor.map(Arc::new));
    serving.proxy.reload(config);
    serving.http.store(Arc::new(http_builder(
        &serving.timeouts(),
        &serving.proxy.snapshot().config.head_limits,
    )));

    let closed = stop_all_but(accepting, &kept).await;
    let mut opened_addrs = Vec::new();
    for (configured, socket) in opened {
        let running = HttpLoop::start(configured, socket, serving);
        opened_addrs.push(running.bound);
        accepting.push(running);
    }

    let streams_closed = stop_all_but(streaming, &streams_kept).await;
    let mut streams_opened_addrs = Vec::new();
    for (configured, socket) in streams_opened {
        let running = StreamLoop::start(configured, socket, serving);
        streams_opened_addrs.push(running.bound);
        streaming.push(running);
    }
    Ok(Reloaded {
        kept,
        opened: opened_addrs,
        closed,
        streams: (streams_kept, streams_opened_addrs, streams_closed),
    })
}

/// Serves one client connection in its own task: the TLS handshake first on
/// TLS listeners, then HTTP, until the client closes the connection or one of
/// its timeouts cuts it off. With `accept_proxy` (the listener's
/// `accept_proxy_protocol`), a PROXY header from a trusted proxy comes
/// before all that, and names the client.
fn serve_connection(
    mut stream: TcpStream,
    client: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    accept_proxy: bool,
    serving: &Serving,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // What this connection is served with, as configured now.
    let timeouts = serving.timeouts();
    let proxy = serving.proxy.clone();
    let http = serving.http.load_full();
    let watcher = serving.graceful.watcher();
    let mut cut_off = serving.cut_off.subscribe();
    let open = proxy.metrics().connection_opened();
    let trusted = accept_proxy.then(|| proxy.snapshot());
    let serve = async move {
        // Counted as open until this task ends (the connection is closed).
        let _open = open;
        // From here on the client is the one the proxy in front names: its
        // address is what X-Forwarded-For, X-Real-IP, limits and logs see.
        let client = match trusted {
            None => client,
            Some(snapshot) => {
                let accepted = crate::stream::proxy_protocol::accept(
                    &mut stream,
                    client,
                    &snapshot.config.trusted_proxies,
                    timeouts
                        .header
                        .min(crate::stream::proxy_protocol::ACCEPT_TIMEOUT),
                )
                .await;
                match accepted {
                    Ok(source) => source,
                    Err(reason) => {
                        tracing::warn!(peer = %client, %local, "connection closed: {reason}");
                        return;
                    }
                }
            }
        };
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
    };
    tokio::spawn(async move {
        tokio::select! {
            () = serve => {}
            // Shutdown's grace period is over: the connection is dropped.
            _ = cut_off.wait_for(|cut| *cut) => tracing::debug!(%client, "cut off at shutdown"),
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
