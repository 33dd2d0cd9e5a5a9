//! SQLite storage: every accepted submission in an append-only log (`submissions`),
//! plus the board state derived from it (`learners`, `exercises`, `cells`), updated in
//! the same transaction, so a restart on the same file shows the same board.
//!
//! Board semantics, per learner:
//! * a cell (exercise, level) shows the status from the latest submission that graded
//!   that level; levels a submission did not grade (watch mode stops at the first
//!   failing level) keep their previous status;
//! * a level that is not passed now but passed in an earlier submission (or that the
//!   grader flags as a regression) is a `regression`;
//! * *progress* is a submission that raises some exercise's `highest_level_passed`
//!   above the best this learner ever reached on it; `last_progress_ms` is its time
//!   (the learner's first submission otherwise) and `furthest` the exercise and level
//!   it reached: the learner has been stuck there since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::submission::Submission;
use super::{Catalog, CatalogExercise};
use crate::results::{LevelResult, LevelStatus};

/// `PRAGMA user_version` of a board database: refuse files of another layout.
const LAYOUT_VERSION: i64 = 1;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS submissions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    learner     TEXT NOT NULL,
    progressed  INTEGER NOT NULL,
    result      TEXT NOT NULL            -- the GradeResult document
);
CREATE TABLE IF NOT EXISTS learners (
    name              TEXT PRIMARY KEY,
    first_seen_ms     INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL,
    last_progress_ms  INTEGER NOT NULL,
    submissions       INTEGER NOT NULL,
    furthest_exercise TEXT,
    furthest_level    INTEGER
);
CREATE TABLE IF NOT EXISTS exercises (
    learner        TEXT NOT NULL,
    exercise       TEXT NOT NULL,
    latest_highest INTEGER NOT NULL,     -- highest_level_passed in the latest submission
    best_highest   INTEGER NOT NULL,     -- the most it ever was
    PRIMARY KEY (learner, exercise)
);
CREATE TABLE IF NOT EXISTS cells (
    learner     TEXT NOT NULL,
    exercise    TEXT NOT NULL,
    level       INTEGER NOT NULL,
    status      TEXT NOT NULL,
    ever_passed INTEGER NOT NULL,
    passed      INTEGER NOT NULL,        -- cases passed / graded in the latest grading
    total       INTEGER NOT NULL,
    PRIMARY KEY (learner, exercise, level)
);
";

/// A level's cell on the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Passed,
    Failed,
    /// Passed in an earlier submission, not now.
    Regression,
    /// Never graded, or every case still `todo!()`.
    NotStarted,
    /// Could not run on the learner's machine (no Redis server).
    Skipped,
}

