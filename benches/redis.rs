//! `cargo bench --bench redis`: the Redis-backed levels against the floor Redis sets,
//! on a private `redis-server` (or `REDIS_URL`); skipped, loudly, without one.
//!
//! * `redis/rate_limit`: one `check` of 3 buckets, vs a raw `EVALSHA` of a trivial
//!   script on the same kind of connection (the cost of one round trip + a script).
//! * `redis/idempotency`: `begin` + `complete` on a new key, vs two raw `SET NX PX`.
//! * `..._64_tasks`: the same with 64 tasks at once on each contender's one
//!   multiplexed connection (requests pipeline: throughput-bound, where the first
//!   are latency-bound, the case for one request path). `reference/cluster`: the
//!   limiter on a private 3-master Redis Cluster (skipped without one).
//!
//! Target: the reference at ≥ 0.85× its floor in all four.

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

/// The floor of the limiter's script: the Redis calls the contract makes a 3-bucket
/// check do (read and write the tenant's latest time; read each bucket and write it
/// with its expiry: every bucket is a key of its own), and nothing else. Writes
/// cost most: each is propagated (and its `PX` rewritten) for replicas.
const LIMITER_FLOOR: &str = r#"
redis.call('GET', KEYS[4])
redis.call('SET', KEYS[4], ARGV[1])
for i = 1, 3 do
  redis.call('GET', KEYS[i])
  redis.call('SET', KEYS[i], ARGV[1], 'PX', 60000)
end
return 1
"#;

/// The floor of the store's two scripts on a new key: the reference's Redis calls
/// (read the record and its fence, write both with expiries; then read the record,
/// store the response, extend both expiries), no logic.
const BEGIN_FLOOR: &str = r#"
redis.call('HMGET', KEYS[1], 'fp', 'state', 'until', 'status', 'body')
redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', 60000)
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'p', 'token', ARGV[1], 'until', ARGV[1])
redis.call('PEXPIRE', KEYS[1], 60000)
return 1
"#;
const SETTLE_FLOOR: &str = r#"
redis.call('HMGET', KEYS[1], 'state', 'token', 'until')
redis.call('HSET', KEYS[1], 'state', 'c', 'until', ARGV[1], 'status', '200', 'body', 'ok')
redis.call('PEXPIRE', KEYS[1], 60000)
redis.call('PEXPIRE', KEYS[2], 60000, 'GT')
return 1
"#;

/// Calls per task: each task awaits its answers one after another.
const CALLS: u64 = 200;
/// The concurrent variant: tasks sharing one multiplexed connection.
const TASKS: u64 = 64;

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

/// `CALLS` checks of 3 buckets by task `task`, a tenant of its own.
async fn limiter_calls<L: RedisRateLimiter>(limiter: &L, task: u64) -> usize {
    let limits = limits();
    let tenant = format!("tenant-{task}");
    let mut allowed = 0;
    for _ in 0..CALLS {
        allowed += usize::from(limiter.check(&tenant, &limits, 1).await.is_ok_and(|d| d.allowed));
    }
    allowed
}

