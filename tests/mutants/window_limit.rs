//! Buggy window limiters that the suite must reject: one plain limiter (a single
//! `Mutex<HashMap>`, each key with its window counters and, for the log, a deque)
//! with every bug a named switch; and a plain Redis limiter (one Lua script) with its
//! own switches. `Flawed<_, NONE>` and `ScriptedRedis<NONE>` pass the whole suite;
//! each bug must be rejected by the case [`mutants`] names for it.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use harness::clock::SharedClock;
use harness::window_limit::{
    redis_factory, redis_suite, suite, validate, Algorithm, LimitError, RedisLimitError, RedisLimiterConfig,
    RedisWindowLimiter, WhenUnavailable, WindowDecision, WindowLimiter, WindowQuota,
};
use harness::Case;

pub const NONE: u8 = 0;
/// The window index is `now.div_ceil(W)`: the boundary instant belongs to the window
/// before it, and everything after it to the next.
pub const FIXED_DIV_CEIL: u8 = 1;
/// "Fixing" the boundary burst: the fixed window counts over the last W (a log).
pub const FIXED_SLIDES: u8 = 2;
/// The log counts a request exactly W old (`t ≥ now − W`).
pub const LOG_EDGE_INCLUSIVE: u8 = 3;
/// The log records one unit per request, whatever its cost.
pub const LOG_COUNTS_ONE_UNIT: u8 = 4;
/// A denied request is still logged.
pub const DENIED_RECORDED: u8 = 5;
/// The counter in f64: `prev · ((W − e) / W) + cur + cost ≤ limit`.
pub const COUNTER_FLOAT: u8 = 6;
/// The counter floors early: `⌊prev·(W − e)/W⌋ + cur + cost ≤ limit`.
pub const COUNTER_EARLY_FLOOR: u8 = 7;
/// On a new window, prev = the last window's count, even if that window was not the
/// one just before (an idle window in between).
pub const COUNTER_ANY_PREVIOUS: u8 = 8;
/// The counter's products in u64: `prev·(W − e)` overflows for large limits and windows.
pub const COUNTER_U64: u8 = 9;
/// Records on each key as soon as it allows, before a later key refuses.
pub const PARTIAL_ON_DENY: u8 = 10;
/// Uses the raw clock: a clock stepping back restarts windows.
pub const RAW_CLOCK: u8 = 11;
/// Reports the last refusing key instead of the first.
pub const LIMITING_LAST: u8 = 12;
/// Decides under the lock, releases it, and records under it again.
pub const RACY_CHECK: u8 = 13;
/// Never sweeps idle keys.
pub const NEVER_SWEEPS: u8 = 14;
/// The log moves a cursor past old entries instead of removing them.
pub const LOG_NEVER_PRUNES: u8 = 15;
/// The log stores one entry per unit of cost.
pub const LOG_ENTRY_PER_UNIT: u8 = 16;
/// The sweep keeps only keys with requests in now's window: the counter's previous
/// window and the log's last W are forgotten.
pub const SWEEP_CURRENT_WINDOW_ONLY: u8 = 17;
/// The log pops what no longer counts but never shrinks its buffer: after a burst it
/// keeps the burst's capacity.
pub const LOG_NEVER_SHRINKS: u8 = 18;
/// The sweep keeps a key only if it spent in now's window or the one before: a key
/// rolled into now's window by a check that spent nothing (its previous window still
/// weighing, nothing spent yet in this one) is swept, and its previous window forgotten.
pub const SWEEP_FORGETS_ROLLED: u8 = 19;

struct Entry {
    window: u64,
    /// Start of the window `cur` counts, and the count of the window before it.
    start: u64,
    prev: u64,
    cur: u64,
    /// SlidingLog (and FIXED_SLIDES): allowed (time, cost), oldest first from `head`.
    log: VecDeque<(u64, u32)>,
    head: usize,
    sum: u64,
}

