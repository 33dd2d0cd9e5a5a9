//! Buggy idempotency stores that the suite must reject: one plain store (a single
//! `Mutex<HashMap>`) with every bug a named switch.

use std::collections::HashMap;
use std::sync::Mutex;

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

#[derive(Clone)]
enum State {
    InProgress { token: u64, leased_until: Timestamp },
    Completed { response: Response, until: Timestamp },
}

struct Records {
    map: HashMap<(String, String), (Fingerprint, State)>,
    last_token: u64,
    tokens_per_key: HashMap<(String, String), u64>,
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

    fn live(&self, state: &State, now: Timestamp) -> bool {
        let end = match state {
            State::InProgress { leased_until, .. } => *leased_until + self.config.retention(),
            State::Completed { until, .. } => *until,
        };
        if BUG == NEVER_REAPS {
            true
        } else if BUG == RETENTION_INCLUSIVE {
            now <= end
        } else {
            now < end
        }
    }

    fn reap(&self, records: &mut Records, id: &(String, String), now: Timestamp) {
        if records.map.get(id).is_some_and(|(_, s)| !self.live(s, now)) {
            records.map.remove(id);
        }
    }

    fn check_holder(&self, records: &Records, id: &(String, String), token: u64) -> Result<(), LeaseError> {
        match records.map.get(id) {
            None => Err(LeaseError::NoSuchRecord),
            Some((_, State::Completed { .. })) => Err(LeaseError::AlreadyCompleted),
            Some((_, State::InProgress { token: current, .. }))
                if *current != token && BUG != STALE_COMPLETE_ACCEPTED =>
            {
                Err(LeaseError::StaleToken)
            }
            Some(_) => Ok(()),
        }
    }
}

impl<const BUG: u8> IdempotencyStore for Flawed<BUG> {
    fn new(config: IdempotencyConfig, clock: SharedClock) -> Self {
        let records = Records { map: HashMap::new(), last_token: 0, tokens_per_key: HashMap::new(), sweep_at: 64 };
        Flawed { config, clock, records: Mutex::new(records) }
    }

    fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Begin {
        let id = Self::id(scope, key);
        let now = self.clock.now();
        let mut records = self.records.lock().unwrap();
        self.reap(&mut records, &id, now);
        let existing = records.map.get(&id).cloned();
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
            if let State::Completed { response, .. } = state {
                return Begin::Replay(response);
            }
            if let Some(answer) = in_flight {
                return answer;
            }
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
        records.map.insert(id, (fingerprint, State::InProgress { token, leased_until: now + self.config.lease() }));
        if records.map.len() >= records.sweep_at {
            let map = std::mem::take(&mut records.map);
            records.map = map.into_iter().filter(|(_, (_, s))| self.live(s, now)).collect();
            records.sweep_at = (2 * records.map.len()).max(64);
        }
        Begin::Execute(Lease { token })
    }

    fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), LeaseError> {
        let id = Self::id(scope, key);
        let now = self.clock.now();
        let mut records = self.records.lock().unwrap();
        self.reap(&mut records, &id, now);
        self.check_holder(&records, &id, token)?;
        let until = now + self.config.retention();
        if let Some(record) = records.map.get_mut(&id) {
            record.1 = State::Completed { response, until };
        }
        Ok(())
    }

    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError> {
        let id = Self::id(scope, key);
        let now = self.clock.now();
        let mut records = self.records.lock().unwrap();
        self.reap(&mut records, &id, now);
        self.check_holder(&records, &id, token)?;
        if BUG != ABANDON_KEEPS_RECORD {
            records.map.remove(&id);
        }
        Ok(())
    }

    fn tracked_records(&self) -> usize {
        self.records.lock().unwrap().map.len()
    }
}

/// Redis-backed stores with one realistic bug each, wrapped around the reference.
pub mod redis_backed {
    use harness::clock::SharedClock;
    use harness::idempotency::{
        Begin, Fingerprint, Lease, RedisIdempotencyStore, RedisStoreConfig, Response, SettleError, StoreUnavailable,
    };
    use solutions::idempotency::RedisStore;

    pub const CHECK_THEN_EXECUTE: u8 = 1;
    pub const EXTRA_ROUND_TRIP: u8 = 2;
    pub const PANICS_ON_OUTAGE: u8 = 3;

    pub struct FlawedRedis<const BUG: u8> {
        inner: RedisStore,
        side: redis::aio::MultiplexedConnection,
        namespace: String,
    }

    impl<const BUG: u8> RedisIdempotencyStore for FlawedRedis<BUG> {
        async fn connect(url: &str, config: RedisStoreConfig, clock: SharedClock) -> Result<Self, StoreUnavailable> {
            let unavailable = |e: redis::RedisError| StoreUnavailable(e.to_string());
            let client = redis::Client::open(url).map_err(unavailable)?;
            let side = client.get_multiplexed_async_connection().await.map_err(unavailable)?;
            let namespace = config.namespace.clone();
            Ok(FlawedRedis { inner: RedisStore::connect(url, config, clock).await?, side, namespace })
        }

        async fn begin(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Result<Begin, StoreUnavailable> {
            let mut side = self.side.clone();
            if BUG == CHECK_THEN_EXECUTE {
                // The bug: "is there a record?" and "create it" are two steps.
                let marker = format!("{{{}}}:seen:{scope}:{key}", self.namespace);
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
            let answer = self.inner.begin(scope, key, fingerprint).await;
            if BUG == PANICS_ON_OUTAGE {
                return Ok(answer.expect("Redis is always up"));
            }
            answer
        }

        async fn complete(&self, scope: &str, key: &str, token: u64, response: Response) -> Result<(), SettleError> {
            self.inner.complete(scope, key, token, response).await
        }

        async fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), SettleError> {
            self.inner.abandon(scope, key, token).await
        }
    }
}
