//! `cargo bench --bench ttl_lru`: the attempt against the reference on a skewed
//! read-through workload; with `--features peers`, also the `lru` crate behind a
//! `parking_lot::Mutex` (no TTL, so it is the speed to aim for, not a twin).
//!
//! Workload: 10,000 keys, 90% of accesses to a hot 10% of them ("Zipf 90/10"),
//! capacity 1,000; each access is a `get`, and a miss is followed by an `insert`.
//! Caches read time on every call, so they are measured with `TickingClock` (1ms
//! resolution, one atomic load per read: what a cache with second-scale TTLs would
//! use); `reference/coarse_clock` and `reference/system_clock` show the cost of
//! reading the OS clock instead. Target: the reference at ≥ 1.2× the throughput of
//! `lru` behind a Mutex, and ahead of it on two threads (`zipf_90_10_two_threads`:
//! two threads share one cache, each over its own access sequence).
//!
//! `moka` (with `--features peers`) is a concurrent TTL cache people use: reads and
//! writes go to lock-free buffers applied later, and it evicts by TinyLFU, not LRU,
//! so its hit rate differs; it is the speed of giving up exact LRU order.
//!
//! `floor/locks_only`: what the API costs under one lock before any cache work: one
//! lock + unlock per call the reference makes (a `get`, and an `insert` after each
//! of its misses), plus hashing the key; in both groups (on two threads, each thread
//! over its own sequence, one lock between them). The floors take the reference's own
//! lock (`solutions::ttl_lru::SpinLock`, whose release is a plain store), so they stay
//! floors of the reference. The reference does all its work inside those locks; `lru`
//! behind a Mutex takes one lock per access (its `get` and `put` under the same
//! guard), which the two-call API cannot.
//! `floor/locks_clock_lookup` adds, inside each of those locks, the least any call of
//! a TTL cache does: a clock read and one lookup in a table of `CAPACITY` keys.

use std::hash::BuildHasher;
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
fn zipf_90_10(seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..ACCESSES)
        .map(|_| if rng.random_bool(0.9) { rng.random_range(0..HOT_KEYS) } else { rng.random_range(HOT_KEYS..KEYS) })
        .collect()
}

/// Runs `work` on two threads at once, each over its own access sequence.
fn on_two_threads(work: impl Fn(&[u64]) -> usize + Sync, sequences: &[Vec<u64>; 2]) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = sequences.iter().map(|seq| s.spawn(|| work(seq))).collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).sum()
    })
}

/// `lru` behind a Mutex: one lock per access, `get` then `put` under it.
#[cfg(feature = "peers")]
fn lru_read_through(cache: &parking_lot::Mutex<lru::LruCache<u64, u64>>, accesses: &[u64]) -> usize {
    let mut hits = 0;
    for &key in accesses {
        let mut cache = cache.lock();
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.put(key, key);
        }
    }
    hits
}

#[cfg(feature = "peers")]
fn new_lru() -> parking_lot::Mutex<lru::LruCache<u64, u64>> {
    parking_lot::Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(CAPACITY).expect("capacity > 0")))
}

#[cfg(feature = "peers")]
fn new_moka() -> moka::sync::Cache<u64, u64> {
    moka::sync::Cache::builder().max_capacity(CAPACITY as u64).time_to_live(TTL).build()
}

/// For each access, whether the reference misses it (and so makes a second call).
fn reference_misses(accesses: &[u64], clock: SharedClock) -> Vec<bool> {
    let cache = solutions::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, clock);
    accesses
        .iter()
        .map(|&key| {
            let miss = cache.get(&key).is_none();
            if miss {
                cache.insert(key, key, TTL);
            }
            miss
        })
        .collect()
}

/// The lock the reference takes, for the floors.
type ReferenceLock<T> = solutions::ttl_lru::SpinMutex<T>;

/// The floor: an empty critical section per call, the key hashed once per access.
fn locks_only(lock: &ReferenceLock<u64>, accesses: &[u64], misses: &[bool]) -> usize {
    let hasher = hashbrown::DefaultHashBuilder::default();
    let mut hits = 0;
    for (&key, &miss) in accesses.iter().zip(misses) {
        let hash = hasher.hash_one(key);
        *lock.lock() ^= hash;
        if miss {
            *lock.lock() ^= hash;
        } else {
            hits += 1;
        }
    }
    hits
}

/// A table of the hot keys (as many as the cache holds), for `floor/locks_clock_lookup`.
fn hot_key_table() -> ReferenceLock<hashbrown::HashTable<u64>> {
    let hasher = hashbrown::DefaultHashBuilder::default();
    let mut table = hashbrown::HashTable::with_capacity(CAPACITY);
    for key in 0..HOT_KEYS {
        table.insert_unique(hasher.hash_one(key), key, |&k| hasher.hash_one(k));
    }
    ReferenceLock::new(table)
}

