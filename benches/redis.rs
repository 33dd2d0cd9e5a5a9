//! `cargo bench --bench redis`: the Redis-backed levels against the floor Redis sets,
//! on a private `redis-server` (or `REDIS_URL`); skipped, loudly, without one.
//!
//! * `redis/rate_limit`: one `check` of 3 buckets, vs a raw `EVALSHA` of a trivial
//!   script on the same kind of connection (the cost of one round trip + a script).
//! * `redis/idempotency`: `begin` + `complete` on a new key, vs two raw `SET NX PX`.
//!
//! * `redis/rate_limit_64_tasks`: the reference with 64 concurrent tasks over 64
//!   tenants, on one node vs on a private 3-master Redis Cluster (skipped without one).
//!
//! Elsewhere requests are sequential (each awaits its answer): this measures
//! latency-bound throughput, the case for a request path.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::clock::SystemClock;
use harness::idempotency::{Begin, Fingerprint, IdempotencyConfig, RedisIdempotencyStore, RedisStoreConfig, Response};
use harness::rate_limit::{Quota, RedisLimiterConfig, RedisRateLimiter, WhenUnavailable};
use harness::redis_cluster::RedisCluster;
use harness::redis_server::RedisServer;
use tokio::runtime::Runtime;

const CALLS: u64 = 200;

fn limiter_config(namespace: &str) -> RedisLimiterConfig {
    RedisLimiterConfig {
        namespace: namespace.into(),
        timeout: Duration::from_secs(1),
        when_unavailable: WhenUnavailable::FailClosed,
    }
}

fn store_config(namespace: &str) -> RedisStoreConfig {
    let records = IdempotencyConfig::new(Duration::from_secs(30), Duration::from_secs(60)).expect("valid config");
    RedisStoreConfig { namespace: namespace.into(), timeout: Duration::from_secs(1), records }
}

fn limits() -> [(&'static str, Quota); 3] {
    let q = Quota::new(1_000_000, Duration::from_micros(1)).expect("valid quota");
    [("user-1", q), ("endpoint-/pay", q), ("tenant-9", q)]
}

async fn limiter_calls<L: RedisRateLimiter>(limiter: &L) -> usize {
    let limits = limits();
    let mut allowed = 0;
    for _ in 0..CALLS {
        allowed += usize::from(limiter.check("tenant-9", &limits, 1).await.is_ok_and(|d| d.allowed));
    }
    allowed
}

async fn store_calls<S: RedisIdempotencyStore>(store: &S, round: u64) -> usize {
    let mut done = 0;
    for i in 0..CALLS {
        let key = format!("{round}-{i}");
        if let Ok(Begin::Execute(lease)) = store.begin("bench", &key, Fingerprint(1)).await {
            done += usize::from(
                store
                    .complete("bench", &key, lease.token, Response { status: 200, body: b"ok".to_vec() })
                    .await
                    .is_ok(),
            );
        }
    }
    done
}

fn bench(c: &mut Criterion) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("\n*** redis benches SKIPPED: {why:?} ***\n");
            return;
        }
    };
    let rt = Runtime::new().expect("tokio runtime");
    let url = server.url().to_string();
    let raw = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("client");
        redis::aio::ConnectionManager::new(client).await.expect("raw connection")
    });

    let mut group = c.benchmark_group("redis/rate_limit");
    group.throughput(Throughput::Elements(CALLS));
    let clock = SystemClock::shared;
    let connect =
        || rt.block_on(exercises::rate_limit::RedisLimiter::connect(&url, limiter_config("bench-a"), clock()));
    if let Some(Ok(limiter)) =
        common::attempt_probe("redis/rate_limit", connect, |c| c.as_ref().map(|_| ()).map_err(|e| e.to_string()))
    {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            b.iter(|| black_box(rt.block_on(limiter_calls(&limiter))))
        });
    }
    let reference = rt
        .block_on(solutions::rate_limit::RedisLimiter::connect(&url, limiter_config("bench-r"), clock()))
        .expect("connect");
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        b.iter(|| black_box(rt.block_on(limiter_calls(&reference))))
    });
    let trivial = redis::Script::new("return 1");
    group.bench_function(BenchmarkId::from_parameter("raw_evalsha"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut con = raw.clone();
                for _ in 0..CALLS {
                    let _: i64 = trivial.key("{bench}:x").invoke_async(&mut con).await.expect("evalsha");
                }
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("redis/idempotency");
    group.throughput(Throughput::Elements(CALLS));
    let mut round = 0;
    let connect = || rt.block_on(exercises::idempotency::RedisStore::connect(&url, store_config("bench-a"), clock()));
    if let Some(Ok(store)) =
        common::attempt_probe("redis/idempotency", connect, |c| c.as_ref().map(|_| ()).map_err(|e| e.to_string()))
    {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            b.iter(|| {
                round += 1;
                black_box(rt.block_on(store_calls(&store, round)))
            })
        });
    }
    let reference = rt
        .block_on(solutions::idempotency::RedisStore::connect(&url, store_config("bench-r"), clock()))
        .expect("connect");
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        b.iter(|| {
            round += 1;
            black_box(rt.block_on(store_calls(&reference, round)))
        })
    });
    group.bench_function(BenchmarkId::from_parameter("raw_set_nx_twice"), |b| {
        b.iter(|| {
            round += 1;
            rt.block_on(async {
                let mut con = raw.clone();
                for i in 0..CALLS {
                    let key = format!("{{bench}}:nx:{round}:{i}");
                    for _ in 0..2 {
                        let _: Option<String> = redis::cmd("SET")
                            .arg(&key)
                            .arg(1)
                            .arg("NX")
                            .arg("PX")
                            .arg(60_000)
                            .query_async(&mut con)
                            .await
                            .expect("set nx");
                    }
                }
            })
        })
    });
    group.finish();

    // 64 tasks at once, each a tenant of its own: one node vs the cluster.
    let cluster = match RedisCluster::start() {
        Ok(cluster) => cluster,
        Err(why) => {
            eprintln!("\n*** redis/rate_limit_64_tasks SKIPPED: {why:?} ***\n");
            return;
        }
    };
    let mut group = c.benchmark_group("redis/rate_limit_64_tasks");
    group.throughput(Throughput::Elements(CALLS * 64));
    let one_node = std::sync::Arc::new(
        rt.block_on(solutions::rate_limit::RedisLimiter::connect(&url, limiter_config("bench-o"), clock()))
            .expect("connect"),
    );
    let on_cluster = std::sync::Arc::new(
        rt.block_on(solutions::rate_limit::RedisLimiter::connect_cluster(
            cluster.seeds(),
            limiter_config("bench-c"),
            clock(),
        ))
        .expect("connect_cluster"),
    );
    for (name, limiter) in [("one_node", one_node), ("cluster", on_cluster)] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(rt.block_on(tasks_64(&limiter))))
        });
    }
    group.finish();
}

/// `CALLS` checks in each of 64 concurrent tasks, one tenant per task.
async fn tasks_64(limiter: &std::sync::Arc<solutions::rate_limit::RedisLimiter>) -> usize {
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let limiter = std::sync::Arc::clone(limiter);
            tokio::spawn(async move {
                let tenant = format!("tenant-{t}");
                let limits = limits();
                let mut allowed = 0;
                for _ in 0..CALLS {
                    allowed += usize::from(limiter.check(&tenant, &limits, 1).await.is_ok_and(|d| d.allowed));
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap_or(0);
    }
    allowed
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
