//! Layer 4: TCP streams, passed to an upstream without being read.
//!
//! Everything else in this proxy works at **layer 7**, the application
//! layer: it reads each HTTP request, so it can route on the host name and
//! the path, add headers, cache, compress, retry a failed request on another
//! server. A `[[stream]]` listener works at **layer 4**, the transport layer
//! (nginx's `stream {}` block, HAProxy's `mode tcp`): it accepts a TCP
//! connection, picks a server, opens a TCP connection to it, and copies bytes
//! both ways, never looking at them.
//!
//! ```text
//!   layer 7 (HTTP)                        layer 4 (stream)
//!   client ──HTTP──▶ proxy ──HTTP──▶ app   client ──bytes──▶ proxy ──bytes──▶ db
//!          reads the request, decides           picks a server once per
//!          per request (host, path)             connection, then copies
//! ```
//!
//! What that buys and costs:
//! - **Any protocol**: a database, SMTP, SSH, MQTT, TLS the proxy holds no
//!   key for: bytes are bytes.
//! - **Less work per byte**: no parsing, no headers, one decision per
//!   connection. `lab bench` measures the difference against L7.
//! - **Blind**: no path routing, no `X-Forwarded-For` (the upstream sees the
//!   proxy's address unless PROXY protocol tells it the client's), no
//!   retries once bytes have flowed (the proxy cannot know what a request
//!   is), no caching, no per-request limits: the unit is the connection.
//!
//! # One connection's life ([`serve`])
//! 1. **Limit**: with `limit_conn`, a client address with `max` connections
//!    open already is closed at once (`end=limited`).
//! 2. **TLS** (optional, one of two): with `tls`, the handshake with the
//!    client ([`terminate`]), after which the decrypted bytes are what is
//!    forwarded (`end=tls_failed` if it fails or takes `preread_timeout`);
//!    with `sni`, the ClientHello is read without decrypting ([`sni`]) and
//!    the name in it picks the pool (exact, then longest wildcard, then the
//!    stream's `upstream`); its bytes are sent to the server first, so the
//!    server does the handshake itself. No match and no default, not TLS, or
//!    no ClientHello within `preread_timeout`: closed (`end=no_route`,
//!    `not_tls`, `preread_timeout`).
//! 3. **Pick and connect**: the pool's balancer picks among the servers that
//!    are up (the same [`UpstreamPool`] as HTTP, so `round_robin`,
//!    `least_conn` and `hash` on the client address behave as they do
//!    there). A connection refused or not made within `connect_timeout`
//!    counts against the server (passive health, `max_fails`) and the next
//!    server is tried, as long as the pool's `next_upstream` allows it
//!    (`error` for refusals, `timeout` for timeouts, `next_upstream_tries`).
//!    Nothing has been sent yet, so a retry is always safe here.
//! 4. **PROXY protocol** (`proxy_protocol = "v1"` or `"v2"`): the upstream
//!    connection starts with a header naming the client's address, the one
//!    thing an L4 proxy can tell the backend about the client.
//! 5. **Pipe**: bytes both ways ([`pipe`]), half-close respected, until both
//!    sides have closed, one breaks, or nothing moves for `idle_timeout`.
//! 6. **Log and count**: one access-log line and the stream metrics, with the
//!    bytes each way, the duration and how it ended ([`End`]).
//!
//! # The pieces
//! - [`pipe`]: the two-way copy, half-close respected, with the idle timeout.
//! - [`proxy_protocol`]: the PROXY protocol (v1 and v2), which tells a backend
//!   the client's address when the proxy cannot add a header.
//! - [`sni`]: the host name a TLS client asks for, read from its ClientHello
//!   without decrypting anything (nginx `ssl_preread`).
//! - [`terminate`]: TLS termination at layer 4, with the HTTPS side's
//!   certificates and local CA.

pub mod pipe;
pub mod proxy_protocol;
pub mod sni;
pub mod terminate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access_log::{self, LogFormat};
use crate::config::{LimitKey, Stream};
use crate::limit::{self, ConnPermit};
use crate::proxy::Snapshot;
use crate::upstream::{UpstreamPool, UpstreamServer};

