//! TTL+LRU caches written the way candidates write them (red team of the ttl_lru suite).
//!
//! Unlike the plain base in `ttl_lru.rs`, each family here is a whole, different design:
//! use stamps in a `BTreeMap`, an intrusive list in a slab with an expiry heap, a
//! `VecDeque` with per-key lock flights, an `RwLock` with atomic use stamps, striped
//! maps. Each family's `OK` variant is correct and must pass every case (it guards
//! against false red verdicts on designs other than the reference's); every other
//! variant is that design with the mistake a candidate really makes with it, and must
//! be rejected by the case its entry in `tests/self_check.rs` names.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use harness::clock::{SharedClock, Timestamp};
use harness::ttl_lru::TtlLruCache;

/// No bug: the family's correct variant.
pub const OK: u8 = 0;

/// A std lock whose poisoning is ignored: loads run unlocked, so a panic never leaves
/// the state half-changed.
fn relock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One load in flight, that callers wait on (a parking_lot `Condvar`). It can carry
/// the loaded value, for designs that hand it to the waiters.
struct Flight<V> {
    outcome: parking_lot::Mutex<(bool, Option<V>)>,
    landed: parking_lot::Condvar,
}

impl<V: Clone> Flight<V> {
    fn new() -> Arc<Self> {
        Arc::new(Flight { outcome: parking_lot::Mutex::new((false, None)), landed: parking_lot::Condvar::new() })
    }

    /// Blocks until the load has landed (or panicked); its value if it was handed over.
    fn wait(&self) -> Option<V> {
        let mut outcome = self.outcome.lock();
        while !outcome.0 {
            self.landed.wait(&mut outcome);
        }
        outcome.1.clone()
    }

    fn finish(&self, value: Option<V>) {
        *self.outcome.lock() = (true, value);
        self.landed.notify_all();
    }
}

// =====================================================================================
// Family 1: HashMap + BTreeMap of use stamps, one std Mutex, one Condvar for all flights
// =====================================================================================

/// A waiter checks `loading` with `if` instead of `while`: woken by *another* key's
/// landing (one Condvar serves every key), it loads the key itself while the first
/// load is still in flight; writes wait the same way.
pub const WAITS_ONCE: u8 = 1;
/// The loaded entry's recency stamp is drawn when the call starts, not when the value
/// lands: entries inserted during the load count as more recent.
pub const LOAD_RECENCY_FROM_START: u8 = 2;
/// Not a bug: `get` of a key being loaded waits for the load and reads what it stored
/// (the contract only requires calls on *other* keys to proceed), so this variant must
/// pass every case too.
pub const GET_WAITS_FOR_LOAD: u8 = 3;

struct Stamped<V> {
    value: V,
    expires: Timestamp,
    used: u64,
}

struct StampState<K, V> {
    map: HashMap<K, Stamped<V>>,
    /// Use stamp -> key, least recently used first.
    by_use: BTreeMap<u64, K>,
    tick: u64,
    loading: HashSet<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> StampState<K, V> {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn hit(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let tick = self.next_tick();
        let entry = self.map.get_mut(key).filter(|e| e.expires > now)?;
        self.by_use.remove(&entry.used);
        entry.used = tick;
        self.by_use.insert(tick, key.clone());
        Some(entry.value.clone())
    }

    fn take(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let entry = self.map.remove(key)?;
        self.by_use.remove(&entry.used);
        (entry.expires > now).then_some(entry.value)
    }

    fn purge(&mut self, now: Timestamp) {
        let by_use = &mut self.by_use;
        self.map.retain(|_, e| {
            let live = e.expires > now;
            if !live {
                by_use.remove(&e.used);
            }
            live
        });
    }

    /// `insert` at `now`; the entry gets the use stamp `used`, or a fresh one.
    fn store(
        &mut self,
        capacity: usize,
        key: K,
        value: V,
        ttl: Duration,
        now: Timestamp,
        used: Option<u64>,
    ) -> Option<V> {
        let old = self.take(&key, now);
        if ttl.is_zero() || capacity == 0 {
            return old;
        }
        if old.is_none() {
            self.purge(now);
            if self.map.len() >= capacity {
                if let Some((_, victim)) = self.by_use.pop_first() {
                    self.map.remove(&victim);
                }
            }
        }
        let used = used.unwrap_or_else(|| self.next_tick());
        self.by_use.insert(used, key.clone());
        self.map.insert(key, Stamped { value, expires: now + ttl, used });
        old
    }
}

pub struct StampLru<K, V, const BUG: u8> {
    capacity: usize,
    clock: SharedClock,
    state: Mutex<StampState<K, V>>,
    landed: Condvar,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> StampLru<K, V, BUG> {
    fn lock(&self) -> MutexGuard<'_, StampState<K, V>> {
        relock(&self.state)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, StampState<K, V>>) -> MutexGuard<'a, StampState<K, V>> {
        self.landed.wait(state).unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, once `key` is not loading.
    fn settled(&self, key: &K) -> MutexGuard<'_, StampState<K, V>> {
        let mut state = self.lock();
        if BUG == WAITS_ONCE {
            if state.loading.contains(key) {
                state = self.wait(state);
            }
            return state;
        }
        while state.loading.contains(key) {
            state = self.wait(state);
        }
        state
    }
}

