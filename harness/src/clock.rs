//! Time, injected: every exercise reads time through [`Clock`], never from the OS directly.
//!
//! Tests drive a [`ManualClock`] so that verdicts never depend on how fast the machine
//! is; production code and benchmarks use [`SystemClock`], or the cheaper-to-read
//! [`TscClock`] (nanoseconds from the CPU's counter), [`CoarseClock`] and
//! [`TickingClock`] where millisecond resolution is enough, and
//! [`WallClock`] for calendar time. This is the only module in
//! the workspace allowed to call `Instant::now()` (see ARCHITECTURE.md).

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(not(target_os = "linux"))]
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A point in time, in nanoseconds since the clock's own origin.
///
/// Deliberately not `std::time::Instant`: a `Timestamp` can be constructed, printed and
/// compared in tests, and arithmetic saturates instead of panicking, so a huge TTL
/// (`Duration::MAX`) simply means "never expires".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);
    /// "Never": later than any time a clock reads. Arithmetic saturates to it (`t +
    /// Duration::MAX == MAX` for every `t`), and clocks stop at [`Timestamp::LATEST`],
    /// one nanosecond earlier, so a deadline of `MAX` (e.g. `now + Duration::MAX`) is
    /// never reached: `now < MAX` always holds.
    pub const MAX: Timestamp = Timestamp(u64::MAX);
    /// The latest time a clock can read (about 584 years after its origin).
    pub const LATEST: Timestamp = Timestamp(u64::MAX - 1);

    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Where a clock standing at `self` stands after moving forward by `d`: it stops
    /// at [`Timestamp::LATEST`]. Models move their time with this, as clocks do.
    pub fn advanced(self, d: Duration) -> Timestamp {
        (self + d).min(Timestamp::LATEST)
    }

    /// `self - earlier`, or zero when `earlier` is in fact later (clocks may step back).
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Durations longer than ~584 years saturate to [`Timestamp::MAX`].
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_nanos(d)))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={:?}", Duration::from_nanos(self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A source of time. Implementations must be cheap and callable from any thread.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;

    /// `true` if a reading is never earlier than one taken before it, on any thread
    /// (before: ordered by a lock, a channel, a join...). Code that must never see time
    /// go back can then trust the clock instead of keeping its own high-water mark,
    /// a shared word written on every call. `false` (the default) for clocks that may
    /// step back: [`ManualClock`], [`WallClock`].
    fn is_monotonic(&self) -> bool {
        false
    }
}

/// How exercises hold their clock: shared, dynamically dispatched.
pub type SharedClock = Arc<dyn Clock>;

/// Monotonic time (on Linux, `CLOCK_MONOTONIC`: nanoseconds since boot; elsewhere,
/// since the first read of any `SystemClock`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    /// Read on every cache operation, so it matters: `Instant::now().duration_since(o)`
    /// costs about twice a bare `clock_gettime`, mostly in timespec subtraction.
    #[cfg(target_os = "linux")]
    fn now(&self) -> Timestamp {
        read_linux_clock(libc::CLOCK_MONOTONIC)
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> Timestamp {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        Timestamp(duration_nanos(Instant::now().duration_since(origin)))
    }

    /// `CLOCK_MONOTONIC` (or `Instant`): the kernel keeps it monotonic across CPUs.
    fn is_monotonic(&self) -> bool {
        true
    }
}

/// Reads one of the kernel's monotonic clocks (both count from boot).
#[cfg(target_os = "linux")]
fn read_linux_clock(id: libc::clockid_t) -> Timestamp {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and the
    // only ids passed (CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE) exist on every Linux
    // kernel Rust supports, so the call only writes `ts` and cannot fail.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Timestamp((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
}

/// Monotonic time at the kernel tick's resolution (a few milliseconds), about four
/// times cheaper to read than [`SystemClock`] on Linux (`CLOCK_MONOTONIC_COARSE`).
/// Good for cache TTLs measured in seconds, read on every operation; not for rate
/// limits, whose answers depend on exact time. Same origin as `SystemClock` on Linux;
/// elsewhere it is `SystemClock`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock;

impl CoarseClock {
    pub fn shared() -> SharedClock {
        Arc::new(CoarseClock)
    }
}

