//! Top-K trackers written as candidates write them, with other data structures than
//! the reference and the plain mutant base: a sorted `VecDeque` of events with a count
//! map sorted at read time, per-timestamp buckets with a size-k heap and `i128`
//! window arithmetic, an intern pool of user ids, buckets pruned lazily every
//! [`PRUNE_EVERY`] events, and a deque of timestamps per user (buggy only: it cannot
//! tell which users to prune without one of the other structures). Each is correct with `NONE` (must pass every case: guards
//! against false red verdicts) and has the bugs such a design invites as switches
//! (each rejected by the case `tests/self_check.rs` names).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use harness::top_k::{parse_line, Ingested, LineError, Malformed, SlidingTopK, TopKConfig};

pub const NONE: u8 = 0;

/// Ranks `(user, count)` pairs as the contract says: count descending, then user id
/// ascending in byte order, at most `k`.
fn ranked(mut all: Vec<(String, u64)>, k: usize) -> Vec<(String, u64)> {
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

// ---------------------------------------------------------------------------------
// A sorted VecDeque of events, a HashMap of counts, sorted at read time
// ---------------------------------------------------------------------------------

/// User ids folded to lower case (`Alice` and `alice` merge).
pub const CASE_FOLDED: u8 = 1;
/// Its own parser, splitting on Unicode whitespace (a no-break space separates).
pub const UNICODE_SPLIT: u8 = 2;
/// Events appended in arrival order and pruned from the front only: an out-of-order
/// event behind a newer one outlives its window.
pub const APPEND_PRUNE_FRONT: u8 = 3;
/// "Late" computed as `ts + W <= T`: overflows for huge windows or timestamps.
pub const WINDOW_BY_ADDITION: u8 = 4;
/// Window start as `T.saturating_sub(W)`: while T < W, timestamp 0 counts as late.
pub const SATURATING_START: u8 = 5;
/// Prunes only when a read asks (through a `RefCell`): never read, never pruned.
pub const PRUNES_ON_READ: u8 = 6;
/// Keeps every `LineError` in a log "for debugging".
pub const KEEPS_ERROR_LOG: u8 = 7;
/// Ties compared case-insensitively.
pub const TIES_CASE_INSENSITIVE: u8 = 8;
/// Its own parser, checking the number of fields before the timestamp.
pub const FIELDS_COUNTED_FIRST: u8 = 9;
/// Its own parser, splitting on spaces only (a tab or form feed does not separate).
pub const SPLITS_ON_SPACES: u8 = 10;

struct Window {
    /// Sorted by timestamp (unless APPEND_PRUNE_FRONT).
    events: VecDeque<(u64, String)>,
    counts: HashMap<String, u64>,
}

pub struct DequeSort<const BUG: u8> {
    config: TopKConfig,
    lines: u64,
    time: Option<u64>,
    late: u64,
    window: RefCell<Window>,
    errors: Vec<LineError>,
}

impl<const BUG: u8> DequeSort<BUG> {
    fn parse(line: &str) -> Result<(u64, String), Malformed> {
        let (ts, user) = if matches!(BUG, UNICODE_SPLIT | FIELDS_COUNTED_FIRST | SPLITS_ON_SPACES) {
            let fields: Vec<&str> = match BUG {
                UNICODE_SPLIT => line.split_whitespace().collect(),
                SPLITS_ON_SPACES => line.trim_end_matches(['\r', '\n']).split(' ').filter(|f| !f.is_empty()).collect(),
                _ => line.split_ascii_whitespace().collect(),
            };
            let Some(first) = fields.first() else { return Err(Malformed::Empty) };
            if BUG == FIELDS_COUNTED_FIRST && fields.len() > 3 {
                return Err(Malformed::ExtraFields { found: fields.len() });
            }
            let ts = first.parse::<u64>().map_err(|_| Malformed::BadTimestamp { token: first.to_string() })?;
            match fields.len() {
                1 => return Err(Malformed::MissingUser),
                2 => return Err(Malformed::MissingAction),
                3 => {}
                found => return Err(Malformed::ExtraFields { found }),
            }
            (ts, fields[1].to_string())
        } else {
            let event = parse_line(line)?;
            (event.timestamp, event.user.to_string())
        };
        Ok((ts, if BUG == CASE_FOLDED { user.to_lowercase() } else { user }))
    }

    fn is_late(time: Option<u64>, window: u64, ts: u64) -> bool {
        let Some(t) = time else { return false };
        if BUG == WINDOW_BY_ADDITION {
            ts + window <= t
        } else if BUG == SATURATING_START {
            ts <= t.saturating_sub(window)
        } else {
            t.checked_sub(window).is_some_and(|start| ts <= start)
        }
    }

    fn prune(&self) {
        let mut w = self.window.borrow_mut();
        let Window { events, counts } = &mut *w;
        while let Some((ts, _)) = events.front() {
            if !Self::is_late(self.time, self.config.window(), *ts) {
                break;
            }
            let (_, user) = events.pop_front().expect("a front event");
            let n = counts.get_mut(&user).expect("counted");
            *n -= 1;
            if *n == 0 {
                counts.remove(&user);
            }
        }
    }
}

impl<const BUG: u8> SlidingTopK for DequeSort<BUG> {
    fn new(config: TopKConfig) -> Self {
        let window = RefCell::new(Window { events: VecDeque::new(), counts: HashMap::new() });
        DequeSort { config, lines: 0, time: None, late: 0, window, errors: Vec::new() }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let (ts, user) = match Self::parse(line) {
            Ok(event) => event,
            Err(kind) => {
                let error = LineError { line: self.lines, kind };
                if BUG == KEEPS_ERROR_LOG {
                    self.errors.push(error.clone());
                }
                return Err(error);
            }
        };
        if Self::is_late(self.time, self.config.window(), ts) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        self.time = Some(self.time.map_or(ts, |t| t.max(ts)));
        {
            let mut w = self.window.borrow_mut();
            if BUG == APPEND_PRUNE_FRONT {
                w.events.push_back((ts, user.clone()));
            } else {
                let at = w.events.partition_point(|(t, _)| *t <= ts);
                w.events.insert(at, (ts, user.clone()));
            }
            *w.counts.entry(user).or_insert(0) += 1;
        }
        if BUG != PRUNES_ON_READ {
            self.prune();
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        self.prune();
        let all: Vec<(String, u64)> = self.window.borrow().counts.iter().map(|(u, n)| (u.clone(), *n)).collect();
        if BUG == TIES_CASE_INSENSITIVE {
            let mut all = all;
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.to_lowercase().cmp(&b.0.to_lowercase())));
            all.truncate(self.config.k());
            return all;
        }
        ranked(all, self.config.k())
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.prune();
        self.window.borrow().counts.len()
    }
}

