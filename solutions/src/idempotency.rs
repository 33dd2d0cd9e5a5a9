//! Reference idempotency-key store.
//!
//! * Records live in 64 shards (`parking_lot::Mutex<HashMap>`), keyed by the
//!   (scope, key) pair itself, never a joined string, so ("t:x", "y") and
//!   ("t", "x:y") stay apart. Lookups borrow the caller's strings ([`Id`]).
//! * Every call reads the clock, reads and changes its record under the shard lock,
//!   and takes its fencing token from one atomic counter inside that critical section:
//!   each call is one atomic step at one time, so exactly one of N identical requests
//!   executes, and a clock step never lands between a call's time and its effect.
//! * `complete`/`abandon` check the fence before the state ([`harness::idempotency::SETTLE_CHECK_ORDER`]):
//!   a completed record keeps the token that completed it.
//! * Expired records (past retention) are treated as absent on access and swept when
//!   a shard has doubled since its last sweep: memory follows the live records.
//!
//! [`RedisStore`] keeps the same records as Redis hashes, each call one Lua script.
//! A record's keys (the hash and its fence, the last token issued) carry the record's
//! own hash tag, so they share a slot while records spread over a cluster. On a
//! cluster, `complete` also waits for a replica (`WAIT 1`), so an acknowledged
//! response survives a failover; a lost lease is caught by the fence.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use harness::clock::{SharedClock, Timestamp};
use harness::idempotency::{
    record_tag, Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, Lease, LeaseError, RedisIdempotencyStore,
    RedisStoreConfig, Response, SettleError, StoreUnavailable,
};
use harness::redis_server::{connect_cluster_with_timeout, connect_with_timeout, RedisConnection};
use hashbrown::{DefaultHashBuilder, Equivalent, HashMap};
use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 64;
const MIN_SWEEP: usize = 64;

/// A borrowed (scope, key): hashes exactly like the owned `(String, String)`.
#[derive(Hash)]
struct Id<'a>(&'a str, &'a str);

impl Equivalent<(String, String)> for Id<'_> {
    fn equivalent(&self, owned: &(String, String)) -> bool {
        self.0 == owned.0 && self.1 == owned.1
    }
}

enum State {
    InProgress { token: u64, leased_until: Timestamp },
    Completed { token: u64, response: Response, until: Timestamp },
}

struct Record {
    fingerprint: Fingerprint,
    state: State,
}

impl Record {
    /// Whether the record still exists at `now` (not past its retention).
    fn is_live(&self, now: Timestamp, config: &IdempotencyConfig) -> bool {
        match &self.state {
            State::InProgress { leased_until, .. } => now < *leased_until + config.retention(),
            State::Completed { until, .. } => now < *until,
        }
    }
}

struct Shard {
    records: HashMap<(String, String), Record>,
    sweep_at: usize,
}

pub struct Store {
    config: IdempotencyConfig,
    clock: SharedClock,
    last_token: AtomicU64,
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Shard>]>,
}

impl Store {
    /// Locks the shard of (scope, key), then reads the clock (inside the critical
    /// section) and drops the record if it has expired. Returns the shard and the time.
    fn lock(&self, id: &Id<'_>) -> (MutexGuard<'_, Shard>, Timestamp) {
        let mut shard = self.shards[(self.hasher.hash_one(id) as usize) % SHARDS].lock();
        let now = self.clock.now();
        if shard.records.get(id).is_some_and(|r| !r.is_live(now, &self.config)) {
            shard.records.remove(id);
        }
        (shard, now)
    }

    /// The record of `id` if `token` is its current executor's: the fence first, then
    /// the state, as [`harness::idempotency::SETTLE_CHECK_ORDER`] says.
    fn held<'s>(&self, shard: &'s mut Shard, id: &Id<'_>, token: u64) -> Result<&'s mut Record, LeaseError> {
        let record = shard.records.get_mut(id).ok_or(LeaseError::NoSuchRecord)?;
        match record.state {
            State::InProgress { token: current, .. } | State::Completed { token: current, .. } if current != token => {
                Err(LeaseError::StaleToken)
            }
            State::Completed { .. } => Err(LeaseError::AlreadyCompleted),
            State::InProgress { .. } => Ok(record),
        }
    }
}

