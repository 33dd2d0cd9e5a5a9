//! The model of the in-memory job queue: the queue's rules written as plainly as
//! possible ([`Model`]), the ops and outputs of a graded script, and the [`Spec`] that
//! sequential replays and linearizability checks both run ([`QueueSpec`]).
//!
//! Job ids are opaque, so scripts and outputs name jobs by the order they were created:
//! the model's ids are `j1`, `j2`, ...; the driver renames the implementation's ids the
//! same way, by order of first appearance in `Enqueued::New` (see `suite.rs`). An op
//! names a job by that number (`ack(w1, j2)`), whether or not it exists yet.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::contract::{DeadLetter, Delivery, Enqueued, Failed, JobId, Metrics, QueueConfig, QueueError, LEASE_EXPIRED};
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// Where graded clocks start.
pub(super) const START: Timestamp = Timestamp::from_nanos(1_000_000_000_000);

/// The model's (and the renamed outputs') id of job number `n` (1-based).
pub fn job_id(n: u32) -> JobId {
    JobId(format!("j{n}"))
}

/// A worker's name in graded scripts: `w1`, `w2`, ...
pub fn worker_name(worker: u8) -> String {
    format!("w{worker}")
}

/// One call on the queue, or a move of the test's clock.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Enqueue {
        payload: Vec<u8>,
        key: Option<String>,
    },
    Claim {
        worker: u8,
        max: usize,
    },
    /// Job `job` (1-based, in order of creation) acked by `worker`.
    Ack {
        worker: u8,
        job: u32,
    },
    Fail {
        worker: u8,
        job: u32,
        error: String,
    },
    Metrics,
    DeadLetters,
    Advance(Duration),
    /// The clock steps back by this much.
    Rewind(Duration),
}

/// Bytes as a Rust byte-string literal: `b"a\xff"`.
pub fn show_bytes(bytes: &[u8]) -> String {
    let escaped: String = bytes.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    format!("b\"{escaped}\"")
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Enqueue { payload, key: None } => write!(f, "enqueue({}, None)", show_bytes(payload)),
            Op::Enqueue { payload, key: Some(key) } => write!(f, "enqueue({}, Some({key:?}))", show_bytes(payload)),
            Op::Claim { worker, max } => write!(f, "claim(w{worker}, {max})"),
            Op::Ack { worker, job } => write!(f, "ack(w{worker}, j{job})"),
            Op::Fail { worker, job, error } => write!(f, "fail(w{worker}, j{job}, {error:?})"),
            Op::Metrics => write!(f, "metrics()"),
            Op::DeadLetters => write!(f, "dead_letters()"),
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
            Op::Rewind(d) => write!(f, "clock.set(now - {d:?})"),
        }
    }
}

/// What a call returned, ids renamed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Output {
    Enqueued(Enqueued),
    Claimed(Vec<Delivery>),
    Acked(Result<(), QueueError>),
    Failed(Result<Failed, QueueError>),
    Metrics(Metrics),
    DeadLetters(Vec<DeadLetter>),
    Nothing,
}

struct Id<'a>(&'a JobId);

