//! Reference sliding-window top-K: O(1) work per line, whatever the window or the
//! number of users (plus O(log timestamps in the window) when a line brings a new
//! timestamp, and again when that timestamp leaves).
//!
//! * Users are interned: each user in the window has a small integer id
//!   ([`Users`]), so everything else moves integers, never strings. An id is freed
//!   when the user's last event leaves the window: memory follows the window.
//! * Events are kept per timestamp (`buckets`: timestamp → the ids of its events),
//!   with a min-heap of those timestamps, so the window slides by popping the oldest
//!   buckets, whatever order events came in.
//! * [`Ranking`] keeps the ids in one array sorted by count, highest first, where
//!   users with the same count sit side by side in no particular order (a "group").
//!   A count moving by one moves its user to the edge of its group, which is the
//!   edge of the next group: one swap, O(1) (the layout O(1) LFU caches use).
//!   `top()` takes the groups above the k-th user's and sorts only what it returns:
//!   O(k log k + the k-th user's group), not O(users).
//!
//! Profiled with `perf` on `benches/top_k.rs` (20k lines, top 10 every 100 lines):
//! the previous reference (a `BTreeMap` of `HashMap`s per timestamp and a
//! `BTreeSet<(count, Arc<str>)>` ranking) spent most of its time comparing strings in
//! the ranking (two B-tree updates per event, each about a dozen string comparisons),
//! hashing `Arc<str>` keys three times per event and allocating per timestamp; it
//! ingested ~0.7-0.9M lines/s. Integer ids and the group array make all of that
//! array indexing: ~5-7M lines/s now, where parsing and interning alone (the bench's
//! `floor`) run at ~14M. Where the rest goes (`perf`, each helper kept out of line):
//! the timestamp's bucket and its heap ~12%, sliding the window (popping buckets,
//! one `decrement` per event) ~12%, users leaving and coming back (allocating and
//! freeing their names, table inserts and removals) ~10%, `increment` ~5%, `top()`
//! every 100 lines ~3%. Tried: a `BTreeMap` of buckets (a third slower than hash +
//! heap: dropped); reusing freed names' allocations and pre-sizing buckets (no gain:
//! dropped); a user's count and position side by side (no measurable change; kept,
//! it reads better).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use harness::top_k::{parse_line, Ingested, LineError, SlidingTopK, TopKConfig};
// hashbrown's default hasher (foldhash): much faster than SipHash on short keys.
use hashbrown::HashMap;

/// A user's index in [`Users`] and [`Ranking`] while it has events in the window.
type UserId = usize;

/// Interned user names: name ↔ id, one shared copy of each name.
struct Users {
    /// Name → id. The names are shared with `names`: one allocation per user.
    ids: HashMap<Arc<str>, UserId>,
    /// By id; a free id holds `none`, the shared empty name.
    names: Vec<Arc<str>>,
    /// Ids whose user left the window, to hand out again.
    free: Vec<UserId>,
    none: Arc<str>,
}

impl Default for Users {
    fn default() -> Self {
        Users { ids: HashMap::new(), names: Vec::new(), free: Vec::new(), none: Arc::from("") }
    }
}

impl Users {
    /// The id of `name`, given one if it has none.
    fn intern(&mut self, name: &str) -> UserId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id] = Arc::clone(&name);
                id
            }
            None => {
                self.names.push(Arc::clone(&name));
                self.names.len() - 1
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// Forgets `id`'s user; the id can be handed out again.
    fn release(&mut self, id: UserId) {
        let name = std::mem::replace(&mut self.names[id], Arc::clone(&self.none));
        self.ids.remove(&name);
        self.free.push(id);
    }
}

/// User ids sorted by count, highest first; users with the same count form a group
/// of adjacent positions, in no particular order inside it.
#[derive(Default)]
struct Ranking {
    /// Ids, count descending. Only users with events in the window (count ≥ 1).
    order: Vec<UserId>,
    /// By id. A user's count and position side by side: one cache line per touch.
    ranks: Vec<Rank>,
    /// By count, which never exceeds the events in the window.
    groups: Vec<Group>,
}

#[derive(Clone, Copy, Default)]
struct Rank {
    /// Events in the window (0: not ranked).
    count: usize,
    /// Where the user is in `order`.
    position: usize,
}

/// The users with one count: `order[start..start + len]` (`start` is meaningless
/// while `len` is 0).
#[derive(Clone, Copy, Default)]
struct Group {
    start: usize,
    len: usize,
}

impl Ranking {
    /// Swaps two positions of `order`, keeping positions in step.
    fn swap(&mut self, a: usize, b: usize) {
        self.order.swap(a, b);
        self.ranks[self.order[a]].position = a;
        self.ranks[self.order[b]].position = b;
    }

