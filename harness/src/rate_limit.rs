//! Exercise: a keyed token-bucket rate limiter with per-user, per-endpoint and
//! per-tenant limits checked all-or-nothing. Holds the contract ([`RateLimiter`]), the
//! IETF header rendering, the model (GCRA in integer nanoseconds) and the graded
//! suite. Semantics: `shared/spec/others.md`, restated on the trait.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use crate::clock::{Clock, ManualClock, SharedClock, Timestamp};
pub use crate::linearizability::Key;
use crate::linearizability::{check_histories, set_forced_yields, HistoryBudget, SplitMix};
use crate::redis_server::{
    check_namespace_keys, fresh_namespace, runtime, within_reconnect_window, CommandCounter, RedisServer, CALL_TIMEOUT,
    OUTAGE_CALL_TIMEOUT,
};
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{
    guarded, Case, CaseError, CaseResult, Level, Panic, QUICK_DEADLINE as QUICK, THREADED_DEADLINE as THREADED,
};

/// A bucket's limit: at most `burst` tokens, refilled one per `period`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    burst: u32,
    period: Duration,
}

/// Why a [`Quota`] could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaError {
    ZeroBurst,
    ZeroPeriod,
    /// `burst × period` must fit in 2^64 ns (about 584 years).
    TooLong {
        burst: u32,
        period: Duration,
    },
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaError::ZeroBurst => write!(f, "a quota's burst must be at least 1"),
            QuotaError::ZeroPeriod => write!(f, "a quota's period must be longer than zero"),
            QuotaError::TooLong { burst, period } => {
                write!(f, "burst {burst} × period {period:?} is longer than 584 years")
            }
        }
    }
}

impl std::error::Error for QuotaError {}

impl Quota {
    /// `burst` requests at once, then one more every `period`.
    pub fn new(burst: u32, period: Duration) -> Result<Quota, QuotaError> {
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        let fits = u64::try_from(period.as_nanos()).ok().and_then(|t| t.checked_mul(u64::from(burst))).is_some();
        if !fits {
            return Err(QuotaError::TooLong { burst, period });
        }
        Ok(Quota { burst, period })
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The emission interval T in nanoseconds (fits: checked by `new`).
    pub fn period_nanos(&self) -> u64 {
        self.period.as_nanos() as u64
    }

    /// τ = burst × T: how far ahead of now a bucket's debt may run.
    pub fn tolerance_nanos(&self) -> u64 {
        self.period_nanos() * u64::from(self.burst)
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.burst, self.period)
    }
}

/// A request the limiter refuses to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// `check` was given no buckets.
    NoLimits,
    /// The same key appears twice in one request (at these positions).
    DuplicateKey { first: usize, second: usize },
    /// The request costs more than bucket `index` can ever hold: it could never pass.
    CostExceedsBurst { index: usize, cost: u32, burst: u32 },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::NoLimits => write!(f, "a request must name at least one bucket"),
            LimitError::DuplicateKey { first, second } => write!(f, "limits {first} and {second} name the same key"),
            LimitError::CostExceedsBurst { index, cost, burst } => {
                write!(f, "cost {cost} exceeds the burst {burst} of limit {index}: it could never be allowed")
            }
        }
    }
}

impl std::error::Error for LimitError {}

/// The answer to one request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    pub allowed: bool,
    /// Tokens left, in the bucket with the fewest (after this request, if allowed).
    pub remaining: u32,
    /// Zero if allowed; else how long until this same request would be allowed.
    pub retry_after: Duration,
    /// How long until every bucket of this request is full again.
    pub reset_after: Duration,
    /// Index (into the request's limits) of the bucket that decided: if denied, the
    /// violated bucket with the longest `retry_after`; if allowed, the one with the
    /// fewest `remaining`. The first such on ties.
    pub limiting: usize,
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} remaining {} retry_after {:?} reset_after {:?} limiting #{}",
            if self.allowed { "ALLOWED" } else { "DENIED" },
            self.remaining,
            self.retry_after,
            self.reset_after,
            self.limiting
        )
    }
}

fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// HTTP response headers for this decision, per the IETF RateLimit header fields
    /// draft (`RateLimit-Policy`, `RateLimit`) and RFC 9110 `Retry-After` (denials only).
    /// `policy` names the limiting bucket's policy and `quota` is its quota. Seconds
    /// are rounded up, so a client that waits as told is never early.
    pub fn headers(&self, policy: &str, quota: Quota) -> Vec<(&'static str, String)> {
        let window = whole_seconds_up(quota.period() * quota.burst()).max(1);
        let name = policy.replace(['"', '\\'], "_");
        let mut headers = vec![
            ("RateLimit-Policy", format!("\"{name}\";q={};w={window}", quota.burst())),
            ("RateLimit", format!("\"{name}\";r={};t={}", self.remaining, whole_seconds_up(self.reset_after))),
        ];
        if !self.allowed {
            headers.push(("Retry-After", whole_seconds_up(self.retry_after).to_string()));
        }
        headers
    }
}

