//! Rate limiters written as candidates would, with other designs than the reference and
//! the plain mutant base: a classic token bucket (credit + last refill) and per-key
//! locks. The correct ones must pass every case (a red verdict on them is a grader
//! bug); the buggy ones must be rejected by the case `tests/self_check.rs` names.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::clock::SharedClock;
use harness::rate_limit::{validate, Decision, LimitError, Quota, RateLimiter};

pub const NONE: u8 = 0;
/// Tokens kept as an `f64` count refilled by `elapsed / period`: rounding drifts at odd
/// nanosecond periods and huge bursts.
pub const FLOAT_TOKENS: u8 = 1;
/// Refills whole tokens only (`tokens += elapsed / period; last = now`): the part of a
/// period that had already elapsed is thrown away at every check.
pub const TOKENS_DROP_REMAINDER: u8 = 2;

/// A classic token bucket: per key, the banked refill `credit` (in nanoseconds of
/// refill, at most τ: `credit / period` whole tokens) as of `last`. Full buckets (credit
/// = τ) are dropped, so a fresh key is full. Correct because a key keeps its quota.
#[derive(Clone, Copy)]
struct Bucket {
    credit: u64,
    /// The same bank as a float token count (FLOAT_TOKENS only).
    tokens: f64,
    last: u64,
    /// When the bucket is full again (the quota is not stored: the sweep needs this).
    full_at: u64,
}

struct Buckets<K> {
    map: HashMap<K, Bucket>,
    latest: u64,
    sweep_at: usize,
}

pub struct TokenBucket<K, const BUG: u8> {
    clock: SharedClock,
    state: Mutex<Buckets<K>>,
}

impl<const BUG: u8> TokenBucket<(), BUG> {
    /// The bucket as of `now`, refilled (a fresh one is full).
    fn refilled(bucket: Option<Bucket>, now: u64, quota: Quota) -> Bucket {
        let tau = quota.tolerance_nanos();
        match bucket {
            None => Bucket { credit: tau, tokens: f64::from(quota.burst()), last: now, full_at: now },
            Some(b) => {
                let elapsed = now - b.last;
                let tokens = (b.tokens + elapsed as f64 / quota.period_nanos() as f64).min(f64::from(quota.burst()));
                // credit ≤ τ < 2^63 and elapsed < 2^63: the sum fits.
                let period = quota.period_nanos();
                let refill = if BUG == TOKENS_DROP_REMAINDER { elapsed / period * period } else { elapsed };
                let credit = (b.credit + refill).min(tau);
                Bucket { credit, tokens, last: now, full_at: now + (tau - credit) }
            }
        }
    }

    fn whole_tokens(b: &Bucket, quota: Quota) -> u64 {
        if BUG == FLOAT_TOKENS {
            b.tokens.floor() as u64
        } else {
            b.credit / quota.period_nanos()
        }
    }

    /// Nanoseconds until `b` holds `cost` tokens (0 if it does).
    fn wait(b: &Bucket, quota: Quota, cost: u32) -> u64 {
        let period = quota.period_nanos();
        if BUG == FLOAT_TOKENS {
            let missing = f64::from(cost) - b.tokens;
            if missing <= 0.0 {
                0
            } else {
                (missing * period as f64).ceil() as u64
            }
        } else {
            (u64::from(cost) * period).saturating_sub(b.credit)
        }
    }

    fn pay(b: &mut Bucket, quota: Quota, cost: u32) {
        let spend = u64::from(cost) * quota.period_nanos();
        b.credit -= spend;
        b.full_at += spend;
        b.tokens -= f64::from(cost);
    }

