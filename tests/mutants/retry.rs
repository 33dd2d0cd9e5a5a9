//! Buggy retriers that the suite must reject: one plain async loop with every bug a
//! named switch. `Flawed<NONE>` passes the whole suite; `Flawed<B>` must be rejected by
//! the case its entry in [`mutants`] names. [`must_pass`] lists the plain base and the
//! correct candidate-style designs of `retry_attempts.rs`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::clock::SharedTimer;
use harness::retry::{factory, suite, Fault, PolicyError, Retry, RetryError, RetryPolicy, SharedRandom, MAX_DELAY};
use harness::Case;

pub const NONE: u8 = 0;
// Level 1: the schedule.
/// Waits the whole ceiling every time (plain exponential backoff, no jitter).
pub const NO_JITTER: u8 = 1;
/// `x % (c + 1)`: the textbook "random below n", not the contract's mapping (and biased).
pub const MODULO_MAPPING: u8 = 2;
/// `(x · c) >> 64`: uniform in `[0, c)`, the ceiling itself never drawn.
pub const EXCLUSIVE_CEILING: u8 = 3;
/// Numbers attempts from 1: the first retry's ceiling is `2·base`.
pub const EXPONENT_OFF_BY_ONE: u8 = 4;
/// `base_ns << n` in u64: `checked_shl` only fails for n ≥ 64, high bits drop silently.
pub const SHIFT_TRUNCATES: u8 = 5;
/// `base * 2u32.pow(n)`: panics on overflow once n reaches 32.
pub const POW_OVERFLOWS: u8 = 6;
/// Forgets the cap: `base·2ⁿ` grows to MAX_DELAY.
pub const IGNORES_CAP: u8 = 7;
// Level 2: classification and budgets.
pub const PERMANENT_RETRIED: u8 = 8;
/// Treats a throttled fault as a plain transient one: the server's delay is ignored.
pub const FLOOR_IGNORED: u8 = 9;
/// `jitter + retry_after` instead of `max(jitter, retry_after)`.
pub const FLOOR_ADDED: u8 = 10;
/// Skips the draw when the server's floor is at least the ceiling ("it would lose anyway").
pub const NO_DRAW_WHEN_FLOOR_WINS: u8 = 11;
/// Sleeps until the deadline, then gives up, instead of giving up at once.
pub const SLEEPS_THEN_GIVES_UP: u8 = 12;
/// Charges only the delays to the budget: the attempts' own time is free.
pub const BUDGET_FROM_DELAYS: u8 = 13;
/// `max_attempts` counted as retries: one call too many.
pub const RETRIES_COUNTED: u8 = 14;
/// Returns the first error instead of the last.
pub const FIRST_ERROR: u8 = 15;
/// Gives up when the delay ends exactly at the deadline.
pub const DEADLINE_EXCLUSIVE: u8 = 16;
/// Accepts `base > cap`.
pub const ACCEPTS_BASE_ABOVE_CAP: u8 = 17;
// Level 3: the distribution.
/// Maps the draw through an f64: `x as f64 · (c + 1) / 2^64`, 53 bits of precision.
pub const FLOAT_JITTER: u8 = 18;
/// "Equal jitter": half the ceiling plus a random half.
pub const EQUAL_JITTER: u8 = 19;
/// Jitters the first retry only; later ones wait their whole ceiling.
pub const JITTER_FIRST_RETRY_ONLY: u8 = 20;
/// Keeps delays in i64 nanoseconds: ceilings are cut at 2^63 - 1.
pub const CAPS_AT_I64: u8 = 21;
// Level 4: many callers.
/// Draws one schedule on the first call and reuses it for every call: callers in lockstep.
pub const SHARED_SCHEDULE: u8 = 22;
/// Runs the loop in a spawned task and awaits its handle: dropping the handle detaches it.
pub const SPAWNS_LOOP: u8 = 23;
/// Sleeps in a spawned task (awaiting a channel): a dropped call leaves its sleep running.
pub const SPAWNS_SLEEP: u8 = 24;
// Level 1 again: the far end of the domain (the contract's "no overflow for any n").
/// `1u128.wrapping_shl(n)`: the shift count wraps at 128, so retry 128 starts over at `base`.
pub const SHIFT_WRAPS_AT_128: u8 = 25;
/// `min(cap, base·2ⁿ) as u64` without `MAX_DELAY`: a cap past 584 years is cut to its low 64 bits.
pub const MAX_DELAY_FORGOTTEN: u8 = 26;
/// `1u128.checked_shl(n).map_or(u128::MAX, |f| base * f)`: once 2ⁿ overflows (n ≥ 128)
/// the ceiling jumps to the cap, even for base 0, whose every ceiling is 0.
pub const BASE_ZERO_OVERFLOWS_TO_CAP: u8 = 27;

