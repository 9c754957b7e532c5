//! Chapter 08's code exercise: the leaky bucket behind nginx's `limit_req`
//! (and this proxy's `rate_limit`), with `burst` and `nodelay`.
//!
//! Picture a bucket with a hole. Every request pours one unit of water in;
//! the hole drains `rate` units per second. The bucket holds `burst + 1`
//! units: a request that would make it overflow is refused, and a refused
//! request pours nothing in. A request that finds water already in the
//! bucket is *ahead of the rate*: without `nodelay` it waits until the water
//! ahead of it has drained (the burst is smoothed into the rate); with
//! `nodelay` it is served at once, and still counts.
//!
//! Time is an argument (the time since the start), so [`check`] can play
//! the same arrivals every time and expect the same answers.

use std::fmt;
use std::time::Duration;

use crate::{Checks, Report};

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it now.
    Accept,
    /// Serve it after waiting this long (it is part of an allowed burst).
    Delay(Duration),
    /// Refuse it (the proxy answers 503, or 429 when configured so).
    Reject,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Accept => write!(f, "accept"),
            Decision::Delay(d) => write!(f, "delay {} ms", d.as_millis()),
            Decision::Reject => write!(f, "refuse"),
        }
    }
}

/// One client's leaky bucket.
pub trait Limiter: Sized {
    /// A bucket draining `rate_per_second` requests per second (at least 1),
    /// holding `burst` requests above the rate; with `nodelay`, requests of
    /// the burst are served at once instead of delayed.
    fn new(rate_per_second: u32, burst: u32, nodelay: bool) -> Self;

    /// Decides one request arriving `now` (the time since the start; it
    /// never goes back), and counts it unless it is refused.
    fn check(&mut self, now: Duration) -> Decision;
}

/// Whether two decisions agree, delays to the millisecond.
fn same(expected: Decision, got: Decision) -> bool {
    match (expected, got) {
        (Decision::Delay(a), Decision::Delay(b)) => a.abs_diff(b) <= Duration::from_millis(1),
        _ => expected == got,
    }
}

/// A timeline as the report writes it: `0 ms: accept, 500 ms: refuse`.
fn show(arrivals: &[u64], decisions: &[Decision]) -> String {
    let words: Vec<String> = arrivals
        .iter()
        .zip(decisions)
        .map(|(ms, d)| format!("{ms} ms: {d}"))
        .collect();
    crate::list(&words)
}

/// `Ok` when requests arriving at `arrivals` (milliseconds since the start)
/// get `expected`.
fn timeline<L: Limiter>(
    (rate, burst, nodelay): (u32, u32, bool),
    arrivals: &[u64],
    expected: &[Decision],
) -> Result<(), String> {
    let mut bucket = L::new(rate, burst, nodelay);
    let got: Vec<Decision> = arrivals
        .iter()
        .map(|&ms| bucket.check(Duration::from_millis(ms)))
        .collect();
    if got.len() == expected.len() && expected.iter().zip(&got).all(|(e, g)| same(*e, *g)) {
        Ok(())
    } else {
        Err(format!(
            "expected {}\n          got      {}",
            show(arrivals, expected),
            show(arrivals, &got)
        ))
    }
}

/// Checks a [`Limiter`] against nginx's `limit_req`.
pub fn check<L: Limiter + 'static>() -> Report {
    use Decision::{Accept, Delay, Reject};
    let s = Duration::from_secs;
    let mut checks = Checks::new("bucket.rs: a leaky bucket with burst and nodelay (chapter 08)");
    checks.property(
        "1 r/s, no burst: one request per second passes, a second one within the second is refused",
        move || {
            timeline::<L>(
                (1, 0, false),
                &[0, 0, 500, 1000, 1999, 2000],
                &[Accept, Reject, Reject, Accept, Reject, Accept],
            )
        },
    );
    checks.property(
        "1 r/s, burst 2, nodelay: 3 requests pass at once, the 4th is refused; one more passes 1 s later",
        move || {
            timeline::<L>(
                (1, 2, true),
                &[0, 0, 0, 0, 999, 1000, 1000],
                &[Accept, Accept, Accept, Reject, Reject, Accept, Reject],
            )
        },
    );
    checks.property(
        "1 r/s, burst 2, without nodelay: the burst waits its turn (0 s, 1 s, 2 s), the 4th is refused",
        move || {
            timeline::<L>(
                (1, 2, false),
                &[0, 0, 0, 0],
                &[Accept, Delay(s(1)), Delay(s(2)), Reject],
            )
        },
    );
    checks.property(
        "2 r/s, burst 3, without nodelay: each waits half a second more than the one before",
        move || {
            timeline::<L>(
                (2, 3, false),
                &[0, 0, 0, 0, 0, 500],
                &[
                    Accept,
                    Delay(Duration::from_millis(500)),
                    Delay(s(1)),
                    Delay(Duration::from_millis(1500)),
                    Reject,
                    Delay(Duration::from_millis(1500)),
                ],
            )
        },
    );
    checks.property(
        "a refused request is not counted: 1 r/s, no burst, ten refused between 0.1 s and 0.9 s, yet 1 s passes",
        move || {
            let arrivals = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000];
            let mut expected = vec![Reject; arrivals.len()];
            expected[0] = Accept;
            expected[10] = Accept;
            timeline::<L>((1, 0, false), &arrivals, &expected)
        },
    );
    checks.property(
        "a quiet spell empties the bucket, no further: 1 r/s, burst 2, nodelay, after 10 s idle again 3 pass and the 4th is refused",
        move || {
            timeline::<L>(
                (1, 2, true),
                &[0, 0, 0, 10_000, 10_000, 10_000, 10_000],
                &[Accept, Accept, Accept, Accept, Accept, Accept, Reject],
            )
        },
    );
    checks.property(
        "10 r/s, no burst: a request every 100 ms always passes; every 50 ms, every other one is refused",
        move || {
            let steady: Vec<u64> = (0..20).map(|i| i * 100).collect();
            timeline::<L>((10, 0, false), &steady, &vec![Accept; steady.len()])?;
            let fast: Vec<u64> = (0..20).map(|i| i * 50).collect();
            let expected: Vec<Decision> = (0..20)
                .map(|i| if i % 2 == 0 { Accept } else { Reject })
                .collect();
            timeline::<L>((10, 0, false), &fast, &expected)
        },
    );
    checks.finish()
}
