//! Reports a stuck case within seconds instead of at its deadline: a deadlock or an
//! infinite loop in an attempt is shown with the calls that started and never
//! returned, what was in flight beside them (loads), and the last calls that did return.
//!
//! The graded code reports what it is doing, cheaply:
//! * [`crate::linearizability::record`] publishes each history it runs ([`Recording`]):
//!   per thread, the calls in order and how many have started and finished (two
//!   atomics per thread, so recording perturbs the schedule as little as possible);
//! * [`crate::sequential::replay`] marks each step as a call in flight;
//! * anything else (a loader, a hand-written concurrent case) holds an [`InFlight`] guard.
//!
//! Every return bumps a progress counter. In the grading child a watchdog thread
//! samples it; when something is in flight and nothing has returned for
//! [`STUCK_AFTER`], the case is failed with the report. Progress, not a fixed time,
//! decides: a slow but moving case on a busy machine is never stuck.

use std::fmt::{Debug, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use crate::clock::Stopwatch;

/// How long in-flight calls may go without any call returning before the case is
/// reported as stuck. Every graded call of a correct attempt returns in microseconds
/// (loads in the suites sleep at most tens of milliseconds, Redis calls time out
/// after at most 2 s), so 5 s without one return is a hang, on any machine.
pub const STUCK_AFTER: Duration = Duration::from_secs(5);
/// How often the watchdog samples progress.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Returned calls shown per thread in a stuck report.
const LAST_RETURNED: usize = 3;

static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// A sequential replay step is running (set around each call of `replay`).
static STEP_IN_FLIGHT: AtomicBool = AtomicBool::new(false);
static STEP_INDEX: AtomicUsize = AtomicUsize::new(0);

/// Something returned: the case is moving.
#[inline]
pub fn progress() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking attempt may poison nothing here (only the harness holds these), but
    // never let a poisoned lock hide a report.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks sequential step `step` (1-based) as running, until [`step_returned`].
pub(crate) fn step_started(step: usize) {
    STEP_INDEX.store(step, Ordering::Relaxed);
    STEP_IN_FLIGHT.store(true, Ordering::Release);
}

pub(crate) fn step_returned() {
    STEP_IN_FLIGHT.store(false, Ordering::Release);
    progress();
}

/// One thread's progress through its calls in a recorded history.
#[derive(Default)]
struct ThreadProgress {
    started: AtomicUsize,
    finished: AtomicUsize,
}

/// A history being recorded: the calls each thread makes, and how far each got.
pub(crate) struct Recording {
    calls: Vec<Vec<String>>,
    threads: Vec<ThreadProgress>,
}

impl Recording {
    pub(crate) fn new(calls: Vec<Vec<String>>) -> Arc<Recording> {
        let threads = calls.iter().map(|_| ThreadProgress::default()).collect();
        Arc::new(Recording { calls, threads })
    }

    /// Thread `thread` starts its call number `index` (0-based).
    #[inline]
    pub(crate) fn call_started(&self, thread: usize, index: usize) {
        self.threads[thread].started.store(index + 1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn call_returned(&self, thread: usize, index: usize) {
        self.threads[thread].finished.store(index + 1, Ordering::Relaxed);
        progress();
    }

    fn in_flight(&self) -> bool {
        self.threads.iter().any(|t| t.started.load(Ordering::Relaxed) > t.finished.load(Ordering::Relaxed))
    }

    fn describe(&self, report: &mut String) {
        let mut stuck = String::new();
        let mut returned = String::new();
        for (thread, (calls, progress)) in self.calls.iter().zip(&self.threads).enumerate() {
            let started = progress.started.load(Ordering::Relaxed);
            let finished = progress.finished.load(Ordering::Relaxed);
            if started > finished {
                let _ = writeln!(
                    stuck,
                    "  thread {thread}: {}   (its call {started} of {})",
                    calls[started - 1],
                    calls.len()
                );
            }
            if finished > 0 {
                let shown = &calls[finished.saturating_sub(LAST_RETURNED)..finished];
                let _ = writeln!(returned, "  thread {thread}: {}", shown.join(", "));
            }
        }
        if !stuck.is_empty() {
            let _ = write!(report, "calls that started and never returned:\n{stuck}");
        }
        if !returned.is_empty() {
            let _ = write!(report, "the last calls that did return, per thread (oldest first):\n{returned}");
        }
        let _ = writeln!(report, "every thread's calls, in order:");
        for (thread, calls) in self.calls.iter().enumerate() {
            let _ = writeln!(report, "  thread {thread}: {}", calls.join(", "));
        }
    }
}

static RECORDING: Mutex<Option<Arc<Recording>>> = Mutex::new(None);

/// Publishes the history being recorded (or clears it with `None`).
pub(crate) fn set_recording(recording: Option<Arc<Recording>>) {
    *lock(&RECORDING) = recording;
}

/// An explicit call or load in flight, named for the stuck report; dropping the guard
/// (a return, or unwinding from a panic) counts as progress.
#[must_use = "the call is in flight only while the guard lives"]
pub struct InFlight {
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static NOTED: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

impl InFlight {
    /// `what` reads like a call: `"load of k0 (thread 2)"`, `"get(k1) on the second thread"`.
    pub fn new(what: impl Into<String>) -> InFlight {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock(&NOTED).push((id, what.into()));
        InFlight { id }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&NOTED).retain(|(id, _)| *id != self.id);
        progress();
    }
}

/// Runs `f` as a named call in flight.
pub fn call<T>(what: impl Into<String>, f: impl FnOnce() -> T) -> T {
    let _guard = InFlight::new(what);
    f()
}

/// The input being tried, rendered only if the case gets stuck.
static TRYING: Mutex<Option<Box<dyn Debug + Send>>> = Mutex::new(None);

pub(crate) fn set_trying(input: Box<dyn Debug + Send>) {
    // The previous input is dropped outside the lock.
    let _previous = lock(&TRYING).replace(input);
}

fn anything_in_flight() -> bool {
    STEP_IN_FLIGHT.load(Ordering::Acquire)
        || !lock(&NOTED).is_empty()
        || lock(&RECORDING).as_ref().is_some_and(|r| r.in_flight())
}

/// The stuck report: what never returned, what was in flight, what did return.
fn stuck_report(waited: Duration) -> String {
    let mut report = format!(
        "stuck: calls were in flight and none returned for {}s (a deadlock, a lost wake-up or an infinite loop)\n",
        waited.as_secs()
    );
    if STEP_IN_FLIGHT.load(Ordering::Acquire) {
        let trying = lock(&TRYING).as_ref().map(|input| format!("{input:?}")).unwrap_or_default();
        let call = match STEP_INDEX.load(Ordering::Relaxed) {
            0 => "building the system (its `new`)".to_string(),
            step => format!("the call at step {step}"),
        };
        let _ = writeln!(report, "{call} of this sequence never returned:\n  {trying}");
    }
    if let Some(recording) = lock(&RECORDING).clone() {
        recording.describe(&mut report);
    }
    let noted = lock(&NOTED);
    if !noted.is_empty() {
        let _ = writeln!(report, "also in flight (started, not returned):");
        for (_, what) in noted.iter() {
            let _ = writeln!(report, "  {what}");
        }
    }
    crate::suite::with_hint(report.trim_end(), STUCK_HINT)
}

/// What a stuck case most often means, whatever the exercise.
const STUCK_HINT: &str =
    "Calls that never return while nothing else moves: look for two calls that each hold one lock \
     and wait for the other's (take several locks always in one global order, e.g. sorted by key, or use one lock), \
     a lock taken twice on one thread (std and parking_lot locks are not re-entrant), a waiter nobody wakes \
     (notify after every change a waiter waits for, and on panic too), or a loop whose exit depends on time \
     that the test clock never moves.";

/// How often, at most, the child tells the parent it is making progress.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Starts the watchdog thread: `alive` is called about once a second while the case
/// makes progress (the parent's deadline counts from the last sign of life), and
/// `on_stuck` gets the report once a case is stuck (it is expected to end the process).
/// Called once, in the grading child.
pub(crate) fn spawn(alive: impl Fn() + Send + 'static, on_stuck: impl FnOnce(String) + Send + 'static) {
    let _ = thread::Builder::new().name("katas-watchdog".into()).spawn(move || {
        let mut last = PROGRESS.load(Ordering::Relaxed);
        let mut since = Stopwatch::start();
        let (mut heartbeat_at, mut last_heartbeat) = (last, Stopwatch::start());
        loop {
            thread::sleep(SAMPLE_EVERY);
            let now = PROGRESS.load(Ordering::Relaxed);
            if now != heartbeat_at && last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
                alive();
                (heartbeat_at, last_heartbeat) = (now, Stopwatch::start());
            }
            if now != last || !anything_in_flight() {
                last = now;
                since = Stopwatch::start();
                continue;
            }
            let waited = since.elapsed();
            if waited >= STUCK_AFTER {
                on_stuck(stuck_report(waited));
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_names_the_stuck_calls_and_the_last_returned_ones() {
        let recording = Recording::new(vec![
            vec!["get(k0)".into(), "insert(k1, 5)".into(), "len()".into()],
            vec!["remove(k1)".into()],
        ]);
        recording.call_started(0, 0);
        recording.call_returned(0, 0);
        recording.call_started(0, 1);
        recording.call_started(1, 0);
        recording.call_returned(1, 0);
        assert!(recording.in_flight());
        let mut report = String::new();
        recording.describe(&mut report);
        assert!(report.contains("thread 0: insert(k1, 5)   (its call 2 of 3)"), "{report}");
        assert!(!report.contains("thread 1: remove(k1)   ("), "thread 1 is not stuck: {report}");
        assert!(report.contains("the last calls that did return"), "{report}");
        recording.call_returned(0, 1);
        assert!(!recording.in_flight());
    }
}
