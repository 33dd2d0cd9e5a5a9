//! The graded suite: op generators, hand-written edges, real-thread histories, the
//! single-flight scenarios, and [`suite`] with the exercise's levels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::model::{Config, Op, Output, TtlLruSpec};
use super::{ErasedCache, Factory, Key, Value};
use crate::clock::ManualClock;
use crate::linearizability::{
    check_histories, check_histories_after, contention_point, set_forced_yields, HistoryBudget, SplitMix,
};
use crate::sequential::{exhaustive, random, replay, Budget};
use crate::suite::{
    guarded, Case, CaseError, CaseResult, Level, Panic, QUICK_DEADLINE as QUICK, THREADED_DEADLINE as THREADED,
};
use crate::watchdog::InFlight;

/// Applies one op to the cache under test (and the test's clock).
fn apply(cache: &dyn ErasedCache, clock: &ManualClock, op: &Op) -> Output {
    match *op {
        Op::Insert { key, value, ttl } => Output::Value(cache.insert(Key(key.into()), value, ttl)),
        Op::Get(key) => Output::Value(cache.get(&Key(key.into()))),
        Op::Remove(key) => Output::Value(cache.remove(&Key(key.into()))),
        Op::Len => Output::Len(cache.len()),
        Op::Advance(d) => {
            clock.advance(d);
            Output::Nothing
        }
        Op::GetOrInsertWith { key, ttl, value } => {
            let mut called_load = false;
            let value = cache.get_or_insert_with(Key(key.into()), ttl, &mut || {
                let _in_flight = InFlight::new(format!("the load of k{key} (returning {value})"));
                called_load = true;
                // A load takes a while: in concurrency cases other calls run meanwhile.
                contention_point();
                contention_point();
                value
            });
            Output::Loaded { value, called_load }
        }
    }
}

/// A fresh cache under test; a panic in its `new` is the case's error.
fn build(make: Factory, capacity: usize, clock: &ManualClock) -> Result<Arc<dyn ErasedCache>, CaseError> {
    guarded(|| make(capacity, clock.shared())).map_err(|p| p.into_case_error(format!("{:?}", Config { capacity })))
}

/// Replays `ops` on a fresh cache from `make` and on the model.
fn replay_on(make: Factory, config: &Config, ops: &[Op]) -> CaseResult {
    replay::<TtlLruSpec, _>(config, ops, |config| {
        let clock = ManualClock::new();
        let cache = make(config.capacity, clock.shared());
        move |op: &Op| apply(cache.as_ref(), &clock, op)
    })
}

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

/// "Forever", as far as a test is concerned, without hitting saturation.
pub(super) const LONG: Duration = Duration::from_secs(3600);
pub(super) const SECOND: Duration = Duration::from_secs(1);

/// Gives every insert/load a distinct value (100 + its step), so a stale or swapped
/// value can never pass for the right one.
fn numbered(ops: &[Op]) -> Vec<Op> {
    let mut ops = ops.to_vec();
    for (i, op) in ops.iter_mut().enumerate() {
        if let Op::Insert { value, .. } | Op::GetOrInsertWith { value, .. } = op {
            *value = 100 + i as Value;
        }
    }
    ops
}

fn key_of(op: &Op) -> Option<u8> {
    match *op {
        Op::Insert { key, .. } | Op::Get(key) | Op::Remove(key) | Op::GetOrInsertWith { key, .. } => Some(key),
        Op::Len | Op::Advance(_) => None,
    }
}

/// Keys are interchangeable, so only sequences that first use k0, then k1, ... are
/// enumerated: every other sequence is one of those with keys renamed.
fn keys_in_first_use_order(ops: &[Op]) -> bool {
    let mut next_new = 0u8;
    for key in ops.iter().filter_map(key_of) {
        if key > next_new {
            return false;
        }
        if key == next_new {
            next_new += 1;
        }
    }
    true
}

