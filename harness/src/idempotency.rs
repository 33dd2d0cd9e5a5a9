//! Exercise: an idempotency-key store, the server side of "retry safely": the first
//! request with a key executes, retries replay its stored response. Holds the contract
//! ([`IdempotencyStore`]), the model and the graded suite. Semantics:
//! `shared/spec/others.md`, restated on the trait.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use crate::clock::{ManualClock, SharedClock, Stopwatch, Timestamp};
use crate::heap::{show_bytes, HeapMeter};
use crate::isolation::trying;
use crate::linearizability::{check_histories, contention_point, set_forced_yields, HistoryBudget, SplitMix};
use crate::redis_server::{
    check_namespace_keys, fresh_namespace, runtime, within_reconnect_window, CommandCounter, RedisServer, CALL_TIMEOUT,
    OUTAGE_CALL_TIMEOUT,
};
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{
    guarded, with_hint, Case, CaseError, CaseResult, Level, Panic, QUICK_DEADLINE as QUICK,
    THREADED_DEADLINE as THREADED,
};

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

/// The hint for a refusal other than the model's: the order, from [`SETTLE_CHECK_ORDER`].
fn settle_order_hint() -> &'static str {
    static HINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HINT.get_or_init(|| {
        format!(
            "complete and abandon refuse with the first that applies of {SETTLE_CHECK_ORDER:?} (SETTLE_CHECK_ORDER): \
             no live record; the record is not this token's (taken over, even if the new executor has completed); \
             this token already completed it."
        )
    })
}

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

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// A record in the model. Responses are kept by number (see [`response`]) and
/// fingerprints as the op's `u8`, so the linearizability search clones and compares
/// plain numbers, never hitting the contention points of [`Response`]/[`Fingerprint`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum State {
    InProgress { token: u64, leased_until: Timestamp },
    Completed { token: u64, response: u16, until: Timestamp },
}