    fn is_full(b: &Bucket, quota: Quota) -> bool {
        if BUG == FLOAT_TOKENS {
            b.tokens >= f64::from(quota.burst())
        } else {
            b.credit == quota.tolerance_nanos()
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> RateLimiter<K> for TokenBucket<K, BUG> {
    fn new(clock: SharedClock) -> Self {
        TokenBucket { clock, state: Mutex::new(Buckets { map: HashMap::new(), latest: 0, sweep_at: 1024 }) }
    }

    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError> {
        type Tb<const B: u8> = TokenBucket<(), B>;
        validate(limits, cost)?;
        let mut state = self.state.lock().unwrap();
        state.latest = state.latest.max(self.clock.now().as_nanos());
        let now = state.latest;
        let mut buckets: Vec<Bucket> =
            limits.iter().map(|(k, q)| Tb::<BUG>::refilled(state.map.get(k).copied(), now, *q)).collect();
        let waits: Vec<u64> = buckets.iter().zip(limits).map(|(b, (_, q))| Tb::<BUG>::wait(b, *q, cost)).collect();
        let allowed = waits.iter().all(|&w| w == 0);
        if allowed {
            for (b, (_, q)) in buckets.iter_mut().zip(limits) {
                Tb::<BUG>::pay(b, *q, cost);
            }
        }
        if allowed && cost > 0 {
            for (b, (k, q)) in buckets.iter().zip(limits) {
                if Tb::<BUG>::is_full(b, *q) {
                    state.map.remove(k);
                } else {
                    state.map.insert(k.clone(), *b);
                }
            }
            if state.map.len() >= state.sweep_at {
                state.map.retain(|_, b| b.full_at > now);
                state.sweep_at = (2 * state.map.len()).max(1024);
            }
        }
        let remaining: Vec<u64> =
            buckets.iter().zip(limits).map(|(b, (_, q))| Tb::<BUG>::whole_tokens(b, *q)).collect();
        let fewest = remaining.iter().copied().min().unwrap_or(0);
        let longest = waits.iter().copied().max().unwrap_or(0);
        let limiting = if allowed {
            remaining.iter().position(|&r| r == fewest)
        } else {
            waits.iter().position(|&w| w == longest)
        };
        let reset = buckets.iter().zip(limits).map(|(b, (_, q))| q.tolerance_nanos() - b.credit).max().unwrap_or(0);
        Ok(Decision {
            allowed,
            remaining: fewest as u32,
            retry_after: Duration::from_nanos(longest),
            reset_after: Duration::from_nanos(reset),
            limiting: limiting.unwrap_or(0),
        })
    }
}

/// Locks buckets in the order the caller listed them, taking each key's lock as it is
/// looked up: two requests naming the same keys in opposite orders deadlock.
pub const LOCKS_IN_REQUEST_ORDER: u8 = 1;
/// The sweep drops full buckets even when a request holds them (looked up, not yet
/// locked): that request then pays into a bucket nobody will see again.
pub const SWEEP_IGNORES_HOLDERS: u8 = 2;

/// Per-key locks: a map from key to its own `Arc<Mutex<tat>>`, held only while
/// looking a key up; a request then locks its buckets (ordered by address, so any two
/// requests lock shared buckets in the same order), reads the clock, decides, applies.
/// The sweep drops a full bucket only if no request holds its `Arc`.
pub struct PerKeyLocks<K, const BUG: u8> {
    clock: SharedClock,
    latest: AtomicU64,
    /// Each key's bucket (its TAT), and the size at which the next sweep runs.
    map: Mutex<(KeyLocks<K>, usize)>,
}

type KeyLocks<K> = HashMap<K, Arc<Mutex<u64>>>;

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> PerKeyLocks<K, BUG> {
    fn bucket(&self, key: &K) -> Arc<Mutex<u64>> {
        let mut map = self.map.lock().unwrap();
        Arc::clone(map.0.entry(key.clone()).or_insert_with(|| Arc::new(Mutex::new(0))))
    }

    fn sweep(&self, now: u64) {
        let mut map = self.map.lock().unwrap();
        if map.0.len() >= map.1 {
            // With the map locked nobody can clone an Arc: a count of 1 means no request
            // holds this bucket, so its lock is free.
            let holders_matter = BUG != SWEEP_IGNORES_HOLDERS;
            map.0.retain(|_, b| (holders_matter && Arc::strong_count(b) > 1) || *b.lock().unwrap() > now);
            map.1 = (2 * map.0.len()).max(64);
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> RateLimiter<K> for PerKeyLocks<K, BUG> {
    fn new(clock: SharedClock) -> Self {
        PerKeyLocks { clock, latest: AtomicU64::new(0), map: Mutex::new((HashMap::new(), 64)) }
    }

    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError> {
        validate(limits, cost)?;
        let arcs: Vec<Arc<Mutex<u64>>>;
        // Guards in request order, whatever order they were taken in.
        let mut guards: Vec<Option<std::sync::MutexGuard<'_, u64>>> = (0..limits.len()).map(|_| None).collect();
        if BUG == LOCKS_IN_REQUEST_ORDER {
            // The bug: look up and lock one key after another, in the caller's order.
            arcs = limits.iter().map(|(k, _)| self.bucket(k)).collect();
            let mut held = Vec::new();
            for (i, arc) in arcs.iter().enumerate() {
                held.push((i, arc.lock().unwrap()));
                if let Some((next, _)) = limits.get(i + 1) {
                    // Looking the next key up (hashing it) while this one is locked.
                    drop(self.bucket(next));
                }
            }
            for (i, g) in held {
                guards[i] = Some(g);
            }
        } else {
            arcs = limits.iter().map(|(k, _)| self.bucket(k)).collect();
            let mut order: Vec<usize> = (0..limits.len()).collect();
            order.sort_by_key(|&i| Arc::as_ptr(&arcs[i]) as usize);
            for i in order {
                guards[i] = Some(arcs[i].lock().unwrap());
            }
        }
        let mut guards: Vec<std::sync::MutexGuard<'_, u64>> = guards.into_iter().map(|g| g.expect("locked")).collect();
        // With every bucket locked: decisions on a bucket follow time's order.
        let clock = self.clock.now().as_nanos();
        let now = self.latest.fetch_max(clock, Ordering::SeqCst).max(clock);
        let mut verdicts = Vec::new();
        for (g, (_, q)) in guards.iter().zip(limits) {
            let tat = u128::from((**g).max(now));
            let new_tat = tat + u128::from(cost) * u128::from(q.period_nanos());
            let wait = new_tat.saturating_sub(u128::from(q.tolerance_nanos())).saturating_sub(u128::from(now));
            verdicts.push((tat, new_tat, wait));
        }
        let allowed = verdicts.iter().all(|v| v.2 == 0);
        if allowed && cost > 0 {
            for (g, v) in guards.iter_mut().zip(&verdicts) {
                **g = v.1 as u64;
            }
        }
        drop(guards);
        drop(arcs);
        self.sweep(now);
        let after = |v: &(u128, u128, u128)| if allowed { v.1 } else { v.0 };
        let remaining: Vec<u32> = verdicts
            .iter()
            .zip(limits)
            .map(|(v, (_, q))| {
                ((u128::from(now) + u128::from(q.tolerance_nanos()) - after(v)) / u128::from(q.period_nanos())) as u32
            })
            .collect();
        let fewest = remaining.iter().copied().min().unwrap_or(0);
        let longest = verdicts.iter().map(|v| v.2).max().unwrap_or(0);
        let limiting = if allowed {
            remaining.iter().position(|&r| r == fewest)
        } else {
            verdicts.iter().position(|v| v.2 == longest)
        };
        let reset = verdicts.iter().map(|v| after(v) - u128::from(now)).max().unwrap_or(0);
        Ok(Decision {
            allowed,
            remaining: fewest,
            retry_after: Duration::from_nanos(longest as u64),
            reset_after: Duration::from_nanos(reset as u64),
            limiting: limiting.unwrap_or(0),
        })
    }
}
