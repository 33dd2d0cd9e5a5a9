//! The graded suite of the connection-pool exercise, levels 1-3: scripts replayed on
//! the attempt (over the fake connector, on a paused current-thread Tokio runtime, so
//! time is virtual and schedules deterministic) against the model, and many tasks
//! hammering one pool with invariants checked. Level 4 (Redis) is in `redis.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::contract::{ConfigError, PoolConfig, PoolError};
use super::model::{config, Config, Connects, Op, Output, PoolSpec};
use super::{ErasedGuard, ErasedPool, Factory, FakeConn, FakeConnector, FakeState};
use crate::clock::{paused_runtime, Clock, SharedTimer, Sleep, Timer, Timestamp, TokioTimer};
use crate::linearizability::SplitMix;
use crate::sequential::{exhaustive, random, replay, Budget};
use crate::suite::{guarded, Case, CaseError, CaseResult, Hints, Level, QUICK_DEADLINE as QUICK};
use crate::watchdog::lock;

pub const EXERCISE: &str = "conn_pool";
pub const L1: Level = Level { number: 1, name: "sizing_and_timeout" };
pub const L2: Level = Level { number: 2, name: "validation_and_reaping" };
pub const L3: Level = Level { number: 3, name: "concurrency" };
pub const L4: Level = Level { number: 4, name: "redis" };

/// After an op, the driver yields until this many yields in a row saw no activity (no
/// connector call, no timer call, no `get()` returning): every task has then run as far
/// as it can without time moving. Why a count suffices: on a current-thread runtime a
/// `yield_now` puts the driver behind every task already woken, so each quiet yield is a
/// full pass over the ready tasks; only a pool that hands work through more than this
/// many task-to-task wakeups in a row without touching the timer or the connector (no
/// real design needs one) could be read before it finished.
const QUIET_YIELDS: u32 = 24;
/// A spinning attempt never goes quiet: stop settling after this many yields.
const MAX_SETTLE_YIELDS: u32 = 20_000;

/// Tokio's timer, counting calls so the driver can tell when nothing moves.
#[derive(Debug)]
struct CountingTimer {
    inner: TokioTimer,
    activity: Arc<AtomicU64>,
}

impl Clock for CountingTimer {
    fn now(&self) -> Timestamp {
        self.activity.fetch_add(1, Ordering::SeqCst);
        self.inner.now()
    }
}

impl Timer for CountingTimer {
    fn sleep(&self, d: Duration) -> Sleep {
        self.activity.fetch_add(1, Ordering::SeqCst);
        let activity = self.activity.clone();
        let sleep = self.inner.sleep(d);
        Box::pin(async move {
            sleep.await;
            activity.fetch_add(1, Ordering::SeqCst);
        })
    }
}

type Done = Arc<Mutex<Vec<(usize, Result<ErasedGuard<FakeConn>, PoolError>)>>>;

/// Drives a pool under test over the fake connector, one scripted op at a time.
struct Driver {
    rt: tokio::runtime::Runtime,
    pool: Arc<dyn ErasedPool<FakeConn>>,
    fake: Arc<FakeState>,
    activity: Arc<AtomicU64>,
    done: Done,
    pending: BTreeMap<usize, tokio::task::JoinHandle<()>>,
    /// Guards held, oldest first: (get number, serial, guard).
    held: Vec<(usize, u64, ErasedGuard<FakeConn>)>,
    labels: HashMap<u64, u32>,
    next_get: usize,
    max_size: usize,
}

impl Driver {
    fn start(make: Factory, config: PoolConfig, random_yields: Option<u64>) -> Result<Driver, ConfigError> {
        let rt = paused_runtime();
        let activity = Arc::new(AtomicU64::new(0));
        let built = rt.block_on(async {
            let timer: SharedTimer = Arc::new(CountingTimer { inner: TokioTimer::new(), activity: activity.clone() });
            let connector = FakeConnector::new(timer.clone(), random_yields);
            let fake = connector.state.clone();
            make(config, connector, timer).map(|pool| (pool, fake))
        });
        let (pool, fake) = built?;
        let driver = Driver {
            rt,
            pool,
            fake,
            activity,
            done: Arc::new(Mutex::new(Vec::new())),
            pending: BTreeMap::new(),
            held: Vec::new(),
            labels: HashMap::new(),
            next_get: 0,
            max_size: config.max_size,
        };
        driver.rt.block_on(driver.settle());
        Ok(driver)
    }