/// Clears a load's marker and wakes the waiters, also when the load panics.
struct StampLanding<'a, K: Hash + Eq + Clone, V: Clone, const BUG: u8> {
    cache: &'a StampLru<K, V, BUG>,
    key: &'a K,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Drop for StampLanding<'_, K, V, BUG> {
    fn drop(&mut self) {
        self.cache.lock().loading.remove(self.key);
        self.cache.landed.notify_all();
    }
}

impl<K, V, const BUG: u8> TtlLruCache<K, V> for StampLru<K, V, BUG>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let state = StampState { map: HashMap::new(), by_use: BTreeMap::new(), tick: 0, loading: HashSet::new() };
        StampLru { capacity, clock, state: Mutex::new(state), landed: Condvar::new() }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let mut state = self.settled(&key);
        let now = self.clock.now();
        state.store(self.capacity, key, value, ttl, now, None)
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut state = if BUG == GET_WAITS_FOR_LOAD { self.settled(key) } else { self.lock() };
        let now = self.clock.now();
        state.hit(key, now)
    }

    fn remove(&self, key: &K) -> Option<V> {
        let mut state = self.settled(key);
        let now = self.clock.now();
        state.take(key, now)
    }

    fn len(&self) -> usize {
        let state = self.lock();
        let now = self.clock.now();
        state.map.values().filter(|e| e.expires > now).count()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        let mut state = self.lock();
        let now = self.clock.now();
        if let Some(value) = state.hit(&key, now) {
            return value;
        }
        if BUG == WAITS_ONCE {
            if state.loading.contains(&key) {
                state = self.wait(state);
                let now = self.clock.now();
                if let Some(value) = state.hit(&key, now) {
                    return value;
                }
            }
        } else {
            while state.loading.contains(&key) {
                state = self.wait(state);
                let now = self.clock.now();
                if let Some(value) = state.hit(&key, now) {
                    return value;
                }
            }
        }
        let started = state.next_tick();
        state.loading.insert(key.clone());
        drop(state);
        let _landing = StampLanding { cache: self, key: &key };
        let value = load();
        let mut state = self.lock();
        let now = self.clock.now();
        let used = (BUG == LOAD_RECENCY_FROM_START).then_some(started);
        state.store(self.capacity, key.clone(), value.clone(), ttl, now, used);
        drop(state);
        value
    }
}

/// Correct: HashMap + BTreeMap of use stamps under one std Mutex; one Condvar for every flight.
pub type Stamps<K, V> = StampLru<K, V, OK>;
/// Correct too: as `Stamps`, but `get` of a key being loaded waits for the load.
pub type StampsGetWaitsForLoad<K, V> = StampLru<K, V, GET_WAITS_FOR_LOAD>;
/// Bug: waits for a flight with `if`, not `while`, so a wake-up for another key lets it load too.
pub type StampsWaitOnce<K, V> = StampLru<K, V, WAITS_ONCE>;
/// Bug: a loaded entry's recency is stamped when the call starts, not when its value lands.
#[allow(dead_code)] // a gap of the suite: listed, commented out, in tests/self_check.rs
pub type StampsLoadRecencyFromStart<K, V> = StampLru<K, V, LOAD_RECENCY_FROM_START>;

// =====================================================================================
// Family 2: intrusive recency list in a slab (lru-crate style) + expiry min-heap,
// parking_lot Mutex, one Flight per loading key
// =====================================================================================

/// `len` returns the map's size and sweeps expired entries only once the expiry heap
/// has grown past a threshold.
pub const LEN_SWEEPS_LATE: u8 = 1;
/// No drop guard: the flight is cleared after `load` returns, so a panicking load
/// leaves it set and its waiters block forever.
pub const PANIC_LEAVES_FLIGHT: u8 = 2;
/// Deadlines kept in whole milliseconds ("plenty for a cache"): `now` and `ttl` are
/// truncated to milliseconds.
pub const MILLISECOND_DEADLINES: u8 = 3;
/// Go-style singleflight: waiters return the value the flight hands them instead of
/// reading the cache again (wrong when that value was not stored: ttl 0).
pub const SHARES_RESULT: u8 = 4;
/// Reads the clock before taking the lock ("keep the critical section short"): the
/// clock can move before the call takes effect, which then acts at a stale time.
pub const CLOCK_BEFORE_LOCK: u8 = 5;

const NIL: usize = usize::MAX;
const MS: u64 = 1_000_000;

struct Node<K, V> {
    key: K,
    value: V,
    expires: Timestamp,
    generation: u64,
    /// Neighbours: `prev` was used more recently.
    prev: usize,
    next: usize,
}

