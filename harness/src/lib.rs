//! The grading harness: exercise contracts and the machinery that grades attempts.
//!
//! * [`clock`]: injected time (`Clock`, `SystemClock`, `ManualClock`).
//! * One module per exercise ([`ttl_lru`], [`rate_limit`], [`top_k`], [`idempotency`],
//!   [`retry`], [`circuit_breaker`], [`conn_pool`], [`window_limit`]): the contract trait, its model, its suite.
//! * [`suite`]: levelled cases; [`sequential`] and [`linearizability`]: the checks;
//!   [`isolation`]: one child process per case; [`report`] and [`libtest`]: front ends;
//!   [`redis_server`]: a private Redis server for the distributed levels;
//!   [`redis_cluster`]: a private Redis Cluster (3 masters, 3 replicas) for level 6;
//!   [`heap`]: the counting allocator the memory levels measure with; [`watchdog`]:
//!   a stuck case reported within seconds, with the calls that never returned.
//!
//! This crate never depends on `exercises` or `solutions`: suites are handed the
//! implementation to grade.

pub mod circuit_breaker;
pub mod clock;
pub mod conn_pool;
pub mod heap;
pub mod idempotency;
pub mod isolation;
pub mod job_queue;
pub mod libtest;
pub mod linearizability;
pub mod rate_limit;
pub mod redis_cluster;
pub mod redis_server;
pub mod report;
pub mod retry;
pub mod sequential;
pub mod suite;
pub mod top_k;
pub mod ttl_lru;
pub mod watchdog;
pub mod window_limit;

pub use clock::{SharedTimer, Timer, TokioTimer};
pub use suite::{Case, CaseError, CaseResult, HintTier, Hints, Level};

/// The future an object-safe adapter of an async contract returns (one definition for
/// every exercise's adapters).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One implementation of every exercise: the learner's attempts or the references.
pub struct Implementations {
    pub ttl_lru: ttl_lru::Factory,
    pub rate_limit: rate_limit::Factory,
    pub rate_limit_redis: rate_limit::RedisFactory,
    pub top_k: top_k::Factory,
    pub idempotency: idempotency::Factory,
    pub idempotency_redis: idempotency::RedisFactory,
    pub circuit_breaker: circuit_breaker::Factory,
    pub conn_pool: conn_pool::Factory,
    pub conn_pool_redis: conn_pool::RedisFactory,
    pub retry: retry::Factory,
    pub window_limit: window_limit::Factory,
    pub window_limit_redis: window_limit::RedisFactory,
    pub job_queue: job_queue::Factory,
    pub job_queue_redis: job_queue::RedisFactory,
}

/// Every graded case of every exercise, in report-card order.
pub fn all_cases(implementations: Implementations) -> Vec<Case> {
    let Implementations {
        ttl_lru,
        rate_limit,
        rate_limit_redis,
        top_k,
        idempotency,
        idempotency_redis,
        circuit_breaker,
        conn_pool,
        conn_pool_redis,
        retry,
        window_limit,
        window_limit_redis,
        job_queue,
        job_queue_redis,
    } = implementations;
    [
        ttl_lru::suite(ttl_lru),
        rate_limit::suite(rate_limit),
        rate_limit::redis_suite(rate_limit_redis),
        top_k::suite(top_k),
        idempotency::suite(idempotency),
        idempotency::redis_suite(idempotency_redis),
        retry::suite(retry),
        circuit_breaker::suite(circuit_breaker),
        conn_pool::suite(conn_pool),
        conn_pool::redis_suite(conn_pool_redis),
        window_limit::suite(window_limit),
        window_limit::redis_suite(window_limit_redis),
        job_queue::suite(job_queue),
        job_queue::redis_suite(job_queue_redis),
    ]
    .into_iter()
    .flatten()
    .collect()
}
