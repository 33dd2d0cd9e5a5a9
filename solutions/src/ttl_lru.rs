//! Reference TTL+LRU cache with single-flight loading.
//!
//! One `parking_lot::Mutex` guards the whole state: exact LRU order is a single global
//! order, so sharding would have to give it up. Inside the lock:
//! * a slab of entries linked into a recency list (most recent at `head`; the links in
//!   their own array), indexed by a `HashMap` from key to slot: O(1) get, insert,
//!   move-to-front, evict;
//! * a min-heap of (expiry, slot): expired entries are dropped, oldest first, before a
//!   live entry is ever evicted, and before `len` counts. Entries are pushed, never
//!   updated in place: one whose entry has gone or changed expiry is skipped when it
//!   surfaces, and the heap is rebuilt when stale entries outnumber live ones three to one;
//! * the keys being loaded, each with a [`Flight`] that callers can wait on.
//!
//! Loads run with the lock released. Callers that would change a loading key wait for
//! its flight and then start over, so every call still takes effect at one instant
//! under the lock: the cache stays linearizable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use harness::clock::{SharedClock, Timestamp};
use harness::ttl_lru::TtlLruCache;
// hashbrown's default hasher (foldhash): much faster than SipHash on small keys.
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex, MutexGuard};

const NIL: usize = usize::MAX;

struct Entry<K, V> {
    key: K,
    value: V,
    expires: Timestamp,
}

/// A slot's place in the recency list. Kept apart from the entries so that a move to
/// the front touches only this small array.
#[derive(Clone, Copy)]
struct Link {
    prev: usize,
    next: usize,
}

/// The recency list, index and expiry order. Knows nothing of locks or loads.
struct Entries<K, V> {
    index: HashMap<K, usize>,
    /// `None` for a free slot (listed in `free`).
    slots: Vec<Option<Entry<K, V>>>,
    links: Vec<Link>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to evict.
    tail: usize,
    /// Earliest expiry on top; may hold stale entries (see the module doc).
    by_expiry: BinaryHeap<Reverse<ExpiryKey>>,
}

/// (expiry, slot) packed into one integer that orders by expiry first: one comparison
/// per heap step instead of a tuple's two.
type ExpiryKey = u128;

fn expiry_key(expires: Timestamp, slot: usize) -> ExpiryKey {
    (u128::from(expires.as_nanos()) << 64) | slot as u128
}

fn unpack_expiry_key(key: ExpiryKey) -> (Timestamp, usize) {
    (Timestamp::from_nanos((key >> 64) as u64), key as u64 as usize)
}

impl<K: Hash + Eq + Clone, V: Clone> Entries<K, V> {
    fn new() -> Self {
        Entries {
            index: HashMap::new(),
            slots: Vec::new(),
            links: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            by_expiry: BinaryHeap::new(),
        }
    }

    #[inline]
    fn entry(&self, slot: usize) -> &Entry<K, V> {
        self.slots[slot].as_ref().expect("indexed slots are occupied")
    }

    #[inline]
    fn entry_mut(&mut self, slot: usize) -> &mut Entry<K, V> {
        self.slots[slot].as_mut().expect("indexed slots are occupied")
    }