struct Slab<K, V, const BUG: u8> {
    index: HashMap<K, usize>,
    nodes: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    /// (expires, generation, slot); entries whose slot changed generation are stale.
    expiry: BinaryHeap<Reverse<(Timestamp, u64, usize)>>,
    generation: u64,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Slab<K, V, BUG> {
    fn new() -> Self {
        Slab {
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            expiry: BinaryHeap::new(),
            generation: 0,
        }
    }

    fn deadline(now: Timestamp, ttl: Duration) -> Timestamp {
        if BUG == MILLISECOND_DEADLINES {
            let ms = (now.as_nanos() / MS).saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            return Timestamp::from_nanos(ms.saturating_mul(MS));
        }
        now + ttl
    }

    fn is_live(expires: Timestamp, now: Timestamp) -> bool {
        if BUG == MILLISECOND_DEADLINES {
            return expires.as_nanos() > now.as_nanos() / MS * MS;
        }
        expires > now
    }

    fn node(&mut self, slot: usize) -> &mut Node<K, V> {
        self.nodes[slot].as_mut().expect("a linked slot holds a node")
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next) = {
            let node = self.node(slot);
            (node.prev, node.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.node(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node(next).prev = prev;
        }
    }

    fn push_front(&mut self, slot: usize) {
        let head = self.head;
        {
            let node = self.node(slot);
            node.prev = NIL;
            node.next = head;
        }
        if head == NIL {
            self.tail = slot;
        } else {
            self.node(head).prev = slot;
        }
        self.head = slot;
    }

    fn remove_slot(&mut self, slot: usize) -> Node<K, V> {
        self.unlink(slot);
        let node = self.nodes[slot].take().expect("a linked slot holds a node");
        self.free.push(slot);
        self.index.remove(&node.key);
        node
    }

    fn hit(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let slot = *self.index.get(key)?;
        if !Self::is_live(self.node(slot).expires, now) {
            return None;
        }
        self.unlink(slot);
        self.push_front(slot);
        Some(self.node(slot).value.clone())
    }

    fn take(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let slot = *self.index.get(key)?;
        let node = self.remove_slot(slot);
        Self::is_live(node.expires, now).then_some(node.value)
    }

    /// Drops every expired entry, earliest deadline first.
    fn purge(&mut self, now: Timestamp) {
        while let Some(&Reverse((expires, generation, slot))) = self.expiry.peek() {
            if Self::is_live(expires, now) {
                break;
            }
            self.expiry.pop();
            if self.nodes[slot].as_ref().is_some_and(|n| n.generation == generation) {
                self.remove_slot(slot);
            }
        }
        if self.expiry.len() > 2 * self.index.len() + 16 {
            let nodes = &self.nodes;
            self.expiry.retain(|&Reverse((_, g, slot))| nodes[slot].as_ref().is_some_and(|n| n.generation == g));
        }
    }

    fn store(&mut self, capacity: usize, key: K, value: V, ttl: Duration, now: Timestamp) -> Option<V> {
        let old = self.take(&key, now);
        if ttl.is_zero() || capacity == 0 {
            return old;
        }
        if old.is_none() {
            self.purge(now);
            if self.index.len() >= capacity && self.tail != NIL {
                self.remove_slot(self.tail);
            }
        }
        self.generation += 1;
        let expires = Self::deadline(now, ttl);
        let node = Node { key: key.clone(), value, expires, generation: self.generation, prev: NIL, next: NIL };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.nodes[slot] = Some(node);
                slot
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.push_front(slot);
        self.index.insert(key, slot);
        self.expiry.push(Reverse((expires, self.generation, slot)));
        old
    }

    fn len(&mut self, now: Timestamp) -> usize {
        if BUG != LEN_SWEEPS_LATE || self.expiry.len() > 32 {
            self.purge(now);
        }
        self.index.len()
    }
}

struct SlabState<K, V, const BUG: u8> {
    slab: Slab<K, V, BUG>,
    flights: HashMap<K, Arc<Flight<V>>>,
}

pub struct SlabList<K, V, const BUG: u8> {
    capacity: usize,
    clock: SharedClock,
    state: parking_lot::Mutex<SlabState<K, V, BUG>>,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> SlabList<K, V, BUG> {
    /// The lock, once `key` is not loading.
    fn settled(&self, key: &K) -> parking_lot::MutexGuard<'_, SlabState<K, V, BUG>> {
        loop {
            let state = self.state.lock();
            let Some(flight) = state.flights.get(key).cloned() else { return state };
            drop(state);
            flight.wait();
        }
    }
}

/// Clears the flight and wakes its waiters when dropped, panics included.
struct SlabLanding<'a, K: Hash + Eq + Clone, V: Clone, const BUG: u8> {
    cache: &'a SlabList<K, V, BUG>,
    key: &'a K,
    flight: Arc<Flight<V>>,
    handed_over: Option<V>,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Drop for SlabLanding<'_, K, V, BUG> {
    fn drop(&mut self) {
        self.cache.state.lock().flights.remove(self.key);
        self.flight.finish(self.handed_over.take());
    }
}

impl<K, V, const BUG: u8> TtlLruCache<K, V> for SlabList<K, V, BUG>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let state = SlabState { slab: Slab::new(), flights: HashMap::new() };
        SlabList { capacity, clock, state: parking_lot::Mutex::new(state) }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let early = (BUG == CLOCK_BEFORE_LOCK).then(|| self.clock.now());
        let mut state = self.settled(&key);
        let now = early.unwrap_or_else(|| self.clock.now());
        state.slab.store(self.capacity, key, value, ttl, now)
    }

    fn get(&self, key: &K) -> Option<V> {
        let early = (BUG == CLOCK_BEFORE_LOCK).then(|| self.clock.now());
        let mut state = self.state.lock();
        let now = early.unwrap_or_else(|| self.clock.now());
        state.slab.hit(key, now)
    }

    fn remove(&self, key: &K) -> Option<V> {
        let early = (BUG == CLOCK_BEFORE_LOCK).then(|| self.clock.now());
        let mut state = self.settled(key);
        let now = early.unwrap_or_else(|| self.clock.now());
        state.slab.take(key, now)
    }

    fn len(&self) -> usize {
        let early = (BUG == CLOCK_BEFORE_LOCK).then(|| self.clock.now());
        let mut state = self.state.lock();
        let now = early.unwrap_or_else(|| self.clock.now());
        state.slab.len(now)
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        loop {
            let mut state = self.state.lock();
            let now = self.clock.now();
            if let Some(value) = state.slab.hit(&key, now) {
                return value;
            }
            if let Some(flight) = state.flights.get(&key).cloned() {
                drop(state);
                match flight.wait() {
                    Some(value) if BUG == SHARES_RESULT => return value,
                    _ => continue,
                }
            }
            let flight = Flight::new();
            state.flights.insert(key.clone(), Arc::clone(&flight));
            drop(state);
            let mut landing = (BUG != PANIC_LEAVES_FLIGHT).then(|| SlabLanding {
                cache: self,
                key: &key,
                flight: Arc::clone(&flight),
                handed_over: None,
            });
            let value = load();
            {
                let mut state = self.state.lock();
                let now = self.clock.now();
                state.slab.store(self.capacity, key.clone(), value.clone(), ttl, now);
            }
            if let Some(landing) = landing.as_mut().filter(|_| BUG == SHARES_RESULT) {
                landing.handed_over = Some(value.clone());
            }
            drop(landing);
            if BUG == PANIC_LEAVES_FLIGHT {
                self.state.lock().flights.remove(&key);
                flight.finish(None);
            }
            return value;
        }
    }
}

