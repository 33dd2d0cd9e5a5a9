//! The model of the circuit-breaker exercise: the breaker's state machine ([`Core`]),
//! the ops and outputs of a graded sequence with the [`Spec`] that sequential replays
//! and linearizability checks both run ([`BreakerSpec`]), and the model of level 4's
//! async calls in virtual milliseconds ([`AsyncSpec`]).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::contract::{BreakerConfig, CallError, Rejected, State};
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// How a permit ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    Success,
    Failure,
    /// Dropped without a record.
    Drop,
}

/// The phase of the breaker, with what each phase needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// The window: the last `window` counted outcomes, `true` for a failure, oldest first.
    Closed(VecDeque<bool>),
    Open {
        until: Timestamp,
    },
    /// `admitted`: probes in flight plus probes that succeeded.
    HalfOpen {
        admitted: u32,
        succeeded: u32,
    },
}

/// The breaker itself: phase and generation (bumped at every state change; a permit of
/// an older generation is ignored).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Core {
    config: BreakerConfig,
    phase: Phase,
    generation: u32,
}

impl Core {
    pub(super) fn new(config: BreakerConfig) -> Core {
        Core { config, phase: Phase::Closed(VecDeque::new()), generation: 0 }
    }

    fn change(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }

    /// Open turns Half-open at `opened_at + cool_down`, whoever looks first.
    fn settle(&mut self, now: Timestamp) {
        if let Phase::Open { until } = self.phase {
            if now >= until {
                self.change(Phase::HalfOpen { admitted: 0, succeeded: 0 });
            }
        }
    }

    pub(super) fn state(&mut self, now: Timestamp) -> State {
        self.settle(now);
        match self.phase {
            Phase::Closed(_) => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// `try_acquire` at `now`: the permit's generation, or why not.
    pub(super) fn acquire(&mut self, now: Timestamp) -> Result<u32, Rejected> {
        self.settle(now);
        match &mut self.phase {
            Phase::Closed(_) => Ok(self.generation),
            Phase::Open { until } => Err(Rejected::Open { retry_after: until.saturating_duration_since(now) }),
            Phase::HalfOpen { admitted, .. } if *admitted < self.config.probes => {
                *admitted += 1;
                Ok(self.generation)
            }
            Phase::HalfOpen { .. } => Err(Rejected::ProbesBusy),
        }
    }

    /// A permit of `generation`, acquired at `acquired_at`, ends at `now`.
    pub(super) fn finish(&mut self, generation: u32, acquired_at: Timestamp, now: Timestamp, end: End) {
        if generation != self.generation {
            return; // admitted before the latest state change: ignored
        }
        let failed = match end {
            End::Drop => {
                if let Phase::HalfOpen { admitted, .. } = &mut self.phase {
                    *admitted -= 1;
                }
                return;
            }
            End::Failure => true,
            End::Success => now.saturating_duration_since(acquired_at) > self.config.slow_call,
        };
        let reopen = Phase::Open { until: now + self.config.cool_down };
        match &mut self.phase {
            Phase::Closed(window) => {
                window.push_back(failed);
                if window.len() > self.config.window as usize {
                    window.pop_front();
                }
                let calls = window.len() as u64;
                let failures = window.iter().filter(|&&f| f).count() as u64;
                if calls >= u64::from(self.config.min_calls)
                    && failures * 100 >= u64::from(self.config.failure_rate_percent) * calls
                {
                    self.change(reopen);
                }
            }
            Phase::HalfOpen { .. } if failed => self.change(reopen),
            Phase::HalfOpen { succeeded, .. } => {
                *succeeded += 1;
                if *succeeded == self.config.probes {
                    self.change(Phase::Closed(VecDeque::new()));
                }
            }
            // No permit of the current generation exists while Open.
            Phase::Open { .. } => {}
        }
    }
}

/// Which of a caller's held permits an op ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Which {
    Oldest,
    Newest,
}

/// One call on the breaker, or a move of the test's clock. `caller` is the thread (0 in
/// sequential cases); each caller holds its own permits, numbered p1, p2, ... in the
/// order it got them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Acquire { caller: u8 },
    End { caller: u8, which: Which, end: End },
    State,
    Advance(Duration),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Acquire { .. } => write!(f, "try_acquire()"),
            Op::End { which, end, .. } => {
                let permit = match which {
                    Which::Oldest => "oldest_permit",
                    Which::Newest => "newest_permit",
                };
                match end {
                    End::Success => write!(f, "{permit}.record_success()"),
                    End::Failure => write!(f, "{permit}.record_failure()"),
                    End::Drop => write!(f, "drop({permit})"),
                }
            }
            Op::State => write!(f, "state()"),
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// The permit's number (per caller), or the rejection.
    Acquired(Result<u32, Rejected>),
    /// The permit that ended, or `None` when the caller held none (nothing happens).
    Ended(Option<u32>),
    State(State),
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Acquired(Ok(n)) => write!(f, "Ok(p{n})"),
            Output::Acquired(Err(r)) => write!(f, "Err({r:?})"),
            Output::Ended(Some(n)) => write!(f, "(p{n})"),
            Output::Ended(None) => write!(f, "(no permit held: nothing to do)"),
            Output::State(s) => write!(f, "{s:?}"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

/// A permit a caller holds, in the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Held {
    number: u32,
    generation: u32,
    acquired_at: Timestamp,
}

/// The model: the breaker, the test clock, and each caller's permits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Model {
    core: Core,
    now: Timestamp,
    held: Vec<Vec<Held>>,
    issued: Vec<u32>,
}

