//! Reference window limiters: fixed window, sliding log and sliding window counter,
//! keyed, all-or-nothing over several keys, in integer nanoseconds.
//!
//! * Keys live in 64 shards, each a `parking_lot::Mutex<HashMap>` (as in
//!   `rate_limit`): a request locks the shards of all its keys in ascending shard order
//!   (no cycle of waiters), reads the time with the locks held, decides every key, and
//!   only then records: all-or-nothing, and linearizable.
//! * Time never goes back: `now = max(clock, latest)`, `latest` an atomic high-water mark.
//! * A key's state is first brought up to `now` ([`KeyState::roll`]: a new fixed window
//!   starts at zero, the counter's current window becomes the previous one or is
//!   forgotten, the log drops what is W old), so deciding is one comparison.
//! * Memory: a shard drops the keys whose state can no longer count (nothing allowed
//!   in the last 2·W) when it has doubled since its last sweep: amortised O(1); and a
//!   sweep that leaves its table mostly empty shrinks it. Without that, a shard kept
//!   the table of its busiest moment: with some processes' hash seeds, sequential keys
//!   bunch into a few shards for a while, and the limiter then held up to 1.6× the
//!   table slots it otherwise did (after a flood of 120K unique keys, 10 limiters in
//!   each of 30 processes: 23.9K slots in one process, at most 15.2K in the other 29;
//!   shrinking, at most 14.2K over 40 processes); `l4_memory::flood_of_unique_keys`
//!   failed it once.
//!
//! [`RedisWindowLimiter`] is the same in one Lua script per request (`WINDOW_SCRIPT`).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use harness::clock::SharedClock;
use harness::redis_server::connect_with_timeout;
use harness::window_limit::{
    validate, Algorithm, LimitError, RedisLimitError, RedisLimiterConfig, RedisWindowLimiter, WhenUnavailable,
    WindowDecision, WindowLimiter, WindowQuota,
};
use hashbrown::{DefaultHashBuilder, HashMap};
use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 64;
/// A shard never sweeps below this size: sweeping tiny maps is wasted work.
const MIN_SWEEP: usize = 64;

/// One key's counts, up to date at some time (see [`KeyState::roll`]).
enum Counts {
    /// The window starting at `start` has `count` allowed.
    Fixed { start: u64, count: u64 },
    /// (time, cost) of each allowed request, oldest first, and the sum of their costs.
    Log { entries: VecDeque<(u64, u32)>, sum: u64 },
    /// The window starting at `start` has `cur` allowed, the one before it `prev`.
    Counter { start: u64, prev: u64, cur: u64 },
}

struct KeyState {
    /// W in nanoseconds (a key keeps its quota: see the contract).
    window: u64,
    counts: Counts,
}

impl KeyState {
    fn fresh(algorithm: Algorithm, window: u64) -> KeyState {
        let counts = match algorithm {
            Algorithm::FixedWindow => Counts::Fixed { start: 0, count: 0 },
            Algorithm::SlidingLog => Counts::Log { entries: VecDeque::new(), sum: 0 },
            Algorithm::SlidingWindowCounter => Counts::Counter { start: 0, prev: 0, cur: 0 },
        };
        KeyState { window, counts }
    }

    /// Brings the counts to `now` (never earlier than any time they have seen): what
    /// no longer counts is dropped, so the state answers for `now` directly.
    fn roll(&mut self, now: u64) {
        let w = self.window;
        let start = now - now % w;
        match &mut self.counts {
            Counts::Fixed { start: s, count } => {
                if *s != start {
                    (*s, *count) = (start, 0);
                }
            }
            Counts::Log { entries, sum } => {
                // (now − W, now] counts: drop t ≤ now − W (nothing, while now < W).
                while entries.front().is_some_and(|&(t, _)| t + w <= now) {
                    let (_, cost) = entries.pop_front().expect("front exists");
                    *sum -= u64::from(cost);
                }
                // Give memory back once the log has shrunk well below its buffer.
                if entries.capacity() > 16 && entries.len() * 4 < entries.capacity() {
                    entries.shrink_to(entries.len() * 2);
                }
            }
            Counts::Counter { start: s, prev, cur } => {
                if *s != start {
                    // Only the window just before now's weighs in; an older one is gone.
                    *prev = if *s + w == start { *cur } else { 0 };
                    (*s, *cur) = (start, 0);
                }
            }
        }
    }

    /// Whether `cost` more is allowed at `now` (after [`roll`](Self::roll)).
    fn allows(&self, now: u64, limit: u32, cost: u32) -> bool {
        let limit = u64::from(limit);
        let cost = u64::from(cost);
        match &self.counts {
            Counts::Fixed { count, .. } => count + cost <= limit,
            Counts::Log { sum, .. } => sum + cost <= limit,
            Counts::Counter { prev, cur, .. } => {
                // prev·(W − e) + (cur + cost)·W ≤ limit·W, exactly: up to 2^32·2^62.
                let w = u128::from(self.window);
                let e = u128::from(now % self.window);
                u128::from(*prev) * (w - e) + u128::from(cur + cost) * w <= u128::from(limit) * w
            }
        }
    }