/// Correct: lru-crate-style intrusive list in a slab, expiry min-heap with stale entries skipped, a Flight per key.
pub type SlabLru<K, V> = SlabList<K, V, OK>;
/// Bug: len() counts expired entries until enough have piled up to trigger a sweep.
pub type SlabLenSweepsLate<K, V> = SlabList<K, V, LEN_SWEEPS_LATE>;
/// Bug: no drop guard, so a panicking load leaves its flight set and the waiters hang.
pub type SlabPanicLeavesFlight<K, V> = SlabList<K, V, PANIC_LEAVES_FLIGHT>;
/// Bug: deadlines truncated to whole milliseconds.
pub type SlabMillisecondDeadlines<K, V> = SlabList<K, V, MILLISECOND_DEADLINES>;
/// Bug: reads the clock before taking the lock, so a call can act at a time the clock has already left.
pub type SlabClockBeforeLock<K, V> = SlabList<K, V, CLOCK_BEFORE_LOCK>;
/// Bug (per the linearizability clause): Go-style singleflight hands the loaded value to waiters even when it was not stored.
pub type SlabSharesResult<K, V> = SlabList<K, V, SHARES_RESULT>;

// =====================================================================================
// Family 3: VecDeque recency (O(n) moves) + HashMap, std Mutex; the loader holds a
// per-key std Mutex for the whole load, waiters block on it
// =====================================================================================

/// Hits do not move the key: the oldest *inserted* entry is evicted, not the least
/// recently used.
pub const EVICTS_OLDEST_INSERTED: u8 = 1;
/// Check-then-act single flight: the hit check and the flight lookup are two critical
/// sections; a load that lands in between is not seen, and the key loads twice.
pub const CHECK_THEN_LOAD: u8 = 2;
/// Waiters `unwrap()` the per-key Mutex, which a panicking load has poisoned.
pub const UNWRAPS_POISONED_FLIGHT: u8 = 3;
/// Sliding expiration: a hit restarts the entry's TTL.
pub const SLIDING_EXPIRY: u8 = 4;

