//! The graded suite of the idempotency exercise, levels 1-4: generated op sequences
//! replayed against the model, concurrency histories, and memory on the real heap.
//! Level 5 (Redis) is in `redis.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::contract::{
    Begin, Fingerprint, IdempotencyConfig, LeaseError, Response, MEMORY_PER_RECORD, MEMORY_SLACK, SETTLE_CHECK_ORDER,
};
use super::model::{id, response, IdempotencySpec, Model, Op, Output, IDS};
use super::{ErasedStore, Factory};
use crate::clock::ManualClock;
use crate::heap::{show_bytes, HeapMeter};
use crate::isolation::trying;
use crate::linearizability::{check_histories, set_forced_yields, HistoryBudget, SplitMix};
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{
    guarded, with_hint, Case, CaseError, CaseResult, Hints, Level, Panic, QUICK_DEADLINE as QUICK,
    THREADED_DEADLINE as THREADED,
};

fn apply(store: &dyn ErasedStore, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Begin { id: i, fingerprint } => {
            let (s, k) = id(*i);
            Output::Began(store.begin(&s, &k, Fingerprint(u64::from(*fingerprint))))
        }
        Op::Complete { id: i, token, response: r } => {
            let (s, k) = id(*i);
            Output::Done(store.complete(&s, &k, *token, response(*r)))
        }
        Op::Abandon { id: i, token } => {
            let (s, k) = id(*i);
            Output::Done(store.abandon(&s, &k, *token))
        }
        Op::Advance(d) => {
            clock.advance(*d);
            Output::Nothing
        }
    }
}

fn build(make: Factory, config: IdempotencyConfig, clock: &ManualClock) -> Result<Arc<dyn ErasedStore>, CaseError> {
    guarded(|| make(config, clock.shared())).map_err(|p| p.into_case_error(format!("{config:?}")))
}

fn replay_on(make: Factory, config: &IdempotencyConfig, ops: &[Op]) -> CaseResult {
    replay::<IdempotencySpec, _>(config, ops, |config| {
        let clock = ManualClock::new();
        let store = make(*config, clock.shared());
        move |op: &Op| apply(store.as_ref(), &clock, op)
    })
}

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

pub(super) fn config(lease_s: u64, retention_s: u64) -> IdempotencyConfig {
    IdempotencyConfig::new(Duration::from_secs(lease_s), Duration::from_secs(retention_s)).expect("valid config")
}

/// Lease 2s, retention 4s, clock steps of 3s: one step expires a lease, two reap.
fn short_config() -> IdempotencyConfig {
    config(2, 4)
}

fn letters(ids: &[u16]) -> Vec<Op> {
    let mut ops = Vec::new();
    for &i in ids {
        ops.push(Op::Begin { id: i, fingerprint: 1 });
        ops.push(Op::Begin { id: i, fingerprint: 2 });
        for token in 1..=2 {
            ops.push(Op::Complete { id: i, token, response: 0 });
            ops.push(Op::Abandon { id: i, token });
        }
    }
    ops.push(Op::Advance(Duration::from_secs(3)));
    ops
}

/// Numbers each complete's response by its step, so replays are told apart, with
/// every kind of body [`response`] makes but the large one: building 64 KiB in each of
/// the exhaustive cases' short sequences would cost seconds (the edges and the random
/// sequences have large bodies, see [`numbered_all`]).
fn numbered(ops: &[Op]) -> Vec<Op> {
    let mut ops = numbered_all(ops);
    for op in &mut ops {
        if let Op::Complete { response, .. } = op {
            if *response % 6 == 5 {
                *response += 601; // the next kind: an empty body
            }
        }
    }
    ops
}

/// Numbers each complete's response by its step, every kind of body included.
fn numbered_all(ops: &[Op]) -> Vec<Op> {
    let mut ops = ops.to_vec();
    for (i, op) in ops.iter_mut().enumerate() {
        if let Op::Complete { response, .. } = op {
            *response = i as u16 + 1;
        }
    }
    ops
}

/// Time scales of the random sequences, in nanoseconds: odd nanoseconds, sub-µs,
/// µs, sub-ms, ms and seconds, so no attempt can round time to a unit.
const TIME_UNITS: [u64; 6] = [1, 999, 1_000, 333_333, 1_000_000, 1_000_000_000];