/// How a stream connection ended: the `end=` of its log line and the `end`
/// label of `proxy_stream_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed first (or its connection broke).
    ClientClosed,
    /// The upstream closed first (or its connection broke).
    UpstreamClosed,
    /// Nothing moved either way for `idle_timeout`.
    IdleTimeout,
    /// No server of the pool could be connected to.
    ConnectFailed,
    /// The client had `limit_conn` connections open already.
    Limited,
    /// `accept_proxy_protocol`: the peer is not a trusted proxy, or its
    /// PROXY header was missing, malformed or too slow.
    ProxyProtocolRefused,
    /// With `sni`: the client's first bytes are not a TLS ClientHello.
    NotTls,
    /// With `sni`: no ClientHello within `preread_timeout`.
    PrereadTimeout,
    /// With `sni`: the name matches no entry and the stream has no default `upstream`.
    NoRoute,
    /// With `tls`: the handshake with the client failed or took too long.
    TlsFailed,
}

impl End {
    /// The word written in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::UpstreamClosed => "upstream_closed",
            End::IdleTimeout => "idle_timeout",
            End::ConnectFailed => "connect_failed",
            End::Limited => "limited",
            End::ProxyProtocolRefused => "proxy_protocol_refused",
            End::NotTls => "not_tls",
            End::PrereadTimeout => "preread_timeout",
            End::NoRoute => "no_route",
            End::TlsFailed => "tls_failed",
        }
    }
}

/// Serves one accepted connection of stream `index` of `snapshot`'s config,
/// from the limit check to the log line. Never fails: every failure is an
/// `end` reason.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, snapshot: Arc<Snapshot>, index: usize) {
    let Some(stream) = snapshot.config.streams.get(index) else {
        return;
    };
    let mut line = Line {
        client: peer,
        stream: stream.addr,
        sni: None,
        upstream: None,
        time: SystemTime::now(),
        started: Instant::now(),
        to_upstream: 0,
        to_client: 0,
    };
    let pool_name = |i: Option<usize>| {
        i.and_then(|i| snapshot.upstreams.get(i))
            .map(|p| p.name.clone())
    };
    // A proxy in front: its PROXY header names the client, who is then the
    // client for the limit, the balancer's hash, the log and the header
    // sent upstream.
    let peer = if stream.accept_proxy_protocol {
        match proxy_protocol::accept(
            &mut client,
            peer,
            &snapshot.config.trusted_proxies,
            proxy_protocol::ACCEPT_TIMEOUT,
        )
        .await
        {
            Ok(source) => source,
            Err(reason) => {
                tracing::warn!(peer = %peer, stream = %stream.addr, "stream: connection closed: {reason}");
                drop(client);
                line.finish(
                    &snapshot,
                    pool_name(stream.upstream).as_deref(),
                    End::ProxyProtocolRefused,
                );
                return;
            }
        }
    } else {
        peer
    };
    line.client = peer;
    let _permit = match take_slot(&snapshot, stream, peer) {
        Ok(permit) => permit,
        Err(()) => {
            // Dropping the socket closes it: at layer 4 there is no 503 to send.
            drop(client);
            line.finish(
                &snapshot,
                pool_name(stream.upstream).as_deref(),
                End::Limited,
            );
            return;
        }
    };
    // Small writes (a database's queries) go out at once, not after Nagle's wait.
    let _ = client.set_nodelay(true);
    let local = client.local_addr().unwrap_or(stream.addr);
    if stream.tls.is_none() {
        forward(client, local, &snapshot, stream, &mut line).await;
        return;
    }
    // TLS termination: the handshake first, then the decrypted bytes are
    // what gets forwarded (see [`terminate`]).
    let acceptor = snapshot.stream_tls.get(index).cloned().flatten();
    let handshake = async {
        match acceptor {
            Some(tls) => tokio_rustls::TlsAcceptor::from(tls)
                .accept(client)
                .await
                .ok(),
            None => None,
        }
    };
    match tokio::time::timeout(stream.preread_timeout, handshake).await {
        Ok(Some(tls)) => {
            line.sni = tls.get_ref().1.server_name().map(str::to_owned);
            forward(tls, local, &snapshot, stream, &mut line).await;
        }
        _ => line.finish(
            &snapshot,
            pool_name(stream.upstream).as_deref(),
            End::TlsFailed,
        ),
    }
}

