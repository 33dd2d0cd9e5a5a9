//! Buggy idempotency stores that the suite must reject: one plain store (a single
//! `Mutex<HashMap>`) with every bug a named switch, and Redis-backed stores wrapped
//! around the reference with one realistic bug each. Correct stores of other designs,
//! which must pass every case, are in `idempotency_attempts.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use harness::clock::{SharedClock, Timestamp};
use harness::idempotency::{Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, Lease, LeaseError, Response};

pub const NONE: u8 = 0;
pub const IN_FLIGHT_BEFORE_MISMATCH: u8 = 1;
pub const JOINED_KEY: u8 = 2;
pub const STALE_COMPLETE_ACCEPTED: u8 = 3;
pub const NO_TAKEOVER: u8 = 4;
pub const RETENTION_INCLUSIVE: u8 = 5;
pub const ABANDON_KEEPS_RECORD: u8 = 6;
pub const TOKENS_PER_KEY: u8 = 7;
pub const RACY_BEGIN: u8 = 8;
pub const NEVER_REAPS: u8 = 9;
/// Checks "already completed" before the token: the old executor, after a takeover
/// and the new executor's complete, is told AlreadyCompleted (its response is not stored).
pub const COMPLETED_BEFORE_STALE: u8 = 10;
/// Reads the clock before taking the lock: a clock step can land between a call's
/// time and its effect.
pub const CLOCK_READ_BEFORE_LOCK: u8 = 11;
/// The sweep drops in-progress records once their lease ends (the access path keeps
/// them until leased_until + retention): only wrong once a sweep has run.
pub const SWEEP_DROPS_EXPIRED_LEASES: u8 = 12;
/// Keeps every (scope, key) ever seen in a side set (say, for metrics), never pruned.
pub const INTERN_POOL: u8 = 13;
/// Keeps lease ends in whole milliseconds: retry_after and takeovers are off below 1 ms.
pub const LEASE_IN_WHOLE_MS: u8 = 14;
/// Stores the body as text (`String::from_utf8_lossy`): binary bodies come back changed.
pub const LOSSY_BODY: u8 = 15;
/// Adds durations with panicking arithmetic: a lease or retention of Duration::MAX overflows.
pub const DURATION_OVERFLOW: u8 = 16;
/// complete checks the token under the lock, releases it, then stores the response
/// under the lock again: a takeover in between is overwritten.
pub const SPLIT_COMPLETE: u8 = 17;
/// A replay restarts the record's retention (`until = now + retention`): a key retried
/// often never expires.
pub const REPLAY_REFRESHES_RETENTION: u8 = 18;
/// Decides on a takeover (lease expired) under the lock, then re-locks to write the
/// new lease without checking again: two retries can both take over.
pub const RACY_TAKEOVER: u8 = 19;

#[derive(Clone)]
enum State {
    InProgress { token: u64, leased_until: Timestamp },
    Completed { token: u64, response: Response, until: Timestamp },
}

struct Records {
    map: HashMap<(String, String), (Fingerprint, State)>,
    last_token: u64,
    tokens_per_key: HashMap<(String, String), u64>,
    seen: HashSet<(String, String)>,
    sweep_at: usize,
}

pub struct Flawed<const BUG: u8> {
    config: IdempotencyConfig,
    clock: SharedClock,
    records: Mutex<Records>,
}

impl<const BUG: u8> Flawed<BUG> {
    fn id(scope: &str, key: &str) -> (String, String) {
        if BUG == JOINED_KEY {
            (format!("{scope}:{key}"), String::new())
        } else {
            (scope.to_string(), key.to_string())
        }
    }

    /// `t + d`, saturating as the contract says (or panicking, for the bug).
    fn later(t: Timestamp, d: Duration) -> Timestamp {
        if BUG == DURATION_OVERFLOW {
            let nanos = (Duration::from_nanos(t.as_nanos()) + d).as_nanos();
            Timestamp::from_nanos(u64::try_from(nanos).expect("a time past 2554"))
        } else {
            t + d
        }
    }

    fn end(&self, state: &State) -> Timestamp {
        match state {
            State::InProgress { leased_until, .. } => Self::later(*leased_until, self.config.retention()),
            State::Completed { until, .. } => *until,
        }
    }

