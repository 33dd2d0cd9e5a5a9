//! The model of the window-limit exercise: every key's allowed requests as a log of
//! (time, cost), from which each [`Algorithm`] counts exactly as its doc says
//! ([`allows`]); the ops and outputs of a graded sequence; the [`Spec`] that
//! sequential replays and linearizability checks both run.
//!
//! One log for all three algorithms keeps the model close to the contract's words:
//! "cost allowed in `now`'s window", "cost logged in `(now − W, now]`", "the window
//! just before" are each one sum over the log.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::contract::{validate, Algorithm, LimitError, WindowDecision, WindowQuota, MAX_WINDOW};
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// Cost allowed in `[from, to)` by `log`.
fn cost_in(log: &[(u64, u32)], from: u64, to: u64) -> u128 {
    log.iter().filter(|&&(t, _)| from <= t && t < to).map(|&(_, c)| u128::from(c)).sum()
}

/// Whether `quota` allows `cost` at `now` for a key whose allowed requests are `log`
/// (every time in it at most `now`), counted by `algorithm`.
pub(super) fn allows(algorithm: Algorithm, quota: WindowQuota, log: &[(u64, u32)], now: u64, cost: u32) -> bool {
    let w = quota.window_nanos();
    let limit = u128::from(quota.limit());
    let cost = u128::from(cost);
    let start = now - now % w;
    match algorithm {
        Algorithm::FixedWindow => cost_in(log, start, now + 1) + cost <= limit,
        Algorithm::SlidingLog => {
            // (now − W, now]: times t with t > now − W, i.e. t ≥ now − W + 1.
            let from = (now + 1).saturating_sub(w);
            cost_in(log, from, now + 1) + cost <= limit
        }
        Algorithm::SlidingWindowCounter => {
            let e = now - start;
            let prev = if start >= w { cost_in(log, start - w, start) } else { 0 };
            let cur = cost_in(log, start, now + 1);
            let w = u128::from(w);
            prev * (w - u128::from(e)) + (cur + cost) * w <= limit * w
        }
    }
}

/// The quotas ops refer to by index, so ops stay short to print: second- and
/// millisecond-scale windows, an odd-nanosecond window, a 1ns window with the largest
/// limit, and [`MAX_WINDOW`] with small and largest limits.
pub const QUOTAS: [(u32, Duration); 10] = [
    (1, Duration::from_secs(1)),
    (2, Duration::from_secs(1)),
    (3, Duration::from_millis(500)),
    (5, Duration::from_millis(100)),
    (4, Duration::from_millis(250)),
    (10, Duration::from_secs(60)),
    // From here on: not whole microseconds, or past what Redis's doubles hold exactly.
    (3, Duration::from_nanos(333_333)),
    (u32::MAX, Duration::from_nanos(1)),
    (3, MAX_WINDOW),
    (u32::MAX, MAX_WINDOW),
];

/// Quotas `QUOTAS[..REDIS_QUOTAS]` are exact on Redis (whole-millisecond windows).
pub const REDIS_QUOTAS: u8 = 6;

pub fn quota(index: u8) -> WindowQuota {
    let (limit, window) = QUOTAS[usize::from(index) % QUOTAS.len()];
    WindowQuota::new(limit, window).expect("the fixed quotas are valid")
}

/// One call, or a move of the test's clock.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    /// `check([(key, QUOTAS[q]), ...], cost)`.
    Check {
        limits: Vec<(u8, u8)>,
        cost: u32,
    },
    Advance(Duration),
    /// The clock steps back.
    Rewind(Duration),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Check { limits, cost } => {
                let limits: Vec<String> = limits.iter().map(|&(k, q)| format!("k{k}: {:?}", quota(q))).collect();
                write!(f, "check([{}], cost {cost})", limits.join(", "))
            }
            Op::Advance(d) => write!(f, "clock.advance({d:?})"),
            Op::Rewind(d) => write!(f, "clock.rewind({d:?})"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    Decided(Result<WindowDecision, LimitError>),
    Nothing,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Decided(Ok(d)) => write!(f, "{d:?}"),
            Output::Decided(Err(e)) => write!(f, "Err({e:?})"),
            Output::Nothing => write!(f, "()"),
        }
    }
}