impl State {
    /// When the record is reaped.
    fn end(&self, retention: Duration) -> Timestamp {
        match self {
            State::InProgress { leased_until, .. } => *leased_until + retention,
            State::Completed { until, .. } => *until,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Model {
    config: IdempotencyConfig,
    now: Timestamp,
    last_token: u64,
    records: BTreeMap<u16, (u8, State)>,
}

impl Model {
    /// Records only expire when time moves, so the model reaps on `Advance` alone.
    fn reap(&mut self) {
        let (now, retention) = (self.now, self.config.retention);
        self.records.retain(|_, (_, state)| now < state.end(retention));
    }

    fn begin(&mut self, id: u16, fingerprint: u8) -> Begin {
        let (now, lease) = (self.now, self.config.lease);
        match self.records.get(&id) {
            Some((fp, _)) if *fp != fingerprint => Begin::Mismatch,
            Some((_, State::Completed { response: r, .. })) => Begin::Replay(response(*r)),
            Some((_, State::InProgress { leased_until, .. })) if now < *leased_until => {
                Begin::InFlight { retry_after: leased_until.saturating_duration_since(now) }
            }
            _ => {
                self.last_token += 1;
                let state = State::InProgress { token: self.last_token, leased_until: now + lease };
                self.records.insert(id, (fingerprint, state));
                Begin::Execute(Lease { token: self.last_token })
            }
        }
    }

    /// The checks shared by `complete` and `abandon`, in [`SETTLE_CHECK_ORDER`].
    fn holder(&self, id: u16, token: u64) -> Result<(), LeaseError> {
        let record = self.records.get(&id).map(|(_, state)| match state {
            State::InProgress { token, .. } => (*token, false),
            State::Completed { token, .. } => (*token, true),
        });
        settle_verdict(record, token)
    }
}

/// One call, or a step of the test's clock. Ids index [`IDS`] (and past it, the
/// generated ids of [`id`]); responses are numbered ([`response`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Begin { id: u16, fingerprint: u8 },
    Complete { id: u16, token: u64, response: u16 },
    Abandon { id: u16, token: u64 },
    Advance(Duration),
}

/// (scope, key) pairs over the whole domain: each pair below collides with another
/// under some naive encoding — joined with ':' (2/3), concatenated (4/5, 8/9),
/// combined order-blind, e.g. hash(scope) ^ hash(key) (0/6) — and 7 is non-ASCII.
const IDS: [(&str, &str); 10] = [
    ("tenant-a", "order-1"),
    ("tenant-b", "order-1"),
    ("t:x", "y"),
    ("t", "x:y"),
    ("12", "3"),
    ("1", "23"),
    ("order-1", "tenant-a"),
    ("ünïcødé", "ключ-🔑"),
    ("", "0"),
    ("0", ""),
];

/// The (scope, key) of id `index`: [`IDS`], then generated ids with digits and Unicode
/// (the housekeeping case uses thousands).
fn id(index: u16) -> (String, String) {
    match IDS.get(usize::from(index)) {
        Some((scope, key)) => (scope.to_string(), key.to_string()),
        None => (format!("s{}", index % 3), format!("k{index}-ключ")),
    }
}

/// Bodies larger than this are "large" (one response in six): 64 KiB and a bit.
const LARGE_BODY: usize = 65_537;

/// Response number `n`: statuses from 200 to 500, bodies empty, text, every byte
/// value, invalid UTF-8 with NULs and CRLFs, or large (`n % 6 == 5`).
fn response(n: u16) -> Response {
    const STATUSES: [u16; 7] = [200, 201, 202, 204, 400, 409, 500];
    let seed = n as usize;
    let body = match n % 6 {
        0 => Vec::new(),
        1 | 4 => format!("response #{n}").into_bytes(),
        2 => (0..=255u8).cycle().skip(seed % 256).take(256 + seed % 7).collect(),
        3 => vec![0xff, 0x00, b'\r', b'\n', 0xfe, n as u8, 0xc3, 0x28],
        _ => (0..LARGE_BODY).map(|i| (i.wrapping_mul(31) ^ seed) as u8).collect(),
    };
    Response { status: STATUSES[seed % STATUSES.len()], body }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Begin { id: i, fingerprint } => {
                let (s, k) = id(*i);
                write!(f, "begin({s:?}, {k:?}, fp{fingerprint})")
            }
            Op::Complete { id: i, token, response: r } => {
                let (s, k) = id(*i);
                write!(f, "complete({s:?}, {k:?}, token {token}, {:?})", response(*r))
            }
            Op::Abandon { id: i, token } => {
                let (s, k) = id(*i);
                write!(f, "abandon({s:?}, {k:?}, token {token})")
            }
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    Began(Begin),
    Done(Result<(), LeaseError>),
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Began(b) => write!(f, "{b:?}"),
            Output::Done(r) => write!(f, "{r:?}"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

struct IdempotencySpec;

impl Spec for IdempotencySpec {
    type Config = IdempotencyConfig;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &IdempotencyConfig) -> Model {
        Model { config: *config, now: Timestamp::ZERO, last_token: 0, records: BTreeMap::new() }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        use Begin::*;
        Some(match (op, expected, actual) {
            (Op::Advance(_), ..) => return None,
            (Op::Begin { .. }, Output::Began(Mismatch), _) => {
                "A live record with another fingerprint answers Mismatch, before anything else (in flight, completed, \
                 lease expired): same scope and key, different request."
            }
            (Op::Begin { .. }, _, Output::Began(Mismatch)) => {
                "Mismatch only for a live record of this very (scope, key) with another fingerprint: keys of different \
                 scopes never meet (encode the pair injectively), and a record past retention, or abandoned, is gone."
            }
            (Op::Begin { .. }, Output::Began(Execute(_)), Output::Began(Execute(_))) => {
                "Tokens come from one counter per store, 1, 2, 3, ...: one per Execute, over all keys (a takeover too)."
            }
            (Op::Begin { .. }, Output::Began(Execute(_)), _) => {
                "This call must execute: no live record (never begun, abandoned, or reaped once now ≥ completed_at + \
                 retention, or ≥ leased_until + retention if never completed), or a lease that has expired \
                 (now ≥ leased_until: take over with a new token)."
            }
            (Op::Begin { .. }, Output::Began(InFlight { .. }), Output::Began(InFlight { .. })) => {
                "retry_after is exactly leased_until − now, to the nanosecond (no rounding to a unit)."
            }
            (Op::Begin { .. }, Output::Began(InFlight { .. }), _) => {
                "The record is in progress and its lease runs until leased_until = began_at + lease (exclusive, \
                 saturating: Duration::MAX never ends): answer InFlight."
            }
            (Op::Begin { .. }, Output::Began(Replay(_)), Output::Began(Replay(_))) => {
                "Replay exactly what was completed: the status, and the body's bytes (any byte values, empty or large)."
            }
            (Op::Begin { .. }, ..) => {
                "A completed record replays its response until completed_at + retention (exclusive, saturating), \
                 whoever asks with the same fingerprint."
            }
            (Op::Complete { .. } | Op::Abandon { .. }, Output::Done(Err(_)), Output::Done(Err(_))) => settle_order_hint(),
            (Op::Complete { .. } | Op::Abandon { .. }, Output::Done(Ok(())), _) => {
                "The current token may settle its record, even after its lease expired, as long as nobody took over and \
                 the record is within leased_until + retention."
            }
            (Op::Complete { .. } | Op::Abandon { .. }, ..) => {
                "Only the record's current token may settle it: refuse a stale token (the lease was taken over), a record \
                 already completed, and an absent one; refusing changes nothing."
            }
        })
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Begin { id, fingerprint } => Output::Began(model.begin(*id, *fingerprint)),
            Op::Complete { id, token, response: r } => Output::Done(model.holder(*id, *token).map(|()| {
                let until = model.now + model.config.retention;
                let record = model.records.get_mut(id).expect("holder checked it exists");
                record.1 = State::Completed { token: *token, response: *r, until };
            })),
            Op::Abandon { id, token } => Output::Done(model.holder(*id, *token).map(|()| {
                model.records.remove(id);
            })),
            Op::Advance(d) => {
                model.now = model.now.advanced(*d);
                model.reap();
                Output::Nothing
            }
        }
    }
}

fn apply(store: &dyn ErasedStore, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Begin { id: i, fingerprint } => {
            let (s, k) = id(*i);
            Output::Began(store.begin(&s, &k, Fingerprint(u64::from(*fingerprint))))
        }
        Op::Complete { id: i, token, response: r } => {
            let (s, k) = id(*i);
            Output::Done(store.complete(&s, &k, *token, response(*r)))
        }
        Op::Abandon { id: i, token } => {
            let (s, k) = id(*i);
            Output::Done(store.abandon(&s, &k, *token))
        }
        Op::Advance(d) => {
            clock.advance(*d);
            Output::Nothing
        }
    }
}

fn build(make: Factory, config: IdempotencyConfig, clock: &ManualClock) -> Result<Arc<dyn ErasedStore>, CaseError> {
    guarded(|| make(config, clock.shared())).map_err(|p| p.into_case_error(format!("{config:?}")))
}

fn replay_on(make: Factory, config: &IdempotencyConfig, ops: &[Op]) -> CaseResult {
    replay::<IdempotencySpec, _>(config, ops, |config| {
        let clock = ManualClock::new();
        let store = make(*config, clock.shared());
        move |op: &Op| apply(store.as_ref(), &clock, op)
    })
}

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

fn config(lease_s: u64, retention_s: u64) -> IdempotencyConfig {
    IdempotencyConfig::new(Duration::from_secs(lease_s), Duration::from_secs(retention_s)).expect("valid config")
}

/// Lease 2s, retention 4s, clock steps of 3s: one step expires a lease, two reap.
fn short_config() -> IdempotencyConfig {
    config(2, 4)
}

fn letters(ids: &[u16]) -> Vec<Op> {
    let mut ops = Vec::new();
    for &i in ids {
        ops.push(Op::Begin { id: i, fingerprint: 1 });
        ops.push(Op::Begin { id: i, fingerprint: 2 });
        for token in 1..=2 {
            ops.push(Op::Complete { id: i, token, response: 0 });
            ops.push(Op::Abandon { id: i, token });
        }
    }
    ops.push(Op::Advance(Duration::from_secs(3)));
    ops
}

/// Numbers each complete's response by its step, so replays are told apart, with
/// every kind of body [`response`] makes but the large one: building 64 KiB in each of
/// the exhaustive cases' short sequences would cost seconds (the edges and the random
/// sequences have large bodies, see [`numbered_all`]).
fn numbered(ops: &[Op]) -> Vec<Op> {
    let mut ops = numbered_all(ops);
    for op in &mut ops {
        if let Op::Complete { response, .. } = op {
            if *response % 6 == 5 {
                *response += 601; // the next kind: an empty body
            }
        }
    }
    ops
}

/// Numbers each complete's response by its step, every kind of body included.
fn numbered_all(ops: &[Op]) -> Vec<Op> {
    let mut ops = ops.to_vec();
    for (i, op) in ops.iter_mut().enumerate() {
        if let Op::Complete { response, .. } = op {
            *response = i as u16 + 1;
        }
    }
    ops
}

/// Time scales of the random sequences, in nanoseconds: odd nanoseconds, sub-µs,
/// µs, sub-ms, ms and seconds, so no attempt can round time to a unit.
const TIME_UNITS: [u64; 6] = [1, 999, 1_000, 333_333, 1_000_000, 1_000_000_000];

/// A lease and a retention at one time scale, each sometimes `Duration::MAX` (never ends).
fn random_config() -> impl Strategy<Value = (IdempotencyConfig, u64)> {
    let unit = proptest::sample::select(&TIME_UNITS[..]);
    let span = |max: u64| (1u64..=max, 0u64..=999, 0u8..8);
    (unit, span(3), span(6)).prop_map(|(unit, (l, l_odd, l_max), (r, r_odd, r_max))| {
        let pick = |n: u64, odd: u64, max: u8| {
            if max == 0 {
                Duration::MAX
            } else {
                Duration::from_nanos(n * unit + odd % unit)
            }
        };
        let config = IdempotencyConfig::new(pick(l, l_odd, l_max), pick(r, r_odd, r_max)).expect("nonzero");
        (config, unit)
    })
}

fn random_ops() -> impl Strategy<Value = (IdempotencyConfig, Vec<Op>)> {
    random_config().prop_flat_map(|(config, unit)| {
        let id = 0u16..IDS.len() as u16;
        let op = prop_oneof![
            4 => (id.clone(), 1u8..=2).prop_map(|(id, fingerprint)| Op::Begin { id, fingerprint }),
            3 => (id.clone(), 1u64..=6).prop_map(|(id, token)| Op::Complete { id, token, response: 0 }),
            1 => (id, 1u64..=6).prop_map(|(id, token)| Op::Abandon { id, token }),
            // Steps of 0.001 to 4 units, plus odd nanoseconds: boundaries get hit.
            2 => (1u64..=4000, 0u64..=3).prop_map(move |(n, odd)| {
                Op::Advance(Duration::from_nanos((n * unit).div_ceil(1000) + odd))
            }),
        ];
        proptest::collection::vec(op, 1..=40).prop_map(move |ops| (config, numbered_all(&ops)))
    })
}

fn edge_scenarios() -> Vec<(IdempotencyConfig, Vec<Op>)> {
    use Op::*;
    let s = Duration::from_secs;
    let c = config(10, 60);
    vec![
        // Scopes never meet, even when "scope:key" would collide.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Begin { id: 1, fingerprint: 2 },
                Complete { id: 0, token: 1, response: 3 },
                Begin { id: 1, fingerprint: 2 },
                Begin { id: 2, fingerprint: 1 },
                Begin { id: 3, fingerprint: 2 },
                Complete { id: 3, token: 4, response: 7 },
                Begin { id: 2, fingerprint: 1 },
                Begin { id: 3, fingerprint: 2 },
            ],
        ),
        // A different fingerprint is a mismatch, while in flight and after completion.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Begin { id: 0, fingerprint: 2 },
                Advance(s(11)),
                Begin { id: 0, fingerprint: 2 },
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 2, response: 6 },
                Begin { id: 0, fingerprint: 2 },
            ],
        ),
        // Abandon releases at once: the next begin executes with a new token.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Abandon { id: 0, token: 1 },
                Begin { id: 0, fingerprint: 2 },
                Abandon { id: 0, token: 1 },
                Complete { id: 0, token: 2, response: 5 },
                Begin { id: 0, fingerprint: 2 },
            ],
        ),
        // Takeover after lease expiry: the old executor's complete is stale; the stored response is the new one's.
        // Once the new executor completed, the old token is still StaleToken (the fence comes first:
        // SETTLE_CHECK_ORDER) and only the completing token hears AlreadyCompleted.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(s(10)),
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 4 },
                Complete { id: 0, token: 2, response: 5 },
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 6 },
                Complete { id: 0, token: 2, response: 7 },
                Abandon { id: 0, token: 1 },
                Abandon { id: 0, token: 2 },
                Complete { id: 0, token: 9, response: 8 },
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // With the lease expired but no takeover, the current token may still complete.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(s(30)),
                Complete { id: 0, token: 1, response: 3 },
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // InFlight says exactly how long the lease has left.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(Duration::from_millis(9_999)),
                Begin { id: 0, fingerprint: 1 },
                Advance(Duration::from_millis(1)),
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // Retention: at exactly completed_at + retention the key is new; a forgotten in-progress record too.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 3 },
                Advance(s(59)),
                Begin { id: 0, fingerprint: 2 },
                Advance(s(1)),
                Begin { id: 0, fingerprint: 2 },
                Advance(s(70)),
                Complete { id: 0, token: 2, response: 9 },
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // Sub-millisecond lease and retention, odd nanoseconds: retry_after to the nanosecond,
        // and every boundary exact.
        (
            IdempotencyConfig::new(Duration::from_nanos(1_500_001), Duration::from_nanos(999_999)).expect("nonzero"),
            vec![
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(333_333)),
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(1_166_667)),
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(1)),
                Begin { id: 7, fingerprint: 1 },
                Complete { id: 7, token: 2, response: 2 },
                Advance(Duration::from_nanos(999_998)),
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(1)),
                Begin { id: 7, fingerprint: 2 },
            ],
        ),
        // Leases and retentions too long to add to a time (Duration::MAX) saturate: they never end.
        (
            IdempotencyConfig::new(Duration::MAX, Duration::MAX).expect("nonzero"),
            vec![
                Begin { id: 8, fingerprint: 1 },
                Advance(s(3_000_000_000)),
                Begin { id: 8, fingerprint: 1 },
                Complete { id: 8, token: 1, response: 3 },
                Advance(s(3_000_000_000)),
                Begin { id: 8, fingerprint: 1 },
                Begin { id: 9, fingerprint: 1 },
                Abandon { id: 9, token: 2 },
                Begin { id: 9, fingerprint: 2 },
            ],
        ),
        (
            IdempotencyConfig::new(Duration::from_millis(1), Duration::MAX).expect("nonzero"),
            vec![
                Begin { id: 4, fingerprint: 1 },
                Advance(s(3_000_000_000)),
                Begin { id: 5, fingerprint: 1 },
                Begin { id: 4, fingerprint: 1 },
                Complete { id: 4, token: 1, response: 1 },
                Complete { id: 4, token: 3, response: 2 },
                Advance(s(3_000_000_000)),
                Begin { id: 4, fingerprint: 1 },
                Complete { id: 5, token: 2, response: 4 },
            ],
        ),
        // Bodies are bytes: empty, every byte value, invalid UTF-8, 64 KiB; statuses as given.
        (
            c,
            (0..6u16)
                .flat_map(|n| {
                    let id = n + 2;
                    let token = u64::from(n) + 1;
                    [
                        Begin { id, fingerprint: 1 },
                        Complete { id, token, response: 12 + n },
                        Begin { id, fingerprint: 1 },
                    ]
                })
                .collect(),
        ),
        // complete/abandon on unknown keys, and a response only after execution began.
        (
            c,
            vec![
                Complete { id: 1, token: 1, response: 2 },
                Abandon { id: 1, token: 1 },
                Begin { id: 1, fingerprint: 1 },
                Complete { id: 1, token: 1, response: 5 },
                Abandon { id: 1, token: 1 },
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency and memory
// ---------------------------------------------------------------------------------

/// Histories per shape (threads, calls per thread, count): fixed counts, never time.
/// (Each forced yield can cost a scheduler timeslice on a busy machine: budgets are
/// sized to stay under ~10s on the reference with both cores taken by other work.)
const HISTORIES: HistoryBudget =
    HistoryBudget { rounds: &[(2, 3, 200), (2, 5, 200), (3, 4, 250), (4, 5, 100)], seed: 0x1d };
/// The same for the histories on one key with the clock moving: two or three threads
/// with longer histories, where a stale time read shows up most often.
const CLOCK_HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 200), (2, 6, 200), (3, 5, 200)], seed: 0xc10c };

