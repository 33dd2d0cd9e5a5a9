//! The graded suite of the circuit-breaker exercise: op sequences replayed against the
//! model (exhaustive shortest-first, then pinned proptest), concurrency histories with
//! an exact-probe-count race, and async calls in a paused tokio runtime (virtual time).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::contract::{BreakerConfig, CallError, ConfigError, Rejected, MAX_WINDOW};
use super::model::{
    AsyncConfig, AsyncSpec, BreakerSpec, CallOp, CallOutput, CallResult, End, Op, Output, Which, START,
};
use super::{BoxFuture, ErasedAsyncBreaker, ErasedBreaker, ErasedPermit, Factory, Work};
use crate::clock::{paused_runtime, ManualClock, SharedTimer, TokioTimer};
use crate::linearizability::{check_histories, set_forced_yields, HistoryBudget, SplitMix};
use crate::sequential::{exhaustive, random, replay, Budget, Spec};
use crate::suite::{
    guarded, Case, CaseError, CaseResult, Hints, Level, Panic, QUICK_DEADLINE as QUICK, THREADED_DEADLINE as THREADED,
};

// ---------------------------------------------------------------------------------
// Driving a breaker
// ---------------------------------------------------------------------------------

/// A caller's permits, numbered as it got them.
#[derive(Default)]
struct Caller {
    issued: u32,
    held: Vec<(u32, Box<dyn ErasedPermit>)>,
}

/// The breaker under test, the test clock, and each caller's permits (one slot per
/// thread: only that thread touches it).
struct System {
    breaker: Arc<dyn ErasedBreaker>,
    clock: ManualClock,
    callers: Vec<Mutex<Caller>>,
}

impl System {
    fn build(make: Factory, config: &BreakerConfig, callers: usize) -> Result<System, CaseError> {
        let clock = ManualClock::starting_at(START);
        let breaker = match guarded(|| (make.breaker)(*config, clock.shared())) {
            Ok(Ok(breaker)) => breaker,
            Ok(Err(e)) => {
                return Err(CaseError::failed(format!("{config:?}\n  -> Err({e:?}), but this config is valid")))
            }
            Err(panic) => return Err(panic.into_case_error(format!("{config:?}"))),
        };
        Ok(System { breaker, clock, callers: (0..callers).map(|_| Mutex::default()).collect() })
    }

    fn caller(&self, caller: u8) -> std::sync::MutexGuard<'_, Caller> {
        self.callers[usize::from(caller)].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, op: &Op) -> Output {
        match *op {
            Op::Advance(d) => {
                self.clock.advance(d);
                Output::Nothing
            }
            Op::State => Output::State(self.breaker.state()),
            Op::Acquire { caller } => match self.breaker.try_acquire() {
                Ok(permit) => {
                    let mut caller = self.caller(caller);
                    caller.issued += 1;
                    let number = caller.issued;
                    caller.held.push((number, permit));
                    Output::Acquired(Ok(number))
                }
                Err(rejected) => Output::Acquired(Err(rejected)),
            },
            Op::End { caller, which, end } => {
                let taken = {
                    let mut caller = self.caller(caller);
                    match which {
                        _ if caller.held.is_empty() => None,
                        Which::Oldest => Some(caller.held.remove(0)),
                        Which::Newest => caller.held.pop(),
                    }
                };
                let Some((number, permit)) = taken else { return Output::Ended(None) };
                match end {
                    End::Success => permit.record_success(),
                    End::Failure => permit.record_failure(),
                    End::Drop => drop(permit),
                }
                Output::Ended(Some(number))
            }
        }
    }
}

fn replay_on(make: Factory, config: &BreakerConfig, ops: &[Op]) -> CaseResult {
    replay::<BreakerSpec, _>(config, ops, |config| {
        let clock = ManualClock::starting_at(START);
        // A valid config must build; `replay` reports a panic here at step 0.
        let breaker = (make.breaker)(*config, clock.shared())
            .unwrap_or_else(|e| panic!("Breaker::new returned Err({e:?}), but this config is valid"));
        let system = System { breaker, clock, callers: vec![Mutex::default()] };
        move |op: &Op| system.apply(op)
    })
}

// ---------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------

const NS: Duration = Duration::from_nanos(1);

fn acquire() -> Op {
    Op::Acquire { caller: 0 }
}

fn end(which: Which, end: End) -> Op {
    Op::End { caller: 0, which, end }
}

fn succeed() -> Op {
    end(Which::Newest, End::Success)
}

fn fail() -> Op {
    end(Which::Newest, End::Failure)
}

/// Whether the letters, flattened, never end a permit when none is held (such an op
/// does nothing and only lengthens the enumeration).
fn ends_only_held(config: &BreakerConfig, letters: &[Vec<Op>]) -> bool {
    let mut model = BreakerSpec::model(config);
    for op in letters.iter().flatten() {
        if matches!(op, Op::End { .. }) && model.held_by(0) == 0 {
            return false;
        }
        BreakerSpec::step(&mut model, op);
    }
    true
}

