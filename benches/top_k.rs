//! `cargo bench --bench top_k`: the attempt against the reference, ingesting a log
//! stream and asking for the top 10 every 100 lines (`ingest_20k_lines`), and after
//! every line (`ingest_20k_lines_top_every_line`: "optimise for frequent reads").
//!
//! Workload: 20,000 lines, 5,000 users (90% of events from a hot 10%), timestamps
//! rising one unit every 10 lines with ±20 of jitter (so some events come out of order
//! and a few are late), window 300.
//!
//! `floor` is what no tracker can skip: `parse_line`, interning the user (one hash
//! lookup) and one count per line; no window, no ranking. Target: the reference at
//! ≥ 10M lines/s on `ingest_20k_lines`.

use std::hint::black_box;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::top_k::{parse_line, SlidingTopK, TopKConfig};
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

/// Ingests every line, reading the top after every `read_every` lines.
fn run<T: SlidingTopK>(lines: &[String], read_every: usize) -> usize {
    let mut tracker = T::new(config());
    let mut seen = 0;
    for (i, line) in lines.iter().enumerate() {
        let _ = tracker.ingest_line(line);
        if i % read_every == read_every - 1 {
            seen += tracker.top().len();
        }
    }
    seen
}

/// The floor: parse, intern, count; nothing leaves, nothing is ranked.
fn floor(lines: &[String]) -> usize {
    let mut counts: hashbrown::HashMap<Box<str>, u64> = hashbrown::HashMap::new();
    for line in lines {
        if let Ok(event) = parse_line(line) {
            match counts.get_mut(event.user) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(event.user.into(), 1);
                }
            }
        }
    }
    counts.len()
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
    let attempt_ready = attempt_is_ready();
    for (name, read_every) in [("top_k/ingest_20k_lines", 100), ("top_k/ingest_20k_lines_top_every_line", 1)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(LINES as u64));
        if attempt_ready {
            group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
                b.iter(|| black_box(run::<exercises::top_k::TopK>(&lines, read_every)))
            });
        }
        group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
            b.iter(|| black_box(run::<solutions::top_k::TopK>(&lines, read_every)))
        });
        if read_every == 100 {
            group.bench_function(BenchmarkId::from_parameter("floor"), |b| b.iter(|| black_box(floor(&lines))));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
