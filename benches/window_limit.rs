//! `cargo bench --bench window_limit`: each window algorithm (attempt and reference)
//! against the token-bucket reference (`solutions::rate_limit`), in memory and on Redis.
//!
//! * `window_limit/zipf_90_10`: 10,000 keys, 90% of requests on a hot 10%, each a
//!   single key of 100 per 10ms, cost 1, single-threaded (the `rate_limit` workload;
//!   the token bucket gets the same 100 per 10ms as burst 100, one per 100µs).
//! * `redis/window_limit`: one `check` of 3 keys per call, sequential, each algorithm
//!   vs the token bucket on Redis and a raw `EVALSHA` of `return 1` (the floor: one
//!   round trip + a script), on a private `redis-server`; skipped, loudly, without one.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::clock::SystemClock;
use harness::rate_limit::{Quota, RateLimiter, RedisLimiterConfig, RedisRateLimiter, WhenUnavailable};
use harness::redis_server::RedisServer;
use harness::window_limit::{Algorithm, RedisWindowLimiter, WindowDecision, WindowLimiter, WindowQuota};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;

const KEYS: u64 = 10_000;
const HOT_KEYS: u64 = KEYS / 10;
const REQUESTS: usize = 1 << 14;
const LIMIT: u32 = 100;
const WINDOW: Duration = Duration::from_millis(10);
const REDIS_CALLS: u64 = 200;

const ALGORITHMS: [(&str, Algorithm); 3] = [
    ("fixed_window", Algorithm::FixedWindow),
    ("sliding_log", Algorithm::SlidingLog),
    ("sliding_window_counter", Algorithm::SlidingWindowCounter),
];

fn zipf_90_10(seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..REQUESTS)
        .map(|_| if rng.random_bool(0.9) { rng.random_range(0..HOT_KEYS) } else { rng.random_range(HOT_KEYS..KEYS) })
        .collect()
}

fn window_quota() -> WindowQuota {
    WindowQuota::new(LIMIT, WINDOW).expect("valid quota")
}

fn bucket_quota() -> Quota {
    Quota::new(LIMIT, WINDOW / LIMIT).expect("valid quota")
}

fn run<L: WindowLimiter<u64>>(limiter: &L, keys: &[u64]) -> usize {
    let quota = window_quota();
    keys.iter().filter(|&&key| limiter.check(&[(key, quota)], 1).is_ok_and(|d| d.is_allowed())).count()
}

fn run_bucket<L: RateLimiter<u64>>(limiter: &L, keys: &[u64]) -> usize {
    let quota = bucket_quota();
    keys.iter().filter(|&&key| limiter.check(&[(key, quota)], 1).is_ok_and(|d| d.allowed)).count()
}

fn attempt_is_ready() -> bool {
    let probe = || {
        let limiter = exercises::window_limit::Limiter::<u64>::new(Algorithm::SlidingLog, SystemClock::shared());
        limiter.check(&[(1, window_quota())], 1)
    };
    common::attempt_probe("window_limit", probe, |got| common::expect(got, &Ok(WindowDecision::Allowed))).is_some()
}

fn in_memory(c: &mut Criterion) {
    let keys = zipf_90_10(7);
    let attempt_ready = attempt_is_ready();
    let mut group = c.benchmark_group("window_limit/zipf_90_10");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    for (name, algorithm) in ALGORITHMS {
        if attempt_ready {
            group.bench_function(BenchmarkId::new("attempt", name), |b| {
                let limiter = exercises::window_limit::Limiter::<u64>::new(algorithm, SystemClock::shared());
                b.iter(|| black_box(run(&limiter, &keys)))
            });
        }
        group.bench_function(BenchmarkId::new("reference", name), |b| {
            let limiter = solutions::window_limit::Limiter::<u64>::new(algorithm, SystemClock::shared());
            b.iter(|| black_box(run(&limiter, &keys)))
        });
    }
    group.bench_function(BenchmarkId::from_parameter("token_bucket_reference"), |b| {
        let limiter = solutions::rate_limit::Limiter::<u64>::new(SystemClock::shared());
        b.iter(|| black_box(run_bucket(&limiter, &keys)))
    });
    group.finish();
}

