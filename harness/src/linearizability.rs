//! Concurrency grading on real threads: record histories (a global counter stamped
//! before and after each call), then search for a linearization against the same
//! sequential model the [`crate::sequential`] checks use.
//!
//! loom and shuttle only see their own sync types, so they cannot grade an attempt
//! written with std, parking_lot or DashMap. Real threads can, given help finding the
//! bad interleavings: test keys call [`contention_point`], which yields the thread now
//! and then while a key is hashed or compared, i.e. inside the attempt's critical code.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt::{Debug, Write as _};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use crate::isolation::trying;
use crate::sequential::Spec;
use crate::suite::{CaseError, CaseResult, Panic};
use crate::watchdog;

static FORCED_YIELDS: AtomicBool = AtomicBool::new(false);

/// Turns the yields of [`contention_point`] on or off (off by default, so sequential
/// checks and benchmarks run at full speed).
pub fn set_forced_yields(on: bool) {
    FORCED_YIELDS.store(on, Ordering::Relaxed);
}

thread_local! {
    /// Contention points this thread has reached; it yields at every other one.
    static CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Called by test keys' `Hash`/`Eq` (and value clones, clock reads): when forced yields
/// are on, every other call on a thread yields it, widening race windows by orders of
/// magnitude.
pub fn contention_point() {
    if FORCED_YIELDS.load(Ordering::Relaxed) {
        let calls = CALLS.with(|c| {
            c.set(c.get().wrapping_add(1));
            c.get()
        });
        if calls % 2 == 0 {
            thread::yield_now();
        }
    }
}

/// Puts recorded thread `thread` on its own parity of contention points (odd threads
/// yield at the points even threads run through), so threads do not all yield in step
/// and a budget of histories covers more schedules.
fn start_yielding_out_of_step(thread: usize) {
    CALLS.with(|c| c.set(thread as u32 % 2));
}

/// The key type of graded suites: a small id whose `Hash` and `Eq` hit a
/// [`contention_point`], so that concurrency cases can force interleavings.
#[derive(Clone, Copy)]
pub struct Key(pub u32);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        contention_point();
        self.0 == other.0
    }
}
impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        contention_point();
        self.0.hash(state);
    }
}

impl Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "k{}", self.0)
    }
}

/// The value type handed to attempts in graded suites: a number whose `Clone` hits a
/// [`contention_point`], so a value copied inside a critical section widens it, and
/// one copied between two critical sections widens the gap.
#[derive(PartialEq, Eq, Hash)]
pub struct Payload(pub u32);

impl Clone for Payload {
    fn clone(&self) -> Self {
        contention_point();
        Payload(self.0)
    }
}

impl Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One completed call in a history.
#[derive(Clone, Debug)]
pub struct Event<O, R> {
    pub thread: usize,
    pub op: O,
    pub output: R,
    /// Stamp taken just before the call; a call may take effect any time after it...
    pub invoked: u64,
    /// ...and before this stamp, taken just after the call returned.
    pub returned: u64,
}

/// Checks that some order of the events, consistent with real time (an event that
/// returned before another was invoked comes first), makes the model return exactly
/// what each call returned. Depth-first search, memoised on (events done, model state).
pub fn is_linearizable<S: Spec>(initial: &S::Model, history: &[Event<S::Op, S::Output>]) -> bool {
    linearize::<S>(initial, history).is_ok()
}

/// Why a history is not linearizable, as porcupine shows it: the longest order the
/// search found that explains some of the calls, and the calls that could come next
/// with what the model would have returned instead.
#[derive(Clone, Debug)]
pub struct PartialOrder<R> {
    /// Indices into the history, in the order they take effect.
    pub order: Vec<usize>,
    /// (index into the history, what the model returns for it after `order`).
    pub blocked: Vec<(usize, R)>,
}

/// [`is_linearizable`], with the longest partial linearization when there is none.
pub fn linearize<S: Spec>(
    initial: &S::Model,
    history: &[Event<S::Op, S::Output>],
) -> Result<(), PartialOrder<S::Output>> {
    assert!(history.len() <= 64, "histories are limited to 64 events");
    let all = if history.len() == 64 { u64::MAX } else { (1u64 << history.len()) - 1 };
    let mut search =
        Search::<S> { history, all, dead_ends: HashSet::new(), path: Vec::new(), best: (Vec::new(), initial.clone()) };
    if search.run(initial, 0) {
        return Ok(());
    }
    let (order, model) = search.best;
    let done = order.iter().fold(0u64, |done, &i| done | (1 << i));
    let blocked = next_candidates(history, done)
        .map(|i| {
            let mut next = model.clone();
            (i, S::step(&mut next, &history[i].op))
        })
        .collect();
    Err(PartialOrder { order, blocked })
}