    fn activity(&self) -> u64 {
        self.activity.load(Ordering::SeqCst) + self.fake.activity()
    }

    async fn settle(&self) {
        let (mut quiet, mut total, mut last) = (0, 0, self.activity());
        while quiet < QUIET_YIELDS && total < MAX_SETTLE_YIELDS {
            tokio::task::yield_now().await;
            total += 1;
            let now = self.activity();
            if now == last {
                quiet += 1;
            } else {
                (quiet, last) = (0, now);
            }
        }
    }

    fn spawn_get(&mut self) {
        let get = self.next_get;
        self.next_get += 1;
        let (pool, done, activity) = (self.pool.clone(), self.done.clone(), self.activity.clone());
        let handle = self.rt.spawn(async move {
            let result = pool.get().await;
            lock(&done).push((get, result));
            activity.fetch_add(1, Ordering::SeqCst);
        });
        self.pending.insert(get, handle);
    }

    fn cancel_oldest(&mut self) {
        if let Some((_, handle)) = self.pending.pop_first() {
            handle.abort();
        }
    }

    fn apply(&mut self, op: &Op) -> Output {
        let _runtime = self.rt.enter();
        match op {
            Op::Get => self.spawn_get(),
            Op::DropOldest => {
                if !self.held.is_empty() {
                    drop(self.held.remove(0));
                }
            }
            Op::DropNewest => drop(self.held.pop()),
            Op::PanicNewest => {
                if let Some((_, _, guard)) = self.held.pop() {
                    self.rt.spawn(async move {
                        let _guard = guard;
                        panic!("the holder panicked");
                    });
                }
            }
            Op::BreakNewest => {
                if let Some((_, _, guard)) = self.held.last_mut() {
                    guard.break_it();
                }
            }
            Op::BreakAll => self.fake.break_all(),
            Op::Connects(c) => self.fake.set_connects(*c),
            Op::CancelOldest => self.cancel_oldest(),
            Op::ReturnToCancelled => {
                // No await between the two: the waiter the connection is handed to has
                // not run again when its future is dropped.
                if !self.held.is_empty() {
                    drop(self.held.remove(0));
                }
                self.cancel_oldest();
            }
            Op::Advance(ms) => self.rt.block_on(tokio::time::sleep(Duration::from_millis(*ms))),
        }
        self.rt.block_on(self.settle());
        let peak = self.fake.peak();
        if peak > self.max_size {
            panic!(
                "over-allocation: {peak} connections were open or being opened at once, with max_size {}",
                self.max_size
            );
        }
        let mut finished = std::mem::take(&mut *lock(&self.done));
        finished.sort_by_key(|(get, _)| *get);
        let mut returned = Vec::new();
        for (get, result) in finished {
            self.pending.remove(&get);
            match result {
                Ok(guard) => {
                    let serial = guard.serial;
                    if let Some((other, _, _)) = self.held.iter().find(|(_, s, _)| *s == serial) {
                        panic!("get#{get} was handed the connection get#{other} still holds");
                    }
                    let next = self.labels.len() as u32;
                    let label = *self.labels.entry(serial).or_insert(next);
                    self.held.push((get, serial, guard));
                    returned.push((get, Ok(label)));
                }
                Err(e) => returned.push((get, Err(e))),
            }
        }
        Output { returned, stats: self.pool.stats(), open: self.fake.open() }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Guards and tasks go while the runtime still runs (a guard's drop may spawn).
        let _runtime = self.rt.enter();
        self.held.clear();
        for (_, handle) in std::mem::take(&mut self.pending) {
            handle.abort();
        }
    }
}

fn replay_on(make: Factory, config: &Config, ops: &[Op]) -> CaseResult {
    replay::<PoolSpec, _>(config, ops, |c| {
        let mut driver =
            Driver::start(make, c.pool, None).unwrap_or_else(|e| panic!("Pool::new refused a valid config: {e:?}"));
        move |op: &Op| driver.apply(op)
    })
}

// Inputs
// ---------------------------------------------------------------------------------

/// Prunes sequences that only rename others: a connector mode set to what it already is.
fn admissible(ops: &[Op]) -> bool {
    let mut mode = Connects::Up;
    for op in ops {
        if let Op::Connects(c) = op {
            if *c == mode {
                return false;
            }
            mode = *c;
        }
    }
    true
}

fn ms_or_never() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![1 => Just(None), 3 => (5u64..=80).prop_map(Some)]
}

