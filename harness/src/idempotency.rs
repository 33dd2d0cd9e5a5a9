//! Exercise: an idempotency-key store, the server side of "retry safely": the first
//! request with a key executes, retries replay its stored response. Holds the contract
//! ([`IdempotencyStore`]), the model and the graded suite. Semantics:
//! `shared/spec/others.md`, restated on the trait.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use crate::clock::{ManualClock, SharedClock, Timestamp};
use crate::linearizability::{check_histories, set_forced_yields, HistoryBudget, SplitMix};
use crate::redis_server::{
    check_namespace_keys, fresh_namespace, runtime, within_reconnect_window, CommandCounter, RedisServer, CALL_TIMEOUT,
    OUTAGE_CALL_TIMEOUT,
};
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{
    guarded, Case, CaseError, CaseResult, Level, Panic, QUICK_DEADLINE as QUICK, THREADED_DEADLINE as THREADED,
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fp{}", self.0)
    }
}

/// The response an executor stores, replayed to every retry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.status, String::from_utf8_lossy(&self.body))
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

/// Why `complete` or `abandon` was refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseError {
    /// No record for the key (never begun, abandoned, or reaped).
    NoSuchRecord,
    /// The record is in progress under another token (the lease was taken over).
    StaleToken,
    /// The record already holds a response.
    AlreadyCompleted,
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
/// characters they contain. At time `now`, `begin(scope, key, fingerprint)`:
/// 1. no record (or one past retention: reaped) → a new record in progress, leased
///    until `now + lease`: `Execute` with the next token;
/// 2. a record with another fingerprint → `Mismatch` (this wins over everything below);
/// 3. completed → `Replay` of its response;
/// 4. in progress, lease not expired (`now < leased_until`) → `InFlight` with
///    `retry_after = leased_until − now`;
/// 5. in progress, lease expired → take over: `Execute` with the next token, leased
///    until `now + lease`; the old token is now stale.
///
/// Tokens come from one counter per store: 1, 2, 3, ... one per `Execute`.
///
/// `complete(.., token, response)`: for the record's current token, stores the response
/// (even after the lease expired, as long as nobody took over: the token is the
/// fence) and starts its retention (`now + retention`). `abandon(.., token)`: removes
/// the record at once (the key is new). Both refuse, changing nothing, with
/// `NoSuchRecord`, `StaleToken` or `AlreadyCompleted` (checked in that order).
///
/// Reaping: a completed record is gone once `now ≥ completed_at + retention`; one left
/// in progress once `now ≥ leased_until + retention`. `tracked_records` must follow the
/// live records (amortised). Thread-safe and linearizable: under N concurrent
/// identical requests, exactly one executes.
pub trait IdempotencyStore: Send + Sync + Sized {
    fn new(config: IdempotencyConfig, clock: SharedClock) -> Self;
    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin;
    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError>;
    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError>;
    /// Records held in memory right now.
    fn tracked_records(&self) -> usize;
}

/// The store under test, behind a trait object so the suite is compiled once.
pub trait ErasedStore: Send + Sync {
    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin;
    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError>;
    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError>;
    fn tracked_records(&self) -> usize;
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
    fn tracked_records(&self) -> usize {
        IdempotencyStore::tracked_records(self)
    }
}

pub type Factory = fn(IdempotencyConfig, SharedClock) -> Arc<dyn ErasedStore>;

