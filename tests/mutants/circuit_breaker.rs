//! Buggy circuit breakers that the suite must reject: one plain breaker (a `Mutex`
//! around the state machine) and its async wrapper, with every bug a named switch.
//! `Flawed<NONE>` / `FlawedAsync<NONE>` pass the whole suite; each bug must be rejected
//! by the case [`mutants`] names. Also lists what `tests/self_check.rs` runs for this
//! exercise ([`must_pass`]: the plain base and the correct attempts).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use harness::circuit_breaker::{
    factory, suite, validate, AsyncCircuitBreaker, BreakerConfig, CallError, CallPermit, CircuitBreaker, ConfigError,
    Rejected, State, TimerClock,
};
use harness::clock::{SharedClock, SharedTimer, Timestamp};
use harness::Case;

pub const NONE: u8 = 0;
/// Computes the rate before `min_calls` outcomes are in.
pub const RATE_BEFORE_MIN_CALLS: u8 = 1;
/// Opens when the rate is over the threshold (`>`), not at it.
pub const STRICT_THRESHOLD: u8 = 2;
/// Counts the cool-down from the window's first failure, not from the opening.
pub const COOL_DOWN_FROM_FIRST_FAILURE: u8 = 3;
/// Open never turns Half-open.
pub const OPEN_NEVER_ENDS: u8 = 4;
/// Half-open closes on the first successful probe.
pub const CLOSES_ON_FIRST_SUCCESS: u8 = 5;
/// Half-open admits every call.
pub const HALF_OPEN_UNLIMITED: u8 = 6;
/// Outcomes of permits from before a state change are counted.
pub const LATE_OUTCOMES_COUNTED: u8 = 7;
/// A dropped probe keeps its slot.
pub const DROP_KEEPS_SLOT: u8 = 8;
/// Checks the threshold only after a failure.
pub const OPENS_ONLY_ON_FAILURE: u8 = 9;
/// `retry_after` is the whole cool-down, not what is left of it.
pub const RETRY_AFTER_WHOLE_COOL_DOWN: u8 = 10;
/// `new` accepts `min_calls` above the window.
pub const MIN_CALLS_UNCHECKED: u8 = 11;
/// Half-open only once the clock is past `opened_at + cool_down`.
pub const HALF_OPEN_AFTER_DEADLINE: u8 = 12;
/// The window never drops its oldest outcome.
pub const WINDOW_NEVER_EVICTS: u8 = 13;
/// When full, the window drops the outcome just added.
pub const EVICTS_NEWEST: u8 = 14;
/// Closing keeps the window of before the opening.
pub const WINDOW_KEPT_ON_CLOSE: u8 = 15;
/// Slow successes count as successes.
pub const SLOW_IGNORED: u8 = 16;
/// A call taking exactly `slow_call` counts as slow.
pub const SLOW_INCLUSIVE: u8 = 17;
/// The running failure count is not decremented when a failure leaves the window.
pub const FAILURES_NEVER_DECREMENTED: u8 = 18;
/// Half-open checks the probe count, unlocks to read the clock, then increments.
pub const PROBE_CHECK_THEN_ACT: u8 = 19;
/// A record reads the clock before taking the lock.
pub const RECORD_CLOCK_BEFORE_LOCK: u8 = 20;
/// A timed-out call is reported but released, not counted as a failure.
pub const TIMEOUT_NOT_COUNTED: u8 = 21;
/// Polls the work once before asking for a permit ("start it early").
pub const POLLS_BEFORE_ACQUIRE: u8 = 22;
/// Awaits the work to the end, then reports a timeout if it took too long.
pub const TIMEOUT_AFTER_WORK: u8 = 23;
/// A call dropped by its caller counts as a failure.
pub const CANCEL_COUNTS_AS_FAILURE: u8 = 24;

enum Phase {
    Closed(VecDeque<bool>, u64),
    Open(Timestamp),
    HalfOpen { admitted: u32, succeeded: u32 },
}

struct Inner {
    phase: Phase,
    generation: u64,
    /// When the window's first failure happened (COOL_DOWN_FROM_FIRST_FAILURE only).
    first_failure: Option<Timestamp>,
    /// The window of before the opening (WINDOW_KEPT_ON_CLOSE only).
    kept: Option<(VecDeque<bool>, u64)>,
}

