//! The model of the idempotency exercise: records by (scope, key) with leases, fencing
//! tokens and retention, the ops and outputs of a graded sequence, and the [`Spec`]
//! that sequential replays and linearizability checks both run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::contract::{settle_verdict, Begin, IdempotencyConfig, Lease, LeaseError, Response, SETTLE_CHECK_ORDER};
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// The hint for a refusal other than the model's: the order, from [`SETTLE_CHECK_ORDER`].
fn settle_order_hint() -> &'static str {
    static HINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HINT.get_or_init(|| {
        format!(
            "complete and abandon refuse with the first that applies of {SETTLE_CHECK_ORDER:?} (SETTLE_CHECK_ORDER): \
             no live record; the record is not this token's (taken over, even if the new executor has completed); \
             this token already completed it."
        )
    })
}
/// A record in the model. Responses are kept by number (see [`response`]) and
/// fingerprints as the op's `u8`, so the linearizability search clones and compares
/// plain numbers, never hitting the contention points of [`Response`]/[`Fingerprint`](super::Fingerprint).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) enum State {
    InProgress { token: u64, leased_until: Timestamp },
    Completed { token: u64, response: u16, until: Timestamp },
}

impl State {
    /// When the record is reaped.
    pub(super) fn end(&self, retention: Duration) -> Timestamp {
        match self {
            State::InProgress { leased_until, .. } => *leased_until + retention,
            State::Completed { until, .. } => *until,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct Model {
    config: IdempotencyConfig,
    pub(super) now: Timestamp,
    last_token: u64,
    pub(super) records: BTreeMap<u16, (u8, State)>,
}

impl Model {
    /// Records only expire when time moves, so the model reaps on `Advance` alone.
    fn reap(&mut self) {
        let (now, retention) = (self.now, self.config.retention());
        self.records.retain(|_, (_, state)| now < state.end(retention));
    }

    fn begin(&mut self, id: u16, fingerprint: u8) -> Begin {
        let (now, lease) = (self.now, self.config.lease());
        match self.records.get(&id) {
            Some((fp, _)) if *fp != fingerprint => Begin::Mismatch,
            Some((_, State::Completed { response: r, .. })) => Begin::Replay(response(*r)),
            Some((_, State::InProgress { leased_until, .. })) if now < *leased_until => {
                Begin::InFlight { retry_after: leased_until.saturating_duration_since(now) }
            }
            _ => {
                self.last_token += 1;
                let state = State::InProgress { token: self.last_token, leased_until: now + lease };
                self.records.insert(id, (fingerprint, state));
                Begin::Execute(Lease { token: self.last_token })
            }
        }
    }

    /// The checks shared by `complete` and `abandon`, in [`SETTLE_CHECK_ORDER`].
    fn holder(&self, id: u16, token: u64) -> Result<(), LeaseError> {
        let record = self.records.get(&id).map(|(_, state)| match state {
            State::InProgress { token, .. } => (*token, false),
            State::Completed { token, .. } => (*token, true),
        });
        settle_verdict(record, token)
    }
}

/// One call, or a step of the test's clock. Ids index `IDS` (and past it, the
/// generated ids of `id`); responses are numbered (`response`).
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Begin { id: u16, fingerprint: u8 },
    Complete { id: u16, token: u64, response: u16 },
    Abandon { id: u16, token: u64 },
    Advance(Duration),
}

/// (scope, key) pairs over the whole domain: each pair below collides with another
/// under some naive encoding — joined with ':' (2/3), concatenated (4/5, 8/9),
/// combined order-blind, e.g. hash(scope) ^ hash(key) (0/6) — and 7 is non-ASCII.
pub(super) const IDS: [(&str, &str); 10] = [
    ("tenant-a", "order-1"),
    ("tenant-b", "order-1"),
    ("t:x", "y"),
    ("t", "x:y"),
    ("12", "3"),
    ("1", "23"),
    ("order-1", "tenant-a"),
    ("ünïcødé", "ключ-🔑"),
    ("", "0"),
    ("0", ""),
];

/// The (scope, key) of id `index`: [`IDS`], then generated ids with digits and Unicode
/// (the housekeeping case uses thousands).
pub(super) fn id(index: u16) -> (String, String) {
    match IDS.get(usize::from(index)) {
        Some((scope, key)) => (scope.to_string(), key.to_string()),
        None => (format!("s{}", index % 3), format!("k{index}-ключ")),
    }
}

/// Bodies larger than this are "large" (one response in six): 64 KiB and a bit.
const LARGE_BODY: usize = 65_537;

/// Response number `n`: statuses from 200 to 500, bodies empty, text, every byte
/// value, invalid UTF-8 with NULs and CRLFs, or large (`n % 6 == 5`).
pub(super) fn response(n: u16) -> Response {
    const STATUSES: [u16; 7] = [200, 201, 202, 204, 400, 409, 500];
    let seed = n as usize;
    let body = match n % 6 {
        0 => Vec::new(),
        1 | 4 => format!("response #{n}").into_bytes(),
        2 => (0..=255u8).cycle().skip(seed % 256).take(256 + seed % 7).collect(),
        3 => vec![0xff, 0x00, b'\r', b'\n', 0xfe, n as u8, 0xc3, 0x28],
        _ => (0..LARGE_BODY).map(|i| (i.wrapping_mul(31) ^ seed) as u8).collect(),
    };
    Response { status: STATUSES[seed % STATUSES.len()], body }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Begin { id: i, fingerprint } => {
                let (s, k) = id(*i);
                write!(f, "begin({s:?}, {k:?}, fp{fingerprint})")
            }
            Op::Complete { id: i, token, response: r } => {
                let (s, k) = id(*i);
                write!(f, "complete({s:?}, {k:?}, token {token}, {:?})", response(*r))
            }
            Op::Abandon { id: i, token } => {
                let (s, k) = id(*i);
                write!(f, "abandon({s:?}, {k:?}, token {token})")
            }
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    Began(Begin),
    Done(Result<(), LeaseError>),
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Began(b) => write!(f, "{b:?}"),
            Output::Done(r) => write!(f, "{r:?}"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

pub(super) struct IdempotencySpec;

impl Spec for IdempotencySpec {
    type Config = IdempotencyConfig;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &IdempotencyConfig) -> Model {
        Model { config: *config, now: Timestamp::ZERO, last_token: 0, records: BTreeMap::new() }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        use Begin::*;
        Some(match (op, expected, actual) {
            (Op::Advance(_), ..) => return None,
            (Op::Begin { .. }, Output::Began(Mismatch), _) => {
                "A live record with another fingerprint answers Mismatch, before anything else (in flight, completed, \
                 lease expired): same scope and key, different request."
            }
            (Op::Begin { .. }, _, Output::Began(Mismatch)) => {
                "Mismatch only for a live record of this very (scope, key) with another fingerprint: keys of different \
                 scopes never meet, whatever characters they contain, and a record past retention, or abandoned, is gone."
            }
            (Op::Begin { .. }, Output::Began(Execute(_)), Output::Began(Execute(_))) => {
                "Tokens come from one counter per store, 1, 2, 3, ...: one per Execute, over all keys (a takeover too)."
            }
            (Op::Begin { .. }, Output::Began(Execute(_)), _) => {
                "This call must execute: no live record (never begun, abandoned, or reaped once now ≥ completed_at + \
                 retention, or ≥ leased_until + retention if never completed), or a lease that has expired \
                 (now ≥ leased_until: take over with a new token)."
            }
            (Op::Begin { .. }, Output::Began(InFlight { .. }), Output::Began(InFlight { .. })) => {
                "retry_after is exactly leased_until − now, to the nanosecond (no rounding to a unit)."
            }
            (Op::Begin { .. }, Output::Began(InFlight { .. }), _) => {
                "The record is in progress and its lease runs until leased_until = began_at + lease (exclusive, \
                 saturating: Duration::MAX never ends): answer InFlight."
            }
            (Op::Begin { .. }, Output::Began(Replay(_)), Output::Began(Replay(_))) => {
                "Replay exactly what was completed: the status, and the body's bytes (any byte values, empty or large)."
            }
            (Op::Begin { .. }, ..) => {
                "A completed record replays its response until completed_at + retention (exclusive, saturating), \
                 whoever asks with the same fingerprint."
            }
            (Op::Complete { .. } | Op::Abandon { .. }, Output::Done(Err(_)), Output::Done(Err(_))) => settle_order_hint(),
            (Op::Complete { .. } | Op::Abandon { .. }, Output::Done(Ok(())), _) => {
                "The current token may settle its record, even after its lease expired, as long as nobody took over and \
                 the record is within leased_until + retention."
            }
            (Op::Complete { .. } | Op::Abandon { .. }, ..) => {
                "Only the record's current token may settle it: refuse a stale token (the lease was taken over), a record \
                 already completed, and an absent one; refusing changes nothing."
            }
        })
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Begin { id, fingerprint } => Output::Began(model.begin(*id, *fingerprint)),
            Op::Complete { id, token, response: r } => Output::Done(model.holder(*id, *token).map(|()| {
                let until = model.now + model.config.retention();
                let record = model.records.get_mut(id).expect("holder checked it exists");
                record.1 = State::Completed { token: *token, response: *r, until };
            })),
            Op::Abandon { id, token } => Output::Done(model.holder(*id, *token).map(|()| {
                model.records.remove(id);
            })),
            Op::Advance(d) => {
                model.now = model.now.advanced(*d);
                model.reap();
                Output::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::suite::config;

    #[test]
    fn model_lifecycle() {
        let mut m = IdempotencySpec::model(&config(10, 60));
        let mut step = |op| IdempotencySpec::step(&mut m, &op);
        assert_eq!(step(Op::Begin { id: 0, fingerprint: 1 }), Output::Began(Begin::Execute(Lease { token: 1 })));
        assert_eq!(
            step(Op::Begin { id: 0, fingerprint: 1 }),
            Output::Began(Begin::InFlight { retry_after: Duration::from_secs(10) })
        );
        assert_eq!(step(Op::Begin { id: 0, fingerprint: 2 }), Output::Began(Begin::Mismatch));
        assert_eq!(step(Op::Complete { id: 0, token: 2, response: 1 }), Output::Done(Err(LeaseError::StaleToken)));
        assert_eq!(step(Op::Complete { id: 0, token: 1, response: 1 }), Output::Done(Ok(())));
        assert_eq!(
            step(Op::Complete { id: 0, token: 1, response: 2 }),
            Output::Done(Err(LeaseError::AlreadyCompleted))
        );
        assert_eq!(step(Op::Begin { id: 0, fingerprint: 1 }), Output::Began(Begin::Replay(response(1))));
        assert_eq!(step(Op::Begin { id: 2, fingerprint: 1 }), Output::Began(Begin::Execute(Lease { token: 2 })));
        assert_eq!(
            step(Op::Begin { id: 3, fingerprint: 1 }),
            Output::Began(Begin::Execute(Lease { token: 3 })),
            "\"t:x\"/\"y\" is not \"t\"/\"x:y\""
        );
    }
}
