//! The PROXY protocol: how a layer-4 proxy tells the backend who the client is.
//!
//! **The problem.** An HTTP proxy can write the client's address into a
//! header (`X-Forwarded-For`). A TCP proxy cannot: it copies bytes it does not
//! understand, so it has nowhere to put a note. The backend sees a connection
//! from the proxy's own address and every client looks the same: logs, rate
//! limits and allow lists all see one address.
//!
//! **The fix.** HAProxy's PROXY protocol (the specification is
//! `proxy-protocol.txt` in HAProxy's source tree, "The PROXY protocol, Versions
//! 1 & 2") has the proxy send **one header before the first byte of the
//! client's data**, naming the original source and destination addresses and
//! ports. The backend reads that header first, remembers the addresses, and
//! then treats the rest of the connection as if the client had connected
//! directly:
//!
//! ```text
//!  client 203.0.113.7:51000 ──TCP──▶ proxy ──TCP──▶ backend
//!                                       │
//!                                       └─ first bytes on the upstream connection:
//!                                          PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n
//!                                          ...then the client's bytes, untouched
//! ```
//!
//! Both ends must agree: a backend that does not expect the header sees
//! garbage before the real protocol, and a backend that expects it must refuse
//! a connection that lacks it (otherwise any client could claim any address
//! by sending the header itself). That is also why a listener accepts the
//! header only from trusted addresses (nginx `listen ... proxy_protocol` with
//! `set_real_ip_from`; `proxy_protocol on` sends it to upstreams).
//!
//! **Two versions.**
//! - **Version 1** is one line of text, at most 107 bytes:
//!   `PROXY TCP4 <src> <dst> <srcport> <dstport>\r\n`, `TCP6` for IPv6, or
//!   `PROXY UNKNOWN\r\n` when the proxy does not know (the backend then uses
//!   the connection's own addresses).
//! - **Version 2** is binary: a 12-byte signature that can never start a
//!   valid HTTP, TLS or text protocol message (`\r\n\r\n\0\r\nQUIT\n`), a
//!   version/command byte (`0x21` PROXY, `0x20` LOCAL: a health check from the
//!   proxy itself, carrying no client), a family/protocol byte (`0x11` TCP over
//!   IPv4, `0x21` TCP over IPv6), a 2-byte length, the addresses and ports in
//!   network byte order, then optional TLVs (type-length-value extras such as
//!   the TLS SNI). It is faster to parse and has room for extras; this module
//!   skips the TLVs.
//!
//! **Reading exactly the header.** Whatever follows the header belongs to the
//! client (a TLS ClientHello, an HTTP request) and must reach the next stage
//! intact. [`read_header`] therefore never reads past the header's last byte:
//! it reads the 15 bytes every header has at least, then only what the bytes
//! so far prove is still missing (the v2 length field, or the v1 line's
//! `\r\n`), so nothing has to be handed back.
//!
//! [`parse`] is the pure parser on a byte slice; [`encode`] writes either
//! version.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature: 12 bytes that start no other protocol (spec
/// section 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 line, `\r\n` included (spec section 2.1: "a receiver
/// [...] must not try to read more than 107 bytes").
pub const V1_MAX_LEN: usize = 107;

/// The shortest header of either version: `PROXY UNKNOWN\r\n` is 15 bytes, a
/// version 2 header at least 16. Reading this many bytes first can never
/// read past a header.
const MIN_HEADER_LEN: usize = 15;

/// The largest version 2 payload (addresses and TLVs, after the 16 fixed
/// bytes) this proxy accepts. The length field allows 65535; real headers
/// carry two addresses and a few TLVs, far under this, so a larger one is
/// refused rather than buffered.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// Which version of the protocol a header is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One line of text.
    V1,
    /// Binary, with a signature and a length.
    V2,
}

/// What a PROXY header says about the client's connection: the address the
/// client connected from and the address it connected to (the proxy's
/// listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and port.
    pub source: SocketAddr,
    /// The address and port the client connected to.
    pub destination: SocketAddr,
}

