//! Level 5: worker processes killed mid-job (SIGKILL, at seeded random moments) and
//! restarted, and the redis-server killed and restarted with its append-only file
//! (`appendfsync always`). At the end every enqueue that returned `Ok` has been handled,
//! each job's effect applied once, the ledger balances exactly, the queue is drained
//! and no job is a dead letter.
//!
//! A worker is this same binary re-executed: the case's child process spawns
//! `current_exe()` with the case's environment (so it runs this very case) plus
//! [`WORKER_ENV`]; the case then branches into [`worker_main`], which runs the
//! attempt's `work` with the grader's idempotent handler until its stdin closes. The
//! handler pauses a few ms (to be caught mid-job), then applies the job's effect with
//! one Lua script: `SET effect NX` and, only if it was set, `INCRBY ledger amount`.
//! Verdicts do not depend on timing: the handler is idempotent, so a job run twice
//! (a lease that ran out on a slow machine) changes nothing; real time only bounds
//! liveness, generously.

use std::env;
use std::io::Read;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::contract::*;
use super::redis::{connect, LIVENESS};
use super::suite::EXERCISE;
use super::RedisFactory;
use crate::clock::Stopwatch;
use crate::linearizability::SplitMix;
use crate::redis_server::{connect_with_timeout, fresh_namespace, runtime, RedisServer};
use crate::suite::{Case, CaseError, CaseResult, Hints, Level, THREADED_DEADLINE as THREADED};

/// Level 5.
pub const L5: Level = Level { number: 5, name: "crashes_and_restarts" };

/// Set (to the worker's name) in a worker process's environment.
const WORKER_ENV: &str = "KATAS_JOB_QUEUE_WORKER";
/// The server and namespace a worker process uses.
const URL_ENV: &str = "KATAS_JOB_QUEUE_URL";
const NAMESPACE_ENV: &str = "KATAS_JOB_QUEUE_NAMESPACE";

/// The queue in these cases: a short lease (jobs of killed workers come back fast),
/// attempts enough that kills and restarts never exhaust them, short backoffs.
fn queue_config(namespace: String) -> RedisQueueConfig {
    let ms = Duration::from_millis;
    RedisQueueConfig {
        queue: QueueConfig {
            visibility_timeout: ms(300),
            max_attempts: 100,
            backoff_base: ms(5),
            backoff_cap: ms(50),
            max_in_flight: 32,
            dedup_window: Duration::from_secs(600),
        },
        namespace,
        timeout: Duration::from_secs(1),
    }
}

/// The grader's keys, apart from the queue's: `{<namespace>:fx}:e:<job id>` holds a
/// job's amount once its effect is applied; `{<namespace>:fx}:ledger` their sum.
fn effect_key(namespace: &str, id: &JobId) -> String {
    format!("{{{namespace}:fx}}:e:{}", id.0)
}

fn ledger_key(namespace: &str) -> String {
    format!("{{{namespace}:fx}}:ledger")
}

const EFFECT_SCRIPT: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('INCRBY', KEYS[2], ARGV[1]) end
return 1
"#;

/// Applies a job's effect once, however often it runs. Its payload is the amount.
struct LedgerHandler {
    namespace: String,
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
}

impl JobHandler for LedgerHandler {
    fn handle<'a>(&'a self, job: &'a Delivery) -> HandlerFuture<'a> {
        Box::pin(async move {
            let amount: u64 = std::str::from_utf8(&job.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("payload {:?} is not an amount", job.payload))?;
            // Mid-job for a few ms: where a kill lands.
            tokio::time::sleep(Duration::from_millis(1 + amount % 4)).await;
            let mut invocation = self.script.prepare_invoke();
            invocation.key(effect_key(&self.namespace, &job.id)).key(ledger_key(&self.namespace)).arg(amount);
            let mut connection = self.connection.clone();
            match tokio::time::timeout(Duration::from_secs(1), invocation.invoke_async::<i64>(&mut connection)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("effect not applied: {e}")),
                Err(_) => Err("effect not applied: no answer within 1s".to_string()),
            }
        })
    }
}

