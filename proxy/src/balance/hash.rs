//! Consistent hashing: the same key (client address, header, cookie) always
//! goes to the same server, so that server's cache or session stays warm
//! (nginx `hash $key consistent`).
//!
//! The obvious way, `hash(key) % servers`, sends a key to the same server
//! only while the pool does not change. Add or remove one server and the
//! modulus changes: almost every key moves, and every cache goes cold at
//! once. *Consistent* hashing moves only the keys it must.
//!
//! This module uses rendezvous hashing (Thaler and Ravishankar's "highest
//! random weight"), simpler than nginx's ring of points and with no table to
//! build. For a key, every server gets a score, a hash of the key together
//! with the server's identity ([`Peer::id`], a hash of its address); the
//! highest score wins. Each score depends only on the key and that one
//! server, never on which other servers exist, so:
//!
//! - when a server is removed, the keys it was winning go to their
//!   runner-up, and every other key keeps its winner: only its keys move;
//! - when a server is added, it wins exactly the keys for which it scores
//!   above the current winner (about `1 / servers` of them) and takes them
//!   over; no key moves between two old servers;
//! - when the preferred server is down (not usable), the key goes to its
//!   next-highest-scoring server, and comes back when the server recovers.
//!   Each key has its own order of servers, so a down server's keys spread
//!   over all the others instead of all landing on its neighbour.
//!
//! Weights use the weighted form of the score, `weight / -ln(u)`, where `u`
//! is the hash turned into a number strictly between 0 and 1: a server with
//! `weight = 3` wins three times as many keys as one with `weight = 1`, and
//! the properties above still hold.
//!
//! Without a key (the header or cookie is missing), there is nothing to be
//! consistent about: the request goes round-robin, as nginx does for an
//! empty key.

use super::{Peer, RoundRobin};

/// A consistent-hashing (rendezvous) balancer.
#[derive(Debug, Default)]
pub struct ConsistentHash {
    /// For requests without a key.
    no_key: RoundRobin,
}

impl ConsistentHash {
    /// A balancer; the mapping of keys needs no state, only the fallback does.
    pub fn new() -> ConsistentHash {
        ConsistentHash::default()
    }

    /// The usable server with the highest score for `key`; round-robin when
    /// there is no key; `None` when no server is usable.
    pub fn pick<P: AsRef<Peer>>(
        &self,
        peers: &[P],
        usable: impl Fn(usize) -> bool,
        key: Option<u64>,
    ) -> Option<usize> {
        let Some(key) = key else {
            return self.no_key.pick(peers, usable);
        };
        let mut best: Option<(usize, f64)> = None;
        for (i, peer) in peers.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let score = score(key, peer.as_ref());
            // Strictly greater: on an (unlikely) exact tie the earlier server
            // keeps the key, whichever other servers come and go.
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// `peer`'s score for `key`: `weight / -ln(u)`, `u` in (0, 1) from a hash of
/// the two. Higher is better.
fn score(key: u64, peer: &Peer) -> f64 {
    let u = unit_interval(mix(key ^ peer.id));
    f64::from(peer.weight) / -u.ln()
}

/// The top 52 bits of `hash` as a number strictly between 0 and 1: never 0,
/// whose `ln` is minus infinity, and never 1, whose `ln` is 0. Adding one half
/// keeps it off 0; 52 bits, not the 53 an `f64` holds, so that the half still
/// fits and the largest hash does not round up to exactly 1.
fn unit_interval(hash: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 52) as f64;
    ((hash >> 12) as f64 + 0.5) * SCALE
}

/// The splitmix64 finalizer: every input bit flips about half the output
/// bits, so keys and server ids that differ in a single bit still get
/// unrelated scores. It is a bijection, so distinct inputs never collide.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::peers;
    use crate::balance::{Balancer, stable_hash};
    use crate::config::Balance;

