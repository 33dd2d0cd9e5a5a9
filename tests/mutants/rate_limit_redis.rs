//! A Redis-backed limiter written as a candidate might, differently from the reference:
//! the Lua script computes the whole decision (remaining, waits, the limiting index) and
//! every bucket key expires a whole window (τ) plus a second after it was written. With
//! `NONE` it is a correct alternative (every Redis and cluster case must pass); each
//! other switch is one realistic expiry or key-tagging bug.

use harness::clock::SharedClock;
use harness::rate_limit::{
    validate, Decision, Quota, RedisLimitError, RedisLimiterConfig, RedisRateLimiter, WhenUnavailable, FAIL_OPEN,
};
use harness::redis_server::{connect_cluster_with_timeout, connect_with_timeout, RedisConnection};
use std::time::Duration;

pub const NONE: u8 = 0;
/// Bucket keys are written without an expiry: Redis keeps every key ever seen.
pub const NO_EXPIRY: u8 = 1;
/// A bucket key expires one period after it is written, though a bucket spent several
/// tokens deep stays in debt for several periods: it comes back full too early.
pub const EXPIRY_ONE_PERIOD: u8 = 2;
/// Bucket keys live a day "to be safe": memory follows every key of the last day.
pub const EXPIRY_A_DAY: u8 = 3;
/// The debt in microseconds passed to PX as if it were milliseconds: 1000× too long.
pub const EXPIRY_MICROS_AS_MILLIS: u8 = 4;
/// Each key expires exactly when its bucket is full again (PX = TAT − now, rounded up
/// to whole ms), without the margin for Redis's clock running ahead of the callers'.
pub const EXPIRY_WITHOUT_MARGIN: u8 = 5;
/// Every key tagged `{namespace:}` whatever its tenant, as "cluster-ready" code used to
/// be: correct on one server, but on a cluster the whole limiter lives in one slot on
/// one master.
pub const ONE_SLOT_TAGGING: u8 = 6;
/// Buckets tagged by tenant, but one latest-time key for the whole namespace: fine on
/// one server; on a cluster the script's keys span two slots (CROSSSLOT).
pub const NAMESPACE_WIDE_LATEST: u8 = 7;
/// The cluster client built with `retries(0)` "so that my own timeout governs": it no
/// longer follows ASK and MOVED or retries TRYAGAIN, so calls fail while slots move.
pub const NO_CLUSTER_RETRIES: u8 = 8;

/// KEYS: buckets, then the latest-time key. ARGV: now (µs), cost, expiry mode, then per
/// bucket its period and τ (µs). Returns allowed, remaining, retry_after (µs),
/// reset_after (µs), limiting (0-based), as integer strings.
const SCRIPT: &str = r#"
local function int(x) return string.format('%.0f', x) end
local n = #KEYS - 1
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local mode = tonumber(ARGV[3])
local latest = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if latest > now then now = latest else redis.call('SET', KEYS[n + 1], int(now)) end
local tats, news, waits, periods, taus = {}, {}, {}, {}, {}
local allowed = true
for i = 1, n do
  periods[i] = tonumber(ARGV[2 + 2 * i]); taus[i] = tonumber(ARGV[3 + 2 * i])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  tats[i] = tat; news[i] = tat + cost * periods[i]
  waits[i] = math.max(news[i] - taus[i] - now, 0)
  if waits[i] > 0 then allowed = false end
end
local remaining, retry, reset, limiting = nil, 0, 0, 0
for i = 1, n do
  local after = allowed and news[i] or tats[i]
  local r = math.floor((now + taus[i] - after) / periods[i])
  if allowed and (remaining == nil or r < remaining) then limiting = i - 1 end
  if remaining == nil or r < remaining then remaining = r end
  if not allowed and waits[i] > retry then retry = waits[i]; limiting = i - 1 end
  reset = math.max(reset, after - now)
  if allowed and cost > 0 then
    local px = math.floor(taus[i] / 1000) + 1000
    if mode == 1 then redis.call('SET', KEYS[i], int(news[i]))
    else
      if mode == 2 then px = math.ceil(periods[i] / 1000) end
      if mode == 3 then px = 86400000 end
      if mode == 4 then px = news[i] - now end
      if mode == 5 then px = math.ceil((news[i] - now) / 1000) end
      redis.call('SET', KEYS[i], int(news[i]), 'PX', int(px))
    end
  end
