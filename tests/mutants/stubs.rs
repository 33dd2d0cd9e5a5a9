//! Implementations of every contract whose methods are all `todo!()`, like the stubs a
//! learner starts from: every case must report them as "not implemented" (never as a
//! failure, a pass or a hang), so a fresh `cargo grade` gives a clean report card.

use std::hash::Hash;
use std::time::Duration;

use harness::clock::{SharedClock, SharedTimer};
use harness::conn_pool::{ConfigError, ConnPool, Connector, PoolConfig, PoolError, PoolStats};
use harness::idempotency::{
    Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, LeaseError, RedisIdempotencyStore, RedisStoreConfig,
    Response, SettleError, StoreUnavailable,
};
use harness::rate_limit::{
    Decision, LimitError, Quota, RateLimiter, RedisLimitError, RedisLimiterConfig, RedisRateLimiter,
};
use harness::top_k::{Ingested, LineError, SlidingTopK, TopKConfig};
use harness::ttl_lru::TtlLruCache;

pub struct Stub;

impl<K: Hash + Eq + Clone + Send + Sync, V: Clone + Send + Sync> TtlLruCache<K, V> for Stub {
    fn new(_: usize, _: SharedClock) -> Self {
        Stub
    }
    fn insert(&self, _: K, _: V, _: Duration) -> Option<V> {
        todo!()
    }
    fn get(&self, _: &K) -> Option<V> {
        todo!()
    }
    fn remove(&self, _: &K) -> Option<V> {
        todo!()
    }
    fn len(&self) -> usize {
        todo!()
    }
    fn get_or_insert_with<F: FnOnce() -> V>(&self, _: K, _: Duration, _: F) -> V {
        todo!()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> RateLimiter<K> for Stub {
    fn new(_: SharedClock) -> Self {
        Stub
    }
    fn check(&self, _: &[(K, Quota)], _: u32) -> Result<Decision, LimitError> {
        todo!()
    }
}

impl RedisRateLimiter for Stub {
    async fn connect(_: &str, _: RedisLimiterConfig, _: SharedClock) -> Result<Self, RedisLimitError> {
        todo!()
    }
    async fn connect_cluster(_: &[String], _: RedisLimiterConfig, _: SharedClock) -> Result<Self, RedisLimitError> {
        todo!()
    }
    async fn check(&self, _: &str, _: &[(&str, Quota)], _: u32) -> Result<Decision, RedisLimitError> {
        todo!()
    }
}

impl SlidingTopK for Stub {
    fn new(_: TopKConfig) -> Self {
        Stub
    }
    fn ingest_line(&mut self, _: &str) -> Result<Ingested, LineError> {
        todo!()
    }
    fn top(&self) -> Vec<(String, u64)> {
        todo!()
    }
    fn late_events(&self) -> u64 {
        todo!()
    }
    fn users_in_window(&self) -> usize {
        todo!()
    }
}

impl IdempotencyStore for Stub {
    fn new(_: IdempotencyConfig, _: SharedClock) -> Self {
        Stub
    }
    fn begin(&self, _: &str, _: &str, _: Fingerprint) -> Begin {
        todo!()
    }
    fn complete(&self, _: &str, _: &str, _: u64, _: Response) -> Result<(), LeaseError> {
        todo!()
    }
    fn abandon(&self, _: &str, _: &str, _: u64) -> Result<(), LeaseError> {
        todo!()
    }
}

impl RedisIdempotencyStore for Stub {
    async fn connect(_: &str, _: RedisStoreConfig, _: SharedClock) -> Result<Self, StoreUnavailable> {
        todo!()
    }
    async fn connect_cluster(_: &[String], _: RedisStoreConfig, _: SharedClock) -> Result<Self, StoreUnavailable> {
        todo!()
    }
    async fn begin(&self, _: &str, _: &str, _: Fingerprint) -> Result<Begin, StoreUnavailable> {
        todo!()
    }
    async fn complete(&self, _: &str, _: &str, _: u64, _: Response) -> Result<(), SettleError> {
        todo!()
    }
    async fn abandon(&self, _: &str, _: &str, _: u64) -> Result<(), SettleError> {
        todo!()
    }
}

impl harness::circuit_breaker::CallPermit for Stub {
    fn record_success(self) {
        todo!()
    }
    fn record_failure(self) {
        todo!()
    }
}

impl harness::circuit_breaker::CircuitBreaker for Stub {
    type Permit = Stub;
    fn new(
        _: harness::circuit_breaker::BreakerConfig,
        _: SharedClock,
    ) -> Result<Self, harness::circuit_breaker::ConfigError> {
        todo!()
    }
    fn try_acquire(&self) -> Result<Stub, harness::circuit_breaker::Rejected> {
        todo!()
    }
    fn state(&self) -> harness::circuit_breaker::State {
        todo!()
    }
}

impl harness::circuit_breaker::AsyncCircuitBreaker for Stub {
    fn new(
        _: harness::circuit_breaker::BreakerConfig,
        _: Duration,
        _: harness::clock::SharedTimer,
    ) -> Result<Self, harness::circuit_breaker::ConfigError> {
        todo!()
    }
    async fn call<T: Send, E: Send, F: std::future::Future<Output = Result<T, E>> + Send>(
        &self,
        _: F,
    ) -> Result<T, harness::circuit_breaker::CallError<E>> {
        todo!()
    }
    fn state(&self) -> harness::circuit_breaker::State {
        todo!()
    }
}

impl<C: Connector> ConnPool<C> for Stub {
    type Guard = Box<C::Conn>;
    fn new(_: PoolConfig, _: C, _: SharedTimer) -> Result<Self, ConfigError> {
        todo!()
    }
    async fn get(&self) -> Result<Box<C::Conn>, PoolError> {
        todo!()
    }
    fn stats(&self) -> PoolStats {
        todo!()
    }
}

impl harness::retry::Retry for Stub {
    fn new(
        _: harness::retry::RetryPolicy,
        _: harness::clock::SharedTimer,
        _: harness::retry::SharedRandom,
    ) -> Result<Self, harness::retry::PolicyError> {
        todo!()
    }
    #[allow(clippy::manual_async_fn)]
    fn run<T, E, F, Fut>(
        &self,
        _: F,
    ) -> impl std::future::Future<Output = Result<T, harness::retry::RetryError<E>>> + Send
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, harness::retry::Fault<E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        async { todo!() }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> harness::window_limit::WindowLimiter<K> for Stub {
    fn new(_: harness::window_limit::Algorithm, _: SharedClock) -> Self {
        Stub
    }
    fn check(
        &self,
        _: &[(K, harness::window_limit::WindowQuota)],
        _: u32,
    ) -> Result<harness::window_limit::WindowDecision, LimitError> {
        todo!()
    }
}

impl harness::window_limit::RedisWindowLimiter for Stub {
    async fn connect(
        _: &str,
        _: harness::window_limit::Algorithm,
        _: RedisLimiterConfig,
        _: SharedClock,
    ) -> Result<Self, RedisLimitError> {
        todo!()
    }
    async fn check(
        &self,
        _: &[(&str, harness::window_limit::WindowQuota)],
        _: u32,
    ) -> Result<harness::window_limit::WindowDecision, RedisLimitError> {
        todo!()
    }
}

impl harness::job_queue::JobQueue for Stub {
    fn new(_: harness::job_queue::QueueConfig, _: SharedClock) -> Result<Self, harness::job_queue::ConfigError> {
        Ok(Stub)
    }
    fn enqueue(&self, _: &[u8], _: Option<&str>) -> harness::job_queue::Enqueued {
        todo!()
    }
    fn claim(&self, _: &str, _: usize) -> Vec<harness::job_queue::Delivery> {
        todo!()
    }
    fn ack(&self, _: &str, _: &harness::job_queue::JobId) -> Result<(), harness::job_queue::QueueError> {
        todo!()
    }
    fn fail(
        &self,
        _: &str,
        _: &harness::job_queue::JobId,
        _: &str,
    ) -> Result<harness::job_queue::Failed, harness::job_queue::QueueError> {
        todo!()
    }
    fn metrics(&self) -> harness::job_queue::Metrics {
        todo!()
    }
    fn dead_letters(&self) -> Vec<harness::job_queue::DeadLetter> {
        todo!()
    }
}

impl harness::job_queue::RedisJobQueue for Stub {
    async fn connect(_: &str, _: harness::job_queue::RedisQueueConfig) -> Result<Self, harness::job_queue::QueueError> {
        todo!()
    }
    async fn enqueue(
        &self,
        _: &[u8],
        _: Option<&str>,
    ) -> Result<harness::job_queue::Enqueued, harness::job_queue::QueueError> {
        todo!()
    }
    async fn claim(
        &self,
        _: &str,
        _: usize,
    ) -> Result<Vec<harness::job_queue::Delivery>, harness::job_queue::QueueError> {
        todo!()
    }
    async fn ack(&self, _: &str, _: &harness::job_queue::JobId) -> Result<(), harness::job_queue::QueueError> {
        todo!()
    }
    async fn fail(
        &self,
        _: &str,
        _: &harness::job_queue::JobId,
        _: &str,
    ) -> Result<harness::job_queue::Failed, harness::job_queue::QueueError> {
        todo!()
    }
    async fn metrics(&self) -> Result<harness::job_queue::Metrics, harness::job_queue::QueueError> {
        todo!()
    }
    async fn dead_letters(&self) -> Result<Vec<harness::job_queue::DeadLetter>, harness::job_queue::QueueError> {
        todo!()
    }
    async fn work(
        &self,
        _: &str,
        _: &dyn harness::job_queue::JobHandler,
        _: tokio::sync::watch::Receiver<bool>,
    ) -> harness::job_queue::WorkReport {
        todo!()
    }
}
