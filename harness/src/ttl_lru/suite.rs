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

/// `callers` threads call `get_or_insert_with(k{round}, ttl, ..)` at once. Each one's
/// load sleeps 20ms (the window in which the others arrive), then runs `in_load` and
/// returns its caller's number. The values returned, in caller order.
fn racing_loads(
    cache: &Arc<dyn ErasedCache>,
    round: u8,
    callers: usize,
    ttl: Duration,
    in_load: &(dyn Fn() + Sync),
) -> Result<Vec<Value>, CaseError> {
    let barrier = Barrier::new(callers);
    let results: Vec<thread::Result<Value>> = thread::scope(|s| {
        let handles: Vec<_> = (0..callers as Value)
            .map(|caller| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let call = format!("caller {caller}: get_or_insert_with(k{round}, ttl {ttl:?}, ..)");
                    crate::watchdog::call(call, || {
                        cache.get_or_insert_with(Key(round.into()), ttl, &mut || {
                            let _in_flight = InFlight::new(format!("caller {caller}'s load of k{round}"));
                            thread::sleep(Duration::from_millis(20));
                            in_load();
                            caller
                        })
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    results
        .into_iter()
        .map(|result| result.map_err(|p| Panic::from_payload(p.as_ref()).into_case_error("get_or_insert_with")))
        .collect()
}

/// N callers on one missing key: exactly one load runs and all get its value. The load
/// first sleeps (the window in which the others arrive and wait), then loads other keys
/// through the cache (allowed by the contract): each of those lands while the waiters
/// wait, so an attempt whose waiters share one wake-up signal for every key, and wait
/// for it once (`if`, not `while`), wakes them while the key is still loading.
fn loads_once(make: Factory) -> CaseResult {
    const CALLERS: usize = 8;
    const OTHER_LOADS: u32 = 3;
    let cache = build(make, 16, &ManualClock::new())?;
    for round in 0..20u8 {
        let loads = AtomicUsize::new(0);
        let load_others = || {
            loads.fetch_add(1, Ordering::SeqCst);
            for other in 0..OTHER_LOADS {
                let other = Key(1000 + u32::from(round) * OTHER_LOADS + other);
                cache.get_or_insert_with(other, LONG, &mut || 1);
            }
        };
        let values = racing_loads(&cache, round, CALLERS, LONG, &load_others)?;
        let loads = loads.load(Ordering::SeqCst);
        let first = values[0];
        if loads != 1 || values.iter().any(|&v| v != first) {
            return Err(CaseError::failed(format!(
                "{CALLERS} threads called get_or_insert_with(k{round}, ..) on a missing key at once (each load sleeps \
                 20ms, then calls get_or_insert_with on {OTHER_LOADS} other missing keys, whose loads return at once)\n\
                 load ran {loads} times (expected exactly 1); values returned: {values:?} (expected all equal)"
            )));
        }
    }
    Ok(())
}

/// N callers on one missing key with ttl 0: no loaded value is ever stored, so each
/// caller, once the load it waited for lands, starts over and loads itself; each returns
/// its own load's value. A waiter handed the loader's value (Go's singleflight) would
/// return a value the cache never held.
fn unstored_loads(make: Factory) -> CaseResult {
    const CALLERS: usize = 4;
    let cache = build(make, 16, &ManualClock::new())?;
    for round in 0..5u8 {
        let values = racing_loads(&cache, round, CALLERS, Duration::ZERO, &|| {})?;
        let own: Vec<Value> = (0..CALLERS as Value).collect();
        if values != own {
            return Err(CaseError::failed(format!(
                "{CALLERS} threads called get_or_insert_with(k{round}, ttl 0, ..) on a missing key at once (caller i's \
                 load sleeps 20ms and returns i)\nreturned {values:?}, expected {own:?}: with ttl 0 nothing is stored, \
                 so a caller can return only the value of its own load"
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
                 calls on other keys must not wait for a load",
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
                "{context}: still waiting 10s after the load panicked. A panicking load must leave the key to the next caller."
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
    let case = |level, name, hints: [&'static str; 3], deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hints, deadline, move || run(make))
    };
    vec![
        case(L1, "short_sequences", [
            "With nothing expiring, a full cache that receives a new key drops the least recently used entry: insert and a \
             get hit both count as a use, and replacing a key's value evicts nothing. Every sequence of up to 5 calls over \
             3 keys and capacities 1-3 is tried, shortest first.",
            "Recency is an order over the stored keys that every use rewrites: the victim is the key left untouched the \
             longest, not the one inserted first (that would be FIFO). Replacing a value is a use of a key already \
             counted, so the number of entries does not change.",
            "A HashMap from key to entry plus an order of keys by last use: a doubly linked list (indices into a Vec of \
             nodes) or an ordered map keyed by a use counter lets you move a key to the most recent end and take the \
             least recent one cheaply.",
        ], QUICK, |make| exhaustive_case(make, &[1, 2, 3], LRU_ONLY, 5)),
        case(L1, "random_sequences", [
            "Longer random sequences (up to 48 calls, 6 keys, capacities 1-5): every hit makes its key the most recently \
             used, and len() is the number of entries held.",
            "Invariant: the entries held and the recency order name the same keys, each exactly once. A call that breaks \
             it often answers correctly itself; the damage shows several calls later.",
            "Update the map and the recency order together in every path (insert, replace, get hit, remove, eviction) and \
             take len() from the map; a debug assertion that both have the same size finds the call that broke them.",
        ], QUICK, |make| random_case(make, 1..=5, RANDOM_LRU)),
        case(L1, "huge_capacity", [
            "Any capacity is valid, usize::MAX included: such a cache behaves as an unbounded one.",
            "Capacity is a limit, not a size: memory should follow what is stored, and arithmetic on the capacity \
             (capacity + 1, a multiple of it) can overflow.",
            "Create the map and the recency order empty (no with_capacity(capacity)), let them grow as entries arrive, \
             and only ever compare the entry count with capacity.",
        ], QUICK, |make| exhaustive_case(make, &[usize::MAX], LRU_ONLY, 3)),
        case(L1, "capacity_zero", [
            "A cache of capacity 0 stores nothing: insert returns None, every get misses, len() is 0.",
            "The boundary of eviction: with no slot at all, the new entry itself is over the limit, so code that makes \
             room first and stores after still keeps one entry.",
            "Treat capacity 0 up front wherever a value is stored (insert, and a loaded value later): store nothing.",
        ], QUICK, |make| exhaustive_case(make, &[0], LRU_ONLY, 4)),
        case(L2, "short_sequences", [
            "An entry inserted at t with ttl d is live while now < t + d and absent from then on: get misses it and len() \
             does not count it. A get hit refreshes recency, never the TTL. Every short sequence with TTLs of 1-2s and \
             clock steps of 1s is tried.",
            "Expiry depends on the clock, not on any call: an entry turns absent between two calls with nothing touching \
             it, so every answer is for the current instant. Recency (last use) and lifetime (insert + ttl) are two \
             independent orders.",
            "Keep each entry's expiry instant (inserted_at + ttl, saturating) beside its value; on every call read the \
             clock once and treat entries whose expiry is <= now as absent, dropping them when found.",
        ], QUICK, |make| exhaustive_case(make, &[1, 2], WITH_TTL, 5)),
        case(L2, "random_sequences", [
            "Longer random sequences with TTLs and clock steps from 1ns to Duration::MAX, and now and then a huge \
             capacity: expiry is exact to the nanosecond, and at exactly inserted_at + ttl the entry is already gone.",
            "Two ways to be off at the boundary: comparing with <= where < is meant, and losing precision by rounding to \
             milliseconds or seconds. Both only show with odd durations. Adding Duration::MAX to any instant overflows \
             unless the sum saturates.",
            "Compare Timestamps (nanoseconds) as `now < expires_at`, compute expires_at with Timestamp::advanced (it \
             saturates), and never convert a Duration to a coarser unit.",
        ], QUICK, |make| random_case(make, 1..=5, RANDOM_TTL)),
        case(L2, "long_sequences", [
            "Sequences of up to 400 calls on 1-3 keys, with hundreds of TTL resets and expiries: the answers stay right \
             however long the history runs.",
            "Housekeeping that runs now and then (a sweep of expired entries, the rebuild of an index) works on a second \
             description of the state; after it runs, that description must still agree with the entries, keys \
             inserted again with a new TTL included.",
            "If you keep an expiry index (a min-heap or BTreeMap of (expires_at, key)), check each item against the \
             entry's current expiry before acting on it: a key inserted again leaves a stale item behind.",
        ], QUICK, long_case),
        case(L2, "edges", [
            "Edge cases: insert with ttl 0 acts as remove and evicts nothing; an entry is gone at exactly inserted_at + \
             ttl; a ttl of Duration::MAX never expires and never overflows; an expired entry's slot is reused before any \
             live entry is evicted.",
            "Eviction chooses among live entries only: an expired entry is already absent, cleaned up or not, so its slot \
             is free. ttl 0 describes an entry that is expired the instant it is stored.",
            "Before evicting for a new key, drop what has expired (the earliest expiry from an index, or a scan), and \
             evict the least recently used only if the cache is still full; in insert, handle ttl 0 as a remove that \
             returns the old live value.",
        ], QUICK, |make| edge_scenarios().iter().try_for_each(|(config, ops)| replay_on(make, config, ops))),
        case(L3, "linearizable", [
            "Real threads call the cache at once while the test clock moves; every history must be explained by some \
             order of the calls in which each takes effect at one instant between its start and its return.",
            "Each call reads and writes several pieces of state (the entry, the recency order, the count, the time): if \
             another call can run between two of those steps, the result belongs to no single instant.",
            "One Mutex around the whole state (map, recency order, expiry index), taken once per call, with the clock read \
             while holding it; no call releases it and takes it again midway.",
        ], THREADED, |make| concurrent_case(make, 2, false)),
        case(L3, "linearizable_full", [
            "As `linearizable`, at capacity 1: every insert of a new key evicts the one held while other threads read \
             and count.",
            "Storing a new entry, evicting the old one and updating the count are one change of state: a thread that \
             sees the cache between them sees two entries at capacity 1, or none.",
            "Evict inside the critical section of the insert that causes it, and answer len() from the state under the \
             same lock rather than from a counter updated outside it.",
        ], THREADED, |make| concurrent_case(make, 1, false)),
        case(L3, "recency_races", [
            "Threads read entries of a full cache while others insert a new key: a get that returned a value has used \
             that key, so an insert ordered after it evicts the other one.",
            "A read that returns a value and the recency update it causes are one event: a writer running between the two \
             evicts the entry as if it had not been read, yet the read already returned it.",
            "get is a writer: take the lock exclusively, find the entry and move it to the most recent end under the same \
             guard. A read lock, or a lookup in one critical section and the move in another, lets an eviction slip in.",
        ], THREADED, recency_races),
        case(L3, "expiry_races", [
            "Threads race on a key that has just expired: get, insert, remove and len each act on the state at one \
             instant, and a value one thread stores is never lost to another thread's cleanup.",
            "Check-then-act: \"this entry is expired\" holds only while nobody else can change the key; acted on later, \
             it may destroy a value stored in between.",
            "Decide that an entry is expired and drop it in the critical section that found it; if cleanup is deferred, \
             check again under the lock that it is still the same entry (same expiry, or a generation number) before \
             removing it.",
        ], THREADED, expiry_races),
        case(L4, "short_sequences", [
            "get_or_insert_with on one thread: a live key is a hit (its value, load not called, a use); a missing or \
             expired key calls load once and stores its value as insert would.",
            "A hit is exactly a get hit, and a miss exactly a load followed by an insert: the same rules for eviction, \
             TTL and recency, no new ones.",
            "Build it from your get and insert paths: look up; on a hit return the value; on a miss run load (with no \
             lock held), then store the value through the insert path.",
        ], QUICK, |make| exhaustive_case(make, &[0, 1, 2], WITH_LOADS, 5)),
        case(L4, "random_sequences", [
            "Longer random sequences mixing loads with inserts, TTLs and clock steps: a loaded value is stored exactly as \
             insert would store it (same eviction, same TTL).",
            "Two paths that store values (insert, and the end of a load) must follow one rule; when each decides eviction \
             and expiry on its own, they drift apart.",
            "Store a loaded value through the same internal function insert uses, under the lock, so that one place \
             evicts and sets the expiry.",
        ], QUICK, |make| random_case(make, 1..=5, RANDOM_LOADS)),
        case(L4, "ttl_from_landing", [
            "A loaded value is stored as insert would store it when load returns: its TTL counts from that instant, not \
             from the call's start.",
            "A load takes time and the clock moves meanwhile: an instant read before the load is stale when the value \
             lands.",
            "Read the clock after load returns, in the critical section that stores the value, and compute the expiry \
             from that reading.",
        ], QUICK, ttl_from_landing),
        case(L4, "recency_from_landing", [
            "A loaded value becomes the most recently used when it is stored, as insert would make it then: calls made \
             while the load ran (by the load itself too, on other keys) are older.",
            "Recency is the order of stores and uses, and a loaded value is stored when it lands; a place reserved at the \
             call's start puts it behind uses that came later.",
            "Keep the loading key out of the recency order while load runs (its in-flight marker lives elsewhere); add the \
             value at the most recent end only after load returns.",
        ], QUICK, recency_from_landing),
        case(L4, "loads_once", [
            "Concurrent callers on one missing key run one load between them; the others wait for it and return the \
             value it loaded, also when loads of other keys land while they wait.",
            "Two callers both finding the key missing is a check-then-act race: the later one must learn, in the same \
             critical section in which it finds the key missing, that a load is already under way. A wake-up says \
             only that something changed: it may be another key's load landing, or spurious.",
            "An in-flight marker per key (a map from key to a shared slot with a Condvar): the first caller inserts it and \
             loads; later callers find it and wait on it instead of loading, in a while loop that waits again as long \
             as this key's marker is still there.",
        ], THREADED, loads_once),
        case(L4, "unstored_loads", [
            "Concurrent callers on a missing key with ttl 0: a loaded value is not stored, so each waiter, once the load \
             it waited for lands, loads again itself, and every caller returns the value of its own load.",
            "Go's singleflight hands the waiters the loader's result; this contract does not. A waiter starts over as a \
             new call and returns only a value the cache held during its call, and with ttl 0 (or capacity 0) the \
             cache never holds the loaded value.",
            "After waiting, look the key up again under the lock: on a hit return that value; on a miss load it yourself \
             (or wait on the flight another waiter started). Never return the value a flight carries.",
        ], THREADED, unstored_loads),
        case(L4, "other_keys_proceed", [
            "While one key's load runs, calls on other keys (insert, get, remove, get_or_insert_with) complete without \
             waiting for it.",
            "A load may take arbitrarily long: a critical section around it makes every other call as slow as the \
             slowest load, and a load that calls the cache would wait on itself.",
            "Never hold the cache's lock while load runs: mark the key as loading, unlock, run load, then lock again to \
             store the value and clear the marker.",
        ], THREADED, other_keys_proceed),
        case(L4, "panicking_loader", [
            "If load panics, only its caller sees the panic: a caller waiting on the same key loads again itself, and the \
             cache keeps answering every later call.",
            "A panic unwinds past the code that was meant to finish the load: whatever announced \"a load is under way\" \
             must be withdrawn on that path too, and the waiters told.",
            "Clear the in-flight marker in a drop guard (it runs during unwinding too) and notify the waiters, who start \
             over; take std locks with lock().unwrap_or_else(PoisonError::into_inner) so a poisoned Mutex does not break \
             later calls.",
        ], THREADED, panicking_loader),
        case(L4, "linearizable", [
            "Concurrent histories with loads, inserts, removes and clock steps: a caller whose load ran saw the key \
             missing at the instant its value was stored, and an insert or remove of a key being loaded takes effect \
             after the load lands.",
            "The loaded value is stored at one instant at which the key must be missing: a write on the same key during \
             the load would make that impossible, so such writes are ordered after it.",
            "insert and remove on a key with an in-flight marker wait until the marker clears (on the waiters' Condvar), \
             then proceed; a waiter woken after the load starts over as a new call.",
        ], THREADED, |make| concurrent_case(make, 2, true)),
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