/// `CALLS` begin + complete pairs on new keys by task `task`.
async fn store_calls<S: RedisIdempotencyStore>(store: &S, round: u64, task: u64) -> usize {
    let mut done = 0;
    for i in 0..CALLS {
        let key = format!("{round}-{task}-{i}");
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
    let clock = SystemClock::shared;
    let cluster =
        RedisCluster::start().map_err(|why| eprintln!("\n*** redis cluster benches SKIPPED: {why:?} ***\n")).ok();

    let reference = rt
        .block_on(solutions::rate_limit::RedisLimiter::connect(&url, limiter_config("bench-r"), clock()))
        .expect("connect");
    let connect =
        || rt.block_on(exercises::rate_limit::RedisLimiter::connect(&url, limiter_config("bench-a"), clock()));
    let attempt =
        common::attempt_probe("redis/rate_limit", connect, |c| c.as_ref().map(|_| ()).map_err(|e| e.to_string()))
            .and_then(Result::ok);
    let on_cluster = cluster.as_ref().map(|cluster| {
        rt.block_on(solutions::rate_limit::RedisLimiter::connect_cluster(
            cluster.seeds(),
            limiter_config("bench-c"),
            clock(),
        ))
        .expect("connect_cluster")
    });
    let trivial = redis::Script::new("return 1");
    let limiter_floor = redis::Script::new(LIMITER_FLOOR);
    for tasks in [1, TASKS] {
        let name = if tasks == 1 { "redis/rate_limit".to_string() } else { format!("redis/rate_limit_{tasks}_tasks") };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(CALLS * tasks));
        if let Some(attempt) = &attempt {
            group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
                b.iter(|| black_box(rt.block_on(concurrently(tasks, |t| limiter_calls(attempt, t)))))
            });
        }
        group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
            b.iter(|| black_box(rt.block_on(concurrently(tasks, |t| limiter_calls(&reference, t)))))
        });
        if let (Some(on_cluster), true) = (&on_cluster, tasks > 1) {
            group.bench_function(BenchmarkId::from_parameter("reference/cluster"), |b| {
                b.iter(|| black_box(rt.block_on(concurrently(tasks, |t| limiter_calls(on_cluster, t)))))
            });
        }
        group.bench_function(BenchmarkId::from_parameter("floor/same_redis_calls"), |b| {
            b.iter(|| {
                rt.block_on(concurrently(tasks, |t| {
                    let mut con = raw.clone();
                    let floor = &limiter_floor;
                    async move {
                        let tag = format!("{{bench-f:{t}}}");
                        for _ in 0..CALLS {
                            let _: i64 = floor
                                .key(format!("{tag}:b:user-1"))
                                .key(format!("{tag}:b:endpoint-/pay"))
                                .key(format!("{tag}:b:tenant-9"))
                                .key(format!("{tag}:latest"))
                                .arg(1_000_000)
                                .invoke_async(&mut con)
                                .await
                                .expect("evalsha");
                        }
                        CALLS as usize
                    }
                }))
            })
        });
        group.bench_function(BenchmarkId::from_parameter("raw_evalsha"), |b| {
            b.iter(|| {
                rt.block_on(concurrently(tasks, |_| async {
                    let mut con = raw.clone();
                    for _ in 0..CALLS {
                        let _: i64 = trivial.key("{bench}:x").invoke_async(&mut con).await.expect("evalsha");
                    }
                    CALLS as usize
                }))
            })
        });
        group.finish();
    }

    let reference = rt
        .block_on(solutions::idempotency::RedisStore::connect(&url, store_config("bench-r"), clock()))
        .expect("connect");
    let connect = || rt.block_on(exercises::idempotency::RedisStore::connect(&url, store_config("bench-a"), clock()));
    let attempt =
        common::attempt_probe("redis/idempotency", connect, |c| c.as_ref().map(|_| ()).map_err(|e| e.to_string()))
            .and_then(Result::ok);
    let (begin_floor, settle_floor) = (redis::Script::new(BEGIN_FLOOR), redis::Script::new(SETTLE_FLOOR));
    // Every iteration uses new keys: a round number is part of each.
    let mut round = 0;
    for tasks in [1, TASKS] {
        let name =
            if tasks == 1 { "redis/idempotency".to_string() } else { format!("redis/idempotency_{tasks}_tasks") };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(CALLS * tasks));
        if let Some(attempt) = &attempt {
            group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
                b.iter(|| {
                    round += 1;
                    black_box(rt.block_on(concurrently(tasks, |t| store_calls(attempt, round, t))))
                })
            });
        }
        group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
            b.iter(|| {
                round += 1;
                black_box(rt.block_on(concurrently(tasks, |t| store_calls(&reference, round, t))))
            })
        });
        group.bench_function(BenchmarkId::from_parameter("floor/same_redis_calls"), |b| {
            b.iter(|| {
                round += 1;
                rt.block_on(concurrently(tasks, |t| {
                    let mut con = raw.clone();
                    let (begin, settle) = (&begin_floor, &settle_floor);
                    async move {
                        for i in 0..CALLS {
                            let tag = format!("{{bench-f:{round}:{t}:{i}}}");
                            let (record, fence) = (format!("{tag}:r"), format!("{tag}:f"));
                            for script in [begin, settle] {
                                let _: i64 = script
                                    .key(&record)
                                    .key(&fence)
                                    .arg(1_000_000)
                                    .invoke_async(&mut con)
                                    .await
                                    .expect("evalsha");
                            }
                        }
                        CALLS as usize
                    }
                }))
            })
        });
        group.bench_function(BenchmarkId::from_parameter("raw_set_nx_twice"), |b| {
            b.iter(|| {
                round += 1;
                rt.block_on(concurrently(tasks, |t| {
                    let mut con = raw.clone();
                    async move {
                        for i in 0..CALLS {
                            let key = format!("{{bench}}:nx:{round}:{t}:{i}");
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
                        CALLS as usize
                    }
                }))
            })
        });
        group.finish();
    }
}

/// Runs `tasks` copies of `work` (numbered 0..tasks) at once, on the caller's task:
/// their requests share the one multiplexed connection each contender holds.
async fn concurrently<F: std::future::Future<Output = usize>>(tasks: u64, work: impl Fn(u64) -> F) -> usize {
    futures_util::future::join_all((0..tasks).map(work)).await.into_iter().sum()
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
