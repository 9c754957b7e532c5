//! Chapter 03, in Rust: the headers a proxy rewrites before it passes a
//! request on, and whose word it takes for the client's address.
//!
//! Check it with `cargo run -p lab -- check 03`; the chapter is
//! docs/03-forwarded-headers.md, a hint is `cargo run -p lab -- hint 03`.
//!
//! **The client** (`client_ip`, nginx's `real_ip` module). From a peer that
//! is not a trusted proxy, the client is the peer, whatever the headers
//! say. From a trusted proxy, read `X-Forwarded-For` (all its lines, one
//! comma-separated list, each entry trimmed) from the right: the right-most
//! entry that is not a trusted proxy is the client. An entry that is not an
//! address stops the walk (the client is then the last address read, or
//! the peer); a list of trusted proxies only ends at its left-most entry.
//!
//! **The headers passed on** (`forward`), in this order:
//!
//! 1. Read, from the headers as they arrived: the client (above) and the
//!    first `Host` line.
//! 2. Drop the hop-by-hop headers: `Connection`, `Keep-Alive`,
//!    `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`, and every
//!    header that a `Connection` line names (`Connection: close, X-Secret`
//!    names `close` and `X-Secret`). Header names compare in any case.
//! 3. Drop `Forwarded` unless the peer is a trusted proxy.
//! 4. Set the forwarding headers, replacing any that came in:
//!    - `X-Forwarded-For`: the `X-Forwarded-For` lines left after step 2,
//!      each trimmed, empty ones skipped, joined by `, `, then the peer:
//!      one line. With none, the peer alone;
//!    - `X-Real-IP`: the client;
//!    - `X-Forwarded-Proto`: the request's scheme (from anyone, trusted or
//!      not: it is how the peer reached *this* proxy);
//!    - `Host` and `X-Forwarded-Host`: the `Host` of step 1; without one,
//!      neither.
//!
//! Every other header goes on unchanged, a name's lines in their order.
//! (A WebSocket request keeps `Connection: upgrade` and `Upgrade`: the
//! proxy puts those two back afterwards. Not part of this exercise.)

use std::net::IpAddr;

use course_kit::forwarded::{Forwarder, Request, TrustedProxies};

/// One proxy's forwarding headers.
pub struct Hop {
    // TODO: what must it remember? (`trusted.contains(ip)` says whether an
    // address is a trusted proxy.)
}

impl Forwarder for Hop {
    fn new(trusted: TrustedProxies) -> Self {
        todo!("Hop::new trusting {trusted}")
    }

    fn client_ip(&self, peer: IpAddr, headers: &[(&str, &str)]) -> IpAddr {
        // TODO: the peer, unless it is trusted; then walk X-Forwarded-For
        // from the right.
        todo!("Hop::client_ip from {peer} with {} headers", headers.len())
    }

    fn forward(&self, request: &Request<'_>) -> Vec<(String, String)> {
        // TODO: steps 1 to 4 above.
        todo!("Hop::forward for a request from {}", request.peer)
    }
}
