//! Sequential model checking: replay a sequence of operations against the attempt and
//! against a simple model side by side, and stop at the first difference.
//!
//! Sequences come from two sources, in this order:
//! 1. [`exhaustive`]: every short sequence, shortest first, so the first failure found
//!    is a shortest counterexample (shrinking only finds local minima);
//! 2. [`random`]: proptest with every `Config` field pinned, for longer sequences,
//!    so verdicts are reproducible and no regression files land in the learner's tree.

use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;

use proptest::strategy::Strategy;
use proptest::test_runner::{
    noop_result_cache, Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRng, TestRunner,
};

use crate::isolation::trying_quietly;
use crate::suite::{guarded, CaseError, CaseResult};

/// A sequential specification: a deterministic model that says what every operation
/// must return. The same model drives the linearizability checker.
pub trait Spec {
    /// What a system is built from (capacity, limits, ...). Its `Debug` is the first
    /// line of every counterexample, so make it read like the constructor call.
    type Config: Clone + Debug + Send + 'static;
    /// One call on the system; its `Debug` is one numbered step of a counterexample.
    type Op: Clone + Debug + Send + 'static;
    /// What a call returned.
    type Output: Clone + PartialEq + Debug;
    /// The model's state; `Eq + Hash` so the linearizability search can memoise it.
    type Model: Clone + Eq + Hash + Debug;

    fn model(config: &Self::Config) -> Self::Model;
    fn step(model: &mut Self::Model, op: &Self::Op) -> Self::Output;

    /// The hint for a call that returned `actual` where the model says `expected`: it
    /// names the behaviour that differed (shown instead of the case's hint). `None`
    /// keeps the case's hint.
    fn hint(_op: &Self::Op, _expected: &Self::Output, _actual: &Self::Output) -> Option<&'static str> {
        None
    }
}

/// A config and the operations applied to a fresh system built from it.
#[derive(Clone)]
pub struct Scenario<C, O> {
    pub config: C,
    pub ops: Vec<O>,
}

impl<C: Debug, O: Debug> Debug for Scenario<C, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}; ", self.config)?;
        f.debug_list().entries(&self.ops).finish()
    }
}

/// Builds a fresh system under test from `config` and replays `ops` on it and on the
/// model. `start` returns the function that applies one op to the system.
///
/// On the first difference the error holds every step so far, numbered, with
/// expected vs actual on the last one. A panic in the system is reported at its step;
/// `todo!()` anywhere means the whole case is "not implemented".
pub fn replay<S, D>(config: &S::Config, ops: &[S::Op], start: impl FnOnce(&S::Config) -> D) -> CaseResult
where
    S: Spec,
    D: FnMut(&S::Op) -> S::Output,
{
    trying_quietly(Box::new(Scenario { config: config.clone(), ops: ops.to_vec() }));
    crate::watchdog::step_started(0);
    let built = guarded(|| start(config));
    crate::watchdog::step_returned();
    let mut apply = built.map_err(|p| p.into_case_error(format!("{config:?}")))?;
    let mut model = S::model(config);
    // Outputs are kept and the transcript is written only on failure: exhaustive
    // enumeration replays hundreds of thousands of sequences that all pass.
    let mut outputs: Vec<S::Output> = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let step = index + 1;
        let expected = S::step(&mut model, op);
        crate::watchdog::step_started(step);
        let outcome = guarded(|| apply(op));
        crate::watchdog::step_returned();
        match outcome {
            Ok(actual) if actual == expected => outputs.push(actual),
            Ok(actual) => {
                let mut transcript = transcript(config, ops, &outputs);
                let _ = writeln!(
                    transcript,
                    "{step:>4}. {op:?} -> {actual:?}\n      expected {expected:?}   <-- first difference"
                );
                let report = format!("counterexample ({step} step{}):\n{transcript}", if step == 1 { "" } else { "s" });
                return Err(CaseError::failed(match S::hint(op, &expected, &actual) {
                    Some(hint) => crate::suite::with_hint(report, hint),
                    None => report,
                }));
            }
            Err(panic) => {
                let mut transcript = transcript(config, ops, &outputs);
                let _ = write!(transcript, "{step:>4}. {op:?} -> (panicked; expected {expected:?})");
                return Err(panic.into_case_error(format!("counterexample ({step} steps):\n{transcript}")));
            }
        }
    }
    Ok(())
}

/// The config, then each step that matched the model, numbered.
fn transcript<C: Debug, O: Debug, R: Debug>(config: &C, ops: &[O], outputs: &[R]) -> String {
    let mut text = format!("{config:?}\n");
    for (index, (op, output)) in ops.iter().zip(outputs).enumerate() {
        let _ = writeln!(text, "{:>4}. {op:?} -> {output:?}", index + 1);
    }
    text
}

/// Runs `check` on every sequence of 1..=`max_len` ops from `alphabet`, shortest first,
/// for each config, skipping sequences whose every prefix is not `admissible` (e.g. keys
/// used out of order, which only renames another sequence). Stops at the first error.
pub fn exhaustive<C, O: Clone>(
    configs: &[C],
    alphabet: impl Fn(&C) -> Vec<O>,
    max_len: usize,
    admissible: impl Fn(&[O]) -> bool,
    mut check: impl FnMut(&C, &[O]) -> CaseResult,
) -> CaseResult {
    for len in 1..=max_len {
        for config in configs {
            let letters = alphabet(config);
            let mut prefix = Vec::with_capacity(len);
            extend(&letters, len, &admissible, &mut prefix, &mut |ops| check(config, ops))?;
        }
    }
    Ok(())
}