struct QueueState<K, V> {
    /// value, expires, ttl (kept for sliding expiration).
    map: HashMap<K, (V, Timestamp, Duration)>,
    /// Least recently used first.
    order: VecDeque<K>,
    loading: HashMap<K, Arc<Mutex<()>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> QueueState<K, V> {
    fn forget(&mut self, key: &K) -> Option<K> {
        let at = self.order.iter().position(|k| k == key)?;
        self.order.remove(at)
    }

    fn hit(&mut self, key: &K, now: Timestamp, touch: bool, slide: bool) -> Option<V> {
        let (value, expires, ttl) = self.map.get_mut(key)?;
        if *expires <= now {
            return None;
        }
        if slide {
            *expires = now + *ttl;
        }
        let value = value.clone();
        if touch {
            if let Some(key) = self.forget(key) {
                self.order.push_back(key);
            }
        }
        Some(value)
    }

    fn take(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let (value, expires, _) = self.map.remove(key)?;
        self.forget(key);
        (expires > now).then_some(value)
    }

    fn store(&mut self, capacity: usize, key: K, value: V, ttl: Duration, now: Timestamp) -> Option<V> {
        let old = self.take(&key, now);
        if ttl.is_zero() || capacity == 0 {
            return old;
        }
        if old.is_none() {
            let before = self.map.len();
            self.map.retain(|_, e| e.1 > now);
            if self.map.len() != before {
                let map = &self.map;
                self.order.retain(|k| map.contains_key(k));
            }
            if self.map.len() >= capacity {
                if let Some(victim) = self.order.pop_front() {
                    self.map.remove(&victim);
                }
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, (value, now + ttl, ttl));
        old
    }
}

pub struct QueueLru<K, V, const BUG: u8> {
    capacity: usize,
    clock: SharedClock,
    state: Mutex<QueueState<K, V>>,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> QueueLru<K, V, BUG> {
    fn lock(&self) -> MutexGuard<'_, QueueState<K, V>> {
        relock(&self.state)
    }

    /// Blocks until the loader holding `flight` lets go of it.
    fn wait_for(flight: &Mutex<()>) {
        if BUG == UNWRAPS_POISONED_FLIGHT {
            drop(flight.lock().unwrap());
        } else {
            drop(relock(flight));
        }
    }

    /// The lock, once `key` is not loading.
    fn settled(&self, key: &K) -> MutexGuard<'_, QueueState<K, V>> {
        loop {
            let state = self.lock();
            let Some(flight) = state.loading.get(key).cloned() else { return state };
            drop(state);
            Self::wait_for(&flight);
        }
    }
}

/// Removes the key's flight when dropped (panics included); the loader's hold on the
/// flight's Mutex is released right after, waking the waiters.
struct QueueClear<'a, K: Hash + Eq + Clone, V: Clone, const BUG: u8> {
    cache: &'a QueueLru<K, V, BUG>,
    key: &'a K,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Drop for QueueClear<'_, K, V, BUG> {
    fn drop(&mut self) {
        self.cache.lock().loading.remove(self.key);
    }
}

impl<K, V, const BUG: u8> TtlLruCache<K, V> for QueueLru<K, V, BUG>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let state = QueueState { map: HashMap::new(), order: VecDeque::new(), loading: HashMap::new() };
        QueueLru { capacity, clock, state: Mutex::new(state) }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let mut state = self.settled(&key);
        let now = self.clock.now();
        state.store(self.capacity, key, value, ttl, now)
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut state = self.lock();
        let now = self.clock.now();
        state.hit(key, now, BUG != EVICTS_OLDEST_INSERTED, BUG == SLIDING_EXPIRY)
    }

    fn remove(&self, key: &K) -> Option<V> {
        let mut state = self.settled(key);
        let now = self.clock.now();
        state.take(key, now)
    }

    fn len(&self) -> usize {
        let state = self.lock();
        let now = self.clock.now();
        state.map.values().filter(|e| e.1 > now).count()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        loop {
            let mut state = self.lock();
            let now = self.clock.now();
            if let Some(value) = state.hit(&key, now, BUG != EVICTS_OLDEST_INSERTED, BUG == SLIDING_EXPIRY) {
                return value;
            }
            if BUG == CHECK_THEN_LOAD {
                drop(state);
                state = self.lock();
            }
            if let Some(flight) = state.loading.get(&key).cloned() {
                drop(state);
                Self::wait_for(&flight);
                continue;
            }
            let flight = Arc::new(Mutex::new(()));
            let held = relock(&flight);
            state.loading.insert(key.clone(), Arc::clone(&flight));
            drop(state);
            // Dropped before `held` (reverse order of declaration).
            let clear = QueueClear { cache: self, key: &key };
            let value = load();
            {
                let mut state = self.lock();
                let now = self.clock.now();
                state.store(self.capacity, key.clone(), value.clone(), ttl, now);
            }
            drop(clear);
            drop(held);
            return value;
        }
    }
}

