//! Buggy Redis job queues that levels 4 and 5 must reject: the reference's design (one
//! Lua script per operation on a stream, a consumer group, a sorted set of delayed
//! jobs) with every bug a named switch, as candidates write them. `Flawed<NONE>` passes
//! every Redis case; `Flawed<B>` must be rejected by the case [`mutants`] names for it.

use harness::job_queue::{
    DeadLetter, Delivery, Enqueued, Failed, JobHandler, JobId, Metrics, QueueError, RedisJobQueue, RedisQueueConfig,
    WorkReport,
};
use tokio::sync::watch;

pub const NONE: u8 = 0;
/// `work` acks a job as soon as it is claimed, then runs the handler: a kill between
/// the two loses the job.
pub const ACK_BEFORE_HANDLER: u8 = 1;
/// `claim` reads only new entries (XREADGROUP `>`), never XAUTOCLAIM: a dead worker's
/// jobs stay pending forever.
pub const NO_RECLAIM: u8 = 2;
/// The dedup check (GET) is its own round trip before the enqueue script: two
/// concurrent enqueues with one key both see it free and both add.
pub const DEDUP_TWO_ROUND_TRIPS: u8 = 3;
/// `fail` schedules the retry but never XACKs the entry: it stays pending.
pub const FAIL_WITHOUT_ACK: u8 = 4;
/// `claim` ignores what the worker already holds: no back-pressure.
pub const NO_BACK_PRESSURE: u8 = 5;
/// `work` returns when a call fails with Unavailable.
pub const WORK_RETURNS_ON_UNAVAILABLE: u8 = 6;
/// A failed job is due at once: RetryIn says the backoff, the sorted set ignores it.
pub const RETRY_WITHOUT_DELAY: u8 = 7;
/// Dedup keys are SET without PX: they never expire.
pub const DEDUP_WITHOUT_EXPIRY: u8 = 8;
/// On stop, `work` returns at once, abandoning the running handlers' outcomes.
pub const STOP_ABANDONS_RUNNING: u8 = 9;
/// After a claim that found nothing, `work` claims again at once: it spins on Redis.
pub const BUSY_POLL: u8 = 10;
/// `work` claims even while it holds max_in_flight jobs (the script gives it nothing),
/// and again at once: it spins on Redis while full.
pub const CLAIMS_WHILE_FULL: u8 = 11;
/// `work` looks at stop only at the top of its loop: the jobs of a claim answered after
/// stop came are started anyway.
pub const STARTS_CLAIMED_AFTER_STOP: u8 = 12;

/// The switches applied to the scripts: (bug, text in the reference, replacement).
const SCRIPT_BUGS: [(u8, &str, &str); 6] = [
    (NO_RECLAIM, "while #out < 3 * room do", "while false do"),
    (DEDUP_TWO_ROUND_TRIPS, "if first then return {'dup', first} end", ""),
    (FAIL_WITHOUT_ACK, "remove(entry, ARGV[2])\nif attempt", "redis.call('HDEL', KEYS[2], ARGV[2])\nif attempt"),
    (NO_BACK_PRESSURE, "local room = math.min(tonumber(ARGV[2]), limit - held)", "local room = tonumber(ARGV[2])"),
    (RETRY_WITHOUT_DELAY, "now_ms() + delay", "now_ms()"),
    (DEDUP_WITHOUT_EXPIRY, "redis.call('SET', KEYS[7], id, 'PX', ARGV[2])", "redis.call('SET', KEYS[7], id)"),
];

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

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use harness::job_queue::{LEASE_EXPIRED, POLL_INTERVAL};
use harness::redis_server::connect_with_timeout;

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

/// The reference's queue with bug `BUG` switched on.
pub struct Flawed<const BUG: u8> {
    config: RedisQueueConfig,
    connection: redis::aio::ConnectionManager,
    enqueue: redis::Script,
    claim: redis::Script,
    ack: redis::Script,
    fail: redis::Script,
    metrics: redis::Script,
    dead_letters: redis::Script,
}

