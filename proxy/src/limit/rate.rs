//! Request-rate limiting with nginx's `limit_req` semantics, so a learner can
//! predict every status code.
//!
//! Each key (usually a client address) has a **leaky bucket**. Every request
//! pours one unit in; the bucket drains at `rate`. The bucket's level above
//! empty is the *excess*: how far the key is ahead of its allowance.
//!
//! - With `burst = 0`, a request that finds any excess is rejected: at 1r/s,
//!   two requests in the same second means the second is refused.
//! - `burst = N` lets the excess grow to N requests. Those requests are not
//!   refused but **delayed**, each until the bucket has drained to where it
//!   would have been at the steady rate: the burst is smoothed into the rate.
//! - `nodelay` serves the burst at once, still counting it against the bucket.
//! - `delay = D` (nginx's two-stage limiting) serves the first D excess
//!   requests at once and delays only the rest.
//! - Beyond the burst: rejected (503 by default, like nginx; 429 is the modern
//!   status), with `Retry-After` saying when a request would pass again.
//!
//! Like nginx, levels are integers in thousandths of a request, so the
//! arithmetic (and every test's expected timeline) is exact. The clock is
//! tokio's, which tests pause and advance by hand.
//!
//! Memory is bounded: a zone keeps at most a fixed number of keys, its size
//! (`zone=one:10m`) divided by [`BYTES_PER_KEY`], and forgets the least
//! recently seen key when a new one arrives, so a flood of distinct addresses
//! cannot grow it past its size.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;
use tokio::time::Instant;

use super::LimitKey;

/// Bytes a zone counts per key: a zone of `size` bytes keeps `size /
/// BYTES_PER_KEY` keys, about 8,000 per megabyte.
///
/// Measured, not guessed: `cargo run --release -p lab-benches --bin
/// zone-memory` floods a 10 MiB zone with a million addresses, and the
/// process grows by about 118 bytes per key kept (the 16-byte key, the 16-byte
/// bucket, the LRU links, the allocator's overhead and the hash table). nginx
/// packs its states into the zone's shared memory at 64 bytes each, so its
/// `10m` holds about 160,000 addresses where ours holds about 80,000; both stay
/// within the size they are given.
pub const BYTES_PER_KEY: usize = 128;

/// A named set of buckets, one per key, sharing a rate.
#[derive(Debug)]
pub struct RateLimitZone {
    /// The zone's name from the config.
    pub name: String,
    /// Thousandths of a request drained per second (1r/s = 1000).
    rate: u64,
    states: Mutex<LruCache<LimitKey, Bucket>>,
    /// Times are kept as milliseconds since this instant.
    epoch: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The level, in thousandths of a request.
    excess: u64,
    /// When the level was last brought up to date, in ms since the epoch.
    last_ms: u64,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it now.
    Accept,
    /// Serve it after waiting this long (it is part of an allowed burst).
    Delay(Duration),
    /// Refuse it; a request after this long would pass.
    Reject {
        /// When to try again.
        retry_after: Duration,
    },
}

/// A [`Decision`] with the bucket levels behind it, for the decision trace.
/// Levels are in thousandths of a request, like the bucket itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// What happens to the request.
    pub decision: Decision,
    /// The key's level just before this request, drained to now; `None` when
    /// the zone had not seen the key (or had forgotten it): it starts empty.
    pub before: Option<u64>,
    /// The level with this request counted: what is compared to the burst.
    /// A rejected request is not counted, so the bucket stays at `before`.
    pub after: u64,
}

/// How one `limit_req` applies a zone: burst size and delay policy, in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Requests allowed above the rate.
    pub burst: u64,
    /// Of those, how many are served without delay (`nodelay` = all of them).
    pub no_delay: u64,
}

impl RateLimitZone {
    /// A zone draining `rate_milli` thousandths of a request per second,
    /// remembering at most `capacity` keys.
    pub fn new(name: &str, rate_milli: u64, capacity: usize) -> RateLimitZone {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RateLimitZone {
            name: name.to_owned(),
            rate: rate_milli.max(1),
            states: Mutex::new(LruCache::new(capacity)),
            epoch: Instant::now(),
        }
    }

    /// How many keys the zone remembers now.
    pub fn len(&self) -> usize {
        self.states.lock().map_or(0, |s| s.len())
    }