/// Every short sequence of `letters` (each a few ops) on each config in turn, shortest first.
fn exhaustive_on(
    make: Factory,
    configs: &[BreakerConfig],
    letters: fn(&BreakerConfig) -> Vec<Vec<Op>>,
    max_len: usize,
) -> CaseResult {
    for config in configs {
        exhaustive(
            std::slice::from_ref(config),
            letters,
            max_len,
            |prefix| ends_only_held(config, prefix),
            |config, letters| replay_on(make, config, &letters.concat()),
        )?;
    }
    Ok(())
}

/// Level 1: whole calls and held calls ended later, moves of half a cool-down. No
/// window fills up (it is longer than any sequence) and no call is slow.
fn state_machine_letters(config: &BreakerConfig) -> Vec<Vec<Op>> {
    vec![
        vec![acquire(), fail()],
        vec![acquire(), succeed()],
        vec![acquire()],
        vec![end(Which::Oldest, End::Success)],
        vec![end(Which::Oldest, End::Failure)],
        vec![end(Which::Oldest, End::Drop)],
        vec![Op::Advance(config.cool_down / 2), Op::State],
        vec![Op::Advance(config.cool_down), Op::State],
    ]
}

const STATE_MACHINE_CONFIGS: [BreakerConfig; 3] = [
    BreakerConfig {
        window: 20,
        min_calls: 2,
        failure_rate_percent: 50,
        slow_call: Duration::MAX,
        cool_down: Duration::from_secs(10),
        probes: 1,
    },
    BreakerConfig {
        window: 20,
        min_calls: 1,
        failure_rate_percent: 100,
        slow_call: Duration::MAX,
        cool_down: Duration::from_secs(10),
        probes: 2,
    },
    BreakerConfig {
        window: 20,
        min_calls: 3,
        failure_rate_percent: 34,
        slow_call: Duration::MAX,
        cool_down: Duration::from_secs(10),
        probes: 2,
    },
];

/// Level 2: whole calls, slow or not, on windows that fill up and slide.
fn window_letters(config: &BreakerConfig) -> Vec<Vec<Op>> {
    let slow = config.slow_call;
    vec![
        vec![acquire(), fail()],
        vec![acquire(), succeed()],
        // Exactly at the threshold: not slow; 1ns over: slow.
        vec![acquire(), Op::Advance(slow), succeed()],
        vec![acquire(), Op::Advance(slow + NS), succeed()],
        vec![Op::Advance(config.cool_down), Op::State],
    ]
}

const WINDOW_CONFIGS: [BreakerConfig; 4] = [
    BreakerConfig {
        window: 3,
        min_calls: 3,
        failure_rate_percent: 67,
        slow_call: Duration::from_millis(5),
        cool_down: Duration::from_secs(10),
        probes: 1,
    },
    BreakerConfig {
        window: 2,
        min_calls: 1,
        failure_rate_percent: 50,
        slow_call: Duration::from_millis(5),
        cool_down: Duration::from_secs(10),
        probes: 2,
    },
    BreakerConfig {
        window: 4,
        min_calls: 2,
        failure_rate_percent: 75,
        slow_call: Duration::from_millis(5),
        cool_down: Duration::from_secs(10),
        probes: 1,
    },
    BreakerConfig {
        window: 3,
        min_calls: 2,
        failure_rate_percent: 66,
        slow_call: Duration::ZERO,
        cool_down: Duration::from_secs(10),
        probes: 1,
    },
];

/// Random configs across the domain: windows 1-6, every min_calls, thresholds at and
/// around the fractions small windows produce, 1-3 probes, odd durations.
fn random_config() -> impl Strategy<Value = BreakerConfig> {
    let percent =
        prop_oneof![Just(1u32), Just(33), Just(34), Just(50), Just(66), Just(67), Just(75), Just(100), 1u32..=100];
    let slow = prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_millis(5)),
        (1u64..=20_000_000).prop_map(Duration::from_nanos),
        Just(Duration::MAX)
    ];
    let cool = prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_millis(30)),
        (1u64..=50_000_000).prop_map(Duration::from_nanos),
        Just(Duration::MAX)
    ];
    (1u32..=6, 0u32..6, percent, slow, cool, 1u32..=3).prop_map(
        |(window, min, percent, slow_call, cool_down, probes)| BreakerConfig {
            window,
            min_calls: 1 + min % window,
            failure_rate_percent: percent,
            slow_call,
            cool_down,
            probes,
        },
    )
}

/// Random ops: calls held and ended in any order, two permits at once, drops, state
/// reads, and clock moves onto and around the config's slow and cool-down boundaries.
fn random_ops(config: BreakerConfig, max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    let which = prop_oneof![Just(Which::Oldest), Just(Which::Newest)];
    let how = prop_oneof![3 => Just(End::Success), 3 => Just(End::Failure), 1 => Just(End::Drop)];
    let clip = |d: Duration| if d == Duration::MAX { Duration::from_secs(3600) } else { d };
    let (slow, cool) = (clip(config.slow_call), clip(config.cool_down));
    let advance = prop_oneof![
        Just(slow),
        Just(slow + NS),
        Just(cool),
        Just(cool.saturating_sub(NS)),
        Just(cool / 2),
        (1u64..=10_000_000).prop_map(Duration::from_nanos)
    ];
    let op = prop_oneof![
        5 => Just(acquire()),
        4 => (which, how).prop_map(|(which, how)| end(which, how)),
        3 => advance.prop_map(Op::Advance),
        1 => Just(Op::State),
    ];
    proptest::collection::vec(op, 1..=max_len)
}

