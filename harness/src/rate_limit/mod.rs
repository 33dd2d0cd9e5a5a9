//! Exercise: a keyed token-bucket rate limiter with per-user, per-endpoint and
//! per-tenant limits checked all-or-nothing, in memory (levels 1-4) and on Redis
//! (level 5). Statement: `exercises/statements/rate_limit.md`.
//!
//! * `contract.rs`: what a learner implements ([`RateLimiter`], [`RedisRateLimiter`]),
//!   the types in their signatures, the IETF header rendering;
//! * `model.rs`: the model (GCRA in integer nanoseconds) and its [`Spec`](crate::sequential::Spec);
//! * `suite.rs`: inputs, cases and levels 1-4; `redis.rs`: level 5 (one server);
//!   `cluster.rs`: level 6 (a Redis Cluster: spread, failover, resharding).
//!
//! This module holds the object-safe adapters the suites drive and the factories.

mod cluster;
mod contract;
mod model;
mod redis;
mod suite;

use std::sync::Arc;

pub use self::cluster::L6;
pub use self::contract::*;
pub use self::model::{quota, Config, Op, Output, QUOTAS, REDIS_QUOTAS};
pub use self::redis::redis_suite;
pub use self::suite::{suite, EXERCISE, L1, L2, L3, L4, L5};
use crate::clock::SharedClock;
pub use crate::linearizability::Key;

/// The limiter under test, behind a trait object so the suite is compiled once.
pub trait ErasedLimiter: Send + Sync {
    fn check(&self, limits: &[(Key, Quota)], cost: u32) -> Result<Decision, LimitError>;
}

impl<L: RateLimiter<Key>> ErasedLimiter for L {
    fn check(&self, limits: &[(Key, Quota)], cost: u32) -> Result<Decision, LimitError> {
        RateLimiter::check(self, limits, cost)
    }
}

/// Builds the limiter under test.
pub type Factory = fn(SharedClock) -> Arc<dyn ErasedLimiter>;

/// The factory for implementation `L`.
pub fn factory<L: RateLimiter<Key> + 'static>() -> Factory {
    |clock| Arc::new(L::new(clock))
}

use crate::redis_server::RedisTarget;
use crate::BoxFuture;

/// The distributed limiter under test, behind a trait object.
pub trait ErasedRedisLimiter: Send + Sync {
    fn check<'a>(
        &'a self,
        tenant: &'a str,
        limits: &'a [(String, Quota)],
        cost: u32,
    ) -> BoxFuture<'a, Result<Decision, RedisLimitError>>;
}

impl<L: RedisRateLimiter> ErasedRedisLimiter for L {
    fn check<'a>(
        &'a self,
        tenant: &'a str,
        limits: &'a [(String, Quota)],
        cost: u32,
    ) -> BoxFuture<'a, Result<Decision, RedisLimitError>> {
        Box::pin(async move {
            let limits: Vec<(&str, Quota)> = limits.iter().map(|(k, q)| (k.as_str(), *q)).collect();
            RedisRateLimiter::check(self, tenant, &limits, cost).await
        })
    }
}

/// Builds the distributed limiter under test: `connect` for a server, `connect_cluster`
/// for a cluster.
pub type RedisFactory = fn(
    RedisTarget,
    RedisLimiterConfig,
    SharedClock,
) -> BoxFuture<'static, Result<Arc<dyn ErasedRedisLimiter>, RedisLimitError>>;

pub fn redis_factory<L: RedisRateLimiter + 'static>() -> RedisFactory {
    |target, config, clock| {
        Box::pin(async move {
            let limiter = match target {
                RedisTarget::Server(url) => L::connect(&url, config, clock).await?,
                RedisTarget::Cluster(nodes) => L::connect_cluster(&nodes, config, clock).await?,
            };
            Ok(Arc::new(limiter) as Arc<dyn ErasedRedisLimiter>)
        })
    }
}