/// One parsed header and how many bytes of the input it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The version the header was written in.
    pub version: Version,
    /// The addresses, or `None` when the header carries none the receiver
    /// should use (v1 `UNKNOWN`, v2 `LOCAL`, v2 `UNSPEC` or UNIX sockets): the
    /// connection's own addresses stand.
    pub header: Option<ProxyHeader>,
    /// How many bytes the header took; the client's data starts there.
    pub consumed: usize,
}

/// Why a PROXY header was refused. A connection that presents one is closed:
/// the spec forbids guessing.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The input stops before the header does. [`parse`] returns this with the
    /// smallest total length the header can still have; from [`read_header`]
    /// it means the client closed the connection early.
    #[error("truncated PROXY header: {have} bytes, at least {need} needed")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// The smallest total length the header can have, given those bytes.
        need: usize,
    },
    /// The bytes start neither `PROXY ` (v1) nor the v2 signature: the peer
    /// does not speak the PROXY protocol (or is not a trusted proxy).
    #[error("not a PROXY protocol header (expected \"PROXY \" or the v2 signature)")]
    BadSignature,
    /// The v2 version nibble is not 2.
    #[error("unsupported PROXY protocol version {0} (expected 2 after the v2 signature)")]
    BadVersion(u8),
    /// The v2 command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("unknown PROXY v2 command {0:#x} (expected 0 LOCAL or 1 PROXY)")]
    BadCommand(u8),
    /// The v2 family/protocol byte, or the v1 protocol word, is not one the
    /// spec defines.
    #[error("unknown PROXY protocol family: {0}")]
    BadFamily(String),
    /// An address or port does not parse, does not match the family, or the
    /// v2 length is too short to hold the family's addresses.
    #[error("bad address in PROXY header: {0}")]
    BadAddress(String),
    /// The v1 line is not shaped like the spec's (wrong separators, fields,
    /// or line ending).
    #[error("malformed PROXY v1 line: {0}")]
    Malformed(&'static str),
    /// The header is longer than allowed: no `\r\n` within 107 bytes (v1),
    /// or a length field above [`V2_MAX_PAYLOAD`] (v2).
    #[error("PROXY header too long: {length} bytes, the limit is {limit}")]
    Oversized {
        /// The length seen or announced.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Reading from the connection failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header from the start of `stream`, and not one byte more:
/// the client's data stays in the stream for whatever reads next.
///
/// Returns the addresses, or `None` when the header carries none to use
/// (see [`Parsed::header`]). Put a timeout around it: a peer that sends half a
/// header and waits would otherwise hold the connection.
pub async fn read_header<R>(stream: &mut R) -> Result<Option<ProxyHeader>, ProxyProtocolError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    Ok(read(stream).await?.header)
}

/// [`read_header`], with the version and byte count too (for logs).
pub async fn read<R>(stream: &mut R) -> Result<Parsed, ProxyProtocolError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut buf = Vec::with_capacity(64);
    loop {
        match parse(&buf) {
            Err(ProxyProtocolError::Truncated { have, need }) => {
                // `need` is a lower bound on the header's length, so reading
                // up to it never takes a byte of the client's data.
                buf.resize(need, 0);
                let n = stream.read(&mut buf[have..need]).await?;
                buf.truncate(have + n);
                if n == 0 {
                    return Err(ProxyProtocolError::Truncated { have, need });
                }
            }
            other => return other,
        }
    }
}

/// Parses one PROXY header (either version) from the start of `input`.
///
/// `input` may hold more than the header (the client's data after it):
/// [`Parsed::consumed`] says where the header ends. When `input` is a prefix
/// of a header, the error is [`ProxyProtocolError::Truncated`] with the
/// smallest total length the header can have; bytes that can already be told
/// apart from any header fail at once, whatever their length.
pub fn parse(input: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    let Some(&first) = input.first() else {
        return Err(truncated(input, MIN_HEADER_LEN));
    };
    if first == b'P' {
        parse_v1(input)
    } else if first == V2_SIGNATURE[0] {
        parse_v2(input)
    } else {
        Err(ProxyProtocolError::BadSignature)
    }
}

fn truncated(input: &[u8], need: usize) -> ProxyProtocolError {
    ProxyProtocolError::Truncated {
        have: input.len(),
        need: need.max(input.len() + 1),
    }
}

