//! The graded suite of the window-limit exercise, levels 1-4: generated op sequences
//! replayed against the model for each algorithm, concurrency histories, and memory on
//! the real heap. Level 5 (Redis) is in `redis.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::contract::{
    Algorithm, LimitError, WindowDecision, WindowQuota, HEAP_PER_KEY, HEAP_PER_LOG_ENTRY, HEAP_SLACK, NANOS_LIMIT,
};
use super::model::{allows, quota, Config, Op, Output, WindowLimitSpec, QUOTAS, START};
use super::{ErasedWindowLimiter, Factory};
use crate::clock::{Clock, ManualClock};
use crate::heap::{show_bytes, HeapMeter};
use crate::linearizability::{check_histories, set_forced_yields, HistoryBudget, Key, SplitMix};
use crate::sequential::{exhaustive, random, replay, Budget};
use crate::suite::{
    guarded, with_hint, Case, CaseError, CaseResult, Hints, Level, Panic, QUICK_DEADLINE as QUICK,
    THREADED_DEADLINE as THREADED,
};

pub(super) const ALGORITHMS: [Algorithm; 3] =
    [Algorithm::FixedWindow, Algorithm::SlidingLog, Algorithm::SlidingWindowCounter];

fn apply(limiter: &dyn ErasedWindowLimiter, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Check { limits, cost } => {
            let limits: Vec<(Key, WindowQuota)> = limits.iter().map(|&(k, q)| (Key(k.into()), quota(q))).collect();
            Output::Decided(limiter.check(&limits, *cost))
        }
        Op::Advance(_) | Op::Rewind(_) => apply_clock(clock, op),
    }
}

/// Moves the test's clock (shared by the in-memory and Redis drivers).
pub(super) fn apply_clock(clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Advance(d) => clock.advance(*d),
        Op::Rewind(d) => clock.set(clock.now() - *d),
        Op::Check { .. } => unreachable!("only clock ops"),
    }
    Output::Nothing
}

fn build(make: Factory, algorithm: Algorithm, clock: &ManualClock) -> Result<Arc<dyn ErasedWindowLimiter>, CaseError> {
    guarded(|| make(algorithm, clock.shared())).map_err(|p| p.into_case_error(format!("{:?}", Config(algorithm))))
}

fn replay_on(make: Factory, config: Config, ops: &[Op]) -> CaseResult {
    replay::<WindowLimitSpec, _>(&config, ops, |config| {
        let clock = ManualClock::starting_at(START);
        let limiter = make(config.0, clock.shared());
        move |op: &Op| apply(limiter.as_ref(), &clock, op)
    })
}

fn configs(algorithm: Algorithm) -> [Config; 1] {
    [Config(algorithm)]
}

// Inputs
// ---------------------------------------------------------------------------------

pub(super) fn check(limits: &[(u8, u8)], cost: u32) -> Op {
    Op::Check { limits: limits.to_vec(), cost }
}

/// Whether every key in `ops` is always named with the same quota (the contract binds
/// a key to one quota) and the test clock stays below [`NANOS_LIMIT`].
pub(super) fn admissible(ops: &[Op]) -> bool {
    let mut bound = BTreeMap::new();
    let mut clock = u128::from(START.as_nanos());
    ops.iter().all(|op| match op {
        Op::Check { limits, .. } => limits.iter().all(|&(k, q)| *bound.entry(k).or_insert(q) == q),
        Op::Advance(d) => {
            clock += d.as_nanos();
            clock < u128::from(NANOS_LIMIT)
        }
        Op::Rewind(_) => true,
    })
}

/// One key, quota `q`: costs from 0 to one over the limit, and clock steps of 2/5 of a
/// window (inside one, or across a boundary) and of a whole window.
fn single_key_letters(q: u8) -> Vec<Op> {
    let limit = quota(q).limit();
    let window = quota(q).window();
    let mut costs = vec![0, 1, limit.min(2)];
    if limit > 3 {
        costs.push(limit);
    }
    costs.extend(limit.checked_add(1));
    costs.dedup();
    let mut ops: Vec<Op> = costs.into_iter().map(|cost| check(&[(0, q)], cost)).collect();
    ops.push(Op::Advance((window * 2 / 5).max(Duration::from_nanos(1))));
    ops.push(Op::Advance(window));
    ops
}

/// A user (1/s), an endpoint (2/s) and a tenant (3 per 500ms) checked together and
/// apart, listed in different orders.
fn multi_key_letters() -> Vec<Op> {
    vec![
        check(&[(0, 0), (1, 1), (2, 2)], 1),
        check(&[(2, 2), (1, 1)], 1),
        check(&[(2, 2)], 2),
        check(&[(1, 1), (2, 2), (0, 0)], 0),
        Op::Advance(Duration::from_millis(400)),
    ]
}