/// The model: each key's quota and allowed requests (pruned to the last 2·W, beyond
/// which nothing counts), the test clock, and the latest time the limiter has seen.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct Model {
    algorithm: Algorithm,
    clock: Timestamp,
    pub(super) latest: Timestamp,
    pub(super) logs: BTreeMap<u8, (WindowQuota, Vec<(u64, u32)>)>,
}

/// Where graded clocks start: a whole number of seconds (so windows of whole
/// milliseconds start there), far enough from zero that rewinds never saturate.
pub(super) const START: Timestamp = Timestamp::from_nanos(1_000_000_000_000);

pub(super) struct WindowLimitSpec;

/// The limiter's configuration: its algorithm.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Config(pub Algorithm);

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limiter = WindowLimiter::new({:?}, clock), clock at {START:?}", self.0)
    }
}

impl Model {
    /// Decides a validated request at the limiter's time, and counts it if allowed.
    pub(super) fn decide(&mut self, limits: &[(u8, WindowQuota)], cost: u32) -> WindowDecision {
        let now = self.latest.as_nanos();
        let empty = Vec::new();
        let refusing = limits.iter().position(|(k, q)| {
            let log = self.logs.get(k).map_or(&empty, |(_, log)| log);
            !allows(self.algorithm, *q, log, now, cost)
        });
        if let Some(limiting) = refusing {
            return WindowDecision::Denied { limiting };
        }
        if cost > 0 {
            for &(k, q) in limits {
                self.logs.entry(k).or_insert((q, Vec::new())).1.push((now, cost));
            }
        }
        // Nothing older than 2·W counts under any algorithm: pruning keeps the state
        // canonical (a key with nothing left is a fresh key).
        for (q, log) in self.logs.values_mut() {
            let horizon = now.saturating_sub(2 * q.window_nanos());
            log.retain(|&(t, _)| t > horizon);
        }
        self.logs.retain(|_, (_, log)| !log.is_empty());
        WindowDecision::Allowed
    }
}