// ---------------------------------------------------------------------------------
// Per-timestamp buckets, i128 window arithmetic, a size-k heap at read time
// ---------------------------------------------------------------------------------

/// `BinaryHeap::with_capacity(k + 1)`: k may be usize::MAX.
pub const HEAP_PREALLOCATES_K: u8 = 1;
/// The heap keeps the k "largest" by (count, user): ties go to the larger id.
pub const HEAP_TIES_REVERSED: u8 = 2;
/// Counts that reach zero stay in the map (filtered out when read).
pub const ZERO_COUNTS_KEPT: u8 = 3;
/// Timestamps kept as `i64` ("they fit"): those above i64::MAX wrap negative.
pub const I64_TIMESTAMPS: u8 = 4;
/// Also keeps events per timestamp in a ring of (timestamp, events) slots, one per
/// timestamp of the window (capped at 2^16 so that a huge window still starts),
/// allocated up front: a wide window with few events holds far more than they need.
pub const RING_OF_THE_WINDOW: u8 = 5;

pub struct BucketHeap<const BUG: u8> {
    config: TopKConfig,
    lines: u64,
    /// Stream time, as i128 so that T − W never overflows.
    time: Option<i128>,
    late: u64,
    buckets: BTreeMap<i128, HashMap<String, u64>>,
    counts: HashMap<String, u64>,
    /// RING_OF_THE_WINDOW only: (timestamp, events) at `timestamp % len`.
    per_tick: Vec<(u64, u64)>,
}

impl<const BUG: u8> BucketHeap<BUG> {
    fn key(ts: u64) -> i128 {
        if BUG == I64_TIMESTAMPS {
            i128::from(ts as i64)
        } else {
            i128::from(ts)
        }
    }

    fn start(&self) -> Option<i128> {
        self.time.map(|t| t - Self::key(self.config.window()))
    }
}