fn random_case(make: Factory, budget: Budget, max_len: usize) -> CaseResult {
    let strategy = random_config().prop_flat_map(move |c| (Just(c), random_ops(c, max_len)));
    random(strategy, budget, |(config, ops)| replay_on(make, config, ops))
}

/// Hand-picked sequences at the boundaries.
fn edge_scenarios() -> Vec<(BreakerConfig, Vec<Op>)> {
    let ten = Duration::from_secs(10);
    let (c1, c2) = (STATE_MACHINE_CONFIGS[0], STATE_MACHINE_CONFIGS[1]);
    vec![
        // Open until exactly opened_at + cool_down: rejected 1ns before with retry_after 1ns.
        (
            c2,
            vec![
                acquire(),
                Op::Advance(Duration::from_millis(7)),
                fail(),
                acquire(),
                Op::Advance(ten - NS),
                acquire(),
                Op::State,
                Op::Advance(NS),
                Op::State,
                acquire(),
                acquire(),
                acquire(),
            ],
        ),
        // A call admitted while Closed that ends after the breaker opened counts for
        // nothing, and neither does one admitted before it closed again.
        (
            c1,
            vec![
                acquire(),
                acquire(),
                acquire(),
                end(Which::Newest, End::Failure),
                end(Which::Newest, End::Failure),
                end(Which::Oldest, End::Success),
                Op::Advance(ten),
                acquire(),
                acquire(),
                end(Which::Oldest, End::Success),
                Op::State,
                acquire(),
                Op::Advance(ten),
                acquire(),
                acquire(),
                end(Which::Oldest, End::Failure),
                Op::State,
                acquire(),
                end(Which::Oldest, End::Failure),
                acquire(),
                end(Which::Newest, End::Failure),
                Op::State,
            ],
        ),
        // Two probes: a dropped probe frees its slot; one success is not enough to close.
        (
            c2,
            vec![
                acquire(),
                fail(),
                Op::Advance(ten),
                acquire(),
                acquire(),
                acquire(),
                end(Which::Newest, End::Drop),
                acquire(),
                end(Which::Oldest, End::Success),
                Op::State,
                acquire(),
                end(Which::Oldest, End::Success),
                Op::State,
                acquire(),
                acquire(),
                acquire(),
            ],
        ),
        // min_calls = window = 1, threshold 100%: one failure opens; a cool-down of
        // Duration::MAX never ends.
        (
            BreakerConfig { window: 1, min_calls: 1, cool_down: Duration::MAX, ..c2 },
            vec![
                acquire(),
                succeed(),
                acquire(),
                fail(),
                Op::Advance(Duration::from_secs(1 << 40)),
                acquire(),
                Op::State,
            ],
        ),
        // A cool-down of zero: Half-open at once.
        (
            BreakerConfig { cool_down: Duration::ZERO, ..c1 },
            vec![acquire(), fail(), acquire(), fail(), Op::State, acquire(), acquire(), succeed(), Op::State],
        ),
        // The largest window, filled only by successes: never opens; min_calls = 1 with
        // 1%: the first failure opens.
        (
            BreakerConfig { window: MAX_WINDOW, min_calls: 1, failure_rate_percent: 1, ..c1 },
            vec![acquire(), succeed(), acquire(), succeed(), acquire(), fail(), Op::State],
        ),
    ]
}

/// Configs every breaker must refuse, with the error [`validate`](super::validate) gives.
fn bad_configs() -> Vec<(BreakerConfig, ConfigError)> {
    let ok = STATE_MACHINE_CONFIGS[0];
    vec![
        (BreakerConfig { window: 0, min_calls: 0, ..ok }, ConfigError::ZeroWindow),
        (BreakerConfig { window: MAX_WINDOW + 1, ..ok }, ConfigError::WindowTooLarge(MAX_WINDOW + 1)),
        (BreakerConfig { window: u32::MAX, ..ok }, ConfigError::WindowTooLarge(u32::MAX)),
        (BreakerConfig { min_calls: 0, probes: 0, ..ok }, ConfigError::ZeroMinCalls),
        (BreakerConfig { min_calls: 21, ..ok }, ConfigError::MinCallsAboveWindow { min_calls: 21, window: 20 }),
        (BreakerConfig { failure_rate_percent: 0, ..ok }, ConfigError::ThresholdOutOfRange(0)),
        (BreakerConfig { failure_rate_percent: 101, probes: 0, ..ok }, ConfigError::ThresholdOutOfRange(101)),
        (BreakerConfig { probes: 0, ..ok }, ConfigError::ZeroProbes),
    ]
}

