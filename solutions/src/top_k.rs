//! Reference sliding-window top-K: O(1) work per line, whatever the window or the
//! number of users (plus O(log timestamps in the window) when a line brings a new
//! timestamp, and again when that timestamp leaves, for windows too wide for a ring).
//!
//! * Users are interned: each user in the window has a small integer id and one
//!   record ([`Users`]), so everything else moves integers, never strings. An id is
//!   freed when the user's last event leaves the window: memory follows the window.
//! * Events are kept per timestamp ([`Buckets`]): in a ring indexed by timestamp
//!   when the window is narrow (the classic "hits in the last 5 minutes" circular
//!   buffer), otherwise in a hash map with a min-heap of its timestamps. Either way
//!   the window slides by emptying the oldest buckets, whatever order events came in
//!   (a ring checks one slot per timestamp the window passes, never more than its
//!   1,024 slots in one slide).
//! * [`Ranking`] keeps the ids in one array sorted by count, highest first, where
//!   users with the same count sit side by side in no particular order (a "group").
//!   A count moving by one moves its user to the edge of its group, which is the
//!   edge of the next group: one swap, O(1) (the layout O(1) LFU caches use).
//!   `top()` takes the groups above the k-th user's and sorts only what it returns:
//!   O(k log k + the k-th user's group), not O(users).
//!
//! Profiled with `perf` on `benches/top_k.rs` (20k lines, 5,000 users, window 300,
//! top 10 every 100 lines). The first reference (a `BTreeMap` of `HashMap`s per
//! timestamp and a `BTreeSet<(count, Arc<str>)>` ranking) spent most of its time
//! comparing strings in the ranking and hashing `Arc<str>` keys three times per
//! event: ~0.7-0.9M lines/s. Integer ids and the group array: ~5-7M. Then, each
//! step measured side by side with the one before on a copy of the bench (this VM's
//! speed drifts by up to ±20% between runs, so only same-run ratios count):
//! * the ring instead of hash map + heap for a 300-wide window, and 32-bit ids (half
//!   the bytes in the ranking's arrays, which it reads at random): +11%;
//! * names stored inline (`SmolStr`: no allocation per user, and the name compared
//!   during lookup is in the record the table points at, not a second heap block):
//!   +5%;
//! * a table of ids, with name, count and position in one record, so the lookup's
//!   cache miss also fetches what `increment` reads: +5%;
//! * one node pool for all events instead of a `Vec` per timestamp (a new
//!   timestamp's bucket grew through 4, 8, 16 slots: a reallocation every few
//!   lines): +16%;
//! * `top()`: one `Vec` instead of three, and names copied with `String::from`
//!   (`to_string` goes through `Display` and grows the string as it writes): +11%
//!   on this bench, +20% when reading the top after every line.
//!
//! ~6.5M → 11.0-11.4M lines/s in `cargo bench` (3 runs; README), where the `floor`
//! (parse + one lookup per line) ran at 17.0-17.6M. Where the time goes now: `parse_line` about a
//! quarter (20k lines do not fit in cache: each is read from memory), the name
//! lookup about a third (hash, then the record's cache miss and the name compare),
//! users leaving (decrement, release) an eighth, `increment` and `top()` a tenth
//! each. Tried and dropped: a `BTreeMap` of buckets (a third slower than hash +
//! heap); the name's hash kept per user so releasing one does not rehash it, and
//! count + position in their own array (both a few percent slower: the record
//! grows, or the lookup's miss no longer brings the rank along).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use harness::top_k::{parse_line, Ingested, LineError, SlidingTopK, TopKConfig, HEAP_SLACK};
// hashbrown's default hasher (foldhash): much faster than SipHash on short keys.
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
// Strings of up to 23 bytes kept inline (24 bytes, like a `String`'s header), longer
// ones shared: most user ids never allocate.
use smol_str::SmolStr;

