//! Level 4 of the job queue on a real redis-server, and the object-safe adapter of
//! the Redis queue. Time is the server's, in real milliseconds: leases, delays and
//! dedup windows are only checked as "never earlier than allowed" (measured from
//! before the call that started them to after the call that saw them end) and
//! "eventually" (with generous real-time bounds); exact values and orders only where
//! timing cannot change them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use super::contract::*;
use super::suite::EXERCISE;
use crate::clock::Stopwatch;
use crate::redis_server::{
    fresh_namespace, namespace_ttls, runtime, CommandCounter, RedisServer, CALL_TIMEOUT, OUTAGE_CALL_TIMEOUT,
};
use crate::suite::{Case, CaseError, CaseResult, Hints, Level, THREADED_DEADLINE as THREADED};

use crate::BoxFuture;

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

/// Level 4.
pub const L4: Level = Level { number: 4, name: "redis_streams" };

/// Server time is read in whole milliseconds: a lease or delay may end up to this much
/// before the client's stopwatch says it should (the server floors the instant it
/// started), so "never earlier" checks allow it.
pub(super) const MS_SLACK: Duration = Duration::from_millis(2);

/// A call that has not returned after this long (real time) has hung.
pub(super) const LIVENESS: Duration = Duration::from_secs(10);

/// A lease or a delay that ran out is acted on within this much real time (20 times
/// the longest one in these cases, and 60 times POLL_INTERVAL).
const EVENTUALLY: Duration = Duration::from_secs(3);

/// A whole-millisecond configuration: visibility timeout, attempts, backoff base and
/// cap, max in flight, dedup window.
pub(super) fn queue_config(
    visibility_ms: u64,
    max_attempts: u32,
    base_ms: u64,
    cap_ms: u64,
    max_in_flight: u32,
    dedup_ms: u64,
) -> QueueConfig {
    let ms = Duration::from_millis;
    QueueConfig {
        visibility_timeout: ms(visibility_ms),
        max_attempts,
        backoff_base: ms(base_ms),
        backoff_cap: ms(cap_ms),
        max_in_flight,
        dedup_window: ms(dedup_ms),
    }
}

pub(super) fn redis_config(queue: QueueConfig, label: &str) -> RedisQueueConfig {
    RedisQueueConfig { queue, namespace: fresh_namespace(label), timeout: CALL_TIMEOUT }
}

pub(super) async fn connect(
    make: RedisFactory,
    url: &str,
    config: &RedisQueueConfig,
) -> Result<Arc<dyn ErasedRedisQueue>, CaseError> {
    match tokio::time::timeout(LIVENESS, make(url.to_string(), config.clone())).await {
        Ok(Ok(queue)) => Ok(queue),
        Ok(Err(e)) => Err(CaseError::failed(format!("connect({url}, {config:?}) -> Err({e:?})"))),
        Err(_) => Err(CaseError::failed(format!("connect({url}) had not returned after {LIVENESS:?}"))),
    }
}

/// A call's result, or a failure if it hung or Redis was unavailable (these cases
/// are not about outages).
pub(super) async fn ok<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, CaseError> {
    match tokio::time::timeout(LIVENESS, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CaseError::failed(format!("{what} -> Err({e:?}), expected Ok"))),
        Err(_) => Err(CaseError::failed(format!("{what} had not returned after {LIVENESS:?}"))),
    }
}

/// What the case did so far, shown with any failure.
#[derive(Default)]
struct Log(String);

impl Log {
    fn note(&mut self, line: impl AsRef<str>) {
        self.0.push_str(&format!("{:>4}. {}\n", self.0.lines().count() + 1, line.as_ref()));
    }

    fn fail(&self, why: impl AsRef<str>) -> CaseError {
        CaseError::failed(format!("{}  {}", self.0, why.as_ref()))
    }

    fn expect<T: PartialEq + std::fmt::Debug>(&mut self, call: &str, actual: T, expected: T) -> CaseResult {
        if actual == expected {
            self.note(format!("{call} -> {actual:?}"));
            Ok(())
        } else {
            self.note(format!("{call} -> {actual:?}"));
            Err(self.fail(format!("expected {expected:?}   <-- first difference")))
        }
    }
}

fn new_id(enqueued: &Enqueued, log: &Log) -> Result<JobId, CaseError> {
    match enqueued {
        Enqueued::New(id) => Ok(id.clone()),
        other => Err(log.fail(format!("expected New(_) for a job never enqueued before, got {other:?}"))),
    }
}