/// Version 1 (spec section 2.1): `PROXY <proto> <src> <dst> <sport> <dport>\r\n`.
fn parse_v1(input: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    let prefix = b"PROXY ";
    let n = input.len().min(prefix.len());
    if input[..n] != prefix[..n] {
        return Err(ProxyProtocolError::BadSignature);
    }
    let window = &input[..input.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if let Some(_lf) = window.iter().position(|&b| b == b'\n') {
            return Err(ProxyProtocolError::Malformed(
                "line ends with a bare \\n (expected \\r\\n)",
            ));
        }
        // The `\r\n` still to come would end the line past 107 bytes.
        if input.len() + 2 > V1_MAX_LEN {
            return Err(ProxyProtocolError::Oversized {
                length: input.len() + 2,
                limit: V1_MAX_LEN,
            });
        }
        // No `\r` yet: the line needs at least `\r\n` more.
        return Err(truncated(input, (input.len() + 2).max(MIN_HEADER_LEN)));
    };
    if window[..cr].contains(&b'\n') {
        return Err(ProxyProtocolError::Malformed(
            "line ends with a bare \\n (expected \\r\\n)",
        ));
    }
    if cr + 2 > V1_MAX_LEN {
        return Err(ProxyProtocolError::Oversized {
            length: cr + 2,
            limit: V1_MAX_LEN,
        });
    }
    match input.get(cr + 1) {
        None => return Err(truncated(input, (cr + 2).max(MIN_HEADER_LEN))),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyProtocolError::Malformed("\\r not followed by \\n")),
    }
    let consumed = cr + 2;
    if consumed < MIN_HEADER_LEN {
        return Err(ProxyProtocolError::Malformed("line too short"));
    }
    let line = std::str::from_utf8(&input[prefix.len()..cr])
        .map_err(|_| ProxyProtocolError::Malformed("not ASCII text"))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let v6 = match proto {
        // Spec: "the receiver must ignore anything presented before the CRLF".
        "UNKNOWN" => {
            return Ok(Parsed {
                version: Version::V1,
                header: None,
                consumed,
            });
        }
        "TCP4" => false,
        "TCP6" => true,
        other => return Err(ProxyProtocolError::BadFamily(format!("{other:?}"))),
    };
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyProtocolError::Malformed(
            "expected exactly four fields after the protocol, separated by single spaces",
        ));
    };
    let source = SocketAddr::new(v1_addr(src, v6)?, v1_port(sport)?);
    let destination = SocketAddr::new(v1_addr(dst, v6)?, v1_port(dport)?);
    Ok(Parsed {
        version: Version::V1,
        header: Some(ProxyHeader {
            source,
            destination,
        }),
        consumed,
    })
}

fn v1_addr(text: &str, v6: bool) -> Result<IpAddr, ProxyProtocolError> {
    let bad = || {
        ProxyProtocolError::BadAddress(format!(
            "{text:?} is not an {} address",
            if v6 { "IPv6" } else { "IPv4" }
        ))
    };
    if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad())
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad())
    }
}

/// A port: decimal digits in 0..=65535, without a sign or leading zeros.
fn v1_port(text: &str) -> Result<u16, ProxyProtocolError> {
    let ok = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    ok.then(|| text.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| ProxyProtocolError::BadAddress(format!("{text:?} is not a port")))
}

