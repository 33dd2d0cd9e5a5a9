//! The contract of the window-limit exercise: the trait a learner implements
//! ([`WindowLimiter`] in memory, [`RedisWindowLimiter`] on Redis), the types in their
//! signatures and the bounds their docs refer to. These doc comments ARE the contract.
//!
//! The request shape, the errors and the Redis configuration are the rate-limit
//! exercise's (`crate::rate_limit`), reused because they mean the same here.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

pub use crate::rate_limit::{LimitError, RedisLimitError, RedisLimiterConfig, WhenUnavailable, NANOS_LIMIT};

use crate::clock::SharedClock;

/// The longest window: 2^62 ns (about 146 years). With clock readings below
/// [`NANOS_LIMIT`] (2^63 ns), `now + 2·W` fits in a `u64`, and every product the
/// sliding window counter needs (`count · W`, at most `u32::MAX · 2^62 < 2^94`) fits
/// in a `u128`.
pub const MAX_WINDOW: Duration = Duration::from_nanos(1 << 62);

/// A limit: at most `limit` cost per `window`, as the limiter's [`Algorithm`] counts it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowQuota {
    limit: u32,
    window: Duration,
}

/// Why a [`WindowQuota`] could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowQuotaError {
    ZeroLimit,
    ZeroWindow,
    /// The window is longer than [`MAX_WINDOW`].
    TooLong {
        window: Duration,
    },
}

impl fmt::Display for WindowQuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowQuotaError::ZeroLimit => write!(f, "a window quota's limit must be at least 1"),
            WindowQuotaError::ZeroWindow => write!(f, "a window must be longer than zero"),
            WindowQuotaError::TooLong { window } => {
                write!(f, "window {window:?} is longer than MAX_WINDOW (2^62 ns, about 146 years)")
            }
        }
    }
}

impl std::error::Error for WindowQuotaError {}

impl WindowQuota {
    /// At most `limit` per `window`: `limit ≥ 1`, `0 < window ≤ MAX_WINDOW`.
    pub fn new(limit: u32, window: Duration) -> Result<WindowQuota, WindowQuotaError> {
        if limit == 0 {
            return Err(WindowQuotaError::ZeroLimit);
        }
        if window.is_zero() {
            return Err(WindowQuotaError::ZeroWindow);
        }
        if window > MAX_WINDOW {
            return Err(WindowQuotaError::TooLong { window });
        }
        Ok(WindowQuota { limit, window })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// W in nanoseconds (at most 2^62: checked by `new`).
    pub fn window_nanos(&self) -> u64 {
        self.window.as_nanos() as u64
    }
}

impl fmt::Debug for WindowQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.limit, self.window)
    }
}

/// How a limiter counts; chosen once, at construction, for all its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Windows `[k·W, (k+1)·W)` on the nanosecond timeline of the limiter's time: a
    /// request at `now` is allowed iff (cost allowed so far in `now`'s window) + cost ≤
    /// limit. Up to 2·limit can pass within a span shorter than W, across a boundary:
    /// that is the algorithm, not a bug.
    FixedWindow,
    /// Every allowed request is logged (time, cost). A request at `now` is allowed iff
    /// (cost logged at times t with `now − W < t ≤ now`) + cost ≤ limit: exact over
    /// every span of length W, memory proportional to the requests in the window.
    SlidingLog,
    /// Cloudflare's sliding window counter: with `e = now mod W`, `cur` the cost allowed
    /// in `now`'s window `[k·W, (k+1)·W)` and `prev` the cost allowed in the window just
    /// before it, `[(k−1)·W, k·W)` (0 if nothing was allowed in that window, however much
    /// was allowed earlier), a request is allowed iff
    /// `prev·(W − e) + (cur + cost)·W ≤ limit·W`, evaluated exactly in 128-bit integers
    /// (no floating point, no rounding of `prev·(W − e)/W`). O(1) memory per key.
    SlidingWindowCounter,
}

