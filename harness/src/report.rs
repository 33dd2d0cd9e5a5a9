//! Runs cases in isolation (a few at a time) and renders the report card: per exercise
//! and level, what passed; for the first failure, its counterexample and a hint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use crate::isolation::{run_isolated, Outcome};
use crate::suite::{Case, HintTier, Level};

/// A case and how it ended.
pub struct Graded<'a> {
    pub case: &'a Case,
    pub outcome: Outcome,
    /// Wall-clock time of the case's child process.
    pub duration: Duration,
}

/// What the report card knows beyond this run's outcomes: the learner's progress and
/// the exercises' statements (kept by the `cargo grade` front end, not by the harness).
#[derive(Clone, Debug, Default)]
pub struct CardNotes {
    /// Hint tiers revealed so far, by case id as learners see it (`Case::local_id`).
    pub hints_revealed: BTreeMap<String, usize>,
    /// Levels that passed in an earlier run and fail in this one: (exercise, level
    /// number) to when they first passed.
    pub regressions: BTreeMap<(String, u8), String>,
    /// Each exercise's statement summary, shown while its attempt is a fresh stub.
    pub summaries: BTreeMap<String, String>,
    /// Each exercise's "what interviewers probe next", shown once every level passes.
    pub probe_next: BTreeMap<String, String>,
}

/// Runs every case isolated, `jobs` at a time, calling `progress` as each one ends.
/// Results come back in the order of `cases`.
pub fn run_all<'a>(cases: &'a [Case], jobs: usize, progress: impl Fn(&Graded<'_>) + Sync) -> Vec<Graded<'a>> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<(Outcome, Duration)>>> = Mutex::new(vec![None; cases.len()]);
    thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let started = crate::clock::Stopwatch::start();
                let outcome = run_isolated(case);
                let graded = Graded { case, outcome, duration: started.elapsed() };
                progress(&graded);
                done.lock().expect("no panics while holding this lock")[i] = Some((graded.outcome, graded.duration));
            });
        }
    });
    let outcomes = done.into_inner().expect("no panics while holding this lock");
    cases
        .iter()
        .zip(outcomes)
        .map(|(case, done)| {
            let (outcome, duration) = done.expect("every case was run");
            Graded { case, outcome, duration }
        })
        .collect()
}

