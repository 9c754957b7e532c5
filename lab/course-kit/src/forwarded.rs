//! Chapter 03's code exercise: the headers a proxy rewrites before it passes
//! a request on, so that the upstream learns who the client is and how it
//! came, and only that.
//!
//! The upstream's TCP peer is the proxy, so the proxy tells it about the
//! client in headers, as nginx's `proxy_set_header` lines do:
//!
//! - `X-Forwarded-For` is a list: each proxy on the way **appends** the
//!   address it saw the request come from (nginx's
//!   `$proxy_add_x_forwarded_for`), whoever that was;
//! - `X-Real-IP` is the client's address, one value. It is the TCP peer,
//!   unless the peer is a **trusted proxy** (`trusted_proxies`): then it is
//!   the right-most `X-Forwarded-For` entry that is not itself a trusted
//!   proxy (nginx's `real_ip_header X-Forwarded-For; real_ip_recursive
//!   on;`). Anyone can *write* an `X-Forwarded-For`; only the entries
//!   appended by machines you trust are true;
//! - `X-Forwarded-Proto` and `X-Forwarded-Host` are the scheme the peer used
//!   to reach this proxy and the `Host` it asked for, set by the proxy,
//!   never passed on from the request;
//! - the standard `Forwarded` header (RFC 7239) is passed on only from a
//!   trusted proxy;
//! - **hop-by-hop** headers describe one connection, not the request
//!   (RFC 9110 section 7.6.1): `Connection`, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`, and every
//!   header that `Connection` names. They are removed.
//!
//! The learner writes a [`Forwarder`]; [`check`] sends it requests from a
//! client and from a trusted load balancer and compares the headers it
//! passes on with what the proxy (proxy/src/headers.rs and
//! proxy/src/access.rs) passes on.

use std::fmt;
use std::net::IpAddr;

use crate::{Checks, Report, expect_same, list};

/// The networks whose `X-Forwarded-For` is believed: the proxy's
/// `trusted_proxies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Each network as an address and a prefix length: `10.0.0.0/8`.
    networks: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Nobody is trusted (the proxy's default).
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    /// These networks, each an address (`10.0.0.1`, `::1`) or a CIDR block
    /// (`10.0.0.0/8`, `2001:db8::/32`).
    ///
    /// # Panics
    /// On a network that does not parse: the networks are the check's own.
    pub fn new(networks: &[&str]) -> TrustedProxies {
        let networks = networks
            .iter()
            .map(|text| {
                let (address, bits) = match text.split_once('/') {
                    Some((address, bits)) => (address, Some(bits)),
                    None => (*text, None),
                };
                let address: IpAddr = address
                    .parse()
                    .unwrap_or_else(|_| panic!("`{text}` is not an address or a CIDR block"));
                let max = if address.is_ipv4() { 32 } else { 128 };
                let bits = bits.map_or(max, |b| {
                    b.parse::<u8>()
                        .ok()
                        .filter(|&b| b <= max)
                        .unwrap_or_else(|| panic!("`{text}`: a bad prefix length"))
                });
                (address, bits)
            })
            .collect();
        TrustedProxies { networks }
    }

    /// Whether `ip` is in one of the networks. An IPv4 address written as
    /// IPv6 (`::ffff:10.0.0.1`, how a dual-stack socket reports an IPv4
    /// peer) counts as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.networks
            .iter()
            .any(|&(network, bits)| match (network, ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            })
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.networks.is_empty() {
            return write!(f, "nobody");
        }
        let words: Vec<String> = self
            .networks
            .iter()
            .map(|(address, bits)| format!("{address}/{bits}"))
            .collect();
        write!(f, "{}", list(&words))
    }
}

/// A request as it reaches the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The TCP peer: the machine that opened the connection to the proxy
    /// (the client itself, or a proxy in front).
    pub peer: IpAddr,
    /// How the peer reached this proxy: `"http"` or `"https"`.
    pub scheme: &'a str,
    /// The headers as they arrived, in order: names in any case, and a
    /// name may come on several lines.
    pub headers: &'a [(&'a str, &'a str)],
}