impl CellStatus {
    fn as_str(self) -> &'static str {
        match self {
            CellStatus::Passed => "passed",
            CellStatus::Failed => "failed",
            CellStatus::Regression => "regression",
            CellStatus::NotStarted => "not_started",
            CellStatus::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> CellStatus {
        match text {
            "passed" => CellStatus::Passed,
            "failed" => CellStatus::Failed,
            "regression" => CellStatus::Regression,
            "skipped" => CellStatus::Skipped,
            _ => CellStatus::NotStarted,
        }
    }

    /// This grading's status, given whether the level ever passed before.
    fn of(level: &LevelResult, ever_passed: bool) -> CellStatus {
        match level.status {
            LevelStatus::Passed => CellStatus::Passed,
            _ if ever_passed || level.regression => CellStatus::Regression,
            LevelStatus::Failed => CellStatus::Failed,
            LevelStatus::NotImplemented => CellStatus::NotStarted,
            LevelStatus::Skipped => CellStatus::Skipped,
        }
    }
}

/// What the board shows: `GET /api/board`, and each server-sent event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardView {
    /// The server's time, so that a page computes "stuck for" with the server's clock.
    pub now_ms: u64,
    /// The columns.
    pub exercises: Vec<CatalogExercise>,
    /// Stuck longest first; learners with every level passed last.
    pub learners: Vec<LearnerView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LearnerView {
    pub name: String,
    pub submissions: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The last progress (see the module doc): stuck since then.
    pub last_progress_ms: u64,
    /// The exercise and level the last progress reached; `None` before any level passed.
    pub furthest: Option<Reached>,
    /// Every level of every exercise passed.
    pub done: bool,
    /// Keyed by exercise; exercises never graded are absent.
    pub exercises: BTreeMap<String, ExerciseView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reached {
    pub exercise: String,
    pub level: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExerciseView {
    /// In the latest submission grading this exercise.
    pub highest_level_passed: u8,
    /// The most it ever was.
    pub best_level_passed: u8,
    /// Levels ever graded, in increasing order.
    pub levels: Vec<CellView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CellView {
    pub level: u8,
    pub status: CellStatus,
    pub passed: u64,
    pub total: u64,
}

/// What storing a submission did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// The submission's id in the log.
    pub id: i64,
    pub learner: String,
    /// Some exercise's best level went up.
    pub progressed: bool,
    /// Exercises in the result that this board does not show.
    pub ignored: Vec<String>,
}

/// A database failure.
#[derive(Debug)]
pub enum StoreError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Sqlite(rusqlite::Error),
    /// The file is not a board of this layout.
    ForeignLayout {
        path: PathBuf,
        version: i64,
    },
    /// Anything else that kept a call from completing (a result that would not
    /// serialise, a database task that died).
    Internal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Sqlite(e) => write!(f, "SQLite: {e}"),
            StoreError::ForeignLayout { path, version } => write!(
                f,
                "{}: not a scoreboard database of layout {LAYOUT_VERSION} (user_version {version}); use another --db",
                path.display()
            ),
            StoreError::Internal(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// One board's database. Not shared between threads: the server holds it behind a mutex.
pub struct Store {
    conn: Connection,
}

/// SQLite integers are i64; times and counts here are never negative.
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating when missing, with its parent directories) the board at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io { path: parent.to_path_buf(), source })?;
        }
        let conn = Connection::open(path)?;
        // WAL: readers (the board) do not block the writer; a crash loses nothing
        // committed. The busy timeout covers a second process on the same file.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let empty: bool = conn.query_row("SELECT count(*) = 0 FROM sqlite_master", [], |row| row.get(0))?;
        if version != LAYOUT_VERSION && !(version == 0 && empty) {
            return Err(StoreError::ForeignLayout { path: path.to_path_buf(), version });
        }
        conn.execute_batch(SCHEMA_SQL)?;
        conn.pragma_update(None, "user_version", LAYOUT_VERSION)?;
        Ok(Store { conn })
    }

    /// Empties the board and its log (a new group); returns how many submissions went.
    pub fn reset(&mut self) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let removed = tx.execute("DELETE FROM submissions", [])?;
        tx.execute_batch("DELETE FROM learners; DELETE FROM exercises; DELETE FROM cells;")?;
        tx.commit()?;
        Ok(removed as u64)
    }

    /// How many submissions the log holds.
    pub fn submission_count(&self) -> Result<u64, StoreError> {
        Ok(unsigned(self.conn.query_row("SELECT count(*) FROM submissions", [], |row| row.get(0))?))
    }

    /// Appends `submission` to the log and updates the board, atomically.
    pub fn record(&mut self, submission: &Submission, catalog: &Catalog, now_ms: u64) -> Result<Recorded, StoreError> {
        let now = signed(now_ms);
        let learner = submission.learner.as_str();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO learners (name, first_seen_ms, last_seen_ms, last_progress_ms, submissions)
             VALUES (?1, ?2, ?2, ?2, 0)",
            params![learner, now],
        )?;
        let mut furthest: Option<(String, u8)> = None;
        let mut ignored = Vec::new();
        for exercise in &submission.result.exercises {
            if catalog.exercise(&exercise.exercise).is_none() {
                ignored.push(exercise.exercise.clone());
                continue;
            }
            let best = update_exercise(&tx, learner, &exercise.exercise, exercise.highest_level_passed)?;
            if exercise.highest_level_passed > best
                && furthest.as_ref().is_none_or(|(_, l)| exercise.highest_level_passed > *l)
            {
                furthest = Some((exercise.exercise.clone(), exercise.highest_level_passed));
            }
            for level in &exercise.levels {
                update_cell(&tx, learner, &exercise.exercise, level)?;
            }
        }
        let document = serde_json::to_string(&submission.result)
            .map_err(|e| StoreError::Internal(format!("serialising the result: {e}")))?;
        let progressed = furthest.is_some();
        tx.execute(
            "INSERT INTO submissions (received_ms, learner, progressed, result) VALUES (?1, ?2, ?3, ?4)",
            params![now, learner, progressed, document],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE learners SET last_seen_ms = ?2, submissions = submissions + 1 WHERE name = ?1",
            params![learner, now],
        )?;
        if let Some((exercise, level)) = furthest {
            tx.execute(
                "UPDATE learners SET last_progress_ms = ?2, furthest_exercise = ?3, furthest_level = ?4 WHERE name = ?1",
                params![learner, now, exercise, level],
            )?;
        }
        tx.commit()?;
        Ok(Recorded { id, learner: learner.to_string(), progressed, ignored })
    }

    /// The board as of `now_ms`.
    pub fn board(&self, catalog: &Catalog, now_ms: u64) -> Result<BoardView, StoreError> {
        let mut learners: BTreeMap<String, LearnerView> = BTreeMap::new();
        let mut statement = self.conn.prepare(
            "SELECT name, submissions, first_seen_ms, last_seen_ms, last_progress_ms, furthest_exercise, furthest_level
             FROM learners",
        )?;
        let rows = statement.query_map([], |row| {
            let exercise: Option<String> = row.get(5)?;
            let level: Option<u8> = row.get(6)?;
            Ok(LearnerView {
                name: row.get(0)?,
                submissions: unsigned(row.get(1)?),
                first_seen_ms: unsigned(row.get(2)?),
                last_seen_ms: unsigned(row.get(3)?),
                last_progress_ms: unsigned(row.get(4)?),
                furthest: exercise.zip(level).map(|(exercise, level)| Reached { exercise, level }),
                done: false,
                exercises: BTreeMap::new(),
            })
        })?;
        for learner in rows {
            let learner = learner?;
            learners.insert(learner.name.clone(), learner);
        }
        let mut statement =
            self.conn.prepare("SELECT learner, exercise, latest_highest, best_highest FROM exercises")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            if let Some(learner) = learners.get_mut(&name) {
                let view = ExerciseView {
                    highest_level_passed: row.get(2)?,
                    best_level_passed: row.get(3)?,
                    levels: Vec::new(),
                };
                learner.exercises.insert(row.get(1)?, view);
            }
        }
        let mut statement = self.conn.prepare(
            "SELECT learner, exercise, level, status, passed, total FROM cells ORDER BY learner, exercise, level",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let (name, exercise): (String, String) = (row.get(0)?, row.get(1)?);
            let status: String = row.get(3)?;
            let cell = CellView {
                level: row.get(2)?,
                status: CellStatus::parse(&status),
                passed: unsigned(row.get(4)?),
                total: unsigned(row.get(5)?),
            };
            if let Some(view) = learners.get_mut(&name).and_then(|l| l.exercises.get_mut(&exercise)) {
                view.levels.push(cell);
            }
        }
        let mut learners: Vec<LearnerView> = learners.into_values().collect();
        for learner in &mut learners {
            learner.done = catalog.exercises.iter().all(|known| {
                learner.exercises.get(&known.exercise).is_some_and(|view| {
                    known
                        .levels
                        .iter()
                        .all(|k| view.levels.iter().any(|c| c.level == k.level && c.status == CellStatus::Passed))
                })
            });
        }
        learners.sort_by(|a, b| (a.done, a.last_progress_ms, &a.name).cmp(&(b.done, b.last_progress_ms, &b.name)));
        Ok(BoardView { now_ms, exercises: catalog.exercises.clone(), learners })
    }
}