fn limiter_config(namespace: &str) -> RedisLimiterConfig {
    RedisLimiterConfig {
        namespace: namespace.into(),
        timeout: Duration::from_secs(1),
        when_unavailable: WhenUnavailable::FailClosed,
    }
}

const REDIS_KEYS: [&str; 3] = ["user-1", "endpoint-/pay", "tenant-9"];

async fn window_calls<L: RedisWindowLimiter>(limiter: &L) -> usize {
    // A large limit: every call allowed, so every call writes (the costlier path).
    let q = WindowQuota::new(1_000_000, Duration::from_secs(1)).expect("valid quota");
    let limits = REDIS_KEYS.map(|k| (k, q));
    let mut allowed = 0;
    for _ in 0..REDIS_CALLS {
        allowed += usize::from(limiter.check(&limits, 1).await.is_ok_and(|d| d.is_allowed()));
    }
    allowed
}

async fn bucket_calls<L: RedisRateLimiter>(limiter: &L) -> usize {
    let q = Quota::new(1_000_000, Duration::from_micros(1)).expect("valid quota");
    let limits = REDIS_KEYS.map(|k| (k, q));
    let mut allowed = 0;
    for _ in 0..REDIS_CALLS {
        allowed += usize::from(limiter.check("tenant-9", &limits, 1).await.is_ok_and(|d| d.allowed));
    }
    allowed
}

fn on_redis(c: &mut Criterion) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("\n*** redis/window_limit SKIPPED: {why:?} ***\n");
            return;
        }
    };
    let rt = Runtime::new().expect("tokio runtime");
    let url = server.url().to_string();
    let mut group = c.benchmark_group("redis/window_limit");
    group.throughput(Throughput::Elements(REDIS_CALLS));
    for (name, algorithm) in ALGORITHMS {
        let connect = || {
            rt.block_on(exercises::window_limit::RedisLimiter::connect(
                &url,
                algorithm,
                limiter_config(&format!("bench-a-{name}")),
                SystemClock::shared(),
            ))
        };
        let label = format!("redis/window_limit/{name}");
        if let Some(Ok(limiter)) =
            common::attempt_probe(&label, connect, |c| c.as_ref().map(|_| ()).map_err(|e| e.to_string()))
        {
            group.bench_function(BenchmarkId::new("attempt", name), |b| {
                b.iter(|| black_box(rt.block_on(window_calls(&limiter))))
            });
        }
        let reference = rt
            .block_on(solutions::window_limit::RedisLimiter::connect(
                &url,
                algorithm,
                limiter_config(&format!("bench-r-{name}")),
                SystemClock::shared(),
            ))
            .expect("connect");
        group.bench_function(BenchmarkId::new("reference", name), |b| {
            b.iter(|| black_box(rt.block_on(window_calls(&reference))))
        });
    }
    let bucket = rt
        .block_on(solutions::rate_limit::RedisLimiter::connect(&url, limiter_config("bench-tb"), SystemClock::shared()))
        .expect("connect");
    group.bench_function(BenchmarkId::from_parameter("token_bucket_reference"), |b| {
        b.iter(|| black_box(rt.block_on(bucket_calls(&bucket))))
    });
    let raw = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("client");
        redis::aio::ConnectionManager::new(client).await.expect("raw connection")
    });
    let trivial = redis::Script::new("return 1");
    group.bench_function(BenchmarkId::from_parameter("raw_evalsha"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut con = raw.clone();
                for _ in 0..REDIS_CALLS {
                    let _: i64 = trivial.key("{bench}:x").invoke_async(&mut con).await.expect("evalsha");
                }
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = in_memory, on_redis
}
criterion_main!(benches);