fn random_config(reaping: bool) -> BoxedStrategy<Config> {
    if reaping {
        (1usize..=3, 0usize..=2, 5u64..=40, ms_or_never(), ms_or_never())
            .prop_map(|(max, min_idle, timeout, life, idle)| config(max, min_idle.min(max), timeout, life, idle))
            .boxed()
    } else {
        (1usize..=3, 5u64..=40).prop_map(|(max, timeout)| config(max, 0, timeout, None, None)).boxed()
    }
}

fn random_op(reaping: bool, cancelling: bool) -> BoxedStrategy<Op> {
    let base = prop_oneof![
        5 => Just(Op::Get),
        3 => Just(Op::DropOldest),
        2 => Just(Op::DropNewest),
        3 => (1u64..=30).prop_map(Op::Advance),
        1 => Just(Op::Connects(Connects::Down)),
        2 => Just(Op::Connects(Connects::Up)),
    ];
    let reaping_ops = prop_oneof![Just(Op::BreakNewest), Just(Op::BreakAll)];
    let cancelling_ops = prop_oneof![Just(Op::CancelOldest), Just(Op::ReturnToCancelled), Just(Op::PanicNewest)];
    match (reaping, cancelling) {
        (false, false) => base.boxed(),
        (true, false) => prop_oneof![8 => base, 2 => reaping_ops].boxed(),
        (_, true) => prop_oneof![8 => base, 2 => reaping_ops, 3 => cancelling_ops].boxed(),
    }
}

/// Random scripts: connector modes only ever Up/Down (a hang is scripted by hand:
/// two deadlines at one instant would make the order of a freed slot's taker moot).
fn random_scripts(reaping: bool, cancelling: bool) -> impl Strategy<Value = (Config, Vec<Op>)> {
    (random_config(reaping || cancelling), proptest::collection::vec(random_op(reaping, cancelling), 1..=30))
        .prop_map(|(config, ops)| (config, without_idle_mode_changes(ops)))
}

/// Drops connector-mode ops that set the mode it already has (pinned proptest rejects
/// nothing, so inputs are normalised instead of filtered).
fn without_idle_mode_changes(ops: Vec<Op>) -> Vec<Op> {
    let mut mode = Connects::Up;
    ops.into_iter()
        .filter(|op| match op {
            Op::Connects(c) if *c == mode => false,
            Op::Connects(c) => {
                mode = *c;
                true
            }
            _ => true,
        })
        .collect()
}

// Cases
// ---------------------------------------------------------------------------------

fn exhaustive_on(make: Factory, configs: &[Config], alphabet: Vec<Op>, max_len: usize) -> CaseResult {
    exhaustive(configs, |_| alphabet.clone(), max_len, admissible, |c, ops| replay_on(make, c, ops))
}

fn l1_short(make: Factory) -> CaseResult {
    let configs = [config(1, 0, 20, None, None), config(2, 0, 20, None, None)];
    let alphabet = vec![
        Op::Get,
        Op::DropOldest,
        Op::DropNewest,
        Op::Advance(10),
        Op::Connects(Connects::Down),
        Op::Connects(Connects::Up),
    ];
    exhaustive_on(make, &configs, alphabet, 5)
}

fn scripts(make: Factory, scripts: Vec<(Config, Vec<Op>)>) -> CaseResult {
    for (config, ops) in scripts {
        replay_on(make, &config, &ops)?;
    }
    Ok(())
}

