//! The machine-readable result of one `cargo grade` run (`cargo grade --json`), also the
//! body a learner's `--submit` posts to the workshop scoreboard.
//!
//! The document is versioned: [`SCHEMA`] names it and [`VERSION`] changes whenever a
//! field is removed or changes meaning (adding an optional field does not). Its JSON
//! Schema is `schema/grade-result.v1.json`, documented in the README; a test validates
//! real output against it.

use serde::{Deserialize, Serialize};

/// The `schema` field of every document.
pub const SCHEMA: &str = "backend-katas/grade-result";
/// The `version` field: bump on any incompatible change, with a new schema file.
pub const VERSION: u32 = 1;

/// One grading run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradeResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Always [`VERSION`] for this layout.
    pub version: u32,
    /// The grader's version (the `backend-katas` package version).
    pub tool_version: String,
    /// What was graded: the learner's attempts or the reference solutions.
    pub target: Target,
    /// When grading started, RFC 3339 in UTC (seconds).
    pub started_at: String,
    /// Wall-clock time of the whole run, in milliseconds.
    pub duration_ms: u64,
    /// Every exercise graded, in report-card order.
    pub exercises: Vec<ExerciseResult>,
    /// Cases passed and graded over all exercises.
    pub passed: usize,
    pub total: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Attempt,
    Reference,
}

/// One exercise of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExerciseResult {
    /// e.g. `ttl_lru`.
    pub exercise: String,
    /// The highest level N such that levels 1..=N were graded in this run and all
    /// passed; 0 when level 1 did not pass (or was not graded).
    pub highest_level_passed: u8,
    pub levels: Vec<LevelResult>,
    pub cases: Vec<CaseResult>,
}

/// One level of an exercise, as graded in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelResult {
    pub level: u8,
    /// e.g. `ttl` for `L2 ttl`.
    pub name: String,
    pub passed: usize,
    pub total: usize,
    pub status: LevelStatus,
    /// This level had passed in an earlier run (see `.katas/progress.json`) and now
    /// fails: a regression. Always false when grading the references.
    pub regression: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelStatus {
    /// Every case passed.
    Passed,
    /// At least one case failed (or timed out, crashed...).
    Failed,
    /// Every case that did not pass is still a stub (`todo!()`).
    NotImplemented,
    /// Every case that did not pass could not run here (no Redis server).
    Skipped,
}

/// One case of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseResult {
    /// e.g. `ttl_lru::l2_ttl::edges`.
    pub id: String,
    pub level: u8,
    pub name: String,
    pub outcome: CaseOutcome,
    /// For an outcome other than `passed`: the counterexample or what happened, as the
    /// report card prints it. `null` when the case passed.
    pub details: Option<String>,
    /// For a failure: the nudge about the behaviour that differed. `null` otherwise.
    pub nudge: Option<String>,
    /// How many hint tiers the learner has revealed for this case (`cargo grade --hint`):
    /// 0 to 3.
    pub hint_level: u8,
    /// The revealed tiers' text, in order (behaviour, concept, approach); as many as
    /// `hint_level`.
    pub hints: Vec<String>,
    /// Wall-clock time of the case's child process, in milliseconds.
    pub duration_ms: u64,
}

/// How a case ended: the report card's label, in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseOutcome {
    Passed,
    NotImplemented,
    Failed,
    Skipped,
    TimedOut,
    OutOfMemory,
    Exited,
    Crashed,
}

impl CaseOutcome {
    pub fn passed(self) -> bool {
        self == CaseOutcome::Passed
    }
}
