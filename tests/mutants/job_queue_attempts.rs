//! A candidate-style in-memory job queue of another design than the reference and the
//! plain base: every structure indexed (ready jobs in a `BTreeMap` by sequence number,
//! leases in a `BTreeMap` by lease end, delayed jobs in a `BinaryHeap`, dedup keys
//! with an expiry index pruned on every enqueue). `Indexed<NONE>` is correct and must
//! pass every case; each bug is a way candidates get this design wrong.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard};

use harness::clock::{SharedClock, Timestamp};
use harness::job_queue::{
    ConfigError, DeadLetter, Delivery, Enqueued, Failed, JobId, JobQueue, Metrics, QueueConfig, QueueError,
    LEASE_EXPIRED,
};

pub const NONE: u8 = 0;
/// Stale jobs are taken in the order their leases ended (the index at hand), not in
/// the order they entered the ready queue.
pub const STALE_BY_LEASE_END: u8 = 1;
/// `ack` checks the holder under the lock, lets go (reading the clock for its log), and
/// removes the job under the lock again: a claim that reclaims the stale job in between
/// hands out a job that is then deleted.
pub const ACK_CHECK_THEN_REMOVE: u8 = 2;

struct Job {
    payload: Vec<u8>,
    attempts: u32,
    seq: u64,
    /// Set while ready.
    ready_since: Timestamp,
    /// Set while leased: (worker, lease end).
    lease: Option<(String, Timestamp)>,
}

#[derive(Default)]
struct Inner {
    now: Timestamp,
    next_id: u64,
    next_seq: u64,
    next_fail: u64,
    jobs: HashMap<u64, Job>,
    /// seq → id.
    ready: BTreeMap<u64, u64>,
    /// (lease end, seq) → id.
    leases: BTreeMap<(Timestamp, u64), u64>,
    held: HashMap<String, u32>,
    /// (due, fail number, id), earliest first.
    delayed: BinaryHeap<Reverse<(Timestamp, u64, u64)>>,
    keys: HashMap<String, (u64, Timestamp)>,
    /// (window end, key): pruned on every enqueue.
    key_expiry: BTreeMap<(Timestamp, String), ()>,
    dead: Vec<DeadLetter>,
    retries: u64,
}

pub struct Indexed<const BUG: u8> {
    config: QueueConfig,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

fn id_of(id: u64) -> JobId {
    JobId(format!("{id:016x}"))
}

fn parse(id: &JobId) -> Option<u64> {
    u64::from_str_radix(&id.0, 16).ok().filter(|&n| id_of(n) == *id)
}

impl Inner {
    fn enter_ready(&mut self, id: u64) {
        self.next_seq += 1;
        let (seq, now) = (self.next_seq, self.now);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.seq = seq;
            job.ready_since = now;
            job.lease = None;
        }
        self.ready.insert(seq, id);
    }

    /// Ends job `id`'s lease (if any), freeing its worker's slot.
    fn unlease(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if let Some((worker, until)) = job.lease.take() {
            self.leases.remove(&(until, job.seq));
            let count = self.held.get_mut(&worker).expect("a holder has a count");
            *count -= 1;
        }
    }

    fn holder_of(&self, id: &JobId, worker: &str) -> Option<u64> {
        let n = parse(id)?;
        let (w, _) = self.jobs.get(&n)?.lease.as_ref()?;
        (w == worker).then_some(n)
    }
}

impl<const BUG: u8> Indexed<BUG> {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_at_now(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        inner.now = inner.now.max(self.clock.now());
        inner
    }
}

