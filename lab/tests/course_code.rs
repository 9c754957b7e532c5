//! The course's code exercises from the learner's side, and against the
//! proxy's own code:
//!
//! - `lab check`, `lab hint` and `lab progress` run end to end on a scratch
//!   folder (`LAB_COURSE_ROOT`): the untouched starter fails and says why,
//!   a file that does not compile says so, the solution passes and counts;
//! - the reference solutions decide as the proxy does: the weighted picker
//!   as `proxy::balance::RoundRobin`, the bucket as `limit_req`'s
//!   `proxy::limit::RateLimitZone`, the forwarding headers as
//!   `proxy::access::client_ip` and `proxy::headers`, the cache's freshness
//!   as `proxy::cache::policy` and its `Entry`, on random inputs. What the
//!   course teaches is what the proxy does.
//!
//! (Solutions pass and starters fail their checks: lab/course-kit/tests/.)

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use course_kit::bucket::{self, Limiter};
use course_kit::weighted::Picker;
use lab::code_exercise;

#[path = "../solutions/04-load-balancing/weighted.rs"]
mod weighted_solution;

#[path = "../solutions/08-rate-limits/bucket.rs"]
mod bucket_solution;

#[path = "../solutions/03-forwarded-headers/forwarded.rs"]
mod forwarded_solution;

#[path = "../solutions/11-caching-and-compression/freshness.rs"]
mod freshness_solution;

/// Runs `lab ARGS` with its course in `root`.
fn lab(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .env("LAB_COURSE_ROOT", root)
        .env("CARGO", env!("CARGO"))
        .output()
        .expect("the lab binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_learner_checks_chapter_04_fails_with_the_starters_then_passes_with_the_solutions() {
    let root = tempfile::tempdir().expect("a scratch folder");
    let root = root.path();

    let first = lab(root, &["check", "04"]);
    let out = text(&first);
    assert!(!first.status.success(), "{out}");
    assert!(
        out.contains("Made work/04-load-balancing/weighted.rs from the starter"),
        "{out}"
    );
    assert!(
        out.contains("FAILED  weights [2, 1, 1]: smooth, 0, 1, 2, 0 each round"),
        "{out}"
    );
    assert!(
        out.contains("not written yet: not yet implemented: Weighted::new"),
        "{out}"
    );
    assert!(
        out.contains("NOT YET: the lines marked FAILED above"),
        "{out}"
    );
    assert!(out.contains("0 of 2 exercises solved"), "{out}");

    let config = lab::course::chapter("04").expect("chapter 04");
    let exercise = code_exercise::for_chapter("04")[0];
    std::fs::write(config.work_file(root), config.solution).expect("write");
    std::fs::write(exercise.work_file(root), exercise.solution).expect("write");
    let second = lab(root, &["check", "04"]);
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("9 of 9 properties hold: solved."), "{out}");
    assert!(
        out.contains("PASSED: work/04-load-balancing/weighted.rs does all the check asks."),
        "{out}"
    );
    assert!(out.contains("2 of 2 exercises solved"), "{out}");

    let progress = text(&lab(root, &["progress"]));
    let line = |start: &str| {
        progress
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line in:\n{progress}"))
            .to_owned()
    };
    assert!(
        line("04 Load balancing (code: weighted.rs)").ends_with(" solved"),
        "{progress}"
    );
    assert!(
        line("04 Load balancing   ").ends_with(" solved"),
        "{progress}"
    );
    assert!(
        line("14 Measuring the proxy (code: percentile.rs)").ends_with(" -"),
        "{progress}"
    );
    assert!(progress.contains("2 of "), "{progress}");
}

#[test]
fn a_code_only_chapter_is_checked_hinted_and_a_compile_error_named() {
    let root = tempfile::tempdir().expect("a scratch folder");
    let root = root.path();
    let exercise = code_exercise::for_chapter("14")[0];
    let path = exercise.work_file(root);
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
    std::fs::write(
        &path,
        exercise
            .solution
            .replace("sorted.sort_unstable();", "sorted.sort_unstable()"),
    )
    .expect("write");

    let broken = lab(root, &["check", "14"]);
    let out = text(&broken);
    assert!(!broken.status.success(), "{out}");
    assert!(out.contains("error"), "cargo's own message: {out}");
    assert!(
        out.contains("NOT YET: work/14-measuring/percentile.rs does not compile."),
        "{out}"
    );
    assert!(
        !out.contains("exercises solved"),
        "one exercise only: {out}"
    );

    std::fs::write(&path, exercise.solution).expect("write");
    let fixed = lab(root, &["check", "14"]);
    assert!(fixed.status.success(), "{}", text(&fixed));

    let hint = lab(root, &["hint", "14"]);
    let out = text(&hint);
    assert!(hint.status.success(), "{out}");
    assert!(
        out.contains("Hint 1 of 4 for work/14-measuring/percentile.rs: Keep the samples sorted"),
        "{out}"
    );
    assert!(out.contains("`cargo run -p lab -- hint 14 2`"), "{out}");

    let unknown = lab(root, &["check", "99"]);
    let out = text(&unknown);
    assert!(!unknown.status.success());
    assert!(out.contains("14-measuring"), "{out}");
}