/// Version 2 (spec section 2.2): signature, version/command, family/protocol,
/// length, then addresses and TLVs.
fn parse_v2(input: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyProtocolError::BadSignature);
    }
    if let Some(&ver_cmd) = input.get(12) {
        let version = ver_cmd >> 4;
        if version != 2 {
            return Err(ProxyProtocolError::BadVersion(version));
        }
        let command = ver_cmd & 0x0f;
        if command > 1 {
            return Err(ProxyProtocolError::BadCommand(command));
        }
    }
    if let Some(&fam) = input.get(13) {
        // The combinations the spec defines: UNSPEC, and TCP (1) or UDP (2)
        // over IPv4 (1x), IPv6 (2x), UNIX sockets (3x).
        if !matches!(fam, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
            return Err(ProxyProtocolError::BadFamily(format!("{fam:#04x}")));
        }
    }
    let (Some(&ver_cmd), Some(&fam), Some(len)) = (input.get(12), input.get(13), input.get(14..16))
    else {
        return Err(truncated(input, 16));
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyProtocolError::Oversized {
            length: 16 + len,
            limit: 16 + V2_MAX_PAYLOAD,
        });
    }
    let consumed = 16 + len;
    let Some(payload) = input.get(16..consumed) else {
        return Err(truncated(input, consumed));
    };
    let local = ver_cmd & 0x0f == 0;
    // LOCAL: "the receiver must accept this connection as valid and must use
    // the real connection endpoints and discard the protocol block".
    let header = if local {
        None
    } else {
        match fam >> 4 {
            1 => {
                let a = payload.get(..12).ok_or_else(|| short(len, 12, "IPv4"))?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                Some(ProxyHeader {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                })
            }
            2 => {
                let a = payload.get(..36).ok_or_else(|| short(len, 36, "IPv6"))?;
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                Some(ProxyHeader {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                })
            }
            3 => {
                // UNIX socket paths: no IP address to use; the length must
                // still hold both 108-byte paths.
                payload.get(..216).ok_or_else(|| short(len, 216, "UNIX"))?;
                None
            }
            _ => None,
        }
    };
    Ok(Parsed {
        version: Version::V2,
        header,
        consumed,
    })
}

fn short(len: usize, need: usize, family: &str) -> ProxyProtocolError {
    ProxyProtocolError::BadAddress(format!(
        "length {len} is too short for {family} addresses ({need} bytes)"
    ))
}

/// Writes a PROXY header in `version` for a connection from
/// `header.source` to `header.destination`; `None` writes the header for "no
/// addresses" (v1 `PROXY UNKNOWN\r\n`, v2 `LOCAL`).
///
/// Both addresses of a header share one family. When one is IPv4 and the
/// other IPv6 (a dual-stack listener), the IPv4 one is written in its
/// IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) and the header is TCP6.
pub fn encode(version: Version, header: Option<&ProxyHeader>) -> Vec<u8> {
    let addrs = header.map(|h| same_family(h.source.ip(), h.destination.ip()));
    match version {
        Version::V1 => {
            let (Some((src, dst)), Some(h)) = (addrs, header) else {
                return b"PROXY UNKNOWN\r\n".to_vec();
            };
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let (sport, dport) = (h.source.port(), h.destination.port());
            format!("PROXY {proto} {src} {dst} {sport} {dport}\r\n").into_bytes()
        }
        Version::V2 => {
            let mut out = Vec::with_capacity(16 + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            let (Some((src, dst)), Some(h)) = (addrs, header) else {
                // LOCAL, UNSPEC, no payload.
                out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
                return out;
            };
            let (fam, payload_len): (u8, u16) = match src {
                IpAddr::V4(_) => (0x11, 12),
                IpAddr::V6(_) => (0x21, 36),
            };
            out.push(0x21);
            out.push(fam);
            out.extend_from_slice(&payload_len.to_be_bytes());
            for ip in [src, dst] {
                match ip {
                    IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                    IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
                }
            }
            out.extend_from_slice(&h.source.port().to_be_bytes());
            out.extend_from_slice(&h.destination.port().to_be_bytes());
            out
        }
    }
}

/// The two addresses in one family: both IPv4 when they are, else both IPv6.
fn same_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (src, dst),
        _ => (to_v6(src), to_v6(dst)),
    }
}

fn to_v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v6 => v6,
    }
}

/// How long a proxy in front has to send its whole PROXY header before the
/// connection is closed: the header is sent at once with the connection, so
/// a peer that takes longer is not a proxy (or is stuck).
pub const ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a connection on a listener with `accept_proxy_protocol` was closed
/// before it began.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The peer is not in `trusted_proxies`: anything it says about a client
    /// could be invented, so it may not connect at all.
    #[error(
        "peer {0} is not in trusted_proxies, and this listener takes only connections that start with a PROXY header from a trusted proxy"
    )]
    Untrusted(std::net::IpAddr),
    /// No complete header within [`ACCEPT_TIMEOUT`].
    #[error("no complete PROXY header within {}", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    /// The header is missing (other bytes came first) or malformed.
    #[error(transparent)]
    Bad(#[from] ProxyProtocolError),
}

