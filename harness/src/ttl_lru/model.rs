//! The model the cache is graded against: live entries only, least recently used
//! first, stepped by the same [`Spec`] in sequential replays and linearizability checks.

use std::fmt;
use std::time::Duration;

use super::Value;
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// How a graded cache is built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub capacity: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache = TtlLru::new(capacity {}), clock at t=0", self.capacity)
    }
}

/// One call, or one step of the test's clock.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        key: u8,
        value: Value,
        ttl: Duration,
    },
    Get(u8),
    Remove(u8),
    Len,
    /// The test moves its `ManualClock` forward.
    Advance(Duration),
    /// `load` returns `value` (and records that it was called).
    GetOrInsertWith {
        key: u8,
        ttl: Duration,
        value: Value,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Insert { key, value, ttl } => write!(f, "insert(k{key}, {value}, ttl {})", ShowTtl(*ttl)),
            Op::Get(key) => write!(f, "get(k{key})"),
            Op::Remove(key) => write!(f, "remove(k{key})"),
            Op::Len => write!(f, "len()"),
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
            Op::GetOrInsertWith { key, ttl, value } => {
                write!(f, "get_or_insert_with(k{key}, ttl {}, || {value})", ShowTtl(*ttl))
            }
        }
    }
}

/// A TTL as a counterexample shows it (`MAX` for `Duration::MAX`); written in place,
/// since ops are rendered before every replay.
struct ShowTtl(Duration);

impl fmt::Display for ShowTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Duration::MAX {
            f.write_str("MAX")
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// What a call returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Value(Option<Value>),
    Len(usize),
    Loaded { value: Value, called_load: bool },
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Value(v) => write!(f, "{v:?}"),
            Output::Len(n) => write!(f, "{n}"),
            Output::Loaded { value, called_load: true } => write!(f, "{value} (load called)"),
            Output::Loaded { value, called_load: false } => write!(f, "{value} (load not called)"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

/// The model: live entries only, least recently used first.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct Model {
    capacity: usize,
    now: Timestamp,
    /// (key, value, expires at), LRU first.
    entries: Vec<(u8, Value, Timestamp)>,
}

impl Model {
    fn take(&mut self, key: u8) -> Option<(u8, Value, Timestamp)> {
        let at = self.entries.iter().position(|e| e.0 == key)?;
        Some(self.entries.remove(at))
    }

