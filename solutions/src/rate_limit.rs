//! Reference keyed rate limiter: GCRA (one "theoretical arrival time" per key, in
//! integer nanoseconds), equivalent to a token bucket without a refill timer.
//!
//! * Buckets live in 64 shards, each a `parking_lot::Mutex` around a hash table, on
//!   cache lines of its own. A request locks the shards of all its keys, in ascending
//!   shard order (so two requests can never wait on each other in a cycle), decides
//!   for every bucket, and only then applies: all-or-nothing, and linearizable.
//! * Time never goes back: `now = max(clock, latest)` with `latest` an atomic
//!   high-water mark. That is also what makes forgetting full buckets safe. A clock
//!   that is monotonic ([`Clock::is_monotonic`](harness::clock::Clock::is_monotonic))
//!   is its own high-water mark, and `latest` is skipped.
//! * Speed (`benches/rate_limit.rs`, profiled with `perf`): a single-bucket check is
//!   one hash of the key, one lock, one table probe. What each choice bought is said
//!   where it is made.
//! * Memory: a shard drops its full buckets (TAT ≤ now) when it has doubled since its
//!   last sweep, so memory follows the keys in debt, amortised O(1) per request; a
//!   sweep that leaves its table mostly empty shrinks it (as `window_limit` does, see
//!   there why).
//!
//! [`RedisLimiter`] is the same algorithm in one Lua script per request (see
//! `GCRA_SCRIPT`), time in whole microseconds, over a reconnecting connection to one
//! server or a cluster client. Keys are tagged by tenant: a request's buckets share a
//! slot (one atomic script) while tenants spread over a cluster's masters.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use harness::clock::SharedClock;
use harness::rate_limit::{
    tenant_tag, validate, Decision, LimitError, Quota, RateLimiter, RedisLimitError, RedisLimiterConfig,
    RedisRateLimiter, WhenUnavailable, FAIL_OPEN,
};
use harness::redis_server::{connect_cluster_with_timeout, connect_with_timeout, RedisConnection};
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 64;
/// A shard never sweeps below this size: sweeping tiny maps is wasted work.
const MIN_SWEEP: usize = 64;

struct Shard<K> {
    /// (key, theoretical arrival time in ns), found by the key's hash. Absent = full
    /// bucket. A `HashTable` rather than a `HashMap`: the hash that picked the shard
    /// is the one the table probes with (for the read, and for the write if allowed),
    /// so a key is hashed once per check; the `HashMap` version hashed it three times
    /// (its `insert` alone was ~6% of a check under `perf`).
    tats: HashTable<(K, u64)>,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> Shard<K> {
    fn tat(&self, hash: u64, key: &K) -> Option<u64> {
        self.tats.find(hash, |(k, _)| k == key).map(|&(_, tat)| tat)
    }

    fn set_tat(&mut self, hash: u64, key: &K, tat: u64, hasher: &DefaultHashBuilder) {
        match self.tats.entry(hash, |(k, _)| k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut entry) => entry.get_mut().1 = tat,
            Entry::Vacant(entry) => {
                entry.insert((key.clone(), tat));
            }
        }
    }

    fn sweep_if_grown(&mut self, now: u64, hasher: &DefaultHashBuilder) {
        if self.tats.len() >= self.sweep_at {
            self.tats.retain(|(_, tat)| *tat > now);
            self.sweep_at = (2 * self.tats.len()).max(MIN_SWEEP);
            // A table keeps the capacity of its largest size: after a burst, give it
            // back, so memory follows the buckets in debt (the contract bounds it at
            // every instant, not only at the peak).
            if self.tats.capacity() > 2 * self.sweep_at {
                self.tats.shrink_to(self.sweep_at, |(k, _)| hasher.hash_one(k));
            }
        }
    }
}

/// A shard on cache lines of its own. Unpadded, a shard (a lock byte and a table
/// header, ~48 bytes) shared its line with its neighbours, and two threads locking
/// *different* shards still took the line from each other: two threads ran at half
/// the speed of one (8M vs 17M checks/s on `..._two_threads`). 128 bytes, not 64:
/// x86 CPUs fetch lines in adjacent pairs (crossbeam's `CachePadded` does the same).
#[repr(align(128))]
struct CacheLine<T>(T);

/// A keyed GCRA rate limiter.
pub struct Limiter<K> {
    clock: SharedClock,
    /// The latest time used (ns). On a line of its own too: it is written on most
    /// checks, and would otherwise drag the fields read on every check with it.
    latest: CacheLine<AtomicU64>,
    /// `clock.is_monotonic()`, read once: `latest` is then not needed.
    monotonic: bool,
    hasher: DefaultHashBuilder,
    shards: Box<[CacheLine<Mutex<Shard<K>>>]>,
}

