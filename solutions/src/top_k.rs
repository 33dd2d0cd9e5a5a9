//! Reference sliding-window top-K.
//!
//! * Events are aggregated into one bucket per timestamp (`BTreeMap<ts, user → n>`),
//!   so the window slides by popping the oldest buckets, whatever order events came in.
//! * Each user's count in the window lives in `counts`; `ranking` is the same data as
//!   an ordered set of (count descending, user ascending), so `top()` reads the first
//!   k entries instead of sorting every user.
//! * A user whose count falls to zero is removed from both: memory follows the window.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use harness::top_k::{parse_line, Ingested, LineError, SlidingTopK, TopKConfig};

pub struct TopK {
    config: TopKConfig,
    lines: u64,
    stream_time: Option<u64>,
    late: u64,
    /// timestamp → (user → events at that timestamp).
    buckets: BTreeMap<u64, HashMap<Arc<str>, u64>>,
    counts: HashMap<Arc<str>, u64>,
    ranking: BTreeSet<(Reverse<u64>, Arc<str>)>,
}

impl TopK {
    /// Events with a timestamp at or before this are out of the window.
    fn window_start(&self) -> Option<u64> {
        self.stream_time.and_then(|t| t.checked_sub(self.config.window()))
    }

    /// Moves `user`'s count by `delta` events, keeping `ranking` in step.
    fn adjust(&mut self, user: &Arc<str>, delta: i64) {
        let old = self.counts.get(user).copied().unwrap_or(0);
        let new = old.checked_add_signed(delta).expect("a count never goes below zero");
        if old > 0 {
            self.ranking.remove(&(Reverse(old), Arc::clone(user)));
        }
        if new > 0 {
            self.ranking.insert((Reverse(new), Arc::clone(user)));
            self.counts.insert(Arc::clone(user), new);
        } else {
            self.counts.remove(user);
        }
    }

    /// The user's shared name (one allocation per user in the window).
    fn intern(&self, user: &str) -> Arc<str> {
        self.counts.get_key_value(user).map(|(k, _)| Arc::clone(k)).unwrap_or_else(|| Arc::from(user))
    }
}

impl SlidingTopK for TopK {
    fn new(config: TopKConfig) -> Self {
        TopK {
            config,
            lines: 0,
            stream_time: None,
            late: 0,
            buckets: BTreeMap::new(),
            counts: HashMap::new(),
            ranking: BTreeSet::new(),
        }
    }

    fn ingest_line(&mut self, line: &str) -> Result<Ingested, LineError> {
        self.lines += 1;
        // Parse fully before touching anything: a bad line changes nothing.
        let event = parse_line(line).map_err(|kind| LineError { line: self.lines, kind })?;
        if self.window_start().is_some_and(|start| event.timestamp <= start) {
            self.late += 1;
            return Ok(Ingested::Late);
        }
        self.stream_time = Some(self.stream_time.map_or(event.timestamp, |t| t.max(event.timestamp)));
        let user = self.intern(event.user);
        *self.buckets.entry(event.timestamp).or_default().entry(Arc::clone(&user)).or_insert(0) += 1;
        self.adjust(&user, 1);
        if let Some(start) = self.window_start() {
            while let Some(entry) = self.buckets.first_entry() {
                if *entry.key() > start {
                    break;
                }
                for (user, n) in entry.remove() {
                    self.adjust(&user, -(n as i64));
                }
            }
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        self.ranking.iter().take(self.config.k()).map(|(Reverse(n), user)| (user.to_string(), *n)).collect()
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.counts.len()
    }
}
