//! The power of two choices: draw two servers at random and send the request
//! to the less busy of the two (nginx `random two least_conn`).
//!
//! [`least_conn`](super::least_conn) needs an exact, up-to-date count of every
//! server's requests. When several proxies share the same servers, each only
//! sees its own requests, and they all rush to whichever server *looks* least
//! busy at the same moment. Picking at random never herds like that, but a
//! purely random choice piles up unlucky queues.
//!
//! Two random draws, keeping the less busy, gets most of both: the queues stay
//! almost as short as with least connections (the longest queue shrinks
//! exponentially compared to one random draw: Mitzenmacher's "power of two
//! choices"), yet no single server attracts everyone. The busiest server can
//! never win against an idle one, since the two draws are always two
//! *different* servers.
//!
//! This version draws *by weight*: a server with `weight = 3` is three times as
//! likely to be drawn as one with `weight = 1`, and the second draw is made
//! among the others. "Less busy" is requests in progress over weight, as in
//! least connections; on a tie the first server drawn wins (it was random).

use std::sync::Mutex;

use fastrand::Rng;

use super::Peer;

/// A power-of-two-choices balancer.
#[derive(Debug)]
pub struct RandomTwo {
    /// The random draws; one generator shared by every request.
    rng: Mutex<Rng>,
}

impl Default for RandomTwo {
    fn default() -> RandomTwo {
        RandomTwo::new()
    }
}

impl RandomTwo {
    /// A balancer with a random seed, so that proxies draw differently.
    pub fn new() -> RandomTwo {
        RandomTwo {
            rng: Mutex::new(Rng::new()),
        }
    }

    /// A balancer whose draws are the same on every run, for tests.
    pub fn with_seed(seed: u64) -> RandomTwo {
        RandomTwo {
            rng: Mutex::new(Rng::with_seed(seed)),
        }
    }

    /// The less busy of two different usable servers drawn at random by
    /// weight; the only one when one is usable; `None` when none is.
    pub fn pick<P: AsRef<Peer>>(
        &self,
        peers: &[P],
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        // No list of usable servers is built: one pass adds up their weights,
        // and each draw walks the pool again to find where it fell.
        let total: u64 = (0..peers.len())
            .filter(|&i| usable(i))
            .map(|i| weight(&peers[i]))
            .sum();
        if total == 0 {
            return None;
        }
        let (first, second) = {
            // A poisoned lock only means another pick panicked: the
            // generator is still a generator, so go on with it.
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let first = nth_by_weight(peers, &usable, None, rng.u64(0..total))?;
            let rest = total - weight(&peers[first]);
            if rest == 0 {
                // The only usable server.
                return Some(first);
            }
            let second = nth_by_weight(peers, &usable, Some(first), rng.u64(0..rest));
            (first, second)
        };
        let Some(second) = second else {
            return Some(first);
        };
        let (a, b) = (peers[first].as_ref(), peers[second].as_ref());
        // `b` is less busy when in_flight_b / weight_b < in_flight_a / weight_a.
        let b_less_busy = u64::from(b.in_flight()) * u64::from(a.weight)
            < u64::from(a.in_flight()) * u64::from(b.weight);
        Some(if b_less_busy { second } else { first })
    }
}

fn weight<P: AsRef<Peer>>(peer: &P) -> u64 {
    u64::from(peer.as_ref().weight)
}

