//! Buggy rate limiters that the suite must reject: one plain GCRA limiter (a single
//! `Mutex<HashMap>`) with every bug a named switch. `Flawed<_, NONE>` passes the whole
//! suite; `Flawed<_, B>` must be rejected by the case its `MUTANTS` entry names.

use std::collections::HashMap;
use std::hash::Hash;
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

struct State<K> {
    tats: HashMap<K, u64>,
    latest: u64,
    sweep_at: usize,
}

pub struct Flawed<K, const BUG: u8> {
    clock: SharedClock,
    state: Mutex<State<K>>,
}

fn nanos(quota: Quota) -> (u64, u64) {
    let period = quota.period().as_nanos() as u64;
    (period, period * u64::from(quota.burst()))
}

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> RateLimiter<K> for Flawed<K, BUG> {
    fn new(clock: SharedClock) -> Self {
        Flawed { clock, state: Mutex::new(State { tats: HashMap::new(), latest: 0, sweep_at: 64 }) }
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
        let mut state = self.state.lock().unwrap();
        let clock = self.clock.now().as_nanos();
        state.latest = state.latest.max(clock);
        let now = if BUG == RAW_CLOCK { clock } else { state.latest };

        // (tat before, tat if allowed, wait)
        let mut verdicts = Vec::new();
        for (key, quota) in limits {
            let (period, tolerance) = nanos(*quota);
            let slack = if BUG == ALLOWS_ONE_EXTRA { period } else { 0 };
            let tat = state.tats.get(key).copied().unwrap_or(now).max(now);
            let new_tat = tat + u64::from(cost) * period;
            let wait = new_tat.saturating_sub(tolerance + slack).saturating_sub(now);
            if BUG == DENIED_CONSUMES && wait == 0 {
                // The bug: pays as it goes, before knowing the other buckets agree.
                state.tats.insert(key.clone(), new_tat);
            }
            verdicts.push((tat, new_tat, wait));
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
                state.tats.insert(key.clone(), v.1);
            }
        }
        if BUG != NEVER_FORGETS && state.tats.len() >= state.sweep_at {
            state.tats.retain(|_, tat| *tat > now);
            state.sweep_at = (2 * state.tats.len()).max(64);
        }

        let after = |v: &(u64, u64, u64)| if allowed && BUG != REMAINING_BEFORE_PAYING { v.1 } else { v.0 };
        let remaining: Vec<u32> = limits
            .iter()
            .zip(&verdicts)
            .map(|((_, q), v)| {
                let (period, tolerance) = nanos(*q);
                ((now + tolerance).saturating_sub(after(v)) / period) as u32
            })
            .collect();
        let fewest = remaining.iter().copied().min().unwrap_or(0);
        let waits = verdicts.iter().map(|v| v.2).filter(|&w| w > 0);
        let mut wait = if BUG == RETRY_AFTER_SHORTEST { waits.min() } else { waits.max() }.unwrap_or(0);
        let limiting = if allowed {
            remaining.iter().position(|&r| r == fewest)
        } else {
            verdicts.iter().position(|v| v.2 == wait)
        };
        if BUG == RETRY_AFTER_WHOLE_SECONDS {
            wait = wait.div_ceil(1_000_000_000) * 1_000_000_000;
        }
        let reset = verdicts.iter().map(|v| if allowed { v.1 } else { v.0 } - now).max().unwrap_or(0);
        Ok(Decision {
            allowed,
            remaining: fewest,
            retry_after: Duration::from_nanos(wait),
            reset_after: Duration::from_nanos(reset),
            limiting: limiting.unwrap_or(0),
        })
    }

    fn tracked_keys(&self) -> usize {
        self.state.lock().unwrap().tats.len()
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

        async fn check(&self, limits: &[(&str, Quota)], cost: u32) -> Result<Decision, RedisLimitError> {
            if let Some(side) = &self.side {
                // The bug: reads state in a round trip of its own before deciding.
                let mut side = side.clone();
                let _: Result<String, _> = redis::cmd("PING").query_async(&mut side).await;
            }
            let decision = self.inner.check(limits, cost).await;
            if BUG == PANICS_ON_OUTAGE {
                return Ok(decision.expect("Redis is always up"));
            }
            decision
        }
    }
}
