//! Chapter 08, in Rust: the leaky bucket behind `limit_req` (nginx) and
//! `rate_limit` (this proxy), with `burst` and `nodelay`.
//!
//! A reference solution of lab/exercises/08-rate-limits/bucket.rs. The
//! proxy's own, with one bucket per client, is proxy/src/limit/rate.rs.

use std::time::Duration;

use course_kit::bucket::{Decision, Limiter};

/// One request's worth of water, in thousandths.
const ONE: u64 = 1000;

/// One client's leaky bucket.
pub struct Bucket {
    /// Requests per second drained: as many thousandths per millisecond.
    rate: u64,
    /// The most water the bucket holds, in thousandths: `burst + 1` requests.
    capacity: u64,
    /// Whether requests ahead of the rate are served at once.
    nodelay: bool,
    /// The water in the bucket, in thousandths, when last measured.
    level: u64,
    /// When that was, in milliseconds since the start.
    last_ms: u64,
}

impl Limiter for Bucket {
    fn new(rate_per_second: u32, burst: u32, nodelay: bool) -> Self {
        Bucket {
            rate: u64::from(rate_per_second.max(1)),
            capacity: (u64::from(burst) + 1) * ONE,
            nodelay,
            level: 0,
            last_ms: 0,
        }
    }

    fn check(&mut self, now: Duration) -> Decision {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        // Drain what leaked out since the last measure, never below empty.
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let level = self.level.saturating_sub(self.rate.saturating_mul(elapsed));
        // Pour this request in; if it overflows, refuse it and pour nothing.
        let with_request = level + ONE;
        if with_request > self.capacity {
            return Decision::Reject;
        }
        self.level = with_request;
        self.last_ms = now_ms;
        // The water ahead of this request: how far it is ahead of the rate.
        let ahead = with_request - ONE;
        if ahead == 0 || self.nodelay {
            Decision::Accept
        } else {
            Decision::Delay(Duration::from_millis(ahead / self.rate))
        }
    }
}
