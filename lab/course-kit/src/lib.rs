//! The course's code exercises: small pieces of a reverse proxy that a
//! learner writes in Rust, and the checks that say, in plain words, what
//! their piece gets right and wrong.
//!
//! Each exercise is one module here. It holds the trait (or the types) the
//! learner implements and a `check` function that tries the learner's
//! implementation on known cases and returns a [`Report`]:
//!
//! ```text
//! lab/exercises/04-load-balancing/weighted.rs   the starter: todo!() bodies and comments
//! lab/solutions/04-load-balancing/weighted.rs   a reference solution
//! work/04-load-balancing/weighted.rs            the learner's copy (`lab check 04` makes it)
//! ```
//!
//! `lab check NN` compiles the learner's copy with this crate into a tiny
//! program whose `main` is [`run`]. It has no dependencies, so that takes a
//! few seconds, offline.
//!
//! A check never trusts the code it checks: each property runs on its own
//! thread, so a `todo!()` or any other panic becomes a line of the report
//! ("not written yet: ...") and the next property still runs, and one that
//! does not finish within a time limit (an endless loop) is reported as such.
//! Nothing here reads a clock: exercises that depend on time take it as an
//! argument, so every check gives the same answer every time.
//!
//! # Layout
//! - [`Report`], [`Checks`]: the report and the runner of properties (this file).
//! - [`weighted`]: chapter 04, smooth weighted round-robin (nginx's `upstream` default).
//! - [`bucket`]: chapter 08, a leaky bucket with burst and `nodelay` (nginx `limit_req`).
//! - [`prefix`]: chapter 02, longest-prefix routing and prefix stripping (`proxy_pass .../`).
//! - [`percentile`]: chapter 14, latency percentiles and the cost of a hop.

pub mod bucket;
pub mod percentile;
pub mod prefix;
pub mod weighted;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt::{self, Debug, Write as _};
use std::process::ExitCode;
use std::sync::Once;
use std::sync::mpsc;
use std::time::Duration;

/// How long one property may run before the check gives up on it. Every
/// property is a handful of calls; seconds mean a loop that never ends.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);

/// How one property of the learner's code came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It holds.
    Passed,
    /// It does not: what was expected and what came instead.
    Failed(String),
    /// The code reached a `todo!()`: that part is not written yet.
    NotWritten(String),
    /// The code panicked (an index out of bounds, an overflow, an `expect`).
    Panicked(String),
    /// It did not finish within the time limit.
    TimedOut(Duration),
}

/// One property checked: what it asks, in plain words, and how it came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The property, e.g. `weights [2, 1, 1]: the first picks are 0, 1, 2, 0`.
    pub property: String,
    /// How it came out.
    pub outcome: Outcome,
}

impl Line {
    /// Whether the property holds.
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }
}

/// What a check found, property by property.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was checked, e.g. `weighted.rs: smooth weighted round-robin`.
    pub title: String,
    /// One line per property, in the order they ran.
    pub lines: Vec<Line>,
}

impl Report {
    /// Whether every property holds (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.lines.is_empty() && self.lines.iter().all(Line::passed)
    }

    /// Each property that does not hold, with why, one string each.
    pub fn failures(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| !l.passed())
            .map(|l| format!("{}: {}", l.property, describe(&l.outcome)))
            .collect()
    }

    /// The report as the learner reads it.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for line in &self.lines {
            let mark = if line.passed() { "passed" } else { "FAILED" };
            let _ = writeln!(out, "  {mark}  {}", line.property);
            if !line.passed() {
                let _ = writeln!(out, "          {}", describe(&line.outcome));
            }
        }
        let passed = self.lines.iter().filter(|l| l.passed()).count();
        let _ = writeln!(
            out,
            "{passed} of {} properties hold{}",
            self.lines.len(),
            if self.passed() { ": solved." } else { "." }
        );
        out
    }
}

/// An outcome in words.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "passed".to_owned(),
        Outcome::Failed(why) => why.clone(),
        Outcome::NotWritten(message) => format!("not written yet: {message}"),
        Outcome::Panicked(message) => format!("panicked: {message}"),
        Outcome::TimedOut(limit) => format!(
            "did not finish within {} s: is there a loop that never ends?",
            limit.as_secs_f64()
        ),
    }
}

/// `Ok` when `got` is `expected`, else `expected ..., got ...`.
pub fn expect_eq<T: PartialEq + Debug>(expected: T, got: T) -> Result<(), String> {
    if expected == got {
        Ok(())
    } else {
        Err(format!("expected {expected:?}, got {got:?}"))
    }
}

/// `Ok` when the two descriptions are the same, else `expected ..., got ...`
/// with them as they are (no quotes): for values the report writes in its
/// own words.
pub fn expect_same(expected: impl fmt::Display, got: impl fmt::Display) -> Result<(), String> {
    let (expected, got) = (expected.to_string(), got.to_string());
    if expected == got {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {got}"))
    }
}

/// Runs properties one by one and collects their outcomes into a [`Report`].
#[derive(Debug)]
pub struct Checks {
    title: String,
    lines: Vec<Line>,
    time_limit: Duration,
}

