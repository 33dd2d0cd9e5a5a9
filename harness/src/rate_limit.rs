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

use crate::clock::{Clock, ManualClock, SharedClock, Stopwatch, Timestamp};
use crate::heap::{show_bytes, HeapMeter};
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

/// The time domain, in nanoseconds, for quotas and clocks alike: a quota's
/// τ = burst × period and every clock reading stay below 2^63 ns (about 292 years), so
/// every bucket's arrival time (at most now + τ) fits in a `u64` (and `now`, `τ` in an
/// `i64`). Intermediate sums such as `tat + cost × period` may not fit: compute them in
/// `u128`, or rearranged so they cannot overflow (`tat - (τ - cost × period)`).
pub const NANOS_LIMIT: u64 = 1 << 63;

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
    /// `burst × period` must be below [`NANOS_LIMIT`] (2^63 ns, about 292 years).
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
                write!(f, "burst {burst} × period {period:?} reaches 2^63 ns (about 292 years)")
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
        let fits = u64::try_from(period.as_nanos())
            .ok()
            .and_then(|t| t.checked_mul(u64::from(burst)))
            .is_some_and(|tolerance| tolerance < NANOS_LIMIT);
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

    /// τ = burst × T: how far ahead of now a bucket's debt may run (below [`NANOS_LIMIT`]).
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

/// The answer to one request (over buckets each checked under the one quota its key
/// always has: see [`RateLimiter`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    pub allowed: bool,
    /// Tokens left, in the bucket with the fewest (after this request, if allowed).
    pub remaining: u32,
    /// Zero if allowed; else how long until this same request would be allowed.
    pub retry_after: Duration,
    /// How long until every bucket of this request is full again.
    pub reset_after: Duration,
    /// Index (into the request's limits, in the caller's order) of the bucket that
    /// decided: if denied, the violated bucket with the longest `retry_after`; if
    /// allowed, the one with the fewest `remaining`. The first such on ties.
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
/// nanoseconds; a classic token bucket, credit + last refill, is equivalent). With quota
/// (burst B, period T), τ = B·T:
/// * **A key is bound to one quota for its whole life**: callers always name a key with
///   the same quota (in production the policy is part of the key, e.g.
///   `user:42:per-minute`). Checking a known key under another quota is outside the
///   contract (what a bucket stores, TAT or credit, need not survive it); the grader
///   never does it.
/// * a fresh key is full: B tokens. Over any interval [0, t], at most B + ⌊t/T⌋ cost
///   is allowed; exactly at a refill boundary the token is there.
/// * `check(limits, cost)` is all-or-nothing: allowed iff **every** bucket has `cost`
///   tokens; then each pays `cost`. A denied request consumes nothing anywhere. The
///   order of `limits` is the caller's: it only numbers the buckets for
///   [`Decision::limiting`] and errors (lock buckets in an order of your own).
/// * `cost == 0` is a peek: nothing is consumed; allowed iff no bucket is over its limit.
/// * Time: the limiter uses `max(clock.now(), the latest time it has seen)`, so a
///   clock that steps back changes nothing (and in particular mints no tokens).
/// * Domain: any valid [`Quota`] (τ below [`NANOS_LIMIT`]: periods of 1ns or odd
///   nanoseconds, bursts up to `u32::MAX`, costs up to the burst) and clock readings
///   below [`NANOS_LIMIT`]: arithmetic must be exact and must not overflow there.
/// * Errors, checked before anything else and changing nothing: no limits, the same
///   key twice, a cost above some bucket's burst (see [`validate`]).
/// * Decision numbers: see [`Decision`]; `remaining` counts whole tokens;
///   `retry_after` is exact (denied at `retry_after - 1ns`, allowed at `retry_after`).
/// * Memory: a full bucket is the same as no bucket, so idle full buckets must be
///   dropped (a bucket that is not full must never be: it would come back full). Under
///   a steady flood of unique keys, live heap (everything the limiter holds, side
///   tables included) stays within [`HEAP_PER_BUCKET`] bytes per bucket in debt (not
///   full) plus [`HEAP_SLACK`], for keys of up to 8 bytes: memory follows the keys
///   with tokens spent in the last burst window, not every key seen. (A table may keep
///   the capacity its peak load needed.)
/// * Thread-safe and linearizable, like every exercise, forward clock moves included: a
///   check decides at one instant, between the clock moves before and after it. (A
///   check racing with a clock that steps back may still use the time it read before
///   the step; per bucket, time never goes back.)
pub trait RateLimiter<K>: Send + Sync + Sized
where
    K: Hash + Eq + Clone + Send + Sync,
{
    fn new(clock: SharedClock) -> Self;
    /// Decides one request over the buckets `limits` names, each key with the one
    /// quota it always has (see the trait).
    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError>;
}

/// Heap bytes a limiter may hold per bucket in debt (graded keys are 4 bytes): room for
/// a bucket of a few words (a TAT or credit + last refill, even its quota), a hash
/// map's load factor and power-of-two growth, and sweeping only once the map has
/// doubled. The reference holds about a third of it.
pub const HEAP_PER_BUCKET: usize = 256;
/// Heap bytes a limiter may hold whatever its load: shards, empty tables, a clock.
pub const HEAP_SLACK: usize = 256 * 1024;

/// The limiter under test, behind a trait object so the suite is compiled once.
pub trait ErasedLimiter: Send + Sync {
    fn check(&self, limits: &[(Key, Quota)], cost: u32) -> Result<Decision, LimitError>;
}

