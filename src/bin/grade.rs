//! `cargo grade`: grades the attempts in `exercises/` and prints a report card per
//! exercise and level, with the minimal counterexample and a hint for the first
//! failure. Every case runs in its own child process with a deadline, so an attempt
//! that hangs, crashes or runs out of memory fails that case and nothing else.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use harness::isolation::serve_child_if_requested;
use harness::report::{render, run_all};
use harness::Case;

#[derive(Parser, Debug)]
#[command(name = "cargo grade", about = "Grade your attempts (exercises/) against each exercise's contract")]
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
}

/// Every case of both targets, so a child can serve any of them.
fn all_cases() -> Vec<Case> {
    let attempt = exercises::cases().into_iter().map(|c| c.prefixed("attempt"));
    let reference = solutions::cases().into_iter().map(|c| c.prefixed("reference"));
    attempt.chain(reference).collect()
}

fn main() -> ExitCode {
    let cases = all_cases();
    serve_child_if_requested(&cases);
    let args = Args::parse();

    let target = if args.reference { "reference::" } else { "attempt::" };
    let known: Vec<&str> = {
        let mut names: Vec<&str> = cases.iter().map(|c| c.exercise).collect();
        names.dedup();
        names
    };
    if let Some(exercise) = &args.exercise {
        if !known.contains(&exercise.as_str()) {
            eprintln!("error: no exercise named `{exercise}`; exercises: {}", known.join(", "));
            return ExitCode::from(2);
        }
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
    let graded = run_all(&selected, jobs, |g| {
        eprint!("{}", if g.outcome.passed() { "." } else { "x" });
        let _ = std::io::stderr().flush();
    });
    eprintln!();
    print!("{}", render(&graded));
    if args.check && !graded.iter().all(|g| g.outcome.passed()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