impl IdempotencyStore for Store {
    fn new(config: IdempotencyConfig, clock: SharedClock) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { records: HashMap::new(), sweep_at: MIN_SWEEP })).collect();
        Store { config, clock, last_token: AtomicU64::new(0), hasher: DefaultHashBuilder::default(), shards }
    }

    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin {
        let id = Id(scope, key);
        let (mut shard, now) = self.lock(&id);
        match shard.records.get(&id) {
            Some(record) if record.fingerprint != fingerprint => return Begin::Mismatch,
            Some(Record { state: State::Completed { response, .. }, .. }) => return Begin::Replay(response.clone()),
            Some(Record { state: State::InProgress { leased_until, .. }, .. }) if now < *leased_until => {
                return Begin::InFlight { retry_after: leased_until.saturating_duration_since(now) };
            }
            // Absent, or in progress with an expired lease: this caller executes.
            _ => {}
        }
        let token = self.last_token.fetch_add(1, Ordering::SeqCst) + 1;
        let state = State::InProgress { token, leased_until: now + self.config.lease() };
        shard.records.insert((scope.to_string(), key.to_string()), Record { fingerprint, state });
        if shard.records.len() >= shard.sweep_at {
            let config = self.config;
            shard.records.retain(|_, r| r.is_live(now, &config));
            shard.sweep_at = (2 * shard.records.len()).max(MIN_SWEEP);
        }
        Begin::Execute(Lease { token })
    }

    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError> {
        let id = Id(scope, key);
        let (mut shard, now) = self.lock(&id);
        let record = self.held(&mut shard, &id, token)?;
        record.state = State::Completed { token, response, until: now + self.config.retention() };
        Ok(())
    }

    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError> {
        let id = Id(scope, key);
        let (mut shard, _) = self.lock(&id);
        self.held(&mut shard, &id, token)?;
        shard.records.remove(&id);
        Ok(())
    }
}

/// `begin` in one step. KEYS: the record (a hash), its fence (the last token issued
/// for it). ARGV: now, lease, retention (µs), fingerprint. A token is max(fence + 1,
/// now): a fence lost with Redis's data restarts from the clock, which has moved on
/// past every token issued before the loss.
pub const BEGIN_SCRIPT: &str = r#"
local function int(x) return string.format('%.0f', x) end
local now, lease, retention = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'fp', 'state', 'until', 'status', 'body')
if r[1] then
  local untl = tonumber(r[3])
  local gone = (r[2] == 'p' and now >= untl + retention) or (r[2] == 'c' and now >= untl)
  if not gone then
    if r[1] ~= ARGV[4] then return {'mismatch'} end
    if r[2] == 'c' then return {'replay', r[4], r[5]} end
    if now < untl then return {'inflight', int(untl - now)} end
  end
end
local token = int(math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now))
local ttl = math.floor((lease + retention) / 1000) + 1000
redis.call('SET', KEYS[2], token, 'PX', ttl)
-- A record that is gone leaves fields behind (its response): clear them. A new
-- key has none, and skips the write (a write costs the most in a script).
if r[1] then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'fp', ARGV[4], 'state', 'p', 'token', token, 'until', int(now + lease))
redis.call('PEXPIRE', KEYS[1], ttl)
return {'execute', token}
"#;

/// `complete` or `abandon` in one step. KEYS: the record, its fence. ARGV: now,
/// retention (µs), token, 'complete' or 'abandon', then status and body. The token is
/// checked before the state (SETTLE_CHECK_ORDER); a completed record keeps its token,
/// and its fence lives at least as long (`GT`: never shortened).
pub const SETTLE_SCRIPT: &str = r#"
local function int(x) return string.format('%.0f', x) end
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'state', 'token', 'until')
if not r[1] then return 'none' end
local untl = tonumber(r[3])
if (r[1] == 'p' and now >= untl + retention) or (r[1] == 'c' and now >= untl) then
  redis.call('DEL', KEYS[1])
  return 'none'
end
if r[2] ~= ARGV[3] then return 'stale' end
if r[1] == 'c' then return 'completed' end
if ARGV[4] == 'abandon' then
  redis.call('DEL', KEYS[1])
  return 'ok'
end
local ttl = math.floor(retention / 1000) + 1000
redis.call('HSET', KEYS[1], 'state', 'c', 'until', int(now + retention), 'status', ARGV[5], 'body', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl, 'GT')
return 'ok'
"#;

/// The idempotency store shared through Redis.
pub struct RedisStore {
    config: RedisStoreConfig,
    clock: SharedClock,
    connection: RedisConnection,
    begin_script: redis::Script,
    settle_script: redis::Script,
}

fn micros(d: std::time::Duration) -> u64 {
    (d.as_nanos() as u64).div_ceil(1_000)
}

impl RedisStore {
    fn with(config: RedisStoreConfig, clock: SharedClock, connection: RedisConnection) -> Self {
        RedisStore {
            config,
            clock,
            connection,
            begin_script: redis::Script::new(BEGIN_SCRIPT),
            settle_script: redis::Script::new(SETTLE_SCRIPT),
        }
    }

    /// The record's hash and its fence, under the record's own tag (injective: see
    /// `record_tag`), so both live in one slot.
    fn record_keys(&self, scope: &str, key: &str) -> [String; 2] {
        let tag = record_tag(&self.config.namespace, scope, key);
        [format!("{tag}:r"), format!("{tag}:f")]
    }

