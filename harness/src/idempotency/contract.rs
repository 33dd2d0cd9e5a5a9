//! The contract of the idempotency exercise: the traits a learner implements
//! ([`IdempotencyStore`] in memory, [`RedisIdempotencyStore`] on Redis), the types in
//! their signatures and the bounds and orders their docs refer to. These doc comments
//! ARE the contract.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::linearizability::contention_point;

/// How long an executor holds a key, and how long records are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyConfig {
    lease: Duration,
    retention: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyConfigError {
    ZeroLease,
    ZeroRetention,
}

impl fmt::Display for IdempotencyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdempotencyConfigError::ZeroLease => write!(f, "the lease must be longer than zero"),
            IdempotencyConfigError::ZeroRetention => write!(f, "the retention must be longer than zero"),
        }
    }
}

impl std::error::Error for IdempotencyConfigError {}

impl IdempotencyConfig {
    pub fn new(lease: Duration, retention: Duration) -> Result<Self, IdempotencyConfigError> {
        if lease.is_zero() {
            return Err(IdempotencyConfigError::ZeroLease);
        }
        if retention.is_zero() {
            return Err(IdempotencyConfigError::ZeroRetention);
        }
        Ok(IdempotencyConfig { lease, retention })
    }
    pub fn lease(&self) -> Duration {
        self.lease
    }
    pub fn retention(&self) -> Duration {
        self.retention
    }
}

impl fmt::Debug for IdempotencyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store = Store::new(lease {:?}, retention {:?}), clock at t=0", self.lease, self.retention)
    }
}

/// A digest of the request (method, path, body): the same key with another
/// fingerprint is a client bug, not a retry.
///
/// Comparing or hashing one is a contention point: in concurrency cases it may yield
/// the thread, so a critical section split around the fingerprint check shows up.
#[derive(Clone, Copy, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        contention_point();
        self.0 == other.0
    }
}

impl Eq for Fingerprint {}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        contention_point();
        self.0.hash(state);
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fp{}", self.0)
    }
}

/// The response an executor stores, replayed to every retry. The body is bytes: any
/// byte values, empty or large, stored and replayed exactly.
///
/// Cloning one is a contention point (it may yield in concurrency cases), like
/// copying a real payload out of a store takes time.
#[derive(PartialEq, Eq, Hash)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Clone for Response {
    fn clone(&self) -> Self {
        contention_point();
        Response { status: self.status, body: self.body.clone() }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 24;
        let body = &self.body;
        match std::str::from_utf8(body) {
            Ok(text) if body.len() <= 2 * SHOWN => write!(f, "{} {text:?}", self.status),
            _ if body.len() <= SHOWN => write!(f, "{} b\"{}\"", self.status, body.escape_ascii()),
            _ => write!(
                f,
                "{} <{} bytes: b\"{}\"..b\"{}\">",
                self.status,
                body.len(),
                body[..8].escape_ascii(),
                body[body.len() - 8..].escape_ascii()
            ),
        }
    }
}

/// The right to execute a request, fenced by a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    pub token: u64,
}

/// What a request with an idempotency key should do.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Begin {
    /// Run it, then `complete` (or `abandon`) with this lease's token.
    Execute(Lease),
    /// Already done: send this response again.
    Replay(Response),
    /// Another request with this key is running: answer 409, retry later.
    InFlight { retry_after: Duration },
    /// The key was used with a different request: answer 422.
    Mismatch,
}

impl Begin {
    /// The HTTP status to answer with right away, if any (`None`: execute).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Begin::Execute(_) => None,
            Begin::Replay(response) => Some(response.status),
            Begin::InFlight { .. } => Some(409),
            Begin::Mismatch => Some(422),
        }
    }
}

impl fmt::Debug for Begin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Begin::Execute(lease) => write!(f, "Execute(token {})", lease.token),
            Begin::Replay(response) => write!(f, "Replay({response:?})"),
            Begin::InFlight { retry_after } => write!(f, "InFlight(retry after {retry_after:?})"),
            Begin::Mismatch => write!(f, "Mismatch"),
        }
    }
}