impl Model {
    /// How many permits `caller` holds (generators use it to skip ops that do nothing).
    pub(super) fn held_by(&self, caller: u8) -> usize {
        self.held.get(usize::from(caller)).map_or(0, Vec::len)
    }
}

/// Where graded clocks start.
pub(super) const START: Timestamp = Timestamp::from_nanos(1_000_000_000_000);

/// The circuit-breaker specification.
pub(super) struct BreakerSpec;

impl Spec for BreakerSpec {
    type Config = BreakerConfig;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &BreakerConfig) -> Model {
        Model { core: Core::new(*config), now: START, held: Vec::new(), issued: Vec::new() }
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match *op {
            Op::Advance(d) => {
                model.now = model.now.advanced(d);
                Output::Nothing
            }
            Op::State => Output::State(model.core.state(model.now)),
            Op::Acquire { caller } => {
                let caller = usize::from(caller);
                if model.held.len() <= caller {
                    model.held.resize(caller + 1, Vec::new());
                    model.issued.resize(caller + 1, 0);
                }
                let generation = match model.core.acquire(model.now) {
                    Ok(generation) => generation,
                    Err(rejected) => return Output::Acquired(Err(rejected)),
                };
                model.issued[caller] += 1;
                let number = model.issued[caller];
                model.held[caller].push(Held { number, generation, acquired_at: model.now });
                Output::Acquired(Ok(number))
            }
            Op::End { caller, which, end } => {
                let Some(held) = model.held.get_mut(usize::from(caller)).filter(|h| !h.is_empty()) else {
                    return Output::Ended(None);
                };
                let permit = match which {
                    Which::Oldest => held.remove(0),
                    Which::Newest => held.pop().expect("not empty"),
                };
                model.core.finish(permit.generation, permit.acquired_at, model.now, end);
                Output::Ended(Some(permit.number))
            }
        }
    }

    fn hint(op: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        Some(match (op, expected, actual) {
            (_, Output::Acquired(Ok(_)), Output::Acquired(Err(Rejected::Open { .. })))
            | (_, Output::State(State::Closed), Output::State(State::Open)) => {
                "The breaker opened too early (or stayed open too long). Closed opens only after a counted outcome, when \
                 the window holds at least min_calls outcomes and failures × 100 ≥ failure_rate_percent × outcomes; the \
                 window holds only the last `window` counted outcomes since the breaker last closed; Open lasts exactly \
                 cool_down; outcomes of permits from before the latest state change, and dropped permits, count for nothing."
            }
            (_, Output::Acquired(Err(Rejected::Open { .. })), Output::Acquired(Ok(_)))
            | (_, Output::State(State::Open), Output::State(_)) => {
                "The breaker should be open here. It opens at the outcome that brings the failure rate over the last \
                 `window` outcomes to the threshold (≥, once min_calls outcomes are in; a success can be that outcome), a \
                 success slower than slow_call counts as a failure, and any failed probe in Half-open reopens it at once."
            }
            (_, Output::Acquired(Err(Rejected::Open { .. })), Output::Acquired(Err(Rejected::Open { .. }))) => {
                "retry_after is exact: opened_at + cool_down − now, where opened_at is the instant of the outcome that \
                 opened the breaker (not the first failure, not the acquire of that call)."
            }
            (_, Output::Acquired(Err(Rejected::ProbesBusy)), _) | (_, _, Output::Acquired(Err(Rejected::ProbesBusy))) => {
                "Half-open admits at most `probes` trial calls: those in flight plus those that already succeeded. A \
                 dropped probe frees its slot; once every probe has succeeded the breaker is Closed (admits everything), \
                 and one failed probe reopens it."
            }
            (_, Output::State(_), Output::State(_)) | (_, Output::Acquired(_), Output::Acquired(_)) => {
                "Open becomes Half-open exactly at opened_at + cool_down; Half-open closes (with an empty window) once \
                 `probes` probes have succeeded, and reopens on the first failed or slow probe."
            }
            (Op::End { .. }, _, _) => "Ending a permit returns nothing; the number shows which permit the test ended.",
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------
// Level 4: async calls with a timeout, in virtual milliseconds
// ---------------------------------------------------------------------------------

/// One step of an async sequence. Calls are numbered c1, c2, ... in the order made.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum CallOp {
    /// `call(work)` where `work` finishes after `work_ms` (0: ready when first polled)
    /// with `Ok(id)`, or `Err(id)` if `fails`. The call is polled once, then left running.
    Call {
        work_ms: u64,
        fails: bool,
    },
    /// Virtual time runs for this many milliseconds, the running calls polled as they wake.
    Sleep(u64),
    /// The caller drops the oldest running call's future.
    CancelOldest,
    State,
}

impl fmt::Debug for CallOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallOp::Call { work_ms, fails } => {
                let result = if *fails { "Err" } else { "Ok" };
                write!(f, "call(work: {result} after {work_ms}ms)")
            }
            CallOp::Sleep(ms) => write!(f, "sleep({ms}ms)"),
            CallOp::CancelOldest => write!(f, "drop(oldest running call)"),
            CallOp::State => write!(f, "state()"),
        }
    }
}