/// Order, payloads, ids, dedup, ack and back-pressure, metrics, then a key audit.
fn queue_basics(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    rt.block_on(async {
        let config = redis_config(queue_config(60_000, 3, 1_000, 8_000, 3, 60_000), "jq-basics");
        let mut log = Log::default();
        // A config `validate` refuses is a typed error, before any connection is made.
        let mut invalid = config.clone();
        invalid.queue.max_attempts = 0;
        let refused = tokio::time::timeout(LIVENESS, make(server.url().to_string(), invalid.clone())).await;
        let expected = QueueError::InvalidConfig(ConfigError::Zero("max_attempts"));
        match refused {
            Ok(Err(e)) if e == expected => {}
            Ok(Err(e)) => {
                return Err(log.fail(format!("connect({:?}) -> Err({e:?}), expected Err({expected:?})", invalid.queue)))
            }
            Ok(Ok(_)) => {
                return Err(log.fail(format!("connect({:?}) -> Ok, expected Err({expected:?})", invalid.queue)))
            }
            Err(_) => return Err(log.fail(format!("connect({:?}) had not returned after {LIVENESS:?}", invalid.queue))),
        }
        let q = connect(make, server.url(), &config).await?;
        log.note(format!("connect({:?})", config.queue));
        let started = Stopwatch::start();
        let payloads: [&[u8]; 4] = [b"\x00\xffbinary\x00", "unicodé ✓".as_bytes(), b"", b"fourth"];
        let key = "clé-🔑";
        let mut ids = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            let dedup = (i == 1).then_some(key);
            let enqueued = ok("enqueue", q.enqueue(payload, dedup)).await?;
            log.note(format!("enqueue({payload:?}, {dedup:?}) -> {enqueued:?}"));
            ids.push(new_id(&enqueued, &log)?);
        }
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != ids.len() {
            return Err(log.fail("two jobs got the same id"));
        }
        let again = ok("enqueue", q.enqueue(b"other", Some(key))).await?;
        log.expect(&format!("enqueue(b\"other\", {key:?})"), again, Enqueued::Duplicate(ids[1].clone()))?;
        let metrics = ok("metrics", q.metrics()).await?;
        let waited = started.elapsed() + MS_SLACK;
        let age_fits = metrics.oldest_ready_age.is_some_and(|age| age <= waited);
        let expected = Metrics { ready: 4, oldest_ready_age: metrics.oldest_ready_age, ..Metrics::default() };
        log.expect("metrics()", metrics, expected)?;
        if !age_fits {
            return Err(log.fail(format!(
                "oldest_ready_age must be Some(age) with age at most the {waited:?} since the first enqueue started"
            )));
        }
        let delivery = |i: usize| Delivery { id: ids[i].clone(), payload: payloads[i].to_vec(), attempt: 1 };
        let claimed = ok("claim", q.claim("w1", 2)).await?;
        log.expect("claim(\"w1\", 2)", claimed, vec![delivery(0), delivery(1)])?;
        // Back-pressure: w1 holds 2 of max_in_flight 3.
        let claimed = ok("claim", q.claim("w1", 10)).await?;
        log.expect("claim(\"w1\", 10)", claimed, vec![delivery(2)])?;
        let claimed = ok("claim", q.claim("w1", 10)).await?;
        log.expect("claim(\"w1\", 10)", claimed, vec![])?;
        let acked = q.ack("w2", &ids[0]).await;
        log.expect("ack(\"w2\", job 1)", acked, Err(QueueError::NotHeld(ids[0].clone())))?;
        let acked = q.ack("w1", &ids[0]).await;
        log.expect("ack(\"w1\", job 1)", acked, Ok(()))?;
        let acked = q.ack("w1", &ids[0]).await;
        log.expect("ack(\"w1\", job 1)", acked, Err(QueueError::NotHeld(ids[0].clone())))?;
        let acked = q.ack("w1", &ids[3]).await;
        log.expect("ack(\"w1\", job 4) (never delivered)", acked, Err(QueueError::NotHeld(ids[3].clone())))?;
        let claimed = ok("claim", q.claim("w1", 10)).await?;
        log.expect("claim(\"w1\", 10)", claimed, vec![delivery(3)])?;
        let metrics = ok("metrics", q.metrics()).await?;
        log.expect("metrics()", metrics, Metrics { in_flight: 3, ..Metrics::default() })?;
        for (i, id) in ids.iter().enumerate().skip(1) {
            let acked = q.ack("w1", id).await;
            log.expect(&format!("ack(\"w1\", job {})", i + 1), acked, Ok(()))?;
        }
        // A done job's key is still within its window.
        let again = ok("enqueue", q.enqueue(b"other", Some(key))).await?;
        log.expect(&format!("enqueue(b\"other\", {key:?})"), again, Enqueued::Duplicate(ids[1].clone()))?;
        // Ten more keys: the dedup state must expire, whatever names it has.
        for i in 0..10 {
            let enqueued = ok("enqueue", q.enqueue(b"x", Some(&format!("key-{i}")))).await?;
            new_id(&enqueued, &log)?;
        }
        log.note("10 enqueues with dedup keys key-0..key-9 -> New");
        audit_keys(&server, &config, &log, 10).await
    })
}