/// The state a retrier shares between calls (its `Arc` clones outlive `run` when spawned).
struct Shared {
    policy: RetryPolicy,
    timer: SharedTimer,
    rng: SharedRandom,
    /// SHARED_SCHEDULE only: the delays drawn by the first call.
    schedule: Mutex<Vec<Duration>>,
}

pub struct Flawed<const BUG: u8> {
    shared: Arc<Shared>,
}

impl Shared {
    fn ceiling<const BUG: u8>(&self, n: u32) -> u64 {
        let (base, cap) = (self.policy.base.as_nanos(), self.policy.cap.as_nanos());
        let n = if BUG == EXPONENT_OFF_BY_ONE { n.saturating_add(1) } else { n };
        let grown = match BUG {
            SHIFT_TRUNCATES => match (base as u64).checked_shl(n) {
                Some(v) => u128::from(v),
                None => u128::MAX,
            },
            POW_OVERFLOWS => self.policy.base.saturating_mul(2u32.pow(n)).as_nanos(),
            SHIFT_WRAPS_AT_128 => base.saturating_mul(1u128.wrapping_shl(n)),
            BASE_ZERO_OVERFLOWS_TO_CAP => 1u128.checked_shl(n).map_or(u128::MAX, |factor| base.saturating_mul(factor)),
            _ => match 1u128.checked_shl(n) {
                Some(factor) => base.saturating_mul(factor),
                None if base == 0 => 0,
                None => u128::MAX,
            },
        };
        let cap = if BUG == IGNORES_CAP { u128::MAX } else { cap };
        let limit = match BUG {
            CAPS_AT_I64 => i64::MAX as u128,
            MAX_DELAY_FORGOTTEN => u128::MAX,
            _ => MAX_DELAY.as_nanos(),
        };
        grown.min(cap).min(limit) as u64
    }

    fn delay<const BUG: u8>(&self, retry: u32, floor: Duration) -> Duration {
        let c = self.ceiling::<BUG>(retry);
        if BUG == NO_DRAW_WHEN_FLOOR_WINS && floor >= Duration::from_nanos(c) {
            return floor;
        }
        if BUG == NO_JITTER || (BUG == JITTER_FIRST_RETRY_ONLY && retry > 0) {
            return Duration::from_nanos(c).max(floor);
        }
        let x = self.rng.next_u64();
        let lemire = |c: u64| ((u128::from(x) * (u128::from(c) + 1)) >> 64) as u64;
        let nanos = match BUG {
            MODULO_MAPPING => x.checked_rem(c.wrapping_add(1)).unwrap_or(x),
            EXCLUSIVE_CEILING => ((u128::from(x) * u128::from(c)) >> 64) as u64,
            FLOAT_JITTER => ((x as f64) * (c as f64 + 1.0) / 18_446_744_073_709_551_616.0).min(c as f64) as u64,
            EQUAL_JITTER => c / 2 + lemire(c - c / 2),
            _ => lemire(c),
        };
        let jitter = Duration::from_nanos(nanos);
        if BUG == FLOOR_ADDED {
            jitter + floor
        } else {
            jitter.max(floor)
        }
    }