impl<L: RateLimiter<Key>> ErasedLimiter for L {
    fn check(&self, limits: &[(Key, Quota)], cost: u32) -> Result<Decision, LimitError> {
        RateLimiter::check(self, limits, cost)
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
/// This is the model's arithmetic, exact in integer nanoseconds: sums are taken in
/// `u128` (`tat + cost·T` may pass `u64::MAX`); stored times fit in `u64` (at most
/// now + τ, both below [`NANOS_LIMIT`]).
fn decide(now: Timestamp, limits: &[Quota], tats: &[Option<u64>], cost: u32) -> (Decision, Vec<u64>) {
    let now = u128::from(now.as_nanos());
    // For each bucket: (arrival time now, arrival time if allowed, conforms?, retry after).
    let buckets: Vec<(u128, u128, bool, u128)> = limits
        .iter()
        .zip(tats)
        .map(|(quota, tat)| {
            let tat = tat.map_or(now, u128::from).max(now);
            let new_tat = tat + u128::from(cost) * u128::from(quota.period_nanos());
            let earliest = new_tat.saturating_sub(u128::from(quota.tolerance_nanos()));
            (tat, new_tat, earliest <= now, earliest.saturating_sub(now))
        })
        .collect();
    let allowed = buckets.iter().all(|b| b.2);
    let after: Vec<u128> = buckets.iter().map(|&(tat, new_tat, ..)| if allowed { new_tat } else { tat }).collect();
    let remaining: Vec<u32> = limits
        .iter()
        .zip(&after)
        .map(|(q, &tat)| {
            let whole = (now + u128::from(q.tolerance_nanos())).saturating_sub(tat) / u128::from(q.period_nanos());
            u32::try_from(whole).expect("at most the burst")
        })
        .collect();
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).expect("within τ"));
    let reset = after.iter().map(|&tat| tat - now).max().unwrap_or(0);
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
        retry_after: nanos(retry),
        reset_after: nanos(reset),
        limiting,
    };
    let stored =
        if allowed { after.iter().map(|&t| u64::try_from(t).expect("below 2^64")).collect() } else { Vec::new() };
    (decision, stored)
}

/// The quotas ops refer to by index, so ops stay short to print. They span the domain
/// the contract allows: second- and minute-scale, sub-millisecond and odd-nanosecond
/// periods, bursts up to `u32::MAX`, and τ up to the [`NANOS_LIMIT`] bound.
pub const QUOTAS: [(u32, Duration); 13] = [
    (1, Duration::from_secs(1)),
    (2, Duration::from_secs(1)),
    (3, Duration::from_millis(500)),
    (5, Duration::from_millis(100)),
    (10, Duration::from_secs(60)),
    (4, Duration::from_millis(250)),
    (7, Duration::from_micros(333)),
    (1_000_000, Duration::from_micros(3)),
    // From here on: periods that are not whole microseconds, or τ past what Redis's
    // doubles hold exactly (see `REDIS_QUOTAS`).
    (3, Duration::from_nanos(333_333)),
    (u32::MAX, Duration::from_nanos(1)),
    // τ = 2^63 - 2 ns: `tat + cost·T` passes u64::MAX once the bucket is in debt.
    (2, Duration::from_nanos(4_611_686_018_427_387_903)),
    (u32::MAX, Duration::from_nanos(2_147_483_647)),
    // τ = 2^63 - 1 ns: the longest quota there is.
    (1, Duration::from_nanos(9_223_372_036_854_775_807)),
];