impl Clock for CoarseClock {
    #[cfg(target_os = "linux")]
    fn now(&self) -> Timestamp {
        read_linux_clock(libc::CLOCK_MONOTONIC_COARSE)
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> Timestamp {
        SystemClock.now()
    }

    /// `CLOCK_MONOTONIC_COARSE`: monotonic across CPUs, like `CLOCK_MONOTONIC`.
    fn is_monotonic(&self) -> bool {
        true
    }
}

/// Monotonic time at nanosecond resolution from the CPU's time-stamp counter, through
/// the `quanta` crate (what `governor` and `moka` read): a `rdtsc` and a multiply,
/// several times cheaper than [`SystemClock`]'s `clock_gettime`. Where the counter is
/// not reliable (not invariant across cores), `quanta` falls back to the OS clock.
/// Counts from when the clock was made; clones share the origin.
#[derive(Clone, Debug)]
pub struct TscClock {
    clock: quanta::Clock,
    origin: u64,
}

impl TscClock {
    /// Calibrates the counter (once per process, inside `quanta`).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        TscClock { clock, origin }
    }

    pub fn shared() -> SharedClock {
        Arc::new(TscClock::new())
    }
}

impl Default for TscClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TscClock {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(self.clock.delta_as_nanos(self.origin, self.clock.raw()).min(Timestamp::LATEST.0))
    }

    /// `quanta` uses the counter only when the CPU reports it invariant (constant rate,
    /// never stopped), and invariant counters are synchronised across the CPUs of
    /// a machine (Linux checks this before it makes the TSC its own clock source);
    /// otherwise `quanta` reads `CLOCK_MONOTONIC`.
    fn is_monotonic(&self) -> bool {
        true
    }
}

/// Time as of the last tick: a background thread stores [`SystemClock`]'s time into
/// an atomic every `tick`, so reading it is one atomic load — the cheapest clock for
/// code that reads time on every call (a cache), at `tick` resolution. Monotonic.
/// The thread stops within a tick of the last handle being dropped.
#[derive(Clone, Debug)]
pub struct TickingClock {
    time: Arc<TickedTime>,
}

/// The time a [`TickingClock`]'s thread keeps current. [`TickingClock::shared`] hands
/// out this very `Arc`, so a reader is one pointer away from the atomic, not two.
#[derive(Debug)]
struct TickedTime(AtomicU64);

impl TickingClock {
    /// Starts the ticking thread; the clock reads the current time at once.
    pub fn start(tick: Duration) -> Self {
        let time = Arc::new(TickedTime(AtomicU64::new(SystemClock.now().0)));
        let weak = Arc::downgrade(&time);
        std::thread::Builder::new()
            .name("ticking-clock".into())
            .spawn(move || {
                // Holds only a weak handle: the clock's last owner going away ends it.
                while let Some(time) = weak.upgrade() {
                    time.0.fetch_max(SystemClock.now().0, Ordering::Relaxed);
                    drop(time);
                    std::thread::sleep(tick);
                }
            })
            .expect("spawning the ticking-clock thread");
        TickingClock { time }
    }

    pub fn shared(&self) -> SharedClock {
        self.time.clone()
    }
}

impl Clock for TickedTime {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::Relaxed))
    }

    /// Only ever moved forward (`fetch_max`).
    fn is_monotonic(&self) -> bool {
        true
    }
}

impl Clock for TickingClock {
    fn now(&self) -> Timestamp {
        self.time.now()
    }

    /// See [`TickedTime`].
    fn is_monotonic(&self) -> bool {
        true
    }
}

/// A clock that moves only when told to. Clones share the same time, so a test keeps
/// one clone and hands another to the code under test.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at [`Timestamp::ZERO`].
    pub fn new() -> Self {
        Self::default()
    }

    pub fn starting_at(t: Timestamp) -> Self {
        let clock = Self::new();
        clock.set(t);
        clock
    }

    /// Moves time forward by `d`, stopping at [`Timestamp::LATEST`].
    pub fn advance(&self, d: Duration) {
        // fetch_update so that concurrent advances never lose a step.
        let _ = self.nanos.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(Timestamp(n).advanced(d).0));
    }

    /// Jumps to `t` (at most [`Timestamp::LATEST`]), backwards included: exercises must
    /// survive a clock that steps back.
    pub fn set(&self, t: Timestamp) {
        self.nanos.store(t.0.min(Timestamp::LATEST.0), Ordering::SeqCst);
    }

    /// A handle to the same time, ready to give to an exercise.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    /// In concurrency cases a clock read is a forced-yield point, after the read: an
    /// attempt that reads the time outside its critical section and uses it inside
    /// (where another call may already have seen a later time) gets caught.
    fn now(&self) -> Timestamp {
        let now = Timestamp(self.nanos.load(Ordering::SeqCst));
        crate::linearizability::contention_point();
        now
    }
}