fn l1_edges(make: Factory) -> CaseResult {
    use Op::*;
    let hang = Connects(super::Connects::Hang);
    let up = Connects(super::Connects::Up);
    scripts(
        make,
        vec![
            // The timeout to the millisecond: 1ms before the deadline still waiting.
            (config(1, 0, 25, None, None), vec![Get, Get, Advance(24), Advance(1), Get, DropOldest]),
            // Three waiters served in arrival order, each within its own deadline.
            (
                config(1, 0, 100, None, None),
                vec![Get, Get, Advance(1), Get, Advance(1), Get, DropOldest, DropOldest, DropOldest, DropOldest],
            ),
            // A connect that never finishes: the timeout ends the get and frees the
            // slot, which the next waiter takes (and its connect hangs too).
            (config(1, 0, 20, None, None), vec![hang, Get, Advance(10), Get, Advance(10), up, Advance(10), Get]),
            // Cancelling a hanging connect frees its slot at once.
            (config(1, 0, 50, None, None), vec![hang, Get, Advance(5), Get, up, CancelOldest, Advance(5), Get]),
        ],
    )
}

fn l1_random(make: Factory) -> CaseResult {
    random(random_scripts(false, false), Budget { cases: 96, ..Budget::default() }, |(c, ops)| replay_on(make, c, ops))
}

fn config_errors(make: Factory) -> CaseResult {
    let ms = Duration::from_millis;
    let ok = config(2, 1, 10, None, None).pool;
    let cases: Vec<(PoolConfig, Result<(), ConfigError>)> = vec![
        (PoolConfig { max_size: 0, min_idle: 0, ..ok }, Err(ConfigError::ZeroMaxSize)),
        (PoolConfig { max_size: 0, min_idle: 1, checkout_timeout: ms(0), ..ok }, Err(ConfigError::ZeroMaxSize)),
        (PoolConfig { min_idle: 3, ..ok }, Err(ConfigError::MinIdleAboveMax { min_idle: 3, max_size: 2 })),
        (PoolConfig { min_idle: 2, ..ok }, Ok(())),
        (PoolConfig { checkout_timeout: ms(0), max_lifetime: ms(0), ..ok }, Err(ConfigError::ZeroTimeout)),
        (PoolConfig { max_lifetime: ms(0), idle_timeout: ms(0), ..ok }, Err(ConfigError::ZeroLifetime)),
        (PoolConfig { idle_timeout: ms(0), ..ok }, Err(ConfigError::ZeroIdleTimeout)),
        (PoolConfig { checkout_timeout: Duration::MAX, ..ok }, Ok(())),
        (PoolConfig { max_size: usize::MAX, min_idle: 0, ..ok }, Ok(())),
    ];
    for (pool, expected) in cases {
        let got = guarded(|| Driver::start(make, pool, None).map(|_| ()))
            .map_err(|p| p.into_case_error(format!("Pool::new({pool:?})")))?;
        if got != expected {
            return Err(CaseError::failed(format!("Pool::new({pool:?})\n  -> {got:?}\n  expected {expected:?}")));
        }
    }
    Ok(())
}

fn l2_short(make: Factory) -> CaseResult {
    let configs = [config(1, 0, 20, Some(20), Some(10)), config(2, 1, 20, Some(20), None)];
    let alphabet = vec![Op::Get, Op::DropOldest, Op::DropNewest, Op::BreakNewest, Op::BreakAll, Op::Advance(10)];
    exhaustive_on(make, &configs, alphabet, 4)
}

fn l2_edges(make: Factory) -> CaseResult {
    use Op::*;
    let down = Connects(super::Connects::Down);
    let up = Connects(super::Connects::Up);
    scripts(
        make,
        vec![
            // min_idle 2 at construction; a checkout tops it up again; LIFO order.
            (config(3, 2, 50, None, None), vec![Get, Get, DropNewest, Get, DropOldest, DropOldest, Get]),
            // Lifetime to the millisecond: at opened + max_lifetime a connection is closed.
            (config(1, 0, 50, Some(40), None), vec![Get, Advance(39), DropOldest, Get, Advance(1), DropOldest, Get]),
            // Idle timeout from the return, not from the opening.
            (
                config(1, 0, 50, None, Some(20)),
                vec![Get, Advance(30), DropOldest, Advance(19), Get, DropOldest, Advance(20), Get],
            ),
            // A returned connection past its lifetime is closed, and its slot goes to the waiter.
            (config(1, 0, 50, Some(30), None), vec![Get, Get, Advance(30), DropOldest, Advance(5)]),
            // A broken connection handed to a waiter is replaced; while the server is down
            // every waiter gets the connect error at once.
            (config(1, 0, 50, None, None), vec![Get, Get, Get, BreakAll, down, DropOldest, up, Get]),
            // Everything broke: every idle connection is validated and closed, then a new one.
            (config(3, 0, 50, None, None), vec![Get, Get, Get, DropOldest, DropOldest, DropOldest, BreakAll, Get]),
            // min_idle is not met while the connector is down, and comes back with it.
            (config(2, 1, 50, None, Some(10)), vec![down, Advance(10), Get, up, Get, Advance(20), DropOldest]),
        ],
    )
}