/// Stores this grading's `highest` level for (learner, exercise); returns the best
/// level before it.
fn update_exercise(tx: &Transaction<'_>, learner: &str, exercise: &str, highest: u8) -> Result<u8, StoreError> {
    let best: Option<u8> = tx
        .query_row(
            "SELECT best_highest FROM exercises WHERE learner = ?1 AND exercise = ?2",
            params![learner, exercise],
            |row| row.get(0),
        )
        .optional()?;
    let best = best.unwrap_or(0);
    tx.execute(
        "INSERT INTO exercises (learner, exercise, latest_highest, best_highest) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (learner, exercise) DO UPDATE SET latest_highest = ?3, best_highest = ?4",
        params![learner, exercise, highest, best.max(highest)],
    )?;
    Ok(best)
}

fn update_cell(tx: &Transaction<'_>, learner: &str, exercise: &str, level: &LevelResult) -> Result<(), StoreError> {
    let ever_passed: bool = tx
        .query_row(
            "SELECT ever_passed FROM cells WHERE learner = ?1 AND exercise = ?2 AND level = ?3",
            params![learner, exercise, level.level],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(false);
    let status = CellStatus::of(level, ever_passed);
    tx.execute(
        "INSERT INTO cells (learner, exercise, level, status, ever_passed, passed, total)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (learner, exercise, level) DO UPDATE
         SET status = ?4, ever_passed = ?5, passed = ?6, total = ?7",
        params![
            learner,
            exercise,
            level.level,
            status.as_str(),
            ever_passed || status == CellStatus::Passed,
            signed(level.passed as u64),
            signed(level.total as u64),
        ],
    )?;
    Ok(())
}