struct Shared {
    config: BreakerConfig,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Flawed<const BUG: u8> {
    shared: Arc<Shared>,
}

pub struct FlawedPermit<const BUG: u8> {
    shared: Arc<Shared>,
    generation: u64,
    acquired_at: Timestamp,
    done: bool,
}

impl Inner {
    fn change(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }

    fn settle<const BUG: u8>(&mut self, now: Timestamp) {
        if let Phase::Open(until) = self.phase {
            let passed = if BUG == HALF_OPEN_AFTER_DEADLINE { now > until } else { now >= until };
            if passed && BUG != OPEN_NEVER_ENDS {
                self.change(Phase::HalfOpen { admitted: 0, succeeded: 0 });
            }
        }
    }
}

impl<const BUG: u8> FlawedPermit<BUG> {
    fn finish(&mut self, outcome: Option<bool>, early_now: Timestamp) {
        self.done = true;
        let shared = &self.shared;
        let config = shared.config;
        let mut inner = shared.lock();
        if inner.generation != self.generation && BUG != LATE_OUTCOMES_COUNTED {
            return;
        }
        let now = if BUG == RECORD_CLOCK_BEFORE_LOCK { early_now } else { shared.clock.now() };
        let Some(failed) = outcome else {
            if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
                if BUG != DROP_KEEPS_SLOT {
                    *admitted = admitted.saturating_sub(1);
                }
            }
            return;
        };
        let took = now.saturating_duration_since(self.acquired_at);
        let slow = match BUG {
            SLOW_IGNORED => false,
            SLOW_INCLUSIVE => took >= config.slow_call,
            _ => took > config.slow_call,
        };
        let failed = failed || slow;
        let opened_at = if BUG == COOL_DOWN_FROM_FIRST_FAILURE { inner.first_failure.unwrap_or(now) } else { now };
        let reopen = Phase::Open(opened_at + config.cool_down);
        if failed && inner.first_failure.is_none() {
            inner.first_failure = Some(now);
        }
        let mut opens = false;
        match &mut inner.phase {
            Phase::Closed(window, failures) => {
                window.push_back(failed);
                *failures += u64::from(failed);
                if window.len() > config.window as usize && BUG != WINDOW_NEVER_EVICTS {
                    let gone = if BUG == EVICTS_NEWEST { window.pop_back() } else { window.pop_front() };
                    if BUG != FAILURES_NEVER_DECREMENTED {
                        *failures -= u64::from(gone.unwrap_or(false));
                    }
                }
                let calls = window.len() as u64;
                let enough = BUG == RATE_BEFORE_MIN_CALLS || calls >= u64::from(config.min_calls);
                let (lhs, rhs) = (*failures * 100, u64::from(config.failure_rate_percent) * calls);
                let over = if BUG == STRICT_THRESHOLD { lhs > rhs } else { lhs >= rhs };
                opens = enough && over && (failed || BUG != OPENS_ONLY_ON_FAILURE);
                if opens && BUG == WINDOW_KEPT_ON_CLOSE {
                    inner.kept = Some((window.clone(), *failures));
                }
            }
            Phase::HalfOpen { .. } if failed => opens = true,
            Phase::HalfOpen { succeeded, .. } => {
                *succeeded += 1;
                if *succeeded == config.probes || BUG == CLOSES_ON_FIRST_SUCCESS {
                    let (window, failures) = inner.kept.take().unwrap_or_default();
                    inner.first_failure = None;
                    inner.change(Phase::Closed(window, failures));
                }
            }
            Phase::Open(_) => {}
        }
        if opens {
            inner.first_failure = None;
            inner.change(reopen);
        }
    }
}

impl<const BUG: u8> Drop for FlawedPermit<BUG> {
    fn drop(&mut self) {
        if !self.done {
            let early = self.shared.clock.now();
            self.finish(None, early);
        }
    }
}

impl<const BUG: u8> CallPermit for FlawedPermit<BUG> {
    fn record_success(mut self) {
        let early = self.shared.clock.now();
        self.finish(Some(false), early);
    }
    fn record_failure(mut self) {
        let early = self.shared.clock.now();
        self.finish(Some(true), early);
    }
}

impl<const BUG: u8> CircuitBreaker for Flawed<BUG> {
    type Permit = FlawedPermit<BUG>;

