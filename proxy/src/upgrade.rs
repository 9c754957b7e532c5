//! Upgrades: when an HTTP/1.1 connection stops being HTTP, and the proxy
//! becomes a pipe.
//!
//! **The handshake.** A WebSocket begins as an ordinary HTTP/1.1 request:
//!
//! ```text
//! GET /ws HTTP/1.1
//! Host: localhost
//! Connection: upgrade
//! Upgrade: websocket
//! Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
//! Sec-WebSocket-Version: 13
//! ```
//!
//! A server that agrees answers `101 Switching Protocols` with
//! `Upgrade: websocket` and `Sec-WebSocket-Accept` (a hash of the client's key,
//! proof that it understood the request), and from the next byte on, the
//! connection carries WebSocket frames both ways, whenever either side likes:
//! no more requests and responses. Any other protocol can be switched to the
//! same way (`Upgrade: h2c`, or a name of your own); the proxy does not need to
//! understand it.
//!
//! **Why the proxy keeps `Upgrade` and `Connection`.** Both are hop-by-hop
//! headers, which a proxy normally removes ([`crate::headers`]). Removed here,
//! the upstream would receive a plain GET and never switch. So for an
//! upgrade request the proxy sends those two headers on (nginx needs
//! `proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection
//! "upgrade";` for the same reason), and passes the upstream's 101 back with
//! its `Upgrade`, `Connection` and `Sec-WebSocket-Accept`.
//!
//! **Then the proxy is a pipe.** After the 101, both connections (client to
//! proxy, proxy to upstream) belong to the tunnel: [`tunnel`] copies whatever
//! bytes arrive on one to the other, in both directions at once, until one side
//! closes (then both are closed), or until no byte has moved either way for the
//! route's `websocket_idle_timeout` (nginx closes a silent WebSocket after its
//! `proxy_read_timeout`, 60 s by default). The proxy reads no frames: pings,
//! text, binary and close frames are all just bytes to it.
//!
//! **Why the upstream connection leaves the pool.** A pooled keep-alive
//! connection is one that can carry the next HTTP request. After a 101 it
//! speaks another protocol and belongs to one client, so it never goes back to
//! the idle pool ([`crate::upstream::connections`]); it is closed when the
//! tunnel ends. For the same reason the route's `limit_conn` slot and the
//! server's in-progress count (`least_conn`) stay taken as long as the tunnel
//! is open: a WebSocket is a request that lasts.
//!
//! **HTTP/2 is not upgraded.** HTTP/2 forbids `Connection` and `Upgrade` (it
//! has its own "extended CONNECT" for WebSockets, RFC 8441, which this proxy
//! does not offer), so a request over HTTP/2 is proxied as a normal request,
//! without those headers; a WebSocket client falls back to HTTP/1.1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::body::{self, ProxyBody};
use crate::headers;
use crate::stream::pipe::LastMoved;

/// The client's side of an upgrade it asked for, to be claimed once the 101
/// has been sent to it: `None` when the request asks for no upgrade (or
/// comes over HTTP/2). Must be taken before the request is consumed, since
/// hyper keeps it among the request's extensions.
pub fn take_client_side(request: &mut Request<Incoming>) -> Option<OnUpgrade> {
    headers::upgrade_protocol(request.version(), request.headers())?;
    Some(hyper::upgrade::on(request))
}

/// Turns the upstream's `101 Switching Protocols` into the client's: the
/// upstream's headers, hop-by-hop ones removed except `Upgrade` and
/// `Connection: upgrade`, and no body. Also returns the upstream's side of the
/// switched connection.
pub fn switched_response(mut upstream: Response<Incoming>) -> (Response<ProxyBody>, OnUpgrade) {
    let upstream_side = hyper::upgrade::on(&mut upstream);
    let (mut parts, _) = upstream.into_parts();
    let protocol = parts.headers.get(http::header::UPGRADE).cloned();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = protocol {
        headers::keep_upgrade(&mut parts.headers, protocol);
    }
    (Response::from_parts(parts, body::empty()), upstream_side)
}

/// Runs the tunnel in its own task: waits for both sides of the switched
/// connection (the client's becomes available once hyper has written the 101),
/// copies bytes between them with [`tunnel`], and then drops `guard` (the
/// route's connection-limit slot and the server's in-progress count).
pub fn spawn_tunnel<G: Send + 'static>(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    upstream_address: std::sync::Arc<str>,
    guard: G,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(upstream = %upstream_address, "upgrade abandoned: {err}");
                return;
            }
        };
        let done = tunnel(TokioIo::new(client), TokioIo::new(upstream), idle_timeout).await;
        tracing::debug!(
            upstream = %upstream_address,
            to_upstream = done.to_upstream,
            to_client = done.to_client,
            "tunnel closed: {}",
            done.end
        );
    });
}