end
return {allowed and '1' or '0', int(remaining), int(retry), int(reset), int(limiting)}
"#;

pub struct ScriptedRedis<const BUG: u8> {
    config: RedisLimiterConfig,
    clock: SharedClock,
    connection: RedisConnection,
    script: redis::Script,
}

impl<const BUG: u8> RedisRateLimiter for ScriptedRedis<BUG> {
    async fn connect(url: &str, config: RedisLimiterConfig, clock: SharedClock) -> Result<Self, RedisLimitError> {
        let connection = connect_with_timeout(url, config.timeout).await.map_err(RedisLimitError::Unavailable)?;
        let connection = RedisConnection::Server(connection);
        Ok(ScriptedRedis { config, clock, connection, script: redis::Script::new(SCRIPT) })
    }

    async fn connect_cluster(
        nodes: &[String],
        config: RedisLimiterConfig,
        clock: SharedClock,
    ) -> Result<Self, RedisLimitError> {
        let connection = if BUG == NO_CLUSTER_RETRIES {
            let unavailable = |e: redis::RedisError| RedisLimitError::Unavailable(e.to_string());
            let client = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
                .retries(0)
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .build()
                .map_err(unavailable)?;
            client.get_async_connection().await.map_err(unavailable)?
        } else {
            connect_cluster_with_timeout(nodes, config.timeout).await.map_err(RedisLimitError::Unavailable)?
        };
        let connection = RedisConnection::Cluster(connection);
        Ok(ScriptedRedis { config, clock, connection, script: redis::Script::new(SCRIPT) })
    }

    async fn check(&self, tenant: &str, limits: &[(&str, Quota)], cost: u32) -> Result<Decision, RedisLimitError> {
        validate(limits, cost).map_err(RedisLimitError::Invalid)?;
        let namespace = &self.config.namespace;
        // Hex keeps any tenant from closing the tag early: injective and tag-safe.
        let hex: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
        let tag = if BUG == ONE_SLOT_TAGGING { format!("{{{namespace}:}}") } else { format!("{{{namespace}:{hex}}}") };
        let mut invocation = self.script.prepare_invoke();
        for (name, _) in limits {
            invocation.key(format!("{tag}:{hex}:bucket:{name}"));
        }
        if BUG == NAMESPACE_WIDE_LATEST {
            invocation.key(format!("{{{namespace}:}}:now"));
        } else {
            invocation.key(format!("{tag}:{hex}:now"));
        }
        invocation.arg(self.clock.now().as_nanos() / 1_000).arg(cost).arg(if BUG <= EXPIRY_WITHOUT_MARGIN {
            BUG
        } else {
            NONE
        });
        for (_, quota) in limits {
            let period = quota.period_nanos().div_ceil(1_000);
            invocation.arg(period).arg(period * u64::from(quota.burst()));
        }
        let mut connection = self.connection.clone();
        let outcome =
            tokio::time::timeout(self.config.timeout, invocation.invoke_async::<Vec<String>>(&mut connection));
        let reply = match outcome.await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return self.unavailable(e.to_string()),
            Err(_) => return self.unavailable("timed out".into()),
        };
        let number = |i: usize| reply.get(i).and_then(|s| s.parse::<u64>().ok());
        match (number(0), number(1), number(2), number(3), number(4)) {
            (Some(allowed), Some(remaining), Some(retry), Some(reset), Some(limiting)) => Ok(Decision {
                allowed: allowed == 1,
                remaining: remaining as u32,
                retry_after: Duration::from_micros(retry),
                reset_after: Duration::from_micros(reset),
                limiting: limiting as usize,
            }),
            _ => Err(RedisLimitError::Unavailable(format!("unexpected reply {reply:?}"))),
        }
    }
}

impl<const BUG: u8> ScriptedRedis<BUG> {
    fn unavailable(&self, why: String) -> Result<Decision, RedisLimitError> {
        match self.config.when_unavailable {
            WhenUnavailable::FailOpen => Ok(FAIL_OPEN),
            WhenUnavailable::FailClosed => Err(RedisLimitError::Unavailable(why)),
        }
    }
}
