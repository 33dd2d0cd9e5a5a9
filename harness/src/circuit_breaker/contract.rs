//! The contract of the circuit-breaker exercise: the traits a learner implements
//! ([`CircuitBreaker`] with its [`CallPermit`], and [`AsyncCircuitBreaker`] for level 4),
//! the types in their signatures and the bounds their docs refer to. These doc comments
//! ARE the contract.
//!
//! Where the issue left a choice open, the contract follows resilience4j's
//! `CircuitBreaker` (count-based sliding window, `failureRate >= threshold` once
//! `minimumNumberOfCalls` outcomes are in, `slowCallDurationThreshold` compared with
//! `>`, a permit released without an outcome not counted, Open → Half-open on the first
//! call after the wait), with two stated simplifications: a slow call simply counts as
//! a failure (no separate slow-call rate), and any failed probe reopens at once.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::clock::{Clock, SharedClock, SharedTimer, Timestamp};

/// The largest valid [`BreakerConfig::window`]: a breaker may preallocate its window
/// (resilience4j keeps a fixed ring of `window` slots), so the window is bounded.
pub const MAX_WINDOW: u32 = 1 << 20;

/// How a breaker is built. Every field is checked by [`validate`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BreakerConfig {
    /// N: the failure rate is computed over the last N counted outcomes (1..=[`MAX_WINDOW`]).
    pub window: u32,
    /// No rate is computed (the breaker cannot open) until the window holds at least
    /// this many outcomes (1..=window).
    pub min_calls: u32,
    /// The breaker opens when failures × 100 ≥ `failure_rate_percent` × outcomes (1..=100).
    pub failure_rate_percent: u32,
    /// A call taking strictly longer than this (acquire to record, on the breaker's
    /// clock) counts as a failure even if it reports success. `Duration::MAX`: never slow.
    pub slow_call: Duration,
    /// How long the breaker stays open: `try_acquire` is admitted again (as a probe) from
    /// `opened_at + cool_down` on, exactly. `Duration::MAX`: never.
    pub cool_down: Duration,
    /// How many trial calls Half-open admits (at least 1).
    pub probes: u32,
}

/// A duration in a counterexample: `Duration::MAX` reads as what it means.
pub(super) fn show(d: Duration) -> String {
    if d == Duration::MAX {
        "never".to_string()
    } else {
        format!("{d:?}")
    }
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "breaker = Breaker::new(window {}, min_calls {}, failure_rate {}%, slow_call > {}, cool_down {}, probes {}, clock)",
            self.window,
            self.min_calls,
            self.failure_rate_percent,
            show(self.slow_call),
            show(self.cool_down),
            self.probes
        )
    }
}

/// Why a [`BreakerConfig`] (or a call timeout) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    ZeroWindow,
    /// `window` above [`MAX_WINDOW`].
    WindowTooLarge(u32),
    ZeroMinCalls,
    MinCallsAboveWindow {
        min_calls: u32,
        window: u32,
    },
    /// `failure_rate_percent` must be 1..=100.
    ThresholdOutOfRange(u32),
    ZeroProbes,
    /// [`AsyncCircuitBreaker::new`]: the call timeout must be at least 1ms.
    TimeoutTooShort(Duration),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroWindow => write!(f, "the window must hold at least one outcome"),
            ConfigError::WindowTooLarge(w) => write!(f, "window {w} is above MAX_WINDOW ({MAX_WINDOW})"),
            ConfigError::ZeroMinCalls => write!(f, "min_calls must be at least 1"),
            ConfigError::MinCallsAboveWindow { min_calls, window } => {
                write!(f, "min_calls {min_calls} can never be reached in a window of {window}")
            }
            ConfigError::ThresholdOutOfRange(p) => write!(f, "failure_rate_percent {p} is not in 1..=100"),
            ConfigError::ZeroProbes => write!(f, "half-open must admit at least one probe"),
            ConfigError::TimeoutTooShort(d) => write!(f, "a call timeout of {d:?} is under 1ms"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks a config, in this order: window (zero, then above [`MAX_WINDOW`]), min_calls
/// (zero, then above the window), the threshold, probes. The first problem is the error.
/// Given to learners, like the error types.
pub fn validate(config: &BreakerConfig) -> Result<(), ConfigError> {
    if config.window == 0 {
        return Err(ConfigError::ZeroWindow);
    }
    if config.window > MAX_WINDOW {
        return Err(ConfigError::WindowTooLarge(config.window));
    }
    if config.min_calls == 0 {
        return Err(ConfigError::ZeroMinCalls);
    }
    if config.min_calls > config.window {
        return Err(ConfigError::MinCallsAboveWindow { min_calls: config.min_calls, window: config.window });
    }
    if !(1..=100).contains(&config.failure_rate_percent) {
        return Err(ConfigError::ThresholdOutOfRange(config.failure_rate_percent));
    }
    if config.probes == 0 {
        return Err(ConfigError::ZeroProbes);
    }
    Ok(())
}

/// The breaker's state, as [`CircuitBreaker::state`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// Why `try_acquire` refused a call. The caller must not run it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// Open: admitted again (as a probe) after `retry_after`, exactly (opened_at +
    /// cool_down − now).
    Open { retry_after: Duration },
    /// Half-open with every probe slot taken.
    ProbesBusy,
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Open { retry_after } => write!(f, "Open {{ retry_after: {retry_after:?} }}"),
            Rejected::ProbesBusy => write!(f, "ProbesBusy"),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Open { retry_after } => write!(f, "circuit open; retry after {retry_after:?}"),
            Rejected::ProbesBusy => write!(f, "circuit half-open and every probe slot is taken"),
        }
    }
}