/// The floor of any cache taking a lock per call: the locks of `locks_only`, and
/// inside each what every call of a TTL cache does at least: read the clock and look
/// the key up in a table as large as the cache (the hot keys; the key hashed before
/// the lock). No recency, no expiry check, no insert, no eviction.
fn locks_clock_lookup(
    table: &ReferenceLock<hashbrown::HashTable<u64>>,
    clock: &SharedClock,
    accesses: &[u64],
    misses: &[bool],
) -> usize {
    let hasher = hashbrown::DefaultHashBuilder::default();
    let call = |hash: u64, key: u64| {
        let table = table.lock();
        let now = clock.now();
        usize::from(table.find(hash, |&k| k == key).is_some()) ^ (now.as_nanos() & 1) as usize
    };
    let mut found = 0;
    for (&key, &miss) in accesses.iter().zip(misses) {
        let hash = hasher.hash_one(key);
        found += call(hash, key);
        if miss {
            found += call(hash, key);
        }
    }
    found
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
    let accesses = zipf_90_10(42);
    let pair = [zipf_90_10(43), zipf_90_10(44)];
    let ticking = TickingClock::start(Duration::from_millis(1));
    let cache_clock = || -> SharedClock { ticking.shared() };
    let attempt_ready = attempt_is_ready();

    let mut group = c.benchmark_group("ttl_lru/zipf_90_10");
    group.throughput(Throughput::Elements(ACCESSES as u64));
    if attempt_ready {
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
    let misses = reference_misses(&accesses, cache_clock());
    group.bench_function(BenchmarkId::from_parameter("floor/locks_only"), |b| {
        let lock = ReferenceLock::new(0);
        b.iter(|| black_box(locks_only(&lock, &accesses, &misses)))
    });
    group.bench_function(BenchmarkId::from_parameter("floor/locks_clock_lookup"), |b| {
        let (table, clock) = (hot_key_table(), cache_clock());
        b.iter(|| black_box(locks_clock_lookup(&table, &clock, &accesses, &misses)))
    });
    #[cfg(feature = "peers")]
    {
        group.bench_function(BenchmarkId::from_parameter("lru+Mutex"), |b| {
            let cache = new_lru();
            b.iter(|| black_box(lru_read_through(&cache, &accesses)))
        });
        group.bench_function(BenchmarkId::from_parameter("moka"), |b| {
            let cache = new_moka();
            b.iter(|| black_box(read_through_moka(&cache, &accesses)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("ttl_lru/zipf_90_10_two_threads");
    group.throughput(Throughput::Elements(2 * ACCESSES as u64));
    if attempt_ready {
        group.bench_function(BenchmarkId::from_parameter("attempt"), |b| {
            let cache = exercises::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, cache_clock());
            b.iter(|| black_box(on_two_threads(|seq| read_through(&cache, seq), &pair)))
        });
    }
    group.bench_function(BenchmarkId::from_parameter("reference"), |b| {
        let cache = solutions::ttl_lru::TtlLru::<u64, u64>::new(CAPACITY, cache_clock());
        b.iter(|| black_box(on_two_threads(|seq| read_through(&cache, seq), &pair)))
    });
    // Each thread misses where its sequence misses alone: the shared cache's misses
    // differ a little, the lock count hardly.
    let pair_misses = [reference_misses(&pair[0], cache_clock()), reference_misses(&pair[1], cache_clock())];
    group.bench_function(BenchmarkId::from_parameter("floor/locks_only"), |b| {
        let lock = ReferenceLock::new(0);
        b.iter(|| {
            black_box(std::thread::scope(|s| {
                let threads: Vec<_> = pair
                    .iter()
                    .zip(&pair_misses)
                    .map(|(seq, misses)| s.spawn(|| locks_only(&lock, seq, misses)))
                    .collect();
                threads.into_iter().map(|t| t.join().expect("bench thread")).sum::<usize>()
            }))
        })
    });
    group.bench_function(BenchmarkId::from_parameter("floor/locks_clock_lookup"), |b| {
        let (table, clock) = (hot_key_table(), cache_clock());
        b.iter(|| {
            black_box(std::thread::scope(|s| {
                let threads: Vec<_> = pair
                    .iter()
                    .zip(&pair_misses)
                    .map(|(seq, misses)| s.spawn(|| locks_clock_lookup(&table, &clock, seq, misses)))
                    .collect();
                threads.into_iter().map(|t| t.join().expect("bench thread")).sum::<usize>()
            }))
        })
    });
    #[cfg(feature = "peers")]
    {
        group.bench_function(BenchmarkId::from_parameter("lru+Mutex"), |b| {
            let cache = new_lru();
            b.iter(|| black_box(on_two_threads(|seq| lru_read_through(&cache, seq), &pair)))
        });
        group.bench_function(BenchmarkId::from_parameter("moka"), |b| {
            let cache = new_moka();
            b.iter(|| black_box(on_two_threads(|seq| read_through_moka(&cache, seq), &pair)))
        });
    }
    group.finish();
}

#[cfg(feature = "peers")]
fn read_through_moka(cache: &moka::sync::Cache<u64, u64>, accesses: &[u64]) -> usize {
    let mut hits = 0;
    for &key in accesses {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, key);
        }
    }
    hits
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = bench
}
criterion_main!(benches);
