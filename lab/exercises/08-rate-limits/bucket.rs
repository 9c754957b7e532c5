//! Chapter 08, in Rust: the leaky bucket behind `limit_req` (nginx) and
//! `rate_limit` (this proxy), with `burst` and `nodelay`.
//!
//! Check it with `cargo run -p lab -- check 08`; the chapter is
//! docs/08-rate-limits.md, a hint is `cargo run -p lab -- hint 08`.
//!
//! Picture a bucket with a hole in it:
//!
//! - every request pours one unit of water in;
//! - the hole drains `rate` units per second, never below empty;
//! - the bucket holds `burst + 1` units: a request that would make it
//!   overflow is refused, and pours nothing in;
//! - a request served while other water is still in the bucket is ahead of
//!   the rate by that much water: without `nodelay` it waits until that has
//!   drained (at 1 r/s, one unit ahead means a 1 s delay); with `nodelay` it
//!   is served at once (the water still counts).
//!
//! Time comes in as `now`, the time since the start, so the check can play
//! the same requests every time. Whole numbers avoid rounding surprises:
//! count water in thousandths of a request and time in milliseconds (nginx
//! does the same); at `rate` requests per second, `rate` thousandths drain
//! every millisecond.

use std::time::Duration;

use course_kit::bucket::{Decision, Limiter};

/// One client's leaky bucket.
pub struct Bucket {
    // TODO: the settings (rate, burst, nodelay), the water in the bucket,
    // and when it was last measured.
}

impl Limiter for Bucket {
    fn new(rate_per_second: u32, burst: u32, nodelay: bool) -> Self {
        // TODO: an empty bucket.
        todo!("Bucket::new({rate_per_second}, {burst}, {nodelay})")
    }

    fn check(&mut self, now: Duration) -> Decision {
        // TODO: drain what leaked out since the last request, then pour this
        // request in: refuse it if that overflows, else accept or delay it.
        todo!("Bucket::check at {now:?}")
    }
}
