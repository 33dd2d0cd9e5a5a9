//! The graded suite of the rate-limit exercise, levels 1-4: generated op sequences
//! replayed against the model, concurrency histories, and memory on the real heap.
//! Level 5 (Redis) is in `redis.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::contract::{Decision, LimitError, Quota, HEAP_PER_BUCKET, HEAP_SLACK, NANOS_LIMIT};
use super::model::{quota, Config, Op, Output, RateLimitSpec, Shadow, QUOTAS, START};
use super::{ErasedLimiter, Factory};
use crate::clock::{Clock, ManualClock};
use crate::heap::{show_bytes, HeapMeter};
use crate::linearizability::{check_histories, set_forced_yields, HistoryBudget, Key, SplitMix};
use crate::sequential::{exhaustive, random, replay, Budget};
use crate::suite::{
    guarded, Case, CaseError, CaseResult, Hints, Level, Panic, QUICK_DEADLINE as QUICK, THREADED_DEADLINE as THREADED,
};

fn apply(limiter: &dyn ErasedLimiter, clock: &ManualClock, op: &Op) -> Output {
    match op {
        Op::Check { limits, cost } => {
            let limits: Vec<(Key, Quota)> = limits.iter().map(|&(k, q)| (Key(k.into()), quota(q))).collect();
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

fn build(make: Factory, clock: &ManualClock) -> Result<Arc<dyn ErasedLimiter>, CaseError> {
    guarded(|| make(clock.shared())).map_err(|p| p.into_case_error(format!("{Config:?}")))
}

fn replay_on(make: Factory, ops: &[Op]) -> CaseResult {
    replay::<RateLimitSpec, _>(&Config, ops, |_| {
        let clock = ManualClock::starting_at(START);
        let limiter = make(clock.shared());
        move |op: &Op| apply(limiter.as_ref(), &clock, op)
    })
}

// Inputs
// ---------------------------------------------------------------------------------

pub(super) fn check(limits: &[(u8, u8)], cost: u32) -> Op {
    Op::Check { limits: limits.to_vec(), cost }
}

/// Whether every key in `ops` is always named with the same quota: the contract binds a
/// key to one quota, so no generated sequence ever changes it.
fn quotas_fixed(ops: &[Op]) -> bool {
    let mut bound = BTreeMap::new();
    ops.iter().all(|op| match op {
        Op::Check { limits, .. } => limits.iter().all(|&(k, q)| *bound.entry(k).or_insert(q) == q),
        _ => true,
    })
}

/// Whether the test clock stays below [`NANOS_LIMIT`], the contract's time domain.
fn within_time_domain(ops: &[Op]) -> bool {
    let mut clock = u128::from(START.as_nanos());
    ops.iter().all(|op| {
        if let Op::Advance(d) = op {
            clock += d.as_nanos();
        }
        clock < u128::from(NANOS_LIMIT)
    })
}

/// What generated sequences must satisfy: inside the contract's domain.
fn admissible(ops: &[Op]) -> bool {
    quotas_fixed(ops) && within_time_domain(ops)
}

/// One bucket, quota `q`: every cost from peek to over-burst (the whole burst when it
/// is large), and clock steps that land both on and between refill boundaries.
fn single_bucket_letters(q: u8) -> Vec<Op> {
    let burst = quota(q).burst();
    let period = quota(q).period();
    let mut costs = vec![0, 1, burst.min(2)];
    if burst > 3 {
        costs.push(burst);
    }
    costs.extend(burst.checked_add(1));
    costs.dedup();
    let mut ops: Vec<Op> = costs.into_iter().map(|cost| check(&[(0, q)], cost)).collect();
    ops.push(Op::Advance((period * 2 / 5).max(Duration::from_nanos(1))));
    ops.push(Op::Advance(period));
    ops
}

/// A user (1/s), an endpoint (2/s) and a tenant (3 per 500ms) checked together and
/// apart, listed in different orders.
fn multi_bucket_letters() -> Vec<Op> {
    vec![
        check(&[(0, 0), (1, 1), (2, 2)], 1),
        check(&[(2, 2), (1, 1)], 1),
        check(&[(2, 2)], 2),
        check(&[(1, 1), (2, 2), (0, 0)], 0),
        Op::Advance(Duration::from_millis(500)),
    ]
}

/// Clock steps: whole milliseconds and microseconds, plus (`fine`) odd nanoseconds and
/// steps of up to a year.
fn clock_steps(fine: bool, max_ms: u64) -> BoxedStrategy<Duration> {
    let ms = (1..=max_ms).prop_map(Duration::from_millis);
    let us = (1u64..=5_000).prop_map(Duration::from_micros);
    if fine {
        let ns = (1u64..=2_000_000_000).prop_map(Duration::from_nanos);
        let years = (1u64..=365 * 24 * 3600).prop_map(Duration::from_secs);
        prop_oneof![3 => ms, 1 => us, 2 => ns, 1 => years].boxed()
    } else {
        prop_oneof![3 => ms, 1 => us].boxed()
    }
}

/// Random sequences over `keys` keys, up to `max_limits` per request in a random order,
/// quotas drawn from `QUOTAS[..quotas]`. A key keeps the quota it was first named with
/// (the contract binds a key to one quota); costs run from peeks to the whole burst and
/// one past it.
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
    // Costs: 0-6 as drawn (small), 7 = the smallest burst, 8 = one less, 9 = one more.
    let check = (limits, 0u32..=9).prop_map(|(limits, cost)| Op::Check { limits, cost });
    let advance = clock_steps(fine, 1200).prop_map(Op::Advance);
    let rewind = clock_steps(false, 800).prop_map(Op::Rewind);
    let op = if rewinds {
        prop_oneof![6 => check, 3 => advance, 1 => rewind].boxed()
    } else {
        prop_oneof![6 => check, 3 => advance].boxed()
    };
    proptest::collection::vec(op, 1..=40).prop_map(normalise)
}

/// Binds each key to the quota it is first named with, and turns cost codes into costs
/// relative to the request's smallest burst (see [`random_ops`]).
fn normalise(mut ops: Vec<Op>) -> Vec<Op> {
    let mut bound = BTreeMap::new();
    for op in &mut ops {
        if let Op::Check { limits, cost } = op {
            for (k, q) in limits.iter_mut() {
                *q = *bound.entry(*k).or_insert(*q);
            }
            let burst = limits.iter().map(|&(_, q)| quota(q).burst()).min().unwrap_or(1);
            *cost = match *cost {
                7 => burst,
                8 => burst - 1,
                9 => burst.saturating_add(1),
                small => small.min(4),
            };
        }
    }
    ops
}

pub(super) fn edge_scenarios() -> Vec<Vec<Op>> {
    let ms = Duration::from_millis;
    let ns = Duration::from_nanos;
    vec![
        // A fresh key allows exactly its burst at one instant.
        vec![
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
            check(&[(0, 3)], 1),
        ],
        // cost == burst on a fresh key passes; cost > burst is an error that consumes nothing.
        vec![check(&[(0, 1)], 3), check(&[(0, 1)], 2), check(&[(0, 1)], 0)],
        // Errors: no limits, duplicate key; nothing consumed.
        vec![check(&[], 1), check(&[(0, 0), (1, 1), (0, 0)], 1), check(&[(0, 0)], 1)],
        // Exactly at the refill boundary the token is there; 1ns before it is not.
        vec![
            check(&[(0, 0)], 1),
            Op::Advance(ns(999_999_999)),
            check(&[(0, 0)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 0)], 1),
        ],
        // The clock steps back: the limiter keeps its latest time, so nothing changes
        // (no tokens minted, no debt added) until the clock passes that time again.
        vec![
            check(&[(0, 1)], 2),
            Op::Advance(ms(1500)),
            check(&[(0, 1)], 1),
            Op::Rewind(ms(1000)),
            check(&[(0, 1)], 0),
            check(&[(0, 1)], 1),
            Op::Advance(ms(1000)),
            check(&[(0, 1)], 1),
            Op::Advance(ms(500)),
            check(&[(0, 1)], 1),
        ],
        // Denied anywhere consumes nothing everywhere, whichever bucket comes first.
        vec![check(&[(0, 0)], 1), check(&[(1, 1), (0, 0)], 1), check(&[(1, 1)], 2), check(&[(0, 0), (1, 1)], 1)],
        // A long period: retry_after and reset_after in hours without overflow.
        vec![check(&[(0, 4)], 10), check(&[(0, 4)], 1), Op::Advance(Duration::from_secs(59)), check(&[(0, 4)], 1)],
        // An odd-nanosecond period: the refill boundary to the nanosecond.
        vec![
            check(&[(0, 8)], 3),
            check(&[(0, 8)], 1),
            Op::Advance(ns(333_332)),
            check(&[(0, 8)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 8)], 1),
            Op::Advance(ns(666_666)),
            check(&[(0, 8)], 3),
            check(&[(0, 8)], 2),
        ],
        // The largest burst, refilled every nanosecond: the whole burst at once, then
        // exact waits of a few nanoseconds, and a whole-burst wait.
        vec![
            check(&[(0, 9)], u32::MAX),
            check(&[(0, 9)], 1),
            check(&[(0, 9)], 0),
            Op::Advance(ns(3)),
            check(&[(0, 9)], 3),
            check(&[(0, 9)], u32::MAX),
            Op::Advance(ns(4_294_967_294)),
            check(&[(0, 9)], u32::MAX),
        ],
        // τ just under 2^63 ns: a bucket in debt plus the cost passes u64::MAX, and the
        // answers are still exact.
        vec![
            check(&[(0, 10)], 2),
            check(&[(0, 10)], 2),
            check(&[(0, 10)], 1),
            check(&[(0, 10)], 0),
            Op::Advance(ns(4_611_686_018_427_387_902)),
            check(&[(0, 10)], 1),
            Op::Advance(ns(1)),
            check(&[(0, 10)], 2),
            check(&[(0, 10)], 1),
        ],
        // The longest quota and the largest burst with τ near 2^63, beside a 1s bucket.
        vec![
            check(&[(0, 12), (1, 11)], 1),
            check(&[(1, 11), (0, 12)], 1),
            check(&[(1, 11)], u32::MAX),
            check(&[(1, 11)], u32::MAX - 1),
            check(&[(2, 0), (1, 11), (0, 12)], 0),
            Op::Advance(ns(3 * 2_147_483_647)),
            check(&[(1, 11), (2, 0)], 1),
            check(&[(1, 11)], 2),
            check(&[(1, 11)], 1),
        ],
    ]
}

