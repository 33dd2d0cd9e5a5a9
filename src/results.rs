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

/// Builds the document of a run from the graded cases, in their order. `hints_revealed`
/// gives, for a case id, how many hint tiers the learner has revealed; `regressed` says
/// whether a level (exercise, number) passed in an earlier run.
pub fn build(
    graded: &[harness::report::Graded<'_>],
    target: Target,
    started_at: String,
    duration: std::time::Duration,
    hints_revealed: impl Fn(&str) -> usize,
    regressed: impl Fn(&str, u8) -> bool,
) -> GradeResult {
    use harness::isolation::Outcome;
    let mut exercises: Vec<ExerciseResult> = Vec::new();
    for g in graded {
        let case = g.case;
        if exercises.last().is_none_or(|e| e.exercise != case.exercise) {
            exercises.push(ExerciseResult {
                exercise: case.exercise.to_string(),
                highest_level_passed: 0,
                levels: Vec::new(),
                cases: Vec::new(),
            });
        }
        let exercise = exercises.last_mut().expect("just pushed");
        let outcome = match g.outcome {
            Outcome::Passed => CaseOutcome::Passed,
            Outcome::NotImplemented { .. } => CaseOutcome::NotImplemented,
            Outcome::Failed { .. } => CaseOutcome::Failed,
            Outcome::Skipped { .. } => CaseOutcome::Skipped,
            Outcome::TimedOut { .. } => CaseOutcome::TimedOut,
            Outcome::OutOfMemory { .. } => CaseOutcome::OutOfMemory,
            Outcome::Exited { .. } => CaseOutcome::Exited,
            Outcome::Crashed { .. } => CaseOutcome::Crashed,
        };
        let id = case.local_id();
        let revealed = hints_revealed(&id).min(3);
        let fails = g.outcome.is_failure();
        exercise.cases.push(CaseResult {
            level: case.level.number,
            name: case.name.to_string(),
            outcome,
            details: (!outcome.passed()).then(|| g.outcome.details()),
            nudge: fails.then(|| g.outcome.hint(case).to_string()),
            hint_level: revealed as u8,
            hints: case.hints.revealed(revealed).map(|(_, hint)| hint.to_string()).collect(),
            duration_ms: g.duration.as_millis().try_into().unwrap_or(u64::MAX),
            id,
        });
        match exercise.levels.iter_mut().find(|l| l.level == case.level.number) {
            Some(level) => level.total += 1,
            None => exercise.levels.push(LevelResult {
                level: case.level.number,
                name: case.level.name.to_string(),
                passed: 0,
                total: 1,
                status: LevelStatus::Passed,
                regression: false,
            }),
        }
    }
    for exercise in &mut exercises {
        exercise.levels.sort_by_key(|l| l.level);
        for level in &mut exercise.levels {
            let ours = exercise.cases.iter().filter(|c| c.level == level.level);
            let failing: Vec<CaseOutcome> = ours.clone().map(|c| c.outcome).filter(|o| !o.passed()).collect();
            level.passed = ours.filter(|c| c.outcome.passed()).count();
            level.status = if failing.is_empty() {
                LevelStatus::Passed
            } else if failing.iter().all(|&o| o == CaseOutcome::NotImplemented) {
                LevelStatus::NotImplemented
            } else if failing.iter().all(|&o| o == CaseOutcome::Skipped) {
                LevelStatus::Skipped
            } else {
                LevelStatus::Failed
            };
            level.regression = level.status != LevelStatus::Passed
                && level.status != LevelStatus::Skipped
                && regressed(&exercise.exercise, level.level);
        }
        // Levels 1..=N graded in this run and all passed.
        let mut highest = 0;
        for level in &exercise.levels {
            if level.level == highest + 1 && level.status == LevelStatus::Passed {
                highest = level.level;
            } else {
                break;
            }
        }
        exercise.highest_level_passed = highest;
    }
    let passed = exercises.iter().flat_map(|e| &e.cases).filter(|c| c.outcome.passed()).count();
    let total = exercises.iter().map(|e| e.cases.len()).sum();
    GradeResult {
        schema: SCHEMA.to_string(),
        version: VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        target,
        started_at,
        duration_ms: duration.as_millis().try_into().unwrap_or(u64::MAX),
        exercises,
        passed,
        total,
    }
}
