//! Smooth weighted round-robin, nginx's default for an `upstream` block.
//!
//! With equal weights it is plain round-robin: 0, 1, 2, 0, 1, 2, ... which is
//! what the classic tutorial proves by asking three replicas their names. With
//! weights, each server gets its share, *spread out*: weights 5, 1, 1 give
//! `a a b a c a a`, not `a a a a a b c`, so no server gets a burst.
//!
//! The algorithm (nginx's `ngx_http_upstream_get_peer`): every server has a
//! running score. For each pick, every usable server's score grows by its
//! weight; the highest score wins, and the winner's score drops by the total
//! of the weights. Over `total` picks each server wins exactly `weight` times.

use std::sync::Mutex;

use super::Peer;

/// A smooth weighted round-robin balancer.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Each server's running score, by index (nginx's `current_weight`).
    scores: Mutex<Vec<i64>>,
}

impl RoundRobin {
    /// A balancer whose first pick is the first server.
    pub fn new() -> RoundRobin {
        RoundRobin::default()
    }

    /// The next usable server's index; `None` when none is usable.
    pub fn pick<P: AsRef<Peer>>(
        &self,
        peers: &[P],
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        // A poisoned lock only means another pick panicked: the scores are
        // still numbers, so go on with them.
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        if scores.len() != peers.len() {
            // The set of servers changed (DNS): start the rotation afresh.
            *scores = vec![0; peers.len()];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, peer) in peers.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let weight = i64::from(peer.as_ref().weight);
            scores[i] += weight;
            total += weight;
            if best.is_none_or(|b| scores[i] > scores[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        scores[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::peers;

    fn picks(
        rr: &RoundRobin,
        peers: &[std::sync::Arc<Peer>],
        n: usize,
        usable: impl Fn(usize) -> bool,
    ) -> String {
        (0..n)
            .map(|_| match rr.pick(peers, &usable) {
                Some(i) => char::from(b'a' + i as u8),
                None => '-',
            })
            .collect()
    }

    #[test]
    fn equal_weights_take_turns() {
        let rr = RoundRobin::new();
        assert_eq!(picks(&rr, &peers(&[1, 1, 1]), 7, |_| true), "abcabca");
    }

    #[test]
    fn weights_five_one_one_are_spread_out_as_in_nginx() {
        // The sequence nginx's source documents for weights { 5, 1, 1 }.
        let rr = RoundRobin::new();
        assert_eq!(
            picks(&rr, &peers(&[5, 1, 1]), 14, |_| true),
            "aabacaaaabacaa"
        );
    }

    #[test]
    fn each_server_gets_exactly_its_weight_in_every_cycle() {
        let rr = RoundRobin::new();
        let seq = picks(&rr, &peers(&[3, 2, 1]), 600, |_| true);
        for (c, share) in [('a', 300), ('b', 200), ('c', 100)] {
            assert_eq!(seq.chars().filter(|&x| x == c).count(), share, "{c}");
        }
    }

    #[test]
    fn unusable_servers_are_skipped_and_the_rest_keep_their_turns() {
        let rr = RoundRobin::new();
        let p = peers(&[1, 1, 1]);
        assert_eq!(picks(&rr, &p, 6, |i| i != 1), "acacac");
        assert_eq!(picks(&rr, &p, 1, |_| false), "-");
    }
}