/// A store on a fresh clock. With forced yields on, every read of a `ManualClock`
/// yields right after it, so a call that reads the time before taking its lock is
/// paused between its time and its effect.
fn build_yielding(make: Factory, config: IdempotencyConfig) -> Result<(ManualClock, Arc<dyn ErasedStore>), CaseError> {
    let clock = ManualClock::new();
    let store = build(make, config, &clock)?;
    Ok((clock, store))
}

/// A random call on one of `ids`; with `clock_steps`, one call in four moves the clock.
fn random_call(rng: &mut SplitMix, thread: usize, ids: &[u16], clock_steps: bool) -> Op {
    let id = ids[rng.below(ids.len())];
    let token = 1 + rng.below(4) as u64;
    match rng.below(if clock_steps { 8 } else { 6 }) {
        0..=2 => Op::Begin { id, fingerprint: 1 + (rng.below(5) == 0) as u8 },
        3 | 4 => {
            // Small bodies only: the search clones model states, not responses.
            let n = thread as u16 * 12 + rng.below(12) as u16;
            Op::Complete { id, token, response: if n % 6 == 5 { n + 1 } else { n } }
        }
        5 => Op::Abandon { id, token },
        _ => Op::Advance(Duration::from_secs(1 + rng.below(2) as u64)),
    }
}

/// Histories of calls drawn by `pick`, each on a fresh store and clock.
fn linearizable_histories(
    make: Factory,
    budget: HistoryBudget,
    pick: impl Fn(&mut SplitMix, usize) -> Op,
) -> CaseResult {
    set_forced_yields(true);
    let config = config(2, 3);
    let result = check_histories::<IdempotencySpec, _>(
        &config,
        budget,
        pick,
        || build_yielding(make, config),
        |(clock, store), op| apply(store.as_ref(), clock, op),
    );
    set_forced_yields(false);
    result
}

/// Calls on three keys (one non-ASCII, two that collide when joined with ':'), the
/// clock standing still: each call is one atomic step, tokens included.
fn concurrent_case(make: Factory) -> CaseResult {
    linearizable_histories(make, HISTORIES, |rng, thread| random_call(rng, thread, &[0, 2, 3, 7], false))
}

/// Calls on one key while the clock moves: leases expire and are taken over
/// mid-history, retention ends mid-history, and each call's time is its effect's.
/// (One key: calls on different keys may take their time and their token in either
/// order, see the trait.)
fn clock_moves(make: Factory) -> CaseResult {
    linearizable_histories(make, CLOCK_HISTORIES, |rng, thread| random_call(rng, thread, &[7], true))
}

/// Leases expire and are taken over while identical requests race: each executor's
/// work outlasts its lease (it moves the clock past the lease before completing), so
/// retries take over while it completes. Once a complete lands the key replays, so
/// exactly one complete lands, and it must be the newest executor's.
fn takeover_race(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let result = takeover_rounds(make);
    set_forced_yields(false);
    result
}