/// The usable server (other than `skip`) on which `ticket` falls, when usable
/// servers are laid end to end each as wide as its weight.
fn nth_by_weight<P: AsRef<Peer>>(
    peers: &[P],
    usable: impl Fn(usize) -> bool,
    skip: Option<usize>,
    mut ticket: u64,
) -> Option<usize> {
    for (i, peer) in peers.iter().enumerate() {
        if Some(i) == skip || !usable(i) {
            continue;
        }
        let w = weight(peer);
        if ticket < w {
            return Some(i);
        }
        ticket -= w;
    }
    // Only when `usable` changed its mind between passes.
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::balance::Balancer;
    use crate::balance::test_support::{busy, peers};
    use crate::config::Balance;

    /// How many of `n` picks each server got.
    fn counts(r2: &RandomTwo, peers: &[Arc<Peer>], n: usize) -> Vec<usize> {
        let mut counts = vec![0; peers.len()];
        for _ in 0..n {
            let i = r2.pick(peers, |_| true).expect("a usable server");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn idle_servers_share_the_requests_evenly() {
        let r2 = RandomTwo::with_seed(7);
        let counts = counts(&r2, &peers(&[1, 1, 1, 1]), 10_000);
        for (i, &n) in counts.iter().enumerate() {
            assert!((2_000..=3_000).contains(&n), "server {i}: {n} of 10000");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_servers() {
        let p = peers(&[1, 1, 1, 1, 1]);
        let (x, y) = (RandomTwo::with_seed(3), RandomTwo::with_seed(3));
        let run = |r2: &RandomTwo| -> Vec<Option<usize>> {
            (0..50).map(|_| r2.pick(&p, |_| true)).collect()
        };
        assert_eq!(run(&x), run(&y));
    }

    #[test]
    fn a_busy_server_never_wins_against_idle_ones() {
        let r2 = RandomTwo::with_seed(11);
        let p = peers(&[1, 1, 1, 1]);
        let _c = busy(&p[2], 10);
        let counts = counts(&r2, &p, 10_000);
        assert_eq!(counts[2], 0, "{counts:?}");
        // The others share what it does not get.
        for i in [0, 1, 3] {
            assert!((2_800..=3_900).contains(&counts[i]), "{counts:?}");
        }
    }

    #[test]
    fn the_busier_of_two_servers_only_wins_when_it_is_less_busy_for_its_weight() {
        let r2 = RandomTwo::with_seed(5);
        let p = peers(&[4, 1]);
        // a: 3 of weight 4 = 0.75 per unit; b: 1 of weight 1 = 1.
        let _a = busy(&p[0], 3);
        let _b = busy(&p[1], 1);
        // With two servers both are always drawn, so a always wins.
        assert_eq!(counts(&r2, &p, 100), [100, 0]);
    }

    #[test]
    fn heavier_servers_are_drawn_more_often() {
        let r2 = RandomTwo::with_seed(13);
        let p = peers(&[3, 1, 1, 1]);
        // Make every comparison a tie broken by the first draw, so the
        // shares show the draws themselves: a first draw hits a 3 in 6 times.
        let _g: Vec<_> = p.iter().flat_map(|peer| busy(peer, 1)).collect();
        let _a = busy(&p[0], 2);
        let counts = counts(&r2, &p, 10_000);
        assert!((4_500..=5_500).contains(&counts[0]), "{counts:?}");
        for i in 1..4 {
            assert!((1_300..=2_000).contains(&counts[i]), "{counts:?}");
        }
    }

    #[test]
    fn a_single_usable_server_gets_every_request() {
        let r2 = RandomTwo::with_seed(1);
        let p = peers(&[1, 5, 1]);
        let _b = busy(&p[1], 100);
        for _ in 0..100 {
            assert_eq!(r2.pick(&p, |i| i == 1), Some(1));
        }
        assert_eq!(r2.pick(&p[..1], |_| true), Some(0));
    }

    #[test]
    fn unusable_servers_are_never_drawn() {
        let r2 = RandomTwo::with_seed(9);
        let p = peers(&[1, 1, 1, 1]);
        for _ in 0..1_000 {
            let i = r2.pick(&p, |i| i % 2 == 1).expect("b or d");
            assert!(i == 1 || i == 3, "{i}");
        }
    }

    #[test]
    fn no_usable_server_means_no_pick() {
        let r2 = RandomTwo::with_seed(2);
        assert_eq!(r2.pick(&peers(&[1, 1]), |_| false), None);
        assert_eq!(r2.pick::<Arc<Peer>>(&[], |_| true), None);
    }

    #[test]
    fn the_balancer_enum_dispatches_to_random_two() {
        let balancer = Balancer::new(Balance::RandomTwo);
        assert!(matches!(balancer, Balancer::RandomTwo(_)));
        let p = peers(&[1, 1]);
        let _a = busy(&p[0], 1);
        // Two servers: both are drawn every time, and the idle one wins.
        for _ in 0..20 {
            assert_eq!(balancer.pick(&p, |_| true, None), Some(1));
        }
        assert_eq!(balancer.pick(&p, |_| false, None), None);
    }
}
