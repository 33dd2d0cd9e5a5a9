//! A learner's progress, kept outside their source in `.katas/progress.json` (git
//! ignored): per exercise, when each level first and last passed and whether it passes
//! now, and how many hint tiers were revealed per case. A level that passed once and
//! fails now is a regression.
//!
//! The file is rewritten atomically (a temporary file renamed over it). A file that
//! cannot be parsed is never overwritten: grading goes on and says so, so nothing a
//! learner earned is lost to a bug or a bad edit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::results::{ExerciseResult, LevelStatus};

/// The layout version of `progress.json`.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub version: u32,
    pub exercises: BTreeMap<String, ExerciseProgress>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { version: VERSION, exercises: BTreeMap::new() }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExerciseProgress {
    /// By level number.
    #[serde(default)]
    pub levels: BTreeMap<u8, LevelProgress>,
    /// Hint tiers revealed, by case id (`ttl_lru::l2_ttl::edges`): 1 to 3.
    #[serde(default)]
    pub hints: BTreeMap<String, u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelProgress {
    /// RFC 3339 (UTC) of the first run in which every case of the level passed.
    pub first_passed_at: Option<String>,
    /// ... and of the latest such run.
    pub last_passed_at: Option<String>,
    /// Whether the level passed the last time it was graded.
    pub passing: bool,
    pub last_graded_at: String,
}

impl LevelProgress {
    /// Passed once, fails now.
    pub fn regressed(&self) -> bool {
        self.first_passed_at.is_some() && !self.passing
    }
}

impl ExerciseProgress {
    /// The highest N such that levels 1..=N have all passed at some time, with the
    /// time the last of them first passed. 0 when level 1 never passed.
    pub fn highest_level_passed(&self) -> (u8, Option<&str>) {
        let mut highest = (0, None);
        for n in 1..=u8::MAX {
            match self.levels.get(&n).and_then(|l| l.first_passed_at.as_deref()) {
                Some(at) => highest = (n, Some(at)),
                None => break,
            }
        }
        highest
    }

    /// Whether every level in `levels` passes now.
    pub fn all_pass(&self, levels: impl IntoIterator<Item = u8>) -> bool {
        levels.into_iter().all(|n| self.levels.get(&n).is_some_and(|l| l.passing))
    }

    pub fn hints_revealed(&self, case_id: &str) -> usize {
        self.hints.get(case_id).copied().unwrap_or(0).into()
    }
}

/// Why the progress file could not be used.
#[derive(Debug)]
pub enum ProgressError {
    Io { path: PathBuf, error: std::io::Error },
    Corrupt { path: PathBuf, error: serde_json::Error },
    NewerVersion { path: PathBuf, version: u32 },
}

impl fmt::Display for ProgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            ProgressError::Corrupt { path, error } => {
                write!(f, "{} is not a progress file ({error}); it is left as it is: fix or delete it", path.display())
            }
            ProgressError::NewerVersion { path, version } => write!(
                f,
                "{} has layout version {version}, newer than this grader's {VERSION}; it is left as it is",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ProgressError {}

impl Progress {
    /// Reads `path`; a missing file is empty progress.
    pub fn load(path: &Path) -> Result<Progress, ProgressError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Progress::default()),
            Err(error) => return Err(ProgressError::Io { path: path.to_path_buf(), error }),
        };
        let progress: Progress =
            serde_json::from_str(&text).map_err(|error| ProgressError::Corrupt { path: path.to_path_buf(), error })?;
        if progress.version > VERSION {
            return Err(ProgressError::NewerVersion { path: path.to_path_buf(), version: progress.version });
        }
        Ok(progress)
    }

    /// Writes atomically: a reader (or a crash) sees the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), ProgressError> {
        let io = |error| ProgressError::Io { path: path.to_path_buf(), error };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("progress always serialises");
        std::fs::write(&tmp, text + "\n").map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    pub fn exercise(&self, exercise: &str) -> Option<&ExerciseProgress> {
        self.exercises.get(exercise)
    }

    /// Records a run's levels (only the levels that were graded in it). Returns the
    /// levels that regressed in this run.
    pub fn record(&mut self, result: &ExerciseResult, now: &str) -> Vec<u8> {
        let exercise = self.exercises.entry(result.exercise.clone()).or_default();
        let mut regressed = Vec::new();
        for level in &result.levels {
            // Skipped cases (no Redis here) say nothing about the attempt: keep what we had.
            if level.status == LevelStatus::Skipped {
                continue;
            }
            let entry = exercise.levels.entry(level.level).or_default();
            entry.passing = level.status == LevelStatus::Passed;
            entry.last_graded_at = now.to_string();
            if entry.passing {
                entry.first_passed_at.get_or_insert_with(|| now.to_string());
                entry.last_passed_at = Some(now.to_string());
            } else if entry.regressed() {
                regressed.push(level.level);
            }
        }
        regressed
    }

    /// Reveals one more hint tier of `case_id` (at most 3); returns how many are revealed.
    pub fn reveal_hint(&mut self, exercise: &str, case_id: &str) -> usize {
        let count =
            self.exercises.entry(exercise.to_string()).or_default().hints.entry(case_id.to_string()).or_insert(0);
        *count = (*count + 1).min(3);
        (*count).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::LevelResult;

    fn run(statuses: &[LevelStatus]) -> ExerciseResult {
        ExerciseResult {
            exercise: "ttl_lru".into(),
            highest_level_passed: 0,
            levels: statuses
                .iter()
                .enumerate()
                .map(|(i, &status)| LevelResult {
                    level: i as u8 + 1,
                    name: "x".into(),
                    passed: 0,
                    total: 1,
                    status,
                    regression: false,
                })
                .collect(),
            cases: vec![],
        }
    }

    #[test]
    fn a_level_that_passed_and_fails_again_is_a_regression() {
        use LevelStatus::*;
        let mut p = Progress::default();
        assert!(p.record(&run(&[Passed, Failed]), "t1").is_empty());
        assert_eq!(p.exercise("ttl_lru").unwrap().highest_level_passed(), (1, Some("t1")));
        assert!(p.record(&run(&[Passed, Passed]), "t2").is_empty());
        assert_eq!(p.exercise("ttl_lru").unwrap().highest_level_passed(), (2, Some("t2")));
        assert_eq!(p.record(&run(&[Passed, Failed]), "t3"), vec![2]);
        let e = p.exercise("ttl_lru").unwrap();
        assert!(e.levels[&2].regressed());
        assert_eq!(e.levels[&2].first_passed_at.as_deref(), Some("t2"), "the first pass is kept");
        assert_eq!(e.highest_level_passed(), (2, Some("t2")), "the highest level ever passed stays");
        assert!(!e.all_pass([1, 2]));
        // Skipped levels (no Redis) change nothing.
        p.record(&run(&[Passed, Skipped]), "t4");
        assert!(p.exercise("ttl_lru").unwrap().levels[&2].regressed());
    }

    #[test]
    fn hints_count_up_to_three() {
        let mut p = Progress::default();
        let counts: Vec<usize> = (0..5).map(|_| p.reveal_hint("ttl_lru", "ttl_lru::l1_lru::a")).collect();
        assert_eq!(counts, [1, 2, 3, 3, 3]);
        assert_eq!(p.exercise("ttl_lru").unwrap().hints_revealed("ttl_lru::l1_lru::a"), 3);
    }

    #[test]
    fn saves_atomically_and_never_overwrites_a_corrupt_file() {
        let dir = std::env::temp_dir().join(format!("katas-progress-{}", std::process::id()));
        let path = dir.join("progress.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut p = Progress::load(&path).unwrap();
        p.reveal_hint("top_k", "top_k::l1_window::a");
        p.save(&path).unwrap();
        assert_eq!(Progress::load(&path).unwrap(), p);
        std::fs::write(&path, "{ not json").unwrap();
        let err = Progress::load(&path).unwrap_err();
        assert!(err.to_string().contains("left as it is"), "{err}");
        std::fs::write(&path, r#"{"version": 99, "exercises": {}}"#).unwrap();
        assert!(matches!(Progress::load(&path), Err(ProgressError::NewerVersion { version: 99, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