    /// On a cluster, waits until a replica has the record's last write (`WAIT 1`,
    /// sent to the record's master: the cluster client would otherwise ask every
    /// master). Asynchronous replication would otherwise lose a stored response in a
    /// failover, and the key would execute again.
    async fn replicated(&self, record: &str) -> Result<(), SettleError> {
        let RedisConnection::Cluster(connection) = &self.connection else { return Ok(()) };
        let mut connection = connection.clone();
        // Half the call's timeout: the server answers "0 acknowledged" well before the
        // client's own response timeout would cut the call.
        let timeout_ms = (self.config.timeout.as_millis() as u64 / 2).max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(timeout_ms);
        let route = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(redis::cluster_routing::Route::with_key(
                record,
                redis::cluster_routing::SlotAddr::Master,
            )),
        );
        let unavailable = |why: String| SettleError::Unavailable(StoreUnavailable(why));
        let bound = self.config.timeout;
        match tokio::time::timeout(bound, connection.route_command(wait, route)).await {
            Ok(Ok(redis::Value::Int(acked))) if acked >= 1 => Ok(()),
            Ok(Ok(other)) => Err(unavailable(format!("stored, but no replica acknowledged it ({other:?})"))),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!("no replica acknowledged within {:?}", self.config.timeout))),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().as_nanos() / 1_000
    }

    /// Runs a prepared script call within the timeout.
    async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreUnavailable> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.config.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(StoreUnavailable(e.to_string())),
            Err(_) => Err(StoreUnavailable(format!("no answer within {:?}", self.config.timeout))),
        }
    }

    async fn settle(&self, scope: &str, key: &str, token: u64, outcome: Option<Response>) -> Result<(), SettleError> {
        let mut invocation = self.settle_script.prepare_invoke();
        let [record, fence] = self.record_keys(scope, key);
        invocation.key(&record).key(fence);
        invocation.arg(self.now()).arg(micros(self.config.records.retention())).arg(token);
        match &outcome {
            Some(response) => invocation.arg("complete").arg(response.status).arg(&response.body[..]),
            None => invocation.arg("abandon"),
        };
        let reply: String = self.call(&invocation).await.map_err(SettleError::Unavailable)?;
        match reply.as_str() {
            "ok" if outcome.is_some() => self.replicated(&record).await,
            "ok" => Ok(()),
            // A retried complete: say so only once a replica has the response too.
            "completed" if outcome.is_some() => {
                self.replicated(&record).await?;
                Err(SettleError::Lease(LeaseError::AlreadyCompleted))
            }
            "none" => Err(SettleError::Lease(LeaseError::NoSuchRecord)),
            "completed" => Err(SettleError::Lease(LeaseError::AlreadyCompleted)),
            "stale" => Err(SettleError::Lease(LeaseError::StaleToken)),
            other => Err(SettleError::Unavailable(StoreUnavailable(format!("unexpected script reply {other:?}")))),
        }
    }
}

impl RedisIdempotencyStore for RedisStore {
    async fn connect(url: &str, config: RedisStoreConfig, clock: SharedClock) -> Result<Self, StoreUnavailable> {
        let connection = connect_with_timeout(url, config.timeout).await.map_err(StoreUnavailable)?;
        Ok(RedisStore::with(config, clock, RedisConnection::Server(connection)))
    }

    async fn connect_cluster(
        nodes: &[String],
        config: RedisStoreConfig,
        clock: SharedClock,
    ) -> Result<Self, StoreUnavailable> {
        let connection = connect_cluster_with_timeout(nodes, config.timeout).await.map_err(StoreUnavailable)?;
        Ok(RedisStore::with(config, clock, RedisConnection::Cluster(connection)))
    }

    async fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Result<Begin, StoreUnavailable> {
        let mut invocation = self.begin_script.prepare_invoke();
        let [record, fence] = self.record_keys(scope, key);
        invocation.key(record).key(fence);
        let records = self.config.records;
        invocation.arg(self.now()).arg(micros(records.lease())).arg(micros(records.retention())).arg(fingerprint.0);
        let reply: Vec<Vec<u8>> = self.call(&invocation).await?;
        let text = |i: usize| reply.get(i).map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
        let number = |i: usize| text(i).parse::<u64>().ok();
        let unexpected = || StoreUnavailable(format!("unexpected script reply {:?}", text(0)));
        Ok(match text(0).as_str() {
            "mismatch" => Begin::Mismatch,
            "replay" => Begin::Replay(Response {
                status: number(1).ok_or_else(unexpected)? as u16,
                body: reply.get(2).cloned().unwrap_or_default(),
            }),
            "inflight" => {
                Begin::InFlight { retry_after: std::time::Duration::from_micros(number(1).ok_or_else(unexpected)?) }
            }
            "execute" => Begin::Execute(Lease { token: number(1).ok_or_else(unexpected)? }),
            _ => return Err(unexpected()),
        })
    }

    async fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), SettleError> {
        self.settle(scope, key, token, Some(response)).await
    }

    async fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), SettleError> {
        self.settle(scope, key, token, None).await
    }
}