/// One bucket's verdict for a request.
struct Verdict {
    /// The arrival time before this request (at least now).
    tat: u64,
    /// The arrival time if the request is allowed.
    new_tat: u64,
    /// How long until this bucket alone would allow the request (0 = now).
    wait: u64,
}

#[inline]
fn verdict(stored: Option<u64>, now: u64, quota: Quota, cost: u32) -> Verdict {
    let tolerance = quota.tolerance_nanos();
    // cost ≤ burst (validated), so the spend is at most τ < 2^63.
    let spend = u64::from(cost) * quota.period_nanos();
    let tat = stored.unwrap_or(now).max(now);
    // The request conforms from tat + spend − τ on; rearranged, since tat + spend may
    // pass u64::MAX when τ is near its 2^63 ns bound.
    let earliest = tat.saturating_sub(tolerance - spend);
    // Only stored when allowed, and then at most now + τ < 2^64.
    Verdict { tat, new_tat: tat.saturating_add(spend), wait: earliest.saturating_sub(now) }
}

/// The decision for a request, from each bucket's verdict (all in nanoseconds).
fn decision(now: u64, quotas: &[Quota], verdicts: &[Verdict]) -> Decision {
    let allowed = verdicts.iter().all(|v| v.wait == 0);
    let after = |v: &Verdict| if allowed { v.new_tat } else { v.tat };
    let remaining: Vec<u32> = quotas.iter().zip(verdicts).map(|(q, v)| whole_tokens(now, after(v), *q)).collect();
    let fewest = remaining.iter().copied().min().unwrap_or(0);
    let longest_wait = verdicts.iter().map(|v| v.wait).max().unwrap_or(0);
    let limiting = if allowed {
        remaining.iter().position(|&r| r == fewest)
    } else {
        verdicts.iter().position(|v| v.wait == longest_wait)
    };
    Decision {
        allowed,
        remaining: fewest,
        retry_after: Duration::from_nanos(longest_wait),
        reset_after: Duration::from_nanos(verdicts.iter().map(|v| after(v) - now).max().unwrap_or(0)),
        limiting: limiting.unwrap_or(0),
    }
}

fn whole_tokens(now: u64, tat: u64, quota: Quota) -> u32 {
    // now and τ are both below 2^63 ns (the contract's domain): the sum fits.
    ((now + quota.tolerance_nanos()).saturating_sub(tat) / quota.period_nanos()) as u32
}

