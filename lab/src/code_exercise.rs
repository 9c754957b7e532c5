//! The course's code exercises: a small piece of a reverse proxy written in
//! Rust against a trait (a weighted picker, a leaky bucket, a prefix router,
//! latency percentiles), and how `lab check`, `lab hint` and `lab progress`
//! handle them. The traits and the checks themselves live in the
//! `course-kit` crate (lab/course-kit/), which has no dependencies.
//!
//! ```text
//! lab/exercises/04-load-balancing/weighted.rs          the starter (todo!() bodies; fails its check)
//! lab/exercises/04-load-balancing/weighted.hints.txt   its hints, from a nudge to nearly the answer
//! lab/solutions/04-load-balancing/weighted.rs          a reference solution (passes it)
//! work/04-load-balancing/weighted.rs                   the learner's copy, made by `lab check 04`
//! work/.kit/check-04-weighted/                         a tiny crate: the copy + course-kit's check
//! ```
//!
//! To check the learner's copy, `lab check` writes a crate of its own (with
//! an empty `[workspace]`, so it is no member of the repository's) whose
//! `main` includes the copy as a module and runs course-kit's check on it.
//! Cargo builds it into `work/.kit/target` in a few seconds, offline: the
//! compiler's errors are the learner's to read, as they are, and the
//! program's exit status says whether every property held. The repository's
//! own tests (lab/course-kit/tests/exercises.rs) run the same checks on the
//! starters and solutions, never on `work/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::course::{self, CourseError, Standing};

/// One code exercise.
#[derive(Debug, Clone, Copy)]
pub struct CodeExercise {
    /// The chapter's number.
    pub number: u8,
    /// The chapter's slug: `load-balancing`.
    pub slug: &'static str,
    /// The chapter's title.
    pub title: &'static str,
    /// The file's name without `.rs`, also course-kit's module: `weighted`.
    pub stem: &'static str,
    /// The type the learner's file implements the trait for: `Weighted`.
    pub type_name: &'static str,
    /// What it is, in a few words.
    pub summary: &'static str,
    /// The starter file.
    pub starter: &'static str,
    /// A reference solution.
    pub solution: &'static str,
    /// Hints, one per line, from a nudge to nearly the answer.
    pub hints: &'static str,
}

macro_rules! code_exercise {
    ($number:literal, $slug:literal, $title:literal, $stem:literal, $type_name:literal, $summary:literal) => {
        CodeExercise {
            number: $number,
            slug: $slug,
            title: $title,
            stem: $stem,
            type_name: $type_name,
            summary: $summary,
            starter: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/",
                $stem,
                ".rs"
            )),
            solution: include_str!(concat!(
                "../solutions/",
                stringify!($number),
                "-",
                $slug,
                "/",
                $stem,
                ".rs"
            )),
            hints: include_str!(concat!(
                "../exercises/",
                stringify!($number),
                "-",
                $slug,
                "/",
                $stem,
                ".hints.txt"
            )),
        }
    };
}

/// Every code exercise, in chapter order.
#[allow(clippy::zero_prefixed_literal)]
pub const CODE_EXERCISES: &[CodeExercise] = &[
    code_exercise!(
        02,
        "path-routing",
        "Path routing",
        "prefix",
        "Routes",
        "longest-prefix routing and prefix stripping"
    ),
    code_exercise!(
        04,
        "load-balancing",
        "Load balancing",
        "weighted",
        "Weighted",
        "smooth weighted round-robin"
    ),
    code_exercise!(
        08,
        "rate-limits",
        "Rate and connection limits",
        "bucket",
        "Bucket",
        "a leaky bucket with burst and nodelay"
    ),
    code_exercise!(
        14,
        "measuring",
        "Measuring the proxy",
        "percentile",
        "Samples",
        "latency percentiles and the cost of a hop"
    ),
];

/// The code exercises of the chapter that `key` names (`4`, `04`,
/// `04-load-balancing` or `load-balancing`); none when it has none.
pub fn for_chapter(key: &str) -> Vec<&'static CodeExercise> {
    let number = key.split('-').next().and_then(|n| n.parse::<u8>().ok());
    CODE_EXERCISES
        .iter()
        .filter(|e| Some(e.number) == number || e.chapter_name() == key || e.slug == key)
        .collect()
}