/// Which ops a level's sequences are made of.
#[derive(Clone, Copy)]
struct Alphabet {
    keys: u8,
    ttls: &'static [Duration],
    advances: &'static [Duration],
    loads: bool,
    removes: bool,
}

impl Alphabet {
    fn letters(self) -> Vec<Op> {
        let mut ops = Vec::new();
        for key in 0..self.keys {
            for &ttl in self.ttls {
                ops.push(Op::Insert { key, value: 0, ttl });
                if self.loads {
                    ops.push(Op::GetOrInsertWith { key, ttl, value: 0 });
                }
            }
            ops.push(Op::Get(key));
            if self.removes {
                ops.push(Op::Remove(key));
            }
        }
        ops.push(Op::Len);
        ops.extend(self.advances.iter().copied().map(Op::Advance));
        ops
    }

    /// Random configs and sequences: small capacities mostly, and now and then a huge
    /// one (the contract allows any `usize`, so `new` must not allocate for it).
    fn strategy(
        self,
        capacities: std::ops::RangeInclusive<usize>,
        max_len: usize,
    ) -> impl Strategy<Value = (Config, Vec<Op>)> {
        let letters = self.letters();
        let capacity = prop_oneof![8 => capacities, 1 => Just(1 << 40), 1 => Just(usize::MAX)];
        (capacity, proptest::collection::vec(proptest::sample::select(letters), 1..=max_len))
            .prop_map(|(capacity, ops)| (Config { capacity }, numbered(&ops)))
    }
}

fn exhaustive_case(make: Factory, capacities: &[usize], alphabet: Alphabet, max_len: usize) -> CaseResult {
    let configs: Vec<Config> = capacities.iter().map(|&capacity| Config { capacity }).collect();
    exhaustive(
        &configs,
        |_| alphabet.letters(),
        max_len,
        keys_in_first_use_order,
        |config, ops| replay_on(make, config, &numbered(ops)),
    )
}

fn random_case(make: Factory, capacities: std::ops::RangeInclusive<usize>, alphabet: Alphabet) -> CaseResult {
    random(alphabet.strategy(capacities, 48), Budget::default(), |(config, ops)| replay_on(make, config, ops))
}

/// Long sequences on few keys: hundreds of TTL resets and expiries, so that whatever
/// housekeeping an attempt does now and then (sweeps, heap rebuilds, compaction) runs
/// several times, and what it left behind is read back.
fn long_case(make: Factory) -> CaseResult {
    let budget = Budget { cases: 48, ..Budget::default() };
    random(RANDOM_TTL.strategy(1..=3, 400), budget, |(config, ops)| replay_on(make, config, ops))
}

const LRU_ONLY: Alphabet = Alphabet { keys: 3, ttls: &[LONG], advances: &[], loads: false, removes: true };
const WITH_TTL: Alphabet =
    Alphabet { keys: 3, ttls: &[SECOND, Duration::from_secs(2)], advances: &[SECOND], loads: false, removes: true };
/// Three keys so that a load hit's recency matters for eviction at capacity 2.
const WITH_LOADS: Alphabet = Alphabet { keys: 3, ttls: &[LONG], advances: &[], loads: true, removes: false };
const RANDOM_LRU: Alphabet = Alphabet { keys: 6, ttls: &[LONG], advances: &[], loads: false, removes: true };
/// TTLs and clock steps over the whole range a `Duration` allows: a nanosecond, odd
/// sub-millisecond amounts, seconds, an hour, and `Duration::MAX`.
const RANDOM_TTL: Alphabet = Alphabet {
    keys: 5,
    ttls: &[
        Duration::from_nanos(1),
        Duration::from_nanos(999_999),
        Duration::from_millis(500),
        SECOND,
        Duration::from_millis(2500),
        LONG,
        Duration::MAX,
    ],
    advances: &[Duration::from_nanos(1), Duration::from_micros(333), Duration::from_millis(500)],
    loads: false,
    removes: true,
};
const RANDOM_LOADS: Alphabet = Alphabet { loads: true, ..RANDOM_TTL };

