//! Statement: exercises/statements/job_queue.md (or `cargo grade job_queue --statement`).
//!
//! An at-least-once background job queue: [`Queue`] in memory (levels 1-3), shared
//! by worker threads, and [`RedisQueue`] on Redis Streams (levels 4-5), shared by
//! worker processes. The contract is on the traits in `harness::job_queue`.
//!
//! The in-memory queue keeps every job in one of four places, each a structure
//! ordered the way the contract reads it:
//! * ready: a `VecDeque` in the order jobs entered it (enqueue, or a due retry);
//! * leased: a `BTreeMap` keyed by the sequence number the job got when it last
//!   entered the ready queue, so stale jobs are found in the contract's order;
//! * delayed: a `BTreeMap` keyed by (due, fail number), so the due ones are a prefix;
//! * done or dead: gone from the map (dead letters keep a copy).
//!
//! One `Mutex` around all of it: every call is one critical section, so a claim that
//! finds a job and takes it cannot be split by another claim (the race L3 grades).

use harness::clock::SharedClock;
use harness::job_queue::{
    ConfigError, DeadLetter, Delivery, Enqueued, Failed, JobHandler, JobId, JobQueue, Metrics, QueueConfig, QueueError,
    RedisJobQueue, RedisQueueConfig, WorkReport,
};
use tokio::sync::watch;

// What the in-memory queue needs besides the stub's imports.
use harness::clock::Timestamp;
use harness::job_queue::LEASE_EXPIRED;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// The in-memory queue.
pub struct Queue {
    config: QueueConfig,
    clock: SharedClock,
    state: Mutex<State>,
}

/// A live job (ready, leased or delayed).
struct Job {
    payload: Vec<u8>,
    /// Deliveries so far.
    attempts: u32,
    /// Its sequence number from when it last entered the ready queue.
    seq: u64,
}

/// Who holds a leased job, and until when.
struct Lease {
    job: u64,
    worker: String,
    until: Timestamp,
}

#[derive(Default)]
struct State {
    /// The queue's time: the latest clock reading (the clock may step back; we do not).
    now: Timestamp,
    next_job: u64,
    next_seq: u64,
    next_fail: u64,
    jobs: HashMap<u64, Job>,
    /// (job, when it entered), head first.
    ready: VecDeque<(u64, Timestamp)>,
    /// By ready-entry sequence number: the order stale jobs are taken in.
    leased: BTreeMap<u64, Lease>,
    /// Jobs each worker holds (back-pressure), stale ones included.
    held: HashMap<String, u32>,
    /// (due, fail number) → job: the due jobs are the first entries.
    delayed: BTreeMap<(Timestamp, u64), u64>,
    /// Dedup key → (its job, end of its window).
    keys: HashMap<String, (JobId, Timestamp)>,
    /// When to drop expired keys next (their count doubled since the last sweep).
    sweep_at: usize,
    dead: Vec<DeadLetter>,
    retries: u64,
}

fn id_of(job: u64) -> JobId {
    JobId(job.to_string())
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside the lock leaves no half-made change worth refusing service over.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the state and reads the clock inside the lock, so no other call sees a
    /// later time first; the queue's time never goes back.
    fn lock_at_now(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.now = state.now.max(self.clock.now());
        state
    }
}

impl State {
    fn enter_ready(&mut self, job: u64) {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(j) = self.jobs.get_mut(&job) {
            j.seq = seq;
        }
        self.ready.push_back((job, self.now));
    }

    fn release(&mut self, worker: &str) {
        if let Some(count) = self.held.get_mut(worker) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(worker);
            }
        }
    }

    /// The lease's key if `worker` holds job `id`.
    fn held_by(&self, worker: &str, id: &JobId) -> Option<u64> {
        let job = self.jobs.get(&id.0.parse().ok()?)?;
        let lease = self.leased.get(&job.seq)?;
        (lease.worker == worker && id_of(lease.job) == *id).then_some(job.seq)
    }

    fn bury(&mut self, job: u64, error: &str) {
        if let Some(j) = self.jobs.remove(&job) {
            self.dead.push(DeadLetter {
                id: id_of(job),
                payload: j.payload,
                attempts: j.attempts,
                last_error: error.into(),
            });
        }
    }

    /// A new lease on `job` for `worker`: one more attempt.
    fn deliver(&mut self, seq: u64, job: u64, worker: &str, until: Timestamp) -> Delivery {
        let j = self.jobs.get_mut(&job).expect("a leased or ready job is live");
        j.attempts += 1;
        if j.attempts > 1 {
            self.retries += 1;
        }
        let delivery = Delivery { id: id_of(job), payload: j.payload.clone(), attempt: j.attempts };
        *self.held.entry(worker.to_string()).or_default() += 1;
        self.leased.insert(seq, Lease { job, worker: worker.to_string(), until });
        delivery
    }
}

