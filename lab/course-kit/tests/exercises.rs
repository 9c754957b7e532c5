//! The code exercises as the repository ships them: every reference solution
//! passes its check, every starter fails it with "not written yet", and the
//! mistakes each exercise is about (a clumped order, a bucket that counts
//! refused requests, `/api` matching `/apix`, a percentile in floating point)
//! fail it too: a check that cannot fail teaches nothing.
//!
//! The learner's copies in `work/` are never read here.

use course_kit::{Outcome, Report, bucket, percentile, prefix, weighted};

#[path = "../../solutions/04-load-balancing/weighted.rs"]
mod weighted_solution;
#[allow(dead_code, unused_variables)]
#[path = "../../exercises/04-load-balancing/weighted.rs"]
mod weighted_starter;

#[path = "../../solutions/08-rate-limits/bucket.rs"]
mod bucket_solution;
#[allow(dead_code, unused_variables)]
#[path = "../../exercises/08-rate-limits/bucket.rs"]
mod bucket_starter;

#[path = "../../solutions/02-path-routing/prefix.rs"]
mod prefix_solution;
#[allow(dead_code, unused_variables)]
#[path = "../../exercises/02-path-routing/prefix.rs"]
mod prefix_starter;

#[path = "../../solutions/14-measuring/percentile.rs"]
mod percentile_solution;
#[allow(dead_code, unused_variables)]
#[path = "../../exercises/14-measuring/percentile.rs"]
mod percentile_starter;

fn assert_passes(report: &Report) {
    assert!(report.passed(), "the solution fails:\n{}", report.render());
}

/// Every property of a starter fails, and because it is not written yet.
fn assert_not_written(report: &Report) {
    assert!(!report.passed(), "the starter passes:\n{}", report.render());
    for line in &report.lines {
        assert!(
            matches!(&line.outcome, Outcome::NotWritten(m) if m.contains(".rs:")),
            "{}: {:?}",
            line.property,
            line.outcome
        );
    }
}

/// The properties of `report` that fail, by the start of their wording.
fn failing(report: &Report) -> Vec<String> {
    report
        .lines
        .iter()
        .filter(|l| !l.passed())
        .map(|l| l.property.clone())
        .collect()
}

#[test]
fn every_solution_passes_its_check() {
    let reports = [
        weighted::check::<weighted_solution::Weighted>(),
        bucket::check::<bucket_solution::Bucket>(),
        prefix::check::<prefix_solution::Routes>(),
        percentile::check::<percentile_solution::Samples>(),
    ];
    for report in &reports {
        assert_passes(report);
        assert!(
            report.lines.len() >= 5,
            "{}: too few properties",
            report.title
        );
    }
}

#[test]
fn every_starter_fails_its_check_as_not_written_yet() {
    assert_not_written(&weighted::check::<weighted_starter::Weighted>());
    assert_not_written(&bucket::check::<bucket_starter::Bucket>());
    assert_not_written(&prefix::check::<prefix_starter::Routes>());
    assert_not_written(&percentile::check::<percentile_starter::Samples>());
}

#[test]
fn a_report_names_the_learners_file_and_line() {
    let report = weighted::check::<weighted_starter::Weighted>();
    let text = report.render();
    assert!(
        text.contains("not written yet: not yet implemented: Weighted::new"),
        "{text}"
    );
    assert!(text.contains("(weighted.rs:"), "{text}");
    assert!(text.contains("0 of 9 properties hold."), "{text}");
}

/// Weighted round-robin done the obvious way: each server's turns in a row.
struct Clumped {
    order: Vec<usize>,
    next: usize,
}

impl weighted::Picker for Clumped {
    fn new(weights: &[u32]) -> Self {
        let order = weights
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| std::iter::repeat_n(i, w as usize))
            .collect();
        Clumped { order, next: 0 }
    }

    fn pick(&mut self, up: &[bool]) -> Option<usize> {
        for _ in 0..self.order.len() {
            let i = self.order[self.next % self.order.len()];
            self.next += 1;
            if up[i] {
                return Some(i);
            }
        }
        None
    }
}