/// Why `complete` or `abandon` was refused; nothing changed. When several apply, the
/// first in [`SETTLE_CHECK_ORDER`] is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseError {
    /// No record for the key (never begun, abandoned, or reaped).
    NoSuchRecord,
    /// The record belongs to another token: the lease was taken over (whether the new
    /// executor is still running or has completed), or the token was never this
    /// key's. The caller's response was not stored and never will be.
    StaleToken,
    /// The record was already completed under this very token (e.g. a retried
    /// `complete`): the response stored is this executor's own.
    AlreadyCompleted,
}

/// The order in which `complete` and `abandon` check their refusals: the first that
/// applies is the answer.
///
/// The fence comes before the state: an executor whose lease was taken over is told
/// [`LeaseError::StaleToken`] even once the new executor has completed, because
/// "already completed" would read as "your response is stored" and it is not (its
/// side effects may need undoing). [`LeaseError::AlreadyCompleted`] is therefore only
/// ever said to the token that completed the record, so a retried `complete` can
/// treat it as success. This is the fencing-token rule: a write is refused for its
/// stale token whatever the resource's state.
pub const SETTLE_CHECK_ORDER: [LeaseError; 3] =
    [LeaseError::NoSuchRecord, LeaseError::StaleToken, LeaseError::AlreadyCompleted];

/// What `complete(.., token, ..)` or `abandon(.., token)` answers for a record that is
/// absent (`None`) or held under `record_token`, completed or not: the first refusal
/// of [`SETTLE_CHECK_ORDER`] that applies, or `Ok` (the model decides with this).
pub fn settle_verdict(record: Option<(u64, bool)>, token: u64) -> Result<(), LeaseError> {
    for refusal in SETTLE_CHECK_ORDER {
        let applies = match (refusal, record) {
            (LeaseError::NoSuchRecord, record) => record.is_none(),
            (LeaseError::StaleToken, Some((current, _))) => current != token,
            (LeaseError::AlreadyCompleted, Some((_, completed))) => completed,
            (_, None) => false,
        };
        if applies {
            return Err(refusal);
        }
    }
    Ok(())
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::NoSuchRecord => write!(f, "no record for this key"),
            LeaseError::StaleToken => write!(f, "the lease was taken over by a newer executor"),
            LeaseError::AlreadyCompleted => write!(f, "the key already holds a response"),
        }
    }
}

impl std::error::Error for LeaseError {}

/// The contract. Implement it for your `Store` in `exercises/src/idempotency.rs`.
///
/// Records are per (scope, key): keys of different scopes never meet, whatever
/// characters they contain (any strings: empty, digits, separators, any Unicode).
/// At time `now`, `begin(scope, key, fingerprint)`:
/// 1. no record (or one past retention: reaped) → a new record in progress, leased
///    until `now + lease`: `Execute` with the next token;
/// 2. a record with another fingerprint → `Mismatch` (this wins over everything below);
/// 3. completed → `Replay` of its response (status and body bytes exactly as stored);
/// 4. in progress, lease not expired (`now < leased_until`) → `InFlight` with
///    `retry_after = leased_until − now` (to the nanosecond);
/// 5. in progress, lease expired → take over: `Execute` with the next token, leased
///    until `now + lease`; the old token is now stale.
///
/// Tokens come from one counter per store: 1, 2, 3, ... one per `Execute`.
///
/// `complete(.., token, response)`: for the record's current token, stores the response
/// (even after the lease expired, as long as nobody took over: the token is the
/// fence) and starts its retention (`now + retention`). `abandon(.., token)`: removes
/// the record at once (the key is new). Both refuse, changing nothing, with the first
/// of [`SETTLE_CHECK_ORDER`] that applies: `NoSuchRecord` (no live record),
/// `StaleToken` (the record is not this token's, completed or not), `AlreadyCompleted`
/// (this token already completed it).
///
/// Reaping: a completed record is gone once `now ≥ completed_at + retention`; one left
/// in progress once `now ≥ leased_until + retention`. Times saturate: a lease or
/// retention too long to add (e.g. `Duration::MAX`) never ends. Memory follows the live
/// records: at most [`MEMORY_PER_RECORD`] heap bytes per record within retention (for
/// short keys and bodies) plus [`MEMORY_SLACK`], measured on the real heap; expired
/// records may linger until a sweep.
///
/// Thread-safe and linearizable, with the clock part of the state: each call reads
/// the clock *inside* the critical section that reads and changes its record, so the
/// time a call acts at and its effect are one atomic step (the grader moves the clock
/// while calls on a key run). Calls on *different* keys may read the clock and take
/// their token in either order (a store may lock keys apart and count tokens with an
/// atomic), so linearizability across keys is graded with the clock standing still.
/// Under N concurrent identical requests, exactly one executes.
pub trait IdempotencyStore: Send + Sync + Sized {
    fn new(config: IdempotencyConfig, clock: SharedClock) -> Self;
    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin;
    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError>;
    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError>;
}