/// A user's index in [`Users::records`] while it has events in the window. 32 bits:
/// half the bytes of `usize` in the ranking's arrays, and 2^32 users in a window
/// would need hundreds of GiB before an id ran out.
type UserId = u32;

/// A 32-bit id, position or count as a slice index.
fn ix(i: u32) -> usize {
    i as usize
}

/// One user with events in the window: name, count and place in the ranking side by
/// side, so the cache line the name lookup reads also holds what `increment` needs.
#[derive(Clone, Default)]
struct User {
    name: SmolStr,
    /// Events in the window (0: not ranked; the id is free).
    count: u32,
    /// Where the user is in [`Ranking::order`].
    position: u32,
}

/// Interned users: name → id through `table`, id → everything else in `records`.
#[derive(Default)]
struct Users {
    /// Ids, hashed by their user's name (held once, in `records`).
    table: HashTable<UserId>,
    hasher: DefaultHashBuilder,
    /// By id; a free id's record is empty.
    records: Vec<User>,
    /// Ids whose user left the window, to hand out again.
    free: Vec<UserId>,
}

impl Users {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The id of `name`, given one if it has none.
    fn intern(&mut self, name: &str) -> UserId {
        let hash = self.hash(name);
        let records = &self.records;
        if let Some(&id) = self.table.find(hash, |&id| records[ix(id)].name == name) {
            return id;
        }
        let user = User { name: SmolStr::new(name), count: 0, position: 0 };
        let id = match self.free.pop() {
            Some(id) => {
                self.records[ix(id)] = user;
                id
            }
            None => {
                self.records.push(user);
                UserId::try_from(self.records.len() - 1).expect("fewer than 2^32 users in the window")
            }
        };
        let (records, hasher) = (&self.records, &self.hasher);
        self.table.insert_unique(hash, id, |&id| hasher.hash_one(records[ix(id)].name.as_str()));
        id
    }

    /// Forgets `id`'s user; the id can be handed out again.
    fn release(&mut self, id: UserId) {
        let name = std::mem::take(&mut self.records[ix(id)].name);
        if let Ok(entry) = self.table.find_entry(self.hash(&name), |&other| other == id) {
            entry.remove();
        }
        self.free.push(id);
    }
}

/// User ids sorted by count, highest first; users with the same count form a group
/// of adjacent positions, in no particular order inside it. Counts and positions live
/// in the users' records, passed in.
#[derive(Default)]
struct Ranking {
    /// Ids, count descending. Only users with events in the window (count ≥ 1).
    order: Vec<UserId>,
    /// By count, which never exceeds the events in the window.
    groups: Vec<Group>,
}

/// The users with one count: `order[start..start + len]` (`start` is meaningless
/// while `len` is 0).
#[derive(Clone, Copy, Default)]
struct Group {
    start: u32,
    len: u32,
}

impl Ranking {
    /// Swaps two positions of `order`, keeping positions in step.
    fn swap(&mut self, users: &mut [User], a: u32, b: u32) {
        self.order.swap(ix(a), ix(b));
        users[ix(self.order[ix(a)])].position = a;
        users[ix(self.order[ix(b)])].position = b;
    }

    /// One more event for `id`.
    fn increment(&mut self, users: &mut [User], id: UserId) {
        let User { count, position, .. } = users[ix(id)];
        assert!(count < u32::MAX, "fewer than 2^32 events in the window");
        if self.groups.len() <= ix(count) + 1 {
            self.groups.resize(ix(count) + 2, Group::default());
        }
        let at = if count == 0 {
            // New: counts of 1 are the last group, so the end of `order` joins it.
            let at = UserId::try_from(self.order.len()).expect("fewer than 2^32 users in the window");
            self.order.push(id);
            users[ix(id)].position = at;
            at
        } else {
            // Move to the front of its group; that place then ends group count + 1,
            // which sits right before it (no count lies between).
            let front = self.groups[ix(count)].start;
            self.swap(users, position, front);
            self.groups[ix(count)].start += 1;
            self.groups[ix(count)].len -= 1;
            front
        };
        let group = &mut self.groups[ix(count) + 1];
        if group.len == 0 {
            group.start = at;
        }
        group.len += 1;
        users[ix(id)].count = count + 1;
    }