    fn live(&self, state: &State, now: Timestamp) -> bool {
        let end = self.end(state);
        if BUG == NEVER_REAPS {
            true
        } else if BUG == RETENTION_INCLUSIVE {
            now <= end
        } else {
            now < end
        }
    }

    /// What a sweep keeps (the same as `live`, but for the bug).
    fn kept_by_sweep(&self, state: &State, now: Timestamp) -> bool {
        match state {
            State::InProgress { leased_until, .. } if BUG == SWEEP_DROPS_EXPIRED_LEASES => now < *leased_until,
            _ => self.live(state, now),
        }
    }

    fn reap(&self, records: &mut Records, id: &(String, String), now: Timestamp) {
        if records.map.get(id).is_some_and(|(_, s)| !self.live(s, now)) {
            records.map.remove(id);
        }
    }

    fn now(&self) -> Timestamp {
        let now = self.clock.now();
        if BUG == LEASE_IN_WHOLE_MS {
            Timestamp::from_nanos(now.as_nanos() / 1_000_000 * 1_000_000)
        } else {
            now
        }
    }

    fn check_holder(&self, records: &Records, id: &(String, String), token: u64) -> Result<(), LeaseError> {
        let record = records.map.get(id).ok_or(LeaseError::NoSuchRecord)?;
        let (current, completed) = match &record.1 {
            State::InProgress { token, .. } => (*token, false),
            State::Completed { token, .. } => (*token, true),
        };
        if BUG == COMPLETED_BEFORE_STALE && completed {
            return Err(LeaseError::AlreadyCompleted);
        }
        if current != token && BUG != STALE_COMPLETE_ACCEPTED {
            return Err(LeaseError::StaleToken);
        }
        if completed {
            return Err(LeaseError::AlreadyCompleted);
        }
        Ok(())
    }

    /// Locks the records and reads the clock inside the critical section (the bug:
    /// `early` was read before the lock).
    fn lock(&self, early: Option<Timestamp>) -> (std::sync::MutexGuard<'_, Records>, Timestamp) {
        let records = self.records.lock().unwrap();
        let now = early.unwrap_or_else(|| self.now());
        (records, now)
    }

    fn early(&self) -> Option<Timestamp> {
        (BUG == CLOCK_READ_BEFORE_LOCK).then(|| self.now())
    }
}

impl<const BUG: u8> IdempotencyStore for Flawed<BUG> {
    fn new(config: IdempotencyConfig, clock: SharedClock) -> Self {
        let records = Records {
            map: HashMap::new(),
            last_token: 0,
            tokens_per_key: HashMap::new(),
            seen: HashSet::new(),
            sweep_at: 64,
        };
        Flawed { config, clock, records: Mutex::new(records) }
    }

    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin {
        let id = Self::id(scope, key);
        let (mut records, now) = self.lock(self.early());
        if BUG == INTERN_POOL {
            records.seen.insert(id.clone());
        }
        self.reap(&mut records, &id, now);
        let existing = records.map.get(&id).cloned();
        let takeover = existing.is_some();
        if let Some((fp, state)) = existing {
            let in_flight = match &state {
                State::InProgress { leased_until, .. } if now < *leased_until || BUG == NO_TAKEOVER => {
                    Some(Begin::InFlight { retry_after: leased_until.saturating_duration_since(now) })
                }
                _ => None,
            };
            if BUG == IN_FLIGHT_BEFORE_MISMATCH {
                if let Some(answer) = in_flight.clone() {
                    return answer;
                }
            }
            if fp != fingerprint {
                return Begin::Mismatch;
            }
            if let State::Completed { token, response, .. } = state {
                if BUG == REPLAY_REFRESHES_RETENTION {
                    let until = Self::later(now, self.config.retention());
                    let refreshed = State::Completed { token, response: response.clone(), until };
                    records.map.insert(id, (fp, refreshed));
                }
                return Begin::Replay(response);
            }
            if let Some(answer) = in_flight {
                return answer;
            }
        }
        if BUG == RACY_TAKEOVER && takeover {
            // The bug: "the lease has expired" was decided under the lock released here.
            drop(records);
            records = self.records.lock().unwrap();
        }
        if BUG == RACY_BEGIN {
            // The bug: decided "absent" under one lock, creates under another.
            drop(records);
            std::thread::yield_now();
            records = self.records.lock().unwrap();
        }
        let token = if BUG == TOKENS_PER_KEY {
            let t = records.tokens_per_key.entry(id.clone()).or_insert(0);
            *t += 1;
            *t
        } else {
            records.last_token += 1;
            records.last_token
        };
        let leased_until = Self::later(now, self.config.lease());
        records.map.insert(id, (fingerprint, State::InProgress { token, leased_until }));
        if records.map.len() >= records.sweep_at {
            let map = std::mem::take(&mut records.map);
            records.map = map.into_iter().filter(|(_, (_, s))| self.kept_by_sweep(s, now)).collect();
            records.sweep_at = (2 * records.map.len()).max(64);
        }
        Begin::Execute(Lease { token })
    }

    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError> {
        let id = Self::id(scope, key);
        let (mut records, now) = self.lock(self.early());
        self.reap(&mut records, &id, now);
        self.check_holder(&records, &id, token)?;
        if BUG == SPLIT_COMPLETE {
            // The bug: the fence was checked in one critical section, the write lands in another.
            drop(records);
            std::thread::yield_now();
            records = self.records.lock().unwrap();
        }
        let until = Self::later(now, self.config.retention());
        let response = if BUG == LOSSY_BODY {
            Response {
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned().into_bytes(),
            }
        } else {
            response
        };
        if let Some(record) = records.map.get_mut(&id) {
            record.1 = State::Completed { token, response, until };
        }
        Ok(())
    }

    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError> {
        let id = Self::id(scope, key);
        let (mut records, now) = self.lock(self.early());
        self.reap(&mut records, &id, now);
        self.check_holder(&records, &id, token)?;
        if BUG != ABANDON_KEEPS_RECORD {
            records.map.remove(&id);
        }
        Ok(())
    }
}