fn takeover_rounds(make: Factory) -> CaseResult {
    const THREADS: usize = 4;
    const TRIES: usize = 60;
    let lease = Duration::from_secs(1);
    for round in 0..40u32 {
        let (clock, store) =
            build_yielding(make, IdempotencyConfig::new(lease, Duration::from_secs(600)).expect("nonzero"))?;
        let key = format!("refund-{round}-🔁");
        trying(&format_args!(
            "{THREADS} threads: begin(\"pay\", {key:?}, fp3) until not InFlight; on Execute clock.advance(1s), then complete"
        ));
        let barrier = Barrier::new(THREADS);
        type Call = (Begin, Option<(u64, Result<(), LeaseError>)>);
        let outcomes: Vec<thread::Result<Vec<Call>>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, key, barrier, clock) = (&store, &key, &barrier, &clock);
                    s.spawn(move || {
                        barrier.wait();
                        // A client: retry after each 409 until answered (bounded), as a real one would.
                        let mut calls = Vec::new();
                        for i in 0..TRIES {
                            let answer = store.begin("pay", key, Fingerprint(3));
                            let executed = match &answer {
                                Begin::Execute(lease_) => {
                                    // The work takes longer than the lease.
                                    clock.advance(lease);
                                    thread::yield_now();
                                    let body = format!("t{t}-{i}").into_bytes();
                                    let done = store.complete("pay", key, lease_.token, Response { status: 200, body });
                                    Some((lease_.token, done))
                                }
                                _ => None,
                            };
                            let in_flight = matches!(answer, Begin::InFlight { .. });
                            calls.push((answer, executed));
                            if !in_flight {
                                break;
                            }
                            thread::yield_now();
                        }
                        calls
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut calls = Vec::new();
        for outcome in outcomes {
            calls.extend(outcome.map_err(|p| {
                Panic::from_payload(p.as_ref())
                    .into_case_error(format!("begin/complete of {key:?} on {THREADS} threads"))
            })?);
        }
        let landed: Vec<u64> = calls
            .iter()
            .filter_map(|(_, settled)| settled.as_ref().filter(|(_, r)| r.is_ok()).map(|(t, _)| *t))
            .collect();
        let newest =
            calls.iter().filter_map(|(b, _)| if let Begin::Execute(l) = b { Some(l.token) } else { None }).max();
        let final_answer = store.begin("pay", &key, Fingerprint(3));
        let executions: Vec<&(u64, Result<(), LeaseError>)> = calls.iter().filter_map(|(_, e)| e.as_ref()).collect();
        if landed.len() != 1 || landed.first() != newest.as_ref() || !matches!(final_answer, Begin::Replay(_)) {
            return Err(CaseError::failed(format!(
                "{THREADS} threads each sent begin(\"pay\", {key:?}, fp3), again after each InFlight (up to {TRIES} times; \
                 lease 1s, retention 600s); each executor moved the clock 1s (its work outlasted the lease) and then completed. \
                 Completes that landed, by token: {landed:?}; newest token executed: {newest:?}; then a retry got {final_answer:?}. \
                 Expected exactly one complete to land, the newest executor's (an older token is fenced off once a retry \
                 took over, and after a complete lands nobody executes again), then a Replay.\nexecutions (token, its complete) by thread: {executions:?}"
            )));
        }
    }
    Ok(())
}

/// N identical requests at once: exactly one executes; after it completes, all replay.
fn exactly_one_executes(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let result = exactly_one_executes_yielding(make);
    set_forced_yields(false);
    result
}

fn exactly_one_executes_yielding(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    let (_clock, store) = build_yielding(make, config(30, 300))?;
    for round in 0..50u32 {
        let key = format!("payment-{round}");
        let executed = AtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        let answers: Vec<thread::Result<Begin>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (store, key, executed, barrier) = (&store, &key, &executed, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let answer = store.begin("shop", key, Fingerprint(7));
                        if let Begin::Execute(lease) = &answer {
                            executed.fetch_add(1, Ordering::SeqCst);
                            // Simulate the work, then store the response.
                            thread::yield_now();
                            let _ = store.complete(
                                "shop",
                                key,
                                lease.token,
                                Response { status: 201, body: b"paid".to_vec() },
                            );
                        }
                        answer
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut kinds = Vec::new();
        for answer in answers {
            let answer = answer.map_err(|p| {
                Panic::from_payload(p.as_ref()).into_case_error("begin(\"shop\", key, fp7) on 8 threads")
            })?;
            kinds.push(answer);
        }
        let executed = executed.load(Ordering::SeqCst);
        let bad = kinds.iter().any(|b| matches!(b, Begin::Mismatch));
        if executed != 1 || bad {
            return Err(CaseError::failed(format!(
                "{THREADS} threads sent the same request (\"shop\", {key:?}, fp7) at once: {executed} executed (expected exactly 1); answers: {kinds:?}"
            )));
        }
        let after = store.begin("shop", &key, Fingerprint(7));
        if after != Begin::Replay(Response { status: 201, body: b"paid".to_vec() }) {
            return Err(CaseError::failed(format!(
                "after the executor completed, a retry of {key:?} got {after:?}, expected Replay(201 \"paid\")"
            )));
        }
    }
    Ok(())
}

/// Heap bytes a store may hold per record within retention, for records whose scope,
/// key and body total at most 64 bytes (a map entry, its strings, the response, and
/// the table's spare capacity, up to twice the live records between sweeps).
pub const MEMORY_PER_RECORD: usize = 1024;
/// Heap bytes a store may hold whatever its records (empty tables, shards, buffers).
pub const MEMORY_SLACK: usize = 1 << 20;

/// Unique keys keep arriving and completing: the real heap the store holds must follow
/// the records within retention, not every key ever seen.
fn memory_follows_retention(make: Factory) -> CaseResult {
    const PER_SECOND: usize = 1_000;
    const SECONDS: usize = 150;
    let (lease, retention) = (2usize, 5usize);
    let clock = ManualClock::new();
    let meter = HeapMeter::start();
    let store = build(make, config(lease as u64, retention as u64), &clock)?;
    // Completed records live `retention` seconds, those left in progress (a tenth)
    // `lease + retention`; +1 for the second being written.
    let live = (retention + 1) * PER_SECOND + (lease + retention + 1) * PER_SECOND / 10;
    let bound = live * MEMORY_PER_RECORD + MEMORY_SLACK;
    let mut key = String::with_capacity(64);
    for second in 0..SECONDS {
        for i in 0..PER_SECOND {
            key.clear();
            let _ = write!(key, "{second:04}-{i:04}-checkout-ключ-🔑-pay");
            match store.begin("api", &key, Fingerprint(1)) {
                Begin::Execute(lease) => {
                    if i % 10 != 0 {
                        // Most complete; a tenth are left in progress (the caller crashed).
                        let _ =
                            store.complete("api", &key, lease.token, Response { status: 200, body: b"ok".to_vec() });
                    }
                }
                other => {
                    return Err(CaseError::failed(format!(
                        "begin(\"api\", {key:?}, fp1) on a fresh key returned {other:?}"
                    )))
                }
            }
        }
        let held = meter.held();
        if held > bound {
            return Err(CaseError::failed(format!(
                "after {} unique keys ({PER_SECOND}/s, lease {lease}s, retention {retention}s, bodies of 2 bytes, keys of ~40), \
                 the store holds {} of heap: at most {live} records are within retention, so it may hold at most \
                 {live} × MEMORY_PER_RECORD ({}) + MEMORY_SLACK ({}) = {}. Something keeps every key ever seen \
                 (records never reaped, or a side index/intern pool never pruned)",
                (second + 1) * PER_SECOND,
                show_bytes(held),
                show_bytes(MEMORY_PER_RECORD),
                show_bytes(MEMORY_SLACK),
                show_bytes(bound)
            )));
        }
        clock.advance(Duration::from_secs(1));
    }
    drop(store);
    Ok(())
}

/// Keys per wave of the housekeeping case: enough that any sweep threshold is crossed.
const WAVE: u16 = 6_000;

/// Thousands of keys in every state (completed, abandoned, left in progress), the
/// clock moved across lease ends and retention ends, then every key read back: what
/// sweeps (housekeeping) removed must be exactly what had expired.
fn housekeeping(make: Factory) -> CaseResult {
    let config = config(2, 5);
    let clock = ManualClock::new();
    let store = build(make, config, &clock)?;
    let mut driver = Housekeeping {
        config,
        model: IdempotencySpec::model(&config),
        store,
        clock,
        log: Vec::new(),
        tokens: BTreeMap::new(),
    };
    let ms = Duration::from_millis;
    driver.write(0)?;
    driver.run(Op::Advance(ms(1_500)))?;
    driver.write(1)?;
    // t=2.5s: wave 0's leases have expired, its records are all within retention.
    driver.run(Op::Advance(ms(1_000)))?;
    driver.write(2)?;
    driver.read(0)?;
    // t=5s: wave 0's first completes end their retention exactly now.
    driver.run(Op::Advance(ms(2_500)))?;
    driver.write(0)?;
    driver.read(1)?;
    // t=7.5s: wave 1's records left in progress (leased until 3.5s) end at 8.5s.
    driver.run(Op::Advance(ms(2_500)))?;
    driver.read(2)?;
    driver.read(1)
}

/// The housekeeping case's replay: model and store side by side, every call logged.
struct Housekeeping {
    config: IdempotencyConfig,
    model: Model,
    store: Arc<dyn ErasedStore>,
    clock: ManualClock,
    log: Vec<(Op, Output)>,
    /// The last token each key executed with.
    tokens: BTreeMap<u16, u64>,
}

impl Housekeeping {
    fn run(&mut self, op: Op) -> CaseResult {
        let expected = IdempotencySpec::step(&mut self.model, &op);
        let actual = guarded(|| apply(self.store.as_ref(), &self.clock, &op))
            .map_err(|p| p.into_case_error(format!("{op:?}, after {} calls", self.log.len())))?;
        if let (Output::Began(Begin::Execute(lease)), Op::Begin { id, .. }) = (&expected, &op) {
            self.tokens.insert(*id, lease.token);
        }
        if actual != expected {
            return Err(housekeeping_report(&self.config, &self.log, &op, &actual, &expected));
        }
        self.log.push((op, actual));
        Ok(())
    }

    fn wave(n: u16) -> std::ops::Range<u16> {
        (10 + n * WAVE)..(10 + (n + 1) * WAVE)
    }

    /// Every key of wave `n` executes; by `id % 4` it is then completed, abandoned,
    /// left in progress or completed.
    fn write(&mut self, n: u16) -> CaseResult {
        for id in Self::wave(n) {
            self.run(Op::Begin { id, fingerprint: 1 })?;
            let token = self.tokens.get(&id).copied().unwrap_or(0);
            match id % 4 {
                1 => self.run(Op::Abandon { id, token })?,
                2 => {}
                _ => self.run(Op::Complete { id, token, response: id % 5 })?,
            }
        }
        Ok(())
    }

    /// Reads wave `n` back: a begin with the same fingerprint, with another one, or
    /// the last executor completing (late) and then a begin.
    fn read(&mut self, n: u16) -> CaseResult {
        for id in Self::wave(n) {
            match (id / 4) % 3 {
                0 => self.run(Op::Begin { id, fingerprint: 1 })?,
                1 => self.run(Op::Begin { id, fingerprint: 2 })?,
                _ => {
                    let token = self.tokens.get(&id).copied().unwrap_or(0);
                    self.run(Op::Complete { id, token, response: 4 })?;
                    self.run(Op::Begin { id, fingerprint: 1 })?;
                }
            }
        }
        Ok(())
    }
}

/// A housekeeping failure, shown as the calls on the key that differed (and the clock
/// steps): the other keys' thousands of calls only matter through the sweeps they set off.
fn housekeeping_report(
    config: &IdempotencyConfig,
    log: &[(Op, Output)],
    op: &Op,
    actual: &Output,
    expected: &Output,
) -> CaseError {
    let key_of = |op: &Op| match op {
        Op::Begin { id, .. } | Op::Complete { id, .. } | Op::Abandon { id, .. } => Some(*id),
        Op::Advance(_) => None,
    };
    let target = key_of(op);
    let mut text = format!("{config:?}\n");
    let mut others = 0usize;
    let flush = |text: &mut String, others: &mut usize| {
        if *others > 0 {
            let _ = writeln!(text, "        ... {others} calls on other keys ...");
            *others = 0;
        }
    };
    for (step, (past, output)) in log.iter().enumerate() {
        let key = key_of(past);
        if key.is_none() || key == target {
            flush(&mut text, &mut others);
            let _ = writeln!(text, "{:>6}. {past:?} -> {output:?}", step + 1);
        } else {
            others += 1;
        }
    }
    flush(&mut text, &mut others);
    let _ = writeln!(
        text,
        "{:>6}. {op:?} -> {actual:?}\n        expected {expected:?}   <-- first difference",
        log.len() + 1
    );
    let report = format!(
        "after {} calls on {} keys (enough to set off any sweep), the calls on this key disagree:\n{text}",
        log.len(),
        3 * WAVE
    );
    let sweep = "A sweep must remove exactly what has expired: an in-progress record lives until leased_until + \
                 retention (not just its lease), a completed one until completed_at + retention (end exclusive). \
                 Sweeping and reading a record must agree on that.";
    CaseError::failed(with_hint(report, sweep))
}

// ---------------------------------------------------------------------------------
// The distributed level: the same contract on Redis
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// Prefix of every key, and their Redis Cluster hash tag: `{namespace}:...`.
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
/// instance on the same Redis and namespace. Implement it for `RedisStore` in
/// `exercises/src/idempotency.rs`.
///
/// * One round trip per call: a Lua script reads and changes a record atomically.
///   Keys carry the hash tag `{namespace}`; (scope, key) is encoded injectively.
/// * Time is the caller's clock in whole microseconds; leases and retentions up to
///   [`REDIS_MAX_DURATION`] (Lua numbers are doubles).
/// * Every key a record uses expires in Redis (a TTL, e.g. `PEXPIRE`), no earlier than
///   the record is reaped (an in-progress record: `leased_until + retention`, not just
///   the lease; a completed one: `completed_at + retention`) and at most
///   [`REDIS_EXPIRY_GRACE`] plus that lifetime again later. Only the token counter may
///   live without expiry. Redis expires keys in real time, so a key that expires early
///   loses a record the contract still holds (a retry would execute twice).
/// * Fencing tokens strictly increase per namespace, **even if Redis loses its data**
///   (a crash without persistence): a token from before the loss must never match a
///   record made after it. (E.g. seed a missing counter from the clock.)
/// * Redis down or slow: each call returns `Unavailable` within `timeout` (plus
///   scheduling) and works again once Redis is back.
pub trait RedisIdempotencyStore: Send + Sync + Sized {
    fn connect(
        url: &str,
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

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

pub type RedisFactory = fn(
    String,
    RedisStoreConfig,
    SharedClock,
) -> BoxFuture<'static, Result<Arc<dyn ErasedRedisStore>, StoreUnavailable>>;

pub fn redis_factory<S: RedisIdempotencyStore + 'static>() -> RedisFactory {
    |url, config, clock| {
        Box::pin(async move {
            let store = S::connect(&url, config, clock).await?;
            Ok(Arc::new(store) as Arc<dyn ErasedRedisStore>)
        })
    }
}

/// The longest lease or retention the Redis level is graded with: 2^50 µs (~35 years),
/// so that times stay exact as Lua doubles.
pub const REDIS_MAX_DURATION: Duration = Duration::from_micros(1 << 50);

/// How much longer than its record a Redis key may live, on top of the record's own
/// remaining lifetime (a margin for clock skew between instances; not an excuse for a
/// TTL in the wrong unit).
pub const REDIS_EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// `d` rounded up to whole microseconds, at most [`REDIS_MAX_DURATION`].
fn redis_duration(d: Duration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)).min(REDIS_MAX_DURATION)
}

/// A scenario in whole microseconds within [`REDIS_MAX_DURATION`]: with the clock
/// starting at zero, every time the model sees is one Redis can be told exactly.
fn redis_scenario(config: &IdempotencyConfig, ops: &[Op]) -> (IdempotencyConfig, Vec<Op>) {
    let config = IdempotencyConfig::new(redis_duration(config.lease), redis_duration(config.retention))
        .expect("rounding up keeps durations nonzero");
    let ops = ops
        .iter()
        .map(|op| match op {
            Op::Advance(d) => Op::Advance(redis_duration(*d)),
            other => other.clone(),
        })
        .collect();
    (config, ops)
}

fn redis_config(records: IdempotencyConfig) -> RedisStoreConfig {
    RedisStoreConfig { namespace: fresh_namespace("idem"), timeout: CALL_TIMEOUT, records }
}

fn connect(
    rt: &tokio::runtime::Runtime,
    make: RedisFactory,
    url: &str,
    config: RedisStoreConfig,
    clock: &ManualClock,
) -> Result<Arc<dyn ErasedRedisStore>, CaseError> {
    rt.block_on(make(url.to_string(), config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect({url}): {e}")))
}

/// Redis tokens only have to increase, not to count from 1: the replay driver shows
/// the n-th token issued as n (and a token that fails to increase as 0), and maps the
/// model's token n back to the n-th real one.
#[derive(Default)]
struct TokenOrder {
    issued: Vec<u64>,
}

impl TokenOrder {
    fn rank(&mut self, token: u64) -> u64 {
        if self.issued.last().is_some_and(|&last| token <= last) {
            return 0;
        }
        self.issued.push(token);
        self.issued.len() as u64
    }

    fn real(&self, model_token: u64) -> u64 {
        // A token never issued stays one: far above any real token.
        usize::try_from(model_token)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.issued.get(i).copied())
            .unwrap_or(u64::MAX - model_token)
    }
}

fn unavailable_in_replay(e: impl fmt::Display) -> ! {
    panic!("Redis unavailable during a replay: {e}")
}

fn apply_redis(
    rt: &tokio::runtime::Runtime,
    store: &dyn ErasedRedisStore,
    clock: &ManualClock,
    tokens: &mut TokenOrder,
    op: &Op,
) -> Output {
    let settled = |r: Result<(), SettleError>| match r {
        Err(SettleError::Unavailable(e)) => unavailable_in_replay(e),
        Err(SettleError::Lease(e)) => Output::Done(Err(e)),
        Ok(()) => Output::Done(Ok(())),
    };
    match op {
        Op::Begin { id: i, fingerprint } => {
            let (s, k) = id(*i);
            match rt.block_on(store.begin(&s, &k, Fingerprint(u64::from(*fingerprint)))) {
                Ok(Begin::Execute(lease)) => Output::Began(Begin::Execute(Lease { token: tokens.rank(lease.token) })),
                Ok(other) => Output::Began(other),
                Err(e) => unavailable_in_replay(e),
            }
        }
        Op::Complete { id: i, token, response: r } => {
            let (s, k) = id(*i);
            settled(rt.block_on(store.complete(&s, &k, tokens.real(*token), response(*r))))
        }
        Op::Abandon { id: i, token } => {
            let (s, k) = id(*i);
            settled(rt.block_on(store.abandon(&s, &k, tokens.real(*token))))
        }
        Op::Advance(d) => {
            clock.advance(*d);
            Output::Nothing
        }
    }
}

fn redis_sequences(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = &runtime()?;
    let replay_redis = |config: &IdempotencyConfig, ops: &[Op]| {
        let (config, ops) = redis_scenario(config, ops);
        replay::<IdempotencySpec, _>(&config, &ops, |config| {
            let clock = ManualClock::new();
            let store = rt
                .block_on(make(server.url().to_string(), redis_config(*config), clock.shared()))
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let mut tokens = TokenOrder::default();
            move |op: &Op| apply_redis(rt, store.as_ref(), &clock, &mut tokens, op)
        })
    };
    for (config, ops) in edge_scenarios() {
        replay_redis(&config, &ops)?;
    }
    random(random_ops(), Budget { cases: 64, ..Budget::default() }, |(config, ops)| replay_redis(config, ops))
}

/// Every key in `namespace` with its `PTTL` in ms (-1: no expiry).
fn namespace_ttls(rt: &tokio::runtime::Runtime, url: &str, namespace: &str) -> Result<Vec<(String, i64)>, CaseError> {
    let inspected: Result<Vec<(String, i64)>, redis::RedisError> = rt.block_on(async {
        let mut raw = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        crate::redis_server::namespace_ttls(&mut raw, namespace).await
    });
    inspected.map_err(|e| CaseError::failed(format!("inspecting Redis: {e}")))
}

/// Replays one key's `ops` on Redis and, after every call, holds each key's `PTTL` to
/// what the contract needs: no key without expiry but the counter, and after a call
/// that (re)starts the record's life, a TTL no shorter than its remaining life and no
/// longer than [`REDIS_EXPIRY_GRACE`] plus twice it. With `real_sleeps`, each clock
/// step is also slept for real, so Redis's own expiry acts as it would in production.
fn lifetimes_replay(
    rt: &tokio::runtime::Runtime,
    url: &str,
    make: RedisFactory,
    config: &IdempotencyConfig,
    ops: &[Op],
    real_sleeps: bool,
) -> CaseResult {
    let (config, ops) = redis_scenario(config, ops);
    trying(&(config, &ops));
    let clock = ManualClock::new();
    let redis_config = redis_config(config);
    let namespace = redis_config.namespace.clone();
    let store = connect(rt, make, url, redis_config, &clock)?;
    let mut model = IdempotencySpec::model(&config);
    let mut tokens = TokenOrder::default();
    let mut transcript = format!("{config:?}\n");
    // The record's remaining life as of the last call that set it, and real time since.
    let mut written: Option<(Duration, Stopwatch)> = None;
    for (index, op) in ops.iter().enumerate() {
        let end_before = model.records.values().next().map(|(_, s)| s.end(config.retention));
        let expected = IdempotencySpec::step(&mut model, op);
        let call = Stopwatch::start();
        if let (Op::Advance(d), true) = (op, real_sleeps) {
            thread::sleep(*d);
        }
        let actual = guarded(|| apply_redis(rt, store.as_ref(), &clock, &mut tokens, op))
            .map_err(|p| p.into_case_error(format!("{transcript}{:>4}. {op:?}", index + 1)))?;
        let _ = writeln!(transcript, "{:>4}. {op:?} -> {actual:?}", index + 1);
        if actual != expected {
            let _ = writeln!(transcript, "      expected {expected:?}   <-- first difference");
            let report = format!("counterexample ({} steps):\n{transcript}", index + 1);
            let hint = if real_sleeps {
                Some(
                    "Redis dropped a record the contract still holds: a key must live until the record is reaped \
                     (leased_until + retention while in progress, completed_at + retention once completed), in \
                     milliseconds for PEXPIRE, rounded up.",
                )
            } else {
                IdempotencySpec::hint(op, &expected, &actual)
            };
            return Err(CaseError::failed(match hint {
                Some(hint) => with_hint(report, hint),
                None => report,
            }));
        }
        let end = model.records.values().next().map(|(_, s)| s.end(config.retention));
        let restarted = end.is_some() && end != end_before && !matches!(op, Op::Advance(_));
        if restarted {
            let need = end.unwrap_or(Timestamp::MAX).saturating_duration_since(model.now);
            written = Some((need, call));
        } else if end.is_none() {
            written = None;
        }
        let ttls = namespace_ttls(rt, url, &namespace)?;
        let without_expiry: Vec<&String> = ttls.iter().filter(|(_, ttl)| *ttl < 0).map(|(k, _)| k).collect();
        let longest = ttls.iter().map(|(_, ttl)| *ttl).max().unwrap_or(-1);
        let fail = |why: String| {
            let report = format!("{transcript}      keys in Redis now (PTTL in ms, -1: no expiry): {ttls:?}\n{why}");
            Err(CaseError::failed(with_hint(
                report,
                "Give every record key a TTL (PEXPIRE, in milliseconds, rounded up) covering the record's whole life: \
                 lease + retention when it begins, retention when it completes; leave only the token counter without one.",
            )))
        };
        if without_expiry.len() > 1 {
            return fail(format!(
                "keys without expiry: {without_expiry:?}; only the token counter may live without a TTL \
                 (every record key needs PEXPIRE, an in-progress one too)"
            ));
        }
        let Some((need, since)) = written else { continue };
        let need_ms = need.as_millis();
        let elapsed_ms = since.elapsed().as_millis();
        if longest < 0 || (longest as u128) + elapsed_ms + 1 < need_ms {
            return fail(format!(
                "the record must survive in Redis for {need:?} more (until it is reaped: leased_until + retention while \
                 in progress, completed_at + retention once completed), but {}: Redis would drop the record early and \
                 a retry would execute again",
                if longest < 0 {
                    "no key with a TTL is left (the record's key has already expired)".to_string()
                } else {
                    format!("the longest-lived key has {longest} ms left")
                }
            ));
        }
        let grace = REDIS_EXPIRY_GRACE.as_millis() + 2 * need_ms + 1;
        let fitting = |ttl: i64| ttl >= 0 && (ttl as u128) + elapsed_ms + 1 >= need_ms && ttl as u128 <= grace;
        if restarted && !ttls.iter().any(|(_, ttl)| fitting(*ttl)) {
            return fail(format!(
                "the record needs {need:?} more, and no key's TTL lies between that and REDIS_EXPIRY_GRACE \
                 ({REDIS_EXPIRY_GRACE:?}) + twice the record's life ({grace} ms): the record's key lives far too long. \
                 A TTL in the wrong unit?"
            ));
        }
    }
    Ok(())
}

/// Key lifetimes after every call, at time scales from milliseconds to years.
fn key_lifetimes(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let ms = Duration::from_millis;
    let scales =
        [(ms(30), ms(80)), (ms(2_500), ms(700)), (Duration::from_secs(3600), Duration::from_secs(86_400 * 400))];
    let mut rng = SplitMix::new(0x7711);
    for (lease, retention) in scales {
        let config = IdempotencyConfig::new(lease, retention).expect("nonzero");
        for _ in 0..12 {
            let step = lease.max(retention) / 3;
            let ops: Vec<Op> = (0..10)
                .map(|i| match rng.below(7) {
                    0..=2 => Op::Begin { id: 7, fingerprint: 1 + (rng.below(4) == 0) as u8 },
                    3 | 4 => Op::Complete { id: 7, token: 1 + rng.below(3) as u64, response: i },
                    5 => Op::Abandon { id: 7, token: 1 + rng.below(3) as u64 },
                    _ => Op::Advance(step),
                })
                .collect();
            lifetimes_replay(&rt, server.url(), make, &config, &ops, false)?;
        }
    }
    Ok(())
}

/// Real time passes (tens of ms) while the test clock follows: a record whose key
/// expires with the lease, or too soon after completing, is lost while the contract
/// still holds it.
fn expiry_in_real_time(make: RedisFactory) -> CaseResult {
    use Op::*;
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let config = IdempotencyConfig::new(Duration::from_millis(50), Duration::from_millis(400)).expect("nonzero");
    let pause = Advance(Duration::from_millis(80));
    let scenarios = [
        // Completed, then a retry once a lease's worth of real time has passed: Replay.
        vec![
            Begin { id: 7, fingerprint: 1 },
            Complete { id: 7, token: 1, response: 2 },
            pause.clone(),
            Begin { id: 7, fingerprint: 1 },
        ],
        // The executor completes after its lease ran out (nobody took over): it lands.
        vec![
            Begin { id: 2, fingerprint: 1 },
            pause.clone(),
            Complete { id: 2, token: 1, response: 3 },
            Begin { id: 2, fingerprint: 1 },
        ],
        // After the lease, within retention, the record still answers Mismatch.
        vec![
            Begin { id: 4, fingerprint: 1 },
            pause.clone(),
            Begin { id: 4, fingerprint: 2 },
            pause,
            Begin { id: 4, fingerprint: 1 },
        ],
    ];
    for ops in &scenarios {
        lifetimes_replay(&rt, server.url(), make, &config, ops, true)?;
    }
    Ok(())
}

/// Several instances, one Redis: exactly one executes, and after a takeover only the
/// new executor's complete lands.
fn one_executor_across_instances(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let clock = ManualClock::new();
    let config = redis_config(config(10, 600));
    let instances: Vec<Arc<dyn ErasedRedisStore>> =
        (0..4).map(|_| connect(&rt, make, server.url(), config.clone(), &clock)).collect::<Result<_, _>>()?;
    for round in 0..20 {
        let key = format!("order-{round}");
        let answers: Vec<Result<Begin, StoreUnavailable>> = rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let (store, key) = (Arc::clone(&instances[i % 4]), key.clone());
                    tokio::spawn(async move { store.begin("shop", &key, Fingerprint(7)).await })
                })
                .collect();
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap_or_else(|e| Err(StoreUnavailable(format!("task failed: {e}")))));
            }
            answers
        });
        let executed = answers.iter().filter(|a| matches!(a, Ok(Begin::Execute(_)))).count();
        if executed != 1 || answers.iter().any(|a| a.is_err()) {
            return Err(CaseError::failed(format!(
                "8 identical requests through 4 instances: {executed} executed (expected 1); answers {answers:?}"
            )));
        }
    }
    // Takeover: A's lease expires, B takes over, both try to complete at once.
    let (a, b) = (&instances[0], &instances[1]);
    let first = rt.block_on(a.begin("shop", "refund", Fingerprint(1)));
    let Ok(Begin::Execute(old)) = first else {
        return Err(CaseError::failed(format!("begin on a new key returned {first:?}")));
    };
    clock.advance(Duration::from_secs(11));
    let second = rt.block_on(b.begin("shop", "refund", Fingerprint(1)));
    let Ok(Begin::Execute(new)) = second else {
        return Err(CaseError::failed(format!(
            "after the lease expired, a retry got {second:?}, expected Execute with a newer token"
        )));
    };
    let (late, current) = rt.block_on(async {
        let old_response = Response { status: 200, body: b"old".to_vec() };
        let new_response = Response { status: 200, body: b"new".to_vec() };
        tokio::join!(
            a.complete("shop", "refund", old.token, old_response),
            b.complete("shop", "refund", new.token, new_response)
        )
    });
    let replay = rt.block_on(a.begin("shop", "refund", Fingerprint(1)));
    let expected = Ok(Begin::Replay(Response { status: 200, body: b"new".to_vec() }));
    // Whichever lands first, the old token is refused as StaleToken (SETTLE_CHECK_ORDER:
    // the fence comes before "already completed").
    let refused = matches!(late, Err(SettleError::Lease(LeaseError::StaleToken)));
    if new.token <= old.token || !refused || current != Ok(()) || replay != expected {
        return Err(CaseError::failed(format!(
            "takeover: old token {}, new token {} (must be greater); old executor's complete {late:?} (expected StaleToken, even if the new one completed first), \
             new executor's {current:?} (expected Ok), then a retry got {replay:?} (expected the new response)",
            old.token, new.token
        )));
    }
    Ok(())
}