    /// One event fewer for `id` (which has at least one); `true` if it has none left.
    fn decrement(&mut self, users: &mut [User], id: UserId) -> bool {
        let User { count, position, .. } = users[ix(id)];
        // Move to the back of its group; that place then starts group count − 1.
        let group = self.groups[ix(count)];
        let back = group.start + group.len - 1;
        self.swap(users, position, back);
        self.groups[ix(count)].len -= 1;
        users[ix(id)].count = count - 1;
        if count == 1 {
            // Group 1 is last in `order`: the user leaves from its end.
            self.order.pop();
            return true;
        }
        self.groups[ix(count) - 1].start = back;
        self.groups[ix(count) - 1].len += 1;
        false
    }

    /// The `k` highest-ranked ids: count descending, ties by name ascending.
    fn top(&self, k: usize, users: &[User]) -> Vec<UserId> {
        let k = k.min(self.order.len());
        let Some(&kth) = k.checked_sub(1).and_then(|i| self.order.get(i)) else { return Vec::new() };
        // Everyone before the k-th user's group is in; its group fills the rest with
        // its smallest names. Only those are ever compared.
        let Group { start, len } = self.groups[ix(users[ix(kth)].count)];
        let (start, len) = (ix(start), ix(len));
        let mut top = self.order[..start + len].to_vec();
        let name = |id: UserId| &users[ix(id)].name;
        if k < top.len() {
            top[start..].select_nth_unstable_by(k - start - 1, |&a, &b| name(a).cmp(name(b)));
            top.truncate(k);
        }
        top.sort_unstable_by(|&a, &b| users[ix(b)].count.cmp(&users[ix(a)].count).then_with(|| name(a).cmp(name(b))));
        top
    }
}

/// The events in the window: one node per event, linked into a list per timestamp.
/// A pool instead of a `Vec` per timestamp: no bucket grows (or reallocates) as its
/// timestamp fills, and a timestamp that leaves returns its nodes in one splice.
struct Events {
    nodes: Vec<Node>,
    /// First free node (a list through `next`), or [`NONE`].
    free: u32,
}

#[derive(Clone, Copy)]
struct Node {
    id: UserId,
    next: u32,
}

/// The end of a list.
const NONE: u32 = u32::MAX;

impl Events {
    fn new() -> Self {
        Events { nodes: Vec::new(), free: NONE }
    }

    /// Adds `id` to the list starting at `head` (its order is of no use: a timestamp's
    /// events leave together).
    fn push(&mut self, head: &mut u32, id: UserId) {
        let node = Node { id, next: *head };
        *head = if self.free == NONE {
            self.nodes.push(node);
            let at = u32::try_from(self.nodes.len() - 1).ok().filter(|&at| at != NONE);
            at.expect("fewer than 2^32 - 1 events in the window")
        } else {
            let at = self.free;
            self.free = self.nodes[ix(at)].next;
            self.nodes[ix(at)] = node;
            at
        };
    }

    /// Hands each id of the list at `head` to `leave` and frees the list.
    fn drain(&mut self, head: u32, leave: &mut impl FnMut(UserId)) {
        let mut at = head;
        loop {
            let node = self.nodes[ix(at)];
            leave(node.id);
            if node.next == NONE {
                break;
            }
            at = node.next;
        }
        self.nodes[ix(at)].next = self.free;
        self.free = head;
    }
}

/// Where each timestamp's list starts.
enum Buckets {
    /// Windows of at most [`RING_SLOTS_MAX`] timestamps.
    Ring(Ring),
    /// Wider windows, where a slot per timestamp would not follow the events.
    Sparse(Sparse),
}