    #[inline]
    fn unlink(&mut self, slot: usize) {
        let Link { prev, next } = self.links[slot];
        match prev {
            NIL => self.head = next,
            p => self.links[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.links[n].prev = prev,
        }
    }

    #[inline]
    fn link_front(&mut self, slot: usize) {
        self.links[slot] = Link { prev: NIL, next: self.head };
        match self.head {
            NIL => self.tail = slot,
            h => self.links[h].prev = slot,
        }
        self.head = slot;
    }

    #[inline]
    fn touch(&mut self, slot: usize) {
        if self.head != slot {
            self.unlink(slot);
            self.link_front(slot);
        }
    }

    /// The slot of `key` if it is live at `now`.
    #[inline]
    fn live_slot(&self, key: &K, now: Timestamp) -> Option<usize> {
        let &slot = self.index.get(key)?;
        (self.entry(slot).expires > now).then_some(slot)
    }

    fn remove_slot(&mut self, slot: usize) -> Entry<K, V> {
        self.unlink(slot);
        let entry = self.slots[slot].take().expect("indexed slots are occupied");
        self.index.remove(&entry.key);
        self.free.push(slot);
        entry
    }

    /// Removes `key`; its value if it was live.
    fn remove(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let &slot = self.index.get(key)?;
        let entry = self.remove_slot(slot);
        (entry.expires > now).then_some(entry.value)
    }

    fn drop_expired(&mut self, now: Timestamp) {
        while let Some(&Reverse(key)) = self.by_expiry.peek() {
            let (expires, slot) = unpack_expiry_key(key);
            if expires > now {
                break;
            }
            self.by_expiry.pop();
            // Stale if the slot is free or now holds an entry expiring at another time.
            if self.slots[slot].as_ref().is_some_and(|entry| entry.expires == expires) {
                self.remove_slot(slot);
            }
        }
    }

    fn schedule_expiry(&mut self, slot: usize, expires: Timestamp) {
        if self.by_expiry.len() > 4 * self.index.len() + 64 {
            // Mostly stale: rebuild from the live entries (amortised O(1) per push),
            // reusing the heap's allocation.
            let mut heap = std::mem::take(&mut self.by_expiry).into_vec();
            heap.clear();
            let live = self.slots.iter().enumerate();
            heap.extend(live.filter_map(|(slot, entry)| entry.as_ref().map(|e| Reverse(expiry_key(e.expires, slot)))));
            self.by_expiry = BinaryHeap::from(heap);
        }
        self.by_expiry.push(Reverse(expiry_key(expires, slot)));
    }

    fn set_expiry(&mut self, slot: usize, expires: Timestamp) {
        if std::mem::replace(&mut self.entry_mut(slot).expires, expires) != expires {
            self.schedule_expiry(slot, expires);
        }
    }

    fn push_new(&mut self, key: K, value: V, expires: Timestamp) {
        let entry = Entry { key: key.clone(), value, expires };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                self.links.push(Link { prev: NIL, next: NIL });
                self.slots.len() - 1
            }
        };
        self.index.insert(key, slot);
        self.schedule_expiry(slot, expires);
        self.link_front(slot);
    }

    /// `insert` of the contract, at time `now`.
    fn insert(&mut self, key: K, value: V, ttl: Duration, now: Timestamp, capacity: usize) -> Option<V> {
        let expires = now + ttl;
        if expires <= now || capacity == 0 {
            // ttl 0 (or nowhere to store): the insert is a remove.
            return self.remove(&key, now);
        }
        match self.index.get(&key) {
            Some(&slot) if self.entry(slot).expires > now => {
                self.set_expiry(slot, expires);
                self.touch(slot);
                return Some(std::mem::replace(&mut self.entry_mut(slot).value, value));
            }
            // Expired: its slot is reused below like any free one.
            Some(&stale) => {
                self.remove_slot(stale);
            }
            None => {}
        }
        if self.index.len() >= capacity {
            // Expired entries give up their slots before any live entry is evicted.
            self.drop_expired(now);
            if self.index.len() >= capacity {
                self.remove_slot(self.tail);
            }
        }
        self.push_new(key, value, expires);
        None
    }
}

/// Signals the end of one load. Waiters do not take its value: they look the key up
/// again, which keeps every call a single atomic step on the cache (and makes capacity
/// 0 or ttl 0, where nothing is stored, load again as the contract says).
#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    landed: Condvar,
}

impl Flight {
    fn wait(&self) {
        let mut done = self.done.lock();
        while !*done {
            self.landed.wait(&mut done);
        }
    }

    fn land(&self) {
        *self.done.lock() = true;
        self.landed.notify_all();
    }
}

struct State<K, V> {
    entries: Entries<K, V>,
    loading: HashMap<K, Arc<Flight>>,
}

/// A thread-safe TTL+LRU cache with single-flight loading.
pub struct TtlLru<K, V> {
    capacity: usize,
    clock: SharedClock,
    state: Mutex<State<K, V>>,
}

impl<K, V> TtlLru<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// Locks the state once no load of `key` is running, so that a change to `key`
    /// takes effect after the load, never in the middle of it.
    fn lock_unless_loading(&self, key: &K) -> MutexGuard<'_, State<K, V>> {
        loop {
            let state = self.state.lock();
            if state.loading.is_empty() {
                // The common case: no load anywhere, no need to hash the key.
                return state;
            }
            match state.loading.get(key) {
                None => return state,
                Some(flight) => {
                    let flight = Arc::clone(flight);
                    drop(state);
                    flight.wait();
                }
            }
        }
    }
}