impl std::error::Error for Rejected {}

/// The permission to make one call, handed out by [`CircuitBreaker::try_acquire`]. The
/// call's duration is measured by the breaker, on its clock, from `try_acquire` to the
/// record.
///
/// * `record_success` / `record_failure`: the call's outcome. A success that took
///   longer than `slow_call` counts as a failure.
/// * Dropped without a record (the caller gave up, or panicked): the call is not counted
///   (resilience4j's `releasePermission`); in Half-open its probe slot is free again.
/// * **Generations**: an outcome (or drop) of a permit handed out before the breaker's
///   latest state change is ignored: e.g. a call admitted while Closed that fails after
///   the breaker opened changes nothing, nor does a probe's outcome after the breaker
///   left that Half-open. (resilience4j counts late outcomes in the current state's
///   metrics; ignoring them is simpler to reason about and never lets one state's call
///   decide another's transition.) Entering Half-open from Open counts as a state
///   change, though no permit can be live across it.
pub trait CallPermit: Send + 'static {
    fn record_success(self);
    fn record_failure(self);
}

/// The contract. Implement it for `Breaker` in `exercises/src/circuit_breaker.rs`.
///
/// * **Closed** admits every call. After each counted outcome (success or failure), if
///   the window (the last `window` counted outcomes since the breaker last closed, or
///   since it was built) holds at least `min_calls` outcomes and failures × 100 ≥
///   `failure_rate_percent` × outcomes (exact integers, no floats), the breaker opens at
///   that instant. A success can open it too (the outcome that brings the window to
///   `min_calls`).
/// * **Open** rejects at once with [`Rejected::Open`] until `opened_at + cool_down`.
///   From that instant on (`now ≥ opened_at + cool_down`), it is **Half-open**: the
///   first call to see it (`try_acquire` or `state`) makes the move, so it makes no
///   difference whether you switch eagerly or lazily.
/// * **Half-open** admits at most `probes` trial calls, counting those in flight and
///   those that succeeded (a dropped probe frees its slot); more are rejected with
///   [`Rejected::ProbesBusy`]. Any probe failing (or slow) opens the breaker again at
///   that instant; once `probes` probes have succeeded it closes with an empty window.
/// * Time comes only from the clock given to `new`, read when a call is acquired and
///   when it is recorded; graded clocks never step back.
/// * Thread-safe and linearizable, clock moves included: `try_acquire`, a record, a
///   drop and `state` each take effect at one instant, as if they ran one at a time.
///   In particular, under any concurrency Half-open hands out exactly `probes` permits.
pub trait CircuitBreaker: Send + Sync + Sized {
    type Permit: CallPermit;
    /// Builds a Closed breaker with an empty window; [`validate`]'s error if the config is bad.
    fn new(config: BreakerConfig, clock: SharedClock) -> Result<Self, ConfigError>;
    fn try_acquire(&self) -> Result<Self::Permit, Rejected>;
    /// The state at this instant (Open turns Half-open here once its cool-down has passed).
    fn state(&self) -> State;
}

