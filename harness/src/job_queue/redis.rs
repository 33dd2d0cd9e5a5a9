//! Level 4 of the job queue on a real redis-server, and the object-safe adapter of
//! the Redis queue (level 4 cases to be written).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use super::contract::*;
use crate::Case;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The Redis queue under test, behind a trait object.
pub trait ErasedRedisQueue: Send + Sync {
    fn enqueue<'a>(
        &'a self,
        payload: &'a [u8],
        dedup_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Enqueued, QueueError>>;
    fn claim<'a>(&'a self, worker: &'a str, max: usize) -> BoxFuture<'a, Result<Vec<Delivery>, QueueError>>;
    fn ack<'a>(&'a self, worker: &'a str, id: &'a JobId) -> BoxFuture<'a, Result<(), QueueError>>;
    fn fail<'a>(&'a self, worker: &'a str, id: &'a JobId, error: &'a str) -> BoxFuture<'a, Result<Failed, QueueError>>;
    fn metrics(&self) -> BoxFuture<'_, Result<Metrics, QueueError>>;
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>>;
    fn work<'a>(
        &'a self,
        worker: &'a str,
        handler: &'a dyn JobHandler,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, WorkReport>;
}

impl<Q: RedisJobQueue> ErasedRedisQueue for Q {
    fn enqueue<'a>(
        &'a self,
        payload: &'a [u8],
        dedup_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Enqueued, QueueError>> {
        Box::pin(RedisJobQueue::enqueue(self, payload, dedup_key))
    }
    fn claim<'a>(&'a self, worker: &'a str, max: usize) -> BoxFuture<'a, Result<Vec<Delivery>, QueueError>> {
        Box::pin(RedisJobQueue::claim(self, worker, max))
    }
    fn ack<'a>(&'a self, worker: &'a str, id: &'a JobId) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(RedisJobQueue::ack(self, worker, id))
    }
    fn fail<'a>(&'a self, worker: &'a str, id: &'a JobId, error: &'a str) -> BoxFuture<'a, Result<Failed, QueueError>> {
        Box::pin(RedisJobQueue::fail(self, worker, id, error))
    }
    fn metrics(&self) -> BoxFuture<'_, Result<Metrics, QueueError>> {
        Box::pin(RedisJobQueue::metrics(self))
    }
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>> {
        Box::pin(RedisJobQueue::dead_letters(self))
    }
    fn work<'a>(
        &'a self,
        worker: &'a str,
        handler: &'a dyn JobHandler,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'a, WorkReport> {
        Box::pin(RedisJobQueue::work(self, worker, handler, stop))
    }
}

/// Connects the Redis queue under test.
pub type RedisFactory =
    fn(String, RedisQueueConfig) -> BoxFuture<'static, Result<Arc<dyn ErasedRedisQueue>, QueueError>>;

/// The factory for implementation `Q`.
pub fn redis_factory<Q: RedisJobQueue + 'static>() -> RedisFactory {
    |url, config| {
        Box::pin(async move {
            let queue = Q::connect(&url, config).await?;
            Ok(Arc::new(queue) as Arc<dyn ErasedRedisQueue>)
        })
    }
}

pub fn redis_suite(_queue: RedisFactory) -> Vec<Case> {
    Vec::new()
}
