//! ARCHITECTURE.md's structural invariants, checked on the source tree itself.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_os_clock_is_read_only_in_the_clock_module() {
    let mut files = Vec::new();
    for dir in ["harness/src", "solutions/src", "src", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files: wrong root?", files.len());
    let clock_module = root().join("harness/src/clock.rs");
    // Spelled in two halves so that this file does not match itself.
    let forbidden = [["Instant", "::now"], ["SystemTime", "::now"]].map(|[a, b]| format!("{a}{b}"));
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| **f != clock_module)
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            forbidden.iter().any(|needle| text.contains(needle.as_str()))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "read the OS clock outside harness/src/clock.rs: {offenders:?}");
}

#[test]
fn the_harness_depends_on_neither_attempts_nor_references() {
    let manifest = fs::read_to_string(root().join("harness/Cargo.toml")).expect("harness manifest");
    for crate_name in ["exercises", "solutions"] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(crate_name)),
            "harness/Cargo.toml must not depend on {crate_name}"
        );
    }
}