/// Redis-backed stores with one realistic bug each, wrapped around the reference. The
/// expiry bugs act through a second connection on the reference's record key
/// (`<record_tag>:r`), as an attempt setting its TTL in a separate command would.
pub mod redis_backed {
    use harness::clock::SharedClock;
    use std::collections::HashMap;

    use harness::idempotency::{
        record_tag, Begin, Fingerprint, Lease, LeaseError, RedisIdempotencyStore, RedisStoreConfig, Response,
        SettleError, StoreUnavailable,
    };
    use harness::redis_server::{connect_cluster_with_timeout, RedisConnection};
    use parking_lot::Mutex;
    use solutions::idempotency::{RedisStore, SETTLE_SCRIPT};

    pub const CHECK_THEN_EXECUTE: u8 = 1;
    pub const EXTRA_ROUND_TRIP: u8 = 2;
    pub const PANICS_ON_OUTAGE: u8 = 3;
    /// The in-progress record's TTL covers only the lease, not lease + retention.
    pub const EXPIRY_LEASE_ONLY: u8 = 4;
    /// The in-progress record has no TTL (only completing sets one).
    pub const NO_EXPIRY_IN_PROGRESS: u8 = 5;
    /// TTLs given to PEXPIRE in microseconds: a thousand times too long.
    pub const TTL_IN_MICROS: u8 = 6;
    /// Checks "completed" before the token, like the in-memory COMPLETED_BEFORE_STALE.
    pub const COMPLETED_BEFORE_STALE: u8 = 7;
    /// The completed record's TTL is the retention in seconds given to PEXPIRE (ms):
    /// a thousand times too short.
    pub const RETENTION_AS_MILLIS: u8 = 8;
    /// Tokens from one counter for the whole namespace, taken in the same script as
    /// the record: fine on one server, CROSSSLOT on a cluster.
    pub const NAMESPACE_TOKEN_COUNTER: u8 = 9;
    /// Tokens per record that start again from 1 when the record is missing (as a
    /// counter kept inside the record hash does): after a failover lost a lease, the
    /// new executor gets the old one's token, and the old one's complete lands.
    pub const NO_FENCING_ACROSS_FAILOVER: u8 = 10;
    /// On a cluster, `complete` answers Ok as soon as its master has the response, not
    /// once a replica does: a failover can lose an acknowledged response, and the key
    /// then executes again.
    pub const COMPLETE_WITHOUT_WAIT: u8 = 11;

