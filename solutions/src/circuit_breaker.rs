//! Reference circuit breaker: one `parking_lot::Mutex` around the whole state machine.
//!
//! * The state is a phase (Closed with its window, Open until an instant, Half-open with
//!   its probe counts) and a generation number bumped at every state change. A permit
//!   carries the generation it was admitted in and its acquire instant; an outcome of an
//!   older generation is ignored, so a call can never decide a state it was not part of.
//! * Every decision (acquire, record, release) is one critical section that also reads
//!   the clock: a transition and the outcome racing it are ordered by the lock, which
//!   makes the breaker linearizable and the probe count exact. The critical sections are
//!   a few dozen instructions; a breaker guards calls that take milliseconds, so one
//!   uncontended lock per call is noise next to them.
//! * The window is a ring (`VecDeque`) of the last N outcomes plus a running failure
//!   count: O(1) per outcome, the rate compared in integers.
//! * [`AsyncBreaker`] is a [`Breaker`] on the timer's clock plus a `select!` between the
//!   work and the timeout: the loser is dropped, and a call dropped by its caller drops
//!   its permit, which releases it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use harness::circuit_breaker::{
    validate, AsyncCircuitBreaker, BreakerConfig, CallError, CallPermit, CircuitBreaker, ConfigError, Rejected, State,
    TimerClock,
};
use harness::clock::{SharedClock, SharedTimer, Timestamp};
use parking_lot::Mutex;

enum Phase {
    Closed {
        /// The last `window` counted outcomes since the breaker closed, `true` = failure.
        outcomes: VecDeque<bool>,
        failures: u64,
    },
    Open {
        until: Timestamp,
    },
    HalfOpen {
        /// Probes in flight plus probes that succeeded: at most `probes`.
        admitted: u32,
        succeeded: u32,
    },
}

impl Phase {
    fn closed() -> Phase {
        Phase::Closed { outcomes: VecDeque::new(), failures: 0 }
    }
}

struct Inner {
    phase: Phase,
    generation: u64,
}

struct Shared {
    config: BreakerConfig,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl Inner {
    fn change(&mut self, phase: Phase) {
        self.phase = phase;
        // A new generation: permits handed out before this instant no longer count.
        self.generation += 1;
    }

    /// Open becomes Half-open once its cool-down has passed (lazily, on the first look).
    fn settle(&mut self, now: Timestamp) {
        if let Phase::Open { until } = self.phase {
            if now >= until {
                self.change(Phase::HalfOpen { admitted: 0, succeeded: 0 });
            }
        }
    }
}

/// A circuit breaker; clones are handles to the same breaker.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

/// Permission for one call. Dropped without a record, it is released (not counted).
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    acquired_at: Timestamp,
    recorded: bool,
}

impl Permit {
    /// `Some(failed)` for an outcome, `None` for a release.
    fn finish(&mut self, failed: Option<bool>) {
        self.recorded = true;
        let shared = &self.shared;
        let mut inner = shared.inner.lock();
        if inner.generation != self.generation {
            return; // admitted before the latest state change
        }
        let now = shared.clock.now();
        let Some(failed) = failed else {
            if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
                *admitted -= 1;
            }
            return;
        };
        // Slow is strictly longer than the threshold (resilience4j's `>`).
        let failed = failed || now.saturating_duration_since(self.acquired_at) > shared.config.slow_call;
        // `+` saturates: a cool-down of Duration::MAX never ends.
        let reopen = Phase::Open { until: now + shared.config.cool_down };
        let config = &shared.config;
        match &mut inner.phase {
            Phase::Closed { outcomes, failures } => {
                outcomes.push_back(failed);
                *failures += u64::from(failed);
                if outcomes.len() > config.window as usize {
                    let oldest = outcomes.pop_front().unwrap_or(false);
                    *failures -= u64::from(oldest);
                }
                let calls = outcomes.len() as u64;
                // failure rate ≥ threshold, in integers: failures/calls ≥ percent/100.
                if calls >= u64::from(config.min_calls)
                    && *failures * 100 >= u64::from(config.failure_rate_percent) * calls
                {
                    inner.change(reopen);
                }
            }
            Phase::HalfOpen { .. } if failed => inner.change(reopen),
            Phase::HalfOpen { succeeded, .. } => {
                *succeeded += 1;
                if *succeeded == config.probes {
                    inner.change(Phase::closed());
                }
            }
            // No permit of the current generation exists while Open.
            Phase::Open { .. } => {}
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            self.finish(None);
        }
    }
}

impl CallPermit for Permit {
    fn record_success(mut self) {
        self.finish(Some(false));
    }

    fn record_failure(mut self) {
        self.finish(Some(true));
    }
}

impl CircuitBreaker for Breaker {
    type Permit = Permit;

    fn new(config: BreakerConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        validate(&config)?;
        let inner = Mutex::new(Inner { phase: Phase::closed(), generation: 0 });
        Ok(Breaker { shared: Arc::new(Shared { config, clock, inner }) })
    }

    fn try_acquire(&self) -> Result<Permit, Rejected> {
        let shared = &self.shared;
        let mut inner = shared.inner.lock();
        // Read inside the lock: no other decision can slip in between reading the time
        // and acting on it.
        let now = shared.clock.now();
        inner.settle(now);
        let generation = inner.generation;
        match &mut inner.phase {
            Phase::Closed { .. } => {}
            Phase::Open { until } => {
                return Err(Rejected::Open { retry_after: until.saturating_duration_since(now) });
            }
            Phase::HalfOpen { admitted, .. } => {
                // Check and increment in one critical section: exactly `probes` admitted.
                if *admitted >= shared.config.probes {
                    return Err(Rejected::ProbesBusy);
                }
                *admitted += 1;
            }
        }
        Ok(Permit { shared: Arc::clone(shared), generation, acquired_at: now, recorded: false })
    }

    fn state(&self) -> State {
        let mut inner = self.shared.inner.lock();
        inner.settle(self.shared.clock.now());
        match inner.phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

/// A [`Breaker`] around async calls with a timeout.
pub struct AsyncBreaker {
    breaker: Breaker,
    timeout: Duration,
    timer: SharedTimer,
}

impl AsyncCircuitBreaker for AsyncBreaker {
    fn new(config: BreakerConfig, timeout: Duration, timer: SharedTimer) -> Result<Self, ConfigError> {
        let breaker = Breaker::new(config, TimerClock::shared(timer.clone()))?;
        // Tokio's timer has millisecond resolution: a shorter timeout would be rounded.
        if timeout < Duration::from_millis(1) {
            return Err(ConfigError::TimeoutTooShort(timeout));
        }
        Ok(AsyncBreaker { breaker, timeout, timer })
    }

    async fn call<T, E, F>(&self, work: F) -> Result<T, CallError<E>>
    where
        T: Send,
        E: Send,
        F: Future<Output = Result<T, E>> + Send,
    {
        // Rejected: return before `work` is ever polled (futures do nothing until polled).
        let permit = self.breaker.try_acquire().map_err(CallError::Rejected)?;
        let timeout = self.timer.sleep(self.timeout);
        // Both futures are moved into the select: the one that loses is dropped here,
        // which is how the work is cancelled. `biased`: poll the work first, so a call
        // does not time out when its result is already there.
        let finished = tokio::select! {
            biased;
            result = work => Some(result),
            () = timeout => None,
        };
        // If the caller drops this future while awaiting above, `permit` is dropped
        // with it: released, not counted.
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
                permit.record_failure();
                Err(CallError::Timeout)
            }
        }
    }

    fn state(&self) -> State {
        self.breaker.state()
    }
}
