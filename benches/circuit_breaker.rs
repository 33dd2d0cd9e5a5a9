//! `cargo bench --bench circuit_breaker`: what a breaker costs per call in the common
//! case, Closed with every call succeeding: the attempt against the reference; with
//! `--features peers`, also `failsafe` (success rate over a time window) and
//! `circuitbreaker-rs` (its default error-rate policy).
//!
//! Workload: 16,384 calls of no work each (acquire, then record a success), on one
//! thread; then the same from 2 threads on one shared breaker. The clock is the
//! system's monotonic clock, read at acquire and at record (the peers read theirs too).
//! Target: the reference within 2× the fastest peer: a breaker guards calls that take
//! milliseconds, so tens of nanoseconds are noise next to them.

use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::circuit_breaker::{BreakerConfig, CallPermit, CircuitBreaker, State};
use harness::clock::SystemClock;

const CALLS: usize = 1 << 14;

fn config() -> BreakerConfig {
    BreakerConfig {
        window: 100,
        min_calls: 10,
        failure_rate_percent: 50,
        slow_call: Duration::from_secs(1),
        cool_down: Duration::from_secs(30),
        probes: 3,
    }
}

/// `calls` successful calls of no work through `breaker`; how many were admitted.
fn run<B: CircuitBreaker>(breaker: &B, calls: usize) -> usize {
    (0..calls)
        .filter(|_| match breaker.try_acquire() {
            Ok(permit) => {
                permit.record_success();
                true
            }
            Err(_) => false,
        })
        .count()
}

/// Runs `work` on two threads at once.
fn on_two_threads(work: impl Fn() -> usize + Sync) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(&work)).collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).sum()
    })
}

fn attempt_is_ready() -> bool {
    let probe = || {
        let breaker = exercises::circuit_breaker::Breaker::new(config(), SystemClock::shared()).map_err(|_| ())?;
        let admitted = run(&breaker, 3);
        Ok::<_, ()>((admitted, breaker.state()))
    };
    common::attempt_probe("circuit_breaker", probe, |got| common::expect(got, &Ok((3, State::Closed)))).is_some()
}

fn reference() -> solutions::circuit_breaker::Breaker {
    solutions::circuit_breaker::Breaker::new(config(), SystemClock::shared()).expect("valid config")
}

fn attempt() -> exercises::circuit_breaker::Breaker {
    exercises::circuit_breaker::Breaker::new(config(), SystemClock::shared()).expect("valid config")
}

fn bench(c: &mut Criterion) {
    let attempt_ready = attempt_is_ready();

    let mut group = c.benchmark_group("circuit_breaker/closed_successes");
    group.throughput(Throughput::Elements(CALLS as u64));
    if attempt_ready {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            let breaker = attempt();
            b.iter(|| black_box(run(&breaker, CALLS)))
        });
    }
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        let breaker = reference();
        b.iter(|| black_box(run(&breaker, CALLS)))
    });
    #[cfg(feature = "peers")]
    {
        group.bench_function(BenchmarkId::from_parameter("failsafe"), |b| {
            let breaker = peers::failsafe();
            b.iter(|| black_box(peers::run_failsafe(&breaker, CALLS)))
        });
        group.bench_function(BenchmarkId::from_parameter("circuitbreaker-rs"), |b| {
            let breaker = peers::circuitbreaker_rs();
            b.iter(|| black_box(peers::run_circuitbreaker_rs(&breaker, CALLS)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("circuit_breaker/closed_successes_two_threads");
    group.throughput(Throughput::Elements(2 * CALLS as u64));
    if attempt_ready {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            let breaker = attempt();
            b.iter(|| black_box(on_two_threads(|| run(&breaker, CALLS))))
        });
    }
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        let breaker = reference();
        b.iter(|| black_box(on_two_threads(|| run(&breaker, CALLS))))
    });
    #[cfg(feature = "peers")]
    {
        group.bench_function(BenchmarkId::from_parameter("failsafe"), |b| {
            let breaker = peers::failsafe();
            b.iter(|| black_box(on_two_threads(|| peers::run_failsafe(&breaker, CALLS))))
        });
        group.bench_function(BenchmarkId::from_parameter("circuitbreaker-rs"), |b| {
            let breaker = peers::circuitbreaker_rs();
            b.iter(|| black_box(on_two_threads(|| peers::run_circuitbreaker_rs(&breaker, CALLS))))
        });
    }
    group.finish();
}

/// The peer crates, configured as close to [`config`] as they allow.
#[cfg(feature = "peers")]
mod peers {
    use std::time::Duration;

    /// failsafe: opens below a 50% success rate over 30s once 10 calls are in, for 30s.
    pub fn failsafe() -> impl failsafe::CircuitBreaker + Sync {
        let policy = failsafe::failure_policy::success_rate_over_time_window(
            0.5,
            10,
            Duration::from_secs(30),
            failsafe::backoff::constant(Duration::from_secs(30)),
        );
        failsafe::Config::new().failure_policy(policy).build()
    }

    pub fn run_failsafe(breaker: &impl failsafe::CircuitBreaker, calls: usize) -> usize {
        (0..calls).filter(|_| breaker.call(|| Ok::<(), ()>(())).is_ok()).count()
    }

    #[derive(Debug)]
    pub struct Failure;

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failure")
        }
    }

    impl std::error::Error for Failure {}

    pub type Rs = circuitbreaker_rs::CircuitBreaker<circuitbreaker_rs::DefaultPolicy, Failure>;

    /// circuitbreaker-rs: opens at a 50% error rate once 10 calls are in, for 30s.
    pub fn circuitbreaker_rs() -> Rs {
        Rs::builder().failure_threshold(0.5).min_throughput(10).cooldown(Duration::from_secs(30)).build()
    }

    pub fn run_circuitbreaker_rs(breaker: &Rs, calls: usize) -> usize {
        (0..calls).filter(|_| breaker.call(|| Ok::<(), Failure>(())).is_ok()).count()
    }
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