/// The pending events that may take effect next: those invoked before every pending
/// event's return.
fn next_candidates<O, R>(history: &[Event<O, R>], done: u64) -> impl Iterator<Item = usize> + '_ {
    let pending = move || history.iter().enumerate().filter(move |(i, _)| done & (1 << i) == 0);
    let horizon = pending().map(|(_, e)| e.returned).min().unwrap_or(u64::MAX);
    pending().filter(move |(_, e)| e.invoked <= horizon).map(|(i, _)| i)
}

struct Search<'h, S: Spec> {
    history: &'h [Event<S::Op, S::Output>],
    all: u64,
    dead_ends: HashSet<(u64, S::Model)>,
    /// The order being tried, and the longest one seen (with the model after it).
    path: Vec<usize>,
    best: (Vec<usize>, S::Model),
}

impl<S: Spec> Search<'_, S> {
    fn run(&mut self, model: &S::Model, done: u64) -> bool {
        if done == self.all {
            return true;
        }
        if self.path.len() > self.best.0.len() {
            self.best = (self.path.clone(), model.clone());
        }
        if self.dead_ends.contains(&(done, model.clone())) {
            return false;
        }
        let candidates: Vec<usize> = next_candidates(self.history, done).collect();
        for i in candidates {
            let mut next = model.clone();
            if S::step(&mut next, &self.history[i].op) != self.history[i].output {
                continue;
            }
            self.path.push(i);
            let found = self.run(&next, done | (1 << i));
            self.path.pop();
            if found {
                return true;
            }
        }
        self.dead_ends.insert((done, model.clone()));
        false
    }
}

/// A failed linearization as a learner reads it: the calls in the longest order that
/// explains them, then each call that could come next and what the model says it
/// should have returned there.
pub fn describe_partial<O: Debug, R: Debug>(history: &[Event<O, R>], partial: &PartialOrder<R>) -> String {
    let mut text = format!(
        "the longest order found that explains some of the calls ({} of {}):\n",
        partial.order.len(),
        history.len()
    );
    for (n, &i) in partial.order.iter().enumerate() {
        let e = &history[i];
        let _ = writeln!(text, "  {:>3}. thread {}: {:?} -> {:?}", n + 1, e.thread, e.op, e.output);
    }
    let _ = writeln!(text, "after it, no call that could come next returned what the model says:");
    for (i, expected) in &partial.blocked {
        let e = &history[*i];
        let _ = writeln!(
            text,
            "       thread {}: {:?} -> {:?}, but here it would return {:?}",
            e.thread, e.op, e.output, expected
        );
    }
    text
}

