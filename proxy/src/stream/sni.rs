//! SNI preread: the host name a TLS client wants, read from its first message
//! without decrypting anything (nginx `ssl_preread on` and
//! `$ssl_preread_server_name`).
//!
//! **Why it works.** A TLS connection opens with the client's **ClientHello**,
//! sent in the clear: the keys do not exist yet. Among its extensions is
//! **Server Name Indication** (SNI, RFC 6066 section 3), the host name the
//! client wants to reach, so that one address can serve many names. A layer-4
//! proxy can read that name, choose an upstream by it, and then copy the
//! connection's bytes, ClientHello included, to that upstream unchanged:
//!
//! ```text
//!  client ──ClientHello(sni=a.example)──▶ proxy: peek "a.example" ──▶ backend A
//!         ◀──────────── TLS, end to end, never decrypted ───────────▶
//! ```
//!
//! This is **TLS passthrough**: the proxy routes TLS **without holding any
//! certificate or key**. The backend presents its own certificate and the
//! client verifies it end to end. The price: the proxy sees only that name (no
//! path, no headers, no cookies), and cannot cache, compress or add headers.
//! (With Encrypted Client Hello the real name is encrypted too, and only the
//! outer, public name can be routed on.)
//!
//! **What is parsed** (RFC 8446 section 4.1.2, RFC 5246 section 7.4.1.2):
//!
//! ```text
//! TLS record:  type 22 (handshake) | version 3.x | length (2)     5 bytes
//! Handshake:   type 1 (ClientHello) | length (3)                  4 bytes
//! ClientHello: version (2) | random (32)
//!              session id       (1-byte length + bytes)
//!              cipher suites    (2-byte length + bytes)
//!              compression      (1-byte length + bytes)
//!              extensions       (2-byte length, then each:
//!                                type (2) | length (2) | data)
//! server_name: extension type 0: list length (2), then entries
//!              name type (1; 0 = host_name) | length (2) | name
//! ```
//!
//! A ClientHello may be split over several TLS records (a large one, with
//! post-quantum key shares, or a client that fragments on purpose to hide the
//! name from simple filters); [`peek_sni`] joins the records' fragments
//! before parsing. Every length is checked against what encloses it, so no
//! input, however hostile, makes it panic.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest ClientHello accepted, and so the most a preread buffers: one
/// full TLS record (2^14 bytes of payload) plus its 5-byte header.
pub const MAX_PREREAD: usize = 16 * 1024 + 5;

/// The verdict on the bytes a client has sent so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniResult {
    /// A ClientHello naming this host (lowercased: names compare without case).
    Found(String),
    /// A complete ClientHello with no server name (a client connecting by
    /// IP address, or an old one): route to the default.
    NoSni,
    /// A valid beginning of a ClientHello; more bytes are needed.
    NeedMore,
    /// Not a TLS ClientHello, and why.
    NotTls(&'static str),
}

/// Reads the server name from the start of a TLS connection, `input` being
/// the bytes received so far. Pure and bounds-checked: any input gives a
/// verdict, never a panic.
pub fn peek_sni(input: &[u8]) -> SniResult {
    match client_hello(input) {
        Ok(hello) => match server_name(hello) {
            Ok(Some(name)) => SniResult::Found(name),
            Ok(None) => SniResult::NoSni,
            Err(Stop::NeedMore) => SniResult::NeedMore,
            Err(Stop::NotTls(why)) => SniResult::NotTls(why),
        },
        Err(Stop::NeedMore) => SniResult::NeedMore,
        Err(Stop::NotTls(why)) => SniResult::NotTls(why),
    }
}

