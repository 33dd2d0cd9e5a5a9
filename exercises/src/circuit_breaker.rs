//! Statement: exercises/statements/circuit_breaker.md (or `cargo grade circuit_breaker --statement`).
//!
//! Build the circuit breaker that sits in front of a flaky dependency: it watches the
//! outcomes of the last N calls, opens when too many fail (or are too slow), rejects
//! at once while open, then lets an exact number of trial calls through before closing
//! again. Then make it exact under threads, and wrap a real async call with a timeout.
//!
//! Implement [`CircuitBreaker`] for [`Breaker`] (with [`CallPermit`] for [`Permit`],
//! levels 1-3) and [`AsyncCircuitBreaker`] for [`AsyncBreaker`] (level 4). The contract
//! is on those traits, in `harness/src/circuit_breaker/contract.rs`. Run
//! `cargo grade circuit_breaker`.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use harness::circuit_breaker::{
    AsyncCircuitBreaker, BreakerConfig, CallError, CallPermit, CircuitBreaker, ConfigError, Rejected, State,
};
use harness::clock::{SharedClock, SharedTimer};

/// Your breaker. Replace the fields with whatever you need.
pub struct Breaker {
    _todo: PhantomData<(BreakerConfig, SharedClock)>,
}

/// The permission for one call that `try_acquire` hands out.
pub struct Permit {
    _todo: PhantomData<SharedClock>,
}

impl CallPermit for Permit {
    fn record_success(self) {
        todo!("circuit_breaker: Permit::record_success")
    }

    fn record_failure(self) {
        todo!("circuit_breaker: Permit::record_failure")
    }
}

impl CircuitBreaker for Breaker {
    type Permit = Permit;

    fn new(config: BreakerConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        let _ = (config, clock);
        todo!("circuit_breaker: Breaker::new")
    }

    fn try_acquire(&self) -> Result<Permit, Rejected> {
        todo!("circuit_breaker: try_acquire")
    }

    fn state(&self) -> State {
        todo!("circuit_breaker: state")
    }
}

/// Your breaker around async calls (level 4). Replace the fields with whatever you need.
pub struct AsyncBreaker {
    _todo: PhantomData<(Breaker, SharedTimer)>,
}

impl AsyncCircuitBreaker for AsyncBreaker {
    fn new(config: BreakerConfig, timeout: Duration, timer: SharedTimer) -> Result<Self, ConfigError> {
        let _ = (config, timeout, timer);
        todo!("circuit_breaker: AsyncBreaker::new")
    }

    async fn call<T, E, F>(&self, work: F) -> Result<T, CallError<E>>
    where
        T: Send,
        E: Send,
        F: Future<Output = Result<T, E>> + Send,
    {
        drop(work);
        todo!("circuit_breaker: call")
    }

    fn state(&self) -> State {
        todo!("circuit_breaker: AsyncBreaker::state")
    }
}