/// Calendar time: nanoseconds since the Unix epoch, for records that outlive the
/// process (the workshop scoreboard's submission times survive a restart, where a
/// monotonic clock's origin, the boot, would not). Not monotonic: the OS may step it.
/// A time before the epoch reads as [`Timestamp::ZERO`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl WallClock {
    pub fn shared() -> SharedClock {
        Arc::new(WallClock)
    }
}

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Timestamp(since_epoch.map_or(0, duration_nanos).min(Timestamp::LATEST.0))
    }
}

/// Async time for the async exercises (retry, conn_pool, the circuit breaker's async
/// call): the time and sleeping, both through the handle an attempt is given, so that a
/// test can run hours of back-off or idle reaping in microseconds of real time.
pub trait Timer: Clock {
    /// A future that completes once `d` has passed on this timer's clock (`Duration::MAX`:
    /// never). Dropping it cancels the sleep. A timeout is a `select` between the work and
    /// a sleep (e.g. `tokio::select!`), so a timer needs nothing else.
    fn sleep(&self, d: Duration) -> Sleep;
}

/// What [`Timer::sleep`] returns: boxed so that the trait stays object-safe.
pub type Sleep = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// How exercises hold their timer: shared, dynamically dispatched.
pub type SharedTimer = Arc<dyn Timer>;

/// Tokio's timer, read as a [`Timer`]: real time in production and benchmarks. Inside a
/// runtime built with `start_paused(true)` (tests) it is virtual: when every task is
/// waiting, tokio jumps the time to the next sleep's deadline, so a test never waits
/// and never races the machine's speed. Tokio's timer wheel has millisecond resolution:
/// a sleep ends on the first whole millisecond (since the runtime's start) at or after
/// its deadline, and [`Clock::now`] reads that time. Must be created and used inside a
/// Tokio runtime with time enabled.
#[derive(Clone, Debug)]
pub struct TokioTimer {
    origin: tokio::time::Instant,
}

impl TokioTimer {
    /// A timer whose origin ([`Timestamp::ZERO`]) is now. Panics outside a Tokio runtime.
    pub fn new() -> Self {
        TokioTimer { origin: tokio::time::Instant::now() }
    }

    pub fn shared() -> SharedTimer {
        Arc::new(Self::new())
    }
}

impl Default for TokioTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioTimer {
    fn now(&self) -> Timestamp {
        Timestamp(duration_nanos(self.origin.elapsed()).min(Timestamp::LATEST.0))
    }
}

impl Timer for TokioTimer {
    fn sleep(&self, d: Duration) -> Sleep {
        // tokio::time::sleep saturates an overflowing deadline to "far future" (~30 years),
        // which a test's virtual clock could reach: "never" must stay never.
        if d == Duration::MAX {
            return Box::pin(std::future::pending());
        }
        Box::pin(tokio::time::sleep(d))
    }
}

/// A current-thread Tokio runtime on a paused clock, for grading async attempts with a
/// [`TokioTimer`]: time moves only when every task waits (then straight to the next
/// timer), and one thread runs the tasks in a fixed order, so a run is reproducible.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread tokio runtime")
}

