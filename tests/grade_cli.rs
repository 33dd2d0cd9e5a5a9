//! `cargo grade`'s front end, run as a learner runs it: the JSON document validated
//! against its published schema, progress kept outside the source, statements.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh state directory (progress, hints) per test, never the repository's `.katas`.
fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("katas-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn grade(state: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_grade"))
        .args(args)
        .env("KATAS_STATE_DIR", state)
        .output()
        .expect("the grade binary runs");
    assert!(
        output.status.success(),
        "grade {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn validated(stdout: &[u8]) -> serde_json::Value {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schema/grade-result.v1.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    let document: serde_json::Value = serde_json::from_slice(stdout).expect("--json prints one JSON document");
    let errors: Vec<String> =
        validator.iter_errors(&document).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "the output does not match its schema: {errors:#?}\n{document:#}");
    // The typed reading agrees with the schema's.
    let typed: backend_katas::results::GradeResult = serde_json::from_value(document.clone()).unwrap();
    assert_eq!(typed.version, backend_katas::results::VERSION);
    document
}

#[test]
fn json_of_a_passing_run_matches_the_schema() {
    let state = state_dir("json-ref");
    let out = grade(&state, &["top_k", "--level", "1", "--reference", "--json"]);
    let doc = validated(&out.stdout);
    assert_eq!(doc["target"], "reference");
    let exercise = &doc["exercises"][0];
    assert_eq!(exercise["exercise"], "top_k");
    assert_eq!(exercise["highest_level_passed"], 1);
    assert!(exercise["cases"].as_array().unwrap().iter().all(|c| c["outcome"] == "passed" && c["details"].is_null()));
    assert_eq!(doc["passed"], doc["total"]);
    assert!(!state.join("progress.json").exists(), "grading the references is not the learner's progress");
}

#[test]
fn json_of_a_stub_matches_the_schema_and_progress_is_kept_outside_the_source() {
    let state = state_dir("json-stub");
    let out = grade(&state, &["ttl_lru", "--level", "1", "--json"]);
    let doc = validated(&out.stdout);
    assert_eq!(doc["target"], "attempt");
    let exercise = &doc["exercises"][0];
    assert_eq!(exercise["highest_level_passed"], 0);
    assert_eq!(exercise["levels"][0]["status"], "not_implemented");
    assert!(exercise["cases"].as_array().unwrap().iter().all(|c| c["outcome"] == "not_implemented"));

    let progress: backend_katas::progress::Progress =
        serde_json::from_str(&std::fs::read_to_string(state.join("progress.json")).unwrap()).unwrap();
    let level = &progress.exercise("ttl_lru").expect("recorded").levels[&1];
    assert!(!level.passing && level.first_passed_at.is_none());
    let shown = grade(&state, &["--progress"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("== ttl_lru == no level passed yet"), "{shown}");
    assert!(shown.contains("not passed yet (last graded"), "{shown}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_stub_card_shows_the_statement_summary_and_the_statement_hides_the_probes() {
    let state = state_dir("statement");
    let card = grade(&state, &["top_k", "--level", "1"]);
    let card = String::from_utf8_lossy(&card.stdout);
    let statement = backend_katas::statement::load(&root(), "top_k").unwrap();
    let first_line = statement.summary.lines().next().unwrap();
    assert!(card.contains(first_line), "the stub's card shows the summary:\n{card}");
    assert!(card.contains("cargo grade top_k --statement"), "{card}");

    let printed = grade(&state, &["top_k", "--statement"]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.starts_with(&format!("# {}", statement.title)), "{printed}");
    assert!(!printed.contains(&statement.probe_next), "the probes stay hidden until every level passes");
    assert!(printed.contains("Once every level passes"), "{printed}");
    let _ = std::fs::remove_dir_all(&state);
}
