//! Exercise: a retry policy with exponential backoff and full jitter, async on tokio.
//! Statement: `exercises/statements/retry.md`.
//!
//! * `contract.rs`: what a learner implements ([`Retry`]), the policy, faults, errors,
//!   the injected [`RandomSource`] and level 4's bound;
//! * `model.rs`: the ceiling and jitter arithmetic, and the [`Spec`](crate::sequential::Spec)
//!   whose ops are scripted attempts and whose outputs are what the retrier does next;
//! * `suite.rs`: the step driver, the cases and levels 1-4.
//!
//! This module holds the object-safe adapter the suites drive (the contract's `run` is
//! generic; the adapter pins `T = E = u32`: the attempt's number), the factory, and the
//! grader's virtual timer.

mod contract;
mod model;
mod suite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::contract::*;
pub use self::model::{ceiling_nanos, jitter_nanos, Config, Draws, Kind, Op, Output};
pub use self::suite::{suite, EXERCISE, L1, L2, L3, L4};
use crate::clock::{Clock, SharedTimer, Sleep, Timer, Timestamp};

pub use crate::BoxFuture;
/// One attempt, as the suites hand it to a retrier.
pub type OpFuture = BoxFuture<'static, Result<u32, Fault<u32>>>;
/// The operation the suites retry.
pub type ErasedOp = Box<dyn FnMut() -> OpFuture + Send>;

/// The retrier under test, behind a trait object so the suite is compiled once.
pub trait ErasedRetrier: Send + Sync {
    fn run(&self, op: ErasedOp) -> BoxFuture<'_, Result<u32, RetryError<u32>>>;
}

impl<R: Retry> ErasedRetrier for R {
    fn run(&self, op: ErasedOp) -> BoxFuture<'_, Result<u32, RetryError<u32>>> {
        Box::pin(Retry::run(self, op))
    }
}

/// Builds the retrier under test.
pub type Factory = fn(RetryPolicy, SharedTimer, SharedRandom) -> Result<Arc<dyn ErasedRetrier>, PolicyError>;

/// The factory for implementation `R`.
pub fn factory<R: Retry + 'static>() -> Factory {
    |policy, timer, rng| R::new(policy, timer, rng).map(|r| Arc::new(r) as Arc<dyn ErasedRetrier>)
}

/// The grader's timer for single calls: exact to the nanosecond, never waits. A sleep
/// is recorded and moves the time forward when first polled, then completes at once,
/// so a replay checks the delays a retrier asks for, not rounded wake-up times.
/// `Duration::MAX` ("never") stays pending. Clones share the time and the record.
#[derive(Clone, Debug, Default)]
pub struct VirtualTimer {
    nanos: Arc<AtomicU64>,
    sleeps: Arc<Mutex<Vec<Duration>>>,
}

impl VirtualTimer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `d`, stopping at [`Timestamp::LATEST`] (as clocks do).
    pub fn advance(&self, d: Duration) {
        let _ = self.nanos.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(Timestamp::from_nanos(n).advanced(d).as_nanos())
        });
    }

    /// The sleeps awaited so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn shared(&self) -> SharedTimer {
        Arc::new(self.clone())
    }
}

impl Clock for VirtualTimer {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl Timer for VirtualTimer {
    fn sleep(&self, d: Duration) -> Sleep {
        if d == Duration::MAX {
            return Box::pin(std::future::pending());
        }
        let timer = self.clone();
        Box::pin(async move {
            timer.sleeps.lock().unwrap_or_else(|e| e.into_inner()).push(d);
            timer.advance(d);
        })
    }
}