    async fn sleep<const BUG: u8>(&self, d: Duration) {
        if BUG == SPAWNS_SLEEP {
            let (done, wait) = tokio::sync::oneshot::channel();
            let sleep = self.timer.sleep(d);
            tokio::spawn(async move {
                sleep.await;
                let _ = done.send(());
            });
            let _ = wait.await;
        } else {
            self.timer.sleep(d).await;
        }
    }

    async fn run<const BUG: u8, T, E, F, Fut>(self: Arc<Self>, mut op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fault<E>>>,
    {
        let start = self.timer.now();
        let deadline = start + self.policy.budget;
        let mut slept = Duration::ZERO;
        let mut attempts: u32 = 0;
        let mut first = None;
        loop {
            let fault = match op().await {
                Ok(value) => return Ok(value),
                Err(fault) => fault,
            };
            attempts += 1;
            let (error, floor) = match fault {
                Fault::Permanent(error) if BUG != PERMANENT_RETRIED => {
                    return Err(RetryError::Permanent { error, attempts })
                }
                Fault::Permanent(error) | Fault::Transient(error) => (error, Duration::ZERO),
                Fault::Throttled { error, .. } if BUG == FLOOR_IGNORED => (error, Duration::ZERO),
                Fault::Throttled { error, retry_after } => (error, retry_after),
            };
            let last = match (BUG == FIRST_ERROR, first.take()) {
                (true, Some(first)) => first,
                _ => error,
            };
            // FIRST_ERROR keeps reporting the first error (E is not Clone: the first is
            // put back each time and the later ones dropped).
            let limit = if BUG == RETRIES_COUNTED {
                self.policy.max_attempts.saturating_add(1)
            } else {
                self.policy.max_attempts
            };
            if attempts >= limit {
                return Err(RetryError::AttemptsExhausted { last, attempts });
            }
            let delay = if BUG == SHARED_SCHEDULE {
                let mut schedule = self.schedule.lock().unwrap();
                let retry = (attempts - 1) as usize;
                if retry >= schedule.len() {
                    let d = self.delay::<BUG>(attempts - 1, Duration::ZERO);
                    schedule.push(d);
                }
                schedule[retry].max(floor)
            } else {
                self.delay::<BUG>(attempts - 1, floor)
            };
            let now = if BUG == BUDGET_FROM_DELAYS { start + slept } else { self.timer.now() };
            let late = if BUG == DEADLINE_EXCLUSIVE { now + delay >= deadline } else { now + delay > deadline };
            if late {
                if BUG == SLEEPS_THEN_GIVES_UP {
                    self.sleep::<BUG>(deadline.saturating_duration_since(now)).await;
                }
                return Err(RetryError::BudgetExhausted { last, attempts });
            }
            if BUG == FIRST_ERROR {
                first = Some(last);
            }
            self.sleep::<BUG>(delay).await;
            slept += delay;
        }
    }
}

impl<const BUG: u8> Retry for Flawed<BUG> {
    fn new(policy: RetryPolicy, timer: SharedTimer, rng: SharedRandom) -> Result<Self, PolicyError> {
        if policy.max_attempts == 0 {
            return Err(PolicyError::ZeroAttempts);
        }
        if policy.base > policy.cap && BUG != ACCEPTS_BASE_ABOVE_CAP {
            return Err(PolicyError::BaseAboveCap { base: policy.base, cap: policy.cap });
        }
        Ok(Flawed { shared: Arc::new(Shared { policy, timer, rng, schedule: Mutex::new(Vec::new()) }) })
    }

    fn run<T, E, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, RetryError<E>>> + Send
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fault<E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let shared = self.shared.clone();
        async move {
            if BUG == SPAWNS_LOOP {
                // "Run it in the background so a slow caller does not hold it up."
                match tokio::spawn(shared.run::<BUG, T, E, F, Fut>(op)).await {
                    Ok(result) => result,
                    Err(join) => std::panic::resume_unwind(join.into_panic()),
                }
            } else {
                shared.run::<BUG, T, E, F, Fut>(op).await
            }
        }
    }
}

