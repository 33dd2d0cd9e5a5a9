//! The contract of the rate-limit exercise: the traits a learner implements
//! ([`RateLimiter`] in memory, [`RedisRateLimiter`] on Redis), the types in their
//! signatures and the bounds their docs refer to. These doc comments ARE the contract.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use crate::clock::SharedClock;

/// The time domain, in nanoseconds, for quotas and clocks alike: a quota's
/// τ = burst × period and every clock reading stay below 2^63 ns (about 292 years), so
/// now + τ fits in a `u64` (and `now`, `τ` in an `i64`). Sums past that, such as a time
/// in the future plus `cost × period`, may not fit: answers must still be exact.
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
/// Each key has one bucket, exact to the nanosecond. With quota (burst B, period T),
/// τ = B·T:
/// * **A key is bound to one quota for its whole life**: callers always name a key with
///   the same quota (in production the policy is part of the key, e.g.
///   `user:42:per-minute`). Checking a known key under another quota is outside the
///   contract (what a bucket stores need not survive it); the grader
///   never does it.
/// * a fresh key is full: B tokens. Over any interval [0, t], at most B + ⌊t/T⌋ cost
///   is allowed; exactly at a refill boundary the token is there.
/// * `check(limits, cost)` is all-or-nothing: allowed iff **every** bucket has `cost`
///   tokens; then each pays `cost`. A denied request consumes nothing anywhere. The
///   order of `limits` is the caller's: it only numbers the buckets for
///   [`Decision::limiting`] and errors.
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
/// a bucket of a few words (even its quota), a hash map's load factor and power-of-two
/// growth, and housekeeping that lets the table grow well past its live buckets before
/// it runs. The reference holds about a third of it.
pub const HEAP_PER_BUCKET: usize = 256;
/// Heap bytes a limiter may hold whatever its load: shards, empty tables, a clock.
pub const HEAP_SLACK: usize = 256 * 1024;

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
    /// Prefix of every key: how keys are tagged is on each trait ([`RedisRateLimiter`]:
    /// `{namespace:<tenant>}`; the window limiter: `{namespace}`).
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
/// connected to the same Redis (one server, or a Redis Cluster) and namespace.
/// Implement it for `RedisLimiter` in `exercises/src/rate_limit.rs`.
///
/// * **Buckets are per (tenant, key)**: a tenant is the unit a service is limited as
///   (in the seed question, one of the hundreds of microservices); the same key under
///   two tenants names two buckets. Tenants and keys are any strings.
/// * **Keys are tagged by tenant**: every key a tenant uses starts with
///   `{namespace:` and carries one Redis Cluster hash tag naming the namespace and the
///   tenant, encoded injectively so that no tenant's characters (`}` included) end the
///   tag early ([`tenant_tag`] is one such encoding). A request's buckets (its user,
///   endpoint and tenant limits) then share a slot, so one script decides them
///   atomically, while tenants spread over the cluster's masters.
/// * One round trip per `check`: one Lua script reads and writes all of a request's
///   buckets atomically. Nothing namespace-wide: a key shared by all tenants would
///   put every request on one node (or, next to tenant-tagged keys, fail with
///   CROSSSLOT).
/// * Time is the caller's clock, sent in whole microseconds (Lua numbers are doubles);
///   each tenant's latest time is kept in Redis, so instances with skewed clocks never
///   mint tokens for one another. Periods round up to whole microseconds.
/// * Every bucket is a Redis key of its own (under its tenant's tag) with an expiry, so
///   memory follows the keys in debt: written at limiter time `now`, a bucket key
///   lives at least `TAT − now` + [`REDIS_EXPIRY_MARGIN`] (Redis expires keys on its
///   own clock, which keeps running while callers' clocks may lag or stand still) and
///   at most τ + [`REDIS_EXPIRY_SLACK`]. Besides its buckets, a tenant holds at most
///   one more key (its latest time), which may live forever: tenants are services,
///   few and long-lived.
/// * Redis down or slow: each call returns within `timeout` (plus scheduling), either
///   [`FAIL_OPEN`] or `Err(Unavailable)`, and works again once Redis is back.
/// * **On a cluster** (`connect_cluster`): the same, plus
///   - a master down: calls on its tenants return within `timeout` as above; calls on
///     other masters' tenants keep deciding; once its replica is promoted, calls on
///     its tenants decide again within [`CLUSTER_RECOVERY`].
///   - replication is asynchronous, so a failover may lose the last writes the old
///     master acknowledged: a bucket then comes back as it was before them (at worst
///     full). Each failover can thus admit at most one extra burst per bucket: over
///     any interval [0, t] a bucket allows at most B·(1 + failovers) + ⌊t/T⌋ cost.
///   - slots may move while calls run (resharding: MOVED, ASK, TRYAGAIN): calls keep
///     deciding, exactly as without the move.
pub trait RedisRateLimiter: Send + Sync + Sized {
    /// Connects to one Redis server.
    fn connect(
        url: &str,
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> impl Future<Output = Result<Self, RedisLimitError>> + Send;
    /// Connects to a Redis Cluster through the given seed nodes' URLs.
    fn connect_cluster(
        nodes: &[String],
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> impl Future<Output = Result<Self, RedisLimitError>> + Send;
    /// Decides one request of `tenant` over the buckets `limits` names.
    fn check(
        &self,
        tenant: &str,
        limits: &[(&str, Quota)],
        cost: u32,
    ) -> impl Future<Output = Result<Decision, RedisLimitError>> + Send;
}

/// The hash tag of a tenant's keys, `{namespace:tenant}` with `\` written `\\` and
/// `}` written `\)`: injective, and no tenant can close the tag early. Given to
/// learners; any injective encoding with these properties is as good.
pub fn tenant_tag(namespace: &str, tenant: &str) -> String {
    format!("{{{namespace}:{}}}", tenant.replace('\\', "\\\\").replace('}', "\\)"))
}

/// On a cluster: once a failed master's replica is promoted (and the cluster says it
/// is ok again), calls on its tenants decide again within this long. A client learns
/// the new topology from a refused connection, a MOVED, or a periodic refresh: the
/// redis crate's cluster client takes about a second here; the rest is room for a
/// busy machine, so this is a liveness bound, not a speed target.
pub const CLUSTER_RECOVERY: Duration = Duration::from_secs(10);

/// Redis: Redis's clock keeps running while the callers' clocks (the test's included)
/// may lag or stand still, and a key gone too early hands its bucket back full.
pub const REDIS_EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// How much longer than τ a bucket key may live in Redis: the margin above and rounding,
/// not room for keeping idle buckets around.
pub const REDIS_EXPIRY_SLACK: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::model::{quota, QUOTAS};

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
