//! Exercise: the three classic window rate limiters (fixed window, sliding log,
//! sliding window counter), keyed, all-or-nothing over several keys, in memory
//! (levels 1-4) and on Redis (level 5). Statement: `exercises/statements/window_limit.md`.
//!
//! * `contract.rs`: what a learner implements ([`WindowLimiter`], [`RedisWindowLimiter`])
//!   and the types in their signatures (the request errors and Redis configuration are
//!   `rate_limit`'s);
//! * `model.rs`: the model (one log of allowed requests per key, counted per algorithm)
//!   and its [`Spec`](crate::sequential::Spec);
//! * `suite.rs`: inputs, cases and levels 1-4; `redis.rs`: level 5.
//!
//! This module holds the object-safe adapters the suites drive and the factories.

mod contract;
mod model;
mod redis;
mod suite;

use std::sync::Arc;

pub use self::contract::*;
pub use self::model::{quota, Config, Op, Output, QUOTAS, REDIS_QUOTAS};
pub use self::redis::redis_suite;
pub use self::suite::{suite, EXERCISE, L1, L2, L3, L4, L5};
use crate::clock::SharedClock;
pub use crate::linearizability::Key;

/// The limiter under test, behind a trait object so the suite is compiled once.
pub trait ErasedWindowLimiter: Send + Sync {
    fn check(&self, limits: &[(Key, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError>;
}

impl<L: WindowLimiter<Key>> ErasedWindowLimiter for L {
    fn check(&self, limits: &[(Key, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError> {
        WindowLimiter::check(self, limits, cost)
    }
}

/// Builds the limiter under test.
pub type Factory = fn(Algorithm, SharedClock) -> Arc<dyn ErasedWindowLimiter>;

/// The factory for implementation `L`.
pub fn factory<L: WindowLimiter<Key> + 'static>() -> Factory {
    |algorithm, clock| Arc::new(L::new(algorithm, clock))
}

use crate::BoxFuture;

/// The distributed limiter under test, behind a trait object.
pub trait ErasedRedisWindowLimiter: Send + Sync {
    fn check<'a>(
        &'a self,
        limits: &'a [(String, WindowQuota)],
        cost: u32,
    ) -> BoxFuture<'a, Result<WindowDecision, RedisLimitError>>;
}

impl<L: RedisWindowLimiter> ErasedRedisWindowLimiter for L {
    fn check<'a>(
        &'a self,
        limits: &'a [(String, WindowQuota)],
        cost: u32,
    ) -> BoxFuture<'a, Result<WindowDecision, RedisLimitError>> {
        Box::pin(async move {
            let limits: Vec<(&str, WindowQuota)> = limits.iter().map(|(k, q)| (k.as_str(), *q)).collect();
            RedisWindowLimiter::check(self, &limits, cost).await
        })
    }
}

pub type RedisFactory = fn(
    String,
    Algorithm,
    RedisLimiterConfig,
    SharedClock,
) -> BoxFuture<'static, Result<Arc<dyn ErasedRedisWindowLimiter>, RedisLimitError>>;

pub fn redis_factory<L: RedisWindowLimiter + 'static>() -> RedisFactory {
    |url, algorithm, config, clock| {
        Box::pin(async move {
            let limiter = L::connect(&url, algorithm, config, clock).await?;
            Ok(Arc::new(limiter) as Arc<dyn ErasedRedisWindowLimiter>)
        })
    }
}
