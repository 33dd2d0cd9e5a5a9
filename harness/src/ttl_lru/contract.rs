//! The contract a learner implements: [`TtlLruCache`]. Its doc comments are the
//! specification; `exercises/statements/ttl_lru.md` restates them in plain words.

use std::hash::Hash;
use std::time::Duration;

use crate::clock::SharedClock;
#[cfg(doc)]
use crate::clock::Timestamp;

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