/// Correct: VecDeque recency + HashMap under a std Mutex; a loader holds a per-key Mutex the waiters block on.
pub type Queue<K, V> = QueueLru<K, V, OK>;
/// Bug: hits do not move the key, so the oldest inserted entry is evicted instead of the least recently used.
pub type QueueEvictsOldestInserted<K, V> = QueueLru<K, V, EVICTS_OLDEST_INSERTED>;
/// Bug: check-then-act single flight (hit check and flight lookup in two critical sections).
pub type QueueCheckThenLoad<K, V> = QueueLru<K, V, CHECK_THEN_LOAD>;
/// Bug: waiters unwrap the per-key Mutex that a panicking load poisoned.
pub type QueueUnwrapsPoisonedFlight<K, V> = QueueLru<K, V, UNWRAPS_POISONED_FLIGHT>;
/// Bug: sliding expiration (a hit restarts the TTL).
pub type QueueSlidingExpiry<K, V> = QueueLru<K, V, SLIDING_EXPIRY>;

// =====================================================================================
// Family 4: RwLock, `get` under the read lock, recency as atomic use stamps that only
// writers (under the write lock) compare
// =====================================================================================

/// `get` sets its use stamp with a plain `store` (drawn before the value is cloned)
/// instead of `fetch_max`: two readers of one key race under the read lock, and the
/// one that drew the older stamp can write it last, making a just-used key look old.
pub const LAST_STAMP_WINS: u8 = 1;
/// Recency stamps are the clock's reading: calls at the same instant tie, and the tie
/// goes to whichever entry the HashMap lists first.
pub const CLOCK_AS_RECENCY: u8 = 2;

struct RwEntry<V> {
    value: V,
    expires: Timestamp,
    /// Raised with `fetch_max` under the read lock; read under the write lock.
    used: AtomicU64,
}

struct RwState<K, V> {
    map: HashMap<K, RwEntry<V>>,
    flights: HashMap<K, Arc<Flight<V>>>,
}

pub struct RwStamps<K, V, const BUG: u8> {
    capacity: usize,
    clock: SharedClock,
    state: RwLock<RwState<K, V>>,
    tick: AtomicU64,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> RwStamps<K, V, BUG> {
    fn read(&self) -> RwLockReadGuard<'_, RwState<K, V>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, RwState<K, V>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn stamp(&self, now: Timestamp) -> u64 {
        if BUG == CLOCK_AS_RECENCY {
            return now.as_nanos();
        }
        self.tick.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The write lock, once `key` is not loading.
    fn settled(&self, key: &K) -> RwLockWriteGuard<'_, RwState<K, V>> {
        loop {
            let state = self.write();
            let Some(flight) = state.flights.get(key).cloned() else { return state };
            drop(state);
            flight.wait();
        }
    }

    fn store(&self, state: &mut RwState<K, V>, key: K, value: V, ttl: Duration, now: Timestamp) -> Option<V> {
        let old = state.map.remove(&key).filter(|e| e.expires > now).map(|e| e.value);
        if ttl.is_zero() || self.capacity == 0 {
            return old;
        }
        if old.is_none() {
            state.map.retain(|_, e| e.expires > now);
            if state.map.len() >= self.capacity {
                let victim =
                    state.map.iter().min_by_key(|(_, e)| e.used.load(Ordering::SeqCst)).map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    state.map.remove(&victim);
                }
            }
        }
        let used = AtomicU64::new(self.stamp(now));
        state.map.insert(key, RwEntry { value, expires: now + ttl, used });
        old
    }
}

/// Clears the flight and wakes its waiters when dropped, panics included.
struct RwLanding<'a, K: Hash + Eq + Clone, V: Clone, const BUG: u8> {
    cache: &'a RwStamps<K, V, BUG>,
    key: &'a K,
    flight: Arc<Flight<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone, const BUG: u8> Drop for RwLanding<'_, K, V, BUG> {
    fn drop(&mut self) {
        self.cache.write().flights.remove(self.key);
        self.flight.finish(None);
    }
}

impl<K, V, const BUG: u8> TtlLruCache<K, V> for RwStamps<K, V, BUG>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let state = RwState { map: HashMap::new(), flights: HashMap::new() };
        RwStamps { capacity, clock, state: RwLock::new(state), tick: AtomicU64::new(0) }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let mut state = self.settled(&key);
        let now = self.clock.now();
        self.store(&mut state, key, value, ttl, now)
    }

    fn get(&self, key: &K) -> Option<V> {
        let state = self.read();
        let now = self.clock.now();
        let entry = state.map.get(key).filter(|e| e.expires > now)?;
        let stamp = self.stamp(now);
        if BUG == LAST_STAMP_WINS {
            let value = entry.value.clone();
            entry.used.store(stamp, Ordering::SeqCst);
            return Some(value);
        }
        entry.used.fetch_max(stamp, Ordering::SeqCst);
        Some(entry.value.clone())
    }

    fn remove(&self, key: &K) -> Option<V> {
        let mut state = self.settled(key);
        let now = self.clock.now();
        state.map.remove(key).filter(|e| e.expires > now).map(|e| e.value)
    }

    fn len(&self) -> usize {
        let state = self.read();
        let now = self.clock.now();
        state.map.values().filter(|e| e.expires > now).count()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        loop {
            // Most calls are hits: try under the read lock first.
            if let Some(value) = self.get(&key) {
                return value;
            }
            let mut state = self.write();
            let now = self.clock.now();
            if let Some(entry) = state.map.get(&key).filter(|e| e.expires > now) {
                entry.used.fetch_max(self.stamp(now), Ordering::SeqCst);
                return entry.value.clone();
            }
            if let Some(flight) = state.flights.get(&key).cloned() {
                drop(state);
                flight.wait();
                continue;
            }
            let flight = Flight::new();
            state.flights.insert(key.clone(), Arc::clone(&flight));
            drop(state);
            let landing = RwLanding { cache: self, key: &key, flight };
            let value = load();
            {
                let mut state = self.write();
                let now = self.clock.now();
                self.store(&mut state, key.clone(), value.clone(), ttl, now);
            }
            drop(landing);
            return value;
        }
    }
}