/// What a tunnel carried, and why it ended.
#[derive(Debug)]
pub struct Tunnelled {
    /// Bytes copied from the client to the upstream.
    pub to_upstream: u64,
    /// Bytes copied from the upstream to the client.
    pub to_client: u64,
    /// Why it ended.
    pub end: TunnelEnd,
}

/// Why a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// The client closed its side (what it had sent was passed on first).
    ClientClosed,
    /// The upstream closed its side (what it had sent was passed on first).
    UpstreamClosed,
    /// No byte moved either way for the idle timeout.
    Idle(Duration),
    /// Reading or writing failed (a connection reset).
    Failed(std::io::Error),
}

impl std::fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelEnd::ClientClosed => f.write_str("the client closed it"),
            TunnelEnd::UpstreamClosed => f.write_str("the upstream closed it"),
            TunnelEnd::Idle(idle) => write!(
                f,
                "nothing moved for {} (websocket_idle_timeout)",
                humantime::format_duration(*idle)
            ),
            TunnelEnd::Failed(err) => write!(f, "{err}"),
        }
    }
}

/// Copies bytes both ways between `client` and `upstream` until one side
/// closes (its last bytes are passed on, the other side's write half is shut
/// down, then both are dropped) or until nothing has moved either way for
/// `idle_timeout`. The idle clock is tokio's, so tests can pause it.
pub async fn tunnel<C, U>(client: C, upstream: U, idle_timeout: Duration) -> Tunnelled
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::default();
    let (client_read, mut client_write) = tokio::io::split(client);
    let (upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut client_read = Counted {
        inner: client_read,
        activity: &activity,
        bytes: &activity.to_upstream,
    };
    let mut upstream_read = Counted {
        inner: upstream_read,
        activity: &activity,
        bytes: &activity.to_client,
    };
    let up = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        copied
    };
    let down = async {
        let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        copied
    };
    let end = tokio::select! {
        copied = up => copied.map_or_else(TunnelEnd::Failed, |_| TunnelEnd::ClientClosed),
        copied = down => copied.map_or_else(TunnelEnd::Failed, |_| TunnelEnd::UpstreamClosed),
        () = activity.silent_for(idle_timeout) => TunnelEnd::Idle(idle_timeout),
    };
    Tunnelled {
        to_upstream: activity.to_upstream.load(Ordering::Relaxed),
        to_client: activity.to_client.load(Ordering::Relaxed),
        end,
    }
}

/// When a byte last moved through a tunnel (the stream pipe's clock), and
/// how many moved each way.
#[derive(Default)]
struct Activity {
    moved: LastMoved,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.moved.touch();
    }

    async fn silent_for(&self, idle: Duration) {
        self.moved.silent_for(idle).await;
    }
}

/// A reader that counts the bytes it reads and notes when it last read some.
struct Counted<'a, R> {
    inner: R,
    activity: &'a Activity,
    bytes: &'a AtomicU64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.bytes.fetch_add(read as u64, Ordering::Relaxed);
            self.activity.touch();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn bytes_cross_both_ways_and_a_close_ends_the_tunnel() {
        let (mut client, client_proxy_side) = duplex(64);
        let (upstream_proxy_side, mut upstream) = duplex(64);
        let tunnel = tokio::spawn(tunnel(
            client_proxy_side,
            upstream_proxy_side,
            Duration::from_secs(60),
        ));
        client.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        upstream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        upstream.write_all(b"pong!").await.expect("write");
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong!");

        drop(client);
        let done = tunnel.await.expect("the tunnel ends");
        assert!(matches!(done.end, TunnelEnd::ClientClosed), "{done:?}");
        assert_eq!((done.to_upstream, done.to_client), (4, 5));
        // The upstream sees the end of the stream: the tunnel closed it too.
        let mut rest = Vec::new();
        assert_eq!(upstream.read_to_end(&mut rest).await.expect("eof"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_restarts_whenever_a_byte_moves() {
        let (mut client, client_proxy_side) = duplex(64);
        let (upstream_proxy_side, mut upstream) = duplex(64);
        let started = Instant::now();
        let tunnel = tokio::spawn(tunnel(
            client_proxy_side,
            upstream_proxy_side,
            Duration::from_secs(10),
        ));
        tokio::time::sleep(Duration::from_secs(7)).await;
        client.write_all(b"x").await.expect("write");
        let mut got = [0u8; 1];
        upstream.read_exact(&mut got).await.expect("read");
        let done = tunnel.await.expect("the tunnel ends");
        assert!(matches!(done.end, TunnelEnd::Idle(_)), "{done:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(17));
        // Both sides were closed.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.expect("eof"), 0);
        assert_eq!(upstream.read_to_end(&mut rest).await.expect("eof"), 0);
    }
}