/// Runs each thread's ops on its own real thread, all released together by a barrier,
/// and returns the recorded history. `call` applies one op to the shared system.
/// A panic on any thread is returned as the case error it stands for.
pub fn record<O, R>(per_thread: &[Vec<O>], call: impl Fn(&O) -> R + Sync) -> Result<Vec<Event<O, R>>, CaseError>
where
    O: Clone + Debug + Send + Sync,
    R: Send,
{
    trying(&per_thread);
    let recording = watchdog::Recording::new(
        per_thread.iter().map(|ops| ops.iter().map(|op| format!("{op:?}")).collect()).collect(),
    );
    watchdog::set_recording(Some(Arc::clone(&recording)));
    let clock = AtomicU64::new(0);
    let barrier = Barrier::new(per_thread.len());
    let results: Vec<thread::Result<Vec<Event<O, R>>>> = thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .iter()
            .enumerate()
            .map(|(thread, ops)| {
                let (clock, barrier, call, recording) = (&clock, &barrier, &call, &recording);
                scope.spawn(move || {
                    start_yielding_out_of_step(thread);
                    barrier.wait();
                    ops.iter()
                        .enumerate()
                        .map(|(index, op)| {
                            recording.call_started(thread, index);
                            let invoked = clock.fetch_add(1, Ordering::SeqCst);
                            let output = call(op);
                            let returned = clock.fetch_add(1, Ordering::SeqCst);
                            recording.call_returned(thread, index);
                            Event { thread, op: op.clone(), output, invoked, returned }
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    watchdog::set_recording(None);
    let mut history = Vec::new();
    for result in results {
        match result {
            Ok(events) => history.extend(events),
            Err(payload) => {
                let panic = Panic::from_payload(payload.as_ref());
                return Err(panic.into_case_error(format!("threads running {per_thread:?}")));
            }
        }
    }
    history.sort_by_key(|e| e.invoked);
    Ok(history)
}

/// A history as a learner reads it: one line per call, in order of invocation.
pub fn describe<O: Debug, R: Debug>(history: &[Event<O, R>]) -> String {
    let mut text = String::new();
    for e in history {
        let _ = writeln!(
            text,
            "  thread {}: {:<40} -> {:<24} (called at {:>3}, returned at {:>3})",
            e.thread,
            format!("{:?}", e.op),
            format!("{:?}", e.output),
            e.invoked,
            e.returned
        );
    }
    text
}

/// Small, fast, deterministic generator for history shapes (SplitMix64).
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform-enough pick in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Shuffles `items` in place (Fisher-Yates, last position first).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The shape and count of histories a concurrency case records. Fixed per case so
/// that a verdict does not depend on machine speed (only on the interleavings seen).
#[derive(Clone, Copy, Debug)]
pub struct HistoryBudget {
    /// (threads, ops per thread, how many histories), smallest shapes first so the
    /// first failure shown is a small one.
    pub rounds: &'static [(usize, usize, u32)],
    pub seed: u64,
}

/// How many histories a round may record per concurrent history it counts.
const MAX_RECORDINGS_PER_HISTORY: u32 = 8;

/// Whether at least half of the calls overlapped a call of another thread.
fn is_concurrent<O, R>(history: &[Event<O, R>]) -> bool {
    let overlapping = history
        .iter()
        .filter(|e| history.iter().any(|f| f.thread != e.thread && e.invoked < f.returned && f.invoked < e.returned))
        .count();
    2 * overlapping >= history.len()
}

/// Records histories as `budget` says, with ops drawn by `pick_op` and a fresh system
/// for each from `fresh`, and checks each against the model from `config`.
pub fn check_histories<S, Sys>(
    config: &S::Config,
    budget: HistoryBudget,
    pick_op: impl Fn(&mut SplitMix, usize) -> S::Op,
    fresh: impl Fn() -> Result<Sys, CaseError>,
    call: impl Fn(&Sys, &S::Op) -> S::Output + Sync,
) -> CaseResult
where
    S: Spec,
    S::Op: Send + Sync,
    S::Output: Send,
    Sys: Sync,
{
    check_histories_after::<S, Sys>(config, &[], budget, pick_op, fresh, call)
}

/// [`check_histories`] where every fresh system first gets the `setup` ops, one thread,
/// before the threads start (and the model too): histories that start from a chosen
/// state, e.g. a cache holding an expired entry.
pub fn check_histories_after<S, Sys>(
    config: &S::Config,
    setup: &[S::Op],
    budget: HistoryBudget,
    pick_op: impl Fn(&mut SplitMix, usize) -> S::Op,
    fresh: impl Fn() -> Result<Sys, CaseError>,
    call: impl Fn(&Sys, &S::Op) -> S::Output + Sync,
) -> CaseResult
where
    S: Spec,
    S::Op: Send + Sync,
    S::Output: Send,
    Sys: Sync,
{
    let mut rng = SplitMix::new(budget.seed);
    let mut initial = S::model(config);
    let expected_setup: Vec<S::Output> = setup.iter().map(|op| S::step(&mut initial, op)).collect();
    for &(threads, ops_per_thread, histories) in budget.rounds {
        // The budget counts histories whose calls really overlapped: on a busy machine
        // threads often run one after the other, and such a history tests nothing.
        // Bounded, so that a starved machine still finishes.
        let (mut concurrent, mut recorded) = (0, 0);
        while concurrent < histories && recorded < histories * MAX_RECORDINGS_PER_HISTORY {
            recorded += 1;
            let per_thread: Vec<Vec<S::Op>> =
                (0..threads).map(|t| (0..ops_per_thread).map(|_| pick_op(&mut rng, t)).collect()).collect();
            let system = fresh()?;
            for (op, expected) in setup.iter().zip(&expected_setup) {
                let actual =
                    crate::watchdog::call(format!("setup: {op:?}"), || crate::suite::guarded(|| call(&system, op)))
                        .map_err(|p| p.into_case_error(format!("{config:?}\nsetting up, {op:?}")))?;
                if &actual != expected {
                    return Err(CaseError::failed(format!(
                        "{config:?}\nsetting up (one thread), {op:?} -> {actual:?}, expected {expected:?}"
                    )));
                }
            }
            let history = record(&per_thread, |op| call(&system, op))?;
            if is_concurrent(&history) {
                concurrent += 1;
            }
            if let Err(partial) = linearize::<S>(&initial, &history) {
                let setup = if setup.is_empty() { String::new() } else { format!("first, on one thread: {setup:?}\n") };
                return Err(CaseError::failed(format!(
                    "{config:?}\n{setup}this concurrent history has no valid sequential order (not linearizable):\n{}\n{}",
                    describe(&history),
                    describe_partial(&history, &partial)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: write(v) returns the previous value.
    struct Register;
    impl Spec for Register {
        type Config = ();
        type Op = Option<u8>; // Some(v) = write v, None = read
        type Output = u8;
        type Model = u8;
        fn model(_: &()) -> u8 {
            0
        }
        fn step(model: &mut u8, op: &Option<u8>) -> u8 {
            let old = *model;
            if let Some(v) = op {
                *model = *v;
            }
            old
        }
    }

    fn event(thread: usize, op: Option<u8>, output: u8, invoked: u64, returned: u64) -> Event<Option<u8>, u8> {
        Event { thread, op, output, invoked, returned }
    }

    #[test]
    fn overlapping_calls_may_take_effect_in_either_order() {
        // write(1) and write(2) overlap; both saw 0 -> impossible; one saw the other -> fine.
        let ok = [event(0, Some(1), 0, 0, 3), event(1, Some(2), 1, 1, 2)];
        assert!(is_linearizable::<Register>(&0, &ok));
        let lost_update = [event(0, Some(1), 0, 0, 3), event(1, Some(2), 0, 1, 2)];
        assert!(!is_linearizable::<Register>(&0, &lost_update));
    }

    #[test]
    fn a_failed_search_names_the_longest_order_and_the_calls_it_cannot_place() {
        // write(5) returned before the read began, yet the read saw 0.
        let stale = [event(0, Some(5), 0, 0, 1), event(1, None, 0, 2, 3)];
        let partial = linearize::<Register>(&0, &stale).unwrap_err();
        assert_eq!(partial.order, vec![0]);
        assert_eq!(partial.blocked, vec![(1, 5)]);
        let text = describe_partial(&stale, &partial);
        assert!(text.contains("(1 of 2)"), "{text}");
        assert!(text.contains("thread 1: None -> 0, but here it would return 5"), "{text}");
    }

    #[test]
    fn real_time_order_is_respected() {
        // The read starts after write(5) returned, so it must see 5.
        let stale = [event(0, Some(5), 0, 0, 1), event(1, None, 0, 2, 3)];
        assert!(!is_linearizable::<Register>(&0, &stale));
        let fresh = [event(0, Some(5), 0, 0, 1), event(1, None, 5, 2, 3)];
        assert!(is_linearizable::<Register>(&0, &fresh));
    }

    #[test]
    fn recorded_histories_of_a_locked_register_are_linearizable_and_a_racy_one_is_caught() {
        let budget = HistoryBudget { rounds: &[(3, 4, 200)], seed: 1 };
        let pick = |rng: &mut SplitMix, _| if rng.below(2) == 0 { None } else { Some(rng.below(5) as u8 + 1) };
        let locked = check_histories::<Register, _>(
            &(),
            budget,
            pick,
            || Ok(std::sync::Mutex::new(0u8)),
            |m, op| {
                let mut v = m.lock().unwrap();
                let old = *v;
                if let Some(new) = op {
                    *v = *new;
                }
                old
            },
        );
        assert_eq!(locked, Ok(()));

        // Read and write in two critical sections: a lost update shows up.
        set_forced_yields(true);
        let racy = check_histories::<Register, _>(
            &(),
            budget,
            pick,
            || Ok(std::sync::Mutex::new(0u8)),
            |m, op| {
                let old = *m.lock().unwrap();
                contention_point();
                contention_point();
                if let Some(new) = op {
                    *m.lock().unwrap() = *new;
                }
                old
            },
        );
        set_forced_yields(false);
        let Err(CaseError::Failed(report)) = racy else { panic!("race not caught: {racy:?}") };
        assert!(report.contains("not linearizable"), "{report}");
    }
}