fn clock_steps(max_ms: u64) -> BoxedStrategy<Duration> {
    let ms = (1..=max_ms).prop_map(Duration::from_millis);
    let us = (1u64..=5_000).prop_map(Duration::from_micros);
    let ns = (1u64..=2_000_000_000).prop_map(Duration::from_nanos);
    prop_oneof![3 => ms, 1 => us, 2 => ns].boxed()
}

/// Random sequences over `keys` keys, up to `max_limits` per request in a random order,
/// quotas drawn from `QUOTAS[..quotas]` (a key keeps the quota it was first named
/// with); costs from 0 to one over the smallest limit; clock steps on and off window
/// boundaries, and steps back if `rewinds`.
pub(super) fn random_ops(
    keys: u8,
    max_limits: usize,
    quotas: u8,
    rewinds: bool,
    fine: bool,
) -> impl Strategy<Value = Vec<Op>> {
    let limits = proptest::sample::subsequence((0..keys).collect::<Vec<u8>>(), 1..=max_limits)
        .prop_shuffle()
        .prop_flat_map(move |keys| {
            let n = keys.len();
            (Just(keys), proptest::collection::vec(0..quotas, n))
        })
        .prop_map(|(keys, quotas)| keys.into_iter().zip(quotas).collect::<Vec<(u8, u8)>>());
    // Costs: 0-4 as drawn, 7 = the smallest limit, 8 = one less, 9 = one more.
    let check = (limits, prop_oneof![0u32..=4, 7u32..=9]).prop_map(|(limits, cost)| Op::Check { limits, cost });
    let steps = if fine { clock_steps(1200) } else { (1u64..=1200).prop_map(Duration::from_millis).boxed() };
    let advance = steps.prop_map(Op::Advance);
    let rewind = (1u64..=800).prop_map(|ms| Op::Rewind(Duration::from_millis(ms)));
    let op = if rewinds {
        prop_oneof![6 => check, 3 => advance, 1 => rewind].boxed()
    } else {
        prop_oneof![6 => check, 3 => advance].boxed()
    };
    proptest::collection::vec(op, 1..=40).prop_map(normalise)
}

/// Binds each key to the quota it is first named with, and turns cost codes into costs
/// relative to the request's smallest limit (see [`random_ops`]).
fn normalise(mut ops: Vec<Op>) -> Vec<Op> {
    let mut bound = BTreeMap::new();
    for op in &mut ops {
        if let Op::Check { limits, cost } = op {
            for (k, q) in limits.iter_mut() {
                *q = *bound.entry(*k).or_insert(*q);
            }
            let limit = limits.iter().map(|&(_, q)| quota(q).limit()).min().unwrap_or(1);
            *cost = match *cost {
                7 => limit,
                8 => limit - 1,
                9 => limit.saturating_add(1),
                small => small,
            };
        }
    }
    ops
}

/// Every algorithm, one key per request, every quota.
fn random_single_key(make: Factory, algorithm: Algorithm) -> CaseResult {
    let budget = Budget { cases: 128, ..Budget::default() };
    random(random_ops(2, 1, QUOTAS.len() as u8, false, true), budget, |ops| replay_on(make, Config(algorithm), ops))
}

fn one_algorithm(make: Factory, algorithm: Algorithm) -> CaseResult {
    exhaustive(
        &configs(algorithm),
        |_| [0u8, 1, 2].iter().flat_map(|&q| single_key_letters(q)).collect(),
        4,
        admissible,
        |c, ops| replay_on(make, *c, ops),
    )?;
    for q in [0u8, 1, 2] {
        exhaustive(&configs(algorithm), |_| single_key_letters(q), 5, admissible, |c, ops| replay_on(make, *c, ops))?;
    }
    random_single_key(make, algorithm)
}

/// The fixed window's boundary burst, as a graded demonstration: `limit` requests 1ns
/// before a boundary, `limit` more at it, 2·limit within 1ns; a limiter that slides
/// instead of fixing its windows is not the algorithm the contract names.
pub(super) fn boundary_burst_scenarios() -> Vec<Vec<Op>> {
    let ns = Duration::from_nanos;
    vec![
        // 2 per 1s; START is a whole second.
        vec![
            Op::Advance(ns(999_999_999)),
            check(&[(0, 1)], 2),
            check(&[(0, 1)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 1)], 2),
            check(&[(0, 1)], 1),
        ],
        // 5 per 100ms, one request at a time, the last 1ms before the boundary.
        vec![
            Op::Advance(Duration::from_millis(99)),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            Op::Advance(Duration::from_millis(1)),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
        ],
    ]
}