    fn new(config: BreakerConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        if BUG == MIN_CALLS_UNCHECKED && config.min_calls > config.window {
            validate(&BreakerConfig { min_calls: config.window, ..config })?;
        } else {
            validate(&config)?;
        }
        let inner = Inner { phase: Phase::Closed(VecDeque::new(), 0), generation: 0, first_failure: None, kept: None };
        Ok(Flawed { shared: Arc::new(Shared { config, clock, inner: Mutex::new(inner) }) })
    }

    fn try_acquire(&self) -> Result<FlawedPermit<BUG>, Rejected> {
        let shared = &self.shared;
        let mut inner = shared.lock();
        let now = shared.clock.now();
        inner.settle::<BUG>(now);
        let generation = inner.generation;
        match &mut inner.phase {
            Phase::Closed(..) => {}
            Phase::Open(until) => {
                let retry_after = if BUG == RETRY_AFTER_WHOLE_COOL_DOWN {
                    shared.config.cool_down
                } else {
                    until.saturating_duration_since(now)
                };
                return Err(Rejected::Open { retry_after });
            }
            Phase::HalfOpen { admitted, .. } => {
                if *admitted >= shared.config.probes && BUG != HALF_OPEN_UNLIMITED {
                    return Err(Rejected::ProbesBusy);
                }
                if BUG == PROBE_CHECK_THEN_ACT {
                    // Checked; now stamp the permit outside the lock, then count it.
                    drop(inner);
                    let stamped = shared.clock.now();
                    let mut inner = shared.lock();
                    if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
                        *admitted += 1;
                    }
                    return Ok(FlawedPermit {
                        shared: Arc::clone(shared),
                        generation,
                        acquired_at: stamped,
                        done: false,
                    });
                }
                *admitted += 1;
            }
        }
        Ok(FlawedPermit { shared: Arc::clone(shared), generation, acquired_at: now, done: false })
    }

    fn state(&self) -> State {
        let mut inner = self.shared.lock();
        inner.settle::<BUG>(self.shared.clock.now());
        match inner.phase {
            Phase::Closed(..) => State::Closed,
            Phase::Open(_) => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

pub struct FlawedAsync<const BUG: u8> {
    breaker: Flawed<BUG>,
    timeout: Duration,
    timer: SharedTimer,
}

/// Records a failure if dropped unrecorded (CANCEL_COUNTS_AS_FAILURE only).
struct FailOnDrop<const BUG: u8>(Option<FlawedPermit<BUG>>);

impl<const BUG: u8> Drop for FailOnDrop<BUG> {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take() {
            if BUG == CANCEL_COUNTS_AS_FAILURE {
                permit.record_failure();
            }
        }
    }
}

impl<const BUG: u8> AsyncCircuitBreaker for FlawedAsync<BUG> {
    fn new(config: BreakerConfig, timeout: Duration, timer: SharedTimer) -> Result<Self, ConfigError> {
        let breaker = Flawed::new(config, TimerClock::shared(timer.clone()))?;
        if timeout < Duration::from_millis(1) {
            return Err(ConfigError::TimeoutTooShort(timeout));
        }
        Ok(FlawedAsync { breaker, timeout, timer })
    }

    async fn call<T, E, F>(&self, work: F) -> Result<T, CallError<E>>
    where
        T: Send,
        E: Send,
        F: Future<Output = Result<T, E>> + Send,
    {
        let mut work = std::pin::pin!(work);
        let mut early = None;
        if BUG == POLLS_BEFORE_ACQUIRE {
            // "Get it going while we ask the breaker": one poll, whatever the answer.
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
            if let std::task::Poll::Ready(result) = first {
                early = Some(result);
            }
        }
        let permit = self.breaker.try_acquire().map_err(CallError::Rejected)?;
        let started = self.timer.now();
        let mut permit = FailOnDrop::<BUG>(Some(permit));
        let finished = if early.is_some() {
            early
        } else if BUG == TIMEOUT_AFTER_WORK {
            let result = work.await;
            if self.timer.now().saturating_duration_since(started) > self.timeout {
                None
            } else {
                Some(result)
            }
        } else {
            tokio::select! {
                biased;
                result = work => Some(result),
                () = self.timer.sleep(self.timeout) => None,
            }
        };
        let permit = permit.0.take().expect("taken once");
        match finished {
            Some(Ok(value)) => {
                permit.record_success();
                Ok(value)
            }
            Some(Err(e)) => {
                permit.record_failure();
                Err(CallError::Failed(e))
            }
            None => {
                if BUG == TIMEOUT_NOT_COUNTED {
                    drop(permit);
                } else {
                    permit.record_failure();
                }
                Err(CallError::Timeout)
            }
        }
    }

    fn state(&self) -> State {
        self.breaker.state()
    }
}

/// The suite run on bug `BUG` (a switch of the plain base).
fn flawed<const BUG: u8>() -> Vec<Case> {
    suite(factory::<Flawed<BUG>, FlawedAsync<BUG>>())
}

macro_rules! mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("circuit_breaker::", stringify!($bug)),
            suite: flawed::<$bug>(),
            rejected_by: $case,
        }
    };
}

