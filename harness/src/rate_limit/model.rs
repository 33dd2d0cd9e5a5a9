//! The model of the rate-limit exercise: GCRA in exact integer nanoseconds
//! ([`decide`]), the ops and outputs of a graded sequence, and the [`Spec`] that
//! sequential replays and linearizability checks both run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::contract::{validate, Decision, LimitError, Quota};
use crate::clock::Timestamp;
use crate::sequential::Spec;

/// GCRA for one request over buckets whose stored arrival times are `tats` (`None`
/// for a fresh bucket). Returns the decision and, if allowed, the new arrival times.
/// This is the model's arithmetic, exact in integer nanoseconds: sums are taken in
/// `u128` (`tat + cost·T` may pass `u64::MAX`); stored times fit in `u64` (at most
/// now + τ, both below [`NANOS_LIMIT`](super::NANOS_LIMIT)).
pub(super) fn decide(now: Timestamp, limits: &[Quota], tats: &[Option<u64>], cost: u32) -> (Decision, Vec<u64>) {
    let now = u128::from(now.as_nanos());
    // For each bucket: (arrival time now, arrival time if allowed, conforms?, retry after).
    let buckets: Vec<(u128, u128, bool, u128)> = limits
        .iter()
        .zip(tats)
        .map(|(quota, tat)| {
            let tat = tat.map_or(now, u128::from).max(now);
            let new_tat = tat + u128::from(cost) * u128::from(quota.period_nanos());
            let earliest = new_tat.saturating_sub(u128::from(quota.tolerance_nanos()));
            (tat, new_tat, earliest <= now, earliest.saturating_sub(now))
        })
        .collect();
    let allowed = buckets.iter().all(|b| b.2);
    let after: Vec<u128> = buckets.iter().map(|&(tat, new_tat, ..)| if allowed { new_tat } else { tat }).collect();
    let remaining: Vec<u32> = limits
        .iter()
        .zip(&after)
        .map(|(q, &tat)| {
            let whole = (now + u128::from(q.tolerance_nanos())).saturating_sub(tat) / u128::from(q.period_nanos());
            u32::try_from(whole).expect("at most the burst")
        })
        .collect();
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).expect("within τ"));
    let reset = after.iter().map(|&tat| tat - now).max().unwrap_or(0);
    let (limiting, retry) = if allowed {
        let fewest = *remaining.iter().min().unwrap_or(&0);
        (remaining.iter().position(|&r| r == fewest).unwrap_or(0), 0)
    } else {
        let longest = buckets.iter().filter(|b| !b.2).map(|b| b.3).max().unwrap_or(0);
        (buckets.iter().position(|b| !b.2 && b.3 == longest).unwrap_or(0), longest)
    };
    let decision = Decision {
        allowed,
        remaining: remaining.iter().copied().min().unwrap_or(0),
        retry_after: nanos(retry),
        reset_after: nanos(reset),
        limiting,
    };
    let stored =
        if allowed { after.iter().map(|&t| u64::try_from(t).expect("below 2^64")).collect() } else { Vec::new() };
    (decision, stored)
}

/// The quotas ops refer to by index, so ops stay short to print. They span the domain
/// the contract allows: second- and minute-scale, sub-millisecond and odd-nanosecond
/// periods, bursts up to `u32::MAX`, and τ up to the [`NANOS_LIMIT`](super::NANOS_LIMIT) bound.
pub const QUOTAS: [(u32, Duration); 13] = [
    (1, Duration::from_secs(1)),
    (2, Duration::from_secs(1)),
    (3, Duration::from_millis(500)),
    (5, Duration::from_millis(100)),
    (10, Duration::from_secs(60)),
    (4, Duration::from_millis(250)),
    (7, Duration::from_micros(333)),
    (1_000_000, Duration::from_micros(3)),
    // From here on: periods that are not whole microseconds, or τ past what Redis's
    // doubles hold exactly (see `REDIS_QUOTAS`).
    (3, Duration::from_nanos(333_333)),
    (u32::MAX, Duration::from_nanos(1)),
    // τ = 2^63 - 2 ns: `tat + cost·T` passes u64::MAX once the bucket is in debt.
    (2, Duration::from_nanos(4_611_686_018_427_387_903)),
    (u32::MAX, Duration::from_nanos(2_147_483_647)),
    // τ = 2^63 - 1 ns: the longest quota there is.
    (1, Duration::from_nanos(9_223_372_036_854_775_807)),
];

/// Quotas `QUOTAS[..REDIS_QUOTAS]` are exact on Redis (whole-microsecond periods, τ far
/// below 2^53 µs); Redis replays use only those.
pub const REDIS_QUOTAS: u8 = 8;

pub fn quota(index: u8) -> Quota {
    let (burst, period) = QUOTAS[usize::from(index) % QUOTAS.len()];
    Quota::new(burst, period).expect("the fixed quotas are valid")
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
    /// The clock steps back (it may: NTP, VM migration...).
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
    Decided(Result<Decision, LimitError>),
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

/// The model: each key's stored arrival time, the test clock, and the latest time
/// the limiter has seen (its own time never goes back).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct Model {
    clock: Timestamp,
    pub(super) latest: Timestamp,
    pub(super) tats: BTreeMap<u8, u64>,
}

/// Where graded clocks start: far enough from zero that rewinds never saturate.
pub(super) const START: Timestamp = Timestamp::from_nanos(1_000_000_000_000);

/// The rate-limit specification.
pub(super) struct RateLimitSpec;

/// Graded limiters take no config: quotas come with each request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Config;

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limiter = Limiter::new(clock)")
    }
}

impl Spec for RateLimitSpec {
    type Config = Config;
    type Op = Op;
    type Output = Output;
    type Model = Model;

