//! Chapter 03, in Rust: the headers a proxy rewrites before it passes a
//! request on, and whose word it takes for the client's address.
//!
//! A reference solution of lab/exercises/03-forwarded-headers/forwarded.rs.
//! The proxy's own is in two places: proxy/src/access.rs (`client_ip`) and
//! proxy/src/headers.rs (`remove_hop_by_hop`, `add_forwarding_headers`).

use std::net::IpAddr;

use course_kit::forwarded::{Forwarder, Request, TrustedProxies};

/// One proxy's forwarding headers.
pub struct Hop {
    /// The proxies in front whose `X-Forwarded-For` is believed.
    trusted: TrustedProxies,
}

/// Headers about one connection, not the request (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The headers this proxy writes itself: whatever came in under these
/// names is not passed on (`X-Forwarded-For` is, with the peer appended).
const OWN: [&str; 5] = [
    "host",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// The values of `name`'s lines, in order (names compare in any case).
fn lines<'a>(headers: &'a [(&'a str, &'a str)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

impl Forwarder for Hop {
    fn new(trusted: TrustedProxies) -> Self {
        Hop { trusted }
    }

    fn client_ip(&self, peer: IpAddr, headers: &[(&str, &str)]) -> IpAddr {
        if !self.trusted.contains(peer) {
            return peer;
        }
        // Several lines are one list; read it right to left, from the
        // entry the trusted peer appended.
        let entries: Vec<&str> = lines(headers, "x-forwarded-for")
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // Not an address: nothing further left is believed.
                break;
            };
            client = ip;
            if !self.trusted.contains(ip) {
                break;
            }
        }
        client
    }

    fn forward(&self, request: &Request<'_>) -> Vec<(String, String)> {
        // Read before anything is removed.
        let client = self.client_ip(request.peer, request.headers);
        let host = lines(request.headers, "host").next();
        let named: Vec<String> = lines(request.headers, "connection")
            .flat_map(|v| v.split(','))
            .map(|token| token.trim().to_ascii_lowercase())
            .filter(|token| !token.is_empty())
            .collect();
        let trusted_peer = self.trusted.contains(request.peer);

        let mut out = Vec::with_capacity(request.headers.len() + 4);
        let mut forwarded_for: Vec<&str> = Vec::new();
        for &(name, value) in request.headers {
            let lower = name.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str()) || named.contains(&lower) {
                continue;
            }
            if lower == "forwarded" && !trusted_peer {
                continue;
            }
            if lower == "x-forwarded-for" {
                let value = value.trim();
                if !value.is_empty() {
                    forwarded_for.push(value);
                }
                continue;
            }
            if OWN.contains(&lower.as_str()) {
                continue;
            }
            out.push((name.to_owned(), value.to_owned()));
        }

        let peer = request.peer.to_string();
        forwarded_for.push(&peer);
        out.push(("x-forwarded-for".to_owned(), forwarded_for.join(", ")));
        out.push(("x-real-ip".to_owned(), client.to_string()));
        out.push(("x-forwarded-proto".to_owned(), request.scheme.to_owned()));
        if let Some(host) = host {
            out.push(("host".to_owned(), host.to_owned()));
            out.push(("x-forwarded-host".to_owned(), host.to_owned()));
        }
        out
    }
}