#[test]
fn the_weighted_solution_picks_as_the_proxys_round_robin() {
    use proxy::balance::{Peer, RoundRobin};
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..200 {
        let weights: Vec<u32> = (0..rng.usize(1..=5)).map(|_| rng.u32(1..=6)).collect();
        let peers: Vec<Arc<Peer>> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Arc::new(Peer::new(&format!("10.0.0.{i}:80"), w)))
            .collect();
        let proxy = RoundRobin::new();
        let mut ours = weighted_solution::Weighted::new(&weights);
        for pick in 0..100 {
            // Mostly all up; now and then a server or two down.
            let up: Vec<bool> = weights.iter().map(|_| rng.u8(0..10) > 0).collect();
            assert_eq!(
                ours.pick(&up),
                proxy.pick(&peers, |i| up[i]),
                "weights {weights:?}, pick {pick}, up {up:?}"
            );
        }
    }
}

#[test]
fn the_bucket_solution_decides_as_the_proxys_limit_req() {
    use proxy::limit::rate::{Burst, Decision};
    use proxy::limit::{LimitKey, RateLimitZone};
    let mut rng = fastrand::Rng::with_seed(8);
    let key = LimitKey::hashed(b"client");
    for _ in 0..200 {
        let (rate, burst, nodelay) = (rng.u32(1..=5), rng.u32(0..=4), rng.bool());
        // The zone counts time from its creation; `start` is less than a
        // millisecond after it, so whole milliseconds read the same to both.
        let (zone, start) = loop {
            let before = tokio::time::Instant::now();
            let zone = RateLimitZone::new("one", u64::from(rate) * 1000, 10);
            let start = tokio::time::Instant::now();
            if start - before < Duration::from_micros(900) {
                break (zone, start);
            }
        };
        let limit = Burst {
            burst: u64::from(burst),
            no_delay: if nodelay { u64::from(burst) } else { 0 },
        };
        let mut ours = bucket_solution::Bucket::new(rate, burst, nodelay);
        let mut ms = 0;
        for _ in 0..60 {
            ms += rng.u64(0..=700) * u64::from(rng.u8(0..3) > 0);
            let at = Duration::from_millis(ms);
            let theirs = match zone.check(key, limit, start + at) {
                Decision::Accept => bucket::Decision::Accept,
                Decision::Delay(d) => bucket::Decision::Delay(d),
                Decision::Reject { .. } => bucket::Decision::Reject,
            };
            assert_eq!(
                ours.check(at),
                theirs,
                "rate {rate} r/s, burst {burst}, nodelay {nodelay}, at {ms} ms"
            );
        }
    }
}

/// `pairs` as a `HeaderMap`, every line kept.
fn header_map(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    map
}

/// Header lines as the two sides are compared: lowercase names, sorted by
/// name, a name's lines in their order.
fn normalized(lines: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = lines
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    lines
}

/// A name in a random case: `x-forwarded-for`, `X-FORWARDED-FOR`, `X-Forwarded-For`.
fn any_case(rng: &mut fastrand::Rng, name: &str) -> String {
    match rng.u8(0..3) {
        0 => name.to_ascii_lowercase(),
        1 => name.to_ascii_uppercase(),
        _ => name.to_owned(),
    }
}

