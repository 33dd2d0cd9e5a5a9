//! Buggy in-memory job queues that the suite must reject: one plain queue (a `Mutex`
//! around a `Vec` of live jobs, scanned on every call) with every bug a named switch.
//! `Flawed<NONE>` passes the whole suite; each bug must be rejected by the case
//! [`mutants`] names. Also lists what `tests/self_check.rs` runs for this exercise
//! ([`must_pass`]: the plain base and the correct attempt of another design).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use harness::clock::{SharedClock, Timestamp};
use harness::job_queue::{
    factory, suite, ConfigError, DeadLetter, Delivery, Enqueued, Failed, JobId, JobQueue, Metrics, QueueConfig,
    QueueError, LEASE_EXPIRED,
};
use harness::Case;

pub const NONE: u8 = 0;
// Level 1.
/// Ack checks the worker the job was first delivered to, not its holder now: after a
/// stale job is reclaimed, the old worker can still ack it.
pub const ACK_CHECKS_FIRST_HOLDER: u8 = 1;
/// Stale jobs are never delivered again (only ready ones).
pub const STALE_NOT_RECLAIMED: u8 = 2;
/// A lease runs out only after its end (`now > end`), not at it.
pub const LEASE_END_EXCLUSIVE: u8 = 3;
/// A reclaimed job keeps its attempt number.
pub const ATTEMPT_NOT_INCREMENTED_ON_RECLAIM: u8 = 4;
/// A repeated key restarts its window.
pub const DEDUP_WINDOW_RESTARTS: u8 = 5;
/// A key is remembered forever.
pub const DEDUP_FOREVER: u8 = 6;
/// Back-pressure counts only the worker's unexpired leases.
pub const BACKPRESSURE_UNEXPIRED_ONLY: u8 = 7;
/// The ready head's age counts from its first enqueue, not from when it entered the queue.
pub const AGE_FROM_FIRST_ENQUEUE: u8 = 8;
/// A window covers its end too (`now <= end`).
pub const DEDUP_END_INCLUSIVE: u8 = 9;
/// `retries` counts fails, not deliveries after the first.
pub const RETRIES_COUNT_FAILS: u8 = 10;
/// Reads the clock as is: after a step back, leases and windows come back.
pub const CLOCK_NOT_CLAMPED: u8 = 11;
// Level 2.
/// Due jobs are put at the head of the ready queue.
pub const DUE_AT_HEAD: u8 = 12;
/// Waits `backoff(attempt + 1)`: the exponent is off by one.
pub const BACKOFF_OFF_BY_ONE: u8 = 13;
/// `base * 2u32.pow(n - 1)`, then the cap: overflows at attempt 33.
pub const BACKOFF_OVERFLOWS: u8 = 14;
/// Dead-letters a job one attempt late (`attempts > max_attempts`).
pub const DEAD_ONE_ATTEMPT_LATE: u8 = 15;
/// A stale job on its last attempt is delivered again instead of dead-lettered.
pub const NO_LEASE_EXPIRED_PATH: u8 = 16;
/// The dead letter keeps the first error, not the last.
pub const FIRST_ERROR_KEPT: u8 = 17;
/// Due jobs in fail order, not due order.
pub const DUE_IN_FAIL_ORDER: u8 = 18;
/// `fail` does not check the holder.
pub const FAIL_ANY_HOLDER: u8 = 19;
// Level 3.
/// Claim picks its jobs under the lock, lets go, and takes them under the lock again
/// without checking they are still there.
pub const CHECK_THEN_TAKE: u8 = 20;

#[derive(Clone, Debug, PartialEq)]
enum Place {
    Ready { since: Timestamp },
    Leased { worker: String, until: Timestamp },
    Delayed { due: Timestamp, order: u64 },
}

struct Job {
    id: u64,
    payload: Vec<u8>,
    attempts: u32,
    /// Ready-entry sequence number.
    entered: u64,
    enqueued_at: Timestamp,
    first_worker: Option<String>,
    first_error: Option<String>,
    place: Place,
}

#[derive(Default)]
struct State {
    now: Timestamp,
    next_id: u64,
    entries: u64,
    fails: u64,
    jobs: Vec<Job>,
    keys: HashMap<String, (u64, Timestamp)>,
    dead: Vec<DeadLetter>,
    retries: u64,
}

pub struct Flawed<const BUG: u8> {
    config: QueueConfig,
    clock: SharedClock,
    state: Mutex<State>,
}

