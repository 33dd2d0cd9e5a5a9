//! Statement: exercises/statements/job_queue.md (or `cargo grade job_queue --statement`).
//!
//! An at-least-once background job queue: [`Queue`] in memory (levels 1-3), shared
//! by worker threads, and [`RedisQueue`] on Redis Streams (levels 4-5), shared by
//! worker processes. The contract is on the traits in `harness::job_queue`.

use harness::clock::SharedClock;
use harness::job_queue::{
    ConfigError, DeadLetter, Delivery, Enqueued, Failed, JobHandler, JobId, JobQueue, Metrics, QueueConfig, QueueError,
    RedisJobQueue, RedisQueueConfig, WorkReport,
};
use tokio::sync::watch;

/// Your in-memory queue. Replace the fields with whatever you need.
pub struct Queue {}

impl JobQueue for Queue {
    fn new(config: QueueConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        let _ = (config, clock);
        todo!("job_queue: new")
    }

    fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Enqueued {
        let _ = (payload, dedup_key, self);
        todo!("job_queue: enqueue")
    }

    fn claim(&self, worker: &str, max: usize) -> Vec<Delivery> {
        let _ = (worker, max, self);
        todo!("job_queue: claim")
    }

    fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        let _ = (worker, id, self);
        todo!("job_queue: ack")
    }

    fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        let _ = (worker, id, error, self);
        todo!("job_queue: fail")
    }

    fn metrics(&self) -> Metrics {
        let _ = self;
        todo!("job_queue: metrics")
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        let _ = self;
        todo!("job_queue: dead_letters")
    }
}

/// Your queue on Redis Streams. Replace the fields with whatever you need.
pub struct RedisQueue {}

impl RedisJobQueue for RedisQueue {
    async fn connect(url: &str, config: RedisQueueConfig) -> Result<Self, QueueError> {
        let _ = (url, config);
        todo!("job_queue: connect")
    }

    async fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Result<Enqueued, QueueError> {
        let _ = (payload, dedup_key, self);
        todo!("job_queue: enqueue")
    }

    async fn claim(&self, worker: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let _ = (worker, max, self);
        todo!("job_queue: claim")
    }

    async fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        let _ = (worker, id, self);
        todo!("job_queue: ack")
    }

    async fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        let _ = (worker, id, error, self);
        todo!("job_queue: fail")
    }

    async fn metrics(&self) -> Result<Metrics, QueueError> {
        let _ = self;
        todo!("job_queue: metrics")
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let _ = self;
        todo!("job_queue: dead_letters")
    }

    async fn work(&self, worker: &str, handler: &dyn JobHandler, stop: watch::Receiver<bool>) -> WorkReport {
        let _ = (worker, handler, stop, self);
        todo!("job_queue: work")
    }
}