/// Heap bytes a store may hold per record within retention, for records whose scope,
/// key and body total at most 64 bytes (a map entry, its strings, the response, and
/// the table's spare capacity, up to twice the live records between sweeps).
pub const MEMORY_PER_RECORD: usize = 1024;
/// Heap bytes a store may hold whatever its records (empty tables, shards, buffers).
pub const MEMORY_SLACK: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// Prefix of every key: keys start with `{namespace:` (see [`RedisIdempotencyStore`]).
    pub namespace: String,
    /// Longest wait for Redis on one call, connecting included.
    pub timeout: Duration,
    pub records: IdempotencyConfig,
}

/// Redis did not answer in time or the connection failed: answer 503, retry later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUnavailable(pub String);

impl fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "idempotency store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreUnavailable {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleError {
    Lease(LeaseError),
    Unavailable(StoreUnavailable),
}

/// The distributed contract: [`IdempotencyStore`]'s semantics, shared by every
/// instance on the same Redis (one server, or a Redis Cluster) and namespace.
/// Implement it for `RedisStore` in `exercises/src/idempotency.rs`.
///
/// * One round trip per call, which reads and changes a record atomically (on a
///   cluster, `complete` adds one `WAIT`: see below).
/// * **Keys are tagged by record**: every key a record uses (the record, its fence)
///   starts with `{namespace:` and carries one hash tag naming the namespace, the scope
///   and the key, so (scope, key) is encoded injectively, a record's keys share a slot,
///   and records spread over a cluster's masters ([`record_tag`] is one such tag).
///   Nothing namespace-wide: a key shared by all records (a token counter) would put
///   every call on one node, or fail with CROSSSLOT next to record-tagged keys.
/// * Time is the caller's clock in whole microseconds; leases and retentions up to
///   [`REDIS_MAX_DURATION`] (Lua numbers are doubles).
/// * Every key a record uses expires in Redis (it has a TTL), no earlier than
///   the record is reaped (an in-progress record: `leased_until + retention`, not just
///   the lease; a completed one: `completed_at + retention`) and at most
///   [`REDIS_EXPIRY_GRACE`] plus that lifetime again later. Redis expires keys in real
///   time, so a key that expires early loses a record the contract still holds (a
///   retry would execute twice).
/// * **Fencing tokens strictly increase per record** (scope, key), across takeovers,
///   abandons and reaping, **even if Redis loses its data** (a crash without
///   persistence, a failover): a token from before the loss must never match a record
///   made after it. The grader's clock moves on by at least an outage's length, as
///   real time does, so seeding a record's tokens from the clock is enough. Tokens of
///   different records may be equal: a token is only ever presented for the record it
///   was issued for (the Redis level never does otherwise).
/// * Redis down or slow: each call returns `Unavailable` within `timeout` (plus
///   scheduling) and works again once Redis is back.
/// * **On a cluster** (`connect_cluster`), replication is asynchronous:
///   - `complete` answers `Ok` (or, retried, `AlreadyCompleted`) only once a replica
///     acknowledged the write (`WAIT 1`
///     on the record's master, within the timeout; else `Unavailable`, the outcome
///     unknown: a retried `complete` tells). A master left without replicas thus
///     refuses completes, as Redis's own `min-replicas-to-write` would. A stored response then survives the
///     failover of its master, so a key never executes again after `Ok`.
///   - `begin`'s lease is not waited for: a failover may lose it, and then a retry
///     executes the request a second time. The fence keeps that safe: the first
///     executor's `complete` is refused (`NoSuchRecord` or `StaleToken`), so never
///     two executors complete one key.
///   - a master down: calls on its records return `Unavailable` within the timeout;
///     others keep working; once its replica is promoted, calls work again within
///     [`CLUSTER_RECOVERY`](crate::rate_limit::CLUSTER_RECOVERY).
///   - slots may move while calls run (MOVED, ASK, TRYAGAIN): calls keep working.
pub trait RedisIdempotencyStore: Send + Sync + Sized {
    fn connect(
        url: &str,
        config: RedisStoreConfig,
        clock: SharedClock,
    ) -> impl Future<Output = Result<Self, StoreUnavailable>> + Send;
    /// Connects to a Redis Cluster through the given seed nodes' URLs.
    fn connect_cluster(
        nodes: &[String],
        config: RedisStoreConfig,
        clock: SharedClock,
    ) -> impl Future<Output = Result<Self, StoreUnavailable>> + Send;
    fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Result<Begin, StoreUnavailable>> + Send;
    fn complete(
        &self,
        scope: &str,
        key: &str,
        token: u64,
        response: Response,
    ) -> impl Future<Output = Result<(), SettleError>> + Send;
    fn abandon(&self, scope: &str, key: &str, token: u64) -> impl Future<Output = Result<(), SettleError>> + Send;
}