/// Real elapsed time for the runner's deadlines (not for exercises: they take a `Clock`).
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokio_timer_is_virtual_in_a_paused_runtime() {
        let runtime = paused_runtime();
        let real = Stopwatch::start();
        runtime.block_on(async {
            let timer = TokioTimer::shared();
            assert_eq!(timer.now(), Timestamp::ZERO);
            timer.sleep(Duration::from_secs(3600)).await;
            assert_eq!(timer.now(), Timestamp::from_nanos(3_600_000_000_000));
            // A sub-millisecond sleep ends on the next whole millisecond.
            timer.sleep(Duration::from_micros(10)).await;
            assert_eq!(timer.now(), Timestamp::from_nanos(3_600_001_000_000));
            let never = tokio::time::timeout(Duration::from_secs(1 << 40), timer.sleep(Duration::MAX)).await;
            assert!(never.is_err(), "a sleep of Duration::MAX must never end");
        });
        assert!(real.elapsed() < Duration::from_secs(10), "virtual time took {:?} of real time", real.elapsed());
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new();
        let handle = clock.shared();
        clock.advance(Duration::from_secs(3));
        assert_eq!(handle.now(), Timestamp::from_nanos(3_000_000_000));
        clock.set(Timestamp::from_nanos(5));
        assert_eq!(handle.now().as_nanos(), 5);
    }

    #[test]
    fn the_wall_clock_counts_from_the_unix_epoch() {
        let september_2020 = Timestamp::from_nanos(1_600_000_000 * 1_000_000_000);
        assert!(WallClock.now() > september_2020, "{:?}", WallClock.now());
    }

    #[test]
    fn a_manual_clock_never_reaches_never() {
        let clock = ManualClock::new();
        let forever = clock.now() + Duration::MAX;
        clock.advance(Duration::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Timestamp::LATEST);
        assert!(clock.now() < forever, "an expiry of now + Duration::MAX must stay ahead of the clock");
        clock.set(Timestamp::MAX);
        assert_eq!(clock.now(), Timestamp::LATEST);
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(Timestamp::from_nanos(10) + Duration::MAX, Timestamp::MAX);
        assert_eq!(Timestamp::from_nanos(10) - Duration::from_secs(1), Timestamp::ZERO);
        let later = Timestamp::from_nanos(10);
        assert_eq!(Timestamp::ZERO.saturating_duration_since(later), Duration::ZERO);
        assert_eq!(later.saturating_duration_since(Timestamp::ZERO), Duration::from_nanos(10));
    }

    #[test]
    fn ticking_clock_follows_system_time_at_tick_resolution() {
        let clock = TickingClock::start(Duration::from_millis(1));
        let first = clock.now();
        assert!(SystemClock.now().saturating_duration_since(first) < Duration::from_secs(1));
        // It moves on its own: wait (bounded) until a later tick is visible.
        let mut later = clock.now();
        for _ in 0..1000 {
            if later > first {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            later = clock.now();
        }
        assert!(later > first, "the ticking thread never advanced the clock");
    }

    /// The counter-based clock measures what the OS clock measures (its calibration
    /// is right), never goes back, and says which clocks may step back.
    #[test]
    fn tsc_clock_keeps_the_os_clocks_pace() {
        let tsc = TscClock::new();
        let nap = Duration::from_millis(20);
        let os_before = SystemClock.now();
        let before = tsc.now();
        std::thread::sleep(nap);
        let after = tsc.now();
        let os_after = SystemClock.now();
        // The TSC interval lies inside the OS one and spans the whole nap: bounds that
        // hold however long the thread waits to run again.
        let elapsed = after.saturating_duration_since(before);
        assert!(elapsed >= nap.mul_f64(0.99), "{elapsed:?} measured over a {nap:?} sleep");
        let os_elapsed = os_after.saturating_duration_since(os_before);
        assert!(elapsed <= os_elapsed.mul_f64(1.01), "{elapsed:?} inside an OS interval of {os_elapsed:?}");
        assert!(tsc.now() >= after);
        assert!(tsc.is_monotonic() && SystemClock.is_monotonic() && CoarseClock.is_monotonic());
        assert!(!ManualClock::new().is_monotonic() && !WallClock.is_monotonic());
    }

    #[test]
    fn system_clocks_do_not_go_backwards_and_share_an_origin() {
        let (precise, coarse) = (SystemClock, CoarseClock);
        let a = precise.now();
        let b = precise.now();
        assert!(b >= a);
        let c = coarse.now();
        assert!(coarse.now() >= c);
        // Coarse lags precise by at most a few ticks, never by seconds.
        let gap = precise.now().saturating_duration_since(coarse.now());
        assert!(gap < Duration::from_secs(1), "coarse clock {gap:?} behind");
    }
}