    fn insert(&mut self, key: u8, value: Value, ttl: Duration) -> Option<Value> {
        let old = self.take(key).map(|e| e.1);
        let expires = self.now + ttl;
        if expires > self.now && self.capacity > 0 {
            if old.is_none() && self.entries.len() == self.capacity {
                self.entries.remove(0);
            }
            self.entries.push((key, value, expires));
        }
        old
    }
}

/// The TTL+LRU specification.
pub(super) struct TtlLruSpec;

impl Spec for TtlLruSpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &Config) -> Model {
        Model { capacity: config.capacity, now: Timestamp::ZERO, entries: Vec::new() }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        Some(match (op, expected, actual) {
            (Op::Len, ..) => {
                "len() counts live entries only: an entry stops counting at the instant it expires, whether or not \
                 anything has touched it since, and a key whose value was replaced counts once."
            }
            (Op::Get(_) | Op::Remove(_), Output::Value(None), Output::Value(Some(_))) => {
                "This key must be gone here: it expired (live iff now < inserted_at + ttl; the boundary instant is \
                 expired, and get never extends a TTL), was evicted as the least recently used, was removed, or was \
                 inserted with ttl 0 (which acts as remove)."
            }
            (Op::Get(_) | Op::Remove(_), Output::Value(Some(_)), Output::Value(None)) => {
                "A live entry went missing: a key is evicted only when a new key arrives while `capacity` live entries \
                 exist, and then the least recently used one goes (insert and get hits are uses); expired entries give \
                 up their slots first, and replacing a key evicts nothing."
            }
            (Op::Get(_) | Op::Remove(_), ..) => {
                "The value is not the one last stored under this key: insert replaces the value (and resets the TTL)."
            }
            (Op::Insert { .. }, ..) => {
                "insert returns the previous value only if it was still live (None after expiry, eviction or removal)."
            }
            (
                Op::GetOrInsertWith { .. },
                Output::Loaded { called_load: e, .. },
                Output::Loaded { called_load: a, .. },
            ) if e != a => {
                "A live key is a hit (load is not called, and the hit counts as a use); a missing or expired key \
                 calls load exactly once and stores its value as insert would."
            }
            (Op::GetOrInsertWith { .. }, ..) => {
                "get_or_insert_with returns the live value on a hit, else the value its load returned."
            }
            (Op::Advance(_), ..) => return None,
        })
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        // Expired entries are unobservable: dropping them keeps the state canonical.
        let now = model.now;
        model.entries.retain(|e| e.2 > now);
        match *op {
            Op::Insert { key, value, ttl } => Output::Value(model.insert(key, value, ttl)),
            Op::Get(key) => Output::Value(model.take(key).map(|e| {
                model.entries.push(e);
                e.1
            })),
            Op::Remove(key) => Output::Value(model.take(key).map(|e| e.1)),
            Op::Len => Output::Len(model.entries.len()),
            Op::Advance(d) => {
                model.now = model.now.advanced(d);
                Output::Nothing
            }
            Op::GetOrInsertWith { key, ttl, value } => match model.take(key) {
                Some(hit) => {
                    model.entries.push(hit);
                    Output::Loaded { value: hit.1, called_load: false }
                }
                None => {
                    model.insert(key, value, ttl);
                    Output::Loaded { value, called_load: true }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl_lru::suite::{LONG, SECOND};

    fn run(ops: &[Op], capacity: usize) -> Vec<Output> {
        let mut model = TtlLruSpec::model(&Config { capacity });
        ops.iter().map(|op| TtlLruSpec::step(&mut model, op)).collect()
    }

    #[test]
    fn model_evicts_least_recently_used_live_entry() {
        let ins = |key| Op::Insert { key, value: key as Value, ttl: LONG };
        let out = run(&[ins(0), ins(1), Op::Get(0), ins(2), Op::Get(1), Op::Get(0), Op::Len], 2);
        assert_eq!(out[4], Output::Value(None), "k1 was least recently used");
        assert_eq!(out[5], Output::Value(Some(0)));
        assert_eq!(out[6], Output::Len(2));
    }

    #[test]
    fn model_expiry_is_exclusive_and_ttl_zero_removes() {
        let out = run(
            &[
                Op::Insert { key: 0, value: 1, ttl: SECOND },
                Op::Insert { key: 1, value: 2, ttl: Duration::ZERO },
                Op::Len,
                Op::Advance(SECOND),
                Op::Get(0),
            ],
            2,
        );
        assert_eq!(
            out,
            vec![Output::Value(None), Output::Value(None), Output::Len(1), Output::Nothing, Output::Value(None)]
        );
    }

    #[test]
    fn model_load_hits_do_not_call_load() {
        let load = |value| Op::GetOrInsertWith { key: 0, ttl: LONG, value };
        let out = run(&[load(1), load(2)], 1);
        assert_eq!(out[0], Output::Loaded { value: 1, called_load: true });
        assert_eq!(out[1], Output::Loaded { value: 1, called_load: false });
        let out = run(&[load(1), load(2)], 0);
        assert_eq!(out[1], Output::Loaded { value: 2, called_load: true }, "capacity 0 loads every time");
    }

    /// The worked example of `exercises/statements/ttl_lru.md`, step by step (a, b, c
    /// are k0, k1, k2): the statement and the model agree.
    #[test]
    fn model_agrees_with_the_statements_worked_example() {
        let ten = Duration::from_secs(10);
        let ins = |key, value| Op::Insert { key, value, ttl: ten };
        let load = |value| Op::GetOrInsertWith { key: 0, ttl: Duration::from_secs(5), value };
        let ops = [ins(0, 1), ins(1, 2), Op::Get(0), ins(2, 3), Op::Get(1), ins(2, 4), Op::Advance(ten), Op::Len];
        let ops = [&ops[..], &[Op::Get(0), load(7), load(8)]].concat();
        let (value, none) = (|v| Output::Value(Some(v)), Output::Value(None));
        let expected = vec![
            none,
            none,
            value(1),
            none,
            none,
            value(3),
            Output::Nothing,
            Output::Len(0),
            none,
            Output::Loaded { value: 7, called_load: true },
            Output::Loaded { value: 7, called_load: false },
        ];
        assert_eq!(run(&ops, 2), expected);
    }
}
