//! `cargo test` front end: each case becomes a libtest trial (so name filters,
//! `--list`, `--exact` work), and each trial runs its case isolated in a child process,
//! because libtest itself has no timeouts.

use libtest_mimic::{Arguments, Failed, Trial};

use crate::isolation::{run_isolated, serve_child_if_requested, Outcome};
use crate::redis_server;
use crate::suite::Case;

/// The trial for `case`, passing iff `expect` accepts the outcome (`Err` = why not).
///
/// A case that needs Redis, where there is none and `CI` is not `true`, becomes an
/// ignored trial (libtest cannot skip at run time) and a banner says so on stderr.
pub fn trial(case: Case, expect: impl Fn(&Outcome) -> Result<(), String> + Send + 'static) -> Trial {
    let name = case.id.clone();
    let skip = case.needs_redis && !redis_server::required() && redis_server::availability().is_err();
    Trial::test(name, move || {
        let outcome = run_isolated(&case);
        expect(&outcome).map_err(|why| Failed::from(format!("{why}\nhint: {}", outcome.hint(&case))))
    })
    .with_ignored_flag(skip)
}

/// Says loudly, once, that the Redis cases among `trials` will not run here.
pub fn warn_if_redis_skipped(cases: &[Case]) {
    let needing = cases.iter().filter(|c| c.needs_redis).count();
    if needing == 0 || redis_server::required() {
        return;
    }
    if let Err(why) = redis_server::availability() {
        eprintln!("\n!!! {needing} Redis cases SKIPPED (shown as ignored): {why}\n");
    }
}

/// Passes iff the case passed.
pub fn must_pass(outcome: &Outcome) -> Result<(), String> {
    match outcome {
        Outcome::Passed => Ok(()),
        other => Err(format!("{}: {}", other.label(), other.details())),
    }
}

/// `main` of a test binary that grades `cases`: serves child runs, else runs trials.
pub fn grade_main(cases: impl Fn() -> Vec<Case>) -> ! {
    serve_child_if_requested(&cases());
    let cases = cases();
    warn_if_redis_skipped(&cases);
    let trials = cases.into_iter().map(|case| trial(case, must_pass)).collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}