pub fn factory<S: IdempotencyStore + 'static>() -> Factory {
    |config, clock| Arc::new(S::new(config, clock))
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum State {
    InProgress { token: u64, leased_until: Timestamp },
    Completed { response: Response, until: Timestamp },
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Model {
    config: IdempotencyConfig,
    now: Timestamp,
    last_token: u64,
    records: BTreeMap<(String, String), (Fingerprint, State)>,
}

impl Model {
    fn reap(&mut self) {
        let (now, retention) = (self.now, self.config.retention);
        self.records.retain(|_, (_, state)| match state {
            State::InProgress { leased_until, .. } => now < *leased_until + retention,
            State::Completed { until, .. } => now < *until,
        });
    }

    fn begin(&mut self, id: (String, String), fingerprint: Fingerprint) -> Begin {
        let (now, lease) = (self.now, self.config.lease);
        match self.records.get(&id) {
            Some((fp, _)) if *fp != fingerprint => Begin::Mismatch,
            Some((_, State::Completed { response, .. })) => Begin::Replay(response.clone()),
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

    /// The checks shared by `complete` and `abandon`.
    fn holder(&self, id: &(String, String), token: u64) -> Result<(), LeaseError> {
        match self.records.get(id) {
            None => Err(LeaseError::NoSuchRecord),
            Some((_, State::Completed { .. })) => Err(LeaseError::AlreadyCompleted),
            Some((_, State::InProgress { token: current, .. })) if *current != token => Err(LeaseError::StaleToken),
            Some(_) => Ok(()),
        }
    }
}

/// One call, or a step of the test's clock. Keys are (scope, key) pairs from
/// [`IDS`], responses are numbered.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Begin { id: u8, fingerprint: u8 },
    Complete { id: u8, token: u64, response: u16 },
    Abandon { id: u8, token: u64 },
    Advance(Duration),
}

/// (scope, key) pairs; the last two would collide under naive "scope:key" joining.
const IDS: [(&str, &str); 4] = [("tenant-a", "order-1"), ("tenant-b", "order-1"), ("t:x", "y"), ("t", "x:y")];

fn id(index: u8) -> (String, String) {
    let (scope, key) = IDS[usize::from(index) % IDS.len()];
    (scope.to_string(), key.to_string())
}

fn response(n: u16) -> Response {
    Response { status: 200 + n % 2, body: format!("response #{n}").into_bytes() }
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

    fn step(model: &mut Model, op: &Op) -> Output {
        model.reap();
        match op {
            Op::Begin { id: i, fingerprint } => {
                Output::Began(model.begin(id(*i), Fingerprint(u64::from(*fingerprint))))
            }
            Op::Complete { id: i, token, response: r } => {
                let id = id(*i);
                Output::Done(model.holder(&id, *token).map(|()| {
                    let until = model.now + model.config.retention;
                    let record = model.records.get_mut(&id).expect("holder checked it exists");
                    record.1 = State::Completed { response: response(*r), until };
                }))
            }
            Op::Abandon { id: i, token } => {
                let id = id(*i);
                Output::Done(model.holder(&id, *token).map(|()| {
                    model.records.remove(&id);
                }))
            }
            Op::Advance(d) => {
                model.now = model.now + *d;
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

fn letters(ids: &[u8]) -> Vec<Op> {
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

/// Numbers each complete's response by its step, so replays are told apart.
fn numbered(ops: &[Op]) -> Vec<Op> {
    let mut ops = ops.to_vec();
    for (i, op) in ops.iter_mut().enumerate() {
        if let Op::Complete { response, .. } = op {
            *response = i as u16 + 1;
        }
    }
    ops
}

fn random_ops() -> impl Strategy<Value = (IdempotencyConfig, Vec<Op>)> {
    let id = 0u8..IDS.len() as u8;
    let op = prop_oneof![
        4 => (id.clone(), 1u8..=2).prop_map(|(id, fingerprint)| Op::Begin { id, fingerprint }),
        3 => (id.clone(), 1u64..=6).prop_map(|(id, token)| Op::Complete { id, token, response: 0 }),
        1 => (id, 1u64..=6).prop_map(|(id, token)| Op::Abandon { id, token }),
        2 => (1u64..=4000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
    ];
    (1u64..=3, 1u64..=6, proptest::collection::vec(op, 1..=40)).prop_map(|(l, r, ops)| (config(l, r), numbered(&ops)))
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
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(s(10)),
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 4 },
                Complete { id: 0, token: 2, response: 5 },
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 2, response: 7 },
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

const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 3, 300), (3, 4, 300), (4, 5, 150)], seed: 0x1d };

fn concurrent_case(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let config = config(10, 60);
    let pick = |rng: &mut SplitMix, thread: usize| {
        let id = rng.below(2) as u8;
        match rng.below(6) {
            0..=2 => Op::Begin { id, fingerprint: 1 + rng.below(4).min(1) as u8 },
            3 | 4 => {
                Op::Complete { id, token: 1 + rng.below(3) as u64, response: thread as u16 * 10 + rng.below(10) as u16 }
            }
            _ => Op::Abandon { id, token: 1 + rng.below(3) as u64 },
        }
    };
    let clock = ManualClock::new();
    let result = check_histories::<IdempotencySpec, _>(
        &config,
        HISTORIES,
        pick,
        || build(make, config, &clock),
        |store, op| apply(store.as_ref(), &clock, op),
    );
    set_forced_yields(false);
    result
}

/// N identical requests at once: exactly one executes; after it completes, all replay.
fn exactly_one_executes(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    let clock = ManualClock::new();
    let store = build(make, config(30, 300), &clock)?;
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

/// Unique keys keep arriving and completing: memory must follow the records within
/// retention, not every key ever seen.
fn memory_follows_retention(make: Factory) -> CaseResult {
    const PER_SECOND: u32 = 1_000;
    let clock = ManualClock::new();
    let retention = 5u64;
    let store = build(make, config(2, retention), &clock)?;
    let live = (retention as usize + 1) * PER_SECOND as usize;
    let bound = 4 * live + 4096;
    for second in 0..60u32 {
        for i in 0..PER_SECOND {
            let key = format!("req-{second}-{i}");
            match store.begin("api", &key, Fingerprint(1)) {
                Begin::Execute(lease) => {
                    if i % 10 != 0 {
                        // Most complete; a tenth are left in progress (the caller crashed).
                        let _ = store.complete("api", &key, lease.token, Response { status: 200, body: Vec::new() });
                    }
                }
                other => {
                    return Err(CaseError::failed(format!(
                        "begin(\"api\", {key:?}, fp1) on a fresh key returned {other:?}"
                    )))
                }
            }
        }
        let tracked = store.tracked_records();
        if tracked > bound {
            return Err(CaseError::failed(format!(
                "after {} unique keys ({PER_SECOND}/s, retention {retention}s, lease 2s), tracked_records() = {tracked}: \
                 at most ~{live} records are within retention, so memory should stay within {bound}",
                (second + 1) * PER_SECOND
            )));
        }
        clock.advance(Duration::from_secs(1));
    }
    Ok(())
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
/// * Time is the caller's clock in whole microseconds. Records expire in Redis (a TTL)
///   once past retention.
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
        replay::<IdempotencySpec, _>(config, ops, |config| {
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
    // Whichever lands first, the old token is refused: StaleToken, or AlreadyCompleted
    // if the new executor's complete came first.
    let refused = matches!(late, Err(SettleError::Lease(LeaseError::StaleToken | LeaseError::AlreadyCompleted)));
    if new.token <= old.token || !refused || current != Ok(()) || replay != expected {
        return Err(CaseError::failed(format!(
            "takeover: old token {}, new token {} (must be greater); old executor's complete {late:?} (expected StaleToken or AlreadyCompleted), \
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
            "The in-memory contract, replayed on Redis: one Lua script per call reads and changes the record (a hash) and the token counter atomically; \
             time comes from ARGV in µs.",
            redis_sequences),
        case("one_executor_across_instances",
            "Instances share records only through Redis: the exists-check and the create must be one script; after a takeover the old token's complete is refused.",
            one_executor_across_instances),
        case("outage",
            "Bound every call with the timeout and return StoreUnavailable; reconnect after a restart; and make tokens increase across data loss \
             (seed a missing counter from the clock) so a pre-outage token never completes a new record.",
            outage),
        case("round_trips_and_keys",
            "One EVALSHA per call, keys named {namespace}:..., (scope, key) encoded without collisions, and a PEXPIRE on every record.",
            round_trips_and_keys),
    ]
}

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hint, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hint, deadline, move || run(make))
    };
    vec![
        case(L1, "one_key_sequences",
            "Every short sequence on one key (lease 2s, retention 4s, clock steps 3s): begin executes a new key with the next token (1, 2, ...), \
             replays a completed one, answers InFlight while the lease runs and Mismatch for another fingerprint.",
            QUICK, |make| exhaustive(&[short_config()], |_| letters(&[0]), 5, |_| true, |c, ops| replay_on(make, c, &numbered(ops)))),
        case(L1, "two_key_sequences",
            "Every short sequence over two keys in different scopes: records are per (scope, key) and never see each other.",
            QUICK, |make| exhaustive(&[short_config()], |_| letters(&[0, 1]), 4, |_| true, |c, ops| replay_on(make, c, &numbered(ops)))),
        case(L2, "edges",
            "Fencing: after a lease expires a retry takes over with a higher token and the old token's complete is StaleToken; \
             the current token may still complete if nobody took over; abandon frees the key at once; Mismatch wins over InFlight; \
             retention ends at exactly completed_at + retention; scopes never collide (don't join scope and key with a separator).",
            QUICK, |make| edge_scenarios().iter().try_for_each(|(c, ops)| replay_on(make, c, ops))),
        case(L2, "random_sequences",
            "Longer random sequences over 4 keys in 4 scopes, with leases of 1-3s and retentions of 1-6s. Check complete/abandon errors in order: NoSuchRecord, AlreadyCompleted, StaleToken.",
            QUICK, |make| random(random_ops(), Budget::default(), |(c, ops)| replay_on(make, c, ops))),
        case(L3, "exactly_one_executes",
            "8 identical requests at once: exactly one gets Execute. The check for a record and its creation must be one atomic step.",
            THREADED, exactly_one_executes),
        case(L3, "linearizable",
            "Concurrent begin/complete/abandon must be linearizable: each call reads and changes its record (and the token counter) in one critical section.",
            THREADED, concurrent_case),
        case(L4, "memory_follows_retention",
            "60,000 unique keys at 1,000/s with a 5s retention: reap records past retention (completed, or in progress with an expired lease) — \
             e.g. sweep when the map has doubled since the last sweep.",
            THREADED, memory_follows_retention),
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
