//! Exercise: an idempotency-key store, the server side of "retry safely": the first
//! request with a key executes, retries replay its stored response; in memory (levels
//! 1-4) and on Redis (level 5). Statement: `exercises/statements/idempotency.md`.
//!
//! * `contract.rs`: what a learner implements ([`IdempotencyStore`],
//!   [`RedisIdempotencyStore`]), the types in their signatures, [`SETTLE_CHECK_ORDER`];
//! * `model.rs`: the model of records, leases and tokens, and its [`Spec`](crate::sequential::Spec);
//! * `suite.rs`: inputs, cases and levels 1-4; `redis.rs`: level 5.
//!
//! This module holds the object-safe adapters the suites drive and the factories.

mod cluster;
mod contract;
mod model;
mod redis;
mod suite;

use std::sync::Arc;

pub use self::cluster::L6;
pub use self::contract::*;
pub use self::model::{Op, Output};
pub use self::redis::redis_suite;
pub use self::suite::{suite, EXERCISE, L1, L2, L3, L4, L5};
use crate::clock::SharedClock;

/// The store under test, behind a trait object so the suite is compiled once.
pub trait ErasedStore: Send + Sync {
    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin;
    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError>;
    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError>;
}

impl<S: IdempotencyStore> ErasedStore for S {
    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin {
        IdempotencyStore::begin(self, scope, key, fingerprint)
    }
    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError> {
        IdempotencyStore::complete(self, scope, key, token, response)
    }
    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError> {
        IdempotencyStore::abandon(self, scope, key, token)
    }
}

pub type Factory = fn(IdempotencyConfig, SharedClock) -> Arc<dyn ErasedStore>;

pub fn factory<S: IdempotencyStore + 'static>() -> Factory {
    |config, clock| Arc::new(S::new(config, clock))
}

use crate::redis_server::RedisTarget;
use crate::BoxFuture;

/// The distributed store under test, behind a trait object.
pub trait ErasedRedisStore: Send + Sync {
    fn begin<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'a, Result<Begin, StoreUnavailable>>;
    fn complete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        token: u64,
        response: Response,
    ) -> BoxFuture<'a, Result<(), SettleError>>;
    fn abandon<'a>(&'a self, scope: &'a str, key: &'a str, token: u64) -> BoxFuture<'a, Result<(), SettleError>>;
}

impl<S: RedisIdempotencyStore> ErasedRedisStore for S {
    fn begin<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        fingerprint: Fingerprint,
    ) -> BoxFuture<'a, Result<Begin, StoreUnavailable>> {
        Box::pin(RedisIdempotencyStore::begin(self, scope, key, fingerprint))
    }
    fn complete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        token: u64,
        response: Response,
    ) -> BoxFuture<'a, Result<(), SettleError>> {
        Box::pin(RedisIdempotencyStore::complete(self, scope, key, token, response))
    }
    fn abandon<'a>(&'a self, scope: &'a str, key: &'a str, token: u64) -> BoxFuture<'a, Result<(), SettleError>> {
        Box::pin(RedisIdempotencyStore::abandon(self, scope, key, token))
    }
}

/// Builds the distributed store under test: `connect` for a server, `connect_cluster`
/// for a cluster.
pub type RedisFactory = fn(
    RedisTarget,
    RedisStoreConfig,
    SharedClock,
) -> BoxFuture<'static, Result<Arc<dyn ErasedRedisStore>, StoreUnavailable>>;

pub fn redis_factory<S: RedisIdempotencyStore + 'static>() -> RedisFactory {
    |target, config, clock| {
        Box::pin(async move {
            let store = match target {
                RedisTarget::Server(url) => S::connect(&url, config, clock).await?,
                RedisTarget::Cluster(nodes) => S::connect_cluster(&nodes, config, clock).await?,
            };
            Ok(Arc::new(store) as Arc<dyn ErasedRedisStore>)
        })
    }
}