/// The contract. Implement it for your `Limiter<K>` in `exercises/src/rate_limit.rs`.
///
/// Each key has one bucket (GCRA: a "theoretical arrival time" per key, in integer
/// nanoseconds). With quota (burst B, period T), τ = B·T:
/// * a fresh key is full: B tokens. Over any interval [0, t], at most B + ⌊t/T⌋ cost
///   is allowed; exactly at a refill boundary the token is there.
/// * `check(limits, cost)` is all-or-nothing: allowed iff **every** bucket has `cost`
///   tokens; then each pays `cost`. A denied request consumes nothing anywhere.
/// * `cost == 0` is a peek: nothing is consumed; allowed iff no bucket is over its limit.
/// * Time: the limiter uses `max(clock.now(), the latest time it has seen)`, so a
///   clock that steps back changes nothing (and in particular mints no tokens).
/// * Errors, checked before anything else and changing nothing: no limits, the same
///   key twice, a cost above some bucket's burst.
/// * Decision numbers: see [`Decision`]; `remaining` counts whole tokens;
///   `retry_after` is exact (denied at `retry_after - 1ns`, allowed at `retry_after`).
/// * Memory: a full bucket is the same as no bucket, so idle full buckets must be
///   dropped: under a flood of unique keys, [`tracked_keys`](Self::tracked_keys) stays
///   proportional to the keys with tokens spent in the last burst window.
/// * Thread-safe and linearizable, like every exercise.
pub trait RateLimiter<K>: Send + Sync + Sized
where
    K: Hash + Eq + Clone + Send + Sync,
{
    fn new(clock: SharedClock) -> Self;
    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError>;
    /// How many buckets the limiter holds in memory right now.
    fn tracked_keys(&self) -> usize;
}

/// The limiter under test, behind a trait object so the suite is compiled once.
pub trait ErasedLimiter: Send + Sync {
    fn check(&self, limits: &[(Key, Quota)], cost: u32) -> Result<Decision, LimitError>;
    fn tracked_keys(&self) -> usize;
}

impl<L: RateLimiter<Key>> ErasedLimiter for L {
    fn check(&self, limits: &[(Key, Quota)], cost: u32) -> Result<Decision, LimitError> {
        RateLimiter::check(self, limits, cost)
    }
    fn tracked_keys(&self) -> usize {
        RateLimiter::tracked_keys(self)
    }
}

/// Builds the limiter under test.
pub type Factory = fn(SharedClock) -> Arc<dyn ErasedLimiter>;

/// The factory for implementation `L`.
pub fn factory<L: RateLimiter<Key> + 'static>() -> Factory {
    |clock| Arc::new(L::new(clock))
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// Validates a request as the contract says: no limits, a key twice, or a cost above a
/// bucket's burst are errors. Given to learners, like the error types.
pub fn validate<K: Eq>(limits: &[(K, Quota)], cost: u32) -> Result<(), LimitError> {
    if limits.is_empty() {
        return Err(LimitError::NoLimits);
    }
    for (second, (key, _)) in limits.iter().enumerate() {
        if let Some(first) = limits[..second].iter().position(|(k, _)| k == key) {
            return Err(LimitError::DuplicateKey { first, second });
        }
    }
    if let Some((index, (_, quota))) = limits.iter().enumerate().find(|(_, (_, q))| cost > q.burst()) {
        return Err(LimitError::CostExceedsBurst { index, cost, burst: quota.burst() });
    }
    Ok(())
}

/// GCRA for one request over buckets whose stored arrival times are `tats` (`None`
/// for a fresh bucket). Returns the decision and, if allowed, the new arrival times.
/// This is the model's arithmetic, exact in integer nanoseconds.
fn decide(now: Timestamp, limits: &[Quota], tats: &[Option<u64>], cost: u32) -> (Decision, Vec<u64>) {
    let now = now.as_nanos();
    // For each bucket: (arrival time to store if allowed, conforms?, retry after).
    let buckets: Vec<(u64, u64, bool, u64)> = limits
        .iter()
        .zip(tats)
        .map(|(quota, tat)| {
            let tat = tat.unwrap_or(now).max(now);
            let new_tat = tat.saturating_add(u64::from(cost) * quota.period_nanos());
            let earliest = new_tat.saturating_sub(quota.tolerance_nanos());
            (tat, new_tat, earliest <= now, earliest.saturating_sub(now))
        })
        .collect();
    let allowed = buckets.iter().all(|b| b.2);
    let after: Vec<u64> = buckets.iter().map(|&(tat, new_tat, ..)| if allowed { new_tat } else { tat }).collect();
    let remaining: Vec<u32> = limits
        .iter()
        .zip(&after)
        .map(|(q, &tat)| ((now + q.tolerance_nanos()).saturating_sub(tat) / q.period_nanos()) as u32)
        .collect();
    let reset = after.iter().map(|&tat| tat.saturating_sub(now)).max().unwrap_or(0);
    let (limiting, retry) = if allowed {
        let fewest = *remaining.iter().min().unwrap_or(&0);
        (remaining.iter().position(|&r| r == fewest).unwrap_or(0), 0)
    } else {
        let longest = buckets.iter().filter(|b| !b.2).map(|b| b.3).max().unwrap_or(0);
        (buckets.iter().position(|b| !b.2 && b.3 == longest).unwrap_or(0), longest)
    };
    let decision = Decision {
        allowed,
        remaining: remaining.iter().copied().min().unwrap_or(0),
        retry_after: Duration::from_nanos(retry),
        reset_after: Duration::from_nanos(reset),
        limiting,
    };
    (decision, if allowed { after } else { Vec::new() })
}