    fn record(&mut self, now: u64, cost: u32) {
        match &mut self.counts {
            Counts::Fixed { count, .. } => *count += u64::from(cost),
            // One entry per request, whatever its cost.
            Counts::Log { entries, sum } => {
                entries.push_back((now, cost));
                *sum += u64::from(cost);
            }
            Counts::Counter { cur, .. } => *cur += u64::from(cost),
        }
    }

    /// Whether this state can still count at `now`: else it equals a fresh key's.
    fn live(&self, now: u64) -> bool {
        let start = now - now % self.window;
        match &self.counts {
            Counts::Fixed { start: s, count } => *s == start && *count > 0,
            Counts::Log { entries, .. } => entries.back().is_some_and(|&(t, _)| t + self.window > now),
            Counts::Counter { start: s, prev, cur } => {
                (*s == start && (*prev > 0 || *cur > 0)) || (*s + self.window == start && *cur > 0)
            }
        }
    }
}

struct Shard<K> {
    keys: HashMap<K, KeyState>,
    sweep_at: usize,
}

impl<K: Hash + Eq> Shard<K> {
    fn sweep_if_grown(&mut self, now: u64) {
        if self.keys.len() >= self.sweep_at {
            self.keys.retain(|_, state| state.live(now));
            self.sweep_at = (2 * self.keys.len()).max(MIN_SWEEP);
            // A map keeps the capacity of its largest size: after a burst, or a run of
            // keys that happened to hash to this shard, give it back, so memory follows
            // the keys that still count (the contract bounds it at every instant).
            if self.keys.capacity() > 2 * self.sweep_at {
                self.keys.shrink_to(self.sweep_at);
            }
        }
    }
}

/// A keyed window limiter.
pub struct Limiter<K> {
    algorithm: Algorithm,
    clock: SharedClock,
    latest: AtomicU64,
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Shard<K>>]>,
}

impl<K: Hash + Eq + Clone + Send + Sync> Limiter<K> {
    fn shard_of(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// The limiter's time: the clock, but never earlier than any time already used.
    fn now(&self) -> u64 {
        let clock = self.clock.now().as_nanos();
        self.latest.fetch_max(clock, Ordering::SeqCst).max(clock)
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> WindowLimiter<K> for Limiter<K> {
    fn new(algorithm: Algorithm, clock: SharedClock) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { keys: HashMap::new(), sweep_at: MIN_SWEEP })).collect();
        Limiter { algorithm, clock, latest: AtomicU64::new(0), hasher: DefaultHashBuilder::default(), shards }
    }

