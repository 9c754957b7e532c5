//! The code exercises as the repository ships them: every reference solution
//! passes its check, every starter fails it with "not written yet", and the
//! mistakes each exercise is about (a clumped order, a bucket that counts
//! refused requests, `/api` matching `/apix`, a replaced X-Forwarded-For, a
//! cache that prefers max-age or ignores Age, a percentile in floating
//! point) fail it too: a check that cannot fail teaches nothing.
//!
//! The learner's copies in `work/` are never read here.

use course_kit::{Outcome, Report, bucket, forwarded, freshness, percentile, prefix, weighted};

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

#[path = "../../solutions/03-forwarded-headers/forwarded.rs"]
mod forwarded_solution;
#[allow(dead_code, unused_variables)]
#[path = "../../exercises/03-forwarded-headers/forwarded.rs"]
mod forwarded_starter;

#[path = "../../solutions/11-caching-and-compression/freshness.rs"]
mod freshness_solution;
#[allow(dead_code, unused_variables, unused_imports)]
#[path = "../../exercises/11-caching-and-compression/freshness.rs"]
mod freshness_starter;

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
        forwarded::check::<forwarded_solution::Hop>(),
        freshness::check::<freshness_solution::Stored>(),
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
    assert_not_written(&forwarded::check::<forwarded_starter::Hop>());
    assert_not_written(&freshness::check::<freshness_starter::Stored>());
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

/// The reference solution with one mistake: `mistake` rewrites what it
/// passes on, given the request.
struct Forwarding<M: ForwardingMistake> {
    solution: forwarded_solution::Hop,
    trusted: forwarded::TrustedProxies,
    mistake: std::marker::PhantomData<M>,
}

trait ForwardingMistake {
    /// The client's address, given the solution's.
    fn client_ip(
        trusted: &forwarded::TrustedProxies,
        right: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> std::net::IpAddr {
        let _ = (trusted, headers);
        right
    }

    /// The headers passed on, given the solution's.
    fn forward(
        request: &forwarded::Request<'_>,
        client: std::net::IpAddr,
        right: Vec<(String, String)>,
    ) -> Vec<(String, String)>;
}

impl<M: ForwardingMistake> forwarded::Forwarder for Forwarding<M> {
    fn new(trusted: forwarded::TrustedProxies) -> Self {
        Forwarding {
            solution: forwarded::Forwarder::new(trusted.clone()),
            trusted,
            mistake: std::marker::PhantomData,
        }
    }

    fn client_ip(&self, peer: std::net::IpAddr, headers: &[(&str, &str)]) -> std::net::IpAddr {
        let right = self.solution.client_ip(peer, headers);
        M::client_ip(&self.trusted, right, headers)
    }

    fn forward(&self, request: &forwarded::Request<'_>) -> Vec<(String, String)> {
        let client = forwarded::Forwarder::client_ip(self, request.peer, request.headers);
        M::forward(request, client, self.solution.forward(request))
    }
}

/// `headers` with `name` set to `value` (its other lines gone).
fn set(mut headers: Vec<(String, String)>, name: &str, value: String) -> Vec<(String, String)> {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value));
    headers
}

/// X-Forwarded-For set to the peer, whatever came in.
struct ReplacesTheList;

impl ForwardingMistake for ReplacesTheList {
    fn forward(
        request: &forwarded::Request<'_>,
        _client: std::net::IpAddr,
        right: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        set(right, "x-forwarded-for", request.peer.to_string())
    }
}

/// The client's X-Forwarded-Proto passed on when there is one.
struct TrustsTheProto;

impl ForwardingMistake for TrustsTheProto {
    fn forward(
        request: &forwarded::Request<'_>,
        _client: std::net::IpAddr,
        right: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        match request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-proto"))
        {
            Some((_, proto)) => set(right, "x-forwarded-proto", (*proto).to_owned()),
            None => right,
        }
    }
}

/// The left-most X-Forwarded-For entry taken for the client, from anyone.
struct BelievesTheLeftMost;