/// The quotas ops refer to by index, so ops stay short to print.
pub const QUOTAS: [(u32, Duration); 6] = [
    (1, Duration::from_secs(1)),
    (2, Duration::from_secs(1)),
    (3, Duration::from_millis(500)),
    (5, Duration::from_millis(100)),
    (10, Duration::from_secs(60)),
    (4, Duration::from_millis(250)),
];

pub fn quota(index: u8) -> Quota {
    let (burst, period) = QUOTAS[usize::from(index) % QUOTAS.len()];
    Quota::new(burst, period).expect("the fixed quotas are valid")
}

/// One call, or a move of the test's clock.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    /// `check([(key, QUOTAS[q]), ...], cost)`.
    Check {
        limits: Vec<(u8, u8)>,
        cost: u32,
    },
    Advance(Duration),
    /// The clock steps back (it may: NTP, VM migration...).
    Rewind(Duration),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Check { limits, cost } => {
                let limits: Vec<String> = limits.iter().map(|&(k, q)| format!("k{k}: {:?}", quota(q))).collect();
                write!(f, "check([{}], cost {cost})", limits.join(", "))
            }
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
            Op::Rewind(d) => write!(f, "clock.rewind({d:?})"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    Decided(Result<Decision, LimitError>),
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Decided(Ok(d)) => write!(f, "{d:?}"),
            Output::Decided(Err(e)) => write!(f, "Err({e:?})"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

/// The model: each key's stored arrival time, the test clock, and the latest time
/// the limiter has seen (its own time never goes back).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Model {
    clock: Timestamp,
    latest: Timestamp,
    tats: BTreeMap<u8, u64>,
}

/// Where graded clocks start: far enough from zero that rewinds never saturate.
const START: Timestamp = Timestamp::from_nanos(1_000_000_000_000);

/// The rate-limit specification.
struct RateLimitSpec;

/// Graded limiters take no config: quotas come with each request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Config;

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limiter = Limiter::new(clock)")
    }
}

impl Spec for RateLimitSpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(_: &Config) -> Model {
        // The limiter has seen no time until its first check.
        Model { clock: START, latest: Timestamp::ZERO, tats: BTreeMap::new() }
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Advance(d) => {
                model.clock = model.clock + *d;
                Output::Nothing
            }
            Op::Rewind(d) => {
                model.clock = model.clock - *d;
                Output::Nothing
            }
            Op::Check { limits, cost } => {
                let limits: Vec<(u8, Quota)> = limits.iter().map(|&(k, q)| (k, quota(q))).collect();
                if let Err(e) = validate(&limits, *cost) {
                    return Output::Decided(Err(e));
                }
                model.latest = model.latest.max(model.clock);
                let quotas: Vec<Quota> = limits.iter().map(|l| l.1).collect();
                let tats: Vec<Option<u64>> = limits.iter().map(|(k, _)| model.tats.get(k).copied()).collect();
                let (decision, new_tats) = decide(model.latest, &quotas, &tats, *cost);
                for ((key, _), tat) in limits.iter().zip(new_tats) {
                    model.tats.insert(*key, tat);
                }
                // Full buckets are the same as absent ones (time never goes back):
                // dropping them keeps the state canonical.
                let now = model.latest.as_nanos();
                model.tats.retain(|_, tat| *tat > now);
                Output::Decided(Ok(decision))
            }
        }
    }
}

fn apply(limiter: &dyn ErasedLimiter, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Check { limits, cost } => {
            let limits: Vec<(Key, Quota)> = limits.iter().map(|&(k, q)| (Key(k.into()), quota(q))).collect();
            Output::Decided(limiter.check(&limits, *cost))
        }
        Op::Advance(_) | Op::Rewind(_) => apply_clock(clock, op),
    }
}

/// Moves the test's clock (shared by the in-memory and Redis drivers).
fn apply_clock(clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Advance(d) => clock.advance(*d),
        Op::Rewind(d) => clock.set(clock.now() - *d),
        Op::Check { .. } => unreachable!("only clock ops"),
    }
    Output::Nothing
}

fn build(make: Factory, clock: &ManualClock) -> Result<Arc<dyn ErasedLimiter>, CaseError> {
    guarded(|| make(clock.shared())).map_err(|p| p.into_case_error(format!("{Config:?}")))
}

fn replay_on(make: Factory, ops: &[Op]) -> CaseResult {
    replay::<RateLimitSpec, _>(&Config, ops, |_| {
        let clock = ManualClock::starting_at(START);
        let limiter = make(clock.shared());
        move |op: &Op| apply(limiter.as_ref(), &clock, op)
    })
}

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

fn check(limits: &[(u8, u8)], cost: u32) -> Op {
    Op::Check { limits: limits.to_vec(), cost }
}

/// One bucket, quota `q`: every cost from peek to over-burst, and clock steps that
/// land both on and between refill boundaries.
fn single_bucket_letters(q: u8) -> Vec<Op> {
    let burst = quota(q).burst();
    let mut ops: Vec<Op> = (0..=burst.min(2)).map(|cost| check(&[(0, q)], cost)).collect();
    ops.push(check(&[(0, q)], burst + 1));
    ops.push(Op::Advance(Duration::from_millis(400)));
    ops.push(Op::Advance(Duration::from_secs(1)));
    ops
}

/// A user (1/s), an endpoint (2/s) and a tenant (3 per 500ms) checked together and apart.
fn multi_bucket_letters() -> Vec<Op> {
    vec![
        check(&[(0, 0), (1, 1), (2, 2)], 1),
        check(&[(1, 1), (2, 2)], 1),
        check(&[(2, 2)], 2),
        check(&[(0, 0), (1, 1), (2, 2)], 0),
        Op::Advance(Duration::from_millis(500)),
    ]
}

