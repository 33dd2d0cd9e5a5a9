//! Reference idempotency-key store.
//!
//! * Records live in 64 shards (`parking_lot::Mutex<HashMap>`), keyed by the
//!   (scope, key) pair itself, never a joined string, so ("t:x", "y") and
//!   ("t", "x:y") stay apart. Lookups borrow the caller's strings ([`Id`]).
//! * Every call reads and changes its record under the shard lock, and takes its
//!   fencing token from one atomic counter inside that critical section: each call is
//!   one atomic step, so exactly one of N identical requests executes.
//! * Expired records (past retention) are treated as absent on access and swept when
//!   a shard has doubled since its last sweep: memory follows the live records.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use harness::clock::{SharedClock, Timestamp};
use harness::idempotency::{Begin, Fingerprint, IdempotencyConfig, IdempotencyStore, Lease, LeaseError, Response};
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
    Completed { response: Response, until: Timestamp },
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
    /// Locks the shard of (scope, key) and drops the record if it has expired.
    fn lock(&self, id: &Id<'_>, now: Timestamp) -> MutexGuard<'_, Shard> {
        let mut shard = self.shards[(self.hasher.hash_one(id) as usize) % SHARDS].lock();
        if shard.records.get(id).is_some_and(|r| !r.is_live(now, &self.config)) {
            shard.records.remove(id);
        }
        shard
    }

    /// The record of `id` if `token` is its current executor's.
    fn held<'s>(&self, shard: &'s mut Shard, id: &Id<'_>, token: u64) -> Result<&'s mut Record, LeaseError> {
        let record = shard.records.get_mut(id).ok_or(LeaseError::NoSuchRecord)?;
        match record.state {
            State::Completed { .. } => Err(LeaseError::AlreadyCompleted),
            State::InProgress { token: current, .. } if current != token => Err(LeaseError::StaleToken),
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
        let now = self.clock.now();
        let mut shard = self.lock(&id, now);
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
        let now = self.clock.now();
        let mut shard = self.lock(&id, now);
        let record = self.held(&mut shard, &id, token)?;
        record.state = State::Completed { response, until: now + self.config.retention() };
        Ok(())
    }

    fn abandon(&self, scope: &str, key: &str, token: u64) -> Result<(), LeaseError> {
        let id = Id(scope, key);
        let now = self.clock.now();
        let mut shard = self.lock(&id, now);
        self.held(&mut shard, &id, token)?;
        shard.records.remove(&id);
        Ok(())
    }

    fn tracked_records(&self) -> usize {
        self.shards.iter().map(|s| s.lock().records.len()).sum()
    }
}