macro_rules! attempt {
    ($ty:ident, $bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("circuit_breaker::", stringify!($ty), "::", stringify!($bug)),
            suite: super::circuit_breaker_attempts::suite_of::<{ super::circuit_breaker_attempts::$bug }>(
                super::circuit_breaker_attempts::Design::$ty,
            ),
            rejected_by: $case,
        }
    };
}

/// Each bug and the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    vec![
        mutant!(RATE_BEFORE_MIN_CALLS, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(STRICT_THRESHOLD, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(COOL_DOWN_FROM_FIRST_FAILURE, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(OPEN_NEVER_ENDS, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(CLOSES_ON_FIRST_SUCCESS, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(HALF_OPEN_UNLIMITED, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(LATE_OUTCOMES_COUNTED, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(DROP_KEEPS_SLOT, "circuit_breaker::l1_state_machine::edges"),
        mutant!(OPENS_ONLY_ON_FAILURE, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(RETRY_AFTER_WHOLE_COOL_DOWN, "circuit_breaker::l1_state_machine::transitions"),
        mutant!(MIN_CALLS_UNCHECKED, "circuit_breaker::l1_state_machine::config_errors"),
        mutant!(HALF_OPEN_AFTER_DEADLINE, "circuit_breaker::l1_state_machine::edges"),
        mutant!(WINDOW_KEPT_ON_CLOSE, "circuit_breaker::l2_sliding_window::short_sequences"),
        mutant!(WINDOW_NEVER_EVICTS, "circuit_breaker::l2_sliding_window::short_sequences"),
        mutant!(EVICTS_NEWEST, "circuit_breaker::l2_sliding_window::short_sequences"),
        mutant!(SLOW_IGNORED, "circuit_breaker::l2_sliding_window::short_sequences"),
        mutant!(SLOW_INCLUSIVE, "circuit_breaker::l2_sliding_window::short_sequences"),
        mutant!(FAILURES_NEVER_DECREMENTED, "circuit_breaker::l2_sliding_window::short_sequences"),
        mutant!(PROBE_CHECK_THEN_ACT, "circuit_breaker::l3_threads::exact_probes"),
        mutant!(RECORD_CLOCK_BEFORE_LOCK, "circuit_breaker::l3_threads::linearizable"),
        mutant!(TIMEOUT_NOT_COUNTED, "circuit_breaker::l4_async_calls::call_sequences"),
        mutant!(POLLS_BEFORE_ACQUIRE, "circuit_breaker::l4_async_calls::call_sequences"),
        mutant!(TIMEOUT_AFTER_WORK, "circuit_breaker::l4_async_calls::timeout_cancels_work"),
        mutant!(CANCEL_COUNTS_AS_FAILURE, "circuit_breaker::l4_async_calls::call_sequences"),
        attempt!(Ring, RING_NOT_CLEARED_ON_CLOSE, "circuit_breaker::l2_sliding_window::short_sequences"),
        attempt!(Ring, ROUNDED_RATE, "circuit_breaker::l2_sliding_window::short_sequences"),
        attempt!(Ring, ATOMIC_PROBE_COUNTER, "circuit_breaker::l3_threads::exact_probes"),
    ]
}

/// What must pass every case: the plain base, and the correct attempts of other designs
/// (a red verdict on any of them is a grader bug), each with its id prefix.
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    use super::circuit_breaker_attempts::{suite_of, Design, NONE as OK};
    vec![
        ("mutant_base".to_string(), flawed::<NONE>()),
        ("correct_attempt::circuit_breaker_ring".to_string(), suite_of::<OK>(Design::Ring)),
    ]
}