    fn model(_: &Config) -> Model {
        // The limiter has seen no time until its first check.
        Model { clock: START, latest: Timestamp::ZERO, tats: BTreeMap::new() }
    }

    fn hint(_: &Op, expected: &Output, actual: &Output) -> Option<&'static str> {
        let (Output::Decided(expected), Output::Decided(actual)) = (expected, actual) else { return None };
        Some(match (expected, actual) {
            (Err(_), _) | (_, Err(_)) => {
                "Errors come first and change nothing: no limits is NoLimits, a key named twice is DuplicateKey (first and \
                 second positions), a cost above some bucket's burst is CostExceedsBurst (the first such bucket). A valid \
                 request is never an error."
            }
            (Ok(e), Ok(a)) if e.allowed != a.allowed => {
                "A request is allowed iff every bucket it names holds `cost` whole tokens at the limiter's time (the latest \
                 clock reading it has seen): a fresh or fully refilled bucket holds its burst, and a token comes back every \
                 period, exactly at the boundary. A denied request or a peek (cost 0) takes nothing from any bucket; a clock \
                 that steps back changes nothing; a bucket in debt keeps its debt."
            }
            (Ok(e), Ok(a)) if e.retry_after != a.retry_after => {
                "retry_after is exact to the nanosecond: the shortest wait after which this same request is allowed (denied \
                 1ns before it), the longest such wait over the buckets that refuse it; zero when allowed. It must hold over \
                 the whole domain, quotas up to NANOS_LIMIT included."
            }
            (Ok(e), Ok(a)) if e.remaining != a.remaining => {
                "remaining counts the whole tokens left in the bucket with the fewest, after this request's payment if it is \
                 allowed, the tokens refilled since the bucket was last used included."
            }
            (Ok(e), Ok(a)) if e.reset_after != a.reset_after => {
                "reset_after is how long until every bucket of the request is full again, after this request's payment if it \
                 is allowed."
            }
            _ => {
                "limiting indexes the request's limits in the caller's order: the violated bucket with the longest retry_after if \
                 denied, the bucket with the fewest remaining if allowed; the first such on ties."
            }
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
                let limits: Vec<(u8, Quota)> = limits.iter().map(|&(k, q)| (k, quota(q))).collect();
                if let Err(e) = validate(&limits, *cost) {
                    return Output::Decided(Err(e));
                }
                model.latest = model.latest.max(model.clock);
                let quotas: Vec<Quota> = limits.iter().map(|l| l.1).collect();
                let tats: Vec<Option<u64>> = limits.iter().map(|(k, _)| model.tats.get(k).copied()).collect();
                let (decision, new_tats) = decide(model.latest, &quotas, &tats, *cost);
                for ((key, _), tat) in limits.iter().zip(new_tats) {
                    model.tats.insert(*key, tat);
                }
                // Full buckets are the same as absent ones (time never goes back):
                // dropping them keeps the state canonical.
                let now = model.latest.as_nanos();
                model.tats.retain(|_, tat| *tat > now);
                Output::Decided(Ok(decision))
            }
        }
    }
}

/// The model for one-bucket checks over many keys (the op-based model stops at 256
/// keys): arrival times per key, and the latest time seen.
#[derive(Default)]
pub(super) struct Shadow {
    latest: u64,
    tats: std::collections::HashMap<u32, u64>,
}

impl Shadow {
    pub(super) fn check(&mut self, clock: Timestamp, key: u32, q: Quota, cost: u32) -> Result<Decision, LimitError> {
        validate(&[(key, q)], cost)?;
        self.latest = self.latest.max(clock.as_nanos());
        let (decision, tats) = decide(Timestamp::from_nanos(self.latest), &[q], &[self.tats.get(&key).copied()], cost);
        if let Some(&tat) = tats.first() {
            self.tats.insert(key, tat);
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        START + Duration::from_millis(ms)
    }

    #[test]
    fn near_the_bound_the_model_is_exact_past_u64() {
        // τ = 2^63 - 2 ns: an empty bucket plus a whole burst is past u64::MAX.
        let q = quota(10);
        let (first, tats) = decide(at(0), &[q], &[None], 2);
        assert!(first.allowed);
        assert_eq!(first.reset_after, Duration::from_nanos(q.tolerance_nanos()));
        let (second, _) = decide(at(0), &[q], &[Some(tats[0])], 2);
        assert!(!second.allowed);
        assert_eq!(second.retry_after, Duration::from_nanos(q.tolerance_nanos()));
        assert_eq!(second.remaining, 0);
    }

    #[test]
    fn gcra_allows_exactly_the_burst_then_one_per_period() {
        let q = quota(3); // 5 per 100ms
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..8 {
            let (d, new) = decide(at(0), &[q], &[tat], 1);
            if d.allowed {
                allowed += 1;
                tat = Some(new[0]);
            } else {
                // retry_after is exact: denied 1ns before, allowed at it.
                let ra = d.retry_after;
                assert_eq!(ra, Duration::from_millis(100));
                assert!(!decide(at(0) + ra - Duration::from_nanos(1), &[q], &[tat], 1).0.allowed);
                assert!(decide(at(0) + ra, &[q], &[tat], 1).0.allowed);
            }
        }
        assert_eq!(allowed, 5);
    }

    #[test]
    fn denial_reports_the_longest_wait_and_consumes_nothing() {
        let (d, new) = decide(at(0), &[quota(0), quota(1)], &[Some(at(1000).as_nanos()), Some(at(2500).as_nanos())], 1);
        assert!(!d.allowed);
        assert!(new.is_empty());
        assert_eq!(d.retry_after, Duration::from_millis(1500));
        assert_eq!(d.limiting, 1);
        assert_eq!(d.reset_after, Duration::from_millis(2500));
    }
}
