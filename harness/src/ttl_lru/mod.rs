//! Exercise: a thread-safe cache with per-entry TTL, LRU eviction and single-flight
//! loading. Semantics: `shared/spec/ttl_lru.md`, restated on the trait so that a
//! learner needs nothing else; the statement is `exercises/statements/ttl_lru.md`.
//!
//! * `contract.rs`: the trait a learner implements ([`TtlLruCache`]);
//! * `model.rs`: the model it is graded against;
//! * `suite.rs`: the inputs, the checks and the levelled cases ([`suite()`]).
//!
//! This module holds the object-safe adapter the suite drives ([`ErasedCache`]) and
//! the [`factory`] that builds it from an implementation.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;

mod contract;
mod model;
mod suite;

pub use crate::linearizability::{Key, Payload};
pub use contract::TtlLruCache;
pub use model::{Config, Op, Output};
pub use suite::{suite, EXERCISE, L1, L2, L3, L4};

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
