//! Exercise: a thread-safe cache with per-entry TTL, LRU eviction and single-flight
//! loading. Holds the contract ([`TtlLruCache`]), the model it is graded against and
//! the graded suite ([`suite`]). Semantics: `shared/spec/ttl_lru.md`, restated on the
//! trait below so that a learner needs nothing else.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use crate::clock::{ManualClock, SharedClock, Timestamp};
use crate::linearizability::{
    check_histories, check_histories_after, contention_point, set_forced_yields, HistoryBudget, SplitMix,
};
pub use crate::linearizability::{Key, Payload};
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{
    guarded, Case, CaseError, CaseResult, Level, Panic, QUICK_DEADLINE as QUICK, THREADED_DEADLINE as THREADED,
};
use crate::watchdog::InFlight;

/// The contract. Implement it for your `TtlLru<K, V>` in `exercises/src/ttl_lru.rs`.
///
/// * An entry inserted at time `t` with `ttl` d is **live** iff `now < t + d`. Only
///   live entries are ever returned or counted; an expired entry behaves as absent.
///   `t + d` saturates at [`Timestamp::MAX`], which no clock ever reads (clocks stop at
///   [`Timestamp::LATEST`]): a `ttl` reaching past the clock's range, such as
///   `Duration::MAX`, never expires, and computing it must never overflow.
/// * `capacity` bounds the live entries. Inserting a new key when `capacity` live
///   entries (other than that key) exist evicts the least recently used live entry.
///   A live entry is never evicted while an expired one still holds a slot.
/// * Recency: `insert`, a hit of `get` and a hit of `get_or_insert_with` make the key
///   the most recently used. Nothing else does (a miss, `len`, `remove`).
/// * `capacity == 0` stores nothing. `ttl == 0` makes `insert` act as `remove`.
/// * Every method takes `&self` and the cache is `Send + Sync`: any history of
///   concurrent calls must be explainable by some sequential order of those calls in
///   which each call takes effect at one instant between its start and its return
///   (linearizability).
pub trait TtlLruCache<K, V>: Send + Sync + Sized
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// An empty cache holding at most `capacity` live entries, reading time from `clock`.
    /// Any `capacity` is allowed, `usize::MAX` included: allocate as entries arrive,
    /// not in proportion to `capacity`.
    fn new(capacity: usize, clock: SharedClock) -> Self;

    /// Stores `value` under `key` until `now + ttl`. On a live key: replaces the value,
    /// resets the TTL, makes it most recent, evicts nothing, returns the old value.
    /// Otherwise returns `None` (evicting the LRU live entry if the cache is full).
    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V>;

    /// The live value of `key`, making it the most recently used. Never extends the
    /// TTL. An expired key returns `None` and its recency does not change.
    fn get(&self, key: &K) -> Option<V>;

    /// Removes `key`; returns its value if it was live.
    fn remove(&self, key: &K) -> Option<V>;

    /// The number of live entries.
    fn len(&self) -> usize;

    /// `true` iff `len() == 0`.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live value of `key` (a hit, as `get`), or else calls `load` once, inserts its
    /// value with `ttl` (as `insert`) and returns it.
    ///
    /// The loaded value is stored as `insert` would store it at the moment it lands: its
    /// TTL counts from then, not from the call's start (a load may take a while, and
    /// the clock moves meanwhile).
    ///
    /// Single flight: concurrent callers on the same missing key run **one** `load`; the
    /// others wait for it, and once it lands each starts over as a new call would: a hit
    /// on the loaded value if it was stored and is still live (the usual case), or else
    /// (ttl 0, capacity 0, already expired) a `load` of its own. A waiter never returns
    /// a value the cache did not hold at some instant of its call. Calls on other keys
    /// proceed while `load` runs (no lock held across it); calls that change the same
    /// key (`insert`, `remove`) take effect after the load completes. If `load` panics,
    /// only its caller sees the panic and a caller still waiting loads again. `load` may
    /// call into the cache for other keys, never for its own.
    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V;
}

/// The value type of the graded suite.
pub type Value = u32;

/// The cache under test, behind a trait object so the suite is compiled once, not
/// once per implementation graded.
#[allow(clippy::len_without_is_empty)] // mirrors the contract's calls, nothing more
pub trait ErasedCache: Send + Sync {
    fn insert(&self, key: Key, value: Value, ttl: Duration) -> Option<Value>;
    fn get(&self, key: &Key) -> Option<Value>;
    fn remove(&self, key: &Key) -> Option<Value>;
    fn len(&self) -> usize;
    fn get_or_insert_with(&self, key: Key, ttl: Duration, load: &mut dyn FnMut() -> Value) -> Value;
}