/// Correct: RwLock, get under the read lock raising an atomic use stamp; eviction scans stamps under the write lock.
pub type RwLockStamps<K, V> = RwStamps<K, V, OK>;
/// Bug: concurrent readers of one key store their use stamps last-writer-wins (not `fetch_max`).
#[allow(dead_code)] // a gap of the suite: listed, commented out, in tests/self_check.rs
pub type RwLastStampWins<K, V> = RwStamps<K, V, LAST_STAMP_WINS>;
/// Bug: recency stamps are clock readings, so same-instant uses tie.
pub type RwClockAsRecency<K, V> = RwStamps<K, V, CLOCK_AS_RECENCY>;

// =====================================================================================
// Family 5 (buggy only): striped maps for "less contention"
// =====================================================================================

const STRIPES: usize = 4;

struct StripeEntry<V> {
    value: V,
    expires: Timestamp,
    used: u64,
}

/// Bug: four stripes, each its own Mutex; eviction and `len` visit the stripes one at a
/// time, so neither is atomic with the insert that caused it (at capacity 1 a `len` or
/// a pair of gets sees two live entries), and writes check the flights in a separate
/// lock from the stripe they change.
pub struct Striped<K, V> {
    capacity: usize,
    clock: SharedClock,
    stripes: Vec<Mutex<HashMap<K, StripeEntry<V>>>>,
    tick: AtomicU64,
    flights: Mutex<HashMap<K, Arc<Flight<V>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Striped<K, V> {
    fn stripe(&self, key: &K) -> MutexGuard<'_, HashMap<K, StripeEntry<V>>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        relock(&self.stripes[hasher.finish() as usize % STRIPES])
    }

    fn wait_for_load(&self, key: &K) {
        loop {
            let flight = relock(&self.flights).get(key).cloned();
            match flight {
                Some(flight) => {
                    flight.wait();
                }
                None => return,
            }
        }
    }

    fn store(&self, key: K, value: V, ttl: Duration, now: Timestamp) -> Option<V> {
        let old = {
            let mut stripe = self.stripe(&key);
            let old = stripe.remove(&key).filter(|e| e.expires > now).map(|e| e.value);
            if ttl.is_zero() || self.capacity == 0 {
                return old;
            }
            let used = self.tick.fetch_add(1, Ordering::SeqCst) + 1;
            stripe.insert(key.clone(), StripeEntry { value, expires: now + ttl, used });
            old
        };
        if old.is_none() {
            self.shed(now, &key);
        }
        old
    }

    /// Drops expired entries everywhere, then evicts least recently used entries
    /// (never `newest`) until at most `capacity` are live.
    fn shed(&self, now: Timestamp, newest: &K) {
        let mut live = 0;
        for stripe in &self.stripes {
            let mut stripe = relock(stripe);
            stripe.retain(|_, e| e.expires > now);
            live += stripe.len();
        }
        while live > self.capacity {
            let mut oldest: Option<(u64, usize, K)> = None;
            for (at, stripe) in self.stripes.iter().enumerate() {
                for (key, entry) in relock(stripe).iter() {
                    if key != newest && oldest.as_ref().is_none_or(|o| entry.used < o.0) {
                        oldest = Some((entry.used, at, key.clone()));
                    }
                }
            }
            let Some((_, at, key)) = oldest else { break };
            relock(&self.stripes[at]).remove(&key);
            live -= 1;
        }
    }
}

/// Clears the flight and wakes its waiters when dropped, panics included.
struct StripedLanding<'a, K: Hash + Eq + Clone, V: Clone> {
    cache: &'a Striped<K, V>,
    key: &'a K,
    flight: Arc<Flight<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for StripedLanding<'_, K, V> {
    fn drop(&mut self) {
        relock(&self.cache.flights).remove(self.key);
        self.flight.finish(None);
    }
}

