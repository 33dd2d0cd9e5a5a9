//! What the scoreboard tests share: result documents as a learner's grader sends them.

use backend_katas::results::{ExerciseResult, GradeResult, LevelResult, LevelStatus, Target, SCHEMA, VERSION};

/// An attempt's result for `ttl_lru` whose levels have the given statuses.
pub fn ttl_lru(levels: &[LevelStatus]) -> GradeResult {
    let highest = levels.iter().take_while(|s| **s == LevelStatus::Passed).count() as u8;
    let names = ["lru", "ttl", "threads", "single_flight"];
    GradeResult {
        schema: SCHEMA.into(),
        version: VERSION,
        tool_version: "0.1.0".into(),
        target: Target::Attempt,
        started_at: "2026-01-01T10:00:00Z".into(),
        duration_ms: 1234,
        exercises: vec![ExerciseResult {
            exercise: "ttl_lru".into(),
            highest_level_passed: highest,
            levels: levels
                .iter()
                .zip(1u8..)
                .map(|(&status, level)| LevelResult {
                    level,
                    name: names[usize::from(level) - 1].into(),
                    passed: usize::from(status == LevelStatus::Passed) * 3,
                    total: 3,
                    status,
                    regression: false,
                })
                .collect(),
            cases: Vec::new(),
        }],
        passed: 0,
        total: 0,
    }
}