fn config_errors(make: Factory) -> CaseResult {
    for (config, expected) in bad_configs() {
        let clock = ManualClock::starting_at(START);
        let got = guarded(|| (make.breaker)(config, clock.shared()).map(|_| ()))
            .map_err(|p| p.into_case_error(format!("{config:?}")))?;
        if got != Err(expected.clone()) {
            return Err(CaseError::failed(format!("{config:?}\n  -> {got:?}\n     expected Err({expected:?})")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------

const HISTORIES: HistoryBudget = HistoryBudget { rounds: &[(2, 4, 400), (3, 4, 400), (4, 6, 200)], seed: 0xb4ea_4e50 };

const CONCURRENT_CONFIG: BreakerConfig = BreakerConfig {
    window: 3,
    min_calls: 2,
    failure_rate_percent: 50,
    slow_call: Duration::from_millis(5),
    cool_down: Duration::from_millis(10),
    probes: 2,
};

/// One op of a concurrency history: acquires and ends of the thread's own permits;
/// threads 0 and 1 also move the clock, onto the slow and cool-down boundaries.
fn concurrent_op(rng: &mut SplitMix, thread: usize) -> Op {
    let caller = thread as u8;
    match rng.below(if thread < 2 { 12 } else { 10 }) {
        0..=3 => Op::Acquire { caller },
        4 | 5 => Op::End { caller, which: Which::Oldest, end: End::Failure },
        6 | 7 => Op::End { caller, which: Which::Oldest, end: End::Success },
        8 => Op::End { caller, which: Which::Oldest, end: End::Drop },
        9 => Op::State,
        10 => Op::Advance(Duration::from_millis(5)),
        _ => Op::Advance(Duration::from_millis(6)),
    }
}

fn linearizable(make: Factory) -> CaseResult {
    set_forced_yields(true);
    let result = check_histories::<BreakerSpec, _>(
        &CONCURRENT_CONFIG,
        HISTORIES,
        concurrent_op,
        || System::build(make, &CONCURRENT_CONFIG, 4),
        |system, op| system.apply(op),
    );
    set_forced_yields(false);
    result
}

/// Many threads race for probes: in every round exactly `probes` are admitted.
fn exact_probes(make: Factory) -> CaseResult {
    const THREADS: usize = 8;
    const ROUNDS: usize = 300;
    const PROBES: u32 = 3;
    let config = BreakerConfig {
        window: 1,
        min_calls: 1,
        failure_rate_percent: 100,
        slow_call: Duration::MAX,
        cool_down: Duration::from_millis(10),
        probes: PROBES,
    };
    let system = System::build(make, &config, 0)?;
    let breaker = &system.breaker;
    // Open it: one failure.
    let open = |what: &str| -> Result<(), CaseError> {
        match breaker.try_acquire() {
            Ok(permit) => permit.record_failure(),
            Err(r) => {
                return Err(CaseError::failed(format!("{config:?}\n{what}: try_acquire() -> Err({r:?}) while Closed")))
            }
        }
        Ok(())
    };
    guarded(|| open("opening it")).map_err(|p| p.into_case_error(format!("{config:?}")))??;
    let admitted: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
    let barrier = Barrier::new(THREADS);
    set_forced_yields(true);
    let outcomes: Vec<thread::Result<Result<(), String>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (admitted, barrier, clock) = (&admitted, &barrier, &system.clock);
                s.spawn(move || {
                    // A thread that saw something wrong keeps taking part in the rounds
                    // (the others wait for it at the barriers) and reports at the end.
                    let mut error = None;
                    for (round, count) in admitted.iter().enumerate() {
                        if barrier.wait().is_leader() {
                            clock.advance(config.cool_down);
                        }
                        barrier.wait();
                        let mut mine = Vec::new();
                        for _ in 0..2 {
                            let _in_flight =
                                crate::watchdog::InFlight::new(format!("try_acquire() (thread {t}, round {round})"));
                            match breaker.try_acquire() {
                                Ok(permit) => {
                                    count.fetch_add(1, Ordering::SeqCst);
                                    mine.push(permit);
                                }
                                Err(Rejected::ProbesBusy) => {}
                                Err(other) => {
                                    error.get_or_insert(format!(
                                        "round {round}: try_acquire() -> Err({other:?}) in Half-open (cool-down passed)"
                                    ));
                                }
                            }
                        }
                        barrier.wait();
                        // Every 4th round the probes succeed (Closed, then one failure
                        // reopens it); otherwise they fail (the first reopens it).
                        let closing = round % 4 == 3;
                        for permit in mine {
                            if closing {
                                permit.record_success();
                            } else {
                                permit.record_failure();
                            }
                        }
                        if barrier.wait().is_leader() && closing {
                            match breaker.try_acquire() {
                                Ok(permit) => permit.record_failure(),
                                Err(r) => {
                                    error.get_or_insert(format!(
                                        "round {round}: after {PROBES} probes succeeded, try_acquire() -> Err({r:?})"
                                    ));
                                }
                            }
                        }
                    }
                    error.map_or(Ok(()), Err)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    set_forced_yields(false);
    for outcome in outcomes {
        match outcome {
            Err(p) => return Err(Panic::from_payload(p.as_ref()).into_case_error("racing for probes")),
            Ok(Err(e)) => return Err(CaseError::failed(format!("{config:?}\n{e}"))),
            Ok(Ok(())) => {}
        }
    }
    let counts: Vec<usize> = admitted.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    if let Some((round, &count)) = counts.iter().enumerate().find(|(_, &c)| c != PROBES as usize) {
        return Err(CaseError::failed(format!(
            "{config:?}\nround {round}: {THREADS} threads each called try_acquire() twice at one instant in Half-open: \
             {count} permits handed out, expected exactly probes = {PROBES} (all rounds: {counts:?})"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Async calls (level 4), in a paused tokio runtime
// ---------------------------------------------------------------------------------

/// The async breaker under test in a paused current-thread runtime, and the calls
/// still running (in the order made).
struct AsyncDriver {
    runtime: tokio::runtime::Runtime,
    timer: SharedTimer,
    breaker: Arc<dyn ErasedAsyncBreaker>,
    calls: u32,
    running: Vec<(u32, BoxFuture<CallResult>)>,
}

impl Drop for AsyncDriver {
    fn drop(&mut self) {
        // Calls hold tokio timers: drop them inside their runtime.
        let _inside = self.runtime.enter();
        self.running.clear();
    }
}

fn whole_ms(timer: &SharedTimer) -> u64 {
    timer.now().as_nanos() / 1_000_000
}

impl AsyncDriver {
    fn build(make: Factory, config: &AsyncConfig) -> Result<AsyncDriver, ConfigError> {
        let runtime = paused_runtime();
        let (timer, breaker) = {
            let _inside = runtime.enter();
            let timer = TokioTimer::shared();
            let breaker = (make.async_breaker)(config.breaker, config.timeout, timer.clone())?;
            (timer, breaker)
        };
        Ok(AsyncDriver { runtime, timer, breaker, calls: 0, running: Vec::new() })
    }

    fn apply(&mut self, op: &CallOp) -> CallOutput {
        match *op {
            CallOp::State => {
                let _inside = self.runtime.enter();
                CallOutput::State(self.breaker.state())
            }
            CallOp::CancelOldest => {
                if self.running.is_empty() {
                    return CallOutput::Cancelled(None);
                }
                let _inside = self.runtime.enter();
                let (id, call) = self.running.remove(0);
                drop(call);
                CallOutput::Cancelled(Some(id))
            }
            CallOp::Call { work_ms, fails } => {
                self.calls += 1;
                let id = self.calls;
                let polled = Arc::new(AtomicBool::new(false));
                let (timer, flag) = (self.timer.clone(), polled.clone());
                let work: Work = Box::pin(async move {
                    flag.store(true, Ordering::SeqCst);
                    if work_ms > 0 {
                        timer.sleep(Duration::from_millis(work_ms)).await;
                    }
                    if fails {
                        Err(id)
                    } else {
                        Ok(id)
                    }
                });
                let breaker = self.breaker.clone();
                let mut call = {
                    let _inside = self.runtime.enter();
                    breaker.call(work)
                };
                // One poll, at this instant: the call asks for its permit.
                let first = self.runtime.block_on(std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))));
                match first {
                    Poll::Ready(Err(CallError::Rejected(r))) if polled.load(Ordering::SeqCst) => {
                        CallOutput::RejectedButPolled { id, result: Err(CallError::Rejected(r)) }
                    }
                    Poll::Ready(result) => CallOutput::Started { id, result: Some(result) },
                    Poll::Pending => {
                        self.running.push((id, call));
                        CallOutput::Started { id, result: None }
                    }
                }
            }
            CallOp::Sleep(ms) => {
                let timer = self.timer.clone();
                let running = &mut self.running;
                self.runtime.block_on(async {
                    let mut sleep = timer.sleep(Duration::from_millis(ms));
                    let mut done = Vec::new();
                    std::future::poll_fn(|cx| {
                        // Every running call, in the order made, then the sleep: calls
                        // ending at the sleep's last instant end within it.
                        let mut index = 0;
                        while index < running.len() {
                            match running[index].1.as_mut().poll(cx) {
                                Poll::Ready(result) => {
                                    let (id, _) = running.remove(index);
                                    done.push((id, whole_ms(&timer), result));
                                }
                                Poll::Pending => index += 1,
                            }
                        }
                        sleep.as_mut().poll(cx)
                    })
                    .await;
                    CallOutput::Finished(done)
                })
            }
        }
    }
}

fn async_replay(make: Factory, config: &AsyncConfig, ops: &[CallOp]) -> CaseResult {
    replay::<AsyncSpec, _>(config, ops, |config| {
        let mut driver = match AsyncDriver::build(make, config) {
            Ok(driver) => driver,
            Err(e) => panic!("AsyncBreaker::new failed: Err({e:?}), but this config is valid"),
        };
        move |op: &CallOp| driver.apply(op)
    })
}

const ASYNC_CONFIGS: [AsyncConfig; 2] = [
    AsyncConfig {
        breaker: BreakerConfig {
            window: 3,
            min_calls: 2,
            failure_rate_percent: 50,
            slow_call: Duration::from_millis(20),
            cool_down: Duration::from_millis(50),
            probes: 1,
        },
        timeout: Duration::from_millis(30),
    },
    AsyncConfig {
        breaker: BreakerConfig {
            window: 2,
            min_calls: 1,
            failure_rate_percent: 100,
            slow_call: Duration::from_millis(20),
            cool_down: Duration::from_millis(50),
            probes: 2,
        },
        timeout: Duration::from_millis(30),
    },
];

/// Calls that succeed, fail, run slow, time out or finish at once; sleeps; a caller
/// dropping a call. Works never take exactly the timeout (a tie may end either way).
fn call_letters() -> Vec<CallOp> {
    vec![
        CallOp::Call { work_ms: 10, fails: false },
        CallOp::Call { work_ms: 10, fails: true },
        CallOp::Call { work_ms: 25, fails: false },
        CallOp::Call { work_ms: 1000, fails: false },
        CallOp::Call { work_ms: 0, fails: true },
        CallOp::Sleep(20),
        CallOp::Sleep(50),
        CallOp::CancelOldest,
    ]
}

fn random_calls() -> impl Strategy<Value = (AsyncConfig, Vec<CallOp>)> {
    let config =
        (1u32..=4, 0u32..4, prop_oneof![Just(50u32), Just(100), 1u32..=100], 1u32..=3, 1u64..=40, 1u64..=60, 0u64..=80)
            .prop_map(|(window, min, percent, probes, timeout, slow, cool)| AsyncConfig {
                breaker: BreakerConfig {
                    window,
                    min_calls: 1 + min % window,
                    failure_rate_percent: percent,
                    slow_call: Duration::from_millis(slow),
                    cool_down: Duration::from_millis(cool),
                    probes,
                },
                timeout: Duration::from_millis(timeout),
            });
    config.prop_flat_map(|config| {
        let timeout = config.timeout.as_millis() as u64;
        let work = (0u64..=100).prop_map(move |ms| if ms == timeout { ms + 1 } else { ms });
        let op = prop_oneof![
            5 => (work, any::<bool>()).prop_map(|(work_ms, fails)| CallOp::Call { work_ms, fails }),
            4 => (1u64..=60).prop_map(CallOp::Sleep),
            1 => Just(CallOp::CancelOldest),
            1 => Just(CallOp::State),
        ];
        (Just(config), proptest::collection::vec(op, 1..=30))
    })
}

/// A timed-out call's work is dropped (cancelled) when the timeout fires, not left
/// running or kept; bad timeouts are refused.
fn timeout_cancels_work(make: Factory) -> CaseResult {
    let config = ASYNC_CONFIGS[0];
    for timeout in [Duration::ZERO, Duration::from_micros(999)] {
        let runtime = paused_runtime();
        let _inside = runtime.enter();
        let got = guarded(|| (make.async_breaker)(config.breaker, timeout, TokioTimer::shared()).map(|_| ()))
            .map_err(|p| p.into_case_error(format!("AsyncBreaker::new(.., timeout {timeout:?}, ..)")))?;
        if got != Err(ConfigError::TimeoutTooShort(timeout)) {
            return Err(CaseError::failed(format!(
                "AsyncBreaker::new(valid config, timeout {timeout:?}, timer) -> {got:?}, expected Err(TimeoutTooShort({timeout:?}))"
            )));
        }
    }
    let bad = BreakerConfig { probes: 0, ..config.breaker };
    {
        let runtime = paused_runtime();
        let _inside = runtime.enter();
        let got = guarded(|| (make.async_breaker)(bad, Duration::ZERO, TokioTimer::shared()).map(|_| ()))
            .map_err(|p| p.into_case_error("AsyncBreaker::new(probes 0, timeout 0ms)"))?;
        if got != Err(ConfigError::ZeroProbes) {
            return Err(CaseError::failed(format!(
                "AsyncBreaker::new(probes 0, timeout 0ms) -> {got:?}: the config is checked first, expected Err(ZeroProbes)"
            )));
        }
    }
    let mut driver = guarded(|| AsyncDriver::build(make, &config))
        .map_err(|p| p.into_case_error(format!("{config:?}")))?
        .map_err(|e| CaseError::failed(format!("{config:?}\n  -> Err({e:?}), but this config is valid")))?;
    /// Sets its flag when the work is dropped.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let (guard, timer) = (Dropped(dropped.clone()), driver.timer.clone());
    let work: Work = Box::pin(async move {
        let _guard = guard;
        timer.sleep(Duration::from_secs(3600)).await;
        Ok(1)
    });
    let breaker = driver.breaker.clone();
    let runtime = &driver.runtime;
    let result = guarded(|| {
        runtime.block_on(async {
            let call = breaker.call(work);
            let watch = driver.timer.clone();
            let finished = tokio::select! {
                biased;
                result = call => Some(result),
                _ = watch.sleep(Duration::from_secs(60)) => None,
            };
            (finished, dropped.load(Ordering::SeqCst), whole_ms(&driver.timer))
        })
    })
    .map_err(|p| p.into_case_error(format!("{config:?}\ncall(work: Ok after 1h)")))?;
    driver.running.clear();
    match result {
        (Some(Err(CallError::Timeout)), true, 30) => Ok(()),
        (finished, dropped, at) => Err(CaseError::failed(format!(
            "{config:?}\ncall(work: Ok after 1h) -> {finished:?} at {at}ms, work dropped by then: {dropped}\n     \
             expected Err(Timeout) at 30ms, with the work dropped"
        ))),
    }
}

// ---------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------

pub const EXERCISE: &str = "circuit_breaker";
pub const L1: Level = Level { number: 1, name: "state_machine" };
pub const L2: Level = Level { number: 2, name: "sliding_window" };
pub const L3: Level = Level { number: 3, name: "threads" };
pub const L4: Level = Level { number: 4, name: "async_calls" };

pub fn suite(make: Factory) -> Vec<Case> {
    let case = |level, name, hints: Hints, deadline, run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, hints, deadline, move || run(make))
    };
    vec![
        case(L1, "config_errors", Hints::new(
            "Bad configs are refused with a typed error, never a panic: window 0 or above MAX_WINDOW, min_calls 0 or above \
             the window, a threshold outside 1..=100, probes 0; the first problem in validate's order is the error.",
            "Validation at construction turns a misconfiguration into a value the caller can handle: a breaker that could \
             never open (min_calls above the window) or never probe (0 probes) is a bug waiting in production.",
            "Call the contract's validate(&config)? first thing in new, before building anything."),
            QUICK, config_errors),
        case(L1, "transitions", Hints::new(
            "Closed admits everything and opens once min_calls outcomes are in and failures × 100 ≥ threshold × outcomes; \
             Open rejects with the exact retry_after until opened_at + cool_down; Half-open admits `probes` calls, closes \
             when all succeed and reopens on one failure. Every short sequence of calls is tried.",
            "A state machine whose transitions happen on outcomes and on time: opening is decided when an outcome is \
             recorded (a success can be the one that reaches min_calls), half-opening when the clock passes a deadline, \
             and each transition starts a fresh epoch whose counters begin at zero.",
            "An enum State { Closed { window }, Open { until }, HalfOpen { admitted, succeeded } } plus a generation \
             number under one Mutex; a permit carries the generation and its acquire time; on record, ignore it if the \
             generation changed, else update the phase and transition."),
            QUICK, |make| exhaustive_on(make, &STATE_MACHINE_CONFIGS, state_machine_letters, 6)),
        case(L1, "edges", Hints::new(
            "Edge cases: rejected with retry_after 1ns one nanosecond before the cool-down ends and a probe at it; late \
             outcomes of calls admitted before a state change; a dropped probe freeing its slot; one probe success of two \
             not closing; cool-down zero and Duration::MAX; the largest window.",
            "Boundaries: the cool-down is a half-open interval [opened_at, opened_at + cool_down); a permit outlives the \
             state it was admitted in; a permit that is dropped must give back what it took.",
            "Compare now >= opened_at + cool_down (Timestamp + Duration saturates, so MAX never ends); implement Drop on \
             the permit to release its slot unless it recorded; tag permits with the generation they were admitted in."),
            QUICK, |make| edge_scenarios().iter().try_for_each(|(config, ops)| replay_on(make, config, ops))),
        case(L2, "short_sequences", Hints::new(
            "The window holds the last N counted outcomes: when it is full, each new outcome pushes the oldest out. A success \
             slower than slow_call (strictly: at exactly slow_call it is not slow) counts as a failure. Every short \
             sequence of calls on windows of 2-4 is tried.",
            "A count-based sliding window: the rate is over the last N outcomes only, so old failures age out as new \
             successes arrive. The call's duration is measured by the breaker itself, from acquire to record.",
            "A ring buffer (or VecDeque) of N booleans plus a running failure count: push the new outcome, pop and \
             un-count the oldest when over N; compare failures * 100 >= percent * len in integers once len >= min_calls."),
            QUICK, |make| exhaustive_on(make, &WINDOW_CONFIGS, window_letters, 6)),
        case(L2, "random_sequences", Hints::new(
            "Random configs (windows 1-6, any min_calls and threshold, 1-3 probes, odd durations, zero and Duration::MAX) \
             and random sequences: permits held and ended in any order, drops, state reads, clock moves onto the slow and \
             cool-down boundaries.",
            "Every rule at once: integer thresholds (no floats: 1/3 vs 33%), the window cleared when the breaker closes, \
             late outcomes ignored, slow measured per permit from its own acquire time.",
            "Keep all of it in one state struct and derive every answer from it; compute rates with integers \
             (failures * 100 >= percent * calls); store each permit's acquire instant in the permit."),
            QUICK, |make| random_case(make, Budget { cases: 1000, ..Budget::default() }, 40)),
        case(L2, "long_sequences", Hints::new(
            "Sequences of up to 300 calls: the window keeps sliding through many openings and closings, and the answers \
             stay right however long the history runs.",
            "State that is only ever added to drifts: a failure count that is not decremented when its outcome leaves \
             the window, or a window that is not emptied when the breaker closes, shows only after many calls.",
            "When popping the oldest outcome, subtract it from the running count; on closing from Half-open, start a \
             new empty window (and count) rather than reusing the old one."),
            QUICK, |make| random_case(make, Budget { cases: 100, ..Budget::default() }, 300)),
        case(L3, "linearizable", Hints::new(
            "Threads acquire, record and drop permits while the clock moves: every result must be explained by some \
             one-at-a-time order of the calls, each taking effect at one instant.",
            "Check-then-act: reading the state, deciding and updating must be one atomic step, with the time read inside \
             it; an outcome that races with a transition must be judged against the state it lands in.",
            "One Mutex around the whole state (phase, window, generation); read the clock while holding it, in \
             try_acquire and in record; the permit keeps an Arc to the shared state."),
            THREADED, linearizable),
        case(L3, "exact_probes", Hints::new(
            "8 threads race try_acquire() in Half-open: exactly `probes` permits are handed out in every round, never more \
             and never fewer.",
            "Two threads that both see `admitted < probes` and both increment admit one probe too many: the check and \
             the increment must be a single atomic step.",
            "Do the check and the increment under the same lock, or with one compare_exchange loop on an atomic counter \
             (never a load followed by a separate fetch_add)."),
            THREADED, exact_probes),
        case(L4, "call_sequences", Hints::new(
            "call(work) asks for a permit when first polled; rejected calls return at once without polling the work; \
             admitted ones end when the work finishes or at the timeout (Err(Timeout), a failure, the work dropped); a \
             caller that drops its call frees its slot. Every short sequence of calls and sleeps is tried, in virtual time.",
            "A timeout is a race between the work and a timer; whichever finishes first decides, and the loser is \
             dropped. Futures are lazy: not polling the work is how a rejected call never runs it.",
            "Acquire first (return Rejected on Err); then select between the work and timer.sleep(timeout) (e.g. \
             tokio::select! or a poll_fn polling both); record success/failure on the permit; the permit's Drop handles \
             a cancelled call."),
            QUICK, |make| {
                exhaustive(&ASYNC_CONFIGS, |_| call_letters(), 4, |_| true, |config, ops| async_replay(make, config, ops))
            }),
        case(L4, "random_calls", Hints::new(
            "Random configs and timeouts with many overlapping calls: calls admitted before a state change count for \
             nothing when they end, timeouts count as failures, and slow successes too.",
            "Overlapping calls end in time order, so one call's outcome can change the state another call was admitted \
             in; time is the timer's, read when the permit is acquired and when the call ends.",
            "Build the async breaker around your synchronous Breaker with TimerClock::shared(timer) as its clock, so the \
             rules (generations included) live in one place."),
            QUICK, |make| random(random_calls(), Budget { cases: 768, ..Budget::default() }, |(c, ops)| async_replay(make, c, ops))),
        case(L4, "timeout_cancels_work", Hints::new(
            "A call still running at its timeout returns Err(Timeout) exactly then, and its work future is dropped \
             (cancelled) at that moment. Timeouts under 1ms are refused with TimeoutTooShort, after the config is checked.",
            "Cancellation in async Rust is dropping the future: a timed-out work that is kept, or left running in a spawned \
             task, still holds its connection and its memory.",
            "Own the work future inside call's future and let the select drop it when the timer wins; do not tokio::spawn \
             the work. Validate the config, then the timeout, in new."),
            QUICK, timeout_cancels_work),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement's worked example, replayed on the model.
    #[test]
    fn the_worked_example_replays_on_the_model() {
        let config = BreakerConfig {
            window: 4,
            min_calls: 2,
            failure_rate_percent: 50,
            slow_call: Duration::from_millis(500),
            cool_down: Duration::from_secs(30),
            probes: 1,
        };
        let ops = [
            (acquire(), "Ok(p1)"),
            (succeed(), "(p1)"),
            (acquire(), "Ok(p2)"),
            (Op::Advance(Duration::from_millis(600)), "()"),
            (succeed(), "(p2)"),
            (Op::State, "Open"),
            (acquire(), "Err(Open { retry_after: 30s })"),
            (Op::Advance(Duration::from_secs(30)), "()"),
            (acquire(), "Ok(p3)"),
            (acquire(), "Err(ProbesBusy)"),
            (succeed(), "(p3)"),
            (Op::State, "Closed"),
        ];
        let mut model = BreakerSpec::model(&config);
        for (op, expected) in ops {
            assert_eq!(format!("{:?}", BreakerSpec::step(&mut model, &op)), expected, "{op:?}");
        }
    }

    #[test]
    fn generated_async_sequences_never_tie_a_work_with_its_timeout() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..200 {
            let (config, ops) = random_calls().new_tree(&mut runner).unwrap().current();
            let timeout = config.timeout.as_millis() as u64;
            assert!(ops.iter().all(|op| !matches!(op, CallOp::Call { work_ms, .. } if *work_ms == timeout)));
            assert!(super::super::validate(&config.breaker).is_ok());
        }
        for config in ASYNC_CONFIGS {
            let timeout = config.timeout.as_millis() as u64;
            assert!(call_letters().iter().all(|op| !matches!(op, CallOp::Call { work_ms, .. } if *work_ms == timeout)));
        }
    }
}