/// Sequences at the top of the domain: windows of 1ns, odd nanoseconds, MAX_WINDOW.
pub(super) fn extreme_scenarios() -> Vec<Vec<Op>> {
    let ns = Duration::from_nanos;
    let w = quota(9).window_nanos();
    // The next multiple of MAX_WINDOW after START, then 2^30 ns into it: where f64
    // and the exact counter disagree (see the model's tests).
    let to_boundary = w - START.as_nanos() % w;
    vec![
        vec![
            Op::Advance(ns(to_boundary - 1)),
            check(&[(0, 9)], u32::MAX),
            check(&[(0, 9)], 1),
            Op::Advance(ns(1 + (1 << 30))),
            check(&[(0, 9)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 9)], 1),
            check(&[(0, 9)], 1),
        ],
        vec![
            check(&[(0, 7)], u32::MAX),
            check(&[(0, 7)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 7)], u32::MAX),
            check(&[(0, 7)], 1),
            Op::Advance(ns(2)),
            check(&[(0, 7)], u32::MAX),
        ],
        vec![
            check(&[(0, 6)], 3),
            Op::Advance(ns(333_332)),
            check(&[(0, 6)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 6)], 1),
            Op::Advance(ns(111_111)),
            check(&[(0, 6)], 1),
            check(&[(0, 6)], 1),
        ],
    ]
}

pub(super) fn edge_scenarios() -> Vec<Vec<Op>> {
    let ms = Duration::from_millis;
    vec![
        // Errors: no limits, a key twice, a cost over a limit; nothing counted.
        vec![check(&[], 1), check(&[(0, 0), (1, 1), (0, 0)], 1), check(&[(2, 1)], 3), check(&[(2, 1)], 2)],
        // Denied anywhere counts nowhere, whichever key comes first.
        vec![check(&[(0, 0)], 1), check(&[(1, 1), (0, 0)], 1), check(&[(1, 1)], 2), check(&[(0, 0), (1, 1)], 1)],
        // The clock steps back across a window boundary: nothing is reset or forgotten.
        vec![
            Op::Advance(ms(900)),
            check(&[(0, 1)], 2),
            Op::Advance(ms(200)),
            check(&[(0, 1)], 1),
            Op::Rewind(ms(300)),
            check(&[(0, 1)], 1),
            check(&[(0, 1)], 0),
            Op::Advance(ms(300)),
            check(&[(0, 1)], 1),
            Op::Advance(ms(800)),
            check(&[(0, 1)], 1),
            Op::Advance(ms(200)),
            check(&[(0, 1)], 1),
        ],
        // A denied request is logged nowhere: 700ms later the log has forgotten the
        // allowed ones, and the denied one must not take their place.
        vec![check(&[(0, 1)], 2), Op::Advance(ms(400)), check(&[(0, 1)], 1), Op::Advance(ms(700)), check(&[(0, 1)], 2)],
        // A counter's previous window is only the one just before: after an idle
        // window, nothing is weighted.
        vec![
            check(&[(0, 1)], 2),
            Op::Advance(ms(1000)),
            Op::Advance(ms(1000)),
            check(&[(0, 1)], 2),
            Op::Advance(ms(1400)),
            check(&[(0, 1)], 1),
            Op::Advance(ms(100)),
            check(&[(0, 1)], 1),
        ],
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency and memory
// ---------------------------------------------------------------------------------

const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 150), (3, 4, 150), (4, 5, 80)], seed: 0x71d0 };

/// The quota of each key in concurrency histories: small limits, so histories hit
/// denials, and an odd-nanosecond window.
const CONCURRENT_QUOTAS: [u8; 4] = [0, 1, 2, 6];

/// One op of a concurrency history. Threads 0 and 1 also move the clock forward, on
/// and off window boundaries; requests name 1-3 keys in a random order.
fn concurrent_op(rng: &mut SplitMix, thread: usize) -> Op {
    if thread < 2 && rng.below(4) == 0 {
        return match rng.below(3) {
            0 => Op::Advance(Duration::from_millis(250)),
            1 => Op::Advance(Duration::from_nanos(333_333)),
            _ => Op::Advance(Duration::from_nanos(500_000_001)),
        };
    }
    let mut keys: Vec<u8> = (0..CONCURRENT_QUOTAS.len() as u8).collect();
    rng.shuffle(&mut keys);
    keys.truncate(1 + rng.below(3));
    let limits: Vec<(u8, u8)> = keys.iter().map(|&k| (k, CONCURRENT_QUOTAS[usize::from(k)])).collect();
    check(&limits, rng.below(3) as u32)
}

fn concurrent_case(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let clock = ManualClock::starting_at(START);
    let result = ALGORITHMS.iter().try_for_each(|&algorithm| {
        check_histories::<WindowLimitSpec, _>(
            &Config(algorithm),
            HISTORIES,
            concurrent_op,
            || {
                clock.set(START);
                build(make, algorithm, &clock)
            },
            |l, op| apply(l.as_ref(), &clock, op),
        )
    });
    set_forced_yields(false);
    result
}

