//! What can go wrong between the proxy and an upstream, and the one place where
//! each failure becomes an HTTP status.
//!
//! A reverse proxy stands between two parties, so every failure has a side: the
//! upstream refused, timed out or broke its answer (the client gets 502 or 504),
//! or the proxy itself could not go on (500). RFC 9209 gives proxies a standard
//! way to say which: the `Proxy-Status` response header, e.g.
//!
//! ```text
//! Proxy-Status: proxy-lab; error=connection_refused; details="upstream 127.0.0.1:9001"
//! ```
//!
//! so a learner (or a monitoring system) can tell "the proxy is broken" from
//! "the service behind it is down" without reading logs.

use std::error::Error as StdError;
use std::io;

use http::StatusCode;

/// The name this proxy uses for itself in `Proxy-Status` (RFC 9209 section 2).
pub const PROXY_NAME: &str = "proxy-lab";

/// Why a request could not be proxied. Each kind maps to one status code and one
/// RFC 9209 error type, in [`ErrorKind::status`] and [`ErrorKind::proxy_status_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    // --- Reaching the upstream ---
    /// The upstream's host name did not resolve.
    DnsError,
    /// Nothing listens at the upstream's address (TCP RST on connect).
    ConnectionRefused,
    /// The TCP connect did not finish within `connect_timeout`.
    ConnectionTimeout,
    /// Any other failure to open a connection (unreachable network, ...).
    DestinationUnavailable,
    /// Every server of the pool is down (health checks, `max_fails`), or
    /// was already tried for this request.
    NoLiveUpstream,
    /// An `https://` upstream's certificate did not verify (unknown issuer,
    /// wrong name, expired).
    TlsCertificateError,
    /// The TLS handshake with an `https://` upstream failed otherwise.
    TlsProtocolError,

    // --- The upstream's answer ---
    /// The upstream sent no response head within `read_timeout`.
    ResponseTimeout,
    /// The upstream closed the connection before a complete response head.
    ConnectionTerminated,
    /// The upstream's bytes are not valid HTTP.
    ProtocolError,

    // --- The client's request ---
    /// The request body is larger than the route's `max_body_size`.
    BodyTooLarge,
    /// The client stopped sending its body for `client_body_timeout`.
    ClientBodyTimeout,
    /// The client's body broke off (it closed the connection mid-upload) or
    /// was not valid HTTP framing (a bad chunk size).
    ClientBodyBroken,

    // --- The proxy itself ---
    /// A bug or resource problem inside the proxy.
    Internal,
}

impl ErrorKind {
    /// The status the client receives: 504 for timeouts, 502 for a broken or
    /// absent upstream, 500 when the proxy is at fault.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::ConnectionTimeout | ErrorKind::ResponseTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorKind::DnsError
            | ErrorKind::ConnectionRefused
            | ErrorKind::DestinationUnavailable
            | ErrorKind::NoLiveUpstream
            | ErrorKind::TlsCertificateError
            | ErrorKind::TlsProtocolError
            | ErrorKind::ConnectionTerminated
            | ErrorKind::ProtocolError => StatusCode::BAD_GATEWAY,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::ClientBodyBroken => StatusCode::BAD_REQUEST,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error type registered by RFC 9209 section 2.3 for this failure.
    pub fn proxy_status_type(self) -> &'static str {
        match self {
            ErrorKind::DnsError => "dns_error",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::ConnectionTimeout => "connection_timeout",
            ErrorKind::DestinationUnavailable | ErrorKind::NoLiveUpstream => {
                "destination_unavailable"
            }
            ErrorKind::TlsCertificateError => "tls_certificate_error",
            ErrorKind::TlsProtocolError => "tls_protocol_error",
            ErrorKind::ResponseTimeout => "http_response_timeout",
            ErrorKind::ConnectionTerminated => "connection_terminated",
            ErrorKind::ProtocolError => "http_protocol_error",
            ErrorKind::BodyTooLarge => "http_request_denied",
            ErrorKind::ClientBodyTimeout | ErrorKind::ClientBodyBroken => "http_request_error",
            ErrorKind::Internal => "proxy_internal_error",
        }
    }

    /// A sentence for people: the body of the error response and the log line.
    pub fn explain(self) -> &'static str {
        match self {
            ErrorKind::DnsError => "the upstream's host name did not resolve",
            ErrorKind::ConnectionRefused => "the upstream refused the connection",
            ErrorKind::ConnectionTimeout => "connecting to the upstream timed out",
            ErrorKind::DestinationUnavailable => "the upstream could not be reached",
            ErrorKind::NoLiveUpstream => "no server of the upstream is up",
            ErrorKind::TlsCertificateError => "the upstream's TLS certificate did not verify",
            ErrorKind::TlsProtocolError => "the TLS handshake with the upstream failed",
            ErrorKind::ResponseTimeout => "the upstream did not answer in time",
            ErrorKind::ConnectionTerminated => {
                "the upstream closed the connection before answering"
            }
            ErrorKind::ProtocolError => "the upstream's answer was not valid HTTP",
            ErrorKind::BodyTooLarge => "the request body is larger than this route accepts",
            ErrorKind::ClientBodyTimeout => {
                "the client stopped sending its request body (client_body_timeout)"
            }
            ErrorKind::ClientBodyBroken => "the client's request body broke off or was invalid",
            ErrorKind::Internal => "the proxy failed internally",
        }
    }

    /// Whether the upstream server is to blame (passive health counts it),
    /// rather than the client's request or the proxy itself.
    pub fn is_upstream_failure(self) -> bool {
        !matches!(
            self,
            ErrorKind::BodyTooLarge
                | ErrorKind::ClientBodyTimeout
                | ErrorKind::ClientBodyBroken
                | ErrorKind::Internal
        )
    }

    /// Whether it is a timeout (nginx's `timeout` case of `proxy_next_upstream`)
    /// rather than an `error`.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectionTimeout | ErrorKind::ResponseTimeout
        )
    }

    /// Whether the failure happened before the upstream could have seen the
    /// request, so sending it again elsewhere is always safe.
    pub fn before_request_sent(self) -> bool {
        matches!(
            self,
            ErrorKind::DnsError
                | ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionTimeout
                | ErrorKind::DestinationUnavailable
                | ErrorKind::TlsCertificateError
                | ErrorKind::TlsProtocolError
        )
    }
}