/// Why parsing stopped early.
enum Stop {
    NeedMore,
    NotTls(&'static str),
}

/// The ClientHello's body (after the 4-byte handshake header), joined from as
/// many TLS records as it spans.
fn client_hello(input: &[u8]) -> Result<Vec<u8>, Stop> {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = input;
    loop {
        // The record header, checked byte by byte so that garbage is refused
        // as soon as its first byte arrives.
        match rest.first() {
            None => return Err(Stop::NeedMore),
            Some(22) => {}
            Some(0x80..=0xff) if handshake.is_empty() => {
                return Err(Stop::NotTls("an SSL 2 style ClientHello, not TLS"));
            }
            Some(_) if handshake.is_empty() => {
                return Err(Stop::NotTls("first byte is not 22 (TLS handshake record)"));
            }
            Some(_) => {
                return Err(Stop::NotTls(
                    "the ClientHello is interrupted by another record type",
                ));
            }
        }
        match rest.get(1) {
            None => return Err(Stop::NeedMore),
            Some(3) => {}
            Some(_) => return Err(Stop::NotTls("record version is not 3.x (TLS)")),
        }
        let Some(len) = rest.get(3..5) else {
            return Err(Stop::NeedMore);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len == 0 {
            return Err(Stop::NotTls("an empty handshake record"));
        }
        if len > 16 * 1024 {
            return Err(Stop::NotTls("a record longer than TLS allows (16 KiB)"));
        }
        let available = &rest[5..];
        let fragment = &available[..available.len().min(len)];
        handshake.extend_from_slice(fragment);

        // The handshake header, as soon as it is there.
        if let Some(&kind) = handshake.first()
            && kind != 1
        {
            return Err(Stop::NotTls(
                "the first handshake message is not a ClientHello",
            ));
        }
        if let Some(l) = handshake.get(1..4) {
            let body_len = usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2]);
            if body_len + 4 > MAX_PREREAD {
                return Err(Stop::NotTls("a ClientHello longer than 16 KiB"));
            }
            if handshake.len() >= 4 + body_len {
                handshake.truncate(4 + body_len);
                handshake.drain(..4);
                return Ok(handshake);
            }
        }
        if fragment.len() < len {
            return Err(Stop::NeedMore);
        }
        rest = &available[len..];
    }
}

