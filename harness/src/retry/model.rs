//! The model of the retry exercise: the ceiling and the jitter mapping in exact
//! integer nanoseconds, the ops (one scripted attempt each) and outputs (what the
//! retrier does next) of a graded call, and the [`Spec`] the replays run.

use std::fmt;
use std::time::Duration;

use super::contract::{splitmix, Fault, RetryError, RetryPolicy, GOLDEN, MAX_DELAY};
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// The ceiling before attempt n+1: `min(cap, base·2ⁿ, MAX_DELAY)` in nanoseconds,
/// saturating (exact in `u128`: `base` is below 2^94 ns, so `base·2ⁿ` overflows only
/// past the cap anyway).
pub fn ceiling_nanos(policy: &RetryPolicy, n: u32) -> u64 {
    let base = policy.base.as_nanos();
    let grown = match 1u128.checked_shl(n) {
        Some(factor) => base.saturating_mul(factor),
        None if base == 0 => 0,
        None => u128::MAX,
    };
    let ceiling = grown.min(policy.cap.as_nanos()).min(MAX_DELAY.as_nanos());
    u64::try_from(ceiling).expect("at most MAX_DELAY")
}

/// Lemire's multiply-shift: draw `x` to a delay uniform in `[0, ceiling]` nanoseconds.
pub fn jitter_nanos(x: u64, ceiling: u64) -> u64 {
    ((u128::from(x) * (u128::from(ceiling) + 1)) >> 64) as u64
}

/// Where a graded retrier's random numbers come from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Draws {
    /// [`SeededRandom`](super::SeededRandom) with this seed.
    Seeded(u64),
    /// These values, in a cycle: extremes (0, u64::MAX) a seeded stream never shows.
    Cycle(Vec<u64>),
}

impl Draws {
    /// Draw number `i` (from 0).
    pub fn nth(&self, i: u64) -> u64 {
        match self {
            Draws::Seeded(seed) => splitmix(seed.wrapping_add(GOLDEN.wrapping_mul(i + 1))),
            Draws::Cycle(values) => values[(i % values.len() as u64) as usize],
        }
    }
}

impl fmt::Debug for Draws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Draws::Seeded(seed) => write!(f, "SeededRandom::new({seed})"),
            Draws::Cycle(values) => {
                let shown: Vec<String> = values.iter().map(|v| format!("{v:#x}")).collect();
                write!(f, "draws [{}] in a cycle", shown.join(", "))
            }
        }
    }
}

/// A graded call: the policy and the random source; the timer is virtual, at t=0.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Config {
    pub policy: RetryPolicy,
    pub draws: Draws,
}

/// A policy as counterexamples show it: `base 100ms, cap 1s, max_attempts 4, budget 2s`
/// (a budget of 584 years or more, which never runs out from t=0, reads `none`).
pub(super) fn describe(p: &RetryPolicy) -> String {
    let budget = if p.budget >= MAX_DELAY { "none".to_string() } else { format!("{:?}", p.budget) };
    format!("base {:?}, cap {:?}, max_attempts {}, budget {budget}", p.base, p.cap, p.max_attempts)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retrier = Retrier::new({}; {:?}), timer at t=0; run(op) starts attempt 0 at t=0",
            describe(&self.policy),
            self.draws
        )
    }
}

/// What a scripted attempt returns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Ok,
    Transient,
    Permanent,
    Throttled(Duration),
}

/// One attempt of the call: it takes `takes` of timer time, then returns `kind` (the
/// value or error is the attempt's number, from 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Op {
    pub kind: Kind,
    pub takes: Duration,
}

impl Op {
    /// What attempt number `index` returns.
    pub fn result(&self, index: u32) -> Result<u32, Fault<u32>> {
        match self.kind {
            Kind::Ok => Ok(index),
            Kind::Transient => Err(Fault::Transient(index)),
            Kind::Permanent => Err(Fault::Permanent(index)),
            Kind::Throttled(retry_after) => Err(Fault::Throttled { error: index, retry_after }),
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Ok => "Ok".to_string(),
            Kind::Transient => "Transient".to_string(),
            Kind::Permanent => "Permanent".to_string(),
            Kind::Throttled(d) => format!("Throttled(retry_after {d:?})"),
        };
        if self.takes.is_zero() {
            write!(f, "the attempt returns {kind}")
        } else {
            write!(f, "the attempt takes {:?}, returns {kind}", self.takes)
        }
    }
}

