//! The lab's HTTP client: every request goes to the proxy, with the host name
//! the learner would type in a browser carried in the `Host` header.
//!
//! That is exactly what a browser does after DNS resolved `app.localhost` to
//! the proxy's address, so no `/etc/hosts` editing is needed. Over HTTPS the
//! name also goes into the TLS handshake (SNI), and the client trusts only the
//! roots it is given: the lab's local CA, or none at all.
//!
//! Like a browser, it decodes a compressed answer (`Content-Encoding: gzip`,
//! `br` or `zstd`) before anyone reads it, and keeps how many bytes travelled,
//! so a scenario can show both sizes instead of binary noise.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

/// A client bound to one proxy address.
#[derive(Debug, Clone)]
pub struct LabClient {
    proxy: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One request and its complete response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The HTTP version of the response (HTTP/2 when ALPN chose `h2`).
    pub version: Version,
    /// The request method.
    pub method: Method,
    /// The host name the request was for.
    pub host: String,
    /// The path and query.
    pub path: String,
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body, decoded if it came compressed.
    pub body: Bytes,
    /// How many body bytes came over the wire (before decoding).
    pub wire_len: usize,
    /// This client's own address on the connection, when the request had a
    /// connection of its own ([`send_on_new_connection`], HTTPS): what a
    /// server or a PROXY protocol header names as the client.
    pub client_addr: Option<SocketAddr>,
    /// Over HTTPS, the certificate the server presented:
    /// `for secure.localhost, issued by ...` (see [`describe_certificate`]).
    pub certificate: Option<String>,
    /// Over HTTPS, the protocol client and server agreed on by ALPN (`h2`,
    /// `http/1.1`); `None` when the server chose none.
    pub alpn: Option<String>,
}

/// A request could not be completed at all (no status came back).
#[derive(Debug, thiserror::Error)]
#[error("{method} http://{host}{path} failed: {source}")]
pub struct RequestError {
    method: Method,
    host: String,
    path: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl LabClient {
    /// A client that sends every request to `proxy`.
    pub fn new(proxy: SocketAddr) -> LabClient {
        LabClient {
            proxy,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET http://{host}{path}` through the proxy.
    pub async fn get(&self, host: &str, path: &str) -> Result<Exchange, RequestError> {
        self.send(Method::GET, host, path, &[], Bytes::new()).await
    }

    /// Any request through the proxy, with extra headers and a body.
    pub async fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Exchange, RequestError> {
        let fail = RequestError::maker(&method, host, path);
        let uri = format!("http://{}{path}", self.proxy);
        let request =
            build_request(&method, &uri, Some(host), headers, body).map_err(|e| fail(e.into()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| fail(e.into()))?;
        read_answer(response, "http", method.clone(), host, path)
            .await
            .map_err(fail)
    }
}

impl RequestError {
    /// Makes the error for a request (`method`, `host`, `path`) from what
    /// went wrong.
    fn maker<'a>(
        method: &'a Method,
        host: &'a str,
        path: &'a str,
    ) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> RequestError + 'a {
        move |source| RequestError {
            method: method.clone(),
            host: host.to_owned(),
            path: path.to_owned(),
            source,
        }
    }
}

/// A request to `uri` with a `Host` header (when given), extra headers and a body.
fn build_request(
    method: &Method,
    uri: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(host) = host {
        request = request.header(http::header::HOST, host);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body))
}

/// Any plain-HTTP request, like [`LabClient::send`], over a connection of its
/// own to `target`, closed afterwards; the answer says which address this
/// client had (`client_addr`). For a target that is not an HTTP proxy but a
/// layer-4 listener, where every connection is a new story.
pub async fn send_on_new_connection(
    target: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Exchange, RequestError> {
    let fail = RequestError::maker(&method, host, path);
    let tcp = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| fail(e.into()))?;
    let client_addr = tcp.local_addr().ok();
    let request =
        build_request(&method, path, Some(host), headers, body).map_err(|e| fail(e.into()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| fail(e.into()))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| fail(e.into()))?;
    let mut exchange = read_answer(response, "http", method.clone(), host, path)
        .await
        .map_err(fail)?;
    exchange.client_addr = client_addr;
    Ok(exchange)
}

/// Reads a whole answer into an [`Exchange`], its body decoded.
async fn read_answer(
    response: http::Response<hyper::body::Incoming>,
    scheme: &'static str,
    method: Method,
    host: &str,
    path: &str,
) -> Result<Exchange, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = response.into_parts();
    let wire = body.collect().await?.to_bytes();
    let wire_len = wire.len();
    let body = decode(&parts.headers, wire).await?;
    Ok(Exchange {
        scheme,
        version: parts.version,
        method,
        host: host.to_owned(),
        path: path.to_owned(),
        status: parts.status,
        headers: parts.headers,
        body,
        wire_len,
        client_addr: None,
        certificate: None,
        alpn: None,
    })
}

