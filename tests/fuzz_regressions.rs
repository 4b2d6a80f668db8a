//! Replays the fuzz seeds (tests/fuzz/seeds/<target>/*) and saved crash inputs
//! (tests/fuzz/crashes/<target>/*) through the same target logic the fuzzers run
//! (tests/fuzz/targets.rs), so every seed keeps passing and a fixed crash stays fixed.
//! See tests/fuzz/README.md.

#[path = "fuzz/targets.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// Files in `<fuzz>/<kind>/<target>/`, sorted; none if the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs every input of `kind` through its target; returns the failures as messages.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for &(name, target) in targets::TARGETS {
        for path in inputs(kind, name) {
            let data = std::fs::read(&path).unwrap();
            ran += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {msg}", path.display()));
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_target_has_seeds() {
    for &(name, _) in targets::TARGETS {
        assert!(!inputs("seeds", name).is_empty(), "no seeds in tests/fuzz/seeds/{name}/");
    }
    // No stray directories: each one names a target.
    for kind in ["seeds", "crashes"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for e in dir.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(targets::TARGETS.iter().any(|&(t, _)| t == n), "tests/fuzz/{kind}/{n}/ is not a fuzz target");
        }
    }
}

#[test]
fn seeds_pass() {
    let (ran, failures) = replay("seeds");
    assert!(ran > 0);
    assert!(failures.is_empty(), "{} of {ran} seeds fail:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn saved_crashes_stay_fixed() {
    let (ran, failures) = replay("crashes");
    assert!(failures.is_empty(), "{} of {ran} saved crashes fail:\n{}", failures.len(), failures.join("\n"));
}