impl fmt::Debug for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0 .0)
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not_held = |f: &mut fmt::Formatter<'_>, e: &QueueError| match e {
            QueueError::NotHeld(id) => write!(f, "Err(NotHeld({:?}))", Id(id)),
            other => write!(f, "Err({other:?})"),
        };
        match self {
            Output::Enqueued(Enqueued::New(id)) => write!(f, "New({:?})", Id(id)),
            Output::Enqueued(Enqueued::Duplicate(id)) => write!(f, "Duplicate({:?})", Id(id)),
            Output::Claimed(deliveries) => {
                let shown: Vec<String> = deliveries
                    .iter()
                    .map(|d| format!("{:?} attempt {} {}", Id(&d.id), d.attempt, show_bytes(&d.payload)))
                    .collect();
                write!(f, "[{}]", shown.join(", "))
            }
            Output::Acked(Ok(())) => write!(f, "Ok(())"),
            Output::Acked(Err(e)) => not_held(f, e),
            Output::Failed(Ok(failed)) => write!(f, "Ok({failed:?})"),
            Output::Failed(Err(e)) => not_held(f, e),
            Output::Metrics(m) => write!(
                f,
                "{{ ready: {}, in_flight: {}, delayed: {}, oldest_ready_age: {:?}, retries: {}, dead_letters: {} }}",
                m.ready, m.in_flight, m.delayed, m.oldest_ready_age, m.retries, m.dead_letters
            ),
            Output::DeadLetters(dead) => {
                let shown: Vec<String> = dead
                    .iter()
                    .map(|d| {
                        format!(
                            "{:?} {} after {} attempts: {:?}",
                            Id(&d.id),
                            show_bytes(&d.payload),
                            d.attempts,
                            d.last_error
                        )
                    })
                    .collect();
                write!(f, "[{}]", shown.join(", "))
            }
            Output::Nothing => write!(f, "()"),
        }
    }
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Place {
    /// In the ready queue since `since`.
    Ready {
        since: Timestamp,
    },
    /// Delivered to `worker`; stale from `until` on.
    Leased {
        worker: u8,
        until: Timestamp,
    },
    /// Waiting out a backoff: due at `due`; `order` is the `fail` call's number (ties).
    Delayed {
        due: Timestamp,
        order: u64,
    },
    Done,
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Job {
    payload: Vec<u8>,
    /// Deliveries so far.
    attempts: u32,
    place: Place,
    /// When it last entered the ready queue, as a sequence number: the ready queue's
    /// order, and the order in which stale jobs are taken.
    entered: u64,
}

/// The model: the queue's state and the test clock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Model {
    config: QueueConfig,
    /// The test clock.
    now: Timestamp,
    /// The queue's time: the latest clock reading of a call that uses time.
    seen: Timestamp,
    /// Job `n` is `jobs[n - 1]`.
    jobs: Vec<Job>,
    /// Key → (job number, end of its window).
    keys: BTreeMap<String, (u32, Timestamp)>,
    dead: Vec<DeadLetter>,
    retries: u64,
    entries: u64,
    fails: u64,
}

impl Model {
    /// How many jobs were created (exhaustive scripts name only those).
    pub fn jobs(&self) -> u32 {
        self.jobs.len() as u32
    }

    /// The indices of the jobs `wanted` picks, in the order they last entered the ready queue.
    fn in_order(&self, wanted: impl Fn(&Job) -> bool) -> Vec<usize> {
        let mut picked: Vec<usize> = (0..self.jobs.len()).filter(|&i| wanted(&self.jobs[i])).collect();
        picked.sort_by_key(|&i| self.jobs[i].entered);
        picked
    }

    /// A call that uses time reads the clock: the queue's time never goes back.
    fn read_clock(&mut self) {
        self.seen = self.seen.max(self.now);
    }

    fn enter_ready(&mut self, index: usize) {
        self.entries += 1;
        self.jobs[index].entered = self.entries;
        self.jobs[index].place = Place::Ready { since: self.seen };
    }

    fn stale(&self, job: &Job) -> bool {
        matches!(job.place, Place::Leased { until, .. } if self.seen >= until)
    }

    fn bury(&mut self, index: usize, error: &str) {
        let job = &mut self.jobs[index];
        job.place = Place::Dead;
        self.dead.push(DeadLetter {
            id: job_id(index as u32 + 1),
            payload: job.payload.clone(),
            attempts: job.attempts,
            last_error: error.to_string(),
        });
    }

    fn deliver(&mut self, index: usize, worker: u8) -> Delivery {
        let until = self.seen + self.config.visibility_timeout;
        let job = &mut self.jobs[index];
        job.attempts += 1;
        job.place = Place::Leased { worker, until };
        if job.attempts > 1 {
            self.retries += 1;
        }
        Delivery { id: job_id(index as u32 + 1), payload: job.payload.clone(), attempt: job.attempts }
    }

    fn enqueue(&mut self, payload: &[u8], key: Option<&String>) -> Enqueued {
        self.read_clock();
        if let Some(&(job, end)) = key.and_then(|k| self.keys.get(k)) {
            if self.seen < end {
                return Enqueued::Duplicate(job_id(job));
            }
        }
        self.jobs.push(Job { payload: payload.to_vec(), attempts: 0, place: Place::Done, entered: 0 });
        let number = self.jobs.len() as u32;
        self.enter_ready(self.jobs.len() - 1);
        if let Some(key) = key {
            self.keys.insert(key.clone(), (number, self.seen + self.config.dedup_window));
        }
        Enqueued::New(job_id(number))
    }

