//! The contract of the retry exercise: the trait a learner implements ([`Retry`]), the
//! types in its signature, the injected random source and the bounds the docs refer to.
//! These doc comments ARE the contract.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedTimer;

/// The longest delay there is: `u64::MAX` nanoseconds (about 584 years). Every ceiling
/// `min(cap, base·2ⁿ)` is taken at most this, so a delay is a `u64` of nanoseconds.
pub const MAX_DELAY: Duration = Duration::from_nanos(u64::MAX);

/// What a retrier is built from. Plain data: [`Retry::new`] validates it.
///
/// * `base`: the first retry's ceiling; zero is allowed (every delay is then zero).
/// * `cap`: no ceiling is above it (and none above [`MAX_DELAY`]); at least `base`.
/// * `max_attempts`: calls of the operation in all, the first one included (at least 1;
///   1 means "never retry"). Like resilience4j's `maxAttempts` and Polly's
///   `MaxRetryAttempts + 1`.
/// * `budget`: the whole call's time budget, counted from the moment `run` is first
///   polled (see [`Retry`]); `Duration::MAX` (or anything past 584 years) means none.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
    pub budget: Duration,
}

/// Why [`Retry::new`] refused a policy. When both apply, `ZeroAttempts` is reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PolicyError {
    /// `max_attempts` is 0: the operation could never run.
    ZeroAttempts,
    /// `base > cap`: the first ceiling would already be above the cap.
    BaseAboveCap { base: Duration, cap: Duration },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::ZeroAttempts => write!(f, "max_attempts must be at least 1"),
            PolicyError::BaseAboveCap { base, cap } => write!(f, "base {base:?} is above cap {cap:?}"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// How one attempt failed, as the caller classifies it (the operation returns it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Fault<E> {
    /// Worth retrying (a timeout, a 503, a reset connection).
    Transient(E),
    /// Never worth retrying (a 400, a 404, a failed validation): `run` returns at once.
    Permanent(E),
    /// Worth retrying, but not before `retry_after` (a 429 or 503 with `Retry-After`):
    /// the server's delay is a floor under the jittered one.
    Throttled { error: E, retry_after: Duration },
}

/// Why [`Retry::run`] gave up. `attempts` counts the operation's calls (all of them,
/// the first included); `error`/`last` is the error of the last call.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RetryError<E> {
    /// The last call failed with [`Fault::Permanent`].
    Permanent { error: E, attempts: u32 },
    /// The last call failed retryably, and it was call number `max_attempts`.
    AttemptsExhausted { last: E, attempts: u32 },
    /// The last call failed retryably, but the next one could not start within the
    /// budget (its delay would end past the deadline): `run` returned without sleeping.
    BudgetExhausted { last: E, attempts: u32 },
}

/// A source of uniformly random `u64`s, shared by every call of a retrier (and by
/// concurrent calls: it is `&self`, synchronised inside). The grader injects a seeded
/// one and replays its stream, so a retrier must take its randomness only from here.
pub trait RandomSource: Send + Sync + fmt::Debug {
    fn next_u64(&self) -> u64;
}

/// How retriers hold their random source.
pub type SharedRandom = Arc<dyn RandomSource>;

/// SplitMix64 over an atomic counter: a seeded, thread-safe stream (the grader's and
/// the benches' random source). Draw i (from 1) is `mix(seed + i·0x9E3779B97F4A7C15)`.
#[derive(Debug)]
pub struct SeededRandom {
    state: AtomicU64,
}

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom { state: AtomicU64::new(seed) }
    }

    pub fn shared(seed: u64) -> SharedRandom {
        Arc::new(Self::new(seed))
    }
}

