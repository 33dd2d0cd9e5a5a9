//! What a graded suite is made of: levelled [`Case`]s that each pass or fail with a
//! readable report, and the panic plumbing that turns `todo!()` into "not implemented".
//!
//! One list of cases serves every front end: the `cargo grade` report card, the
//! libtest trials of `cargo test -p exercises`, and the project's self-check.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

/// A level of an exercise: cases of level N only make sense once levels below pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level {
    pub number: u8,
    pub name: &'static str,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{} {}", self.number, self.name)
    }
}

/// Deadline of a single-threaded case: generous, since a debug build on a busy
/// 2-core machine is slow; a case only meets it when it hangs.
pub const QUICK_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of a case that runs threads, Redis, or waits on purpose.
pub const THREADED_DEADLINE: Duration = Duration::from_secs(60);

/// Why a case did not pass, as decided inside the (child) process that ran it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseError {
    /// The attempt hit `todo!()` / `unimplemented!()`: not a bug, just not written yet.
    NotImplemented(String),
    /// A real failure: the report holds the numbered steps, expected vs actual.
    Failed(String),
    /// The case could not run here (e.g. no Redis server); the reason says why.
    Skipped(String),
}

impl CaseError {
    /// A failure whose report is `report`.
    pub fn failed(report: impl Into<String>) -> Self {
        CaseError::Failed(report.into())
    }
}

pub type CaseResult = Result<(), CaseError>;

/// Marks the hint a failure report carries for the behaviour that differed.
const HINT_MARK: &str = "\n@hint ";

/// A failure report carrying the hint for the behaviour that differed: shown instead of
/// the case's own hint, which is about whatever the case set out to check.
pub fn with_hint(report: impl Into<String>, hint: &str) -> String {
    format!("{}{HINT_MARK}{hint}", report.into())
}

/// A report and the behaviour hint it carries, if any (see [`with_hint`]).
pub fn split_hint(report: &str) -> (&str, Option<&str>) {
    match report.rsplit_once(HINT_MARK) {
        Some((report, hint)) => (report, Some(hint)),
        None => (report, None),
    }
}

/// How far a hint goes: `cargo grade --hint` reveals the tiers of the first failing
/// case one at a time, in this order, and remembers how far a learner went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HintTier {
    /// What the contract says about the behaviour this case checks, in plain words.
    Behaviour,
    /// The idea behind it (a race window, an invariant, a boundary) without the design.
    Concept,
    /// How a solution is usually built: the only tier that names a design.
    Approach,
}

impl HintTier {
    pub const ALL: [HintTier; 3] = [HintTier::Behaviour, HintTier::Concept, HintTier::Approach];

    pub fn name(self) -> &'static str {
        match self {
            HintTier::Behaviour => "behaviour",
            HintTier::Concept => "concept",
            HintTier::Approach => "approach",
        }
    }
}

/// A case's progressive hints, one per [`HintTier`]: behaviour, concept, approach.
/// Only the approach may describe an algorithm or a design; the first two teach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hints([&'static str; 3]);

impl Hints {
    pub const fn new(behaviour: &'static str, concept: &'static str, approach: &'static str) -> Self {
        Hints([behaviour, concept, approach])
    }

    pub fn get(&self, tier: HintTier) -> &'static str {
        self.0[tier as usize]
    }

    /// The tiers revealed after `revealed` presses of `--hint` (at most all three).
    pub fn revealed(&self, revealed: usize) -> impl Iterator<Item = (HintTier, &'static str)> + '_ {
        HintTier::ALL.into_iter().take(revealed).map(|tier| (tier, self.get(tier)))
    }
}