/// A failed attempt to proxy one request: what kind of failure, which upstream
/// server (if one was chosen) and the underlying cause for the error log.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", kind.explain(), upstream.as_deref().map(|u| format!(" ({u})")).unwrap_or_default())]
pub struct ProxyError {
    /// What went wrong, which decides the status.
    pub kind: ErrorKind,
    /// The upstream server address, when one was picked.
    pub upstream: Option<String>,
    /// The low-level error, kept for the error log.
    #[source]
    pub cause: Option<Box<dyn StdError + Send + Sync>>,
}

impl ProxyError {
    /// A failure of `kind` while talking to `upstream`.
    pub fn upstream(
        kind: ErrorKind,
        upstream: &str,
        cause: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        ProxyError {
            kind,
            upstream: Some(upstream.to_owned()),
            cause: Some(cause.into()),
        }
    }

    /// The value of the `Proxy-Status` header for this failure.
    pub fn proxy_status(&self) -> String {
        let mut value = format!("{PROXY_NAME}; error={}", self.kind.proxy_status_type());
        if let Some(upstream) = &self.upstream {
            value.push_str("; details=\"upstream ");
            // Structured-field strings cannot hold `"` or `\`; addresses never do,
            // but keep the header valid whatever the config says.
            value.extend(upstream.chars().filter(|c| *c != '"' && *c != '\\'));
            value.push('"');
        }
        value
    }
}

/// Classifies a failed exchange on an open upstream connection by walking
/// the error's chain of causes: the request body went over `max_body_size`
/// while it streamed, the upstream closed the connection or sent something
/// that is not HTTP, or an `io::Error` underneath says what the socket saw.
pub fn classify_send_error(err: &hyper::Error) -> ErrorKind {
    let chain = || {
        std::iter::successors(Some(err as &(dyn StdError + 'static)), |e| {
            let e: &(dyn StdError + 'static) = *e;
            e.source()
        })
    };
    if let Some(kind) = chain().find_map(client_body_kind) {
        return kind;
    }
    for e in chain() {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return ErrorKind::ConnectionTerminated;
            }
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return ErrorKind::ProtocolError;
            }
            if h.is_timeout() {
                return ErrorKind::ResponseTimeout;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => ErrorKind::ResponseTimeout,
                _ => ErrorKind::ConnectionTerminated,
            };
        }
    }
    ErrorKind::ConnectionTerminated
}