impl Spec for WindowLimitSpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(config: &Config) -> Model {
        Model { algorithm: config.0, clock: START, latest: Timestamp::ZERO, logs: BTreeMap::new() }
    }

    fn hint(_: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        let (Output::Decided(expected), Output::Decided(actual)) = (expected, actual) else { return None };
        Some(match (expected, actual) {
            (Err(_), _) | (_, Err(_)) => {
                "Errors come first and change nothing: no limits is NoLimits, a key named twice is DuplicateKey (first and \
                 second positions), a cost above some limit is CostExceedsBurst (the first such limit, its limit as burst). \
                 A valid request is never an error."
            }
            (Ok(e), Ok(a)) if e.is_allowed() != a.is_allowed() => {
                "A request is allowed iff every limit it names allows it, counted by the limiter's algorithm exactly as the \
                 contract states it: fixed windows [k·W, (k+1)·W) on the nanosecond timeline; a log counting times t with \
                 now − W < t ≤ now; a counter with prev·(W − e) + (cur + cost)·W ≤ limit·W, prev being only the window just \
                 before. Only allowed cost counts, one request of cost c counts c, a denied request counts nowhere, and a \
                 clock that steps back changes nothing."
            }
            _ => "limiting is the first limit, in the caller's order, that refuses the request on its own.",
        })
    }

    fn step(model: &mut Model, op: &Op) -> Output {
        match op {
            Op::Advance(d) => {
                model.clock = model.clock.advanced(*d);
                Output::Nothing
            }
            Op::Rewind(d) => {
                model.clock = model.clock - *d;
                Output::Nothing
            }
            Op::Check { limits, cost } => {
                let limits: Vec<(u8, WindowQuota)> = limits.iter().map(|&(k, q)| (k, quota(q))).collect();
                if let Err(e) = validate(&limits, *cost) {
                    return Output::Decided(Err(e));
                }
                model.latest = model.latest.max(model.clock);
                Output::Decided(Ok(model.decide(&limits, *cost)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 1_000_000_000;

    #[test]
    fn fixed_windows_reset_at_the_boundary_and_let_two_limits_through_across_it() {
        let q = quota(1); // 2 per 1s
        let log = [(START.as_nanos() + W - 1, 2)];
        assert!(!allows(Algorithm::FixedWindow, q, &log, START.as_nanos() + W - 1, 1));
        assert!(allows(Algorithm::FixedWindow, q, &log, START.as_nanos() + W, 2));
        assert!(!allows(Algorithm::SlidingLog, q, &log, START.as_nanos() + W, 1));
    }

    #[test]
    fn the_log_forgets_a_request_exactly_w_later() {
        let q = quota(1);
        let log = [(START.as_nanos(), 2)];
        assert!(!allows(Algorithm::SlidingLog, q, &log, START.as_nanos() + W - 1, 1));
        assert!(allows(Algorithm::SlidingLog, q, &log, START.as_nanos() + W, 2));
    }

    #[test]
    fn the_counter_weights_only_the_window_just_before() {
        let q = quota(1); // 2 per 1s
        let t0 = START.as_nanos();
        let log = [(t0, 2)];
        // 0.4 W into the next window: 2·0.6 + 1 = 2.2 > 2, denied; 0.5 W: 1 + 1 = 2, allowed.
        assert!(!allows(Algorithm::SlidingWindowCounter, q, &log, t0 + W + 2 * W / 5, 1));
        assert!(allows(Algorithm::SlidingWindowCounter, q, &log, t0 + W + W / 2, 1));
        // Two windows later the old window is not "previous": nothing counts.
        assert!(allows(Algorithm::SlidingWindowCounter, q, &log, t0 + 2 * W, 2));
    }

    #[test]
    fn the_counter_is_exact_where_f64_rounds() {
        // limit u32::MAX, W = 2^62: at e = 2^30 the exact rule denies one more request
        // after a full previous window (L·(W − e) + W > L·W, as W > L·e), where f64
        // rounds prev·(W − e)/W = L − 1 + 2^−32... down to L − 1 and allows it.
        let q = quota(9);
        let w = q.window_nanos();
        let start = 2 * w;
        let log = [(start - 1, u32::MAX)];
        assert!(!allows(Algorithm::SlidingWindowCounter, q, &log, start + (1 << 30), 1));
        assert!(allows(Algorithm::SlidingWindowCounter, q, &log, start + (1 << 30) + 1, 1));
        let float = (u32::MAX as f64) * ((w - (1 << 30)) as f64 / w as f64) + 1.0;
        assert!(float <= u32::MAX as f64, "f64 would allow it: {float}");
    }
    /// The worked example of `exercises/statements/window_limit.md`, step by step, for
    /// each algorithm (t = 0 there is `START` here: a whole second, so windows align).
    #[test]
    fn model_agrees_with_the_statements_worked_example() {
        use WindowDecision::{Allowed as A, Denied};
        let user = WindowQuota::new(4, Duration::from_secs(1)).unwrap();
        let tenant = WindowQuota::new(10, Duration::from_secs(1)).unwrap();
        let d0 = Denied { limiting: 0 };
        let d1 = Denied { limiting: 1 };
        let expected = [
            (Algorithm::FixedWindow, [A, A, d0, d0, d1]),
            (Algorithm::SlidingLog, [A, d0, d0, A, d1]),
            (Algorithm::SlidingWindowCounter, [A, d0, A, d0, d1]),
        ];
        for (algorithm, answers) in expected {
            let mut model = WindowLimitSpec::model(&Config(algorithm));
            let steps = [
                (900u64, vec![(0u8, user)], 4u32),
                (1000, vec![(0, user)], 4),
                (1500, vec![(0, user)], 2),
                (1900, vec![(0, user)], 2),
                (1900, vec![(1, tenant), (0, user)], 3),
            ];
            for ((ms, limits, cost), answer) in steps.into_iter().zip(answers) {
                model.latest = START + Duration::from_millis(ms);
                assert_eq!(validate(&limits, cost), Ok(()));
                assert_eq!(model.decide(&limits, cost), answer, "{algorithm:?} at {ms}ms");
            }
            assert!(!model.logs.contains_key(&1), "{algorithm:?}: the denial counted nothing on tenant:7");
            assert_eq!(validate(&[(0, user)], 5), Err(LimitError::CostExceedsBurst { index: 0, cost: 5, burst: 4 }));
        }
    }
}