impl<K, V> TtlLruCache<K, V> for Striped<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let stripes = (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect();
        Striped { capacity, clock, stripes, tick: AtomicU64::new(0), flights: Mutex::new(HashMap::new()) }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        self.wait_for_load(&key);
        let now = self.clock.now();
        self.store(key, value, ttl, now)
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut stripe = self.stripe(key);
        let now = self.clock.now();
        let entry = stripe.get_mut(key).filter(|e| e.expires > now)?;
        entry.used = self.tick.fetch_add(1, Ordering::SeqCst) + 1;
        Some(entry.value.clone())
    }

    fn remove(&self, key: &K) -> Option<V> {
        self.wait_for_load(key);
        let mut stripe = self.stripe(key);
        let now = self.clock.now();
        stripe.remove(key).filter(|e| e.expires > now).map(|e| e.value)
    }

    fn len(&self) -> usize {
        let now = self.clock.now();
        self.stripes.iter().map(|s| relock(s).values().filter(|e| e.expires > now).count()).sum()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        loop {
            if let Some(value) = self.get(&key) {
                return value;
            }
            let mut flights = relock(&self.flights);
            if let Some(flight) = flights.get(&key).cloned() {
                drop(flights);
                flight.wait();
                continue;
            }
            let flight = Flight::new();
            flights.insert(key.clone(), Arc::clone(&flight));
            drop(flights);
            let landing = StripedLanding { cache: self, key: &key, flight };
            let value = load();
            let now = self.clock.now();
            self.store(key.clone(), value.clone(), ttl, now);
            drop(landing);
            return value;
        }
    }
}

// =====================================================================================
// Family 6 (buggy only): the entries and the flights under two separate Mutexes
// =====================================================================================

/// Bug: two locks taken in opposite orders. Writes and lookups lock the flights, then
/// the entries (so "not loading" and the write are one step); a landing load stores its
/// value under the entries lock and clears its flight while still holding it. An
/// insert and a landing load that meet deadlock.
pub struct TwoLocks<K, V> {
    capacity: usize,
    clock: SharedClock,
    entries: Mutex<StampState<K, V>>,
    flights: Mutex<Flights<K, V>>,
}

/// The flights table of [`TwoLocks`].
type Flights<K, V> = HashMap<K, Arc<Flight<V>>>;
/// Both locks of [`TwoLocks`], flights first.
type BothLocks<'a, K, V> = (MutexGuard<'a, Flights<K, V>>, MutexGuard<'a, StampState<K, V>>);

impl<K: Hash + Eq + Clone, V: Clone> TwoLocks<K, V> {
    /// Both locks (flights first), once `key` is not loading.
    fn settled(&self, key: &K) -> BothLocks<'_, K, V> {
        loop {
            let flights = relock(&self.flights);
            match flights.get(key).cloned() {
                Some(flight) => {
                    drop(flights);
                    flight.wait();
                }
                None => return (flights, relock(&self.entries)),
            }
        }
    }

    fn clear(&self, key: &K, flight: &Flight<V>) {
        relock(&self.flights).remove(key);
        flight.finish(None);
    }
}

/// Clears the flight if the load panics.
struct TwoLocksUnwind<'a, K: Hash + Eq + Clone, V: Clone> {
    cache: &'a TwoLocks<K, V>,
    key: &'a K,
    flight: Arc<Flight<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for TwoLocksUnwind<'_, K, V> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.cache.clear(self.key, &self.flight);
        }
    }
}

impl<K, V> TtlLruCache<K, V> for TwoLocks<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let entries = StampState { map: HashMap::new(), by_use: BTreeMap::new(), tick: 0, loading: HashSet::new() };
        TwoLocks { capacity, clock, entries: Mutex::new(entries), flights: Mutex::new(HashMap::new()) }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let (_flights, mut entries) = self.settled(&key);
        let now = self.clock.now();
        entries.store(self.capacity, key, value, ttl, now, None)
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut entries = relock(&self.entries);
        let now = self.clock.now();
        entries.hit(key, now)
    }

    fn remove(&self, key: &K) -> Option<V> {
        let (_flights, mut entries) = self.settled(key);
        let now = self.clock.now();
        entries.take(key, now)
    }

    fn len(&self) -> usize {
        let entries = relock(&self.entries);
        let now = self.clock.now();
        entries.map.values().filter(|e| e.expires > now).count()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        let (mut flights, mut entries) = self.settled(&key);
        let now = self.clock.now();
        if let Some(value) = entries.hit(&key, now) {
            return value;
        }
        let flight = Flight::new();
        flights.insert(key.clone(), Arc::clone(&flight));
        drop((entries, flights));
        let unwind = TwoLocksUnwind { cache: self, key: &key, flight: Arc::clone(&flight) };
        let value = load();
        let mut entries = relock(&self.entries);
        let now = self.clock.now();
        entries.store(self.capacity, key.clone(), value.clone(), ttl, now, None);
        // The slip: the flight's lock is taken while the entries' lock is still held.
        self.clear(&key, &flight);
        drop(entries);
        drop(unwind);
        value
    }
}
