//! Keep-alive connections to the upstream servers, pooled per server.
//!
//! Opening a connection costs a round trip before the request can leave (and
//! a TLS handshake costs more), a new socket in both kernels, and one more
//! socket in `TIME_WAIT` when it closes. So after a response the proxy keeps
//! the connection and gives it to the next request for the same server:
//! HTTP/1.1 keep-alive, nginx's `keepalive` in an `upstream` block.
//!
//! Each [`UpstreamServer`](super::UpstreamServer) has its [`IdleConnections`]:
//! - [`Connector::send`] takes a connection that is ready for a request (an
//!   HTTP/1.1 connection carries one exchange at a time, so one still streaming
//!   an earlier response body is skipped), else opens one, sends the request
//!   on it, and puts it back as soon as the response head is in; it becomes
//!   ready again by itself once that response's body has been read;
//! - the upstream may close an idle connection at any time (its own keep-alive
//!   timeout); a request that meets such a connection before any byte of it
//!   was written goes on a new connection instead, so this is never an error;
//! - the close may also cross the request on the wire: the request went out,
//!   and the connection ended with no answer. The upstream then never saw it
//!   or dropped it, and the proxy cannot tell which. An idempotent request
//!   whose body is in memory (the caller hands over a `spare` copy of it) is
//!   sent once more on a new connection, as browsers do; anything else is an
//!   error, since a POST may have taken effect ([`is_stale`]);
//! - connections idle for longer than [`IDLE_TIMEOUT`] are closed, and at most
//!   [`MAX_IDLE_PER_SERVER`] are kept per server;
//! - a connection whose response is `101 Switching Protocols` (a WebSocket)
//!   is no longer HTTP: it is handed to the tunnel ([`crate::upgrade`]) and
//!   never goes back to the pool.
//!
//! Each connection runs in its own task (hyper's `Connection` future), which
//! reads and writes the socket; the proxy holds a `SendRequest` handle to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError, classify_connect_error, classify_send_error};

/// How long an idle connection is kept before the proxy closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most idle connections kept per server; more are closed after their response.
pub const MAX_IDLE_PER_SERVER: usize = 1024;

/// The idle keep-alive connections to one server.
#[derive(Debug, Default)]
pub struct IdleConnections {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl IdleConnections {
    /// A connection ready for a request, the most recently used first (the
    /// likeliest to be still open). Closed and expired ones are dropped on
    /// the way; busy ones stay for later.
    fn take(&self, now: Instant) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let Some(conn) = idle.get(i) else { break };
            if conn.sender.is_closed() {
                idle.swap_remove(i);
            } else if conn.sender.is_ready() {
                let conn = idle.swap_remove(i);
                if now.saturating_duration_since(conn.since) <= IDLE_TIMEOUT {
                    return Some(conn.sender);
                }
            }
        }
        None
    }

    /// Keeps `sender` for the next request, unless the server has enough.
    fn put(&self, sender: SendRequest<ProxyBody>, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_SERVER && !sender.is_closed() {
            idle.push(Idle { sender, since: now });
        }
    }

    /// Closes the connections that are closed already or idle for too long.
    pub fn prune(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| {
            let expired =
                c.sender.is_ready() && now.saturating_duration_since(c.since) > IDLE_TIMEOUT;
            !(c.sender.is_closed() || expired)
        });
    }

    /// How many connections are kept now (busy or idle).
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens connections to a pool's servers: TCP, then TLS for `https://` pools.
#[derive(Clone)]
pub struct Connector {
    /// The TLS client for `https://` pools.
    pub tls: Option<TlsConnector>,
    /// How long a connect (and TLS handshake) may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Connector {
    /// Sends `request` (origin form, `Host` set) to the server at `address`
    /// (`ip:port` or `host:port`) on a pooled connection, or a new one, and
    /// returns the response head; the body streams afterwards.
    ///
    /// `spare` is the request's body once more, for an idempotent request
    /// whose body is in memory (none, or small): if a pooled connection turns
    /// out to have been closed by the upstream as the request went out, the
    /// request goes again on a new connection. That is not a retry on
    /// another server: it counts as neither a try nor a failure.
    pub async fn send(
        &self,
        address: &str,
        idle: &IdleConnections,
        mut request: Request<ProxyBody>,
        mut spare: Option<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        while let Some(mut sender) = idle.take(Instant::now()) {
            // The copy to send again: made only for a kept connection.
            let again = spare.take().map(|body| same_request(&request, body));
            match sender.try_send_request(request).await {
                Ok(response) => {
                    keep_unless_switched(idle, sender, &response);
                    return Ok(response);
                }
                Err(mut failed) => match (failed.take_message(), again) {
                    // The upstream closed this connection before the request
                    // could be written: nothing was sent, try another.
                    (Some(unsent), again) => {
                        request = unsent;
                        spare = again.map(Request::into_body);
                    }
                    // It closed as the request went out: once more, on a
                    // new connection (see the module documentation).
                    (None, Some(again)) if is_stale(failed.error()) => {
                        tracing::debug!(
                            upstream = %address,
                            error = %failed.error(),
                            "a kept connection was closed by the upstream as the request went out; sending it again on a new connection"
                        );
                        request = again;
                        break;
                    }
                    (None, _) => return Err(send_error(address, failed.into_error())),
                },
            }
        }
        let mut sender = self.connect(address).await?;
        match sender.try_send_request(request).await {
            Ok(response) => {
                keep_unless_switched(idle, sender, &response);
                Ok(response)
            }
            Err(failed) => Err(send_error(address, failed.into_error())),
        }
    }