// ---------------------------------------------------------------------------------
// Concurrency and memory
// ---------------------------------------------------------------------------------

const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 400), (3, 4, 400), (4, 5, 200)], seed: 0x1eaf };

/// The quota of each key in concurrency histories (a key keeps its quota): small
/// bursts, so histories hit denials, and an odd-nanosecond period.
const CONCURRENT_QUOTAS: [u8; 4] = [0, 1, 2, 8];

/// One op of a concurrency history. Threads 0 and 1 also move the clock forward, by
/// steps on and off refill boundaries, so clock moves race with other threads' checks
/// (a check must read the time with its buckets locked). Steps back stay in the
/// sequential cases: a check racing with one may use the time it read before it (see
/// the trait), which no single global order explains. Requests name 1-3 keys in a
/// random order each time: a limiter that locks buckets in request order deadlocks.
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
    histories_case(make, HISTORIES, concurrent_op)
}

/// Concurrent histories of ops drawn by `pick`, each history from a fresh limiter with
/// the clock at `START` (where the model starts), with forced yields at lock boundaries.
fn histories_case(make: Factory, budget: HistoryBudget, pick: fn(&mut SplitMix, usize) -> Op) -> CaseResult {
    set_forced_yields(true);
    let clock = ManualClock::starting_at(START);
    let result = check_histories::<RateLimitSpec, _>(
        &Config,
        budget,
        pick,
        || {
            clock.set(START);
            build(make, &clock)
        },
        |l, op| apply(l.as_ref(), &clock, op),
    );
    set_forced_yields(false);
    result
}