/// SplitMix64's step, from its state after the increment.
pub(super) fn splitmix(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64's increment (the golden ratio in 64 bits).
pub(super) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl RandomSource for SeededRandom {
    fn next_u64(&self) -> u64 {
        // One atomic add per draw: concurrent callers each get a distinct draw.
        splitmix(self.state.fetch_add(GOLDEN, Ordering::Relaxed).wrapping_add(GOLDEN))
    }
}

/// A retry policy with exponential backoff and full jitter (AWS's "full jitter").
///
/// `run(op)` calls `op()` and awaits the future it returns (one *attempt*), then:
/// * `Ok(v)`: returns `Ok(v)`.
/// * `Err(Fault::Permanent(e))`: returns `Err(RetryError::Permanent { error: e, attempts })`.
/// * `Err(Fault::Transient(e))` or `Err(Fault::Throttled { error: e, .. })` (retryable):
///   1. if this was call number `max_attempts`: returns
///      `Err(AttemptsExhausted { last: e, attempts })`;
///   2. else it draws the delay: attempts are numbered from 0, and the delay before
///      attempt n+1 (after n+1 failed calls) has the ceiling
///      `c = min(cap, base·2ⁿ, MAX_DELAY)`, computed without overflow for every n (it
///      saturates: `base·2ⁿ` past `cap` is `cap`), in whole nanoseconds. It takes
///      exactly ONE draw `x = rng.next_u64()` and maps it to nanoseconds with Lemire's
///      multiply-shift, `delay = (x as u128 · (c as u128 + 1)) >> 64`, uniform in
///      `[0, c]` (both ends included). For `Throttled`, the server's `retry_after` is a
///      floor: `delay = max(jittered, retry_after)`, and the draw is still taken;
///   3. if `now + delay > deadline` (see below): returns
///      `Err(BudgetExhausted { last: e, attempts })` at once, without sleeping (like
///      failsafe and Polly: never sleep past the deadline, never start an attempt
///      after it; a delay that ends exactly at the deadline is fine);
///   4. else it awaits `timer.sleep(delay)` (a zero delay may skip the sleep) and
///      starts the next attempt.
///
/// No draw is taken when no retry is considered (success, permanent, or the last
/// allowed call), so the n-th draw of a single call is for its n-th retry.
///
/// Time is the injected timer's: `deadline = start + budget` where `start` is
/// `timer.now()` read before the first attempt, and `now` is `timer.now()` read after
/// the failed attempt (the attempts' own time counts against the budget). Both sums
/// are [`Timestamp`](crate::clock::Timestamp) additions, which saturate to "never".
/// The only sleeping is `timer.sleep`; nothing else reads a clock.
///
/// Cancellation: dropping the future `run` returned stops everything at once: no
/// further call of `op`, no sleep left running (nothing spawned that outlives it).
///
/// Concurrent calls of `run` on one retrier share its random source; each call has
/// its own attempts, deadline and schedule.
pub trait Retry: Send + Sync + Sized {
    /// Validates `policy` (see [`PolicyError`]) and builds a retrier.
    fn new(policy: RetryPolicy, timer: SharedTimer, rng: SharedRandom) -> Result<Self, PolicyError>;

    /// Runs `op` under the policy (see the trait).
    fn run<T, E, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, RetryError<E>>> + Send
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fault<E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static;
}

/// Level 4's bound on synchronised retries: among [`SPIKE_CALLERS`] callers that start
/// together against a service that fails for its first second, at most this many
/// retries start within any [`SPIKE_WINDOW`] (retries without jitter, or with a shared
/// schedule, all start at one instant: [`SPIKE_CALLERS`] of them).
pub const SPIKE_BOUND: usize = 40;
/// The window of [`SPIKE_BOUND`].
pub const SPIKE_WINDOW: Duration = Duration::from_millis(10);
/// The callers of level 4's spike case.
pub const SPIKE_CALLERS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_stream_is_splitmix64() {
        // SplitMix64 with seed 0: the published first outputs.
        let rng = SeededRandom::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut reference = crate::linearizability::SplitMix::new(42);
        let rng = SeededRandom::new(42);
        for _ in 0..100 {
            assert_eq!(rng.next_u64(), reference.next_u64());
        }
    }
}