fn id_of(id: u64) -> JobId {
    JobId(format!("job-{id}"))
}

impl<const BUG: u8> Flawed<BUG> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_at_now(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        let now = self.clock.now();
        state.now = if BUG == CLOCK_NOT_CLAMPED { now } else { state.now.max(now) };
        state
    }

    fn backoff(&self, attempt: u32) -> Duration {
        match BUG {
            BACKOFF_OFF_BY_ONE => self.config.backoff(attempt + 1),
            BACKOFF_OVERFLOWS => (self.config.backoff_base * 2u32.pow(attempt - 1)).min(self.config.backoff_cap),
            _ => self.config.backoff(attempt),
        }
    }

    fn stale(&self, state: &State, job: &Job) -> bool {
        match &job.place {
            Place::Leased { until, .. } if BUG == LEASE_END_EXCLUSIVE => state.now > *until,
            Place::Leased { until, .. } => state.now >= *until,
            _ => false,
        }
    }

    /// Indices of the jobs `wanted` picks, in ready-entry order.
    fn in_order(state: &State, wanted: impl Fn(&Job) -> bool) -> Vec<usize> {
        let mut picked: Vec<usize> = (0..state.jobs.len()).filter(|&i| wanted(&state.jobs[i])).collect();
        picked.sort_by_key(|&i| state.jobs[i].entered);
        picked
    }

    fn holds(&self, state: &State, worker: &str, id: &JobId, checks_holder: bool) -> Result<usize, QueueError> {
        let index = state.jobs.iter().position(|j| id_of(j.id) == *id);
        let held = index.filter(|&i| {
            let job = &state.jobs[i];
            match &job.place {
                Place::Leased { .. } if !checks_holder => true,
                Place::Leased { .. } if BUG == ACK_CHECKS_FIRST_HOLDER => job.first_worker.as_deref() == Some(worker),
                Place::Leased { worker: w, .. } => w == worker,
                _ => false,
            }
        });
        held.ok_or_else(|| QueueError::NotHeld(id.clone()))
    }

    fn bury(state: &mut State, index: usize, error: &str) {
        let job = state.jobs.remove(index);
        state.dead.push(DeadLetter {
            id: id_of(job.id),
            payload: job.payload,
            attempts: job.attempts,
            last_error: error.into(),
        });
    }

    /// Picks the jobs a claim delivers (steps 1 and 2 done): their ids.
    fn pick(&self, state: &State, worker: &str, max: usize) -> Vec<u64> {
        let held = state
            .jobs
            .iter()
            .filter(|j| match &j.place {
                Place::Leased { worker: w, .. } if w == worker => {
                    !(BUG == BACKPRESSURE_UNEXPIRED_ONLY && self.stale(state, j))
                }
                _ => false,
            })
            .count() as u32;
        let room = (self.config.max_in_flight.saturating_sub(held) as usize).min(max);
        let stale =
            if BUG == STALE_NOT_RECLAIMED { Vec::new() } else { Self::in_order(state, |j| self.stale(state, j)) };
        let ready = Self::in_order(state, |j| matches!(j.place, Place::Ready { .. }));
        stale.into_iter().chain(ready).take(room).map(|i| state.jobs[i].id).collect()
    }

    fn take(&self, state: &mut State, ids: Vec<u64>, worker: &str) -> Vec<Delivery> {
        let until = state.now + self.config.visibility_timeout;
        let mut out = Vec::new();
        for id in ids {
            let Some(job) = state.jobs.iter_mut().find(|j| j.id == id) else { continue };
            let reclaimed = matches!(job.place, Place::Leased { .. });
            if !(BUG == ATTEMPT_NOT_INCREMENTED_ON_RECLAIM && reclaimed) {
                job.attempts += 1;
            }
            if job.attempts > 1 && BUG != RETRIES_COUNT_FAILS {
                state.retries += 1;
            }
            job.first_worker.get_or_insert_with(|| worker.to_string());
            job.place = Place::Leased { worker: worker.to_string(), until };
            out.push(Delivery { id: id_of(id), payload: job.payload.clone(), attempt: job.attempts });
        }
        out
    }
}

impl<const BUG: u8> JobQueue for Flawed<BUG> {
    fn new(config: QueueConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        config.validate()?;
        // Sequence numbers start high so DUE_AT_HEAD can number jobs before the head.
        Ok(Flawed { config, clock, state: Mutex::new(State { entries: 1 << 40, ..State::default() }) })
    }

    fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Enqueued {
        let mut state = self.lock_at_now();
        let now = state.now;
        let window = self.config.dedup_window;
        if let Some(key) = dedup_key {
            if let Some((id, end)) = state.keys.get_mut(key) {
                let remembered = match BUG {
                    DEDUP_FOREVER => true,
                    DEDUP_END_INCLUSIVE => now <= *end,
                    _ => now < *end,
                };
                if remembered {
                    if BUG == DEDUP_WINDOW_RESTARTS {
                        *end = now + window;
                    }
                    return Enqueued::Duplicate(id_of(*id));
                }
            }
        }
        state.next_id += 1;
        state.entries += 1;
        let (id, entered) = (state.next_id, state.entries);
        state.jobs.push(Job {
            id,
            payload: payload.to_vec(),
            attempts: 0,
            entered,
            enqueued_at: now,
            first_worker: None,
            first_error: None,
            place: Place::Ready { since: now },
        });
        if let Some(key) = dedup_key {
            state.keys.insert(key.to_string(), (id, now + window));
        }
        Enqueued::New(id_of(id))
    }

    fn claim(&self, worker: &str, max: usize) -> Vec<Delivery> {
        let mut state = self.lock_at_now();
        let now = state.now;
        // 1. Due jobs to the ready queue.
        let mut due: Vec<(Timestamp, u64, usize)> = (0..state.jobs.len())
            .filter_map(|i| match state.jobs[i].place {
                Place::Delayed { due, order } if now >= due => Some((due, order, i)),
                _ => None,
            })
            .collect();
        if BUG == DUE_IN_FAIL_ORDER {
            due.sort_by_key(|&(_, order, _)| order);
        } else {
            due.sort();
        }
        let head = Self::in_order(&state, |j| matches!(j.place, Place::Ready { .. }))
            .first()
            .map_or(state.entries, |&i| state.jobs[i].entered);
        for (n, (_, _, index)) in due.iter().enumerate() {
            let entered = if BUG == DUE_AT_HEAD {
                head - due.len() as u64 + n as u64
            } else {
                state.entries += 1;
                state.entries
            };
            let job = &mut state.jobs[*index];
            job.entered = entered;
            job.place = Place::Ready { since: now };
        }
        // 2. Stale jobs on their last attempt are dead letters.
        if BUG != NO_LEASE_EXPIRED_PATH {
            let last = |j: &Job| self.stale(&state, j) && j.attempts >= self.config.max_attempts;
            let mut buried: Vec<u64> = Self::in_order(&state, last).into_iter().map(|i| state.jobs[i].id).collect();
            for id in buried.drain(..) {
                let index = state.jobs.iter().position(|j| j.id == id).expect("live");
                Self::bury(&mut state, index, LEASE_EXPIRED);
            }
        }
        // 3. Deliveries.
        let picked = self.pick(&state, worker, max);
        if BUG == CHECK_THEN_TAKE {
            drop(state);
            // Time to look something up before taking the jobs: another claim gets in.
            let _ = self.clock.now();
            std::thread::yield_now();
            let mut state = self.lock();
            return self.take(&mut state, picked, worker);
        }
        self.take(&mut state, picked, worker)
    }

    fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        let mut state = self.lock();
        let index = self.holds(&state, worker, id, true)?;
        state.jobs.remove(index);
        Ok(())
    }

    fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        let mut state = self.lock_at_now();
        let index = self.holds(&state, worker, id, BUG != FAIL_ANY_HOLDER)?;
        if BUG == RETRIES_COUNT_FAILS {
            state.retries += 1;
        }
        let job = &mut state.jobs[index];
        job.first_error.get_or_insert_with(|| error.to_string());
        let last = if BUG == DEAD_ONE_ATTEMPT_LATE {
            job.attempts > self.config.max_attempts
        } else {
            job.attempts >= self.config.max_attempts
        };
        if last {
            let error =
                if BUG == FIRST_ERROR_KEPT { job.first_error.clone().unwrap_or_default() } else { error.into() };
            Self::bury(&mut state, index, &error);
            return Ok(Failed::DeadLettered);
        }
        let delay = self.backoff(state.jobs[index].attempts);
        state.fails += 1;
        let (now, order) = (state.now, state.fails);
        state.jobs[index].place = Place::Delayed { due: now + delay, order };
        Ok(Failed::RetryIn(delay))
    }

    fn metrics(&self) -> Metrics {
        let state = self.lock_at_now();
        let count = |wanted: fn(&Place) -> bool| state.jobs.iter().filter(|j| wanted(&j.place)).count() as u64;
        let head = Self::in_order(&state, |j| matches!(j.place, Place::Ready { .. })).first().map(|&i| &state.jobs[i]);
        let age = head.map(|job| match job.place {
            Place::Ready { .. } if BUG == AGE_FROM_FIRST_ENQUEUE => {
                state.now.saturating_duration_since(job.enqueued_at)
            }
            Place::Ready { since } => state.now.saturating_duration_since(since),
            _ => unreachable!("the head is ready"),
        });
        Metrics {
            ready: count(|p| matches!(p, Place::Ready { .. })),
            in_flight: count(|p| matches!(p, Place::Leased { .. })),
            delayed: count(|p| matches!(p, Place::Delayed { .. })),
            oldest_ready_age: age,
            retries: state.retries,
            dead_letters: state.dead.len() as u64,
        }
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.clone()
    }
}