fn random_ops(keys: u8, max_limits: usize, rewinds: bool) -> impl Strategy<Value = Vec<Op>> {
    let limits = proptest::sample::subsequence((0..keys).collect::<Vec<u8>>(), 1..=max_limits)
        .prop_flat_map(|keys| {
            let n = keys.len();
            (
                Just(keys),
                proptest::collection::vec(0..QUOTAS.len() as u8, n),
                proptest::sample::select(vec![true, false]),
            )
        })
        .prop_map(|(keys, quotas, reversed)| {
            let mut limits: Vec<(u8, u8)> = keys.into_iter().zip(quotas).collect();
            if reversed {
                limits.reverse();
            }
            limits
        });
    let check = (limits, 0u32..=4).prop_map(|(limits, cost)| Op::Check { limits, cost });
    let advance = (1u64..=1200).prop_map(|ms| Op::Advance(Duration::from_millis(ms)));
    let rewind = (1u64..=800).prop_map(|ms| Op::Rewind(Duration::from_millis(ms)));
    let op = if rewinds {
        prop_oneof![6 => check, 3 => advance, 1 => rewind].boxed()
    } else {
        prop_oneof![6 => check, 3 => advance].boxed()
    };
    proptest::collection::vec(op, 1..=40)
}

fn edge_scenarios() -> Vec<Vec<Op>> {
    let ms = Duration::from_millis;
    vec![
        // A fresh key allows exactly its burst at one instant.
        vec![
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
        ],
        // cost == burst on a fresh key passes; cost > burst is an error that consumes nothing.
        vec![check(&[(0, 1)], 3), check(&[(0, 1)], 2), check(&[(0, 1)], 0)],
        // Errors: no limits, duplicate key; nothing consumed.
        vec![check(&[], 1), check(&[(0, 0), (1, 1), (0, 2)], 1), check(&[(0, 0)], 1)],
        // Exactly at the refill boundary the token is there; 1ns before it is not.
        vec![
            check(&[(0, 0)], 1),
            Op::Advance(Duration::from_nanos(999_999_999)),
            check(&[(0, 0)], 1),
            Op::Advance(Duration::from_nanos(1)),
            check(&[(0, 0)], 1),
        ],
        // The clock steps back: the limiter keeps its latest time, so nothing changes
        // (no tokens minted, no debt added) until the clock passes that time again.
        vec![
            check(&[(0, 1)], 2),
            Op::Advance(ms(1500)),
            check(&[(0, 1)], 1),
            Op::Rewind(ms(1000)),
            check(&[(0, 1)], 0),
            check(&[(0, 1)], 1),
            Op::Advance(ms(1000)),
            check(&[(0, 1)], 1),
            Op::Advance(ms(500)),
            check(&[(0, 1)], 1),
        ],
        // Denied anywhere consumes nothing everywhere, whichever bucket comes first.
        vec![check(&[(0, 0)], 1), check(&[(1, 1), (0, 0)], 1), check(&[(1, 1)], 2), check(&[(0, 0), (1, 1)], 1)],
        // A long period: retry_after and reset_after in hours without overflow.
        vec![check(&[(0, 4)], 10), check(&[(0, 4)], 1), Op::Advance(Duration::from_secs(59)), check(&[(0, 4)], 1)],
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency and memory
// ---------------------------------------------------------------------------------

const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 3, 300), (3, 4, 300), (4, 5, 150)], seed: 0x1eaf };

fn concurrent_case(make: Factory) -> CaseResult {
    set_forced_yields(true);
    // Small bursts so that histories hit denials; fixed time.
    let pick = |rng: &mut SplitMix, _thread: usize| match rng.below(4) {
        0 => check(&[(0, 0)], 1),
        1 => check(&[(0, 0), (1, 1)], 1),
        2 => check(&[(1, 1), (2, 2)], rng.below(3) as u32),
        _ => check(&[(2, 2)], 1),
    };
    let clock = ManualClock::starting_at(START);
    let result = check_histories::<RateLimitSpec, _>(
        &Config,
        HISTORIES,
        pick,
        || build(make, &clock),
        |l, op| apply(l.as_ref(), &clock, op),
    );
    set_forced_yields(false);
    result
}