impl<const BUG: u8> SlidingTopK for BucketHeap<BUG> {
    fn new(config: TopKConfig) -> Self {
        let ticks = if BUG == RING_OF_THE_WINDOW { config.window().min(1 << 16) as usize } else { 0 };
        BucketHeap {
            config,
            lines: 0,
            time: None,
            late: 0,
            buckets: BTreeMap::new(),
            counts: HashMap::new(),
            per_tick: vec![(0, 0); ticks],
        }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let event = parse_line(line).map_err(|kind| LineError { line: self.lines, kind })?;
        let ts = Self::key(event.timestamp);
        if self.start().is_some_and(|start| ts <= start) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        self.time = Some(self.time.map_or(ts, |t| t.max(ts)));
        *self.buckets.entry(ts).or_default().entry(event.user.to_string()).or_insert(0) += 1;
        *self.counts.entry(event.user.to_string()).or_insert(0) += 1;
        if !self.per_tick.is_empty() {
            let len = self.per_tick.len() as u64;
            let tick = &mut self.per_tick[(event.timestamp % len) as usize];
            *tick = if tick.0 == event.timestamp { (tick.0, tick.1 + 1) } else { (event.timestamp, 1) };
        }
        let start = self.start().expect("time is set");
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > start {
                break;
            }
            for (user, n) in entry.remove() {
                let count = self.counts.get_mut(&user).expect("counted");
                *count -= n;
                if *count == 0 && BUG != ZERO_COUNTS_KEPT {
                    self.counts.remove(&user);
                }
            }
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        let k = self.config.k();
        if BUG == HEAP_TIES_REVERSED {
            let mut heap: BinaryHeap<Reverse<(u64, &str)>> = BinaryHeap::new();
            for (user, n) in self.counts.iter().filter(|(_, n)| **n > 0) {
                heap.push(Reverse((*n, user.as_str())));
                if heap.len() > k {
                    heap.pop();
                }
            }
            return heap.into_sorted_vec().into_iter().map(|Reverse((n, u))| (u.to_string(), n)).collect();
        }
        // Greater is better: more events, then the smaller id. The min-heap drops the worst.
        let mut heap: BinaryHeap<Reverse<(u64, Reverse<&str>)>> =
            if BUG == HEAP_PREALLOCATES_K { BinaryHeap::with_capacity(k + 1) } else { BinaryHeap::new() };
        for (user, n) in self.counts.iter().filter(|(_, n)| **n > 0) {
            heap.push(Reverse((*n, Reverse(user.as_str()))));
            if heap.len() > k {
                heap.pop();
            }
        }
        heap.into_sorted_vec().into_iter().map(|Reverse((n, Reverse(u)))| (u.to_string(), n)).collect()
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.counts.values().filter(|n| **n > 0).count()
    }
}

// ---------------------------------------------------------------------------------
// An intern pool: user ids as u32, counts in a Vec, buckets of ids
// ---------------------------------------------------------------------------------

/// The pool keeps every id ever seen (the hidden intern pool).
pub const NEVER_RELEASES_IDS: u8 = 1;

pub struct Interned<const BUG: u8> {
    config: TopKConfig,
    lines: u64,
    time: Option<u64>,
    late: u64,
    ids: HashMap<String, u32>,
    names: Vec<String>,
    counts: Vec<u64>,
    /// Ids released when their count reached zero, for reuse.
    free: Vec<u32>,
    buckets: BTreeMap<u64, Vec<u32>>,
    live: usize,
}

impl<const BUG: u8> Interned<BUG> {
    fn intern(&mut self, user: &str) -> u32 {
        if let Some(id) = self.ids.get(user) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = user.to_string();
                id
            }
            None => {
                self.names.push(user.to_string());
                self.counts.push(0);
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(user.to_string(), id);
        id
    }
}

impl<const BUG: u8> SlidingTopK for Interned<BUG> {
    fn new(config: TopKConfig) -> Self {
        Interned {
            config,
            lines: 0,
            time: None,
            late: 0,
            ids: HashMap::new(),
            names: Vec::new(),
            counts: Vec::new(),
            free: Vec::new(),
            buckets: BTreeMap::new(),
            live: 0,
        }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let event = parse_line(line).map_err(|kind| LineError { line: self.lines, kind })?;
        let window = self.config.window();
        if self.time.and_then(|t| t.checked_sub(window)).is_some_and(|start| event.timestamp <= start) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        let time = self.time.map_or(event.timestamp, |t| t.max(event.timestamp));
        self.time = Some(time);
        let id = self.intern(event.user);
        if self.counts[id as usize] == 0 {
            self.live += 1;
        }
        self.counts[id as usize] += 1;
        self.buckets.entry(event.timestamp).or_default().push(id);
        let Some(start) = time.checked_sub(window) else { return Ok(Ingested::Counted) };
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > start {
                break;
            }
            for id in entry.remove() {
                let count = &mut self.counts[id as usize];
                *count -= 1;
                if *count == 0 {
                    self.live -= 1;
                    if BUG != NEVER_RELEASES_IDS {
                        let name = std::mem::take(&mut self.names[id as usize]);
                        self.ids.remove(&name);
                        self.free.push(id);
                    }
                }
            }
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        let all = self.counts.iter().zip(&self.names).filter(|(n, _)| **n > 0).map(|(n, u)| (u.clone(), *n)).collect();
        ranked(all, self.config.k())
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.live
    }
}