#[test]
fn the_forwarded_solution_passes_on_what_the_proxy_passes_on() {
    use course_kit::forwarded::{Forwarder, Request, TrustedProxies};
    use proxy::access::Networks;
    use proxy::headers::{self, ClientInfo};

    let addresses = [
        "203.0.113.7",
        "198.51.100.20",
        "10.0.0.1",
        "10.1.2.3",
        "::ffff:10.0.0.9",
        "2001:db8::5",
        "fd00::1",
    ];
    let entries = [
        "203.0.113.7",
        "198.51.100.20",
        "10.0.0.2",
        "10.9.9.9",
        " 192.0.2.1 ",
        "2001:db8::7",
        "fd00::2",
        "unknown",
        "",
        "1.2.3.4:5678",
    ];
    let networks: [&[&str]; 4] = [
        &[],
        &["10.0.0.0/8"],
        &["10.0.0.0/8", "fd00::/8"],
        &["0.0.0.0/0", "::/0"],
    ];
    let tokens = [
        "close",
        "keep-alive",
        "X-Secret",
        "x-forwarded-for",
        "X-Real-IP",
        "forwarded",
        "te",
        "host",
        "Accept",
        "",
    ];
    let mut rng = fastrand::Rng::with_seed(3);
    // How many requests found their client behind a trusted proxy.
    let mut walked = 0;
    for round in 0..2000 {
        let trusted_list = networks[rng.usize(..networks.len())];
        let peer: std::net::IpAddr = addresses[rng.usize(..addresses.len())]
            .parse()
            .expect("an address");
        let scheme: &'static str = if rng.bool() { "http" } else { "https" };
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut has_host = false;
        for _ in 0..rng.usize(0..9) {
            let (name, value) = match rng.u8(0..14) {
                0..=2 => {
                    let list: Vec<&str> = (0..rng.usize(1..4))
                        .map(|_| entries[rng.usize(..entries.len())])
                        .collect();
                    (
                        "X-Forwarded-For",
                        list.join(if rng.bool() { ", " } else { "," }),
                    )
                }
                3 => ("X-Real-IP", "10.0.0.66".to_owned()),
                4 => (
                    "X-Forwarded-Proto",
                    if rng.bool() { "https" } else { "http" }.to_owned(),
                ),
                5 => ("X-Forwarded-Host", "evil.example".to_owned()),
                6 if !has_host => {
                    has_host = true;
                    ("Host", "app.localhost".to_owned())
                }
                7 => ("Forwarded", "for=198.51.100.1;proto=https".to_owned()),
                8 => {
                    let list: Vec<&str> = (0..rng.usize(1..4))
                        .map(|_| tokens[rng.usize(..tokens.len())])
                        .collect();
                    ("Connection", list.join(", "))
                }
                9 => {
                    let hop = [
                        "Keep-Alive",
                        "TE",
                        "Transfer-Encoding",
                        "Upgrade",
                        "Proxy-Connection",
                    ];
                    (hop[rng.usize(..hop.len())], "x".to_owned())
                }
                10 => ("X-Secret", "s3cret".to_owned()),
                11 => ("Cookie", format!("n={}", rng.u8(..))),
                _ => ("Accept", "*/*".to_owned()),
            };
            pairs.push((any_case(&mut rng, name), value));
        }
        let lines: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();

        let ours = forwarded_solution::Hop::new(TrustedProxies::new(trusted_list));
        let our_client = ours.client_ip(peer, &lines);
        let our_headers = normalized(ours.forward(&Request {
            peer,
            scheme,
            headers: &lines,
        }));

        // The proxy's steps, in the order of handle_request and rewrite_request
        // (without the WebSocket exception), with preserve_host as chapter 03 has it.
        let trusted: Networks = trusted_list
            .iter()
            .map(|n| n.parse::<Networks>().expect("a network"))
            .collect();
        let mut map = header_map(&lines);
        if !trusted.contains(peer) {
            headers::remove_untrusted_forwarded(&mut map);
        }
        let client = proxy::access::client_ip(&trusted, peer, &map);
        let host = map.get(http::header::HOST).cloned();
        headers::remove_hop_by_hop(&mut map);
        headers::add_forwarding_headers(
            &mut map,
            &ClientInfo {
                ip: client,
                peer,
                proto: scheme,
                host: host.as_ref(),
            },
        );
        match host {
            Some(host) => map.insert(http::header::HOST, host),
            None => map.remove(http::header::HOST),
        };
        let theirs = normalized(
            map.iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("text").to_owned())),
        );

        let context = format!(
            "round {round}: from {peer} over {scheme}, trusting {trusted_list:?}, {lines:?}"
        );
        assert_eq!(our_client, client, "{context}");
        assert_eq!(our_headers, theirs, "{context}");
        walked += usize::from(client != peer);
    }
    assert!(walked > 100, "only {walked} clients from X-Forwarded-For");
}