fn l2_random(make: Factory) -> CaseResult {
    random(random_scripts(true, false), Budget { cases: 128, ..Budget::default() }, |(c, ops)| replay_on(make, c, ops))
}

fn l3_cancellation(make: Factory) -> CaseResult {
    let configs = [config(1, 0, 20, None, None), config(2, 1, 20, Some(20), None)];
    let alphabet = vec![
        Op::Get,
        Op::DropOldest,
        Op::PanicNewest,
        Op::CancelOldest,
        Op::ReturnToCancelled,
        Op::BreakNewest,
        Op::Advance(10),
    ];
    exhaustive_on(make, &configs, alphabet, 4)?;
    random(random_scripts(true, true), Budget { cases: 96, ..Budget::default() }, |(c, ops)| replay_on(make, c, ops))
}

/// What one task of the stress case saw, for the report.
#[derive(Default)]
struct Tally {
    served: u64,
    timed_out: u64,
    cancelled: u64,
    panicked: u64,
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} served, {} timed out, {} cancelled, {} holders panicked",
            self.served, self.timed_out, self.cancelled, self.panicked
        )
    }
}

/// Many tasks on one pool, with random yields inside the connector, gets cancelled at
/// random points, holders that panic and connections that break. Checked throughout:
/// never more than max_size connections, never one connection with two holders; at
/// the end: nothing in use, nobody waiting, every open connection idle, and the whole
/// pool can still be checked out at once (no slot leaked).
fn stress_once(make: Factory, seed: u64) -> CaseResult {
    let pool_config = config(3, 1, 40, Some(150), Some(60)).pool;
    let mut driver = Driver::start(make, pool_config, Some(seed))
        .unwrap_or_else(|e| panic!("Pool::new refused a valid config: {e:?}"));
    let held: Arc<Mutex<BTreeSet<u64>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let problems: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    const TASKS: u64 = 10;
    const ROUNDS: u64 = 6;
    let result = driver.rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let (pool, held, problems, tally) = (driver.pool.clone(), held.clone(), problems.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = SplitMix::new(seed * 1000 + task);
                for _ in 0..ROUNDS {
                    tokio::time::sleep(Duration::from_millis(rng.below(15) as u64)).await;
                    let cancel_after = (rng.below(5) == 0).then(|| rng.below(60) as u64);
                    let result = match cancel_after {
                        // `biased`: tokio's default picks a random ready branch, which
                        // would make a history (and a verdict) vary between runs.
                        Some(ms) => tokio::select! {
                            biased;
                            r = pool.get() => Some(r),
                            _ = tokio::time::sleep(Duration::from_millis(ms)) => None,
                        },
                        None => Some(pool.get().await),
                    };
                    let Some(result) = result else {
                        lock(&tally).cancelled += 1;
                        continue;
                    };
                    match result {
                        Ok(mut guard) => {
                            let serial = guard.serial;
                            if !lock(&held).insert(serial) {
                                lock(&problems).push(format!("connection #{serial} handed to two holders at once"));
                            }
                            if guard.is_broken() {
                                lock(&problems).push(format!("connection #{serial} handed out broken"));
                            }
                            lock(&tally).served += 1;
                            tokio::time::sleep(Duration::from_millis(rng.below(20) as u64)).await;
                            if rng.below(8) == 0 {
                                guard.break_it();
                            }
                            lock(&held).remove(&serial);
                            if rng.below(10) == 0 {
                                lock(&tally).panicked += 1;
                                let _ = tokio::spawn(async move {
                                    let _guard = guard;
                                    panic!("the holder panicked");
                                })
                                .await;
                            }
                        }
                        Err(PoolError::Timeout) => lock(&tally).timed_out += 1,
                        Err(e) => lock(&problems).push(format!("get() failed with {e:?}, yet the connector never fails")),
                    }
                }
            }));
        }
        for task in tasks {
            if let Err(e) = task.await {
                if e.is_panic() {
                    let panic = crate::suite::Panic::from_payload(e.into_panic().as_ref());
                    return Err(panic.into_case_error(format!("stress seed {seed}: a task")));
                }
            }
        }
        driver.settle().await;
        let stats = driver.pool.stats();
        let open = driver.fake.open();
        if stats.in_use != 0 || stats.waiting != 0 || stats.idle != open {
            lock(&problems).push(format!(
                "after every task finished: stats {stats:?}, {open} connections open (expected nothing in use or waiting, every open connection idle)"
            ));
        }
        // No slot leaked: the whole pool can be checked out at once.
        let mut guards = Vec::new();
        for _ in 0..pool_config.max_size {
            match driver.pool.get().await {
                Ok(guard) => guards.push(guard),
                Err(e) => {
                    lock(&problems).push(format!(
                        "afterwards, with {} connections checked out, get() gave {e:?}: slots leaked (max_size {})",
                        guards.len(),
                        pool_config.max_size
                    ));
                    break;
                }
            }
        }
        drop(guards);
        Ok(())
    });
    result?;
    let peak = driver.fake.peak();
    let mut problems = std::mem::take(&mut *lock(&problems));
    if peak > pool_config.max_size {
        problems.push(format!("{peak} connections were open or being opened at once"));
    }
    if let Some(first) = problems.first() {
        return Err(CaseError::failed(format!(
            "{TASKS} tasks × {ROUNDS} checkouts on {:?}, connector yields from seed {seed} ({:?}):\n{first}",
            Config { pool: pool_config },
            lock(&tally)
        )));
    }
    driver.held.clear();
    Ok(())
}

