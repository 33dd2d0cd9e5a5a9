//! Candidate-style circuit breakers of another design than the plain base: a
//! preallocated ring of outcomes (like resilience4j's fixed-size window) with the
//! state as flat fields, and Half-open probes counted on an atomic. `NONE` is correct
//! and must pass every case; each other switch is a bug candidates write.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::circuit_breaker::{
    factory, suite, validate, AsyncCircuitBreaker, BreakerConfig, CallError, CallPermit, CircuitBreaker, ConfigError,
    Rejected, State, TimerClock,
};
use harness::clock::{SharedClock, SharedTimer, Timestamp};
use harness::Case;
use parking_lot::Mutex;

pub const NONE: u8 = 0;
/// Closing resets the failure count but leaves the old outcomes in the ring, so the
/// next evictions subtract failures that are no longer counted.
pub const RING_NOT_CLEARED_ON_CLOSE: u8 = 1;
/// The rate is rounded to a whole percent, as a dashboard shows it (2 of 3 is "67%").
pub const ROUNDED_RATE: u8 = 2;
/// Half-open admission as `if taken.load() < probes { taken.fetch_add(1) }`.
pub const ATOMIC_PROBE_COUNTER: u8 = 3;

/// The designs in this file.
#[derive(Clone, Copy, Debug)]
pub enum Design {
    Ring,
}