/// Histories for `clock_moves`: one or two buckets with refills of a second or less,
/// single-key checks, and half of threads 0 and 1's ops moving the clock by steps that
/// land on and beside refill boundaries. The time a check decides at matters in most
/// histories, so a check that read the clock before locking (and then decides at a
/// time older than a decision already made on its bucket) shows in a few of them.
const CLOCK_HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 600), (3, 4, 600)], seed: 0xc10c };

fn clock_moves_op(rng: &mut SplitMix, thread: usize) -> Op {
    if thread < 2 && rng.below(2) == 0 {
        return match rng.below(3) {
            0 => Op::Advance(Duration::from_millis(250)),
            1 => Op::Advance(Duration::from_nanos(500_000_001)),
            _ => Op::Advance(Duration::from_millis(1000)),
        };
    }
    // Quotas 0 (1 per second) and 2 (3 per 500ms).
    let key = if rng.below(3) == 0 { 2 } else { 0 };
    check(&[(key, key)], 1)
}

fn clock_moves(make: Factory) -> CaseResult {
    histories_case(make, CLOCK_HISTORIES, clock_moves_op)
}

/// Many threads on shared buckets at one instant: exactly the burst passes, and
/// all-or-nothing holds under contention.
fn exact_admission(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    let tenant = Quota::new(40, Duration::from_secs(3600)).expect("valid");
    let user = Quota::new(8, Duration::from_secs(3600)).expect("valid");
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
                        if limiter.check(&limits, 1)?.allowed {
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
            "{THREADS} threads × 20 checks of [user_t 8/1h, tenant 40/1h] at one instant: {allowed} allowed \
             (expected exactly the tenant's 40), per user {users:?} (each at most 8)"
        )));
    }
    Ok(())
}

