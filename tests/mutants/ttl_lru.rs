//! Buggy TTL+LRU caches that the suite must reject.
//!
//! One deliberately plain implementation (a `Vec` in recency order behind a std
//! `Mutex`) with every bug a named switch, so each bug is one visible deviation from
//! code that is otherwise correct. `Flawed<_, _, NONE>` must pass the whole suite;
//! `Flawed<_, _, B>` must be rejected by the case its entry in `MUTANTS` names.
//! The `MISBEHAVES_*` switches are not bugs of the contract but of the process
//! (hang, crash, exit...): the runner must report each for its case and go on.

use std::hash::Hash;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use harness::clock::{SharedClock, Timestamp};
use harness::ttl_lru::TtlLruCache;

pub const NONE: u8 = 0;
pub const GET_SKIPS_RECENCY: u8 = 1;
pub const EVICTS_MOST_RECENT: u8 = 2;
pub const REPLACE_EVICTS: u8 = 3;
pub const STORES_AT_CAPACITY_ZERO: u8 = 4;
pub const GET_REFRESHES_TTL: u8 = 5;
pub const EXPIRY_INCLUSIVE: u8 = 6;
pub const EVICTS_LIVE_BEFORE_EXPIRED: u8 = 7;
pub const LEN_COUNTS_EXPIRED: u8 = 8;
pub const TTL_ZERO_STORES: u8 = 9;
pub const TTL_OVERFLOWS: u8 = 10;
pub const RACY_INSERT: u8 = 11;
pub const LOAD_PER_CALLER: u8 = 12;
pub const LOCK_HELD_DURING_LOAD: u8 = 13;
pub const WAITERS_STRANDED_BY_PANIC: u8 = 14;
pub const LOAD_HIT_SKIPS_RECENCY: u8 = 15;
pub const WRITES_IGNORE_LOADING: u8 = 16;
/// Reads the clock once, before the load, and counts the loaded entry's TTL from there.
pub const LOAD_TTL_FROM_START: u8 = 17;
/// A read-lock-style get: finds the value in one critical section, moves it to the
/// front in a second one (if still there); an eviction can slip in between.
pub const GET_RECENCY_SPLIT: u8 = 18;
/// Clears the in-flight marker when a load lands but never wakes the waiters.
pub const LOST_WAKEUP: u8 = 19;
/// Caps every TTL at 100 years instead of treating a huge one as "never".
pub const TTL_CAPPED: u8 = 20;
/// Keeps time in whole milliseconds (truncating), as many caches do.
pub const MILLISECOND_TIME: u8 = 21;
/// Reserves room for `capacity` entries up front.
pub const PREALLOCATES: u8 = 22;
/// Every 64th insert rebuilds the entries sorted by key (as from a HashMap): sweeping
/// works, but the recency order is lost.
pub const SWEEP_LOSES_ORDER: u8 = 23;
/// Lazy expiry done as a read-lock candidate does it: get finds the entry expired,
/// re-locks to remove it, and removes whatever holds the key by then (a fresh insert
/// from another thread included). Only shows when the clock moves while threads run.
pub const EXPIRED_REMOVAL_UNCHECKED: u8 = 24;

pub const MISBEHAVES_TODO: u8 = 100;
pub const MISBEHAVES_INFINITE_LOOP: u8 = 101;
pub const MISBEHAVES_DEADLOCK: u8 = 102;
pub const MISBEHAVES_OOM: u8 = 103;
pub const MISBEHAVES_EXIT: u8 = 104;
pub const MISBEHAVES_ABORT: u8 = 105;
pub const MISBEHAVES_STACK_OVERFLOW: u8 = 106;
pub const MISBEHAVES_PANIC: u8 = 107;

struct Entry<K, V> {
    key: K,
    value: V,
    expires: Timestamp,
    ttl: Duration,
}

struct State<K, V> {
    /// Least recently used first.
    entries: Vec<Entry<K, V>>,
    loading: Vec<K>,
    inserts: usize,
}