    /// A record's counter (restarting at 1) and the real token behind each of its tokens.
    type Restarting = (u64, HashMap<u64, u64>);

    pub struct FlawedRedis<const BUG: u8> {
        inner: RedisStore,
        side: RedisConnection,
        config: RedisStoreConfig,
        clock: SharedClock,
        /// NO_FENCING_ACROSS_FAILOVER: per record, the counter and its tokens' real ones.
        restarting: Mutex<HashMap<(String, String), Restarting>>,
    }

    impl<const BUG: u8> FlawedRedis<BUG> {
        fn record_key(&self, scope: &str, key: &str) -> String {
            format!("{}:r", record_tag(&self.config.namespace, scope, key))
        }

        fn real_token(&self, scope: &str, key: &str, token: u64) -> u64 {
            if BUG != NO_FENCING_ACROSS_FAILOVER {
                return token;
            }
            let restarting = self.restarting.lock();
            restarting
                .get(&(scope.to_string(), key.to_string()))
                .and_then(|(_, m)| m.get(&token).copied())
                .unwrap_or(token)
        }

        /// COMPLETE_WITHOUT_WAIT: the reference's settle script, answered at once.
        async fn complete_at_once(
            &self,
            scope: &str,
            key: &str,
            token: u64,
            response: Response,
        ) -> Result<(), SettleError> {
            let tag = record_tag(&self.config.namespace, scope, key);
            let script = redis::Script::new(SETTLE_SCRIPT);
            let mut invocation = script.prepare_invoke();
            let retention = (self.config.records.retention().as_nanos() as u64).div_ceil(1_000);
            invocation.key(format!("{tag}:r")).key(format!("{tag}:f"));
            invocation.arg(self.clock.now().as_nanos() / 1_000).arg(retention).arg(token);
            invocation.arg("complete").arg(response.status).arg(&response.body[..]);
            let mut side = self.side.clone();
            let reply: Result<String, _> = invocation.invoke_async(&mut side).await;
            match reply.as_deref() {
                Ok("ok") => Ok(()),
                Ok("none") => Err(SettleError::Lease(LeaseError::NoSuchRecord)),
                Ok("completed") => Err(SettleError::Lease(LeaseError::AlreadyCompleted)),
                Ok("stale") => Err(SettleError::Lease(LeaseError::StaleToken)),
                other => Err(SettleError::Unavailable(StoreUnavailable(format!("{other:?}")))),
            }
        }

        async fn side_command(&self, command: &mut redis::Cmd) {
            let mut side = self.side.clone();
            let _: Result<redis::Value, _> = command.query_async(&mut side).await;
        }
    }

    impl<const BUG: u8> RedisIdempotencyStore for FlawedRedis<BUG> {
        async fn connect(url: &str, config: RedisStoreConfig, clock: SharedClock) -> Result<Self, StoreUnavailable> {
            let unavailable = |e: redis::RedisError| StoreUnavailable(e.to_string());
            let client = redis::Client::open(url).map_err(unavailable)?;
            let side = RedisConnection::Server(redis::aio::ConnectionManager::new(client).await.map_err(unavailable)?);
            let inner = RedisStore::connect(url, config.clone(), clock.clone()).await?;
            Ok(FlawedRedis { inner, side, config, clock, restarting: Mutex::new(HashMap::new()) })
        }

        async fn connect_cluster(
            nodes: &[String],
            config: RedisStoreConfig,
            clock: SharedClock,
        ) -> Result<Self, StoreUnavailable> {
            let side = RedisConnection::Cluster(
                connect_cluster_with_timeout(nodes, config.timeout).await.map_err(StoreUnavailable)?,
            );
            let inner = RedisStore::connect_cluster(nodes, config.clone(), clock.clone()).await?;
            Ok(FlawedRedis { inner, side, config, clock, restarting: Mutex::new(HashMap::new()) })
        }