    /// One more event for `id`.
    fn increment(&mut self, id: UserId) {
        if self.ranks.len() <= id {
            self.ranks.resize(id + 1, Rank::default());
        }
        let Rank { count, position } = self.ranks[id];
        if self.groups.len() <= count + 1 {
            self.groups.resize(count + 2, Group::default());
        }
        let at = if count == 0 {
            // New: counts of 1 are the last group, so the end of `order` joins it.
            self.order.push(id);
            self.ranks[id].position = self.order.len() - 1;
            self.order.len() - 1
        } else {
            // Move to the front of its group; that place then ends group count + 1,
            // which sits right before it (no count lies between).
            let front = self.groups[count].start;
            self.swap(position, front);
            self.groups[count].start += 1;
            self.groups[count].len -= 1;
            front
        };
        let group = &mut self.groups[count + 1];
        if group.len == 0 {
            group.start = at;
        }
        group.len += 1;
        self.ranks[id].count = count + 1;
    }

    /// One event fewer for `id` (which has at least one); `true` if it has none left.
    fn decrement(&mut self, id: UserId) -> bool {
        let Rank { count, position } = self.ranks[id];
        // Move to the back of its group; that place then starts group count − 1.
        let back = self.groups[count].start + self.groups[count].len - 1;
        self.swap(position, back);
        self.groups[count].len -= 1;
        self.ranks[id].count = count - 1;
        if count == 1 {
            // Group 1 is last in `order`: the user leaves from its end.
            self.order.pop();
            return true;
        }
        self.groups[count - 1].start = back;
        self.groups[count - 1].len += 1;
        false
    }

    fn count(&self, id: UserId) -> u64 {
        self.ranks[id].count as u64
    }

    /// The `k` highest-ranked ids: count descending, ties by name ascending.
    fn top(&self, k: usize, names: &[Arc<str>]) -> Vec<UserId> {
        let k = k.min(self.order.len());
        let Some(&kth) = k.checked_sub(1).and_then(|i| self.order.get(i)) else { return Vec::new() };
        // Everyone before the k-th user's group is in; its group fills the rest with
        // its smallest names. Only those are ever compared.
        let Group { start, len } = self.groups[self.ranks[kth].count];
        let mut ties = self.order[start..start + len].to_vec();
        let wanted = k - start;
        if wanted < ties.len() {
            ties.select_nth_unstable_by(wanted - 1, |&a, &b| names[a].cmp(&names[b]));
            ties.truncate(wanted);
        }
        let mut top = self.order[..start].to_vec();
        top.append(&mut ties);
        top.sort_unstable_by(|&a, &b| self.count(b).cmp(&self.count(a)).then_with(|| names[a].cmp(&names[b])));
        top
    }
}

pub struct TopK {
    config: TopKConfig,
    lines: u64,
    stream_time: Option<u64>,
    late: u64,
    users: Users,
    ranking: Ranking,
    /// Timestamp → the ids of its events in the window.
    buckets: HashMap<u64, Vec<UserId>>,
    /// The keys of `buckets`, oldest on top: what leaves the window next.
    timestamps: BinaryHeap<Reverse<u64>>,
    /// Emptied buckets, reused: a new timestamp costs no allocation once warm.
    spare: Vec<Vec<UserId>>,
}

impl TopK {
    /// Events with a timestamp at or before this are out of the window.
    fn window_start(&self) -> Option<u64> {
        self.stream_time.and_then(|t| t.checked_sub(self.config.window()))
    }

    /// Drops the buckets at or before the window's start.
    fn slide(&mut self, start: u64) {
        while let Some(&Reverse(oldest)) = self.timestamps.peek() {
            if oldest > start {
                break;
            }
            self.timestamps.pop();
            let mut ids = self.buckets.remove(&oldest).unwrap_or_default();
            for &id in &ids {
                if self.ranking.decrement(id) {
                    self.users.release(id);
                }
            }
            ids.clear();
            self.spare.push(ids);
        }
    }
}

impl SlidingTopK for TopK {
    fn new(config: TopKConfig) -> Self {
        TopK {
            config,
            lines: 0,
            stream_time: None,
            late: 0,
            users: Users::default(),
            ranking: Ranking::default(),
            buckets: HashMap::new(),
            timestamps: BinaryHeap::new(),
            spare: Vec::new(),
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
        let id = self.users.intern(event.user);
        let (timestamps, spare) = (&mut self.timestamps, &mut self.spare);
        let bucket = self.buckets.entry(event.timestamp).or_insert_with(|| {
            timestamps.push(Reverse(event.timestamp));
            spare.pop().unwrap_or_default()
        });
        bucket.push(id);
        self.ranking.increment(id);
        if let Some(start) = self.window_start() {
            self.slide(start);
        }
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        let names = &self.users.names;
        let top = self.ranking.top(self.config.k(), names);
        top.into_iter().map(|id| (names[id].to_string(), self.ranking.count(id))).collect()
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.ranking.order.len()
    }
}
