//! The course's code exercises from the learner's side, and against the
//! proxy's own code:
//!
//! - `lab check`, `lab hint` and `lab progress` run end to end on a scratch
//!   folder (`LAB_COURSE_ROOT`): the untouched starter fails and says why,
//!   a file that does not compile says so, the solution passes and counts;
//! - the reference solutions decide as the proxy does: the weighted picker
//!   as `proxy::balance::RoundRobin`, the bucket as `limit_req`'s
//!   `proxy::limit::RateLimitZone`, on random inputs. What the course
//!   teaches is what the proxy does.
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