impl Checks {
    /// A check titled `title`, with the default [`TIME_LIMIT`] per property.
    pub fn new(title: impl Into<String>) -> Checks {
        Checks {
            title: title.into(),
            lines: Vec::new(),
            time_limit: TIME_LIMIT,
        }
    }

    /// The same, with another time limit per property.
    pub fn with_time_limit(mut self, limit: Duration) -> Checks {
        self.time_limit = limit;
        self
    }

    /// Runs one property: `test` returns `Err(why)` when it does not hold.
    /// It runs on a thread of its own, so that a panic or an endless loop in
    /// the learner's code is reported instead of ending the check.
    pub fn property<F>(&mut self, property: impl Into<String>, test: F)
    where
        F: FnOnce() -> Result<(), String> + Send + 'static,
    {
        install_panic_hook();
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("course-check".to_owned())
            .spawn(move || {
                IN_CHECK.with(|c| c.set(true));
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(test));
                let outcome = match result {
                    Ok(Ok(())) => Outcome::Passed,
                    Ok(Err(why)) => Outcome::Failed(why),
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        let at = PANIC_AT.with(|p| p.borrow_mut().take());
                        let full = match at {
                            Some(at) => format!("{message} ({at})"),
                            None => message.clone(),
                        };
                        if message.starts_with("not yet implemented") {
                            Outcome::NotWritten(full)
                        } else {
                            Outcome::Panicked(full)
                        }
                    }
                };
                // The receiver is gone only when the check gave up waiting.
                let _ = tx.send(outcome);
            });
        let outcome = match spawned {
            Err(err) => Outcome::Panicked(format!("could not start a thread: {err}")),
            // A thread that does not answer in time is left behind: the
            // program ends when the check does.
            Ok(_) => rx
                .recv_timeout(self.time_limit)
                .unwrap_or(Outcome::TimedOut(self.time_limit)),
        };
        self.lines.push(Line {
            property: property.into(),
            outcome,
        });
    }

    /// The report.
    pub fn finish(self) -> Report {
        Report {
            title: self.title,
            lines: self.lines,
        }
    }
}

thread_local! {
    /// Whether this thread runs a property (its panics are reported, not printed).
    static IN_CHECK: Cell<bool> = const { Cell::new(false) };
    /// Where this thread's last panic happened: `weighted.rs:31`.
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps panics inside properties off the terminal (the report tells them
/// better) and remembers where they happened; every other panic goes to the
/// hook that was there before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CHECK.with(Cell::get) {
                let at = info.location().map(|l| {
                    let file = std::path::Path::new(l.file())
                        .file_name()
                        .map_or_else(|| l.file().into(), |f| f.to_string_lossy());
                    format!("{file}:{}", l.line())
                });
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// A panic's message: what `panic!`, `todo!` or `expect` said.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// The `main` of the program `lab check` builds: runs `check`, prints its
/// report, and exits with 0 when every property holds, 1 otherwise.
pub fn run(check: fn() -> Report) -> ExitCode {
    let report = check();
    print!("{}", report.render());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A list written the way the reports write lists: `0, 1, 2, 0`.
pub(crate) fn list<T: fmt::Display>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{item}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_passes_only_when_every_property_holds() {
        let mut checks = Checks::new("demo");
        checks.property("one is one", || expect_eq(1, 1));
        assert!(checks.finish().passed());

        let mut checks = Checks::new("demo");
        checks.property("one is one", || expect_eq(1, 1));
        checks.property("two is three", || expect_eq(2, 3));
        let report = checks.finish();
        assert!(!report.passed());
        assert_eq!(report.failures(), ["two is three: expected 2, got 3"]);
        let text = report.render();
        assert!(text.contains("passed  one is one"), "{text}");
        assert!(text.contains("FAILED  two is three"), "{text}");
        assert!(text.contains("1 of 2 properties hold."), "{text}");

        assert!(!Checks::new("nothing").finish().passed());
    }

    #[test]
    fn a_todo_is_not_written_yet_and_says_where() {
        let mut checks = Checks::new("demo");
        checks.property("todo", || todo!());
        checks.property("after it", || Ok(()));
        let report = checks.finish();
        match &report.lines[0].outcome {
            Outcome::NotWritten(message) => {
                assert!(message.starts_with("not yet implemented"), "{message}");
                assert!(message.contains("lib.rs:"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(report.lines[1].passed(), "the next property still runs");
    }

    #[test]
    fn another_panic_is_reported_with_its_message() {
        let mut checks = Checks::new("demo");
        checks.property("index", || {
            let v: Vec<u32> = Vec::new();
            let i = v.len() + 3;
            expect_eq(0, v[i])
        });
        match &checks.finish().lines[0].outcome {
            Outcome::Panicked(message) => assert!(message.contains("index out of bounds")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_property_that_never_finishes_is_reported_and_the_check_goes_on() {
        let mut checks = Checks::new("demo").with_time_limit(Duration::from_millis(100));
        checks.property("endless", || {
            loop {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        checks.property("after it", || Ok(()));
        let report = checks.finish();
        assert_eq!(
            report.lines[0].outcome,
            Outcome::TimedOut(Duration::from_millis(100))
        );
        assert!(report.lines[1].passed());
        assert!(report.render().contains("a loop that never ends"));
    }
}
