//! `cargo bench --bench job_queue`: jobs per second end to end on a private
//! `redis-server` (or `REDIS_URL`; skipped, loudly, without one): enqueue `JOBS` jobs
//! from 8 concurrent producers, then 2 workers (`work`, a handler that only counts)
//! drain them, max_in_flight 32 each.
//!
//! * `job_queue/redis/attempt` and `/reference`: the `RedisJobQueue`;
//! * `job_queue/redis/raw_streams`: the floor on the same server with the redis crate:
//!   raw `XADD`, then 2 consumers looping `XREADGROUP COUNT 32` + one `XACK` per batch
//!   (no dedup, no leases reclaimed, no retries, no scripts).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use harness::job_queue::{
    Delivery, HandlerFuture, JobHandler, QueueConfig, RedisJobQueue, RedisQueueConfig, POLL_INTERVAL,
};
use harness::redis_server::RedisServer;
use tokio::runtime::Runtime;
use tokio::sync::watch;

const JOBS: u64 = 500;
const PRODUCERS: u64 = 8;

fn config(namespace: &str) -> RedisQueueConfig {
    let queue = QueueConfig {
        visibility_timeout: Duration::from_secs(30),
        max_attempts: 5,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_secs(1),
        max_in_flight: 32,
        dedup_window: Duration::from_secs(60),
    };
    RedisQueueConfig { queue, namespace: namespace.into(), timeout: Duration::from_secs(2) }
}

/// Counts the jobs it handled.
#[derive(Default)]
struct Counter(AtomicU64);

impl JobHandler for Counter {
    fn handle<'a>(&'a self, _: &'a Delivery) -> HandlerFuture<'a> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Enqueue `JOBS`, then two workers drain them; returns the jobs handled.
async fn end_to_end<Q: RedisJobQueue>(queue: &Q) -> u64 {
    join_all((0..PRODUCERS).map(|p| async move {
        for _ in (p..JOBS).step_by(PRODUCERS as usize) {
            queue.enqueue(b"job", None).await.expect("enqueue");
        }
    }))
    .await;
    let handler = Counter::default();
    let (stop, stopped) = watch::channel(false);
    let watcher = async {
        while handler.0.load(Ordering::Relaxed) < JOBS {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let _ = stop.send(true);
    };
    tokio::join!(queue.work("w1", &handler, stopped.clone()), queue.work("w2", &handler, stopped), watcher);
    handler.0.load(Ordering::Relaxed)
}

/// The floor: raw XADD, then 2 consumers XREADGROUP a batch and XACK it.
async fn raw_streams(con: &redis::aio::ConnectionManager, stream: &str) -> u64 {
    join_all((0..PRODUCERS).map(|p| async move {
        let mut con = con.clone();
        for _ in (p..JOBS).step_by(PRODUCERS as usize) {
            let _: String =
                redis::cmd("XADD").arg(stream).arg("*").arg("p").arg("job").query_async(&mut con).await.expect("xadd");
        }
    }))
    .await;
    let handled = AtomicU64::new(0);
    join_all(["c1", "c2"].map(|consumer| {
        let handled = &handled;
        async move {
            let mut con = con.clone();
            while handled.load(Ordering::Relaxed) < JOBS {
                let reply: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(32)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">")
                    .query_async(&mut con)
                    .await
                    .expect("xreadgroup");
                let ids = entry_ids(&reply);
                if ids.is_empty() {
                    tokio::time::sleep(POLL_INTERVAL / 50).await;
                    continue;
                }
                let _: i64 =
                    redis::cmd("XACK").arg(stream).arg("g").arg(&ids).query_async(&mut con).await.expect("xack");
                handled.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
        }
    }))
    .await;
    handled.load(Ordering::Relaxed)
}

/// The entry ids in an XREADGROUP reply (RESP2: [[stream, [[id, fields], ...]]]).
fn entry_ids(reply: &redis::Value) -> Vec<String> {
    let redis::Value::Array(streams) = reply else { return Vec::new() };
    let mut ids = Vec::new();
    for stream in streams {
        let redis::Value::Array(parts) = stream else { continue };
        let Some(redis::Value::Array(entries)) = parts.get(1) else { continue };
        for entry in entries {
            if let redis::Value::Array(fields) = entry {
                if let Some(id) = fields.first().and_then(|id| redis::from_redis_value_ref::<String>(id).ok()) {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

fn bench(c: &mut Criterion) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("\n*** job_queue benches SKIPPED: {why:?} ***\n");
            return;
        }
    };
    let rt = Runtime::new().expect("tokio runtime");
    let url = server.url().to_string();
    let mut group = c.benchmark_group("job_queue/redis");
    group.throughput(Throughput::Elements(JOBS));
    let connect = || rt.block_on(exercises::job_queue::RedisQueue::connect(&url, config("bench-a")));
    if let Some(Ok(queue)) =
        common::attempt_probe("job_queue/redis", connect, |q| q.as_ref().map(|_| ()).map_err(|e| e.to_string()))
    {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            b.iter(|| black_box(rt.block_on(end_to_end(&queue))))
        });
    }
    let reference = rt.block_on(solutions::job_queue::RedisQueue::connect(&url, config("bench-r"))).expect("connect");
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        b.iter(|| black_box(rt.block_on(end_to_end(&reference))))
    });
    let raw = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut con = redis::aio::ConnectionManager::new(client).await.expect("raw connection");
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("{bench}:raw")
            .arg("g")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await
            .expect("xgroup create");
        con
    });
    group.bench_function(BenchmarkId::from_parameter("raw_streams"), |b| {
        b.iter(|| black_box(rt.block_on(raw_streams(&raw, "{bench}:raw"))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
