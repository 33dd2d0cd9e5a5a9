//! Statement: exercises/statements/window_limit.md (or `cargo grade window_limit --statement`).
//!
//! Build the three classic window rate limiters behind one type: fixed window,
//! sliding log and sliding window counter, chosen at construction. Each request names
//! the keys it counts against (per user, per endpoint, per tenant) and is allowed only
//! if every one of them has room. Then make it thread-safe, keep its memory bounded,
//! and share it across instances through Redis.
//!
//! Implement [`WindowLimiter`] for [`Limiter`] (levels 1-4) and [`RedisWindowLimiter`]
//! for [`RedisLimiter`] (level 5). The contract is on those traits, in
//! `harness/src/window_limit/contract.rs`. Run `cargo grade window_limit`; level 5
//! needs `redis-server` on the PATH (or `REDIS_URL`).

use std::hash::Hash;
use std::marker::PhantomData;

use harness::clock::SharedClock;
use harness::window_limit::{
    Algorithm, LimitError, RedisLimitError, RedisLimiterConfig, RedisWindowLimiter, WindowDecision, WindowLimiter,
    WindowQuota,
};

/// Your limiter. Replace the fields with whatever you need.
pub struct Limiter<K> {
    _todo: PhantomData<(K, SharedClock)>,
}

impl<K> WindowLimiter<K> for Limiter<K>
where
    K: Hash + Eq + Clone + Send + Sync,
{
    fn new(algorithm: Algorithm, clock: SharedClock) -> Self {
        let _ = (algorithm, clock);
        Limiter { _todo: PhantomData }
    }

    fn check(&self, limits: &[(K, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError> {
        let _ = (limits, cost);
        todo!("window_limit: check")
    }
}

/// Your Redis-backed limiter (level 5). Replace the fields with whatever you need.
pub struct RedisLimiter {
    _todo: PhantomData<SharedClock>,
}

impl RedisWindowLimiter for RedisLimiter {
    async fn connect(
        url: &str,
        algorithm: Algorithm,
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let _ = (url, algorithm, config, clock);
        todo!("window_limit: RedisLimiter::connect")
    }

    async fn check(&self, limits: &[(&str, WindowQuota)], cost: u32) -> Result<WindowDecision, RedisLimitError> {
        let _ = (limits, cost);
        todo!("window_limit: RedisLimiter::check")
    }
}