impl JobQueue for Queue {
    fn new(config: QueueConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Queue { config, clock, state: Mutex::new(State { sweep_at: 64, ..State::default() }) })
    }

    fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Enqueued {
        let mut state = self.lock_at_now();
        let now = state.now;
        if let Some(key) = dedup_key {
            if let Some((id, end)) = state.keys.get(key) {
                if now < *end {
                    return Enqueued::Duplicate(id.clone());
                }
            }
        }
        state.next_job += 1;
        let job = state.next_job;
        state.jobs.insert(job, Job { payload: payload.to_vec(), attempts: 0, seq: 0 });
        state.enter_ready(job);
        if let Some(key) = dedup_key {
            state.keys.insert(key.to_string(), (id_of(job), now + self.config.dedup_window));
            // The queue's time never goes back, so an expired key is never needed again:
            // dropping them whenever the map has doubled keeps memory to the keys of the
            // last window, at amortised O(1) per enqueue.
            if state.keys.len() >= state.sweep_at {
                state.keys.retain(|_, (_, end)| now < *end);
                state.sweep_at = 2 * state.keys.len() + 64;
            }
        }
        Enqueued::New(id_of(job))
    }

    fn claim(&self, worker: &str, max: usize) -> Vec<Delivery> {
        let mut state = self.lock_at_now();
        let now = state.now;
        // 1. Due retries join the ready queue's tail, by (due, fail number).
        while let Some((&(due, fail), &job)) = state.delayed.first_key_value() {
            if due > now {
                break;
            }
            state.delayed.remove(&(due, fail));
            state.enter_ready(job);
        }
        // 2. Stale jobs on their last attempt are dead letters (in ready-entry order).
        let stale: Vec<u64> = state.leased.iter().filter(|(_, l)| now >= l.until).map(|(&seq, _)| seq).collect();
        let mut retake = Vec::new();
        for seq in stale {
            let lease = &state.leased[&seq];
            if state.jobs[&lease.job].attempts >= self.config.max_attempts {
                let lease = state.leased.remove(&seq).expect("just seen");
                state.release(&lease.worker);
                state.bury(lease.job, LEASE_EXPIRED);
            } else {
                retake.push(seq);
            }
        }
        // 3. Back-pressure counts every job the worker holds now, stale ones included.
        let held = state.held.get(worker).copied().unwrap_or(0);
        let room = usize::try_from(self.config.max_in_flight.saturating_sub(held)).unwrap_or(usize::MAX).min(max);
        let until = now + self.config.visibility_timeout;
        let mut out = Vec::new();
        for seq in retake.into_iter().take(room) {
            let lease = state.leased.remove(&seq).expect("just seen");
            state.release(&lease.worker);
            out.push(state.deliver(seq, lease.job, worker, until));
        }
        while out.len() < room {
            let Some((job, _)) = state.ready.pop_front() else { break };
            let seq = state.jobs[&job].seq;
            out.push(state.deliver(seq, job, worker, until));
        }
        out
    }

    fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        let mut state = self.lock();
        let seq = state.held_by(worker, id).ok_or_else(|| QueueError::NotHeld(id.clone()))?;
        let lease = state.leased.remove(&seq).expect("held");
        state.release(worker);
        state.jobs.remove(&lease.job);
        Ok(())
    }

    fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        let mut state = self.lock_at_now();
        let seq = state.held_by(worker, id).ok_or_else(|| QueueError::NotHeld(id.clone()))?;
        let lease = state.leased.remove(&seq).expect("held");
        state.release(worker);
        let attempts = state.jobs[&lease.job].attempts;
        if attempts >= self.config.max_attempts {
            state.bury(lease.job, error);
            return Ok(Failed::DeadLettered);
        }
        // The contract's backoff never overflows, whatever the attempt.
        let delay = self.config.backoff(attempts);
        state.next_fail += 1;
        let key = (state.now + delay, state.next_fail);
        state.delayed.insert(key, lease.job);
        Ok(Failed::RetryIn(delay))
    }

    fn metrics(&self) -> Metrics {
        let state = self.lock_at_now();
        Metrics {
            ready: state.ready.len() as u64,
            in_flight: state.leased.len() as u64,
            delayed: state.delayed.len() as u64,
            oldest_ready_age: state.ready.front().map(|&(_, since)| state.now.saturating_duration_since(since)),
            retries: state.retries,
            dead_letters: state.dead.len() as u64,
        }
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.clone()
    }
}

// ---------------------------------------------------------------------------------
// Levels 4-5: the queue on Redis Streams
// ---------------------------------------------------------------------------------

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
