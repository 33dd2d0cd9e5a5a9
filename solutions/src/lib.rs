//! Reference solutions, one module per exercise. Every suite must pass on them
//! (`cargo test` checks it); `cargo bench` measures attempts against them.
//!
//! Each module is a drop-in replacement for the matching file in `exercises/src/`:
//! same type names, same imports.

pub mod circuit_breaker;
pub mod conn_pool;
pub mod idempotency;
pub mod job_queue;
pub mod rate_limit;
pub mod retry;
pub mod top_k;
pub mod ttl_lru;
pub mod window_limit;

use harness::{Case, Implementations};

/// Every graded case, run against the reference solutions.
pub fn cases() -> Vec<Case> {
    harness::all_cases(Implementations {
        ttl_lru: harness::ttl_lru::factory::<ttl_lru::TtlLru<_, _>>(),
        rate_limit: harness::rate_limit::factory::<rate_limit::Limiter<_>>(),
        rate_limit_redis: harness::rate_limit::redis_factory::<rate_limit::RedisLimiter>(),
        top_k: harness::top_k::factory::<top_k::TopK>(),
        idempotency: harness::idempotency::factory::<idempotency::Store>(),
        idempotency_redis: harness::idempotency::redis_factory::<idempotency::RedisStore>(),
        circuit_breaker: harness::circuit_breaker::factory::<circuit_breaker::Breaker, circuit_breaker::AsyncBreaker>(),
        conn_pool: harness::conn_pool::factory::<conn_pool::Pool<_>>(),
        conn_pool_redis: harness::conn_pool::redis_factory::<conn_pool::Pool<_>>(),
        retry: harness::retry::factory::<retry::Retrier>(),
        window_limit: harness::window_limit::factory::<window_limit::Limiter<_>>(),
        window_limit_redis: harness::window_limit::redis_factory::<window_limit::RedisLimiter>(),
        job_queue: harness::job_queue::factory::<job_queue::Queue>(),
        job_queue_redis: harness::job_queue::redis_factory::<job_queue::RedisQueue>(),
    })
}
