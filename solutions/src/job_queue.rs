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

// What the references need besides the stub's imports.
use harness::clock::Timestamp;
use harness::job_queue::{LEASE_EXPIRED, POLL_INTERVAL};
use harness::redis_server::connect_with_timeout;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

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

// The Redis queue keeps every key under one hash tag, `{namespace}`, so Redis Cluster
// puts them in one slot and each operation can be one atomic Lua script:
//
//   {ns}:ready    stream + consumer group "workers": the ready queue and the leases
//                 (an entry delivered and not acked is in the group's pending list)
//   {ns}:entries  hash: job id -> its current stream entry id (a retry gets a new one)
//   {ns}:delayed  sorted set: "<fail seq>:<job id>" scored by due time (ms)
//   {ns}:parked   hash: payload ("p<id>") and attempts made ("a<id>") of delayed jobs
//   {ns}:dead     stream of dead letters (job id, attempts, last error, payload)
//   {ns}:meta     hash: job id sequence, fail sequence, retries, dead letters
//   {ns}:dedup:<key>  the job id a dedup key first enqueued, expiring after the window
//
// A stream entry carries the job id `j`, the attempts made before it was added `a`
// and the payload `p`; the attempt a delivery is = `a` + the entry's delivery count in
// the pending list (XREADGROUP sets it to 1, each XAUTOCLAIM adds one).

/// Shared by every script: the group is created with the stream (from entry 0, so it
/// sees every job), and the server's clock in ms with µs decimals.
const PRELUDE: &str = r#"
local function ensure_group()
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM')
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local function int(x) return string.format('%d', x) end
-- The stream entry this consumer holds for job `id` and its delivery count, or nil.
local function held(id, consumer)
  local entry = redis.call('HGET', KEYS[2], id)
  if not entry then return nil end
  local p = redis.call('XPENDING', KEYS[1], 'workers', entry, entry, 1)
  if #p == 0 or p[1][2] ~= consumer then return nil end
  return entry, tonumber(p[1][4])
end
-- Takes the entry out of the stream and its pending list, atomically with the rest.
local function remove(entry, id)
  redis.call('XACK', KEYS[1], 'workers', entry)
  redis.call('XDEL', KEYS[1], entry)
  redis.call('HDEL', KEYS[2], id)
end
local function bury(id, attempts, err, payload)
  redis.call('XADD', KEYS[5], '*', 'j', id, 'a', int(attempts), 'e', err, 'p', payload)
  redis.call('HINCRBY', KEYS[6], 'dead', 1)
end
"#;

/// ARGV: payload, dedup window (ms); KEYS[7]: the dedup key, when given. The check
/// and the add are one step: two enqueues with one key can never both add.
const ENQUEUE: &str = r#"
if KEYS[7] then
  local first = redis.call('GET', KEYS[7])
  if first then return {'dup', first} end
end
ensure_group()
local id = int(redis.call('HINCRBY', KEYS[6], 'seq', 1))
local entry = redis.call('XADD', KEYS[1], '*', 'j', id, 'a', '0', 'p', ARGV[1])
redis.call('HSET', KEYS[2], id, entry)
if KEYS[7] then redis.call('SET', KEYS[7], id, 'PX', ARGV[2]) end
return {'new', id}
"#;

