//! Chapter 14, in Rust: latency percentiles, and what a proxy hop costs at
//! each of them.
//!
//! A reference solution of lab/exercises/14-measuring/percentile.rs. The
//! lab's own load generator (lab/src/load.rs) keeps its latencies in an HDR
//! histogram instead: a fixed few kilobytes for millions of samples, each
//! rounded to about 0.1 %.

use std::time::Duration;

use course_kit::percentile::Latencies;

/// The latencies of one run, sorted.
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Latencies for Samples {
    fn new(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Samples { sorted }
    }

    fn percentile(&self, p: u32) -> Option<Duration> {
        if p > 100 {
            return None;
        }
        // Whole numbers: p / 100.0 * n in floating point can land a hair
        // above a whole rank (0.07 * 100 = 7.000000000000001) and round up
        // to the next one.
        let n = self.sorted.len();
        let rank = (p as usize * n).div_ceil(100).max(1);
        self.sorted.get(rank - 1).copied()
    }

    fn hop_cost(direct: &Self, proxied: &Self, p: u32) -> Option<Duration> {
        let direct = direct.percentile(p)?;
        let proxied = proxied.percentile(p)?;
        Some(proxied.saturating_sub(direct))
    }
}
