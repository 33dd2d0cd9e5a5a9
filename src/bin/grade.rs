//! `cargo grade`: grades the attempts in `exercises/` and prints a report card per
//! exercise and level, with the minimal counterexample and a nudge for the first
//! failure. Every case runs in its own child process with a deadline, so an attempt
//! that hangs, crashes or runs out of memory fails that case and nothing else.
//!
//! Around the card: `--statement` (what to build), `--hint` (the next hint tier for
//! the first failure), `--progress` (levels passed, kept in `.katas/`), `--json` (the
//! versioned result document), `--watch` (re-grade on save) and `--submit` (post the
//! result to a workshop scoreboard).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use backend_katas::progress::Progress;
use backend_katas::results::{self, GradeResult, Target};
use backend_katas::{statement, submit, watch};
use clap::Parser;
use harness::clock::Stopwatch;
use harness::isolation::{serve_child_if_requested, Outcome};
use harness::report::{render, run_all, CardNotes, Graded};
use harness::Case;

#[derive(Parser, Debug)]
#[command(
    name = "cargo grade",
    version,
    about = "Grade your attempts (exercises/) against each exercise's contract",
    after_help = "Start with `cargo grade <exercise> --statement`, then `cargo grade --watch <exercise>` while you work."
)]
struct Args {
    /// Grade only this exercise (e.g. ttl_lru); all when omitted.
    exercise: Option<String>,
    /// Grade only this level (1, 2, ...).
    #[arg(long)]
    level: Option<u8>,
    /// Grade the reference solutions instead of your attempts.
    #[arg(long)]
    reference: bool,
    /// Cases run at once (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// List the cases instead of running them.
    #[arg(long)]
    list: bool,
    /// Exit with status 1 unless every selected case passes (for scripts).
    #[arg(long)]
    check: bool,
    /// Print the exercise's statement (what interviewers probe next is added once
    /// every level has passed).
    #[arg(long, requires = "exercise")]
    statement: bool,
    /// Grade, then reveal the next hint for the first failure: behaviour, then
    /// concept, then approach. How far you went is remembered.
    #[arg(long)]
    hint: bool,
    /// Show the levels you have passed and when (kept in .katas/progress.json).
    #[arg(long)]
    progress: bool,
    /// Print the result as one JSON document (schema/grade-result.v1.json) instead
    /// of the report card.
    #[arg(long)]
    json: bool,
    /// Re-grade whenever you save an attempt: the exercise being edited, level by
    /// level, stopping at the first failing level.
    #[arg(long)]
    watch: bool,
    /// Grade level by level and stop at the first level that fails (what --watch does).
    #[arg(long)]
    stop_at_failing_level: bool,
    /// Post the result to a workshop scoreboard at this http:// URL (with --name and
    /// --code). A scoreboard that does not answer is a warning, never a failure.
    #[arg(long, requires_all = ["name", "code"], value_name = "URL")]
    submit: Option<String>,
    /// Your name on the scoreboard.
    #[arg(long, requires = "submit")]
    name: Option<String>,
    /// The workshop code the facilitator gave you.
    #[arg(long, requires = "submit")]
    code: Option<String>,
}

/// The workspace root: statements live under it, and the learner's state in `.katas`.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Overrides where the learner's state is kept (default `<root>/.katas`).
const STATE_ENV: &str = "KATAS_STATE_DIR";

fn state_dir() -> PathBuf {
    std::env::var_os(STATE_ENV).map_or_else(|| Path::new(ROOT).join(".katas"), PathBuf::from)
}

/// Every case of both targets, so a child can serve any of them.
fn all_cases() -> Vec<Case> {
    let attempt = exercises::cases().into_iter().map(|c| c.prefixed("attempt"));
    let reference = solutions::cases().into_iter().map(|c| c.prefixed("reference"));
    attempt.chain(reference).collect()
}

/// The learner's progress, or why it cannot be used (said once; grading goes on).
fn load_progress(path: &Path) -> Option<Progress> {
    match Progress::load(path) {
        Ok(progress) => Some(progress),
        Err(error) => {
            eprintln!("warning: progress not kept: {error}");
            None
        }
    }
}

