//! Candidate-style retriers of another design than the reference's async loop: a
//! hand-written `Future` state machine over a doubling backoff iterator. `Stepper<NONE>`
//! is correct (it must pass every case); each other switch is a bug candidates write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use harness::clock::{SharedTimer, Sleep, Timestamp};
use harness::retry::{Fault, PolicyError, Retry, RetryError, RetryPolicy, SharedRandom, MAX_DELAY};

pub const NONE: u8 = 0;
/// AWS's other algorithm, "decorrelated jitter": `min(cap, random in [base, 3·previous])`.
pub const DECORRELATED_JITTER: u8 = 1;
/// Keeps doubling in u64 nanoseconds past the cap (capping only when used): it wraps.
pub const DOUBLES_PAST_CAP: u8 = 2;
/// Draws the next delay before checking whether a retry is allowed at all: a wasted draw
/// on every call's last attempt shifts the stream for the next call.
pub const DRAW_BEFORE_COUNT: u8 = 3;

struct Inner {
    policy: RetryPolicy,
    timer: SharedTimer,
    rng: SharedRandom,
}

pub struct Stepper<const BUG: u8> {
    inner: Arc<Inner>,
}

/// The ceilings base, 2·base, 4·base... each capped: min(cap, 2·min(cap, x)) is
/// min(cap, 2x), so doubling the capped value step by step gives min(cap, base·2ⁿ).
struct Ceilings<const BUG: u8> {
    current: Duration,
    cap: Duration,
    /// DECORRELATED_JITTER: the previous delay.
    previous: Duration,
}

impl<const BUG: u8> Ceilings<BUG> {
    fn next(&mut self) -> Duration {
        let ceiling = self.current.min(self.cap).min(MAX_DELAY);
        self.current = if BUG == DOUBLES_PAST_CAP {
            Duration::from_nanos((self.current.as_nanos() as u64).wrapping_mul(2))
        } else {
            self.current.saturating_mul(2).min(self.cap)
        };
        ceiling
    }
}

enum State<Fut> {
    Start,
    Calling(Pin<Box<Fut>>),
    Sleeping(Sleep),
}

struct Run<const BUG: u8, F, Fut> {
    inner: Arc<Inner>,
    op: F,
    state: State<Fut>,
    deadline: Timestamp,
    attempts: u32,
    ceilings: Ceilings<BUG>,
}

// Nothing is ever pinned through `Run`: the operation's futures are boxed, `op` is only
// called through `&mut`. So `Run` can be moved freely whatever `F` is.
impl<const BUG: u8, F, Fut> Unpin for Run<BUG, F, Fut> {}

fn lemire(x: u64, ceiling: Duration) -> Duration {
    let c = ceiling.as_nanos() as u64;
    Duration::from_nanos(((u128::from(x) * (u128::from(c) + 1)) >> 64) as u64)
}

impl<const BUG: u8, T, E, F, Fut> Future for Run<BUG, F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Fault<E>>>,
{
    type Output = Result<T, RetryError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Start => {
                    this.deadline = this.inner.timer.now() + this.inner.policy.budget;
                    this.state = State::Calling(Box::pin((this.op)()));
                }
                State::Sleeping(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.state = State::Calling(Box::pin((this.op)()));
                }
                State::Calling(attempt) => {
                    let fault = match attempt.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(value)) => return Poll::Ready(Ok(value)),
                        Poll::Ready(Err(fault)) => fault,
                    };
                    this.attempts += 1;
                    let attempts = this.attempts;
                    let (last, floor) = match fault {
                        Fault::Permanent(error) => return Poll::Ready(Err(RetryError::Permanent { error, attempts })),
                        Fault::Transient(error) => (error, Duration::ZERO),
                        Fault::Throttled { error, retry_after } => (error, retry_after),
                    };
                    let mut draw = || {
                        let ceiling = this.ceilings.next();
                        let x = this.inner.rng.next_u64();
                        if BUG == DECORRELATED_JITTER {
                            let base = this.inner.policy.base;
                            let upper = this.ceilings.previous.saturating_mul(3).max(base);
                            let d = (base + lemire(x, upper - base)).min(this.inner.policy.cap);
                            this.ceilings.previous = d;
                            d
                        } else {
                            lemire(x, ceiling)
                        }
                    };
                    let early = (BUG == DRAW_BEFORE_COUNT).then(&mut draw);
                    if attempts >= this.inner.policy.max_attempts {
                        return Poll::Ready(Err(RetryError::AttemptsExhausted { last, attempts }));
                    }
                    let delay = early.unwrap_or_else(draw).max(floor);
                    if this.inner.timer.now() + delay > this.deadline {
                        return Poll::Ready(Err(RetryError::BudgetExhausted { last, attempts }));
                    }
                    this.state = State::Sleeping(this.inner.timer.sleep(delay));
                }
            }
        }
    }
}

impl<const BUG: u8> Retry for Stepper<BUG> {
    fn new(policy: RetryPolicy, timer: SharedTimer, rng: SharedRandom) -> Result<Self, PolicyError> {
        match policy {
            RetryPolicy { max_attempts: 0, .. } => Err(PolicyError::ZeroAttempts),
            RetryPolicy { base, cap, .. } if base > cap => Err(PolicyError::BaseAboveCap { base, cap }),
            _ => Ok(Stepper { inner: Arc::new(Inner { policy, timer, rng }) }),
        }
    }

    fn run<T, E, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, RetryError<E>>> + Send
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fault<E>>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let policy = self.inner.policy;
        Run::<BUG, F, Fut> {
            inner: self.inner.clone(),
            op,
            state: State::Start,
            deadline: Timestamp::ZERO,
            attempts: 0,
            ceilings: Ceilings { current: policy.base, cap: policy.cap, previous: policy.base },
        }
    }
}