/// How a check of the learner's file came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeVerdict {
    /// Every property held.
    Passed,
    /// It compiled, and some property did not hold (the report says which).
    Failed,
    /// It did not compile (cargo printed why).
    DoesNotCompile,
}

impl CodeExercise {
    /// `04-load-balancing`: the chapter's folder.
    pub fn chapter_name(&self) -> String {
        format!("{:02}-{}", self.number, self.slug)
    }

    /// `weighted.rs`.
    pub fn file(&self) -> String {
        format!("{}.rs", self.stem)
    }

    /// `04-load-balancing/weighted.rs`: the exercise's name in the progress file.
    pub fn id(&self) -> String {
        format!("{}/{}", self.chapter_name(), self.file())
    }

    /// The starter, relative to the repository.
    pub fn starter_path(&self) -> String {
        format!("lab/exercises/{}", self.id())
    }

    /// The learner's copy below `root`.
    pub fn work_file(&self, root: &Path) -> PathBuf {
        root.join("work")
            .join(self.chapter_name())
            .join(self.file())
    }

    /// The chapter's page, relative to the repository.
    pub fn doc(&self) -> String {
        format!("docs/{}.md", self.chapter_name())
    }

    /// The hints, in order.
    pub fn hint_lines(&self) -> Vec<&'static str> {
        self.hints
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The learner's copy below `root`, made from the starter when there is
    /// none yet; `true` with it when it was just made.
    pub fn work_copy(&self, root: &Path) -> Result<(PathBuf, bool), CourseError> {
        let path = self.work_file(root);
        if path.exists() {
            return Ok((path, false));
        }
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
        std::fs::write(&path, self.starter).map_err(io(&path))?;
        Ok((path, true))
    }

    /// The crate that checks the learner's copy below `root`:
    /// `work/.kit/check-NN-stem/`, its manifest, and the program cargo
    /// builds from it. The files are written only when they change, so a
    /// second check rebuilds only the learner's file.
    pub fn check_crate(&self, root: &Path) -> Result<CheckCrate, CourseError> {
        let kit = root.join("work").join(".kit");
        let package = format!("check-{:02}-{}", self.number, self.stem);
        let dir = kit.join(&package);
        let manifest = dir.join("Cargo.toml");
        let main = dir.join("src").join("main.rs");
        let learner = absolute(&self.work_file(root));
        let cargo_toml = format!(
            "# Made by `lab check {number:02}`, remade on every check: it builds\n\
             # work/{id} with the course's check of it.\n\
             [package]\n\
             name = \"{package}\"\n\
             version = \"0.0.0\"\n\
             edition = \"2024\"\n\
             publish = false\n\
             \n\
             [dependencies]\n\
             course-kit = {{ path = {kit_path} }}\n\
             \n\
             # A crate of its own, not a member of the repository's workspace.\n\
             [workspace]\n",
            number = self.number,
            id = self.id(),
            kit_path = toml_string(&absolute(&kit_dir())),
        );
        let main_rs = format!(
            "//! Made by `lab check {number:02}`, remade on every check.\n\
             \n\
             // Unused code in a half-written exercise is no news: no warnings for it.\n\
             #[allow(unused)]\n\
             #[path = {learner:?}]\n\
             mod exercise;\n\
             \n\
             fn main() -> std::process::ExitCode {{\n    \
                 course_kit::run(course_kit::{stem}::check::<exercise::{type_name}>)\n\
             }}\n",
            number = self.number,
            learner = learner.display().to_string(),
            stem = self.stem,
            type_name = self.type_name,
        );
        write_if_changed(&manifest, &cargo_toml)?;
        write_if_changed(&main, &main_rs)?;
        let target_dir = kit.join("target");
        let program = target_dir
            .join("debug")
            .join(format!("{package}{}", std::env::consts::EXE_SUFFIX));
        Ok(CheckCrate {
            manifest,
            target_dir,
            program,
        })
    }