/// Kill Redis mid-use: calls fail fast with Unavailable, work again after a restart,
/// and a token from before the (data-losing) outage never completes a newer record.
fn outage(make: RedisFactory) -> CaseResult {
    let mut server = RedisServer::start()?;
    if !server.owned() {
        return Err(CaseError::Skipped("REDIS_URL points at an external server, which this case cannot kill".into()));
    }
    let rt = runtime()?;
    let clock = ManualClock::starting_at(Timestamp::from_nanos(1_000_000_000_000));
    let config = RedisStoreConfig { timeout: OUTAGE_CALL_TIMEOUT, ..redis_config(config(30, 600)) };
    let store = connect(&rt, make, server.url(), config, &clock)?;
    let bounded = |call: BoxFuture<'_, Result<Begin, StoreUnavailable>>| {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), call).await })
    };
    let Ok(Ok(Begin::Execute(old))) = bounded(store.begin("pay", "p-1", Fingerprint(1))) else {
        return Err(CaseError::failed("before the outage, begin on a new key did not Execute"));
    };
    server.kill();
    match bounded(store.begin("pay", "p-2", Fingerprint(1))) {
        Ok(Err(StoreUnavailable(_))) => {}
        Err(_) => {
            return Err(CaseError::failed(
                "with Redis down, begin had not returned after 5s (timeout configured: 500ms)",
            ))
        }
        Ok(other) => {
            return Err(CaseError::failed(format!(
                "with Redis down, begin returned {other:?}, expected Err(StoreUnavailable)"
            )))
        }
    }
    // The outage takes time; the restarted Redis has lost every record and counter.
    clock.advance(Duration::from_secs(1));
    server.restart()?;
    let again = within_reconnect_window(|| bounded(store.begin("pay", "p-1", Fingerprint(1))).ok()?.ok());
    let Some(Begin::Execute(new)) = again else {
        return Err(CaseError::failed(format!(
            "after Redis restarted (data lost), a retry of p-1 got {again:?}, expected Execute"
        )));
    };
    let late = rt.block_on(store.complete("pay", "p-1", old.token, Response { status: 200, body: b"old".to_vec() }));
    if new.token <= old.token || late.is_ok() {
        return Err(CaseError::failed(format!(
            "token {} from before the outage vs {} after it: tokens must keep increasing across data loss, \
             and the old executor's complete must be refused (got {late:?})",
            old.token, new.token
        )));
    }
    Ok(())
}

