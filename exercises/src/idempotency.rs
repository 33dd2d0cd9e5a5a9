//! Exercise: an idempotency-key store (the server side of safe retries).
//!
//! Implement [`IdempotencyStore`] for [`Store`]. The full contract is on the trait in
//! `harness/src/idempotency.rs`; in short, `begin(scope, key, fingerprint)` answers:
//! * `Execute(lease)` for a new key (or one whose executor's lease expired: take over
//!   with a higher fencing token);
//! * `Replay(response)` once completed; `InFlight` (409) while another executes;
//!   `Mismatch` (422) for the same key with a different request;
//! * `complete`/`abandon` only with the current token (stale tokens are refused,
//!   checked in `SETTLE_CHECK_ORDER`: the fence before the state);
//! * each call reads the clock inside its critical section (the grader moves the
//!   clock while calls run); memory is measured on the real heap;
//! * records are reaped after retention; scopes never see each other's keys;
//! * under N concurrent identical requests, exactly one executes.
//!
//! Level 5 puts the store on Redis ([`RedisStore`], see `RedisIdempotencyStore`): one
//! Lua script per call, `{namespace}` hash tags, a timeout on every call, and fencing
//! tokens that keep increasing even if Redis loses its data.
//!
//! Levels: L1 lifecycle, L2 leases, L3 threads, L4 memory, L5 Redis.
//! Run `cargo grade` (L5 needs `redis-server` on the PATH, or `REDIS_URL`).

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

/// Your Redis-backed store (level 5). Replace the fields with whatever you need.
pub struct RedisStore {
    _todo: PhantomData<(RedisStoreConfig, SharedClock)>,
}

impl RedisIdempotencyStore for RedisStore {
    async fn connect(url: &str, config: RedisStoreConfig, clock: SharedClock) -> Result<Self, StoreUnavailable> {
        let _ = (url, config, clock);
        todo!("idempotency: RedisStore::connect")
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
