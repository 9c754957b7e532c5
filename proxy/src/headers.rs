//! Rewriting headers on the way through: what the upstream learns about the
//! client, and what must not cross the proxy at all.
//!
//! **Forwarding headers.** The upstream's TCP peer is the proxy, not the client,
//! so without help every request would seem to come from the proxy. The proxy
//! therefore tells the upstream, like the nginx tutorials'
//! `proxy_set_header` lines:
//!
//! | header              | value                                          | nginx                                |
//! |---------------------|------------------------------------------------|--------------------------------------|
//! | `Host`              | the host the client asked for (configurable)   | `Host $host`                         |
//! | `X-Real-IP`         | the client's address                           | `X-Real-IP $remote_addr`             |
//! | `X-Forwarded-For`   | the incoming list, plus the client's address   | `$proxy_add_x_forwarded_for`         |
//! | `X-Forwarded-Proto` | `http` or `https`, as the client connected     | `X-Forwarded-Proto $scheme`          |
//! | `X-Forwarded-Host`  | the host the client asked for                  | `X-Forwarded-Host $host`             |
//!
//! `X-Forwarded-For` is a list because requests may cross several proxies; each
//! one appends the address it saw. Anything a client writes there itself is
//! untrusted: only the last entry, added by this proxy, is known to be true.
//! `X-Real-IP` is always the proxy's own answer (a client's is replaced), and
//! the standard `Forwarded` header (RFC 7239), which this proxy does not
//! write, is removed unless the peer is a trusted proxy
//! ([`remove_untrusted_forwarded`]): an upstream that reads it must not be
//! told a client's invention.
//!
//! **Hop-by-hop headers** (RFC 9110 section 7.6.1) describe one connection, not
//! the message: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
//! `Transfer-Encoding`, `Upgrade`, and every header that `Connection` names.
//! A proxy holds two connections, so it removes them and lets each side's
//! connection manage its own framing and keep-alive.
//!
//! One exception: an HTTP/1.1 request asking to switch protocols
//! (`Connection: upgrade` with `Upgrade: websocket`) keeps those two headers,
//! or the upstream would never learn what the client asked for, and so does a
//! `101 Switching Protocols` answer (see [`crate::upgrade`]).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Real-IP`: the client's address, as the proxy saw it.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Forwarded-For`: the chain of client and proxy addresses.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Proxy-Connection`: a non-standard hop-by-hop header old clients send.
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// What the proxy tells the upstream about the client.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The client's IP address: the TCP peer, or the address a trusted proxy
    /// in front reported (see [`crate::access::client_ip`]).
    pub ip: IpAddr,
    /// The TCP peer of the proxy: what this hop appends to `X-Forwarded-For`.
    pub peer: IpAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The `Host` the client sent, if any.
    pub host: Option<&'a HeaderValue>,
}

/// Removes a `Forwarded` header a client sent: only a trusted proxy's is
/// passed on (call this for requests from other peers).
pub fn remove_untrusted_forwarded(headers: &mut HeaderMap) {
    headers.remove(header::FORWARDED);
}

/// Removes the hop-by-hop headers: the fixed list and those named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Collect first: the names live inside the headers we are about to remove.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The protocol an HTTP/1.1 message asks to switch to: the `Upgrade` value,
/// when `Connection` lists the `upgrade` token. `None` for every other
/// message, and for HTTP/2 and HTTP/1.0, which have no such switch.
pub fn upgrade_protocol(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the two headers of a protocol switch, after
/// [`remove_hop_by_hop`] took them with the rest: `Connection: upgrade` and
/// `Upgrade: PROTOCOL`.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Sets `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host`, and appends
/// the client to `X-Forwarded-For` (several incoming `X-Forwarded-For` lines
/// are joined into one list first).
pub fn add_forwarding_headers(headers: &mut HeaderMap, client: &ClientInfo<'_>) {
    let peer = client.peer.to_string();
    // Usually the same address: formatted once.
    let ip = if client.ip == client.peer {
        peer.clone()
    } else {
        client.ip.to_string()
    };

    let mut forwarded_for = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(value) = value.to_str() {
            let value = value.trim();
            if !value.is_empty() {
                forwarded_for.push_str(value);
                forwarded_for.push_str(", ");
            }
        }
    }
    forwarded_for.push_str(&peer);

    // Both strings are an IP address and printable header text: always valid.
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&ip) {
        headers.insert(X_REAL_IP.clone(), value);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(client.proto),
    );
    match client.host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "3"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn an_http11_upgrade_is_recognised_and_its_two_headers_put_back() {
        let headers = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        let v11 = http::Version::HTTP_11;
        assert_eq!(
            upgrade_protocol(v11, &headers)
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(upgrade_protocol(http::Version::HTTP_2, &headers), None);
        assert_eq!(upgrade_protocol(http::Version::HTTP_10, &headers), None);
        // `Upgrade` alone, without the `Connection` token, asks for nothing.
        let alone = map(&[("upgrade", "websocket")]);
        assert_eq!(upgrade_protocol(v11, &alone), None);

        let mut forwarded = headers.clone();
        let protocol = upgrade_protocol(v11, &forwarded).expect("an upgrade");
        remove_hop_by_hop(&mut forwarded);
        keep_upgrade(&mut forwarded, protocol);
        assert_eq!(forwarded["connection"], "upgrade");
        assert_eq!(forwarded["upgrade"], "websocket");
        assert!(forwarded.get("keep-alive").is_none());
        assert_eq!(forwarded["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn the_client_is_appended_to_x_forwarded_for() {
        let host = HeaderValue::from_static("app.localhost");
        let client = ClientInfo {
            ip: "10.0.0.7".parse().expect("ip"),
            peer: "10.0.0.7".parse().expect("ip"),
            proto: "http",
            host: Some(&host),
        };
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2, 192.0.2.3"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        add_forwarding_headers(&mut headers, &client);
        assert_eq!(
            headers[&X_FORWARDED_FOR],
            "203.0.113.1, 198.51.100.2, 192.0.2.3, 10.0.0.7"
        );
        assert_eq!(
            headers[&X_REAL_IP], "10.0.0.7",
            "a client's X-Real-IP is replaced"
        );
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        assert_eq!(headers[&X_FORWARDED_HOST], "app.localhost");
    }

    #[test]
    fn without_an_incoming_list_x_forwarded_for_is_the_client_alone() {
        let client = ClientInfo {
            ip: "::1".parse().expect("ip"),
            peer: "::1".parse().expect("ip"),
            proto: "https",
            host: None,
        };
        let mut headers = map(&[("x-forwarded-host", "spoofed.example")]);
        add_forwarding_headers(&mut headers, &client);
        assert_eq!(headers[&X_FORWARDED_FOR], "::1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert!(headers.get(&X_FORWARDED_HOST).is_none());
    }
}