    fn check(&self, limits: &[(K, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError> {
        validate(limits, cost)?;
        let shard_ids: Vec<usize> = limits.iter().map(|(key, _)| self.shard_of(key)).collect();
        let mut order = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        // Ascending shard order: no two requests ever wait on each other in a cycle.
        let mut guards: Vec<MutexGuard<'_, Shard<K>>> = order.iter().map(|&id| self.shards[id].lock()).collect();
        let guard_of: Vec<usize> =
            shard_ids.iter().map(|id| order.binary_search(id).expect("every named shard is locked")).collect();
        // Read time with the locks held, so decisions on a key follow time's order.
        let now = self.now();

        // First pass: decide every key, changing nothing but what `roll` drops.
        let mut refusing = None;
        for (index, ((key, quota), &g)) in limits.iter().zip(&guard_of).enumerate() {
            let allowed = match guards[g].keys.get_mut(key) {
                Some(state) => {
                    state.roll(now);
                    state.allows(now, quota.limit(), cost)
                }
                None => KeyState::fresh(self.algorithm, quota.window_nanos()).allows(now, quota.limit(), cost),
            };
            if !allowed {
                refusing = Some(index);
                break;
            }
        }
        if let Some(limiting) = refusing {
            return Ok(WindowDecision::Denied { limiting });
        }
        // Second pass: every key allows it, so every key records it.
        if cost > 0 {
            for ((key, quota), &g) in limits.iter().zip(&guard_of) {
                let shard = &mut guards[g];
                let state = shard.keys.entry(key.clone()).or_insert_with(|| {
                    let mut state = KeyState::fresh(self.algorithm, quota.window_nanos());
                    state.roll(now);
                    state
                });
                state.record(now, cost);
                shard.sweep_if_grown(now);
            }
        }
        Ok(WindowDecision::Allowed)
    }
}

/// All three algorithms over all of a request's keys, atomically. KEYS: one per limit,
/// then the namespace's latest-time key. ARGV: the algorithm (`f`, `l` or `c`), now
/// (µs), cost, then per key its window (µs) and limit. Returns {1} if allowed, else
/// {0, index of the first refusing key (0-based)}. Every number stays below 2^53 (the
/// Redis domain of the contract), where Lua's doubles are exact integers.
const WINDOW_SCRIPT: &str = r#"
local function int(x) return string.format('%.0f', x) end
local n = #KEYS - 1
local alg = ARGV[1]
local now = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local latest = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if latest > now then now = latest else redis.call('SET', KEYS[n + 1], int(now)) end
local states = {}
for i = 1, n do
  local w = tonumber(ARGV[2 + 2 * i])
  local limit = tonumber(ARGV[3 + 2 * i])
  local start = now - now % w
  local ok
  if alg == 'l' then
    -- (now - W, now] counts; members are 'time:sequence:cost'.
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', int(now - w))
    local sum = 0
    for _, member in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
      sum = sum + tonumber(string.match(member, ':(%d+)$'))
    end
    ok = sum + cost <= limit
  else
    local h = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
    local win = tonumber(h[1] or '-1')
    local cur = tonumber(h[2] or '0')
    local prev = 0
    if win ~= start then
      -- A new window: the counter keeps the old one as prev only if it is adjacent.
      if alg == 'c' and win == start - w then prev = cur end
      cur = 0
    elseif alg == 'c' then
      prev = tonumber(h[3] or '0')
    end
    if alg == 'f' then
      ok = cur + cost <= limit
    else
      ok = prev * (w - (now - start)) + (cur + cost) * w <= limit * w
    end
    states[i] = {start, prev, cur}
  end
  if not ok then return {0, i - 1} end
end
if cost > 0 then
  for i = 1, n do
    local w = tonumber(ARGV[2 + 2 * i])
    local until_
    if alg == 'l' then
      local seq = redis.call('ZCOUNT', KEYS[i], int(now), int(now))
      redis.call('ZADD', KEYS[i], int(now), int(now) .. ':' .. seq .. ':' .. int(cost))
      until_ = now + w
    else
      local s = states[i]
      redis.call('HSET', KEYS[i], 'w', int(s[1]), 'p', int(s[2]), 'c', int(s[3] + cost))
      if alg == 'f' then until_ = s[1] + w else until_ = s[1] + 2 * w end
    end
    -- Until it stops counting, plus a second (REDIS_EXPIRY_MARGIN): Redis's clock may
    -- run ahead of the callers'.
    redis.call('PEXPIRE', KEYS[i], math.ceil((until_ - now) / 1000) + 1000)
  end
end
return {1}
"#;

/// A window limiter shared through Redis.
pub struct RedisLimiter {
    algorithm: Algorithm,
    config: RedisLimiterConfig,
    clock: SharedClock,
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
}

impl RedisLimiter {
    fn key(&self, name: &str) -> String {
        let tag = match self.algorithm {
            Algorithm::FixedWindow => "f",
            Algorithm::SlidingLog => "l",
            Algorithm::SlidingWindowCounter => "c",
        };
        // `{namespace}` is the Cluster hash tag: every key of the namespace, one slot.
        format!("{{{}}}:{tag}:{name}", self.config.namespace)
    }

    fn unavailable(&self, why: String) -> Result<WindowDecision, RedisLimitError> {
        match self.config.when_unavailable {
            WhenUnavailable::FailOpen => Ok(WindowDecision::Allowed),
            WhenUnavailable::FailClosed => Err(RedisLimitError::Unavailable(why)),
        }
    }
}

impl RedisWindowLimiter for RedisLimiter {
    async fn connect(
        url: &str,
        algorithm: Algorithm,
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let connection = connect_with_timeout(url, config.timeout).await.map_err(RedisLimitError::Unavailable)?;
        Ok(RedisLimiter { algorithm, config, clock, connection, script: redis::Script::new(WINDOW_SCRIPT) })
    }

    async fn check(&self, limits: &[(&str, WindowQuota)], cost: u32) -> Result<WindowDecision, RedisLimitError> {
        validate(limits, cost).map_err(RedisLimitError::Invalid)?;
        let mut invocation = self.script.prepare_invoke();
        for (name, _) in limits {
            invocation.key(self.key(name));
        }
        invocation.key(format!("{{{}}}:latest", self.config.namespace));
        let algorithm = match self.algorithm {
            Algorithm::FixedWindow => "f",
            Algorithm::SlidingLog => "l",
            Algorithm::SlidingWindowCounter => "c",
        };
        invocation.arg(algorithm).arg(self.clock.now().as_nanos() / 1_000).arg(cost);
        for (_, quota) in limits {
            invocation.arg(quota.window_nanos() / 1_000).arg(quota.limit());
        }
        let mut connection = self.connection.clone();
        let reply =
            match tokio::time::timeout(self.config.timeout, invocation.invoke_async::<Vec<i64>>(&mut connection)).await
            {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return self.unavailable(e.to_string()),
                Err(_) => return self.unavailable(format!("no answer within {:?}", self.config.timeout)),
            };
        match reply.as_slice() {
            [1] => Ok(WindowDecision::Allowed),
            [0, index] => Ok(WindowDecision::Denied { limiting: *index as usize }),
            _ => Err(RedisLimitError::Unavailable(format!("unexpected script reply {reply:?}"))),
        }
    }
}