/// The kind of a request-body failure that is the client's doing: over
/// `max_body_size`, or a [`ClientBodyError`](crate::body::ClientBodyError).
/// `None` for any other error.
pub fn client_body_kind(err: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if err.is::<http_body_util::LengthLimitError>() {
        return Some(ErrorKind::BodyTooLarge);
    }
    match err.downcast_ref::<crate::body::ClientBodyError>()? {
        crate::body::ClientBodyError::TimedOut(_) => Some(ErrorKind::ClientBodyTimeout),
        crate::body::ClientBodyError::Broken(_) => Some(ErrorKind::ClientBodyBroken),
    }
}

/// Classifies a failure to open a connection: a TLS error anywhere in the
/// chain, else what the innermost `io::Error` says (refused, timed out, a
/// host name that did not resolve).
pub fn classify_connect_error(err: &(dyn StdError + 'static)) -> ErrorKind {
    if let Some(tls) = find_tls_error(err) {
        return classify_tls_error(tls);
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
                io::ErrorKind::TimedOut => ErrorKind::ConnectionTimeout,
                _ if is_dns_failure(io) => ErrorKind::DnsError,
                _ => ErrorKind::DestinationUnavailable,
            };
        }
        source = e.source();
    }
    ErrorKind::DestinationUnavailable
}

/// A TLS error anywhere in the chain. hyper-rustls reports them wrapped in
/// `io::Error`s, whose `source()` skips the error they wrap, so each
/// `io::Error` is also opened with `get_ref()`.
fn find_tls_error<'e>(err: &'e (dyn StdError + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let wrapped = err
        .downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn StdError + 'static));
    wrapped
        .and_then(find_tls_error)
        .or_else(|| err.source().and_then(find_tls_error))
}

fn classify_tls_error(err: &rustls::Error) -> ErrorKind {
    match err {
        rustls::Error::InvalidCertificate(_) => ErrorKind::TlsCertificateError,
        _ => ErrorKind::TlsProtocolError,
    }
}

/// getaddrinfo failures reach us as plain `io::Error`s carrying the resolver's
/// message; there is no dedicated kind for them.
fn is_dns_failure(io: &io::Error) -> bool {
    let text = io.to_string();
    text.contains("failed to lookup address") || text.contains("Name or service not known")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_504_and_broken_upstreams_are_502() {
        assert_eq!(ErrorKind::ConnectionTimeout.status(), 504);
        assert_eq!(ErrorKind::ResponseTimeout.status(), 504);
        assert_eq!(ErrorKind::ConnectionRefused.status(), 502);
        assert_eq!(ErrorKind::ConnectionTerminated.status(), 502);
        assert_eq!(ErrorKind::Internal.status(), 500);
    }

    #[test]
    fn proxy_status_names_the_proxy_the_error_type_and_the_upstream() {
        let err = ProxyError::upstream(
            ErrorKind::ConnectionRefused,
            "127.0.0.1:9001",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(
            err.proxy_status(),
            "proxy-lab; error=connection_refused; details=\"upstream 127.0.0.1:9001\""
        );
        assert_eq!(
            err.to_string(),
            "the upstream refused the connection (127.0.0.1:9001)"
        );
    }

    #[test]
    fn a_tls_error_wrapped_in_io_errors_is_found() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = io::Error::new(io::ErrorKind::InvalidData, tls);
        let outer = io::Error::other(inner);
        assert_eq!(
            classify_connect_error(&outer),
            ErrorKind::TlsCertificateError
        );
        let handshake = io::Error::other(rustls::Error::HandshakeNotComplete);
        assert_eq!(
            classify_connect_error(&handshake),
            ErrorKind::TlsProtocolError
        );
    }

    #[test]
    fn a_client_body_failure_is_the_clients_and_not_the_upstreams() {
        let timed_out = crate::body::ClientBodyError::TimedOut(std::time::Duration::from_secs(1));
        assert_eq!(
            client_body_kind(&timed_out),
            Some(ErrorKind::ClientBodyTimeout)
        );
        assert_eq!(ErrorKind::ClientBodyTimeout.status(), 408);
        assert_eq!(ErrorKind::ClientBodyBroken.status(), 400);
        assert!(!ErrorKind::ClientBodyTimeout.is_upstream_failure());
        assert!(!ErrorKind::ClientBodyBroken.is_upstream_failure());
        let other = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(client_body_kind(&other), None);
    }

    #[test]
    fn a_refused_connect_is_classified_as_refused() {
        let io = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_connect_error(&io), ErrorKind::ConnectionRefused);
        let io = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classify_connect_error(&io), ErrorKind::ConnectionTimeout);
    }
}