impl From<[&'static str; 3]> for Hints {
    fn from([behaviour, concept, approach]: [&'static str; 3]) -> Self {
        Hints::new(behaviour, concept, approach)
    }
}

/// A graded case. `run` is executed in an isolated child process by
/// [`crate::isolation`], so it may assume a fresh process and may hang or crash.
pub struct Case {
    /// Unique across everything one binary runs, e.g. `ttl_lru::l1_lru::short_sequences`.
    pub id: String,
    pub exercise: &'static str,
    pub level: Level,
    pub name: &'static str,
    /// The nudge under a failure when it carries no behaviour hint of its own (the
    /// behaviour tier), and what `cargo grade --hint` reveals step by step.
    pub hints: Hints,
    /// Wall-clock limit for the whole case, child start-up included.
    pub deadline: Duration,
    /// Needs a Redis server (see `redis_server`): skipped, loudly, where none is found.
    pub needs_redis: bool,
    pub run: Box<dyn Fn() -> CaseResult + Send + Sync>,
}

impl Case {
    pub fn new(
        exercise: &'static str,
        level: Level,
        name: &'static str,
        hints: impl Into<Hints>,
        deadline: Duration,
        run: impl Fn() -> CaseResult + Send + Sync + 'static,
    ) -> Self {
        let hints = hints.into();
        let mut case =
            Case { id: String::new(), exercise, level, name, hints, deadline, needs_redis: false, run: Box::new(run) };
        case.id = case.local_id();
        case
    }

    /// The same case, marked as needing a Redis server.
    pub fn with_redis(mut self) -> Self {
        self.needs_redis = true;
        self
    }

    /// `exercise::lN_level::name`: the id without any prefix, as learners see it.
    pub fn local_id(&self) -> String {
        format!("{}::l{}_{}::{}", self.exercise, self.level.number, self.level.name, self.name)
    }

    /// The same case under `prefix::id`, so one binary can hold several targets
    /// (reference, mutants) without id clashes.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.id = format!("{prefix}::{}", self.id);
        self
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A caught panic: its message and, when the panic hook saw it, where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panic {
    pub message: String,
}

impl Panic {
    /// `todo!()` and `unimplemented!()` mean "not written yet", not "wrong".
    pub fn is_not_implemented(&self) -> bool {
        self.message.starts_with("not yet implemented") || self.message.starts_with("not implemented")
    }

    pub fn from_payload(payload: &(dyn Any + Send)) -> Panic {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        };
        let location = LAST_PANIC_LOCATION.lock().map(|l| l.clone()).unwrap_or_default();
        let message = match location {
            Some(at) => format!("{text} (at {at})"),
            None => text,
        };
        Panic { message }
    }

    /// The case error this panic stands for, with `context` saying what was running.
    pub fn into_case_error(self, context: impl fmt::Display) -> CaseError {
        if self.is_not_implemented() {
            CaseError::NotImplemented(self.message)
        } else {
            CaseError::Failed(format!("{context}\npanicked: {}", self.message))
        }
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

static LAST_PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic hook with one that records the location quietly:
/// the runner reports panics itself, so the default stderr dump would only be noise.
pub fn install_quiet_panic_hook() {
    panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC_LOCATION.lock() {
            *last = info.location().map(|l| l.to_string());
        }
    }));
}

/// Runs `f`, turning a panic into `Err(Panic)`.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panic::from_payload(payload.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn todo_is_not_implemented_and_other_panics_are_failures() {
        install_quiet_panic_hook();
        let todo = guarded(|| -> u32 { todo!() }).unwrap_err();
        assert!(todo.is_not_implemented());
        assert!(matches!(todo.into_case_error("x"), CaseError::NotImplemented(_)));

        let boom = guarded(|| -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert!(!boom.is_not_implemented());
        match boom.into_case_error("step 3") {
            CaseError::Failed(report) => {
                assert!(report.contains("step 3"), "{report}");
                assert!(report.contains("boom 7"), "{report}");
                assert!(report.contains("suite.rs"), "location missing: {report}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_report_carries_its_behaviour_hint() {
        let report = with_hint("counterexample...", "take locks in one order");
        assert_eq!(split_hint(&report), ("counterexample...", Some("take locks in one order")));
        assert_eq!(split_hint("plain"), ("plain", None));
    }

    #[test]
    fn ids_name_exercise_level_and_case() {
        let case =
            Case::new("kata", Level { number: 2, name: "ttl" }, "edges", ["", "", ""], Duration::from_secs(1), || {
                Ok(())
            });
        assert_eq!(case.id, "kata::l2_ttl::edges");
        let prefixed = case.prefixed("reference");
        assert_eq!(prefixed.id, "reference::kata::l2_ttl::edges");
        assert_eq!(prefixed.local_id(), "kata::l2_ttl::edges");
    }
}