/// One round trip per call; keys hash-tagged alike; records expire.
fn round_trips_and_keys(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let counter = CommandCounter::start(server.url()).map_err(|e| CaseError::failed(format!("counting proxy: {e}")))?;
    let rt = runtime()?;
    let clock = ManualClock::new();
    let config = redis_config(config(30, 600));
    let namespace = config.namespace.clone();
    let store = connect(&rt, make, &counter.url, config, &clock)?;
    // Warm up (scripts may load on first use), then count.
    if let Ok(Begin::Execute(lease)) = rt.block_on(store.begin("s", "warm", Fingerprint(1))) {
        let _ = rt.block_on(store.complete("s", "warm", lease.token, Response { status: 200, body: Vec::new() }));
    }
    let before = counter.commands();
    for i in 0..20 {
        let key = format!("k{i}");
        match rt.block_on(store.begin("s", &key, Fingerprint(1))) {
            Ok(Begin::Execute(lease)) => {
                rt.block_on(store.complete("s", &key, lease.token, Response { status: 200, body: b"x".to_vec() }))
                    .map_err(|e| CaseError::failed(format!("complete returned {e:?}")))?;
            }
            other => return Err(CaseError::failed(format!("begin on a new key returned {other:?}"))),
        }
    }
    let commands = counter.commands() - before;
    if commands != 40 {
        return Err(CaseError::failed(format!(
            "20 begin + 20 complete sent {commands} commands to Redis: expected one round trip per call (40)"
        )));
    }
    // 21 records and the token counter (which never expires).
    check_namespace_keys(&rt, server.url(), &namespace, 22, 1)
}