/// Many threads on shared buckets at one instant: exactly the burst passes, and
/// all-or-nothing holds under contention.
fn exact_admission(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    let tenant = Quota::new(40, Duration::from_secs(3600)).expect("valid");
    let user = Quota::new(8, Duration::from_secs(3600)).expect("valid");
    let allowed = AtomicUsize::new(0);
    let per_user: Vec<AtomicUsize> = (0..THREADS).map(|_| AtomicUsize::new(0)).collect();
    let barrier = Barrier::new(THREADS);
    let outcomes: Vec<thread::Result<Result<(), LimitError>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (limiter, allowed, per_user, barrier) = (&limiter, &allowed, &per_user, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        let limits = [(Key(100 + t as u32), user), (Key(0), tenant)];
                        if limiter.check(&limits, 1)?.allowed {
                            allowed.fetch_add(1, Ordering::SeqCst);
                            per_user[t].fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for outcome in outcomes {
        match outcome {
            Err(p) => return Err(Panic::from_payload(p.as_ref()).into_case_error("check under contention")),
            Ok(Err(e)) => {
                return Err(CaseError::failed(format!("check([user 8/1h, tenant 40/1h], 1) returned Err({e:?})")))
            }
            Ok(Ok(())) => {}
        }
    }
    let allowed = allowed.load(Ordering::SeqCst);
    let users: Vec<usize> = per_user.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    if allowed != 40 || users.iter().any(|&u| u > 8) {
        return Err(CaseError::failed(format!(
            "{THREADS} threads × 20 checks of [user_t 8/1h, tenant 40/1h] at one instant: {allowed} allowed \
             (expected exactly the tenant's 40), per user {users:?} (each at most 8)"
        )));
    }
    Ok(())
}

/// A flood of unique keys, each spending its one token: memory must follow the keys
/// still in debt, not every key ever seen.
fn flood_of_unique_keys(make: Factory) -> CaseResult {
    const PER_STEP: u32 = 2_000;
    const STEPS: u32 = 60;
    let step = Duration::from_millis(50);
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    // Each key is in debt for 100ms after its request; steps are 50ms apart, so at
    // most the last two steps' keys (4,000) are in debt at any time.
    let quota = Quota::new(1, Duration::from_millis(100)).expect("valid");
    let in_debt = 2 * PER_STEP as usize;
    let bound = 4 * in_debt + 4096;
    for round in 0..STEPS {
        for i in 0..PER_STEP {
            let key = Key(1_000 + round * PER_STEP + i);
            match limiter.check(&[(key, quota)], 1) {
                Ok(d) if d.allowed => {}
                other => {
                    return Err(CaseError::failed(format!(
                        "the first check of fresh key {key:?} (quota 1/100ms) returned {other:?}"
                    )))
                }
            }
        }
        let tracked = limiter.tracked_keys();
        if tracked > bound {
            return Err(CaseError::failed(format!(
                "after {} unique keys ({PER_STEP} every 50ms, each in debt for 100ms), tracked_keys() = {tracked}: \
                 at most {in_debt} buckets are not full, so memory should stay within {bound}",
                (round + 1) * PER_STEP
            )));
        }
        clock.advance(step);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The distributed level: the same contract on Redis
// ---------------------------------------------------------------------------------

/// What a Redis-backed limiter answers when Redis cannot (down, or too slow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnavailable {
    /// Let the request through: availability over strictness.
    FailOpen,
    /// Refuse to decide: `Err(RedisLimitError::Unavailable)`.
    FailClosed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLimiterConfig {
    /// Prefix of every key, and their Redis Cluster hash tag: `{namespace}:...`.
    pub namespace: String,
    /// Longest wait for Redis on one call, connecting included.
    pub timeout: Duration,
    pub when_unavailable: WhenUnavailable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisLimitError {
    /// The request itself is wrong (as in memory).
    Invalid(LimitError),
    /// Redis did not answer within the timeout or the connection failed (fail-closed).
    Unavailable(String),
}

impl fmt::Display for RedisLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisLimitError::Invalid(e) => write!(f, "{e}"),
            RedisLimitError::Unavailable(why) => write!(f, "Redis unavailable: {why}"),
        }
    }
}

impl std::error::Error for RedisLimitError {}

/// The decision a fail-open limiter gives when Redis cannot answer.
pub const FAIL_OPEN: Decision =
    Decision { allowed: true, remaining: 0, retry_after: Duration::ZERO, reset_after: Duration::ZERO, limiting: 0 };

/// The distributed contract: [`RateLimiter`]'s semantics, shared by every instance
/// connected to the same Redis and namespace. Implement it for `RedisLimiter` in
/// `exercises/src/rate_limit.rs`.
///
/// * One round trip per `check`: one Lua script reads and writes all of a request's
///   buckets atomically. Every key carries the same hash tag (`{namespace}`), so a
///   request's keys live in one Redis Cluster slot.
/// * Time is the caller's clock, sent in whole microseconds (Lua numbers are doubles);
///   the namespace's latest time is kept in Redis, so instances with skewed clocks
///   never mint tokens for one another. Periods round up to whole microseconds.
/// * Full buckets expire (a TTL on every bucket key): memory follows the keys in debt.
/// * Redis down or slow: each call returns within `timeout` (plus scheduling), either
///   [`FAIL_OPEN`] or `Err(Unavailable)`, and works again once Redis is back.
pub trait RedisRateLimiter: Send + Sync + Sized {
    fn connect(
        url: &str,
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> impl Future<Output = Result<Self, RedisLimitError>> + Send;
    fn check(
        &self,
        limits: &[(&str, Quota)],
        cost: u32,
    ) -> impl Future<Output = Result<Decision, RedisLimitError>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The distributed limiter under test, behind a trait object.
pub trait ErasedRedisLimiter: Send + Sync {
    fn check<'a>(
        &'a self,
        limits: &'a [(String, Quota)],
        cost: u32,
    ) -> BoxFuture<'a, Result<Decision, RedisLimitError>>;
}

impl<L: RedisRateLimiter> ErasedRedisLimiter for L {
    fn check<'a>(
        &'a self,
        limits: &'a [(String, Quota)],
        cost: u32,
    ) -> BoxFuture<'a, Result<Decision, RedisLimitError>> {
        Box::pin(async move {
            let limits: Vec<(&str, Quota)> = limits.iter().map(|(k, q)| (k.as_str(), *q)).collect();
            RedisRateLimiter::check(self, &limits, cost).await
        })
    }
}

pub type RedisFactory = fn(
    String,
    RedisLimiterConfig,
    SharedClock,
) -> BoxFuture<'static, Result<Arc<dyn ErasedRedisLimiter>, RedisLimitError>>;

pub fn redis_factory<L: RedisRateLimiter + 'static>() -> RedisFactory {
    |url, config, clock| {
        Box::pin(async move {
            let limiter = L::connect(&url, config, clock).await?;
            Ok(Arc::new(limiter) as Arc<dyn ErasedRedisLimiter>)
        })
    }
}

