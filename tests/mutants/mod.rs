//! Bundled buggy variants, one module per exercise, each bug named after what it gets
//! wrong. `tests/self_check.rs` checks that the case each one names rejects it.

pub mod circuit_breaker;
pub mod circuit_breaker_attempts;
pub mod conn_pool;
pub mod conn_pool_attempts;
pub mod idempotency;
pub mod idempotency_attempts;
pub mod job_queue;
pub mod job_queue_attempts;
pub mod job_queue_redis;
pub mod rate_limit;
pub mod rate_limit_attempts;
pub mod rate_limit_redis;
pub mod retry;
pub mod retry_attempts;
pub mod stubs;
pub mod top_k;
pub mod top_k_attempts;
pub mod ttl_lru;
pub mod ttl_lru_attempts;
pub mod window_limit;
pub mod window_limit_attempts;