/// The rest of a connection's life once the client's bytes can be read
/// (decrypted, with `tls`): the pool (by SNI, with `sni`), the connection to
/// a server, the PROXY header, the replay of the preread bytes, the pipe.
async fn forward<C>(
    mut client: C,
    local: SocketAddr,
    snapshot: &Snapshot,
    stream: &Stream,
    line: &mut Line,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let peer = line.client;
    // SNI passthrough: read the ClientHello (keeping its bytes), route on
    // the name in it, and send those bytes on first: the upstream does the
    // handshake, with its own certificate, as if the client had connected
    // to it directly.
    let mut replay = Vec::new();
    let pool_index = if stream.sni.is_empty() {
        stream.upstream
    } else {
        let fallback = stream
            .upstream
            .and_then(|i| snapshot.upstreams.get(i))
            .map(|p| p.name.clone());
        let end = match sni::preread(&mut client, stream.preread_timeout).await {
            Ok(read) => {
                replay = read.buffered;
                match read.sni {
                    sni::SniResult::Found(name) => {
                        let pool = stream.pool_for(Some(&name));
                        line.sni = Some(name);
                        pool.ok_or(End::NoRoute)
                    }
                    sni::SniResult::NoSni => stream.pool_for(None).ok_or(End::NoRoute),
                    sni::SniResult::NotTls(why) => {
                        tracing::debug!(client = %peer, "stream: not TLS: {why}");
                        Err(End::NotTls)
                    }
                    sni::SniResult::NeedMore => Err(match read.end {
                        sni::PrereadEnd::TimedOut => End::PrereadTimeout,
                        sni::PrereadEnd::Closed => End::ClientClosed,
                        _ => End::NotTls,
                    }),
                }
            }
            Err(_) => Err(End::ClientClosed),
        };
        match end {
            Ok(pool) => Some(pool),
            Err(end) => {
                drop(client);
                line.finish(snapshot, fallback.as_deref(), end);
                return;
            }
        }
    };
    let Some(pool) = pool_index.and_then(|i| snapshot.upstreams.get(i)) else {
        line.finish(snapshot, None, End::NoRoute);
        return;
    };
    let Some((mut upstream, server)) = connect(pool, stream, peer).await else {
        drop(client);
        line.finish(snapshot, Some(&pool.name), End::ConnectFailed);
        return;
    };
    line.upstream = Some(server.address.clone());
    // Counted as "in progress" for least_conn while the connection is open.
    let _busy = server.peer.begin_request();
    let _ = upstream.set_nodelay(true);
    // PROXY protocol: the header naming the client goes first, before any
    // byte of the client's (see [`proxy_protocol`]).
    if let Some(version) = stream.proxy_protocol {
        let header = proxy_protocol::ProxyHeader {
            source: peer,
            destination: local,
        };
        let bytes = proxy_protocol::encode(version, Some(&header));
        if upstream.write_all(&bytes).await.is_err() {
            line.finish(snapshot, Some(&pool.name), End::UpstreamClosed);
            return;
        }
    }
    if !replay.is_empty() {
        if upstream.write_all(&replay).await.is_err() {
            line.finish(snapshot, Some(&pool.name), End::UpstreamClosed);
            return;
        }
        line.to_upstream = replay.len() as u64;
    }
    let piped = pipe::pipe(client, upstream, stream.idle_timeout).await;
    line.to_upstream += piped.to_upstream;
    line.to_client = piped.to_client;
    line.finish(snapshot, Some(&pool.name), piped.end);
}