// ---------------------------------------------------------------------------------
// Buckets only, pruned lazily every PRUNE_EVERY events; reads walk the window's range
// ---------------------------------------------------------------------------------

/// The housekeeping threshold: expired buckets are dropped every this many events.
pub const PRUNE_EVERY: u64 = 1024;
/// Prunes with `buckets.split_off(&cutoff);`, believing it drops the head: it keeps
/// the expired head and throws the window away, so reads go wrong only once the
/// threshold is crossed.
pub const SPLIT_OFF_KEEPS_HEAD: u8 = 1;

pub struct LazyPrune<const BUG: u8> {
    config: TopKConfig,
    lines: u64,
    time: Option<u64>,
    late: u64,
    counted: u64,
    buckets: BTreeMap<u64, Vec<String>>,
}

impl<const BUG: u8> LazyPrune<BUG> {
    fn start(&self) -> Option<u64> {
        self.time.and_then(|t| t.checked_sub(self.config.window()))
    }

    /// Counts of the window, from the buckets after its start (expired ones may still
    /// be held until the next prune).
    fn window_counts(&self) -> HashMap<&str, u64> {
        let first = self.start().map_or(0, |start| start + 1);
        let mut counts = HashMap::new();
        for user in self.buckets.range(first..).flat_map(|(_, users)| users) {
            *counts.entry(user.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

impl<const BUG: u8> SlidingTopK for LazyPrune<BUG> {
    fn new(config: TopKConfig) -> Self {
        LazyPrune { config, lines: 0, time: None, late: 0, counted: 0, buckets: BTreeMap::new() }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let event = parse_line(line).map_err(|kind| LineError { line: self.lines, kind })?;
        if self.start().is_some_and(|start| event.timestamp <= start) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        self.time = Some(self.time.map_or(event.timestamp, |t| t.max(event.timestamp)));
        self.buckets.entry(event.timestamp).or_default().push(event.user.to_string());
        self.counted += 1;
        if self.counted % PRUNE_EVERY == 0 {
            if let Some(start) = self.start() {
                if BUG == SPLIT_OFF_KEEPS_HEAD {
                    self.buckets.split_off(&(start + 1));
                } else {
                    self.buckets = self.buckets.split_off(&(start + 1));
                }
            }
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        ranked(self.window_counts().into_iter().map(|(u, n)| (u.to_string(), n)).collect(), self.config.k())
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.window_counts().len()
    }
}

// ---------------------------------------------------------------------------------
// One sorted deque of timestamps per user, pruned when that user is next touched
// ---------------------------------------------------------------------------------

/// Only variant: a user's old timestamps are dropped when the user comes back, so a
/// user who never returns stays forever (reads filter by the window, so every answer
/// is right; memory grows with every user ever seen).
pub const PRUNED_ON_TOUCH: u8 = 1;

pub struct PerUser<const BUG: u8> {
    config: TopKConfig,
    lines: u64,
    time: Option<u64>,
    late: u64,
    users: HashMap<String, VecDeque<u64>>,
}

impl<const BUG: u8> PerUser<BUG> {
    fn start(&self) -> Option<u64> {
        self.time.and_then(|t| t.checked_sub(self.config.window()))
    }

    /// Events of `stamps` inside the window.
    fn in_window(&self, stamps: &VecDeque<u64>) -> u64 {
        let first = self.start().map_or(0, |start| stamps.partition_point(|ts| *ts <= start));
        (stamps.len() - first) as u64
    }
}

impl<const BUG: u8> SlidingTopK for PerUser<BUG> {
    fn new(config: TopKConfig) -> Self {
        PerUser { config, lines: 0, time: None, late: 0, users: HashMap::new() }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        let event = parse_line(line).map_err(|kind| LineError { line: self.lines, kind })?;
        if self.start().is_some_and(|start| event.timestamp <= start) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        self.time = Some(self.time.map_or(event.timestamp, |t| t.max(event.timestamp)));
        let start = self.start();
        let stamps = self.users.entry(event.user.to_string()).or_default();
        let at = stamps.partition_point(|ts| *ts <= event.timestamp);
        stamps.insert(at, event.timestamp);
        if let Some(start) = start {
            while stamps.front().is_some_and(|ts| *ts <= start) {
                stamps.pop_front();
            }
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        let all = self
            .users
            .iter()
            .map(|(user, stamps)| (user.clone(), self.in_window(stamps)))
            .filter(|(_, n)| *n > 0)
            .collect();
        ranked(all, self.config.k())
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.users.values().filter(|stamps| self.in_window(stamps) > 0).count()
    }
}
