//! `cargo bench --bench top_k`: the attempt against the reference, ingesting a log
//! stream and asking for the top 10 every 100 lines.
//!
//! Workload: 20,000 lines, 5,000 users (90% of events from a hot 10%), timestamps
//! rising one unit every 10 lines with ±20 of jitter (so some events come out of order
//! and a few are late), window 300.

use std::hint::black_box;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::top_k::{SlidingTopK, TopKConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const LINES: usize = 20_000;
const USERS: u64 = 5_000;

fn log_lines() -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(3);
    (0..LINES)
        .map(|i| {
            let ts = (i as u64 / 10 + 20).saturating_add_signed(rng.random_range(-20..=20));
            let user = if rng.random_bool(0.9) {
                rng.random_range(0..USERS / 10)
            } else {
                rng.random_range(USERS / 10..USERS)
            };
            format!("{ts} user{user} view")
        })
        .collect()
}

fn config() -> TopKConfig {
    TopKConfig::new(300, 10).expect("valid config")
}

fn run<T: SlidingTopK>(lines: &[String]) -> usize {
    let mut tracker = T::new(config());
    let mut seen = 0;
    for (i, line) in lines.iter().enumerate() {
        let _ = tracker.ingest_line(line);
        if i % 100 == 99 {
            seen += tracker.top().len();
        }
    }
    seen
}

fn attempt_is_ready() -> bool {
    let probe = || {
        let mut tracker = exercises::top_k::TopK::new(config());
        let _ = tracker.ingest_line("1 a view");
        tracker.top()
    };
    common::attempt_probe("top_k", probe, |top| common::expect(top, &vec![("a".to_string(), 1)])).is_some()
}

fn bench(c: &mut Criterion) {
    let lines = log_lines();
    let mut group = c.benchmark_group("top_k/ingest_20k_lines");
    group.throughput(Throughput::Elements(LINES as u64));
    if attempt_is_ready() {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            b.iter(|| black_box(run::<exercises::top_k::TopK>(&lines)))
        });
    }
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        b.iter(|| black_box(run::<solutions::top_k::TopK>(&lines)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