/// What the retrier did after an attempt: the non-zero sleeps it requested (in order),
/// then either the next attempt or its return value.
#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    Retried { sleeps: Vec<Duration> },
    Returned { sleeps: Vec<Duration>, result: Result<u32, RetryError<u32>> },
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Output::Retried { sleeps } | Output::Returned { sleeps, .. }) = self;
        for sleep in sleeps {
            write!(f, "sleep({:?} = {}ns), ", sleep, sleep.as_nanos())?;
        }
        match self {
            Output::Retried { .. } => write!(f, "next attempt"),
            Output::Returned { result, .. } => write!(f, "returns {result:?}"),
        }
    }
}

/// The model: the time, the calls made, the draws taken, and whether `run` returned.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Model {
    config: Config,
    deadline: Timestamp,
    now: Timestamp,
    attempts: u32,
    /// Draws the random stream has given before (earlier calls on the same retrier too).
    pub(super) draws_taken: u64,
    pub(super) returned: bool,
}

pub(super) struct RetrySpec;

impl Spec for RetrySpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &Config) -> Model {
        let start = Timestamp::ZERO;
        Model {
            config: config.clone(),
            deadline: start + config.policy.budget,
            now: start,
            attempts: 0,
            draws_taken: 0,
            returned: false,
        }
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        let index = model.attempts;
        model.now = model.now.advanced(op.takes);
        model.attempts += 1;
        let attempts = model.attempts;
        let returned = |model: &mut Model, result| {
            model.returned = true;
            Output::Returned { sleeps: Vec::new(), result }
        };
        let (last, floor) = match op.result(index) {
            Ok(value) => return returned(model, Ok(value)),
            Err(Fault::Permanent(error)) => return returned(model, Err(RetryError::Permanent { error, attempts })),
            Err(Fault::Transient(error)) => (error, Duration::ZERO),
            Err(Fault::Throttled { error, retry_after }) => (error, retry_after),
        };
        if attempts >= model.config.policy.max_attempts {
            return returned(model, Err(RetryError::AttemptsExhausted { last, attempts }));
        }
        let x = model.config.draws.nth(model.draws_taken);
        model.draws_taken += 1;
        let ceiling = ceiling_nanos(&model.config.policy, attempts - 1);
        let delay = Duration::from_nanos(jitter_nanos(x, ceiling)).max(floor);
        if model.now + delay > model.deadline {
            return returned(model, Err(RetryError::BudgetExhausted { last, attempts }));
        }
        model.now = model.now.advanced(delay);
        Output::Retried { sleeps: if delay.is_zero() { Vec::new() } else { vec![delay] } }
    }

    fn hint(_: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        use Output::{Retried, Returned};
        Some(match (expected, actual) {
            (Retried { sleeps: e }, Retried { sleeps: a }) if e.len() == 1 && a.len() == 1 => {
                "The delay before attempt n+1 is exact: one draw x from the injected random source, the ceiling \
                 c = min(cap, base·2ⁿ, MAX_DELAY) with attempts numbered from 0 (saturating, never overflowing), and \
                 delay = (x · (c + 1)) >> 64 computed in 128 bits, so both 0 and c itself are possible. A server's \
                 retry_after is a floor: max(jittered, retry_after), still one draw."
            }
            (Retried { .. }, Retried { .. }) => {
                "Between two attempts the retrier sleeps once, exactly the drawn delay, through the injected timer (a zero \
                 delay may skip the sleep); nothing else sleeps."
            }
            (Returned { result: Ok(_), .. }, _) | (_, Returned { result: Ok(_), .. }) => {
                "A successful attempt's value is returned at once; the operation runs until it succeeds, fails \
                 permanently, or the attempts or the budget run out."
            }
            (Returned { result: Err(RetryError::Permanent { .. }), .. }, _) => {
                "A permanent fault is returned at once, with the number of calls made: never retried, no draw, no sleep."
            }
            (Returned { result: Err(RetryError::AttemptsExhausted { .. }), .. }, _) => {
                "max_attempts counts calls of the operation, the first one included: after call number max_attempts fails \
                 retryably, run returns AttemptsExhausted with the last error, without drawing or sleeping."
            }
            (Returned { result: Err(RetryError::BudgetExhausted { .. }), .. }, _) => {
                "The budget is a deadline, start + budget, with start read before the first attempt: a retry whose delay \
                 would end past it is not waited for; run returns BudgetExhausted at once with the last error (one that \
                 ends exactly at the deadline still runs). The attempts' own time counts."
            }
            (Retried { .. }, _) => {
                "This retry is within every limit: the call count is below max_attempts, and now + delay is at most the \
                 deadline (start + budget, ending exactly at it is allowed). The error is retryable (transient or throttled)."
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base: Duration, cap: Duration) -> RetryPolicy {
        RetryPolicy { base, cap, max_attempts: 10, budget: Duration::MAX }
    }

    #[test]
    fn the_ceiling_doubles_then_saturates_without_overflow() {
        let p = policy(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u64> = (0..6).map(|n| ceiling_nanos(&p, n)).collect();
        assert_eq!(ceilings, [100_000_000, 200_000_000, 400_000_000, 800_000_000, 1_000_000_000, 1_000_000_000]);
        assert_eq!(ceiling_nanos(&p, u32::MAX), 1_000_000_000);
        let huge = policy(Duration::MAX, Duration::MAX);
        assert_eq!(ceiling_nanos(&huge, 0), u64::MAX);
        assert_eq!(ceiling_nanos(&huge, u32::MAX), u64::MAX);
        let zero = policy(Duration::ZERO, Duration::ZERO);
        assert_eq!(ceiling_nanos(&zero, 200), 0);
        assert_eq!(ceiling_nanos(&policy(Duration::from_nanos(1), Duration::MAX), 63), 1 << 63);
        assert_eq!(ceiling_nanos(&policy(Duration::from_nanos(1), Duration::MAX), 64), u64::MAX);
    }

    #[test]
    fn the_mapping_covers_both_ends() {
        assert_eq!(jitter_nanos(0, 1000), 0);
        assert_eq!(jitter_nanos(u64::MAX, 1000), 1000);
        assert_eq!(jitter_nanos(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(jitter_nanos(12345, u64::MAX), 12345);
        assert_eq!(jitter_nanos(u64::MAX, 0), 0);
    }

    #[test]
    fn seeded_draws_are_the_seeded_random_stream() {
        use super::super::contract::{RandomSource, SeededRandom};
        let rng = SeededRandom::new(99);
        let draws = Draws::Seeded(99);
        for i in 0..50 {
            assert_eq!(rng.next_u64(), draws.nth(i));
        }
    }
}

#[cfg(test)]
mod worked_example {
    use super::*;

    /// The statement's worked example (exercises/statements/retry.md), replayed.
    #[test]
    fn the_statement_example_replays_on_the_model() {
        let ms = Duration::from_millis;
        let ns = Duration::from_nanos;
        let config = Config {
            policy: RetryPolicy { base: ms(100), cap: ms(1000), max_attempts: 6, budget: ms(1500) },
            draws: Draws::Seeded(7),
        };
        assert_eq!(config.draws.nth(0), 0x63cb_e1e4_5932_0dd7);
        let attempt = |kind| Op { kind, takes: ms(20) };
        let retried = |nanos| Output::Retried { sleeps: vec![ns(nanos)] };
        let steps = [
            (attempt(Kind::Transient), retried(38_982_975)),
            (attempt(Kind::Throttled(ms(300))), retried(300_000_000)),
            (attempt(Kind::Transient), retried(360_304_273)),
            (attempt(Kind::Transient), retried(466_344_235)),
            (
                attempt(Kind::Transient),
                Output::Returned { sleeps: vec![], result: Err(RetryError::BudgetExhausted { last: 4, attempts: 5 }) },
            ),
        ];
        let mut model = RetrySpec::model(&config);
        for (op, expected) in steps {
            assert_eq!(RetrySpec::step(&mut model, &op), expected, "{op:?}");
        }
        assert_eq!(model.now, Timestamp::from_nanos(1_265_631_483));
    }
}
