//! What a backend learns at layer 4: an optional PROXY protocol header in
//! front of a connection (whoami's `--proxy-protocol`).
//!
//! A layer-4 proxy cannot add `X-Forwarded-For` (it never reads the HTTP), so
//! when told to (`proxy_protocol = "v1"` or `"v2"` on a `[[stream]]`) it sends
//! one header before the client's bytes naming the client's address: text in
//! version 1 (`PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n`), binary in
//! version 2 (a 12-byte signature, then the addresses). The proxy's own
//! `proxy::stream::proxy_protocol` is the full implementation; this one is the
//! small reader a backend needs, kept here because the sample services do not
//! depend on the proxy.
//!
//! whoami takes the header as *optional*: a connection that starts with
//! anything else is plain HTTP, served as usual. A real backend should not do
//! that (any client could then claim any address by writing the header
//! itself): it should require the header, and only from its proxies. whoami
//! is a teaching mirror, so it shows what arrived.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The version 2 signature (the spec's section 2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, `\r\n` included.
const V1_MAX_LEN: usize = 107;
/// The largest version 2 payload this reader accepts.
const V2_MAX_PAYLOAD: usize = 4096;

/// What a PROXY header said, as whoami reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySeen {
    /// `1` or `2`.
    pub version: u8,
    /// The client's address, as `ip:port`; `null` for a header that names no
    /// client (v1 `UNKNOWN`, v2 `LOCAL`: a health check from the proxy).
    pub source: Option<String>,
    /// The address the client connected to (the proxy's listener).
    pub destination: Option<String>,
}

/// A connection whose first bytes (read while looking for a header) are
/// handed out again before the rest of the stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads an optional PROXY header from the start of `stream`: `Ok((None,
/// ..))` when the connection starts with anything else, an error for a
/// header that is malformed or cut short. The returned stream replays every
/// byte after the header.
pub async fn read_optional<S: AsyncRead + Unpin>(
    mut stream: S,
) -> io::Result<(Option<ProxySeen>, Prefixed<S>)> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        match decide(&buf)? {
            Decision::NotProxy => return Ok((None, prefixed(buf, 0, stream))),
            Decision::Header(seen, used) => return Ok((Some(seen), prefixed(buf, used, stream))),
            Decision::More => {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    // Closed early: whatever came is served (and fails) as HTTP.
                    return Ok((None, prefixed(buf, 0, stream)));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

fn prefixed<S>(buf: Vec<u8>, at: usize, inner: S) -> Prefixed<S> {
    Prefixed {
        prefix: buf,
        at,
        inner,
    }
}

enum Decision {
    NotProxy,
    More,
    Header(ProxySeen, usize),
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// What the bytes so far are: no header, a header (and its length), or not
/// enough to tell.
fn decide(buf: &[u8]) -> io::Result<Decision> {
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf[..n] == v1[..n] {
        if buf.len() < v1.len() {
            return Ok(Decision::More);
        }
        return match buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) => Ok(Decision::Header(parse_v1(&buf[..end])?, end + 2)),
            None if buf.len() >= V1_MAX_LEN => Err(bad("PROXY v1 line longer than 107 bytes")),
            None => Ok(Decision::More),
        };
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Ok(Decision::NotProxy);
    }
    if buf.len() < 16 {
        return Ok(Decision::More);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(bad(format!("PROXY v2 payload of {len} bytes")));
    }
    if buf.len() < 16 + len {
        return Ok(Decision::More);
    }
    Ok(Decision::Header(
        parse_v2(buf[12], buf[13], &buf[16..16 + len])?,
        16 + len,
    ))
}

fn parse_v1(line: &[u8]) -> io::Result<ProxySeen> {
    let text = std::str::from_utf8(line).map_err(|_| bad("PROXY v1 line is not text"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(ProxySeen {
            version: 1,
            source: None,
            destination: None,
        }),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> io::Result<IpAddr> {
                let ip: IpAddr = s.parse().map_err(|_| bad(format!("bad address {s}")))?;
                if ip.is_ipv4() != (*family == "TCP4") {
                    return Err(bad(format!("{s} is not a {family} address")));
                }
                Ok(ip)
            };
            let port = |s: &str| -> io::Result<u16> {
                s.parse().map_err(|_| bad(format!("bad port {s}")))
            };
            Ok(ProxySeen {
                version: 1,
                source: Some(SocketAddr::new(ip(src)?, port(sport)?).to_string()),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?).to_string()),
            })
        }
        _ => Err(bad(format!("malformed PROXY v1 line {text:?}"))),
    }
}

