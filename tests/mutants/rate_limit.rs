//! Buggy rate limiters that the suite must reject: one plain GCRA limiter (a single
//! `Mutex<HashMap>`) with every bug a named switch. `Flawed<_, NONE>` passes the whole
//! suite; `Flawed<_, B>` must be rejected by the case its `MUTANTS` entry names.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use harness::clock::SharedClock;
use harness::rate_limit::{Decision, LimitError, Quota, RateLimiter};

pub const NONE: u8 = 0;
pub const DENIED_CONSUMES: u8 = 1;
pub const ALLOWS_ONE_EXTRA: u8 = 2;
pub const RETRY_AFTER_WHOLE_SECONDS: u8 = 3;
pub const RETRY_AFTER_SHORTEST: u8 = 4;
pub const RAW_CLOCK: u8 = 5;
pub const PEEK_CONSUMES: u8 = 6;
pub const OVER_BURST_DENIES: u8 = 7;
pub const NEVER_FORGETS: u8 = 8;
pub const RACY_CHECK: u8 = 9;
pub const REMAINING_BEFORE_PAYING: u8 = 10;
/// Reads the clock (and bumps an atomic latest time) before taking the lock: a check can
/// then decide at a time older than a decision already made on its bucket.
pub const CLOCK_BEFORE_LOCK: u8 = 11;
/// The sweep drops buckets that have a token back ("usable") instead of full ones.
pub const SWEEP_DROPS_REFILLING: u8 = 12;
/// Sorts the request's buckets (to lock them in a global order) and reports `limiting`
/// as an index into the sorted order instead of the caller's.
pub const LIMITING_IN_SORTED_ORDER: u8 = 13;
/// Plain u64 arithmetic: `tat + cost × period` overflows for τ near 2^63 ns.
pub const OVERFLOWS_NEAR_BOUND: u8 = 14;
/// Keeps time in whole microseconds (periods rounded up): odd-nanosecond periods drift.
pub const PERIOD_IN_MICROS: u8 = 15;
/// Sweeps full buckets, but keeps every key it has seen in a side table ("first seen",
/// for stats) that nothing ever prunes: a hidden pool the old key count never showed.
pub const INTERN_POOL: u8 = 16;

struct State<K> {
    tats: HashMap<K, u64>,
    /// Every key ever paid for, and when (INTERN_POOL only).
    first_seen: HashMap<K, u64>,
    latest: u64,
    sweep_at: usize,
}

pub struct Flawed<K, const BUG: u8> {
    clock: SharedClock,
    state: Mutex<State<K>>,
    /// The latest time, outside the lock (CLOCK_BEFORE_LOCK only).
    latest: AtomicU64,
}

/// (T, τ) in nanoseconds, widened so that no sum overflows.
fn nanos<const BUG: u8>(quota: Quota) -> (u128, u128) {
    let mut period = u128::from(quota.period_nanos());
    if BUG == PERIOD_IN_MICROS {
        period = period.div_ceil(1_000) * 1_000;
    }
    (period, period * u128::from(quota.burst()))
}

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> RateLimiter<K> for Flawed<K, BUG> {
    fn new(clock: SharedClock) -> Self {
        Flawed {
            clock,
            state: Mutex::new(State { tats: HashMap::new(), first_seen: HashMap::new(), latest: 0, sweep_at: 64 }),
            latest: AtomicU64::new(0),
        }
    }

    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError> {
        if limits.is_empty() {
            return Err(LimitError::NoLimits);
        }
        for (second, (key, _)) in limits.iter().enumerate() {
            if let Some(first) = limits[..second].iter().position(|(k, _)| k == key) {
                return Err(LimitError::DuplicateKey { first, second });
            }
        }
        if BUG != OVER_BURST_DENIES {
            if let Some(index) = limits.iter().position(|(_, q)| cost > q.burst()) {
                return Err(LimitError::CostExceedsBurst { index, cost, burst: limits[index].1.burst() });
            }
        }
        let cost = if BUG == PEEK_CONSUMES { cost.max(1) } else { cost };
        let early = (BUG == CLOCK_BEFORE_LOCK).then(|| {
            let clock = self.clock.now().as_nanos();
            let now = self.latest.fetch_max(clock, Ordering::SeqCst).max(clock);
            // The bug's window: picking a shard hashes the key before locking it.
            std::hint::black_box(std::hash::RandomState::new().hash_one(&limits[0].0));
            now
        });
        let mut state = self.state.lock().unwrap();
        let clock = self.clock.now().as_nanos();
        state.latest = state.latest.max(clock);
        let now = match early {
            Some(now) => now,
            None if BUG == RAW_CLOCK => clock,
            None => state.latest,
        };

        // (tat before, tat if allowed, wait), in u128: tat + cost·T may pass u64::MAX.
        let mut verdicts: Vec<(u128, u128, u128)> = Vec::new();
        for (key, quota) in limits {
            let (period, tolerance) = nanos::<BUG>(*quota);
            let slack = if BUG == ALLOWS_ONE_EXTRA { period } else { 0 };
            let tat = state.tats.get(key).copied().unwrap_or(now).max(now);
            let new_tat = if BUG == OVERFLOWS_NEAR_BOUND {
                // The bug: plain u64 arithmetic.
                u128::from(tat + u64::from(cost) * period as u64)
            } else {
                u128::from(tat) + u128::from(cost) * period
            };
            let wait = new_tat.saturating_sub(tolerance + slack).saturating_sub(u128::from(now));
            if BUG == DENIED_CONSUMES && wait == 0 {
                // The bug: pays as it goes, before knowing the other buckets agree.
                state.tats.insert(key.clone(), new_tat as u64);
            }
            verdicts.push((u128::from(tat), new_tat, wait));
        }
        let allowed = verdicts.iter().all(|v| v.2 == 0);
        if BUG == RACY_CHECK {
            // The bug: decides under one lock, pays under another.
            drop(state);
            // Comparing keys is a contention point in the graded suite: it widens the window.
            std::hint::black_box(limits.first().map(|l| &l.0) == limits.last().map(|l| &l.0));
            state = self.state.lock().unwrap();
        }
        if allowed && cost > 0 && BUG != DENIED_CONSUMES {
            for ((key, _), v) in limits.iter().zip(&verdicts) {
                state.tats.insert(key.clone(), v.1 as u64);
                if BUG == INTERN_POOL {
                    state.first_seen.entry(key.clone()).or_insert(now);
                }
            }
        }
        if BUG != NEVER_FORGETS && state.tats.len() >= state.sweep_at {
            // Full means TAT ≤ now; the bug keeps only buckets a whole period in debt.
            let keep_above = if BUG == SWEEP_DROPS_REFILLING { now + limits[0].1.period_nanos() } else { now };
            state.tats.retain(|_, tat| *tat > keep_above);
            state.sweep_at = (2 * state.tats.len()).max(64);
        }

        let after = |v: &(u128, u128, u128)| if allowed && BUG != REMAINING_BEFORE_PAYING { v.1 } else { v.0 };
        let remaining: Vec<u32> = limits
            .iter()
            .zip(&verdicts)
            .map(|((_, q), v)| {
                let (period, tolerance) = nanos::<BUG>(*q);
                ((u128::from(now) + tolerance).saturating_sub(after(v)) / period) as u32
            })
            .collect();
        let fewest = remaining.iter().copied().min().unwrap_or(0);
        let waits = verdicts.iter().map(|v| v.2).filter(|&w| w > 0);
        let mut wait = if BUG == RETRY_AFTER_SHORTEST { waits.min() } else { waits.max() }.unwrap_or(0);
        let mut limiting = if allowed {
            remaining.iter().position(|&r| r == fewest)
        } else {
            verdicts.iter().position(|v| v.2 == wait)
        }
        .unwrap_or(0);
        if BUG == LIMITING_IN_SORTED_ORDER {
            // The bug: the index is taken in the locking order (by hash), not the caller's.
            let hasher = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            let mut order: Vec<usize> = (0..limits.len()).collect();
            order.sort_by_key(|&i| hasher.hash_one(&limits[i].0));
            limiting = order.iter().position(|&i| i == limiting).unwrap_or(0);
        }
        if BUG == RETRY_AFTER_WHOLE_SECONDS {
            wait = wait.div_ceil(1_000_000_000) * 1_000_000_000;
        }
        let reset = verdicts.iter().map(|v| if allowed { v.1 } else { v.0 } - u128::from(now)).max().unwrap_or(0);
        Ok(Decision {
            allowed,
            remaining: fewest,
            retry_after: Duration::from_nanos(wait as u64),
            reset_after: Duration::from_nanos(reset as u64),
            limiting,
        })
    }
}