/// Attempts store [`Payload`]s (whose clone is a forced-yield point); the suite speaks
/// in plain numbers.
impl<C: TtlLruCache<Key, Payload>> ErasedCache for C {
    fn insert(&self, key: Key, value: Value, ttl: Duration) -> Option<Value> {
        TtlLruCache::insert(self, key, Payload(value), ttl).map(|v| v.0)
    }
    fn get(&self, key: &Key) -> Option<Value> {
        TtlLruCache::get(self, key).map(|v| v.0)
    }
    fn remove(&self, key: &Key) -> Option<Value> {
        TtlLruCache::remove(self, key).map(|v| v.0)
    }
    fn len(&self) -> usize {
        TtlLruCache::len(self)
    }
    fn get_or_insert_with(&self, key: Key, ttl: Duration, load: &mut dyn FnMut() -> Value) -> Value {
        TtlLruCache::get_or_insert_with(self, key, ttl, || Payload(load())).0
    }
}

/// Builds the cache under test.
pub type Factory = fn(usize, SharedClock) -> Arc<dyn ErasedCache>;

/// The factory for implementation `C`.
pub fn factory<C: TtlLruCache<Key, Payload> + 'static>() -> Factory {
    |capacity, clock| Arc::new(C::new(capacity, clock))
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// How a graded cache is built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub capacity: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache = TtlLru::new(capacity {}), clock at t=0", self.capacity)
    }
}

/// One call, or one step of the test's clock.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        key: u8,
        value: Value,
        ttl: Duration,
    },
    Get(u8),
    Remove(u8),
    Len,
    /// The test moves its `ManualClock` forward.
    Advance(Duration),
    /// `load` returns `value` (and records that it was called).
    GetOrInsertWith {
        key: u8,
        ttl: Duration,
        value: Value,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Insert { key, value, ttl } => write!(f, "insert(k{key}, {value}, ttl {})", ShowTtl(*ttl)),
            Op::Get(key) => write!(f, "get(k{key})"),
            Op::Remove(key) => write!(f, "remove(k{key})"),
            Op::Len => write!(f, "len()"),
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
            Op::GetOrInsertWith { key, ttl, value } => {
                write!(f, "get_or_insert_with(k{key}, ttl {}, || {value})", ShowTtl(*ttl))
            }
        }
    }
}

/// A TTL as a counterexample shows it (`MAX` for `Duration::MAX`); written in place,
/// since ops are rendered before every replay.
struct ShowTtl(Duration);

impl fmt::Display for ShowTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Duration::MAX {
            f.write_str("MAX")
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// What a call returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Value(Option<Value>),
    Len(usize),
    Loaded { value: Value, called_load: bool },
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Value(v) => write!(f, "{v:?}"),
            Output::Len(n) => write!(f, "{n}"),
            Output::Loaded { value, called_load: true } => write!(f, "{value} (load called)"),
            Output::Loaded { value, called_load: false } => write!(f, "{value} (load not called)"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

/// The model: live entries only, least recently used first.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Model {
    capacity: usize,
    now: Timestamp,
    /// (key, value, expires at), LRU first.
    entries: Vec<(u8, Value, Timestamp)>,
}

impl Model {
    fn take(&mut self, key: u8) -> Option<(u8, Value, Timestamp)> {
        let at = self.entries.iter().position(|e| e.0 == key)?;
        Some(self.entries.remove(at))
    }