    fn claim(&mut self, worker: u8, max: usize) -> Vec<Delivery> {
        self.read_clock();
        // 1. Due jobs to the tail of the ready queue, by due time then fail order.
        let mut due: Vec<(Timestamp, u64, usize)> = (0..self.jobs.len())
            .filter_map(|i| match self.jobs[i].place {
                Place::Delayed { due, order } if self.seen >= due => Some((due, order, i)),
                _ => None,
            })
            .collect();
        due.sort();
        for (_, _, index) in due {
            self.enter_ready(index);
        }
        // 2. Stale jobs on their last attempt are dead letters.
        let max_attempts = self.config.max_attempts;
        for index in self.in_order(|job| self.stale(job) && job.attempts >= max_attempts) {
            self.bury(index, LEASE_EXPIRED);
        }
        // 3. Deliveries: what the worker holds now counts, stale jobs included.
        let held = self.jobs.iter().filter(|job| matches!(job.place, Place::Leased { worker: w, .. } if w == worker));
        let room = u64::from(self.config.max_in_flight).saturating_sub(held.count() as u64);
        let room = usize::try_from(room).unwrap_or(usize::MAX).min(max);
        let stale = self.in_order(|job| self.stale(job));
        let ready = self.in_order(|job| matches!(job.place, Place::Ready { .. }));
        let picked: Vec<usize> = stale.into_iter().chain(ready).take(room).collect();
        picked.into_iter().map(|index| self.deliver(index, worker)).collect()
    }

    /// The index of job `job` if `worker` holds it.
    fn held(&self, worker: u8, job: u32) -> Result<usize, QueueError> {
        let index = (job as usize).wrapping_sub(1);
        match self.jobs.get(index) {
            Some(Job { place: Place::Leased { worker: w, .. }, .. }) if *w == worker => Ok(index),
            _ => Err(QueueError::NotHeld(job_id(job))),
        }
    }

    fn fail(&mut self, worker: u8, job: u32, error: &str) -> Result<Failed, QueueError> {
        self.read_clock();
        let index = self.held(worker, job)?;
        let attempts = self.jobs[index].attempts;
        if attempts >= self.config.max_attempts {
            self.bury(index, error);
            return Ok(Failed::DeadLettered);
        }
        let delay = self.config.backoff(attempts);
        self.fails += 1;
        self.jobs[index].place = Place::Delayed { due: self.seen + delay, order: self.fails };
        Ok(Failed::RetryIn(delay))
    }

    fn metrics(&mut self) -> Metrics {
        self.read_clock();
        let count = |wanted: fn(&Place) -> bool| self.jobs.iter().filter(|job| wanted(&job.place)).count() as u64;
        let head = self.in_order(|job| matches!(job.place, Place::Ready { .. })).first().map(|&i| &self.jobs[i].place);
        Metrics {
            ready: count(|p| matches!(p, Place::Ready { .. })),
            in_flight: count(|p| matches!(p, Place::Leased { .. })),
            delayed: count(|p| matches!(p, Place::Delayed { .. })),
            oldest_ready_age: match head {
                Some(Place::Ready { since }) => Some(self.seen.saturating_duration_since(*since)),
                _ => None,
            },
            retries: self.retries,
            dead_letters: self.dead.len() as u64,
        }
    }
}

/// The job-queue specification.
pub struct QueueSpec;

