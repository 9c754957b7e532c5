//! Chapter 14, in Rust: latency percentiles, and what a proxy hop costs at
//! each of them.
//!
//! Check it with `cargo run -p lab -- check 14`; the chapter is
//! docs/14-measuring.md, a hint is `cargo run -p lab -- hint 14`.
//!
//! The nearest-rank percentile: sort the `n` samples; the p-th percentile
//! is the sample of rank `ceil(p x n / 100)`, ranks counting from 1, and p0
//! is the smallest sample. For 1, 2, ... 10 ms, p50 is the 5th (5 ms), p90
//! the 9th, p99 the 10th (rank 9.9, rounded up). No samples, or p above 100:
//! no percentile.
//!
//! The cost of a hop at p: the proxied run's p-th percentile minus the
//! direct run's; zero when the proxied one was faster (noise).

use std::time::Duration;

use course_kit::percentile::Latencies;

/// The latencies of one run.
pub struct Samples {
    // TODO: keep the samples in a form that makes percentiles easy.
}

impl Latencies for Samples {
    fn new(samples: &[Duration]) -> Self {
        todo!("Samples::new for {} samples", samples.len())
    }

    fn percentile(&self, p: u32) -> Option<Duration> {
        todo!("Samples::percentile({p})")
    }

    fn hop_cost(direct: &Self, proxied: &Self, p: u32) -> Option<Duration> {
        // TODO: two percentiles and a subtraction that cannot go below zero.
        let _ = (direct, proxied);
        todo!("Samples::hop_cost at p{p}")
    }
}