/// A lease and a retention at one time scale, each sometimes `Duration::MAX` (never ends).
fn random_config() -> impl Strategy<Value = (IdempotencyConfig, u64)> {
    let unit = proptest::sample::select(&TIME_UNITS[..]);
    let span = |max: u64| (1u64..=max, 0u64..=999, 0u8..8);
    (unit, span(3), span(6)).prop_map(|(unit, (l, l_odd, l_max), (r, r_odd, r_max))| {
        let pick = |n: u64, odd: u64, max: u8| {
            if max == 0 {
                Duration::MAX
            } else {
                Duration::from_nanos(n * unit + odd % unit)
            }
        };
        let config = IdempotencyConfig::new(pick(l, l_odd, l_max), pick(r, r_odd, r_max)).expect("nonzero");
        (config, unit)
    })
}

pub(super) fn random_ops() -> impl Strategy<Value = (IdempotencyConfig, Vec<Op>)> {
    random_config().prop_flat_map(|(config, unit)| {
        let id = 0u16..IDS.len() as u16;
        let op = prop_oneof![
            4 => (id.clone(), 1u8..=2).prop_map(|(id, fingerprint)| Op::Begin { id, fingerprint }),
            3 => (id.clone(), 1u64..=6).prop_map(|(id, token)| Op::Complete { id, token, response: 0 }),
            1 => (id, 1u64..=6).prop_map(|(id, token)| Op::Abandon { id, token }),
            // Steps of 0.001 to 4 units, plus odd nanoseconds: boundaries get hit.
            2 => (1u64..=4000, 0u64..=3).prop_map(move |(n, odd)| {
                Op::Advance(Duration::from_nanos((n * unit).div_ceil(1000) + odd))
            }),
        ];
        proptest::collection::vec(op, 1..=40).prop_map(move |ops| (config, numbered_all(&ops)))
    })
}