fn l3_stress(make: Factory) -> CaseResult {
    for seed in 1..=24 {
        stress_once(make, seed)?;
    }
    Ok(())
}

/// Waiters queue behind a full pool at distinct instants while holders return at
/// random times and the connector yields at random: they are served in arrival order.
fn l3_fifo(make: Factory) -> CaseResult {
    for seed in 1..=12u64 {
        let pool_config = config(1, 0, 1_000, None, None).pool;
        let driver = Driver::start(make, pool_config, Some(seed))
            .unwrap_or_else(|e| panic!("Pool::new refused a valid config: {e:?}"));
        let order: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
        let outcome: Result<(), String> = driver.rt.block_on(async {
            let first = driver.pool.get().await.map_err(|e| format!("first get: {e:?}"))?;
            let mut tasks = Vec::new();
            for waiter in 0..8u64 {
                let (pool, order) = (driver.pool.clone(), order.clone());
                let hold = SplitMix::new(seed * 100 + waiter).below(5) as u64;
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1 + waiter)).await;
                    let guard = pool.get().await;
                    lock(&order).push(waiter);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    guard.map(|_| ()).map_err(|e| format!("waiter {waiter}: {e:?}"))
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
            for task in tasks {
                task.await.map_err(|e| format!("a waiter task: {e}"))??;
            }
            Ok(())
        });
        outcome.map_err(CaseError::failed)?;
        let order = lock(&order).clone();
        if order != (0..8).collect::<Vec<_>>() {
            return Err(CaseError::failed(format!(
                "{:?}, the connection held, waiters 0-7 call get() at 1ms, 2ms, ... 8ms, then it is \
                 returned and each waiter holds it 0-4ms (connector yields from seed {seed}): served in the order {order:?}",
                Config { pool: pool_config }
            )));
        }
    }
    Ok(())
}