// ---------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------

pub const EXERCISE: &str = "idempotency";
pub const L1: Level = Level { number: 1, name: "lifecycle" };
pub const L2: Level = Level { number: 2, name: "leases" };
pub const L3: Level = Level { number: 3, name: "threads" };
pub const L4: Level = Level { number: 4, name: "memory" };
pub const L5: Level = Level { number: 5, name: "redis" };

/// The Redis-backed cases (level 5), for the distributed implementation `make` builds.
pub fn redis_suite(make: RedisFactory) -> Vec<Case> {
    let case = |name, hint, run: fn(RedisFactory) -> CaseResult| {
        Case::new(EXERCISE, L5, name, hint, THREADED, move || run(make)).with_redis()
    };
    vec![
        case("sequences",
            "The in-memory contract, replayed on Redis (whole µs, bodies of any bytes): one Lua script per call reads and changes \
             the record (a hash) and the token counter atomically; time comes from ARGV in µs.",
            redis_sequences),
        case("one_executor_across_instances",
            "Instances share records only through Redis: the exists-check and the create must be one script; after a takeover the old \
             token's complete is refused with StaleToken, even once the new executor completed (SETTLE_CHECK_ORDER).",
            one_executor_across_instances),
        case("outage",
            "Bound every call with the timeout and return StoreUnavailable; reconnect after a restart; and make tokens increase across data loss \
             (seed a missing counter from the clock) so a pre-outage token never completes a new record.",
            outage),
        case("round_trips_and_keys",
            "One EVALSHA per call, keys named {namespace}:..., (scope, key) encoded without collisions, and a PEXPIRE on every record.",
            round_trips_and_keys),
        case("key_lifetimes",
            "PTTL of every key after every call: an in-progress record expires at leased_until + retention (not with the lease, never \
             without a TTL), a completed one at completed_at + retention; at most REDIS_EXPIRY_GRACE + the record's life again later. \
             PEXPIRE takes milliseconds: round up.",
            key_lifetimes),
        case("expiry_in_real_time",
            "Redis expires keys in real time: with a 50ms lease and 400ms retention, a record must survive 80ms past its lease \
             (late complete, Mismatch, Replay). A TTL covering only the lease loses it.",
            expiry_in_real_time),
    ]
}

