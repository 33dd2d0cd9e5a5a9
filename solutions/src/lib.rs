//! Reference solutions, one module per exercise. Every suite must pass on them
//! (`cargo test` checks it); `cargo bench` measures attempts against them.
//!
//! Each module is a drop-in replacement for the matching file in `exercises/src/`:
//! same type names, same imports.

pub mod idempotency;
pub mod rate_limit;
pub mod top_k;
pub mod ttl_lru;

use harness::Case;

/// Every graded case, run against the reference solutions.
pub fn cases() -> Vec<Case> {
    let mut cases = harness::ttl_lru::suite(harness::ttl_lru::factory::<ttl_lru::TtlLru<_, _>>());
    cases.extend(harness::rate_limit::suite(harness::rate_limit::factory::<rate_limit::Limiter<_>>()));
    cases.extend(harness::rate_limit::redis_suite(harness::rate_limit::redis_factory::<rate_limit::RedisLimiter>()));
    cases.extend(harness::top_k::suite(harness::top_k::factory::<top_k::TopK>()));
    cases.extend(harness::idempotency::suite(harness::idempotency::factory::<idempotency::Store>()));
    cases.extend(harness::idempotency::redis_suite(harness::idempotency::redis_factory::<idempotency::RedisStore>()));
    cases
}
