//! Statement: exercises/statements/ttl_lru.md (or `cargo grade ttl_lru --statement`).
//!
//! Build an in-memory cache that many threads share: every entry lives for its own TTL,
//! a full cache makes room by dropping the least recently used live entry, and callers
//! that miss the same key at the same time share one load of it.
//!
//! Implement [`TtlLruCache`] for [`TtlLru`]. The contract is the trait's documentation
//! in `harness/src/ttl_lru/contract.rs`. Read time only through `clock` (the grader
//! moves it by hand). Run `cargo grade ttl_lru` to see where you stand.

use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use harness::clock::SharedClock;
use harness::ttl_lru::TtlLruCache;

/// Your cache. Replace the fields with whatever you need.
pub struct TtlLru<K, V> {
    _todo: PhantomData<(K, V, SharedClock)>,
}

impl<K, V> TtlLruCache<K, V> for TtlLru<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn new(capacity: usize, clock: SharedClock) -> Self {
        let _ = (capacity, clock);
        TtlLru { _todo: PhantomData }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) -> Option<V> {
        let _ = (key, value, ttl);
        todo!("ttl_lru: insert")
    }

    fn get(&self, key: &K) -> Option<V> {
        let _ = key;
        todo!("ttl_lru: get")
    }

    fn remove(&self, key: &K) -> Option<V> {
        let _ = key;
        todo!("ttl_lru: remove")
    }

    fn len(&self) -> usize {
        todo!("ttl_lru: len")
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, ttl: Duration, load: F) -> V {
        let _ = (key, ttl, load);
        todo!("ttl_lru: get_or_insert_with")
    }
}