/// The answer to one request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WindowDecision {
    Allowed,
    /// `limiting`: index (into the request's limits, in the caller's order) of the first
    /// limit that would refuse this request on its own.
    Denied {
        limiting: usize,
    },
}

impl WindowDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, WindowDecision::Allowed)
    }
}

/// The contract. Implement it for your `WindowLimiter<K>` in `exercises/src/window_limit.rs`.
///
/// * **A key is bound to one quota for its whole life** (as in `rate_limit`): the grader
///   never names a known key with another quota.
/// * Counting is the [`Algorithm`] given to `new`, exactly as stated there, in integer
///   nanoseconds of the limiter's time. "Allowed" cost is what counts: a fresh key has
///   none.
/// * `check(limits, cost)` is all-or-nothing: allowed iff **every** limit allows `cost`
///   on its own; then each key counts `cost` at `now` (a sliding log logs one entry of
///   `cost`, not `cost` entries). A denied request counts nowhere, in no window and no
///   log. `cost == 0` is always allowed and counts nothing.
/// * Time: the limiter uses `now = max(clock.now(), the latest time it has seen)`, so a
///   clock that steps back changes nothing: no window is reset, no count forgotten.
/// * Domain: any valid [`WindowQuota`] (limits up to `u32::MAX`, windows of 1ns to
///   [`MAX_WINDOW`], odd nanoseconds included) and clock readings below [`NANOS_LIMIT`]:
///   arithmetic must be exact and must not overflow there.
/// * Errors, checked before anything else and changing nothing: no limits, the same key
///   twice, a cost above some limit (`CostExceedsBurst`, whose `burst` is that limit):
///   see [`validate`].
/// * Memory: a key with no cost allowed within the last 2·W answers exactly as a fresh
///   key under every algorithm, so it must not stay in memory for long. Live heap
///   (everything the limiter holds, side tables included) stays within [`HEAP_SLACK`]
///   plus, for each key with cost allowed in `(now − 2·W, now]`, [`HEAP_PER_KEY`] +
///   [`HEAP_PER_LOG_ENTRY`] × (its requests allowed in that span), for keys of up to 8
///   bytes. So a log is pruned, holds one entry per request (at most `limit` of them
///   live), and idle keys are swept (amortised: e.g. when the table has doubled).
/// * Thread-safe and linearizable: a check decides at one instant, between the clock
///   moves before and after it.
pub trait WindowLimiter<K>: Send + Sync + Sized
where
    K: Hash + Eq + Clone + Send + Sync,
{
    fn new(algorithm: Algorithm, clock: SharedClock) -> Self;
    /// Decides one request over the keys `limits` names, each with the one quota it
    /// always has (see the trait).
    fn check(&self, limits: &[(K, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError>;
}

/// Heap bytes a limiter may hold per live key (graded keys are 4 bytes): a key with its
/// counters or the head of its log (up to ~100 bytes), a hash map's load factor and
/// power-of-two growth, and a table that may grow to twice its live keys before it is
/// swept.
pub const HEAP_PER_KEY: usize = 512;
/// Heap bytes per live log entry: a (time, cost) pair of 16 bytes in a growable buffer
/// that may hold up to four times its entries.
pub const HEAP_PER_LOG_ENTRY: usize = 64;
/// Heap bytes a limiter may hold whatever its load.
pub const HEAP_SLACK: usize = crate::rate_limit::HEAP_SLACK;

/// Validates a request as the contract says. Given to learners, like the error types.
pub fn validate<K: Eq>(limits: &[(K, WindowQuota)], cost: u32) -> Result<(), LimitError> {
    if limits.is_empty() {
        return Err(LimitError::NoLimits);
    }
    for (second, (key, _)) in limits.iter().enumerate() {
        if let Some(first) = limits[..second].iter().position(|(k, _)| k == key) {
            return Err(LimitError::DuplicateKey { first, second });
        }
    }
    if let Some((index, (_, quota))) = limits.iter().enumerate().find(|(_, (_, q))| cost > q.limit()) {
        return Err(LimitError::CostExceedsBurst { index, cost, burst: quota.limit() });
    }
    Ok(())
}

/// The distributed contract: [`WindowLimiter`]'s semantics, shared by every instance
/// connected to the same Redis and namespace. Implement it for `RedisWindowLimiter` in
/// `exercises/src/window_limit.rs`.
///
/// * Exactly one round trip per `check` (one `EVALSHA`, or `EVAL` once when the script
///   is not loaded): one Lua script reads and writes all of a request's keys
///   atomically. Every key carries the hash tag `{namespace}`.
/// * Time is the caller's clock, sent in whole microseconds (Lua numbers are doubles):
///   `now` = max(that, the namespace's latest time, kept in Redis). The domain on
///   Redis: windows of whole microseconds and `limit × W` (in µs) below 2^53, so that
///   every number the script handles is an exact integer in Lua's doubles (the grader
///   uses whole-millisecond windows and small limits).
/// * Storage: a sliding log is a sorted set per key (score = time; members unique even
///   for equal times, one member per request); a fixed window one counter per key; the
///   sliding window counter two counters per key (the current and the previous window).
/// * Every key expires: a key written at limiter time `now` lives at least until it can
///   no longer count (the end of the window after the one it counts, for a log the last
///   entry's time + W) + [`REDIS_EXPIRY_MARGIN`], and at most 2·W +
///   [`REDIS_EXPIRY_SLACK`]. Besides those, a namespace holds at most one more key (its
///   latest time), which may live forever.
/// * Redis down or slow: each call returns within `timeout` (plus scheduling), either
///   `Ok(Allowed)` (fail-open) or `Err(Unavailable)` (fail-closed), and works again once
///   Redis is back.
pub trait RedisWindowLimiter: Send + Sync + Sized {
    fn connect(
        url: &str,
        algorithm: Algorithm,
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> impl Future<Output = Result<Self, RedisLimitError>> + Send;
    fn check(
        &self,
        limits: &[(&str, WindowQuota)],
        cost: u32,
    ) -> impl Future<Output = Result<WindowDecision, RedisLimitError>> + Send;
}

/// Redis expires keys on its own clock, which keeps running while the callers' may lag
/// or stand still: a key gone early forgets counted cost.
pub const REDIS_EXPIRY_MARGIN: Duration = crate::rate_limit::REDIS_EXPIRY_MARGIN;
/// How much longer than 2·W a key may live in Redis: the margin and rounding.
pub const REDIS_EXPIRY_SLACK: Duration = crate::rate_limit::REDIS_EXPIRY_SLACK;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_validation_gives_typed_errors() {
        assert_eq!(WindowQuota::new(0, Duration::from_secs(1)), Err(WindowQuotaError::ZeroLimit));
        assert_eq!(WindowQuota::new(1, Duration::ZERO), Err(WindowQuotaError::ZeroWindow));
        assert!(WindowQuota::new(u32::MAX, MAX_WINDOW).is_ok());
        let over = MAX_WINDOW + Duration::from_nanos(1);
        assert_eq!(WindowQuota::new(1, over), Err(WindowQuotaError::TooLong { window: over }));
    }

    #[test]
    fn requests_are_validated_before_anything() {
        let q = |limit| WindowQuota::new(limit, Duration::from_secs(1)).unwrap();
        assert_eq!(validate::<u8>(&[], 1), Err(LimitError::NoLimits));
        assert_eq!(
            validate(&[(1, q(1)), (2, q(1)), (1, q(2))], 1),
            Err(LimitError::DuplicateKey { first: 0, second: 2 })
        );
        assert_eq!(
            validate(&[(1, q(3)), (2, q(1))], 2),
            Err(LimitError::CostExceedsBurst { index: 1, cost: 2, burst: 1 })
        );
        assert_eq!(validate(&[(1, q(3))], 3), Ok(()));
    }
}
