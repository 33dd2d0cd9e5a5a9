//! Exercise: an at-least-once background job queue: in memory against a model
//! (levels 1-3), on Redis Streams (level 4), and with worker processes killed and the
//! server restarted (level 5). Statement: `exercises/statements/job_queue.md`.
//!
//! * `contract.rs`: what a learner implements ([`JobQueue`], [`RedisJobQueue`]) and the
//!   types in their signatures;
//! * `model.rs`: the model and its [`Spec`](crate::sequential::Spec), whose ops and
//!   outputs name jobs `j1`, `j2`, ... in the order they were created;
//! * `suite.rs`: levels 1-3; `redis.rs`: level 4 and the Redis adapters; `faults.rs`:
//!   level 5.
//!
//! This module holds the object-safe adapter of the in-memory queue and its factory.

mod contract;
mod faults;
mod model;
mod redis;
mod suite;

use std::sync::Arc;

pub use self::contract::*;
pub use self::redis::{redis_factory, redis_suite, ErasedRedisQueue, RedisFactory};
pub use self::suite::{suite, EXERCISE};
use crate::clock::SharedClock;

/// The in-memory queue under test, behind a trait object so the suite is compiled once.
pub trait ErasedQueue: Send + Sync {
    fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Enqueued;
    fn claim(&self, worker: &str, max: usize) -> Vec<Delivery>;
    fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError>;
    fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError>;
    fn metrics(&self) -> Metrics;
    fn dead_letters(&self) -> Vec<DeadLetter>;
}

impl<Q: JobQueue> ErasedQueue for Q {
    fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Enqueued {
        JobQueue::enqueue(self, payload, dedup_key)
    }
    fn claim(&self, worker: &str, max: usize) -> Vec<Delivery> {
        JobQueue::claim(self, worker, max)
    }
    fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        JobQueue::ack(self, worker, id)
    }
    fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        JobQueue::fail(self, worker, id, error)
    }
    fn metrics(&self) -> Metrics {
        JobQueue::metrics(self)
    }
    fn dead_letters(&self) -> Vec<DeadLetter> {
        JobQueue::dead_letters(self)
    }
}

/// Builds the in-memory queue under test.
pub type Factory = fn(QueueConfig, SharedClock) -> Result<Arc<dyn ErasedQueue>, ConfigError>;

/// The factory for implementation `Q`.
pub fn factory<Q: JobQueue + 'static>() -> Factory {
    |config, clock| Ok(Arc::new(Q::new(config, clock)?))
}
