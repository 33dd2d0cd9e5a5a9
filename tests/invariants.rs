//! ARCHITECTURE.md's structural invariants, checked on the source tree itself.

use std::collections::BTreeSet;
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

/// The names a crate's manifest lists under `[dependencies]`.
fn dependencies(crate_dir: &str) -> BTreeSet<String> {
    let path = root().join(crate_dir).join("Cargo.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    manifest.get("dependencies").and_then(|d| d.as_table()).map(|d| d.keys().cloned().collect()).unwrap_or_default()
}

/// `pub struct`/`pub enum` names declared in a source file.
fn public_types(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.strip_prefix("pub struct ").or_else(|| line.strip_prefix("pub enum ")))
        .map(|rest| rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
        .collect()
}

/// A reference file can be copied over an attempt as is: the exercises crate offers
/// every crate the references use, and each attempt module has a reference module of
/// the same name declaring every public type the attempt does (what the rest of the
/// exercises crate, its benches and tests name).
#[test]
fn references_drop_in_over_attempts() {
    let (offered, used) = (dependencies("exercises"), dependencies("solutions"));
    assert!(used.contains("harness") && used.len() > 2, "read no dependencies from solutions/Cargo.toml: {used:?}");
    let missing: Vec<_> = used.difference(&offered).collect();
    assert!(missing.is_empty(), "solutions use crates exercises/Cargo.toml does not offer: {missing:?}");

    let mut attempts = Vec::new();
    rust_files(&root().join("exercises/src"), &mut attempts);
    assert!(attempts.len() >= 5, "found only {} attempt files", attempts.len());
    for attempt in attempts.iter().filter(|f| !f.ends_with("lib.rs")) {
        let reference = root().join("solutions/src").join(attempt.file_name().expect("a file name"));
        assert!(reference.exists(), "{} has no reference {}", attempt.display(), reference.display());
        let (named, declared) = (public_types(attempt), public_types(&reference));
        assert!(!named.is_empty(), "no public types found in {}", attempt.display());
        let missing: Vec<_> = named.difference(&declared).collect();
        assert!(missing.is_empty(), "{} does not declare {missing:?}", reference.display());
    }
}

/// Every case teaches in three steps (behaviour, concept, approach): none is blank.
#[test]
fn every_case_has_three_hint_tiers() {
    let cases = exercises::cases();
    assert!(cases.len() > 50, "only {} cases", cases.len());
    for case in &cases {
        for tier in harness::HintTier::ALL {
            let hint = case.hints.get(tier);
            assert!(hint.trim().len() >= 20, "{}: the {} hint is blank or too short: {hint:?}", case.id, tier.name());
        }
        let [b, c, a] = harness::HintTier::ALL.map(|t| case.hints.get(t));
        assert!(b != c && c != a && b != a, "{}: hint tiers repeat each other", case.id);
    }
}

/// Every exercise has a statement the grader can read (`statement::parse` also checks
/// that the probe section comes last), listing exactly the suite's levels in order, and
/// its stub's first line points to it.
#[test]
fn every_exercise_has_a_statement_and_its_stub_links_it() {
    let cases = exercises::cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.exercise).collect();
    names.dedup();
    for exercise in names {
        let statement = backend_katas::statement::load(&root(), exercise).unwrap_or_else(|e| panic!("{e}"));
        // The statement's level lines, in order, are exactly the suite's levels.
        let mut levels: Vec<String> = cases
            .iter()
            .filter(|c| c.exercise == exercise)
            .map(|c| format!("- **L{} {}**: ", c.level.number, c.level.name))
            .collect();
        levels.dedup();
        let listed: Vec<&str> = statement
            .body
            .lines()
            .filter(|l| l.strip_prefix("- **L").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())))
            .collect();
        assert_eq!(listed.len(), levels.len(), "{exercise}: the statement's level lines {listed:?}");
        for (line, level) in listed.iter().zip(&levels) {
            assert!(line.starts_with(level.as_str()), "{exercise}: `{line}` should start with `{level}`");
        }
        let stub = fs::read_to_string(root().join(format!("exercises/src/{exercise}.rs"))).unwrap();
        let first = stub.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("//! Statement: ") && first.contains(&format!("exercises/statements/{exercise}.md")),
            "{exercise}: the stub's first line must link the statement: {first}"
        );
    }
}
