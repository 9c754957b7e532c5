//! Replays a fuzz target's saved inputs through its check on stable Rust:
//! every file in `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`.
//! Included (`#[path]`) by the `fuzz_regressions` tests of proxy and lab.

use std::path::Path;

/// Runs `check` on every file of the target's seeds and regressions; fails
/// with the list of inputs whose check panicked.
pub fn run_inputs(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut ran = 0;
    let mut failed = Vec::new();
    for folder in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        // Dot files (.gitkeep) are not inputs.
        let inputs = paths.into_iter().filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        });
        for path in inputs {
            let data = std::fs::read(&path).expect("a readable input");
            ran += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(ran > 0, "no inputs for {target} in {}", fuzz.display());
    assert!(failed.is_empty(), "{target}: checks failed for {failed:#?}");
}