/// A cursor over a complete message: running past its end means a length
/// field lied, so the input is not TLS.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if n > self.0.len() {
            return Err(Stop::NotTls(
                "a length runs past the end of the ClientHello",
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a 1-byte length prefix.
    fn vec8(&mut self) -> Result<&'a [u8], Stop> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a 2-byte length prefix.
    fn vec16(&mut self) -> Result<&'a [u8], Stop> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The host name in a complete ClientHello body, if it has one.
fn server_name(body: Vec<u8>) -> Result<Option<String>, Stop> {
    let mut c = Cursor(&body);
    let version = c.u16()?;
    if version >> 8 != 3 {
        return Err(Stop::NotTls("ClientHello version is not 3.x (TLS)"));
    }
    c.take(32)?; // random
    if c.vec8()?.len() > 32 {
        return Err(Stop::NotTls("session id longer than 32 bytes"));
    }
    let suites = c.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Stop::NotTls("cipher suite list empty or of odd length"));
    }
    if c.vec8()?.is_empty() {
        return Err(Stop::NotTls("no compression methods"));
    }
    if c.0.is_empty() {
        // A ClientHello may end here (TLS 1.2 and older): no extensions.
        return Ok(None);
    }
    let mut extensions = Cursor(c.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Cursor(data);
        let mut names = Cursor(list.vec16()?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec16()?;
            if name_type == 0 {
                return host_name(name).map(Some);
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// A DNS host name: ASCII letters, digits, `-`, `.`, `_`, 1 to 255 bytes.
fn host_name(name: &[u8]) -> Result<String, Stop> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(Stop::NotTls("the server name is not a DNS host name"));
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// Why [`preread`] stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrereadEnd {
    /// The bytes gave a verdict (found, no SNI, or not TLS).
    Verdict,
    /// The timeout passed first; the verdict is [`SniResult::NeedMore`].
    TimedOut,
    /// The client closed its side first.
    Closed,
    /// [`MAX_PREREAD`] bytes arrived without a verdict.
    Full,
}

/// What [`preread`] learnt, with the bytes it read: send them to the upstream
/// first, so that the upstream sees the connection from its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preread {
    /// The verdict on the bytes read.
    pub sni: SniResult,
    /// Why reading stopped.
    pub end: PrereadEnd,
    /// Every byte read from the client, in order.
    pub buffered: Vec<u8>,
}

/// Reads from a client connection until [`peek_sni`] gives a verdict, the
/// client closes, [`MAX_PREREAD`] bytes are buffered, or `timeout` passes
/// (nginx `preread_timeout`, 30 s by default), whichever comes first.
///
/// On a timeout or close the verdict stays [`SniResult::NeedMore`]; like
/// nginx, the caller may still route to a default upstream (and replay
/// [`Preread::buffered`]) or close. Only a read error is an `Err`.
pub async fn preread<R>(client: &mut R, timeout: Duration) -> std::io::Result<Preread>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut buffered = Vec::with_capacity(2048);
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            let room = MAX_PREREAD - buffered.len();
            if room == 0 {
                return Ok::<_, std::io::Error>(PrereadEnd::Full);
            }
            let n = client.read(&mut chunk[..room.min(4096)]).await?;
            if n == 0 {
                return Ok(PrereadEnd::Closed);
            }
            buffered.extend_from_slice(&chunk[..n]);
            if peek_sni(&buffered) != SniResult::NeedMore {
                return Ok(PrereadEnd::Verdict);
            }
        }
    };
    let end = match tokio::time::timeout(timeout, read_all).await {
        Ok(end) => end?,
        Err(_) => PrereadEnd::TimedOut,
    };
    Ok(Preread {
        sni: peek_sni(&buffered),
        end,
        buffered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// The first flight of a real TLS client (rustls) connecting to `name`.
    fn client_hello_for(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a name");
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), name).expect("a client connection");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write to a Vec");
        }
        out
    }

    /// The same handshake bytes in two records, cut at `at` bytes of payload.
    fn split_in_two_records(hello: &[u8], at: usize) -> Vec<u8> {
        let payload = &hello[5..];
        let mut out = Vec::new();
        for part in [&payload[..at], &payload[at..]] {
            out.extend_from_slice(&hello[..3]);
            out.extend_from_slice(&u16::try_from(part.len()).expect("small").to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// A minimal TLS 1.2 ClientHello written out by hand (RFC 5246 section
    /// 7.4.1.2), with `extensions` appended when given.
    fn handmade_hello(extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0x03, 0x03]; // client_version TLS 1.2
        body.extend_from_slice(&[0xAB; 32]); // random
        body.push(0); // empty session id
        body.extend_from_slice(&[0x00, 0x02, 0xC0, 0x2F]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // compression: null
        if let Some(ext) = extensions {
            body.extend_from_slice(&u16::try_from(ext.len()).expect("small").to_be_bytes());
            body.extend_from_slice(ext);
        }
        let len = u32::try_from(body.len()).expect("small").to_be_bytes();
        let mut handshake = vec![1, len[1], len[2], len[3]];
        handshake.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&u16::try_from(handshake.len()).expect("small").to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    /// A server_name extension with one host_name entry.
    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let n = u16::try_from(name.len()).expect("small");
        let mut ext = vec![0x00, 0x00]; // type server_name
        ext.extend_from_slice(&(n + 5).to_be_bytes()); // extension length
        ext.extend_from_slice(&(n + 3).to_be_bytes()); // server name list length
        ext.push(0); // host_name
        ext.extend_from_slice(&n.to_be_bytes());
        ext.extend_from_slice(name);
        ext
    }

    #[test]
    fn a_rustls_client_hello_names_its_host() {
        let hello = client_hello_for("a.example");
        assert_eq!(peek_sni(&hello), SniResult::Found("a.example".into()));
    }

    #[test]
    fn a_client_connecting_by_ip_address_sends_no_sni() {
        // RFC 6066: "Literal IPv4 and IPv6 addresses are not permitted" in SNI.
        let hello = client_hello_for("127.0.0.1");
        assert_eq!(peek_sni(&hello), SniResult::NoSni);
    }

    #[test]
    fn every_prefix_of_a_client_hello_needs_more() {
        let hello = client_hello_for("a.example");
        for cut in 0..hello.len() {
            assert_eq!(peek_sni(&hello[..cut]), SniResult::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn bytes_after_the_client_hello_do_not_change_the_verdict() {
        let mut hello = client_hello_for("a.example");
        hello.extend_from_slice(b"\x14\x03\x03\x00\x01\x01 and more");
        assert_eq!(peek_sni(&hello), SniResult::Found("a.example".into()));
    }

    #[test]
    fn a_client_hello_split_over_two_records_is_joined() {
        let hello = client_hello_for("b.example");
        for at in [1, 3, 4, 40, hello.len() - 6] {
            let split = split_in_two_records(&hello, at);
            assert_eq!(
                peek_sni(&split),
                SniResult::Found("b.example".into()),
                "split at {at}"
            );
            for cut in 0..split.len() {
                assert_eq!(peek_sni(&split[..cut]), SniResult::NeedMore, "{at}/{cut}");
            }
        }
    }

    #[test]
    fn handmade_hellos_with_and_without_extensions() {
        assert_eq!(peek_sni(&handmade_hello(None)), SniResult::NoSni);
        // Another extension only (0x000b ec_point_formats).
        let other = [0x00, 0x0b, 0x00, 0x02, 0x01, 0x00];
        assert_eq!(peek_sni(&handmade_hello(Some(&other))), SniResult::NoSni);
        let mut both = other.to_vec();
        both.extend_from_slice(&sni_extension(b"Shop.Example"));
        assert_eq!(
            peek_sni(&handmade_hello(Some(&both))),
            SniResult::Found("shop.example".into())
        );
    }

    #[test]
    fn garbage_and_other_protocols_are_not_tls() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"\x80\x2e\x01\x03\x01",
            b"\x16\x02\x01\x00\x10",
            b"\x17\x03\x03\x00\x10",
            b"\x16\x03\x01\x00\x00",
            b"\x16\x03\x01\xff\xff",
            b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
            b"\x00",
        ] {
            assert!(
                matches!(peek_sni(input), SniResult::NotTls(_)),
                "{input:?}: {:?}",
                peek_sni(input)
            );
        }
    }

    #[test]
    fn lying_lengths_are_not_tls() {
        // A session id length that runs past the message.
        let mut hello = handmade_hello(None);
        hello[5 + 4 + 2 + 32] = 200;
        assert!(matches!(peek_sni(&hello), SniResult::NotTls(_)));
        // A host name that is not a DNS name.
        let ext = sni_extension(b"a b\0");
        assert!(matches!(
            peek_sni(&handmade_hello(Some(&ext))),
            SniResult::NotTls(_)
        ));
        // An extension whose length runs past the extension block.
        let mut ext = sni_extension(b"a.example");
        ext[3] += 1;
        assert!(matches!(
            peek_sni(&handmade_hello(Some(&ext))),
            SniResult::NotTls(_)
        ));
    }

    #[test]
    fn random_bytes_and_damaged_hellos_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x0053_4e49);
        let real = client_hello_for("a.example");
        for i in 0..20_000 {
            let input: Vec<u8> = match i % 3 {
                0 => (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
                1 => {
                    // A plausible record header over noise.
                    let mut v = vec![22, 3, rng.u8(0..5), rng.u8(..), rng.u8(..), 1];
                    v.extend((0..rng.usize(0..600)).map(|_| rng.u8(..)));
                    v
                }
                _ => {
                    let mut v = real.clone();
                    for _ in 0..rng.usize(1..4) {
                        let at = rng.usize(..v.len());
                        v[at] = rng.u8(..);
                    }
                    v.truncate(rng.usize(0..=v.len()));
                    v
                }
            };
            if let SniResult::Found(name) = peek_sni(&input) {
                assert!(!name.is_empty() && name.len() <= 255);
            }
        }
    }

    #[tokio::test]
    async fn preread_from_a_tcp_stream_returns_the_name_and_every_byte() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let hello = client_hello_for("a.example");
        let sent = hello.clone();
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // In two writes, with a pause: the preread must wait for the rest.
            s.write_all(&sent[..20]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(&sent[20..]).await.expect("write");
            s
        });
        let (mut server, _) = listener.accept().await.expect("accept");
        let got = preread(&mut server, Duration::from_secs(5))
            .await
            .expect("preread");
        assert_eq!(got.sni, SniResult::Found("a.example".into()));
        assert_eq!(got.end, PrereadEnd::Verdict);
        assert_eq!(got.buffered, hello);
        drop(client.await.expect("client"));
    }

    #[tokio::test]
    async fn a_proxy_header_then_a_client_hello_reads_as_both() {
        // A trusted proxy in front sends a PROXY header, then the client's
        // TLS bytes: the header is read exactly, so the preread sees the
        // ClientHello from its first byte.
        use crate::stream::proxy_protocol::{self, ProxyHeader, Version};
        let header = ProxyHeader {
            source: "203.0.113.7:51000".parse().expect("an address"),
            destination: "192.0.2.1:443".parse().expect("an address"),
        };
        let hello = client_hello_for("a.example");
        for version in [Version::V1, Version::V2] {
            let mut bytes = proxy_protocol::encode(version, Some(&header));
            bytes.extend_from_slice(&hello);
            let mut stream = &bytes[..];
            let got = proxy_protocol::read_header(&mut stream)
                .await
                .expect("a PROXY header");
            assert_eq!(got, Some(header));
            let pre = preread(&mut stream, Duration::from_secs(5))
                .await
                .expect("preread");
            assert_eq!(pre.sni, SniResult::Found("a.example".into()));
            assert_eq!(pre.buffered, hello);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn preread_gives_up_at_the_timeout_with_what_it_has() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let hello = client_hello_for("a.example");
        client.write_all(&hello[..10]).await.expect("write");
        let got = preread(&mut server, Duration::from_secs(30))
            .await
            .expect("preread");
        assert_eq!(got.sni, SniResult::NeedMore);
        assert_eq!(got.end, PrereadEnd::TimedOut);
        assert_eq!(got.buffered, hello[..10]);
    }

    #[tokio::test]
    async fn preread_stops_when_the_client_closes_or_is_not_tls() {
        let mut closed = &b"\x16\x03\x01"[..];
        let got = preread(&mut closed, Duration::from_secs(5))
            .await
            .expect("preread");
        assert_eq!(
            (got.sni, got.end),
            (SniResult::NeedMore, PrereadEnd::Closed)
        );
        let mut http = &b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"[..];
        let got = preread(&mut http, Duration::from_secs(5))
            .await
            .expect("preread");
        assert!(matches!(got.sni, SniResult::NotTls(_)));
        assert_eq!(got.end, PrereadEnd::Verdict);
        assert_eq!(got.buffered, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    }
}