/// ARGV: consumer, max, max_in_flight, visibility timeout (ms), max_attempts.
/// Returns id, attempt, payload for each delivery.
const CLAIM: &str = r#"
ensure_group()
local now = now_ms()
-- Due jobs join the tail of the ready stream, by due time (ties: fail order).
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, member in ipairs(due) do
  local id = string.match(member, ':(.*)$')
  local p, a = redis.call('HGET', KEYS[4], 'p' .. id), redis.call('HGET', KEYS[4], 'a' .. id)
  redis.call('HSET', KEYS[2], id, redis.call('XADD', KEYS[1], '*', 'j', id, 'a', a, 'p', p))
  redis.call('HDEL', KEYS[4], 'p' .. id, 'a' .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
-- Back-pressure: what this consumer holds is its pending list (stale entries included).
local limit = tonumber(ARGV[3])
local held = #redis.call('XPENDING', KEYS[1], 'workers', '-', '+', limit, ARGV[1])
local room = math.min(tonumber(ARGV[2]), limit - held)
local out, retries = {}, 0
local function deliver(id, attempt, payload)
  if attempt > 1 then retries = retries + 1 end
  table.insert(out, id); table.insert(out, int(attempt)); table.insert(out, payload)
end
-- Stale leases first, oldest entry first; those past their last attempt are buried.
local max_attempts, cursor = tonumber(ARGV[5]), '0-0'
while #out < 3 * room do
  local r = redis.call('XAUTOCLAIM', KEYS[1], 'workers', ARGV[1], ARGV[4], cursor, 'COUNT', room - #out / 3)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local f = fields(e[2])
    local count = redis.call('XPENDING', KEYS[1], 'workers', e[1], e[1], 1)[1][4]
    local attempt = tonumber(f.a) + count
    if attempt > max_attempts then
      remove(e[1], f.j)
      bury(f.j, attempt - 1, ARGV[6], f.p)
    else
      deliver(f.j, attempt, f.p)
    end
  end
  if cursor == '0-0' then break end
end
-- Then the head of the ready queue.
if #out < 3 * room then
  local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[1], 'COUNT', room - #out / 3, 'STREAMS', KEYS[1], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      local f = fields(e[2])
      deliver(f.j, tonumber(f.a) + 1, f.p)
    end
  end
end
if retries > 0 then redis.call('HINCRBY', KEYS[6], 'retries', retries) end
return out
"#;

/// ARGV: consumer, job id. 1 if acked, 0 if not held.
const ACK: &str = r#"
local entry = held(ARGV[2], ARGV[1])
if not entry then return 0 end
remove(entry, ARGV[2])
return 1
"#;

/// ARGV: consumer, job id, error, max_attempts, backoff base and cap (ms).
const FAIL: &str = r#"
local entry, count = held(ARGV[2], ARGV[1])
if not entry then return {'notheld'} end
local f = fields(redis.call('XRANGE', KEYS[1], entry, entry)[1][2])
local attempt = tonumber(f.a) + count
remove(entry, ARGV[2])
if attempt >= tonumber(ARGV[4]) then
  bury(ARGV[2], attempt, ARGV[3], f.p)
  return {'dead'}
end
-- min(cap, base * 2^(attempt-1)): a double that overflows to inf is capped too.
local delay = math.min(tonumber(ARGV[6]), tonumber(ARGV[5]) * 2 ^ (attempt - 1))
local member = string.format('%020d', redis.call('HINCRBY', KEYS[6], 'fails', 1)) .. ':' .. ARGV[2]
redis.call('ZADD', KEYS[3], now_ms() + delay, member)
redis.call('HSET', KEYS[4], 'p' .. ARGV[2], f.p, 'a' .. ARGV[2], int(attempt))
return {'retry', int(delay)}
"#;

/// ready, in flight, delayed, oldest ready age in ms (-1: none), retries, dead letters.
/// Undelivered entries are exactly those after the group's last delivered id.
const METRICS: &str = r#"
ensure_group()
local now = now_ms()
local pending = redis.call('XPENDING', KEYS[1], 'workers')[1]
local group = fields(redis.call('XINFO', 'GROUPS', KEYS[1])[1])
local head = redis.call('XRANGE', KEYS[1], '(' .. group['last-delivered-id'], '+', 'COUNT', 1)
local oldest = -1
if #head > 0 then
  oldest = math.max(0, math.floor(now) - tonumber(string.match(head[1][1], '^(%d+)')))
end
local meta = redis.call('HMGET', KEYS[6], 'retries', 'dead')
return {redis.call('XLEN', KEYS[1]) - pending, pending, redis.call('ZCARD', KEYS[3]), oldest,
  tonumber(meta[1] or 0), tonumber(meta[2] or 0)}
"#;

/// Every dead letter, oldest first: id, attempts, error, payload each.
const DEAD_LETTERS: &str = r#"
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[5], '-', '+')) do
  local f = fields(e[2])
  table.insert(out, f.j); table.insert(out, f.a); table.insert(out, f.e); table.insert(out, f.p)
end
return out
"#;