/// Takes a `limit_conn` slot for the client's address, if the stream has a
/// limit; `Err` when the client has `max` connections open already.
fn take_slot(
    snapshot: &Snapshot,
    stream: &Stream,
    peer: SocketAddr,
) -> Result<Option<ConnPermit>, ()> {
    let Some(limit) = &stream.limit_conn else {
        return Ok(None);
    };
    let (Some(zone), Some(zone_config)) = (
        snapshot.conn_zones.get(limit.zone),
        snapshot.config.conn_zones.get(limit.zone),
    ) else {
        return Ok(None);
    };
    let key = match zone_config.key {
        // `route` at layer 4: every client of this stream shares one count.
        LimitKey::Route => limit::LimitKey::hashed(format!("stream {}", stream.addr).as_bytes()),
        _ => limit::LimitKey::ip(peer.ip()),
    };
    match zone.try_acquire(key, limit.max) {
        Some(permit) => Ok(Some(permit)),
        None => {
            snapshot.metrics.shared.conn_limited(&zone.name);
            Err(())
        }
    }
}

/// Connects to a server of `pool`: the balancer's pick among the servers
/// that are up, and on a refusal or a timeout the next one (passive health
/// counts the failure), within the pool's `next_upstream` rules.
async fn connect(
    pool: &UpstreamPool,
    stream: &Stream,
    peer: SocketAddr,
) -> Option<(TcpStream, Arc<UpstreamServer>)> {
    // `hash` on the client address, spelt as the HTTP side spells it, so a
    // client lands on the same server at layer 4 and at layer 7.
    let key = pool
        .config
        .hash_key
        .as_ref()
        .map(|_| crate::balance::stable_hash(peer.ip().to_string().as_bytes()));
    let next = &pool.config.next_upstream;
    let servers = pool.servers().len();
    let tries = match next.tries {
        0 => servers,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    }
    .max(1);
    let started = Instant::now();
    let mut tried: Vec<Arc<str>> = Vec::new();
    while tried.len() < tries {
        let Ok(server) = pool.pick(key, &tried) else {
            tracing::warn!(upstream = %pool.name, client = %peer, "stream: no server left to connect to");
            return None;
        };
        let attempt =
            tokio::time::timeout(stream.connect_timeout, TcpStream::connect(&*server.address))
                .await;
        let timed_out = match attempt {
            Ok(Ok(socket)) => {
                pool.report_success(&server);
                return Some((socket, server));
            }
            Ok(Err(err)) => {
                tracing::warn!(upstream = %pool.name, server = %server.address, "stream: cannot connect: {err}");
                false
            }
            Err(_) => {
                tracing::warn!(upstream = %pool.name, server = %server.address, "stream: no connection within {} (connect_timeout)", humantime::format_duration(stream.connect_timeout));
                true
            }
        };
        pool.report_failure(&server);
        tried.push(server.address.clone());
        let go_on = if timed_out {
            next.on_timeout
        } else {
            next.on_error
        };
        let out_of_time = next.timeout.is_some_and(|limit| started.elapsed() >= limit);
        if !go_on || out_of_time {
            return None;
        }
    }
    None
}

/// One connection's access-log line, filled in as it goes.
struct Line {
    client: SocketAddr,
    stream: SocketAddr,
    /// The server name the client asked for (SNI), when one was read.
    sni: Option<String>,
    upstream: Option<Arc<str>>,
    time: SystemTime,
    started: Instant,
    to_upstream: u64,
    to_client: u64,
}

impl Line {
    /// Counts the connection in the metrics and writes its log line.
    fn finish(&self, snapshot: &Snapshot, pool: Option<&str>, end: End) {
        let listen = self.stream.to_string();
        snapshot.metrics.shared.stream_ended(
            &listen,
            pool.unwrap_or("-"),
            end.as_str(),
            self.to_upstream,
            self.to_client,
        );
        if access_log::is_on() {
            let line = self.render(
                snapshot.config.access_log.format,
                self.started.elapsed(),
                end,
            );
            tracing::info!(target: access_log::TARGET, "{line}");
        }
    }