pub(super) fn edge_scenarios() -> Vec<(IdempotencyConfig, Vec<Op>)> {
    use Op::*;
    let s = Duration::from_secs;
    let c = config(10, 60);
    vec![
        // Scopes never meet, even when "scope:key" would collide.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Begin { id: 1, fingerprint: 2 },
                Complete { id: 0, token: 1, response: 3 },
                Begin { id: 1, fingerprint: 2 },
                Begin { id: 2, fingerprint: 1 },
                Begin { id: 3, fingerprint: 2 },
                Complete { id: 3, token: 4, response: 7 },
                Begin { id: 2, fingerprint: 1 },
                Begin { id: 3, fingerprint: 2 },
            ],
        ),
        // A different fingerprint is a mismatch, while in flight and after completion.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Begin { id: 0, fingerprint: 2 },
                Advance(s(11)),
                Begin { id: 0, fingerprint: 2 },
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 2, response: 6 },
                Begin { id: 0, fingerprint: 2 },
            ],
        ),
        // Abandon releases at once: the next begin executes with a new token.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Abandon { id: 0, token: 1 },
                Begin { id: 0, fingerprint: 2 },
                Abandon { id: 0, token: 1 },
                Complete { id: 0, token: 2, response: 5 },
                Begin { id: 0, fingerprint: 2 },
            ],
        ),
        // Takeover after lease expiry: the old executor's complete is stale; the stored response is the new one's.
        // Once the new executor completed, the old token is still StaleToken (the fence comes first:
        // SETTLE_CHECK_ORDER) and only the completing token hears AlreadyCompleted.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(s(10)),
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 4 },
                Complete { id: 0, token: 2, response: 5 },
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 6 },
                Complete { id: 0, token: 2, response: 7 },
                Abandon { id: 0, token: 1 },
                Abandon { id: 0, token: 2 },
                Complete { id: 0, token: 9, response: 8 },
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // With the lease expired but no takeover, the current token may still complete.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(s(30)),
                Complete { id: 0, token: 1, response: 3 },
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // InFlight says exactly how long the lease has left.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Advance(Duration::from_millis(9_999)),
                Begin { id: 0, fingerprint: 1 },
                Advance(Duration::from_millis(1)),
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // Retention: at exactly completed_at + retention the key is new; a forgotten in-progress record too.
        (
            c,
            vec![
                Begin { id: 0, fingerprint: 1 },
                Complete { id: 0, token: 1, response: 3 },
                Advance(s(59)),
                Begin { id: 0, fingerprint: 2 },
                Advance(s(1)),
                Begin { id: 0, fingerprint: 2 },
                Advance(s(70)),
                Complete { id: 0, token: 2, response: 9 },
                Begin { id: 0, fingerprint: 1 },
            ],
        ),
        // Sub-millisecond lease and retention, odd nanoseconds: retry_after to the nanosecond,
        // and every boundary exact.
        (
            IdempotencyConfig::new(Duration::from_nanos(1_500_001), Duration::from_nanos(999_999)).expect("nonzero"),
            vec![
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(333_333)),
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(1_166_667)),
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(1)),
                Begin { id: 7, fingerprint: 1 },
                Complete { id: 7, token: 2, response: 2 },
                Advance(Duration::from_nanos(999_998)),
                Begin { id: 7, fingerprint: 1 },
                Advance(Duration::from_nanos(1)),
                Begin { id: 7, fingerprint: 2 },
            ],
        ),
        // Leases and retentions too long to add to a time (Duration::MAX) saturate: they never end.
        (
            IdempotencyConfig::new(Duration::MAX, Duration::MAX).expect("nonzero"),
            vec![
                Begin { id: 8, fingerprint: 1 },
                Advance(s(3_000_000_000)),
                Begin { id: 8, fingerprint: 1 },
                Complete { id: 8, token: 1, response: 3 },
                Advance(s(3_000_000_000)),
                Begin { id: 8, fingerprint: 1 },
                Begin { id: 9, fingerprint: 1 },
                Abandon { id: 9, token: 2 },
                Begin { id: 9, fingerprint: 2 },
            ],
        ),
        (
            IdempotencyConfig::new(Duration::from_millis(1), Duration::MAX).expect("nonzero"),
            vec![
                Begin { id: 4, fingerprint: 1 },
                Advance(s(3_000_000_000)),
                Begin { id: 5, fingerprint: 1 },
                Begin { id: 4, fingerprint: 1 },
                Complete { id: 4, token: 1, response: 1 },
                Complete { id: 4, token: 3, response: 2 },
                Advance(s(3_000_000_000)),
                Begin { id: 4, fingerprint: 1 },
                Complete { id: 5, token: 2, response: 4 },
            ],
        ),
        // Bodies are bytes: empty, every byte value, invalid UTF-8, 64 KiB; statuses as given.
        (
            c,
            (0..6u16)
                .flat_map(|n| {
                    let id = n + 2;
                    let token = u64::from(n) + 1;
                    [
                        Begin { id, fingerprint: 1 },
                        Complete { id, token, response: 12 + n },
                        Begin { id, fingerprint: 1 },
                    ]
                })
                .collect(),
        ),
        // complete/abandon on unknown keys, and a response only after execution began.
        (
            c,
            vec![
                Complete { id: 1, token: 1, response: 2 },
                Abandon { id: 1, token: 1 },
                Begin { id: 1, fingerprint: 1 },
                Complete { id: 1, token: 1, response: 5 },
                Abandon { id: 1, token: 1 },
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency and memory
// ---------------------------------------------------------------------------------

/// Histories per shape (threads, calls per thread, count): fixed counts, never time.
/// (Each forced yield can cost a scheduler timeslice on a busy machine: budgets are
/// sized to stay under ~10s on the reference with both cores taken by other work.)
const HISTORIES: HistoryBudget =
    HistoryBudget { rounds: &[(2, 3, 200), (2, 5, 200), (3, 4, 250), (4, 5, 100)], seed: 0x1d };
/// The same for the histories on one key with the clock moving: two or three threads
/// with longer histories, where a stale time read shows up most often.
const CLOCK_HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 200), (2, 6, 200), (3, 5, 200)], seed: 0xc10c };

/// A store on a fresh clock. With forced yields on, every read of a `ManualClock`
/// yields right after it, so a call that reads the time before taking its lock is
/// paused between its time and its effect.
fn build_yielding(make: Factory, config: IdempotencyConfig) -> Result<(ManualClock, Arc<dyn ErasedStore>), CaseError> {
    let clock = ManualClock::new();
    let store = build(make, config, &clock)?;
    Ok((clock, store))
}

/// A random call on one of `ids`; with `clock_steps`, one call in four moves the clock.
fn random_call(rng: &mut SplitMix, thread: usize, ids: &[u16], clock_steps: bool) -> Op {
    let id = ids[rng.below(ids.len())];
    let token = 1 + rng.below(4) as u64;
    match rng.below(if clock_steps { 8 } else { 6 }) {
        0..=2 => Op::Begin { id, fingerprint: 1 + (rng.below(5) == 0) as u8 },
        3 | 4 => {
            // Small bodies only: the search clones model states, not responses.
            let n = thread as u16 * 12 + rng.below(12) as u16;
            Op::Complete { id, token, response: if n % 6 == 5 { n + 1 } else { n } }
        }
        5 => Op::Abandon { id, token },
        _ => Op::Advance(Duration::from_secs(1 + rng.below(2) as u64)),
    }
}