macro_rules! mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("retry::", stringify!($bug)),
            suite: suite(factory::<Flawed<$bug>>()),
            rejected_by: concat!("retry::", $case),
        }
    };
}

macro_rules! attempt {
    ($ty:ident, $bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("retry::", stringify!($ty), "::", stringify!($bug)),
            suite: suite(factory::<super::retry_attempts::$ty<{ super::retry_attempts::$bug }>>()),
            rejected_by: concat!("retry::", $case),
        }
    };
}

/// Every bundled buggy retrier and the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    vec![
        mutant!(NO_JITTER, "l1_backoff_schedule::short_scripts"),
        mutant!(MODULO_MAPPING, "l1_backoff_schedule::short_scripts"),
        mutant!(EXCLUSIVE_CEILING, "l1_backoff_schedule::short_scripts"),
        mutant!(EXPONENT_OFF_BY_ONE, "l1_backoff_schedule::short_scripts"),
        mutant!(SHIFT_TRUNCATES, "l1_backoff_schedule::long_schedules"),
        mutant!(POW_OVERFLOWS, "l1_backoff_schedule::long_schedules"),
        mutant!(IGNORES_CAP, "l1_backoff_schedule::short_scripts"),
        mutant!(PERMANENT_RETRIED, "l2_faults_and_budgets::short_scripts"),
        mutant!(FLOOR_IGNORED, "l2_faults_and_budgets::short_scripts"),
        mutant!(FLOOR_ADDED, "l2_faults_and_budgets::short_scripts"),
        mutant!(NO_DRAW_WHEN_FLOOR_WINS, "l2_faults_and_budgets::edges"),
        mutant!(SLEEPS_THEN_GIVES_UP, "l2_faults_and_budgets::edges"),
        mutant!(BUDGET_FROM_DELAYS, "l2_faults_and_budgets::short_scripts"),
        mutant!(RETRIES_COUNTED, "l2_faults_and_budgets::short_scripts"),
        mutant!(FIRST_ERROR, "l2_faults_and_budgets::edges"),
        mutant!(DEADLINE_EXCLUSIVE, "l2_faults_and_budgets::edges"),
        mutant!(ACCEPTS_BASE_ABOVE_CAP, "l2_faults_and_budgets::config_validation"),
        mutant!(FLOAT_JITTER, "l3_statistics::whole_domain"),
        mutant!(EQUAL_JITTER, "l3_statistics::spread_per_retry"),
        mutant!(JITTER_FIRST_RETRY_ONLY, "l3_statistics::spread_per_retry"),
        mutant!(CAPS_AT_I64, "l3_statistics::whole_domain"),
        mutant!(SHARED_SCHEDULE, "l4_many_callers::retry_spike"),
        mutant!(SPAWNS_LOOP, "l4_many_callers::cancellation"),
        mutant!(SPAWNS_SLEEP, "l4_many_callers::cancellation"),
        mutant!(SHIFT_WRAPS_AT_128, "l1_backoff_schedule::long_schedules"),
        mutant!(MAX_DELAY_FORGOTTEN, "l1_backoff_schedule::long_schedules"),
        mutant!(BASE_ZERO_OVERFLOWS_TO_CAP, "l1_backoff_schedule::long_schedules"),
        attempt!(Stepper, DECORRELATED_JITTER, "l1_backoff_schedule::short_scripts"),
        attempt!(Stepper, DOUBLES_PAST_CAP, "l1_backoff_schedule::long_schedules"),
        attempt!(Stepper, DRAW_BEFORE_COUNT, "l2_faults_and_budgets::consecutive_calls"),
    ]
}

/// Suites that must pass every case: the plain base and correct designs of other shapes
/// (a red verdict on any of them is a grading bug), each with its id prefix.
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    use super::retry_attempts::{Stepper, NONE as OK};
    vec![
        ("mutant_base".to_string(), suite(factory::<Flawed<NONE>>())),
        ("correct_attempt::stepper".to_string(), suite(factory::<Stepper<OK>>())),
    ]
}