impl<K: Hash + Eq + Clone + Send + Sync> Limiter<K> {
    fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a key's hash: bits 32 and up. The table inside probes with the
    /// low bits and tags entries with the top 7, so a shard's keys still spread over
    /// its whole table.
    fn shard_of(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    /// `check` of a single bucket: the common case, without the multi-lock bookkeeping.
    /// It builds its `Decision` directly rather than through `decision()`: routing it
    /// there measured ~15% slower on `benches/rate_limit.rs` (0.66× vs 0.80× governor).
    fn check_one(&self, key: &K, quota: Quota, cost: u32) -> Decision {
        let hash = self.hash(key);
        let mut shard = self.shards[Self::shard_of(hash)].0.lock();
        let now = self.now();
        let v = verdict(shard.tat(hash, key), now, quota, cost);
        let allowed = v.wait == 0;
        if allowed && cost > 0 {
            shard.set_tat(hash, key, v.new_tat, &self.hasher);
            shard.sweep_if_grown(now, &self.hasher);
        }
        let tat = if allowed { v.new_tat } else { v.tat };
        Decision {
            allowed,
            remaining: whole_tokens(now, tat, quota),
            retry_after: Duration::from_nanos(v.wait),
            reset_after: Duration::from_nanos(tat - now),
            limiting: 0,
        }
    }

    /// The limiter's time: the clock, but never earlier than any time already used.
    ///
    /// A plain load first: a clock that has not moved past `latest` (one that stepped
    /// back, or two threads reading one instant) then costs no write, and the shared
    /// line stays where it is. Every caller holds the lock of the shards it decides
    /// on, and `latest` only grows, so a check on a bucket sees at least the time of
    /// the last check on it.
    fn now(&self) -> u64 {
        let clock = self.clock.now().as_nanos();
        if self.monotonic {
            // Every check reads the clock with its shards locked, so a later check
            // on a bucket reads a later time: the clock is its own high-water mark.
            // Skipping the shared word made two threads ~20% faster (perf, bench).
            return clock;
        }
        let seen = self.latest.0.load(Ordering::Acquire);
        if clock <= seen {
            return seen;
        }
        let previous = self.latest.0.fetch_max(clock, Ordering::AcqRel);
        previous.max(clock)
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> RateLimiter<K> for Limiter<K> {
    fn new(clock: SharedClock) -> Self {
        let shards =
            (0..SHARDS).map(|_| CacheLine(Mutex::new(Shard { tats: HashTable::new(), sweep_at: MIN_SWEEP }))).collect();
        Limiter {
            monotonic: clock.is_monotonic(),
            clock,
            latest: CacheLine(AtomicU64::new(0)),
            hasher: DefaultHashBuilder::default(),
            shards,
        }
    }

    fn check(&self, limits: &[(K, Quota)], cost: u32) -> Result<Decision, LimitError> {
        validate(limits, cost)?;
        if let [(key, quota)] = limits {
            return Ok(self.check_one(key, *quota, cost));
        }
        let hashes: Vec<u64> = limits.iter().map(|(key, _)| self.hash(key)).collect();
        let shard_ids: Vec<usize> = hashes.iter().map(|&hash| Self::shard_of(hash)).collect();
        let mut order = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        // Ascending shard order: no two requests ever wait on each other in a cycle.
        let mut guards: Vec<MutexGuard<'_, Shard<K>>> = order.iter().map(|&id| self.shards[id].0.lock()).collect();
        // For each limit, the position of its shard's guard.
        let guard_of: Vec<usize> =
            shard_ids.iter().map(|id| order.binary_search(id).expect("every named shard is locked")).collect();
        // Read time with the locks held, so decisions on a bucket follow time's order.
        let now = self.now();

        let verdicts: Vec<Verdict> = limits
            .iter()
            .zip(&guard_of)
            .zip(&hashes)
            .map(|(((key, quota), &g), &hash)| verdict(guards[g].tat(hash, key), now, *quota, cost))
            .collect();
        let allowed = verdicts.iter().all(|v| v.wait == 0);
        if allowed && cost > 0 {
            for ((((key, _), &g), v), &hash) in limits.iter().zip(&guard_of).zip(&verdicts).zip(&hashes) {
                guards[g].set_tat(hash, key, v.new_tat, &self.hasher);
                guards[g].sweep_if_grown(now, &self.hasher);
            }
        }
        drop(guards);
        let quotas: Vec<Quota> = limits.iter().map(|(_, q)| *q).collect();
        Ok(decision(now, &quotas, &verdicts))
    }
}

/// GCRA over all of a request's buckets, atomically. KEYS: the buckets, then the
/// tenant's latest-time key (all under the tenant's hash tag: one slot). ARGV: now
/// (µs), cost, then per bucket its period and tolerance (µs). Returns allowed (1/0),
/// the time used, then per bucket: TAT before, TAT if allowed, wait, as integers
/// (Lua's numbers are doubles, exact to 2^53 µs, 285 years; Redis turns a returned
/// number into an integer reply).
///
/// Cost, measured with `INFO commandstats` under `benches/redis.rs` (64 tasks): the
/// Redis calls the contract needs (a key per bucket, written with its expiry, and the
/// latest time) take about half of the script's time; the rest was Lua building
/// strings: a `string.format('%.0f')` per number returned or stored (14 for 3
/// buckets) and two `table.insert`s at the front. Now numbers go out as they are:
/// returned, Redis turns them into integer replies; passed to `redis.call`, Redis
/// prints them with `%.17g`, exact integer digits for every value below 2^53 (no
/// exponent form below 10^17). That made the script ~1.7× faster (51 → ~30 µs).
const GCRA_SCRIPT: &str = r#"
local n = #KEYS - 1
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local latest = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if latest > now then now = latest else redis.call('SET', KEYS[n + 1], ARGV[1]) end
local allowed = 1
local out = {1, now}
for i = 1, n do
  local period = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * period
  local wait = new_tat - tolerance - now
  if wait > 0 then allowed = 0 else wait = 0 end
  out[3 * i] = tat; out[3 * i + 1] = new_tat; out[3 * i + 2] = wait
end
out[1] = allowed
if allowed == 1 and cost > 0 then
  for i = 1, n do
    local new_tat = out[3 * i + 1]
    -- Expire a second (REDIS_EXPIRY_MARGIN) after the bucket is full again: idle
    -- buckets cost no memory, and Redis's clock running ahead of ours costs no tokens.
    redis.call('SET', KEYS[i], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  end
end
return out
"#;

/// A GCRA rate limiter shared through Redis.
pub struct RedisLimiter {
    config: RedisLimiterConfig,
    clock: harness::clock::SharedClock,
    connection: RedisConnection,
    script: redis::Script,
}

fn micros_up(d: Duration) -> u64 {
    (d.as_nanos() as u64).div_ceil(1_000).max(1)
}

impl RedisLimiter {
    fn unavailable(&self, why: String) -> Result<Decision, RedisLimitError> {
        match self.config.when_unavailable {
            WhenUnavailable::FailOpen => Ok(FAIL_OPEN),
            WhenUnavailable::FailClosed => Err(RedisLimitError::Unavailable(why)),
        }
    }
}

fn parse_reply(reply: &[u64], quotas: &[Quota]) -> Option<Decision> {
    let number = |i: usize| reply.get(i).map(|us| us * 1_000);
    let now = number(1)?;
    let verdicts = (0..quotas.len())
        .map(|i| Some(Verdict { tat: number(2 + 3 * i)?, new_tat: number(3 + 3 * i)?, wait: number(4 + 3 * i)? }))
        .collect::<Option<Vec<Verdict>>>()?;
    Some(decision(now, quotas, &verdicts))
}

impl RedisRateLimiter for RedisLimiter {
    async fn connect(
        url: &str,
        config: RedisLimiterConfig,
        clock: harness::clock::SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let connection = connect_with_timeout(url, config.timeout).await.map_err(RedisLimitError::Unavailable)?;
        let connection = RedisConnection::Server(connection);
        Ok(RedisLimiter { config, clock, connection, script: redis::Script::new(GCRA_SCRIPT) })
    }

    async fn connect_cluster(
        nodes: &[String],
        config: RedisLimiterConfig,
        clock: harness::clock::SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let connection =
            connect_cluster_with_timeout(nodes, config.timeout).await.map_err(RedisLimitError::Unavailable)?;
        let connection = RedisConnection::Cluster(connection);
        Ok(RedisLimiter { config, clock, connection, script: redis::Script::new(GCRA_SCRIPT) })
    }

    async fn check(&self, tenant: &str, limits: &[(&str, Quota)], cost: u32) -> Result<Decision, RedisLimitError> {
        validate(limits, cost).map_err(RedisLimitError::Invalid)?;
        let tag = tenant_tag(&self.config.namespace, tenant);
        let mut invocation = self.script.prepare_invoke();
        // The tenant's tag is the Cluster hash tag: a tenant's keys, one slot.
        for (name, _) in limits {
            invocation.key(format!("{tag}:b:{name}"));
        }
        invocation.key(format!("{tag}:latest"));
        invocation.arg(self.clock.now().as_nanos() / 1_000).arg(cost);
        for (_, quota) in limits {
            let period = micros_up(quota.period());
            invocation.arg(period).arg(period * u64::from(quota.burst()));
        }
        let mut connection = self.connection.clone();
        let reply =
            match tokio::time::timeout(self.config.timeout, invocation.invoke_async::<Vec<u64>>(&mut connection)).await
            {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return self.unavailable(e.to_string()),
                Err(_) => return self.unavailable(format!("no answer within {:?}", self.config.timeout)),
            };
        let quotas: Vec<Quota> = limits.iter().map(|(_, q)| *q).collect();
        parse_reply(&reply, &quotas)
            .ok_or_else(|| RedisLimitError::Unavailable(format!("unexpected script reply {reply:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::clock::{Clock, ManualClock, Timestamp};

    /// A manual clock that only moves forward and says so: the limiter then skips
    /// its high-water mark.
    #[derive(Debug)]
    struct ForwardClock(ManualClock);

    impl Clock for ForwardClock {
        fn now(&self) -> Timestamp {
            self.0.now()
        }
        fn is_monotonic(&self) -> bool {
            true
        }
    }

    /// The monotonic path decides exactly as the high-water-mark path does, on one
    /// and several buckets, as time moves forward in steps below and above a period.
    #[test]
    fn monotonic_clock_decides_like_any_other() {
        let time = ManualClock::new();
        let marked = Limiter::<u32>::new(time.shared());
        let trusted = Limiter::<u32>::new(std::sync::Arc::new(ForwardClock(time.clone())));
        assert!(!marked.monotonic && trusted.monotonic);
        let quota = Quota::new(3, Duration::from_millis(10)).expect("valid quota");
        let wide = Quota::new(5, Duration::from_millis(7)).expect("valid quota");
        for step in 0..200u32 {
            time.advance(Duration::from_micros(u64::from(step % 7) * 1_700));
            let key = step % 3;
            let requests: [&[(u32, Quota)]; 2] = [&[(key, quota)], &[(key, quota), (10 + key % 2, wide)]];
            let request = requests[(step % 2) as usize];
            let cost = step % 3;
            assert_eq!(marked.check(request, cost), trusted.check(request, cost), "step {step}");
        }
    }
}