/// Why [`AsyncCircuitBreaker::call`] returned no value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallError<E> {
    /// The breaker refused the call; the work was never polled.
    Rejected(Rejected),
    /// The work did not finish within the timeout: it was dropped (cancelled) and the
    /// call counted as a failure.
    Timeout,
    /// The work finished with this error, within the timeout (counted as a failure).
    Failed(E),
}

impl<E: fmt::Debug> fmt::Debug for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => write!(f, "Rejected({r:?})"),
            CallError::Timeout => write!(f, "Timeout"),
            CallError::Failed(e) => write!(f, "Failed({e:?})"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => write!(f, "{r}"),
            CallError::Timeout => write!(f, "the call timed out"),
            CallError::Failed(e) => write!(f, "the call failed: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CallError<E> {}

/// Level 4: the breaker around a real async call with a timeout. Implement it for
/// `AsyncBreaker` in `exercises/src/circuit_breaker.rs` (e.g. around your `Breaker`).
///
/// `call(work)` runs [`CircuitBreaker`]'s rules around `work`, with time from the
/// [`Timer`](crate::clock::Timer) given to `new` (its clock is the breaker's clock):
/// * It asks for a permit when first polled. Rejected: returns
///   `Err(CallError::Rejected(_))` at once, and `work` is never polled.
/// * Admitted: it polls `work` inside the returned future (no task is spawned) until it
///   finishes or `timeout` has passed since the permit was acquired, whichever comes
///   first. `Ok(v)` is recorded as a success (slow if over `slow_call`) and returned;
///   `Err(e)` is a failure, returned as `CallError::Failed(e)`. Still running at the
///   timeout: `work` is dropped (cancelled), the call is recorded as a failure and
///   `Err(CallError::Timeout)` returned. (Work that finishes at the very instant the
///   timeout fires may end either way; the grader never makes them tie.)
/// * If the caller drops the future returned by `call` while the work runs, the permit is
///   dropped too: the call is not counted and a probe slot is freed.
pub trait AsyncCircuitBreaker: Send + Sync + Sized {
    /// [`validate`]'s error for a bad config; `ConfigError::TimeoutTooShort` for a timeout
    /// under 1ms (checked after the config).
    fn new(config: BreakerConfig, timeout: Duration, timer: SharedTimer) -> Result<Self, ConfigError>;
    fn call<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, CallError<E>>> + Send
    where
        T: Send,
        E: Send,
        F: Future<Output = Result<T, E>> + Send;
    fn state(&self) -> State;
}

/// A [`SharedTimer`] read as a [`SharedClock`], to build a [`CircuitBreaker`] from an
/// [`AsyncCircuitBreaker`]'s timer (given to learners).
#[derive(Clone, Debug)]
pub struct TimerClock(pub SharedTimer);

impl Clock for TimerClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }
}

impl TimerClock {
    pub fn shared(timer: SharedTimer) -> SharedClock {
        std::sync::Arc::new(TimerClock(timer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 4,
            min_calls: 2,
            failure_rate_percent: 50,
            slow_call: Duration::from_secs(1),
            cool_down: Duration::from_secs(5),
            probes: 1,
        }
    }

    #[test]
    fn configs_are_validated_in_the_stated_order() {
        assert_eq!(validate(&config()), Ok(()));
        assert_eq!(validate(&BreakerConfig { window: 0, min_calls: 0, ..config() }), Err(ConfigError::ZeroWindow));
        assert_eq!(
            validate(&BreakerConfig { window: MAX_WINDOW + 1, ..config() }),
            Err(ConfigError::WindowTooLarge(MAX_WINDOW + 1))
        );
        assert_eq!(validate(&BreakerConfig { window: MAX_WINDOW, min_calls: MAX_WINDOW, ..config() }), Ok(()));
        assert_eq!(validate(&BreakerConfig { min_calls: 0, probes: 0, ..config() }), Err(ConfigError::ZeroMinCalls));
        assert_eq!(
            validate(&BreakerConfig { min_calls: 5, ..config() }),
            Err(ConfigError::MinCallsAboveWindow { min_calls: 5, window: 4 })
        );
        assert_eq!(
            validate(&BreakerConfig { failure_rate_percent: 0, ..config() }),
            Err(ConfigError::ThresholdOutOfRange(0))
        );
        assert_eq!(
            validate(&BreakerConfig { failure_rate_percent: 101, ..config() }),
            Err(ConfigError::ThresholdOutOfRange(101))
        );
        assert_eq!(validate(&BreakerConfig { probes: 0, ..config() }), Err(ConfigError::ZeroProbes));
    }
}