/// Ends a load: stores its value (if it produced one) and clears the key's flight in
/// one critical section, then wakes the waiters. Runs on drop, so a panicking load
/// still clears its flight and a waiter loads again.
struct Landing<'a, K: Hash + Eq + Clone, V: Clone> {
    cache: &'a TtlLru<K, V>,
    key: K,
    ttl: Duration,
    flight: Arc<Flight>,
    loaded: Option<V>,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        let cache = self.cache;
        {
            let mut state = cache.state.lock();
            if let Some(value) = self.loaded.take() {
                let now = cache.clock.now();
                state.entries.insert(self.key.clone(), value, self.ttl, now, cache.capacity);
            }
            state.loading.remove(&self.key);
        }
        self.flight.land();
    }
}

impl<K, V> TtlLruCache<K, V> for TtlLru<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        TtlLru { capacity, clock, state: Mutex::new(State { entries: Entries::new(), loading: HashMap::new() }) }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let mut state = self.lock_unless_loading(&key);
        let now = self.clock.now();
        state.entries.insert(key, value, ttl, now, self.capacity)
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut state = self.state.lock();
        let now = self.clock.now();
        let slot = state.entries.live_slot(key, now)?;
        state.entries.touch(slot);
        Some(state.entries.entry(slot).value.clone())
    }

    fn remove(&self, key: &K) -> Option<V> {
        let mut state = self.lock_unless_loading(key);
        let now = self.clock.now();
        state.entries.remove(key, now)
    }

    fn len(&self) -> usize {
        let mut state = self.state.lock();
        let now = self.clock.now();
        state.entries.drop_expired(now);
        state.entries.index.len()
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        let flight = {
            let mut state = self.lock_unless_loading(&key);
            let now = self.clock.now();
            if let Some(slot) = state.entries.live_slot(&key, now) {
                state.entries.touch(slot);
                return state.entries.entry(slot).value.clone();
            }
            let flight = Arc::new(Flight::default());
            state.loading.insert(key.clone(), Arc::clone(&flight));
            flight
        };
        // The lock is released: other keys proceed while `load` runs.
        let mut landing = Landing { cache: self, key, ttl, flight, loaded: None };
        let value = load();
        landing.loaded = Some(value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::clock::ManualClock;

    /// The suite grades with small `Copy` keys; the reference must work just as well
    /// with owned keys and values, and free the slots of expired entries for reuse.
    #[test]
    fn owned_keys_and_values_and_slot_reuse() {
        let clock = ManualClock::new();
        let cache: TtlLru<String, Vec<u8>> = TtlLru::new(2, clock.shared());
        assert_eq!(cache.insert("a".into(), vec![1], Duration::from_secs(1)), None);
        assert_eq!(cache.insert("b".into(), vec![2], Duration::from_secs(5)), None);
        clock.advance(Duration::from_secs(1));
        // "a" expired: "c" takes its slot, "b" (live) stays.
        assert_eq!(cache.insert("c".into(), vec![3], Duration::from_secs(5)), None);
        assert_eq!(cache.get(&"b".to_string()), Some(vec![2]));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get_or_insert_with("b".into(), Duration::from_secs(5), || unreachable!()), vec![2]);
        let state = cache.state.lock();
        assert_eq!(state.entries.slots.len(), 2, "expired slot was reused, not grown");
    }

    /// Many TTL resets leave stale heap entries; the heap must stay proportional to
    /// the live entries.
    #[test]
    fn expiry_heap_stays_bounded_under_ttl_resets() {
        let clock = ManualClock::new();
        let cache: TtlLru<u32, u32> = TtlLru::new(4, clock.shared());
        for round in 0..10_000u32 {
            clock.advance(Duration::from_millis(1));
            cache.insert(round % 4, round, Duration::from_secs(60));
        }
        let state = cache.state.lock();
        assert!(state.entries.by_expiry.len() <= 4 * 4 + 64 + 1, "heap grew to {}", state.entries.by_expiry.len());
    }
}