/// A flood of unique keys, each spending its one token: live heap must follow the keys
/// still in debt ([`HEAP_PER_BUCKET`] each, plus [`HEAP_SLACK`]), not every key ever seen.
fn flood_of_unique_keys(make: Factory) -> CaseResult {
    const PER_STEP: u32 = 2_000;
    const STEPS: u32 = 60;
    let step = Duration::from_millis(50);
    let clock = ManualClock::starting_at(START);
    // Measured from before the limiter is built: everything it holds counts.
    let meter = HeapMeter::start();
    let limiter = build(make, &clock)?;
    // Each key is in debt for 100ms after its request; steps are 50ms apart, so at
    // most the last two steps' keys (4,000) are in debt at any time.
    let quota = Quota::new(1, Duration::from_millis(100)).expect("valid");
    let in_debt = 2 * PER_STEP as usize;
    let bound = HEAP_PER_BUCKET * in_debt + HEAP_SLACK;
    for round in 0..STEPS {
        for i in 0..PER_STEP {
            let key = Key(1_000 + round * PER_STEP + i);
            match limiter.check(&[(key, quota)], 1) {
                Ok(d) if d.allowed => {}
                other => {
                    return Err(CaseError::failed(format!(
                        "the first check of fresh key {key:?} (quota 1/100ms) returned {other:?}"
                    )))
                }
            }
        }
        let held = meter.held();
        if held > bound {
            return Err(CaseError::failed(format!(
                "after {} unique keys ({PER_STEP} every 50ms, each in debt for 100ms) the limiter holds {} of heap: \
                 at most {in_debt} buckets are not full, so it may hold {} ({HEAP_PER_BUCKET} B per bucket in debt + {})",
                (round + 1) * PER_STEP,
                show_bytes(held),
                show_bytes(bound),
                show_bytes(HEAP_SLACK)
            )));
        }
        clock.advance(step);
    }
    Ok(())
}