pub fn suite(make: Factory) -> Vec<Case> {
    // Hints are `&'static str`; the two that quote SETTLE_CHECK_ORDER are built from it
    // (leaked: a few hundred bytes per suite built, so the order is written once).
    let case = |level, name, hint: String, deadline, run: fn(Factory) -> CaseResult| {
        let hint: &'static str = Box::leak(hint.into_boxed_str());
        Case::new(EXERCISE, level, name, hint, deadline, move || run(make))
    };
    let order = format!("{SETTLE_CHECK_ORDER:?}");
    vec![
        case(L1, "one_key_sequences",
            "Every short sequence on one key (lease 2s, retention 4s, clock steps 3s): begin executes a new key with the next token (1, 2, ...), \
             replays a completed one (status and body bytes exactly), answers InFlight while the lease runs and Mismatch for another fingerprint."
                .into(),
            QUICK, |make| exhaustive(&[short_config()], |_| letters(&[0]), 5, |_| true, |c, ops| replay_on(make, c, &numbered(ops)))),
        case(L1, "two_key_sequences",
            "Every short sequence over two keys in different scopes: records are per (scope, key) and never see each other.".into(),
            QUICK, |make| exhaustive(&[short_config()], |_| letters(&[0, 1]), 4, |_| true, |c, ops| replay_on(make, c, &numbered(ops)))),
        case(L2, "edges",
            format!("Fencing: after a lease expires a retry takes over with a higher token and the old token's complete is StaleToken, \
             even after the new executor completed (complete/abandon check {order}: the fence first); \
             the current token may still complete if nobody took over; abandon frees the key at once; Mismatch wins over InFlight; \
             retention ends at exactly completed_at + retention; sub-ms times are exact to the ns and Duration::MAX never ends (saturate); \
             bodies are any bytes; scopes never collide (don't join scope and key with a separator)."),
            QUICK, |make| edge_scenarios().iter().try_for_each(|(c, ops)| replay_on(make, c, ops))),
        case(L2, "random_sequences",
            format!("Longer random sequences over 10 (scope, key) pairs (digits, separators, Unicode, empty strings), leases and retentions \
             from 1ns to seconds and Duration::MAX, binary bodies. complete/abandon refuse in this order: {order}."),
            QUICK, |make| random(random_ops(), Budget::default(), |(c, ops)| replay_on(make, c, ops))),
        case(L3, "exactly_one_executes",
            "8 identical requests at once: exactly one gets Execute. The check for a record and its creation must be one atomic step \
             (comparing fingerprints may yield the thread here: don't release the lock between the check and the insert)."
                .into(),
            THREADED, exactly_one_executes),
        case(L3, "linearizable",
            "Concurrent begin/complete/abandon on several keys must be linearizable: each call reads and changes its record \
             (and takes its token) in one critical section."
                .into(),
            THREADED, concurrent_case),
        case(L3, "clock_moves",
            "Concurrent calls on one key while the clock moves: read the clock inside the critical section. Reading the time \
             before taking the lock lets a call act at a time the clock has already left (an InFlight or a takeover decided \
             on a stale time)."
                .into(),
            THREADED, clock_moves),
        case(L3, "takeover_race",
            "Leases expire while identical requests race and executors complete late: only the newest executor's complete lands \
             (check the token and store the response in one critical section, at the time read inside it)."
                .into(),
            THREADED, takeover_race),
        case(L4, "memory_follows_retention",
            "150,000 unique keys at 1,000/s with a 5s retention, measured on the real heap: reap records past retention (completed, or \
             in progress with an expired lease), e.g. sweep when the map has doubled since the last sweep; keep no side index of \
             every key ever seen."
                .into(),
            THREADED, memory_follows_retention),
        case(L4, "housekeeping",
            "18,000 keys in every state with the clock crossing lease and retention ends, then every key read back: a sweep must \
             remove exactly what has expired (an in-progress record lives until leased_until + retention, not just its lease; \
             a completed one until completed_at + retention, end exclusive)."
                .into(),
            THREADED, housekeeping),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lifecycle() {
        let mut m = IdempotencySpec::model(&config(10, 60));
        let mut step = |op| IdempotencySpec::step(&mut m, &op);
        assert_eq!(step(Op::Begin { id: 0, fingerprint: 1 }), Output::Began(Begin::Execute(Lease { token: 1 })));
        assert_eq!(
            step(Op::Begin { id: 0, fingerprint: 1 }),
            Output::Began(Begin::InFlight { retry_after: Duration::from_secs(10) })
        );
        assert_eq!(step(Op::Begin { id: 0, fingerprint: 2 }), Output::Began(Begin::Mismatch));
        assert_eq!(step(Op::Complete { id: 0, token: 2, response: 1 }), Output::Done(Err(LeaseError::StaleToken)));
        assert_eq!(step(Op::Complete { id: 0, token: 1, response: 1 }), Output::Done(Ok(())));
        assert_eq!(
            step(Op::Complete { id: 0, token: 1, response: 2 }),
            Output::Done(Err(LeaseError::AlreadyCompleted))
        );
        assert_eq!(step(Op::Begin { id: 0, fingerprint: 1 }), Output::Began(Begin::Replay(response(1))));
        assert_eq!(step(Op::Begin { id: 2, fingerprint: 1 }), Output::Began(Begin::Execute(Lease { token: 2 })));
        assert_eq!(
            step(Op::Begin { id: 3, fingerprint: 1 }),
            Output::Began(Begin::Execute(Lease { token: 3 })),
            "\"t:x\"/\"y\" is not \"t\"/\"x:y\""
        );
    }

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