impl ForwardingMistake for BelievesTheLeftMost {
    fn client_ip(
        _trusted: &forwarded::TrustedProxies,
        right: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> std::net::IpAddr {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .and_then(|(_, v)| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
            .unwrap_or(right)
    }

    fn forward(
        _request: &forwarded::Request<'_>,
        client: std::net::IpAddr,
        right: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        set(right, "x-real-ip", client.to_string())
    }
}

/// The headers Connection names passed on (the fixed list still removed).
struct KeepsWhatConnectionNames;

impl ForwardingMistake for KeepsWhatConnectionNames {
    fn forward(
        request: &forwarded::Request<'_>,
        _client: std::net::IpAddr,
        mut right: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let own = [
            "x-forwarded-for",
            "x-real-ip",
            "x-forwarded-proto",
            "x-forwarded-host",
            "host",
        ];
        for (name, value) in request.headers {
            let lower = name.to_ascii_lowercase();
            let named = request.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection")
                    && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(name))
            });
            if named && !own.contains(&lower.as_str()) {
                right.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        right
    }
}

#[test]
fn a_replaced_list_a_trusted_proto_a_left_most_client_or_kept_named_headers_fail() {
    let failing_with = |report: Report, start: &str| {
        let failing = failing(&report);
        assert!(
            failing.iter().any(|p| p.starts_with(start)),
            "expected `{start}...` to fail: {failing:?}"
        );
        failing
    };
    let replaced = failing_with(
        forwarded::check::<Forwarding<ReplacesTheList>>(),
        "X-Forwarded-For gets the peer appended",
    );
    assert!(
        !replaced.iter().any(|p| p.starts_with("X-Forwarded-Proto")),
        "{replaced:?}"
    );
    failing_with(
        forwarded::check::<Forwarding<TrustsTheProto>>(),
        "X-Forwarded-Proto is the scheme",
    );
    let left_most = failing_with(
        forwarded::check::<Forwarding<BelievesTheLeftMost>>(),
        "from a peer that is not a trusted proxy",
    );
    assert!(
        left_most
            .iter()
            .any(|p| p.starts_with("from a trusted proxy, the client is the right-most")),
        "{left_most:?}"
    );
    failing_with(
        forwarded::check::<Forwarding<KeepsWhatConnectionNames>>(),
        "the headers Connection names are removed too",
    );
    let text = forwarded::check::<Forwarding<ReplacesTheList>>().render();
    assert!(
        text.contains(
            "from 203.0.113.7 over http with X-Forwarded-For: 198.51.100.1: expected X-Forwarded-For `198.51.100.1, 203.0.113.7`, got `203.0.113.7`"
        ),
        "{text}"
    );
}

/// The reference solution with one mistake.
struct Freshness<M: FreshnessMistake> {
    solution: freshness_solution::Stored,
    arrived: u64,
    mistake: std::marker::PhantomData<M>,
}

trait FreshnessMistake {
    /// The exchange the solution is shown instead of the real one.
    fn rewrite(response: &[(&str, &str)]) -> Vec<(String, String)> {
        response
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Whether the age it arrived with is forgotten.
    const IGNORES_AGE: bool = false;
}

impl<M: FreshnessMistake> freshness::Freshness for Freshness<M> {
    fn store(exchange: &freshness::Exchange<'_>) -> Result<Self, freshness::NotStored> {
        let owned = M::rewrite(exchange.response);
        let response: Vec<(&str, &str)> = owned
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let shown = freshness::Exchange {
            response: &response,
            ..*exchange
        };
        Ok(Freshness {
            solution: freshness::Freshness::store(&shown)?,
            arrived: exchange.now,
            mistake: std::marker::PhantomData,
        })
    }

    fn lifetime(&self) -> u64 {
        self.solution.lifetime()
    }

    fn age(&self, now: u64) -> u64 {
        if M::IGNORES_AGE {
            now - self.arrived
        } else {
            self.solution.age(now)
        }
    }

    fn ttl(&self, now: u64) -> i64 {
        self.lifetime() as i64 - self.age(now) as i64
    }

    fn is_fresh(&self, now: u64) -> bool {
        self.age(now) < self.lifetime()
    }
}

/// `max-age` read before `s-maxage`: shown to the solution without
/// `s-maxage` whenever there is a `max-age`.
struct PrefersMaxAge;

impl FreshnessMistake for PrefersMaxAge {
    fn rewrite(response: &[(&str, &str)]) -> Vec<(String, String)> {
        let has_max_age = response
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("cache-control") && v.contains("max-age"));
        response
            .iter()
            .map(|(n, v)| {
                let v = if has_max_age && n.eq_ignore_ascii_case("cache-control") {
                    v.split(',')
                        .filter(|d| !d.trim().starts_with("s-maxage"))
                        .collect::<Vec<_>>()
                        .join(",")
                } else {
                    (*v).to_owned()
                };
                ((*n).to_owned(), v)
            })
            .collect()
    }
}

/// Only the time since it arrived counts as age.
struct IgnoresAge;

impl FreshnessMistake for IgnoresAge {
    const IGNORES_AGE: bool = true;
}

/// `no-cache` taken for `no-store`.
struct NoCacheIsNoStore;

impl FreshnessMistake for NoCacheIsNoStore {
    fn rewrite(response: &[(&str, &str)]) -> Vec<(String, String)> {
        response
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.replace("no-cache", "no-store")))
            .collect()
    }
}

#[test]
fn preferring_max_age_ignoring_age_or_not_keeping_no_cache_fails() {
    let failing_with = |report: Report, start: &str| {
        let failing = failing(&report);
        assert!(
            failing.iter().any(|p| p.starts_with(start)),
            "expected `{start}...` to fail: {failing:?}"
        );
        failing
    };
    let max_age = failing_with(
        freshness::check::<Freshness<PrefersMaxAge>>(),
        "s-maxage, for shared caches, wins",
    );
    assert!(
        !max_age.iter().any(|p| p.starts_with("an Age")),
        "{max_age:?}"
    );
    let age = failing_with(
        freshness::check::<Freshness<IgnoresAge>>(),
        "an Age from an earlier cache counts",
    );
    assert!(
        age.iter()
            .any(|p| p.starts_with("the time since Date is age too")),
        "{age:?}"
    );
    assert!(!age.iter().any(|p| p.starts_with("s-maxage")), "{age:?}");
    failing_with(
        freshness::check::<Freshness<NoCacheIsNoStore>>(),
        "no-cache is not no-store",
    );
    let text = freshness::check::<Freshness<IgnoresAge>>().render();
    assert!(
        text.contains("expected stored: lifetime 60 s, age 50 s, ttl 10 s, got stored: lifetime 60 s, age 0 s, ttl 60 s"),
        "{text}"
    );
}