    /// Opens a new connection to `address` and starts its task.
    async fn connect(&self, address: &str) -> Result<SendRequest<ProxyBody>, ProxyError> {
        let connecting = async {
            let tcp = TcpStream::connect(address).await?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => handshake(tcp).await,
                Some(tls) => {
                    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                        .map_err(std::io::Error::other)?;
                    handshake(tls.connect(name, tcp).await?).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(sender)) => Ok(sender),
            Ok(Err(err)) => Err(ProxyError::upstream(
                classify_connect_error(&err),
                address,
                err,
            )),
            Err(elapsed) => Err(ProxyError::upstream(
                ErrorKind::ConnectionTimeout,
                address,
                elapsed,
            )),
        }
    }
}

/// Puts the connection back in the pool after a response head, unless the
/// upstream switched protocols: that connection now belongs to the tunnel.
fn keep_unless_switched(
    idle: &IdleConnections,
    sender: SendRequest<ProxyBody>,
    response: &Response<Incoming>,
) {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        idle.put(sender, Instant::now());
    }
}

/// The HTTP/1.1 handshake on a new socket (nothing is exchanged yet); the
/// connection's task is spawned here.
async fn handshake<T>(io: T) -> std::io::Result<SendRequest<ProxyBody>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // With upgrades, a 101 hands the socket over to the tunnel.
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!("upstream connection ended: {err}");
        }
    });
    Ok(sender)
}

/// Whether `err`, on a kept connection, says the upstream closed it with no
/// byte of answer, or reset it: what a keep-alive close crossing the request
/// looks like. Not a timeout, not an answer that is not HTTP.
pub fn is_stale(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            );
        }
        source = e.source();
    }
    false
}

/// A copy of `request`'s head with `body`, to send it again.
fn same_request(request: &Request<ProxyBody>, body: ProxyBody) -> Request<ProxyBody> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// A failed exchange; a failure of the client's body is not the upstream's,
/// so it does not name it (in `Proxy-Status`).
fn send_error(address: &str, err: hyper::Error) -> ProxyError {
    let kind = classify_send_error(&err);
    ProxyError {
        kind,
        upstream: kind.is_upstream_failure().then(|| address.to_owned()),
        cause: Some(err.into()),
    }
}

/// Starts the pool's pruning task: every 30 s, connections idle past
/// [`IDLE_TIMEOUT`] are closed, even when no request comes to notice them.
/// The task holds the pool weakly and ends with it.
pub fn start_pruning(pool: &Arc<super::UpstreamPool>) {
    let weak = Arc::downgrade(pool);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            let now = Instant::now();
            for server in pool.servers().iter() {
                server.connections.prune(now);
            }
        }
    });
    pool.keep_task(task.abort_handle());
}