/// The report card for graded cases (any number of exercises, in the order given).
pub fn render(graded: &[Graded<'_>], notes: &CardNotes) -> String {
    let mut exercises: Vec<&str> = Vec::new();
    for g in graded {
        if !exercises.contains(&g.case.exercise) {
            exercises.push(g.case.exercise);
        }
    }
    // One column for the counts across the card: at least LEVEL_COLUMN wide, wider when a
    // level label is longer (`L2 retries_and_dead_letters`).
    let width = graded.iter().map(|g| g.case.level.to_string().chars().count()).max().unwrap_or(0).max(LEVEL_COLUMN);
    let mut text = String::new();
    for exercise in exercises {
        let ours: Vec<&Graded> = graded.iter().filter(|g| g.case.exercise == exercise).collect();
        render_exercise(&mut text, exercise, &ours, notes, width);
    }
    let passed = graded.iter().filter(|g| g.outcome.passed()).count();
    let _ = writeln!(text, "{passed}/{} cases passed", graded.len());
    let skipped: Vec<&Graded> = graded.iter().filter(|g| matches!(g.outcome, Outcome::Skipped { .. })).collect();
    if let Some(first) = skipped.first() {
        let _ = writeln!(text, "\n!!! {} cases SKIPPED, not graded: {}", skipped.len(), first.outcome.details());
    }
    text
}

/// The narrowest level column of a card.
const LEVEL_COLUMN: usize = 25;

fn render_exercise(text: &mut String, exercise: &str, graded: &[&Graded<'_>], notes: &CardNotes, width: usize) {
    let _ = writeln!(text, "== {exercise} ==");
    let mut levels: BTreeMap<Level, Vec<&Graded>> = BTreeMap::new();
    for g in graded {
        levels.entry(g.case.level).or_default().push(g);
    }
    for (level, cases) in &levels {
        let passed = cases.iter().filter(|g| g.outcome.passed()).count();
        let status = if passed == cases.len() {
            "passed".to_string()
        } else if cases.iter().all(|g| matches!(g.outcome, Outcome::NotImplemented { .. })) {
            "not implemented".to_string()
        } else if cases.iter().all(|g| matches!(g.outcome, Outcome::Skipped { .. })) {
            "SKIPPED (no Redis server)".to_string()
        } else {
            let failing: Vec<String> = cases
                .iter()
                .filter(|g| !g.outcome.passed())
                .map(|g| format!("{} {}", g.case.name, g.outcome.label()))
                .collect();
            failing.join(", ")
        };
        let regression = match notes.regressions.get(&(exercise.to_string(), level.number)) {
            Some(when) => format!("  REGRESSION: this level passed on {when}"),
            None => String::new(),
        };
        let _ = writeln!(text, "  {:<width$} {passed:>2}/{:<2}  {status}{regression}", level.to_string(), cases.len());
    }
    let first_failure = graded.iter().find(|g| g.outcome.is_failure());
    match first_failure {
        Some(g) => {
            let _ = writeln!(text, "\n  First failure: {} ({})", g.case.local_id(), g.outcome.label());
            for line in g.outcome.details().lines() {
                let _ = writeln!(text, "    {line}");
            }
            render_hints(text, g, notes.hints_revealed.get(&g.case.local_id()).copied().unwrap_or(0));
        }
        None => match graded.iter().find(|g| matches!(g.outcome, Outcome::NotImplemented { .. })) {
            Some(g) => {
                let what = notes.summaries.get(exercise).map_or(g.case.hints.get(HintTier::Behaviour), String::as_str);
                let _ = writeln!(text, "\n  Next: {} is still a stub.", g.case.local_id());
                for line in what.lines() {
                    let _ = writeln!(text, "    {line}");
                }
                let _ = writeln!(text, "    The statement: `cargo grade {exercise} --statement`.\n");
            }
            None if graded.iter().all(|g| g.outcome.passed()) => {
                let _ = writeln!(text, "\n  All levels passed.\n");
                if let Some(probe) = notes.probe_next.get(exercise) {
                    let _ = writeln!(text, "  What interviewers probe next:");
                    for line in probe.lines() {
                        let _ = writeln!(text, "    {line}");
                    }
                    let _ = writeln!(text);
                }
            }
            None => {
                let _ = writeln!(text, "\n  Every level that could run passed.\n");
            }
        },
    }
}

/// The nudge under a failure, then the hint tiers revealed so far, then how to get
/// the next one.
fn render_hints(text: &mut String, g: &Graded<'_>, revealed: usize) {
    let nudge = g.outcome.hint(g.case);
    let behaviour = g.case.hints.get(HintTier::Behaviour);
    if revealed == 0 || nudge != behaviour {
        let _ = writeln!(text, "  Nudge: {nudge}");
    }
    for (tier, hint) in g.case.hints.revealed(revealed) {
        let _ = writeln!(text, "  Hint {}/3 ({}): {hint}", tier as usize + 1, tier.name());
    }
    match HintTier::ALL.get(revealed) {
        Some(next) => {
            let _ = writeln!(text, "  (`cargo grade --hint` reveals the next hint: {})\n", next.name());
        }
        None => {
            let _ = writeln!(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn case(level: u8, name: &'static str) -> Case {
        let hints = crate::suite::Hints::new("the behaviour", "the concept", "the approach");
        Case::new("kata", Level { number: level, name: "lvl" }, name, hints, Duration::from_secs(1), || Ok(()))
    }

    #[test]
    fn card_shows_levels_first_failure_and_hint() {
        let cases = [case(1, "a"), case(1, "b"), case(2, "c")];
        let graded = vec![
            Graded { case: &cases[0], outcome: Outcome::Passed, duration: Duration::ZERO },
            Graded {
                case: &cases[1],
                outcome: Outcome::Failed { report: "counterexample (2 steps):\n 1. x".into() },
                duration: Duration::ZERO,
            },
            Graded {
                case: &cases[2],
                outcome: Outcome::NotImplemented { detail: "todo".into() },
                duration: Duration::ZERO,
            },
        ];
        let card = render(&graded, &CardNotes::default());
        assert!(card.contains("L1 lvl                     1/2   b FAILED"), "{card}");
        assert!(card.contains("L2 lvl                     0/1   not implemented"), "{card}");
        assert!(card.contains("First failure: kata::l1_lvl::b (FAILED)"), "{card}");
        assert!(card.contains("    counterexample (2 steps):"), "{card}");
        assert!(card.contains("Nudge: the behaviour"), "{card}");
        assert!(!card.contains("the concept"), "no tier is shown before --hint: {card}");
        assert!(card.contains("reveals the next hint: behaviour"), "{card}");
        assert!(card.ends_with("1/3 cases passed\n"), "{card}");
    }

    #[test]
    fn skipped_cases_are_loud_but_not_failures() {
        let cases = [case(1, "a"), case(5, "redis")];
        let graded = vec![
            Graded { case: &cases[0], outcome: Outcome::Passed, duration: Duration::ZERO },
            Graded {
                case: &cases[1],
                outcome: Outcome::Skipped { reason: "no redis-server".into() },
                duration: Duration::ZERO,
            },
        ];
        let card = render(&graded, &CardNotes::default());
        assert!(card.contains("L5 lvl                     0/1   SKIPPED (no Redis server)"), "{card}");
        assert!(!card.contains("First failure"), "{card}");
        assert!(card.contains("Every level that could run passed."), "{card}");
        assert!(card.contains("!!! 1 cases SKIPPED, not graded: skipped: no redis-server"), "{card}");
    }

    #[test]
    fn a_level_label_longer_than_the_column_widens_it_for_the_whole_card() {
        let hints = crate::suite::Hints::new("the behaviour", "the concept", "the approach");
        let long = Level { number: 2, name: "retries_and_dead_letters_too" };
        let cases = [case(1, "a"), Case::new("kata", long, "b", hints, Duration::from_secs(1), || Ok(()))];
        let graded: Vec<Graded> =
            cases.iter().map(|case| Graded { case, outcome: Outcome::Passed, duration: Duration::ZERO }).collect();
        let card = render(&graded, &CardNotes::default());
        // "L2 retries_and_dead_letters_too" is 31 characters: both counts start at column 34.
        assert!(card.contains("  L1 lvl                           1/1   passed"), "{card}");
        assert!(card.contains("  L2 retries_and_dead_letters_too  1/1   passed"), "{card}");
    }

    #[test]
    fn a_stub_gets_a_clean_card() {
        let cases = [case(1, "a"), case(2, "b")];
        let graded: Vec<Graded> = cases
            .iter()
            .map(|case| Graded {
                case,
                outcome: Outcome::NotImplemented { detail: "todo".into() },
                duration: Duration::ZERO,
            })
            .collect();
        let card = render(&graded, &CardNotes::default());
        assert!(!card.contains("First failure"), "{card}");
        assert!(card.contains("Next: kata::l1_lvl::a is still a stub."), "{card}");
        assert!(card.contains("cargo grade kata --statement"), "{card}");
        assert_eq!(card.matches("not implemented").count(), 2, "{card}");
    }

    #[test]
    fn revealed_hints_regressions_summaries_and_probe_next() {
        let cases = [case(1, "a"), case(2, "b")];
        let failed = |case| Graded {
            case,
            outcome: Outcome::Failed { report: crate::suite::with_hint("steps", "the nudge") },
            duration: Duration::ZERO,
        };
        let mut notes = CardNotes::default();
        notes.hints_revealed.insert("kata::l2_lvl::b".into(), 2);
        notes.regressions.insert(("kata".into(), 2), "2026-11-01".into());
        let graded =
            vec![Graded { case: &cases[0], outcome: Outcome::Passed, duration: Duration::ZERO }, failed(&cases[1])];
        let card = render(&graded, &notes);
        assert!(card.contains("Nudge: the nudge"), "{card}");
        assert!(card.contains("Hint 1/3 (behaviour): the behaviour"), "{card}");
        assert!(card.contains("Hint 2/3 (concept): the concept"), "{card}");
        assert!(!card.contains("the approach"), "{card}");
        assert!(card.contains("reveals the next hint: approach"), "{card}");
        assert!(card.contains("REGRESSION: this level passed on 2026-11-01"), "{card}");

        notes.summaries.insert("kata".into(), "Build a kata.".into());
        notes.probe_next.insert("kata".into(), "Shard it.".into());
        let stub = vec![Graded {
            case: &cases[0],
            outcome: Outcome::NotImplemented { detail: "todo".into() },
            duration: Duration::ZERO,
        }];
        let card = render(&stub, &notes);
        assert!(card.contains("    Build a kata."), "{card}");
        assert!(!card.contains("the behaviour"), "a stub shows the summary, not a hint: {card}");
        let passed: Vec<Graded> =
            cases.iter().map(|case| Graded { case, outcome: Outcome::Passed, duration: Duration::ZERO }).collect();
        let card = render(&passed, &notes);
        assert!(card.contains("What interviewers probe next:\n    Shard it."), "{card}");
    }
}