        async fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Result<Begin, StoreUnavailable> {
            let mut side = self.side.clone();
            if BUG == CHECK_THEN_EXECUTE {
                // The bug: "is there a record?" and "create it" are two steps.
                let marker = format!("{{{}}}:seen:{scope}:{key}", self.config.namespace);
                let seen: bool = redis::cmd("EXISTS").arg(&marker).query_async(&mut side).await.unwrap_or(false);
                if !seen {
                    tokio::task::yield_now().await;
                    let _: Result<(), _> = redis::cmd("SET").arg(&marker).arg(1).query_async(&mut side).await;
                    let _ = self.inner.begin(scope, key, fingerprint).await;
                    return Ok(Begin::Execute(Lease { token: 1 }));
                }
            }
            if BUG == EXTRA_ROUND_TRIP {
                let _: Result<String, _> = redis::cmd("PING").query_async(&mut side).await;
            }
            if BUG == NAMESPACE_TOKEN_COUNTER {
                // The bug: a namespace-wide counter in the record's script.
                let counter = format!("{{{}}}:tokens", self.config.namespace);
                let script = redis::Script::new("redis.call('INCR', KEYS[1]) return redis.call('EXISTS', KEYS[2])");
                let taken: Result<i64, _> =
                    script.key(counter).key(self.record_key(scope, key)).invoke_async(&mut side).await;
                taken.map_err(|e| StoreUnavailable(e.to_string()))?;
            }
            let missing = if BUG == NO_FENCING_ACROSS_FAILOVER {
                let exists: i64 = redis::cmd("EXISTS")
                    .arg(self.record_key(scope, key))
                    .query_async(&mut side)
                    .await
                    .map_err(|e| StoreUnavailable(e.to_string()))?;
                exists == 0
            } else {
                false
            };
            let answer = self.inner.begin(scope, key, fingerprint).await;
            if let (NO_FENCING_ACROSS_FAILOVER, Ok(Begin::Execute(lease))) = (BUG, &answer) {
                let mut restarting = self.restarting.lock();
                let (counter, tokens) = restarting.entry((scope.to_string(), key.to_string())).or_default();
                if missing {
                    *counter = 0;
                }
                *counter += 1;
                tokens.insert(*counter, lease.token);
                return Ok(Begin::Execute(Lease { token: *counter }));
            }
            if BUG == PANICS_ON_OUTAGE {
                return Ok(answer.expect("Redis is always up"));
            }
            if let Ok(Begin::Execute(_)) = &answer {
                let record = self.record_key(scope, key);
                let (lease, retention) = (self.config.records.lease(), self.config.records.retention());
                match BUG {
                    EXPIRY_LEASE_ONLY => {
                        let ms = lease.as_millis().max(1) as u64;
                        self.side_command(redis::cmd("PEXPIRE").arg(&record).arg(ms)).await;
                    }
                    NO_EXPIRY_IN_PROGRESS => self.side_command(redis::cmd("PERSIST").arg(&record)).await,
                    TTL_IN_MICROS => {
                        let micros = (lease + retention).as_micros() as u64;
                        self.side_command(redis::cmd("PEXPIRE").arg(&record).arg(micros)).await;
                    }
                    _ => {}
                }
            }
            answer
        }

        async fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), SettleError> {
            if BUG == COMPLETED_BEFORE_STALE {
                let mut side = self.side.clone();
                let state: Option<String> =
                    redis::cmd("HGET").arg(self.record_key(scope, key)).arg("state").query_async(&mut side).await.ok();
                if state.as_deref() == Some("c") {
                    return Err(SettleError::Lease(LeaseError::AlreadyCompleted));
                }
            }
            if BUG == COMPLETE_WITHOUT_WAIT {
                return self.complete_at_once(scope, key, token, response).await;
            }
            let settled = self.inner.complete(scope, key, self.real_token(scope, key, token), response).await;
            if settled.is_ok() {
                let record = self.record_key(scope, key);
                let retention = self.config.records.retention();
                match BUG {
                    TTL_IN_MICROS => {
                        self.side_command(redis::cmd("PEXPIRE").arg(&record).arg(retention.as_micros() as u64)).await
                    }
                    RETENTION_AS_MILLIS => {
                        let seconds = retention.as_secs().max(1);
                        self.side_command(redis::cmd("PEXPIRE").arg(&record).arg(seconds)).await;
                    }
                    _ => {}
                }
            }
            settled
        }

        async fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), SettleError> {
            self.inner.abandon(scope, key, self.real_token(scope, key, token)).await
        }
    }
}