fn extend<O: Clone>(
    letters: &[O],
    len: usize,
    admissible: &impl Fn(&[O]) -> bool,
    prefix: &mut Vec<O>,
    check: &mut impl FnMut(&[O]) -> CaseResult,
) -> CaseResult {
    if prefix.len() == len {
        return check(prefix);
    }
    for letter in letters {
        prefix.push(letter.clone());
        let result = if admissible(prefix) { extend(letters, len, admissible, prefix, check) } else { Ok(()) };
        prefix.pop();
        result?;
    }
    Ok(())
}

/// How much random search a case does. Every field is pinned: nothing read from the
/// environment can change a verdict.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub cases: u32,
    pub max_shrink_iters: u32,
    pub seed: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { cases: 256, max_shrink_iters: 2_000, seed: 0x6b61_7461 }
    }
}

fn pinned_config(budget: Budget) -> Config {
    Config {
        cases: budget.cases,
        max_local_rejects: 0,
        max_global_rejects: 0,
        max_flat_map_regens: 1_000_000,
        // No regression files written into the learner's tree.
        failure_persistence: None,
        source_file: None,
        test_name: None,
        // Shrinking stops on iterations, never on wall time: same verdict on any machine.
        max_shrink_time: 0,
        max_shrink_iters: budget.max_shrink_iters,
        max_default_size_range: 100,
        result_cache: noop_result_cache,
        verbose: 0,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(budget.seed),
        _non_exhaustive: (),
    }
}

/// Random search with proptest: draws inputs from `strategy`, runs `check` on each, and
/// on failure shrinks to a minimal input and returns `check`'s report for that input.
pub fn random<T: Debug + Clone>(
    strategy: impl Strategy<Value = T>,
    budget: Budget,
    check: impl Fn(&T) -> CaseResult,
) -> CaseResult {
    let seed = budget.seed.to_le_bytes().repeat(4);
    let mut runner = TestRunner::new_with_rng(pinned_config(budget), TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    match runner.run(&strategy, |input| check(&input).map_err(|e| TestCaseError::fail(format!("{e:?}")))) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(_, minimal)) => match check(&minimal) {
            Err(error) => Err(error),
            Ok(()) => {
                Err(CaseError::failed(format!("failed once, then passed on the same input (flaky?): {minimal:?}")))
            }
        },
        Err(TestError::Abort(reason)) => Err(CaseError::failed(format!("random search aborted: {reason}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that saturates at 2: just enough of a model to test the machinery.
    struct Saturating;
    #[derive(Clone, Debug)]
    enum Op {
        Incr,
        Read,
    }
    impl Spec for Saturating {
        type Config = u8;
        type Op = Op;
        type Output = Option<u8>;
        type Model = u8;
        fn model(_: &u8) -> u8 {
            0
        }
        fn step(model: &mut u8, op: &Op) -> Option<u8> {
            match op {
                Op::Incr => {
                    *model = (*model + 1).min(2);
                    None
                }
                Op::Read => Some(*model),
            }
        }
    }

    /// A buggy system: does not saturate.
    fn buggy(_: &u8) -> impl FnMut(&Op) -> Option<u8> {
        let mut n = 0u8;
        move |op| match op {
            Op::Incr => {
                n += 1;
                None
            }
            Op::Read => Some(n),
        }
    }

    #[test]
    fn exhaustive_finds_a_shortest_counterexample() {
        let mut seen = 0;
        let result = exhaustive(
            &[0u8],
            |_| vec![Op::Incr, Op::Read],
            6,
            |_| true,
            |c, ops| {
                seen += 1;
                replay::<Saturating, _>(c, ops, buggy)
            },
        );
        let Err(CaseError::Failed(report)) = result else { panic!("bug not found: {result:?}") };
        // Shortest: three increments then a read.
        assert!(report.starts_with("counterexample (4 steps)"), "{report}");
        assert!(report.contains("4. Read -> Some(3)"), "{report}");
        assert!(report.contains("expected Some(2)"), "{report}");
        assert!(seen > 4);
    }

    #[test]
    fn admissible_prunes_prefixes() {
        let mut lengths = Vec::new();
        let only_incr_first = |ops: &[Op]| matches!(ops[0], Op::Incr);
        exhaustive(
            &[0u8],
            |_| vec![Op::Incr, Op::Read],
            2,
            only_incr_first,
            |_, ops| {
                lengths.push(ops.len());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(lengths, vec![1, 2, 2]);
    }

    #[test]
    fn random_shrinks_to_a_minimal_input() {
        let strategy = proptest::collection::vec(
            proptest::prop_oneof![proptest::strategy::Just(Op::Incr), proptest::strategy::Just(Op::Read)],
            1..40,
        );
        let result = random(strategy, Budget::default(), |ops| replay::<Saturating, _>(&0, ops, buggy));
        let Err(CaseError::Failed(report)) = result else { panic!("bug not found: {result:?}") };
        assert!(report.starts_with("counterexample (4 steps)"), "not minimal: {report}");
    }

    #[test]
    fn correct_system_passes_and_panics_are_reported_at_their_step() {
        let correct = |_: &u8| {
            let mut model = 0u8;
            move |op: &Op| Saturating::step(&mut model, op)
        };
        assert_eq!(replay::<Saturating, _>(&0, &[Op::Incr, Op::Incr, Op::Incr, Op::Read], correct), Ok(()));

        crate::suite::install_quiet_panic_hook();
        let panicky = |_: &u8| |op: &Op| if matches!(op, Op::Read) { panic!("bad read") } else { None };
        let Err(CaseError::Failed(report)) = replay::<Saturating, _>(&0, &[Op::Incr, Op::Read], panicky) else {
            panic!("panic not reported")
        };
        assert!(report.contains("2. Read -> (panicked; expected Some(1))"), "{report}");
        assert!(report.contains("bad read"), "{report}");
    }
}