fn redis_config(namespace: String, when_unavailable: WhenUnavailable) -> RedisLimiterConfig {
    RedisLimiterConfig { namespace, timeout: CALL_TIMEOUT, when_unavailable }
}

fn apply_redis(rt: &tokio::runtime::Runtime, limiter: &dyn ErasedRedisLimiter, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Check { limits, cost } => {
            let limits: Vec<(String, Quota)> = limits.iter().map(|&(k, q)| (format!("k{k}"), quota(q))).collect();
            Output::Decided(rt.block_on(limiter.check(&limits, *cost)).map_err(|e| match e {
                RedisLimitError::Invalid(e) => e,
                // Not a decision the model can make: show it as a failure at this step.
                RedisLimitError::Unavailable(why) => panic!("Redis unavailable during a replay: {why}"),
            }))
        }
        Op::Advance(_) | Op::Rewind(_) => apply_clock(clock, op),
    }
}

fn redis_sequences(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = &runtime()?;
    let replay_redis = |ops: &[Op]| {
        replay::<RateLimitSpec, _>(&Config, ops, |_| {
            let clock = ManualClock::starting_at(START);
            let config = redis_config(fresh_namespace("seq"), WhenUnavailable::FailClosed);
            let limiter = rt
                .block_on(make(server.url().to_string(), config, clock.shared()))
                .unwrap_or_else(|e| panic!("connect({}) failed: {e}", server.url()));
            move |op: &Op| apply_redis(rt, limiter.as_ref(), &clock, op)
        })
    };
    // Whole-microsecond inputs only (Redis levels run on microseconds).
    let microsecond_edges = edge_scenarios().into_iter().filter(|ops| {
        ops.iter().all(|op| !matches!(op, Op::Advance(d) | Op::Rewind(d) if d.subsec_nanos() % 1_000 != 0))
    });
    for ops in microsecond_edges {
        replay_redis(&ops)?;
    }
    replay_redis(&[
        check(&[(0, 0)], 1),
        Op::Advance(Duration::from_micros(999_999)),
        check(&[(0, 0)], 1),
        Op::Advance(Duration::from_micros(1)),
        check(&[(0, 0)], 1),
    ])?;
    random(random_ops(5, 3, true), Budget { cases: 64, ..Budget::default() }, |ops| replay_redis(ops))
}

/// Instances with separate connections and skewed clocks share one bucket: together
/// they admit exactly its burst.
fn instances_share_the_burst(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let namespace = fresh_namespace("shared");
    let skews = [0i64, 3_000, -2_000, 7_000];
    let quota = Quota::new(20, Duration::from_secs(3600)).expect("valid");
    let mut instances = Vec::new();
    for skew in skews {
        let clock =
            ManualClock::starting_at(Timestamp::from_nanos((START.as_nanos() as i64 + skew * 1_000_000) as u64));
        let config = redis_config(namespace.clone(), WhenUnavailable::FailClosed);
        let limiter = rt
            .block_on(make(server.url().to_string(), config, clock.shared()))
            .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
        instances.push((skew, limiter));
    }
    let allowed: Vec<Result<usize, RedisLimitError>> = rt.block_on(async {
        let tasks: Vec<_> = instances
            .iter()
            .map(|(_, limiter)| {
                let limiter = Arc::clone(limiter);
                tokio::spawn(async move {
                    let limits = vec![("shared".to_string(), quota)];
                    let mut allowed = 0;
                    for _ in 0..15 {
                        if limiter.check(&limits, 1).await?.allowed {
                            allowed += 1;
                        }
                    }
                    Ok(allowed)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap_or_else(|e| Err(RedisLimitError::Unavailable(format!("task failed: {e}")))));
        }
        results
    });
    let mut per_instance = Vec::new();
    for result in allowed {
        per_instance.push(result.map_err(|e| CaseError::failed(format!("check on a shared key returned Err({e})")))?);
    }
    let total: usize = per_instance.iter().sum();
    if total != 20 {
        return Err(CaseError::failed(format!(
            "4 instances (clock skews {skews:?} ms) each checked a shared 20/1h bucket 15 times at once: {total} allowed in all \
             (per instance {per_instance:?}), expected exactly 20"
        )));
    }
    Ok(())
}

/// Kill Redis mid-use: calls return within the timeout with the configured answer, and
/// work again once Redis is back.
fn outage(make: RedisFactory, when_unavailable: WhenUnavailable) -> CaseResult {
    let mut server = RedisServer::start()?;
    if !server.owned() {
        return Err(CaseError::Skipped("REDIS_URL points at an external server, which this case cannot kill".into()));
    }
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    let config = RedisLimiterConfig {
        timeout: OUTAGE_CALL_TIMEOUT,
        ..redis_config(fresh_namespace("outage"), when_unavailable)
    };
    let limiter = rt
        .block_on(make(server.url().to_string(), config, clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    let limits = vec![("user".to_string(), quota(4))];
    let checked = |limiter: &Arc<dyn ErasedRedisLimiter>| {
        // 5s: ten times the configured timeout; a call that takes longer has hung.
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), limiter.check(&limits, 1)).await })
    };
    match checked(&limiter) {
        Ok(Ok(d)) if d.allowed => {}
        other => return Err(CaseError::failed(format!("before the outage, the first check returned {other:?}"))),
    }
    server.kill();
    let expected = match when_unavailable {
        WhenUnavailable::FailOpen => "Ok(FAIL_OPEN)",
        WhenUnavailable::FailClosed => "Err(Unavailable(..))",
    };
    for attempt in 1..=3 {
        match (when_unavailable, checked(&limiter)) {
            (_, Err(_)) => {
                return Err(CaseError::failed(format!(
                    "with Redis down, check #{attempt} had not returned after 5s (timeout configured: 500ms); expected {expected}"
                )))
            }
            (WhenUnavailable::FailOpen, Ok(Ok(d))) if d == FAIL_OPEN => {}
            (WhenUnavailable::FailClosed, Ok(Err(RedisLimitError::Unavailable(_)))) => {}
            (_, Ok(other)) => {
                return Err(CaseError::failed(format!("with Redis down, check #{attempt} returned {other:?}, expected {expected}")))
            }
        }
    }
    server.restart()?;
    // Back means a real decision again (a fail-open limiter answers FAIL_OPEN while down).
    let back = |d: &Decision| *d != FAIL_OPEN || when_unavailable == WhenUnavailable::FailClosed;
    match within_reconnect_window(|| checked(&limiter).ok()?.ok().filter(back)) {
        Some(_) => Ok(()),
        None => {
            Err(CaseError::failed("Redis was restarted, but checks still failed 5s later: the limiter must reconnect"))
        }
    }
}