pub struct Flawed<K, V, const BUG: u8> {
    capacity: usize,
    clock: SharedClock,
    state: Mutex<State<K, V>>,
    load_landed: Condvar,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Flawed<K, V, BUG> {
    fn lock(&self) -> MutexGuard<'_, State<K, V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks once `key` is not loading (changes to a loading key wait for the load).
    fn lock_for_change(&self, key: &K) -> MutexGuard<'_, State<K, V>> {
        let state = self.lock();
        if BUG == WRITES_IGNORE_LOADING {
            return state;
        }
        self.load_landed.wait_while(state, |s| s.loading.contains(key)).unwrap_or_else(PoisonError::into_inner)
    }

    fn is_live(&self, entry: &Entry<K, V>, now: Timestamp) -> bool {
        if BUG == MILLISECOND_TIME {
            return entry.expires.as_nanos() / 1_000_000 > now.as_nanos() / 1_000_000;
        }
        if BUG == EXPIRY_INCLUSIVE {
            entry.expires >= now
        } else {
            entry.expires > now
        }
    }

    fn expiry(&self, now: Timestamp, ttl: Duration) -> Timestamp {
        if BUG == TTL_CAPPED {
            return now + ttl.min(Duration::from_secs(100 * 365 * 24 * 3600));
        }
        if BUG == TTL_OVERFLOWS {
            Timestamp::from_nanos(now.as_nanos() + ttl.as_nanos() as u64)
        } else {
            now + ttl
        }
    }

    fn live_position(&self, state: &State<K, V>, key: &K, now: Timestamp) -> Option<usize> {
        state.entries.iter().position(|e| &e.key == key && self.is_live(e, now))
    }

    fn take(&self, state: &mut State<K, V>, key: &K, now: Timestamp) -> Option<V> {
        let at = state.entries.iter().position(|e| &e.key == key)?;
        let entry = state.entries.remove(at);
        self.is_live(&entry, now).then_some(entry.value)
    }

    /// Stores a new entry (the key is already out of `entries`), evicting if full.
    fn store(&self, state: &mut State<K, V>, key: K, value: V, ttl: Duration, now: Timestamp, replaced: bool) {
        let capacity = if BUG == STORES_AT_CAPACITY_ZERO { self.capacity.max(1) } else { self.capacity };
        if (ttl.is_zero() && BUG != TTL_ZERO_STORES) || capacity == 0 {
            return;
        }
        if BUG != EVICTS_LIVE_BEFORE_EXPIRED {
            state.entries.retain(|e| self.is_live(e, now));
        }
        let occupied = state.entries.len() + usize::from(replaced && BUG == REPLACE_EVICTS);
        if (!replaced || BUG == REPLACE_EVICTS) && occupied >= capacity && !state.entries.is_empty() {
            let victim = if BUG == EVICTS_MOST_RECENT { state.entries.len() - 1 } else { 0 };
            state.entries.remove(victim);
        }
        let expires = self.expiry(now, ttl);
        state.entries.push(Entry { key, value, expires, ttl });
        state.inserts += 1;
        if BUG == SWEEP_LOSES_ORDER && state.inserts % 64 == 0 {
            state.entries.retain(|e| e.expires > now);
            // A fixed-seed hasher: the "HashMap order" is the same every run.
            let fixed = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            let mut by_key: Vec<(u64, Entry<K, V>)> =
                state.entries.drain(..).map(|e| (std::hash::BuildHasher::hash_one(&fixed, &e.key), e)).collect();
            by_key.sort_by_key(|(hash, _)| *hash);
            state.entries.extend(by_key.into_iter().map(|(_, e)| e));
        }
    }

    fn misbehave(&self) {
        match BUG {
            MISBEHAVES_TODO => todo!(),
            MISBEHAVES_INFINITE_LOOP => loop {
                std::hint::spin_loop();
            },
            MISBEHAVES_DEADLOCK => {
                let _held = self.lock();
                let _again = self.lock();
            }
            MISBEHAVES_OOM => {
                // Reserved, never touched: hits the limit at once, whatever the load.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1 << 24));
                }
            }
            MISBEHAVES_EXIT => std::process::exit(3),
            MISBEHAVES_ABORT => std::process::abort(),
            MISBEHAVES_STACK_OVERFLOW => {
                #[allow(unconditional_recursion)]
                fn dive(depth: u64) -> u64 {
                    let pad = [depth; 64];
                    std::hint::black_box(&pad);
                    dive(depth + 1) + pad[0]
                }
                std::hint::black_box(dive(0));
            }
            MISBEHAVES_PANIC => {
                let empty: Vec<u8> = Vec::new();
                let _ = std::hint::black_box(&empty)[3];
            }
            _ => {}
        }
    }
}