/// Hand-written edge scenarios, each replayed like any other sequence.
fn edge_scenarios() -> Vec<(Config, Vec<Op>)> {
    use Op::*;
    let ins = |key, value, ttl| Insert { key, value, ttl };
    vec![
        // ttl 0 removes the key and evicts nothing else, even when full.
        (
            Config { capacity: 2 },
            vec![ins(0, 1, LONG), ins(1, 2, LONG), ins(0, 3, Duration::ZERO), Get(0), Get(1), Len],
        ),
        (Config { capacity: 1 }, vec![ins(0, 1, LONG), ins(1, 2, Duration::ZERO), Get(0), Get(1), Len]),
        // Live iff now < t + ttl: at exactly t + ttl the entry is gone.
        (
            Config { capacity: 2 },
            vec![
                ins(0, 1, SECOND),
                Advance(Duration::from_nanos(999_999_999)),
                Get(0),
                Advance(Duration::from_nanos(1)),
                Get(0),
                Len,
            ],
        ),
        // A huge TTL never expires and never overflows.
        (
            Config { capacity: 2 },
            vec![
                ins(0, 1, Duration::MAX),
                Advance(Duration::from_secs(1 << 40)),
                Get(0),
                ins(0, 2, Duration::MAX),
                Len,
            ],
        ),
        // The clock stops short of "never": a Duration::MAX entry outlives a saturated
        // clock, even one inserted at the clock's last instant; a finite TTL does not.
        (
            Config { capacity: 3 },
            vec![
                ins(0, 1, Duration::MAX),
                ins(1, 2, Duration::from_secs(1 << 40)),
                Advance(Duration::MAX),
                Get(0),
                Get(1),
                ins(2, 3, Duration::from_nanos(1)),
                Advance(Duration::from_secs(1)),
                Get(2),
                Len,
            ],
        ),
        // get refreshes recency but not the TTL.
        (
            Config { capacity: 2 },
            vec![
                ins(0, 1, SECOND),
                Advance(Duration::from_millis(900)),
                Get(0),
                Advance(Duration::from_millis(100)),
                Get(0),
                Len,
            ],
        ),
        // An expired entry gives up its slot before any live one is evicted.
        (
            Config { capacity: 2 },
            vec![ins(0, 1, LONG), ins(1, 2, SECOND), Get(0), Advance(SECOND), ins(2, 3, LONG), Get(0), Get(2), Len],
        ),
        // Replacing an expired key is a fresh insert: returns None.
        (Config { capacity: 1 }, vec![ins(0, 1, SECOND), Advance(SECOND), ins(0, 2, SECOND), Get(0), Remove(0), Len]),
        // Advancing far frees every slot.
        (
            Config { capacity: 3 },
            vec![
                ins(0, 1, SECOND),
                ins(1, 2, SECOND),
                ins(2, 3, SECOND),
                Advance(LONG),
                Len,
                Get(1),
                ins(3, 4, SECOND),
                Len,
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------

/// Small shapes first (the first failure shown is small), then wider ones.
const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 3, 300), (3, 4, 300), (4, 5, 150)], seed: 0x5eed };

/// Real threads on one cache. The test clock moves while they run (any thread may
/// draw a clock step), TTLs are short enough to expire mid-history, and key hashing,
/// key comparison, value clones, clock reads and loads all yield now and then.
fn concurrent_case(make: Factory, capacity: usize, loads: bool) -> CaseResult {
    set_forced_yields(true);
    let config = Config { capacity };
    let pick = |rng: &mut SplitMix, thread: usize| {
        let key = rng.below(3) as u8;
        // Distinct values per thread and draw, so every write is identifiable.
        let value = (thread as Value + 1) * 1000 + rng.below(1000) as Value;
        let ttl = match rng.below(8) {
            0 => Duration::ZERO,
            1..=3 => SECOND,
            _ => LONG,
        };
        match rng.below(if loads { 9 } else { 7 }) {
            0 | 1 => Op::Insert { key, value, ttl },
            2 => Op::Get(key),
            3 => Op::Remove(key),
            4 => Op::Len,
            5 => Op::Advance(SECOND),
            6 => Op::Get(key),
            _ => Op::GetOrInsertWith { key, ttl, value },
        }
    };
    let result = check_histories::<TtlLruSpec, _>(
        &config,
        HISTORIES,
        pick,
        || {
            let clock = ManualClock::new();
            Ok((build(make, capacity, &clock)?, clock))
        },
        |(cache, clock), op| apply(cache.as_ref(), clock, op),
    );
    set_forced_yields(false);
    result
}

/// Races on a key that has just expired: every history starts from a cache where k0
/// expired a moment ago (k1 is live), and threads get, insert and remove k0. An attempt
/// that cleans up an expired entry in a second critical section (after finding it
/// expired in a first) may remove a fresh value another thread stored in between.
fn expiry_races(make: Factory) -> CaseResult {
    let setup =
        [Op::Insert { key: 0, value: 1, ttl: SECOND }, Op::Insert { key: 1, value: 2, ttl: LONG }, Op::Advance(SECOND)];
    race_case(make, &setup, |rng, value| match rng.below(6) {
        0 | 1 => Op::Get(0),
        2 => Op::Insert { key: 0, value, ttl: LONG },
        3 => Op::Remove(0),
        4 => Op::Len,
        _ => Op::Get(1),
    })
}

/// Races on recency at capacity: every history starts from a full cache (k0 least
/// recently used, then k1), and threads get k0 and k1 while others insert k2, which
/// evicts whichever is least recently used at that instant. An attempt that finds the
/// value in one critical section and moves it to the front in another lets an
/// eviction pick the entry that the get has already returned as used.
fn recency_races(make: Factory) -> CaseResult {
    let setup = [Op::Insert { key: 0, value: 1, ttl: LONG }, Op::Insert { key: 1, value: 2, ttl: LONG }];
    race_case(make, &setup, |rng, value| match rng.below(6) {
        0 | 1 => Op::Get(0),
        2 => Op::Get(1),
        3 => Op::Insert { key: 2, value, ttl: LONG },
        4 => Op::Get(2),
        _ => Op::Len,
    })
}

/// Many small concurrent histories at capacity 2, each from a cache that went through
/// `setup` on one thread; `pick` draws an op given a value distinct per thread and draw.
fn race_case(make: Factory, setup: &[Op], pick: impl Fn(&mut SplitMix, Value) -> Op) -> CaseResult {
    set_forced_yields(true);
    let config = Config { capacity: 2 };
    let result = check_histories_after::<TtlLruSpec, _>(
        &config,
        setup,
        RACES,
        |rng, thread| {
            let value = (thread as Value + 1) * 1000 + rng.below(1000) as Value;
            pick(rng, value)
        },
        || {
            let clock = ManualClock::new();
            Ok((build(make, config.capacity, &clock)?, clock))
        },
        |(cache, clock), op| apply(cache.as_ref(), clock, op),
    );
    set_forced_yields(false);
    result
}

/// Many small histories from a set-up state: a race needs two particular calls to meet.
const RACES: HistoryBudget = HistoryBudget { rounds: &[(2, 3, 200), (3, 3, 100)], seed: 0xe7e7 };

/// A load that takes 600ms of test time, with ttl 1s: the entry lives until 1s after
/// it landed (the contract: stored as `insert` would store it when it lands).
fn ttl_from_landing(make: Factory) -> CaseResult {
    let clock = ManualClock::new();
    let cache = build(make, 4, &clock)?;
    let steps = "cache = TtlLru::new(capacity 4), clock at t=0\n\
                 get_or_insert_with(k0, ttl 1s, || { clock.advance(600ms); 7 }), clock.advance(500ms), get(k0), \
                 clock.advance(500ms), get(k0)";
    let seen = guarded(|| {
        let loaded = cache.get_or_insert_with(Key(0), SECOND, &mut || {
            clock.advance(Duration::from_millis(600));
            7
        });
        clock.advance(Duration::from_millis(500));
        let at_1100ms = cache.get(&Key(0));
        clock.advance(Duration::from_millis(500));
        (loaded, at_1100ms, cache.get(&Key(0)))
    })
    .map_err(|p| p.into_case_error(steps))?;
    if seen != (7, Some(7), None) {
        return Err(CaseError::failed(format!(
            "{steps}\nreturned {seen:?}, expected (7, Some(7), None): the value landed at t=600ms with ttl 1s, \
             so it is live at t=1.1s and expired at t=1.6s"
        )));
    }
    Ok(())
}

/// A load that stores another key while it runs (allowed: only the same key is off
/// limits): the loaded entry lands after that one, so it is the more recently used,
/// and the next eviction takes the other key.
fn recency_from_landing(make: Factory) -> CaseResult {
    let clock = ManualClock::new();
    let cache = build(make, 2, &clock)?;
    let steps = "cache = TtlLru::new(capacity 2), clock at t=0\n\
                 get_or_insert_with(k0, ttl 3600s, || { cache.insert(k1, 1, ttl 3600s); 7 }), insert(k2, 2, ttl 3600s), \
                 get(k0), get(k1)";
    let seen = crate::watchdog::call(steps, || {
        guarded(|| {
            let loaded = cache.get_or_insert_with(Key(0), LONG, &mut || {
                cache.insert(Key(1), 1, LONG);
                7
            });
            cache.insert(Key(2), 2, LONG);
            (loaded, cache.get(&Key(0)), cache.get(&Key(1)))
        })
    })
    .map_err(|p| p.into_case_error(steps))?;
    if seen != (7, Some(7), None) {
        return Err(CaseError::failed(format!(
            "{steps}\nreturned {seen:?}, expected (7, Some(7), None): k0 landed after the load inserted k1, \
             so k1 was the least recently used when k2 arrived"
        )));
    }
    Ok(())
}

/// N callers on one missing key: exactly one load runs and all get its value.
fn loads_once(make: Factory) -> CaseResult {
    const CALLERS: usize = 8;
    let cache = build(make, 16, &ManualClock::new())?;
    for round in 0..20u8 {
        let loads = AtomicUsize::new(0);
        let barrier = Barrier::new(CALLERS);
        let results: Vec<thread::Result<Value>> = thread::scope(|s| {
            let handles: Vec<_> = (0..CALLERS as Value)
                .map(|caller| {
                    let (cache, loads, barrier) = (&cache, &loads, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let call = format!("caller {caller}: get_or_insert_with(k{round}, ..)");
                        crate::watchdog::call(call, || {
                            cache.get_or_insert_with(Key(round.into()), LONG, &mut || {
                                let _in_flight = InFlight::new(format!("caller {caller}'s load of k{round}"));
                                loads.fetch_add(1, Ordering::SeqCst);
                                // A slow load: the window in which the others arrive.
                                thread::sleep(Duration::from_millis(20));
                                caller
                            })
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut values = Vec::new();
        for result in results {
            values.push(result.map_err(|p| Panic::from_payload(p.as_ref()).into_case_error("get_or_insert_with"))?);
        }
        let loads = loads.load(Ordering::SeqCst);
        let first = values[0];
        if loads != 1 || values.iter().any(|&v| v != first) {
            return Err(CaseError::failed(format!(
                "{CALLERS} threads called get_or_insert_with(k{round}, ..) on a missing key at once (each load sleeps 20ms)\n\
                 load ran {loads} times (expected exactly 1); values returned: {values:?} (expected all equal)"
            )));
        }
    }
    Ok(())
}

/// While a load of k0 is blocked, calls on other keys must still complete.
fn other_keys_proceed(make: Factory) -> CaseResult {
    let cache = build(make, 16, &ManualClock::new())?;
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let loader = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            cache.get_or_insert_with(Key(0), LONG, &mut || {
                let _ = started_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(30));
                7
            })
        })
    };
    if started_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let outcome =
            loader.join().map_err(|p| Panic::from_payload(p.as_ref()).into_case_error("get_or_insert_with(k0)"));
        outcome?;
        return Err(CaseError::failed("get_or_insert_with(k0, ..) on a missing key returned without calling load"));
    }
    let other = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let steps = (
                cache.insert(Key(1), 1, LONG),
                cache.get(&Key(1)),
                cache.get_or_insert_with(Key(2), LONG, &mut || 2),
                cache.remove(&Key(1)),
            );
            let _ = done_tx.send(steps);
        })
    };
    let finished = done_rx.recv_timeout(Duration::from_secs(5));
    let _ = release_tx.send(());
    match finished {
        Ok((None, Some(1), 2, Some(1))) => {}
        Ok(steps) => {
            return Err(CaseError::failed(format!(
                "while k0 was loading: insert(k1, 1), get(k1), get_or_insert_with(k2, || 2), remove(k1) returned {steps:?}, expected (None, Some(1), 2, Some(1))"
            )))
        }
        Err(_) => {
            return Err(CaseError::failed(
                "while get_or_insert_with(k0, ..) was running its load, calls on k1 and k2 did not complete within 5s:\n\
                 a lock is held across the load, blocking every other key",
            ))
        }
    }
    let loaded =
        loader.join().map_err(|p| Panic::from_payload(p.as_ref()).into_case_error("get_or_insert_with(k0)"))?;
    let _ = other.join();
    if loaded != 7 {
        return Err(CaseError::failed(format!("get_or_insert_with(k0, || 7) returned {loaded}")));
    }
    Ok(())
}