/// One round trip per decision; every key hash-tagged alike and given a TTL.
fn round_trips_and_keys(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let counter = CommandCounter::start(server.url()).map_err(|e| CaseError::failed(format!("counting proxy: {e}")))?;
    let rt = runtime()?;
    let namespace = fresh_namespace("trips");
    let clock = ManualClock::starting_at(START);
    let limiter = rt
        .block_on(make(
            counter.url.clone(),
            redis_config(namespace.clone(), WhenUnavailable::FailClosed),
            clock.shared(),
        ))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    let limits = vec![
        ("user-1".to_string(), quota(4)),
        ("endpoint-/pay".to_string(), quota(3)),
        ("tenant-9".to_string(), quota(5)),
    ];
    // Warm up (the first call may load the script), then count.
    let _ = rt.block_on(limiter.check(&limits, 1));
    let before = counter.commands();
    for _ in 0..50 {
        rt.block_on(limiter.check(&limits, 1)).map_err(|e| CaseError::failed(format!("check returned Err({e})")))?;
    }
    let commands = counter.commands() - before;
    if commands != 50 {
        return Err(CaseError::failed(format!(
            "50 checks of 3 buckets sent {commands} commands to Redis: expected one round trip (one script call) per check"
        )));
    }
    // Buckets, plus the namespace's latest time (the one key that never expires).
    check_namespace_keys(&rt, server.url(), &namespace, 4, 1)
}

// ---------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------

