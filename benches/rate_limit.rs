//! `cargo bench --bench rate_limit`: the attempt against the reference, one key per
//! request; with `--features peers`, also `governor`'s keyed limiter (DashMap store).
//!
//! Workload: 10,000 keys, 90% of requests on a hot 10% ("Zipf 90/10"), each a single
//! bucket of 100 per 10ms, cost 1, single-threaded; then the same from 2 threads.
//! Target: the reference at ≥ 1.0× governor keyed.
//!
//! Clocks: governor reads the CPU's time-stamp counter (through `quanta`); the
//! attempt and the reference get the same kind of clock, [`TscClock`], so the
//! comparison is of the limiters. `reference/system_clock` shows what reading
//! `clock_gettime` on every check costs instead (it runs at ~0.7× the throughput).

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::clock::{SharedClock, SystemClock, TscClock};
use harness::rate_limit::{Quota, RateLimiter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 10_000;
const HOT_KEYS: u64 = KEYS / 10;
const REQUESTS: usize = 1 << 14;
const BURST: u32 = 100;
const PERIOD: Duration = Duration::from_micros(100);

fn zipf_90_10(seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..REQUESTS)
        .map(|_| if rng.random_bool(0.9) { rng.random_range(0..HOT_KEYS) } else { rng.random_range(HOT_KEYS..KEYS) })
        .collect()
}

fn quota() -> Quota {
    Quota::new(BURST, PERIOD).expect("valid quota")
}

fn run<L: RateLimiter<u64>>(limiter: &L, keys: &[u64]) -> usize {
    let quota = quota();
    keys.iter().filter(|&&key| limiter.check(&[(key, quota)], 1).is_ok_and(|d| d.allowed)).count()
}

/// Runs `work` on two threads at once, each over its own request sequence.
fn on_two_threads(work: impl Fn(&[u64]) -> usize + Sync, sequences: &[Vec<u64>; 2]) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = sequences.iter().map(|seq| s.spawn(|| work(seq))).collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).sum()
    })
}

fn attempt_is_ready() -> bool {
    let probe = || {
        let limiter = exercises::rate_limit::Limiter::<u64>::new(SystemClock::shared());
        limiter.check(&[(1, quota())], 1).map(|d| d.allowed)
    };
    common::attempt_probe("rate_limit", probe, |got| common::expect(got, &Ok(true))).is_some()
}

fn bench(c: &mut Criterion) {
    let keys = zipf_90_10(7);
    let pair = [zipf_90_10(8), zipf_90_10(9)];
    let attempt_ready = attempt_is_ready();

    let mut group = c.benchmark_group("rate_limit/zipf_90_10");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    if attempt_ready {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            let limiter = exercises::rate_limit::Limiter::<u64>::new(TscClock::shared());
            b.iter(|| black_box(run(&limiter, &keys)))
        });
    }
    for (name, clock) in
        [("reference", TscClock::shared as fn() -> SharedClock), ("reference/system_clock", SystemClock::shared)]
    {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let limiter = solutions::rate_limit::Limiter::<u64>::new(clock());
            b.iter(|| black_box(run(&limiter, &keys)))
        });
    }
    #[cfg(feature = "peers")]
    group.bench_function(BenchmarkId::from_parameter("governor_keyed"), |b| {
        let limiter = governor_limiter();
        b.iter(|| black_box(keys.iter().filter(|k| limiter.check_key(k).is_ok()).count()))
    });
    group.finish();

    let mut group = c.benchmark_group("rate_limit/zipf_90_10_two_threads");
    group.throughput(Throughput::Elements(2 * REQUESTS as u64));
    if attempt_ready {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            let limiter = exercises::rate_limit::Limiter::<u64>::new(TscClock::shared());
            b.iter(|| black_box(on_two_threads(|seq| run(&limiter, seq), &pair)))
        });
    }
    for (name, clock) in
        [("reference", TscClock::shared as fn() -> SharedClock), ("reference/system_clock", SystemClock::shared)]
    {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let limiter = solutions::rate_limit::Limiter::<u64>::new(clock());
            b.iter(|| black_box(on_two_threads(|seq| run(&limiter, seq), &pair)))
        });
    }
    #[cfg(feature = "peers")]
    group.bench_function(BenchmarkId::from_parameter("governor_keyed"), |b| {
        let limiter = governor_limiter();
        b.iter(|| black_box(on_two_threads(|seq| seq.iter().filter(|k| limiter.check_key(k).is_ok()).count(), &pair)))
    });
    group.finish();
}

#[cfg(feature = "peers")]
fn governor_limiter() -> governor::DefaultKeyedRateLimiter<u64> {
    let quota = governor::Quota::with_period(PERIOD)
        .expect("non-zero period")
        .allow_burst(std::num::NonZeroU32::new(BURST).expect("non-zero burst"));
    governor::RateLimiter::keyed(quota)
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