/// Quotas `QUOTAS[..REDIS_QUOTAS]` are exact on Redis (whole-microsecond periods, τ far
/// below 2^53 µs); Redis replays use only those.
pub const REDIS_QUOTAS: u8 = 8;

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

    fn hint(_: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        let (Output::Decided(expected), Output::Decided(actual)) = (expected, actual) else { return None };
        Some(match (expected, actual) {
            (Err(_), _) | (_, Err(_)) => {
                "Errors come first and change nothing: no limits is NoLimits, a key named twice is DuplicateKey (first and \
                 second positions), a cost above some bucket's burst is CostExceedsBurst (the first such bucket). A valid \
                 request is never an error."
            }
            (Ok(e), Ok(a)) if e.allowed != a.allowed => {
                "allowed iff every bucket has `cost` tokens at now = max(clock, latest time seen): with tat = max(stored, now), \
                 tat + cost·T ≤ now + burst·T. A denied request pays nothing in any bucket, a peek (cost 0) pays nothing, a full \
                 bucket is the same as a fresh one, a clock that steps back changes nothing, and a bucket in debt is never dropped."
            }
            (Ok(e), Ok(a)) if e.retry_after != a.retry_after => {
                "retry_after is exact to the nanosecond: the longest, over the violated buckets, of tat + cost·T − burst·T − now \
                 (zero when allowed). Near τ = 2^63 ns, tat + cost·T passes u64::MAX: use u128 or tat − (burst − cost)·T."
            }
            (Ok(e), Ok(a)) if e.remaining != a.remaining => {
                "remaining counts whole tokens in the bucket with the fewest, after paying if allowed: ⌊(now + burst·T − tat)/T⌋, \
                 with the partial refill since the last check included."
            }
            (Ok(e), Ok(a)) if e.reset_after != a.reset_after => {
                "reset_after is how long until every bucket of the request is full again: the largest tat − now, after paying if allowed."
            }
            _ => {
                "limiting indexes the request's limits in the caller's order: the violated bucket with the longest retry_after if \
                 denied, the bucket with the fewest remaining if allowed; the first such on ties."
            }
        })
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Advance(d) => {
                model.clock = model.clock.advanced(*d);
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

// Inputs
// ---------------------------------------------------------------------------------

fn check(limits: &[(u8, u8)], cost: u32) -> Op {
    Op::Check { limits: limits.to_vec(), cost }
}

/// Whether every key in `ops` is always named with the same quota: the contract binds a
/// key to one quota, so no generated sequence ever changes it.
fn quotas_fixed(ops: &[Op]) -> bool {
    let mut bound = BTreeMap::new();
    ops.iter().all(|op| match op {
        Op::Check { limits, .. } => limits.iter().all(|&(k, q)| *bound.entry(k).or_insert(q) == q),
        _ => true,
    })
}

/// Whether the test clock stays below [`NANOS_LIMIT`], the contract's time domain.
fn within_time_domain(ops: &[Op]) -> bool {
    let mut clock = u128::from(START.as_nanos());
    ops.iter().all(|op| {
        if let Op::Advance(d) = op {
            clock += d.as_nanos();
        }
        clock < u128::from(NANOS_LIMIT)
    })
}

/// What generated sequences must satisfy: inside the contract's domain.
fn admissible(ops: &[Op]) -> bool {
    quotas_fixed(ops) && within_time_domain(ops)
}

/// One bucket, quota `q`: every cost from peek to over-burst (the whole burst when it
/// is large), and clock steps that land both on and between refill boundaries.
fn single_bucket_letters(q: u8) -> Vec<Op> {
    let burst = quota(q).burst();
    let period = quota(q).period();
    let mut costs = vec![0, 1, burst.min(2)];
    if burst > 3 {
        costs.push(burst);
    }
    costs.extend(burst.checked_add(1));
    costs.dedup();
    let mut ops: Vec<Op> = costs.into_iter().map(|cost| check(&[(0, q)], cost)).collect();
    ops.push(Op::Advance((period * 2 / 5).max(Duration::from_nanos(1))));
    ops.push(Op::Advance(period));
    ops
}

/// A user (1/s), an endpoint (2/s) and a tenant (3 per 500ms) checked together and
/// apart, listed in different orders.
fn multi_bucket_letters() -> Vec<Op> {
    vec![
        check(&[(0, 0), (1, 1), (2, 2)], 1),
        check(&[(2, 2), (1, 1)], 1),
        check(&[(2, 2)], 2),
        check(&[(1, 1), (2, 2), (0, 0)], 0),
        Op::Advance(Duration::from_millis(500)),
    ]
}

/// Clock steps: whole milliseconds and microseconds, plus (`fine`) odd nanoseconds and
/// steps of up to a year.
fn clock_steps(fine: bool, max_ms: u64) -> BoxedStrategy<Duration> {
    let ms = (1..=max_ms).prop_map(Duration::from_millis);
    let us = (1u64..=5_000).prop_map(Duration::from_micros);
    if fine {
        let ns = (1u64..=2_000_000_000).prop_map(Duration::from_nanos);
        let years = (1u64..=365 * 24 * 3600).prop_map(Duration::from_secs);
        prop_oneof![3 => ms, 1 => us, 2 => ns, 1 => years].boxed()
    } else {
        prop_oneof![3 => ms, 1 => us].boxed()
    }
}

/// Random sequences over `keys` keys, up to `max_limits` per request in a random order,
/// quotas drawn from `QUOTAS[..quotas]`. A key keeps the quota it was first named with
/// (the contract binds a key to one quota); costs run from peeks to the whole burst and
/// one past it.
fn random_ops(keys: u8, max_limits: usize, quotas: u8, rewinds: bool, fine: bool) -> impl Strategy<Value = Vec<Op>> {
    let limits = proptest::sample::subsequence((0..keys).collect::<Vec<u8>>(), 1..=max_limits)
        .prop_shuffle()
        .prop_flat_map(move |keys| {
            let n = keys.len();
            (Just(keys), proptest::collection::vec(0..quotas, n))
        })
        .prop_map(|(keys, quotas)| keys.into_iter().zip(quotas).collect::<Vec<(u8, u8)>>());
    // Costs: 0-6 as drawn (small), 7 = the smallest burst, 8 = one less, 9 = one more.
    let check = (limits, 0u32..=9).prop_map(|(limits, cost)| Op::Check { limits, cost });
    let advance = clock_steps(fine, 1200).prop_map(Op::Advance);
    let rewind = clock_steps(false, 800).prop_map(Op::Rewind);
    let op = if rewinds {
        prop_oneof![6 => check, 3 => advance, 1 => rewind].boxed()
    } else {
        prop_oneof![6 => check, 3 => advance].boxed()
    };
    proptest::collection::vec(op, 1..=40).prop_map(normalise)
}

/// Binds each key to the quota it is first named with, and turns cost codes into costs
/// relative to the request's smallest burst (see [`random_ops`]).
fn normalise(mut ops: Vec<Op>) -> Vec<Op> {
    let mut bound = BTreeMap::new();
    for op in &mut ops {
        if let Op::Check { limits, cost } = op {
            for (k, q) in limits.iter_mut() {
                *q = *bound.entry(*k).or_insert(*q);
            }
            let burst = limits.iter().map(|&(_, q)| quota(q).burst()).min().unwrap_or(1);
            *cost = match *cost {
                7 => burst,
                8 => burst - 1,
                9 => burst.saturating_add(1),
                small => small.min(4),
            };
        }
    }
    ops
}

fn edge_scenarios() -> Vec<Vec<Op>> {
    let ms = Duration::from_millis;
    let ns = Duration::from_nanos;
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
        vec![check(&[], 1), check(&[(0, 0), (1, 1), (0, 0)], 1), check(&[(0, 0)], 1)],
        // Exactly at the refill boundary the token is there; 1ns before it is not.
        vec![
            check(&[(0, 0)], 1),
            Op::Advance(ns(999_999_999)),
            check(&[(0, 0)], 1),
            Op::Advance(ns(1)),
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
        // An odd-nanosecond period: the refill boundary to the nanosecond.
        vec![
            check(&[(0, 8)], 3),
            check(&[(0, 8)], 1),
            Op::Advance(ns(333_332)),
            check(&[(0, 8)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 8)], 1),
            Op::Advance(ns(666_666)),
            check(&[(0, 8)], 3),
            check(&[(0, 8)], 2),
        ],
        // The largest burst, refilled every nanosecond: the whole burst at once, then
        // exact waits of a few nanoseconds, and a whole-burst wait.
        vec![
            check(&[(0, 9)], u32::MAX),
            check(&[(0, 9)], 1),
            check(&[(0, 9)], 0),
            Op::Advance(ns(3)),
            check(&[(0, 9)], 3),
            check(&[(0, 9)], u32::MAX),
            Op::Advance(ns(4_294_967_294)),
            check(&[(0, 9)], u32::MAX),
        ],
        // τ just under 2^63 ns: a bucket in debt plus the cost passes u64::MAX, and the
        // answers are still exact.
        vec![
            check(&[(0, 10)], 2),
            check(&[(0, 10)], 2),
            check(&[(0, 10)], 1),
            check(&[(0, 10)], 0),
            Op::Advance(ns(4_611_686_018_427_387_902)),
            check(&[(0, 10)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 10)], 2),
            check(&[(0, 10)], 1),
        ],
        // The longest quota and the largest burst with τ near 2^63, beside a 1s bucket.
        vec![
            check(&[(0, 12), (1, 11)], 1),
            check(&[(1, 11), (0, 12)], 1),
            check(&[(1, 11)], u32::MAX),
            check(&[(1, 11)], u32::MAX - 1),
            check(&[(2, 0), (1, 11), (0, 12)], 0),
            Op::Advance(ns(3 * 2_147_483_647)),
            check(&[(1, 11), (2, 0)], 1),
            check(&[(1, 11)], 2),
            check(&[(1, 11)], 1),
        ],
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency and memory
// ---------------------------------------------------------------------------------

const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 400), (3, 4, 400), (4, 5, 200)], seed: 0x1eaf };