macro_rules! mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("job_queue::", stringify!($bug)),
            suite: suite(factory::<Flawed<$bug>>()),
            rejected_by: concat!("job_queue::", $case),
        }
    };
}

macro_rules! attempt {
    ($ty:ident, $bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("job_queue::", stringify!($ty), "::", stringify!($bug)),
            suite: suite(factory::<super::job_queue_attempts::$ty<{ super::job_queue_attempts::$bug }>>()),
            rejected_by: concat!("job_queue::", $case),
        }
    };
}

/// Every bundled buggy queue and the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    vec![
        mutant!(ACK_CHECKS_FIRST_HOLDER, "l1_queue_basics::leases"),
        mutant!(STALE_NOT_RECLAIMED, "l1_queue_basics::leases"),
        mutant!(LEASE_END_EXCLUSIVE, "l1_queue_basics::leases"),
        mutant!(ATTEMPT_NOT_INCREMENTED_ON_RECLAIM, "l1_queue_basics::leases"),
        mutant!(DEDUP_WINDOW_RESTARTS, "l1_queue_basics::dedup_window"),
        mutant!(DEDUP_FOREVER, "l1_queue_basics::dedup_window"),
        mutant!(BACKPRESSURE_UNEXPIRED_ONLY, "l1_queue_basics::leases"),
        mutant!(AGE_FROM_FIRST_ENQUEUE, "l2_retries_and_dead_letters::due_order"),
        mutant!(DEDUP_END_INCLUSIVE, "l1_queue_basics::dedup_window"),
        mutant!(RETRIES_COUNT_FAILS, "l1_queue_basics::leases"),
        mutant!(CLOCK_NOT_CLAMPED, "l1_queue_basics::edges"),
        mutant!(DUE_AT_HEAD, "l2_retries_and_dead_letters::due_order"),
        mutant!(BACKOFF_OFF_BY_ONE, "l2_retries_and_dead_letters::backoff_schedule"),
        mutant!(BACKOFF_OVERFLOWS, "l2_retries_and_dead_letters::backoff_schedule"),
        mutant!(DEAD_ONE_ATTEMPT_LATE, "l2_retries_and_dead_letters::short_scripts"),
        mutant!(NO_LEASE_EXPIRED_PATH, "l2_retries_and_dead_letters::short_scripts"),
        mutant!(FIRST_ERROR_KEPT, "l2_retries_and_dead_letters::short_scripts"),
        mutant!(DUE_IN_FAIL_ORDER, "l2_retries_and_dead_letters::edges"),
        mutant!(FAIL_ANY_HOLDER, "l2_retries_and_dead_letters::short_scripts"),
        mutant!(CHECK_THEN_TAKE, "l3_threads::stress"),
        attempt!(Indexed, STALE_BY_LEASE_END, "l1_queue_basics::random_scripts"),
        attempt!(Indexed, ACK_CHECK_THEN_REMOVE, "l3_threads::linearizable"),
    ]
}

/// Suites that must pass every case: the plain base and a correct design of another
/// shape (a red verdict on either is a grading bug), each with its id prefix.
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    use super::job_queue_attempts::{Indexed, NONE as OK};
    vec![
        ("mutant_base".to_string(), suite(factory::<Flawed<NONE>>())),
        ("correct_attempt::job_queue_indexed".to_string(), suite(factory::<Indexed<OK>>())),
    ]
}
