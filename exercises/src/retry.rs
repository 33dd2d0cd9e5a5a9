//! Statement: exercises/statements/retry.md (or `cargo grade retry --statement`).
//!
//! Build the retry policy every client of a flaky service needs: retry transient
//! failures with exponential backoff and full jitter, honour a server's `Retry-After`,
//! stop at a maximum number of attempts and at a time budget, never retry a permanent
//! failure, and stop at once when the caller gives up (drops the future).
//!
//! Implement [`Retry`] for [`Retrier`]. The contract is on the trait, in
//! `harness/src/retry/contract.rs`. Sleep and read time only through the `SharedTimer`
//! you are given, and take randomness only from the `SharedRandom`. Run
//! `cargo grade retry`.

use std::future::Future;
use std::time::Duration;

use harness::clock::SharedTimer;
use harness::retry::{Fault, PolicyError, Retry, RetryError, RetryPolicy, SharedRandom, MAX_DELAY};

/// Your retrier. Replace the fields with whatever you need.
pub struct Retrier {
    policy: RetryPolicy,
    timer: SharedTimer,
    rng: SharedRandom,
}

impl Retry for Retrier {
    fn new(policy: RetryPolicy, timer: SharedTimer, rng: SharedRandom) -> Result<Self, PolicyError> {
        let _ = (policy, timer, rng, Duration::ZERO, MAX_DELAY);
        todo!("retry: new")
    }

    fn run<T, E, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, RetryError<E>>> + Send
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fault<E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let _ = (op, &self.policy, &self.timer, &self.rng);
        async { todo!("retry: run") }
    }
}
