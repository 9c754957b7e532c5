//! Chapter 14's code exercise: latency percentiles, and what a proxy hop
//! costs at each of them.
//!
//! An average hides what users feel: 99 answers in 1 ms and one in a second
//! average 11 ms, the latency of no request at all. A **percentile** says
//! "p% of the requests took this long or less": p50 is the median, p99 the
//! slowest request in a hundred, p100 the slowest of all. This exercise uses
//! the **nearest-rank** definition: sort the `n` samples; the p-th
//! percentile is the sample of rank `ceil(p × n / 100)` (ranks count from 1),
//! and p0 is the smallest sample. Every percentile is then a latency some
//! request really had.
//!
//! The **cost of a hop** is the same percentile measured through the proxy
//! minus measured directly: what the proxy adds for that share of requests.

use std::time::Duration;

use crate::{Checks, Report, expect_same};

/// A set of measured latencies.
pub trait Latencies: Sized {
    /// The latencies of a run, in any order (maybe none).
    fn new(samples: &[Duration]) -> Self;

    /// The nearest-rank `p`-th percentile (`p` from 0 to 100; p0 is the
    /// smallest sample, p100 the largest); `None` without samples or when
    /// `p` is above 100.
    fn percentile(&self, p: u32) -> Option<Duration>;

    /// What the hop costs at the `p`-th percentile: `proxied`'s minus
    /// `direct`'s; zero when `proxied` was faster (the noise of a
    /// measurement, not a proxy that saves time); `None` when either has no
    /// such percentile.
    fn hop_cost(direct: &Self, proxied: &Self, p: u32) -> Option<Duration>;
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// A percentile as the report writes it.
fn show(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_owned(), |d| format!("{d:?}"))
}

/// `Ok` when each `(p, expected)` of `cases` holds for `samples`.
fn percentiles<L: Latencies>(
    samples: &[Duration],
    cases: &[(u32, Option<Duration>)],
) -> Result<(), String> {
    let latencies = L::new(samples);
    for &(p, expected) in cases {
        expect_same(show(expected), show(latencies.percentile(p)))
            .map_err(|e| format!("p{p}: {e}"))?;
    }
    Ok(())
}

/// Checks [`Latencies`] against nearest-rank percentiles.
pub fn check<L: Latencies + 'static>() -> Report {
    let mut checks =
        Checks::new("percentile.rs: latency percentiles and the cost of a hop (chapter 14)");
    checks.property(
        "ten samples 1 to 10 ms, out of order: p50 is 5 ms, p90 9 ms, p99 and p100 10 ms",
        || {
            let samples = [7, 3, 10, 1, 9, 2, 8, 5, 4, 6].map(ms);
            percentiles::<L>(
                &samples,
                &[
                    (50, Some(ms(5))),
                    (90, Some(ms(9))),
                    (99, Some(ms(10))),
                    (100, Some(ms(10))),
                ],
            )
        },
    );
    checks.property(
        "a hundred samples 1 to 100 ms: the p-th percentile is p ms, for every p from 1 to 100",
        || {
            let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
            let cases: Vec<(u32, Option<Duration>)> =
                (1..=100).map(|p| (p, Some(ms(u64::from(p))))).collect();
            percentiles::<L>(&samples, &cases)
        },
    );
    checks.property(
        "ranks round up: of 10, 20, ... 70 ms, p10 is 10 ms, p15 20 ms, p50 40 ms, p90 70 ms",
        || {
            let samples = [10, 20, 30, 40, 50, 60, 70].map(ms);
            percentiles::<L>(
                &samples,
                &[
                    (10, Some(ms(10))),
                    (15, Some(ms(20))),
                    (50, Some(ms(40))),
                    (90, Some(ms(70))),
                ],
            )
        },
    );
    checks.property(
        "p0 is the smallest sample, and a single sample is every percentile",
        || {
            percentiles::<L>(&[ms(3), ms(1), ms(2)], &[(0, Some(ms(1)))])?;
            percentiles::<L>(
                &[us(250)],
                &[
                    (0, Some(us(250))),
                    (50, Some(us(250))),
                    (100, Some(us(250))),
                ],
            )
        },
    );
    checks.property(
        "no samples, no percentile (None); nor is there a p101",
        || {
            percentiles::<L>(&[], &[(0, None), (50, None), (100, None)])?;
            percentiles::<L>(&[ms(1), ms(2)], &[(101, None)])
        },
    );
    checks.property(
        "one slow request in a hundred (99 at 1 ms, one at 1 s): p50 and p99 are 1 ms, p100 is 1 s (the mean, 10.99 ms, is no request's latency)",
        || {
            let mut samples = vec![ms(1); 99];
            samples.insert(40, ms(1000));
            percentiles::<L>(&samples, &[(50, Some(ms(1))), (99, Some(ms(1))), (100, Some(ms(1000)))])
        },
    );
    checks.property(
        "the cost of a hop: proxied minus direct at the same percentile (60 µs at p50 and p99 when every request took 60 µs more)",
        || {
            let direct: Vec<Duration> = (100..200).map(us).collect();
            let proxied: Vec<Duration> = (160..260).rev().map(us).collect();
            let (direct, proxied) = (L::new(&direct), L::new(&proxied));
            for p in [50, 99] {
                expect_same(show(Some(us(60))), show(L::hop_cost(&direct, &proxied, p)))
                    .map_err(|e| format!("at p{p}: {e}"))?;
            }
            Ok(())
        },
    );
    checks.property(
        "a hop's cost can differ by percentile: 0.2 ms at p50, 4 ms at p100 when one proxied request in 100 took 5 ms",
        || {
            let direct = L::new(&[ms(1); 100]);
            let mut proxied = vec![us(1200); 99];
            proxied.push(ms(5));
            let proxied = L::new(&proxied);
            for (p, cost) in [(50, us(200)), (99, us(200)), (100, ms(4))] {
                expect_same(show(Some(cost)), show(L::hop_cost(&direct, &proxied, p)))
                    .map_err(|e| format!("at p{p}: {e}"))?;
            }
            Ok(())
        },
    );
    checks.property(
        "a proxied run faster than the direct one costs zero, not a negative time; no samples, no cost",
        || {
            let direct = L::new(&[ms(2); 10]);
            let proxied = L::new(&[ms(1); 10]);
            expect_same(show(Some(Duration::ZERO)), show(L::hop_cost(&direct, &proxied, 50)))?;
            let none = L::new(&[]);
            expect_same(show(None), show(L::hop_cost(&none, &proxied, 50)))
                .map_err(|e| format!("without direct samples: {e}"))?;
            expect_same(show(None), show(L::hop_cost(&direct, &none, 50)))
                .map_err(|e| format!("without proxied samples: {e}"))
        },
    );
    checks.finish()
}