/// Histories of calls drawn by `pick`, each on a fresh store and clock.
fn linearizable_histories(
    make: Factory,
    budget: HistoryBudget,
    pick: impl Fn(&mut SplitMix, usize) -> Op,
) -> CaseResult {
    set_forced_yields(true);
    let config = config(2, 3);
    let result = check_histories::<IdempotencySpec, _>(
        &config,
        budget,
        pick,
        || build_yielding(make, config),
        |(clock, store), op| apply(store.as_ref(), clock, op),
    );
    set_forced_yields(false);
    result
}

/// Calls on three keys (one non-ASCII, two that collide when joined with ':'), the
/// clock standing still: each call is one atomic step, tokens included.
fn concurrent_case(make: Factory) -> CaseResult {
    linearizable_histories(make, HISTORIES, |rng, thread| random_call(rng, thread, &[0, 2, 3, 7], false))
}

/// Calls on one key while the clock moves: leases expire and are taken over
/// mid-history, retention ends mid-history, and each call's time is its effect's.
/// (One key: calls on different keys may take their time and their token in either
/// order, see the trait.)
fn clock_moves(make: Factory) -> CaseResult {
    linearizable_histories(make, CLOCK_HISTORIES, |rng, thread| random_call(rng, thread, &[7], true))
}

/// Leases expire and are taken over while identical requests race: each executor's
/// work outlasts its lease (it moves the clock past the lease before completing), so
/// retries take over while it completes. Once a complete lands the key replays, so
/// exactly one complete lands, and it must be the newest executor's.
fn takeover_race(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let result = takeover_rounds(make);
    set_forced_yields(false);
    result
}