/// What `call` returned: the work's value or error is the call's number.
pub type CallResult = Result<u32, CallError<u32>>;

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum CallOutput {
    /// Call number `id`, and its result if it finished on its first poll (`None`: running).
    Started {
        id: u32,
        result: Option<CallResult>,
    },
    /// A rejected call whose work was polled anyway (never right).
    RejectedButPolled {
        id: u32,
        result: CallResult,
    },
    /// The calls that finished during a sleep, in order: (id, ms since the start, result).
    Finished(Vec<(u32, u64, CallResult)>),
    /// The call whose future was dropped (`None`: none was running).
    Cancelled(Option<u32>),
    State(State),
}

impl fmt::Debug for CallOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallOutput::Started { id, result: None } => write!(f, "c{id} running"),
            CallOutput::Started { id, result: Some(r) } => write!(f, "c{id} returned {r:?}"),
            CallOutput::RejectedButPolled { id, result } => {
                write!(f, "c{id} returned {result:?}, but its work was polled")
            }
            CallOutput::Finished(done) => {
                let done: Vec<String> = done.iter().map(|(id, at, r)| format!("c{id} at {at}ms: {r:?}")).collect();
                write!(f, "[{}]", done.join(", "))
            }
            CallOutput::Cancelled(Some(id)) => write!(f, "(c{id} dropped)"),
            CallOutput::Cancelled(None) => write!(f, "(no call running)"),
            CallOutput::State(s) => write!(f, "{s:?}"),
        }
    }
}

/// Level 4's config: the breaker's and the call timeout.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AsyncConfig {
    pub breaker: BreakerConfig,
    pub timeout: Duration,
}