    /// Keys as the proxy makes them: the hash of a client address.
    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| stable_hash(format!("198.51.{}.{}", i / 256, i % 256).as_bytes()))
            .collect()
    }

    /// Each key's server, with only the servers `usable` allows.
    fn map(
        hash: &ConsistentHash,
        peers: &[std::sync::Arc<Peer>],
        keys: &[u64],
        usable: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        keys.iter()
            .map(|&k| hash.pick(peers, &usable, Some(k)).expect("a usable server"))
            .collect()
    }

    fn shares(mapping: &[usize], servers: usize) -> Vec<usize> {
        let mut shares = vec![0; servers];
        for &i in mapping {
            shares[i] += 1;
        }
        shares
    }

    #[test]
    fn the_same_key_always_goes_to_the_same_server() {
        let hash = ConsistentHash::new();
        let p = peers(&[1; 5]);
        for key in keys(100) {
            let first = hash.pick(&p, |_| true, Some(key));
            for _ in 0..5 {
                assert_eq!(hash.pick(&p, |_| true, Some(key)), first);
            }
            // A fresh balancer (another process, a restart) agrees.
            assert_eq!(ConsistentHash::new().pick(&p, |_| true, Some(key)), first);
        }
    }

    #[test]
    fn ten_equal_servers_each_get_about_a_tenth_of_the_keys() {
        let hash = ConsistentHash::new();
        let mapping = map(&hash, &peers(&[1; 10]), &keys(10_000), |_| true);
        for (i, &n) in shares(&mapping, 10).iter().enumerate() {
            assert!((700..=1_300).contains(&n), "server {i}: {n} of 10000");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_own_keys() {
        let hash = ConsistentHash::new();
        let p = peers(&[1; 10]);
        let keys = keys(10_000);
        let before = map(&hash, &p, &keys, |_| true);
        let after = map(&hash, &p, &keys, |i| i != 3);
        for (k, (&b, &a)) in before.iter().zip(&after).enumerate() {
            if b == 3 {
                assert_ne!(a, 3, "key {k} stayed on the removed server");
            } else {
                assert_eq!(a, b, "key {k} moved although its server stayed");
            }
        }
        // Server 3's keys spread over the others, not onto one neighbour.
        let moved: Vec<usize> = (0..keys.len())
            .filter(|&k| before[k] == 3)
            .map(|k| after[k])
            .collect();
        let spread = shares(&moved, 10);
        assert!(spread.iter().filter(|&&n| n > 0).count() == 9, "{spread:?}");
    }

    #[test]
    fn a_down_server_gets_its_keys_back_when_it_recovers() {
        let hash = ConsistentHash::new();
        let p = peers(&[1; 4]);
        for key in keys(200) {
            let home = hash.pick(&p, |_| true, Some(key)).expect("a server");
            let away = hash.pick(&p, |i| i != home, Some(key));
            assert!(away.is_some_and(|a| a != home));
            assert_eq!(hash.pick(&p, |_| true, Some(key)), Some(home));
        }
    }

    #[test]
    fn adding_a_server_moves_about_one_in_eleven_keys_all_to_it() {
        let hash = ConsistentHash::new();
        let ten = peers(&[1; 10]);
        let eleven = peers(&[1; 11]);
        let keys = keys(10_000);
        let before = map(&hash, &ten, &keys, |_| true);
        let after = map(&hash, &eleven, &keys, |_| true);
        let mut moved = 0;
        for (k, (&b, &a)) in before.iter().zip(&after).enumerate() {
            if a != b {
                assert_eq!(
                    a, 10,
                    "key {k} moved from {b} to {a}, not to the new server"
                );
                moved += 1;
            }
        }
        assert!((500..=1_400).contains(&moved), "{moved} of 10000 moved");
    }

    #[test]
    fn a_weight_three_server_gets_about_three_times_the_keys() {
        let hash = ConsistentHash::new();
        // Expected: 3/12 = 2500 for a, 1/12 = 833 for each of the others.
        let mapping = map(
            &hash,
            &peers(&[3, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
            &keys(10_000),
            |_| true,
        );
        let shares = shares(&mapping, 10);
        assert!((2_200..=2_800).contains(&shares[0]), "{shares:?}");
        for (i, &n) in shares.iter().enumerate().skip(1) {
            assert!((600..=1_100).contains(&n), "server {i}: {shares:?}");
        }
        let others = (10_000 - shares[0]) as f64 / 9.0;
        let ratio = shares[0] as f64 / others;
        assert!((2.5..=3.5).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn without_a_key_requests_go_round_robin() {
        let hash = ConsistentHash::new();
        let p = peers(&[1, 1, 1]);
        let seq: Vec<Option<usize>> = (0..6).map(|_| hash.pick(&p, |_| true, None)).collect();
        let expected = [0, 1, 2, 0, 1, 2].map(Some);
        assert_eq!(seq, expected);
        assert_eq!(hash.pick(&p, |i| i == 2, None), Some(2));
    }

    #[test]
    fn no_usable_server_means_no_pick() {
        let hash = ConsistentHash::new();
        let p = peers(&[1, 1]);
        assert_eq!(hash.pick(&p, |_| false, Some(1)), None);
        assert_eq!(hash.pick(&p, |_| false, None), None);
        assert_eq!(hash.pick::<Peer>(&[], |_| true, Some(1)), None);
    }

    #[test]
    fn scores_stay_finite_and_positive_at_the_extremes() {
        for hash in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            let u = unit_interval(hash);
            assert!(u > 0.0 && u < 1.0, "{hash}: {u}");
            let s = 1.0 / -u.ln();
            assert!(s.is_finite() && s > 0.0, "{hash}: {s}");
        }
    }

    #[test]
    fn the_balancer_enum_dispatches_to_hash() {
        let balancer = Balancer::new(Balance::Hash);
        assert!(matches!(balancer, Balancer::Hash(_)));
        let p = peers(&[1; 5]);
        let key = stable_hash(b"203.0.113.7");
        let home = balancer.pick(&p, |_| true, Some(key));
        assert!(home.is_some());
        for _ in 0..10 {
            assert_eq!(balancer.pick(&p, |_| true, Some(key)), home);
        }
        assert_eq!(balancer.pick(&p, |_| true, None), Some(0));
        assert_eq!(balancer.pick(&p, |_| true, None), Some(1));
    }
}