pub fn suite(make: Factory) -> Vec<Case> {
    const SHORT: &str = "short_sequences";
    let case = |level, name, hints: [&'static str; 3], run: fn(Factory) -> CaseResult| {
        Case::new(EXERCISE, level, name, Hints::from(hints), QUICK, move || run(make))
    };
    vec![
        case(
            L1,
            "config_errors",
            [
                "Pool::new checks its config in the contract's order: max_size 0, min_idle above max_size, zero timeout, zero lifetime, zero idle timeout; Duration::MAX means never.",
                "A config that can never work is a typed error at construction, not a panic or a pool that hangs later.",
                "Call PoolConfig::validate() first thing in new and return its error.",
            ],
            config_errors,
        ),
        case(
            L1,
            SHORT,
            [
                "At most max_size connections; a get() with no idle connection and no room waits, first come first served, and fails with Timeout once checkout_timeout has passed.",
                "A deadline and a return at the same instant: the deadline wins. A connect error is returned at once and frees its slot.",
                "Keep the idle connections, a count of slots taken and a FIFO queue of waiters under one lock; a waiter is a oneshot sender; race the wait against timer.sleep(timeout).",
            ],
            l1_short,
        ),
        case(
            L1,
            "edges",
            [
                "The timeout covers the whole get(), connecting included: a connect that never finishes ends with Timeout and frees its slot.",
                "Whatever a get() is doing when its deadline comes, it gives up; a cancelled get() gives back whatever it holds.",
                "Put the timeout around the whole checkout (select on timer.sleep), and hold the slot in a value whose Drop frees it.",
            ],
            l1_edges,
        ),
        case(
            L1,
            "random_sequences",
            [
                "Longer scripts of gets, returns, connector outages and time: sizes, waiters and timeouts as the contract says.",
                "Every count in stats must follow from the rules: in_use guards alive, idle open connections in the pool, waiting gets queued now.",
                "Update every counter under the same lock as the state it describes, in the same critical section.",
            ],
            l1_random,
        ),
        case(
            L2,
            SHORT,
            [
                "Every checkout validates the connection; broken ones are closed and the next idle one (or a new one) is tried. Lifetime counts from opening, idle timeout from the last return.",
                "A connection is expired at exactly opened + max_lifetime (or idle_since + idle_timeout); idle ones are taken most recently returned first.",
                "Sweep expired idle connections at every get and return; pop from the end of a Vec; after each checkout and return, spawn connects until idle + in-flight top-ups reach min_idle.",
            ],
            l2_short,
        ),
        case(
            L2,
            "edges",
            [
                "min_idle is topped up at construction, after each checkout and each return, only while a slot is free; a returned connection past its lifetime is closed and its slot goes to the head waiter.",
                "Closing a connection frees a slot: if someone waits, that slot is theirs to connect with.",
                "Treat a freed slot like a returned connection: hand it to the first waiter (who then connects) before counting it free.",
            ],
            l2_edges,
        ),
        case(
            L2,
            "random_sequences",
            [
                "Longer scripts with breakage, expiry, min_idle and outages: every checkout answer, stat and open connection count as the model says.",
                "Expiry is checked lazily, at get and return; validation happens on every checkout, including a connection handed to a waiter.",
                "Compute every expiry from the timer's now() and the two instants each connection carries (opened, idle since).",
            ],
            l2_random,
        ),
        case(
            L3,
            "cancellation",
            [
                "A get() dropped while waiting leaves the queue; one dropped after a connection was handed to it gives that connection back; a holder that panics returns its connection.",
                "Cancellation can strike between any two awaits, including after the connection was sent to a waiter and before the waiter ran again.",
                "Send a value whose Drop returns the connection (or slot) to the pool, so a dropped receiver can never lose it; remove a waiter from the queue in a drop guard.",
            ],
            l3_cancellation,
        ),
        case(
            L3,
            "stress_invariants",
            [
                "Many tasks, random yields inside connect and validation, cancellations and panics: never more than max_size connections, never one connection with two holders, nothing leaked at the end.",
                "Checking the size and then awaiting the connect leaves a window in which another task checks the same size.",
                "Reserve the slot under the lock before awaiting the connect, and free it in a Drop if the connect fails or is cancelled.",
            ],
            l3_stress,
        ),
        case(
            L3,
            "fifo_under_load",
            [
                "Waiters are served in the order they called get(), even while connections come back and validation yields.",
                "A returned connection must not be grabbed by whoever polls first: fairness needs an explicit queue.",
                "Hand a returned connection straight to the head waiter's oneshot instead of putting it back and notifying everyone.",
            ],
            l3_fifo,
        ),
    ]
}