/// The hash tag of a record's keys, `{namespace:<scope length>:<scope>:<key>}` with
/// `\\` written `\\\\` and `}` written `\\)`: injective (the length separates scope
/// from key), and no scope or key can close the tag early. Given to learners; any
/// injective encoding with these properties is as good.
pub fn record_tag(namespace: &str, scope: &str, key: &str) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('}', "\\)");
    format!("{{{namespace}:{}:{}:{}}}", scope.len(), escape(scope), escape(key))
}

/// The longest lease or retention the Redis level is graded with: 2^50 µs (~35 years),
/// so that times stay exact as Lua doubles.
pub const REDIS_MAX_DURATION: Duration = Duration::from_micros(1 << 50);

/// How much longer than its record a Redis key may live, on top of the record's own
/// remaining lifetime (a margin for clock skew between instances; not an excuse for a
/// TTL in the wrong unit).
pub const REDIS_EXPIRY_GRACE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::model::response;

    #[test]
    fn http_statuses_and_config_errors() {
        assert_eq!(Begin::InFlight { retry_after: Duration::ZERO }.http_status(), Some(409));
        assert_eq!(Begin::Mismatch.http_status(), Some(422));
        assert_eq!(Begin::Replay(response(1)).http_status(), Some(201));
        assert_eq!(Begin::Execute(Lease { token: 1 }).http_status(), None);
        assert_eq!(
            IdempotencyConfig::new(Duration::ZERO, Duration::from_secs(1)),
            Err(IdempotencyConfigError::ZeroLease)
        );
        assert_eq!(
            IdempotencyConfig::new(Duration::from_secs(1), Duration::ZERO),
            Err(IdempotencyConfigError::ZeroRetention)
        );
    }
}
