//! Runs cases in isolation (a few at a time) and renders the report card: per exercise
//! and level, what passed; for the first failure, its counterexample and a hint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use crate::isolation::{run_isolated, Outcome};
use crate::suite::{Case, Level};

/// A case and how it ended.
pub struct Graded<'a> {
    pub case: &'a Case,
    pub outcome: Outcome,
}

/// Runs every case isolated, `jobs` at a time, calling `progress` as each one ends.
/// Results come back in the order of `cases`.
pub fn run_all<'a>(cases: &'a [Case], jobs: usize, progress: impl Fn(&Graded<'_>) + Sync) -> Vec<Graded<'a>> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; cases.len()]);
    thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let graded = Graded { case, outcome: run_isolated(case) };
                progress(&graded);
                done.lock().expect("no panics while holding this lock")[i] = Some(graded.outcome);
            });
        }
    });
    let outcomes = done.into_inner().expect("no panics while holding this lock");
    cases
        .iter()
        .zip(outcomes)
        .map(|(case, outcome)| Graded { case, outcome: outcome.expect("every case was run") })
        .collect()
}

/// The report card for graded cases (any number of exercises, in the order given).
pub fn render(graded: &[Graded<'_>]) -> String {
    let mut exercises: Vec<&str> = Vec::new();
    for g in graded {
        if !exercises.contains(&g.case.exercise) {
            exercises.push(g.case.exercise);
        }
    }
    let mut text = String::new();
    for exercise in exercises {
        let ours: Vec<&Graded> = graded.iter().filter(|g| g.case.exercise == exercise).collect();
        render_exercise(&mut text, exercise, &ours);
    }
    let passed = graded.iter().filter(|g| g.outcome.passed()).count();
    let _ = writeln!(text, "{passed}/{} cases passed", graded.len());
    let skipped: Vec<&Graded> = graded.iter().filter(|g| matches!(g.outcome, Outcome::Skipped { .. })).collect();
    if let Some(first) = skipped.first() {
        let _ = writeln!(text, "\n!!! {} cases SKIPPED, not graded: {}", skipped.len(), first.outcome.details());
    }
    text
}

fn render_exercise(text: &mut String, exercise: &str, graded: &[&Graded<'_>]) {
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
        let _ = writeln!(text, "  {:<20} {passed:>2}/{:<2}  {status}", level.to_string(), cases.len());
    }
    let first_failure = graded.iter().find(|g| {
        !g.outcome.passed() && !matches!(g.outcome, Outcome::NotImplemented { .. } | Outcome::Skipped { .. })
    });
    match first_failure {
        Some(g) => {
            let _ = writeln!(text, "\n  First failure: {} ({})", g.case.local_id(), g.outcome.label());
            for line in g.outcome.details().lines() {
                let _ = writeln!(text, "    {line}");
            }
            let _ = writeln!(text, "  Hint: {}\n", g.outcome.hint(g.case));
        }
        None => match graded.iter().find(|g| matches!(g.outcome, Outcome::NotImplemented { .. })) {
            Some(g) => {
                let _ = writeln!(text, "\n  Next: {} is still a stub. {}\n", g.case.local_id(), g.case.hints.get(crate::suite::HintTier::Behaviour));
            }
            None if graded.iter().all(|g| g.outcome.passed()) => {
                let _ = writeln!(text, "\n  All levels passed.\n");
            }
            None => {
                let _ = writeln!(text, "\n  Every level that could run passed.\n");
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn case(level: u8, name: &'static str) -> Case {
        Case::new("kata", Level { number: level, name: "lvl" }, name, "the hint", Duration::from_secs(1), || Ok(()))
    }

    #[test]
    fn card_shows_levels_first_failure_and_hint() {
        let cases = [case(1, "a"), case(1, "b"), case(2, "c")];
        let graded = vec![
            Graded { case: &cases[0], outcome: Outcome::Passed },
            Graded { case: &cases[1], outcome: Outcome::Failed { report: "counterexample (2 steps):\n 1. x".into() } },
            Graded { case: &cases[2], outcome: Outcome::NotImplemented { detail: "todo".into() } },
        ];
        let card = render(&graded);
        assert!(card.contains("L1 lvl                1/2   b FAILED"), "{card}");
        assert!(card.contains("L2 lvl                0/1   not implemented"), "{card}");
        assert!(card.contains("First failure: kata::l1_lvl::b (FAILED)"), "{card}");
        assert!(card.contains("    counterexample (2 steps):"), "{card}");
        assert!(card.contains("Hint: the hint"), "{card}");
        assert!(card.ends_with("1/3 cases passed\n"), "{card}");
    }

    #[test]
    fn skipped_cases_are_loud_but_not_failures() {
        let cases = [case(1, "a"), case(5, "redis")];
        let graded = vec![
            Graded { case: &cases[0], outcome: Outcome::Passed },
            Graded { case: &cases[1], outcome: Outcome::Skipped { reason: "no redis-server".into() } },
        ];
        let card = render(&graded);
        assert!(card.contains("L5 lvl                0/1   SKIPPED (no Redis server)"), "{card}");
        assert!(!card.contains("First failure"), "{card}");
        assert!(card.contains("Every level that could run passed."), "{card}");
        assert!(card.contains("!!! 1 cases SKIPPED, not graded: skipped: no redis-server"), "{card}");
    }

    #[test]
    fn a_stub_gets_a_clean_card() {
        let cases = [case(1, "a"), case(2, "b")];
        let graded: Vec<Graded> = cases
            .iter()
            .map(|case| Graded { case, outcome: Outcome::NotImplemented { detail: "todo".into() } })
            .collect();
        let card = render(&graded);
        assert!(!card.contains("First failure"), "{card}");
        assert!(card.contains("Next: kata::l1_lvl::a is still a stub."), "{card}");
        assert_eq!(card.matches("not implemented").count(), 2, "{card}");
    }
}
