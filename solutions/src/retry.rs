//! Reference retry policy: exponential backoff with full jitter (AWS), on an injected
//! timer and random source.
//!
//! One `async` loop owns everything (the operation, the sleep), so dropping the future `run`
//! returns cancels the retrying at once: nothing is spawned that could outlive it.

use std::future::Future;
use std::time::Duration;

use harness::clock::SharedTimer;
use harness::retry::{Fault, PolicyError, Retry, RetryError, RetryPolicy, SharedRandom, MAX_DELAY};

/// The retrier: the validated policy and the injected timer and random source.
pub struct Retrier {
    policy: RetryPolicy,
    timer: SharedTimer,
    rng: SharedRandom,
}

impl Retrier {
    /// min(cap, base·2ⁿ, MAX_DELAY) in nanoseconds. In u128 the product cannot wrap
    /// unnoticed: `saturating_mul` pins an overflow at u128::MAX, and a shift past 127
    /// bits (n ≥ 128) is caught by `checked_shl`; either way the cap wins the `min`.
    fn ceiling_nanos(&self, n: u32) -> u64 {
        let base = self.policy.base.as_nanos();
        let grown = match 1u128.checked_shl(n) {
            Some(factor) => base.saturating_mul(factor),
            None if base == 0 => 0,
            None => u128::MAX,
        };
        // Both bounds fit a u64 once MAX_DELAY is applied.
        grown.min(self.policy.cap.as_nanos()).min(MAX_DELAY.as_nanos()) as u64
    }

    /// One draw, uniform in [0, ceiling]: Lemire's multiply-shift takes the high 64
    /// bits of x·(c+1), a 128-bit product, so it is exact and unbiased up to one part
    /// in 2^64 for every ceiling, u64::MAX included (where it is x itself). A modulo
    /// would favour small values; an f64 would zero the low bits of huge delays.
    fn jitter(&self, ceiling: u64) -> Duration {
        let x = self.rng.next_u64();
        Duration::from_nanos(((u128::from(x) * (u128::from(ceiling) + 1)) >> 64) as u64)
    }
}

impl Retry for Retrier {
    fn new(policy: RetryPolicy, timer: SharedTimer, rng: SharedRandom) -> Result<Self, PolicyError> {
        if policy.max_attempts == 0 {
            return Err(PolicyError::ZeroAttempts);
        }
        if policy.base > policy.cap {
            return Err(PolicyError::BaseAboveCap { base: policy.base, cap: policy.cap });
        }
        Ok(Retrier { policy, timer, rng })
    }

    async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fault<E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        // Read once, at the first poll: the whole call, attempts included, lives
        // within this deadline. Timestamp addition saturates, so a huge budget is
        // "never" rather than an overflow.
        let deadline = self.timer.now() + self.policy.budget;
        let mut attempts: u32 = 0;
        loop {
            let fault = match op().await {
                Ok(value) => return Ok(value),
                Err(fault) => fault,
            };
            // At most max_attempts ≤ u32::MAX calls are made, so this never wraps.
            attempts += 1;
            let (last, floor) = match fault {
                Fault::Permanent(error) => return Err(RetryError::Permanent { error, attempts }),
                Fault::Transient(error) => (error, Duration::ZERO),
                Fault::Throttled { error, retry_after } => (error, retry_after),
            };
            if attempts >= self.policy.max_attempts {
                return Err(RetryError::AttemptsExhausted { last, attempts });
            }
            // Always one draw per retry, even when the server's floor wins: the
            // stream stays aligned with the retry count (and replayable).
            let delay = self.jitter(self.ceiling_nanos(attempts - 1)).max(floor);
            // Never sleep past the deadline: if the next attempt could not start
            // in time, say so now instead of after a useless wait.
            if self.timer.now() + delay > deadline {
                return Err(RetryError::BudgetExhausted { last, attempts });
            }
            if !delay.is_zero() {
                self.timer.sleep(delay).await;
            }
        }
    }
}