/// The suite run on `design` with bug `BUG`.
pub fn suite_of<const BUG: u8>(design: Design) -> Vec<Case> {
    match design {
        Design::Ring => suite(factory::<Ring<BUG>, AsyncRing<BUG>>()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open,
    HalfOpen,
}

struct Fields {
    mode: Mode,
    epoch: u64,
    /// Preallocated: `window` slots, `head` the next to write, `len` used.
    ring: Vec<bool>,
    head: usize,
    len: usize,
    failures: u32,
    open_until: Timestamp,
    probe_successes: u32,
}

struct Core {
    config: BreakerConfig,
    clock: SharedClock,
    fields: Mutex<Fields>,
    /// Probes handed out in the current Half-open (in flight or succeeded).
    probes_taken: AtomicU32,
}

pub struct Ring<const BUG: u8> {
    core: Arc<Core>,
}

pub struct RingPermit<const BUG: u8> {
    core: Arc<Core>,
    epoch: u64,
    started: Timestamp,
    finished: bool,
}

impl Fields {
    fn enter(&mut self, mode: Mode, core: &Core) {
        self.mode = mode;
        self.epoch += 1;
        if mode == Mode::HalfOpen {
            core.probes_taken.store(0, Ordering::SeqCst);
            self.probe_successes = 0;
        }
    }

    fn tick(&mut self, now: Timestamp, core: &Core) {
        if self.mode == Mode::Open && now >= self.open_until {
            self.enter(Mode::HalfOpen, core);
        }
    }
}

impl<const BUG: u8> RingPermit<BUG> {
    fn complete(&mut self, failed: Option<bool>) {
        self.finished = true;
        let core = &*self.core;
        let config = &core.config;
        let mut f = core.fields.lock();
        if f.epoch != self.epoch {
            return;
        }
        let now = core.clock.now();
        let Some(failed) = failed else {
            if f.mode == Mode::HalfOpen {
                core.probes_taken.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        };
        let failed = failed || now.saturating_duration_since(self.started) > config.slow_call;
        match f.mode {
            Mode::Closed => {
                let window = f.ring.len();
                if f.len == window {
                    // Full: the slot at head is the oldest; it is overwritten.
                    let oldest = f.ring[f.head];
                    f.failures -= u32::from(oldest);
                } else {
                    f.len += 1;
                }
                let head = f.head;
                f.ring[head] = failed;
                f.head = (head + 1) % window;
                f.failures += u32::from(failed);
                let (failures, calls) = (u64::from(f.failures), f.len as u64);
                let percent = u64::from(config.failure_rate_percent);
                let over = if BUG == ROUNDED_RATE {
                    (failures * 100 + calls / 2) / calls >= percent
                } else {
                    failures * 100 >= percent * calls
                };
                if calls >= u64::from(config.min_calls) && over {
                    f.open_until = now + config.cool_down;
                    f.enter(Mode::Open, core);
                }
            }
            Mode::HalfOpen if failed => {
                f.open_until = now + config.cool_down;
                f.enter(Mode::Open, core);
            }
            Mode::HalfOpen => {
                f.probe_successes += 1;
                if f.probe_successes == config.probes {
                    f.failures = 0;
                    if BUG != RING_NOT_CLEARED_ON_CLOSE {
                        f.len = 0;
                        f.head = 0;
                    }
                    f.enter(Mode::Closed, core);
                }
            }
            Mode::Open => {}
        }
    }
}

impl<const BUG: u8> Drop for RingPermit<BUG> {
    fn drop(&mut self) {
        if !self.finished {
            self.complete(None);
        }
    }
}

impl<const BUG: u8> CallPermit for RingPermit<BUG> {
    fn record_success(mut self) {
        self.complete(Some(false));
    }
    fn record_failure(mut self) {
        self.complete(Some(true));
    }
}

impl<const BUG: u8> CircuitBreaker for Ring<BUG> {
    type Permit = RingPermit<BUG>;

    fn new(config: BreakerConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        validate(&config)?;
        let fields = Fields {
            mode: Mode::Closed,
            epoch: 0,
            ring: vec![false; config.window as usize],
            head: 0,
            len: 0,
            failures: 0,
            open_until: Timestamp::ZERO,
            probe_successes: 0,
        };
        let core = Core { config, clock, fields: Mutex::new(fields), probes_taken: AtomicU32::new(0) };
        Ok(Ring { core: Arc::new(core) })
    }

    fn try_acquire(&self) -> Result<RingPermit<BUG>, Rejected> {
        let core = &self.core;
        let mut f = core.fields.lock();
        let now = core.clock.now();
        f.tick(now, core);
        let epoch = f.epoch;
        match f.mode {
            Mode::Closed => {}
            Mode::Open => return Err(Rejected::Open { retry_after: f.open_until.saturating_duration_since(now) }),
            Mode::HalfOpen if BUG == ATOMIC_PROBE_COUNTER => {
                // "The counter is atomic, so no lock is needed for it."
                drop(f);
                if core.probes_taken.load(Ordering::SeqCst) >= core.config.probes {
                    return Err(Rejected::ProbesBusy);
                }
                let started = core.clock.now();
                core.probes_taken.fetch_add(1, Ordering::SeqCst);
                return Ok(RingPermit { core: Arc::clone(core), epoch, started, finished: false });
            }
            Mode::HalfOpen => {
                // Check and take under the lock: a compare-and-take, never load-then-add.
                let taken = core.probes_taken.load(Ordering::SeqCst);
                if taken >= core.config.probes {
                    return Err(Rejected::ProbesBusy);
                }
                core.probes_taken.store(taken + 1, Ordering::SeqCst);
            }
        }
        Ok(RingPermit { core: Arc::clone(core), epoch, started: now, finished: false })
    }

    fn state(&self) -> State {
        let mut f = self.core.fields.lock();
        f.tick(self.core.clock.now(), &self.core);
        match f.mode {
            Mode::Closed => State::Closed,
            Mode::Open => State::Open,
            Mode::HalfOpen => State::HalfOpen,
        }
    }
}

/// The ring breaker around async calls, the timeout raced by hand in a `poll_fn`.
pub struct AsyncRing<const BUG: u8> {
    breaker: Ring<BUG>,
    timeout: Duration,
    timer: SharedTimer,
}

impl<const BUG: u8> AsyncCircuitBreaker for AsyncRing<BUG> {
    fn new(config: BreakerConfig, timeout: Duration, timer: SharedTimer) -> Result<Self, ConfigError> {
        let breaker = Ring::new(config, TimerClock::shared(timer.clone()))?;
        if timeout.as_millis() == 0 {
            return Err(ConfigError::TimeoutTooShort(timeout));
        }
        Ok(AsyncRing { breaker, timeout, timer })
    }

    async fn call<T, E, F>(&self, work: F) -> Result<T, CallError<E>>
    where
        T: Send,
        E: Send,
        F: Future<Output = Result<T, E>> + Send,
    {
        let permit = self.breaker.try_acquire().map_err(CallError::Rejected)?;
        // A hand-written race: poll the work, then the timer, until one is ready. Both
        // live in this future, so the loser is dropped with it.
        let mut work = std::pin::pin!(work);
        let mut timeout = self.timer.sleep(self.timeout);
        let finished = std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(result) = work.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(result));
            }
            timeout.as_mut().poll(cx).map(|()| None)
        })
        .await;
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