    /// Whether the zone remembers no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides one request for `key` arriving at `now`, and counts it unless
    /// it is rejected (nginx's `ngx_http_limit_req_lookup` and `_account`).
    pub fn check(&self, key: LimitKey, burst: Burst, now: Instant) -> Decision {
        self.check_levels(key, burst, now).decision
    }

    /// [`check`](Self::check), also saying how full the key's bucket was
    /// before and after this request: the same decision, the same counting.
    pub fn check_levels(&self, key: LimitKey, burst: Burst, now: Instant) -> Checked {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let burst_milli = burst.burst.saturating_mul(1000);
        let delay_milli = burst.no_delay.min(burst.burst).saturating_mul(1000);
        let Ok(mut states) = self.states.lock() else {
            // A panic elsewhere poisoned the lock: fail open rather than
            // refuse every request.
            return Checked {
                decision: Decision::Accept,
                before: None,
                after: 0,
            };
        };
        let (before, excess) = match states.get_mut(&key) {
            None => {
                // A key seen for the first time starts with an empty bucket.
                states.push(
                    key,
                    Bucket {
                        excess: 0,
                        last_ms: now_ms,
                    },
                );
                return Checked {
                    decision: Decision::Accept,
                    before: None,
                    after: 0,
                };
            }
            Some(bucket) => {
                let elapsed = now_ms.saturating_sub(bucket.last_ms);
                let drained = self.rate.saturating_mul(elapsed) / 1000;
                let before = bucket.excess.saturating_sub(drained);
                let excess = (bucket.excess + 1000).saturating_sub(drained);
                if excess > burst_milli {
                    let wait_ms = (excess - burst_milli)
                        .saturating_mul(1000)
                        .div_ceil(self.rate);
                    return Checked {
                        decision: Decision::Reject {
                            retry_after: Duration::from_millis(wait_ms),
                        },
                        before: Some(before),
                        after: excess,
                    };
                }
                bucket.excess = excess;
                if elapsed > 0 {
                    bucket.last_ms = now_ms;
                }
                (before, excess)
            }
        };
        let decision = if excess <= delay_milli {
            Decision::Accept
        } else {
            Decision::Delay(Duration::from_millis(
                (excess - delay_milli).saturating_mul(1000) / self.rate,
            ))
        };
        Checked {
            decision,
            before: Some(before),
            after: excess,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_PER_SECOND: u64 = 1000;

    fn key(ip: &str) -> LimitKey {
        LimitKey::ip(ip.parse().expect("an IP address"))
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// The decisions for requests arriving at the given milliseconds.
    fn timeline(zone: &RateLimitZone, burst: Burst, arrivals: &[u64]) -> Vec<String> {
        let start = zone.epoch;
        arrivals
            .iter()
            .map(
                |&ms| match zone.check(key("10.0.0.1"), burst, at(start, ms)) {
                    Decision::Accept => format!("{ms}ms: accept"),
                    Decision::Delay(d) => format!("{ms}ms: delay {}ms", d.as_millis()),
                    Decision::Reject { retry_after } => {
                        format!("{ms}ms: reject, retry after {}ms", retry_after.as_millis())
                    }
                },
            )
            .collect()
    }

    #[test]
    fn without_burst_a_second_request_within_the_second_is_rejected() {
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 100);
        let none = Burst {
            burst: 0,
            no_delay: 0,
        };
        assert_eq!(
            timeline(&zone, none, &[0, 0, 500, 1000, 1999, 2000]),
            [
                "0ms: accept",
                "0ms: reject, retry after 1000ms",
                "500ms: reject, retry after 500ms",
                "1000ms: accept",
                "1999ms: reject, retry after 1ms",
                "2000ms: accept",
            ]
        );
    }

    #[test]
    fn a_burst_is_queued_and_spaced_at_the_rate_and_the_rest_rejected() {
        // nginx docs: limit_req zone=one burst=5; seven requests at once.
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 100);
        let burst = Burst {
            burst: 5,
            no_delay: 0,
        };
        assert_eq!(
            timeline(&zone, burst, &[0, 0, 0, 0, 0, 0, 0]),
            [
                "0ms: accept",
                "0ms: delay 1000ms",
                "0ms: delay 2000ms",
                "0ms: delay 3000ms",
                "0ms: delay 4000ms",
                "0ms: delay 5000ms",
                "0ms: reject, retry after 1000ms",
            ]
        );
    }

    #[test]
    fn nodelay_serves_the_burst_at_once_but_still_counts_it() {
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 100);
        let nodelay = Burst {
            burst: 5,
            no_delay: 5,
        };
        assert_eq!(
            timeline(&zone, nodelay, &[0, 0, 0, 0, 0, 0, 0, 999, 1000, 1000]),
            [
                "0ms: accept",
                "0ms: accept",
                "0ms: accept",
                "0ms: accept",
                "0ms: accept",
                "0ms: accept",
                "0ms: reject, retry after 1000ms",
                "999ms: reject, retry after 1ms",
                "1000ms: accept",
                "1000ms: reject, retry after 1000ms",
            ]
        );
    }