impl Entry {
    fn roll<const BUG: u8>(&mut self, now: u64) {
        let w = self.window;
        let start = if BUG == FIXED_DIV_CEIL { now.div_ceil(w) * w } else { now - now % w };
        if start != self.start {
            self.prev = if BUG == COUNTER_ANY_PREVIOUS || self.start + w == start { self.cur } else { 0 };
            self.cur = 0;
            self.start = start;
        }
        while let Some(&(t, cost)) = self.log.get(self.head) {
            let expired = if BUG == LOG_EDGE_INCLUSIVE { t + w < now } else { t + w <= now };
            if !expired {
                break;
            }
            self.sum -= u64::from(cost);
            if BUG == LOG_NEVER_PRUNES {
                self.head += 1;
            } else {
                self.log.pop_front();
            }
        }
        if BUG != LOG_NEVER_SHRINKS && self.log.capacity() > 16 && self.log.len() * 4 < self.log.capacity() {
            self.log.shrink_to(self.log.len() * 2);
        }
    }

    fn allows<const BUG: u8>(&self, algorithm: Algorithm, now: u64, limit: u32, cost: u32) -> bool {
        let (limit, cost) = (u64::from(limit), u64::from(cost));
        match algorithm {
            Algorithm::FixedWindow if BUG == FIXED_SLIDES => self.sum + cost <= limit,
            Algorithm::FixedWindow => self.cur + cost <= limit,
            Algorithm::SlidingLog => self.sum + cost <= limit,
            Algorithm::SlidingWindowCounter => {
                let e = now % self.window;
                if BUG == COUNTER_FLOAT {
                    let weight = (self.window - e) as f64 / self.window as f64;
                    self.prev as f64 * weight + (self.cur + cost) as f64 <= limit as f64
                } else if BUG == COUNTER_EARLY_FLOOR {
                    let weighted = u128::from(self.prev) * u128::from(self.window - e) / u128::from(self.window);
                    weighted + u128::from(self.cur + cost) <= u128::from(limit)
                } else if BUG == COUNTER_U64 {
                    self.prev * (self.window - e) + (self.cur + cost) * self.window <= limit * self.window
                } else {
                    let w = u128::from(self.window);
                    u128::from(self.prev) * (w - u128::from(e)) + u128::from(self.cur + cost) * w
                        <= u128::from(limit) * w
                }
            }
        }
    }

    fn record<const BUG: u8>(&mut self, logs: bool, now: u64, cost: u32) {
        self.cur += u64::from(cost);
        if !logs {
            return;
        }
        if BUG == LOG_ENTRY_PER_UNIT {
            self.log.extend(std::iter::repeat_n((now, 1), cost as usize));
        } else {
            self.log.push_back((now, cost));
        }
        self.sum += u64::from(if BUG == LOG_COUNTS_ONE_UNIT { 1 } else { cost });
    }

    fn live<const BUG: u8>(&self, now: u64) -> bool {
        let start = now - now % self.window;
        if BUG == SWEEP_CURRENT_WINDOW_ONLY {
            return self.start == start && self.cur > 0;
        }
        if BUG == SWEEP_FORGETS_ROLLED {
            let spent = (self.start == start || self.start + self.window == start) && self.cur > 0;
            return spent || self.log.back().is_some_and(|&(t, _)| t + self.window > now);
        }
        let counts = (self.start == start && (self.prev > 0 || self.cur > 0))
            || (self.start + self.window == start && self.cur > 0);
        counts || self.log.back().is_some_and(|&(t, _)| t + self.window > now)
    }
}

struct State<K> {
    keys: HashMap<K, Entry>,
    latest: u64,
    sweep_at: usize,
}

