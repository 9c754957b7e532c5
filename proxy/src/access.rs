//! Who the client is, and whether it may come in.
//!
//! **The client's address.** The proxy's TCP peer is the client, unless the
//! peer is another proxy in front of this one (a load balancer, a CDN). Then
//! the real client is in `X-Forwarded-For`, which each proxy appends to. But
//! anyone can *send* an `X-Forwarded-For`, so it is believed only from peers
//! listed in `trusted_proxies` (none by default). From such a peer, the list is
//! read right to left, skipping the trusted proxies' own entries; the first
//! address that is not a trusted proxy is the client (nginx `real_ip_header
//! X-Forwarded-For; real_ip_recursive on;`).
//!
//! **Access lists** (nginx `allow` / `deny`): rules checked in order, the first
//! that matches the client's address decides; an address no rule matches is
//! let in. A denied request gets 403.
//!
//! **Basic authentication** (nginx `auth_basic`): the client sends
//! `Authorization: Basic base64(user:password)`; the proxy checks the password
//! against a bcrypt hash from the config (never the password itself: a leaked
//! config must not leak passwords, and bcrypt is slow on purpose so guessing
//! is slow too). A missing or wrong password gets 401 with
//! `WWW-Authenticate: Basic realm="..."`, which makes a browser ask for it.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// A set of networks (`10.0.0.0/8`, `::1`, or `all`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`;
/// compare it as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses one network: an address (`10.1.2.3`, `::1`), a CIDR block
/// (`10.0.0.0/8`) or `all`.
pub fn parse_network(text: &str) -> Option<Vec<IpNet>> {
    let text = text.trim();
    if text == "all" {
        return Some(vec![
            IpNet::from_str("0.0.0.0/0").ok()?,
            IpNet::from_str("::/0").ok()?,
        ]);
    }
    if let Ok(net) = IpNet::from_str(text) {
        return Some(vec![net.trunc()]);
    }
    IpAddr::from_str(text).ok().map(|ip| vec![IpNet::from(ip)])
}

impl FromStr for Networks {
    type Err = String;

    /// `"10.0.0.0/8"`: one network (see [`parse_network`]).
    fn from_str(text: &str) -> Result<Networks, String> {
        parse_network(text)
            .map(Networks)
            .ok_or_else(|| format!("`{text}` is not an address, a CIDR block or `all`"))
    }
}

impl FromIterator<Networks> for Networks {
    fn from_iter<I: IntoIterator<Item = Networks>>(iter: I) -> Networks {
        Networks(iter.into_iter().flat_map(|n| n.0).collect())
    }
}

/// One access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// Whether a match lets the client in.
    pub allow: bool,
    /// The addresses it matches.
    pub networks: Networks,
}

impl FromStr for AccessRule {
    type Err = String;

    /// `"allow 10.0.0.0/8"`, `"deny all"`.
    fn from_str(text: &str) -> Result<AccessRule, String> {
        let (verb, network) = text
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((text.trim(), ""));
        let allow = match verb {
            "allow" => true,
            "deny" => false,
            _ => return Err(format!("`{text}` does not start with `allow` or `deny`")),
        };
        Ok(AccessRule {
            allow,
            networks: network.parse()?,
        })
    }
}

/// Whether `client` may come in: the first matching rule decides; no match lets it in.
pub fn is_allowed(rules: &[AccessRule], client: IpAddr) -> bool {
    rules
        .iter()
        .find(|rule| rule.networks.contains(client))
        .is_none_or(|rule| rule.allow)
}

/// Users and their bcrypt password hashes, for one server or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// Shown by the browser when it asks for a password.
    pub realm: String,
    /// `(user, bcrypt hash)`.
    pub users: Vec<(String, String)>,
}

impl BasicAuth {
    /// Whether the `Authorization` header value carries a known user and
    /// the right password. Runs bcrypt: call it off the async threads.
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        use base64::Engine as _;
        let Some(encoded) = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(credentials) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = credentials.split_once(':') else {
            return false;
        };
        self.users
            .iter()
            .find(|(name, _)| name == user)
            .is_some_and(|(_, hash)| bcrypt::verify(password, hash).unwrap_or(false))
    }
}

/// Whether `hash` looks like a bcrypt hash (`$2b$12$...`, 60 characters).
pub fn is_bcrypt_hash(hash: &str) -> bool {
    hash.len() == 60 && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(trusted: &Networks, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let entries: Vec<&str> = headers
        .get_all(crate::headers::X_FORWARDED_FOR.clone())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        let Ok(ip) = IpAddr::from_str(entry.trim()) else {
            // Garbage in the chain: stop believing it here.
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn the_first_matching_rule_decides_and_no_match_lets_in() {
        let rules: Vec<AccessRule> = ["allow 10.1.2.3", "deny 10.0.0.0/8", "allow ::1"]
            .iter()
            .map(|r| r.parse().expect("rule"))
            .collect();
        assert!(is_allowed(&rules, ip("10.1.2.3")));
        assert!(!is_allowed(&rules, ip("10.9.9.9")));
        assert!(is_allowed(&rules, ip("192.168.1.1")), "no rule matches");
        let closed: Vec<AccessRule> = ["allow 127.0.0.1", "deny all"]
            .iter()
            .map(|r| r.parse().expect("rule"))
            .collect();
        assert!(is_allowed(&closed, ip("127.0.0.1")));
        assert!(
            is_allowed(&closed, ip("::ffff:127.0.0.1")),
            "IPv4-mapped is IPv4"
        );
        assert!(!is_allowed(&closed, ip("::1")));
    }

    #[test]
    fn basic_auth_checks_the_password_against_the_bcrypt_hash() {
        use base64::Engine as _;
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        assert!(is_bcrypt_hash(&hash));
        let auth = BasicAuth {
            realm: "lab".into(),
            users: vec![("alice".into(), hash)],
        };
        let header = |creds: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            )
        };
        assert!(auth.verify(Some(header("alice:s3cret").as_bytes())));
        assert!(!auth.verify(Some(header("alice:wrong").as_bytes())));
        assert!(!auth.verify(Some(header("bob:s3cret").as_bytes())));
        assert!(!auth.verify(Some(b"Basic !!!not base64")));
        assert!(!auth.verify(Some(b"Bearer token")));
        assert!(!auth.verify(None));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!("permit 10.0.0.0/8".parse::<AccessRule>().is_err());
        let err = "allow 10.0.0.300"
            .parse::<AccessRule>()
            .expect_err("bad ip");
        assert!(
            err.contains("not an address, a CIDR block or `all`"),
            "{err}"
        );
    }

    #[test]
    fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
        let none = Networks::default();
        let lb: Networks = "10.0.0.0/8".parse().expect("net");
        let headers = xff("198.51.100.9, 203.0.113.7, 10.0.0.2");
        assert_eq!(client_ip(&none, ip("10.0.0.1"), &headers), ip("10.0.0.1"));
        assert_eq!(
            client_ip(&lb, ip("192.0.2.1"), &headers),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        // Right to left: 10.0.0.2 is a trusted hop, 203.0.113.7 is the client;
        // 198.51.100.9 was written by the client itself and is ignored.
        assert_eq!(client_ip(&lb, ip("10.0.0.1"), &headers), ip("203.0.113.7"));
        assert_eq!(
            client_ip(&lb, ip("10.0.0.1"), &xff("garbage, 10.0.0.3")),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(&lb, ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }
}
