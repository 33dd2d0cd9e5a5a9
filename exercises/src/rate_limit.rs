//! Statement: exercises/statements/rate_limit.md (or `cargo grade rate_limit --statement`).
//!
//! Build a rate limiter for an API: each request names the buckets it counts against
//! (per user, per endpoint, per tenant) and is allowed only if every one of them has
//! room, with exact numbers for the client's `RateLimit` and `Retry-After` headers.
//! Then make it thread-safe, keep its memory bounded under a flood of keys, and share
//! it across instances through Redis.
//!
//! Implement [`RateLimiter`] for [`Limiter`] (levels 1-4) and [`RedisRateLimiter`] for
//! [`RedisLimiter`] (level 5 on one server, level 6 on a Redis Cluster). The contract
//! is on those traits, in `harness/src/rate_limit/contract.rs`. Run `cargo grade
//! rate_limit`; levels 5 and 6 need `redis-server` on the PATH (or `REDIS_URL` /
//! `REDIS_CLUSTER_NODES`).

use std::hash::Hash;
use std::marker::PhantomData;

use harness::clock::SharedClock;
use harness::rate_limit::{
    Decision, LimitError, Quota, RateLimiter, RedisLimitError, RedisLimiterConfig, RedisRateLimiter,
};

/// Your limiter. Replace the fields with whatever you need.
pub struct Limiter<K> {
    _todo: PhantomData<(K, SharedClock)>,
}

impl<K> RateLimiter<K> for Limiter<K>
where
    K: Hash + Eq + Clone + Send + Sync,
{
    fn new(clock: SharedClock) -> Self {
        let _ = clock;
        Limiter { _todo: PhantomData }
    }

    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError> {
        let _ = (limits, cost);
        todo!("rate_limit: check")
    }
}

/// Your Redis-backed limiter (levels 5 and 6). Replace the fields with whatever you need.
pub struct RedisLimiter {
    _todo: PhantomData<SharedClock>,
}

impl RedisRateLimiter for RedisLimiter {
    async fn connect(url: &str, config: RedisLimiterConfig, clock: SharedClock) -> Result<Self, RedisLimitError> {
        let _ = (url, config, clock);
        todo!("rate_limit: RedisLimiter::connect")
    }

    async fn connect_cluster(
        nodes: &[String],
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let _ = (nodes, config, clock);
        todo!("rate_limit: RedisLimiter::connect_cluster")
    }

    async fn check(&self, tenant: &str, limits: &[(&str, Quota)], cost: u32) -> Result<Decision, RedisLimitError> {
        let _ = (tenant, limits, cost);
        todo!("rate_limit: RedisLimiter::check")
    }
}