/// A certificate as a person checks it: the names it is for and who issued
/// it, `for secure.localhost, issued by proxy-lab local development CA` (the
/// issuer's organisation, else its common name).
pub fn describe_certificate(der: &[u8]) -> String {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return "(a certificate that does not parse)".to_owned();
    };
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress([a, b, c, d]) => {
                        Some(std::net::Ipv4Addr::new(*a, *b, *c, *d).to_string())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let issuer = cert
        .issuer()
        .iter_organization()
        .chain(cert.issuer().iter_common_name())
        .find_map(|attr| attr.as_str().ok())
        .unwrap_or("an unnamed issuer");
    format!("for {}, issued by {issuer}", names.join(", "))
}

/// `GET https://{host}{path}` sent to the proxy's HTTPS address `proxy_tls`,
/// trusting only the roots in `trusted_pem` (none: an empty trust store, like a
/// browser that was never told about the lab's CA). Offers HTTP/2 and
/// HTTP/1.1 by ALPN and speaks whichever the proxy picks.
pub async fn get_https(
    proxy_tls: SocketAddr,
    host: &str,
    path: &str,
    trusted_pem: Option<&str>,
) -> Result<Exchange, RequestError> {
    send_https(
        proxy_tls,
        Method::GET,
        host,
        path,
        &[],
        Bytes::new(),
        trusted_pem,
    )
    .await
}

/// Any request over HTTPS, like [`get_https`], with extra headers and a body.
pub async fn send_https(
    proxy_tls: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    trusted_pem: Option<&str>,
) -> Result<Exchange, RequestError> {
    let fail = RequestError::maker(&method, host, path);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted_pem.unwrap_or("").as_bytes()).flatten() {
        roots.add(cert).map_err(|e| fail(e.into()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned()).map_err(|e| fail(e.into()))?;
    let tcp = tokio::net::TcpStream::connect(proxy_tls)
        .await
        .map_err(|e| fail(e.into()))?;
    let client_addr = tcp.local_addr().ok();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| fail(e.into()))?;
    let alpn = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let h2 = alpn.as_deref() == Some("h2");
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| describe_certificate(leaf));
    let io = hyper_util::rt::TokioIo::new(tls);
    // HTTP/2 names the host in the URI (`:authority`); HTTP/1.1 in `Host`.
    let uri = format!("https://{host}{path}");
    let request = build_request(&method, &uri, (!h2).then_some(host), headers, body)
        .map_err(|e| fail(e.into()))?;
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| fail(e.into()))?;
        tokio::spawn(connection);
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| fail(e.into()))?;
        tokio::spawn(connection);
        sender.send_request(request).await
    }
    .map_err(|e| fail(e.into()))?;
    let mut exchange = read_answer(response, "https", method.clone(), host, path)
        .await
        .map_err(fail)?;
    exchange.client_addr = client_addr;
    exchange.certificate = certificate;
    exchange.alpn = alpn;
    Ok(exchange)
}

/// The body as it was before the sender compressed it: decoded by its
/// `Content-Encoding` (gzip, br or zstd), or as it is without one. A body
/// that does not decode is an error, never shown as if it were text.
async fn decode(headers: &HeaderMap, wire: Bytes) -> std::io::Result<Bytes> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    use tokio::io::AsyncReadExt;
    let Some(encoding) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(wire);
    };
    let encoding = encoding.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let mut out = Vec::new();
    let read = match encoding.as_str() {
        "gzip" | "x-gzip" => GzipDecoder::new(&wire[..]).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(&wire[..]).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(&wire[..]).read_to_end(&mut out).await,
        "" | "identity" => return Ok(wire),
        other => {
            return Err(std::io::Error::other(format!(
                "the lab's client cannot decode Content-Encoding: {other}"
            )));
        }
    };
    read.map_err(|e| std::io::Error::new(e.kind(), format!("a broken {encoding} body: {e}")))?;
    Ok(Bytes::from(out))
}