    #[test]
    fn delay_serves_the_first_excess_requests_and_delays_the_rest() {
        // Two-stage limiting: burst=5 delay=2.
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 100);
        let two_stage = Burst {
            burst: 5,
            no_delay: 2,
        };
        assert_eq!(
            timeline(&zone, two_stage, &[0, 0, 0, 0, 0, 0, 0]),
            [
                "0ms: accept",
                "0ms: accept",
                "0ms: accept",
                "0ms: delay 1000ms",
                "0ms: delay 2000ms",
                "0ms: delay 3000ms",
                "0ms: reject, retry after 1000ms",
            ]
        );
    }

    #[test]
    fn a_per_minute_rate_drains_one_request_every_six_seconds_at_10r_m() {
        let zone = RateLimitZone::new("slow", 10 * 1000 / 60, 100);
        let none = Burst {
            burst: 0,
            no_delay: 0,
        };
        let t = timeline(&zone, none, &[0, 5000, 6000]);
        assert_eq!(t[0], "0ms: accept");
        assert!(t[1].starts_with("5000ms: reject"), "{t:?}");
        // 166 thousandths per second: 6 s drain 996, so 6.03 s is the first pass.
        assert!(
            t[2].starts_with("6000ms: reject, retry after 25ms"),
            "{t:?}"
        );
    }

    #[test]
    fn check_levels_shows_the_bucket_filling_up_to_the_burst() {
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 100);
        let burst = Burst {
            burst: 2,
            no_delay: 0,
        };
        let now = zone.epoch;
        let levels: Vec<(Option<u64>, u64)> = (0..4)
            .map(|_| zone.check_levels(key("10.0.0.1"), burst, now))
            .map(|c| (c.before, c.after))
            .collect();
        assert_eq!(
            levels,
            [
                (None, 0),
                (Some(0), 1000),
                (Some(1000), 2000),
                (Some(2000), 3000)
            ]
        );
        // The rejected fourth request was not counted; half a second later
        // the bucket has drained by half a request.
        let later = zone.check_levels(key("10.0.0.1"), burst, at(now, 500));
        assert_eq!((later.before, later.after), (Some(1500), 2500));
        assert!(matches!(later.decision, Decision::Reject { .. }));
    }

    #[test]
    fn keys_have_separate_buckets() {
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 100);
        let none = Burst {
            burst: 0,
            no_delay: 0,
        };
        let now = zone.epoch;
        assert_eq!(zone.check(key("10.0.0.1"), none, now), Decision::Accept);
        assert_eq!(zone.check(key("10.0.0.2"), none, now), Decision::Accept);
        assert!(matches!(
            zone.check(key("10.0.0.1"), none, now),
            Decision::Reject { .. }
        ));
    }

    #[test]
    fn a_flood_of_distinct_keys_never_grows_the_zone_past_its_capacity() {
        let zone = RateLimitZone::new("one", ONE_PER_SECOND, 1000);
        let none = Burst {
            burst: 0,
            no_delay: 0,
        };
        let now = zone.epoch;
        for i in 0u32..100_000 {
            zone.check(LimitKey::ip(std::net::Ipv4Addr::from(i).into()), none, now);
        }
        assert_eq!(zone.len(), 1000);
        // The most recent keys are remembered, the oldest forgotten.
        assert!(matches!(
            zone.check(
                LimitKey::ip(std::net::Ipv4Addr::from(99_999u32).into()),
                none,
                now
            ),
            Decision::Reject { .. }
        ));
        assert_eq!(
            zone.check(
                LimitKey::ip(std::net::Ipv4Addr::from(0u32).into()),
                none,
                now
            ),
            Decision::Accept
        );
    }
}
