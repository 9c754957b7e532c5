//! Least connections: the next request goes to the server that is least busy
//! right now, for its weight (nginx `least_conn`).
//!
//! Round-robin hands out requests evenly, but requests are not all alike: a
//! slow report and a quick health probe count the same. When one server is
//! stuck on slow requests, round-robin keeps sending it its share and they
//! queue up. Least connections looks at what each server has *in progress*
//! ([`Peer::in_flight`]) and sends the request where the queue is shortest,
//! so a slow server automatically gets fewer new requests.
//!
//! Weights still count: a server with `weight = 2` is meant to carry twice as
//! much, so 2 requests in progress on it are as busy as 1 on a `weight = 1`
//! server. The comparison is `in_flight / weight`, done without division or
//! floats by cross-multiplying: `a` is less busy than `b` when
//! `in_flight_a * weight_b < in_flight_b * weight_a`.
//!
//! Ties are common (all servers idle, say), and always sending a tie to the
//! first server would overload it. Like nginx, ties are broken by smooth
//! weighted round-robin among the tied servers only, so idle servers take
//! turns in proportion to their weights.

use super::{Peer, RoundRobin};

/// A least-connections balancer.
#[derive(Debug, Default)]
pub struct LeastConn {
    /// Rotates among the servers that tie for least busy.
    ties: RoundRobin,
}

impl LeastConn {
    /// A balancer whose first tie goes to the first server.
    pub fn new() -> LeastConn {
        LeastConn::default()
    }

    /// The usable server with the fewest requests in progress for its weight;
    /// `None` when none is usable.
    pub fn pick<P: AsRef<Peer>>(
        &self,
        peers: &[P],
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        // First pass: the least busy load, and how many servers share it.
        // Loads are read once into `best_load` so that the second pass
        // compares against the same figure even if requests end meanwhile.
        let mut best: Option<(usize, Load)> = None;
        let mut tied = 0usize;
        for (i, peer) in peers.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let load = Load::of(peer.as_ref());
            match best {
                Some((_, b)) if load.is_less_than(b) => {
                    best = Some((i, load));
                    tied = 1;
                }
                Some((_, b)) if !b.is_less_than(load) => tied += 1,
                Some(_) => {}
                None => {
                    best = Some((i, load));
                    tied = 1;
                }
            }
        }
        let (first, best_load) = best?;
        if tied == 1 {
            return Some(first);
        }
        // Second pass: rotate among the servers that tie. Counts move under
        // our feet (other requests begin and end), so should the tie have
        // vanished in between, the first least busy server found will do.
        let in_tie = |i: usize| {
            usable(i)
                && peers
                    .get(i)
                    .is_some_and(|p| Load::of(p.as_ref()).equals(best_load))
        };
        self.ties.pick(peers, in_tie).or(Some(first))
    }
}

/// How busy a server is: requests in progress over weight, kept as a
/// fraction so that comparing two loads needs no division.
#[derive(Debug, Clone, Copy)]
struct Load {
    in_flight: u64,
    weight: u64,
}

impl Load {
    fn of(peer: &Peer) -> Load {
        Load {
            in_flight: u64::from(peer.in_flight()),
            weight: u64::from(peer.weight),
        }
    }

    /// `self.in_flight / self.weight < other.in_flight / other.weight`.
    fn is_less_than(self, other: Load) -> bool {
        self.in_flight * other.weight < other.in_flight * self.weight
    }

    /// `self.in_flight / self.weight == other.in_flight / other.weight`.
    fn equals(self, other: Load) -> bool {
        self.in_flight * other.weight == other.in_flight * self.weight
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::balance::Balancer;
    use crate::balance::test_support::{busy, peers};
    use crate::config::Balance;

    fn picks(lc: &LeastConn, peers: &[Arc<Peer>], n: usize) -> String {
        (0..n)
            .map(|_| match lc.pick(peers, |_| true) {
                Some(i) => char::from(b'a' + i as u8),
                None => '-',
            })
            .collect()
    }

    #[test]
    fn the_server_with_fewest_requests_in_progress_wins() {
        let lc = LeastConn::new();
        let p = peers(&[1, 1, 1]);
        let _a = busy(&p[0], 3);
        let _b = busy(&p[1], 1);
        let _c = busy(&p[2], 2);
        assert_eq!(lc.pick(&p, |_| true), Some(1));
        // And again: picking alone starts no request, so b stays least busy.
        assert_eq!(lc.pick(&p, |_| true), Some(1));
    }

    #[test]
    fn requests_that_end_make_a_server_least_busy_again() {
        let lc = LeastConn::new();
        let p = peers(&[1, 1]);
        let a = busy(&p[0], 2);
        let _b = busy(&p[1], 1);
        assert_eq!(lc.pick(&p, |_| true), Some(1));
        drop(a);
        assert_eq!(lc.pick(&p, |_| true), Some(0));
    }

    #[test]
    fn weight_two_with_two_in_flight_ties_with_weight_one_with_one() {
        let lc = LeastConn::new();
        let p = peers(&[2, 1]);
        let _a = busy(&p[0], 2);
        let _b = busy(&p[1], 1);
        // Both are at one request per unit of weight: a tie, broken by
        // weighted round-robin, so a gets two picks for b's one.
        assert_eq!(picks(&lc, &p, 6), "abaaba");
        // One more on b and a is strictly less busy.
        let _b2 = busy(&p[1], 1);
        assert_eq!(picks(&lc, &p, 3), "aaa");
    }

    #[test]
    fn a_heavier_server_takes_more_before_it_counts_as_busier() {
        let lc = LeastConn::new();
        let p = peers(&[3, 1]);
        let _a = busy(&p[0], 2);
        let _b = busy(&p[1], 1);
        // 2/3 < 1/1: a wins although it has more requests in progress.
        assert_eq!(lc.pick(&p, |_| true), Some(0));
    }

    #[test]
    fn idle_servers_take_turns() {
        let lc = LeastConn::new();
        assert_eq!(picks(&lc, &peers(&[1, 1, 1]), 7), "abcabca");
    }

    #[test]
    fn ties_rotate_only_among_the_least_busy() {
        let lc = LeastConn::new();
        let p = peers(&[1, 1, 1, 1]);
        let _b = busy(&p[1], 1);
        assert_eq!(picks(&lc, &p, 6), "acdacd");
    }

    #[test]
    fn unusable_servers_are_skipped_even_when_idle() {
        let lc = LeastConn::new();
        let p = peers(&[1, 1, 1]);
        let _b = busy(&p[1], 5);
        let _c = busy(&p[2], 1);
        // a is idle but down: c, the least busy of the rest, wins.
        assert_eq!(lc.pick(&p, |i| i != 0), Some(2));
        assert_eq!(lc.pick(&p, |i| i == 1), Some(1));
    }

    #[test]
    fn no_usable_server_means_no_pick() {
        let lc = LeastConn::new();
        assert_eq!(lc.pick(&peers(&[1, 1]), |_| false), None);
        assert_eq!(lc.pick::<Arc<Peer>>(&[], |_| true), None);
    }

    #[test]
    fn the_balancer_enum_dispatches_to_least_conn() {
        let balancer = Balancer::new(Balance::LeastConn);
        assert!(matches!(balancer, Balancer::LeastConn(_)));
        let p = peers(&[1, 1, 1]);
        let _a = busy(&p[0], 1);
        let _c = busy(&p[2], 1);
        assert_eq!(balancer.pick(&p, |_| true, Some(42)), Some(1));
        assert_eq!(balancer.pick(&p, |_| false, None), None);
    }
}