/// Every key in the namespace carries the hash tag `{namespace}`; fewer than `dedup_keys`
/// live without expiry (the dedup state expires); none lives longer than the
/// configuration's longest duration (a TTL in the wrong unit).
async fn audit_keys(server: &RedisServer, config: &RedisQueueConfig, log: &Log, dedup_keys: usize) -> CaseResult {
    let ns = &config.namespace;
    let inspected: Result<Vec<(String, i64)>, redis::RedisError> = async {
        let mut raw = redis::Client::open(server.url())?.get_multiplexed_async_connection().await?;
        namespace_ttls(&mut raw, ns).await
    }
    .await;
    let keys = inspected.map_err(|e| CaseError::failed(format!("inspecting Redis: {e}")))?;
    let untagged: Vec<&String> =
        keys.iter().map(|(k, _)| k).filter(|k| crate::redis_server::hash_tag(k) != Some(ns.as_str())).collect();
    let forever: Vec<&String> = keys.iter().filter(|(_, ttl)| *ttl < 0).map(|(k, _)| k).collect();
    let q = &config.queue;
    let longest = [q.visibility_timeout, q.backoff_cap, q.dedup_window].into_iter().max().unwrap_or_default();
    let too_long: Vec<&(String, i64)> = keys
        .iter()
        .filter(|(_, ttl)| u128::try_from(*ttl).is_ok_and(|ttl| ttl > longest.as_millis() + 1_000))
        .collect();
    if keys.is_empty() || !untagged.is_empty() {
        return Err(log.fail(format!(
            "keys in Redis containing {ns:?}: {keys:?}; every key must start with the hash tag {{{ns}}} (one Cluster slot)"
        )));
    }
    if forever.len() >= dedup_keys {
        return Err(log.fail(format!(
            "{} keys without expiry after {dedup_keys} dedup keys: {forever:?}; a dedup key must expire after the dedup window",
            forever.len()
        )));
    }
    if !too_long.is_empty() {
        return Err(log.fail(format!(
            "keys expiring later than the configuration's longest duration ({longest:?}): {too_long:?} (PTTL in ms): a TTL \
             in the wrong unit?"
        )));
    }
    Ok(())
}

/// Dedup windows in real time: a key is honoured for the window from its first
/// enqueue (a duplicate does not restart it), then forgotten. Concurrent enqueues with
/// one key through several connections add exactly one job.
fn dedup(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    rt.block_on(async {
        let window = Duration::from_millis(200);
        let config = redis_config(queue_config(60_000, 3, 1_000, 8_000, 3, 200), "jq-dedup");
        let q = connect(make, server.url(), &config).await?;
        let mut log = Log::default();
        log.note(format!("connect({:?})", config.queue));
        let first_started = Stopwatch::start();
        let first = ok("enqueue", q.enqueue(b"a", Some("k"))).await?;
        let first_returned = first_started.elapsed();
        log.note(format!("enqueue(b\"a\", \"k\") -> {first:?}"));
        let id = new_id(&first, &log)?;
        tokio::time::sleep(window * 3 / 5).await;
        let second = ok("enqueue", q.enqueue(b"b", Some("k"))).await?;
        let second_returned = first_started.elapsed();
        log.note(format!("{second_returned:?} after the first enqueue started: enqueue(b\"b\", \"k\") -> {second:?}"));
        if second_returned < window && second != Enqueued::Duplicate(id.clone()) {
            return Err(log.fail(format!("expected Duplicate({id:?}): the key was enqueued less than {window:?} ago")));
        }
        // Past the first enqueue's window (not the duplicate's): a new job.
        let wait = (first_returned + window + MS_SLACK).saturating_sub(first_started.elapsed());
        tokio::time::sleep(wait).await;
        let third = ok("enqueue", q.enqueue(b"c", Some("k"))).await?;
        log.note(format!(
            "{:?} after the first enqueue returned: enqueue(b\"c\", \"k\") -> {third:?}",
            first_started.elapsed().saturating_sub(first_returned)
        ));
        if !matches!(&third, Enqueued::New(new) if *new != id) {
            return Err(log.fail(format!(
                "expected New with a new id: the key's window ({window:?}) from its first enqueue is over, and a \
                 duplicate does not restart it"
            )));
        }
        // Races: 12 enqueues with one key at once, through 4 connections.
        let config = redis_config(config.queue, "jq-dedup-race");
        let mut queues = Vec::new();
        for _ in 0..4 {
            queues.push(connect(make, server.url(), &config).await?);
        }
        for round in 0..10 {
            let key = format!("race-{round}");
            let calls: Vec<_> = (0..12)
                .map(|i| {
                    let (q, key) = (Arc::clone(&queues[i % 4]), key.clone());
                    tokio::spawn(async move { q.enqueue(b"r", Some(&key)).await })
                })
                .collect();
            let mut answers = Vec::new();
            for call in calls {
                answers.push(call.await.map_err(|e| CaseError::failed(format!("enqueue task: {e}")))?);
            }
            let new: Vec<&JobId> =
                answers.iter().filter_map(|a| if let Ok(Enqueued::New(id)) = a { Some(id) } else { None }).collect();
            let all_same = answers.iter().all(|a| match a {
                Ok(Enqueued::New(id) | Enqueued::Duplicate(id)) => new.first() == Some(&id),
                Err(_) => false,
            });
            if new.len() != 1 || !all_same {
                return Err(CaseError::failed(format!(
                    "12 concurrent enqueues with dedup key {key:?} through 4 connections: {answers:?}; expected exactly \
                     one New(id) and Duplicate(that id) for every other"
                )));
            }
        }
        let metrics = ok("metrics", queues[0].metrics()).await?;
        if metrics.ready != 10 {
            return Err(CaseError::failed(format!(
                "after 10 rounds of racing enqueues (one job each), metrics() -> {metrics:?}, expected ready: 10"
            )));
        }
        Ok(())
    })
}