/// Redis-backed limiters with one realistic bug each, wrapped around the reference
/// (whose own correctness the reference trials establish).
pub mod redis_backed {
    use harness::clock::SharedClock;
    use harness::rate_limit::{
        Decision, Quota, RedisLimitError, RedisLimiterConfig, RedisRateLimiter, WhenUnavailable,
    };
    use solutions::rate_limit::RedisLimiter;

    pub const EXTRA_ROUND_TRIP: u8 = 1;
    pub const IGNORES_FAIL_OPEN: u8 = 2;
    pub const NAMESPACE_PER_INSTANCE: u8 = 3;
    pub const PANICS_ON_OUTAGE: u8 = 4;

    pub struct FlawedRedis<const BUG: u8> {
        inner: RedisLimiter,
        /// A second connection, for the extra round trip.
        side: Option<redis::aio::MultiplexedConnection>,
    }

    impl<const BUG: u8> RedisRateLimiter for FlawedRedis<BUG> {
        async fn connect(
            url: &str,
            mut config: RedisLimiterConfig,
            clock: SharedClock,
        ) -> Result<Self, RedisLimitError> {
            if BUG == IGNORES_FAIL_OPEN {
                config.when_unavailable = WhenUnavailable::FailClosed;
            }
            if BUG == NAMESPACE_PER_INSTANCE {
                // The bug: state private to each instance instead of shared.
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                config.namespace =
                    format!("{}-{}", config.namespace, NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
            }
            let side = if BUG == EXTRA_ROUND_TRIP {
                let client = redis::Client::open(url).map_err(|e| RedisLimitError::Unavailable(e.to_string()))?;
                Some(
                    client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| RedisLimitError::Unavailable(e.to_string()))?,
                )
            } else {
                None
            };
            let inner = RedisLimiter::connect(url, config, clock).await?;
            Ok(FlawedRedis { inner, side })
        }

        async fn connect_cluster(
            nodes: &[String],
            config: RedisLimiterConfig,
            clock: SharedClock,
        ) -> Result<Self, RedisLimitError> {
            // These bugs are graded on one server (level 5); on a cluster, the reference.
            Ok(FlawedRedis { inner: RedisLimiter::connect_cluster(nodes, config, clock).await?, side: None })
        }

        async fn check(&self, tenant: &str, limits: &[(&str, Quota)], cost: u32) -> Result<Decision, RedisLimitError> {
            if let Some(side) = &self.side {
                // The bug: reads state in a round trip of its own before deciding.
                let mut side = side.clone();
                let _: Result<String, _> = redis::cmd("PING").query_async(&mut side).await;
            }
            let decision = self.inner.check(tenant, limits, cost).await;
            if BUG == PANICS_ON_OUTAGE {
                return Ok(decision.expect("Redis is always up"));
            }
            decision
        }
    }
}