/// The start of a connection on a listener with `accept_proxy_protocol`:
/// checks the peer is a trusted proxy, reads its PROXY header within
/// `timeout`, and returns the address of the real client (the header's
/// source; the peer's own address for a header that names none, such as
/// v2 `LOCAL`, a health check from the proxy itself). The client's data is
/// left unread in `stream`.
pub async fn accept<R>(
    stream: &mut R,
    peer: SocketAddr,
    trusted: &crate::access::Networks,
    timeout: std::time::Duration,
) -> Result<SocketAddr, Refused>
where
    R: AsyncRead + Unpin + ?Sized,
{
    if !trusted.contains(peer.ip()) {
        return Err(Refused::Untrusted(peer.ip()));
    }
    match tokio::time::timeout(timeout, read_header(stream)).await {
        Err(_) => Err(Refused::Timeout(timeout)),
        Ok(Err(err)) => Err(Refused::Bad(err)),
        Ok(Ok(header)) => Ok(header.map_or(peer, |h| h.source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    fn v4_header() -> ProxyHeader {
        ProxyHeader {
            source: sa("192.168.0.1:56324"),
            destination: sa("192.168.0.11:443"),
        }
    }

    fn v6_header() -> ProxyHeader {
        ProxyHeader {
            source: sa("[2001:db8::1]:56324"),
            destination: sa("[2001:db8::11]:443"),
        }
    }

    // --- Version 1, spec section 2.1 ---------------------------------------

    #[test]
    fn v1_tcp4_is_the_spec_example_line() {
        // Section 2.1's example: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        // followed by the client's "GET / HTTP/1.1\r\n".
        let bytes = encode(Version::V1, Some(&v4_header()));
        assert_eq!(bytes, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
        let mut stream = bytes.clone();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
        let parsed = parse(&stream).expect("the spec example parses");
        assert_eq!(parsed.version, Version::V1);
        assert_eq!(parsed.header, Some(v4_header()));
        assert_eq!(parsed.consumed, bytes.len());
        assert_eq!(&stream[parsed.consumed..][..4], b"GET ");
    }

    #[test]
    fn v1_unknown_is_fifteen_bytes_and_carries_no_addresses() {
        // Section 2.1: "PROXY UNKNOWN\r\n" => 5 + 1 + 7 + 2 = 15 chars.
        assert_eq!(encode(Version::V1, None), b"PROXY UNKNOWN\r\n");
        let parsed = parse(b"PROXY UNKNOWN\r\n").expect("parses");
        assert_eq!((parsed.header, parsed.consumed), (None, 15));
    }

    #[test]
    fn v1_unknown_ignores_whatever_follows_the_word() {
        // Section 2.1: with UNKNOWN, the receiver must ignore the rest of the line.
        let line = b"PROXY UNKNOWN whatever the sender wrote 1 2\r\nrest";
        let parsed = parse(line).expect("parses");
        assert_eq!(parsed.header, None);
        assert_eq!(&line[parsed.consumed..], b"rest");
    }

    #[test]
    fn v1_worst_cases_from_the_spec_fit_in_107_bytes() {
        // Section 2.1 lists the longest lines: 56 (TCP4), 104 (TCP6), 107 (UNKNOWN).
        let tcp4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(tcp4.len(), 56);
        assert_eq!(parse(tcp4).expect("parses").consumed, 56);
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        let parsed = parse(tcp6.as_bytes()).expect("parses");
        assert_eq!(parsed.consumed, 104);
        assert_eq!(
            parsed.header.map(|h| h.source),
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from([0xff; 16])),
                65535
            ))
        );
        let unknown = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(parse(unknown.as_bytes()).expect("parses").consumed, 107);
    }

    #[test]
    fn v1_tcp6_round_trips() {
        let bytes = encode(Version::V1, Some(&v6_header()));
        assert_eq!(bytes, b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n");
        assert_eq!(parse(&bytes).expect("parses").header, Some(v6_header()));
    }

    #[test]
    fn mixed_families_are_written_as_ipv4_mapped_ipv6() {
        let h = ProxyHeader {
            source: sa("10.0.0.1:1000"),
            destination: sa("[::1]:9000"),
        };
        assert_eq!(
            encode(Version::V1, Some(&h)),
            b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1000 9000\r\n"
        );
        let v2 = parse(&encode(Version::V2, Some(&h))).expect("parses");
        assert_eq!(
            v2.header.map(|h| h.source),
            Some(sa("[::ffff:10.0.0.1]:1000"))
        );
    }

    // --- Version 2, spec section 2.2 ---------------------------------------

    #[test]
    fn v2_tcp4_bytes_follow_the_spec_layout() {
        // Section 2.2: 12-byte signature, then
        //   byte 13: 0x21 = version 2, command PROXY
        //   byte 14: 0x11 = AF_INET, STREAM
        //   bytes 15-16: length 12 (big-endian): src_addr(4) dst_addr(4) src_port(2) dst_port(2)
        let expected: Vec<u8> = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
            0x0A, // signature
            0x21, // version 2, PROXY
            0x11, // TCP over IPv4
            0x00, 0x0C, // 12 bytes follow
            192, 168, 0, 1, // source address
            192, 168, 0, 11, // destination address
            0xDC, 0x04, // source port 56324
            0x01, 0xBB, // destination port 443
        ];
        assert_eq!(encode(Version::V2, Some(&v4_header())), expected);
        let parsed = parse(&expected).expect("parses");
        assert_eq!(parsed.version, Version::V2);
        assert_eq!(parsed.header, Some(v4_header()));
        assert_eq!(parsed.consumed, 28);
    }

    #[test]
    fn v2_tcp6_bytes_follow_the_spec_layout() {
        // Section 2.2: 0x21 TCP over IPv6, length 36:
        //   src_addr(16) dst_addr(16) src_port(2) dst_port(2)
        let mut expected: Vec<u8> = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
            0x0A, // signature
            0x21, // version 2, PROXY
            0x21, // TCP over IPv6
            0x00, 0x24, // 36 bytes follow
        ];
        expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
        ]);
        expected.extend_from_slice(&[0xDC, 0x04, 0x01, 0xBB]);
        assert_eq!(encode(Version::V2, Some(&v6_header())), expected);
        assert_eq!(parse(&expected).expect("parses").header, Some(v6_header()));
    }

    #[test]
    fn v2_local_is_sixteen_bytes_and_carries_no_addresses() {
        // Section 2.2: command LOCAL (0x20), family UNSPEC (0x00), length 0.
        let expected: Vec<u8> = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00,
            0x00, 0x00,
        ];
        assert_eq!(encode(Version::V2, None), expected);
        let parsed = parse(&expected).expect("parses");
        assert_eq!((parsed.header, parsed.consumed), (None, 16));
    }

    #[test]
    fn v2_local_discards_an_address_block() {
        // LOCAL with an address block: the receiver uses the real endpoints.
        let mut bytes = encode(Version::V2, Some(&v4_header()));
        bytes[12] = 0x20;
        let parsed = parse(&bytes).expect("parses");
        assert_eq!((parsed.header, parsed.consumed), (None, 28));
    }

    #[test]
    fn v2_tlvs_after_the_addresses_are_skipped() {
        let mut bytes = encode(Version::V2, Some(&v4_header()));
        // PP2_TYPE_AUTHORITY (0x02), length 9, "a.example"; then PP2_TYPE_NOOP (0x04), length 2.
        let tlvs = [
            &[0x02, 0x00, 0x09][..],
            b"a.example",
            &[0x04, 0x00, 0x02, 0x00, 0x00],
        ]
        .concat();
        let len = u16::try_from(12 + tlvs.len()).expect("small");
        bytes[14..16].copy_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&tlvs);
        bytes.extend_from_slice(b"client data");
        let parsed = parse(&bytes).expect("parses");
        assert_eq!(parsed.header, Some(v4_header()));
        assert_eq!(&bytes[parsed.consumed..], b"client data");
    }

    #[test]
    fn v2_unix_and_unspec_carry_no_ip_addresses() {
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 0xD8]);
        unix.extend_from_slice(&[0u8; 216]);
        assert_eq!(parse(&unix).expect("parses").header, None);
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&unspec).expect("parses").header, None);
    }

    // --- Errors -------------------------------------------------------------

    fn err(input: &[u8]) -> ProxyProtocolError {
        parse(input).expect_err("must be refused")
    }

    #[test]
    fn other_protocols_are_not_proxy_headers() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROXX TCP4",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"G",
        ] {
            assert!(
                matches!(err(input), ProxyProtocolError::BadSignature),
                "{input:?}"
            );
        }
    }

    #[test]
    fn every_prefix_of_a_header_is_truncated_with_a_need_inside_the_header() {
        for bytes in [
            encode(Version::V1, Some(&v4_header())),
            encode(Version::V1, Some(&v6_header())),
            encode(Version::V1, None),
            encode(Version::V2, Some(&v4_header())),
            encode(Version::V2, Some(&v6_header())),
            encode(Version::V2, None),
        ] {
            for cut in 0..bytes.len() {
                match err(&bytes[..cut]) {
                    ProxyProtocolError::Truncated { have, need } => {
                        assert_eq!(have, cut);
                        assert!(need > cut && need <= bytes.len(), "{cut}: need {need}");
                    }
                    other => panic!("{cut}: {other}"),
                }
            }
        }
    }

    #[test]
    fn v2_with_another_version_nibble_is_refused() {
        let mut bytes = encode(Version::V2, Some(&v4_header()));
        bytes[12] = 0x11;
        assert!(matches!(err(&bytes), ProxyProtocolError::BadVersion(1)));
        bytes[12] = 0x31;
        assert!(matches!(
            err(&bytes[..13]),
            ProxyProtocolError::BadVersion(3)
        ));
    }

    #[test]
    fn v2_with_an_unassigned_command_is_refused() {
        let mut bytes = encode(Version::V2, Some(&v4_header()));
        bytes[12] = 0x22;
        assert!(matches!(err(&bytes), ProxyProtocolError::BadCommand(2)));
    }

    #[test]
    fn v2_with_an_undefined_family_is_refused() {
        let mut bytes = encode(Version::V2, Some(&v4_header()));
        for fam in [0x13, 0x41, 0x01, 0xff] {
            bytes[13] = fam;
            assert!(
                matches!(err(&bytes), ProxyProtocolError::BadFamily(_)),
                "{fam:#x}"
            );
        }
    }

    #[test]
    fn v2_length_too_short_for_its_family_is_a_bad_address() {
        let mut bytes = encode(Version::V2, Some(&v6_header()));
        bytes[14..16].copy_from_slice(&12u16.to_be_bytes());
        bytes.truncate(16 + 12);
        assert!(matches!(err(&bytes), ProxyProtocolError::BadAddress(_)));
    }

    #[test]
    fn v2_length_over_the_limit_is_refused_before_reading_it() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(
            err(&bytes),
            ProxyProtocolError::Oversized {
                length: 65551,
                limit: 4112
            }
        ));
    }

    #[test]
    fn v1_without_a_line_end_in_107_bytes_is_oversized() {
        let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
        assert!(matches!(
            err(long.as_bytes()),
            ProxyProtocolError::Oversized { limit: 107, .. }
        ));
        // Exactly 107 bytes ending in `\r`: the `\n` would be byte 108.
        let edge = format!("PROXY UNKNOWN {}\r", "x".repeat(92));
        assert_eq!(edge.len(), 107);
        assert!(matches!(
            err(edge.as_bytes()),
            ProxyProtocolError::Oversized { .. }
        ));
        let line_of_108 = format!("PROXY UNKNOWN {}\r\n", "x".repeat(92));
        assert!(matches!(
            err(line_of_108.as_bytes()),
            ProxyProtocolError::Oversized { length: 108, .. }
        ));
    }

    #[test]
    fn v1_bad_addresses_and_ports_are_refused() {
        for line in [
            &b"PROXY TCP4 192.168.0.256 192.168.0.11 56324 443\r\n"[..],
            b"PROXY TCP4 2001:db8::1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP6 192.168.0.1 2001:db8::11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 0443 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 -1\r\n",
            b"PROXY TCP6 [2001:db8::1] 2001:db8::11 56324 443\r\n",
        ] {
            assert!(
                matches!(err(line), ProxyProtocolError::BadAddress(_)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for line in [
            &b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n"[..],
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 9\r\n",
            b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",
            b"PROXY \r\n",
        ] {
            let e = err(line);
            assert!(
                matches!(
                    e,
                    ProxyProtocolError::Malformed(_) | ProxyProtocolError::BadAddress(_)
                ),
                "{}: {e}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(
            err(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            ProxyProtocolError::BadFamily(_)
        ));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n").to_string(),
            "not a PROXY protocol header (expected \"PROXY \" or the v2 signature)"
        );
        assert_eq!(
            err(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n").to_string(),
            "bad address in PROXY header: \"99999\" is not a port"
        );
    }

    // --- Reading from a stream ----------------------------------------------

    #[tokio::test]
    async fn read_header_leaves_the_client_data_unread() {
        for version in [Version::V1, Version::V2] {
            for header in [Some(v4_header()), Some(v6_header()), None] {
                let mut bytes = encode(version, header.as_ref());
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
                let mut reader = &bytes[..];
                let got = read_header(&mut reader).await.expect("a header");
                assert_eq!(got, header);
                assert_eq!(reader, b"GET / HTTP/1.1\r\n\r\n", "{version:?} {header:?}");
            }
        }
    }

    #[tokio::test]
    async fn read_header_never_reads_past_the_header_even_one_byte_at_a_time() {
        // A duplex pipe delivers writes as they come; the reader must not
        // wait for, or take, bytes past the header.
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut bytes = encode(Version::V1, Some(&v4_header()));
        bytes.extend_from_slice(b"hello");
        let writer = tokio::spawn(async move {
            for b in bytes {
                client.write_all(&[b]).await.expect("write");
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            read_header(&mut server).await.expect("a header"),
            Some(v4_header())
        );
        let _client = writer.await.expect("writer");
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.expect("the rest");
        assert_eq!(&rest, b"hello");
    }

    #[tokio::test]
    async fn a_header_cut_short_by_the_peer_is_truncated() {
        let bytes = encode(Version::V2, Some(&v6_header()));
        let mut reader = &bytes[..30];
        assert!(matches!(
            read_header(&mut reader).await,
            Err(ProxyProtocolError::Truncated { have: 30, need: 52 })
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_header(&mut empty).await,
            Err(ProxyProtocolError::Truncated { have: 0, .. })
        ));
    }

    #[tokio::test]
    async fn read_header_refuses_plain_http_from_an_untrusting_listener() {
        let mut reader = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(matches!(
            read_header(&mut reader).await,
            Err(ProxyProtocolError::BadSignature)
        ));
    }

    // --- Property: any bytes at all -----------------------------------------

    #[test]
    fn random_bytes_never_panic_and_never_consume_more_than_given() {
        let mut rng = fastrand::Rng::with_seed(0x0050_524f_5859);
        let seeds = [
            encode(Version::V1, Some(&v4_header())),
            encode(Version::V1, Some(&v6_header())),
            encode(Version::V2, Some(&v4_header())),
            encode(Version::V2, Some(&v6_header())),
            encode(Version::V2, None),
        ];
        for i in 0..20_000 {
            let input: Vec<u8> = if i % 2 == 0 {
                // Pure noise, sometimes starting like a header.
                let len = rng.usize(0..200);
                let start = rng.u8(0..3);
                let noise = (0..len).map(|_| rng.u8(..));
                match start {
                    0 => b"PROXY ".iter().copied().chain(noise).collect(),
                    1 => V2_SIGNATURE.into_iter().chain(noise).collect(),
                    _ => noise.collect(),
                }
            } else {
                // A real header with a few bytes changed and a random cut.
                let mut v = seeds[rng.usize(..seeds.len())].clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..v.len());
                    v[at] = rng.u8(..);
                }
                v.truncate(rng.usize(0..=v.len()));
                v
            };
            match parse(&input) {
                Ok(p) => assert!(p.consumed <= input.len() && p.consumed >= MIN_HEADER_LEN),
                Err(ProxyProtocolError::Truncated { have, need }) => {
                    assert_eq!(have, input.len());
                    assert!(need > have && need <= 16 + V2_MAX_PAYLOAD);
                }
                Err(_) => {}
            }
        }
    }
}
