//! Statement: exercises/statements/idempotency.md (or `cargo grade idempotency --statement`).
//!
//! Build the server side of safe retries: a store, keyed by the client's idempotency key,
//! that lets the first request execute and replays its stored response to every retry,
//! and answers 409 while it is in flight and 422 when the key is reused for another
//! request. Then keep it right under concurrency, executors that outlive their lease,
//! bounded memory, and many instances sharing one Redis.
//!
//! Implement [`IdempotencyStore`] for [`Store`] (levels 1-4) and
//! [`RedisIdempotencyStore`] for [`RedisStore`] (level 5 on one server, level 6 on a
//! Redis Cluster). The contract is on those
//! traits, in `harness/src/idempotency/contract.rs`. Run `cargo grade idempotency`;
//! level 5 needs `redis-server` on the PATH (or `REDIS_URL`).

use std::marker::PhantomData;

use harness::clock::SharedClock;
use harness::idempotency::{
    Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, LeaseError, RedisIdempotencyStore, RedisStoreConfig,
    Response, SettleError, StoreUnavailable,
};

/// Your store. Replace the fields with whatever you need.
pub struct Store {
    _todo: PhantomData<(IdempotencyConfig, SharedClock)>,
}

impl IdempotencyStore for Store {
    fn new(config: IdempotencyConfig, clock: SharedClock) -> Self {
        let _ = (config, clock);
        Store { _todo: PhantomData }
    }

    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin {
        let _ = (scope, key, fingerprint);
        todo!("idempotency: begin")
    }

    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError> {
        let _ = (scope, key, token, response);
        todo!("idempotency: complete")
    }

    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError> {
        let _ = (scope, key, token);
        todo!("idempotency: abandon")
    }
}

/// Your Redis-backed store (levels 5 and 6). Replace the fields with whatever you need.
pub struct RedisStore {
    _todo: PhantomData<(RedisStoreConfig, SharedClock)>,
}

impl RedisIdempotencyStore for RedisStore {
    async fn connect(url: &str, config: RedisStoreConfig, clock: SharedClock) -> Result<Self, StoreUnavailable> {
        let _ = (url, config, clock);
        todo!("idempotency: RedisStore::connect")
    }

    async fn connect_cluster(
        nodes: &[String],
        config: RedisStoreConfig,
        clock: SharedClock,
    ) -> Result<Self, StoreUnavailable> {
        let _ = (nodes, config, clock);
        todo!("idempotency: RedisStore::connect_cluster")
    }

    async fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Result<Begin, StoreUnavailable> {
        let _ = (scope, key, fingerprint);
        todo!("idempotency: RedisStore::begin")
    }

    async fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), SettleError> {
        let _ = (scope, key, token, response);
        todo!("idempotency: RedisStore::complete")
    }

    async fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), SettleError> {
        let _ = (scope, key, token);
        todo!("idempotency: RedisStore::abandon")
    }
}