impl Spec for QueueSpec {
    type Config = QueueConfig;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &QueueConfig) -> Model {
        Model {
            config: *config,
            now: START,
            seen: Timestamp::ZERO,
            jobs: Vec::new(),
            keys: BTreeMap::new(),
            dead: Vec::new(),
            retries: 0,
            entries: 0,
            fails: 0,
        }
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Enqueue { payload, key } => Output::Enqueued(model.enqueue(payload, key.as_ref())),
            Op::Claim { worker, max } => Output::Claimed(model.claim(*worker, *max)),
            Op::Ack { worker, job } => Output::Acked(model.held(*worker, *job).map(|index| {
                model.jobs[index].place = Place::Done;
            })),
            Op::Fail { worker, job, error } => Output::Failed(model.fail(*worker, *job, error)),
            Op::Metrics => Output::Metrics(model.metrics()),
            Op::DeadLetters => Output::DeadLetters(model.dead.clone()),
            Op::Advance(d) => {
                model.now = model.now.advanced(*d);
                Output::Nothing
            }
            Op::Rewind(d) => {
                model.now = model.now - *d;
                Output::Nothing
            }
        }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        Some(match (op, expected, actual) {
            (Op::Enqueue { .. }, Output::Enqueued(Enqueued::Duplicate(_)), Output::Enqueued(Enqueued::New(_))) => {
                "A key is remembered for dedup_window from the enqueue that created its job: a repeat within the window \
                 adds nothing and returns that job's id, even if the job is done or dead since."
            }
            (Op::Enqueue { .. }, Output::Enqueued(Enqueued::New(_)), Output::Enqueued(Enqueued::Duplicate(_))) => {
                "A key is forgotten exactly dedup_window after the enqueue that created its job (a repeat does not \
                 restart the window); from then on the key adds a new job and starts a new window. A window of zero \
                 never deduplicates, and an enqueue without a key always adds a job."
            }
            (Op::Enqueue { .. }, _, _) => {
                "Every new job gets a fresh id, never one used before; a duplicate returns the id of the job its key \
                 created."
            }
            (Op::Claim { .. }, Output::Claimed(want), Output::Claimed(got)) if want.len() != got.len() => {
                "A claim delivers min(max, max_in_flight − held) jobs when that many are available, where held counts \
                 every job the worker holds, stale ones included; stale jobs (lease over: now ≥ delivery + \
                 visibility_timeout) come first, on any worker's claim, then the ready queue; due delayed jobs join the \
                 ready queue at the start of every claim, and stale jobs on their last attempt become dead letters there."
            }
            (Op::Claim { .. }, Output::Claimed(_), Output::Claimed(_)) => {
                "Order and attempts: stale jobs first (in the order they last entered the ready queue), then the ready \
                 queue from its head; due jobs join its tail in order of due time (ties: fail order). Every delivery is \
                 one more attempt, a delivery after a lease ran out included."
            }
            (Op::Fail { .. }, Output::Failed(Ok(_)), Output::Failed(Ok(_))) => {
                "A failed attempt n < max_attempts waits backoff(n) = min(backoff_cap, backoff_base × 2^(n−1)) (the \
                 contract's QueueConfig::backoff); attempt n = max_attempts makes the job a dead letter."
            }
            (Op::Ack { .. } | Op::Fail { .. }, Output::Acked(Ok(_)) | Output::Failed(Ok(_)), _) => {
                "A worker holds a job from its delivery until it acks or fails it, or until another claim takes it \
                 after its lease ran out: until then ack and fail work, even after the lease ended."
            }
            (Op::Ack { .. } | Op::Fail { .. }, Output::Acked(Err(_)) | Output::Failed(Err(_)), _) => {
                "Only the worker holding a job may ack or fail it: NotHeld for a job never delivered to it, already \
                 acked or failed, or taken by a later claim (any worker's) after its lease ran out."
            }
            (Op::Metrics, _, _) => {
                "Metrics: ready (depth), in_flight (delivered, not acked or failed, stale ones included), delayed (due or \
                 not: due jobs move at the next claim), the age of the ready queue's head since it entered the queue, \
                 deliveries after the first, dead letters made."
            }
            (Op::DeadLetters, _, _) => {
                "A dead letter records the job's payload, max_attempts and the error of its last fail, or \"lease \
                 expired\" when its last attempt's lease ran out (at the next claim); oldest first."
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_job_on_its_last_attempt_is_buried_at_the_next_claim() {
        let config = QueueConfig {
            visibility_timeout: Duration::from_secs(1),
            max_attempts: 1,
            backoff_base: Duration::ZERO,
            backoff_cap: Duration::ZERO,
            max_in_flight: 1,
            dedup_window: Duration::ZERO,
        };
        let mut model = QueueSpec::model(&config);
        QueueSpec::step(&mut model, &Op::Enqueue { payload: vec![1], key: None });
        QueueSpec::step(&mut model, &Op::Claim { worker: 1, max: 1 });
        QueueSpec::step(&mut model, &Op::Advance(Duration::from_secs(1)));
        let claimed = QueueSpec::step(&mut model, &Op::Claim { worker: 1, max: 0 });
        assert_eq!(claimed, Output::Claimed(vec![]));
        assert_eq!(
            format!("{:?}", QueueSpec::step(&mut model, &Op::DeadLetters)),
            "[j1 b\"\\x01\" after 1 attempts: \"lease expired\"]"
        );
    }
}