/// The widest window kept in a ring: its slots (a list head and a timestamp each)
/// fit in a quarter of [`HEAP_SLACK`], the fixed part of the contract's memory
/// allowance, since the ring holds them from the start, events or not. 1,024 slots.
const RING_SLOTS_MAX: u64 = (HEAP_SLACK / 4 / std::mem::size_of::<(u32, u64)>()) as u64;

/// A slot per timestamp modulo the ring's length (a power of two ≥ the window): the
/// timestamps in the window are fewer than the slots, so no two share one. Finding a
/// bucket is a mask instead of a hash lookup, and sliding the window walks the slots
/// of the timestamps that left instead of popping a heap.
struct Ring {
    /// First node of each slot's events, or [`NONE`].
    heads: Vec<u32>,
    /// The timestamp of each slot's events (stale while the slot is empty).
    stamps: Vec<u64>,
    /// Every timestamp below this has left the window.
    next_to_expire: u64,
}

/// Timestamp → first node, and the timestamps in a min-heap: the oldest leaves first
/// whatever order they came in.
struct Sparse {
    heads: HashMap<u64, u32>,
    timestamps: BinaryHeap<Reverse<u64>>,
}

impl Buckets {
    fn new(window: u64) -> Self {
        if window <= RING_SLOTS_MAX {
            let slots = window.next_power_of_two() as usize;
            Buckets::Ring(Ring { heads: vec![NONE; slots], stamps: vec![0; slots], next_to_expire: 0 })
        } else {
            Buckets::Sparse(Sparse { heads: HashMap::new(), timestamps: BinaryHeap::new() })
        }
    }

    /// Adds an event, at a timestamp in the window (after the window has slid to it).
    fn push(&mut self, events: &mut Events, timestamp: u64, id: UserId) {
        match self {
            Buckets::Ring(ring) => {
                let slot = timestamp as usize & (ring.heads.len() - 1);
                if ring.heads[slot] == NONE {
                    ring.stamps[slot] = timestamp;
                }
                debug_assert_eq!(ring.stamps[slot], timestamp, "two timestamps of the window in one slot");
                events.push(&mut ring.heads[slot], id);
            }
            Buckets::Sparse(sparse) => {
                let timestamps = &mut sparse.timestamps;
                let head = sparse.heads.entry(timestamp).or_insert_with(|| {
                    timestamps.push(Reverse(timestamp));
                    NONE
                });
                events.push(head, id);
            }
        }
    }

    /// Removes every event at or before `start`, handing each one's id to `leave`.
    fn expire(&mut self, events: &mut Events, start: u64, mut leave: impl FnMut(UserId)) {
        match self {
            Buckets::Ring(ring) => {
                if start < ring.next_to_expire {
                    return;
                }
                // One pass over the slots at most: a slot of a timestamp skipped here
                // is the slot of one visited (its timestamp plus the ring's length).
                let mask = ring.heads.len() - 1;
                let from = ring.next_to_expire.max(start.saturating_sub(mask as u64));
                for timestamp in from..=start {
                    let slot = timestamp as usize & mask;
                    let head = ring.heads[slot];
                    if head != NONE && ring.stamps[slot] <= start {
                        events.drain(head, &mut leave);
                        ring.heads[slot] = NONE;
                    }
                }
                ring.next_to_expire = start + 1;
            }
            Buckets::Sparse(sparse) => {
                while let Some(&Reverse(oldest)) = sparse.timestamps.peek() {
                    if oldest > start {
                        break;
                    }
                    sparse.timestamps.pop();
                    if let Some(head) = sparse.heads.remove(&oldest) {
                        events.drain(head, &mut leave);
                    }
                }
            }
        }
    }
}

