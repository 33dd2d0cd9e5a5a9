//! Exercise: an idempotency-key store (the server side of safe retries).
//!
//! Implement [`IdempotencyStore`] for [`Store`]. The full contract is on the trait in
//! `harness/src/idempotency.rs`; in short, `begin(scope, key, fingerprint)` answers:
//! * `Execute(lease)` for a new key (or one whose executor's lease expired: take over
//!   with a higher fencing token);
//! * `Replay(response)` once completed; `InFlight` (409) while another executes;
//!   `Mismatch` (422) for the same key with a different request;
//! * `complete`/`abandon` only with the current token (stale tokens are refused);
//! * records are reaped after retention; scopes never see each other's keys;
//! * under N concurrent identical requests, exactly one executes.
//!
//! Levels: L1 lifecycle, L2 leases, L3 threads, L4 memory. Run `cargo grade`.

use std::marker::PhantomData;

use harness::clock::SharedClock;
use harness::idempotency::{Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, LeaseError, Response};

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

    fn tracked_records(&self) -> usize {
        todo!("idempotency: tracked_records")
    }
}