impl fmt::Debug for AsyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.breaker;
        write!(
            f,
            "breaker = AsyncBreaker::new(window {}, min_calls {}, failure_rate {}%, slow_call > {:?}, cool_down {:?}, probes {}; \
             timeout {:?}, a paused tokio timer at 0ms)",
            b.window, b.min_calls, b.failure_rate_percent, b.slow_call, b.cool_down, b.probes, self.timeout
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Running {
    id: u32,
    generation: u32,
    acquired_at: u64,
    /// When it ends (work done or timed out), and how.
    ends_at: u64,
    result: CallResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct AsyncModel {
    core: Core,
    timeout_ms: u64,
    now_ms: u64,
    calls: u32,
    running: Vec<Running>,
}

fn at_ms(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * 1_000_000)
}

impl AsyncModel {
    fn end(&mut self, call: Running, now_ms: u64) {
        let end = if call.result.is_ok() { End::Success } else { End::Failure };
        self.core.finish(call.generation, at_ms(call.acquired_at), at_ms(now_ms), end);
    }
}

pub(super) struct AsyncSpec;

impl Spec for AsyncSpec {
    type Config = AsyncConfig;
    type Op = CallOp;
    type Output = CallOutput;
    type Model = AsyncModel;

    fn model(config: &AsyncConfig) -> AsyncModel {
        let timeout_ms = u64::try_from(config.timeout.as_millis()).expect("graded timeouts are short");
        AsyncModel { core: Core::new(config.breaker), timeout_ms, now_ms: 0, calls: 0, running: Vec::new() }
    }

    fn step(model: &mut AsyncModel, op: &CallOp) -> CallOutput {
        match *op {
            CallOp::State => CallOutput::State(model.core.state(at_ms(model.now_ms))),
            CallOp::Call { work_ms, fails } => {
                model.calls += 1;
                let id = model.calls;
                let generation = match model.core.acquire(at_ms(model.now_ms)) {
                    Ok(generation) => generation,
                    Err(r) => return CallOutput::Started { id, result: Some(Err(CallError::Rejected(r))) },
                };
                let work = if fails { Err(CallError::Failed(id)) } else { Ok(id) };
                let (ends_at, result) = if work_ms < model.timeout_ms {
                    (model.now_ms + work_ms, work)
                } else {
                    (model.now_ms + model.timeout_ms, Err(CallError::Timeout))
                };
                let call = Running { id, generation, acquired_at: model.now_ms, ends_at, result };
                if work_ms == 0 {
                    let result = call.result;
                    model.end(call, model.now_ms);
                    return CallOutput::Started { id, result: Some(result) };
                }
                model.running.push(call);
                CallOutput::Started { id, result: None }
            }
            CallOp::Sleep(ms) => {
                let target = model.now_ms + ms;
                let mut done = Vec::new();
                // Calls end in time order, those at one instant in the order they were made.
                while let Some(next) = (0..model.running.len())
                    .filter(|&i| model.running[i].ends_at <= target)
                    .min_by_key(|&i| (model.running[i].ends_at, model.running[i].id))
                {
                    let call = model.running.remove(next);
                    model.now_ms = call.ends_at;
                    done.push((call.id, call.ends_at, call.result));
                    model.end(call, model.now_ms);
                }
                model.now_ms = target;
                CallOutput::Finished(done)
            }
            CallOp::CancelOldest => {
                if model.running.is_empty() {
                    return CallOutput::Cancelled(None);
                }
                let call = model.running.remove(0);
                model.core.finish(call.generation, at_ms(call.acquired_at), at_ms(model.now_ms), End::Drop);
                CallOutput::Cancelled(Some(call.id))
            }
        }
    }

    fn hint(op: &CallOp, expected: &CallOutput, actual: &CallOutput) -> Option<&'static str> {
        Some(match (op, expected, actual) {
            (_, _, CallOutput::RejectedButPolled { .. }) => {
                "A rejected call must not touch its work: return the rejection before the work is ever polled (futures \
                 are lazy, so not polling it is enough; do not start it to find out)."
            }
            (CallOp::Sleep(_), CallOutput::Finished(_), CallOutput::Finished(_)) => {
                "Each admitted call ends when its work finishes or when `timeout` has passed since it was admitted, \
                 whichever is first: a timed-out call returns Err(Timeout), its work dropped, and counts as a failure; \
                 the work's Err(e) is Failed(e), a failure; Ok(v) is a success unless slower than slow_call. Calls \
                 admitted before the breaker's latest state change count for nothing."
            }
            (CallOp::Call { .. }, _, _) => {
                "A call asks the breaker for a permit when first polled: Closed admits, Open rejects with the exact \
                 retry_after, Half-open admits up to `probes` calls (in flight or succeeded); a call dropped by its caller \
                 frees its slot and is not counted, a timed-out one counts as a failure."
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: u32, min_calls: u32, percent: u32, probes: u32) -> BreakerConfig {
        BreakerConfig {
            window,
            min_calls,
            failure_rate_percent: percent,
            slow_call: Duration::from_millis(100),
            cool_down: Duration::from_secs(10),
            probes,
        }
    }

    #[test]
    fn the_window_slides_and_the_threshold_is_inclusive() {
        let mut core = Core::new(config(3, 2, 50, 1));
        let t = START;
        // F S: 1 of 2 = 50% >= 50%: opens on the success that reached min_calls.
        let g = core.acquire(t).unwrap();
        core.finish(g, t, t, End::Failure);
        assert_eq!(core.state(t), State::Closed);
        let g = core.acquire(t).unwrap();
        core.finish(g, t, t, End::Success);
        assert_eq!(core.state(t), State::Open);
        assert_eq!(core.acquire(t), Err(Rejected::Open { retry_after: Duration::from_secs(10) }));
        let later = t + Duration::from_secs(10);
        assert_eq!(core.acquire(later), Ok(core.generation));
        assert_eq!(core.acquire(later), Err(Rejected::ProbesBusy));
    }

    #[test]
    fn late_outcomes_are_ignored_and_slow_successes_fail() {
        let mut core = Core::new(config(2, 1, 100, 1));
        let t = START;
        let old = core.acquire(t).unwrap();
        let g = core.acquire(t).unwrap();
        core.finish(g, t, t + Duration::from_millis(101), End::Success); // slow: opens
        assert_eq!(core.state(t), State::Open);
        let reopened = core.clone();
        core.finish(old, t, t, End::Success);
        assert_eq!(core, reopened, "a permit from before the state change changes nothing");
    }
}