fn takeover_rounds(make: Factory) -> CaseResult {
    const THREADS: usize = 4;
    const TRIES: usize = 60;
    let lease = Duration::from_secs(1);
    for round in 0..120u32 {
        let (clock, store) =
            build_yielding(make, IdempotencyConfig::new(lease, Duration::from_secs(600)).expect("nonzero"))?;
        let key = format!("refund-{round}-🔁");
        trying(&format_args!(
            "{THREADS} threads: begin(\"pay\", {key:?}, fp3) until not InFlight; on Execute clock.advance(1s), then complete"
        ));
        let barrier = Barrier::new(THREADS);
        type Call = (Begin, Option<(u64, Result<(), LeaseError>)>);
        let outcomes: Vec<thread::Result<Vec<Call>>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, key, barrier, clock) = (&store, &key, &barrier, &clock);
                    s.spawn(move || {
                        barrier.wait();
                        // A client: retry after each 409 until answered (bounded), as a real one would.
                        let mut calls = Vec::new();
                        for i in 0..TRIES {
                            let answer = store.begin("pay", key, Fingerprint(3));
                            let executed = match &answer {
                                Begin::Execute(lease_) => {
                                    // The work takes longer than the lease.
                                    clock.advance(lease);
                                    thread::yield_now();
                                    let body = format!("t{t}-{i}").into_bytes();
                                    let done = store.complete("pay", key, lease_.token, Response { status: 200, body });
                                    Some((lease_.token, done))
                                }
                                _ => None,
                            };
                            let in_flight = matches!(answer, Begin::InFlight { .. });
                            calls.push((answer, executed));
                            if !in_flight {
                                break;
                            }
                            thread::yield_now();
                        }
                        calls
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut calls = Vec::new();
        for outcome in outcomes {
            calls.extend(outcome.map_err(|p| {
                Panic::from_payload(p.as_ref())
                    .into_case_error(format!("begin/complete of {key:?} on {THREADS} threads"))
            })?);
        }
        let landed: Vec<u64> = calls
            .iter()
            .filter_map(|(_, settled)| settled.as_ref().filter(|(_, r)| r.is_ok()).map(|(t, _)| *t))
            .collect();
        let newest =
            calls.iter().filter_map(|(b, _)| if let Begin::Execute(l) = b { Some(l.token) } else { None }).max();
        let final_answer = store.begin("pay", &key, Fingerprint(3));
        let executions: Vec<&(u64, Result<(), LeaseError>)> = calls.iter().filter_map(|(_, e)| e.as_ref()).collect();
        if landed.len() != 1 || landed.first() != newest.as_ref() || !matches!(final_answer, Begin::Replay(_)) {
            return Err(CaseError::failed(format!(
                "{THREADS} threads each sent begin(\"pay\", {key:?}, fp3), again after each InFlight (up to {TRIES} times; \
                 lease 1s, retention 600s); each executor moved the clock 1s (its work outlasted the lease) and then completed. \
                 Completes that landed, by token: {landed:?}; newest token executed: {newest:?}; then a retry got {final_answer:?}. \
                 Expected exactly one complete to land, the newest executor's (an older token is fenced off once a retry \
                 took over, and after a complete lands nobody executes again), then a Replay.\nexecutions (token, its complete) by thread: {executions:?}"
            )));
        }
    }
    Ok(())
}

/// N identical requests at once: exactly one executes; after it completes, all replay.
fn exactly_one_executes(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let result = exactly_one_executes_yielding(make);
    set_forced_yields(false);
    result
}

fn exactly_one_executes_yielding(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    let (_clock, store) = build_yielding(make, config(30, 300))?;
    for round in 0..50u32 {
        let key = format!("payment-{round}");
        let executed = AtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        let answers: Vec<thread::Result<Begin>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (store, key, executed, barrier) = (&store, &key, &executed, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let answer = store.begin("shop", key, Fingerprint(7));
                        if let Begin::Execute(lease) = &answer {
                            executed.fetch_add(1, Ordering::SeqCst);
                            // Simulate the work, then store the response.
                            thread::yield_now();
                            let _ = store.complete(
                                "shop",
                                key,
                                lease.token,
                                Response { status: 201, body: b"paid".to_vec() },
                            );
                        }
                        answer
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut kinds = Vec::new();
        for answer in answers {
            let answer = answer.map_err(|p| {
                Panic::from_payload(p.as_ref()).into_case_error("begin(\"shop\", key, fp7) on 8 threads")
            })?;
            kinds.push(answer);
        }
        let executed = executed.load(Ordering::SeqCst);
        let bad = kinds.iter().any(|b| matches!(b, Begin::Mismatch));
        if executed != 1 || bad {
            return Err(CaseError::failed(format!(
                "{THREADS} threads sent the same request (\"shop\", {key:?}, fp7) at once: {executed} executed (expected exactly 1); answers: {kinds:?}"
            )));
        }
        let after = store.begin("shop", &key, Fingerprint(7));
        if after != Begin::Replay(Response { status: 201, body: b"paid".to_vec() }) {
            return Err(CaseError::failed(format!(
                "after the executor completed, a retry of {key:?} got {after:?}, expected Replay(201 \"paid\")"
            )));
        }
    }
    Ok(())
}

/// Unique keys keep arriving and completing: the real heap the store holds must follow
/// the records within retention, not every key ever seen.
fn memory_follows_retention(make: Factory) -> CaseResult {
    const PER_SECOND: usize = 1_000;
    const SECONDS: usize = 150;
    let (lease, retention) = (2usize, 5usize);
    let clock = ManualClock::new();
    let meter = HeapMeter::start();
    let store = build(make, config(lease as u64, retention as u64), &clock)?;
    // Completed records live `retention` seconds, those left in progress (a tenth)
    // `lease + retention`; +1 for the second being written.
    let live = (retention + 1) * PER_SECOND + (lease + retention + 1) * PER_SECOND / 10;
    let bound = live * MEMORY_PER_RECORD + MEMORY_SLACK;
    let mut key = String::with_capacity(64);
    for second in 0..SECONDS {
        for i in 0..PER_SECOND {
            key.clear();
            let _ = write!(key, "{second:04}-{i:04}-checkout-ключ-🔑-pay");
            match store.begin("api", &key, Fingerprint(1)) {
                Begin::Execute(lease) => {
                    if i % 10 != 0 {
                        // Most complete; a tenth are left in progress (the caller crashed).
                        let _ =
                            store.complete("api", &key, lease.token, Response { status: 200, body: b"ok".to_vec() });
                    }
                }
                other => {
                    return Err(CaseError::failed(format!(
                        "begin(\"api\", {key:?}, fp1) on a fresh key returned {other:?}"
                    )))
                }
            }
        }
        let held = meter.held();
        if held > bound {
            return Err(CaseError::failed(format!(
                "after {} unique keys ({PER_SECOND}/s, lease {lease}s, retention {retention}s, bodies of 2 bytes, keys of ~40), \
                 the store holds {} of heap: at most {live} records are within retention, so it may hold at most \
                 {live} × MEMORY_PER_RECORD ({}) + MEMORY_SLACK ({}) = {}. The store holds on to records past \
                 their retention, or to something for every key ever seen",
                (second + 1) * PER_SECOND,
                show_bytes(held),
                show_bytes(MEMORY_PER_RECORD),
                show_bytes(MEMORY_SLACK),
                show_bytes(bound)
            )));
        }
        clock.advance(Duration::from_secs(1));
    }
    drop(store);
    Ok(())
}

/// Keys per wave of the housekeeping case: enough that any sweep threshold is crossed.
const WAVE: u16 = 6_000;

/// Thousands of keys in every state (completed, abandoned, left in progress), the
/// clock moved across lease ends and retention ends, then every key read back: what
/// sweeps (housekeeping) removed must be exactly what had expired.
fn housekeeping(make: Factory) -> CaseResult {
    let config = config(2, 5);
    let clock = ManualClock::new();
    let store = build(make, config, &clock)?;
    let mut driver = Housekeeping {
        config,
        model: IdempotencySpec::model(&config),
        store,
        clock,
        log: Vec::new(),
        tokens: BTreeMap::new(),
    };
    let ms = Duration::from_millis;
    driver.write(0)?;
    driver.run(Op::Advance(ms(1_500)))?;
    driver.write(1)?;
    // t=2.5s: wave 0's leases have expired, its records are all within retention.
    driver.run(Op::Advance(ms(1_000)))?;
    driver.write(2)?;
    driver.read(0)?;
    // t=5s: wave 0's first completes end their retention exactly now.
    driver.run(Op::Advance(ms(2_500)))?;
    driver.write(0)?;
    driver.read(1)?;
    // t=7.5s: wave 1's records left in progress (leased until 3.5s) end at 8.5s.
    driver.run(Op::Advance(ms(2_500)))?;
    driver.read(2)?;
    driver.read(1)
}

/// The housekeeping case's replay: model and store side by side, every call logged.
struct Housekeeping {
    config: IdempotencyConfig,
    model: Model,
    store: Arc<dyn ErasedStore>,
    clock: ManualClock,
    log: Vec<(Op, Output)>,
    /// The last token each key executed with.
    tokens: BTreeMap<u16, u64>,
}

impl Housekeeping {
    fn run(&mut self, op: Op) -> CaseResult {
        let expected = IdempotencySpec::step(&mut self.model, &op);
        let actual = guarded(|| apply(self.store.as_ref(), &self.clock, &op))
            .map_err(|p| p.into_case_error(format!("{op:?}, after {} calls", self.log.len())))?;
        if let (Output::Began(Begin::Execute(lease)), Op::Begin { id, .. }) = (&expected, &op) {
            self.tokens.insert(*id, lease.token);
        }
        if actual != expected {
            return Err(housekeeping_report(&self.config, &self.log, &op, &actual, &expected));
        }
        self.log.push((op, actual));
        Ok(())
    }

    fn wave(n: u16) -> std::ops::Range<u16> {
        (10 + n * WAVE)..(10 + (n + 1) * WAVE)
    }

    /// Every key of wave `n` executes; by `id % 4` it is then completed, abandoned,
    /// left in progress or completed.
    fn write(&mut self, n: u16) -> CaseResult {
        for id in Self::wave(n) {
            self.run(Op::Begin { id, fingerprint: 1 })?;
            let token = self.tokens.get(&id).copied().unwrap_or(0);
            match id % 4 {
                1 => self.run(Op::Abandon { id, token })?,
                2 => {}
                _ => self.run(Op::Complete { id, token, response: id % 5 })?,
            }
        }
        Ok(())
    }

    /// Reads wave `n` back: a begin with the same fingerprint, with another one, or
    /// the last executor completing (late) and then a begin.
    fn read(&mut self, n: u16) -> CaseResult {
        for id in Self::wave(n) {
            match (id / 4) % 3 {
                0 => self.run(Op::Begin { id, fingerprint: 1 })?,
                1 => self.run(Op::Begin { id, fingerprint: 2 })?,
                _ => {
                    let token = self.tokens.get(&id).copied().unwrap_or(0);
                    self.run(Op::Complete { id, token, response: 4 })?;
                    self.run(Op::Begin { id, fingerprint: 1 })?;
                }
            }
        }
        Ok(())
    }
}

/// A housekeeping failure, shown as the calls on the key that differed (and the clock
/// steps): the other keys' thousands of calls only matter through the sweeps they set off.
fn housekeeping_report(
    config: &IdempotencyConfig,
    log: &[(Op, Output)],
    op: &Op,
    actual: &Output,
    expected: &Output,
) -> CaseError {
    let key_of = |op: &Op| match op {
        Op::Begin { id, .. } | Op::Complete { id, .. } | Op::Abandon { id, .. } => Some(*id),
        Op::Advance(_) => None,
    };
    let target = key_of(op);
    let mut text = format!("{config:?}\n");
    let mut others = 0usize;
    let flush = |text: &mut String, others: &mut usize| {
        if *others > 0 {
            let _ = writeln!(text, "        ... {others} calls on other keys ...");
            *others = 0;
        }
    };
    for (step, (past, output)) in log.iter().enumerate() {
        let key = key_of(past);
        if key.is_none() || key == target {
            flush(&mut text, &mut others);
            let _ = writeln!(text, "{:>6}. {past:?} -> {output:?}", step + 1);
        } else {
            others += 1;
        }
    }
    flush(&mut text, &mut others);
    let _ = writeln!(
        text,
        "{:>6}. {op:?} -> {actual:?}\n        expected {expected:?}   <-- first difference",
        log.len() + 1
    );
    let report = format!(
        "after {} calls on {} keys (enough to set off any sweep), the calls on this key disagree:\n{text}",
        log.len(),
        3 * WAVE
    );
    let sweep = "A record disappears exactly when it ends, whatever housekeeping runs meanwhile: one left in \
                 progress lives until leased_until + retention (not just its lease), a completed one until \
                 completed_at + retention (end exclusive).";
    CaseError::failed(with_hint(report, sweep))
}

pub const EXERCISE: &str = "idempotency";
pub const L1: Level = Level { number: 1, name: "lifecycle" };
pub const L2: Level = Level { number: 2, name: "leases" };
pub const L3: Level = Level { number: 3, name: "threads" };
pub const L4: Level = Level { number: 4, name: "memory" };
pub const L5: Level = Level { number: 5, name: "redis" };

/// `text` with `{order}` replaced by [`SETTLE_CHECK_ORDER`] as printed, so the order is
/// written in one place. Leaked: hints are `&'static str`, and this costs a few hundred
/// bytes per suite built.
fn quoting_order(text: &'static str) -> &'static str {
    Box::leak(text.replace("{order}", &format!("{SETTLE_CHECK_ORDER:?}")).into_boxed_str())
}

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hints: Hints, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hints, deadline, move || run(make))
    };
    vec![
        case(L1, "one_key_sequences", Hints::new(
            "Every short sequence on one key: the first begin executes with the next token (1, 2, ...); a retry while the lease \
             runs is InFlight with exactly the time left; once completed, a retry with the same fingerprint replays the stored \
             status and body bytes; another fingerprint is Mismatch.",
            "An idempotency key turns a retry into a lookup: the record's state decides the answer and only the first request \
             does the work. The record remembers which request it was for (the fingerprint), so a key reused for another \
             request is caught, never replayed.",
            "A map from (scope, key) to a record: fingerprint + state, InProgress { token, leased_until } or Completed { token, \
             response, until }; one token counter for the store. begin: absent or past its end → insert, Execute; other \
             fingerprint → Mismatch; completed → Replay; lease running → InFlight(leased_until − now); else take over."),
            QUICK, |make| exhaustive(&[short_config()], |_| letters(&[0]), 5, |_| true, |c, ops| replay_on(make, c, &numbered(ops)))),
        case(L1, "two_key_sequences", Hints::new(
            "Every short sequence over two keys in different scopes: records are per (scope, key), and nothing done to one \
             shows in the other; tokens still come from one counter for the whole store.",
            "Namespacing: distinct (scope, key) pairs must never reach the same record, whatever characters they contain. \
             A composite key has to be encoded injectively.",
            "Key the map by the pair itself, (String, String), or by a length-prefixed encoding; scope + \":\" + key confuses \
             (\"t:x\", \"y\") with (\"t\", \"x:y\")."),
            QUICK, |make| exhaustive(&[short_config()], |_| letters(&[0, 1]), 4, |_| true, |c, ops| replay_on(make, c, &numbered(ops)))),
        case(L2, "edges", Hints::new(
            "Edge cases: after a lease expires a retry takes over with a higher token, and the old token's complete or abandon \
             is StaleToken, even once the new executor completed; the current token may complete after its lease ran out if \
             nobody took over; abandon frees the key at once; Mismatch wins over InFlight; retention ends at exactly \
             completed_at + retention; sub-millisecond times are exact; Duration::MAX never ends; bodies are any bytes; \
             scopes never collide.",
            quoting_order(
                "Fencing tokens: a lease is a promise in time, and an executor paused past it (GC, a slow network) wakes up \
                 not knowing. The token is the fence: every settle carries it and the store refuses a stale one whatever the \
                 record's state. complete and abandon check {order}, the first that applies wins: the fence before the state."),
            "In complete and abandon compare tokens, not times: look the record up, then refuse as settle_verdict (in the \
             contract) does. Compute deadlines with checked or saturating addition (overflow means never) and compare \
             now < deadline."),
            QUICK, |make| edge_scenarios().iter().try_for_each(|(c, ops)| replay_on(make, c, ops))),
        case(L2, "random_sequences", Hints::new(
            quoting_order(
                "Longer random sequences over 10 (scope, key) pairs (digits, separators, Unicode, empty strings), leases and \
                 retentions from a nanosecond to Duration::MAX, binary bodies. complete and abandon refuse with the first \
                 that applies of {order}."),
            "Every end is exclusive and exact to the nanosecond: a lease has run out at leased_until, a record is gone at its \
             end; a record nobody completes still lives until leased_until + retention.",
            "Store absolute deadlines (leased_until, until), saturating, and compare now < deadline; treat a record past its \
             end as absent on every access, so expiry is exact whenever housekeeping runs."),
            QUICK, |make| random(random_ops(), Budget::default(), |(c, ops)| replay_on(make, c, ops))),
        case(L3, "exactly_one_executes", Hints::new(
            "8 identical requests at once: exactly one gets Execute; the others get InFlight, or Replay once it completed.",
            "Check-then-act: looking for a record and creating it must be one atomic step, or two requests both find no record \
             and both execute. Comparing fingerprints may yield the thread in this case, which widens any gap.",
            "Hold one lock from the lookup through the insert (a Mutex around the map, or the key's shard lock, with the \
             map's entry API under it); never release it between the check and the insert."),
            THREADED, exactly_one_executes),
        case(L3, "linearizable", Hints::new(
            "Concurrent begin, complete and abandon on several keys, the clock standing still: every result is explained by \
             some one-at-a-time order of the calls.",
            "Each call acts on its record in one atomic step: reading its state, deciding, changing it and, for Execute, \
             taking a token together.",
            "One critical section per call: lock the map (or the key's shard), read, decide, write, unlock. A replayed \
             response is cloned inside it, or shared through an Arc."),
            THREADED, concurrent_case),
        case(L3, "clock_moves", Hints::new(
            "Concurrent calls on one key while the clock moves: each call acts at the time it reads, so leases run out and \
             records end mid-history as some one-at-a-time order of the calls and clock steps has it.",
            "Time is part of the state: a call that reads the clock and then waits for its record acts at a time the clock \
             has already left, e.g. answers InFlight for a lease that another call has already taken over.",
            "Read the clock inside the critical section, after taking the lock, never before."),
            THREADED, clock_moves),
        case(L3, "takeover_race", Hints::new(
            "Leases run out while identical requests race and executors finish late: exactly one complete lands, the newest \
             executor's, and every retry after it replays.",
            "A fence is only as good as its atomicity: between an old executor's token check and its write, a retry may take \
             over, and the old write lands anyway.",
            "complete checks the token and stores the response in one critical section, at the time read inside it."),
            THREADED, takeover_race),
        case(L4, "memory_follows_retention", Hints::new(
            "Unique keys keep arriving, most completed and a tenth left in progress: the real heap the store holds follows \
             the records within retention (MEMORY_PER_RECORD bytes each, plus MEMORY_SLACK), not every key ever seen.",
            "A record past its end answers exactly as no record, so it can be forgotten; but expiry checked only on access \
             never forgets a key nobody asks for again.",
            "Sweep the map when it has doubled since the last sweep (amortised O(1) per call), or keep records in an \
             expiry-ordered queue and pop what has ended; keep no side index of every key ever seen."),
            THREADED, memory_follows_retention),
        case(L4, "housekeeping", Hints::new(
            "Thousands of keys in every state (completed, abandoned, left in progress), the clock crossing lease and retention \
             ends, then every key read back: housekeeping removes exactly what has expired, nothing else.",
            "Two readings of expiry must agree, the lookup's and the sweep's: a record left in progress lives until \
             leased_until + retention (not just its lease), a completed one until completed_at + retention, end exclusive.",
            "Give the record one end() (leased_until + retention, or until) and use it in both the lookup and the sweep: \
             expired iff now ≥ end."),
            THREADED, housekeeping),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_quote_the_settle_order_from_its_constant() {
        let quoted = quoting_order("refuse with {order}");
        assert_eq!(quoted, format!("refuse with {SETTLE_CHECK_ORDER:?}"));
        for case in suite(|_, _| unreachable!()) {
            for tier in crate::suite::HintTier::ALL {
                assert!(!case.hints.get(tier).contains("{order}"), "{}: {}", case.id, case.hints.get(tier));
            }
        }
    }
}