/// The queue on Redis Streams, shared by worker processes.
pub struct RedisQueue {
    config: RedisQueueConfig,
    connection: redis::aio::ConnectionManager,
    enqueue: redis::Script,
    claim: redis::Script,
    ack: redis::Script,
    fail: redis::Script,
    metrics: redis::Script,
    dead_letters: redis::Script,
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}{body}"))
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A reply field as text (ids, numbers and errors are ASCII or UTF-8 from us).
fn text(reply: &[Vec<u8>], i: usize) -> String {
    reply.get(i).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

fn unexpected(what: &str, reply: &[Vec<u8>]) -> QueueError {
    QueueError::Unavailable(format!("unexpected {what} reply with {} fields", reply.len()))
}

impl RedisQueue {
    /// Every script gets the same keys, the namespace's six, in this order.
    fn invocation<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let ns = &self.config.namespace;
        let mut invocation = script.prepare_invoke();
        for name in ["ready", "entries", "delayed", "parked", "dead", "meta"] {
            invocation.key(format!("{{{ns}}}:{name}"));
        }
        invocation
    }

    /// Runs a prepared script call within the timeout.
    async fn call<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, QueueError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.config.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(QueueError::Unavailable(e.to_string())),
            Err(_) => Err(QueueError::Unavailable(format!("no answer within {:?}", self.config.timeout))),
        }
    }

    /// Ack or fail `job` by its handler's outcome. Unavailable is retried (the worker
    /// outlives a Redis restart); NotHeld means its lease ran out and another worker
    /// took it, which will run it again: nothing to record.
    async fn settle(&self, worker: &str, job: &Delivery, outcome: Result<(), String>) -> Settled {
        loop {
            let result = match &outcome {
                Ok(()) => RedisJobQueue::ack(self, worker, &job.id).await.map(|()| Settled::Acked),
                Err(error) => RedisJobQueue::fail(self, worker, &job.id, error).await.map(|_| Settled::Failed),
            };
            match result {
                Ok(settled) => return settled,
                // ack and fail never answer InvalidConfig (connect checked it): count it lost.
                Err(QueueError::NotHeld(_) | QueueError::InvalidConfig(_)) => return Settled::Lost,
                Err(QueueError::Unavailable(_)) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }
}

/// How one job's handling ended, for the [`WorkReport`].
enum Settled {
    Acked,
    Failed,
    Lost,
}

type JobFuture<'a> = Pin<Box<dyn Future<Output = Settled> + Send + 'a>>;

/// The jobs a worker is running: each is its handler followed by its ack or fail,
/// all polled together (handlers borrow the caller's handler, so they cannot be
/// spawned as 'static tasks).
#[derive(Default)]
struct Running<'a> {
    jobs: Vec<JobFuture<'a>>,
}