fn script(body: &str, bug: u8) -> redis::Script {
    let mut text = format!("{PRELUDE}{body}");
    for (switch, from, to) in SCRIPT_BUGS {
        if switch == bug {
            text = text.replace(from, to);
        }
    }
    redis::Script::new(&text)
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

impl<const BUG: u8> Flawed<BUG> {
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

impl<const BUG: u8> RedisJobQueue for Flawed<BUG> {
    async fn connect(url: &str, config: RedisQueueConfig) -> Result<Self, QueueError> {
        config.queue.validate().map_err(QueueError::InvalidConfig)?;
        let connection = connect_with_timeout(url, config.timeout).await.map_err(QueueError::Unavailable)?;
        Ok(Flawed {
            config,
            connection,
            enqueue: script(ENQUEUE, BUG),
            claim: script(CLAIM, BUG),
            ack: script(ACK, BUG),
            fail: script(FAIL, BUG),
            metrics: script(METRICS, BUG),
            dead_letters: script(DEAD_LETTERS, BUG),
        })
    }

    async fn enqueue(&self, payload: &[u8], dedup_key: Option<&str>) -> Result<Enqueued, QueueError> {
        let mut invocation = self.invocation(&self.enqueue);
        let window = millis(self.config.queue.dedup_window);
        // A zero window remembers nothing (and PX 0 is an error in Redis).
        if let (Some(key), true) = (dedup_key, window > 0) {
            let key = format!("{{{}}}:dedup:{key}", self.config.namespace);
            if BUG == DEDUP_TWO_ROUND_TRIPS {
                let mut connection = self.connection.clone();
                let first: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| QueueError::Unavailable(e.to_string()))?;
                if let Some(first) = first {
                    return Ok(Enqueued::Duplicate(JobId(first)));
                }
            }
            invocation.key(key);
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
            if (room > 0 || BUG == CLAIMS_WHILE_FULL) && (!idle || BUG == BUSY_POLL) {
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
                    Ok(jobs) if !stopped(&stop) || BUG == STARTS_CLAIMED_AFTER_STOP => {
                        idle = jobs.len() < room;
                        for job in jobs {
                            running.jobs.push(Box::pin(async move {
                                if BUG == ACK_BEFORE_HANDLER {
                                    let settled = self.settle(worker, &job, Ok(())).await;
                                    let _ = handler.handle(&job).await;
                                    return settled;
                                }
                                let outcome = handler.handle(&job).await;
                                self.settle(worker, &job, outcome).await
                            }));
                        }
                    }
                    Ok(_) => break,
                    Err(_) if BUG == WORK_RETURNS_ON_UNAVAILABLE => break,
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
        while !running.jobs.is_empty() && BUG != STOP_ABANDONS_RUNNING {
            running.next().await.record(&mut report);
        }
        report
    }
}

// ---------------------------------------------------------------------------------
// The list the self-check runs
// ---------------------------------------------------------------------------------

use harness::job_queue::{redis_factory, redis_suite};
use harness::Case;

macro_rules! redis_mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("job_queue_redis::", stringify!($bug)),
            suite: redis_suite(redis_factory::<Flawed<$bug>>()),
            rejected_by: $case,
        }
    };
}

/// Every bug, with the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    vec![
        redis_mutant!(NO_BACK_PRESSURE, "job_queue::l4_redis_streams::queue_basics"),
        redis_mutant!(DEDUP_WITHOUT_EXPIRY, "job_queue::l4_redis_streams::queue_basics"),
        redis_mutant!(DEDUP_TWO_ROUND_TRIPS, "job_queue::l4_redis_streams::dedup"),
        redis_mutant!(NO_RECLAIM, "job_queue::l4_redis_streams::leases_and_retries"),
        redis_mutant!(FAIL_WITHOUT_ACK, "job_queue::l4_redis_streams::leases_and_retries"),
        redis_mutant!(RETRY_WITHOUT_DELAY, "job_queue::l4_redis_streams::leases_and_retries"),
        redis_mutant!(STOP_ABANDONS_RUNNING, "job_queue::l4_redis_streams::graceful_shutdown"),
        redis_mutant!(WORK_RETURNS_ON_UNAVAILABLE, "job_queue::l4_redis_streams::outage"),
        redis_mutant!(BUSY_POLL, "job_queue::l4_redis_streams::polling"),
        redis_mutant!(CLAIMS_WHILE_FULL, "job_queue::l4_redis_streams::polling"),
        redis_mutant!(STARTS_CLAIMED_AFTER_STOP, "job_queue::l4_redis_streams::stop_mid_claim"),
        redis_mutant!(ACK_BEFORE_HANDLER, "job_queue::l5_crashes_and_restarts::kills_and_restarts"),
    ]
}

/// The plain base passes every Redis case but the long ledger run (the reference runs
/// that one; the base differs from it only where a switch is on).
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    let base = redis_suite(redis_factory::<Flawed<NONE>>()).into_iter().filter(|c| c.name != "ledger_10k");
    vec![("mutant_base::job_queue_redis".to_string(), base.collect())]
}