    fn insert(&mut self, key: u8, value: Value, ttl: Duration) -> Option<Value> {
        let old = self.take(key).map(|e| e.1);
        let expires = self.now + ttl;
        if expires > self.now && self.capacity > 0 {
            if old.is_none() && self.entries.len() == self.capacity {
                self.entries.remove(0);
            }
            self.entries.push((key, value, expires));
        }
        old
    }
}

/// The TTL+LRU specification.
struct TtlLruSpec;

impl Spec for TtlLruSpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &Config) -> Model {
        Model { capacity: config.capacity, now: Timestamp::ZERO, entries: Vec::new() }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        Some(match (op, expected, actual) {
            (Op::Len, ..) => {
                "len() counts live entries only: an expired entry is not counted, even before anything sweeps it, \
                 and a replaced key counts once."
            }
            (Op::Get(_) | Op::Remove(_), Output::Value(None), Output::Value(Some(_))) => {
                "This key must be gone here: it expired (live iff now < inserted_at + ttl; the boundary instant is \
                 expired, and get never extends a TTL), was evicted as the least recently used, was removed, or was \
                 inserted with ttl 0 (which acts as remove)."
            }
            (Op::Get(_) | Op::Remove(_), Output::Value(Some(_)), Output::Value(None)) => {
                "A live entry went missing: a key is evicted only when a new key arrives while `capacity` live entries \
                 exist, and then the least recently used one goes (insert and get hits are uses); expired entries give \
                 up their slots first, and replacing a key evicts nothing."
            }
            (Op::Get(_) | Op::Remove(_), ..) => {
                "The value is not the one last stored under this key: insert replaces the value (and resets the TTL)."
            }
            (Op::Insert { .. }, ..) => {
                "insert returns the previous value only if it was still live (None after expiry, eviction or removal)."
            }
            (
                Op::GetOrInsertWith { .. },
                Output::Loaded { called_load: e, .. },
                Output::Loaded { called_load: a, .. },
            ) if e != a => {
                "A live key is a hit (load is not called, and the hit counts as a use); a missing or expired key \
                 calls load exactly once and stores its value as insert would."
            }
            (Op::GetOrInsertWith { .. }, ..) => {
                "get_or_insert_with returns the live value on a hit, else the value its load returned."
            }
            (Op::Advance(_), ..) => return None,
        })
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        // Expired entries are unobservable: dropping them keeps the state canonical.
        let now = model.now;
        model.entries.retain(|e| e.2 > now);
        match *op {
            Op::Insert { key, value, ttl } => Output::Value(model.insert(key, value, ttl)),
            Op::Get(key) => Output::Value(model.take(key).map(|e| {
                model.entries.push(e);
                e.1
            })),
            Op::Remove(key) => Output::Value(model.take(key).map(|e| e.1)),
            Op::Len => Output::Len(model.entries.len()),
            Op::Advance(d) => {
                model.now = model.now.advanced(d);
                Output::Nothing
            }
            Op::GetOrInsertWith { key, ttl, value } => match model.take(key) {
                Some(hit) => {
                    model.entries.push(hit);
                    Output::Loaded { value: hit.1, called_load: false }
                }
                None => {
                    model.insert(key, value, ttl);
                    Output::Loaded { value, called_load: true }
                }
            },
        }
    }
}

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
const LONG: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

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

    fn run(ops: &[Op], capacity: usize) -> Vec<Output> {
        let mut model = TtlLruSpec::model(&Config { capacity });
        ops.iter().map(|op| TtlLruSpec::step(&mut model, op)).collect()
    }

    #[test]
    fn model_evicts_least_recently_used_live_entry() {
        let ins = |key| Op::Insert { key, value: key as Value, ttl: LONG };
        let out = run(&[ins(0), ins(1), Op::Get(0), ins(2), Op::Get(1), Op::Get(0), Op::Len], 2);
        assert_eq!(out[4], Output::Value(None), "k1 was least recently used");
        assert_eq!(out[5], Output::Value(Some(0)));
        assert_eq!(out[6], Output::Len(2));
    }

    #[test]
    fn model_expiry_is_exclusive_and_ttl_zero_removes() {
        let out = run(
            &[
                Op::Insert { key: 0, value: 1, ttl: SECOND },
                Op::Insert { key: 1, value: 2, ttl: Duration::ZERO },
                Op::Len,
                Op::Advance(SECOND),
                Op::Get(0),
            ],
            2,
        );
        assert_eq!(
            out,
            vec![Output::Value(None), Output::Value(None), Output::Len(1), Output::Nothing, Output::Value(None)]
        );
    }

    #[test]
    fn model_load_hits_do_not_call_load() {
        let load = |value| Op::GetOrInsertWith { key: 0, ttl: LONG, value };
        let out = run(&[load(1), load(2)], 1);
        assert_eq!(out[0], Output::Loaded { value: 1, called_load: true });
        assert_eq!(out[1], Output::Loaded { value: 1, called_load: false });
        let out = run(&[load(1), load(2)], 0);
        assert_eq!(out[1], Output::Loaded { value: 2, called_load: true }, "capacity 0 loads every time");
    }

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