impl<const BUG: u8> JobQueue for Indexed<BUG> {
    fn new(config: QueueConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Indexed { config, clock, inner: Mutex::default() })
    }

    fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Enqueued {
        let mut inner = self.lock_at_now();
        let now = inner.now;
        while let Some(((end, key), ())) = inner.key_expiry.first_key_value() {
            if *end > now {
                break;
            }
            let (end, key) = (*end, key.clone());
            inner.key_expiry.remove(&(end, key.clone()));
            if inner.keys.get(&key).is_some_and(|&(_, e)| e == end) {
                inner.keys.remove(&key);
            }
        }
        if let Some(&(id, _)) = dedup_key.and_then(|k| inner.keys.get(k)) {
            return Enqueued::Duplicate(id_of(id));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.jobs.insert(id, Job { payload: payload.to_vec(), attempts: 0, seq: 0, ready_since: now, lease: None });
        inner.enter_ready(id);
        if let Some(key) = dedup_key {
            let end = now + self.config.dedup_window;
            if end > now {
                inner.keys.insert(key.to_string(), (id, end));
                inner.key_expiry.insert((end, key.to_string()), ());
            }
        }
        Enqueued::New(id_of(id))
    }

    fn claim(&self, worker: &str, max: usize) -> Vec<Delivery> {
        let mut inner = self.lock_at_now();
        let now = inner.now;
        while let Some(&Reverse((due, _, id))) = inner.delayed.peek() {
            if due > now {
                break;
            }
            inner.delayed.pop();
            inner.enter_ready(id);
        }
        let mut stale: Vec<(u64, u64)> =
            inner.leases.range(..(now, u64::MAX)).map(|(&(_, seq), &id)| (seq, id)).collect();
        if BUG != STALE_BY_LEASE_END {
            stale.sort();
        }
        let mut retake = Vec::new();
        for (_, id) in stale {
            if inner.jobs[&id].attempts >= self.config.max_attempts {
                inner.unlease(id);
                let job = inner.jobs.remove(&id).expect("live");
                let letter = DeadLetter {
                    id: id_of(id),
                    payload: job.payload,
                    attempts: job.attempts,
                    last_error: LEASE_EXPIRED.to_string(),
                };
                inner.dead.push(letter);
            } else {
                retake.push(id);
            }
        }
        let held = inner.held.get(worker).copied().unwrap_or(0);
        let room = (self.config.max_in_flight.saturating_sub(held) as usize).min(max);
        let ready: Vec<u64> = inner.ready.values().copied().collect();
        let until = now + self.config.visibility_timeout;
        let mut out = Vec::new();
        for id in retake.into_iter().chain(ready).take(room) {
            inner.unlease(id);
            let job = inner.jobs.get_mut(&id).expect("live");
            let seq = job.seq;
            job.attempts += 1;
            job.lease = Some((worker.to_string(), until));
            let delivery = Delivery { id: id_of(id), payload: job.payload.clone(), attempt: job.attempts };
            if delivery.attempt > 1 {
                inner.retries += 1;
            }
            inner.ready.remove(&seq);
            inner.leases.insert((until, seq), id);
            *inner.held.entry(worker.to_string()).or_default() += 1;
            out.push(delivery);
        }
        out
    }

    fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        let mut inner = self.lock();
        let n = inner.holder_of(id, worker).ok_or_else(|| QueueError::NotHeld(id.clone()))?;
        if BUG == ACK_CHECK_THEN_REMOVE {
            drop(inner);
            let _logged_at = self.clock.now();
            inner = self.lock();
        }
        inner.unlease(n);
        inner.jobs.remove(&n);
        Ok(())
    }

    fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        let mut inner = self.lock_at_now();
        let n = inner.holder_of(id, worker).ok_or_else(|| QueueError::NotHeld(id.clone()))?;
        inner.unlease(n);
        let attempts = inner.jobs[&n].attempts;
        if attempts >= self.config.max_attempts {
            let job = inner.jobs.remove(&n).expect("live");
            let letter = DeadLetter { id: id.clone(), payload: job.payload, attempts, last_error: error.to_string() };
            inner.dead.push(letter);
            return Ok(Failed::DeadLettered);
        }
        let delay = self.config.backoff(attempts);
        inner.next_fail += 1;
        let entry = Reverse((inner.now + delay, inner.next_fail, n));
        inner.delayed.push(entry);
        Ok(Failed::RetryIn(delay))
    }

    fn metrics(&self) -> Metrics {
        let inner = self.lock_at_now();
        let head = inner.ready.values().next().map(|id| inner.jobs[id].ready_since);
        Metrics {
            ready: inner.ready.len() as u64,
            in_flight: inner.leases.len() as u64,
            delayed: inner.delayed.len() as u64,
            oldest_ready_age: head.map(|since| inner.now.saturating_duration_since(since)),
            retries: inner.retries,
            dead_letters: inner.dead.len() as u64,
        }
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.clone()
    }
}