/// A panicking load hurts only its caller; a waiter loads again; the cache stays usable.
fn panicking_loader(make: Factory) -> CaseResult {
    let cache = build(make, 16, &ManualClock::new())?;
    let (started_tx, started_rx) = mpsc::channel();
    let doomed = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            cache.get_or_insert_with(Key(0), LONG, &mut || {
                let _ = started_tx.send(());
                thread::sleep(Duration::from_millis(100));
                panic!("load failed (on purpose)");
            })
        })
    };
    let _ = started_rx.recv_timeout(Duration::from_secs(10));
    let (waiter_tx, waiter_rx) = mpsc::channel();
    let waiter = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let mut calls = 0;
            // Watched: a waiter stranded by the panic is reported as stuck within seconds.
            let value = crate::watchdog::call("the waiter's get_or_insert_with(k0, || 9)", || {
                cache.get_or_insert_with(Key(0), LONG, &mut || {
                    calls += 1;
                    9
                })
            });
            let _ = waiter_tx.send((value, calls));
        })
    };
    match doomed.join() {
        Ok(value) => {
            return Err(CaseError::failed(format!(
                "get_or_insert_with(k0, || panic!()) returned {value}: the load's panic must reach its caller"
            )))
        }
        // A stub's todo!() panics too, but means "not implemented", not "passed".
        Err(payload) => {
            let panic = Panic::from_payload(payload.as_ref());
            if panic.is_not_implemented() {
                return Err(panic.into_case_error("get_or_insert_with"));
            }
        }
    }
    let context = "a second caller of get_or_insert_with(k0, || 9), while the first caller's load panicked";
    let (value, calls) = match waiter_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(answer) => answer,
        // The waiter ended without answering: it panicked.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = waiter.join().err().map(|p| Panic::from_payload(p.as_ref()));
            return Err(panic.map_or_else(
                || CaseError::failed(format!("{context}: ended without an answer")),
                |p| p.into_case_error(context),
            ));
        }
        // Still blocked: never join it (that would hang the case too).
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(CaseError::failed(format!(
                "{context}: still waiting 10s after the load panicked. The in-flight marker must be cleared during unwinding too."
            )));
        }
    };
    if (value, calls) != (9, 1) {
        return Err(CaseError::failed(format!(
            "{context}: got {value} with its load called {calls} times, expected 9 with 1 call"
        )));
    }
    let after = guarded(|| (cache.get(&Key(0)), cache.insert(Key(1), 1, LONG), cache.len()))
        .map_err(|p| p.into_case_error("after a load panicked: get(k0), insert(k1, 1), len()"))?;
    if after != (Some(9), None, 2) {
        return Err(CaseError::failed(format!(
            "after a load panicked and a waiter loaded 9: get(k0), insert(k1, 1), len() returned {after:?}, expected (Some(9), None, 2)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------

pub const EXERCISE: &str = "ttl_lru";
pub const L1: Level = Level { number: 1, name: "lru" };
pub const L2: Level = Level { number: 2, name: "ttl" };
pub const L3: Level = Level { number: 3, name: "threads" };
pub const L4: Level = Level { number: 4, name: "single_flight" };

/// Every graded case of the exercise, in level order, for the implementation `make` builds.
pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hint, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hint, deadline, move || run(make))
    };
    vec![
        case(L1, "short_sequences",
            "Every sequence of up to 5 inserts/gets/removes/lens over 3 keys, capacities 1-3, no expiry. \
             The least recently *used* entry goes first: get and insert both count as a use; replacing a key evicts nothing.",
            QUICK, |make| exhaustive_case(make, &[1, 2, 3], LRU_ONLY, 5)),
        case(L1, "random_sequences",
            "Longer random sequences (up to 48 ops, 6 keys, capacities 1-5). Check that recency is updated on every hit and that len() matches the entries kept.",
            QUICK, |make| random_case(make, 1..=5, RANDOM_LRU)),
        case(L1, "huge_capacity",
            "capacity is any usize, usize::MAX included (as good as unbounded): allocate as entries arrive, never in proportion to capacity.",
            QUICK, |make| exhaustive_case(make, &[usize::MAX], LRU_ONLY, 3)),
        case(L1, "capacity_zero",
            "A cache of capacity 0 stores nothing: every get misses, len() is 0, insert returns None.",
            QUICK, |make| exhaustive_case(make, &[0], LRU_ONLY, 4)),
        case(L2, "short_sequences",
            "Every short sequence with TTLs of 1-2s and clock steps of 1s. An entry is live iff now < inserted_at + ttl; \
             get refreshes recency but never the TTL; expired entries are invisible to get and len and are dropped before any live entry is evicted.",
            QUICK, |make| exhaustive_case(make, &[1, 2], WITH_TTL, 5)),
        case(L2, "random_sequences",
            "Longer random sequences mixing TTLs and clock steps from 1ns to Duration::MAX, and huge capacities. Compare expiry with `now < inserted_at + ttl` exactly, \
             in nanoseconds (the boundary instant is expired), and allocate as entries arrive, not for the capacity.",
            QUICK, |make| random_case(make, 1..=5, RANDOM_TTL)),
        case(L2, "long_sequences",
            "Sequences of up to 400 ops on 1-3 keys: hundreds of TTL resets and expiries, so any housekeeping you do now and then \
             (sweeping expired entries, rebuilding an expiry index) runs several times; the state it leaves must still match.",
            QUICK, long_case),
        case(L2, "edges",
            "Edge cases: ttl 0 acts as remove (evicting nothing), the expiry boundary, Duration::MAX (saturate, never overflow), an expired slot reused before a live one is evicted.",
            QUICK, |make| edge_scenarios().iter().try_for_each(|(config, ops)| replay_on(make, config, ops))),
        case(L3, "linearizable",
            "Real threads call the cache at once; each history must match some sequential order of the calls. \
             Guard the whole read-modify-write of each call with one critical section (a lock around the map and the recency list together).",
            THREADED, |make| concurrent_case(make, 2, false)),
        case(L3, "linearizable_full",
            "As `linearizable`, at capacity 1 where every insert evicts: eviction, recency update and len must all happen inside the same critical section.",
            THREADED, |make| concurrent_case(make, 1, false)),
        case(L3, "recency_races",
            "Threads read entries while others insert into a full cache. A get that returns a value must also make it the most \
             recently used in the same critical section: if another thread's insert runs in between, it evicts the entry as if \
             it had not been used.",
            THREADED, recency_races),
        case(L3, "expiry_races",
            "Threads race on a key that has just expired. Decide that an entry is expired and drop it in the same critical section \
             that found it: after unlocking, another thread may already have stored a fresh value under that key.",
            THREADED, expiry_races),
        case(L4, "short_sequences",
            "get_or_insert_with, sequentially: a live key returns its value without calling load (and counts as a use); a missing or expired key calls load once and inserts its value.",
            QUICK, |make| exhaustive_case(make, &[0, 1, 2], WITH_LOADS, 5)),
        case(L4, "random_sequences",
            "Longer random sequences mixing loads with inserts, TTLs and clock steps: a load stores its value exactly as insert would (same eviction, same TTL).",
            QUICK, |make| random_case(make, 1..=5, RANDOM_LOADS)),
        case(L4, "ttl_from_landing",
            "A loaded value is stored as insert would store it when the load returns: read the clock after the load, \
             so its TTL counts from the landing, not from the call's start.",
            QUICK, ttl_from_landing),
        case(L4, "recency_from_landing",
            "A loaded value becomes the most recently used when it lands (as insert would make it then), \
             not when the call started: calls made while the load ran are older.",
            QUICK, recency_from_landing),
        case(L4, "loads_once",
            "Concurrent callers on one missing key must share one load: record an in-flight marker for the key, and make later callers wait for it instead of loading.",
            THREADED, loads_once),
        case(L4, "other_keys_proceed",
            "Never hold the cache's lock while load runs: mark the key as loading, unlock, run load, then lock again to store the value.",
            THREADED, other_keys_proceed),
        case(L4, "panicking_loader",
            "If load panics, clear the in-flight marker (a drop guard does it even during unwinding) and wake the waiters so one of them loads again; \
             a std Mutex poisoned by the panic must not break later calls.",
            THREADED, panicking_loader),
        case(L4, "linearizable",
            "Concurrent histories with loads: a caller whose load ran must have seen the key missing at the instant its value was stored, \
             so an insert or remove of a key that is loading waits for the load.",
            THREADED, |make| concurrent_case(make, 2, true)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumeration_skips_renamed_keys() {
        assert!(keys_in_first_use_order(&[Op::Get(0), Op::Len, Op::Get(1), Op::Get(0)]));
        assert!(!keys_in_first_use_order(&[Op::Get(1)]));
        assert!(!keys_in_first_use_order(&[Op::Get(0), Op::Get(2)]));
    }

    #[test]
    fn numbering_makes_values_distinct() {
        let ops = numbered(&[
            Op::Insert { key: 0, value: 0, ttl: LONG },
            Op::Len,
            Op::GetOrInsertWith { key: 0, ttl: LONG, value: 0 },
        ]);
        assert_eq!(ops[0], Op::Insert { key: 0, value: 100, ttl: LONG });
        assert_eq!(ops[2], Op::GetOrInsertWith { key: 0, ttl: LONG, value: 102 });
    }
}