/// Buckets in debt survive any housekeeping: thousands of buckets are spent to various
/// depths, time moves so that some are full again and some only partly refilled, a
/// flood of fresh keys makes any sweep (by size, by count, by time) run many times, and
/// then every first bucket is read back (a peek, then a check) against the model.
fn sweep_keeps_buckets_in_debt(make: Factory) -> CaseResult {
    const SURVIVORS: u32 = 4_096;
    const FLOOD: u32 = 50_000;
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    // Survivors: 5/100ms (full again or 1-4 tokens back after 150ms), 3/333_333ns (full
    // again), 10/60s (still in debt); the flood: 1/1s.
    let survivor_quota = |k: u32| quota([3, 8, 4][(k % 3) as usize]);
    let flood_quota = quota(0);
    let mut shadow = Shadow::default();
    let mut story: Vec<String> = Vec::new();
    let run = |shadow: &mut Shadow, story: &[String], key: u32, q: Quota, cost: u32, phase: &str| -> CaseResult {
        let limits = [(Key(key), q)];
        let actual = limiter.check(&limits, cost);
        let expected = shadow.check(clock.now(), key, q, cost);
        if actual != expected {
            return Err(CaseError::failed(format!(
                "{}\n{phase}: check([(k{key}, {q:?})], cost {cost}) -> {}\n      expected {}   <-- first difference\n\
                 a bucket that is not full must never be dropped: it would come back full",
                story.join("\n"),
                show(&actual),
                show(&expected)
            )));
        }
        Ok(())
    };
    story.push(format!("limiter = Limiter::new(clock), clock at {START:?}"));
    for k in 0..SURVIVORS {
        let q = survivor_quota(k);
        run(&mut shadow, &story, k, q, 1 + k % q.burst(), "spending")?;
    }
    story.push(format!(
        "1. {SURVIVORS} keys k0..k{} spend 1..=burst tokens each, quotas 5/100ms, 3/333.333µs, 10/60s in turn",
        SURVIVORS - 1
    ));
    clock.advance(Duration::from_millis(150));
    story.push("2. clock.advance(150ms): some buckets are full again, others only partly refilled".into());
    for k in SURVIVORS..SURVIVORS + FLOOD {
        run(&mut shadow, &story, k, flood_quota, 1, "flooding")?;
    }
    story.push(format!("3. {FLOOD} fresh keys spend their one token (quota 1/1s)"));
    story.push("4. every key of step 1 is read back, a peek then a check of cost 1:".into());
    for k in 0..SURVIVORS {
        let q = survivor_quota(k);
        run(&mut shadow, &story, k, q, 0, "reading back")?;
        run(&mut shadow, &story, k, q, 1, "reading back")?;
    }
    Ok(())
}