pub struct TopK {
    config: TopKConfig,
    lines: u64,
    stream_time: Option<u64>,
    late: u64,
    users: Users,
    ranking: Ranking,
    buckets: Buckets,
    events: Events,
}

impl TopK {
    /// Events with a timestamp at or before this are out of the window.
    fn window_start(&self) -> Option<u64> {
        self.stream_time.and_then(|t| t.checked_sub(self.config.window()))
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
            buckets: Buckets::new(config.window()),
            events: Events::new(),
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
        if self.stream_time.is_none_or(|t| event.timestamp > t) {
            // Slide first: the ring's slot for this timestamp may still hold one that
            // has just left.
            self.stream_time = Some(event.timestamp);
            if let Some(start) = self.window_start() {
                let (ranking, users) = (&mut self.ranking, &mut self.users);
                self.buckets.expire(&mut self.events, start, |id| {
                    if ranking.decrement(&mut users.records, id) {
                        users.release(id);
                    }
                });
            }
        }
        let id = self.users.intern(event.user);
        self.buckets.push(&mut self.events, event.timestamp, id);
        self.ranking.increment(&mut self.users.records, id);
        Ok(Ingested::Counted)
    }

    fn top(&self) -> Vec<(String, u64)> {
        let users = &self.users.records;
        let top = self.ranking.top(self.config.k(), users);
        top.into_iter().map(|id| (String::from(users[ix(id)].name.as_str()), u64::from(users[ix(id)].count))).collect()
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    fn users_in_window(&self) -> usize {
        self.ranking.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tracker with its events kept in hash map + heap buckets whatever the
    /// window.
    fn sparse(config: TopKConfig) -> TopK {
        TopK {
            buckets: Buckets::Sparse(Sparse { heads: HashMap::new(), timestamps: BinaryHeap::new() }),
            ..TopK::new(config)
        }
    }

    /// A stream drifting forward with jitter wider than small windows, stragglers,
    /// repeat users, and jumps of about one, several and many ring lengths.
    fn stream(lines: u64) -> Vec<String> {
        let mut time = 1_000u64;
        let mut seed = 7u64;
        let mut next = move |bound: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        (0..lines)
            .map(|i| {
                time += match i % 97 {
                    13 => 500 + next(600),
                    50 => 5_000 + next(5_000),
                    _ => next(3),
                };
                // Now and then one from up to 1,500 back: late for every window here.
                let timestamp = if i % 31 == 0 { time.saturating_sub(next(1_500)) } else { time + next(40) - 20 };
                format!("{timestamp} u{} view", next(25))
            })
            .collect()
    }

    /// The ring decides as the hash map + heap does: the same counts, order, users and
    /// late events after every line, for windows of one slot up to the widest ring.
    #[test]
    fn ring_buckets_keep_what_sparse_buckets_keep() {
        let lines = stream(3_000);
        for window in [1, 2, 3, 7, 64, 300, RING_SLOTS_MAX] {
            let config = TopKConfig::new(window, 8).expect("valid config");
            let mut ring = TopK::new(config);
            assert!(matches!(ring.buckets, Buckets::Ring(_)), "window {window} is kept in a ring");
            let mut heap = sparse(config);
            for (i, line) in lines.iter().enumerate() {
                let outcome = ring.ingest_line(line).expect("well-formed line");
                assert_eq!(outcome, heap.ingest_line(line).expect("well-formed line"), "window {window}, line {i}");
                assert_eq!(ring.top(), heap.top(), "window {window}, line {i}");
                assert_eq!(ring.users_in_window(), heap.users_in_window(), "window {window}, line {i}");
            }
            assert_eq!(ring.late_events(), heap.late_events(), "window {window}");
            assert!(ring.late_events() > 0, "window {window}: the stream has late events");
        }
        assert!(matches!(
            TopK::new(TopKConfig::new(RING_SLOTS_MAX + 1, 8).expect("valid")).buckets,
            Buckets::Sparse(_)
        ));
    }
}