/// The quota of each key in concurrency histories (a key keeps its quota): small
/// bursts, so histories hit denials, and an odd-nanosecond period.
const CONCURRENT_QUOTAS: [u8; 4] = [0, 1, 2, 8];

/// One op of a concurrency history. Threads 0 and 1 also move the clock forward, by
/// steps on and off refill boundaries, so clock moves race with other threads' checks
/// (a check must read the time with its buckets locked). Steps back stay in the
/// sequential cases: a check racing with one may use the time it read before it (see
/// the trait), which no single global order explains. Requests name 1-3 keys in a
/// random order each time: a limiter that locks buckets in request order deadlocks.
fn concurrent_op(rng: &mut SplitMix, thread: usize) -> Op {
    if thread < 2 && rng.below(4) == 0 {
        return match rng.below(3) {
            0 => Op::Advance(Duration::from_millis(250)),
            1 => Op::Advance(Duration::from_nanos(333_333)),
            _ => Op::Advance(Duration::from_nanos(500_000_001)),
        };
    }
    let mut keys: Vec<u8> = (0..CONCURRENT_QUOTAS.len() as u8).collect();
    // Fisher-Yates, then keep the first 1-3.
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    keys.truncate(1 + rng.below(3));
    let limits: Vec<(u8, u8)> = keys.iter().map(|&k| (k, CONCURRENT_QUOTAS[usize::from(k)])).collect();
    check(&limits, rng.below(3) as u32)
}