/// Many threads on a shared tenant key through their own user keys at one instant:
/// exactly the tenant's limit passes, and no user more than its own.
fn exact_admission(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    for algorithm in ALGORITHMS {
        let clock = ManualClock::starting_at(START);
        let limiter = build(make, algorithm, &clock)?;
        let tenant = WindowQuota::new(40, Duration::from_secs(3600)).expect("valid");
        let user = WindowQuota::new(8, Duration::from_secs(3600)).expect("valid");
        let allowed = AtomicUsize::new(0);
        let per_user: Vec<AtomicUsize> = (0..THREADS).map(|_| AtomicUsize::new(0)).collect();
        let barrier = Barrier::new(THREADS);
        let outcomes: Vec<thread::Result<Result<(), LimitError>>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (limiter, allowed, per_user, barrier) = (&limiter, &allowed, &per_user, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        for _ in 0..20 {
                            let limits = [(Key(100 + t as u32), user), (Key(0), tenant)];
                            if limiter.check(&limits, 1)?.is_allowed() {
                                allowed.fetch_add(1, Ordering::SeqCst);
                                per_user[t].fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        for outcome in outcomes {
            match outcome {
                Err(p) => return Err(Panic::from_payload(p.as_ref()).into_case_error("check under contention")),
                Ok(Err(e)) => {
                    return Err(CaseError::failed(format!("check([user 8/1h, tenant 40/1h], 1) returned Err({e:?})")))
                }
                Ok(Ok(())) => {}
            }
        }
        let allowed = allowed.load(Ordering::SeqCst);
        let users: Vec<usize> = per_user.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        if allowed != 40 || users.iter().any(|&u| u > 8) {
            return Err(CaseError::failed(format!(
                "{algorithm:?}: {THREADS} threads × 20 checks of [user_t 8/1h, tenant 40/1h] at one instant: {allowed} \
                 allowed (expected exactly the tenant's 40), per user {users:?} (each at most 8)"
            )));
        }
    }
    Ok(())
}

/// The heap bound of the contract for `keys` live keys holding `entries` log entries.
fn heap_bound(keys: usize, entries: usize) -> usize {
    HEAP_SLACK + HEAP_PER_KEY * keys + HEAP_PER_LOG_ENTRY * entries
}

/// A flood of unique keys, each allowed one request: live heap must follow the keys
/// allowed something in the last 2·W, not every key ever seen.
fn flood_of_unique_keys(make: Factory) -> CaseResult {
    const PER_STEP: u32 = 2_000;
    const STEPS: u32 = 60;
    let step = Duration::from_millis(50);
    // W = 50ms: after each step's checks, the keys of this step and the one before
    // were allowed something in (now − 2W, now].
    let quota = WindowQuota::new(1, Duration::from_millis(50)).expect("valid");
    let live = 2 * PER_STEP as usize;
    let bound = heap_bound(live, live);
    for algorithm in ALGORITHMS {
        let clock = ManualClock::starting_at(START);
        let meter = HeapMeter::start();
        let limiter = build(make, algorithm, &clock)?;
        for round in 0..STEPS {
            for i in 0..PER_STEP {
                let key = Key(1_000 + round * PER_STEP + i);
                match limiter.check(&[(key, quota)], 1) {
                    Ok(WindowDecision::Allowed) => {}
                    other => {
                        return Err(CaseError::failed(format!(
                            "{algorithm:?}: the first check of fresh key {key:?} (quota 1/50ms) returned {other:?}"
                        )))
                    }
                }
            }
            let held = meter.held();
            if held > bound {
                return Err(CaseError::failed(format!(
                    "{algorithm:?}: after {} unique keys ({PER_STEP} every 50ms, one request each, W = 50ms) the limiter \
                     holds {} of heap: at most {live} keys had a request allowed in the last 2·W, so it may hold {} \
                     ({HEAP_PER_KEY} B per live key + {HEAP_PER_LOG_ENTRY} B per request in the last 2·W + {})",
                    (round + 1) * PER_STEP,
                    show_bytes(held),
                    show_bytes(bound),
                    show_bytes(HEAP_SLACK)
                )));
            }
            clock.advance(step);
        }
        drop(limiter);
    }
    Ok(())
}

/// One key checked every 50µs for 5s (limit 10 per 1ms): a log must forget what no
/// longer counts, holding at most the requests of the last 2·W.
fn log_is_pruned(make: Factory) -> CaseResult {
    let clock = ManualClock::starting_at(START);
    let meter = HeapMeter::start();
    let limiter = build(make, Algorithm::SlidingLog, &clock)?;
    let quota = WindowQuota::new(10, Duration::from_millis(1)).expect("valid");
    // 2·W = 40 checks, of which at most 20 allowed (10 per W).
    let bound = heap_bound(1, 20);
    for i in 0..100_000u32 {
        limiter.check(&[(Key(7), quota)], 1).map_err(|e| CaseError::failed(format!("check returned Err({e:?})")))?;
        clock.advance(Duration::from_micros(50));
        if i % 1_000 == 999 && meter.held() > bound {
            return Err(CaseError::failed(format!(
                "SlidingLog: one key (limit 10 per 1ms) checked every 50µs, {} checks: the limiter holds {} of heap; \
                 at most 20 of its requests were allowed in the last 2·W, so it may hold {} ({HEAP_PER_KEY} B + 20 × \
                 {HEAP_PER_LOG_ENTRY} B + {}). Entries that no longer count must be dropped",
                i + 1,
                show_bytes(meter.held()),
                show_bytes(bound),
                show_bytes(HEAP_SLACK)
            )));
        }
    }
    Ok(())
}

/// A burst of 30,000 requests on one key's log, then a request every 250ms: once the
/// burst is 2·W old, the log's buffer must have given its memory back (the contract
/// lets it hold at most four times its entries), not kept the burst's capacity.
fn log_gives_memory_back(make: Factory) -> CaseResult {
    const BURST: u32 = 30_000;
    let clock = ManualClock::starting_at(START);
    let meter = HeapMeter::start();
    let limiter = build(make, Algorithm::SlidingLog, &clock)?;
    // Room for the burst and every request after it: each check is allowed.
    let quota = WindowQuota::new(2 * BURST, Duration::from_secs(1)).expect("valid");
    let check = |what: &str| match limiter.check(&[(Key(9), quota)], 1) {
        Ok(WindowDecision::Allowed) => Ok(()),
        other => Err(CaseError::failed(format!("SlidingLog ({quota:?}): {what} returned {other:?}, expected Allowed"))),
    };
    for i in 0..BURST {
        check(&format!("request #{} of the burst (one every µs)", i + 1))?;
        clock.advance(Duration::from_micros(1));
    }
    // One request per 250ms: at most 8 allowed in any 2·W once the burst is over.
    let bound = heap_bound(1, 8);
    let step = Duration::from_millis(250);
    for n in 1..=16u32 {
        clock.advance(step);
        check(&format!("request #{n} after the burst"))?;
        let held = meter.held();
        // From 2·W after the burst's last request on, only the quiet requests count.
        if step * n >= 2 * quota.window() && held > bound {
            return Err(CaseError::failed(with_hint(
                format!(
                    "SlidingLog ({quota:?}): a burst of {BURST} requests (one per µs), then one request every 250ms; \
                     {:?} after the burst the limiter holds {} of heap: at most 8 of its requests were allowed in the \
                     last 2·W, so it may hold {} ({HEAP_PER_KEY} B + 8 × {HEAP_PER_LOG_ENTRY} B + {})",
                    step * n,
                    show_bytes(held),
                    show_bytes(bound),
                    show_bytes(HEAP_SLACK)
                ),
                "A VecDeque (or Vec) keeps its capacity when entries are popped: after a burst, the log holds the burst's \
                 memory for ever unless it is shrunk (e.g. shrink_to(len · 2) once len · 4 < capacity).",
            )));
        }
    }
    Ok(())
}

/// A log with a large limit and costly requests: one entry per request, not per unit.
fn one_entry_per_request(make: Factory) -> CaseResult {
    let clock = ManualClock::starting_at(START);
    let meter = HeapMeter::start();
    let limiter = build(make, Algorithm::SlidingLog, &clock)?;
    let quota = WindowQuota::new(1_000_000, Duration::from_secs(1)).expect("valid");
    let bound = heap_bound(1, 1_000);
    for i in 0..1_000u32 {
        match limiter.check(&[(Key(3), quota)], 1_000) {
            Ok(WindowDecision::Allowed) => {}
            other => {
                return Err(CaseError::failed(format!(
                    "SlidingLog: check #{} of cost 1000 against 1,000,000/1s returned {other:?}, expected Allowed",
                    i + 1
                )))
            }
        }
        clock.advance(Duration::from_micros(100));
    }
    let held = meter.held();
    if held > bound {
        return Err(CaseError::failed(format!(
            "SlidingLog: 1000 requests of cost 1000 (limit 1,000,000/1s): the limiter holds {} of heap, may hold {} \
             ({HEAP_PER_KEY} B + 1000 × {HEAP_PER_LOG_ENTRY} B + {}): a request is one log entry, whatever its cost",
            show_bytes(held),
            show_bytes(bound),
            show_bytes(HEAP_SLACK)
        )));
    }
    Ok(())
}

/// Housekeeping keeps what still counts: keys spend in one window, time moves on (see
/// the scenarios below), a flood of fresh keys makes any sweep run, and every first key
/// is read back against the model.
fn sweep_keeps_live_keys(make: Factory) -> CaseResult {
    const SURVIVORS: u32 = 2_048;
    const FLOOD: u32 = 20_000;
    let survivor = WindowQuota::new(4, Duration::from_millis(100)).expect("valid");
    let fresh = WindowQuota::new(1, Duration::from_millis(100)).expect("valid");
    // (when in its window each survivor spends, ms then waited, whether each survivor is
    // then checked at cost 0): into the next window, where what the survivors spent
    // still weighs (the counter's previous window, the log's last W); the same, with
    // each survivor's state rolled into the new window by a check that spends nothing;
    // and within the same window, where every algorithm still counts it.
    let scenarios = [
        ("90ms into a window", 90, 30, false),
        ("90ms into a window", 90, 30, true),
        ("10ms into a window", 10, 5, false),
    ];
    for algorithm in ALGORITHMS {
        for (when, at, wait, roll) in scenarios {
            let clock = ManualClock::starting_at(START);
            let limiter = build(make, algorithm, &clock)?;
            let mut logs: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
            let story = format!(
                "1. {SURVIVORS} keys k0..k{} spend 1..=4 of 4/100ms {when}; 2. clock.advance({wait}ms); {}{}. {FLOOD} fresh \
                 keys (1/100ms) spend their one request",
                SURVIVORS - 1,
                if roll { "3. each of k0.. is checked at cost 0; " } else { "" },
                if roll { 4 } else { 3 },
            );
            let mut run = |key: u32, q: WindowQuota, cost: u32, phase: &str| -> CaseResult {
                let now = clock.now().as_nanos();
                let log = logs.entry(key).or_default();
                let expected = if allows(algorithm, q, log, now, cost) {
                    WindowDecision::Allowed
                } else {
                    WindowDecision::Denied { limiting: 0 }
                };
                if expected.is_allowed() && cost > 0 {
                    log.push((now, cost));
                }
                match limiter.check(&[(Key(key), q)], cost) {
                    Ok(actual) if actual == expected => Ok(()),
                    actual => Err(CaseError::failed(format!(
                        "{algorithm:?}: {story}; then {phase}: check([(k{key}, {q:?})], cost {cost}) -> {actual:?}, \
                         expected {expected:?}. A key whose requests still count must not be swept"
                    ))),
                }
            };
            clock.advance(Duration::from_millis(at));
            for k in 0..SURVIVORS {
                run(k, survivor, 1 + k % 4, "spending")?;
            }
            clock.advance(Duration::from_millis(wait));
            if roll {
                for k in 0..SURVIVORS {
                    run(k, survivor, 0, "checking at cost 0")?;
                }
            }
            for k in SURVIVORS..SURVIVORS + FLOOD {
                run(k, fresh, 1, "flooding")?;
            }
            for k in 0..SURVIVORS {
                run(k, survivor, 1, "reading back")?;
            }
        }
    }
    Ok(())
}

pub const EXERCISE: &str = "window_limit";
pub const L1: Level = Level { number: 1, name: "one_key" };
pub const L2: Level = Level { number: 2, name: "many_keys" };
pub const L3: Level = Level { number: 3, name: "threads" };
pub const L4: Level = Level { number: 4, name: "memory" };
pub const L5: Level = Level { number: 5, name: "redis" };

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hints: Hints, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hints, deadline, move || run(make))
    };
    vec![
        case(L1, "fixed_window", Hints::new(
            "FixedWindow, one key: windows are [k·W, (k+1)·W) on the limiter's nanosecond timeline; a request passes iff the \
             cost already allowed in its window plus its own is at most the limit. A denied request counts nothing.",
            "A fixed window is a counter that resets at each boundary, and the boundary is an exact instant: the request at \
             k·W is the first of the new window.",
            "Per key: (window index, count). index = now / W; if it differs from the stored one, the count is 0; allowed iff \
             count + cost ≤ limit, then store (index, count + cost)."),
            QUICK, |make| one_algorithm(make, Algorithm::FixedWindow)),
        case(L1, "boundary_burst", Hints::new(
            "FixedWindow demonstrates its known flaw, and the grader requires it: `limit` requests 1ns before a boundary and \
             `limit` more at it all pass, 2·limit within 1ns.",
            "The algorithm is the contract: a fixed window forgets everything at the boundary. Smoothing that burst is what \
             the sliding algorithms are for, and a limiter asked for fixed windows must not slide.",
            "Count per aligned window (now / W), never over the last W before now."),
            QUICK, |make| boundary_burst_scenarios().iter().try_for_each(|ops| replay_on(make, Config(Algorithm::FixedWindow), ops))),
        case(L1, "sliding_log", Hints::new(
            "SlidingLog, one key: a request passes iff the cost of the requests allowed at times t with now − W < t ≤ now, \
             plus its own, is at most the limit. A request allowed at t stops counting exactly at t + W.",
            "A log is exact over every span of length W: it remembers each allowed request and when. The edge is half-open: \
             a request exactly W old no longer counts.",
            "Per key a deque of (time, cost), oldest first: pop entries with t ≤ now − W, sum the rest (or keep a running \
             sum), allowed iff sum + cost ≤ limit, then push (now, cost) as one entry."),
            QUICK, |make| one_algorithm(make, Algorithm::SlidingLog)),
        case(L1, "sliding_window_counter", Hints::new(
            "SlidingWindowCounter, one key: with e = now mod W, allowed iff prev·(W − e) + (cur + cost)·W ≤ limit·W, where \
             cur is the cost allowed in now's window and prev the cost allowed in the window just before (0 after an idle \
             window).",
            "The counter approximates the log by assuming the previous window's requests were spread evenly: it weights them \
             by how much of that window still overlaps the last W. It must be evaluated exactly: no float, no early division.",
            "Per key: (window index, prev, cur). On a new index: if it is the next one, prev = cur, else prev = 0; then cur = 0. \
             Compare prev·(W − e) + (cur + cost)·W with limit·W in u128."),
            QUICK, |make| one_algorithm(make, Algorithm::SlidingWindowCounter)),
        case(L1, "extreme_quotas", Hints::new(
            "Every algorithm at the edges of the domain: windows of 1ns and of odd nanoseconds, MAX_WINDOW, limits of \
             u32::MAX. Every answer stays exact.",
            "Products outgrow stored values: count × W reaches 2^94 for the counter, and a 64-bit float holds 53 bits, so \
             prev·(W − e)/W rounds.",
            "Integer nanoseconds throughout; the counter's comparison in u128, with no division."),
            QUICK, |make| {
                for algorithm in ALGORITHMS {
                    let config = Config(algorithm);
                    extreme_scenarios().iter().try_for_each(|ops| replay_on(make, config, ops))?;
                    exhaustive(&[config], |_| [6u8, 7, 8, 9].iter().flat_map(|&q| single_key_letters(q)).collect(), 3, admissible, |c, ops| {
                        replay_on(make, *c, ops)
                    })?;
                }
                Ok(())
            }),
        case(L2, "short_sequences", Hints::new(
            "A user, an endpoint and a tenant key in one request, every algorithm: it passes only if every key allows it, then \
             each counts it; a denied request counts nowhere. limiting is the first refusing key in the caller's order.",
            "All-or-nothing: the request is a transaction over several keys. The bug to avoid is a partial count: counting \
             the first keys before finding that a later one refuses.",
            "Two passes: decide every key first without changing anything, then record the request on every key only if all \
             allow it."),
            QUICK, |make| exhaustive(&ALGORITHMS.map(Config), |_| multi_key_letters(), 5, admissible, |c, ops| replay_on(make, *c, ops))),
        case(L2, "random_sequences", Hints::new(
            "Random requests over up to 3 of 5 keys in any order, every quota and algorithm, clock steps forward and back. A \
             clock that steps back changes nothing: no window is reset, no count forgotten.",
            "Monotonic time: the limiter's time is the high-water mark of the readings it has seen. Wall clocks step back \
             (NTP, VM migration); a window keyed by a raw reading would restart.",
            "now = max(clock.now(), latest), updated on every check; compute windows and log edges from that now."),
            QUICK, |make| {
                ALGORITHMS.iter().try_for_each(|&algorithm| {
                    let budget = Budget { cases: 128, ..Budget::default() };
                    random(random_ops(5, 3, QUOTAS.len() as u8, true, true), budget, |ops| replay_on(make, Config(algorithm), ops))
                })
            }),
        case(L2, "edges", Hints::new(
            "Edge cases for every algorithm: errors that change nothing (no limits, a key twice, a cost over a limit), \
             all-or-nothing in either key order, a clock that steps back across a window boundary, an idle window between \
             two counter windows.",
            "Validation before any state changes; the limiter's time never goes back; the counter's prev is the window just \
             before now's, not the last window that saw traffic.",
            "Call validate first; keep a latest time; when the counter's stored index is two or more windows old, prev = 0."),
            QUICK, |make| {
                ALGORITHMS.iter().try_for_each(|&algorithm| {
                    edge_scenarios().iter().try_for_each(|ops| replay_on(make, Config(algorithm), ops))
                })
            }),
        case(L3, "linearizable", Hints::new(
            "Concurrent checks on overlapping keys, named in any order, while the clock moves, every algorithm: every result \
             must be explained by some one-at-a-time order of the calls.",
            "Check-then-act over several keys: reading the counts, deciding and recording must be one critical section \
             covering all the request's keys, with the time read inside it.",
            "Lock every key (or shard) a request names in one global order, read the clock with the locks held, decide, \
             record, unlock. One Mutex around the whole map also works."),
            THREADED, concurrent_case),
        case(L3, "exact_admission", Hints::new(
            "8 threads hammer a shared tenant key through their own user keys at one instant: exactly the tenant's limit \
             passes, and no user more than its own, under every algorithm.",
            "Two threads that both see room for one more and both record it admit one request too many.",
            "Make read-decide-record one critical section over all the request's keys."),
            THREADED, exact_admission),
        case(L4, "flood_of_unique_keys", Hints::new(
            "A flood of unique keys, one request each, every algorithm: live heap must follow the keys with a request allowed \
             in the last 2·W (HEAP_PER_KEY each, HEAP_PER_LOG_ENTRY per such request, plus HEAP_SLACK), not every key seen.",
            "A key with nothing allowed in the last 2·W answers exactly as a fresh key under all three algorithms, so it can \
             be forgotten.",
            "Sweep the map when it has doubled since the last sweep (amortised O(1) per check), dropping keys whose state can \
             no longer count; or keep a time-ordered queue of candidates."),
            THREADED, flood_of_unique_keys),
        case(L4, "log_is_pruned", Hints::new(
            "One key checked every 50µs for 5 seconds with a sliding log: the log must hold only what can still count.",
            "A log grows with every allowed request; entries older than W can never count again.",
            "Pop entries with t ≤ now − W from the front of the deque on every check of the key."),
            THREADED, log_is_pruned),
        case(L4, "one_entry_per_request", Hints::new(
            "A sliding log with limit 1,000,000 and requests of cost 1000: memory follows the requests, not the units.",
            "A request of cost c is one event of weight c; logging c timestamps makes memory proportional to the limit.",
            "Log (time, cost) pairs and keep a running sum of the costs in the window."),
            THREADED, one_entry_per_request),
        case(L4, "log_gives_memory_back", Hints::new(
            "A sliding log takes a burst of 30,000 requests on one key, then one request every 250ms: 2·W after the burst \
             the limiter holds at most HEAP_SLACK + HEAP_PER_KEY + 8 × HEAP_PER_LOG_ENTRY (a log's buffer may hold up to \
             four times its entries).",
            "Popping entries from a VecDeque or Vec does not give memory back: the buffer keeps the capacity of the \
             largest burst it ever held.",
            "After pruning, if the buffer is mostly empty (len · 4 < capacity, above a small minimum), shrink_to(len · 2): \
             amortised O(1), since it takes as many pops as the buffer shrinks by."),
            THREADED, log_gives_memory_back),
        case(L4, "sweep_keeps_live_keys", Hints::new(
            "Thousands of keys spend in one window; time moves into the next (or stays in the same window; or moves on and \
             each key is checked at cost 0, which rolls its state into the new window); a flood of fresh keys makes any \
             sweep run, and every first key is read back: what still counts must still be there.",
            "A key is forgettable only when nothing it holds can count: for the counter, its previous window still weighs in \
             the next one; for the log, entries count for a whole W.",
            "Sweep a key only when its last allowed request is at least 2·W old (counter: its window index is two or more \
             behind now's; log: its newest entry ≤ now − W; fixed window: its index is behind now's)."),
            THREADED, sweep_keeps_live_keys),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn every_graded_sequence_keeps_each_key_on_one_quota_and_time_in_domain() {
        for ops in edge_scenarios().into_iter().chain(boundary_burst_scenarios()).chain(extreme_scenarios()) {
            assert!(admissible(&ops), "{ops:?}");
        }
        assert!(!admissible(&[check(&[(0, 0)], 1), check(&[(0, 1)], 1)]));
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..200 {
            let ops = random_ops(5, 3, QUOTAS.len() as u8, true, true).new_tree(&mut runner).unwrap().current();
            assert!(admissible(&ops), "{ops:?}");
        }
    }

    #[test]
    fn the_boundary_burst_lets_two_limits_through_on_the_model() {
        use crate::sequential::Spec;
        let mut model = WindowLimitSpec::model(&Config(Algorithm::FixedWindow));
        let outputs: Vec<Output> =
            boundary_burst_scenarios()[0].iter().map(|op| WindowLimitSpec::step(&mut model, op)).collect();
        let allowed = outputs.iter().filter(|o| matches!(o, Output::Decided(Ok(WindowDecision::Allowed)))).count();
        assert_eq!(allowed, 2, "two checks of cost 2 (the limit) pass, 1ns apart: {outputs:?}");
        let mut sliding = WindowLimitSpec::model(&Config(Algorithm::SlidingLog));
        let outputs: Vec<Output> =
            boundary_burst_scenarios()[0].iter().map(|op| WindowLimitSpec::step(&mut sliding, op)).collect();
        let allowed = outputs.iter().filter(|o| matches!(o, Output::Decided(Ok(WindowDecision::Allowed)))).count();
        assert_eq!(allowed, 1, "a log lets only one through: {outputs:?}");
    }
}