    /// The line: who, to which server, the bytes each way, how long, how it
    /// ended; with `sni=` before `upstream=` when a server name was read.
    ///
    /// ```text
    /// 127.0.0.1:50312 - - [07/Dec/2026:04:10:00 +0000] "STREAM 127.0.0.1:9000" upstream=127.0.0.1:5432 to_upstream=512 to_client=2048 rt=1.204 end=client_closed
    /// 127.0.0.1:50314 - - [07/Dec/2026:04:10:01 +0000] "STREAM 127.0.0.1:9443" sni=a.example upstream=127.0.0.1:8443 to_upstream=1710 to_client=3120 rt=0.021 end=client_closed
    /// ```
    fn render(&self, format: LogFormat, took: Duration, end: End) -> String {
        let upstream = self.upstream.as_deref().unwrap_or("-");
        match format {
            LogFormat::Combined => format!(
                "{} - - [{}] \"STREAM {}\" {}upstream={upstream} to_upstream={} to_client={} rt={:.3} end={}",
                self.client,
                access_log::clf_time(self.time),
                self.stream,
                self.sni
                    .as_deref()
                    .map(|name| format!("sni={name} "))
                    .unwrap_or_default(),
                self.to_upstream,
                self.to_client,
                took.as_secs_f64(),
                end.as_str(),
            ),
            LogFormat::Json => serde_json::json!({
                "time": humantime::format_rfc3339_millis(self.time).to_string(),
                "remote_addr": self.client.to_string(),
                "stream": self.stream.to_string(),
                "sni": self.sni.as_deref(),
                "upstream": self.upstream.as_deref(),
                "bytes_to_upstream": self.to_upstream,
                "bytes_to_client": self.to_client,
                "duration": (took.as_secs_f64() * 1000.0).round() / 1000.0,
                "end": end.as_str(),
            })
            .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_names_both_ends_the_bytes_and_the_reason() {
        let line = Line {
            client: "127.0.0.1:50312".parse().expect("addr"),
            stream: "127.0.0.1:9000".parse().expect("addr"),
            sni: None,
            upstream: Some(Arc::from("127.0.0.1:5432")),
            time: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            to_upstream: 512,
            to_client: 2048,
        };
        let text = line.render(
            LogFormat::Combined,
            Duration::from_millis(1204),
            End::ClientClosed,
        );
        assert_eq!(
            text,
            "127.0.0.1:50312 - - [01/Jan/1970:00:00:00 +0000] \"STREAM 127.0.0.1:9000\" upstream=127.0.0.1:5432 to_upstream=512 to_client=2048 rt=1.204 end=client_closed"
        );
        let json: serde_json::Value = serde_json::from_str(&line.render(
            LogFormat::Json,
            Duration::from_millis(3),
            End::IdleTimeout,
        ))
        .expect("json");
        assert_eq!(json["end"], "idle_timeout");
        assert_eq!(json["bytes_to_client"], 2048);
    }

    #[test]
    fn a_passthrough_line_names_the_server_name_the_client_asked_for() {
        let line = Line {
            client: "127.0.0.1:50314".parse().expect("addr"),
            stream: "127.0.0.1:9443".parse().expect("addr"),
            sni: Some("a.example".into()),
            upstream: Some(Arc::from("127.0.0.1:8443")),
            time: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            to_upstream: 1710,
            to_client: 3120,
        };
        let text = line.render(
            LogFormat::Combined,
            Duration::from_millis(21),
            End::ClientClosed,
        );
        assert!(
            text.contains("\"STREAM 127.0.0.1:9443\" sni=a.example upstream=127.0.0.1:8443 "),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&line.render(
            LogFormat::Json,
            Duration::from_millis(21),
            End::NoRoute,
        ))
        .expect("json");
        assert_eq!(json["sni"], "a.example");
        assert_eq!(json["end"], "no_route");
    }
}