/// Sweeps racing checks: each round, 4 threads hit a fresh shared bucket (3/1ms) three
/// times each, with three fresh single-use keys (1/1ms) in either order, between checks
/// of three fresh keys alone, so the limiter's map keeps growing and its sweeps run
/// while other threads are mid-check; between rounds the clock moves 2ms, so earlier buckets fill
/// up and become sweepable. Exactly 3 of each round's 12 checks of the shared bucket
/// may pass: a sweep that drops a bucket another check is about to pay into loses that
/// payment.
fn sweep_under_contention(make: Factory) -> CaseResult {
    const THREADS: u32 = 4;
    const ROUNDS: u32 = 1200;
    const PER_THREAD: u32 = 3;
    let clock = ManualClock::starting_at(START);
    let limiter = build(make, &clock)?;
    let shared = Quota::new(3, Duration::from_millis(1)).expect("valid");
    let single = Quota::new(1, Duration::from_millis(1)).expect("valid");
    let allowed: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
    let barrier = Barrier::new(THREADS as usize);
    set_forced_yields(true);
    let outcomes: Vec<thread::Result<Result<(), String>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (limiter, allowed, barrier, clock) = (&limiter, &allowed, &barrier, &clock);
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        barrier.wait();
                        for i in 0..2 * PER_THREAD {
                            let fresh = 1_000_000 + ((round * THREADS + t) * 2 * PER_THREAD + i) * 3;
                            let mut limits: Vec<(Key, Quota)> = (fresh..fresh + 3).map(|k| (Key(k), single)).collect();
                            // Every other check names the shared bucket too (first or last), so
                            // sweeps run at the end of checks that do not hold it.
                            let names_shared = (t + i) % 2 == 0;
                            if names_shared {
                                limits.insert(if (t + i) % 4 == 0 { 0 } else { 3 }, (Key(round), shared));
                            }
                            let _in_flight = crate::watchdog::InFlight::new(format!(
                                "check({limits:?}, 1) (thread {t}, round {round})"
                            ));
                            match limiter.check(&limits, 1) {
                                Ok(d) if d.allowed && names_shared => {
                                    allowed[round as usize].fetch_add(1, Ordering::SeqCst);
                                }
                                Ok(d) if d.allowed || names_shared => {}
                                other => return Err(format!("check({limits:?}, 1) returned {other:?}")),
                            }
                        }
                        if barrier.wait().is_leader() {
                            clock.advance(Duration::from_millis(2));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    set_forced_yields(false);
    for outcome in outcomes {
        match outcome {
            Err(p) => return Err(Panic::from_payload(p.as_ref()).into_case_error("check under contention")),
            Ok(Err(e)) => return Err(CaseError::failed(e)),
            Ok(Ok(())) => {}
        }
    }
    let counts: Vec<usize> = allowed.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    if let Some((round, &count)) = counts.iter().enumerate().find(|(_, &c)| c != 3) {
        return Err(CaseError::failed(format!(
            "round {round}: {THREADS} threads each checked k{round} (3/1ms) {PER_THREAD} times at one instant, each time with three \
             fresh 1/1ms keys, between checks of fresh keys alone, while sweeps ran (the clock moves 2ms between rounds, so earlier buckets are full): {count} allowed, \
             expected exactly k{round}'s burst, 3. A bucket must not be forgotten while another check is paying into it: \
             that payment would be lost"
        )));
    }
    Ok(())
}

fn show(result: &Result<Decision, LimitError>) -> String {
    match result {
        Ok(d) => format!("{d:?}"),
        Err(e) => format!("Err({e:?})"),
    }
}

pub const EXERCISE: &str = "rate_limit";
pub const L1: Level = Level { number: 1, name: "single_bucket" };
pub const L2: Level = Level { number: 2, name: "multi_bucket" };
pub const L3: Level = Level { number: 3, name: "threads" };
pub const L4: Level = Level { number: 4, name: "memory" };
pub const L5: Level = Level { number: 5, name: "redis" };

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hints: Hints, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hints, deadline, move || run(make))
    };
    vec![
        case(L1, "short_sequences", Hints::new(
            "One bucket, quota (burst B, period T): a fresh key holds B tokens, one token comes back every T, and a request of \
             cost c passes iff c whole tokens are there, then takes them. remaining, retry_after and reset_after are exact.",
            "A bucket is a debt that time pays back: what matters is how far its spending runs ahead of now, at most B·T (τ). \
             Refill is continuous, so a refill boundary is an exact instant: the token is there at it, not 1ns before.",
            "GCRA: one number per key, the theoretical arrival time (TAT). tat = max(stored, now); allowed iff \
             tat + cost·T ≤ now + B·T, then store tat + cost·T; remaining = ⌊(now + B·T − tat)/T⌋. (Credit + last refill \
             is equivalent but must carry the remainder of a partial refill.)"),
            QUICK, |make| exhaustive(&[0u8, 1, 2], |&q| single_bucket_letters(q), 6, admissible, |_, ops| replay_on(make, ops))),
        case(L1, "extreme_quotas", Hints::new(
            "The single-bucket rules at the edges of the domain: periods of one or an odd number of nanoseconds, a million-token \
             burst, bursts of u32::MAX, and τ = burst × period just under NANOS_LIMIT. Every answer stays exact.",
            "Intermediate values outgrow stored ones: a bucket's time fits a u64 but time + cost × period may not. Overflow \
             panics in a debug build and wraps in release; floating point loses nanoseconds.",
            "Integer nanoseconds throughout; compute tat + cost·T in u128, or rearrange so nothing overflows: allowed iff \
             tat.saturating_sub((B − cost)·T) ≤ now."),
            QUICK, |make| {
                exhaustive(&[6u8, 7, 8, 9, 10, 11, 12], |&q| single_bucket_letters(q), 4, admissible, |_, ops| replay_on(make, ops))
            }),
        case(L1, "random_sequences", Hints::new(
            "Longer random sequences on one or two buckets, every quota, clock steps from a nanosecond to a year: retry_after is \
             the exact wait after which the same request passes (it is denied 1ns earlier).",
            "retry_after is a boundary, so exactness is all-or-nothing: a token count refilled in rounded steps drifts by a \
             nanosecond here and there, and the boundary moves.",
            "Derive every number from the one stored TAT: retry_after = tat + cost·T − B·T − now for the refusing bucket (in \
             u128 or rearranged), never from counters that accumulate rounding."),
            QUICK, |make| random(random_ops(2, 1, QUOTAS.len() as u8, false, true), Budget::default(), |ops| replay_on(make, ops))),
        case(L2, "short_sequences", Hints::new(
            "A user, an endpoint and a tenant bucket in one request: it passes only if every bucket has the tokens, then each pays; \
             a denied request takes nothing from any bucket. retry_after is the longest of the refusing buckets' waits, and \
             limiting indexes the request in the caller's order.",
            "All-or-nothing: the request is a transaction over several buckets. The bug to avoid is a partial payment: paying \
             the first buckets before finding that a later one refuses.",
            "Two passes: decide every bucket first (compute each new TAT without storing it), then store them all only if all \
             conform. Report the smallest remaining and the longest retry_after with their positions in the caller's order."),
            QUICK, |make| exhaustive(&[Config], |_| multi_bucket_letters(), 6, admissible, |_, ops| replay_on(make, ops))),
        case(L2, "random_sequences", Hints::new(
            "Random requests over up to 3 of 5 keys in any order, every quota, clock steps forward and back. A clock that steps \
             back changes nothing: no tokens come back and no debt is added until it passes the latest time already seen.",
            "Monotonic time: the limiter's time is the high-water mark of the readings it has seen. Wall clocks step back (NTP, \
             VM migration); trusting them would refill, or un-refill, buckets.",
            "now = max(clock.now(), latest), and store the new latest on every check; compare each bucket's TAT with that now."),
            QUICK, |make| random(random_ops(5, 3, QUOTAS.len() as u8, true, true), Budget::default(), |ops| replay_on(make, ops))),
        case(L2, "edges", Hints::new(
            "Edge cases: exactly the burst at one instant, the refill boundary (allowed at it, denied 1ns before), cost-0 peeks, \
             errors that change nothing (no limits, a key twice, a cost above a burst), a clock that steps back, hour-long and \
             odd-nanosecond periods, bursts of u32::MAX and quotas just under NANOS_LIMIT.",
            "Boundaries are where off-by-ones live: ≤ versus <, a token present at its boundary instant, validation before any \
             state changes, arithmetic at the top of the domain.",
            "Call validate first and return its error untouched; decide with ≤ at the boundary (allowed iff tat + cost·T ≤ \
             now + B·T); a peek runs the same decision and stores nothing."),
            QUICK, |make| edge_scenarios().iter().try_for_each(|ops| replay_on(make, ops))),
        case(L3, "linearizable", Hints::new(
            "Concurrent checks on overlapping buckets, named in any order, while the clock moves: every result must be explained \
             by some one-at-a-time order of the calls, each check deciding at one instant.",
            "Atomicity over several keys: reading, deciding and paying must be one critical section covering all the request's \
             buckets, with the time read inside it. Two requests taking the same resources in opposite orders can deadlock.",
            "Lock every bucket (or shard) a request names in one global order, e.g. sorted by shard index, never the request's \
             order; read the clock with the locks held; decide, apply, unlock. One Mutex around the whole map also works, slower."),
            THREADED, concurrent_case),
        case(L3, "clock_moves", Hints::new(
            "Concurrent checks on one or two buckets while other threads move the clock across refill boundaries: every \
             result must be explained by some one-at-a-time order, each check deciding at the time it reads with its \
             buckets locked.",
            "A time read before the lock is stale once the lock is taken: another thread may meanwhile have moved the clock \
             and decided on the same bucket at the newer time, and this check then decides in the past.",
            "Read the clock after taking the locks, in the same critical section that decides and pays (see L3 \
             linearizable)."),
            THREADED, clock_moves),
        case(L3, "exact_admission", Hints::new(
            "8 threads hammer a shared tenant bucket through their own user buckets at one instant: exactly the tenant's burst \
             passes in all, and no user more than its own burst.",
            "Check-then-act race: two threads that both see the last token and both take it admit one request too many.",
            "Make read-decide-write one critical section over all the request's buckets (see L3 linearizable); an atomic per \
             bucket alone cannot make a payment into several buckets all-or-nothing."),
            THREADED, exact_admission),
        case(L4, "flood_of_unique_keys", Hints::new(
            "A flood of unique keys, each spending a token: live heap must follow the buckets in debt (HEAP_PER_BUCKET bytes \
             each, plus HEAP_SLACK), not every key ever seen. The grader measures real heap bytes.",
            "A full bucket carries no information: it answers exactly as a bucket never seen, so it can be forgotten. Memory then \
             follows the keys that spent tokens within the last burst window.",
            "Drop buckets whose TAT ≤ now: sweep the map when it has doubled since the last sweep (amortised O(1) per check), or \
             keep a time-ordered queue of candidates. A table may keep the capacity its peak needed."),
            THREADED, flood_of_unique_keys),
        case(L4, "sweep_under_contention", Hints::new(
            "Housekeeping races checks: 4 threads share a bucket while fresh keys make sweeps run, and exactly the shared \
             bucket's burst passes each round. A payment must never land in a bucket that has been forgotten.",
            "A race between two critical sections: a sweep finds a bucket full and drops it while another check, already holding \
             it, pays into it; the payment is lost and the bucket comes back full.",
            "Sweep under the lock that guards the bucket (per shard: remove while holding the shard lock), or skip buckets a \
             request holds (e.g. Arc::strong_count > 1, checked under the map lock)."),
            THREADED, sweep_under_contention),
        case(L4, "sweep_keeps_buckets_in_debt", Hints::new(
            "Thousands of buckets spent to various depths, time moved so that some are full again and some only partly \
             refilled, then a flood that makes any sweep run: every bucket read back still shows its debt.",
            "Only a completely full bucket equals no bucket; one with some tokens back but not all is still in debt, and \
             forgetting it hands out the missing tokens again.",
            "Sweep only buckets with TAT ≤ now, where now is the limiter's latest time (not the raw clock reading)."),
            THREADED, sweep_keeps_buckets_in_debt),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn every_graded_sequence_keeps_each_key_on_one_quota_and_time_in_domain() {
        for ops in edge_scenarios() {
            assert!(admissible(&ops), "{ops:?}");
        }
        assert!(!quotas_fixed(&[check(&[(0, 0)], 1), check(&[(0, 1)], 1)]));
        assert!(!within_time_domain(&[Op::Advance(Duration::from_nanos(NANOS_LIMIT))]));
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..200 {
            let ops = random_ops(5, 3, QUOTAS.len() as u8, true, true).new_tree(&mut runner).unwrap().current();
            assert!(admissible(&ops), "{ops:?}");
        }
        let mut rng = SplitMix::new(7);
        let mut orders = std::collections::BTreeSet::new();
        for thread in 0..4 {
            for _ in 0..200 {
                if let Op::Check { limits, .. } = concurrent_op(&mut rng, thread) {
                    for &(k, q) in &limits {
                        assert_eq!(q, CONCURRENT_QUOTAS[usize::from(k)]);
                    }
                    orders.insert(limits.iter().map(|l| l.0).collect::<Vec<u8>>());
                }
            }
        }
        // Requests name their keys in every order (a lock-order deadlock must show).
        assert!(orders.contains(&vec![0, 1]) && orders.contains(&vec![1, 0]), "{orders:?}");
    }
}