/// Clears a load's in-flight marker when dropped, panics included.
struct Landing<'a, K: Hash + Eq + Clone, V: Clone, const BUG: u8> {
    cache: &'a Flawed<K, V, BUG>,
    key: K,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Drop for Landing<'_, K, V, BUG> {
    fn drop(&mut self) {
        if BUG == WAITERS_STRANDED_BY_PANIC && std::thread::panicking() {
            return;
        }
        self.cache.lock().loading.retain(|k| k != &self.key);
        if BUG != LOST_WAKEUP {
            self.cache.load_landed.notify_all();
        }
    }
}

impl<K, V, const BUG: u8> TtlLruCache<K, V> for Flawed<K, V, BUG>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let entries = if BUG == PREALLOCATES { Vec::with_capacity(capacity) } else { Vec::new() };
        let state = State { entries, loading: Vec::new(), inserts: 0 };
        Flawed { capacity, clock, state: Mutex::new(state), load_landed: Condvar::new() }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        self.misbehave();
        let mut state = self.lock_for_change(&key);
        let now = self.clock.now();
        let old = self.take(&mut state, &key, now);
        if BUG == RACY_INSERT {
            // The bug: reading the old entry and storing the new one are two critical
            // sections; another insert of the key can slip in between.
            drop(state);
            std::hint::black_box(key.clone() == key);
            state = self.lock();
        }
        self.store(&mut state, key, value, ttl, now, old.is_some());
        old
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut state = self.lock();
        let now = self.clock.now();
        if BUG == EXPIRED_REMOVAL_UNCHECKED && state.entries.iter().any(|e| &e.key == key && !self.is_live(e, now)) {
            drop(state);
            let mut state = self.lock();
            state.entries.retain(|e| &e.key != key);
            return None;
        }
        let at = self.live_position(&state, key, now)?;
        if BUG == GET_RECENCY_SPLIT {
            let value = state.entries[at].value.clone();
            drop(state);
            let mut state = self.lock();
            if let Some(at) = state.entries.iter().position(|e| &e.key == key) {
                let entry = state.entries.remove(at);
                state.entries.push(entry);
            }
            return Some(value);
        }
        if BUG == GET_REFRESHES_TTL {
            let entry = &mut state.entries[at];
            entry.expires = now + entry.ttl;
        }
        if BUG != GET_SKIPS_RECENCY {
            let entry = state.entries.remove(at);
            state.entries.push(entry);
            return state.entries.last().map(|e| e.value.clone());
        }
        Some(state.entries[at].value.clone())
    }

    fn remove(&self, key: &K) -> Option<V> {
        let mut state = self.lock_for_change(key);
        let now = self.clock.now();
        self.take(&mut state, key, now)
    }

    fn len(&self) -> usize {
        let state = self.lock();
        let now = self.clock.now();
        if BUG == LEN_COUNTS_EXPIRED {
            return state.entries.len();
        }
        state.entries.iter().filter(|e| self.is_live(e, now)).count()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        let mut state = if BUG == LOAD_PER_CALLER { self.lock() } else { self.lock_for_change(&key) };
        let now = self.clock.now();
        if let Some(at) = self.live_position(&state, &key, now) {
            if BUG != LOAD_HIT_SKIPS_RECENCY {
                let entry = state.entries.remove(at);
                state.entries.push(entry);
                return state.entries.last().map(|e| e.value.clone()).expect("just pushed");
            }
            return state.entries[at].value.clone();
        }
        if BUG == LOCK_HELD_DURING_LOAD {
            let value = load();
            self.take(&mut state, &key, now);
            self.store(&mut state, key, value.clone(), ttl, self.clock.now(), false);
            return value;
        }
        if BUG != LOAD_PER_CALLER {
            state.loading.push(key.clone());
        }
        drop(state);
        let landing = Landing { cache: self, key: key.clone() };
        let value = load();
        {
            let mut state = self.lock();
            let now = if BUG == LOAD_TTL_FROM_START { now } else { self.clock.now() };
            self.take(&mut state, &key, now);
            self.store(&mut state, key, value.clone(), ttl, now, false);
        }
        drop(landing);
        value
    }
}