pub const EXERCISE: &str = "rate_limit";
pub const L1: Level = Level { number: 1, name: "single_bucket" };
pub const L2: Level = Level { number: 2, name: "multi_bucket" };
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
            "The in-memory contract, replayed on Redis: one Lua script per check computes GCRA for all the request's buckets (now in µs from ARGV, \
             the namespace's latest time in a key of its own) and writes only if all conform.",
            redis_sequences),
        case("instances_share_the_burst",
            "Separate instances with skewed clocks share buckets through Redis: keep the namespace's latest time in Redis and use max(clock, latest), \
             atomically in the script.",
            instances_share_the_burst),
        case("outage_fail_closed",
            "Bound every call with the configured timeout (tokio::time::timeout) and map connection errors to RedisLimitError::Unavailable; \
             a reconnecting client (redis::aio::ConnectionManager) recovers once Redis is back.",
            |make| outage(make, WhenUnavailable::FailClosed)),
        case("outage_fail_open",
            "In fail-open mode, a call Redis cannot answer in time returns FAIL_OPEN (allowed) instead of an error.",
            |make| outage(make, WhenUnavailable::FailOpen)),
        case("round_trips_and_keys",
            "One EVALSHA per check (redis::Script), keys named {namespace}:... so they share a Cluster slot, and a PX expiry on every bucket key.",
            round_trips_and_keys),
    ]
}

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hint, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hint, deadline, move || run(make))
    };
    vec![
        case(L1, "short_sequences",
            "Every short sequence on one bucket (bursts 1-3 per second). Keep one number per key, the theoretical arrival time (TAT): \
             tat = max(stored, now); allowed iff tat + cost·T ≤ now + burst·T; then store tat + cost·T. remaining = ⌊(now + burst·T − tat)/T⌋.",
            QUICK, |make| exhaustive(&[0u8, 1, 2], |&q| single_bucket_letters(q), 6, |_| true, |_, ops| replay_on(make, ops))),
        case(L1, "random_sequences",
            "Longer random sequences on one or two buckets. retry_after must be exact: the earliest instant at which the same request passes (tat + cost·T − burst·T − now).",
            QUICK, |make| random(random_ops(2, 1, false), Budget::default(), |ops| replay_on(make, ops))),
        case(L2, "short_sequences",
            "A user, an endpoint and a tenant checked together: allowed only if every bucket has the tokens, and a denial consumes nothing in any bucket \
             (decide for all buckets first, then apply). retry_after is the longest of the violated buckets'.",
            QUICK, |make| exhaustive(&[Config], |_| multi_bucket_letters(), 6, |_| true, |_, ops| replay_on(make, ops))),
        case(L2, "random_sequences",
            "Random requests over up to 3 of 5 keys with mixed quotas, clock steps and clock rewinds. Use max(clock, latest time seen) as now: a rewound clock changes nothing.",
            QUICK, |make| random(random_ops(5, 3, true), Budget::default(), |ops| replay_on(make, ops))),
        case(L2, "edges",
            "Edge cases: exactly the burst at one instant, the refill boundary (allowed exactly at it, denied 1ns before), cost 0 peeks, \
             cost > burst / duplicate keys / no limits are errors that change nothing, a clock that steps back, hour-long periods.",
            QUICK, |make| edge_scenarios().iter().try_for_each(|ops| replay_on(make, ops))),
        case(L3, "linearizable",
            "Concurrent checks on overlapping buckets must be linearizable: lock every bucket a request names (in a fixed order, to avoid deadlock), decide, apply, unlock.",
            THREADED, concurrent_case),
        case(L3, "exact_admission",
            "8 threads hammer a shared tenant bucket through their own user buckets at one instant: exactly the tenant's burst may pass, no user over its own.",
            THREADED, exact_admission),
        case(L4, "flood_of_unique_keys",
            "A full bucket is the same as no bucket: drop buckets whose TAT ≤ now (e.g. sweep when the map has doubled since the last sweep), so memory follows the keys in debt.",
            THREADED, flood_of_unique_keys),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        START + Duration::from_millis(ms)
    }

    #[test]
    fn quota_validation_gives_typed_errors() {
        assert_eq!(Quota::new(0, Duration::from_secs(1)), Err(QuotaError::ZeroBurst));
        assert_eq!(Quota::new(1, Duration::ZERO), Err(QuotaError::ZeroPeriod));
        assert!(matches!(Quota::new(u32::MAX, Duration::from_secs(1 << 40)), Err(QuotaError::TooLong { .. })));
        assert_eq!(quota(0).tolerance_nanos(), 1_000_000_000);
    }

    #[test]
    fn gcra_allows_exactly_the_burst_then_one_per_period() {
        let q = quota(3); // 5 per 100ms
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..8 {
            let (d, new) = decide(at(0), &[q], &[tat], 1);
            if d.allowed {
                allowed += 1;
                tat = Some(new[0]);
            } else {
                // retry_after is exact: denied 1ns before, allowed at it.
                let ra = d.retry_after;
                assert_eq!(ra, Duration::from_millis(100));
                assert!(!decide(at(0) + ra - Duration::from_nanos(1), &[q], &[tat], 1).0.allowed);
                assert!(decide(at(0) + ra, &[q], &[tat], 1).0.allowed);
            }
        }
        assert_eq!(allowed, 5);
    }

    #[test]
    fn denial_reports_the_longest_wait_and_consumes_nothing() {
        let (d, new) = decide(at(0), &[quota(0), quota(1)], &[Some(at(1000).as_nanos()), Some(at(2500).as_nanos())], 1);
        assert!(!d.allowed);
        assert!(new.is_empty());
        assert_eq!(d.retry_after, Duration::from_millis(1500));
        assert_eq!(d.limiting, 1);
        assert_eq!(d.reset_after, Duration::from_millis(2500));
    }

    #[test]
    fn requests_are_validated_before_anything() {
        assert_eq!(validate::<u8>(&[], 1), Err(LimitError::NoLimits));
        assert_eq!(
            validate(&[(1, quota(0)), (2, quota(0)), (1, quota(1))], 1),
            Err(LimitError::DuplicateKey { first: 0, second: 2 })
        );
        assert_eq!(
            validate(&[(1, quota(1)), (2, quota(0))], 2),
            Err(LimitError::CostExceedsBurst { index: 1, cost: 2, burst: 1 })
        );
    }

    #[test]
    fn headers_follow_the_ietf_draft_and_round_up() {
        let denied = Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_millis(1500),
            reset_after: Duration::from_millis(9001),
            limiting: 0,
        };
        assert_eq!(
            denied.headers("per-user", Quota::new(10, Duration::from_secs(6)).unwrap()),
            vec![
                ("RateLimit-Policy", "\"per-user\";q=10;w=60".to_string()),
                ("RateLimit", "\"per-user\";r=0;t=10".to_string()),
                ("Retry-After", "2".to_string()),
            ]
        );
        let allowed = Decision {
            allowed: true,
            remaining: 3,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
            limiting: 0,
        };
        let headers = allowed.headers("a\"b", Quota::new(5, Duration::from_millis(100)).unwrap());
        assert_eq!(headers.len(), 2, "no Retry-After when allowed");
        assert_eq!(headers[0].1, "\"a_b\";q=5;w=1", "quotes are not allowed in the name; windows round up to 1s");
    }
}
