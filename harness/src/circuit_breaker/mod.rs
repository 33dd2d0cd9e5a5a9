//! Exercise: a circuit breaker: count-based sliding window of outcomes, Closed → Open
//! → Half-open with an exact number of probes, slow calls as failures, thread-safe and
//! linearizable (levels 1-3), and around a real async call with a timeout (level 4).
//! Statement: `exercises/statements/circuit_breaker.md`.
//!
//! * `contract.rs`: what a learner implements ([`CircuitBreaker`], [`CallPermit`],
//!   [`AsyncCircuitBreaker`]) and the types in their signatures;
//! * `model.rs`: the state machine and the [`Spec`](crate::sequential::Spec)s of the
//!   synchronous and async levels;
//! * `suite.rs`: inputs, cases and levels.
//!
//! This module holds the object-safe adapters the suites drive and the factories.

mod contract;
mod model;
mod suite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use self::contract::*;
pub use self::model::{AsyncConfig, CallOp, CallOutput, CallResult, End, Op, Output, Which};
pub use self::suite::{suite, EXERCISE, L1, L2, L3, L4};
use crate::clock::{SharedClock, SharedTimer};

/// A permit under test, behind a trait object.
pub trait ErasedPermit: Send {
    fn record_success(self: Box<Self>);
    fn record_failure(self: Box<Self>);
}

impl<P: CallPermit> ErasedPermit for P {
    fn record_success(self: Box<Self>) {
        CallPermit::record_success(*self)
    }
    fn record_failure(self: Box<Self>) {
        CallPermit::record_failure(*self)
    }
}

/// The breaker under test, behind a trait object so the suite is compiled once.
pub trait ErasedBreaker: Send + Sync {
    fn try_acquire(&self) -> Result<Box<dyn ErasedPermit>, Rejected>;
    fn state(&self) -> State;
}

impl<B: CircuitBreaker> ErasedBreaker for B {
    fn try_acquire(&self) -> Result<Box<dyn ErasedPermit>, Rejected> {
        CircuitBreaker::try_acquire(self).map(|p| Box::new(p) as Box<dyn ErasedPermit>)
    }
    fn state(&self) -> State {
        CircuitBreaker::state(self)
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The work graded calls run: it finishes with `Ok(call number)` or `Err(call number)`.
pub type Work = BoxFuture<Result<u32, u32>>;

/// The async breaker under test, behind a trait object.
pub trait ErasedAsyncBreaker: Send + Sync {
    fn call(self: Arc<Self>, work: Work) -> BoxFuture<CallResult>;
    fn state(&self) -> State;
}

impl<B: AsyncCircuitBreaker + 'static> ErasedAsyncBreaker for B {
    fn call(self: Arc<Self>, work: Work) -> BoxFuture<CallResult> {
        Box::pin(async move { AsyncCircuitBreaker::call(&*self, work).await })
    }
    fn state(&self) -> State {
        AsyncCircuitBreaker::state(self)
    }
}

type MakeBreaker = fn(BreakerConfig, SharedClock) -> Result<Arc<dyn ErasedBreaker>, ConfigError>;
type MakeAsync =
    fn(BreakerConfig, std::time::Duration, SharedTimer) -> Result<Arc<dyn ErasedAsyncBreaker>, ConfigError>;

/// Builds the implementations under test: the breaker and its async wrapper.
#[derive(Clone, Copy)]
pub struct Factory {
    pub breaker: MakeBreaker,
    pub async_breaker: MakeAsync,
}

/// The factory for breaker `B` and async breaker `A`.
pub fn factory<B: CircuitBreaker + 'static, A: AsyncCircuitBreaker + 'static>() -> Factory {
    Factory {
        breaker: |config, clock| B::new(config, clock).map(|b| Arc::new(b) as Arc<dyn ErasedBreaker>),
        async_breaker: |config, timeout, timer| {
            A::new(config, timeout, timer).map(|a| Arc::new(a) as Arc<dyn ErasedAsyncBreaker>)
        },
    }
}