#[test]
fn a_clumped_weighted_order_fails_the_smooth_properties_only() {
    let report = weighted::check::<Clumped>();
    let failing = failing(&report);
    assert!(
        failing.iter().any(|p| p.starts_with("weights [2, 1, 1]")),
        "{failing:?}"
    );
    assert!(
        failing.iter().any(|p| p.starts_with("weights [5, 1, 1]")),
        "{failing:?}"
    );
    assert!(
        !failing.iter().any(|p| p.starts_with("weights [3, 2, 1]")),
        "{failing:?}"
    );
    assert!(
        report
            .render()
            .contains("expected 0, 1, 2, 0, 0, 1, 2, 0, got 0, 0, 1, 2")
    );
}

/// A bucket that pours in every request, refused or not.
struct CountsRefusals {
    level: u64,
    last_ms: u64,
    rate: u64,
    capacity: u64,
}

impl bucket::Limiter for CountsRefusals {
    fn new(rate: u32, burst: u32, _nodelay: bool) -> Self {
        CountsRefusals {
            level: 0,
            last_ms: 0,
            rate: u64::from(rate),
            capacity: (u64::from(burst) + 1) * 1000,
        }
    }

    fn check(&mut self, now: std::time::Duration) -> bucket::Decision {
        let now_ms = now.as_millis() as u64;
        self.level = self
            .level
            .saturating_sub(self.rate * (now_ms - self.last_ms))
            + 1000;
        self.last_ms = now_ms;
        if self.level > self.capacity {
            bucket::Decision::Reject
        } else {
            bucket::Decision::Accept
        }
    }
}

#[test]
fn a_bucket_that_counts_refused_requests_or_never_delays_fails() {
    let failing = failing(&bucket::check::<CountsRefusals>());
    assert!(
        failing
            .iter()
            .any(|p| p.starts_with("a refused request is not counted")),
        "{failing:?}"
    );
    assert!(
        failing.iter().any(|p| p.contains("without nodelay")),
        "{failing:?}"
    );
}

/// Prefixes matched as text, as nginx's `location` does.
struct TextPrefix(Vec<prefix::Route>);

impl prefix::PrefixRouter for TextPrefix {
    fn new(routes: &[prefix::Route]) -> Self {
        TextPrefix(routes.to_vec())
    }

    fn route(&self, target: &str) -> Option<(usize, String)> {
        let (index, route) = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, r)| target.starts_with(r.prefix))
            .max_by_key(|(_, r)| r.prefix.len())?;
        let path = if route.strip_prefix {
            format!("/{}", target[route.prefix.len()..].trim_start_matches('/'))
        } else {
            target.to_owned()
        };
        Some((index, path))
    }
}

#[test]
fn a_text_prefix_that_matches_apix_fails() {
    let report = prefix::check::<TextPrefix>();
    let failing = failing(&report);
    assert!(
        failing
            .iter()
            .any(|p| p.starts_with("a prefix matches whole segments")),
        "{failing:?}"
    );
    assert!(
        !failing.iter().any(|p| p.starts_with("the longest")),
        "{failing:?}"
    );
}

/// Percentiles in floating point, and a hop cost that ignores the percentile.
struct Floats(Vec<std::time::Duration>);

impl percentile::Latencies for Floats {
    fn new(samples: &[std::time::Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Floats(sorted)
    }

    fn percentile(&self, p: u32) -> Option<std::time::Duration> {
        if p > 100 || self.0.is_empty() {
            return None;
        }
        let rank = (f64::from(p) / 100.0 * self.0.len() as f64).ceil() as usize;
        Some(self.0[rank.max(1) - 1])
    }

    fn hop_cost(direct: &Self, proxied: &Self, _p: u32) -> Option<std::time::Duration> {
        let mean = |s: &Floats| s.0.iter().sum::<std::time::Duration>() / s.0.len().max(1) as u32;
        Some(mean(proxied).saturating_sub(mean(direct)))
    }
}

#[test]
fn a_percentile_in_floating_point_and_a_mean_hop_cost_fail() {
    let report = percentile::check::<Floats>();
    let failing = failing(&report);
    assert!(
        failing.iter().any(|p| p.starts_with("a hundred samples")),
        "{failing:?}"
    );
    assert!(
        failing
            .iter()
            .any(|p| p.starts_with("a hop's cost can differ")),
        "{failing:?}"
    );
    assert!(
        report.render().contains("p7: expected 7ms, got 8ms"),
        "{}",
        report.render()
    );
}