/// One proxy's forwarding headers.
pub trait Forwarder: Sized {
    /// A proxy that believes `X-Forwarded-For` from `trusted` only.
    fn new(trusted: TrustedProxies) -> Self;

    /// The client's address, for a request from `peer` with these headers
    /// (what rate limits, access rules and logs use).
    fn client_ip(&self, peer: IpAddr, headers: &[(&str, &str)]) -> IpAddr;

    /// The headers the upstream receives for `request`, as `(name, value)`
    /// lines: names in any case, a name's lines in their order.
    fn forward(&self, request: &Request<'_>) -> Vec<(String, String)>;
}

/// The networks trusted in the checks: the load balancers in front.
const LOAD_BALANCERS: &[&str] = &["10.0.0.0/8"];

/// A client on the internet, and a load balancer of ours.
const CLIENT: &str = "203.0.113.7";
const BALANCER: &str = "10.0.0.1";

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("`{text}` is not an address"))
}

/// A request as the report writes it: `from 203.0.113.7 over http with
/// X-Forwarded-For: 1.2.3.4, Host: app.localhost`.
fn show_request(request: &Request<'_>) -> String {
    let mut out = format!("from {} over {}", request.peer, request.scheme);
    if !request.headers.is_empty() {
        let lines: Vec<String> = request
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        out.push_str(" with ");
        out.push_str(&lines.join("; "));
    }
    out
}

/// The values of `name`'s lines in `headers`, in order.
fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// A header's lines as the report writes them: `none`, or `a` and `b`.
fn show_values(values: &[String]) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    quoted.join(" and ")
}

/// `Ok` when `forward(request)` has, for each `(name, values)` of
/// `expected`, exactly these lines of that name (no line when `values` is
/// empty).
fn passes<F: Forwarder>(
    trusted: &[&str],
    request: Request<'_>,
    expected: &[(&str, &[&str])],
) -> Result<(), String> {
    let proxy = F::new(TrustedProxies::new(trusted));
    let got = proxy.forward(&request);
    for (name, want) in expected {
        let want: Vec<String> = want.iter().map(|v| (*v).to_owned()).collect();
        let have = values(&got, name);
        if want != have {
            return Err(format!(
                "{}: expected {name} {}, got {}",
                show_request(&request),
                show_values(&want),
                show_values(&have)
            ));
        }
    }
    Ok(())
}

/// `Ok` when `client_ip` and the `X-Real-IP` passed on are both `expected`.
fn client<F: Forwarder>(
    trusted: &[&str],
    request: Request<'_>,
    expected: &str,
) -> Result<(), String> {
    let proxy = F::new(TrustedProxies::new(trusted));
    let got = proxy.client_ip(request.peer, request.headers);
    expect_same(expected, got).map_err(|e| {
        format!(
            "{} (trusting {}): the client: {e}",
            show_request(&request),
            TrustedProxies::new(trusted)
        )
    })?;
    passes::<F>(trusted, request, &[("X-Real-IP", &[expected])])
}

/// A request from `peer` over `scheme` with `headers`.
fn from<'a>(peer: &str, scheme: &'a str, headers: &'a [(&'a str, &'a str)]) -> Request<'a> {
    Request {
        peer: ip(peer),
        scheme,
        headers,
    }
}