impl Exchange {
    /// The body's size: `5000 bytes`, or for a compressed answer
    /// `5000 bytes decoded, about 25% of that as gzip`. The share is rounded
    /// to 5%: the exact compressed size moves by a few bytes with how the
    /// upstream's body was split into chunks (each chunk is flushed), and a
    /// transcript must not.
    pub fn size(&self) -> String {
        match self.header("content-encoding") {
            Some(encoding) if encoding != "identity" => {
                let percent = (self.wire_len * 100)
                    .checked_div(self.body.len())
                    .unwrap_or(100);
                format!(
                    "{} bytes decoded, about {}% of that as {encoding}",
                    self.body.len(),
                    (percent + 2) / 5 * 5
                )
            }
            _ => format!("{} bytes", self.body.len()),
        }
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A WebSocket conversation through the proxy: the handshake's answer, then
/// what was sent and what came back, in order.
#[derive(Debug, Clone)]
pub struct WebSocketTalk {
    /// The handshake: a `GET` with `Upgrade: websocket`, answered `101
    /// Switching Protocols` when the upgrade went through (then no body), or
    /// an ordinary answer when it did not.
    pub handshake: Exchange,
    /// The messages, in the order they were sent and received.
    pub events: Vec<WebSocketEvent>,
}

/// One thing that happened on an open WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebSocketEvent {
    /// A text message the client sent.
    Sent(String),
    /// A text message that came back (binary ones as `<N bytes>`).
    Received(String),
    /// Nothing came back within [`WEBSOCKET_WAIT`].
    Silence,
    /// The client sent nothing for this long, on purpose (a quiet user).
    Paused(std::time::Duration),
    /// The conversation ended; the text says how (the client's close frame
    /// and the server's answer, or the connection closed under it).
    Closed(String),
}

/// How long a WebSocket step waits for each message back.
pub const WEBSOCKET_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a WebSocket delivered next, as [`websocket`] reads it.
enum Next {
    /// A text or binary message (pings are skipped).
    Message(WebSocketEvent),
    /// A close frame from the server.
    CloseFrame,
    /// The end of the connection, without a close frame (or an error).
    Dropped,
    /// Nothing within the wait.
    Nothing,
}

/// Opens a WebSocket to `ws://{host}{path}` through the proxy (`Host: host`),
/// reads one message (a greeting), then for each of `messages` sends it and
/// reads one message back, staying silent for `pause` before each message
/// after the first; then closes. A connection that ends meanwhile (the proxy
/// closed an idle tunnel) ends the conversation, with a `Closed` event saying
/// so. A handshake the server refuses is returned as it was answered, with no
/// events.
pub async fn websocket(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    messages: &[String],
    pause: std::time::Duration,
) -> Result<WebSocketTalk, RequestError> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

