//! The course's exercises, and how `lab check`, `lab hint` and `lab progress`
//! judge them.
//!
//! A config exercise is a proxy configuration with a gap: the learner fills it
//! in, and the check boots the lab's services behind a proxy running the
//! learner's file, then sends the chapter's requests (a scenario,
//! `lab/exercises/NN-slug/check.toml`) and reports each expectation met or
//! not. Three copies of each file take part:
//!
//! ```text
//! lab/exercises/NN-slug/proxy.toml   the starter, as the repository ships it (fails its check)
//! lab/solutions/NN-slug/proxy.toml   a reference solution (passes it)
//! work/NN-slug/proxy.toml            the learner's copy, made by `lab check NN`; git ignores work/
//! ```
//!
//! The repository's own tests check the first two, never the third, so
//! nothing a learner writes can turn them red.
//!
//! A compose exercise ([`Kind::Compose`], chapter 12) has the same three
//! copies of a `docker-compose.yml` instead, and no scenario: its check reads
//! the file without Docker, against the rules of [`crate::compose`].

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::scenario::{self, RunOptions, Scenario};
use crate::stack::{ConfigTemplate, Stack, StackOptions};

/// One chapter that has an exercise.
#[derive(Debug, Clone, Copy)]
pub struct Chapter {
    /// Its number, as in `docs/02-path-routing.md`.
    pub number: u8,
    /// The part of its file name after the number.
    pub slug: &'static str,
    /// Its title.
    pub title: &'static str,
    /// The starter configuration.
    pub starter: &'static str,
    /// A reference solution.
    pub solution: &'static str,
    /// The scenario whose expectations the exercise must meet.
    pub check: &'static str,
    /// Hints, one per line, from a nudge to nearly the answer.
    pub hints: &'static str,
    /// What the learner writes, and so how it is checked.
    pub kind: Kind,
}

/// What kind of file an exercise is, and so how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A proxy config (`proxy.toml`), booted in front of the lab's services,
    /// then sent the chapter's scenario (`check.toml`).
    Config,
    /// A `docker-compose.yml`, read without Docker and held to the rules of
    /// [`crate::compose`] (`check` is empty).
    Compose,
}

impl Kind {
    /// The exercise's file name, in `lab/exercises/NN-slug/` and `work/NN-slug/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Config => "proxy.toml",
            Kind::Compose => "docker-compose.yml",
        }
    }
}

macro_rules! chapter {
    ($number:literal, $slug:literal, $title:literal) => {
        Chapter {
            number: $number,
            slug: $slug,
            title: $title,
            starter: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/proxy.toml"
            )),
            solution: include_str!(concat!(
                "../solutions/",
                stringify!($number),
                "-",
                $slug,
                "/proxy.toml"
            )),
            check: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/check.toml"
            )),
            hints: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/hints.txt"
            )),
            kind: Kind::Config,
        }
    };
    (compose $number:literal, $slug:literal, $title:literal) => {
        Chapter {
            number: $number,
            slug: $slug,
            title: $title,
            starter: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/docker-compose.yml"
            )),
            solution: include_str!(concat!(
                "../solutions/",
                stringify!($number),
                "-",
                $slug,
                "/docker-compose.yml"
            )),
            check: "",
            hints: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/hints.txt"
            )),
            kind: Kind::Compose,
        }
    };
}

/// Every chapter with an exercise, in order. (`02` is written as the folder
/// names it: the macro makes the file paths from it.)
#[allow(clippy::zero_prefixed_literal)]
pub const CHAPTERS: &[Chapter] = &[
    chapter!(02, "path-routing", "Path routing"),
    chapter!(03, "forwarded-headers", "Forwarded headers"),
    chapter!(04, "load-balancing", "Load balancing"),
    chapter!(05, "health-and-failover", "Health and failover"),
    chapter!(06, "https", "HTTPS"),
    chapter!(07, "host-routing", "Host routing"),
    chapter!(08, "rate-limits", "Rate and connection limits"),
    chapter!(09, "cors-and-headers", "CORS and header rules"),
    chapter!(10, "websockets", "WebSockets and upgrades"),
    chapter!(11, "caching-and-compression", "Caching and compression"),
    chapter!(compose 12, "containers", "The production stack in containers"),
    chapter!(13, "observability", "Observability"),
    chapter!(15, "security-at-the-edge", "Security at the edge"),
];

impl Chapter {
    /// `02-path-routing`.
    pub fn name(&self) -> String {
        format!("{:02}-{}", self.number, self.slug)
    }

    /// The learner's copy of the exercise below `root` (the repository).
    pub fn work_file(&self, root: &Path) -> PathBuf {
        root.join("work")
            .join(self.name())
            .join(self.kind.file_name())
    }

    /// The chapter's page, relative to the repository.
    pub fn doc(&self) -> String {
        format!("docs/{}.md", self.name())
    }

    /// The hints, in order.
    pub fn hint_lines(&self) -> Vec<&'static str> {
        self.hints
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The check as a scenario (a bug in the repository if it does not parse).
    pub fn check_scenario(&self) -> Result<Scenario, CourseError> {
        let file = format!("lab/exercises/{}/check.toml", self.name());
        Scenario::parse(self.check, &file).map_err(|e| CourseError::Check(e.to_string()))
    }
}

