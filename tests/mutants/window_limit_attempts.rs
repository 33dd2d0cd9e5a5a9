//! Candidate-style window limiters of another design than the reference's. `LogEverything`
//! keeps every key's allowed requests of the last 2·W, whatever the algorithm, and
//! counts each algorithm from that log (the memory contract allows an entry per
//! request in the last 2·W): a correct design that must pass every case.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use harness::clock::SharedClock;
use harness::window_limit::{
    factory, suite, validate, Algorithm, LimitError, WindowDecision, WindowLimiter, WindowQuota,
};
use harness::Case;

struct Log {
    window: u64,
    entries: VecDeque<(u64, u32)>,
}

impl Log {
    /// Cost allowed in `[from, to)`.
    fn cost_in(&self, from: u64, to: u64) -> u128 {
        self.entries.iter().filter(|&&(t, _)| from <= t && t < to).map(|&(_, c)| u128::from(c)).sum()
    }

    fn allows(&self, algorithm: Algorithm, now: u64, limit: u32, cost: u32) -> bool {
        let w = self.window;
        let start = now - now % w;
        let (limit, cost) = (u128::from(limit), u128::from(cost));
        match algorithm {
            Algorithm::FixedWindow => self.cost_in(start, now + 1) + cost <= limit,
            Algorithm::SlidingLog => self.cost_in((now + 1).saturating_sub(w), now + 1) + cost <= limit,
            Algorithm::SlidingWindowCounter => {
                let prev = if start >= w { self.cost_in(start - w, start) } else { 0 };
                let (w, e) = (u128::from(w), u128::from(now - start));
                prev * (w - e) + (self.cost_in(start, now + 1) + cost) * w <= limit * w
            }
        }
    }

    /// Drops what can no longer count under any algorithm: older than 2·W.
    fn prune(&mut self, now: u64) {
        while self.entries.front().is_some_and(|&(t, _)| t + 2 * self.window <= now) {
            self.entries.pop_front();
        }
        // A buffer keeps its capacity when popped: give a burst's memory back.
        if self.entries.capacity() > 16 && self.entries.len() * 4 < self.entries.capacity() {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }
}

struct State<K> {
    logs: HashMap<K, Log>,
    latest: u64,
    sweep_at: usize,
}

pub struct LogEverything<K> {
    algorithm: Algorithm,
    clock: SharedClock,
    state: Mutex<State<K>>,
}

impl<K: Hash + Eq + Clone + Send + Sync> WindowLimiter<K> for LogEverything<K> {
    fn new(algorithm: Algorithm, clock: SharedClock) -> Self {
        LogEverything { algorithm, clock, state: Mutex::new(State { logs: HashMap::new(), latest: 0, sweep_at: 64 }) }
    }

    fn check(&self, limits: &[(K, WindowQuota)], cost: u32) -> Result<WindowDecision, LimitError> {
        validate(limits, cost)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.latest = state.latest.max(self.clock.now().as_nanos());
        let now = state.latest;
        for (index, (key, quota)) in limits.iter().enumerate() {
            let allowed = match state.logs.get_mut(key) {
                Some(log) => {
                    log.prune(now);
                    log.allows(self.algorithm, now, quota.limit(), cost)
                }
                None => cost <= quota.limit(),
            };
            if !allowed {
                return Ok(WindowDecision::Denied { limiting: index });
            }
        }
        if cost > 0 {
            for (key, quota) in limits {
                let log = state
                    .logs
                    .entry(key.clone())
                    .or_insert_with(|| Log { window: quota.window_nanos(), entries: VecDeque::new() });
                log.entries.push_back((now, cost));
            }
            if state.logs.len() >= state.sweep_at {
                state.logs.retain(|_, log| log.entries.back().is_some_and(|&(t, _)| t + 2 * log.window > now));
                state.sweep_at = (2 * state.logs.len()).max(64);
            }
        }
        Ok(WindowDecision::Allowed)
    }
}

/// Correct attempts: every case must pass.
pub fn must_pass() -> Vec<(String, Vec<Case>)> {
    vec![("correct_attempt::log_everything".to_string(), suite(factory::<LogEverything<_>>()))]
}