fn parse_v2(ver_cmd: u8, family: u8, payload: &[u8]) -> io::Result<ProxySeen> {
    if ver_cmd >> 4 != 2 {
        return Err(bad(format!("PROXY v2 header of version {}", ver_cmd >> 4)));
    }
    let none = ProxySeen {
        version: 2,
        source: None,
        destination: None,
    };
    match ver_cmd & 0x0f {
        0 => return Ok(none),
        1 => {}
        other => return Err(bad(format!("PROXY v2 command {other}"))),
    }
    let (src, dst, ports) = match family {
        0x11 if payload.len() >= 12 => {
            let ip = |at: usize| -> IpAddr {
                Ipv4Addr::new(
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                )
                .into()
            };
            (ip(0), ip(4), 8)
        }
        0x21 if payload.len() >= 36 => {
            let ip = |at: usize| -> io::Result<IpAddr> {
                let octets: [u8; 16] = payload[at..at + 16]
                    .try_into()
                    .map_err(|_| bad("short IPv6 address"))?;
                Ok(Ipv6Addr::from(octets).into())
            };
            (ip(0)?, ip(16)?, 32)
        }
        0x11 | 0x21 => return Err(bad("PROXY v2 payload too short for its addresses")),
        // UNSPEC, UDP or UNIX sockets: no TCP client to report.
        _ => return Ok(none),
    };
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    Ok(ProxySeen {
        version: 2,
        source: Some(SocketAddr::new(src, port(ports)).to_string()),
        destination: Some(SocketAddr::new(dst, port(ports + 2)).to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> io::Result<(Option<ProxySeen>, Vec<u8>)> {
        let (seen, mut rest) = read_optional(bytes).await?;
        let mut after = Vec::new();
        rest.read_to_end(&mut after).await?;
        Ok((seen, after))
    }

    #[tokio::test]
    async fn a_v1_header_is_read_and_the_request_after_it_kept() {
        let (seen, after) =
            read(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\nGET / HTTP/1.1\r\n")
                .await
                .expect("read");
        let seen = seen.expect("a header");
        assert_eq!(seen.source.as_deref(), Some("203.0.113.7:51000"));
        assert_eq!(seen.destination.as_deref(), Some("192.0.2.1:80"));
        assert_eq!(after, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_from_the_spec_is_read() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[
            0x21, 0x11, 0, 12, 203, 0, 113, 7, 192, 0, 2, 1, 0xc7, 0x38, 0, 80,
        ]);
        bytes.extend_from_slice(b"hi");
        let (seen, after) = read(&bytes).await.expect("read");
        let seen = seen.expect("a header");
        assert_eq!(seen.version, 2);
        assert_eq!(seen.source.as_deref(), Some("203.0.113.7:51000"));
        assert_eq!(after, b"hi");
    }

    #[tokio::test]
    async fn no_header_leaves_every_byte_and_a_bad_one_is_an_error() {
        let (seen, after) = read(b"GET / HTTP/1.1\r\n").await.expect("read");
        assert_eq!(seen, None);
        assert_eq!(after, b"GET / HTTP/1.1\r\n");
        assert!(read(b"PROXY TCP4 nonsense\r\n").await.is_err());
        assert!(read(b"PROXY TCP4 ::1 ::1 1 2\r\n").await.is_err());
    }
}