/// The chapter that `key` names: `2`, `02` or `02-path-routing`.
pub fn chapter(key: &str) -> Result<&'static Chapter, CourseError> {
    let number = key.split('-').next().and_then(|n| n.parse::<u8>().ok());
    CHAPTERS
        .iter()
        .find(|c| Some(c.number) == number || c.name() == key || c.slug == key)
        .ok_or_else(|| CourseError::NoSuchChapter {
            key: key.to_owned(),
            known: CHAPTERS
                .iter()
                .map(Chapter::name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Why an exercise could not be checked at all (not: it failed its check).
#[derive(Debug, thiserror::Error)]
pub enum CourseError {
    /// No chapter of that number or name has an exercise.
    #[error("no exercise for chapter `{key}`; the exercises are: {known}")]
    NoSuchChapter {
        /// What was asked for.
        key: String,
        /// The chapters that have one.
        known: String,
    },
    /// The learner's file could not be read or made.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The chapter's check does not parse or could not run (a bug here, not
    /// in the learner's work).
    #[error("the check itself is broken: {0}")]
    Check(String),
}

/// What a check found.
#[derive(Debug)]
pub struct Verdict {
    /// The requests and answers, as `lab scenario` prints them.
    pub transcript: String,
    /// How many expectations the check has.
    pub expectations: usize,
    /// Each expectation not met, in plain words; empty when the exercise is solved.
    pub failures: Vec<String>,
}

impl Verdict {
    /// Whether every expectation was met.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks the learner's `text` (of `file`) as `chapter`'s kind of exercise
/// says: [`check_config`] or [`check_compose`].
pub async fn check(chapter: &Chapter, text: &str, file: &str) -> Result<Verdict, CourseError> {
    match chapter.kind {
        Kind::Config => check_config(chapter, text, file).await,
        Kind::Compose => Ok(check_compose(text, file)),
    }
}

/// Checks a compose file (the text of `file`) against the production
/// stack's rules, without Docker: the transcript lists every rule, `ok` or
/// `NO`; the failures say what is wrong.
pub fn check_compose(text: &str, file: &str) -> Verdict {
    let report = crate::compose::check(text, file);
    Verdict {
        transcript: report.summary(),
        expectations: crate::compose::RULES.len(),
        failures: report.failures(),
    }
}

/// Checks `config` (the text of `file`) against `chapter`'s expectations.
/// A config the proxy refuses is a failed check whose failure is the
/// proxy's own error message (with the file, line and a fix).
pub async fn check_config(
    chapter: &Chapter,
    config: &str,
    file: &str,
) -> Result<Verdict, CourseError> {
    let scenario = chapter.check_scenario()?;
    let expectations = scenario
        .steps
        .iter()
        .filter(|s| s.expects_something())
        .count();
    let options = StackOptions {
        proxy_config: Some(ConfigTemplate {
            text: config.to_owned(),
            file: file.to_owned(),
        }),
        ..StackOptions::default()
    };
    let mut stack = match Stack::boot(options).await {
        Ok(stack) => stack,
        Err(err) => {
            return Ok(Verdict {
                transcript: String::new(),
                expectations,
                failures: vec![format!("the proxy does not start with this file: {err}")],
            });
        }
    };
    let outcome = scenario::run(&scenario, &mut stack, RunOptions::default()).await;
    stack.shutdown().await;
    let outcome = outcome.map_err(|e| CourseError::Check(e.to_string()))?;
    Ok(Verdict {
        transcript: outcome.transcript.render(),
        expectations,
        failures: outcome.failures,
    })
}

/// The learner's copy of `chapter`'s exercise below `root`, made from the
/// starter when there is none yet; `true` with it when it was just made.
pub fn work_copy(chapter: &Chapter, root: &Path) -> Result<(PathBuf, bool), CourseError> {
    let path = chapter.work_file(root);
    if path.exists() {
        return Ok((path, false));
    }
    let io = |source| CourseError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(io)?;
    }
    std::fs::write(&path, chapter.starter).map_err(io)?;
    Ok((path, true))
}

/// Where `lab check` remembers what passed: `.lab-progress.txt` (git ignores it).
pub(crate) fn progress_file(root: &Path) -> PathBuf {
    root.join(".lab-progress.txt")
}

/// A short fingerprint of a file's text, so a record of a pass stops
/// counting once the file changes.
pub(crate) fn fingerprint(text: &str) -> String {
    format!("{:08x}", crc32fast::hash(text.as_bytes()))
}

/// Records that `chapter`'s exercise passed with `text`.
pub fn record_pass(chapter: &Chapter, root: &Path, text: &str) -> Result<(), CourseError> {
    record_pass_for(&chapter.name(), root, text)
}

/// Records that the exercise called `name` (`02-path-routing`,
/// `04-load-balancing/weighted.rs`) passed with `text`.
pub fn record_pass_for(name: &str, root: &Path, text: &str) -> Result<(), CourseError> {
    let path = progress_file(root);
    let io = |source| CourseError::Io {
        path: path.display().to_string(),
        source,
    };
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{name} {}", fingerprint(text)));
    lines.sort();
    let mut file = std::fs::File::create(&path).map_err(io)?;
    writeln!(file, "{}", lines.join("\n")).map_err(io)
}

/// Where a learner stands on one chapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No work copy yet.
    NotStarted,
    /// Started, never passed (or changed since it passed).
    InProgress,
    /// Passed, and the file is as it was then.
    Solved,
}

/// Where a learner stands on every chapter (read from the work copies and
/// the progress file, without running anything).
pub fn progress(root: &Path) -> Vec<(&'static Chapter, Standing)> {
    let record = std::fs::read_to_string(progress_file(root)).unwrap_or_default();
    CHAPTERS
        .iter()
        .map(|chapter| {
            let standing = match std::fs::read_to_string(chapter.work_file(root)) {
                Err(_) => Standing::NotStarted,
                Ok(text) => {
                    let line = format!("{} {}", chapter.name(), fingerprint(&text));
                    if record.lines().any(|l| l == line) {
                        Standing::Solved
                    } else {
                        Standing::InProgress
                    }
                }
            };
            (chapter, standing)
        })
        .collect()
}