fn save_progress(progress: &Progress, path: &Path) {
    if let Err(error) = progress.save(path) {
        eprintln!("warning: progress not saved: {error}");
    }
}

fn now_rfc3339() -> String {
    use harness::clock::{Clock, WallClock};
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(WallClock.now().as_nanos());
    humantime::format_rfc3339_seconds(now).to_string()
}

fn main() -> ExitCode {
    let cases = all_cases();
    serve_child_if_requested(&cases);
    let args = Args::parse();

    let target = if args.reference { "reference::" } else { "attempt::" };
    let known: Vec<&str> = {
        // Both targets list every exercise: keep each name once, in suite order.
        let mut names: Vec<&str> = Vec::new();
        for case in &cases {
            if !names.contains(&case.exercise) {
                names.push(case.exercise);
            }
        }
        names
    };
    if let Some(exercise) = &args.exercise {
        if !known.contains(&exercise.as_str()) {
            eprintln!("error: no exercise named `{exercise}`; exercises: {}", known.join(", "));
            return ExitCode::from(2);
        }
    }
    let progress_path = state_dir().join("progress.json");

    if args.statement {
        let exercise = args.exercise.as_deref().expect("clap requires it");
        let levels = levels_of(&cases, exercise);
        return print_statement(exercise, &levels, &progress_path);
    }
    if args.progress {
        return print_progress(&known, &cases, &progress_path);
    }
    if args.watch {
        let grader = match std::env::current_exe() {
            Ok(path) => path,
            Err(error) => {
                eprintln!("error: cannot find the grader's own binary: {error}");
                return ExitCode::from(2);
            }
        };
        let mut grader_args = Vec::new();
        if let Some(jobs) = args.jobs {
            grader_args.extend(["--jobs".to_string(), jobs.to_string()]);
        }
        if let (Some(url), Some(name), Some(code)) = (&args.submit, &args.name, &args.code) {
            grader_args.extend(["--submit", url, "--name", name, "--code", code].map(String::from));
        }
        return watch::run(watch::WatchPlan {
            root: PathBuf::from(ROOT),
            grader,
            exercise: args.exercise.clone(),
            grader_args,
            known: known.iter().map(|s| s.to_string()).collect(),
        });
    }

    let selected: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.id.starts_with(target))
        .filter(|c| args.exercise.as_deref().is_none_or(|e| c.exercise == e))
        .filter(|c| args.level.is_none_or(|l| c.level.number == l))
        .collect();
    if selected.is_empty() {
        eprintln!("error: no cases match (level {:?} does not exist?)", args.level);
        return ExitCode::from(2);
    }
    if args.list {
        for case in &selected {
            println!("{}", case.id.trim_start_matches(target));
        }
        return ExitCode::SUCCESS;
    }

    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let whose = if args.reference { "reference solutions" } else { "your attempts" };
    eprintln!("grading {whose}: {} cases, {jobs} at a time, each isolated with a deadline", selected.len());
    let started_at = now_rfc3339();
    let started = Stopwatch::start();
    let on_progress = |g: &Graded<'_>| {
        eprint!("{}", if g.outcome.passed() { "." } else { "x" });
        let _ = std::io::stderr().flush();
    };
    let (graded, not_reached) = if args.stop_at_failing_level {
        grade_until_a_level_fails(&selected, jobs, on_progress)
    } else {
        (run_all(&selected, jobs, on_progress), Vec::new())
    };
    eprintln!();
    let duration = started.elapsed();

    // The learner's state: only an attempt's run counts towards progress.
    let mut progress = if args.reference { None } else { load_progress(&progress_path) };
    if args.hint && !args.reference {
        reveal_next_hint(&graded, progress.as_mut());
    }
    let revealed = |id: &str| -> usize {
        let exercise = id.split("::").next().unwrap_or_default();
        progress.as_ref().and_then(|p| p.exercise(exercise)).map_or(0, |e| e.hints_revealed(id))
    };
    let regressed = |exercise: &str, level: u8| -> bool {
        progress
            .as_ref()
            .and_then(|p| p.exercise(exercise))
            .and_then(|e| e.levels.get(&level))
            .is_some_and(|l| l.first_passed_at.is_some())
    };
    let result = results::build(
        &graded,
        if args.reference { Target::Reference } else { Target::Attempt },
        started_at,
        duration,
        revealed,
        regressed,
    );
    let notes = card_notes(&result, &graded, progress.as_ref(), args.level.is_none() && !args.stop_at_failing_level);
    if let Some(progress) = progress.as_mut() {
        let now = now_rfc3339();
        for exercise in &result.exercises {
            progress.record(exercise, &now);
        }
        save_progress(progress, &progress_path);
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&result).expect("the result always serialises"));
    } else {
        print!("{}", render(&graded, &notes));
        if !not_reached.is_empty() {
            println!("Not graded yet (fix the failing level first): {}", not_reached.join(", "));
        }
        if args.hint && first_failure(&graded).is_none() {
            println!("--hint: nothing failed, so there is nothing to hint at.");
        }
    }
    if let (Some(url), Some(name), Some(code)) = (&args.submit, &args.name, &args.code) {
        submit_result(url, name, code, result.clone(), args.stop_at_failing_level);
    }
    if args.check && !graded.iter().all(|g| g.outcome.passed()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The levels of `exercise`, in order.
fn levels_of(cases: &[Case], exercise: &str) -> Vec<u8> {
    let mut levels: Vec<u8> = cases.iter().filter(|c| c.exercise == exercise).map(|c| c.level.number).collect();
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// Grades each exercise level by level (levels of different exercises in turn) and
/// stops an exercise at its first level that does not pass. Returns the graded cases
/// and the levels not reached ("ttl_lru L3").
fn grade_until_a_level_fails<'a>(
    selected: &'a [Case],
    jobs: usize,
    progress: impl Fn(&Graded<'_>) + Sync,
) -> (Vec<Graded<'a>>, Vec<String>) {
    let mut graded = Vec::new();
    let mut not_reached = Vec::new();
    let mut exercises: Vec<&str> = selected.iter().map(|c| c.exercise).collect();
    exercises.dedup();
    for exercise in exercises {
        let levels = levels_of(selected, exercise);
        for (i, &level) in levels.iter().enumerate() {
            let start = selected.iter().position(|c| c.exercise == exercise && c.level.number == level);
            let count = selected.iter().filter(|c| c.exercise == exercise && c.level.number == level).count();
            let Some(start) = start else { continue };
            // Cases of one level are contiguous in suite order.
            let these = run_all(&selected[start..start + count], jobs, &progress);
            let all_passed = these.iter().all(|g| g.outcome.passed() || matches!(g.outcome, Outcome::Skipped { .. }));
            graded.extend(these);
            if !all_passed {
                not_reached.extend(levels[i + 1..].iter().map(|l| format!("{exercise} L{l}")));
                break;
            }
        }
    }
    (graded, not_reached)
}

/// The failure the card explains: the first case, in order, that failed for real.
fn first_failure<'a, 'b>(graded: &'b [Graded<'a>]) -> Option<&'b Graded<'a>> {
    graded.iter().find(|g| g.outcome.is_failure())
}

fn reveal_next_hint(graded: &[Graded<'_>], progress: Option<&mut Progress>) {
    let Some(failure) = first_failure(graded) else { return };
    match progress {
        Some(progress) => {
            progress.reveal_hint(failure.case.exercise, &failure.case.local_id());
        }
        None => eprintln!("warning: hints cannot be revealed without a usable progress file"),
    }
}

/// What the card shows beyond the run: hints revealed, regressions, statements.
fn card_notes(
    result: &GradeResult,
    graded: &[Graded<'_>],
    progress: Option<&Progress>,
    every_level: bool,
) -> CardNotes {
    let mut notes = CardNotes::default();
    for exercise in &result.exercises {
        for case in &exercise.cases {
            if case.hint_level > 0 {
                notes.hints_revealed.insert(case.id.clone(), case.hint_level.into());
            }
        }
        for level in exercise.levels.iter().filter(|l| l.regression) {
            let when = progress
                .and_then(|p| p.exercise(&exercise.exercise))
                .and_then(|e| e.levels.get(&level.level))
                .and_then(|l| l.first_passed_at.clone())
                .unwrap_or_default();
            notes.regressions.insert((exercise.exercise.clone(), level.level), when);
        }
        match statement::load(Path::new(ROOT), &exercise.exercise) {
            Ok(statement) => {
                notes.summaries.insert(exercise.exercise.clone(), statement.summary);
                let passed_all =
                    graded.iter().filter(|g| g.case.exercise == exercise.exercise).all(|g| g.outcome.passed());
                if every_level && passed_all {
                    notes.probe_next.insert(exercise.exercise.clone(), statement.probe_next);
                }
            }
            Err(error) => eprintln!("warning: {error}"),
        }
    }
    notes
}

fn print_statement(exercise: &str, levels: &[u8], progress_path: &Path) -> ExitCode {
    let statement = match statement::load(Path::new(ROOT), exercise) {
        Ok(statement) => statement,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    println!("{}\n", statement.body);
    let passed_all = Progress::load(progress_path)
        .ok()
        .and_then(|p| p.exercise(exercise).map(|e| e.all_pass(levels.iter().copied())))
        .unwrap_or(false);
    if passed_all {
        println!("{}\n\n{}", statement::PROBE_NEXT_HEADING, statement.probe_next);
    } else {
        println!("(Once every level passes, this statement adds what interviewers probe next.)");
    }
    ExitCode::SUCCESS
}

fn print_progress(known: &[&str], cases: &[Case], progress_path: &Path) -> ExitCode {
    let progress = match Progress::load(progress_path) {
        Ok(progress) => progress,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    println!("Progress ({}):", progress_path.display());
    for exercise in known {
        let levels: BTreeMap<u8, &str> = cases
            .iter()
            .filter(|c| c.exercise == *exercise && c.id.starts_with("attempt::"))
            .map(|c| (c.level.number, c.level.name))
            .collect();
        let mine = progress.exercise(exercise).cloned().unwrap_or_default();
        let (highest, since) = mine.highest_level_passed();
        let headline = match since {
            Some(when) => format!("L{highest} of {} passed (since {when})", levels.len()),
            None => format!("no level passed yet, of {}", levels.len()),
        };
        println!("\n== {exercise} == {headline}");
        for (number, name) in &levels {
            let line = match mine.levels.get(number) {
                None => "not graded yet".to_string(),
                Some(l) if l.passing => format!("passed (first {})", l.first_passed_at.as_deref().unwrap_or("?")),
                Some(l) if l.regressed() => format!(
                    "REGRESSION: passed on {}, fails since {}",
                    l.first_passed_at.as_deref().unwrap_or("?"),
                    l.last_graded_at
                ),
                Some(l) => format!("not passed yet (last graded {})", l.last_graded_at),
            };
            println!("  L{number} {name:<16} {line}");
        }
        let hints: usize = mine.hints.values().map(|&n| usize::from(n)).sum();
        if hints > 0 {
            println!("  hints revealed: {hints}");
        }
    }
    ExitCode::SUCCESS
}

fn submit_result(url: &str, name: &str, code: &str, result: GradeResult, only_if_changed: bool) {
    let submission = submit::Submission { workshop: code.to_string(), learner: name.to_string(), result };
    let outcome = if only_if_changed {
        submit::submit_if_changed(url, &submission, &state_dir().join("last-submission"))
    } else {
        submit::submit(url, &submission).map(|()| true)
    };
    match outcome {
        Ok(true) => eprintln!("submitted to the scoreboard as `{name}`"),
        Ok(false) => {}
        Err(error) => eprintln!("warning: not submitted ({error}); grading is unaffected"),
    }
}