impl<'a> Running<'a> {
    /// The next job to finish; pending forever when none runs (callers guard on that).
    async fn next(&mut self) -> Settled {
        poll_fn(|cx| {
            for i in 0..self.jobs.len() {
                if let Poll::Ready(settled) = self.jobs[i].as_mut().poll(cx) {
                    drop(self.jobs.swap_remove(i));
                    return Poll::Ready(settled);
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Settled {
    fn record(self, report: &mut WorkReport) {
        match self {
            Settled::Acked => report.acked += 1,
            Settled::Failed => report.failed += 1,
            Settled::Lost => {}
        }
    }
}

impl RedisJobQueue for RedisQueue {
    async fn connect(url: &str, config: RedisQueueConfig) -> Result<Self, QueueError> {
        config.queue.validate().map_err(QueueError::InvalidConfig)?;
        let connection = connect_with_timeout(url, config.timeout).await.map_err(QueueError::Unavailable)?;
        Ok(RedisQueue {
            config,
            connection,
            enqueue: script(ENQUEUE),
            claim: script(CLAIM),
            ack: script(ACK),
            fail: script(FAIL),
            metrics: script(METRICS),
            dead_letters: script(DEAD_LETTERS),
        })
    }

    async fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Result<Enqueued, QueueError> {
        let mut invocation = self.invocation(&self.enqueue);
        let window = millis(self.config.queue.dedup_window);
        // A zero window remembers nothing (and PX 0 is an error in Redis).
        if let (Some(key), true) = (dedup_key, window > 0) {
            invocation.key(format!("{{{}}}:dedup:{key}", self.config.namespace));
        }
        invocation.arg(payload).arg(window);
        let reply: Vec<Vec<u8>> = self.call(&invocation).await?;
        let id = JobId(text(&reply, 1));
        match text(&reply, 0).as_str() {
            "new" => Ok(Enqueued::New(id)),
            "dup" => Ok(Enqueued::Duplicate(id)),
            _ => Err(unexpected("enqueue", &reply)),
        }
    }

    async fn claim(&self, worker: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let queue = &self.config.queue;
        let mut invocation = self.invocation(&self.claim);
        invocation.arg(worker).arg(max).arg(queue.max_in_flight).arg(millis(queue.visibility_timeout));
        invocation.arg(queue.max_attempts).arg(LEASE_EXPIRED);
        let reply: Vec<Vec<u8>> = self.call(&invocation).await?;
        reply
            .chunks(3)
            .map(|chunk| match chunk {
                [id, attempt, payload] => Ok(Delivery {
                    id: JobId(String::from_utf8_lossy(id).into_owned()),
                    payload: payload.clone(),
                    attempt: String::from_utf8_lossy(attempt).parse().map_err(|_| unexpected("claim", &reply))?,
                }),
                _ => Err(unexpected("claim", &reply)),
            })
            .collect()
    }

    async fn ack(&self, worker: &str, id: &JobId) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&self.ack);
        invocation.arg(worker).arg(&id.0);
        match self.call::<i64>(&invocation).await? {
            1 => Ok(()),
            _ => Err(QueueError::NotHeld(id.clone())),
        }
    }

    async fn fail(&self, worker: &str, id: &JobId, error: &str) -> Result<Failed, QueueError> {
        let queue = &self.config.queue;
        let mut invocation = self.invocation(&self.fail);
        invocation.arg(worker).arg(&id.0).arg(error).arg(queue.max_attempts);
        invocation.arg(millis(queue.backoff_base)).arg(millis(queue.backoff_cap));
        let reply: Vec<Vec<u8>> = self.call(&invocation).await?;
        match text(&reply, 0).as_str() {
            "notheld" => Err(QueueError::NotHeld(id.clone())),
            "dead" => Ok(Failed::DeadLettered),
            "retry" => {
                let ms = text(&reply, 1).parse().map_err(|_| unexpected("fail", &reply))?;
                Ok(Failed::RetryIn(std::time::Duration::from_millis(ms)))
            }
            _ => Err(unexpected("fail", &reply)),
        }
    }

    async fn metrics(&self) -> Result<Metrics, QueueError> {
        let reply: Vec<i64> = self.call(&self.invocation(&self.metrics)).await?;
        let [ready, in_flight, delayed, oldest, retries, dead_letters] = reply[..] else {
            return Err(QueueError::Unavailable(format!("unexpected metrics reply {reply:?}")));
        };
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Metrics {
            ready: count(ready),
            in_flight: count(in_flight),
            delayed: count(delayed),
            oldest_ready_age: u64::try_from(oldest).ok().map(std::time::Duration::from_millis),
            retries: count(retries),
            dead_letters: count(dead_letters),
        })
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let reply: Vec<Vec<u8>> = self.call(&self.invocation(&self.dead_letters)).await?;
        reply
            .chunks(4)
            .map(|chunk| match chunk {
                [id, attempts, error, payload] => Ok(DeadLetter {
                    id: JobId(String::from_utf8_lossy(id).into_owned()),
                    payload: payload.clone(),
                    attempts: String::from_utf8_lossy(attempts).parse().map_err(|_| unexpected("dead", &reply))?,
                    last_error: String::from_utf8_lossy(error).into_owned(),
                }),
                _ => Err(unexpected("dead letters", &reply)),
            })
            .collect()
    }

    async fn work(&self, worker: &str, handler: &dyn JobHandler, mut stop: watch::Receiver<bool>) -> WorkReport {
        let limit = usize::try_from(self.config.queue.max_in_flight).unwrap_or(usize::MAX);
        let mut report = WorkReport::default();
        let mut running = Running::default();
        // A dropped sender can never say stop; treat it as having said it.
        let stopped = |stop: &watch::Receiver<bool>| *stop.borrow() || stop.has_changed().is_err();
        // After a claim that found nothing (or failed), wait for an event before the next.
        let mut idle = false;
        loop {
            if stopped(&stop) {
                break;
            }
            let room = limit.saturating_sub(running.jobs.len());
            if room > 0 && !idle {
                // A claim is never cancelled half-way (its deliveries would sit leased
                // until the visibility timeout); the running jobs progress meanwhile.
                let claim = RedisJobQueue::claim(self, worker, room);
                tokio::pin!(claim);
                let claimed = loop {
                    tokio::select! {
                        claimed = &mut claim => break claimed,
                        settled = running.next(), if !running.jobs.is_empty() => settled.record(&mut report),
                    }
                };
                match claimed {
                    // Jobs claimed as stop arrived are not started: they wait out their
                    // lease and go to another worker, as a dead worker's would.
                    Ok(jobs) if !stopped(&stop) => {
                        idle = jobs.len() < room;
                        for job in jobs {
                            running.jobs.push(Box::pin(async move {
                                let outcome = handler.handle(&job).await;
                                self.settle(worker, &job, outcome).await
                            }));
                        }
                    }
                    Ok(_) => break,
                    Err(_) => idle = true,
                }
                continue;
            }
            // Full, or nothing to claim: wait for a job to finish, stop, or the poll.
            tokio::select! {
                settled = running.next(), if !running.jobs.is_empty() => {
                    settled.record(&mut report);
                    idle = false;
                }
                _ = stop.changed() => {}
                _ = tokio::time::sleep(POLL_INTERVAL), if room > 0 => idle = false,
            }
        }
        // Graceful shutdown: no new handler; the running ones finish and are recorded.
        while !running.jobs.is_empty() {
            running.next().await.record(&mut report);
        }
        report
    }
}