    /// Checks the learner's copy below `root` with `cargo` (the `CARGO`
    /// environment variable when set, else `cargo`): builds the check crate,
    /// then runs it. Cargo's and the check's output go straight to this
    /// process's stdout and stderr.
    pub fn check(&self, root: &Path) -> Result<CodeVerdict, CourseError> {
        let krate = self.check_crate(root)?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(&cargo)
            .arg("build")
            .arg("--quiet")
            .arg("--offline")
            .arg("--manifest-path")
            .arg(&krate.manifest)
            .arg("--target-dir")
            .arg(&krate.target_dir)
            .status()
            .map_err(|e| {
                CourseError::Check(format!(
                    "cannot run `{}` to build the check (set CARGO to cargo's path): {e}",
                    cargo.to_string_lossy()
                ))
            })?;
        if !built.success() {
            return Ok(CodeVerdict::DoesNotCompile);
        }
        let ran = Command::new(&krate.program)
            .status()
            .map_err(io(&krate.program))?;
        Ok(if ran.success() {
            CodeVerdict::Passed
        } else {
            CodeVerdict::Failed
        })
    }

    /// Records that the learner's copy passed with `text` in it.
    pub fn record_pass(&self, root: &Path, text: &str) -> Result<(), CourseError> {
        course::record_pass_for(&self.id(), root, text)
    }

    /// Where the learner stands on this exercise (without running anything).
    pub fn standing(&self, root: &Path) -> Standing {
        let Ok(text) = std::fs::read_to_string(self.work_file(root)) else {
            return Standing::NotStarted;
        };
        let record = std::fs::read_to_string(course::progress_file(root)).unwrap_or_default();
        let line = format!("{} {}", self.id(), course::fingerprint(&text));
        if record.lines().any(|l| l == line) {
            Standing::Solved
        } else {
            Standing::InProgress
        }
    }
}

/// The crate `lab check` builds to check one learner's file.
#[derive(Debug, Clone)]
pub struct CheckCrate {
    /// Its `Cargo.toml`.
    pub manifest: PathBuf,
    /// Where cargo builds it (shared by the code exercises).
    pub target_dir: PathBuf,
    /// The program cargo builds.
    pub program: PathBuf,
}

/// Where the learner stands on every code exercise.
pub fn progress(root: &Path) -> Vec<(&'static CodeExercise, Standing)> {
    CODE_EXERCISES
        .iter()
        .map(|e| (e, e.standing(root)))
        .collect()
}

/// The course-kit crate of this checkout.
pub fn kit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("course-kit")
}

/// `path` without `..` and symbolic links when it exists; as it is otherwise.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// A TOML string holding `path` (a literal string when it can be one).
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains('\'') || text.contains('\n') {
        format!("{text:?}")
    } else {
        format!("'{text}'")
    }
}

/// Writes `text` to `path` (and its folder) unless it holds it already.
fn write_if_changed(path: &Path, text: &str) -> Result<(), CourseError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(io(folder))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// A [`CourseError::Io`] about `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CourseError {
    let path = path.display().to_string();
    move |source| CourseError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exercises_are_found_by_chapter_number_or_name() {
        for key in ["4", "04", "04-load-balancing", "load-balancing"] {
            let found = for_chapter(key);
            assert_eq!(found.len(), 1, "{key}");
            assert_eq!(found[0].stem, "weighted");
        }
        assert!(for_chapter("03").is_empty());
        assert_eq!(for_chapter("14")[0].id(), "14-measuring/percentile.rs");
    }

    #[test]
    fn the_check_crate_includes_the_learners_file_and_the_kit_by_absolute_path() {
        let root = tempfile::tempdir().expect("a scratch folder");
        let exercise = for_chapter("04")[0];
        exercise.work_copy(root.path()).expect("a work copy");
        let krate = exercise.check_crate(root.path()).expect("the crate");
        let manifest = std::fs::read_to_string(&krate.manifest).expect("read");
        assert!(
            manifest.contains("name = \"check-04-weighted\""),
            "{manifest}"
        );
        assert!(manifest.contains("course-kit = { path = '/"), "{manifest}");
        assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
        let main =
            std::fs::read_to_string(krate.manifest.with_file_name("src/main.rs")).expect("read");
        assert!(
            main.contains("work/04-load-balancing/weighted.rs\"]"),
            "{main}"
        );
        assert!(
            main.contains("course_kit::weighted::check::<exercise::Weighted>"),
            "{main}"
        );
        assert!(krate.program.ends_with("debug/check-04-weighted"));
    }
}