/// Checks a [`Forwarder`] against the proxy's forwarding headers.
pub fn check<F: Forwarder + 'static>() -> Report {
    let lb = LOAD_BALANCERS;
    let mut checks =
        Checks::new("forwarded.rs: forwarding headers and whom to believe (chapter 03)");
    checks.property(
        "X-Forwarded-For gets the peer appended, never replaced: `198.51.100.1` from 203.0.113.7 goes on as `198.51.100.1, 203.0.113.7`; none at all as `203.0.113.7`",
        move || {
            passes::<F>(
                &[],
                from(CLIENT, "http", &[("X-Forwarded-For", "198.51.100.1")]),
                &[("X-Forwarded-For", &["198.51.100.1, 203.0.113.7"])],
            )?;
            passes::<F>(
                &[],
                from(CLIENT, "http", &[]),
                &[("X-Forwarded-For", &["203.0.113.7"])],
            )?;
            passes::<F>(
                lb,
                from(BALANCER, "http", &[("x-forwarded-for", "203.0.113.7")]),
                &[("X-Forwarded-For", &["203.0.113.7, 10.0.0.1"])],
            )
        },
    );
    checks.property(
        "several X-Forwarded-For lines are one list: `198.51.100.1` and `192.0.2.3, 192.0.2.4` go on as one line, the peer last",
        move || {
            passes::<F>(
                &[],
                from(
                    CLIENT,
                    "http",
                    &[
                        ("X-Forwarded-For", "198.51.100.1"),
                        ("Accept", "*/*"),
                        ("X-Forwarded-For", "192.0.2.3, 192.0.2.4"),
                    ],
                ),
                &[(
                    "X-Forwarded-For",
                    &["198.51.100.1, 192.0.2.3, 192.0.2.4, 203.0.113.7"],
                )],
            )
        },
    );
    checks.property(
        "from a peer that is not a trusted proxy, the client is the peer, whatever X-Forwarded-For and X-Real-IP claim",
        move || {
            let claims = [
                ("X-Forwarded-For", "10.0.0.9"),
                ("X-Real-IP", "10.0.0.9"),
            ];
            client::<F>(&[], from(CLIENT, "http", &claims), CLIENT)?;
            client::<F>(lb, from(CLIENT, "http", &claims), CLIENT)?;
            client::<F>(lb, from("2001:db8::7", "https", &claims), "2001:db8::7")
        },
    );
    checks.property(
        "from a trusted proxy, the client is the right-most X-Forwarded-For entry that is not a trusted proxy: `198.51.100.1, 203.0.113.7, 10.0.0.2` from 10.0.0.1 is 203.0.113.7 (not the left-most, which anyone could have written)",
        move || {
            client::<F>(
                lb,
                from(
                    BALANCER,
                    "http",
                    &[("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.0.0.2")],
                ),
                CLIENT,
            )?;
            client::<F>(
                lb,
                from(
                    BALANCER,
                    "http",
                    &[
                        ("X-Forwarded-For", "198.51.100.1"),
                        ("X-Forwarded-For", "203.0.113.7"),
                        ("X-Real-IP", "198.51.100.1"),
                    ],
                ),
                CLIENT,
            )?;
            // A dual-stack socket reports an IPv4 load balancer as IPv6.
            client::<F>(
                lb,
                from(
                    "::ffff:10.0.0.1",
                    "http",
                    &[("X-Forwarded-For", "2001:db8::7")],
                ),
                "2001:db8::7",
            )
        },
    );
    checks.property(
        "from a trusted proxy, an entry that is not an address stops the walk, only trusted entries end at the left-most, and no X-Forwarded-For leaves the peer",
        move || {
            let walk = |xff: &'static [(&'static str, &'static str)], expected| {
                client::<F>(lb, from(BALANCER, "http", xff), expected)
            };
            walk(&[("X-Forwarded-For", "203.0.113.7, unknown, 10.0.0.3")], "10.0.0.3")?;
            walk(&[("X-Forwarded-For", "10.0.0.5,10.0.0.3")], "10.0.0.5")?;
            walk(&[("X-Forwarded-For", "unknown")], BALANCER)?;
            walk(&[], BALANCER)
        },
    );
    checks.property(
        "X-Forwarded-Proto is the scheme the peer used to reach this proxy, never a value that came in (not even from a trusted proxy): a client's `https` over http goes on as `http`",
        move || {
            passes::<F>(
                &[],
                from(CLIENT, "http", &[("X-Forwarded-Proto", "https")]),
                &[("X-Forwarded-Proto", &["http"])],
            )?;
            passes::<F>(
                &[],
                from(CLIENT, "https", &[]),
                &[("X-Forwarded-Proto", &["https"])],
            )?;
            passes::<F>(
                lb,
                from(BALANCER, "http", &[("x-forwarded-proto", "https")]),
                &[("X-Forwarded-Proto", &["http"])],
            )
        },
    );
    checks.property(
        "X-Forwarded-Host is the Host the client asked for, and Host goes on as it came; without a Host, an X-Forwarded-Host that came in is dropped",
        move || {
            passes::<F>(
                &[],
                from(
                    CLIENT,
                    "http",
                    &[
                        ("Host", "app.localhost"),
                        ("X-Forwarded-Host", "evil.example"),
                    ],
                ),
                &[
                    ("X-Forwarded-Host", &["app.localhost"]),
                    ("Host", &["app.localhost"]),
                ],
            )?;
            passes::<F>(
                &[],
                from(CLIENT, "http", &[("X-Forwarded-Host", "evil.example")]),
                &[("X-Forwarded-Host", &[]), ("Host", &[])],
            )
        },
    );
    checks.property(
        "a Forwarded header (RFC 7239) goes on from a trusted proxy only; a client's is dropped",
        move || {
            let claim = [("Forwarded", "for=198.51.100.1;proto=https")];
            passes::<F>(lb, from(CLIENT, "http", &claim), &[("Forwarded", &[])])?;
            passes::<F>(&[], from(CLIENT, "http", &claim), &[("Forwarded", &[])])?;
            passes::<F>(
                lb,
                from(BALANCER, "http", &claim),
                &[("Forwarded", &["for=198.51.100.1;proto=https"])],
            )
        },
    );
    checks.property(
        "hop-by-hop headers are removed, in any case: Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade",
        move || {
            let names = [
                "Connection",
                "Keep-Alive",
                "Proxy-Connection",
                "TE",
                "Transfer-Encoding",
                "Upgrade",
            ];
            let gone: Vec<(&str, &[&str])> = names.iter().map(|n| (*n, &[][..])).collect();
            passes::<F>(
                &[],
                from(
                    CLIENT,
                    "http",
                    &[
                        ("connection", "keep-alive"),
                        ("KEEP-ALIVE", "timeout=5"),
                        ("Proxy-Connection", "keep-alive"),
                        ("te", "trailers"),
                        ("Transfer-Encoding", "chunked"),
                        ("Upgrade", "h2c"),
                    ],
                ),
                &gone,
            )
        },
    );
    checks.property(
        "the headers Connection names are removed too, whatever their case, from every Connection line: `close, X-Secret` and `x-other`; a named X-Forwarded-For makes the list start again at the peer",
        move || {
            passes::<F>(
                &[],
                from(
                    CLIENT,
                    "http",
                    &[
                        ("Connection", "close, X-Secret"),
                        ("x-secret", "1"),
                        ("Connection", "x-other"),
                        ("X-Other", "2"),
                        ("X-Kept", "3"),
                    ],
                ),
                &[("X-Secret", &[]), ("X-Other", &[]), ("X-Kept", &["3"])],
            )?;
            passes::<F>(
                &[],
                from(
                    CLIENT,
                    "http",
                    &[
                        ("Connection", "X-Forwarded-For"),
                        ("X-Forwarded-For", "198.51.100.1"),
                    ],
                ),
                &[("X-Forwarded-For", &["203.0.113.7"])],
            )
        },
    );
    checks.property(
        "every other header goes on unchanged, a name's several lines apart and in their order",
        move || {
            let headers = [
                ("Host", "app.localhost"),
                ("Accept", "text/html"),
                ("Cookie", "a=1"),
                ("Authorization", "Bearer t0k3n"),
                ("cookie", "b=2"),
                ("X-Request-Id", "42"),
            ];
            let proxy = F::new(TrustedProxies::none());
            let request = from(CLIENT, "https", &headers);
            let got = proxy.forward(&request);
            let own = [
                "x-forwarded-for",
                "x-real-ip",
                "x-forwarded-proto",
                "x-forwarded-host",
            ];
            let mut expected: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
                .collect();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            let mut rest: Vec<(String, String)> = got
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .filter(|(n, _)| !own.contains(&n.as_str()))
                .collect();
            rest.sort_by(|a, b| a.0.cmp(&b.0));
            let show = |lines: &[(String, String)]| {
                let words: Vec<String> = lines.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                words.join("; ")
            };
            expect_same(show(&expected), show(&rest)).map_err(|e| {
                format!(
                    "{}: besides the four forwarding headers, {e}",
                    show_request(&request)
                )
            })
        },
    );
    checks.finish()
}
