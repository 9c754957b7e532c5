//! Chapter 04, in Rust: smooth weighted round-robin, the order in which
//! nginx (and this proxy) take turns among the servers of an upstream.
//!
//! A reference solution of lab/exercises/04-load-balancing/weighted.rs. The
//! proxy's own is proxy/src/balance/round_robin.rs.

use course_kit::weighted::Picker;

/// A smooth weighted round-robin picker.
pub struct Weighted {
    /// Each server's weight, by index.
    weights: Vec<u32>,
    /// Each server's running score (nginx's `current_weight`).
    scores: Vec<i64>,
}

impl Picker for Weighted {
    fn new(weights: &[u32]) -> Self {
        Weighted {
            weights: weights.to_vec(),
            scores: vec![0; weights.len()],
        }
    }

    fn pick(&mut self, up: &[bool]) -> Option<usize> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, &weight) in self.weights.iter().enumerate() {
            // A server that is down, or of weight 0, takes no part.
            if weight == 0 || !up.get(i).copied().unwrap_or(false) {
                continue;
            }
            self.scores[i] += i64::from(weight);
            total += i64::from(weight);
            // `>`, not `>=`: on a tie the lower index keeps the turn.
            if best.is_none_or(|b| self.scores[i] > self.scores[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.scores[best] -= total;
        Some(best)
    }
}