pub struct Flawed<K, const BUG: u8> {
    algorithm: Algorithm,
    clock: SharedClock,
    state: Mutex<State<K>>,
}

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> Flawed<K, BUG> {
    fn logs(&self) -> bool {
        self.algorithm == Algorithm::SlidingLog || (BUG == FIXED_SLIDES && self.algorithm == Algorithm::FixedWindow)
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, const BUG: u8> WindowLimiter<K> for Flawed<K, BUG> {
    fn new(algorithm: Algorithm, clock: SharedClock) -> Self {
        Flawed { algorithm, clock, state: Mutex::new(State { keys: HashMap::new(), latest: 0, sweep_at: 64 }) }
    }

    fn check(&self, limits: &[(K, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError> {
        validate(limits, cost)?;
        let mut state = self.state.lock().unwrap();
        let clock = self.clock.now().as_nanos();
        state.latest = state.latest.max(clock);
        let now = if BUG == RAW_CLOCK { clock } else { state.latest };
        let mut refusing = None;
        for (index, (key, quota)) in limits.iter().enumerate() {
            let entry = state.keys.entry(key.clone()).or_insert_with(|| Entry {
                window: quota.window_nanos(),
                start: 0,
                prev: 0,
                cur: 0,
                log: VecDeque::new(),
                head: 0,
                sum: 0,
            });
            entry.roll::<BUG>(now);
            if !entry.allows::<BUG>(self.algorithm, now, quota.limit(), cost) {
                refusing = Some(index);
                if BUG != LIMITING_LAST {
                    break;
                }
            } else if BUG == PARTIAL_ON_DENY && cost > 0 {
                // The bug: pays as it goes, before knowing the other keys agree.
                entry.record::<BUG>(self.logs(), now, cost);
            }
        }
        if let Some(limiting) = refusing {
            if BUG == DENIED_RECORDED && cost > 0 {
                for (key, _) in limits {
                    if let Some(entry) = state.keys.get_mut(key) {
                        entry.record::<BUG>(self.logs(), now, cost);
                    }
                }
            }
            return Ok(WindowDecision::Denied { limiting });
        }
        if BUG == RACY_CHECK {
            // The bug: decides under one lock, records under another.
            drop(state);
            // Comparing keys is a contention point in the graded suite: it widens the window.
            std::hint::black_box(limits.first().map(|l| &l.0) == limits.last().map(|l| &l.0));
            state = self.state.lock().unwrap();
        }
        if cost > 0 && BUG != PARTIAL_ON_DENY {
            let logs = self.logs();
            for (key, _) in limits {
                if let Some(entry) = state.keys.get_mut(key) {
                    entry.record::<BUG>(logs, now, cost);
                }
            }
        }
        if BUG != NEVER_SWEEPS && state.keys.len() >= state.sweep_at {
            state.keys.retain(|_, entry| entry.live::<BUG>(now));
            state.sweep_at = (2 * state.keys.len()).max(64);
        }
        Ok(WindowDecision::Allowed)
    }
}

// ---------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------

/// An extra round trip (reads the latest time with GET before the script).
pub const TWO_ROUND_TRIPS: u8 = 1;
/// Keys written without PEXPIRE.
pub const NO_PEXPIRE: u8 = 2;
/// The log's member is the time alone: ZADD at an equal time overwrites.
pub const SAME_MEMBER: u8 = 3;
/// The script records each key as soon as it allows, before a later key refuses.
pub const RECORDS_AS_IT_GOES: u8 = 4;
/// Fail-open configured, but Redis errors are returned anyway.
pub const IGNORES_FAIL_OPEN: u8 = 5;
/// Keys expire exactly when they stop counting, with no margin for Redis's clock.
pub const EXPIRY_WITHOUT_MARGIN: u8 = 6;

/// KEYS: the limits' keys, then the latest time. ARGV: algorithm, now (µs), cost, then
/// per key window (µs) and limit. `--EARLY--` and `--LATE--` mark where recording goes.
const SCRIPT: &str = r#"
local n = #KEYS - 1
local alg = ARGV[1]
local now = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local latest = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if latest > now then now = latest else redis.call('SET', KEYS[n + 1], string.format('%.0f', now)) end
local st = {}
local function record(i)
  local w = tonumber(ARGV[2 + 2 * i])
  local life
  if alg == 'l' then
    local seq = redis.call('ZCOUNT', KEYS[i], now, now)
    redis.call('ZADD', KEYS[i], now, --MEMBER--)
    life = w
  else
    redis.call('HSET', KEYS[i], 'w', st[i][1], 'p', st[i][2], 'c', st[i][3] + cost)
    life = st[i][1] + w - now
    if alg == 'c' then life = life + w end
  end
  --EXPIRE--
end
for i = 1, n do
  local w = tonumber(ARGV[2 + 2 * i])
  local limit = tonumber(ARGV[3 + 2 * i])
  local start = now - now % w
  local ok
  if alg == 'l' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - w)
    local sum = 0
    for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do sum = sum + tonumber(string.match(m, ':(%d+)$')) end
    ok = sum + cost <= limit
  else
    local h = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
    local win = tonumber(h[1] or '-1')
    local cur = tonumber(h[2] or '0')
    local prev = 0
    if win ~= start then
      if alg == 'c' and win == start - w then prev = cur end
      cur = 0
    elseif alg == 'c' then
      prev = tonumber(h[3] or '0')
    end
    if alg == 'f' then ok = cur + cost <= limit else ok = prev * (w - (now - start)) + (cur + cost) * w <= limit * w end
    st[i] = {start, prev, cur}
  end
  if not ok then return {0, i - 1} end
  --EARLY--
end
--LATE--
return {1}
"#;

fn script(bug: u8) -> String {
    let early = "if cost > 0 then record(i) end";
    let late = "if cost > 0 then for i = 1, n do record(i) end end";
    let (early, late) = if bug == RECORDS_AS_IT_GOES { (early, "") } else { ("", late) };
    let member = if bug == SAME_MEMBER { "now .. ':' .. cost" } else { "now .. ':' .. seq .. ':' .. cost" };
    let expire = match bug {
        NO_PEXPIRE => "",
        EXPIRY_WITHOUT_MARGIN => "redis.call('PEXPIRE', KEYS[i], math.ceil(life / 1000))",
        _ => "redis.call('PEXPIRE', KEYS[i], math.ceil(life / 1000) + 1000)",
    };
    SCRIPT
        .replace("--EARLY--", early)
        .replace("--LATE--", late)
        .replace("--MEMBER--", member)
        .replace("--EXPIRE--", expire)
}

/// A plain Redis window limiter (one script per check) with bug `BUG`.
pub struct ScriptedRedis<const BUG: u8> {
    algorithm: Algorithm,
    config: RedisLimiterConfig,
    clock: SharedClock,
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
}

impl<const BUG: u8> RedisWindowLimiter for ScriptedRedis<BUG> {
    async fn connect(
        url: &str,
        algorithm: Algorithm,
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let connection = harness::redis_server::connect_with_timeout(url, config.timeout)
            .await
            .map_err(RedisLimitError::Unavailable)?;
        Ok(ScriptedRedis { algorithm, config, clock, connection, script: redis::Script::new(&script(BUG)) })
    }

    async fn check(&self, limits: &[(&str, WindowQuota)], cost: u32) -> Result<WindowDecision, RedisLimitError> {
        validate(limits, cost).map_err(RedisLimitError::Invalid)?;
        let alg = match self.algorithm {
            Algorithm::FixedWindow => "f",
            Algorithm::SlidingLog => "l",
            Algorithm::SlidingWindowCounter => "c",
        };
        let ns = &self.config.namespace;
        let mut invocation = self.script.prepare_invoke();
        for (name, _) in limits {
            invocation.key(format!("{{{ns}}}:{alg}:{name}"));
        }
        invocation.key(format!("{{{ns}}}:latest"));
        invocation.arg(alg).arg(self.clock.now().as_nanos() / 1_000).arg(cost);
        for (_, quota) in limits {
            invocation.arg(quota.window_nanos() / 1_000).arg(quota.limit());
        }
        let mut connection = self.connection.clone();
        let call = async {
            if BUG == TWO_ROUND_TRIPS {
                // The bug: reads the latest time in a round trip of its own first.
                let _: Option<String> =
                    redis::cmd("GET").arg(format!("{{{ns}}}:latest")).query_async(&mut connection).await?;
            }
            invocation.invoke_async::<Vec<i64>>(&mut connection).await
        };
        let failed = |why: String| match self.config.when_unavailable {
            WhenUnavailable::FailOpen if BUG != IGNORES_FAIL_OPEN => Ok(WindowDecision::Allowed),
            _ => Err(RedisLimitError::Unavailable(why)),
        };
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(reply)) => match reply.as_slice() {
                [1] => Ok(WindowDecision::Allowed),
                [0, index] => Ok(WindowDecision::Denied { limiting: *index as usize }),
                _ => Err(RedisLimitError::Unavailable(format!("unexpected reply {reply:?}"))),
            },
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("timed out".to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------
// The list the self-check runs
// ---------------------------------------------------------------------------------

macro_rules! window_mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("window_limit::", stringify!($bug)),
            suite: suite(harness::window_limit::factory::<Flawed<_, $bug>>()),
            rejected_by: $case,
        }
    };
}

macro_rules! window_redis_mutant {
    ($bug:ident, $case:literal) => {
        crate::Mutant {
            name: concat!("window_limit::redis::", stringify!($bug)),
            suite: redis_suite(redis_factory::<ScriptedRedis<$bug>>()),
            rejected_by: $case,
        }
    };
}

/// Every bug, with the case that must reject it.
pub fn mutants() -> Vec<crate::Mutant> {
    vec![
        window_mutant!(FIXED_DIV_CEIL, "window_limit::l1_one_key::fixed_window"),
        window_mutant!(FIXED_SLIDES, "window_limit::l1_one_key::boundary_burst"),
        window_mutant!(LOG_EDGE_INCLUSIVE, "window_limit::l1_one_key::sliding_log"),
        window_mutant!(LOG_COUNTS_ONE_UNIT, "window_limit::l1_one_key::sliding_log"),
        window_mutant!(COUNTER_FLOAT, "window_limit::l1_one_key::extreme_quotas"),
        window_mutant!(COUNTER_EARLY_FLOOR, "window_limit::l1_one_key::sliding_window_counter"),
        window_mutant!(COUNTER_ANY_PREVIOUS, "window_limit::l1_one_key::sliding_window_counter"),
        window_mutant!(COUNTER_U64, "window_limit::l1_one_key::extreme_quotas"),
        window_mutant!(DENIED_RECORDED, "window_limit::l2_many_keys::edges"),
        window_mutant!(PARTIAL_ON_DENY, "window_limit::l2_many_keys::short_sequences"),
        window_mutant!(RAW_CLOCK, "window_limit::l2_many_keys::edges"),
        window_mutant!(LIMITING_LAST, "window_limit::l2_many_keys::short_sequences"),
        window_mutant!(RACY_CHECK, "window_limit::l3_threads::linearizable"),
        window_mutant!(NEVER_SWEEPS, "window_limit::l4_memory::flood_of_unique_keys"),
        window_mutant!(LOG_NEVER_PRUNES, "window_limit::l4_memory::log_is_pruned"),
        window_mutant!(LOG_ENTRY_PER_UNIT, "window_limit::l4_memory::one_entry_per_request"),
        window_mutant!(SWEEP_CURRENT_WINDOW_ONLY, "window_limit::l4_memory::sweep_keeps_live_keys"),
        window_mutant!(LOG_NEVER_SHRINKS, "window_limit::l4_memory::log_gives_memory_back"),
        window_mutant!(SWEEP_FORGETS_ROLLED, "window_limit::l4_memory::sweep_keeps_live_keys"),
        window_redis_mutant!(TWO_ROUND_TRIPS, "window_limit::l5_redis::round_trips_and_keys"),
        window_redis_mutant!(NO_PEXPIRE, "window_limit::l5_redis::sequences"),
        window_redis_mutant!(SAME_MEMBER, "window_limit::l5_redis::sequences"),
        window_redis_mutant!(RECORDS_AS_IT_GOES, "window_limit::l5_redis::sequences"),
        window_redis_mutant!(IGNORES_FAIL_OPEN, "window_limit::l5_redis::outage_fail_open"),
        window_redis_mutant!(EXPIRY_WITHOUT_MARGIN, "window_limit::l5_redis::expiry_outlives_window"),
    ]
}

/// Implementations that must pass every case, by prefix: the plain bases (so each
/// mutant's rejection is due to its one bug).
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    let base = suite(harness::window_limit::factory::<Flawed<_, NONE>>())
        .into_iter()
        .chain(redis_suite(redis_factory::<ScriptedRedis<NONE>>()));
    vec![("mutant_base".to_string(), base.collect())]
}