#[test]
fn the_freshness_solution_decides_as_the_proxys_cache() {
    use std::sync::atomic::AtomicBool;
    use std::time::UNIX_EPOCH;

    use course_kit::freshness::{Exchange, Freshness, NOW, imf_fixdate};
    use proxy::cache::policy::{self, CacheControl};
    use proxy::cache::store::Entry;

    let directives = [
        "max-age=60",
        "max-age=0",
        "MAX-AGE=30",
        "s-maxage=5",
        "s-maxage=\"120\"",
        "max-age=abc",
        "max-age=99999999999999999999",
        "no-store",
        "no-cache",
        "private",
        "private=\"set-cookie\"",
        "public",
        "must-revalidate",
        "proxy-revalidate",
        "stale-while-revalidate=5",
        "immutable",
    ];
    let statuses = [
        200, 200, 200, 203, 204, 206, 301, 302, 304, 404, 410, 500, 101,
    ];
    let date = |rng: &mut fastrand::Rng| match rng.u8(0..5) {
        0 => "yesterday".to_owned(),
        1 => imf_fixdate(NOW + rng.u64(0..120)),
        _ => imf_fixdate(NOW - rng.u64(0..120)),
    };
    let mut rng = fastrand::Rng::with_seed(11);
    // Each decision seen: `stored`, or a reason.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..3000 {
        let method = ["GET", "GET", "GET", "GET", "HEAD", "POST"][rng.usize(..6)];
        let mut request: Vec<(String, String)> = Vec::new();
        if rng.u8(0..4) == 0 {
            request.push(("Authorization".to_owned(), "Basic YTpi".to_owned()));
        }
        if rng.u8(0..6) == 0 {
            let asked = ["no-store", "no-cache", "max-age=0"][rng.usize(..3)];
            request.push(("Cache-Control".to_owned(), asked.to_owned()));
        }
        let mut response: Vec<(String, String)> = Vec::new();
        for _ in 0..rng.usize(0..6) {
            let (name, value) = match rng.u8(0..9) {
                0..=2 => {
                    let list: Vec<&str> = (0..rng.usize(1..4))
                        .map(|_| directives[rng.usize(..directives.len())])
                        .collect();
                    ("Cache-Control", list.join(", "))
                }
                3 => ("Date", date(&mut rng)),
                4 => (
                    "Expires",
                    if rng.u8(0..4) == 0 {
                        "0".to_owned()
                    } else {
                        date(&mut rng)
                    },
                ),
                5 => (
                    "Age",
                    ["0", "7", "50", "abc", "99999999999999999999"][rng.usize(..5)].to_owned(),
                ),
                6 => ("Set-Cookie", "session=1".to_owned()),
                7 => (
                    "Vary",
                    ["Accept-Language", "*", "accept, *"][rng.usize(..3)].to_owned(),
                ),
                _ => ("ETag", "\"v1\"".to_owned()),
            };
            response.push((any_case(&mut rng, name), value));
        }
        let status = statuses[rng.usize(..statuses.len())];
        let default_ttl = rng.bool().then(|| rng.u64(1..100));
        let request_lines: Vec<(&str, &str)> = request
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let response_lines: Vec<(&str, &str)> = response
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let context = format!(
            "round {round}: {method} {request_lines:?} -> {status} {response_lines:?}, default_ttl {default_ttl:?}"
        );

        let ours = freshness_solution::Stored::store(&Exchange {
            method,
            request: &request_lines,
            status,
            response: &response_lines,
            default_ttl,
            now: NOW,
        });
        let wall = UNIX_EPOCH + Duration::from_secs(NOW);
        let response_map = header_map(&response_lines);
        let theirs = policy::storable(
            &http::Method::from_bytes(method.as_bytes()).expect("a method"),
            &header_map(&request_lines),
            http::StatusCode::from_u16(status).expect("a status"),
            &response_map,
            default_ttl.map(Duration::from_secs),
            wall,
        );
        let (ours, lifetime) = match (ours, theirs) {
            (Err(ours), Err(theirs)) => {
                assert_eq!(
                    ours.to_string(),
                    format!("not stored ({})", theirs.detail()),
                    "{context}"
                );
                *seen.entry(ours.to_string()).or_default() += 1;
                continue;
            }
            (Ok(ours), Ok(lifetime)) => (ours, lifetime),
            (ours, theirs) => panic!(
                "{context}: ours {:?}, the proxy's {theirs:?}",
                ours.map(|s| s.lifetime())
            ),
        };
        assert_eq!(ours.lifetime(), lifetime.as_secs(), "{context}");
        *seen.entry("stored".to_owned()).or_default() += 1;

        let stored_at = tokio::time::Instant::now();
        let cc = CacheControl::parse(&response_map);
        let entry = Entry {
            status: http::StatusCode::from_u16(status).expect("a status"),
            headers: response_map.clone(),
            body: bytes::Bytes::new(),
            vary: Vec::new(),
            stored_at,
            initial_age: policy::initial_age(&response_map, wall),
            lifetime,
            stale_while_revalidate: Duration::ZERO,
            no_cache: cc.no_cache,
            forbids_stale: cc.forbids_stale(),
            refreshing: AtomicBool::new(false),
        };
        for later in [0, 1, 5, 29, 30, 59, 60, 61, 3600] {
            let (now, then) = (NOW + later, stored_at + Duration::from_secs(later));
            let context = format!("{context}, {later} s later");
            assert_eq!(ours.age(now), entry.age(then).as_secs(), "{context}");
            assert_eq!(ours.ttl(now), entry.ttl(then), "{context}");
            assert_eq!(ours.is_fresh(now), entry.is_fresh(then), "{context}");
        }
    }
    // Every rule was put to the test, each more than a few times.
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 10), "{seen:?}");
}