/// A worker process: runs `work` until its stdin closes (the coordinator asks it to
/// stop, or died), then returns. If `work` does not return within the liveness bound
/// after that, the process exits anyway, so no orphan outlives a dead coordinator.
fn worker_main(make: RedisFactory, name: String) -> CaseResult {
    let missing = |var: &str| CaseError::failed(format!("worker process without {var}"));
    let url = env::var(URL_ENV).map_err(|_| missing(URL_ENV))?;
    let namespace = env::var(NAMESPACE_ENV).map_err(|_| missing(NAMESPACE_ENV))?;
    let rt = runtime()?;
    let (stop, stopped) = watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop.send(true);
        std::thread::sleep(LIVENESS);
        std::process::exit(3);
    });
    rt.block_on(async {
        // Redis may be restarting: keep trying to connect, as a supervisor would.
        let waited = Stopwatch::start();
        let (queue, connection) = loop {
            let queue = tokio::time::timeout(LIVENESS, make(url.clone(), queue_config(namespace.clone()))).await;
            let connection = connect_with_timeout(&url, Duration::from_secs(1)).await;
            match (queue, connection) {
                (Ok(Ok(queue)), Ok(connection)) => break (queue, connection),
                _ if waited.elapsed() > LIVENESS => return Err(CaseError::failed("worker could not connect")),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let handler = LedgerHandler { namespace, connection, script: redis::Script::new(EFFECT_SCRIPT) };
        queue.work(&name, &handler, stopped).await;
        Ok(())
    })
}

/// The worker processes of one run; killed on drop, so none outlives a failed case.
struct Workers {
    url: String,
    namespace: String,
    running: Vec<(String, Child, Option<ChildStdin>)>,
    spawned: usize,
}

impl Workers {
    fn spawn(&mut self) -> Result<(), CaseError> {
        let name = format!("worker-{}", self.spawned);
        self.spawned += 1;
        let exe = env::current_exe().map_err(|e| CaseError::failed(format!("cannot find this binary: {e}")))?;
        let mut child = Command::new(exe)
            .env(WORKER_ENV, &name)
            .env(URL_ENV, &self.url)
            .env(NAMESPACE_ENV, &self.namespace)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CaseError::failed(format!("cannot start a worker process: {e}")))?;
        let stdin = child.stdin.take();
        self.running.push((name, child, stdin));
        Ok(())
    }

    /// SIGKILL worker `i` (mid-job, most likely) and start a fresh one in its place.
    fn kill_and_replace(&mut self, i: usize) -> Result<String, CaseError> {
        let (name, mut child, _) = self.running.swap_remove(i);
        let _ = child.kill();
        let _ = child.wait();
        self.spawn()?;
        Ok(name)
    }

    /// A worker whose process ended although nobody asked it to stop.
    fn exited_early(&mut self) -> Option<String> {
        self.running.iter_mut().find_map(|(name, child, _)| match child.try_wait() {
            Ok(Some(status)) => Some(format!("{name} ({status})")),
            _ => None,
        })
    }

    /// Asks every worker to stop (closes its stdin) and waits for each to exit.
    fn stop_all(&mut self) -> Result<(), String> {
        for (_, _, stdin) in &mut self.running {
            drop(stdin.take());
        }
        let waited = Stopwatch::start();
        for (name, child, _) in &mut self.running {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => return Err(format!("{name} ended with {status} after stop")),
                    _ if waited.elapsed() > LIVENESS => {
                        return Err(format!("{name}: work had not returned {LIVENESS:?} after stop"))
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One run: `jobs` enqueued (amount n % 97 + 1, dedup key `job-<n>` so an enqueue
/// retried after an outage adds nothing), `workers` worker processes, `kills` SIGKILLs
/// at seeded random moments while jobs remain, and the server restarted once midway.
struct Run {
    jobs: usize,
    workers: usize,
    kills: usize,
    seed: u64,
}

/// One enqueueing task: the (job number, id) of each enqueue it made.
type EnqueueTask = tokio::task::JoinHandle<Result<Vec<(usize, JobId)>, String>>;

fn amount(n: usize) -> u64 {
    (n % 97 + 1) as u64
}

fn crash_run(make: RedisFactory, run: &Run) -> CaseResult {
    if let Ok(name) = env::var(WORKER_ENV) {
        return worker_main(make, name);
    }
    let mut server = RedisServer::start_persistent()?;
    let rt = runtime()?;
    let config = queue_config(fresh_namespace("jq-crash"));
    let namespace = config.namespace.clone();
    let queue = rt.block_on(connect(make, server.url(), &config))?;
    let mut workers =
        Workers { url: server.url().to_string(), namespace: namespace.clone(), running: Vec::new(), spawned: 0 };
    for _ in 0..run.workers {
        workers.spawn()?;
    }
    let mut log = format!(
        "{} jobs, {} worker processes, {:?}, redis-server with appendfsync always\n",
        run.jobs, run.workers, config.queue
    );
    // Enqueue from 32 tasks at once; each call retried until Ok (the server restarts).
    let ids: Vec<EnqueueTask> = (0..32)
        .map(|task| {
            let queue = Arc::clone(&queue);
            let jobs = run.jobs;
            rt.spawn(async move {
                let mut ids = Vec::new();
                for n in (task..jobs).step_by(32) {
                    let waited = Stopwatch::start();
                    loop {
                        let payload = amount(n).to_string();
                        match queue.enqueue(payload.as_bytes(), Some(&format!("job-{n}"))).await {
                            Ok(Enqueued::New(id) | Enqueued::Duplicate(id)) => {
                                ids.push((n, id));
                                break;
                            }
                            Err(e) if waited.elapsed() > LIVENESS => {
                                return Err(format!("enqueue of job {n} still failing after {LIVENESS:?}: {e}"))
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                }
                Ok(ids)
            })
        })
        .collect();
    // Chaos while the jobs are being handled.
    let mut rng = SplitMix::new(run.seed);
    for k in 0..run.kills {
        std::thread::sleep(Duration::from_millis(30 + rng.below(120) as u64));
        if let Some(gone) = workers.exited_early() {
            return Err(CaseError::failed(format!("{log}worker {gone} exited before it was asked to stop")));
        }
        let victim = rng.below(workers.running.len());
        let name = workers.kill_and_replace(victim)?;
        log.push_str(&format!("SIGKILL {name}, a new worker started\n"));
        if k == run.kills / 2 {
            server.restart()?;
            log.push_str("redis-server killed (SIGKILL) and restarted on its append-only file\n");
        }
    }
    let mut job_ids = Vec::with_capacity(run.jobs);
    for task in ids {
        let enqueued = rt.block_on(task).map_err(|e| CaseError::failed(format!("enqueue task: {e}")))?;
        job_ids.extend(enqueued.map_err(|e| CaseError::failed(format!("{log}{e}")))?);
    }
    log.push_str(&format!("every enqueue returned Ok ({} jobs)\n", job_ids.len()));
    // Drained: nothing ready, in flight or delayed. Liveness: the metrics must change
    // within 10 s (a lease is 300 ms), and no worker may exit on its own.
    let mut last = None;
    let mut unchanged = Stopwatch::start();
    loop {
        if let Some(gone) = workers.exited_early() {
            return Err(CaseError::failed(format!("{log}worker {gone} exited before it was asked to stop")));
        }
        let metrics = rt.block_on(async { tokio::time::timeout(LIVENESS, queue.metrics()).await });
        let metrics = match metrics {
            Ok(Ok(metrics)) => metrics,
            // The coordinator's own connection may still be reconnecting after the restart.
            Ok(Err(QueueError::Unavailable(_))) if unchanged.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            other => return Err(CaseError::failed(format!("{log}metrics() -> {other:?}"))),
        };
        if metrics.ready == 0 && metrics.in_flight == 0 && metrics.delayed == 0 {
            log.push_str(&format!("drained: metrics() -> {metrics:?}\n"));
            break;
        }
        if last.as_ref() != Some(&metrics) {
            last = Some(metrics);
            unchanged = Stopwatch::start();
            crate::watchdog::progress();
        } else if unchanged.elapsed() > Duration::from_secs(10) {
            return Err(CaseError::failed(format!(
                "{log}no progress for 10s: metrics() -> {last:?} (leases run out after 300ms: stale jobs must be \
                 claimed again)"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    workers.stop_all().map_err(|e| CaseError::failed(format!("{log}{e}")))?;
    log.push_str("every worker stopped: work returned\n");
    check_ledger(&rt, server.url(), &namespace, &job_ids, queue.as_ref(), &log)
}

/// Every job's effect applied, with its amount, and nothing else; the ledger exact;
/// no dead letters.
fn check_ledger(
    rt: &tokio::runtime::Runtime,
    url: &str,
    namespace: &str,
    job_ids: &[(usize, JobId)],
    queue: &dyn super::ErasedRedisQueue,
    log: &str,
) -> CaseResult {
    let inspected: Result<(Vec<Option<u64>>, u64, usize), redis::RedisError> = rt.block_on(async {
        let mut raw = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        let mut effects = Vec::with_capacity(job_ids.len());
        for chunk in job_ids.chunks(1_000) {
            let keys: Vec<String> = chunk.iter().map(|(_, id)| effect_key(namespace, id)).collect();
            let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut raw).await?;
            effects.extend(values);
        }
        let ledger: Option<u64> = redis::cmd("GET").arg(ledger_key(namespace)).query_async(&mut raw).await?;
        let all: Vec<String> = redis::cmd("KEYS").arg(format!("{{{namespace}:fx}}:e:*")).query_async(&mut raw).await?;
        Ok((effects, ledger.unwrap_or(0), all.len()))
    });
    let (effects, ledger, effect_keys) = inspected.map_err(|e| CaseError::failed(format!("inspecting Redis: {e}")))?;
    let missing: Vec<String> = job_ids
        .iter()
        .zip(&effects)
        .filter(|(_, effect)| effect.is_none())
        .map(|((n, id), _)| format!("job {n} ({id:?})"))
        .collect();
    if !missing.is_empty() {
        return Err(CaseError::failed(format!(
            "{log}{} of {} enqueued jobs were never handled (their enqueue returned Ok, the queue is empty): {}{}",
            missing.len(),
            job_ids.len(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        )));
    }
    let expected: u64 = job_ids.iter().map(|(n, _)| amount(*n)).sum();
    let mut distinct: Vec<&JobId> = job_ids.iter().map(|(_, id)| id).collect();
    distinct.sort();
    distinct.dedup();
    if ledger != expected || effect_keys != job_ids.len() || distinct.len() != job_ids.len() {
        return Err(CaseError::failed(format!(
            "{log}ledger {ledger}, expected {expected}; {effect_keys} job ids had an effect, {} distinct ids for {} \
             enqueues: a job ran under an id no enqueue returned, or two enqueues share one",
            distinct.len(),
            job_ids.len()
        )));
    }
    let dead = rt.block_on(async { tokio::time::timeout(LIVENESS, queue.dead_letters()).await });
    match dead {
        Ok(Ok(dead)) if dead.is_empty() => Ok(()),
        other => Err(CaseError::failed(format!(
            "{log}dead_letters() -> {other:?}, expected none: handlers never failed for good (max_attempts 100)"
        ))),
    }
}

fn kills_and_restarts(make: RedisFactory) -> CaseResult {
    crash_run(make, &Run { jobs: 1_500, workers: 3, kills: 6, seed: 0x5eed_0005 })
}

fn ledger_10k(make: RedisFactory) -> CaseResult {
    crash_run(make, &Run { jobs: 10_000, workers: 4, kills: 8, seed: 0x1ed9_e700 })
}

/// The level 5 cases.
pub fn cases(make: RedisFactory) -> Vec<Case> {
    let case = |name, hints: Hints, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L5, name, hints, THREADED, move || run(make)).with_redis()
    };
    vec![
        case("kills_and_restarts", Hints::new(
            "Worker processes are SIGKILLed mid-job and restarted, and redis-server is killed and restarted on its \
             append-only file: every enqueue that returned Ok is handled, each effect applied once (the handler is \
             idempotent), the queue ends drained with no dead letters, and no worker exits before it is told to stop.",
            "At-least-once means a job leaves the queue only after its handler succeeded: acknowledging first loses the \
             job when the process dies in between. Jobs held by a dead worker come back after the visibility timeout; a \
             worker waits out a Redis restart instead of exiting.",
            "ack only after the handler returned Ok; claim reclaims stale pending entries (XAUTOCLAIM) before new ones; \
             every call bounded and retried after POLL_INTERVAL on Unavailable; all state in Redis, nothing a process \
             must remember."),
            kills_and_restarts),
        case("ledger_10k", Hints::new(
            "10,000 jobs, 4 worker processes killed at random moments, one redis-server restart: the ledger of effects \
             balances exactly (the sum of every job's amount, each applied once).",
            "Exactly-once effects come from at-least-once delivery plus an idempotent handler; the queue's part is to \
             lose nothing and to invent nothing (no job under an id no enqueue returned).",
            "As for kills_and_restarts; keep every operation one atomic script so a kill or a restart can never leave \
             half an operation behind."),
            ledger_10k),
    ]
}