fn concurrent_case(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let clock = ManualClock::starting_at(START);
    let result = check_histories::<RateLimitSpec, _>(
        &Config,
        HISTORIES,
        concurrent_op,
        || {
            // Each history starts where the model does.
            clock.set(START);
            build(make, &clock)
        },
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

/// A flood of unique keys, each spending its one token: live heap must follow the keys
/// still in debt ([`HEAP_PER_BUCKET`] each, plus [`HEAP_SLACK`]), not every key ever seen.
fn flood_of_unique_keys(make: Factory) -> CaseResult {
    const PER_STEP: u32 = 2_000;
    const STEPS: u32 = 60;
    let step = Duration::from_millis(50);
    let clock = ManualClock::starting_at(START);
    // Measured from before the limiter is built: everything it holds counts.
    let meter = HeapMeter::start();
    let limiter = build(make, &clock)?;
    // Each key is in debt for 100ms after its request; steps are 50ms apart, so at
    // most the last two steps' keys (4,000) are in debt at any time.
    let quota = Quota::new(1, Duration::from_millis(100)).expect("valid");
    let in_debt = 2 * PER_STEP as usize;
    let bound = HEAP_PER_BUCKET * in_debt + HEAP_SLACK;
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
        let held = meter.held();
        if held > bound {
            return Err(CaseError::failed(format!(
                "after {} unique keys ({PER_STEP} every 50ms, each in debt for 100ms) the limiter holds {} of heap: \
                 at most {in_debt} buckets are not full, so it may hold {} ({HEAP_PER_BUCKET} B per bucket in debt + {})",
                (round + 1) * PER_STEP,
                show_bytes(held),
                show_bytes(bound),
                show_bytes(HEAP_SLACK)
            )));
        }
        clock.advance(step);
    }
    Ok(())
}

/// Buckets in debt survive any housekeeping: thousands of buckets are spent to various
/// depths, time moves so that some are full again and some only partly refilled, a
/// flood of fresh keys makes any sweep (by size, by count, by time) run many times, and
/// then every first bucket is read back (a peek, then a check) against the model.
fn sweep_keeps_buckets_in_debt(make: Factory) -> CaseResult {
    const SURVIVORS: u32 = 4_096;
    const FLOOD: u32 = 50_000;
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    // Survivors: 5/100ms (full again or 1-4 tokens back after 150ms), 3/333_333ns (full
    // again), 10/60s (still in debt); the flood: 1/1s.
    let survivor_quota = |k: u32| quota([3, 8, 4][(k % 3) as usize]);
    let flood_quota = quota(0);
    let mut shadow = Shadow::default();
    let mut story: Vec<String> = Vec::new();
    let run = |shadow: &mut Shadow, story: &[String], key: u32, q: Quota, cost: u32, phase: &str| -> CaseResult {
        let limits = [(Key(key), q)];
        let actual = limiter.check(&limits, cost);
        let expected = shadow.check(clock.now(), key, q, cost);
        if actual != expected {
            return Err(CaseError::failed(format!(
                "{}\n{phase}: check([(k{key}, {q:?})], cost {cost}) -> {}\n      expected {}   <-- first difference\n\
                 a bucket that is not full must never be dropped: it would come back full",
                story.join("\n"),
                show(&actual),
                show(&expected)
            )));
        }
        Ok(())
    };
    story.push(format!("limiter = Limiter::new(clock), clock at {START:?}"));
    for k in 0..SURVIVORS {
        let q = survivor_quota(k);
        run(&mut shadow, &story, k, q, 1 + k % q.burst(), "spending")?;
    }
    story.push(format!(
        "1. {SURVIVORS} keys k0..k{} spend 1..=burst tokens each, quotas 5/100ms, 3/333.333µs, 10/60s in turn",
        SURVIVORS - 1
    ));
    clock.advance(Duration::from_millis(150));
    story.push("2. clock.advance(150ms): some buckets are full again, others only partly refilled".into());
    for k in SURVIVORS..SURVIVORS + FLOOD {
        run(&mut shadow, &story, k, flood_quota, 1, "flooding")?;
    }
    story.push(format!("3. {FLOOD} fresh keys spend their one token (quota 1/1s)"));
    story.push("4. every key of step 1 is read back, a peek then a check of cost 1:".into());
    for k in 0..SURVIVORS {
        let q = survivor_quota(k);
        run(&mut shadow, &story, k, q, 0, "reading back")?;
        run(&mut shadow, &story, k, q, 1, "reading back")?;
    }
    Ok(())
}

/// Sweeps racing checks: each round, 4 threads hit a fresh shared bucket (3/1ms) three
/// times each, with three fresh single-use keys (1/1ms) in either order, between checks
/// of three fresh keys alone, so the limiter's map keeps growing and its sweeps run
/// while other threads are mid-check; between rounds the clock moves 2ms, so earlier buckets fill
/// up and become sweepable. Exactly 3 of each round's 12 checks of the shared bucket
/// may pass: a sweep that drops a bucket another check is about to pay into loses that
/// payment.
fn sweep_under_contention(make: Factory) -> CaseResult {
    const THREADS: u32 = 4;
    const ROUNDS: u32 = 400;
    const PER_THREAD: u32 = 3;
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    let shared = Quota::new(3, Duration::from_millis(1)).expect("valid");
    let single = Quota::new(1, Duration::from_millis(1)).expect("valid");
    let allowed: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
    let barrier = Barrier::new(THREADS as usize);
    set_forced_yields(true);
    let outcomes: Vec<thread::Result<Result<(), String>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (limiter, allowed, barrier, clock) = (&limiter, &allowed, &barrier, &clock);
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        barrier.wait();
                        for i in 0..2 * PER_THREAD {
                            let fresh = 1_000_000 + ((round * THREADS + t) * 2 * PER_THREAD + i) * 3;
                            let mut limits: Vec<(Key, Quota)> = (fresh..fresh + 3).map(|k| (Key(k), single)).collect();
                            // Every other check names the shared bucket too (first or last), so
                            // sweeps run at the end of checks that do not hold it.
                            let names_shared = (t + i) % 2 == 0;
                            if names_shared {
                                limits.insert(if (t + i) % 4 == 0 { 0 } else { 3 }, (Key(round), shared));
                            }
                            let _in_flight = crate::watchdog::InFlight::new(format!(
                                "check({limits:?}, 1) (thread {t}, round {round})"
                            ));
                            match limiter.check(&limits, 1) {
                                Ok(d) if d.allowed && names_shared => {
                                    allowed[round as usize].fetch_add(1, Ordering::SeqCst);
                                }
                                Ok(d) if d.allowed || names_shared => {}
                                other => return Err(format!("check({limits:?}, 1) returned {other:?}")),
                            }
                        }
                        if barrier.wait().is_leader() {
                            clock.advance(Duration::from_millis(2));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    set_forced_yields(false);
    for outcome in outcomes {
        match outcome {
            Err(p) => return Err(Panic::from_payload(p.as_ref()).into_case_error("check under contention")),
            Ok(Err(e)) => return Err(CaseError::failed(e)),
            Ok(Ok(())) => {}
        }
    }
    let counts: Vec<usize> = allowed.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    if let Some((round, &count)) = counts.iter().enumerate().find(|(_, &c)| c != 3) {
        return Err(CaseError::failed(format!(
            "round {round}: {THREADS} threads each checked k{round} (3/1ms) {PER_THREAD} times at one instant, each time with three \
             fresh 1/1ms keys, between checks of fresh keys alone, while sweeps ran (the clock moves 2ms between rounds, so earlier buckets are full): {count} allowed, \
             expected exactly k{round}'s burst, 3. A sweep must not drop a bucket another check is using (drop under the lock \
             that guards the bucket, or skip buckets a request holds)"
        )));
    }
    Ok(())
}

/// The model for one-bucket checks over many keys (the op-based model stops at 256
/// keys): arrival times per key, and the latest time seen.
#[derive(Default)]
struct Shadow {
    latest: u64,
    tats: std::collections::HashMap<u32, u64>,
}

impl Shadow {
    fn check(&mut self, clock: Timestamp, key: u32, q: Quota, cost: u32) -> Result<Decision, LimitError> {
        validate(&[(key, q)], cost)?;
        self.latest = self.latest.max(clock.as_nanos());
        let (decision, tats) = decide(Timestamp::from_nanos(self.latest), &[q], &[self.tats.get(&key).copied()], cost);
        if let Some(&tat) = tats.first() {
            self.tats.insert(key, tat);
        }
        Ok(decision)
    }
}

fn show(result: &Result<Decision, LimitError>) -> String {
    match result {
        Ok(d) => format!("{d:?}"),
        Err(e) => format!("Err({e:?})"),
    }
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
/// * Every bucket is a Redis key of its own (under the hash tag) with an expiry, so
///   memory follows the keys in debt: written at limiter time `now`, a bucket key
///   lives at least `TAT − now` + [`REDIS_EXPIRY_MARGIN`] (Redis expires keys on its
///   own clock, which keeps running while callers' clocks may lag or stand still) and
///   at most τ + [`REDIS_EXPIRY_SLACK`]. Besides its buckets, a namespace holds at most
///   one more key (its latest time), which may live forever.
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

/// How long past the moment its bucket is full again a bucket key must still live in
/// Redis: Redis's clock keeps running while the callers' clocks (the test's included)
/// may lag or stand still, and a key gone too early hands its bucket back full.
pub const REDIS_EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// How much longer than τ a bucket key may live in Redis: the margin above and rounding,
/// not room for keeping idle buckets around.
pub const REDIS_EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// Keys of `namespace` (those carrying its hash tag) and their PTTL in ms (-1: none).
fn namespace_ttls(
    rt: &tokio::runtime::Runtime,
    raw: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> Result<Vec<(String, i64)>, String> {
    let ttls = rt.block_on(crate::redis_server::namespace_ttls(raw, namespace)).map_err(|e| e.to_string())?;
    Ok(ttls.into_iter().filter(|(key, _)| crate::redis_server::hash_tag(key) == Some(namespace)).collect())
}

/// Checks the lifetime of a namespace's keys after each op of a Redis replay, against
/// a shadow of the model: every bucket in debt has a key of its own that lives at
/// least until the bucket is full again plus [`REDIS_EXPIRY_MARGIN`] (less the real
/// time since it was written), no key lives longer than its bucket's τ +
/// [`REDIS_EXPIRY_SLACK`], and at most one key (the latest time) has no expiry. Keys
/// are matched to buckets by lifetime, not by name.
struct ExpiryAudit {
    raw: redis::aio::MultiplexedConnection,
    namespace: String,
    model: Model,
    /// Every bucket named so far, with its quota.
    named: BTreeMap<u8, Quota>,
    /// When each bucket was last written (real time, taken before the call).
    written: BTreeMap<u8, Stopwatch>,
}

impl ExpiryAudit {
    fn after(&mut self, rt: &tokio::runtime::Runtime, op: &Op, started: Stopwatch) -> Result<(), String> {
        let output = RateLimitSpec::step(&mut self.model, op);
        let Op::Check { limits, cost } = op else { return Ok(()) };
        for &(k, q) in limits {
            self.named.insert(k, quota(q));
        }
        if matches!(output, Output::Decided(Ok(d)) if d.allowed && *cost > 0) {
            for &(k, _) in limits {
                self.written.insert(k, started);
            }
        }
        let ttls = namespace_ttls(rt, &mut self.raw, &self.namespace)?;
        let show_keys = || ttls.iter().map(|(k, t)| format!("{k} PTTL {t}")).collect::<Vec<_>>().join(", ");
        let forever = ttls.iter().filter(|(_, t)| *t < 0).count();
        if forever > 1 {
            return Err(format!(
                "keys without expiry: {}. Every bucket key needs one (SET ... PX), only the namespace's latest time may live forever",
                show_keys()
            ));
        }
        let ms = |d: u64| d / 1_000_000;
        // Longest first: greedy matching of the longest lifetimes to the largest caps.
        let mut lives: Vec<u64> = ttls.iter().filter(|(_, t)| *t >= 0).map(|(_, t)| *t as u64).collect();
        lives.sort_unstable_by(|a, b| b.cmp(a));
        let slack = REDIS_EXPIRY_SLACK.as_nanos() as u64;
        let mut caps: Vec<u64> = self.named.values().map(|q| ms(q.tolerance_nanos() + slack)).collect();
        caps.sort_unstable_by(|a, b| b.cmp(a));
        // The latest-time key may take any lifetime if it is not already the one without.
        let fits = |lives: &[u64]| lives.len() <= caps.len() && lives.iter().zip(&caps).all(|(l, c)| l <= c);
        if !(fits(&lives) || (forever == 0 && !lives.is_empty() && fits(&lives[1..]))) {
            let named: Vec<String> = self.named.iter().map(|(k, q)| format!("k{k} {q:?}")).collect();
            return Err(format!(
                "keys live too long: {}; the buckets named so far ({}) may live at most τ + {REDIS_EXPIRY_SLACK:?} each",
                show_keys(),
                named.join(", ")
            ));
        }
        let now = self.model.latest.as_nanos();
        let mut needs: Vec<(u64, u8)> = self
            .model
            .tats
            .iter()
            .map(|(&k, &tat)| {
                let elapsed = self.written.get(&k).map_or(0, |w| w.elapsed().as_nanos() as u64);
                let life = tat - now + REDIS_EXPIRY_MARGIN.as_nanos() as u64;
                // Whole ms either way (Redis counts in ms, the script in µs): 2ms of rounding.
                (ms(life.saturating_sub(elapsed)).saturating_sub(2), k)
            })
            // A bucket whose debt real time has already outlived may be gone.
            .filter(|&(need, _)| need > 0)
            .collect();
        needs.sort_unstable_by(|a, b| b.cmp(a));
        // A key without expiry is the latest time's (a bucket key must have one).
        let mut available = lives;
        available.sort_unstable_by(|a, b| b.cmp(a));
        let short = needs.iter().enumerate().find(|&(i, &(need, _))| available.get(i).is_none_or(|&a| a < need));
        if let Some((_, &(need, k))) = short {
            return Err(format!(
                "bucket k{k} is in debt (until its TAT), so its key must live {}ms more (the debt + {REDIS_EXPIRY_MARGIN:?} \
                 since it was written), but Redis holds no key for it that lives that long: {}. \
                 A bucket key must outlive its debt by the margin (PX ≥ TAT − now + {}ms), or the bucket comes back full",
                need + 2,
                if ttls.is_empty() { "no keys at all".to_string() } else { show_keys() },
                REDIS_EXPIRY_MARGIN.as_millis()
            ));
        }
        Ok(())
    }
}

fn redis_sequences(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = &runtime()?;
    let replay_redis = |ops: &[Op]| {
        replay::<RateLimitSpec, _>(&Config, ops, |_| {
            let clock = ManualClock::starting_at(START);
            let namespace = fresh_namespace("seq");
            let config = redis_config(namespace.clone(), WhenUnavailable::FailClosed);
            let limiter = rt
                .block_on(make(server.url().to_string(), config, clock.shared()))
                .unwrap_or_else(|e| panic!("connect({}) failed: {e}", server.url()));
            let raw = rt
                .block_on(async { redis::Client::open(server.url())?.get_multiplexed_async_connection().await })
                .unwrap_or_else(|e| panic!("the grader's own connection to {} failed: {e}", server.url()));
            let mut audit = ExpiryAudit {
                raw,
                namespace,
                model: RateLimitSpec::model(&Config),
                named: BTreeMap::new(),
                written: BTreeMap::new(),
            };
            move |op: &Op| {
                let started = Stopwatch::start();
                let output = apply_redis(rt, limiter.as_ref(), &clock, op);
                if let Err(why) = audit.after(rt, op, started) {
                    panic!("after this step: {why}");
                }
                output
            }
        })
    };
    // Inputs exact on Redis only: whole microseconds, the first `REDIS_QUOTAS` quotas.
    let on_redis = |ops: &Vec<Op>| {
        ops.iter().all(|op| match op {
            Op::Advance(d) | Op::Rewind(d) => d.subsec_nanos() % 1_000 == 0,
            Op::Check { limits, .. } => limits.iter().all(|&(_, q)| q < REDIS_QUOTAS),
        })
    };
    for ops in edge_scenarios().into_iter().filter(on_redis) {
        replay_redis(&ops)?;
    }
    replay_redis(&[
        check(&[(0, 0)], 1),
        Op::Advance(Duration::from_micros(999_999)),
        check(&[(0, 0)], 1),
        Op::Advance(Duration::from_micros(1)),
        check(&[(0, 0)], 1),
    ])?;
    random(random_ops(5, 3, REDIS_QUOTAS, true, false), Budget { cases: 64, ..Budget::default() }, |ops| {
        replay_redis(ops)
    })
}

/// Expiry against real time: a bucket in debt for 300ms (400ms) must still be in debt
/// after 100ms (150ms) of real time with the test clock standing still: its key must
/// not have expired. A round whose real time ran past the debt (a very busy machine)
/// proves nothing either way and is tried again with a fresh key.
fn expiry_outlives_debt(make: RedisFactory) -> CaseResult {
    let server = RedisServer::start()?;
    let rt = runtime()?;
    let clock = ManualClock::starting_at(START);
    let namespace = fresh_namespace("expiry");
    let limiter = rt
        .block_on(make(server.url().to_string(), redis_config(namespace, WhenUnavailable::FailClosed), clock.shared()))
        .map_err(|e| CaseError::failed(format!("connect: {e}")))?;
    let checked = |limits: &[(String, Quota)], cost: u32| {
        rt.block_on(limiter.check(limits, cost)).map_err(|e| CaseError::failed(format!("check returned Err({e})")))
    };
    for (burst, period, sleep) in [(10u32, 30u64, 100u64), (4, 100, 150)] {
        let q = Quota::new(burst, Duration::from_millis(period)).expect("valid");
        let debt = Duration::from_millis(period * u64::from(burst));
        for attempt in 0..3 {
            let limits = vec![(format!("sleepy-{burst}-{attempt}"), q)];
            let started = Stopwatch::start();
            let first = checked(&limits, burst)?;
            if !first.allowed {
                return Err(CaseError::failed(format!(
                    "the first check of a fresh {q:?} bucket for its whole burst: {first:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(sleep));
            let again = checked(&limits, 1)?;
            if started.elapsed() + Duration::from_millis(5) >= debt {
                // So late that even an exact expiry may have run out: try again.
                continue;
            }
            if again.allowed || again.retry_after != Duration::from_millis(period) {
                return Err(CaseError::failed(format!(
                    "a {q:?} bucket spent its whole burst (in debt for {debt:?}); {sleep}ms of real time later, the test clock not \
                     having moved, check(cost 1) returned {again:?}, expected DENIED with retry_after {period}ms: its Redis key expired \
                     too early (it must outlive the debt by {REDIS_EXPIRY_MARGIN:?}: PX ≥ TAT − now + {}ms)",
                    REDIS_EXPIRY_MARGIN.as_millis()
                )));
            }
            break;
        }
    }
    Ok(())
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
             the namespace's latest time in a key of its own) and writes only if all conform. After every step each bucket's key is checked: \
             an expiry on every one, at least until the bucket is full again + REDIS_EXPIRY_MARGIN, at most τ + REDIS_EXPIRY_SLACK.",
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
        case("expiry_outlives_debt",
            "Real time passes in Redis even when the callers' clocks (the test's) stand still: a bucket key must outlive its debt by \
             REDIS_EXPIRY_MARGIN (PX = TAT − now + 1000ms, rounded up), or the bucket comes back full.",
            expiry_outlives_debt),
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
            QUICK, |make| exhaustive(&[0u8, 1, 2], |&q| single_bucket_letters(q), 6, admissible, |_, ops| replay_on(make, ops))),
        case(L1, "extreme_quotas",
            "Every short sequence on one bucket with the quotas at the edges of the domain: sub-millisecond and odd-nanosecond periods, \
             a million-token burst, bursts of u32::MAX, τ = burst·T up to 2^63 ns (292 years). Exact integer nanoseconds, and no overflow: \
             tat + cost·T may pass u64::MAX (use u128, or compare tat − (burst − cost)·T with now).",
            QUICK, |make| {
                exhaustive(&[6u8, 7, 8, 9, 10, 11, 12], |&q| single_bucket_letters(q), 4, admissible, |_, ops| replay_on(make, ops))
            }),
        case(L1, "random_sequences",
            "Longer random sequences on one or two buckets, every quota, clock steps down to odd nanoseconds and up to a year. \
             retry_after must be exact: the earliest instant at which the same request passes (tat + cost·T − burst·T − now).",
            QUICK, |make| random(random_ops(2, 1, QUOTAS.len() as u8, false, true), Budget::default(), |ops| replay_on(make, ops))),
        case(L2, "short_sequences",
            "A user, an endpoint and a tenant checked together: allowed only if every bucket has the tokens, and a denial consumes nothing in any bucket \
             (decide for all buckets first, then apply). retry_after is the longest of the violated buckets'; limiting indexes the request as given.",
            QUICK, |make| exhaustive(&[Config], |_| multi_bucket_letters(), 6, admissible, |_, ops| replay_on(make, ops))),
        case(L2, "random_sequences",
            "Random requests over up to 3 of 5 keys in any order, every quota (a key keeps its quota), clock steps and clock rewinds. \
             Use max(clock, latest time seen) as now: a rewound clock changes nothing.",
            QUICK, |make| random(random_ops(5, 3, QUOTAS.len() as u8, true, true), Budget::default(), |ops| replay_on(make, ops))),
        case(L2, "edges",
            "Edge cases: exactly the burst at one instant, the refill boundary (allowed exactly at it, denied 1ns before), cost 0 peeks, \
             cost > burst / duplicate keys / no limits are errors that change nothing, a clock that steps back, hour-long periods, \
             odd-nanosecond periods, bursts of u32::MAX and quotas of 292 years (exact, without overflow).",
            QUICK, |make| edge_scenarios().iter().try_for_each(|ops| replay_on(make, ops))),
        case(L3, "linearizable",
            "Concurrent checks on overlapping buckets, named in any order, while the clock moves, must be linearizable: lock every bucket a request names \
             in one global order (not the request's: two requests naming the same keys in opposite orders deadlock), read the clock with the locks held, \
             decide, apply, unlock.",
            THREADED, concurrent_case),
        case(L3, "exact_admission",
            "8 threads hammer a shared tenant bucket through their own user buckets at one instant: exactly the tenant's burst may pass, no user over its own.",
            THREADED, exact_admission),
        case(L4, "flood_of_unique_keys",
            "A full bucket is the same as no bucket: drop buckets whose TAT ≤ now (e.g. sweep when the map has doubled since the last sweep), \
             so live heap follows the keys in debt (the grader measures real heap bytes, not a count you report).",
            THREADED, flood_of_unique_keys),
        case(L4, "sweep_under_contention",
            "Sweeps race checks: a bucket may be dropped only while no check is using it (sweep under the lock that guards the bucket, \
             or skip buckets a request holds), or a payment lands in a dropped bucket and is lost.",
            THREADED, sweep_under_contention),
        case(L4, "sweep_keeps_buckets_in_debt",
            "Sweep only buckets that are full (TAT ≤ now, with now the latest time seen): a bucket with some tokens back but not all is still in debt, \
             and dropping it hands out its missing tokens again.",
            THREADED, sweep_keeps_buckets_in_debt),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    fn at(ms: u64) -> Timestamp {
        START + Duration::from_millis(ms)
    }

    #[test]
    fn quota_validation_gives_typed_errors() {
        assert_eq!(Quota::new(0, Duration::from_secs(1)), Err(QuotaError::ZeroBurst));
        assert_eq!(Quota::new(1, Duration::ZERO), Err(QuotaError::ZeroPeriod));
        assert!(matches!(Quota::new(u32::MAX, Duration::from_secs(1 << 40)), Err(QuotaError::TooLong { .. })));
        assert_eq!(quota(0).tolerance_nanos(), 1_000_000_000);
        // τ must stay below NANOS_LIMIT (2^63 ns): the largest quota is just under it.
        assert!(Quota::new(1, Duration::from_nanos(NANOS_LIMIT - 1)).is_ok());
        assert!(matches!(Quota::new(1, Duration::from_nanos(NANOS_LIMIT)), Err(QuotaError::TooLong { .. })));
        assert!(matches!(Quota::new(2, Duration::from_nanos(NANOS_LIMIT / 2)), Err(QuotaError::TooLong { .. })));
        for index in 0..QUOTAS.len() as u8 {
            assert!(quota(index).tolerance_nanos() < NANOS_LIMIT);
        }
    }

    #[test]
    fn near_the_bound_the_model_is_exact_past_u64() {
        // τ = 2^63 - 2 ns: an empty bucket plus a whole burst is past u64::MAX.
        let q = quota(10);
        let (first, tats) = decide(at(0), &[q], &[None], 2);
        assert!(first.allowed);
        assert_eq!(first.reset_after, Duration::from_nanos(q.tolerance_nanos()));
        let (second, _) = decide(at(0), &[q], &[Some(tats[0])], 2);
        assert!(!second.allowed);
        assert_eq!(second.retry_after, Duration::from_nanos(q.tolerance_nanos()));
        assert_eq!(second.remaining, 0);
    }

    #[test]
    fn every_graded_sequence_keeps_each_key_on_one_quota_and_time_in_domain() {
        for ops in edge_scenarios() {
            assert!(admissible(&ops), "{ops:?}");
        }
        assert!(!quotas_fixed(&[check(&[(0, 0)], 1), check(&[(0, 1)], 1)]));
        assert!(!within_time_domain(&[Op::Advance(Duration::from_nanos(NANOS_LIMIT))]));
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..200 {
            let ops = random_ops(5, 3, QUOTAS.len() as u8, true, true).new_tree(&mut runner).unwrap().current();
            assert!(admissible(&ops), "{ops:?}");
        }
        let mut rng = SplitMix::new(7);
        let mut orders = std::collections::BTreeSet::new();
        for thread in 0..4 {
            for _ in 0..200 {
                if let Op::Check { limits, .. } = concurrent_op(&mut rng, thread) {
                    for &(k, q) in &limits {
                        assert_eq!(q, CONCURRENT_QUOTAS[usize::from(k)]);
                    }
                    orders.insert(limits.iter().map(|l| l.0).collect::<Vec<u8>>());
                }
            }
        }
        // Requests name their keys in every order (a lock-order deadlock must show).
        assert!(orders.contains(&vec![0, 1]) && orders.contains(&vec![1, 0]), "{orders:?}");
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
