//! `cargo bench --bench idempotency`: the attempt against the reference on the
//! request path of an API with idempotency keys.
//!
//! Workload: 10,000 requests; a new key executes and completes, and 30% of requests
//! are retries of a recent key (replayed); single-threaded, then from 2 threads.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use harness::clock::SystemClock;
use harness::idempotency::{Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const REQUESTS: usize = 10_000;

fn config() -> IdempotencyConfig {
    IdempotencyConfig::new(Duration::from_secs(30), Duration::from_secs(3600)).expect("valid config")
}

/// Key numbers: mostly new, 30% a retry of one of the last 100.
fn request_keys(seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut next = 0u64;
    (0..REQUESTS)
        .map(|_| {
            if next > 100 && rng.random_bool(0.3) {
                next - rng.random_range(1..=100)
            } else {
                next += 1;
                next
            }
        })
        .collect()
}

/// Serves every request in order.
fn serve<S: IdempotencyStore>(store: &S, keys: &[u64], scope: &str) -> usize {
    let mut replays = 0;
    for &k in keys {
        let key = format!("key-{k}");
        match store.begin(scope, &key, Fingerprint(k)) {
            Begin::Execute(lease) => {
                let _ = store.complete(scope, &key, lease.token, Response { status: 200, body: b"ok".to_vec() });
            }
            Begin::Replay(_) => replays += 1,
            _ => {}
        }
    }
    replays
}

fn attempt_is_ready() -> bool {
    let probe = || exercises::idempotency::Store::new(config(), SystemClock::shared()).begin("s", "k", Fingerprint(1));
    let executes = |got: &Begin| {
        if matches!(got, Begin::Execute(_)) {
            Ok(())
        } else {
            Err(format!("begin on a new key gave {got:?}"))
        }
    };
    common::attempt_probe("idempotency", probe, executes).is_some()
}

fn bench_store<S: IdempotencyStore>(c: &mut Criterion, name: &str, keys: &[u64], pair: &[Vec<u64>; 2]) {
    let mut group = c.benchmark_group("idempotency/requests");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    // A fresh store per iteration, built and dropped outside the measurement.
    let fresh = || S::new(config(), SystemClock::shared());
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_batched_ref(fresh, |store| black_box(serve(store, keys, "api")), BatchSize::PerIteration)
    });
    group.finish();

    let mut group = c.benchmark_group("idempotency/requests_two_threads");
    group.throughput(Throughput::Elements(2 * REQUESTS as u64));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_batched_ref(
            fresh,
            |store| {
                std::thread::scope(|s| {
                    let store = &*store;
                    let a = s.spawn(move || serve(store, &pair[0], "tenant-a"));
                    let b = s.spawn(move || serve(store, &pair[1], "tenant-b"));
                    black_box(a.join().expect("bench thread") + b.join().expect("bench thread"))
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let keys = request_keys(1);
    let pair = [request_keys(2), request_keys(3)];
    if attempt_is_ready() {
        bench_store::<exercises::idempotency::Store>(c, "attempt", &keys, &pair);
    }
    bench_store::<solutions::idempotency::Store>(c, "reference", &keys, &pair);
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
