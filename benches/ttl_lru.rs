//! `cargo bench --bench ttl_lru`: the attempt against the reference on a skewed
//! read-through workload; with `--features peers`, also the `lru` crate behind a
//! `parking_lot::Mutex` (no TTL, so it is the speed to aim for, not a twin).
//!
//! Workload: 10,000 keys, 90% of accesses to a hot 10% of them ("Zipf 90/10"),
//! capacity 1,000; each access is a `get`, and a miss is followed by an `insert`.
//! Caches read time on every call, so they are measured with `TickingClock` (1ms
//! resolution, one atomic load per read: what a cache with second-scale TTLs would
//! use); `reference/coarse_clock` and `reference/system_clock` show the cost of
//! reading the OS clock instead. Target: the reference at ≥ 0.75× the throughput of
//! `lru` behind a Mutex.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::clock::{CoarseClock, SharedClock, SystemClock, TickingClock};
use harness::ttl_lru::TtlLruCache;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 10_000;
const HOT_KEYS: u64 = KEYS / 10;
const CAPACITY: usize = 1_000;
const ACCESSES: usize = 1 << 16;
const TTL: Duration = Duration::from_secs(600);

/// The same access sequence for every contender.
fn zipf_90_10() -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(42);
    (0..ACCESSES)
        .map(|_| if rng.random_bool(0.9) { rng.random_range(0..HOT_KEYS) } else { rng.random_range(HOT_KEYS..KEYS) })
        .collect()
}

/// Runs the whole access sequence once; returns the hits so nothing is optimised away.
fn read_through<C: TtlLruCache<u64, u64>>(cache: &C, accesses: &[u64]) -> usize {
    let mut hits = 0;
    for &key in accesses {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, key, TTL);
        }
    }
    hits
}

/// `true` if the attempt is implemented far enough to be measured.
fn attempt_is_ready() -> bool {
    let probe = || {
        let cache = exercises::ttl_lru::TtlLru::<u64, u64>::new(2, CoarseClock::shared());
        cache.insert(1, 1, TTL);
        cache.get(&1)
    };
    common::attempt_probe("ttl_lru", probe, |got| common::expect(got, &Some(1))).is_some()
}

fn bench(c: &mut Criterion) {
    let accesses = zipf_90_10();
    let ticking = TickingClock::start(Duration::from_millis(1));
    let cache_clock = || -> SharedClock { ticking.shared() };
    let mut group = c.benchmark_group("ttl_lru/zipf_90_10");
    group.throughput(Throughput::Elements(ACCESSES as u64));

    if attempt_is_ready() {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            let cache = exercises::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, cache_clock());
            b.iter(|| black_box(read_through(&cache, &accesses)))
        });
    }
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        let cache = solutions::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, cache_clock());
        b.iter(|| black_box(read_through(&cache, &accesses)))
    });
    group.bench_function(BenchmarkId::from_parameter("reference/coarse_clock"), |b| {
        let cache = solutions::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, CoarseClock::shared());
        b.iter(|| black_box(read_through(&cache, &accesses)))
    });
    group.bench_function(BenchmarkId::from_parameter("reference/system_clock"), |b| {
        let cache = solutions::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, SystemClock::shared());
        b.iter(|| black_box(read_through(&cache, &accesses)))
    });
    #[cfg(feature = "peers")]
    group.bench_function(BenchmarkId::from_parameter("lru+Mutex"), |b| {
        let cache =
            parking_lot::Mutex::new(lru::LruCache::<u64, u64>::new(std::num::NonZeroUsize::new(CAPACITY).unwrap()));
        b.iter(|| {
            let mut hits = 0;
            for &key in &accesses {
                let mut cache = cache.lock();
                if cache.get(&key).is_some() {
                    hits += 1;
                } else {
                    cache.put(key, key);
                }
            }
            black_box(hits)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