    let fail = RequestError::maker(&Method::GET, host, path);
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| fail(e.into()))?;
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| fail(e.into()))?;
        let value = http::HeaderValue::from_str(value).map_err(|e| fail(e.into()))?;
        request.headers_mut().insert(name, value);
    }
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| fail(e.into()))?;
    let exchange = |status, headers, body: Option<Vec<u8>>| {
        let body = Bytes::from(body.unwrap_or_default());
        Exchange {
            scheme: "ws",
            version: Version::HTTP_11,
            method: Method::GET,
            host: host.to_owned(),
            path: path.to_owned(),
            status,
            headers,
            wire_len: body.len(),
            body,
            client_addr: None,
            certificate: None,
            alpn: None,
        }
    };
    let (mut ws, response) = match tokio_tungstenite::client_async(request, tcp).await {
        Ok(open) => open,
        Err(tungstenite::Error::Http(refused)) => {
            let (parts, body) = refused.into_parts();
            return Ok(WebSocketTalk {
                handshake: exchange(parts.status, parts.headers, body),
                events: Vec::new(),
            });
        }
        Err(err) => return Err(fail(err.into())),
    };
    let (parts, _) = response.into_parts();
    let handshake = exchange(parts.status, parts.headers, None);

    // What comes next within `wait`, skipping pings.
    async fn next<S>(ws: &mut S, wait: std::time::Duration) -> Next
    where
        S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        let read = async {
            loop {
                return match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        Next::Message(WebSocketEvent::Received(text.to_string()))
                    }
                    Some(Ok(Message::Binary(data))) => {
                        Next::Message(WebSocketEvent::Received(format!("<{} bytes>", data.len())))
                    }
                    Some(Ok(Message::Close(_))) => Next::CloseFrame,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => Next::Dropped,
                };
            }
        };
        tokio::time::timeout(wait, read)
            .await
            .unwrap_or(Next::Nothing)
    }

    const CLOSED_BY_SERVER: &str = "the server sent a close frame";
    const DROPPED: &str = "the connection ended without a close frame";
    let mut events = Vec::new();
    // The greeting, then each message and its answer.
    let mut ended = match next(&mut ws, WEBSOCKET_WAIT).await {
        Next::Message(event) => {
            events.push(event);
            None
        }
        Next::Nothing => {
            events.push(WebSocketEvent::Silence);
            None
        }
        Next::CloseFrame => Some(CLOSED_BY_SERVER),
        Next::Dropped => Some(DROPPED),
    };
    for (i, message) in messages.iter().enumerate() {
        if ended.is_some() {
            break;
        }
        if i > 0 && !pause.is_zero() {
            events.push(WebSocketEvent::Paused(pause));
            // Silent, but listening: a close during the pause is seen at once.
            let until = tokio::time::Instant::now() + pause;
            while ended.is_none() {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                match next(&mut ws, left).await {
                    Next::Nothing => break,
                    Next::Message(event) => events.push(event),
                    Next::CloseFrame => ended = Some(CLOSED_BY_SERVER),
                    Next::Dropped => ended = Some(DROPPED),
                }
            }
            if ended.is_some() {
                break;
            }
        }
        if ws.send(Message::text(message.as_str())).await.is_err() {
            ended = Some(DROPPED);
            break;
        }
        events.push(WebSocketEvent::Sent(message.clone()));
        match next(&mut ws, WEBSOCKET_WAIT).await {
            Next::Message(event) => events.push(event),
            Next::Nothing => events.push(WebSocketEvent::Silence),
            Next::CloseFrame => ended = Some(CLOSED_BY_SERVER),
            Next::Dropped => ended = Some(DROPPED),
        }
    }
    let how = match ended {
        Some(how) => how,
        None => match ws.close(None).await {
            Ok(()) => match next(&mut ws, WEBSOCKET_WAIT).await {
                Next::CloseFrame => "the server answered with its close frame",
                _ => "the server closed without a close frame",
            },
            Err(_) => "the connection was already closed",
        },
    };
    events.push(WebSocketEvent::Closed(how.into()));
    Ok(WebSocketTalk { handshake, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn encoded_as(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_str(encoding).expect("value"),
        );
        headers
    }

    #[tokio::test]
    async fn a_compressed_body_is_decoded_and_a_broken_one_is_an_error() {
        let text = b"hello, hello, hello, compressed world\n".repeat(20);
        let mut gzip = Vec::new();
        async_compression::tokio::bufread::GzipEncoder::new(&text[..])
            .read_to_end(&mut gzip)
            .await
            .expect("encode");
        let decoded = decode(&encoded_as("gzip"), Bytes::from(gzip.clone()))
            .await
            .expect("decodes");
        assert_eq!(decoded, text);
        let cut = Bytes::from(gzip[..gzip.len() / 2].to_vec());
        assert!(decode(&encoded_as("gzip"), cut).await.is_err());
        assert!(
            decode(&encoded_as("deflate"), Bytes::from_static(b"x"))
                .await
                .is_err()
        );
        let plain = decode(&HeaderMap::new(), Bytes::from_static(b"plain"))
            .await
            .expect("as it is");
        assert_eq!(plain, "plain");
    }
}