/// Claims until `id` is delivered (or dead-lettered, with `dead`), every 20 ms, within
/// the liveness bound: the delivery and when (since `since`) it was seen.
async fn claim_until(
    q: &dyn ErasedRedisQueue,
    worker: &str,
    id: &JobId,
    since: Stopwatch,
    log: &mut Log,
) -> Result<(Option<Delivery>, Duration), CaseError> {
    loop {
        let claimed = ok("claim", q.claim(worker, 10)).await?;
        let seen = since.elapsed();
        if let Some(delivery) = claimed.iter().find(|d| d.id == *id) {
            log.note(format!("{seen:?} later: claim({worker:?}, 10) -> {claimed:?}"));
            return Ok((Some(delivery.clone()), seen));
        }
        if !claimed.is_empty() {
            log.note(format!("claim({worker:?}, 10) -> {claimed:?}"));
            return Err(log.fail("expected no other job: only one was enqueued"));
        }
        let dead = ok("dead_letters", q.dead_letters()).await?;
        if dead.iter().any(|d| d.id == *id) {
            log.note(format!("{seen:?} later: claim({worker:?}, 10) -> [] and dead_letters() -> {dead:?}"));
            return Ok((None, seen));
        }
        if seen > EVENTUALLY {
            return Err(log.fail(format!(
                "{id:?} was neither delivered again nor dead-lettered {EVENTUALLY:?} after its lease or delay began \
                 (both are at most 150ms)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A lease runs out after the visibility timeout (never before): another worker takes
/// the job as a new attempt and the first can no longer ack it. A failed attempt waits
/// out its backoff (never less) and the last one makes a dead letter, with its error
/// and attempts; a last attempt whose lease ran out too, with LEASE_EXPIRED.
fn leases_and_retries(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    rt.block_on(async {
        let visibility = Duration::from_millis(150);
        let config = redis_config(queue_config(150, 3, 100, 150, 4, 60_000), "jq-leases");
        let q = connect(make, server.url(), &config).await?;
        let mut log = Log::default();
        log.note(format!("connect({:?})", config.queue));
        let id = new_id(&ok("enqueue", q.enqueue(b"job", None)).await?, &log)?;
        log.note(format!("enqueue(b\"job\", None) -> New({id:?})"));
        let leased = Stopwatch::start();
        let claimed = ok("claim", q.claim("w1", 1)).await?;
        log.expect(
            "claim(\"w1\", 1)",
            claimed,
            vec![Delivery { id: id.clone(), payload: b"job".to_vec(), attempt: 1 }],
        )?;
        let (delivery, seen) = claim_until(q.as_ref(), "w2", &id, leased, &mut log).await?;
        if seen + MS_SLACK < visibility {
            return Err(log.fail(format!("taken from w1 {seen:?} after its claim: before the visibility timeout")));
        }
        let again = Delivery { id: id.clone(), payload: b"job".to_vec(), attempt: 2 };
        log.expect("(the delivery)", delivery, Some(again))?;
        let acked = q.ack("w1", &id).await;
        log.expect("ack(\"w1\", job)", acked, Err(QueueError::NotHeld(id.clone())))?;
        // Attempt 2 fails: delayed by backoff(2) = min(150, 100 * 2) = 150 ms.
        let failed_at = Stopwatch::start();
        let failed = q.fail("w2", &id, "boom").await;
        log.expect("fail(\"w2\", job, \"boom\")", failed, Ok(Failed::RetryIn(Duration::from_millis(150))))?;
        let metrics = ok("metrics", q.metrics()).await?;
        log.expect("metrics()", metrics, Metrics { delayed: 1, retries: 1, ..Metrics::default() })?;
        let (delivery, seen) = claim_until(q.as_ref(), "w1", &id, failed_at, &mut log).await?;
        if seen + MS_SLACK < Duration::from_millis(150) {
            return Err(log.fail(format!("delivered {seen:?} after the fail: before its backoff of 150ms")));
        }
        let last = Delivery { id: id.clone(), payload: b"job".to_vec(), attempt: 3 };
        log.expect("(the delivery)", delivery, Some(last))?;
        let failed = q.fail("w1", &id, "last error").await;
        log.expect("fail(\"w1\", job, \"last error\")", failed, Ok(Failed::DeadLettered))?;
        let failed = q.fail("w1", &id, "again").await;
        log.expect("fail(\"w1\", job, \"again\")", failed, Err(QueueError::NotHeld(id.clone())))?;
        let dead = ok("dead_letters", q.dead_letters()).await?;
        let letter =
            DeadLetter { id: id.clone(), payload: b"job".to_vec(), attempts: 3, last_error: "last error".into() };
        log.expect("dead_letters()", dead, vec![letter.clone()])?;
        let metrics = ok("metrics", q.metrics()).await?;
        log.expect("metrics()", metrics, Metrics { retries: 2, dead_letters: 1, ..Metrics::default() })?;
        // One attempt only, and its lease runs out: a dead letter at the next claim.
        let config = redis_config(queue_config(100, 1, 100, 100, 4, 60_000), "jq-lease-dead");
        let q = connect(make, server.url(), &config).await?;
        log.note(format!("connect({:?}) (a new namespace)", config.queue));
        let id = new_id(&ok("enqueue", q.enqueue(b"once", None)).await?, &log)?;
        let leased = Stopwatch::start();
        let claimed = ok("claim", q.claim("w1", 1)).await?;
        log.expect("claim(\"w1\", 1)", claimed.len(), 1)?;
        let (delivery, seen) = claim_until(q.as_ref(), "w2", &id, leased, &mut log).await?;
        if delivery.is_some() {
            return Err(log.fail("delivered again after its only attempt: it must become a dead letter"));
        }
        if seen + MS_SLACK < Duration::from_millis(100) {
            return Err(log.fail(format!("dead-lettered {seen:?} after its claim: before the visibility timeout")));
        }
        let dead = ok("dead_letters", q.dead_letters()).await?;
        let letter =
            DeadLetter { id: id.clone(), payload: b"once".to_vec(), attempts: 1, last_error: LEASE_EXPIRED.into() };
        log.expect("dead_letters()", dead, vec![letter])?;
        let acked = q.ack("w1", &id).await;
        log.expect("ack(\"w1\", job)", acked, Err(QueueError::NotHeld(id.clone())))?;
        let metrics = ok("metrics", q.metrics()).await?;
        log.expect("metrics()", metrics, Metrics { dead_letters: 1, ..Metrics::default() })
    })
}

/// The grader's handler for `work`: payload `fail` fails at once; every other job
/// blocks until the case lets it go. Counts what runs at once and what started late.
struct GatedHandler {
    gate: Semaphore,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    started: Mutex<Vec<JobId>>,
    stop_sent: AtomicBool,
    started_after_stop: Mutex<Vec<JobId>>,
}

impl JobHandler for GatedHandler {
    fn handle<'a>(&'a self, job: &'a Delivery) -> HandlerFuture<'a> {
        Box::pin(async move {
            if self.stop_sent.load(Ordering::SeqCst) {
                self.started_after_stop.lock().unwrap_or_else(|e| e.into_inner()).push(job.id.clone());
            }
            if job.payload == b"fail" {
                return Err("handler failed".to_string());
            }
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            self.started.lock().unwrap_or_else(|e| e.into_inner()).push(job.id.clone());
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

impl GatedHandler {
    fn new() -> Self {
        GatedHandler {
            gate: Semaphore::new(0),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            started: Mutex::default(),
            stop_sent: AtomicBool::new(false),
            started_after_stop: Mutex::default(),
        }
    }

    fn started(&self) -> usize {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until `n` handlers have started, within the liveness bound.
    async fn until_started(&self, n: usize, log: &Log) -> CaseResult {
        let waited = Stopwatch::start();
        while self.started() < n {
            if waited.elapsed() > LIVENESS {
                return Err(log.fail(format!(
                    "only {} handlers started within {LIVENESS:?}, expected {n} (jobs were ready and the worker had room)",
                    self.started()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// `work` with a handler the grader holds: at most max_in_flight handlers at once; a
/// finished one makes room for the next; a handler's Err is failed; after stop no
/// handler starts, the running ones finish and are acked, and `work` returns.
fn graceful_shutdown(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    rt.block_on(async {
        let config = redis_config(queue_config(60_000, 3, 60_000, 60_000, 3, 60_000), "jq-work");
        let q = connect(make, server.url(), &config).await?;
        let mut log = Log::default();
        log.note(format!("connect({:?})", config.queue));
        let payloads: Vec<&[u8]> = vec![b"fail", b"2", b"3", b"4", b"5", b"6", b"7", b"8"];
        for payload in &payloads {
            ok("enqueue", q.enqueue(payload, None)).await?;
        }
        log.note("8 jobs enqueued: the first one's handler returns Err, the others block until let go");
        let handler = GatedHandler::new();
        let (stop, stopped) = watch::channel(false);
        let work = q.work("w", &handler, stopped);
        tokio::pin!(work);
        let drive = async {
            handler.until_started(3, &log).await?;
            tokio::time::sleep(POLL_INTERVAL * 3).await;
            let at_once = handler.most_at_once.load(Ordering::SeqCst);
            if at_once != 3 || handler.started() != 3 {
                return Err(log.fail(format!(
                    "with max_in_flight 3: {at_once} handlers ran at once and {} started while 3 were blocked; \
                     expected 3 and 3",
                    handler.started()
                )));
            }
            let mut log = Log(log.0.clone());
            log.note("work(\"w\") started: 3 handlers blocked; 2 of them let go");
            handler.gate.add_permits(2);
            handler.until_started(5, &log).await?;
            handler.stop_sent.store(true, Ordering::SeqCst);
            let _ = stop.send(true);
            handler.gate.add_permits(100);
            log.note("5 started; stop sent, then every blocked handler let go");
            Ok(log)
        };
        let mut log = tokio::select! {
            report = &mut work => {
                return Err(log.fail(format!("work returned {report:?} before stop was sent")));
            }
            driven = drive => driven?,
        };
        let report = match tokio::time::timeout(LIVENESS, &mut work).await {
            Ok(report) => report,
            Err(_) => {
                return Err(log.fail(format!("work had not returned {LIVENESS:?} after stop and every handler done")))
            }
        };
        log.expect("work(\"w\") returned", report, WorkReport { acked: 5, failed: 1 })?;
        let late = handler.started_after_stop.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !late.is_empty() || handler.most_at_once.load(Ordering::SeqCst) > 3 {
            return Err(log.fail(format!(
                "handlers started after stop: {late:?}; most at once: {} (max_in_flight 3)",
                handler.most_at_once.load(Ordering::SeqCst)
            )));
        }
        let metrics = ok("metrics", q.metrics()).await?;
        let expected =
            Metrics { ready: 2, delayed: 1, oldest_ready_age: metrics.oldest_ready_age, ..Metrics::default() };
        log.expect("metrics()", metrics, expected)
    })
}

/// How often `work` asks Redis for jobs, counted at a proxy in front of the server:
/// with nothing to claim it waits POLL_INTERVAL between claims (it does not spin), and
/// while it holds max_in_flight jobs it claims nothing. The idle bound is lenient (up to
/// `COMMANDS_PER_POLL` commands per POLL_INTERVAL, for designs whose claim takes a few
/// round trips); the full one allows a lease heartbeat but not a claim every
/// POLL_INTERVAL (20 in the second). A spinning worker sends thousands.
fn polling(make: RedisFactory) -> CaseResult {
    /// Commands allowed per POLL_INTERVAL while idle: a claim may take a few.
    const COMMANDS_PER_POLL: u64 = 10;
    /// Commands allowed in the second a full worker is watched.
    const FULL_ALLOWED: u64 = 5;
    let server = RedisServer::start()?;
    let counter = CommandCounter::start(server.url())?;
    let rt = runtime()?;
    rt.block_on(async {
        let config = redis_config(queue_config(60_000, 3, 60_000, 60_000, 1, 60_000), "jq-poll");
        let q = connect(make, &counter.url, &config).await?;
        let mut log = Log::default();
        log.note(format!("connect({:?}) through a proxy that counts commands", config.queue));
        let handler = GatedHandler::new();
        let (stop, stopped) = watch::channel(false);
        let work = q.work("w", &handler, stopped);
        tokio::pin!(work);
        let drive = async {
            let mut log = Log(log.0.clone());
            let idle_window = POLL_INTERVAL * 40;
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            let before = counter.commands();
            tokio::time::sleep(idle_window).await;
            let idle = counter.commands() - before;
            let allowed = COMMANDS_PER_POLL * 40 + 5;
            log.note(format!("work(\"w\") on an empty queue: {idle} commands in {idle_window:?}"));
            if idle > allowed {
                return Err(log.fail(format!(
                    "with nothing to claim, work sent {idle} commands to Redis in {idle_window:?}, expected at most \
                     {allowed}: after a claim that finds nothing, wait POLL_INTERVAL ({POLL_INTERVAL:?}) before the next"
                )));
            }
            ok("enqueue", q.enqueue(b"held", None)).await?;
            handler.until_started(1, &log).await?;
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            let before = counter.commands();
            let full_window = POLL_INTERVAL * 20;
            tokio::time::sleep(full_window).await;
            let full = counter.commands() - before;
            log.note(format!("one job enqueued; its handler blocked (max_in_flight 1): {full} commands in {full_window:?}"));
            if full > FULL_ALLOWED {
                return Err(log.fail(format!(
                    "holding max_in_flight (1) jobs, work sent {full} commands to Redis in {full_window:?}, expected at \
                     most {FULL_ALLOWED}: a full worker claims nothing until one of its handlers finishes"
                )));
            }
            let _ = stop.send(true);
            handler.gate.add_permits(1);
            Ok(log)
        };
        let log = tokio::select! {
            report = &mut work => return Err(log.fail(format!("work returned {report:?} before stop was sent"))),
            driven = drive => driven?,
        };
        match tokio::time::timeout(LIVENESS, &mut work).await {
            Ok(_) => Ok(()),
            Err(_) => Err(log.fail(format!("work had not returned {LIVENESS:?} after stop and its handler done"))),
        }
    })
}

/// `work` told to stop while a claim is on its way: the jobs that claim brings are not
/// started (once `stop` is `true` no handler starts; the contract leaves them leased),
/// and `work` returns. A proxy holds Redis's replies back, so the claim is sent and run
/// by Redis before stop, and answered after it.
fn stop_mid_claim(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let proxy = CommandCounter::start(server.url())?;
    let rt = runtime()?;
    rt.block_on(async {
        let config = redis_config(queue_config(60_000, 3, 60_000, 60_000, 3, 60_000), "jq-stop-claim");
        let q = connect(make, &proxy.url, &config).await?;
        let direct = connect(make, server.url(), &config).await?;
        let mut log = Log::default();
        log.note(format!(
            "connect({:?}) twice: the worker's queue through a proxy that can hold replies back, another straight to Redis",
            config.queue
        ));
        let handler = GatedHandler::new();
        let (stop, stopped) = watch::channel(false);
        let work = q.work("w", &handler, stopped);
        tokio::pin!(work);
        let drive = async {
            let mut log = Log(log.0.clone());
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            proxy.hold_replies(true);
            ok("enqueue", direct.enqueue(b"late", None)).await?;
            // Wait for a command the worker sends after the job is in: Redis runs it after
            // the enqueue, so it is a claim that finds the job. A worker waiting on a reply
            // held back since before the enqueue sends none: let that reply through and
            // hold again (a busy machine can delay the worker's claims that long).
            let waited = Stopwatch::start();
            loop {
                let before = proxy.commands();
                let quiet = Stopwatch::start();
                while proxy.commands() == before && quiet.elapsed() < POLL_INTERVAL * 4 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if proxy.commands() != before {
                    break;
                }
                if waited.elapsed() > LIVENESS {
                    proxy.hold_replies(false);
                    return Err(log.fail(format!("work sent no command to Redis in {LIVENESS:?} with a job ready")));
                }
                proxy.hold_replies(false);
                tokio::time::sleep(Duration::from_millis(20)).await;
                proxy.hold_replies(true);
            }
            handler.stop_sent.store(true, Ordering::SeqCst);
            let _ = stop.send(true);
            proxy.hold_replies(false);
            // A worker that starts the job anyway must not also hang the case.
            handler.gate.add_permits(100);
            log.note(
                "work(\"w\") on an empty queue; replies held back; 1 job enqueued; the worker's claim sent; stop sent; \
                 replies let go",
            );
            Ok(log)
        };
        let log = tokio::select! {
            report = &mut work => {
                proxy.hold_replies(false);
                return Err(log.fail(format!("work returned {report:?} before stop was sent")));
            }
            driven = drive => driven?,
        };
        if tokio::time::timeout(LIVENESS, &mut work).await.is_err() {
            return Err(log.fail(format!("work had not returned {LIVENESS:?} after stop")));
        }
        let late = handler.started_after_stop.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !late.is_empty() {
            return Err(log.fail(format!(
                "handlers started after stop: {late:?} (their claim was answered after stop came): once stop is true, \
                 work starts no handler; a job claimed then stays leased and another worker takes it"
            )));
        }
        Ok(())
    })
}

/// A handler that records the payloads it saw.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Vec<u8>>>,
}

impl JobHandler for Recorder {
    fn handle<'a>(&'a self, job: &'a Delivery) -> HandlerFuture<'a> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(job.payload.clone());
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    async fn until_seen(&self, payload: &[u8], what: &str) -> CaseResult {
        let waited = Stopwatch::start();
        while !self.seen.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|p| p == payload) {
            if waited.elapsed() > LIVENESS {
                return Err(CaseError::failed(format!("{what}: the job was not handled within {LIVENESS:?}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Redis is killed while a worker runs: calls fail with Unavailable within the
/// timeout, `work` keeps going, and after the restart (data lost) both work again.
fn outage(make: RedisFactory) -> CaseResult {
    let mut server = RedisServer::start()?;
    if !server.owned() {
        return Err(CaseError::Skipped("REDIS_URL points at an external server, which this case cannot kill".into()));
    }
    let rt = runtime()?;
    let config = RedisQueueConfig {
        timeout: OUTAGE_CALL_TIMEOUT,
        ..redis_config(queue_config(60_000, 3, 100, 100, 3, 60_000), "jq-outage")
    };
    let q = rt.block_on(connect(make, server.url(), &config))?;
    let handler = Recorder::default();
    let (stop, stopped) = watch::channel(false);
    let bound = OUTAGE_CALL_TIMEOUT * 4 + Duration::from_secs(2);
    rt.block_on(async {
        let work = q.work("w", &handler, stopped);
        tokio::pin!(work);
        let drive = async {
            ok("enqueue", q.enqueue(b"before", None)).await?;
            handler.until_seen(b"before", "before the outage").await?;
            server.kill();
            match tokio::time::timeout(bound, q.enqueue(b"down", None)).await {
                Ok(Err(QueueError::Unavailable(_))) => {}
                Ok(other) => {
                    return Err(CaseError::failed(format!(
                        "with Redis down, enqueue returned {other:?}, expected Err(Unavailable)"
                    )))
                }
                Err(_) => {
                    return Err(CaseError::failed(format!(
                        "with Redis down, enqueue had not returned after {bound:?} (timeout {OUTAGE_CALL_TIMEOUT:?})"
                    )))
                }
            }
            match tokio::time::timeout(bound, q.claim("other", 1)).await {
                Ok(Err(QueueError::Unavailable(_))) => {}
                other => {
                    return Err(CaseError::failed(format!(
                        "with Redis down, claim gave {other:?} (Err(Elapsed): no answer within {bound:?}), expected \
                         Err(Unavailable) within the timeout"
                    )))
                }
            }
            tokio::time::sleep(POLL_INTERVAL * 4).await;
            server.restart()?;
            let mut enqueued = false;
            let waited = Stopwatch::start();
            while !enqueued && waited.elapsed() < Duration::from_secs(5) {
                enqueued = matches!(tokio::time::timeout(bound, q.enqueue(b"after", None)).await, Ok(Ok(_)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !enqueued {
                return Err(CaseError::failed("after Redis restarted, enqueue still failed 5s later: reconnect"));
            }
            handler.until_seen(b"after", "after Redis restarted, the running worker").await
        };
        tokio::select! {
            report = &mut work => Err(CaseError::failed(format!(
                "work returned {report:?} while Redis was down or restarting, before stop: a worker must outlive an outage"
            ))),
            driven = drive => {
                driven?;
                let _ = stop.send(true);
                match tokio::time::timeout(LIVENESS, work).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(CaseError::failed(format!("work had not returned {LIVENESS:?} after stop"))),
                }
            }
        }
    })
}

/// The Redis cases: level 4 here, level 5 in `faults.rs`.
pub fn redis_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L4, name, hints, THREADED, move || run(make)).with_redis()
    };
    let mut cases = vec![
        case("queue_basics", Hints::new(
            "Jobs come out head first with attempt 1 and their exact bytes (binary, empty, Unicode); a dedup key returns \
             the first job's id; a worker gets at most max_in_flight minus what it holds; only the holder can ack, once; \
             metrics count ready and in-flight jobs; every key carries the hash tag {namespace}, dedup state expires.",
            "Workers are processes sharing one server: which worker holds which job lives in Redis, not in a map in \
             memory. Dedup state is per key and grows with traffic: it must expire after the window.",
            "A stream with a consumer group: XADD to enqueue, XREADGROUP '>' to claim, XACK + XDEL to ack, the group's \
             pending list (XPENDING with a consumer) for who holds what; a job-id -> entry-id hash; dedup with SET NX PX \
             inside the enqueue script."),
            queue_basics),
        case("dedup", Hints::new(
            "A dedup key is honoured for dedup_window from its first enqueue (a duplicate does not restart the window), \
             then a new job is added; 12 concurrent enqueues with one key add exactly one job.",
            "Check-then-act across round trips is a race: two enqueues both see no key, both add. The check and the add \
             must be one atomic step on the server.",
            "One Lua script per enqueue: GET the key (Duplicate), else INCR an id, XADD, SET key id PX window. Never SET \
             on a duplicate (that restarts the window)."),
            dedup),
        case("leases_and_retries", Hints::new(
            "A delivered job is reclaimed by another worker no earlier than visibility_timeout after its claim, as a new \
             attempt, and the first worker's ack is then NotHeld; a failed job comes back no earlier than its backoff; the \
             last failure, or the last attempt's lease running out, makes a dead letter (attempts, last error).",
            "At-least-once: a job leaves the queue only when acked. A lease is a timestamp on the server, compared with \
             the server's clock; the attempt count must survive a retry's re-add.",
            "XAUTOCLAIM with the visibility timeout as min-idle-time at the start of each claim (the delivery count in \
             XPENDING gives the attempt); failed jobs go to a sorted set scored by due time, moved back with XADD when \
             due; dead letters XADDed to a stream of their own."),
            leases_and_retries),
        case("graceful_shutdown", Hints::new(
            "work runs at most max_in_flight handlers at once and claims again as soon as one finishes; a handler's Err is \
             failed; once stop is true no handler starts, the running ones finish and are acked, and work returns.",
            "Back-pressure and shutdown are about what is in flight: claim only the room you have, and on stop drain \
             instead of abandoning (an abandoned job waits a whole visibility timeout).",
            "Keep the running handlers in a set polled together (each: handler, then ack or fail); select between the \
             next finished one, the stop channel and a POLL_INTERVAL sleep; claim max_in_flight - running."),
            graceful_shutdown),
        case("polling", Hints::new(
            "With nothing to claim, work claims at most once per POLL_INTERVAL (commands counted at a proxy over 2s: \
             at most 10 per POLL_INTERVAL); while it holds max_in_flight jobs (its handler blocked) it claims nothing \
             (at most 5 commands in 1s).",
            "A worker polls a shared server: one that claims again the moment a claim comes back empty (or full) spins, \
             and a fleet of idle workers spinning is load on Redis for nothing.",
            "Remember that the last claim found nothing (or failed) and then wait in one select for a handler to finish, \
             stop, or a POLL_INTERVAL sleep; with no room, wait only for a handler or stop."),
            polling),
        case("stop_mid_claim", Hints::new(
            "Stop comes while a claim is on its way (a proxy holds Redis's reply until after stop): the job that claim \
             brings is not started, and work returns.",
            "Stop can arrive during any await. A job claimed at that moment is already leased to this worker; starting it \
             would break the promise that nothing starts after stop, and leaving it leased is safe (at-least-once: its \
             lease runs out and another worker takes it).",
            "After every claim returns, look at the stop channel again before starting what it brought; if stop is set, \
             drop the deliveries and leave the loop."),
            stop_mid_claim),
        case("outage", Hints::new(
            "Redis is killed while a worker runs: calls return Err(Unavailable) within the timeout; work keeps running \
             and, once Redis is back (data lost), new jobs are handled again.",
            "A worker is a long-lived process: a dependency's outage is an error to wait out, not a reason to exit; every \
             call needs a bound so nothing hangs on a dead connection.",
            "tokio::time::timeout around every call, a reconnecting client (redis::aio::ConnectionManager); in work, \
             sleep POLL_INTERVAL after an Unavailable and try again; create the consumer group again if Redis lost it."),
            outage),
    ];
    cases.extend(super::faults::cases(make));
    cases
}
