//! Traffic limits: how much a client may ask of the proxy.
//!
//! - [`rate`]: requests per second per key (nginx `limit_req`), a leaky bucket.
//! - [`conn`]: requests in progress at once per key (nginx `limit_conn`).

pub mod conn;
pub mod rate;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::OnceLock;

pub use conn::{ConnLimitZone, ConnPermit};
pub use rate::{Decision, RateLimitZone};

/// What a limit counts requests by, in a fixed 16 bytes so that a zone's
/// memory per key is known in advance (nginx's `$binary_remote_addr` is 4 or
/// 16 bytes for the same reason).
///
/// A client address is stored as itself (IPv4 as an IPv4-mapped IPv6 address).
/// Any other key, such as a header's value, is stored as a 128-bit hash with a
/// secret, per-process seed: two different values sharing a slot is as likely
/// as guessing the seed, so a client cannot pick values that collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey([u8; 16]);

impl LimitKey {
    /// The key of a client address.
    pub fn ip(ip: IpAddr) -> LimitKey {
        LimitKey(match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        })
    }

    /// The key of any other value: a header's value, a route's name.
    pub fn hashed(value: &[u8]) -> LimitKey {
        static SEEDS: OnceLock<[std::hash::RandomState; 2]> = OnceLock::new();
        let [a, b] = SEEDS.get_or_init(Default::default);
        let mut key = [0; 16];
        key[..8].copy_from_slice(&a.hash_one(value).to_le_bytes());
        key[8..].copy_from_slice(&b.hash_one(value).to_le_bytes());
        LimitKey(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_and_its_mapped_ipv6_form_are_one_key() {
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(LimitKey::ip(v4), LimitKey::ip(mapped));
        assert_ne!(
            LimitKey::ip(v4),
            LimitKey::ip("10.0.0.2".parse().expect("ip"))
        );
    }

    #[test]
    fn hashed_keys_are_stable_within_a_process_and_distinct() {
        assert_eq!(LimitKey::hashed(b"alice"), LimitKey::hashed(b"alice"));
        assert_ne!(LimitKey::hashed(b"alice"), LimitKey::hashed(b"bob"));
        assert_ne!(LimitKey::hashed(b""), LimitKey::hashed(b"\0"));
    }
}
